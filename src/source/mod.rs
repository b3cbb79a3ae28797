//! The source side: everything read from a source server. It never writes to
//! the destination; what it produces reaches the applier as values/events.

pub mod binlog;
pub mod chunks;
pub mod ddl;
pub mod schema;
pub mod snapshot;
pub mod topology;
