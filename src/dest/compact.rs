//! The net effect of many row changes, applied in few statements.
//!
//! A destination transaction that holds many source transactions only has
//! to leave each row as the last of them left it. For a table whose only
//! unique index is its key, and whose key compares byte for byte, the row
//! changes of a group reduce to one entry per key: whether the row existed
//! before the group (its first change was an update or delete) and its last
//! image (none if deleted). The entries become, per table, at most three
//! multi-row statements, each with the count it must affect:
//!
//! - existed, now gone: `DELETE … WHERE key IN (…)`, one row per key;
//! - existed, still there: `INSERT … ON DUPLICATE KEY UPDATE`, which with
//!   `CLIENT_FOUND_ROWS` reports 2 per row it changed;
//! - new: a plain `INSERT`, refused if the key exists.
//!
//! Any other count is not necessarily a divergence (an update and its undo
//! leave a row unchanged, which counts 1): the caller rolls the group back
//! and applies it change by change ([`super::rows`]), which checks exactly.
//! Order between these statements does not matter: keys are distinct and
//! no other unique index can clash. Tables that do not qualify, and changes
//! applied idempotently, are rendered change by change, in order.

use super::rows::{push_cell, render, Mode, Statements};
use super::target::DestTable;
use crate::change::{Image, RowChange, RowOp};
use crate::db::quote_ident;
use std::collections::HashMap;
use std::sync::Arc;

/// One row change to apply, as the job layer hands it over.
#[derive(Debug)]
pub struct Change {
    pub dest: Arc<DestTable>,
    /// For each binlog column, the destination column it writes.
    pub columns: Arc<Vec<Option<usize>>>,
    pub mode: Mode,
    pub change: RowChange,
    /// The source transaction it belongs to.
    pub txn: Arc<TxnId>,
}

/// A source transaction, as errors and a held job name it.
#[derive(Debug, Default)]
pub struct TxnId {
    /// How messages name it (`source transaction 0-1-5 (commit seq 5)`).
    pub label: String,
    /// Its GTID, where the source logs them.
    pub gtid: Option<String>,
    /// The commit seq of the position just after it.
    pub commit_seq: Option<u64>,
    /// Where it starts in the source's binlog (`file:pos`).
    pub at: String,
}

/// Whether `dest` can take its changes as a net effect.
pub fn eligible(dest: &DestTable, columns: &[Option<usize>]) -> bool {
    !dest.key.is_empty()
        && !dest.versioned
        && !dest.cascade_delete
        && !dest.cascade_update
        && dest.uniques.len() == 1
        && dest.compares_bytes(&dest.key)
        && columns.iter().flatten().any(|j| !dest.key.contains(j))
}

struct Entry<'a> {
    existed: bool,
    last: Option<&'a Image>,
    /// An image with the row's key, to tell whether it may go early.
    keyed: &'a Image,
}

struct TableNet<'a> {
    dest: &'a DestTable,
    columns: &'a [Option<usize>],
    /// Positions in the image of the key's columns.
    key_at: Vec<usize>,
    entries: HashMap<Vec<u8>, Entry<'a>>,
    /// Keys in the order first seen, so output is deterministic.
    order: Vec<Vec<u8>>,
}

impl<'a> TableNet<'a> {
    fn key(&self, image: &Image) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        for (n, (&i, &j)) in self.key_at.iter().zip(&self.dest.key).enumerate() {
            if n > 0 {
                out.push(b',');
            }
            push_cell(&mut out, image[i].as_ref()?, &self.dest.columns[j], true);
        }
        Some(out)
    }

    fn full(image: &Image) -> bool {
        image.iter().all(Option::is_some)
    }

    /// Records that the row `before` is gone; false when that cannot be
    /// (the group deleted it already).
    fn remove(&mut self, before: &'a Image) -> bool {
        let Some(k) = self.key(before) else {
            return false;
        };
        match self.entries.get_mut(&k) {
            Some(e) if e.last.is_some() => {
                e.last = None;
                true
            }
            Some(_) => false,
            None => {
                self.order.push(k.clone());
                self.entries.insert(
                    k,
                    Entry {
                        existed: true,
                        last: None,
                        keyed: before,
                    },
                );
                true
            }
        }
    }

    /// Records the row `after`, new (`existed` false) or replacing itself.
    fn put(&mut self, after: &'a Image, replacing: bool) -> bool {
        let Some(k) = self.key(after).filter(|_| Self::full(after)) else {
            return false;
        };
        match self.entries.get_mut(&k) {
            Some(e) if e.last.is_some() != replacing => false,
            Some(e) => {
                e.last = Some(after);
                true
            }
            None => {
                self.order.push(k.clone());
                self.entries.insert(
                    k,
                    Entry {
                        existed: replacing,
                        last: Some(after),
                        keyed: after,
                    },
                );
                true
            }
        }
    }

    fn add(&mut self, change: &'a RowChange) -> bool {
        change.rows.iter().all(|(before, after)| match change.op {
            RowOp::Insert => after.as_ref().is_some_and(|a| self.put(a, false)),
            RowOp::Delete => before.as_ref().is_some_and(|b| self.remove(b)),
            RowOp::Update => {
                let (Some(b), Some(a)) = (before, after) else {
                    return false;
                };
                match (self.key(b), self.key(a)) {
                    // In place: the row existed (before the group, when
                    // first seen) and is replaced.
                    (Some(kb), Some(ka)) if kb == ka => self.put(a, true),
                    // The key changed: one row gone, another new.
                    _ => self.remove(b) && self.put(a, false),
                }
            }
        })
    }

    /// The statements for the entries `pick` accepts.
    fn render(&self, out: &mut Statements, max_bytes: usize, pick: impl Fn(&Entry) -> bool) {
        let table = format!(
            "{}.{}",
            quote_ident(&self.dest.database),
            quote_ident(&self.dest.name)
        );
        let gone: Vec<&Vec<u8>> = self
            .order
            .iter()
            .filter(|k| {
                let e = &self.entries[*k];
                e.existed && e.last.is_none() && pick(e)
            })
            .collect();
        for part in split(&gone, max_bytes, |k| k.len() + 8) {
            let sql = out.start();
            sql.extend_from_slice(format!("DELETE FROM {table} WHERE ").as_bytes());
            if self.dest.key.len() == 1 {
                sql.extend_from_slice(
                    quote_ident(&self.dest.columns[self.dest.key[0]].name).as_bytes(),
                );
                sql.extend_from_slice(b" IN (");
                for (n, k) in part.iter().enumerate() {
                    if n > 0 {
                        sql.push(b',');
                    }
                    sql.extend_from_slice(k);
                }
                sql.push(b')');
            } else {
                sql.push(b'(');
                for (n, &j) in self.dest.key.iter().enumerate() {
                    if n > 0 {
                        sql.push(b',');
                    }
                    sql.extend_from_slice(quote_ident(&self.dest.columns[j].name).as_bytes());
                }
                sql.extend_from_slice(b") IN (");
                for (n, k) in part.iter().enumerate() {
                    if n > 0 {
                        sql.push(b',');
                    }
                    sql.push(b'(');
                    sql.extend_from_slice(k);
                    sql.push(b')');
                }
                sql.push(b')');
            }
            out.expect.push(Some(part.len() as u64));
        }
        for existed in [true, false] {
            let rows: Vec<&Image> = self
                .order
                .iter()
                .filter_map(|k| {
                    let e = &self.entries[k];
                    e.last.filter(|_| e.existed == existed && pick(e))
                })
                .collect();
            for part in split(&rows, max_bytes, image_bytes) {
                self.insert(&table, part, existed, out);
            }
        }
    }

    fn insert(&self, table: &str, rows: &[&Image], upsert: bool, out: &mut Statements) {
        let written: Vec<(usize, usize)> = self
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, j)| j.map(|j| (i, j)))
            .collect();
        let sql = out.start();
        sql.extend_from_slice(format!("INSERT INTO {table} (").as_bytes());
        for (n, &(_, j)) in written.iter().enumerate() {
            if n > 0 {
                sql.push(b',');
            }
            sql.extend_from_slice(quote_ident(&self.dest.columns[j].name).as_bytes());
        }
        sql.extend_from_slice(b") VALUES ");
        for (r, row) in rows.iter().enumerate() {
            sql.extend_from_slice(if r == 0 { b"(" } else { b",(" });
            for (n, &(i, j)) in written.iter().enumerate() {
                if n > 0 {
                    sql.push(b',');
                }
                if let Some(cell) = &row[i] {
                    push_cell(sql, cell, &self.dest.columns[j], false);
                }
            }
            sql.push(b')');
        }
        let per_row = if upsert {
            sql.extend_from_slice(b" ON DUPLICATE KEY UPDATE ");
            let mut first = true;
            for &(_, j) in &written {
                if self.dest.key.contains(&j) {
                    continue;
                }
                if !first {
                    sql.push(b',');
                }
                first = false;
                let name = quote_ident(&self.dest.columns[j].name);
                sql.extend_from_slice(format!("{name}=VALUES({name})").as_bytes());
            }
            2
        } else {
            1
        };
        out.expect.push(Some(per_row * rows.len() as u64));
    }
}

fn image_bytes(image: &&Image) -> usize {
    use crate::change::Cell;
    image
        .iter()
        .map(|c| match c {
            Some(Cell::Bytes(b)) => b.len() * 2 + 4,
            Some(Cell::Decimal(d)) => d.len() + 2,
            _ => 22,
        })
        .sum()
}

/// `items` in consecutive parts of at most `max_bytes` by `size` (each part
/// holds at least one item).
fn split<T>(items: &[T], max_bytes: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && bytes + n > max_bytes {
            parts.push(&items[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < items.len() {
        parts.push(&items[start..]);
    }
    parts
}

/// Statements for `changes` in order, one by one (see [`render`]); for
/// each change, the index of its first statement.
pub fn render_each(
    changes: &[Change],
    out: &mut Statements,
) -> Result<Vec<usize>, (usize, String)> {
    let mut starts = Vec::with_capacity(changes.len());
    for (n, c) in changes.iter().enumerate() {
        starts.push(out.expect.len());
        render(&c.change, &c.dest, &c.columns, c.mode, out).map_err(|e| (n, e))?;
    }
    Ok(starts)
}

/// Whether a compacted row (given the table, its column mapping and an
/// image with its key) may be written ahead of the rest, see [`render_net`].
pub type Early<'f> = &'f dyn Fn(&DestTable, &[Option<usize>], &Image) -> bool;

/// Statements for the net effect of `changes`: compacted for the tables
/// that qualify, change by change (in order) for the rest. `None` when the
/// changes do not reduce (e.g. a row inserted twice: the destination would
/// refuse the second; applied one by one, it says so) or a change cannot be
/// rendered (applied one by one, the error names it).
///
/// With `early`, the compacted rows it accepts go to `ahead` instead of
/// `out`: rows no other transaction in flight touches, which may be written
/// before that transaction commits. Compacted rows have distinct keys and
/// no other unique index, so which part a row goes to does not change what
/// the two parts leave together.
pub fn render_net(
    changes: &[Change],
    max_bytes: usize,
    early: Option<(Early<'_>, &mut Statements)>,
    out: &mut Statements,
) -> Option<()> {
    // Which tables qualify: every change exact, one definition throughout.
    let mut qualifies: HashMap<&str, Option<&Change>> = HashMap::new();
    for c in changes {
        let ok = c.mode == Mode::Exact && eligible(&c.dest, &c.columns);
        let slot = qualifies.entry(c.dest.name.as_str()).or_insert(Some(c));
        if let Some(first) = *slot {
            let same = (Arc::ptr_eq(&first.dest, &c.dest) || first.dest == c.dest)
                && (Arc::ptr_eq(&first.columns, &c.columns) || first.columns == c.columns);
            if !ok || !same {
                *slot = None;
            }
        }
    }
    let mut nets: HashMap<&str, TableNet<'_>> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (name, first) in &qualifies {
        let Some(c) = first else { continue };
        let key_at = c
            .dest
            .key
            .iter()
            .map(|j| c.columns.iter().position(|x| *x == Some(*j)))
            .collect::<Option<Vec<usize>>>();
        if let Some(key_at) = key_at {
            nets.insert(
                name,
                TableNet {
                    dest: &c.dest,
                    columns: &c.columns,
                    key_at,
                    entries: HashMap::new(),
                    order: Vec::new(),
                },
            );
        }
    }
    let mut plain = Vec::new();
    for c in changes {
        let name = c.dest.name.as_str();
        match nets.get_mut(name) {
            Some(net) => {
                if net.order.is_empty() && !order.contains(&name) {
                    order.push(name);
                }
                if !net.add(&c.change) {
                    return None;
                }
            }
            None => plain.push(c),
        }
    }
    match early {
        Some((early, ahead)) => {
            for name in order {
                let net = &nets[name];
                let go = |e: &Entry| early(net.dest, net.columns, e.keyed);
                net.render(ahead, max_bytes, go);
                net.render(out, max_bytes, |e| !go(e));
            }
        }
        None => {
            for name in order {
                nets[name].render(out, max_bytes, |_| true);
            }
        }
    }
    for c in plain {
        render(&c.change, &c.dest, &c.columns, c.mode, out).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Cell, ColumnDesc, TableMap};
    use crate::dest::target::DestColumn;
    use mysql_async::consts::ColumnType;

    fn table() -> Arc<DestTable> {
        let col = |name: &str| DestColumn {
            name: name.into(),
            unsigned: false,
            generated: false,
            charset: None,
            native_width: None,
        };
        Arc::new(DestTable {
            database: "d".into(),
            name: "t".into(),
            columns: vec![col("id"), col("v")],
            key: vec![0],
            uniques: vec![vec![0]],
            sequence: false,
            versioned: false,
            period: None,
            cascade_delete: false,
            cascade_update: false,
        })
    }

    fn row(id: i64, v: i64) -> Image {
        vec![Some(Cell::Int(id, 32)), Some(Cell::Int(v, 32))]
    }

    fn change(
        dest: &Arc<DestTable>,
        op: RowOp,
        rows: Vec<(Option<Image>, Option<Image>)>,
    ) -> Change {
        let c = |ty| ColumnDesc {
            ty,
            meta: vec![],
            name: None,
        };
        Change {
            dest: dest.clone(),
            columns: Arc::new(vec![Some(0), Some(1)]),
            mode: Mode::Exact,
            change: RowChange {
                table: Arc::new(TableMap {
                    database: "s".into(),
                    table: "t".into(),
                    columns: vec![
                        c(ColumnType::MYSQL_TYPE_LONG),
                        c(ColumnType::MYSQL_TYPE_LONG),
                    ],
                }),
                op,
                rows,
            },
            txn: Arc::new(TxnId::default()),
        }
    }

    fn net(changes: &[Change]) -> Option<(Vec<String>, Vec<Option<u64>>)> {
        let mut out = Statements::default();
        render_net(changes, 1 << 20, None, &mut out)?;
        let stmts = (0..out.expect.len())
            .map(|i| String::from_utf8(out.statement(i).to_vec()).unwrap())
            .collect();
        Some((stmts, out.expect))
    }

    #[test]
    fn rows_no_one_else_touches_go_ahead() {
        let t = table();
        let changes = vec![
            change(&t, RowOp::Update, vec![(Some(row(1, 0)), Some(row(1, 1)))]),
            change(&t, RowOp::Delete, vec![(Some(row(2, 0)), None)]),
            change(&t, RowOp::Insert, vec![(None, Some(row(3, 0)))]),
            change(&t, RowOp::Update, vec![(Some(row(6, 0)), Some(row(7, 0)))]),
        ];
        // Rows 1 and 7 are busy (an earlier group in flight touches them).
        let early = |_: &DestTable, _: &[Option<usize>], image: &Image| {
            !matches!(image[0], Some(Cell::Int(1 | 7, _)))
        };
        let (mut ahead, mut rest) = (Statements::default(), Statements::default());
        render_net(&changes, 1 << 20, Some((&early, &mut ahead)), &mut rest).unwrap();
        let text = |s: &Statements| {
            (0..s.expect.len())
                .map(|i| String::from_utf8(s.statement(i).to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            text(&ahead),
            [
                "DELETE FROM `d`.`t` WHERE `id` IN (2,6)",
                "INSERT INTO `d`.`t` (`id`,`v`) VALUES (3,0)",
            ]
        );
        assert_eq!(
            text(&rest),
            [
                "INSERT INTO `d`.`t` (`id`,`v`) VALUES (1,1) ON DUPLICATE KEY UPDATE `v`=VALUES(`v`)",
                "INSERT INTO `d`.`t` (`id`,`v`) VALUES (7,0)",
            ]
        );
        assert_eq!(ahead.expect, [Some(2), Some(1)]);
        assert_eq!(rest.expect, [Some(2), Some(1)]);
    }

    #[test]
    fn changes_reduce_to_their_net_effect() {
        let t = table();
        let changes = vec![
            change(&t, RowOp::Update, vec![(Some(row(1, 0)), Some(row(1, 1)))]),
            change(&t, RowOp::Update, vec![(Some(row(1, 1)), Some(row(1, 2)))]),
            change(&t, RowOp::Delete, vec![(Some(row(2, 0)), None)]),
            change(&t, RowOp::Insert, vec![(None, Some(row(2, 5)))]),
            change(&t, RowOp::Insert, vec![(None, Some(row(3, 0)))]),
            change(&t, RowOp::Delete, vec![(Some(row(4, 0)), None)]),
            change(&t, RowOp::Insert, vec![(None, Some(row(5, 0)))]),
            change(&t, RowOp::Delete, vec![(Some(row(5, 0)), None)]),
            // A key change: row 6 becomes row 7.
            change(&t, RowOp::Update, vec![(Some(row(6, 0)), Some(row(7, 0)))]),
        ];
        let (stmts, expect) = net(&changes).unwrap();
        assert_eq!(
            stmts,
            [
                "DELETE FROM `d`.`t` WHERE `id` IN (4,6)",
                "INSERT INTO `d`.`t` (`id`,`v`) VALUES (1,2),(2,5) ON DUPLICATE KEY UPDATE `v`=VALUES(`v`)",
                "INSERT INTO `d`.`t` (`id`,`v`) VALUES (3,0),(7,0)",
            ]
        );
        assert_eq!(expect, [Some(2), Some(4), Some(2)]);
    }

    #[test]
    fn changes_that_cannot_be_are_not_reduced() {
        let t = table();
        // Inserted twice: the destination must refuse the second.
        let twice = vec![
            change(&t, RowOp::Insert, vec![(None, Some(row(1, 0)))]),
            change(&t, RowOp::Insert, vec![(None, Some(row(1, 1)))]),
        ];
        assert!(net(&twice).is_none());
        // Deleted twice, or updated once deleted.
        let gone = vec![
            change(&t, RowOp::Delete, vec![(Some(row(1, 0)), None)]),
            change(&t, RowOp::Update, vec![(Some(row(1, 0)), Some(row(1, 1)))]),
        ];
        assert!(net(&gone).is_none());
        // Idempotent changes are rendered one by one, in order.
        let mut idem = change(&t, RowOp::Insert, vec![(None, Some(row(1, 0)))]);
        idem.mode = Mode::Idempotent;
        let (stmts, _) = net(&[idem]).unwrap();
        assert_eq!(stmts, ["REPLACE INTO `d`.`t` (`id`,`v`) VALUES (1,0)"]);
    }
}
