//! `minder dbserver --serial N`: beside one Galera node. Reads the node's
//! wsrep state and whether `mariadbd` runs, reports it to the arbitrators
//! and every dbclient each report interval and at once on a change (or a
//! notification from Galera), and runs `pc.bootstrap=YES` when the
//! arbitrator says `set_primary` — only while the node is still
//! non-Primary.

use super::message::{Kind, Message, Party, Refused, Verb};
use super::net::{self, Handler};
use super::reports::Bases;
use super::rule::NodeReport;
use super::site::Site;
use super::Common;
use crate::db::{self, ConnectError, ServerAddr};
use crate::secret::Secret;
use crate::tls::TlsOptions;
use mysql_async::prelude::*;
use mysql_async::Conn;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

pub struct Dbserver {
    serial: u32,
    user: String,
    password: Secret,
    site: Arc<Mutex<Site>>,
    /// The latest report read from the node.
    report: Mutex<NodeReport>,
    /// A notification or a request arrived: report now.
    wake: Notify,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// The whole report each receiver acknowledged (reports are compact
    /// while the node's state stays the same).
    bases: Mutex<Bases>,
    /// The configuration's digest, carried in every report.
    config: Arc<super::ConfigHint>,
}

impl Dbserver {
    fn node(&self) -> super::site::Dbserver {
        self.site
            .lock()
            .dbserver(self.serial)
            .cloned()
            .expect("checked at start")
    }

    /// Reads the node's state; a node that refuses connections is not
    /// running.
    async fn read(&self) -> NodeReport {
        let node = self.node();
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            let (host, port) = node.mysql.rsplit_once(':').expect("checked by Site");
            let tls = TlsOptions::default();
            let addr = ServerAddr {
                host,
                port: port.parse().unwrap_or(3306),
                user: &self.user,
                password: &self.password,
                tls: &tls,
            };
            match db::connect(&addr, None, Duration::from_secs(2)).await {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    let running = !matches!(&e, ConnectError::Unreachable { reason, .. } if reason.contains("refused"));
                    return NodeReport {
                        running,
                        cluster_status: "Disconnected".into(),
                        local_state: format!("unreadable: {e}"),
                        at: chrono::Utc::now().timestamp_millis(),
                        ..NodeReport::default()
                    };
                }
            }
        }
        let c = conn.as_mut().expect("set above");
        let rows: Result<Vec<(String, String)>, _> = c
            .query(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_status', \
                    'wsrep_local_state_comment', 'wsrep_cluster_size', 'wsrep_cluster_state_uuid', \
                    'wsrep_cluster_conf_id', 'wsrep_last_committed', 'wsrep_incoming_addresses')",
            )
            .await;
        let rows = match rows {
            Ok(r) => r,
            Err(e) => {
                *conn = None;
                return NodeReport {
                    running: true,
                    cluster_status: "Disconnected".into(),
                    local_state: format!("unreadable: {e}"),
                    at: chrono::Utc::now().timestamp_millis(),
                    ..NodeReport::default()
                };
            }
        };
        let get = |k: &str| {
            rows.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let site = self.site.lock().clone();
        // Members by name: each incoming address is a node's client address.
        let mut members: Vec<String> = get("wsrep_incoming_addresses")
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "AUTO")
            .map(|a| site.node_at(a).map_or(a.to_string(), |d| d.name.clone()))
            .collect();
        if !members.contains(&node.name) {
            members.push(node.name.clone());
        }
        members.sort();
        members.dedup();
        NodeReport {
            running: true,
            cluster_status: get("wsrep_cluster_status"),
            local_state: get("wsrep_local_state_comment"),
            cluster_size: get("wsrep_cluster_size").parse().unwrap_or(0),
            state_uuid: get("wsrep_cluster_state_uuid"),
            conf_id: get("wsrep_cluster_conf_id").parse().unwrap_or(-1),
            last_committed: get("wsrep_last_committed").parse().unwrap_or(-1),
            members,
            at: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// The report for `to`: compact when `to` holds a whole one of the same
    /// state (`whole` forces the whole report).
    fn report_message(&self, to: Party, report: &NodeReport, whole: bool) -> Message {
        let config = self.config.holds.lock().clone();
        let fresh = Bases::default();
        let bases = self.bases.lock();
        let bases = if whole { &fresh } else { &*bases };
        bases.message(self.me(), to, &self.node().name, report, config.as_deref())
    }

    /// Sends the report to every arbitrator and dbclient, side by side (an
    /// unreachable one delays none of the others).
    fn send_report(self: &Arc<Self>, report: &NodeReport) {
        let site = self.site.lock().clone();
        let to: Vec<(Party, String)> = site
            .arbitrators
            .iter()
            .map(|a| {
                (
                    Party {
                        kind: Kind::Arbitrator,
                        serial: a.serial,
                    },
                    a.address.clone(),
                )
            })
            .chain(site.dbclients.iter().map(|c| {
                (
                    Party {
                        kind: Kind::Dbclient,
                        serial: c.serial,
                    },
                    c.address.clone(),
                )
            }))
            .collect();
        let timeout = Duration::from_secs(site.resend_s);
        for (party, address) in to {
            let me = self.clone();
            let report = report.clone();
            tokio::spawn(async move {
                // At most twice: compact, then whole when the receiver asks.
                for _ in 0..2 {
                    let m = me.report_message(party, &report, false);
                    match net::send(&address, &m, timeout).await {
                        Ok(answer) => {
                            if !me.bases.lock().answered(&m, &report, &answer) {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "status report not delivered");
                            break;
                        }
                    }
                }
            });
        }
    }

    /// `pc.bootstrap=YES` on the node, if it is still non-Primary.
    async fn bootstrap(&self) -> Result<String, String> {
        let now = self.read().await;
        *self.report.lock() = now.clone();
        if now.is_primary() {
            return Ok("the node is Primary already: nothing done".into());
        }
        if !now.running {
            return Err("mariadbd does not run on this node".into());
        }
        let mut conn = self.conn.lock().await;
        let c = conn.as_mut().ok_or("the node cannot be read")?;
        c.query_drop("SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'")
            .await
            .map_err(|e| format!("pc.bootstrap: {e}"))?;
        Ok("pc.bootstrap=YES run".into())
    }
}

#[async_trait::async_trait]
impl Handler for Dbserver {
    fn me(&self) -> Party {
        Party {
            kind: Kind::Dbserver,
            serial: self.serial,
        }
    }

    fn admit(&self, m: &Message, peer: SocketAddr) -> Result<(), Refused> {
        let site = self.site.lock();
        match (m.sender.kind, m.verb) {
            (Kind::Arbitrator, Verb::SetPrimary | Verb::RequestStatus | Verb::StatusSummary) => {
                if site.arbitrators.iter().any(|a| a.serial == m.sender.serial) {
                    Ok(())
                } else {
                    Err(Refused(format!(
                        "{} is not in the site's configuration",
                        m.sender
                    )))
                }
            }
            (Kind::Dbclient, Verb::RequestStatus) => {
                if site.dbclients.iter().any(|c| c.serial == m.sender.serial) {
                    Ok(())
                } else {
                    Err(Refused(format!(
                        "{} is not in the site's configuration",
                        m.sender
                    )))
                }
            }
            // Galera's notification comes from this machine only.
            (Kind::Notify, Verb::Notify) => {
                let own = site
                    .dbserver(self.serial)
                    .and_then(|d| d.address.rsplit_once(':').map(|(h, _)| h.to_string()));
                if peer.ip().is_loopback() || own.as_deref() == Some(peer.ip().to_string().as_str())
                {
                    Ok(())
                } else {
                    Err(Refused(format!(
                        "a notification from {peer}: only this machine's Galera notifies"
                    )))
                }
            }
            (_, verb) => Err(Refused(format!(
                "{} does not take {} from {}",
                self.me(),
                verb.as_str(),
                m.sender
            ))),
        }
    }

    async fn handle(&self, m: Message, _peer: SocketAddr) -> Result<Message, Refused> {
        match m.verb {
            Verb::SetPrimary => {
                let result = self.bootstrap().await;
                match &result {
                    Ok(what) => {
                        info!(node = %self.node().name, epoch = %m.params["epoch"], "set_primary: {what}")
                    }
                    Err(e) => warn!(node = %self.node().name, error = %e, "set_primary failed"),
                }
                let mut ack = m.ack(self.me());
                ack.params["done"] = serde_json::json!(result.is_ok());
                ack.params["result"] = serde_json::json!(result.unwrap_or_else(|e| e));
                self.wake.notify_one();
                Ok(ack)
            }
            Verb::RequestStatus => {
                let report = self.read().await;
                *self.report.lock() = report.clone();
                Ok(self.report_message(m.sender, &report, true))
            }
            Verb::Notify => {
                self.wake.notify_one();
                Ok(m.ack(self.me()))
            }
            // A summary sent to every party: nothing to do with it here.
            _ => Ok(m.ack(self.me())),
        }
    }
}

pub async fn run(serial: u32, user: String, common: Common) -> Result<(), String> {
    let site = common.site().await?;
    let node = site.dbserver(serial).cloned().ok_or_else(|| {
        format!("the site's configuration has no [[dbserver]] with serial {serial}")
    })?;
    let listen: SocketAddr = common.listen_address(&node.address).await?;
    let me = Arc::new(Dbserver {
        serial,
        user,
        password: crate::config::minder_mysql_password(),
        site: Arc::new(Mutex::new(site)),
        report: Mutex::new(NodeReport::default()),
        wake: Notify::new(),
        conn: tokio::sync::Mutex::new(None),
        bases: Mutex::new(Bases::default()),
        config: Arc::new(super::ConfigHint::default()),
    });
    info!(node = %node.name, address = %node.address, mysql = %node.mysql, "dbserver minding its node");
    let server = net::serve(listen, me.clone(), super::shutdown());
    // The dbserver reads the configuration from its own node every
    // interval (no WAN in between) and tells the others its digest.
    let waker = me.clone();
    super::refresh_site(
        common,
        me.site.clone(),
        me.config.clone(),
        super::Poll::EveryInterval,
        move |s| {
            waker.wake.notify_one();
            s.dbserver(serial).is_some()
        },
    );
    let reports = async {
        loop {
            let report = me.read().await;
            let changed = {
                let mut r = me.report.lock();
                let changed = (
                    r.cluster_status.as_str(),
                    r.local_state.as_str(),
                    &r.members,
                    r.running,
                ) != (
                    report.cluster_status.as_str(),
                    report.local_state.as_str(),
                    &report.members,
                    report.running,
                );
                *r = report.clone();
                changed
            };
            if changed {
                info!(node = %node.name, status = %report.cluster_status, state = %report.local_state,
                  members = ?report.members, running = report.running, "node state");
            }
            me.send_report(&report);
            if !super::pause(&me.site, &me.wake).await {
                break;
            }
        }
        Ok::<(), String>(())
    };
    tokio::select! {
        r = server => r,
        r = reports => r,
    }
}
