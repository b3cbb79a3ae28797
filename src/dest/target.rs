//! A destination table as the applier writes to it: its columns in order
//! (generated ones marked: they are never written), which are unsigned,
//! their character sets, and the key rows are found by.
//!
//! Read from the destination's `information_schema`. This is the schema in
//! step with the binlog: the applier applies the source's DDL in binlog
//! order, so when it applies an event the destination table has exactly the
//! definition the source table had when the event was logged. The cache of
//! these is dropped whenever the applier runs a DDL statement.

use mysql_async::prelude::*;
use mysql_async::Conn;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestColumn {
    pub name: String,
    pub unsigned: bool,
    pub generated: bool,
    /// Character set and collation of string columns.
    pub charset: Option<(String, String)>,
    /// Bytes of the native value of a MariaDB type-plugin column (`UUID`
    /// and `INET6`: 16, `INET4`: 4). The binlog drops a value's trailing
    /// zero bytes, and such a column, unlike BINARY(n), takes only whole
    /// values, so the applier pads them back.
    pub native_width: Option<usize>,
}

/// The native width of a type-plugin column, by its `COLUMN_TYPE`.
pub fn native_width(column_type: &str) -> Option<usize> {
    match column_type.to_ascii_lowercase().as_str() {
        "uuid" | "inet6" => Some(16),
        "inet4" => Some(4),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestTable {
    pub database: String,
    pub name: String,
    pub columns: Vec<DestColumn>,
    /// Indexes into `columns` of the primary key, or else of the first
    /// unique key over NOT NULL columns; empty when the table has neither.
    pub key: Vec<usize>,
    /// Every unique index (the primary key included), as column indexes.
    pub uniques: Vec<Vec<usize>>,
    /// A SEQUENCE: its state is set with SETVAL, never written as rows.
    pub sequence: bool,
    /// System-versioned: its row events carry the implicit `ROW_START` and
    /// `ROW_END` last, and are applied as the statements that made them
    /// (the destination writes the history), at the source's times.
    pub versioned: bool,
    /// Its named period columns (indexes into `columns`, which row images
    /// share); `None` for implicit ones (the images' last two).
    pub period: Option<(usize, usize)>,
    /// Deleting (updating) one of its rows changes other tables' rows
    /// through a foreign key (`ON DELETE`/`ON UPDATE` `CASCADE`, `SET
    /// NULL`, `SET DEFAULT`), which the binlog does not log: the
    /// destination must do it, with foreign key checks on.
    pub cascade_delete: bool,
    pub cascade_update: bool,
}

impl DestTable {
    /// Whether applying `op` on this table changes other tables' rows.
    pub fn cascades(&self, op: crate::change::RowOp) -> bool {
        use crate::change::RowOp;
        match op {
            RowOp::Insert => false,
            RowOp::Delete => self.cascade_delete,
            RowOp::Update => self.cascade_update,
        }
    }
}

impl DestTable {
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Whether the values of `cols` are equal exactly when their bytes
    /// are: no column compares text under a collation.
    pub fn compares_bytes(&self, cols: &[usize]) -> bool {
        cols.iter().all(|&j| {
            self.columns[j]
                .charset
                .as_ref()
                .is_none_or(|(charset, _)| charset == "binary")
        })
    }
}

/// The table, or `None` if the destination has no such table.
pub async fn load(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<Option<DestTable>, mysql_async::Error> {
    type ColumnRow = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
    );
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, EXTRA, CHARACTER_SET_NAME, COLLATION_NAME, \
             IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut nullable = Vec::new();
    let columns: Vec<DestColumn> = rows
        .into_iter()
        .map(|(name, ty, extra, cs, coll, null)| {
            nullable.push(null == "YES");
            DestColumn {
                name,
                unsigned: ty.to_ascii_lowercase().contains("unsigned"),
                generated: extra.to_ascii_uppercase().contains("GENERATED"),
                charset: cs.zip(coll),
                native_width: native_width(&ty),
            }
        })
        .collect();
    let keys: Vec<(String, String, i64)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME, NON_UNIQUE FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY INDEX_NAME <> 'PRIMARY', INDEX_NAME, SEQ_IN_INDEX",
            (database, table),
        )
        .await?;
    let kind: Option<String> = conn
        .exec_first(
            "SELECT TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (database, table),
        )
        .await?;
    let rules: Vec<(String, String)> = conn
        .exec(
            "SELECT DELETE_RULE, UPDATE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE UNIQUE_CONSTRAINT_SCHEMA = ? AND REFERENCED_TABLE_NAME = ?",
            (database, table),
        )
        .await?;
    let acts = |rule: &str| !matches!(rule, "RESTRICT" | "NO ACTION");
    let mut table = DestTable {
        database: database.to_string(),
        name: table.to_string(),
        columns,
        key: Vec::new(),
        uniques: Vec::new(),
        sequence: kind.as_deref() == Some("SEQUENCE"),
        versioned: kind.as_deref() == Some("SYSTEM VERSIONED"),
        period: None,
        cascade_delete: rules.iter().any(|(d, _)| acts(d)),
        cascade_update: rules.iter().any(|(_, u)| acts(u)),
    };
    if table.versioned {
        let create: Option<(String, String)> = conn
            .query_first(format!(
                "SHOW CREATE TABLE {}.{}",
                crate::db::quote_ident(database),
                crate::db::quote_ident(&table.name)
            ))
            .await?;
        table.period = create
            .and_then(|(_, sql)| crate::change::period_columns(&sql))
            .and_then(|(s, e)| Some((table.column(&s)?, table.column(&e)?)));
    }
    table.key = choose_key(&table, &nullable, &keys);
    table.uniques = unique_indexes(&table, &keys);
    // A versioned table's keys hold the period's end; its current rows,
    // which statements act on, are told by the rest.
    if let Some((_, end)) = table.period {
        table.key.retain(|&k| k != end);
        for u in table.uniques.iter_mut() {
            u.retain(|&k| k != end);
        }
    }
    Ok(Some(table))
}

fn choose_key(table: &DestTable, nullable: &[bool], keys: &[(String, String, i64)]) -> Vec<usize> {
    let mut names: Vec<&str> = keys
        .iter()
        .filter(|k| k.2 == 0)
        .map(|k| k.0.as_str())
        .collect();
    names.dedup();
    for index in names {
        let cols: Option<Vec<usize>> = keys
            .iter()
            .filter(|k| k.0 == index)
            .map(|k| table.column(&k.1).filter(|&i| !nullable[i]))
            .collect();
        if let Some(cols) = cols {
            return cols;
        }
    }
    Vec::new()
}

fn unique_indexes(table: &DestTable, keys: &[(String, String, i64)]) -> Vec<Vec<usize>> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, column, non_unique) in keys {
        let Some(j) = table.column(column).filter(|_| *non_unique == 0) else {
            continue;
        };
        match out.last_mut() {
            Some((name, cols)) if name == index => cols.push(j),
            _ => out.push((index.clone(), vec![j])),
        }
    }
    out.into_iter().map(|(_, cols)| cols).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_choice() {
        let col = |name: &str| DestColumn {
            name: name.into(),
            unsigned: false,
            generated: false,
            charset: None,
            native_width: None,
        };
        let table = DestTable {
            database: "d".into(),
            name: "t".into(),
            columns: vec![col("a"), col("b"), col("c")],
            key: vec![],
            uniques: vec![],
            sequence: false,
            versioned: false,
            period: None,
            cascade_delete: false,
            cascade_update: false,
        };
        let k = |i: &str, c: &str, nu: i64| (i.to_string(), c.to_string(), nu);
        let keys = [k("PRIMARY", "b", 0), k("PRIMARY", "a", 0), k("u", "c", 0)];
        assert_eq!(choose_key(&table, &[false; 3], &keys), vec![1, 0]);
        assert_eq!(unique_indexes(&table, &keys), vec![vec![1, 0], vec![2]]);
        let keys = [k("i", "a", 1), k("u", "c", 0), k("v", "b", 0)];
        assert_eq!(choose_key(&table, &[false, false, true], &keys), vec![1]);
        assert_eq!(
            choose_key(&table, &[false; 3], &[k("i", "a", 1)]),
            Vec::<usize>::new()
        );
    }
}
