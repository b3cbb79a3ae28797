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
    /// Its kind's stable code (`crate::error::Kind::code`): `definite`,
    /// `refused`, `purged`, or `transient` for one a retry may cure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<String>,
    /// Why the current full sync runs, when it was asked for rather than the first one.
    pub full_sync_reason: Option<String>,
    /// The current or last full sync.
    pub full_sync: Option<FullSyncProgress>,
    /// The source position P the last full sync copied as of, where the
    /// incremental sync starts.
    pub snapshot: Option<crate::position::Position>,
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

pub use crate::error::FailedTransaction;
pub use crate::sync::progress::*;

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
                next.progress.last_error_code = None;
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
