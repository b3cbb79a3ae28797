//! A shard's primary fails over, with real agents, real `mariadbd`s (a
//! shard of three nodes, `fullsync_level` 1) and the manager as a real
//! process, under a steady write load that records every acknowledged
//! write while every node's `read_only` is sampled five times a second:
//! the primary's machine killed (agent and `mariadbd`), then coming back
//! as a replica; the next primary hung (SIGSTOP) inside the block period
//! (blocked until `ack_failover`); `manual_switch` (and a stale one
//! refused); the manager alone cut from a healthy primary (no failover); a
//! replica with errant transactions passed over for a lagging one that
//! applies its relay log first; `control_instance stop` of the primary
//! with the manager killed in the middle of the failover. At the end no
//! acknowledged write is missing and no sample saw two writable nodes.

use crate::cluster::{emit, free_port, machine, wait_job, Agent, Reaper, TOKEN};
use crate::harness::service::Service;
use mysql_async::prelude::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const PW: &str = "failover-admin-pw";
/// The manager runs under this group: a firewall rule cuts it alone.
const GID: u32 = 4242;
pub(crate) const HOSTS: [&str; 3] = ["127.0.0.71", "127.0.0.72", "127.0.0.73"];

pub(crate) type Node = (String, i64);

pub(crate) fn name(n: &Node) -> String {
    format!("{}:{}", n.0, n.1)
}

fn opts(n: &Node) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(n.0.clone())
        .tcp_port(n.1 as u16)
        .user(Some("clustmgr"))
        .pass(Some(PW))
        .into()
}

pub(crate) async fn conn(n: &Node) -> Result<mysql_async::Conn, String> {
    match tokio::time::timeout(Duration::from_millis(800), mysql_async::Conn::new(opts(n))).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".into()),
    }
}

pub(crate) async fn sql(n: &Node, q: &str) -> String {
    let mut c = conn(n).await.unwrap_or_else(|e| panic!("{n:?}: {e}"));
    let v: Option<String> = c
        .query_first(q)
        .await
        .unwrap_or_else(|e| panic!("{n:?} {q}: {e}"));
    let _ = c.disconnect().await;
    v.unwrap_or_default()
}

/// A statement as root on the node's socket (root bypasses read_only:
/// a node diverged by hand).
pub(crate) fn root_sql(dir: &Path, n: &Node, q: &str) {
    let out = std::process::Command::new("mariadb")
        .arg("-S")
        .arg(node_dir(dir, n).join("mysqld.sock"))
        .args(["-u", "root", "-e", q])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{q}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn node_dir(dir: &Path, n: &Node) -> PathBuf {
    dir.join(format!("data-{}", n.0)).join(n.1.to_string())
}

pub(crate) fn mariadbd_pid(dir: &Path, n: &Node) -> Option<i32> {
    std::fs::read_to_string(node_dir(dir, n).join("mysqld.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The write load and the read-only sampler.
pub(crate) struct Load {
    /// `(id, when acknowledged, by which node)`.
    pub(crate) acked: Arc<Mutex<Vec<(i64, Instant, String)>>>,
    two_writable: Arc<Mutex<Vec<String>>>,
    samples: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(nodes: Vec<Node>) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let two_writable = Arc::new(Mutex::new(Vec::new()));
        let samples = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (acked, stop, nodes) = (acked.clone(), stop.clone(), nodes.clone());
            tokio::spawn(async move {
                let mut id = 0i64;
                let mut current: Option<(mysql_async::Conn, String)> = None;
                while !stop.load(Ordering::SeqCst) {
                    if current.is_none() {
                        for n in &nodes {
                            if let Ok(mut c) = conn(n).await {
                                let ro: Option<i64> =
                                    c.query_first("SELECT @@read_only").await.ok().flatten();
                                if ro == Some(0) {
                                    current = Some((c, name(n)));
                                    break;
                                }
                            }
                        }
                    }
                    let Some((c, at)) = current.as_mut() else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    id += 1;
                    let w = c.exec_drop("INSERT INTO app.t (id, at) VALUES (?, NOW(6))", (id,));
                    match tokio::time::timeout(Duration::from_secs(3), w).await {
                        Ok(Ok(())) => acked.lock().push((id, Instant::now(), at.clone())),
                        _ => current = None,
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let sampler = {
            let (two, stop, samples) = (two_writable.clone(), stop.clone(), samples.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let reads = nodes.iter().map(|n| async move {
                        let mut c = conn(n).await.ok()?;
                        let ro: Option<i64> = tokio::time::timeout(
                            Duration::from_millis(500),
                            c.query_first("SELECT @@read_only"),
                        )
                        .await
                        .ok()?
                        .ok()?;
                        let _ = c.disconnect().await;
                        (ro == Some(0)).then(|| name(n))
                    });
                    let writable: Vec<String> = futures_util::future::join_all(reads)
                        .await
                        .into_iter()
                        .flatten()
                        .collect();
                    samples.fetch_add(1, Ordering::SeqCst);
                    if writable.len() > 1 {
                        two.lock().push(writable.join(" and "));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Load {
            acked,
            two_writable,
            samples,
            stop,
            tasks: vec![writer, sampler],
        }
    }

    /// Waits for the first write acknowledged after `t` by a node other
    /// than `not_by`; how long after `t`.
    pub(crate) async fn first_write_after(&self, t: Instant, not_by: &str, secs: u64) -> Duration {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some((_, at, _)) = self
                .acked
                .lock()
                .iter()
                .find(|(_, at, by)| *at > t && by != not_by)
            {
                return *at - t;
            }
            assert!(
                Instant::now() < deadline,
                "no write taken by another node within {secs} s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn stop(self) -> (Vec<i64>, Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.lock().iter().map(|(id, _, _)| *id).collect();
        let two = self.two_writable.lock().clone();
        (acked, two, self.samples.load(Ordering::SeqCst))
    }
}

pub(crate) async fn done(s: &Service, job_type: &str, p: Value, secs: u64) -> Value {
    let v = emit(s, job_type, "", p).await;
    assert_eq!(v["status"], "accept", "{job_type}: {v}");
    let v = wait_job(s, v["job_id"].as_str().unwrap(), secs).await;
    assert_eq!(v["status"], "done", "{job_type}: {v}");
    v
}

/// The shard as get_cluster_detail says: its state and nodes.
pub(crate) async fn shard(s: &Service, cluster: &str) -> Value {
    let v = emit(
        s,
        "get_cluster_detail",
        "",
        json!({"cluster_name": cluster}),
    )
    .await;
    v["attachment"]["list_shard"][0].clone()
}

pub(crate) async fn primary(s: &Service, cluster: &str) -> Node {
    let sh = shard(s, cluster).await;
    let p = sh["list_node"]
        .as_array()
        .unwrap_or_else(|| panic!("{sh}"))
        .iter()
        .find(|n| n["master"] == "true")
        .unwrap_or_else(|| panic!("no primary: {sh}"))
        .clone();
    (
        p["hostaddr"].as_str().unwrap().to_string(),
        p["port"].as_str().unwrap().parse().unwrap(),
    )
}

/// Waits until `cond` holds of the shard's detail.
pub(crate) async fn until(
    s: &Service,
    cluster: &str,
    what: &str,
    secs: u64,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let sh = shard(s, cluster).await;
        if cond(&sh) {
            return sh;
        }
        assert!(Instant::now() < deadline, "{what}: {sh:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn node_json<'a>(sh: &'a Value, n: &Node) -> &'a Value {
    sh["list_node"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| {
            x["hostaddr"] == n.0.as_str() && x["port"].as_str() == Some(n.1.to_string().as_str())
        })
        .unwrap()
}

/// A replica again: running, read-only, replicating from the primary.
pub(crate) fn rejoined(sh: &Value, n: &Node) -> bool {
    let x = node_json(sh, n);
    x["state"] == "running"
        && x["master"] == "false"
        && x["read_only"] == true
        && x["replication"]["io"] == "Yes"
        && x["replication"]["sql"] == true
}

/// `ack_failover` of the shard: its block period released.
pub(crate) async fn ack(s: &Service, cluster: &str) -> Value {
    emit(
        s,
        "ack_failover",
        "",
        json!({"cluster_id": cluster, "shard_id": "1"}),
    )
    .await
}

pub(crate) async fn journal(s: &Service, cluster: &str) -> Vec<Value> {
    let v = emit(
        s,
        "get_failover_journal",
        "",
        json!({"cluster_id": cluster, "shard_id": "1"}),
    )
    .await;
    v["attachment"]["list_failover"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone()
}

fn agent_of(n: &Node) -> usize {
    HOSTS.iter().position(|h| *h == n.0).unwrap()
}

/// The node's machine dies: its agent, then its `mariadbd` (SIGKILL).
/// Which agent, and when the node died.
/// Three agents on `HOSTS`, the manager as a process (under `gid`), their
/// machines and a cluster of one shard of three nodes, `fullsync_level` 1.
pub(crate) struct Shard {
    pub(crate) agents: Vec<Agent>,
    pub(crate) s: Service,
    pub(crate) cluster: String,
    pub(crate) cname: String,
    pub(crate) all: Vec<Node>,
}

impl Shard {
    pub(crate) async fn make(d: &Path, config: &str, gid: Option<u32>, innodb_mb: &str) -> Shard {
        let agents: Vec<Agent> = HOSTS
            .iter()
            .map(|h| Agent::start(h, free_port(h), d))
            .collect();
        let s = Service::process_as(d, config, &[("CCR_AGENT_TOKEN", TOKEN)], gid).await;
        for a in &agents {
            let mut m = machine(a.host, Some(a.port), d);
            m["port_range"] = json!("48000-48100");
            done(&s, "create_machine", m, 30).await;
        }
        let v = done(
            &s,
            "create_cluster",
            json!({"nick_name": "fo", "ha_mode": "rbr", "shards": "1", "nodes": "3", "comps": "0",
                   "innodb_size": innodb_mb, "max_connections": "100", "fullsync_level": "1",
                   "admin_user": "clustmgr", "admin_password": PW}),
            300,
        )
        .await;
        let cluster = v["attachment"]["cluster_id"].as_str().unwrap().to_string();
        let cname = v["attachment"]["cluster_name"]
            .as_str()
            .unwrap()
            .to_string();
        let all: Vec<Node> = shard(&s, &cname).await["list_node"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["hostaddr"].as_str().unwrap().to_string(),
                    n["port"].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect();
        Shard {
            agents,
            s,
            cluster,
            cname,
            all,
        }
    }
}

pub(crate) fn kill_machine(agents: &mut [Agent], dir: &Path, n: &Node) -> (usize, Instant) {
    let a = agent_of(n);
    agents[a].kill();
    let pid = mariadbd_pid(dir, n).unwrap();
    let at = Instant::now();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    (a, at)
}

fn iptables(action: &str, host: &str, port: u16) {
    let out = std::process::Command::new("iptables")
        .args([
            action,
            "OUTPUT",
            "-d",
            host,
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
        ])
        .args([
            "-m",
            "owner",
            "--gid-owner",
            &GID.to_string(),
            "-j",
            "REJECT",
        ])
        .output()
        .expect("iptables (shell/test.sh installs it)");
    assert!(
        out.status.success(),
        "iptables: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the test's firewall rules however the test ends.
struct Unblock(Vec<(String, u16)>);

impl Drop for Unblock {
    fn drop(&mut self) {
        for (h, p) in &self.0 {
            let _ = std::process::Command::new("iptables")
                .args([
                    "-D",
                    "OUTPUT",
                    "-d",
                    h,
                    "-p",
                    "tcp",
                    "--dport",
                    &p.to_string(),
                ])
                .args([
                    "-m",
                    "owner",
                    "--gid-owner",
                    &GID.to_string(),
                    "-j",
                    "REJECT",
                ])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_fails_over_without_losing_an_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let env = [("CCR_AGENT_TOKEN", TOKEN)];
    let config = "[cluster]\nstep_retry_s = 60\n";
    let Shard {
        mut agents,
        s,
        cluster,
        cname,
        all,
    } = Shard::make(d, config, Some(GID), "16").await;
    let p1 = primary(&s, &cname).await;
    // Every node started read-only; the primary was turned writable, and
    // the clients' account obeys read_only on the others.
    for n in &all {
        assert_eq!(
            sql(n, "SELECT @@read_only").await,
            if *n == p1 { "0" } else { "1" },
            "{n:?}"
        );
    }
    let replica = all.iter().find(|n| **n != p1).unwrap();
    let mut c = conn(replica).await.unwrap();
    let refused = c
        .query_drop("CREATE DATABASE nope")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("read-only"), "{refused}");
    drop(c);
    let mut c = conn(&p1).await.unwrap();
    c.query_drop("CREATE DATABASE app; CREATE TABLE app.t (id BIGINT PRIMARY KEY, at DATETIME(6))")
        .await
        .unwrap();
    drop(c);
    // CCR jobs into the shard and out of it: they follow its primary
    // through every switch below, and end with nothing lost or doubled.
    // The source is the test's own: its steady writes would move the
    // shared source's head under other tests' feet.
    let h_src = crate::harness::mariadb::with_users(crate::harness::MariaDb::start(
        crate::harness::ServerOptions::source(),
    ));
    let h_dest = crate::harness::dest();
    let in_db = "fo_in";
    h_src.admin(&format!(
        "CREATE DATABASE {in_db}; CREATE TABLE {in_db}.t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO {in_db}.t VALUES (1, 'a'), (2, 'b')"
    ));
    let out_db = crate::harness::unique("fo_out");
    let on_shard = |db: &str| json!({"host": p1.0, "port": p1.1, "user": "clustmgr", "password": PW, "database": db});
    s.post(
        "create_ccr",
        json!({"name": "into_shard", "dest": on_shard("ccr_in"),
        "src": crate::harness::src_endpoint(&h_src, in_db, None)}),
    )
    .await
    .ok();
    s.post(
        "create_ccr",
        json!({"name": "from_shard", "src": on_shard("app"),
        "dest": crate::harness::dest_endpoint(h_dest, &out_db, None)}),
    )
    .await
    .ok();
    let writer = crate::harness::Writer::start_on(h_src.socket(), in_db, 5, |i| {
        format!("INSERT INTO t VALUES ({}, 'w');", i + 1000)
    });
    let load = Load::start(all.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. The primary's machine dies: its agent and its mariadbd.
    let (a, t0) = kill_machine(&mut agents, d, &p1);
    let took = load.first_write_after(t0, &name(&p1), 60).await;
    eprintln!("machine death: writes again after {took:?}");
    let p2 = primary(&s, &cname).await;
    assert_ne!(p2, p1);
    let j = journal(&s, &cluster).await;
    assert_eq!(j.len(), 1, "{j:?}");
    assert_eq!(j[0]["kind"], "auto");
    assert_eq!(j[0]["old_primary"], name(&p1));
    assert_eq!(j[0]["new_primary"], name(&p2));
    assert!(
        j[0]["reason"].as_str().unwrap().starts_with("unreachable"),
        "{j:?}"
    );
    let sh = shard(&s, &cname).await;
    assert_eq!(node_json(&sh, &p1)["state"], "fenced", "{sh:#}");
    // The machine comes back: its old primary starts read-only and rejoins.
    agents[a].respawn();
    let sh = until(&s, &cname, "the old primary rejoins", 90, |sh| {
        rejoined(sh, &p1)
    })
    .await;
    assert_eq!(node_json(&sh, &p1)["note"], "", "{sh:#}");

    // 2. The new primary hangs (SIGSTOP) within failover_block_s: blocked,
    // the shard's state says so; ack_failover lets it fail over.
    let pid = mariadbd_pid(d, &p2).unwrap();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped_at = Instant::now();
    until(&s, &cname, "blocked", 60, |sh| {
        sh["state"]
            .as_str()
            .unwrap_or_default()
            .contains("ack_failover")
    })
    .await;
    assert_eq!(
        primary(&s, &cname).await,
        p2,
        "failed over within the block period"
    );
    let v = ack(&s, &cluster).await;
    assert_eq!(v["attachment"]["acknowledged"], 1, "{v}");
    let took = load.first_write_after(stopped_at, &name(&p2), 60).await;
    eprintln!("hung primary: writes again {took:?} after SIGSTOP (blocked until acked)");
    let p3 = primary(&s, &cname).await;
    assert_ne!(p3, p2);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // Woken (or killed by its agent's fence and started again): read-only,
    // and a replica again.
    until(&s, &cname, "the hung primary rejoins", 90, |sh| {
        rejoined(sh, &p2)
    })
    .await;
    assert_eq!(journal(&s, &cluster).await.len(), 2);

    // A client cannot start a failover, whatever it calls itself.
    let spoofed = s
        .post(
            "HttpService/Emit",
            json!({"version": "1.0", "job_id": "", "job_type": "failover",
                   "user_name": "ccr-syncer-watcher",
                   "paras": {"cluster_id": cluster, "shard_id": "1", "hostaddr": p3.0,
                             "port": p3.1.to_string(), "reason": "unreachable"}}),
        )
        .await;
    assert_eq!(spoofed.status, 400, "{}", spoofed.text);
    assert!(spoofed.text.contains("manual_switch"), "{}", spoofed.text);

    // 3. manual_switch under load; a stale master_hostaddr is refused.
    let stale = emit(
        &s,
        "manual_switch",
        "",
        json!({"cluster_id": cluster, "shard_id": "1", "master_hostaddr": name(&p2)}),
    )
    .await;
    assert_eq!(stale["status"], "failed", "{stale}");
    assert!(
        stale["error_info"]
            .as_str()
            .unwrap()
            .contains("is not shard 1's primary"),
        "{stale}"
    );
    let target = all.iter().find(|n| **n != p3).unwrap().clone();
    let v = done(
        &s,
        "manual_switch",
        json!({"cluster_id": cluster, "shard_id": "1",
               "master_hostaddr": format!("{}_{}", p3.0, p3.1), "assign_hostaddr": name(&target)}),
        120,
    )
    .await;
    let gap = v["attachment"]["write_unavailable_ms"]
        .as_i64()
        .unwrap_or_else(|| panic!("{v}"));
    eprintln!("manual_switch: write-unavailable {gap} ms");
    assert!(gap < 5000, "{v}");
    assert_eq!(primary(&s, &cname).await, target);
    until(
        &s,
        &cname,
        "the switched-out primary replicates",
        60,
        |sh| rejoined(sh, &p3),
    )
    .await;
    let p4 = target;

    // 4. The manager alone cut from a healthy primary (its agent and the
    // replicas still see it): no failover.
    let agent_port = agents[agent_of(&p4)].port;
    let _unblock = Unblock(vec![
        (p4.0.clone(), p4.1 as u16),
        (p4.0.clone(), agent_port),
    ]);
    iptables("-A", &p4.0, p4.1 as u16);
    iptables("-A", &p4.0, agent_port);
    until(&s, &cname, "the manager sees the cut", 30, |sh| {
        sh["state"]
            .as_str()
            .unwrap_or_default()
            .contains("still receive from it")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let sh = shard(&s, &cname).await;
    assert!(
        sh["state"].as_str().unwrap().contains("no failover"),
        "{sh:#}"
    );
    drop(_unblock);
    assert_eq!(primary(&s, &cname).await, p4);
    assert_eq!(
        journal(&s, &cluster).await.len(),
        3,
        "the cut made a failover"
    );
    until(&s, &cname, "ok again", 30, |sh| {
        sh["state"].as_str().unwrap_or_default().starts_with("ok")
    })
    .await;

    // 5. A replica with errant transactions is passed over; a lagging one
    // applies its relay log, then takes from the errant one what only that
    // one received (the last acknowledged commits), before it is promoted.
    ack(&s, &cluster).await;
    let others: Vec<Node> = all.iter().filter(|n| **n != p4).cloned().collect();
    let (errant, lagging) = (others[0].clone(), others[1].clone());
    root_sql(d, &errant, "CREATE DATABASE errant_db; CREATE TABLE errant_db.x (i INT); INSERT INTO errant_db.x VALUES (1)");
    root_sql(d, &lagging, "STOP SLAVE SQL_THREAD");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The last second's commits reach (and are acknowledged by) the errant
    // replica alone.
    root_sql(d, &lagging, "STOP SLAVE IO_THREAD");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (a, t5) = kill_machine(&mut agents, d, &p4);
    load.first_write_after(t5, &name(&p4), 60).await;
    assert_eq!(
        primary(&s, &cname).await,
        lagging,
        "the errant replica was chosen"
    );
    let list = emit(
        &s,
        "list_jobs",
        "",
        json!({"job_type": "failover", "status": "done"}),
    )
    .await;
    let newest = list["attachment"]["list_jobs"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = emit(&s, "get_status", &newest, json!({})).await;
    let skipped = v["attachment"]["skipped"].to_string();
    assert!(
        skipped.contains(&name(&errant)) && skipped.contains("errant"),
        "{v}"
    );
    let caught_up = v["attachment"]["caught_up_from"].to_string();
    assert!(
        caught_up.contains(&name(&errant)) && caught_up.contains("left out"),
        "{v}"
    );
    eprintln!("the failover past an errant replica: {v}");
    agents[a].respawn();
    until(&s, &cname, "the dead primary rejoins", 90, |sh| {
        rejoined(sh, &p4)
    })
    .await;
    let p5 = lagging;

    // 6. control_instance stops the primary while the manager is set to
    // die in the middle of the failover; the restarted manager finishes it.
    ack(&s, &cluster).await;
    s.kill();
    let fp = [
        ("CCR_AGENT_TOKEN", TOKEN),
        ("CCR_SYNCER_CM_FAILPOINT", "during:promote"),
    ];
    let mut s = Service::process_as(d, config, &fp, Some(GID)).await;
    let v = emit(
        &s,
        "control_instance",
        "",
        json!({"hostaddr": p5.0, "port": p5.1.to_string(), "machine_type": "storage", "control": "stop"}),
    )
    .await;
    assert_eq!(v["status"], "accept", "{v}");
    let t6 = Instant::now();
    assert!(
        s.wait_exit(Duration::from_secs(60)).await,
        "the failpoint never fired"
    );
    let s = Service::process_as(d, config, &env, Some(GID)).await;
    load.first_write_after(t6, &name(&p5), 60).await;
    let j = journal(&s, &cluster).await;
    assert_eq!(j.len(), 5, "{j:#?}");
    assert!(
        j[0]["reason"].as_str().unwrap().starts_with("stopped"),
        "{j:#?}"
    );
    // A deliberate stop is kept: the old primary stays down until started.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(mariadbd_pid(d, &p5).is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists()));
    done(
        &s,
        "control_instance",
        json!({"hostaddr": p5.0, "port": p5.1.to_string(), "control": "start"}),
        60,
    )
    .await;
    until(&s, &cname, "the stopped primary rejoins", 90, |sh| {
        rejoined(sh, &p5)
    })
    .await;

    // The status page shows the shard's nodes and their lag charts, in a
    // real browser.
    let profile = tempfile::tempdir().unwrap();
    let out = crate::view::browser(
        profile.path(),
        &["--dump-dom", &format!("http://{}/view", s.addr)],
    );
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let now_primary = primary(&s, &cname).await;
    for n in &all {
        let row = dom
            .find(&format!("data-node=\"{}\"", name(n)))
            .map(|i| &dom[i..i + dom[i..].find("</tr>").unwrap_or(0)])
            .unwrap_or_else(|| panic!("no row for {n:?} in:\n{dom}"));
        let role = if *n == now_primary {
            ">primary<"
        } else {
            ">replica<"
        };
        assert!(row.contains(role), "{n:?}: {row}");
    }
    // A replica's lag and a CCR job's lag, each charted.
    let replica = all
        .iter()
        .find(|n| **n != now_primary && **n != p5)
        .unwrap();
    for want in [name(replica), "into_shard".to_string()] {
        assert!(
            dom.contains(&format!("data-chart=\"{want}\"")),
            "no lag chart for {want}:\n{dom}"
        );
    }

    // Nothing acknowledged is missing; never two writable nodes; the nodes
    // end equal.
    let (acked, two, samples) = load.stop().await;
    assert!(two.is_empty(), "two writable nodes sampled: {two:?}");
    assert!(samples > 100, "{samples} samples");
    let last = primary(&s, &cname).await;
    let mut c = conn(&last).await.unwrap();
    let have: Vec<i64> = c.query("SELECT id FROM app.t").await.unwrap();
    let have: std::collections::HashSet<i64> = have.into_iter().collect();
    let missing: Vec<&i64> = acked.iter().filter(|id| !have.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    eprintln!(
        "{} writes acknowledged, {samples} read-only samples",
        acked.len()
    );
    let sum = "SELECT CONCAT(COUNT(*), ':', COALESCE(SUM(id), 0), ':', \
               COALESCE(SUM(UNIX_TIMESTAMP(at)), 0)) FROM app.t";
    let want = sql(&last, sum).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in &all {
        loop {
            let got = sql(n, sum).await;
            if got == want {
                break;
            }
            assert!(Instant::now() < deadline, "{n:?}: {got} vs {want}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // The CCR jobs caught up across the switches: into the shard's current
    // primary, and out of it; every row once.
    writer.stop();
    let count =
        |db: &str| format!("SELECT CONCAT(COUNT(*), ':', COALESCE(SUM(id), 0)) FROM {db}.t");
    let want_in = h_src.admin(&count(in_db));
    let want_out = sql(&last, &count("app")).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got_in = sql(&last, &count("ccr_in")).await;
        let got_out = h_dest.admin(&count(&out_db));
        if got_in == want_in && got_out == want_out {
            break;
        }
        let status = |n: &str| {
            let s = &s;
            let n = n.to_string();
            async move { s.post("job_status", json!({"name": n})).await.body }
        };
        assert!(
            Instant::now() < deadline,
            "into the shard {got_in} vs {want_in}: {:#}\nout of it {got_out} vs {want_out}: {:#}",
            status("into_shard").await,
            status("from_shard").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let st = s
        .post("job_status", json!({"name": "into_shard"}))
        .await
        .ok();
    assert_eq!(st["status"]["dest_node"]["address"], name(&last), "{st:#}");
    s.kill();
}
