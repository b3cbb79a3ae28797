//! Parallel apply: destination transactions on several connections,
//! committed in source order.
//!
//! The incremental coordinator cuts the stream into *groups*: consecutive
//! whole source transactions that become one destination transaction, each
//! ending with the checkpoint of the position after its last transaction.
//! Groups are numbered in stream order and handed to a pool of workers,
//! each with its own destination connection. A worker:
//!
//! 1. when the group came whole, renders its net effect (see [`compact`])
//!    and at once writes the rows that no earlier group in flight touches
//!    (their key hashes, see [`row_hashes`], are not among those groups');
//! 2. waits until the group's `after` has committed: the newest earlier
//!    group that touches one of the same rows — or every earlier group, for
//!    a barrier;
//! 3. runs the rest of the group's statements;
//! 4. waits until the group before it has committed, then writes the
//!    checkpoint and commits.
//!
//! Writing ahead keeps rows in order: a row written in step 1 has no
//! earlier change still to apply (every earlier group that touched it has
//! committed), and later groups that touch it wait for this one. It can
//! form one wait InnoDB does not see: a group holding locks waits (step 2
//! or 4) for an earlier group whose statement waits for one of those locks
//! (a gap lock, say). So a group that holds locks while it waits looks at
//! InnoDB's lock waits now and then, and when an earlier group's session
//! waits for it, rolls back and applies its rows again after the wait.
//!
//! So rows keep their order (a row's changes are in groups that wait for
//! each other), source transactions stay atomic (a group holds whole ones),
//! and commits happen in stream order: the checkpoint on the destination is
//! always a prefix of the stream, which is what makes a restart exactly
//! once. The lowest uncommitted group never waits on a later one, so the
//! pool always progresses.
//!
//! A worker that fails marks the pool failed; the others stop at their next
//! wait (a commit under way completes), and the coordinator returns the
//! error: the caller restarts from the checkpoint.

use crate::change::{Cell, Image};
use crate::db;
use crate::dest::compact::{self, Change, TxnId};
use crate::dest::rows::Statements;
use crate::dest::target::DestTable;
use crate::error::{is_transient, FailedTransaction, SyncError};
use mysql_async::prelude::*;
use mysql_async::Conn;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

mod conflicts;
pub use conflicts::{row_hashes, Conflicts};

/// What a group carries to its worker, in order: rows, then the commit.
pub enum Chunk {
    Rows(Vec<Change>),
    Commit {
        /// Statements of the group's own bookkeeping, before the checkpoint.
        before: Vec<String>,
        /// The checkpoint upsert.
        checkpoint: String,
        /// Which position it is, for errors.
        position: String,
        /// The failpoint test's abort between statements and checkpoint.
        abort: bool,
    },
}

pub struct Group {
    pub id: u64,
    /// The group that must have committed before this one starts.
    pub after: u64,
    /// Whether every chunk was in the channel at dispatch (rows then commit):
    /// only then may the rows be applied as their net effect, which is
    /// undone and redone change by change when its counts do not add up.
    pub whole: bool,
    /// Row hashes that earlier groups in flight touch; `None` when nothing
    /// may be written before `after` commits (a barrier is in flight).
    pub busy: Option<HashSet<u64>>,
    pub chunks: mpsc::Receiver<Chunk>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Mark {
    committed: u64,
    failed: bool,
}

struct Shared {
    mark: watch::Sender<Mark>,
    error: Mutex<Option<SyncError>>,
    max_bytes: usize,
    /// The group each worker's connection (by id) is on.
    on: Mutex<HashMap<u32, u64>>,
}

impl Shared {
    fn fail(&self, e: SyncError) {
        self.error.lock().get_or_insert(e);
        self.mark.send_modify(|m| m.failed = true);
    }

    fn take_error(&self) -> SyncError {
        self.error
            .lock()
            .take()
            .unwrap_or_else(|| SyncError::Transient("an apply worker stopped".into()))
    }

    fn is_committed(&self, id: u64) -> bool {
        self.mark.borrow().committed >= id
    }

    /// Waits until group `id` has committed; false when the pool failed.
    async fn committed(&self, id: u64) -> bool {
        let mut rx = self.mark.subscribe();
        let ok = match rx.wait_for(|m| m.failed || m.committed >= id).await {
            Ok(m) => !m.failed,
            Err(_) => false,
        };
        ok
    }
}

pub struct Pool {
    groups: Option<mpsc::Sender<Group>>,
    shared: Arc<Shared>,
    mark: watch::Receiver<Mark>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abort();
        }
    }
}

impl Pool {
    /// A worker on each connection; groups are numbered from 1.
    pub fn start(conns: Vec<Conn>, max_bytes: usize) -> Pool {
        let (mark, rx) = watch::channel(Mark::default());
        let shared = Arc::new(Shared {
            mark,
            error: Mutex::new(None),
            max_bytes,
            on: Mutex::new(HashMap::new()),
        });
        let (tx, groups) = mpsc::channel(1);
        let groups = Arc::new(tokio::sync::Mutex::new(groups));
        let workers = conns
            .into_iter()
            .map(|conn| {
                let shared = shared.clone();
                let groups = groups.clone();
                tokio::spawn(async move {
                    let guard = FailGuard(shared.clone());
                    if let Err(e) = work(conn, &groups, &shared).await {
                        shared.fail(e);
                    }
                    std::mem::forget(guard);
                })
            })
            .collect();
        Pool {
            groups: Some(tx),
            shared,
            mark: rx,
            workers,
        }
    }

    pub fn committed(&self) -> u64 {
        self.mark.borrow().committed
    }

    /// Resolves when a group commits; the worker's error if one failed.
    pub async fn changed(&mut self) -> Result<(), SyncError> {
        if self.mark.changed().await.is_err() || self.mark.borrow().failed {
            return Err(self.shared.take_error());
        }
        Ok(())
    }

    async fn until<F: std::future::Future>(&mut self, f: F) -> Result<F::Output, SyncError> {
        let mut rx = self.shared.mark.subscribe();
        tokio::select! {
            out = f => Ok(out),
            _ = rx.wait_for(|m| m.failed) => Err(self.shared.take_error()),
        }
    }

    pub async fn dispatch(&mut self, group: Group) -> Result<(), SyncError> {
        let tx = self.groups.clone().expect("pool is running");
        match self.until(tx.send(group)).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(self.shared.take_error()),
        }
    }

    /// Sends the next chunk of a group already dispatched.
    pub async fn send(&mut self, to: &mpsc::Sender<Chunk>, chunk: Chunk) -> Result<(), SyncError> {
        match self.until(to.send(chunk)).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(self.shared.take_error()),
        }
    }

    /// Waits until group `id` has committed.
    pub async fn wait(&mut self, id: u64) -> Result<(), SyncError> {
        let shared = self.shared.clone();
        if shared.committed(id).await {
            Ok(())
        } else {
            Err(shared.take_error())
        }
    }

    /// Stops the workers: each finishes the round trip it is in (a commit
    /// under way completes), then leaves, rolling back what it holds.
    pub async fn shutdown(mut self) {
        self.groups = None;
        self.shared.mark.send_modify(|m| m.failed = true);
        let workers = std::mem::take(&mut self.workers);
        let all = futures_util::future::join_all(workers);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            warn!("apply workers did not stop within 10 s; abandoning them");
        }
    }
}

/// Marks the pool failed if a worker ends by panicking or being aborted.
struct FailGuard(Arc<Shared>);

impl Drop for FailGuard {
    fn drop(&mut self) {
        self.0.mark.send_modify(|m| m.failed = true);
    }
}

async fn work(
    mut conn: Conn,
    groups: &tokio::sync::Mutex<mpsc::Receiver<Group>>,
    shared: &Shared,
) -> Result<(), SyncError> {
    // Writing ahead needs a way out of the wait cycles it can form (see
    // `wait_holding`): InnoDB's lock waits, which need PROCESS to read.
    let watch = conn.query_drop(LOCK_WAITERS).await.is_ok();
    let me = conn.id();
    loop {
        let group = groups.lock().await.recv().await;
        let Some(mut group) = group else {
            return Ok(());
        };
        shared.on.lock().insert(me, group.id);
        let done = if group.whole {
            whole(&mut conn, &mut group, shared, watch).await?
        } else {
            streamed(&mut conn, &mut group, shared).await?
        };
        if !done {
            let _ = conn.query_drop("ROLLBACK").await;
            return Ok(());
        }
    }
}

/// Applies a group whose rows all came at dispatch; false when the pool
/// failed or the coordinator gave the group up.
///
/// Its net effect is rendered, and where the group waits for an earlier
/// one, the rows no group in flight touches are written at once; the rest
/// after `after` commits.
async fn whole(
    conn: &mut Conn,
    group: &mut Group,
    shared: &Shared,
    watch: bool,
) -> Result<bool, SyncError> {
    let Some(Chunk::Rows(changes)) = group.chunks.recv().await else {
        return Ok(false);
    };
    let Some(commit) = group.chunks.recv().await else {
        return Ok(false);
    };
    let t0 = std::time::Instant::now();
    let ahead = match &group.busy {
        Some(busy) if watch && !shared.is_committed(group.after) => Some(busy),
        _ => None,
    };
    let mut plan = Plan::new(&changes, shared.max_bytes, ahead);
    let mut open = false;
    if plan.net && plan.early.expect.len() > 1 {
        open = net_part(conn, &plan.early).await?;
        plan.net = open;
    }
    let early_ms = t0.elapsed().as_millis() as u64;
    match wait_holding(conn, shared, group.after, group.id, open && watch).await? {
        Waited::Failed => return Ok(false),
        Waited::RolledBack => open = false,
        Waited::Done => {}
    }
    let t1 = std::time::Instant::now();
    if open {
        plan.rest(conn, &changes).await?;
    } else {
        plan.all(conn, &changes).await?;
    }
    let t2 = std::time::Instant::now();
    match wait_holding(conn, shared, group.id - 1, group.id, watch).await? {
        Waited::Failed => return Ok(false),
        Waited::RolledBack => plan.all(conn, &changes).await?,
        Waited::Done => {}
    }
    let t3 = std::time::Instant::now();
    if !commit_group(conn, group.id, commit, true, shared).await? {
        return Ok(false);
    }
    debug!(
        group = group.id,
        after = group.after,
        early_ms,
        waited_ms = (t1 - t0).as_millis() as u64,
        rows_ms = (t2 - t1).as_millis() as u64,
        turn_ms = (t3 - t2).as_millis() as u64,
        commit_ms = t3.elapsed().as_millis() as u64,
        "group committed"
    );
    Ok(true)
}

/// Applies a group whose rows come in pieces (a barrier: every earlier
/// group has committed before it starts), change by change.
async fn streamed(conn: &mut Conn, group: &mut Group, shared: &Shared) -> Result<bool, SyncError> {
    if !shared.committed(group.after).await {
        return Ok(false);
    }
    let mut open = false;
    loop {
        let Some(chunk) = group.chunks.recv().await else {
            return Ok(false);
        };
        match chunk {
            Chunk::Rows(changes) => {
                let mut stmts = Statements::default();
                if !open {
                    stmts.push("BEGIN", None);
                }
                each(conn, &changes, stmts).await?;
                open = true;
            }
            commit @ Chunk::Commit { .. } => {
                return commit_group(conn, group.id, commit, open, shared).await;
            }
        }
    }
}

/// Waits for its turn, then writes the checkpoint and commits; false when
/// the pool failed.
async fn commit_group(
    conn: &mut Conn,
    id: u64,
    commit: Chunk,
    open: bool,
    shared: &Shared,
) -> Result<bool, SyncError> {
    let Chunk::Commit {
        before,
        checkpoint,
        position,
        abort,
    } = commit
    else {
        return Ok(false);
    };
    if !shared.committed(id - 1).await {
        return Ok(false);
    }
    if abort {
        warn!(
            group = id,
            "failpoint before_checkpoint reached: aborting the process"
        );
        std::process::abort();
    }
    let mut stmts = Statements::default();
    if !open {
        stmts.push("BEGIN", None);
    }
    for s in &before {
        stmts.push(s, None);
    }
    stmts.push(&checkpoint, None);
    stmts.push("COMMIT", None);
    run(conn, &stmts)
        .await
        .map_err(|f| f.into_error(&stmts, &format!("committing up to {position}")))?;
    shared.mark.send_modify(|m| {
        debug_assert_eq!(m.committed + 1, id);
        m.committed = id;
    });
    Ok(true)
}

/// A whole group's statements.
struct Plan {
    /// Whether `early` and `rest` are the group's net effect (else it is
    /// applied change by change).
    net: bool,
    /// `BEGIN` and the rows that may be written ahead.
    early: Statements,
    rest: Statements,
}

impl Plan {
    fn new(changes: &[Change], max_bytes: usize, busy: Option<&HashSet<u64>>) -> Plan {
        let mut early = Statements::default();
        early.push("BEGIN", None);
        let mut rest = Statements::default();
        let ahead = |dest: &DestTable, columns: &[Option<usize>], image: &Image| {
            let mut hashes = Vec::new();
            row_hashes(dest, columns, image, &mut hashes);
            hashes.iter().all(|h| !busy.is_some_and(|b| b.contains(h)))
        };
        let net = match busy {
            Some(_) => {
                compact::render_net(changes, max_bytes, Some((&ahead, &mut early)), &mut rest)
            }
            None => compact::render_net(changes, max_bytes, None, &mut rest),
        }
        .is_some();
        if !net {
            early.clear();
            early.push("BEGIN", None);
            rest.clear();
        }
        Plan { net, early, rest }
    }

    /// The rest of the net effect, after the early part; on a mismatch,
    /// the group again from the start, change by change.
    async fn rest(&mut self, conn: &mut Conn, changes: &[Change]) -> Result<(), SyncError> {
        if self.net && net_part(conn, &self.rest).await? {
            return Ok(());
        }
        self.net = false;
        self.all(conn, changes).await
    }

    /// The whole group in a new transaction.
    async fn all(&mut self, conn: &mut Conn, changes: &[Change]) -> Result<(), SyncError> {
        if self.net && net_part(conn, &self.early).await? && net_part(conn, &self.rest).await? {
            return Ok(());
        }
        self.net = false;
        let mut stmts = Statements::default();
        stmts.push("BEGIN", None);
        each(conn, changes, stmts).await
    }
}

/// Runs part of a net effect: false when it did not apply and the
/// transaction was rolled back (not necessarily a divergence, see
/// [`compact`]: the caller applies the group change by change).
async fn net_part(conn: &mut Conn, stmts: &Statements) -> Result<bool, SyncError> {
    match run(conn, stmts).await {
        Ok(()) => Ok(true),
        // Lost connections, deadlocks, lock wait timeouts: retried as such
        // (and counted), not taken for a net effect that does not add up.
        Err(Failed::Server(_, e)) if db::server_code(&e).is_none() || is_transient(&e) => {
            Err(SyncError::sql("applying rows", e))
        }
        Err(f) => {
            debug!(failure = %f.describe(stmts), "net effect did not apply; applying change by change");
            rollback(conn).await?;
            Ok(false)
        }
    }
}

async fn rollback(conn: &mut Conn) -> Result<(), SyncError> {
    conn.query_drop("ROLLBACK")
        .await
        .map_err(|e| SyncError::sql("rolling back", e))
}

/// Runs `changes` one by one after what `stmts` holds, checking each
/// exactly: a change the destination refuses (or that does not match)
/// holds the job on its source transaction ([`SyncError::Refused`]).
async fn each(conn: &mut Conn, changes: &[Change], mut stmts: Statements) -> Result<(), SyncError> {
    let starts = compact::render_each(changes, &mut stmts).map_err(|(n, e)| {
        let txn = &changes[n].txn;
        refused(txn, None, e.clone(), format!("{}: {e}", txn.label))
    })?;
    run(conn, &stmts).await.map_err(|f| {
        let i = f.index();
        let n = starts.partition_point(|&s| s <= i).saturating_sub(1);
        let Some(c) = changes.get(n) else {
            return f.into_error(&stmts, "applying rows");
        };
        let statement = elide(&String::from_utf8_lossy(stmts.statement(i)));
        let error = f.error_text();
        match f.into_error(&stmts, &format!("{} on {}", c.txn.label, c.dest.name)) {
            SyncError::Definite(message) => refused(&c.txn, Some(statement), error, message),
            other => other,
        }
    })
}

/// The error that holds a job on `txn`.
pub fn refused(
    txn: &TxnId,
    statement: Option<String>,
    error: String,
    message: String,
) -> SyncError {
    SyncError::Refused {
        txn: Box::new(FailedTransaction {
            commit_seq: txn.commit_seq,
            gtid: txn.gtid.clone(),
            binlog_position: txn.at.clone(),
            statement,
            error,
        }),
        message,
    }
}

/// The sessions waiting for a lock the current transaction holds.
const LOCK_WAITERS: &str = "SELECT r.trx_mysql_thread_id \
    FROM information_schema.INNODB_LOCK_WAITS w \
    JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id \
    JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id \
    WHERE b.trx_mysql_thread_id = CONNECTION_ID()";

enum Waited {
    Done,
    /// The transaction was rolled back: an earlier group waited for it.
    RolledBack,
    Failed,
}

/// Waits until group `id` has committed while group `mine` holds an open
/// transaction (`holding`).
///
/// Two groups side by side can wait for each other where neither InnoDB
/// nor the pool sees it: a later group holds a lock (a gap lock, say) that
/// an earlier one's statement waits for, while it waits for that earlier
/// group to commit. So a holding group looks, now and then, at who waits
/// for its locks; when it is an earlier group, it rolls back, lets it pass
/// and applies its rows again afterwards.
async fn wait_holding(
    conn: &mut Conn,
    shared: &Shared,
    id: u64,
    mine: u64,
    holding: bool,
) -> Result<Waited, SyncError> {
    let mut rx = shared.mark.subscribe();
    let mut tick = Duration::from_millis(100);
    loop {
        let done = async {
            rx.wait_for(|m| m.failed || m.committed >= id)
                .await
                .map(|m| !m.failed)
        };
        if !holding {
            return Ok(if done.await.unwrap_or(false) {
                Waited::Done
            } else {
                Waited::Failed
            });
        }
        tokio::select! {
            ok = done => {
                return Ok(if ok.unwrap_or(false) { Waited::Done } else { Waited::Failed });
            }
            _ = tokio::time::sleep(tick) => {}
        }
        tick = Duration::from_millis(250);
        let waiters: Vec<u32> = conn
            .query(LOCK_WAITERS)
            .await
            .map_err(|e| SyncError::sql("reading lock waits", e))?;
        let earlier = {
            let on = shared.on.lock();
            waiters.iter().any(|t| on.get(t).is_some_and(|g| *g < mine))
        };
        if earlier {
            debug!(
                group = mine,
                "an earlier group waits for this one's locks: rolling back"
            );
            rollback(conn).await?;
            return Ok(if shared.committed(id).await {
                Waited::RolledBack
            } else {
                Waited::Failed
            });
        }
    }
}

/// Why a round trip failed: statement `.0` of it.
pub enum Failed {
    Server(usize, mysql_async::Error),
    Mismatch {
        index: usize,
        affected: u64,
        want: u64,
    },
}

impl Failed {
    fn index(&self) -> usize {
        match self {
            Failed::Server(i, _) => *i,
            Failed::Mismatch { index, .. } => *index,
        }
    }

    /// What went wrong, without the statement.
    fn error_text(&self) -> String {
        match self {
            Failed::Server(_, e) => e.to_string(),
            Failed::Mismatch { affected, want, .. } => format!(
                "matched {affected} rows where the source changed {want}: \
                 the destination has diverged from the source"
            ),
        }
    }

    fn describe(&self, stmts: &Statements) -> String {
        let text = elide(&String::from_utf8_lossy(stmts.statement(self.index())));
        match self {
            Failed::Server(_, e) => format!("`{text}`: {e}"),
            Failed::Mismatch { affected, want, .. } => {
                format!("`{text}` matched {affected} rows where the source changed {want}")
            }
        }
    }

    pub fn into_error(self, stmts: &Statements, context: &str) -> SyncError {
        match self {
            Failed::Server(i, e) => {
                let text = elide(&String::from_utf8_lossy(stmts.statement(i)));
                SyncError::sql(format!("{context}: statement `{text}`"), e)
            }
            Failed::Mismatch { .. } => SyncError::Definite(format!(
                "{context}: the destination has diverged from the source: {}",
                self.describe(stmts)
            )),
        }
    }
}

/// Runs `stmts` as one multi-statement round trip and checks that each
/// matched the rows it must.
///
/// The driver's result holds one statement's outcome at a time: reading it
/// moves on to the next. A result that says it is empty is either the last
/// statement's or an error that ended the round trip (the server runs
/// nothing after an error) — only reading it tells which, and an error not
/// read surfaces on the connection's next query instead. So the last result
/// is always read, and its error is that statement's.
pub async fn run(conn: &mut Conn, stmts: &Statements) -> Result<(), Failed> {
    let mut result = conn
        .query_iter(stmts.sql.as_slice())
        .await
        .map_err(|e| Failed::Server(0, e))?;
    let mut i = 0;
    loop {
        let affected = result.affected_rows();
        let last = result.is_empty();
        if last {
            result
                .collect::<mysql_async::Row>()
                .await
                .map_err(|e| Failed::Server(i, e))?;
        }
        if let Some(Some(want)) = stmts.expect.get(i) {
            if affected != *want {
                // Read the rest so the connection stays usable.
                if !last {
                    loop {
                        let end = result.is_empty();
                        if result.collect::<mysql_async::Row>().await.is_err() || end {
                            break;
                        }
                    }
                }
                return Err(Failed::Mismatch {
                    index: i,
                    affected,
                    want: *want,
                });
            }
        }
        if last {
            return Ok(());
        }
        result
            .collect::<mysql_async::Row>()
            .await
            .map_err(|e| Failed::Server(i + 1, e))?;
        i += 1;
    }
}

/// Long statements are shown by their head and tail.
/// A statement as messages and logs quote it: passwords masked
/// ([`crate::redact`]), long values elided.
pub fn elide(sql: &str) -> String {
    const HEAD: usize = 300;
    const TAIL: usize = 60;
    let redacted = crate::redact::text(sql);
    let sql: &str = &redacted;
    if sql.len() <= HEAD + TAIL + 20 {
        return sql.to_string();
    }
    let head = sql
        .char_indices()
        .take_while(|(i, _)| *i < HEAD)
        .last()
        .map_or(0, |(i, c)| i + c.len_utf8());
    let tail = sql
        .char_indices()
        .find(|(i, _)| *i >= sql.len() - TAIL)
        .map_or(sql.len(), |(i, _)| i);
    format!(
        "{} … ({} bytes elided) … {}",
        &sql[..head],
        tail - head,
        &sql[tail..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elides_long_statements() {
        let long = format!("INSERT INTO t VALUES {}", "(1),".repeat(500));
        let e = elide(&long);
        assert!(e.len() < 500 && e.contains("bytes elided"));
        assert_eq!(elide("DELETE FROM t"), "DELETE FROM t");
    }

    #[test]
    fn groups_wait_for_the_newest_group_sharing_a_row() {
        let mut c = Conflicts::default();
        let (a, b, d) = (c.issue(), c.issue(), c.issue());
        assert_eq!(c.claim(a, &[1, 2, 2], 0), (0, Some(HashSet::new())));
        assert_eq!(c.claim(b, &[3], 0), (0, Some(HashSet::new())));
        assert_eq!(c.claim(d, &[2, 3, 4], 0), (b, Some(HashSet::from([2, 3]))));
        // Once a has committed, only the row d touched is busy.
        let d2 = c.issue();
        assert_eq!(c.claim(d2, &[1, 3], 1), (d, Some(HashSet::from([3]))));
        let e = c.issue();
        assert_eq!(c.barrier(e), d2);
        let f = c.issue();
        assert_eq!(c.claim(f, &[9], 1), (e, None));
        let g = c.issue();
        assert_eq!(c.claim(g, &[9], e), (f, Some(HashSet::from([9]))));
    }
}
