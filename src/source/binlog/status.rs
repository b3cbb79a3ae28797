//! The status variables of a query event: the session a statement ran in
//! on the source (its `sql_mode` and character sets), which decide how its
//! text reads — `"x"` is a name under `ANSI_QUOTES`, a backslash is a plain
//! character under `NO_BACKSLASH_ESCAPES` — and whose `sql_mode` the
//! destination session takes on before running it. (The character sets
//! are read but not set: the statement's text reaches the destination as
//! UTF-8, with `SET NAMES utf8mb4`.)
//!
//! Layout (MySQL's and MariaDB's `log_event.h`): a sequence of a one-byte
//! code and its value. Read up to the first code not known here (the rest
//! is skipped: its length is not known); `sql_mode` and the character sets
//! come first in every server's order.

use crate::source::ddl::Dialect;

const Q_FLAGS2: u8 = 0;
const Q_SQL_MODE: u8 = 1;
const Q_CATALOG: u8 = 2;
const Q_AUTO_INCREMENT: u8 = 3;
const Q_CHARSET: u8 = 4;
const Q_TIME_ZONE: u8 = 5;
const Q_CATALOG_NZ: u8 = 6;
const Q_LC_TIME_NAMES: u8 = 7;
const Q_CHARSET_DATABASE: u8 = 8;
const Q_TABLE_MAP_FOR_UPDATE: u8 = 9;
const Q_MASTER_DATA_WRITTEN: u8 = 10;
const Q_INVOKER: u8 = 11;
const Q_UPDATED_DB_NAMES: u8 = 12;
const Q_MICROSECONDS: u8 = 13;
const Q_EXPLICIT_DEFAULTS_FOR_TIMESTAMP: u8 = 16;
const Q_DDL_LOGGED_WITH_XID: u8 = 17;
const Q_DEFAULT_COLLATION_FOR_UTF8MB4: u8 = 18;
const Q_SQL_REQUIRE_PRIMARY_KEY: u8 = 19;
const Q_DEFAULT_TABLE_ENCRYPTION: u8 = 20;
/// MariaDB: the statement's start, microseconds of its second.
const Q_HRNOW: u8 = 128;
const Q_XID: u8 = 129;
const Q_GTID_FLAGS3: u8 = 130;

const MODE_ANSI_QUOTES: u64 = 0x0000_0004;
const MODE_NO_BACKSLASH_ESCAPES: u64 = 0x0010_0000;

/// The source session of a statement, as far as the event says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    pub sql_mode: Option<u64>,
    /// character_set_client, collation_connection, collation_server (ids).
    pub charset: Option<(u16, u16, u16)>,
    /// When the statement started on the source: unix seconds (the event
    /// header's) and microseconds (`Q_HRNOW`, when logged).
    pub started: Option<(u32, u32)>,
}

impl Session {
    /// How the statement's text reads.
    pub fn dialect(&self) -> Dialect {
        let mode = self.sql_mode.unwrap_or(0);
        Dialect {
            ansi_quotes: mode & MODE_ANSI_QUOTES != 0,
            no_backslash_escapes: mode & MODE_NO_BACKSLASH_ESCAPES != 0,
        }
    }

    /// The `SET` that gives a destination session the statement's
    /// `sql_mode` and start time (as `mariadb-binlog` writes them: what a
    /// versioned table's `ROW_START` takes, what `NOW()` returns), if the
    /// event names them.
    pub fn set_sql(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(m) = self.sql_mode {
            parts.push(format!("@@session.sql_mode={m}"));
        }
        if let Some((secs, usecs)) = self.started {
            parts.push(format!("@@session.timestamp={secs}.{usecs:06}"));
        }
        (!parts.is_empty()).then(|| format!("SET {}", parts.join(", ")))
    }

    /// With the statement's start second (its event header's timestamp).
    pub fn at(mut self, secs: u32) -> Self {
        let usecs = self.started.map_or(0, |(_, u)| u);
        self.started = Some((secs, usecs));
        self
    }
}

/// MariaDB's latin1 collations (its latin1 is Windows-1252).
const LATIN1: [u16; 8] = [5, 8, 15, 31, 47, 48, 49, 94];

/// Windows-1252's characters for 0x80–0x9F (the rest of latin1 is
/// Unicode's first 256 code points).
const CP1252_HIGH: [u16; 32] = [
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039,
    0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
    0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
];

/// Whether a collation id is of utf8mb3/utf8mb4 (or binary, or one of
/// MariaDB 10.10's ids past 255, which are Unicode ones).
fn utf8_family(id: u16) -> bool {
    matches!(id, 33 | 45 | 46 | 63 | 76 | 83 | 192..=247) || id > 255
}

/// A statement's text as UTF-8 (which the destination reads it as), as
/// its session's client character set says: ASCII as it is, UTF-8 as it
/// is, latin1 decoded; `None` for text in another character set.
pub fn statement_text(raw: &[u8], session: &Session) -> Option<String> {
    let client = session.charset.map(|c| c.0);
    if raw.is_ascii() || client.is_none_or(utf8_family) {
        return std::str::from_utf8(raw).ok().map(str::to_string);
    }
    if !client.is_some_and(|c| LATIN1.contains(&c)) {
        return None;
    }
    raw.iter()
        .map(|&b| match b {
            0x80..=0x9F => char::from_u32(u32::from(CP1252_HIGH[usize::from(b - 0x80)])),
            _ => Some(char::from(b)),
        })
        .collect()
}

/// Reads the status variables block of a query event.
pub fn read(vars: &[u8]) -> Session {
    let mut s = Session::default();
    let mut at = 0;
    let u16_at = |i: usize| -> Option<u16> {
        Some(u16::from_le_bytes(vars.get(i..i + 2)?.try_into().ok()?))
    };
    while let Some(&code) = vars.get(at) {
        at += 1;
        let len = match code {
            Q_FLAGS2 => 4,
            Q_SQL_MODE => {
                let Some(b) = vars.get(at..at + 8) else { break };
                s.sql_mode = b.try_into().ok().map(u64::from_le_bytes);
                8
            }
            Q_CATALOG => match vars.get(at) {
                Some(&n) => 1 + usize::from(n) + 1,
                None => break,
            },
            Q_AUTO_INCREMENT => 4,
            Q_CHARSET => {
                match (u16_at(at), u16_at(at + 2), u16_at(at + 4)) {
                    (Some(a), Some(b), Some(c)) => s.charset = Some((a, b, c)),
                    _ => break,
                }
                6
            }
            Q_TIME_ZONE | Q_CATALOG_NZ => match vars.get(at) {
                Some(&n) => 1 + usize::from(n),
                None => break,
            },
            Q_LC_TIME_NAMES | Q_CHARSET_DATABASE | Q_DEFAULT_COLLATION_FOR_UTF8MB4 => 2,
            Q_TABLE_MAP_FOR_UPDATE | Q_DDL_LOGGED_WITH_XID | Q_XID => 8,
            Q_MASTER_DATA_WRITTEN => 4,
            Q_EXPLICIT_DEFAULTS_FOR_TIMESTAMP
            | Q_SQL_REQUIRE_PRIMARY_KEY
            | Q_DEFAULT_TABLE_ENCRYPTION
            | Q_GTID_FLAGS3 => 1,
            Q_MICROSECONDS => 3,
            Q_HRNOW => {
                let Some(b) = vars.get(at..at + 3) else { break };
                let usecs = u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
                s.started = Some((0, usecs));
                3
            }
            Q_INVOKER => {
                // User and host, each with a length byte.
                let Some(&user) = vars.get(at) else { break };
                let Some(&host) = vars.get(at + 1 + usize::from(user)) else {
                    break;
                };
                2 + usize::from(user) + usize::from(host)
            }
            Q_UPDATED_DB_NAMES => {
                // A count, then as many NUL-terminated names (none past 253).
                let Some(&count) = vars.get(at) else { break };
                let mut len = 1;
                if count < 254 {
                    for _ in 0..count {
                        match vars
                            .get(at + len..)
                            .and_then(|r| r.iter().position(|&c| c == 0))
                        {
                            Some(n) => len += n + 1,
                            None => break,
                        }
                    }
                }
                len
            }
            _ => break,
        };
        at += len;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_and_stops_at_what_it_does_not_know() {
        let mut v = vec![Q_FLAGS2, 0, 0, 0, 0, Q_SQL_MODE];
        v.extend_from_slice(&(MODE_ANSI_QUOTES | 0x4000_0000).to_le_bytes());
        v.extend_from_slice(&[Q_CATALOG_NZ, 3, b's', b't', b'd', Q_CHARSET]);
        for id in [33u16, 45, 8] {
            v.extend_from_slice(&id.to_le_bytes());
        }
        v.extend_from_slice(&[200, 1, 2, 3]);
        let s = read(&v);
        assert_eq!(s.charset, Some((33, 45, 8)));
        assert!(s.dialect().ansi_quotes && !s.dialect().no_backslash_escapes);
        assert_eq!(
            s.set_sql().unwrap(),
            format!("SET @@session.sql_mode={}", MODE_ANSI_QUOTES | 0x4000_0000)
        );
        assert_eq!(read(&[]), Session::default());
        // Text: UTF-8 as it is; latin1 (cp1252) decoded; others refused.
        let latin1 = Session {
            charset: Some((8, 8, 8)),
            ..Session::default()
        };
        assert_eq!(
            statement_text(b"COMMENT '\xe9t\xe9 \x80'", &latin1).unwrap(),
            "COMMENT 'été €'"
        );
        // UTF-8 bytes from a latin1 session are latin1 characters.
        assert_eq!(statement_text("'é'".as_bytes(), &latin1).unwrap(), "'Ã©'");
        assert_eq!(
            statement_text("'é'".as_bytes(), &Session::default()).unwrap(),
            "'é'"
        );
        let sjis = Session {
            charset: Some((13, 13, 8)),
            ..Session::default()
        };
        assert_eq!(statement_text(b"'\x82\xa0'", &sjis), None);
        assert_eq!(Session::default().set_sql(), None);
        // Cut short: what was whole is kept.
        assert_eq!(read(&v[..10]).sql_mode, None);
        assert_eq!(read(&v[..14]).sql_mode, s.sql_mode);
        // The start time: the header's second, Q_HRNOW's microseconds.
        let mut t = vec![
            Q_INVOKER,
            4,
            b'r',
            b'o',
            b'o',
            b't',
            1,
            b'%',
            Q_UPDATED_DB_NAMES,
            2,
        ];
        t.extend_from_slice(b"a\0bc\0");
        t.extend_from_slice(&[Q_HRNOW, 0x3f, 0x42, 0x0f]);
        let s = read(&t).at(1_700_000_000);
        assert_eq!(s.started, Some((1_700_000_000, 999_999)));
        assert_eq!(
            read(&t[..8]).at(5).set_sql().unwrap(),
            "SET @@session.timestamp=5.000000"
        );
    }
}
