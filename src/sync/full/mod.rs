//! Full sync: copies a job's scope from the source to the destination as of
//! one source position P, and says where incremental sync starts.
//!
//! Why the copy is consistent:
//! - [`snapshot::open`] starts N snapshot transactions that all see the
//!   source as of one binlog position P (see that module for the argument).
//!   Table definitions, key bounds and rows are read inside them.
//! - The plan splits each table into key ranges that cover every key exactly
//!   once ([`chunks`]); each chunk is read by one snapshot connection and
//!   written, together with the row marking it done and naming P, in one
//!   destination transaction ([`plan`]). A chunk is thus copied entirely as
//!   of P or not at all.
//! - After a crash or a transient error the copy resumes from a new snapshot
//!   P2 and copies only the chunks not marked done. Those chunks hold the
//!   source as of P2, the others as of P; each table records the range of
//!   positions its chunks were read at ([`TableSnapshot`]), and incremental
//!   sync applies the table's events from the lower one idempotently until it
//!   passes the upper one, which brings every chunk to the same point.
//! - Nothing is written to a table before its first chunk: a table none of
//!   whose chunks is done is (re)created or emptied first, so rows of an
//!   earlier, abandoned attempt never mix with the copy.
//!
//! Memory is bounded by the connections times the block size: rows are
//! streamed from the source and sent on as LOAD DATA LOCAL INFILE blocks of
//! 256 KiB (or INSERTs of at most `statement_bytes` where the destination has
//! local_infile off), with at most two in flight per connection.

use crate::change::literal::LiteralKind;
use crate::db::{self, quote_ident};
use crate::dest::checkpoint;
use crate::dest::insert::InsertBuilder;
use crate::dest::load;
use crate::dest::plan::{self, ChunkDone, PlannedChunk};
use crate::dest::tables::{self, Existing, TableError};
use crate::error::{is_transient, SyncError};
use crate::position::Position;
use crate::source::chunks::{self};
use crate::source::ddl;
use crate::source::schema::{self, TableInfo};
use crate::source::snapshot::{self, SnapshotError};
use crate::sync::progress::{FullSyncProgress, TableSnapshot};
use crate::sync::Route;
use futures_util::{StreamExt, TryStreamExt};
use mysql_async::prelude::*;
use mysql_async::Conn;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

mod copy;
use copy::*;

/// How full syncs copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FullSyncSettings {
    /// Snapshot connections (and destination connections) copying at once.
    pub connections: usize,
    /// Rows per chunk: the unit of parallel work and of resumption.
    pub chunk_rows: u64,
    /// Largest INSERT statement sent, in bytes (also capped by the
    /// destination's max_allowed_packet).
    pub statement_bytes: usize,
}

impl Default for FullSyncSettings {
    fn default() -> Self {
        FullSyncSettings {
            connections: 4,
            chunk_rows: 50_000,
            statement_bytes: 1 << 20,
        }
    }
}

/// Where the job goes from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOver {
    /// P: incremental sync starts after it.
    pub position: Position,
    /// Each destination table's range of snapshot positions.
    pub tables: BTreeMap<String, TableSnapshot>,
}

/// One full sync of one job.
pub struct FullSync {
    pub spec: Arc<Route>,
    pub run_id: i64,
    /// Whether an earlier full sync of this job ran (`force_fullsync` and
    /// the like): the destination tables are then the job's own to replace.
    pub rerun: bool,
    pub settings: FullSyncSettings,
    pub connect_timeout: Duration,
    pub metrics: Arc<dyn crate::sync::Meter>,
    pub progress: watch::Sender<FullSyncProgress>,
    /// The lease epoch every chunk commits under (see `crate::dest::checkpoint`).
    pub epoch: i64,
}

/// What every copying connection shares.
struct Shared {
    spec: Arc<Route>,
    tables: HashMap<String, TableInfo>,
    queue: Mutex<VecDeque<PlannedChunk>>,
    tally: Mutex<Tally>,
    point: Position,
    statement_bytes: usize,
    /// Load with LOAD DATA LOCAL INFILE (the destination allows it).
    load_data: bool,
    connect_timeout: Duration,
    metrics: Arc<dyn crate::sync::Meter>,
    progress: watch::Sender<FullSyncProgress>,
    epoch: i64,
}

struct Tally {
    /// Chunks not yet done, per source table.
    left: HashMap<String, usize>,
    /// Estimated rows of chunks not yet done.
    estimated_left: u64,
}

/// A snapshot opened on the source: its connections and position.
struct Opened {
    conns: Vec<Conn>,
    point: Position,
    lock_held_ms: Option<u64>,
}

/// What the source holds to be copied, read in the snapshot.
struct Definitions {
    infos: Vec<TableInfo>,
    views: Vec<schema::ViewInfo>,
    sequences: Vec<schema::SequenceInfo>,
}

/// The plan's chunks by source table.
type ByTable<'a> = BTreeMap<&'a str, Vec<&'a PlannedChunk>>;

impl FullSync {
    /// One attempt: resumes the job's plan if it has one for this run.
    pub async fn run(&self) -> Result<HandOver, SyncError> {
        // The control session: schema, plan, views and the final read of the
        // checkpoints; each copying connection has its own.
        let mut dest = connect_dest(&self.spec, self.connect_timeout).await?;
        let Opened {
            mut conns,
            point,
            lock_held_ms,
        } = self.open_snapshot().await?;
        let defs = self.read_definitions(&mut conns[0], &mut dest).await?;
        let (planned, resumed) = self.plan(&mut dest, &mut conns[0], &defs.infos).await?;
        let mut by_table: ByTable = BTreeMap::new();
        for c in &planned {
            by_table.entry(c.src_table.as_str()).or_default().push(c);
        }
        self.prepare_tables(&mut dest, &defs, &by_table, resumed)
            .await?;
        let shared = self
            .shared(&mut dest, defs.infos, &planned, &by_table, point.clone())
            .await?;
        {
            let mut p = self.progress.borrow().clone();
            p.connections = conns.len() as u64;
            p.lock_held_ms = lock_held_ms;
            self.progress.send_replace(p);
        }
        info!(job = %self.spec.name, chunks = planned.len(),
              pending = shared.queue.lock().len(), resumed, "full sync copying");
        let mut workers = JoinSet::new();
        for conn in conns {
            workers.spawn(copy_chunks(shared.clone(), conn));
        }
        while let Some(result) = workers.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(SyncError::Definite(format!("copy task failed: {e}"))),
            }
        }
        self.finish(dest, &defs.views, &by_table, &shared, point)
            .await
    }

    /// Opens the snapshot (one connection when the source user lacks RELOAD).
    async fn open_snapshot(&self) -> Result<Opened, SyncError> {
        let src = self.spec.src.server_addr();
        let set = match snapshot::open(&src, self.settings.connections, self.connect_timeout).await
        {
            Err(SnapshotError::NeedsReload { count }) => {
                warn!(job = %self.spec.name, count,
                      "source user lacks RELOAD: copying with one connection");
                snapshot::open(&src, 1, self.connect_timeout).await
            }
            other => other,
        }
        .map_err(snapshot_error)?;
        let point = Position {
            gtid: set.gtid.clone(),
            coord: set.coord.clone(),
        };
        info!(job = %self.spec.name, connections = set.conns.len(), position = %point.coord,
              gtid = %point.gtid, "full sync snapshot started");
        self.progress
            .send_modify(|p| p.snapshot = Some(point.clone()));
        Ok(Opened {
            conns: set.conns,
            point,
            lock_held_ms: set.lock_held.map(|d| d.as_millis() as u64),
        })
    }

    /// Reads the tables, views and sequences to copy in the snapshot, and
    /// makes the destination database (as the source's) the job's: a member
    /// with an older lease can no longer commit a chunk.
    async fn read_definitions(
        &self,
        src: &mut Conn,
        dest: &mut Conn,
    ) -> Result<Definitions, SyncError> {
        let spec = &self.spec;
        let (src_db, dest_db) = (spec.src.database.as_str(), spec.dest.database.as_str());
        let read = |e| SyncError::sql("reading the source's definitions", e);
        let mut infos = schema::tables(src, src_db, spec.src.table.as_deref())
            .await
            .map_err(read)?;
        if let (Some(t), true) = (&spec.src.table, infos.is_empty()) {
            return Err(SyncError::Definite(format!(
                "source table {src_db}.{t} does not exist (any more)"
            )));
        }
        let (views, sequences) = if spec.src.table.is_none() {
            (
                schema::views(src, src_db).await.map_err(read)?,
                schema::sequences(src, src_db).await.map_err(read)?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        if spec.src.table.is_none() {
            // A database job's tables name its sequences (`DEFAULT
            // nextval(`db`.`s`)`) in the destination database.
            let rename = ddl::Rename {
                src_db,
                dest_db,
                table: None,
                lower_case_table_names: 0,
            };
            for info in infos.iter_mut() {
                info.create_sql =
                    rename.rewrite(&info.create_sql, ddl::Dialect::default(), src_db, &[]);
            }
        }
        let db_options = schema::database_options(src, src_db).await.map_err(read)?;
        let dest_sql = |e| SyncError::sql(format!("destination database {dest_db}"), e);
        tables::ensure_database(dest, dest_db, db_options.as_ref())
            .await
            .map_err(dest_sql)?;
        plan::ensure_table(dest, dest_db).await.map_err(dest_sql)?;
        checkpoint::ensure_table(dest, dest_db)
            .await
            .map_err(dest_sql)?;
        checkpoint::claim(dest, dest_db, &spec.name, self.epoch)
            .await
            .map_err(|e| SyncError::sql("claiming the job's destination", e))?;
        Ok(Definitions {
            infos,
            views,
            sequences,
        })
    }

    /// The run's plan: the stored one when resuming, else new chunks of
    /// every table, stored before any is copied. Whether it was resumed.
    async fn plan(
        &self,
        dest: &mut Conn,
        src: &mut Conn,
        infos: &[TableInfo],
    ) -> Result<(Vec<PlannedChunk>, bool), SyncError> {
        let spec = &self.spec;
        let (src_db, dest_db) = (spec.src.database.as_str(), spec.dest.database.as_str());
        let dest_sql = |e| SyncError::sql(format!("destination database {dest_db}"), e);
        if let Some(p) = plan::load(dest, dest_db, &spec.name, self.run_id)
            .await
            .map_err(dest_sql)?
        {
            return Ok((p, true));
        }
        let mut planned = Vec::new();
        for table in infos {
            let bounds = chunks::plan(src, src_db, table, self.settings.chunk_rows)
                .await
                .map_err(|e| {
                    SyncError::sql(format!("planning chunks of {src_db}.{}", table.name), e)
                })?;
            let dest_table = spec
                .dest
                .table
                .clone()
                .unwrap_or_else(|| table.name.clone());
            planned.extend(
                bounds
                    .into_iter()
                    .enumerate()
                    .map(|(i, bounds)| PlannedChunk {
                        src_table: table.name.clone(),
                        dest_table: dest_table.clone(),
                        chunk: i as u32,
                        bounds,
                        done: None,
                    }),
            );
        }
        plan::store(dest, dest_db, &spec.name, self.run_id, &planned)
            .await
            .map_err(dest_sql)?;
        Ok((planned, false))
    }

    /// Sequences, then tables: those with no chunk done yet start empty;
    /// the others must still be there.
    async fn prepare_tables(
        &self,
        dest: &mut Conn,
        defs: &Definitions,
        by_table: &ByTable<'_>,
        resumed: bool,
    ) -> Result<(), SyncError> {
        let spec = &self.spec;
        let job = spec.name.as_str();
        let (src_db, dest_db) = (spec.src.database.as_str(), spec.dest.database.as_str());
        let existing = if resumed || self.rerun {
            Existing::Replace
        } else if spec.allow_table_exists {
            Existing::ReuseIfSame
        } else {
            Existing::Refuse
        };
        // Sequences first: a table's default may take its values from one.
        for seq in &defs.sequences {
            tables::create_sequence(
                dest,
                dest_db,
                &seq.name,
                &seq.create_sql,
                &seq.next_not_cached_value,
                existing,
            )
            .await
            .map_err(table_error)?;
        }
        if !defs.sequences.is_empty() {
            info!(
                job,
                sequences = defs.sequences.len(),
                "destination sequences ready"
            );
        }
        for (src_table, chunks) in by_table {
            let info = defs
                .infos
                .iter()
                .find(|t| t.name == *src_table)
                .ok_or_else(|| {
                    SyncError::Definite(format!(
                        "source table {src_db}.{src_table} was dropped while the full sync ran; run force_fullsync"
                    ))
                })?;
            let dest_table = &chunks[0].dest_table;
            if chunks.iter().all(|c| c.done.is_none()) {
                // A table is replaced only while this holder's claim stands.
                dest.query_drop(checkpoint::fence_sql(dest_db, job, self.epoch))
                    .await
                    .map_err(|e| SyncError::sql("checking the job's lease", e))?;
                let prepared = tables::prepare_table(
                    dest,
                    dest_db,
                    dest_table,
                    src_table,
                    &info.create_sql,
                    existing,
                )
                .await
                .map_err(table_error)?;
                info!(job, table = %dest_table, ?prepared, "destination table ready");
            } else if !tables::exists(dest, dest_db, dest_table)
                .await
                .map_err(|e| SyncError::sql(format!("destination database {dest_db}"), e))?
            {
                return Err(SyncError::Definite(format!(
                    "destination table {dest_db}.{dest_table} was dropped while the full sync ran; run force_fullsync"
                )));
            }
        }
        if defs
            .infos
            .iter()
            .any(|t| !by_table.contains_key(t.name.as_str()))
        {
            // A table created after the plan was made: the plan no longer
            // covers the scope. Start over with a plan from a new snapshot.
            return Err(SyncError::Definite(format!(
                "a table appeared in {src_db} while the full sync ran; run force_fullsync"
            )));
        }
        Ok(())
    }

    /// What every copying connection shares: the chunks left (round-robin
    /// over tables), the tally, the destination's limits; the progress
    /// counted from the chunks already done.
    async fn shared(
        &self,
        dest: &mut Conn,
        infos: Vec<TableInfo>,
        planned: &[PlannedChunk],
        by_table: &ByTable<'_>,
        point: Position,
    ) -> Result<Arc<Shared>, SyncError> {
        let dest_db = self.spec.dest.database.as_str();
        let dest_sql = |e| SyncError::sql(format!("destination database {dest_db}"), e);
        let statement_bytes = self
            .settings
            .statement_bytes
            .min(crate::dest::max_packet(dest).await.map_err(dest_sql)? - 1024);
        let load_data = crate::dest::local_infile(dest).await.map_err(dest_sql)?;
        // Round-robin over tables (every table's first chunk, then every
        // second one, ...): connections then mostly write different tables
        // instead of contending for one table's index pages.
        let mut pending: Vec<PlannedChunk> = planned
            .iter()
            .filter(|c| c.done.is_none())
            .cloned()
            .collect();
        pending.sort_by_key(|c| c.chunk);
        let mut progress = FullSyncProgress {
            run_id: self.run_id,
            tables_total: by_table.len() as u64,
            method: if load_data { "load_data" } else { "insert" }.to_string(),
            rows_copied: 0,
            bytes_copied: 0,
            ..self.progress.borrow().clone()
        };
        let mut left: HashMap<String, usize> = HashMap::new();
        for c in planned {
            match &c.done {
                Some(d) => {
                    progress.rows_copied += d.rows;
                    progress.bytes_copied += d.bytes;
                }
                None => *left.entry(c.src_table.clone()).or_default() += 1,
            }
        }
        let estimated_left: u64 = pending.iter().map(|c| c.bounds.estimated_rows).sum();
        progress.rows_estimated = progress.rows_copied + estimated_left;
        progress.tables_done = (by_table.len() - left.len()) as u64;
        self.progress.send_replace(progress);
        Ok(Arc::new(Shared {
            spec: self.spec.clone(),
            tables: infos.into_iter().map(|t| (t.name.clone(), t)).collect(),
            queue: Mutex::new(VecDeque::from(pending)),
            tally: Mutex::new(Tally {
                left,
                estimated_left,
            }),
            point,
            statement_bytes,
            load_data,
            connect_timeout: self.connect_timeout,
            metrics: self.metrics.clone(),
            progress: self.progress.clone(),
            epoch: self.epoch,
        }))
    }

    /// Views last (they may name any of the tables), the keys of a table a
    /// run left between its last chunk and its keys, then the hand-over.
    async fn finish(
        &self,
        mut dest: Conn,
        views: &[schema::ViewInfo],
        by_table: &ByTable<'_>,
        shared: &Shared,
        point: Position,
    ) -> Result<HandOver, SyncError> {
        let spec = &self.spec;
        let (src_db, dest_db) = (spec.src.database.as_str(), spec.dest.database.as_str());
        create_views(&mut dest, src_db, dest_db, views).await?;
        for (src_table, chunks) in by_table {
            if let Some(info) = shared.tables.get(*src_table) {
                tables::add_deferred_keys(
                    &mut dest,
                    dest_db,
                    &chunks[0].dest_table,
                    &info.create_sql,
                )
                .await
                .map_err(table_error)?;
            }
        }
        if by_table.is_empty() {
            // A database with no base tables yet (empty, or views only): there
            // is nothing to copy, and the stream starts at the snapshot, so
            // every table created from now on arrives through it.
            let _ = dest.disconnect().await;
            info!(job = %spec.name, position = %point.coord, "full sync: no tables to copy");
            return Ok(HandOver {
                position: point,
                tables: BTreeMap::new(),
            });
        }
        let done = plan::load(&mut dest, dest_db, &spec.name, self.run_id)
            .await
            .map_err(|e| SyncError::sql(format!("destination database {dest_db}"), e))?
            .ok_or_else(|| {
                SyncError::Definite(format!(
                    "the full sync plan in {dest_db}.{} vanished",
                    plan::TABLE
                ))
            })?;
        let _ = dest.disconnect().await;
        hand_over(&done)
    }
}

/// A destination session set up for writing (see `crate::dest::session_setup`).
pub(super) async fn connect_dest(spec: &Route, timeout: Duration) -> Result<Conn, SyncError> {
    let mut dest = db::connect(&spec.dest.server_addr(), None, timeout)
        .await
        .map_err(|e| SyncError::connect("destination", e))?;
    crate::dest::session_setup(&mut dest)
        .await
        .map_err(|e| SyncError::sql("destination session", e))?;
    Ok(dest)
}

pub(super) fn snapshot_error(e: SnapshotError) -> SyncError {
    match e {
        SnapshotError::Connect(c) => SyncError::connect("source", c),
        SnapshotError::Query(q) => SyncError::sql("starting source snapshots", q),
        SnapshotError::Inconsistent { .. } | SnapshotError::SlowStart(_) => {
            SyncError::Transient(format!("source {e}"))
        }
        SnapshotError::NoBinlog | SnapshotError::NeedsReload { .. } => {
            SyncError::Definite(format!("source {e}"))
        }
    }
}

fn table_error(e: TableError) -> SyncError {
    match e {
        TableError::Sql { ref source, .. } if is_transient(source) => {
            SyncError::Transient(e.to_string())
        }
        other => SyncError::Definite(other.to_string()),
    }
}

/// Views in an order that works: one that names a view not yet created is
/// retried after the others.
async fn create_views(
    dest: &mut Conn,
    src_db: &str,
    dest_db: &str,
    views: &[schema::ViewInfo],
) -> Result<(), SyncError> {
    let mut left: Vec<&schema::ViewInfo> = views.iter().collect();
    while !left.is_empty() {
        let mut failed = Vec::new();
        let mut last_error = None;
        for view in &left {
            match tables::create_view(dest, src_db, dest_db, &view.name, &view.create_sql).await {
                Ok(()) => {}
                Err(e) => {
                    failed.push(*view);
                    last_error = Some(e);
                }
            }
        }
        if failed.len() == left.len() {
            return Err(last_error
                .map(table_error)
                .unwrap_or_else(|| SyncError::Definite("views could not be created".into())));
        }
        left = failed;
    }
    Ok(())
}

/// P is the lowest position any chunk was read at; each table gets the range
/// of its own chunks' positions.
fn hand_over(chunks: &[PlannedChunk]) -> Result<HandOver, SyncError> {
    let point = |d: &ChunkDone| d.at.clone();
    fn order(d: &&&ChunkDone) -> (Option<u64>, String, u64) {
        (
            d.at.coord.file_index(),
            d.at.coord.file.clone(),
            d.at.coord.pos,
        )
    }
    let mut tables = BTreeMap::new();
    let mut all = Vec::with_capacity(chunks.len());
    let mut by_table: BTreeMap<&str, Vec<&ChunkDone>> = BTreeMap::new();
    for c in chunks {
        let done = c.done.as_ref().ok_or_else(|| {
            SyncError::Transient(format!(
                "chunk {} of {} is not copied yet",
                c.chunk, c.src_table
            ))
        })?;
        by_table
            .entry(c.dest_table.as_str())
            .or_default()
            .push(done);
        all.push(done);
    }
    for (table, dones) in by_table {
        let (Some(from), Some(to)) = (
            dones.iter().min_by_key(order),
            dones.iter().max_by_key(order),
        ) else {
            continue;
        };
        tables.insert(
            table.to_string(),
            TableSnapshot {
                from: point(from),
                to: point(to),
            },
        );
    }
    let position = all
        .iter()
        .min_by_key(order)
        .map(|d| point(d))
        .ok_or_else(|| SyncError::Definite("the full sync plan has no chunks".into()))?;
    Ok(HandOver { position, tables })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ChunkBounds;

    fn done(src: &str, dest: &str, chunk: u32, file: &str, pos: u64) -> PlannedChunk {
        PlannedChunk {
            src_table: src.into(),
            dest_table: dest.into(),
            chunk,
            bounds: ChunkBounds {
                lower: None,
                upper: None,
                estimated_rows: 0,
            },
            done: Some(ChunkDone {
                at: Position::new(&format!("0-1-{pos}"), file, pos).unwrap(),
                rows: 1,
                bytes: 1,
            }),
        }
    }

    #[test]
    fn hand_over_takes_the_lowest_position() {
        let chunks = [
            done("a", "a2", 0, "b.000002", 10),
            done("a", "a2", 1, "b.000001", 900),
            done("c", "c", 0, "b.000002", 10),
        ];
        let h = hand_over(&chunks).unwrap();
        assert_eq!(h.position.coord.file, "b.000001");
        assert_eq!(h.position.coord.pos, 900);
        let a = &h.tables["a2"];
        assert_eq!((a.from.coord.pos, a.to.coord.pos), (900, 10));
        assert_eq!(h.tables["c"].from, h.tables["c"].to);
        let mut unfinished = chunks.to_vec();
        unfinished[1].done = None;
        assert!(hand_over(&unfinished).is_err());
    }
}
