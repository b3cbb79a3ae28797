//! Every metric the service exports: names and help texts live here only.
//!
//! Per-job series carry the job name as the `job` label (never inside the
//! metric name). Each service instance has its own registry, so several
//! services in one process (the tests) do not mix their series.

use crate::job::state::{JobStatus, ProgressState, RunState};
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

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
        must(registry.register(Box::new(jobs.clone())));
        must(registry.register(Box::new(job_state.clone())));
        must(registry.register(Box::new(job_progress_state.clone())));
        must(registry.register(Box::new(http_requests.clone())));
        must(registry.register(Box::new(build_info)));
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
        }
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
        ] {
            let _ = counter.remove_label_values(&[job]);
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

    /// The Prometheus text exposition of every series.
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
