//! The task that runs one job. It owns the job's spec, status and progress:
//! every change goes through it, one request at a time, and is persisted to
//! the meta store *before* the request is answered, so whatever the API
//! acknowledged survives a restart. Readers see the job through a `watch`
//! snapshot and never wait on the task.
//!
//! The sync work itself (full sync, incremental sync) arrives with later
//! phases; until then a running job holds its first progress state.

use super::manager::{JobError, JobSnapshot};
use super::state::{transition, JobCommand};
use crate::hostmap::HostMapping;
use crate::metrics::Metrics;
use crate::store::MetaStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

pub(super) type Reply<T> = oneshot::Sender<Result<T, JobError>>;

/// What the manager asks of a runner.
pub(super) enum Request {
    Command(JobCommand, Reply<JobSnapshot>),
    UpdateHostMapping {
        src: Option<BTreeMap<String, String>>,
        dest: Option<BTreeMap<String, String>>,
        reply: Reply<JobSnapshot>,
    },
}

pub(super) struct Runner {
    pub store: Arc<dyn MetaStore>,
    pub metrics: Arc<Metrics>,
    pub snapshot: watch::Sender<JobSnapshot>,
}

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Runner {
    /// Serves requests until the manager drops the job or the service stops.
    pub async fn run(
        self,
        mut requests: mpsc::Receiver<Request>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let name = self.snapshot.borrow().spec.name.clone();
        info!(job = %name, "job task started");
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                request = requests.recv() => match request {
                    Some(request) => self.handle(request).await,
                    None => break,
                },
            }
        }
        info!(job = %name, "job task stopped");
    }

    async fn handle(&self, request: Request) {
        match request {
            Request::Command(command, reply) => {
                let _ = reply.send(self.command(command).await);
            }
            Request::UpdateHostMapping { src, dest, reply } => {
                let _ = reply.send(self.update_host_mapping(src, dest).await);
            }
        }
    }

    async fn command(&self, command: JobCommand) -> Result<JobSnapshot, JobError> {
        let current = self.snapshot.borrow().clone();
        let name = current.spec.name.clone();
        let next = transition(
            current.spec.sync_type(),
            current.status,
            &current.progress,
            &command,
        )
        .map_err(|source| JobError::Command {
            name: name.clone(),
            source,
        })?;
        let updated_at = now_ms();
        self.store
            .save_status(&name, next.status, &next.progress, updated_at)
            .await?;
        let snapshot = JobSnapshot {
            status: next.status,
            progress: next.progress,
            updated_at,
            ..current
        };
        self.metrics.set_job_status(&name, snapshot.status);
        self.snapshot.send_replace(snapshot.clone());
        info!(job = %name, ?command, state = %snapshot.status.run_state,
              progress_state = %snapshot.status.progress_state, "job command applied");
        Ok(snapshot)
    }

    async fn update_host_mapping(
        &self,
        src: Option<BTreeMap<String, String>>,
        dest: Option<BTreeMap<String, String>>,
    ) -> Result<JobSnapshot, JobError> {
        let current = self.snapshot.borrow().clone();
        let mut spec = (*current.spec).clone();
        let apply =
            |mapping: &mut HostMapping, side: &str, update: Option<BTreeMap<String, String>>| {
                update.map_or(Ok(()), |u| {
                    mapping
                        .update(u)
                        .map_err(|e| JobError::Invalid(format!("{side}_host_mapping: {e}")))
                })
            };
        apply(&mut spec.src.host_mapping, "src", src)?;
        apply(&mut spec.dest.host_mapping, "dest", dest)?;
        let updated_at = now_ms();
        if let Err(e) = self.store.save_spec(&spec, updated_at).await {
            warn!(job = %spec.name, error = %e, "saving host mapping failed");
            return Err(e.into());
        }
        let snapshot = JobSnapshot {
            spec: Arc::new(spec),
            updated_at,
            ..current
        };
        self.snapshot.send_replace(snapshot.clone());
        info!(job = %snapshot.spec.name, src = ?snapshot.spec.src.host_mapping,
              dest = ?snapshot.spec.dest.host_mapping, "host mapping updated");
        Ok(snapshot)
    }
}
