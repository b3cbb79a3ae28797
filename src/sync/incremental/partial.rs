//! Partial sync: one table copied again while the stream goes on for the
//! others; the stream drops the table's events meanwhile and, once the copy
//! is in, applies those after its snapshot.

use super::coordinator::Coordinator;
use super::{Incremental, Window};
use crate::dest::target::DestTable;
use crate::error::SyncError;
use crate::position::Position;
use crate::sync::full::{FullSync, HandOver};
use crate::sync::progress::{FullSyncProgress, IncrementalProgress, PartialSync};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::info;

/// A table being copied again while the stream goes on for the others.
pub(super) struct Partial {
    pub request: PartialSync,
    pub dest_table: String,
    /// The copy's snapshot: the table's events up to here are in it; the
    /// stream does not go past it before the copy is in.
    pub at: Position,
    pub task: tokio::task::JoinHandle<Result<HandOver, SyncError>>,
}

impl Incremental {
    /// Starts copying `request`'s table again (a table job's one table, as
    /// in its spec) and returns once the copy's snapshot is open.
    pub(super) async fn start_partial(&self, request: PartialSync) -> Result<Partial, SyncError> {
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
    pub(super) async fn take_in(
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
        info!(job = %self.spec.name, table = %p.dest_table, snapshot = %p.at,
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
}

impl Coordinator<'_> {
    /// Takes in a copy that has finished, or that the stream must wait for
    /// (`wait`: its next transaction is past the copy's snapshot).
    pub(super) async fn partial_done(&mut self) -> Result<(), SyncError> {
        let p = self.partial.take().expect("checked by the caller");
        self.done_request = Some(p.request.requested_at);
        self.sync
            .take_in(p, &mut self.windows, &mut self.schemas, self.detail)
            .await?;
        self.dropping = None;
        Ok(())
    }

    /// Between transactions: a copy that is in, then a partial sync asked
    /// for (by an operator, or by the stream itself for a table whose
    /// events no longer fit it) starts.
    pub(super) async fn partial_step(&mut self) -> Result<(), SyncError> {
        // A copy that is in before the stream reaches its snapshot.
        if self.partial.as_ref().is_some_and(|p| p.task.is_finished()) {
            self.partial_done().await?;
        }
        if self.txn.is_some() || self.partial.is_some() {
            return Ok(());
        }
        let done_request = self.done_request;
        let asked = self
            .sync
            .live
            .partial()
            .filter(|p| Some(p.requested_at) != done_request);
        let by_itself = self.wanted.is_some();
        let Some(request) = self.wanted.take().or(asked) else {
            return Ok(());
        };
        // What the stream applied of the table so far commits before the
        // copy replaces it.
        if self.group.txns > 0 {
            let ddl = self.pending_ddl.take();
            self.close_group(ddl).await?;
        }
        self.pool.wait(self.conflicts.issued()).await?;
        let p = self.sync.start_partial(request.clone()).await?;
        info!(job = %self.sync.spec.name, table = %p.dest_table, snapshot = %p.at,
              reason = %request.reason, "partial sync: copying the table again");
        if by_itself {
            self.detail.partial_started = Some(request);
        }
        self.dropping = Some(p.dest_table.clone());
        self.partial = Some(p);
        Ok(())
    }
}
