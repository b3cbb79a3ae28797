//! How the work's outcomes and reports move a job: the other half of the
//! state machine, beside [`super::state::transition`] (commands). Pure: no
//! I/O, no clock; the runner stores what these return, then shows it, and
//! logs the [`Note`]s.
//!
//! - a full sync that hands over moves the job to its incremental phase
//!   (`TableIncrementalSync`, or `DBTablesIncrementalSync` with each table's
//!   snapshot window);
//! - a definite failure or a refused transaction pauses it with the reason;
//! - a purged position copies the tables again (a new full sync) when the
//!   job and the group allow it, and pauses it otherwise;
//! - a report of the stream clears a skipped transaction once it is behind
//!   the job, records a partial sync the stream started, ends one whose copy
//!   is in (its table gets a snapshot window), and moves a database job to
//!   `DBIncrementalSync` once every table is past its snapshot.

use super::spec::{JobSpec, OnPurged, SyncType};
use super::state::{JobStatus, Progress, ProgressState, RunState};
use crate::error::{FailedTransaction, Kind};
use crate::sync::full::HandOver;
use crate::sync::incremental::Applied;
use crate::sync::progress::TableSnapshot;
use std::collections::BTreeMap;

/// How the work ended (transient errors never end it).
#[derive(Debug)]
pub enum Outcome {
    HandedOver(HandOver),
    Failed(String),
    /// The destination refused a source transaction: the job holds on it.
    Refused(Box<FailedTransaction>, String),
    /// The source purged the binlog at the job's position.
    Purged(String),
    /// The destination refused a commit: another member holds the job.
    Fenced(String),
    /// Told to stop (the job paused, deleted, released, or the service
    /// stopping): nothing to fold in.
    Stopped,
}

/// What the runner logs about a change it stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// The full sync handed over at this position.
    HandedOver(Option<String>),
    /// The job stopped; the error class counted in the metrics.
    Stopped {
        class: &'static str,
        error: String,
    },
    /// The destination refused a source transaction.
    Refused {
        class: &'static str,
        error: String,
    },
    /// The tables are copied again.
    Resync(String),
    /// A partial sync the stream started by itself.
    PartialStarted {
        table: String,
        reason: String,
    },
    PartialDone(String),
    /// Every table is past its snapshot.
    TablesDone,
}

/// A job's next status and progress, and what to say about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Fold {
    pub status: JobStatus,
    pub progress: Progress,
    /// Whether it must be stored now (rather than with the next save).
    pub save: bool,
    pub notes: Vec<Note>,
}

/// The job after its work ended with `outcome`; `None` for an outcome that
/// changes nothing here (fenced: the job is another member's; stopped).
pub fn fold_outcome(
    spec: &JobSpec,
    status: JobStatus,
    progress: &Progress,
    outcome: Outcome,
    now: i64,
    auto_resync: bool,
) -> Option<Fold> {
    let mut status = status;
    let mut progress = progress.clone();
    let sync_type = spec.sync_type();
    let note = match outcome {
        Outcome::Stopped | Outcome::Fenced(_) => return None,
        Outcome::HandedOver(h) => {
            status.progress_state = match sync_type {
                SyncType::Table => ProgressState::TableIncrementalSync,
                SyncType::Db => ProgressState::DBTablesIncrementalSync,
            };
            progress.commit_seq = h.position.commit_seq();
            progress.position = Some(h.position.to_string());
            progress.last_error = None;
            progress.last_error_code = None;
            if let Some(f) = progress.full_sync.as_mut() {
                f.finished_at = Some(now);
            }
            progress.snapshot = Some(h.position);
            progress.tables = match sync_type {
                SyncType::Db => h.tables,
                SyncType::Table => BTreeMap::new(),
            };
            Note::HandedOver(progress.position.clone())
        }
        Outcome::Failed(message) => {
            status.run_state = RunState::Paused;
            progress.last_error = Some(message.clone());
            progress.last_error_code = Some(Kind::Definite.code().into());
            Note::Stopped {
                class: "definite",
                error: message,
            }
        }
        Outcome::Refused(txn, message) => {
            status.run_state = RunState::Paused;
            progress.failed_commit_seq = txn.commit_seq;
            progress.failed_transaction = Some(*txn);
            progress.last_error = Some(message.clone());
            progress.last_error_code = Some(Kind::Refused.code().into());
            Note::Refused {
                class: "refused",
                error: message,
            }
        }
        Outcome::Purged(message) => match spec.on_binlog_purged {
            OnPurged::Fullsync if auto_resync => {
                status.progress_state = ProgressState::full_sync(sync_type);
                progress = Progress {
                    full_sync_reason: Some(message.clone()),
                    ..Progress::default()
                };
                Note::Resync(message)
            }
            OnPurged::Fullsync => {
                let message = format!(
                    "{message}; automatic re-sync of purged binlogs is disabled in this \
                     group (config key auto_resync): run force_fullsync to copy the \
                     tables again, or enable it with /config/set"
                );
                status.run_state = RunState::Paused;
                progress.last_error = Some(message.clone());
                progress.last_error_code = Some(Kind::Purged.code().into());
                Note::Stopped {
                    class: "binlog_purged",
                    error: message,
                }
            }
            OnPurged::Stop => {
                let message = format!(
                    "{message}; the job is set to stop (on_binlog_purged \"stop\"): \
                     run force_fullsync to copy the tables again"
                );
                status.run_state = RunState::Paused;
                progress.last_error = Some(message.clone());
                progress.last_error_code = Some(Kind::Purged.code().into());
                Note::Stopped {
                    class: "binlog_purged",
                    error: message,
                }
            }
        },
    };
    Some(Fold {
        status,
        progress,
        save: true,
        notes: vec![note],
    })
}

/// The job after a report of its incremental sync.
pub fn fold_report(
    spec: &JobSpec,
    status: JobStatus,
    progress: &Progress,
    applied: Applied,
) -> Fold {
    let mut status = status;
    let mut next = progress.clone();
    let mut save = false;
    let mut notes = Vec::new();
    next.commit_seq = applied.commit_seq;
    next.position = applied.position;
    next.commit_timestamp = applied.commit_timestamp;
    let detail = applied.detail;
    // A skipped transaction is behind the job once its group commits.
    let passed = next
        .skip
        .as_ref()
        .is_some_and(|s| s.gtid.is_some() && s.gtid == detail.last_skipped);
    if passed {
        next.skip = None;
        save = true;
    }
    // Partial syncs: one the stream started by itself is recorded; a
    // finished one leaves its table a snapshot window, which the stream
    // skips up to, as after a full sync.
    let sync_type = spec.sync_type();
    if let Some(started) = &detail.partial_started {
        let finished = detail.partial_done.as_ref().map(|(p, _)| p.requested_at);
        if next.partial.is_none() && finished != Some(started.requested_at) {
            notes.push(Note::PartialStarted {
                table: started.table.clone(),
                reason: started.reason.clone(),
            });
            next.partial = Some(started.clone());
            status.progress_state = ProgressState::partial_sync(sync_type);
            save = true;
        }
    }
    if let Some((done, at)) = &detail.partial_done {
        if next.partial.as_ref().map(|p| p.requested_at) == Some(done.requested_at) {
            let dest_table = spec
                .dest
                .table
                .clone()
                .unwrap_or_else(|| done.table.clone());
            next.tables.insert(
                dest_table,
                TableSnapshot {
                    from: at.clone(),
                    to: at.clone(),
                },
            );
            next.partial = None;
            status.progress_state = match sync_type {
                SyncType::Db => ProgressState::DBTablesIncrementalSync,
                SyncType::Table => ProgressState::TableIncrementalSync,
            };
            notes.push(Note::PartialDone(done.table.clone()));
            save = true;
        }
    }
    if status.progress_state == ProgressState::DBTablesIncrementalSync
        && detail.tables_in_snapshot == 0
    {
        status.progress_state = ProgressState::DBIncrementalSync;
        notes.push(Note::TablesDone);
        save = true;
    }
    next.incremental = Some(detail);
    Fold {
        status,
        progress: next,
        save,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::tests::{endpoint, spec};
    use crate::position::Position;
    use crate::sync::progress::{IncrementalProgress, PartialSync};

    fn db_job() -> JobSpec {
        spec("j")
    }

    fn table_job() -> JobSpec {
        JobSpec {
            src: endpoint("a", Some("t")),
            dest: endpoint("b", Some("t2")),
            ..spec("j")
        }
    }

    fn at(gtid: &str, pos: u64) -> Position {
        Position::new(gtid, "b.000001", pos).unwrap()
    }

    fn running(progress_state: ProgressState) -> JobStatus {
        JobStatus {
            run_state: RunState::Running,
            progress_state,
        }
    }

    fn partial(table: &str, requested_at: i64) -> PartialSync {
        PartialSync {
            table: table.into(),
            reason: "asked".into(),
            requested_at,
        }
    }

    fn handed_over() -> HandOver {
        let mut tables = BTreeMap::new();
        tables.insert(
            "t".to_string(),
            TableSnapshot {
                from: at("0-1-5", 500),
                to: at("0-1-7", 700),
            },
        );
        HandOver {
            position: at("0-1-5", 500),
            tables,
        }
    }

    /// Each outcome, for each kind of job: the state it leads to.
    #[test]
    fn outcomes_move_the_job() {
        let failed_txn = FailedTransaction {
            commit_seq: Some(9),
            gtid: Some("0-1-9".into()),
            ..FailedTransaction::default()
        };
        type Check = fn(&Fold);
        let cases: Vec<(&str, JobSpec, Outcome, bool, JobStatus, Check)> = vec![
            (
                "table job hands over",
                table_job(),
                Outcome::HandedOver(handed_over()),
                true,
                running(ProgressState::TableIncrementalSync),
                |f| {
                    assert_eq!(f.progress.position.as_deref(), Some("0-1-5"));
                    assert_eq!(f.progress.snapshot, Some(at("0-1-5", 500)));
                    assert!(f.progress.tables.is_empty());
                },
            ),
            (
                "database job hands over with windows",
                db_job(),
                Outcome::HandedOver(handed_over()),
                true,
                running(ProgressState::DBTablesIncrementalSync),
                |f| {
                    assert_eq!(f.progress.commit_seq, Some(5));
                    assert_eq!(f.progress.tables["t"].to, at("0-1-7", 700));
                },
            ),
            (
                "a definite failure pauses",
                db_job(),
                Outcome::Failed("boom".into()),
                true,
                JobStatus {
                    run_state: RunState::Paused,
                    progress_state: ProgressState::DBIncrementalSync,
                },
                |f| {
                    assert_eq!(f.progress.last_error.as_deref(), Some("boom"));
                    assert_eq!(f.progress.last_error_code.as_deref(), Some("definite"));
                },
            ),
            (
                "a refused transaction holds the job on it",
                db_job(),
                Outcome::Refused(Box::new(failed_txn), "dup".into()),
                true,
                JobStatus {
                    run_state: RunState::Paused,
                    progress_state: ProgressState::DBIncrementalSync,
                },
                |f| {
                    assert_eq!(f.progress.failed_commit_seq, Some(9));
                    assert!(f.progress.failed_transaction.is_some());
                    assert_eq!(f.progress.last_error_code.as_deref(), Some("refused"));
                },
            ),
            (
                "purged: copied again",
                db_job(),
                Outcome::Purged("gone".into()),
                true,
                running(ProgressState::DBFullSync),
                |f| {
                    assert_eq!(f.progress.full_sync_reason.as_deref(), Some("gone"));
                    assert!(f.progress.position.is_none());
                },
            ),
            (
                "purged with auto_resync off: paused",
                db_job(),
                Outcome::Purged("gone".into()),
                false,
                JobStatus {
                    run_state: RunState::Paused,
                    progress_state: ProgressState::DBIncrementalSync,
                },
                |f| {
                    assert!(f
                        .progress
                        .last_error
                        .as_deref()
                        .unwrap()
                        .contains("auto_resync"))
                },
            ),
            (
                "purged, on_binlog_purged stop: paused",
                JobSpec {
                    on_binlog_purged: OnPurged::Stop,
                    ..table_job()
                },
                Outcome::Purged("gone".into()),
                true,
                JobStatus {
                    run_state: RunState::Paused,
                    progress_state: ProgressState::DBIncrementalSync,
                },
                |f| {
                    assert!(f
                        .progress
                        .last_error
                        .as_deref()
                        .unwrap()
                        .contains("on_binlog_purged"))
                },
            ),
        ];
        for (what, spec, outcome, auto, want, check) in cases {
            let before = Progress {
                commit_seq: Some(3),
                position: Some("0-1-3".into()),
                ..Progress::default()
            };
            let f = fold_outcome(
                &spec,
                running(ProgressState::DBIncrementalSync),
                &before,
                outcome,
                1000,
                auto,
            )
            .unwrap_or_else(|| panic!("{what}: folded"));
            assert_eq!(f.status, want, "{what}");
            assert!(f.save, "{what}");
            check(&f);
        }
        let status = running(ProgressState::DBIncrementalSync);
        for nothing in [Outcome::Stopped, Outcome::Fenced("other".into())] {
            assert!(
                fold_outcome(&db_job(), status, &Progress::default(), nothing, 0, true).is_none()
            );
        }
    }

    fn report(detail: IncrementalProgress) -> Applied {
        Applied {
            commit_seq: Some(12),
            position: Some("0-1-12".into()),
            commit_timestamp: Some(100),
            detail,
        }
    }

    /// Each report that moves a job, and ones that must not.
    #[test]
    fn reports_move_the_job() {
        type Check = fn(&Fold);
        /// What, the job, its state and progress before, the report, the
        /// state after, whether it is saved at once, and what else holds.
        type Case = (
            &'static str,
            JobSpec,
            ProgressState,
            Progress,
            IncrementalProgress,
            ProgressState,
            bool,
            Check,
        );
        let cases: Vec<Case> = vec![
            (
                "plain progress is shown, not saved",
                db_job(),
                ProgressState::DBIncrementalSync,
                Progress::default(),
                IncrementalProgress::default(),
                ProgressState::DBIncrementalSync,
                false,
                |f| assert_eq!(f.progress.commit_seq, Some(12)),
            ),
            (
                "a skipped transaction behind the job is forgotten",
                db_job(),
                ProgressState::DBIncrementalSync,
                Progress {
                    skip: Some(FailedTransaction {
                        gtid: Some("0-1-10".into()),
                        ..FailedTransaction::default()
                    }),
                    ..Progress::default()
                },
                IncrementalProgress {
                    last_skipped: Some("0-1-10".into()),
                    ..IncrementalProgress::default()
                },
                ProgressState::DBIncrementalSync,
                true,
                |f| assert!(f.progress.skip.is_none()),
            ),
            (
                "a partial sync the stream started is recorded",
                db_job(),
                ProgressState::DBIncrementalSync,
                Progress::default(),
                IncrementalProgress {
                    partial_started: Some(partial("t", 7)),
                    ..IncrementalProgress::default()
                },
                ProgressState::DBPartialSync,
                true,
                |f| assert_eq!(f.progress.partial, Some(partial("t", 7))),
            ),
            (
                "a partial sync already done is not started again",
                db_job(),
                ProgressState::DBIncrementalSync,
                Progress::default(),
                IncrementalProgress {
                    partial_started: Some(partial("t", 7)),
                    partial_done: Some((partial("t", 7), Position::default())),
                    ..IncrementalProgress::default()
                },
                ProgressState::DBIncrementalSync,
                false,
                |f| assert!(f.progress.partial.is_none()),
            ),
            (
                "a partial sync's copy is in: its table gets a window",
                db_job(),
                ProgressState::DBPartialSync,
                Progress {
                    partial: Some(partial("t", 7)),
                    ..Progress::default()
                },
                IncrementalProgress {
                    partial_done: Some((partial("t", 7), at("0-1-11", 1100))),
                    tables_in_snapshot: 1,
                    ..IncrementalProgress::default()
                },
                ProgressState::DBTablesIncrementalSync,
                true,
                |f| {
                    assert!(f.progress.partial.is_none());
                    assert_eq!(f.progress.tables["t"].from, at("0-1-11", 1100));
                },
            ),
            (
                "a table job's partial sync ends under its destination name",
                table_job(),
                ProgressState::TablePartialSync,
                Progress {
                    partial: Some(partial("t", 7)),
                    ..Progress::default()
                },
                IncrementalProgress {
                    partial_done: Some((partial("t", 7), at("0-1-11", 1100))),
                    ..IncrementalProgress::default()
                },
                ProgressState::TableIncrementalSync,
                true,
                |f| assert!(f.progress.tables.contains_key("t2")),
            ),
            (
                "another request's copy ends nothing",
                db_job(),
                ProgressState::DBPartialSync,
                Progress {
                    partial: Some(partial("t", 8)),
                    ..Progress::default()
                },
                IncrementalProgress {
                    partial_done: Some((partial("t", 7), at("0-1-11", 1100))),
                    tables_in_snapshot: 1,
                    ..IncrementalProgress::default()
                },
                ProgressState::DBPartialSync,
                false,
                |f| assert_eq!(f.progress.partial, Some(partial("t", 8))),
            ),
            (
                "every table past its snapshot",
                db_job(),
                ProgressState::DBTablesIncrementalSync,
                Progress::default(),
                IncrementalProgress::default(),
                ProgressState::DBIncrementalSync,
                true,
                |f| assert!(f.notes.contains(&Note::TablesDone)),
            ),
            (
                "tables still in their windows",
                db_job(),
                ProgressState::DBTablesIncrementalSync,
                Progress::default(),
                IncrementalProgress {
                    tables_in_snapshot: 2,
                    ..IncrementalProgress::default()
                },
                ProgressState::DBTablesIncrementalSync,
                false,
                |_| {},
            ),
        ];
        for (what, spec, from, before, detail, to, save, check) in cases {
            let f = fold_report(&spec, running(from), &before, report(detail));
            assert_eq!(f.status.progress_state, to, "{what}");
            assert_eq!(f.save, save, "{what}");
            check(&f);
        }
    }
}
