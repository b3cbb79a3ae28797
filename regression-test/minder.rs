//! The Galera minder against a real two-node Galera cluster on loopback
//! addresses (127.0.0.41 and .42 as two machines, the arbitrator on .40):
//! the configuration stored in the cluster and shown, the summary of a
//! healthy cluster, a node killed so that the other loses quorum and the
//! arbitrator makes it Primary (it holds half of the last Primary view and
//! the other is known down), bad messages refused, operator commands, and a
//! restarted arbitrator that remembers its decision.
//!
//! The same with two data centres in network namespaces follows; what is
//! still to come is in doc/minder.md.

use crate::harness::galera::{self, Node};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ARBITRATOR_IP: &str = "127.0.0.40";

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ccr-syncer")
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A minder process, killed when dropped.
struct Party(Child);

impl Drop for Party {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], log: &Path) -> Party {
    let file = std::fs::File::create(log).unwrap();
    Party(
        Command::new(binary())
            .arg("minder")
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    )
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .arg("minder")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn site(
    nodes: &[Node],
    arbitrator: &str,
    dbservers: &[String],
    dbclient: &str,
    socket: &Path,
) -> String {
    let mut s = format!(
        "[site]\nprimary_dc = \"dc1\"\nhold_s = 5\nwrite_backend = \"w\"\nread_backend = \"r\"\n\n\
         [[arbitrator]]\nserial = 1\naddress = \"{arbitrator}\"\n\n\
         [[dbclient]]\nserial = 1\naddress = \"{dbclient}\"\nhaproxy_socket = \"{}\"\n",
        socket.display()
    );
    for (i, (n, at)) in nodes.iter().zip(dbservers).enumerate() {
        s.push_str(&format!(
            "\n[[dbserver]]\nserial = {}\nname = \"{}\"\ndc = \"dc{}\"\naddress = \"{at}\"\nmysql = \"{}\"\n",
            i + 1,
            n.name,
            i + 1,
            n.address()
        ));
    }
    s
}

fn summary(arbitrator: &str) -> Option<Value> {
    let (ok, out, _) = run(&["command", "status_summary", "--arbitrator", arbitrator]);
    ok.then(|| serde_json::from_str(&out).unwrap())
}

fn wait_summary(arbitrator: &str, secs: u64, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = Value::Null;
    loop {
        if let Some(s) = summary(arbitrator) {
            if ready(&s) {
                return s;
            }
            last = s;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {secs} s: {last:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// With `MINDER_DOC_OUT=DIR`, the answers doc/minder.md shows are written
/// there as they come.
fn record(name: &str, text: &str) {
    if let Ok(dir) = std::env::var("MINDER_DOC_OUT") {
        std::fs::write(Path::new(&dir).join(name), text).unwrap();
    }
}

/// HAProxy with a write and a read backend over `nodes`, every server in
/// maintenance at first; killed when dropped.
fn haproxy(dir: &Path, socket: &Path, write_port: u16, read_port: u16, nodes: &[Node]) -> Party {
    let servers = |backend: &str| {
        nodes
            .iter()
            .map(|n| format!("    server {} {} disabled\n", n.name, n.address()))
            .collect::<String>()
            + &format!("# {backend}\n")
    };
    let cfg = format!(
        "global\n    stats socket {} level admin\n\ndefaults\n    mode tcp\n    timeout connect 2s\n    \
         timeout client 30s\n    timeout server 30s\n\nfrontend write_in\n    bind {ARBITRATOR_IP}:{write_port}\n    \
         default_backend w\n\nbackend w\n{}\nfrontend read_in\n    bind {ARBITRATOR_IP}:{read_port}\n    \
         default_backend r\n\nbackend r\n    balance roundrobin\n{}",
        socket.display(),
        servers("w"),
        servers("r")
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("haproxy not found: shell/test.sh installs it (apt-get install haproxy)");
    let child = Command::new(haproxy)
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "HAProxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Party(child)
}

/// The node a new connection through `port` reaches.
fn through(port: u16) -> Option<String> {
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            ARBITRATOR_IP,
            "-P",
            &port.to_string(),
            "-uroot",
            "--connect-timeout=2",
            "-N",
            "-e",
        ])
        .arg("SELECT @@wsrep_node_name")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn wait_through(port: u16, node: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Several connections: every one must reach `node`.
        let reached: Vec<Option<String>> = (0..4).map(|_| through(port)).collect();
        if reached.iter().all(|r| r.as_deref() == Some(node)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {reached:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn post(address: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            "POST",
            "--data-binary",
            body,
        ])
        .arg(format!("http://{address}/minder"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn the_arbitrator_promotes_the_half_left_when_the_other_is_down() {
    let mut nodes = galera::cluster(&[("n1", "127.0.0.41"), ("n2", "127.0.0.42")]);
    let dir = tempfile::tempdir().unwrap();
    let arbitrator = format!("{ARBITRATOR_IP}:{}", free_port(ARBITRATOR_IP));
    let dbservers: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}:{}", n.ip, free_port(&n.ip)))
        .collect();
    let dbclient = format!("{ARBITRATOR_IP}:{}", free_port(ARBITRATOR_IP));
    let socket = dir.path().join("haproxy.sock");
    let (write_port, read_port) = (free_port(ARBITRATOR_IP), free_port(ARBITRATOR_IP));
    let config_db = nodes
        .iter()
        .map(|n| format!("mysql://root@{}/minder_site", n.address()))
        .collect::<Vec<_>>()
        .join(",");

    // The configuration: refused with its line when wrong, stored when right.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        site(&nodes, &arbitrator, &dbservers, &dbclient, &socket)
            .replace("primary_dc = \"dc1\"", "primary_dc = \"dc7\""),
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "config",
        "load",
        bad.to_str().unwrap(),
        "--config-db",
        &config_db,
    ]);
    assert!(
        !ok && err.contains("line 2") && err.contains("dc7"),
        "{err}"
    );
    let file = dir.path().join("site.toml");
    let text = site(&nodes, &arbitrator, &dbservers, &dbclient, &socket);
    std::fs::write(&file, &text).unwrap();
    let (ok, out, err) = run(&[
        "config",
        "load",
        file.to_str().unwrap(),
        "--config-db",
        &config_db,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("2 dbservers") && out.contains("1 dbclients"),
        "{out}"
    );
    record("site.toml", &text);
    record("load.txt", &out);
    // Galera replicated it: the second node shows it.
    let second = format!("mysql://root@{}/minder_site", nodes[1].address());
    let (ok, shown, err) = run(&["config", "show", "--config-db", &second]);
    assert!(ok, "{err}");
    assert_eq!(shown, text);

    let state = |name: &str| -> PathBuf { dir.path().join(name) };
    let arb_args = |state_dir: &Path| {
        vec![
            "arbitrator".to_string(),
            "--serial".into(),
            "1".into(),
            "--config-db".into(),
            config_db.clone(),
            "--state-dir".into(),
            state_dir.display().to_string(),
        ]
    };
    let args = arb_args(&state("arbitrator"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut arb = spawn(&args, &dir.path().join("arbitrator.log"));
    let mut servers = Vec::new();
    for (i, _) in nodes.iter().enumerate() {
        let serial = (i + 1).to_string();
        let sd = state(&format!("dbserver{serial}"));
        servers.push(spawn(
            &[
                "dbserver",
                "--serial",
                &serial,
                "--mysql-user",
                "root",
                "--config-db",
                &config_db,
                "--state-dir",
                sd.to_str().unwrap(),
            ],
            &dir.path().join(format!("dbserver{serial}.log")),
        ));
    }

    // HAProxy, every server in maintenance until the dbclient routes.
    let _haproxy = haproxy(dir.path(), &socket, write_port, read_port, &nodes);
    let sd = state("dbclient");
    let _client = spawn(
        &[
            "dbclient",
            "--serial",
            "1",
            "--config-db",
            &config_db,
            "--state-dir",
            sd.to_str().unwrap(),
        ],
        &dir.path().join("dbclient.log"),
    );

    // Healthy: one Primary component of both, the writer in the primary DC.
    let s = wait_summary(&arbitrator, 30, "both nodes Primary and Synced", |s| {
        s["primary"]["members"] == json!(["n1", "n2"])
            && ["n1", "n2"]
                .iter()
                .all(|n| s["nodes"][n]["local_state"] == "Synced")
            && s["writer"] == "n1"
    });
    assert_eq!(s["epoch"], 0, "{s:#}");
    assert_eq!(s["last_primary_view"], json!(["n1", "n2"]));
    record("healthy.json", &format!("{s:#}"));
    // Through HAProxy: writes reach the writer only, reads both nodes.
    wait_through(write_port, "n1", "the write port reaching n1");
    let read_by: std::collections::BTreeSet<String> =
        (0..8).filter_map(|_| through(read_port)).collect();
    assert_eq!(
        read_by.len(),
        2,
        "reads reach every Synced node: {read_by:?}"
    );

    // A CCR job from the cluster, reading n1, following through the minder.
    let mut follower = crate::minder_ccr::Follower::start(&nodes[0], &arbitrator);
    follower.wait_reading(&nodes[0], &nodes[0]);

    // Bad messages: a clear 4xx, nothing changed.
    let (code, body) = post(&arbitrator, "{not json");
    assert_eq!(code, 400, "{body}");
    let (code, body) = post(
        &arbitrator,
        r#"{"sender":"dbserver:9","receiver":"arbitrator:1","verb":"db_status_report","params":{},"msg_id":1}"#,
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("dbserver:9"), "{body}");
    record("refused.txt", &format!("{code} {body}"));
    let (code, body) = post(
        &arbitrator,
        r#"{"sender":"dbserver:1","receiver":"arbitrator:1","verb":"set_primary","params":{},"msg_id":1}"#,
    );
    assert_eq!(code, 403, "{body}");
    let (ok, _, err) = run(&["command", "drain", "n9", "--arbitrator", &arbitrator]);
    assert!(!ok && err.contains("n9"), "{err}");

    // Drain and undrain: the writer hands over, and stays (no failback).
    let (ok, _, err) = run(&["command", "drain", "n1", "--arbitrator", &arbitrator]);
    assert!(ok, "{err}");
    wait_summary(&arbitrator, 10, "n2 the writer once n1 is drained", |s| {
        s["writer"] == "n2" && s["nodes"]["n1"]["drained"] == true
    });
    wait_through(
        write_port,
        "n2",
        "the write port following the writer to n2",
    );
    // The job left the drained n1 for n2, at its GTID: still equal.
    let status = follower.wait_reading(&nodes[1], &nodes[1]);
    record("ccr_status.json", &format!("{status:#}"));
    let (ok, _, err) = run(&["command", "undrain", "n1", "--arbitrator", &arbitrator]);
    assert!(ok, "{err}");
    wait_summary(&arbitrator, 10, "n1 undrained, n2 still the writer", |s| {
        s["writer"] == "n2" && s["nodes"]["n1"]["drained"] == false
    });

    // n2 dies: n1 alone is non-Primary (one of two is no majority). It holds
    // half of the last Primary view and n2 is known down: promoted.
    nodes[1].kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes[0].wsrep("cluster_status") != "Primary" || nodes[0].wsrep("cluster_size") != "1" {
        assert!(
            Instant::now() < deadline,
            "n1 was not made Primary: {:#}",
            summary(&arbitrator).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    nodes[0].sql("CREATE DATABASE IF NOT EXISTS after_split; CREATE TABLE IF NOT EXISTS after_split.t (id INT PRIMARY KEY); INSERT INTO after_split.t VALUES (1)");
    let s = wait_summary(&arbitrator, 20, "the promotion recorded", |s| {
        s["epoch"] == 1 && s["primary"]["members"] == json!(["n1"])
    });
    record("promoted.json", &format!("{s:#}"));
    let decision = &s["decisions"][0];
    assert_eq!(decision["node"], "n1", "{s:#}");
    assert!(
        decision["reason"]
            .as_str()
            .unwrap()
            .contains("members of the last Primary view"),
        "{s:#}"
    );
    assert_eq!(s["nodes"]["n2"]["running"], false, "{s:#}");
    // The job's node died: it moved back to n1 once n1 was Primary.
    follower.wait_reading(&nodes[0], &nodes[0]);
    drop(follower);
    assert_eq!(s["writer"], "n1", "{s:#}");
    wait_through(
        write_port,
        "n1",
        "the write port back on n1 after the promotion",
    );

    // The arbitrator killed and started again: it remembers the decision.
    let _ = arb.0.kill();
    let _ = arb.0.wait();
    arb = spawn(&args, &dir.path().join("arbitrator2.log"));
    let s = wait_summary(&arbitrator, 20, "the restarted arbitrator's summary", |s| {
        s["primary"]["members"] == json!(["n1"])
    });
    assert_eq!(s["epoch"], 1, "{s:#}");
    assert_eq!(s["decisions"][0]["node"], "n1");
    // Its metrics.
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://{arbitrator}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(metrics.contains("minder_epoch 1"), "{metrics}");
    assert!(
        metrics.contains("minder_node_primary{node=\"n1\"} 1"),
        "{metrics}"
    );
    drop(arb);
    drop(servers);
}

/// A minder process in network namespace `ns` (a data centre).
fn spawn_in(ns: &str, args: &[&str], log: &Path) -> Party {
    let file = std::fs::File::create(log).unwrap();
    Party(
        Command::new("ip")
            .args(["netns", "exec", ns, binary(), "minder"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap(),
    )
}

/// Two data centres of two nodes in network namespaces, the arbitrator at
/// the third site: a cut between the data centres under a write load makes
/// the primary DC's half Primary and never the other (sampled several times
/// a second), nothing acknowledged is lost once healed, and all four are
/// equal; then a cut of the arbitrator from one DC alone decides nothing.
#[test]
fn a_cut_between_the_data_centres_promotes_the_primary_dc_only() {
    use crate::harness::galera::Sites;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let sites = Sites::new(2);
    let (dc1, dc2) = (&sites.dcs[0], &sites.dcs[1]);
    let nodes = galera::cluster_in(&[
        ("n1", &dc1.nodes[0], Some(&dc1.netns)),
        ("n2", &dc1.nodes[1], Some(&dc1.netns)),
        ("n3", &dc2.nodes[0], Some(&dc2.netns)),
        ("n4", &dc2.nodes[1], Some(&dc2.netns)),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let arbitrator = format!("{}:4600", sites.third);
    let dbservers: Vec<String> = nodes.iter().map(|n| format!("{}:4601", n.ip)).collect();
    let mut text = format!(
        "[site]\nprimary_dc = \"dc1\"\nhold_s = 10\nwrite_backend = \"w\"\nread_backend = \"r\"\n\n\
         [[arbitrator]]\nserial = 1\naddress = \"{arbitrator}\"\n"
    );
    for (i, (n, at)) in nodes.iter().zip(&dbservers).enumerate() {
        text.push_str(&format!(
            "\n[[dbserver]]\nserial = {}\nname = \"{}\"\ndc = \"dc{}\"\naddress = \"{at}\"\nmysql = \"{}\"\n",
            i + 1,
            n.name,
            i / 2 + 1,
            n.address()
        ));
    }
    let file = dir.path().join("site.toml");
    std::fs::write(&file, &text).unwrap();
    let config_db = format!(
        "mysql://root@{}/minder_site,mysql://root@{}/minder_site",
        nodes[0].address(),
        nodes[2].address()
    );
    let (ok, _, err) = run(&[
        "config",
        "load",
        file.to_str().unwrap(),
        "--config-db",
        &config_db,
    ]);
    assert!(ok, "{err}");
    let sd = dir.path().join("arbitrator");
    let _arb = spawn(
        &[
            "arbitrator",
            "--serial",
            "1",
            "--config-db",
            &config_db,
            "--state-dir",
            sd.to_str().unwrap(),
        ],
        &dir.path().join("arbitrator.log"),
    );
    let mut servers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let serial = (i + 1).to_string();
        let sd = dir.path().join(format!("dbserver{serial}"));
        servers.push(spawn_in(
            n.netns.as_deref().unwrap(),
            &[
                "dbserver",
                "--serial",
                &serial,
                "--mysql-user",
                "root",
                "--config-db",
                &config_db,
                "--state-dir",
                sd.to_str().unwrap(),
            ],
            &dir.path().join(format!("dbserver{serial}.log")),
        ));
    }
    wait_summary(&arbitrator, 40, "four nodes Primary and Synced", |s| {
        s["primary"]["members"] == json!(["n1", "n2", "n3", "n4"])
            && ["n1", "n2", "n3", "n4"]
                .iter()
                .all(|n| s["nodes"][n]["local_state"] == "Synced")
    });
    nodes[0].sql("CREATE DATABASE load_db; CREATE TABLE load_db.t (id INT PRIMARY KEY)");

    // A write load on n1 (the primary DC), acknowledged ids kept; dc2's
    // nodes sampled five times a second.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<u32>::new()));
    let n1_socket = nodes[0].sql("SELECT @@socket");
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut id = 0u32;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let out = Command::new("mariadb")
                    .args(["--no-defaults", "-uroot", "--connect-timeout=1"])
                    .arg(format!("--socket={n1_socket}"))
                    .args(["-e", &format!("INSERT INTO load_db.t VALUES ({id})")])
                    .output()
                    .unwrap();
                if out.status.success() {
                    acked.lock().unwrap().push(id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let sampled_primary = Arc::new(AtomicBool::new(false));
    let sampling = Arc::new(AtomicBool::new(false));
    let sockets: Vec<String> = nodes[2..]
        .iter()
        .map(|n| n.sql("SELECT @@socket"))
        .collect();
    let sampler = {
        let (stop, seen, on) = (stop.clone(), sampled_primary.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut samples = 0u32;
            // A node still Primary in the first seconds of the cut (Galera
            // has not noticed yet) is the old Primary; once it has gone
            // non-Primary it must never be Primary again during the cut.
            let mut left = vec![false; sockets.len()];
            while !stop.load(Ordering::Relaxed) {
                if on.load(Ordering::Relaxed) {
                    for (i, s) in sockets.iter().enumerate() {
                        let out = Command::new("mariadb")
                            .args(["--no-defaults", "-uroot", "-N", "--connect-timeout=1"])
                            .arg(format!("--socket={s}"))
                            .args(["-e", "SHOW STATUS LIKE 'wsrep_cluster_status'"])
                            .output()
                            .unwrap();
                        let primary = String::from_utf8_lossy(&out.stdout).contains("\tPrimary");
                        if !primary {
                            left[i] = true;
                        } else if left[i] {
                            seen.store(true, Ordering::Relaxed);
                        }
                    }
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            samples
        })
    };
    std::thread::sleep(Duration::from_secs(2));

    // The cut: neither half has quorum; the primary DC's half is promoted.
    sampling.store(true, Ordering::Relaxed);
    let cut_at = Instant::now();
    sites.cut_between(true);
    let s = wait_summary(&arbitrator, 60, "dc1 promoted", |s| {
        s["epoch"] == 1 && s["primary"]["members"] == json!(["n1", "n2"])
    });
    assert_eq!(s["decisions"][0]["component"], json!(["n1", "n2"]), "{s:#}");
    let promoted_after = cut_at.elapsed();
    // Writes resume on n1.
    let before = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < before + 20 {
        assert!(Instant::now() < deadline, "writes did not resume on n1");
        std::thread::sleep(Duration::from_millis(100));
    }
    // dc2 stays non-Primary while cut: the arbitrator says why.
    std::thread::sleep(Duration::from_secs(3));
    let s = summary(&arbitrator).unwrap();
    assert_eq!(s["epoch"], 1, "{s:#}");
    assert_eq!(s["nodes"]["n3"]["cluster_status"], "non-Primary", "{s:#}");

    // Healed: dc2 rejoins the Primary component; the writer stayed.
    // (Sampling stops first: dc2 is rightly Primary again once it rejoins.)
    sampling.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    sites.cut_between(false);
    let deadline = Instant::now() + Duration::from_secs(90);
    while nodes
        .iter()
        .any(|n| n.wsrep("cluster_size") != "4" || n.wsrep("local_state_comment") != "Synced")
    {
        assert!(
            Instant::now() < deadline,
            "the four did not come together again"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let samples = sampler.join().unwrap();
    assert!(samples >= 10, "sampled dc2 {samples} times");
    assert!(
        !sampled_primary.load(Ordering::Relaxed),
        "a dc2 node became Primary during the cut"
    );
    // Nothing acknowledged is lost, and all four are equal.
    let acked = acked.lock().unwrap().clone();
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Every acknowledged id is there (an unacknowledged one may
            // have committed too).
            let missing = n.sql(&format!(
                "SELECT {} - COUNT(*) FROM load_db.t WHERE id IN ({})",
                acked.len(),
                acked
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
            if missing.trim() == "0" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {missing} acknowledged rows missing",
                n.name
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let counts: Vec<String> = nodes
        .iter()
        .map(|n| n.sql("SELECT COUNT(*), SUM(id) FROM load_db.t"))
        .collect();
    assert!(counts.windows(2).all(|w| w[0] == w[1]), "{counts:?}");
    record(
        "partition.txt",
        &format!(
            "promoted {promoted_after:?} after the cut; {} writes acknowledged",
            acked.len()
        ),
    );
    let s = wait_summary(
        &arbitrator,
        20,
        "all four Primary, the writer unmoved",
        |s| s["primary"]["members"] == json!(["n1", "n2", "n3", "n4"]),
    );
    assert_eq!(s["writer"], "n1", "{s:#}");

    // The arbitrator cut from dc1 only: the cluster is whole, dc2 reports
    // Primary: no decision.
    sites.cut_third(0, true);
    std::thread::sleep(Duration::from_secs(6));
    let s = summary(&arbitrator).unwrap();
    assert_eq!(s["epoch"], 1, "{s:#}");
    assert_eq!(s["nodes"]["n1"]["reachable"], false, "{s:#}");
    sites.cut_third(0, false);
    drop(servers);
}
