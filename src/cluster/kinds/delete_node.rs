//! `delete_node` / `delete_nodes` (seed 001, 2.7): one replica of a shard
//! stops replicating and is uninstalled (no process, datadir or reserved
//! port left). A shard's primary is refused, naming it; the last replica a
//! shard's `fullsync_level` waits for is refused unless `force: "1"`.

use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, PlannedStep, StepCtx, StepError};
use crate::cluster::nodes::{self, NodeSettings, Target};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The kind under one of its two names.
pub struct DeleteNode(pub &'static str);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub shard_id: i64,
    pub target: Target,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    /// The replica stops replicating and forgets its primary.
    Detach,
    Uninstall,
}

#[async_trait::async_trait]
impl Kind for DeleteNode {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        self.0
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let id = p.need("cluster_id")?;
        let c = nodes::cluster(env, &id).await?;
        let host = p.need("hostaddr")?;
        let port = p.need_int("port", 1, 65535)?;
        let all = env.store.instances().await.map_err(nodes::store_err)?;
        let node = nodes::node_of(&all, &id, &host, port, p.int("shard_id", 1, 1 << 20)?)?;
        if node.role == "primary" {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!(
                    "{host}:{port} is shard {}'s primary: a shard keeps its primary; delete one \
                     of its replicas, or the whole shard (delete_shard)",
                    node.shard
                ),
            });
        }
        let replicas = all
            .iter()
            .filter(|i| i.cluster_id == id && i.shard == node.shard && i.role != "primary")
            .count() as i64;
        let fullsync = NodeSettings::of(&c).fullsync_level;
        let force = p.int("force", 0, 1)?.unwrap_or(0) == 1;
        if replicas - 1 < fullsync && !force {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!(
                    "{host}:{port} is a replica shard {} needs for fullsync_level {fullsync} \
                     (it has {replicas}): without it the primary's writes would wait for a \
                     semi-sync acknowledgement that never comes; add a node first (add_nodes), \
                     or send force: \"1\" to delete it anyway",
                    node.shard
                ),
            });
        }
        let target = super::delete_cluster::targets(env, &[node])
            .await?
            .remove(0);
        let mut planned = Planned::new(
            Plan {
                cluster_id: id.clone(),
                shard_id: node.shard,
                target,
            },
            vec![],
            vec![
                Resource::Shard(id, node.shard),
                Resource::Instance(host, port),
            ],
        );
        planned.steps = vec![
            PlannedStep {
                step: Step::Detach,
                no_return: false,
            },
            // An uninstalled instance cannot be brought back by a cancel.
            PlannedStep {
                step: Step::Uninstall,
                no_return: true,
            },
        ];
        Ok(planned)
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Detach => "detach".into(),
            Step::Uninstall => "uninstall".into(),
        }
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let t = &plan.target;
        match step {
            Step::Detach => {
                let (user, pw) = nodes::password(ctx.env, &plan.cluster_id).await?;
                // An instance that is down replicates nothing: the
                // uninstall removes it all the same.
                let Ok(mut conn) = nodes::connect(&t.hostaddr, t.port, &user, &pw).await else {
                    return Ok(
                        json!({"detached": false, "reason": "the instance does not answer"}),
                    );
                };
                for sql in ["STOP SLAVE", "RESET SLAVE ALL"] {
                    conn.query_drop(sql)
                        .await
                        .map_err(|e| nodes::sql_error(&format!("{}:{}", t.hostaddr, t.port), &e))?;
                }
                let _ = conn.disconnect().await;
                Ok(json!({"detached": true}))
            }
            Step::Uninstall => {
                super::delete_cluster::remove(ctx, std::slice::from_ref(t), &t.hostaddr, t.port)
                    .await
            }
        }
    }

    /// A detached replica follows its primary again.
    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<(), StepError> {
        if let Step::Detach = step {
            let shard: Vec<nodes::Placement> = ctx
                .env
                .store
                .instances()
                .await?
                .into_iter()
                .filter(|i| i.cluster_id == plan.cluster_id && i.shard == plan.shard_id)
                .filter(|i| {
                    i.role == "primary"
                        || (i.hostaddr == plan.target.hostaddr && i.port == plan.target.port)
                })
                .map(|i| nodes::Placement {
                    shard: i.shard,
                    node: i.node,
                    hostaddr: i.hostaddr,
                    port: i.port,
                    agent_port: plan.target.agent_port,
                    datadir: String::new(),
                    role: i.role,
                })
                .collect();
            nodes::replicate(ctx, &plan.cluster_id, &shard, plan.shard_id).await?;
        }
        Ok(())
    }

    fn attachment(&self, _plan: &Plan, _results: &[(Step, Value)]) -> Value {
        json!({})
    }

    fn done_info(&self) -> String {
        "delete node successfully".into()
    }
}
