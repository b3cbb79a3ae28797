//! Source positions: where in a source's binlog a job stands, and the integer
//! commit seq the API shows for it.
//!
//! A position is a GTID position where the source has GTIDs, and the binlog
//! coordinate `file:pos` (always known, but only meaningful on one server):
//!
//! - MariaDB: one GTID per replication domain, `domain-server-seq`, comma
//!   separated (`0-1-100,2-5-7`): the last transaction of each domain. A GTID
//!   is *contained* in the position when its domain's seq is not greater.
//!
//! **Commit seq.** The sum over the GTID streams of how far each has got:
//! the sum of each domain's `seq_no`. With one domain it is exactly the
//! GTID's sequence number. It never decreases while the source
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

/// A binlog coordinate: file name and byte offset in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

/// A position in a source's history, the one shape every module uses: the
/// GTID position (empty where the source logs no GTIDs) and the binlog
/// coordinate just after the last transaction it holds. Stored and shown
/// as `{"gtid", "binlog_file", "binlog_pos"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct Position {
    pub gtid: MariaGtidPos,
    pub coord: BinlogCoord,
}

/// The stored and shown form of a [`Position`].
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(default)]
    gtid: String,
    #[serde(default)]
    binlog_file: String,
    #[serde(default)]
    binlog_pos: u64,
}

impl TryFrom<Stored> for Position {
    type Error = ParseError;

    fn try_from(s: Stored) -> Result<Self, ParseError> {
        Position::new(&s.gtid, &s.binlog_file, s.binlog_pos)
    }
}

impl From<Position> for Stored {
    fn from(p: Position) -> Stored {
        Stored {
            gtid: p.gtid.to_string(),
            binlog_file: p.coord.file,
            binlog_pos: p.coord.pos,
        }
    }
}

impl Position {
    /// From a GTID position's text (empty: none) and a coordinate.
    pub fn new(gtid: &str, file: &str, pos: u64) -> Result<Self, ParseError> {
        Ok(Position {
            gtid: MariaGtidPos::parse(gtid)?,
            coord: BinlogCoord {
                file: file.to_string(),
                pos,
            },
        })
    }

    /// Whether the transaction opened at `at` with `gtid` is in this
    /// position: by GTID where both have one, else by coordinate.
    pub fn holds(&self, gtid: Option<MariaGtid>, at: &BinlogCoord) -> bool {
        match gtid {
            Some(g) if !self.gtid.is_empty() => self.gtid.contains(&g),
            _ => at.commit_seq() <= self.coord.commit_seq(),
        }
    }

    /// Whether everything up to `other` is in this position.
    pub fn reaches(&self, other: &Position) -> bool {
        if !self.gtid.is_empty() && !other.gtid.is_empty() {
            return other.gtid.iter().all(|g| self.gtid.contains(g));
        }
        other.coord.commit_seq() <= self.coord.commit_seq()
    }

    /// The commit seq the API shows (see the module doc).
    pub fn commit_seq(&self) -> Option<u64> {
        if self.gtid.is_empty() {
            self.coord.commit_seq()
        } else {
            Some(self.gtid.commit_seq())
        }
    }
}

/// The GTID position where there is one, else `file:pos`.
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.gtid.is_empty() {
            self.coord.fmt(f)
        } else {
            self.gtid.fmt(f)
        }
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

    fn at(gtid: &str, file: &str, pos: u64) -> Position {
        Position::new(gtid, file, pos).unwrap()
    }

    #[test]
    fn positions_hold_transactions() {
        let p = at("0-1-10", "b.000002", 500);
        let g = |seq| {
            Some(MariaGtid {
                domain: 0,
                server: 1,
                seq,
            })
        };
        let c = |file: &str, pos| BinlogCoord {
            file: file.into(),
            pos,
        };
        assert!(p.holds(g(10), &c("b.000002", 400)));
        assert!(!p.holds(g(11), &c("b.000002", 600)));
        // Without GTIDs, by coordinate.
        let n = at("", "b.000002", 500);
        assert!(n.holds(None, &c("b.000001", 9000)));
        assert!(n.holds(None, &c("b.000002", 500)));
        assert!(!n.holds(None, &c("b.000002", 501)));
        assert!(p.reaches(&at("0-1-9", "b.000001", 4)));
        assert!(!p.reaches(&at("0-1-11", "b.000003", 4)));
        assert_eq!(p.to_string(), "0-1-10");
        assert_eq!(n.to_string(), "b.000002:500");
        assert_eq!(p.commit_seq(), Some(10));
    }

    #[test]
    fn positions_keep_their_stored_shape() {
        let p = at("0-1-10", "b.000002", 500);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"gtid": "0-1-10", "binlog_file": "b.000002", "binlog_pos": 500})
        );
        assert_eq!(serde_json::from_value::<Position>(json).unwrap(), p);
        assert!(serde_json::from_str::<Position>(r#"{"gtid":"x"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Position>("{}").unwrap(),
            Position::default()
        );
    }
}
