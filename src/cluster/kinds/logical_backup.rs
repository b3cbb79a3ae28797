//! `logical_backup` (seed 001, 8): each listed table (`backup[]` of
//! `db_table` as `db.table` and `backup_time` `HH:MM:SS-HH:MM:SS`; also
//! the top-level `db_table` / `backup_time` form; `backup_type: "table"`
//! as Klustron's clients send it) is backed up now as a consistent
//! snapshot at one GTID position ([`crate::cluster::logical`]), and then
//! daily inside its window (the schedule kept in the storage, run by the
//! leader's scheduler). The seed's `postgres_$$_public.t1` form is
//! PostgreSQL's and refused naming ours.

use super::manual_backup_cluster::storage;
use crate::cluster::emit::{Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::logical::{self, Dump};
use crate::cluster::resource::Resource;
use crate::cluster::{nodes, Env};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub struct LogicalBackup;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Item {
    pub database: String,
    pub table: String,
    pub window: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub backup_id: String,
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Dump { item: usize },
    Schedule,
}

/// The tables a request names, each with its window.
fn items(e: &Envelope) -> Result<Vec<Item>, Refused> {
    let p = e.paras();
    if let Some(t) = p.text("backup_type")? {
        if t != "table" {
            return Err(Refused::bad(format!(
                "paras.backup_type {t:?}: only \"table\" (a logical backup of tables)"
            )));
        }
    }
    let mut raw: Vec<(String, String)> = Vec::new();
    match e.paras.get("backup") {
        Some(Value::Array(list)) => {
            for (i, v) in list.iter().enumerate() {
                let field = |k: &str| {
                    v[k].as_str().map(str::to_string).ok_or_else(|| {
                        Refused::bad(format!("paras.backup[{i}].{k}: missing or not a string"))
                    })
                };
                raw.push((field("db_table")?, field("backup_time")?));
            }
        }
        Some(_) => return Err(Refused::bad("paras.backup: expected an array")),
        None => raw.push((p.need("db_table")?, p.need("backup_time")?)),
    }
    if raw.is_empty() {
        return Err(Refused::bad("paras.backup: no table"));
    }
    raw.into_iter()
        .map(|(t, w)| {
            let (database, table) = logical::parse_table(&t).map_err(Refused::bad)?;
            logical::parse_window(&w).map_err(Refused::bad)?;
            Ok(Item {
                database,
                table,
                window: w,
            })
        })
        .collect()
}

#[async_trait::async_trait]
impl Kind for LogicalBackup {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "logical_backup"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let id = e.paras().need("cluster_id")?;
        storage(env)?;
        nodes::cluster(env, &id).await?;
        let items = items(e)?;
        for it in &items {
            let found = logical::shard_of(env, &id, &it.database, &it.table)
                .await
                .map_err(|e| Refused {
                    code: crate::cluster::emit::codes::UNREACHABLE,
                    info: e,
                })?;
            if found.is_none() {
                return Err(Refused {
                    code: crate::cluster::emit::codes::NOT_FOUND,
                    info: format!(
                        "no table {}.{} on any shard of cluster {id}",
                        it.database, it.table
                    ),
                });
            }
        }
        let mut tag = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tag)
            .map_err(|_| Refused::bad("the system's random source failed"))?;
        let backup_id = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            crate::storage::hex(&tag)
        );
        let mut steps: Vec<Step> = (0..items.len()).map(|item| Step::Dump { item }).collect();
        steps.push(Step::Schedule);
        let resources = items
            .iter()
            .map(|i| Resource::Table(id.clone(), format!("{}.{}", i.database, i.table)))
            .collect();
        Ok(Planned::new(
            Plan {
                cluster_id: id,
                backup_id,
                items,
            },
            steps,
            resources,
        ))
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Dump { item } => format!("dump:{item}"),
            Step::Schedule => "schedule".into(),
        }
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let s = storage(ctx.env).map_err(|r| StepError::definite(r.info))?;
        match step {
            Step::Dump { item } => {
                let it = &plan.items[*item];
                let (shard, primary) =
                    logical::shard_of(ctx.env, &plan.cluster_id, &it.database, &it.table)
                        .await
                        .map_err(StepError::transient)?
                        .ok_or_else(|| {
                            StepError::definite(format!(
                                "no table {}.{} on cluster {}",
                                it.database, it.table, plan.cluster_id
                            ))
                        })?;
                let (user, pw) = nodes::password(ctx.env, &plan.cluster_id).await?;
                let key = nodes::backup_key(ctx.env, &plan.cluster_id).await?;
                let cipher = key.as_ref().map(crate::storage::Cipher::from_passphrase);
                let m = logical::dump(&Dump {
                    storage: s,
                    cipher: cipher.as_ref(),
                    cluster_id: &plan.cluster_id,
                    shard_id: shard,
                    host: &primary.hostaddr,
                    port: primary.port,
                    user: &user,
                    password: &pw,
                    database: &it.database,
                    table: &it.table,
                    backup_id: &plan.backup_id,
                })
                .await
                .map_err(StepError::transient)?;
                Ok(json!({"db_table": format!("{}.{}", it.database, it.table),
                          "backup_id": m.backup_id, "gtid": m.gtid, "rows": m.rows,
                          "chunks": m.chunks.len(), "shard_id": shard,
                          "time": crate::cluster::backups::local_time(m.finished_at)}))
            }
            Step::Schedule => {
                let key = logical::schedules_key(&plan.cluster_id);
                let mut all: BTreeMap<String, String> = match s.size(&key).await {
                    Ok(Some(_)) => {
                        serde_json::from_slice(&s.get(&key).await.map_err(StepError::transient)?)
                            .unwrap_or_default()
                    }
                    Ok(None) => BTreeMap::new(),
                    Err(e) => return Err(StepError::transient(e)),
                };
                for it in &plan.items {
                    all.insert(format!("{}.{}", it.database, it.table), it.window.clone());
                }
                s.put(&key, serde_json::to_vec_pretty(&all).unwrap_or_default())
                    .await
                    .map_err(StepError::transient)?;
                Ok(json!({"schedules": all}))
            }
        }
    }

    fn attachment(&self, _plan: &Plan, results: &[(Step, Value)]) -> Value {
        let tables: Vec<Value> = results
            .iter()
            .filter(|(s, _)| matches!(s, Step::Dump { .. }))
            .map(|(_, v)| v.clone())
            .collect();
        json!({"tables": tables})
    }

    fn done_info(&self) -> String {
        "logical backup successfully".into()
    }
}
