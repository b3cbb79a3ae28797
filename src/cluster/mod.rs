//! The cluster manager of seed 001: `POST /HttpService/Emit` on the
//! service's API port. Asynchronous job types ([`kinds`], one file each)
//! are planned, stored with what they claim and answered `accept`;
//! `get_status` follows them. Synchronous ones answer `done` with their
//! attachment at once. A refused request is answered `failed` with a
//! specific `error_info` and creates nothing.
//!
//! Jobs run on one member of a group: the leader (any member of a group of
//! one), which claims each job in the store before it drives it
//! ([`engine`]: fenced saves). Jobs whose resources do not overlap run side
//! by side; one whose resources an older unfinished job holds waits, and
//! `get_status` says for what ([`resource`]). A manager that starts (or
//! becomes the leader) resumes every unfinished job at its step.
//!
//! It names no module of the CCR control plane (`job`, `api`): the API
//! hands it bodies, it hands back answers.

mod agents;
mod archiver;
mod backups;
mod comps;
pub mod emit;
mod engine;
mod kind;
mod kinds;
mod logical;
mod metrics;
mod nodes;
mod replicas;
mod resource;
mod retention;
mod shard;
mod views;
mod watch;

use crate::config::ClusterSettings;
use crate::group::Group;
use crate::store::cluster::{ClusterStore, JobRow};
use crate::store::{MetaStore, StoreError};
use emit::{codes, Envelope, Refused};
use engine::{Failpoint, Job, StepRecord, StepState, StoredPlan};
use kind::AnyKind;
use metrics::ClusterMetrics;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// What job types work with: the store, the agents, the group, the
/// settings.
pub struct Env {
    pub store: ClusterStore,
    pub agents: agents::Agents,
    pub group: Arc<Group>,
    pub settings: ClusterSettings,
    /// The backup storage, when `[backup] storage` names one.
    pub storage: Option<crate::storage::Storage>,
    /// The compute layer's metrics and latest events.
    pub board: comps::board::Board,
}

/// The synchronous job types.
#[derive(Clone, Copy, Debug)]
enum View {
    Status,
    ListJobs,
    Cancel,
    MachineSummary,
    ClusterSummary,
    ClusterDetail,
    Variable,
    MetaMode,
    BackupStorage,
    FailoverJournal,
    AckFailover,
    SetNoswitch,
    ExpandTableList,
}

const VIEWS: &[(&str, View)] = &[
    ("get_status", View::Status),
    ("list_jobs", View::ListJobs),
    ("cancel_job", View::Cancel),
    ("get_machine_summary", View::MachineSummary),
    ("get_cluster_summary", View::ClusterSummary),
    ("get_cluster_detail", View::ClusterDetail),
    ("get_variable", View::Variable),
    ("get_meta_mode", View::MetaMode),
    // The seed's section title names it so; the same answer.
    ("get_meta_summary", View::MetaMode),
    ("get_backup_storage", View::BackupStorage),
    ("get_failover_journal", View::FailoverJournal),
    ("ack_failover", View::AckFailover),
    ("set_noswitch", View::SetNoswitch),
    ("get_expand_table_list", View::ExpandTableList),
];

pub struct Manager {
    env: Arc<Env>,
    kinds: Vec<Arc<dyn AnyKind>>,
    metrics: Arc<ClusterMetrics>,
    failpoint: Failpoint,
    wake: Notify,
    /// The jobs this member drives now.
    running: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// A failpoint stopped a job (tests in-process): this manager drives
    /// nothing more, as if it had died there.
    halted: std::sync::atomic::AtomicBool,
    /// What the watcher last saw of every shard.
    watch: Arc<watch::Watch>,
}

impl Manager {
    pub fn new(
        store: Arc<dyn MetaStore>,
        group: Arc<Group>,
        registry: &prometheus::Registry,
        settings: ClusterSettings,
    ) -> Arc<Manager> {
        let failpoint = Failpoint {
            point: settings.failpoint.clone(),
            abort: !settings.failpoint_halts,
        };
        Manager::with_kinds(
            store,
            group,
            registry,
            settings,
            kinds::registry(),
            failpoint,
        )
    }

    fn with_kinds(
        store: Arc<dyn MetaStore>,
        group: Arc<Group>,
        registry: &prometheus::Registry,
        settings: ClusterSettings,
        kinds: Vec<Arc<dyn AnyKind>>,
        failpoint: Failpoint,
    ) -> Arc<Manager> {
        Arc::new(Manager {
            env: Arc::new(Env {
                store: ClusterStore::new(store),
                agents: agents::Agents {
                    token: settings.agent_token.clone(),
                    default_port: settings.agent_port,
                },
                group,
                storage: backups::open_storage(&settings),
                board: comps::board::Board::new(registry),
                settings,
            }),
            kinds,
            metrics: Arc::new(ClusterMetrics::new(registry)),
            failpoint,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            halted: std::sync::atomic::AtomicBool::new(false),
            watch: Arc::new(watch::Watch::default()),
        })
    }

    fn kind(&self, job_type: &str) -> Option<Arc<dyn AnyKind>> {
        self.kinds.iter().find(|k| k.name() == job_type).cloned()
    }

    /// Answers one Emit body: the HTTP status and the answer. A refused
    /// request has the status of its error code (400, 404, 409, 500, 501,
    /// 502); everything else, a failed job's `get_status` included, 200.
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
        if let Some((_, view)) = VIEWS.iter().find(|(name, _)| *name == t) {
            return self.view(*view, e).await;
        }
        if t == "failover" {
            // Whatever user_name a request gives: only the watcher starts
            // one, through `accept` itself.
            return Err(Refused::bad(
                "failover is the manager's own job, started when it sees a shard's primary fail: \
                 send manual_switch to change a primary",
            ));
        }
        let Some(kind) = self.kind(t) else {
            return Err(Refused::bad(format!(
                "unknown job_type {t:?}: asynchronous: {}; synchronous: {}",
                self.kinds
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                VIEWS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )));
        };
        self.accept(e, kind.as_ref()).await
    }

    /// Plans the request and stores the job with its claims; a claim taken
    /// meanwhile (another member accepting at once) plans it again.
    async fn accept(self: &Arc<Self>, e: &Envelope, kind: &dyn AnyKind) -> Result<Value, Refused> {
        let dry_run = e.dry_run()?;
        for _ in 0..20 {
            // A job_id seen before: that job (same request) or a refusal,
            // before the checks that its own work changed the answer of.
            if let Some(answer) = self.repeated(e).await? {
                return Ok(answer);
            }
            let planned = kind.plan(&self.env, e).await?;
            let steps = planned
                .steps
                .iter()
                .map(|s| {
                    Ok(StepRecord::new(
                        kind.label(&s.step).map_err(Refused::bad)?,
                        s.step.clone(),
                        s.no_return,
                    ))
                })
                .collect::<Result<Vec<_>, Refused>>()?;
            let resource = resource::encode(&planned.resources);
            if dry_run {
                return Ok(emit::done(
                    &e.version,
                    "dry run: nothing was done",
                    json!({"dry_run": true, "job_type": e.job_type, "resource": resource,
                           "steps": steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                           "plan": kind.shown(&planned.plan)}),
                ));
            }
            let plan = StoredPlan {
                steps,
                details: planned.plan,
            };
            let now = chrono::Utc::now().timestamp_millis();
            let row = JobRow {
                job_id: e.job_id.clone(),
                seq: 0,
                job_type: e.job_type.clone(),
                digest: digest(&e.job_type, &e.paras),
                paras: mask(&e.paras).to_string(),
                user_name: e.user_name.clone(),
                status: engine::Status::Accept.as_str().into(),
                plan: serde_json::to_string(&plan).expect("a plan serializes"),
                attachment: Value::Null.to_string(),
                error_code: codes::OK.into(),
                error_info: String::new(),
                resource,
                cancel_requested: false,
                owner: String::new(),
                owner_epoch: 0,
                created_at: now,
                updated_at: now,
            };
            match self.env.store.accept(row, &planned.claims).await {
                Ok(row) => {
                    info!(job = %row.job_id, job_type = %row.job_type, resource = %row.resource, "job accepted");
                    self.wake.notify_one();
                    let mut answer = emit::accepted(&e.version, &row.job_id);
                    answer["error_info"] = json!(planned.note);
                    return Ok(answer);
                }
                // A port, an id, the job's sequence number or its job_id
                // was taken just now: plan again from what is taken.
                Err(StoreError::Duplicate(_)) => continue,
                Err(err) => return Err(store(err)),
            }
        }
        Err(Refused {
            code: codes::CONFLICT,
            info:
                "the ports and ids this job needs kept being taken by other requests: send it again"
                    .into(),
        })
    }

    /// The answer to a request whose client-chosen `job_id` names a job:
    /// `accept` for the same request (type and paras), refused otherwise.
    async fn repeated(&self, e: &Envelope) -> Result<Option<Value>, Refused> {
        if e.job_id.is_empty() {
            return Ok(None);
        }
        let Some(existing) = self.env.store.job(&e.job_id).await.map_err(store)? else {
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

    async fn view(self: &Arc<Self>, view: View, e: &Envelope) -> Result<Value, Refused> {
        let p = e.paras();
        let v = &e.version;
        match view {
            View::Status => {
                let id = p
                    .text("job_id")?
                    .filter(|s| !s.is_empty())
                    .unwrap_or(e.job_id.clone());
                if id.is_empty() {
                    return Err(Refused::bad("get_status needs the job_id to follow"));
                }
                self.status(v, &id).await
            }
            View::ListJobs => self.list(v, e).await,
            View::Cancel => self.cancel(v, &p.need("job_id")?).await,
            View::MachineSummary => Ok(emit::done(
                v,
                "",
                views::machine_summary(&self.env).await.map_err(store)?,
            )),
            View::ClusterSummary => Ok(emit::done(
                v,
                "",
                views::summary(&self.env).await.map_err(store)?,
            )),
            View::ClusterDetail => Ok(emit::done(
                v,
                "",
                views::detail(&self.env, &self.watch, &p.need("cluster_name")?).await?,
            )),
            View::Variable => Ok(emit::done(v, "", views::variable(&self.env, e).await?)),
            View::MetaMode => Ok(emit::done(
                v,
                "",
                json!({"mode": "no_rep",
                       "store": if self.env.store.meta().shared() { "mysql" } else { "sqlite" }}),
            )),
            View::BackupStorage => Ok(emit::done(v, "", backups::view(&self.env).await?)),
            View::FailoverJournal => Ok(emit::done(
                v,
                "",
                views::failover_journal(&self.env, e).await?,
            )),
            View::AckFailover => Ok(emit::done(
                v,
                "failover acknowledged: the next automatic failover of the shard is not blocked",
                views::ack_failover(&self.env, e).await?,
            )),
            View::SetNoswitch => Ok(emit::done(v, "", views::set_noswitch(&self.env, e).await?)),
            View::ExpandTableList => Ok(emit::done(
                v,
                "",
                comps::listing::expand_table_list(&self.env, e).await?,
            )),
        }
    }

    async fn job(&self, id: &str) -> Result<JobRow, Refused> {
        self.env
            .store
            .job(id)
            .await
            .map_err(store)?
            .ok_or_else(|| unknown_job(id))
    }

    async fn status(&self, v: &str, id: &str) -> Result<Value, Refused> {
        let row = self.job(id).await?;
        let mut job = match Job::decode(row.clone()) {
            Ok(job) => job,
            Err(why) => {
                return Ok(json!({"version": v, "error_code": codes::UNKNOWN_STATE,
                    "error_info": why, "status": row.status, "job_id": row.job_id,
                    "job_type": row.job_type, "attachment": null}))
            }
        };
        let waiting = if job.status.ended() {
            None
        } else {
            self.waiting_for(id).await.map_err(store)?
        };
        if job.status == engine::Status::Done {
            self.hand_over_password(&mut job).await?;
        }
        Ok(status_answer(v, &job, waiting.as_ref()))
    }

    /// A generated administrative password is in the attachment of the
    /// done `create_cluster` (sealed) until one `get_status` takes it out:
    /// that answer, and no other, shows it.
    async fn hand_over_password(&self, job: &mut Job) -> Result<(), Refused> {
        let Some(sealed) = job.attachment["admin_password_sealed"]
            .as_str()
            .map(str::to_string)
        else {
            return Ok(());
        };
        let seen = job.attachment.to_string();
        if let Some(a) = job.attachment.as_object_mut() {
            a.remove("admin_password_sealed");
        }
        let taken = self
            .env
            .store
            .swap_attachment(&job.row.job_id, &seen, &job.attachment.to_string())
            .await
            .map_err(store)?;
        if taken {
            let id = job.attachment["cluster_id"].as_str().unwrap_or_default();
            let pw = self
                .env
                .store
                .meta()
                .open_secret(&format!("cm_clusters/{id}"), "admin", &sealed)
                .map_err(store)?;
            job.attachment["admin_password"] = json!(pw.expose());
            job.attachment["admin_password_note"] =
                json!("generated for this cluster: shown in this answer only, keep it now");
        }
        Ok(())
    }

    /// What an unfinished job waits for, if anything.
    async fn waiting_for(&self, id: &str) -> Result<Option<resource::Waiting>, StoreError> {
        let unfinished = self.env.store.unfinished().await?;
        let list: Vec<_> = unfinished
            .iter()
            .map(|r| (r.job_id.clone(), resource::decode(&r.resource)))
            .collect();
        Ok(resource::schedule(&list)
            .into_iter()
            .find(|(j, _)| j == id)
            .and_then(|(_, w)| w))
    }

    async fn list(&self, v: &str, e: &Envelope) -> Result<Value, Refused> {
        let p = e.paras();
        let want_type = p.text("job_type")?.filter(|s| !s.is_empty());
        let want_status = p.text("status")?.filter(|s| !s.is_empty());
        if let Some(s) = &want_status {
            if engine::Status::parse(s).is_none() {
                return Err(Refused::bad(format!(
                    "paras.status: {s:?} is not one of accept, ongoing, done, failed"
                )));
            }
        }
        let list: Vec<Value> = self
            .env
            .store
            .recent()
            .await
            .map_err(store)?
            .into_iter()
            .filter(|j| want_type.as_ref().is_none_or(|t| *t == j.job_type))
            .filter(|j| want_status.as_ref().is_none_or(|s| *s == j.status))
            .map(|j| {
                let step = Job::decode(j.clone())
                    .ok()
                    .and_then(|job| job.current().map(|(_, s)| s.name.clone()));
                json!({"job_id": j.job_id, "job_type": j.job_type, "status": j.status,
                       "step": step, "user_name": j.user_name, "error_info": j.error_info,
                       "created_at": j.created_at, "updated_at": j.updated_at})
            })
            .collect();
        Ok(emit::done(v, "", json!({"list_jobs": list})))
    }

    async fn cancel(&self, v: &str, id: &str) -> Result<Value, Refused> {
        let row = self.job(id).await?;
        if row.status == "done" || row.status == "failed" {
            return Err(Refused {
                code: codes::CONFLICT,
                info: format!("job {id} has ended ({}): nothing to cancel", row.status),
            });
        }
        if let Ok(job) = Job::decode(row) {
            if let Some(s) = job
                .plan
                .steps
                .iter()
                .find(|s| s.no_return && s.state == StepState::Done)
            {
                return Err(Refused {
                    code: codes::CONFLICT,
                    info: format!(
                        "job {id} is past its point of no return (step {} is done): it runs to its end",
                        s.name
                    ),
                });
            }
        }
        self.env.store.request_cancel(id).await.map_err(store)?;
        self.wake.notify_one();
        Ok(emit::done(
            v,
            "cancel requested: the job undoes what it did and ends failed (error_code 499)",
            json!({"job_id": id}),
        ))
    }

    /// Runs the jobs (on the leader) and the agents' heartbeats until
    /// `shutdown`; then stops the jobs it drives (each is saved before and
    /// after every step, so the next leader resumes them as after a crash).
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let watcher = tokio::spawn(watch::run(self.clone(), shutdown.clone()));
        let archiver = tokio::spawn(archiver::run(self.clone(), shutdown.clone()));
        let retention = tokio::spawn(retention::run(self.clone(), shutdown.clone()));
        let ddl = tokio::spawn(comps::ddl::run(self.clone(), shutdown.clone()));
        let keeper = tokio::spawn(comps::keeper::run(self.clone(), shutdown.clone()));
        let mut beat = tokio::time::interval(Duration::from_secs(3));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let beat_now = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                _ = beat.tick() => true,
                () = self.wake.notified() => false,
            };
            if !self.leads() {
                continue;
            }
            if beat_now {
                match self.env.agents.heartbeat(&self.env.store).await {
                    Ok(up) => self.metrics.agents_up(up),
                    Err(e) => warn!(error = %e, "agents' heartbeat"),
                }
            }
            if let Err(e) = self.schedule().await {
                warn!(error = %e, "cluster jobs: the store");
            }
        }
        for (_, task) in self.running.lock().drain() {
            task.abort();
        }
        watcher.abort();
        // Each ends at the shutdown signal; awaited so that nothing holds
        // the store once this returns.
        for task in [archiver, retention, ddl, keeper] {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// The status page's section on the managed clusters (what the watcher
    /// last saw).
    pub fn status_html(&self) -> String {
        self.watch.html() + &self.env.board.html()
    }

    /// Whether this member runs the jobs: the group's leader.
    fn leads(&self) -> bool {
        let group = &self.env.group;
        !group.shared() || group.view().leader() == Some(group.member_id())
    }

    /// Starts every unfinished job that holds no resource an older one
    /// holds and that this member does not drive yet, claiming it first.
    async fn schedule(self: &Arc<Self>) -> Result<(), StoreError> {
        if self.halted.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let rows = self.env.store.unfinished().await?;
        self.count().await;
        let list: Vec<_> = rows
            .iter()
            .map(|r| (r.job_id.clone(), resource::decode(&r.resource)))
            .collect();
        let member = self.env.group.member_id().to_string();
        for ((id, waiting), row) in resource::schedule(&list).into_iter().zip(rows) {
            if self.running.lock().contains_key(&id) {
                continue;
            }
            if let Some(w) = waiting {
                // Cancelled before its turn: nothing was done to undo.
                let untouched = Job::decode(row.clone())
                    .is_ok_and(|j| j.plan.steps.iter().all(|s| s.state == StepState::Pending));
                if row.cancel_requested && untouched {
                    if let Some(fence) = self.env.store.claim(&id, &member, row.owner_epoch).await?
                    {
                        let why = format!(
                            "cancelled by cancel_job while it waited for {} (held by job {}): \
                             nothing was done",
                            w.resource, w.holder
                        );
                        engine::fail_row(&self.env.store, row, &fence, codes::CANCELLED, why)
                            .await?;
                    }
                }
                continue;
            }
            let Some(fence) = self.env.store.claim(&id, &member, row.owner_epoch).await? else {
                continue;
            };
            let job = match Job::decode(row.clone()) {
                Ok(job) => job,
                Err(why) => {
                    engine::fail_row(&self.env.store, row, &fence, codes::UNKNOWN_STATE, why)
                        .await?;
                    continue;
                }
            };
            let Some(kind) = self.kind(&job.row.job_type) else {
                let why = format!(
                    "job {id} is of type {}, which this version does not run: it is failed \
                     rather than guessed at",
                    job.row.job_type
                );
                engine::fail_row(&self.env.store, row, &fence, codes::UNKNOWN_STATE, why).await?;
                continue;
            };
            let me = self.clone();
            let task_id = id.clone();
            let mut running = self.running.lock();
            running.insert(
                id,
                tokio::spawn(async move {
                    let outcome = engine::drive(
                        &me.env,
                        kind.as_ref(),
                        job,
                        fence,
                        &me.failpoint,
                        me.metrics.as_ref(),
                    )
                    .await;
                    match outcome {
                        Ok(job) => info!(job = %job.row.job_id, job_type = %job.row.job_type,
                                         status = job.status.as_str(), error = %job.row.error_info,
                                         "job ended"),
                        Err(engine::Stopped::Failpoint(at)) => {
                            warn!(job = %task_id, at, "failpoint: this manager drives nothing more");
                            me.halted.store(true, std::sync::atomic::Ordering::SeqCst);
                            for (id, task) in me.running.lock().drain() {
                                if id != task_id {
                                    task.abort();
                                }
                            }
                        }
                        Err(e) => warn!(job = %task_id, error = %e, "job stopped here"),
                    }
                    me.running.lock().remove(&task_id);
                    me.wake.notify_one();
                }),
            );
        }
        Ok(())
    }

    async fn count(&self) {
        let Ok(recent) = self.env.store.recent().await else {
            return;
        };
        let mut counts: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for j in recent {
            *counts.entry((j.job_type, j.status)).or_default() += 1;
        }
        self.metrics.jobs(&counts.into_iter().collect::<Vec<_>>());
    }
}

fn status_answer(v: &str, job: &Job, waiting: Option<&resource::Waiting>) -> Value {
    let steps = &job.plan.steps;
    let total = steps.len();
    let attachment = match job.status {
        engine::Status::Done => job.attachment.clone(),
        engine::Status::Accept | engine::Status::Ongoing => {
            let (i, name) = job
                .current()
                .map_or((total, String::new()), |(i, s)| (i, s.name.clone()));
            let mut a = json!({"step": name, "step_index": i + 1, "steps": total,
                   "progress": format!("{i}/{total} steps done"),
                   "steps_done": steps.iter().filter(|s| s.state == StepState::Done)
                       .map(|s| s.name.clone()).collect::<Vec<_>>()});
            if let Some(w) = waiting {
                a["waiting_for"] = json!({"resource": w.resource.to_string(), "job_id": w.holder});
            }
            if let Some(s) = steps.get(i) {
                if s.retries > 0 {
                    a["retries"] = json!(s.retries);
                    a["last_error"] = json!(s.last_error);
                }
                if let Some(p) = &s.progress {
                    a["step_progress"] = step_progress(p, s.started_at);
                }
            }
            a
        }
        engine::Status::Failed => {
            json!({"steps": steps.iter().map(|s| json!({"step": s.name, "state": match s.state {
                StepState::Pending => "pending", StepState::Running => "running", StepState::Done => "done",
            }})).collect::<Vec<_>>()})
        }
    };
    let status = match job.status {
        engine::Status::Accept => "ongoing",
        s => s.as_str(),
    };
    json!({"version": v, "error_code": job.row.error_code, "error_info": job.row.error_info,
           "status": status, "job_id": job.row.job_id, "job_type": job.row.job_type,
           "attachment": attachment})
}

/// A long step's progress: done, total, rate and the time left where the
/// total is known.
fn step_progress(p: &crate::protocol::Progress, started_at: Option<i64>) -> Value {
    let mut v = json!({"done": p.done, "total": p.total, "phase": p.phase});
    let secs = started_at
        .map(|t| (chrono::Utc::now().timestamp_millis() - t) as f64 / 1000.0)
        .unwrap_or(0.0);
    if secs > 0.0 && p.done > 0 {
        let rate = p.done as f64 / secs;
        v["rate_per_s"] = json!(rate.round() as u64);
        if let Some(total) = p.total {
            v["eta_s"] = json!((total.saturating_sub(p.done) as f64 / rate).ceil() as u64);
        }
    }
    v
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
