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

pub(crate) const ARBITRATOR_IP: &str = "127.0.0.40";

pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ccr-syncer")
}

pub(crate) fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A minder process, killed when dropped.
pub(crate) struct Party(pub Child);

impl Drop for Party {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn spawn(args: &[&str], log: &Path) -> Party {
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

pub(crate) fn run(args: &[&str]) -> (bool, String, String) {
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

/// A dbserver beside each node (serials 1, 2 … in order; in the node's
/// namespace where it has one), state and log in `dir`.
pub(crate) fn dbservers(nodes: &[Node], config_db: &str, dir: &Path) -> Vec<Party> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let serial = (i + 1).to_string();
            let sd = dir.join(format!("dbserver{serial}"));
            let args = [
                "dbserver",
                "--serial",
                &serial,
                "--mysql-user",
                "root",
                "--config-db",
                config_db,
                "--state-dir",
                sd.to_str().unwrap(),
            ];
            let log = dir.join(format!("dbserver{serial}.log"));
            match n.netns.as_deref() {
                Some(ns) => crate::minder_dcs::spawn_in(ns, &args, &log),
                None => spawn(&args, &log),
            }
        })
        .collect()
}

pub(crate) fn summary(arbitrator: &str) -> Option<Value> {
    let (ok, out, _) = run(&["command", "status_summary", "--arbitrator", arbitrator]);
    ok.then(|| serde_json::from_str(&out).unwrap())
}

pub(crate) fn wait_summary(
    arbitrator: &str,
    secs: u64,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
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
pub(crate) fn record(name: &str, text: &str) {
    if let Ok(dir) = std::env::var("MINDER_DOC_OUT") {
        std::fs::write(Path::new(&dir).join(name), text).unwrap();
    }
}

/// HAProxy with a write and a read backend over `nodes`, every server in
/// maintenance at first; killed when dropped.
pub(crate) fn haproxy(
    dir: &Path,
    socket: &Path,
    write_port: u16,
    read_port: u16,
    nodes: &[Node],
) -> Party {
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
    // (Galera applies a write set on the other node a moment after the
    // commit: a read there right away may not see it yet.)
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let shown = loop {
        let (ok, shown, err) = run(&["config", "show", "--config-db", &second]);
        if ok {
            break shown;
        }
        assert!(std::time::Instant::now() < deadline, "{err}");
        std::thread::sleep(Duration::from_millis(200));
    };
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
    let servers = self::dbservers(&nodes, &config_db, dir.path());

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
    // A repeated (older) report is acknowledged and changes nothing.
    let old = r#"{"sender":"dbserver:2","receiver":"arbitrator:1","verb":"db_status_report","params":{"node":"n2","report":{"running":false,"cluster_status":"non-Primary","local_state":"Joining","cluster_size":1,"state_uuid":"x","conf_id":1,"last_committed":0,"members":["n2"],"at":1}},"msg_id":1}"#;
    let (code, body) = post(&arbitrator, old);
    assert!(code == 200 && body.contains("\"ack\""), "{code} {body}");
    let s = summary(&arbitrator).unwrap();
    assert_eq!(s["nodes"]["n2"]["running"], true, "{s:#}");
    assert_eq!(s["nodes"]["n2"]["cluster_status"], "Primary", "{s:#}");
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
    // The drained n1 takes no new reads either.
    wait_through(read_port, "n2", "the read port leaving the drained n1");
    // The job left the drained n1 for n2, at its GTID: still equal.
    let status = follower.wait_reading(&nodes[1], &nodes[1]);
    record("ccr_status.json", &format!("{status:#}"));
    let (ok, _, err) = run(&["command", "undrain", "n1", "--arbitrator", &arbitrator]);
    assert!(ok, "{err}");
    wait_summary(&arbitrator, 10, "n1 undrained, n2 still the writer", |s| {
        s["writer"] == "n2" && s["nodes"]["n1"]["drained"] == false
    });
    // Undrained: reads reach both nodes again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let read_by: std::collections::BTreeSet<String> =
            (0..8).filter_map(|_| through(read_port)).collect();
        if read_by.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reads reach both undrained nodes: {read_by:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // n2 dies: n1 alone is non-Primary (one of two is no majority). It holds
    // half of the last Primary view and n2 is known down: promoted.
    nodes[1].kill();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Primary, alone, and ready for SQL (a just-bootstrapped node reports
    // Primary a moment before it is Synced and takes statements).
    while nodes[0].wsrep("cluster_status") != "Primary"
        || nodes[0].wsrep("cluster_size") != "1"
        || nodes[0].wsrep("ready") != "ON"
        || nodes[0].wsrep("local_state_comment") != "Synced"
    {
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
    // Its metrics (the node gauges once its first round has run).
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let out = Command::new("curl")
            .args(["-s", &format!("http://{arbitrator}/metrics")])
            .output()
            .unwrap();
        let metrics = String::from_utf8_lossy(&out.stdout).to_string();
        if metrics.contains("minder_node_primary{node=\"n1\"} 1") || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(metrics.contains("minder_epoch 1"), "{metrics}");
    assert!(
        metrics.contains("minder_node_primary{node=\"n1\"} 1"),
        "{metrics}"
    );
    // A changed configuration is picked up within a report interval.
    let changed = text.replace("read_backend = \"r\"", "read_backend = \"r2\"");
    std::fs::write(&file, &changed).unwrap();
    let (ok, _, err) = run(&[
        "config",
        "load",
        file.to_str().unwrap(),
        "--config-db",
        &config_db,
    ]);
    assert!(ok, "{err}");
    wait_summary(&arbitrator, 5, "the new read backend", |s| {
        s["read_backend"] == "r2"
    });
    drop(arb);
    drop(servers);
}
