//! Full sync, end to end: what reaches the destination is exactly the source
//! as of one position, for every type, table shape and size, across writes,
//! restarts and a kill.

use crate::harness::mariadb::{with_users, SRC_PASSWORD, SRC_USER_NO_RELOAD};
use crate::harness::*;
use serde_json::{json, Value};
use std::time::Duration;

/// `CHECKSUM TABLE` values of `tables` (without the names, which differ).
pub(crate) fn checksums(server: &MariaDb, db: &str, tables: &[&str]) -> Vec<String> {
    let list: Vec<String> = tables.iter().map(|t| format!("`{db}`.`{t}`")).collect();
    server
        .admin(&format!("CHECKSUM TABLE {}", list.join(", ")))
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap_or_default().to_string())
        .collect()
}

/// Every row, in key order, as the client prints it (TIMESTAMPs in UTC).
pub(crate) fn rows(server: &MariaDb, db: &str, table: &str, order: &str) -> String {
    server.admin(&format!(
        "SET time_zone = '+00:00'; SELECT * FROM `{db}`.`{table}` ORDER BY {order}"
    ))
}

/// The table on both sides holds the same rows, by checksum and row by row.
#[track_caller]
pub(crate) fn assert_same_table(
    src_db: &str,
    src_table: &str,
    dest_server: &MariaDb,
    dest_db: &str,
    dest_table: &str,
    order: &str,
) {
    assert_eq!(
        checksums(source(), src_db, &[src_table]),
        checksums(dest_server, dest_db, &[dest_table]),
        "checksums of {src_db}.{src_table} and {dest_db}.{dest_table}"
    );
    let (a, b) = (
        rows(source(), src_db, src_table, order),
        rows(dest_server, dest_db, dest_table, order),
    );
    assert!(!a.is_empty(), "{src_db}.{src_table} has rows");
    assert!(a == b, "rows differ:\nsource:\n{a}\ndestination:\n{b}");
}

pub(crate) fn table_spec(name: &str, src_db: &str, table: &str, dest: Value) -> Value {
    json!({"name": name, "src": src_endpoint(source(), src_db, Some(table)), "dest": dest})
}

pub(crate) const TYPES_TABLE: &str = "CREATE TABLE types (
    id INT PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
    bi BIGINT, biu BIGINT UNSIGNED,
    d DECIMAL(65,30), d0 DECIMAL(10,0),
    f FLOAT, dbl DOUBLE,
    b1 BIT(1), b64 BIT(64),
    e ENUM('a','b','ç'), st SET('x','y','z'),
    dt DATE, tm TIME(6), tm0 TIME, dtm DATETIME(6), ts TIMESTAMP(6) NULL, yr YEAR,
    vc VARCHAR(100) CHARACTER SET utf8mb4, l1 VARCHAR(100) CHARACTER SET latin1,
    ch CHAR(10), tx TEXT,
    bn BINARY(4), vb VARBINARY(300), bl BLOB,
    j JSON,
    gv BIGINT AS (i + 1) VIRTUAL,
    gs VARCHAR(120) AS (CONCAT(vc, '!')) STORED
) DEFAULT CHARSET=utf8mb4";

/// Rows at the types' limits, NULLs, and text and bytes that need escaping.
pub(crate) fn types_rows(db: &str) -> String {
    let all_bytes: String = (0u8..=255).map(|b| format!("{b:02X}")).collect();
    format!(
        "SET NAMES utf8mb4; SET time_zone = '+00:00';
        INSERT INTO {db}.types (id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, d, d0, f, dbl,
            b1, b64, e, st, dt, tm, tm0, dtm, ts, yr, vc, l1, ch, tx, bn, vb, bl, j) VALUES
        (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
            -9223372036854775808, 18446744073709551615,
            -99999999999999999999999999999999999.999999999999999999999999999999, -9999999999,
            -3.40282e38, -1.7976931348623157e308, b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
            'ç', 'x,y,z', '1000-01-01', '-838:59:59.000000', '-00:00:01', '1000-01-01 00:00:00.000000',
            '1970-01-01 00:00:01.000000', 1901, 'héllo wörld ✓ 😀', 'café', 'a', 'multi\\nline\\ttext',
            X'00000000', UNHEX('{all_bytes}'), X'00FF5C27220A0D1A', '{{\"a\": [1, 2.5, \"x\"], \"b\": null}}'),
        (2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
            99999999999999999999999999999999999.999999999999999999999999999999, 9999999999,
            1.17549e-38, 2.2250738585072014e-308, b'0', b'0', 'a', '', '9999-12-31',
            '838:59:59.999999', '00:00:00', '9999-12-31 23:59:59.999999',
            '2038-01-19 03:14:07.999999', 2155, '', '', '', '', X'FFFFFFFF', '', '', '[]'),
        (3, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0.000000000000000000000000000001, 0,
            0.1, 0.1, b'1', b'1000000000000000000000000000000000000000000000000000000000000001',
            'b', 'y', '2024-02-29', '-12:34:56.5', '23:59:59', '2024-02-29 12:00:00.000001',
            '2024-03-31 01:30:00.123456', 0, 'it''s a \\\\ backslash', 'quote''s', 'x''y', '\\0nul',
            X'5C275C00', X'27', X'5C', '{{\"s\": \"it''s \\\\\\\\ ✓\"}}'),
        (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL),
        (5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3.141592653589793238462643383279, 42,
            16777217, 1.7976931348623157e308, b'0', b'101', 'a', 'x,z', '0000-00-00',
            '-00:00:00.000001', '-838:59:59', '0000-00-00 00:00:00.000000', NULL, 1999,
            '漢字', 'ÿ', 'trail  ', 'x', X'00', X'00', X'00', '123')"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_exactly() {
    // This destination runs in another time zone than the source and takes
    // no LOAD DATA LOCAL INFILE, so rows go in as INSERTs; the shared
    // destination takes LOAD DATA streams. Both copies must be exact.
    let far_dest = with_users(MariaDb::start(ServerOptions {
        extra: vec!["--default-time-zone=+05:30", "--local-infile=0"],
        ..ServerOptions::plain()
    }));
    let db = unique("types");
    source().admin(&format!("CREATE DATABASE {db}; USE {db}; {TYPES_TABLE}"));
    source().admin(&types_rows(&db));
    let dest_db = unique("types_copy");
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            table_spec(
                "types",
                &db,
                "types",
                dest_endpoint(&far_dest, &dest_db, Some("types_renamed")),
            ),
        )
        .await
        .ok();
    service
        .post(
            "create_ccr",
            table_spec(
                "types_loaded",
                &db,
                "types",
                dest_endpoint(dest(), &dest_db, Some("types")),
            ),
        )
        .await
        .ok();
    let progress = wait_for_state(&service, "types", "TableIncrementalSync").await;
    assert_eq!(progress["full_sync"]["rows_copied"], 5, "{progress:#}");
    assert_eq!(progress["full_sync"]["method"], "insert", "{progress:#}");
    assert_same_table(&db, "types", &far_dest, &dest_db, "types_renamed", "id");
    let progress = wait_for_state(&service, "types_loaded", "TableIncrementalSync").await;
    assert_eq!(progress["full_sync"]["method"], "load_data", "{progress:#}");
    assert_same_table(&db, "types", dest(), &dest_db, "types", "id");
    // Generated columns are computed by the destination, from copied values.
    assert_eq!(
        far_dest.admin(&format!(
            "SELECT gv, gs FROM {dest_db}.types_renamed WHERE id = 3"
        )),
        "1\tit's a \\\\ backslash!"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_of_fifty_tables_with_renamed_destination() {
    let db = unique("fifty");
    let mut sql = format!("CREATE DATABASE {db}; USE {db};");
    for n in 0..46 {
        sql.push_str(&format!(
            "CREATE TABLE t{n:02} (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40), k INT, KEY (k));
             INSERT INTO t{n:02} (v, k) SELECT CONCAT('row ', seq, ' of ', {n}), seq % 7 FROM seq_1_to_{};",
            100 + n * 40
        ));
    }
    sql.push_str(
        "CREATE TABLE no_key (a INT, b VARCHAR(10));
         INSERT INTO no_key VALUES (1, 'x'), (1, 'x'), (NULL, NULL), (2, 'y');
         CREATE TABLE by_name (region VARCHAR(20) CHARACTER SET latin1, name VARCHAR(30), n INT,
             PRIMARY KEY (region, name));
         INSERT INTO by_name SELECT CONCAT('r', seq % 5, CHAR(0xE9 USING latin1)), CONCAT('Name', seq), seq FROM seq_1_to_3000;
         CREATE TABLE uniq_not_null (u VARCHAR(10) NOT NULL, v INT, UNIQUE KEY (u));
         INSERT INTO uniq_not_null SELECT CONCAT('u', seq), seq FROM seq_1_to_2500;
         CREATE TABLE empty_one (id INT PRIMARY KEY);
         CREATE VIEW v_join AS SELECT t00.id, t00.v, t01.k FROM t00 JOIN t01 USING (id);
         CREATE VIEW v_on_view AS SELECT id FROM v_join WHERE k > 2;",
    );
    source().admin(&sql);
    let dest_db = unique("fifty_copy");
    let dir = tempfile::tempdir().unwrap();
    let mut config = service::sqlite_config(dir.path());
    config.full_sync.chunk_rows = 500;
    let service = Service::start(config).await;
    service
        .post(
            "create_ccr",
            json!({"name": "fifty", "src": src_endpoint(source(), &db, None),
                   "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    let progress = wait_for_state(&service, "fifty", "DBTablesIncrementalSync").await;
    let full = &progress["full_sync"];
    assert_eq!(full["tables_total"], 50, "{progress:#}");
    assert_eq!(full["tables_done"], 50, "{progress:#}");
    assert_eq!(full["connections"], 4, "{progress:#}");
    assert!(
        full["lock_held_ms"].as_u64().unwrap() < 1000,
        "{progress:#}"
    );
    assert_eq!(full["eta_secs"], 0.0);
    assert_eq!(progress["tables"].as_object().unwrap().len(), 50);

    let mut tables: Vec<String> = (0..46).map(|n| format!("t{n:02}")).collect();
    tables.extend(["no_key", "by_name", "uniq_not_null", "empty_one"].map(String::from));
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    assert_eq!(
        checksums(source(), &db, &names),
        checksums(dest(), &dest_db, &names)
    );
    assert_same_table(&db, "no_key", dest(), &dest_db, "no_key", "a, b");
    assert_same_table(&db, "by_name", dest(), &dest_db, "by_name", "region, name");
    assert_same_table(&db, "t45", dest(), &dest_db, "t45", "id");
    // Secondary keys, built after the rows, end up as on the source.
    assert_eq!(
        dest().admin(&format!("SHOW CREATE TABLE {dest_db}.t07")),
        source().admin(&format!("SHOW CREATE TABLE {db}.t07"))
    );
    // Views follow, pointing at the destination's tables.
    assert_eq!(
        dest().admin(&format!("SELECT COUNT(*) FROM {dest_db}.v_on_view")),
        source().admin(&format!("SELECT COUNT(*) FROM {db}.v_on_view"))
    );
    // Composite string keys were split into several chunks.
    let chunks = dest().admin(&format!(
        "SELECT COUNT(*) FROM {dest_db}._ccr_syncer_chunks WHERE src_table = 'by_name'"
    ));
    assert!(chunks.parse::<u32>().unwrap() >= 6, "{chunks} chunks");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_the_copy_leave_a_copy_as_of_one_position() {
    const N: u64 = 40_000;
    let db = unique("busy");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db}; CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL);
         INSERT INTO {db}.t SELECT seq, 0 FROM seq_1_to_{N};"
    ));
    // Transaction k sets v = k on row k % N + 1 and inserts row N + k: the
    // source as of any commit K is known exactly.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), db.clone());
        tokio::spawn(async move {
            use mysql_async::prelude::*;
            let url = format!("mysql://root@127.0.0.1:{}/{db}", source().port);
            let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
            let mut k = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                k += 1;
                let mut tx = conn
                    .start_transaction(mysql_async::TxOpts::default())
                    .await
                    .unwrap();
                tx.exec_drop("UPDATE t SET v = ? WHERE id = ?", (k, k % N + 1))
                    .await
                    .unwrap();
                tx.exec_drop("INSERT INTO t VALUES (?, ?)", (N + k, k))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            k
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = service::sqlite_config(dir.path());
    config.full_sync.chunk_rows = 2_000;
    let service = Service::start(config).await;
    let dest_db = unique("busy_copy");
    service
        .post(
            "create_ccr",
            table_spec("busy", &db, "t", dest_endpoint(dest(), &dest_db, Some("t"))),
        )
        .await
        .ok();
    wait_for_state(&service, "busy", "TableIncrementalSync").await;
    // Paused (the answer comes once nothing more is applied) while the
    // writer goes on, so the stream cannot have caught up with the writer
    // by the time the copy is read.
    service.post("pause", json!({"name": "busy"})).await.ok();
    let copy = dest().admin(&format!("SELECT id, v FROM {dest_db}.t ORDER BY id"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.await.unwrap();

    let copy: Vec<(u64, u64)> = copy
        .lines()
        .map(|l| {
            let mut p = l.split('\t').map(|x| x.parse::<u64>().unwrap());
            (p.next().unwrap(), p.next().unwrap())
        })
        .collect();
    let k = copy.iter().map(|(_, v)| *v).max().unwrap();
    assert!(k > 0 && k < written, "copy as of commit {k} of {written}");
    let mut expected: Vec<(u64, u64)> = (1..=N).map(|id| (id, 0)).collect();
    for j in 1..=k {
        expected[(j % N) as usize].1 = j;
        expected.push((N + j, j));
    }
    assert_eq!(copy.len(), expected.len(), "row count as of commit {k}");
    let wrong: Vec<_> = copy
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a != b)
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "copy is not the source as of commit {k}: {wrong:?}"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_row_table_copy_survives_a_kill() {
    let db = unique("big");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, s VARCHAR(40), n BIGINT, KEY (n));
         INSERT INTO {db}.t SELECT seq, CONCAT('row-', seq), seq * 3 FROM seq_1_to_1000000;
         ANALYZE TABLE {db}.t;"
    ));
    let dest_db = unique("big_copy");
    let dir = tempfile::tempdir().unwrap();
    let config = "[full_sync]\nconnections = 2\nchunk_rows = 20000\n";
    let service = Service::process(dir.path(), config).await;
    service
        .post(
            "create_ccr",
            table_spec("big", &db, "t", dest_endpoint(dest(), &dest_db, Some("t"))),
        )
        .await
        .ok();
    // Kill it once part of the table is copied.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let copied_before = loop {
        let p = service
            .post("job_progress", json!({"name": "big"}))
            .await
            .ok();
        let copied = p["job_progress"]["full_sync"]["rows_copied"]
            .as_u64()
            .unwrap_or(0);
        if copied >= 100_000 {
            assert!(copied < 1_000_000, "the copy finished before the kill");
            break copied;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {p}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    service.kill();

    let service = Service::process(dir.path(), config).await;
    let progress = wait_for_state(&service, "big", "TableIncrementalSync").await;
    assert_eq!(
        progress["full_sync"]["rows_copied"], 1_000_000,
        "{progress:#}"
    );
    assert_eq!(
        dest().admin(&format!(
            "SELECT COUNT(*), COUNT(DISTINCT id) FROM {dest_db}.t"
        )),
        "1000000\t1000000"
    );
    assert_eq!(
        checksums(source(), &db, &["t"]),
        checksums(dest(), &dest_db, &["t"])
    );
    assert_eq!(
        dest().admin(&format!("SHOW CREATE TABLE {dest_db}.t")),
        source().admin(&format!("SHOW CREATE TABLE {db}.t"))
    );
    // The restarted process copied only what was not committed before the kill.
    let metrics = service.get("metrics").await.text;
    let recopied: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ccr_syncer_full_sync_rows_total{job=\"big\"} "))
        .expect("rows metric")
        .parse()
        .unwrap();
    assert!(
        recopied <= 1_000_000 - copied_before,
        "restart copied {recopied} rows; {copied_before} were done before the kill"
    );
    service.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reload_the_copy_uses_one_connection() {
    let db = unique("noreload");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT);
         INSERT INTO {db}.t SELECT seq, seq FROM seq_1_to_5000;"
    ));
    let dest_db = unique("noreload_copy");
    let mut src = src_endpoint(source(), &db, Some("t"));
    src["user"] = json!(SRC_USER_NO_RELOAD);
    src["password"] = json!(SRC_PASSWORD);
    let service = Service::fresh().await;
    service
        .post(
            "create_ccr",
            json!({"name": "one", "src": src, "dest": dest_endpoint(dest(), &dest_db, Some("t"))}),
        )
        .await
        .ok();
    let progress = wait_for_state(&service, "one", "TableIncrementalSync").await;
    assert_eq!(progress["full_sync"]["connections"], 1, "{progress:#}");
    assert!(progress["full_sync"]["lock_held_ms"].is_null());
    assert_same_table(&db, "t", dest(), &dest_db, "t", "id");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_tables_are_reused_when_equal_and_refused_when_not() {
    let db = source_database();
    let same = unique("same");
    let other = unique("other");
    dest().admin(&format!(
        "CREATE DATABASE {same}; CREATE TABLE {same}.t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO {same}.t VALUES (1, 'stale'), (99, 'stale');
         CREATE DATABASE {other}; CREATE TABLE {other}.t (id INT PRIMARY KEY, v TEXT);"
    ));
    let service = Service::fresh().await;
    let mut spec = table_spec("same", &db, "t", dest_endpoint(dest(), &same, Some("t")));
    spec["allow_table_exists"] = json!(true);
    service.post("create_ccr", spec).await.ok();
    wait_for_state(&service, "same", "TableIncrementalSync").await;
    assert_same_table(&db, "t", dest(), &same, "t", "id");

    let mut spec = table_spec("other", &db, "t", dest_endpoint(dest(), &other, Some("t")));
    spec["allow_table_exists"] = json!(true);
    service.post("create_ccr", spec).await.ok();
    let progress = wait_paused(&service, "other").await;
    let error = progress["last_error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{other}.t")) && error.contains("different definition"),
        "{error}"
    );
    assert_eq!(progress["last_error_code"], "definite", "{progress:#}");
    assert_eq!(progress["progress_state"], "TableFullSync");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_the_destination_refuses_pauses_the_job_with_the_error() {
    let db = source_database();
    let dest_db = unique("refusing");
    dest().admin(&format!(
        "CREATE DATABASE {dest_db}; CREATE TABLE {dest_db}.t (id INT PRIMARY KEY, v VARCHAR(20));
         CREATE TRIGGER {dest_db}.no_rows BEFORE INSERT ON {dest_db}.t FOR EACH ROW
           SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'rows not welcome here';"
    ));
    let service = Service::fresh().await;
    let mut spec = table_spec(
        "refused",
        &db,
        "t",
        dest_endpoint(dest(), &dest_db, Some("t")),
    );
    spec["allow_table_exists"] = json!(true);
    service.post("create_ccr", spec).await.ok();
    let progress = wait_paused(&service, "refused").await;
    let error = progress["last_error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{dest_db}.t")) && error.contains("rows not welcome here"),
        "{error}"
    );
    // Fixed on the destination, resume finishes the copy.
    dest().admin(&format!("DROP TRIGGER {dest_db}.no_rows"));
    service
        .post("resume", json!({"name": "refused"}))
        .await
        .ok();
    let progress = wait_for_state(&service, "refused", "TableIncrementalSync").await;
    assert!(progress["last_error"].is_null(), "{progress:#}");
    assert_same_table(&db, "t", dest(), &dest_db, "t", "id");
    service.stop().await;
}

async fn wait_paused(service: &Service, name: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = service
            .post("job_progress", json!({"name": name}))
            .await
            .ok();
        if p["job_progress"]["state"] == "paused" {
            return p["job_progress"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not paused: {p:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_crash_mid_copy_is_retried_and_the_copy_resumes() {
    let mut crashing = with_users(MariaDb::start(ServerOptions::plain()));
    let db = unique("outage");
    source().admin(&format!(
        "CREATE DATABASE {db}; USE {db}; CREATE TABLE t (id INT PRIMARY KEY, s VARCHAR(40));
         INSERT INTO t SELECT seq, CONCAT('row-', seq) FROM seq_1_to_400000; ANALYZE TABLE t;"
    ));
    let dest_db = unique("outage_copy");
    let dir = tempfile::tempdir().unwrap();
    let mut config = service::sqlite_config(dir.path());
    config.full_sync.chunk_rows = 10_000;
    config.full_sync.connections = 2;
    let service = Service::start(config).await;
    service
        .post(
            "create_ccr",
            table_spec(
                "outage",
                &db,
                "t",
                dest_endpoint(&crashing, &dest_db, Some("t")),
            ),
        )
        .await
        .ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = service
            .post("job_progress", json!({"name": "outage"}))
            .await
            .ok();
        let copied = p["job_progress"]["full_sync"]["rows_copied"]
            .as_u64()
            .unwrap_or(0);
        if copied > 0 {
            assert!(copied < 400_000, "the copy finished before the crash");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {p}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::task::block_in_place(|| crashing.crash_and_restart());

    let progress = wait_for_state(&service, "outage", "TableIncrementalSync").await;
    let full = &progress["full_sync"];
    assert!(full["retries"].as_u64().unwrap() >= 1, "{progress:#}");
    assert!(full["last_retry_error"].is_string(), "{progress:#}");
    assert!(progress["last_error"].is_null(), "{progress:#}");
    assert_eq!(full["rows_copied"], 400_000, "{progress:#}");
    assert_eq!(
        checksums(source(), &db, &["t"]),
        checksums(&crashing, &dest_db, &["t"])
    );
    let metrics = service.get("metrics").await.text;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("ccr_syncer_job_retries_total{job=\"outage\"}") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    service.stop().await;
}
