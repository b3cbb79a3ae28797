//! Row images out of row events, decoded exactly.
//!
//! We read the row bytes ourselves rather than through `mysql_common`'s
//! row decoder, which reads YEAR 0000 as 1900 and overflows on negative
//! TIME(1)/TIME(2) values with a fraction. Each value becomes a [`Cell`] that
//! the applier writes as a literal the destination stores bit for bit:
//!
//! - integers as read, *signed*: the binlog does not say whether a column is
//!   unsigned unless `binlog_row_metadata` logs it, so the applier, which
//!   knows the destination column (in step with the binlog), reinterprets a
//!   negative value of an unsigned column ([`Cell::Int`] carries the width);
//! - FLOAT as its f32 and DOUBLE as its f64 (written with the shortest text
//!   that reads back to the same bits);
//! - DECIMAL as its text at full precision;
//! - DATE, DATETIME, TIME (negative, fractional) as text; TIMESTAMP, which the
//!   binlog holds as seconds since the epoch, as UTC text (destination
//!   sessions run in UTC), `0000-00-00 00:00:00` for the zero timestamp;
//! - BIT, ENUM (the member's index) and SET (the member bitmask) as unsigned
//!   integers, which the server stores as the same bits, index or members;
//! - strings, BLOBs, MariaDB JSON (a LONGTEXT) as their bytes, whatever the
//!   character set; MySQL binary JSON as its JSON text.

pub use crate::change::{Cell, ColumnDesc, Image, RowChange, RowOp, TableMap};
use chrono::DateTime;
use mysql_async::binlog::events::{OptionalMetaExtractor, TableMapEvent};
use mysql_async::consts::ColumnType;
use mysql_common::binlog::decimal::Decimal;
use mysql_common::binlog::jsonb;
use mysql_common::io::ParseBuf;
use std::sync::Arc;

/// The schema one table map event describes.
pub fn table_map(tme: &TableMapEvent<'_>) -> Result<TableMap, String> {
    let database = tme.database_name().into_owned();
    let table = tme.table_name().into_owned();
    let what = || format!("table map of {database}.{table}");
    let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())
        .map_err(|e| format!("{}: optional metadata: {e}", what()))?;
    let mut names = extractor.iter_column_name();
    let mut columns = Vec::with_capacity(tme.columns_count() as usize);
    for i in 0..tme.columns_count() as usize {
        let ty = tme
            .get_column_type(i)
            .map_err(|e| format!("{}: column {i}: {e}", what()))?
            .ok_or_else(|| format!("{}: column {i} has no type", what()))?;
        let meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
        let name = match names.next() {
            Some(Ok(n)) => Some(n.name().into_owned()),
            Some(Err(e)) => return Err(format!("{}: column names: {e}", what())),
            None => None,
        };
        columns.push(ColumnDesc { ty, meta, name });
    }
    Ok(TableMap {
        database,
        table,
        columns,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("row event on {database}.{table}: {what}")]
pub struct DecodeError {
    database: String,
    table: String,
    what: String,
}

/// Decodes a row event's rows. `before`/`after` are the column bitmaps the
/// event names (by position in the table map).
pub fn rows(
    table: &Arc<TableMap>,
    op: RowOp,
    before: Option<&[bool]>,
    after: Option<&[bool]>,
    data: &[u8],
) -> Result<RowChange, DecodeError> {
    let error = |what: String| DecodeError {
        database: table.database.clone(),
        table: table.table.clone(),
        what,
    };
    let mut input = data;
    let mut rows = Vec::new();
    while !input.is_empty() {
        let b = match before {
            Some(bits) => Some(image(&table.columns, bits, &mut input).map_err(error)?),
            None => None,
        };
        let a = match after {
            Some(bits) => Some(image(&table.columns, bits, &mut input).map_err(error)?),
            None => None,
        };
        rows.push((b, a));
    }
    Ok(RowChange {
        table: table.clone(),
        op,
        rows,
    })
}

fn image(columns: &[ColumnDesc], present: &[bool], input: &mut &[u8]) -> Result<Image, String> {
    let count = present.iter().filter(|p| **p).count();
    let nulls = take(input, count.div_ceil(8))?.to_vec();
    let mut out = Vec::with_capacity(columns.len());
    let mut n = 0;
    for (i, column) in columns.iter().enumerate() {
        if !present.get(i).copied().unwrap_or(false) {
            out.push(None);
            continue;
        }
        let null = nulls[n / 8] & (1 << (n % 8)) != 0;
        n += 1;
        let cell = if null {
            Cell::Null
        } else {
            value(column, input).map_err(|e| {
                let name = column.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
                format!("column {name} ({:?}): {e}", column.ty)
            })?
        };
        out.push(Some(cell));
    }
    Ok(out)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if input.len() < n {
        return Err(format!(
            "event ends early ({n} bytes needed, {} left)",
            input.len()
        ));
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

fn signed(value: u64, bytes: usize) -> i64 {
    let shift = 64 - 8 * bytes as u32;
    ((value << shift) as i64) >> shift
}

fn meta(column: &ColumnDesc, i: usize) -> Result<u8, String> {
    column
        .meta
        .get(i)
        .copied()
        .ok_or_else(|| "table map metadata too short".to_string())
}

/// A length-prefixed byte string whose prefix has `prefix` bytes.
fn prefixed(input: &mut &[u8], prefix: usize) -> Result<Cell, String> {
    let len = le(take(input, prefix)?) as usize;
    Ok(Cell::Bytes(take(input, len)?.to_vec()))
}

fn value(column: &ColumnDesc, input: &mut &[u8]) -> Result<Cell, String> {
    use ColumnType::*;
    let int = |input: &mut &[u8], bytes: usize| -> Result<Cell, String> {
        Ok(Cell::Int(
            signed(le(take(input, bytes)?), bytes),
            (bytes * 8) as u8,
        ))
    };
    Ok(match column.ty {
        MYSQL_TYPE_TINY => int(input, 1)?,
        MYSQL_TYPE_SHORT => int(input, 2)?,
        MYSQL_TYPE_INT24 => int(input, 3)?,
        MYSQL_TYPE_LONG => int(input, 4)?,
        MYSQL_TYPE_LONGLONG => int(input, 8)?,
        MYSQL_TYPE_FLOAT => Cell::Float(f32::from_bits(le(take(input, 4)?) as u32)),
        MYSQL_TYPE_DOUBLE => Cell::Double(f64::from_bits(le(take(input, 8)?))),
        MYSQL_TYPE_YEAR => match take(input, 1)?[0] {
            0 => Cell::UInt(0),
            y => Cell::UInt(1900 + u64::from(y)),
        },
        MYSQL_TYPE_NEWDECIMAL => {
            let (precision, scale) = (meta(column, 0)?, meta(column, 1)?);
            let d = Decimal::read_bin(&mut *input, precision as usize, scale as usize, false)
                .map_err(|e| e.to_string())?;
            Cell::Decimal(d.to_string())
        }
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => {
            let v = le(take(input, 3)?);
            text(format!("{:04}-{:02}-{:02}", v >> 9, (v >> 5) & 15, v & 31))
        }
        MYSQL_TYPE_TIME => {
            let v = signed(le(take(input, 3)?), 3);
            let (sign, v) = if v < 0 { ("-", -v) } else { ("", v) };
            text(format!(
                "{sign}{}:{:02}:{:02}",
                v / 10000,
                v / 100 % 100,
                v % 100
            ))
        }
        MYSQL_TYPE_TIME2 => text(time2(input, meta(column, 0)?)?),
        MYSQL_TYPE_DATETIME => {
            let v = le(take(input, 8)?);
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            text(format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                d / 10000,
                d / 100 % 100,
                d % 100,
                t / 10000,
                t / 100 % 100,
                t % 100
            ))
        }
        MYSQL_TYPE_DATETIME2 => text(datetime2(input, meta(column, 0)?)?),
        MYSQL_TYPE_TIMESTAMP => text(timestamp(le(take(input, 4)?) as i64, 0, 0)?),
        MYSQL_TYPE_TIMESTAMP2 => {
            let dec = meta(column, 0)?;
            let secs = be(take(input, 4)?) as i64;
            let micros = fraction(input, dec)?;
            text(timestamp(secs, micros, dec)?)
        }
        MYSQL_TYPE_BIT => {
            let bits = usize::from(meta(column, 1)?) * 8 + usize::from(meta(column, 0)?);
            Cell::UInt(be(take(input, bits.div_ceil(8))?))
        }
        MYSQL_TYPE_ENUM => Cell::UInt(le(take(input, usize::from(meta(column, 1)?))?)),
        MYSQL_TYPE_SET => Cell::UInt(le(take(input, usize::from(meta(column, 1)?))?)),
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            let max = le(&column.meta[..column.meta.len().min(2)]);
            prefixed(input, if max < 256 { 1 } else { 2 })?
        }
        MYSQL_TYPE_STRING => {
            let (b0, b1) = (usize::from(meta(column, 0)?), usize::from(meta(column, 1)?));
            let max = if b0 & 0x30 != 0x30 {
                b1 | (((b0 & 0x30) ^ 0x30) << 4)
            } else {
                b1
            };
            prefixed(input, if max < 256 { 1 } else { 2 })?
        }
        MYSQL_TYPE_TINY_BLOB
        | MYSQL_TYPE_MEDIUM_BLOB
        | MYSQL_TYPE_LONG_BLOB
        | MYSQL_TYPE_BLOB
        | MYSQL_TYPE_GEOMETRY => {
            let prefix = usize::from(meta(column, 0)?);
            if !(1..=4).contains(&prefix) {
                return Err(format!("BLOB length prefix of {prefix} bytes"));
            }
            prefixed(input, prefix)?
        }
        MYSQL_TYPE_JSON => {
            let len = le(take(input, usize::from(meta(column, 0)?.max(1)))?) as usize;
            let bytes = take(input, len)?;
            if bytes.is_empty() {
                return Ok(Cell::Bytes(b"null".to_vec()));
            }
            let value: jsonb::Value<'_> = ParseBuf(bytes)
                .parse(())
                .map_err(|e| format!("JSON: {e}"))?;
            let json = serde_json::Value::try_from(value).map_err(|e| format!("JSON: {e}"))?;
            Cell::Bytes(json.to_string().into_bytes())
        }
        other => return Err(format!("column type {other:?} is not supported")),
    })
}

fn text(s: String) -> Cell {
    Cell::Bytes(s.into_bytes())
}

/// The fractional seconds of a TIME2/DATETIME2/TIMESTAMP2 value, in µs.
fn fraction(input: &mut &[u8], dec: u8) -> Result<i64, String> {
    Ok(match dec {
        1 | 2 => be(take(input, 1)?) as i64 * 10_000,
        3 | 4 => be(take(input, 2)?) as i64 * 100,
        5 | 6 => be(take(input, 3)?) as i64,
        _ => 0,
    })
}

/// TIME2: a packed signed value (int part << 24 | µs), stored big-endian
/// with an offset so that it sorts as bytes.
fn time2(input: &mut &[u8], dec: u8) -> Result<String, String> {
    const INT_OFS: i64 = 0x80_0000;
    let packed = match dec {
        1 | 2 => {
            let mut int = be(take(input, 3)?) as i64 - INT_OFS;
            let mut frac = be(take(input, 1)?) as i64;
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 0x100;
            }
            (int << 24) + frac * 10_000
        }
        3 | 4 => {
            let mut int = be(take(input, 3)?) as i64 - INT_OFS;
            let mut frac = be(take(input, 2)?) as i64;
            if int < 0 && frac > 0 {
                int += 1;
                frac -= 0x1_0000;
            }
            (int << 24) + frac * 100
        }
        5 | 6 => be(take(input, 6)?) as i64 - 0x8000_0000_0000,
        _ => (be(take(input, 3)?) as i64 - INT_OFS) << 24,
    };
    let sign = if packed < 0 { "-" } else { "" };
    let abs = packed.abs();
    let hms = abs >> 24;
    let micros = abs % (1 << 24);
    let mut out = format!(
        "{sign}{:02}:{:02}:{:02}",
        (hms >> 12) % (1 << 10),
        (hms >> 6) % (1 << 6),
        hms % (1 << 6)
    );
    if dec > 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    Ok(out)
}

/// DATETIME2: year*13+month, day, hour, minute, second in 40 bits (big-endian,
/// offset), then the fraction.
fn datetime2(input: &mut &[u8], dec: u8) -> Result<String, String> {
    let int = be(take(input, 5)?) as i64 - 0x80_0000_0000;
    let micros = fraction(input, dec)?;
    let ymd = int >> 17;
    let ym = ymd >> 5;
    let hms = int % (1 << 17);
    let mut out = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        ym / 13,
        ym % 13,
        ymd % (1 << 5),
        hms >> 12,
        (hms >> 6) % (1 << 6),
        hms % (1 << 6)
    );
    if dec > 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    Ok(out)
}

fn timestamp(secs: i64, micros: i64, dec: u8) -> Result<String, String> {
    if secs == 0 && micros == 0 {
        return Ok("0000-00-00 00:00:00".into());
    }
    let t = DateTime::from_timestamp(secs, (micros * 1000) as u32)
        .ok_or_else(|| format!("timestamp {secs}.{micros:06} out of range"))?;
    Ok(if dec > 0 {
        t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType, meta: &[u8]) -> ColumnDesc {
        ColumnDesc {
            ty,
            meta: meta.to_vec(),
            name: None,
        }
    }

    fn decode(ty: ColumnType, meta: &[u8], bytes: &[u8]) -> Cell {
        let mut input = bytes;
        let cell = value(&col(ty, meta), &mut input).unwrap();
        assert!(input.is_empty(), "{ty:?} left {input:?}");
        cell
    }

    fn text_of(cell: Cell) -> String {
        match cell {
            Cell::Bytes(b) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn integers_keep_their_bits() {
        use ColumnType::*;
        assert_eq!(decode(MYSQL_TYPE_TINY, &[], &[0xff]), Cell::Int(-1, 8));
        assert_eq!(
            decode(MYSQL_TYPE_INT24, &[], &[0, 0, 0x80]),
            Cell::Int(-8_388_608, 24)
        );
        assert_eq!(
            decode(MYSQL_TYPE_LONGLONG, &[], &u64::MAX.to_le_bytes()),
            Cell::Int(-1, 64)
        );
        assert_eq!(decode(MYSQL_TYPE_YEAR, &[], &[0]), Cell::UInt(0));
        assert_eq!(decode(MYSQL_TYPE_YEAR, &[], &[255]), Cell::UInt(2155));
        assert_eq!(
            decode(MYSQL_TYPE_BIT, &[3, 1], &[0x02, 0xaa]),
            Cell::UInt(0x2aa)
        );
        assert_eq!(
            decode(MYSQL_TYPE_SET, &[248, 2], &[1, 2]),
            Cell::UInt(0x201)
        );
    }

    #[test]
    fn temporal_values() {
        use ColumnType::*;
        // TIME(6) -838:59:59.000000 and TIME(2) -00:00:01.50 (MySQL's layouts).
        let t = |h: i64, m: i64, s: i64| ((h << 12) | (m << 6) | s) << 24;
        let packed = -t(838, 59, 59) + 0x8000_0000_0000;
        let bytes = &(packed as u64).to_be_bytes()[2..];
        assert_eq!(
            text_of(decode(MYSQL_TYPE_TIME2, &[6], bytes)),
            "-838:59:59.000000"
        );
        // -1.5 s with 2 digits: int part -1 → stored as -2 with fraction 0x100-50.
        let int = (-2i64 + 0x80_0000) as u32;
        let mut b = int.to_be_bytes()[1..].to_vec();
        b.push((0x100 - 50) as u8);
        assert_eq!(
            text_of(decode(MYSQL_TYPE_TIME2, &[2], &b)),
            "-00:00:01.500000"
        );
        // DATETIME2(0) 2024-02-29 13:14:15.
        let ym = 2024 * 13 + 2;
        let int = ((((ym << 5) | 29) << 17) | (13 << 12) | (14 << 6) | 15) + 0x80_0000_0000i64;
        let b = &(int as u64).to_be_bytes()[3..];
        assert_eq!(
            text_of(decode(MYSQL_TYPE_DATETIME2, &[0], b)),
            "2024-02-29 13:14:15"
        );
        // TIMESTAMP2(6) 1 s after the epoch + 5 µs, and the zero timestamp.
        let mut b = 1u32.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 0, 5]);
        assert_eq!(
            text_of(decode(MYSQL_TYPE_TIMESTAMP2, &[6], &b)),
            "1970-01-01 00:00:01.000005"
        );
        assert_eq!(
            text_of(decode(MYSQL_TYPE_TIMESTAMP2, &[0], &[0, 0, 0, 0])),
            "0000-00-00 00:00:00"
        );
        let d = (2024u64 << 9) | (12 << 5) | 31;
        assert_eq!(
            text_of(decode(MYSQL_TYPE_NEWDATE, &[], &d.to_le_bytes()[..3])),
            "2024-12-31"
        );
    }

    #[test]
    fn strings_and_images() {
        use ColumnType::*;
        assert_eq!(
            decode(MYSQL_TYPE_VARCHAR, &[0x2c, 0x01], &[2, 0, 0xff, 0x00]),
            Cell::Bytes(vec![0xff, 0x00])
        );
        assert_eq!(
            decode(MYSQL_TYPE_BLOB, &[2], &[1, 0, b'x']),
            Cell::Bytes(b"x".to_vec())
        );
        // Two columns, the second NULL, then a second row.
        let table = Arc::new(TableMap {
            database: "d".into(),
            table: "t".into(),
            columns: vec![col(MYSQL_TYPE_LONG, &[]), col(MYSQL_TYPE_LONG, &[])],
        });
        let data = [0b10, 7, 0, 0, 0, 0b00, 1, 0, 0, 0, 2, 0, 0, 0];
        let change = rows(&table, RowOp::Insert, None, Some(&[true, true]), &data).unwrap();
        assert_eq!(change.rows.len(), 2);
        assert_eq!(
            change.rows[0].1.as_ref().unwrap(),
            &vec![Some(Cell::Int(7, 32)), Some(Cell::Null)]
        );
        assert!(rows(&table, RowOp::Insert, None, Some(&[true, true]), &data[..8]).is_err());
    }
}
