//! Replicas added, rebuilt, deleted and limited, with real agents and real
//! `mariadbd`s: `add_nodes` clones a new replica after the primary purged
//! its binlogs; `rebuild_node` lists a diverged replica's errant GTIDs and
//! makes it equal again, paced by `pv_limit`, and is refused naming the
//! candidates when none may serve; `delete_node` leaves nothing;
//! `update_instance_cgroup` holds two CPU-bound sessions to one CPU. A
//! second test kills the manager and each agent in the middle of a rebuild.

use crate::cluster::{emit, free_port, machine, sql_with, wait_job, Agent, Reaper, TOKEN};
use crate::cluster_engine::{manager_at, LocalAgent};
use crate::harness::service::Service;
use ccr_syncer::config::StoreConfig;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const PW: &str = "replica-admin-pw";

fn paras() -> Value {
    json!({"nick_name": "repl", "ha_mode": "rbr", "shards": "1", "nodes": "2", "comps": "0",
           "innodb_size": "16", "max_connections": "40", "fullsync_level": "1",
           "cpu_cores": "2", "cpu_limit_node": "share",
           "admin_user": "clustmgr", "admin_password": PW})
}

fn sql(node: &(String, i64), q: &str) -> String {
    sql_with(&node.0, &node.1.to_string(), PW, q)
}

/// The shard's nodes as `(host, port)`, the primary first.
async fn shard_nodes(s: &Service, cluster_name: &str) -> Vec<(String, i64)> {
    let v = emit(
        s,
        "get_cluster_detail",
        "",
        json!({"cluster_name": cluster_name}),
    )
    .await;
    let mut list: Vec<(bool, String, i64)> = v["attachment"]["list_shard"][0]["list_node"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|n| {
            (
                n["master"] != "true",
                n["hostaddr"].as_str().unwrap().to_string(),
                n["port"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    list.sort();
    list.into_iter().map(|(_, h, p)| (h, p)).collect()
}

/// Whether both replication threads of `node` run.
fn replicating(node: &(String, i64)) -> bool {
    sql(
        node,
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
         WHERE VARIABLE_NAME = 'SLAVE_RUNNING'",
    ) == "ON"
}

/// Waits until `node` replicates and holds what the primary holds.
async fn equal_and_replicating(primary: &(String, i64), node: &(String, i64)) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let want = sql(primary, "CHECKSUM TABLE app.t");
        let got = sql(node, "CHECKSUM TABLE app.t");
        let running = replicating(node);
        if want == got && running {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node:?}: {got} vs {want}, replicating: {running}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn done(s: &Service, job_type: &str, p: Value, secs: u64) -> Value {
    let v = emit(s, job_type, "", p).await;
    assert_eq!(v["status"], "accept", "{job_type}: {v}");
    let v = wait_job(s, v["job_id"].as_str().unwrap(), secs).await;
    assert_eq!(v["status"], "done", "{job_type}: {v}");
    v
}

/// `job_type` with `p` is refused, its `error_info` naming `needle`.
async fn refused(s: &Service, job_type: &str, p: Value, needle: &str) -> Value {
    let v = emit(s, job_type, "", p).await;
    assert_eq!(v["status"], "failed", "{job_type}: {v}");
    assert!(
        v["error_info"].as_str().unwrap().contains(needle),
        "{needle}: {v}"
    );
    v
}

fn instance_pid(dir: &Path, node: &(String, i64)) -> i32 {
    std::fs::read_to_string(
        dir.join(format!("data-{}", node.0))
            .join(node.1.to_string())
            .join("mysqld.pid"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// CPU seconds `pid` used (user + system).
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// CPUs the instance used while two sessions ran a CPU-bound query.
async fn cpus_under_load(dir: &Path, node: &(String, i64)) -> f64 {
    let pid = instance_pid(dir, node);
    let q = "SET STATEMENT max_statement_time = 6 FOR SELECT BENCHMARK(2000000000, SHA2('x', 256))";
    let clients: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new("mariadb")
                .args(["-h", &node.0, "-P", &node.1.to_string(), "-u", "clustmgr"])
                .arg(format!("-p{PW}"))
                .args(["-e", q])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let used = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
    for mut c in clients {
        let _ = c.wait();
    }
    used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_added_rebuilt_deleted_and_limited() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let hosts = ["127.0.0.61", "127.0.0.62", "127.0.0.63"];
    let mut agents = Vec::new();
    for h in hosts {
        agents.push(LocalAgent::start(h, d, Duration::ZERO).await);
    }
    let s = manager_at(
        StoreConfig::Sqlite { dir: d.join("db") },
        Duration::from_secs(120),
        None,
    )
    .await;
    for a in &agents {
        let mut m = machine(a.host, Some(a.port), d);
        m["port_range"] = json!("47600-47700");
        done(&s, "create_machine", m, 30).await;
    }
    let v = done(&s, "create_cluster", paras(), 300).await;
    let cluster = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let nodes = shard_nodes(&s, &name).await;
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let (primary, r1) = (nodes[0].clone(), nodes[1].clone());
    // create_cluster's cpu_cores with cpu_limit_node: a soft share of 2.
    let base = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup/ccr-syncer"
    } else {
        "/sys/fs/cgroup/cpu/ccr-syncer"
    };
    let own = Path::new(base).join(format!("mysql-{}-{}", primary.0, primary.1));
    let share = std::fs::read_to_string(own.join("cpu.shares"))
        .or_else(|_| std::fs::read_to_string(own.join("cpu.weight")))
        .unwrap_or_else(|e| panic!("{}: {e}", own.display()));
    assert!(["2048", "200"].contains(&share.trim()), "{share}");
    let procs = std::fs::read_to_string(own.join("cgroup.procs")).unwrap();
    assert!(
        procs
            .lines()
            .any(|l| l.trim() == instance_pid(d, &primary).to_string()),
        "{procs}"
    );
    sql(
        &primary,
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(200)); \
         INSERT INTO app.t SELECT seq, REPEAT('x', 150) FROM app.seq_1_to_20000",
    );
    // Every binlog the new node would need is purged from the primary.
    equal_and_replicating(&primary, &r1).await;
    // (a file a replica still reads is skipped: tried again meanwhile).
    sql(&primary, "FLUSH BINARY LOGS");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = sql(&primary, "SHOW MASTER STATUS");
        let current = current.split('\t').next().unwrap().to_string();
        sql(&primary, &format!("PURGE BINARY LOGS TO '{current}'"));
        let logs = sql(&primary, "SHOW BINARY LOGS");
        if logs.lines().count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not purged: {logs}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Refused: nothing made.
    for (p, needle) in [
        (json!({"cluster_id": "999", "nodes": "1"}), "no cluster 999"),
        (json!({"cluster_id": cluster, "nodes": "0"}), "out of range"),
        (
            json!({"cluster_id": cluster, "nodes": "1", "shard_id": "7"}),
            "no shard 7",
        ),
        (
            json!({"cluster_id": cluster, "nodes": "1", "storage_iplists": ["10.1.1.1"]}),
            "no machine 10.1.1.1",
        ),
    ] {
        refused(&s, "add_nodes", p, needle).await;
    }

    // add_nodes: a clone, not a binlog replay.
    let v = done(
        &s,
        "add_nodes",
        json!({"cluster_id": cluster, "shard_id": "1", "nodes": "1",
               "storage_iplists": ["127.0.0.63"]}),
        300,
    )
    .await;
    let shard = &v["attachment"]["list_shard"][0];
    assert_eq!(shard["nodes"], "3", "{v}");
    let added = &shard["list_node"][0];
    assert_eq!(added["hostaddr"], "127.0.0.63", "{v}");
    let r2 = (
        "127.0.0.63".to_string(),
        added["port"].as_str().unwrap().parse::<i64>().unwrap(),
    );
    sql(
        &primary,
        "INSERT INTO app.t VALUES (30001, 'after the clone')",
    );
    equal_and_replicating(&primary, &r2).await;
    assert_eq!(sql(&r2, "SELECT @@read_only"), "1");
    assert_eq!(sql(&r2, "SELECT @@rpl_semi_sync_slave_enabled"), "1");
    assert_eq!(shard_nodes(&s, &name).await.len(), 3);

    // A replica diverged by hand: its own transactions, replication stopped
    // (as root on its socket: the clients' account obeys read_only).
    crate::shard_failover::root_sql(
        d,
        &r1,
        "STOP SLAVE; INSERT INTO app.t VALUES (40001, 'errant'), (40002, 'errant'); \
         UPDATE app.t SET v = 'changed here' WHERE id = 5",
    );
    let r1_server: String = sql(&r1, "SELECT @@server_id");
    // No healthy replica and no pulling from the primary: refused, naming them.
    sql(&r2, "STOP SLAVE");
    let rb = |extra: Value| {
        let mut p = json!({"cluster_id": cluster, "shard_id": "1",
            "rb_nodes": [{"hostaddr": r1.0, "port": r1.1.to_string(), "need_backup": "0",
                          "hdfs_host": "hdfs", "pv_limit": "0"}],
            "allow_pull_from_master": "0", "allow_replica_delay": "15"});
        for (k, v) in extra.as_object().unwrap() {
            if k == "pv_limit" || k == "need_backup" {
                p["rb_nodes"][0][k] = v.clone();
            } else {
                p[k] = v.clone();
            }
        }
        p
    };
    let v = refused(
        &s,
        "rebuild_node",
        rb(json!({})),
        &format!("{}:{} (not replicating", r2.0, r2.1),
    )
    .await;
    assert!(
        v["error_info"]
            .as_str()
            .unwrap()
            .contains("allow_pull_from_master"),
        "{v}"
    );
    refused(
        &s,
        "rebuild_node",
        json!({"cluster_id": cluster, "rb_nodes": [{"hostaddr": primary.0, "port": primary.1.to_string()}]}),
        "a primary is not rebuilt",
    )
    .await;
    sql(&r2, "START SLAVE");
    equal_and_replicating(&primary, &r2).await;

    // Rebuilt from r2, paced to 4 MB/s, the old datadir kept aside.
    let began = Instant::now();
    let v = done(
        &s,
        "rebuild_node",
        rb(json!({"pv_limit": "4", "need_backup": "1"})),
        300,
    )
    .await;
    let took = began.elapsed().as_secs_f64();
    let node = &v["attachment"]["rb_nodes"][0];
    assert_eq!(node["source"], format!("{}:{}", r2.0, r2.1), "{v}");
    let errant = node["errant_gtids"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        errant.iter().any(|e| e["gtid"]
            .as_str()
            .unwrap()
            .starts_with(&format!("0-{r1_server}-"))),
        "{v}"
    );
    let bytes = node["bytes"].as_u64().unwrap();
    let floor = bytes as f64 / (4.0 * 1048576.0);
    assert!(
        took >= floor * 0.9,
        "{bytes} bytes at 4 MB/s take {floor:.1} s, the rebuild took {took:.1} s"
    );
    let aside = node["previous_datadir"].as_str().unwrap();
    assert!(aside.contains("data.before-rebuild-"), "{v}");
    assert!(Path::new(aside).join("mysql").is_dir(), "{aside}");
    equal_and_replicating(&primary, &r1).await;
    assert_eq!(sql(&r1, "SELECT COUNT(*) FROM app.t WHERE id > 40000"), "0");
    assert_eq!(
        sql(&r1, "SELECT v FROM app.t WHERE id = 5"),
        "x".repeat(150)
    );
    assert_eq!(sql(&r1, "SELECT @@read_only"), "1");

    // The CPU limit: two CPU-bound sessions use about one CPU at most.
    let unlimited = cpus_under_load(d, &primary).await;
    let v = done(
        &s,
        "update_instance_cgroup",
        json!({"ip": primary.0, "port": primary.1.to_string(), "type": "mysql",
               "cpu_cores": "1", "cgroup_mode": "quota"}),
        60,
    )
    .await;
    let cgroup = v["attachment"]["cgroup"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string();
    let quota = std::fs::read_to_string(Path::new(&cgroup).join("cpu.cfs_quota_us"))
        .or_else(|_| std::fs::read_to_string(Path::new(&cgroup).join("cpu.max")))
        .unwrap();
    assert!(quota.starts_with("100000"), "{quota}");
    let limited = cpus_under_load(d, &primary).await;
    eprintln!(
        "two CPU-bound sessions: {unlimited:.2} CPUs unlimited, {limited:.2} with cpu_cores 1"
    );
    assert!(limited <= 1.2, "limited to 1 CPU, used {limited:.2}");
    let stat = std::fs::read_to_string(Path::new(&cgroup).join("cpu.stat")).unwrap();
    let throttled: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(throttled > 0, "{stat}");
    // Kept across a restart: the instance killed, pulled up, in its cgroup.
    let pid = instance_pid(d, &primary);
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = std::fs::read_to_string(
            d.join(format!("data-{}", primary.0))
                .join(primary.1.to_string())
                .join("mysqld.pid"),
        )
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
        let inside =
            std::fs::read_to_string(Path::new(&cgroup).join("cgroup.procs")).unwrap_or_default();
        if let Some(p) = now.filter(|p| *p != pid) {
            if inside.lines().any(|l| l.trim() == p.to_string()) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not back in its cgroup: {inside}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (p, needle) in [
        (
            json!({"ip": primary.0, "port": "1", "cpu_cores": "1"}),
            "no managed instance",
        ),
        (
            json!({"ip": primary.0, "port": primary.1.to_string(), "cpu_cores": "1", "cgroup_mode": "hard"}),
            "cgroup_mode",
        ),
        (
            json!({"ip": primary.0, "port": primary.1.to_string(), "cpu_cores": "1", "type": "pg"}),
            "not built",
        ),
    ] {
        refused(&s, "update_instance_cgroup", p, needle).await;
    }

    // delete_node: the primary refused; a replica leaves nothing.
    refused(
        &s,
        "delete_node",
        json!({"cluster_id": cluster, "shard_id": "1", "hostaddr": primary.0, "port": primary.1.to_string()}),
        "is shard 1's primary",
    )
    .await;
    let r2_dir = d.join(format!("data-{}", r2.0)).join(r2.1.to_string());
    assert!(r2_dir.is_dir());
    done(
        &s,
        "delete_node",
        json!({"cluster_id": cluster, "shard_id": "1", "hostaddr": r2.0, "port": r2.1.to_string()}),
        120,
    )
    .await;
    assert!(!r2_dir.exists(), "{} left", r2_dir.display());
    let listed = agents[2]
        .ask(json!({"ver": "0.1", "job_type": "get_node"}))
        .await;
    assert!(
        !listed["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["port"] == json!(r2.1)),
        "{listed}"
    );
    assert!(std::net::TcpStream::connect((r2.0.as_str(), r2.1 as u16)).is_err());
    assert_eq!(shard_nodes(&s, &name).await.len(), 2);
    done(&s, "delete_cluster", json!({"cluster_id": cluster}), 120).await;
    s.stop().await;
}

/// The manager, then each agent, killed while a rebuild's clone streams:
/// every rebuild ends done, the node equal and replicating, nothing of the
/// swap left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_survives_the_manager_and_either_agent_killed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let hosts = ["127.0.0.64", "127.0.0.65", "127.0.0.66"];
    let mut agents: Vec<Agent> = hosts
        .iter()
        .map(|h| Agent::start(h, free_port(h), d))
        .collect();
    let env = [("CCR_AGENT_TOKEN", TOKEN)];
    let mut s = Service::process_with_env(d, "", &env).await;
    for a in &agents {
        let mut m = machine(a.host, Some(a.port), d);
        m["port_range"] = json!("47800-47900");
        done(&s, "create_machine", m, 30).await;
    }
    let mut p = paras();
    p["nodes"] = json!("3");
    let v = done(&s, "create_cluster", p, 300).await;
    let cluster = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let nodes = shard_nodes(&s, &name).await;
    let (primary, r1) = (nodes[0].clone(), nodes[1].clone());
    sql(
        &primary,
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(200)); \
         INSERT INTO app.t SELECT seq, REPEAT('y', 150) FROM app.seq_1_to_10000",
    );
    let rebuild = |_id: &str| {
        json!({"cluster_id": cluster, "rb_nodes": [{"hostaddr": r1.0, "port": r1.1.to_string(),
               "pv_limit": "2"}], "allow_pull_from_master": "1"})
    };
    let agent_of = |host: &str| hosts.iter().position(|h| *h == host).unwrap();

    // The manager, the target's agent, then the source's, killed while
    // the clone streams.
    for (n, round) in ["manager", "target", "source"].into_iter().enumerate() {
        // The other replica replicates (a killed backup with
        // --safe-slave-backup did not leave it stopped), so it is the source.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !replicating(&nodes[2]) {
            assert!(
                Instant::now() < deadline,
                "{round}: {:?} does not replicate",
                nodes[2]
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let id = format!("rb-{round}");
        let v = emit(&s, "rebuild_node", &id, rebuild(&id)).await;
        assert_eq!(v["status"], "accept", "{v}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = emit(&s, "get_status", &id, json!({})).await;
            let p = &v["attachment"]["step_progress"];
            if p["phase"] == "streaming" && p["done"].as_u64().unwrap_or(0) > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "never streamed: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The source: the other replica (healthy, no delay), not the primary.
        match round {
            "manager" => {
                s.kill();
                s = Service::process_with_env(d, "", &env).await;
            }
            _ => {
                let victim = match round {
                    "target" => agent_of(&r1.0),
                    _ => agent_of(&nodes[2].0),
                };
                agents[victim].kill();
                tokio::time::sleep(Duration::from_secs(2)).await;
                agents[victim].respawn();
            }
        }
        // A killed agent's clone is retried (interrupted, or its stream
        // cut off), and seen to be.
        let mut retried = false;
        let deadline = Instant::now() + Duration::from_secs(300);
        let v = loop {
            let v = emit(&s, "get_status", &id, json!({})).await;
            if v["attachment"]["retries"].as_u64().unwrap_or(0) > 0 {
                retried = true;
            }
            if v["status"] == "done" || v["status"] == "failed" {
                break v;
            }
            assert!(Instant::now() < deadline, "{round}: still {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(v["status"], "done", "{round}: {v}");
        assert!(retried || round == "manager", "{round}: no retry seen");
        sql(
            &primary,
            &format!("INSERT INTO app.t VALUES ({}, '{round}')", 20001 + n),
        );
        equal_and_replicating(&primary, &r1).await;
        let dir = d.join(format!("data-{}", r1.0)).join(r1.1.to_string());
        for left in ["data.old", "data.clone", "binlog.old"] {
            assert!(!dir.join(left).exists(), "{round}: {left} left");
        }
    }
    done(&s, "delete_cluster", json!({"cluster_id": cluster}), 120).await;
    s.kill();
}
