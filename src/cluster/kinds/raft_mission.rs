//! `raft_mission` (seed 001, 9.x): the group of syncers' leadership and
//! members (`transfer_leader`, `add_peer`, `remove_peer`).

use crate::cluster::emit::{Envelope, Refused};
use crate::cluster::kind::{Kind, Planned, StepCtx, StepError};
use crate::cluster::resource::Resource;
use crate::cluster::Env;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub struct RaftMission;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub task_type: Task,
    pub peer: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    TransferLeader,
    AddPeer,
    RemovePeer,
}

#[async_trait::async_trait]
impl Kind for RaftMission {
    type Plan = Plan;
    type Step = Task;

    fn name(&self) -> &'static str {
        "raft_mission"
    }

    async fn plan(&self, _env: &Env, e: &Envelope) -> Result<Planned<Plan, Task>, Refused> {
        let p = e.paras();
        let task = match p
            .choice("task_type", &["transfer_leader", "add_peer", "remove_peer"])?
            .as_str()
        {
            "transfer_leader" => Task::TransferLeader,
            "add_peer" => Task::AddPeer,
            _ => Task::RemovePeer,
        };
        let peer = if task == Task::TransferLeader {
            p.need("target_leader")?
        } else {
            p.need("peer")?
        };
        Ok(Planned::new(
            Plan {
                task_type: task,
                peer,
            },
            vec![task],
            vec![Resource::Group],
        ))
    }

    fn label(&self, step: &Task) -> String {
        match step {
            Task::TransferLeader => "transfer_leader",
            Task::AddPeer => "add_peer",
            Task::RemovePeer => "remove_peer",
        }
        .into()
    }

    async fn run(&self, ctx: &StepCtx<'_>, plan: &Plan, step: &Task) -> Result<Value, StepError> {
        let group = &ctx.env.group;
        let peer = plan.peer.as_str();
        let refused = |e: crate::group::GroupError| StepError::Definite(e.to_string());
        match step {
            Task::TransferLeader => group
                .transfer_leadership(peer)
                .await
                .map(|term| json!({"leader": peer, "term": term}))
                .map_err(refused),
            Task::AddPeer => group
                .add_member(peer, peer, crate::store::group::NORMAL)
                .await
                .map(|()| json!({"added": peer}))
                .map_err(refused),
            Task::RemovePeer => group
                .remove_member(peer)
                .await
                .map(|jobs| json!({"removing": peer, "jobs_to_move": jobs}))
                .map_err(refused),
        }
    }

    fn attachment(&self, _plan: &Plan, results: &[(Task, Value)]) -> Value {
        results
            .first()
            .map(|(_, r)| r.clone())
            .unwrap_or(Value::Null)
    }

    fn done_info(&self) -> String {
        "raft mission done".into()
    }
}
