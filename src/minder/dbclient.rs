//! `minder dbclient --serial N`: minds one HAProxy through its runtime API
//! (`stats socket … level admin`), never its configuration. It routes by the
//! arbitrator's `status_summary` and the dbservers' own reports: the write
//! backend gets exactly one `ready` server (the writer the arbitrator
//! chose), every other `maint`; the read backend gets every Synced node of
//! the Primary component `ready`, drained nodes `drain`, the rest `maint`.
//! While the arbitrator is silent it keeps the last writer as long as that
//! node itself reports Synced and Primary. Server names in HAProxy are the
//! node names.

use super::message::{Kind, Message, Party, Refused, Verb};
use super::net::{self, Handler};
use super::reports::{self, Reports};
use super::rule::NodeReport;
use super::site::Site;
use super::Common;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tracing::{info, warn};

/// A server's state in HAProxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Ready,
    Drain,
    Maint,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Drain => "drain",
            State::Maint => "maint",
        }
    }
}

/// What the dbclient knows when it routes.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// The arbitrator's latest summary, if it is fresh.
    pub summary: Option<Value>,
    /// Each node's own latest report, if fresh.
    pub reports: BTreeMap<String, NodeReport>,
    /// The writer routed to last.
    pub last_writer: Option<String>,
}

/// Where writes and reads go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routing {
    pub writer: Option<String>,
    pub write: BTreeMap<String, State>,
    pub read: BTreeMap<String, State>,
}

fn synced_primary(r: &NodeReport) -> bool {
    r.is_primary() && r.local_state == "Synced"
}

/// The routing for `nodes` (every node of the site). Pure.
pub fn route(nodes: &[String], known: &Known) -> Routing {
    let (writer, primary, drained): (Option<String>, BTreeSet<String>, BTreeSet<String>) =
        match &known.summary {
            Some(s) => (
                s["writer"].as_str().map(str::to_string),
                s["primary"]["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                s["nodes"]
                    .as_object()
                    .map(|n| {
                        n.iter()
                            .filter(|(_, v)| v["drained"] == true)
                            .map(|(k, _)| k.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            // The arbitrator is silent: the last writer while it reports
            // itself Synced and Primary; the Primary component as its nodes
            // report it.
            None => {
                let writer = known
                    .last_writer
                    .clone()
                    .filter(|w| known.reports.get(w).is_some_and(synced_primary));
                let primary = known
                    .reports
                    .values()
                    .find(|r| r.is_primary())
                    .map(|r| r.members.iter().cloned().collect())
                    .unwrap_or_default();
                (writer, primary, BTreeSet::new())
            }
        };
    // A node is readable when it is in the Primary component and Synced by
    // its own report (or the summary's view of it).
    let synced = |n: &str| match known.reports.get(n) {
        Some(r) => synced_primary(r),
        None => known.summary.as_ref().is_some_and(|s| {
            s["nodes"][n]["local_state"] == "Synced" && s["nodes"][n]["cluster_status"] == "Primary"
        }),
    };
    let write = nodes
        .iter()
        .map(|n| {
            let state = if writer.as_deref() == Some(n.as_str()) && synced(n) {
                State::Ready
            } else {
                State::Maint
            };
            (n.clone(), state)
        })
        .collect::<BTreeMap<_, _>>();
    let read = nodes
        .iter()
        .map(|n| {
            let state = if !primary.contains(n) || !synced(n) {
                State::Maint
            } else if drained.contains(n) {
                State::Drain
            } else {
                State::Ready
            };
            (n.clone(), state)
        })
        .collect();
    let writer = writer.filter(|w| write.get(w) == Some(&State::Ready));
    Routing {
        writer,
        write,
        read,
    }
}

/// One command to HAProxy's runtime API; its answer.
pub async fn haproxy(socket: &str, command: &str) -> Result<String, String> {
    let mut s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::UnixStream::connect(socket),
    )
    .await
    .map_err(|_| format!("{socket}: no answer in 2 s"))?
    .map_err(|e| format!("{socket}: {e}"))?;
    s.write_all(format!("{command}\n").as_bytes())
        .await
        .map_err(|e| format!("{socket}: {e}"))?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .map_err(|_| format!("{socket}: {command}: no answer in 2 s"))?
        .map_err(|e| format!("{socket}: {e}"))?;
    Ok(out.trim().to_string())
}

pub struct Dbclient {
    serial: u32,
    site: Arc<Mutex<Site>>,
    summary: Mutex<Option<(Value, Instant)>>,
    reports: Mutex<Reports>,
    config: Arc<super::ConfigHint>,
    last_writer: Mutex<Option<String>>,
    wake: Notify,
}

impl Dbclient {
    fn known(&self) -> Known {
        let stale = Duration::from_secs((3 * self.site.lock().report_interval_s).max(3));
        Known {
            summary: self
                .summary
                .lock()
                .as_ref()
                .filter(|(_, at)| at.elapsed() <= stale)
                .map(|(s, _)| s.clone()),
            reports: self
                .reports
                .lock()
                .iter()
                .filter(|(_, (_, at))| at.elapsed() <= stale)
                .map(|(n, (r, _))| (n.clone(), r.clone()))
                .collect(),
            last_writer: self.last_writer.lock().clone(),
        }
    }

    /// Routes now: every server's state set as [`route`] says.
    async fn apply(&self) -> Result<Routing, String> {
        let site = self.site.lock().clone();
        let me = site
            .dbclients
            .iter()
            .find(|c| c.serial == self.serial)
            .cloned()
            .ok_or("this dbclient left the configuration")?;
        let nodes: Vec<String> = site.dbservers.iter().map(|d| d.name.clone()).collect();
        let routing = route(&nodes, &self.known());
        // The write backend's servers leave before one enters: never two
        // writers at once.
        let mut commands = Vec::new();
        for (n, s) in routing.write.iter().filter(|(_, s)| **s != State::Ready) {
            commands.push(format!(
                "set server {}/{n} state {}",
                site.write_backend,
                s.as_str()
            ));
        }
        for (n, s) in routing.write.iter().filter(|(_, s)| **s == State::Ready) {
            commands.push(format!(
                "set server {}/{n} state {}",
                site.write_backend,
                s.as_str()
            ));
        }
        for (n, s) in &routing.read {
            commands.push(format!(
                "set server {}/{n} state {}",
                site.read_backend,
                s.as_str()
            ));
        }
        for c in commands {
            let answer = haproxy(&me.haproxy_socket, &c).await?;
            if !answer.is_empty() {
                return Err(format!("HAProxy refused `{c}`: {answer}"));
            }
        }
        let mut last = self.last_writer.lock();
        if routing.writer.is_some() && routing.writer != *last {
            info!(writer = ?routing.writer, was = ?*last, "write backend routed");
            *last = routing.writer.clone();
        }
        Ok(routing)
    }
}

#[async_trait::async_trait]
impl Handler for Dbclient {
    fn me(&self) -> Party {
        Party {
            kind: Kind::Dbclient,
            serial: self.serial,
        }
    }

    fn admit(&self, m: &Message, _peer: SocketAddr) -> Result<(), Refused> {
        let site = self.site.lock();
        let ok = match (m.sender.kind, m.verb) {
            (Kind::Arbitrator, Verb::StatusSummary) => {
                site.arbitrators.iter().any(|a| a.serial == m.sender.serial)
            }
            (Kind::Dbserver, Verb::DbStatusReport) => site.dbserver(m.sender.serial).is_some(),
            (_, verb) => {
                return Err(Refused(format!(
                    "{} does not take {} from {}",
                    self.me(),
                    verb.as_str(),
                    m.sender
                )))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Refused(format!(
                "{} is not in the site's configuration",
                m.sender
            )))
        }
    }

    async fn handle(&self, m: Message, _peer: SocketAddr) -> Result<Message, Refused> {
        match m.verb {
            Verb::StatusSummary => {
                *self.summary.lock() = Some((m.params.clone(), Instant::now()));
                self.wake.notify_one();
            }
            Verb::DbStatusReport => {
                let node = self
                    .site
                    .lock()
                    .dbserver(m.sender.serial)
                    .map(|d| d.name.clone())
                    .expect("admitted");
                let taken = self.reports.lock().take(&node, &m)?;
                self.config.heard(reports::config_digest(&m));
                return Ok(reports::answer(&m, self.me(), &taken));
            }
            _ => {}
        }
        Ok(m.ack(self.me()))
    }
}

pub async fn run(serial: u32, common: Common) -> Result<(), String> {
    let site = common.site().await?;
    let me = site
        .dbclients
        .iter()
        .find(|c| c.serial == serial)
        .cloned()
        .ok_or_else(|| {
            format!("the site's configuration has no [[dbclient]] with serial {serial}")
        })?;
    // HAProxy answers before anything is routed.
    haproxy(&me.haproxy_socket, "show info")
        .await
        .map_err(|e| {
            format!(
                "HAProxy's runtime API: {e} (its config needs `stats socket {} level admin`)",
                me.haproxy_socket
            )
        })?;
    let listen = common.listen_address(&me.address).await?;
    let client = Arc::new(Dbclient {
        serial,
        site: Arc::new(Mutex::new(site)),
        summary: Mutex::new(None),
        reports: Mutex::new(Reports::default()),
        config: Arc::new(super::ConfigHint::default()),
        last_writer: Mutex::new(None),
        wake: Notify::new(),
    });
    info!(address = %me.address, haproxy = %me.haproxy_socket, "dbclient minding HAProxy");
    let server = net::serve(listen, client.clone(), super::shutdown());
    super::refresh_site(
        common,
        client.site.clone(),
        client.config.clone(),
        super::Poll::WhenHinted,
        |_| true,
    );
    let rounds = async {
        loop {
            if let Err(e) = client.apply().await {
                warn!(error = %e, "routing failed; trying again");
            }
            if !super::pause(&client.site, &client.wake).await {
                break;
            }
        }
        Ok::<(), String>(())
    };
    tokio::select! {
        r = server => r,
        r = rounds => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(status: &str, state: &str, members: &[&str]) -> NodeReport {
        NodeReport {
            running: true,
            cluster_status: status.into(),
            local_state: state.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            ..NodeReport::default()
        }
    }

    fn nodes() -> Vec<String> {
        ["n1", "n2", "n3"].iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn one_writer_and_every_synced_reader() {
        let all = ["n1", "n2", "n3"];
        let known = Known {
            summary: Some(json!({
                "writer": "n2",
                "primary": {"members": ["n1", "n2", "n3"]},
                "nodes": {"n1": {"drained": true}, "n2": {}, "n3": {}},
            })),
            reports: [
                ("n1".to_string(), report("Primary", "Synced", &all)),
                ("n2".to_string(), report("Primary", "Synced", &all)),
                ("n3".to_string(), report("Primary", "Donor/Desynced", &all)),
            ]
            .into(),
            last_writer: None,
        };
        let r = route(&nodes(), &known);
        assert_eq!(r.writer.as_deref(), Some("n2"));
        assert_eq!(r.write.values().filter(|s| **s == State::Ready).count(), 1);
        assert_eq!(r.write["n2"], State::Ready);
        assert_eq!(r.read["n1"], State::Drain);
        assert_eq!(r.read["n2"], State::Ready);
        assert_eq!(r.read["n3"], State::Maint, "a donor gets no reads");
    }

    #[test]
    fn a_silent_arbitrator_keeps_a_healthy_writer_only() {
        let both = ["n1", "n2"];
        let mut known = Known {
            summary: None,
            reports: [
                ("n1".to_string(), report("Primary", "Synced", &both)),
                ("n2".to_string(), report("Primary", "Synced", &both)),
            ]
            .into(),
            last_writer: Some("n1".into()),
        };
        let r = route(&nodes(), &known);
        assert_eq!(r.writer.as_deref(), Some("n1"));
        assert_eq!(r.read["n2"], State::Ready);
        assert_eq!(r.read["n3"], State::Maint, "unknown: no reads");
        // The writer leaves the Primary component: no writer at all.
        known
            .reports
            .insert("n1".into(), report("non-Primary", "Initialized", &["n1"]));
        let r = route(&nodes(), &known);
        assert_eq!(r.writer, None);
        assert!(r.write.values().all(|s| *s == State::Maint));
        // No summary and no last writer: nobody is made the writer.
        known.last_writer = None;
        assert_eq!(route(&nodes(), &known).writer, None);
    }
}
