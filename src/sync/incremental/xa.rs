//! XA transactions, exactly once: a prepared part is recorded (in
//! `_ccr_syncer_xa`, with the group) and its rows are applied at its
//! `XA COMMIT`, read again from the source's binlog then.

use super::coordinator::{Coordinator, Step};
use super::{read_error, scope};
use crate::dest::checkpoint;
use crate::dest::pool as apply;
use crate::error::SyncError;
use crate::source::binlog::{self, Reader, SourceEvent};
use tracing::info;

impl Coordinator<'_> {
    pub(super) async fn on_xa_end(&mut self, xid: String, commit: bool) -> Result<Step, SyncError> {
        let sync = self.sync;
        let (name, dest_db) = (sync.spec.name.as_str(), sync.spec.dest.database.as_str());
        let Some(t) = self.txn.as_ref().filter(|t| !t.skip) else {
            return Ok(Step::Skip);
        };
        let (id, label, at) = (t.id.clone(), t.name().to_string(), t.at.clone());
        let source = sync.source();
        let reader_id = binlog::server_id(&format!("{name}#xa"));
        match self.prepared.remove(&xid) {
            Some(p) => {
                self.group
                    .before
                    .push(checkpoint::xa_forget_sql(dest_db, name, &xid));
                let reading = source.address();
                if commit && p.rows && p.source != reading {
                    return Err(apply::refused(
                        &id,
                        None,
                        format!("XA COMMIT of {xid}, prepared on another node"),
                        format!(
                            "{label}: commits XA transaction {xid}, prepared on {} \
                             before the job followed a failover to {reading}: its \
                             rows are at a position of the old node's binlog; resync \
                             the job (force_fullsync)",
                            p.source
                        ),
                    ));
                }
                if commit && p.rows {
                    // Its rows, read again, are this transaction's.
                    let changes = Reader::rows_at(
                        &source.server_addr(),
                        &p.at,
                        reader_id,
                        scope(&sync.spec),
                        sync.connect_timeout,
                    )
                    .await
                    .map_err(read_error)?;
                    info!(job = %name, xid = %xid, rows = changes.len(),
                          "prepared XA transaction committed: applying its rows");
                    for c in changes.into_iter().rev() {
                        self.queued.push_front(SourceEvent::Rows(c));
                    }
                }
                Ok(Step::Next)
            }
            None if commit => {
                // Prepared before the job's position: its rows were in no
                // snapshot; found in the binlog, they are applied with the
                // commit.
                let found = Reader::find_prepared(
                    &source.server_addr(),
                    &xid,
                    &at,
                    reader_id,
                    scope(&sync.spec),
                    sync.connect_timeout,
                )
                .await
                .map_err(read_error)?;
                if let Some(changes) = found {
                    info!(job = %name, xid = %xid, rows = changes.len(),
                          "XA transaction prepared before the job's position committed: applying its rows");
                    for c in changes.into_iter().rev() {
                        self.queued.push_front(SourceEvent::Rows(c));
                    }
                    return Ok(Step::Skip);
                }
                Err(apply::refused(
                    &id,
                    None,
                    format!("XA COMMIT of {xid}, prepared before the job's position"),
                    format!(
                        "{label}: commits XA transaction {xid}, which was prepared before \
                         the job's position in a binlog the source no longer has, so \
                         its changes (if it changed the job's tables) are not on the \
                         destination: resync the job (force_fullsync), or skip this \
                         transaction (job_skip_binlog) if it changed nothing of the job's"
                    ),
                ))
            }
            None => Ok(Step::Next),
        }
    }
}
