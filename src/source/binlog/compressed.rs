//! MariaDB's compressed events (`log_bin_compress=ON`): a query event
//! whose statement text is compressed (165) and the row events whose row
//! images are (166–168 for version 1, 169–171 for version 2). Everything
//! before the compressed part is laid out as in the uncompressed event; the
//! compressed part is one block: a byte `0x80 | n` (the algorithm, zlib,
//! in bits 4–6; `n` in bits 0–2), the uncompressed length in `n` bytes
//! big-endian, then the zlib stream. Layouts from MariaDB's
//! `log_event.h` (`binlog_buf_compress`).

use super::decode::RowOp;
use std::io::Read;

pub const QUERY_COMPRESSED: u8 = 165;
const WRITE_V1: u8 = 166;
const UPDATE_V1: u8 = 167;
const DELETE_V1: u8 = 168;
const WRITE_V2: u8 = 169;
const UPDATE_V2: u8 = 170;
const DELETE_V2: u8 = 171;

/// Whether `kind` is a compressed row event.
pub fn is_rows(kind: u8) -> bool {
    (WRITE_V1..=DELETE_V2).contains(&kind)
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed compressed {event} event ({len} bytes): {what}")]
pub struct Malformed {
    event: &'static str,
    len: usize,
    what: String,
}

/// No compressed block may claim more than this (a row event holds at
/// most `max_allowed_packet`, 1 GiB).
const MAX_INFLATED: usize = 1 << 30;

/// The uncompressed bytes of a compressed block.
pub fn inflate(block: &[u8]) -> Result<Vec<u8>, String> {
    let (&head, rest) = block.split_first().ok_or("no compressed block")?;
    if head & 0x80 == 0 {
        return Err(format!(
            "block header {head:#04x} lacks the compressed flag"
        ));
    }
    let algorithm = (head >> 4) & 0x07;
    if algorithm != 0 {
        return Err(format!("compression algorithm {algorithm} is not zlib"));
    }
    let n = usize::from(head & 0x07);
    if !(1..=4).contains(&n) || rest.len() < n {
        return Err(format!("bad length size {n}"));
    }
    let len = rest[..n]
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if len > MAX_INFLATED {
        return Err(format!("claims {len} uncompressed bytes"));
    }
    let mut out = Vec::with_capacity(len);
    flate2::read::ZlibDecoder::new(&rest[n..])
        .take(len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zlib: {e}"))?;
    if out.len() != len {
        return Err(format!(
            "inflates to {} bytes, not the {len} its header says",
            out.len()
        ));
    }
    Ok(out)
}

/// A compressed query event: its default database and statement.
#[derive(Debug, PartialEq, Eq)]
pub struct Query {
    pub schema: String,
    /// The statement's bytes, as logged.
    pub sql: Vec<u8>,
    /// The status variables, as they are in the event.
    pub status_vars: Vec<u8>,
}

/// Query event: thread id u32, exec time u32, database name length u8,
/// error code u16, status variables length u16; the status variables; the
/// database name and a NUL; the statement (here compressed).
pub fn query(body: &[u8]) -> Result<Query, Malformed> {
    let bad = |what: &str| Malformed {
        event: "query",
        len: body.len(),
        what: what.to_string(),
    };
    let db_len = usize::from(*body.get(8).ok_or_else(|| bad("no post-header"))?);
    let status_len = usize::from(u16::from_le_bytes(
        body.get(11..13)
            .ok_or_else(|| bad("no post-header"))?
            .try_into()
            .map_err(|_| bad("no post-header"))?,
    ));
    let db_at = 13 + status_len;
    let status_vars = body
        .get(13..db_at)
        .ok_or_else(|| bad("shorter than its status variables"))?
        .to_vec();
    let schema = body
        .get(db_at..db_at + db_len)
        .ok_or_else(|| bad("shorter than its database name"))?;
    let text = body
        .get(db_at + db_len + 1..)
        .ok_or_else(|| bad("no statement"))?;
    let sql = inflate(text).map_err(|e| bad(&e))?;
    Ok(Query {
        schema: String::from_utf8_lossy(schema).into_owned(),
        sql,
        status_vars,
    })
}

/// A compressed row event, its row images inflated.
#[derive(Debug, PartialEq, Eq)]
pub struct Rows {
    pub op: RowOp,
    pub table_id: u64,
    pub columns: usize,
    pub before: Option<Vec<bool>>,
    pub after: Option<Vec<bool>>,
    pub data: Vec<u8>,
}

/// Row event: table id (6 bytes), flags u16, (version 2: extra data
/// length u16 counting itself, extra data); the column count (packed
/// integer); the columns bitmap, a second one (after image) for updates;
/// the row images (here compressed).
pub fn rows(kind: u8, body: &[u8]) -> Result<Rows, Malformed> {
    let bad = |what: &str| Malformed {
        event: "rows",
        len: body.len(),
        what: what.to_string(),
    };
    let op = match kind {
        WRITE_V1 | WRITE_V2 => RowOp::Insert,
        UPDATE_V1 | UPDATE_V2 => RowOp::Update,
        DELETE_V1 | DELETE_V2 => RowOp::Delete,
        _ => return Err(bad("not a compressed row event")),
    };
    let short = || bad("shorter than its header");
    let id = body.get(..6).ok_or_else(short)?;
    let table_id = id
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let mut at = 8;
    if kind >= WRITE_V2 {
        let extra = usize::from(u16::from_le_bytes(
            body.get(8..10)
                .ok_or_else(short)?
                .try_into()
                .map_err(|_| short())?,
        ));
        at += extra.max(2);
    }
    let (columns, used) = packed(body.get(at..).ok_or_else(short)?).ok_or_else(short)?;
    at += used;
    let columns = usize::try_from(columns).map_err(|_| bad("column count"))?;
    let bitmap_len = columns.div_ceil(8);
    let mut bitmap = || -> Result<Vec<bool>, Malformed> {
        let bytes = body.get(at..at + bitmap_len).ok_or_else(short)?;
        at += bitmap_len;
        Ok((0..columns)
            .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
            .collect())
    };
    let (before, after) = match op {
        RowOp::Insert => (None, Some(bitmap()?)),
        RowOp::Delete => (Some(bitmap()?), None),
        RowOp::Update => {
            let b = bitmap()?;
            (Some(b), Some(bitmap()?))
        }
    };
    let data = inflate(body.get(at..).ok_or_else(short)?).map_err(|e| bad(&e))?;
    Ok(Rows {
        op,
        table_id,
        columns,
        before,
        after,
        data,
    })
}

/// A length-encoded integer and the bytes it took.
fn packed(b: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<u64> {
        Some(
            b.get(1..1 + n)?
                .iter()
                .rev()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        )
    };
    match *b.first()? {
        x @ 0..=250 => Some((u64::from(x), 1)),
        252 => Some((le(2)?, 3)),
        253 => Some((le(3)?, 4)),
        254 => Some((le(8)?, 9)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn block(data: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        let compressed = z.finish().unwrap();
        let len = (data.len() as u32).to_be_bytes();
        let n = if data.len() < 256 { 1 } else { 4 };
        let mut out = vec![0x80 | n as u8];
        out.extend_from_slice(&len[4 - n..]);
        out.extend(compressed);
        out
    }

    #[test]
    fn blocks_inflate_and_lies_are_refused() {
        let text = b"INSERT INTO t VALUES (1), (2), (3)".repeat(20);
        assert_eq!(inflate(&block(&text)).unwrap(), text);
        assert_eq!(inflate(&block(b"x")).unwrap(), b"x");
        let mut wrong = block(&text);
        wrong[4] ^= 1; // a length the stream does not have
        assert!(inflate(&wrong).unwrap_err().contains("not the"));
        assert!(inflate(&[0x00, 1]).unwrap_err().contains("flag"));
        assert!(inflate(&[0x90, 1]).unwrap_err().contains("zlib"));
        assert!(inflate(&[]).is_err());
    }

    #[test]
    fn a_compressed_query_and_rows() {
        let mut q = vec![0u8; 13];
        q[8] = 4; // "shop"
        q[11] = 2; // two bytes of status variables
        q.extend_from_slice(&[0, 0]);
        q.extend_from_slice(b"shop\0");
        q.extend(block(b"ALTER TABLE t ADD c INT"));
        assert_eq!(
            query(&q).unwrap(),
            Query {
                schema: "shop".into(),
                sql: b"ALTER TABLE t ADD c INT".to_vec(),
                status_vars: vec![0, 0],
            }
        );
        // An update of table 42, 3 columns, bitmaps 0b101 and 0b111.
        let mut r = vec![42, 0, 0, 0, 0, 0, 1, 0, 3, 0b101, 0b111];
        r.extend(block(&[7; 300]));
        let rows = rows(UPDATE_V1, &r).unwrap();
        assert_eq!(rows.op, RowOp::Update);
        assert_eq!(rows.table_id, 42);
        assert_eq!(rows.before, Some(vec![true, false, true]));
        assert_eq!(rows.after, Some(vec![true, true, true]));
        assert_eq!(rows.data, vec![7; 300]);
        // Version 2 with two bytes of extra data; a write has one bitmap.
        let mut r = vec![1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 9, 9, 2, 0b11];
        r.extend(block(b"rows"));
        let rows = super::rows(WRITE_V2, &r).unwrap();
        assert_eq!(
            (rows.op, rows.before, rows.columns),
            (RowOp::Insert, None, 2)
        );
        assert_eq!(rows.data, b"rows");
        assert!(super::rows(DELETE_V1, &[1, 2, 3]).is_err());
    }
}
