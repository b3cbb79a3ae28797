//! What `add_nodes` and `rebuild_node` share: each node of a shard probed
//! (reachable, replicating, its delay, its GTID state), the copy source
//! chosen from them, a node's errant transactions, and the streamed clone
//! asked of the target's agent ([`crate::protocol::CloneMysql`]).
//!
//! Errant transactions are compared per GTID domain and server id, from
//! each server's `gtid_binlog_state` (the last GTID of every
//! domain-server pair it logged): MariaDB has no `GTID_SUBTRACT`, and its
//! sequence numbers run per domain, so a pair the primary lacks, or holds
//! only to a lower sequence number, is what the node wrote on its own.

use super::emit::{codes, Refused};
use super::kind::{StepCtx, StepError};
use super::nodes::{self, Target};
use super::Env;
use crate::protocol::{CloneMysql, CloneSource, InstallMysql, Request};
use crate::store::cluster::InstanceRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// One node of a shard as seen now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub hostaddr: String,
    pub port: i64,
    pub role: String,
    pub reachable: bool,
    /// Both replication threads run.
    pub replicating: bool,
    /// `Seconds_Behind_Master` (none when not replicating).
    pub delay: Option<i64>,
    pub gtid_binlog_state: String,
    /// Why it is not a candidate, when it is not.
    pub problem: String,
}

impl Probe {
    fn name(&self) -> String {
        format!("{}:{}", self.hostaddr, self.port)
    }
}

/// Probes one node with the cluster's account (5 s at most).
pub async fn probe(i: &InstanceRow, user: &str, pw: &crate::secret::Secret) -> Probe {
    let n = super::shard::read(i, user, pw, Duration::from_secs(5)).await;
    let replicating = n.io == "Yes" && n.sql;
    let problem = if !n.reachable {
        n.problem.clone()
    } else if n.io.is_empty() {
        if i.role == "primary" {
            String::new()
        } else {
            "not replicating (no primary set)".into()
        }
    } else if !replicating {
        match n.problem.strip_prefix("replication: ") {
            Some(err) => format!("not replicating: {err}"),
            None => "not replicating".into(),
        }
    } else {
        String::new()
    };
    Probe {
        hostaddr: n.hostaddr,
        port: n.port,
        role: i.role.clone(),
        reachable: n.reachable,
        replicating,
        delay: n.delay,
        gtid_binlog_state: n.binlog_state,
        problem,
    }
}

/// Every node of the shard, probed at once.
pub async fn probe_shard(env: &Env, cluster_id: &str, shard: i64) -> Result<Vec<Probe>, Refused> {
    let (user, pw) = nodes::password(env, cluster_id)
        .await
        .map_err(|e| Refused {
            code: codes::STEP_FAILED,
            info: e.to_string(),
        })?;
    let rows: Vec<InstanceRow> = env
        .store
        .instances()
        .await
        .map_err(nodes::store_err)?
        .into_iter()
        .filter(|i| i.cluster_id == cluster_id && i.shard == shard)
        .collect();
    Ok(futures_util::future::join_all(rows.iter().map(|i| probe(i, &user, &pw))).await)
}

/// The instances unfinished jobs other than `except` hold (a backup or a
/// rebuild running on them): never a copy source.
pub async fn busy(env: &Env, except: &str) -> Result<Vec<(String, i64)>, Refused> {
    let unfinished = env.store.unfinished().await.map_err(nodes::store_err)?;
    Ok(super::resource::held_instances(
        unfinished
            .iter()
            .filter(|j| j.job_id != except)
            .map(|j| j.resource.as_str()),
    ))
}

/// The copy source: the replica with the least delay among those within
/// `max_delay` seconds (none: any delay), never one in `exclude` or
/// `busy`, never one holding transactions the primary does not have; else
/// the primary when `allow_primary`. Refused naming every candidate and why
/// it was not taken.
pub fn choose<'a>(
    probes: &'a [Probe],
    exclude: &[(String, i64)],
    busy: &[(String, i64)],
    max_delay: Option<i64>,
    allow_primary: bool,
) -> Result<&'a Probe, String> {
    let mut why = Vec::new();
    let mut best: Option<&Probe> = None;
    let primary = probes.iter().find(|p| p.role == "primary");
    for p in probes.iter().filter(|p| p.role != "primary") {
        let own = primary
            .filter(|m| m.reachable && p.reachable)
            .map(|m| errant(&p.gtid_binlog_state, &m.gtid_binlog_state))
            .unwrap_or_default();
        let key = (p.hostaddr.clone(), p.port);
        let reason = if exclude.contains(&key) {
            Some("the node being rebuilt".to_string())
        } else if busy.contains(&key) {
            Some("busy with another job (a backup or a rebuild)".to_string())
        } else if !p.reachable || !p.replicating {
            Some(p.problem.clone())
        } else if !own.is_empty() {
            Some(format!(
                "holds transactions the primary does not have: {}",
                own.iter()
                    .map(|e| e.gtid.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            match (p.delay, max_delay) {
                (None, _) => Some("no delay reported".into()),
                (Some(d), Some(max)) if d > max => {
                    Some(format!("delay {d} s, over allow_replica_delay {max} s"))
                }
                _ => None,
            }
        };
        match reason {
            Some(r) => why.push(format!("{} ({r})", p.name())),
            None => {
                why.push(format!("{} (delay {} s)", p.name(), p.delay.unwrap_or(0)));
                if best.is_none_or(|b| p.delay < b.delay) {
                    best = Some(p);
                }
            }
        }
    }
    if let Some(b) = best {
        return Ok(b);
    }
    match primary {
        Some(p) if allow_primary && p.reachable => Ok(p),
        Some(p) => {
            let no = if allow_primary {
                format!("the primary {} is {}", p.name(), p.problem)
            } else {
                format!(
                    "the primary {} is not used without allow_pull_from_master \"1\"",
                    p.name()
                )
            };
            Err(format!(
                "no node to copy from: replicas: {}; {no}",
                if why.is_empty() {
                    "none".to_string()
                } else {
                    why.join(", ")
                }
            ))
        }
        None => Err(format!(
            "no node to copy from: replicas: {}; the shard has no primary",
            if why.is_empty() {
                "none".to_string()
            } else {
                why.join(", ")
            }
        )),
    }
}

/// One `(domain, server_id, seq)` of a GTID list (`0-1-5,1-2-7`).
pub fn parse_gtids(text: &str) -> Vec<(u64, u64, u64)> {
    text.split(',')
        .filter_map(|g| {
            let mut it = g.trim().split('-').map(|n| n.parse::<u64>());
            match (it.next(), it.next(), it.next()) {
                (Some(Ok(d)), Some(Ok(s)), Some(Ok(n))) => Some((d, s, n)),
                _ => None,
            }
        })
        .collect()
}

/// A node's transactions the primary does not have.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errant {
    /// The node's last GTID of this domain and server id.
    pub gtid: String,
    /// The primary's last GTID of the same pair, if it has one.
    pub primary_has: Option<String>,
}

/// The pairs of `node`'s GTID state the primary's state lacks or holds
/// only to a lower sequence number (per domain and server id).
pub fn errant(node: &str, primary: &str) -> Vec<Errant> {
    let theirs = parse_gtids(primary);
    parse_gtids(node)
        .into_iter()
        .filter_map(|(d, s, n)| {
            let has = theirs.iter().find(|(pd, ps, _)| *pd == d && *ps == s);
            match has {
                Some((_, _, m)) if *m >= n => None,
                _ => Some(Errant {
                    gtid: format!("{d}-{s}-{n}"),
                    primary_has: has.map(|(pd, ps, m)| format!("{pd}-{ps}-{m}")),
                }),
            }
        })
        .collect()
}

/// The shard's primary, from the store.
pub async fn primary_of(env: &Env, cluster_id: &str, shard: i64) -> Result<InstanceRow, StepError> {
    env.store
        .instances()
        .await?
        .into_iter()
        .find(|i| i.cluster_id == cluster_id && i.shard == shard && i.role == "primary")
        .ok_or_else(|| StepError::definite(format!("shard {shard} has no primary")))
}

/// Asks the target's agent for the streamed clone (`install`: a new
/// instance) and follows it to its end.
#[allow(clippy::too_many_arguments)]
pub async fn clone(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    shard: i64,
    target: &Target,
    source: &Target,
    install: Option<InstallMysql>,
    pv_limit_mb: u64,
    keep_old: bool,
) -> Result<Value, StepError> {
    let admin = nodes::password(ctx.env, cluster_id).await?;
    let primary = primary_of(ctx.env, cluster_id, shard).await?;
    let request = Request::CloneMysql(Box::new(CloneMysql {
        key: super::agents::Agents::key(ctx, ""),
        port: target.port as u16,
        install,
        source: CloneSource {
            host: source.hostaddr.clone(),
            agent_port: source.agent_port as u16,
            port: source.port as u16,
            replica: !(source.hostaddr == primary.hostaddr && source.port == primary.port),
        },
        primary: (primary.hostaddr.clone(), primary.port as u16),
        admin,
        pv_limit_mb,
        keep_old,
    }));
    let mut result = ctx
        .env
        .agents
        .operate(ctx, &target.hostaddr, target.agent_port, request)
        .await?;
    result["target"] = json!(format!("{}:{}", target.hostaddr, target.port));
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(host: &str, role: &str, delay: Option<i64>, replicating: bool) -> Probe {
        Probe {
            hostaddr: host.into(),
            port: 46000,
            role: role.into(),
            reachable: true,
            replicating,
            delay,
            problem: if replicating {
                String::new()
            } else {
                "not replicating".into()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_least_lagging_healthy_replica_is_the_source() {
        let probes = vec![
            p("a", "primary", None, false),
            p("b", "replica", Some(9), true),
            p("c", "replica", Some(2), true),
            p("d", "replica", Some(0), true),
        ];
        let x = |h: &str| (h.to_string(), 46000);
        assert_eq!(
            choose(&probes, &[], &[], Some(15), true).unwrap().hostaddr,
            "d"
        );
        // Never the node being rebuilt, never one busy.
        assert_eq!(
            choose(&probes, &[x("d")], &[x("c")], Some(15), true)
                .unwrap()
                .hostaddr,
            "b"
        );
        // Over the delay: the primary, when allowed.
        assert_eq!(
            choose(&probes, &[x("d")], &[x("c")], Some(5), true)
                .unwrap()
                .hostaddr,
            "a"
        );
        let refused = choose(&probes, &[x("d")], &[x("c")], Some(5), false).unwrap_err();
        assert!(
            refused.contains("b:46000 (delay 9 s, over allow_replica_delay 5 s)"),
            "{refused}"
        );
        assert!(refused.contains("c:46000 (busy"), "{refused}");
        assert!(refused.contains("allow_pull_from_master"), "{refused}");
        let broken = vec![
            p("a", "primary", None, false),
            p("b", "replica", None, false),
        ];
        assert!(choose(&broken, &[], &[], None, false)
            .unwrap_err()
            .contains("b:46000 (not replicating)"));
    }

    #[test]
    fn errant_transactions_are_compared_per_domain_and_server() {
        // The node wrote 0-1012-60 on its own; it lags on the primary's.
        let e = errant("0-1011-57,0-1012-60,1-1012-3", "0-1011-80,1-1012-3");
        assert_eq!(
            e,
            vec![Errant {
                gtid: "0-1012-60".into(),
                primary_has: None
            }]
        );
        let e = errant("0-1011-57", "0-1011-50");
        assert_eq!(e[0].primary_has.as_deref(), Some("0-1011-50"));
        assert!(errant("", "0-1-1").is_empty());
        assert_eq!(parse_gtids(" 0-1-5, 2-3-4 "), vec![(0, 1, 5), (2, 3, 4)]);
    }
}
