//! The job manager: the registry of jobs and the only way to create, command
//! or delete one.
//!
//! Creating a job: validate the spec, reserve the name (so that of two
//! concurrent creates with one name exactly one proceeds), run the preflight
//! checks against both servers, store the job, then start its task. Nothing is
//! stored unless every check passed; the store's unique key backs the
//! reservation up when several syncers share a MySQL store.
//!
//! A job's task runs on the member of the group holding the job's lease: the
//! group (`crate::group`) tells the manager which jobs this member holds,
//! at which epoch ([`JobManager::own`]), and the manager starts and stops
//! their tasks to match. A task runs under its lease's [`Fence`]: a save or
//! a destination commit made after the lease moved on is refused.

use super::runner::{Request, Runner, Switches, WorkSettings};
use super::spec::JobSpec;
use super::state::{CommandError, JobCommand, JobStatus, Progress};
use crate::metrics::Metrics;
use crate::preflight::{self, PreflightError};
use crate::store::{Fence, GroupStore, JobRecord, Lease, MetaStore, StoreError};
use crate::sync::now_ms;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// A consistent view of one job, as its task last published it.
#[derive(Clone, Debug)]
pub struct JobSnapshot {
    pub spec: Arc<JobSpec>,
    pub status: JobStatus,
    pub progress: Progress,
    pub created_at: i64,
    pub updated_at: i64,
    /// The member running the job and its lease's epoch.
    pub fence: Fence,
    /// After this long without applying while behind, the job is stalled.
    pub stall_secs: u64,
}

impl JobSnapshot {
    /// The job's lag now (see `job::lag`).
    pub fn lag(&self) -> super::lag::Lag {
        super::lag::lag(
            self.status,
            &self.progress,
            self.stall_secs,
            chrono::Utc::now().timestamp_millis(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {0} does not exist")]
    NotFound(String),
    #[error("job {0} already exists")]
    Duplicate(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("job {name}: {source}")]
    Command { name: String, source: CommandError },
    #[error(transparent)]
    Store(StoreError),
    #[error("job {0} is stopping")]
    Stopping(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(name) => JobError::Duplicate(name),
            StoreError::NotFound(name) => JobError::NotFound(name),
            other => JobError::Store(other),
        }
    }
}

struct JobHandle {
    requests: mpsc::Sender<Request>,
    snapshot: watch::Receiver<JobSnapshot>,
    task: JoinHandle<()>,
    /// Ends the task (the job stays stored, for its next holder).
    stop: watch::Sender<bool>,
    fence: Fence,
}

#[derive(Default)]
struct Registry {
    jobs: BTreeMap<String, JobHandle>,
    /// Names whose creation is under way.
    creating: BTreeSet<String>,
}

pub struct JobManager {
    store: Arc<dyn MetaStore>,
    metrics: Arc<Metrics>,
    settings: WorkSettings,
    switches: Arc<Switches>,
    registry: Mutex<Registry>,
    shutdown: watch::Sender<bool>,
}

/// Who takes a new job's lease at creation, for how long, and whether that
/// member is this one (which then starts the job at once).
#[derive(Clone, Debug)]
pub struct Claim {
    pub member: String,
    pub lease: std::time::Duration,
    pub here: bool,
}

/// Releases a reserved name however creation ends.
struct Reservation<'a> {
    manager: &'a JobManager,
    name: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.manager.registry.lock().creating.remove(&self.name);
    }
}

impl JobManager {
    /// A manager with no jobs running: the group hands it the jobs this
    /// member holds.
    pub fn new(
        store: Arc<dyn MetaStore>,
        metrics: Arc<Metrics>,
        settings: WorkSettings,
        switches: Arc<Switches>,
    ) -> Arc<Self> {
        Arc::new(JobManager {
            store,
            metrics,
            settings,
            switches,
            registry: Mutex::new(Registry::default()),
            shutdown: watch::Sender::new(false),
        })
    }

    pub fn switches(&self) -> &Arc<Switches> {
        &self.switches
    }

    fn spawn(&self, record: JobRecord, fence: Fence) {
        let name = record.spec.name.clone();
        let mut registry = self.registry.lock();
        if registry.jobs.contains_key(&name) {
            return;
        }
        let snapshot = JobSnapshot {
            spec: Arc::new(record.spec),
            status: record.status,
            progress: record.progress,
            created_at: record.created_at,
            updated_at: record.updated_at,
            fence: fence.clone(),
            stall_secs: self.settings.stall_secs,
        };
        self.metrics.set_job_status(&name, snapshot.status);
        let (snapshot_tx, snapshot_rx) = watch::channel(snapshot);
        let (requests_tx, requests_rx) = mpsc::channel(16);
        // Set when the service stops or the lease goes elsewhere.
        let (stop_tx, stop_rx) = watch::channel(*self.shutdown.borrow());
        let runner = Runner {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            snapshot: snapshot_tx,
            settings: self.settings,
            fence: fence.clone(),
            switches: self.switches.clone(),
            lost: Default::default(),
            holds: Default::default(),
            stopping: stop_rx.clone(),
        };
        let task = tokio::spawn(runner.run(requests_rx, stop_rx));
        registry.jobs.insert(
            name,
            JobHandle {
                requests: requests_tx,
                snapshot: snapshot_rx,
                task,
                stop: stop_tx,
                fence,
            },
        );
        self.metrics.set_job_count(registry.jobs.len());
    }

    /// Makes the running jobs the ones this member holds: starts a task for
    /// each newly held job (from its stored state), stops the task of each
    /// job no longer held, or held at another epoch (which then starts
    /// again under the new one).
    pub async fn own(&self, held: &[Lease]) -> Result<(), StoreError> {
        let stale: Vec<String> = {
            let registry = self.registry.lock();
            registry
                .jobs
                .iter()
                .filter(|(name, h)| {
                    !held.iter().any(|l| &l.job == *name && l.fence() == h.fence)
                        || h.task.is_finished()
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        for name in stale {
            self.release(&name).await;
        }
        let missing: Vec<&Lease> = {
            let registry = self.registry.lock();
            held.iter()
                .filter(|l| !registry.jobs.contains_key(&l.job))
                .collect()
        };
        self.start_held(&missing).await
    }

    /// Starts one job this member holds now, ahead of the group's loop (a
    /// request for it came first).
    pub async fn adopt(&self, lease: &Lease) -> Result<(), StoreError> {
        if self.runs(&lease.job) {
            return Ok(());
        }
        self.start_held(&[lease]).await
    }

    /// Starts the jobs of `leases` from their stored state.
    async fn start_held(&self, leases: &[&Lease]) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        // A row that cannot be read keeps its job from starting here (the
        // lease stays ours, the job shows as not running); it must not stop
        // the group's loop, which keeps every other job's lease.
        let records = match self.store.load_jobs().await {
            Ok(records) => records,
            Err(e @ StoreError::Corrupt { .. }) => {
                error!(error = %e, "a stored job cannot be read; the jobs this member holds \
                       start once it can");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for lease in leases {
            if let Some(record) = records.iter().find(|r| r.spec.name == lease.job) {
                info!(job = %lease.job, epoch = lease.epoch, "this member holds the job now; starting it");
                self.spawn(record.clone(), lease.fence());
            }
        }
        Ok(())
    }

    /// Stops a job's task here (its state stays stored for its next holder).
    pub async fn release(&self, name: &str) {
        let handle = {
            let mut registry = self.registry.lock();
            let handle = registry.jobs.remove(name);
            self.metrics.set_job_count(registry.jobs.len());
            handle
        };
        if let Some(handle) = handle {
            handle.stop.send_replace(true);
            drop(handle.requests);
            if let Err(e) = handle.task.await {
                warn!(job = %name, error = %e, "job task ended abnormally");
            }
            self.metrics.remove_job(name);
            info!(job = %name, epoch = handle.fence.epoch, "job stopped on this member");
        }
    }

    /// Stops every job's task here.
    pub async fn release_all(&self) {
        for name in self.list() {
            self.release(&name).await;
        }
    }

    /// Whether this member runs the job.
    pub fn runs(&self, name: &str) -> bool {
        self.registry.lock().jobs.contains_key(name)
    }

    /// Stores a new job. With a `claim` the member it names takes the
    /// job's lease (and this member starts it at once when it is the one);
    /// without, the group's leader gives it to a member. Returns the owner.
    pub async fn create(
        &self,
        spec: JobSpec,
        claim: Option<Claim>,
    ) -> Result<Option<String>, JobError> {
        spec.validate().map_err(JobError::Invalid)?;
        let _reservation = {
            let mut registry = self.registry.lock();
            if registry.jobs.contains_key(&spec.name)
                || !registry.creating.insert(spec.name.clone())
            {
                return Err(JobError::Duplicate(spec.name));
            }
            Reservation {
                manager: self,
                name: spec.name.clone(),
            }
        };
        // A job of another member's: refused before the checks.
        let group = GroupStore::new(self.store.clone());
        if group.lease_of(&spec.name).await?.is_some() {
            return Err(JobError::Duplicate(spec.name));
        }
        if let Err(e) = preflight::check(&spec, self.settings.connect_timeout).await {
            warn!(job = %spec.name, error = %e, "create_ccr refused by preflight checks");
            return Err(e.into());
        }
        let now = now_ms();
        let record = JobRecord {
            status: JobStatus::initial(spec.sync_type()),
            progress: Progress::default(),
            created_at: now,
            updated_at: now,
            spec,
        };
        self.store.insert_job(&record).await?;
        info!(job = %record.spec.name, sync_type = ?record.spec.sync_type(),
              src = %record.spec.src.address(), src_scope = %record.spec.src.scope(),
              dest = %record.spec.dest.address(), dest_scope = %record.spec.dest.scope(),
              "job created");
        let name = record.spec.name.clone();
        let Some(claim) = claim else {
            return Ok(None);
        };
        let unowned = Lease {
            job: name.clone(),
            owner: String::new(),
            epoch: 0,
            expires_at: 0,
            release_requested: false,
            run_state: String::new(),
        };
        let expires_at = group.now_ms().await? + claim.lease.as_millis() as i64;
        if !group.assign(&unowned, &claim.member, expires_at).await? {
            // The leader gave it to a member first.
            return Ok(group.lease_of(&name).await?.map(|l| l.owner));
        }
        if claim.here {
            self.spawn(
                record,
                Fence {
                    member: claim.member.clone(),
                    epoch: 1,
                },
            );
        }
        Ok(Some(claim.member))
    }

    pub fn list(&self) -> Vec<String> {
        self.registry.lock().jobs.keys().cloned().collect()
    }

    pub fn snapshot(&self, name: &str) -> Result<JobSnapshot, JobError> {
        let registry = self.registry.lock();
        let handle = registry
            .jobs
            .get(name)
            .ok_or_else(|| JobError::NotFound(name.to_string()))?;
        let snapshot = handle.snapshot.borrow().clone();
        Ok(snapshot)
    }

    pub async fn command(&self, name: &str, command: JobCommand) -> Result<JobSnapshot, JobError> {
        self.ask(name, |reply| Request::Command(command, reply))
            .await
    }

    pub async fn update_host_mapping(
        &self,
        name: &str,
        src: Option<BTreeMap<String, String>>,
        dest: Option<BTreeMap<String, String>>,
    ) -> Result<JobSnapshot, JobError> {
        self.ask(name, |reply| Request::UpdateHostMapping {
            src,
            dest,
            reply,
        })
        .await
    }

    /// Changes how a job's connections are secured; the job's work starts
    /// again, so every connection from now on uses the new settings.
    pub async fn update_tls(
        &self,
        name: &str,
        src: Option<crate::tls::TlsOptions>,
        dest: Option<crate::tls::TlsOptions>,
    ) -> Result<JobSnapshot, JobError> {
        self.ask(name, |reply| Request::UpdateTls { src, dest, reply })
            .await
    }

    async fn ask<T>(
        &self,
        name: &str,
        request: impl FnOnce(oneshot::Sender<Result<T, JobError>>) -> Request,
    ) -> Result<T, JobError> {
        let sender = {
            let registry = self.registry.lock();
            let handle = registry
                .jobs
                .get(name)
                .ok_or_else(|| JobError::NotFound(name.to_string()))?;
            handle.requests.clone()
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        sender
            .send(request(reply_tx))
            .await
            .map_err(|_| JobError::Stopping(name.to_string()))?;
        reply_rx
            .await
            .map_err(|_| JobError::Stopping(name.to_string()))?
    }

    /// Removes the job and its progress from the store and stops its task
    /// (when it runs here; the group routes a delete to the job's holder,
    /// and deletes a job nobody holds here). The destination's data is left
    /// as it is.
    pub async fn delete(&self, name: &str) -> Result<(), JobError> {
        if !self.store.delete_job(name).await? {
            return Err(JobError::NotFound(name.to_string()));
        }
        self.release(name).await;
        self.metrics.remove_job(name);
        info!(job = %name, "job deleted");
        Ok(())
    }

    /// Stops every job task (their state stays stored) and waits for them.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let tasks: Vec<(String, JoinHandle<()>)> = {
            let mut registry = self.registry.lock();
            std::mem::take(&mut registry.jobs)
                .into_iter()
                .map(|(name, h)| {
                    h.stop.send_replace(true);
                    (name, h.task)
                })
                .collect()
        };
        for (name, task) in tasks {
            if let Err(e) = task.await {
                warn!(job = %name, error = %e, "job task ended abnormally");
            }
        }
    }
}
