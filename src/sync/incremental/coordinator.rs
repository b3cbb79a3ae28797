//! The coordinator: the one task that reads the feed of source events in
//! order, cuts it into groups, and hands them to the apply pool. Its state
//! is this struct; each kind of event has its method (here, and in `ddl`,
//! `xa`, `partial`, `report`).

use super::feed::{Feed, FeedWriter, ReadHead, ReadTask, Stoppable};
use super::group::{change_bytes, Building, InFlight, Txn};
use super::partial::Partial;
use super::poller::{poll_head, PollTask};
use super::{read_error, scope, stops_at, Incremental, Window};
use super::{BATCH_AGE, BATCH_ROWS, GROUP_BYTES, STREAM_BYTES};
use crate::change::RowChange;
use crate::dest::checkpoint::{self, Prepared};
use crate::dest::compact::Change;
use crate::dest::pool::{self as apply, Conflicts, Pool};
use crate::dest::rows::{self, Mode};
use crate::dest::target::{self, DestTable};
use crate::error::SyncError;
use crate::position::{BinlogCoord, MariaGtidPos, Position};
use crate::source::binlog::{ReadError, SourceEvent};
use crate::source::ddl::Rename;
use crate::source::topology;
use crate::sync::hold::Armed;
use crate::sync::progress::{IncrementalProgress, PartialSync};
use mysql_async::Conn;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What the reader and the poller tasks leave for the coordinator.
pub(super) struct Shared {
    pub feed: Arc<Feed>,
    pub bytes_read: Arc<AtomicU64>,
    pub read_head: Arc<Mutex<ReadHead>>,
    pub source_head: Arc<Mutex<Option<MariaGtidPos>>>,
    pub applied_coord: Arc<Mutex<(BinlogCoord, Option<i64>)>>,
    pub misconfigured: Arc<Mutex<Option<String>>>,
    pub topology_now: Arc<Mutex<Option<topology::Topology>>>,
    /// A minded source's follower: the node to move to.
    pub moving: Arc<super::minded::Moving>,
}

/// Whether the loop goes on with this round's bookkeeping after an event.
#[derive(PartialEq, Eq)]
pub(super) enum Step {
    Next,
    /// The event needs no bookkeeping (dropped, or it queued others).
    Skip,
}

pub(super) struct Coordinator<'a> {
    pub sync: &'a Incremental,
    pub conn: &'a mut Conn,
    pub pool: &'a mut Pool,
    pub detail: &'a mut IncrementalProgress,
    pub flush_bytes: usize,
    pub rename: Rename<'a>,
    pub shared: Shared,
    /// Prepared XA transactions passed and not yet ended.
    pub prepared: HashMap<String, Prepared>,
    /// Where the stream is: after the last transaction read.
    pub pos: Position,
    pub commit_ts: Option<i64>,
    /// Where it started (for the purged check).
    pub start: Position,
    /// The DDL the checkpoint marks as started and not known done.
    pub tolerate_ddl: Option<String>,
    /// Tables whose snapshot window the stream has not passed yet.
    pub windows: HashMap<String, Window>,
    pub schemas: HashMap<String, Arc<DestTable>>,
    pub group: Building,
    pub conflicts: Conflicts,
    pub in_flight: VecDeque<InFlight>,
    pub queued: VecDeque<SourceEvent>,
    /// Where the destination has committed up to.
    pub applied: (Position, Option<i64>),
    pub txn: Option<Txn>,
    pub force_commit: bool,
    pub pending_ddl: Option<String>,
    pub caught_up: bool,
    pub last_report: Instant,
    /// Partial sync: the copy running, the table whose events are dropped
    /// meanwhile, one the stream asked for by itself, and the last request
    /// finished.
    pub partial: Option<Partial>,
    pub dropping: Option<String>,
    pub wanted: Option<PartialSync>,
    pub done_request: Option<i64>,
    /// A verification's hold the stream is going on to.
    pub hold: Option<Armed>,
    pub reader: Option<Stoppable>,
    pub poller: Option<Stoppable>,
    pub follower: Option<Stoppable>,
}

impl<'a> Coordinator<'a> {
    /// Claims the destination, reads the checkpoint and starts the reader
    /// and poller tasks after it.
    pub async fn open(
        sync: &'a Incremental,
        conn: &'a mut Conn,
        pool: &'a mut Pool,
        flush_bytes: usize,
        detail: &'a mut IncrementalProgress,
    ) -> Result<Coordinator<'a>, SyncError> {
        let spec = &sync.spec;
        let name = spec.name.as_str();
        let dest_db = spec.dest.database.as_str();
        checkpoint::ensure_table(conn, dest_db)
            .await
            .map_err(|e| SyncError::sql("creating the checkpoint table", e))?;
        // From here a member with an older lease of the job cannot commit;
        // what it committed before is in the checkpoint read next.
        checkpoint::claim(conn, dest_db, name, sync.epoch)
            .await
            .map_err(|e| SyncError::sql("claiming the job's destination", e))?;
        let stored = checkpoint::load(conn, dest_db, name)
            .await
            .map_err(|e| SyncError::sql("reading the checkpoint", e))?
            .filter(|c| c.run_id == sync.run_id);
        checkpoint::ensure_xa_table(conn, dest_db)
            .await
            .map_err(|e| SyncError::sql("creating the XA table", e))?;
        let prepared = checkpoint::load_xa(conn, dest_db, name, sync.run_id)
            .await
            .map_err(|e| SyncError::sql("reading the prepared XA transactions", e))?;
        let (pos, commit_ts, tolerate_ddl) = match &stored {
            Some(cp) => (cp.position.clone(), cp.commit_ts, cp.pending_ddl.clone()),
            None => (sync.snapshot.clone(), None, None),
        };
        let windows: HashMap<String, Window> = sync
            .tables
            .iter()
            .map(|(table, w)| {
                let w = Window {
                    from: w.from.clone(),
                    to: w.to.clone(),
                };
                (table.clone(), w)
            })
            .filter(|(_, w)| !pos.reaches(&w.to))
            .collect();
        info!(job = %name, position = %pos, resumed = stored.is_some(),
              tables_in_snapshot = windows.len(), apply_connections = sync.apply_connections,
              "incremental sync starting");
        let rename = Rename {
            src_db: &spec.src.database,
            dest_db,
            table: spec.src.table.as_deref().zip(spec.dest.table.as_deref()),
            lower_case_table_names: sync.lower_case_table_names().await?,
        };
        let done_request = detail.partial_done.as_ref().map(|(p, _)| p.requested_at);
        let mut c = Coordinator {
            sync,
            conn,
            pool,
            detail,
            flush_bytes,
            rename,
            shared: Shared {
                feed: Arc::new(Feed::default()),
                bytes_read: Arc::new(AtomicU64::new(0)),
                read_head: Arc::new(Mutex::new(ReadHead::default())),
                source_head: Arc::new(Mutex::new(None)),
                applied_coord: Arc::new(Mutex::new((pos.coord.clone(), commit_ts))),
                misconfigured: Arc::new(Mutex::new(None)),
                topology_now: Arc::new(Mutex::new(None)),
                moving: Arc::new(super::minded::Moving::default()),
            },
            prepared,
            start: pos.clone(),
            applied: (pos.clone(), commit_ts),
            pos,
            commit_ts,
            tolerate_ddl,
            windows,
            schemas: HashMap::new(),
            group: Building::default(),
            conflicts: Conflicts::default(),
            in_flight: VecDeque::new(),
            queued: VecDeque::new(),
            txn: None,
            force_commit: false,
            pending_ddl: None,
            caught_up: false,
            last_report: Instant::now() - Duration::from_secs(1),
            partial: None,
            dropping: None,
            wanted: None,
            done_request,
            hold: None,
            reader: None,
            poller: None,
            follower: None,
        };
        c.start_tasks();
        Ok(c)
    }

    /// The reader runs ahead in its own task; the poller beside it.
    fn start_tasks(&mut self) {
        let sync = self.sync;
        let src = sync.source();
        let stop = sync.stop.child_token();
        let read = ReadTask {
            src: src.clone(),
            job: sync.spec.name.clone(),
            start: self.pos.clone(),
            scope: scope(&sync.spec),
            timeout: sync.connect_timeout,
            feed: FeedWriter(self.shared.feed.clone()),
            bytes_read: self.shared.bytes_read.clone(),
            head: self.shared.read_head.clone(),
        };
        self.reader = Some(Stoppable::spawn(stop.child_token(), |s| read.run(s)));
        let poll = PollTask {
            src,
            timeout: sync.connect_timeout,
            head: self.shared.source_head.clone(),
            applied: self.shared.applied_coord.clone(),
            misconfigured: self.shared.misconfigured.clone(),
            topology_now: self.shared.topology_now.clone(),
            metrics: sync.metrics.clone(),
            job: sync.spec.name.clone(),
            progress: sync.progress.clone(),
        };
        if let Some(arbitrator) = sync.live.source().minder.clone() {
            let reading = sync
                .progress
                .borrow()
                .detail
                .source_node
                .clone()
                .unwrap_or_else(|| sync.live.source().address());
            let (job, moving) = (sync.spec.name.clone(), self.shared.moving.clone());
            self.follower = Some(Stoppable::spawn(stop.child_token(), |s| {
                super::minded::follow(job, arbitrator, reading, moving, s)
            }));
        }
        self.poller = Some(Stoppable::spawn(stop, |s| poll_head(poll, s)));
    }

    /// Stops the reader (which closes the replica connection) and the poller.
    pub async fn close(&mut self) {
        let (reader, poller) = (self.reader.take(), self.poller.take());
        if let Some(f) = self.follower.take() {
            f.stop().await;
        }
        let stops = async {
            if let Some(r) = reader {
                r.stop().await;
            }
        };
        let polls = async {
            if let Some(p) = poller {
                p.stop().await;
            }
        };
        tokio::join!(stops, polls);
    }

    /// Applies the stream until an error, or until the sync is told to stop
    /// (`Ok`).
    pub async fn run(&mut self) -> Result<(), SyncError> {
        loop {
            if self.queued.is_empty() && !self.wait().await? {
                return Ok(());
            }
            self.hold_step().await?;
            if let Some(event) = self.queued.pop_front() {
                if self.on_event(event).await? == Step::Skip {
                    continue;
                }
            }
            let absorbed = self.absorb();
            if let Some(problem) = self.shared.misconfigured.lock().take() {
                return Err(SyncError::Definite(problem));
            }
            if let Some(t) = self.shared.topology_now.lock().take() {
                self.detail.topology = t;
            }
            self.partial_step().await?;
            self.report(absorbed);
            self.move_step()?;
        }
    }

    /// Waits for events, a commit, or a verification's request; `false`
    /// once told to stop.
    async fn wait(&mut self) -> Result<bool, SyncError> {
        // A hold the stream has reached waits for no more events.
        let hold_due = self.between_transactions()
            && self
                .hold
                .as_ref()
                .is_some_and(|h| stops_at(&self.pos, &h.at, None));
        let feed = self.shared.feed.clone();
        tokio::select! {
            e = feed.take() => match e {
                Ok(events) => {
                    // Streaming again after a transient error.
                    self.detail.retrying = false;
                    self.queued.extend(events);
                }
                Err(ReadError::Unavailable(m)) => {
                    return Err(self.sync.unavailable(m, &self.start).await);
                }
                Err(e) => return Err(read_error(e)),
            },
            r = self.pool.changed() => r?,
            _ = self.sync.holds.posted() => {}
            _ = std::future::ready(()), if hold_due => {}
            _ = self.shared.moving.wake.notified() => {}
            _ = self.sync.stop.cancelled() => return Ok(false),
        }
        Ok(true)
    }

    /// A minded source's node became unfit: the run ends (a transient
    /// error) and the next one starts from the checkpoint on the node named.
    fn move_step(&mut self) -> Result<(), SyncError> {
        if !self
            .shared
            .moving
            .changed
            .swap(false, std::sync::atomic::Ordering::Acquire)
        {
            return Ok(());
        }
        let name = self.shared.moving.reading.lock().clone();
        if name.is_some() && self.detail.minder_node != name {
            self.detail.minder_node = name.clone();
            self.sync
                .progress
                .send_modify(|a| a.detail.minder_node = name);
        }
        let Some(m) = self.shared.moving.to.lock().take() else {
            return Ok(());
        };
        self.detail.source_node = Some(m.mysql.clone());
        self.detail.minder_node = Some(m.node.clone());
        self.sync.progress.send_modify(|a| {
            a.detail.source_node = Some(m.mysql.clone());
            a.detail.minder_node = Some(m.node.clone());
        });
        Err(SyncError::Transient(format!(
            "the minded source: {} (from the checkpoint, at its GTID)",
            m.reason
        )))
    }

    /// Between transactions, and no table being copied again.
    fn between_transactions(&self) -> bool {
        self.txn.is_none() && self.partial.is_none() && self.dropping.is_none()
    }

    /// A verification's hold: between transactions, once everything up to
    /// its position is applied and nothing after it.
    async fn hold_step(&mut self) -> Result<(), SyncError> {
        if !self.between_transactions() {
            return Ok(());
        }
        if let Some(request) = self.sync.holds.take() {
            // Frozen here while the source snapshot opens.
            self.hold = request.frozen().await;
        }
        if self.hold.as_ref().is_some_and(|h| !h.wanted()) {
            self.hold = None;
        }
        if !self
            .hold
            .as_ref()
            .is_some_and(|h| stops_at(&self.pos, &h.at, self.queued.front()))
        {
            return Ok(());
        }
        let h = self.hold.take().expect("checked");
        let ddl = self.pending_ddl.take();
        self.close_group(ddl).await?;
        self.force_commit = false;
        self.pool.wait(self.conflicts.issued()).await?;
        debug!(job = %self.sync.spec.name, position = %self.pos, "holding for a verification");
        let released = h.grant(self.pos.clone());
        let _ = released.await;
        Ok(())
    }

    /// Closes the group being built (whole transactions only) with the
    /// checkpoint at the current position and hands it to the pool.
    pub async fn close_group(&mut self, pending_ddl: Option<String>) -> Result<(), SyncError> {
        let commit = self
            .sync
            .commit_chunk(&self.pos, self.commit_ts, pending_ddl);
        let done = self
            .group
            .finish(
                self.pool,
                &mut self.conflicts,
                commit,
                self.sync.failpoint,
                &self.pos,
                self.commit_ts,
            )
            .await?;
        self.in_flight.push_back(done);
        Ok(())
    }

    async fn on_event(&mut self, event: SourceEvent) -> Result<Step, SyncError> {
        match event {
            SourceEvent::Begin { gtid, at, .. } => self.on_begin(gtid, at).await?,
            SourceEvent::Annotate(_) => {}
            SourceEvent::XaPrepare { xid } => {
                if let Some(t) = self.txn.as_mut() {
                    t.xa = Some(xid);
                }
            }
            SourceEvent::XaEnd { xid, commit } => return self.on_xa_end(xid, commit).await,
            SourceEvent::Rows(change) => return self.on_rows(change).await,
            SourceEvent::Query {
                schema,
                sql,
                statement,
                session,
            } => return self.on_query(schema, sql, statement, session).await,
            SourceEvent::Commit { end, timestamp } => return self.on_commit(end, timestamp).await,
            SourceEvent::Idle { .. } => {
                if self.txn.is_none()
                    && self.group.txns == 0
                    && self.queued.is_empty()
                    && self.shared.feed.is_empty()
                {
                    self.caught_up = true;
                }
            }
        }
        Ok(Step::Next)
    }

    async fn on_begin(
        &mut self,
        gtid: Option<crate::position::MariaGtid>,
        at: BinlogCoord,
    ) -> Result<(), SyncError> {
        // Nothing after the copy's snapshot before the copy.
        if self
            .partial
            .as_ref()
            .is_some_and(|p| !p.at.holds(gtid, &at))
        {
            if self.group.txns > 0 {
                let ddl = self.pending_ddl.take();
                self.close_group(ddl).await?;
            }
            self.partial_done().await?;
        }
        self.caught_up = false;
        self.txn = Some(Txn::new(gtid, at, &self.pos, self.sync.skip.as_deref()));
        Ok(())
    }

    async fn on_rows(&mut self, change: RowChange) -> Result<Step, SyncError> {
        let sync = self.sync;
        let spec = &sync.spec;
        let dest_db = spec.dest.database.as_str();
        let Some(t) = self.txn.as_mut() else {
            return Err(SyncError::Definite(
                "the binlog has a row event outside a transaction".into(),
            ));
        };
        if t.skip {
            return Ok(Step::Skip);
        }
        // A prepared part: applied when it commits.
        if t.xa.is_some() {
            t.xa_rows = true;
            return Ok(Step::Skip);
        }
        let (gtid, at, txn_id, txn_name) =
            (t.gtid, t.at.clone(), t.id.clone(), t.name().to_string());
        let dest_table = match (&spec.src.table, &spec.dest.table) {
            (Some(_), Some(d)) => d.clone(),
            _ => change.table.table.clone(),
        };
        if self.dropping.as_deref() == Some(dest_table.as_str()) {
            return Ok(Step::Skip);
        }
        let mode = match self.windows.get(&dest_table) {
            Some(w) if w.from.holds(gtid, &at) => return Ok(Step::Skip),
            Some(w) if w.to.holds(gtid, &at) => Mode::Idempotent,
            _ => Mode::Exact,
        };
        let dest = self.dest_table(&dest_table, &txn_name).await?;
        let columns = match rows::mapping(&change.table, &dest) {
            Ok(c) => c,
            // A database job copies that table again (the rest goes on); its
            // events are dropped until the copy, which holds them, is in.
            Err(e) if spec.src.table.is_none() && self.partial.is_none() => {
                let reason =
                    format!("{txn_name} on {dest_db}.{dest_table} does not fit the table: {e}");
                warn!(job = %spec.name, table = %dest_table, %reason,
                      "the table's stream cannot continue: copying it again (partial sync)");
                self.wanted = Some(PartialSync {
                    table: change.table.table.clone(),
                    reason,
                    requested_at: crate::sync::now_ms(),
                });
                self.dropping = Some(dest_table);
                return Ok(Step::Skip);
            }
            Err(e) => {
                return Err(SyncError::Definite(format!(
                    "{txn_name} on {dest_db}.{dest_table}: {e}"
                )))
            }
        };
        let group = &mut self.group;
        for (before, after) in &change.rows {
            for image in [before, after].into_iter().flatten() {
                apply::row_hashes(&dest, &columns, image, &mut group.hashes);
            }
        }
        let n = change.rows.len() as u64;
        group.rows += n;
        group.bytes += change_bytes(&change);
        *group.rows_by_op.entry(change.op).or_default() += n;
        group.started.get_or_insert_with(Instant::now);
        // A change whose foreign keys change other rows on the destination
        // is applied in a barrier group, change by change: no group in
        // flight beside it.
        let cascades = dest.cascades(change.op);
        group.changes.push(Change {
            dest,
            columns: Arc::new(columns),
            mode,
            change,
            txn: txn_id,
        });
        let limit = if group.stream.is_some() {
            self.flush_bytes
        } else {
            STREAM_BYTES.max(self.flush_bytes)
        };
        if group.bytes >= limit || cascades && group.stream.is_none() {
            group.stream_out(self.pool, &mut self.conflicts).await?;
        }
        Ok(Step::Next)
    }

    /// The destination table's columns and key, read once per schema.
    async fn dest_table(&mut self, table: &str, txn: &str) -> Result<Arc<DestTable>, SyncError> {
        if let Some(d) = self.schemas.get(table) {
            return Ok(d.clone());
        }
        let dest_db = self.sync.spec.dest.database.as_str();
        let loaded = target::load(self.conn, dest_db, table)
            .await
            .map_err(|e| SyncError::sql("reading a destination table's columns", e))?
            .ok_or_else(|| {
                SyncError::Definite(format!(
                    "{txn}: destination table {dest_db}.{table} does not exist; \
                     it was dropped or renamed outside the job — resync the job"
                ))
            })?;
        let loaded = Arc::new(loaded);
        self.schemas.insert(table.to_string(), loaded.clone());
        Ok(loaded)
    }

    async fn on_commit(&mut self, end: BinlogCoord, timestamp: u32) -> Result<Step, SyncError> {
        let Some(mut t) = self.txn.take() else {
            return Ok(Step::Skip);
        };
        let sync = self.sync;
        let (name, dest_db) = (sync.spec.name.as_str(), sync.spec.dest.database.as_str());
        if let Some(g) = t.gtid {
            self.pos.gtid.advance(g);
        }
        if let Some(xid) = t.xa.take().filter(|_| !t.skip) {
            let p = Prepared {
                source: sync.source().address(),
                at: t.at.clone(),
                rows: t.xa_rows,
            };
            self.group.before.push(checkpoint::xa_record_sql(
                dest_db,
                name,
                sync.run_id,
                &xid,
                &p,
            ));
            self.prepared.insert(xid, p);
        }
        if t.skip {
            warn!(job = %name, transaction = %t.name(),
                  "skipping the source transaction as asked (job_skip_binlog)");
            self.group.skipped.extend(t.id.gtid.clone());
        }
        self.pos.coord = end;
        self.commit_ts = Some(i64::from(timestamp));
        self.group.txns += 1;
        let pos = &self.pos;
        self.windows.retain(|_, w| !pos.reaches(&w.to));
        let group = &self.group;
        let due = self.force_commit
            || self.queued.is_empty() && self.shared.feed.is_empty()
            || group.rows >= BATCH_ROWS
            || group.bytes >= GROUP_BYTES
            || group.started.is_some_and(|s| s.elapsed() >= BATCH_AGE);
        if due {
            let ddl = self.pending_ddl.take();
            self.close_group(ddl).await?;
            self.force_commit = false;
        }
        Ok(Step::Next)
    }

    /// Counts what has committed since; whether anything had.
    fn absorb(&mut self) -> bool {
        let committed = self.pool.committed();
        let name = self.sync.spec.name.as_str();
        let mut absorbed = false;
        while self.in_flight.front().is_some_and(|f| f.id <= committed) {
            let f = self.in_flight.pop_front().expect("checked");
            let applied_txns = f.txns - f.skipped.len() as u64;
            self.detail.transactions_applied += applied_txns;
            self.detail.rows_applied += f.rows;
            if let Some(last) = f.skipped.last() {
                self.detail.transactions_skipped += f.skipped.len() as u64;
                self.detail.last_skipped = Some(last.clone());
            }
            self.sync
                .metrics
                .count_applied(name, applied_txns, &f.rows_by_op);
            self.sync
                .metrics
                .observe_batch(name, f.started.elapsed().as_secs_f64());
            self.applied = (f.pos, f.commit_ts);
            absorbed = true;
        }
        absorbed
    }
}
