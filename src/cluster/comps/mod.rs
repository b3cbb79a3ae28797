//! The compute layer: compute nodes (`mariadbd` with the Spider engine)
//! in front of a cluster's shards. Clients log in to any compute node with
//! the cluster's administrative account and run DDL and DML there; every
//! table's rows live on the shards.
//!
//! - Every compute node knows every shard as a Spider server
//!   (`ccr_s<shard>`) pointing at the shard's current primary
//!   ([`servers`], kept by [`keeper`] and repointed by a promotion at once).
//! - The manager follows every compute node's binlog ([`ddl`]): a table
//!   created there is placed on a shard (or spread by partition), made
//!   there, and turned into a Spider table on every compute node
//!   ([`apply`]); other DDL is carried to the table's backends.
//! - The catalog (`cm_tables`) says where each table's rows live
//!   ([`spider::Placement`]); a new compute node is given every table in it.
//! - A table moves between shards through [`cutover`]: the compute nodes'
//!   Spider tables are switched while its writes wait, never failing.

pub mod apply;
pub mod board;
pub mod cutover;
pub mod ddl;
pub mod fence;
pub mod keeper;
pub mod listing;
pub mod spider;

use super::emit::{codes, Refused};
use super::kind::{StepCtx, StepError};
use super::nodes::{self, NodeSettings};
use super::Env;
use crate::db;
use crate::protocol::{Request, SemiSync};
use crate::secret::Secret;
use crate::store::cluster::{CompRow, TableRow};
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use spider::Placement;
use std::collections::BTreeMap;

/// Where a new compute node goes, fixed at accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompPlacement {
    pub comp_id: i64,
    /// `comp<N>`, N its number in the cluster.
    pub name: String,
    pub hostaddr: String,
    pub port: i64,
    pub agent_port: i64,
    pub datadir: String,
    /// Its server id (unique in the cluster).
    pub server_id: i64,
}

impl CompPlacement {
    /// As the seed's `list_comp` shows a new compute node.
    pub fn json(&self) -> Value {
        json!({"comp_id": self.comp_id.to_string(), "comp_name": self.name,
               "hostaddr": self.hostaddr, "port": self.port.to_string()})
    }
}

/// Whether a machine row carries `kind` (`storage`, `computer`): a host
/// registered for both has `storage,computer`.
pub fn has_type(machine_type: &str, kind: &str) -> bool {
    machine_type.split(',').any(|t| t.trim() == kind)
}

/// Where `count` new compute nodes go: round-robin over the running
/// machines of type `computer` (`wanted` when named), each on the lowest
/// free port of its range, numbered after the cluster's last.
pub async fn place(
    env: &Env,
    cluster_id: &str,
    wanted: &[String],
    count: i64,
    taken_extra: &[(String, i64)],
) -> Result<Vec<CompPlacement>, Refused> {
    let all = env.store.machines().await.map_err(nodes::store_err)?;
    for w in wanted {
        if !all
            .iter()
            .any(|m| &m.hostaddr == w && has_type(&m.machine_type, "computer"))
        {
            return Err(Refused {
                code: codes::NOT_FOUND,
                info: format!(
                    "paras.computer_iplists: no machine {w} of type computer: create_machine \
                     registers it with machine_type computer"
                ),
            });
        }
    }
    let machines: Vec<_> = all
        .into_iter()
        .filter(|m| has_type(&m.machine_type, "computer") && m.node_stats == "running")
        .filter(|m| wanted.is_empty() || wanted.contains(&m.hostaddr))
        .collect();
    if machines.is_empty() {
        return Err(Refused::bad(
            "no running machine of type computer to place the compute nodes on (create_machine \
             with machine_type computer)",
        ));
    }
    let mut taken = env.store.taken_ports().await.map_err(nodes::store_err)?;
    taken.extend_from_slice(taken_extra);
    let existing = env.store.comps().await.map_err(nodes::store_err)?;
    let in_cluster: Vec<&CompRow> = existing
        .iter()
        .filter(|c| c.cluster_id == cluster_id)
        .collect();
    let mut number = in_cluster
        .iter()
        .filter_map(|c| c.name.strip_prefix("comp")?.parse::<i64>().ok())
        .max()
        .unwrap_or(0);
    let mut first_id = env
        .store
        .max_id(crate::store::cluster::COMP_ID, "")
        .await
        .map_err(nodes::store_err)?
        .max(existing.iter().map(|c| c.comp_id).max().unwrap_or(0));
    let cluster: i64 = cluster_id.parse().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..count {
        let m = &machines[i as usize % machines.len()];
        let (lo, hi) = super::emit::port_range("port_range", &m.port_range)?;
        let port = (lo as i64..=hi as i64)
            .find(|p| {
                let k = (m.hostaddr.clone(), *p);
                !taken.contains(&k)
            })
            .ok_or_else(|| Refused {
                code: codes::CONFLICT,
                info: format!(
                    "machine {} has no free port left in {}",
                    m.hostaddr, m.port_range
                ),
            })?;
        taken.push((m.hostaddr.clone(), port));
        number += 1;
        first_id += 1;
        out.push(CompPlacement {
            comp_id: first_id,
            name: format!("comp{number}"),
            hostaddr: m.hostaddr.clone(),
            port,
            agent_port: m.agent_port,
            datadir: if m.comp_datadir.is_empty() {
                m.datadir.clone()
            } else {
                m.comp_datadir.clone()
            },
            server_id: (cluster % 100_000) * 1000 + 700 + number.min(299),
        });
    }
    Ok(out)
}

/// `install_comp:ID`: the compute node's row (reserved), then its
/// instance by its machine's agent: Spider loaded, writable, the cluster's
/// accounts.
pub async fn install(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    settings: &NodeSettings,
    p: &CompPlacement,
) -> Result<Value, StepError> {
    ctx.env
        .store
        .insert_comp(
            &ctx.holder(),
            &CompRow {
                hostaddr: p.hostaddr.clone(),
                port: p.port,
                cluster_id: cluster_id.to_string(),
                comp_id: p.comp_id,
                name: p.name.clone(),
                state: "reserved".into(),
                ddl_pos: String::new(),
            },
        )
        .await?;
    let as_node = nodes::Placement {
        shard: 0,
        node: 0,
        hostaddr: p.hostaddr.clone(),
        port: p.port,
        agent_port: p.agent_port,
        datadir: p.datadir.clone(),
        role: "primary".into(),
    };
    let mut request = nodes::install_request(ctx, cluster_id, settings, &as_node).await?;
    request.server_id = p.server_id as u64;
    request.read_only = false;
    request.semi_sync = SemiSync::None;
    request.spider = true;
    ctx.env
        .agents
        .operate(
            ctx,
            &p.hostaddr,
            p.agent_port,
            Request::InstallMysql(Box::new(request)),
        )
        .await
}

/// Undoes [`install`]: the instance removed, then its row.
pub async fn uninstall(
    ctx: &StepCtx<'_>,
    host: &str,
    agent_port: i64,
    port: i64,
    prefix: &str,
) -> Result<(), StepError> {
    nodes::uninstall(ctx, host, agent_port, port, prefix).await?;
    ctx.env.store.delete_comp(&ctx.holder(), host, port).await?;
    Ok(())
}

/// `attach_comp:ID`: its Spider servers, every table of the catalog, then
/// `running` (the DDL follower starts on it).
pub async fn attach(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    host: &str,
    port: i64,
) -> Result<Value, StepError> {
    let mut conn = connect(ctx.env, cluster_id, host, port).await?;
    let servers = servers(ctx.env, cluster_id, &mut conn, host, port).await?;
    let tables = apply::give_all(ctx.env, cluster_id, &mut conn, &format!("{host}:{port}")).await?;
    let _ = conn.disconnect().await;
    ctx.env
        .store
        .set_comp_state(&ctx.holder(), host, port, "running")
        .await?;
    Ok(json!({"servers": servers, "tables": tables}))
}

/// A compute node as `comp_name`/`comp_id` answers show it.
pub fn comp_json(c: &CompRow) -> Value {
    json!({"comp_id": c.comp_id.to_string(), "comp_name": c.name, "hostaddr": c.hostaddr,
           "port": c.port.to_string(), "state": c.state})
}

/// A session on a compute node with the manager's account, its own
/// statements kept out of the node's binlog (the DDL follower reads only
/// the clients').
pub async fn connect(
    env: &Env,
    cluster_id: &str,
    host: &str,
    port: i64,
) -> Result<mysql_async::Conn, StepError> {
    let (user, pw) = nodes::password(env, cluster_id).await?;
    let mut conn = nodes::connect(host, port, &user, &pw).await?;
    conn.query_drop("SET SESSION sql_log_bin = 0")
        .await
        .map_err(|e| nodes::sql_error(&format!("{host}:{port}"), &e))?;
    Ok(conn)
}

/// Each shard's primary now: `shard → (host, port)`.
pub async fn primaries(
    env: &Env,
    cluster_id: &str,
) -> Result<BTreeMap<i64, (String, i64)>, StepError> {
    Ok(env
        .store
        .instances()
        .await?
        .into_iter()
        .filter(|i| i.cluster_id == cluster_id && i.role == "primary")
        .map(|i| (i.shard, (i.hostaddr, i.port)))
        .collect())
}

/// Makes sure the compute node's Spider servers name every shard's primary
/// now (created, or altered and the tables reopened); what it changed.
pub async fn servers(
    env: &Env,
    cluster_id: &str,
    conn: &mut mysql_async::Conn,
    host: &str,
    port: i64,
) -> Result<Vec<String>, StepError> {
    let at = format!("{host}:{port}");
    let (user, pw) = nodes::admin(env, cluster_id).await?;
    let wanted = primaries(env, cluster_id).await?;
    let have: Vec<(String, String, i64, String)> = conn
        .query("SELECT Server_name, Host, Port, Username FROM mysql.servers WHERE Server_name LIKE 'ccr\\_s%'")
        .await
        .map_err(|e| nodes::sql_error(&at, &e))?;
    let mut changed = Vec::new();
    for (shard, (h, p)) in &wanted {
        let name = spider::server_name(*shard);
        let now = have.iter().find(|x| x.0 == name);
        if now.is_some_and(|x| &x.1 == h && x.2 == *p && x.3 == user) {
            continue;
        }
        let options = server_options(h, *p, &user, &pw);
        let sql = match now {
            None => format!("CREATE SERVER {name} FOREIGN DATA WRAPPER mysql OPTIONS ({options})"),
            Some(_) => format!("ALTER SERVER {name} OPTIONS ({options})"),
        };
        conn.query_drop(&sql)
            .await
            .map_err(|e| nodes::sql_error(&at, &e))?;
        changed.push(format!("{name} -> {h}:{p}"));
    }
    for (name, ..) in &have {
        let shard: Option<i64> = name.strip_prefix("ccr_s").and_then(|s| s.parse().ok());
        if shard.is_some_and(|s| !wanted.contains_key(&s)) {
            conn.query_drop(format!("DROP SERVER IF EXISTS {name}"))
                .await
                .map_err(|e| nodes::sql_error(&at, &e))?;
            changed.push(format!("{name} dropped"));
        }
    }
    if !changed.is_empty() {
        // Spider reads a server's address when it opens a table.
        conn.query_drop("FLUSH TABLES")
            .await
            .map_err(|e| nodes::sql_error(&at, &e))?;
    }
    Ok(changed)
}

fn server_options(host: &str, port: i64, user: &str, pw: &Secret) -> String {
    format!(
        "HOST {}, PORT {port}, USER {}, PASSWORD {}",
        db::quote_string(host),
        db::quote_string(user),
        db::quote_string(pw.expose())
    )
}

/// Every running compute node of a cluster repointed at the shards'
/// primaries now; what each said.
pub async fn repoint_all(env: &Env, cluster_id: &str) -> Vec<Value> {
    let comps = match env.store.comps().await {
        Ok(c) => c,
        Err(e) => return vec![json!({"error": e.to_string()})],
    };
    let mut out = Vec::new();
    for c in comps
        .iter()
        .filter(|c| c.cluster_id == cluster_id && c.state == "running")
    {
        let at = format!("{}:{}", c.hostaddr, c.port);
        let work = async {
            let mut conn = connect(env, cluster_id, &c.hostaddr, c.port).await?;
            let r = servers(env, cluster_id, &mut conn, &c.hostaddr, c.port).await;
            let _ = conn.disconnect().await;
            r
        };
        let outcome = match tokio::time::timeout(std::time::Duration::from_secs(10), work).await {
            Ok(Ok(changed)) => json!(changed),
            Ok(Err(e)) => json!(format!("not repointed now ({e}): the keeper retries")),
            Err(_) => json!("not repointed now (no answer within 10 s): the keeper retries"),
        };
        out.push(json!({"comp": at, "outcome": outcome}));
    }
    out
}

/// A cluster's catalog: `(db, table) → placement`.
pub async fn catalog(
    env: &Env,
    cluster_id: &str,
) -> Result<BTreeMap<(String, String), Placement>, StepError> {
    let mut out = BTreeMap::new();
    for t in env.store.tables().await? {
        if t.cluster_id != cluster_id {
            continue;
        }
        let p: Placement = serde_json::from_str(&t.placement).map_err(|e| {
            StepError::definite(format!("the catalog's row of {}.{}: {e}", t.db, t.table))
        })?;
        out.insert((t.db, t.table), p);
    }
    Ok(out)
}

/// Writes a table's placement to the catalog.
pub async fn put(
    env: &Env,
    cluster_id: &str,
    db: &str,
    table: &str,
    p: &Placement,
) -> Result<(), StepError> {
    env.store
        .put_table(&TableRow {
            cluster_id: cluster_id.to_string(),
            db: db.to_string(),
            table: table.to_string(),
            placement: serde_json::to_string(p).expect("placements serialize"),
            updated_at: 0,
        })
        .await?;
    Ok(())
}

/// The running compute nodes of a cluster.
pub async fn running(env: &Env, cluster_id: &str) -> Result<Vec<CompRow>, StepError> {
    Ok(env
        .store
        .comps()
        .await?
        .into_iter()
        .filter(|c| c.cluster_id == cluster_id && c.state == "running")
        .collect())
}

/// Databases no client table lives in.
pub fn is_system_db(db: &str) -> bool {
    matches!(
        db.to_ascii_lowercase().as_str(),
        "mysql" | "information_schema" | "performance_schema" | "sys" | "ccr_sys"
    )
}

/// Tables of the manager's own (a switch's, a copy's checkpoints).
pub fn is_own_table(name: &str) -> bool {
    name.starts_with("_ccr_") || name.contains("__ccr_")
}
