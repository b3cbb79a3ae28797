//! `add_comps` (seed 001, 2.4): new compute nodes in a cluster, each given
//! its Spider servers and every table of the catalog before it is listed
//! running (clients can use it at once).

use crate::cluster::comps::{self, CompPlacement};
use crate::cluster::emit::{Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, MakeStep, NodeSettings};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::store::cluster::COMP_ID;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct AddComps;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub cluster_name: String,
    pub shards: i64,
    #[serde(flatten)]
    pub settings: NodeSettings,
    pub comps: Vec<CompPlacement>,
    /// The cluster's compute nodes once done.
    pub comps_after: i64,
}

#[async_trait::async_trait]
impl Kind for AddComps {
    type Plan = Plan;
    type Step = MakeStep;

    fn name(&self) -> &'static str {
        "add_comps"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, MakeStep>, Refused> {
        let p = e.paras();
        let id = p.need("cluster_id")?;
        let c = nodes::cluster(env, &id).await?;
        let wanted = p.list("computer_iplists")?;
        let count = match p.int("comps", 1, 64)? {
            Some(n) => n,
            None if !wanted.is_empty() => wanted.len() as i64,
            None => {
                return Err(Refused::bad(
                    "paras.comps: how many compute nodes to add (1 to 64)",
                ))
            }
        };
        let placed = comps::place(env, &id, &wanted, count, &[]).await?;
        let existing = env
            .store
            .comps()
            .await
            .map_err(nodes::store_err)?
            .iter()
            .filter(|x| x.cluster_id == id)
            .count() as i64;
        let mut steps: Vec<MakeStep> = placed
            .iter()
            .map(|x| MakeStep::InstallComp { comp_id: x.comp_id })
            .collect();
        steps.extend(
            placed
                .iter()
                .map(|x| MakeStep::AttachComp { comp_id: x.comp_id }),
        );
        let mut resources = vec![Resource::Cluster(id.clone())];
        resources.extend(
            placed
                .iter()
                .map(|x| Resource::Instance(x.hostaddr.clone(), x.port)),
        );
        let mut planned = Planned::new(
            Plan {
                cluster_id: id,
                cluster_name: c.name.clone(),
                shards: c.shards,
                settings: NodeSettings::of(&c),
                comps: placed.clone(),
                comps_after: existing + count,
            },
            steps,
            resources,
        );
        for x in &placed {
            planned.claims.ports.push((x.hostaddr.clone(), x.port));
            planned.claims.ids.push((COMP_ID, String::new(), x.comp_id));
        }
        Ok(planned)
    }

    fn label(&self, step: &MakeStep) -> String {
        step.label()
    }

    async fn run(
        &self,
        ctx: &StepCtx<'_>,
        plan: &Plan,
        step: &MakeStep,
    ) -> Result<Value, StepError> {
        making(plan).run(ctx, step).await
    }

    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &MakeStep) -> Result<(), StepError> {
        making(plan).undo(ctx, step).await
    }

    fn attachment(&self, plan: &Plan, _results: &[(MakeStep, Value)]) -> Value {
        let list: Vec<Value> = plan.comps.iter().map(CompPlacement::json).collect();
        json!({"cluster_id": plan.cluster_id, "cluster_name": plan.cluster_name,
               "shards": plan.shards.to_string(), "comps": plan.comps_after.to_string(),
               "list_comp": list})
    }

    fn done_info(&self) -> String {
        "add comps successfully".into()
    }
}

fn making(plan: &Plan) -> nodes::Making<'_> {
    nodes::Making {
        cluster_id: &plan.cluster_id,
        settings: &plan.settings,
        placements: &[],
        shards_after: plan.shards,
        comps: &plan.comps,
    }
}
