//! Rows as both sides see them: a table map, the images of a row event,
//! and the exact value of each cell.

use mysql_async::consts::ColumnType;
use std::sync::Arc;

/// One decoded value.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    /// A signed integer and the column's width in bits.
    Int(i64, u8),
    UInt(u64),
    Float(f32),
    Double(f64),
    /// DECIMAL digits.
    Decimal(String),
    /// Bytes written as a quoted string: strings, BLOBs, dates and times.
    Bytes(Vec<u8>),
}

/// A column as a table map event describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnDesc {
    pub ty: ColumnType,
    pub meta: Vec<u8>,
    /// Logged with `binlog_row_metadata=FULL`.
    pub name: Option<String>,
}

/// A table as of one table map event: the schema its row events are
/// decoded against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMap {
    pub database: String,
    pub table: String,
    pub columns: Vec<ColumnDesc>,
}

impl TableMap {
    /// Whether the binlog names the columns (`binlog_row_metadata=FULL`).
    pub fn has_names(&self) -> bool {
        !self.columns.is_empty() && self.columns.iter().all(|c| c.name.is_some())
    }
}

/// A row image: one entry per column of the table map, `None` for a column
/// the image leaves out.
pub type Image = Vec<Option<Cell>>;

/// The kind of change a row event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowOp {
    Insert,
    Update,
    Delete,
}

impl RowOp {
    pub fn as_str(self) -> &'static str {
        match self {
            RowOp::Insert => "insert",
            RowOp::Update => "update",
            RowOp::Delete => "delete",
        }
    }
}

/// The rows of one row event: before images (update, delete) and after
/// images (insert, update).
#[derive(Clone, Debug)]
pub struct RowChange {
    pub table: Arc<TableMap>,
    pub op: RowOp,
    pub rows: Vec<(Option<Image>, Option<Image>)>,
}
