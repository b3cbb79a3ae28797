//! Cooperative shutdown: stopping a job's work closes its connections — the
//! replica connection included, so a restarted stream is never refused with
//! 4052 ("a slave with the same server_id is already connected") —, a delete
//! while the work is finishing returns at once and leaves nothing running,
//! and the service stops with its store unreachable.

use crate::harness::mariadb::with_users;
use crate::harness::*;
use crate::incremental::wait_caught_up;
use crate::restart::mysql_store_config;
use ccr_syncer::config::StoreConfig;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The binlog dump threads `server` serves (one per replica connection).
fn dump_threads(server: &MariaDb) -> u64 {
    server
        .admin(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE COMMAND LIKE 'Binlog Dump%'",
        )
        .trim()
        .parse()
        .unwrap()
}

/// Waits (up to `millis`) until `server` serves no replica connection.
async fn no_dump_threads(server: &MariaDb, millis: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_millis(millis);
    while dump_threads(server) > 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: the source still serves a replica connection after {millis} ms"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn incremental(service: &Service, name: &str) -> Value {
    service
        .post("job_progress", json!({"name": name}))
        .await
        .ok()["job_progress"]["incremental"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_job_closes_its_replica_connection() {
    // A source of its own: its replica connections are this test's only.
    let src = with_users(MariaDb::start(ServerOptions::source()));
    let db = table_t(&src, "stop", 100);
    let dest_db = unique("stop_copy");
    let service = Service::fresh().await;
    let name = "stop_restart";
    service
        .post(
            "create_ccr",
            json!({"name": name, "src": src_endpoint(&src, &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, name, "DBIncrementalSync").await;
    wait_caught_up(&service, name, &src).await;

    // Paused, resumed at once, again and again: the stream starts on a
    // fresh replica connection each time and is never refused.
    for round in 1..=5 {
        service.post("pause", json!({"name": name})).await.ok();
        // Pausing returned once the work stopped: its replica connection
        // and its thread on the source are gone (not left to time out).
        no_dump_threads(&src, 500, &format!("round {round}, paused")).await;
        service.post("resume", json!({"name": name})).await.ok();
        src.admin(&format!("UPDATE {db}.t SET v = {round} WHERE id = {round}"));
        wait_caught_up(&service, name, &src).await;
    }
    let inc = incremental(&service, name).await;
    assert_eq!(inc["retries"], 0, "a restarted stream was retried: {inc:#}");
    assert!(
        !inc["last_retry_error"]
            .as_str()
            .unwrap_or_default()
            .contains("4052"),
        "{inc:#}"
    );
    let copied: u64 = dest()
        .admin(&format!("SELECT SUM(v) FROM {dest_db}.t"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(copied, 1 + 2 + 3 + 4 + 5);

    // Deleted while its work is finishing (a full sync copying, then
    // handing over): the delete returns at once and nothing keeps running.
    src.admin(&format!(
        "USE {db}; CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(200));
         INSERT INTO big SELECT seq, REPEAT('x', 200) FROM seq_1_to_50000;"
    ));
    let second = "stop_delete";
    let dest2 = unique("stop_copy2");
    service
        .post(
            "create_ccr",
            json!({"name": second, "src": src_endpoint(&src, &db, None),
                   "dest": dest_endpoint(dest(), &dest2, None)}),
        )
        .await
        .ok();
    // Somewhere in its work: as soon as its full sync has started.
    poll_job(&service, "job_progress", second, 60, "the full sync", |p| {
        !p["full_sync"].is_null()
    })
    .await;
    let started = Instant::now();
    service.post("delete", json!({"name": second})).await.ok();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "delete took {:?}",
        started.elapsed()
    );
    service
        .post("job_status", json!({"name": second}))
        .await
        .fails(404, second);
    // The first job's stream is the only one left.
    let deadline = Instant::now() + Duration::from_secs(5);
    while dump_threads(&src) > 1 {
        assert!(
            Instant::now() < deadline,
            "the deleted job's stream still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing of the deleted job writes any more.
    let state = || {
        dest().admin(&format!(
            "SELECT COUNT(*), COALESCE(SUM(TABLE_NAME = 't'), 0) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = '{dest2}'"
        ))
    };
    let rows = || {
        if state().split_whitespace().nth(1) == Some("1") {
            dest().admin(&format!("SELECT COUNT(*) FROM {dest2}.t"))
        } else {
            String::new()
        }
    };
    let (tables_before, rows_before) = (state(), rows());
    src.admin(&format!("INSERT INTO {db}.t VALUES (1000, 1)"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state(), tables_before, "a deleted job created a table");
    assert_eq!(rows(), rows_before, "a deleted job applied a change");
    service.stop().await;
    no_dump_threads(&src, 2000, "service stopped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_stops_with_its_store_unreachable() {
    let proxy = Proxy::start(dest().port).await;
    let mut config = mysql_store_config();
    if let StoreConfig::Mysql { port, .. } = &mut config.store {
        *port = proxy.port;
    }
    let service = Service::start(config).await;
    let name = "stop_store_down";
    let db = source_database();
    service
        .post(
            "create_ccr",
            json!({"name": name, "src": src_endpoint(source(), &db, Some("t")),
                   "dest": dest_endpoint(dest(), &unique("stop_dst"), Some("t"))}),
        )
        .await
        .ok();
    wait_for_state(&service, name, "TableIncrementalSync").await;
    // The store goes away: new connections refused, open ones cut.
    proxy.set_down(true);
    proxy.cut();
    // Work that wants to save now fails to; shutdown must not wait on it.
    source().admin(&format!("INSERT INTO {db}.t VALUES (3, 'c')"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    service.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopping took {:?} with the store unreachable",
        started.elapsed()
    );
}
