//! `add_shards` (seed 001, 2.2): new shards made like the cluster's others
//! (its `ha_mode` and node settings), numbered after its last shard.

use crate::cluster::emit::{Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, MakeStep, NodeSettings, Placement};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::store::cluster::SHARD_ID;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct AddShards;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub cluster_name: String,
    pub ha_mode: String,
    pub shards_after: i64,
    pub nodes: i64,
    #[serde(flatten)]
    pub settings: NodeSettings,
    pub new_shards: Vec<i64>,
    pub placements: Vec<Placement>,
}

#[async_trait::async_trait]
impl Kind for AddShards {
    type Plan = Plan;
    type Step = MakeStep;

    fn name(&self) -> &'static str {
        "add_shards"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, MakeStep>, Refused> {
        let p = e.paras();
        let id = p.need("cluster_id")?;
        let c = nodes::cluster(env, &id).await?;
        let add = p.need_int("shards", 1, 64)?;
        let nodes = p.int("nodes", 1, 9)?.unwrap_or(c.nodes);
        if c.ha_mode == "no_rep" && nodes != 1 {
            return Err(Refused::bad(
                "paras.nodes: a no_rep cluster has one node per shard",
            ));
        }
        let mut settings = NodeSettings::of(&c);
        settings.fullsync_level = settings.fullsync_level.min(nodes - 1);
        let in_rows = env
            .store
            .instances()
            .await
            .map_err(nodes::store_err)?
            .iter()
            .filter(|i| i.cluster_id == id)
            .map(|i| i.shard)
            .max()
            .unwrap_or(0);
        // Shard ids handed out to unfinished jobs count too (the store
        // refuses one taken twice).
        let taken = env
            .store
            .max_id(SHARD_ID, &id)
            .await
            .map_err(nodes::store_err)?;
        let last = in_rows.max(taken);
        let placements =
            nodes::place(env, &p.list("storage_iplists")?, last + 1, add, nodes).await?;
        let steps = MakeStep::plan(&placements, c.ha_mode == "rbr" && nodes > 1);
        let new_shards: Vec<i64> = (last + 1..=last + add).collect();
        let mut resources = vec![Resource::Cluster(id.clone())];
        resources.extend(nodes::instance_resources(&placements));
        let mut planned = Planned::new(
            Plan {
                cluster_id: id.clone(),
                cluster_name: c.name,
                ha_mode: c.ha_mode,
                shards_after: c.shards + add,
                nodes,
                settings,
                new_shards: new_shards.clone(),
                placements: placements.clone(),
            },
            steps,
            resources,
        );
        planned.claims.ports = nodes::port_claims(&placements);
        planned.claims.ids = new_shards
            .iter()
            .map(|s| (SHARD_ID, id.clone(), *s))
            .collect();
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
        match step {
            MakeStep::Reserve => {
                nodes::reserve_instances(ctx, &plan.cluster_id, &plan.placements).await?;
                Ok(Value::Null)
            }
            other => making(plan).run(ctx, other).await,
        }
    }

    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &MakeStep) -> Result<(), StepError> {
        match step {
            MakeStep::Reserve => nodes::unreserve_instances(ctx, &plan.placements).await?,
            other => making(plan).undo(ctx, other).await?,
        }
        Ok(())
    }

    fn attachment(&self, plan: &Plan, _results: &[(MakeStep, Value)]) -> Value {
        let list: Vec<Value> = plan
            .new_shards
            .iter()
            .map(|s| json!({"shard_id": s.to_string(), "shard_name": format!("shard_{s}")}))
            .collect();
        json!({"cluster_id": plan.cluster_id, "cluster_name": plan.cluster_name,
               "shards": plan.shards_after.to_string(), "comps": "0", "list_shard": list})
    }

    fn done_info(&self) -> String {
        "add shards successfully".into()
    }
}

fn making(plan: &Plan) -> nodes::Making<'_> {
    nodes::Making {
        cluster_id: &plan.cluster_id,
        settings: &plan.settings,
        placements: &plan.placements,
        shards_after: plan.shards_after,
        comps: &[],
    }
}
