//! `ccr-syncer agent --host ADDR --port 9998 --state-dir DIR`: the node
//! agent of seed 000, one per machine, driven by the cluster manager.
//!
//! It serves the seed's protocol at `POST /`: a JSON object with `ver` and
//! `job_type` and the job type's fields (numbers may come as strings). It
//! runs **typed operations only**: no request runs a shell or a command it
//! names. The seed's `mysql_cmd` is taken only as `./startmysql.sh PORT` or
//! `./stopmysql.sh PORT` (start or stop the managed instance on PORT);
//! anything else is refused naming what is accepted. Every request carries
//! `Authorization: Bearer <token>` (`CCR_AGENT_TOKEN`, the manager's too):
//! the agent is reached only by the manager.
//!
//! Long operations (installing, starting, stopping, uninstalling an
//! instance, `mysql_cmd`, `delete`) are keyed (`job_id`, `step`, `attempt`)
//! in [`ops`]: the same request sent again answers that operation's state,
//! with its progress. The answer waits for the operation up to [`WAIT`];
//! after that it says `ongoing` and the manager asks again.
//!
//! Operations lock the one instance they act on, not the machine: a long
//! backup of one instance never holds up another's, and auto pullup of an
//! instance waits only for an operation on that same instance. Every loop
//! (the server, auto pullup) stops on shutdown. The types on the wire are
//! in [`crate::protocol`], which the cluster manager compiles too.

mod backup;
mod cgroup;
mod clone;
mod instance;
mod ops;
mod request;
mod storage_ops;

use crate::secret::Secret;
use bytes::Bytes;
use instance::{Instance, Registry};
use ops::{Failure, Key, Operations};
use parking_lot::Mutex;
use request::{Refusal, Request};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use warp::Filter;

/// How long an answer waits for its operation before saying `ongoing`
/// (short: the manager passes each answer's progress on to `get_status`).
const WAIT: Duration = Duration::from_secs(2);
/// Bodies larger than this are refused.
const BODY_LIMIT: u64 = 1 << 20;

/// `ccr-syncer agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The address it listens on (the machine's `hostaddr`); its instances
    /// bind there too.
    #[arg(long)]
    pub host: String,
    #[arg(long, default_value_t = 9998)]
    pub port: u16,
    /// Its instance list and operations.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Where `coldbackup` writes and `coldrestore` reads (the seed's HDFS;
    /// default: STATE_DIR/backups).
    #[arg(long)]
    pub backup_dir: Option<PathBuf>,
    /// The backup storage `coldbackup` uploads to and `coldrestore` reads
    /// from (`s3://BUCKET/PREFIX?endpoint=…` or `file:///PATH`, the
    /// manager's `[backup] storage`; S3 credentials from AWS_ACCESS_KEY_ID
    /// and AWS_SECRET_ACCESS_KEY). Unset: the backup directory only.
    #[arg(long)]
    pub backup_storage: Option<String>,
}

/// What an agent runs with: its flags, and what the environment gave once
/// at start (the token, the tests' failpoint).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub host: String,
    pub state_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub token: Secret,
    /// Tests only (`CCR_AGENT_FAILPOINT=hold_ms:N`): every instance
    /// operation holds its instance this long before it ends, standing in
    /// for a long backup.
    pub hold: Duration,
    /// S3 credentials for the backup storage (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`).
    pub s3: Option<crate::storage::Credentials>,
    /// `--backup-storage`.
    pub backup_storage: Option<String>,
}

impl AgentConfig {
    pub fn from_args(args: &AgentArgs) -> Result<AgentConfig, String> {
        let token = crate::config::agent_token().ok_or(
            "the agent serves only the cluster manager: set CCR_AGENT_TOKEN (the same token the manager has)",
        )?;
        Ok(AgentConfig {
            host: args.host.clone(),
            state_dir: args.state_dir.clone(),
            backup_dir: args
                .backup_dir
                .clone()
                .unwrap_or_else(|| args.state_dir.join("backups")),
            token,
            hold: crate::config::agent_hold(),
            s3: crate::config::s3_credentials(),
            backup_storage: args
                .backup_storage
                .clone()
                .map(|url| crate::storage::Location::parse(&url).map(|_| url))
                .transpose()?,
        })
    }
}

pub struct Agent {
    host: String,
    state_dir: PathBuf,
    backup_dir: PathBuf,
    token: Secret,
    hold: Duration,
    s3: Option<crate::storage::Credentials>,
    backup_storage: Option<String>,
    registry: Registry,
    ops: Operations,
    /// One lock per instance (by port): an operation on an instance, and
    /// its auto pullup, hold it.
    locks: Mutex<HashMap<u16, Arc<tokio::sync::Mutex<()>>>>,
    /// The port it listens on (a clone's source streams to it).
    listen_port: u16,
    /// Instances whose backup streams to another agent now.
    streaming: Mutex<std::collections::HashSet<u16>>,
    /// Clones waiting for their source's stream, by session.
    sessions: Mutex<HashMap<String, tokio::sync::oneshot::Sender<clone::Incoming>>>,
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn main(args: AgentArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: AgentArgs) -> Result<(), String> {
    let config = AgentConfig::from_args(&args)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    serve(config, listener, stop).await
}

/// Serves the agent on `listener` until `stop` resolves, then stops its
/// loops: what the binary runs, and what tests run in-process.
pub async fn serve(
    config: AgentConfig,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    std::fs::create_dir_all(&config.state_dir)
        .map_err(|e| format!("--state-dir {}: {e}", config.state_dir.display()))?;
    let registry = Registry::new(&config.state_dir);
    registry.load()?;
    // Option files a killed backup left (each holds a password).
    for e in std::fs::read_dir(&config.state_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("backup-") && name.ends_with(".cnf") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let agent = Arc::new(Agent {
        host: config.host.clone(),
        state_dir: config.state_dir.clone(),
        backup_dir: config.backup_dir.clone(),
        token: config.token.clone(),
        hold: config.hold,
        s3: config.s3.clone(),
        backup_storage: config.backup_storage.clone(),
        registry,
        ops: Operations::open(&config.state_dir)?,
        locks: Mutex::new(HashMap::new()),
        listen_port: address.port(),
        sessions: Mutex::new(HashMap::new()),
        streaming: Mutex::new(Default::default()),
    });
    info!(address = %address, state_dir = %config.state_dir.display(), "agent serving");
    let shutdown = CancellationToken::new();
    let pullup_loop = tokio::spawn(pullup(agent.clone(), shutdown.clone()));
    let a = agent.clone();
    // A clone's stream, from the source's agent (no size limit: a datadir).
    let c = agent.clone();
    let clone_route = warp::post()
        .and(warp::path!("clone" / String))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<u64>("x-ccr-estimate"))
        .and(warp::body::stream())
        .then(
            move |session: String, auth: Option<String>, estimate: Option<u64>, body| {
                let c = c.clone();
                async move {
                    let (status, answer) = c
                        .take_stream(auth.as_deref(), session, estimate, body)
                        .await;
                    warp::reply::with_status(warp::reply::json(&answer), status)
                }
            },
        );
    let routes = clone_route
        .or(warp::post()
            .and(warp::path::end())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::content_length_limit(BODY_LIMIT))
            .and(warp::body::bytes())
            .then(move |auth: Option<String>, body: Bytes| {
                let a = a.clone();
                async move {
                    let (status, answer) = a.answer(auth.as_deref(), &body).await;
                    warp::reply::with_status(warp::reply::json(&answer), status)
                }
            }))
        .or(warp::any().map(|| {
            warp::reply::with_status(
                warp::reply::json(&json!({"ver": "0.1", "status": "failed", "error_code": "1",
                    "error_info": "the agent takes POST / with a JSON body of at most 1 MiB"})),
                warp::http::StatusCode::BAD_REQUEST,
            )
        }));
    warp::serve(routes)
        .incoming(listener)
        .graceful(stop)
        .run()
        .await;
    shutdown.cancel();
    let _ = pullup_loop.await;
    Ok(())
}

fn failed(code: &str, info: impl Into<String>) -> Value {
    json!({"ver": "0.1", "status": "failed", "error_code": code, "error_info": info.into()})
}

impl Agent {
    fn authorized(&self, auth: Option<&str>) -> bool {
        let given = auth.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        crate::secret::constant_time_eq(given.as_bytes(), self.token.expose().as_bytes())
    }

    /// `POST /clone/SESSION`: a source's stream, handed to the clone that
    /// waits for it; answered with what arrived once it is all taken.
    async fn take_stream<S, B>(
        &self,
        auth: Option<&str>,
        session: String,
        estimate: Option<u64>,
        body: S,
    ) -> (warp::http::StatusCode, Value)
    where
        S: futures_util::Stream<Item = Result<B, warp::Error>> + Send + 'static,
        B: bytes::Buf + Send + 'static,
    {
        use futures_util::StreamExt;
        use warp::http::StatusCode;
        if !self.authorized(auth) {
            return (
                StatusCode::UNAUTHORIZED,
                failed(
                    "401",
                    "a clone's stream comes from an agent: Authorization: Bearer <CCR_AGENT_TOKEN>",
                ),
            );
        }
        let Some(waiting) = self.sessions.lock().remove(&session) else {
            return (
                StatusCode::NOT_FOUND,
                failed("404", "no clone waits for this stream"),
            );
        };
        let body: clone::BodyStream = Box::pin(body.map(|r| {
            r.map(|mut b| b.copy_to_bytes(b.remaining()))
                .map_err(|e| e.to_string())
        }));
        let (tx, rx) = tokio::sync::oneshot::channel();
        if waiting
            .send(clone::Incoming {
                body,
                estimate,
                answer: tx,
            })
            .is_err()
        {
            return (StatusCode::GONE, failed("410", "the clone stopped waiting"));
        }
        match rx.await {
            Ok(Ok(summary)) => (
                StatusCode::OK,
                json!({"ver": "0.1", "status": "done", "error_code": "0", "error_info": "",
                       "summary": summary}),
            ),
            Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, failed("500", e)),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                failed("500", "the clone stopped"),
            ),
        }
    }

    /// A request to another agent (a clone's source); a failure worth
    /// retrying when it cannot be reached or says so.
    async fn peer(&self, host: &str, port: u16, body: Value) -> Result<Value, Failure> {
        // The answer comes when the whole stream is through: no cap here
        // (each side cuts off a stream that stalls).
        let answer = crate::client::to_agent(
            host,
            port as i64,
            &self.token,
            &body,
            Duration::from_secs(30 * 86_400),
        )
        .await
        .map_err(|e| Failure::retry(format!("the agent at {host}:{port}: {e}")))?;
        let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if answer.status == 200 && v["status"] == "done" {
            return Ok(v);
        }
        let why = format!(
            "the agent at {host}:{port} answered {}: {}",
            answer.status,
            v["error_info"].as_str().unwrap_or("no reason given")
        );
        if answer.status >= 500 || v["error_code"] == ops::RETRY_CODE {
            Err(Failure::retry(why))
        } else {
            Err(Failure::from(why))
        }
    }

    /// Makes sure the instance runs, in its cgroup when it has a limit.
    async fn start_instance(&self, i: &Instance) -> Result<(), String> {
        i.start().await?;
        if let Some(limit) = &i.cgroup {
            cgroup::apply(&self.host, i.port, i.running_pid(), limit)?;
        }
        Ok(())
    }

    async fn answer(
        self: &Arc<Self>,
        auth: Option<&str>,
        body: &[u8],
    ) -> (warp::http::StatusCode, Value) {
        use warp::http::StatusCode;
        if !self.authorized(auth) {
            return (
                StatusCode::UNAUTHORIZED,
                failed("401", "the agent is reached only by the cluster manager: Authorization: Bearer <CCR_AGENT_TOKEN>"),
            );
        }
        match Request::parse(body) {
            Err(Refusal(why)) => {
                info!(error = %why, "request refused");
                (StatusCode::BAD_REQUEST, failed("400", why))
            }
            Ok(request) => match self.serve(request).await {
                Ok(v) => (StatusCode::OK, v),
                Err(e) if e.retry => (StatusCode::OK, failed(ops::RETRY_CODE, e.message)),
                Err(e) => (StatusCode::OK, failed("500", e.message)),
            },
        }
    }

    async fn serve(self: &Arc<Self>, request: Request) -> Result<Value, Failure> {
        match request {
            Request::GetInfo => Ok(self.info()),
            Request::GetNode | Request::UpdateNode => {
                let list = self.registry.load()?;
                Ok(
                    json!({"ver": "0.1", "status": "done", "error_code": "0", "error_info": "",
                          "nodes": list.iter().map(node_json).collect::<Vec<_>>()}),
                )
            }
            Request::GetStatus { job_id } => match self.ops.latest(&job_id) {
                Some(op) => Ok(op_json(&op)),
                None => Ok(failed(
                    "404",
                    format!("no operation of job {job_id} on this agent"),
                )),
            },
            Request::AutoPullup { minutes, port } => {
                let until = match minutes {
                    -1 => i64::MAX,
                    0 => 0,
                    m => chrono::Utc::now().timestamp_millis() + m * 60_000,
                };
                let touched = self.registry.update(|list| {
                    let mut n = 0;
                    for i in list.iter_mut().filter(|i| port.is_none_or(|p| p == i.port)) {
                        i.pullup_paused_until = until;
                        n += 1;
                    }
                    n
                })?;
                if let (Some(p), 0) = (port, touched) {
                    return Ok(failed("404", format!("no managed instance on port {p}")));
                }
                info!(minutes, port = ?port, instances = touched, "auto pullup");
                Ok(
                    json!({"ver": "0.1", "status": "done", "error_code": "0", "error_info": "",
                          "instances": touched}),
                )
            }
            Request::StreamBackup(s) => {
                info!(port = s.port, to = %s.to, "streaming a backup");
                let r = clone::stream_backup(self, s).await;
                if let Err(e) = &r {
                    warn!(error = %e.message, "streaming a backup failed");
                }
                r
            }
            Request::Fence { port } => {
                let i = self.find(port)?;
                let done = request::fence(&i).await?;
                warn!(port, done, "fenced by the manager");
                Ok(
                    json!({"ver": "0.1", "status": "done", "error_code": "0", "error_info": "",
                           "port": port, "fenced": done}),
                )
            }
            Request::Operation { key, job_type, op } => {
                Ok(self.operation(key, job_type, op).await?)
            }
        }
    }

    fn info(&self) -> Value {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem = |field: &str| {
            meminfo
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map_or(0, |kb| kb / 1024)
        };
        let mut dirs: Vec<PathBuf> = vec![self.state_dir.clone()];
        for i in self.registry.load().unwrap_or_default() {
            if let Some(base) = i.dir.parent() {
                if !dirs.iter().any(|d| d == base) {
                    dirs.push(base.to_path_buf());
                }
            }
        }
        json!({
            "ver": "0.1", "status": "done", "error_code": "0", "error_info": "",
            "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "total_mem_mb": mem("MemTotal:"),
            "available_mem_mb": mem("MemAvailable:"),
            "dirs": dirs.iter().map(|d| json!({"path": d, "free_mb": instance::free_mb(d)})).collect::<Vec<_>>(),
        })
    }

    /// Starts (or finds) the operation under `key` and answers its state,
    /// waiting for it up to [`WAIT`].
    async fn operation(
        self: &Arc<Self>,
        key: Key,
        job_type: &'static str,
        op: request::Op,
    ) -> Result<Value, String> {
        if self.ops.begin(&key, job_type)? {
            info!(job = %key.job_id, step = %key.step, attempt = key.attempt, job_type, "operation");
            let me = self.clone();
            let k = key.clone();
            tokio::spawn(async move {
                let outcome = me.execute(&k, op).await;
                if let Err(e) = &outcome {
                    warn!(job = %k.job_id, step = %k.step, job_type, error = %e.message, "operation failed");
                }
                me.ops.finish(&k, outcome);
            });
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let op = self.ops.get(&key).ok_or("operation lost")?;
            if op.status != crate::protocol::OpStatus::Ongoing
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(op_json(&op));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn find(&self, port: u16) -> Result<Instance, String> {
        self.registry
            .load()?
            .into_iter()
            .find(|i| i.port == port)
            .ok_or_else(|| format!("no managed instance on port {port}"))
    }

    /// The lock of the instance on `port`.
    fn lock_of(&self, port: u16) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(port).or_default().clone()
    }

    async fn execute(&self, key: &Key, op: request::Op) -> Result<Value, Failure> {
        let lock = op.port().map(|p| self.lock_of(p));
        let _held = match &lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let phase = |p: &str| {
            self.ops.progress(
                key,
                crate::protocol::Progress {
                    phase: p.into(),
                    ..Default::default()
                },
            )
        };
        phase("running");
        let outcome = self.perform(key, op).await;
        if !self.hold.is_zero() {
            phase("held (failpoint)");
            tokio::time::sleep(self.hold).await;
        }
        outcome
    }

    /// Runs one operation (its instance's lock held).
    async fn perform(&self, key: &Key, op: request::Op) -> Result<Value, Failure> {
        use request::Op;
        match op {
            Op::Install {
                spec,
                admin,
                control,
            } => {
                if let Some(other) =
                    self.registry.load()?.into_iter().find(|i| {
                        i.port == spec.port && i.dir != spec.base.join(spec.port.to_string())
                    })
                {
                    return Err(format!(
                        "port {} is taken by the instance in {}",
                        spec.port,
                        other.dir.display()
                    )
                    .into());
                }
                let instance = Instance::install(&spec, &self.host).await?;
                self.registry.update(|list| {
                    if !list.iter().any(|i| i.port == instance.port) {
                        list.push(instance.clone());
                    }
                })?;
                self.start_instance(&instance).await?;
                if let Some((user, password)) = &admin {
                    request::create_admin(&instance, user, password, control.as_ref()).await?;
                }
                self.set_wanted(instance.port, true)?;
                Ok(node_json(&self.find(instance.port)?))
            }
            Op::Start { port } => {
                let i = self.find(port)?;
                // A clone cut off puts the old datadir back first.
                if i.dir.join("data.old").is_dir() {
                    i.stop().await?;
                    i.recover_swap()?;
                }
                self.start_instance(&i).await?;
                self.set_wanted(port, true)?;
                Ok(node_json(&self.find(port)?))
            }
            Op::Stop { port } => {
                let i = self.find(port)?;
                self.set_wanted(port, false)?;
                i.stop().await?;
                Ok(node_json(&self.find(port)?))
            }
            Op::Uninstall { port } => {
                let Ok(i) = self.find(port) else {
                    return Ok(json!({"port": port, "state": "absent"}));
                };
                self.set_wanted(port, false)?;
                i.uninstall().await?;
                if let Err(e) = cgroup::remove(&self.host, port, None) {
                    warn!(port, error = %e, "the uninstalled instance's cgroup stays");
                }
                self.registry
                    .update(|list| list.retain(|x| x.port != port))?;
                Ok(json!({"port": port, "state": "absent"}))
            }
            Op::Delete(d) => Ok(d.run().await?),
            Op::Send(s) => Ok(s.run().await?),
            Op::Clone(c) => {
                let report = |p| self.ops.progress(key, p);
                clone::clone(self, *c, &report).await
            }
            Op::SetCgroup {
                port,
                cgroup: limit,
            } => {
                let i = self.find(port)?;
                let path = match &limit {
                    Some(l) => Some(cgroup::apply(&self.host, port, i.running_pid(), l)?),
                    None => {
                        cgroup::remove(&self.host, port, i.running_pid())?;
                        None
                    }
                };
                self.registry.update(|list| {
                    for x in list.iter_mut().filter(|x| x.port == port) {
                        x.cgroup = limit;
                    }
                })?;
                Ok(json!({"port": port, "cgroup": path,
                          "cpu_cores": limit.map(|l| l.cpu_cores),
                          "cgroup_mode": limit.map(|l| l.mode.as_str())}))
            }
            Op::Storage(s) => {
                let report = |p| self.ops.progress(key, p);
                storage_ops::run(self, *s, &report).await
            }
            Op::ColdBackup {
                ip,
                port,
                user,
                password,
            } => {
                self.here(&ip)?;
                let i = self.find(port)?;
                let report = |p| self.ops.progress(key, p);
                let taken = backup::backup(
                    &i,
                    &self.backup_dir,
                    &self.state_dir,
                    &user,
                    &password,
                    &report,
                )
                .await?;
                let Some(url) = &self.backup_storage else {
                    return Ok(taken);
                };
                let s = crate::storage::Storage::open(url, self.s3.as_ref())?;
                Ok(backup::upload(&s, &self.host, &taken, &report).await?)
            }
            Op::ColdRestore { ip, port, file } => {
                self.here(&ip)?;
                let i = self.find(port)?;
                let storage = self.backup_storage.as_deref();
                let restored =
                    backup::restore_named(&i, &self.backup_dir, storage, self.s3.as_ref(), &file)
                        .await?;
                self.set_wanted(port, true)?;
                Ok(restored)
            }
        }
    }

    /// A cold backup or restore runs on the instance's own machine.
    fn here(&self, ip: &str) -> Result<(), String> {
        if ip == self.host || ip == "127.0.0.1" || ip == "localhost" {
            Ok(())
        } else {
            Err(format!(
                "s_ip {ip} is not this agent's machine ({}): send it to the agent of {ip}",
                self.host
            ))
        }
    }

    fn set_wanted(&self, port: u16, wanted: bool) -> Result<(), String> {
        self.registry.update(|list| {
            for i in list.iter_mut().filter(|i| i.port == port) {
                i.wanted_running = wanted;
            }
        })
    }
}

/// Starts again, every 2 s, a managed instance that should run and does
/// not (killed, crashed), unless its auto pullup is paused or an operation
/// holds that instance; until `shutdown`.
async fn pullup(agent: Arc<Agent>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let now = chrono::Utc::now().timestamp_millis();
        let Ok(list) = agent.registry.load() else {
            continue;
        };
        for i in list {
            if let (Some(limit), Some(pid)) = (&i.cgroup, i.running_pid()) {
                // Kept in its cgroup whoever started it.
                if let Err(e) = cgroup::keep(&agent.host, i.port, pid, limit) {
                    warn!(port = i.port, error = %e, "cannot keep the instance's CPU limit");
                }
            }
            if i.is_running() {
                // A backup killed with its agent left replication stopped.
                if let Err(e) = clone::resume_sql_thread(&agent, &i).await {
                    warn!(port = i.port, error = %e, "cannot restart the SQL thread");
                }
            }
            if !i.wanted_running || i.pullup_paused_until > now || i.is_running() {
                continue;
            }
            let lock = agent.lock_of(i.port);
            let Ok(_held) = lock.try_lock() else {
                continue;
            };
            warn!(
                port = i.port,
                "managed instance is down: auto pullup starts it"
            );
            if i.dir.join("data.old").is_dir() {
                match i.recover_swap() {
                    Ok(_) => warn!(
                        port = i.port,
                        "a clone was cut off: its old datadir is back"
                    ),
                    Err(e) => warn!(port = i.port, error = %e, "cannot put the old datadir back"),
                }
            }
            match agent.start_instance(&i).await {
                Ok(()) => info!(port = i.port, "auto pullup: instance up"),
                Err(e) => warn!(port = i.port, error = %e, "auto pullup failed"),
            }
        }
    }
}

fn node_json(i: &Instance) -> Value {
    let paused = match i.pullup_paused_until {
        0 => json!(0),
        i64::MAX => json!(-1),
        until => json!(until),
    };
    json!({
        "port": i.port,
        "datadir": i.dir,
        "server_id": i.server_id,
        "innodb_size_mb": i.innodb_size_mb,
        "max_connections": i.max_connections,
        "state": if i.is_running() { "running" } else { "stopped" },
        "read_only": i.read_only,
        "semi_sync": i.semi_sync,
        "cgroup": i.cgroup,
        "wanted_running": i.wanted_running,
        "pullup_paused_until": paused,
    })
}

fn op_json(op: &ops::Operation) -> Value {
    serde_json::to_value(op.answer()).expect("an answer serializes")
}
