//! The data path, as a library: copying a source's tables to a destination
//! (`full`), streaming its binlog after the copy (`incremental`), and
//! comparing and repairing the two while the stream runs (`verify`, which
//! stops the stream for a moment through `hold`). It reads through `source`
//! and writes through `dest`, and knows nothing of the CCR control plane
//! (`job`), the store or the API: each sync takes what to copy and where
//! ([`Route`]), its settings, live settings ([`Live`]) and the channels its
//! progress goes out on, and returns how it ended as a [`SyncError`] whose
//! kind says what the caller should do.
//!
//! [`SyncError`]: crate::error::SyncError

pub mod full;
pub mod hold;
pub mod incremental;
pub mod progress;
pub mod verify;

use crate::db::Endpoint;
use crate::sync::progress::PartialSync;

/// What a sync copies and where: the job's name (the key of its
/// checkpoints on the destination), the two sides and whether tables
/// already on the destination may be reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub src: Endpoint,
    pub dest: Endpoint,
    pub allow_table_exists: bool,
}

/// Settings that may change while a sync runs.
#[async_trait::async_trait]
pub trait Live: Send + Sync {
    /// The source as configured now: a host mapping update takes effect at
    /// the next connection.
    fn source(&self) -> Endpoint;
    /// A partial sync an operator asked for, if any.
    fn partial(&self) -> Option<PartialSync>;
    /// When `address` (`host:port`) is a node of a shard this service's
    /// cluster manager keeps: the shard's primary now (`host:port`), which
    /// a failover or a switchover moves. `None`: not a managed node.
    async fn shard_primary(&self, _address: &str) -> Option<String> {
        None
    }
}

/// What the data path counts as it goes: its own small interface, so that
/// it names nothing of the service (the service's `Metrics` implements it;
/// a caller that keeps no metrics passes [`NoMeter`]).
pub trait Meter: Send + Sync {
    fn count_chunk(&self, job: &str, rows: u64, bytes: u64);
    fn count_applied(
        &self,
        job: &str,
        transactions: u64,
        rows: &std::collections::HashMap<crate::change::RowOp, u64>,
    );
    fn observe_batch(&self, job: &str, secs: f64);
    fn count_binlog_bytes(&self, job: &str, bytes: u64);
    fn set_lag(&self, job: &str, secs: i64);
    fn count_ddl(&self, job: &str);
    fn set_retention_headroom(&self, job: &str, bytes: u64);
    fn set_retention_headroom_secs(&self, job: &str, secs: i64);
    fn set_verified(&self, job: &str, table: &str, at_secs: i64, rows_different: u64);
    /// A sync interrupted and resumed (counted by its caller).
    fn count_retry(&self, job: &str);
    fn count_error(&self, job: &str, kind: &str);
}

/// Counts nothing.
pub struct NoMeter;

impl Meter for NoMeter {
    fn count_chunk(&self, _: &str, _: u64, _: u64) {}
    fn count_applied(
        &self,
        _: &str,
        _: u64,
        _: &std::collections::HashMap<crate::change::RowOp, u64>,
    ) {
    }
    fn observe_batch(&self, _: &str, _: f64) {}
    fn count_binlog_bytes(&self, _: &str, _: u64) {}
    fn set_lag(&self, _: &str, _: i64) {}
    fn count_ddl(&self, _: &str) {}
    fn set_retention_headroom(&self, _: &str, _: u64) {}
    fn set_retention_headroom_secs(&self, _: &str, _: i64) {}
    fn set_verified(&self, _: &str, _: &str, _: i64, _: u64) {}
    fn count_retry(&self, _: &str) {}
    fn count_error(&self, _: &str, _: &str) {}
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
