//! The operations on a job, from create_ccr to delete: their success shapes
//! and their effects.

use crate::harness::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_answers_get_and_post() {
    let service = Service::fresh().await;
    for reply in [
        service.get("version").await,
        service.post("version", json!({})).await,
    ] {
        let body = reply.ok();
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_job_shapes_and_password_masking() {
    let service = Service::fresh().await;
    let spec = table_job("shapes");
    service.post("create_ccr", spec.clone()).await.ok();

    assert_eq!(job_names(&service).await, vec!["shapes"]);
    let (state, progress_state) = job_status(&service, "shapes").await;
    assert_eq!(state, "running");
    assert!(
        ["TableFullSync", "TableIncrementalSync"].contains(&progress_state.as_str()),
        "{progress_state}"
    );
    wait_for_state(&service, "shapes", "TableIncrementalSync").await;

    let reply = service.post("job_detail", json!({"name": "shapes"})).await;
    assert!(
        !reply.text.contains(mariadb::SRC_PASSWORD),
        "{}",
        reply.text
    );
    assert!(
        !reply.text.contains(mariadb::DEST_PASSWORD),
        "{}",
        reply.text
    );
    let detail = &reply.ok()["job_detail"];
    assert_eq!(detail["name"], "shapes");
    assert_eq!(detail["sync_type"], "table_sync");
    assert_eq!(detail["state"], "running");
    assert_eq!(detail["progress_state"], "TableIncrementalSync");
    for side in ["src", "dest"] {
        assert_eq!(detail[side]["password"], "******");
        assert_eq!(detail[side]["host"], spec[side]["host"]);
        assert_eq!(detail[side]["port"], spec[side]["port"]);
        assert_eq!(detail[side]["database"], spec[side]["database"]);
        assert_eq!(detail[side]["table"], "t");
    }

    let progress = service
        .post("job_progress", json!({"name": "shapes"}))
        .await
        .ok();
    let progress = &progress["job_progress"];
    assert_eq!(progress["progress_state"], "TableIncrementalSync");
    assert!(progress["commit_seq"].is_u64(), "{progress}");
    assert!(
        progress["snapshot"]["binlog_file"].is_string(),
        "{progress}"
    );

    let lag = service
        .post("get_lag", json!({"name": "shapes"}))
        .await
        .ok();
    for field in ["lag", "first_commit_seq", "last_commit_seq"] {
        assert!(lag[field].is_u64(), "{field}: {lag}");
    }
    for field in ["first_binlog_timestamp", "last_binlog_timestamp"] {
        assert!(lag[field].is_string(), "{field}: {lag}");
    }
    assert!(lag["time_interval_secs"].is_f64());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_job_with_renamed_destination() {
    let service = Service::fresh().await;
    let spec = db_job("dbjob");
    assert_ne!(spec["src"]["database"], spec["dest"]["database"]);
    service.post("create_ccr", spec.clone()).await.ok();
    let progress = wait_for_state(&service, "dbjob", "DBTablesIncrementalSync").await;
    assert_eq!(progress["state"], "running");
    // Each table's snapshot position is recorded under its destination name.
    let tables = progress["tables"].as_object().expect("tables");
    assert_eq!(tables.keys().collect::<Vec<_>>(), vec!["t", "u"]);
    let detail = service
        .post("job_detail", json!({"name": "dbjob"}))
        .await
        .ok();
    assert_eq!(detail["job_detail"]["sync_type"], "db_sync");
    assert_eq!(
        detail["job_detail"]["dest"]["database"],
        spec["dest"]["database"]
    );
    assert!(detail["job_detail"]["src"].get("table").is_none());
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_desync_and_resync_change_state() {
    let service = Service::fresh().await;
    service.post("create_ccr", db_job("states")).await.ok();
    let name = json!({"name": "states"});

    service.post("pause", name.clone()).await.ok();
    assert_eq!(job_status(&service, "states").await.0, "paused");
    service.post("pause", name.clone()).await.ok();
    assert_eq!(job_status(&service, "states").await.0, "paused");
    service.post("resume", name.clone()).await.ok();
    assert_eq!(job_status(&service, "states").await.0, "running");

    service.post("force_fullsync", name.clone()).await.ok();
    let progress = service.post("job_progress", name.clone()).await.ok();
    // The job is back in (or already through) a full sync, and says why.
    let state = progress["job_progress"]["progress_state"].as_str().unwrap();
    assert!(
        ["DBFullSync", "DBTablesIncrementalSync"].contains(&state),
        "{state}"
    );
    assert_eq!(
        progress["job_progress"]["full_sync_reason"],
        "force_fullsync requested"
    );
    service
        .post(
            "job_skip_binlog",
            json!({"name": "states", "skip_by": "fullsync"}),
        )
        .await
        .ok();

    // Nothing holds the job, so there is nothing to skip.
    service
        .post(
            "job_skip_binlog",
            json!({"name": "states", "skip_by": "silence", "skip_commit_seq": 1001}),
        )
        .await
        .fails(409, "nothing to skip");

    service.post("desync", name.clone()).await.ok();
    assert_eq!(job_status(&service, "states").await.0, "desynced");
    service
        .post("resume", name.clone())
        .await
        .fails(409, "desynced");
    service
        .post("force_fullsync", name.clone())
        .await
        .fails(409, "desynced");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_the_job_but_not_the_destination_data() {
    let service = Service::fresh().await;
    let spec = table_job("gone");
    let dest_db = spec["dest"]["database"].as_str().unwrap().to_string();
    dest().admin(&format!(
        "CREATE DATABASE {dest_db}; CREATE TABLE {dest_db}.keep (id INT)"
    ));
    service.post("create_ccr", spec).await.ok();
    service.post("delete", json!({"name": "gone"})).await.ok();
    assert!(job_names(&service).await.is_empty());
    service
        .post("job_status", json!({"name": "gone"}))
        .await
        .fails(404, "does not exist");
    service
        .post("delete", json!({"name": "gone"}))
        .await
        .fails(404, "does not exist");
    assert_eq!(dest().admin(&format!("SHOW TABLES FROM {dest_db}")), "keep");
    // The name is free again.
    service.post("create_ccr", table_job("gone")).await.ok();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mapping_updates_and_deletes_entries() {
    let service = Service::fresh().await;
    let mut spec = table_job("mapped");
    spec["src"]["host_mapping"] = json!({"172.168.1.1": "10.0.10.1", "172.168.1.5": ""});
    service.post("create_ccr", spec).await.ok();
    let mapping =
        |detail: &serde_json::Value, side: &str| detail["job_detail"][side]["host_mapping"].clone();
    let detail = service
        .post("job_detail", json!({"name": "mapped"}))
        .await
        .ok();
    assert_eq!(mapping(&detail, "src"), json!({"172.168.1.1": "10.0.10.1"}));

    service
        .post(
            "update_host_mapping",
            json!({"name": "mapped",
                   "src_host_mapping": {"172.168.1.2": "10.0.10.2", "172.168.1.1": ""},
                   "dest_host_mapping": {"172.168.2.3": "10.0.10.9"}}),
        )
        .await
        .ok();
    service
        .post(
            "add_host_mapping",
            json!({"name": "mapped", "src_host_mapping": {"172.168.1.3": "10.0.10.3"}}),
        )
        .await
        .ok();
    let detail = service
        .post("job_detail", json!({"name": "mapped"}))
        .await
        .ok();
    assert_eq!(
        mapping(&detail, "src"),
        json!({"172.168.1.2": "10.0.10.2", "172.168.1.3": "10.0.10.3"})
    );
    assert_eq!(
        mapping(&detail, "dest"),
        json!({"172.168.2.3": "10.0.10.9"})
    );

    service
        .post("update_host_mapping", json!({"name": "mapped"}))
        .await
        .fails(400, "src_host_mapping");
    service
        .post(
            "update_host_mapping",
            json!({"name": "mapped", "src_host_mapping": {"": "1.2.3.4"}}),
        )
        .await
        .fails(400, "empty private address");
    service
        .post(
            "update_host_mapping",
            json!({"name": "mapped", "src_host_mapping": {"a": 1}}),
        )
        .await
        .fails(400, "invalid type");
    let after = service
        .post("job_detail", json!({"name": "mapped"}))
        .await
        .ok();
    assert_eq!(
        mapping(&after, "src"),
        mapping(&detail, "src"),
        "a refused update changes nothing"
    );
    service.stop().await;
}
