//! The job manager: the registry of jobs and the only way to create, command
//! or delete one.
//!
//! Creating a job: validate the spec, reserve the name (so that of two
//! concurrent creates with one name exactly one proceeds), run the preflight
//! checks against both servers, store the job, then start its task. Nothing is
//! stored unless every check passed; the store's unique key backs the
//! reservation up when several syncers share a MySQL store.
//!
//! At start-up every stored job gets its task back, in its persisted state.

use super::runner::{now_ms, Request, Runner, WorkSettings};
use super::spec::JobSpec;
use super::state::{CommandError, JobCommand, JobStatus, Progress};
use crate::metrics::Metrics;
use crate::preflight::{self, PreflightError};
use crate::store::{JobRecord, MetaStore, StoreError};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A consistent view of one job, as its task last published it.
#[derive(Clone, Debug)]
pub struct JobSnapshot {
    pub spec: Arc<JobSpec>,
    pub status: JobStatus,
    pub progress: Progress,
    pub created_at: i64,
    pub updated_at: i64,
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
    registry: Mutex<Registry>,
    shutdown: watch::Sender<bool>,
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
    /// Loads every stored job and starts its task.
    pub async fn start(
        store: Arc<dyn MetaStore>,
        metrics: Arc<Metrics>,
        settings: WorkSettings,
    ) -> Result<Arc<Self>, StoreError> {
        let manager = Arc::new(JobManager {
            store,
            metrics,
            settings,
            registry: Mutex::new(Registry::default()),
            shutdown: watch::Sender::new(false),
        });
        let jobs = manager.store.load_jobs().await?;
        info!(jobs = jobs.len(), "resuming stored jobs");
        for record in jobs {
            manager.spawn(record);
        }
        Ok(manager)
    }

    fn spawn(&self, record: JobRecord) {
        let name = record.spec.name.clone();
        let snapshot = JobSnapshot {
            spec: Arc::new(record.spec),
            status: record.status,
            progress: record.progress,
            created_at: record.created_at,
            updated_at: record.updated_at,
        };
        self.metrics.set_job_status(&name, snapshot.status);
        let (snapshot_tx, snapshot_rx) = watch::channel(snapshot);
        let (requests_tx, requests_rx) = mpsc::channel(16);
        let runner = Runner {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            snapshot: snapshot_tx,
            settings: self.settings,
        };
        let task = tokio::spawn(runner.run(requests_rx, self.shutdown.subscribe()));
        let mut registry = self.registry.lock();
        registry.jobs.insert(
            name,
            JobHandle {
                requests: requests_tx,
                snapshot: snapshot_rx,
                task,
            },
        );
        self.metrics.set_job_count(registry.jobs.len());
    }

    pub async fn create(&self, spec: JobSpec) -> Result<JobSnapshot, JobError> {
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
        self.spawn(record);
        self.snapshot(&name)
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

    /// Stops the job's task and removes the job and its progress from the
    /// store. The destination's data is left as it is.
    pub async fn delete(&self, name: &str) -> Result<(), JobError> {
        if !self.registry.lock().jobs.contains_key(name) {
            return Err(JobError::NotFound(name.to_string()));
        }
        self.store.delete_job(name).await?;
        let handle = {
            let mut registry = self.registry.lock();
            let handle = registry.jobs.remove(name);
            self.metrics.set_job_count(registry.jobs.len());
            handle
        };
        if let Some(handle) = handle {
            drop(handle.requests);
            if let Err(e) = handle.task.await {
                warn!(job = %name, error = %e, "job task ended abnormally");
            }
        }
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
                .map(|(name, h)| (name, h.task))
                .collect()
        };
        for (name, task) in tasks {
            if let Err(e) = task.await {
                warn!(job = %name, error = %e, "job task ended abnormally");
            }
        }
    }
}
