//! `get_expand_table_list` (seed 001, 5.1): the tables of a shard worth
//! moving first, by `policy`: `top_size` (data and index bytes) or
//! `top_hit` (rows read and changed since the instance started, from its
//! `userstat` statistics, which every managed instance keeps).

use super::{is_own_table, primaries};
use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::nodes::{self, sql_error};
use crate::cluster::Env;
use mysql_async::prelude::*;
use serde_json::{json, Value};

pub async fn expand_table_list(env: &Env, e: &Envelope) -> Result<Value, Refused> {
    let p = e.paras();
    let cluster_id = p.need("cluster_id")?;
    nodes::cluster(env, &cluster_id).await?;
    let shard = p.need_int("shard_id", 1, 1 << 20)?;
    let policy = p.choice("policy", &["top_size", "top_hit"])?;
    let unreachable = |e: crate::cluster::kind::StepError| Refused {
        code: codes::UNREACHABLE,
        info: e.to_string(),
    };
    if !primaries(env, &cluster_id)
        .await
        .map_err(unreachable)?
        .contains_key(&shard)
    {
        return Err(Refused {
            code: codes::NOT_FOUND,
            info: format!(
                "cluster {cluster_id} has no shard {shard} (get_cluster_detail lists them)"
            ),
        });
    }
    let (mut conn, at) = super::apply::shard_conn(env, &cluster_id, shard)
        .await
        .map_err(unreachable)?;
    let sql = match policy.as_str() {
        "top_size" => {
            "SELECT TABLE_SCHEMA, TABLE_NAME, CAST(DATA_LENGTH + INDEX_LENGTH AS UNSIGNED), \
             CAST(COALESCE(TABLE_ROWS, 0) AS UNSIGNED) FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ('mysql', \
             'information_schema', 'performance_schema', 'sys', 'ccr_sys') \
             ORDER BY 3 DESC, 1, 2"
        }
        _ => {
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, \
             CAST(COALESCE(s.ROWS_READ, 0) + COALESCE(s.ROWS_CHANGED, 0) AS UNSIGNED), \
             CAST(COALESCE(s.ROWS_CHANGED, 0) AS UNSIGNED) FROM information_schema.TABLES t \
             LEFT JOIN information_schema.TABLE_STATISTICS s ON s.TABLE_SCHEMA = t.TABLE_SCHEMA \
             AND s.TABLE_NAME = t.TABLE_NAME WHERE t.TABLE_TYPE = 'BASE TABLE' AND \
             t.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys', \
             'ccr_sys') ORDER BY 3 DESC, 1, 2"
        }
    };
    let rows: Vec<(String, String, u64, u64)> = conn
        .query(sql)
        .await
        .map_err(|e| unreachable(sql_error(&at, &e)))?;
    let _ = conn.disconnect().await;
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|(_, t, _, _)| !is_own_table(t) && !t.contains("__p"))
        .collect();
    let list: Vec<String> = rows.iter().map(|(d, t, _, _)| format!("{d}.{t}")).collect();
    let detail: Vec<Value> = rows
        .iter()
        .map(|(d, t, a, b)| match policy.as_str() {
            "top_size" => json!({"table": format!("{d}.{t}"), "bytes": a, "rows": b}),
            _ => {
                json!({"table": format!("{d}.{t}"), "rows_read_and_changed": a, "rows_changed": b})
            }
        })
        .collect();
    Ok(
        json!({"table_list": list.join(","), "policy": policy, "shard_id": shard.to_string(),
              "tables": detail}),
    )
}
