//! `ccr-syncer ctl`: a command-line client of a running service, for people
//! who do not want to write JSON. Each command is one API call (or, for
//! `watch`, one every interval); the answer is printed as text (`--json`:
//! as the server sent it), and an error exits non-zero with the server's
//! message. It knows the API's paths and JSON shapes, as any client does,
//! and nothing of the service's insides.

use crate::client::{self, ClientError};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The service's API.
    #[arg(
        long,
        default_value = "http://127.0.0.1:9190",
        env = "CCR_SYNCER_SERVER"
    )]
    pub server: String,
    /// The API's bearer token (auth_token).
    #[arg(long, env = "CCR_SYNCER_AUTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA to trust for an https:// server.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Print the server's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Create a job: from a create_ccr body in a file (`--file job.json`),
    /// or from flags. Passwords come from --src-password / --dest-password
    /// or the environment (CCR_SRC_PASSWORD, CCR_DEST_PASSWORD).
    Create(Box<CreateArgs>),
    /// The jobs' names.
    List,
    /// A job's state, progress state, owner and last error.
    Status { name: String },
    /// A job's whole progress.
    Progress { name: String },
    /// A job's lag.
    Lag { name: String },
    /// Stop applying (the job keeps its place).
    Pause { name: String },
    /// Go on from where the job stopped.
    Resume { name: String },
    /// Skip the transaction a job holds on (`--commit-seq N`), or copy the
    /// tables again (`--fullsync`).
    Skip {
        name: String,
        #[arg(long, conflicts_with = "fullsync")]
        commit_seq: Option<u64>,
        #[arg(long)]
        fullsync: bool,
    },
    /// Copy every table again (force_fullsync).
    Resync { name: String },
    /// Compare a job's destination with its source while it runs.
    Verify {
        name: String,
        #[arg(long)]
        tables: Vec<String>,
        /// Wait for the result and print it; exit 3 if a table differs.
        #[arg(long)]
        wait: bool,
    },
    /// Copy again the key ranges the last verification found different in
    /// TABLE, then compare them again.
    Repair {
        name: String,
        table: String,
        /// Wait for the result and print it; exit 3 if the table still differs.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a job (its destination's data stays).
    Delete { name: String },
    /// Draw a job's progress until interrupted: bars for a full sync, a
    /// live lag line for the incremental sync.
    Watch {
        name: String,
        /// Seconds between readings.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many readings.
        #[arg(long)]
        count: Option<u64>,
    },
    /// The group: leader, members, job counts.
    Stat,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The job's name (overrides the file's).
    pub name: Option<String>,
    /// A create_ccr request body (JSON).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub src_host: Option<String>,
    #[arg(long, default_value_t = 3306)]
    pub src_port: u16,
    #[arg(long)]
    pub src_user: Option<String>,
    #[arg(long, env = "CCR_SRC_PASSWORD", hide_env_values = true)]
    pub src_password: Option<String>,
    #[arg(long)]
    pub src_database: Option<String>,
    #[arg(long)]
    pub src_table: Option<String>,
    #[arg(long)]
    pub dest_host: Option<String>,
    #[arg(long, default_value_t = 3306)]
    pub dest_port: u16,
    #[arg(long)]
    pub dest_user: Option<String>,
    #[arg(long, env = "CCR_DEST_PASSWORD", hide_env_values = true)]
    pub dest_password: Option<String>,
    #[arg(long)]
    pub dest_database: Option<String>,
    #[arg(long)]
    pub dest_table: Option<String>,
}

/// Runs one ctl command; the exit status: 0 done, 1 the server refused
/// (its message printed), 2 the server could not be asked (no answer, or arguments that make no request),
/// 3 a verification waited for (`--wait`) found differences.
pub fn main(args: CtlArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ccr-syncer ctl: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Failure::Refused(message)) => {
            eprintln!("ccr-syncer ctl: {message}");
            std::process::ExitCode::from(1)
        }
        Err(Failure::NotAsked(message)) => {
            eprintln!("ccr-syncer ctl: {message}");
            std::process::ExitCode::from(2)
        }
        Err(Failure::Differences(message)) => {
            eprintln!("ccr-syncer ctl: {message}");
            std::process::ExitCode::from(3)
        }
    }
}

enum Failure {
    /// The server answered with an error.
    Refused(String),
    /// The server was not asked: no answer, or a request that cannot be
    /// made from the arguments given.
    NotAsked(String),
    /// A verification waited for found differences.
    Differences(String),
}

struct Client {
    server: String,
    token: Option<String>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    async fn call(&self, method: &str, operation: &str, body: Value) -> Result<Value, Failure> {
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let body = if method == "GET" {
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(body.to_string())
        };
        let answer = client::request(
            &self.server,
            self.tls.as_ref(),
            method,
            &format!("/{operation}"),
            &headers,
            body,
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| match e {
            ClientError::Connect(e) | ClientError::Exchange(e) => {
                Failure::NotAsked(format!("cannot reach {}: {e}", self.server))
            }
        })?;
        let value: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|_| {
            json!({"success": false,
                   "error_msg": String::from_utf8_lossy(&answer.body).trim().to_string()})
        });
        if answer.status != 200 || value["success"] == false {
            let message = value["error_msg"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            return Err(Failure::Refused(format!(
                "{message} (HTTP {})",
                answer.status
            )));
        }
        Ok(value)
    }

    async fn post(&self, operation: &str, body: Value) -> Result<Value, Failure> {
        self.call("POST", operation, body).await
    }
}

async fn run(args: CtlArgs) -> Result<(), Failure> {
    let tls = match (&args.cacert, args.server.starts_with("https://")) {
        (Some(ca), _) => Some(client::connector(ca, "--cacert").map_err(Failure::NotAsked)?),
        (None, true) => {
            return Err(Failure::NotAsked(
                "an https:// server needs --cacert: the CA that signed its certificate".into(),
            ))
        }
        (None, false) => None,
    };
    let client = Client {
        server: args.server.trim_end_matches('/').to_string(),
        token: args.token.filter(|t| !t.is_empty()),
        tls,
    };
    let json_out = args.json;
    let print = |value: &Value, text: String| {
        if json_out {
            println!("{value}");
        } else {
            println!("{text}");
        }
    };
    let named = |name: &str| json!({ "name": name });
    match args.command {
        CtlCommand::Create(create) => {
            let body = create_body(*create)?;
            let name = body["name"].as_str().unwrap_or_default().to_string();
            let answer = client.post("create_ccr", body).await?;
            let owner = answer["owner"]
                .as_str()
                .unwrap_or("the group's leader to place");
            print(&answer, format!("created job {name} (owner: {owner})"));
        }
        CtlCommand::List => {
            let answer = client.post("list_jobs", json!({})).await?;
            let names: Vec<&str> = answer["jobs"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            print(&answer, names.join("\n"));
        }
        CtlCommand::Status { name } => {
            let answer = client.post("job_status", named(&name)).await?;
            print(&answer, status_text(&answer["status"]));
        }
        CtlCommand::Progress { name } => {
            let answer = client.post("job_progress", named(&name)).await?;
            print(&answer, pretty(&answer["job_progress"]));
        }
        CtlCommand::Lag { name } => {
            let answer = client.post("get_lag", named(&name)).await?;
            print(&answer, lag_text(&answer));
        }
        CtlCommand::Pause { name } => simple(&client, "pause", &name, "paused", &print).await?,
        CtlCommand::Resume { name } => simple(&client, "resume", &name, "resumed", &print).await?,
        CtlCommand::Delete { name } => simple(&client, "delete", &name, "deleted", &print).await?,
        CtlCommand::Resync { name } => {
            simple(&client, "force_fullsync", &name, "copying again", &print).await?
        }
        CtlCommand::Skip {
            name,
            commit_seq,
            fullsync,
        } => {
            let body = match (commit_seq, fullsync) {
                (Some(seq), false) => {
                    json!({"name": name, "skip_by": "silence", "skip_commit_seq": seq})
                }
                (None, true) => json!({"name": name, "skip_by": "fullsync"}),
                _ => return Err(Failure::NotAsked(
                    "skip needs --commit-seq N (the transaction the job holds on) or --fullsync"
                        .into(),
                )),
            };
            let answer = client.post("job_skip_binlog", body).await?;
            print(&answer, format!("job {name}: skip recorded"));
        }
        CtlCommand::Verify { name, tables, wait } => {
            let mut body = Map::new();
            body.insert("name".into(), json!(name));
            if !tables.is_empty() {
                body.insert("tables".into(), json!(tables));
            }
            let answer = client.post("verify", Value::Object(body)).await?;
            print(&answer, format!("job {name}: verification started"));
            if wait {
                wait_verified(&client, &name, json_out).await?;
            }
        }
        CtlCommand::Repair { name, table, wait } => {
            let answer = client
                .post("repair", json!({"name": name, "table": table}))
                .await?;
            print(
                &answer,
                format!(
                    "job {name}: repairing {} range(s) of {table}",
                    text(&answer["repair"]["ranges"])
                ),
            );
            if wait {
                wait_verified(&client, &name, json_out).await?;
            }
        }
        CtlCommand::Watch {
            name,
            interval,
            count,
        } => watch(&client, &name, interval, count, json_out).await?,
        CtlCommand::Stat => {
            let answer = client.call("GET", "stat", Value::Null).await?;
            print(&answer, stat_text(&answer));
        }
    }
    Ok(())
}

async fn simple(
    client: &Client,
    operation: &str,
    name: &str,
    done: &str,
    print: &impl Fn(&Value, String),
) -> Result<(), Failure> {
    let answer = client.post(operation, json!({ "name": name })).await?;
    print(&answer, format!("job {name}: {done}"));
    Ok(())
}

fn create_body(c: CreateArgs) -> Result<Value, Failure> {
    let bad = |m: String| Failure::NotAsked(m);
    let mut body = match &c.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str::<Value>(&text)
                .map_err(|e| bad(format!("{} is not JSON: {e}", path.display())))?
        }
        None => json!({}),
    };
    if !body.is_object() {
        return Err(bad(
            "the file must hold a JSON object (a create_ccr body)".into()
        ));
    }
    if let Some(name) = c.name {
        body["name"] = json!(name);
    }
    let sides = [
        (
            "src",
            c.src_host,
            c.src_port,
            c.src_user,
            c.src_password,
            c.src_database,
            c.src_table,
        ),
        (
            "dest",
            c.dest_host,
            c.dest_port,
            c.dest_user,
            c.dest_password,
            c.dest_database,
            c.dest_table,
        ),
    ];
    for (side, host, port, user, password, database, table) in sides {
        if body.get(side).is_none() {
            body[side] = json!({});
        }
        let ep = &mut body[side];
        let given = host.is_some() || user.is_some() || database.is_some();
        if let Some(h) = host {
            ep["host"] = json!(h);
        }
        if given || ep.get("port").is_none() {
            ep["port"] = json!(port);
        }
        if let Some(u) = user {
            ep["user"] = json!(u);
        }
        if let Some(p) = password {
            ep["password"] = json!(p);
        }
        if let Some(d) = database {
            ep["database"] = json!(d);
        }
        if let Some(t) = table {
            ep["table"] = json!(t);
        }
        for field in ["host", "user", "database"] {
            if ep.get(field).is_none() {
                return Err(bad(format!(
                    "{side}.{field} is missing: give --{side}-{field} or a --file that has it"
                )));
            }
        }
        if ep.get("password").is_none() {
            ep["password"] = json!("");
        }
    }
    if body.get("name").is_none() {
        return Err(bad("the job needs a name: ctl create NAME …".into()));
    }
    Ok(body)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn status_text(s: &Value) -> String {
    let mut out = format!(
        "{}: {} {} (owner {})",
        text(&s["name"]),
        text(&s["state"]),
        text(&s["progress_state"]),
        text(&s["owner"])
    );
    if s["retrying"] == true {
        out.push_str(&format!(
            "\n  retrying ({} so far): {}",
            text(&s["retries"]),
            text(&s["last_retry_error"])
        ));
    }
    if let Some(e) = s["last_error"].as_str() {
        out.push_str(&format!("\n  last error: {e}"));
    }
    if !s["failed_commit_seq"].is_null() {
        out.push_str(&format!(
            "\n  holds on commit seq {}: skip it with `ctl skip {} --commit-seq {}`, or fix the \
             destination and resume",
            text(&s["failed_commit_seq"]),
            text(&s["name"]),
            text(&s["failed_commit_seq"])
        ));
    }
    out
}

fn lag_text(l: &Value) -> String {
    format!(
        "lag {} s, {} transaction(s) behind (applied commit seq {} of {}; position {})",
        text(&l["lag_secs"]),
        text(&l["lag"]),
        text(&l["first_commit_seq"]),
        text(&l["last_commit_seq"]),
        text(&l["position"])
    )
}

fn stat_text(s: &Value) -> String {
    let mut out = format!(
        "leader {} (term {}){}\n",
        text(&s["leader"]),
        text(&s["term"]),
        if s["read_only"] == true {
            format!(", READ-ONLY: {}", text(&s["read_only_reason"]))
        } else {
            String::new()
        }
    );
    for m in s["members"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<24} {:<8} {:<7} {} job(s){}\n",
            text(&m["id"]),
            text(&m["state"]),
            if m["learner"] == true {
                "learner"
            } else {
                "normal"
            },
            text(&m["jobs_owned"]),
            if m["leader"] == true { "  leader" } else { "" }
        ));
    }
    out.push_str(&format!(
        "jobs: {} ({} without an owner)",
        text(&s["jobs"]["total"]),
        text(&s["jobs"]["unowned"])
    ));
    out
}

/// Waits until the job's verification is done; prints it.
async fn wait_verified(client: &Client, name: &str, json_out: bool) -> Result<(), Failure> {
    loop {
        let answer = client.post("job_progress", json!({ "name": name })).await?;
        let v = &answer["job_progress"]["verify"];
        if v["state"] == "done" {
            if json_out {
                println!("{v}");
            } else {
                println!("{}", verify_text(v));
            }
            let differing = v["tables"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["equal"] != true)
                .count();
            if differing > 0 {
                return Err(Failure::Differences(format!(
                    "{differing} table(s) not equal to the source"
                )));
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A verification, one line per table.
fn verify_text(v: &Value) -> String {
    let mut out = format!("verification {}", text(&v["state"]));
    if let Some(e) = v["last_error"].as_str() {
        out.push_str(&format!(" (waiting: {e})"));
    }
    for t in v["tables"].as_array().into_iter().flatten() {
        let verdict = match (&t["equal"], t["error"].as_str()) {
            (_, Some(e)) => format!("not compared: {e}"),
            (Value::Bool(true), _) => "equal".into(),
            (Value::Bool(false), _) => {
                let ranges: Vec<String> = t["ranges"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(5)
                    .map(|r| {
                        format!(
                            "{}..{} ({})",
                            text(&r["first"]),
                            text(&r["last"]),
                            text(&r["rows"])
                        )
                    })
                    .collect();
                format!(
                    "{} row(s) differ in {} range(s): {}{}",
                    text(&t["rows_different"]),
                    t["ranges"].as_array().map_or(0, Vec::len),
                    ranges.join(", "),
                    if t["ranges_truncated"] == true {
                        " (more not kept)"
                    } else {
                        ""
                    }
                )
            }
            _ => format!(
                "{} ({} rows compared)",
                text(&t["state"]),
                text(&t["rows_compared"])
            ),
        };
        out.push_str(&format!("\n  {:<24} {verdict}", text(&t["table"])));
    }
    out
}

/// `[#######.............]`, `width` wide, for `done` of `total` (empty
/// while the total is not known).
fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done.min(total) as f64 / total as f64) * width as f64).round() as usize
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// One line of `watch`: progress bars during a full sync, lag after.
fn watch_line(progress: &Value, lag: &Value) -> String {
    let state = format!(
        "{} {}",
        text(&progress["state"]),
        text(&progress["progress_state"])
    );
    let full = &progress["full_sync"];
    let in_full = progress["progress_state"]
        .as_str()
        .is_some_and(|s| s.ends_with("FullSync"));
    if in_full && !full.is_null() {
        let rows = full["rows_copied"].as_u64().unwrap_or(0);
        let estimated = full["rows_estimated"].as_u64().unwrap_or(0);
        let tables = full["tables_done"].as_u64().unwrap_or(0);
        let tables_total = full["tables_total"].as_u64().unwrap_or(0);
        let percent = if estimated == 0 {
            0.0
        } else {
            (rows as f64 * 100.0 / estimated as f64).min(100.0)
        };
        format!(
            "{state}  rows {} {percent:5.1}% {rows}/{estimated}  tables {} {tables}/{tables_total}  {} left",
            bar(rows, estimated, 30),
            bar(tables, tables_total, 10),
            full["eta_secs"]
                .as_f64()
                .map_or("?".into(), |s| format!("{s:.0} s"))
        )
    } else {
        let mut line = format!("{state}  {}", lag_text(lag));
        let v = &progress["verify"];
        if v["state"] == "running" {
            let tables = v["tables"].as_array().map_or(&[][..], Vec::as_slice);
            let done = tables.iter().filter(|t| t["state"] == "done").count();
            let rows: u64 = tables
                .iter()
                .filter_map(|t| t["rows_compared"].as_u64())
                .sum();
            line.push_str(&format!(
                "  verifying {} {done}/{} tables, {rows} rows compared",
                bar(done as u64, tables.len() as u64, 10),
                tables.len()
            ));
        }
        if let Some(e) = progress["last_error"].as_str() {
            line.push_str(&format!("  last error: {e}"));
        }
        line
    }
}

async fn watch(
    client: &Client,
    name: &str,
    interval: f64,
    count: Option<u64>,
    json_out: bool,
) -> Result<(), Failure> {
    let interval = Duration::from_secs_f64(interval.clamp(0.1, 3600.0));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut n = 0u64;
    loop {
        let progress = client.post("job_progress", json!({ "name": name })).await?;
        let lag = client.post("get_lag", json!({ "name": name })).await?;
        let line = if json_out {
            json!({"job_progress": progress["job_progress"], "lag": lag}).to_string()
        } else {
            watch_line(&progress["job_progress"], &lag)
        };
        let mut out = std::io::stdout().lock();
        if tty && !json_out {
            let _ = write!(out, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        n += 1;
        if count.is_some_and(|c| n >= c) {
            if tty && !json_out {
                println!();
            }
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_lines() {
        assert_eq!(bar(0, 10, 10), "[..........]");
        assert_eq!(bar(5, 10, 10), "[#####.....]");
        assert_eq!(bar(20, 10, 4), "[####]");
        assert_eq!(bar(0, 0, 4), "[....]", "nothing known yet");
        let progress = json!({"state": "running", "progress_state": "DBFullSync",
            "full_sync": {"rows_copied": 50, "rows_estimated": 200, "tables_done": 1,
                          "tables_total": 4, "eta_secs": 12.0}});
        let line = watch_line(&progress, &json!({}));
        assert!(line.contains("25.0% 50/200"), "{line}");
        assert!(line.contains("12 s left"), "{line}");
        let progress = json!({"state": "running", "progress_state": "DBIncrementalSync"});
        let lag = json!({"lag_secs": 3, "lag": 7, "first_commit_seq": 10, "last_commit_seq": 17,
                         "position": "0-1-10"});
        let line = watch_line(&progress, &lag);
        assert!(line.contains("lag 3 s, 7 transaction(s) behind"), "{line}");
    }

    #[test]
    fn create_from_flags_and_file() {
        let base = || CreateArgs {
            name: Some("j".into()),
            file: None,
            src_host: Some("h1".into()),
            src_port: 3306,
            src_user: Some("u".into()),
            src_password: Some("p".into()),
            src_database: Some("d".into()),
            src_table: None,
            dest_host: Some("h2".into()),
            dest_port: 3307,
            dest_user: Some("v".into()),
            dest_password: None,
            dest_database: Some("e".into()),
            dest_table: Some("t".into()),
        };
        let body = create_body(base()).ok().unwrap();
        assert_eq!(body["src"]["host"], "h1");
        assert_eq!(body["dest"]["port"], 3307);
        assert_eq!(body["dest"]["table"], "t");
        assert_eq!(body["dest"]["password"], "");
        let missing = CreateArgs {
            dest_database: None,
            ..base()
        };
        assert!(
            matches!(create_body(missing), Err(Failure::NotAsked(m)) if m.contains("dest.database"))
        );
    }
}
