//! `set_machine` (seed 001): a machine's `node_stats` (`running` or
//! `dead`: no new node is placed on a dead one).

use crate::cluster::emit::{check_host, codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::store_err;
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct SetMachine;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub hostaddr: String,
    pub node_stats: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    SetNodeStats,
}

#[async_trait::async_trait]
impl Kind for SetMachine {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "set_machine"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let host = p.need("hostaddr")?;
        check_host("hostaddr", &host)?;
        let known = env
            .store
            .machines()
            .await
            .map_err(store_err)?
            .iter()
            .any(|m| m.hostaddr == host);
        if !known {
            return Err(Refused {
                code: codes::NOT_FOUND,
                info: format!("no machine {host}: create_machine registers it"),
            });
        }
        let node_stats = p.choice("node_stats", &["running", "dead"])?;
        Ok(Planned::new(
            Plan {
                hostaddr: host.clone(),
                node_stats,
            },
            vec![Step::SetNodeStats],
            vec![Resource::Machine(host)],
        ))
    }

    fn label(&self, _step: &Step) -> String {
        "set_node_stats".into()
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, _step: &Step) -> Result<Value, StepError> {
        ctx.env
            .store
            .set_machine_stats(&ctx.holder(), &plan.hostaddr, &plan.node_stats)
            .await?;
        Ok(Value::Null)
    }

    fn attachment(&self, _plan: &Plan, _results: &[(Step, Value)]) -> Value {
        json!({})
    }

    fn done_info(&self) -> String {
        "set machine success".into()
    }
}
