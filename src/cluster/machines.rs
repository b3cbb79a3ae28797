//! Machines (`cm_machines`): `create_machine`, `delete_machine`,
//! `set_machine`, `get_machine_summary`, and the agents' heartbeats that
//! say which machines are online. The manager reaches a machine's agent at
//! `hostaddr` on its `agent_port` (9998 unless the request says otherwise).

use super::emit::{check_dir, check_host, port_range, Envelope, Refused};
use super::jobs::{Job, Plan, Step};
use crate::secret::Secret;
use crate::store::{MetaStore, SqlValue, StoreError};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A machine whose agent answered within this is online.
pub const ONLINE_MS: i64 = 15_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub hostaddr: String,
    pub machine_type: String,
    pub port_range: String,
    pub rack_id: String,
    pub datadir: String,
    pub logdir: String,
    pub wal_log_dir: String,
    pub comp_datadir: String,
    pub total_mem: i64,
    pub total_cpu_cores: i64,
    /// `running` or `dead` (set_machine).
    pub node_stats: String,
    pub agent_port: i64,
    pub last_seen_at: i64,
}

const INSERT: &str =
    "INSERT INTO cm_machines (hostaddr, machine_type, port_range, rack_id, datadir, \
     logdir, wal_log_dir, comp_datadir, total_mem, total_cpu_cores, node_stats, agent_port, \
     last_seen_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const SELECT_ALL: &str = "SELECT hostaddr, machine_type, port_range, rack_id, datadir, logdir, \
     wal_log_dir, comp_datadir, total_mem, total_cpu_cores, node_stats, agent_port, last_seen_at \
     FROM cm_machines ORDER BY hostaddr";
const DELETE: &str = "DELETE FROM cm_machines WHERE hostaddr = ?";
const SET_STATS: &str = "UPDATE cm_machines SET node_stats = ? WHERE hostaddr = ?";
const SEEN: &str = "UPDATE cm_machines SET last_seen_at = ? WHERE hostaddr = ?";
const INSTANCES_ON: &str =
    "SELECT port, cluster_id FROM cm_instances WHERE hostaddr = ? ORDER BY port";

fn decode(r: &[SqlValue]) -> Machine {
    Machine {
        hostaddr: r[0].text(),
        machine_type: r[1].text(),
        port_range: r[2].text(),
        rack_id: r[3].text(),
        datadir: r[4].text(),
        logdir: r[5].text(),
        wal_log_dir: r[6].text(),
        comp_datadir: r[7].text(),
        total_mem: r[8].int(),
        total_cpu_cores: r[9].int(),
        node_stats: r[10].text(),
        agent_port: r[11].int(),
        last_seen_at: r[12].int(),
    }
}

#[derive(Clone)]
pub struct Machines {
    pub store: Arc<dyn MetaStore>,
    pub token: Option<Secret>,
    /// The agents' port unless a request names another (9998 as in seed
    /// 000, or `[cluster] agent_port`).
    pub agent_port: u16,
}

impl Machines {
    pub async fn all(&self) -> Result<Vec<Machine>, StoreError> {
        Ok(self
            .store
            .select(SELECT_ALL, vec![])
            .await?
            .iter()
            .map(|r| decode(r))
            .collect())
    }

    pub async fn get(&self, host: &str) -> Result<Option<Machine>, StoreError> {
        Ok(self.all().await?.into_iter().find(|m| m.hostaddr == host))
    }

    /// The instances that live on `host`: (port, cluster).
    pub async fn instances_on(&self, host: &str) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(self
            .store
            .select(INSTANCES_ON, vec![host.into()])
            .await?
            .iter()
            .map(|r| (r[0].int(), r[1].text()))
            .collect())
    }

    /// Sends `body` to the agent of `host`:`port`; its answer, or why none.
    pub async fn ask_agent(&self, host: &str, port: i64, body: Value) -> Result<Value, String> {
        let token = self
            .token
            .as_ref()
            .ok_or("the manager has no agent token: set CCR_AGENT_TOKEN to the agents' token")?;
        let auth = format!("Bearer {}", token.expose());
        let answer = crate::client::request(
            &format!("http://{host}:{port}"),
            None,
            "POST",
            "/",
            &[("authorization", auth.as_str())],
            bytes::Bytes::from(body.to_string()),
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| format!("the agent at {host}:{port} is unreachable ({e}): start `ccr-syncer agent --host {host} --port {port} --state-dir DIR` there"))?;
        let v: Value = serde_json::from_slice(&answer.body).map_err(|_| {
            format!(
                "the agent at {host}:{port} answered {} without JSON",
                answer.status
            )
        })?;
        if answer.status != 200 || v["status"] == "failed" {
            return Err(format!(
                "the agent at {host}:{port} answered {}: {}",
                answer.status,
                v["error_info"].as_str().unwrap_or("no reason given")
            ));
        }
        Ok(v)
    }

    /// One heartbeat round: asks every machine's agent at once (5 s at
    /// most); how many answered.
    pub async fn heartbeat(&self) -> Result<i64, StoreError> {
        let machines = self.all().await?;
        let asks = machines.iter().map(|m| async move {
            let ask = self.ask_agent(
                &m.hostaddr,
                m.agent_port,
                json!({"ver": "0.1", "job_type": "get_info"}),
            );
            let up = tokio::time::timeout(Duration::from_secs(5), ask)
                .await
                .is_ok_and(|r| r.is_ok());
            (m.hostaddr.clone(), up)
        });
        let mut up = 0;
        for (host, answered) in futures_util::future::join_all(asks).await {
            if answered {
                up += 1;
                let now = chrono::Utc::now().timestamp_millis();
                self.store
                    .execute(SEEN, vec![now.into(), host.as_str().into()])
                    .await?;
            }
        }
        Ok(up)
    }

    /// `get_machine_summary`.
    pub async fn summary(&self) -> Result<Value, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let list: Vec<Value> = self
            .all()
            .await?
            .iter()
            .map(|m| {
                let online = now - m.last_seen_at <= ONLINE_MS;
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
}

/// Reads and checks a machine job's request into its plan: the checks that
/// need the store (an existing machine, instances on it) are made here, so
/// a refused request creates nothing.
pub async fn plan(machines: &Machines, e: &Envelope) -> Result<(Plan, String), Refused> {
    let p = e.paras();
    let host = p.need("hostaddr")?;
    check_host("hostaddr", &host)?;
    let resource = format!("machine:{host}");
    let existing = machines
        .get(&host)
        .await
        .map_err(|e| Refused::bad(format!("the store: {e}")))?;
    let not_found = || Refused {
        code: super::emit::codes::NOT_FOUND,
        info: format!("no machine {host}: create_machine registers it"),
    };
    let plan = match e.job_type.as_str() {
        "create_machine" => {
            if existing.is_some() {
                return Err(Refused {
                    code: super::emit::codes::CONFLICT,
                    info: format!(
                        "machine {host} exists already (delete_machine first to register it again)"
                    ),
                });
            }
            let machine_type = p.choice("machine_type", &["storage", "computer"])?;
            let range = p.need("port_range")?;
            port_range("port_range", &range)?;
            let datadir = p.need("datadir")?;
            check_dir("datadir", &datadir)?;
            let dir = |key: &str| -> Result<String, Refused> {
                match p.text(key)?.filter(|d| !d.is_empty()) {
                    Some(d) => check_dir(key, &d).map(|()| d),
                    None => Ok(datadir.clone()),
                }
            };
            let details = json!({
                "hostaddr": host,
                "machine_type": machine_type,
                "port_range": range,
                "rack_id": p.text("rack_id")?.unwrap_or_default(),
                "datadir": datadir,
                "logdir": dir("logdir")?,
                "wal_log_dir": dir("wal_log_dir")?,
                "comp_datadir": dir("comp_datadir")?,
                "total_mem": p.int("total_mem", 1, 1 << 40)?.unwrap_or(0),
                "total_cpu_cores": p.int("total_cpu_cores", 1, 1 << 20)?.unwrap_or(0),
                "agent_port": p.int("agent_port", 1, 65535)?.unwrap_or(machines.agent_port as i64),
            });
            Plan {
                steps: vec![Step::new("reach_agent"), Step::new("register_machine")],
                details,
            }
        }
        "delete_machine" => {
            let m = existing.ok_or_else(not_found)?;
            refuse_if_instances(machines, &host).await?;
            Plan {
                steps: vec![
                    Step::new("check_no_instances"),
                    Step::new("unregister_machine"),
                ],
                details: json!({"hostaddr": host, "agent_port": m.agent_port}),
            }
        }
        "set_machine" => {
            existing.ok_or_else(not_found)?;
            let stats = p.choice("node_stats", &["running", "dead"])?;
            Plan {
                steps: vec![Step::new("set_node_stats")],
                details: json!({"hostaddr": host, "node_stats": stats}),
            }
        }
        other => unreachable!("{other} is not a machine job"),
    };
    Ok((plan, resource))
}

async fn refuse_if_instances(machines: &Machines, host: &str) -> Result<(), Refused> {
    let live = machines
        .instances_on(host)
        .await
        .map_err(|e| Refused::bad(format!("the store: {e}")))?;
    if live.is_empty() {
        return Ok(());
    }
    Err(Refused {
        code: super::emit::codes::CONFLICT,
        info: format!(
            "machine {host} still has instances: {} (delete their clusters or shards first)",
            live.iter()
                .map(|(port, cluster)| format!("{host}:{port} of cluster {cluster}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Runs a machine job's step.
pub async fn run_step(machines: &Machines, job: &Job, step: &str) -> Result<Value, String> {
    let d = &job.plan.details;
    let host = d["hostaddr"].as_str().unwrap_or_default().to_string();
    match step {
        "reach_agent" => {
            let port = d["agent_port"]
                .as_i64()
                .unwrap_or(machines.agent_port as i64);
            let info = machines
                .ask_agent(&host, port, json!({"ver": "0.1", "job_type": "get_info"}))
                .await?;
            Ok(json!({"cores": info["cores"], "total_mem_mb": info["total_mem_mb"]}))
        }
        "register_machine" => {
            let s = |k: &str| SqlValue::from(d[k].as_str().unwrap_or_default());
            let i = |k: &str| SqlValue::from(d[k].as_i64().unwrap_or(0));
            let now = chrono::Utc::now().timestamp_millis();
            let r = machines
                .store
                .execute(
                    INSERT,
                    vec![
                        s("hostaddr"),
                        s("machine_type"),
                        s("port_range"),
                        s("rack_id"),
                        s("datadir"),
                        s("logdir"),
                        s("wal_log_dir"),
                        s("comp_datadir"),
                        i("total_mem"),
                        i("total_cpu_cores"),
                        "running".into(),
                        i("agent_port"),
                        now.into(),
                        now.into(),
                    ],
                )
                .await;
            match r {
                // Made by this step before a crash: it holds.
                Ok(_) | Err(StoreError::Duplicate(_)) => Ok(Value::Null),
                Err(e) => Err(e.to_string()),
            }
        }
        "check_no_instances" => refuse_if_instances(machines, &host)
            .await
            .map(|()| Value::Null)
            .map_err(|r| r.info),
        "unregister_machine" => machines
            .store
            .execute(DELETE, vec![host.as_str().into()])
            .await
            .map(|_| Value::Null)
            .map_err(|e| e.to_string()),
        "set_node_stats" => machines
            .store
            .execute(
                SET_STATS,
                vec![
                    d["node_stats"].as_str().unwrap_or("running").into(),
                    host.as_str().into(),
                ],
            )
            .await
            .map(|_| Value::Null)
            .map_err(|e| e.to_string()),
        other => Err(format!("{} has no step {other}", job.job_type)),
    }
}

/// Undoes a machine job's step (cancel, or a later step failing).
pub async fn undo_step(machines: &Machines, job: &Job, step: &str) -> Result<(), String> {
    let host = job.plan.details["hostaddr"].as_str().unwrap_or_default();
    match (job.job_type.as_str(), step) {
        ("create_machine", "register_machine") => machines
            .store
            .execute(DELETE, vec![host.into()])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

pub fn done_info(job: &Job) -> String {
    match job.job_type.as_str() {
        "create_machine" => "create machine successfully",
        "delete_machine" => "delete machine successfully",
        "set_machine" => "set machine success",
        _ => "done",
    }
    .into()
}
