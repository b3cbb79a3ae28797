//! Secrets stay secret: the API over HTTPS only, the store private on disk
//! and its passwords encrypted with a key file (first start, restart, wrong
//! or missing key, rotation), and no password in any log line (at trace
//! level) or API answer while the source's binlog carries account statements.

use crate::harness::certs::Certs;
use crate::harness::mariadb::{DEST_PASSWORD, SRC_PASSWORD};
use crate::harness::*;
use crate::incremental::wait_caught_up;
use ccr_syncer::config::ApiTls;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `GET /path` over HTTPS, trusting only `ca`; the status line and body.
async fn https_get(addr: std::net::SocketAddr, ca: &Path, path: &str) -> Result<String, String> {
    crate::harness::certs::https(addr, ca, "GET", path, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_https_only_when_it_has_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(&dir.path().join("certs"), "IP:127.0.0.1,DNS:localhost");
    let mut config = service::sqlite_config(&dir.path().join("db"));
    config.api_tls = Some(ApiTls {
        cert: certs.server_cert.clone(),
        key: certs.server_key.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ccr_syncer::app::run(config, listener, async move {
        let _ = rx.await;
    }));
    let mut answer = Err(String::new());
    for _ in 0..200 {
        answer = https_get(addr, &certs.ca, "version").await;
        if answer.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let answer = answer.expect("/version over HTTPS");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"version\""), "{answer}");
    // Plain HTTP on the same port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/version"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // A client that does not trust the certificate is refused.
    let err = https_get(addr, &certs.other_ca, "version")
        .await
        .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("issuer"),
        "{err}"
    );
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();

    // A certificate that does not load stops the start, saying which file.
    let mut config = service::sqlite_config(&dir.path().join("db2"));
    config.api_tls = Some(ApiTls {
        cert: certs.server_key.clone(),
        key: certs.server_key.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = ccr_syncer::app::run(config, listener, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tls_cert") && err.contains("no PEM certificate"),
        "{err}"
    );
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ccr-syncer")
}

/// Runs the binary on `dir`'s store with `config`, expecting it to refuse
/// to start; its standard error.
fn refused_start(dir: &Path, config: &str) -> String {
    let config_file = dir.join("refused.toml");
    std::fs::write(&config_file, config).unwrap();
    let out = std::process::Command::new(binary())
        .arg("--config")
        .arg(&config_file)
        .args(["--port", "0", "--db-dir"])
        .arg(dir.join("db"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the service started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for file in ["ccr.db", "ccr.db-wal", "ccr.db-shm"] {
        if let Ok(b) = std::fs::read(dir.join("db").join(file)) {
            all.extend(b);
        }
    }
    all
}

/// Every `ccr_jobs` row, as text.
fn store_rows(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join("db").join("ccr.db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT name, spec, src_password, dest_password, run_state, progress_state FROM ccr_jobs ORDER BY name")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((0..6)
                .map(|i| r.get::<_, String>(i))
                .collect::<Result<Vec<_>, _>>()?
                .join("|"))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn generate_key(path: &Path) {
    let out = std::process::Command::new(binary())
        .args(["secret-key", "generate"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key_config(key: Option<&PathBuf>, previous: Option<&PathBuf>) -> String {
    let mut c = String::new();
    if let Some(k) = key {
        c.push_str(&format!(
            "secret_key_file = {:?}\n",
            k.display().to_string()
        ));
    }
    if let Some(p) = previous {
        c.push_str(&format!(
            "previous_secret_key_file = {:?}\n",
            p.display().to_string()
        ));
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_passwords_are_private_and_encrypted_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, other) = (dir.path().join("key"), dir.path().join("other-key"));
    generate_key(&key);
    generate_key(&other);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
    let again = std::process::Command::new(binary())
        .args(["secret-key", "generate"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a key file is never overwritten");

    // A store written before a key was given: passwords in clear, file 0600.
    let service = Service::process(dir.path(), "").await;
    let body = db_job("sealed");
    let src_db = body["src"]["database"].as_str().unwrap().to_string();
    service.post("create_ccr", body).await.ok();
    wait_for_state(&service, "sealed", "DBIncrementalSync").await;
    assert_eq!(mode(&dir.path().join("db")), 0o700);
    for file in ["ccr.db", "ccr.db-wal", "ccr.db-shm"] {
        assert_eq!(mode(&dir.path().join("db").join(file)), 0o600, "{file}");
    }
    assert!(
        holds(&store_bytes(dir.path()), SRC_PASSWORD),
        "clear without a key"
    );
    service.kill();

    // First start with the key: every password is encrypted, nothing clear
    // is left on disk, and the job runs (its passwords decrypt).
    let service = Service::process(dir.path(), &key_config(Some(&key), None)).await;
    let bytes = store_bytes(dir.path());
    assert!(!holds(&bytes, SRC_PASSWORD) && !holds(&bytes, DEST_PASSWORD));
    assert!(holds(&bytes, "enc1:"));
    source().admin(&format!("INSERT INTO {src_db}.t VALUES (10, 'sealed')"));
    wait_caught_up(&service, "sealed", source()).await;
    // A new job's passwords are encrypted as they are stored.
    service.post("create_ccr", db_job("sealed2")).await.ok();
    let bytes = store_bytes(dir.path());
    assert!(!holds(&bytes, SRC_PASSWORD) && !holds(&bytes, DEST_PASSWORD));
    service.kill();

    // Without the key, or with another one: a clear error, nothing changed.
    let before = store_rows(dir.path());
    let err = refused_start(dir.path(), "");
    assert!(
        err.contains("encrypted") && err.contains("--secret-key-file"),
        "{err}"
    );
    let err = refused_start(dir.path(), &key_config(Some(&other), None));
    assert!(err.contains("wrong key"), "{err}");
    assert_eq!(
        store_rows(dir.path()),
        before,
        "a refused start changed the store"
    );

    // Rotation: the old key as previous, the new one as current; the store
    // file made readable by others meanwhile is warned about.
    let file = dir.path().join("db").join("ccr.db");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let service = Service::process(dir.path(), &key_config(Some(&other), Some(&key))).await;
    let log = std::fs::read_to_string(dir.path().join("ccr_syncer.log")).unwrap();
    assert!(
        log.contains("the store file can be read by other users"),
        "{log}"
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(job_names(&service).await, vec!["sealed", "sealed2"]);
    service.kill();
    let err = refused_start(dir.path(), &key_config(Some(&key), None));
    assert!(err.contains("wrong key"), "{err}");
    let service = Service::process(dir.path(), &key_config(Some(&other), None)).await;
    source().admin(&format!("INSERT INTO {src_db}.t VALUES (11, 'rotated')"));
    wait_caught_up(&service, "sealed", source()).await;
    service.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_in_any_log_line_or_answer_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    // On every address, without TLS or a token: warned about at start.
    let service = Service::process(dir.path(), "log_level = \"trace\"\nhost = \"0.0.0.0\"\n").await;
    let body = db_job("quiet");
    let src_db = body["src"]["database"].as_str().unwrap().to_string();
    service.post("create_ccr", body.clone()).await.ok();
    wait_for_state(&service, "quiet", "DBIncrementalSync").await;
    let user = unique("acct");
    let passwords = [
        "TopSecret1x",
        "TopSecret2x",
        "TopSecret3x",
        "TopSecret4x",
        "TopSecret5x",
        "*0123456789ABCDEF0123456789ABCDEF01234567",
        "TopSecret7x",
    ];
    source().admin(&format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY '{}';
         ALTER USER '{user}'@'%' IDENTIFIED BY '{}';
         GRANT SELECT ON {src_db}.* TO '{user}'@'%' IDENTIFIED BY '{}';
         SET PASSWORD FOR '{user}'@'%' = PASSWORD('{}');
         CREATE USER '{user}_v'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{}');
         CREATE USER '{user}_h'@'%' IDENTIFIED VIA mysql_native_password USING '{}';
         CREATE SERVER {user}_s FOREIGN DATA WRAPPER mysql OPTIONS (USER 'u', PASSWORD '{}', HOST 'h');
         INSERT INTO {src_db}.t VALUES (20, 'after');",
        passwords[0], passwords[1], passwords[2], passwords[3], passwords[4], passwords[5], passwords[6]
    ));
    wait_caught_up(&service, "quiet", source()).await;
    // A refused create_ccr: its answer does not quote the password either.
    let mut wrong = db_job("quiet_wrong");
    wrong["src"]["password"] = json!("Wrong-Pa55word-9");
    let refused = service.post("create_ccr", wrong).await;
    refused.fails(400, "Access denied");
    let mut answers = refused.text.clone();
    for op in ["job_status", "job_progress", "job_detail", "get_lag"] {
        answers.push_str(&service.post(op, json!({"name": "quiet"})).await.text);
    }
    answers.push_str(&service.get("metrics").await.text);
    service.kill();
    let log = std::fs::read_to_string(dir.path().join("ccr_syncer.log")).unwrap();
    assert!(log.contains("the API listens on a non-loopback address without TLS"));
    assert!(log.contains("the API listens on a non-loopback address without a token"));
    // The statements were seen, and logged with their passwords masked.
    assert!(
        log.contains(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY '******'")),
        "the account statements are not in the log at trace level"
    );
    for secret in passwords
        .iter()
        .copied()
        .chain([SRC_PASSWORD, DEST_PASSWORD, "Wrong-Pa55word-9"])
    {
        assert!(!log.contains(secret), "the log holds {secret}");
        assert!(!answers.contains(secret), "an answer holds {secret}");
    }
}
