//! The streamed clone between agents (`clone_mysql` on the target's agent,
//! `stream_backup` on the source's): the building block of `add_nodes` and
//! `rebuild_node`.
//!
//! The target's operation opens a session (`POST /clone/SESSION` on its own
//! agent, a random name) and asks the source's agent for `stream_backup`
//! to it. The source runs `mariadb-backup --backup --stream=xbstream` (the
//! account in a `0600` option file, never on a command line; on a replica
//! with `--safe-slave-backup`) and sends its output as the body of that
//! `POST`, rate-limited to `pv_limit` MB/s (MiB) when given; both ends count
//! the bytes and hash them (SHA-256), and the source's answer carries its
//! count and hash, which the target compares with its own: a stream cut
//! off or altered is never used. The target pipes the body straight into
//! `mbstream -x` in its new datadir (`data.clone`): no copy of the backup
//! on either disk beyond that datadir. It then prepares it, stops the
//! instance, sets the old datadir and binlogs aside (`data.old`,
//! `binlog.old`), puts the clone in place, starts it, sets `gtid_slave_pos`
//! from the backup's binlog info and replicates from the shard's primary
//! with `MASTER_USE_GTID = slave_pos`. Only once it replicates is the old
//! datadir removed (or kept as `data.before-rebuild-<time>` with
//! `need_backup`). Whatever stops it before (a failure, the agent killed),
//! the old datadir is put back ([`super::instance::Instance::recover_swap`]):
//! the instance is never left without a datadir.

use super::instance::{program, Instance};
use super::ops::Failure;
use super::Agent;
use crate::db;
use crate::protocol::{CloneMysql, Progress, StreamBackup, StreamSummary};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mysql_async::prelude::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stream body as the target's session receives it.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// What the `/clone/SESSION` route hands to the operation waiting for it:
/// the body, the source's estimate of its size, and where to answer.
pub struct Incoming {
    pub body: BodyStream,
    pub estimate: Option<u64>,
    pub answer: tokio::sync::oneshot::Sender<Result<StreamSummary, String>>,
}

/// How long the target waits for the source to start streaming.
const FIRST_BYTES: Duration = Duration::from_secs(120);
/// A stream that moves no byte this long is cut off (a network split).
const IDLE: Duration = Duration::from_secs(120);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn session_name() -> Result<String, String> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| "the system's random source failed".to_string())?;
    Ok(hex(&b))
}

fn io(p: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", p.display())
}

/// `clone_mysql` on the target's agent (it holds the instance's lock).
pub async fn clone(
    agent: &Agent,
    c: CloneMysql,
    report: &(dyn Fn(Progress) + Sync),
) -> Result<Value, Failure> {
    let started = Instant::now();
    let phase = |p: &str, done: u64, total: Option<u64>| {
        report(Progress {
            done,
            total,
            phase: p.into(),
        })
    };
    // The instance: a new one laid out and listed (not started, no
    // datadir yet), or the installed one.
    let instance = match &c.install {
        Some(i) => {
            let spec = super::request::spec_of(i);
            if let Some(other) = agent
                .registry
                .load()?
                .into_iter()
                .find(|x| x.port == spec.port && x.dir != spec.base.join(spec.port.to_string()))
            {
                return Err(format!(
                    "port {} is taken by the instance in {}",
                    spec.port,
                    other.dir.display()
                )
                .into());
            }
            let instance = Instance::of(&spec);
            instance.lay_out(&agent.host)?;
            agent.registry.update(|list| {
                if !list.iter().any(|x| x.port == instance.port) {
                    list.push(instance.clone());
                }
            })?;
            agent.find(instance.port)?
        }
        None => agent.find(c.port)?,
    };
    // A swap an earlier attempt left half done is put back first.
    if instance.dir.join("data.old").is_dir() {
        instance.stop().await?;
        instance.recover_swap()?;
    }
    instance.clear_leftovers();
    let target = instance.dir.join("data.clone");
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| io(&target, e))?;
    }
    std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
    // Whatever stops the clone before it is in place, its copy goes.
    let _partial = RemoveDir(target.clone());

    // The session the source streams to.
    let session = session_name()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    agent.sessions.lock().insert(session.clone(), tx);
    let _forget = Forget(agent, session.clone());
    let ask = StreamBackup {
        port: c.source.port,
        user: c.admin.0.clone(),
        password: c.admin.1.clone(),
        safe_slave: c.source.replica,
        pv_limit_mb: c.pv_limit_mb,
        to: format!(
            "http://{}:{}/clone/{session}",
            agent.host, agent.listen_port
        ),
    };
    let source = format!("{}:{}", c.source.host, c.source.agent_port);
    let sent = agent.peer(&c.source.host, c.source.agent_port, ask.body());
    tokio::pin!(sent);
    phase("waiting for the source's stream", 0, None);
    let incoming = tokio::select! {
        r = &mut sent => {
            return Err(match r {
                Ok(v) => Failure::retry(format!("the source's agent {source} answered before streaming: {v}")),
                Err(e) => e,
            })
        }
        r = tokio::time::timeout(FIRST_BYTES, rx) => match r {
            Ok(Ok(incoming)) => incoming,
            _ => return Err(Failure::retry(format!(
                "the source's agent {source} did not start streaming within {} s",
                FIRST_BYTES.as_secs()
            ))),
        },
    };
    let received = receive(incoming, &target, &|done, total| {
        phase("streaming", done, total)
    })
    .await;
    // Our own failure first (it says more), then the source's count and
    // hash, compared with ours.
    let (ours, theirs) = match (received, sent.await) {
        (Ok(ours), Ok(theirs)) => (ours, theirs),
        // Our own failure for good (mbstream missing, a full disk) says
        // more than the stream it cut off.
        (Err(e), _) if !e.retry => return Err(e),
        // Else the source's account: why it stopped streaming.
        (_, Err(e)) | (Err(e), Ok(_)) => return Err(e),
    };
    let theirs: StreamSummary = serde_json::from_value(theirs["summary"].clone())
        .map_err(|e| format!("the source's agent {source} answered {e}"))?;
    if theirs != ours {
        return Err(Failure::retry(format!(
            "the stream from {source} arrived altered or cut: sent {} bytes (sha256 {}), \
             received {} bytes (sha256 {})",
            theirs.bytes, theirs.sha256, ours.bytes, ours.sha256
        )));
    }
    let tool = program("mariadb-backup")?;
    let mut cmd = tokio::process::Command::new(&tool);
    cmd.arg("--prepare")
        .arg(format!("--target-dir={}", target.display()))
        .arg("--use-memory=64M");
    ticking(
        async { Ok(run(cmd, "mariadb-backup --prepare").await?) },
        &|secs| {
            phase(
                &format!("preparing ({secs} s)"),
                ours.bytes,
                Some(ours.bytes),
            )
        },
    )
    .await?;
    let gtid = backup_gtid(&target)?;

    // The swap: the old datadir and binlogs aside, the clone in place. The
    // instance lock keeps auto pullup out; an agent killed in the middle
    // leaves `data.old`, which the next start puts back.
    phase("starting", ours.bytes, Some(ours.bytes));
    instance.stop().await?;
    let had_data = instance.data().join("mysql").is_dir();
    let swapped = async {
        swap_in(&instance, &target, had_data)?;
        agent.start_instance(&instance).await?;
        follow(&instance, &gtid, &c).await
    }
    .await;
    if let Err(e) = swapped {
        // Back to the old datadir, as it was.
        instance.stop().await?;
        if had_data {
            instance.recover_swap()?;
            agent.start_instance(&instance).await?;
        }
        return Err(e);
    }
    // It replicates: confirmed by renaming `data.old` away in one step,
    // then the old datadir goes (or stays aside).
    let mut previous = Value::Null;
    let old = instance.dir.join("data.old");
    let old_binlog = instance.dir.join("binlog.old");
    if old.is_dir() {
        let stamp = chrono::Utc::now().format("%Y%m%d_%H%M%S");
        let name = if c.keep_old {
            format!("data.before-rebuild-{stamp}")
        } else {
            format!("data.discard-{stamp}")
        };
        let away = instance.dir.join(name);
        std::fs::rename(&old, &away).map_err(|e| io(&old, e))?;
        if old_binlog.is_dir() {
            std::fs::rename(&old_binlog, away.join("binlog.before-rebuild"))
                .map_err(|e| io(&old_binlog, e))?;
        }
        if c.keep_old {
            previous = json!(away);
        } else {
            ticking(
                async { std::fs::remove_dir_all(&away).map_err(|e| io(&away, e).into()) },
                &|secs| {
                    phase(
                        &format!("removing the old datadir ({secs} s)"),
                        ours.bytes,
                        Some(ours.bytes),
                    )
                },
            )
            .await?;
        }
    }
    agent.set_wanted(instance.port, true)?;
    let seconds = started.elapsed().as_secs_f64();
    phase("done", ours.bytes, Some(ours.bytes));
    Ok(json!({
        "port": instance.port,
        "source": format!("{}:{}", c.source.host, c.source.port),
        "primary": format!("{}:{}", c.primary.0, c.primary.1),
        "gtid_slave_pos": gtid,
        "bytes": ours.bytes,
        "sha256": ours.sha256,
        "seconds": (seconds * 10.0).round() / 10.0,
        "previous_datadir": previous,
    }))
}

/// Sets the old datadir and binlogs aside (when there is one) and puts the
/// prepared clone in their place, with empty binlogs.
pub(super) fn swap_in(instance: &Instance, clone: &Path, had_data: bool) -> Result<(), Failure> {
    let data = instance.data();
    let binlog = instance.dir.join("binlog");
    if had_data {
        std::fs::rename(&data, instance.dir.join("data.old")).map_err(|e| io(&data, e))?;
        if binlog.is_dir() {
            std::fs::rename(&binlog, instance.dir.join("binlog.old"))
                .map_err(|e| io(&binlog, e))?;
        }
    } else if data.exists() {
        std::fs::remove_dir_all(&data).map_err(|e| io(&data, e))?;
    }
    if binlog.exists() {
        std::fs::remove_dir_all(&binlog).map_err(|e| io(&binlog, e))?;
    }
    std::fs::create_dir_all(&binlog).map_err(|e| io(&binlog, e))?;
    std::fs::rename(clone, &data).map_err(|e| io(clone, e))?;
    Ok(())
}

/// Runs `work`, calling `tick` with the seconds spent every 2 s, so that
/// a long step without bytes to count still shows it moves.
async fn ticking<T>(
    work: impl std::future::Future<Output = Result<T, Failure>>,
    tick: &(dyn Fn(u64) + Sync),
) -> Result<T, Failure> {
    tokio::pin!(work);
    let began = Instant::now();
    loop {
        tick(began.elapsed().as_secs());
        tokio::select! {
            r = &mut work => return r,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Forgets a session however the operation ends.
struct Forget<'a>(&'a Agent, String);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.sessions.lock().remove(&self.1);
    }
}

/// Pipes the stream into `mbstream -x` in `dir`, counting and hashing it;
/// answers the source's `POST` with what arrived.
async fn receive(
    incoming: Incoming,
    dir: &Path,
    progress: &(dyn Fn(u64, Option<u64>) + Sync),
) -> Result<StreamSummary, Failure> {
    let Incoming {
        mut body,
        estimate,
        answer,
    } = incoming;
    let outcome = async {
        let mut child = tokio::process::Command::new(program("mbstream")?)
            .arg("-x")
            .arg("-C")
            .arg(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("mbstream: {e}"))?;
        let mut stdin = child.stdin.take().ok_or("mbstream has no input")?;
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut bytes = 0u64;
        let mut told = Instant::now();
        loop {
            let next = tokio::time::timeout(IDLE, body.next()).await.map_err(|_| {
                Failure::retry(format!(
                    "the stream stalled: nothing for {} s",
                    IDLE.as_secs()
                ))
            })?;
            let Some(chunk) = next else {
                break;
            };
            let chunk = chunk.map_err(|e| Failure::retry(format!("the stream broke: {e}")))?;
            hash.update(&chunk);
            bytes += chunk.len() as u64;
            stdin
                .write_all(&chunk)
                .await
                .map_err(|e| format!("mbstream stopped taking the stream: {e}"))?;
            if told.elapsed() >= Duration::from_millis(500) {
                progress(bytes, estimate);
                told = Instant::now();
            }
        }
        progress(bytes, estimate);
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| format!("mbstream: {e}"))?;
        if !out.status.success() {
            return Err(Failure::from(format!(
                "mbstream -x failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(StreamSummary {
            bytes,
            sha256: hex(hash.finish().as_ref()),
        })
    }
    .await;
    let _ = answer.send(match &outcome {
        Ok(s) => Ok(s.clone()),
        Err(e) => Err(e.message.clone()),
    });
    outcome
}

/// The GTID position the clone starts replicating from: a replica
/// source's applied position (`--slave-info`: what it had from the
/// primary, without anything of its own), else the source's binlog
/// position (`""`: nothing logged yet).
fn backup_gtid(dir: &Path) -> Result<String, String> {
    for name in ["mariadb_backup_slave_info", "xtrabackup_slave_info"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            if let Some(rest) = text.split("gtid_slave_pos").nth(1) {
                if let Some(gtid) = rest.split('\'').nth(1) {
                    return Ok(gtid.trim().to_string());
                }
            }
        }
    }
    for name in ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            return Ok(text
                .split('\t')
                .nth(2)
                .map(|g| g.trim().to_string())
                .unwrap_or_default());
        }
    }
    Ok(String::new())
}

/// The started clone takes its GTID position and replicates from the
/// primary (through its socket, as root).
async fn follow(instance: &Instance, gtid: &str, c: &CloneMysql) -> Result<(), Failure> {
    let mut conn = super::request::root(instance, Duration::from_secs(10)).await?;
    let (host, port) = &c.primary;
    let change = db::change_master(host, port, &c.admin.0, &c.admin.1);
    let set_pos = format!("SET GLOBAL gtid_slave_pos = {}", db::quote_string(gtid));
    for sql in [
        "STOP SLAVE",
        "RESET SLAVE ALL",
        set_pos.as_str(),
        change.as_str(),
        "START SLAVE",
    ] {
        conn.query_drop(sql).await.map_err(|e| {
            format!(
                "the clone on port {}: {}",
                instance.port,
                crate::redact::text(&e.to_string())
            )
        })?;
    }
    // Replicating means both threads running without an error, three
    // checks in a row (an IO thread shows "Yes" for a moment before the
    // primary refuses it).
    let mut good = 0;
    for _ in 0..120 {
        let row: Option<mysql_async::Row> = conn
            .query_first("SHOW SLAVE STATUS")
            .await
            .map_err(|e| format!("the clone: {e}"))?;
        let get = |k: &str| {
            row.as_ref()
                .and_then(|r| r.get_opt::<Option<String>, _>(k))
                .and_then(|r| r.ok())
                .flatten()
                .unwrap_or_default()
        };
        let io_errno = get("Last_IO_Errno");
        let sql_errno = get("Last_SQL_Errno");
        if io_errno == "1236" {
            return Err(format!(
                "the primary {host}:{port} cannot serve the clone's position: {}",
                get("Last_IO_Error")
            )
            .into());
        }
        if !matches!(sql_errno.as_str(), "" | "0") && get("Slave_SQL_Running") == "No" {
            return Err(format!(
                "the clone does not replicate from {host}:{port}: {}",
                get("Last_SQL_Error")
            )
            .into());
        }
        let running = get("Slave_IO_Running") == "Yes" && get("Slave_SQL_Running") == "Yes";
        if running && matches!(io_errno.as_str(), "" | "0") {
            good += 1;
            if good >= 3 {
                let _ = conn.disconnect().await;
                return Ok(());
            }
        } else {
            good = 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(Failure::retry(format!(
        "the clone did not start replicating from {host}:{port} within 60 s"
    )))
}

/// The file that says a backup with `--safe-slave-backup` stopped the
/// instance's replication SQL thread, which ran before: whoever sees it
/// with no backup streaming starts the thread again (a backup killed with
/// its agent never leaves a replica stopped).
fn sql_thread_marker(agent: &Agent, port: u16) -> PathBuf {
    agent.state_dir.join(format!("resume-sql-thread-{port}"))
}

/// Whether the instance's replication SQL thread runs.
async fn sql_thread_runs(instance: &Instance) -> bool {
    let Ok(mut conn) = super::request::root(instance, Duration::from_secs(10)).await else {
        return false;
    };
    let row: Option<mysql_async::Row> = conn.query_first("SHOW SLAVE STATUS").await.ok().flatten();
    let _ = conn.disconnect().await;
    row.and_then(|r| r.get_opt::<String, _>("Slave_SQL_Running"))
        .and_then(|r| r.ok())
        .is_some_and(|v| v == "Yes")
}

/// Starts the SQL thread a backup stopped, if its marker says so and no
/// backup of the instance streams now.
pub async fn resume_sql_thread(agent: &Agent, instance: &Instance) -> Result<(), String> {
    let marker = sql_thread_marker(agent, instance.port);
    if !marker.exists() || agent.streaming.lock().contains(&instance.port) {
        return Ok(());
    }
    let mut conn = super::request::root(instance, Duration::from_secs(10)).await?;
    // A backup that began meanwhile keeps the thread stopped.
    if agent.streaming.lock().contains(&instance.port) {
        return Ok(());
    }
    conn.query_drop("START SLAVE SQL_THREAD")
        .await
        .map_err(|e| format!("restarting the SQL thread of port {}: {e}", instance.port))?;
    let _ = conn.disconnect().await;
    if !agent.streaming.lock().contains(&instance.port) {
        let _ = std::fs::remove_file(&marker);
    }
    tracing::info!(
        port = instance.port,
        "the replication SQL thread a backup stopped runs again"
    );
    Ok(())
}

/// Marks the instance as streaming a backup while alive.
struct Streaming<'a>(&'a Agent, u16);

impl Drop for Streaming<'_> {
    fn drop(&mut self) {
        self.0.streaming.lock().remove(&self.1);
    }
}

/// Runs `cmd`; its error output's tail when it fails.
async fn run(mut cmd: tokio::process::Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(5).collect();
    Err(format!(
        "{what} failed: {}",
        crate::redact::text(&tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
    ))
}

/// `stream_backup` on the source's agent: a backup of the instance on
/// `port` streamed as the body of a `POST` to the target's session, and
/// what was sent.
pub async fn stream_backup(agent: &Agent, s: StreamBackup) -> Result<Value, Failure> {
    let instance = agent.find(s.port)?;
    if !instance.is_running() {
        return Err(format!("the source instance on port {} is not running", s.port).into());
    }
    let tool = program("mariadb-backup")?;
    // Nothing else acts on the source (a cold backup, a stop) meanwhile.
    let lock = agent.lock_of(s.port);
    let Ok(_held) = lock.try_lock() else {
        return Err(Failure::retry(format!(
            "the instance on port {} is busy with another operation",
            s.port
        )));
    };
    if !agent.streaming.lock().insert(s.port) {
        return Err(Failure::retry(format!(
            "a backup of the instance on port {} streams already",
            s.port
        )));
    }
    let streaming = Streaming(agent, s.port);
    if s.safe_slave && sql_thread_runs(&instance).await {
        let marker = sql_thread_marker(agent, s.port);
        std::fs::write(&marker, b"").map_err(|e| io(&marker, e))?;
    }
    let creds = super::backup::Credentials::write(&agent.state_dir, &s.user, &s.password)?;
    let scratch = agent.state_dir.join(format!("stream-{}", session_name()?));
    std::fs::create_dir_all(&scratch).map_err(|e| io(&scratch, e))?;
    let _scratch = RemoveDir(scratch.clone());
    let estimate = backed_up_bytes(&instance.data());
    let mut cmd = tokio::process::Command::new(&tool);
    cmd.arg(format!("--defaults-extra-file={}", creds.path().display()))
        .arg("--backup")
        .arg("--stream=xbstream")
        .arg(format!("--socket={}", instance.socket().display()))
        .arg(format!("--datadir={}", instance.data().display()))
        .arg(format!("--target-dir={}", scratch.display()));
    if s.safe_slave {
        cmd.arg("--safe-slave-backup").arg("--slave-info");
    }
    let errors = scratch.join("backup.err");
    let err_file = std::fs::File::create(&errors).map_err(|e| io(&errors, e))?;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(err_file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("mariadb-backup: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("mariadb-backup has no output")?;
    type Frame = Result<hyper::body::Frame<Bytes>, std::io::Error>;
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(4);
    let limit = s.pv_limit_mb.saturating_mul(1 << 20);
    // Reads the backup, hashes and counts it, paces it, sends it on.
    let mut pump = AbortOnDrop(tokio::spawn(async move {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut bytes = 0u64;
        let began = Instant::now();
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = match stdout.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return Err(format!("reading mariadb-backup's stream: {e}"));
                }
            };
            buf.truncate(n);
            hash.update(&buf);
            bytes += n as u64;
            if tx
                .send(Ok(hyper::body::Frame::data(Bytes::from(buf))))
                .await
                .is_err()
            {
                return Err("the target stopped taking the stream".to_string());
            }
            if limit > 0 {
                let due = Duration::from_secs_f64(bytes as f64 / limit as f64);
                if let Some(wait) = due.checked_sub(began.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("mariadb-backup: {e}"))?;
        if !status.success() {
            let err = std::fs::read_to_string(&errors).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            let why = format!(
                "mariadb-backup --backup failed: {}",
                crate::redact::text(&tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
            );
            // Cuts the body off: the target never takes a partial stream.
            let _ = tx.send(Err(std::io::Error::other(why.clone()))).await;
            return Err(why);
        }
        Ok(StreamSummary {
            bytes,
            sha256: hex(hash.finish().as_ref()),
        })
    }));
    let body = http_body_util::StreamBody::new(tokio_stream(rx));
    let auth = format!("Bearer {}", agent.token.expose());
    let estimate_text = estimate.to_string();
    let posted = crate::client::post_stream(
        &s.to,
        &[
            ("authorization", auth.as_str()),
            ("x-ccr-estimate", estimate_text.as_str()),
        ],
        body,
        Duration::from_secs(3600),
    )
    .await;
    let sent = (&mut pump.0)
        .await
        .map_err(|e| format!("the stream's task: {e}"))?;
    drop(creds);
    drop(streaming);
    if let Err(e) = resume_sql_thread(agent, &instance).await {
        tracing::warn!(port = s.port, error = %e, "cannot restart the SQL thread after a backup");
    }
    // A backup refused for its account or its options fails for good; a
    // stream cut off is worth another try.
    let sent = sent.map_err(|e| {
        if e.contains("Access denied") || e.contains("unknown option") {
            Failure::from(e)
        } else {
            Failure::retry(e)
        }
    })?;
    let answer = posted.map_err(|e| Failure::retry(format!("streaming to {}: {e}", s.to)))?;
    if answer.status != 200 {
        return Err(Failure::retry(format!(
            "the target agent answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        )));
    }
    Ok(
        json!({"ver": "0.1", "status": "done", "error_code": "0", "error_info": "",
              "summary": sent}),
    )
}

/// About what a backup of `datadir` streams: its files but the redo log,
/// the temporary tablespace and relay logs, which it does not copy.
pub(super) fn backed_up_bytes(datadir: &Path) -> u64 {
    let skipped = |name: &str| {
        name.starts_with("ib_logfile") || name.starts_with("ibtmp") || name.contains("relay-bin")
    };
    std::fs::read_dir(datadir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            match e.file_type() {
                Ok(t) if t.is_dir() => super::backup::dir_bytes(&e.path()),
                Ok(_) if !skipped(&name) => e.metadata().map_or(0, |m| m.len()),
                _ => 0,
            }
        })
        .sum()
}

/// A receiver as a stream.
fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A task aborted when its handle is dropped (the request serving it gone:
/// its `mariadb-backup` is killed with it).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
