//! `failover`: the manager's own job when a shard's primary failed (the
//! watcher, [`crate::cluster::watch`], accepts it; a client cannot). The old
//! primary fenced (read-only where it can be reached, marked fenced in the
//! store either way), the most advanced replica without errant
//! transactions chosen and brought level, promoted with the store's view
//! and the journal row in one transaction, the others repointed, and the
//! old primary rejoined as a replica when it can be (else the watcher does
//! it when it returns, or says what `rebuild_node` would do).

use crate::cluster::emit::{Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::resource::Resource;
use crate::cluster::shard::{self, Elected, Election, Promote, Rejoin};
use crate::cluster::{nodes, Env};
use crate::store::cluster::InstanceRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct Failover;

/// The `user_name` of the watcher's `failover` jobs (Emit refuses the
/// job type from clients).
pub const WATCHER: &str = "ccr-syncer-watcher";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub shard: i64,
    /// The failed primary, as the store had it.
    pub old: InstanceRow,
    /// `unreachable`, `not_writable` or `stopped`, and what was seen.
    pub reason: String,
    pub detail: String,
    /// Unix ms first seen failing, and declared failed.
    pub failed_at: i64,
    pub detected_at: i64,
    /// Its GTID state as last seen (errant checks compare with it).
    pub old_state: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Fence,
    Elect,
    Promote,
    Rejoin,
}

#[async_trait::async_trait]
impl Kind for Failover {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "failover"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let cluster_id = p.need("cluster_id")?;
        let shard = p.need_int("shard_id", 1, i64::MAX)?;
        let host = p.need("hostaddr")?;
        let port = p.need_int("port", 1, 65535)?;
        let all = env.store.instances().await.map_err(nodes::store_err)?;
        let old = nodes::node_of(&all, &cluster_id, &host, port, Some(shard))?.clone();
        if old.role != "primary" {
            return Err(Refused::bad(format!(
                "{host}:{port} is no longer shard {shard}'s primary"
            )));
        }
        let mut planned = Planned::new(
            Plan {
                cluster_id: cluster_id.clone(),
                shard,
                old,
                reason: p.need("reason")?,
                detail: p.text("detail")?.unwrap_or_default(),
                failed_at: p.int("failed_at", 0, i64::MAX)?.unwrap_or(0),
                detected_at: chrono::Utc::now().timestamp_millis(),
                old_state: p.text("old_state")?.unwrap_or_default(),
            },
            vec![Step::Fence, Step::Elect, Step::Promote, Step::Rejoin],
            vec![Resource::Shard(cluster_id, shard)],
        );
        // Fenced and promoted: never undone.
        for s in &mut planned.steps {
            s.no_return = true;
        }
        Ok(planned)
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Fence => "fence",
            Step::Elect => "elect",
            Step::Promote => "promote",
            Step::Rejoin => "rejoin",
        }
        .into()
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let old = &plan.old;
        let old_name = format!("{}:{}", old.hostaddr, old.port);
        match step {
            Step::Fence => {
                let note = format!(
                    "fenced by failover job {} ({}): read-only until it rejoins as a replica",
                    ctx.job_id, plan.reason
                );
                ctx.env
                    .store
                    .set_instance_state(&ctx.holder(), &old.hostaddr, old.port, "fenced", &note)
                    .await?;
                let (user, pw) = nodes::password(ctx.env, &plan.cluster_id).await?;
                Ok(shard::fence(ctx.env, old, &user, &pw).await)
            }
            Step::Elect => {
                shard::elect(
                    ctx,
                    &Election {
                        cluster_id: &plan.cluster_id,
                        shard: plan.shard,
                        old: &old_name,
                        old_state: &plan.old_state,
                        assign: None,
                        stop_io: true,
                    },
                )
                .await
            }
            Step::Promote => {
                let chosen = elected(ctx, "elect")?;
                shard::promote(
                    ctx,
                    &Promote {
                        cluster_id: &plan.cluster_id,
                        shard: plan.shard,
                        old: Some(old),
                        chosen: &chosen,
                        kind: "auto",
                        reason: &format!("{}: {}", plan.reason, plan.detail),
                        failed_at: plan.failed_at,
                        detected_at: plan.detected_at,
                    },
                )
                .await
            }
            Step::Rejoin => {
                let chosen = elected(ctx, "elect")?;
                let (user, pw) = nodes::password(ctx.env, &plan.cluster_id).await?;
                let primary = InstanceRow {
                    hostaddr: chosen.hostaddr.clone(),
                    port: chosen.port,
                    ..Default::default()
                };
                Ok(rejoin_old(ctx, &plan.cluster_id, old, &primary, &user, &pw).await?)
            }
        }
    }

    fn attachment(&self, plan: &Plan, results: &[(Step, Value)]) -> Value {
        switch_attachment(
            plan.cluster_id.as_str(),
            plan.shard,
            results.iter().map(|(s, r)| (self.label(s), r)),
        )
    }

    fn done_info(&self) -> String {
        "failover done: the shard has a new primary".into()
    }
}

/// The candidate the step labelled `label` chose.
pub fn elected(ctx: &StepCtx<'_>, label: &str) -> Result<Elected, StepError> {
    ctx.earlier(label)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or_else(|| StepError::definite(format!("the {label} step's choice is not recorded")))
}

/// The old primary rejoined as a replica, kept fenced while it cannot be
/// reached, or left out of service with what `rebuild_node` would do; the
/// store says which.
pub async fn rejoin_old(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    old: &InstanceRow,
    primary: &InstanceRow,
    user: &str,
    pw: &crate::secret::Secret,
) -> Result<Value, StepError> {
    let outcome = shard::rejoin(cluster_id, old, primary, user, pw).await;
    let (state, note, said) = match &outcome {
        Rejoin::Rejoined => (
            "running",
            String::new(),
            format!("replicates from {}:{}", primary.hostaddr, primary.port),
        ),
        Rejoin::Unreachable(why) => (
            "fenced",
            format!("unreachable ({why}): kept read-only; rejoins as a replica when it returns"),
            format!("kept fenced: {why}; the watcher rejoins it when it returns"),
        ),
        Rejoin::Errant(why) => ("fenced", why.clone(), why.clone()),
    };
    ctx.env
        .store
        .set_instance_state(&ctx.holder(), &old.hostaddr, old.port, state, &note)
        .await?;
    Ok(json!({"node": format!("{}:{}", old.hostaddr, old.port), "state": state, "outcome": said}))
}

/// What `failover` and `manual_switch` answer when done.
pub fn switch_attachment<'a>(
    cluster_id: &str,
    shard: i64,
    results: impl Iterator<Item = (String, &'a Value)>,
) -> Value {
    let mut a = json!({"cluster_id": cluster_id, "shard_id": shard.to_string()});
    for (label, r) in results {
        match label.as_str() {
            "fence" | "demote" => a["fenced"] = r.clone(),
            "elect" | "catch_up" => {
                a["candidate"] = r["candidate"].clone();
                a["skipped"] = r["skipped"].clone();
                a["candidate_received"] = r["received"].clone();
                a["candidate_applied_before"] = r["applied_before"].clone();
                if !r["caught_up_from"].is_null() {
                    a["caught_up_from"] = r["caught_up_from"].clone();
                }
            }
            "promote" => {
                a["new_primary"] = r["new_primary"].clone();
                a["old_primary"] = r["old_primary"].clone();
                a["gtid_position"] = r["gtid_position"].clone();
                a["promoted_at"] = r["promoted_at"].clone();
                a["repointed"] = r["repointed"].clone();
            }
            "rejoin" => a["old_primary_now"] = r.clone(),
            _ => {}
        }
    }
    a
}
