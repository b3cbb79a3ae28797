//! The cluster manager's rows (`cm_jobs`, `cm_machines`, `cm_clusters`,
//! `cm_instances`, `cm_reservations`, `cm_ids`): the only place their SQL
//! is written, like [`super::group`] for the group's.
//!
//! Two things here make a group of managers safe:
//!
//! - **Allocation by the store.** A job is inserted in one transaction with
//!   a key per `(machine, port)` it reserves (`cm_reservations`) and per
//!   cluster or shard id it takes (`cm_ids`). Two members that chose the
//!   same port or id at once both try to insert the same key: one
//!   transaction commits, the other is refused whole as a duplicate and
//!   plans again from what is now taken. A job's reserved ports are let go
//!   in the same transaction as its final save (its instances hold them
//!   from then on); ids are never let go, so never handed out twice.
//! - **Fencing.** A job is driven by the member that claimed it
//!   ([`ClusterStore::claim`] raises `owner_epoch`), and every save names
//!   that owner and epoch: a member that lost the job (frozen past its
//!   lease while another claimed it) matches no row and stops. The rows its
//!   steps write (machines, clusters, instances) are written by statements
//!   whose own `WHERE` checks the same fence ([`Holder`]), so a member that
//!   lost the job changes none of them either. These are single statements
//!   (no transaction held across round trips): a member frozen mid-write
//!   holds no row lock that would keep another from claiming the job.

use super::{Fence, MetaStore, SqlValue, Stmt, StoreError};
use std::sync::Arc;

mod comps;
mod failovers;
pub use comps::{CompRow, TableRow, COMP_ID};
pub use failovers::{FailoverRow, Promotion};

/// A `cm_jobs` row as stored: its JSON columns as text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRow {
    pub job_id: String,
    pub seq: i64,
    pub job_type: String,
    pub digest: String,
    pub paras: String,
    pub user_name: String,
    pub status: String,
    pub plan: String,
    pub attachment: String,
    pub error_code: String,
    pub error_info: String,
    /// The resources it holds, comma-separated.
    pub resource: String,
    pub cancel_requested: bool,
    pub owner: String,
    pub owner_epoch: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The job a write is made for, and the fence it is driven under: a write
/// by a member that lost the job matches no row and is refused whole
/// ([`StoreError::Fenced`]).
#[derive(Clone, Copy, Debug)]
pub struct Holder<'a> {
    pub job_id: &'a str,
    pub fence: &'a Fence,
}

/// A `cm_machines` row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineRow {
    pub hostaddr: String,
    pub machine_type: String,
    pub port_range: String,
    pub rack_id: String,
    pub datadir: String,
    pub logdir: String,
    pub wal_log_dir: String,
    pub comp_datadir: String,
    pub total_mem: i64,
    pub total_cpu_cores: i64,
    /// `running` or `dead` (set_machine).
    pub node_stats: String,
    pub agent_port: i64,
    pub last_seen_at: i64,
}

/// A `cm_clusters` row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterRow {
    pub cluster_id: String,
    pub name: String,
    pub nick_name: String,
    pub ha_mode: String,
    pub shards: i64,
    pub nodes: i64,
    pub admin_user: String,
    /// Sealed like a job's passwords.
    pub admin_password: String,
    pub status: String,
    /// JSON: what every node of it is made with.
    pub settings: String,
}

/// A `cm_instances` row.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceRow {
    pub hostaddr: String,
    pub port: i64,
    pub cluster_id: String,
    pub shard: i64,
    pub node: i64,
    pub role: String,
    /// `reserved`, `running`, or `fenced` (an old primary kept read-only
    /// until it rejoins as a replica).
    pub state: String,
    /// Why it is in its state (a fenced node's errant transactions).
    pub note: String,
}

/// An id kind of `cm_ids`.
pub const CLUSTER_ID: &str = "cluster";
pub const SHARD_ID: &str = "shard";

const INSERT_JOB: &str = "INSERT INTO cm_jobs (job_id, seq, job_type, digest, paras, user_name, \
     status, plan, attachment, error_code, error_info, resource, cancel_requested, owner, \
     owner_epoch, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const SELECT_JOB: &str = "SELECT job_id, seq, job_type, digest, paras, user_name, status, plan, \
     attachment, error_code, error_info, resource, cancel_requested, owner, owner_epoch, \
     created_at, updated_at FROM cm_jobs WHERE job_id = ?";
const SELECT_UNFINISHED: &str = "SELECT job_id, seq, job_type, digest, paras, user_name, status, \
     plan, attachment, error_code, error_info, resource, cancel_requested, owner, owner_epoch, \
     created_at, updated_at FROM cm_jobs WHERE status NOT IN ('done', 'failed') ORDER BY seq";
const SELECT_RECENT: &str = "SELECT job_id, seq, job_type, digest, paras, user_name, status, \
     plan, attachment, error_code, error_info, resource, cancel_requested, owner, owner_epoch, \
     created_at, updated_at FROM cm_jobs ORDER BY seq DESC LIMIT 1000";
const MAX_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM cm_jobs";
const CLAIM: &str = "UPDATE cm_jobs SET owner = ?, owner_epoch = owner_epoch + 1 \
     WHERE job_id = ? AND owner_epoch = ? AND status NOT IN ('done', 'failed')";
const SAVE: &str = "UPDATE cm_jobs SET status = ?, plan = ?, attachment = ?, error_code = ?, \
     error_info = ?, updated_at = ? WHERE job_id = ? AND owner = ? AND owner_epoch = ?";
/// The fence of a write, its last three parameters: job, owner, epoch.
macro_rules! fenced {
    () => {
        "EXISTS (SELECT 1 FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?)"
    };
}
const HOLDS: &str = "SELECT 1 FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?";
const RELEASE_PORTS: &str = "DELETE FROM cm_reservations WHERE job_id = ?";
const CANCEL: &str = "UPDATE cm_jobs SET cancel_requested = 1, updated_at = ? \
     WHERE job_id = ? AND status IN ('accept', 'ongoing')";
const SWAP_ATTACHMENT: &str =
    "UPDATE cm_jobs SET attachment = ? WHERE job_id = ? AND attachment = ?";
const RESERVE_PORT: &str = "INSERT INTO cm_reservations (hostaddr, port, job_id) VALUES (?, ?, ?)";
const RESERVED_PORTS: &str = "SELECT hostaddr, port FROM cm_reservations";
const TAKE_ID: &str = "INSERT INTO cm_ids (kind, scope, id, job_id) VALUES (?, ?, ?, ?)";
const MAX_ID: &str = "SELECT COALESCE(MAX(id), 0) FROM cm_ids WHERE kind = ? AND scope = ?";

const INSERT_MACHINE: &str =
    "INSERT INTO cm_machines (hostaddr, machine_type, port_range, rack_id, datadir, \
     logdir, wal_log_dir, comp_datadir, total_mem, total_cpu_cores, node_stats, agent_port, \
     last_seen_at, created_at) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
     FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?";
const SELECT_MACHINES: &str = "SELECT hostaddr, machine_type, port_range, rack_id, datadir, \
     logdir, wal_log_dir, comp_datadir, total_mem, total_cpu_cores, node_stats, agent_port, \
     last_seen_at FROM cm_machines ORDER BY hostaddr";
const DELETE_MACHINE: &str = concat!("DELETE FROM cm_machines WHERE hostaddr = ? AND ", fenced!());
const SET_MACHINE_STATS: &str = concat!(
    "UPDATE cm_machines SET node_stats = ? WHERE hostaddr = ? AND ",
    fenced!()
);
const MACHINE_SEEN: &str = "UPDATE cm_machines SET last_seen_at = ? WHERE hostaddr = ?";

const INSERT_CLUSTER: &str =
    "INSERT INTO cm_clusters (cluster_id, name, nick_name, ha_mode, shards, \
     nodes, admin_user, admin_password, status, settings, created_at) \
     SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
     FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?";
const SELECT_CLUSTERS: &str =
    "SELECT cluster_id, name, nick_name, ha_mode, shards, nodes, admin_user, \
     admin_password, status, settings FROM cm_clusters ORDER BY created_at";
const SET_SHARDS: &str = concat!(
    "UPDATE cm_clusters SET shards = ? WHERE cluster_id = ? AND ",
    fenced!()
);
const SET_CLUSTER_STATUS: &str = concat!(
    "UPDATE cm_clusters SET status = ? WHERE cluster_id = ? AND ",
    fenced!()
);
const DELETE_CLUSTER: &str = concat!(
    "DELETE FROM cm_clusters WHERE cluster_id = ? AND ",
    fenced!()
);
const INSERT_INSTANCE: &str = "INSERT INTO cm_instances (hostaddr, port, cluster_id, shard_id, \
     node_index, role, state) SELECT ?, ?, ?, ?, ?, ?, ? \
     FROM cm_jobs WHERE job_id = ? AND owner = ? AND owner_epoch = ?";
const SELECT_INSTANCES: &str = "SELECT hostaddr, port, cluster_id, shard_id, node_index, role, \
     state, note FROM cm_instances ORDER BY cluster_id, shard_id, node_index";
const SET_INSTANCES_STATE: &str = concat!(
    "UPDATE cm_instances SET state = ? WHERE cluster_id = ? AND ",
    fenced!()
);
const DELETE_INSTANCES: &str = concat!(
    "DELETE FROM cm_instances WHERE cluster_id = ? AND ",
    fenced!()
);
const DELETE_INSTANCE: &str = concat!(
    "DELETE FROM cm_instances WHERE hostaddr = ? AND port = ? AND ",
    fenced!()
);

fn v<T: Into<SqlValue>>(x: T) -> SqlValue {
    x.into()
}

fn job(r: &[SqlValue]) -> JobRow {
    JobRow {
        job_id: r[0].text(),
        seq: r[1].int(),
        job_type: r[2].text(),
        digest: r[3].text(),
        paras: r[4].text(),
        user_name: r[5].text(),
        status: r[6].text(),
        plan: r[7].text(),
        attachment: r[8].text(),
        error_code: r[9].text(),
        error_info: r[10].text(),
        resource: r[11].text(),
        cancel_requested: r[12].int() != 0,
        owner: r[13].text(),
        owner_epoch: r[14].int(),
        created_at: r[15].int(),
        updated_at: r[16].int(),
    }
}

/// What a job takes when it is accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// `(machine, port)` reserved until the job ends.
    pub ports: Vec<(String, i64)>,
    /// `(kind, scope, id)`: taken for good.
    pub ids: Vec<(&'static str, String, i64)>,
}

/// Typed access to the cluster manager's rows.
#[derive(Clone)]
pub struct ClusterStore {
    store: Arc<dyn MetaStore>,
}

impl ClusterStore {
    pub fn new(store: Arc<dyn MetaStore>) -> ClusterStore {
        ClusterStore { store }
    }

    /// The store itself (its keys seal and open the clusters' passwords).
    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.store
    }

    // Jobs.

    /// Inserts a new job under the next sequence number (its `job_id` that
    /// number when the client chose none) with its claims, in one
    /// transaction. [`StoreError::Duplicate`]: the job id, the sequence
    /// number, a port or an id was taken meanwhile; nothing was stored.
    pub async fn accept(&self, mut row: JobRow, claims: &Claims) -> Result<JobRow, StoreError> {
        let seq = self.store.select(MAX_SEQ, vec![]).await?;
        row.seq = seq.first().map_or(0, |r| r[0].int()) + 1;
        if row.job_id.is_empty() {
            row.job_id = row.seq.to_string();
        }
        let mut stmts = vec![Stmt::new(
            INSERT_JOB,
            vec![
                v(row.job_id.as_str()),
                v(row.seq),
                v(row.job_type.as_str()),
                v(row.digest.as_str()),
                v(row.paras.as_str()),
                v(row.user_name.as_str()),
                v(row.status.as_str()),
                v(row.plan.as_str()),
                v(row.attachment.as_str()),
                v(row.error_code.as_str()),
                v(row.error_info.as_str()),
                v(row.resource.as_str()),
                v(i64::from(row.cancel_requested)),
                v(row.owner.as_str()),
                v(row.owner_epoch),
                v(row.created_at),
                v(row.updated_at),
            ],
        )];
        for (host, port) in &claims.ports {
            stmts.push(Stmt::new(
                RESERVE_PORT,
                vec![v(host.as_str()), v(*port), v(row.job_id.as_str())],
            ));
        }
        for (kind, scope, id) in &claims.ids {
            stmts.push(Stmt::new(
                TAKE_ID,
                vec![v(*kind), v(scope.as_str()), v(*id), v(row.job_id.as_str())],
            ));
        }
        self.store.transaction(stmts).await?;
        Ok(row)
    }

    pub async fn job(&self, job_id: &str) -> Result<Option<JobRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_JOB, vec![v(job_id)])
            .await?
            .first()
            .map(|r| job(r)))
    }

    /// Jobs not ended, oldest first.
    pub async fn unfinished(&self) -> Result<Vec<JobRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_UNFINISHED, vec![])
            .await?
            .iter()
            .map(|r| job(r))
            .collect())
    }

    /// The newest 1000 jobs, newest first.
    pub async fn recent(&self) -> Result<Vec<JobRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_RECENT, vec![])
            .await?
            .iter()
            .map(|r| job(r))
            .collect())
    }

    /// Takes an unfinished job seen at `seen_epoch` for `member`: its fence,
    /// or `None` when another member claimed it (or it ended) meanwhile.
    pub async fn claim(
        &self,
        job_id: &str,
        member: &str,
        seen_epoch: i64,
    ) -> Result<Option<Fence>, StoreError> {
        let n = self
            .store
            .execute(CLAIM, vec![v(member), v(job_id), v(seen_epoch)])
            .await?;
        Ok((n > 0).then(|| Fence {
            member: member.to_string(),
            epoch: seen_epoch + 1,
        }))
    }

    /// Saves a job's state if `fence` still holds it, else
    /// [`StoreError::Fenced`]; an ended job's reserved ports are let go
    /// after (its instances hold them from then on). One statement each,
    /// so no lock outlives a statement.
    pub async fn save(&self, row: &JobRow, fence: &Fence) -> Result<(), StoreError> {
        let saved = self
            .store
            .execute(
                SAVE,
                vec![
                    v(row.status.as_str()),
                    v(row.plan.as_str()),
                    v(row.attachment.as_str()),
                    v(row.error_code.as_str()),
                    v(row.error_info.as_str()),
                    v(chrono::Utc::now().timestamp_millis()),
                    v(row.job_id.as_str()),
                    v(fence.member.as_str()),
                    v(fence.epoch),
                ],
            )
            .await?;
        if saved == 0 {
            return Err(StoreError::Fenced {
                name: format!("cluster job {}", row.job_id),
                epoch: fence.epoch,
            });
        }
        if row.status == "done" || row.status == "failed" {
            self.store
                .execute(RELEASE_PORTS, vec![v(row.job_id.as_str())])
                .await?;
        }
        Ok(())
    }

    /// Asks an unfinished job to stop: whether it was unfinished.
    pub async fn request_cancel(&self, job_id: &str) -> Result<bool, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        Ok(self.store.execute(CANCEL, vec![v(now), v(job_id)]).await? > 0)
    }

    /// Replaces a job's attachment if it is still `seen`: whether this
    /// call replaced it (of several at once, exactly one does).
    pub async fn swap_attachment(
        &self,
        job_id: &str,
        seen: &str,
        new: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .execute(SWAP_ATTACHMENT, vec![v(new), v(job_id), v(seen)])
            .await?
            > 0)
    }

    /// Every `(machine, port)` an instance, a compute node or an unfinished
    /// job holds.
    pub async fn taken_ports(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut taken: Vec<(String, i64)> = self
            .instances()
            .await?
            .into_iter()
            .map(|i| (i.hostaddr, i.port))
            .collect();
        for r in self.store.select(RESERVED_PORTS, vec![]).await? {
            taken.push((r[0].text(), r[1].int()));
        }
        taken.extend(
            self.comps()
                .await?
                .into_iter()
                .map(|c| (c.hostaddr, c.port)),
        );
        Ok(taken)
    }

    /// The highest id of `kind` in `scope` ever taken.
    pub async fn max_id(&self, kind: &str, scope: &str) -> Result<i64, StoreError> {
        Ok(self
            .store
            .select(MAX_ID, vec![v(kind), v(scope)])
            .await?
            .first()
            .map_or(0, |r| r[0].int()))
    }

    // Machines.

    pub async fn machines(&self) -> Result<Vec<MachineRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_MACHINES, vec![])
            .await?
            .iter()
            .map(|r| MachineRow {
                hostaddr: r[0].text(),
                machine_type: r[1].text(),
                port_range: r[2].text(),
                rack_id: r[3].text(),
                datadir: r[4].text(),
                logdir: r[5].text(),
                wal_log_dir: r[6].text(),
                comp_datadir: r[7].text(),
                total_mem: r[8].int(),
                total_cpu_cores: r[9].int(),
                node_stats: r[10].text(),
                agent_port: r[11].int(),
                last_seen_at: r[12].int(),
            })
            .collect())
    }

    /// Runs each of `stmts` (their SQL ends with the fence's three
    /// parameters, added here) as one statement of its own: no lock is
    /// held between two, so a member frozen between them blocks no other.
    /// A statement that changed nothing is refused when `by` no longer
    /// holds its job ([`StoreError::Fenced`]); otherwise it was already so.
    async fn fenced(&self, by: &Holder<'_>, stmts: Vec<Stmt>) -> Result<(), StoreError> {
        for mut st in stmts {
            let fence = [v(by.job_id), v(by.fence.member.as_str()), v(by.fence.epoch)];
            st.params.extend(fence.iter().cloned());
            if self.store.execute(st.sql, st.params).await? == 0
                && self.store.select(HOLDS, fence.to_vec()).await?.is_empty()
            {
                return Err(StoreError::Fenced {
                    name: format!("cluster job {}", by.job_id),
                    epoch: by.fence.epoch,
                });
            }
        }
        Ok(())
    }

    /// Registers a machine; one registered already holds (a step run again).
    pub async fn insert_machine(&self, by: &Holder<'_>, m: &MachineRow) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let row = vec![
            v(m.hostaddr.as_str()),
            v(m.machine_type.as_str()),
            v(m.port_range.as_str()),
            v(m.rack_id.as_str()),
            v(m.datadir.as_str()),
            v(m.logdir.as_str()),
            v(m.wal_log_dir.as_str()),
            v(m.comp_datadir.as_str()),
            v(m.total_mem),
            v(m.total_cpu_cores),
            v(m.node_stats.as_str()),
            v(m.agent_port),
            v(now),
            v(now),
        ];
        match self.fenced(by, vec![Stmt::new(INSERT_MACHINE, row)]).await {
            Ok(_) | Err(StoreError::Duplicate(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_machine(&self, by: &Holder<'_>, host: &str) -> Result<(), StoreError> {
        self.fenced(by, vec![Stmt::new(DELETE_MACHINE, vec![v(host)])])
            .await
    }

    pub async fn set_machine_stats(
        &self,
        by: &Holder<'_>,
        host: &str,
        stats: &str,
    ) -> Result<(), StoreError> {
        self.fenced(
            by,
            vec![Stmt::new(SET_MACHINE_STATS, vec![v(stats), v(host)])],
        )
        .await
    }

    pub async fn machine_seen(&self, host: &str, at: i64) -> Result<(), StoreError> {
        self.store
            .execute(MACHINE_SEEN, vec![v(at), v(host)])
            .await?;
        Ok(())
    }

    // Clusters and instances.

    pub async fn clusters(&self) -> Result<Vec<ClusterRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_CLUSTERS, vec![])
            .await?
            .iter()
            .map(|r| ClusterRow {
                cluster_id: r[0].text(),
                name: r[1].text(),
                nick_name: r[2].text(),
                ha_mode: r[3].text(),
                shards: r[4].int(),
                nodes: r[5].int(),
                admin_user: r[6].text(),
                admin_password: r[7].text(),
                status: r[8].text(),
                settings: r[9].text(),
            })
            .collect())
    }

    /// Stores a cluster's row; one stored already holds.
    pub async fn insert_cluster(&self, by: &Holder<'_>, c: &ClusterRow) -> Result<(), StoreError> {
        let row = vec![
            v(c.cluster_id.as_str()),
            v(c.name.as_str()),
            v(c.nick_name.as_str()),
            v(c.ha_mode.as_str()),
            v(c.shards),
            v(c.nodes),
            v(c.admin_user.as_str()),
            v(c.admin_password.as_str()),
            v(c.status.as_str()),
            v(c.settings.as_str()),
            v(chrono::Utc::now().timestamp_millis()),
        ];
        match self.fenced(by, vec![Stmt::new(INSERT_CLUSTER, row)]).await {
            Ok(_) | Err(StoreError::Duplicate(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn set_shards(
        &self,
        by: &Holder<'_>,
        cluster_id: &str,
        shards: i64,
    ) -> Result<(), StoreError> {
        self.fenced(
            by,
            vec![Stmt::new(SET_SHARDS, vec![v(shards), v(cluster_id)])],
        )
        .await
    }

    /// The cluster's status and every instance's state.
    pub async fn set_cluster_status(
        &self,
        by: &Holder<'_>,
        cluster_id: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        self.fenced(
            by,
            vec![
                Stmt::new(SET_CLUSTER_STATUS, vec![v(status), v(cluster_id)]),
                Stmt::new(SET_INSTANCES_STATE, vec![v(status), v(cluster_id)]),
            ],
        )
        .await
    }

    /// The cluster's row and its instances' rows.
    pub async fn delete_cluster(
        &self,
        by: &Holder<'_>,
        cluster_id: &str,
    ) -> Result<(), StoreError> {
        self.fenced(
            by,
            vec![
                Stmt::new(DELETE_INSTANCES, vec![v(cluster_id)]),
                Stmt::new(DELETE_CLUSTER, vec![v(cluster_id)]),
            ],
        )
        .await
    }

    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        Ok(self
            .store
            .select(SELECT_INSTANCES, vec![])
            .await?
            .iter()
            .map(|r| InstanceRow {
                hostaddr: r[0].text(),
                port: r[1].int(),
                cluster_id: r[2].text(),
                shard: r[3].int(),
                node: r[4].int(),
                role: r[5].text(),
                state: r[6].text(),
                note: r[7].text(),
            })
            .collect())
    }

    /// Stores an instance's row; one stored already holds.
    pub async fn insert_instance(
        &self,
        by: &Holder<'_>,
        i: &InstanceRow,
    ) -> Result<(), StoreError> {
        let row = vec![
            v(i.hostaddr.as_str()),
            v(i.port),
            v(i.cluster_id.as_str()),
            v(i.shard.to_string().as_str()),
            v(i.node),
            v(i.role.as_str()),
            v(i.state.as_str()),
        ];
        match self.fenced(by, vec![Stmt::new(INSERT_INSTANCE, row)]).await {
            Ok(_) | Err(StoreError::Duplicate(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_instance(
        &self,
        by: &Holder<'_>,
        host: &str,
        port: i64,
    ) -> Result<(), StoreError> {
        self.fenced(by, vec![Stmt::new(DELETE_INSTANCE, vec![v(host), v(port)])])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(job_id: &str) -> JobRow {
        JobRow {
            job_id: job_id.into(),
            job_type: "test".into(),
            status: "accept".into(),
            plan: "{}".into(),
            attachment: "null".into(),
            paras: "{}".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn claims_are_taken_once_and_saves_are_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let meta =
            crate::store::SqliteStore::open(dir.path(), Arc::new(crate::store::Sealer::default()))
                .await
                .unwrap();
        let s = ClusterStore::new(Arc::new(meta));
        let claims = Claims {
            ports: vec![("h".into(), 46000)],
            ids: vec![(CLUSTER_ID, String::new(), 1)],
        };
        let a = s.accept(row(""), &claims).await.unwrap();
        assert_eq!(a.job_id, "1");
        // The same port, or the same id, again: refused whole.
        let port_again = Claims {
            ports: vec![("h".into(), 46000)],
            ids: vec![],
        };
        assert!(matches!(
            s.accept(row("x"), &port_again).await,
            Err(StoreError::Duplicate(_))
        ));
        assert!(s.job("x").await.unwrap().is_none());
        assert_eq!(s.taken_ports().await.unwrap(), vec![("h".into(), 46000)]);
        assert_eq!(s.max_id(CLUSTER_ID, "").await.unwrap(), 1);
        // Claimed twice from the same sight: one wins; the loser's save fails.
        let first = s.claim("1", "m1", 0).await.unwrap().unwrap();
        assert!(s.claim("1", "m2", 0).await.unwrap().is_none());
        let second = s.claim("1", "m2", first.epoch).await.unwrap().unwrap();
        let mut j = s.job("1").await.unwrap().unwrap();
        j.status = "ongoing".into();
        assert!(matches!(
            s.save(&j, &first).await,
            Err(StoreError::Fenced { .. })
        ));
        s.save(&j, &second).await.unwrap();
        // The rows its steps write are fenced the same way.
        let machine = MachineRow {
            hostaddr: "h".into(),
            ..Default::default()
        };
        let lost = Holder {
            job_id: "1",
            fence: &first,
        };
        assert!(matches!(
            s.insert_machine(&lost, &machine).await,
            Err(StoreError::Fenced { .. })
        ));
        assert!(s.machines().await.unwrap().is_empty());
        let holds = Holder {
            job_id: "1",
            fence: &second,
        };
        s.insert_machine(&holds, &machine).await.unwrap();
        s.insert_machine(&holds, &machine).await.unwrap();
        assert_eq!(s.machines().await.unwrap().len(), 1);
        // Ended: its ports are let go with the save.
        j.status = "done".into();
        s.save(&j, &second).await.unwrap();
        assert!(s.taken_ports().await.unwrap().is_empty());
    }
}
