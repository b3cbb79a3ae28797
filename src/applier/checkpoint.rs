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

use crate::db::quote_ident;
use crate::position::BinlogCoord;
use mysql_async::prelude::*;
use mysql_async::Conn;

pub const TABLE: &str = "_ccr_syncer_checkpoint";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub run_id: i64,
    /// MariaDB GTID position (empty without GTIDs).
    pub gtid: String,
    pub coord: BinlogCoord,
    pub commit_seq: Option<u64>,
    /// Source commit time of the last applied transaction, unix seconds.
    pub commit_ts: Option<i64>,
    /// The DDL started after this position and not known to be done.
    pub pending_ddl: Option<String>,
}

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
           updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 \
         COMMENT='ccr-syncer: how far each job has applied (see doc/ARCHITECTURE.md)'",
        table(database)
    ))
    .await
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
    Ok(row.map(
        |(run_id, gtid, file, pos, commit_seq, commit_ts, pending_ddl)| Checkpoint {
            run_id,
            gtid,
            coord: BinlogCoord { file, pos },
            commit_seq,
            commit_ts,
            pending_ddl,
        },
    ))
}

fn text(s: &str) -> String {
    let mut out = Vec::new();
    super::literal::push_quoted(&mut out, s.as_bytes());
    String::from_utf8_lossy(&out).into_owned()
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("NULL".into(), |v| v.to_string())
}

/// The statement that records `cp` for `job`.
pub fn upsert_sql(database: &str, job: &str, cp: &Checkpoint) -> String {
    format!(
        "INSERT INTO {} (job, run_id, gtid, binlog_file, binlog_pos, commit_seq, commit_ts, pending_ddl) \
         VALUES ({}, {}, {}, {}, {}, {}, {}, {}) ON DUPLICATE KEY UPDATE run_id = VALUES(run_id), \
         gtid = VALUES(gtid), binlog_file = VALUES(binlog_file), binlog_pos = VALUES(binlog_pos), \
         commit_seq = VALUES(commit_seq), commit_ts = VALUES(commit_ts), pending_ddl = VALUES(pending_ddl)",
        table(database),
        text(job),
        cp.run_id,
        text(&cp.gtid),
        text(&cp.coord.file),
        cp.coord.pos,
        opt(&cp.commit_seq),
        opt(&cp.commit_ts),
        cp.pending_ddl.as_deref().map_or("NULL".into(), text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_quotes_values() {
        let cp = Checkpoint {
            run_id: 7,
            gtid: "0-1-5".into(),
            coord: BinlogCoord {
                file: "b.000001".into(),
                pos: 42,
            },
            commit_seq: Some(5),
            commit_ts: None,
            pending_ddl: Some("0-1-6".into()),
        };
        let sql = upsert_sql("d", "j'1", &cp);
        assert!(sql.starts_with("INSERT INTO `d`.`_ccr_syncer_checkpoint`"));
        assert!(sql.contains("VALUES ('j\\'1', 7, '0-1-5', 'b.000001', 42, 5, NULL, '0-1-6')"));
    }
}
