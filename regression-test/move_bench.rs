//! Table moves measured, in one run on one machine: a cluster of two shards
//! and two compute nodes; a sysbench table of BENCH_ROWS (2,000,000) rows
//! made through a compute node and loaded on its shard; then, under a
//! sysbench `oltp_write_only` load through both compute nodes, BENCH_MOVES
//! (5) `expand_cluster` moves of it back and forth between the shards.
//! Beside it, under the same load, as the reference rate, the data path's
//! full sync of the same table between the same two servers (what the
//! full-sync benchmark measures). Reported: each move's copy rate and cutover write block (p50
//! and max), the reference rate, the failed client writes (sysbench's
//! errors: it stops at the first one) and the transactions it made.
//! Not a test (ignored): `bash shell/bench_table_move.sh` runs it and
//! prints the table doc/benchmarks.md shows.

use crate::backup_bench::{env_or, job, percentile};
use crate::cluster::{emit, machine, Reaper, TOKEN};
use crate::cluster_engine::LocalAgent;
use ccr_syncer::config::{Config, StoreConfig};
use ccr_syncer::secret::Secret;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PW: &str = "move-bench-pw";

fn sql(node: &(String, i64), q: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-h", &node.0, "-P", &node.1.to_string(), "-uclustmgr"])
        .arg(format!("-p{PW}"))
        .args(["-N", "-B", "-e", q])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{q}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: bash shell/bench_table_move.sh"]
async fn table_moves_under_a_write_load() {
    let rows = env_or("BENCH_ROWS", 2_000_000);
    let moves = env_or("BENCH_MOVES", 5);
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let hosts = ["127.0.0.151", "127.0.0.152"];
    let mut agents = Vec::new();
    for h in hosts {
        agents.push(LocalAgent::start(h, d, Duration::ZERO).await);
    }
    let mut config = Config::with_store(StoreConfig::Sqlite { dir: d.join("db") });
    config.cluster.agent_token = Some(Secret::new(TOKEN));
    config.group.lease = Duration::from_secs(3);
    let s = crate::harness::service::Service::start(config).await;
    for a in &agents {
        let mut m = machine(a.host, Some(a.port), d);
        m["port_range"] = json!("48700-48800");
        job(&s, "create_machine", m.clone()).await;
        m["machine_type"] = json!("computer");
        job(&s, "create_machine", m).await;
    }
    let (v, _) = job(
        &s,
        "create_cluster",
        json!({"nick_name": "bench", "ha_mode": "no_rep", "shards": "2", "nodes": "1",
               "comps": "2", "innodb_size": "512", "max_connections": "300",
               "admin_user": "clustmgr", "admin_password": PW}),
    )
    .await;
    let cid = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let detail = emit(&s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    let a = &detail["attachment"];
    let node = |v: &Value| {
        (
            v["hostaddr"].as_str().unwrap().to_string(),
            v["port"].as_str().unwrap().parse::<i64>().unwrap(),
        )
    };
    let shards: Vec<(String, (String, i64))> = a["list_shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sh| {
            (
                sh["shard_id"].as_str().unwrap().to_string(),
                node(&sh["list_node"][0]),
            )
        })
        .collect();
    let comps: Vec<(String, i64)> = a["list_comp"]
        .as_array()
        .unwrap()
        .iter()
        .map(node)
        .collect();
    // The table, made through a compute node, loaded on its shard.
    sql(&comps[0], "CREATE DATABASE sbtest");
    sql(
        &comps[0],
        "CREATE TABLE sbtest.sbtest1 (id INT NOT NULL AUTO_INCREMENT, k INT NOT NULL DEFAULT 0, \
         c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', PRIMARY KEY (id), KEY k_1 (k))",
    );
    let mut on = None;
    for _ in 0..100 {
        for (id, p) in &shards {
            if sql(
                p,
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'sbtest1'",
            ) == "1"
            {
                on = Some((id.clone(), p.clone()));
            }
        }
        if on.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut src, src_node) = on.expect("sbtest1 placed");
    sql(
        &src_node,
        &format!(
            "USE sbtest; INSERT INTO sbtest1 (id, k, c, pad) SELECT seq, FLOOR(RAND() * {rows}), \
             REPEAT(MD5(seq), 3), REPEAT('p', 60) FROM seq_1_to_{rows}"
        ),
    );
    // The write load through both compute nodes, for the whole run.
    let load = |comp: &(String, i64), seed: u32| {
        Command::new("sysbench")
            .args([
                "oltp_write_only",
                &format!("--mysql-host={}", comp.0),
                &format!("--mysql-port={}", comp.1),
                "--mysql-user=clustmgr",
                &format!("--mysql-password={PW}"),
                "--mysql-db=sbtest",
                "--tables=1",
                &format!("--table-size={rows}"),
                "--threads=2",
                "--time=0",
                "--report-interval=1",
                &format!("--rand-seed={seed}"),
                "--db-ps-mode=disable",
                "run",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join(format!("sysbench-{seed}.out"))).unwrap())
            .stderr(std::fs::File::create(d.join(format!("sysbench-{seed}.err"))).unwrap())
            .spawn()
            .expect("sysbench")
    };
    let mut loads = vec![load(&comps[0], 1), load(&comps[1], 2)];
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The reference, under the same load: the data path's full sync of the
    // table between the two shards' servers (into another database).
    let dst_node = shards.iter().find(|(id, _)| *id != src).unwrap().1.clone();
    let reference = {
        let ep = |n: &(String, i64), db: &str| ccr_syncer::db::Endpoint {
            host: n.0.clone(),
            port: n.1 as u16,
            user: "clustmgr".into(),
            password: Secret::new(PW),
            database: db.into(),
            table: Some("sbtest1".into()),
            host_mapping: Default::default(),
            tls: Default::default(),
            minder: None,
        };
        sql(&dst_node, "CREATE DATABASE IF NOT EXISTS refcopy");
        let (tx, _rx) = tokio::sync::watch::channel(Default::default());
        let sync = ccr_syncer::sync::full::FullSync {
            spec: std::sync::Arc::new(ccr_syncer::sync::Route {
                name: "reference".into(),
                src: ep(&src_node, "sbtest"),
                dest: ep(&dst_node, "refcopy"),
                allow_table_exists: false,
            }),
            run_id: 1,
            rerun: false,
            settings: Default::default(),
            connect_timeout: Duration::from_secs(10),
            metrics: std::sync::Arc::new(ccr_syncer::sync::NoMeter),
            progress: tx,
            epoch: 1,
        };
        let t = Instant::now();
        sync.run().await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        sql(&dst_node, "DROP DATABASE refcopy");
        rows as f64 / secs
    };
    let mut blocks = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..moves {
        let dst = shards.iter().find(|(id, _)| *id != src).unwrap().0.clone();
        let (v, _) = job(
            &s,
            "expand_cluster",
            json!({"cluster_id": cid, "src_shard_id": src, "dst_shard_id": dst,
                   "table_list": ["sbtest.sbtest1"], "drop_old_table": "1", "reverse_keep_s": "0"}),
        )
        .await;
        let t = &v["attachment"]["tables"][0];
        blocks.push(t["cutover_block_ms"].as_f64().unwrap());
        let copy_s = t["copy_s"].as_f64().unwrap_or(0.0);
        if copy_s > 0.0 {
            rates.push(t["rows_copied"].as_f64().unwrap() / copy_s);
        }
        src = dst;
        for l in loads.iter_mut() {
            assert!(
                l.try_wait().unwrap().is_none(),
                "sysbench stopped: a client write failed"
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // A client that met an error has stopped (sysbench stops at the first).
    let mut failed = 0;
    let mut transactions = 0.0;
    for (i, mut l) in loads.into_iter().enumerate() {
        if l.try_wait().unwrap().is_some() {
            failed += 1;
        }
        let _ = l.kill();
        let _ = l.wait();
        let read = |ext: &str| {
            std::fs::read_to_string(d.join(format!("sysbench-{}.{ext}", i + 1))).unwrap_or_default()
        };
        let text = read("out");
        if failed > 0 {
            eprintln!("{text}{}", read("err"));
        }
        // `[ 5s ] thds: 2 tps: 123.00 …` once a second.
        transactions += text
            .lines()
            .filter_map(|l| {
                l.split("tps: ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .sum::<f64>();
    }
    let rate = percentile(rates.clone(), 0.5);
    let table = format!(
        "| measure | value |\n|---|---|\n\
         | rows | {rows} |\n\
         | moves | {moves} |\n\
         | copy rate, median of the moves (rows/s) | {rate:.0} |\n\
         | the data path's full sync of the same table, same servers, same load (rows/s) | {reference:.0} |\n\
         | copy rate vs full sync | {:.2}x |\n\
         | cutover write block p50 (ms) | {:.0} |\n\
         | cutover write block max (ms) | {:.0} |\n\
         | cutover write blocks (ms) | {:?} |\n\
         | sysbench clients that saw an error | {failed} |\n\
         | sysbench transactions during the moves | {transactions:.0} |\n",
        rate / reference,
        percentile(blocks.clone(), 0.5),
        blocks.iter().cloned().fold(0.0, f64::max),
        blocks
    );
    println!("{table}");
    if let Ok(out) = std::env::var("BENCH_OUT") {
        std::fs::write(out, &table).unwrap();
    }
    assert_eq!(failed, 0, "client writes failed");
    drop(agents);
}
