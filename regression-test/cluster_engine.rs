//! The cluster manager's engine with real agents and real `mariadbd`s:
//! members of a group accepting at once never hand out one id or port
//! twice; a member frozen past its lease loses its job to another and
//! writes nothing more; a frozen agent is waited for while jobs on other
//! machines go on; an agent pulls up a killed instance while a long
//! operation holds another instance of the same machine. The managers and
//! agents run in-process where nothing has to be frozen or killed.

use crate::cluster::{emit, free_port, machine, wait_job, Agent, Reaper, TOKEN};
use crate::harness::*;
use ccr_syncer::agent::AgentConfig;
use ccr_syncer::config::{Config, StoreConfig};
use ccr_syncer::secret::Secret;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// A node agent served in-process on `host` (a free port).
pub(crate) struct LocalAgent {
    pub(crate) host: &'static str,
    pub(crate) port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LocalAgent {
    pub(crate) async fn start(host: &'static str, dir: &Path, hold: Duration) -> LocalAgent {
        LocalAgent::start_with(host, dir, hold, None).await
    }

    /// [`LocalAgent::start`] with `--backup-storage`.
    pub(crate) async fn start_with(
        host: &'static str,
        dir: &Path,
        hold: Duration,
        backup_storage: Option<String>,
    ) -> LocalAgent {
        let listener = tokio::net::TcpListener::bind((host, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = AgentConfig {
            host: host.into(),
            state_dir: dir.join(format!("state-{host}")),
            backup_dir: dir.join(format!("backups-{host}")),
            token: Secret::new(TOKEN),
            hold,
            s3: crate::harness::s3::credentials(),
            backup_storage,
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(ccr_syncer::agent::serve(config, listener, async move {
            let _ = rx.await;
        }));
        LocalAgent {
            host,
            port,
            stop: Some(tx),
        }
    }

    pub(crate) async fn ask(&self, body: Value) -> Value {
        reqwest::Client::new()
            .post(format!("http://{}:{}/", self.host, self.port))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("the agent answers")
            .json()
            .await
            .unwrap()
    }

    /// Sends a keyed operation until it ends; its last answer.
    pub(crate) async fn op(&self, body: Value) -> Value {
        loop {
            let v = self.ask(body.clone()).await;
            if v["status"] != "ongoing" {
                return v;
            }
        }
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A manager in-process on `store`, knowing the agents' token.
async fn manager(store: StoreConfig, step_retry: Duration) -> Service {
    manager_at(store, step_retry, None).await
}

/// [`manager`] that stops driving jobs at `failpoint`, as if it died there.
pub(crate) async fn manager_at(
    store: StoreConfig,
    step_retry: Duration,
    failpoint: Option<&str>,
) -> Service {
    let mut config = Config::with_store(store);
    config.cluster.agent_token = Some(Secret::new(TOKEN));
    config.cluster.step_retry = step_retry;
    config.cluster.failpoint = failpoint.map(str::to_string);
    config.cluster.failpoint_halts = true;
    config.group.lease = Duration::from_secs(3);
    config.group.heartbeat = Duration::from_millis(300);
    Service::start(config).await
}

fn mysql_store(database: &str) -> StoreConfig {
    StoreConfig::Mysql {
        host: "127.0.0.1".into(),
        port: dest().port,
        user: "root".into(),
        password: Secret::new(""),
        database: database.into(),
        tls: Default::default(),
    }
}

async fn register(s: &Service, host: &str, agent_port: u16, dir: &Path, range: &str) {
    let mut m = machine(host, Some(agent_port), dir);
    m["port_range"] = json!(range);
    let v = emit(s, "create_machine", "", m).await;
    let v = wait_job(s, v["job_id"].as_str().unwrap(), 60).await;
    assert_eq!(v["status"], "done", "{v}");
}

/// The smallest cluster: one shard of one node.
fn small(nick: &str, on: Option<&str>) -> Value {
    let mut p = json!({"nick_name": nick, "ha_mode": "no_rep", "shards": "1", "nodes": "1",
        "comps": "0", "innodb_size": "16", "max_connections": "30",
        "admin_password": "engine-test-pw"});
    if let Some(host) = on {
        p["storage_iplists"] = json!([host]);
    }
    p
}

/// Every node of a cluster, as `(host, port)`.
async fn nodes_of(s: &Service, cluster_name: &str) -> Vec<(String, String)> {
    let v = emit(
        s,
        "get_cluster_detail",
        "",
        json!({"cluster_name": cluster_name}),
    )
    .await;
    v["attachment"]["list_shard"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .flat_map(|s| s["list_node"].as_array().unwrap().clone())
        .map(|n| {
            (
                n["hostaddr"].as_str().unwrap().to_string(),
                n["port"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_accepting_at_once_never_share_an_id_or_port() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let agents = [
        LocalAgent::start("127.0.0.51", d, Duration::ZERO).await,
        LocalAgent::start("127.0.0.52", d, Duration::ZERO).await,
    ];
    let store = unique("cm_meta");
    let m1 = manager(mysql_store(&store), Duration::from_secs(300)).await;
    let m2 = manager(mysql_store(&store), Duration::from_secs(300)).await;
    for a in &agents {
        register(&m1, a.host, a.port, d, "47400-47500").await;
    }
    // Twenty create_cluster at the same instant, half on each member.
    let asks = (0..20).map(|i| {
        let member = if i % 2 == 0 { &m1 } else { &m2 };
        async move { emit(member, "create_cluster", "", small(&format!("c{i}"), None)).await }
    });
    let answers = futures_util::future::join_all(asks).await;
    let mut ids = Vec::new();
    for v in &answers {
        assert_eq!(v["status"], "accept", "{v}");
        ids.push(v["job_id"].as_str().unwrap().to_string());
    }
    let mut cluster_ids = BTreeSet::new();
    let mut ports = BTreeSet::new();
    let mut names = Vec::new();
    for id in &ids {
        let v = wait_job(&m2, id, 600).await;
        assert_eq!(v["status"], "done", "{v}");
        assert!(
            cluster_ids.insert(v["attachment"]["cluster_id"].as_str().unwrap().to_string()),
            "cluster id handed out twice: {v}"
        );
        let name = v["attachment"]["cluster_name"]
            .as_str()
            .unwrap()
            .to_string();
        for node in nodes_of(&m1, &name).await {
            assert!(ports.insert(node.clone()), "{node:?} handed out twice");
        }
        names.push(v["attachment"]["cluster_id"].as_str().unwrap().to_string());
    }
    assert_eq!((cluster_ids.len(), ports.len()), (20, 20));
    let running: usize = {
        let mut n = 0;
        for a in &agents {
            let v = a.ask(json!({"ver": "0.1", "job_type": "get_node"})).await;
            n += v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["state"] == "running")
                .count();
        }
        n
    };
    assert_eq!(running, 20, "one instance per cluster");
    // Removed again, side by side.
    let deletes = names.iter().map(|id| {
        let m = &m1;
        async move {
            let v = emit(m, "delete_cluster", "", json!({"cluster_id": id})).await;
            wait_job(m, v["job_id"].as_str().unwrap(), 300).await
        }
    });
    for v in futures_util::future::join_all(deletes).await {
        assert_eq!(v["status"], "done", "{v}");
    }
    m1.stop().await;
    m2.stop().await;
}

/// A job's row as the store has it: owner, epoch, status, updated_at.
fn row(store: &str, job_id: &str) -> String {
    dest().admin(&format!(
        "SELECT owner, owner_epoch, status, updated_at FROM {store}.cm_jobs WHERE job_id = '{job_id}'"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_loses_its_job_and_writes_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let agents = [
        LocalAgent::start("127.0.0.61", d, Duration::ZERO).await,
        LocalAgent::start("127.0.0.62", d, Duration::ZERO).await,
        LocalAgent::start("127.0.0.63", d, Duration::ZERO).await,
    ];
    let store = unique("cm_meta");
    let config = format!(
        "[store]\ntype = \"mysql\"\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\n\
         password = \"\"\ndatabase = \"{store}\"\ntls_mode = \"disabled\"\n\
         [group]\nlease_secs = 3\nheartbeat_ms = 300\n",
        dest().port
    );
    let env = [("CCR_AGENT_TOKEN", TOKEN)];
    let (d1, d2) = (d.join("m1"), d.join("m2"));
    std::fs::create_dir_all(&d1).unwrap();
    std::fs::create_dir_all(&d2).unwrap();
    let members = [
        Service::process_with_env(&d1, &config, &env).await,
        Service::process_with_env(&d2, &config, &env).await,
    ];
    for a in &agents {
        register(&members[0], a.host, a.port, d, "47600-47700").await;
    }
    let leader_id = loop {
        let stat = members[0].get("stat").await.body;
        if let Some(l) = stat["leader"].as_str().filter(|l| !l.is_empty()) {
            break l.to_string();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (leader, other) = if members[0].addr.to_string() == leader_id {
        (&members[0], &members[1])
    } else {
        (&members[1], &members[0])
    };
    let mut p = small("frozen", None);
    p["ha_mode"] = json!("rbr");
    p["nodes"] = json!("3");
    let v = emit(leader, "create_cluster", "fz", p).await;
    assert_eq!(v["status"], "accept", "{v}");
    // Frozen once its first instance is installed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = emit(other, "get_status", "fz", json!({})).await;
        let done = v["attachment"]["steps_done"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if done.contains(&json!("install:1:1")) {
            break;
        }
        assert!(v["status"] == "ongoing" && Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = leader.pid().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let v = wait_job(other, "fz", 300).await;
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert_eq!(v["status"], "done", "{v}");
    let before = row(&store, "fz");
    assert!(
        before.starts_with(&other.addr.to_string()),
        "the survivor owns the job: {before}"
    );
    // Woken: it notices it lost the job and writes nothing more.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(row(&store, "fz"), before);
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let nodes = nodes_of(other, &name).await;
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let mut n = 0;
    for a in &agents {
        let v = a.ask(json!({"ver": "0.1", "job_type": "get_node"})).await;
        n += v["nodes"].as_array().unwrap().len();
    }
    assert_eq!(n, 3, "one instance per reservation");
    let cid = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let v = emit(other, "delete_cluster", "", json!({"cluster_id": cid})).await;
    let v = wait_job(other, v["job_id"].as_str().unwrap(), 120).await;
    assert_eq!(v["status"], "done", "{v}");
    let [a, b] = members;
    a.kill();
    b.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_is_waited_for_while_other_machines_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let frozen = Agent::start("127.0.0.71", free_port("127.0.0.71"), d);
    let fine = Agent::start("127.0.0.72", free_port("127.0.0.72"), d);
    let s = manager(
        StoreConfig::Sqlite { dir: d.join("db") },
        Duration::from_secs(150),
    )
    .await;
    register(&s, frozen.host, frozen.port, d, "47800-47900").await;
    register(&s, fine.host, fine.port, d, "47800-47900").await;
    unsafe { libc::kill(frozen.pid(), libc::SIGSTOP) };
    let a = emit(
        &s,
        "create_cluster",
        "on_frozen",
        small("a", Some(frozen.host)),
    )
    .await;
    assert_eq!(a["status"], "accept", "{a}");
    let b = emit(&s, "create_cluster", "on_fine", small("b", Some(fine.host))).await;
    assert_eq!(b["status"], "accept", "{b}");
    let v = wait_job(&s, "on_fine", 120).await;
    assert_eq!(
        v["status"], "done",
        "a job on another machine is not held up: {v}"
    );
    // The first goes on retrying, saying why.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = emit(&s, "get_status", "on_frozen", json!({})).await;
        assert_eq!(v["status"], "ongoing", "{v}");
        if v["attachment"]["retries"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(v["attachment"]["step"], "install:1:1", "{v}");
            assert!(
                v["attachment"]["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("127.0.0.71"),
                "{v}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    unsafe { libc::kill(frozen.pid(), libc::SIGCONT) };
    let v = wait_job(&s, "on_frozen", 150).await;
    assert_eq!(v["status"], "done", "{v}");
    let nodes = frozen
        .op(json!({"ver": "0.1", "job_type": "get_node"}))
        .await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1, "{nodes}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pullup_is_not_held_up_by_another_instances_operation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    // Every operation holds its instance 25 s more: a long backup's stand-in.
    let agent = LocalAgent::start("127.0.0.81", d, Duration::from_secs(25)).await;
    let (p1, p2) = (free_port("127.0.0.81"), free_port("127.0.0.81"));
    let install = |port: u16, job: &str| {
        json!({"ver": "0.1", "job_type": "install_mysql", "job_id": job, "step": "install",
               "attempt": 1, "port": port, "datadir": d.join("data"), "server_id": port,
               "innodb_size": 16, "max_connections": 20})
    };
    let (a, b) = tokio::join!(agent.op(install(p1, "i1")), agent.op(install(p2, "i2")));
    assert_eq!(
        (&a["status"], &b["status"]),
        (&json!("done"), &json!("done")),
        "{a} {b}"
    );
    // A long operation on the first instance…
    let hold = json!({"ver": "0.1", "job_type": "start_mysql", "job_id": "long", "step": "s",
                      "attempt": 1, "port": p1});
    let v = agent.ask(hold.clone()).await;
    assert_eq!(v["status"], "ongoing", "{v}");
    // …while the second is killed: pulled up without waiting for it.
    let pid: i32 = std::fs::read_to_string(d.join("data").join(p2.to_string()).join("mysqld.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed_at = Instant::now();
    loop {
        let nodes = agent
            .ask(json!({"ver": "0.1", "job_type": "get_node"}))
            .await;
        let second = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["port"] == p2)
            .unwrap()
            .clone();
        let now_pid: Option<i32> =
            std::fs::read_to_string(d.join("data").join(p2.to_string()).join("mysqld.pid"))
                .ok()
                .and_then(|t| t.trim().parse().ok());
        if second["state"] == "running" && now_pid.is_some_and(|p| p != pid) {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "not pulled up: {second}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = agent
        .ask(json!({"ver": "0.1", "job_type": "get_status", "job_id": "long"}))
        .await;
    assert_eq!(
        v["status"], "ongoing",
        "the other operation still runs: {v}"
    );
    assert_eq!(v["progress"]["phase"], "held (failpoint)", "{v}");
    let v = agent.op(hold).await;
    assert_eq!(v["status"], "done", "{v}");
    for (port, job) in [(p1, "u1"), (p2, "u2")] {
        let v = agent
            .op(
                json!({"ver": "0.1", "job_type": "uninstall_mysql", "job_id": job,
                       "step": "u", "attempt": 1, "port": port}),
            )
            .await;
        assert_eq!(v["status"], "done", "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_create_cluster_example_is_taken_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let agents = [
        LocalAgent::start("127.0.0.91", d, Duration::ZERO).await,
        LocalAgent::start("127.0.0.92", d, Duration::ZERO).await,
    ];
    let s = manager(
        StoreConfig::Sqlite { dir: d.join("db") },
        Duration::from_secs(60),
    )
    .await;
    for a in &agents {
        register(&s, a.host, a.port, d, "48000-48100").await;
    }
    // Seed 001's example: what is not built (mgr) refused naming what to
    // send instead, compute nodes on a machine not registered as a computer
    // refused naming how to register it.
    let mut seed = json!({"nick_name": "my_nick_name", "ha_mode": "mgr", "shards": "1",
        "nodes": "3", "comps": "1", "max_storage_size": "20", "max_connections": "6",
        "cpu_cores": "8", "innodb_size": "32", "rocksdb_block_cache_size_M": "1024",
        "dbcfg": "1", "fullsync_level": "1", "install_proxysql": "0",
        "storage_iplists": ["127.0.0.91", "127.0.0.92"], "computer_iplists": ["127.0.0.91"],
        "cpu_limit_mode": "quota", "data_storage_MB": "1024", "log_storage_MB": "512"});
    let v = emit(&s, "create_cluster", "", seed.clone()).await;
    assert_eq!(v["error_code"], "501", "{v}");
    assert!(
        v["error_info"]
            .as_str()
            .unwrap()
            .contains("send \"ha_mode\": \"rbr\""),
        "{v}"
    );
    seed["ha_mode"] = json!("rbr");
    // Its computer_iplists names a machine registered as storage only.
    let v = emit(&s, "create_cluster", "", seed.clone()).await;
    assert_eq!(v["error_code"], "404", "{v}");
    assert!(
        v["error_info"]
            .as_str()
            .unwrap()
            .contains("machine_type computer"),
        "{v}"
    );
    seed["comps"] = json!("0");
    // No admin_password; max_connections 6 raised to MariaDB's 10.
    let v = emit(&s, "create_cluster", "seed", seed).await;
    assert_eq!(v["status"], "accept", "{v}");
    assert!(
        v["error_info"].as_str().unwrap().contains("raised to 10"),
        "the answer says so: {v}"
    );
    // A job on the same machine waits for it, says so, and a cancel while
    // it waits ends it having done nothing.
    let w = emit(
        &s,
        "set_machine",
        "waits",
        json!({"hostaddr": "127.0.0.91", "node_stats": "running"}),
    )
    .await;
    assert_eq!(w["status"], "accept", "{w}");
    let w = emit(&s, "get_status", "waits", json!({})).await;
    assert_eq!(w["status"], "ongoing", "{w}");
    assert_eq!(w["attachment"]["waiting_for"]["job_id"], "seed", "{w}");
    assert_eq!(
        w["attachment"]["waiting_for"]["resource"], "machine:127.0.0.91",
        "{w}"
    );
    let c = emit(&s, "cancel_job", "", json!({"job_id": "waits"})).await;
    assert_eq!(c["status"], "done", "{c}");
    let w = wait_job(&s, "waits", 30).await;
    assert_eq!(w["error_code"], "499", "{w}");
    assert!(
        w["error_info"]
            .as_str()
            .unwrap()
            .contains("nothing was done"),
        "{w}"
    );
    let first = wait_job(&s, "seed", 300).await;
    assert_eq!(first["status"], "done", "{first}");
    let password = first["attachment"]["admin_password"]
        .as_str()
        .unwrap_or_else(|| panic!("the first done answer gives the password: {first}"))
        .to_string();
    assert!(password.len() >= 20);
    assert!(first["attachment"].get("admin_password_sealed").is_none());
    let again = emit(&s, "get_status", "seed", json!({})).await;
    assert!(
        !again.to_string().contains(&password)
            && again["attachment"].get("admin_password").is_none(),
        "given once only: {again}"
    );
    let name = first["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let nodes = nodes_of(&s, &name).await;
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    for (h, p) in &nodes {
        assert_eq!(
            crate::cluster::sql_with(h, p, &password, "SELECT @@max_connections"),
            "10"
        );
    }
    // get_meta_summary, the seed's name, answers like get_meta_mode.
    let v = emit(&s, "get_meta_summary", "", json!({})).await;
    assert_eq!(v["attachment"]["mode"], "no_rep", "{v}");
    let cid = first["attachment"]["cluster_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = emit(&s, "delete_cluster", "", json!({"cluster_id": cid})).await;
    assert_eq!(
        wait_job(&s, v["job_id"].as_str().unwrap(), 120).await["status"],
        "done"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_node_removes_a_replica_and_refuses_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let agents = [
        LocalAgent::start("127.0.0.101", d, Duration::ZERO).await,
        LocalAgent::start("127.0.0.102", d, Duration::ZERO).await,
        LocalAgent::start("127.0.0.103", d, Duration::ZERO).await,
    ];
    let s = manager(
        StoreConfig::Sqlite { dir: d.join("db") },
        Duration::from_secs(60),
    )
    .await;
    for a in &agents {
        register(&s, a.host, a.port, d, "48200-48300").await;
    }
    let mut p = small("nodes", None);
    p["ha_mode"] = json!("rbr");
    p["nodes"] = json!("3");
    p["fullsync_level"] = json!("1");
    let v = emit(&s, "create_cluster", "", p).await;
    let v = wait_job(&s, v["job_id"].as_str().unwrap(), 300).await;
    assert_eq!(v["status"], "done", "{v}");
    let cid = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let detail = emit(&s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    let list = detail["attachment"]["list_shard"][0]["list_node"]
        .as_array()
        .unwrap()
        .clone();
    let primary = list.iter().find(|n| n["master"] == "true").unwrap();
    let replicas: Vec<&Value> = list.iter().filter(|n| n["master"] == "false").collect();
    let node = |n: &Value| json!({"cluster_id": cid, "shard_id": "1", "hostaddr": n["hostaddr"], "port": n["port"]});
    // The primary, a node of no cluster, the wrong shard: refused.
    let v = emit(&s, "delete_node", "", node(primary)).await;
    assert_eq!(v["error_code"], "409", "{v}");
    assert!(v["error_info"].as_str().unwrap().contains("primary"), "{v}");
    let mut wrong = node(replicas[0]);
    wrong["port"] = json!("1");
    assert_eq!(
        emit(&s, "delete_node", "", wrong).await["error_code"],
        "404"
    );
    let mut wrong = node(replicas[0]);
    wrong["shard_id"] = json!("2");
    assert_eq!(
        emit(&s, "delete_nodes", "", wrong).await["error_code"],
        "404"
    );
    // A replica: gone, with its process, datadir and port.
    let v = emit(&s, "delete_node", "", node(replicas[0])).await;
    let v = wait_job(&s, v["job_id"].as_str().unwrap(), 120).await;
    assert_eq!(
        (v["status"].as_str(), v["error_info"].as_str()),
        (Some("done"), Some("delete node successfully")),
        "{v}"
    );
    let (h, port) = (
        replicas[0]["hostaddr"].as_str().unwrap(),
        replicas[0]["port"].as_str().unwrap(),
    );
    let a = agents.iter().find(|a| a.host == h).unwrap();
    let nodes = a.ask(json!({"ver": "0.1", "job_type": "get_node"})).await;
    assert!(
        !nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["port"].as_u64() == port.parse().ok()),
        "{nodes}"
    );
    assert!(!d.join(format!("data-{h}")).join(port).exists());
    assert!(std::net::TcpStream::connect((h, port.parse::<u16>().unwrap())).is_err());
    // The last replica fullsync_level 1 waits for: refused unless forced.
    let v = emit(&s, "delete_node", "", node(replicas[1])).await;
    assert_eq!(v["error_code"], "409", "{v}");
    assert!(
        v["error_info"].as_str().unwrap().contains("semi-sync"),
        "{v}"
    );
    let mut forced = node(replicas[1]);
    forced["force"] = json!("1");
    let v = emit(&s, "delete_nodes", "", forced).await;
    assert_eq!(
        wait_job(&s, v["job_id"].as_str().unwrap(), 120).await["status"],
        "done"
    );
    let detail = emit(&s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    assert_eq!(
        detail["attachment"]["list_shard"][0]["list_node"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{detail}"
    );
    let v = emit(&s, "delete_cluster", "", json!({"cluster_id": cid})).await;
    assert_eq!(
        wait_job(&s, v["job_id"].as_str().unwrap(), 120).await["status"],
        "done"
    );
    s.stop().await;
}
