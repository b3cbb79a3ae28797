//! The building blocks of the job types that make and remove a cluster's
//! instances (`create_cluster`, `add_shards`, `delete_shard`,
//! `delete_cluster`): where new nodes go, the steps that make a shard
//! (reserve, install, replicate, register) and the steps that remove
//! instances (uninstall, unregister), each "make sure X holds" so that
//! running one again after a crash is safe. Instances are installed and
//! removed through the machines' agents with operations keyed by the job,
//! the step and its attempt; replication is set on the instances
//! themselves with the cluster's administrative account.
//!
//! New nodes go round-robin over the running storage machines (a shard's
//! nodes on distinct machines when there are enough), each on the lowest
//! port of its machine's `port_range` that no instance and no unfinished
//! job holds; the store refuses a port taken meanwhile and the request is
//! planned again.

use super::emit::{codes, Refused};
use super::kind::{StepCtx, StepError};
use super::resource::Resource;
use super::Env;
use crate::db::{self, ServerAddr};
use crate::protocol::{InstallMysql, Request, SemiSync};
use crate::secret::Secret;
use crate::store::cluster::{ClusterRow, InstanceRow};
use crate::store::StoreError;
use crate::tls::TlsOptions;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// Where a new node goes, fixed at accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub shard: i64,
    pub node: i64,
    pub hostaddr: String,
    pub port: i64,
    pub agent_port: i64,
    pub datadir: String,
    /// `primary` or `replica`.
    pub role: String,
}

/// An instance to remove, fixed at accept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub hostaddr: String,
    pub port: i64,
    pub agent_port: i64,
    pub shard: i64,
}

/// What every node of a cluster is made with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    pub fullsync_level: i64,
    pub innodb_size: i64,
    pub max_connections: i64,
    /// `cpu_cores` with `cpu_limit_node` (or `cpu_limit_mode`): each
    /// node's CPU limit (0: none).
    #[serde(default)]
    pub cpu_cores: i64,
    /// `quota` or `share`; empty: no limit.
    #[serde(default)]
    pub cpu_limit_mode: String,
    /// Its nodes have the manager's own account ([`CONTROL_USER`]) and
    /// the administrative one obeys `read_only` (clusters made before
    /// failover was built have neither).
    #[serde(default)]
    pub control_account: bool,
    /// `enable_backup_encrypt` with `backup_encrypt_key`: the key, sealed
    /// like the passwords (empty: backups are not encrypted).
    #[serde(default)]
    pub backup_key_sealed: String,
}

impl NodeSettings {
    /// A cluster's, from its row (defaults for what an older row lacks).
    pub fn of(c: &ClusterRow) -> NodeSettings {
        let v: Value = serde_json::from_str(&c.settings).unwrap_or(Value::Null);
        NodeSettings {
            fullsync_level: v["fullsync_level"].as_i64().unwrap_or(0),
            innodb_size: v["innodb_size"].as_i64().unwrap_or(128),
            max_connections: v["max_connections"].as_i64().unwrap_or(1000),
            cpu_cores: v["cpu_cores"].as_i64().unwrap_or(0),
            cpu_limit_mode: v["cpu_limit_mode"].as_str().unwrap_or("").to_string(),
            control_account: v["control_account"].as_bool().unwrap_or(false),
            backup_key_sealed: v["backup_key_sealed"].as_str().unwrap_or("").to_string(),
        }
    }

    /// The CPU limit every node gets at install.
    pub fn cgroup(&self) -> Option<crate::protocol::Cgroup> {
        if self.cpu_cores <= 0 || self.cpu_limit_mode.is_empty() {
            return None;
        }
        Some(crate::protocol::Cgroup {
            cpu_cores: self.cpu_cores as u32,
            mode: crate::protocol::CgroupMode::parse(&self.cpu_limit_mode).ok()?,
        })
    }
}

/// The steps that make shards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum MakeStep {
    /// The cluster's row (a new cluster) and one row per placement.
    Reserve,
    Install {
        shard: i64,
        node: i64,
    },
    /// The shard's replicas follow its primary by GTID.
    Replicate {
        shard: i64,
    },
    /// The cluster and its instances marked running, its shard count set.
    Register,
    /// A compute node: its row, then its instance (Spider loaded).
    InstallComp {
        comp_id: i64,
    },
    /// A compute node given its Spider servers and every table, then
    /// running.
    AttachComp {
        comp_id: i64,
    },
}

impl MakeStep {
    pub fn label(&self) -> String {
        match self {
            MakeStep::Reserve => "reserve".into(),
            MakeStep::Install { shard, node } => format!("install:{shard}:{node}"),
            MakeStep::Replicate { shard } => format!("replicate:{shard}"),
            MakeStep::Register => "register".into(),
            MakeStep::InstallComp { comp_id } => format!("install_comp:{comp_id}"),
            MakeStep::AttachComp { comp_id } => format!("attach_comp:{comp_id}"),
        }
    }

    /// `steps` with each compute node installed before `register` and
    /// attached after it.
    pub fn with_comps(
        mut steps: Vec<MakeStep>,
        comps: &[super::comps::CompPlacement],
    ) -> Vec<MakeStep> {
        let at = steps
            .iter()
            .position(|s| *s == MakeStep::Register)
            .unwrap_or(steps.len());
        for (i, c) in comps.iter().enumerate() {
            steps.insert(at + i, MakeStep::InstallComp { comp_id: c.comp_id });
        }
        steps.extend(
            comps
                .iter()
                .map(|c| MakeStep::AttachComp { comp_id: c.comp_id }),
        );
        steps
    }

    /// Reserve, install each placement, replicate each shard (when it has
    /// replicas), register.
    pub fn plan(placements: &[Placement], replicate: bool) -> Vec<MakeStep> {
        let mut steps = vec![MakeStep::Reserve];
        steps.extend(placements.iter().map(|p| MakeStep::Install {
            shard: p.shard,
            node: p.node,
        }));
        if replicate {
            let mut shards: Vec<i64> = placements.iter().map(|p| p.shard).collect();
            shards.dedup();
            steps.extend(
                shards
                    .into_iter()
                    .map(|shard| MakeStep::Replicate { shard }),
            );
        }
        steps.push(MakeStep::Register);
        steps
    }
}

/// The steps that remove instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum RemoveStep {
    Uninstall { hostaddr: String, port: i64 },
    Unregister,
}

impl RemoveStep {
    pub fn label(&self) -> String {
        match self {
            RemoveStep::Uninstall { hostaddr, port } => format!("uninstall:{hostaddr}:{port}"),
            RemoveStep::Unregister => "unregister".into(),
        }
    }
}

/// What the steps after `reserve` need of a plan that makes shards.
pub struct Making<'a> {
    pub cluster_id: &'a str,
    pub settings: &'a NodeSettings,
    pub placements: &'a [Placement],
    /// The cluster's shard count once done.
    pub shards_after: i64,
    /// Compute nodes made with it.
    pub comps: &'a [super::comps::CompPlacement],
}

impl Making<'_> {
    /// Runs `install`, `replicate` or `register` (`reserve` is the kind's
    /// own).
    pub async fn run(&self, ctx: &StepCtx<'_>, step: &MakeStep) -> Result<Value, StepError> {
        match step {
            MakeStep::Reserve => Err(StepError::definite("reserve is the job type's own step")),
            MakeStep::Install { shard, node } => {
                let p = placement(self.placements, *shard, *node)?;
                install(ctx, self.cluster_id, self.settings, p).await
            }
            MakeStep::Replicate { shard } => {
                replicate(ctx, self.cluster_id, self.placements, *shard).await
            }
            MakeStep::Register => {
                // Every node started read-only: each new shard's primary is
                // turned writable now that it is registered as such.
                let (user, pw) = password(ctx.env, self.cluster_id).await?;
                for p in self.placements.iter().filter(|p| p.role == "primary") {
                    let mut conn = connect(&p.hostaddr, p.port, &user, &pw).await?;
                    super::shard::open_primary(&mut conn, self.settings.fullsync_level > 0)
                        .await
                        .map_err(|e| sql_error(&format!("{}:{}", p.hostaddr, p.port), &e))?;
                    let _ = conn.disconnect().await;
                }
                ctx.env
                    .store
                    .set_shards(&ctx.holder(), self.cluster_id, self.shards_after)
                    .await?;
                ctx.env
                    .store
                    .set_cluster_status(&ctx.holder(), self.cluster_id, "running")
                    .await?;
                Ok(Value::Null)
            }
            MakeStep::InstallComp { comp_id } => {
                super::comps::install(ctx, self.cluster_id, self.settings, self.comp(*comp_id)?)
                    .await
            }
            MakeStep::AttachComp { comp_id } => {
                let c = self.comp(*comp_id)?;
                super::comps::attach(ctx, self.cluster_id, &c.hostaddr, c.port).await
            }
        }
    }

    fn comp(&self, id: i64) -> Result<&super::comps::CompPlacement, StepError> {
        self.comps
            .iter()
            .find(|c| c.comp_id == id)
            .ok_or_else(|| StepError::definite(format!("no compute node {id} in the plan")))
    }

    /// Undoes an `install` (the others leave nothing of their own).
    pub async fn undo(&self, ctx: &StepCtx<'_>, step: &MakeStep) -> Result<(), StepError> {
        if let MakeStep::Install { shard, node } = step {
            let p = placement(self.placements, *shard, *node)?;
            uninstall(ctx, &p.hostaddr, p.agent_port, p.port, "undo-").await?;
        }
        if let MakeStep::InstallComp { comp_id } = step {
            let c = self.comp(*comp_id)?;
            super::comps::uninstall(ctx, &c.hostaddr, c.agent_port, c.port, "undo-").await?;
        }
        Ok(())
    }
}

pub fn store_err(e: StoreError) -> Refused {
    Refused {
        code: codes::STEP_FAILED,
        info: format!("the manager's store: {e}"),
    }
}

pub async fn cluster(env: &Env, id: &str) -> Result<ClusterRow, Refused> {
    env.store
        .clusters()
        .await
        .map_err(store_err)?
        .into_iter()
        .find(|c| c.cluster_id == id)
        .ok_or_else(|| Refused {
            code: codes::NOT_FOUND,
            info: format!("no cluster {id} (get_cluster_summary lists them)"),
        })
}

/// The node `host:port` of cluster `id` (in `shard` when one is named),
/// refused naming what does not match.
pub fn node_of<'a>(
    all: &'a [InstanceRow],
    id: &str,
    host: &str,
    port: i64,
    shard: Option<i64>,
) -> Result<&'a InstanceRow, Refused> {
    let node = all
        .iter()
        .find(|i| i.cluster_id == id && i.hostaddr == host && i.port == port)
        .ok_or_else(|| Refused {
            code: codes::NOT_FOUND,
            info: format!("cluster {id} has no node {host}:{port} (get_cluster_detail lists them)"),
        })?;
    match shard {
        Some(s) if s != node.shard => Err(Refused {
            code: codes::NOT_FOUND,
            info: format!(
                "node {host}:{port} is in shard {} of cluster {id}, not shard {s}",
                node.shard
            ),
        }),
        _ => Ok(node),
    }
}

/// Where new nodes go: shards `first..first + shards`, `nodes` each,
/// round-robin over the running storage machines (`wanted` when named), on
/// the lowest port of each machine's range that nothing holds.
pub async fn place(
    env: &Env,
    wanted: &[String],
    first: i64,
    shards: i64,
    nodes: i64,
) -> Result<Vec<Placement>, Refused> {
    let all = env.store.machines().await.map_err(store_err)?;
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
        .filter(|x| super::comps::has_type(&x.machine_type, "storage") && x.node_stats == "running")
        .filter(|x| wanted.is_empty() || wanted.contains(&x.hostaddr))
        .collect();
    if machines.is_empty() {
        return Err(Refused::bad(
            "no running storage machine to place the nodes on (create_machine, set_machine node_stats running)",
        ));
    }
    let taken = env.store.taken_ports().await.map_err(store_err)?;
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
            placements.push(Placement {
                shard: s,
                node: n + 1,
                hostaddr: machine.hostaddr.clone(),
                port,
                agent_port: machine.agent_port,
                datadir: machine.datadir.clone(),
                role: if n == 0 { "primary" } else { "replica" }.into(),
            });
        }
    }
    Ok(placements)
}

/// The `(machine, port)` keys a set of new nodes claims in the store.
pub fn port_claims(placements: &[Placement]) -> Vec<(String, i64)> {
    placements
        .iter()
        .map(|p| (p.hostaddr.clone(), p.port))
        .collect()
}

/// The resources a set of new nodes holds: each instance.
pub fn instance_resources(placements: &[Placement]) -> Vec<Resource> {
    placements
        .iter()
        .map(|p| Resource::Instance(p.hostaddr.clone(), p.port))
        .collect()
}

/// The cluster's administrative account (the clients'), its password
/// opened from the store.
pub async fn admin(env: &Env, id: &str) -> Result<(String, Secret), StepError> {
    Ok(admin_and_settings(env, id).await?.0)
}

async fn admin_and_settings(
    env: &Env,
    id: &str,
) -> Result<((String, Secret), NodeSettings), StepError> {
    let c = env
        .store
        .clusters()
        .await?
        .into_iter()
        .find(|c| c.cluster_id == id)
        .ok_or_else(|| StepError::definite(format!("cluster {id} has no row")))?;
    let pw = env
        .store
        .meta()
        .open_secret(&format!("cm_clusters/{id}"), "admin", &c.admin_password)
        .map_err(|e| StepError::definite(e.to_string()))?;
    let settings = NodeSettings::of(&c);
    Ok(((c.admin_user, pw), settings))
}

/// The account the manager works on a cluster's nodes with: its own
/// ([`CONTROL_USER`], the only one that may turn a node writable) on a
/// cluster made with one, else the administrative account.
pub async fn password(env: &Env, id: &str) -> Result<(String, Secret), StepError> {
    let ((user, pw), settings) = admin_and_settings(env, id).await?;
    Ok(manager_account(id, user, pw, &settings))
}

/// [`password`] of a cluster's row already read.
pub fn account_of(env: &Env, c: &ClusterRow) -> Result<(String, Secret), StepError> {
    let id = &c.cluster_id;
    let pw = env
        .store
        .meta()
        .open_secret(&format!("cm_clusters/{id}"), "admin", &c.admin_password)
        .map_err(|e| StepError::definite(e.to_string()))?;
    Ok(manager_account(
        id,
        c.admin_user.clone(),
        pw,
        &NodeSettings::of(c),
    ))
}

fn manager_account(
    id: &str,
    user: String,
    pw: Secret,
    settings: &NodeSettings,
) -> (String, Secret) {
    if settings.control_account {
        (CONTROL_USER.to_string(), control_password(&pw, id))
    } else {
        (user, pw)
    }
}

/// The manager's own account on the nodes of a cluster made with one.
pub const CONTROL_USER: &str = "ccr_control";

/// The control account's password, derived from the administrative one
/// (HMAC-SHA-256), so that no second secret is kept. It keeps clients'
/// sessions from bypassing `read_only` by mistake; it is no barrier to a
/// holder of the administrative account, which may alter any account.
fn control_password(admin: &Secret, id: &str) -> Secret {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, admin.expose().as_bytes());
    let tag = ring::hmac::sign(&key, format!("ccr-syncer control account {id}").as_bytes());
    Secret::new(
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

/// The cluster's backup key, when its backups are encrypted.
pub async fn backup_key(env: &Env, id: &str) -> Result<Option<Secret>, StepError> {
    let Some(c) = env
        .store
        .clusters()
        .await?
        .into_iter()
        .find(|c| c.cluster_id == id)
    else {
        return Ok(None);
    };
    let sealed = NodeSettings::of(&c).backup_key_sealed;
    if sealed.is_empty() {
        return Ok(None);
    }
    env.store
        .meta()
        .open_secret(&format!("cm_clusters/{id}"), "backup_key", &sealed)
        .map(Some)
        .map_err(|e| StepError::definite(e.to_string()))
}

/// A connection to an instance with the administrative account; not
/// reaching it is transient.
pub async fn connect(
    host: &str,
    port: i64,
    user: &str,
    pw: &Secret,
) -> Result<mysql_async::Conn, StepError> {
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
        .map_err(|e| StepError::transient(format!("{host}:{port}: {e}")))
}

/// `reserve`: one row per placement, each written once however often the
/// step runs.
pub async fn reserve_instances(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    placements: &[Placement],
) -> Result<(), StepError> {
    for p in placements {
        ctx.env
            .store
            .insert_instance(
                &ctx.holder(),
                &InstanceRow {
                    hostaddr: p.hostaddr.clone(),
                    port: p.port,
                    cluster_id: cluster_id.into(),
                    shard: p.shard,
                    node: p.node,
                    role: p.role.clone(),
                    state: "reserved".into(),
                    note: String::new(),
                },
            )
            .await?;
    }
    Ok(())
}

/// Undoes [`reserve_instances`].
pub async fn unreserve_instances(
    ctx: &StepCtx<'_>,
    placements: &[Placement],
) -> Result<(), StepError> {
    for p in placements {
        ctx.env
            .store
            .delete_instance(&ctx.holder(), &p.hostaddr, p.port)
            .await?;
    }
    Ok(())
}

/// The placement of `install:SHARD:NODE`.
pub fn placement(placements: &[Placement], shard: i64, node: i64) -> Result<&Placement, StepError> {
    placements
        .iter()
        .find(|p| p.shard == shard && p.node == node)
        .ok_or_else(|| StepError::definite(format!("no placement for shard {shard} node {node}")))
}

/// `install:S:N`: the placement's instance, by its machine's agent.
pub async fn install(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    settings: &NodeSettings,
    p: &Placement,
) -> Result<Value, StepError> {
    let request = Request::InstallMysql(Box::new(
        install_request(ctx, cluster_id, settings, p).await?,
    ));
    ctx.env
        .agents
        .operate(ctx, &p.hostaddr, p.agent_port, request)
        .await
}

/// What a new node is installed with: its server id (unique in its
/// cluster: node numbers run 1 to 9), read-only and semi-sync as its role
/// and the cluster's settings say, the cluster's account and CPU limit.
pub async fn install_request(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    settings: &NodeSettings,
    p: &Placement,
) -> Result<InstallMysql, StepError> {
    let (user, pw) = admin(ctx.env, cluster_id).await?;
    let control = match settings.control_account {
        true => Some((CONTROL_USER.to_string(), control_password(&pw, cluster_id))),
        false => None,
    };
    let replica = p.role == "replica";
    let semi_sync = match (settings.fullsync_level > 0, replica) {
        (false, _) => SemiSync::None,
        (true, false) => SemiSync::Master,
        (true, true) => SemiSync::Slave,
    };
    let cluster: i64 = cluster_id.parse().unwrap_or(0);
    let server_id = (cluster % 100_000) * 1000 + p.shard * 10 + p.node;
    Ok(InstallMysql {
        key: super::agents::Agents::key(ctx, ""),
        port: p.port as u16,
        datadir: p.datadir.clone().into(),
        server_id: server_id as u64,
        innodb_size_mb: settings.innodb_size as u64,
        max_connections: settings.max_connections as u64,
        // Every node starts read-only: the manager turns the shard's
        // primary writable once it is registered as such.
        read_only: true,
        semi_sync,
        admin: Some((user, pw)),
        control,
        cgroup: settings.cgroup(),
        spider: false,
    })
}

/// Removes an instance through its agent (`prefix` tells an undo's
/// operation from the step's own).
pub async fn uninstall(
    ctx: &StepCtx<'_>,
    host: &str,
    agent_port: i64,
    port: i64,
    prefix: &str,
) -> Result<Value, StepError> {
    let request = Request::UninstallMysql {
        key: super::agents::Agents::key(ctx, prefix),
        port: port as u16,
    };
    ctx.env.agents.operate(ctx, host, agent_port, request).await
}

/// `replicate:SHARD`: the shard's replicas follow its primary by GTID.
pub async fn replicate(
    ctx: &StepCtx<'_>,
    cluster_id: &str,
    placements: &[Placement],
    shard: i64,
) -> Result<Value, StepError> {
    let (user, pw) = password(ctx.env, cluster_id).await?;
    let in_shard: Vec<&Placement> = placements.iter().filter(|p| p.shard == shard).collect();
    let primary = in_shard
        .iter()
        .find(|p| p.role == "primary")
        .ok_or_else(|| StepError::definite("the shard has no primary"))?;
    let (ph, pp) = (&primary.hostaddr, primary.port);
    for r in in_shard.iter().filter(|p| p.role == "replica") {
        let (rh, rp) = (&r.hostaddr, r.port);
        let mut conn = connect(rh, rp, &user, &pw).await?;
        let change = db::change_master(ph, pp, &user, &pw);
        for sql in ["STOP SLAVE", change.as_str(), "START SLAVE"] {
            conn.query_drop(sql)
                .await
                .map_err(|e| sql_error(&format!("{rh}:{rp}"), &e))?;
        }
        wait_replicating(&mut conn, rh, rp).await?;
        let _ = conn.disconnect().await;
        ctx.progress.touch();
    }
    Ok(json!({"primary": format!("{ph}:{pp}")}))
}

/// A server error is definite; a lost connection transient. Passwords
/// quoted by the server are masked.
pub fn sql_error(at: &str, e: &mysql_async::Error) -> StepError {
    let text = format!("{at}: {}", crate::redact::text(&e.to_string()));
    match e {
        mysql_async::Error::Server(_) => StepError::Definite(text),
        _ => StepError::Transient(text),
    }
}

async fn wait_replicating(
    conn: &mut mysql_async::Conn,
    host: &str,
    port: i64,
) -> Result<(), StepError> {
    for _ in 0..60 {
        let row: Option<mysql_async::Row> = conn
            .query_first("SHOW SLAVE STATUS")
            .await
            .map_err(|e| sql_error(&format!("{host}:{port}"), &e))?;
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
                return Err(StepError::definite(format!(
                    "{host}:{port} does not replicate: {err}"
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(StepError::transient(format!(
        "{host}:{port} did not start replicating within 30 s"
    )))
}

/// Refuses to delete a shard whose primary holds user tables, naming them.
pub async fn refuse_user_tables(
    env: &Env,
    id: &str,
    shard: &[&InstanceRow],
) -> Result<(), Refused> {
    let primary = shard
        .iter()
        .find(|i| i.role == "primary")
        .or(shard.first())
        .ok_or_else(|| Refused::bad("the shard has no instance"))?;
    let (user, pw) = password(env, id).await.map_err(|e| Refused {
        code: codes::STEP_FAILED,
        info: e.to_string(),
    })?;
    let unreachable = |e: String| Refused {
        code: codes::UNREACHABLE,
        info: format!(
            "cannot check the shard for user tables: {e} (force: \"1\" deletes it unchecked)"
        ),
    };
    let mut conn = connect(&primary.hostaddr, primary.port, &user, &pw)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let tables: Vec<String> = conn
        .query(
            "SELECT CONCAT(table_schema, '.', table_name) FROM information_schema.tables \
             WHERE table_schema NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys', \
             'ccr_sys') \
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
