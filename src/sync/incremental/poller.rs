//! The poller task: the source's newest position (for the lag), its
//! topology (the failover candidates), its binlog settings (a switch away
//! from ROW stops the job) and how much binlog it still keeps.

use super::Applied;
use crate::db::{self, Endpoint};
use crate::position::{BinlogCoord, MariaGtidPos};
use crate::source::binlog::{self, retention};
use crate::source::topology;
use mysql_async::prelude::*;
use mysql_async::Conn;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the source's newest position is polled for `get_lag`.
const HEAD_POLL: Duration = Duration::from_secs(2);
/// Every how many polls the source's topology is read again.
const TOPOLOGY_EVERY: u64 = 15;

/// What the poller reads from, and where it leaves what it finds.
pub(super) struct PollTask {
    pub src: Endpoint,
    pub timeout: Duration,
    /// The source's newest GTID position.
    pub head: Arc<Mutex<Option<MariaGtidPos>>>,
    /// Where the job has applied up to, and that transaction's commit time.
    pub applied: Arc<Mutex<(BinlogCoord, Option<i64>)>>,
    /// Why the source cannot be streamed from any more, once it cannot.
    pub misconfigured: Arc<Mutex<Option<String>>>,
    pub topology_now: Arc<Mutex<Option<topology::Topology>>>,
    pub metrics: Arc<dyn crate::sync::Meter>,
    pub job: String,
    pub progress: watch::Sender<Applied>,
}

/// Polls the source's newest GTID position; failures only leave it stale
/// (the binlog stream notices a dead source itself).
pub(super) async fn poll_head(p: PollTask, stop: CancellationToken) {
    let PollTask {
        src,
        timeout,
        head,
        applied,
        misconfigured,
        topology_now,
        metrics,
        job,
        progress,
    } = p;
    let mut polls = 0u64;
    let mut conn: Option<Conn> = None;
    // The source's oldest binlog and when it was started, read again only
    // when another file becomes the oldest.
    let mut oldest: Option<(String, Option<i64>)> = None;
    loop {
        if conn.is_none() {
            conn = db::connect(&src.server_addr(), None, timeout).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            // What the source reports of its neighbours (the failover
            // candidates): at the first poll, then as replicas come and go.
            if polls.is_multiple_of(TOPOLOGY_EVERY) {
                *topology_now.lock() = Some(topology::discover(c).await);
            }
            polls += 1;
            // A source switched away from full row images stops the job
            // before its statements or partial rows reach it.
            if let Ok(Some((format, image))) = c
                .query_first::<(String, String), _>(
                    "SELECT @@global.binlog_format, @@global.binlog_row_image",
                )
                .await
            {
                if !format.eq_ignore_ascii_case("ROW") || !image.eq_ignore_ascii_case("FULL") {
                    *misconfigured.lock() = Some(format!(
                        "the source {} now has binlog_format={format}, binlog_row_image={image}; \
                         the job needs ROW and FULL: run SET GLOBAL binlog_format='ROW', \
                         binlog_row_image='FULL' on the source (clients connected meanwhile \
                         keep their session's format: reconnect them), then resume the job",
                        src.address()
                    ));
                }
            }
            // How much binlog the source could purge before the job's
            // position goes.
            if let Ok(r) = retention::read(c).await {
                let (at, commit_ts) = applied.lock().clone();
                metrics.set_retention_headroom(&job, r.headroom_bytes(&at).unwrap_or(0));
                if oldest.as_ref().map(|(f, _)| f.as_str()) != Some(r.oldest()) {
                    let id = binlog::server_id(&format!("{job}/retention"));
                    let started =
                        retention::started(&src.server_addr(), r.oldest(), id, timeout).await;
                    oldest = Some((r.oldest().to_string(), started));
                }
                if let (Some((_, Some(started))), Some(ts)) = (&oldest, commit_ts) {
                    metrics.set_retention_headroom_secs(&job, (ts - started).max(0));
                }
            }
            match c
                .query_first::<String, _>("SELECT @@global.gtid_binlog_pos")
                .await
            {
                Ok(Some(text)) => {
                    if let Ok(p) = MariaGtidPos::parse(&text) {
                        // Shown at once, also while the applier waits (a
                        // blocked destination): the job is behind, and a
                        // stall shows.
                        let seq = p.commit_seq();
                        progress.send_if_modified(|a| {
                            let newer = a.detail.source_commit_seq.is_none_or(|s| seq > s);
                            if newer {
                                a.detail.source_commit_seq = Some(seq);
                                if a.commit_seq.is_none_or(|applied| applied < seq) {
                                    a.detail.caught_up = false;
                                }
                            }
                            newer
                        });
                        *head.lock() = Some(p);
                    }
                }
                Ok(None) => {}
                Err(_) => conn = None,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(HEAD_POLL) => {}
            _ = stop.cancelled() => break,
        }
    }
    if let Some(c) = conn {
        let _ = c.disconnect().await;
    }
}
