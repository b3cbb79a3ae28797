//! What the source says about the tables in a job's scope: their columns (as
//! the copy reads and writes them), the key that splits them into chunks,
//! their `CREATE` statements, and the views beside them.
//!
//! Read on a snapshot connection, so that row estimates and key bounds come
//! from the data the copy sees. Definitions come from the data dictionary,
//! which is not versioned: a table altered after the snapshot started fails
//! its read with "Table definition has changed" (a transient error: the copy
//! starts again from a new snapshot) rather than being copied wrongly.

use crate::change::literal::LiteralKind;
use crate::db::quote_ident;
use mysql_async::prelude::*;
use mysql_async::Conn;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub data_type: String,
    pub charset: Option<String>,
    pub collation: Option<String>,
}

impl Column {
    pub fn kind(&self) -> LiteralKind {
        LiteralKind::for_data_type(&self.data_type)
    }

    pub fn is_integer(&self) -> bool {
        matches!(
            self.data_type.as_str(),
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
        )
    }

    /// How the copy selects it: FLOAT's text has six significant digits,
    /// its value as DOUBLE prints exactly; MariaDB's type-plugin columns
    /// (UUID, INET4, INET6) as their native bytes, which is what the
    /// destination takes from a binary string (their text is not: loaded as
    /// a binary string it would become NULL) and what the binlog carries.
    pub fn select_expr(&self) -> String {
        match self.data_type.as_str() {
            "float" => format!("CAST({} AS DOUBLE)", quote_ident(&self.name)),
            "uuid" | "inet4" | "inet6" => format!("CAST({} AS BINARY)", quote_ident(&self.name)),
            _ => quote_ident(&self.name),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TableInfo {
    pub name: String,
    /// The columns the copy writes: every stored, non-generated column, in
    /// table order (generated columns are computed by the destination).
    pub columns: Vec<Column>,
    /// The columns of the primary key, or else of a unique key over NOT NULL
    /// columns; empty when the table has neither (copied as one chunk).
    pub key: Vec<Column>,
    pub create_sql: String,
    /// The server's estimate (`information_schema.TABLES.TABLE_ROWS`).
    pub estimated_rows: u64,
    /// System-versioned: copied with its history.
    pub versioned: bool,
    /// A versioned table's period columns: named ones, or the implicit
    /// `ROW_START` and `ROW_END`.
    pub period: Option<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct ViewInfo {
    pub name: String,
    pub create_sql: String,
}

/// The base tables of `database` (just `only` when given), by name.
pub async fn tables(
    conn: &mut Conn,
    database: &str,
    only: Option<&str>,
) -> Result<Vec<TableInfo>, mysql_async::Error> {
    let rows: Vec<(String, Option<u64>, String)> = conn
        .exec(
            "SELECT TABLE_NAME, TABLE_ROWS, TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
             AND (? IS NULL OR TABLE_NAME = ?) ORDER BY TABLE_NAME",
            (database, only, only),
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, estimated_rows, kind) in rows {
        let all = columns(conn, database, &name).await?;
        let key = key_columns(conn, database, &name, &all).await?;
        let columns = all
            .into_iter()
            .filter(|(_, generated)| !generated)
            .map(|(c, _)| c)
            .collect();
        let create_sql = show_create(conn, "TABLE", database, &name).await?;
        let period = (kind == "SYSTEM VERSIONED").then(|| {
            crate::change::period_columns(&create_sql)
                .unwrap_or_else(|| ("ROW_START".into(), "ROW_END".into()))
        });
        out.push(TableInfo {
            name,
            columns,
            key,
            create_sql,
            estimated_rows: estimated_rows.unwrap_or(0),
            versioned: kind == "SYSTEM VERSIONED",
            period,
        });
    }
    Ok(out)
}

pub async fn views(conn: &mut Conn, database: &str) -> Result<Vec<ViewInfo>, mysql_async::Error> {
    let names: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME",
            (database,),
        )
        .await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let create_sql = show_create(conn, "VIEW", database, &name).await?;
        out.push(ViewInfo { name, create_sql });
    }
    Ok(out)
}

/// A SEQUENCE and its state as of the snapshot.
#[derive(Clone, Debug)]
pub struct SequenceInfo {
    pub name: String,
    /// `SHOW CREATE SEQUENCE`.
    pub create_sql: String,
    /// The first value no session has been handed or has cached, as text.
    pub next_not_cached_value: String,
}

/// The sequences of `database`.
pub async fn sequences(
    conn: &mut Conn,
    database: &str,
) -> Result<Vec<SequenceInfo>, mysql_async::Error> {
    let names: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'SEQUENCE' ORDER BY TABLE_NAME",
            (database,),
        )
        .await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let create_sql = show_create(conn, "SEQUENCE", database, &name).await?;
        let next: Option<String> = conn
            .query_first(format!(
                "SELECT CAST(next_not_cached_value AS CHAR) FROM {}.{}",
                quote_ident(database),
                quote_ident(&name)
            ))
            .await?;
        out.push(SequenceInfo {
            name,
            create_sql,
            next_not_cached_value: next.unwrap_or_else(|| "1".into()),
        });
    }
    Ok(out)
}

/// `CREATE DATABASE` options (character set and collation) of `database`.
pub async fn database_options(
    conn: &mut Conn,
    database: &str,
) -> Result<Option<(String, String)>, mysql_async::Error> {
    conn.exec_first(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        (database,),
    )
    .await
}

/// Every column with whether it is generated.
async fn columns(
    conn: &mut Conn,
    database: &str,
    table: &str,
) -> Result<Vec<(Column, bool)>, mysql_async::Error> {
    type ColumnRow = (String, String, Option<String>, Option<String>, String);
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, LOWER(DATA_TYPE), CHARACTER_SET_NAME, COLLATION_NAME, IS_GENERATED \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (database, table),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, data_type, charset, collation, generated)| {
            (
                Column {
                    name,
                    data_type,
                    charset,
                    collation,
                },
                generated.eq_ignore_ascii_case("ALWAYS"),
            )
        })
        .collect())
}

/// The primary key, or the first unique key whose columns are all NOT NULL
/// (the same choice InnoDB makes for its clustered index).
async fn key_columns(
    conn: &mut Conn,
    database: &str,
    table: &str,
    all: &[(Column, bool)],
) -> Result<Vec<Column>, mysql_async::Error> {
    let rows: Vec<(String, String, String)> = conn
        .exec(
            "SELECT s.INDEX_NAME, s.COLUMN_NAME, c.IS_NULLABLE FROM information_schema.STATISTICS s \
             JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA \
               AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME \
             WHERE s.TABLE_SCHEMA = ? AND s.TABLE_NAME = ? AND s.NON_UNIQUE = 0 AND s.SUB_PART IS NULL \
             ORDER BY s.INDEX_NAME <> 'PRIMARY', s.INDEX_NAME, s.SEQ_IN_INDEX",
            (database, table),
        )
        .await?;
    let mut indexes: Vec<(String, Vec<(String, bool)>)> = Vec::new();
    for (index, column, nullable) in rows {
        let nullable = nullable.eq_ignore_ascii_case("YES");
        match indexes.last_mut() {
            Some((name, cols)) if *name == index => cols.push((column, nullable)),
            _ => indexes.push((index, vec![(column, nullable)])),
        }
    }
    let chosen = indexes
        .into_iter()
        .find(|(_, cols)| cols.iter().all(|(_, nullable)| !nullable));
    Ok(chosen
        .map(|(_, cols)| {
            cols.iter()
                .filter_map(|(name, _)| all.iter().find(|(c, _)| c.name == *name))
                .map(|(c, _)| c.clone())
                .collect()
        })
        .unwrap_or_default())
}

async fn show_create(
    conn: &mut Conn,
    kind: &str,
    database: &str,
    name: &str,
) -> Result<String, mysql_async::Error> {
    let row: Option<mysql_async::Row> = conn
        .query_first(format!(
            "SHOW CREATE {kind} {}.{}",
            quote_ident(database),
            quote_ident(name)
        ))
        .await?;
    let text = row
        .and_then(|mut r| r.take_opt::<Vec<u8>, _>(1))
        .transpose();
    match text {
        Ok(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Ok(None) => Err(mysql_async::Error::Other(
            format!("SHOW CREATE {kind} {database}.{name} returned nothing").into(),
        )),
        Err(e) => Err(mysql_async::Error::Other(e.to_string().into())),
    }
}
