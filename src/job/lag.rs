//! How far behind a job is, as every reader shows it (`get_lag`,
//! `job_status`, the metrics, the status page). Pure.
//!
//! While the job streams, the lag is the age of the newest applied change
//! as long as the source has a newer transaction (its newest, polled), and
//! 0 once everything is applied. While it does not stream — paused, held
//! on a refused transaction, desynced, retrying after an error, or still
//! copying — nobody can say the source has nothing newer, so the lag is the
//! time since the last applied change (or since the copy's snapshot), and
//! never 0. A running job that applies nothing for `stall_secs` while the
//! source has newer transactions is *stalled*.

use super::state::{JobStatus, Progress, ProgressState, RunState};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    pub secs: i64,
    /// `caught_up`, `behind`, `stalled`, `retrying`, `full_sync`, `paused`,
    /// `held` (on a refused transaction) or `desynced`.
    pub state: &'static str,
    /// How long nothing was applied, when stalled.
    pub stalled_secs: Option<i64>,
}

impl Lag {
    pub fn stalled(&self) -> bool {
        self.state == "stalled"
    }
}

pub fn lag(status: JobStatus, progress: &Progress, stall_secs: u64, now_ms: i64) -> Lag {
    let now = now_ms / 1000;
    let detail = progress.incremental.clone().unwrap_or_default();
    let copying = matches!(
        status.progress_state,
        ProgressState::DBFullSync | ProgressState::TableFullSync
    );
    let not_streaming = match status.run_state {
        RunState::Paused if progress.failed_transaction.is_some() => Some("held"),
        RunState::Paused => Some("paused"),
        RunState::Desynced => Some("desynced"),
        RunState::Running if copying => Some("full_sync"),
        RunState::Running if detail.retrying => Some("retrying"),
        RunState::Running => None,
    };
    let quiet = (now_ms - detail.last_advance_at).max(0) / 1000;
    let quiet_long = detail.last_advance_at > 0 && quiet >= stall_secs as i64;
    if let Some(state) = not_streaming {
        // Retrying for longer than a stall is a stall.
        let (state, stalled_secs) = if state == "retrying" && quiet_long {
            ("stalled", Some(quiet))
        } else {
            (state, None)
        };
        let since = progress.commit_timestamp.or_else(|| {
            progress
                .full_sync
                .as_ref()
                .map(|f| f.started_at / 1000)
                .filter(|s| *s > 0)
        });
        return Lag {
            secs: since.map_or(1, |s| (now - s).max(1)),
            state,
            stalled_secs,
        };
    }
    let behind = match (progress.commit_seq, detail.source_commit_seq) {
        (Some(applied), Some(head)) => head > applied,
        (None, Some(_)) => true,
        _ => false,
    };
    if !behind {
        return Lag {
            secs: 0,
            state: "caught_up",
            stalled_secs: None,
        };
    }
    let secs = progress.commit_timestamp.map_or(0, |ts| (now - ts).max(0));
    if quiet_long {
        return Lag {
            secs: secs.max(quiet),
            state: "stalled",
            stalled_secs: Some(quiet),
        };
    }
    Lag {
        secs,
        state: "behind",
        stalled_secs: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::state::{FailedTransaction, FullSyncProgress, IncrementalProgress};

    fn running(state: ProgressState) -> JobStatus {
        JobStatus {
            run_state: RunState::Running,
            progress_state: state,
        }
    }

    fn at(applied: u64, head: u64, ts: i64, advanced_ms: i64) -> Progress {
        Progress {
            commit_seq: Some(applied),
            commit_timestamp: Some(ts),
            incremental: Some(IncrementalProgress {
                source_commit_seq: Some(head),
                last_advance_at: advanced_ms,
                ..IncrementalProgress::default()
            }),
            ..Progress::default()
        }
    }

    #[test]
    fn states_and_seconds() {
        let inc = running(ProgressState::DBIncrementalSync);
        // Caught up: 0, however old the last change.
        let l = lag(inc, &at(10, 10, 100, 100_000), 60, 500_000);
        assert_eq!((l.secs, l.state), (0, "caught_up"));
        // Behind: the age of the newest applied change.
        let l = lag(inc, &at(10, 12, 100, 100_000), 60, 103_000);
        assert_eq!((l.secs, l.state), (3, "behind"));
        // Behind with nothing applied for a minute: stalled.
        let l = lag(inc, &at(10, 12, 100, 100_000), 60, 170_000);
        assert_eq!((l.state, l.stalled_secs), ("stalled", Some(70)));
        assert_eq!(l.secs, 70);
        // Paused, even with nothing newer known: never 0.
        let paused = JobStatus {
            run_state: RunState::Paused,
            ..inc
        };
        let l = lag(paused, &at(10, 10, 100, 100_000), 60, 100_200);
        assert_eq!((l.secs, l.state), (1, "paused"));
        let l = lag(paused, &at(10, 10, 100, 100_000), 60, 130_000);
        assert_eq!(l.secs, 30);
        let mut held = at(10, 12, 100, 0);
        held.failed_transaction = Some(FailedTransaction::default());
        assert_eq!(lag(paused, &held, 60, 110_000).state, "held");
        let mut retrying = at(10, 10, 100, 100_000);
        retrying.incremental.as_mut().unwrap().retrying = true;
        let l = lag(inc, &retrying, 60, 105_000);
        assert_eq!((l.secs, l.state), (5, "retrying"));
        let l = lag(inc, &retrying, 60, 200_000);
        assert_eq!((l.state, l.stalled_secs), ("stalled", Some(100)));
        // Copying: the age of the copy's snapshot.
        let copying = Progress {
            full_sync: Some(FullSyncProgress {
                started_at: 50_000,
                ..FullSyncProgress::default()
            }),
            ..Progress::default()
        };
        let l = lag(running(ProgressState::DBFullSync), &copying, 60, 80_000);
        assert_eq!((l.secs, l.state), (30, "full_sync"));
    }
}
