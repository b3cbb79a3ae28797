//! Clusters of real MariaDB instances (`cm_clusters`, `cm_instances`): the
//! rows, and the plans of `create_cluster`, `add_shards`, `delete_shard`
//! and `delete_cluster`, fixed when the job is accepted.
//!
//! New nodes go round-robin over the running storage machines (a shard's
//! nodes on distinct machines when there are enough), each on the lowest
//! port of its machine's `port_range` that no instance and no unfinished
//! job holds. A create's steps: `reserve` (the cluster's row with its
//! sealed administrative password, one `cm_instances` row per node),
//! `install:S:N`, `replicate:S` (`rbr`), `register` ([`super::steps`]).

use super::emit::{codes, Envelope, Refused};
use super::jobs::{Plan, Step};
use super::machines::Machines;
use crate::secret::Secret;
use crate::store::StoreError;
use serde_json::{json, Value};

pub(super) const INSERT_CLUSTER: &str =
    "INSERT INTO cm_clusters (cluster_id, name, nick_name, ha_mode, shards, \
     nodes, admin_user, admin_password, status, settings, created_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub(super) const SELECT_CLUSTERS: &str =
    "SELECT cluster_id, name, nick_name, ha_mode, shards, nodes, admin_user, \
     admin_password, status, settings FROM cm_clusters ORDER BY created_at";
pub(super) const SET_SHARDS: &str = "UPDATE cm_clusters SET shards = ? WHERE cluster_id = ?";
pub(super) const SET_CLUSTER: &str = "UPDATE cm_clusters SET status = ? WHERE cluster_id = ?";
pub(super) const DELETE_CLUSTER: &str = "DELETE FROM cm_clusters WHERE cluster_id = ?";
pub(super) const INSERT_INSTANCE: &str =
    "INSERT INTO cm_instances (hostaddr, port, cluster_id, shard_id, \
     node_index, role, state) VALUES (?, ?, ?, ?, ?, ?, ?)";
pub(super) const SELECT_INSTANCES: &str =
    "SELECT hostaddr, port, cluster_id, shard_id, node_index, role, state \
     FROM cm_instances ORDER BY cluster_id, shard_id, node_index";
pub(super) const SET_INSTANCES: &str = "UPDATE cm_instances SET state = ? WHERE cluster_id = ?";
pub(super) const DELETE_INSTANCES: &str = "DELETE FROM cm_instances WHERE cluster_id = ?";
pub(super) const DELETE_INSTANCE: &str = "DELETE FROM cm_instances WHERE hostaddr = ? AND port = ?";

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
    /// What every node of it is made with: `fullsync_level`,
    /// `innodb_size`, `max_connections`.
    pub settings: Value,
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
            settings: serde_json::from_str(&r[9].text()).unwrap_or(Value::Null),
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

pub(super) fn store_err(e: StoreError) -> Refused {
    Refused {
        code: codes::STEP_FAILED,
        info: format!("the manager's store: {e}"),
    }
}

/// Where new nodes go: shards `first..first + shards`, `nodes` each,
/// round-robin over the running storage machines (`wanted` when named), on
/// the lowest port of each machine's range that is not taken or `held`.
async fn place(
    m: &Machines,
    wanted: &[String],
    held: &[(String, i64)],
    first: i64,
    shards: i64,
    nodes: i64,
) -> Result<Vec<Value>, Refused> {
    let all = m.all().await.map_err(store_err)?;
    for w in wanted {
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
        return Err(Refused::bad(
            "no running storage machine to place the nodes on (create_machine, set_machine node_stats running)",
        ));
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
    for s in first..first + shards {
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
                json!({"shard": s, "node": n + 1, "hostaddr": machine.hostaddr,
                "port": port, "agent_port": machine.agent_port, "datadir": machine.datadir,
                "role": if n == 0 { "primary" } else { "replica" }}),
            );
        }
    }
    Ok(placements)
}

/// The steps that make `placements`: reserve, install each, replicate
/// each shard (rbr with replicas), register.
fn make_steps(placements: &[Value], replicate: bool) -> Vec<Step> {
    let mut steps = vec![Step::new("reserve")];
    for pl in placements {
        steps.push(Step::new(&format!(
            "install:{}:{}",
            pl["shard"], pl["node"]
        )));
    }
    if replicate {
        let mut shards: Vec<i64> = placements
            .iter()
            .filter_map(|p| p["shard"].as_i64())
            .collect();
        shards.dedup();
        for s in shards {
            steps.push(Step::new(&format!("replicate:{s}")));
        }
    }
    steps.push(Step::new("register"));
    steps
}

/// Plans `create_cluster`: every check, the placements and ports.
/// `held`: the ports unfinished jobs' plans hold, and the cluster ids they
/// will use.
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
        other => {
            return Err(Refused::bad(format!(
                "paras.ha_mode: {other:?} is not one of rbr, no_rep, mgr"
            )))
        }
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
    for (key, what) in [
        ("comps", "computing nodes"),
        ("install_proxysql", "proxysql"),
    ] {
        if p.text(key)?.is_some_and(|c| !c.is_empty() && c != "0") {
            return Err(Refused {
                code: codes::NOT_BUILT,
                info: format!("paras.{key}: {what} are not built (it must be \"0\")"),
            });
        }
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
    let placements = place(m, &p.list("storage_iplists")?, held, 1, shards, nodes).await?;
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
    let steps = make_steps(&placements, ha_mode == "rbr" && nodes > 1);
    let details = json!({
        "cluster_id": next_id.to_string(), "cluster_name": name,
        "nick_name": p.text("nick_name")?.unwrap_or_default(), "ha_mode": ha_mode,
        "shards": shards, "shards_after": shards, "nodes": nodes, "fullsync_level": fullsync,
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

fn find_cluster(list: Vec<Cluster>, id: &str) -> Result<Cluster, Refused> {
    list.into_iter()
        .find(|c| c.cluster_id == id)
        .ok_or_else(|| Refused {
            code: codes::NOT_FOUND,
            info: format!("no cluster {id} (get_cluster_summary lists them)"),
        })
}

/// Plans `add_shards`: new shards made like the cluster's others.
pub async fn plan_add_shards(
    m: &Machines,
    e: &Envelope,
    held: &[(String, i64)],
) -> Result<(Plan, String), Refused> {
    let p = e.paras();
    let id = p.need("cluster_id")?;
    let c = find_cluster(clusters(m).await.map_err(store_err)?, &id)?;
    let add = p.need_int("shards", 1, 64)?;
    let nodes = p.int("nodes", 1, 9)?.unwrap_or(c.nodes);
    if c.ha_mode == "no_rep" && nodes != 1 {
        return Err(Refused::bad(
            "paras.nodes: a no_rep cluster has one node per shard",
        ));
    }
    let fullsync = c.settings["fullsync_level"]
        .as_i64()
        .unwrap_or(0)
        .min(nodes - 1);
    let last = instances(m)
        .await
        .map_err(store_err)?
        .iter()
        .filter(|i| i.cluster_id == id)
        .map(|i| i.shard)
        .max()
        .unwrap_or(0);
    let placements = place(m, &p.list("storage_iplists")?, held, last + 1, add, nodes).await?;
    let steps = make_steps(&placements, c.ha_mode == "rbr" && nodes > 1);
    let details = json!({
        "cluster_id": id, "cluster_name": c.name, "ha_mode": c.ha_mode,
        "shards_after": c.shards + add, "nodes": nodes, "fullsync_level": fullsync,
        "innodb_size": c.settings["innodb_size"], "max_connections": c.settings["max_connections"],
        "new_shards": (last + 1..=last + add).collect::<Vec<_>>(), "placements": placements,
    });
    Ok((Plan { steps, details }, format!("cluster:{id}")))
}

/// Plans `delete_cluster` (`shard`: `delete_shard` of that shard only):
/// one uninstall per instance, then the rows.
pub async fn plan_delete(m: &Machines, e: &Envelope) -> Result<(Plan, String), Refused> {
    let p = e.paras();
    let id = p.need("cluster_id")?;
    let c = find_cluster(clusters(m).await.map_err(store_err)?, &id)?;
    let shard = if e.job_type == "delete_cluster" {
        None
    } else {
        Some(p.need_int("shard_id", 1, 1 << 20)?)
    };
    let all = instances(m).await.map_err(store_err)?;
    let mine: Vec<&Instance> = all
        .iter()
        .filter(|i| i.cluster_id == id && shard.is_none_or(|s| s == i.shard))
        .collect();
    if let Some(s) = shard {
        if mine.is_empty() {
            return Err(Refused {
                code: codes::NOT_FOUND,
                info: format!("cluster {id} has no shard {s}"),
            });
        }
        let shards: std::collections::BTreeSet<i64> = all
            .iter()
            .filter(|i| i.cluster_id == id)
            .map(|i| i.shard)
            .collect();
        if shards.len() == 1 {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!("shard {s} is cluster {id}'s last: delete_cluster removes it"),
            });
        }
        if p.int("force", 0, 1)?.unwrap_or(0) == 0 {
            super::steps::refuse_user_tables(m, &id, &mine).await?;
        }
    }
    let machines = m.all().await.map_err(store_err)?;
    let mut placements = Vec::new();
    let mut steps = Vec::new();
    for i in mine {
        let agent_port = machines
            .iter()
            .find(|x| x.hostaddr == i.hostaddr)
            .map_or(m.agent_port as i64, |x| x.agent_port);
        let mut step = Step::new(&format!("uninstall:{}:{}", i.hostaddr, i.port));
        // An uninstalled instance cannot be brought back by a cancel.
        step.no_return = true;
        steps.push(step);
        placements.push(json!({"hostaddr": i.hostaddr, "port": i.port,
                               "agent_port": agent_port, "shard": i.shard}));
    }
    steps.push(Step::new("unregister"));
    let details = json!({"cluster_id": id, "cluster_name": c.name, "shards": c.shards,
                         "shard_id": shard, "shards_after": c.shards - i64::from(shard.is_some()),
                         "placements": placements});
    Ok((Plan { steps, details }, format!("cluster:{id}")))
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
