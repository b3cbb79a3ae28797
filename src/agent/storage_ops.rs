//! Backups and restores through the backup storage (`backup_to_storage`,
//! `restore_from_storage`, `replay_binlog`), each an operation holding its
//! instance's lock.
//!
//! - **Backup.** `mariadb-backup --backup --stream=xbstream` (the account in
//!   a `0600` option file; on a replica with `--safe-slave-backup`) is read
//!   as it comes, gzip-compressed and uploaded as objects of at most
//!   `object_bytes` (each a whole gzip stream), each hashed as stored;
//!   nothing of it is written to local disk. A failure aborts the object in
//!   flight; the objects already stored are named in the error for the
//!   manager to remove (a backup without its manifest does not exist). The
//!   GTID position the backup holds is the one `mariadb-backup` reports
//!   (taken under `BACKUP STAGE BLOCK_COMMIT`).
//! - **Restore.** The objects are read in order, each hashed and compared
//!   with its manifest's hash (a mismatch refuses, naming the object),
//!   decompressed into `mbstream -x`, prepared, swapped in as the
//!   instance's datadir with empty binlogs (its old one removed: a restore
//!   goes into a new, empty cluster), started read-only, and its binlog
//!   state set to the backup's GTID position. No account statement, nothing
//!   that logs a GTID.
//! - **Replay.** The archived segments (each checked against its hash)
//!   through [`crate::archive::Filter`] into `mariadb-binlog - | mariadb`:
//!   every transaction after the instance's own GTID position (so a replay
//!   sent again after a crash applies nothing twice) and committed at or
//!   before the stop time, whole. Then the accounts the destination cluster
//!   was made with are set again (not logged).

use super::instance::{program, Instance};
use super::ops::Failure;
use super::Agent;
use crate::archive::{Filter, Pos};
use crate::protocol::{Progress, StorageOp, StorageWork};
use crate::storage::{Storage, Stored};
use futures_util::StreamExt;
use mysql_async::prelude::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs a storage operation on `instance`.
pub async fn run(
    agent: &Agent,
    op: StorageOp,
    report: &(dyn Fn(Progress) + Sync),
) -> Result<Value, Failure> {
    let instance = agent.find(op.port)?;
    let cipher = op
        .encrypt
        .as_ref()
        .map(crate::storage::Cipher::from_passphrase);
    let cipher = cipher.as_ref();
    let open = |url: &str| Storage::open(url, agent.s3.as_ref()).map_err(Failure::from);
    match &op.work {
        StorageWork::Backup {
            storage,
            prefix,
            safe_slave,
            object_bytes,
        } => {
            let s = open(storage)?;
            let w = Wanted {
                prefix,
                safe_slave: *safe_slave,
                object_bytes: *object_bytes,
                cipher,
            };
            backup(agent, &instance, &op, &s, &w, report).await
        }
        StorageWork::Restore {
            storage,
            objects,
            gtid,
        } => {
            let s = open(storage)?;
            restore(agent, &instance, &s, objects, gtid, cipher, report).await
        }
        StorageWork::Replay {
            storage,
            segments,
            after,
            stop,
            table,
        } => {
            let s = open(storage)?;
            let after = Pos::parse(after)?;
            let table = table.as_ref();
            replay(
                &instance, &op, &s, segments, after, *stop, cipher, table, report,
            )
            .await
        }
    }
}

fn io(p: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", p.display())
}

/// The GTID position `mariadb-backup` reports it holds.
fn reported_gtid(stderr: &str) -> Option<String> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("GTID of the last change"))?;
    let rest = line.split("GTID of the last change").nth(1)?;
    Some(rest.split('\'').nth(1)?.trim().to_string())
}

/// What a backup is asked for.
struct Wanted<'a> {
    prefix: &'a str,
    safe_slave: bool,
    object_bytes: u64,
    cipher: Option<&'a crate::storage::Cipher>,
}

/// One object being written: gzip, then the cipher when the cluster's
/// backups are encrypted, in front of the upload.
struct Part {
    gz: flate2::write::GzEncoder<Vec<u8>>,
    seal: Option<crate::storage::Sealer>,
    up: crate::storage::Upload,
}

impl Part {
    async fn open(s: &Storage, w: &Wanted<'_>, n: usize) -> Result<Part, String> {
        let suffix = if w.cipher.is_some() { ".enc" } else { "" };
        Ok(Part {
            gz: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
            seal: w.cipher.map(|c| c.sealer()).transpose()?,
            up: s
                .upload(&format!("{}part-{n:04}.xb.gz{suffix}", w.prefix))
                .await?,
        })
    }

    async fn send(&mut self, out: Vec<u8>) -> Result<(), String> {
        let out = match &mut self.seal {
            Some(s) => s.push(&out)?,
            None => out,
        };
        self.up.write(&out).await
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.gz
            .write_all(data)
            .map_err(|e| format!("compressing: {e}"))?;
        if self.gz.get_ref().len() >= 1 << 20 {
            let out = std::mem::take(self.gz.get_mut());
            self.send(out).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Stored, String> {
        let gz = std::mem::replace(
            &mut self.gz,
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()),
        );
        let out = gz.finish().map_err(|e| format!("compressing: {e}"))?;
        self.send(out).await?;
        if let Some(s) = self.seal.take() {
            let last = s.finish()?;
            self.up.write(&last).await?;
        }
        self.up.finish().await
    }
}

async fn backup(
    agent: &Agent,
    instance: &Instance,
    op: &StorageOp,
    s: &Storage,
    w: &Wanted<'_>,
    report: &(dyn Fn(Progress) + Sync),
) -> Result<Value, Failure> {
    let safe_slave = w.safe_slave;
    if !instance.is_running() {
        return Err(format!("the instance on port {} is not running", op.port).into());
    }
    let started = Instant::now();
    let tool = program("mariadb-backup")?;
    let creds = super::backup::Credentials::write(&agent.state_dir, &op.admin.0, &op.admin.1)?;
    let scratch = agent.state_dir.join(format!("storage-backup-{}", op.port));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| io(&scratch, e))?;
    let _scratch = RemoveDir(scratch.clone());
    let estimate = super::clone::backed_up_bytes(&instance.data());
    let mut cmd = tokio::process::Command::new(&tool);
    cmd.arg(format!("--defaults-extra-file={}", creds.path().display()))
        .arg("--backup")
        .arg("--stream=xbstream")
        .arg(format!("--socket={}", instance.socket().display()))
        .arg(format!("--datadir={}", instance.data().display()))
        .arg(format!("--target-dir={}", scratch.display()));
    if safe_slave {
        cmd.arg("--safe-slave-backup");
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
    let object_bytes = w.object_bytes.max(1 << 20);
    let mut stored: Vec<Stored> = Vec::new();
    let mut raw = 0u64;
    let mut told = Instant::now();
    let mut part = Some(Part::open(s, w, 0).await?);
    let outcome: Result<(), String> = async {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| format!("reading mariadb-backup's stream: {e}"))?;
            if n == 0 {
                break;
            }
            raw += n as u64;
            let p = part.as_mut().ok_or("no object open")?;
            p.write(&buf[..n]).await?;
            if p.up.bytes() >= object_bytes {
                let done = part.take().ok_or("no object open")?.finish().await?;
                stored.push(done);
                part = Some(Part::open(s, w, stored.len()).await?);
            }
            if told.elapsed() >= Duration::from_millis(500) {
                report(Progress {
                    done: raw,
                    total: Some(estimate),
                    phase: format!("streaming to {} ({} objects stored)", s.url, stored.len()),
                });
                told = Instant::now();
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("mariadb-backup: {e}"))?;
        if !status.success() {
            let err = std::fs::read_to_string(&errors).unwrap_or_default();
            let tail: Vec<&str> = err.lines().rev().take(5).collect();
            return Err(format!(
                "mariadb-backup --backup failed: {}",
                crate::redact::text(&tail.into_iter().rev().collect::<Vec<_>>().join(" | "))
            ));
        }
        let done = part.take().ok_or("no object open")?.finish().await?;
        stored.push(done);
        Ok(())
    }
    .await;
    drop(creds);
    if safe_slave {
        let _ = super::clone::resume_sql_thread(agent, instance).await;
    }
    if let Err(e) = outcome {
        if let Some(p) = part.take() {
            p.up.abort().await;
        }
        // What was stored of the attempt goes: without its manifest it is
        // no backup, and nothing should be left to bill.
        for o in &stored {
            let _ = s.delete(&o.key).await;
        }
        let retry = !(e.contains("Access denied") || e.contains("unknown option"));
        return Err(Failure { message: e, retry });
    }
    let err = std::fs::read_to_string(&errors).unwrap_or_default();
    let gtid = reported_gtid(&err).unwrap_or_default();
    // Each object confirmed in the store at the size sent.
    for o in &stored {
        match s.size(&o.key).await.map_err(Failure::retry)? {
            Some(n) if n == o.bytes => {}
            other => {
                return Err(Failure::retry(format!(
                    "{} was stored as {other:?} bytes, not {}",
                    o.key, o.bytes
                )))
            }
        }
    }
    Ok(json!({
        "port": op.port,
        "gtid": gtid,
        "raw_bytes": raw,
        "encrypted": w.cipher.is_some(),
        "objects": stored,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    }))
}

async fn restore(
    agent: &Agent,
    instance: &Instance,
    s: &Storage,
    objects: &[Stored],
    gtid: &str,
    cipher: Option<&crate::storage::Cipher>,
    report: &(dyn Fn(Progress) + Sync),
) -> Result<Value, Failure> {
    Pos::parse(gtid)?;
    if cipher.is_none() && objects.iter().any(|o| o.key.ends_with(".enc")) {
        return Err("the backup is encrypted: the restore needs its backup_encrypt_key".into());
    }
    let total: u64 = objects.iter().map(|o| o.bytes).sum();
    let target = instance.dir.join("data.restore");
    let _ = std::fs::remove_dir_all(&target);
    std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
    let _partial = RemoveDir(target.clone());
    let mut child = tokio::process::Command::new(program("mbstream")?)
        .arg("-x")
        .arg("-C")
        .arg(&target)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("mbstream: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("mbstream has no input")?;
    let mut read = 0u64;
    let mut told = Instant::now();
    for o in objects {
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut gz = flate2::write::GzDecoder::new(Vec::new());
        let mut opener = cipher.map(|c| c.opener());
        let mut body = s.stream(&o.key).await.map_err(Failure::retry)?;
        let mut n = 0u64;
        // A failure to decompress or extract is said only once the whole
        // object is hashed: a corrupt object is named as such.
        let mut broken: Option<String> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Failure::retry)?;
            hash.update(&chunk);
            n += chunk.len() as u64;
            read += chunk.len() as u64;
            let plain = match (&mut opener, broken.is_none()) {
                (Some(op), true) => op.push(&chunk).unwrap_or_else(|e| {
                    broken = Some(format!("{}: {e}", o.key));
                    Vec::new()
                }),
                _ => chunk.to_vec(),
            };
            if broken.is_none() {
                if let Err(e) = gz.write_all(&plain) {
                    broken = Some(format!("{} does not decompress: {e}", o.key));
                } else {
                    let out = std::mem::take(gz.get_mut());
                    if let Err(e) = stdin.write_all(&out).await {
                        broken = Some(format!("mbstream stopped taking the backup: {e}"));
                    }
                }
            }
            if told.elapsed() >= Duration::from_millis(500) {
                report(Progress {
                    done: read,
                    total: Some(total),
                    phase: format!("reading {}", o.key),
                });
                told = Instant::now();
            }
        }
        let sha = crate::storage::hex(hash.finish().as_ref());
        if n != o.bytes || sha != o.sha256 {
            return Err(format!(
                "the backup object {} is corrupt or incomplete in the storage: {n} bytes with \
                 sha256 {sha}, the manifest says {} bytes with sha256 {}",
                o.key, o.bytes, o.sha256
            )
            .into());
        }
        if let Some(e) = broken {
            return Err(e.into());
        }
        if let Some(op) = &opener {
            op.finish().map_err(|e| format!("{}: {e}", o.key))?;
        }
        let out = gz
            .finish()
            .map_err(|e| format!("{} does not decompress: {e}", o.key))?;
        stdin
            .write_all(&out)
            .await
            .map_err(|e| format!("mbstream stopped taking the backup: {e}"))?;
    }
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("mbstream: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mbstream -x failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    report(Progress {
        done: read,
        total: Some(total),
        phase: "preparing".into(),
    });
    let prepared = tokio::process::Command::new(program("mariadb-backup")?)
        .arg("--prepare")
        .arg(format!("--target-dir={}", target.display()))
        .arg("--use-memory=64M")
        .output()
        .await
        .map_err(|e| format!("mariadb-backup --prepare: {e}"))?;
    if !prepared.status.success() {
        let err = String::from_utf8_lossy(&prepared.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        return Err(format!(
            "mariadb-backup --prepare failed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )
        .into());
    }
    report(Progress {
        done: read,
        total: Some(total),
        phase: "starting".into(),
    });
    instance.stop().await?;
    let had_data = instance.data().join("mysql").is_dir();
    super::clone::swap_in(instance, &target, had_data)?;
    agent.start_instance(instance).await?;
    let mut conn = super::request::root(instance, Duration::from_secs(30)).await?;
    // A backup taken on a replica carries where it replicated from: the
    // restored node follows nobody.
    for sql in [
        "SET GLOBAL read_only = ON".to_string(),
        "STOP ALL SLAVES".to_string(),
        "RESET SLAVE ALL".to_string(),
        "RESET MASTER".to_string(),
        format!("SET GLOBAL gtid_binlog_state = '{gtid}'"),
        format!("SET GLOBAL gtid_slave_pos = '{gtid}'"),
    ] {
        conn.query_drop(&sql)
            .await
            .map_err(|e| format!("{sql}: {e}"))?;
    }
    let _ = conn.disconnect().await;
    for old in ["data.old", "binlog.old"] {
        let _ = std::fs::remove_dir_all(instance.dir.join(old));
    }
    agent.set_wanted(instance.port, true)?;
    Ok(json!({"port": instance.port, "gtid": gtid, "bytes": read}))
}

#[allow(clippy::too_many_arguments)]
async fn replay(
    instance: &Instance,
    op: &StorageOp,
    s: &Storage,
    segments: &[crate::archive::SegmentMeta],
    after: Pos,
    stop: Option<i64>,
    cipher: Option<&crate::storage::Cipher>,
    table: Option<&crate::protocol::TableReplay>,
    report: &(dyn Fn(Progress) + Sync),
) -> Result<Value, Failure> {
    if cipher.is_none() && segments.iter().any(|m| m.encrypted) {
        return Err(
            "the archived binlog is encrypted: the replay needs its backup_encrypt_key".into(),
        );
    }
    let mut conn = super::request::root(instance, Duration::from_secs(30)).await?;
    let have: String = conn
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .map_err(|e| format!("reading the instance's GTID position: {e}"))?
        .unwrap_or_default();
    let have = Pos::parse(&have)?;
    // Where to start: the backup's position, or further where an earlier
    // attempt got to (each transaction applied commits whole).
    // (One table's changes go into another server under its own GTIDs:
    // its position says nothing of them.)
    let mut start = after.clone();
    if table.is_none() {
        for (d, (srv, n)) in &have.0 {
            if *n > start.seq(*d) {
                start.0.insert(*d, (*srv, *n));
            }
        }
    }
    let total: u64 = segments.iter().map(|m| m.bytes).sum();
    let mut filter = Filter::new(start.clone(), stop);
    filter.rows_only = table.is_some();
    let binlog_tool = program("mariadb-binlog")?;
    let client = program("mariadb")?;
    let mut apply = tokio::process::Command::new(&client)
        .arg(format!("--socket={}", instance.socket().display()))
        .arg("--user=root")
        .arg("--binary-mode")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("mariadb: {e}"))?;
    let apply_in: Option<std::process::Stdio> = match table {
        Some(_) => None,
        None => Some(
            apply
                .stdin
                .take()
                .ok_or("mariadb has no input")?
                .try_into()
                .map_err(|e| format!("mariadb's input: {e}"))?,
        ),
    };
    let mut cmd = tokio::process::Command::new(&binlog_tool);
    if let Some(t) = table {
        cmd.arg(format!("--database={}", t.database))
            .arg(format!("--table={}", t.table))
            .arg(format!("--rewrite-db={}->{}", t.database, t.into_database));
    }
    let mut decode = cmd
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(apply_in.unwrap_or_else(std::process::Stdio::piped))
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("mariadb-binlog: {e}"))?;
    // The command holds its copy of the client's input until dropped: the
    // client would never see the end of its input.
    drop(cmd);
    // One table's changes: the statements that would give them the source's
    // GTIDs are left out (the instance logs them under its own).
    let relay = match (table.is_some(), decode.stdout.take()) {
        (true, Some(out)) => {
            let mut into = apply.stdin.take();
            Some(tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt;
                let mut lines = tokio::io::BufReader::new(out).split(b'\n');
                while let Ok(Some(line)) = lines.next_segment().await {
                    let text = String::from_utf8_lossy(&line);
                    if text.contains("@@session.gtid_seq_no")
                        || text.contains("@@session.gtid_domain_id")
                        || text.contains("@@session.server_id")
                    {
                        continue;
                    }
                    if let Some(w) = into.as_mut() {
                        if w.write_all(&line).await.is_err() || w.write_all(b"\n").await.is_err() {
                            break;
                        }
                    }
                }
            }))
        }
        _ => None,
    };
    let mut feed = decode.stdin.take().ok_or("mariadb-binlog has no input")?;
    let mut read = 0u64;
    let fed: Result<(), Failure> = async {
        for m in segments {
            if filter.result.stopped {
                break;
            }
            // A segment wholly at or before the start adds nothing.
            if start.has(&m.last) {
                continue;
            }
            let bytes = s.get(&m.key).await.map_err(Failure::retry)?;
            let sha = crate::storage::sha256(&bytes);
            if bytes.len() as u64 != m.bytes || sha != m.sha256 {
                return Err(format!(
                    "the archived binlog {} is corrupt or incomplete in the storage: {} bytes \
                     with sha256 {sha}, its meta says {} bytes with sha256 {}",
                    m.key,
                    bytes.len(),
                    m.bytes,
                    m.sha256
                )
                .into());
            }
            read += m.bytes;
            let bytes = match (m.encrypted, cipher) {
                (true, Some(c)) => c.open_all(&bytes).map_err(|e| format!("{}: {e}", m.key))?,
                _ => bytes,
            };
            let mut out = Vec::with_capacity(bytes.len());
            filter
                .segment(&bytes, &mut out)
                .map_err(|e| format!("{}: {e}", m.key))?;
            feed.write_all(&out)
                .await
                .map_err(|e| format!("mariadb-binlog stopped taking the binlog: {e}"))?;
            report(Progress {
                done: read,
                total: Some(total),
                phase: format!("replaying up to {}", filter.result.reached),
            });
        }
        Ok(())
    }
    .await;
    drop(feed);
    let decoded = decode
        .wait_with_output()
        .await
        .map_err(|e| format!("mariadb-binlog: {e}"))?;
    if let Some(r) = relay {
        let _ = r.await;
    }
    let applied = apply
        .wait_with_output()
        .await
        .map_err(|e| format!("mariadb: {e}"))?;
    fed?;
    if !decoded.status.success() && filter.wrote_header {
        return Err(format!(
            "mariadb-binlog failed: {}",
            String::from_utf8_lossy(&decoded.stderr).trim()
        )
        .into());
    }
    if !applied.status.success() {
        return Err(format!(
            "applying the binlog failed: {}",
            crate::redact::text(String::from_utf8_lossy(&applied.stderr).trim())
        )
        .into());
    }
    if table.is_some() {
        let _ = conn.disconnect().await;
        return Ok(json!({
            "port": op.port,
            "reached": filter.result.reached.to_string(),
            "transactions": filter.result.taken,
            "last_commit": filter.result.last_ts,
        }));
    }
    let now: String = conn
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .map_err(|e| format!("reading the instance's GTID position: {e}"))?
        .unwrap_or_default();
    let now = Pos::parse(&now)?;
    if !now.covers(&filter.result.reached) {
        return Err(format!(
            "the replay ended at {now}, short of {}",
            filter.result.reached
        )
        .into());
    }
    // Its replicas start from what it logged (gtid_current_pos takes the
    // replica position for GTIDs of other servers).
    conn.query_drop("SET GLOBAL gtid_slave_pos = @@global.gtid_binlog_pos")
        .await
        .map_err(|e| format!("setting gtid_slave_pos after the replay: {e}"))?;
    let tables = table_sums(&mut conn).await?;
    let _ = conn.disconnect().await;
    super::request::create_admin(instance, &op.admin.0, &op.admin.1, op.control.as_ref()).await?;
    Ok(json!({
        "port": op.port,
        "restored_to": now.to_string(),
        "transactions": filter.result.taken,
        "last_commit": filter.result.last_ts,
        "tables": tables,
    }))
}

/// Every user table's row count and checksum.
async fn table_sums(conn: &mut mysql_async::Conn) -> Result<Value, String> {
    let names: Vec<(String, String)> = conn
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN \
             ('mysql', 'information_schema', 'performance_schema', 'sys', 'ccr_sys') \
             ORDER BY 1, 2",
        )
        .await
        .map_err(|e| format!("listing the tables: {e}"))?;
    let mut out = Vec::new();
    for (db, t) in names {
        let name = format!(
            "{}.{}",
            crate::db::quote_ident(&db),
            crate::db::quote_ident(&t)
        );
        let rows: Option<u64> = conn
            .query_first(format!("SELECT COUNT(*) FROM {name}"))
            .await
            .map_err(|e| format!("counting {name}: {e}"))?;
        let sum: Option<(String, Option<u64>)> = conn
            .query_first(format!("CHECKSUM TABLE {name}"))
            .await
            .map_err(|e| format!("checksumming {name}: {e}"))?;
        out.push(
            json!({"table": format!("{db}.{t}"), "rows": rows.unwrap_or(0),
                        "checksum": sum.and_then(|s| s.1)}),
        );
    }
    Ok(Value::Array(out))
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_gtid_mariadb_backup_reports() {
        let err = "[00] 2026-12-06 18:13:58 Streaming xtrabackup_binlog_info\n\
                   [00] 2026-12-06 18:13:58 MySQL binlog position: filename 'b.000001', \
                   position '833', GTID of the last change '0-7-3'\n";
        assert_eq!(super::reported_gtid(err).as_deref(), Some("0-7-3"));
        assert_eq!(super::reported_gtid("nothing"), None);
    }
}
