//! A set of snapshot transactions on the source that all see the data as of
//! one binlog position P: the start of a consistent (parallel) full sync.
//!
//! One connection needs no lock: MariaDB binds `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT` to the binlog, and the status variables
//! `Binlog_snapshot_file`/`Binlog_snapshot_position` name the point of the
//! binlog whose committed transactions the snapshot sees.
//!
//! Several connections start their snapshots inside `FLUSH TABLES WITH READ
//! LOCK`: no transaction commits while the lock is held, so every snapshot sees
//! the same data and reports the same P. The lock is held only while the
//! snapshots start (about a millisecond, released after 0.5 s at most), and
//! taking it is given up after `lock_wait_timeout` (2 s) rather than queue
//! writers behind a long query; it
//! needs the RELOAD privilege.
//!
//! Why not without the lock: starting the snapshots at once and restarting
//! those behind until all report one coordinate was tried, and under a steady
//! write load snapshots reporting the *same* coordinate saw different rows
//! (one commit apart) in about one run in ten on MariaDB 10.11
//! (under the write load regression-test/snapshot.rs applies). Equal
//! coordinates are therefore not taken as proof of equal data.

use crate::db::{self, ServerAddr};
use crate::position::{BinlogCoord, MariaGtidPos};
use futures_util::future::try_join_all;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::time::{Duration, Instant};
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("source {0}")]
    Connect(#[from] db::ConnectError),
    #[error("source query failed while starting snapshots: {0}")]
    Query(#[from] mysql_async::Error),
    #[error("source reports no binlog snapshot position; is log_bin on?")]
    NoBinlog,
    #[error("{count} parallel snapshots need the RELOAD privilege (for a lock held about a millisecond while they start); grant RELOAD or copy with one connection")]
    NeedsReload { count: usize },
    #[error("snapshots did not start within {0:?} under the global read lock; lock released")]
    SlowStart(Duration),
    #[error("snapshots started under the global read lock report different binlog positions ({first} and {other}); this source does not keep commits still under that lock")]
    Inconsistent {
        first: BinlogCoord,
        other: BinlogCoord,
    },
}

/// `count` open snapshot transactions, all as of `coord`.
pub struct SnapshotSet {
    pub conns: Vec<Conn>,
    pub coord: BinlogCoord,
    /// The GTID position at `coord`.
    pub gtid: MariaGtidPos,
    /// Whether the brief global read lock was needed, and for how long.
    pub lock_held: Option<Duration>,
}

/// Session settings every snapshot connection reads with: bytes as stored
/// (no charset conversion) and timestamps in UTC.
/// The longest the global read lock is held while snapshots start.
const MAX_LOCK_HOLD: Duration = Duration::from_millis(500);

const SESSION_SETUP: &str = "SET NAMES binary, time_zone = '+00:00'";

pub async fn open(
    addr: &ServerAddr<'_>,
    count: usize,
    timeout: Duration,
) -> Result<SnapshotSet, SnapshotError> {
    let count = count.max(1);
    let mut conns = try_join_all((0..count).map(|_| db::connect(addr, None, timeout))).await?;
    for conn in conns.iter_mut() {
        conn.query_drop(SESSION_SETUP).await?;
    }

    if count == 1 {
        let coord = start(&mut conns[0]).await?;
        return finish(conns, coord, None).await;
    }
    if !has_reload(&mut conns[0]).await? {
        return Err(SnapshotError::NeedsReload { count });
    }
    let mut control = db::connect(addr, None, timeout).await?;
    control
        .query_drop("SET SESSION lock_wait_timeout = 2")
        .await?;
    control.query_drop("FLUSH TABLES WITH READ LOCK").await?;
    let locked = Instant::now();
    // Never hold the lock long: if the snapshots do not start promptly,
    // give it up and report a (transient) error.
    let started =
        tokio::time::timeout(MAX_LOCK_HOLD, try_join_all(conns.iter_mut().map(start))).await;
    control.query_drop("UNLOCK TABLES").await?;
    let started = started.map_err(|_| SnapshotError::SlowStart(MAX_LOCK_HOLD))?;
    let held = locked.elapsed();
    let _ = control.disconnect().await;
    let mut coords = started?.into_iter();
    let coord = coords.next().ok_or(SnapshotError::NoBinlog)?;
    // Nothing commits under the global read lock, so they all agree; check
    // rather than assume, since the copy's correctness rests on it.
    if let Some(other) = coords.find(|c| *c != coord) {
        return Err(SnapshotError::Inconsistent {
            first: coord,
            other,
        });
    }
    info!(held_ms = held.as_millis() as u64, count, %coord, "snapshots started under a brief global read lock");
    finish(conns, coord, Some(held)).await
}

async fn start(conn: &mut Conn) -> Result<BinlogCoord, SnapshotError> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await?;
    let rows: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let value = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    match (
        value("Binlog_snapshot_file"),
        value("Binlog_snapshot_position"),
    ) {
        (Some(file), Some(pos)) if !file.is_empty() => Ok(BinlogCoord {
            file,
            pos: pos.parse().map_err(|_| SnapshotError::NoBinlog)?,
        }),
        _ => Err(SnapshotError::NoBinlog),
    }
}

async fn has_reload(conn: &mut Conn) -> Result<bool, SnapshotError> {
    let found: Option<String> = conn
        .query_first(format!(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES \
             WHERE PRIVILEGE_TYPE = 'RELOAD' AND GRANTEE = {}",
            db::GRANTEE
        ))
        .await?;
    Ok(found.is_some())
}

async fn finish(
    mut conns: Vec<Conn>,
    coord: BinlogCoord,
    lock_held: Option<Duration>,
) -> Result<SnapshotSet, SnapshotError> {
    let gtid: Option<String> = conns[0]
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&coord.file, coord.pos))
        .await?;
    let gtid = MariaGtidPos::parse(&gtid.unwrap_or_default())
        .map_err(|e| SnapshotError::Query(mysql_async::Error::Other(e.into())))?;
    Ok(SnapshotSet {
        conns,
        coord,
        gtid,
        lock_held,
    })
}
