//! The full-sync plan and its checkpoints, kept on the destination in
//! `_ccr_syncer_chunks` inside the destination database.
//!
//! The plan (every chunk of every table, with its key bounds) is written in
//! one transaction before any row is copied. A chunk's rows and the row that
//! marks it done — with the snapshot position it was read at — commit in
//! one destination transaction, so after a crash a chunk is either fully
//! there and marked, or absent and unmarked: a resumed copy skips exactly the
//! marked chunks and nothing is duplicated or lost. The plan is keyed by job
//! and by the full sync's `run_id`; a new full sync of the job replaces it.

use crate::change::{ChunkBounds, KeyValue};
use crate::db::quote_ident;
use crate::position::{BinlogCoord, MariaGtidPos, Position};
use mysql_async::prelude::*;
use mysql_async::{Conn, TxOpts};

pub const TABLE: &str = "_ccr_syncer_chunks";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedChunk {
    pub src_table: String,
    pub dest_table: String,
    pub chunk: u32,
    pub bounds: ChunkBounds,
    pub done: Option<ChunkDone>,
}

/// A copied chunk: where the snapshot it was read from stands, and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkDone {
    /// The position of the snapshot it was read from.
    pub at: Position,
    pub rows: u64,
    pub bytes: u64,
}

fn table(database: &str) -> String {
    format!("{}.{}", quote_ident(database), quote_ident(TABLE))
}

pub async fn ensure_table(conn: &mut Conn, database: &str) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (
            job VARCHAR(128) NOT NULL,
            run_id BIGINT NOT NULL,
            src_table VARCHAR(64) NOT NULL,
            dest_table VARCHAR(64) NOT NULL,
            chunk INT UNSIGNED NOT NULL,
            lower_bound MEDIUMTEXT NULL,
            upper_bound MEDIUMTEXT NULL,
            estimated_rows BIGINT UNSIGNED NOT NULL,
            done TINYINT NOT NULL DEFAULT 0,
            binlog_file VARCHAR(512) NULL,
            binlog_pos BIGINT UNSIGNED NULL,
            gtid TEXT NULL,
            rows_copied BIGINT UNSIGNED NOT NULL DEFAULT 0,
            bytes_copied BIGINT UNSIGNED NOT NULL DEFAULT 0,
            PRIMARY KEY (job, src_table, chunk)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='ccr-syncer full sync checkpoints'",
        table(database)
    ))
    .await
}

/// The job's plan for `run_id`, or None if the stored plan (if any) is
/// another run's.
pub async fn load(
    conn: &mut Conn,
    database: &str,
    job: &str,
    run_id: i64,
) -> Result<Option<Vec<PlannedChunk>>, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            format!(
                "SELECT run_id, src_table, dest_table, chunk, lower_bound, upper_bound, estimated_rows, \
                 done, binlog_file, binlog_pos, gtid, rows_copied, bytes_copied \
                 FROM {} WHERE job = ? ORDER BY src_table, chunk",
                table(database)
            ),
            (job,),
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(rows.len());
    for mut r in rows {
        if col::<i64>(&mut r, 0)? != run_id {
            return Ok(None);
        }
        let lower: Option<String> = col(&mut r, 4)?;
        let upper: Option<String> = col(&mut r, 5)?;
        let done = match (
            col::<u8>(&mut r, 7)?,
            col::<Option<String>>(&mut r, 8)?,
            col::<Option<u64>>(&mut r, 9)?,
        ) {
            (1, Some(file), Some(pos)) => Some(ChunkDone {
                at: Position {
                    gtid: MariaGtidPos::parse(
                        &col::<Option<String>>(&mut r, 10)?.unwrap_or_default(),
                    )
                    .map_err(|_| corrupt("a chunk's GTID position is not valid"))?,
                    coord: BinlogCoord { file, pos },
                },
                rows: col(&mut r, 11)?,
                bytes: col(&mut r, 12)?,
            }),
            _ => None,
        };
        out.push(PlannedChunk {
            src_table: col(&mut r, 1)?,
            dest_table: col(&mut r, 2)?,
            chunk: col(&mut r, 3)?,
            bounds: ChunkBounds {
                lower: lower.map(|b| decode_bound(&b)).transpose()?,
                upper: upper.map(|b| decode_bound(&b)).transpose()?,
                estimated_rows: col(&mut r, 6)?,
            },
            done,
        });
    }
    Ok(Some(out))
}

fn col<T: FromValue>(row: &mut mysql_async::Row, i: usize) -> Result<T, mysql_async::Error> {
    match row.take_opt::<T, _>(i) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(corrupt(&e.to_string())),
        None => Err(corrupt("missing column")),
    }
}

fn corrupt(what: &str) -> mysql_async::Error {
    mysql_async::Error::Other(format!("{TABLE} holds an unreadable row: {what}").into())
}

/// Replaces whatever plan the job had with `chunks`, in one transaction.
pub async fn store(
    conn: &mut Conn,
    database: &str,
    job: &str,
    run_id: i64,
    chunks: &[PlannedChunk],
) -> Result<(), mysql_async::Error> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        format!("DELETE FROM {} WHERE job = ?", table(database)),
        (job,),
    )
    .await?;
    for batch in chunks.chunks(500) {
        let mut sql = format!(
            "INSERT INTO {} (job, run_id, src_table, dest_table, chunk, lower_bound, upper_bound, estimated_rows) VALUES ",
            table(database)
        );
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(batch.len() * 8);
        for (i, c) in batch.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?)");
            params.extend([
                job.into(),
                run_id.into(),
                c.src_table.as_str().into(),
                c.dest_table.as_str().into(),
                c.chunk.into(),
                c.bounds.lower.as_ref().map(encode_bound).into(),
                c.bounds.upper.as_ref().map(encode_bound).into(),
                c.bounds.estimated_rows.into(),
            ]);
        }
        tx.exec_drop(sql, params).await?;
    }
    tx.commit().await
}

/// Marks a chunk done; run inside the transaction that inserted its rows.
pub fn mark_done_sql(database: &str, job: &str, chunk: &PlannedChunk, done: &ChunkDone) -> Vec<u8> {
    use crate::change::literal::push_quoted;
    let mut sql = format!(
        "UPDATE {} SET done = 1, binlog_pos = {}, rows_copied = {}, bytes_copied = {}, binlog_file = ",
        table(database),
        done.at.coord.pos,
        done.rows,
        done.bytes
    )
    .into_bytes();
    push_quoted(&mut sql, done.at.coord.file.as_bytes());
    sql.extend_from_slice(b", gtid = ");
    push_quoted(&mut sql, done.at.gtid.to_string().as_bytes());
    sql.extend_from_slice(b" WHERE job = ");
    push_quoted(&mut sql, job.as_bytes());
    sql.extend_from_slice(b" AND src_table = ");
    push_quoted(&mut sql, chunk.src_table.as_bytes());
    sql.extend_from_slice(format!(" AND chunk = {} AND done = 0", chunk.chunk).as_bytes());
    sql
}

/// A key value as text: each part hex-encoded, parts joined by commas.
pub fn encode_bound(value: &KeyValue) -> String {
    value
        .iter()
        .map(|part| part.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode_bound(text: &str) -> Result<KeyValue, mysql_async::Error> {
    text.split(',')
        .map(|part| {
            if part.len() % 2 != 0 {
                return Err(corrupt("odd-length bound"));
            }
            (0..part.len())
                .step_by(2)
                .map(|i| {
                    u8::from_str_radix(&part[i..i + 2], 16).map_err(|_| corrupt("bound is not hex"))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_round_trip() {
        for value in [
            vec![b"42".to_vec()],
            vec![b"".to_vec(), b"\x00,\xff".to_vec()],
            vec![b"a'b".to_vec(), b"-1".to_vec(), b"x".to_vec()],
        ] {
            assert_eq!(decode_bound(&encode_bound(&value)).unwrap(), value);
        }
        assert!(decode_bound("abc").is_err());
        assert!(decode_bound("zz").is_err());
    }
}
