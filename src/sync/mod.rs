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
pub trait Live: Send + Sync {
    /// The source as configured now: a host mapping update takes effect at
    /// the next connection.
    fn source(&self) -> Endpoint;
    /// A partial sync an operator asked for, if any.
    fn partial(&self) -> Option<PartialSync>;
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
