//! `cluster_restore` (seed 001, 4.1): a new, empty cluster with as many
//! shards as the source made what the source was at `restore_time`
//! ("YYYY-MM-DD HH:MM:SS" in the service's time zone). Per shard (the
//! source's shards and the destination's paired in id order): the newest
//! backup finished at or before that time is restored into the
//! destination's primary (`restore_from_storage`), the archived binlog is
//! replayed from the backup's GTID position up to and including the last
//! transaction committed at or before that time, and not one after
//! (`replay_binlog`), then each replica is cloned from the primary. The
//! destination's nodes are read-only from the first step, and the watcher
//! leaves them so (nothing writes, nothing makes a GTID) until the job
//! ends; then it turns each primary writable as for any shard.
//!
//! A time outside the restorable windows is refused naming them.

use super::manual_backup_cluster::storage;
use crate::cluster::backups::{self, Manifest};
use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, Target};
use crate::cluster::resource::Resource;
use crate::cluster::{replicas, Env};
use crate::protocol::{Request, StorageOp, StorageWork};
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct ClusterRestore;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardPlan {
    pub src_shard: i64,
    pub dst_shard: i64,
    pub primary: Target,
    pub replicas: Vec<Target>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub src_cluster_id: String,
    pub dst_cluster_id: String,
    pub restore_time: String,
    pub stop: i64,
    pub manifest: Manifest,
    pub shards: Vec<ShardPlan>,
    /// `backup_encrypt_key` when the request gave one (sealed); else the
    /// source cluster's.
    #[serde(default)]
    pub backup_key_sealed: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    /// Every destination node read-only, replicas stopped.
    Fence,
    Restore {
        shard: i64,
    },
    Replay {
        shard: i64,
    },
    Clone {
        shard: i64,
        node: Target,
    },
}

#[async_trait::async_trait]
impl Kind for ClusterRestore {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "cluster_restore"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let src = p.need("src_cluster_id")?;
        let dst = p.need("dst_cluster_id")?;
        let text = p.need("restore_time")?;
        let stop = backups::parse_local_time(&text).map_err(Refused::bad)?;
        if src == dst {
            return Err(Refused::bad(
                "dst_cluster_id is src_cluster_id: a restore goes into a new, empty cluster",
            ));
        }
        let s = storage(env)?;
        nodes::cluster(env, &dst).await?;
        let all = env.store.instances().await.map_err(nodes::store_err)?;
        let src_shards = backups::shards_of(env, &src)
            .await
            .map_err(nodes::store_err)?;
        let unreachable = |e: String| Refused {
            code: codes::UNREACHABLE,
            info: format!("the backup storage {}: {e}", s.url),
        };
        // The source's shards: its rows, or its newest backup's when the
        // cluster is gone.
        let manifests = backups::manifests(s, &src).await.map_err(unreachable)?;
        let src_shards = if src_shards.is_empty() {
            manifests
                .last()
                .map(|m| m.shards.iter().map(|b| b.shard_id).collect())
                .unwrap_or_default()
        } else {
            src_shards
        };
        if manifests.is_empty() {
            return Err(Refused {
                code: codes::NOT_FOUND,
                info: format!(
                    "cluster {src} has no backup in {}: run manual_backup_cluster first",
                    s.url
                ),
            });
        }
        let cat = backups::catalog(s, &src, &src_shards)
            .await
            .map_err(unreachable)?;
        if !cat.windows.iter().any(|(a, b)| *a <= stop && stop <= *b) {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!(
                    "restore_time {text} is outside cluster {src}'s restorable windows ({}; the \
                     service's time zone): a backup finished at or before it and the archived \
                     binlog after that backup without a gap are needed",
                    backups::describe(&cat.windows)
                ),
            });
        }
        let manifest = cat
            .manifests
            .iter()
            .rev()
            .find(|m| {
                m.finished_at <= stop
                    && src_shards
                        .iter()
                        .all(|s| m.shards.iter().any(|b| b.shard_id == *s))
            })
            .cloned()
            .ok_or_else(|| {
                Refused::bad(format!(
                    "no backup of every shard of cluster {src} before {text}"
                ))
            })?;
        let dst_shards = backups::shards_of(env, &dst)
            .await
            .map_err(nodes::store_err)?;
        if dst_shards.len() != src_shards.len() {
            return Err(Refused::bad(format!(
                "cluster {dst} has {} shards, cluster {src} {}: the destination must be a new, \
                 empty cluster with as many shards",
                dst_shards.len(),
                src_shards.len()
            )));
        }
        let mut shards = Vec::new();
        let mut resources = vec![Resource::Cluster(dst.clone())];
        for (s_id, d_id) in src_shards.iter().zip(&dst_shards) {
            let rows: Vec<&crate::store::cluster::InstanceRow> = all
                .iter()
                .filter(|i| i.cluster_id == dst && i.shard == *d_id)
                .collect();
            nodes::refuse_user_tables(env, &dst, &rows).await?;
            let targets = super::delete_cluster::targets(env, &rows).await?;
            let primary_row = rows.iter().find(|i| i.role == "primary").ok_or_else(|| {
                Refused::bad(format!("cluster {dst}'s shard {d_id} has no primary"))
            })?;
            let (primary, others): (Vec<Target>, Vec<Target>) = targets
                .into_iter()
                .partition(|t| t.hostaddr == primary_row.hostaddr && t.port == primary_row.port);
            resources.push(Resource::Shard(dst.clone(), *d_id));
            shards.push(ShardPlan {
                src_shard: *s_id,
                dst_shard: *d_id,
                primary: primary
                    .into_iter()
                    .next()
                    .ok_or_else(|| Refused::bad("no primary"))?,
                replicas: others,
            });
        }
        let backup_key_sealed = match p.text("backup_encrypt_key")?.filter(|k| !k.is_empty()) {
            Some(k) => env
                .store
                .meta()
                .seal_secret(
                    &format!("cm_restore/{dst}"),
                    "backup_key",
                    &crate::secret::Secret::new(k),
                )
                .map_err(nodes::store_err)?,
            None => String::new(),
        };
        if manifest.encrypted
            && backup_key_sealed.is_empty()
            && nodes::backup_key(env, &src).await.ok().flatten().is_none()
        {
            return Err(Refused::bad(format!(
                "the backup of cluster {src} is encrypted and its key is not known here: send \
                 backup_encrypt_key"
            )));
        }
        let mut steps = vec![Step::Fence];
        for sp in &shards {
            steps.push(Step::Restore {
                shard: sp.dst_shard,
            });
            steps.push(Step::Replay {
                shard: sp.dst_shard,
            });
            for r in &sp.replicas {
                steps.push(Step::Clone {
                    shard: sp.dst_shard,
                    node: r.clone(),
                });
            }
        }
        Ok(Planned::new(
            Plan {
                src_cluster_id: src,
                dst_cluster_id: dst,
                restore_time: text,
                stop,
                manifest,
                shards,
                backup_key_sealed,
            },
            steps,
            resources,
        ))
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Fence => "fence".into(),
            Step::Restore { shard } => format!("restore:{shard}"),
            Step::Replay { shard } => format!("replay:{shard}"),
            Step::Clone { shard, node } => format!("clone:{shard}:{}:{}", node.hostaddr, node.port),
        }
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let s = storage(ctx.env).map_err(|r| StepError::definite(r.info))?;
        let dst = &plan.dst_cluster_id;
        let shard_plan = |shard: &i64| {
            plan.shards
                .iter()
                .find(|x| x.dst_shard == *shard)
                .ok_or_else(|| StepError::definite(format!("no plan for shard {shard}")))
        };
        let admin = nodes::admin(ctx.env, dst).await?;
        let (manager_user, manager_pw) = nodes::password(ctx.env, dst).await?;
        let control = (manager_user != admin.0).then(|| (manager_user.clone(), manager_pw.clone()));
        let encrypt = if plan.backup_key_sealed.is_empty() {
            nodes::backup_key(ctx.env, &plan.src_cluster_id).await?
        } else {
            Some(
                ctx.env
                    .store
                    .meta()
                    .open_secret(
                        &format!("cm_restore/{dst}"),
                        "backup_key",
                        &plan.backup_key_sealed,
                    )
                    .map_err(|e| StepError::definite(e.to_string()))?,
            )
        };
        match step {
            Step::Fence => {
                for sp in &plan.shards {
                    for t in std::iter::once(&sp.primary).chain(&sp.replicas) {
                        let mut c =
                            nodes::connect(&t.hostaddr, t.port, &manager_user, &manager_pw).await?;
                        let at = format!("{}:{}", t.hostaddr, t.port);
                        c.query_drop("SET GLOBAL read_only = ON")
                            .await
                            .map_err(|e| nodes::sql_error(&at, &e))?;
                        if t.port != sp.primary.port || t.hostaddr != sp.primary.hostaddr {
                            c.query_drop("STOP SLAVE")
                                .await
                                .map_err(|e| nodes::sql_error(&at, &e))?;
                        }
                        let _ = c.disconnect().await;
                    }
                }
                Ok(json!({"read_only": true}))
            }
            Step::Restore { shard } => {
                let sp = shard_plan(shard)?;
                let b = plan
                    .manifest
                    .shards
                    .iter()
                    .find(|b| b.shard_id == sp.src_shard)
                    .ok_or_else(|| StepError::definite("the backup has no such shard"))?;
                let request = Request::Storage(Box::new(StorageOp {
                    key: crate::cluster::agents::Agents::key(ctx, ""),
                    port: sp.primary.port as u16,
                    admin: admin.clone(),
                    control: control.clone(),
                    encrypt: encrypt.clone(),
                    work: StorageWork::Restore {
                        storage: s.url.clone(),
                        objects: b.objects.clone(),
                        gtid: b.gtid.clone(),
                    },
                }));
                let r = ctx
                    .env
                    .agents
                    .operate(ctx, &sp.primary.hostaddr, sp.primary.agent_port, request)
                    .await?;
                Ok(
                    json!({"backup_id": plan.manifest.backup_id, "gtid": r["gtid"], "bytes": r["bytes"]}),
                )
            }
            Step::Replay { shard } => {
                let sp = shard_plan(shard)?;
                let b = plan
                    .manifest
                    .shards
                    .iter()
                    .find(|b| b.shard_id == sp.src_shard)
                    .ok_or_else(|| StepError::definite("the backup has no such shard"))?;
                let after = crate::archive::Pos::parse(&b.gtid).map_err(StepError::definite)?;
                let archive = backups::archive(s, &plan.src_cluster_id, sp.src_shard)
                    .await
                    .map_err(StepError::transient)?;
                let segments: Vec<_> = archive
                    .segments
                    .into_iter()
                    .filter(|m| !after.has(&m.last) && m.first_ts <= plan.stop + 1)
                    .collect();
                let request = Request::Storage(Box::new(StorageOp {
                    key: crate::cluster::agents::Agents::key(ctx, ""),
                    port: sp.primary.port as u16,
                    admin: admin.clone(),
                    control: control.clone(),
                    encrypt: encrypt.clone(),
                    work: StorageWork::Replay {
                        storage: s.url.clone(),
                        segments,
                        after: b.gtid.clone(),
                        stop: Some(plan.stop),
                        table: None,
                    },
                }));
                ctx.env
                    .agents
                    .operate(ctx, &sp.primary.hostaddr, sp.primary.agent_port, request)
                    .await
            }
            Step::Clone { shard, node } => {
                let sp = shard_plan(shard)?;
                replicas::clone(ctx, dst, *shard, node, &sp.primary, None, 0, false).await
            }
        }
    }

    async fn undo(&self, _ctx: &StepCtx<'_>, _plan: &Plan, _step: &Step) -> Result<(), StepError> {
        Ok(())
    }

    fn attachment(&self, plan: &Plan, results: &[(Step, Value)]) -> Value {
        let shards: Vec<Value> = plan
            .shards
            .iter()
            .map(|sp| {
                let replay = results.iter().find_map(|(s, v)| match s {
                    Step::Replay { shard } if *shard == sp.dst_shard => Some(v.clone()),
                    _ => None,
                });
                let b = plan
                    .manifest
                    .shards
                    .iter()
                    .find(|b| b.shard_id == sp.src_shard);
                json!({
                    "src_shard_id": sp.src_shard, "dst_shard_id": sp.dst_shard,
                    "backup_gtid": b.map(|b| b.gtid.clone()),
                    "restored_to": replay.as_ref().map(|r| r["restored_to"].clone()),
                    "transactions_replayed": replay.as_ref().map(|r| r["transactions"].clone()),
                    "tables": replay.as_ref().map(|r| r["tables"].clone()),
                })
            })
            .collect();
        json!({"backup_id": plan.manifest.backup_id, "restore_time": plan.restore_time,
               "shards": shards})
    }

    fn done_info(&self) -> String {
        "restore cluster successfully".into()
    }
}
