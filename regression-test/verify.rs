//! Verification and repair online (`/verify`, `/repair`): no false
//! difference while the source is written to, the exact key ranges of rows
//! broken on the destination, a repair that makes them equal again while
//! the stream goes on, a verification killed halfway that goes on where it
//! stopped, and requests that are refused.

use crate::full_sync::checksums;
use crate::harness::service::sqlite_config;
use crate::harness::*;
use crate::incremental::wait_caught_up;
use serde_json::{json, Value};
use std::time::Duration;

/// The job's verification once it is done.
async fn verified(service: &Service, name: &str, secs: u64) -> Value {
    poll_job(
        service,
        "job_progress",
        name,
        secs,
        "verification done",
        |p| p["verify"]["state"] == "done",
    )
    .await["verify"]
        .clone()
}

fn table<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["table"] == name))
        .unwrap_or_else(|| panic!("no table {name} in {v:#}"))
}

/// The ranges as (first, last, rows) of a one-column key.
fn ranges(t: &Value) -> Vec<(String, String, u64)> {
    t["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .map(|r| {
            (
                r["first"][0].as_str().unwrap().to_string(),
                r["last"][0].as_str().unwrap().to_string(),
                r["rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn metric(text: &str, name: &str, job: &str, table: &str) -> Option<f64> {
    let labels = format!("{name}{{job=\"{job}\",table=\"{table}\"}}");
    text.lines()
        .find(|l| l.starts_with(&labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_under_writes_then_find_and_repair_broken_rows() {
    let db = table_t(source(), "ver", 20_000);
    source().admin(&format!(
        "USE {db};
         CREATE TABLE s (k VARCHAR(40) PRIMARY KEY, n INT, b BLOB);
         INSERT INTO s SELECT CONCAT('key-', LPAD(seq, 4, '0')), seq, REPEAT('x', seq % 300)
           FROM seq_1_to_3000;
         CREATE TABLE nokey (a INT, b VARCHAR(10));
         INSERT INTO nokey VALUES (1, 'one'), (2, NULL);
         CREATE TABLE empty_one (id INT PRIMARY KEY);"
    ));
    let dest_db = unique("ver_copy");
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_config(dir.path());
    // Small chunks and short-lived snapshot pairs: many chunks, many holds.
    config.verify.chunk_rows = 1000;
    config.verify.snapshot_secs = 1;
    config.verify.rows_per_second = 0;
    let service = Service::start(config).await;
    service
        .post(
            "create_ccr",
            json!({"name": "v", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "v", "DBIncrementalSync").await;
    // Writes all along, to rows the test does not break on the destination.
    let writer = Writer::start(&db, 5, |i| {
        format!(
            "UPDATE t SET v = v + 1 WHERE id = {};
             INSERT INTO s VALUES ('w-{}', {i}, 'y') ON DUPLICATE KEY UPDATE n = n + 1;",
            10_001 + (i * 7919) % 10_000,
            i % 500
        )
    });

    // Equal under writes: no false difference.
    let answer = service.post("verify", json!({"name": "v"})).await.ok();
    assert_eq!(answer["verify"]["state"], "running", "{answer}");
    service
        .post("verify", json!({"name": "v"}))
        .await
        .fails(409, "already running");
    let v = verified(&service, "v", 180).await;
    for name in ["t", "s", "nokey", "empty_one"] {
        let t = table(&v, name);
        assert_eq!(t["equal"], true, "{name}: {v:#}");
        assert_eq!(t["rows_different"], 0, "{name}: {v:#}");
    }
    assert_eq!(table(&v, "t")["rows_compared"], 20_000, "{v:#}");
    assert!(
        table(&v, "t")["chunks_compared"].as_u64().unwrap() >= 20,
        "{v:#}"
    );
    assert_eq!(table(&v, "empty_one")["rows_compared"], 0, "{v:#}");
    service
        .post("repair", json!({"name": "v", "table": "t"}))
        .await
        .fails(409, "equal");

    // Break the destination: 5 rows missing, 1 changed, 2 extra; one
    // changed in the string-keyed table.
    dest().admin(&format!(
        "USE {dest_db};
         DELETE FROM t WHERE id BETWEEN 100 AND 104;
         UPDATE t SET v = -1 WHERE id = 5000;
         INSERT INTO t VALUES (30000, 1), (30001, 1);
         UPDATE s SET n = -1 WHERE k = 'key-0042';"
    ));
    service
        .post("verify", json!({"name": "v", "tables": ["t", "s"]}))
        .await
        .ok();
    let v = verified(&service, "v", 180).await;
    assert_eq!(v["tables"].as_array().unwrap().len(), 2, "{v:#}");
    let t = table(&v, "t");
    assert_eq!(t["equal"], false, "{v:#}");
    assert_eq!(t["rows_different"], 8, "{v:#}");
    let mut found = ranges(t);
    found.sort_by_key(|(first, _, _)| first.parse::<u64>().unwrap());
    assert_eq!(
        found,
        vec![
            ("100".into(), "104".into(), 5),
            ("5000".into(), "5000".into(), 1),
            ("30000".into(), "30001".into(), 2)
        ],
        "{v:#}"
    );
    let s = table(&v, "s");
    assert_eq!(s["rows_different"], 1, "{v:#}");
    assert_eq!(ranges(s), vec![("key-0042".into(), "key-0042".into(), 1)]);
    let metrics = service.get("metrics").await.text;
    assert_eq!(
        metric(&metrics, "ccr_syncer_verify_rows_different", "v", "t"),
        Some(8.0)
    );
    assert_eq!(
        metric(&metrics, "ccr_syncer_verify_equal", "v", "t"),
        Some(0.0)
    );

    // Repair while the writes go on; then each table is equal again.
    let answer = service
        .post("repair", json!({"name": "v", "table": "t"}))
        .await
        .ok();
    assert_eq!(answer["repair"]["ranges"], 3, "{answer}");
    let v = verified(&service, "v", 120).await;
    let t = table(&v, "t");
    assert_eq!(t["equal"], true, "{v:#}");
    assert_eq!(t["rows_different"], 0, "{v:#}");
    let repair = &t["repair"];
    assert_eq!(repair["state"], "done", "{v:#}");
    assert_eq!(repair["ranges_repaired"], 3, "{v:#}");
    assert_eq!(repair["rows_deleted"], 3, "{v:#}"); // 5000, 30000, 30001
    assert_eq!(repair["rows_written"], 6, "{v:#}"); // 100..=104, 5000
    service
        .post("repair", json!({"name": "v", "table": "s"}))
        .await
        .ok();
    let v = verified(&service, "v", 120).await;
    assert_eq!(table(&v, "s")["equal"], true, "{v:#}");
    let metrics = service.get("metrics").await.text;
    assert_eq!(
        metric(&metrics, "ccr_syncer_verify_rows_different", "v", "t"),
        Some(0.0)
    );

    writer.stop();
    wait_caught_up(&service, "v", source()).await;
    assert_eq!(
        checksums(source(), &db, &["t", "s"]),
        checksums(dest(), &dest_db, &["t", "s"])
    );
    let (state, _) = job_status(&service, "v").await;
    assert_eq!(state, "running");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_killed_halfway_goes_on_where_it_stopped() {
    let db = table_t(source(), "ver_kill", 20_000);
    let dest_db = unique("ver_kill_copy");
    let dir = tempfile::tempdir().unwrap();
    // About 10 s of comparing at this rate.
    let config = "[verify]\nchunk_rows = 500\nrows_per_second = 2000\n";
    let service = Service::process(dir.path(), config).await;
    service
        .post(
            "create_ccr",
            json!({"name": "k", "src": src_endpoint(source(), &db, Some("t")),
                   "dest": dest_endpoint(dest(), &dest_db, Some("t"))}),
        )
        .await
        .ok();
    wait_for_state(&service, "k", "TableIncrementalSync").await;
    service.post("verify", json!({"name": "k"})).await.ok();
    // Killed once several chunks are compared and saved.
    poll_job(
        &service,
        "job_progress",
        "k",
        60,
        "4000 rows compared",
        |p| {
            p["verify"]["tables"][0]["rows_compared"]
                .as_u64()
                .unwrap_or(0)
                >= 4000
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    service.kill();
    let service = Service::process(dir.path(), config).await;
    let p = service
        .post("job_progress", json!({"name": "k"}))
        .await
        .ok()["job_progress"]
        .clone();
    let resumed_at = p["verify"]["tables"][0]["rows_compared"].as_u64().unwrap();
    assert!(resumed_at >= 4000, "{p:#}");
    assert_eq!(p["verify"]["state"], "running", "{p:#}");
    let v = verified(&service, "k", 120).await;
    let t = table(&v, "t");
    assert_eq!(t["equal"], true, "{v:#}");
    // Each row compared once: the chunks done before the kill are not
    // compared again.
    assert_eq!(t["rows_compared"], 20_000, "{v:#}");
    service.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_repair_refuse_bad_requests() {
    let service = Service::fresh().await;
    service
        .post("verify", json!({"name": "nope"}))
        .await
        .fails(404, "does not exist");
    service.post("verify", json!({})).await.fails(400, "name");
    service
        .post("repair", json!({"name": "nope", "table": "t"}))
        .await
        .fails(404, "does not exist");

    service.post("create_ccr", db_job("b")).await.ok();
    wait_for_state(&service, "b", "DBIncrementalSync").await;
    service
        .post("verify", json!({"name": "b", "tables": "t"}))
        .await
        .fails(400, "tables");
    service
        .post("repair", json!({"name": "b"}))
        .await
        .fails(400, "table");
    service
        .post("verify", json!({"name": "b", "tables": [""]}))
        .await
        .fails(400, "empty");
    service
        .post("verify", json!({"name": "b", "tables": ["t", "missing"]}))
        .await
        .fails(400, "no table missing");
    service
        .post("repair", json!({"name": "b", "table": "t"}))
        .await
        .fails(409, "no verification has run");
    service.post("pause", json!({"name": "b"})).await.ok();
    service
        .post("verify", json!({"name": "b"}))
        .await
        .fails(409, "resume it first");
    service.post("resume", json!({"name": "b"})).await.ok();
    service
        .post("verify", json!({"name": "b", "tables": ["t"]}))
        .await
        .ok();
    let v = verified(&service, "b", 60).await;
    assert_eq!(table(&v, "t")["equal"], true, "{v:#}");
    service
        .post("repair", json!({"name": "b", "table": "u"}))
        .await
        .fails(409, "did not compare table u");
    service.stop().await;
}
