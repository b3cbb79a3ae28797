//! Source positions: where in a source's binlog a job stands, and the integer
//! commit seq the API shows for it.
//!
//! A position is a GTID position where the source has GTIDs, and the binlog
//! coordinate `file:pos` (always known, but only meaningful on one server):
//!
//! - MariaDB: one GTID per replication domain, `domain-server-seq`, comma
//!   separated (`0-1-100,2-5-7`): the last transaction of each domain. A GTID
//!   is *contained* in the position when its domain's seq is not greater.
//! - MySQL: a GTID set, `uuid:1-100:105,uuid2:1-3`: every transaction ever
//!   applied, as intervals of GNOs per source UUID.
//!
//! **Commit seq.** The sum over the GTID streams of how far each has got:
//! MariaDB, the sum of each domain's `seq_no`; MySQL, the number of GNOs in
//! the set. With one stream (one domain; one UUID whose GNOs have no gaps) it
//! is exactly the GTID's sequence number. It never decreases while the source
//! commits, since each stream only moves forward. Without GTIDs it is the
//! binlog coordinate `file index × 2^32 + offset`, monotonic on one server.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {text:?}: {reason}")]
pub struct ParseError {
    what: &'static str,
    text: String,
    reason: String,
}

fn parse_error(what: &'static str, text: &str, reason: impl Into<String>) -> ParseError {
    ParseError {
        what,
        text: text.to_string(),
        reason: reason.into(),
    }
}

/// One MariaDB GTID, `domain-server-seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MariaGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl MariaGtid {
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let parts: Vec<&str> = text.trim().split('-').collect();
        let [domain, server, seq] = parts.as_slice() else {
            return Err(parse_error(
                "MariaDB GTID",
                text,
                "expected domain-server-seq",
            ));
        };
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|e| parse_error("MariaDB GTID", text, e.to_string()))
        };
        let small = |v: u64| {
            u32::try_from(v)
                .map_err(|_| parse_error("MariaDB GTID", text, "domain or server id above 2^32"))
        };
        Ok(MariaGtid {
            domain: small(num(domain)?)?,
            server: small(num(server)?)?,
            seq: num(seq)?,
        })
    }
}

impl fmt::Display for MariaGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// A MariaDB GTID position: the last GTID of each domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MariaGtidPos(BTreeMap<u32, MariaGtid>);

impl MariaGtidPos {
    /// Parses `@@gtid_binlog_pos`-style text; empty text is the empty position.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut pos = MariaGtidPos::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let gtid = MariaGtid::parse(part)?;
            if pos.0.insert(gtid.domain, gtid).is_some() {
                return Err(parse_error(
                    "MariaDB GTID position",
                    text,
                    format!("domain {} appears twice", gtid.domain),
                ));
            }
        }
        Ok(pos)
    }

    /// Records that `gtid` has been applied.
    pub fn advance(&mut self, gtid: MariaGtid) {
        self.0.insert(gtid.domain, gtid);
    }

    /// Whether `gtid` is at or before this position in its domain.
    pub fn contains(&self, gtid: &MariaGtid) -> bool {
        self.0.get(&gtid.domain).is_some_and(|g| g.seq >= gtid.seq)
    }

    pub fn commit_seq(&self) -> u64 {
        self.0
            .values()
            .fold(0u64, |sum, g| sum.saturating_add(g.seq))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The last GTID of each domain.
    pub fn iter(&self) -> impl Iterator<Item = &MariaGtid> {
        self.0.values()
    }
}

impl fmt::Display for MariaGtidPos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.values().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// A MySQL GTID set: per source UUID, sorted disjoint inclusive GNO intervals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MysqlGtidSet(BTreeMap<String, Vec<(u64, u64)>>);

impl MysqlGtidSet {
    /// Parses `@@gtid_executed`-style text (new lines allowed after commas).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut set = MysqlGtidSet::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut fields = part.split(':');
            let uuid = fields
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            let valid_uuid = uuid.len() == 36
                && uuid.chars().enumerate().all(|(i, c)| {
                    if [8, 13, 18, 23].contains(&i) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                });
            if !valid_uuid {
                return Err(parse_error(
                    "MySQL GTID set",
                    text,
                    format!("{uuid:?} is not a UUID"),
                ));
            }
            let mut any = false;
            for interval in fields {
                any = true;
                let (start, end) = match interval.split_once('-') {
                    Some((a, b)) => (a, b),
                    None => (interval, interval),
                };
                let num = |s: &str| {
                    s.trim()
                        .parse::<u64>()
                        .map_err(|e| parse_error("MySQL GTID set", text, e.to_string()))
                };
                let (start, end) = (num(start)?, num(end)?);
                if start == 0 || end < start {
                    return Err(parse_error(
                        "MySQL GTID set",
                        text,
                        format!("bad interval {interval}"),
                    ));
                }
                set.insert_interval(&uuid, start, end);
            }
            if !any {
                return Err(parse_error(
                    "MySQL GTID set",
                    text,
                    format!("{uuid} has no interval"),
                ));
            }
        }
        Ok(set)
    }

    fn insert_interval(&mut self, uuid: &str, start: u64, end: u64) {
        let intervals = self.0.entry(uuid.to_string()).or_default();
        intervals.push((start, end));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(s, e) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *intervals = merged;
    }

    /// Records that transaction `uuid:gno` has been applied.
    pub fn add(&mut self, uuid: &str, gno: u64) {
        self.insert_interval(&uuid.to_ascii_lowercase(), gno, gno);
    }

    pub fn contains(&self, uuid: &str, gno: u64) -> bool {
        self.0
            .get(&uuid.to_ascii_lowercase())
            .is_some_and(|iv| iv.iter().any(|&(s, e)| s <= gno && gno <= e))
    }

    pub fn commit_seq(&self) -> u64 {
        self.0
            .values()
            .flatten()
            .fold(0u64, |sum, (s, e)| sum.saturating_add(e - s + 1))
    }
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(uuid, intervals)| {
                let iv: Vec<String> = intervals
                    .iter()
                    .map(|&(s, e)| {
                        if s == e {
                            s.to_string()
                        } else {
                            format!("{s}-{e}")
                        }
                    })
                    .collect();
                format!("{uuid}:{}", iv.join(":"))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A binlog coordinate: file name and byte offset in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinlogCoord {
    pub file: String,
    pub pos: u64,
}

impl BinlogCoord {
    /// `binlog.000042:1234`.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let (file, pos) = text
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| parse_error("binlog coordinate", text, "expected file:pos"))?;
        let pos = pos.parse().map_err(|e: std::num::ParseIntError| {
            parse_error("binlog coordinate", text, e.to_string())
        })?;
        if file.is_empty() {
            return Err(parse_error("binlog coordinate", text, "empty file name"));
        }
        Ok(BinlogCoord {
            file: file.to_string(),
            pos,
        })
    }

    /// The numeric suffix of the file name (`binlog.000042` → 42).
    pub fn file_index(&self) -> Option<u64> {
        self.file.rsplit_once('.').and_then(|(_, n)| n.parse().ok())
    }

    /// `file index × 2^32 + offset`: monotonic along one server's binlog.
    pub fn commit_seq(&self) -> Option<u64> {
        let index = self.file_index()?;
        Some(
            index
                .saturating_mul(1 << 32)
                .saturating_add(self.pos & 0xffff_ffff),
        )
    }
}

impl fmt::Display for BinlogCoord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maria_positions() {
        let cases = [
            ("", "", 0),
            ("0-1-100", "0-1-100", 100),
            (" 2-5-7 , 0-1-100", "0-1-100,2-5-7", 107),
        ];
        for (text, shown, seq) in cases {
            let pos = MariaGtidPos::parse(text).unwrap();
            assert_eq!(pos.to_string(), shown, "{text}");
            assert_eq!(pos.commit_seq(), seq, "{text}");
        }
        for bad in ["0-1", "0-1-x", "a-b-c", "0-1-5,0-2-6", "4294967296-1-1"] {
            assert!(MariaGtidPos::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn maria_contains_and_advance() {
        let mut pos = MariaGtidPos::parse("0-1-100,2-5-7").unwrap();
        let g = |t: &str| MariaGtid::parse(t).unwrap();
        assert!(pos.contains(&g("0-1-100")));
        assert!(pos.contains(&g("0-9-50")), "the server id does not matter");
        assert!(!pos.contains(&g("0-1-101")));
        assert!(!pos.contains(&g("1-1-1")), "unknown domain");
        pos.advance(g("0-2-101"));
        pos.advance(g("1-1-1"));
        assert_eq!(pos.to_string(), "0-2-101,1-1-1,2-5-7");
        assert_eq!(pos.commit_seq(), 109);
    }

    #[test]
    fn mysql_sets() {
        let u1 = "3E11FA47-71CA-11E1-9E33-C80AA9429562";
        let u2 = "4e11fa47-71ca-11e1-9e33-c80aa9429562";
        let set = MysqlGtidSet::parse(&format!("{u1}:1-5:7-9,\n{u2}:3")).unwrap();
        assert_eq!(
            set.to_string(),
            format!("{}:1-5:7-9,{u2}:3", u1.to_ascii_lowercase())
        );
        assert_eq!(set.commit_seq(), 9);
        assert!(set.contains(u1, 5) && set.contains(u1, 7) && !set.contains(u1, 6));
        let mut set = set;
        set.add(u1, 6);
        assert_eq!(
            set.to_string(),
            format!("{}:1-9,{u2}:3", u1.to_ascii_lowercase())
        );
        for bad in [
            "x:1-2",
            u1,
            &format!("{u1}:0-2"),
            &format!("{u1}:5-2"),
            &format!("{u1}:a"),
        ] {
            assert!(MysqlGtidSet::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(MysqlGtidSet::parse("").unwrap().commit_seq(), 0);
    }

    #[test]
    fn binlog_coordinates() {
        let c = BinlogCoord::parse("binlog.000042:1234").unwrap();
        assert_eq!(c.to_string(), "binlog.000042:1234");
        assert_eq!(c.file_index(), Some(42));
        assert_eq!(c.commit_seq(), Some((42 << 32) + 1234));
        let later = BinlogCoord::parse("binlog.000043:4").unwrap();
        assert!(later.commit_seq() > c.commit_seq());
        for bad in ["binlog.000042", ":5", "f:x"] {
            assert!(BinlogCoord::parse(bad).is_err(), "{bad}");
        }
    }
}
