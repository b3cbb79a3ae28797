//! `add_nodes` (seed 001, 2.6): `nodes` new replicas in every shard of the
//! cluster (or in `shard_id` only), on the machines of `storage_iplists`
//! (else any running storage machine; a shard's nodes on machines it does
//! not use yet when there are enough). Each new replica is a streamed
//! clone of its shard's least-lagging replica (else of its primary), not a
//! replay of the primary's binlogs, so it works after the primary purged
//! them; it is read-only, semi-sync as its shard's settings say, on the
//! lowest free port of its machine's range, and replicates from the
//! primary by GTID.

use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, PlannedStep, StepCtx, StepError};
use crate::cluster::nodes::{self, NodeSettings, Placement, Target};
use crate::cluster::replicas;
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct AddNodes;

/// Node numbers run 1 to this (a node's server id holds it in one digit).
const MAX_NODE: i64 = 9;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub cluster_name: String,
    pub shards: i64,
    #[serde(flatten)]
    pub settings: NodeSettings,
    pub placements: Vec<Placement>,
    /// Each shard's copy source, chosen at accept.
    pub sources: Vec<(i64, Target)>,
    /// Each shard's node count once done.
    pub nodes_after: Vec<(i64, i64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    /// One row per new node.
    Reserve,
    /// The new node, cloned from its shard's source, replicating.
    Clone { shard: i64, node: i64 },
    /// The new nodes marked running.
    Register,
}

#[async_trait::async_trait]
impl Kind for AddNodes {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "add_nodes"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let id = p.need("cluster_id")?;
        let c = nodes::cluster(env, &id).await?;
        if c.ha_mode == "no_rep" {
            return Err(Refused::bad(
                "cluster is no_rep (one node per shard, no replication): add_nodes needs an rbr cluster",
            ));
        }
        let add = p.need_int("nodes", 1, MAX_NODE - 1)?;
        let wanted = p.list("storage_iplists")?;
        let all = env.store.instances().await.map_err(nodes::store_err)?;
        let mine: Vec<_> = all.iter().filter(|i| i.cluster_id == id).collect();
        let mut shards: Vec<i64> = mine.iter().map(|i| i.shard).collect();
        shards.sort();
        shards.dedup();
        if let Some(s) = p.int("shard_id", 1, 1 << 20)? {
            if !shards.contains(&s) {
                return Err(Refused {
                    code: codes::NOT_FOUND,
                    info: format!("cluster {id} has no shard {s} (get_cluster_detail lists them)"),
                });
            }
            shards = vec![s];
        }
        let machines = env.store.machines().await.map_err(nodes::store_err)?;
        for w in &wanted {
            if !machines.iter().any(|m| &m.hostaddr == w) {
                return Err(Refused {
                    code: codes::NOT_FOUND,
                    info: format!(
                        "paras.storage_iplists: no machine {w}: create_machine registers it"
                    ),
                });
            }
        }
        let usable: Vec<_> = machines
            .iter()
            .filter(|m| {
                crate::cluster::comps::has_type(&m.machine_type, "storage")
                    && m.node_stats == "running"
            })
            .filter(|m| wanted.is_empty() || wanted.contains(&m.hostaddr))
            .collect();
        if usable.is_empty() {
            return Err(Refused::bad(
                "no running storage machine to place the nodes on (create_machine, set_machine node_stats running)",
            ));
        }
        let busy = replicas::busy(env, "").await?;
        let mut taken = env.store.taken_ports().await.map_err(nodes::store_err)?;
        let mut placements = Vec::new();
        let mut sources = Vec::new();
        let mut nodes_after = Vec::new();
        for &shard in &shards {
            let in_shard: Vec<_> = mine.iter().filter(|i| i.shard == shard).collect();
            let used: Vec<i64> = in_shard.iter().map(|i| i.node).collect();
            let free: Vec<i64> = (1..=MAX_NODE).filter(|n| !used.contains(n)).collect();
            if (free.len() as i64) < add {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "shard {shard} has {} nodes: a shard holds at most {MAX_NODE}",
                        used.len()
                    ),
                });
            }
            // The copy source, chosen now (the dry run shows it).
            let probes = replicas::probe_shard(env, &id, shard).await?;
            let source =
                replicas::choose(&probes, &[], &busy, None, true).map_err(|why| Refused {
                    code: codes::UNREACHABLE,
                    info: format!("shard {shard}: {why}"),
                })?;
            let source_target = super::delete_cluster::targets(
                env,
                &[in_shard
                    .iter()
                    .find(|i| i.hostaddr == source.hostaddr && i.port == source.port)
                    .copied()
                    .copied()
                    .ok_or_else(|| Refused::bad("the source left the shard"))?],
            )
            .await?
            .remove(0);
            sources.push((shard, source_target));
            let mut hosts_used: Vec<String> = in_shard.iter().map(|i| i.hostaddr.clone()).collect();
            for node in free.into_iter().take(add as usize) {
                // The machine the shard uses least, then the first listed.
                let m = usable
                    .iter()
                    .min_by_key(|m| hosts_used.iter().filter(|h| **h == m.hostaddr).count())
                    .expect("usable is not empty");
                let (lo, hi) = crate::cluster::emit::port_range("port_range", &m.port_range)?;
                let port = (lo as i64..=hi as i64)
                    .find(|p| !taken.contains(&(m.hostaddr.clone(), *p)))
                    .ok_or_else(|| Refused {
                        code: codes::CONFLICT,
                        info: format!(
                            "machine {} has no free port left in {}",
                            m.hostaddr, m.port_range
                        ),
                    })?;
                taken.push((m.hostaddr.clone(), port));
                hosts_used.push(m.hostaddr.clone());
                placements.push(Placement {
                    shard,
                    node,
                    hostaddr: m.hostaddr.clone(),
                    port,
                    agent_port: m.agent_port,
                    datadir: m.datadir.clone(),
                    role: "replica".into(),
                });
            }
            nodes_after.push((shard, used.len() as i64 + add));
        }
        let mut steps = vec![PlannedStep {
            step: Step::Reserve,
            no_return: false,
        }];
        steps.extend(placements.iter().map(|p| PlannedStep {
            step: Step::Clone {
                shard: p.shard,
                node: p.node,
            },
            no_return: false,
        }));
        steps.push(PlannedStep {
            step: Step::Register,
            no_return: false,
        });
        let mut resources: Vec<Resource> = shards
            .iter()
            .map(|s| Resource::Shard(id.clone(), *s))
            .collect();
        resources.extend(nodes::instance_resources(&placements));
        resources.extend(
            sources
                .iter()
                .map(|(_, t)| Resource::Instance(t.hostaddr.clone(), t.port)),
        );
        let mut planned = Planned::new(
            Plan {
                cluster_id: id,
                cluster_name: c.name.clone(),
                shards: c.shards,
                settings: NodeSettings::of(&c),
                placements: placements.clone(),
                sources,
                nodes_after,
            },
            vec![],
            resources,
        );
        planned.steps = steps;
        planned.claims.ports = nodes::port_claims(&placements);
        Ok(planned)
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Reserve => "reserve".into(),
            Step::Clone { shard, node } => format!("clone:{shard}:{node}"),
            Step::Register => "register".into(),
        }
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        match step {
            Step::Reserve => {
                nodes::reserve_instances(ctx, &plan.cluster_id, &plan.placements).await?;
                Ok(Value::Null)
            }
            Step::Clone { shard, node } => {
                let p = nodes::placement(&plan.placements, *shard, *node)?;
                let source = plan
                    .sources
                    .iter()
                    .find(|(s, _)| s == shard)
                    .map(|(_, t)| t)
                    .ok_or_else(|| StepError::definite(format!("no source for shard {shard}")))?;
                let install =
                    nodes::install_request(ctx, &plan.cluster_id, &plan.settings, p).await?;
                let target = Target {
                    hostaddr: p.hostaddr.clone(),
                    port: p.port,
                    agent_port: p.agent_port,
                    shard: p.shard,
                };
                replicas::clone(
                    ctx,
                    &plan.cluster_id,
                    *shard,
                    &target,
                    source,
                    Some(install),
                    0,
                    false,
                )
                .await
            }
            Step::Register => {
                ctx.env
                    .store
                    .set_cluster_status(&ctx.holder(), &plan.cluster_id, "running")
                    .await?;
                Ok(Value::Null)
            }
        }
    }

    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<(), StepError> {
        match step {
            Step::Reserve => nodes::unreserve_instances(ctx, &plan.placements).await?,
            Step::Clone { shard, node } => {
                let p = nodes::placement(&plan.placements, *shard, *node)?;
                nodes::uninstall(ctx, &p.hostaddr, p.agent_port, p.port, "undo-").await?;
            }
            Step::Register => {}
        }
        Ok(())
    }

    fn attachment(&self, plan: &Plan, _results: &[(Step, Value)]) -> Value {
        let list: Vec<Value> = plan
            .nodes_after
            .iter()
            .map(|(shard, count)| {
                let nodes: Vec<Value> = plan
                    .placements
                    .iter()
                    .filter(|p| p.shard == *shard)
                    .map(|p| {
                        json!({"hostaddr": p.hostaddr, "node_id": p.node.to_string(),
                               "port": p.port.to_string()})
                    })
                    .collect();
                json!({"shard_id": shard.to_string(), "shard_name": format!("shard_{shard}"),
                       "nodes": count.to_string(), "list_node": nodes})
            })
            .collect();
        json!({"cluster_id": plan.cluster_id, "cluster_name": plan.cluster_name,
               "shards": plan.shards.to_string(), "comps": "0", "list_shard": list})
    }

    fn done_info(&self) -> String {
        "add new nodes successfully".into()
    }
}
