//! The cluster manager's metrics, in the service's registry: jobs by type
//! and status, step durations, failed steps, agents up.

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::time::Duration;

pub struct ClusterMetrics {
    jobs: IntGaugeVec,
    steps: HistogramVec,
    step_failures: IntCounterVec,
    step_retries: IntCounterVec,
    agents_up: IntGauge,
    pub primary_up: IntGaugeVec,
    pub failovers: IntCounterVec,
    pub lag: GaugeVec,
    /// Seconds the binlog archive of a shard is behind its primary.
    pub archive_lag: GaugeVec,
    /// Gaps in a shard's binlog archive (binlogs purged unarchived).
    pub archive_gaps: IntGaugeVec,
}

impl ClusterMetrics {
    pub fn new(registry: &Registry) -> ClusterMetrics {
        let jobs = IntGaugeVec::new(
            Opts::new(
                "ccr_cluster_jobs",
                "Cluster-manager jobs (the newest 1000), by type and status.",
            ),
            &["job_type", "status"],
        )
        .expect("valid metric");
        let steps = HistogramVec::new(
            HistogramOpts::new(
                "ccr_cluster_step_seconds",
                "How long the steps of cluster-manager jobs took.",
            )
            .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0]),
            &["job_type", "step"],
        )
        .expect("valid metric");
        let step_failures = IntCounterVec::new(
            Opts::new(
                "ccr_cluster_step_failures_total",
                "Steps of cluster-manager jobs that failed.",
            ),
            &["job_type", "step"],
        )
        .expect("valid metric");
        let step_retries = IntCounterVec::new(
            Opts::new(
                "ccr_cluster_step_retries_total",
                "Steps run again because the manager stopped while they ran (found running on resume).",
            ),
            &["job_type", "step"],
        )
        .expect("valid metric");
        let agents_up = IntGauge::new(
            "ccr_cluster_agents_up",
            "Machines whose node agent answered its last heartbeat.",
        )
        .expect("valid metric");
        let primary_up = IntGaugeVec::new(
            Opts::new(
                "ccr_cluster_shard_primary_up",
                "1 when the shard's primary answers and takes a write (the watcher's last probe), else 0.",
            ),
            &["cluster_id", "shard_id"],
        )
        .expect("valid metric");
        let failovers = IntCounterVec::new(
            Opts::new(
                "ccr_cluster_failovers_total",
                "Promotions of a shard's replica: unreachable, not_writable, stopped (automatic) or manual.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let lag = GaugeVec::new(
            Opts::new(
                "ccr_cluster_node_replication_lag_seconds",
                "Seconds_Behind_Master of each replica of a managed shard (the watcher's last probe).",
            ),
            &["cluster_id", "shard_id", "node"],
        )
        .expect("valid metric");
        let archive_lag = GaugeVec::new(
            Opts::new(
                "ccr_cluster_archive_lag_seconds",
                "How far behind its primary each managed shard's binlog archive is (0: every transaction read is stored).",
            ),
            &["cluster_id", "shard_id"],
        )
        .expect("valid metric");
        let archive_gaps = IntGaugeVec::new(
            Opts::new(
                "ccr_cluster_archive_gaps",
                "Gaps in a shard's binlog archive: binlogs purged before they were archived (no point in time inside one can be restored).",
            ),
            &["cluster_id", "shard_id"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(archive_lag.clone()));
        let _ = registry.register(Box::new(archive_gaps.clone()));
        let _ = registry.register(Box::new(primary_up.clone()));
        let _ = registry.register(Box::new(failovers.clone()));
        let _ = registry.register(Box::new(lag.clone()));
        // Registered once per service; a second manager on one registry
        // (tests) keeps its own unregistered copies.
        let _ = registry.register(Box::new(jobs.clone()));
        let _ = registry.register(Box::new(steps.clone()));
        let _ = registry.register(Box::new(step_failures.clone()));
        let _ = registry.register(Box::new(step_retries.clone()));
        let _ = registry.register(Box::new(agents_up.clone()));
        ClusterMetrics {
            jobs,
            steps,
            step_failures,
            step_retries,
            agents_up,
            primary_up,
            failovers,
            lag,
            archive_lag,
            archive_gaps,
        }
    }
}

impl super::engine::Observer for ClusterMetrics {
    fn step_done(&self, job_type: &str, step: &str, took: Duration, ok: bool) {
        self.steps
            .with_label_values(&[job_type, step])
            .observe(took.as_secs_f64());
        if !ok {
            self.step_failures
                .with_label_values(&[job_type, step])
                .inc();
        }
    }

    fn step_retried(&self, job_type: &str, step: &str) {
        self.step_retries.with_label_values(&[job_type, step]).inc();
    }
}

impl ClusterMetrics {
    pub fn jobs(&self, counts: &[((String, String), i64)]) {
        self.jobs.reset();
        for ((t, s), n) in counts {
            self.jobs.with_label_values(&[t, s]).set(*n);
        }
    }

    pub fn agents_up(&self, n: i64) {
        self.agents_up.set(n);
    }
}
