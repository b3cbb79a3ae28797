//! The reader task: reads the source's binlog ahead of the coordinator
//! into a bounded [`Feed`], and closes its replica connection when told to
//! stop (the source then has no stale registration of the job's server id
//! when the stream starts again).

use super::{READ_AHEAD, READ_AHEAD_BYTES};
use crate::db::Endpoint;
use crate::position::{MariaGtid, Position};
use crate::source::binlog::{self, ReadError, Reader, SourceEvent};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A task of the stream's that stops when told to (or when this is
/// dropped): it is cancelled, and it ends by itself, closing what it holds.
pub(super) struct Stoppable {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Stoppable {
    pub fn spawn<F>(stop: CancellationToken, f: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(f(stop.clone()));
        Stoppable { stop, task }
    }

    /// Tells the task to stop and waits (a few seconds at most) until it has
    /// closed its connections.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        // Dropped without `stop` (the stream itself was aborted): the task
        // still stops by itself and closes its connections.
        self.stop.cancel();
    }
}

/// Newest position read from the source, shared by the reader task.
#[derive(Default)]
pub(super) struct ReadHead {
    pub gtid: Option<MariaGtid>,
    pub timestamp: Option<i64>,
}

/// What the reader task reads, and where it puts it.
pub(super) struct ReadTask {
    pub src: Endpoint,
    pub job: String,
    pub start: Position,
    pub scope: binlog::Scope,
    pub timeout: Duration,
    pub feed: FeedWriter,
    pub bytes_read: Arc<AtomicU64>,
    pub head: Arc<Mutex<ReadHead>>,
}

impl ReadTask {
    /// Reads until an error or `stop`; on `stop` the replica connection is
    /// closed and its thread on the source ended.
    pub async fn run(self, stop: CancellationToken) {
        let addr = self.src.server_addr();
        let opened = tokio::select! {
            r = Reader::open(
                &addr,
                &self.start,
                binlog::server_id(&self.job),
                self.scope,
                self.timeout,
            ) => r,
            _ = stop.cancelled() => return,
        };
        let mut reader = match opened {
            Ok(r) => r,
            Err(e) => {
                self.feed.0.fail(e);
                return;
            }
        };
        loop {
            let next = tokio::select! {
                e = reader.next() => e,
                _ = stop.cancelled() => break,
            };
            match next {
                Ok(events) => {
                    let before = self.bytes_read.swap(reader.bytes_read, Ordering::Relaxed);
                    for e in &events {
                        match e {
                            SourceEvent::Begin { gtid: Some(g), .. } => {
                                self.head.lock().gtid = Some(*g)
                            }
                            SourceEvent::Commit { timestamp, .. } => {
                                self.head.lock().timestamp = Some(i64::from(*timestamp))
                            }
                            _ => {}
                        }
                    }
                    let bytes = reader.bytes_read - before;
                    tokio::select! {
                        () = self.feed.0.push(events, bytes) => {}
                        _ = stop.cancelled() => break,
                    }
                }
                Err(e) => {
                    self.feed.0.fail(e);
                    break;
                }
            }
        }
        reader.close(&addr, self.timeout).await;
    }
}

/// Events from the reader task to the applier: a buffer the applier takes
/// whole (one hand-over for many events), bounded by [`READ_AHEAD`] events
/// and [`READ_AHEAD_BYTES`] of binlog.
#[derive(Default)]
pub(super) struct Feed {
    state: Mutex<FeedState>,
    readable: tokio::sync::Notify,
    writable: tokio::sync::Notify,
}

#[derive(Default)]
struct FeedState {
    events: Vec<SourceEvent>,
    bytes: u64,
    /// How the reader ended, once it has.
    end: Option<ReadError>,
}

impl Feed {
    /// Adds events read from `bytes` of binlog, waiting while the buffer
    /// is full. (The reader task is stopped with the applier.)
    pub async fn push(&self, events: Vec<SourceEvent>, bytes: u64) {
        loop {
            {
                let mut st = self.state.lock();
                if st.events.is_empty()
                    || st.events.len() < READ_AHEAD && st.bytes < READ_AHEAD_BYTES
                {
                    st.events.extend(events);
                    st.bytes += bytes;
                    drop(st);
                    self.readable.notify_one();
                    return;
                }
            }
            self.writable.notified().await;
        }
    }

    pub fn fail(&self, e: ReadError) {
        self.state.lock().end.get_or_insert(e);
        self.readable.notify_one();
    }

    pub fn is_empty(&self) -> bool {
        self.state.lock().events.is_empty()
    }

    /// Every event buffered, waiting for one; the reader's error once the
    /// buffer is empty.
    pub async fn take(&self) -> Result<Vec<SourceEvent>, ReadError> {
        loop {
            {
                let mut st = self.state.lock();
                if !st.events.is_empty() {
                    st.bytes = 0;
                    let events = std::mem::take(&mut st.events);
                    drop(st);
                    self.writable.notify_one();
                    return Ok(events);
                }
                if let Some(e) = st.end.take() {
                    return Err(e);
                }
            }
            self.readable.notified().await;
        }
    }
}

/// The reader's end: when the reader task ends without saying why (it
/// panicked or was stopped), the applier hears so.
pub(super) struct FeedWriter(pub Arc<Feed>);

impl Drop for FeedWriter {
    fn drop(&mut self) {
        self.0
            .fail(ReadError::Transient("the binlog reader stopped".into()));
    }
}
