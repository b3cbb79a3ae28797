//! `delete_shard` / `delete_shards` (seed 001, 2.3): one shard's instances
//! uninstalled and its rows removed. Refused for a cluster's last shard,
//! and while the shard holds user tables unless `force: "1"`.

use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, RemoveStep, Target};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The kind under one of its two names.
pub struct DeleteShard(pub &'static str);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub cluster_name: String,
    pub shard_id: i64,
    pub shards_after: i64,
    pub targets: Vec<Target>,
}

#[async_trait::async_trait]
impl Kind for DeleteShard {
    type Plan = Plan;
    type Step = RemoveStep;

    fn name(&self) -> &'static str {
        self.0
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, RemoveStep>, Refused> {
        let p = e.paras();
        let id = p.need("cluster_id")?;
        let c = nodes::cluster(env, &id).await?;
        let shard = p.need_int("shard_id", 1, 1 << 20)?;
        let all = env.store.instances().await.map_err(nodes::store_err)?;
        let mine: Vec<_> = all
            .iter()
            .filter(|i| i.cluster_id == id && i.shard == shard)
            .collect();
        if mine.is_empty() {
            return Err(Refused {
                code: codes::NOT_FOUND,
                info: format!("cluster {id} has no shard {shard}"),
            });
        }
        let shards: std::collections::BTreeSet<i64> = all
            .iter()
            .filter(|i| i.cluster_id == id)
            .map(|i| i.shard)
            .collect();
        if shards.len() == 1 {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!("shard {shard} is cluster {id}'s last: delete_cluster removes it"),
            });
        }
        if p.int("force", 0, 1)?.unwrap_or(0) == 0 {
            nodes::refuse_user_tables(env, &id, &mine).await?;
        }
        let targets = super::delete_cluster::targets(env, &mine).await?;
        let mut planned = Planned::new(
            Plan {
                cluster_id: id.clone(),
                cluster_name: c.name,
                shard_id: shard,
                shards_after: c.shards - 1,
                targets: targets.clone(),
            },
            super::delete_cluster::steps(&targets),
            std::iter::once(Resource::Shard(id, shard))
                .chain(
                    targets
                        .iter()
                        .map(|t| Resource::Instance(t.hostaddr.clone(), t.port)),
                )
                .collect(),
        );
        // An uninstalled instance cannot be brought back by a cancel.
        for s in &mut planned.steps {
            s.no_return = matches!(s.step, RemoveStep::Uninstall { .. });
        }
        Ok(planned)
    }

    fn label(&self, step: &RemoveStep) -> String {
        step.label()
    }

    async fn run(
        &self,
        ctx: &StepCtx<'_>,
        plan: &Plan,
        step: &RemoveStep,
    ) -> Result<Value, StepError> {
        match step {
            RemoveStep::Uninstall { hostaddr, port } => {
                super::delete_cluster::remove(ctx, &plan.targets, hostaddr, *port).await
            }
            // The shard's rows went with its instances.
            RemoveStep::Unregister => {
                ctx.env
                    .store
                    .set_shards(&ctx.holder(), &plan.cluster_id, plan.shards_after)
                    .await?;
                Ok(Value::Null)
            }
        }
    }

    fn attachment(&self, _plan: &Plan, _results: &[(RemoveStep, Value)]) -> Value {
        json!({})
    }

    fn done_info(&self) -> String {
        "delete shard successfully".into()
    }
}
