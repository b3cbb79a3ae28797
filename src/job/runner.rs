//! The task that runs one job. It owns the job's spec, status and progress:
//! every change goes through it, one request at a time, and is persisted to
//! the meta store *before* the request is answered, so whatever the API
//! acknowledged survives a restart. Readers see the job through a `watch`
//! snapshot and never wait on the task.
//!
//! Beside requests it runs the job's work — the full sync, then the
//! incremental sync — as a child task that it starts when the job is running
//! in the matching state, stops cooperatively (its stop signal: the work
//! closes its connections, an open destination transaction rolls back, and
//! the destination's checkpoints say where to resume; abandoned only after
//! 10 s) on pause, desync, delete, a new full sync or shutdown, and whose
//! progress and outcome it folds into the job's state. Transient errors are
//! retried inside the child with capped exponential backoff; a definite one
//! pauses the job with the error shown, and `resume` tries again.

use super::manager::{JobError, JobSnapshot};
use super::rules::{self, Note, Outcome};
use super::state::{
    transition, CheckState, CommandError, FullSyncProgress, JobCommand, Progress, ProgressState,
    RunState, Verification,
};
use crate::config::{FullSyncSettings, VerifySettings};
use crate::error::SyncError;
use crate::hostmap::HostMapping;
use crate::job::spec::JobSpec;
use crate::metrics::Metrics;
use crate::store::{Fence, MetaStore, StoreError};
use crate::sync::full::FullSync;
use crate::sync::hold::Holds;
use crate::sync::incremental::{self, Applied, Incremental};
use crate::sync::now_ms;
use crate::sync::verify::{self, Verify};
use crate::tls::TlsOptions;
use mysql_async::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

mod verifying;
mod work;

use work::*;
pub use work::{Switches, WorkSettings};

pub(super) type Reply<T> = oneshot::Sender<Result<T, JobError>>;

/// What the manager asks of a runner.
pub(super) enum Request {
    Command(JobCommand, Reply<JobSnapshot>),
    UpdateHostMapping {
        src: Option<BTreeMap<String, String>>,
        dest: Option<BTreeMap<String, String>>,
        reply: Reply<JobSnapshot>,
    },
    UpdateTls {
        src: Option<TlsOptions>,
        dest: Option<TlsOptions>,
        reply: Reply<JobSnapshot>,
    },
}

pub(super) struct Runner {
    pub store: Arc<dyn MetaStore>,
    pub metrics: Arc<Metrics>,
    pub snapshot: watch::Sender<JobSnapshot>,
    pub settings: WorkSettings,
    /// The lease this runner works under: every save to the store and every
    /// commit on the destination names it.
    pub fence: Fence,
    pub switches: Arc<Switches>,
    /// Set when a save or a commit was refused because another member holds
    /// the job now: the runner stops.
    pub lost: AtomicBool,
    /// Where a verification asks the stream to stop for a moment.
    pub holds: Arc<Holds>,
    /// Set when the service stops or the lease goes elsewhere.
    pub stopping: watch::Receiver<bool>,
}

/// Progress is saved to the meta store at most this often while a full
/// sync runs (a restart recounts it from the destination's checkpoints).
const SAVE_PROGRESS_EVERY: Duration = Duration::from_secs(2);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Runner {
    /// Serves requests and runs the job's work until the manager drops the
    /// job or the service stops.
    pub async fn run(
        self,
        mut requests: mpsc::Receiver<Request>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let name = self.snapshot.borrow().spec.name.clone();
        info!(job = %name, "job task started");
        // The last verification's results, as stored.
        if let Some(v) = &self.snapshot.borrow().progress.verify {
            for t in &v.tables {
                if let (Some(at), None) = (t.verified_at, &t.error) {
                    self.metrics
                        .set_verified(&name, &t.table, at / 1000, t.rows_different);
                }
            }
        }
        let mut work: Option<Work> = None;
        let mut verifying: Option<VerifyWork> = None;
        let mut last_save = Instant::now();
        let mut last_verify_save = Instant::now();
        loop {
            if self.is_lost() || *shutdown.borrow() {
                break;
            }
            work = self.reconcile(work).await;
            verifying = self.reconcile_verify(verifying, &work).await;
            if self.is_lost() {
                break;
            }
            tokio::select! {
                event = next_verify(&mut verifying) => {
                    let (v, ended) = match event {
                        VerifyEvent::Progress(v) => (v, None),
                        VerifyEvent::Finished(mut v, result) => {
                            verifying = None;
                            // Ended by an error (not by losing the job): it
                            // ends with it rather than start again at once.
                            if let Err(e) = &result {
                                if !matches!(e, SyncError::Fenced(_)) && v.state != CheckState::Done {
                                    v.state = CheckState::Done;
                                    v.finished_at = Some(now_ms());
                                    v.last_error = Some(format!("the verification stopped: {e}"));
                                }
                            }
                            (v, Some(result))
                        }
                    };
                    let save = ended.is_some() || last_verify_save.elapsed() >= SAVE_PROGRESS_EVERY;
                    if self.update_verify(v, save).await {
                        last_verify_save = Instant::now();
                    }
                    if let Some(Err(e)) = ended {
                        warn!(job = %name, error = %e, "verification stopped");
                        if matches!(e, SyncError::Fenced(_)) {
                            self.lost.store(true, Ordering::Relaxed);
                        }
                    }
                }
                _ = shutdown.changed() => break,
                request = requests.recv() => match request {
                    Some(request) => work = self.handle(request, work.take()).await,
                    None => break,
                },
                event = next_event(&mut work) => match event {
                    WorkEvent::Progress(progress) => {
                        let save = last_save.elapsed() >= SAVE_PROGRESS_EVERY;
                        if save {
                            last_save = Instant::now();
                        }
                        self.update_progress(progress, save).await;
                    }
                    WorkEvent::Applied(applied) => {
                        let save = last_save.elapsed() >= SAVE_PROGRESS_EVERY;
                        if save {
                            last_save = Instant::now();
                        }
                        self.update_incremental(*applied, save).await;
                    }
                    WorkEvent::Finished(outcome) => {
                        work = None;
                        self.finish(outcome).await;
                    }
                },
            }
        }
        if let Some(v) = verifying {
            v.stop().await;
        }
        if let Some(w) = work {
            w.stop().await;
        }
        if self.is_lost() {
            error!(job = %name, member = %self.fence.member, epoch = self.fence.epoch,
                   "lost the job: another member holds its lease now; this member commits nothing more for it");
        }
        info!(job = %name, "job task stopped");
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Notes a store error; a fenced save means the job is lost here.
    fn noted(&self, e: StoreError) -> StoreError {
        if matches!(e, StoreError::Fenced { .. }) {
            self.lost.store(true, Ordering::Relaxed);
        }
        e
    }

    /// Starts or stops the work so that it matches the job's state.
    async fn reconcile(&self, work: Option<Work>) -> Option<Work> {
        let current = self.snapshot.borrow().clone();
        let running = current.status.run_state == RunState::Running;
        let run_id = current.progress.full_sync.as_ref().map(|f| f.run_id);
        let want = match current.status.progress_state {
            ProgressState::DBFullSync | ProgressState::TableFullSync => Some(WorkKey::FullSync(
                current
                    .progress
                    .full_sync
                    .as_ref()
                    .filter(|f| f.finished_at.is_none())
                    .map_or(0, |f| f.run_id),
            )),
            // A partial sync runs inside the incremental sync, which goes
            // on for the other tables.
            ProgressState::TableIncrementalSync
            | ProgressState::DBTablesIncrementalSync
            | ProgressState::DBIncrementalSync
            | ProgressState::DBPartialSync
            | ProgressState::TablePartialSync => run_id.map(WorkKey::Incremental),
        }
        .filter(|_| running);
        match work {
            Some(w) if Some(w.key) == want => return Some(w),
            Some(w) => w.stop().await,
            None => {}
        }
        want?;
        // A job stored before the service's minimum was raised does not
        // connect below it.
        for (side, tls) in [
            ("src", &current.spec.src.tls),
            ("dest", &current.spec.dest.tls),
        ] {
            if tls.mode < self.settings.tls_minimum {
                self.finish(Outcome::Failed(format!(
                    "{side} tls mode {} is below this service's tls.minimum_mode {}; \
                     run update_tls with {} or stricter, then resume",
                    tls.mode, self.settings.tls_minimum, self.settings.tls_minimum
                )))
                .await;
                return None;
            }
        }
        match want? {
            WorkKey::FullSync(_) => self.start_full_sync(current).await,
            WorkKey::Incremental(run_id) => Some(self.start_incremental(current, run_id)),
        }
    }

    fn start_incremental(&self, current: JobSnapshot, run_id: i64) -> Work {
        let applied = Applied {
            commit_seq: current.progress.commit_seq,
            position: current.progress.position.clone(),
            commit_timestamp: current.progress.commit_timestamp,
            detail: current.progress.incremental.clone().unwrap_or_default(),
        };
        let (progress_tx, progress_rx) = watch::channel(applied);
        let sync = Incremental {
            spec: Arc::new(current.spec.route()),
            run_id,
            snapshot: current.progress.snapshot.clone().unwrap_or_default(),
            tables: current.progress.tables.clone(),
            statement_bytes: self.settings.full_sync.statement_bytes,
            apply_connections: self.settings.apply_connections,
            connect_timeout: self.settings.connect_timeout,
            metrics: self.metrics.clone(),
            progress: progress_tx,
            skip: current.progress.skip.as_ref().and_then(|s| s.gtid.clone()),
            live: Arc::new(LiveJob(self.snapshot.subscribe(), self.store.clone())),
            full_sync: self.settings.full_sync,
            epoch: self.fence.epoch,
            holds: self.holds.clone(),
            failpoint: self.settings.failpoint,
            stop: CancellationToken::new(),
        };
        let stop = sync.stop.clone();
        info!(job = %current.spec.name, run_id, "incremental sync starting");
        Work {
            key: WorkKey::Incremental(run_id),
            task: tokio::spawn(run_incremental(sync, self.switches.clone())),
            progress: WorkProgress::Incremental(progress_rx),
            stop,
        }
    }

    async fn start_full_sync(&self, current: JobSnapshot) -> Option<Work> {
        let progress = match current.progress.full_sync.clone() {
            Some(p) if p.finished_at.is_none() => p,
            _ => {
                // A new full sync: a new plan, fresh counters.
                let now = now_ms();
                let mut next = current.progress.clone();
                next.full_sync = Some(FullSyncProgress {
                    run_id: now,
                    started_at: now,
                    ..FullSyncProgress::default()
                });
                next.snapshot = None;
                next.tables.clear();
                if let Err(e) = self
                    .store
                    .save_status(&current.spec.name, &self.fence, current.status, &next, now)
                    .await
                {
                    let e = self.noted(e);
                    warn!(job = %current.spec.name, error = %e, "saving the new full sync failed; retrying");
                    tokio::time::sleep(BACKOFF_FIRST).await;
                    return None;
                }
                self.publish(|s| {
                    s.progress = next.clone();
                    s.updated_at = now;
                });
                next.full_sync.unwrap_or_default()
            }
        };
        let run_id = progress.run_id;
        let (progress_tx, progress_rx) = watch::channel(progress);
        let sync = FullSync {
            spec: Arc::new(current.spec.route()),
            run_id,
            rerun: current.progress.full_sync_reason.is_some(),
            settings: self.settings.full_sync,
            connect_timeout: self.settings.connect_timeout,
            metrics: self.metrics.clone(),
            progress: progress_tx,
            epoch: self.fence.epoch,
        };
        info!(job = %current.spec.name, run_id, "full sync starting");
        let stop = CancellationToken::new();
        Some(Work {
            key: WorkKey::FullSync(run_id),
            task: tokio::spawn(run_with_retries(sync, stop.clone())),
            progress: WorkProgress::Full(progress_rx),
            stop,
        })
    }

    /// Stores the job's new progress (when `save`; a failure is logged as
    /// saving `what`), then shows it.
    async fn save_and_publish(
        &self,
        current: &JobSnapshot,
        next: Progress,
        save: bool,
        what: &str,
    ) {
        let now = now_ms();
        if save {
            if let Err(e) = self
                .store
                .save_status(&current.spec.name, &self.fence, current.status, &next, now)
                .await
            {
                let e = self.noted(e);
                warn!(job = %current.spec.name, error = %e, "saving {what} failed");
            }
        }
        self.publish(|s| {
            s.progress = next;
            s.updated_at = now;
        });
    }

    fn publish(&self, change: impl FnOnce(&mut JobSnapshot)) {
        self.snapshot.send_modify(change);
    }

    async fn update_progress(&self, progress: FullSyncProgress, save: bool) {
        let current = self.snapshot.borrow().clone();
        let mut next = current.progress.clone();
        if progress.last_error.is_some() {
            next.last_error = progress.last_error.clone();
            next.last_error_code = Some(crate::error::Kind::Transient.code().into());
        }
        next.full_sync = Some(progress);
        self.save_and_publish(&current, next, save, "full sync progress")
            .await;
    }

    async fn update_incremental(&self, applied: Applied, save: bool) {
        let current = self.snapshot.borrow().clone();
        let fold = rules::fold_report(&current.spec, current.status, &current.progress, applied);
        self.log_notes(&current.spec.name, &fold.notes);
        let (status, next, save) = (fold.status, fold.progress, save || fold.save);
        let now = now_ms();
        if save {
            if let Err(e) = self
                .store
                .save_status(&current.spec.name, &self.fence, status, &next, now)
                .await
            {
                let e = self.noted(e);
                warn!(job = %current.spec.name, error = %e, "saving incremental progress failed");
            }
        }
        if status != current.status {
            self.metrics.set_job_status(&current.spec.name, status);
        }
        self.publish(|s| {
            s.status = status;
            s.progress = next;
            s.updated_at = now;
        });
    }

    /// Logs (and counts) what a fold says.
    fn log_notes(&self, name: &str, notes: &[Note]) {
        for note in notes {
            match note {
                Note::HandedOver(position) => {
                    info!(job = %name, position = ?position, "full sync done; handing over to incremental sync")
                }
                Note::Stopped { class, error } => {
                    self.metrics.count_error(name, class);
                    error!(job = %name, error = %error, "job stopped; fix the cause and resume the job");
                }
                Note::Refused { class, error } => {
                    self.metrics.count_error(name, class);
                    error!(job = %name, error = %error,
                           "the destination refused a source transaction; the job holds on it: \
                            fix the destination and resume, skip it (job_skip_binlog) or resync");
                }
                Note::Resync(reason) => {
                    self.metrics.count_error(name, "binlog_purged");
                    warn!(job = %name, reason = %reason, "copying the tables again (full sync)");
                }
                Note::PartialStarted { table, reason } => {
                    warn!(job = %name, table = %table, reason = %reason, "partial sync started by the stream")
                }
                Note::PartialDone(table) => info!(job = %name, table = %table, "partial sync done"),
                Note::TablesDone => {
                    info!(job = %name, "every table is past its snapshot: DBIncrementalSync")
                }
            }
        }
    }

    async fn finish(&self, outcome: Outcome) {
        let current = self.snapshot.borrow().clone();
        let name = current.spec.name.clone();
        let now = now_ms();
        if let Outcome::Fenced(message) = &outcome {
            // Nothing may be saved: the job is another member's now.
            error!(job = %name, error = %message, "the destination refused a commit: another member holds the job");
            self.lost.store(true, Ordering::Relaxed);
            return;
        }
        let automatic = self.switches.auto_resync.load(Ordering::Relaxed);
        let Some(fold) = rules::fold_outcome(
            &current.spec,
            current.status,
            &current.progress,
            outcome,
            now,
            automatic,
        ) else {
            return;
        };
        self.log_notes(&name, &fold.notes);
        let (status, progress) = (fold.status, fold.progress);
        // The outcome must be stored before it is shown; keep trying, unless
        // the job is another member's now or is gone.
        while let Err(e) = self
            .store
            .save_status(&name, &self.fence, status, &progress, now)
            .await
        {
            match self.noted(e) {
                e @ (StoreError::Fenced { .. } | StoreError::NotFound(_)) => {
                    warn!(job = %name, error = %e, "the work's outcome is not saved");
                    self.lost.store(true, Ordering::Relaxed);
                    return;
                }
                e => warn!(job = %name, error = %e, "saving the work's outcome failed; retrying"),
            }
            // Stopping with the store down: the work runs again at the
            // next start, from the destination's checkpoints.
            if *self.stopping.borrow() {
                warn!(job = %name, "stopping: the work's outcome is not saved; the job resumes from its checkpoints at the next start");
                return;
            }
            tokio::time::sleep(BACKOFF_FIRST).await;
        }
        self.metrics.set_job_status(&name, status);
        self.publish(|s| {
            s.status = status;
            s.progress = progress;
            s.updated_at = now;
        });
    }

    /// Serves one request and answers it once the work matches it: after
    /// `pause` answers, nothing more is applied; after new TLS settings the
    /// work starts again on new connections (resuming from the destination's
    /// checkpoint, as after any restart).
    async fn handle(&self, request: Request, work: Option<Work>) -> Option<Work> {
        match request {
            Request::Command(command, reply) => {
                let result = self.command(command).await;
                let work = self.reconcile(work).await;
                let _ = reply.send(result);
                work
            }
            Request::UpdateHostMapping { src, dest, reply } => {
                let _ = reply.send(self.update_host_mapping(src, dest).await);
                work
            }
            Request::UpdateTls { src, dest, reply } => {
                let result = self.update_tls(src, dest).await;
                let work = match (&result, work) {
                    (Ok(_), Some(w)) => {
                        w.stop().await;
                        self.reconcile(None).await
                    }
                    (Ok(_), None) => self.reconcile(None).await,
                    (Err(_), work) => work,
                };
                let _ = reply.send(result);
                work
            }
        }
    }

    async fn command(&self, command: JobCommand) -> Result<JobSnapshot, JobError> {
        let current = self.snapshot.borrow().clone();
        let name = current.spec.name.clone();
        if let JobCommand::PartialSync { table, .. } = &command {
            self.check_partial(&current, table).await?;
        }
        let command = match command {
            JobCommand::Verify { tables } => {
                // Refused as it is before the source is asked.
                let sync_type = current.spec.sync_type();
                transition(
                    sync_type,
                    current.status,
                    &current.progress,
                    &JobCommand::Verify { tables: Vec::new() },
                )
                .map_err(|source| JobError::Command {
                    name: name.clone(),
                    source,
                })?;
                JobCommand::Verify {
                    tables: self.verify_tables(&current, tables).await?,
                }
            }
            other => other,
        };
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
        let mut next = next;
        if let Some(p) = next.progress.partial.as_mut() {
            if p.requested_at == 0 {
                p.requested_at = updated_at;
            }
        }
        if let Some(v) = next.progress.verify.as_mut() {
            if v.started_at == 0 {
                v.started_at = updated_at;
            }
            for r in v.tables.iter_mut().filter_map(|t| t.repair.as_mut()) {
                if r.requested_at == 0 {
                    r.requested_at = updated_at;
                }
            }
        }
        self.store
            .save_status(&name, &self.fence, next.status, &next.progress, updated_at)
            .await
            .map_err(|e| self.noted(e))?;
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

    /// A partial sync names a table of the job's scope that the source has.
    async fn check_partial(&self, current: &JobSnapshot, table: &str) -> Result<(), JobError> {
        let spec = &current.spec;
        if let Some(t) = &spec.src.table {
            if t != table {
                return Err(JobError::Command {
                    name: spec.name.clone(),
                    source: CommandError::OtherTable { table: t.clone() },
                });
            }
            return Ok(());
        }
        let mut conn =
            crate::db::connect(&spec.src.server_addr(), None, self.settings.connect_timeout)
                .await
                .map_err(|e| JobError::Invalid(format!("source {e}")))?;
        let found: Option<String> = conn
            .exec_first(
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = ? AND table_name = ? AND table_type = 'BASE TABLE'",
                (&spec.src.database, table),
            )
            .await
            .map_err(|e| JobError::Invalid(format!("source: {e}")))?;
        if found.is_none() {
            return Err(JobError::Invalid(format!(
                "source {} has no table {}.{table}",
                spec.src.address(),
                spec.src.database
            )));
        }
        Ok(())
    }

    async fn update_tls(
        &self,
        src: Option<TlsOptions>,
        dest: Option<TlsOptions>,
    ) -> Result<JobSnapshot, JobError> {
        let current = self.snapshot.borrow().clone();
        let mut spec = (*current.spec).clone();
        if let Some(tls) = src {
            spec.src.tls = tls;
        }
        if let Some(tls) = dest {
            spec.dest.tls = tls;
        }
        let snapshot = self.save_spec(current, spec, "TLS settings").await?;
        info!(job = %snapshot.spec.name, src = %snapshot.spec.src.tls.mode,
              dest = %snapshot.spec.dest.tls.mode, "TLS settings updated");
        Ok(snapshot)
    }

    /// Stores a changed spec, then publishes it; `what` names the change in
    /// the warning when the store fails.
    async fn save_spec(
        &self,
        current: JobSnapshot,
        spec: JobSpec,
        what: &str,
    ) -> Result<JobSnapshot, JobError> {
        let updated_at = now_ms();
        if let Err(e) = self.store.save_spec(&spec, &self.fence, updated_at).await {
            let e = self.noted(e);
            warn!(job = %spec.name, error = %e, "saving {what} failed");
            return Err(e.into());
        }
        let snapshot = JobSnapshot {
            spec: Arc::new(spec),
            updated_at,
            ..current
        };
        self.snapshot.send_replace(snapshot.clone());
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
        let snapshot = self.save_spec(current, spec, "host mapping").await?;
        info!(job = %snapshot.spec.name, src = ?snapshot.spec.src.host_mapping,
              dest = ?snapshot.spec.dest.host_mapping, "host mapping updated");
        Ok(snapshot)
    }
}
