//! Backups and point-in-time restore, end to end: real agents on loopback
//! addresses, real `mariadbd`s, a real S3 server (`s3s-fs`). A cluster of
//! two shards under a write load that stamps each row with its commit
//! time: `manual_backup_cluster`, more writes, a failover of one shard
//! (the archive follows the new primary), more writes, then
//! `cluster_restore` into a new cluster to a time T between writes: every
//! row stamped at or before T is there, none after, on both shards, and
//! the destination stayed read-only until the job ended. Then the S3
//! server killed in the middle of a backup (no manifest is ever listed for
//! it, a new backup succeeds) and an object corrupted in the store (a
//! restore refuses, naming it).

use crate::cluster::{emit, machine, sql_with, wait_job, Reaper, TOKEN};
use crate::cluster_engine::LocalAgent;
use crate::harness::s3::{self, S3};
use crate::harness::service::Service;
use ccr_syncer::config::{Config, StoreConfig};
use ccr_syncer::secret::Secret;
use mysql_async::prelude::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PW: &str = "backup-admin-pw";
pub(crate) const BENCH_PW: &str = PW;
const BACKUP_KEY: &str = "the-cluster-backup-key";

fn paras(nick: &str) -> Value {
    json!({"nick_name": nick, "ha_mode": "rbr", "shards": "2", "nodes": "2", "comps": "0",
           "innodb_size": "16", "max_connections": "60", "fullsync_level": "1",
           "admin_user": "clustmgr", "admin_password": PW})
}

async fn done(s: &Service, job_type: &str, p: Value, secs: u64) -> Value {
    let v = emit(s, job_type, "", p).await;
    assert_eq!(v["status"], "accept", "{job_type}: {v}");
    let v = wait_job(s, v["job_id"].as_str().unwrap(), secs).await;
    assert_eq!(v["status"], "done", "{job_type}: {v}");
    v
}

/// Each shard's primary and replicas as `(host, port)`, by shard.
pub(crate) async fn shards(s: &Service, name: &str) -> Vec<((String, i64), Vec<(String, i64)>)> {
    let v = emit(s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    let mut out = Vec::new();
    for sh in v["attachment"]["list_shard"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
    {
        let mut primary = None;
        let mut replicas = Vec::new();
        for n in sh["list_node"].as_array().unwrap() {
            let node = (
                n["hostaddr"].as_str().unwrap().to_string(),
                n["port"].as_str().unwrap().parse().unwrap(),
            );
            if n["master"] == "true" {
                primary = Some(node);
            } else {
                replicas.push(node);
            }
        }
        out.push((primary.unwrap(), replicas));
    }
    out
}

fn sql(node: &(String, i64), q: &str) -> String {
    sql_with(&node.0, &node.1.to_string(), PW, q)
}

fn pool(node: &(String, i64)) -> mysql_async::Pool {
    mysql_async::Pool::new(
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(node.0.clone())
            .tcp_port(node.1 as u16)
            .user(Some("clustmgr"))
            .pass(Some(PW)),
    )
}

/// Inserts a row stamped NOW() into each shard every 40 ms until stopped;
/// a failed insert (a failover) is tried again on the shard's primary now.
fn load(s: Arc<Service>, name: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            for (primary, _) in shards(&s, &name).await {
                let p = pool(&primary);
                if let Ok(mut c) = p.get_conn().await {
                    let _ = c
                        .query_drop("INSERT INTO app.t (stamp) VALUES (NOW())")
                        .await;
                }
                let _ = p.disconnect().await;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    })
}

/// The benchmark's manager: [`manager`].
pub(crate) async fn bench_manager(dir: &std::path::Path, storage: &str) -> Service {
    manager(dir, storage).await
}

async fn manager(dir: &std::path::Path, storage: &str) -> Service {
    let mut config = Config::with_store(StoreConfig::Sqlite {
        dir: dir.join("db"),
    });
    config.cluster.agent_token = Some(Secret::new(TOKEN));
    config.cluster.step_retry = Duration::from_secs(60);
    config.cluster.failover_after = Duration::from_secs(3);
    config.cluster.failover_block = Duration::from_secs(1);
    config.cluster.backup.storage = Some(storage.to_string());
    config.cluster.backup.s3 = s3::credentials();
    config.cluster.backup.archive_lag = Duration::from_secs(2);
    config.cluster.backup.object_bytes = 16 << 20;
    config.group.lease = Duration::from_secs(3);
    config.group.heartbeat = Duration::from_millis(300);
    Service::start(config).await
}

fn local(t: chrono::DateTime<chrono::Local>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_is_restored_to_a_point_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let mut server = S3::start(&d.join("s3"), "backups");
    let url = server.url("backups", "ccr");
    let hosts = ["127.0.0.91", "127.0.0.92", "127.0.0.93"];
    let mut agents = Vec::new();
    for h in hosts {
        agents.push(LocalAgent::start_with(h, d, Duration::ZERO, Some(url.clone())).await);
    }
    let s = Arc::new(manager(d, &url).await);
    for a in &agents {
        let mut m = machine(a.host, Some(a.port), d);
        m["port_range"] = json!("47800-47900");
        done(&s, "create_machine", m, 30).await;
    }
    let v = get_storage(&s).await;
    assert_eq!(v["list_backup_storage"][0]["stype"], "S3", "{v}");
    assert_eq!(v["list_backup_storage"][0]["hostaddr"], "127.0.0.1", "{v}");
    assert!(!v.to_string().contains(s3::SECRET_KEY));

    // The source's backups and archived binlog are encrypted.
    let mut src_paras = paras("src");
    src_paras["enable_backup_encrypt"] = json!("1");
    src_paras["backup_encrypt_key"] = json!(BACKUP_KEY);
    let v = done(&s, "create_cluster", src_paras, 300).await;
    let src = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let src_name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let src_shards = shards(&s, &src_name).await;
    assert_eq!(src_shards.len(), 2);
    for (p, _) in &src_shards {
        sql(
            p,
            "CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, \
             stamp DATETIME NOT NULL, pad VARCHAR(100) DEFAULT 'x')",
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(s.clone(), src_name.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b = done(&s, "manual_backup_cluster", json!({"cluster_id": src}), 300).await;
    let backup_id = b["attachment"]["backup_id"].as_str().unwrap().to_string();
    assert_eq!(
        b["attachment"]["shards"].as_array().unwrap().len(),
        2,
        "{b}"
    );
    for sh in b["attachment"]["shards"].as_array().unwrap() {
        assert!(!sh["gtid"].as_str().unwrap().is_empty(), "{b}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A failover of shard 1 between the backup and T: the archive follows.
    let (old, _) = src_shards[0].clone();
    let promoted = src_shards[0].1[0].clone();
    done(
        &s,
        "manual_switch",
        json!({"cluster_id": src, "shard_id": shard_id_of(&s, &src_name, 0).await,
               "master_hostaddr": format!("{}_{}", old.0, old.1),
               "assign_hostaddr": format!("{}_{}", promoted.0, promoted.1)}),
        120,
    )
    .await;
    assert_ne!(shards(&s, &src_name).await[0].0, old);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // T: a whole second in the middle of the writes.
    let t = chrono::Local::now() - chrono::Duration::milliseconds(500);
    let restore_time = local(t);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    loader.await.unwrap();
    let src_shards = shards(&s, &src_name).await;
    let mut expected = Vec::new();
    for (p, _) in &src_shards {
        let at_or_before = sql(
            p,
            &format!("SELECT COUNT(*) FROM app.t WHERE stamp <= '{restore_time}'"),
        );
        let after = sql(
            p,
            &format!("SELECT COUNT(*) FROM app.t WHERE stamp > '{restore_time}'"),
        );
        assert!(after.parse::<i64>().unwrap() > 0, "no write after T");
        expected.push(at_or_before);
    }
    // The archive reaches past T within archive_lag_s.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_storage(&s).await;
        let c = v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cluster_id"] == src)
            .cloned()
            .unwrap();
        let ok = c["restorable"].as_array().unwrap().iter().any(|w| {
            w["from"].as_str().unwrap() <= restore_time.as_str()
                && restore_time.as_str() <= w["to"].as_str().unwrap()
        });
        if ok {
            assert_eq!(c["backups"][0]["backup_id"], backup_id, "{c}");
            break;
        }
        assert!(Instant::now() < deadline, "T never restorable: {c}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A time before the backup is refused naming the windows.
    let v = emit(
        &s,
        "cluster_restore",
        "",
        json!({"src_cluster_id": src, "dst_cluster_id": "999",
        "restore_time": "2001-01-01 00:00:00"}),
    )
    .await;
    assert_ne!(v["status"], "accept", "{v}");

    let v = done(&s, "create_cluster", paras("dst"), 300).await;
    let dst = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let dst_name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let v = emit(
        &s,
        "cluster_restore",
        "",
        json!({"src_cluster_id": "1", "dst_cluster_id": dst,
        "restore_time": "2001-01-01 00:00:00"}),
    )
    .await;
    let info = v["error_info"].as_str().unwrap_or_default().to_string();
    assert!(info.contains("restorable windows"), "{v}");
    let dst_shards = shards(&s, &dst_name).await;
    let v = emit(
        &s,
        "cluster_restore",
        "",
        json!({"src_cluster_id": src, "dst_cluster_id": dst,
        "restore_time": restore_time}),
    )
    .await;
    assert_eq!(v["status"], "accept", "{v}");
    let job = v["job_id"].as_str().unwrap().to_string();
    // Read-only from the job's first step until it ends.
    let mut fenced = vec![false; dst_shards.len()];
    loop {
        let st = emit(&s, "get_status", &job, json!({})).await;
        if st["status"] == "done" || st["status"] == "failed" {
            assert_eq!(st["status"], "done", "{st}");
            let shards_att = st["attachment"]["shards"].as_array().unwrap().clone();
            assert_eq!(shards_att.len(), 2, "{st}");
            break;
        }
        for (i, (p, _)) in dst_shards.iter().enumerate() {
            let Ok(mut c) = pool(p).get_conn().await else {
                continue;
            };
            let ro: Option<i64> = c.query_first("SELECT @@read_only").await.ok().flatten();
            match ro {
                Some(1) => fenced[i] = true,
                Some(_) => assert!(!fenced[i], "{p:?} writable again during the restore"),
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // What the storage holds is unreadable without the key: no gzip, no
    // binlog magic, no row of the table in clear.
    let mut stored = Vec::new();
    let mut stack = vec![d.join("s3").join("backups")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                stored.push(e.path());
            }
        }
    }
    let parts: Vec<_> = stored
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".xb.gz.enc"))
        .collect();
    let segments: Vec<_> = stored
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".binlog"))
        .collect();
    assert!(!parts.is_empty() && !segments.is_empty(), "{stored:?}");
    let ours = format!("/cluster_{src}/");
    for f in parts
        .iter()
        .chain(&segments)
        .filter(|f| f.to_string_lossy().contains(&ours))
    {
        let b = std::fs::read(f).unwrap();
        assert!(
            b.starts_with(b"CCRENC01"),
            "{} is not encrypted",
            f.display()
        );
        // The table's name appears in every clear binlog and backup.
        assert!(
            !b.windows(5).any(|w| w == b"app.t" || w == b"stamp"),
            "{}",
            f.display()
        );
    }
    let v = get_storage_raw(&s).await;
    assert!(!v.to_string().contains(BACKUP_KEY), "{v}");
    for (i, (p, replicas)) in dst_shards.iter().enumerate() {
        let n = sql(p, "SELECT COUNT(*) FROM app.t");
        assert_eq!(n, expected[i], "shard {i}: rows");
        let after = sql(
            p,
            &format!("SELECT COUNT(*) FROM app.t WHERE stamp > '{restore_time}'"),
        );
        assert_eq!(after, "0", "shard {i}: rows after T");
        for r in replicas {
            let deadline = Instant::now() + Duration::from_secs(60);
            while sql(r, "SELECT COUNT(*) FROM app.t") != expected[i] {
                assert!(Instant::now() < deadline, "replica {r:?} not equal");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }

    // The agent's coldbackup and coldrestore use the same storage.
    let (p0, _) = &dst_shards[0];
    let agent = agents.iter().find(|a| a.host == p0.0).unwrap();
    let v = agent
        .op(
            json!({"ver": "0.1", "job_id": "cold1", "job_type": "coldbackup", "s_ip": p0.0,
                   "s_port": p0.1, "s_user": "clustmgr", "s_pwd": PW}),
        )
        .await;
    assert_eq!(v["status"], "done", "{v}");
    let file = v["result"]["file"].as_str().unwrap().to_string();
    assert!(
        file.starts_with("/coldbackup/") && file.ends_with(".tgz"),
        "{v}"
    );
    assert!(
        d.join("s3/backups/ccr")
            .join(file.trim_start_matches('/'))
            .is_file(),
        "{v}"
    );
    let rows = sql(p0, "SELECT COUNT(*) FROM app.t");
    let v = agent
        .op(
            json!({"ver": "0.1", "job_id": "cold2", "job_type": "coldrestore", "s_ip": p0.0,
                   "s_port": p0.1, "file": file}),
        )
        .await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(sql(p0, "SELECT COUNT(*) FROM app.t"), rows);

    // The S3 server killed in the middle of a backup: no manifest listed.
    for (p, _) in &src_shards {
        sql(
            p,
            "CREATE TABLE app.big (id INT PRIMARY KEY, v TEXT); \
                INSERT INTO app.big SELECT seq, REPEAT(MD5(seq), 60) FROM app.seq_1_to_20000",
        );
    }
    let v = emit(&s, "manual_backup_cluster", "", json!({"cluster_id": src})).await;
    let broken = v["job_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mid = get_storage_raw(&s).await;
    server.restart();
    let st = wait_job(&s, &broken, 300).await;
    let v = get_storage(&s).await;
    let c = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster_id"] == src)
        .cloned()
        .unwrap();
    let ids: Vec<String> = c["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["job_id"].as_str().unwrap().to_string())
        .collect();
    if st["status"] == "failed" {
        assert!(!ids.contains(&broken), "a failed backup is listed: {c}");
    }
    assert!(
        !mid.to_string()
            .contains(&format!("\"job_id\":\"{broken}\"")),
        "{mid}"
    );
    let again = done(&s, "manual_backup_cluster", json!({"cluster_id": src}), 300).await;
    assert_eq!(again["status"], "done");

    // An object corrupted in the store: a restore refuses, naming it.
    let bucket = d.join("s3").join("backups").join("ccr").join(format!(
        "backups/cluster_{src}/{backup_id}/shard_{}",
        shard_id_of(&s, &src_name, 0).await
    ));
    let part = bucket.join("part-0000.xb.gz.enc");
    let mut bytes = std::fs::read(&part).unwrap_or_else(|e| panic!("{}: {e}", part.display()));
    let mid_byte = bytes.len() / 2;
    bytes[mid_byte] ^= 0xff;
    std::fs::write(&part, bytes).unwrap();
    let v = done(&s, "create_cluster", paras("dst2"), 300).await;
    let dst2 = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let v = emit(
        &s,
        "cluster_restore",
        "",
        json!({"src_cluster_id": src, "dst_cluster_id": dst2,
        "restore_time": restore_time}),
    )
    .await;
    assert_eq!(v["status"], "accept", "{v}");
    let st = wait_job(&s, v["job_id"].as_str().unwrap(), 300).await;
    assert_eq!(st["status"], "failed", "{st}");
    assert!(
        st["error_info"]
            .as_str()
            .unwrap()
            .contains("part-0000.xb.gz"),
        "{st}"
    );
}

async fn shard_id_of(s: &Service, name: &str, index: usize) -> String {
    let v = emit(s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    let sh = &v["attachment"]["list_shard"][index];
    sh["shard_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| sh["shard_id"].to_string())
}

async fn get_storage_raw(s: &Service) -> Value {
    emit(s, "get_backup_storage", "", json!({})).await
}

async fn get_storage(s: &Service) -> Value {
    let v = get_storage_raw(s).await;
    assert_eq!(v["status"], "done", "{v}");
    v["attachment"].clone()
}

/// The restorable windows of `cluster` as `(from, to)`.
async fn windows(s: &Service, cluster: &str) -> Vec<(String, String)> {
    let v = get_storage(s).await;
    let c = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster_id"] == cluster)
        .cloned()
        .unwrap_or_else(|| panic!("{v}"));
    c["restorable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["from"].as_str().unwrap().to_string(),
                w["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn file_manager(
    dir: &std::path::Path,
    storage: &str,
    keep_full: Option<u64>,
    failpoint: Option<&str>,
) -> Service {
    let mut config = Config::with_store(StoreConfig::Sqlite {
        dir: dir.join("db"),
    });
    config.cluster.agent_token = Some(Secret::new(TOKEN));
    config.cluster.step_retry = Duration::from_secs(30);
    config.cluster.backup.storage = Some(storage.to_string());
    config.cluster.backup.archive_lag = Duration::from_secs(2);
    config.cluster.backup.keep_full = keep_full;
    config.cluster.failpoint = failpoint.map(str::to_string);
    config.cluster.failpoint_halts = true;
    config.group.lease = Duration::from_secs(3);
    config.group.heartbeat = Duration::from_millis(300);
    Service::start(config).await
}

/// Binlogs purged on a primary before they were archived make a gap that
/// is reported and refused; retention prunes an old backup with the
/// binlogs only it needed and keeps the window it still claims. A
/// directory as the storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gap_is_reported_and_retention_keeps_its_windows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let url = format!("file://{}", d.join("store").display());
    let agent = LocalAgent::start_with("127.0.0.94", d, Duration::ZERO, Some(url.clone())).await;
    let s = file_manager(d, &url, None, Some("after:backup:1")).await;
    let mut m = machine(agent.host, Some(agent.port), d);
    m["port_range"] = json!("47920-47940");
    done(&s, "create_machine", m, 30).await;
    let mut p = paras("gap");
    p["shards"] = json!("1");
    p["nodes"] = json!("1");
    p["fullsync_level"] = json!("0");
    let v = done(&s, "create_cluster", p.clone(), 300).await;
    let id = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let primary = shards(&s, &name).await[0].0.clone();
    sql(&primary, "CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, stamp DATETIME NOT NULL); INSERT INTO app.t (stamp) VALUES (NOW())");
    // The manager dies right after the shard's backup: no manifest yet,
    // so no backup; the next manager resumes the job and writes it.
    let v = emit(&s, "manual_backup_cluster", "", json!({"cluster_id": id})).await;
    let job = v["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = emit(&s, "get_status", &job, json!({})).await;
        let done = st["attachment"]["steps_done"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if done.contains(&json!("backup:1")) {
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(get_storage(&s).await["clusters"][0]["backups"]
        .as_array()
        .unwrap()
        .is_empty());
    s.stop().await;
    let s = file_manager(d, &url, None, None).await;
    let st = wait_job(&s, &job, 120).await;
    assert_eq!(st["status"], "done", "{st}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    sql(&primary, "INSERT INTO app.t (stamp) VALUES (NOW())");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = windows(&s, &id).await;
    assert_eq!(before.len(), 1, "{before:?}");

    // The manager stopped, the primary writes and purges what the archive
    // never had; a new manager finds the gap.
    s.stop().await;
    sql(
        &primary,
        "INSERT INTO app.t (stamp) VALUES (NOW()); FLUSH BINARY LOGS",
    );
    // (a file a binlog reader of the stopped manager still holds is
    // skipped: tried again until it is gone).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = sql(&primary, "SHOW MASTER STATUS");
        let current = current.split('\t').next().unwrap().to_string();
        sql(&primary, &format!("PURGE BINARY LOGS TO '{current}'"));
        if sql(&primary, "SHOW BINARY LOGS").lines().count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not purged");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = file_manager(d, &url, None, None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_storage(&s).await;
        let c = &v["clusters"][0];
        if c["archive"][0]["gaps"]
            .as_array()
            .is_some_and(|g| !g.is_empty())
        {
            assert!(
                c["archive"][0]["gaps"][0]["why"]
                    .as_str()
                    .unwrap()
                    .contains("purged"),
                "{c}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no gap reported: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = s.get("metrics").await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ccr_cluster_archive_gaps{") && l.ends_with(" 1")),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    done(&s, "manual_backup_cluster", json!({"cluster_id": id}), 120).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sql(&primary, "INSERT INTO app.t (stamp) VALUES (NOW())");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let both = windows(&s, &id).await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(both[0].0, before[0].0, "{both:?}");
    // A time inside the gap is refused naming the windows.
    let in_gap = chrono::NaiveDateTime::parse_from_str(&both[1].0, "%Y-%m-%d %H:%M:%S").unwrap()
        - chrono::Duration::seconds(1);
    let in_gap = in_gap.format("%Y-%m-%d %H:%M:%S").to_string();
    assert!(in_gap > both[0].1, "{both:?}");
    let v = done(
        &s,
        "create_cluster",
        json!({"nick_name": "gap_dst", "ha_mode": "rbr", "shards": "1",
        "nodes": "1", "comps": "0", "innodb_size": "16", "max_connections": "60",
        "admin_user": "clustmgr", "admin_password": PW}),
        300,
    )
    .await;
    let dst = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let v = emit(
        &s,
        "cluster_restore",
        "",
        json!({"src_cluster_id": id, "dst_cluster_id": dst,
        "restore_time": in_gap}),
    )
    .await;
    let info = v["error_info"].as_str().unwrap_or_default().to_string();
    assert!(
        info.contains("restorable windows") && info.contains(&both[1].0),
        "{v}"
    );

    // Retention keeps one backup: the first goes with the binlogs only it
    // needed; the window of the second stays whole.
    let segments = |d: &std::path::Path| {
        let dir = d
            .join("store")
            .join(format!("binlogs/cluster_{id}/shard_1"));
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".binlog"))
            .collect();
        names.sort();
        names
    };
    // The oldest segment: wholly before the second backup.
    let oldest = segments(d)[0].clone();
    s.stop().await;
    let s = file_manager(d, &url, Some(1), None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = get_storage(&s).await;
        if v["clusters"][0]["backups"].as_array().unwrap().len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "retention did nothing: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = windows(&s, &id).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].0, both[1].0, "{after:?}");
    assert!(!segments(d).contains(&oldest), "{oldest} was not pruned");
    // A restore inside the window kept works.
    let v = emit(
        &s,
        "cluster_restore",
        "",
        json!({"src_cluster_id": id, "dst_cluster_id": dst,
        "restore_time": after[0].1}),
    )
    .await;
    assert_eq!(v["status"], "accept", "{v}");
    let st = wait_job(&s, v["job_id"].as_str().unwrap(), 300).await;
    assert_eq!(st["status"], "done", "{st}");
    let dst_primary = shards(&s, &v_name(&s, &dst).await).await[0].0.clone();
    assert_eq!(
        sql(&dst_primary, "SELECT COUNT(*) FROM app.t"),
        sql(&primary, "SELECT COUNT(*) FROM app.t")
    );

    // logical_backup, then logical_restore of one table to a time between
    // two of its backups, under a new name, in the other cluster.
    sql(
        &primary,
        "CREATE TABLE app.l (id INT PRIMARY KEY, v VARCHAR(20), b BLOB); \
         INSERT INTO app.l SELECT seq, CONCAT('v', seq), IF(seq % 7 = 0, NULL, UNHEX('00FF0A09')) \
         FROM app.seq_1_to_100",
    );
    let v = emit(
        &s,
        "logical_backup",
        "",
        json!({"cluster_id": id, "backup_type": "table",
        "backup": [{"db_table": "postgres_$$_public.l", "backup_time": "01:00:00-02:00:00"}]}),
    )
    .await;
    assert!(
        v["error_info"].as_str().unwrap().contains("db.table"),
        "{v}"
    );
    let lb = done(
        &s,
        "logical_backup",
        json!({"cluster_id": id, "backup_type": "table",
        "backup": [{"db_table": "app.l", "backup_time": "01:00:00-02:00:00"}]}),
        120,
    )
    .await;
    assert_eq!(lb["attachment"]["tables"][0]["rows"], 100, "{lb}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    sql(
        &primary,
        "INSERT INTO app.l SELECT seq, 'later', NULL FROM app.seq_101_to_110; \
                   UPDATE app.l SET v = 'changed' WHERE id <= 5; DELETE FROM app.l WHERE id = 50",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = local(chrono::Local::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sql(
        &primary,
        "INSERT INTO app.l SELECT seq, 'too late', NULL FROM app.seq_111_to_120; \
                   UPDATE app.l SET v = 'after T' WHERE id = 1",
    );
    done(
        &s,
        "logical_backup",
        json!({"cluster_id": id, "db_table": "app.l",
        "backup_time": "01:00:00-02:00:00"}),
        120,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = done(
        &s,
        "logical_restore",
        json!({"src_cluster_id": id, "dst_cluster_id": dst,
        "restore_type": "table",
        "restore": [{"db_table": "app.l", "new_db_table": "app.l_at_t", "restore_time": t}]}),
        120,
    )
    .await;
    assert_eq!(r["attachment"]["tables"][0]["table"], "app.l_at_t", "{r}");
    assert_eq!(
        sql(
            &dst_primary,
            "SELECT COUNT(*), SUM(v = 'changed'), SUM(b IS NULL) FROM app.l_at_t"
        ),
        "109\t5\t24",
        "{r}"
    );
    assert_eq!(
        sql(
            &dst_primary,
            "SELECT COUNT(*) FROM app.l_at_t WHERE id = 50 OR id > 110 OR v = 'after T'"
        ),
        "0"
    );
    assert_eq!(
        sql(&dst_primary, "SELECT HEX(b) FROM app.l_at_t WHERE id = 1"),
        "00FF0A09"
    );
    // The same target again is refused, naming it.
    let v = emit(
        &s,
        "logical_restore",
        "",
        json!({"src_cluster_id": id, "dst_cluster_id": dst,
        "db_table": "app.l", "new_db_table": "app.l_at_t", "restore_time": t}),
    )
    .await;
    assert!(
        v["error_info"]
            .as_str()
            .unwrap()
            .contains("app.l_at_t exists"),
        "{v}"
    );
}

async fn v_name(s: &Service, cluster_id: &str) -> String {
    let v = emit(s, "get_cluster_summary", "", json!({})).await;
    let list = v["attachment"]["list_cluster"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.iter()
        .find(|c| c["cluster_id"] == cluster_id)
        .and_then(|c| c["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("{v}"))
}
