//! Choosing the node a shard's primary moves to: the candidates read,
//! the best one brought level (its relay log applied, then whatever a
//! replica received beyond it), for `failover` and `manual_switch`.

use super::{highest_of_others, own_errant, read_shard, rows, seq, sql_error, Node};
use crate::cluster::kind::{StepCtx, StepError};
use crate::cluster::{nodes, replicas};
use crate::db;
use crate::secret::Secret;
use crate::store::cluster::InstanceRow;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// What `elect` chose.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Elected {
    pub candidate: String,
    pub hostaddr: String,
    pub port: i64,
    /// Its `gtid_current_pos` once level.
    pub position: String,
    /// Every other node and why it was not chosen.
    pub skipped: Vec<String>,
    /// The replica it caught up from, if one had received more.
    #[serde(default)]
    pub caught_up_from: Option<String>,
    /// What it had received and applied when chosen.
    #[serde(default)]
    pub received: String,
    #[serde(default)]
    pub applied_before: String,
}

/// What `elect` is asked.
pub struct Election<'a> {
    pub cluster_id: &'a str,
    pub shard: i64,
    pub old: &'a str,
    /// The old primary's GTID state as last seen (for errant checks).
    pub old_state: &'a str,
    /// The node to promote when the caller names one.
    pub assign: Option<&'a str>,
    /// The old primary is gone: replicas stop receiving from it first.
    pub stop_io: bool,
}

/// Chooses the candidate among the shard's replicas (reachable, running,
/// not busy with another job, no errant transactions; the most received
/// GTID in the shard's domain, then the most applied), has it apply its
/// whole relay log (bounded by `relay_wait_s`, else the next is tried),
/// and brings it level with any other replica that received more.
pub async fn elect(ctx: &StepCtx<'_>, e: &Election<'_>) -> Result<Value, StepError> {
    let env = ctx.env;
    let (user, pw) = nodes::password(env, e.cluster_id).await?;
    let rows: Vec<InstanceRow> = rows(env, e.cluster_id, e.shard)
        .await?
        .into_iter()
        .filter(|i| format!("{}:{}", i.hostaddr, i.port) != e.old)
        .collect();
    let mut all = read_shard(&rows, &user, &pw, Duration::from_secs(5)).await;
    if e.stop_io {
        // Nothing more from the old primary. The SQL thread runs first: a
        // replica with both threads stopped reports (and on its next
        // start refetches) only what it applied, not what it received.
        for n in all.iter().filter(|n| n.reachable) {
            if let Ok(mut c) = nodes::connect(&n.hostaddr, n.port, &user, &pw).await {
                let _ = c.query_drop("START SLAVE SQL_THREAD").await;
                let _ = c.query_drop("STOP SLAVE IO_THREAD").await;
                let _ = c.disconnect().await;
            }
        }
        let before = std::mem::replace(
            &mut all,
            read_shard(&rows, &user, &pw, Duration::from_secs(5)).await,
        );
        for n in &mut all {
            if let Some(b) = before.iter().find(|b| b.name() == n.name()) {
                if seq(&b.received, n.domain) > seq(&n.received, n.domain) {
                    n.received = b.received.clone();
                }
            }
        }
    }
    let busy = replicas::busy(env, ctx.job_id)
        .await
        .map_err(|r| StepError::transient(r.info))?;
    let domain = all
        .iter()
        .find(|n| n.reachable)
        .map(|n| n.domain)
        .ok_or_else(|| {
            StepError::transient(format!(
                "no replica of shard {} can be reached: {}",
                e.shard,
                all.iter()
                    .map(|n| format!("{} ({})", n.name(), n.problem))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    // A node's own transactions that no other reachable member, nor the
    // old primary as last seen, holds.
    let errant_of = |n: &Node| {
        let others: Vec<&str> = all
            .iter()
            .filter(|o| o.reachable && o.name() != n.name())
            .map(|o| o.binlog_state.as_str())
            .chain(std::iter::once(e.old_state))
            .collect();
        own_errant(n, &others)
    };
    let mut skipped = Vec::new();
    let mut eligible: Vec<&Node> = Vec::new();
    for n in &all {
        let errant = errant_of(n);
        let why = if !n.reachable {
            Some(n.problem.clone())
        } else if n.state != "running" {
            Some(format!("its state is {}", n.state))
        } else if busy.contains(&(n.hostaddr.clone(), n.port)) {
            Some("busy with another job (a rebuild or a backup)".into())
        } else if !errant.is_empty() {
            Some(format!(
                "holds errant transactions no other member has: {}",
                errant.join(", ")
            ))
        } else if e.assign.is_some_and(|a| a != n.name()) {
            Some("not the node assign_hostaddr names".into())
        } else {
            None
        };
        match why {
            Some(w) => skipped.push(format!("{} ({w})", n.name())),
            None => eligible.push(n),
        }
    }
    eligible.sort_by_key(|n| std::cmp::Reverse((n.received_seq(domain), n.applied_seq(domain))));
    let relay_wait = env.settings.relay_wait;
    let mut chosen = None;
    for n in eligible {
        let mut conn = nodes::connect(&n.hostaddr, n.port, &user, &pw).await?;
        let target = if n.received.is_empty() {
            n.current.clone()
        } else {
            n.received.clone()
        };
        let applied = apply_relay(&mut conn, &target, relay_wait, e.stop_io).await;
        let _ = conn.disconnect().await;
        ctx.progress.touch();
        match applied {
            Ok(()) => {
                chosen = Some(n.clone());
                break;
            }
            Err(why) => skipped.push(format!("{} ({why})", n.name())),
        }
    }
    let Some(chosen) = chosen else {
        return Err(StepError::definite(format!(
            "no replica of shard {} can be promoted: {}",
            e.shard,
            skipped.join("; ")
        )));
    };
    // Another replica received more (it was passed over: lagging its
    // relay log, or holding errant transactions): the candidate first
    // takes what it lacks from it. A semi-synchronous commit may have been
    // acknowledged by that replica alone. Its own errant transactions are
    // neither counted, taken (its server id ignored) nor waited for.
    let reach = |o: &Node| {
        if errant_of(o).is_empty() {
            o.received_seq(domain)
        } else {
            let others = highest_of_others(&o.binlog_state, Some(o.server_id));
            seq(&o.received, domain).max(seq(&others, domain))
        }
    };
    let mut caught_up_from = None;
    let ahead = all
        .iter()
        .filter(|o| o.reachable && o.name() != chosen.name() && o.state == "running")
        .filter(|o| !busy.contains(&(o.hostaddr.clone(), o.port)))
        .max_by_key(|o| reach(o))
        .filter(|o| reach(o) > chosen.received_seq(domain))
        .cloned();
    if let Some(src) = ahead {
        let errant = !errant_of(&src).is_empty();
        let how = CatchUp {
            chosen: &chosen,
            src: &src,
            ignore_own: errant,
            user: &user,
            pw: &pw,
            limit: relay_wait,
            io_stopped: e.stop_io,
        };
        caught_up_from = match catch_up(&how).await {
            Ok(()) if errant => Some(format!(
                "{} (its own errant transactions left out)",
                src.name()
            )),
            Ok(()) => Some(src.name()),
            // What an errant replica alone received is not worth failing
            // the failover for: said, and the candidate goes on.
            Err(why) if errant => Some(format!(
                "none: {} received more but could not be caught up from ({why})",
                src.name()
            )),
            Err(why) => return Err(why),
        };
        ctx.progress.touch();
    }
    let mut conn = nodes::connect(&chosen.hostaddr, chosen.port, &user, &pw).await?;
    let pos: Option<String> = conn
        .query_first("SELECT @@gtid_current_pos")
        .await
        .map_err(|x| sql_error(&chosen.name(), &x))?;
    let _ = conn.disconnect().await;
    let position = pos.unwrap_or_default();
    let mut v = serde_json::to_value(Elected {
        candidate: chosen.name(),
        hostaddr: chosen.hostaddr.clone(),
        port: chosen.port,
        applied_before: chosen.current.clone(),
        received: chosen.received.clone(),
        position: String::new(),
        skipped,
        caught_up_from,
    })
    .expect("serializes");
    v["position"] = json!(position);
    Ok(v)
}

/// A candidate brought level with a replica that received more.
struct CatchUp<'a> {
    chosen: &'a Node,
    src: &'a Node,
    /// Leave out `src`'s own transactions (it holds errant ones).
    ignore_own: bool,
    user: &'a str,
    pw: &'a Secret,
    limit: Duration,
    io_stopped: bool,
}

/// Has `src` apply its relay log, then the candidate replicate from it
/// until the candidate's binlog holds, per domain, the highest GTID of
/// `src`'s (of another server than `src` when its own are left out): a
/// position compared by server id and sequence number, not by
/// `MASTER_GTID_WAIT`'s sequence number alone, which GTIDs skipped for
/// `IGNORE_SERVER_IDS` could satisfy early.
async fn catch_up(c: &CatchUp<'_>) -> Result<(), StepError> {
    let (src, chosen) = (c.src, c.chosen);
    let ignore: Vec<u64> = if c.ignore_own {
        vec![src.server_id]
    } else {
        Vec::new()
    };
    let mut sc = nodes::connect(&src.hostaddr, src.port, c.user, c.pw).await?;
    apply_relay(&mut sc, &src.received, c.limit, c.io_stopped)
        .await
        .map_err(|w| StepError::definite(format!("{}: {w}", src.name())))?;
    let state: Option<String> = sc
        .query_first("SELECT @@gtid_binlog_state")
        .await
        .map_err(|x| sql_error(&src.name(), &x))?;
    let _ = sc.disconnect().await;
    let level = highest_of_others(&state.unwrap_or_default(), ignore.first().copied());
    let mut conn = nodes::connect(&chosen.hostaddr, chosen.port, c.user, c.pw).await?;
    let change = db::change_master_ignoring(&src.hostaddr, src.port, c.user, c.pw, &ignore);
    for sql in ["STOP SLAVE", change.as_str(), "START SLAVE"] {
        conn.query_drop(sql)
            .await
            .map_err(|x| sql_error(&chosen.name(), &x))?;
    }
    let deadline = std::time::Instant::now() + c.limit;
    loop {
        let have: Option<String> = conn
            .query_first("SELECT @@gtid_binlog_state")
            .await
            .map_err(|x| sql_error(&chosen.name(), &x))?;
        if replicas::errant(&level, &have.unwrap_or_default()).is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(StepError::definite(format!(
                "catching up from {}: did not reach {level} within relay_wait_s ({} s)",
                src.name(),
                c.limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    conn.query_drop("STOP SLAVE")
        .await
        .map_err(|x| sql_error(&chosen.name(), &x))?;
    if c.ignore_own {
        // The GTIDs skipped are not its position: its binlog is.
        conn.query_drop("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
            .await
            .map_err(|x| sql_error(&chosen.name(), &x))?;
    }
    let _ = conn.disconnect().await;
    Ok(())
}

/// Has the replica apply what it received, up to `pos`, within `limit`
/// (its SQL thread started if it was stopped).
async fn apply_relay(
    conn: &mut mysql_async::Conn,
    pos: &str,
    limit: Duration,
    io_stopped: bool,
) -> Result<(), String> {
    let start = if io_stopped {
        "START SLAVE SQL_THREAD"
    } else {
        "START SLAVE"
    };
    conn.query_drop(start).await.map_err(|e| e.to_string())?;
    wait_gtid(conn, pos, limit).await
}

/// `MASTER_GTID_WAIT(pos)` within `limit`.
pub async fn wait_gtid(
    conn: &mut mysql_async::Conn,
    pos: &str,
    limit: Duration,
) -> Result<(), String> {
    if pos.is_empty() {
        return Ok(());
    }
    let r: Option<i64> = conn
        .exec_first("SELECT MASTER_GTID_WAIT(?, ?)", (pos, limit.as_secs_f64()))
        .await
        .map_err(|e| e.to_string())?;
    match r {
        Some(0) => Ok(()),
        _ => Err(format!(
            "did not apply its relay log up to {pos} within relay_wait_s ({} s)",
            limit.as_secs()
        )),
    }
}
