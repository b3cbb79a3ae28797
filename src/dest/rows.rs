//! Row changes as SQL statements on the destination.
//!
//! Statements go by key: the destination table's primary key (or first
//! unique NOT NULL key). An insert is one multi-row INSERT per row event, a
//! delete one DELETE naming every key, an update one UPDATE per row. A table
//! without such a key is matched on the whole row (`<=>` on every column),
//! one row at a time with `LIMIT 1`, as MariaDB's own replica does.
//!
//! In *exact* mode each statement says how many rows it must touch (the
//! connection reports matched rows, `CLIENT_FOUND_ROWS`): a destination that
//! lacks a row the source changed is a divergence the job stops on, not
//! something it papers over. In *idempotent* mode (a table whose snapshot
//! may already hold the change) inserts become REPLACE, an update deletes the
//! old key and replaces the new row, and nothing is counted.
//!
//! Columns are matched by name when the binlog names them
//! (`binlog_row_metadata=FULL`), otherwise by position against the
//! destination table, which is in step with the binlog (see [`target`]).
//! Generated columns are never written; their values follow.
//!
//! [`target`]: super::target

use super::target::{DestColumn, DestTable};
use crate::change::literal::{self, LiteralKind};
use crate::change::{Cell, Image, RowChange, RowOp, TableMap};
use crate::db::quote_ident;

type RowPair = (Option<Image>, Option<Image>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Exact,
    Idempotent,
}

/// Statements to send, `;`-separated, with what each must affect.
#[derive(Debug, Default)]
pub struct Statements {
    pub sql: Vec<u8>,
    /// Rows each statement must match, in order (`None`: not checked).
    pub expect: Vec<Option<u64>>,
    /// Where each statement starts in `sql`.
    starts: Vec<usize>,
}

impl Statements {
    pub fn is_empty(&self) -> bool {
        self.expect.is_empty()
    }

    pub fn clear(&mut self) {
        self.sql.clear();
        self.expect.clear();
        self.starts.clear();
    }

    pub(super) fn start(&mut self) -> &mut Vec<u8> {
        if !self.sql.is_empty() {
            self.sql.push(b';');
        }
        self.starts.push(self.sql.len());
        &mut self.sql
    }

    /// The text of statement `i` (empty if there is none).
    pub fn statement(&self, i: usize) -> &[u8] {
        let Some(&start) = self.starts.get(i) else {
            return &[];
        };
        let end = self.starts.get(i + 1).map_or(self.sql.len(), |s| s - 1);
        &self.sql[start..end]
    }

    pub fn push(&mut self, sql: &str, expect: Option<u64>) {
        self.start().extend_from_slice(sql.as_bytes());
        self.expect.push(expect);
    }
}

/// For each column of the table map, the destination column it writes
/// (`None` for a generated one).
pub fn mapping(map: &TableMap, dest: &DestTable) -> Result<Vec<Option<usize>>, String> {
    // (A versioned table's named period columns are generated; they are
    // mapped, so its times can be found, and written by no statement.)
    let period = |i: usize| dest.period.is_some_and(|(s, e)| i == s || i == e);
    let target = |i: usize| (!dest.columns[i].generated || period(i)).then_some(i);
    // A versioned table's implicit ROW_START and ROW_END come last.
    let system = if dest.versioned && dest.period.is_none() {
        2
    } else {
        0
    };
    if map.has_names() {
        return map
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = c.name.as_deref().unwrap_or_default();
                if i + system >= map.columns.len() && dest.column(name).is_none() {
                    return Ok(None);
                }
                dest.column(name).map(target).ok_or_else(|| {
                    format!(
                        "the binlog has column `{name}` in {}.{}, which destination table {}.{} lacks",
                        map.database, map.table, dest.database, dest.name
                    )
                })
            })
            .collect();
    }
    if map.columns.len() != dest.columns.len() + system {
        return Err(format!(
            "the binlog has {} columns for {}.{}, destination table {}.{} has {}: their definitions differ",
            map.columns.len(),
            map.table,
            map.database,
            dest.database,
            dest.name,
            dest.columns.len()
        ));
    }
    Ok((0..map.columns.len())
        .map(|i| {
            if i < dest.columns.len() {
                target(i)
            } else {
                None
            }
        })
        .collect())
}

/// `ROW_END` of a current row: MariaDB 10.11's timestamps end in 2038,
/// 11.5's in 2106; an end at or past the first is a current row.
const ROW_END_MAX: &[u8] = b"2038-01-19 03:14:07.999999";

fn current(end: &str) -> bool {
    end.as_bytes() >= ROW_END_MAX
}

/// A versioned table's row event, applied as what made it: an insert of a
/// current row, an update of one (the source logs the history row it
/// wrote apart: skipped, the destination writes its own), a delete (logged
/// as the row's end) — each at the source's time (`@@timestamp`), so the
/// destination's history has the source's `ROW_START` and `ROW_END`.
fn versioned(
    change: &RowChange,
    table: &str,
    dest: &DestTable,
    columns: &[Option<usize>],
    mode: Mode,
    out: &mut Statements,
) -> Result<(), String> {
    // Named period columns: where the image has them (mapped to them,
    // and written by no statement here).
    let in_image = |j: usize| columns.iter().position(|c| *c == Some(j));
    let period_at = dest.period.map(|(s, e)| (in_image(s), in_image(e)));
    let plain: Vec<Option<usize>> = columns
        .iter()
        .map(|c| c.filter(|j| dest.period.is_none_or(|(s, e)| *j != s && *j != e)))
        .collect();
    let columns = plain.as_slice();
    // `which`: 2 the start, 1 the end.
    let time = |image: &Image, which: usize| -> Result<String, String> {
        let at = match period_at {
            Some((start, end)) => {
                if which == 2 {
                    start
                } else {
                    end
                }
            }
            None => image.len().checked_sub(which),
        }
        .filter(|&i| i < image.len())
        .ok_or("row image lacks the period's start or end")?;
        match image[at].as_ref() {
            Some(Cell::Bytes(b)) if b.iter().all(|c| c.is_ascii_digit() || b"-: .".contains(c)) => {
                Ok(String::from_utf8_lossy(b).into_owned())
            }
            other => Err(format!("row image has {other:?} for a system time")),
        }
    };
    let at_time = |out: &mut Statements, t: &str| {
        out.push(&format!("SET @@timestamp = UNIX_TIMESTAMP('{t}')"), None);
    };
    let expect_one = match mode {
        Mode::Exact => Some(1),
        Mode::Idempotent => None,
    };
    for (before, after) in &change.rows {
        match (change.op, before, after) {
            (RowOp::Insert, _, Some(row)) => {
                if !current(&time(row, 1)?) {
                    continue;
                }
                at_time(out, &time(row, 2)?);
                insert(table, dest, columns, &[row], mode, out);
            }
            (RowOp::Update, Some(old), Some(new)) => {
                let end = time(new, 1)?;
                if current(&end) {
                    at_time(out, &time(new, 2)?);
                    update(table, dest, columns, old, new, mode, out)?;
                } else {
                    at_time(out, &end);
                    let sql = out.start();
                    sql.extend_from_slice(format!("DELETE FROM {table} WHERE ").as_bytes());
                    row_match(sql, dest, columns, old)?;
                    out.expect.push(expect_one);
                }
            }
            (RowOp::Delete, _, _) => {
                return Err(format!(
                    "a row event deletes rows of system-versioned table {table} (its history: \
                     DELETE HISTORY, or a partition dropped), which is not replicated"
                ))
            }
            _ => return Err("row event lacks a row image".into()),
        }
    }
    out.push("SET @@timestamp = DEFAULT", None);
    Ok(())
}

/// Appends the statements for one row event.
pub fn render(
    change: &RowChange,
    dest: &DestTable,
    columns: &[Option<usize>],
    mode: Mode,
    out: &mut Statements,
) -> Result<(), String> {
    let table = format!(
        "{}.{}",
        quote_ident(&dest.database),
        quote_ident(&dest.name)
    );
    if dest.sequence {
        return sequence(change, &table, dest, columns, out);
    }
    if dest.versioned {
        return versioned(change, &table, dest, columns, mode, out);
    }
    // The rows a foreign key's action changes are not in the binlog: the
    // destination changes them, as the source did, with its checks on.
    // (Not in a snapshot window, whose updates are a delete and an insert
    // that must not cascade.)
    if dest.cascades(change.op) && mode == Mode::Exact {
        out.push("SET foreign_key_checks = 1", None);
        let result = plain(change, &table, dest, columns, mode, out);
        out.push("SET foreign_key_checks = 0", None);
        return result;
    }
    plain(change, &table, dest, columns, mode, out)
}

fn plain(
    change: &RowChange,
    table: &str,
    dest: &DestTable,
    columns: &[Option<usize>],
    mode: Mode,
    out: &mut Statements,
) -> Result<(), String> {
    let table = table.to_string();
    let images = |pick: fn(&RowPair) -> Option<&Image>| {
        change
            .rows
            .iter()
            .map(move |r| pick(r).ok_or("row event lacks a row image"))
    };
    match change.op {
        RowOp::Insert => {
            let rows: Vec<&Image> = images(|r| r.1.as_ref()).collect::<Result<_, _>>()?;
            insert(&table, dest, columns, &rows, mode, out);
        }
        RowOp::Delete => {
            let rows: Vec<&Image> = images(|r| r.0.as_ref()).collect::<Result<_, _>>()?;
            delete(&table, dest, columns, &rows, mode, out)?;
        }
        RowOp::Update => {
            for (before, after) in &change.rows {
                let (Some(before), Some(after)) = (before, after) else {
                    return Err("update row event lacks a before or after image".into());
                };
                if mode == Mode::Idempotent && !dest.key.is_empty() {
                    delete(&table, dest, columns, &[before], mode, out)?;
                    insert(&table, dest, columns, &[after], mode, out);
                    continue;
                }
                update(&table, dest, columns, before, after, mode, out)?;
            }
        }
    }
    Ok(())
}

/// `UPDATE … SET after WHERE before`, affecting one row (exact mode).
fn update(
    table: &str,
    dest: &DestTable,
    columns: &[Option<usize>],
    before: &Image,
    after: &Image,
    mode: Mode,
    out: &mut Statements,
) -> Result<(), String> {
    let sql = out.start();
    sql.extend_from_slice(format!("UPDATE {table} SET ").as_bytes());
    push_pairs(sql, dest, columns, after, b",", b"=");
    sql.extend_from_slice(b" WHERE ");
    row_match(sql, dest, columns, before)?;
    out.expect.push(match mode {
        Mode::Exact => Some(1),
        Mode::Idempotent => None,
    });
    Ok(())
}

/// A sequence's state, which the binlog logs as a written row of the
/// sequence: set with `SETVAL(…, next_not_cached_value, 0)`, so the next
/// value the destination hands out is one the source has not (its cached
/// values included). SETVAL never moves a sequence back.
fn sequence(
    change: &RowChange,
    table: &str,
    dest: &DestTable,
    columns: &[Option<usize>],
    out: &mut Statements,
) -> Result<(), String> {
    if change.op != RowOp::Insert {
        return Err(format!(
            "a row event {}s rows of sequence {table}, whose state is only ever written",
            change.op.as_str()
        ));
    }
    let next = dest
        .column("next_not_cached_value")
        .ok_or("the destination sequence has no next_not_cached_value column")?;
    let at = columns
        .iter()
        .position(|c| *c == Some(next))
        .ok_or("the row event lacks the sequence's next_not_cached_value")?;
    for (_, after) in &change.rows {
        let after = after.as_ref().ok_or("row event lacks a row image")?;
        let cell = after[at].as_ref().unwrap_or(&Cell::Null);
        let sql = out.start();
        sql.extend_from_slice(format!("DO SETVAL({table}, ").as_bytes());
        push_cell(sql, cell, &dest.columns[next], false);
        sql.extend_from_slice(b", 0)");
        out.expect.push(None);
    }
    Ok(())
}

fn insert(
    table: &str,
    dest: &DestTable,
    columns: &[Option<usize>],
    rows: &[&Image],
    mode: Mode,
    out: &mut Statements,
) {
    let Some(first) = rows.first() else { return };
    let present: Vec<(usize, usize)> = first
        .iter()
        .enumerate()
        .filter_map(|(i, cell)| cell.as_ref().and(columns[i]).map(|j| (i, j)))
        .collect();
    let sql = out.start();
    let verb = match mode {
        Mode::Exact => "INSERT INTO",
        Mode::Idempotent => "REPLACE INTO",
    };
    sql.extend_from_slice(format!("{verb} {table} (").as_bytes());
    for (n, (_, j)) in present.iter().enumerate() {
        if n > 0 {
            sql.push(b',');
        }
        sql.extend_from_slice(quote_ident(&dest.columns[*j].name).as_bytes());
    }
    sql.extend_from_slice(b") VALUES ");
    for (r, row) in rows.iter().enumerate() {
        sql.extend_from_slice(if r == 0 { b"(" } else { b",(" });
        for (n, (i, j)) in present.iter().enumerate() {
            if n > 0 {
                sql.push(b',');
            }
            let cell = row[*i].as_ref().unwrap_or(&Cell::Null);
            push_cell(sql, cell, &dest.columns[*j], false);
        }
        sql.push(b')');
    }
    out.expect.push(match mode {
        Mode::Exact => Some(rows.len() as u64),
        Mode::Idempotent => None,
    });
}

fn delete(
    table: &str,
    dest: &DestTable,
    columns: &[Option<usize>],
    rows: &[&Image],
    mode: Mode,
    out: &mut Statements,
) -> Result<(), String> {
    let expect_one = match mode {
        Mode::Exact => Some(1),
        Mode::Idempotent => None,
    };
    if dest.key.is_empty() {
        for row in rows {
            let sql = out.start();
            sql.extend_from_slice(format!("DELETE FROM {table} WHERE ").as_bytes());
            row_match(sql, dest, columns, row)?;
            out.expect.push(expect_one);
        }
        return Ok(());
    }
    let sql = out.start();
    sql.extend_from_slice(format!("DELETE FROM {table} WHERE ").as_bytes());
    for (r, row) in rows.iter().enumerate() {
        if r > 0 {
            sql.extend_from_slice(b" OR ");
        }
        sql.push(b'(');
        key_match(sql, dest, columns, row)?;
        sql.push(b')');
    }
    out.expect.push(match mode {
        Mode::Exact => Some(rows.len() as u64),
        Mode::Idempotent => None,
    });
    Ok(())
}

/// `WHERE` condition finding `row`: by key, or on the whole row.
fn row_match(
    sql: &mut Vec<u8>,
    dest: &DestTable,
    columns: &[Option<usize>],
    row: &Image,
) -> Result<(), String> {
    if !dest.key.is_empty() {
        return key_match(sql, dest, columns, row);
    }
    if !push_pairs(sql, dest, columns, row, b" AND ", b"<=>") {
        sql.extend_from_slice(b"1");
    }
    sql.extend_from_slice(b" LIMIT 1");
    Ok(())
}

/// `col<op>value` for each written column of `row`, joined by `sep`;
/// whether there was any.
fn push_pairs(
    sql: &mut Vec<u8>,
    dest: &DestTable,
    columns: &[Option<usize>],
    row: &Image,
    sep: &[u8],
    op: &[u8],
) -> bool {
    let mut any = false;
    for (i, cell) in row.iter().enumerate() {
        let (Some(cell), Some(j)) = (cell, columns[i]) else {
            continue;
        };
        if any {
            sql.extend_from_slice(sep);
        }
        any = true;
        let c = &dest.columns[j];
        sql.extend_from_slice(quote_ident(&c.name).as_bytes());
        sql.extend_from_slice(op);
        push_cell(sql, cell, c, false);
    }
    any
}

fn key_match(
    sql: &mut Vec<u8>,
    dest: &DestTable,
    columns: &[Option<usize>],
    row: &Image,
) -> Result<(), String> {
    for (n, &j) in dest.key.iter().enumerate() {
        let i = columns
            .iter()
            .position(|c| *c == Some(j))
            .ok_or_else(|| format!("key column `{}` is not in the binlog", dest.columns[j].name))?;
        let cell = row[i].as_ref().ok_or_else(|| {
            format!(
                "key column `{}` is not in the row image; set binlog_row_image=FULL",
                dest.columns[j].name
            )
        })?;
        if n > 0 {
            sql.extend_from_slice(b" AND ");
        }
        let c = &dest.columns[j];
        sql.extend_from_slice(quote_ident(&c.name).as_bytes());
        sql.push(b'=');
        push_cell(sql, cell, c, true);
    }
    Ok(())
}

/// A value as a literal for column `c`. Key lookups name a string's
/// character set and collation, so that the key's index is used; elsewhere
/// strings are binary literals, stored and compared byte for byte.
pub(super) fn push_cell(sql: &mut Vec<u8>, cell: &Cell, c: &DestColumn, key: bool) {
    match cell {
        Cell::Null => sql.extend_from_slice(b"NULL"),
        Cell::Int(v, bits) if c.unsigned && *v < 0 => {
            let mask = if *bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            sql.extend_from_slice(((*v as u64) & mask).to_string().as_bytes());
        }
        Cell::Int(v, _) => sql.extend_from_slice(v.to_string().as_bytes()),
        Cell::UInt(v) => sql.extend_from_slice(v.to_string().as_bytes()),
        // The f32 widened exactly: what a FLOAT column compares as.
        Cell::Float(v) => sql.extend_from_slice(format!("{:?}", f64::from(*v)).as_bytes()),
        Cell::Double(v) => sql.extend_from_slice(format!("{v:?}").as_bytes()),
        Cell::Decimal(d) => literal::push(sql, LiteralKind::Number, Some(d.as_bytes())),
        Cell::Bytes(b) => match (&c.charset, key) {
            (Some((charset, collation)), true) if charset != "binary" => {
                sql.push(b'_');
                sql.extend_from_slice(charset.as_bytes());
                literal::push_quoted(sql, b);
                sql.extend_from_slice(b" COLLATE ");
                sql.extend_from_slice(collation.as_bytes());
            }
            _ => match c.native_width {
                Some(width) if b.len() < width => {
                    let mut whole = b.clone();
                    whole.resize(width, 0);
                    literal::push_quoted(sql, &whole);
                }
                _ => literal::push_quoted(sql, b),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::ColumnDesc;
    use mysql_async::consts::ColumnType;
    use std::sync::Arc;

    fn dest(key: Vec<usize>) -> DestTable {
        let col = |name: &str, unsigned, generated, charset: Option<(&str, &str)>| DestColumn {
            name: name.into(),
            unsigned,
            generated,
            charset: charset.map(|(a, b)| (a.into(), b.into())),
            native_width: None,
        };
        DestTable {
            database: "d".into(),
            name: "t".into(),
            columns: vec![
                col("id", true, false, None),
                col("s", false, false, Some(("utf8mb4", "utf8mb4_general_ci"))),
                col("g", false, true, None),
            ],
            uniques: vec![key.clone()],
            sequence: false,
            versioned: false,
            period: None,
            cascade_delete: false,
            cascade_update: false,
            key,
        }
    }

    fn change(op: RowOp, rows: Vec<(Option<Image>, Option<Image>)>) -> RowChange {
        let c = |ty| ColumnDesc {
            ty,
            meta: vec![],
            name: None,
        };
        RowChange {
            table: Arc::new(TableMap {
                database: "s".into(),
                table: "t".into(),
                columns: vec![
                    c(ColumnType::MYSQL_TYPE_TINY),
                    c(ColumnType::MYSQL_TYPE_VARCHAR),
                    c(ColumnType::MYSQL_TYPE_LONG),
                ],
            }),
            op,
            rows,
        }
    }

    fn row(id: i64, s: &[u8]) -> Image {
        vec![
            Some(Cell::Int(id, 8)),
            Some(Cell::Bytes(s.to_vec())),
            Some(Cell::Int(0, 32)),
        ]
    }

    fn sql(
        op: RowOp,
        rows: Vec<(Option<Image>, Option<Image>)>,
        key: Vec<usize>,
        mode: Mode,
    ) -> (String, Vec<Option<u64>>) {
        let d = dest(key);
        let ch = change(op, rows);
        let cols = mapping(&ch.table, &d).unwrap();
        let mut out = Statements::default();
        render(&ch, &d, &cols, mode, &mut out).unwrap();
        (String::from_utf8(out.sql).unwrap(), out.expect)
    }

    #[test]
    fn statements_by_key() {
        let (s, e) = sql(
            RowOp::Insert,
            vec![(None, Some(row(-1, b"a'"))), (None, Some(row(2, b"b")))],
            vec![0],
            Mode::Exact,
        );
        assert_eq!(
            s,
            "INSERT INTO `d`.`t` (`id`,`s`) VALUES (255,'a\\''),(2,'b')"
        );
        assert_eq!(e, [Some(2)]);
        let (s, e) = sql(
            RowOp::Delete,
            vec![(Some(row(1, b"a")), None), (Some(row(2, b"b")), None)],
            vec![0, 1],
            Mode::Exact,
        );
        assert_eq!(s, "DELETE FROM `d`.`t` WHERE (`id`=1 AND `s`=_utf8mb4'a' COLLATE utf8mb4_general_ci) OR (`id`=2 AND `s`=_utf8mb4'b' COLLATE utf8mb4_general_ci)");
        assert_eq!(e, [Some(2)]);
        let (s, e) = sql(
            RowOp::Update,
            vec![(Some(row(1, b"a")), Some(row(1, b"z")))],
            vec![0],
            Mode::Exact,
        );
        assert_eq!(s, "UPDATE `d`.`t` SET `id`=1,`s`='z' WHERE `id`=1");
        assert_eq!(e, [Some(1)]);
        let (s, e) = sql(
            RowOp::Update,
            vec![(Some(row(1, b"a")), Some(row(3, b"z")))],
            vec![0],
            Mode::Idempotent,
        );
        assert_eq!(
            s,
            "DELETE FROM `d`.`t` WHERE (`id`=1);REPLACE INTO `d`.`t` (`id`,`s`) VALUES (3,'z')"
        );
        assert_eq!(e, [None, None]);
        let d = dest(vec![0]);
        let ch = change(RowOp::Delete, vec![(Some(row(1, b"a")), None)]);
        let mut out = Statements::default();
        out.push("BEGIN", None);
        render(
            &ch,
            &d,
            &mapping(&ch.table, &d).unwrap(),
            Mode::Exact,
            &mut out,
        )
        .unwrap();
        out.push("COMMIT", None);
        assert_eq!(out.statement(0), b"BEGIN");
        assert_eq!(out.statement(1), b"DELETE FROM `d`.`t` WHERE (`id`=1)");
        assert_eq!(out.statement(2), b"COMMIT");
        assert_eq!(out.statement(3), b"");
    }

    #[test]
    fn statements_without_key() {
        let (s, e) = sql(
            RowOp::Delete,
            vec![(Some(row(1, b"a")), None), (Some(row(1, b"a")), None)],
            vec![],
            Mode::Exact,
        );
        assert_eq!(s, "DELETE FROM `d`.`t` WHERE `id`<=>1 AND `s`<=>'a' LIMIT 1;DELETE FROM `d`.`t` WHERE `id`<=>1 AND `s`<=>'a' LIMIT 1");
        assert_eq!(e, [Some(1), Some(1)]);
    }

    #[test]
    fn mapping_checks_columns() {
        let d = dest(vec![0]);
        let mut ch = change(RowOp::Insert, vec![]);
        assert_eq!(
            mapping(&ch.table, &d).unwrap(),
            vec![Some(0), Some(1), None]
        );
        Arc::make_mut(&mut ch.table).columns.pop();
        assert!(mapping(&ch.table, &d)
            .unwrap_err()
            .contains("definitions differ"));
        let mut named = (*ch.table).clone();
        for (c, n) in named.columns.iter_mut().zip(["s", "id"]) {
            c.name = Some(n.into());
        }
        assert_eq!(mapping(&named, &d).unwrap(), vec![Some(1), Some(0)]);
        named.columns[0].name = Some("nope".into());
        assert!(mapping(&named, &d).unwrap_err().contains("`nope`"));
    }

    #[test]
    fn native_values_are_padded_to_their_width() {
        let c = DestColumn {
            name: "a".into(),
            unsigned: false,
            generated: false,
            charset: None,
            native_width: Some(4),
        };
        let mut out = Vec::new();
        push_cell(&mut out, &Cell::Bytes(vec![10, 0]), &c, false);
        assert_eq!(out, br"'\n\0\0\0'".to_vec());
        assert_eq!(crate::dest::target::native_width("INET6"), Some(16));
        assert_eq!(crate::dest::target::native_width("binary(16)"), None);
    }

    #[test]
    fn floats_widen_exactly() {
        let c = DestColumn {
            name: "f".into(),
            unsigned: false,
            generated: false,
            charset: None,
            native_width: None,
        };
        let mut out = Vec::new();
        push_cell(&mut out, &Cell::Float(0.1), &c, false);
        assert_eq!(out, b"0.10000000149011612");
        out.clear();
        push_cell(&mut out, &Cell::Double(1e300), &c, false);
        assert_eq!(out, b"1e300");
    }
}
