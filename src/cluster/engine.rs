//! The step engine: a cluster job as stored, and [`drive`], which runs it
//! from where it is to its end.
//!
//! A job's plan (its steps, and whatever placements it fixed) is written
//! when the job is accepted and never recomputed. Each step is "make sure X
//! holds", so running it again after a crash is safe, and the job's row is
//! written before a step starts (`running`) and after it ends (`done`). A
//! restarted manager resumes every unfinished job at its first step not
//! `done`. A row in a status, or a step in a state, this version does not
//! know fails the job loudly, never "done".
//!
//! Failures: a step that fails transiently ([`StepError::Transient`]: an
//! agent or instance that does not answer) is retried with backoff (1, 2,
//! 4 … 30 s) for up to `[cluster] step_retry_s`, its retries and last
//! error saved for `get_status`; a definite failure, or retries running
//! out, undoes the steps done after the point of no return, newest first,
//! and fails the job; `cancel_job` does the same between steps. A step
//! that reports no progress for `[cluster] stall_s` fails definitely: no
//! operation has a fixed cap.
//!
//! Fencing: the job is driven under the [`Fence`] its member claimed, and
//! every save names it ([`ClusterStore::save`]); before each step the
//! member checks in the store that it still leads the group. A member
//! that lost the leadership stops before its next step, and one frozen
//! while another claimed the job matches no row on its next save and stops
//! there: it never writes the job's row again.

use super::emit::codes;
use super::kind::{AnyKind, ProgressCell, StepCtx, StepError};
use super::Env;
use crate::protocol::Progress;
use crate::store::cluster::{ClusterStore, JobRow};
use crate::store::{Fence, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A job's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Accept,
    Ongoing,
    Done,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accept => "accept",
            Status::Ongoing => "ongoing",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "accept" => Status::Accept,
            "ongoing" => Status::Ongoing,
            "done" => Status::Done,
            "failed" => Status::Failed,
            _ => return None,
        })
    }

    pub fn ended(self) -> bool {
        matches!(self, Status::Done | Status::Failed)
    }
}

/// A step's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Done,
}

/// One step of a stored plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Its label (`install:1:2`), as answers show it.
    pub name: String,
    pub state: StepState,
    /// The kind's step with its arguments.
    pub step: Value,
    #[serde(default)]
    pub result: Value,
    /// Steps up to and including this one are not undone.
    #[serde(default)]
    pub no_return: bool,
    /// How many times it was started (part of its agent operations' key).
    #[serde(default)]
    pub attempts: u64,
    /// Transient failures since it last ran through.
    #[serde(default)]
    pub retries: u64,
    #[serde(default)]
    pub last_error: String,
    /// Unix ms of its first transient failure in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<i64>,
    /// Unix ms it last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

impl StepRecord {
    /// A step not started yet.
    pub fn new(name: String, step: Value, no_return: bool) -> StepRecord {
        StepRecord {
            name,
            state: StepState::Pending,
            step,
            result: Value::Null,
            no_return,
            attempts: 0,
            retries: 0,
            last_error: String::new(),
            failing_since: None,
            started_at: None,
            progress: None,
        }
    }
}

/// A job's plan as stored: its steps and the kind's plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredPlan {
    pub steps: Vec<StepRecord>,
    pub details: Value,
}

/// A cluster job, decoded from its row.
#[derive(Clone, Debug)]
pub struct Job {
    pub row: JobRow,
    pub status: Status,
    pub plan: StoredPlan,
    pub attachment: Value,
}

impl Job {
    /// Reads a row; why it cannot be read (a status or a step state this
    /// version does not know, a plan of another shape).
    pub fn decode(row: JobRow) -> Result<Job, String> {
        let status = Status::parse(&row.status).ok_or_else(|| {
            format!(
                "job {} was restored in status {:?}, which this version does not know: it is \
                 failed rather than guessed at; check what it did by hand",
                row.job_id, row.status
            )
        })?;
        let plan: StoredPlan = serde_json::from_str(&row.plan).map_err(|e| {
            format!(
                "job {} was restored with a plan this version does not know ({e}): it is failed \
                 rather than reported done; check what it did by hand",
                row.job_id
            )
        })?;
        let attachment = serde_json::from_str(&row.attachment).unwrap_or(Value::Null);
        Ok(Job {
            row,
            status,
            plan,
            attachment,
        })
    }

    fn encode(&self) -> JobRow {
        let mut row = self.row.clone();
        row.status = self.status.as_str().into();
        row.plan = serde_json::to_string(&self.plan).expect("a plan serializes");
        row.attachment = self.attachment.to_string();
        row
    }

    /// The step it is at (the first not done), if any.
    pub fn current(&self) -> Option<(usize, &StepRecord)> {
        self.plan
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.state != StepState::Done)
    }
}

/// Where a crash is asked for (tests): `before:STEP`, `during:STEP` (saved
/// as running, not run) or `after:STEP`, by step label.
#[derive(Clone, Debug, Default)]
pub struct Failpoint {
    pub point: Option<String>,
    /// Abort the process (the binary), or only stop driving (the engine's
    /// own tests: nothing more is saved, as after a crash).
    pub abort: bool,
}

/// Why [`drive`] stopped before the job ended.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("this member no longer leads the group: the new leader goes on with the job")]
    NotLeader,
    #[error("a failpoint stopped the job at {0}")]
    Failpoint(String),
}

/// What [`drive`] reports as it goes (metrics).
pub trait Observer: Send + Sync {
    fn step_done(&self, job_type: &str, step: &str, took: Duration, ok: bool);
    fn step_retried(&self, job_type: &str, step: &str);
}

/// The metrics label of a step: its label up to the first `:`.
pub fn step_kind(label: &str) -> &str {
    label.split(':').next().unwrap_or(label)
}

struct Driver<'a> {
    env: &'a Env,
    kind: &'a dyn AnyKind,
    fence: Fence,
    failpoint: &'a Failpoint,
    observer: &'a dyn Observer,
}

/// Runs `job` from where it is to its end, saving before and after every
/// step under `fence`.
pub async fn drive(
    env: &Env,
    kind: &dyn AnyKind,
    job: Job,
    fence: Fence,
    failpoint: &Failpoint,
    observer: &dyn Observer,
) -> Result<Job, Stopped> {
    Driver {
        env,
        kind,
        fence,
        failpoint,
        observer,
    }
    .drive(job)
    .await
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How long to wait before the `retry`th try of a failing step.
pub fn backoff(retry: u64) -> Duration {
    Duration::from_secs(1 << retry.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

impl Driver<'_> {
    fn store(&self) -> &ClusterStore {
        &self.env.store
    }

    async fn save(&self, job: &Job) -> Result<(), StoreError> {
        self.store().save(&job.encode(), &self.fence).await
    }

    fn crash_if(&self, when: &str, step: &str) -> Result<(), Stopped> {
        let here = format!("{when}:{step}");
        if self.failpoint.point.as_deref() != Some(here.as_str()) {
            return Ok(());
        }
        if self.failpoint.abort {
            tracing::error!(when, step, "failpoint: the manager aborts here");
            std::process::abort();
        }
        Err(Stopped::Failpoint(here))
    }

    async fn drive(&self, mut job: Job) -> Result<Job, Stopped> {
        if job.status.ended() {
            return Ok(job);
        }
        if job.status == Status::Accept {
            job.status = Status::Ongoing;
            self.save(&job).await?;
        }
        while let Some((i, step)) = job.current() {
            let name = step.name.clone();
            if !self.env.group.leads_now().await? {
                return Err(Stopped::NotLeader);
            }
            if self.cancel_requested(&job).await? {
                return self
                    .undo_and_fail(job, codes::CANCELLED, "cancelled by cancel_job".into())
                    .await;
            }
            self.crash_if("before", &name)?;
            if job.plan.steps[i].state == StepState::Running {
                // The manager stopped while this step ran: "make sure" again.
                tracing::info!(job = %job.row.job_id, step = %name, "resuming a step that was running");
                self.observer
                    .step_retried(&job.row.job_type, step_kind(&name));
            }
            let s = &mut job.plan.steps[i];
            s.state = StepState::Running;
            s.attempts += 1;
            s.started_at = Some(now_ms());
            s.progress = None;
            self.save(&job).await?;
            self.crash_if("during", &name)?;
            let started = Instant::now();
            let outcome = self.run_step(&job, i).await?;
            self.observer.step_done(
                &job.row.job_type,
                step_kind(&name),
                started.elapsed(),
                outcome.is_ok(),
            );
            match outcome {
                Ok(result) => {
                    let s = &mut job.plan.steps[i];
                    s.state = StepState::Done;
                    s.result = result;
                    s.retries = 0;
                    s.last_error.clear();
                    s.failing_since = None;
                    let step = s.step.clone();
                    self.kind.after(&mut job.plan.details, &step);
                    self.save(&job).await?;
                    self.crash_if("after", &name)?;
                }
                Err(StepError::Transient(e)) => {
                    let s = &mut job.plan.steps[i];
                    let since = *s.failing_since.get_or_insert(now_ms());
                    s.retries += 1;
                    s.last_error = crate::redact::text(&e).into_owned();
                    s.state = StepState::Pending;
                    let retries = s.retries;
                    let window = self.env.settings.step_retry.as_millis() as i64;
                    if now_ms() - since >= window {
                        let info = format!(
                            "step {name} failed: {e} (retried {retries} times over {} s)",
                            (now_ms() - since) / 1000
                        );
                        return self.undo_and_fail(job, codes::STEP_FAILED, info).await;
                    }
                    tracing::warn!(job = %job.row.job_id, step = %name, retries, error = %e,
                                   "step failed transiently: retried");
                    self.save(&job).await?;
                    let wait = backoff(retries).min(Duration::from_millis(
                        (since + window - now_ms()).max(0) as u64,
                    ));
                    self.pause(&job, wait).await?;
                }
                Err(StepError::Definite(e)) => {
                    job.plan.steps[i].state = StepState::Pending;
                    let info = format!("step {name} failed: {e}");
                    return self.undo_and_fail(job, codes::STEP_FAILED, info).await;
                }
                Err(StepError::Lost(e)) => {
                    return Err(Stopped::Store(StoreError::Fenced {
                        name: format!("cluster job {} ({e})", job.row.job_id),
                        epoch: self.fence.epoch,
                    }))
                }
            }
        }
        let results: Vec<(Value, Value)> = job
            .plan
            .steps
            .iter()
            .map(|s| (s.step.clone(), s.result.clone()))
            .collect();
        match self.kind.attachment(&job.plan.details, &results) {
            Ok(a) => {
                job.status = Status::Done;
                job.attachment = a;
                job.row.error_code = codes::OK.into();
                job.row.error_info = self.kind.done_info();
            }
            Err(e) => {
                job.status = Status::Failed;
                job.row.error_code = codes::UNKNOWN_STATE.into();
                job.row.error_info = e;
            }
        }
        self.save(&job).await?;
        Ok(job)
    }

    async fn cancel_requested(&self, job: &Job) -> Result<bool, StoreError> {
        Ok(self
            .store()
            .job(&job.row.job_id)
            .await?
            .is_some_and(|r| r.cancel_requested))
    }

    /// Waits `wait` between two tries, checking for a cancel each second.
    async fn pause(&self, job: &Job, wait: Duration) -> Result<(), StoreError> {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            tokio::time::sleep((until - Instant::now()).min(Duration::from_secs(1))).await;
            if self.cancel_requested(job).await? {
                break;
            }
        }
        Ok(())
    }

    /// Runs step `i`, failing it when it reports no progress for
    /// `stall_s`, and saving its progress as it moves.
    async fn run_step(&self, job: &Job, i: usize) -> Result<Result<Value, StepError>, StoreError> {
        let record = &job.plan.steps[i];
        let progress = ProgressCell::default();
        let earlier = done_results(job);
        let ctx = StepCtx {
            env: self.env,
            job_id: &job.row.job_id,
            fence: &self.fence,
            label: &record.name,
            attempt: record.attempts,
            progress: &progress,
            earlier: &earlier,
        };
        let run = self.kind.run(&ctx, &job.plan.details, &record.step);
        tokio::pin!(run);
        let started = Instant::now();
        let stall = self.env.settings.stall;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut saved: Option<Progress> = None;
        loop {
            tokio::select! {
                outcome = &mut run => return Ok(outcome),
                _ = tick.tick() => {}
            }
            let moved = progress.moved_at().unwrap_or(started);
            if moved.elapsed() >= stall {
                return Ok(Err(StepError::Definite(format!(
                    "no progress for {} s ([cluster] stall_s){}",
                    moved.elapsed().as_secs(),
                    progress
                        .latest()
                        .map(|p| format!(": stuck at {} of {:?} ({})", p.done, p.total, p.phase))
                        .unwrap_or_default()
                ))));
            }
            let latest = progress.latest();
            if latest.is_some() && latest != saved {
                let mut shown = job.clone();
                shown.plan.steps[i].progress = latest.clone();
                self.save(&shown).await?;
                saved = latest;
            }
        }
    }

    /// Undoes the done steps after the point of no return, newest first,
    /// then fails the job with `info` (and what the undo did).
    async fn undo_and_fail(&self, mut job: Job, code: &str, info: String) -> Result<Job, Stopped> {
        // Only the job's holder undoes: a member that lost it stops here.
        self.save(&job).await?;
        let last_no_return = job
            .plan
            .steps
            .iter()
            .rposition(|s| s.no_return && s.state == StepState::Done);
        let first = last_no_return.map_or(0, |i| i + 1);
        let mut undone = Vec::new();
        for i in (first..job.plan.steps.len()).rev() {
            if job.plan.steps[i].state != StepState::Done {
                continue;
            }
            let name = job.plan.steps[i].name.clone();
            let progress = ProgressCell::default();
            let earlier = done_results(&job);
            let ctx = StepCtx {
                env: self.env,
                job_id: &job.row.job_id,
                fence: &self.fence,
                label: &name,
                attempt: job.plan.steps[i].attempts,
                progress: &progress,
                earlier: &earlier,
            };
            if let Err(e) = self
                .kind
                .undo(&ctx, &job.plan.details, &job.plan.steps[i].step)
                .await
            {
                if let StepError::Lost(_) = e {
                    return Err(Stopped::Store(StoreError::Fenced {
                        name: format!("cluster job {}", job.row.job_id),
                        epoch: self.fence.epoch,
                    }));
                }
                let info = format!(
                    "{info}; undoing step {name} failed too: {e} (the steps before it are left as they are)"
                );
                return self.fail(job, code, info).await;
            }
            job.plan.steps[i].state = StepState::Pending;
            self.save(&job).await?;
            undone.push(name);
        }
        let info = match (undone.is_empty(), last_no_return) {
            (true, None) => info,
            (false, None) => format!("{info}; undone: {}", undone.join(", ")),
            (_, Some(i)) => format!(
                "{info}; undone: {}; kept (past the point of no return at {}): the steps before it",
                if undone.is_empty() {
                    "nothing".into()
                } else {
                    undone.join(", ")
                },
                job.plan.steps[i].name
            ),
        };
        self.fail(job, code, info).await
    }

    async fn fail(&self, mut job: Job, code: &str, info: String) -> Result<Job, Stopped> {
        tracing::warn!(job = %job.row.job_id, job_type = %job.row.job_type, error = %info, "job failed");
        job.status = Status::Failed;
        job.row.error_code = code.into();
        job.row.error_info = info;
        self.save(&job).await?;
        Ok(job)
    }
}

/// The results of a job's done steps, by label.
fn done_results(job: &Job) -> Vec<(String, Value)> {
    job.plan
        .steps
        .iter()
        .filter(|s| s.state == StepState::Done)
        .map(|s| (s.name.clone(), s.result.clone()))
        .collect()
}

/// Fails a job that is not driven (its row cannot be read, or it was
/// cancelled before it started) under `fence`: loudly, never done.
pub async fn fail_row(
    store: &ClusterStore,
    mut row: JobRow,
    fence: &Fence,
    code: &str,
    why: String,
) -> Result<(), StoreError> {
    tracing::warn!(job = %row.job_id, error = %why, "cluster job failed without running");
    row.status = Status::Failed.as_str().into();
    row.error_code = code.into();
    row.error_info = why;
    store.save(&row, fence).await
}

#[cfg(test)]
mod tests;
