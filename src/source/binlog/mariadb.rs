//! The MariaDB binlog events `mysql_common` does not decode (types 160–163);
//! they reach us as raw event bodies (header and checksum already removed).
//!
//! Layouts, from MariaDB's `log_event.h`:
//! - `GTID_EVENT` (162): seq_no u64, domain_id u32, flags u8, then (only with
//!   `FL_GROUP_COMMIT_ID`) commit_id u64, and XA data we do not need. The
//!   server id is the event header's. `FL_STANDALONE` marks an event group
//!   with no terminating XID/COMMIT: a DDL statement is the whole group.
//! - `GTID_LIST_EVENT` (163): count u32 (low 28 bits), then count ×
//!   (domain u32, server u32, seq u64): the binlog's state where it starts.
//! - `BINLOG_CHECKPOINT_EVENT` (161): name length u32, then the file name.
//! - `ANNOTATE_ROWS_EVENT` (160): the text of the statement whose row events
//!   follow.

use crate::position::MariaGtid;

pub const ANNOTATE_ROWS: u8 = 160;
pub const BINLOG_CHECKPOINT: u8 = 161;
pub const GTID: u8 = 162;
pub const GTID_LIST: u8 = 163;
pub const START_ENCRYPTION: u8 = 164;
pub const XA_PREPARE: u8 = 38;

/// The GTID group's flags we act on or must step over.
const FL_STANDALONE: u8 = 1;
const FL_GROUP_COMMIT_ID: u8 = 2;
const FL_PREPARED_XA: u8 = 64;
const FL_COMPLETED_XA: u8 = 128;
/// Extra flags (the byte after the flags' data): the two-phase ALTER of
/// `binlog_alter_two_phase` logs its statement twice, at its start and at
/// its commit (or rollback).
const FL_START_ALTER: u8 = 2;
const FL_COMMIT_ALTER: u8 = 4;
const FL_ROLLBACK_ALTER: u8 = 8;

/// Which part of a two-phase ALTER a group is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlterPhase {
    Start,
    Commit,
    Rollback,
}

/// A MariaDB GTID event: the start of an event group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GtidEvent {
    pub gtid: MariaGtid,
    /// No XID or COMMIT ends this group: its one statement is the group.
    pub standalone: bool,
    /// Part of a two-phase ALTER.
    pub alter: Option<AlterPhase>,
    /// The group is an XA transaction's prepared part (`XA PREPARE`), or
    /// its `XA COMMIT`/`XA ROLLBACK`, with the transaction's XID.
    pub xa: Option<Xa>,
}

/// An XA transaction's part, and its XID (`format:gtrid:bqual`, the ids in
/// hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xa {
    pub prepared: bool,
    pub xid: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed MariaDB {event} event ({len} bytes): {what}")]
pub struct Malformed {
    event: &'static str,
    len: usize,
    what: &'static str,
}

fn malformed(event: &'static str, body: &[u8], what: &'static str) -> Malformed {
    Malformed {
        event,
        len: body.len(),
        what,
    }
}

fn u32_at(body: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(body: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?))
}

pub fn gtid(body: &[u8], server_id: u32) -> Result<GtidEvent, Malformed> {
    let short = || malformed("GTID", body, "shorter than its fixed part");
    let seq = u64_at(body, 0).ok_or_else(short)?;
    let domain = u32_at(body, 8).ok_or_else(short)?;
    let flags = *body.get(12).ok_or_else(short)?;
    // After the flags: commit id, XA ids, then the extra flags if any.
    let mut at = 13;
    if flags & FL_GROUP_COMMIT_ID != 0 {
        at += 8;
    }
    let mut xa = None;
    if flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
        let short = || malformed("GTID", body, "shorter than its XA id");
        let format = u32_at(body, at).ok_or_else(short)?;
        let lens = body.get(at + 4..at + 6).ok_or_else(short)?;
        let (g, q) = (usize::from(lens[0]), usize::from(lens[1]));
        let ids = body.get(at + 6..at + 6 + g + q).ok_or_else(short)?;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        xa = Some(Xa {
            prepared: flags & FL_PREPARED_XA != 0,
            xid: format!("{format}:{}:{}", hex(&ids[..g]), hex(&ids[g..])),
        });
        at += 6 + g + q;
    }
    let extra = body.get(at).copied().unwrap_or(0);
    let alter = if extra & FL_START_ALTER != 0 {
        Some(AlterPhase::Start)
    } else if extra & FL_COMMIT_ALTER != 0 {
        Some(AlterPhase::Commit)
    } else if extra & FL_ROLLBACK_ALTER != 0 {
        Some(AlterPhase::Rollback)
    } else {
        None
    };
    Ok(GtidEvent {
        gtid: MariaGtid {
            domain,
            server: server_id,
            seq,
        },
        standalone: flags & FL_STANDALONE != 0,
        alter,
        xa,
    })
}

pub fn gtid_list(body: &[u8]) -> Result<Vec<MariaGtid>, Malformed> {
    let count = u32_at(body, 0).ok_or_else(|| malformed("GTID_LIST", body, "no count"))?;
    let count = (count & 0x0fff_ffff) as usize;
    if body.len() < 4 + count * 16 {
        return Err(malformed("GTID_LIST", body, "fewer GTIDs than its count"));
    }
    Ok((0..count)
        .map(|i| {
            let at = 4 + i * 16;
            MariaGtid {
                domain: u32_at(body, at).unwrap_or_default(),
                server: u32_at(body, at + 4).unwrap_or_default(),
                seq: u64_at(body, at + 8).unwrap_or_default(),
            }
        })
        .collect())
}

pub fn binlog_checkpoint(body: &[u8]) -> Result<String, Malformed> {
    let len = u32_at(body, 0).ok_or_else(|| malformed("BINLOG_CHECKPOINT", body, "no length"))?;
    let name = body
        .get(4..4 + len as usize)
        .ok_or_else(|| malformed("BINLOG_CHECKPOINT", body, "name longer than the event"))?;
    Ok(String::from_utf8_lossy(name).into_owned())
}

pub fn annotate_rows(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// A name for an event type the reader does not handle, for the message
/// that stops the job.
pub fn event_name(event_type: u8) -> String {
    let name = match event_type {
        START_ENCRYPTION => "START_ENCRYPTION (encrypted binlog)",
        165 => "QUERY_COMPRESSED (log_bin_compress)",
        166 => "WRITE_ROWS_COMPRESSED_V1 (log_bin_compress)",
        167 => "UPDATE_ROWS_COMPRESSED_V1 (log_bin_compress)",
        168 => "DELETE_ROWS_COMPRESSED_V1 (log_bin_compress)",
        169 => "WRITE_ROWS_COMPRESSED (log_bin_compress)",
        170 => "UPDATE_ROWS_COMPRESSED (log_bin_compress)",
        171 => "DELETE_ROWS_COMPRESSED (log_bin_compress)",
        _ => "unknown",
    };
    format!("{name} event (type {event_type})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_event() {
        let mut body = Vec::new();
        body.extend_from_slice(&42u64.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(FL_STANDALONE | 32); // standalone, DDL
        let e = gtid(&body, 7).unwrap();
        assert_eq!(e.gtid.to_string(), "3-7-42");
        assert!(e.standalone);
        body[12] = 2 | 4; // group commit id, transactional
        body.extend_from_slice(&9u64.to_le_bytes());
        let e = gtid(&body, 7).unwrap();
        assert!(!e.standalone);
        assert_eq!((e.alter, e.xa), (None, None));
        assert!(gtid(&body[..10], 7).is_err());
        // A two-phase ALTER's start, then its commit (extra flags after
        // the commit id; the commit names the start's seq).
        body.push(FL_START_ALTER);
        assert_eq!(gtid(&body, 7).unwrap().alter, Some(AlterPhase::Start));
        *body.last_mut().unwrap() = FL_COMMIT_ALTER;
        body.extend_from_slice(&41u64.to_le_bytes());
        assert_eq!(gtid(&body, 7).unwrap().alter, Some(AlterPhase::Commit));
        // An XA group: format id, the ids' lengths and bytes come first.
        let mut xa = Vec::new();
        xa.extend_from_slice(&5u64.to_le_bytes());
        xa.extend_from_slice(&0u32.to_le_bytes());
        xa.push(FL_PREPARED_XA);
        xa.extend_from_slice(&1u32.to_le_bytes());
        xa.extend_from_slice(&[2, 1]);
        xa.extend_from_slice(b"x1b");
        let e = gtid(&xa, 1).unwrap();
        assert_eq!(
            e.xa,
            Some(Xa {
                prepared: true,
                xid: "1:7831:62".into()
            })
        );
        assert!(e.alter.is_none());
        xa.push(FL_ROLLBACK_ALTER);
        assert_eq!(gtid(&xa, 1).unwrap().alter, Some(AlterPhase::Rollback));
        assert!(gtid(&xa[..15], 1).is_err());
    }

    #[test]
    fn gtid_list_event() {
        let mut body = Vec::new();
        body.extend_from_slice(&2u32.to_le_bytes());
        for (d, s, q) in [(0u32, 1u32, 100u64), (2, 5, 7)] {
            body.extend_from_slice(&d.to_le_bytes());
            body.extend_from_slice(&s.to_le_bytes());
            body.extend_from_slice(&q.to_le_bytes());
        }
        let list = gtid_list(&body).unwrap();
        let text: Vec<String> = list.iter().map(|g| g.to_string()).collect();
        assert_eq!(text, ["0-1-100", "2-5-7"]);
        assert!(gtid_list(&body[..20]).is_err());
        assert_eq!(gtid_list(&0u32.to_le_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn checkpoint_and_annotate() {
        let mut body = 20u32.to_le_bytes().to_vec();
        body.extend_from_slice(b"mysql-bin.000003");
        assert!(binlog_checkpoint(&body).is_err());
        let mut body = 16u32.to_le_bytes().to_vec();
        body.extend_from_slice(b"mysql-bin.000003");
        assert_eq!(binlog_checkpoint(&body).unwrap(), "mysql-bin.000003");
        assert_eq!(
            annotate_rows(b"insert into t values (1)"),
            "insert into t values (1)"
        );
        assert!(event_name(169).contains("log_bin_compress"));
    }
}
