//! The work a runner starts: full sync, incremental sync and verification
//! tasks, each stopped cooperatively (told to stop, it closes its
//! connections; abandoned after a wait), their retry loops, and the
//! settings and switches they run under.

use super::*;

/// Settings the job's work needs.
#[derive(Clone, Copy, Debug)]
pub struct WorkSettings {
    pub connect_timeout: Duration,
    pub full_sync: FullSyncSettings,
    pub apply_connections: usize,
    /// The weakest TLS mode a job may connect with (`[tls] minimum_mode`).
    pub tls_minimum: crate::tls::TlsMode,
    /// A running job that applies nothing this long while its source has
    /// newer transactions is stalled (`[incremental] stall_secs`).
    pub stall_secs: u64,
    pub verify: VerifySettings,
    /// The tests' failpoint (`Config::failpoint`).
    pub failpoint: Option<u64>,
}

/// The group's switches for background tasks (`/config/set`), read by the
/// work as it goes; every one is on by default.
#[derive(Debug)]
pub struct Switches {
    /// A job whose binlog position was purged copies its tables again
    /// (when its `on_binlog_purged` says so).
    pub auto_resync: AtomicBool,
    /// An incremental sync whose source is gone follows the replica that
    /// took over.
    pub follow_failover: AtomicBool,
    /// The leader spreads jobs evenly across members.
    pub balance: AtomicBool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            auto_resync: AtomicBool::new(true),
            follow_failover: AtomicBool::new(true),
            balance: AtomicBool::new(true),
        }
    }
}

impl Switches {
    /// The switches' keys in `/config/get` and `/config/set`.
    pub const KEYS: [&'static str; 3] = ["auto_resync", "follow_failover", "balance"];

    /// Every switch: its key and its flag.
    pub fn all(&self) -> [(&'static str, &AtomicBool); 3] {
        let [resync, failover, balance] = Self::KEYS;
        [
            (resync, &self.auto_resync),
            (failover, &self.follow_failover),
            (balance, &self.balance),
        ]
    }

    pub fn get(&self, key: &str) -> Option<&AtomicBool> {
        self.all()
            .into_iter()
            .find(|(k, _)| *k == key)
            .map(|(_, f)| f)
    }
}

/// The job as it is now, as the data path sees it, and the store where the
/// service's cluster manager keeps its shards.
pub(super) struct LiveJob(
    pub(super) watch::Receiver<JobSnapshot>,
    pub(super) Arc<dyn MetaStore>,
);

#[async_trait::async_trait]
impl crate::sync::Live for LiveJob {
    fn source(&self) -> crate::db::Endpoint {
        self.0.borrow().spec.src.clone()
    }

    fn partial(&self) -> Option<crate::sync::progress::PartialSync> {
        self.0.borrow().progress.partial.clone()
    }

    async fn shard_primary(&self, address: &str) -> Option<String> {
        let all = crate::store::cluster::ClusterStore::new(self.1.clone())
            .instances()
            .await
            .ok()?;
        let node = all
            .iter()
            .find(|i| format!("{}:{}", i.hostaddr, i.port) == address)?;
        all.iter()
            .find(|i| {
                i.cluster_id == node.cluster_id && i.shard == node.shard && i.role == "primary"
            })
            .map(|p| format!("{}:{}", p.hostaddr, p.port))
    }
}

/// Which work runs: the full sync of a run, or the incremental sync after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WorkKey {
    FullSync(i64),
    Incremental(i64),
}

pub(super) enum WorkProgress {
    Full(watch::Receiver<FullSyncProgress>),
    Incremental(watch::Receiver<Applied>),
}

/// The running work.
pub(super) struct Work {
    pub(super) key: WorkKey,
    pub(super) task: JoinHandle<Outcome>,
    pub(super) progress: WorkProgress,
    /// Tells the work to stop; it closes its connections and ends.
    pub(super) stop: CancellationToken,
}

/// How long stopping work waits for it to close its connections before
/// abandoning it.
pub(super) const STOP_WAIT: Duration = Duration::from_secs(10);

/// Tells a task to stop and waits until it has, or aborts it after
/// [`STOP_WAIT`].
pub(super) async fn stop_task<T>(stop: &CancellationToken, task: &mut JoinHandle<T>) {
    stop.cancel();
    if tokio::time::timeout(STOP_WAIT, &mut *task).await.is_err() {
        warn!("the job's work did not stop within {STOP_WAIT:?}; abandoning it");
        task.abort();
        let _ = task.await;
    }
}

impl Work {
    pub(super) async fn stop(mut self) {
        stop_task(&self.stop, &mut self.task).await;
    }
}

/// The running verification (beside the incremental sync it holds).
pub(super) struct VerifyWork {
    /// Which verification (its start time), on which source node.
    pub(super) started_at: i64,
    pub(super) source: String,
    pub(super) task: JoinHandle<Result<(), SyncError>>,
    pub(super) progress: watch::Receiver<Verification>,
    pub(super) stop: CancellationToken,
}

impl VerifyWork {
    pub(super) async fn stop(mut self) {
        stop_task(&self.stop, &mut self.task).await;
    }
}

pub(super) enum VerifyEvent {
    Progress(Verification),
    Finished(Verification, Result<(), SyncError>),
}

/// The verification's next report or its end; never resolves without one.
pub(super) async fn next_verify(verifying: &mut Option<VerifyWork>) -> VerifyEvent {
    let Some(v) = verifying else {
        return std::future::pending().await;
    };
    tokio::select! {
        biased;
        changed = v.progress.changed() => match changed {
            Ok(()) => VerifyEvent::Progress(v.progress.borrow_and_update().clone()),
            Err(_) => {
                let result = (&mut v.task).await;
                VerifyEvent::Finished(v.progress.borrow().clone(), ended(result))
            }
        },
        result = &mut v.task => VerifyEvent::Finished(v.progress.borrow().clone(), ended(result)),
    }
}

pub(super) fn ended(
    result: Result<Result<(), SyncError>, tokio::task::JoinError>,
) -> Result<(), SyncError> {
    result.unwrap_or_else(|e| {
        Err(SyncError::Transient(format!(
            "the verification ended abnormally: {e}"
        )))
    })
}

pub(super) enum WorkEvent {
    Progress(FullSyncProgress),
    Applied(Box<Applied>),
    Finished(Outcome),
}

/// The work's next progress report or its end; never resolves without work.
pub(super) async fn next_event(work: &mut Option<Work>) -> WorkEvent {
    let Some(w) = work else {
        return std::future::pending().await;
    };
    match &mut w.progress {
        WorkProgress::Full(rx) => tokio::select! {
            biased;
            changed = rx.changed() => match changed {
                Ok(()) => WorkEvent::Progress(rx.borrow_and_update().clone()),
                // The sender went with the task: its outcome is next.
                Err(_) => WorkEvent::Finished(outcome(&mut w.task).await),
            },
            outcome = outcome(&mut w.task) => WorkEvent::Finished(outcome),
        },
        WorkProgress::Incremental(rx) => tokio::select! {
            biased;
            changed = rx.changed() => match changed {
                Ok(()) => WorkEvent::Applied(Box::new(rx.borrow_and_update().clone())),
                Err(_) => WorkEvent::Finished(outcome(&mut w.task).await),
            },
            outcome = outcome(&mut w.task) => WorkEvent::Finished(outcome),
        },
    }
}

pub(super) async fn outcome(task: &mut JoinHandle<Outcome>) -> Outcome {
    match task.await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(format!("the job's work ended abnormally: {e}")),
    }
}

/// Runs attempts until one hands over or fails definitely; transient errors
/// wait 1 s, 2 s, 4 s … up to 30 s and resume from the checkpoints.
pub(super) async fn run_with_retries(sync: FullSync, stop: CancellationToken) -> Outcome {
    let mut backoff = BACKOFF_FIRST;
    loop {
        // Dropped when told to stop: its connections close with it, and a
        // restart resumes from the chunks committed.
        let attempt = tokio::select! {
            r = sync.run() => r,
            _ = stop.cancelled() => return Outcome::Stopped,
        };
        match attempt {
            Ok(h) => return Outcome::HandedOver(h),
            Err(SyncError::Fenced(message)) => return Outcome::Fenced(message),
            Err(
                SyncError::Definite(message)
                | SyncError::Refused { message, .. }
                | SyncError::Purged(message),
            ) => return Outcome::Failed(message),
            Err(SyncError::Transient(message)) => {
                warn!(job = %sync.spec.name, error = %message, retry_in_secs = backoff.as_secs(),
                      "full sync interrupted; resuming after a pause");
                sync.metrics.count_retry(&sync.spec.name);
                sync.metrics.count_error(&sync.spec.name, "transient");
                sync.progress.send_modify(|p| {
                    p.retries += 1;
                    p.last_error = Some(message);
                });
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return Outcome::Stopped,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Runs the incremental sync until it fails definitely; transient errors
/// wait 1 s, 2 s, 4 s … up to 30 s and resume from the checkpoint (the
/// backoff starts over once the sync has run a minute without error).
pub(super) async fn run_incremental(sync: Incremental, switches: Arc<Switches>) -> Outcome {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let started = Instant::now();
        let message = match sync.run().await {
            Err(SyncError::Definite(message)) => return Outcome::Failed(message),
            Err(SyncError::Refused { txn, message }) => return Outcome::Refused(txn, message),
            Err(SyncError::Purged(message)) => return Outcome::Purged(message),
            Err(SyncError::Fenced(message)) => return Outcome::Fenced(message),
            Err(SyncError::Transient(message)) => message,
            Ok(()) => return Outcome::Stopped,
        };
        if started.elapsed() > Duration::from_secs(60) {
            backoff = BACKOFF_FIRST;
        }
        warn!(job = %sync.spec.name, error = %message, retry_in_secs = backoff.as_secs(),
              "incremental sync interrupted; resuming from the checkpoint after a pause");
        sync.metrics.count_retry(&sync.spec.name);
        sync.metrics.count_error(&sync.spec.name, "transient");
        sync.progress.send_modify(|p| {
            p.detail.retries += 1;
            p.detail.retrying = true;
            p.detail.last_error = Some(message.clone());
        });
        // A source gone for good may have been replaced by a promoted
        // replica: then the sync restarts on it at once.
        // A minded source: the arbitrator names a fit node.
        let follow = switches.follow_failover.load(Ordering::Relaxed);
        let moved = match sync.follow_minder().await {
            Some(node) => Some(node),
            None if follow => match sync.follow_dest().await {
                Some(node) => Some(node),
                None => sync.follow_primary().await,
            },
            None => None,
        };
        if let Some(node) = moved {
            sync.progress.send_modify(|p| {
                p.detail.last_error = Some(format!("{message}; now following {node}"));
            });
            backoff = BACKOFF_FIRST;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = sync.stop.cancelled() => return Outcome::Stopped,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
