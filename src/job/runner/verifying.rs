//! The runner's verification: started and stopped beside the incremental
//! sync as a job's `verify` progress asks, its progress folded in.

use super::*;

impl Runner {
    /// Starts or stops the verification so that it runs exactly while one
    /// is asked for and the incremental sync runs.
    pub(super) async fn reconcile_verify(
        &self,
        verifying: Option<VerifyWork>,
        work: &Option<Work>,
    ) -> Option<VerifyWork> {
        let current = self.snapshot.borrow().clone();
        let streaming = work
            .as_ref()
            .is_some_and(|w| matches!(w.key, WorkKey::Incremental(_)));
        let wanted = current
            .progress
            .verify
            .clone()
            .filter(|v| v.state != CheckState::Done && streaming);
        // It reads the node the stream reads: after a failover, the new one.
        let node = current
            .progress
            .incremental
            .as_ref()
            .and_then(|i| i.source_node.clone());
        let source = incremental::stream_source(&current.spec.src, node.as_deref());
        let key = wanted.as_ref().map(|w| (w.started_at, source.address()));
        match verifying {
            Some(v) if Some((v.started_at, v.source.clone())) == key => return Some(v),
            Some(v) => v.stop().await,
            None => {}
        }
        let wanted = wanted?;
        let started_at = wanted.started_at;
        let (progress, rx) = watch::channel(wanted);
        let address = source.address();
        let task = Verify {
            spec: Arc::new(current.spec.route()),
            source,
            settings: self.settings.verify,
            connect_timeout: self.settings.connect_timeout,
            statement_bytes: self.settings.full_sync.statement_bytes,
            epoch: self.fence.epoch,
            holds: self.holds.clone(),
            metrics: self.metrics.clone(),
            progress,
        };
        info!(job = %current.spec.name, "verification starting");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        Some(VerifyWork {
            started_at,
            source: address,
            // Dropped when told to stop: its connections close with it.
            task: tokio::spawn(async move {
                tokio::select! {
                    r = task.run() => r,
                    _ = stopped.cancelled() => Ok(()),
                }
            }),
            progress: rx,
            stop,
        })
    }

    /// Folds a verification's progress into the job; saves it when asked,
    /// or when a table or the whole finished. Returns whether it saved.
    pub(super) async fn update_verify(&self, v: Verification, save: bool) -> bool {
        let current = self.snapshot.borrow().clone();
        let Some(known) = current.progress.verify.as_ref() else {
            return false;
        };
        // A report of a verification replaced meanwhile (a new full sync).
        if known.started_at != v.started_at {
            return false;
        }
        let states = |v: &Verification| {
            (
                v.state,
                v.tables
                    .iter()
                    .map(|t| (t.state, t.repair.as_ref().map(|r| r.state)))
                    .collect::<Vec<_>>(),
            )
        };
        let save = save || states(known) != states(&v);
        let mut next = current.progress.clone();
        next.verify = Some(v);
        self.save_and_publish(&current, next, save, "the verification")
            .await;
        save
    }

    /// The source tables a verification compares: those asked (each must
    /// be in the job's scope), or all of them.
    pub(super) async fn verify_tables(
        &self,
        current: &JobSnapshot,
        asked: Vec<String>,
    ) -> Result<Vec<String>, JobError> {
        let spec = &current.spec;
        let invalid = |m: String| JobError::Invalid(m);
        if let Some(t) = &spec.src.table {
            if let Some(other) = asked.iter().find(|a| *a != t) {
                return Err(invalid(format!(
                    "this table job copies {t}; tables may name only it, not {other}"
                )));
            }
            return Ok(vec![t.clone()]);
        }
        let node = current
            .progress
            .incremental
            .as_ref()
            .and_then(|i| i.source_node.clone());
        let source = incremental::stream_source(&spec.src, node.as_deref());
        let present = verify::source_tables(&source, self.settings.connect_timeout)
            .await
            .map_err(|e| invalid(e.to_string()))?;
        if asked.is_empty() {
            return Ok(present);
        }
        let missing: Vec<&str> = asked
            .iter()
            .filter(|a| !present.contains(a))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "source {} has no table {} in database {}",
                source.address(),
                missing.join(", "),
                spec.src.database
            )));
        }
        let mut tables = asked;
        tables.sort();
        tables.dedup();
        Ok(tables)
    }
}
