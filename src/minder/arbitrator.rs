//! `minder arbitrator --serial N`: the only party that may promote. Keeps
//! the latest report of every node, decides by [`super::rule`] each report
//! interval (and at once when a report changes), sends `set_primary` until
//! acknowledged, keeps the writer and the drained nodes, tells every
//! dbclient the summary, answers a person's commands, and records every
//! decision with its reason in its state directory (so a restarted
//! arbitrator makes no contradicting decision).

use super::message::{next_id, Kind, Message, Party, Refused, Verb};
use super::net::{self, Handler};
use super::reports::{self, Reports, Taken};
use super::rule::{self, Decision, Memory, Promotion, Seen, Settings};
use super::site::Site;
use super::Common;
use parking_lot::Mutex;
use prometheus::{Encoder, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{error, info, warn};

/// What survives a restart (`arbitrator.json` in the state dir).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Kept {
    memory: Memory,
    drained: BTreeSet<String>,
    writer: Option<String>,
}

struct Metrics {
    registry: Registry,
    primary: IntGaugeVec,
    synced: IntGaugeVec,
    reachable: IntGaugeVec,
    report_age_ms: IntGaugeVec,
    promotions: IntCounter,
    resends: IntCounter,
    epoch: IntGauge,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["node"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let primary = vec(
            "minder_node_primary",
            "1 while the node reports a Primary component",
        );
        let synced = vec("minder_node_synced", "1 while the node reports Synced");
        let reachable = vec("minder_node_reachable", "1 while the node's reports arrive");
        let report_age_ms = vec(
            "minder_report_age_milliseconds",
            "Age of the node's latest report",
        );
        let promotions =
            IntCounter::new("minder_promotions_total", "Components made Primary").expect("valid");
        let resends = IntCounter::new(
            "minder_resends_total",
            "Messages sent again for want of an ack",
        )
        .expect("valid");
        let epoch =
            IntGauge::new("minder_epoch", "The decision epoch: promotions so far").expect("valid");
        for c in [&promotions, &resends] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(epoch.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            primary,
            synced,
            reachable,
            report_age_ms,
            promotions,
            resends,
            epoch,
        }
    }
}

pub struct Arbitrator {
    serial: u32,
    state_file: PathBuf,
    site: Arc<Mutex<Site>>,
    reports: Mutex<Reports>,
    config: Arc<super::ConfigHint>,
    kept: Mutex<Kept>,
    /// An operator's `force_primary`, until the next round takes it.
    forced: Mutex<Option<String>>,
    /// Why nothing is promoted now.
    pending: Mutex<Option<String>>,
    wake: Notify,
    metrics: Metrics,
    started: Instant,
}

impl Arbitrator {
    fn settings(&self) -> Settings {
        let site = self.site.lock();
        Settings {
            primary_dc: site.primary_dc.clone(),
            confirm_ms: site.confirm_s as i64 * 1000,
            hold_ms: site.hold_s as i64 * 1000,
            dcs: site.dcs(),
        }
    }

    /// Reports older than three intervals (at least 3 s) are stale: the node
    /// is unreachable, not down.
    fn stale(&self) -> Duration {
        Duration::from_secs((3 * self.site.lock().report_interval_s).max(3))
    }

    fn seen(&self) -> BTreeMap<String, Seen> {
        let stale = self.stale();
        let site = self.site.lock().clone();
        let reports = self.reports.lock();
        site.dbservers
            .iter()
            .map(|d| {
                let seen = match reports.get(&d.name) {
                    Some((r, at)) if at.elapsed() <= stale => Seen::Reported(r.clone()),
                    _ => Seen::Unreachable,
                };
                (d.name.clone(), seen)
            })
            .collect()
    }

    fn save(&self) {
        let kept = self.kept.lock().clone();
        let tmp = self.state_file.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&kept).expect("serializes");
        if let Err(e) =
            std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.state_file))
        {
            error!(file = %self.state_file.display(), error = %e, "cannot keep the arbitrator's state");
        }
    }

    /// One round: observe, decide, act, tell the dbclients.
    fn round(self: &Arc<Self>) {
        let now = chrono::Utc::now().timestamp_millis();
        let seen = self.seen();
        let settings = self.settings();
        let forced = self.forced.lock().take();
        let decision = {
            let mut kept = self.kept.lock();
            let before = kept.memory.clone();
            rule::observe(&mut kept.memory, &seen, now);
            let view_changed = before.last_primary_view != kept.memory.last_primary_view;
            let d = rule::decide(&settings, &kept.memory, &seen, now, forced.as_deref());
            if let Decision::Promote {
                node,
                component,
                reason,
            } = &d
            {
                let epoch = kept.memory.epoch() + 1;
                kept.memory.promotions.push(Promotion {
                    epoch,
                    component: component.clone(),
                    node: node.clone(),
                    at: now,
                    reason: reason.clone(),
                    forced: forced.is_some(),
                });
                let keep_from = kept.memory.promotions.len().saturating_sub(100);
                kept.memory.promotions.drain(..keep_from);
            }
            // A first writer waits until every member of the Primary
            // component has reported (or a stale period has passed since
            // start): the first report alone would pick whoever came first,
            // and a writer stays where it is.
            let settled = kept.writer.is_some()
                || self.started.elapsed() > self.stale()
                || rule::primary_members(&seen)
                    .iter()
                    .all(|n| seen.get(n).and_then(Seen::report).is_some());
            let writer = if settled {
                rule::writer(&settings, kept.writer.as_deref(), &seen, &kept.drained)
            } else {
                None
            };
            let writer_changed = writer.is_some() && writer != kept.writer;
            if writer_changed {
                info!(writer = ?writer, was = ?kept.writer, "writer");
                kept.writer = writer;
            }
            if matches!(d, Decision::Promote { .. }) || view_changed || writer_changed {
                drop(kept);
                self.save();
            }
            d
        };
        match &decision {
            Decision::Promote {
                node,
                component,
                reason,
            } => {
                let epoch = self.kept.lock().memory.epoch();
                if forced.is_some() {
                    warn!(node = %node, component = ?component, epoch, "OPERATOR OVERRIDE: {reason}");
                } else {
                    warn!(node = %node, component = ?component, epoch, "promoting: {reason}");
                }
                self.metrics.promotions.inc();
                self.metrics.epoch.set(epoch as i64);
                *self.pending.lock() = None;
                self.send_set_primary(node.clone(), epoch);
            }
            Decision::Wait(why) => {
                let mut pending = self.pending.lock();
                if pending.as_deref() != Some(why.as_str()) {
                    info!(reason = %why, "no promotion");
                    *pending = Some(why.clone());
                }
            }
            Decision::Healthy { .. } => *self.pending.lock() = None,
        }
        self.update_metrics(&seen);
        self.send_summaries();
    }

    fn send_set_primary(self: &Arc<Self>, node: String, epoch: u64) {
        let site = self.site.lock().clone();
        let Some(d) = site.dbservers.iter().find(|d| d.name == node).cloned() else {
            return;
        };
        let m = Message {
            sender: self.me(),
            receiver: Party {
                kind: Kind::Dbserver,
                serial: d.serial,
            },
            verb: Verb::SetPrimary,
            params: json!({"node": node, "epoch": epoch}),
            msg_id: next_id(),
        };
        let me = self.clone();
        let every = Duration::from_secs(site.resend_s);
        tokio::spawn(async move {
            for attempt in 0..20u32 {
                if attempt > 0 {
                    me.metrics.resends.inc();
                    tokio::time::sleep(every).await;
                }
                match net::send(&d.address, &m, every).await {
                    Ok(ack) => {
                        info!(node = %node, epoch, result = %ack.params["result"], "set_primary acknowledged");
                        return;
                    }
                    Err(e) => {
                        warn!(node = %node, epoch, error = %e, "set_primary not acknowledged; sending again")
                    }
                }
            }
        });
    }

    fn update_metrics(&self, seen: &BTreeMap<String, Seen>) {
        let reports = self.reports.lock();
        for (name, s) in seen {
            let r = match s {
                Seen::Reported(r) => Some(r),
                Seen::Unreachable => None,
            };
            let m = &self.metrics;
            m.reachable
                .with_label_values(&[name])
                .set(i64::from(r.is_some()));
            m.primary
                .with_label_values(&[name])
                .set(i64::from(r.is_some_and(|r| r.is_primary())));
            m.synced
                .with_label_values(&[name])
                .set(i64::from(r.is_some_and(|r| r.local_state == "Synced")));
            let age = reports
                .get(name)
                .map_or(-1, |(_, at)| at.elapsed().as_millis() as i64);
            m.report_age_ms.with_label_values(&[name]).set(age);
        }
    }

    /// The arbitrator's view, as `status_summary` shows it.
    pub fn summary(&self) -> Value {
        let site = self.site.lock().clone();
        let seen = self.seen();
        let kept = self.kept.lock().clone();
        let reports = self.reports.lock();
        let primary = seen.values().find_map(|s| match s {
            Seen::Reported(r) if r.is_primary() => Some(r.members.clone()),
            _ => None,
        });
        let primary = primary.map(|members| {
            let dcs: BTreeSet<&str> = members
                .iter()
                .filter_map(|m| {
                    site.dbservers
                        .iter()
                        .find(|d| &d.name == m)
                        .map(|d| d.dc.as_str())
                })
                .collect();
            json!({"members": members, "dc": dcs.into_iter().collect::<Vec<_>>().join(",")})
        });
        let nodes: serde_json::Map<String, Value> = site
            .dbservers
            .iter()
            .map(|d| {
                let r = reports.get(&d.name);
                let reachable = matches!(seen.get(&d.name), Some(Seen::Reported(_)));
                let v = json!({
                    "dc": d.dc,
                    "mysql": d.mysql,
                    "reachable": reachable,
                    "running": r.map(|(r, _)| r.running),
                    "cluster_status": r.map(|(r, _)| r.cluster_status.clone()),
                    "local_state": r.map(|(r, _)| r.local_state.clone()),
                    "size": r.map(|(r, _)| r.cluster_size),
                    "last_committed": r.map(|(r, _)| r.last_committed),
                    "members": r.map(|(r, _)| r.members.clone()),
                    "drained": kept.drained.contains(&d.name),
                    "report_age_ms": r.map(|(_, at)| at.elapsed().as_millis() as u64),
                });
                (d.name.clone(), v)
            })
            .collect();
        let decisions: Vec<&Promotion> = kept.memory.promotions.iter().rev().take(10).collect();
        json!({
            "epoch": kept.memory.epoch(),
            "primary": primary,
            "writer": kept.writer,
            "nodes": nodes,
            "pending": *self.pending.lock(),
            "last_primary_view": kept.memory.last_primary_view,
            "decisions": decisions,
            "write_backend": site.write_backend,
            "read_backend": site.read_backend,
        })
    }

    fn send_summaries(self: &Arc<Self>) {
        let site = self.site.lock().clone();
        let summary = self.summary();
        for c in &site.dbclients {
            let m = Message {
                sender: self.me(),
                receiver: Party {
                    kind: Kind::Dbclient,
                    serial: c.serial,
                },
                verb: Verb::StatusSummary,
                params: summary.clone(),
                msg_id: next_id(),
            };
            let address = c.address.clone();
            let timeout = Duration::from_secs(site.resend_s);
            tokio::spawn(async move {
                let _ = net::send(&address, &m, timeout).await;
            });
        }
    }

    fn node_param(&self, m: &Message) -> Result<String, Refused> {
        let node = m.params["node"]
            .as_str()
            .ok_or_else(|| Refused(format!("{} needs params.node", m.verb.as_str())))?;
        if !self.site.lock().dbservers.iter().any(|d| d.name == node) {
            return Err(Refused(format!(
                "no node {node:?} in the site's configuration"
            )));
        }
        Ok(node.to_string())
    }
}

#[async_trait::async_trait]
impl Handler for Arbitrator {
    fn me(&self) -> Party {
        Party {
            kind: Kind::Arbitrator,
            serial: self.serial,
        }
    }

    fn admit(&self, m: &Message, _peer: SocketAddr) -> Result<(), Refused> {
        let site = self.site.lock();
        let known = match m.sender.kind {
            Kind::Dbserver => site.dbserver(m.sender.serial).is_some(),
            Kind::Command => true,
            _ => false,
        };
        if !known {
            return Err(Refused(format!(
                "{} is not in the site's configuration",
                m.sender
            )));
        }
        let takes = matches!(
            (m.sender.kind, m.verb),
            (Kind::Dbserver, Verb::DbStatusReport)
                | (
                    Kind::Command,
                    Verb::StatusSummary
                        | Verb::Drain
                        | Verb::Undrain
                        | Verb::SetWriter
                        | Verb::ForcePrimary
                )
        );
        if !takes {
            return Err(Refused(format!(
                "{} does not take {} from {}",
                self.me(),
                m.verb.as_str(),
                m.sender
            )));
        }
        Ok(())
    }

    async fn handle(&self, m: Message, _peer: SocketAddr) -> Result<Message, Refused> {
        let me = self.me();
        match m.verb {
            Verb::DbStatusReport => {
                let node = self
                    .site
                    .lock()
                    .dbserver(m.sender.serial)
                    .map(|d| d.name.clone())
                    .expect("admitted");
                let taken = self.reports.lock().take(&node, &m)?;
                if taken == (Taken::Kept { changed: true }) {
                    self.wake.notify_one();
                }
                self.config.heard(reports::config_digest(&m));
                Ok(reports::answer(&m, me, &taken))
            }
            Verb::StatusSummary => Ok(Message {
                sender: me,
                receiver: m.sender,
                verb: Verb::StatusSummary,
                params: self.summary(),
                msg_id: next_id(),
            }),
            Verb::Drain | Verb::Undrain => {
                let node = self.node_param(&m)?;
                {
                    let mut kept = self.kept.lock();
                    if m.verb == Verb::Drain {
                        kept.drained.insert(node.clone());
                    } else {
                        kept.drained.remove(&node);
                    }
                }
                self.save();
                info!(node = %node, "{} by an operator", m.verb.as_str());
                self.wake.notify_one();
                Ok(m.ack(me))
            }
            Verb::SetWriter => {
                let node = self.node_param(&m)?;
                let ok = matches!(self.seen().get(&node), Some(Seen::Reported(r)) if r.is_primary() && r.local_state == "Synced");
                if !ok {
                    return Err(Refused(format!(
                        "{node} is not Synced in the Primary component: it cannot be the writer"
                    )));
                }
                self.kept.lock().writer = Some(node.clone());
                self.save();
                info!(node = %node, "writer set by an operator");
                self.wake.notify_one();
                Ok(m.ack(me))
            }
            Verb::ForcePrimary => {
                let node = self.node_param(&m)?;
                warn!(node = %node, "force_primary asked by an operator: the safety rule is overridden");
                *self.forced.lock() = Some(node);
                self.wake.notify_one();
                Ok(m.ack(me))
            }
            _ => Err(Refused(format!("{me} does not take {}", m.verb.as_str()))),
        }
    }

    fn metrics(&self) -> Option<String> {
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.metrics.registry.gather(), &mut out)
            .ok()?;
        String::from_utf8(out).ok()
    }
}

pub async fn run(serial: u32, common: Common) -> Result<(), String> {
    let site = common.site().await?;
    let me = site
        .arbitrators
        .iter()
        .find(|a| a.serial == serial)
        .cloned()
        .ok_or_else(|| {
            format!("the site's configuration has no [[arbitrator]] with serial {serial}")
        })?;
    let state_file = common.state_dir.join("arbitrator.json");
    let kept: Kept = match std::fs::read(&state_file) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{}: {e} (the arbitrator's decisions; refusing to start without them)",
                state_file.display()
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kept::default(),
        Err(e) => return Err(format!("{}: {e}", state_file.display())),
    };
    let listen = common.listen_address(&me.address).await?;
    let arb = Arc::new(Arbitrator {
        serial,
        state_file,
        site: Arc::new(Mutex::new(site)),
        reports: Mutex::new(Reports::default()),
        config: Arc::new(super::ConfigHint::default()),
        metrics: Metrics::new(),
        kept: Mutex::new(kept),
        forced: Mutex::new(None),
        pending: Mutex::new(None),
        wake: Notify::new(),
        started: Instant::now(),
    });
    arb.metrics.epoch.set(arb.kept.lock().memory.epoch() as i64);
    info!(address = %me.address, epoch = arb.kept.lock().memory.epoch(), "arbitrator started");
    let server = net::serve(listen, arb.clone(), super::shutdown());
    super::refresh_site(
        common,
        arb.site.clone(),
        arb.config.clone(),
        super::Poll::WhenHinted,
        |_| true,
    );
    let rounds = async {
        // The first reports arrive within an interval: decide only after them.
        let interval = Duration::from_secs(arb.site.lock().report_interval_s);
        tokio::time::sleep(interval).await;
        loop {
            arb.round();
            if !super::pause(&arb.site, &arb.wake).await {
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
