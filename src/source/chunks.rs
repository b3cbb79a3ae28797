//! Splitting a table into key ranges ("chunks") that separate connections
//! copy, and the SQL that reads one chunk.
//!
//! A chunk is the half-open key range `(lower, upper]`; the first has no
//! lower bound and the last no upper bound, so the chunks of a table cover
//! every key there is or will be, each key in exactly one chunk — also for
//! rows inserted after the plan was made, which matters when an interrupted
//! copy resumes from a newer snapshot. A table without a usable key is one
//! chunk.
//!
//! Bounds are the key values' text as the server sent it (bytes): integers
//! split by value (no scan needed), other keys by walking the key in order,
//! `chunk_rows` at a time. Bounds need not be exact key values (FLOAT text is
//! rounded): the two predicates of a bound are complements, so coverage holds. String bounds are compared in the column's own
//! collation (`_charset'…' COLLATE …`), so ranges follow the index order even
//! though the session reads bytes (`SET NAMES binary`).

use super::schema::{Column, TableInfo};
use crate::change::literal::{self, LiteralKind};
use crate::change::{ChunkBounds, KeyValue};
use crate::db::quote_ident;
use mysql_async::prelude::*;
use mysql_async::Conn;

/// Plans `table`'s chunks of about `chunk_rows` rows, on a snapshot connection.
pub async fn plan(
    conn: &mut Conn,
    database: &str,
    table: &TableInfo,
    chunk_rows: u64,
) -> Result<Vec<ChunkBounds>, mysql_async::Error> {
    let chunk_rows = chunk_rows.max(1);
    let whole = vec![ChunkBounds {
        lower: None,
        upper: None,
        estimated_rows: table.estimated_rows,
    }];
    if table.key.is_empty() || table.estimated_rows <= chunk_rows {
        return Ok(whole);
    }
    let from = format!("{}.{}", quote_ident(database), quote_ident(&table.name));
    if let [column] = table.key.as_slice() {
        if column.is_integer() {
            let col = quote_ident(&column.name);
            let range: Option<(Option<String>, Option<String>)> = conn
                .query_first(format!(
                    "SELECT CAST(MIN({col}) AS CHAR), CAST(MAX({col}) AS CHAR) FROM {from}"
                ))
                .await?;
            let (min, max) = match range {
                Some((Some(min), Some(max))) => (min, max),
                _ => return Ok(whole),
            };
            let (Ok(min), Ok(max)) = (min.parse::<i128>(), max.parse::<i128>()) else {
                return Ok(whole);
            };
            let count = table.estimated_rows.div_ceil(chunk_rows);
            return Ok(split_integers(min, max, count, table.estimated_rows));
        }
    }
    walk(conn, &from, &table.key, chunk_rows, table.estimated_rows).await
}

/// `count` ranges of about equal width over `[min, max]`.
pub fn split_integers(min: i128, max: i128, count: u64, estimated_rows: u64) -> Vec<ChunkBounds> {
    let count = (count.max(1) as i128).min(max - min + 1).max(1);
    let width = (max - min + 1) / count;
    let per_chunk = estimated_rows / count as u64;
    let bound = |i: i128| Some(vec![(min + i * width).to_string().into_bytes()]);
    (0..count)
        .map(|i| ChunkBounds {
            lower: if i == 0 { None } else { bound(i) },
            upper: if i == count - 1 { None } else { bound(i + 1) },
            estimated_rows: per_chunk,
        })
        .collect()
}

/// Boundaries every `chunk_rows` keys, found by walking the key index.
async fn walk(
    conn: &mut Conn,
    from: &str,
    key: &[Column],
    chunk_rows: u64,
    estimated_rows: u64,
) -> Result<Vec<ChunkBounds>, mysql_async::Error> {
    let mut bounds: Vec<KeyValue> = Vec::new();
    while let Some(v) = next_bound(conn, from, key, bounds.last(), chunk_rows).await? {
        bounds.push(v);
    }
    // The walk found the last key of each full chunk; a chunk starts after it.
    let n = bounds.len() + 1;
    let per_chunk = estimated_rows / n as u64;
    let mut out = Vec::with_capacity(n);
    let mut lower: Option<KeyValue> = None;
    for b in bounds {
        out.push(ChunkBounds {
            lower: lower.take(),
            upper: Some(b.clone()),
            estimated_rows: per_chunk,
        });
        lower = Some(b);
    }
    out.push(ChunkBounds {
        lower,
        upper: None,
        estimated_rows: per_chunk,
    });
    Ok(out)
}

/// The key columns as their bytes, for a SELECT list.
pub fn key_select(key: &[Column]) -> String {
    key.iter()
        .map(|c| format!("CAST({} AS BINARY)", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key columns, for an ORDER BY.
pub fn key_order(key: &[Column]) -> String {
    key.iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `rows`-th key after `after` (from the first key when `None`) in
/// `from` (a quoted `db.table`): the upper bound of a chunk of that many
/// rows; `None` when fewer rows are left.
pub async fn next_bound(
    conn: &mut Conn,
    from: &str,
    key: &[Column],
    after: Option<&KeyValue>,
    rows: u64,
) -> Result<Option<KeyValue>, mysql_async::Error> {
    let mut sql = format!("SELECT {} FROM {from} ", key_select(key)).into_bytes();
    if let Some(last) = after {
        sql.extend_from_slice(b"WHERE ");
        sql.extend_from_slice(&compare(key, last, Cmp::Greater));
    }
    sql.extend_from_slice(
        format!(
            " ORDER BY {} LIMIT 1 OFFSET {}",
            key_order(key),
            rows.max(1) - 1
        )
        .as_bytes(),
    );
    let row: Option<mysql_async::Row> = conn.query_first(sql).await?;
    Ok(row.and_then(|row| {
        row.unwrap_raw()
            .into_iter()
            .map(|v| match v {
                Some(mysql_async::Value::Bytes(b)) => Some(b),
                _ => None,
            })
            .collect()
    }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Greater,
    GreaterOrEqual,
    LessOrEqual,
}

/// The predicate `key > value`, `key >= value` or `key <= value`, in key order (written out
/// column by column so that the optimizer sees a range on the index). Bytes,
/// since a bound may hold text in any character set.
pub fn compare(key: &[Column], value: &[Vec<u8>], cmp: Cmp) -> Vec<u8> {
    let (strict, last): (&[u8], &[u8]) = match cmp {
        Cmp::Greater => (b" > ", b" > "),
        Cmp::GreaterOrEqual => (b" > ", b" >= "),
        Cmp::LessOrEqual => (b" < ", b" <= "),
    };
    let mut sql = Vec::new();
    for (i, (column, v)) in key.iter().zip(value).enumerate().rev() {
        let col = quote_ident(&column.name);
        let lit = bound_literal(column, v);
        let mut next = Vec::new();
        if i == key.len() - 1 {
            next.extend_from_slice(col.as_bytes());
            next.extend_from_slice(last);
            next.extend_from_slice(&lit);
        } else {
            next.push(b'(');
            next.extend_from_slice(col.as_bytes());
            next.extend_from_slice(strict);
            next.extend_from_slice(&lit);
            next.extend_from_slice(b" OR (");
            next.extend_from_slice(col.as_bytes());
            next.extend_from_slice(b" = ");
            next.extend_from_slice(&lit);
            next.extend_from_slice(b" AND ");
            next.extend_from_slice(&sql);
            next.extend_from_slice(b"))");
        }
        sql = next;
    }
    sql
}

/// The WHERE condition of a chunk (`lower < key <= upper`), or None for all rows.
pub fn chunk_filter(key: &[Column], bounds: &ChunkBounds) -> Option<Vec<u8>> {
    let parts: Vec<Vec<u8>> = [
        bounds.lower.as_ref().map(|v| compare(key, v, Cmp::Greater)),
        bounds
            .upper
            .as_ref()
            .map(|v| compare(key, v, Cmp::LessOrEqual)),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(&b" AND "[..]))
}

/// A key bound as a literal that compares in the column's collation.
fn bound_literal(column: &Column, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match (column.kind(), &column.charset, &column.collation) {
        (LiteralKind::Quoted, Some(charset), Some(collation)) => {
            out.extend_from_slice(format!("_{charset}").as_bytes());
            literal::push_quoted(&mut out, value);
            out.extend_from_slice(format!(" COLLATE {collation}").as_bytes());
        }
        (kind, _, _) => literal::push(&mut out, kind, Some(value)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, data_type: &str, charset: Option<&str>) -> Column {
        Column {
            name: name.into(),
            data_type: data_type.into(),
            charset: charset.map(str::to_string),
            collation: charset.map(|c| format!("{c}_general_ci")),
        }
    }

    #[test]
    fn integer_split_covers_the_range() {
        let chunks = split_integers(1, 100, 4, 100);
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks[0].lower, None);
        assert_eq!(chunks[3].upper, None);
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].upper, pair[1].lower);
        }
        assert_eq!(chunks[1].lower, Some(vec![b"26".to_vec()]));
        // More chunks asked than values: one chunk per value at most.
        assert_eq!(split_integers(5, 6, 10, 2).len(), 2);
        assert_eq!(split_integers(7, 7, 10, 1).len(), 1);
        // Unsigned BIGINT limits fit.
        let big = split_integers(0, u64::MAX as i128, 3, 3);
        assert_eq!(big.len(), 3);
    }

    #[test]
    fn filters() {
        let int_key = [col("id", "int", None)];
        let whole = ChunkBounds {
            lower: None,
            upper: None,
            estimated_rows: 0,
        };
        assert_eq!(chunk_filter(&int_key, &whole), None);
        let text = |b: &ChunkBounds, key: &[Column]| {
            String::from_utf8(chunk_filter(key, b).unwrap()).unwrap()
        };
        let mid = ChunkBounds {
            lower: Some(vec![b"10".to_vec()]),
            upper: Some(vec![b"20".to_vec()]),
            estimated_rows: 0,
        };
        assert_eq!(text(&mid, &int_key), "`id` > 10 AND `id` <= 20");
        let composite = [col("a", "varchar", Some("utf8mb4")), col("b", "int", None)];
        let last = ChunkBounds {
            lower: Some(vec![b"x'y".to_vec(), b"3".to_vec()]),
            upper: None,
            estimated_rows: 0,
        };
        assert_eq!(
            text(&last, &composite),
            "(`a` > _utf8mb4'x\\'y' COLLATE utf8mb4_general_ci OR (`a` = _utf8mb4'x\\'y' COLLATE utf8mb4_general_ci AND `b` > 3))"
        );
    }
}
