//! The seam between the source side and the destination side: what one
//! reads and the other writes. `source` produces these types, `dest`
//! consumes them, and neither imports the other.
//!
//! - [`row`]: a table map, the images of a row event, each cell's exact value;
//! - [`literal`]: a value as the SQL literal the destination stores bit for bit;
//! - key ranges ([`ChunkBounds`]) a table is copied and checked in;
//! - what both sides read of a table's definition ([`period_columns`]).

pub mod literal;
mod row;

pub use row::{Cell, ColumnDesc, Image, RowChange, RowOp, TableMap};

/// One key value: the text of each key column.
pub type KeyValue = Vec<Vec<u8>>;

/// A chunk: the half-open key range `(lower, upper]` (no bound: open) and
/// the rows it is estimated to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkBounds {
    pub lower: Option<KeyValue>,
    pub upper: Option<KeyValue>,
    pub estimated_rows: u64,
}

/// A system-versioned table's named period columns (`GENERATED ALWAYS AS
/// ROW START` / `ROW END`), from its `SHOW CREATE TABLE`; `None` when its
/// periods are implicit (`ROW_START`, `ROW_END`).
pub fn period_columns(create_sql: &str) -> Option<(String, String)> {
    let named = |marker: &str| {
        create_sql
            .lines()
            .find(|l| l.contains(marker))
            .and_then(|l| {
                let l = l.trim_start().strip_prefix('`')?;
                let end = l.find('`')?;
                Some(l[..end].replace("``", "`"))
            })
    };
    Some((
        named("GENERATED ALWAYS AS ROW START")?,
        named("GENERATED ALWAYS AS ROW END")?,
    ))
}
