//! The watcher: on the leader, every `[cluster] probe_ms`, every running
//! cluster's shards are probed, each node directly (and the primary's agent
//! when the primary does not answer), and kept as the store says:
//!
//! - **Detection.** A primary that cannot be reached, or takes no write (a
//!   heartbeat row in `ccr_sys.heartbeat`), for `failover_after_s` is
//!   declared failed — an unreachable one only when no replica's IO thread
//!   is still connected to it or its agent says `mariadbd` is not running
//!   (the manager alone cut from a healthy primary changes nothing). Then a
//!   `failover` job is accepted unless `set_noswitch` holds the shard, an
//!   automatic failover of it within `failover_block_s` is not
//!   acknowledged (`ack_failover`), or no replica could be promoted; the
//!   shard's state says which.
//! - **Keeping.** The store's primary is turned writable (every node starts
//!   read-only); any other node found writable is set read-only; a fenced
//!   old primary that answers rejoins as a replica when it holds nothing
//!   the primary lacks, else stays out with what `rebuild_node` would do; a
//!   replica following another node is repointed. Nothing is done to a
//!   shard while a `failover` or `manual_switch` of it runs, nor to an
//!   instance another job holds.

use super::kinds::failover::WATCHER;
use super::shard::{self, Node, Rejoin};
use super::{nodes, Manager};
use crate::protocol::Request;
use crate::store::cluster::{FailoverRow, InstanceRow, JobRow};
use mysql_async::prelude::*;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

mod page;

/// How long one node's probe may take.
const PROBE_LIMIT: Duration = Duration::from_secs(2);
/// A fenced node is tried again this often.
const REJOIN_EVERY: Duration = Duration::from_secs(5);

/// What the watcher last saw of a shard.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShardWatch {
    pub primary: String,
    /// `ok`, or what is wrong and what the watcher does about it.
    pub state: String,
    /// Unix ms the primary was first seen failing in this episode.
    pub failing_since: Option<i64>,
    pub nodes: Vec<Node>,
    #[serde(skip)]
    failing_at: Option<Instant>,
    /// The primary's GTID state as last seen.
    #[serde(skip)]
    old_state: String,
    #[serde(skip)]
    last_rejoin: Option<Instant>,
}

/// The watcher's view of every shard, and the replicas' lag over the last
/// hour.
#[derive(Default)]
pub struct Watch {
    shards: Mutex<HashMap<(String, i64), ShardWatch>>,
    lag: crate::history::History,
}

impl Watch {
    pub fn shard(&self, cluster_id: &str, shard: i64) -> Option<ShardWatch> {
        self.shards
            .lock()
            .get(&(cluster_id.to_string(), shard))
            .cloned()
    }

    fn sample_lag(&self, nodes: &[(String, f64)]) {
        self.lag.sample(nodes);
    }
}

/// Runs rounds until `shutdown` (on the leader only).
pub async fn run(m: Arc<Manager>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    // Failovers already journalled are counted once.
    if let Ok(rows) = m.env.store.failovers().await {
        for r in rows {
            m.metrics
                .failovers
                .with_label_values(&[&reason_label(&r)])
                .inc();
        }
    }
    let mut seen: Vec<String> = m
        .env
        .store
        .failovers()
        .await
        .map(|r| r.into_iter().map(|r| r.job_id).collect())
        .unwrap_or_default();
    loop {
        let started = Instant::now();
        if m.leads() && !m.halted.load(std::sync::atomic::Ordering::SeqCst) {
            if let Err(e) = round(&m, &mut seen).await {
                warn!(error = %e, "the watcher: the store");
            }
        }
        let wait = m.env.settings.probe.saturating_sub(started.elapsed());
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
        }
    }
}

fn reason_label(r: &FailoverRow) -> String {
    if r.kind == "manual" {
        return "manual".into();
    }
    r.reason
        .split(':')
        .next()
        .unwrap_or("unreachable")
        .to_string()
}

/// What one round knows of the store.
struct Seen {
    unfinished: Vec<JobRow>,
    /// The instances unfinished jobs hold (the watcher leaves them alone).
    busy: Vec<(String, i64)>,
    journal: Vec<FailoverRow>,
    holds: Vec<(String, i64, i64)>,
}

/// What the watcher works on a cluster's nodes with.
struct ClusterCtx<'a> {
    id: &'a str,
    user: String,
    pw: crate::secret::Secret,
    fullsync: bool,
}

async fn round(
    m: &Arc<Manager>,
    seen_journal: &mut Vec<String>,
) -> Result<(), crate::store::StoreError> {
    let store = &m.env.store;
    let clusters: Vec<_> = store
        .clusters()
        .await?
        .into_iter()
        .filter(|c| c.status == "running")
        .collect();
    let instances = store.instances().await?;
    let unfinished = store.unfinished().await?;
    let busy = super::resource::held_instances(unfinished.iter().map(|j| j.resource.as_str()));
    let seen = Seen {
        unfinished,
        busy,
        journal: store.failovers().await?,
        holds: store.holds().await?,
    };
    for r in &seen.journal {
        if !seen_journal.contains(&r.job_id) {
            seen_journal.push(r.job_id.clone());
            m.metrics
                .failovers
                .with_label_values(&[&reason_label(r)])
                .inc();
        }
    }
    // Each cluster's account and settings once a round, from its row.
    let ctxs: Vec<ClusterCtx<'_>> = clusters
        .iter()
        .filter_map(|c| {
            let (user, pw) = nodes::account_of(&m.env, c).ok()?;
            Some(ClusterCtx {
                id: &c.cluster_id,
                user,
                pw,
                fullsync: nodes::NodeSettings::of(c).fullsync_level > 0,
            })
        })
        .collect();
    let mut work = Vec::new();
    for c in &ctxs {
        let mut shards: Vec<i64> = instances
            .iter()
            .filter(|i| i.cluster_id == c.id)
            .map(|i| i.shard)
            .collect();
        shards.sort();
        shards.dedup();
        for s in shards {
            let rows: Vec<InstanceRow> = instances
                .iter()
                .filter(|i| i.cluster_id == c.id && i.shard == s)
                .cloned()
                .collect();
            work.push(check_shard(m, c, s, rows, &seen));
        }
    }
    let lags: Vec<(String, f64)> = futures_util::future::join_all(work)
        .await
        .into_iter()
        .flatten()
        .collect();
    m.watch.sample_lag(&lags);
    Ok(())
}

/// One shard: probed, kept, and failed over when its primary failed.
/// Returns each replica's lag.
async fn check_shard(
    m: &Arc<Manager>,
    c: &ClusterCtx<'_>,
    shard: i64,
    rows: Vec<InstanceRow>,
    seen: &Seen,
) -> Vec<(String, f64)> {
    let env = &m.env;
    let cluster_id = c.id;
    let key = (cluster_id.to_string(), shard);
    let (user, pw, fullsync) = (&c.user, &c.pw, c.fullsync);
    let settled: Vec<InstanceRow> = rows
        .iter()
        .filter(|i| i.state == "running" || i.state == "fenced")
        .cloned()
        .collect();
    let nodes = shard::read_shard(&settled, user, pw, PROBE_LIMIT).await;
    let shard_label = shard.to_string();
    let mut lags = Vec::new();
    for n in nodes.iter().filter(|n| n.role != "primary" && n.reachable) {
        // Replicating with no delay reported yet counts as 0.
        let delay = n.delay.or((n.io == "Yes" && n.sql).then_some(0));
        if let Some(d) = delay {
            m.metrics
                .lag
                .with_label_values(&[cluster_id, &shard_label, &n.name()])
                .set(d as f64);
            lags.push((n.name(), d as f64));
        }
    }
    let mut w = m.watch.shard(cluster_id, shard).unwrap_or_default();
    w.nodes = nodes.clone();
    let primary_row = rows.iter().find(|i| i.role == "primary").cloned();
    let switching = seen.unfinished.iter().find(|j| {
        // A restore keeps its shards read-only until it ends.
        (j.job_type == "failover"
            || j.job_type == "manual_switch"
            || j.job_type == "cluster_restore")
            && j.resource
                .split(',')
                .any(|r| r == format!("shard:{cluster_id}:{shard}"))
    });
    let up_gauge = m
        .metrics
        .primary_up
        .with_label_values(&[cluster_id, &shard_label]);
    let Some(primary_row) = primary_row else {
        up_gauge.set(0);
        w.state = "no primary: manual_switch cannot run; see get_failover_journal".into();
        m.watch.shards.lock().insert(key, w);
        return lags;
    };
    let primary_name = format!("{}:{}", primary_row.hostaddr, primary_row.port);
    if w.primary != primary_name {
        // A new primary (or the first round): a new episode.
        w.primary = primary_name.clone();
        w.failing_at = None;
        w.failing_since = None;
    }
    if let Some(job) = switching {
        w.state = format!(
            "switching its primary: job {} ({})",
            job.job_id, job.job_type
        );
        w.failing_at = None;
        w.failing_since = None;
        up_gauge.set(0);
        m.watch.shards.lock().insert(key, w);
        return lags;
    }
    let pn = nodes.iter().find(|n| n.name() == primary_name).cloned();
    let failure = match &pn {
        None => Some(("unreachable", "not probed".to_string())),
        Some(p) if !p.reachable => Some(("unreachable", p.problem.clone())),
        Some(p) if primary_row.state == "fenced" => {
            Some(("not_writable", format!("{} is fenced", p.name())))
        }
        Some(p) => match heartbeat(p, user, pw, fullsync).await {
            Ok(()) => None,
            Err(e) => Some(("not_writable", e)),
        },
    };
    match failure {
        None => {
            up_gauge.set(1);
            w.failing_at = None;
            w.failing_since = None;
            if let Some(p) = &pn {
                w.old_state = p.binlog_state.clone();
            }
            w.state = "ok".into();
            keep(
                m,
                cluster_id,
                &primary_row,
                &nodes,
                &seen.busy,
                &rows,
                user,
                pw,
                &mut w,
            )
            .await;
        }
        Some((kind, detail)) => {
            up_gauge.set(0);
            let now_ms = chrono::Utc::now().timestamp_millis();
            let at = *w.failing_at.get_or_insert_with(Instant::now);
            let since = *w.failing_since.get_or_insert(now_ms);
            let failing_for = at.elapsed();
            let after = env.settings.failover_after;
            if failing_for < after {
                w.state = format!(
                    "primary {primary_name} {kind} for {} ms ({detail}): declared failed after {} s",
                    failing_for.as_millis(),
                    after.as_secs()
                );
            } else {
                match declare(m, &primary_row, &nodes, kind, &detail).await {
                    Err(why) => w.state = why,
                    Ok((reason, detail)) => {
                        w.state = start_failover(
                            m,
                            cluster_id,
                            shard,
                            &primary_row,
                            &nodes,
                            &reason,
                            &detail,
                            since,
                            &w.old_state,
                            seen,
                        )
                        .await;
                    }
                }
            }
        }
    }
    m.watch.shards.lock().insert(key, w);
    lags
}

/// Writes the heartbeat row on the primary (turning it writable first when
/// it is read-only: every node starts so).
async fn heartbeat(
    p: &Node,
    user: &str,
    pw: &crate::secret::Secret,
    semi_sync: bool,
) -> Result<(), String> {
    let work = async {
        let mut conn = nodes::connect(&p.hostaddr, p.port, user, pw)
            .await
            .map_err(|e| e.to_string())?;
        if p.read_only || (semi_sync && !p.semi_sync_master) {
            info!(node = %p.name(), "the watcher turns the shard's primary writable");
            shard::open_primary(&mut conn, semi_sync)
                .await
                .map_err(|e| e.to_string())?;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let write = "INSERT INTO ccr_sys.heartbeat (id, at) VALUES (1, ?) \
                     ON DUPLICATE KEY UPDATE at = VALUES(at)";
        if let Err(e) = conn.exec_drop(write, (now,)).await {
            if !matches!(crate::db::server_code(&e), Some(1049 | 1146)) {
                return Err(e.to_string());
            }
            conn.query_drop(
                "CREATE DATABASE IF NOT EXISTS ccr_sys; \
                 CREATE TABLE IF NOT EXISTS ccr_sys.heartbeat (id INT PRIMARY KEY, at BIGINT NOT NULL)",
            )
            .await
            .map_err(|e| e.to_string())?;
            conn.exec_drop(write, (now,))
                .await
                .map_err(|e| e.to_string())?;
        }
        let _ = conn.disconnect().await;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(PROBE_LIMIT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "a write did not commit within {} ms",
            PROBE_LIMIT.as_millis()
        )),
    }
}

/// Whether a primary failing this long is failed: an unreachable one only
/// when no replica is connected to it, or its agent says it is not
/// running. The reason and what was seen, or why not.
async fn declare(
    m: &Arc<Manager>,
    primary: &InstanceRow,
    nodes: &[Node],
    kind: &str,
    detail: &str,
) -> Result<(String, String), String> {
    let name = format!("{}:{}", primary.hostaddr, primary.port);
    if kind != "unreachable" {
        return Ok((kind.to_string(), detail.to_string()));
    }
    let agent = agent_says(m, primary).await;
    if agent == Some(false) {
        return Ok((
            "stopped".into(),
            format!("{detail}; its agent says mariadbd is not running"),
        ));
    }
    let connected: Vec<String> = nodes
        .iter()
        .filter(|n| n.follows(&name))
        .map(|n| n.name())
        .collect();
    if !connected.is_empty() {
        return Err(format!(
            "the manager cannot reach the primary {name} ({detail}), but {} still receive from \
             it: no failover (a network cut between the manager and a healthy primary)",
            connected.join(", ")
        ));
    }
    let agent = match agent {
        None => "its agent is unreachable too",
        Some(_) => "its agent says mariadbd runs (hung)",
    };
    Ok((
        "unreachable".into(),
        format!("{detail}; no replica is connected to it; {agent}"),
    ))
}

/// What the primary's agent says: running or not; `None`: unreachable.
async fn agent_says(m: &Arc<Manager>, primary: &InstanceRow) -> Option<bool> {
    let port = shard::agent_port(&m.env, &primary.hostaddr).await.ok()?;
    let v = tokio::time::timeout(
        Duration::from_secs(3),
        m.env.agents.ask(&primary.hostaddr, port, &Request::GetNode),
    )
    .await
    .ok()?
    .ok()?;
    let node = v["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["port"].as_i64() == Some(primary.port))?
        .clone();
    Some(node["state"] == "running")
}

/// Accepts the shard's `failover` job unless a hold, the block period or
/// the lack of a candidate stops it; the shard's state.
#[allow(clippy::too_many_arguments)]
async fn start_failover(
    m: &Arc<Manager>,
    cluster_id: &str,
    shard: i64,
    primary: &InstanceRow,
    nodes: &[Node],
    reason: &str,
    detail: &str,
    failed_at: i64,
    old_state: &str,
    seen: &Seen,
) -> String {
    let name = format!("{}:{}", primary.hostaddr, primary.port);
    let now = chrono::Utc::now().timestamp_millis();
    if let Some((_, _, until)) = seen
        .holds
        .iter()
        .find(|(c, s, until)| c == cluster_id && *s == shard && *until > now)
    {
        return format!(
            "primary {name} failed ({reason}: {detail}); automatic failover held by set_noswitch \
             until {}",
            fmt_ms(*until)
        );
    }
    let block = m.env.settings.failover_block.as_millis() as i64;
    if let Some(last) = seen.journal.iter().find(|f| {
        f.cluster_id == cluster_id
            && f.shard == shard
            && f.kind == "auto"
            && f.acked_at == 0
            && now - f.promoted_at < block
    }) {
        return format!(
            "primary {name} failed ({reason}: {detail}); automatic failover blocked: the last one \
             (job {}) was at {}, within failover_block_s ({} s); ack_failover releases it",
            last.job_id,
            fmt_ms(last.promoted_at),
            block / 1000
        );
    }
    if !nodes
        .iter()
        .any(|n| n.role != "primary" && n.reachable && n.state == "running")
    {
        return format!(
            "primary {name} failed ({reason}: {detail}); no replica can be promoted: {}",
            nodes
                .iter()
                .filter(|n| n.role != "primary")
                .map(|n| format!(
                    "{} ({})",
                    n.name(),
                    if n.reachable {
                        n.state.as_str()
                    } else {
                        n.problem.as_str()
                    }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let Some(kind) = m.kind("failover") else {
        return "failover is not registered".into();
    };
    // One job per failure episode; a failed one is followed by another.
    for attempt in 1..=5 {
        let job_id = format!("failover-{cluster_id}-{shard}-{failed_at}-{attempt}");
        match m.env.store.job(&job_id).await {
            Ok(Some(j)) if j.status == "failed" => continue,
            Ok(Some(j)) => return format!("failing over: job {} ({})", j.job_id, j.status),
            Ok(None) => {}
            Err(e) => return format!("the store: {e}"),
        }
        let mut paras = serde_json::Map::new();
        for (k, v) in [
            ("cluster_id", json!(cluster_id)),
            ("shard_id", json!(shard.to_string())),
            ("hostaddr", json!(primary.hostaddr)),
            ("port", json!(primary.port.to_string())),
            ("reason", json!(reason)),
            ("detail", json!(detail)),
            ("failed_at", json!(failed_at.to_string())),
            ("old_state", json!(old_state)),
        ] {
            paras.insert(k.into(), v);
        }
        let e = super::emit::Envelope {
            version: "1.0".into(),
            job_id: job_id.clone(),
            job_type: "failover".into(),
            user_name: WATCHER.into(),
            paras,
        };
        return match m.accept(&e, kind.as_ref()).await {
            Ok(_) => {
                warn!(cluster = cluster_id, shard, primary = %name, reason, detail, job = %job_id,
                      "primary failed: failing over");
                format!("failing over: job {job_id} ({reason}: {detail})")
            }
            Err(r) => format!("failover not started: {}", r.info),
        };
    }
    format!(
        "primary {name} failed ({reason}: {detail}); five failover jobs failed: see list_jobs \
         job_type failover"
    )
}

/// The shard as the store says: other nodes read-only, fenced old
/// primaries rejoined, replicas following the primary.
#[allow(clippy::too_many_arguments)]
async fn keep(
    m: &Arc<Manager>,
    cluster_id: &str,
    primary: &InstanceRow,
    nodes: &[Node],
    busy: &[(String, i64)],
    rows: &[InstanceRow],
    user: &str,
    pw: &crate::secret::Secret,
    w: &mut ShardWatch,
) {
    let primary_name = format!("{}:{}", primary.hostaddr, primary.port);
    let mut notes = Vec::new();
    for n in nodes
        .iter()
        .filter(|n| n.reachable && n.name() != primary_name)
    {
        if busy.contains(&(n.hostaddr.clone(), n.port)) {
            continue;
        }
        let row = InstanceRow {
            hostaddr: n.hostaddr.clone(),
            port: n.port,
            ..Default::default()
        };
        if !n.read_only {
            warn!(node = %n.name(), "a node that is not the primary was writable: set read-only");
            if let Ok(mut c) = nodes::connect(&n.hostaddr, n.port, user, pw).await {
                let _ = c.query_drop("SET GLOBAL read_only = ON").await;
                let _ = c.disconnect().await;
            }
        }
        if n.state == "fenced" {
            if w.last_rejoin.is_some_and(|t| t.elapsed() < REJOIN_EVERY) {
                continue;
            }
            w.last_rejoin = Some(Instant::now());
            let stored = rows
                .iter()
                .find(|i| i.hostaddr == n.hostaddr && i.port == n.port)
                .cloned();
            let Some(stored) = stored else { continue };
            let next = match shard::rejoin(cluster_id, &stored, primary, user, pw).await {
                Rejoin::Rejoined => {
                    info!(node = %n.name(), primary = %primary_name,
                          "a fenced old primary rejoined as a replica");
                    Some(("running", String::new()))
                }
                Rejoin::Errant(why) => {
                    notes.push(format!("{} out of service", n.name()));
                    (why != stored.note).then(|| {
                        warn!(node = %n.name(), why, "a fenced node stays out of service");
                        ("fenced", why)
                    })
                }
                Rejoin::Unreachable(_) => None,
            };
            if let Some((state, note)) = next {
                let seen = (stored.state.as_str(), stored.note.as_str());
                if let Err(e) = m
                    .env
                    .store
                    .set_instance_state_if(&n.hostaddr, n.port, seen, state, &note)
                    .await
                {
                    warn!(node = %n.name(), error = %e, "the store: the node's state is not written");
                }
            }
            continue;
        }
        if n.state == "running" && (n.io.is_empty() || n.master != primary_name) {
            warn!(node = %n.name(), follows = %n.master, primary = %primary_name,
                  "a replica does not follow the shard's primary: repointed");
            if let Err(e) = shard::repoint(&row, &primary.hostaddr, primary.port, user, pw).await {
                warn!(node = %n.name(), error = %e, "repointing failed");
            }
        }
    }
    if let Some(f) = nodes.iter().find(|n| n.state == "fenced") {
        notes.push(format!("{} fenced", f.name()));
    }
    if !notes.is_empty() {
        w.state = format!("ok ({})", notes.join(", "));
    }
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}
