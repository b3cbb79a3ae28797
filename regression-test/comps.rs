//! Compute nodes and table moves, end to end: real agents on loopback
//! addresses, real `mariadbd`s (shards and Spider compute nodes), the
//! manager in-process. A cluster of two shards made with one compute node
//! (the seed's example), a second added; DDL through either carried to the
//! shards and the other; rows landing on the shard the catalog names; a
//! partitioned table spread; a refused statement visible; a switchover
//! followed by the compute nodes; `get_expand_table_list`; `expand_cluster`
//! under writes through both compute nodes (none fails, none lost), the
//! manager halted at its steps and a new one finishing the move, then the
//! real binary killed (SIGKILL) during a copy and during a switch;
//! `cancel_job` after the switch (switched back, nothing lost);
//! `repartition_tables` into a partitioned table of a second cluster; an
//! automatic failover of a shard (its machine dies) followed by both
//! compute nodes before the job ends.

use crate::cluster::{emit, machine, wait_job, Reaper, TOKEN};
use crate::cluster_engine::LocalAgent;
use crate::harness::service::Service;
use ccr_syncer::config::{Config, StoreConfig};
use ccr_syncer::secret::Secret;
use mysql_async::prelude::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PW: &str = "comps-admin-pw";
const HOSTS: [&str; 3] = ["127.0.0.111", "127.0.0.112", "127.0.0.113"];

type Node = (String, i64);

fn opts(n: &Node) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(n.0.clone())
        .tcp_port(n.1 as u16)
        .user(Some("clustmgr"))
        .pass(Some(PW))
        .into()
}

async fn conn(n: &Node) -> mysql_async::Conn {
    mysql_async::Conn::new(opts(n))
        .await
        .unwrap_or_else(|e| panic!("{n:?}: {e}"))
}

async fn run(n: &Node, q: &str) {
    let mut c = conn(n).await;
    c.query_drop(q)
        .await
        .unwrap_or_else(|e| panic!("{n:?} {q}: {e}"));
    let _ = c.disconnect().await;
}

async fn one(n: &Node, q: &str) -> Option<String> {
    let mut c = conn(n).await;
    let v: Option<Option<String>> = c
        .query_first(q)
        .await
        .unwrap_or_else(|e| panic!("{n:?} {q}: {e}"));
    let _ = c.disconnect().await;
    v.flatten()
}

async fn count(n: &Node, table: &str) -> i64 {
    one(n, &format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap()
        .parse()
        .unwrap()
}

/// Polls `check` for up to `secs`; panics with `what`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < until, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn engine_of(n: &Node, db: &str, t: &str) -> Option<String> {
    one(
        n,
        &format!(
            "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = '{t}'"
        ),
    )
    .await
}

async fn has_column(n: &Node, db: &str, t: &str, c: &str) -> bool {
    one(
        n,
        &format!(
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{db}' \
             AND TABLE_NAME = '{t}' AND COLUMN_NAME = '{c}'"
        ),
    )
    .await
        == Some("1".into())
}

async fn done(s: &Service, job_type: &str, p: Value, secs: u64) -> Value {
    let v = emit(s, job_type, "", p).await;
    assert_eq!(v["status"], "accept", "{job_type}: {v}");
    let v = wait_job(s, v["job_id"].as_str().unwrap(), secs).await;
    assert_eq!(v["status"], "done", "{job_type}: {v}");
    v
}

async fn manager(dir: &std::path::Path, failpoint: Option<&str>) -> Service {
    let mut config = Config::with_store(StoreConfig::Sqlite {
        dir: dir.join("db"),
    });
    config.cluster.agent_token = Some(Secret::new(TOKEN));
    config.cluster.step_retry = Duration::from_secs(60);
    config.cluster.failover_after = Duration::from_secs(3);
    config.cluster.failpoint = failpoint.map(str::to_string);
    config.cluster.failpoint_halts = true;
    config.group.lease = Duration::from_secs(3);
    config.group.heartbeat = Duration::from_millis(300);
    Service::start(config).await
}

/// Starts moving `app.c` from shard `from` to `to` (dropped where it
/// was, streamed back for `keep_s`); the job's id.
async fn move_c(s: &Service, cid: &str, from: &str, to: &str, keep_s: u64) -> String {
    let v = emit(
        s,
        "expand_cluster",
        "",
        json!({"cluster_id": cid, "src_shard_id": from, "dst_shard_id": to,
               "table_list": "app.c", "reverse_keep_s": keep_s.to_string(),
               "drop_old_table": "1"}),
    )
    .await;
    v["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

/// `(shard id, primary)` of a cluster, and its compute nodes.
async fn layout(s: &Service, name: &str) -> (Vec<(String, Node)>, Vec<(String, Node)>) {
    let v = emit(s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    let a = &v["attachment"];
    let mut shards = Vec::new();
    for sh in a["list_shard"].as_array().unwrap_or_else(|| panic!("{v}")) {
        for n in sh["list_node"].as_array().unwrap() {
            if n["master"] == "true" {
                shards.push((
                    sh["shard_id"].as_str().unwrap().to_string(),
                    (
                        n["hostaddr"].as_str().unwrap().to_string(),
                        n["port"].as_str().unwrap().parse().unwrap(),
                    ),
                ));
            }
        }
    }
    let comps = a["list_comp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["comp_id"].as_str().unwrap().to_string(),
                (
                    c["hostaddr"].as_str().unwrap().to_string(),
                    c["port"].as_str().unwrap().parse().unwrap(),
                ),
            )
        })
        .collect();
    (shards, comps)
}

/// Writers through each compute node: inserts of increasing ids (and an
/// update of the row before), every acknowledged write kept; a write that
/// fails is counted.
struct Writers {
    acked: Arc<Mutex<Vec<i64>>>,
    failed: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(comps: &[Node], table: &str, base: i64) -> Writers {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (i, n) in comps.iter().enumerate() {
            let (acked, failed, stop, n, table) = (
                acked.clone(),
                failed.clone(),
                stop.clone(),
                n.clone(),
                table.to_string(),
            );
            tasks.push(tokio::spawn(async move {
                let mut c = conn(&n).await;
                let mut id = base + 1_000_000 * (i as i64 + 1);
                while !stop.load(Ordering::SeqCst) {
                    id += 1;
                    let w = c
                        .exec_drop(
                            format!("INSERT INTO {table} (id, v) VALUES (?, 'w')"),
                            (id,),
                        )
                        .await;
                    match w {
                        Ok(()) => acked.lock().push(id),
                        Err(e) => {
                            failed.lock().push(format!("{n:?} insert {id}: {e}"));
                            c = conn(&n).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            }));
        }
        Writers {
            acked,
            failed,
            stop,
            tasks,
        }
    }

    async fn stop(self) -> (Vec<i64>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let a = self.acked.lock().clone();
        let f = self.failed.lock().clone();
        (a, f)
    }
}

/// Which shard's server a compute node's Spider table reads.
async fn reads_from(comp: &Node, db: &str, t: &str) -> String {
    let mut c = conn(comp).await;
    let row: Option<(String, String)> = c
        .query_first(format!("SHOW CREATE TABLE `{db}`.`{t}`"))
        .await
        .unwrap();
    let _ = c.disconnect().await;
    let show = row.unwrap().1;
    let at = show
        .find("srv \"ccr_s")
        .expect("a Spider table of the manager")
        + 10;
    show[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compute_nodes_carry_ddl_and_tables_move_between_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let mut agents = Vec::new();
    for h in HOSTS {
        agents.push(LocalAgent::start(h, d, Duration::ZERO).await);
    }
    let s = manager(d, None).await;
    for a in &agents {
        let mut m = machine(a.host, Some(a.port), d);
        m["port_range"] = json!("48100-48200");
        done(&s, "create_machine", m, 30).await;
    }
    // Two hosts are computers too: registered again with the other type.
    for a in &agents[..2] {
        let mut m = machine(a.host, Some(a.port), d);
        m["machine_type"] = json!("computer");
        m["port_range"] = json!("48300-48400");
        done(&s, "create_machine", m, 30).await;
    }
    let v = emit(&s, "get_machine_summary", "", json!({})).await;
    assert!(v.to_string().contains("storage,computer"), "{v}");

    // The seed's example, with rbr: one compute node.
    let v = done(
        &s,
        "create_cluster",
        json!({"nick_name": "my_nick_name", "ha_mode": "rbr", "shards": "2", "nodes": "2",
               "comps": "1", "max_storage_size": "20", "max_connections": "60",
               "cpu_cores": "8", "innodb_size": "16", "rocksdb_block_cache_size_M": "1024",
               "dbcfg": "1", "fullsync_level": "1", "install_proxysql": "0",
               "storage_iplists": HOSTS, "computer_iplists": [HOSTS[0]],
               "admin_user": "clustmgr", "admin_password": PW}),
        300,
    )
    .await;
    assert_eq!(v["attachment"]["comps"], "1", "{v}");
    let cid = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let (shards, comps) = layout(&s, &name).await;
    assert_eq!((shards.len(), comps.len()), (2, 1), "{shards:?} {comps:?}");
    let c1 = comps[0].1.clone();

    // DDL on compute node 1, rows written at once.
    run(&c1, "CREATE DATABASE app").await;
    run(
        &c1,
        "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO app.t VALUES (1, 'a'), (2, 'b')",
    )
    .await;
    eventually(10, "app.t a Spider table on compute node 1", || async {
        engine_of(&c1, "app", "t").await.as_deref() == Some("SPIDER")
    })
    .await;
    let on: Vec<&Node> = {
        let mut on = Vec::new();
        for (_, p) in &shards {
            if engine_of(p, "app", "t").await.is_some() {
                on.push(p);
            }
        }
        on
    };
    assert_eq!(on.len(), 1, "app.t on one shard");
    assert_eq!(
        count(on[0], "app.t").await,
        2,
        "the rows written before the switch reached the shard"
    );
    run(&c1, "INSERT INTO app.t VALUES (3, 'c')").await;
    assert_eq!(count(on[0], "app.t").await, 3);

    // A second compute node has every table at once.
    let v = done(
        &s,
        "add_comps",
        json!({"cluster_id": cid, "comps": "1", "computer_iplists": [HOSTS[1]]}),
        300,
    )
    .await;
    assert_eq!(v["attachment"]["comps"], "2", "{v}");
    let (_, comps) = layout(&s, &name).await;
    let c2 = comps[1].1.clone();
    assert_eq!(count(&c2, "app.t").await, 3);

    // ALTER, CREATE INDEX, RENAME through compute node 1: on compute node 2
    // and the shard within 2 s.
    run(&c1, "ALTER TABLE app.t ADD COLUMN w INT DEFAULT 7").await;
    eventually(2, "the new column on compute node 2", || async {
        has_column(&c2, "app", "t", "w").await
    })
    .await;
    assert!(has_column(on[0], "app", "t", "w").await);
    run(&c2, "INSERT INTO app.t (id, v, w) VALUES (4, 'd', 8)").await;
    run(&c1, "CREATE INDEX iv ON app.t (v)").await;
    eventually(2, "the index on the shard", || async {
        one(on[0], "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 't' AND INDEX_NAME = 'iv'").await == Some("1".into())
    })
    .await;
    run(&c1, "RENAME TABLE app.t TO app.t2").await;
    eventually(2, "app.t2 on compute node 2", || async {
        engine_of(&c2, "app", "t2").await.is_some()
    })
    .await;
    eventually(5, "app.t2 readable on compute node 2", || async {
        let mut c = conn(&c2).await;
        let r: Result<Option<i64>, _> = c.query_first("SELECT COUNT(*) FROM app.t2").await;
        let _ = c.disconnect().await;
        if !matches!(r, Ok(Some(4))) {
            eprintln!("app.t2 on compute node 2: {r:?}");
        }
        matches!(r, Ok(Some(4)))
    })
    .await;
    assert_eq!(
        engine_of(on[0], "app", "t2").await.as_deref(),
        Some("InnoDB")
    );

    // A partitioned table: each partition on a shard.
    run(
        &c1,
        "CREATE TABLE app.p (id INT PRIMARY KEY, v INT) PARTITION BY HASH (id) PARTITIONS 2",
    )
    .await;
    eventually(5, "app.p on compute node 2", || async {
        engine_of(&c2, "app", "p").await.as_deref() == Some("SPIDER")
    })
    .await;
    let values: Vec<String> = (1..=100).map(|i| format!("({i}, {i})")).collect();
    run(
        &c2,
        &format!("INSERT INTO app.p VALUES {}", values.join(", ")),
    )
    .await;
    let (a, b) = (
        count(&shards[0].1, "app.p").await,
        count(&shards[1].1, "app.p").await,
    );
    assert_eq!(a + b, 100);
    assert!(a > 0 && b > 0, "spread: {a} and {b}");
    assert_eq!(count(&c1, "app.p").await, 100);
    assert_eq!(
        one(&c1, "SELECT v FROM app.p WHERE id = 37")
            .await
            .as_deref(),
        Some("37")
    );

    // A statement the compute layer cannot carry is refused visibly.
    run(&c1, "CREATE SEQUENCE app.s").await;
    eventually(5, "a failed ddl job naming the sequence", || async {
        let v = emit(&s, "list_jobs", "", json!({})).await;
        v["attachment"]["list_jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["job_type"] == "ddl" && j["status"] == "failed")
    })
    .await;
    let metrics = s.get("metrics").await.text;
    assert!(
        metrics.contains("ccr_cluster_ddl_refused_total"),
        "{metrics}"
    );
    let page = s.get("view").await.text;
    assert!(
        page.contains("CREATE SEQUENCE"),
        "the status page shows the refusal"
    );

    // DROP through compute node 2: gone everywhere.
    run(&c2, "DROP TABLE app.t2").await;
    eventually(
        3,
        "app.t2 dropped on the shard and compute node 1",
        || async {
            engine_of(on[0], "app", "t2").await.is_none()
                && engine_of(&c1, "app", "t2").await.is_none()
        },
    )
    .await;

    // get_expand_table_list: a big table and a busy one on one shard.
    run(
        &c1,
        "CREATE TABLE app.big (id INT PRIMARY KEY, pad VARCHAR(200))",
    )
    .await;
    run(
        &c1,
        "CREATE TABLE app.busy (id INT PRIMARY KEY, v VARCHAR(20))",
    )
    .await;
    eventually(5, "app.busy placed", || async {
        engine_of(&c1, "app", "busy").await.as_deref() == Some("SPIDER")
    })
    .await;
    let big: Vec<String> = (1..=3000)
        .map(|i| format!("({i}, REPEAT('x', 200))"))
        .collect();
    run(
        &c1,
        &format!("INSERT INTO app.big VALUES {}", big.join(", ")),
    )
    .await;
    for i in 1..=50 {
        run(&c2, &format!("INSERT INTO app.busy VALUES ({i}, 'x')")).await;
        let _ = one(&c2, "SELECT COUNT(*) FROM app.busy").await;
    }
    let mut by_shard = Vec::new();
    for (id, p) in &shards {
        by_shard.push((
            id.clone(),
            engine_of(p, "app", "big").await.is_some(),
            engine_of(p, "app", "busy").await.is_some(),
        ));
    }
    for (id, has_big, has_busy) in &by_shard {
        let v = emit(
            &s,
            "get_expand_table_list",
            "",
            json!({"cluster_id": cid, "shard_id": id, "policy": "top_size"}),
        )
        .await;
        assert_eq!(v["status"], "done", "{v}");
        let list = v["attachment"]["table_list"].as_str().unwrap().to_string();
        if *has_big {
            assert!(list.starts_with("app.big"), "top_size of shard {id}: {v}");
        }
        let v = emit(
            &s,
            "get_expand_table_list",
            "",
            json!({"cluster_id": cid, "shard_id": id, "policy": "top_hit"}),
        )
        .await;
        let list = v["attachment"]["table_list"].as_str().unwrap().to_string();
        if *has_busy && !*has_big {
            assert!(list.starts_with("app.busy"), "top_hit of shard {id}: {v}");
        }
    }
    let v = emit(
        &s,
        "get_expand_table_list",
        "",
        json!({"cluster_id": cid, "shard_id": "1", "policy": "top_cpu"}),
    )
    .await;
    assert_eq!(v["error_code"], "400", "{v}");

    // A switchover: the compute nodes follow the new primary.
    let (sid, old) = shards[0].clone();
    let detail = emit(&s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    let replica = detail["attachment"]["list_shard"][0]["list_node"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["master"] == "false")
        .map(|n| {
            (
                n["hostaddr"].as_str().unwrap().to_string(),
                n["port"].as_str().unwrap().to_string(),
            )
        })
        .unwrap();
    done(
        &s,
        "manual_switch",
        json!({"cluster_id": cid, "shard_id": sid,
               "master_hostaddr": format!("{}_{}", old.0, old.1),
               "assign_hostaddr": format!("{}_{}", replica.0, replica.1)}),
        120,
    )
    .await;
    for c in [&c1, &c2] {
        let port = one(
            c,
            &format!("SELECT Port FROM mysql.servers WHERE Server_name = 'ccr_s{sid}'"),
        )
        .await;
        assert_eq!(
            port.as_deref(),
            Some(replica.1.as_str()),
            "compute node {c:?} repointed"
        );
    }
    let values: Vec<String> = (101..=120).map(|i| format!("({i}, {i})")).collect();
    run(
        &c1,
        &format!("INSERT INTO app.p VALUES {}", values.join(", ")),
    )
    .await;
    assert_eq!(count(&c2, "app.p").await, 120);
    let (shards, _) = layout(&s, &name).await;

    // expand_cluster of two tables under writes through both compute nodes.
    run(
        &c1,
        "CREATE TABLE app.m1 (id BIGINT PRIMARY KEY, v VARCHAR(20))",
    )
    .await;
    run(
        &c1,
        "CREATE TABLE app.m2 (id BIGINT PRIMARY KEY, v VARCHAR(20))",
    )
    .await;
    eventually(5, "app.m1 and app.m2 placed", || async {
        engine_of(&c2, "app", "m2").await.as_deref() == Some("SPIDER")
            && engine_of(&c2, "app", "m1").await.as_deref() == Some("SPIDER")
    })
    .await;
    let src_of = |t: &'static str| {
        let shards = shards.clone();
        async move {
            for (id, p) in &shards {
                if engine_of(p, "app", t).await.is_some() {
                    return (id.clone(), p.clone());
                }
            }
            panic!("app.{t} on no shard")
        }
    };
    let (src1, _) = src_of("m1").await;
    let (src2, _) = src_of("m2").await;
    if src1 != src2 {
        // Both on one shard first: m2 moved to m1's shard.
        let dst = src1.clone();
        done(&s, "expand_cluster", json!({"cluster_id": cid, "src_shard_id": src2, "dst_shard_id": dst,
                                          "table_list": ["app.m2"], "drop_old_table": "1", "reverse_keep_s": "0"}), 300).await;
    }
    let (src, src_node) = src_of("m1").await;
    let (dst, dst_node) = shards.iter().find(|(id, _)| *id != src).cloned().unwrap();
    let w1 = Writers::start(&[c1.clone(), c2.clone()], "app.m1", 0);
    let w2 = Writers::start(&[c2.clone(), c1.clone()], "app.m2", 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = done(&s, "expand_cluster", json!({"cluster_id": cid, "src_shard_id": src, "dst_shard_id": dst,
                                              "table_list": ["app.m1", "app.m2"], "drop_old_table": "1",
                                              "reverse_keep_s": "2"}), 600).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked1, failed1) = w1.stop().await;
    let (acked2, failed2) = w2.stop().await;
    assert!(
        failed1.is_empty() && failed2.is_empty(),
        "no write fails: {failed1:?} {failed2:?}"
    );
    for (t, acked) in [("m1", &acked1), ("m2", &acked2)] {
        assert!(acked.len() > 50, "writes went on: {}", acked.len());
        assert_eq!(
            count(&dst_node, &format!("app.{t}")).await,
            acked.len() as i64,
            "app.{t} on the new shard"
        );
        assert!(
            engine_of(&src_node, "app", t).await.is_none(),
            "dropped on the old shard"
        );
        for c in [&c1, &c2] {
            assert_eq!(reads_from(c, "app", t).await, dst);
        }
    }
    for t in v["attachment"]["tables"].as_array().unwrap() {
        let block = t["cutover_block_ms"].as_u64().unwrap();
        assert!(block < 2000, "write block {block} ms: {v}");
        assert_eq!(t["verify"]["equal"], true, "{v}");
    }

    // cancel_job after the switch: switched back, nothing lost.
    let w = Writers::start(&[c1.clone(), c2.clone()], "app.m1", 10_000_000);
    let v = emit(&s, "expand_cluster", "", json!({"cluster_id": cid, "src_shard_id": dst, "dst_shard_id": src,
                                                   "table_list": ["app.m1"], "reverse_keep_s": "120"})).await;
    let job = v["job_id"].as_str().unwrap().to_string();
    eventually(120, "the move switched", || async {
        reads_from(&c1, "app", "m1").await == src && reads_from(&c2, "app", "m1").await == src
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = emit(&s, "cancel_job", "", json!({"job_id": job})).await;
    assert_eq!(v["status"], "done", "{v}");
    let v = wait_job(&s, &job, 120).await;
    assert_eq!(v["error_code"], "499", "{v}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acked, failed) = w.stop().await;
    assert!(failed.is_empty(), "{failed:?}");
    for c in [&c1, &c2] {
        assert_eq!(reads_from(c, "app", "m1").await, dst, "switched back");
    }
    let want = acked1.len() + acked.len();
    assert_eq!(
        count(&dst_node, "app.m1").await,
        want as i64,
        "every write, before and after the switch, on the shard switched back to"
    );
    assert!(
        engine_of(&src_node, "app", "m1").await.is_none(),
        "the copy removed"
    );

    // repartition_tables into a partitioned table of a second cluster.
    let v = done(
        &s,
        "create_cluster",
        json!({"nick_name": "second", "ha_mode": "no_rep", "shards": "2", "nodes": "1",
               "comps": "1", "innodb_size": "16", "max_connections": "60",
               "computer_iplists": [HOSTS[1]], "admin_user": "clustmgr", "admin_password": PW}),
        300,
    )
    .await;
    let cid2 = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let name2 = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let (shards2, comps2) = layout(&s, &name2).await;
    let k1 = comps2[0].1.clone();
    run(&k1, "CREATE DATABASE app2").await;
    run(&k1, "CREATE TABLE app2.pm (id BIGINT PRIMARY KEY, v VARCHAR(20)) PARTITION BY KEY (id) PARTITIONS 2").await;
    eventually(5, "app2.pm placed", || async {
        engine_of(&k1, "app2", "pm").await.as_deref() == Some("SPIDER")
    })
    .await;
    let v = emit(&s, "repartition_tables", "", json!({"src_cluster_id": cid, "dst_cluster_id": cid2,
                                                       "repartition_tables": "test_$$_public.t=>test1_$$_private.t2"})).await;
    assert_eq!(v["error_code"], "400", "{v}");
    assert!(
        v["error_info"].as_str().unwrap().contains("database.table"),
        "{v}"
    );
    let v = done(
        &s,
        "table_repartition",
        json!({"src_cluster_id": cid, "dst_cluster_id": cid2,
                                                  "repartition_tables": "app.m1=>app2.pm"}),
        300,
    )
    .await;
    let rows = count(&dst_node, "app.m1").await;
    assert_eq!(v["attachment"]["tables"][0]["rows_copied"], rows, "{v}");
    assert_eq!(v["attachment"]["tables"][0]["verify"]["equal"], true, "{v}");
    let (a, b) = (
        count(&shards2[0].1, "app2.pm").await,
        count(&shards2[1].1, "app2.pm").await,
    );
    assert_eq!(a + b, rows);
    assert!(
        a > 0 && b > 0,
        "spread by the destination's partitioning: {a} and {b}"
    );

    // The primary of app.m1's shard dies with its machine's agent: the
    // shard fails over by itself, every compute node follows the new
    // primary, and writes through both resume.
    let fsid = reads_from(&c1, "app", "m1").await;
    let (shards, comps) = layout(&s, &name).await;
    let dead = shards.iter().find(|(id, _)| *id == fsid).unwrap().1.clone();
    let at = agents.iter().position(|a| a.host == dead.0).unwrap();
    drop(agents.remove(at));
    let pid = crate::shard_failover::mariadbd_pid(d, &dead).expect("the primary's pid");
    // SAFETY: kill(2) on the test's own mariadbd.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    eventually(60, "the shard failed over", || async {
        layout(&s, &name)
            .await
            .0
            .iter()
            .any(|(id, p)| *id == fsid && *p != dead)
    })
    .await;
    let new_primary = layout(&s, &name)
        .await
        .0
        .into_iter()
        .find(|(id, _)| *id == fsid)
        .unwrap()
        .1;
    let j = emit(
        &s,
        "get_failover_journal",
        "",
        json!({"cluster_id": cid, "shard_id": fsid}),
    )
    .await;
    let last = j["attachment"]["list_failover"]
        .as_array()
        .and_then(|l| l.last())
        .unwrap_or_else(|| panic!("{j}"))
        .clone();
    assert_eq!(last["kind"], "auto", "an automatic failover: {j}");
    let v = wait_job(&s, last["job_id"].as_str().unwrap(), 60).await;
    assert_eq!(v["status"], "done", "{v}");
    for (_, c) in &comps {
        let server = one(
            c,
            &format!(
                "SELECT CONCAT(Host, ':', Port) FROM mysql.servers WHERE Server_name = 'ccr_s{fsid}'"
            ),
        )
        .await;
        assert_eq!(
            server,
            Some(format!("{}:{}", new_primary.0, new_primary.1)),
            "compute node {c:?} repointed before the failover job ended"
        );
    }
    for (i, (_, c)) in comps.iter().enumerate() {
        let id = 900_000_001 + i as i64;
        eventually(
            30,
            "a write through a compute node after the failover",
            || async {
                let mut k = conn(c).await;
                let ok = k
                    .query_drop(format!(
                        "REPLACE INTO app.m1 (id, v) VALUES ({id}, 'failed over')"
                    ))
                    .await
                    .is_ok();
                let _ = k.disconnect().await;
                ok
            },
        )
        .await;
    }
    let rows = rows + comps.len() as i64;
    assert_eq!(count(&new_primary, "app.m1").await, rows);

    // delete_comp: a compute node on a live machine goes; the other
    // serves on.
    let (gone, stays) = if comps[1].1 .0 != dead.0 {
        (&comps[1], &comps[0])
    } else {
        (&comps[0], &comps[1])
    };
    done(
        &s,
        "delete_comp",
        json!({"cluster_id": cid, "comp_id": gone.0}),
        120,
    )
    .await;
    let (_, comps) = layout(&s, &name).await;
    assert_eq!(comps.len(), 1);
    assert_eq!(count(&stays.1, "app.m1").await, rows);
    drop(agents);
}

/// A move survives its manager stopping at its steps: halted after the
/// copy, a new manager streams, verifies and switches; halted as the
/// switch of a move back starts, a new one finishes it. Writes go on
/// through the compute node all along: none fails, none is lost, and the
/// table is never written on two shards (every row is on the one shard
/// the compute node reads at the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_survives_the_manager_stopping_at_its_steps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let hosts = ["127.0.0.116", "127.0.0.117"];
    let mut agents = Vec::new();
    for h in hosts {
        agents.push(LocalAgent::start(h, d, Duration::ZERO).await);
    }
    let s = manager(d, Some("after:copy:app.c")).await;
    for a in &agents {
        let mut m = machine(a.host, Some(a.port), d);
        m["port_range"] = json!("48500-48600");
        done(&s, "create_machine", m.clone(), 30).await;
        m["machine_type"] = json!("computer");
        done(&s, "create_machine", m, 30).await;
    }
    let v = done(
        &s,
        "create_cluster",
        json!({"nick_name": "moves", "ha_mode": "no_rep", "shards": "2", "nodes": "1",
               "comps": "1", "innodb_size": "16", "max_connections": "60",
               "admin_user": "clustmgr", "admin_password": PW}),
        300,
    )
    .await;
    let cid = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let (shards, comps) = layout(&s, &name).await;
    let c1 = comps[0].1.clone();
    run(&c1, "CREATE DATABASE app").await;
    run(
        &c1,
        "CREATE TABLE app.c (id BIGINT PRIMARY KEY, v VARCHAR(20))",
    )
    .await;
    eventually(10, "app.c placed", || async {
        engine_of(&c1, "app", "c").await.as_deref() == Some("SPIDER")
    })
    .await;
    let src = reads_from(&c1, "app", "c").await;
    let dst = shards.iter().find(|(id, _)| *id != src).unwrap().0.clone();
    let node = |id: &str| shards.iter().find(|(x, _)| x == id).unwrap().1.clone();
    let w = Writers::start(std::slice::from_ref(&c1), "app.c", 0);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Halted after the copy: a new manager goes on from the stream.
    let job = move_c(&s, &cid, &src, &dst, 1).await;
    eventually(60, "the copy done and the manager halted", || async {
        let v = emit(&s, "get_status", &job, json!({})).await;
        v["attachment"]["steps_done"]
            .to_string()
            .contains("copy:app.c")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        reads_from(&c1, "app", "c").await,
        src,
        "not switched by a halted manager"
    );
    s.stop().await;
    let s = manager(d, None).await;
    let v = wait_job(&s, &job, 300).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(reads_from(&c1, "app", "c").await, dst);

    // Halted as the switch of the move back starts.
    s.stop().await;
    let s = manager(d, Some("during:switch:app.c")).await;
    let job = move_c(&s, &cid, &dst, &src, 0).await;
    eventually(60, "the manager halted at the switch", || async {
        let v = emit(&s, "get_status", &job, json!({})).await;
        v["attachment"]["step"] == "switch:app.c"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.stop().await;
    let s = manager(d, None).await;
    let v = wait_job(&s, &job, 300).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(reads_from(&c1, "app", "c").await, src);
    s.stop().await;

    // The real binary killed (SIGKILL) while it copies, then while it
    // switches: each new one goes on from where the last one was. Enough
    // rows that the copy and the verify take a while.
    run(
        &node(&src),
        "USE app; INSERT INTO c SELECT seq, 'bulk' FROM seq_100000000_to_100399999",
    )
    .await;
    let config = "[group]\nlease_secs = 3\nheartbeat_ms = 300\n[cluster]\nstep_retry_s = 60\n";
    let env = [("CCR_AGENT_TOKEN", TOKEN)];
    let s = Service::process_with_env(d, config, &env).await;
    let job = move_c(&s, &cid, &src, &dst, 0).await;
    let mut s = s;
    for step in ["copy:app.c", "switch:app.c"] {
        eventually(120, &format!("{step} under way"), || async {
            let v = emit(&s, "get_status", &job, json!({})).await;
            v["attachment"]["step"] == step
                || v["attachment"]["steps_done"].to_string().contains(step)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let v = emit(&s, "get_status", &job, json!({})).await;
        eprintln!("killing the manager at {}", v["attachment"]["step"]);
        s.kill();
        s = Service::process_with_env(d, config, &env).await;
    }
    let v = wait_job(&s, &job, 300).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["attachment"]["tables"][0]["verify"]["equal"], true, "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, failed) = w.stop().await;
    assert!(failed.is_empty(), "no write fails: {failed:?}");
    assert_eq!(reads_from(&c1, "app", "c").await, dst);
    assert_eq!(
        count(&node(&dst), "app.c").await,
        acked.len() as i64 + 400_000,
        "every acknowledged write"
    );
    assert!(
        engine_of(&node(&src), "app", "c").await.is_none(),
        "dropped on the shard it left"
    );
    assert_eq!(count(&c1, "app.c").await, acked.len() as i64 + 400_000);

    // A second compute node, and the manager dying between the two compute
    // nodes' switches (the failpoint `cutover:app.c`): the one not switched
    // cannot write to the shard the table leaves (the fence), and the next
    // manager switches it from what the fence kept.
    let other = hosts.iter().find(|h| **h != c1.0).unwrap();
    done(
        &s,
        "add_comps",
        json!({"cluster_id": cid, "comps": "1", "computer_iplists": [other]}),
        300,
    )
    .await;
    let (_, comps) = layout(&s, &name).await;
    let c2 = comps.iter().find(|(_, n)| *n != c1).unwrap().1.clone();
    assert_eq!(engine_of(&c2, "app", "c").await.as_deref(), Some("SPIDER"));
    let base = count(&c1, "app.c").await;
    let w = Writers::start(&[c1.clone(), c2.clone()], "app.c", 10_000_000);
    s.kill();
    let crash = [
        ("CCR_AGENT_TOKEN", TOKEN),
        ("CCR_SYNCER_CM_FAILPOINT", "cutover:app.c"),
    ];
    let mut s = Service::process_with_env(d, config, &crash).await;
    let job = move_c(&s, &cid, &dst, &src, 0).await;
    assert!(
        s.wait_exit(Duration::from_secs(180)).await,
        "the failpoint did not abort the manager"
    );
    assert_ne!(
        reads_from(&c1, "app", "c").await,
        reads_from(&c2, "app", "c").await,
        "the manager died between the two compute nodes' switches"
    );
    let left = node(&dst);
    let before = count(&left, "app.c").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&left, "app.c").await,
        before,
        "no write reaches the shard the table leaves"
    );
    let s = Service::process_with_env(d, config, &env).await;
    let v = wait_job(&s, &job, 300).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["attachment"]["tables"][0]["verify"]["equal"], true, "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, failed) = w.stop().await;
    assert!(
        !failed.is_empty() && failed.iter().all(|f| f.contains("is moving to shard")),
        "the fenced compute node's writes, and only they, fail, saying why: {failed:?}"
    );
    eprintln!(
        "refused by the fence: {} writes, e.g. {}",
        failed.len(),
        failed[0]
    );
    for c in [&c1, &c2] {
        assert_eq!(reads_from(c, "app", "c").await, src, "{c:?}");
    }
    assert_eq!(
        count(&node(&src), "app.c").await,
        base + acked.len() as i64,
        "every acknowledged write"
    );
    assert!(
        engine_of(&node(&dst), "app", "c").await.is_none(),
        "dropped on the shard it left"
    );
    s.kill();
    drop(agents);
}
