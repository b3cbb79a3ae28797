//! `create_cluster` (seed 001, 2.1): a cluster of `shards` shards of
//! `nodes` MariaDB instances each, one primary and GTID replicas (`rbr`,
//! semi-synchronous when `fullsync_level` > 0) or one node (`no_rep`).
//!
//! The seed's own example is taken as written: without `admin_password`
//! one is generated, sealed in the store like the others and given once,
//! in the job's first `done` answer; a `max_connections` below MariaDB's
//! minimum of 10 is raised to 10 and the `accept` answer says so; fields
//! Klustron's clients add (`cpu_limit_mode`, `data_storage_MB`, …) are
//! checked and accepted. `comps` compute nodes (Spider, on the machines of
//! `computer_iplists` or any running `computer` machine) are made with it.
//! What is not built (`ha_mode` `mgr`, proxysql) is refused naming what to
//! send instead.

use crate::cluster::comps::CompPlacement;
use crate::cluster::emit::{codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, MakeStep, NodeSettings, Placement};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::secret::Secret;
use crate::store::cluster::{ClusterRow, CLUSTER_ID, SHARD_ID};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct CreateCluster;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub cluster_id: String,
    pub cluster_name: String,
    pub nick_name: String,
    pub ha_mode: String,
    pub shards: i64,
    pub nodes: i64,
    #[serde(flatten)]
    pub settings: NodeSettings,
    pub admin_user: String,
    /// Sealed with the store's key; kept only until `reserve` stored it
    /// with the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_sealed: Option<String>,
    /// The manager chose the password: the first `done` answer gives it.
    #[serde(default)]
    pub password_generated: bool,
    pub placements: Vec<Placement>,
    /// Its compute nodes.
    #[serde(default)]
    pub comps: Vec<CompPlacement>,
}

/// MariaDB refuses `max_connections` below this.
const MIN_CONNECTIONS: i64 = 10;

/// A password of 24 letters and digits from the system's random source.
fn generate_password() -> Result<String, Refused> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        Refused {
            code: codes::STEP_FAILED,
            info: "the system's random source failed: send admin_password".into(),
        }
    })?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// The fields Klustron's clients send that this version checks and
/// accepts (a later issue gives them a meaning).
fn check_klustron_fields(e: &Envelope) -> Result<(), Refused> {
    let p = e.paras();
    for key in [
        "max_storage_size",
        "cpu_cores",
        "rocksdb_block_cache_size_M",
        "data_storage_MB",
        "log_storage_MB",
    ] {
        p.int(key, 0, 1 << 40)?;
    }
    p.int("dbcfg", 0, 1)?;
    for key in ["cpu_limit_mode", "cpu_limit_node"] {
        if let Some(mode) = p.text(key)?.filter(|m| !m.is_empty()) {
            if mode != "share" && mode != "quota" {
                return Err(Refused::bad(format!(
                    "paras.{key}: {mode:?} is not one of share, quota"
                )));
            }
        }
    }
    p.list("computer_iplists")?;
    Ok(())
}

/// `cpu_limit_node` (the seed's name) or `cpu_limit_mode` (what
/// Klustron's own clients send): with `cpu_cores`, each node's CPU is
/// limited at install; without either, no limit.
fn cpu_limit_mode(e: &Envelope) -> Result<String, Refused> {
    let p = e.paras();
    let node = p.text("cpu_limit_node")?.filter(|m| !m.is_empty());
    let mode = p.text("cpu_limit_mode")?.filter(|m| !m.is_empty());
    Ok(node.or(mode).unwrap_or_default())
}

#[async_trait::async_trait]
impl Kind for CreateCluster {
    type Plan = Plan;
    type Step = MakeStep;

    fn name(&self) -> &'static str {
        "create_cluster"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, MakeStep>, Refused> {
        let p = e.paras();
        let ha_mode =
            match p.need("ha_mode")?.as_str() {
                "mgr" => return Err(Refused {
                    code: codes::NOT_BUILT,
                    info: "paras.ha_mode: mgr (MySQL group replication) is not built: MariaDB has \
                           none; send \"ha_mode\": \"rbr\" (one primary and semi-synchronous GTID \
                           replicas per shard) or \"no_rep\" (one node per shard)"
                        .into(),
                }),
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
        if p.text("install_proxysql")?
            .is_some_and(|c| !c.is_empty() && c != "0")
        {
            return Err(Refused {
                code: codes::NOT_BUILT,
                info: "paras.install_proxysql: proxysql is not built in this version: send \
                       \"install_proxysql\": \"0\" (clients connect to the compute nodes, listed \
                       by get_cluster_detail)"
                    .into(),
            });
        }
        let comps = p.int("comps", 0, 64)?.unwrap_or(0);
        check_klustron_fields(e)?;
        let fullsync = p.int("fullsync_level", 0, 8)?.unwrap_or(0);
        if fullsync > nodes - 1 {
            return Err(Refused::bad(format!(
                "paras.fullsync_level: {fullsync} is more than the {} replicas of a shard",
                nodes - 1
            )));
        }
        let innodb = p.int("innodb_size", 16, 1 << 20)?.unwrap_or(128);
        let mut note = String::new();
        let asked = p.int("max_connections", 1, 100_000)?.unwrap_or(1000);
        let max_connections = asked.max(MIN_CONNECTIONS);
        if asked < MIN_CONNECTIONS {
            note = format!(
                "max_connections {asked} is below MariaDB's minimum of {MIN_CONNECTIONS}: raised to {MIN_CONNECTIONS}"
            );
        }
        let admin_user = p
            .text("admin_user")?
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "clustmgr".into());
        if admin_user == nodes::CONTROL_USER {
            return Err(Refused::bad(format!(
                "paras.admin_user: {} is the manager's own account on every node: choose another name",
                nodes::CONTROL_USER
            )));
        }
        if admin_user.len() > 80
            || !admin_user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Refused::bad(
                "paras.admin_user: letters, digits and _ only, at most 80",
            ));
        }
        let (password, generated) = match p.text("admin_password")? {
            Some(pw) if pw.len() < 8 => {
                return Err(Refused::bad("paras.admin_password: at least 8 characters"))
            }
            Some(pw) => (pw, false),
            None => (generate_password()?, true),
        };
        let placements = nodes::place(env, &p.list("storage_iplists")?, 1, shards, nodes).await?;
        let existing = env
            .store
            .clusters()
            .await
            .map_err(nodes::store_err)?
            .iter()
            .filter_map(|c| c.cluster_id.parse::<i64>().ok())
            .max()
            .unwrap_or(0);
        let taken = env
            .store
            .max_id(CLUSTER_ID, "")
            .await
            .map_err(nodes::store_err)?;
        let id = existing.max(taken) + 1;
        let cluster_id = id.to_string();
        let sealed = env
            .store
            .meta()
            .seal_secret(
                &format!("cm_clusters/{id}"),
                "admin",
                &Secret::new(password),
            )
            .map_err(nodes::store_err)?;
        // Klustron's clients send both: backups sealed with the key.
        let backup_key_sealed = match (
            p.int("enable_backup_encrypt", 0, 1)?.unwrap_or(0),
            p.text("backup_encrypt_key")?.filter(|k| !k.is_empty()),
        ) {
            (1, Some(k)) if k.len() >= 8 => env
                .store
                .meta()
                .seal_secret(&format!("cm_clusters/{id}"), "backup_key", &Secret::new(k))
                .map_err(nodes::store_err)?,
            (1, Some(_)) => {
                return Err(Refused::bad(
                    "paras.backup_encrypt_key: at least 8 characters",
                ))
            }
            (1, None) => {
                return Err(Refused::bad(
                    "paras.backup_encrypt_key: needed with enable_backup_encrypt \"1\"",
                ))
            }
            _ => String::new(),
        };
        let comp_placements = if comps > 0 {
            crate::cluster::comps::place(
                env,
                &cluster_id,
                &p.list("computer_iplists")?,
                comps,
                &nodes::port_claims(&placements),
            )
            .await?
        } else {
            Vec::new()
        };
        let steps = MakeStep::with_comps(
            MakeStep::plan(&placements, ha_mode == "rbr" && nodes > 1),
            &comp_placements,
        );
        let mut resources = vec![Resource::Cluster(cluster_id.clone())];
        resources.extend(nodes::instance_resources(&placements));
        resources.extend(
            comp_placements
                .iter()
                .map(|c| Resource::Instance(c.hostaddr.clone(), c.port)),
        );
        let mut planned = Planned::new(
            Plan {
                cluster_id: cluster_id.clone(),
                cluster_name: format!("cluster_{}_{id:06}", chrono::Utc::now().timestamp()),
                nick_name: p.text("nick_name")?.unwrap_or_default(),
                ha_mode,
                shards,
                nodes,
                settings: NodeSettings {
                    fullsync_level: fullsync,
                    innodb_size: innodb,
                    max_connections,
                    cpu_cores: p.int("cpu_cores", 0, 4096)?.unwrap_or(0),
                    cpu_limit_mode: cpu_limit_mode(e)?,
                    control_account: true,
                    backup_key_sealed,
                },
                admin_user,
                admin_password_sealed: Some(sealed),
                password_generated: generated,
                placements: placements.clone(),
                comps: comp_placements.clone(),
            },
            steps,
            resources,
        );
        planned.claims.ports = nodes::port_claims(&placements);
        for c in &comp_placements {
            planned.claims.ports.push((c.hostaddr.clone(), c.port));
            planned
                .claims
                .ids
                .push((crate::store::cluster::COMP_ID, String::new(), c.comp_id));
        }
        planned.claims.ids.push((CLUSTER_ID, String::new(), id));
        for s in 1..=shards {
            planned.claims.ids.push((SHARD_ID, cluster_id.clone(), s));
        }
        planned.note = note;
        Ok(planned)
    }

    fn label(&self, step: &MakeStep) -> String {
        step.label()
    }

    async fn run(
        &self,
        ctx: &StepCtx<'_>,
        plan: &Plan,
        step: &MakeStep,
    ) -> Result<Value, StepError> {
        match step {
            MakeStep::Reserve => {
                let sealed = plan.admin_password_sealed.clone().ok_or_else(|| {
                    StepError::definite("the plan no longer holds the administrative password")
                })?;
                let settings = serde_json::to_string(&plan.settings).expect("settings serialize");
                ctx.env
                    .store
                    .insert_cluster(
                        &ctx.holder(),
                        &ClusterRow {
                            cluster_id: plan.cluster_id.clone(),
                            name: plan.cluster_name.clone(),
                            nick_name: plan.nick_name.clone(),
                            ha_mode: plan.ha_mode.clone(),
                            shards: plan.shards,
                            nodes: plan.nodes,
                            admin_user: plan.admin_user.clone(),
                            admin_password: sealed.clone(),
                            status: "creating".into(),
                            settings,
                        },
                    )
                    .await?;
                nodes::reserve_instances(ctx, &plan.cluster_id, &plan.placements).await?;
                // A generated password is handed over once, by the first
                // `done` answer (sealed until then, like the cluster's).
                Ok(if plan.password_generated {
                    json!({"admin_password_sealed": sealed})
                } else {
                    Value::Null
                })
            }
            other => making(plan).run(ctx, other).await,
        }
    }

    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &MakeStep) -> Result<(), StepError> {
        match step {
            MakeStep::Reserve => {
                ctx.env
                    .store
                    .delete_cluster(&ctx.holder(), &plan.cluster_id)
                    .await?
            }
            other => making(plan).undo(ctx, other).await?,
        }
        Ok(())
    }

    fn after(&self, plan: &mut Plan, step: &MakeStep) {
        if let MakeStep::Reserve = step {
            plan.admin_password_sealed = None;
        }
    }

    fn attachment(&self, plan: &Plan, results: &[(MakeStep, Value)]) -> Value {
        let list: Vec<Value> = plan.comps.iter().map(CompPlacement::json).collect();
        let mut a = json!({"cluster_id": plan.cluster_id, "cluster_name": plan.cluster_name,
                           "shards": plan.shards.to_string(), "comps": plan.comps.len().to_string(),
                           "list_comp": list});
        if let Some(sealed) = results
            .iter()
            .find(|(s, _)| *s == MakeStep::Reserve)
            .and_then(|(_, r)| r["admin_password_sealed"].as_str())
        {
            a["admin_password_sealed"] = json!(sealed);
        }
        a
    }

    fn done_info(&self) -> String {
        "create cluster successfully".into()
    }

    fn shown(&self, plan: &Plan) -> Value {
        let mut shown = plan.clone();
        shown.admin_password_sealed = None;
        serde_json::to_value(shown).unwrap_or(Value::Null)
    }
}

fn making(plan: &Plan) -> nodes::Making<'_> {
    nodes::Making {
        cluster_id: &plan.cluster_id,
        settings: &plan.settings,
        placements: &plan.placements,
        shards_after: plan.shards,
        comps: &plan.comps,
    }
}
