//! The real binary, through shell/start_syncer.sh and shell/stop_syncer.sh:
//! flags, pid file, log file, and no password in the log.

use crate::harness::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("shell")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_stop_scripts_run_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let pid_file = dir.path().join("syncer.pid");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new("bash")
        .arg(script("start_syncer.sh"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--db-dir")
        .arg(dir.path().join("db"))
        .arg("--log-dir")
        .arg(&log_dir)
        .arg("--pid-file")
        .arg(&pid_file)
        .env("CCR_SYNCER_BIN", env!("CARGO_BIN_EXE_ccr-syncer"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "start_syncer.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "syncer process is alive");

    let http = reqwest::Client::new();
    let url = |op: &str| format!("http://127.0.0.1:{port}/{op}");
    let version: serde_json::Value = http
        .get(url("version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["success"], true);
    let reply = http
        .post(url("create_ccr"))
        .json(&table_job("bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    // A refused create logs the failure too.
    let mut bad = table_job("bin2");
    bad["src"]["password"] = json!("Wrong-Pa55word");
    let reply = http
        .post(url("create_ccr"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 400);

    let out = Command::new("bash")
        .arg(script("stop_syncer.sh"))
        .arg("--pid-file")
        .arg(&pid_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stop_syncer.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!pid_file.exists(), "pid file removed on stop");
    for _ in 0..50 {
        if unsafe { libc::kill(pid, 0) } != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        unsafe { libc::kill(pid, 0) },
        0,
        "syncer process has exited"
    );

    let log = std::fs::read_to_string(log_dir.join("ccr_syncer.log")).unwrap();
    // Job events carry the job name as the `job` field.
    assert!(
        log.lines()
            .any(|l| l.contains("job created") && l.contains("job=bin ")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("create_ccr refused") && l.contains("job=bin2 ")),
        "{log}"
    );
    for secret in [
        mariadb::SRC_PASSWORD,
        mariadb::DEST_PASSWORD,
        "Wrong-Pa55word",
    ] {
        assert!(
            !log.contains(secret),
            "password {secret} in the log:\n{log}"
        );
    }
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.toml");
    std::fs::write(&conf, "prot = 9190\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ccr-syncer"))
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `prot`"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_ccr-syncer"))
        .arg("--config")
        .arg(dir.path().join("absent.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}
