//! ccr-syncer: cross-cluster replication for MySQL-protocol databases, driven
//! over HTTP like the Doris CCR syncer. `doc/ARCHITECTURE.md` is the map.

pub mod agent;
pub mod api;
pub mod app;
pub mod archive;
pub mod change;
pub mod client;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod db;
pub mod dest;
pub mod error;
pub mod fields;
pub mod group;
pub mod history;
pub mod hostmap;
pub mod job;
pub mod logging;
pub mod metrics;
pub mod minder;
pub mod position;
pub mod preflight;
pub mod protocol;
pub mod redact;
pub mod secret;
pub mod source;
pub mod storage;
pub mod store;
pub mod sync;
pub mod tls;
