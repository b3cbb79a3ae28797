//! /metrics is valid Prometheus text with per-job series; the bearer token
//! guards every call.

use crate::harness::*;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

fn promtool_check(text: &str) {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("promtool not found: install it (apt-get install prometheus) to check the metrics format")
        });
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_follow_jobs() {
    let service = Service::fresh().await;
    service.post("create_ccr", db_job("metered")).await.ok();
    wait_for_state(&service, "metered", "DBTablesIncrementalSync").await;
    service.post("pause", json!({"name": "metered"})).await.ok();
    service.post("pause", json!({"name": "nosuch"})).await;

    let reply = service.get("metrics").await;
    assert_eq!(reply.status, 200);
    let text = reply.text;
    promtool_check(&text);
    for line in [
        "ccr_syncer_jobs 1",
        "ccr_syncer_job_state{job=\"metered\",state=\"paused\"} 1",
        "ccr_syncer_job_state{job=\"metered\",state=\"running\"} 0",
        // source_database() puts two rows in table t and none in u.
        "ccr_syncer_full_sync_rows_total{job=\"metered\"} 2",
        "ccr_syncer_full_sync_chunks_total{job=\"metered\"} 2",
        "ccr_syncer_http_requests_total{code=\"404\",operation=\"pause\"} 1",
        "ccr_syncer_http_requests_total{code=\"200\",operation=\"create_ccr\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // The job may have passed every table's window already.
    assert!(
        ["DBTablesIncrementalSync", "DBIncrementalSync"]
            .iter()
            .any(|state| text.lines().any(|l| l
                == format!(
                    "ccr_syncer_job_progress_state{{job=\"metered\",progress_state=\"{state}\"}} 1"
                ))),
        "no incremental progress state in\n{text}"
    );
    assert!(
        text.contains("process_resident_memory_bytes"),
        "process metrics"
    );
    assert!(!text.contains(mariadb::SRC_PASSWORD));

    service
        .post("delete", json!({"name": "metered"}))
        .await
        .ok();
    let text = service.post("metrics", json!({})).await.text;
    promtool_check(&text);
    assert!(
        !text.contains("job=\"metered\""),
        "deleted job's series stay:\n{text}"
    );
    assert!(text.lines().any(|l| l == "ccr_syncer_jobs 0"));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_guards_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = Service::with_token(service::sqlite_config(dir.path()), "t0ken");
    let service = Service::start(config).await;
    for operation in [
        "version",
        "metrics",
        "create_ccr",
        "list_jobs",
        "job_status",
        "pause",
        "no_such_op",
    ] {
        for header in [
            None,
            Some("Bearer wrong"),
            Some("t0ken"),
            Some("Basic dDBrZW4="),
        ] {
            service
                .post_with_auth(operation, header)
                .await
                .fails(401, "Authorization: Bearer");
        }
    }
    // With the token (the harness client sends it) calls go through.
    service.post("list_jobs", json!({})).await.ok();
    service.get("version").await.ok();
    assert_eq!(
        service
            .post_with_auth("list_jobs", Some("Bearer t0ken"))
            .await
            .status,
        200
    );
    service.stop().await;
}
