//! `doc/openapi.yaml` is the API's contract, kept true by a property-based
//! fuzzer (schemathesis) run against the running service: no 5xx, every
//! answer matches its schema and documented status, and malformed input
//! gets a 4xx. `create_ccr` is fuzzed with malformed input only: a
//! well-formed one reaches the preflight, which answers 502 for the random
//! servers it names.

use crate::harness::*;

fn schemathesis() -> String {
    let st = std::env::var("CCR_SCHEMATHESIS").unwrap_or_else(|_| "st".into());
    let found = std::process::Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "schemathesis ({st}) not found: shell/test.sh installs it (CCR_SCHEMATHESIS names its st)"
    );
    st
}

fn fuzz(st: &str, service: &Service, token: &str, dir: &std::path::Path, extra: &[&str]) {
    let out = std::process::Command::new(st)
        .current_dir(dir)
        .args([
            "run",
            concat!(env!("CARGO_MANIFEST_DIR"), "/doc/openapi.yaml"),
        ])
        .arg("--url")
        .arg(format!("http://{}", service.addr))
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,negative_data_rejection",
            "--seed",
            "20261202",
            "--no-color",
        ])
        .args(extra)
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_matches_its_openapi_description_under_fuzzing() {
    let st = schemathesis();
    let dir = tempfile::tempdir().unwrap();
    let token = "openapi-fuzz-token";
    let service = Service::start(Service::with_token(
        service::sqlite_config(&dir.path().join("db")),
        token,
    ))
    .await;
    // A job, so that a fuzzed name sometimes finds one.
    service.post("create_ccr", table_job("fuzzed")).await.ok();
    fuzz(
        &st,
        &service,
        token,
        dir.path(),
        &["--exclude-operation-id", "createCcr", "-n", "25"],
    );
    fuzz(
        &st,
        &service,
        token,
        dir.path(),
        &[
            "--include-operation-id",
            "createCcr",
            "--mode",
            "negative",
            "-n",
            "40",
        ],
    );
    // The service is still whole.
    assert_eq!(job_names(&service).await, ["fuzzed"]);
}
