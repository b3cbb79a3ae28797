//! `rebuild_node` (seed 001, 2.8): replicas made again from a healthy copy
//! of their shard. For each of `rb_nodes` the copy source is the replica
//! with the least delay among those within `allow_replica_delay` seconds
//! (never a node being rebuilt, never one an unfinished job holds: a backup
//! or another rebuild), else the primary when `allow_pull_from_master` is
//! "1"; otherwise the request is refused naming each candidate and why.
//! Rebuilding a shard's primary is refused.
//!
//! Each node is first inspected: its errant transactions (GTIDs it logged
//! that the primary does not have, per domain and server id) go in the
//! job's attachment. Then the streamed clone replaces its datadir; its old
//! datadir is kept until the new one replicates, then removed, or kept
//! aside as `data.before-rebuild-<time>` with `need_backup: "1"`
//! (`hdfs_host` names a backup storage this version does not have yet).
//! `pv_limit` caps the stream at that many MB/s.

use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, PlannedStep, StepCtx, StepError};
use crate::cluster::nodes::{self, Target};
use crate::cluster::replicas;
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::fields::Fields;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct RebuildNode;

/// One node to rebuild, fixed at accept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Node {
    pub target: Target,
    pub source: Target,
    pub need_backup: bool,
    pub hdfs_host: String,
    pub pv_limit: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub nodes: Vec<Node>,
    /// The request's rules for the source, checked again when the rebuild
    /// starts (the source chosen at accept may have fallen behind since).
    pub allow_pull_from_master: bool,
    pub allow_replica_delay: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    /// The node's errant transactions, listed.
    Inspect { hostaddr: String, port: i64 },
    /// The node's datadir replaced by a streamed clone, replicating.
    Rebuild { hostaddr: String, port: i64 },
}

#[async_trait::async_trait]
impl Kind for RebuildNode {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "rebuild_node"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let id = p.need("cluster_id")?;
        nodes::cluster(env, &id).await?;
        let shard_id = p.int("shard_id", 1, 1 << 20)?;
        let allow_primary = p.int("allow_pull_from_master", 0, 1)?.unwrap_or(1) == 1;
        let max_delay = p.int("allow_replica_delay", 0, 86_400 * 365)?.unwrap_or(15);
        let list = match e.paras.get("rb_nodes") {
            Some(Value::Array(a)) if !a.is_empty() => a.clone(),
            Some(Value::Array(_)) | None | Some(Value::Null) => {
                return Err(Refused::bad(
                    "paras.rb_nodes is missing: the nodes to rebuild, each {hostaddr, port}",
                ))
            }
            Some(other) => {
                return Err(Refused::bad(format!(
                    "paras.rb_nodes: expected an array, got {}",
                    crate::fields::kind(other)
                )))
            }
        };
        let all = env.store.instances().await.map_err(nodes::store_err)?;
        let mut asked = Vec::new();
        for (n, item) in list.iter().enumerate() {
            let Value::Object(map) = item else {
                return Err(Refused::bad(format!(
                    "paras.rb_nodes[{n}]: expected an object"
                )));
            };
            let prefix = format!("paras.rb_nodes[{n}].");
            let f = Fields::new(map, &prefix);
            let host = f.need("hostaddr").map_err(Refused::bad)?;
            let port = f.need_int("port", 1, 65535).map_err(Refused::bad)?;
            let node = nodes::node_of(&all, &id, &host, port, shard_id)?;
            if node.role == "primary" {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "{host}:{port} is shard {}'s primary: a primary is not rebuilt; make \
                         another node primary first, or add a replica (add_nodes) and delete \
                         this one",
                        node.shard
                    ),
                });
            }
            if asked
                .iter()
                .any(|(n, ..): &(crate::store::cluster::InstanceRow, _, _, _)| {
                    n.hostaddr == host && n.port == port
                })
            {
                return Err(Refused::bad(format!(
                    "paras.rb_nodes: {host}:{port} is listed twice"
                )));
            }
            let need_backup = f
                .int("need_backup", 0, 1)
                .map_err(Refused::bad)?
                .unwrap_or(0)
                == 1;
            let hdfs_host = f
                .text("hdfs_host")
                .map_err(Refused::bad)?
                .unwrap_or_default();
            let pv_limit = f
                .int("pv_limit", 0, 100_000)
                .map_err(Refused::bad)?
                .unwrap_or(0) as u64;
            asked.push((node.clone(), need_backup, hdfs_host, pv_limit));
        }
        let exclude: Vec<(String, i64)> = asked
            .iter()
            .map(|(n, ..)| (n.hostaddr.clone(), n.port))
            .collect();
        let busy = replicas::busy(env, "").await?;
        let mut plan_nodes = Vec::new();
        let mut probed: Vec<(i64, Vec<replicas::Probe>)> = Vec::new();
        for (node, need_backup, hdfs_host, pv_limit) in asked {
            if !probed.iter().any(|(s, _)| *s == node.shard) {
                probed.push((
                    node.shard,
                    replicas::probe_shard(env, &id, node.shard).await?,
                ));
            }
            let probes = &probed
                .iter()
                .find(|(s, _)| *s == node.shard)
                .expect("probed")
                .1;
            let source = replicas::choose(probes, &exclude, &busy, Some(max_delay), allow_primary)
                .map_err(|why| Refused {
                    code: codes::CONFLICT,
                    info: format!("cannot rebuild {}:{}: {why}", node.hostaddr, node.port),
                })?;
            let source_row = all
                .iter()
                .find(|i| {
                    i.cluster_id == id && i.hostaddr == source.hostaddr && i.port == source.port
                })
                .ok_or_else(|| Refused::bad("the source left the shard"))?;
            let mut targets = super::delete_cluster::targets(env, &[&node, source_row]).await?;
            let source = targets.remove(1);
            let target = targets.remove(0);
            plan_nodes.push(Node {
                target,
                source,
                need_backup,
                hdfs_host,
                pv_limit,
            });
        }
        let mut resources = Vec::new();
        for n in &plan_nodes {
            for r in [
                Resource::Shard(id.clone(), n.target.shard),
                Resource::Instance(n.target.hostaddr.clone(), n.target.port),
                Resource::Instance(n.source.hostaddr.clone(), n.source.port),
            ] {
                if !resources.contains(&r) {
                    resources.push(r);
                }
            }
        }
        let mut steps = Vec::new();
        for n in &plan_nodes {
            let (hostaddr, port) = (n.target.hostaddr.clone(), n.target.port);
            steps.push(PlannedStep {
                step: Step::Inspect {
                    hostaddr: hostaddr.clone(),
                    port,
                },
                no_return: false,
            });
            // A datadir replaced is not put back by a cancel.
            steps.push(PlannedStep {
                step: Step::Rebuild { hostaddr, port },
                no_return: true,
            });
        }
        let note = if plan_nodes
            .iter()
            .any(|n| n.need_backup && !n.hdfs_host.is_empty())
        {
            "hdfs_host: this version has no backup storage yet; need_backup keeps the old \
             datadir aside on its node (data.before-rebuild-<time>)"
                .to_string()
        } else {
            String::new()
        };
        let mut planned = Planned::new(
            Plan {
                cluster_id: id,
                nodes: plan_nodes,
                allow_pull_from_master: allow_primary,
                allow_replica_delay: max_delay,
            },
            vec![],
            resources,
        );
        planned.steps = steps;
        planned.note = note;
        Ok(planned)
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Inspect { hostaddr, port } => format!("inspect:{hostaddr}:{port}"),
            Step::Rebuild { hostaddr, port } => format!("rebuild:{hostaddr}:{port}"),
        }
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let (Step::Inspect { hostaddr, port } | Step::Rebuild { hostaddr, port }) = step;
        let n = plan
            .nodes
            .iter()
            .find(|n| &n.target.hostaddr == hostaddr && n.target.port == *port)
            .ok_or_else(|| StepError::definite(format!("{hostaddr}:{port} is not in the plan")))?;
        match step {
            Step::Inspect { .. } => inspect(ctx, &plan.cluster_id, n).await,
            Step::Rebuild { .. } => {
                let source = source_now(ctx, plan, n).await?;
                replicas::clone(
                    ctx,
                    &plan.cluster_id,
                    n.target.shard,
                    &n.target,
                    &source,
                    None,
                    n.pv_limit,
                    n.need_backup,
                )
                .await
            }
        }
    }

    fn attachment(&self, plan: &Plan, results: &[(Step, Value)]) -> Value {
        let nodes: Vec<Value> = plan
            .nodes
            .iter()
            .map(|n| {
                let of = |want: fn(&Step) -> bool| {
                    results
                        .iter()
                        .find(|(s, _)| {
                            want(s)
                                && matches!(s, Step::Inspect { hostaddr, port } | Step::Rebuild { hostaddr, port }
                                    if *hostaddr == n.target.hostaddr && *port == n.target.port)
                        })
                        .map(|(_, r)| r.clone())
                        .unwrap_or(Value::Null)
                };
                let inspected = of(|s| matches!(s, Step::Inspect { .. }));
                let rebuilt = of(|s| matches!(s, Step::Rebuild { .. }));
                json!({
                    "hostaddr": n.target.hostaddr, "port": n.target.port.to_string(),
                    "source": rebuilt["source"].as_str().map_or_else(
                        || format!("{}:{}", n.source.hostaddr, n.source.port),
                        str::to_string,
                    ),
                    "errant_gtids": inspected["errant_gtids"],
                    "gtid_binlog_state": inspected["gtid_binlog_state"],
                    "gtid_slave_pos": rebuilt["gtid_slave_pos"],
                    "bytes": rebuilt["bytes"],
                    "seconds": rebuilt["seconds"],
                    "previous_datadir": rebuilt["previous_datadir"],
                })
            })
            .collect();
        json!({"cluster_id": plan.cluster_id, "rb_nodes": nodes})
    }

    fn done_info(&self) -> String {
        "rebuild node successfully".into()
    }
}

/// The source as the request's rules choose it now: the one chosen at
/// accept while it still qualifies, else the best that does; none fails
/// the step naming each candidate.
async fn source_now(ctx: &StepCtx<'_>, plan: &Plan, n: &Node) -> Result<Target, StepError> {
    let definite = |r: Refused| StepError::definite(r.info);
    let probes = replicas::probe_shard(ctx.env, &plan.cluster_id, n.target.shard)
        .await
        .map_err(definite)?;
    let exclude: Vec<(String, i64)> = plan
        .nodes
        .iter()
        .map(|x| (x.target.hostaddr.clone(), x.target.port))
        .collect();
    let busy = replicas::busy(ctx.env, ctx.job_id)
        .await
        .map_err(definite)?;
    let planned = (n.source.hostaddr.clone(), n.source.port);
    // The planned source (and the primary, which it may be) first.
    let still: Vec<replicas::Probe> = probes
        .iter()
        .filter(|p| p.role == "primary" || (p.hostaddr == planned.0 && p.port == planned.1))
        .cloned()
        .collect();
    let chosen = match replicas::choose(
        &still,
        &exclude,
        &busy,
        Some(plan.allow_replica_delay),
        plan.allow_pull_from_master,
    ) {
        Ok(p) if p.hostaddr == planned.0 && p.port == planned.1 => return Ok(n.source.clone()),
        _ => replicas::choose(
            &probes,
            &exclude,
            &busy,
            Some(plan.allow_replica_delay),
            plan.allow_pull_from_master,
        )
        .map_err(|why| {
            StepError::definite(format!(
                "cannot rebuild {}:{}: {why}",
                n.target.hostaddr, n.target.port
            ))
        })?,
    };
    let rows = ctx.env.store.instances().await?;
    let row = rows
        .iter()
        .find(|i| {
            i.cluster_id == plan.cluster_id
                && i.hostaddr == chosen.hostaddr
                && i.port == chosen.port
        })
        .ok_or_else(|| StepError::definite("the source left the shard"))?;
    let mut t = super::delete_cluster::targets(ctx.env, &[row])
        .await
        .map_err(definite)?;
    Ok(t.remove(0))
}

/// `inspect:HOST:PORT`: the node's GTID state against its primary's; a
/// node that does not answer is rebuilt all the same (its errant
/// transactions cannot be listed, and the attachment says so).
async fn inspect(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    n: &super::rebuild_node::Node,
) -> Result<Value, StepError> {
    let (user, pw) = nodes::password(ctx.env, cluster_id).await?;
    let primary = replicas::primary_of(ctx.env, cluster_id, n.target.shard).await?;
    let row = |h: &str, p: i64| crate::store::cluster::InstanceRow {
        hostaddr: h.into(),
        port: p,
        ..Default::default()
    };
    let node = replicas::probe(&row(&n.target.hostaddr, n.target.port), &user, &pw).await;
    let theirs = replicas::probe(&row(&primary.hostaddr, primary.port), &user, &pw).await;
    if !theirs.reachable {
        return Err(StepError::transient(format!(
            "the primary {}:{} {}",
            primary.hostaddr, primary.port, theirs.problem
        )));
    }
    if !node.reachable {
        return Ok(
            json!({"errant_gtids": Value::Null, "gtid_binlog_state": Value::Null,
                         "note": format!("the node {}: errant transactions not checked", node.problem)}),
        );
    }
    let errant = replicas::errant(&node.gtid_binlog_state, &theirs.gtid_binlog_state);
    Ok(
        json!({"errant_gtids": errant, "gtid_binlog_state": node.gtid_binlog_state,
              "primary_gtid_binlog_state": theirs.gtid_binlog_state}),
    )
}
