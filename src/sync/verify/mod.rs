//! Verification and repair, online: compares a job's destination with its
//! source while the job streams, and copies again the key ranges found
//! different.
//!
//! Both sides are read as of one source position. A *pair* of snapshots is
//! opened together ([`super::hold`]): a consistent snapshot on the node the
//! stream reads, at position P, and one on the destination taken while the
//! stream holds at exactly P — its checkpoint row, read in that snapshot,
//! names P. Writes going on on either side cannot make a difference appear:
//! each side's snapshot is the data as of P. A pair serves for
//! `[verify] snapshot_secs`, then a new one is opened between chunks, so no
//! snapshot stays open long on the source.
//!
//! A table is compared in chunks of `chunk_rows` source rows in key order
//! (the next chunk's bound is found by walking the key on the source
//! snapshot), each chunk as a row count and two 64-bit XORs of a 128-bit
//! hash per row (MD5 of every column's MD5, NULL told apart) on both sides.
//! A chunk that differs is narrowed to rows: the source's keys and row
//! hashes are read a page of `chunk_rows` at a time, the destination's for
//! the same key range are streamed against them, and each run of
//! consecutive differing rows (in the source's key order for rows missing
//! or changed, in the destination's for rows it has and the source does
//! not) becomes a key range. Memory is one page; the source reads at most
//! `rows_per_second`. The table's result and the upper bound of the last
//! chunk compared are saved with the job, so an interrupted comparison goes
//! on after that chunk.
//!
//! A repair copies each range again while the stream holds at a source
//! snapshot's position P: in one destination transaction per page it
//! deletes the destination's rows of the range and writes the source's
//! rows as of P, fenced by the job's lease, then lets the stream go on,
//! whose changes after P apply to rows now as of P. Then it compares the
//! repaired ranges again.

use super::full::{self as full_sync};
use super::hold::Holds;
use super::progress::{CheckState, KeyPart, KeyRange, TableCheck, Verification, MAX_RANGES};
use crate::change::KeyValue;
use crate::db::Endpoint;
use crate::db::{self, quote_ident};
use crate::dest::checkpoint;
use crate::dest::insert::InsertBuilder;
use crate::error::SyncError;
use crate::position::Position;
use crate::source::chunks::{self, Cmp};
use crate::source::schema::{self, Column, TableInfo};
use crate::source::snapshot;
use crate::sync::Route;
use futures_util::TryStreamExt;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

mod repair;

/// How verifications (`/verify`) and repairs (`/repair`) read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifySettings {
    /// Source rows per compared chunk (and per page of a narrowed chunk).
    pub chunk_rows: u64,
    /// At most this many source rows compared per second; 0: no limit.
    pub rows_per_second: u64,
    /// A pair of snapshots is used this long, then a new one is taken.
    pub snapshot_secs: u64,
    /// How long a try waits for the stream to reach the source snapshot's
    /// position before trying again.
    pub wait_secs: u64,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            chunk_rows: 10_000,
            rows_per_second: 100_000,
            snapshot_secs: 5,
            wait_secs: 60,
        }
    }
}

/// How long the stream may take to stop between two transactions.
const FREEZE_WAIT: Duration = Duration::from_secs(10);
/// A repair writes for about this long per hold, then lets the stream go on.
const HOLD_BUDGET: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub struct Verify {
    pub spec: Arc<Route>,
    /// The node the job's stream reads.
    pub source: Endpoint,
    pub settings: VerifySettings,
    pub connect_timeout: Duration,
    pub statement_bytes: usize,
    /// The lease epoch a repair's writes are fenced by.
    pub epoch: i64,
    pub holds: Arc<Holds>,
    pub metrics: Arc<dyn crate::sync::Meter>,
    pub progress: watch::Sender<Verification>,
}

/// A source snapshot and a destination snapshot as of one source position.
struct Pair {
    src: Conn,
    dest: Conn,
    position: String,
    opened: Instant,
}

/// Rows found different in a key range.
#[derive(Default)]
struct Found {
    rows_different: u64,
    ranges: Vec<KeyRange>,
    truncated: bool,
}

/// Keeps `range` unless `MAX_RANGES` are kept already (then `truncated`).
fn keep(ranges: &mut Vec<KeyRange>, truncated: &mut bool, range: KeyRange) {
    if ranges.len() < MAX_RANGES {
        ranges.push(range);
    } else {
        *truncated = true;
    }
}

impl Found {
    fn push(&mut self, range: KeyRange) {
        self.rows_different += range.rows;
        keep(&mut self.ranges, &mut self.truncated, range);
    }

    fn absorb(&mut self, other: Found) {
        self.truncated |= other.truncated;
        for r in other.ranges {
            self.push(r);
        }
    }
}

/// A key range to read: after (or from) one key, up to (inclusive) another.
#[derive(Clone, Default)]
struct Region {
    lower: Option<(KeyValue, Cmp)>,
    upper: Option<KeyValue>,
}

impl Region {
    fn of(range: &KeyRange) -> Option<Region> {
        Some(Region {
            lower: Some((key_bytes(&range.first)?, Cmp::GreaterOrEqual)),
            upper: Some(key_bytes(&range.last)?),
        })
    }

    /// The WHERE condition, with rows after `after` only; `None`: every row.
    fn filter(&self, key: &[Column], after: Option<&KeyValue>) -> Option<Vec<u8>> {
        let parts: Vec<Vec<u8>> = [
            self.lower
                .as_ref()
                .map(|(v, cmp)| chunks::compare(key, v, *cmp)),
            after.map(|v| chunks::compare(key, v, Cmp::Greater)),
            self.upper
                .as_ref()
                .map(|v| chunks::compare(key, v, Cmp::LessOrEqual)),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!parts.is_empty()).then(|| parts.join(&b" AND "[..]))
    }
}

fn key_bytes(parts: &[KeyPart]) -> Option<KeyValue> {
    parts.iter().map(KeyPart::to_bytes).collect()
}

fn key_parts(value: &KeyValue) -> Vec<KeyPart> {
    value.iter().map(|b| KeyPart::from_bytes(b)).collect()
}

/// One row's hash: MD5 over each copied column's MD5 (`N` for NULL).
fn row_hash(columns: &[Column]) -> String {
    let parts: Vec<String> = columns
        .iter()
        .map(|c| format!("COALESCE(MD5({}), 'N')", c.select_expr()))
        .collect();
    format!("MD5(CONCAT_WS(',', {}))", parts.join(", "))
}

fn with_filter(mut sql: Vec<u8>, filter: Option<Vec<u8>>) -> Vec<u8> {
    if let Some(f) = filter {
        sql.extend_from_slice(b" WHERE ");
        sql.extend_from_slice(&f);
    }
    sql
}

/// Rows, and two XORs of their hashes' halves.
type Sum = (u64, u64, u64);

async fn checksum(
    conn: &mut Conn,
    from: &str,
    columns: &[Column],
    filter: Option<Vec<u8>>,
) -> Result<Sum, mysql_async::Error> {
    let half = |at: usize| {
        format!("CAST(COALESCE(BIT_XOR(CAST(CONV(SUBSTRING(h, {at}, 16), 16, 10) AS UNSIGNED)), 0) AS UNSIGNED)")
    };
    let mut sql = format!(
        "SELECT COUNT(*), {}, {} FROM (SELECT {} AS h FROM {from}",
        half(1),
        half(17),
        row_hash(columns)
    )
    .into_bytes();
    sql = with_filter(sql, filter);
    sql.extend_from_slice(b") AS rows_hashed");
    let row: Option<(u64, u64, u64)> = conn.query_first(sql).await?;
    Ok(row.unwrap_or_default())
}

fn bytes_of(v: Option<mysql_async::Value>) -> Option<Vec<u8>> {
    match v {
        Some(mysql_async::Value::Bytes(b)) => Some(b),
        Some(mysql_async::Value::NULL) | None => None,
        Some(other) => Some(other.as_sql(true).into_bytes()),
    }
}

/// A row of keys then hash.
fn keyed(row: mysql_async::Row, key_len: usize) -> (KeyValue, Vec<u8>) {
    let mut values: Vec<Vec<u8>> = row
        .unwrap_raw()
        .into_iter()
        .map(|v| bytes_of(v).unwrap_or_default())
        .collect();
    let hash = values.pop().unwrap_or_default();
    values.truncate(key_len);
    (values, hash)
}

/// Runs of consecutive flagged items, as key ranges.
struct Runs {
    open: Option<KeyRange>,
}

impl Runs {
    fn new() -> Self {
        Runs { open: None }
    }

    fn flag(&mut self, key: &KeyValue) {
        match self.open.as_mut() {
            Some(r) => {
                r.last = key_parts(key);
                r.rows += 1;
            }
            None => {
                self.open = Some(KeyRange {
                    first: key_parts(key),
                    last: key_parts(key),
                    rows: 1,
                })
            }
        }
    }

    fn close(&mut self, found: &mut Found) {
        if let Some(r) = self.open.take() {
            found.push(r);
        }
    }
}

impl Verify {
    /// Compares (and repairs) table after table until every one is done.
    /// Only a fenced repair ends it early.
    pub async fn run(self) -> Result<(), SyncError> {
        let name = self.spec.name.clone();
        let mut backoff = BACKOFF_FIRST;
        loop {
            let next = self
                .progress
                .borrow()
                .tables
                .iter()
                .position(|t| t.state != CheckState::Done);
            let Some(i) = next else { break };
            let repairing = self.progress.borrow().tables[i]
                .repair
                .as_ref()
                .is_some_and(|r| r.state != CheckState::Done);
            let result = if repairing {
                self.repair(i).await
            } else {
                self.compare(i).await
            };
            match result {
                Ok(()) => {
                    backoff = BACKOFF_FIRST;
                    self.progress.send_modify(|v| v.last_error = None);
                }
                Err(SyncError::Transient(m)) => {
                    warn!(job = %name, error = %m, "verification: trying again");
                    self.progress.send_modify(|v| v.last_error = Some(m));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e @ SyncError::Fenced(_)) => return Err(e),
                Err(e) => {
                    let message = e.to_string();
                    warn!(job = %name, error = %message, "verification: the table cannot be compared");
                    self.finish_table(i, |t| {
                        t.error = Some(message);
                        t.equal = None;
                        if let Some(r) = t.repair.as_mut() {
                            r.state = CheckState::Done;
                        }
                    });
                }
            }
        }
        self.progress.send_modify(|v| {
            v.state = CheckState::Done;
            v.finished_at = Some(crate::sync::now_ms());
            v.last_error = None;
        });
        info!(job = %name, "verification done");
        Ok(())
    }

    fn dest_table(&self, table: &str) -> String {
        self.spec
            .dest
            .table
            .clone()
            .unwrap_or_else(|| table.to_string())
    }

    fn from(&self, side_db: &str, table: &str) -> String {
        format!("{}.{}", quote_ident(side_db), quote_ident(table))
    }

    /// The table's definition, read on the source snapshot.
    async fn table_info(&self, src: &mut Conn, table: &str) -> Result<TableInfo, SyncError> {
        schema::tables(src, &self.spec.src.database, Some(table))
            .await
            .map_err(|e| SyncError::sql("reading the source table's definition", e))?
            .into_iter()
            .next()
            .ok_or_else(|| {
                SyncError::Definite(format!(
                    "source table {}.{table} does not exist (dropped since the verification was asked?)",
                    self.spec.src.database
                ))
            })
    }

    /// Freezes the stream, opens a source snapshot at P and holds the
    /// stream at exactly P. Returns the snapshot, P, and the hold.
    async fn hold_at_source(&self) -> Result<(Conn, Position, super::hold::Held), SyncError> {
        let frozen = self
            .holds
            .freeze(FREEZE_WAIT)
            .await
            .map_err(|e| SyncError::Transient(e.to_string()))?;
        let mut set = snapshot::open(&self.source.server_addr(), 1, self.connect_timeout)
            .await
            .map_err(full_sync::snapshot_error)?;
        let at = Position {
            gtid: set.gtid.clone(),
            coord: set.coord.clone(),
        };
        let held = frozen
            .hold_at(at.clone(), Duration::from_secs(self.settings.wait_secs))
            .await
            .map_err(|e| SyncError::Transient(e.to_string()))?;
        if !held.is_at(&at) {
            return Err(SyncError::Transient(format!(
                "the stream stopped at {}, not at the source snapshot's {}; trying again",
                held.at, at
            )));
        }
        let src = set
            .conns
            .pop()
            .ok_or_else(|| SyncError::Transient("no source snapshot".into()))?;
        Ok((src, at, held))
    }

    /// A source snapshot and a destination snapshot as of one position.
    async fn open_pair(&self) -> Result<Pair, SyncError> {
        let mut dest = full_sync::connect_dest(&self.spec, self.connect_timeout).await?;
        dest.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(|e| SyncError::sql("destination session", e))?;
        let (src, at, held) = self.hold_at_source().await?;
        let context = "opening the destination snapshot";
        dest.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await
            .map_err(|e| SyncError::sql(context, e))?;
        let cp = checkpoint::load(&mut dest, &self.spec.dest.database, &self.spec.name)
            .await
            .map_err(|e| SyncError::sql(context, e))?;
        let held_at = held.at.clone();
        drop(held);
        match cp {
            Some(cp) if cp.position == held_at => {}
            other => {
                return Err(SyncError::Transient(format!(
                    "the destination snapshot's checkpoint is {:?}, not the held position {held_at}; trying again",
                    other.map(|c| c.position.to_string())
                )))
            }
        }
        let position = at.to_string();
        Ok(Pair {
            src,
            dest,
            position,
            opened: Instant::now(),
        })
    }

    async fn fresh(&self, pair: Option<Pair>) -> Result<Pair, SyncError> {
        match pair {
            Some(p) if p.opened.elapsed() < Duration::from_secs(self.settings.snapshot_secs) => {
                Ok(p)
            }
            old => {
                // Its destination snapshot holds metadata locks a DDL the
                // stream applies waits for: gone before the stream freezes.
                drop(old);
                self.open_pair().await
            }
        }
    }

    /// Waits so that the source reads at most `rows_per_second`.
    async fn pace(&self, started: Instant, rows_so_far: u64) {
        let rate = self.settings.rows_per_second;
        if rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(rows_so_far as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }

    fn finish_table(&self, i: usize, change: impl FnOnce(&mut TableCheck)) {
        let now = crate::sync::now_ms();
        let mut done = TableCheck::default();
        self.progress.send_modify(|v| {
            let t = &mut v.tables[i];
            change(t);
            t.state = CheckState::Done;
            t.cursor = None;
            t.verified_at = Some(now);
            done = t.clone();
        });
        if done.error.is_none() {
            self.metrics.set_verified(
                &self.spec.name,
                &done.table,
                now / 1000,
                done.rows_different,
            );
        }
        info!(job = %self.spec.name, table = %done.table, equal = ?done.equal,
              rows_different = done.rows_different, "verification: table compared");
    }

    /// Compares table `i` chunk by chunk, from where it stopped.
    async fn compare(&self, i: usize) -> Result<(), SyncError> {
        let check = self.progress.borrow().tables[i].clone();
        let table = check.table.clone();
        let mut pair = self.open_pair().await?;
        let info = self.table_info(&mut pair.src, &table).await?;
        let src_from = self.from(&self.spec.src.database, &info.name);
        let dest_from = self.from(&self.spec.dest.database, &self.dest_table(&table));
        let mut cursor: Option<KeyValue> = check.cursor.as_deref().and_then(key_bytes);
        self.progress.send_modify(|v| {
            let t = &mut v.tables[i];
            if t.state == CheckState::Pending {
                *t = TableCheck {
                    table: table.clone(),
                    state: CheckState::Running,
                    ..TableCheck::default()
                };
            }
        });
        let started = Instant::now();
        let mut rows_read = 0u64;
        let mut pair = Some(pair);
        loop {
            let mut p = self.fresh(pair.take()).await?;
            let upper = if info.key.is_empty() {
                None
            } else {
                chunks::next_bound(
                    &mut p.src,
                    &src_from,
                    &info.key,
                    cursor.as_ref(),
                    self.settings.chunk_rows,
                )
                .await
                .map_err(|e| SyncError::sql("walking the source table's key", e))?
            };
            let region = Region {
                lower: cursor.clone().map(|c| (c, Cmp::Greater)),
                upper: upper.clone(),
            };
            let filter = region.filter(&info.key, None);
            let (s, d) = tokio::join!(
                checksum(&mut p.src, &src_from, &info.columns, filter.clone()),
                checksum(&mut p.dest, &dest_from, &info.columns, filter),
            );
            let s = s.map_err(|e| SyncError::sql("checksumming a source chunk", e))?;
            let d = d.map_err(|e| SyncError::sql("checksumming a destination chunk", e))?;
            let mut found = Found::default();
            let mut keyless = false;
            if s != d {
                if info.key.is_empty() {
                    keyless = true;
                    found.rows_different = s.0.abs_diff(d.0).max(1);
                } else {
                    found = self
                        .diff(&mut p, &info, &src_from, &dest_from, &region)
                        .await?;
                }
            }
            rows_read += s.0;
            let position = p.position.clone();
            self.progress.send_modify(|v| {
                let t = &mut v.tables[i];
                t.rows_compared += s.0;
                t.chunks_compared += 1;
                t.rows_different += found.rows_different;
                t.ranges_truncated |= found.truncated;
                for r in found.ranges.drain(..) {
                    keep(&mut t.ranges, &mut t.ranges_truncated, r);
                }
                if keyless {
                    t.error = Some(
                        "the table has no primary or unique NOT NULL key, so its differing rows \
                         cannot be told by key: copy it again with partial_sync"
                            .into(),
                    );
                }
                t.cursor = upper.as_ref().map(key_parts);
                t.position = Some(position);
            });
            pair = Some(p);
            // The last chunk finishes the table at once (no await between:
            // an interrupted verification never sees it half done).
            let Some(u) = upper else { break };
            self.pace(started, rows_read).await;
            cursor = Some(u);
        }
        self.finish_table(i, |t| {
            t.equal = Some(t.rows_different == 0 && !t.ranges_truncated);
        });
        Ok(())
    }

    /// The rows of `region` that differ, narrowed page by page.
    async fn diff(
        &self,
        pair: &mut Pair,
        info: &TableInfo,
        src_from: &str,
        dest_from: &str,
        region: &Region,
    ) -> Result<Found, SyncError> {
        let key = &info.key;
        let page = self.settings.chunk_rows;
        let select = format!("{}, {}", chunks::key_select(key), row_hash(&info.columns));
        let order = format!(" ORDER BY {}", chunks::key_order(key));
        let mut found = Found::default();
        let mut after: Option<KeyValue> = None;
        loop {
            let mut sql = with_filter(
                format!("SELECT {select} FROM {src_from}").into_bytes(),
                region.filter(key, after.as_ref()),
            );
            sql.extend_from_slice(format!("{order} LIMIT {page}").as_bytes());
            let rows: Vec<mysql_async::Row> = pair
                .src
                .query(sql)
                .await
                .map_err(|e| SyncError::sql("reading source rows' hashes", e))?;
            let src: Vec<(KeyValue, Vec<u8>)> =
                rows.into_iter().map(|r| keyed(r, key.len())).collect();
            let full = src.len() as u64 == page;
            // This page covers keys after `after` up to its last key (the
            // region's end when it is the last page).
            let page_region = Region {
                lower: None,
                upper: if full {
                    src.last().map(|(k, _)| k.clone())
                } else {
                    None
                },
            };
            let mut filter = region.filter(key, after.as_ref());
            if let Some(f2) = page_region.filter(key, None) {
                filter = Some(match filter {
                    Some(mut f) => {
                        f.extend_from_slice(b" AND ");
                        f.extend_from_slice(&f2);
                        f
                    }
                    None => f2,
                });
            }
            let mut sql = with_filter(
                format!("SELECT {select} FROM {dest_from}").into_bytes(),
                filter,
            );
            sql.extend_from_slice(order.as_bytes());
            let index: HashMap<&KeyValue, usize> =
                src.iter().enumerate().map(|(i, (k, _))| (k, i)).collect();
            // Per source row: None not seen at the destination, Some(equal).
            let mut seen: Vec<Option<bool>> = vec![None; src.len()];
            let mut extra = Runs::new();
            {
                let context = "reading destination rows' hashes";
                let mut result = pair
                    .dest
                    .query_iter(sql)
                    .await
                    .map_err(|e| SyncError::sql(context, e))?;
                if let Some(mut stream) = result
                    .stream::<mysql_async::Row>()
                    .await
                    .map_err(|e| SyncError::sql(context, e))?
                {
                    while let Some(row) = stream
                        .try_next()
                        .await
                        .map_err(|e| SyncError::sql(context, e))?
                    {
                        let (k, h) = keyed(row, key.len());
                        match index.get(&k) {
                            Some(&i) => {
                                seen[i] = Some(src[i].1 == h);
                                extra.close(&mut found);
                            }
                            None => extra.flag(&k),
                        }
                    }
                }
                drop(result);
            }
            extra.close(&mut found);
            let mut differing = Runs::new();
            for (i, (k, _)) in src.iter().enumerate() {
                if seen[i] == Some(true) {
                    differing.close(&mut found);
                } else {
                    differing.flag(k);
                }
            }
            differing.close(&mut found);
            if !full {
                break;
            }
            after = src.last().map(|(k, _)| k.clone());
        }
        Ok(found)
    }
}

/// Connects the source a verification reads, for a request's checks.
pub async fn source_tables(source: &Endpoint, timeout: Duration) -> Result<Vec<String>, SyncError> {
    let mut conn = db::connect(&source.server_addr(), None, timeout)
        .await
        .map_err(|e| SyncError::connect("source", e))?;
    let names: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (source.database.as_str(),),
        )
        .await
        .map_err(|e| SyncError::sql("listing the source's tables", e))?;
    let _ = conn.disconnect().await;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_key() -> Vec<Column> {
        vec![Column {
            name: "id".into(),
            data_type: "int".into(),
            charset: None,
            collation: None,
        }]
    }

    #[test]
    fn regions_read_their_keys() {
        let key = int_key();
        let text = |f: Option<Vec<u8>>| f.map(|f| String::from_utf8(f).unwrap());
        let range = KeyRange {
            first: vec![KeyPart::Text("100".into())],
            last: vec![KeyPart::Text("104".into())],
            rows: 5,
        };
        let r = Region::of(&range).unwrap();
        assert_eq!(
            text(r.filter(&key, None)).unwrap(),
            "`id` >= 100 AND `id` <= 104"
        );
        assert_eq!(
            text(r.filter(&key, Some(&vec![b"101".to_vec()]))).unwrap(),
            "`id` >= 100 AND `id` > 101 AND `id` <= 104"
        );
        assert_eq!(text(Region::default().filter(&key, None)), None);
        let bad = KeyRange {
            first: vec![KeyPart::Bytes { hex: "zz".into() }],
            ..range
        };
        assert!(Region::of(&bad).is_none());
    }

    #[test]
    fn runs_become_ranges_and_the_list_is_capped() {
        let mut found = Found::default();
        let mut runs = Runs::new();
        for k in ["1", "2", "3"] {
            runs.flag(&vec![k.as_bytes().to_vec()]);
        }
        runs.close(&mut found);
        runs.close(&mut found);
        runs.flag(&vec![b"9".to_vec()]);
        runs.close(&mut found);
        assert_eq!(found.rows_different, 4);
        assert_eq!(found.ranges.len(), 2);
        assert_eq!(found.ranges[0].first, vec![KeyPart::Text("1".into())]);
        assert_eq!(found.ranges[0].last, vec![KeyPart::Text("3".into())]);
        assert_eq!(found.ranges[0].rows, 3);
        for _ in 0..MAX_RANGES {
            found.push(KeyRange::default());
        }
        assert_eq!(found.ranges.len(), MAX_RANGES);
        assert!(found.truncated);
    }

    #[test]
    fn row_hash_tells_null_apart() {
        let cols = vec![
            Column {
                name: "a".into(),
                data_type: "varchar".into(),
                charset: Some("utf8mb4".into()),
                collation: Some("utf8mb4_bin".into()),
            },
            Column {
                name: "f".into(),
                data_type: "float".into(),
                charset: None,
                collation: None,
            },
        ];
        assert_eq!(
            row_hash(&cols),
            "MD5(CONCAT_WS(',', COALESCE(MD5(`a`), 'N'), COALESCE(MD5(CAST(`f` AS DOUBLE)), 'N')))"
        );
    }
}
