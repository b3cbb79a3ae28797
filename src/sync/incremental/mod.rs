//! Incremental sync: applies the source's binlog after the snapshot position
//! P to the destination, each source transaction exactly once.
//!
//! Why exactly once: the applier works in destination transactions that
//! each hold whole source transactions (one, or when behind several
//! consecutive ones) and end by writing the position after the last of them
//! into the destination's checkpoint row ([`checkpoint`]), committed with
//! them. The stream is (re)started after that row's position, whatever
//! happened before: a crash loses only uncommitted work, which the restart
//! reads again; nothing committed is read again. Destination transactions
//! (groups) run side by side on several connections but commit in stream
//! order (`crate::dest::pool`), so the row always names a prefix of the stream.
//! A huge source transaction is sent on in pieces of about `statement_bytes`
//! inside its one destination transaction, so memory stays bounded.
//!
//! Snapshot windows (database jobs): a table whose rows were copied at
//! snapshot positions [from, to] skips transactions up to `from` (its rows
//! hold them) and applies those up to `to` idempotently (some of its chunks
//! may hold them); the job is in DBTablesIncrementalSync until every window
//! is passed.
//!
//! DDL in scope is run at its place in the stream with the names rewritten
//! to the destination's; see [`checkpoint`] for how a crash around a DDL is
//! handled.

mod coordinator;
mod ddl;
mod failover;
mod feed;
mod group;
pub mod minded;
mod partial;
mod poller;
mod report;
mod xa;

use super::hold::Holds;
use super::Live;
use crate::db::{self, Endpoint};
use crate::dest::checkpoint::{self, Checkpoint};
use crate::dest::pool::{Chunk, Pool};
use crate::error::SyncError;
use crate::position::Position;
use crate::source::binlog::{self, retention, ReadError, SourceEvent};
use crate::source::topology;
use crate::sync::full::FullSyncSettings;
use crate::sync::progress::{IncrementalProgress, TableSnapshot};
use crate::sync::Route;
use coordinator::Coordinator;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How far the reader runs ahead of the applier: events, and bytes of
/// binlog they were read from.
pub(super) const READ_AHEAD: usize = 4096;
pub(super) const READ_AHEAD_BYTES: u64 = 4 << 20;
/// A destination transaction holding several source transactions commits
/// once it has this many rows (or bytes of them) or is this old, or when
/// nothing more is queued.
pub(super) const BATCH_ROWS: u64 = 30_000;
pub(super) const GROUP_BYTES: usize = 4 << 20;
pub(super) const BATCH_AGE: Duration = Duration::from_millis(200);
/// A group (in practice one source transaction) bigger than this is
/// streamed to its worker in pieces of about `statement_bytes` rather than
/// held.
pub(super) const STREAM_BYTES: usize = 8 << 20;
/// Errors that mean a DDL statement already took effect (run again after a
/// crash between it and its checkpoint): table exists, unknown table,
/// duplicate column, duplicate key name, can't drop (absent), no such table.
pub(super) const DDL_ALREADY_DONE: [u16; 7] = [1050, 1051, 1060, 1061, 1091, 1146, 1054];

/// What the job has applied, as the runner shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub commit_seq: Option<u64>,
    pub position: Option<String>,
    pub commit_timestamp: Option<i64>,
    pub detail: IncrementalProgress,
}

pub struct Incremental {
    pub spec: Arc<Route>,
    /// The full sync whose snapshot this continues.
    pub run_id: i64,
    pub snapshot: Position,
    pub tables: BTreeMap<String, TableSnapshot>,
    pub statement_bytes: usize,
    /// Destination connections applying groups side by side.
    pub apply_connections: usize,
    pub connect_timeout: Duration,
    pub metrics: Arc<dyn crate::sync::Meter>,
    pub progress: watch::Sender<Applied>,
    /// The GTID of a transaction an operator asked to skip.
    pub skip: Option<String>,
    /// The job as it is now: host mapping updates take effect at the next
    /// connection; partial syncs asked for.
    pub live: Arc<dyn Live>,
    /// How a partial sync copies its table.
    pub full_sync: FullSyncSettings,
    /// The lease epoch every group commits under (see `crate::dest::checkpoint`).
    pub epoch: i64,
    /// A verification's request to stop at a source position for a moment.
    pub holds: Arc<Holds>,
    /// The tests' failpoint (`Config::failpoint`).
    pub failpoint: Option<u64>,
    /// Tells the stream to stop: it closes its connections (the replica
    /// connection too) and `run` returns `Ok`.
    pub stop: CancellationToken,
}

pub(super) fn read_error(e: ReadError) -> SyncError {
    match e {
        ReadError::Transient(m) => SyncError::Transient(m),
        ReadError::Definite(m) | ReadError::Unavailable(m) => SyncError::Definite(m),
    }
}

pub(super) struct Window {
    pub from: Position,
    pub to: Position,
}

/// The source a job's stream reads: its spec's, or the node it followed
/// after a failover (`node`, as the cluster reports it: mapped).
pub fn stream_source(src: &Endpoint, node: Option<&str>) -> Endpoint {
    let mut ep = src.clone();
    if let Some((host, port)) = node.and_then(topology::split) {
        (ep.host, ep.port) = ep.host_mapping.translate(host, port);
    }
    ep
}

/// Whether a stream at `pos`, whose next event is `next`, has applied
/// everything up to `at` and nothing after it: its position reaches `at`,
/// or the next transaction is not in `at` (a transaction of a domain the
/// position does not name yet, say).
pub(super) fn stops_at(pos: &Position, at: &Position, next: Option<&SourceEvent>) -> bool {
    let same_file_past = pos.coord.file == at.coord.file && pos.coord.pos >= at.coord.pos;
    pos.reaches(at)
        || same_file_past
        || matches!(next, Some(SourceEvent::Begin { gtid, at: begin, .. }) if !at.holds(*gtid, begin))
}

impl Incremental {
    /// The destination to connect to now: the managed shard's primary it
    /// followed, else the spec's.
    pub fn dest(&self) -> Endpoint {
        let mut ep = self.spec.dest.clone();
        let node = self.progress.borrow().detail.dest_node.clone();
        if let Some((host, port)) = node.as_deref().and_then(topology::split) {
            (ep.host, ep.port) = (host.to_string(), port);
        }
        ep
    }

    async fn connect_dest(&self) -> Result<Conn, SyncError> {
        let dest = self.dest();
        let addr = dest.server_addr();
        // CLIENT_FOUND_ROWS: an UPDATE reports the rows it matched, which is
        // what a statement is checked against.
        let opts = OptsBuilder::from_opts(db::opts(&addr, None)).client_found_rows(true);
        let mut conn = db::connect_with(&addr, opts.into(), self.connect_timeout)
            .await
            .map_err(|e| SyncError::connect("destination", e))?;
        crate::dest::session_setup(&mut conn)
            .await
            .map_err(|e| SyncError::sql("setting up the destination session", e))?;
        // Unlike a bulk copy, applied changes are checked against unique keys.
        conn.query_drop("SET unique_checks = 1")
            .await
            .map_err(|e| SyncError::sql("setting up the destination session", e))?;
        Ok(conn)
    }

    /// A destination connection for an apply worker: like the control
    /// connection, in READ COMMITTED where the destination allows it (no
    /// gap locks between groups applied side by side).
    async fn connect_worker(&self, read_committed: bool) -> Result<Conn, SyncError> {
        let mut conn = self.connect_dest().await?;
        if read_committed {
            conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await
                .map_err(|e| SyncError::sql("setting up the destination session", e))?;
        }
        Ok(conn)
    }

    /// The source to connect to now: the node followed after a failover
    /// (through the current host mapping), else the spec's.
    pub fn source(&self) -> Endpoint {
        let node = self.progress.borrow().detail.source_node.clone();
        stream_source(&self.live.source(), node.as_deref())
    }

    /// The source's `lower_case_table_names`: how its statements' names
    /// compare.
    pub(super) async fn lower_case_table_names(&self) -> Result<u8, SyncError> {
        let mut conn = db::connect(&self.source().server_addr(), None, self.connect_timeout)
            .await
            .map_err(|e| SyncError::connect("source", e))?;
        let v: Option<u8> = conn
            .query_first("SELECT @@lower_case_table_names")
            .await
            .map_err(|e| SyncError::sql("reading the source's lower_case_table_names", e))?;
        let _ = conn.disconnect().await;
        Ok(v.unwrap_or(0))
    }

    /// Applies the binlog until an error (transient ones are retried by
    /// the caller from the checkpoint), or until told to stop (`Ok`).
    pub async fn run(&self) -> Result<(), SyncError> {
        let mut conn = self.connect_dest().await?;
        let max_packet = crate::dest::max_packet(&mut conn)
            .await
            .map_err(|e| SyncError::sql("reading the destination's max_allowed_packet", e))?;
        let flush_bytes = self
            .statement_bytes
            .min(max_packet.saturating_sub(64 << 10).max(4096));
        // A destination logging statements cannot take READ COMMITTED.
        let logging: Option<(i64, String)> = conn
            .query_first("SELECT @@log_bin, @@binlog_format")
            .await
            .map_err(|e| SyncError::sql("reading the destination's binlog settings", e))?;
        let read_committed = logging.is_none_or(|(on, format)| on == 0 || format != "STATEMENT");
        let mut workers = Vec::new();
        for _ in 0..self.apply_connections.max(1) {
            workers.push(self.connect_worker(read_committed).await?);
        }
        let mut pool = Pool::start(workers, flush_bytes);
        let mut detail = self.progress.borrow().detail.clone();
        detail.started_at = crate::sync::now_ms();
        let result =
            match Coordinator::open(self, &mut conn, &mut pool, flush_bytes, &mut detail).await {
                Ok(mut coordinator) => {
                    let result = coordinator.run().await;
                    coordinator.close().await;
                    result
                }
                Err(e) => Err(e),
            };
        pool.shutdown().await;
        let _ = conn.disconnect().await;
        // What was counted since the last report survives the restart.
        self.progress.send_modify(|a| {
            a.detail.ddl_applied = detail.ddl_applied;
            a.detail.transactions_applied = detail.transactions_applied;
            a.detail.rows_applied = detail.rows_applied;
        });
        result
    }

    /// The source cannot send the binlog from `start`: purged (the runner
    /// resyncs or stops, as the job says), or another reason (definite).
    pub(super) async fn unavailable(&self, message: String, start: &Position) -> SyncError {
        let src = &self.source();
        let mut conn = match db::connect(&src.server_addr(), None, self.connect_timeout).await {
            Ok(c) => c,
            Err(e) => return SyncError::Transient(format!("source {e}")),
        };
        match retention::read(&mut conn).await {
            Ok(r) if !r.has(&start.gtid, &start.coord) => SyncError::Purged(format!(
                "the source {} no longer has the binlog at the job's position {} \
                 (its oldest binlog is {}, which starts after it: purged) — {message}",
                src.address(),
                start,
                r.oldest()
            )),
            Ok(_) => SyncError::Definite(message),
            Err(e) => SyncError::sql("reading the source's binlog files", e),
        }
    }

    /// The end of a group: its checkpoint at `pos`.
    pub(super) fn commit_chunk(
        &self,
        pos: &Position,
        commit_ts: Option<i64>,
        pending_ddl: Option<String>,
    ) -> Chunk {
        let cp = self.checkpoint(pos, commit_ts, pending_ddl);
        Chunk::Commit {
            before: Vec::new(),
            checkpoint: checkpoint::upsert_sql(&self.spec.dest.database, &self.spec.name, &cp),
            position: pos.to_string(),
            abort: false,
        }
    }

    pub(super) fn checkpoint(
        &self,
        pos: &Position,
        commit_ts: Option<i64>,
        pending_ddl: Option<String>,
    ) -> Checkpoint {
        Checkpoint {
            run_id: self.run_id,
            position: pos.clone(),
            commit_seq: pos.commit_seq(),
            commit_ts,
            pending_ddl,
            epoch: self.epoch,
        }
    }
}

/// The lag in seconds: how old the newest applied change is, while the
/// source has newer ones; 0 when caught up.
pub fn lag_secs(
    commit_seq: Option<u64>,
    commit_timestamp: Option<i64>,
    detail: &IncrementalProgress,
    now: i64,
) -> i64 {
    let behind = match (commit_seq, detail.source_commit_seq) {
        (Some(applied), Some(head)) => head > applied,
        _ => true,
    };
    if detail.caught_up || !behind {
        return 0;
    }
    commit_timestamp.map_or(0, |ts| (now - ts).max(0))
}

pub(super) fn scope(spec: &Route) -> binlog::Scope {
    let db = spec.src.database.clone();
    let table = spec.src.table.clone();
    Box::new(move |d: &str, t: &str| {
        d == db && !t.starts_with("_ccr_syncer_") && table.as_deref().is_none_or(|only| only == t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag() {
        let mut a = Applied {
            commit_seq: Some(10),
            commit_timestamp: Some(100),
            ..Applied::default()
        };
        a.detail.source_commit_seq = Some(12);
        assert_eq!(
            lag_secs(a.commit_seq, a.commit_timestamp, &a.detail, 103),
            3
        );
        a.detail.source_commit_seq = Some(10);
        assert_eq!(
            lag_secs(a.commit_seq, a.commit_timestamp, &a.detail, 103),
            0
        );
        a.detail.source_commit_seq = Some(12);
        a.detail.caught_up = true;
        assert_eq!(
            lag_secs(a.commit_seq, a.commit_timestamp, &a.detail, 103),
            0
        );
    }
}
