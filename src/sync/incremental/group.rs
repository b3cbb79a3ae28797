//! The pieces a destination transaction (a *group*) is built from: the
//! source transaction being read, the group being built, and a group
//! dispatched to the pool until it commits.

use crate::change::{Cell, RowChange, RowOp};
use crate::dest::compact::{Change, TxnId};
use crate::dest::pool::{Chunk, Conflicts, Group, Pool};
use crate::error::SyncError;
use crate::position::{BinlogCoord, MariaGtid, Position};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// The source transaction being read.
pub(super) struct Txn {
    pub gtid: Option<MariaGtid>,
    pub at: BinlogCoord,
    /// How errors and a held job name it; shared by its changes.
    pub id: Arc<TxnId>,
    /// An operator asked to skip it: its events are dropped, its position
    /// is checkpointed past.
    pub skip: bool,
    /// It is a prepared XA transaction's prepared part (its XID): its rows
    /// are applied when it commits, read again then; and whether it has
    /// rows in the job's scope.
    pub xa: Option<String>,
    pub xa_rows: bool,
}

impl Txn {
    /// The transaction starting at `at` after position `pos`.
    pub fn new(
        gtid: Option<MariaGtid>,
        at: BinlogCoord,
        pos: &Position,
        skip: Option<&str>,
    ) -> Txn {
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

    pub fn name(&self) -> &str {
        &self.id.label
    }
}

/// The group (destination transaction) being built.
#[derive(Default)]
pub(super) struct Building {
    pub changes: Vec<Change>,
    /// Row hashes of the changes, for conflicts with other groups.
    pub hashes: Vec<u64>,
    /// About how much memory the changes take.
    pub bytes: usize,
    pub txns: u64,
    pub rows: u64,
    pub rows_by_op: HashMap<RowOp, u64>,
    pub started: Option<Instant>,
    /// GTIDs of source transactions skipped on request.
    pub skipped: Vec<String>,
    /// A group too big to hold: dispatched as a barrier, its rows follow
    /// in chunks (bounded memory), applied change by change.
    pub stream: Option<(u64, mpsc::Sender<Chunk>)>,
    /// Bookkeeping committed with the group (prepared XA transactions).
    pub before: Vec<String>,
}

/// A dispatched group, until it commits.
pub(super) struct InFlight {
    pub id: u64,
    pub pos: Position,
    pub commit_ts: Option<i64>,
    pub txns: u64,
    pub rows: u64,
    pub rows_by_op: HashMap<RowOp, u64>,
    pub started: Instant,
    pub skipped: Vec<String>,
}

impl Building {
    /// Sends the rows held so far ahead of the group's end, dispatching it
    /// as a barrier first.
    pub async fn stream_out(
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
    pub async fn finish(
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
pub(super) fn change_bytes(change: &RowChange) -> usize {
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
