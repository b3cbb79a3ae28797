//! A job's state and the pure function that moves it.
//!
//! A job has a *run state* (`running`, `paused`, or `desynced` once detached
//! from its destination) and a *progress state* (the Doris syncer's names:
//! which phase of the sync it is in). Commands from the API arrive as
//! [`JobCommand`]s; [`transition`] decides, without any I/O, what the new
//! status is or why the command is refused. The runner persists the result
//! before it acknowledges the command, so an acknowledged command survives a
//! restart.

use super::spec::SyncType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Paused,
    /// Detached by `desync`: the job writes nothing more to its destination.
    Desynced,
}

impl RunState {
    pub const ALL: [RunState; 3] = [RunState::Running, RunState::Paused, RunState::Desynced];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Desynced => "desynced",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgressState {
    DBFullSync,
    DBTablesIncrementalSync,
    DBIncrementalSync,
    DBPartialSync,
    TableFullSync,
    TableIncrementalSync,
    TablePartialSync,
}

impl ProgressState {
    pub const ALL: [ProgressState; 7] = [
        ProgressState::DBFullSync,
        ProgressState::DBTablesIncrementalSync,
        ProgressState::DBIncrementalSync,
        ProgressState::DBPartialSync,
        ProgressState::TableFullSync,
        ProgressState::TableIncrementalSync,
        ProgressState::TablePartialSync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProgressState::DBFullSync => "DBFullSync",
            ProgressState::DBTablesIncrementalSync => "DBTablesIncrementalSync",
            ProgressState::DBIncrementalSync => "DBIncrementalSync",
            ProgressState::DBPartialSync => "DBPartialSync",
            ProgressState::TableFullSync => "TableFullSync",
            ProgressState::TableIncrementalSync => "TableIncrementalSync",
            ProgressState::TablePartialSync => "TablePartialSync",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Where a partial sync puts a job of this type.
    pub fn partial_sync(sync_type: SyncType) -> Self {
        match sync_type {
            SyncType::Db => ProgressState::DBPartialSync,
            SyncType::Table => ProgressState::TablePartialSync,
        }
    }

    pub fn is_incremental(self) -> bool {
        matches!(
            self,
            ProgressState::DBTablesIncrementalSync
                | ProgressState::DBIncrementalSync
                | ProgressState::TableIncrementalSync
        )
    }

    /// Where a job of this type starts, and where a full resync sends it back.
    pub fn full_sync(sync_type: SyncType) -> Self {
        match sync_type {
            SyncType::Db => ProgressState::DBFullSync,
            SyncType::Table => ProgressState::TableFullSync,
        }
    }
}

impl fmt::Display for ProgressState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobStatus {
    pub run_state: RunState,
    pub progress_state: ProgressState,
}

impl JobStatus {
    pub fn initial(sync_type: SyncType) -> Self {
        JobStatus {
            run_state: RunState::Running,
            progress_state: ProgressState::full_sync(sync_type),
        }
    }
}

/// How far a job has got, as persisted with its status. The sync phases fill
/// it in; until a job has applied a source transaction every field is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    /// Commit seq of the last source transaction applied (see doc/operations.md).
    pub commit_seq: Option<u64>,
    /// Source position just after that transaction: a GTID position, or `file:pos`.
    pub position: Option<String>,
    /// Source commit time of that transaction, unix seconds.
    pub commit_timestamp: Option<i64>,
    /// Commit seq of a source transaction the destination refused, which holds the job.
    pub failed_commit_seq: Option<u64>,
    /// That transaction: which one, the statement and the server's error.
    pub failed_transaction: Option<FailedTransaction>,
    /// The transaction an operator asked to skip (`job_skip_binlog` with
    /// `silence`), until the job is past it.
    pub skip: Option<FailedTransaction>,
    /// The table being copied again (partial sync), and why.
    pub partial: Option<PartialSync>,
    /// The last error that stopped or held the job.
    pub last_error: Option<String>,
    /// Why the current full sync runs, when it was asked for rather than the first one.
    pub full_sync_reason: Option<String>,
    /// The current or last full sync.
    pub full_sync: Option<FullSyncProgress>,
    /// The source position P the last full sync copied as of, where the
    /// incremental sync starts.
    pub snapshot: Option<SnapshotPoint>,
    /// For each destination table, the snapshot positions its rows were
    /// copied at (all P, unless an interrupted copy resumed from a newer
    /// snapshot).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tables: BTreeMap<String, TableSnapshot>,
    /// The incremental sync since the last full sync.
    pub incremental: Option<IncrementalProgress>,
    /// The current or last verification (`/verify`) and repairs (`/repair`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verification>,
}

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

/// A source transaction the destination refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailedTransaction {
    /// The commit seq of the position just after it (see doc/operations.md).
    pub commit_seq: Option<u64>,
    /// Its GTID (`domain-server-seq`), where the source logs GTIDs.
    pub gtid: Option<String>,
    /// Where it starts in the source's binlog (`file:pos`).
    pub binlog_position: String,
    /// The statement the destination refused (long values elided), if any.
    pub statement: Option<String>,
    /// What the destination said.
    pub error: String,
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
    /// What that node last reported of its primary and replicas (at the
    /// sync's start, then every 30 s): where to look for a new primary.
    pub topology: crate::source::topology::Topology,
    /// A partial sync the incremental sync started by itself (a table's
    /// stream could not continue), for the runner to record.
    pub partial_started: Option<PartialSync>,
    /// The last partial sync finished: which request, and the snapshot its
    /// copy was read at.
    pub partial_done: Option<(PartialSync, SnapshotPoint)>,
    /// Source transactions skipped on request, and the last of them (GTID).
    pub transactions_skipped: u64,
    pub last_skipped: Option<String>,
}

/// A source position: GTID position (empty if the source logs no GTIDs)
/// and binlog coordinate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPoint {
    pub gtid: String,
    pub binlog_file: String,
    pub binlog_pos: u64,
}

/// The range of snapshot positions a table's chunks were copied at: events
/// after `from` are needed, and the table is consistent once past `to`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSnapshot {
    pub from: SnapshotPoint,
    pub to: SnapshotPoint,
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
    pub snapshot: Option<SnapshotPoint>,
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

/// Commands the API sends to a job's runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobCommand {
    Pause,
    Resume,
    Desync,
    /// Re-run a full sync (`force_fullsync`, or `job_skip_binlog` with `fullsync`).
    FullSync {
        reason: String,
    },
    /// Copy one source table again while the rest keeps flowing.
    PartialSync {
        table: String,
        reason: String,
    },
    /// Skip the one source transaction the job is held on (`skip_by: silence`).
    SkipTransaction {
        commit_seq: u64,
    },
    /// Compare these source tables (the runner names them all when the
    /// request named none) with the destination.
    Verify {
        tables: Vec<String>,
    },
    /// Copy again the ranges the last verification found different in this
    /// source table, then compare them again.
    Repair {
        table: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("job is desynced from its destination; delete it and create a new job to sync again")]
    Desynced,
    #[error("job is not held on a failed transaction, so there is nothing to skip (asked to skip commit seq {asked})")]
    NothingToSkip { asked: u64 },
    #[error("job is held on commit seq {held}, not {asked}; skip_commit_seq must name the transaction the job is held on")]
    WrongSkip { held: u64, asked: u64 },
    #[error("a partial sync needs the job in incremental sync (it is in {state})")]
    NotIncremental { state: ProgressState },
    #[error(
        "this table job copies {table}; partial_sync names the job's table (or use force_fullsync)"
    )]
    OtherTable { table: String },
    #[error("{what} needs the job streaming: running in incremental sync (it is {run_state}, in {state}){hint}")]
    NotStreaming {
        what: &'static str,
        run_state: RunState,
        state: ProgressState,
        hint: &'static str,
    },
    #[error("a verification is already running (started {}); wait for it to finish (job_progress shows it)", rfc3339(*started_at))]
    VerifyRunning { started_at: i64 },
    #[error("{0}")]
    NoRepair(String),
    #[error("the transaction the job is held on (at {at}) has no GTID, so it cannot be told apart on a restart; skip it with skip_by \"fullsync\" (or fix the destination and resume)")]
    NoGtid { at: String },
}

/// The outcome of a command: the new status and progress to persist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub status: JobStatus,
    pub progress: Progress,
}

/// Decides a command's effect. Pure: no I/O, no clock.
pub fn transition(
    sync_type: SyncType,
    status: JobStatus,
    progress: &Progress,
    command: &JobCommand,
) -> Result<Transition, CommandError> {
    if status.run_state == RunState::Desynced {
        return Err(CommandError::Desynced);
    }
    let mut next = Transition {
        status,
        progress: progress.clone(),
    };
    match command {
        JobCommand::Pause => next.status.run_state = RunState::Paused,
        JobCommand::Resume => {
            // The held transaction is tried again (and held again if the
            // destination still refuses it).
            next.status.run_state = RunState::Running;
            next.progress.failed_commit_seq = None;
            next.progress.failed_transaction = None;
        }
        JobCommand::Desync => next.status.run_state = RunState::Desynced,
        JobCommand::FullSync { reason } => {
            next.status.progress_state = ProgressState::full_sync(sync_type);
            next.progress = Progress {
                full_sync_reason: Some(reason.clone()),
                ..Progress::default()
            };
        }
        JobCommand::PartialSync { table, reason } => {
            let state = next.status.progress_state;
            if !state.is_incremental() && state != ProgressState::partial_sync(sync_type) {
                return Err(CommandError::NotIncremental { state });
            }
            next.status.progress_state = ProgressState::partial_sync(sync_type);
            next.progress.partial = Some(PartialSync {
                table: table.clone(),
                reason: reason.clone(),
                requested_at: 0,
            });
        }
        JobCommand::Verify { tables } => {
            streaming(sync_type, status, "a verification")?;
            if let Some(v) = progress
                .verify
                .as_ref()
                .filter(|v| v.state != CheckState::Done)
            {
                return Err(CommandError::VerifyRunning {
                    started_at: v.started_at,
                });
            }
            next.progress.verify = Some(Verification::new(tables.clone(), 0));
        }
        JobCommand::Repair { table } => {
            streaming(sync_type, status, "a repair")?;
            let Some(v) = next.progress.verify.as_mut() else {
                return Err(CommandError::NoRepair(
                    "no verification has run: run /verify first, then repair what it finds".into(),
                ));
            };
            if v.state != CheckState::Done {
                return Err(CommandError::VerifyRunning {
                    started_at: v.started_at,
                });
            }
            let Some(t) = v.tables.iter_mut().find(|t| t.table == *table) else {
                return Err(CommandError::NoRepair(format!(
                    "the last verification did not compare table {table}; verify it first"
                )));
            };
            if t.equal != Some(false) {
                return Err(CommandError::NoRepair(format!(
                    "the last verification found table {table} equal: nothing to repair"
                )));
            }
            if t.ranges.is_empty() {
                return Err(CommandError::NoRepair(format!(
                    "table {table} has no key, so its differences have no key ranges to copy \
                     again; copy the whole table again with partial_sync"
                )));
            }
            t.repair = Some(Repair {
                state: CheckState::Running,
                ranges_total: t.ranges.len() as u64,
                ranges: t.ranges.clone(),
                ..Repair::default()
            });
            t.state = CheckState::Running;
            v.state = CheckState::Running;
            v.finished_at = None;
        }
        JobCommand::SkipTransaction { commit_seq } => match progress.failed_commit_seq {
            None => return Err(CommandError::NothingToSkip { asked: *commit_seq }),
            Some(held) if held != *commit_seq => {
                return Err(CommandError::WrongSkip {
                    held,
                    asked: *commit_seq,
                })
            }
            Some(_) => {
                let held = next.progress.failed_transaction.take().unwrap_or_default();
                if held.gtid.is_none() {
                    return Err(CommandError::NoGtid {
                        at: held.binlog_position,
                    });
                }
                next.progress.skip = Some(held);
                next.progress.failed_commit_seq = None;
                next.progress.last_error = None;
                next.status.run_state = RunState::Running;
            }
        },
    }
    Ok(next)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A verification or a repair compares the destination as of a source
/// position the stream stops at for a moment: the job must be streaming.
fn streaming(
    sync_type: SyncType,
    status: JobStatus,
    what: &'static str,
) -> Result<(), CommandError> {
    let state = status.progress_state;
    let hint = if status.run_state != RunState::Running {
        "; resume it first"
    } else if state == ProgressState::partial_sync(sync_type) {
        "; wait for the partial sync to finish"
    } else {
        "; wait for the full sync to finish"
    };
    if status.run_state == RunState::Running && state.is_incremental() {
        return Ok(());
    }
    Err(CommandError::NotStreaming {
        what,
        run_state: status.run_state,
        state,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(run_state: RunState, progress_state: ProgressState) -> JobStatus {
        JobStatus {
            run_state,
            progress_state,
        }
    }

    #[test]
    fn names_round_trip() {
        for r in RunState::ALL {
            assert_eq!(RunState::parse(r.as_str()), Some(r));
        }
        for p in ProgressState::ALL {
            assert_eq!(ProgressState::parse(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert_eq!(RunState::parse("stopped"), None);
    }

    #[test]
    fn verify_and_repair_transitions() {
        use ProgressState::*;
        use RunState::*;
        let verify = JobCommand::Verify {
            tables: vec!["t".into(), "u".into()],
        };
        let streaming = status(Running, DBIncrementalSync);
        let next = transition(SyncType::Db, streaming, &Progress::default(), &verify).unwrap();
        let v = next.progress.verify.clone().unwrap();
        assert_eq!(v.state, CheckState::Running);
        assert_eq!(v.tables.len(), 2);
        assert_eq!(next.status, streaming);
        // One at a time; only while streaming.
        assert!(matches!(
            transition(SyncType::Db, streaming, &next.progress, &verify),
            Err(CommandError::VerifyRunning { .. })
        ));
        for s in [
            status(Paused, DBIncrementalSync),
            status(Running, DBFullSync),
            status(Running, DBPartialSync),
        ] {
            let e = transition(SyncType::Db, s, &Progress::default(), &verify).unwrap_err();
            assert!(matches!(e, CommandError::NotStreaming { .. }), "{e}");
        }
        // Repair: only a done verification's differing, keyed table.
        let repair = |t: &str| JobCommand::Repair { table: t.into() };
        assert!(matches!(
            transition(SyncType::Db, streaming, &next.progress, &repair("t")),
            Err(CommandError::VerifyRunning { .. })
        ));
        let mut done = next.progress.clone();
        let v = done.verify.as_mut().unwrap();
        v.state = CheckState::Done;
        v.tables[0].state = CheckState::Done;
        v.tables[0].equal = Some(false);
        v.tables[0].rows_different = 1;
        v.tables[0].ranges = vec![KeyRange {
            first: vec![KeyPart::Text("1".into())],
            last: vec![KeyPart::Text("1".into())],
            rows: 1,
        }];
        v.tables[1].state = CheckState::Done;
        v.tables[1].equal = Some(true);
        let next = transition(SyncType::Db, streaming, &done, &repair("t")).unwrap();
        let v = next.progress.verify.unwrap();
        assert_eq!(v.state, CheckState::Running);
        let r = v.tables[0].repair.clone().unwrap();
        assert_eq!(
            (r.state, r.ranges_total, r.ranges.len()),
            (CheckState::Running, 1, 1)
        );
        for (table, needle) in [("u", "equal"), ("x", "did not compare")] {
            let e = transition(SyncType::Db, streaming, &done, &repair(table)).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
        done.verify.as_mut().unwrap().tables[0].ranges.clear();
        let e = transition(SyncType::Db, streaming, &done, &repair("t")).unwrap_err();
        assert!(e.to_string().contains("partial_sync"), "{e}");
        let e =
            transition(SyncType::Db, streaming, &Progress::default(), &repair("t")).unwrap_err();
        assert!(e.to_string().contains("run /verify first"), "{e}");
    }

    #[test]
    fn key_parts_keep_their_bytes() {
        for bytes in [
            &b"42"[..],
            "naïve".as_bytes(),
            &[0xff, 0x00, 0x10][..],
            &b""[..],
        ] {
            let part = KeyPart::from_bytes(bytes);
            assert_eq!(part.to_bytes().as_deref(), Some(bytes));
            let json = serde_json::to_string(&part).unwrap();
            let back: KeyPart = serde_json::from_str(&json).unwrap();
            assert_eq!(back, part);
        }
        assert_eq!(
            serde_json::to_string(&KeyPart::from_bytes(&[0xff])).unwrap(),
            r#"{"hex":"ff"}"#
        );
        assert_eq!(KeyPart::Bytes { hex: "f".into() }.to_bytes(), None);
    }

    #[test]
    fn transitions() {
        use ProgressState::*;
        use RunState::*;
        let held = Progress {
            failed_commit_seq: Some(7),
            failed_transaction: Some(FailedTransaction {
                commit_seq: Some(7),
                gtid: Some("0-1-7".into()),
                ..FailedTransaction::default()
            }),
            last_error: Some("dup".into()),
            ..Progress::default()
        };
        let held_no_gtid = Progress {
            failed_commit_seq: Some(7),
            failed_transaction: Some(FailedTransaction {
                commit_seq: Some(7),
                binlog_position: "b.000001:400".into(),
                ..FailedTransaction::default()
            }),
            ..Progress::default()
        };
        let fresh = Progress::default();
        let fullsync = JobCommand::FullSync {
            reason: "asked".into(),
        };
        // (sync type, from, progress, command, expected status or error)
        type Case<'a> = (
            SyncType,
            JobStatus,
            &'a Progress,
            JobCommand,
            Result<JobStatus, CommandError>,
        );
        let cases: Vec<Case> = vec![
            (
                SyncType::Db,
                status(Running, DBFullSync),
                &fresh,
                JobCommand::Pause,
                Ok(status(Paused, DBFullSync)),
            ),
            (
                SyncType::Db,
                status(Paused, DBFullSync),
                &fresh,
                JobCommand::Pause,
                Ok(status(Paused, DBFullSync)),
            ),
            (
                SyncType::Db,
                status(Paused, DBIncrementalSync),
                &fresh,
                JobCommand::Resume,
                Ok(status(Running, DBIncrementalSync)),
            ),
            (
                SyncType::Table,
                status(Paused, TableIncrementalSync),
                &fresh,
                fullsync.clone(),
                Ok(status(Paused, TableFullSync)),
            ),
            (
                SyncType::Db,
                status(Running, DBIncrementalSync),
                &fresh,
                fullsync.clone(),
                Ok(status(Running, DBFullSync)),
            ),
            (
                SyncType::Db,
                status(Running, DBIncrementalSync),
                &fresh,
                JobCommand::Desync,
                Ok(status(Desynced, DBIncrementalSync)),
            ),
            (
                SyncType::Db,
                status(Desynced, DBIncrementalSync),
                &fresh,
                JobCommand::Resume,
                Err(CommandError::Desynced),
            ),
            (
                SyncType::Db,
                status(Running, DBIncrementalSync),
                &fresh,
                JobCommand::SkipTransaction { commit_seq: 7 },
                Err(CommandError::NothingToSkip { asked: 7 }),
            ),
            (
                SyncType::Db,
                status(Running, DBIncrementalSync),
                &held,
                JobCommand::SkipTransaction { commit_seq: 8 },
                Err(CommandError::WrongSkip { held: 7, asked: 8 }),
            ),
            (
                SyncType::Db,
                status(Paused, DBIncrementalSync),
                &held,
                JobCommand::SkipTransaction { commit_seq: 7 },
                Ok(status(Running, DBIncrementalSync)),
            ),
            (
                SyncType::Db,
                status(Paused, DBIncrementalSync),
                &held_no_gtid,
                JobCommand::SkipTransaction { commit_seq: 7 },
                Err(CommandError::NoGtid {
                    at: "b.000001:400".into(),
                }),
            ),
        ];
        for (sync_type, from, progress, command, want) in cases {
            let got = transition(sync_type, from, progress, &command).map(|t| t.status);
            assert_eq!(got, want, "{command:?} from {from:?}");
        }
    }

    #[test]
    fn full_sync_resets_progress_and_skip_clears_the_hold() {
        let progress = Progress {
            commit_seq: Some(5),
            position: Some("0-1-5".into()),
            failed_commit_seq: Some(6),
            failed_transaction: Some(FailedTransaction {
                commit_seq: Some(6),
                gtid: Some("0-1-6".into()),
                ..FailedTransaction::default()
            }),
            last_error: Some("e".into()),
            ..Progress::default()
        };
        let running = JobStatus::initial(SyncType::Db);
        let t = transition(
            SyncType::Db,
            running,
            &progress,
            &JobCommand::FullSync { reason: "r".into() },
        )
        .unwrap();
        assert_eq!(
            t.progress,
            Progress {
                full_sync_reason: Some("r".into()),
                ..Progress::default()
            }
        );
        let t = transition(
            SyncType::Db,
            running,
            &progress,
            &JobCommand::SkipTransaction { commit_seq: 6 },
        )
        .unwrap();
        assert_eq!(t.progress.failed_commit_seq, None);
        assert_eq!(t.progress.failed_transaction, None);
        assert_eq!(
            t.progress.skip.as_ref().and_then(|s| s.gtid.as_deref()),
            Some("0-1-6")
        );
        assert_eq!(t.progress.last_error, None);
        assert_eq!(t.progress.commit_seq, Some(5));
    }
}
