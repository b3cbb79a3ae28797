//! `delete_machine` (seed 001): unregisters a machine that holds no
//! instance.

use crate::cluster::emit::{check_host, codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::store_err;
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct DeleteMachine;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub hostaddr: String,
    pub agent_port: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    CheckNoInstances,
    UnregisterMachine,
}

/// Refused while instances live on the machine, naming them.
pub async fn refuse_if_instances(env: &Env, host: &str) -> Result<(), Refused> {
    let mut live: Vec<String> = env
        .store
        .instances()
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|i| i.hostaddr == host)
        .map(|i| format!("{host}:{} of cluster {}", i.port, i.cluster_id))
        .collect();
    live.extend(
        env.store
            .comps()
            .await
            .map_err(store_err)?
            .into_iter()
            .filter(|c| c.hostaddr == host)
            .map(|c| format!("compute node {host}:{} of cluster {}", c.port, c.cluster_id)),
    );
    if live.is_empty() {
        return Ok(());
    }
    Err(Refused {
        code: codes::CONFLICT,
        info: format!(
            "machine {host} still has instances: {} (delete their clusters, shards or compute \
             nodes first)",
            live.join(", ")
        ),
    })
}

#[async_trait::async_trait]
impl Kind for DeleteMachine {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "delete_machine"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let host = e.paras().need("hostaddr")?;
        check_host("hostaddr", &host)?;
        let m = env
            .store
            .machines()
            .await
            .map_err(store_err)?
            .into_iter()
            .find(|m| m.hostaddr == host)
            .ok_or_else(|| Refused {
                code: codes::NOT_FOUND,
                info: format!("no machine {host}: create_machine registers it"),
            })?;
        refuse_if_instances(env, &host).await?;
        Ok(Planned::new(
            Plan {
                hostaddr: host.clone(),
                agent_port: m.agent_port,
            },
            vec![Step::CheckNoInstances, Step::UnregisterMachine],
            vec![Resource::Machine(host)],
        ))
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::CheckNoInstances => "check_no_instances",
            Step::UnregisterMachine => "unregister_machine",
        }
        .into()
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        match step {
            Step::CheckNoInstances => refuse_if_instances(ctx.env, &plan.hostaddr)
                .await
                .map(|()| Value::Null)
                .map_err(|r| StepError::Definite(r.info)),
            Step::UnregisterMachine => {
                ctx.env
                    .store
                    .delete_machine(&ctx.holder(), &plan.hostaddr)
                    .await?;
                Ok(Value::Null)
            }
        }
    }

    fn attachment(&self, _plan: &Plan, _results: &[(Step, Value)]) -> Value {
        json!({})
    }

    fn done_info(&self) -> String {
        "delete machine successfully".into()
    }
}
