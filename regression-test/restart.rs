//! After a restart of the service every job is back in its persisted state,
//! on both meta store backends.

use crate::harness::*;
use ccr_syncer::config::{Config, StoreConfig};
use ccr_syncer::secret::Secret;
use serde_json::json;

/// A MySQL meta store in its own database on the shared destination server.
pub fn mysql_store_config() -> Config {
    Config::with_store(StoreConfig::Mysql {
        host: "127.0.0.1".into(),
        port: dest().port,
        user: "root".into(),
        password: Secret::new(""),
        database: unique("meta"),
        tls: Default::default(),
    })
}

async fn jobs_survive_a_restart(config: Config) {
    let service = Service::start(config.clone()).await;
    service
        .post("create_ccr", table_job("kept_running"))
        .await
        .ok();
    service.post("create_ccr", db_job("kept_paused")).await.ok();
    service
        .post("create_ccr", db_job("kept_desynced"))
        .await
        .ok();
    service.post("create_ccr", db_job("dropped")).await.ok();
    service
        .post("pause", json!({"name": "kept_paused"}))
        .await
        .ok();
    service
        .post("desync", json!({"name": "kept_desynced"}))
        .await
        .ok();
    service
        .post("delete", json!({"name": "dropped"}))
        .await
        .ok();
    service
        .post(
            "update_host_mapping",
            json!({"name": "kept_running", "dest_host_mapping": {"10.1.1.1": "127.0.0.1"}}),
        )
        .await
        .ok();
    wait_for_state(&service, "kept_running", "TableIncrementalSync").await;
    let paused = job_status(&service, "kept_paused").await;
    let desynced = job_status(&service, "kept_desynced").await;
    service.stop().await;

    let service = Service::start(config).await;
    assert_eq!(
        job_names(&service).await,
        vec!["kept_desynced", "kept_paused", "kept_running"]
    );
    assert_eq!(
        job_status(&service, "kept_running").await,
        ("running".into(), "TableIncrementalSync".into())
    );
    assert_eq!(paused.0, "paused");
    assert_eq!(job_status(&service, "kept_paused").await, paused);
    assert_eq!(desynced.0, "desynced");
    assert_eq!(job_status(&service, "kept_desynced").await, desynced);
    let detail = service
        .post("job_detail", json!({"name": "kept_running"}))
        .await
        .ok();
    assert_eq!(
        detail["job_detail"]["dest"]["host_mapping"],
        json!({"10.1.1.1": "127.0.0.1"})
    );
    // The resumed job still takes commands.
    service
        .post("resume", json!({"name": "kept_paused"}))
        .await
        .ok();
    assert_eq!(job_status(&service, "kept_paused").await.0, "running");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_restart_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    jobs_survive_a_restart(service::sqlite_config(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_restart_mysql() {
    jobs_survive_a_restart(mysql_store_config()).await;
}
