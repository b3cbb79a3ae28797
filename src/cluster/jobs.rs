//! The cluster manager's jobs as stored (`cm_jobs`) and the step engine
//! that runs them.
//!
//! A job's plan (its steps, and whatever placements it fixed) is written
//! when the job is accepted and never recomputed. Each step is "make sure X
//! holds", so running it again after a crash is safe, and the job's row is
//! written before a step starts (`running`) and after it ends (`done`). A
//! restarted manager resumes every `accept` or `ongoing` job at its first
//! step not `done`. A row in a status or a step in a state this version
//! does not know fails the job loudly, never "done". A step that fails
//! undoes the steps done before it, in reverse, back to the job's point of
//! no return; `cancel_job` does the same between steps.

use super::emit::codes;
use crate::store::{MetaStore, SqlValue, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    /// `pending`, `running`, `done`, `failed`, `undone`.
    pub state: String,
    #[serde(default)]
    pub result: Value,
    /// Steps up to and including this one are not undone by a cancel or a
    /// failure after it.
    #[serde(default)]
    pub no_return: bool,
    /// How many times the step was started (the agent's operation key).
    #[serde(default)]
    pub attempts: u64,
}

impl Step {
    pub fn new(name: &str) -> Step {
        Step {
            name: name.into(),
            state: "pending".into(),
            result: Value::Null,
            no_return: false,
            attempts: 0,
        }
    }
}

/// A job's plan: its steps and what they act on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The fixed inputs of the steps (machine, placements, ports …).
    #[serde(default)]
    pub details: Value,
}

/// A `cm_jobs` row.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub job_id: String,
    pub seq: i64,
    pub job_type: String,
    /// Of the request, for idempotent `job_id`s.
    pub digest: String,
    /// The request's paras, passwords masked.
    pub paras: Value,
    pub user_name: String,
    /// `accept`, `ongoing`, `done`, `failed`.
    pub status: String,
    pub plan: Plan,
    pub attachment: Value,
    pub error_code: String,
    pub error_info: String,
    /// What it acts on (`machine:HOST`, `group`): jobs on one resource run
    /// one after the other.
    pub resource: String,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Job {
    /// The step it is at (the first not done), if any.
    pub fn current(&self) -> Option<(usize, &Step)> {
        self.plan
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.state != "done")
    }
}

const INSERT: &str =
    "INSERT INTO cm_jobs (job_id, seq, job_type, digest, paras, user_name, status, \
     plan, attachment, error_code, error_info, resource, cancel_requested, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const SELECT_ONE: &str = "SELECT job_id, seq, job_type, digest, paras, user_name, status, plan, \
     attachment, error_code, error_info, resource, cancel_requested, created_at, updated_at \
     FROM cm_jobs WHERE job_id = ?";
const SELECT_UNFINISHED: &str = "SELECT job_id, seq, job_type, digest, paras, user_name, status, \
     plan, attachment, error_code, error_info, resource, cancel_requested, created_at, updated_at \
     FROM cm_jobs WHERE status NOT IN ('done', 'failed') ORDER BY seq";
const SELECT_RECENT: &str =
    "SELECT job_id, seq, job_type, digest, paras, user_name, status, plan, \
     attachment, error_code, error_info, resource, cancel_requested, created_at, updated_at \
     FROM cm_jobs ORDER BY seq DESC LIMIT 1000";
const UPDATE: &str = "UPDATE cm_jobs SET status = ?, plan = ?, attachment = ?, error_code = ?, \
     error_info = ?, updated_at = ? WHERE job_id = ?";
const CANCEL: &str = "UPDATE cm_jobs SET cancel_requested = 1, updated_at = ? \
     WHERE job_id = ? AND status IN ('accept', 'ongoing')";
const MAX_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM cm_jobs";

/// The jobs in the store.
#[derive(Clone)]
pub struct Jobs {
    pub store: Arc<dyn MetaStore>,
}

fn decode(row: Vec<SqlValue>) -> Result<Job, StoreError> {
    let t = |i: usize| row[i].text();
    let json = |i: usize| -> Result<Value, StoreError> {
        serde_json::from_str(&row[i].text()).map_err(|e| StoreError::Corrupt {
            name: row[0].text(),
            message: e.to_string(),
        })
    };
    let plan: Plan = serde_json::from_value(json(7)?).map_err(|e| StoreError::Corrupt {
        name: row[0].text(),
        message: format!("plan: {e}"),
    })?;
    Ok(Job {
        job_id: t(0),
        seq: row[1].int(),
        job_type: t(2),
        digest: t(3),
        paras: json(4)?,
        user_name: t(5),
        status: t(6),
        plan,
        attachment: json(8)?,
        error_code: t(9),
        error_info: t(10),
        resource: t(11),
        cancel_requested: row[12].int() != 0,
        created_at: row[13].int(),
        updated_at: row[14].int(),
    })
}

impl Jobs {
    /// Stores a new job under the next sequence number; its `job_id` is
    /// that number when the client chose none. [`StoreError::Duplicate`]
    /// when the `job_id` is taken.
    pub async fn insert(&self, mut job: Job) -> Result<Job, StoreError> {
        for _ in 0..20 {
            let seq = self.store.select(MAX_SEQ, vec![]).await?;
            job.seq = seq.first().map_or(0, |r| r[0].int()) + 1;
            let chosen = job.job_id.is_empty();
            if chosen {
                job.job_id = job.seq.to_string();
            }
            let r = self
                .store
                .execute(
                    INSERT,
                    vec![
                        job.job_id.as_str().into(),
                        job.seq.into(),
                        job.job_type.as_str().into(),
                        job.digest.as_str().into(),
                        job.paras.to_string().as_str().into(),
                        job.user_name.as_str().into(),
                        job.status.as_str().into(),
                        serde_json::to_string(&job.plan)
                            .expect("json")
                            .as_str()
                            .into(),
                        job.attachment.to_string().as_str().into(),
                        job.error_code.as_str().into(),
                        job.error_info.as_str().into(),
                        job.resource.as_str().into(),
                        i64::from(job.cancel_requested).into(),
                        job.created_at.into(),
                        job.updated_at.into(),
                    ],
                )
                .await;
            match r {
                Ok(_) => return Ok(job),
                // Another insert took this seq (or the chosen id): again.
                Err(StoreError::Duplicate(_))
                    if chosen || self.get(&job.job_id).await?.is_none() =>
                {
                    if chosen {
                        job.job_id.clear();
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Backend(
            "could not take a job sequence number".into(),
        ))
    }

    pub async fn get(&self, job_id: &str) -> Result<Option<Job>, StoreError> {
        let rows = self.store.select(SELECT_ONE, vec![job_id.into()]).await?;
        rows.into_iter().next().map(decode).transpose()
    }

    pub async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        let rows = self.store.select(SELECT_UNFINISHED, vec![]).await?;
        rows.into_iter().map(decode).collect()
    }

    pub async fn recent(&self) -> Result<Vec<Job>, StoreError> {
        let rows = self.store.select(SELECT_RECENT, vec![]).await?;
        rows.into_iter().map(decode).collect()
    }

    pub async fn save(&self, job: &Job) -> Result<(), StoreError> {
        self.store
            .execute(
                UPDATE,
                vec![
                    job.status.as_str().into(),
                    serde_json::to_string(&job.plan)
                        .expect("json")
                        .as_str()
                        .into(),
                    job.attachment.to_string().as_str().into(),
                    job.error_code.as_str().into(),
                    job.error_info.as_str().into(),
                    chrono::Utc::now().timestamp_millis().into(),
                    job.job_id.as_str().into(),
                ],
            )
            .await?;
        Ok(())
    }

    /// Asks an unfinished job to stop: whether it was unfinished.
    pub async fn request_cancel(&self, job_id: &str) -> Result<bool, StoreError> {
        let n = self
            .store
            .execute(
                CANCEL,
                vec![chrono::Utc::now().timestamp_millis().into(), job_id.into()],
            )
            .await?;
        Ok(n > 0)
    }
}

/// What a job type does: its steps, their undo, its final attachment.
#[async_trait::async_trait]
pub trait Steps: Send + Sync {
    async fn run(&self, job: &Job, step: &str) -> Result<Value, String>;
    async fn undo(&self, job: &Job, step: &str) -> Result<(), String>;
    fn attachment(&self, job: &Job) -> Value;
    fn done_info(&self, job: &Job) -> String;
}

/// Where a crash can be asked for (tests): `before:STEP`, `during:STEP`
/// (saved as running, not run) or `after:STEP`.
pub type Failpoint = Option<String>;

/// Runs `job` from where it is to its end, saving before and after every
/// step.
pub async fn drive(
    jobs: &Jobs,
    steps: &dyn Steps,
    mut job: Job,
    failpoint: &Failpoint,
    metrics: &super::metrics::ClusterMetrics,
) -> Result<Job, StoreError> {
    match job.status.as_str() {
        "accept" | "ongoing" => {}
        "done" | "failed" => return Ok(job),
        other => {
            return fail(
                jobs,
                job.clone(),
                codes::UNKNOWN_STATE,
                format!(
                "job {} was restored in status {other:?}, which this version does not know: it is \
                 failed rather than guessed at; check what it did by hand", job.job_id),
            )
            .await;
        }
    }
    if let Some(bad) = job
        .plan
        .steps
        .iter()
        .find(|s| !matches!(s.state.as_str(), "pending" | "running" | "done"))
    {
        let info = format!(
            "job {} was restored with step {} in state {:?}, which this version does not know: it \
             is failed rather than reported done; check what it did by hand",
            job.job_id, bad.name, bad.state
        );
        return fail(jobs, job, codes::UNKNOWN_STATE, info).await;
    }
    if job.status == "accept" {
        job.status = "ongoing".into();
        jobs.save(&job).await?;
    }
    while let Some((i, step)) = job.current() {
        let name = step.name.clone();
        if jobs
            .get(&job.job_id)
            .await?
            .is_some_and(|j| j.cancel_requested)
        {
            return cancel(jobs, steps, job, "cancelled by cancel_job").await;
        }
        crash_if(failpoint, "before", &name);
        if job.plan.steps[i].state == "running" {
            // The manager stopped while this step ran: "make sure" again.
            tracing::info!(job = %job.job_id, step = %name, "resuming a step that was running");
            metrics.step_retried(&job.job_type, &name);
        }
        job.plan.steps[i].state = "running".into();
        job.plan.steps[i].attempts += 1;
        jobs.save(&job).await?;
        crash_if(failpoint, "during", &name);
        let started = std::time::Instant::now();
        let outcome = steps.run(&job, &name).await;
        metrics.step_done(&job.job_type, &name, started.elapsed(), outcome.is_ok());
        match outcome {
            Ok(result) => {
                job.plan.steps[i].state = "done".into();
                job.plan.steps[i].result = result;
                // A secret the plan carried for this step (the sealed
                // administrative password `reserve` stores with the
                // cluster) is kept no longer than the step needs it.
                if name == "reserve" {
                    if let Some(d) = job.plan.details.as_object_mut() {
                        d.remove("admin_password_sealed");
                    }
                }
                jobs.save(&job).await?;
                crash_if(failpoint, "after", &name);
            }
            Err(e) => {
                job.plan.steps[i].state = "pending".into();
                let info = format!("step {name} failed: {e}");
                return undo_and_fail(jobs, steps, job, codes::STEP_FAILED, info).await;
            }
        }
    }
    job.status = "done".into();
    job.attachment = steps.attachment(&job);
    job.error_code = codes::OK.into();
    job.error_info = steps.done_info(&job);
    jobs.save(&job).await?;
    Ok(job)
}

fn crash_if(failpoint: &Failpoint, when: &str, step: &str) {
    if failpoint.as_deref() == Some(&format!("{when}:{step}")) {
        tracing::error!(when, step, "failpoint: the manager aborts here");
        std::process::abort();
    }
}

async fn fail(jobs: &Jobs, mut job: Job, code: &str, info: String) -> Result<Job, StoreError> {
    tracing::warn!(job = %job.job_id, job_type = %job.job_type, error = %info, "job failed");
    job.status = "failed".into();
    job.error_code = code.into();
    job.error_info = info;
    jobs.save(&job).await?;
    Ok(job)
}

async fn cancel(jobs: &Jobs, steps: &dyn Steps, job: Job, why: &str) -> Result<Job, StoreError> {
    undo_and_fail(jobs, steps, job, codes::CANCELLED, why.to_string()).await
}

/// Undoes the done steps after the point of no return, newest first, then
/// fails the job with `info` (and what the undo did).
async fn undo_and_fail(
    jobs: &Jobs,
    steps: &dyn Steps,
    mut job: Job,
    code: &str,
    info: String,
) -> Result<Job, StoreError> {
    let last_no_return = job
        .plan
        .steps
        .iter()
        .rposition(|s| s.no_return && s.state == "done");
    let first = last_no_return.map_or(0, |i| i + 1);
    let mut undone = Vec::new();
    for i in (first..job.plan.steps.len()).rev() {
        if job.plan.steps[i].state != "done" {
            continue;
        }
        let name = job.plan.steps[i].name.clone();
        if let Err(e) = steps.undo(&job, &name).await {
            let info = format!("{info}; undoing step {name} failed too: {e} (the steps before it are left as they are)");
            return fail(jobs, job, code, info).await;
        }
        job.plan.steps[i].state = "pending".into();
        jobs.save(&job).await?;
        undone.push(name);
    }
    let info =
        match (undone.is_empty(), last_no_return) {
            (true, None) => info,
            (false, None) => format!("{info}; undone: {}", undone.join(", ")),
            (_, Some(i)) => {
                format!(
            "{info}; undone: {}; kept (past the point of no return at {}): the steps before it",
            if undone.is_empty() { "nothing".into() } else { undone.join(", ") },
            job.plan.steps[i].name
        )
            }
        };
    fail(jobs, job, code, info).await
}
