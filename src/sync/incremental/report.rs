//! What the stream reports: the applied position, lag, source head and
//! counters, at most every 250 ms (and at once when it catches up).

use super::coordinator::Coordinator;
use super::{lag_secs, Applied};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Coordinator<'_> {
    pub(super) fn report(&mut self, absorbed: bool) {
        let idle = self.caught_up && self.in_flight.is_empty();
        if !(self.last_report.elapsed() >= Duration::from_millis(250)
            || idle && absorbed
            || self.caught_up)
        {
            return;
        }
        self.last_report = Instant::now();
        let sync = self.sync;
        let name = sync.spec.name.as_str();
        let detail = &mut *self.detail;
        let (pos, commit_ts) = &self.applied;
        let bytes = self.shared.bytes_read.load(Ordering::Relaxed);
        sync.metrics
            .count_binlog_bytes(name, bytes.saturating_sub(detail.binlog_bytes_read));
        detail.binlog_bytes_read = bytes;
        detail.binlog_file = pos.coord.file.clone();
        *self.shared.applied_coord.lock() = (pos.coord.clone(), *commit_ts);
        detail.binlog_pos = pos.coord.pos;
        detail.tables_in_snapshot = self.windows.len() as u64;
        detail.caught_up = idle && self.group.txns == 0;
        let head = self.shared.read_head.lock();
        let polled = self.shared.source_head.lock().clone();
        let head_seq = polled.as_ref().map(|p| p.commit_seq());
        let read_seq = head.gtid.map(|g| g.seq).or(pos.commit_seq());
        detail.source_commit_seq = head_seq.max(read_seq).max(pos.commit_seq());
        detail.source_position = polled.map(|p| p.to_string());
        detail.source_commit_timestamp = head.timestamp;
        drop(head);
        let advanced = sync.progress.borrow().commit_seq != pos.commit_seq();
        // Caught up counts as keeping up: an idle hour is no stall.
        if advanced || detail.caught_up || detail.last_advance_at == 0 {
            detail.last_advance_at = chrono::Utc::now().timestamp_millis();
        }
        let now = Applied {
            commit_seq: pos.commit_seq(),
            position: Some(pos.to_string()),
            commit_timestamp: *commit_ts,
            detail: detail.clone(),
        };
        sync.metrics.set_lag(
            name,
            lag_secs(
                now.commit_seq,
                now.commit_timestamp,
                &now.detail,
                chrono::Utc::now().timestamp(),
            ),
        );
        sync.progress.send_replace(now);
    }
}
