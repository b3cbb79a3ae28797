//! create_ccr checks both servers before storing anything; every failure says
//! what to fix and leaves no job behind.

use crate::harness::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

async fn refused(service: &Service, spec: Value, status: u16, needles: &[&str]) {
    let reply = service.post("create_ccr", spec).await;
    for needle in needles {
        reply.fails(status, needle);
    }
    assert!(
        job_names(service).await.is_empty(),
        "a refused create_ccr stored a job"
    );
}

/// A source whose binary log is STATEMENT with MINIMAL images: two problems.
fn statement_source() -> &'static MariaDb {
    static S: OnceLock<MariaDb> = OnceLock::new();
    S.get_or_init(|| {
        let s = MariaDb::start(ServerOptions {
            log_bin: true,
            binlog_format: "STATEMENT",
            binlog_row_image: "MINIMAL",
            ..ServerOptions::source()
        });
        s.admin("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)");
        s
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_502() {
    let service = Service::fresh().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut spec = table_job("unreach");
    spec["dest"]["port"] = json!(closed);
    refused(
        &service,
        spec,
        502,
        &["destination cannot reach 127.0.0.1:", "Connection refused"],
    )
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused() {
    let service = Service::fresh().await;
    let mut spec = table_job("badpw");
    spec["src"]["password"] = json!("wrong");
    refused(
        &service,
        spec,
        400,
        &[
            "source 127.0.0.1:",
            "refused the connection",
            "Access denied",
        ],
    )
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_without_binary_log() {
    let service = Service::fresh().await;
    // The destination server has no binary log: use it as a source.
    let db = unique("nobin");
    dest().admin(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY)"
    ));
    let mut spec = table_job("nobin");
    spec["src"]["port"] = json!(dest().port);
    spec["src"]["user"] = json!("root");
    spec["src"]["password"] = json!("");
    spec["src"]["database"] = json!(db);
    refused(
        &service,
        spec,
        400,
        &["has the binary log off; start it with log_bin"],
    )
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_with_statement_format_names_every_problem() {
    let service = Service::fresh().await;
    let s = statement_source();
    let spec = json!({"name": "stmt",
        "src": {"host": "127.0.0.1", "port": s.port, "user": "root", "password": "", "database": "app", "table": "t"},
        "dest": dest_endpoint(dest(), &unique("dst"), Some("t"))});
    let want = format!(
        "source 127.0.0.1:{} has binlog_format=STATEMENT; set binlog_format=ROW; has binlog_row_image=MINIMAL; set binlog_row_image=FULL",
        s.port
    );
    refused(&service, spec, 400, &[&want]).await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_user_without_replication_grants() {
    let service = Service::fresh().await;
    let user = unique("reader");
    let mut spec = table_job("nogrant");
    let db = spec["src"]["database"].as_str().unwrap().to_string();
    source().admin(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'; GRANT SELECT ON {db}.* TO '{user}'@'%'"
    ));
    spec["src"]["user"] = json!(user);
    spec["src"]["password"] = json!("pw");
    refused(
        &service,
        spec.clone(),
        400,
        &["lacks REPLICATION SLAVE, REPLICATION CLIENT;"],
    )
    .await;
    // Database-level SELECT is enough once replication is granted.
    source().admin(&format!(
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'"
    ));
    service.post("create_ccr", spec).await.ok();
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_user_without_select() {
    let service = Service::fresh().await;
    let user = unique("blind");
    source().admin(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'"
    ));
    let mut spec = table_job("nosel");
    spec["src"]["user"] = json!(user);
    spec["src"]["password"] = json!("pw");
    refused(&service, spec, 400, &["lacks SELECT"]).await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_source_database_or_table() {
    let service = Service::fresh().await;
    let mut spec = table_job("missing");
    let db = spec["src"]["database"].as_str().unwrap().to_string();
    spec["src"]["table"] = json!("nope");
    refused(
        &service,
        spec.clone(),
        400,
        &[&format!("has no table {db}.nope")],
    )
    .await;
    spec["src"]["database"] = json!("no_such_db");
    refused(&service, spec, 400, &["has no database no_such_db"]).await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_destination_table_needs_allow_table_exists() {
    let service = Service::fresh().await;
    for (name, mut spec) in [
        ("tblexists", table_job("tblexists")),
        ("dbexists", db_job("dbexists")),
    ] {
        let dest_db = spec["dest"]["database"].as_str().unwrap().to_string();
        dest().admin(&format!(
            "CREATE DATABASE {dest_db}; CREATE TABLE {dest_db}.t (id INT)"
        ));
        refused(
            &service,
            spec.clone(),
            409,
            &[&format!(
                "already has {dest_db}.t; drop it or set allow_table_exists"
            )],
        )
        .await;
        spec["allow_table_exists"] = json!(true);
        service.post("create_ccr", spec).await.ok();
        service.post("delete", json!({"name": name})).await.ok();
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_user_without_write_grants() {
    let service = Service::fresh().await;
    let user = unique("ro");
    dest().admin(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'; GRANT SELECT ON *.* TO '{user}'@'%'"
    ));
    let mut spec = table_job("rodest");
    spec["dest"]["user"] = json!(user);
    spec["dest"]["password"] = json!("pw");
    refused(
        &service,
        spec,
        400,
        &["lacks INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX"],
    )
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_destination_is_refused() {
    let service = Service::fresh().await;
    let ro = mariadb::with_users(MariaDb::start(ServerOptions {
        extra: vec!["--read-only"],
        ..ServerOptions::plain()
    }));
    let mut spec = table_job("ro_server");
    spec["dest"]["port"] = json!(ro.port);
    refused(
        &service,
        spec,
        400,
        &["is read-only (read_only=ON)", "point dest at the primary"],
    )
    .await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_cannot_be_the_source_database() {
    let service = Service::fresh().await;
    let mut spec = db_job("self");
    spec["dest"] = spec["src"].clone();
    spec["dest"]["user"] = json!("root");
    spec["dest"]["password"] = json!("");
    refused(&service, spec, 400, &["is the source server"]).await;
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_with_one_name_exactly_one_succeeds() {
    let service = std::sync::Arc::new(Service::fresh().await);
    let spec = table_job("race");
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let service = service.clone();
            let spec = spec.clone();
            tokio::spawn(async move { service.post("create_ccr", spec).await })
        })
        .collect();
    let mut ok = 0;
    for attempt in attempts {
        let reply = attempt.await.unwrap();
        if reply.status == 200 {
            ok += 1;
        } else {
            reply.fails(409, "job race already exists");
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(job_names(&service).await, vec!["race"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_versioned_by_transaction_are_refused_not_left_out() {
    let service = Service::fresh().await;
    let spec = db_job("versioned");
    let db = spec["src"]["database"].as_str().unwrap().to_string();
    source().admin(&format!(
        "CREATE TABLE {db}.hist (id INT PRIMARY KEY, v INT,
           rs BIGINT UNSIGNED GENERATED ALWAYS AS ROW START, re BIGINT UNSIGNED GENERATED ALWAYS AS ROW END,
           PERIOD FOR SYSTEM_TIME(rs, re)) ENGINE=InnoDB WITH SYSTEM VERSIONING"
    ));
    refused(
        &service,
        spec.clone(),
        400,
        &["tables versioned by transaction id in the job's scope (hist)"],
    )
    .await;
    // A table job of another table of that database is fine.
    let mut table = spec;
    table["name"] = json!("versioned_t");
    table["src"]["table"] = json!("t");
    table["dest"]["table"] = json!("t");
    service.post("create_ccr", table).await.ok();
    wait_for_state(&service, "versioned_t", "TableIncrementalSync").await;
    // Given named period columns while streaming: the job holds on it.
    source().admin(&format!(
        "ALTER TABLE {db}.t ADD COLUMN rs BIGINT UNSIGNED GENERATED ALWAYS AS ROW START,
           ADD COLUMN re BIGINT UNSIGNED GENERATED ALWAYS AS ROW END,
           ADD PERIOD FOR SYSTEM_TIME(rs, re), ADD SYSTEM VERSIONING"
    ));
    let held = poll_job(&service, "job_status", "versioned_t", 30, "held", |s| {
        s["state"] == "paused"
    })
    .await;
    let p = service
        .post("job_progress", json!({"name": "versioned_t"}))
        .await
        .ok();
    assert!(
        p["job_progress"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("by transaction id")),
        "{held:#} {p:#}"
    );
    service.stop().await;
}
