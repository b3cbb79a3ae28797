//! `delete_comp` (seed 001, 2.5): one compute node removed (its instance
//! by its agent, then its row). Its tables live on the shards: nothing of
//! the cluster's data goes with it.

use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes;
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct DeleteComp;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub comp_id: i64,
    pub hostaddr: String,
    pub port: i64,
    pub agent_port: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Uninstall,
}

#[async_trait::async_trait]
impl Kind for DeleteComp {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "delete_comp"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let id = p.need("cluster_id")?;
        nodes::cluster(env, &id).await?;
        let comp_id = p.need_int("comp_id", 1, i64::MAX)?;
        let all = env.store.comps().await.map_err(nodes::store_err)?;
        let c = all
            .iter()
            .find(|c| c.cluster_id == id && c.comp_id == comp_id)
            .ok_or_else(|| Refused {
                code: codes::NOT_FOUND,
                info: format!(
                    "cluster {id} has no compute node {comp_id} (get_cluster_detail's list_comp lists them)"
                ),
            })?;
        let agent_port = env
            .store
            .machines()
            .await
            .map_err(nodes::store_err)?
            .iter()
            .find(|m| m.hostaddr == c.hostaddr)
            .map_or(env.agents.default_port as i64, |m| m.agent_port);
        let mut planned = Planned::new(
            Plan {
                cluster_id: id.clone(),
                comp_id,
                hostaddr: c.hostaddr.clone(),
                port: c.port,
                agent_port,
            },
            vec![Step::Uninstall],
            vec![
                Resource::Cluster(id),
                Resource::Instance(c.hostaddr.clone(), c.port),
            ],
        );
        planned.steps[0].no_return = true;
        Ok(planned)
    }

    fn label(&self, _step: &Step) -> String {
        "uninstall".into()
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, _step: &Step) -> Result<Value, StepError> {
        crate::cluster::comps::uninstall(ctx, &plan.hostaddr, plan.agent_port, plan.port, "")
            .await?;
        Ok(json!({"comp": format!("{}:{}", plan.hostaddr, plan.port)}))
    }

    fn attachment(&self, _plan: &Plan, _results: &[(Step, Value)]) -> Value {
        json!({})
    }

    fn done_info(&self) -> String {
        "delete comp successfully".into()
    }
}
