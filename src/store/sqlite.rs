//! The embedded SQLite meta store: one file, `ccr.db`, in the configured folder.
//!
//! rusqlite is synchronous; every call runs on tokio's blocking pool with the
//! one connection behind a mutex. Writes are rare (a command, a state change)
//! and `synchronous=FULL` makes an acknowledged command survive a power cut.

use super::{
    decode, encode, encode_progress, pending_migrations, spec_columns, unsaved, Fence, JobRecord,
    JobRow, MetaStore, Sealer, SqlValue, StoreError, DELETE_JOB, INSERT_JOB, JOB_EXISTS,
    SELECT_CLUSTER_PASSWORDS, SELECT_JOBS, SELECT_PASSWORDS, UPDATE_CLUSTER_PASSWORD,
    UPDATE_PASSWORDS, UPDATE_SPEC, UPDATE_STATUS, VERSION_TABLE,
};
use crate::job::spec::JobSpec;
use crate::job::state::{JobStatus, Progress};
use crate::secret::Secret;
use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

pub const FILE_NAME: &str = "ccr.db";

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    sealer: Arc<Sealer>,
    /// `ccr.db.lock`, locked for as long as the store is open: one process
    /// per store file (the SQLite store is a group of one).
    _lock: std::fs::File,
}

/// Locks the store's folder for this process, or says who holds it.
fn lock_store(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(format!("{FILE_NAME}.lock"));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| backend(format!("opening {}: {e}", path.display())))?;
    // A lock this process just released can linger for a moment: a child
    // forked meanwhile (a test's `mariadbd`, a backup tool) shares the
    // descriptor until its exec closes it. Tried a little before refusing.
    let mut tries = 0;
    let mut locked = file.try_lock();
    while matches!(locked, Err(std::fs::TryLockError::WouldBlock)) && tries < 20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        tries += 1;
        locked = file.try_lock();
    }
    match locked {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(backend(format!(
                "the store {} is in use by another ccr-syncer (pid {}); the SQLite store \
                 serves one syncer: stop that one, give this one another --db-dir, or share \
                 a MySQL store (--db-type mysql) to run a group",
                dir.join(FILE_NAME).display(),
                holder.trim()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(backend(format!("locking {}: {e}", path.display())))
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

fn to_sql(v: SqlValue) -> rusqlite::types::Value {
    match v {
        SqlValue::Int(i) => rusqlite::types::Value::Integer(i),
        SqlValue::Text(t) => rusqlite::types::Value::Text(t),
        SqlValue::Null => rusqlite::types::Value::Null,
    }
}

fn from_sql(v: rusqlite::types::ValueRef<'_>) -> SqlValue {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Integer(i) => SqlValue::Int(i),
        ValueRef::Real(f) => SqlValue::Int(f as i64),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            SqlValue::Text(String::from_utf8_lossy(t).into_owned())
        }
        ValueRef::Null => SqlValue::Null,
    }
}

fn exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    conn.query_row(JOB_EXISTS, [name], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
        .map_err(backend)
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

impl SqliteStore {
    pub async fn open(dir: &Path, sealer: Arc<Sealer>) -> Result<Self, StoreError> {
        let dir = dir.to_path_buf();
        let keys = sealer.clone();
        let (conn, lock) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            let path = dir.join(FILE_NAME);
            private_file(&dir, &path)?;
            let lock = lock_store(&dir)?;
            let mut conn = Connection::open(&path)
                .map_err(|e| backend(format!("opening {}: {e}", path.display())))?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(backend)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(backend)?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(backend)?;
            // Deleted rows (a deleted job's passwords) are overwritten.
            conn.pragma_update(None, "secure_delete", "ON")
                .map_err(backend)?;
            migrate(&mut conn)?;
            reseal(&mut conn, &keys)?;
            Ok((conn, lock))
        })
        .await
        .map_err(backend)??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            sealer,
            _lock: lock,
        })
    }

    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock()))
            .await
            .map_err(backend)?
    }
}

/// The folder (0700) and the file (0600) are created private; one that
/// exists with wider permissions is left as it is, with a warning. SQLite
/// creates `-wal` and `-shm` with the file's permissions.
fn private_file(dir: &Path, path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| backend(format!("creating {}: {e}", dir.display())))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(backend(format!("creating {}: {e}", path.display()))),
    }
    for file in [
        path.to_path_buf(),
        path.with_extension("db-wal"),
        path.with_extension("db-shm"),
    ] {
        if let Ok(meta) = std::fs::metadata(&file) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %file.display(), mode = %format!("{mode:o}"),
                    "the store file can be read by other users and holds the jobs' passwords; chmod 600 it");
            }
        }
    }
    Ok(())
}

/// Seals every password not yet sealed with the current key, in one
/// transaction, after all have been read.
fn reseal(conn: &mut Connection, sealer: &Sealer) -> Result<(), StoreError> {
    let rows: Vec<(String, String, String)> = {
        let mut stmt = conn.prepare(SELECT_PASSWORDS).map_err(backend)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)?
    };
    let clusters: Vec<(String, String)> = {
        let mut stmt = conn.prepare(SELECT_CLUSTER_PASSWORDS).map_err(backend)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        rows.collect::<Result<_, _>>().map_err(backend)?
    };
    let again = sealer.reseal(&rows)?;
    let clusters_again = sealer.reseal_clusters(&clusters)?;
    if again.is_empty() && clusters_again.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction().map_err(backend)?;
    for (name, src, dest) in &again {
        tx.execute(UPDATE_PASSWORDS, params![src, dest, name])
            .map_err(backend)?;
    }
    for (id, stored) in &clusters_again {
        tx.execute(UPDATE_CLUSTER_PASSWORD, params![stored, id])
            .map_err(backend)?;
    }
    tx.commit().map_err(backend)?;
    // Leave no clear text behind in free pages or the WAL: rebuild the file
    // and empty the WAL.
    conn.execute("VACUUM", []).map_err(backend)?;
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .map_err(backend)?;
    if busy != 0 {
        tracing::warn!("the store's WAL could not be emptied after encrypting its passwords");
    }
    tracing::info!(
        jobs = again.len(),
        clusters = clusters_again.len(),
        "store passwords encrypted with the current key"
    );
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    tx.execute(VERSION_TABLE, []).map_err(backend)?;
    let current: Option<i64> = tx
        .query_row("SELECT MAX(version) FROM ccr_schema_version", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(backend)?
        .flatten();
    let current = current.unwrap_or(0);
    for (version, statements) in pending_migrations(current)? {
        for sql in statements {
            tx.execute(sql, []).map_err(backend)?;
        }
        tx.execute("DELETE FROM ccr_schema_version", [])
            .map_err(backend)?;
        tx.execute(
            "INSERT INTO ccr_schema_version (version) VALUES (?)",
            [version],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)
}

#[async_trait]
impl MetaStore for SqliteStore {
    fn seal_secret(&self, name: &str, side: &str, plain: &Secret) -> Result<String, StoreError> {
        self.sealer.seal(name, side, plain)
    }

    fn open_secret(&self, name: &str, side: &str, stored: &str) -> Result<Secret, StoreError> {
        self.sealer.open(name, side, stored)
    }

    async fn insert_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let row = encode(job, &self.sealer)?;
        self.with_conn(move |conn| {
            let result = conn.execute(
                INSERT_JOB,
                params![
                    row.name,
                    row.spec,
                    row.src_password,
                    row.dest_password,
                    row.run_state,
                    row.progress_state,
                    row.progress,
                    row.created_at,
                    row.updated_at
                ],
            );
            match result {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Duplicate(row.name))
                }
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn load_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let sealer = self.sealer.clone();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(SELECT_JOBS).map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(JobRow {
                        name: r.get(0)?,
                        spec: r.get(1)?,
                        src_password: r.get(2)?,
                        dest_password: r.get(3)?,
                        run_state: r.get(4)?,
                        progress_state: r.get(5)?,
                        progress: r.get(6)?,
                        created_at: r.get(7)?,
                        updated_at: r.get(8)?,
                    })
                })
                .map_err(backend)?;
            rows.map(|row| decode(row.map_err(backend)?, &sealer))
                .collect()
        })
        .await
    }

    async fn save_status(
        &self,
        name: &str,
        fence: &Fence,
        status: JobStatus,
        progress: &Progress,
        updated_at: i64,
    ) -> Result<(), StoreError> {
        let progress = encode_progress(progress)?;
        let name = name.to_string();
        let fence = fence.clone();
        self.with_conn(move |conn| {
            let n = conn
                .execute(
                    UPDATE_STATUS,
                    params![
                        status.run_state.as_str(),
                        status.progress_state.as_str(),
                        progress,
                        updated_at,
                        name,
                        fence.member,
                        fence.epoch
                    ],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(unsaved(&name, &fence, exists(conn, &name)?));
            }
            Ok(())
        })
        .await
    }

    async fn save_spec(
        &self,
        spec: &JobSpec,
        fence: &Fence,
        updated_at: i64,
    ) -> Result<(), StoreError> {
        let (encoded, src_password, dest_password) = spec_columns(spec, &self.sealer)?;
        let name = spec.name.clone();
        let fence = fence.clone();
        self.with_conn(move |conn| {
            let n = conn
                .execute(
                    UPDATE_SPEC,
                    params![
                        encoded,
                        src_password,
                        dest_password,
                        updated_at,
                        name,
                        fence.member,
                        fence.epoch
                    ],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(unsaved(&name, &fence, exists(conn, &name)?));
            }
            Ok(())
        })
        .await
    }

    async fn now_ms(&self) -> Result<i64, StoreError> {
        Ok(chrono::Utc::now().timestamp_millis())
    }

    fn shared(&self) -> bool {
        false
    }

    async fn execute(&self, sql: &'static str, params: Vec<SqlValue>) -> Result<u64, StoreError> {
        self.with_conn(move |conn| {
            let params = rusqlite::params_from_iter(params.into_iter().map(to_sql));
            match conn.execute(sql, params) {
                Ok(n) => Ok(n as u64),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Duplicate(String::new()))
                }
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn transaction(&self, stmts: Vec<super::Stmt>) -> Result<(), StoreError> {
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            for st in stmts {
                let params = rusqlite::params_from_iter(st.params.into_iter().map(to_sql));
                match tx.execute(st.sql, params) {
                    Ok(_) => {}
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == ErrorCode::ConstraintViolation =>
                    {
                        return Err(StoreError::Duplicate(String::new()))
                    }
                    Err(e) => return Err(backend(e)),
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn select(
        &self,
        sql: &'static str,
        params: Vec<SqlValue>,
    ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
            let width = stmt.column_count();
            let params = rusqlite::params_from_iter(params.into_iter().map(to_sql));
            let rows = stmt
                .query_map(params, |r| {
                    (0..width)
                        .map(|i| r.get_ref(i).map(from_sql))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn delete_job(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with_conn(move |conn| Ok(conn.execute(DELETE_JOB, [name]).map_err(backend)? > 0))
            .await
    }
}
