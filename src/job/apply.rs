//! Parallel apply: destination transactions on several connections,
//! committed in source order.
//!
//! The incremental coordinator cuts the stream into *groups*: consecutive
//! whole source transactions that become one destination transaction, each
//! ending with the checkpoint of the position after its last transaction.
//! Groups are numbered in stream order and handed to a pool of workers,
//! each with its own destination connection. A worker:
//!
//! 1. waits until the group's `after` has committed: the newest earlier
//!    group that touches one of the same rows (same key hash, see
//!    [`row_hashes`]) — or every earlier group, for a barrier;
//! 2. runs the group's statements (its net effect when it came whole, see
//!    [`compact`]);
//! 3. waits until the group before it has committed, then writes the
//!    checkpoint and commits.
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

use super::full_sync::SyncError;
use crate::applier::compact::{self, Change};
use crate::applier::rows::Statements;
use crate::applier::target::DestTable;
use crate::db;
use crate::source::binlog::decode::{Cell, Image};
use mysql_async::prelude::*;
use mysql_async::Conn;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// What a group carries to its worker, in order: rows, then the commit.
pub(super) enum Chunk {
    Rows(Vec<Change>),
    Commit {
        /// The checkpoint upsert.
        checkpoint: String,
        /// Which position it is, for errors.
        position: String,
        /// The failpoint test's abort between statements and checkpoint.
        abort: bool,
    },
}

pub(super) struct Group {
    pub id: u64,
    /// The group that must have committed before this one starts.
    pub after: u64,
    /// Whether every chunk was in the channel at dispatch (rows then commit):
    /// only then may the rows be applied as their net effect, which is
    /// undone and redone change by change when its counts do not add up.
    pub whole: bool,
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

pub(super) struct Pool {
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
    loop {
        let group = groups.lock().await.recv().await;
        let Some(mut group) = group else {
            return Ok(());
        };
        // A whole group's statements are rendered while earlier groups
        // it waits for are still being applied.
        let mut pending = None;
        let mut prepared = None;
        if group.whole {
            pending = group.chunks.recv().await;
            if let Some(Chunk::Rows(changes)) = &pending {
                prepared = Some(prepare(changes, shared.max_bytes));
            }
        }
        if !shared.committed(group.after).await {
            return Ok(());
        }
        let mut open = false;
        loop {
            let chunk = match pending.take() {
                Some(chunk) => Some(chunk),
                None => group.chunks.recv().await,
            };
            let Some(chunk) = chunk else {
                // The coordinator gave the group up.
                let _ = conn.query_drop("ROLLBACK").await;
                return Ok(());
            };
            match chunk {
                Chunk::Rows(changes) => {
                    apply_rows(&mut conn, &changes, !open, prepared.take()).await?;
                    open = true;
                }
                Chunk::Commit {
                    checkpoint,
                    position,
                    abort,
                } => {
                    if !shared.committed(group.id - 1).await {
                        return Ok(());
                    }
                    if abort {
                        warn!(
                            group = group.id,
                            "failpoint before_checkpoint reached: aborting the process"
                        );
                        std::process::abort();
                    }
                    let mut stmts = Statements::default();
                    if !open {
                        stmts.push("BEGIN", None);
                    }
                    stmts.push(&checkpoint, None);
                    stmts.push("COMMIT", None);
                    run(&mut conn, &stmts).await.map_err(|f| {
                        f.into_error(&stmts, &format!("committing up to {position}"))
                    })?;
                    shared.mark.send_modify(|m| {
                        debug_assert_eq!(m.committed + 1, group.id);
                        m.committed = group.id;
                    });
                    break;
                }
            }
        }
    }
}

/// A whole group's statements: its net effect (`true`) where it reduces,
/// else change by change.
fn prepare(changes: &[Change], max_bytes: usize) -> (Statements, bool) {
    let mut stmts = Statements::default();
    stmts.push("BEGIN", None);
    if compact::render_net(changes, max_bytes, &mut stmts).is_some() {
        return (stmts, true);
    }
    stmts.clear();
    stmts.push("BEGIN", None);
    (stmts, false)
}

/// Runs `changes` in the worker's transaction (opening it when `begin`),
/// as `prepared` if given: a net effect that does not apply is rolled back
/// and applied change by change, which checks each change exactly.
async fn apply_rows(
    conn: &mut Conn,
    changes: &[Change],
    begin: bool,
    prepared: Option<(Statements, bool)>,
) -> Result<(), SyncError> {
    let mut stmts = match prepared {
        Some((stmts, true)) => {
            match run(conn, &stmts).await {
                Ok(()) => return Ok(()),
                Err(Failed::Server(_, e)) if db::server_code(&e).is_none() => {
                    return Err(SyncError::sql("applying rows", e));
                }
                Err(f) => {
                    debug!(failure = %f.describe(&stmts), "net effect did not apply; applying change by change");
                    conn.query_drop("ROLLBACK")
                        .await
                        .map_err(|e| SyncError::sql("rolling back", e))?;
                }
            }
            let mut stmts = stmts;
            stmts.clear();
            stmts.push("BEGIN", None);
            stmts
        }
        Some((stmts, false)) => stmts,
        None => {
            let mut stmts = Statements::default();
            if begin {
                stmts.push("BEGIN", None);
            }
            stmts
        }
    };
    let starts = compact::render_each(changes, &mut stmts)
        .map_err(|(n, e)| SyncError::Definite(format!("{}: {e}", changes[n].txn)))?;
    run(conn, &stmts).await.map_err(|f| {
        let i = f.index();
        let n = starts.partition_point(|&s| s <= i).saturating_sub(1);
        let txn = changes.get(n).map_or("", |c| &c.txn);
        let table = changes.get(n).map_or("", |c| c.dest.name.as_str());
        f.into_error(&stmts, &format!("{txn} on {table}"))
    })
}

/// Why a round trip failed: statement `.0` of it.
pub(super) enum Failed {
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
/// moves on to the next, and it is empty once the current one is the last.
/// So the last statement is checked too (it used not to be: a round trip's
/// final statement went unchecked).
pub(super) async fn run(conn: &mut Conn, stmts: &Statements) -> Result<(), Failed> {
    let mut result = conn
        .query_iter(stmts.sql.as_slice())
        .await
        .map_err(|e| Failed::Server(0, e))?;
    let mut i = 0;
    loop {
        let affected = result.affected_rows();
        if let Some(Some(want)) = stmts.expect.get(i) {
            if affected != *want {
                // Read the rest so the connection stays usable.
                while !result.is_empty() {
                    if result.collect::<mysql_async::Row>().await.is_err() {
                        break;
                    }
                }
                return Err(Failed::Mismatch {
                    index: i,
                    affected,
                    want: *want,
                });
            }
        }
        if result.is_empty() {
            break;
        }
        result
            .collect::<mysql_async::Row>()
            .await
            .map_err(|e| Failed::Server(i + 1, e))?;
        i += 1;
    }
    Ok(())
}

/// Long statements are shown by their head and tail.
pub(super) fn elide(sql: &str) -> String {
    const HEAD: usize = 300;
    const TAIL: usize = 60;
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

/// Hashes of the rows an image touches, for conflicts between groups: per
/// unique index its values (so two groups writing the same key, or the same
/// value of another unique index, conflict). A table without a key, or
/// whose unique values compare under a collation (so different bytes can
/// be the same value), conflicts as a whole.
pub(super) fn row_hashes(
    dest: &DestTable,
    columns: &[Option<usize>],
    image: &Image,
    out: &mut Vec<u64>,
) {
    let whole = || {
        let mut h = DefaultHasher::new();
        dest.name.hash(&mut h);
        h.finish()
    };
    if dest.key.is_empty() {
        out.push(whole());
        return;
    }
    for (n, index) in dest.uniques.iter().enumerate() {
        if !dest.compares_bytes(index) {
            out.push(whole());
            continue;
        }
        let mut h = DefaultHasher::new();
        dest.name.hash(&mut h);
        n.hash(&mut h);
        let mut complete = true;
        for &j in index {
            match columns
                .iter()
                .position(|c| *c == Some(j))
                .and_then(|i| image[i].as_ref())
            {
                Some(cell) => hash_cell(cell, &mut h),
                None => complete = false,
            }
        }
        out.push(if complete { h.finish() } else { whole() });
    }
}

fn hash_cell(cell: &Cell, h: &mut DefaultHasher) {
    match cell {
        Cell::Null => 0u8.hash(h),
        Cell::Int(v, _) => (1u8, v).hash(h),
        Cell::UInt(v) => (2u8, v).hash(h),
        Cell::Float(v) => (3u8, v.to_bits()).hash(h),
        Cell::Double(v) => (4u8, v.to_bits()).hash(h),
        Cell::Decimal(d) => (5u8, d).hash(h),
        Cell::Bytes(b) => (6u8, b).hash(h),
    }
}

/// Group numbers, and which group last wrote each row hash, to find what a
/// new group waits for.
#[derive(Default)]
pub(super) struct Conflicts {
    /// The newest group number given out (groups count from 1).
    issued: u64,
    last: HashMap<u64, u64>,
    /// Every group waits for this one (a barrier).
    barrier: u64,
}

impl Conflicts {
    /// The next group's number.
    pub fn issue(&mut self) -> u64 {
        self.issued += 1;
        self.issued
    }

    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// The group that `id`, touching `hashes`, must wait for; records it.
    pub fn claim(&mut self, id: u64, hashes: &[u64], committed: u64) -> u64 {
        if self.last.len() > 1 << 18 {
            self.last.retain(|_, g| *g > committed);
        }
        let mut after = self.barrier;
        for h in hashes {
            match self.last.insert(*h, id) {
                Some(g) if g != id => after = after.max(g),
                _ => {}
            }
        }
        after
    }

    /// `id` waits for every earlier group, and every later one for it.
    pub fn barrier(&mut self, id: u64) -> u64 {
        self.barrier = id;
        self.last.clear();
        id - 1
    }
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
        assert_eq!(c.claim(a, &[1, 2, 2], 0), 0);
        assert_eq!(c.claim(b, &[3], 0), 0);
        assert_eq!(c.claim(d, &[2, 3], 0), b);
        let e = c.issue();
        assert_eq!(c.barrier(e), d);
        let f = c.issue();
        assert_eq!(c.claim(f, &[9], 0), e);
    }
}
