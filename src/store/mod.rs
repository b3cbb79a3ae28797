//! The meta store: where jobs, their state and their progress live across
//! restarts. The only module that knows the metadata SQL.
//!
//! One trait, [`MetaStore`], two backends: SQLite (embedded, the default) and
//! MySQL/MariaDB (so that several syncers can share one store). Both run the
//! same versioned migrations ([`MIGRATIONS`]) and store a job as one row of
//! `ccr_jobs`. The spec is kept as JSON *without* its passwords (the spec's
//! serializer masks them); the passwords sit in their own columns, written and
//! read only here, because the service must log in again after a restart.
//! With a key file they are sealed there ([`Sealer`]): on open, every password
//! not yet sealed with the current key (clear text, or sealed with the
//! previous key) is sealed again, after every one has been read, so a wrong
//! or missing key stops the start and overwrites nothing.
//!
//! How far a job has *applied* lives on the destination, in its checkpoint
//! table; this store holds what the job is and what state it is in.

pub mod cluster;
pub mod group;
mod mysql;
mod sqlite;

pub use group::{GroupStore, Lease};
pub use mysql::MysqlStore;
pub use sqlite::SqliteStore;

use crate::config::StoreConfig;
use crate::job::spec::JobSpec;
use crate::job::state::{JobStatus, Progress, ProgressState, RunState};
use crate::secret::{is_sealed, Keys, Secret};
use async_trait::async_trait;
use std::sync::Arc;

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub status: JobStatus,
    pub progress: Progress,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job {0} already exists")]
    Duplicate(String),
    #[error("job {0} does not exist")]
    NotFound(String),
    #[error("meta store schema version {found} is newer than this ccr-syncer knows ({known}); upgrade ccr-syncer")]
    TooNew { found: i64, known: i64 },
    #[error("meta store row for job {name} is unreadable: {message}")]
    Corrupt { name: String, message: String },
    #[error("meta store error: {0}")]
    Backend(String),
    /// The store's passwords cannot be read with the keys given.
    #[error("{0}")]
    Key(String),
    /// A write for a job by a member that no longer holds its lease.
    #[error("job {name}: this member no longer holds the job's lease (epoch {epoch}); another member owns it now")]
    Fenced { name: String, epoch: i64 },
}

/// Who may write a job: the member holding its lease, at the lease's epoch.
/// Every save of a job's state names it, and the store refuses a save whose
/// fence is not the job's current lease ([`StoreError::Fenced`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub member: String,
    pub epoch: i64,
}

/// A value bound to, or read from, one of `group`'s statements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqlValue {
    Int(i64),
    Text(String),
    Null,
}

impl SqlValue {
    pub(crate) fn int(&self) -> i64 {
        match self {
            SqlValue::Int(i) => *i,
            SqlValue::Text(t) => t.parse().unwrap_or(0),
            SqlValue::Null => 0,
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            SqlValue::Int(i) => i.to_string(),
            SqlValue::Text(t) => t.clone(),
            SqlValue::Null => String::new(),
        }
    }
}

impl From<&str> for SqlValue {
    fn from(s: &str) -> Self {
        SqlValue::Text(s.to_string())
    }
}

impl From<i64> for SqlValue {
    fn from(i: i64) -> Self {
        SqlValue::Int(i)
    }
}

#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Stores a new job; [`StoreError::Duplicate`] if the name is taken.
    async fn insert_job(&self, job: &JobRecord) -> Result<(), StoreError>;
    /// Every stored job, ordered by name.
    async fn load_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// Saves a job's status and progress, if `fence` still holds the job.
    async fn save_status(
        &self,
        name: &str,
        fence: &Fence,
        status: JobStatus,
        progress: &Progress,
        updated_at: i64,
    ) -> Result<(), StoreError>;
    /// Saves a changed spec (host mappings are updated in place), if
    /// `fence` still holds the job.
    async fn save_spec(
        &self,
        spec: &JobSpec,
        fence: &Fence,
        updated_at: i64,
    ) -> Result<(), StoreError>;
    /// Deletes a job; false if there was none.
    async fn delete_job(&self, name: &str) -> Result<bool, StoreError>;
    /// The store's clock in unix milliseconds: for MySQL the server's, one
    /// clock for every member of a group whatever their own say.
    async fn now_ms(&self) -> Result<i64, StoreError>;
    /// Whether several syncers can share this store (MySQL), or it is a
    /// group of one (SQLite).
    fn shared(&self) -> bool;
    /// Runs one of [`group`]'s statements; the number of rows it matched.
    /// A duplicate key is [`StoreError::Duplicate`] (with no name).
    async fn execute(&self, sql: &'static str, params: Vec<SqlValue>) -> Result<u64, StoreError>;
    /// The stored form of a password that is not a job's (the cluster
    /// manager's accounts), sealed like a job's under `name`/`side`.
    fn seal_secret(&self, name: &str, side: &str, plain: &Secret) -> Result<String, StoreError>;
    /// The clear text of what [`MetaStore::seal_secret`] stored.
    fn open_secret(&self, name: &str, side: &str, stored: &str) -> Result<Secret, StoreError>;
    /// Runs `stmts` in one transaction, in order: all of them or none (a
    /// duplicate key rolls it back as [`StoreError::Duplicate`]).
    async fn transaction(&self, stmts: Vec<Stmt>) -> Result<(), StoreError>;
    /// Runs one of [`group`]'s queries.
    async fn select(
        &self,
        sql: &'static str,
        params: Vec<SqlValue>,
    ) -> Result<Vec<Vec<SqlValue>>, StoreError>;
}

/// One statement of a [`MetaStore::transaction`].
#[derive(Clone, Debug)]
pub struct Stmt {
    pub sql: &'static str,
    pub params: Vec<SqlValue>,
}

impl Stmt {
    pub fn new(sql: &'static str, params: Vec<SqlValue>) -> Stmt {
        Stmt { sql, params }
    }
}

/// Why a fenced save matched no row: the job is gone, or another lease holds it.
pub(crate) fn unsaved(name: &str, fence: &Fence, exists: bool) -> StoreError {
    if exists {
        StoreError::Fenced {
            name: name.to_string(),
            epoch: fence.epoch,
        }
    } else {
        StoreError::NotFound(name.to_string())
    }
}

/// Opens the configured store, brings its schema up to date and seals its
/// passwords with the current key (if any).
pub async fn open(config: &StoreConfig, keys: Keys) -> Result<Arc<dyn MetaStore>, StoreError> {
    let sealer = Arc::new(Sealer { keys });
    Ok(match config {
        StoreConfig::Sqlite { dir } => Arc::new(SqliteStore::open(dir, sealer).await?),
        StoreConfig::Mysql { .. } => Arc::new(MysqlStore::open(config, sealer).await?),
    })
}

/// Seals and opens the passwords of `ccr_jobs` rows with the store's keys.
#[derive(Debug, Default)]
pub struct Sealer {
    keys: Keys,
}

/// Prefix of a clear password that starts like a stored form.
const CLEAR: &str = "clr1:";

/// A row's passwords to write again: name, src, dest.
pub(crate) type Resealed = (String, String, String);

impl Sealer {
    fn context(name: &str, side: &str) -> String {
        format!("ccr_jobs/{name}/{side}")
    }

    /// The stored form of a password. In clear, one that could be taken
    /// for a stored form (it starts with `enc1:` or `clr1:`) is written
    /// behind `clr1:`.
    pub(crate) fn seal(
        &self,
        name: &str,
        side: &str,
        plain: &Secret,
    ) -> Result<String, StoreError> {
        match &self.keys.current {
            Some(key) => key
                .seal(&Self::context(name, side), plain.expose())
                .map_err(StoreError::Key),
            None if is_sealed(plain.expose()) || plain.expose().starts_with(CLEAR) => {
                Ok(format!("{CLEAR}{}", plain.expose()))
            }
            None => Ok(plain.expose().to_string()),
        }
    }

    /// The clear text of a stored password, and whether it must be written
    /// again (it is not sealed with the current key).
    fn open_stored(
        &self,
        name: &str,
        side: &str,
        stored: &str,
    ) -> Result<(String, bool), StoreError> {
        if !is_sealed(stored) {
            let plain = stored.strip_prefix(CLEAR).unwrap_or(stored);
            return Ok((plain.to_string(), self.keys.current.is_some()));
        }
        let context = Self::context(name, side);
        if let Some(plain) = self
            .keys
            .current
            .as_ref()
            .and_then(|k| k.open(&context, stored))
        {
            return Ok((plain, false));
        }
        if let Some(plain) = self
            .keys
            .previous
            .as_ref()
            .and_then(|k| k.open(&context, stored))
        {
            return Ok((plain, true));
        }
        Err(StoreError::Key(
            match (&self.keys.current, &self.keys.previous) {
                (None, _) => format!(
                    "the store's passwords are encrypted (job {name}): start with \
                 --secret-key-file (or secret_key_file) naming the key they were encrypted with"
                ),
                (Some(k), None) => format!(
                    "the key in {} does not decrypt the {side} password of job {name}: wrong key? \
                 To change keys, give the old one as --previous-secret-key-file",
                    k.path().display()
                ),
                (Some(k), Some(p)) => format!(
                    "neither {} nor {} decrypts the {side} password of job {name}",
                    k.path().display(),
                    p.path().display()
                ),
            },
        ))
    }

    pub(crate) fn open(&self, name: &str, side: &str, stored: &str) -> Result<Secret, StoreError> {
        self.open_stored(name, side, stored)
            .map(|(plain, _)| Secret::new(plain))
    }

    /// The rows whose passwords must be written again with the current key;
    /// an error (and nothing to write) if any password cannot be read.
    pub(crate) fn reseal(
        &self,
        rows: &[(String, String, String)],
    ) -> Result<Vec<Resealed>, StoreError> {
        let mut out = Vec::new();
        for (name, src, dest) in rows {
            let (src_plain, src_again) = self.open_stored(name, "src", src)?;
            let (dest_plain, dest_again) = self.open_stored(name, "dest", dest)?;
            if src_again || dest_again {
                out.push((
                    name.clone(),
                    self.seal(name, "src", &Secret::new(src_plain))?,
                    self.seal(name, "dest", &Secret::new(dest_plain))?,
                ));
            }
        }
        Ok(out)
    }

    /// The cluster manager's administrative passwords (`cm_clusters`: id,
    /// stored form) to write again with the current key.
    pub(crate) fn reseal_clusters(
        &self,
        rows: &[(String, String)],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        for (id, stored) in rows {
            let name = format!("cm_clusters/{id}");
            let (plain, again) = self.open_stored(&name, "admin", stored)?;
            if again {
                out.push((id.clone(), self.seal(&name, "admin", &Secret::new(plain))?));
            }
        }
        Ok(out)
    }
}

pub(crate) const SELECT_CLUSTER_PASSWORDS: &str =
    "SELECT cluster_id, admin_password FROM cm_clusters ORDER BY cluster_id";
pub(crate) const UPDATE_CLUSTER_PASSWORD: &str =
    "UPDATE cm_clusters SET admin_password = ? WHERE cluster_id = ?";
pub(crate) const SELECT_PASSWORDS: &str =
    "SELECT name, src_password, dest_password FROM ccr_jobs ORDER BY name";
pub(crate) const UPDATE_PASSWORDS: &str =
    "UPDATE ccr_jobs SET src_password = ?, dest_password = ? WHERE name = ?";

/// The schema, one entry per version; the same statements run on both
/// backends (column types that SQLite and MySQL read alike).
pub(crate) const MIGRATIONS: &[&[&str]] = &[
    // 1: jobs.
    &["CREATE TABLE ccr_jobs (
        name VARCHAR(128) NOT NULL PRIMARY KEY,
        spec MEDIUMTEXT NOT NULL,
        src_password MEDIUMTEXT NOT NULL,
        dest_password MEDIUMTEXT NOT NULL,
        run_state VARCHAR(16) NOT NULL,
        progress_state VARCHAR(32) NOT NULL,
        progress MEDIUMTEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )"],
    // 2: the group: members, the leader, switches; a lease on every job.
    &[
        "ALTER TABLE ccr_jobs ADD COLUMN owner VARCHAR(255) NOT NULL DEFAULT ''",
        "ALTER TABLE ccr_jobs ADD COLUMN owner_epoch BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE ccr_jobs ADD COLUMN lease_expires_at BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE ccr_jobs ADD COLUMN release_requested INT NOT NULL DEFAULT 0",
        "CREATE TABLE ccr_members (
            id VARCHAR(255) NOT NULL PRIMARY KEY,
            address VARCHAR(512) NOT NULL,
            member_type INT NOT NULL,
            state VARCHAR(16) NOT NULL,
            incarnation VARCHAR(64) NOT NULL,
            heartbeat_at BIGINT NOT NULL,
            joined_at BIGINT NOT NULL
        )",
        "CREATE TABLE ccr_leader (
            id INT NOT NULL PRIMARY KEY,
            holder VARCHAR(255) NOT NULL,
            term BIGINT NOT NULL,
            expires_at BIGINT NOT NULL
        )",
        "INSERT INTO ccr_leader (id, holder, term, expires_at) VALUES (1, '', 0, 0)",
        "CREATE TABLE ccr_switches (
            name VARCHAR(64) NOT NULL PRIMARY KEY,
            value VARCHAR(16) NOT NULL,
            updated_at BIGINT NOT NULL
        )",
    ],
    // 3: the cluster manager: its jobs, machines and instances.
    &[
        "CREATE TABLE cm_jobs (
            job_id VARCHAR(128) NOT NULL PRIMARY KEY,
            seq BIGINT NOT NULL UNIQUE,
            job_type VARCHAR(64) NOT NULL,
            digest VARCHAR(64) NOT NULL,
            paras MEDIUMTEXT NOT NULL,
            user_name VARCHAR(255) NOT NULL,
            status VARCHAR(16) NOT NULL,
            plan MEDIUMTEXT NOT NULL,
            attachment MEDIUMTEXT NOT NULL,
            error_code VARCHAR(16) NOT NULL,
            error_info MEDIUMTEXT NOT NULL,
            resource VARCHAR(255) NOT NULL,
            cancel_requested INT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )",
        "CREATE TABLE cm_machines (
            hostaddr VARCHAR(255) NOT NULL PRIMARY KEY,
            machine_type VARCHAR(32) NOT NULL,
            port_range VARCHAR(32) NOT NULL,
            rack_id VARCHAR(64) NOT NULL,
            datadir VARCHAR(1024) NOT NULL,
            logdir VARCHAR(1024) NOT NULL,
            wal_log_dir VARCHAR(1024) NOT NULL,
            comp_datadir VARCHAR(1024) NOT NULL,
            total_mem BIGINT NOT NULL,
            total_cpu_cores BIGINT NOT NULL,
            node_stats VARCHAR(16) NOT NULL,
            agent_port BIGINT NOT NULL,
            last_seen_at BIGINT NOT NULL,
            created_at BIGINT NOT NULL
        )",
        "CREATE TABLE cm_instances (
            hostaddr VARCHAR(255) NOT NULL,
            port BIGINT NOT NULL,
            cluster_id VARCHAR(64) NOT NULL,
            shard_id VARCHAR(64) NOT NULL,
            node_index BIGINT NOT NULL,
            role VARCHAR(16) NOT NULL,
            state VARCHAR(16) NOT NULL,
            PRIMARY KEY (hostaddr, port)
        )",
        "CREATE TABLE cm_clusters (
            cluster_id VARCHAR(64) NOT NULL PRIMARY KEY,
            name VARCHAR(255) NOT NULL UNIQUE,
            nick_name VARCHAR(255) NOT NULL,
            ha_mode VARCHAR(16) NOT NULL,
            shards BIGINT NOT NULL,
            nodes BIGINT NOT NULL,
            admin_user VARCHAR(255) NOT NULL,
            admin_password MEDIUMTEXT NOT NULL,
            status VARCHAR(16) NOT NULL,
            settings MEDIUMTEXT NOT NULL,
            created_at BIGINT NOT NULL
        )",
    ],
    // 4: cluster jobs fenced by their owner's epoch; ports and ids handed
    // out by the store (a key per reserved port, per cluster id, per shard
    // id), so that members accepting at once never hand out one twice.
    &[
        "ALTER TABLE cm_jobs ADD COLUMN owner VARCHAR(255) NOT NULL DEFAULT ''",
        "ALTER TABLE cm_jobs ADD COLUMN owner_epoch BIGINT NOT NULL DEFAULT 0",
        "CREATE TABLE cm_reservations (
            hostaddr VARCHAR(255) NOT NULL,
            port BIGINT NOT NULL,
            job_id VARCHAR(128) NOT NULL,
            PRIMARY KEY (hostaddr, port)
        )",
        "CREATE TABLE cm_ids (
            kind VARCHAR(16) NOT NULL,
            scope VARCHAR(64) NOT NULL,
            id BIGINT NOT NULL,
            job_id VARCHAR(128) NOT NULL,
            PRIMARY KEY (kind, scope, id)
        )",
    ],
    // 5: failover: the journal of promotions, operators' holds on
    // automatic switchover, and a note on each instance (why it is fenced).
    &[
        "CREATE TABLE cm_failovers (
            job_id VARCHAR(128) NOT NULL PRIMARY KEY,
            cluster_id VARCHAR(64) NOT NULL,
            shard_id BIGINT NOT NULL,
            kind VARCHAR(16) NOT NULL,
            reason MEDIUMTEXT NOT NULL,
            old_primary VARCHAR(255) NOT NULL,
            new_primary VARCHAR(255) NOT NULL,
            gtid_position MEDIUMTEXT NOT NULL,
            failed_at BIGINT NOT NULL,
            detected_at BIGINT NOT NULL,
            promoted_at BIGINT NOT NULL,
            acked_at BIGINT NOT NULL
        )",
        "CREATE TABLE cm_shard_holds (
            cluster_id VARCHAR(64) NOT NULL,
            shard_id BIGINT NOT NULL,
            noswitch_until BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (cluster_id, shard_id)
        )",
        "ALTER TABLE cm_instances ADD COLUMN note VARCHAR(1024) NOT NULL DEFAULT ''",
    ],
    // 6: the compute layer: compute nodes (with how far their binlog's DDL
    // was followed) and the catalog of where each table's rows live.
    &[
        "CREATE TABLE cm_comps (
            hostaddr VARCHAR(255) NOT NULL,
            port BIGINT NOT NULL,
            cluster_id VARCHAR(64) NOT NULL,
            comp_id BIGINT NOT NULL,
            name VARCHAR(64) NOT NULL,
            state VARCHAR(16) NOT NULL,
            ddl_pos MEDIUMTEXT NOT NULL,
            PRIMARY KEY (hostaddr, port)
        )",
        "CREATE TABLE cm_tables (
            cluster_id VARCHAR(64) NOT NULL,
            db_name VARCHAR(64) NOT NULL,
            table_name VARCHAR(64) NOT NULL,
            placement MEDIUMTEXT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (cluster_id, db_name, table_name)
        )",
    ],
];

pub(crate) const VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS ccr_schema_version (version BIGINT NOT NULL)";

/// The statements that take a store from `current` to the newest version.
pub(crate) fn pending_migrations(
    current: i64,
) -> Result<Vec<(i64, &'static [&'static str])>, StoreError> {
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    Ok(MIGRATIONS
        .iter()
        .enumerate()
        .map(|(i, stmts)| (i as i64 + 1, *stmts))
        .filter(|(v, _)| *v > current)
        .collect())
}

/// A `ccr_jobs` row, as both backends read and write it.
pub(crate) struct JobRow {
    pub name: String,
    pub spec: String,
    pub src_password: String,
    pub dest_password: String,
    pub run_state: String,
    pub progress_state: String,
    pub progress: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub(crate) const SELECT_JOBS: &str = "SELECT name, spec, src_password, dest_password, run_state, \
     progress_state, progress, created_at, updated_at FROM ccr_jobs ORDER BY name";
pub(crate) const INSERT_JOB: &str = "INSERT INTO ccr_jobs (name, spec, src_password, dest_password, \
     run_state, progress_state, progress, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub(crate) const UPDATE_STATUS: &str = "UPDATE ccr_jobs SET run_state = ?, progress_state = ?, \
     progress = ?, updated_at = ? WHERE name = ? AND owner = ? AND owner_epoch = ?";
pub(crate) const UPDATE_SPEC: &str = "UPDATE ccr_jobs SET spec = ?, src_password = ?, \
     dest_password = ?, updated_at = ? WHERE name = ? AND owner = ? AND owner_epoch = ?";
pub(crate) const JOB_EXISTS: &str = "SELECT 1 FROM ccr_jobs WHERE name = ?";
pub(crate) const DELETE_JOB: &str = "DELETE FROM ccr_jobs WHERE name = ?";

pub(crate) fn encode_spec(spec: &JobSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|e| StoreError::Backend(format!("encoding job spec: {e}")))
}

/// A changed spec's columns: the spec (without passwords) and both
/// passwords as stored.
pub(crate) fn spec_columns(
    spec: &JobSpec,
    sealer: &Sealer,
) -> Result<(String, String, String), StoreError> {
    Ok((
        encode_spec(spec)?,
        sealer.seal(&spec.name, "src", &spec.src.password)?,
        sealer.seal(&spec.name, "dest", &spec.dest.password)?,
    ))
}

pub(crate) fn encode_progress(progress: &Progress) -> Result<String, StoreError> {
    serde_json::to_string(progress)
        .map_err(|e| StoreError::Backend(format!("encoding job progress: {e}")))
}

pub(crate) fn encode(job: &JobRecord, sealer: &Sealer) -> Result<JobRow, StoreError> {
    let name = &job.spec.name;
    Ok(JobRow {
        name: name.clone(),
        spec: encode_spec(&job.spec)?,
        src_password: sealer.seal(name, "src", &job.spec.src.password)?,
        dest_password: sealer.seal(name, "dest", &job.spec.dest.password)?,
        run_state: job.status.run_state.as_str().to_string(),
        progress_state: job.status.progress_state.as_str().to_string(),
        progress: encode_progress(&job.progress)?,
        created_at: job.created_at,
        updated_at: job.updated_at,
    })
}

pub(crate) fn decode(row: JobRow, sealer: &Sealer) -> Result<JobRecord, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        name: row.name.clone(),
        message,
    };
    let mut spec: JobSpec =
        serde_json::from_str(&row.spec).map_err(|e| corrupt(format!("spec: {e}")))?;
    spec.src.password = sealer.open(&row.name, "src", &row.src_password)?;
    spec.dest.password = sealer.open(&row.name, "dest", &row.dest_password)?;
    let run_state = RunState::parse(&row.run_state)
        .ok_or_else(|| corrupt(format!("unknown run state {:?}", row.run_state)))?;
    let progress_state = ProgressState::parse(&row.progress_state)
        .ok_or_else(|| corrupt(format!("unknown progress state {:?}", row.progress_state)))?;
    let progress: Progress =
        serde_json::from_str(&row.progress).map_err(|e| corrupt(format!("progress: {e}")))?;
    Ok(JobRecord {
        spec,
        status: JobStatus {
            run_state,
            progress_state,
        },
        progress,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::tests::spec;
    use crate::job::spec::SyncType;

    #[test]
    fn row_round_trip_keeps_passwords_out_of_the_spec_column() {
        let job = JobRecord {
            spec: spec("j"),
            status: JobStatus::initial(SyncType::Db),
            progress: Progress {
                commit_seq: Some(3),
                ..Progress::default()
            },
            created_at: 1,
            updated_at: 2,
        };
        let sealer = Sealer::default();
        let row = encode(&job, &sealer).unwrap();
        assert!(!row.spec.contains("\"pw\""));
        assert_eq!(row.src_password, "pw");
        assert_eq!(decode(row, &sealer).unwrap(), job);
    }

    #[test]
    fn keys_seal_reseal_and_refuse() {
        use crate::secret::{generate_key_file, Key};
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        generate_key_file(&a).unwrap();
        generate_key_file(&b).unwrap();
        let with = |current: Option<&std::path::Path>, previous: Option<&std::path::Path>| Sealer {
            keys: Keys {
                current: current.map(|p| Key::read(p).unwrap()),
                previous: previous.map(|p| Key::read(p).unwrap()),
            },
        };
        let plain = vec![("j".to_string(), "spw1".to_string(), "dpw1".to_string())];
        // A clear store meets key a: both passwords are sealed.
        let sealed = with(Some(&a), None).reseal(&plain).unwrap();
        assert_eq!(sealed.len(), 1);
        let (_, s, d) = &sealed[0];
        assert!(is_sealed(s) && is_sealed(d) && !s.contains("spw1"));
        let rows = vec![("j".to_string(), s.clone(), d.clone())];
        assert!(with(Some(&a), None).reseal(&rows).unwrap().is_empty());
        assert_eq!(
            with(Some(&a), None).open("j", "src", s).unwrap().expose(),
            "spw1"
        );
        // No key, or the wrong one: refused.
        let e = with(None, None).reseal(&rows).unwrap_err().to_string();
        assert!(e.contains("--secret-key-file"), "{e}");
        let e = with(Some(&b), None).reseal(&rows).unwrap_err().to_string();
        assert!(e.contains("wrong key"), "{e}");
        // Rotation: a as previous, b as current.
        let rotated = with(Some(&b), Some(&a)).reseal(&rows).unwrap();
        assert_eq!(rotated.len(), 1);
        assert_eq!(
            with(Some(&b), None)
                .open("j", "dest", &rotated[0].2)
                .unwrap()
                .expose(),
            "dpw1"
        );
        // A cluster's administrative password follows the same key.
        let clusters = vec![("3".to_string(), "admin-pw-1".to_string())];
        let sealed = with(Some(&a), None).reseal_clusters(&clusters).unwrap();
        assert!(is_sealed(&sealed[0].1) && !sealed[0].1.contains("admin-pw-1"));
        let rotated = with(Some(&b), Some(&a)).reseal_clusters(&sealed).unwrap();
        assert_eq!(
            with(Some(&b), None)
                .open("cm_clusters/3", "admin", &rotated[0].1)
                .unwrap()
                .expose(),
            "admin-pw-1"
        );
        assert!(with(Some(&b), None)
            .reseal_clusters(&rotated)
            .unwrap()
            .is_empty());
        // A sealed password does not open as another job's.
        assert!(with(Some(&a), None).open("k", "src", s).is_err());
        // A clear password that looks sealed stays a clear password.
        let none = with(None, None);
        for odd in ["enc1:abcd", "clr1:x", "plain"] {
            let stored = none.seal("j", "src", &Secret::new(odd)).unwrap();
            assert_eq!(none.open("j", "src", &stored).unwrap().expose(), odd);
        }
    }

    #[test]
    fn migrations_by_version() {
        assert_eq!(pending_migrations(0).unwrap().len(), MIGRATIONS.len());
        assert!(pending_migrations(MIGRATIONS.len() as i64)
            .unwrap()
            .is_empty());
        assert!(matches!(
            pending_migrations(MIGRATIONS.len() as i64 + 1),
            Err(StoreError::TooNew { .. })
        ));
    }
}
