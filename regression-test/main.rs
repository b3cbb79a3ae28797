//! Tests that need real servers: every one starts or shares throwaway
//! `mariadbd` instances through `harness` and runs the service in-process.

mod harness;

mod alerts;
mod api_lifecycle;
mod api_validation;
mod backup_bench;
mod backup_restore;
mod binary;
mod cluster;
mod cluster_engine;
mod comps;
mod create_checks;
mod ctl;
mod failover;
mod failover_bench;
mod first_use;
mod full_sync;
mod group;
mod incremental;
mod layers;
mod metrics_auth;
mod minder;
mod minder_bench;
mod minder_ccr;
mod minder_dcs;
mod move_bench;
mod openapi;
mod outages;
mod positions;
mod recovery;
mod replicas;
mod restart;
mod secrets;
mod shard_failover;
mod shutdown;
mod snapshot;
mod stores;
mod tls;
mod verify;
mod view;
