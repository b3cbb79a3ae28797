//! `manual_switch`: a planned switchover of a shard's primary with no lost
//! transaction. `master_hostaddr` names the primary the caller believes is
//! current (`host_port` or `host:port`), so that a repeated call is refused
//! rather than switching again; `assign_hostaddr` the replica to promote
//! (else the best candidate, as a failover chooses it). The old primary is
//! set read-only, its open transactions drained (at most 5 s) and its
//! clients' connections killed; the candidate catches up to the old
//! primary's exact GTID position and is promoted; the old primary follows
//! it. A failure before the promotion makes the old primary writable
//! again. The attachment gives the write-unavailable time, measured.

use super::failover::{elected, rejoin_old, switch_attachment};
use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, sql_error};
use crate::cluster::resource::Resource;
use crate::cluster::shard::{self, Election, Promote};
use crate::cluster::Env;
use crate::store::cluster::InstanceRow;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub struct ManualSwitch;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub shard: i64,
    pub old: InstanceRow,
    /// `host:port` of the replica to promote, when named.
    pub assign: Option<String>,
    pub requested_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Demote,
    CatchUp,
    Promote,
    Rejoin,
}

/// `host_port` or `host:port`.
pub fn host_port(key: &str, text: &str) -> Result<(String, i64), Refused> {
    let (h, p) = text
        .rsplit_once(':')
        .or_else(|| text.rsplit_once('_'))
        .ok_or_else(|| {
            Refused::bad(format!(
                "paras.{key}: {text:?} is not host_port or host:port"
            ))
        })?;
    let port = p
        .parse::<i64>()
        .ok()
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| Refused::bad(format!("paras.{key}: {p:?} is not a port")))?;
    crate::cluster::emit::check_host(key, h)?;
    Ok((h.to_string(), port))
}

/// How long the old primary's open transactions may take to end.
const DRAIN: Duration = Duration::from_secs(5);

#[async_trait::async_trait]
impl Kind for ManualSwitch {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "manual_switch"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let cluster_id = p.need("cluster_id")?;
        nodes::cluster(env, &cluster_id).await?;
        let shard = p.need_int("shard_id", 1, i64::MAX)?;
        let (mh, mp) = host_port("master_hostaddr", &p.need("master_hostaddr")?)?;
        let all = env.store.instances().await.map_err(nodes::store_err)?;
        let in_shard: Vec<&InstanceRow> = all
            .iter()
            .filter(|i| i.cluster_id == cluster_id && i.shard == shard)
            .collect();
        if in_shard.is_empty() {
            return Err(Refused {
                code: codes::NOT_FOUND,
                info: format!("cluster {cluster_id} has no shard {shard}"),
            });
        }
        let current = in_shard
            .iter()
            .find(|i| i.role == "primary")
            .ok_or_else(|| Refused {
                code: codes::CONFLICT,
                info: format!("shard {shard} has no primary now"),
            })?;
        if current.hostaddr != mh || current.port != mp {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!(
                    "paras.master_hostaddr: {mh}:{mp} is not shard {shard}'s primary: {}:{} is \
                     (a switch already done, or a failover): nothing was changed",
                    current.hostaddr, current.port
                ),
            });
        }
        let assign = match p.text("assign_hostaddr")?.filter(|s| !s.is_empty()) {
            None => None,
            Some(a) => {
                let (ah, ap) = host_port("assign_hostaddr", &a)?;
                let n = nodes::node_of(&all, &cluster_id, &ah, ap, Some(shard))?;
                if n.role == "primary" {
                    return Err(Refused::bad(format!(
                        "paras.assign_hostaddr: {ah}:{ap} is the primary already"
                    )));
                }
                if n.state != "running" {
                    return Err(Refused {
                        code: codes::CONFLICT,
                        info: format!(
                            "paras.assign_hostaddr: {ah}:{ap} is {} ({}): it cannot be promoted",
                            n.state, n.note
                        ),
                    });
                }
                Some(format!("{ah}:{ap}"))
            }
        };
        if !in_shard
            .iter()
            .any(|i| i.role != "primary" && i.state == "running")
        {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!("shard {shard} has no running replica to promote"),
            });
        }
        let mut planned = Planned::new(
            Plan {
                cluster_id: cluster_id.clone(),
                shard,
                old: (*current).clone(),
                assign,
                requested_at: chrono::Utc::now().timestamp_millis(),
            },
            vec![Step::Demote, Step::CatchUp, Step::Promote, Step::Rejoin],
            vec![Resource::Shard(cluster_id, shard)],
        );
        planned.steps[2].no_return = true;
        planned.steps[3].no_return = true;
        Ok(planned)
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Demote => "demote",
            Step::CatchUp => "catch_up",
            Step::Promote => "promote",
            Step::Rejoin => "rejoin",
        }
        .into()
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let old = &plan.old;
        let name = format!("{}:{}", old.hostaddr, old.port);
        let (user, pw) = nodes::password(ctx.env, &plan.cluster_id).await?;
        match step {
            Step::Demote => {
                let demoted_at = chrono::Utc::now().timestamp_millis();
                let mut conn = nodes::connect(&old.hostaddr, old.port, &user, &pw).await?;
                conn.query_drop("SET GLOBAL read_only = ON")
                    .await
                    .map_err(|e| sql_error(&name, &e))?;
                let started = Instant::now();
                let (open, idle) = loop {
                    // Writes in flight: a statement running in a transaction
                    // that changed rows (a commit waiting for a replica's
                    // acknowledgement among them). A reader's snapshot (a
                    // CCR job's, a report's) is not waited for, nor is a
                    // transaction idle between statements: nothing of it
                    // was acknowledged, and the fence below ends it.
                    let trx: Vec<(Option<String>,)> = conn
                        .query(
                            "SELECT trx_query FROM information_schema.INNODB_TRX \
                             WHERE trx_rows_modified > 0 \
                             AND trx_mysql_thread_id <> CONNECTION_ID()",
                        )
                        .await
                        .map_err(|e| sql_error(&name, &e))?;
                    let open = trx.iter().filter(|(q,)| q.is_some()).count();
                    if open == 0 || started.elapsed() >= DRAIN {
                        break (open, trx.len() - open);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                // Its clients go: they reconnect to the new primary.
                let fenced = shard::fence(ctx.env, old, &user, &pw).await;
                let mut conn = nodes::connect(&old.hostaddr, old.port, &user, &pw).await?;
                let pos: Option<String> = conn
                    .query_first("SELECT @@gtid_binlog_pos")
                    .await
                    .map_err(|e| sql_error(&name, &e))?;
                let _ = conn.disconnect().await;
                Ok(json!({"node": name, "demoted_at": demoted_at,
                          "position": pos.unwrap_or_default(),
                          "open_transactions_left": open,
                          "idle_transactions_ended": idle, "fenced": fenced}))
            }
            Step::CatchUp => {
                let target = ctx
                    .earlier("demote")
                    .and_then(|v| v["position"].as_str())
                    .unwrap_or_default()
                    .to_string();
                let mut v = shard::elect(
                    ctx,
                    &Election {
                        cluster_id: &plan.cluster_id,
                        shard: plan.shard,
                        old: &name,
                        old_state: "",
                        assign: plan.assign.as_deref(),
                        stop_io: false,
                    },
                )
                .await?;
                let host = v["hostaddr"].as_str().unwrap_or_default().to_string();
                let port = v["port"].as_i64().unwrap_or(0);
                let mut conn = nodes::connect(&host, port, &user, &pw).await?;
                shard::wait_gtid(&mut conn, &target, ctx.env.settings.relay_wait)
                    .await
                    .map_err(|w| {
                        StepError::definite(format!(
                            "{host}:{port} did not reach the old primary's position: {w}"
                        ))
                    })?;
                let pos: Option<String> = conn
                    .query_first("SELECT @@gtid_current_pos")
                    .await
                    .map_err(|e| sql_error(&format!("{host}:{port}"), &e))?;
                let _ = conn.disconnect().await;
                v["position"] = json!(pos.unwrap_or_default());
                Ok(v)
            }
            Step::Promote => {
                let chosen = elected(ctx, "catch_up")?;
                let mut v = shard::promote(
                    ctx,
                    &Promote {
                        cluster_id: &plan.cluster_id,
                        shard: plan.shard,
                        old: Some(old),
                        chosen: &chosen,
                        kind: "manual",
                        reason: "manual_switch",
                        failed_at: plan.requested_at,
                        detected_at: plan.requested_at,
                    },
                )
                .await?;
                if let Some(t0) = ctx.earlier("demote").and_then(|d| d["demoted_at"].as_i64()) {
                    let t1 = v["writable_at"].as_i64().unwrap_or(t0);
                    v["write_unavailable_ms"] = json!(t1 - t0);
                }
                Ok(v)
            }
            Step::Rejoin => {
                let chosen = elected(ctx, "catch_up")?;
                let primary = InstanceRow {
                    hostaddr: chosen.hostaddr.clone(),
                    port: chosen.port,
                    ..Default::default()
                };
                rejoin_old(ctx, &plan.cluster_id, old, &primary, &user, &pw).await
            }
        }
    }

    /// Before the promotion: the old primary takes writes again.
    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<(), StepError> {
        if let Step::Demote = step {
            let old = &plan.old;
            let still = shard::rows(ctx.env, &plan.cluster_id, plan.shard)
                .await?
                .into_iter()
                .any(|i| i.hostaddr == old.hostaddr && i.port == old.port && i.role == "primary");
            if still {
                let (user, pw) = nodes::password(ctx.env, &plan.cluster_id).await?;
                let fullsync = nodes::cluster(ctx.env, &plan.cluster_id)
                    .await
                    .map(|c| nodes::NodeSettings::of(&c).fullsync_level > 0)
                    .unwrap_or(false);
                let mut conn = nodes::connect(&old.hostaddr, old.port, &user, &pw).await?;
                shard::open_primary(&mut conn, fullsync)
                    .await
                    .map_err(|e| sql_error(&format!("{}:{}", old.hostaddr, old.port), &e))?;
                let _ = conn.disconnect().await;
            }
        }
        Ok(())
    }

    fn attachment(&self, plan: &Plan, results: &[(Step, Value)]) -> Value {
        let mut a = switch_attachment(
            &plan.cluster_id,
            plan.shard,
            results.iter().map(|(s, r)| (self.label(s), r)),
        );
        if let Some((_, r)) = results.iter().find(|(s, _)| matches!(s, Step::Promote)) {
            a["write_unavailable_ms"] = r["write_unavailable_ms"].clone();
        }
        a
    }

    fn done_info(&self) -> String {
        "manual switch done: the shard has a new primary".into()
    }
}
