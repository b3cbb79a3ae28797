//! The cluster manager's Emit API and the node agent with real `mariadbd`s:
//! agents on 127.0.0.11–13 and 127.0.0.21–23 (each a "machine"). A cluster
//! of two shards runs with the manager and agents in-process; the tests
//! that kill an agent, or abort the manager at a failpoint, run the real
//! binary (a killed process is what they test).

use crate::cluster_engine::{manager_at, LocalAgent};
use crate::harness::service::Service;
use ccr_syncer::config::StoreConfig;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "agent-token-for-tests";

pub(crate) struct Agent {
    pub(crate) host: &'static str,
    pub(crate) port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
    /// `CCR_AGENT_FAILPOINT=hold_ms:N` for the next spawn.
    hold_ms: Option<u64>,
}

impl Agent {
    pub(crate) fn start(host: &'static str, port: u16, dir: &Path) -> Agent {
        let mut a = Agent {
            host,
            port,
            dir: dir.to_path_buf(),
            child: None,
            hold_ms: None,
        };
        a.spawn();
        a
    }

    /// Starts it again after [`Agent::kill`], on the same port and state.
    pub(crate) fn respawn(&mut self) {
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join(format!("agent-{}.log", self.host))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ccr-syncer"))
            .args([
                "agent",
                "--host",
                self.host,
                "--port",
                &self.port.to_string(),
            ])
            .arg("--state-dir")
            .arg(self.dir.join(format!("state-{}", self.host)))
            .env("CCR_AGENT_TOKEN", TOKEN)
            .envs(
                self.hold_ms
                    .map(|ms| ("CCR_AGENT_FAILPOINT", format!("hold_ms:{ms}"))),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect((self.host, self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "agent {} did not listen",
                self.host
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().expect("the agent runs").id() as i32
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn ask(&self, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut r = reqwest::Client::new()
            .post(format!("http://{}:{}/", self.host, self.port))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let answer = r.send().await.expect("the agent answers");
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    /// Sends `body` until its answer is no longer `ongoing` (a keyed
    /// operation sent again answers its state); the last answer.
    pub(crate) async fn op(&self, body: Value) -> Value {
        loop {
            let (status, v) = self.ask(body.clone(), Some(TOKEN)).await;
            assert_eq!(status, 200, "{v}");
            if v["status"] != "ongoing" {
                return v;
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills, when the test ends however it ends, every process started under
/// its directory (the agents' `mariadbd`s run in process groups of their
/// own and outlive the agents by design).
pub(crate) struct Reaper(pub(crate) std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let needle = self.0.to_string_lossy().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

pub(crate) fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The answer; a refused request's HTTP status is its error code.
pub(crate) async fn emit(s: &Service, job_type: &str, job_id: &str, paras: Value) -> Value {
    let r = s
        .post(
            "HttpService/Emit",
            json!({"version": "1.0", "job_id": job_id, "job_type": job_type,
                   "timestamp": "1435749309", "user_name": "kunlun_test", "paras": paras}),
        )
        .await;
    if r.status != 200 {
        assert_eq!(r.body["status"], "failed", "{}", r.text);
        assert_eq!(r.body["error_code"], r.status.to_string(), "{}", r.text);
    }
    r.body
}

/// Polls get_status until the job ends.
pub(crate) async fn wait_job(s: &Service, job_id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = emit(s, "get_status", job_id, json!({})).await;
        if v["status"] == "done" || v["status"] == "failed" {
            return v;
        }
        assert_eq!(v["status"], "ongoing", "{v}");
        assert!(Instant::now() < deadline, "job {job_id} still {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn machine(host: &str, agent_port: Option<u16>, dir: &Path) -> Value {
    let mut m = json!({"hostaddr": host, "machine_type": "storage", "port_range": "46000-46100",
        "rack_id": "1", "datadir": dir.join(format!("data-{host}")),
        "logdir": dir.join(format!("data-{host}")), "wal_log_dir": dir.join(format!("data-{host}")),
        "comp_datadir": dir.join(format!("data-{host}")), "total_mem": "8192", "total_cpu_cores": "8"});
    if let Some(p) = agent_port {
        m["agent_port"] = json!(p.to_string());
    }
    m
}

async fn jobs(s: &Service) -> usize {
    let v = emit(s, "list_jobs", "", json!({})).await;
    v["attachment"]["list_jobs"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_jobs_machines_and_agents() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    // Machine 1's agent on the seed's default port; the others on free ones.
    let mut agents = [
        Agent::start("127.0.0.11", 9998, d),
        Agent::start("127.0.0.12", free_port("127.0.0.12"), d),
        Agent::start("127.0.0.13", free_port("127.0.0.13"), d),
    ];
    let env = [("CCR_AGENT_TOKEN", TOKEN)];
    let s = Service::process_with_env(d, "", &env).await;

    // Bad requests: failed, a specific reason, nothing created.
    for (job_type, paras, needle) in [
        ("explode", json!({}), "unknown job_type"),
        ("create_machine", json!({}), "paras.hostaddr is missing"),
        (
            "create_machine",
            json!({"hostaddr": "127.0.0.11", "machine_type": "storage", "port_range": "9-1", "datadir": "/x"}),
            "port range",
        ),
        (
            "create_machine",
            json!({"hostaddr": "127.0.0.11", "machine_type": "fridge", "port_range": "1-2", "datadir": "/x"}),
            "machine_type",
        ),
        (
            "create_machine",
            json!({"hostaddr": "127.0.0.11", "machine_type": "storage", "port_range": "1-2", "datadir": "rel"}),
            "absolute",
        ),
        (
            "create_machine",
            json!({"hostaddr": ["127.0.0.11"]}),
            "expected a string",
        ),
        (
            "create_machine",
            json!({"hostaddr": "127.0.0.11", "machine_type": "storage", "port_range": "1-2", "datadir": "/x", "total_mem": "lots"}),
            "not a whole number",
        ),
        (
            "delete_machine",
            json!({"hostaddr": "127.0.0.11"}),
            "no machine",
        ),
        (
            "set_machine",
            json!({"hostaddr": "127.0.0.11", "node_stats": "running"}),
            "no machine",
        ),
        ("raft_mission", json!({"task_type": "elect"}), "task_type"),
        (
            "create_cluster",
            json!({"ha_mode": "rbr"}),
            "paras.shards is missing",
        ),
        (
            "add_shards",
            json!({"cluster_id": "1", "shards": "1"}),
            "no cluster 1",
        ),
        (
            "manual_backup_cluster",
            json!({"cluster_id": "1"}),
            "no backup storage",
        ),
        ("delete_cluster", json!({"cluster_id": "9"}), "no cluster 9"),
        ("get_status", json!({"job_id": "404"}), "no job 404"),
        ("cancel_job", json!({}), "paras.job_id is missing"),
    ] {
        let v = emit(&s, job_type, "", paras).await;
        assert_eq!(v["status"], "failed", "{job_type}: {v}");
        assert_ne!(v["error_code"], "0", "{v}");
        assert!(
            v["error_info"].as_str().unwrap().contains(needle),
            "{job_type}: {v}"
        );
    }
    let r = s.post_raw("HttpService/Emit", "{not json").await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (400, &json!("failed")),
        "{}",
        r.text
    );
    assert_eq!(jobs(&s).await, 0);

    // A dry run answers the plan and creates nothing.
    let mut m1 = machine("127.0.0.11", None, d);
    m1["dry_run"] = json!("1");
    let v = emit(&s, "create_machine", "", m1.clone()).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(
        v["attachment"]["steps"],
        json!(["reach_agent", "register_machine"])
    );
    assert_eq!(jobs(&s).await, 0);

    // Three machines, the first by a client-chosen job_id.
    m1.as_object_mut().unwrap().remove("dry_run");
    let v = emit(&s, "create_machine", "m1", m1.clone()).await;
    assert_eq!(v["status"], "accept", "{v}");
    assert_eq!(v["job_id"], "m1");
    let mut ids = vec!["m1".to_string()];
    for a in &agents[1..] {
        let v = emit(&s, "create_machine", "", machine(a.host, Some(a.port), d)).await;
        assert_eq!(v["status"], "accept", "{v}");
        ids.push(v["job_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let v = wait_job(&s, id, 30).await;
        assert_eq!(v["status"], "done", "{v}");
        assert_eq!(v["error_info"], "create machine successfully");
    }
    // The same job_id and body: the same job; another body: refused.
    let v = emit(&s, "create_machine", "m1", m1.clone()).await;
    assert_eq!(
        (v["status"].as_str(), v["job_id"].as_str()),
        (Some("accept"), Some("m1")),
        "{v}"
    );
    let v = emit(&s, "create_machine", "m1", machine("127.0.0.14", None, d)).await;
    assert_eq!(v["status"], "failed");
    assert!(
        v["error_info"]
            .as_str()
            .unwrap()
            .contains("another request"),
        "{v}"
    );
    assert_eq!(jobs(&s).await, 3);
    // A machine registered twice: refused.
    let v = emit(
        &s,
        "create_machine",
        "",
        machine("127.0.0.12", Some(agents[1].port), d),
    )
    .await;
    assert!(
        v["error_info"].as_str().unwrap().contains("exists already"),
        "{v}"
    );

    // An unreachable agent fails the job naming the address.
    let v = emit(&s, "create_machine", "", machine("127.0.0.14", None, d)).await;
    let v = wait_job(&s, v["job_id"].as_str().unwrap(), 30).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["error_info"]
            .as_str()
            .unwrap()
            .contains("127.0.0.14:9998"),
        "{v}"
    );

    // Online from the heartbeats; a killed agent goes offline.
    let summary = || async {
        let v = emit(&s, "get_machine_summary", "", json!({})).await;
        v["attachment"]["list_machine"].as_array().unwrap().clone()
    };
    let list = summary().await;
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(list.iter().all(|m| m["status"] == "online"), "{list:?}");
    agents[2].kill();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let list = summary().await;
        let m3 = list
            .iter()
            .find(|m| m["hostaddr"] == "127.0.0.13")
            .unwrap()
            .clone();
        if m3["status"] == "offline" {
            break;
        }
        assert!(Instant::now() < deadline, "{m3}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // set_machine, delete_machine, list_jobs filters, metrics.
    let v = emit(
        &s,
        "set_machine",
        "",
        json!({"hostaddr": "127.0.0.13", "node_stats": "dead"}),
    )
    .await;
    assert_eq!(
        wait_job(&s, v["job_id"].as_str().unwrap(), 30).await["status"],
        "done"
    );
    let m3 = summary()
        .await
        .into_iter()
        .find(|m| m["hostaddr"] == "127.0.0.13")
        .unwrap();
    assert_eq!(m3["node_stats"], "dead");
    let v = emit(
        &s,
        "delete_machine",
        "",
        json!({"hostaddr": "127.0.0.13", "machine_type": "storage"}),
    )
    .await;
    let v = wait_job(&s, v["job_id"].as_str().unwrap(), 30).await;
    assert_eq!(v["error_info"], "delete machine successfully", "{v}");
    assert_eq!(summary().await.len(), 2);
    let v = emit(&s, "list_jobs", "", json!({"status": "failed"})).await;
    assert_eq!(
        v["attachment"]["list_jobs"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    let metrics = s.get("metrics").await.text;
    assert!(
        metrics.contains("ccr_cluster_jobs{job_type=\"create_machine\",status=\"done\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("ccr_cluster_step_seconds"), "{metrics}");

    // raft_mission on a group of one (SQLite): refused with the reason.
    let v = emit(
        &s,
        "raft_mission",
        "",
        json!({"task_type": "add_peer", "peer": "127.0.0.1:25001"}),
    )
    .await;
    let v = wait_job(&s, v["job_id"].as_str().unwrap(), 30).await;
    assert!(
        v["error_info"].as_str().unwrap().contains("group of one"),
        "{v}"
    );

    // The manager killed right after a step, restarted: the job resumes and
    // ends done, the machine registered once.
    s.kill();
    agents[2].spawn();
    let env2 = [
        ("CCR_AGENT_TOKEN", TOKEN),
        ("CCR_SYNCER_CM_FAILPOINT", "after:reach_agent"),
    ];
    let mut s = Service::process_with_env(d, "", &env2).await;
    let v = emit(
        &s,
        "create_machine",
        "crash",
        machine("127.0.0.13", Some(agents[2].port), d),
    )
    .await;
    assert_eq!(v["status"], "accept", "{v}");
    assert!(
        s.wait_exit(Duration::from_secs(30)).await,
        "the failpoint aborts the manager"
    );
    let s = Service::process_with_env(d, "", &env).await;
    let v = wait_job(&s, "crash", 30).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(summary_count(&s, "127.0.0.13").await, 1, "registered once");
    // Killed while a step ran (saved as running): run again on resume,
    // counted as a retry.
    let v = emit(
        &s,
        "set_machine",
        "",
        json!({"hostaddr": "127.0.0.13", "node_stats": "running"}),
    )
    .await;
    assert_eq!(
        wait_job(&s, v["job_id"].as_str().unwrap(), 30).await["status"],
        "done"
    );
    s.kill();
    let env3 = [
        ("CCR_AGENT_TOKEN", TOKEN),
        ("CCR_SYNCER_CM_FAILPOINT", "during:set_node_stats"),
    ];
    let mut s = Service::process_with_env(d, "", &env3).await;
    let v = emit(
        &s,
        "set_machine",
        "mid",
        json!({"hostaddr": "127.0.0.13", "node_stats": "dead"}),
    )
    .await;
    assert_eq!(v["status"], "accept", "{v}");
    assert!(
        s.wait_exit(Duration::from_secs(30)).await,
        "the failpoint aborts the manager"
    );
    let s = Service::process_with_env(d, "", &env).await;
    let v = wait_job(&s, "mid", 30).await;
    assert_eq!(v["status"], "done", "{v}");
    let metrics = s.get("metrics").await.text;
    assert!(
        metrics.contains(
            "ccr_cluster_step_retries_total{job_type=\"set_machine\",step=\"set_node_stats\"} 1"
        ),
        "{metrics}"
    );

    agent_scenarios(&agents[0], d).await;
    interrupted(&mut agents[1], d).await;
    s.kill();
}

/// An agent killed during an operation reports it `interrupted` after its
/// restart; the next attempt of the same step completes.
async fn interrupted(a: &mut Agent, d: &Path) {
    // The operation holds its instance 10 s more: killed 700 ms in, it is
    // cut off however fast the install is.
    a.kill();
    a.hold_ms = Some(10_000);
    a.spawn();
    a.hold_ms = None;
    let port = free_port(a.host);
    let base = d.join("instances-b");
    let install = |attempt: u64| {
        json!({"ver": "0.1", "job_type": "install_mysql", "job_id": "k1", "step": "install",
               "attempt": attempt, "port": port, "datadir": base, "server_id": 12,
               "innodb_size": 32})
    };
    let body = install(1);
    let (host, agent_port) = (a.host, a.port);
    let send = tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .post(format!("http://{host}:{agent_port}/"))
            .bearer_auth(TOKEN)
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.kill();
    let _ = send.await;
    // Whatever the killed agent had started has ended before the retry.
    tokio::time::sleep(Duration::from_secs(8)).await;
    a.spawn();
    let v = a
        .op(json!({"ver": "0.1", "job_type": "get_status", "job_id": "k1"}))
        .await;
    assert_eq!(v["status"], "interrupted", "{v}");
    let v = a.op(install(2)).await;
    assert_eq!(v["status"], "done", "{v}");
    let v = a
        .op(json!({"ver": "0.1", "job_type": "uninstall_mysql", "job_id": "k2", "port": port}))
        .await;
    assert_eq!(v["status"], "done", "{v}");
}

async fn summary_count(s: &Service, host: &str) -> usize {
    let v = emit(s, "get_machine_summary", "", json!({})).await;
    v["attachment"]["list_machine"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["hostaddr"] == host)
        .count()
}

/// The agent alone: token, typed operations, keyed operations, an
/// instance installed, killed and pulled up.
async fn agent_scenarios(a: &Agent, d: &Path) {
    let (status, v) = a
        .ask(json!({"ver": "0.1", "job_type": "get_info"}), None)
        .await;
    assert_eq!(status, 401, "{v}");
    let (status, v) = a
        .ask(json!({"ver": "0.1", "job_type": "get_info"}), Some("wrong"))
        .await;
    assert_eq!(status, 401, "{v}");
    let v = a.op(json!({"ver": "0.1", "job_type": "get_info"})).await;
    assert!(
        v["cores"].as_u64().unwrap() >= 1 && v["total_mem_mb"].as_u64().unwrap() > 0,
        "{v}"
    );
    for (body, needle) in [
        (
            json!({"ver": "0.1", "job_type": "mysql_cmd", "cmd": "rm -rf /"}),
            "./startmysql.sh PORT",
        ),
        (
            json!({"ver": "0.1", "job_type": "mysql_cmd", "cmd": "./startmysql.sh 1; id"}),
            "no shell",
        ),
        (
            json!({"ver": "0.1", "job_type": "cluster_cmd", "cmd": "bash -x bin/cluster_mgr_safe"}),
            "no shell",
        ),
        (
            json!({"ver": "0.1", "job_type": "reboot"}),
            "unknown job_type",
        ),
    ] {
        let (status, v) = a.ask(body.clone(), Some(TOKEN)).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(
            v["error_info"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }

    let port = free_port(a.host);
    let base = d.join("instances");
    let install = json!({"ver": "0.1", "job_type": "install_mysql", "job_id": "j1", "step": "install",
        "attempt": 1, "port": port, "datadir": base, "server_id": 11, "innodb_size": "32",
        "max_connections": "50", "admin_user": "clustmgr", "admin_password": "s3cret-admin"});
    let v = a.op(install.clone()).await;
    assert_eq!(v["status"], "done", "{v}");
    let started = v.clone();
    // The same key again: that operation's state, not a second install.
    let v = a.op(install.clone()).await;
    assert_eq!(v, started);
    let port_text = port.to_string();
    let sql = |q: &str| sql_with(a.host, &port_text, "s3cret-admin", q);
    assert_eq!(sql("SELECT @@server_id, @@max_connections"), "11\t50");
    let nodes = a.op(json!({"ver": "0.1", "job_type": "get_node"})).await;
    assert_eq!(nodes["nodes"][0]["state"], "running", "{nodes}");
    assert!(!nodes.to_string().contains("s3cret-admin"));

    // SIGKILLed: pulled up within seconds.
    let pid = || -> i32 {
        std::fs::read_to_string(base.join(port.to_string()).join("mysqld.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let up = |secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if std::net::TcpStream::connect((a.host, port)).is_ok() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    unsafe { libc::kill(pid(), libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(up(20), "pulled up after SIGKILL");
    assert_eq!(sql("SELECT 1"), "1");
    // minutes -1: stays down.
    a.op(json!({"ver": "0.1", "job_type": "auto_pullup", "minutes": -1, "port": port}))
        .await;
    unsafe { libc::kill(pid(), libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        std::net::TcpStream::connect((a.host, port)).is_err(),
        "kept down"
    );
    // minutes 1: back after the window.
    let paused = Instant::now();
    a.op(json!({"ver": "0.1", "job_type": "auto_pullup", "minutes": "1"}))
        .await;
    assert!(up(90), "pulled up after the window");
    assert!(
        paused.elapsed() >= Duration::from_secs(55),
        "{:?}",
        paused.elapsed()
    );

    // The seed's start/stop scripts: a deliberate stop stays stopped.
    let v = a
        .op(json!({"ver": "0.1", "job_type": "mysql_cmd", "cmd": format!("./stopmysql.sh {port}")}))
        .await;
    assert_eq!(v["status"], "done", "{v}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        std::net::TcpStream::connect((a.host, port)).is_err(),
        "a stop is kept"
    );
    let v = a.op(json!({"ver": "0.1", "job_type": "mysql_cmd", "cmd": format!("./startmysql.sh {port}")})).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(sql("SELECT 2"), "2");

    // delete: a table, the binary logs.
    sql("CREATE DATABASE d1; CREATE TABLE d1.t1 (id INT PRIMARY KEY); INSERT INTO d1.t1 VALUES (1), (2), (3)");
    // send: the table to another database through the full-sync path.
    let v = a
        .op(
            json!({"ver": "0.1", "job_id": "j5", "job_type": "send", "file_type": "table",
            "s_ip": a.host, "s_port": port, "s_user": "clustmgr", "s_pwd": "s3cret-admin",
            "s_dbname": "d1", "s_table_name": "t1",
            "d_ip": a.host, "d_port": port, "d_user": "clustmgr", "d_pwd": "s3cret-admin",
            "d_dbname": "d2", "d_table_name": "t9"}),
        )
        .await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(sql("SELECT COUNT(*), SUM(id) FROM d2.t9"), "3\t6");
    // coldbackup, then coldrestore: the instance as it was at the backup.
    let v = a
        .op(
            json!({"ver": "0.1", "job_id": "j6", "job_type": "coldbackup", "s_ip": a.host,
            "s_port": port, "s_user": "clustmgr", "s_pwd": "s3cret-admin"}),
        )
        .await;
    assert_eq!(v["status"], "done", "{v}");
    // Its progress in bytes: the packed file's size at the end.
    assert_eq!(v["progress"]["phase"], "done", "{v}");
    let file = v["result"]["file"].as_str().unwrap().to_string();
    assert_eq!(
        v["progress"]["done"].as_u64(),
        Some(std::fs::metadata(&file).unwrap().len()),
        "{v}"
    );
    assert!(file.ends_with(".tgz") && Path::new(&file).is_file(), "{v}");
    sql("DROP DATABASE d2");
    let (status, v) = a
        .ask(
            json!({"ver": "0.1", "job_id": "j7", "job_type": "coldrestore", "s_ip": a.host,
            "s_port": port, "file": "/etc/passwd"}),
            Some(TOKEN),
        )
        .await;
    assert!(
        status == 200
            && v["status"] == "failed"
            && v["error_info"]
                .as_str()
                .unwrap()
                .contains("backup directory"),
        "{v}"
    );
    let v = a
        .op(
            json!({"ver": "0.1", "job_id": "j8", "job_type": "coldrestore", "s_ip": a.host,
            "s_port": port, "file": file}),
        )
        .await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(sql("SELECT COUNT(*), SUM(id) FROM d2.t9"), "3\t6");
    let v = a
        .op(
            json!({"ver": "0.1", "job_id": "j2", "job_type": "delete", "file_type": "table",
        "s_ip": a.host, "s_port": port, "s_user": "clustmgr", "s_pwd": "s3cret-admin",
        "s_dbname": "d1", "s_table_name": "t1"}),
        )
        .await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(
        sql("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'd1'"),
        "0"
    );
    let v = a
        .op(
            json!({"ver": "0.1", "job_id": "j3", "job_type": "delete", "file_type": "binlog",
        "s_ip": a.host, "s_port": port, "s_user": "clustmgr", "s_pwd": "s3cret-admin"}),
        )
        .await;
    assert_eq!(v["status"], "done", "{v}");
    let v = a
        .op(json!({"ver": "0.1", "job_type": "get_status", "job_id": "j3"}))
        .await;
    assert_eq!(v["status"], "done", "{v}");

    // Uninstalled: nothing left.
    let v = a
        .op(json!({"ver": "0.1", "job_type": "uninstall_mysql", "job_id": "j4", "port": port}))
        .await;
    assert_eq!(v["status"], "done", "{v}");
    assert!(!base.join(port.to_string()).exists());
    let nodes = a.op(json!({"ver": "0.1", "job_type": "get_node"})).await;
    assert_eq!(nodes["nodes"], json!([]), "{nodes}");
    let state =
        std::fs::read_to_string(d.join("state-127.0.0.11").join("operations.json")).unwrap();
    assert!(
        !state.contains("s3cret-admin"),
        "no password in the agent's files"
    );
}

/// The mysql client's output lines, as the account `clustmgr` with
/// `password`; its error output when it fails.
fn query(host: &str, port: &str, password: &str, q: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args(["-h", host, "-P", port, "-u", "clustmgr"])
        .arg(format!("-p{password}"))
        .args(["-N", "-e", q])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

pub(crate) fn sql_with(host: &str, port: &str, password: &str, q: &str) -> String {
    query(host, port, password, q).unwrap_or_else(|e| panic!("{host}:{port} {q}: {e}"))
}

fn sql_as(host: &str, port: &str, q: &str) -> String {
    sql_with(host, port, "cluster-admin-pw", q)
}

fn cluster_paras(shards: u32, nodes: u32) -> Value {
    json!({"nick_name": "orders", "ha_mode": "rbr", "shards": shards.to_string(),
           "nodes": nodes.to_string(), "comps": "0", "max_storage_size": "20",
           "max_connections": "60", "cpu_cores": "2", "innodb_size": "32",
           "fullsync_level": "1", "admin_user": "clustmgr", "admin_password": "cluster-admin-pw"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_two_shards_on_three_machines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let hosts = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
    // In-process: the agents and the manager (whose failpoint halts it
    // instead of aborting the process).
    let mut agents = Vec::new();
    for h in hosts {
        agents.push(LocalAgent::start(h, d, Duration::ZERO).await);
    }
    let store = || StoreConfig::Sqlite { dir: d.join("db") };
    let retry = Duration::from_secs(300);
    let s = manager_at(store(), retry, None).await;
    for a in &agents {
        let mut m = machine(a.host, Some(a.port), d);
        m["port_range"] = json!("47000-47100");
        let v = emit(&s, "create_machine", "", m).await;
        assert_eq!(
            wait_job(&s, v["job_id"].as_str().unwrap(), 30).await["status"],
            "done"
        );
    }

    // Refused: nothing created.
    for (change, needle) in [
        (json!({"ha_mode": "mgr"}), "mgr"),
        (json!({"comps": "1"}), "machine_type computer"),
        (json!({"fullsync_level": "3"}), "fullsync_level"),
        (json!({"admin_password": "short"}), "at least 8"),
        (json!({"cpu_limit_mode": "turbo"}), "cpu_limit_mode"),
        (
            json!({"storage_iplists": ["10.9.9.9"]}),
            "no machine 10.9.9.9",
        ),
        (json!({"shards": "0"}), "out of range"),
    ] {
        let mut p = cluster_paras(2, 3);
        for (k, v) in change.as_object().unwrap() {
            p[k] = v.clone();
        }
        let v = emit(&s, "create_cluster", "", p).await;
        assert_eq!(v["status"], "failed", "{v}");
        assert!(
            v["error_info"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    let mut p = cluster_paras(2, 3);
    p["dry_run"] = json!("1");
    let v = emit(&s, "create_cluster", "", p).await;
    assert_eq!(v["status"], "done", "{v}");
    let placements = v["attachment"]["plan"]["placements"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(placements.len(), 6, "{v}");
    assert!(
        !v.to_string().contains("cluster-admin-pw")
            && v["attachment"]["plan"]
                .get("admin_password_sealed")
                .is_none()
    );
    let v = emit(&s, "get_cluster_summary", "", json!({})).await;
    assert_eq!(v["attachment"]["list_cluster"], json!([]), "{v}");

    // Created through a stop of the manager right after the second node's
    // install (nothing more saved), then a new manager on the same store.
    s.stop().await;
    let s = manager_at(store(), retry, Some("after:install:1:2")).await;
    let v = emit(&s, "create_cluster", "c1", cluster_paras(2, 3)).await;
    assert_eq!(v["status"], "accept", "{v}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = emit(&s, "get_status", "c1", json!({})).await;
        let done = v["attachment"]["steps_done"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if done.contains(&json!("install:1:2")) {
            break;
        }
        assert!(v["status"] == "ongoing" && Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = emit(&s, "get_status", "c1", json!({})).await;
    assert_eq!(v["attachment"]["step"], "install:1:3", "halted there: {v}");
    s.stop().await;
    let s = manager_at(store(), retry, None).await;
    let v = wait_job(&s, "c1", 300).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["attachment"]["shards"], "2", "{v}");
    let name = v["attachment"]["cluster_name"]
        .as_str()
        .unwrap()
        .to_string();
    let cluster_id = v["attachment"]["cluster_id"].as_str().unwrap().to_string();

    // One primary per shard, on distinct machines, replicas read-only and
    // replicating, ports inside the range.
    let v = emit(&s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    let shards = v["attachment"]["list_shard"].as_array().unwrap().clone();
    assert_eq!(shards.len(), 2, "{v}");
    for (i, shard) in shards.iter().enumerate() {
        let nodes = shard["list_node"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{v}");
        assert_eq!(
            nodes.iter().filter(|n| n["master"] == "true").count(),
            1,
            "{v}"
        );
        let mut machines: Vec<&str> = nodes
            .iter()
            .map(|n| n["hostaddr"].as_str().unwrap())
            .collect();
        machines.sort();
        machines.dedup();
        assert_eq!(
            machines.len(),
            3,
            "a shard's nodes on distinct machines: {v}"
        );
        let primary = nodes.iter().find(|n| n["master"] == "true").unwrap();
        for n in nodes {
            assert_eq!(n["status"], "online", "{v}");
            let port: u16 = n["port"].as_str().unwrap().parse().unwrap();
            assert!((47000..=47100).contains(&port), "{v}");
            assert_eq!(n["read_only"], json!(n["master"] == "false"), "{v}");
        }
        let (ph, pp) = (
            primary["hostaddr"].as_str().unwrap(),
            primary["port"].as_str().unwrap(),
        );
        sql_as(ph, pp, &format!("CREATE DATABASE app{i}; CREATE TABLE app{i}.t (id INT PRIMARY KEY); INSERT INTO app{i}.t VALUES ({i})"));
        for n in nodes.iter().filter(|n| n["master"] == "false") {
            let (h, p) = (n["hostaddr"].as_str().unwrap(), n["port"].as_str().unwrap());
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let seen = query(
                    h,
                    p,
                    "cluster-admin-pw",
                    &format!("SELECT id FROM app{i}.t"),
                );
                if seen.is_ok_and(|v| v == i.to_string()) {
                    break;
                }
                assert!(Instant::now() < deadline, "the row on {h}:{p}");
                std::thread::sleep(Duration::from_millis(300));
            }
            assert_eq!(
                sql_as(h, p, "SELECT @@read_only, @@rpl_semi_sync_slave_enabled"),
                "1\t1"
            );
        }
        assert_eq!(sql_as(ph, pp, "SELECT @@rpl_semi_sync_master_enabled"), "1");
        let v = emit(
            &s,
            "get_variable",
            "",
            json!({"hostaddr": ph, "port": pp, "variable": "innodb_buffer_pool_size"}),
        )
        .await;
        assert_eq!(v["attachment"]["value"], "33554432", "{v}");
    }
    let v = emit(&s, "get_cluster_summary", "", json!({})).await;
    assert_eq!(
        v["attachment"]["list_cluster"][0]["name"],
        json!(name),
        "{v}"
    );
    // A shard added like the others, then removed; a shard with user
    // tables is not removed unless forced.
    let v = emit(
        &s,
        "add_shards",
        "",
        json!({"cluster_id": cluster_id, "shards": "1", "nodes": "2"}),
    )
    .await;
    let v = wait_job(&s, v["job_id"].as_str().unwrap(), 120).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["attachment"]["list_shard"][0]["shard_id"], "3", "{v}");
    assert_eq!(v["attachment"]["shards"], "3", "{v}");
    let v = emit(&s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    let third = v["attachment"]["list_shard"][2].clone();
    assert_eq!(third["list_node"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        third["list_node"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "online"),
        "{v}"
    );
    let v = emit(
        &s,
        "delete_shard",
        "",
        json!({"cluster_id": cluster_id, "shard_id": "1"}),
    )
    .await;
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v["error_info"].as_str().unwrap().contains("app0.t"), "{v}");
    let v = emit(
        &s,
        "delete_shard",
        "",
        json!({"cluster_id": cluster_id, "shard_id": "3"}),
    )
    .await;
    let v = wait_job(&s, v["job_id"].as_str().unwrap(), 120).await;
    assert_eq!(v["status"], "done", "{v}");
    let v = emit(&s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
    assert_eq!(
        v["attachment"]["list_shard"].as_array().unwrap().len(),
        2,
        "{v}"
    );
    assert_eq!(v["attachment"]["shards"], "2", "{v}");
    // A machine with instances is not deleted.
    let v = emit(&s, "delete_machine", "", json!({"hostaddr": hosts[0]})).await;
    assert!(
        v["error_info"]
            .as_str()
            .unwrap()
            .contains("still has instances"),
        "{v}"
    );
    // Two jobs do not interleave; a cancel mid-creation removes what was made.
    let v = emit(&s, "create_cluster", "c2", cluster_paras(1, 2)).await;
    assert_eq!(v["status"], "accept", "{v}");
    // Once its first instance is installed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = emit(&s, "get_status", "c2", json!({})).await;
        let done = v["attachment"]["steps_done"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if done.contains(&json!("install:1:1")) {
            break;
        }
        assert!(v["status"] != "done" && Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = emit(&s, "cancel_job", "", json!({"job_id": "c2"})).await;
    assert_eq!(v["status"], "done", "{v}");
    let v = wait_job(&s, "c2", 120).await;
    assert_eq!(
        (v["status"].as_str(), v["error_code"].as_str()),
        (Some("failed"), Some("499")),
        "{v}"
    );
    let why = v["error_info"].as_str().unwrap();
    assert!(
        why.contains("undone:") && why.contains("install:1:1") && why.contains("reserve"),
        "{v}"
    );
    let count = || async {
        let mut n = 0;
        for a in &agents {
            n += a.op(json!({"ver": "0.1", "job_type": "get_node"})).await["nodes"]
                .as_array()
                .unwrap()
                .len();
        }
        n
    };
    assert_eq!(count().await, 6, "the cancelled cluster left nothing");

    // delete_cluster leaves no process, datadir or reserved port.
    let v = emit(&s, "delete_cluster", "", json!({"cluster_id": cluster_id})).await;
    let v = wait_job(&s, v["job_id"].as_str().unwrap(), 120).await;
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(
        v["attachment"]["shard_step"][0]["storage_state"], "done",
        "{v}"
    );
    assert_eq!(count().await, 0);
    for h in hosts {
        let data = d.join(format!("data-{h}"));
        let left: Vec<_> = std::fs::read_dir(&data)
            .map(|r| r.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{data:?}: {left:?}");
    }
    let v = emit(&s, "get_cluster_summary", "", json!({})).await;
    assert_eq!(v["attachment"]["list_cluster"], json!([]), "{v}");
    let v = emit(&s, "delete_machine", "", json!({"hostaddr": hosts[0]})).await;
    assert_eq!(
        wait_job(&s, v["job_id"].as_str().unwrap(), 30).await["status"],
        "done"
    );
    s.stop().await;
}

/// The manager aborted before, during and after every step of a
/// `create_cluster`, then restarted: every job ends done, never stuck,
/// never a duplicate instance, the reserved ports those that run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_cluster_survives_a_crash_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let hosts = ["127.0.0.31", "127.0.0.32"];
    let agents: Vec<Agent> = hosts
        .iter()
        .map(|h| Agent::start(h, free_port(h), d))
        .collect();
    let env = [("CCR_AGENT_TOKEN", TOKEN)];
    let mut s = Service::process_with_env(d, "", &env).await;
    for a in &agents {
        let mut m = machine(a.host, Some(a.port), d);
        m["port_range"] = json!("47200-47300");
        let v = emit(&s, "create_machine", "", m).await;
        assert_eq!(
            wait_job(&s, v["job_id"].as_str().unwrap(), 30).await["status"],
            "done"
        );
    }
    let running = || async {
        let mut n = 0;
        for a in &agents {
            let nodes = a.op(json!({"ver": "0.1", "job_type": "get_node"})).await;
            n += nodes["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["state"] == "running")
                .count();
        }
        n
    };
    let steps = [
        "reserve",
        "install:1:1",
        "install:1:2",
        "replicate:1",
        "register",
    ];
    let mut round = 0;
    for step in steps {
        for when in ["before", "during", "after"] {
            round += 1;
            s.kill();
            let point = format!("{when}:{step}");
            let crash = [
                ("CCR_AGENT_TOKEN", TOKEN),
                ("CCR_SYNCER_CM_FAILPOINT", point.as_str()),
            ];
            s = Service::process_with_env(d, "", &crash).await;
            let id = format!("k{round}");
            let v = emit(&s, "create_cluster", &id, cluster_paras(1, 2)).await;
            assert_eq!(v["status"], "accept", "{point}: {v}");
            if !s.wait_exit(Duration::from_secs(90)).await {
                let v = emit(&s, "get_status", &id, json!({})).await;
                panic!("{point}: the failpoint did not abort the manager: {v}");
            }
            s = Service::process_with_env(d, "", &env).await;
            let v = wait_job(&s, &id, 120).await;
            assert_eq!(v["status"], "done", "{point}: {v}");
            let cluster = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
            let name = v["attachment"]["cluster_name"]
                .as_str()
                .unwrap()
                .to_string();
            let detail = emit(&s, "get_cluster_detail", "", json!({"cluster_name": name})).await;
            let nodes = detail["attachment"]["list_shard"][0]["list_node"]
                .as_array()
                .unwrap()
                .clone();
            assert_eq!(nodes.len(), 2, "{point}: {detail}");
            assert!(
                nodes.iter().all(|n| n["status"] == "online"),
                "{point}: {detail}"
            );
            assert_eq!(running().await, 2, "{point}: one instance per reservation");
            let v = emit(&s, "delete_cluster", "", json!({"cluster_id": cluster})).await;
            let v = wait_job(&s, v["job_id"].as_str().unwrap(), 120).await;
            assert_eq!(v["status"], "done", "{point}: {v}");
            assert_eq!(running().await, 0, "{point}: nothing left");
        }
    }
    s.kill();
}
