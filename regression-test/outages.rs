//! Outages: connections cut (mid-transaction, mid-stream), a destination
//! that goes away and one that crashes are retried with backoff and lose or
//! repeat nothing; a source that stops logging rows stops the job until
//! fixed.

use crate::full_sync::{checksums, table_spec};
use crate::harness::mariadb::with_users;
use crate::harness::*;
use crate::incremental::wait_caught_up;
use serde_json::{json, Value};
use std::time::Duration;

fn endpoint_via(proxy: &Proxy, ep: Value) -> Value {
    let mut ep = ep;
    ep["port"] = json!(proxy.port);
    ep
}

/// Runs `sql` in one session of its own on `server`, on another thread
/// (the test goes on while it holds its locks); joined, it panics if the
/// SQL failed.
fn session_in_background(server: &MariaDb, sql: String) -> std::thread::JoinHandle<()> {
    let port = server.port;
    std::thread::spawn(move || {
        let out = std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-uroot",
            ])
            .args(["-e", &sql])
            .output()
            .expect("run mariadb");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

async fn status(service: &Service, name: &str) -> Value {
    service.post("job_status", json!({"name": name})).await.ok()["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_and_a_destination_crash_lose_and_repeat_nothing() {
    let mut dest_server = with_users(MariaDb::start(ServerOptions::plain()));
    let src_proxy = Proxy::start(source().port).await;
    let dest_proxy = Proxy::start(dest_server.port).await;
    let db = unique("outage");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE TABLE w (id INT AUTO_INCREMENT PRIMARY KEY, n INT, v VARCHAR(20));
         CREATE TABLE c (id INT PRIMARY KEY, n INT);
         INSERT INTO c VALUES (1, 0);"
    ));
    let dest_db = unique("outage_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "o",
                   "src": endpoint_via(&src_proxy, src_endpoint(source(), &db, None)),
                   "dest": endpoint_via(&dest_proxy, dest_endpoint(&dest_server, &dest_db, None))}),
        )
        .await
        .ok();
    wait_for_state(&service, "o", "DBIncrementalSync").await;

    // Continuous writes: transactions that insert a row and bump a counter,
    // so a lost one shows in `w` and a repeated one in `c`.
    let writer = Writer::start(&db, 20, |i| {
        format!(
            "BEGIN; INSERT INTO w (n, v) VALUES ({i}, 'x'); \
             UPDATE c SET n = n + 1 WHERE id = 1; COMMIT;"
        )
    });
    let pause = || tokio::time::sleep(Duration::from_millis(400));
    for _ in 0..4 {
        pause().await;
        src_proxy.cut();
        pause().await;
        dest_proxy.cut();
    }
    // The destination unreachable for a while: the job says it is retrying.
    dest_proxy.set_down(true);
    let s = poll_job(&service, "job_status", "o", 30, "retrying", |s| {
        s["retrying"] == true
    })
    .await;
    assert!(s["last_retry_error"].is_string(), "{s:#}");
    assert_eq!(s["state"], "running", "{s:#}");
    dest_proxy.set_down(false);
    pause().await;
    // The destination crashes under load.
    dest_server.crash_and_restart();
    pause().await;
    writer.stop();

    wait_caught_up(&service, "o", source()).await;
    for t in ["w", "c"] {
        assert_eq!(
            checksums(&dest_server, &dest_db, &[t]),
            checksums(source(), &db, &[t]),
            "table {t}"
        );
    }
    let s = status(&service, "o").await;
    assert_eq!(s["retrying"], false, "{s:#}");
    // Cuts that land while the job waits out a backoff (1 s, 2 s, …) cost
    // no new attempt: at least two retries, whatever the timing.
    assert!(s["retries"].as_u64().unwrap() >= 2, "{s:#}");
    let metrics = service.get("metrics").await.text;
    let retries: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ccr_syncer_job_retries_total{job=\"o\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(retries >= 2, "{metrics}");
    assert!(src_proxy.accepted() > 1 && dest_proxy.accepted() > 1);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_stops_logging_rows_stops_the_job_until_fixed() {
    // Its own source: the format is a global setting.
    let src = with_users(MariaDb::start(ServerOptions::source()));
    let db = table_t(&src, "fmt", 10);
    let dest_db = unique("fmt_copy");
    let service = Service::fresh().await;
    let mut spec = table_spec("f", &db, "t", dest_endpoint(dest(), &dest_db, Some("t")));
    spec["src"] = src_endpoint(&src, &db, Some("t"));
    service.post("create_ccr", spec).await.ok();
    wait_for_state(&service, "f", "TableIncrementalSync").await;
    wait_caught_up(&service, "f", &src).await;

    src.admin("SET GLOBAL binlog_format = 'STATEMENT'");
    let paused = |s: &Value| s["state"] == "paused";
    let stopped = poll_job(&service, "job_status", "f", 30, "stopped", paused).await;
    let error = stopped["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("binlog_format=STATEMENT")
            && error.contains("SET GLOBAL binlog_format='ROW'"),
        "{stopped:#}"
    );
    // Fixed, then resumed: it carries on.
    src.admin("SET GLOBAL binlog_format = 'ROW'");
    src.admin(&format!("UPDATE {db}.t SET v = 1 WHERE id = 1"));
    service.post("resume", json!({"name": "f"})).await.ok();
    wait_caught_up(&service, "f", &src).await;
    assert_eq!(
        checksums(dest(), &dest_db, &["t"]),
        checksums(&src, &db, &["t"])
    );

    // A session that kept the statement format: its transaction holds the
    // job (its rows are unknown); skipped, and repaired by hand.
    src.admin(&format!(
        "SET SESSION binlog_format = 'STATEMENT'; UPDATE {db}.t SET v = 9 WHERE id = 2"
    ));
    let held = poll_job(&service, "job_status", "f", 30, "held", paused).await;
    let t = &held["failed_transaction"];
    assert!(
        t["statement"]
            .as_str()
            .is_some_and(|s| s.contains("SET v = 9")),
        "{held:#}"
    );
    service
        .post(
            "job_skip_binlog",
            json!({"name": "f", "skip_by": "silence", "skip_commit_seq": held["failed_commit_seq"]}),
        )
        .await
        .ok();
    src.admin(&format!("UPDATE {db}.t SET v = 3 WHERE id = 3"));
    wait_caught_up(&service, "f", &src).await;
    dest().admin(&format!("UPDATE {dest_db}.t SET v = 9 WHERE id = 2"));
    assert_eq!(
        checksums(dest(), &dest_db, &["t"]),
        checksums(&src, &db, &["t"])
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_on_the_destination_is_waited_out_and_retried() {
    // Its own destination, where lock waits time out after 1 s.
    let mut options = ServerOptions::plain();
    options.extra.push("--innodb-lock-wait-timeout=1");
    let dest_server = with_users(MariaDb::start(options));
    let db = table_t(source(), "locks", 10);
    let dest_db = unique("locks_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            table_spec(
                "l",
                &db,
                "t",
                dest_endpoint(&dest_server, &dest_db, Some("t")),
            ),
        )
        .await
        .ok();
    wait_for_state(&service, "l", "TableIncrementalSync").await;
    wait_caught_up(&service, "l", source()).await;

    // Someone on the destination holds row 1 for 4 s.
    let holder = session_in_background(
        &dest_server,
        format!("BEGIN; SELECT v FROM {dest_db}.t WHERE id = 1 FOR UPDATE; DO SLEEP(4); COMMIT;"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    source().admin(&format!("UPDATE {db}.t SET v = 1 WHERE id = 1"));
    source().admin(&format!("UPDATE {db}.t SET v = 2 WHERE id = 2"));
    let s = poll_job(
        &service,
        "job_status",
        "l",
        30,
        "a lock wait retried",
        |s| {
            s["last_retry_error"]
                .as_str()
                .is_some_and(|e| e.contains("Lock wait timeout"))
        },
    )
    .await;
    assert_eq!(s["state"], "running", "{s:#}");
    holder.join().unwrap();
    wait_caught_up(&service, "l", source()).await;
    assert_eq!(
        checksums(&dest_server, &dest_db, &["t"]),
        checksums(source(), &db, &["t"])
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_on_the_destination_is_retried() {
    let db = table_t(source(), "deadlock", 3000);
    let dest_db = unique("deadlock_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            table_spec("dl", &db, "t", dest_endpoint(dest(), &dest_db, Some("t"))),
        )
        .await
        .ok();
    wait_for_state(&service, "dl", "TableIncrementalSync").await;
    wait_caught_up(&service, "dl", source()).await;

    // A heavy transaction on the destination (so InnoDB picks the job's as
    // the victim) takes row 2, waits, then wants row 1 — which the job's
    // transaction, waiting for row 2, holds. It rolls back in the end.
    let holder = session_in_background(
        dest(),
        format!(
            "BEGIN; UPDATE {dest_db}.t SET v = v + 1 WHERE id > 10;
             UPDATE {dest_db}.t SET v = 9 WHERE id = 2; DO SLEEP(2);
             UPDATE {dest_db}.t SET v = 9 WHERE id = 1; ROLLBACK;"
        ),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    source().admin(&format!(
        "BEGIN; UPDATE {db}.t SET v = 1 WHERE id = 1; UPDATE {db}.t SET v = 1 WHERE id = 2; COMMIT;"
    ));
    holder.join().unwrap();
    wait_caught_up(&service, "dl", source()).await;
    let s = status(&service, "dl").await;
    assert!(
        s["last_retry_error"]
            .as_str()
            .is_some_and(|e| e.contains("Deadlock")),
        "{s:#}"
    );
    assert_eq!(
        checksums(dest(), &dest_db, &["t"]),
        checksums(source(), &db, &["t"])
    );
    service.stop().await;
}
