//! The embedded SQLite meta store: one file, `ccr.db`, in the configured folder.
//!
//! rusqlite is synchronous; every call runs on tokio's blocking pool with the
//! one connection behind a mutex. Writes are rare (a command, a state change)
//! and `synchronous=FULL` makes an acknowledged command survive a power cut.

use super::{
    decode, encode, encode_progress, encode_spec, pending_migrations, JobRecord, JobRow, MetaStore,
    Sealer, StoreError, DELETE_JOB, INSERT_JOB, SELECT_JOBS, SELECT_PASSWORDS, UPDATE_PASSWORDS,
    UPDATE_SPEC, UPDATE_STATUS, VERSION_TABLE,
};
use crate::job::spec::JobSpec;
use crate::job::state::{JobStatus, Progress};
use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use std::path::Path;
use std::sync::Arc;

pub const FILE_NAME: &str = "ccr.db";

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    sealer: Arc<Sealer>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("sqlite: {e}"))
}

impl SqliteStore {
    pub async fn open(dir: &Path, sealer: Arc<Sealer>) -> Result<Self, StoreError> {
        let dir = dir.to_path_buf();
        let keys = sealer.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let path = dir.join(FILE_NAME);
            private_file(&dir, &path)?;
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
            Ok(conn)
        })
        .await
        .map_err(backend)??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            sealer,
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
    let again = sealer.reseal(&rows)?;
    if again.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction().map_err(backend)?;
    for (name, src, dest) in &again {
        tx.execute(UPDATE_PASSWORDS, params![src, dest, name])
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
        status: JobStatus,
        progress: &Progress,
        updated_at: i64,
    ) -> Result<(), StoreError> {
        let progress = encode_progress(progress)?;
        let name = name.to_string();
        self.with_conn(move |conn| {
            let n = conn
                .execute(
                    UPDATE_STATUS,
                    params![
                        status.run_state.as_str(),
                        status.progress_state.as_str(),
                        progress,
                        updated_at,
                        name
                    ],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(name));
            }
            Ok(())
        })
        .await
    }

    async fn save_spec(&self, spec: &JobSpec, updated_at: i64) -> Result<(), StoreError> {
        let encoded = encode_spec(spec)?;
        let src_password = self.sealer.seal(&spec.name, "src", &spec.src.password)?;
        let dest_password = self.sealer.seal(&spec.name, "dest", &spec.dest.password)?;
        let name = spec.name.clone();
        self.with_conn(move |conn| {
            let n = conn
                .execute(
                    UPDATE_SPEC,
                    params![encoded, src_password, dest_password, updated_at, name],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(StoreError::NotFound(name));
            }
            Ok(())
        })
        .await
    }

    async fn delete_job(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.with_conn(move |conn| Ok(conn.execute(DELETE_JOB, [name]).map_err(backend)? > 0))
            .await
    }
}
