//! `repartition_tables` (seed 001, 7; Klustron's clients say
//! `table_repartition`): each source table's rows copied into an existing,
//! empty table of the same columns in another cluster, written through one
//! of that cluster's compute nodes so that they land where its
//! partitioning puts them.
//!
//! The copy reads the source shard's table in one consistent snapshot (one
//! position, named in the answer), writes in batches with `REPLACE` (a copy
//! run again after a crash starts over on a table emptied first), then
//! compares the destination with the snapshot (row count and a checksum of
//! every row): equal, or the step fails naming both.

use super::expand_cluster::db_table;
use crate::cluster::comps::{self, apply};
use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, sql_error};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::db::quote_ident;
use futures_util::TryStreamExt;
use mysql_async::prelude::*;
use mysql_async::{Conn, Value as SqlValue};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct RepartitionTables(pub &'static str);

/// Rows per INSERT.
const BATCH: usize = 500;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pair {
    pub src_db: String,
    pub src_table: String,
    pub src_shard: i64,
    pub dst_db: String,
    pub dst_table: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub src_cluster_id: String,
    pub dst_cluster_id: String,
    pub pairs: Vec<Pair>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Copy { index: usize },
}

/// A table's columns: `(name, type)` in order.
async fn columns(
    conn: &mut Conn,
    at: &str,
    db: &str,
    table: &str,
) -> Result<Vec<(String, String)>, StepError> {
    conn.exec(
        "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
         AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    .await
    .map_err(|e| sql_error(at, &e))
}

fn refused(e: StepError) -> Refused {
    Refused {
        code: codes::UNREACHABLE,
        info: e.to_string(),
    }
}

/// A running compute node of a cluster: `(host, port)`.
async fn a_comp(env: &Env, cluster_id: &str) -> Result<(String, i64), Refused> {
    comps::running(env, cluster_id)
        .await
        .map_err(refused)?
        .into_iter()
        .next()
        .map(|c| (c.hostaddr, c.port))
        .ok_or_else(|| {
            Refused::bad(format!(
                "cluster {cluster_id} has no running compute node to write through (add_comps)"
            ))
        })
}

/// The shard of the source cluster holding `db.table` whole.
async fn source_shard(env: &Env, cluster_id: &str, db: &str, table: &str) -> Result<i64, Refused> {
    let catalog = comps::catalog(env, cluster_id).await.map_err(refused)?;
    if let Some(p) = catalog.get(&(db.to_string(), table.to_string())) {
        if p.partitioning.is_some() {
            return Err(Refused::bad(format!(
                "{db}.{table} is spread over shards by partition: no one snapshot holds it (move it \
                 to one shard first)"
            )));
        }
        return Ok(p.shard);
    }
    let mut found = Vec::new();
    for shard in comps::primaries(env, cluster_id)
        .await
        .map_err(refused)?
        .keys()
    {
        let (mut conn, at) = apply::shard_conn(env, cluster_id, *shard)
            .await
            .map_err(refused)?;
        if !columns(&mut conn, &at, db, table)
            .await
            .map_err(refused)?
            .is_empty()
        {
            found.push(*shard);
        }
        let _ = conn.disconnect().await;
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Refused {
            code: codes::NOT_FOUND,
            info: format!("cluster {cluster_id} has no table {db}.{table}"),
        }),
        many => Err(Refused::bad(format!(
            "{db}.{table} is on shards {many:?}: no one snapshot holds it"
        ))),
    }
}

#[async_trait::async_trait]
impl Kind for RepartitionTables {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        self.0
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let src = p.need("src_cluster_id")?;
        let dst = p.need("dst_cluster_id")?;
        nodes::cluster(env, &src).await?;
        nodes::cluster(env, &dst).await?;
        let text = p.need("repartition_tables")?;
        let (comp_host, comp_port) = a_comp(env, &dst).await?;
        let mut comp = comps::connect(env, &dst, &comp_host, comp_port)
            .await
            .map_err(refused)?;
        let comp_at = format!("{comp_host}:{comp_port}");
        let mut pairs: Vec<Pair> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (from, to) = item.split_once("=>").ok_or_else(|| {
                Refused::bad(format!(
                    "paras.repartition_tables: {item:?} is not db.t=>db1.t2"
                ))
            })?;
            let (sdb, st) = db_table(from, "paras.repartition_tables")?;
            let (ddb, dt) = db_table(to, "paras.repartition_tables")?;
            let shard = source_shard(env, &src, &sdb, &st).await?;
            let (mut sconn, sat) = apply::shard_conn(env, &src, shard).await.map_err(refused)?;
            let scols = columns(&mut sconn, &sat, &sdb, &st)
                .await
                .map_err(refused)?;
            let keyed: Option<i64> = sconn
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? \
                     AND TABLE_NAME = ? AND NON_UNIQUE = 0",
                    (&sdb, &st),
                )
                .await
                .map_err(|e| refused(sql_error(&sat, &e)))?;
            let _ = sconn.disconnect().await;
            if keyed.unwrap_or(0) == 0 {
                return Err(Refused::bad(format!(
                    "{sdb}.{st} has no primary or unique key: a copy run again could not tell its rows apart"
                )));
            }
            let dcols = columns(&mut comp, &comp_at, &ddb, &dt)
                .await
                .map_err(refused)?;
            if dcols.is_empty() {
                return Err(Refused {
                    code: codes::NOT_FOUND,
                    info: format!(
                        "cluster {dst} has no table {ddb}.{dt}: create it through a compute node first \
                         (same columns as {sdb}.{st})"
                    ),
                });
            }
            if dcols != scols {
                let diff: Vec<String> = scols
                    .iter()
                    .zip(dcols.iter().map(Some).chain(std::iter::repeat(None)))
                    .filter(|(a, b)| Some(*a) != *b)
                    .map(|(a, b)| match b {
                        Some(b) => format!("{} {} vs {} {}", a.0, a.1, b.0, b.1),
                        None => format!("{} {} missing", a.0, a.1),
                    })
                    .take(5)
                    .collect();
                return Err(Refused::bad(format!(
                    "{ddb}.{dt} does not have the columns of {sdb}.{st} ({} vs {} columns; {})",
                    dcols.len(),
                    scols.len(),
                    if diff.is_empty() {
                        "extra columns at the end".to_string()
                    } else {
                        diff.join("; ")
                    }
                )));
            }
            let rows: Option<i64> = comp
                .query_first(format!(
                    "SELECT COUNT(*) FROM {}",
                    apply::qualified(&ddb, &dt)
                ))
                .await
                .map_err(|e| refused(sql_error(&comp_at, &e)))?;
            if rows.unwrap_or(0) > 0 {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "{ddb}.{dt} holds {} rows: the destination table must be empty",
                        rows.unwrap_or(0)
                    ),
                });
            }
            pairs.push(Pair {
                src_db: sdb,
                src_table: st,
                src_shard: shard,
                dst_db: ddb,
                dst_table: dt,
            });
        }
        let _ = comp.disconnect().await;
        if pairs.is_empty() {
            return Err(Refused::bad(
                "paras.repartition_tables: name at least one db.t=>db1.t2",
            ));
        }
        let steps = (0..pairs.len()).map(|index| Step::Copy { index }).collect();
        let mut resources: Vec<Resource> = pairs
            .iter()
            .map(|x| Resource::Table(src.clone(), format!("{}.{}", x.src_db, x.src_table)))
            .collect();
        resources.extend(
            pairs
                .iter()
                .map(|x| Resource::Table(dst.clone(), format!("{}.{}", x.dst_db, x.dst_table))),
        );
        Ok(Planned::new(
            Plan {
                src_cluster_id: src,
                dst_cluster_id: dst,
                pairs,
            },
            steps,
            resources,
        ))
    }

    fn label(&self, step: &Step) -> String {
        let Step::Copy { index } = step;
        format!("copy:{index}")
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let Step::Copy { index } = step;
        let pair = plan
            .pairs
            .get(*index)
            .ok_or_else(|| StepError::definite("no such pair in the plan"))?;
        copy(ctx, plan, pair).await
    }

    fn attachment(&self, plan: &Plan, results: &[(Step, Value)]) -> Value {
        let tables: Vec<Value> = results.iter().map(|(_, r)| r.clone()).collect();
        json!({"src_cluster_id": plan.src_cluster_id, "dst_cluster_id": plan.dst_cluster_id,
               "tables": tables})
    }

    fn done_info(&self) -> String {
        "repartition tables successfully".into()
    }
}

/// `COUNT(*)` and a checksum of every row of a table (its columns as
/// bytes).
fn checksum_sql(db: &str, table: &str, cols: &[(String, String)]) -> String {
    let each: Vec<String> = cols
        .iter()
        .map(|(c, _)| format!("IFNULL(HEX(CAST({} AS BINARY)), 'N')", quote_ident(c)))
        .collect();
    format!(
        "SELECT COUNT(*), CAST(COALESCE(SUM(CRC32(CONCAT_WS('|', {}))), 0) AS UNSIGNED) FROM {}",
        each.join(", "),
        apply::qualified(db, table)
    )
}

async fn copy(ctx: &StepCtx<'_>, plan: &Plan, pair: &Pair) -> Result<Value, StepError> {
    let env = ctx.env;
    let (mut src, sat) = apply::shard_conn(env, &plan.src_cluster_id, pair.src_shard).await?;
    let cols = columns(&mut src, &sat, &pair.src_db, &pair.src_table).await?;
    let (host, port) = a_comp(env, &plan.dst_cluster_id)
        .await
        .map_err(|r| StepError::transient(r.info))?;
    let dat = format!("{host}:{port}");
    let mut dst = comps::connect(env, &plan.dst_cluster_id, &host, port).await?;
    let target = apply::qualified(&pair.dst_db, &pair.dst_table);
    if ctx.attempt > 1 {
        // What an interrupted attempt wrote (the table was empty at accept).
        dst.query_drop(format!("DELETE FROM {target}"))
            .await
            .map_err(|e| sql_error(&dat, &e))?;
    }
    for sql in [
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
    ] {
        src.query_drop(sql).await.map_err(|e| sql_error(&sat, &e))?;
    }
    // The snapshot's binlog position, and the GTID position it is.
    let status: Vec<(String, String)> = src
        .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
        .await
        .map_err(|e| sql_error(&sat, &e))?;
    let get = |k: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (file, pos) = (get("Binlog_snapshot_file"), get("Binlog_snapshot_position"));
    let gtid: Option<Option<String>> = src
        .exec_first(
            "SELECT BINLOG_GTID_POS(?, ?)",
            (&file, pos.parse::<u64>().unwrap_or(0)),
        )
        .await
        .map_err(|e| sql_error(&sat, &e))?;
    let position = json!({"binlog_file": file, "binlog_pos": pos, "gtid": gtid.flatten()});
    let names: Vec<String> = cols.iter().map(|(c, _)| quote_ident(c)).collect();
    let per_batch = (BATCH).min(60_000 / cols.len().max(1)).max(1);
    let row_sql = format!("({})", vec!["?"; cols.len()].join(", "));
    let mut copied = 0u64;
    let mut batch: Vec<SqlValue> = Vec::with_capacity(per_batch * cols.len());
    let mut in_batch = 0usize;
    {
        let mut rows = src
            .exec_stream::<mysql_async::Row, _, _>(
                format!(
                    "SELECT {} FROM {}",
                    names.join(", "),
                    apply::qualified(&pair.src_db, &pair.src_table)
                ),
                (),
            )
            .await
            .map_err(|e| sql_error(&sat, &e))?;
        while let Some(row) = rows.try_next().await.map_err(|e| sql_error(&sat, &e))? {
            batch.extend(row.unwrap());
            in_batch += 1;
            if in_batch == per_batch {
                write(
                    &mut dst,
                    &dat,
                    &target,
                    &names,
                    &row_sql,
                    in_batch,
                    std::mem::take(&mut batch),
                )
                .await?;
                copied += in_batch as u64;
                in_batch = 0;
                ctx.progress.report(crate::protocol::Progress {
                    done: copied,
                    total: None,
                    phase: "copying".into(),
                });
            }
        }
    }
    if in_batch > 0 {
        write(&mut dst, &dat, &target, &names, &row_sql, in_batch, batch).await?;
        copied += in_batch as u64;
    }
    // The snapshot against what the destination holds now.
    let source_sum: Option<(u64, u64)> = src
        .query_first(checksum_sql(&pair.src_db, &pair.src_table, &cols))
        .await
        .map_err(|e| sql_error(&sat, &e))?;
    let _ = src.query_drop("COMMIT").await;
    let _ = src.disconnect().await;
    let dest_sum: Option<(u64, u64)> = dst
        .query_first(checksum_sql(&pair.dst_db, &pair.dst_table, &cols))
        .await
        .map_err(|e| sql_error(&dat, &e))?;
    let _ = dst.disconnect().await;
    let equal = source_sum == dest_sum;
    if !equal {
        return Err(StepError::definite(format!(
            "{}.{} copied to {}.{} but they differ: source (rows, checksum) {:?}, destination {:?}",
            pair.src_db, pair.src_table, pair.dst_db, pair.dst_table, source_sum, dest_sum
        )));
    }
    Ok(
        json!({"from": format!("{}.{}", pair.src_db, pair.src_table),
              "to": format!("{}.{}", pair.dst_db, pair.dst_table),
              "position": position, "rows_copied": copied,
              "verify": {"equal": true, "rows": source_sum.map(|s| s.0)}}),
    )
}

async fn write(
    dst: &mut Conn,
    at: &str,
    target: &str,
    names: &[String],
    row_sql: &str,
    rows: usize,
    values: Vec<SqlValue>,
) -> Result<(), StepError> {
    let sql = format!(
        "REPLACE INTO {target} ({}) VALUES {}",
        names.join(", "),
        vec![row_sql; rows].join(", ")
    );
    dst.exec_drop(sql, mysql_async::Params::Positional(values))
        .await
        .map_err(|e| sql_error(at, &e))
}
