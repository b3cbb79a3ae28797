//! Recovery: a transaction the destination refuses holds the job; an
//! operator skips exactly that one, resyncs, or detaches the destination.

use crate::full_sync::{checksums, table_spec};
use crate::harness::mariadb::with_users;
use crate::harness::*;
use crate::incremental::{source_seq, wait_caught_up};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn wait_paused(service: &Service, name: &str) -> Value {
    poll_job(service, "job_status", name, 60, "paused", |s| {
        s["state"] == "paused"
    })
    .await
}

/// A table job on `t (id PRIMARY KEY, v)` with rows 1..=10, caught up.
async fn caught_up_job(service: &Service, name: &str) -> (String, String) {
    let db = table_t(source(), "rec", 10);
    let dest_db = unique("rec_copy");
    service
        .post(
            "create_ccr",
            table_spec(name, &db, "t", dest_endpoint(dest(), &dest_db, Some("t"))),
        )
        .await
        .ok();
    wait_for_state(service, name, "TableIncrementalSync").await;
    wait_caught_up(service, name, source()).await;
    (db, dest_db)
}

/// A row only the destination has, then the source inserts the same key
/// between two other transactions: the job holds on exactly that one.
async fn refused_insert(service: &Service, name: &str, db: &str, dest_db: &str) -> (u64, String) {
    dest().admin(&format!("INSERT INTO {dest_db}.t VALUES (1000, 99)"));
    service.post("pause", json!({"name": name})).await.ok();
    source().admin(&format!("UPDATE {db}.t SET v = 1 WHERE id = 1"));
    // Its own GTID (other tests write to the shared source meanwhile).
    let gtid = source().admin(&format!(
        "INSERT INTO {db}.t VALUES (1000, 7); SELECT @@last_gtid"
    ));
    let seq: u64 = gtid.trim().rsplit('-').next().unwrap().parse().unwrap();
    source().admin(&format!("UPDATE {db}.t SET v = 3 WHERE id = 3"));
    service.post("resume", json!({"name": name})).await.ok();
    (seq, gtid.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_holds_the_job_until_skipped() {
    let service = Service::fresh().await;
    let (db, dest_db) = caught_up_job(&service, "skip").await;
    let (seq, gtid) = refused_insert(&service, "skip", &db, &dest_db).await;

    // Held on the refused transaction, never skipped by itself.
    let status = wait_paused(&service, "skip").await;
    assert_eq!(status["failed_commit_seq"], seq, "{status:#}");
    assert_eq!(status["last_error_code"], "refused", "{status:#}");
    let held = &status["failed_transaction"];
    assert_eq!(held["gtid"], gtid.as_str(), "{status:#}");
    assert_eq!(held["commit_seq"], seq);
    assert!(
        held["statement"]
            .as_str()
            .is_some_and(|s| s.starts_with("INSERT") && s.contains("1000")),
        "{status:#}"
    );
    assert!(
        held["error"]
            .as_str()
            .is_some_and(|e| e.contains("Duplicate entry")),
        "{status:#}"
    );
    assert!(status["last_error"]
        .as_str()
        .is_some_and(|e| e.contains(&format!("commit seq {seq}"))));
    let progress = service
        .post("job_progress", json!({"name": "skip"}))
        .await
        .ok();
    assert_eq!(progress["job_progress"]["failed_commit_seq"], seq);
    assert!(progress["job_progress"]["commit_seq"].as_u64().unwrap() < seq);
    // The destination kept its own row; nothing after it was applied.
    assert_eq!(
        dest().admin(&format!(
            "SELECT v FROM {dest_db}.t WHERE id IN (3, 1000) ORDER BY id"
        )),
        "0\n99"
    );

    // Only the held transaction can be skipped.
    service
        .post(
            "job_skip_binlog",
            json!({"name": "skip", "skip_by": "silence", "skip_commit_seq": seq + 1}),
        )
        .await
        .fails(409, &format!("held on commit seq {seq}, not {}", seq + 1));
    assert_eq!(job_status(&service, "skip").await.0, "paused");

    service
        .post(
            "job_skip_binlog",
            json!({"name": "skip", "skip_by": "silence", "skip_commit_seq": seq}),
        )
        .await
        .ok();
    source().admin(&format!("INSERT INTO {db}.t VALUES (11, 11)"));
    wait_caught_up(&service, "skip", source()).await;
    // Everything but the skipped transaction is there.
    assert_eq!(
        dest().admin(&format!("SELECT id, v FROM {dest_db}.t ORDER BY id")),
        source()
            .admin(&format!("SELECT id, v FROM {db}.t ORDER BY id"))
            .replace("1000\t7", "1000\t99")
    );
    let p = service
        .post("job_progress", json!({"name": "skip"}))
        .await
        .ok();
    let p = &p["job_progress"];
    assert_eq!(p["state"], "running", "{p:#}");
    assert_eq!(p["failed_commit_seq"], Value::Null, "{p:#}");
    assert_eq!(p["incremental"]["transactions_skipped"], 1, "{p:#}");
    assert_eq!(p["incremental"]["last_skipped"], gtid.as_str(), "{p:#}");

    // Once past it, nothing is left to skip.
    poll_job(
        &service,
        "job_progress",
        "skip",
        10,
        "the skip cleared",
        |p| p["skip"].is_null(),
    )
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transaction_resolved_by_a_full_sync_or_by_fixing_the_destination() {
    let service = Service::fresh().await;
    let (db, dest_db) = caught_up_job(&service, "refix").await;
    let (seq, _) = refused_insert(&service, "refix", &db, &dest_db).await;
    wait_paused(&service, "refix").await;

    // Fixed on the destination, then resumed: the same transaction applies.
    dest().admin(&format!("DELETE FROM {dest_db}.t WHERE id = 1000"));
    service.post("resume", json!({"name": "refix"})).await.ok();
    wait_caught_up(&service, "refix", source()).await;
    assert_eq!(
        checksums(dest(), &dest_db, &["t"]),
        checksums(source(), &db, &["t"])
    );

    // Held again, then resolved by a full sync.
    dest().admin(&format!("INSERT INTO {dest_db}.t VALUES (2000, 99)"));
    source().admin(&format!("INSERT INTO {db}.t VALUES (2000, 8)"));
    let held = wait_paused(&service, "refix").await;
    assert!(
        held["failed_commit_seq"].as_u64().unwrap() > seq,
        "{held:#}"
    );
    service
        .post(
            "job_skip_binlog",
            json!({"name": "refix", "skip_by": "fullsync"}),
        )
        .await
        .ok();
    service.post("resume", json!({"name": "refix"})).await.ok();
    wait_for_state(&service, "refix", "TableIncrementalSync").await;
    source().admin(&format!("UPDATE {db}.t SET v = v + 1"));
    wait_caught_up(&service, "refix", source()).await;
    assert_eq!(
        checksums(dest(), &dest_db, &["t"]),
        checksums(source(), &db, &["t"])
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desync_detaches_the_destination() {
    let service = Service::fresh().await;
    let (db, dest_db) = caught_up_job(&service, "detach").await;
    service.post("desync", json!({"name": "detach"})).await.ok();
    assert_eq!(job_status(&service, "detach").await.0, "desynced");
    let seq = source_seq(source());
    source().admin(&format!("UPDATE {db}.t SET v = 5 WHERE id = 5"));
    // The destination is the operator's: writable, and not written to.
    dest().admin(&format!("UPDATE {dest_db}.t SET v = 6 WHERE id = 6"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        dest().admin(&format!(
            "SELECT v FROM {dest_db}.t WHERE id IN (5, 6) ORDER BY id"
        )),
        "0\n6"
    );
    let lag = service
        .post("get_lag", json!({"name": "detach"}))
        .await
        .ok();
    assert!(
        lag["first_commit_seq"].as_u64().unwrap_or(0) <= seq,
        "{lag:#}"
    );
    service
        .post("resume", json!({"name": "detach"}))
        .await
        .fails(409, "desynced");
    service.stop().await;
}

/// The job's `ccr_syncer_binlog_retention_headroom_bytes`, once shown.
async fn headroom(service: &Service, name: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let prefix = format!("ccr_syncer_binlog_retention_headroom_bytes{{job=\"{name}\"}} ");
    loop {
        let text = service.get("metrics").await.text;
        if let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .filter(|v| *v > 0)
        {
            return v;
        }
        assert!(Instant::now() < deadline, "no headroom for {name}:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binlog_resyncs_by_default_or_stops_when_asked() {
    // Its own source: purging binlogs must not touch other tests' jobs.
    let src = with_users(MariaDb::start(ServerOptions::source()));
    let db = table_t(&src, "purge", 100);
    let service = Service::fresh().await;
    let jobs = [("purge_resync", None), ("purge_stop", Some("stop"))];
    let mut copies = Vec::new();
    for (name, on) in jobs {
        let dest_db = unique(name);
        let mut spec = json!({"name": name, "src": src_endpoint(&src, &db, Some("t")),
                              "dest": dest_endpoint(dest(), &dest_db, Some("t"))});
        if let Some(on) = on {
            spec["on_binlog_purged"] = json!(on);
        }
        service.post("create_ccr", spec).await.ok();
        copies.push(dest_db);
    }
    for (name, _) in jobs {
        wait_for_state(&service, name, "TableIncrementalSync").await;
        wait_caught_up(&service, name, &src).await;
    }
    let before = headroom(&service, "purge_resync").await;
    // Written at least 2 s after the source's (only) binlog was started.
    tokio::time::sleep(Duration::from_secs(2)).await;
    src.admin(&format!("UPDATE {db}.t SET v = 1 WHERE id <= 10"));
    wait_caught_up(&service, "purge_resync", &src).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = service.get("metrics").await.text;
        let secs: Option<i64> = text.lines().find_map(|l| {
            l.strip_prefix("ccr_syncer_binlog_retention_headroom_seconds{job=\"purge_resync\"} ")
                .and_then(|v| v.trim().parse().ok())
        });
        if let Some(secs) = secs.filter(|s| *s >= 1) {
            assert!(secs < 600, "{secs}");
            break;
        }
        assert!(Instant::now() < deadline, "no headroom in seconds:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The position moved on in the same binlog: more could be purged first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while headroom(&service, "purge_resync").await <= before {
        assert!(
            Instant::now() < deadline,
            "headroom did not grow from {before}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    for (name, _) in jobs {
        service.post("pause", json!({"name": name})).await.ok();
    }
    // Paused jobs read no more binlog.
    let deadline = Instant::now() + Duration::from_secs(20);
    while src.admin(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
    ) != "0"
    {
        assert!(
            Instant::now() < deadline,
            "the paused jobs still read the binlog"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    src.admin(&format!(
        "UPDATE {db}.t SET v = 2 WHERE id > 50; FLUSH BINARY LOGS;
         INSERT INTO {db}.t VALUES (101, 2); FLUSH BINARY LOGS;"
    ));
    let newest = src.admin("SHOW MASTER STATUS");
    let newest = newest.split('\t').next().unwrap().to_string();
    // The server keeps a binlog until its commits are durable in InnoDB
    // (binlog checkpoint): purge until only the newest is left.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        src.admin(&format!("PURGE BINARY LOGS TO '{newest}'"));
        if src.admin("SHOW BINARY LOGS").lines().count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the source kept its old binlogs");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (name, _) in jobs {
        service.post("resume", json!({"name": name})).await.ok();
    }

    // By default: a new full sync, which says why.
    poll_job(
        &service,
        "job_progress",
        "purge_resync",
        60,
        "a resync",
        |p| {
            p["full_sync_reason"]
                .as_str()
                .is_some_and(|r| r.contains("no longer has the binlog"))
        },
    )
    .await;
    wait_for_state(&service, "purge_resync", "TableIncrementalSync").await;
    src.admin(&format!("UPDATE {db}.t SET v = 3 WHERE id = 1"));
    wait_caught_up(&service, "purge_resync", &src).await;
    assert_eq!(
        checksums(dest(), &copies[0], &["t"]),
        checksums(&src, &db, &["t"])
    );

    // Asked to stop: stopped, saying what to do.
    let status = wait_paused(&service, "purge_stop").await;
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no longer has the binlog") && error.contains("force_fullsync"),
        "{status:#}"
    );
    assert_eq!(status["progress_state"], "TableIncrementalSync");
    service
        .post("force_fullsync", json!({"name": "purge_stop"}))
        .await
        .ok();
    service
        .post("resume", json!({"name": "purge_stop"}))
        .await
        .ok();
    wait_for_state(&service, "purge_stop", "TableIncrementalSync").await;
    wait_caught_up(&service, "purge_stop", &src).await;
    assert_eq!(
        checksums(dest(), &copies[1], &["t"]),
        checksums(&src, &db, &["t"])
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_table_is_copied_again_while_the_rest_flows() {
    let db = unique("partial");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE TABLE a (id INT PRIMARY KEY, v INT);
         CREATE TABLE b (id INT PRIMARY KEY, v INT);
         CREATE TABLE c (id INT PRIMARY KEY, v INT, w INT);
         INSERT INTO a SELECT seq, 0 FROM seq_1_to_2000;
         INSERT INTO b SELECT seq, 0 FROM seq_1_to_20000;
         INSERT INTO c SELECT seq, 0, 0 FROM seq_1_to_100;"
    ));
    let dest_db = unique("partial_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "p", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "p", "DBIncrementalSync").await;

    // Bad requests change nothing.
    service
        .post("partial_sync", json!({"name": "p", "table": "nope"}))
        .await
        .fails(400, &format!("has no table {db}.nope"));
    service
        .post("partial_sync", json!({"name": "p", "table": ""}))
        .await
        .fails(400, "table is empty");
    service
        .post("partial_sync", json!({"name": "nobody", "table": "b"}))
        .await
        .fails(404, "does not exist");
    assert_eq!(job_status(&service, "p").await.1, "DBIncrementalSync");

    // Table b drifts on the destination; writes go on to a and b.
    dest().admin(&format!(
        "DELETE FROM {dest_db}.b WHERE id > 19000; UPDATE {dest_db}.b SET v = -1 WHERE id = 5"
    ));
    let writer = Writer::start(&db, 10, |i| {
        let id = i % 2000 + 1;
        format!(
            "BEGIN; UPDATE a SET v = v + 1 WHERE id = {id}; \
             UPDATE b SET v = v + 1 WHERE id = {id}; COMMIT;"
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    service
        .post("partial_sync", json!({"name": "p", "table": "b"}))
        .await
        .ok();
    let p = service
        .post("job_progress", json!({"name": "p"}))
        .await
        .ok();
    assert_eq!(p["job_progress"]["partial"]["table"], "b", "{p:#}");
    wait_partial_done(&service, "p").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.stop();
    wait_caught_up(&service, "p", source()).await;
    let copies_equal = || {
        for t in ["a", "b", "c"] {
            assert_eq!(
                checksums(dest(), &dest_db, &[t]),
                checksums(source(), &db, &[t]),
                "table {t}"
            );
        }
    };
    copies_equal();

    // A row event that does not fit the destination table: the job copies
    // that table again by itself.
    dest().admin(&format!("ALTER TABLE {dest_db}.c DROP COLUMN w"));
    source().admin(&format!(
        "UPDATE {db}.c SET w = 5 WHERE id <= 3; UPDATE {db}.a SET v = 7 WHERE id = 1"
    ));
    poll_job(
        &service,
        "job_progress",
        "p",
        60,
        "a partial sync of c",
        |p| {
            p["partial"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("does not fit"))
                || p["incremental"]["partial_done"][0]["table"] == "c"
        },
    )
    .await;
    wait_partial_done(&service, "p").await;
    let p = service
        .post("job_progress", json!({"name": "p"}))
        .await
        .ok();
    let done = &p["job_progress"]["incremental"]["partial_done"];
    assert_eq!(done[0]["table"], "c", "{p:#}");
    assert!(
        done[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not fit")),
        "{p:#}"
    );
    wait_caught_up(&service, "p", source()).await;
    copies_equal();
    service.stop().await;
}

/// Waits until no partial sync is under way and the job is back in
/// incremental sync.
async fn wait_partial_done(service: &Service, name: &str) {
    poll_job(
        service,
        "job_progress",
        name,
        90,
        "the partial sync done",
        |p| {
            assert!(p["state"] != "paused", "stopped: {p:#}");
            let state = p["progress_state"].as_str().unwrap_or("");
            p["partial"].is_null() && state.ends_with("IncrementalSync")
        },
    )
    .await;
}
