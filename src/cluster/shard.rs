//! A shard's primary changed: what automatic failover (`failover`),
//! `manual_switch` and the watcher share. Each node read for a switch (its
//! received and applied GTIDs, its own transactions, its replication), the
//! old primary fenced, the candidate chosen, brought level and promoted,
//! the others repointed, an old primary rejoined as a replica.
//!
//! GTIDs are compared per domain and server id (MariaDB has no
//! `GTID_SUBTRACT`). A node's own transactions are those of its own server
//! id; they are errant when no other member holds them (the other
//! reachable nodes, and the old primary as last seen).

mod elect;

pub use elect::{elect, wait_gtid, Elected, Election};

use super::kind::{StepCtx, StepError};
use super::nodes::{self, sql_error};
use super::replicas;
use super::Env;
use crate::db;
use crate::protocol::Request;
use crate::secret::Secret;
use crate::store::cluster::InstanceRow;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// The primary takes writes: semi-synchronous when the cluster asks for it,
/// then `read_only` off. Only the manager's account may do this.
pub async fn open_primary(
    conn: &mut mysql_async::Conn,
    semi_sync: bool,
) -> Result<(), mysql_async::Error> {
    if semi_sync {
        conn.query_drop("SET GLOBAL rpl_semi_sync_master_enabled = ON")
            .await?;
    }
    conn.query_drop("SET GLOBAL read_only = OFF").await
}

/// One node as read for a switch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub hostaddr: String,
    pub port: i64,
    /// As the store has it.
    pub role: String,
    pub state: String,
    pub reachable: bool,
    pub problem: String,
    pub server_id: u64,
    pub domain: u64,
    pub read_only: bool,
    /// `Slave_IO_Running` (`Yes`, `Connecting`, `No`; empty: no primary set).
    pub io: String,
    pub sql: bool,
    /// `host:port` it replicates from.
    pub master: String,
    /// `Gtid_IO_Pos`: what it received.
    pub received: String,
    /// `gtid_current_pos`: what it applied or wrote.
    pub current: String,
    pub binlog_state: String,
    pub delay: Option<i64>,
    pub semi_sync_master: bool,
}

impl Node {
    pub fn name(&self) -> String {
        format!("{}:{}", self.hostaddr, self.port)
    }

    /// The highest sequence number it received or applied in `domain`.
    pub fn received_seq(&self, domain: u64) -> u64 {
        seq(&self.received, domain).max(seq(&self.current, domain))
    }

    pub fn applied_seq(&self, domain: u64) -> u64 {
        seq(&self.current, domain)
    }

    /// Connected to `primary` (`host:port`) and receiving.
    pub fn follows(&self, primary: &str) -> bool {
        self.reachable && self.io == "Yes" && self.master == primary
    }
}

/// The sequence number of `domain` in a GTID position (`0-1-5,1-2-7`).
pub fn seq(pos: &str, domain: u64) -> u64 {
    replicas::parse_gtids(pos)
        .into_iter()
        .filter(|(d, _, _)| *d == domain)
        .map(|(_, _, n)| n)
        .max()
        .unwrap_or(0)
}

/// Reads one node with the manager's account, within `limit`.
pub async fn read(i: &InstanceRow, user: &str, pw: &Secret, limit: Duration) -> Node {
    let mut n = Node {
        hostaddr: i.hostaddr.clone(),
        port: i.port,
        role: i.role.clone(),
        state: i.state.clone(),
        ..Default::default()
    };
    let work = async {
        let mut conn = nodes::connect(&i.hostaddr, i.port, user, pw)
            .await
            .map_err(|e| e.to_string())?;
        let vars: Option<(u64, u64, i64, String, String, i64)> = conn
            .query_first(
                "SELECT @@server_id, @@gtid_domain_id, @@read_only, @@gtid_current_pos, \
                 @@gtid_binlog_state, @@rpl_semi_sync_master_enabled",
            )
            .await
            .map_err(|e| e.to_string())?;
        let row: Option<mysql_async::Row> = conn
            .query_first("SHOW SLAVE STATUS")
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.disconnect().await;
        Ok::<_, String>((vars, row))
    };
    match tokio::time::timeout(limit, work).await {
        Err(_) => n.problem = format!("does not answer within {} ms", limit.as_millis()),
        Ok(Err(e)) => n.problem = format!("unreachable: {e}"),
        Ok(Ok((vars, row))) => {
            n.reachable = true;
            if let Some((sid, domain, ro, current, state, semi)) = vars {
                n.server_id = sid;
                n.domain = domain;
                n.read_only = ro != 0;
                n.current = current;
                n.binlog_state = state;
                n.semi_sync_master = semi != 0;
            }
            if let Some(row) = row {
                let get = |k: &str| {
                    row.get_opt::<Option<String>, _>(k)
                        .and_then(|r| r.ok())
                        .flatten()
                        .unwrap_or_default()
                };
                n.io = get("Slave_IO_Running");
                n.sql = get("Slave_SQL_Running") == "Yes";
                n.master = format!("{}:{}", get("Master_Host"), get("Master_Port"));
                n.received = get("Gtid_IO_Pos");
                n.delay = get("Seconds_Behind_Master").parse().ok();
                let err = get("Last_IO_Error") + &get("Last_SQL_Error");
                if !err.is_empty() {
                    n.problem = format!("replication: {err}");
                }
            }
        }
    }
    n
}

/// Every node of a shard, read at once.
pub async fn read_shard(
    rows: &[InstanceRow],
    user: &str,
    pw: &Secret,
    limit: Duration,
) -> Vec<Node> {
    futures_util::future::join_all(rows.iter().map(|i| read(i, user, pw, limit))).await
}

/// `node`'s own transactions (of its server id) that no GTID state in
/// `others` holds as far.
pub fn own_errant(node: &Node, others: &[&str]) -> Vec<String> {
    if others.iter().all(|o| o.is_empty()) {
        // Nothing to compare with: nothing is called errant (a lone
        // replica is not flagged for what its dead primary held).
        return Vec::new();
    }
    replicas::parse_gtids(&node.binlog_state)
        .into_iter()
        .filter(|(_, s, _)| *s == node.server_id)
        .filter(|(d, s, n)| {
            !others.iter().any(|o| {
                replicas::parse_gtids(o)
                    .iter()
                    .any(|(od, os, on)| od == d && os == s && on >= n)
            })
        })
        .map(|(d, s, n)| format!("{d}-{s}-{n}"))
        .collect()
}

/// Per domain, the highest GTID of a GTID state (`@@gtid_binlog_state`),
/// of a server other than `own` when given: how far a node's
/// transactions reach (when its own are left out).
pub fn highest_of_others(state: &str, own: Option<u64>) -> String {
    let mut best: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for (d, s, n) in replicas::parse_gtids(state) {
        if Some(s) != own && best.get(&d).is_none_or(|(_, m)| n > *m) {
            best.insert(d, (s, n));
        }
    }
    best.iter()
        .map(|(d, (s, n))| format!("{d}-{s}-{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The shard's rows in the store.
pub async fn rows(env: &Env, cluster_id: &str, shard: i64) -> Result<Vec<InstanceRow>, StepError> {
    Ok(env
        .store
        .instances()
        .await?
        .into_iter()
        .filter(|i| i.cluster_id == cluster_id && i.shard == shard)
        .collect())
}

/// The agent port of `host`'s machine.
pub async fn agent_port(env: &Env, host: &str) -> Result<i64, StepError> {
    Ok(env
        .store
        .machines()
        .await?
        .into_iter()
        .find(|m| m.hostaddr == host)
        .map_or(env.agents.default_port as i64, |m| m.agent_port))
}

/// Fences the old primary wherever it can be reached: its agent sets it
/// read-only and kills its clients' connections (or kills a `mariadbd`
/// that does not answer), and the manager sets it read-only directly.
/// Never fails for an unreachable node: the store already says fenced.
pub async fn fence(env: &Env, old: &InstanceRow, user: &str, pw: &Secret) -> Value {
    let agent_port = agent_port(env, &old.hostaddr).await.unwrap_or(0);
    let by_agent = tokio::time::timeout(
        Duration::from_secs(8),
        env.agents.ask(
            &old.hostaddr,
            agent_port,
            &Request::FenceMysql {
                port: old.port as u16,
            },
        ),
    )
    .await;
    let agent = match by_agent {
        Ok(Ok(v)) => v["fenced"].as_str().unwrap_or("done").to_string(),
        Ok(Err(e)) => format!("not reached: {e}"),
        Err(_) => "not reached: no answer within 8 s".to_string(),
    };
    let direct = async {
        let mut conn = nodes::connect(&old.hostaddr, old.port, user, pw).await?;
        conn.query_drop("SET GLOBAL read_only = ON")
            .await
            .map_err(|e| sql_error("", &e))?;
        let _ = conn.disconnect().await;
        Ok::<_, StepError>(())
    };
    let direct = match tokio::time::timeout(Duration::from_secs(3), direct).await {
        Ok(Ok(())) => "read_only".to_string(),
        Ok(Err(e)) => format!("not reached: {e}"),
        Err(_) => "not reached: no answer within 3 s".to_string(),
    };
    json!({"node": format!("{}:{}", old.hostaddr, old.port), "agent": agent, "direct": direct})
}

/// What a promotion is asked.
pub struct Promote<'a> {
    pub cluster_id: &'a str,
    pub shard: i64,
    pub old: Option<&'a InstanceRow>,
    pub chosen: &'a Elected,
    pub kind: &'a str,
    pub reason: &'a str,
    pub failed_at: i64,
    pub detected_at: i64,
}

/// Promotes the chosen replica: replication stopped and reset, every other
/// reachable replica repointed to it, the store's view changed with the
/// journal row (one transaction), then semi-sync master on and writable.
/// Run again after a crash, it only makes sure of what is left.
pub async fn promote(ctx: &StepCtx<'_>, p: &Promote<'_>) -> Result<Value, StepError> {
    let env = ctx.env;
    let (user, pw) = nodes::password(env, p.cluster_id).await?;
    let fullsync = env
        .store
        .clusters()
        .await?
        .into_iter()
        .find(|c| c.cluster_id == p.cluster_id)
        .map(|c| nodes::NodeSettings::of(&c).fullsync_level > 0)
        .unwrap_or(false);
    let c = p.chosen;
    let already = env.store.failover(ctx.job_id).await?;
    let mut conn = nodes::connect(&c.hostaddr, c.port, &user, &pw).await?;
    if already.is_none() {
        for sql in ["STOP SLAVE", "RESET SLAVE ALL"] {
            conn.query_drop(sql)
                .await
                .map_err(|e| sql_error(&c.candidate, &e))?;
        }
    }
    let old_name = p.old.map(|o| format!("{}:{}", o.hostaddr, o.port));
    // The others follow it before it takes writes, so that a
    // semi-synchronous commit finds a replica to acknowledge it.
    let mut repointed = Vec::new();
    for r in rows(env, p.cluster_id, p.shard).await? {
        let name = format!("{}:{}", r.hostaddr, r.port);
        if name == c.candidate || Some(&name) == old_name.as_ref() || r.state != "running" {
            continue;
        }
        let outcome = repoint(&r, &c.hostaddr, c.port, &user, &pw).await;
        repointed.push(json!({"node": name, "outcome": match outcome {
            Ok(()) => "replicating from the new primary".to_string(),
            Err(e) => format!("not repointed now ({e}): the watcher repoints it when it answers"),
        }}));
    }
    let position: Option<String> = conn
        .query_first("SELECT @@gtid_current_pos")
        .await
        .map_err(|e| sql_error(&c.candidate, &e))?;
    let position = position.unwrap_or_default();
    let row = match already {
        Some(r) => r,
        None => {
            let row = crate::store::cluster::FailoverRow {
                job_id: ctx.job_id.to_string(),
                cluster_id: p.cluster_id.to_string(),
                shard: p.shard,
                kind: p.kind.to_string(),
                reason: p.reason.to_string(),
                old_primary: old_name.clone().unwrap_or_default(),
                new_primary: c.candidate.clone(),
                gtid_position: position.clone(),
                failed_at: p.failed_at,
                detected_at: p.detected_at,
                promoted_at: chrono::Utc::now().timestamp_millis(),
                acked_at: 0,
            };
            let note = format!(
                "fenced by job {} ({} switch): read-only until it rejoins as a replica of {}",
                ctx.job_id, p.kind, c.candidate
            );
            env.store
                .promote(
                    &ctx.holder(),
                    &crate::store::cluster::Promotion {
                        row: &row,
                        old: p.old.map(|o| (o.hostaddr.as_str(), o.port)),
                        old_state: "fenced",
                        old_note: &note,
                        new: (c.hostaddr.as_str(), c.port),
                    },
                )
                .await?;
            row
        }
    };
    open_primary(&mut conn, fullsync)
        .await
        .map_err(|e| sql_error(&c.candidate, &e))?;
    let writable_at = chrono::Utc::now().timestamp_millis();
    let _ = conn.disconnect().await;
    // The compute nodes write to the new primary before the job ends.
    let comps = super::comps::repoint_all(env, p.cluster_id).await;
    Ok(json!({"new_primary": c.candidate, "old_primary": old_name,
              "gtid_position": row.gtid_position, "promoted_at": row.promoted_at,
              "writable_at": writable_at, "repointed": repointed, "compute_nodes": comps}))
}

/// A replica follows `host:port` from its own position.
pub async fn repoint(
    r: &InstanceRow,
    host: &str,
    port: i64,
    user: &str,
    pw: &Secret,
) -> Result<(), StepError> {
    let name = format!("{}:{}", r.hostaddr, r.port);
    let work = async {
        let mut conn = nodes::connect(&r.hostaddr, r.port, user, pw).await?;
        let change = db::change_master(host, port, user, pw);
        for sql in [
            "SET GLOBAL read_only = ON",
            "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
            "STOP SLAVE",
            change.as_str(),
            "START SLAVE",
        ] {
            conn.query_drop(sql)
                .await
                .map_err(|e| sql_error(&name, &e))?;
        }
        let _ = conn.disconnect().await;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| StepError::transient(format!("{name}: no answer within 10 s")))?
}

/// How an old primary's rejoin went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejoin {
    /// It replicates from the primary.
    Rejoined,
    /// It cannot be reached: kept fenced.
    Unreachable(String),
    /// It holds transactions the primary lacks: out of service.
    Errant(String),
}

/// Makes a fenced old primary a replica of `primary` if it holds nothing
/// the primary lacks (read-only first; its replication position taken from
/// its own binlog, which holds everything it wrote or applied); else says
/// what `rebuild_node` would do.
pub async fn rejoin(
    cluster_id: &str,
    node: &InstanceRow,
    primary: &InstanceRow,
    user: &str,
    pw: &Secret,
) -> Rejoin {
    let limit = Duration::from_secs(3);
    let n = read(node, user, pw, limit).await;
    if !n.reachable {
        return Rejoin::Unreachable(n.problem);
    }
    let p = read(primary, user, pw, limit).await;
    if !p.reachable {
        return Rejoin::Unreachable(format!("the primary {}", p.problem));
    }
    let errant = replicas::errant(&n.binlog_state, &p.binlog_state);
    if !errant.is_empty() {
        return Rejoin::Errant(format!(
            "holds transactions the primary {} lacks ({}): kept read-only and out of service; \
             rebuild_node {{\"cluster_id\": \"{cluster_id}\", \"rb_nodes\": [{{\"hostaddr\": \"{}\", \
             \"port\": \"{}\"}}]}} replaces its data with a copy of the shard's",
            p.name(),
            errant
                .iter()
                .map(|e| e.gtid.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            n.hostaddr,
            n.port
        ));
    }
    let work = async {
        let mut conn = nodes::connect(&n.hostaddr, n.port, user, pw).await?;
        let change = db::change_master(&primary.hostaddr, primary.port, user, pw);
        let name = n.name();
        for sql in [
            "SET GLOBAL read_only = ON",
            "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
            "STOP SLAVE",
            // Not a replica before (or of another primary): it starts
            // from everything its binlog holds.
            "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos",
            change.as_str(),
            "START SLAVE",
        ] {
            if sql.starts_with("SET GLOBAL gtid_slave_pos") && n.binlog_state.is_empty() {
                continue;
            }
            conn.query_drop(sql)
                .await
                .map_err(|e| sql_error(&name, &e))?;
        }
        let _ = conn.disconnect().await;
        Ok::<_, StepError>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(())) => Rejoin::Rejoined,
        Ok(Err(e)) => Rejoin::Unreachable(e.to_string()),
        Err(_) => Rejoin::Unreachable("no answer within 10 s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(sid: u64, state: &str) -> Node {
        Node {
            server_id: sid,
            binlog_state: state.into(),
            ..Default::default()
        }
    }

    #[test]
    fn own_transactions_no_other_member_holds_are_errant() {
        // 12 wrote 0-12-7 on its own; 13 and the old primary never had it.
        let n = node(12, "0-11-50,0-12-7");
        assert_eq!(
            own_errant(&n, &["0-11-50", "0-11-52"]),
            vec!["0-12-7".to_string()]
        );
        // Another member holds it (12 was primary before): not errant.
        assert!(own_errant(&n, &["0-11-50,0-12-7", ""]).is_empty());
        // Nothing to compare with: not flagged.
        assert!(own_errant(&n, &["", ""]).is_empty());
        // The old primary's transactions are not its own.
        assert!(own_errant(&node(13, "0-11-60"), &["0-11-50"]).is_empty());
    }

    #[test]
    fn a_node_s_reach_without_its_own_transactions() {
        assert_eq!(
            highest_of_others("0-11-40,0-12-153,0-13-90,1-11-7", Some(11)),
            "0-12-153"
        );
        assert_eq!(highest_of_others("0-11-40", Some(11)), "");
        assert_eq!(
            highest_of_others("0-12-5,2-13-9", Some(11)),
            "0-12-5,2-13-9"
        );
        assert_eq!(highest_of_others("0-11-40,0-12-33", None), "0-11-40");
    }

    #[test]
    fn positions_compare_within_a_domain() {
        let mut n = node(12, "");
        n.received = "0-11-57,1-20-3".into();
        n.current = "0-11-55,1-20-4".into();
        assert_eq!(n.received_seq(0), 57);
        assert_eq!(n.applied_seq(0), 55);
        assert_eq!(n.received_seq(1), 4);
        assert_eq!(seq("", 0), 0);
    }
}
