//! Automatic failover measured: BENCH_RUNS (10) deaths of a three-node
//! shard's primary machine (its agent and its `mariadbd` SIGKILLed) under a
//! sysbench write load on the primary plus the failover test's own writer,
//! which records every acknowledged write and follows the writable node;
//! then BENCH_SWITCHES (5) `manual_switch`es. Default settings
//! (`probe_ms` 1000, `failover_after_s` 5); each failover is acknowledged
//! (`ack_failover`) before the next, as an operator would. Not a test
//! (ignored): `bash shell/bench_failover.sh` runs it and prints the table
//! doc/benchmarks.md shows.
//!
//! Per run: the time from the death to the first acknowledged write on
//! the new primary, and the longest gap between two acknowledged writes
//! around it. At the end: acknowledged writes missing from the last
//! primary, and samples (five a second, every node) that saw two writable
//! nodes.

use crate::cluster::Reaper;
use crate::shard_failover::{
    ack, conn, done, journal, kill_machine, name, primary, rejoined, until, Load, Node, Shard, PW,
};
use mysql_async::prelude::*;
use serde_json::json;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sysbench_args(n: &Node, command: &str) -> Vec<String> {
    [
        "oltp_write_only",
        &format!("--mysql-host={}", n.0),
        &format!("--mysql-port={}", n.1),
        "--mysql-user=clustmgr",
        &format!("--mysql-password={PW}"),
        "--mysql-db=sbtest",
        "--tables=2",
        "--table-size=5000",
        "--threads=2",
        "--rate=100",
        "--time=0",
        "--report-interval=0",
        command,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// sysbench writing to `n` until killed.
fn sysbench_load(n: &Node) -> Child {
    Command::new("sysbench")
        .args(sysbench_args(n, "run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sysbench (shell/bench_failover.sh installs it)")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: bash shell/bench_failover.sh"]
async fn failover_under_load() {
    let runs = env_or("BENCH_RUNS", 10);
    let switches = env_or("BENCH_SWITCHES", 5);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let Shard {
        mut agents,
        s,
        cluster,
        cname,
        all,
    } = Shard::make(d, "", None, "64").await;
    let p = primary(&s, &cname).await;
    let mut c = conn(&p).await.unwrap();
    c.query_drop(
        "CREATE DATABASE app; CREATE TABLE app.t (id BIGINT PRIMARY KEY, at DATETIME(6)); \
         CREATE DATABASE sbtest",
    )
    .await
    .unwrap();
    drop(c);
    let out = Command::new("sysbench")
        .args(sysbench_args(&p, "prepare"))
        .output()
        .expect("sysbench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let load = Load::start(all.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut rows = Vec::new();
    let (mut took_all, mut gaps) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let old = primary(&s, &cname).await;
        let mut sb = sysbench_load(&old);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (a, t0) = kill_machine(&mut agents, d, &old);
        let took = load.first_write_after(t0, &name(&old), 120).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = sb.kill();
        let _ = sb.wait();
        // The longest gap between acknowledged writes from 2 s before the
        // death to 1 s after the first write on the new primary.
        let gap = {
            let acked = load.acked.lock();
            let times: Vec<Instant> = acked
                .iter()
                .map(|(_, at, _)| *at)
                .filter(|at| *at + Duration::from_secs(2) > t0)
                .collect();
            times
                .windows(2)
                .map(|w| w[1] - w[0])
                .max()
                .unwrap_or_default()
        };
        let new = primary(&s, &cname).await;
        let last = journal(&s, &cluster).await[0].clone();
        eprintln!(
            "run {run}: {} -> {}: first write after {took:?}, longest gap {gap:?}",
            name(&old),
            name(&new)
        );
        rows.push(format!(
            "| {run} | {} → {} | {:.2} | {:.2} | {} | {} |",
            name(&old),
            name(&new),
            took.as_secs_f64(),
            gap.as_secs_f64(),
            last["detection_ms"],
            last["promotion_ms"]
        ));
        took_all.push(took.as_secs_f64());
        gaps.push(gap.as_secs_f64());
        // The machine comes back; its old primary rejoins; the operator
        // acknowledges the failover so that the next one is not blocked.
        agents[a].respawn();
        until(&s, &cname, "the old primary rejoins", 180, |sh| {
            rejoined(sh, &old)
        })
        .await;
        let v = ack(&s, &cluster).await;
        assert!(v["status"] != "failed", "{v}");
    }

    let mut unavailable = Vec::new();
    for _ in 0..switches {
        let old = primary(&s, &cname).await;
        let mut sb = sysbench_load(&old);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let v = done(
            &s,
            "manual_switch",
            json!({"cluster_id": cluster, "shard_id": "1", "master_hostaddr": name(&old)}),
            120,
        )
        .await;
        let _ = sb.kill();
        let _ = sb.wait();
        let ms = v["attachment"]["write_unavailable_ms"].as_f64().unwrap();
        unavailable.push(ms);
        until(&s, &cname, "the old primary replicates", 120, |sh| {
            rejoined(sh, &old)
        })
        .await;
    }

    let (acked, two, samples) = load.stop().await;
    let last = primary(&s, &cname).await;
    let mut c = conn(&last).await.unwrap();
    let have: Vec<i64> = c.query("SELECT id FROM app.t").await.unwrap();
    let have: std::collections::HashSet<i64> = have.into_iter().collect();
    let lost = acked.iter().filter(|id| !have.contains(id)).count();

    let mut table = String::new();
    table.push_str(
        "| run | primary → new primary | death → first acked write (s) | longest write gap (s) \
         | detection (ms) | promotion (ms) |\n|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        table.push_str(r);
        table.push('\n');
    }
    let max = took_all.iter().cloned().fold(0.0, f64::max);
    let max_gap = gaps.iter().cloned().fold(0.0, f64::max);
    table.push_str(&format!(
        "\n| measure | result | target |\n|---|---|---|\n\
         | median death → first acked write, {runs} failovers | {:.2} s (max {max:.2} s) | < 10 s |\n\
         | longest write gap | {max_gap:.2} s | — |\n\
         | acknowledged writes lost | {lost} of {} | 0 |\n\
         | samples with two writable nodes | {} of {samples} | 0 |\n\
         | manual_switch write-unavailable, median of {switches} | {:.0} ms (max {:.0} ms) | < 1000 ms |\n",
        median(took_all.clone()),
        acked.len(),
        two.len(),
        median(unavailable.clone()),
        unavailable.iter().cloned().fold(0.0, f64::max),
    ));
    eprintln!("{table}");
    if let Ok(path) = std::env::var("BENCH_OUT") {
        std::fs::File::create(path)
            .unwrap()
            .write_all(table.as_bytes())
            .unwrap();
    }
    s.kill();
}
