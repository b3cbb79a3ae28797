//! `control_instance` (as Klustron's clients send it: `hostaddr`, `port`,
//! `machine_type`, `control` `start` / `stop` / `restart`): an instance
//! started, stopped or restarted by its machine's agent. A deliberate stop
//! is kept: auto pullup leaves the instance down until it is started again.
//! A shard's primary stopped this way fails over like a dead one (its agent
//! says `mariadbd` is not running).

use crate::cluster::emit::{check_host, codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, Target};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::protocol::Request;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct ControlInstance;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub target: Target,
    pub control: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Stop,
    Start,
}

#[async_trait::async_trait]
impl Kind for ControlInstance {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "control_instance"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let host = p.need("hostaddr")?;
        check_host("hostaddr", &host)?;
        let port = p.need_int("port", 1, 65535)?;
        let computer = match p
            .text("machine_type")?
            .unwrap_or_else(|| "storage".into())
            .as_str()
        {
            "storage" | "" => false,
            "computer" => true,
            other => {
                return Err(Refused::bad(format!(
                    "paras.machine_type: {other:?} is not one of storage, computer"
                )))
            }
        };
        let control = p.choice("control", &["start", "stop", "restart"])?;
        let target = if computer {
            // A compute node: its agent starts and stops it like any instance.
            let c = env
                .store
                .comps()
                .await
                .map_err(nodes::store_err)?
                .into_iter()
                .find(|c| c.hostaddr == host && c.port == port)
                .ok_or_else(|| Refused {
                    code: codes::NOT_FOUND,
                    info: format!(
                        "no compute node {host}:{port} (get_cluster_detail's list_comp lists them)"
                    ),
                })?;
            let row = crate::store::cluster::InstanceRow {
                hostaddr: c.hostaddr,
                port: c.port,
                cluster_id: c.cluster_id,
                shard: -1,
                ..Default::default()
            };
            super::delete_cluster::targets(env, &[&row])
                .await?
                .remove(0)
        } else {
            let all = env.store.instances().await.map_err(nodes::store_err)?;
            let node = all
                .iter()
                .find(|i| i.hostaddr == host && i.port == port)
                .ok_or_else(|| Refused {
                    code: codes::NOT_FOUND,
                    info: format!(
                        "no managed instance {host}:{port} (get_cluster_detail lists them)"
                    ),
                })?;
            super::delete_cluster::targets(env, &[node])
                .await?
                .remove(0)
        };
        let steps = match control.as_str() {
            "start" => vec![Step::Start],
            "stop" => vec![Step::Stop],
            _ => vec![Step::Stop, Step::Start],
        };
        Ok(Planned::new(
            Plan { target, control },
            steps,
            vec![Resource::Instance(host, port)],
        ))
    }

    fn label(&self, step: &Step) -> String {
        match step {
            Step::Stop => "stop",
            Step::Start => "start",
        }
        .into()
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Step) -> Result<Value, StepError> {
        let t = &plan.target;
        let key = crate::cluster::agents::Agents::key(ctx, "");
        let port = t.port as u16;
        let request = match step {
            Step::Stop => Request::StopMysql { key, port },
            Step::Start => Request::StartMysql { key, port },
        };
        ctx.env
            .agents
            .operate(ctx, &t.hostaddr, t.agent_port, request)
            .await
    }

    fn attachment(&self, plan: &Plan, results: &[(Step, Value)]) -> Value {
        let state = results
            .last()
            .map_or(Value::Null, |(_, r)| r["state"].clone());
        json!({"hostaddr": plan.target.hostaddr, "port": plan.target.port.to_string(),
               "control": plan.control, "state": state})
    }

    fn done_info(&self) -> String {
        "control instance successfully".into()
    }
}
