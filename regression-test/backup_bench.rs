//! Backups measured, side by side in one run on one machine: a cluster
//! backup of BENCH_MB (1024) of sysbench tables to a real S3 server
//! (`s3s-fs` on loopback) against what a DBA would type
//! (`mariadb-backup --backup --stream=xbstream | gzip >` a file, then the
//! file uploaded with boto3, the standard Python S3 client, multipart);
//! the archive's lag under a sysbench write load at BENCH_TPS (2000)
//! transactions a second for BENCH_LOAD_S (60) seconds; a `cluster_restore`
//! to the end of that load against the same restore by hand
//! (`mbstream -x`, `mariadb-backup --prepare`, a `mariadbd` started on it,
//! `mariadb-binlog --start-position=GTID --stop-datetime=T | mariadb`);
//! and the peak RSS of this process (the service and the agent run in it).
//! Not a test (ignored): `bash shell/bench_backup.sh` runs it and prints
//! the table doc/benchmarks.md shows.

use crate::backup_restore::{bench_manager, shards, BENCH_PW};
use crate::cluster::{emit, machine, wait_job, Reaper};
use crate::cluster_engine::LocalAgent;
use crate::harness::s3::{self, S3};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn peak_rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

pub(crate) fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub(crate) async fn job(
    s: &crate::harness::service::Service,
    job_type: &str,
    p: serde_json::Value,
) -> (serde_json::Value, f64) {
    let t = Instant::now();
    let v = emit(s, job_type, "", p).await;
    assert_eq!(v["status"], "accept", "{v}");
    let v = wait_job(s, v["job_id"].as_str().unwrap(), 7200).await;
    assert_eq!(v["status"], "done", "{job_type}: {v}");
    (v, t.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: bash shell/bench_backup.sh"]
async fn backup_and_restore_against_by_hand() {
    let mb = env_or("BENCH_MB", 1024);
    let tps = env_or("BENCH_TPS", 2000);
    let load_s = env_or("BENCH_LOAD_S", 60);
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let server = S3::start(&d.join("s3"), "backups");
    let url = server.url("backups", "ccr");
    let agent = LocalAgent::start("127.0.0.96", d, Duration::ZERO).await;
    let s = bench_manager(d, &url).await;
    let mut m = machine(agent.host, Some(agent.port), d);
    m["port_range"] = json!("48000-48020");
    job(&s, "create_machine", m).await;
    let paras = |nick: &str| {
        json!({"nick_name": nick, "ha_mode": "rbr", "shards": "1", "nodes": "1",
        "comps": "0", "innodb_size": "256", "max_connections": "200", "admin_user": "clustmgr",
        "admin_password": BENCH_PW})
    };
    let (v, _) = job(&s, "create_cluster", paras("bench")).await;
    let src = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let p = shards(&s, &name).await[0].0.clone();
    let sb = |cmd: &str, extra: &str| {
        format!(
            "sysbench oltp_write_only --mysql-host={} --mysql-port={} --mysql-user=clustmgr \
             --mysql-password={BENCH_PW} --mysql-db=sbtest --tables=8 --table-size={} {extra} {cmd}",
            p.0,
            p.1,
            mb * 4300 / 8
        )
    };
    sh(&format!(
        "mariadb -h {} -P {} -u clustmgr -p{BENCH_PW} -e 'CREATE DATABASE sbtest'",
        p.0, p.1
    ));
    sh(&sb("prepare", "--threads=2"));
    let datadir = d.join(format!("data-{}", p.0)).join(p.1.to_string());
    let data_mb: u64 = sh(&format!("du -sm {}/data | cut -f1", datadir.display()))
        .parse()
        .unwrap_or(0);

    // 1. The cluster backup, then the same by hand.
    let (b, ours_s) = job(&s, "manual_backup_cluster", json!({"cluster_id": src})).await;
    let raw = b["attachment"]["shards"][0]["raw_bytes"].as_u64().unwrap();
    let stored = b["attachment"]["shards"][0]["bytes"].as_u64().unwrap();
    let hand_file = d.join("hand.xb.gz");
    let t = Instant::now();
    sh(&format!(
        "mariadb-backup --backup --stream=xbstream --user=root --socket={}/mysqld.sock \
         --datadir={}/data --target-dir={}/hand-scratch 2>/dev/null | gzip > {}",
        datadir.display(),
        datadir.display(),
        d.display(),
        hand_file.display()
    ));
    let hand_backup_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sh(&format!(
        "AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} {python} -c \"import boto3; \
         boto3.client('s3', endpoint_url='http://127.0.0.1:{}', region_name='us-east-1')\
         .upload_file('{}', 'backups', 'hand/hand.xb.gz')\"",
        s3::ACCESS_KEY,
        s3::SECRET_KEY,
        server.port,
        hand_file.display()
    ));
    let hand_upload_s = t.elapsed().as_secs_f64();
    let hand_s = hand_backup_s + hand_upload_s;

    // 2. The archive's lag under a write load.
    let load = Command::new("bash")
        .arg("-c")
        .arg(sb(
            "run",
            &format!("--threads=8 --rate={tps} --time={load_s} --report-interval=0"),
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lags = Vec::new();
    let until = Instant::now() + Duration::from_secs(load_s);
    while Instant::now() < until {
        let text = s.get("metrics").await.text;
        if let Some(v) = text
            .lines()
            .find(|l| l.starts_with("ccr_cluster_archive_lag_seconds{"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
        {
            lags.push(v);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let out = load.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let achieved = report
        .lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|x| x.split_whitespace().next())
        .and_then(|x| x.parse::<f64>().ok())
        .unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let lag_p99 = percentile(lags.clone(), 0.99);
    let lag_max = percentile(lags, 1.0);
    let source_rows = sh(&format!(
        "mariadb -N -h {} -P {} -u clustmgr -p{BENCH_PW} -e 'SELECT SUM(k) FROM sbtest.sbtest1'",
        p.0, p.1
    ));

    // 3. cluster_restore to the end of the load, then the same by hand.
    let (v, _) = job(&s, "create_cluster", paras("bench_dst")).await;
    let dst = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let dst_name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let (r, ours_restore_s) = job(
        &s,
        "cluster_restore",
        json!({"src_cluster_id": src,
        "dst_cluster_id": dst, "restore_time": stop}),
    )
    .await;
    let replayed = r["attachment"]["shards"][0]["transactions_replayed"].clone();
    let q = shards(&s, &dst_name).await[0].0.clone();
    let restored_rows = sh(&format!(
        "mariadb -N -h {} -P {} -u clustmgr -p{BENCH_PW} -e 'SELECT SUM(k) FROM sbtest.sbtest1'",
        q.0, q.1
    ));
    let hand = d.join("hand-restore");
    let binlogs = d.join("hand-binlogs");
    sh(&format!(
        "cp -r {}/binlog {}",
        datadir.display(),
        binlogs.display()
    ));
    let port = crate::cluster::free_port("127.0.0.96");
    let t = Instant::now();
    sh(&format!(
        "set -e; mkdir -p {h}/data; gunzip < {f} | mbstream -x -C {h}/data; \
         mariadb-backup --prepare --target-dir={h}/data --use-memory=256M 2>/dev/null; \
         (mariadbd --no-defaults --datadir={h}/data --port={port} --bind-address=127.0.0.96 \
           --socket={h}/s.sock --innodb-buffer-pool-size=256M --user=root --skip-log-bin \
           > {h}/err.log 2>&1 &); \
         for i in $(seq 1 120); do [ -S {h}/s.sock ] && break; sleep 0.5; done; \
         gtid=$(cut -f3 {h}/data/xtrabackup_binlog_info); \
         mariadb-binlog --start-position=\"$gtid\" --stop-datetime='{stop}' $(ls {b}/binlog.0* | sort) \
           | mariadb --socket={h}/s.sock --user=root --binary-mode",
        h = hand.display(),
        f = hand_file.display(),
        b = binlogs.display(),
    ));
    let hand_restore_s = t.elapsed().as_secs_f64();
    let hand_rows = sh(&format!(
        "mariadb -N --socket={}/s.sock -u root -e 'SELECT SUM(k) FROM sbtest.sbtest1'",
        hand.display()
    ));
    let _ = sh(&format!(
        "mariadb --socket={}/s.sock -u root -e 'SHUTDOWN' || true",
        hand.display()
    ));

    let rss = peak_rss_mb();
    let rows = [
        format!("| data | {data_mb} MB datadir (sysbench, 8 tables), `mariadb-backup` stream {:.0} MB, stored {:.0} MB |", raw as f64 / 1e6, stored as f64 / 1e6),
        format!("| backup to S3: `manual_backup_cluster` | {ours_s:.1} s ({:.1} MB/s) |", raw as f64 / 1e6 / ours_s),
        format!("| backup to S3 by hand (`mariadb-backup \\| gzip >` file {hand_backup_s:.1} s, boto3 upload {hand_upload_s:.1} s) | {hand_s:.1} s ({:.1} MB/s) |", raw as f64 / 1e6 / hand_s),
        format!("| backup throughput, ours / by hand | **{:.2}** (target ≥ 0.8) |", hand_s / ours_s),
        format!("| archive lag under load: p99 / max | **{lag_p99:.1} s** / {lag_max:.1} s (target p99 < 5 s) at {achieved:.0} tps asked {tps} |"),
        format!("| `cluster_restore` to the end of the load ({replayed} transactions replayed) | {ours_restore_s:.1} s |"),
        format!("| restore by hand (extract, prepare, start, `mariadb-binlog \\| mariadb`) | {hand_restore_s:.1} s |"),
        format!("| restore time, ours / by hand | **{:.2}** (target ≤ 1, counts cloning nothing: one node) |", ours_restore_s / hand_restore_s),
        format!("| same data: SUM(k) source / ours / by hand | {source_rows} / {restored_rows} / {hand_rows} |"),
        format!("| peak RSS of the service and the agent together (one process) | **{rss} MB** (target < 256 MB each) |"),
    ];
    let table = format!("| measure | result |\n|---|---|\n{}\n", rows.join("\n"));
    eprintln!("{table}");
    if let Ok(path) = std::env::var("BENCH_OUT") {
        std::fs::write(path, table).unwrap();
    }
}
