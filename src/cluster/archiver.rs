//! The continuous binlog archive, on the group's leader: for every managed
//! shard, one task reads its primary's binlog as a replica does (by GTID,
//! so it follows a promoted replica where the old primary stopped) and
//! stores it as segments ([`crate::archive`]) every `[backup]
//! archive_lag_s / 2` seconds (sooner past 8 MiB), then writes the
//! segment's meta and the shard's head (how far it read, and when).
//!
//! It resumes where the newest segment ends, whoever ran it before. When
//! the primary no longer has that position (its binlogs were purged
//! before they were archived), the gap is written down (`gap-TS.json`),
//! counted in `ccr_cluster_archive_gaps`, and archiving goes on from the
//! primary's position now: never hidden, never papered over.

use super::backups::{Gap, Head};
use super::{nodes, replicas, Env, Manager};
use crate::archive::{Assembler, Pos, SegmentMeta, Transaction};
use crate::storage::Storage;
use futures_util::StreamExt;
use mysql_async::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// A segment is stored once it holds this much, whatever its age.
const SEGMENT_BYTES: usize = 8 << 20;
/// The head is written at least this often while nothing is written.
const HEAD_EVERY: Duration = Duration::from_secs(10);

/// Keeps one archiving task per managed shard while this member leads.
pub async fn run(m: Arc<Manager>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(storage) = m.env.storage.clone() else {
        return;
    };
    // Aborted when dropped: however this task ends, none outlives it.
    let mut tasks: HashMap<(String, i64), Aborting> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let wanted: Vec<(String, i64)> = if m.leads() {
            match m.env.store.instances().await {
                Ok(rows) => {
                    let mut w: Vec<(String, i64)> = rows
                        .into_iter()
                        .filter(|i| i.role == "primary" && i.state == "running")
                        .map(|i| (i.cluster_id, i.shard))
                        .collect();
                    w.sort();
                    w.dedup();
                    w
                }
                Err(_) => continue,
            }
        } else {
            Vec::new()
        };
        tasks.retain(|k, t| wanted.contains(k) && !t.0.is_finished());
        for k in wanted {
            tasks.entry(k.clone()).or_insert_with(|| {
                Aborting(tokio::spawn(shard_task(
                    m.clone(),
                    storage.clone(),
                    k.0,
                    k.1,
                )))
            });
        }
    }
    // Ended before this returns: none holds the manager afterwards.
    for (_, mut t) in tasks.drain() {
        t.0.abort();
        let _ = (&mut t.0).await;
    }
}

/// Reads a server's binlog as a replica does, by GTID from `from`, under
/// a server id of its own made from `name` (heartbeats every second).
pub(crate) async fn binlog_stream(
    mut conn: mysql_async::Conn,
    from: &Pos,
    name: &str,
) -> Result<mysql_async::BinlogStream, mysql_async::Error> {
    conn.query_drop(format!(
        "SET @master_binlog_checksum = @@global.binlog_checksum, @mariadb_slave_capability = 4, \
         @master_heartbeat_period = {}, @slave_connect_state = '{from}', @slave_gtid_strict_mode = 0, \
         @slave_gtid_ignore_duplicates = 0",
        Duration::from_secs(1).as_nanos(),
    ))
    .await?;
    let id = crate::source::binlog::server_id(name);
    conn.get_binlog_stream(mysql_async::BinlogStreamRequest::new(id))
        .await
}

/// A task aborted when its handle is dropped.
pub(crate) struct Aborting(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A shard's archive writer.
struct Writer {
    storage: Storage,
    cluster: String,
    shard: i64,
    /// The position after the last transaction taken (stored or buffered).
    end: Pos,
    /// The position after the last one stored.
    stored_end: Pos,
    buffer: Vec<Transaction>,
    buffered: usize,
    fde: Vec<u8>,
    from: String,
    first_at: Option<Instant>,
    last_head: Instant,
    /// The cluster's backup key: segments are sealed with it.
    cipher: Option<crate::storage::Cipher>,
}

impl Writer {
    async fn flush(&mut self) -> Result<(), String> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let first = self.buffer[0].gtid;
        let last = self.buffer[self.buffer.len() - 1].gtid;
        let mut bytes = Vec::with_capacity(self.buffered + self.fde.len() + 4);
        bytes.extend_from_slice(crate::archive::MAGIC);
        bytes.extend_from_slice(&self.fde);
        for t in &self.buffer {
            bytes.extend_from_slice(&t.bytes);
        }
        if let Some(c) = &self.cipher {
            bytes = c.seal_all(&bytes)?;
        }
        let key = crate::archive::segment_key(&self.cluster, self.shard, &first);
        let meta = SegmentMeta {
            key: key.clone(),
            first,
            last,
            start: self.stored_end.to_string(),
            end: self.end.to_string(),
            first_ts: i64::from(self.buffer[0].ts),
            last_ts: i64::from(self.buffer[self.buffer.len() - 1].ts),
            transactions: self.buffer.len() as u64,
            bytes: bytes.len() as u64,
            sha256: crate::storage::sha256(&bytes),
            from: self.from.clone(),
            encrypted: self.cipher.is_some(),
        };
        self.storage.put(&key, bytes).await?;
        let meta_key = format!("{}.json", key.trim_end_matches(".binlog"));
        self.storage
            .put(&meta_key, serde_json::to_vec(&meta).unwrap_or_default())
            .await?;
        self.buffer.clear();
        self.buffered = 0;
        self.first_at = None;
        self.stored_end = self.end.clone();
        self.head().await
    }

    async fn head(&mut self) -> Result<(), String> {
        let head = Head {
            end: self.stored_end.to_string(),
            through_ts: chrono::Utc::now().timestamp(),
        };
        let key = format!(
            "{}head.json",
            crate::archive::shard_prefix(&self.cluster, self.shard)
        );
        self.storage
            .put(&key, serde_json::to_vec(&head).unwrap_or_default())
            .await?;
        self.last_head = Instant::now();
        Ok(())
    }
}

async fn shard_task(m: Arc<Manager>, storage: Storage, cluster: String, shard: i64) {
    let lag = m.env.settings.backup.archive_lag;
    let labels = [cluster.as_str(), &shard.to_string()];
    let lag_gauge = m.metrics.archive_lag.with_label_values(&labels);
    let gaps_gauge = m.metrics.archive_gaps.with_label_values(&labels);
    // Where the archive ends now.
    let archive = loop {
        match super::backups::archive(&storage, &cluster, shard).await {
            Ok(a) => break a,
            Err(e) => {
                warn!(cluster_id = %cluster, shard, error = %e, "the binlog archive cannot be read");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    gaps_gauge.set(archive.gaps.len() as i64);
    let end = archive
        .segments
        .iter()
        .filter_map(|s| Pos::parse(&s.end).ok())
        .fold(Pos::default(), |mut acc, p| {
            for (d, v) in p.0 {
                if v.1 > acc.seq(d) {
                    acc.0.insert(d, v);
                }
            }
            acc
        });
    let mut w = Writer {
        storage,
        cluster: cluster.clone(),
        shard,
        stored_end: end.clone(),
        end,
        buffer: Vec::new(),
        buffered: 0,
        fde: Vec::new(),
        from: String::new(),
        first_at: None,
        last_head: Instant::now() - HEAD_EVERY,
        cipher: loop {
            match nodes::backup_key(&m.env, &cluster).await {
                Ok(k) => break k.as_ref().map(crate::storage::Cipher::from_passphrase),
                Err(e) => {
                    warn!(cluster_id = %cluster, error = %e, "the cluster's backup key");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        },
    };
    loop {
        match follow(&m.env, &mut w, lag, &lag_gauge).await {
            Ok(()) => {}
            Err(Failure::Purged(why)) => {
                // The primary lost binlogs the archive never had.
                let now = primary_position(&m.env, &cluster, shard).await;
                if let Ok(now) = now {
                    let gap = Gap {
                        after: w.end.to_string(),
                        resumed_at: now.to_string(),
                        detected_at: chrono::Utc::now().timestamp(),
                        why,
                    };
                    warn!(cluster_id = %cluster, shard, after = %gap.after, resumed_at = %gap.resumed_at,
                          "a gap in the binlog archive: the primary purged binlogs before they were archived");
                    let key = format!(
                        "{}gap-{}.json",
                        crate::archive::shard_prefix(&cluster, shard),
                        gap.detected_at
                    );
                    if w.storage
                        .put(&key, serde_json::to_vec(&gap).unwrap_or_default())
                        .await
                        .is_ok()
                    {
                        gaps_gauge.inc();
                        w.end = now.clone();
                        w.stored_end = now;
                    }
                }
            }
            Err(Failure::Other(e)) => {
                warn!(cluster_id = %cluster, shard, error = %e, "archiving the binlog");
            }
        }
        // What was read and not stored yet is stored before reading on.
        if let Err(e) = w.flush().await {
            warn!(cluster_id = %cluster, shard, error = %e, "storing the binlog archive");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

enum Failure {
    Purged(String),
    Other(String),
}

async fn primary_position(env: &Env, cluster: &str, shard: i64) -> Result<Pos, String> {
    let p = replicas::primary_of(env, cluster, shard)
        .await
        .map_err(|e| e.to_string())?;
    let (user, pw) = nodes::password(env, cluster)
        .await
        .map_err(|e| e.to_string())?;
    let mut c = nodes::connect(&p.hostaddr, p.port, &user, &pw)
        .await
        .map_err(|e| e.to_string())?;
    let pos: Option<String> = c
        .query_first("SELECT @@global.gtid_binlog_pos")
        .await
        .map_err(|e| e.to_string())?;
    let _ = c.disconnect().await;
    Pos::parse(&pos.unwrap_or_default())
}

/// Reads the primary's binlog from the archive's end, storing segments,
/// until the connection ends.
async fn follow(
    env: &Env,
    w: &mut Writer,
    lag: Duration,
    lag_gauge: &prometheus::Gauge,
) -> Result<(), Failure> {
    let other = |e: String| Failure::Other(e);
    let p = replicas::primary_of(env, &w.cluster, w.shard)
        .await
        .map_err(|e| other(e.to_string()))?;
    let (user, pw) = nodes::password(env, &w.cluster)
        .await
        .map_err(|e| other(e.to_string()))?;
    let conn = nodes::connect(&p.hostaddr, p.port, &user, &pw)
        .await
        .map_err(|e| other(e.to_string()))?;
    let name = format!("archive-{}-{}", w.cluster, w.shard);
    let mut stream = binlog_stream(conn, &w.end, &name)
        .await
        .map_err(|e| classify(&e))?;
    w.from = format!("{}:{}", p.hostaddr, p.port);
    info!(cluster_id = %w.cluster, shard = w.shard, from = %w.from, at = %w.end, "archiving the binlog");
    let mut asm = Assembler::default();
    let half = lag / 2;
    loop {
        let wait = match w.first_at {
            Some(t) => half.saturating_sub(t.elapsed()),
            None => Duration::from_secs(5),
        };
        let next = tokio::time::timeout(wait, stream.next()).await;
        if let Some(t) = w.first_at {
            lag_gauge.set(t.elapsed().as_secs_f64());
        } else {
            lag_gauge.set(0.0);
        }
        match next {
            Err(_) => {}
            Ok(None) => return Err(other("the primary closed the binlog stream".into())),
            Ok(Some(Err(e))) => return Err(classify(&e)),
            Ok(Some(Ok(event))) => {
                let kind = event.header().event_type_raw();
                let mut raw = Vec::with_capacity(event.data().len() + 32);
                event
                    .write(
                        mysql_common::binlog::consts::BinlogVersion::Version4,
                        &mut raw,
                    )
                    .map_err(|e| other(format!("re-encoding a binlog event: {e}")))?;
                match kind {
                    crate::archive::FORMAT_DESCRIPTION => w.fde = raw,
                    crate::archive::ROTATE
                    | crate::archive::HEARTBEAT
                    | crate::archive::GTID_LIST
                    | crate::archive::BINLOG_CHECKPOINT
                    | crate::archive::START_ENCRYPTION => {}
                    _ => {
                        if let Some(t) = asm.push(&raw) {
                            // Already archived (a reconnection's overlap).
                            if !w.end.has(&t.gtid) {
                                w.end.advance(&t.gtid);
                                w.buffered += t.bytes.len();
                                w.buffer.push(t);
                                w.first_at.get_or_insert_with(Instant::now);
                            }
                        }
                    }
                }
            }
        }
        let due = w.first_at.is_some_and(|t| t.elapsed() >= half);
        if due || w.buffered >= SEGMENT_BYTES {
            w.flush().await.map_err(other)?;
            lag_gauge.set(0.0);
        } else if w.buffer.is_empty() && w.last_head.elapsed() >= HEAD_EVERY {
            w.head().await.map_err(other)?;
        }
    }
}

fn classify(e: &mysql_async::Error) -> Failure {
    match crate::db::server_code(e) {
        Some(1236) if e.to_string().contains("purged") => Failure::Purged(e.to_string()),
        _ => Failure::Other(format!("the binlog stream: {e}")),
    }
}
