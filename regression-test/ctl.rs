//! `ccr-syncer ctl`, the command-line client, against a running service:
//! every command a person needs, progress drawn by `watch`, the token
//! honoured, and the server's message with a non-zero exit on error.

use crate::harness::mariadb::{DEST_PASSWORD, DEST_USER, SRC_PASSWORD, SRC_USER};
use crate::harness::*;

/// Runs `ccr-syncer ctl --server … ARGS`; exit code, stdout, stderr.
fn ctl(service: &Service, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ccr-syncer"));
    command
        .arg("ctl")
        .arg("--server")
        .arg(format!("http://{}", service.addr))
        .env_remove("CCR_SYNCER_AUTH_TOKEN")
        .env("CCR_SRC_PASSWORD", SRC_PASSWORD)
        .env("CCR_DEST_PASSWORD", DEST_PASSWORD);
    if let Some(t) = token {
        command.env("CCR_SYNCER_AUTH_TOKEN", t);
    }
    let out = command.args(args).output().expect("run ccr-syncer ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn ok(result: (i32, String, String)) -> String {
    assert_eq!(result.0, 0, "ctl failed: {}{}", result.1, result.2);
    result.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_against_a_running_service() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(Service::with_token(
        service::sqlite_config(dir.path()),
        "ctl-token-1",
    ))
    .await;
    let t = Some("ctl-token-1");
    let src_db = table_t(source(), "ctl_src", 20_000);
    let dest_db = unique("ctl_dst");
    let (src_port, dest_port) = (source().port.to_string(), dest().port.to_string());
    let out = ok(ctl(
        &service,
        t,
        &[
            "create",
            "ctl_job",
            "--src-host",
            "127.0.0.1",
            "--src-port",
            &src_port,
            "--src-user",
            SRC_USER,
            "--src-database",
            &src_db,
            "--dest-host",
            "127.0.0.1",
            "--dest-port",
            &dest_port,
            "--dest-user",
            DEST_USER,
            "--dest-database",
            &dest_db,
        ],
    ));
    assert!(out.contains("created job ctl_job"), "{out}");
    assert_eq!(ok(ctl(&service, t, &["list"])).trim(), "ctl_job");
    // watch draws progress: bars while copying, a lag line after.
    let watched = ok(ctl(
        &service,
        t,
        &["watch", "ctl_job", "--interval", "0.2", "--count", "40"],
    ));
    assert!(
        watched.contains("rows [") || watched.contains("lag "),
        "{watched}"
    );
    wait_for_state(&service, "ctl_job", "DBIncrementalSync").await;
    let line = ok(ctl(&service, t, &["watch", "ctl_job", "--count", "1"]));
    assert!(
        line.contains("DBIncrementalSync") && line.contains("transaction(s) behind"),
        "{line}"
    );
    let status = ok(ctl(&service, t, &["status", "ctl_job"]));
    assert!(
        status.starts_with("ctl_job: running DBIncrementalSync"),
        "{status}"
    );
    ok(ctl(&service, t, &["pause", "ctl_job"]));
    assert_eq!(job_status(&service, "ctl_job").await.0, "paused");
    ok(ctl(&service, t, &["resume", "ctl_job"]));
    assert_eq!(job_status(&service, "ctl_job").await.0, "running");
    let lag = ok(ctl(&service, t, &["lag", "ctl_job"]));
    assert!(lag.starts_with("lag "), "{lag}");
    // verify --wait prints each table's verdict; a broken row exits 3 and
    // names its range; repair --wait makes it equal again.
    let out = ok(ctl(&service, t, &["verify", "ctl_job", "--wait"]));
    assert!(
        out.contains("verification done") && out.contains("equal"),
        "{out}"
    );
    dest().admin(&format!("DELETE FROM {dest_db}.t WHERE id = 77"));
    let (code, out, err) = ctl(
        &service,
        t,
        &["verify", "ctl_job", "--tables", "t", "--wait"],
    );
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("1 row(s) differ in 1 range(s): [\"77\"]..[\"77\"] (1)"),
        "{out}"
    );
    assert!(err.contains("1 table(s) not equal"), "{err}");
    let out = ok(ctl(&service, t, &["repair", "ctl_job", "t", "--wait"]));
    assert!(
        out.contains("repairing 1 range(s) of t") && out.contains("equal"),
        "{out}"
    );
    let progress = ok(ctl(&service, t, &["--json", "progress", "ctl_job"]));
    let v: serde_json::Value = serde_json::from_str(progress.trim()).unwrap();
    assert_eq!(v["job_progress"]["name"], "ctl_job");
    // Errors: the server's message, a non-zero exit.
    let (code, _, err) = ctl(&service, t, &["skip", "ctl_job", "--commit-seq", "1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("ccr-syncer ctl:") && err.contains("HTTP 409"),
        "{err}"
    );
    let (code, _, err) = ctl(&service, t, &["skip", "ctl_job"]);
    assert_ne!(code, 0);
    assert!(err.contains("--commit-seq"), "{err}");
    let (code, _, err) = ctl(&service, None, &["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("bearer token"), "{err}");
    let (code, _, err) = ctl(&service, t, &["create", "incomplete", "--src-host", "h"]);
    assert_ne!(code, 0);
    assert!(err.contains("src.user is missing"), "{err}");
    // From a file, and resync.
    let file = dir.path().join("job.json");
    let body = db_job("ctl_from_file");
    std::fs::write(&file, body.to_string()).unwrap();
    ok(ctl(
        &service,
        t,
        &["create", "--file", file.to_str().unwrap()],
    ));
    ok(ctl(&service, t, &["resync", "ctl_from_file"]));
    // (The group's view is at most a heartbeat old.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let stat = ok(ctl(&service, t, &["stat"]));
        if stat.contains("leader") && stat.contains("jobs: 2") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stat}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    ok(ctl(&service, t, &["delete", "ctl_job"]));
    let (code, _, err) = ctl(&service, t, &["status", "ctl_job"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("does not exist") && err.contains("HTTP 404"),
        "{err}"
    );
}

#[test]
fn an_unreachable_server_exits_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ccr-syncer"))
        .args(["ctl", "--server", "http://127.0.0.1:9", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach http://127.0.0.1:9"), "{err}");
}
