//! `manual_backup_cluster` (seed 001, 3.1): one physical backup per shard
//! to the backup storage, taken on the shard's least-lagging replica (on
//! its primary only when it has none), streamed through that node's agent
//! (`backup_to_storage`: compressed, every object hashed), with the GTID
//! position it holds. The manifest is written last, once every object is
//! confirmed in the storage at the size its hash was taken over: a backup
//! without a manifest does not exist. A failed job removes what it stored.
//!
//! The manager's own store (`cluster_id: "-1"`) is refused by this
//! version, saying so.

use crate::cluster::backups::{self, Manifest, ShardBackup};
use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::resource::Resource;
use crate::cluster::{nodes, replicas, Env};
use crate::protocol::{Request, StorageOp, StorageWork};
use crate::storage::Stored;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct ManualBackupCluster;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub backup_id: String,
    pub storage: String,
    pub started_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Backup { shard: i64 },
    Manifest { shards: Vec<i64> },
}

/// What a shard's backup step answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Taken {
    #[serde(default)]
    encrypted: bool,
    node: String,
    gtid: String,
    raw_bytes: u64,
    objects: Vec<Stored>,
}

/// The storage, or the refusal saying there is none.
pub fn storage(env: &Env) -> Result<&crate::storage::Storage, Refused> {
    env.storage.as_ref().ok_or_else(|| Refused {
        code: codes::CONFLICT,
        info: match &env.settings.backup.storage {
            None => {
                "no backup storage: set [backup] storage = \"s3://BUCKET/PREFIX?endpoint=...\" \
                     (or \"file:///PATH\") in conf/syncer.toml, or --backup-storage"
                    .into()
            }
            Some(url) => format!(
                "the backup storage {url} cannot be used (see the service's log: S3 credentials \
                 come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ),
        },
    })
}

#[async_trait::async_trait]
impl Kind for ManualBackupCluster {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "manual_backup_cluster"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let id = p.need("cluster_id")?;
        if id == "-1" {
            return Err(Refused {
                code: codes::NOT_BUILT,
                info: "cluster_id -1 (a backup of the manager's own store) is not built in this \
                       version: back up the store's database with its own tools (for SQLite, \
                       `sqlite3 DB_DIR/ccr.db \".backup FILE\"`)"
                    .into(),
            });
        }
        let s = storage(env)?;
        nodes::cluster(env, &id).await?;
        let shards = backups::shards_of(env, &id)
            .await
            .map_err(nodes::store_err)?;
        if shards.is_empty() {
            return Err(Refused::bad(format!(
                "cluster {id} has no shard to back up"
            )));
        }
        let now = chrono::Utc::now();
        // The time, and a random tag: the job's id is not known yet.
        let mut tag = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tag)
            .map_err(|_| Refused::bad("the system's random source failed"))?;
        let backup_id = format!(
            "{}-{}",
            now.format("%Y%m%dT%H%M%SZ"),
            crate::storage::hex(&tag)
        );
        let mut steps: Vec<Step> = shards.iter().map(|s| Step::Backup { shard: *s }).collect();
        steps.push(Step::Manifest {
            shards: shards.clone(),
        });
        // A backup holds no shard: failovers and other jobs go on beside it.
        Ok(Planned::new(
            Plan {
                cluster_id: id.clone(),
                backup_id,
                storage: s.url.clone(),
                started_at: now.timestamp(),
            },
            steps,
            vec![Resource::Table(id, "*backup*".into())],
        ))
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Backup { shard } => format!("backup:{shard}"),
            Step::Manifest { .. } => "manifest".into(),
        }
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let s = storage(ctx.env).map_err(|r| StepError::definite(r.info))?;
        match step {
            Step::Backup { shard } => {
                let probes = replicas::probe_shard(ctx.env, &plan.cluster_id, *shard)
                    .await
                    .map_err(|r| StepError::transient(r.info))?;
                let busy = replicas::busy(ctx.env, ctx.job_id)
                    .await
                    .map_err(|r| StepError::transient(r.info))?;
                let node = replicas::choose(&probes, &[], &busy, None, true)
                    .map_err(StepError::transient)?;
                let is_replica = node.role != "primary";
                let agent_port = crate::cluster::shard::agent_port(ctx.env, &node.hostaddr).await?;
                let (admin_user, admin_pw) = nodes::password(ctx.env, &plan.cluster_id).await?;
                let request = Request::Storage(Box::new(StorageOp {
                    key: crate::cluster::agents::Agents::key(ctx, ""),
                    port: node.port as u16,
                    admin: (admin_user, admin_pw),
                    control: None,
                    encrypt: nodes::backup_key(ctx.env, &plan.cluster_id).await?,
                    work: StorageWork::Backup {
                        storage: s.url.clone(),
                        prefix: format!(
                            "{}{}/shard_{shard}/",
                            backups::backups_prefix(&plan.cluster_id),
                            plan.backup_id
                        ),
                        safe_slave: is_replica,
                        object_bytes: ctx.env.settings.backup.object_bytes,
                    },
                }));
                let r = ctx
                    .env
                    .agents
                    .operate(ctx, &node.hostaddr, agent_port, request)
                    .await?;
                Ok(json!({
                    "node": format!("{}:{}", node.hostaddr, node.port),
                    "gtid": r["gtid"], "raw_bytes": r["raw_bytes"], "objects": r["objects"],
                    "encrypted": r["encrypted"],
                    "seconds": r["seconds"],
                }))
            }
            Step::Manifest { shards } => {
                let mut out = Vec::new();
                let mut encrypted = false;
                for shard in shards {
                    let v = ctx.earlier(&format!("backup:{shard}")).ok_or_else(|| {
                        StepError::definite(format!("shard {shard}'s backup left no result"))
                    })?;
                    let t: Taken = serde_json::from_value(v.clone()).map_err(|e| {
                        StepError::definite(format!("shard {shard}'s backup answered {e}"))
                    })?;
                    for o in &t.objects {
                        match s.size(&o.key).await.map_err(StepError::transient)? {
                            Some(n) if n == o.bytes => {}
                            other => {
                                return Err(StepError::definite(format!(
                                    "{} is {other:?} bytes in the storage, not the {} stored",
                                    o.key, o.bytes
                                )))
                            }
                        }
                    }
                    // Objects an earlier attempt left (an agent killed
                    // mid-backup) that this backup does not list go.
                    let prefix = format!(
                        "{}{}/shard_{shard}/",
                        backups::backups_prefix(&plan.cluster_id),
                        plan.backup_id
                    );
                    for l in s.list(&prefix).await.map_err(StepError::transient)? {
                        if !t.objects.iter().any(|o| o.key == l.key) {
                            s.delete(&l.key).await.map_err(StepError::transient)?;
                        }
                    }
                    encrypted |= t.encrypted;
                    out.push(ShardBackup {
                        shard_id: *shard,
                        node: t.node,
                        gtid: t.gtid,
                        raw_bytes: t.raw_bytes,
                        objects: t.objects,
                    });
                }
                let m = Manifest {
                    format: 1,
                    backup_id: plan.backup_id.clone(),
                    cluster_id: plan.cluster_id.clone(),
                    job_id: ctx.job_id.to_string(),
                    started_at: plan.started_at,
                    finished_at: chrono::Utc::now().timestamp(),
                    compression: "gzip".into(),
                    encrypted,
                    shards: out,
                };
                let key = backups::manifest_key(&plan.cluster_id, &plan.backup_id);
                s.put(&key, serde_json::to_vec_pretty(&m).unwrap_or_default())
                    .await
                    .map_err(StepError::transient)?;
                Ok(json!({"manifest": key, "finished_at": backups::local_time(m.finished_at)}))
            }
        }
    }

    /// What a shard's backup stored goes (it has no manifest).
    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<(), StepError> {
        if let (Step::Backup { shard }, Some(s)) = (step, ctx.env.storage.as_ref()) {
            let prefix = format!(
                "{}{}/shard_{shard}/",
                backups::backups_prefix(&plan.cluster_id),
                plan.backup_id
            );
            for o in s.list(&prefix).await.map_err(StepError::transient)? {
                s.delete(&o.key).await.map_err(StepError::transient)?;
            }
        }
        Ok(())
    }

    fn attachment(&self, plan: &Plan, results: &[(Step, Value)]) -> Value {
        let shards: Vec<Value> = results
            .iter()
            .filter_map(|(step, v)| match step {
                Step::Backup { shard } => Some(json!({
                    "shard_id": shard, "node": v["node"], "gtid": v["gtid"],
                    "bytes": v["objects"].as_array().map_or(0, |o| o.iter().map(|x| x["bytes"].as_u64().unwrap_or(0)).sum::<u64>()),
                    "raw_bytes": v["raw_bytes"], "seconds": v["seconds"],
                })),
                Step::Manifest { .. } => None,
            })
            .collect();
        json!({"backup_id": plan.backup_id, "storage": plan.storage, "shards": shards})
    }

    fn done_info(&self) -> String {
        "backup cluster successfully".into()
    }
}
