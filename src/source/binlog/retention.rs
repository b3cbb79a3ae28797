//! What binlog the source still has: whether a job's position is still on
//! it, and how much binlog lies before that position (the headroom before
//! a purge reaches it).

use crate::db::{self, ServerAddr};
use crate::position::{BinlogCoord, MariaGtidPos};
use futures_util::StreamExt;
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn};
use std::time::Duration;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Binlog files, oldest first, with their sizes in bytes.
    pub files: Vec<(String, u64)>,
    /// The last GTID of each domain written before the oldest file (the
    /// file's Gtid_list event).
    pub before: MariaGtidPos,
}

/// Reads the source's binlog files and what precedes the oldest one.
pub async fn read(conn: &mut Conn) -> Result<Retention, mysql_async::Error> {
    let files: Vec<(String, u64)> = conn
        .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
            (
                row.get::<String, _>(0).unwrap_or_default(),
                row.get::<u64, _>(1).unwrap_or_default(),
            )
        })
        .await?;
    let mut before = MariaGtidPos::default();
    if let Some((oldest, _)) = files.first() {
        let events: Vec<(String, String)> = conn
            .query_map(
                format!(
                    "SHOW BINLOG EVENTS IN '{}' LIMIT 4",
                    oldest.replace(['\'', '\\'], "")
                ),
                |row: mysql_async::Row| {
                    (
                        row.get::<String, _>(2).unwrap_or_default(),
                        row.get::<String, _>(5).unwrap_or_default(),
                    )
                },
            )
            .await?;
        if let Some((_, info)) = events.iter().find(|(kind, _)| kind == "Gtid_list") {
            before = parse_gtid_list(info);
        }
    }
    Ok(Retention { files, before })
}

/// When binlog `file` was started (unix seconds): the time stamp of its
/// first event, read over a short non-blocking replica connection as
/// `server_id` (no SQL statement shows it). `None` when it cannot be read.
pub async fn started(
    addr: &ServerAddr<'_>,
    file: &str,
    server_id: u32,
    timeout: Duration,
) -> Option<i64> {
    let mut conn = db::connect(addr, None, timeout).await.ok()?;
    conn.query_drop(
        "SET @master_binlog_checksum = @@global.binlog_checksum, @mariadb_slave_capability = 4",
    )
    .await
    .ok()?;
    let request = BinlogStreamRequest::new(server_id)
        .with_filename(file.as_bytes())
        .with_pos(4)
        .with_non_blocking();
    let mut stream = conn.get_binlog_stream(request).await.ok()?;
    let read = async {
        // The first is a rotate event the server makes up (time 0); the
        // file's own format description event follows.
        for _ in 0..3 {
            let event = stream.next().await?.ok()?;
            let at = event.header().timestamp();
            if at != 0 {
                return Some(i64::from(at));
            }
        }
        None
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// `[0-1-100,1-2-5]` as SHOW BINLOG EVENTS shows a Gtid_list event.
fn parse_gtid_list(info: &str) -> MariaGtidPos {
    MariaGtidPos::parse(info.trim().trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or_default()
}

impl Retention {
    /// Whether every transaction after the position (`gtid` where the job
    /// has one, else `coord`) is still in the source's binlog.
    pub fn has(&self, gtid: &MariaGtidPos, coord: &BinlogCoord) -> bool {
        if !gtid.is_empty() {
            return self.before.iter().all(|g| gtid.contains(g));
        }
        let Some((oldest, _)) = self.files.first() else {
            return false;
        };
        let oldest = BinlogCoord {
            file: oldest.clone(),
            pos: 0,
        };
        match (coord.file_index(), oldest.file_index()) {
            (Some(at), Some(first)) => at >= first,
            _ => false,
        }
    }

    /// Bytes of binlog before `coord` on the source: how much it can purge
    /// before it purges the job's position. `None` when the file is gone.
    pub fn headroom_bytes(&self, coord: &BinlogCoord) -> Option<u64> {
        let mut sum = 0u64;
        for (file, size) in &self.files {
            if *file == coord.file {
                return Some(sum + coord.pos);
            }
            sum += size;
        }
        None
    }

    pub fn oldest(&self) -> &str {
        self.files.first().map_or("", |(f, _)| f.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coord(file: &str, pos: u64) -> BinlogCoord {
        BinlogCoord {
            file: file.into(),
            pos,
        }
    }

    #[test]
    fn positions_before_the_oldest_binlog_are_gone() {
        let r = Retention {
            files: vec![("b.000003".into(), 1000), ("b.000004".into(), 500)],
            before: parse_gtid_list("[0-1-100,1-2-5]"),
        };
        let gtid = |t: &str| MariaGtidPos::parse(t).unwrap();
        assert!(r.has(&gtid("0-1-100,1-2-5"), &coord("x", 0)));
        assert!(r.has(&gtid("0-1-150,1-2-9"), &coord("x", 0)));
        assert!(!r.has(&gtid("0-1-99,1-2-5"), &coord("x", 0)));
        // A domain the job never saw is missing too.
        assert!(!r.has(&gtid("0-1-150"), &coord("x", 0)));
        // Without GTIDs: by file.
        let none = MariaGtidPos::default();
        assert!(r.has(&none, &coord("b.000003", 4)));
        assert!(!r.has(&none, &coord("b.000002", 900)));
        assert_eq!(r.headroom_bytes(&coord("b.000004", 200)), Some(1200));
        assert_eq!(r.headroom_bytes(&coord("b.000002", 200)), None);
        assert!(Retention::default().has(&gtid("0-1-1"), &coord("x", 0)));
        assert_eq!(parse_gtid_list("[]"), MariaGtidPos::default());
    }
}
