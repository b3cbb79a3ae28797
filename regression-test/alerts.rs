//! The shipped alert rules and dashboard stay true: `promtool` accepts the
//! rules, every metric the rules and the dashboard use is one the service
//! exports, and a real Prometheus scraping the service fires the lag rule
//! while a job is paused and clears it once the job caught up again.

use crate::harness::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn doc(name: &str) -> String {
    std::fs::read_to_string(format!("{}/doc/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("doc/{name}: {e}"))
}

fn tool(name: &str) -> String {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(
        !found.is_empty(),
        "{name} not found: install it (apt-get install prometheus); shell/test.sh does"
    );
    found
}

/// The `ccr_syncer_*` (or other `prefix`) names in an expression.
fn metric_names(text: &str) -> Vec<String> {
    prefixed(text, "ccr_syncer_")
}

fn prefixed(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        // Histogram series are exported under the base name.
        out.push(name.trim_end_matches("_bucket").to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_check_and_the_lag_rule_fires_and_clears() {
    let promtool = tool("promtool");
    for (what, file) in [("rules", "alerts.yml"), ("config", "prometheus.yml")] {
        let out = std::process::Command::new(&promtool)
            .args(["check", what])
            .arg(format!("{}/doc/{file}", env!("CARGO_MANIFEST_DIR")))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "promtool check {what} {file}: {said}");
    }

    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(service::sqlite_config(&dir.path().join("db"))).await;
    let job = table_job("alerted");
    let src_db = job["src"]["database"].as_str().unwrap().to_string();
    service.post("create_ccr", job).await.ok();
    wait_for_state(&service, "alerted", "TableIncrementalSync").await;
    // Every name the service defines (a labelled series shows in a scrape
    // only once it has a value).
    let defined =
        std::fs::read_to_string(format!("{}/src/metrics.rs", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let exported = service.get("metrics").await.text;
    let dashboard: Value = serde_json::from_str(&doc("grafana-dashboard.json")).unwrap();
    let mut used = metric_names(&doc("alerts.yml"));
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    for name in &used {
        assert!(
            exported.contains(&format!("# TYPE {name} "))
                || defined.contains(&format!("\"{name}\"")),
            "{name} is used by the rules or the dashboard but not exported"
        );
    }

    // The cluster manager's rules use its metrics.
    let cluster_defined = std::fs::read_to_string(format!(
        "{}/src/cluster/metrics.rs",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let cluster_used = prefixed(&doc("alerts.yml"), "ccr_cluster_");
    assert!(!cluster_used.is_empty());
    for name in &cluster_used {
        assert!(
            cluster_defined.contains(&format!("\"{name}\"")),
            "{name} is used by the rules but the cluster manager does not export it"
        );
    }

    // The shipped lag rule, with a threshold and a wait a test can reach.
    let rules = doc("alerts.yml").replace(
        "ccr_syncer_lag_seconds > 300\n        for: 5m",
        "ccr_syncer_lag_seconds > 2\n        for: 1s",
    );
    assert!(
        rules.contains("ccr_syncer_lag_seconds > 2"),
        "the lag rule's shape changed"
    );
    std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [alerts.yml]\n\
             scrape_configs:\n  - job_name: ccr-syncer\n    honor_labels: true\n    \
             static_configs: [{{targets: ['{}'], labels: {{ccr_syncer: 'true'}}}}]\n",
            service.addr
        ),
    )
    .unwrap();
    let mut prometheus = std::process::Command::new(tool("prometheus"))
        .current_dir(dir.path())
        .arg("--config.file=prometheus.yml")
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start prometheus");
    let http = reqwest::Client::new();
    let alerts = || async {
        http.get(format!("http://127.0.0.1:{port}/api/v1/alerts"))
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()
    };
    let lag_alert = |v: &Value| -> Option<String> {
        v["data"]["alerts"].as_array()?.iter().find_map(|a| {
            (a["labels"]["alertname"] == "CcrSyncerLagHigh" && a["labels"]["job"] == "alerted")
                .then(|| a["state"].as_str().unwrap_or("").to_string())
        })
    };
    let wait = |what: &'static str, want: Option<&'static str>| {
        let alerts = &alerts;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let v = alerts().await;
                let state = v.as_ref().and_then(lag_alert);
                if v.is_some() && state.as_deref() == want {
                    return;
                }
                assert!(Instant::now() < deadline, "{what}: {v:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    // Caught up: nothing fires.
    wait("prometheus up, no lag alert", None).await;
    service.post("pause", json!({"name": "alerted"})).await.ok();
    // get_lag counts what the source wrote while the job is paused.
    let before = service
        .post("get_lag", json!({"name": "alerted"}))
        .await
        .ok();
    for id in 10..13 {
        source().admin(&format!("INSERT INTO {src_db}.t VALUES ({id}, 'paused')"));
    }
    let after = service
        .post("get_lag", json!({"name": "alerted"}))
        .await
        .ok();
    assert!(
        after["lag"].as_u64().unwrap() >= before["lag"].as_u64().unwrap() + 3,
        "paused: {before} then {after}"
    );
    wait("the lag rule firing for the paused job", Some("firing")).await;
    service
        .post("resume", json!({"name": "alerted"}))
        .await
        .ok();
    wait("the lag alert cleared", None).await;
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}
