//! The MySQL/MariaDB meta store: the same `ccr_jobs` table in a database of a
//! MySQL-protocol server, so several syncers can share one store.
//!
//! The database is created if missing. Migrations run under the named lock
//! `ccr_syncer_migrate` so that syncers starting together migrate once.

use super::{
    decode, encode, encode_progress, pending_migrations, spec_columns, unsaved, Fence, JobRecord,
    JobRow, MetaStore, Sealer, SqlValue, StoreError, DELETE_JOB, INSERT_JOB, JOB_EXISTS,
    SELECT_CLUSTER_PASSWORDS, SELECT_JOBS, SELECT_PASSWORDS, UPDATE_CLUSTER_PASSWORD,
    UPDATE_PASSWORDS, UPDATE_SPEC, UPDATE_STATUS, VERSION_TABLE,
};
use crate::config::StoreConfig;
use crate::db::{self, quote_ident, server_code, ServerAddr};
use crate::job::spec::JobSpec;
use crate::job::state::{JobStatus, Progress};
use crate::secret::Secret;
use async_trait::async_trait;
use mysql_async::prelude::*;
use mysql_async::{Conn, Pool};
use std::time::Duration;

/// MySQL's error code for a duplicate key.
const ER_DUP_ENTRY: u16 = 1062;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct MysqlStore {
    /// Replaced when its TLS options no longer fit the server (a new
    /// certificate under verify_ca): see [`MysqlStore::conn`].
    pool: parking_lot::Mutex<Pool>,
    config: StoreConfig,
    sealer: std::sync::Arc<Sealer>,
}

/// The store's server and database, from a MySQL store configuration.
fn server(config: &StoreConfig) -> Option<(ServerAddr<'_>, &str)> {
    let StoreConfig::Mysql {
        host,
        port,
        user,
        password,
        database,
        tls,
    } = config
    else {
        return None;
    };
    Some((
        ServerAddr {
            host,
            port: *port,
            user,
            password,
            tls,
        },
        database,
    ))
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("mysql: {e}"))
}

impl MysqlStore {
    pub async fn open(
        config: &StoreConfig,
        sealer: std::sync::Arc<Sealer>,
    ) -> Result<Self, StoreError> {
        let (addr, database) =
            server(config).ok_or_else(|| backend("not a mysql store configuration"))?;
        let mut conn = db::connect(&addr, None, CONNECT_TIMEOUT)
            .await
            .map_err(backend)?;
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
            quote_ident(database)
        ))
        .await
        .map_err(backend)?;
        conn.query_drop(format!("USE {}", quote_ident(database)))
            .await
            .map_err(backend)?;
        migrate(&mut conn, &sealer).await?;
        conn.disconnect().await.map_err(backend)?;
        let opts = pool_opts(&addr, database).await?;
        Ok(MysqlStore {
            pool: parking_lot::Mutex::new(Pool::new(opts)),
            config: config.clone(),
            sealer,
        })
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let pool = self.pool.lock().clone();
        // A refused login is tried twice more: see `db::new_conn` (the
        // driver fails an ed25519 login 1 time in 256).
        let mut tries = 0;
        let e = loop {
            tries += 1;
            match pool.get_conn().await {
                Ok(conn) => return Ok(conn),
                Err(e) if tries < 3 && server_code(&e) == Some(crate::db::ER_ACCESS_DENIED) => {}
                Err(e) => break e,
            }
        };
        // A TLS refusal may mean the server's certificate changed since the
        // pool's options were made: make them again (learning verify_ca's
        // name anew) and try once more.
        let Some((addr, database)) = server(&self.config)
            .filter(|(addr, _)| crate::tls::describe(&e, addr.tls.mode, addr.host).is_some())
        else {
            return Err(backend(e));
        };
        let opts = pool_opts(&addr, database).await?;
        let pool = Pool::new(opts);
        *self.pool.lock() = pool.clone();
        pool.get_conn().await.map_err(backend)
    }
}

/// The pool's options: counting matched rows, not changed ones, so that a
/// fenced save that matches no row is told from one that changed nothing.
async fn pool_opts(addr: &ServerAddr<'_>, database: &str) -> Result<mysql_async::Opts, StoreError> {
    let opts = db::pool_opts(addr, Some(database), CONNECT_TIMEOUT)
        .await
        .map_err(backend)?;
    Ok(mysql_async::OptsBuilder::from_opts(opts)
        .client_found_rows(true)
        .into())
}

/// Seals every password not yet sealed with the current key, in one
/// transaction, after all have been read.
async fn reseal(conn: &mut Conn, sealer: &Sealer) -> Result<(), StoreError> {
    let rows: Vec<(String, String, String)> =
        conn.query(SELECT_PASSWORDS).await.map_err(backend)?;
    let clusters: Vec<(String, String)> = conn
        .query(SELECT_CLUSTER_PASSWORDS)
        .await
        .map_err(backend)?;
    let again = sealer.reseal(&rows)?;
    let clusters_again = sealer.reseal_clusters(&clusters)?;
    if again.is_empty() && clusters_again.is_empty() {
        return Ok(());
    }
    let mut tx = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await
        .map_err(backend)?;
    for (name, src, dest) in &again {
        tx.exec_drop(UPDATE_PASSWORDS, (src, dest, name))
            .await
            .map_err(backend)?;
    }
    for (id, stored) in &clusters_again {
        tx.exec_drop(UPDATE_CLUSTER_PASSWORD, (stored, id))
            .await
            .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)?;
    tracing::info!(
        jobs = again.len(),
        clusters = clusters_again.len(),
        "store passwords encrypted with the current key"
    );
    Ok(())
}

async fn migrate(conn: &mut Conn, sealer: &Sealer) -> Result<(), StoreError> {
    let locked: Option<i64> = conn
        .query_first("SELECT GET_LOCK('ccr_syncer_migrate', 30)")
        .await
        .map_err(backend)?;
    if locked != Some(1) {
        return Err(backend(
            "another syncer holds the migration lock ccr_syncer_migrate",
        ));
    }
    // Passwords are sealed under the same lock: two syncers starting
    // together never seal the same rows side by side.
    let result = match run_migrations(conn).await {
        Ok(()) => reseal(conn, sealer).await,
        Err(e) => Err(e),
    };
    conn.query_drop("DO RELEASE_LOCK('ccr_syncer_migrate')")
        .await
        .map_err(backend)?;
    result
}

async fn run_migrations(conn: &mut Conn) -> Result<(), StoreError> {
    conn.query_drop(VERSION_TABLE).await.map_err(backend)?;
    let current: Option<Option<i64>> = conn
        .query_first("SELECT MAX(version) FROM ccr_schema_version")
        .await
        .map_err(backend)?;
    // DDL commits implicitly in MySQL, so each version is recorded right after
    // its statements; the named lock keeps other syncers out meanwhile.
    for (version, statements) in pending_migrations(current.flatten().unwrap_or(0))? {
        for sql in statements {
            conn.query_drop(*sql).await.map_err(backend)?;
        }
        conn.query_drop("DELETE FROM ccr_schema_version")
            .await
            .map_err(backend)?;
        conn.exec_drop(
            "INSERT INTO ccr_schema_version (version) VALUES (?)",
            (version,),
        )
        .await
        .map_err(backend)?;
    }
    Ok(())
}

#[async_trait]
impl MetaStore for MysqlStore {
    fn seal_secret(&self, name: &str, side: &str, plain: &Secret) -> Result<String, StoreError> {
        self.sealer.seal(name, side, plain)
    }

    fn open_secret(&self, name: &str, side: &str, stored: &str) -> Result<Secret, StoreError> {
        self.sealer.open(name, side, stored)
    }

    async fn insert_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let row = encode(job, &self.sealer)?;
        let mut conn = self.conn().await?;
        let result = conn
            .exec_drop(
                INSERT_JOB,
                (
                    &row.name,
                    row.spec,
                    row.src_password,
                    row.dest_password,
                    row.run_state,
                    row.progress_state,
                    row.progress,
                    row.created_at,
                    row.updated_at,
                ),
            )
            .await;
        match result {
            Ok(()) => Ok(()),
            Err(e) if server_code(&e) == Some(ER_DUP_ENTRY) => Err(StoreError::Duplicate(row.name)),
            Err(e) => Err(backend(e)),
        }
    }

    async fn load_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let rows: Vec<JobRow> = conn
            .query_map(
                SELECT_JOBS,
                |(
                    name,
                    spec,
                    src_password,
                    dest_password,
                    run_state,
                    progress_state,
                    progress,
                    created_at,
                    updated_at,
                )| JobRow {
                    name,
                    spec,
                    src_password,
                    dest_password,
                    run_state,
                    progress_state,
                    progress,
                    created_at,
                    updated_at,
                },
            )
            .await
            .map_err(backend)?;
        rows.into_iter()
            .map(|row| decode(row, &self.sealer))
            .collect()
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
        let mut conn = self.conn().await?;
        conn.exec_drop(
            UPDATE_STATUS,
            (
                status.run_state.as_str(),
                status.progress_state.as_str(),
                progress,
                updated_at,
                name,
                &fence.member,
                fence.epoch,
            ),
        )
        .await
        .map_err(backend)?;
        // The pool's connections count matched rows (CLIENT_FOUND_ROWS).
        if conn.affected_rows() == 0 {
            return Err(unsaved(name, fence, exists(&mut conn, name).await?));
        }
        Ok(())
    }

    async fn save_spec(
        &self,
        spec: &JobSpec,
        fence: &Fence,
        updated_at: i64,
    ) -> Result<(), StoreError> {
        let (encoded, src_password, dest_password) = spec_columns(spec, &self.sealer)?;
        let mut conn = self.conn().await?;
        conn.exec_drop(
            UPDATE_SPEC,
            (
                encoded,
                src_password,
                dest_password,
                updated_at,
                &spec.name,
                &fence.member,
                fence.epoch,
            ),
        )
        .await
        .map_err(backend)?;
        if conn.affected_rows() == 0 {
            return Err(unsaved(
                &spec.name,
                fence,
                exists(&mut conn, &spec.name).await?,
            ));
        }
        Ok(())
    }

    async fn now_ms(&self) -> Result<i64, StoreError> {
        let mut conn = self.conn().await?;
        let now: Option<i64> = conn
            .query_first("SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)")
            .await
            .map_err(backend)?;
        now.ok_or_else(|| backend("the store server did not say the time"))
    }

    fn shared(&self) -> bool {
        true
    }

    async fn execute(&self, sql: &'static str, params: Vec<SqlValue>) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        let params: Vec<mysql_async::Value> = params.into_iter().map(to_value).collect();
        match conn.exec_drop(sql, params).await {
            Ok(()) => Ok(conn.affected_rows()),
            Err(e) if server_code(&e) == Some(ER_DUP_ENTRY) => {
                Err(StoreError::Duplicate(String::new()))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn transaction(&self, stmts: Vec<super::Stmt>) -> Result<(), StoreError> {
        // A deadlock (two members inserting keys at once) rolls the whole
        // transaction back: it is run again, as InnoDB asks.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.transaction_once(stmts.clone()).await {
                Err(Retry::Deadlock(e)) if attempt < 10 => {
                    tracing::debug!(error = %e, attempt, "store transaction deadlocked: again");
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                Err(Retry::Deadlock(e)) => return Err(backend(e)),
                Err(Retry::Fail(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn select(
        &self,
        sql: &'static str,
        params: Vec<SqlValue>,
    ) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        let mut conn = self.conn().await?;
        let params: Vec<mysql_async::Value> = params.into_iter().map(to_value).collect();
        let rows: Vec<mysql_async::Row> = conn.exec(sql, params).await.map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|row| row.unwrap().into_iter().map(from_value).collect())
            .collect())
    }

    async fn delete_job(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        conn.exec_drop(DELETE_JOB, (name,)).await.map_err(backend)?;
        Ok(conn.affected_rows() > 0)
    }
}

/// How a transaction ended without committing.
enum Retry {
    Deadlock(mysql_async::Error),
    Fail(StoreError),
}

const ER_LOCK_DEADLOCK: u16 = 1213;

impl MysqlStore {
    async fn transaction_once(&self, stmts: Vec<super::Stmt>) -> Result<(), Retry> {
        let mut conn = self.conn().await.map_err(Retry::Fail)?;
        let mut tx = conn
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .map_err(|e| Retry::Fail(backend(e)))?;
        for st in stmts {
            let params: Vec<mysql_async::Value> = st.params.into_iter().map(to_value).collect();
            match tx.exec_drop(st.sql, params).await {
                Ok(()) => {}
                Err(e) if server_code(&e) == Some(ER_DUP_ENTRY) => {
                    let _ = tx.rollback().await;
                    return Err(Retry::Fail(StoreError::Duplicate(String::new())));
                }
                Err(e) if server_code(&e) == Some(ER_LOCK_DEADLOCK) => {
                    let _ = tx.rollback().await;
                    return Err(Retry::Deadlock(e));
                }
                Err(e) => return Err(Retry::Fail(backend(e))),
            }
        }
        match tx.commit().await {
            Ok(()) => Ok(()),
            Err(e) if server_code(&e) == Some(ER_LOCK_DEADLOCK) => Err(Retry::Deadlock(e)),
            Err(e) => Err(Retry::Fail(backend(e))),
        }
    }
}

fn to_value(v: SqlValue) -> mysql_async::Value {
    match v {
        SqlValue::Int(i) => mysql_async::Value::Int(i),
        SqlValue::Text(t) => mysql_async::Value::Bytes(t.into_bytes()),
        SqlValue::Null => mysql_async::Value::NULL,
    }
}

fn from_value(v: mysql_async::Value) -> SqlValue {
    use mysql_async::Value;
    match v {
        Value::NULL => SqlValue::Null,
        Value::Int(i) => SqlValue::Int(i),
        Value::UInt(u) => SqlValue::Int(u as i64),
        Value::Bytes(b) => SqlValue::Text(String::from_utf8_lossy(&b).into_owned()),
        other => SqlValue::Text(other.as_sql(true)),
    }
}

async fn exists(conn: &mut Conn, name: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = conn
        .exec_first(JOB_EXISTS, (name,))
        .await
        .map_err(backend)?;
    Ok(found.is_some())
}
