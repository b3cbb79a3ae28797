//! The cluster manager's synchronous views of its clusters:
//! `get_cluster_summary`, `get_cluster_detail` (each node's status read
//! from the instance itself) and `get_variable`.

use super::emit::{codes, Envelope, Refused};
use super::nodes::{connect, password, store_err};
use super::Env;
use crate::store::StoreError;
use mysql_async::prelude::*;
use serde_json::{json, Value};
use std::time::Duration;

/// `get_cluster_summary`.
pub async fn summary(env: &Env) -> Result<Value, StoreError> {
    let comps = env.store.comps().await?;
    let list: Vec<Value> = env
        .store
        .clusters()
        .await?
        .iter()
        .map(|c| {
            json!({"cluster_id": c.cluster_id,
        "name": c.name, "nick_name": c.nick_name, "shards": c.shards.to_string(),
        "comps": comps.iter().filter(|x| x.cluster_id == c.cluster_id).count().to_string(),
        "nodes": c.nodes.to_string(),
        "ha_mode": c.ha_mode, "status": c.status})
        })
        .collect();
    Ok(json!({"list_cluster": list}))
}

/// `get_cluster_detail`: each node's address, port, role and status, read
/// from the instance itself (all at once), and each shard's state as the
/// watcher last saw it with its last promotion.
pub async fn detail(env: &Env, watch: &super::watch::Watch, name: &str) -> Result<Value, Refused> {
    let c = env
        .store
        .clusters()
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|c| c.name == name || c.cluster_id == name)
        .ok_or_else(|| Refused {
            code: codes::NOT_FOUND,
            info: format!("no cluster {name:?} (get_cluster_summary lists them)"),
        })?;
    let (user, pw) = password(env, &c.cluster_id).await.map_err(|e| Refused {
        code: codes::STEP_FAILED,
        info: e.to_string(),
    })?;
    let all = env.store.instances().await.map_err(store_err)?;
    let journal = env.store.failovers().await.map_err(store_err)?;
    let mut shards = Vec::new();
    let ids: std::collections::BTreeSet<i64> = all
        .iter()
        .filter(|i| i.cluster_id == c.cluster_id)
        .map(|i| i.shard)
        .collect();
    for s in ids {
        let rows: Vec<_> = all
            .iter()
            .filter(|i| i.cluster_id == c.cluster_id && i.shard == s)
            .cloned()
            .collect();
        let live = super::shard::read_shard(&rows, &user, &pw, Duration::from_secs(3)).await;
        let nodes: Vec<Value> = rows
            .iter()
            .zip(&live)
            .map(|(i, n)| {
                let status = if n.reachable { "online" } else { "offline" };
                let ro = if n.reachable {
                    json!(n.read_only)
                } else {
                    Value::Null
                };
                json!({"hostaddr": i.hostaddr, "port": i.port.to_string(),
                    "node": i.node.to_string(), "state": i.state, "note": i.note,
                    "role": i.role,
                    "master": (i.role == "primary").to_string(), "status": status, "read_only": ro,
                    "replication": if i.role == "primary" || !n.reachable { Value::Null } else {
                        json!({"source": n.master, "io": n.io, "sql": n.sql,
                               "lag_s": n.delay, "received": n.received, "applied": n.current})
                    },
                    "semi_sync_master": n.reachable.then_some(n.semi_sync_master)})
            })
            .collect();
        let last = journal
            .iter()
            .find(|f| f.cluster_id == c.cluster_id && f.shard == s)
            .map(journal_json);
        let state = watch
            .shard(&c.cluster_id, s)
            .map(|w| w.state)
            .unwrap_or_else(|| "not watched yet (the leader probes every probe_ms)".into());
        shards.push(
            json!({"shard_id": s.to_string(), "shard_name": format!("shard_{s}"),
            "nodes": nodes.len().to_string(), "state": state, "last_failover": last,
            "list_node": nodes}),
        );
    }
    let mut comps = Vec::new();
    for x in env.store.comps().await.map_err(store_err)? {
        if x.cluster_id != c.cluster_id {
            continue;
        }
        let mut v = super::comps::comp_json(&x);
        let up = super::nodes::connect(&x.hostaddr, x.port, &user, &pw);
        v["status"] = json!(
            match tokio::time::timeout(Duration::from_secs(3), up).await {
                Ok(Ok(conn)) => {
                    let _ = conn.disconnect().await;
                    "online"
                }
                _ => "offline",
            }
        );
        comps.push(v);
    }
    let tables: Vec<Value> = super::comps::catalog(env, &c.cluster_id)
        .await
        .map_err(|e| Refused {
            code: codes::STEP_FAILED,
            info: e.to_string(),
        })?
        .iter()
        .map(|((db, t), p)| {
            json!({"table": format!("{db}.{t}"), "state": p.state,
                   "shards": p.shards().iter().map(|s| s.to_string()).collect::<Vec<_>>()})
        })
        .collect();
    Ok(
        json!({"cluster_name": c.name, "nick_name": c.nick_name, "shards": c.shards.to_string(),
              "comps": comps.len().to_string(), "list_comp": comps, "list_shard": shards,
              "list_table": tables}),
    )
}

/// One promotion as answers show it.
pub fn journal_json(f: &crate::store::cluster::FailoverRow) -> Value {
    let t = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms).map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        })
    };
    json!({"job_id": f.job_id, "cluster_id": f.cluster_id, "shard_id": f.shard.to_string(),
           "kind": f.kind, "reason": f.reason, "old_primary": f.old_primary,
           "new_primary": f.new_primary, "gtid_position": f.gtid_position,
           "failed_at": t(f.failed_at), "detected_at": t(f.detected_at),
           "promoted_at": t(f.promoted_at),
           "detection_ms": f.detected_at - f.failed_at,
           "promotion_ms": f.promoted_at - f.detected_at,
           "acked_at": if f.acked_at == 0 { None } else { t(f.acked_at) }})
}

/// `get_failover_journal` (`cluster_id`, `shard_id` optional): every
/// promotion, newest first.
pub async fn failover_journal(env: &Env, e: &Envelope) -> Result<Value, Refused> {
    let p = e.paras();
    let id = p.need("cluster_id")?;
    super::nodes::cluster(env, &id).await?;
    let shard = p.int("shard_id", 1, i64::MAX)?;
    let list: Vec<Value> = env
        .store
        .failovers()
        .await
        .map_err(store_err)?
        .iter()
        .filter(|f| f.cluster_id == id && shard.is_none_or(|s| s == f.shard))
        .map(journal_json)
        .collect();
    Ok(json!({"cluster_id": id, "list_failover": list}))
}

/// The cluster and shard a request names, checked.
async fn named_shard(env: &Env, e: &Envelope) -> Result<(String, i64), Refused> {
    let p = e.paras();
    let id = p.need("cluster_id")?;
    super::nodes::cluster(env, &id).await?;
    let shard = p.need_int("shard_id", 1, i64::MAX)?;
    let exists = env
        .store
        .instances()
        .await
        .map_err(store_err)?
        .iter()
        .any(|i| i.cluster_id == id && i.shard == shard);
    if !exists {
        return Err(Refused {
            code: codes::NOT_FOUND,
            info: format!("cluster {id} has no shard {shard}"),
        });
    }
    Ok((id, shard))
}

/// `ack_failover` (`cluster_id`, `shard_id`): the shard's automatic
/// failovers acknowledged, so that the block period no longer holds a
/// next one.
pub async fn ack_failover(env: &Env, e: &Envelope) -> Result<Value, Refused> {
    let (id, shard) = named_shard(env, e).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let n = env
        .store
        .ack_failovers(&id, shard, now)
        .await
        .map_err(store_err)?;
    Ok(json!({"cluster_id": id, "shard_id": shard.to_string(), "acknowledged": n}))
}

/// `set_noswitch` (`cluster_id`, `shard_id`, `type` "1" holds automatic
/// switchover for `timeout` seconds, "0" releases it).
pub async fn set_noswitch(env: &Env, e: &Envelope) -> Result<Value, Refused> {
    let (id, shard) = named_shard(env, e).await?;
    let p = e.paras();
    let hold = p.choice("type", &["0", "1"])? == "1";
    let until = if hold {
        let secs = p.need_int("timeout", 1, 30 * 86_400)?;
        chrono::Utc::now().timestamp_millis() + secs * 1000
    } else {
        0
    };
    env.store
        .set_hold(&id, shard, until)
        .await
        .map_err(store_err)?;
    Ok(
        json!({"cluster_id": id, "shard_id": shard.to_string(), "noswitch": hold,
              "until": if hold { json!(until) } else { Value::Null }}),
    )
}

/// `get_variable`: one global variable of a cluster's instance.
pub async fn variable(env: &Env, e: &Envelope) -> Result<Value, Refused> {
    let p = e.paras();
    let host = p.need("hostaddr")?;
    let port = p.need_int("port", 1, 65535)?;
    let var = p.need("variable")?;
    if var.len() > 64 || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Refused::bad(format!(
            "paras.variable: {var:?} is not a variable name"
        )));
    }
    let i = env
        .store
        .instances()
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|i| i.hostaddr == host && i.port == port)
        .ok_or_else(|| Refused {
            code: codes::NOT_FOUND,
            info: format!("no instance {host}:{port} in a cluster this manager runs"),
        })?;
    let (user, pw) = password(env, &i.cluster_id).await.map_err(|e| Refused {
        code: codes::STEP_FAILED,
        info: e.to_string(),
    })?;
    let unreachable = |e: String| Refused {
        code: codes::UNREACHABLE,
        info: e,
    };
    let mut conn = connect(&host, port, &user, &pw)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let value: Result<Option<String>, _> = conn
        .query_first(format!("SELECT CAST(@@GLOBAL.{var} AS CHAR)"))
        .await;
    let _ = conn.disconnect().await;
    match value {
        Ok(v) => Ok(json!({"result": "true", "value": v.unwrap_or_default()})),
        Err(e) => Err(Refused::bad(format!("paras.variable {var}: {e}"))),
    }
}

/// `get_machine_summary`: every machine, online when its agent answered a
/// heartbeat within [`super::agents::ONLINE_MS`].
pub async fn machine_summary(env: &Env) -> Result<Value, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    let list: Vec<Value> = env
        .store
        .machines()
        .await?
        .iter()
        .map(|m| {
            let online = now - m.last_seen_at <= super::agents::ONLINE_MS;
            json!({"hostaddr": m.hostaddr,
                   "status": if online { "online" } else { "offline" },
                   "node_stats": m.node_stats,
                   "machine_type": m.machine_type,
                   "port_range": m.port_range,
                   "rack_id": m.rack_id,
                   "datadir": m.datadir,
                   "logdir": m.logdir,
                   "wal_log_dir": m.wal_log_dir,
                   "comp_datadir": m.comp_datadir,
                   "total_mem": m.total_mem.to_string(),
                   "total_cpu_cores": m.total_cpu_cores.to_string(),
                   "agent_port": m.agent_port.to_string(),
                   "last_seen_ms_ago": if m.last_seen_at == 0 { Value::Null } else { json!(now - m.last_seen_at) }})
        })
        .collect();
    Ok(json!({ "list_machine": list }))
}
