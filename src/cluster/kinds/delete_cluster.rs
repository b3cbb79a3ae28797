//! `delete_cluster` (seed 001, 2.9): every instance uninstalled (no
//! process, datadir or reserved port left), then the cluster's rows.

use crate::cluster::emit::{Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, RemoveStep, Target};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::store::cluster::InstanceRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct DeleteCluster;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub cluster_name: String,
    pub targets: Vec<Target>,
}

/// The instances to remove, each with its machine's agent port.
pub async fn targets(env: &Env, instances: &[&InstanceRow]) -> Result<Vec<Target>, Refused> {
    let machines = env.store.machines().await.map_err(nodes::store_err)?;
    Ok(instances
        .iter()
        .map(|i| Target {
            hostaddr: i.hostaddr.clone(),
            port: i.port,
            agent_port: machines
                .iter()
                .find(|m| m.hostaddr == i.hostaddr)
                .map_or(env.agents.default_port as i64, |m| m.agent_port),
            shard: i.shard,
        })
        .collect())
}

/// One uninstall per target, then unregister.
pub fn steps(targets: &[Target]) -> Vec<RemoveStep> {
    let mut steps: Vec<RemoveStep> = targets
        .iter()
        .map(|t| RemoveStep::Uninstall {
            hostaddr: t.hostaddr.clone(),
            port: t.port,
        })
        .collect();
    steps.push(RemoveStep::Unregister);
    steps
}

/// `uninstall:HOST:PORT`: the instance removed by its agent, then its row.
pub async fn remove(
    ctx: &StepCtx<'_>,
    targets: &[Target],
    host: &str,
    port: i64,
) -> Result<Value, StepError> {
    let t = targets
        .iter()
        .find(|t| t.hostaddr == host && t.port == port)
        .ok_or_else(|| StepError::definite(format!("no target {host}:{port}")))?;
    if t.shard == -1 {
        crate::cluster::comps::uninstall(ctx, host, t.agent_port, port, "").await?;
        return Ok(json!({"computer_hosts": format!("{host}_{port}"), "computer_state": "done"}));
    }
    nodes::uninstall(ctx, host, t.agent_port, port, "").await?;
    ctx.env
        .store
        .delete_instance(&ctx.holder(), host, port)
        .await?;
    Ok(json!({"storage_hosts": format!("{host}_{port}"), "storage_state": "done"}))
}

#[async_trait::async_trait]
impl Kind for DeleteCluster {
    type Plan = Plan;
    type Step = RemoveStep;

    fn name(&self) -> &'static str {
        "delete_cluster"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, RemoveStep>, Refused> {
        let id = e.paras().need("cluster_id")?;
        let c = nodes::cluster(env, &id).await?;
        let all = env.store.instances().await.map_err(nodes::store_err)?;
        let mine: Vec<&InstanceRow> = all.iter().filter(|i| i.cluster_id == id).collect();
        let mut targets = targets(env, &mine).await?;
        // Its compute nodes go first (shard -1 marks them).
        let machines = env.store.machines().await.map_err(nodes::store_err)?;
        let comps: Vec<Target> = env
            .store
            .comps()
            .await
            .map_err(nodes::store_err)?
            .into_iter()
            .filter(|c| c.cluster_id == id)
            .map(|c| Target {
                agent_port: machines
                    .iter()
                    .find(|m| m.hostaddr == c.hostaddr)
                    .map_or(env.agents.default_port as i64, |m| m.agent_port),
                hostaddr: c.hostaddr,
                port: c.port,
                shard: -1,
            })
            .collect();
        targets.splice(0..0, comps);
        let mut resources = vec![Resource::Cluster(id.clone())];
        resources.extend(
            targets
                .iter()
                .map(|t| Resource::Instance(t.hostaddr.clone(), t.port)),
        );
        let mut planned = Planned::new(
            Plan {
                cluster_id: id,
                cluster_name: c.name,
                targets: targets.clone(),
            },
            steps(&targets),
            resources,
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
                remove(ctx, &plan.targets, hostaddr, *port).await
            }
            RemoveStep::Unregister => {
                ctx.env
                    .store
                    .delete_cluster_comps(&ctx.holder(), &plan.cluster_id)
                    .await?;
                ctx.env
                    .store
                    .delete_cluster(&ctx.holder(), &plan.cluster_id)
                    .await?;
                Ok(Value::Null)
            }
        }
    }

    fn attachment(&self, plan: &Plan, results: &[(RemoveStep, Value)]) -> Value {
        let hosts: String = results
            .iter()
            .filter(|(s, _)| matches!(s, RemoveStep::Uninstall { .. }))
            .filter_map(|(_, r)| r["storage_hosts"].as_str())
            .map(|h| h.to_string() + ";")
            .collect();
        let computers: Vec<Value> = results
            .iter()
            .filter_map(|(_, r)| r["computer_hosts"].as_str())
            .map(|h| json!({"computer_hosts": h, "computer_state": "done"}))
            .collect();
        json!({"cluster_id": plan.cluster_id, "cluster_name": plan.cluster_name,
               "job_steps": "shard", "storage_state": "done",
               "shard_step": [{"cluster_id": plan.cluster_id, "error_code": 0, "error_info": "OK",
                               "rollback_flag": "1", "storage_hosts": hosts, "storage_state": "done"}],
               "computer_state": "done", "computer_step": computers})
    }

    fn done_info(&self) -> String {
        "delete cluster successfully".into()
    }
}
