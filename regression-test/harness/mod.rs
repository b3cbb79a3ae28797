//! The one shared harness: real `mariadbd` servers ([`mariadb`]), the service
//! in-process ([`service`]) and builders for job specs.

pub mod certs;
pub mod galera;
pub mod mariadb;
pub mod proxy;
pub mod s3;
pub mod service;

pub use mariadb::{dest, source, unique, MariaDb, ServerOptions};
pub use proxy::Proxy;
pub use service::Service;

use mariadb::{DEST_PASSWORD, DEST_USER, SRC_PASSWORD, SRC_USER};
use serde_json::{json, Value};

/// A source endpoint on `server` as the least-privileged source user.
pub fn src_endpoint(server: &MariaDb, database: &str, table: Option<&str>) -> Value {
    json!({"host": "127.0.0.1", "port": server.port, "user": SRC_USER, "password": SRC_PASSWORD,
           "database": database, "table": table})
}

/// A destination endpoint on `server` as the least-privileged destination user.
pub fn dest_endpoint(server: &MariaDb, database: &str, table: Option<&str>) -> Value {
    json!({"host": "127.0.0.1", "port": server.port, "user": DEST_USER, "password": DEST_PASSWORD,
           "database": database, "table": table})
}

/// A fresh source database with one table `t` holding a few rows.
pub fn source_database() -> String {
    let db = unique("src");
    source().admin(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO {db}.t VALUES (1, 'a'), (2, 'b'); CREATE TABLE {db}.u (id INT PRIMARY KEY)"
    ));
    db
}

/// A `create_ccr` body for a table job from a fresh source database.
pub fn table_job(name: &str) -> Value {
    let db = source_database();
    json!({"name": name,
           "src": src_endpoint(source(), &db, Some("t")),
           "dest": dest_endpoint(dest(), &unique("dst"), Some("t"))})
}

/// A `create_ccr` body for a database job from a fresh source database.
pub fn db_job(name: &str) -> Value {
    let db = source_database();
    json!({"name": name,
           "src": src_endpoint(source(), &db, None),
           "dest": dest_endpoint(dest(), &unique("dst"), None)})
}

pub async fn job_names(service: &Service) -> Vec<String> {
    let body = service.post("list_jobs", json!({})).await.ok();
    serde_json::from_value(body["jobs"].clone()).expect("jobs is a list of names")
}

pub async fn job_status(service: &Service, name: &str) -> (String, String) {
    let body = service.post("job_status", json!({"name": name})).await.ok();
    let status = &body["status"];
    assert_eq!(status["name"], name);
    (
        status["state"].as_str().unwrap_or_default().to_string(),
        status["progress_state"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// Waits (up to two minutes) until the job reaches `progress_state`; fails
/// with the job's progress (and its last error) if it does not.
pub async fn wait_for_state(service: &Service, name: &str, progress_state: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let body = service
            .post("job_progress", json!({"name": name}))
            .await
            .ok();
        let progress = body["job_progress"].clone();
        // A database job passes DBTablesIncrementalSync as soon as every
        // table is past its snapshot, often at once.
        let reached = progress["progress_state"] == progress_state
            || (progress_state == "DBTablesIncrementalSync"
                && progress["progress_state"] == "DBIncrementalSync");
        if reached {
            return progress;
        }
        assert!(
            progress["state"] != "paused" || progress["last_error"].is_null(),
            "job {name} stopped before reaching {progress_state}: {progress:#}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "job {name} did not reach {progress_state}: {progress:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A new source database named after `prefix` holding
/// `t (id INT PRIMARY KEY, v INT)` with rows 1..=`rows`, all `v = 0`;
/// returns its name.
pub fn table_t(server: &MariaDb, prefix: &str, rows: u32) -> String {
    let db = unique(prefix);
    server.admin(&format!(
        "CREATE DATABASE {db}; USE {db};
         CREATE TABLE t (id INT PRIMARY KEY, v INT);
         INSERT INTO t SELECT seq, 0 FROM seq_1_to_{rows};"
    ));
    db
}

/// Polls job `name` with `operation` (`job_status` or `job_progress`)
/// until `ready` holds on its answer (the object under `status` or
/// `job_progress`), which it returns; panics with the last answer, saying
/// `what` was awaited, after `secs` seconds.
pub async fn poll_job(
    service: &Service,
    operation: &str,
    name: &str,
    secs: u64,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let key = if operation == "job_status" {
        "status"
    } else {
        operation
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let answer = service.post(operation, json!({"name": name})).await.ok()[key].clone();
        if ready(&answer) {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {name}: {what} not seen within {secs} s: {answer:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Continuous writes on the shared source: transaction `i` is `txn(i)`,
/// run in database `db` in batches of `batch`, 10 ms apart, until stopped.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn start(db: &str, batch: u64, txn: impl Fn(u64) -> String + Send + 'static) -> Writer {
        Writer::start_on(source().socket(), db, batch, txn)
    }

    /// The same on the server whose socket is `socket` (a test's own).
    pub fn start_on(
        socket: std::path::PathBuf,
        db: &str,
        batch: u64,
        txn: impl Fn(u64) -> String + Send + 'static,
    ) -> Writer {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, db) = (stop.clone(), db.to_string());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let mut sql = format!("USE {db};");
                    for _ in 0..batch {
                        sql.push_str(&txn(i));
                        i += 1;
                    }
                    if let Err(e) = mariadb::sql_on_socket(&socket, &sql) {
                        panic!("the writer's SQL failed: {sql}\n{e}");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            })
        };
        Writer { stop, thread }
    }

    /// Stops after the batch under way.
    pub fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("the writer thread");
    }
}
