//! `update_instance_cgroup` (seed 001, 2.10): an instance's CPU limit, set
//! by its machine's agent in a cgroup of the instance's own (cgroup v2 or
//! v1, as the machine has): `cgroup_mode` `quota` is a hard CFS quota of
//! `cpu_cores` CPUs, `share` a weight in proportion. The agent keeps it
//! across instance and agent restarts. `type` `pg` (a compute node) is
//! refused: this version has none.

use crate::cluster::emit::{check_host, codes, Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::nodes::{self, Target};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use crate::protocol::{Cgroup, CgroupMode, Request};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct UpdateInstanceCgroup;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub target: Target,
    pub cpu_cores: u32,
    pub cgroup_mode: CgroupMode,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    Apply,
}

#[async_trait::async_trait]
impl Kind for UpdateInstanceCgroup {
    type Plan = Plan;
    type Step = Step;

    fn name(&self) -> &'static str {
        "update_instance_cgroup"
    }

    async fn plan(&self, env: &Env, e: &Envelope) -> Result<Planned<Plan, Step>, Refused> {
        let p = e.paras();
        let ip = p.need("ip")?;
        check_host("ip", &ip)?;
        let port = p.need_int("port", 1, 65535)?;
        match p.text("type")?.unwrap_or_else(|| "mysql".into()).as_str() {
            "mysql" | "" => {}
            "pg" => {
                return Err(Refused {
                    code: codes::NOT_BUILT,
                    info: "paras.type: pg (a compute node) is not built in this version: send \
                           \"type\": \"mysql\" for a storage node"
                        .into(),
                })
            }
            other => {
                return Err(Refused::bad(format!(
                    "paras.type: {other:?} is not one of mysql, pg"
                )))
            }
        }
        let cpu_cores = p.need_int("cpu_cores", 1, 4096)? as u32;
        let cgroup_mode = CgroupMode::parse(&p.text("cgroup_mode")?.unwrap_or_default())
            .map_err(|e| Refused::bad(format!("paras.{e}")))?;
        let all = env.store.instances().await.map_err(nodes::store_err)?;
        let node = all
            .iter()
            .find(|i| i.hostaddr == ip && i.port == port)
            .ok_or_else(|| Refused {
                code: codes::NOT_FOUND,
                info: format!("no managed instance {ip}:{port} (get_cluster_detail lists them)"),
            })?;
        let target = super::delete_cluster::targets(env, &[node])
            .await?
            .remove(0);
        Ok(Planned::new(
            Plan {
                target,
                cpu_cores,
                cgroup_mode,
            },
            vec![Step::Apply],
            vec![Resource::Instance(ip, port)],
        ))
    }

    fn label(&self, _step: &Step) -> String {
        "apply".into()
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, _step: &Step) -> Result<Value, StepError> {
        let t = &plan.target;
        let request = Request::SetCgroup {
            key: crate::cluster::agents::Agents::key(ctx, ""),
            port: t.port as u16,
            cgroup: Some(Cgroup {
                cpu_cores: plan.cpu_cores,
                mode: plan.cgroup_mode,
            }),
        };
        ctx.env
            .agents
            .operate(ctx, &t.hostaddr, t.agent_port, request)
            .await
    }

    fn attachment(&self, plan: &Plan, results: &[(Step, Value)]) -> Value {
        let cgroup = results
            .first()
            .map_or(Value::Null, |(_, r)| r["cgroup"].clone());
        json!({"ip": plan.target.hostaddr, "port": plan.target.port.to_string(),
               "cpu_cores": plan.cpu_cores.to_string(),
               "cgroup_mode": plan.cgroup_mode.as_str(), "cgroup": cgroup})
    }

    fn done_info(&self) -> String {
        "update instance cgroup successfully".into()
    }
}
