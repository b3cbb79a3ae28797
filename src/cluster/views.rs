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
    let list: Vec<Value> = env
        .store
        .clusters()
        .await?
        .iter()
        .map(|c| {
            json!({"cluster_id": c.cluster_id,
        "name": c.name, "nick_name": c.nick_name, "shards": c.shards.to_string(), "comps": "0",
        "nodes": c.nodes.to_string(),
        "ha_mode": c.ha_mode, "status": c.status})
        })
        .collect();
    Ok(json!({"list_cluster": list}))
}

/// `get_cluster_detail`: each node's address, port, role and status, read
/// from the instance itself.
pub async fn detail(env: &Env, name: &str) -> Result<Value, Refused> {
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
    let mut shards = Vec::new();
    let ids: std::collections::BTreeSet<i64> = all
        .iter()
        .filter(|i| i.cluster_id == c.cluster_id)
        .map(|i| i.shard)
        .collect();
    for s in ids {
        let mut nodes = Vec::new();
        for i in all
            .iter()
            .filter(|i| i.cluster_id == c.cluster_id && i.shard == s)
        {
            let live = tokio::time::timeout(Duration::from_secs(5), async {
                let mut conn = connect(&i.hostaddr, i.port, &user, &pw)
                    .await
                    .map_err(|e| e.to_string())?;
                let ro: Option<i64> = conn
                    .query_first("SELECT @@read_only")
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.disconnect().await;
                Ok::<_, String>(ro.unwrap_or(0))
            })
            .await;
            let (status, ro) = match live {
                Ok(Ok(ro)) => ("online", json!(ro == 1)),
                _ => ("offline", Value::Null),
            };
            nodes.push(json!({"hostaddr": i.hostaddr, "port": i.port.to_string(),
                "node": i.node.to_string(), "state": i.state,
                "master": (i.role == "primary").to_string(), "status": status, "read_only": ro}));
        }
        shards.push(json!({"shard_id": s.to_string(), "shard_name": format!("shard_{s}"), "nodes": nodes.len().to_string(), "list_node": nodes}));
    }
    Ok(
        json!({"cluster_name": c.name, "nick_name": c.nick_name, "shards": c.shards.to_string(),
              "comps": "0", "list_comp": [], "list_shard": shards}),
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
