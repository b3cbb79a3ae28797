//! Following a minded Galera source (`src.minder`): a task asks the
//! minder's arbitrator for its `status_summary` every second, and when the
//! node the job reads is drained, has left the Primary component or no
//! longer runs `mariadbd`, it names a Synced node of the Primary component
//! to read from instead. The coordinator then ends the run; the runner
//! starts the next one from the destination's checkpoint on that node, at
//! its GTID (Galera nodes with `wsrep_gtid_mode=ON` and
//! `log_slave_updates` write the same GTIDs), so nothing is lost or applied
//! twice.

use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where to read from instead, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The node's name in the minder's configuration.
    pub node: String,
    /// Its `host:port`, as the cluster names it (mapped before connecting).
    pub mysql: String,
    pub reason: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// The node read is fit (or the summary says nothing against it).
    Stay(Option<String>),
    Move(Move),
    /// The node read should be left, but no node is fit to read from.
    Nowhere(String),
}

fn fit(n: &Value, primary: &[&str], name: &str) -> bool {
    primary.contains(&name)
        && n["drained"] != true
        && n["running"] == true
        && n["reachable"] == true
        && n["cluster_status"] == "Primary"
        && n["local_state"] == "Synced"
}

/// What to do, reading `reading` (`host:port`), given the arbitrator's
/// summary. Pure.
pub fn choose(summary: &Value, reading: &str) -> Choice {
    let nodes = summary["nodes"].as_object();
    let Some(nodes) = nodes else {
        return Choice::Stay(None);
    };
    let Some((name, node)) = nodes.iter().find(|(_, n)| n["mysql"] == reading) else {
        return Choice::Stay(None);
    };
    let primary: Vec<&str> = summary["primary"]["members"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let reason = if node["drained"] == true {
        format!("{name} is drained")
    } else if node["running"] == false {
        format!("{name}'s mariadbd is not running")
    } else if !primary.is_empty() && !primary.contains(&name.as_str()) {
        format!("{name} left the Primary component")
    } else {
        return Choice::Stay(Some(name.clone()));
    };
    let dc = &node["dc"];
    let mut fits: Vec<(&String, &Value)> = nodes
        .iter()
        .filter(|(n, v)| *n != name && fit(v, &primary, n))
        .collect();
    // The same data centre first (the job's network path stays), then by name.
    fits.sort_by_key(|(n, v)| (&v["dc"] != dc, n.to_string()));
    match fits.first() {
        Some((n, v)) => match v["mysql"].as_str() {
            Some(mysql) => Choice::Move(Move {
                node: n.to_string(),
                mysql: mysql.to_string(),
                reason: format!(
                    "{reason}: moving to {n} ({mysql}), Synced in the Primary component"
                ),
            }),
            None => Choice::Nowhere(format!(
                "{reason}, and the arbitrator names no address for {n}"
            )),
        },
        None => Choice::Nowhere(format!(
            "{reason}, and no other node is Synced in the Primary component"
        )),
    }
}

/// What the follower hands the coordinator.
#[derive(Default)]
pub struct Moving {
    pub to: Mutex<Option<Move>>,
    /// The name of the node read, once the arbitrator has named it.
    pub reading: Mutex<Option<String>>,
    /// Set when `to` or `reading` changed: the coordinator looks at them
    /// only then (one atomic load per event on its loop, no lock).
    pub changed: std::sync::atomic::AtomicBool,
    pub wake: Notify,
}

/// Asks `arbitrator` every second until `stop`, or until it has named a
/// node to move to (the run ends then).
pub async fn follow(
    job: String,
    arbitrator: String,
    reading: String,
    moving: Arc<Moving>,
    stop: CancellationToken,
) {
    let mut last_problem: Option<String> = None;
    loop {
        let problem = match crate::minder::status_summary(&arbitrator).await {
            Ok(summary) => match choose(&summary, &reading) {
                Choice::Stay(name) => {
                    let mut reading = moving.reading.lock();
                    if *reading != name {
                        *reading = name;
                        moving
                            .changed
                            .store(true, std::sync::atomic::Ordering::Release);
                    }
                    None
                }
                Choice::Move(m) => {
                    info!(job = %job, node = %m.node, address = %m.mysql, reason = %m.reason,
                          "the minded source's node is unfit; moving");
                    *moving.to.lock() = Some(m);
                    moving
                        .changed
                        .store(true, std::sync::atomic::Ordering::Release);
                    moving.wake.notify_one();
                    return;
                }
                Choice::Nowhere(why) => Some(why),
            },
            Err(e) => Some(format!("the minder's arbitrator at {arbitrator}: {e}")),
        };
        if problem != last_problem {
            if let Some(p) = &problem {
                warn!(job = %job, problem = %p, "following the minded source: staying on {reading}");
            }
            last_problem = problem;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

impl super::Incremental {
    /// Between runs (after a transient error): when the source is minded and
    /// the node read is unfit, names the node to read from instead (the
    /// next run starts there). Returns what it now follows.
    pub async fn follow_minder(&self) -> Option<String> {
        let arbitrator = self.live.source().minder?;
        let reading = self
            .progress
            .borrow()
            .detail
            .source_node
            .clone()
            .unwrap_or_else(|| self.live.source().address());
        let summary = match crate::minder::status_summary(&arbitrator).await {
            Ok(s) => s,
            Err(e) => {
                warn!(job = %self.spec.name, error = %e, "the minder's arbitrator does not answer");
                return None;
            }
        };
        match choose(&summary, &reading) {
            Choice::Move(m) => {
                info!(job = %self.spec.name, node = %m.node, address = %m.mysql, reason = %m.reason,
                      "the minded source's node is unfit; moving");
                self.progress.send_modify(|a| {
                    a.detail.source_node = Some(m.mysql.clone());
                    a.detail.minder_node = Some(m.node.clone());
                });
                Some(format!("{} ({})", m.node, m.mysql))
            }
            Choice::Stay(_) | Choice::Nowhere(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(drained: bool, n1: Value) -> Value {
        let node = |dc: &str, mysql: &str| {
            json!({"dc": dc, "mysql": mysql, "drained": false, "running": true, "reachable": true,
                   "cluster_status": "Primary", "local_state": "Synced"})
        };
        let mut n1 = n1;
        n1["drained"] = json!(drained);
        json!({
            "primary": {"members": ["n1", "n2", "n3"]},
            "nodes": {"n1": n1, "n2": node("dc2", "10.0.0.2:3306"), "n3": node("dc1", "10.0.0.3:3306")},
        })
    }

    fn n1() -> Value {
        json!({"dc": "dc1", "mysql": "10.0.0.1:3306", "running": true, "reachable": true,
               "cluster_status": "Primary", "local_state": "Synced"})
    }

    #[test]
    fn a_fit_node_is_kept_and_an_unfit_one_left_for_the_same_dc_first() {
        assert_eq!(
            choose(&summary(false, n1()), "10.0.0.1:3306"),
            Choice::Stay(Some("n1".into()))
        );
        // An address the arbitrator does not know: nothing to say.
        assert_eq!(
            choose(&summary(true, n1()), "10.0.0.9:3306"),
            Choice::Stay(None)
        );
        let Choice::Move(m) = choose(&summary(true, n1()), "10.0.0.1:3306") else {
            panic!()
        };
        assert_eq!((m.node.as_str(), m.mysql.as_str()), ("n3", "10.0.0.3:3306"));
        assert!(m.reason.contains("n1 is drained"), "{}", m.reason);
        // Dead, or out of the Primary component.
        let mut dead = n1();
        dead["running"] = json!(false);
        assert!(
            matches!(choose(&summary(false, dead), "10.0.0.1:3306"), Choice::Move(m) if m.reason.contains("not running"))
        );
        let mut s = summary(false, n1());
        s["primary"]["members"] = json!(["n2", "n3"]);
        assert!(
            matches!(choose(&s, "10.0.0.1:3306"), Choice::Move(m) if m.reason.contains("left the Primary"))
        );
        // A candidate must be Synced and Primary, not drained.
        let mut s = summary(true, n1());
        s["nodes"]["n3"]["local_state"] = json!("Donor/Desynced");
        assert!(matches!(choose(&s, "10.0.0.1:3306"), Choice::Move(m) if m.node == "n2"));
        s["nodes"]["n2"]["drained"] = json!(true);
        assert!(matches!(choose(&s, "10.0.0.1:3306"), Choice::Nowhere(_)));
    }
}
