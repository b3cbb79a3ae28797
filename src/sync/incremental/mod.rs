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
//! order ([`super::apply`]), so the row always names a prefix of the stream.
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

use super::full::{FullSync, HandOver};
use super::hold::{Armed, Holds};
use super::Live;
use crate::change::{Cell, RowChange, RowOp};
use crate::config::FullSyncSettings;
use crate::db::Endpoint;
use crate::db::{self, quote_ident};
use crate::dest::checkpoint::{self, Checkpoint};
use crate::dest::compact::{Change, TxnId};
use crate::dest::pool::{self as apply, elide, Chunk, Conflicts, Group, Pool};
use crate::dest::rows::{self, Mode, Statements};
use crate::dest::target::{self, DestTable};
use crate::error::SyncError;
use crate::metrics::Metrics;
use crate::position::{BinlogCoord, MariaGtid, MariaGtidPos, Position};
use crate::source::binlog::{self, retention, ReadError, Reader, SourceEvent};
use crate::source::ddl::{self, DdlKind, Rename, Statement};
use crate::source::topology;
use crate::sync::progress::{FullSyncProgress, IncrementalProgress, PartialSync, TableSnapshot};
use crate::sync::Route;
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// How far the reader runs ahead of the applier: events, and bytes of
/// binlog they were read from.
const READ_AHEAD: usize = 4096;
const READ_AHEAD_BYTES: u64 = 4 << 20;
/// A destination transaction holding several source transactions commits
/// once it has this many rows (or bytes of them) or is this old, or when
/// nothing more is queued.
const BATCH_ROWS: u64 = 30_000;
const GROUP_BYTES: usize = 4 << 20;
const BATCH_AGE: Duration = Duration::from_millis(200);
/// A group (in practice one source transaction) bigger than this is
/// streamed to its worker in pieces of about `statement_bytes` rather than
/// held.
const STREAM_BYTES: usize = 8 << 20;
/// How often the source's newest position is polled for `get_lag`.
const HEAD_POLL: Duration = Duration::from_secs(2);
/// Every how many polls the source's topology is read again.
const TOPOLOGY_EVERY: u64 = 15;
/// Errors that mean a DDL statement already took effect (run again after a
/// crash between it and its checkpoint): table exists, unknown table,
/// duplicate column, duplicate key name, can't drop (absent), no such table.
const DDL_ALREADY_DONE: [u16; 7] = [1050, 1051, 1060, 1061, 1091, 1146, 1054];

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
    pub metrics: Arc<Metrics>,
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
}

/// A table being copied again while the stream goes on for the others.
struct Partial {
    request: PartialSync,
    dest_table: String,
    /// The copy's snapshot: the table's events up to here are in it; the
    /// stream does not go past it before the copy is in.
    at: Position,
    task: tokio::task::JoinHandle<Result<HandOver, SyncError>>,
}

fn read_error(e: ReadError) -> SyncError {
    match e {
        ReadError::Transient(m) => SyncError::Transient(m),
        ReadError::Definite(m) | ReadError::Unavailable(m) => SyncError::Definite(m),
    }
}

struct Window {
    from: Position,
    to: Position,
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
fn stops_at(pos: &Position, at: &Position, next: Option<&SourceEvent>) -> bool {
    let same_file_past = pos.coord.file == at.coord.file && pos.coord.pos >= at.coord.pos;
    pos.reaches(at)
        || same_file_past
        || matches!(next, Some(SourceEvent::Begin { gtid, at: begin, .. }) if !at.holds(*gtid, begin))
}

/// The source transaction being read.
struct Txn {
    gtid: Option<MariaGtid>,
    at: BinlogCoord,
    /// How errors and a held job name it; shared by its changes.
    id: Arc<TxnId>,
    /// An operator asked to skip it: its events are dropped, its position
    /// is checkpointed past.
    skip: bool,
    /// It is a prepared XA transaction's prepared part (its XID): its rows
    /// are applied when it commits, read again then; and whether it has
    /// rows in the job's scope.
    xa: Option<String>,
    xa_rows: bool,
}

impl Txn {
    /// The transaction starting at `at` after position `pos`.
    fn new(gtid: Option<MariaGtid>, at: BinlogCoord, pos: &Position, skip: Option<&str>) -> Txn {
        let (label, commit_seq) = match gtid {
            Some(g) => {
                let mut after = pos.gtid.clone();
                after.advance(g);
                let seq = after.commit_seq();
                (
                    format!("source transaction {g} (commit seq {seq})"),
                    Some(seq),
                )
            }
            None => (format!("source transaction at {at}"), None),
        };
        let gtid_text = gtid.map(|g| g.to_string());
        let skip = gtid_text.is_some() && gtid_text.as_deref() == skip;
        Txn {
            gtid,
            id: Arc::new(TxnId {
                label,
                gtid: gtid_text,
                commit_seq,
                at: at.to_string(),
            }),
            at,
            skip,
            xa: None,
            xa_rows: false,
        }
    }

    fn name(&self) -> &str {
        &self.id.label
    }
}

/// The group (destination transaction) being built.
#[derive(Default)]
struct Building {
    changes: Vec<Change>,
    /// Row hashes of the changes, for conflicts with other groups.
    hashes: Vec<u64>,
    /// About how much memory the changes take.
    bytes: usize,
    txns: u64,
    rows: u64,
    rows_by_op: HashMap<RowOp, u64>,
    started: Option<Instant>,
    /// GTIDs of source transactions skipped on request.
    skipped: Vec<String>,
    /// A group too big to hold: dispatched as a barrier, its rows follow
    /// in chunks (bounded memory), applied change by change.
    stream: Option<(u64, mpsc::Sender<Chunk>)>,
    /// Bookkeeping committed with the group (prepared XA transactions).
    before: Vec<String>,
}

/// A dispatched group, until it commits.
struct InFlight {
    id: u64,
    pos: Position,
    commit_ts: Option<i64>,
    txns: u64,
    rows: u64,
    rows_by_op: HashMap<RowOp, u64>,
    started: Instant,
    skipped: Vec<String>,
}

impl Building {
    /// Sends the rows held so far ahead of the group's end, dispatching it
    /// as a barrier first.
    async fn stream_out(
        &mut self,
        pool: &mut Pool,
        conflicts: &mut Conflicts,
    ) -> Result<(), SyncError> {
        if self.stream.is_none() {
            let id = conflicts.issue();
            let (tx, rx) = mpsc::channel(2);
            let after = conflicts.barrier(id);
            pool.dispatch(Group {
                id,
                after,
                whole: false,
                busy: None,
                chunks: rx,
            })
            .await?;
            self.stream = Some((id, tx));
        }
        let rows = Chunk::Rows(std::mem::take(&mut self.changes));
        self.bytes = 0;
        self.hashes.clear();
        let (_, tx) = self.stream.as_ref().expect("set above");
        pool.send(tx, rows).await
    }

    /// Hands the group, ending with `commit` (the checkpoint at `pos`), to
    /// the pool; a new one starts.
    async fn finish(
        &mut self,
        pool: &mut Pool,
        conflicts: &mut Conflicts,
        mut commit: Chunk,
        fail_at: Option<u64>,
        pos: &Position,
        commit_ts: Option<i64>,
    ) -> Result<InFlight, SyncError> {
        let b = std::mem::take(self);
        let id = match &b.stream {
            Some((id, _)) => *id,
            None => conflicts.issue(),
        };
        if let Chunk::Commit { abort, before, .. } = &mut commit {
            *abort = fail_at == Some(id);
            *before = b.before;
        }
        match b.stream {
            Some((_, tx)) => {
                if !b.changes.is_empty() {
                    pool.send(&tx, Chunk::Rows(b.changes)).await?;
                }
                pool.send(&tx, commit).await?;
            }
            None => {
                let (tx, rx) = mpsc::channel(2);
                let whole = !b.changes.is_empty();
                if whole {
                    let _ = tx.try_send(Chunk::Rows(b.changes));
                }
                let _ = tx.try_send(commit);
                let (after, busy) = conflicts.claim(id, &b.hashes, pool.committed());
                pool.dispatch(Group {
                    id,
                    after,
                    whole,
                    busy,
                    chunks: rx,
                })
                .await?;
            }
        }
        Ok(InFlight {
            id,
            pos: pos.clone(),
            commit_ts,
            txns: b.txns,
            rows: b.rows,
            rows_by_op: b.rows_by_op,
            started: b.started.unwrap_or_else(Instant::now),
            skipped: b.skipped,
        })
    }
}

/// About how much memory a row event's images take.
fn change_bytes(change: &RowChange) -> usize {
    change
        .rows
        .iter()
        .flat_map(|(b, a)| [b, a])
        .flatten()
        .flat_map(|image| image.iter().flatten())
        .map(|c| match c {
            Cell::Bytes(b) => b.len() + 32,
            Cell::Decimal(d) => d.len() + 32,
            _ => 32,
        })
        .sum::<usize>()
        + 64
}

/// Newest position read from the source, shared by the reader task.
#[derive(Default)]
struct ReadHead {
    gtid: Option<MariaGtid>,
    timestamp: Option<i64>,
}

impl Incremental {
    async fn connect_dest(&self) -> Result<Conn, SyncError> {
        let addr = self.spec.dest.server_addr();
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

    /// Applies the binlog until an error; transient ones are retried by the
    /// caller from the checkpoint.
    /// The source to connect to now: the node followed after a failover
    /// (through the current host mapping), else the spec's.
    pub fn source(&self) -> Endpoint {
        let node = self.progress.borrow().detail.source_node.clone();
        stream_source(&self.live.source(), node.as_deref())
    }

    /// The source's `lower_case_table_names`: how its statements' names
    /// compare.
    async fn lower_case_table_names(&self) -> Result<u8, SyncError> {
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

    /// After the source became unreachable: looks for the node that took
    /// over among those the source reported (its primary, its replicas),
    /// each reached through the host mapping, and follows the first that is
    /// a writable primary holding every transaction the job has applied
    /// (the destination's checkpoint). Returns what it now follows.
    pub async fn follow_primary(&self) -> Option<String> {
        let name = self.spec.name.as_str();
        let current = self.source();
        if db::connect(&current.server_addr(), None, self.connect_timeout)
            .await
            .is_ok()
        {
            return None;
        }
        let mut dest = self.connect_dest().await.ok()?;
        let cp = checkpoint::load(&mut dest, &self.spec.dest.database, name)
            .await
            .ok()
            .flatten()
            .filter(|c| c.run_id == self.run_id)?;
        let applied = Some(cp.position.gtid).filter(|p| !p.is_empty())?;
        let (topo, following) = {
            let p = self.progress.borrow();
            (p.detail.topology.clone(), p.detail.source_node.clone())
        };
        let src = self.live.source();
        for node in topo.candidates() {
            if following.as_ref() == Some(node) {
                continue;
            }
            let Some((host, port)) = topology::split(node) else {
                continue;
            };
            let (host, port) = src.host_mapping.translate(host, port);
            let addr = crate::db::ServerAddr {
                host: &host,
                port,
                user: &src.user,
                password: &src.password,
                tls: &src.tls,
            };
            let mut conn = match db::connect(&addr, None, self.connect_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(job = %name, candidate = %node, reached_at = %format!("{host}:{port}"),
                          error = %e, "failover candidate unreachable");
                    continue;
                }
            };
            match topology::can_take_over(&mut conn, &applied).await {
                Ok(()) => {
                    info!(job = %name, node = %node, reached_at = %format!("{host}:{port}"),
                          position = %applied, "the source is gone; following the new primary");
                    self.progress
                        .send_modify(|a| a.detail.source_node = Some(node.clone()));
                    return Some(format!("{node} (reached at {host}:{port})"));
                }
                Err(why) => {
                    warn!(job = %name, candidate = %node, reason = %why, "not following this node")
                }
            }
        }
        None
    }

    pub async fn run(&self) -> Result<Infallible, SyncError> {
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
        let result = self
            .stream(&mut conn, &mut pool, flush_bytes, &mut detail)
            .await;
        pool.shutdown().await;
        // What was counted since the last report survives the restart.
        self.progress.send_modify(|a| {
            a.detail.ddl_applied = detail.ddl_applied;
            a.detail.transactions_applied = detail.transactions_applied;
            a.detail.rows_applied = detail.rows_applied;
        });
        result
    }

    async fn stream(
        &self,
        conn: &mut Conn,
        pool: &mut Pool,
        flush_bytes: usize,
        detail: &mut IncrementalProgress,
    ) -> Result<Infallible, SyncError> {
        let spec = self.spec.clone();
        let name = spec.name.as_str();
        let dest_db = spec.dest.database.as_str();
        checkpoint::ensure_table(conn, dest_db)
            .await
            .map_err(|e| SyncError::sql("creating the checkpoint table", e))?;
        // From here a member with an older lease of the job cannot commit;
        // what it committed before is in the checkpoint read next.
        checkpoint::claim(conn, dest_db, name, self.epoch)
            .await
            .map_err(|e| SyncError::sql("claiming the job's destination", e))?;
        let stored = checkpoint::load(conn, dest_db, name)
            .await
            .map_err(|e| SyncError::sql("reading the checkpoint", e))?
            .filter(|c| c.run_id == self.run_id);
        // Prepared XA transactions passed and not yet ended.
        checkpoint::ensure_xa_table(conn, dest_db)
            .await
            .map_err(|e| SyncError::sql("creating the XA table", e))?;
        let mut prepared = checkpoint::load_xa(conn, dest_db, name, self.run_id)
            .await
            .map_err(|e| SyncError::sql("reading the prepared XA transactions", e))?;
        let snapshot = self.snapshot.clone();
        let (mut pos, mut commit_ts, tolerate_ddl) = match &stored {
            Some(cp) => (cp.position.clone(), cp.commit_ts, cp.pending_ddl.clone()),
            None => (snapshot.clone(), None, None),
        };
        let mut windows: HashMap<String, Window> = HashMap::new();
        for (table, w) in &self.tables {
            let w = Window {
                from: w.from.clone(),
                to: w.to.clone(),
            };
            if !pos.reaches(&w.to) {
                windows.insert(table.clone(), w);
            }
        }
        info!(job = %name, position = %pos.to_string(), resumed = stored.is_some(),
              tables_in_snapshot = windows.len(), apply_connections = self.apply_connections,
              "incremental sync starting");

        // The reader runs ahead in its own task.
        let feed = Arc::new(Feed::default());
        let bytes_read = Arc::new(AtomicU64::new(0));
        let read_head = Arc::new(Mutex::new(ReadHead::default()));
        let start = pos.clone();
        let src = self.source();
        let reader = AbortOnDrop(tokio::spawn(read_loop(
            src.clone(),
            spec.name.clone(),
            start,
            scope(&spec),
            self.connect_timeout,
            FeedWriter(feed.clone()),
            bytes_read.clone(),
            read_head.clone(),
        )));
        let source_head = Arc::new(Mutex::new(None::<MariaGtidPos>));
        let applied_coord = Arc::new(Mutex::new((pos.coord.clone(), commit_ts)));
        let misconfigured = Arc::new(Mutex::new(None::<String>));
        let topology_now = Arc::new(Mutex::new(None::<topology::Topology>));
        let poller = AbortOnDrop(tokio::spawn(poll_head(
            src.clone(),
            self.connect_timeout,
            source_head.clone(),
            applied_coord.clone(),
            misconfigured.clone(),
            topology_now.clone(),
            (
                self.metrics.clone(),
                spec.name.clone(),
                self.progress.clone(),
            ),
        )));
        let start_point = pos.clone();

        let rename = Rename {
            src_db: &spec.src.database,
            dest_db,
            table: spec.src.table.as_deref().zip(spec.dest.table.as_deref()),
            lower_case_table_names: self.lower_case_table_names().await?,
        };
        let mut schemas: HashMap<String, Arc<DestTable>> = HashMap::new();
        let mut group = Building::default();
        let mut conflicts = Conflicts::default();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut queued: VecDeque<SourceEvent> = VecDeque::new();
        let mut applied = (pos.clone(), commit_ts);
        let mut txn: Option<Txn> = None;
        let mut force_commit = false;
        let mut pending_ddl: Option<String> = None;
        let mut caught_up = false;
        let fail_at = self.failpoint;
        // Closes the group being built (whole transactions only) with the
        // checkpoint at `pos` and hands it to the pool.
        macro_rules! close_group {
            ($pending_ddl:expr) => {{
                let commit = self.commit_chunk(&pos, commit_ts, $pending_ddl);
                let done = group
                    .finish(pool, &mut conflicts, commit, fail_at, &pos, commit_ts)
                    .await?;
                in_flight.push_back(done);
            }};
        }
        let mut last_report = Instant::now() - Duration::from_secs(1);
        let _guards = (reader, poller);
        // Partial sync: the copy running, the table whose events are
        // dropped meanwhile, one the stream asked for by itself, and the
        // last request finished.
        let mut partial: Option<Partial> = None;
        let mut dropping: Option<String> = None;
        let mut wanted: Option<PartialSync> = None;
        let mut done_request = detail.partial_done.as_ref().map(|(p, _)| p.requested_at);
        // A verification's hold the stream is going on to.
        let mut hold: Option<Armed> = None;

        loop {
            if queued.is_empty() {
                // A hold the stream has reached waits for no more events.
                let hold_due = txn.is_none()
                    && partial.is_none()
                    && dropping.is_none()
                    && hold.as_ref().is_some_and(|h| stops_at(&pos, &h.at, None));
                tokio::select! {
                    e = feed.take() => match e {
                        Ok(events) => {
                            // Streaming again after a transient error.
                            detail.retrying = false;
                            queued.extend(events);
                        }
                        Err(ReadError::Unavailable(m)) => {
                            return Err(self.unavailable(m, &start_point).await);
                        }
                        Err(e) => return Err(read_error(e)),
                    },
                    r = pool.changed() => r?,
                    _ = self.holds.posted() => {}
                    _ = std::future::ready(()), if hold_due => {}
                }
            }
            // A verification's hold: between transactions, once everything
            // up to its position is applied and nothing after it (not
            // while a table is being copied again).
            if txn.is_none() && partial.is_none() && dropping.is_none() {
                if let Some(request) = self.holds.take() {
                    // Frozen here while the source snapshot opens.
                    hold = request.frozen().await;
                }
                if hold.as_ref().is_some_and(|h| !h.wanted()) {
                    hold = None;
                }
                if hold
                    .as_ref()
                    .is_some_and(|h| stops_at(&pos, &h.at, queued.front()))
                {
                    let h = hold.take().expect("checked");
                    close_group!(pending_ddl.take());
                    force_commit = false;
                    pool.wait(conflicts.issued()).await?;
                    debug!(job = %name, position = %pos.to_string(), "holding for a verification");
                    let released = h.grant(pos.clone());
                    let _ = released.await;
                }
            }
            if let Some(event) = queued.pop_front() {
                match event {
                    SourceEvent::Begin { gtid, at, .. } => {
                        // Nothing after the copy's snapshot before the copy.
                        if partial.as_ref().is_some_and(|p| !p.at.holds(gtid, &at)) {
                            if group.txns > 0 {
                                close_group!(pending_ddl.take());
                            }
                            let p = partial.take().expect("checked");
                            done_request = Some(p.request.requested_at);
                            self.partial_in(p, &mut windows, &mut schemas, detail)
                                .await?;
                            dropping = None;
                        }
                        caught_up = false;
                        txn = Some(Txn::new(gtid, at, &pos, self.skip.as_deref()));
                    }
                    SourceEvent::Annotate(_) => {}
                    SourceEvent::XaPrepare { xid } => {
                        if let Some(t) = txn.as_mut() {
                            t.xa = Some(xid);
                        }
                    }
                    SourceEvent::XaEnd { xid, commit } => {
                        let Some(t) = txn.as_ref().filter(|t| !t.skip) else {
                            continue;
                        };
                        match prepared.remove(&xid) {
                            Some(p) => {
                                group
                                    .before
                                    .push(checkpoint::xa_forget_sql(dest_db, name, &xid));
                                let reading = self.source().address();
                                if commit && p.rows && p.source != reading {
                                    return Err(apply::refused(
                                        &t.id,
                                        None,
                                        format!("XA COMMIT of {xid}, prepared on another node"),
                                        format!(
                                            "{}: commits XA transaction {xid}, prepared on {} \
                                             before the job followed a failover to {reading}: its \
                                             rows are at a position of the old node's binlog; resync \
                                             the job (force_fullsync)",
                                            t.name(),
                                            p.source
                                        ),
                                    ));
                                }
                                let at = p.at;
                                if commit && p.rows {
                                    // Its rows, read again, are this
                                    // transaction's.
                                    let changes = Reader::rows_at(
                                        &self.source().server_addr(),
                                        &at,
                                        binlog::server_id(&format!("{name}#xa")),
                                        scope(&spec),
                                        self.connect_timeout,
                                    )
                                    .await
                                    .map_err(read_error)?;
                                    info!(job = %name, xid = %xid, rows = changes.len(),
                                          "prepared XA transaction committed: applying its rows");
                                    for c in changes.into_iter().rev() {
                                        queued.push_front(SourceEvent::Rows(c));
                                    }
                                }
                            }
                            None if commit => {
                                // Prepared before the job's position: its
                                // rows were in no snapshot; found in the
                                // binlog, they are applied with the commit.
                                let found = Reader::find_prepared(
                                    &self.source().server_addr(),
                                    &xid,
                                    &t.at,
                                    binlog::server_id(&format!("{name}#xa")),
                                    scope(&spec),
                                    self.connect_timeout,
                                )
                                .await
                                .map_err(read_error)?;
                                if let Some(changes) = found {
                                    info!(job = %name, xid = %xid, rows = changes.len(),
                                          "XA transaction prepared before the job's position committed: applying its rows");
                                    for c in changes.into_iter().rev() {
                                        queued.push_front(SourceEvent::Rows(c));
                                    }
                                    continue;
                                }
                                return Err(apply::refused(
                                    &t.id,
                                    None,
                                    format!("XA COMMIT of {xid}, prepared before the job's position"),
                                    format!(
                                        "{}: commits XA transaction {xid}, which was prepared before \
                                         the job's position in a binlog the source no longer has, so \
                                         its changes (if it changed the job's tables) are not on the \
                                         destination: resync the job (force_fullsync), or skip this \
                                         transaction (job_skip_binlog) if it changed nothing of the job's",
                                        t.name()
                                    ),
                                ));
                            }
                            None => {}
                        }
                    }
                    SourceEvent::Rows(change) => {
                        let Some(t) = txn.as_mut() else {
                            return Err(SyncError::Definite(
                                "the binlog has a row event outside a transaction".into(),
                            ));
                        };
                        if t.skip {
                            continue;
                        }
                        // A prepared part: applied when it commits.
                        if t.xa.is_some() {
                            t.xa_rows = true;
                            continue;
                        }
                        let dest_table = match (&spec.src.table, &spec.dest.table) {
                            (Some(_), Some(d)) => d.clone(),
                            _ => change.table.table.clone(),
                        };
                        if dropping.as_deref() == Some(dest_table.as_str()) {
                            continue;
                        }
                        let mode = match windows.get(&dest_table) {
                            Some(w) if w.from.holds(t.gtid, &t.at) => continue,
                            Some(w) if w.to.holds(t.gtid, &t.at) => Mode::Idempotent,
                            _ => Mode::Exact,
                        };
                        let dest = match schemas.get(&dest_table) {
                            Some(d) => d.clone(),
                            None => {
                                let loaded = target::load(conn, dest_db, &dest_table)
                                    .await
                                    .map_err(|e| SyncError::sql("reading a destination table's columns", e))?
                                    .ok_or_else(|| {
                                        SyncError::Definite(format!(
                                            "{}: destination table {dest_db}.{dest_table} does not exist; \
                                             it was dropped or renamed outside the job — resync the job",
                                            t.name()
                                        ))
                                    })?;
                                let loaded = Arc::new(loaded);
                                schemas.insert(dest_table.clone(), loaded.clone());
                                loaded
                            }
                        };
                        let columns = match rows::mapping(&change.table, &dest) {
                            Ok(c) => c,
                            // A database job copies that table again (the
                            // rest goes on); its events are dropped until
                            // the copy, which holds them, is in.
                            Err(e) if spec.src.table.is_none() && partial.is_none() => {
                                let reason = format!(
                                    "{} on {dest_db}.{dest_table} does not fit the table: {e}",
                                    t.name()
                                );
                                warn!(job = %name, table = %dest_table, %reason,
                                      "the table's stream cannot continue: copying it again (partial sync)");
                                wanted = Some(PartialSync {
                                    table: change.table.table.clone(),
                                    reason,
                                    requested_at: crate::sync::now_ms(),
                                });
                                dropping = Some(dest_table);
                                continue;
                            }
                            Err(e) => {
                                return Err(SyncError::Definite(format!(
                                    "{} on {dest_db}.{dest_table}: {e}",
                                    t.name()
                                )))
                            }
                        };
                        for (before, after) in &change.rows {
                            for image in [before, after].into_iter().flatten() {
                                apply::row_hashes(&dest, &columns, image, &mut group.hashes);
                            }
                        }
                        let n = change.rows.len() as u64;
                        group.rows += n;
                        group.bytes += change_bytes(&change);
                        *group.rows_by_op.entry(change.op).or_default() += n;
                        group.started.get_or_insert_with(Instant::now);
                        // A change whose foreign keys change other rows on
                        // the destination is applied in a barrier group,
                        // change by change: no group in flight beside it.
                        let cascades = dest.cascades(change.op);
                        group.changes.push(Change {
                            dest,
                            columns: Arc::new(columns),
                            mode,
                            change,
                            txn: t.id.clone(),
                        });
                        let limit = if group.stream.is_some() {
                            flush_bytes
                        } else {
                            STREAM_BYTES.max(flush_bytes)
                        };
                        if group.bytes >= limit || cascades && group.stream.is_none() {
                            group.stream_out(pool, &mut conflicts).await?;
                        }
                    }
                    SourceEvent::Query {
                        schema,
                        sql,
                        statement,
                        session,
                    } => {
                        let Some(t) = txn.as_ref().filter(|t| !t.skip) else {
                            continue;
                        };
                        // DDL of a table being copied again: the copy has it.
                        if let (Some(d), Statement::Ddl { names, .. }) = (&dropping, &statement) {
                            if names
                                .iter()
                                .any(|n| rename.map(&schema, n).as_ref() == Some(d))
                            {
                                continue;
                            }
                        }
                        let Some(dest_sql) = self.ddl_for_destination(
                            &rename,
                            &schema,
                            &sql,
                            &statement,
                            session.dialect(),
                            t,
                        )?
                        else {
                            continue;
                        };
                        // Everything before the DDL commits first, then the
                        // DDL is marked, run, and (at its Commit)
                        // checkpointed past.
                        if group.txns > 0 || !group.changes.is_empty() {
                            close_group!(None);
                        }
                        pool.wait(conflicts.issued()).await?;
                        let marker = t.gtid.map_or_else(|| t.at.to_string(), |g| g.to_string());
                        let mut mark = Statements::default();
                        mark.push(
                            &checkpoint::upsert_sql(
                                dest_db,
                                name,
                                &self.checkpoint(&pos, commit_ts, Some(marker.clone())),
                            ),
                            None,
                        );
                        apply::run(conn, &mark).await.map_err(|f| {
                            f.into_error(&mark, "marking a DDL statement in the checkpoint")
                        })?;
                        // As the source's session read it: its sql_mode.
                        let mode = session
                            .set_sql()
                            .map(|s| format!("{s}; "))
                            .unwrap_or_default();
                        // An ALTER of a versioned table ran on the source,
                        // so its session kept the history (KEEP).
                        let run = format!(
                            "SET NAMES utf8mb4, system_versioning_alter_history = KEEP; \
                             {mode}USE {}; {dest_sql}",
                            quote_ident(dest_db)
                        );
                        let result = conn.query_drop(&run).await;
                        let reset = conn
                            .query_drop(format!(
                                "{}, timestamp = DEFAULT",
                                crate::dest::SESSION_SETUP
                            ))
                            .await;
                        match result {
                            Ok(()) => {}
                            Err(e)
                                if tolerate_ddl.as_deref() == Some(marker.as_str())
                                    && db::server_code(&e)
                                        .is_some_and(|c| DDL_ALREADY_DONE.contains(&c)) =>
                            {
                                info!(job = %name, ddl = %dest_sql, error = %e,
                                      "DDL already applied before a restart; carrying on");
                            }
                            Err(e) => {
                                let statement = elide(&dest_sql);
                                let error = e.to_string();
                                return Err(
                                    match SyncError::sql(
                                        format!("{}: applying DDL `{statement}`", t.name()),
                                        e,
                                    ) {
                                        SyncError::Definite(message) => {
                                            apply::refused(&t.id, Some(statement), error, message)
                                        }
                                        other => other,
                                    },
                                );
                            }
                        }
                        reset
                            .map_err(|e| SyncError::sql("restoring the destination session", e))?;
                        info!(job = %name, ddl = %dest_sql, "DDL applied");
                        if let Statement::Ddl {
                            kind: DdlKind::DropTable,
                            names,
                            ..
                        } = &statement
                        {
                            for n in names {
                                if let Some(d) = rename.map(&schema, n) {
                                    windows.remove(&d);
                                }
                            }
                        }
                        schemas.clear();
                        detail.ddl_applied += 1;
                        self.metrics.count_ddl(name);
                        pending_ddl = Some(marker);
                        force_commit = true;
                    }
                    SourceEvent::Commit { end, timestamp } => {
                        let Some(mut t) = txn.take() else { continue };
                        if let Some(g) = t.gtid {
                            pos.gtid.advance(g);
                        }
                        if let Some(xid) = t.xa.take().filter(|_| !t.skip) {
                            let p = checkpoint::Prepared {
                                source: self.source().address(),
                                at: t.at.clone(),
                                rows: t.xa_rows,
                            };
                            group.before.push(checkpoint::xa_record_sql(
                                dest_db,
                                name,
                                self.run_id,
                                &xid,
                                &p,
                            ));
                            prepared.insert(xid, p);
                        }
                        if t.skip {
                            warn!(job = %name, transaction = %t.name(),
                                  "skipping the source transaction as asked (job_skip_binlog)");
                            group.skipped.extend(t.id.gtid.clone());
                        }
                        pos.coord = end;
                        commit_ts = Some(i64::from(timestamp));
                        group.txns += 1;
                        windows.retain(|_, w| !pos.reaches(&w.to));
                        let due = force_commit
                            || queued.is_empty() && feed.is_empty()
                            || group.rows >= BATCH_ROWS
                            || group.bytes >= GROUP_BYTES
                            || group.started.is_some_and(|s| s.elapsed() >= BATCH_AGE);
                        if due {
                            close_group!(pending_ddl.take());
                            force_commit = false;
                        }
                    }
                    SourceEvent::Idle { .. } => {
                        if txn.is_none() && group.txns == 0 && queued.is_empty() && feed.is_empty()
                        {
                            caught_up = true;
                        }
                    }
                }
            }
            // What has committed since.
            let committed = pool.committed();
            let mut absorbed = false;
            while in_flight.front().is_some_and(|f| f.id <= committed) {
                let f = in_flight.pop_front().expect("checked");
                let applied_txns = f.txns - f.skipped.len() as u64;
                detail.transactions_applied += applied_txns;
                detail.rows_applied += f.rows;
                if let Some(last) = f.skipped.last() {
                    detail.transactions_skipped += f.skipped.len() as u64;
                    detail.last_skipped = Some(last.clone());
                }
                self.metrics
                    .count_applied(name, applied_txns, &f.rows_by_op);
                self.metrics
                    .observe_batch(name, f.started.elapsed().as_secs_f64());
                applied = (f.pos, f.commit_ts);
                absorbed = true;
            }
            if let Some(problem) = misconfigured.lock().take() {
                return Err(SyncError::Definite(problem));
            }
            if let Some(t) = topology_now.lock().take() {
                detail.topology = t;
            }
            // A copy that is in before the stream reaches its snapshot.
            if partial.as_ref().is_some_and(|p| p.task.is_finished()) {
                let p = partial.take().expect("checked");
                done_request = Some(p.request.requested_at);
                self.partial_in(p, &mut windows, &mut schemas, detail)
                    .await?;
                dropping = None;
            }
            // A partial sync starts between transactions.
            if txn.is_none() && partial.is_none() {
                let asked = self
                    .live
                    .partial()
                    .filter(|p| Some(p.requested_at) != done_request);
                let by_itself = wanted.is_some();
                if let Some(request) = wanted.take().or(asked) {
                    // What the stream applied of the table so far commits
                    // before the copy replaces it.
                    if group.txns > 0 {
                        close_group!(pending_ddl.take());
                    }
                    pool.wait(conflicts.issued()).await?;
                    let p = self.start_partial(request.clone()).await?;
                    info!(job = %name, table = %p.dest_table, snapshot = %p.at.to_string(),
                          reason = %request.reason, "partial sync: copying the table again");
                    if by_itself {
                        detail.partial_started = Some(request);
                    }
                    dropping = Some(p.dest_table.clone());
                    partial = Some(p);
                }
            }
            let idle = caught_up && in_flight.is_empty();
            if last_report.elapsed() >= Duration::from_millis(250) || idle && absorbed || caught_up
            {
                last_report = Instant::now();
                let (pos, commit_ts) = &applied;
                let bytes = bytes_read.load(Ordering::Relaxed);
                self.metrics
                    .count_binlog_bytes(name, bytes.saturating_sub(detail.binlog_bytes_read));
                detail.binlog_bytes_read = bytes;
                detail.binlog_file = pos.coord.file.clone();
                *applied_coord.lock() = (pos.coord.clone(), *commit_ts);
                detail.binlog_pos = pos.coord.pos;
                detail.tables_in_snapshot = windows.len() as u64;
                detail.caught_up = idle && group.txns == 0;
                let head = read_head.lock();
                let polled = source_head.lock().clone();
                let head_seq = polled.as_ref().map(|p| p.commit_seq());
                let read_seq = head.gtid.map(|g| g.seq).or(pos.commit_seq());
                detail.source_commit_seq = head_seq.max(read_seq).max(pos.commit_seq());
                detail.source_position = polled.map(|p| p.to_string());
                detail.source_commit_timestamp = head.timestamp;
                drop(head);
                let advanced = self.progress.borrow().commit_seq != pos.commit_seq();
                // Caught up counts as keeping up: an idle hour is no stall.
                if advanced || detail.caught_up || detail.last_advance_at == 0 {
                    detail.last_advance_at = chrono::Utc::now().timestamp_millis();
                }
                let now = Applied {
                    commit_seq: pos.commit_seq(),
                    position: Some(pos.to_string()),
                    commit_timestamp: *commit_ts,
                    detail: detail.clone(),
                };
                self.metrics.set_lag(
                    name,
                    lag_secs(
                        now.commit_seq,
                        now.commit_timestamp,
                        &now.detail,
                        chrono::Utc::now().timestamp(),
                    ),
                );
                self.progress.send_replace(now);
            }
        }
    }

    /// The source cannot send the binlog from `start`: purged (the runner
    /// resyncs or stops, as the job says), or another reason (definite).
    async fn unavailable(&self, message: String, start: &Position) -> SyncError {
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
                start.to_string(),
                r.oldest()
            )),
            Ok(_) => SyncError::Definite(message),
            Err(e) => SyncError::sql("reading the source's binlog files", e),
        }
    }

    /// Starts copying `request`'s table again (a table job's one table, as
    /// in its spec) and returns once the copy's snapshot is open.
    async fn start_partial(&self, request: PartialSync) -> Result<Partial, SyncError> {
        let mut spec = (*self.spec).clone();
        spec.src = self.source();
        let dest_table = spec
            .dest
            .table
            .clone()
            .unwrap_or_else(|| request.table.clone());
        spec.src.table = Some(request.table.clone());
        spec.dest.table = Some(dest_table.clone());
        let (progress, mut copy) = watch::channel(FullSyncProgress::default());
        let sync = FullSync {
            spec: Arc::new(spec),
            run_id: crate::sync::now_ms(),
            rerun: true,
            settings: self.full_sync,
            connect_timeout: self.connect_timeout,
            metrics: self.metrics.clone(),
            progress,
            epoch: self.epoch,
        };
        let mut task = tokio::spawn(async move { sync.run().await });
        let at = loop {
            tokio::select! {
                changed = copy.changed() => {
                    if let Some(s) = copy.borrow_and_update().snapshot.clone() {
                        break s.clone();
                    }
                    if changed.is_err() {
                        // The copy ended before its snapshot: its error.
                        return Err(match (&mut task).await {
                            Ok(Err(e)) => e,
                            _ => SyncError::Transient("the partial sync's copy stopped".into()),
                        });
                    }
                }
                ended = &mut task => {
                    return Err(match ended {
                        Ok(Err(e)) => e,
                        _ => SyncError::Transient("the partial sync's copy stopped".into()),
                    });
                }
            }
        };
        Ok(Partial {
            request,
            dest_table,
            at,
            task,
        })
    }

    /// Waits for a partial sync's copy; then the stream skips the table's
    /// events its snapshot holds and applies the rest.
    async fn partial_in(
        &self,
        p: Partial,
        windows: &mut HashMap<String, Window>,
        schemas: &mut HashMap<String, Arc<DestTable>>,
        detail: &mut IncrementalProgress,
    ) -> Result<(), SyncError> {
        let handed = match p.task.await {
            Ok(r) => r?,
            Err(e) => {
                return Err(SyncError::Transient(format!(
                    "the partial sync's copy: {e}"
                )))
            }
        };
        info!(job = %self.spec.name, table = %p.dest_table, snapshot = %p.at.to_string(),
              "partial sync: the copy is in; the table's stream goes on after its snapshot");
        windows.insert(
            p.dest_table.clone(),
            Window {
                from: p.at.clone(),
                to: p.at.clone(),
            },
        );
        schemas.remove(&p.dest_table);
        detail.partial_done = Some((p.request, handed.position));
        Ok(())
    }

    /// The end of a group: its checkpoint at `pos`.
    fn commit_chunk(
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

    fn checkpoint(
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

    /// The DDL to run on the destination for a statement, or `None` when it
    /// is out of scope or not DDL.
    fn ddl_for_destination(
        &self,
        rename: &Rename<'_>,
        schema: &str,
        sql: &str,
        statement: &Statement,
        dialect: ddl::Dialect,
        t: &Txn,
    ) -> Result<Option<String>, SyncError> {
        let (kind, names, refs) = match statement {
            Statement::Ddl {
                temporary: true, ..
            } => return Ok(None),
            Statement::Ddl {
                kind, names, refs, ..
            } => (*kind, names, refs),
            other => {
                let database_statement = matches!(other, Statement::Other(w) if w.ends_with(" DATABASE") || w.ends_with(" SCHEMA"));
                let in_db = ddl::mentions_as(sql, dialect, |w| rename.same(w, rename.src_db))
                    || (schema == rename.src_db && !database_statement);
                // A table job is touched only by what names its table (or
                // its database as a whole).
                let touches = in_db
                    && match rename.table {
                        Some((table, _)) => {
                            ddl::mentions_as(sql, dialect, |w| rename.same(w, table))
                                || database_statement
                        }
                        None => true,
                    };
                if touches && !ddl::is_dml(other) && !ddl::is_harmless(other) {
                    let what = match other {
                        Statement::Other(w) => w.clone(),
                        _ => String::new(),
                    };
                    return Err(apply::refused(
                        &t.id,
                        Some(elide(sql)),
                        format!("{what}: not a statement the job applies"),
                        format!(
                            "{}: the source ran `{}` ({what}) on the job's database, which is \
                             not a statement the job applies or knows to change nothing it \
                             copies: make the same change on the destination by hand and skip \
                             the transaction (job_skip_binlog with its commit seq), copy the \
                             table again (partial_sync), or resync (force_fullsync)",
                            t.name(),
                            elide(sql)
                        ),
                    ));
                }
                if ddl::is_dml(other) && in_db {
                    // Its rows cannot be known exactly: the job holds on it
                    // (an operator skips it and repairs the rows, or
                    // resyncs) rather than guess.
                    return Err(apply::refused(
                        &t.id,
                        Some(elide(sql)),
                        "logged as a statement, not as row events".into(),
                        format!(
                            "{}: the source logged a statement instead of row events (`{}`): \
                             its session used binlog_format STATEMENT or MIXED. Set \
                             binlog_format=ROW on the source (globally, and reconnect the \
                             clients), then resync (force_fullsync) or skip this transaction \
                             (job_skip_binlog) and repair its rows",
                            t.name(),
                            elide(sql)
                        ),
                    ));
                }
                debug!(job = %self.spec.name, statement = %elide(sql), "statement skipped: not DDL in scope");
                return Ok(None);
            }
        };
        let mapped: Vec<Option<String>> = names.iter().map(|n| rename.map(schema, n)).collect();
        let inside = mapped.iter().filter(|m| m.is_some()).count();
        if inside == 0 {
            return Ok(None);
        }
        if inside < names.len() {
            return match kind {
                DdlKind::DropTable | DdlKind::DropView | DdlKind::DropSequence => {
                    let list: Vec<String> = mapped
                        .iter()
                        .flatten()
                        .map(|t| format!("{}.{}", quote_ident(rename.dest_db), quote_ident(t)))
                        .collect();
                    let what = match kind {
                        DdlKind::DropTable => "TABLE",
                        DdlKind::DropView => "VIEW",
                        _ => "SEQUENCE",
                    };
                    Ok(Some(format!("DROP {what} IF EXISTS {}", list.join(", "))))
                }
                _ => Err(SyncError::Definite(format!(
                    "{}: `{}` moves a table into or out of the job's scope, which the \
                     stream cannot carry; resync the job (force_fullsync)",
                    t.name(),
                    elide(sql)
                ))),
            };
        }
        if matches!(kind, DdlKind::CreateTable | DdlKind::AlterTable)
            && ddl::mentions_words(sql, dialect, &["AS", "ROW", "START"])
            && (ddl::mentions_words(sql, dialect, &["BIGINT"])
                || ddl::mentions_words(sql, dialect, &["TRX_ID"]))
        {
            return Err(apply::refused(
                &t.id,
                Some(elide(sql)),
                "system versioning: not replicated".into(),
                format!(
                    "{}: `{}` versions a table of the job by transaction id, which this \
                     version does not replicate yet (its history would be lost; tables \
                     versioned by time are); version it by time, or skip this transaction \
                     (job_skip_binlog) knowing the table's stream then stops",
                    t.name(),
                    elide(sql)
                ),
            ));
        }
        if refs.iter().any(|r| rename.map(schema, r).is_none()) {
            return Err(SyncError::Definite(format!(
                "{}: `{}` copies the definition of a table outside the job's scope; \
                 resync the job (force_fullsync)",
                t.name(),
                elide(sql)
            )));
        }
        let all: Vec<&ddl::Name> = names.iter().chain(refs.iter()).collect();
        Ok(Some(rename.rewrite(sql, dialect, schema, &all)))
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

fn scope(spec: &Route) -> binlog::Scope {
    let db = spec.src.database.clone();
    let table = spec.src.table.clone();
    Box::new(move |d: &str, t: &str| {
        d == db && !t.starts_with("_ccr_syncer_") && table.as_deref().is_none_or(|only| only == t)
    })
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    src: Endpoint,
    job: String,
    start: Position,
    scope: binlog::Scope,
    timeout: Duration,
    feed: FeedWriter,
    bytes_read: Arc<AtomicU64>,
    head: Arc<Mutex<ReadHead>>,
) {
    let mut reader = match Reader::open(
        &src.server_addr(),
        &start,
        binlog::server_id(&job),
        scope,
        timeout,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            feed.0.fail(e);
            return;
        }
    };
    loop {
        match reader.next().await {
            Ok(events) => {
                let before = bytes_read.swap(reader.bytes_read, Ordering::Relaxed);
                for e in &events {
                    match e {
                        SourceEvent::Begin { gtid: Some(g), .. } => head.lock().gtid = Some(*g),
                        SourceEvent::Commit { timestamp, .. } => {
                            head.lock().timestamp = Some(i64::from(*timestamp))
                        }
                        _ => {}
                    }
                }
                feed.0.push(events, reader.bytes_read - before).await;
            }
            Err(e) => {
                feed.0.fail(e);
                return;
            }
        }
    }
}

/// Events from the reader task to the applier: a buffer the applier takes
/// whole (one hand-over for many events), bounded by [`READ_AHEAD`] events
/// and [`READ_AHEAD_BYTES`] of binlog.
#[derive(Default)]
struct Feed {
    state: Mutex<FeedState>,
    readable: tokio::sync::Notify,
    writable: tokio::sync::Notify,
}

#[derive(Default)]
struct FeedState {
    events: Vec<SourceEvent>,
    bytes: u64,
    /// How the reader ended, once it has.
    end: Option<ReadError>,
}

impl Feed {
    /// Adds events read from `bytes` of binlog, waiting while the buffer
    /// is full. (The reader task is stopped with the applier.)
    async fn push(&self, events: Vec<SourceEvent>, bytes: u64) {
        loop {
            {
                let mut st = self.state.lock();
                if st.events.is_empty()
                    || st.events.len() < READ_AHEAD && st.bytes < READ_AHEAD_BYTES
                {
                    st.events.extend(events);
                    st.bytes += bytes;
                    drop(st);
                    self.readable.notify_one();
                    return;
                }
            }
            self.writable.notified().await;
        }
    }

    fn fail(&self, e: ReadError) {
        self.state.lock().end.get_or_insert(e);
        self.readable.notify_one();
    }

    fn is_empty(&self) -> bool {
        self.state.lock().events.is_empty()
    }

    /// Every event buffered, waiting for one; the reader's error once the
    /// buffer is empty.
    async fn take(&self) -> Result<Vec<SourceEvent>, ReadError> {
        loop {
            {
                let mut st = self.state.lock();
                if !st.events.is_empty() {
                    st.bytes = 0;
                    let events = std::mem::take(&mut st.events);
                    drop(st);
                    self.writable.notify_one();
                    return Ok(events);
                }
                if let Some(e) = st.end.take() {
                    return Err(e);
                }
            }
            self.readable.notified().await;
        }
    }
}

/// The reader's end: when the reader task ends without saying why (it
/// panicked or was stopped), the applier hears so.
struct FeedWriter(Arc<Feed>);

impl Drop for FeedWriter {
    fn drop(&mut self) {
        self.0
            .fail(ReadError::Transient("the binlog reader stopped".into()));
    }
}

/// Polls the source's newest GTID position; failures only leave it stale
/// (the binlog stream notices a dead source itself).
async fn poll_head(
    src: Endpoint,
    timeout: Duration,
    head: Arc<Mutex<Option<MariaGtidPos>>>,
    applied: Arc<Mutex<(BinlogCoord, Option<i64>)>>,
    misconfigured: Arc<Mutex<Option<String>>>,
    topology_now: Arc<Mutex<Option<topology::Topology>>>,
    (metrics, job, progress): (Arc<Metrics>, String, watch::Sender<Applied>),
) {
    let mut polls = 0u64;
    let mut conn: Option<Conn> = None;
    // The source's oldest binlog and when it was started, read again only
    // when another file becomes the oldest.
    let mut oldest: Option<(String, Option<i64>)> = None;
    loop {
        if conn.is_none() {
            conn = db::connect(&src.server_addr(), None, timeout).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            // What the source reports of its neighbours (the failover
            // candidates): at the first poll, then as replicas come and go.
            if polls.is_multiple_of(TOPOLOGY_EVERY) {
                *topology_now.lock() = Some(topology::discover(c).await);
            }
            polls += 1;
            // A source switched away from full row images stops the job
            // before its statements or partial rows reach it.
            if let Ok(Some((format, image))) = c
                .query_first::<(String, String), _>(
                    "SELECT @@global.binlog_format, @@global.binlog_row_image",
                )
                .await
            {
                if !format.eq_ignore_ascii_case("ROW") || !image.eq_ignore_ascii_case("FULL") {
                    *misconfigured.lock() = Some(format!(
                        "the source {} now has binlog_format={format}, binlog_row_image={image}; \
                         the job needs ROW and FULL: run SET GLOBAL binlog_format='ROW', \
                         binlog_row_image='FULL' on the source (clients connected meanwhile \
                         keep their session's format: reconnect them), then resume the job",
                        src.address()
                    ));
                }
            }
            // How much binlog the source could purge before the job's
            // position goes.
            if let Ok(r) = retention::read(c).await {
                let (at, commit_ts) = applied.lock().clone();
                metrics.set_retention_headroom(&job, r.headroom_bytes(&at).unwrap_or(0));
                if oldest.as_ref().map(|(f, _)| f.as_str()) != Some(r.oldest()) {
                    let id = binlog::server_id(&format!("{job}/retention"));
                    let started =
                        retention::started(&src.server_addr(), r.oldest(), id, timeout).await;
                    oldest = Some((r.oldest().to_string(), started));
                }
                if let (Some((_, Some(started))), Some(ts)) = (&oldest, commit_ts) {
                    metrics.set_retention_headroom_secs(&job, (ts - started).max(0));
                }
            }
            match c
                .query_first::<String, _>("SELECT @@global.gtid_binlog_pos")
                .await
            {
                Ok(Some(text)) => {
                    if let Ok(p) = MariaGtidPos::parse(&text) {
                        // Shown at once, also while the applier waits (a
                        // blocked destination): the job is behind, and a
                        // stall shows.
                        let seq = p.commit_seq();
                        progress.send_if_modified(|a| {
                            let newer = a.detail.source_commit_seq.is_none_or(|s| seq > s);
                            if newer {
                                a.detail.source_commit_seq = Some(seq);
                                if a.commit_seq.is_none_or(|applied| applied < seq) {
                                    a.detail.caught_up = false;
                                }
                            }
                            newer
                        });
                        *head.lock() = Some(p);
                    }
                }
                Ok(None) => {}
                Err(_) => conn = None,
            }
        }
        tokio::time::sleep(HEAD_POLL).await;
    }
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
