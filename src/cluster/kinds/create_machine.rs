//! `create_machine` (seed 001): registers a machine once its node agent
//! answers. A host may be both a storage and a computer machine: registered
//! again with the other `machine_type`, its row carries both
//! (`storage,computer`), and its settings stay those of the first.

use crate::cluster::emit::{check_dir, check_host, codes, port_range, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::store_err;
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::store::cluster::MachineRow;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct CreateMachine;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
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
    pub agent_port: i64,
    /// The machine is registered already with another type: this one is
    /// added to it (`previous` is what it had).
    #[serde(default)]
    pub previous_type: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    /// Its agent answers `get_info`.
    ReachAgent,
    RegisterMachine,
}

#[async_trait::async_trait]
impl Kind for CreateMachine {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "create_machine"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let host = p.need("hostaddr")?;
        check_host("hostaddr", &host)?;
        let machine_type = p.choice("machine_type", &["storage", "computer"])?;
        let existing = env
            .store
            .machines()
            .await
            .map_err(store_err)?
            .into_iter()
            .find(|m| m.hostaddr == host);
        if let Some(m) = &existing {
            if crate::cluster::comps::has_type(&m.machine_type, &machine_type) {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "machine {host} exists already as {} (delete_machine first to register it again)",
                        m.machine_type
                    ),
                });
            }
        }
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
        let plan = Plan {
            machine_type,
            port_range: range,
            rack_id: p.text("rack_id")?.unwrap_or_default(),
            logdir: dir("logdir")?,
            wal_log_dir: dir("wal_log_dir")?,
            comp_datadir: dir("comp_datadir")?,
            datadir,
            total_mem: p.int("total_mem", 1, 1 << 40)?.unwrap_or(0),
            total_cpu_cores: p.int("total_cpu_cores", 1, 1 << 20)?.unwrap_or(0),
            agent_port: p
                .int("agent_port", 1, 65535)?
                .unwrap_or(env.agents.default_port as i64),
            hostaddr: host.clone(),
            previous_type: existing.map(|m| m.machine_type),
        };
        Ok(Planned::new(
            plan,
            vec![Step::ReachAgent, Step::RegisterMachine],
            vec![Resource::Machine(host)],
        ))
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::ReachAgent => "reach_agent",
            Step::RegisterMachine => "register_machine",
        }
        .into()
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        match step {
            // Registering checks that the agent answers now: one that
            // cannot be reached is a refusal, not an outage to wait out.
            Step::ReachAgent => {
                let info = ctx
                    .env
                    .agents
                    .info(&plan.hostaddr, plan.agent_port)
                    .await
                    .map_err(|e| StepError::Definite(e.to_string()))?;
                Ok(json!({"cores": info.cores, "total_mem_mb": info.total_mem_mb}))
            }
            Step::RegisterMachine if plan.previous_type.is_some() => {
                let before = plan.previous_type.clone().unwrap_or_default();
                ctx.env
                    .store
                    .set_machine_type(
                        &ctx.holder(),
                        &plan.hostaddr,
                        &format!("{before},{}", plan.machine_type),
                    )
                    .await?;
                Ok(Value::Null)
            }
            Step::RegisterMachine => {
                ctx.env
                    .store
                    .insert_machine(
                        &ctx.holder(),
                        &MachineRow {
                            hostaddr: plan.hostaddr.clone(),
                            machine_type: plan.machine_type.clone(),
                            port_range: plan.port_range.clone(),
                            rack_id: plan.rack_id.clone(),
                            datadir: plan.datadir.clone(),
                            logdir: plan.logdir.clone(),
                            wal_log_dir: plan.wal_log_dir.clone(),
                            comp_datadir: plan.comp_datadir.clone(),
                            total_mem: plan.total_mem,
                            total_cpu_cores: plan.total_cpu_cores,
                            node_stats: "running".into(),
                            agent_port: plan.agent_port,
                            last_seen_at: 0,
                        },
                    )
                    .await?;
                Ok(Value::Null)
            }
        }
    }

    async fn undo(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<(), StepError> {
        if let Step::RegisterMachine = step {
            match &plan.previous_type {
                Some(before) => {
                    ctx.env
                        .store
                        .set_machine_type(&ctx.holder(), &plan.hostaddr, before)
                        .await?
                }
                None => {
                    ctx.env
                        .store
                        .delete_machine(&ctx.holder(), &plan.hostaddr)
                        .await?
                }
            }
        }
        Ok(())
    }

    fn attachment(&self, _plan: &Plan, _results: &[(Step, Value)]) -> Value {
        json!({})
    }

    fn done_info(&self) -> String {
        "create machine successfully".into()
    }
}
