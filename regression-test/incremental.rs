//! Incremental sync, end to end: after the full sync every change on the
//! source reaches the destination exactly once — every type, DDL mid-stream,
//! binlog rotation, kills and restarts.

use crate::full_sync::{assert_same_table, checksums, table_spec, types_rows, TYPES_TABLE};
use crate::harness::mariadb;
use crate::harness::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The source's newest commit seq (its one GTID domain's seq_no).
pub(crate) fn source_seq(server: &MariaDb) -> u64 {
    let pos = server.admin("SELECT @@gtid_binlog_pos");
    pos.rsplit('-')
        .next()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Waits until the job has applied everything the source had committed
/// when called; returns its `get_lag`.
pub(crate) async fn wait_caught_up(service: &Service, name: &str, server: &MariaDb) -> Value {
    let target = source_seq(server);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let lag = service.post("get_lag", json!({"name": name})).await.ok();
        if lag["first_commit_seq"].as_u64().unwrap_or(0) >= target {
            return lag;
        }
        let progress = service
            .post("job_progress", json!({"name": name}))
            .await
            .ok();
        let p = &progress["job_progress"];
        assert!(
            p["state"] != "paused",
            "job {name} stopped before catching up to {target}: {p:#}"
        );
        assert!(
            Instant::now() < deadline,
            "job {name} did not reach commit seq {target}: {lag:#} {p:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_inserted_updated_deleted() {
    let db = unique("inc_types");
    source().admin(&format!("CREATE DATABASE {db}; USE {db}; {TYPES_TABLE}"));
    let dest_db = unique("inc_types_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            table_spec(
                "t",
                &db,
                "types",
                dest_endpoint(dest(), &dest_db, Some("types2")),
            ),
        )
        .await
        .ok();
    wait_for_state(&service, "t", "TableIncrementalSync").await;
    source().admin(&types_rows(&db));
    wait_caught_up(&service, "t", source()).await;
    assert_same_table(&db, "types", dest(), &dest_db, "types2", "id");
    // Updates that move every column, including the key, and deletes.
    source().admin(&format!(
        "SET NAMES utf8mb4; USE {db};
         UPDATE types SET id = id + 10, ti = ti DIV 2, biu = 18446744073709551614, f = f / 3,
             dbl = dbl / 7, tm = '-00:00:00.5', ts = '2001-02-03 04:05:06.789', yr = 0,
             vc = CONCAT(vc, '✓'), bl = UNHEX('00FF'), e = 'b', st = 'x,z', b64 = b'10'
             WHERE id IN (1, 3, 5);
         UPDATE types SET j = '{{\"k\": [true, false]}}', d = -0.5 WHERE id = 2;
         DELETE FROM types WHERE id = 4;
         INSERT INTO types (id, vc) VALUES (100, 'after');"
    ));
    wait_caught_up(&service, "t", source()).await;
    assert_same_table(&db, "types", dest(), &dest_db, "types2", "id");
    let progress = service
        .post("job_progress", json!({"name": "t"}))
        .await
        .ok();
    let inc = &progress["job_progress"]["incremental"];
    assert!(inc["rows_applied"].as_u64().unwrap() >= 10, "{progress:#}");
    // The coordinate is a real binlog file of the source.
    let file = inc["binlog_file"].as_str().unwrap().to_string();
    let logs = source().admin("SHOW BINARY LOGS");
    assert!(
        logs.lines()
            .any(|l| l.split('\t').next() == Some(file.as_str())),
        "binlog_file {file:?} is not one of the source's binlogs:\n{logs}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_mid_stream_and_rotation() {
    let db = unique("inc_ddl");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO a VALUES (1, 'one'), (2, 'two');"
    ));
    let dest_db = unique("inc_ddl_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "d", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "d", "DBIncrementalSync").await;
    source().admin(&format!(
        "USE {db};
         INSERT INTO a VALUES (3, 'three');
         ALTER TABLE a ADD COLUMN n INT NOT NULL DEFAULT 7;
         INSERT INTO a VALUES (4, 'four', 4);
         UPDATE a SET n = n + 1 WHERE id <= 2;
         ALTER TABLE a DROP COLUMN v;
         INSERT INTO a VALUES (5, 5);
         ALTER TABLE a MODIFY COLUMN n BIGINT UNSIGNED NOT NULL;
         UPDATE a SET n = 18446744073709551615 WHERE id = 5;
         FLUSH BINARY LOGS;
         CREATE INDEX by_n ON a (n);
         CREATE TABLE b (x INT, y TEXT);
         INSERT INTO b VALUES (1, 'no key'), (1, 'no key'), (2, NULL);
         DELETE FROM b WHERE x = 1 LIMIT 1;
         UPDATE b SET y = 'changed' WHERE x = 2;
         RENAME TABLE a TO a2;
         INSERT INTO a2 VALUES (6, 6);
         CREATE TABLE c (id INT PRIMARY KEY);
         INSERT INTO c VALUES (1), (2);
         TRUNCATE TABLE c;
         INSERT INTO c VALUES (3);
         DROP TABLE c;
         CREATE TABLE c (id INT PRIMARY KEY, w VARCHAR(5));
         INSERT INTO c VALUES (9, 'again');
         FLUSH BINARY LOGS;
         CREATE VIEW v AS SELECT id FROM a2 WHERE n > 5;"
    ));
    wait_caught_up(&service, "d", source()).await;
    for (t, order) in [("a2", "id"), ("b", "x, y"), ("c", "id")] {
        assert_same_table(&db, t, dest(), &dest_db, t, order);
    }
    assert_eq!(
        dest().admin(&format!("SELECT COUNT(*) FROM {dest_db}.v")),
        source().admin(&format!("SELECT COUNT(*) FROM {db}.v"))
    );
    let show = |s: &MariaDb, d: &str| s.admin(&format!("SHOW CREATE TABLE {d}.a2")).replace(d, "");
    assert_eq!(show(source(), &db), show(dest(), &dest_db));
    assert!(dest()
        .admin(&format!("SHOW TABLES FROM {dest_db} LIKE 'a'"))
        .is_empty());
    // job_progress follows the applier's reports (every 250 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let progress = service
            .post("job_progress", json!({"name": "d"}))
            .await
            .ok();
        let ddl = progress["job_progress"]["incremental"]["ddl_applied"]
            .as_u64()
            .unwrap();
        if ddl >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "{ddl} DDL applied: {progress:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_match_after_sysbench_like_load() {
    let db = unique("inc_load");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE TABLE s (id INT AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL, c CHAR(120), pad CHAR(60), KEY (k));
         INSERT INTO s (k, c, pad) SELECT seq % 1000, REPEAT('c', 100), 'p' FROM seq_1_to_5000;"
    ));
    let dest_db = unique("inc_load_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            table_spec("l", &db, "s", dest_endpoint(dest(), &dest_db, Some("s"))),
        )
        .await
        .ok();
    wait_for_state(&service, "l", "TableIncrementalSync").await;
    let mut sql = format!("USE {db};");
    for i in 0..300 {
        let id = i * 13 % 5000 + 1;
        sql.push_str(&format!(
            "BEGIN; UPDATE s SET k = k + 1 WHERE id = {id}; UPDATE s SET c = 'x{i}' WHERE id = {};
             DELETE FROM s WHERE id = {}; INSERT INTO s (id, k, c, pad) VALUES ({}, {i}, 'new', 'p') ON DUPLICATE KEY UPDATE k = k; COMMIT;",
            id + 1, id + 2, id + 2
        ));
    }
    source().admin(&sql);
    wait_caught_up(&service, "l", source()).await;
    assert_eq!(
        checksums(source(), &db, &["s"]),
        checksums(dest(), &dest_db, &["s"])
    );
    service.stop().await;
}

/// Writes small transactions to `db` on `server` until stopped; returns
/// how many it committed.
fn start_writer(
    server: &'static MariaDb,
    db: String,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut i = 0u64;
        while !flag.load(Ordering::Relaxed) {
            let mut sql = format!("USE {db};");
            for _ in 0..20 {
                i += 1;
                sql.push_str(&format!(
                    "BEGIN; INSERT INTO w (n, v) VALUES ({i}, 'x{i}'), ({i}, 'y{i}');
                     UPDATE c SET n = n + 1 WHERE id = {};
                     DELETE FROM w WHERE id = {}; COMMIT;",
                    1 + i % 2,
                    i / 2
                ));
            }
            server.admin(&sql);
        }
        i
    });
    (stop, handle)
}

const WRITER_TABLES: &str =
    "CREATE TABLE w (id INT AUTO_INCREMENT PRIMARY KEY, n INT, v VARCHAR(30));
     CREATE TABLE c (id INT PRIMARY KEY, n BIGINT);
     INSERT INTO c VALUES (1, 0), (2, 0);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_under_writes_and_between_apply_and_checkpoint() {
    let db = unique("inc_kill");
    source().admin(&format!("CREATE DATABASE {db}; USE {db}; {WRITER_TABLES}"));
    let dest_db = unique("inc_kill_copy");
    let (stop, writer) = start_writer(source(), db.clone());
    let dir = tempfile::tempdir().unwrap();
    // First run: the failpoint aborts the process after its 5th batch's
    // statements ran, before their checkpoint and COMMIT.
    let mut service = Service::process_with_env(
        dir.path(),
        "",
        &[("CCR_SYNCER_FAILPOINT", "before_checkpoint:5")],
    )
    .await;
    service
        .post(
            "create_ccr",
            json!({"name": "k", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    assert!(
        service.wait_exit(Duration::from_secs(120)).await,
        "the failpoint did not stop the process"
    );
    // Second run: killed with SIGKILL while applying.
    let service = Service::process(dir.path(), "").await;
    let seen = source_seq(source());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lag = service.post("get_lag", json!({"name": "k"})).await.ok();
        if lag["first_commit_seq"].as_u64().unwrap_or(0) > seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress after the failpoint: {lag}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    service.kill();
    // Third run: catches up; the destination equals the source.
    let service = Service::process(dir.path(), "").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(
        written > 100,
        "the writer wrote only {written} transactions"
    );
    wait_caught_up(&service, "k", source()).await;
    for t in ["w", "c"] {
        assert_eq!(
            checksums(source(), &db, &[t]),
            checksums(dest(), &dest_db, &[t]),
            "table {t}"
        );
    }
    service.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_restart_and_pause_resume_under_load() {
    let mut src = mariadb::with_users(MariaDb::start(ServerOptions::source()));
    let db = unique("inc_restart");
    src.admin(&format!("CREATE DATABASE {db}; USE {db}; {WRITER_TABLES}"));
    let dest_db = unique("inc_restart_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "r", "src": src_endpoint(&src, &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "r", "DBIncrementalSync").await;
    let write = |s: &MariaDb, from: u64| {
        let mut sql = format!("USE {db};");
        for i in from..from + 200 {
            sql.push_str(&format!(
                "INSERT INTO w (n, v) VALUES ({i}, 'r'); UPDATE c SET n = n + 1 WHERE id = 1;"
            ));
        }
        s.admin(&sql);
    };
    write(&src, 0);
    wait_caught_up(&service, "r", &src).await;
    // Paused, the job applies nothing; resumed, it catches up.
    service.post("pause", json!({"name": "r"})).await.ok();
    let held = dest().admin(&format!("SELECT COUNT(*) FROM {dest_db}.w"));
    write(&src, 1000);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        dest().admin(&format!("SELECT COUNT(*) FROM {dest_db}.w")),
        held
    );
    service.post("resume", json!({"name": "r"})).await.ok();
    wait_caught_up(&service, "r", &src).await;
    // The source restarts (crash): the job reconnects at its position.
    src.crash_and_restart();
    write(&src, 2000);
    wait_caught_up(&service, "r", &src).await;
    for t in ["w", "c"] {
        assert_eq!(
            checksums(&src, &db, &[t]),
            checksums(dest(), &dest_db, &[t]),
            "table {t}"
        );
    }
    let progress = service
        .post("job_progress", json!({"name": "r"}))
        .await
        .ok();
    assert!(
        progress["job_progress"]["incremental"]["retries"]
            .as_u64()
            .unwrap()
            >= 1,
        "{progress:#}"
    );
    service.stop().await;
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_transaction_with_bounded_memory() {
    let db = unique("inc_huge");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db}; CREATE TABLE h (id INT PRIMARY KEY, v CHAR(100));"
    ));
    let dest_db = unique("inc_huge_copy");
    let dir = tempfile::tempdir().unwrap();
    let service = Service::process(dir.path(), "").await;
    service
        .post(
            "create_ccr",
            table_spec("h", &db, "h", dest_endpoint(dest(), &dest_db, Some("h"))),
        )
        .await
        .ok();
    wait_for_state(&service, "h", "TableIncrementalSync").await;
    let before_mib = peak_rss_kib(service.pid().unwrap()) / 1024;
    // One transaction of 1,000,000 rows (about 110 MB of binlog).
    source().admin(&format!(
        "USE {db}; INSERT INTO h SELECT seq, REPEAT(CHAR(65 + seq % 26), 100) FROM seq_1_to_1000000;"
    ));
    wait_caught_up(&service, "h", source()).await;
    assert_eq!(
        checksums(source(), &db, &["h"]),
        checksums(dest(), &dest_db, &["h"])
    );
    let peak_mib = peak_rss_kib(service.pid().unwrap()) / 1024;
    eprintln!(
        "peak RSS applying a 1,000,000-row transaction: {peak_mib} MiB ({before_mib} MiB before it)"
    );
    // Held whole, the transaction's rows alone would take well over 200
    // MiB (110 MB of binlog, decoded); streamed, the process stays near
    // its read-ahead and one piece per connection (57 to 62 MiB above the
    // 32 MiB where it started, measured; the bound leaves room for a busy
    // CI machine, where it once peaked at 103 MiB).
    assert!(
        peak_mib < 128 && peak_mib - before_mib < 96,
        "peak RSS {peak_mib} MiB ({before_mib} MiB before) while applying a 110 MB transaction"
    );
    service.kill();
}

/// Runs `sysbench <args>` against `db` on the shared source as a user of
/// its own; panics with sysbench's output if it fails.
fn sysbench(db: &str, args: &[&str]) -> String {
    let user = format!("sb_{db}");
    let password = "Sb-Pa55word";
    source().admin(&format!(
        "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}';
         GRANT ALL ON `{db}`.* TO '{user}'@'%'"
    ));
    let out = std::process::Command::new("sysbench")
        .args(args)
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            &format!("--mysql-port={}", source().port),
            &format!("--mysql-user={user}"),
            &format!("--mysql-password={password}"),
            &format!("--mysql-db={db}"),
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run sysbench ({e}): install it (apt-get install sysbench); .ci/run does")
        });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sysbench {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A database job under 60 seconds of `sysbench oltp_write_only`, applied
/// while it runs (groups side by side, net effects): afterwards every
/// table equals the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_write_only_for_60_seconds() {
    let db = unique("inc_sysbench");
    source().admin(&format!("CREATE DATABASE {db}"));
    let shape = ["--tables=4", "--table-size=10000", "--threads=2"];
    sysbench(&db, &[&["oltp_common"][..], &shape, &["prepare"]].concat());
    let dest_db = unique("inc_sysbench_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "sb",
                   "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "sb", "DBIncrementalSync").await;
    let start_seq = source_seq(source());
    let load_db = db.clone();
    let load = tokio::task::spawn_blocking(move || {
        sysbench(
            &load_db,
            &[
                &["oltp_write_only"][..],
                &shape,
                &["--time=60", "--report-interval=0", "run"],
            ]
            .concat(),
        )
    });
    // The job applies while the load runs.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mid = service.post("get_lag", json!({"name": "sb"})).await.ok();
    assert!(
        mid["first_commit_seq"].as_u64().unwrap_or(0) > start_seq,
        "nothing applied after 30 s of load: {mid:#}"
    );
    let report = load.await.unwrap();
    assert!(report.contains("transactions:"), "{report}");
    wait_caught_up(&service, "sb", source()).await;
    let tables = ["sbtest1", "sbtest2", "sbtest3", "sbtest4"];
    assert_eq!(
        checksums(source(), &db, &tables),
        checksums(dest(), &dest_db, &tables)
    );
    // Every sysbench transaction was applied (other tests' transactions on
    // the shared source may be counted too).
    let written: u64 = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("transactions:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let progress = service
        .post("job_progress", json!({"name": "sb"}))
        .await
        .ok();
    let applied = progress["job_progress"]["incremental"]["transactions_applied"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        written > 0 && applied >= written,
        "sysbench wrote {written} transactions, the job applied {applied}: {progress:#}"
    );
    service.stop().await;
}

/// A row missing on the destination: the group's net effect does not add
/// up, so it is rolled back and applied change by change, which names the
/// divergence; the job stops with nothing of that group applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn divergence_inside_a_group_stops_the_job() {
    let db = table_t(source(), "inc_diverge", 100);
    let dest_db = unique("inc_diverge_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            table_spec("d", &db, "t", dest_endpoint(dest(), &dest_db, Some("t"))),
        )
        .await
        .ok();
    wait_for_state(&service, "d", "TableIncrementalSync").await;
    wait_caught_up(&service, "d", source()).await;
    // Only on the destination: row 50 disappears.
    dest().admin(&format!("DELETE FROM {dest_db}.t WHERE id = 50"));
    service.post("pause", json!({"name": "d"})).await.ok();
    // One group: many updates, one of them of the missing row.
    let mut sql = format!("USE {db};");
    for id in 1..=100 {
        sql.push_str(&format!("UPDATE t SET v = v + 1 WHERE id = {id};"));
    }
    source().admin(&sql);
    service.post("resume", json!({"name": "d"})).await.ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let p = service
            .post("job_progress", json!({"name": "d"}))
            .await
            .ok();
        if p["job_progress"]["state"] == "paused" {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not stop: {p:#} dest {} source {}",
            dest().admin(&format!("SELECT COUNT(*), SUM(v) FROM {dest_db}.t")),
            source().admin(&format!("SELECT COUNT(*), SUM(v) FROM {db}.t"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = progress["job_progress"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("diverged") && error.contains("`id`=50"),
        "{progress:#}"
    );
    // Nothing of the refused group (or after it) was applied.
    assert_eq!(
        dest().admin(&format!("SELECT COUNT(*), SUM(v) FROM {dest_db}.t")),
        "99\t0"
    );
    service.stop().await;
}

/// MariaDB's type-plugin columns (UUID, INET6, INET4) as keys and values,
/// all-zero values (whose bytes the binlog drops) and version-1 UUIDs
/// (stored swapped) included: equal after the full sync, split into chunks
/// on a UUID key, and after inserts, updates and deletes in the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_inet6_inet4_through_the_full_and_incremental_sync() {
    let db = unique("plugin_types");
    let dest_db = unique("plugin_types_copy");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE TABLE t (u UUID PRIMARY KEY, i6 INET6, i4 INET4, n INT);
         INSERT INTO t VALUES
           ('123e4567-e89b-12d3-a456-426655440000', '2001:db8::1', '10.1.2.3', 1),
           ('00000000-0000-0000-0000-000000000000', '::', '0.0.0.0', 2),
           ('6ccd780c-baba-1026-9564-5b8c656024db', '::ffff:1.2.3.4', '255.255.255.255', 3),
           ('ffffffff-ffff-ffff-ffff-ffffffffffff', NULL, NULL, 4),
           ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'fe80::', '192.168.0.0', 5);
         CREATE TABLE k (i6 INET6 PRIMARY KEY, v VARCHAR(10));
         INSERT INTO k VALUES ('::', 'zero'), ('::1', 'one');"
    ));
    let store_dir = tempfile::tempdir().unwrap();
    let mut config = service::sqlite_config(store_dir.path());
    config.full_sync.chunk_rows = 2;
    let service = Service::start(config).await;
    service
        .post(
            "create_ccr",
            json!({"name": "plugin", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "plugin", "DBIncrementalSync").await;
    let same = |stage: &str| {
        for (t, order) in [("t", "u"), ("k", "i6")] {
            let q = |d: &str| format!("SELECT * FROM {d}.{t} ORDER BY {order}");
            assert_eq!(
                source().admin(&q(&db)),
                dest().admin(&q(&dest_db)),
                "{stage}: table {t}"
            );
        }
        assert_eq!(
            checksums(source(), &db, &["t", "k"]),
            checksums(dest(), &dest_db, &["t", "k"]),
            "{stage}"
        );
    };
    same("after the full sync");
    source().admin(&format!(
        "USE {db};
         INSERT INTO t VALUES ('10000000-0000-1000-8000-000000000000', '::', '0.0.0.0', 6),
                              ('11111111-2222-1333-8444-555555555555', '2001:db8:0:0:1::', '0.0.0.1', 7);
         UPDATE t SET i6 = '::', i4 = '0.0.0.0' WHERE n = 1;
         UPDATE t SET u = '00000000-0000-0000-0000-000000000001' WHERE n = 2;
         UPDATE t SET i6 = '1::' WHERE u = '6ccd780c-baba-1026-9564-5b8c656024db';
         DELETE FROM t WHERE i4 = '192.168.0.0';
         UPDATE k SET v = 'ZERO' WHERE i6 = '::';
         INSERT INTO k VALUES ('::2', 'two');
         DELETE FROM k WHERE i6 = '::1';"
    ));
    wait_caught_up(&service, "plugin", source()).await;
    same("after the stream");
    service.stop().await;
}

/// Lag tells the truth: 0 only when caught up while streaming; a paused
/// job's lag grows; a job blocked on the destination while the source
/// moves on is reported stalled in job_status, get_lag, the metrics and the
/// page, and recovers once the block goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_never_zero_while_stopped_and_a_stall_shows() {
    use mysql_async::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let mut config = service::sqlite_config(dir.path());
    config.stall_secs = 2;
    let service = Service::start(config).await;
    let db = table_t(source(), "lag_truth", 10);
    let dest_db = unique("lag_truth_copy");
    service
        .post(
            "create_ccr",
            json!({"name": "truth", "src": src_endpoint(source(), &db, Some("t")),
                   "dest": dest_endpoint(dest(), &dest_db, Some("t"))}),
        )
        .await
        .ok();
    wait_for_state(&service, "truth", "TableIncrementalSync").await;
    source().admin(&format!("UPDATE {db}.t SET v = 1 WHERE id = 1"));
    // (Other tests write on the shared source: the job may be a moment
    // behind their transactions, never far.)
    let lag = wait_caught_up(&service, "truth", source()).await;
    assert!(lag["lag_secs"].as_i64().unwrap() < 5, "{lag:#}");
    assert!(
        ["caught_up", "behind"].contains(&lag["lag_state"].as_str().unwrap()),
        "{lag:#}"
    );
    // Paused: never 0, and the metric says so at the next scrape.
    service.post("pause", json!({"name": "truth"})).await.ok();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lag = service.post("get_lag", json!({"name": "truth"})).await.ok();
    assert_eq!(lag["lag_state"], "paused", "{lag:#}");
    assert!(lag["lag_secs"].as_i64().unwrap() >= 1, "{lag:#}");
    let metrics = service.get("metrics").await.text;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("ccr_syncer_lag_seconds{job=\"truth\"}"))
        .unwrap_or_default()
        .to_string();
    assert!(!line.ends_with(" 0") && !line.is_empty(), "{line}");
    service.post("resume", json!({"name": "truth"})).await.ok();
    wait_caught_up(&service, "truth", source()).await;

    // A lock on the destination row blocks the apply: a stall.
    let url = format!("mysql://root@127.0.0.1:{}/{dest_db}", dest().port);
    let mut blocker = mysql_async::Conn::from_url(url).await.unwrap();
    blocker.query_drop("START TRANSACTION").await.unwrap();
    blocker
        .query_drop("SELECT * FROM t WHERE id = 2 FOR UPDATE")
        .await
        .unwrap();
    source().admin(&format!("UPDATE {db}.t SET v = 2 WHERE id = 2"));
    let status = poll_job(&service, "job_status", "truth", 30, "stalled", |s| {
        s["stalled"] == true
    })
    .await;
    assert_eq!(status["lag_state"], "stalled", "{status:#}");
    assert!(status["stalled_secs"].as_i64().unwrap() >= 2);
    let metrics = service.get("metrics").await.text;
    assert!(
        metrics.contains("ccr_syncer_job_stalled{job=\"truth\"} 1"),
        "{metrics}"
    );
    let page = service.get("view").await.text;
    assert!(page.contains("(stalled)"), "{page}");
    blocker.query_drop("ROLLBACK").await.unwrap();
    wait_caught_up(&service, "truth", source()).await;
    let status = poll_job(&service, "job_status", "truth", 30, "not stalled", |s| {
        s["stalled"] == false
    })
    .await;
    assert_ne!(status["lag_state"], "stalled");
    assert!(service
        .get("metrics")
        .await
        .text
        .contains("ccr_syncer_job_stalled{job=\"truth\"} 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_events_two_phase_alter_and_xa() {
    // Every event of 10 bytes or more compressed (log_bin_compress), and
    // every ALTER logged at its start and at its commit.
    let src = mariadb::with_users(MariaDb::start(ServerOptions {
        extra: vec![
            "--log-bin-compress=ON",
            "--log-bin-compress-min-len=10",
            "--binlog-alter-two-phase=ON",
        ],
        ..ServerOptions::source()
    }));
    let db = unique("compressed");
    src.admin(&format!(
        "CREATE DATABASE {db}; USE {db}; {TYPES_TABLE};
         CREATE SEQUENCE sq START WITH 10;
         CREATE TABLE vt (id INT PRIMARY KEY DEFAULT NEXTVAL(sq), v INT, hidden INT INVISIBLE DEFAULT 9)
           WITH SYSTEM VERSIONING;
         INSERT INTO vt (v) VALUES (1), (2); UPDATE vt SET v = 3 WHERE v = 1;
         CREATE TABLE parent (id INT PRIMARY KEY);
         CREATE TABLE child (id INT PRIMARY KEY, pid INT,
           FOREIGN KEY (pid) REFERENCES parent (id) ON DELETE CASCADE);
         INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1, 1), (2, 2), (3, 1);"
    ));
    let dest_db = unique("compressed_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "z", "src": src_endpoint(&src, &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "z", "DBIncrementalSync").await;
    src.admin(&types_rows(&db));
    src.admin(&format!(
        "USE {db};
         CREATE TABLE big (id INT PRIMARY KEY, body MEDIUMTEXT);
         INSERT INTO big SELECT seq, REPEAT(CONCAT('row ', seq, ' '), 500) FROM seq_1_to_200;
         UPDATE big SET body = CONCAT(body, 'x') WHERE id % 3 = 0;
         DELETE FROM big WHERE id % 7 = 0;
         ALTER TABLE big ADD COLUMN note VARCHAR(40) DEFAULT 'added after the copy';
         UPDATE big SET note = 'after the alter' WHERE id < 5;
         ALTER TABLE big DROP COLUMN note, ADD COLUMN n2 INT NOT NULL DEFAULT 7, ALGORITHM=COPY;
         UPDATE types SET vc = CONCAT(vc, '-again') WHERE id < 4;
         DELETE FROM types WHERE id = 4;
         XA START 'one'; INSERT INTO types (id, vc) VALUES (200, 'xa one phase'); XA END 'one';
         XA COMMIT 'one' ONE PHASE;
         CREATE DATABASE IF NOT EXISTS {db}_other; CREATE TABLE {db}_other.o (id INT PRIMARY KEY);
         XA START 'out'; INSERT INTO {db}_other.o VALUES (1); XA END 'out'; XA PREPARE 'out';
         XA COMMIT 'out';
         XA START 'gone'; INSERT INTO {db}_other.o VALUES (2); XA END 'gone'; XA PREPARE 'gone';
         XA ROLLBACK 'gone';
         INSERT INTO big (id, body) VALUES (1000, 'after the XA transactions');
         INSERT INTO vt (v) SELECT seq FROM seq_1_to_30; UPDATE vt SET v = v * 2, hidden = 1 WHERE v < 10;
         DELETE FROM vt WHERE v = 4;
         SET SESSION system_versioning_alter_history = KEEP; ALTER TABLE vt ADD COLUMN w INT DEFAULT 0;
         DELETE FROM parent WHERE id = 1;"
    ));
    wait_caught_up(&service, "z", &src).await;
    let history = |s: &MariaDb, d: &str| {
        s.admin(&format!(
            "SET time_zone = '+00:00'; SELECT *, hidden, ROW_START, ROW_END FROM `{d}`.vt \
             FOR SYSTEM_TIME ALL ORDER BY id, ROW_START"
        ))
    };
    assert_eq!(history(&src, &db), history(dest(), &dest_db));
    let next =
        |s: &MariaDb, d: &str| s.admin(&format!("SELECT next_not_cached_value FROM `{d}`.sq"));
    assert_eq!(next(&src, &db), next(dest(), &dest_db));
    assert_eq!(
        checksums(&src, &db, &["parent", "child"]),
        checksums(dest(), &dest_db, &["parent", "child"])
    );
    assert_eq!(
        checksums(&src, &db, &["types", "big"]),
        checksums(dest(), &dest_db, &["types", "big"])
    );
    // The stream really held compressed events of both kinds.
    let mut kinds = String::new();
    for log in src.admin("SHOW BINARY LOGS").lines() {
        let file = log.split('\t').next().unwrap();
        kinds.push_str(&src.admin(&format!("SHOW BINLOG EVENTS IN '{file}'")));
    }
    for kind in [
        "Query_compressed",
        "Write_rows_compressed",
        "Update_rows_compressed",
        "Delete_rows_compressed",
        "START ALTER",
        "COMMIT ALTER",
        "XA_prepare",
    ] {
        assert!(
            kinds.contains(kind),
            "no {kind} event in the source's binlog"
        );
    }
    let (state, _) = job_status(&service, "z").await;
    assert_eq!(state, "running");
    // A prepared XA transaction in scope is applied when it commits.
    src.admin(&format!(
        "XA START 'in'; INSERT INTO {db}.big (id, body) VALUES (2000, 'xa'); XA END 'in';
         XA PREPARE 'in'; XA COMMIT 'in';"
    ));
    wait_caught_up(&service, "z", &src).await;
    assert_eq!(
        checksums(&src, &db, &["types", "big"]),
        checksums(dest(), &dest_db, &["types", "big"])
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_kinds_and_statements_a_user_writes() {
    let db = unique("kinds");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE TABLE inv (id INT PRIMARY KEY, secret VARCHAR(20) INVISIBLE DEFAULT 'hidden', v INT);
         CREATE TABLE dflt (id INT PRIMARY KEY, created DATETIME(3) DEFAULT (CURRENT_TIMESTAMP(3)),
                            code VARCHAR(40) DEFAULT (CONCAT('c-', FLOOR(RAND() * 1000))),
                            amount DECIMAL(10,2) CHECK (amount >= 0));
         CREATE TABLE my (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM;
         CREATE TABLE ar (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=Aria;
         INSERT INTO inv (id, secret, v) VALUES (1, 'one', 1), (2, 'two', 2);
         INSERT INTO dflt (id, amount) VALUES (1, 1.5), (2, 0);
         INSERT INTO my VALUES (1, 'a'); INSERT INTO ar VALUES (1, 'a');"
    ));
    let dest_db = unique("kinds_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "kinds", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "kinds", "DBIncrementalSync").await;
    source().admin(&format!(
        "USE {db};
         INSERT INTO inv (id, secret, v) VALUES (3, 'three', 3); UPDATE inv SET secret = 'changed' WHERE id = 1;
         INSERT INTO dflt (id, amount) VALUES (3, 2.25);
         INSERT INTO my VALUES (2, 'b'); UPDATE ar SET v = 'z' WHERE id = 1; INSERT INTO ar VALUES (2, 'b');
         BEGIN; INSERT INTO inv (id, v) VALUES (10, 10); SAVEPOINT s1; INSERT INTO inv (id, v) VALUES (11, 11);
           ROLLBACK TO SAVEPOINT s1; INSERT INTO inv (id, v) VALUES (12, 12); COMMIT;
         CREATE TABLE sel (id INT PRIMARY KEY, v INT) SELECT id, v FROM inv;
         CREATE TABLE lk LIKE inv;
         INSERT INTO lk (id, secret, v) SELECT id, secret, v FROM inv;
         ALTER TABLE lk ADD COLUMN extra INT DEFAULT 5, RENAME TO lk2;
         UPDATE lk2 SET extra = 6 WHERE id = 2;
         INSERT INTO sel VALUES (100, 100);"
    ));
    wait_caught_up(&service, "kinds", source()).await;
    let p = service
        .post("job_progress", json!({"name": "kinds"}))
        .await
        .ok();
    assert_eq!(p["job_progress"]["state"], "running", "{p:#}");
    for table in ["inv", "dflt", "my", "ar", "sel", "lk2"] {
        let cols = "*";
        let sql = |s: &MariaDb, d: &str| {
            let extra = if table == "inv" || table == "lk2" {
                ", secret"
            } else {
                ""
            };
            s.admin(&format!(
                "SET time_zone = '+00:00'; SELECT {cols}{extra} FROM `{d}`.`{table}` ORDER BY id"
            ))
        };
        assert_eq!(sql(source(), &db), sql(dest(), &dest_db), "table {table}");
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_in_scope_passes_unseen() {
    let db = unique("unseen");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db}; CREATE TABLE t (id INT PRIMARY KEY, a INT);
         INSERT INTO t VALUES (1, 1);"
    ));
    let dest_db = unique("unseen_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "u", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "u", "DBIncrementalSync").await;
    // What mysqldump writes for a view, executable comments and all; a
    // trigger (its rows are in the binlog, it is not copied); statements
    // that touch another database.
    source().admin(&format!(
        "USE {db};
         /*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 SQL SECURITY DEFINER */ /*!50001 VIEW `v1` AS SELECT id, a FROM t */;
         CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = NEW.a * 10;
         INSERT INTO t VALUES (2, 2);
         CREATE DATABASE IF NOT EXISTS {db}_x; DROP DATABASE {db}_x;
         RENAME TABLE t WAIT 5 TO t_renamed;"
    ));
    wait_caught_up(&service, "u", source()).await;
    // (The view is as broken by the rename on the destination as on the
    // source.)
    assert_eq!(
        dest().admin(&format!(
            "SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{dest_db}' AND TABLE_NAME = 'v1'"
        )),
        "1"
    );
    assert_eq!(
        checksums(source(), &db, &["t_renamed"]),
        checksums(dest(), &dest_db, &["t_renamed"])
    );
    assert_eq!(
        dest().admin(&format!(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{dest_db}'"
        )),
        "0"
    );
    // Statements of sessions whose sql_mode reads them differently.
    source().admin(&format!(
        r#"USE {db};
         SET SESSION sql_mode = 'ANSI_QUOTES';
         CREATE TABLE "q t" (id INT PRIMARY KEY, "v" VARCHAR(10) DEFAULT 'x');
         ALTER TABLE "q t" ADD COLUMN "w" INT DEFAULT 3;
         INSERT INTO "q t" (id) VALUES (1);
         SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES';
         ALTER TABLE t_renamed COMMENT 'in C:\', ADD COLUMN b INT DEFAULT 4;
         SET SESSION sql_mode = DEFAULT;
         INSERT INTO t_renamed (id, a) VALUES (20, 20);"#
    ));
    wait_caught_up(&service, "u", source()).await;
    assert_eq!(
        checksums(source(), &db, &["q t", "t_renamed"]),
        checksums(dest(), &dest_db, &["q t", "t_renamed"])
    );
    let comment = |s: &MariaDb, d: &str| {
        s.admin(&format!(
            "SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{d}' AND TABLE_NAME = 't_renamed'"
        ))
    };
    assert_eq!(comment(source(), &db), comment(dest(), &dest_db));
    // A session writing latin1: its statement's bytes are latin1.
    source().admin(&format!(
        "USE {db}; SET NAMES latin1; ALTER TABLE t_renamed COMMENT 'caf\u{e9} \u{20ac}';"
    ));
    wait_caught_up(&service, "u", source()).await;
    assert_eq!(comment(source(), &db), comment(dest(), &dest_db));
    // A statement on the job's database it cannot apply holds the job,
    // named, with what to do; skipped, the stream goes on.
    source().admin(&format!("ALTER DATABASE {db} COMMENT 'held'"));
    let held = poll_job(&service, "job_status", "u", 30, "held", |s| {
        s["state"] == "paused"
    })
    .await;
    let progress = service
        .post("job_progress", json!({"name": "u"}))
        .await
        .ok();
    let p = &progress["job_progress"];
    assert!(
        p["failed_transaction"]["statement"]
            .as_str()
            .is_some_and(|s| s.contains("COMMENT 'held'")),
        "{p:#}"
    );
    let error = p["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ALTER DATABASE") && error.contains("job_skip_binlog"),
        "{error}"
    );
    service
        .post(
            "job_skip_binlog",
            json!({"name": "u", "skip_by": "silence", "skip_commit_seq": held["failed_commit_seq"]}),
        )
        .await
        .ok();
    source().admin(&format!("INSERT INTO {db}.t_renamed (id, a) VALUES (3, 3)"));
    wait_caught_up(&service, "u", source()).await;
    assert_eq!(
        checksums(source(), &db, &["t_renamed"]),
        checksums(dest(), &dest_db, &["t_renamed"])
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_and_the_tables_that_use_them() {
    let db = unique("seq");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE SEQUENCE s1 START WITH 100 CACHE 10;
         CREATE TABLE t (id INT PRIMARY KEY DEFAULT NEXTVAL({db}.s1), v INT);
         INSERT INTO t (v) VALUES (1), (2), (3);"
    ));
    let dest_db = unique("seq_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "q", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "q", "DBIncrementalSync").await;
    let next = |s: &MariaDb, d: &str, q: &str| {
        s.admin(&format!("SELECT next_not_cached_value FROM `{d}`.`{q}`"))
    };
    assert_eq!(next(source(), &db, "s1"), next(dest(), &dest_db, "s1"));
    let default = dest().admin(&format!(
        "SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = '{dest_db}' AND TABLE_NAME = 't' AND COLUMN_NAME = 'id'"
    ));
    assert!(default.contains(&format!("`{dest_db}`.`s1`")), "{default}");
    // The stream: values drawn past the cache, SETVAL, ALTER, new and
    // dropped sequences.
    source().admin(&format!(
        "USE {db};
         INSERT INTO t (v) SELECT seq FROM seq_1_to_25;
         DO SETVAL(s1, 1000);
         INSERT INTO t (v) VALUES (99);
         ALTER SEQUENCE s1 INCREMENT BY 5;
         INSERT INTO t (v) VALUES (100);
         CREATE SEQUENCE s2 START WITH 7;
         DO NEXTVAL(s2);
         CREATE SEQUENCE gone;
         DROP SEQUENCE gone;"
    ));
    wait_caught_up(&service, "q", source()).await;
    assert_eq!(
        checksums(source(), &db, &["t"]),
        checksums(dest(), &dest_db, &["t"])
    );
    for q in ["s1", "s2"] {
        assert_eq!(
            next(source(), &db, q),
            next(dest(), &dest_db, q),
            "sequence {q}"
        );
        let show = |s: &MariaDb, d: &str| s.admin(&format!("SHOW CREATE SEQUENCE `{d}`.`{q}`"));
        assert_eq!(
            show(source(), &db)
                .split_once('\t')
                .map(|x| x.1.to_string()),
            show(dest(), &dest_db)
                .split_once('\t')
                .map(|x| x.1.to_string())
        );
    }
    assert_eq!(
        dest().admin(&format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{dest_db}' AND TABLE_NAME = 'gone'"
        )),
        "0"
    );
    let (state, _) = job_status(&service, "q").await;
    assert_eq!(state, "running");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_key_cascades_under_parallel_apply() {
    let db = unique("fk");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE TABLE parent (id INT PRIMARY KEY, v INT);
         CREATE TABLE child (id INT PRIMARY KEY, pid INT, v INT,
           FOREIGN KEY (pid) REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE);
         CREATE TABLE note (id INT PRIMARY KEY, cid INT NULL,
           FOREIGN KEY (cid) REFERENCES child (id) ON DELETE SET NULL);
         INSERT INTO parent SELECT seq, 0 FROM seq_1_to_200;
         INSERT INTO child SELECT seq, (seq % 200) + 1, 0 FROM seq_1_to_1000;
         INSERT INTO note SELECT seq, seq FROM seq_1_to_1000;"
    ));
    let dest_db = unique("fk_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "fk", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "fk", "DBIncrementalSync").await;
    // Writes to other rows all along, applied side by side.
    let writer = Writer::start(&db, 5, |i| {
        format!(
            "UPDATE child SET v = v + 1 WHERE id = {}; UPDATE parent SET v = v + 1 WHERE id = {};",
            500 + i % 400,
            100 + i % 100
        )
    });
    source().admin(&format!(
        "USE {db};
         DELETE FROM parent WHERE id BETWEEN 1 AND 20;
         UPDATE parent SET id = id + 1000 WHERE id BETWEEN 21 AND 30;
         DELETE FROM child WHERE id BETWEEN 300 AND 310;
         BEGIN; INSERT INTO parent VALUES (5000, 1); INSERT INTO child VALUES (5000, 5000, 1);
           DELETE FROM parent WHERE id = 5000; COMMIT;"
    ));
    writer.stop();
    wait_caught_up(&service, "fk", source()).await;
    assert_eq!(
        checksums(source(), &db, &["parent", "child", "note"]),
        checksums(dest(), &dest_db, &["parent", "child", "note"])
    );
    let count = |s: &MariaDb, d: &str, sql: &str| s.admin(&format!("USE {d}; {sql}"));
    for sql in [
        "SELECT COUNT(*) FROM child WHERE pid BETWEEN 1 AND 20",
        "SELECT COUNT(*) FROM child WHERE pid > 1000",
        "SELECT COUNT(*) FROM note WHERE cid IS NULL",
    ] {
        assert_eq!(
            count(source(), &db, sql),
            count(dest(), &dest_db, sql),
            "{sql}"
        );
    }
    let (state, _) = job_status(&service, "fk").await;
    assert_eq!(state, "running");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_compare_as_the_sources_lower_case_table_names() {
    let src = mariadb::with_users(MariaDb::start(ServerOptions {
        extra: vec!["--lower-case-table-names=1"],
        ..ServerOptions::source()
    }));
    src.admin("CREATE DATABASE lc; CREATE TABLE lc.Base (id INT PRIMARY KEY)");
    let dest_db = unique("lc_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "lc", "src": src_endpoint(&src, "lc", None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "lc", "DBIncrementalSync").await;
    // Names written in any case: the source stores them in lower case.
    src.admin(
        "USE LC; CREATE TABLE Orders (Id INT PRIMARY KEY, V INT);
         INSERT INTO ORDERS VALUES (1, 1); ALTER TABLE `orders` ADD COLUMN W INT;
         INSERT INTO lc.Orders VALUES (2, 2, 2); RENAME TABLE Orders TO Archive;
         INSERT INTO ARCHIVE VALUES (3, 3, 3); INSERT INTO base VALUES (1);",
    );
    wait_caught_up(&service, "lc", &src).await;
    let tables = dest().admin(&format!(
        "SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = '{dest_db}' AND TABLE_NAME NOT LIKE '\\_ccr%'"
    ));
    assert_eq!(tables, "archive,base");
    assert_eq!(
        checksums(&src, "lc", &["archive", "base"]),
        checksums(dest(), &dest_db, &["archive", "base"])
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_transactions_exactly_once_across_a_kill() {
    // A source of its own: the other tests' jobs see none of these XA
    // transactions (a commit whose prepare came before a job's position
    // makes it read the binlog from its oldest file).
    let src = mariadb::with_users(MariaDb::start(ServerOptions::source()));
    let db = table_t(&src, "xa", 10);
    let other = table_t(&src, "xa_other", 1);
    // Prepared before the job exists: in no snapshot, committed later.
    src.admin(&format!(
        "USE {db}; XA START 'early'; INSERT INTO t VALUES (50, 50); XA END 'early'; XA PREPARE 'early';"
    ));
    src.admin(&format!(
        "USE {other}; XA START 'early_out'; INSERT INTO t VALUES (9, 9); XA END 'early_out';
         XA PREPARE 'early_out';"
    ));
    let dest_db = unique("xa_copy");
    let dir = tempfile::tempdir().unwrap();
    let service = Service::process(dir.path(), "").await;
    service
        .post(
            "create_ccr",
            json!({"name": "xa", "src": src_endpoint(&src, &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "xa", "DBIncrementalSync").await;
    src.admin("XA COMMIT 'early_out'");
    src.admin("XA COMMIT 'early'");
    wait_caught_up(&service, "xa", &src).await;
    assert_eq!(
        dest().admin(&format!("SELECT v FROM {dest_db}.t WHERE id = 50")),
        "50"
    );
    // Two prepared transactions (they outlive their sessions), and one
    // prepared and committed at once.
    src.admin(&format!(
        "USE {db};
         XA START 'k1'; INSERT INTO t VALUES (101, 1), (102, 1); UPDATE t SET v = 7 WHERE id = 1;
           XA END 'k1'; XA PREPARE 'k1';"
    ));
    src.admin(&format!(
        "USE {db}; XA START 'k2'; DELETE FROM t WHERE id = 2; XA END 'k2'; XA PREPARE 'k2';"
    ));
    src.admin(&format!(
        "USE {db}; XA START 'k3'; INSERT INTO t VALUES (103, 3); XA END 'k3'; XA PREPARE 'k3';
         XA COMMIT 'k3';"
    ));
    wait_caught_up(&service, "xa", &src).await;
    // Passed, not applied: the prepared parts wait for their end.
    let on_dest = |sql: &str| dest().admin(&format!("USE {dest_db}; {sql}"));
    assert_eq!(
        on_dest("SELECT COUNT(*) FROM t WHERE id IN (101, 102)"),
        "0"
    );
    assert_eq!(on_dest("SELECT COUNT(*) FROM t WHERE id = 103"), "1");
    assert_eq!(
        on_dest("SELECT COUNT(*) FROM _ccr_syncer_xa WHERE job = 'xa'"),
        "2"
    );
    service.kill();
    src.admin("XA COMMIT 'k1'");
    src.admin("XA ROLLBACK 'k2'");
    src.admin(&format!("INSERT INTO {db}.t VALUES (104, 4)"));
    let service = Service::process(dir.path(), "").await;
    wait_caught_up(&service, "xa", &src).await;
    assert_eq!(
        checksums(&src, &db, &["t"]),
        checksums(dest(), &dest_db, &["t"])
    );
    assert_eq!(
        on_dest("SELECT COUNT(*) FROM _ccr_syncer_xa WHERE job = 'xa'"),
        "0"
    );
    assert_eq!(on_dest("SELECT v FROM t WHERE id = 1"), "7");
    assert_eq!(on_dest("SELECT COUNT(*) FROM t WHERE id = 2"), "1");
    let (state, _) = job_status(&service, "xa").await;
    assert_eq!(state, "running");
    service.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_versioned_tables_with_their_history() {
    let db = unique("hist");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE TABLE h (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING;
         INSERT INTO h VALUES (1, 1), (2, 2), (3, 3);
         UPDATE h SET v = 10 WHERE id = 1; DELETE FROM h WHERE id = 2;
         CREATE TABLE nokey (a INT, b VARCHAR(10)) WITH SYSTEM VERSIONING;
         INSERT INTO nokey VALUES (1, 'x');
         CREATE TABLE named (id INT PRIMARY KEY, v INT,
           row_start TIMESTAMP(6) GENERATED ALWAYS AS ROW START INVISIBLE,
           row_end TIMESTAMP(6) GENERATED ALWAYS AS ROW END INVISIBLE,
           PERIOD FOR SYSTEM_TIME(row_start, row_end)) WITH SYSTEM VERSIONING;
         INSERT INTO named VALUES (1, 1), (2, 2); UPDATE named SET v = 3 WHERE id = 1;"
    ));
    let dest_db = unique("hist_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "h", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    wait_for_state(&service, "h", "DBIncrementalSync").await;
    let all = |s: &MariaDb, d: &str, t: &str, order: &str| {
        s.admin(&format!(
            "SET time_zone = '+00:00'; SELECT *, ROW_START, ROW_END FROM `{d}`.`{t}` \
             FOR SYSTEM_TIME ALL ORDER BY {order}, ROW_START"
        ))
    };
    assert_eq!(
        all(source(), &db, "h", "id"),
        all(dest(), &dest_db, "h", "id")
    );
    // The stream: inserts, updates (one row twice in a transaction), a
    // delete, a table made versioned, one created versioned.
    source().admin(&format!(
        "USE {db};
         INSERT INTO h VALUES (4, 4);
         UPDATE h SET v = v + 1 WHERE id IN (1, 3);
         BEGIN; UPDATE h SET v = 100 WHERE id = 4; DO SLEEP(0.01); UPDATE h SET v = 101 WHERE id = 4; COMMIT;
         DELETE FROM h WHERE id = 3;
         UPDATE nokey SET b = 'y';
         INSERT INTO named VALUES (3, 3); UPDATE named SET v = v + 10; DELETE FROM named WHERE id = 2;
         CREATE TABLE later (id INT PRIMARY KEY, v INT);
         INSERT INTO later VALUES (1, 1);
         ALTER TABLE later ADD SYSTEM VERSIONING;
         UPDATE later SET v = 2;
         CREATE TABLE born (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING;
         INSERT INTO born VALUES (1, 1); UPDATE born SET v = 5; DELETE FROM born;"
    ));
    wait_caught_up(&service, "h", source()).await;
    for (t, order) in [
        ("h", "id"),
        ("nokey", "a"),
        ("later", "id"),
        ("born", "id"),
        ("named", "id"),
    ] {
        assert_eq!(
            all(source(), &db, t, order),
            all(dest(), &dest_db, t, order),
            "table {t}"
        );
    }
    let (state, _) = job_status(&service, "h").await;
    assert_eq!(state, "running");
    service.stop().await;
}
