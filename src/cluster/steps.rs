//! The steps of the cluster jobs (`create_cluster`, `add_shards`,
//! `delete_shard`, `delete_cluster`), their undo and their attachments:
//! each "make sure X holds", so that running one again after a crash of the
//! manager is safe. Instances are installed and removed through the
//! machines' agents with operations keyed by the job, the step and its
//! attempt; replication is set on the instances themselves with the
//! cluster's administrative account.

use super::clusters::*;
use super::emit::{codes, Refused};
use super::jobs::Job;
use super::machines::Machines;
use crate::db::{self, ServerAddr};
use crate::secret::Secret;
use crate::store::{SqlValue, StoreError};
use crate::tls::TlsOptions;
use mysql_async::prelude::*;
use serde_json::{json, Value};
use std::time::Duration;

fn placement<'a>(job: &'a Job, step: &str) -> Option<&'a Value> {
    let mut parts = step.split(':').skip(1);
    let (a, b) = (parts.next()?, parts.next()?);
    job.plan.details["placements"].as_array()?.iter().find(|p| {
        if step.starts_with("install:") {
            p["shard"].as_i64() == a.parse().ok() && p["node"].as_i64() == b.parse().ok()
        } else {
            p["hostaddr"].as_str() == Some(a) && p["port"].as_i64() == b.parse().ok()
        }
    })
}

/// The cluster's administrative password, opened from the store.
pub(super) async fn password(m: &Machines, id: &str) -> Result<(String, Secret), String> {
    let c = clusters(m)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|c| c.cluster_id == id)
        .ok_or_else(|| format!("cluster {id} has no row"))?;
    let pw = m
        .store
        .open_secret(&format!("cm_clusters/{id}"), "admin", &c.admin_password)
        .map_err(|e| e.to_string())?;
    Ok((c.admin_user, pw))
}

pub(super) async fn connect(
    host: &str,
    port: i64,
    user: &str,
    pw: &Secret,
) -> Result<mysql_async::Conn, String> {
    let tls = TlsOptions::default();
    let addr = ServerAddr {
        host,
        port: port as u16,
        user,
        password: pw,
        tls: &tls,
    };
    db::connect(&addr, None, Duration::from_secs(10))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))
}

/// Runs a cluster job's step (`attempt`: how many times it was started).
pub async fn run_step(m: &Machines, job: &Job, step: &str, attempt: u64) -> Result<Value, String> {
    let d = &job.plan.details;
    let id = d["cluster_id"].as_str().unwrap_or_default().to_string();
    if step == "reserve" {
        return reserve(m, job, &id).await;
    }
    if let Some(rest) = step.strip_prefix("install:") {
        let p = placement(job, step).ok_or_else(|| format!("no placement for {rest}"))?;
        return install(m, job, step, attempt, &id, p).await;
    }
    if let Some(shard) = step.strip_prefix("replicate:") {
        return replicate(m, d, &id, shard).await;
    }
    let store = |sql: &'static str, row: Vec<SqlValue>| async move {
        m.store.execute(sql, row).await.map_err(|e| e.to_string())
    };
    match step {
        "register" => {
            let count = d["shards_after"].as_i64().unwrap_or(0);
            store(SET_SHARDS, vec![count.into(), id.as_str().into()]).await?;
            store(SET_CLUSTER, vec!["running".into(), id.as_str().into()]).await?;
            store(SET_INSTANCES, vec!["running".into(), id.as_str().into()]).await?;
            Ok(Value::Null)
        }
        "unregister" if job.job_type == "delete_cluster" => {
            store(DELETE_INSTANCES, vec![id.as_str().into()]).await?;
            store(DELETE_CLUSTER, vec![id.as_str().into()]).await?;
            Ok(Value::Null)
        }
        // delete_shard: the shard's rows went with its instances.
        "unregister" => {
            let count = d["shards_after"].as_i64().unwrap_or(0);
            store(SET_SHARDS, vec![count.into(), id.as_str().into()]).await?;
            Ok(Value::Null)
        }
        s if s.starts_with("uninstall:") => {
            let p = placement(job, s).ok_or_else(|| format!("no placement for {s}"))?;
            let host = p["hostaddr"].as_str().unwrap_or_default();
            let port = p["port"].as_i64().unwrap_or(0);
            uninstall(
                m,
                job,
                s,
                attempt,
                host,
                p["agent_port"].as_i64().unwrap_or(m.agent_port as i64),
                port,
            )
            .await?;
            store(DELETE_INSTANCE, vec![host.into(), port.into()]).await?;
            Ok(json!({"storage_hosts": format!("{host}_{port}"), "storage_state": "done"}))
        }
        other => Err(format!("{} has no step {other}", job.job_type)),
    }
}

/// `reserve`: the cluster's row (for `create_cluster`) and one row per
/// placement, each written once however often the step runs.
async fn reserve(m: &Machines, job: &Job, id: &str) -> Result<Value, String> {
    let d = &job.plan.details;
    if job.job_type == "create_cluster" {
        let sealed = d["admin_password_sealed"].as_str().unwrap_or_default();
        let settings = json!({"fullsync_level": d["fullsync_level"], "innodb_size": d["innodb_size"],
                              "max_connections": d["max_connections"]});
        let row = vec![
            SqlValue::from(id),
            d["cluster_name"].as_str().unwrap_or_default().into(),
            d["nick_name"].as_str().unwrap_or_default().into(),
            d["ha_mode"].as_str().unwrap_or_default().into(),
            d["shards"].as_i64().unwrap_or(0).into(),
            d["nodes"].as_i64().unwrap_or(0).into(),
            d["admin_user"].as_str().unwrap_or_default().into(),
            sealed.into(),
            "creating".into(),
            settings.to_string().as_str().into(),
            chrono::Utc::now().timestamp_millis().into(),
        ];
        match m.store.execute(INSERT_CLUSTER, row).await {
            Ok(_) | Err(StoreError::Duplicate(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    for p in d["placements"].as_array().into_iter().flatten() {
        let row = vec![
            SqlValue::from(p["hostaddr"].as_str().unwrap_or_default()),
            p["port"].as_i64().unwrap_or(0).into(),
            id.into(),
            p["shard"].as_i64().unwrap_or(0).to_string().as_str().into(),
            p["node"].as_i64().unwrap_or(0).into(),
            p["role"].as_str().unwrap_or_default().into(),
            "reserved".into(),
        ];
        match m.store.execute(INSERT_INSTANCE, row).await {
            Ok(_) | Err(StoreError::Duplicate(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(Value::Null)
}

/// `install:HOST_PORT`: the placement's instance, by its machine's agent.
async fn install(
    m: &Machines,
    job: &Job,
    step: &str,
    attempt: u64,
    id: &str,
    p: &Value,
) -> Result<Value, String> {
    let d = &job.plan.details;
    let (user, pw) = password(m, id).await?;
    let replica = p["role"] == "replica";
    let semi = match (d["fullsync_level"].as_i64().unwrap_or(0) > 0, replica) {
        (false, _) => "",
        (true, false) => "master",
        (true, true) => "slave",
    };
    let cluster: i64 = id.parse().unwrap_or(0);
    let server_id = (cluster % 100_000) * 1000
        + p["shard"].as_i64().unwrap_or(0) * 10
        + p["node"].as_i64().unwrap_or(0);
    let body = json!({"ver": "0.1", "job_type": "install_mysql", "job_id": job.job_id, "step": step,
        "attempt": attempt, "port": p["port"], "datadir": p["datadir"], "server_id": server_id,
        "innodb_size": d["innodb_size"], "max_connections": d["max_connections"],
        "read_only": if replica { "1" } else { "0" }, "semi_sync": semi,
        "admin_user": user, "admin_password": pw.expose()});
    let host = p["hostaddr"].as_str().unwrap_or_default();
    let agent_port = p["agent_port"].as_i64().unwrap_or(m.agent_port as i64);
    agent_op(m, host, agent_port, body).await
}

/// `replicate:SHARD`: the shard's replicas follow its primary by GTID.
async fn replicate(m: &Machines, d: &Value, id: &str, shard: &str) -> Result<Value, String> {
    let (user, pw) = password(m, id).await?;
    let in_shard: Vec<&Value> = d["placements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["shard"].as_i64() == shard.parse().ok())
        .collect();
    let primary = in_shard
        .iter()
        .find(|p| p["role"] == "primary")
        .ok_or("the shard has no primary")?;
    let (ph, pp) = (
        primary["hostaddr"].as_str().unwrap_or_default(),
        primary["port"].as_i64().unwrap_or(0),
    );
    for r in in_shard.iter().filter(|p| p["role"] == "replica") {
        let (rh, rp) = (
            r["hostaddr"].as_str().unwrap_or_default(),
            r["port"].as_i64().unwrap_or(0),
        );
        let mut conn = connect(rh, rp, &user, &pw).await?;
        let change = format!(
            "CHANGE MASTER TO MASTER_HOST = '{ph}', MASTER_PORT = {pp}, MASTER_USER = '{user}', \
             MASTER_PASSWORD = '{}', MASTER_USE_GTID = slave_pos",
            pw.expose().replace('\\', "\\\\").replace('\'', "\\'")
        );
        for sql in ["STOP SLAVE", change.as_str(), "START SLAVE"] {
            conn.query_drop(sql)
                .await
                .map_err(|e| format!("{rh}:{rp}: {}", crate::redact::text(&e.to_string())))?;
        }
        wait_replicating(&mut conn, rh, rp).await?;
        let _ = conn.disconnect().await;
    }
    Ok(json!({"primary": format!("{ph}:{pp}")}))
}

async fn uninstall(
    m: &Machines,
    job: &Job,
    step: &str,
    attempt: u64,
    host: &str,
    agent_port: i64,
    port: i64,
) -> Result<Value, String> {
    let body = json!({"ver": "0.1", "job_type": "uninstall_mysql", "job_id": job.job_id,
        "step": format!("undo-{step}"), "attempt": attempt, "port": port});
    agent_op(m, host, agent_port, body).await
}

/// Sends a keyed operation to an agent and follows it (the same request
/// again answers its state) until it ends.
async fn agent_op(m: &Machines, host: &str, agent_port: i64, body: Value) -> Result<Value, String> {
    for _ in 0..40 {
        let v = m.ask_agent(host, agent_port, body.clone()).await?;
        match v["status"].as_str() {
            Some("done") => return Ok(v["result"].clone()),
            Some("ongoing") => continue,
            _ => {
                return Err(format!(
                    "the agent at {host}:{agent_port}: {} {}",
                    v["status"], v["error_info"]
                ))
            }
        }
    }
    Err(format!(
        "the agent at {host}:{agent_port} did not finish within 20 minutes"
    ))
}

async fn wait_replicating(
    conn: &mut mysql_async::Conn,
    host: &str,
    port: i64,
) -> Result<(), String> {
    for _ in 0..60 {
        let row: Option<mysql_async::Row> = conn
            .query_first("SHOW SLAVE STATUS")
            .await
            .map_err(|e| e.to_string())?;
        if let Some(row) = row {
            let get = |k: &str| {
                row.get_opt::<String, _>(k)
                    .and_then(|r| r.ok())
                    .unwrap_or_default()
            };
            if get("Slave_IO_Running") == "Yes" && get("Slave_SQL_Running") == "Yes" {
                return Ok(());
            }
            let err = get("Last_IO_Error") + &get("Last_SQL_Error");
            if !err.is_empty() && get("Slave_SQL_Running") == "No" {
                return Err(format!("{host}:{port} does not replicate: {err}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!(
        "{host}:{port} did not start replicating within 30 s"
    ))
}

/// Undoes a cluster job's step.
pub async fn undo_step(m: &Machines, job: &Job, step: &str) -> Result<(), String> {
    let id = job.plan.details["cluster_id"].as_str().unwrap_or_default();
    if step == "reserve" && job.job_type == "create_cluster" {
        m.store
            .execute(DELETE_INSTANCES, vec![id.into()])
            .await
            .map_err(|e| e.to_string())?;
        m.store
            .execute(DELETE_CLUSTER, vec![id.into()])
            .await
            .map_err(|e| e.to_string())?;
    } else if step == "reserve" {
        for p in job.plan.details["placements"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let key = vec![
                SqlValue::from(p["hostaddr"].as_str().unwrap_or_default()),
                p["port"].as_i64().unwrap_or(0).into(),
            ];
            m.store
                .execute(DELETE_INSTANCE, key)
                .await
                .map_err(|e| e.to_string())?;
        }
    } else if step.starts_with("install:") {
        let p = placement(job, step).ok_or_else(|| format!("no placement for {step}"))?;
        let host = p["hostaddr"].as_str().unwrap_or_default();
        let agent_port = p["agent_port"].as_i64().unwrap_or(m.agent_port as i64);
        uninstall(
            m,
            job,
            step,
            0,
            host,
            agent_port,
            p["port"].as_i64().unwrap_or(0),
        )
        .await?;
    }
    Ok(())
}

pub fn attachment(job: &Job) -> Value {
    let d = &job.plan.details;
    match job.job_type.as_str() {
        "create_cluster" => {
            json!({"cluster_id": d["cluster_id"], "cluster_name": d["cluster_name"],
                                   "shards": d["shards"].to_string(), "comps": "0"})
        }
        "add_shards" => {
            let list: Vec<Value> = d["new_shards"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| json!({"shard_id": s.to_string(), "shard_name": format!("shard_{s}")}))
                .collect();
            json!({"cluster_id": d["cluster_id"], "cluster_name": d["cluster_name"],
                   "shards": d["shards_after"].to_string(), "comps": "0", "list_shard": list})
        }
        "delete_shard" | "delete_shards" => json!({}),
        _ => {
            let hosts: String = job
                .plan
                .steps
                .iter()
                .filter(|s| s.name.starts_with("uninstall:"))
                .map(|s| {
                    s.result["storage_hosts"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                        + ";"
                })
                .collect();
            json!({"cluster_id": d["cluster_id"], "cluster_name": d["cluster_name"],
                   "job_steps": "shard", "storage_state": "done",
                   "shard_step": [{"cluster_id": d["cluster_id"], "error_code": 0, "error_info": "OK",
                                   "rollback_flag": "1", "storage_hosts": hosts, "storage_state": "done"}],
                   "computer_state": "done", "computer_step": []})
        }
    }
}

/// Refuses to delete a shard whose primary holds user tables, naming them.
pub(super) async fn refuse_user_tables(
    m: &Machines,
    id: &str,
    shard: &[&Instance],
) -> Result<(), Refused> {
    let primary = shard
        .iter()
        .find(|i| i.role == "primary")
        .or(shard.first())
        .ok_or_else(|| Refused::bad("the shard has no instance"))?;
    let (user, pw) = password(m, id).await.map_err(|e| Refused {
        code: codes::STEP_FAILED,
        info: e,
    })?;
    let unreachable = |e: String| Refused {
        code: codes::UNREACHABLE,
        info: format!(
            "cannot check the shard for user tables: {e} (force: \"1\" deletes it unchecked)"
        ),
    };
    let mut conn = connect(&primary.hostaddr, primary.port, &user, &pw)
        .await
        .map_err(unreachable)?;
    let tables: Vec<String> = conn
        .query(
            "SELECT CONCAT(table_schema, '.', table_name) FROM information_schema.tables \
             WHERE table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY 1 LIMIT 20",
        )
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = conn.disconnect().await;
    if tables.is_empty() {
        return Ok(());
    }
    Err(Refused {
        code: codes::CONFLICT,
        info: format!(
            "shard {} holds user tables ({}): move them first, or send force: \"1\" to delete them with it",
            primary.shard,
            tables.join(", ")
        ),
    })
}
