//! The destination side: everything written to a destination server, and
//! the pool that schedules destination transactions side by side (`pool`).
//! It never reads the source and never imports `source`, `sync` or `job`:
//! it receives tables, rows (`crate::change`) and positions from the data
//! path.
//!
//! Every destination session is set up by [`session_setup`]: bytes verbatim
//! (`SET NAMES binary`), timestamps in UTC, a strict SQL mode that keeps an
//! explicit 0 in an AUTO_INCREMENT column and refuses (rather than truncates)
//! a value that does not fit, and no foreign-key or unique checks while rows
//! known to satisfy them on the source are loaded.

pub mod checkpoint;
pub mod compact;
pub mod insert;
pub mod load;
pub mod plan;
pub mod pool;
pub mod rows;
pub mod tables;
pub mod target;

use mysql_async::prelude::*;
use mysql_async::Conn;

pub const SESSION_SETUP: &str = "SET NAMES binary, time_zone = '+00:00', \
     sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', \
     foreign_key_checks = 0, unique_checks = 0";

pub async fn session_setup(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop(SESSION_SETUP).await
}

/// The destination's `max_allowed_packet`: bounds one INSERT statement.
pub async fn max_packet(conn: &mut Conn) -> Result<usize, mysql_async::Error> {
    let v: Option<u64> = conn.query_first("SELECT @@max_allowed_packet").await?;
    Ok(v.unwrap_or(4 << 20) as usize)
}

/// Whether the destination accepts `LOAD DATA LOCAL INFILE`.
pub async fn local_infile(conn: &mut Conn) -> Result<bool, mysql_async::Error> {
    let v: Option<i64> = conn.query_first("SELECT @@global.local_infile").await?;
    Ok(v == Some(1))
}
