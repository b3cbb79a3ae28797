//! Every metric the service exports: names and help texts live here only.
//!
//! Per-job series carry the job name as the `job` label (never inside the
//! metric name). Each service instance has its own registry, so several
//! services in one process (the tests) do not mix their series.

use crate::change::RowOp;
use crate::job::state::{JobStatus, ProgressState, RunState};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::collections::HashMap;

pub struct Metrics {
    registry: Registry,
    jobs: IntGauge,
    job_state: IntGaugeVec,
    job_progress_state: IntGaugeVec,
    http_requests: IntCounterVec,
    full_sync_rows: IntCounterVec,
    full_sync_bytes: IntCounterVec,
    full_sync_chunks: IntCounterVec,
    job_retries: IntCounterVec,
    lag_seconds: IntGaugeVec,
    job_stalled: IntGaugeVec,
    retention_headroom: IntGaugeVec,
    retention_headroom_secs: IntGaugeVec,
    applied_transactions: IntCounterVec,
    applied_rows: IntCounterVec,
    applied_ddl: IntCounterVec,
    binlog_bytes: IntCounterVec,
    apply_batch_seconds: HistogramVec,
    job_errors: IntCounterVec,
    group_members: IntGaugeVec,
    group_leader: IntGauge,
    group_term: IntGauge,
    group_read_only: IntGauge,
    group_jobs_unowned: IntGauge,
    group_jobs_lost: prometheus::IntCounter,
    group_assignments: prometheus::IntCounter,
    verify_timestamp: IntGaugeVec,
    verify_equal: IntGaugeVec,
    verify_rows_different: IntGaugeVec,
}

/// What the group's loop last saw, for the `ccr_syncer_group_*` series.
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupReading {
    pub alive: usize,
    pub draining: usize,
    pub dead: usize,
    pub leader: bool,
    pub term: i64,
    pub read_only: bool,
    pub unowned: usize,
}

fn must<T>(result: prometheus::Result<T>) -> T {
    // The names and labels below are constants; registering them fails only if
    // one is malformed or registered twice, which the unit test catches.
    result.expect("static metric definition is valid")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let jobs = must(IntGauge::new(
            "ccr_syncer_jobs",
            "Number of replication jobs this syncer runs.",
        ));
        let job_state = must(IntGaugeVec::new(
            Opts::new(
                "ccr_syncer_job_state",
                "1 for the run state (running, paused, desynced) a job is in, 0 for the others.",
            ),
            &["job", "state"],
        ));
        let job_progress_state = must(IntGaugeVec::new(
            Opts::new(
                "ccr_syncer_job_progress_state",
                "1 for the progress state (DBFullSync, TableIncrementalSync, ...) a job is in, 0 for the others.",
            ),
            &["job", "progress_state"],
        ));
        let http_requests = must(IntCounterVec::new(
            Opts::new(
                "ccr_syncer_http_requests_total",
                "API requests answered, by operation and HTTP status.",
            ),
            &["operation", "code"],
        ));
        let per_job = |name: &str, help: &str| {
            let counter = must(IntCounterVec::new(Opts::new(name, help), &["job"]));
            must(registry.register(Box::new(counter.clone())));
            counter
        };
        let full_sync_rows = per_job(
            "ccr_syncer_full_sync_rows_total",
            "Rows a job's full sync copied to the destination (committed chunks).",
        );
        let full_sync_bytes = per_job(
            "ccr_syncer_full_sync_bytes_total",
            "Bytes of row data a job's full sync copied to the destination (committed chunks).",
        );
        let full_sync_chunks = per_job(
            "ccr_syncer_full_sync_chunks_total",
            "Chunks a job's full sync committed to the destination.",
        );
        let job_retries = per_job(
            "ccr_syncer_job_retries_total",
            "Times a job's work stopped on a transient error (lost connection, deadlock, ...) and was retried.",
        );
        let applied_transactions = per_job(
            "ccr_syncer_applied_transactions_total",
            "Source transactions a job's incremental sync committed on the destination.",
        );
        let applied_ddl = per_job(
            "ccr_syncer_applied_ddl_total",
            "DDL statements a job's incremental sync ran on the destination.",
        );
        let binlog_bytes = per_job(
            "ccr_syncer_binlog_bytes_read_total",
            "Bytes of binlog events a job read from its source.",
        );
        let lag_seconds = must(IntGaugeVec::new(
            Opts::new(
                "ccr_syncer_lag_seconds",
                "Age of the newest change a job has applied while its source has newer ones; 0 only when caught up while streaming (a paused, held, retrying or copying job shows the time since its last applied change).",
            ),
            &["job"],
        ));
        let retention_headroom = must(IntGaugeVec::new(
            Opts::new(
                "ccr_syncer_binlog_retention_headroom_bytes",
                "Bytes of binlog the source holds before a job's position: what it can purge before the position itself goes (then the job needs a full sync).",
            ),
            &["job"],
        ));
        let retention_headroom_secs = must(IntGaugeVec::new(
            Opts::new(
                "ccr_syncer_binlog_retention_headroom_seconds",
                "How much older the source's oldest binlog is than a job's position (commit time of its last applied transaction minus the oldest binlog's start).",
            ),
            &["job"],
        ));
        let applied_rows = must(IntCounterVec::new(
            Opts::new(
                "ccr_syncer_applied_rows_total",
                "Row changes a job's incremental sync committed on the destination, by operation.",
            ),
            &["job", "op"],
        ));
        let apply_batch_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "ccr_syncer_apply_batch_seconds",
                "Time from a destination transaction's first statement to its commit.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
            ]),
            &["job"],
        ));
        let job_errors = must(IntCounterVec::new(
            Opts::new(
                "ccr_syncer_job_errors_total",
                "Errors that stopped a job's work, by kind: transient (retried) or definite (job paused).",
            ),
            &["job", "kind"],
        ));
        let build_info = must(IntGaugeVec::new(
            Opts::new(
                "ccr_syncer_build_info",
                "Always 1; the version label says which ccr-syncer runs.",
            ),
            &["version"],
        ));
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let group_members = must(IntGaugeVec::new(
            Opts::new(
                "ccr_syncer_group_members",
                "Members of this syncer's group by state (alive, draining, dead), as this member last saw them.",
            ),
            &["state"],
        ));
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let group_leader = gauge(
            "ccr_syncer_group_leader",
            "1 while this member leads its group (assigns jobs), else 0.",
        );
        let group_term = gauge(
            "ccr_syncer_group_term",
            "The group's leadership term; it grows with every new leader.",
        );
        let group_read_only = gauge(
            "ccr_syncer_group_read_only",
            "1 while this member cannot write the group's store (it then runs no jobs after most of a lease).",
        );
        let group_jobs_unowned = gauge(
            "ccr_syncer_group_jobs_unowned",
            "Jobs of the group no live member holds at the moment (a takeover under way).",
        );
        let counter = |name: &str, help: &str| {
            let c = must(prometheus::IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let group_jobs_lost = counter(
            "ccr_syncer_group_jobs_lost_total",
            "Jobs this member was running when another member took their lease (it stopped them).",
        );
        let group_assignments = counter(
            "ccr_syncer_group_assignments_total",
            "Jobs this member, as leader, gave to a member (new jobs, takeovers, drains, balancing).",
        );
        must(registry.register(Box::new(group_members.clone())));
        must(registry.register(Box::new(jobs.clone())));
        must(registry.register(Box::new(job_state.clone())));
        must(registry.register(Box::new(job_progress_state.clone())));
        must(registry.register(Box::new(http_requests.clone())));
        must(registry.register(Box::new(build_info)));
        must(registry.register(Box::new(lag_seconds.clone())));
        let job_stalled = must(IntGaugeVec::new(
            Opts::new(
                "ccr_syncer_job_stalled",
                "1 while a running job applies nothing although its source has newer transactions (for [incremental] stall_secs or longer).",
            ),
            &["job"],
        ));
        must(registry.register(Box::new(job_stalled.clone())));
        let verify_gauge = |name: &str, help: &str| {
            let g = must(IntGaugeVec::new(Opts::new(name, help), &["job", "table"]));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let verify_timestamp = verify_gauge(
            "ccr_syncer_verify_last_timestamp_seconds",
            "When the table was last compared with its source (/verify, /repair), unix seconds.",
        );
        let verify_equal = verify_gauge(
            "ccr_syncer_verify_equal",
            "1 when the table's last comparison found it equal to its source, 0 when it found differences.",
        );
        let verify_rows_different = verify_gauge(
            "ccr_syncer_verify_rows_different",
            "Rows the table's last comparison found different from its source (missing, changed or extra).",
        );
        must(registry.register(Box::new(retention_headroom.clone())));
        must(registry.register(Box::new(retention_headroom_secs.clone())));
        must(registry.register(Box::new(applied_rows.clone())));
        must(registry.register(Box::new(apply_batch_seconds.clone())));
        must(registry.register(Box::new(job_errors.clone())));
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        Metrics {
            registry,
            jobs,
            job_state,
            job_progress_state,
            http_requests,
            full_sync_rows,
            full_sync_bytes,
            full_sync_chunks,
            job_retries,
            lag_seconds,
            job_stalled,
            retention_headroom,
            retention_headroom_secs,
            applied_transactions,
            applied_rows,
            applied_ddl,
            binlog_bytes,
            apply_batch_seconds,
            job_errors,
            group_members,
            group_leader,
            group_term,
            group_read_only,
            group_jobs_unowned,
            group_jobs_lost,
            group_assignments,
            verify_timestamp,
            verify_equal,
            verify_rows_different,
        }
    }

    /// A table's comparison finished at `at_secs`.
    pub fn set_verified(&self, job: &str, table: &str, at_secs: i64, rows_different: u64) {
        let labels = [job, table];
        self.verify_timestamp
            .with_label_values(&labels)
            .set(at_secs);
        self.verify_equal
            .with_label_values(&labels)
            .set(i64::from(rows_different == 0));
        self.verify_rows_different
            .with_label_values(&labels)
            .set(rows_different as i64);
    }

    pub fn set_group(&self, r: GroupReading) {
        for (state, n) in [
            ("alive", r.alive),
            ("draining", r.draining),
            ("dead", r.dead),
        ] {
            self.group_members.with_label_values(&[state]).set(n as i64);
        }
        self.group_leader.set(r.leader as i64);
        self.group_term.set(r.term);
        self.group_read_only.set(r.read_only as i64);
        self.group_jobs_unowned.set(r.unowned as i64);
    }

    pub fn set_group_read_only(&self, read_only: bool) {
        self.group_read_only.set(read_only as i64);
    }

    pub fn count_job_lost(&self) {
        self.group_jobs_lost.inc();
    }

    pub fn count_assignment(&self) {
        self.group_assignments.inc();
    }

    pub fn count_applied(&self, job: &str, transactions: u64, rows: &HashMap<RowOp, u64>) {
        self.applied_transactions
            .with_label_values(&[job])
            .inc_by(transactions);
        for (op, n) in rows {
            self.applied_rows
                .with_label_values(&[job, op.as_str()])
                .inc_by(*n);
        }
    }

    pub fn count_ddl(&self, job: &str) {
        self.applied_ddl.with_label_values(&[job]).inc();
    }

    pub fn count_binlog_bytes(&self, job: &str, bytes: u64) {
        self.binlog_bytes.with_label_values(&[job]).inc_by(bytes);
    }

    pub fn set_stalled(&self, job: &str, stalled: bool) {
        self.job_stalled
            .with_label_values(&[job])
            .set(stalled as i64);
    }

    pub fn set_lag(&self, job: &str, secs: i64) {
        self.lag_seconds.with_label_values(&[job]).set(secs);
    }

    pub fn set_retention_headroom(&self, job: &str, bytes: u64) {
        self.retention_headroom
            .with_label_values(&[job])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn set_retention_headroom_secs(&self, job: &str, secs: i64) {
        self.retention_headroom_secs
            .with_label_values(&[job])
            .set(secs);
    }

    pub fn observe_batch(&self, job: &str, secs: f64) {
        self.apply_batch_seconds
            .with_label_values(&[job])
            .observe(secs);
    }

    /// `kind` is `transient` or `definite`.
    pub fn count_error(&self, job: &str, kind: &str) {
        self.job_errors.with_label_values(&[job, kind]).inc();
    }

    pub fn count_chunk(&self, job: &str, rows: u64, bytes: u64) {
        self.full_sync_rows.with_label_values(&[job]).inc_by(rows);
        self.full_sync_bytes.with_label_values(&[job]).inc_by(bytes);
        self.full_sync_chunks.with_label_values(&[job]).inc();
    }

    pub fn count_retry(&self, job: &str) {
        self.job_retries.with_label_values(&[job]).inc();
    }

    pub fn set_job_status(&self, job: &str, status: JobStatus) {
        for s in RunState::ALL {
            self.job_state
                .with_label_values(&[job, s.as_str()])
                .set(i64::from(s == status.run_state));
        }
        for p in ProgressState::ALL {
            self.job_progress_state
                .with_label_values(&[job, p.as_str()])
                .set(i64::from(p == status.progress_state));
        }
    }

    pub fn remove_job(&self, job: &str) {
        for s in RunState::ALL {
            let _ = self.job_state.remove_label_values(&[job, s.as_str()]);
        }
        for p in ProgressState::ALL {
            let _ = self
                .job_progress_state
                .remove_label_values(&[job, p.as_str()]);
        }
        for counter in [
            &self.full_sync_rows,
            &self.full_sync_bytes,
            &self.full_sync_chunks,
            &self.job_retries,
            &self.applied_transactions,
            &self.applied_ddl,
            &self.binlog_bytes,
        ] {
            let _ = counter.remove_label_values(&[job]);
        }
        let _ = self.lag_seconds.remove_label_values(&[job]);
        use prometheus::core::Collector;
        for gauge in [
            &self.verify_timestamp,
            &self.verify_equal,
            &self.verify_rows_different,
        ] {
            for m in gauge.collect().iter().flat_map(|f| f.get_metric().to_vec()) {
                let labels: Vec<String> = m
                    .get_label()
                    .iter()
                    .map(|l| l.value().to_string())
                    .collect();
                if labels.first().map(String::as_str) == Some(job) {
                    let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
                    let _ = gauge.remove_label_values(&refs);
                }
            }
        }
        let _ = self.job_stalled.remove_label_values(&[job]);
        let _ = self.retention_headroom.remove_label_values(&[job]);
        let _ = self.retention_headroom_secs.remove_label_values(&[job]);
        let _ = self.apply_batch_seconds.remove_label_values(&[job]);
        for op in [RowOp::Insert, RowOp::Update, RowOp::Delete] {
            let _ = self.applied_rows.remove_label_values(&[job, op.as_str()]);
        }
        for kind in ["transient", "definite", "refused", "binlog_purged"] {
            let _ = self.job_errors.remove_label_values(&[job, kind]);
        }
    }

    pub fn set_job_count(&self, n: usize) {
        self.jobs.set(n as i64);
    }

    pub fn count_request(&self, operation: &str, code: u16) {
        self.http_requests
            .with_label_values(&[operation, &code.to_string()])
            .inc();
    }

    /// A per-job gauge's value, if the job has that series (read without
    /// creating one).
    pub fn job_gauge(&self, name: &str, job: &str) -> Option<i64> {
        self.registry
            .gather()
            .iter()
            .find(|f| f.name() == name)?
            .get_metric()
            .iter()
            .find(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "job" && l.value() == job)
            })
            .map(|m| m.get_gauge().value() as i64)
    }

    /// The Prometheus text exposition of every series.
    /// The registry, for another module's metrics (the cluster manager's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail on I/O; a failure would be a bug in a
        // metric definition, and an empty scrape then shows it.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The data path counts through its own interface; these are the metrics
/// it lands in.
impl crate::sync::Meter for Metrics {
    fn count_chunk(&self, job: &str, rows: u64, bytes: u64) {
        Metrics::count_chunk(self, job, rows, bytes)
    }
    fn count_applied(&self, job: &str, transactions: u64, rows: &HashMap<RowOp, u64>) {
        Metrics::count_applied(self, job, transactions, rows)
    }
    fn observe_batch(&self, job: &str, secs: f64) {
        Metrics::observe_batch(self, job, secs)
    }
    fn count_binlog_bytes(&self, job: &str, bytes: u64) {
        Metrics::count_binlog_bytes(self, job, bytes)
    }
    fn set_lag(&self, job: &str, secs: i64) {
        Metrics::set_lag(self, job, secs)
    }
    fn count_ddl(&self, job: &str) {
        Metrics::count_ddl(self, job)
    }
    fn set_retention_headroom(&self, job: &str, bytes: u64) {
        Metrics::set_retention_headroom(self, job, bytes)
    }
    fn set_retention_headroom_secs(&self, job: &str, secs: i64) {
        Metrics::set_retention_headroom_secs(self, job, secs)
    }
    fn set_verified(&self, job: &str, table: &str, at_secs: i64, rows_different: u64) {
        Metrics::set_verified(self, job, table, at_secs, rows_different)
    }
    fn count_retry(&self, job: &str) {
        Metrics::count_retry(self, job)
    }
    fn count_error(&self, job: &str, kind: &str) {
        Metrics::count_error(self, job, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::SyncType;

    #[test]
    fn job_series_follow_the_job() {
        let m = Metrics::new();
        m.set_job_status("j1", JobStatus::initial(SyncType::Table));
        m.count_chunk("j1", 10, 100);
        let text = m.render();
        assert!(
            text.contains("ccr_syncer_job_state{job=\"j1\",state=\"running\"} 1"),
            "{text}"
        );
        assert!(text.contains("ccr_syncer_job_state{job=\"j1\",state=\"paused\"} 0"));
        assert!(text.contains(
            "ccr_syncer_job_progress_state{job=\"j1\",progress_state=\"TableFullSync\"} 1"
        ));
        assert!(text.contains("ccr_syncer_full_sync_rows_total{job=\"j1\"} 10"));
        m.remove_job("j1");
        assert!(!m.render().contains("j1"));
    }
}
