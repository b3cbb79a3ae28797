//! `logical_restore` (seed 001, 9): one table as it was at `restore_time`,
//! into the destination cluster: the newest logical backup of it finished
//! at or before that time is loaded, then its row changes from the binlog
//! archive up to and including that time are applied, under `new_db_table`
//! when given. Both forms: `src_cluster_id`, `dst_cluster_id`, `db_table`,
//! `restore_time` (and `new_db_table`); or Klustron's clients'
//! `restore_type: "table"` with `restore: [{db_table, new_db_table,
//! restore_time}]`. A target table that exists on the destination is
//! refused, naming it.
//!
//! The table is built in a scratch database on the destination shard's
//! primary (`_ccr_restore_JOB_N`: made, loaded from the chunks, the
//! archived row changes of that one table applied through the agent's
//! `replay_binlog` under the destination's own GTIDs; statements such as
//! DDL are not replayed), then renamed into place in one statement: a
//! restore cut off leaves no half table under the target's name, and is
//! done again from the start.

use super::manual_backup_cluster::storage;
use crate::cluster::backups;
use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::logical::{self, Manifest};
use crate::cluster::resource::Resource;
use crate::cluster::{nodes, Env};
use crate::db::quote_ident;
use crate::protocol::{Request, StorageOp, StorageWork, TableReplay};
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct LogicalRestore;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Item {
    pub new_database: String,
    pub new_table: String,
    pub restore_time: String,
    pub stop: i64,
    pub manifest: Manifest,
    pub dst_shard: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub src_cluster_id: String,
    pub dst_cluster_id: String,
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Restore { item: usize },
}

/// `(db_table, new_db_table, restore_time)` of each table asked for.
fn asked(e: &Envelope) -> Result<Vec<(String, Option<String>, String)>, Refused> {
    let p = e.paras();
    if let Some(t) = p.text("restore_type")? {
        if t != "table" {
            return Err(Refused::bad(format!(
                "paras.restore_type {t:?}: only \"table\""
            )));
        }
    }
    match e.paras.get("restore") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let field = |k: &str| v[k].as_str().map(str::to_string);
                Ok((
                    field("db_table").ok_or_else(|| {
                        Refused::bad(format!("paras.restore[{i}].db_table: missing"))
                    })?,
                    field("new_db_table").filter(|t| !t.is_empty()),
                    field("restore_time")
                        .or(p.text("restore_time").ok().flatten())
                        .ok_or_else(|| {
                            Refused::bad(format!("paras.restore[{i}].restore_time: missing"))
                        })?,
                ))
            })
            .collect(),
        Some(_) => Err(Refused::bad("paras.restore: expected a non-empty array")),
        None => Ok(vec![(
            p.need("db_table")?,
            p.text("new_db_table")?.filter(|t| !t.is_empty()),
            p.need("restore_time")?,
        )]),
    }
}

#[async_trait::async_trait]
impl Kind for LogicalRestore {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "logical_restore"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let src = p.need("src_cluster_id")?;
        let dst = p.need("dst_cluster_id")?;
        let s = storage(env)?;
        nodes::cluster(env, &dst).await?;
        let unreachable = |e: String| Refused {
            code: codes::UNREACHABLE,
            info: e,
        };
        let dst_shards = backups::shards_of(env, &dst)
            .await
            .map_err(nodes::store_err)?;
        let mut items = Vec::new();
        let mut resources = Vec::new();
        for (db_table, new_db_table, time) in asked(e)? {
            let (database, table) = logical::parse_table(&db_table).map_err(Refused::bad)?;
            let (new_database, new_table) = match &new_db_table {
                Some(t) => logical::parse_table(t).map_err(Refused::bad)?,
                None => (database.clone(), table.clone()),
            };
            let stop = backups::parse_local_time(&time).map_err(Refused::bad)?;
            let list = logical::manifests(s, &src, &database, &table)
                .await
                .map_err(unreachable)?;
            let manifest = list
                .iter()
                .rev()
                .find(|m| m.finished_at <= stop)
                .cloned()
                .ok_or_else(|| Refused {
                    code: codes::NOT_FOUND,
                    info: format!(
                        "no logical backup of {db_table} in cluster {src} finished at or before \
                         {time} ({} in all: run logical_backup first)",
                        list.len()
                    ),
                })?;
            // The archive must hold the table's changes up to the time.
            let a = backups::archive(s, &src, manifest.shard_id)
                .await
                .map_err(unreachable)?;
            let gtid = crate::archive::Pos::parse(&manifest.gtid).map_err(Refused::bad)?;
            let windows = backups::shard_windows(&[(gtid, manifest.finished_at)], &a);
            if !windows.iter().any(|(a, b)| *a <= stop && stop <= *b) {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "restore_time {time} is outside what the logical backup {} of {db_table} \
                         and the binlog archive after it cover ({}; the service's time zone)",
                        manifest.backup_id,
                        backups::describe(&windows)
                    ),
                });
            }
            if logical::shard_of(env, &dst, &new_database, &new_table)
                .await
                .map_err(unreachable)?
                .is_some()
            {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "{new_database}.{new_table} exists on cluster {dst}: restore under \
                         another name (new_db_table) or drop it first"
                    ),
                });
            }
            let dst_shard = if dst_shards.contains(&manifest.shard_id) {
                manifest.shard_id
            } else {
                *dst_shards
                    .first()
                    .ok_or_else(|| Refused::bad(format!("cluster {dst} has no shard")))?
            };
            resources.push(Resource::Table(
                dst.clone(),
                format!("{new_database}.{new_table}"),
            ));
            items.push(Item {
                new_database,
                new_table,
                restore_time: time,
                stop,
                manifest,
                dst_shard,
            });
        }
        let steps = (0..items.len())
            .map(|item| Step::Restore { item })
            .collect();
        Ok(Planned::new(
            Plan {
                src_cluster_id: src,
                dst_cluster_id: dst,
                items,
            },
            steps,
            resources,
        ))
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Restore { item } => format!("restore:{item}"),
        }
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let s = storage(ctx.env).map_err(|r| StepError::definite(r.info))?;
        let Step::Restore { item } = step;
        let it = &plan.items[*item];
        let m = &it.manifest;
        let dst = &plan.dst_cluster_id;
        let primary = crate::cluster::replicas::primary_of(ctx.env, dst, it.dst_shard).await?;
        let at = format!("{}:{}", primary.hostaddr, primary.port);
        let (user, pw) = nodes::password(ctx.env, dst).await?;
        let mut c = nodes::connect(&primary.hostaddr, primary.port, &user, &pw).await?;
        let sqlerr = |e: mysql_async::Error| nodes::sql_error(&at, &e);
        let scratch = format!("_ccr_restore_{}_{item}", ctx.job_id);
        let target = format!(
            "{}.{}",
            quote_ident(&it.new_database),
            quote_ident(&it.new_table)
        );
        let exists = |db: String, t: String| {
            let q = "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
            (q, (db, t))
        };
        let (q, args) = exists(it.new_database.clone(), it.new_table.clone());
        let done: Option<i64> = c.exec_first(q, args).await.map_err(sqlerr)?;
        let (q, args) = exists(scratch.clone(), m.table.clone());
        let half: Option<i64> = c.exec_first(q, args).await.map_err(sqlerr)?;
        if done.unwrap_or(0) > 0 && half.unwrap_or(0) == 0 {
            // Renamed into place before the manager stopped.
            let rows: Option<u64> = c
                .query_first(format!("SELECT COUNT(*) FROM {target}"))
                .await
                .map_err(sqlerr)?;
            return Ok(
                json!({"table": format!("{}.{}", it.new_database, it.new_table), "rows": rows}),
            );
        }
        let key = nodes::backup_key(ctx.env, &plan.src_cluster_id).await?;
        let cipher = key.as_ref().map(crate::storage::Cipher::from_passphrase);
        let schema = logical::fetch(s, cipher.as_ref(), &m.schema)
            .await
            .map_err(StepError::definite)?;
        let create = String::from_utf8_lossy(&schema).to_string();
        let head = format!("CREATE TABLE {} ", quote_ident(&m.table));
        let body = create.strip_prefix(&head).ok_or_else(|| {
            StepError::definite(format!(
                "the backup's schema.sql does not start with {head}"
            ))
        })?;
        for sql in [
            format!("DROP DATABASE IF EXISTS {}", quote_ident(&scratch)),
            format!("CREATE DATABASE {}", quote_ident(&scratch)),
            format!(
                "CREATE TABLE {}.{} {body}",
                quote_ident(&scratch),
                quote_ident(&m.table)
            ),
        ] {
            c.query_drop(&sql).await.map_err(sqlerr)?;
        }
        let loaded = logical::load(&mut c, s, cipher.as_ref(), m, &scratch, &m.table)
            .await
            .map_err(StepError::definite)?;
        // The table's row changes after the backup, up to the time.
        let gtid = crate::archive::Pos::parse(&m.gtid).map_err(StepError::definite)?;
        let segments: Vec<_> = backups::archive(s, &plan.src_cluster_id, m.shard_id)
            .await
            .map_err(StepError::transient)?
            .segments
            .into_iter()
            .filter(|x| !gtid.has(&x.last) && x.first_ts <= it.stop + 1)
            .collect();
        let agent_port = crate::cluster::shard::agent_port(ctx.env, &primary.hostaddr).await?;
        let admin = nodes::admin(ctx.env, dst).await?;
        let request = Request::Storage(Box::new(StorageOp {
            key: crate::cluster::agents::Agents::key(ctx, ""),
            port: primary.port as u16,
            admin,
            control: None,
            encrypt: key.clone(),
            work: StorageWork::Replay {
                storage: s.url.clone(),
                segments,
                after: m.gtid.clone(),
                stop: Some(it.stop),
                table: Some(TableReplay {
                    database: m.database.clone(),
                    table: m.table.clone(),
                    into_database: scratch.clone(),
                }),
            },
        }));
        let replayed = ctx
            .env
            .agents
            .operate(ctx, &primary.hostaddr, agent_port, request)
            .await?;
        for sql in [
            format!(
                "CREATE DATABASE IF NOT EXISTS {}",
                quote_ident(&it.new_database)
            ),
            format!(
                "RENAME TABLE {}.{} TO {target}",
                quote_ident(&scratch),
                quote_ident(&m.table)
            ),
            format!("DROP DATABASE {}", quote_ident(&scratch)),
        ] {
            c.query_drop(&sql).await.map_err(sqlerr)?;
        }
        let rows: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM {target}"))
            .await
            .map_err(sqlerr)?;
        let _ = c.disconnect().await;
        Ok(
            json!({"table": format!("{}.{}", it.new_database, it.new_table),
                  "from": format!("{}.{}", m.database, m.table), "backup_id": m.backup_id,
                  "backup_gtid": m.gtid, "rows_loaded": loaded, "rows": rows,
                  "binlog_transactions_read": replayed["transactions"],
                  "restore_time": it.restore_time}),
        )
    }

    fn attachment(&self, _plan: &Plan, results: &[(Step, Value)]) -> Value {
        json!({"tables": results.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>()})
    }

    fn done_info(&self) -> String {
        "logical restore successfully".into()
    }
}
