//! The cluster manager of seed 001: `POST /HttpService/Emit` on the
//! service's API port. Asynchronous job types are stored as jobs
//! ([`jobs`]) and answered `accept`; `get_status` follows them. Synchronous
//! ones answer `done` with their attachment at once. A refused request is
//! answered `failed` with a specific `error_info` and creates nothing.
//!
//! Jobs run on one member of a group: the leader (any member of a group of
//! one), one job at a time in the order they were accepted, so jobs on one
//! machine or cluster never interleave. A manager that starts (or becomes
//! the leader) resumes every unfinished job at its step.
//!
//! It names no module of the CCR control plane (`job`, `api`): the API
//! hands it bodies, it hands back answers.

mod clusters;
pub mod emit;
mod jobs;
mod machines;
mod metrics;
mod steps;
mod views;

use crate::group::Group;
use crate::store::{MetaStore, StoreError};
use emit::{codes, Envelope, Refused};
use jobs::{Job, Jobs, Plan, Step, Steps};
use machines::Machines;
use metrics::ClusterMetrics;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

/// Asynchronous job types built so far.
const ASYNC: &[&str] = &[
    "create_machine",
    "delete_machine",
    "set_machine",
    "create_cluster",
    "add_shards",
    "delete_shard",
    "delete_shards",
    "delete_cluster",
    "raft_mission",
];
/// Synchronous ones.
const SYNC: &[&str] = &[
    "get_status",
    "list_jobs",
    "cancel_job",
    "get_machine_summary",
    "get_cluster_summary",
    "get_cluster_detail",
    "get_variable",
    "get_meta_mode",
    "get_backup_storage",
];
/// Seed job types not built in this version: refused saying so.
const NOT_BUILT: &[&str] = &[
    "add_comps",
    "delete_comp",
    "add_nodes",
    "delete_node",
    "delete_nodes",
    "rebuild_node",
    "update_instance_cgroup",
    "manual_backup_cluster",
    "cluster_restore",
    "get_expand_table_list",
    "expand_cluster",
    "repartition_tables",
    "logical_backup",
    "logical_restore",
];

pub struct Manager {
    jobs: Jobs,
    machines: Machines,
    group: Arc<Group>,
    metrics: ClusterMetrics,
    failpoint: jobs::Failpoint,
    wake: Notify,
    /// Plans that pick ports are made one at a time.
    planning: tokio::sync::Mutex<()>,
}

impl Manager {
    pub fn new(
        store: Arc<dyn MetaStore>,
        group: Arc<Group>,
        registry: &prometheus::Registry,
        agent_port: u16,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            jobs: Jobs {
                store: store.clone(),
            },
            machines: Machines {
                store,
                token: crate::config::agent_token(),
                agent_port,
            },
            group,
            metrics: ClusterMetrics::new(registry),
            failpoint: crate::config::cluster_failpoint(),
            wake: Notify::new(),
            planning: tokio::sync::Mutex::new(()),
        })
    }

    /// Answers one Emit body: the HTTP status and the answer. A refused
    /// request has the status of its error code (400, 404, 409, 500, 501,
    /// 502);
    /// everything else, a failed job's `get_status` included, 200.
    pub async fn emit(self: &Arc<Self>, body: &[u8]) -> (u16, Value) {
        let e = match Envelope::parse(body) {
            Ok(e) => e,
            Err(r) => return (http_status(&r), emit::failed("1.0", "", &r)),
        };
        match self.answer(&e).await {
            Ok(v) => (200, v),
            Err(r) => {
                info!(job_type = %e.job_type, error = %r.info, "Emit refused");
                (http_status(&r), emit::failed(&e.version, &e.job_id, &r))
            }
        }
    }

    async fn answer(self: &Arc<Self>, e: &Envelope) -> Result<Value, Refused> {
        let t = e.job_type.as_str();
        if SYNC.contains(&t) {
            return self.sync(e).await;
        }
        if NOT_BUILT.contains(&t) {
            return Err(Refused {
                code: codes::NOT_BUILT,
                info: format!(
                    "{t} is not built in this version: machines, clusters (create_cluster, \
                     delete_cluster), the node agent, the group (raft_mission) and the job \
                     engine are; shards, nodes, backups and table moves come next (see \
                     doc/cluster.md)"
                ),
            });
        }
        if !ASYNC.contains(&t) {
            return Err(Refused::bad(format!(
                "unknown job_type {t:?}: asynchronous: {}; synchronous: {}",
                ASYNC.join(", "),
                SYNC.join(", ")
            )));
        }
        // A job_id seen before: that job (same request) or a refusal,
        // before the checks that its own work changed the answer of.
        if let Some(answer) = self.repeated(e).await? {
            return Ok(answer);
        }
        let _planning = self.planning.lock().await;
        let (plan, resource) = match t {
            "raft_mission" => raft_plan(e)?,
            "create_cluster" => {
                let (ports, ids) = self.held().await?;
                clusters::plan_create(&self.machines, e, &ports, &ids).await?
            }
            "add_shards" => {
                let held = self.held().await?.0;
                clusters::plan_add_shards(&self.machines, e, &held).await?
            }
            "delete_cluster" | "delete_shard" | "delete_shards" => {
                clusters::plan_delete(&self.machines, e).await?
            }
            _ => machines::plan(&self.machines, e).await?,
        };
        if e.dry_run()? {
            let mut shown = plan.details.clone();
            if let Some(d) = shown.as_object_mut() {
                d.remove("admin_password_sealed");
            }
            return Ok(emit::done(
                &e.version,
                "dry run: nothing was done",
                json!({"dry_run": true, "job_type": t, "resource": resource,
                       "steps": plan.steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                       "plan": shown}),
            ));
        }
        self.accept(e, plan, resource).await
    }

    /// The ports and cluster ids unfinished jobs' plans hold.
    async fn held(&self) -> Result<(Vec<(String, i64)>, Vec<i64>), Refused> {
        let (mut ports, mut ids) = (Vec::new(), Vec::new());
        for j in self.jobs.unfinished().await.map_err(store)? {
            if j.job_type == "create_cluster" || j.job_type == "add_shards" {
                let (p, id) = clusters::held_by(&j.plan);
                ports.extend(p);
                if j.job_type == "create_cluster" {
                    ids.extend(id);
                }
            }
        }
        Ok((ports, ids))
    }

    /// Stores the job (or finds the one this `job_id` made) and answers
    /// `accept`.
    async fn accept(
        self: &Arc<Self>,
        e: &Envelope,
        plan: Plan,
        resource: String,
    ) -> Result<Value, Refused> {
        if let Some(answer) = self.repeated(e).await? {
            return Ok(answer);
        }
        let digest = digest(&e.job_type, &e.paras);
        let now = chrono::Utc::now().timestamp_millis();
        let job = Job {
            job_id: e.job_id.clone(),
            seq: 0,
            job_type: e.job_type.clone(),
            digest,
            paras: mask(&e.paras),
            user_name: e.user_name.clone(),
            status: "accept".into(),
            plan,
            attachment: Value::Null,
            error_code: codes::OK.into(),
            error_info: String::new(),
            resource,
            cancel_requested: false,
            created_at: now,
            updated_at: now,
        };
        let job = match self.jobs.insert(job).await {
            Ok(j) => j,
            // The same job_id raced in: answer as for a repeat.
            Err(StoreError::Duplicate(_)) => {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!("job_id {} was taken by another request just now", e.job_id),
                })
            }
            Err(err) => return Err(store(err)),
        };
        info!(job = %job.job_id, job_type = %job.job_type, resource = %job.resource, "job accepted");
        self.wake.notify_one();
        Ok(emit::accepted(&e.version, &job.job_id))
    }

    /// The answer to a request whose client-chosen `job_id` names a job:
    /// `accept` for the same request (type and paras), refused otherwise.
    async fn repeated(&self, e: &Envelope) -> Result<Option<Value>, Refused> {
        if e.job_id.is_empty() {
            return Ok(None);
        }
        let Some(existing) = self.jobs.get(&e.job_id).await.map_err(store)? else {
            return Ok(None);
        };
        if existing.digest == digest(&e.job_type, &e.paras) {
            return Ok(Some(emit::accepted(&e.version, &existing.job_id)));
        }
        Err(Refused {
            code: codes::CONFLICT,
            info: format!(
                "job_id {} was used for another request ({} by {:?}): choose a new job_id, or \
                 send the same request again to follow that job",
                e.job_id, existing.job_type, existing.user_name
            ),
        })
    }

    async fn sync(self: &Arc<Self>, e: &Envelope) -> Result<Value, Refused> {
        let p = e.paras();
        let v = &e.version;
        match e.job_type.as_str() {
            "get_status" => {
                let id = p
                    .text("job_id")?
                    .filter(|s| !s.is_empty())
                    .unwrap_or(e.job_id.clone());
                if id.is_empty() {
                    return Err(Refused::bad("get_status needs the job_id to follow"));
                }
                let job = self
                    .jobs
                    .get(&id)
                    .await
                    .map_err(store)?
                    .ok_or_else(|| unknown_job(&id))?;
                Ok(status_answer(v, &job))
            }
            "list_jobs" => {
                let want_type = p.text("job_type")?.filter(|s| !s.is_empty());
                let want_status = p.text("status")?.filter(|s| !s.is_empty());
                if let Some(s) = &want_status {
                    if !["accept", "ongoing", "done", "failed"].contains(&s.as_str()) {
                        return Err(Refused::bad(format!(
                            "paras.status: {s:?} is not one of accept, ongoing, done, failed"
                        )));
                    }
                }
                let list: Vec<Value> = self
                    .jobs
                    .recent()
                    .await
                    .map_err(store)?
                    .iter()
                    .filter(|j| want_type.as_ref().is_none_or(|t| *t == j.job_type))
                    .filter(|j| want_status.as_ref().is_none_or(|s| *s == j.status))
                    .map(|j| {
                        json!({"job_id": j.job_id, "job_type": j.job_type, "status": j.status,
                                    "step": j.current().map(|(_, s)| s.name.clone()),
                                    "user_name": j.user_name, "error_info": j.error_info,
                                    "created_at": j.created_at, "updated_at": j.updated_at})
                    })
                    .collect();
                Ok(emit::done(v, "", json!({"list_jobs": list})))
            }
            "cancel_job" => self.cancel(v, &p.need("job_id")?).await,
            "get_machine_summary" => Ok(emit::done(
                v,
                "",
                self.machines.summary().await.map_err(store)?,
            )),
            "get_cluster_summary" => Ok(emit::done(
                v,
                "",
                views::summary(&self.machines).await.map_err(store)?,
            )),
            "get_cluster_detail" => Ok(emit::done(
                v,
                "",
                views::detail(&self.machines, &p.need("cluster_name")?).await?,
            )),
            "get_variable" => Ok(emit::done(v, "", views::variable(&self.machines, e).await?)),
            "get_meta_mode" => Ok(emit::done(
                v,
                "",
                json!({"mode": "no_rep",
                       "store": if self.jobs.store.shared() { "mysql" } else { "sqlite" }}),
            )),
            "get_backup_storage" => Ok(emit::done(v, "", json!({"list_backup_storage": []}))),
            other => unreachable!("{other} is synchronous"),
        }
    }

    async fn cancel(&self, v: &str, id: &str) -> Result<Value, Refused> {
        let job = self
            .jobs
            .get(id)
            .await
            .map_err(store)?
            .ok_or_else(|| unknown_job(id))?;
        if job.status == "done" || job.status == "failed" {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!("job {id} has ended ({}): nothing to cancel", job.status),
            });
        }
        if let Some(s) = job
            .plan
            .steps
            .iter()
            .find(|s| s.no_return && s.state == "done")
        {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!(
                    "job {id} is past its point of no return (step {} is done): it runs to its end",
                    s.name
                ),
            });
        }
        self.jobs.request_cancel(id).await.map_err(store)?;
        self.wake.notify_one();
        Ok(emit::done(
            v,
            "cancel requested: the job undoes what it did and ends failed (error_code 499)",
            json!({"job_id": id}),
        ))
    }

    /// Runs the jobs (on the leader) and the agents' heartbeats until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut beat = tokio::time::interval(Duration::from_secs(3));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let beat_now = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = beat.tick() => true,
                () = self.wake.notified() => false,
            };
            if beat_now && self.leads() {
                match self.machines.heartbeat().await {
                    Ok(up) => self.metrics.agents_up(up),
                    Err(e) => warn!(error = %e, "agents' heartbeat"),
                }
            }
            if !self.leads() {
                continue;
            }
            let next = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => None,
                r = self.run_pending() => Some(r),
            };
            let Some(next) = next else {
                return;
            };
            if let Err(e) = next {
                warn!(error = %e, "cluster jobs: the store");
            }
        }
    }

    /// Whether this member runs the jobs: the group's leader.
    fn leads(&self) -> bool {
        let view = self.group.view();
        !self.group.shared() || view.leader() == Some(self.group.member_id())
    }

    async fn run_pending(self: &Arc<Self>) -> Result<(), StoreError> {
        loop {
            let pending = self.jobs.unfinished().await?;
            self.count().await;
            let Some(job) = pending.into_iter().next() else {
                return Ok(());
            };
            let steps = Runner {
                manager: self.clone(),
            };
            let job = jobs::drive(&self.jobs, &steps, job, &self.failpoint, &self.metrics).await?;
            info!(job = %job.job_id, job_type = %job.job_type, status = %job.status,
                  error = %job.error_info, "job ended");
        }
    }

    async fn count(&self) {
        let Ok(recent) = self.jobs.recent().await else {
            return;
        };
        let mut counts: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for j in recent {
            *counts.entry((j.job_type, j.status)).or_default() += 1;
        }
        self.metrics.jobs(&counts.into_iter().collect::<Vec<_>>());
    }
}

struct Runner {
    manager: Arc<Manager>,
}

#[async_trait::async_trait]
impl Steps for Runner {
    async fn run(&self, job: &Job, step: &str) -> Result<Value, String> {
        let attempt = job
            .plan
            .steps
            .iter()
            .find(|s| s.name == step)
            .map_or(1, |s| s.attempts);
        match job.job_type.as_str() {
            "raft_mission" => self.raft(job).await,
            "create_cluster" | "add_shards" | "delete_shard" | "delete_shards"
            | "delete_cluster" => steps::run_step(&self.manager.machines, job, step, attempt).await,
            _ => machines::run_step(&self.manager.machines, job, step).await,
        }
    }

    async fn undo(&self, job: &Job, step: &str) -> Result<(), String> {
        match job.job_type.as_str() {
            "raft_mission" => Ok(()),
            "create_cluster" | "add_shards" | "delete_shard" | "delete_shards"
            | "delete_cluster" => steps::undo_step(&self.manager.machines, job, step).await,
            _ => machines::undo_step(&self.manager.machines, job, step).await,
        }
    }

    fn attachment(&self, job: &Job) -> Value {
        match job.job_type.as_str() {
            "raft_mission" => job.plan.steps[0].result.clone(),
            "create_cluster" | "add_shards" | "delete_shard" | "delete_shards"
            | "delete_cluster" => steps::attachment(job),
            _ => json!({}),
        }
    }

    fn done_info(&self, job: &Job) -> String {
        match job.job_type.as_str() {
            "raft_mission" => "raft mission done".into(),
            "create_cluster" => "create cluster successfully".into(),
            "delete_cluster" => "delete cluster successfully".into(),
            "add_shards" => "add shards successfully".into(),
            "delete_shard" | "delete_shards" => "delete shard successfully".into(),
            _ => machines::done_info(job),
        }
    }
}

impl Runner {
    async fn raft(&self, job: &Job) -> Result<Value, String> {
        let d = &job.plan.details;
        let peer = d["peer"].as_str().unwrap_or_default();
        let group = &self.manager.group;
        match d["task_type"].as_str() {
            Some("transfer_leader") => group
                .transfer_leadership(peer)
                .await
                .map(|term| json!({"leader": peer, "term": term}))
                .map_err(|e| e.to_string()),
            Some("add_peer") => group
                .add_member(peer, peer, crate::store::group::NORMAL)
                .await
                .map(|()| json!({"added": peer}))
                .map_err(|e| e.to_string()),
            Some("remove_peer") => group
                .remove_member(peer)
                .await
                .map(|jobs| json!({"removing": peer, "jobs_to_move": jobs}))
                .map_err(|e| e.to_string()),
            other => Err(format!("unknown task_type {other:?}")),
        }
    }
}

fn raft_plan(e: &Envelope) -> Result<(Plan, String), Refused> {
    let p = e.paras();
    let task = p.choice("task_type", &["transfer_leader", "add_peer", "remove_peer"])?;
    let peer = if task == "transfer_leader" {
        p.need("target_leader")?
    } else {
        p.need("peer")?
    };
    Ok((
        Plan {
            steps: vec![Step::new(&task)],
            details: json!({"task_type": task, "peer": peer}),
        },
        "group".into(),
    ))
}

fn status_answer(v: &str, job: &Job) -> Value {
    let total = job.plan.steps.len();
    let attachment = match job.status.as_str() {
        "done" => job.attachment.clone(),
        "accept" | "ongoing" => {
            let (i, name) = job
                .current()
                .map_or((total, String::new()), |(i, s)| (i, s.name.clone()));
            json!({"step": name, "step_index": i + 1, "steps": total,
                   "progress": format!("{i}/{total} steps done"),
                   "steps_done": job.plan.steps.iter().filter(|s| s.state == "done").map(|s| s.name.clone()).collect::<Vec<_>>()})
        }
        _ => {
            json!({"steps": job.plan.steps.iter().map(|s| json!({"step": s.name, "state": s.state})).collect::<Vec<_>>()})
        }
    };
    let status = if job.status == "accept" {
        "ongoing"
    } else {
        job.status.as_str()
    };
    json!({"version": v, "error_code": job.error_code, "error_info": job.error_info,
           "status": status, "job_id": job.job_id, "job_type": job.job_type,
           "attachment": attachment})
}

fn http_status(r: &Refused) -> u16 {
    r.code
        .parse()
        .ok()
        .filter(|c| (400..600).contains(c))
        .unwrap_or(400)
}

fn unknown_job(id: &str) -> Refused {
    Refused {
        code: codes::NOT_FOUND,
        info: format!("no job {id} (list_jobs shows the jobs this manager keeps)"),
    }
}

fn store(e: StoreError) -> Refused {
    Refused {
        code: codes::STEP_FAILED,
        info: format!("the manager's store: {e}"),
    }
}

/// A request's identity: its type and paras, as canonical JSON (keys
/// sorted by serde_json's map), digested.
/// Passwords are masked first: no hash of one is stored.
fn digest(job_type: &str, paras: &Map<String, Value>) -> String {
    let text = format!("{job_type}\n{}", mask(paras));
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The paras as stored: every password masked.
fn mask(paras: &Map<String, Value>) -> Value {
    Value::Object(
        paras
            .iter()
            .map(|(k, v)| {
                let secret = k.contains("password") || k.ends_with("pwd");
                (
                    k.clone(),
                    if secret {
                        json!(crate::secret::MASK)
                    } else {
                        v.clone()
                    },
                )
            })
            .collect(),
    )
}
