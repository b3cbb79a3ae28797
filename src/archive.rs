//! The binlog archive's format, below the cluster manager (which writes
//! it) and the node agent (which replays it).
//!
//! A *segment* is a valid binlog file (`\xfebin`, the primary's format
//! description event, then whole transactions), so `mariadb-binlog` reads
//! it as it reads any binlog. It is stored under
//! `binlogs/cluster_C/shard_S/DOMAIN-SERVERID-SEQ.binlog`, keyed by the
//! GTID of its first transaction, never by the primary's file name:
//! file names restart after a failover or a `RESET MASTER`, GTIDs do not.
//! Beside it, written after it, its [`SegmentMeta`] (`.json`): the GTID
//! position before and after it, its first and last commit times, its size
//! and SHA-256. A segment without its meta does not exist. Consecutive
//! segments chain (`start` of one is `end` of the one before); where they
//! do not, binlogs were lost before they were archived: a gap, named.
//!
//! [`Filter`] turns segments back into one binlog stream holding exactly
//! the transactions after a GTID position and committed at or before a
//! time, whole.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MAGIC: &[u8; 4] = b"\xfebin";
pub const HEADER: usize = 19;

pub const QUERY: u8 = 2;
pub const ROTATE: u8 = 4;
pub const XID: u8 = 16;
pub const FORMAT_DESCRIPTION: u8 = 15;
pub const HEARTBEAT: u8 = 27;
pub const XA_PREPARE: u8 = 38;
pub const BINLOG_CHECKPOINT: u8 = 161;
pub const GTID: u8 = 162;
pub const GTID_LIST: u8 = 163;
pub const START_ENCRYPTION: u8 = 164;

/// A GTID position: the last sequence number (and its server) per domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos(pub BTreeMap<u32, (u32, u64)>);

impl Pos {
    /// Reads `0-1-5,1-2-7` (empty: nothing).
    pub fn parse(text: &str) -> Result<Pos, String> {
        let mut p = BTreeMap::new();
        for g in text.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let parts: Vec<&str> = g.split('-').collect();
            let bad = || format!("{g:?} is not a GTID (DOMAIN-SERVER-SEQ)");
            if parts.len() != 3 {
                return Err(bad());
            }
            let d: u32 = parts[0].parse().map_err(|_| bad())?;
            let s: u32 = parts[1].parse().map_err(|_| bad())?;
            let n: u64 = parts[2].parse().map_err(|_| bad())?;
            p.insert(d, (s, n));
        }
        Ok(Pos(p))
    }

    pub fn seq(&self, domain: u32) -> u64 {
        self.0.get(&domain).map_or(0, |x| x.1)
    }

    /// Whether a transaction with this GTID is already in.
    pub fn has(&self, g: &Gtid) -> bool {
        self.seq(g.domain) >= g.seq
    }

    pub fn advance(&mut self, g: &Gtid) {
        self.0.insert(g.domain, (g.server, g.seq));
    }

    /// Every domain of `other` at least as far here.
    pub fn covers(&self, other: &Pos) -> bool {
        other.0.iter().all(|(d, (_, n))| self.seq(*d) >= *n)
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(d, (s, n))| format!("{d}-{s}-{n}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// A segment's meta (its `.json`, written after it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// The segment's own key.
    pub key: String,
    pub first: Gtid,
    pub last: Gtid,
    /// The position before its first transaction and after its last.
    pub start: String,
    pub end: String,
    /// Commit times (unix seconds) of its first and last transactions.
    pub first_ts: i64,
    pub last_ts: i64,
    pub transactions: u64,
    pub bytes: u64,
    pub sha256: String,
    /// The primary it was read from (`host:port`).
    pub from: String,
    /// Sealed with the cluster's backup key ([`crate::storage::Cipher`]).
    #[serde(default)]
    pub encrypted: bool,
}

/// Where a shard's archive lives.
pub fn shard_prefix(cluster_id: &str, shard: i64) -> String {
    format!("binlogs/cluster_{cluster_id}/shard_{shard}/")
}

/// A segment's key: by its first GTID.
pub fn segment_key(cluster_id: &str, shard: i64, first: &Gtid) -> String {
    format!(
        "{}{}-{}-{:020}.binlog",
        shard_prefix(cluster_id, shard),
        first.domain,
        first.server,
        first.seq
    )
}

/// One event's header fields.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub timestamp: u32,
    pub kind: u8,
    pub server_id: u32,
    pub size: usize,
    pub flags: u16,
}

pub fn header(b: &[u8]) -> Option<Header> {
    if b.len() < HEADER {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Some(Header {
        timestamp: u32_at(0),
        kind: b[4],
        server_id: u32_at(5),
        size: u32_at(9) as usize,
        flags: u16::from_le_bytes([b[17], b[18]]),
    })
}

/// A MariaDB GTID event's GTID and flags (its body after the header).
pub fn gtid_of(server_id: u32, body: &[u8]) -> Option<(Gtid, u8)> {
    if body.len() < 13 {
        return None;
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().ok()?);
    let domain = u32::from_le_bytes(body[8..12].try_into().ok()?);
    Some((
        Gtid {
            domain,
            server: server_id,
            seq,
        },
        body[12],
    ))
}

/// GTID flag: a statement logged outside a transaction (DDL), which ends
/// with its one query event.
const FL_STANDALONE: u8 = 1;

/// Whether a query event's statement ends a transaction.
fn ends_transaction(body: &[u8]) -> bool {
    // Query event post-header: thread id (4), time (4), db len (1),
    // error (2), status vars len (2); then status vars, db, NUL, query.
    if body.len() < 13 {
        return false;
    }
    let db_len = body[8] as usize;
    let vars = u16::from_le_bytes([body[11], body[12]]) as usize;
    let start = 13 + vars + db_len + 1;
    let Some(q) = body.get(start..) else {
        return false;
    };
    let head: Vec<u8> = q.iter().take(16).map(|b| b.to_ascii_uppercase()).collect();
    head.starts_with(b"COMMIT") || head.starts_with(b"ROLLBACK") || head.starts_with(b"XA END")
}

/// Transactions whole, as events arrive (raw, checksums included).
#[derive(Default)]
pub struct Assembler {
    current: Option<(Gtid, bool, Vec<u8>)>,
}

/// One whole transaction.
pub struct Transaction {
    pub gtid: Gtid,
    /// Logged on its own (a DDL statement).
    pub standalone: bool,
    /// The commit time: its last event's.
    pub ts: u32,
    pub bytes: Vec<u8>,
}

impl Assembler {
    /// Takes one raw event; a transaction when it ends one. Events outside
    /// transactions (rotations, lists, heartbeats) are dropped.
    pub fn push(&mut self, event: &[u8]) -> Option<Transaction> {
        let h = header(event)?;
        if h.kind == GTID {
            let (gtid, flags) = gtid_of(h.server_id, &event[HEADER..])?;
            let mut bytes = Vec::with_capacity(4096);
            bytes.extend_from_slice(event);
            self.current = Some((gtid, flags & FL_STANDALONE != 0, bytes));
            return None;
        }
        let (_, standalone, bytes) = self.current.as_mut()?;
        bytes.extend_from_slice(event);
        let ends = match h.kind {
            XID | XA_PREPARE => true,
            QUERY => *standalone || ends_transaction(&event[HEADER..]),
            _ => false,
        };
        if ends {
            let (gtid, standalone, bytes) = self.current.take()?;
            return Some(Transaction {
                gtid,
                standalone,
                ts: h.timestamp,
                bytes,
            });
        }
        None
    }
}

/// Splits a binlog file's bytes into events (after the magic).
pub fn events(file: &[u8]) -> Result<Vec<&[u8]>, String> {
    if file.len() < 4 || &file[..4] != MAGIC {
        return Err("not a binlog file (no magic number)".into());
    }
    let mut out = Vec::new();
    let mut at = 4;
    while at < file.len() {
        let h = header(&file[at..]).ok_or("a cut event header")?;
        if h.size < HEADER || at + h.size > file.len() {
            return Err(format!("a cut event at offset {at}"));
        }
        out.push(&file[at..at + h.size]);
        at += h.size;
    }
    Ok(out)
}

/// Why a filter stopped taking transactions.
#[derive(Debug, Default)]
pub struct Filtered {
    pub taken: u64,
    /// The position after the last transaction taken.
    pub reached: Pos,
    /// The first transaction committed after the stop time was met.
    pub stopped: bool,
    pub last_ts: i64,
}

/// Turns segments into one binlog stream: the first segment's format
/// description event once, then every transaction after `after` and
/// committed at or before `stop` (unix seconds), whole, stopping at the
/// first one after it.
pub struct Filter {
    pub after: Pos,
    pub stop: Option<i64>,
    /// Leaves statements logged on their own (DDL) out.
    pub rows_only: bool,
    pub wrote_header: bool,
    pub result: Filtered,
}

impl Filter {
    pub fn new(after: Pos, stop: Option<i64>) -> Filter {
        Filter {
            result: Filtered {
                reached: after.clone(),
                ..Filtered::default()
            },
            after,
            stop,
            rows_only: false,
            wrote_header: false,
        }
    }

    /// Appends what `segment` holds for the replay to `out`.
    pub fn segment(&mut self, segment: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if self.result.stopped {
            return Ok(());
        }
        let mut asm = Assembler::default();
        for e in events(segment)? {
            let h = header(e).ok_or("a cut event")?;
            if h.kind == FORMAT_DESCRIPTION {
                if !self.wrote_header {
                    out.extend_from_slice(MAGIC);
                    out.extend_from_slice(e);
                    self.wrote_header = true;
                }
                continue;
            }
            let Some(t) = asm.push(e) else { continue };
            if self.after.has(&t.gtid) {
                continue;
            }
            if self.stop.is_some_and(|s| i64::from(t.ts) > s) {
                self.result.stopped = true;
                return Ok(());
            }
            if !(self.rows_only && t.standalone) {
                out.extend_from_slice(&t.bytes);
            }
            self.after.advance(&t.gtid);
            self.result.reached.advance(&t.gtid);
            self.result.taken += 1;
            self.result.last_ts = i64::from(t.ts);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u8, ts: u32, server: u32, body: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&ts.to_le_bytes());
        e.push(kind);
        e.extend_from_slice(&server.to_le_bytes());
        e.extend_from_slice(&((HEADER + body.len()) as u32).to_le_bytes());
        e.extend_from_slice(&0u32.to_le_bytes());
        e.extend_from_slice(&0u16.to_le_bytes());
        e.extend_from_slice(body);
        e
    }

    fn gtid(seq: u64, flags: u8) -> Vec<u8> {
        let mut b = seq.to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(flags);
        b
    }

    fn trx(seq: u64, ts: u32) -> Vec<u8> {
        let mut t = event(GTID, ts, 7, &gtid(seq, 0));
        t.extend(event(19, ts, 7, b"table map"));
        t.extend(event(30, ts, 7, b"rows"));
        t.extend(event(XID, ts, 7, &[0; 8]));
        t
    }

    #[test]
    fn positions() {
        let p = Pos::parse("0-1-5,2-3-9").unwrap();
        assert_eq!(p.to_string(), "0-1-5,2-3-9");
        assert_eq!(p.seq(2), 9);
        assert!(p.covers(&Pos::parse("0-9-5").unwrap()));
        assert!(!p.covers(&Pos::parse("0-9-6").unwrap()));
        assert!(Pos::parse("0-1").is_err());
        assert_eq!(Pos::parse("").unwrap(), Pos::default());
    }

    #[test]
    fn the_filter_takes_whole_transactions_up_to_the_time() {
        let mut file = MAGIC.to_vec();
        file.extend(event(FORMAT_DESCRIPTION, 100, 7, b"fde"));
        file.extend(event(GTID_LIST, 100, 7, b"list"));
        for (seq, ts) in [(1, 100), (2, 101), (3, 102), (4, 103)] {
            file.extend(trx(seq, ts));
        }
        let mut out = Vec::new();
        let mut f = Filter::new(Pos::parse("0-7-1").unwrap(), Some(102));
        f.segment(&file, &mut out).unwrap();
        assert!(f.result.stopped);
        assert_eq!(f.result.taken, 2);
        assert_eq!(f.result.reached.to_string(), "0-7-3");
        let evs = events(&out).unwrap();
        // The format description, then two transactions of four events.
        assert_eq!(evs.len(), 1 + 8);
        assert_eq!(header(evs[0]).unwrap().kind, FORMAT_DESCRIPTION);
        // A second segment after the stop adds nothing.
        let before = out.len();
        f.segment(&file, &mut out).unwrap();
        assert_eq!(out.len(), before);
    }

    #[test]
    fn a_ddl_is_a_transaction_of_its_own() {
        let mut asm = Assembler::default();
        assert!(asm.push(&event(GTID, 5, 7, &gtid(9, 1))).is_none());
        let mut q = vec![0u8; 13];
        q.extend_from_slice(b"\0CREATE TABLE t (a int)");
        let t = asm.push(&event(QUERY, 6, 7, &q)).unwrap();
        assert_eq!(t.gtid.seq, 9);
        assert_eq!(t.ts, 6);
        // BEGIN … COMMIT as query events.
        assert!(asm.push(&event(GTID, 7, 7, &gtid(10, 0))).is_none());
        let mut begin = vec![0u8; 13];
        begin.extend_from_slice(b"\0BEGIN");
        assert!(asm.push(&event(QUERY, 7, 7, &begin)).is_none());
        let mut commit = vec![0u8; 13];
        commit.extend_from_slice(b"\0COMMIT");
        assert_eq!(asm.push(&event(QUERY, 8, 7, &commit)).unwrap().ts, 8);
    }
}
