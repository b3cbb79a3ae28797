//! Clusters of real MariaDB instances (`cm_clusters`, `cm_instances`):
//! `create_cluster`, `delete_cluster`, `get_cluster_summary`,
//! `get_cluster_detail`, `get_variable`.
//!
//! `create_cluster` fixes its placements when it is accepted: the nodes of
//! shard S go round-robin over the running storage machines (distinct
//! machines when there are enough), each on the lowest port of its
//! machine's `port_range` that no instance and no unfinished job holds.
//! Its steps: `reserve` (the cluster row with its sealed administrative
//! password, and one `cm_instances` row per node), `install:S:N` (the
//! agent installs and starts the instance, with the account), `replicate:S`
//! (`rbr`: every replica follows the shard's primary by GTID, read-only,
//! semi-synchronous when `fullsync_level` ≥ 1), `register` (the cluster and
//! its instances `running`). Undo: instances uninstalled, rows removed.

use super::emit::{codes, Envelope, Refused};
use super::jobs::{Job, Plan, Step};
use super::machines::Machines;
use crate::db::{self, ServerAddr};
use crate::secret::Secret;
use crate::store::{SqlValue, StoreError};
use crate::tls::TlsOptions;
use mysql_async::prelude::*;
use serde_json::{json, Value};
use std::time::Duration;

const INSERT_CLUSTER: &str =
    "INSERT INTO cm_clusters (cluster_id, name, nick_name, ha_mode, shards, \
     nodes, admin_user, admin_password, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const SELECT_CLUSTERS: &str =
    "SELECT cluster_id, name, nick_name, ha_mode, shards, nodes, admin_user, \
     admin_password, status FROM cm_clusters ORDER BY created_at";
const SET_CLUSTER: &str = "UPDATE cm_clusters SET status = ? WHERE cluster_id = ?";
const DELETE_CLUSTER: &str = "DELETE FROM cm_clusters WHERE cluster_id = ?";
const INSERT_INSTANCE: &str = "INSERT INTO cm_instances (hostaddr, port, cluster_id, shard_id, \
     node_index, role, state) VALUES (?, ?, ?, ?, ?, ?, ?)";
const SELECT_INSTANCES: &str =
    "SELECT hostaddr, port, cluster_id, shard_id, node_index, role, state \
     FROM cm_instances ORDER BY cluster_id, shard_id, node_index";
const SET_INSTANCES: &str = "UPDATE cm_instances SET state = ? WHERE cluster_id = ?";
const DELETE_INSTANCES: &str = "DELETE FROM cm_instances WHERE cluster_id = ?";
const DELETE_INSTANCE: &str = "DELETE FROM cm_instances WHERE hostaddr = ? AND port = ?";

/// A cluster as stored.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub cluster_id: String,
    pub name: String,
    pub nick_name: String,
    pub ha_mode: String,
    pub shards: i64,
    pub nodes: i64,
    pub admin_user: String,
    pub admin_password: String,
    pub status: String,
}

/// An instance as stored.
#[derive(Clone, Debug)]
pub struct Instance {
    pub hostaddr: String,
    pub port: i64,
    pub cluster_id: String,
    pub shard: i64,
    pub node: i64,
    pub role: String,
    pub state: String,
}

pub async fn clusters(m: &Machines) -> Result<Vec<Cluster>, StoreError> {
    Ok(m.store
        .select(SELECT_CLUSTERS, vec![])
        .await?
        .iter()
        .map(|r| Cluster {
            cluster_id: r[0].text(),
            name: r[1].text(),
            nick_name: r[2].text(),
            ha_mode: r[3].text(),
            shards: r[4].int(),
            nodes: r[5].int(),
            admin_user: r[6].text(),
            admin_password: r[7].text(),
            status: r[8].text(),
        })
        .collect())
}

pub async fn instances(m: &Machines) -> Result<Vec<Instance>, StoreError> {
    Ok(m.store
        .select(SELECT_INSTANCES, vec![])
        .await?
        .iter()
        .map(|r| Instance {
            hostaddr: r[0].text(),
            port: r[1].int(),
            cluster_id: r[2].text(),
            shard: r[3].int(),
            node: r[4].int(),
            role: r[5].text(),
            state: r[6].text(),
        })
        .collect())
}

fn store_err(e: StoreError) -> Refused {
    Refused {
        code: codes::STEP_FAILED,
        info: format!("the manager's store: {e}"),
    }
}

/// Plans `create_cluster`: every check, the placements and ports.
/// `held`: the ports unfinished jobs' plans hold (host, port), and the
/// cluster ids they will use.
pub async fn plan_create(
    m: &Machines,
    e: &Envelope,
    held: &[(String, i64)],
    held_ids: &[i64],
) -> Result<(Plan, String), Refused> {
    let p = e.paras();
    let ha_mode = match p.need("ha_mode")?.as_str() {
        "mgr" => {
            return Err(Refused {
                code: codes::NOT_BUILT,
                info: "ha_mode mgr (MySQL group replication) is not built: MariaDB has none; use rbr (one primary and GTID replicas per shard) or no_rep".into(),
            })
        }
        m @ ("rbr" | "no_rep") => m.to_string(),
        other => return Err(Refused::bad(format!("paras.ha_mode: {other:?} is not one of rbr, no_rep, mgr"))),
    };
    let shards = p.need_int("shards", 1, 64)?;
    let nodes = p
        .int("nodes", 1, 9)?
        .unwrap_or(if ha_mode == "rbr" { 3 } else { 1 });
    if ha_mode == "no_rep" && nodes != 1 {
        return Err(Refused::bad(format!(
            "paras.nodes: no_rep has one node per shard, not {nodes}"
        )));
    }
    if p.text("comps")?.is_some_and(|c| !c.is_empty() && c != "0") {
        return Err(Refused {
            code: codes::NOT_BUILT,
            info: "paras.comps: computing nodes are not built (comps must be \"0\")".into(),
        });
    }
    if p.text("install_proxysql")?
        .is_some_and(|c| !c.is_empty() && c != "0")
    {
        return Err(Refused {
            code: codes::NOT_BUILT,
            info: "paras.install_proxysql: proxysql is not built (it must be \"0\")".into(),
        });
    }
    let fullsync = p.int("fullsync_level", 0, 8)?.unwrap_or(0);
    if fullsync > nodes - 1 {
        return Err(Refused::bad(format!(
            "paras.fullsync_level: {fullsync} is more than the {} replicas of a shard",
            nodes - 1
        )));
    }
    let innodb = p.int("innodb_size", 16, 1 << 20)?.unwrap_or(128);
    let max_connections = p.int("max_connections", 10, 100_000)?.unwrap_or(1000);
    for key in [
        "max_storage_size",
        "cpu_cores",
        "rocksdb_block_cache_size_M",
    ] {
        p.int(key, 0, 1 << 40)?;
    }
    p.int("dbcfg", 0, 1)?;
    let admin_user = p
        .text("admin_user")?
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "clustmgr".into());
    if admin_user.len() > 80
        || !admin_user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(Refused::bad(
            "paras.admin_user: letters, digits and _ only, at most 80",
        ));
    }
    let password = p.need("admin_password")?;
    if password.len() < 8 {
        return Err(Refused::bad("paras.admin_password: at least 8 characters"));
    }
    let wanted = p.list("storage_iplists")?;
    let all = m.all().await.map_err(store_err)?;
    for w in &wanted {
        if !all.iter().any(|x| &x.hostaddr == w) {
            return Err(Refused {
                code: codes::NOT_FOUND,
                info: format!("paras.storage_iplists: no machine {w}: create_machine registers it"),
            });
        }
    }
    let machines: Vec<_> = all
        .into_iter()
        .filter(|x| x.machine_type == "storage" && x.node_stats == "running")
        .filter(|x| wanted.is_empty() || wanted.contains(&x.hostaddr))
        .collect();
    if machines.is_empty() {
        return Err(Refused::bad("no running storage machine to place the cluster on (create_machine, set_machine node_stats running)"));
    }
    let taken: Vec<(String, i64)> = instances(m)
        .await
        .map_err(store_err)?
        .into_iter()
        .map(|i| (i.hostaddr, i.port))
        .chain(held.iter().cloned())
        .collect();
    let mut picked: Vec<(String, i64)> = Vec::new();
    let mut placements = Vec::new();
    for s in 0..shards {
        for n in 0..nodes {
            let machine = &machines[((s + n) as usize) % machines.len()];
            let (lo, hi) = super::emit::port_range("port_range", &machine.port_range)?;
            let port = (lo as i64..=hi as i64)
                .find(|p| {
                    let k = (machine.hostaddr.clone(), *p);
                    !taken.contains(&k) && !picked.contains(&k)
                })
                .ok_or_else(|| Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "machine {} has no free port left in {}",
                        machine.hostaddr, machine.port_range
                    ),
                })?;
            picked.push((machine.hostaddr.clone(), port));
            placements.push(
                json!({"shard": s + 1, "node": n + 1, "hostaddr": machine.hostaddr,
                "port": port, "agent_port": machine.agent_port, "datadir": machine.datadir,
                "role": if n == 0 { "primary" } else { "replica" }}),
            );
        }
    }
    let next_id = clusters(m)
        .await
        .map_err(store_err)?
        .iter()
        .filter_map(|c| c.cluster_id.parse::<i64>().ok())
        .chain(held_ids.iter().copied())
        .max()
        .unwrap_or(0)
        + 1;
    let name = format!("cluster_{}_{next_id:06}", chrono::Utc::now().timestamp());
    let mut steps = vec![Step::new("reserve")];
    for pl in &placements {
        steps.push(Step::new(&format!(
            "install:{}:{}",
            pl["shard"], pl["node"]
        )));
    }
    if ha_mode == "rbr" && nodes > 1 {
        for s in 1..=shards {
            steps.push(Step::new(&format!("replicate:{s}")));
        }
    }
    steps.push(Step::new("register"));
    let details = json!({
        "cluster_id": next_id.to_string(), "cluster_name": name,
        "nick_name": p.text("nick_name")?.unwrap_or_default(), "ha_mode": ha_mode,
        "shards": shards, "nodes": nodes, "fullsync_level": fullsync,
        "innodb_size": innodb, "max_connections": max_connections,
        "admin_user": admin_user, "placements": placements,
        // Sealed like a job's passwords (with the store's key when it has
        // one), so a restarted manager can go on; never shown.
        "admin_password_sealed": m.store
            .seal_secret(&format!("cm_clusters/{next_id}"), "admin", &Secret::new(password))
            .map_err(store_err)?,
    });
    Ok((Plan { steps, details }, format!("cluster:{next_id}")))
}

/// The ports and cluster id a plan holds.
pub fn held_by(plan: &Plan) -> (Vec<(String, i64)>, Option<i64>) {
    let ports = plan.details["placements"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["hostaddr"].as_str().unwrap_or_default().to_string(),
                        p["port"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (
        ports,
        plan.details["cluster_id"]
            .as_str()
            .and_then(|c| c.parse().ok()),
    )
}

/// Plans `delete_cluster`: one uninstall per instance, then the rows.
pub async fn plan_delete(m: &Machines, e: &Envelope) -> Result<(Plan, String), Refused> {
    let id = e.paras().need("cluster_id")?;
    let c = clusters(m)
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|c| c.cluster_id == id);
    let c = c.ok_or_else(|| Refused {
        code: codes::NOT_FOUND,
        info: format!("no cluster {id} (get_cluster_summary lists them)"),
    })?;
    let mut placements = Vec::new();
    let machines = m.all().await.map_err(store_err)?;
    let mut steps = Vec::new();
    for i in instances(m)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|i| i.cluster_id == id)
    {
        let agent_port = machines
            .iter()
            .find(|x| x.hostaddr == i.hostaddr)
            .map_or(m.agent_port as i64, |x| x.agent_port);
        let mut step = Step::new(&format!("uninstall:{}:{}", i.hostaddr, i.port));
        // An uninstalled instance cannot be brought back by a cancel.
        step.no_return = true;
        steps.push(step);
        placements.push(json!({"hostaddr": i.hostaddr, "port": i.port, "agent_port": agent_port, "shard": i.shard}));
    }
    steps.push(Step::new("unregister"));
    let details = json!({"cluster_id": id, "cluster_name": c.name, "shards": c.shards, "placements": placements});
    Ok((Plan { steps, details }, format!("cluster:{id}")))
}

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
async fn password(m: &Machines, id: &str) -> Result<(String, Secret), String> {
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

async fn connect(
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
        let sealed = d["admin_password_sealed"].as_str().unwrap_or_default();
        let row = vec![
            SqlValue::from(id.as_str()),
            d["cluster_name"].as_str().unwrap_or_default().into(),
            d["nick_name"].as_str().unwrap_or_default().into(),
            d["ha_mode"].as_str().unwrap_or_default().into(),
            d["shards"].as_i64().unwrap_or(0).into(),
            d["nodes"].as_i64().unwrap_or(0).into(),
            d["admin_user"].as_str().unwrap_or_default().into(),
            sealed.into(),
            "creating".into(),
            chrono::Utc::now().timestamp_millis().into(),
        ];
        match m.store.execute(INSERT_CLUSTER, row).await {
            Ok(_) | Err(StoreError::Duplicate(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        for p in d["placements"].as_array().into_iter().flatten() {
            let row = vec![
                SqlValue::from(p["hostaddr"].as_str().unwrap_or_default()),
                p["port"].as_i64().unwrap_or(0).into(),
                id.as_str().into(),
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
        return Ok(Value::Null);
    }
    if let Some(rest) = step.strip_prefix("install:") {
        let p = placement(job, step).ok_or_else(|| format!("no placement for {rest}"))?;
        let (user, pw) = password(m, &id).await?;
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
        return agent_op(m, host, agent_port, body).await;
    }
    if let Some(shard) = step.strip_prefix("replicate:") {
        let (user, pw) = password(m, &id).await?;
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
        return Ok(json!({"primary": format!("{ph}:{pp}")}));
    }
    match step {
        "register" => {
            m.store
                .execute(SET_CLUSTER, vec!["running".into(), id.as_str().into()])
                .await
                .map_err(|e| e.to_string())?;
            m.store
                .execute(SET_INSTANCES, vec!["running".into(), id.as_str().into()])
                .await
                .map_err(|e| e.to_string())?;
            Ok(Value::Null)
        }
        "unregister" => {
            m.store
                .execute(DELETE_INSTANCES, vec![id.as_str().into()])
                .await
                .map_err(|e| e.to_string())?;
            m.store
                .execute(DELETE_CLUSTER, vec![id.as_str().into()])
                .await
                .map_err(|e| e.to_string())?;
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
            m.store
                .execute(DELETE_INSTANCE, vec![host.into(), port.into()])
                .await
                .map_err(|e| e.to_string())?;
            Ok(json!({"storage_hosts": format!("{host}_{port}"), "storage_state": "done"}))
        }
        other => Err(format!("{} has no step {other}", job.job_type)),
    }
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

/// `get_cluster_summary`.
pub async fn summary(m: &Machines) -> Result<Value, StoreError> {
    let list: Vec<Value> = clusters(m)
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
pub async fn detail(m: &Machines, name: &str) -> Result<Value, Refused> {
    let c = clusters(m)
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|c| c.name == name || c.cluster_id == name)
        .ok_or_else(|| Refused {
            code: codes::NOT_FOUND,
            info: format!("no cluster {name:?} (get_cluster_summary lists them)"),
        })?;
    let (user, pw) = password(m, &c.cluster_id).await.map_err(|e| Refused {
        code: codes::STEP_FAILED,
        info: e,
    })?;
    let all = instances(m).await.map_err(store_err)?;
    let mut shards = Vec::new();
    for s in 1..=c.shards {
        let mut nodes = Vec::new();
        for i in all
            .iter()
            .filter(|i| i.cluster_id == c.cluster_id && i.shard == s)
        {
            let live = tokio::time::timeout(Duration::from_secs(5), async {
                let mut conn = connect(&i.hostaddr, i.port, &user, &pw).await?;
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
        shards.push(json!({"shard_name": format!("shard_{s}"), "nodes": nodes.len().to_string(), "list_node": nodes}));
    }
    Ok(
        json!({"cluster_name": c.name, "nick_name": c.nick_name, "shards": c.shards.to_string(),
              "comps": "0", "list_comp": [], "list_shard": shards}),
    )
}

/// `get_variable`: one global variable of a cluster's instance.
pub async fn variable(m: &Machines, e: &Envelope) -> Result<Value, Refused> {
    let p = e.paras();
    let host = p.need("hostaddr")?;
    let port = p.need_int("port", 1, 65535)?;
    let var = p.need("variable")?;
    if var.len() > 64 || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Refused::bad(format!(
            "paras.variable: {var:?} is not a variable name"
        )));
    }
    let i = instances(m)
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|i| i.hostaddr == host && i.port == port)
        .ok_or_else(|| Refused {
            code: codes::NOT_FOUND,
            info: format!("no instance {host}:{port} in a cluster this manager runs"),
        })?;
    let (user, pw) = password(m, &i.cluster_id).await.map_err(|e| Refused {
        code: codes::STEP_FAILED,
        info: e,
    })?;
    let unreachable = |e: String| Refused {
        code: codes::UNREACHABLE,
        info: e,
    };
    let mut conn = connect(&host, port, &user, &pw)
        .await
        .map_err(unreachable)?;
    let value: Result<Option<String>, _> = conn
        .query_first(format!("SELECT CAST(@@GLOBAL.{var} AS CHAR)"))
        .await;
    let _ = conn.disconnect().await;
    match value {
        Ok(v) => Ok(json!({"result": "true", "value": v.unwrap_or_default()})),
        Err(e) => Err(Refused::bad(format!("paras.variable {var}: {e}"))),
    }
}
