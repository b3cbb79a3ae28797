//! What the data path reports of its work: a full sync's, an incremental
//! sync's and a verification's progress. The control plane stores these
//! with a job's status (`job::state::Progress`); their serde shapes are the
//! stored and the API's.

use crate::position::Position;
use serde::{Deserialize, Serialize};

/// Whether a verification (or one table's part of it, or a repair) is
/// still going on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckState {
    #[default]
    Pending,
    Running,
    Done,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Pending => "pending",
            CheckState::Running => "running",
            CheckState::Done => "done",
        }
    }
}

/// A comparison of the job's destination with its source while the job
/// runs (see `job::verify`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Verification {
    /// `running` until every table is compared (and every repair asked
    /// for is done and compared again), then `done`.
    pub state: CheckState,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub tables: Vec<TableCheck>,
    /// Why the comparison is waiting, when it is (it retries by itself).
    pub last_error: Option<String>,
}

impl Verification {
    pub fn new(tables: Vec<String>, now: i64) -> Self {
        Verification {
            state: CheckState::Running,
            started_at: now,
            finished_at: None,
            tables: tables
                .into_iter()
                .map(|table| TableCheck {
                    table,
                    ..TableCheck::default()
                })
                .collect(),
            last_error: None,
        }
    }
}

/// One table's comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TableCheck {
    /// The source table.
    pub table: String,
    pub state: CheckState,
    /// Known once `state` is `done`: no row differs.
    pub equal: Option<bool>,
    /// Rows missing from the destination, different there, or there but
    /// not in the source.
    pub rows_different: u64,
    /// The key ranges holding them (inclusive, in key order); at most
    /// [`MAX_RANGES`], then `ranges_truncated`.
    pub ranges: Vec<KeyRange>,
    pub ranges_truncated: bool,
    /// Source rows compared, and key-range chunks.
    pub rows_compared: u64,
    pub chunks_compared: u64,
    /// The source position the last chunk was compared as of.
    pub position: Option<String>,
    /// Unix milliseconds when the table's comparison finished.
    pub verified_at: Option<i64>,
    /// Where an interrupted comparison goes on: the upper bound of the last
    /// chunk compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Vec<KeyPart>>,
    /// Why the table could not be compared (it was dropped, say).
    pub error: Option<String>,
    /// The last repair of this table's differing ranges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<Repair>,
}

/// The most differing key ranges kept per table.
pub const MAX_RANGES: usize = 1000;

/// Re-copying a table's differing ranges, then comparing them again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Repair {
    pub state: CheckState,
    pub requested_at: i64,
    pub finished_at: Option<i64>,
    /// Ranges re-copied so far (of `ranges` when the repair was asked).
    pub ranges_total: u64,
    pub ranges_repaired: u64,
    /// Destination rows deleted and source rows written.
    pub rows_deleted: u64,
    pub rows_written: u64,
    /// The ranges being repaired (the verification's, when asked).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<KeyRange>,
    /// Where the range being copied goes on: the last key of its last page
    /// copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Vec<KeyPart>>,
}

/// Keys `first` to `last` (inclusive, in the key's order), holding `rows`
/// differing rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub first: Vec<KeyPart>,
    pub last: Vec<KeyPart>,
    pub rows: u64,
}

/// One key column's value: its text, or its bytes in hex when they are not
/// UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyPart {
    Text(String),
    Bytes { hex: String },
}

impl KeyPart {
    pub fn from_bytes(b: &[u8]) -> Self {
        match std::str::from_utf8(b) {
            Ok(s) => KeyPart::Text(s.to_string()),
            Err(_) => KeyPart::Bytes {
                hex: b.iter().map(|x| format!("{x:02x}")).collect(),
            },
        }
    }

    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        match self {
            KeyPart::Text(s) => Some(s.as_bytes().to_vec()),
            KeyPart::Bytes { hex } => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect(),
        }
    }
}

/// A table copied again while the rest of the job keeps flowing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PartialSync {
    /// The source table.
    pub table: String,
    pub reason: String,
    /// Unix milliseconds; tells one request from the next.
    pub requested_at: i64,
}

/// How far the incremental sync has got. The applied position itself is in
/// [`Progress`] (`commit_seq`, `position`, `commit_timestamp`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IncrementalProgress {
    /// Unix milliseconds.
    pub started_at: i64,
    /// Binlog coordinate after the last applied transaction.
    pub binlog_file: String,
    pub binlog_pos: u64,
    /// The source's newest transaction, as last read or polled.
    pub source_commit_seq: Option<u64>,
    pub source_position: Option<String>,
    /// Commit time of the newest transaction read from the source, unix seconds.
    pub source_commit_timestamp: Option<i64>,
    /// Everything read has been applied and the source had nothing newer.
    pub caught_up: bool,
    /// Unix milliseconds when the applied position last moved or the sync
    /// was last caught up (or started): how a stall is told.
    pub last_advance_at: i64,
    pub transactions_applied: u64,
    pub rows_applied: u64,
    pub ddl_applied: u64,
    pub binlog_bytes_read: u64,
    /// Tables whose snapshot is still ahead of the applied position (a
    /// database job is in DBTablesIncrementalSync until this is 0).
    pub tables_in_snapshot: u64,
    pub retries: u64,
    pub last_error: Option<String>,
    /// Between a transient error and streaming again.
    pub retrying: bool,
    /// The node the job reads from after following a failover, as the
    /// cluster reports it (`host:port`, mapped before connecting); `None`:
    /// the spec's source.
    pub source_node: Option<String>,
    /// The node the job writes to after its destination, a managed shard's
    /// primary, moved (`host:port`); `None`: the spec's destination.
    pub dest_node: Option<String>,
    /// With a minded source (`src.minder`): the Galera node name of the node
    /// read, as the arbitrator names it.
    pub minder_node: Option<String>,
    /// What that node last reported of its primary and replicas (at the
    /// sync's start, then every 30 s): where to look for a new primary.
    pub topology: crate::source::topology::Topology,
    /// A partial sync the incremental sync started by itself (a table's
    /// stream could not continue), for the runner to record.
    pub partial_started: Option<PartialSync>,
    /// The last partial sync finished: which request, and the snapshot its
    /// copy was read at.
    pub partial_done: Option<(PartialSync, Position)>,
    /// Source transactions skipped on request, and the last of them (GTID).
    pub transactions_skipped: u64,
    pub last_skipped: Option<String>,
}

/// The range of snapshot positions a table's chunks were copied at: events
/// after `from` are needed, and the table is consistent once past `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    pub from: Position,
    pub to: Position,
}

/// How far a full sync has got; elapsed time and the estimate of time left
/// are derived from it when shown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FullSyncProgress {
    /// Identifies this full sync's plan on the destination.
    pub run_id: i64,
    /// The source position the copy reads as of, once its snapshot is open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Position>,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub tables_total: u64,
    pub tables_done: u64,
    pub rows_copied: u64,
    /// Rows of copied chunks plus the server's estimate for the others.
    pub rows_estimated: u64,
    pub bytes_copied: u64,
    /// Snapshot connections copying in parallel.
    pub connections: u64,
    /// How rows are written: `load_data` (LOAD DATA LOCAL INFILE streams) or
    /// `insert` (multi-row INSERTs, when the destination has local_infile off).
    pub method: String,
    /// How long the brief global read lock was held to start them, if it was.
    pub lock_held_ms: Option<u64>,
    /// Times the copy hit a transient error and resumed.
    pub retries: u64,
    /// The last transient error, if the copy has hit one.
    pub last_error: Option<String>,
}
