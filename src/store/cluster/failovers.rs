//! The failover rows: the per-shard journal of promotions
//! (`cm_failovers`), operators' holds on automatic switchover
//! (`cm_shard_holds`) and instances' states outside a job (an old primary
//! rejoining). A promotion changes the manager's view of the primary and
//! writes its journal row in one transaction, fenced by its job.

use super::{v, ClusterStore, Holder};
use crate::store::{Stmt, StoreError};

/// One promotion of the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailoverRow {
    pub job_id: String,
    pub cluster_id: String,
    pub shard: i64,
    /// `auto` (the manager saw the primary fail) or `manual`
    /// (`manual_switch`).
    pub kind: String,
    pub reason: String,
    /// `host:port`.
    pub old_primary: String,
    pub new_primary: String,
    /// The new primary's `gtid_current_pos` when it was promoted.
    pub gtid_position: String,
    /// Unix ms: first seen failing (a manual switch: when it started).
    pub failed_at: i64,
    /// Unix ms: declared failed (the job accepted).
    pub detected_at: i64,
    pub promoted_at: i64,
    /// Unix ms an operator acknowledged it (`ack_failover`), 0 until then.
    pub acked_at: i64,
}

/// What a promotion writes.
#[derive(Clone, Debug)]
pub struct Promotion<'a> {
    pub row: &'a FailoverRow,
    /// `(host, port)` of the old primary, and its state after (`fenced`).
    pub old: Option<(&'a str, i64)>,
    pub old_state: &'a str,
    pub old_note: &'a str,
    pub new: (&'a str, i64),
}

const INSERT_FAILOVER: &str = "INSERT INTO cm_failovers (job_id, cluster_id, shard_id, kind, \
     reason, old_primary, new_primary, gtid_position, failed_at, detected_at, promoted_at, \
     acked_at) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0 \
     FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?";
const SELECT_FAILOVERS: &str = "SELECT job_id, cluster_id, shard_id, kind, reason, old_primary, \
     new_primary, gtid_position, failed_at, detected_at, promoted_at, acked_at \
     FROM cm_failovers ORDER BY promoted_at DESC";
const SELECT_FAILOVER_ROW: &str = "SELECT job_id, cluster_id, shard_id, kind, reason, \
     old_primary, new_primary, gtid_position, failed_at, detected_at, promoted_at, acked_at \
     FROM cm_failovers WHERE job_id = ?";
const DEMOTE: &str = "UPDATE cm_instances SET role = 'replica', state = ?, note = ? \
     WHERE hostaddr = ? AND port = ? AND EXISTS (SELECT 1 FROM cm_jobs WHERE job_id = ? \
     AND owner = ? AND owner_epoch = ?)";
const PROMOTE: &str = "UPDATE cm_instances SET role = 'primary', state = 'running', note = '' \
     WHERE hostaddr = ? AND port = ? AND EXISTS (SELECT 1 FROM cm_jobs WHERE job_id = ? \
     AND owner = ? AND owner_epoch = ?)";
const ACK: &str = "UPDATE cm_failovers SET acked_at = ? WHERE cluster_id = ? AND shard_id = ? \
     AND kind = 'auto' AND acked_at = 0";
const DELETE_HOLD: &str = "DELETE FROM cm_shard_holds WHERE cluster_id = ? AND shard_id = ?";
const INSERT_HOLD: &str = "INSERT INTO cm_shard_holds (cluster_id, shard_id, noswitch_until, \
     updated_at) VALUES (?, ?, ?, ?)";
const SELECT_HOLDS: &str = "SELECT cluster_id, shard_id, noswitch_until FROM cm_shard_holds";
const SET_STATE_IF: &str = "UPDATE cm_instances SET state = ?, note = ? \
     WHERE hostaddr = ? AND port = ? AND state = ? AND note = ?";
const SET_STATE_FENCED: &str = "UPDATE cm_instances SET state = ?, note = ? \
     WHERE hostaddr = ? AND port = ? AND EXISTS (SELECT 1 FROM cm_jobs WHERE job_id = ? \
     AND owner = ? AND owner_epoch = ?)";

fn failover_row(r: &[crate::store::SqlValue]) -> FailoverRow {
    FailoverRow {
        job_id: r[0].text(),
        cluster_id: r[1].text(),
        shard: r[2].int(),
        kind: r[3].text(),
        reason: r[4].text(),
        old_primary: r[5].text(),
        new_primary: r[6].text(),
        gtid_position: r[7].text(),
        failed_at: r[8].int(),
        detected_at: r[9].int(),
        promoted_at: r[10].int(),
        acked_at: r[11].int(),
    }
}

impl ClusterStore {
    /// Records a promotion: the old primary demoted (fenced), the new one
    /// primary, and the journal row, in one transaction. Done already (the
    /// step run again): nothing more. [`StoreError::Fenced`]: the job is
    /// no longer held by `by`.
    pub async fn promote(&self, by: &Holder<'_>, p: &Promotion<'_>) -> Result<(), StoreError> {
        if self.failover(&p.row.job_id).await?.is_some() {
            return Ok(());
        }
        let fence = || vec![v(by.job_id), v(by.fence.member.as_str()), v(by.fence.epoch)];
        let with_fence = |mut params: Vec<crate::store::SqlValue>| {
            params.extend(fence());
            params
        };
        let r = p.row;
        let mut stmts = Vec::new();
        if let Some((host, port)) = p.old {
            stmts.push(Stmt::new(
                DEMOTE,
                with_fence(vec![v(p.old_state), v(p.old_note), v(host), v(port)]),
            ));
        }
        stmts.push(Stmt::new(PROMOTE, with_fence(vec![v(p.new.0), v(p.new.1)])));
        stmts.push(Stmt::new(
            INSERT_FAILOVER,
            with_fence(vec![
                v(r.job_id.as_str()),
                v(r.cluster_id.as_str()),
                v(r.shard),
                v(r.kind.as_str()),
                v(r.reason.as_str()),
                v(r.old_primary.as_str()),
                v(r.new_primary.as_str()),
                v(r.gtid_position.as_str()),
                v(r.failed_at),
                v(r.detected_at),
                v(r.promoted_at),
            ]),
        ));
        self.store.transaction(stmts).await?;
        // Every statement carried the fence: a lost job matched nothing.
        if self.failover(&r.job_id).await?.is_none() {
            return Err(StoreError::Fenced {
                name: format!("cluster job {}", by.job_id),
                epoch: by.fence.epoch,
            });
        }
        Ok(())
    }

    /// The journal, newest first.
    pub async fn failovers(&self) -> Result<Vec<FailoverRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_FAILOVERS, vec![])
            .await?
            .iter()
            .map(|r| failover_row(r))
            .collect())
    }

    /// The promotion of job `job_id`, if it was made.
    pub async fn failover(&self, job_id: &str) -> Result<Option<FailoverRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_FAILOVER_ROW, vec![v(job_id)])
            .await?
            .first()
            .map(|r| failover_row(r)))
    }

    /// `ack_failover`: the shard's unacknowledged automatic failovers
    /// acknowledged at `at`; how many.
    pub async fn ack_failovers(
        &self,
        cluster_id: &str,
        shard: i64,
        at: i64,
    ) -> Result<u64, StoreError> {
        self.store
            .execute(ACK, vec![v(at), v(cluster_id), v(shard)])
            .await
    }

    /// `set_noswitch`: automatic switchover of the shard held until `until`
    /// (unix ms; 0 releases it).
    pub async fn set_hold(
        &self,
        cluster_id: &str,
        shard: i64,
        until: i64,
    ) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut stmts = vec![Stmt::new(DELETE_HOLD, vec![v(cluster_id), v(shard)])];
        if until > 0 {
            stmts.push(Stmt::new(
                INSERT_HOLD,
                vec![v(cluster_id), v(shard), v(until), v(now)],
            ));
        }
        self.store.transaction(stmts).await
    }

    /// Every hold: `(cluster, shard, until)`.
    pub async fn holds(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        Ok(self
            .store
            .select(SELECT_HOLDS, vec![])
            .await?
            .iter()
            .map(|r| (r[0].text(), r[1].int(), r[2].int()))
            .collect())
    }

    /// An instance's state and note changed outside a job (the watcher),
    /// only if they are still what it saw: whether it changed.
    pub async fn set_instance_state_if(
        &self,
        host: &str,
        port: i64,
        seen: (&str, &str),
        state: &str,
        note: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(
                SET_STATE_IF,
                vec![v(state), v(note), v(host), v(port), v(seen.0), v(seen.1)],
            )
            .await?
            > 0)
    }

    /// An instance's state and note, written by a job.
    pub async fn set_instance_state(
        &self,
        by: &Holder<'_>,
        host: &str,
        port: i64,
        state: &str,
        note: &str,
    ) -> Result<(), StoreError> {
        let params = vec![
            v(state),
            v(note),
            v(host),
            v(port),
            v(by.job_id),
            v(by.fence.member.as_str()),
            v(by.fence.epoch),
        ];
        if self.store.execute(SET_STATE_FENCED, params).await? == 0 {
            // Gone, or the job lost: the job's next save says which.
            let held = self
                .store
                .select(
                    super::HOLDS,
                    vec![v(by.job_id), v(by.fence.member.as_str()), v(by.fence.epoch)],
                )
                .await?;
            if held.is_empty() {
                return Err(StoreError::Fenced {
                    name: format!("cluster job {}", by.job_id),
                    epoch: by.fence.epoch,
                });
            }
        }
        Ok(())
    }
}
