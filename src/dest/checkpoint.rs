//! How far a job has applied, kept on the destination:
//! `<dest db>._ccr_syncer_checkpoint`, one row per job.
//!
//! Every destination transaction that applies source changes ends by
//! upserting this row and commits with it, so the row names exactly the
//! source transactions whose changes are in the destination; a restart
//! resumes after it (invariant 1). A DDL statement commits by itself in
//! MySQL and MariaDB, so before one is run the row is marked with the DDL's
//! GTID (`pending_ddl`), and after it the position moves past it: a crash in
//! between leaves the mark, and the DDL is then run again with "already
//! done" errors tolerated.
//!
//! `run_id` names the full sync the positions continue: a checkpoint of an
//! earlier run is ignored.
//!
//! **Fencing.** `owner_epoch` is the epoch of the lease under which the row
//! was last written (see `crate::group`). A member starting a job's work
//! *claims* the row at its epoch ([`claim`]); every write of the row (each
//! group's checkpoint, a DDL mark) and every full-sync chunk ([`fence_sql`])
//! sets `owner_epoch` to NULL — an error in the strict sessions the applier
//! uses (`Column 'owner_epoch' cannot be null`, 1048) — when the row holds a
//! higher epoch. So once a newer holder has claimed the job, a member that
//! lost its lease cannot commit one more transaction or chunk: the
//! statement fails and the transaction rolls back. A claim waits for the row
//! lock of a commit in flight, so whatever committed before it is in the
//! checkpoint the new holder reads next.

use crate::db::quote_ident;
use crate::position::{BinlogCoord, Position};
use mysql_async::prelude::*;
use mysql_async::Conn;

pub const TABLE: &str = "_ccr_syncer_checkpoint";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub run_id: i64,
    /// Just after the last source transaction the destination holds.
    pub position: Position,
    pub commit_seq: Option<u64>,
    /// Source commit time of the last applied transaction, unix seconds.
    pub commit_ts: Option<i64>,
    /// The DDL started after this position and not known to be done.
    pub pending_ddl: Option<String>,
    /// The lease epoch of the member writing it.
    pub epoch: i64,
}

/// Prepared XA transactions the stream has passed and not yet seen end:
/// where each starts in the source's binlog, to read its rows again when
/// it commits. Written in the group that passes the prepare, deleted in
/// the one that passes the commit or rollback: exactly once across a
/// restart between them.
pub const XA_TABLE: &str = "_ccr_syncer_xa";

fn xa_table(database: &str) -> String {
    format!("{}.{}", quote_ident(database), quote_ident(XA_TABLE))
}

pub async fn ensure_xa_table(conn: &mut Conn, database: &str) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (\
           job VARCHAR(128) NOT NULL, \
           run_id BIGINT NOT NULL, \
           xid VARCHAR(400) NOT NULL, \
           source VARCHAR(300) NOT NULL, \
           binlog_file VARCHAR(512) NOT NULL, \
           binlog_pos BIGINT UNSIGNED NOT NULL, \
           has_rows TINYINT NOT NULL, \
           PRIMARY KEY (job, xid)\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 \
         COMMENT='ccr-syncer: prepared XA transactions a job waits to see end'",
        xa_table(database)
    ))
    .await
}

/// A prepared XA transaction the stream passed: on which source node, where
/// its rows follow in that node's binlog, and whether any is in scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    pub source: String,
    pub at: BinlogCoord,
    pub rows: bool,
}

/// The prepared XA transactions of the job's current run, by XID (a
/// resync's run ignores, and replaces, an earlier run's).
pub async fn load_xa(
    conn: &mut Conn,
    database: &str,
    job: &str,
    run_id: i64,
) -> Result<std::collections::HashMap<String, Prepared>, mysql_async::Error> {
    let rows: Vec<(String, String, String, u64, i64)> = conn
        .exec(
            format!(
                "SELECT xid, source, binlog_file, binlog_pos, has_rows FROM {} \
                 WHERE job = ? AND run_id = ?",
                xa_table(database)
            ),
            (job, run_id),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(xid, source, file, pos, rows)| {
            (
                xid,
                Prepared {
                    source,
                    at: BinlogCoord { file, pos },
                    rows: rows != 0,
                },
            )
        })
        .collect())
}

pub fn xa_record_sql(database: &str, job: &str, run_id: i64, xid: &str, p: &Prepared) -> String {
    format!(
        "REPLACE INTO {} (job, run_id, xid, source, binlog_file, binlog_pos, has_rows) \
         VALUES ({}, {run_id}, {}, {}, {}, {}, {})",
        xa_table(database),
        text(job),
        text(xid),
        text(&p.source),
        text(&p.at.file),
        p.at.pos,
        u8::from(p.rows)
    )
}

pub fn xa_forget_sql(database: &str, job: &str, xid: &str) -> String {
    format!(
        "DELETE FROM {} WHERE job = {} AND xid = {}",
        xa_table(database),
        text(job),
        text(xid)
    )
}

/// The column whose NULL error says a write was fenced off.
use crate::error::EPOCH_COLUMN;

fn table(database: &str) -> String {
    format!("{}.{}", quote_ident(database), quote_ident(TABLE))
}

pub async fn ensure_table(conn: &mut Conn, database: &str) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (\
           job VARCHAR(128) NOT NULL PRIMARY KEY, \
           run_id BIGINT NOT NULL, \
           gtid TEXT NOT NULL, \
           binlog_file VARCHAR(512) NOT NULL, \
           binlog_pos BIGINT UNSIGNED NOT NULL, \
           commit_seq BIGINT UNSIGNED NULL, \
           commit_ts BIGINT NULL, \
           pending_ddl TEXT NULL, \
           owner_epoch BIGINT NOT NULL DEFAULT 0, \
           updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 \
         COMMENT='ccr-syncer: how far each job has applied (see doc/ARCHITECTURE.md)'",
        table(database)
    ))
    .await?;
    // A table from before fencing gets its column.
    let has: Option<i64> = conn
        .exec_first(
            "SELECT 1 FROM information_schema.columns \
             WHERE table_schema = ? AND table_name = ? AND column_name = ?",
            (database, TABLE, EPOCH_COLUMN),
        )
        .await?;
    if has.is_none() {
        conn.query_drop(format!(
            "ALTER TABLE {} ADD COLUMN {EPOCH_COLUMN} BIGINT NOT NULL DEFAULT 0",
            table(database)
        ))
        .await?;
    }
    Ok(())
}

/// The guard every write of the row carries: NULL (an error) when a newer
/// holder has claimed the job.
fn guard(epoch: i64) -> String {
    format!("{EPOCH_COLUMN} = IF({EPOCH_COLUMN} > {epoch}, NULL, {epoch})")
}

/// Claims the job's row at `epoch` (creating it, with a position no run
/// continues, if missing); fails as fenced if a newer holder claimed it.
pub async fn claim(
    conn: &mut Conn,
    database: &str,
    job: &str,
    epoch: i64,
) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "INSERT INTO {} (job, run_id, gtid, binlog_file, binlog_pos, {EPOCH_COLUMN}) \
         VALUES ({}, 0, '', '', 0, {epoch}) ON DUPLICATE KEY UPDATE {}",
        table(database),
        text(job),
        guard(epoch)
    ))
    .await
}

/// The statement a full-sync chunk runs before it commits: fails as fenced
/// if a newer holder claimed the job.
pub fn fence_sql(database: &str, job: &str, epoch: i64) -> String {
    format!(
        "UPDATE {} SET {} WHERE job = {}",
        table(database),
        guard(epoch),
        text(job)
    )
}

pub async fn load(
    conn: &mut Conn,
    database: &str,
    job: &str,
) -> Result<Option<Checkpoint>, mysql_async::Error> {
    type Row = (
        i64,
        String,
        String,
        u64,
        Option<u64>,
        Option<i64>,
        Option<String>,
    );
    let row: Option<Row> = conn
        .exec_first(
            format!(
                "SELECT run_id, gtid, binlog_file, binlog_pos, commit_seq, commit_ts, pending_ddl \
                 FROM {} WHERE job = ?",
                table(database)
            ),
            (job,),
        )
        .await?;
    row.map(
        |(run_id, gtid, file, pos, commit_seq, commit_ts, pending_ddl)| {
            let position = Position::new(&gtid, &file, pos).map_err(|e| {
                mysql_async::Error::Other(
                    format!("{TABLE} holds an unreadable position: {e}").into(),
                )
            })?;
            Ok(Checkpoint {
                run_id,
                position,
                commit_seq,
                commit_ts,
                pending_ddl,
                epoch: 0,
            })
        },
    )
    .transpose()
}

fn text(s: &str) -> String {
    let mut out = Vec::new();
    crate::change::literal::push_quoted(&mut out, s.as_bytes());
    String::from_utf8_lossy(&out).into_owned()
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("NULL".into(), |v| v.to_string())
}

/// The statement that records `cp` for `job`.
pub fn upsert_sql(database: &str, job: &str, cp: &Checkpoint) -> String {
    format!(
        "INSERT INTO {table} (job, run_id, gtid, binlog_file, binlog_pos, commit_seq, commit_ts, \
         pending_ddl, {EPOCH_COLUMN}) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}) \
         ON DUPLICATE KEY UPDATE {guard}, run_id = VALUES(run_id), \
         gtid = VALUES(gtid), binlog_file = VALUES(binlog_file), binlog_pos = VALUES(binlog_pos), \
         commit_seq = VALUES(commit_seq), commit_ts = VALUES(commit_ts), pending_ddl = VALUES(pending_ddl)",
        text(job),
        cp.run_id,
        text(&cp.position.gtid.to_string()),
        text(&cp.position.coord.file),
        cp.position.coord.pos,
        opt(&cp.commit_seq),
        opt(&cp.commit_ts),
        cp.pending_ddl.as_deref().map_or("NULL".into(), text),
        cp.epoch,
        table = table(database),
        guard = guard(cp.epoch),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_quotes_values() {
        let cp = Checkpoint {
            run_id: 7,
            position: Position::new("0-1-5", "b.000001", 42).unwrap(),
            commit_seq: Some(5),
            commit_ts: None,
            pending_ddl: Some("0-1-6".into()),
            epoch: 3,
        };
        let sql = upsert_sql("d", "j'1", &cp);
        assert!(sql.starts_with("INSERT INTO `d`.`_ccr_syncer_checkpoint`"));
        assert!(sql.contains("VALUES ('j\\'1', 7, '0-1-5', 'b.000001', 42, 5, NULL, '0-1-6', 3)"));
        assert!(sql.contains("UPDATE owner_epoch = IF(owner_epoch > 3, NULL, 3), run_id"));
    }
}
