//! TLS to servers, end to end, against a real MariaDB started with its own
//! certificate (`--ssl-ca/--ssl-cert/--ssl-key`, names `DNS:db.test` only,
//! so dialling 127.0.0.1 is a name mismatch) and with MariaDB's ed25519
//! plugin: every mode at create time, the whole path over TLS with accounts
//! that `REQUIRE SSL`, `update_tls` on a running job, the MySQL store over
//! TLS, and ed25519 accounts for source, destination and store.

use crate::full_sync::checksums;
use crate::harness::certs::Certs;
use crate::harness::*;
use crate::incremental::wait_caught_up;
use ccr_syncer::config::{Config, StoreConfig};
use ccr_syncer::secret::Secret;
use ccr_syncer::tls::{TlsMode, TlsOptions};
use serde_json::{json, Value};
use std::sync::OnceLock;

const TLS_SRC: &str = "tls_src";
const TLS_DEST: &str = "tls_dest";
const TLS_PASSWORD: &str = "Tls-Pa55word";
const ED_USER: &str = "ed_user";
const ED_PASSWORD: &str = "Ed-Pa55word";

struct TlsServer {
    /// A source: binary log on, ROW.
    server: MariaDb,
    /// A destination (and store): no binary log.
    dest: MariaDb,
    certs: Certs,
    _dir: tempfile::TempDir,
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The TLS servers, shared by this module.
fn tls_server() -> &'static TlsServer {
    static SERVER: OnceLock<TlsServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("certificate folder");
        let certs = Certs::make(dir.path(), "DNS:db.test");
        let tls = vec![
            leak(format!("--ssl-ca={}", certs.ca.display())),
            leak(format!("--ssl-cert={}", certs.server_cert.display())),
            leak(format!("--ssl-key={}", certs.server_key.display())),
            "--plugin-load-add=auth_ed25519",
        ];
        let mut options = ServerOptions::source();
        options.extra = tls.clone();
        let server = MariaDb::start(options);
        let mut options = ServerOptions::plain();
        options.extra = tls;
        let dest = MariaDb::start(options);
        for s in [&server, &dest] {
            create_tls_users(s);
        }
        TlsServer {
            server,
            dest,
            certs,
            _dir: dir,
        }
    })
}

fn create_tls_users(server: &MariaDb) {
    server.admin(&format!(
            "CREATE USER '{TLS_SRC}'@'%' IDENTIFIED BY '{TLS_PASSWORD}' REQUIRE SSL;
             GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD, SELECT, SHOW VIEW ON *.* TO '{TLS_SRC}'@'%';
             CREATE USER '{TLS_DEST}'@'%' IDENTIFIED BY '{TLS_PASSWORD}' REQUIRE SSL;
             GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE VIEW, SHOW VIEW, PROCESS ON *.* TO '{TLS_DEST}'@'%';
             CREATE USER '{ED_USER}'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('{ED_PASSWORD}');
             GRANT ALL PRIVILEGES ON *.* TO '{ED_USER}'@'%';"
    ));
}

/// A source endpoint on the TLS source.
fn endpoint(user: &str, password: &str, database: &str, tls: Value) -> Value {
    on(&tls_server().server, user, password, database, tls)
}

/// A destination endpoint on the TLS destination.
fn dest_on(user: &str, password: &str, database: &str, tls: Value) -> Value {
    on(&tls_server().dest, user, password, database, tls)
}

fn on(server: &MariaDb, user: &str, password: &str, database: &str, tls: Value) -> Value {
    json!({"host": "127.0.0.1", "port": server.port, "user": user, "password": password,
           "database": database, "tls": tls})
}

/// Waits until the job stops with `needle` in its `last_error`.
async fn wait_stopped_with(service: &Service, name: &str, needle: &str) {
    let stopped = poll_job(service, "job_status", name, 60, "a stop", |s| {
        s["state"] == "paused"
    })
    .await;
    assert!(
        stopped["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(needle)),
        "{stopped:#}"
    );
}

/// The MySQL store on the TLS destination, as the ed25519 account, verified
/// against `ca`.
fn ed25519_store(ca: &std::path::Path) -> StoreConfig {
    StoreConfig::Mysql {
        host: "127.0.0.1".into(),
        port: tls_server().dest.port,
        user: ED_USER.into(),
        password: Secret::new(ED_PASSWORD),
        database: unique("tls_meta"),
        tls: TlsOptions {
            mode: TlsMode::VerifyCa,
            ca: Some(ca.to_path_buf()),
            ..TlsOptions::default()
        },
    }
}

/// A database on the TLS server with a table of a few rows.
fn tls_database(prefix: &str) -> String {
    let db = unique(prefix);
    tls_server().server.admin(&format!(
        "CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO {db}.t VALUES (1, 'a'), (2, 'b'), (3, 'c');"
    ));
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_is_checked_when_the_job_is_created() {
    let t = tls_server();
    let ca = t.certs.ca.display().to_string();
    let other_ca = t.certs.other_ca.display().to_string();
    let service = Service::fresh().await;
    let db = tls_database("tls_modes");
    let plain_dest = || dest_endpoint(dest(), &unique("tls_modes_copy"), None);
    let refused: [(Value, &str); 5] = [
        // The account says REQUIRE SSL: plain text is refused by the server.
        (json!({"mode": "disabled"}), "Access denied"),
        (
            json!({"mode": "verify_ca", "ca": other_ca}),
            "certificate not signed by the given CA",
        ),
        (
            json!({"mode": "verify_identity", "ca": ca}),
            "name mismatch",
        ),
        (
            json!({"mode": "verify_identity", "ca": ca, "server_name": "other.test"}),
            "name mismatch",
        ),
        (
            json!({"mode": "verify_ca", "ca": "/nonexistent/ca.pem"}),
            "src.tls.ca /nonexistent/ca.pem cannot be read",
        ),
    ];
    for (tls, needle) in refused {
        let name = unique("tls_refused");
        let reply = service
            .post(
                "create_ccr",
                json!({"name": name, "src": endpoint(TLS_SRC, TLS_PASSWORD, &db, tls.clone()),
                       "dest": plain_dest()}),
            )
            .await;
        reply.fails(400, needle);
        assert!(
            job_names(&service).await.is_empty(),
            "{tls}: nothing stored"
        );
    }
    // A server without TLS: `required` is refused, `preferred` goes plain.
    let plain_src = {
        let mut e = src_endpoint(source(), &source_database(), None);
        e["tls"] = json!({"mode": "required"});
        e
    };
    service
        .post(
            "create_ccr",
            json!({"name": "tls_no_tls", "src": plain_src, "dest": plain_dest()}),
        )
        .await
        .fails(400, "server does not offer TLS");
    // Bad settings are refused before any server is asked.
    for (tls, needle) in [
        (json!({"mode": "strict"}), "unknown variant `strict`"),
        (
            json!({"mode": "required", "cert": ca}),
            "src.tls.cert and src.tls.key go together",
        ),
        (
            json!({"mode": "required", "colour": 1}),
            "unknown field `colour`",
        ),
    ] {
        service
            .post(
                "create_ccr",
                json!({"name": "tls_bad", "src": endpoint(TLS_SRC, TLS_PASSWORD, &db, tls),
                       "dest": plain_dest()}),
            )
            .await
            .fails(400, needle);
    }
    // Each accepted mode, through the same connection code every job uses.
    for tls in [
        TlsOptions::with_mode(TlsMode::Preferred),
        TlsOptions::with_mode(TlsMode::Required),
        TlsOptions {
            mode: TlsMode::VerifyCa,
            ca: Some(t.certs.ca.clone()),
            ..TlsOptions::default()
        },
        TlsOptions {
            mode: TlsMode::VerifyIdentity,
            ca: Some(t.certs.ca.clone()),
            server_name: Some("db.test".into()),
            ..TlsOptions::default()
        },
    ] {
        let password = Secret::new(TLS_PASSWORD);
        let addr = ccr_syncer::db::ServerAddr {
            host: "127.0.0.1",
            port: t.server.port,
            user: TLS_SRC,
            password: &password,
            tls: &tls,
        };
        let mut conn = ccr_syncer::db::connect(&addr, None, std::time::Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", tls.mode));
        use mysql_async::prelude::*;
        let cipher: Option<(String, String)> = conn
            .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            .await
            .unwrap();
        assert!(
            cipher.is_some_and(|(_, c)| !c.is_empty()),
            "{:?}: the session is encrypted",
            tls.mode
        );
        conn.disconnect().await.unwrap();
    }
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_runs_over_tls_and_update_tls_takes_effect() {
    let t = tls_server();
    let ca = t.certs.ca.display().to_string();
    let db = tls_database("tls_path");
    let dest_db = unique("tls_path_copy");
    let service = Service::fresh().await;
    let name = unique("tls_path");
    service
        .post(
            "create_ccr",
            json!({"name": name,
                   "src": endpoint(TLS_SRC, TLS_PASSWORD, &db,
                                   json!({"mode": "verify_identity", "ca": ca, "server_name": "db.test"})),
                   "dest": dest_on(TLS_DEST, TLS_PASSWORD, &dest_db,
                                   json!({"mode": "verify_ca", "ca": ca}))}),
        )
        .await
        .ok();
    wait_for_state(&service, &name, "DBIncrementalSync").await;
    t.server.admin(&format!(
        "USE {db}; INSERT INTO t VALUES (4, 'd'); UPDATE t SET v = 'B' WHERE id = 2;
         DELETE FROM t WHERE id = 1; CREATE TABLE u (k INT PRIMARY KEY); INSERT INTO u VALUES (7);"
    ));
    wait_caught_up(&service, &name, &t.server).await;
    assert_eq!(
        checksums(&t.server, &db, &["t", "u"]),
        checksums(&t.dest, &dest_db, &["t", "u"])
    );
    // job_detail shows the mode and the CA, never key material.
    let detail = service.post("job_detail", json!({"name": name})).await.ok();
    let d = &detail["job_detail"];
    assert_eq!(d["src"]["tls"]["mode"], "verify_identity", "{d:#}");
    assert_eq!(d["src"]["tls"]["server_name"], "db.test");
    assert_eq!(d["dest"]["tls"]["mode"], "verify_ca");
    assert_eq!(d["dest"]["tls"]["ca"], ca.as_str());
    assert!(!detail.to_string().contains(TLS_PASSWORD));

    // Plain text to the destination: its account refuses, the job stops
    // and says why; back to TLS and resume, and it carries on.
    service
        .post(
            "update_tls",
            json!({"name": name, "dest": {"mode": "disabled"}}),
        )
        .await
        .ok();
    t.server
        .admin(&format!("INSERT INTO {db}.t VALUES (5, 'e')"));
    wait_stopped_with(&service, &name, "Access denied").await;
    service
        .post(
            "update_tls",
            json!({"name": name, "dest": {"mode": "required"}}),
        )
        .await
        .ok();
    service.post("resume", json!({"name": name})).await.ok();
    wait_caught_up(&service, &name, &t.server).await;
    assert_eq!(
        checksums(&t.server, &db, &["t", "u"]),
        checksums(&t.dest, &dest_db, &["t", "u"])
    );
    // update_tls checks what it is given and changes nothing when it fails.
    service
        .post("update_tls", json!({"name": name}))
        .await
        .fails(400, "give src, dest or both");
    service
        .post(
            "update_tls",
            json!({"name": name, "src": {"mode": "verify_ca", "ca": "/nonexistent"}}),
        )
        .await
        .fails(400, "src.ca /nonexistent cannot be read");
    service
        .post(
            "update_tls",
            json!({"name": "nosuch", "src": {"mode": "required"}}),
        )
        .await
        .fails(404, "nosuch");
    let detail = service.post("job_detail", json!({"name": name})).await.ok();
    assert_eq!(
        detail["job_detail"]["src"]["tls"]["mode"],
        "verify_identity"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimum_mode_refuses_weaker_jobs_new_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(service::sqlite_config(dir.path())).await;
    let name = unique("tls_weak");
    let mut body = db_job(&name);
    body["src"]["tls"] = json!({"mode": "disabled"});
    service.post("create_ccr", body).await.ok();
    wait_for_state(&service, &name, "DBTablesIncrementalSync").await;
    service.stop().await;
    // The operator raises the minimum: the stored job stops and says why,
    // and create_ccr refuses what is below it.
    let mut config = service::sqlite_config(dir.path());
    config.tls.minimum_mode = TlsMode::Required;
    config.tls.default_mode = TlsMode::Required;
    let service = Service::start(config).await;
    wait_stopped_with(&service, &name, "src tls mode disabled is below").await;
    let mut body = db_job(&unique("tls_weak2"));
    body["dest"]["tls"] = json!({"mode": "preferred"});
    service.post("create_ccr", body).await.fails(
        400,
        "dest.tls.mode preferred is below this service's tls.minimum_mode required",
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_accounts_and_the_mysql_store_over_tls() {
    let t = tls_server();
    // The store: MySQL over verify_ca, logged in with an ed25519 account.
    let store = ed25519_store(&t.certs.ca);
    let service = Service::start(Config::with_store(store.clone())).await;
    let db = tls_database("ed_src");
    let dest_db = unique("ed_copy");
    let name = unique("ed");
    service
        .post(
            "create_ccr",
            json!({"name": name,
                   "src": endpoint(ED_USER, ED_PASSWORD, &db, json!({"mode": "preferred"})),
                   "dest": dest_on(ED_USER, ED_PASSWORD, &dest_db, json!({"mode": "disabled"}))}),
        )
        .await
        .ok();
    wait_for_state(&service, &name, "DBIncrementalSync").await;
    t.server
        .admin(&format!("INSERT INTO {db}.t VALUES (9, 'z')"));
    wait_caught_up(&service, &name, &t.server).await;
    assert_eq!(
        checksums(&t.server, &db, &["t"]),
        checksums(&t.dest, &dest_db, &["t"])
    );
    service.stop().await;
    // The store reopens (over TLS, as ed25519) with the job in it.
    let service = Service::start(Config::with_store(store)).await;
    assert_eq!(job_names(&service).await, vec![name]);
    service.stop().await;
    // A store that cannot be verified is a clear error at start.
    let err = ccr_syncer::store::open(&ed25519_store(&t.certs.other_ca), Default::default())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("certificate not signed by the given CA"),
        "{err}"
    );
}

/// An `ed25519` login never fails by chance: the driver drops a trailing
/// zero byte of the server's random nonce (1 login in 256 would be refused),
/// and `db::connect` logs in again. 600 logins without the retry fail at
/// least once nine times in ten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_logins_never_fail_by_chance() {
    let t = tls_server();
    let password = Secret::new(ED_PASSWORD);
    let tls = TlsOptions {
        mode: TlsMode::Disabled,
        ..TlsOptions::default()
    };
    let addr = ccr_syncer::db::ServerAddr {
        host: "127.0.0.1",
        port: t.dest.port,
        user: ED_USER,
        password: &password,
        tls: &tls,
    };
    for i in 0..600 {
        let conn = ccr_syncer::db::connect(&addr, None, std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("login {i}: {e}"));
        let _ = conn.disconnect().await;
    }
}
