//! The minder against garbd (`galera-arbitrator-4`) on one cluster of two
//! data centres (`harness/galera.rs`): a cut between the DCs under a write
//! load through HAProxy's write port, several runs of each set-up taken in
//! turn. Not a test (ignored): `bash shell/bench_minder.sh` runs it and
//! prints the table doc/benchmarks.md shows.
//!
//! Measured per run: the time from the cut to the end of the longest write
//! gap after it (the first write accepted again), the longest gap, and the
//! bytes that cross the third site's link (both ways) per second over 10 s
//! of the same write load before the cut. The third site's arbitrating
//! parties (the minder's arbitrator and dbclient, or garbd) run in a network
//! namespace of their own, `mthird` (203.0.113.10, a veth to the root
//! namespace), so that its veth counts exactly their traffic; HAProxy and the
//! write load stay in the root namespace and are not counted.

use crate::harness::galera::{self, Node, Sites};
use crate::minder::{haproxy, wait_summary, Party, ARBITRATOR_IP};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    crate::minder::free_port(ARBITRATOR_IP)
}

const THIRD_NS: &str = "mthird";
const THIRD_VETH: &str = "mv3";
const THIRD: &str = "203.0.113.10";

/// The third site's own namespace; removed when dropped.
struct ThirdSite;

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl ThirdSite {
    fn new() -> ThirdSite {
        ThirdSite::remove();
        sh(&["ip", "netns", "add", THIRD_NS]);
        sh(&[
            "ip", "link", "add", THIRD_VETH, "type", "veth", "peer", "name", "mv3n",
        ]);
        sh(&["ip", "link", "set", "mv3n", "netns", THIRD_NS]);
        sh(&["ip", "addr", "add", "203.0.113.9/30", "dev", THIRD_VETH]);
        sh(&["ip", "link", "set", THIRD_VETH, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", THIRD_NS];
            all.extend_from_slice(args);
            sh(&all);
        };
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&["ip", "addr", "add", &format!("{THIRD}/30"), "dev", "mv3n"]);
        inside(&["ip", "link", "set", "mv3n", "up"]);
        inside(&["ip", "route", "add", "default", "via", "203.0.113.9"]);
        ThirdSite
    }

    fn remove() {
        let _ = Command::new("ip")
            .args(["link", "del", THIRD_VETH])
            .output();
        let _ = Command::new("ip").args(["netns", "del", THIRD_NS]).output();
    }

    /// Bytes across the third site's link so far, both ways.
    fn bytes(&self) -> u64 {
        ["rx_bytes", "tx_bytes"]
            .iter()
            .map(|c| {
                std::fs::read_to_string(format!("/sys/class/net/{THIRD_VETH}/statistics/{c}"))
                    .unwrap()
                    .trim()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    }
}

impl Drop for ThirdSite {
    fn drop(&mut self) {
        ThirdSite::remove();
    }
}

/// Writes through `port` every 20 ms until `stop`; the instants of the
/// acknowledged ones.
fn write_load(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Instant>> {
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut id = 0u64;
        while !stop.load(Ordering::Relaxed) {
            id += 1;
            let ok = Command::new("timeout")
                .args([
                    "5",
                    "mariadb",
                    "--no-defaults",
                    "-uroot",
                    "--connect-timeout=2",
                ])
                .args(["-h", ARBITRATOR_IP, "-P", &port.to_string()])
                .args(["-e", &format!("INSERT INTO bench.t (v) VALUES ({id})")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                acked.push(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        acked
    })
}

struct Run {
    failover: Duration,
    gap: Duration,
    bytes_per_s: f64,
}

/// From the instants of acknowledged writes and the cut: the end of the
/// longest gap after the cut, relative to it, and that gap.
fn gap_after(acked: &[Instant], cut: Instant) -> (Duration, Duration) {
    let mut last = cut;
    let mut best = (Duration::ZERO, Duration::ZERO);
    for &t in acked.iter().filter(|t| **t > cut) {
        if t - last > best.1 {
            best = (t - cut, t - last);
        }
        last = t;
    }
    best
}

fn all_synced(nodes: &[Node], size: &str) -> bool {
    nodes
        .iter()
        .all(|n| n.wsrep("cluster_size") == size && n.wsrep("local_state_comment") == "Synced")
}

fn wait(what: &str, secs: u64, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// One cut under load with `pids` at the third site; healed after.
fn measure(sites: &Sites, third: &ThirdSite, nodes: &[Node], write_port: u16, size: &str) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let load = write_load(write_port, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let before = third.bytes();
    std::thread::sleep(Duration::from_secs(10));
    let after = third.bytes();
    let cut = Instant::now();
    sites.cut_between(true);
    std::thread::sleep(Duration::from_secs(20));
    stop.store(true, Ordering::Relaxed);
    let acked = load.join().unwrap();
    sites.cut_between(false);
    wait("the cluster whole again", 120, || all_synced(nodes, size));
    let (failover, gap) = gap_after(&acked, cut);
    Run {
        failover,
        gap,
        bytes_per_s: (after - before) as f64 / 10.0,
    }
}

/// Sets HAProxy's write backend by hand (the garbd set-up has no dbclient).
fn haproxy_ready(socket: &Path, server: &str) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.write_all(format!("set server w/{server} state ready\n").as_bytes())
        .unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
#[ignore = "a benchmark: bash shell/bench_minder.sh"]
fn minder_against_garbd() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let sites = Sites::new(2);
    let third = ThirdSite::new();
    let (dc1, dc2) = (&sites.dcs[0], &sites.dcs[1]);
    let nodes = galera::cluster_in(&[
        ("n1", &dc1.nodes[0], Some(&dc1.netns)),
        ("n2", &dc1.nodes[1], Some(&dc1.netns)),
        ("n3", &dc2.nodes[0], Some(&dc2.netns)),
        ("n4", &dc2.nodes[1], Some(&dc2.netns)),
    ]);
    nodes[0].sql("CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v BIGINT)");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("haproxy.sock");
    let (write_port, read_port) = (free_port(), free_port());
    let _haproxy = haproxy(dir.path(), &socket, write_port, read_port, &nodes);
    let arbitrator = format!("{THIRD}:4600");
    let dbclient = format!("{THIRD}:4602");
    let mut text = format!(
        "[site]\nprimary_dc = \"dc1\"\nhold_s = 10\nwrite_backend = \"w\"\nread_backend = \"r\"\n\n\
         [[arbitrator]]\nserial = 1\naddress = \"{arbitrator}\"\n\n\
         [[dbclient]]\nserial = 1\naddress = \"{dbclient}\"\nhaproxy_socket = \"{}\"\n",
        socket.display()
    );
    for (i, n) in nodes.iter().enumerate() {
        text.push_str(&format!(
            "\n[[dbserver]]\nserial = {}\nname = \"{}\"\ndc = \"dc{}\"\naddress = \"{}:4601\"\nmysql = \"{}\"\n",
            i + 1,
            n.name,
            i / 2 + 1,
            n.ip,
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
    let (ok, _, err) = crate::minder::run(&[
        "config",
        "load",
        file.to_str().unwrap(),
        "--config-db",
        &config_db,
    ]);
    assert!(ok, "{err}");
    // The dbservers run throughout (they are beside the nodes, not at the
    // third site); the arbitrator and dbclient only in the minder's runs.
    let servers = crate::minder::dbservers(&nodes, &config_db, dir.path());
    let members: Vec<String> = nodes.iter().map(|n| format!("{}:4567", n.ip)).collect();
    let mut minder_runs = Vec::new();
    let mut garbd_runs = Vec::new();
    for round in 0..runs {
        // The minder: a fresh arbitrator (its own hold_s) and the dbclient.
        let sd = dir.path().join(format!("arbitrator{round}"));
        let arb = crate::minder_dcs::spawn_in(
            THIRD_NS,
            &[
                "arbitrator",
                "--serial",
                "1",
                "--config-db",
                &config_db,
                "--state-dir",
                sd.to_str().unwrap(),
            ],
            &dir.path().join(format!("arbitrator{round}.log")),
        );
        let cd = dir.path().join(format!("dbclient{round}"));
        let client = crate::minder_dcs::spawn_in(
            THIRD_NS,
            &[
                "dbclient",
                "--serial",
                "1",
                "--config-db",
                &config_db,
                "--state-dir",
                cd.to_str().unwrap(),
            ],
            &dir.path().join(format!("dbclient{round}.log")),
        );
        wait_summary(&arbitrator, 60, "four Primary, n1 the writer", |s| {
            s["primary"]["members"] == json!(["n1", "n2", "n3", "n4"]) && s["writer"] == "n1"
        });
        std::thread::sleep(Duration::from_secs(2));
        let run = measure(&sites, &third, &nodes, write_port, "4");
        eprintln!(
            "minder run {round}: failover {:?}, gap {:?}, {:.0} B/s",
            run.failover, run.gap, run.bytes_per_s
        );
        minder_runs.push(run);
        drop(arb);
        drop(client);

        // garbd at the third site, same timeouts.
        let garbd = Party(
            Command::new("ip")
                .args(["netns", "exec", THIRD_NS, "garbd"])
                .args(["-a", &format!("gcomm://{}", members.join(","))])
                .args(["-g", "my_wsrep_cluster", "-n", "garbd"])
                .args(["-o", &format!(
                    "gmcast.listen_addr=tcp://{}:4567;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT3S;\
                     evs.keepalive_period=PT0.5S;evs.inactive_check_period=PT0.5S;evs.install_timeout=PT3S",
                    THIRD
                )])
                .args(["-l", dir.path().join(format!("garbd{round}.log")).to_str().unwrap()])
                // garbd writes its gvwstate.dat in its working directory.
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("garbd: shell/bench_minder.sh installs galera-arbitrator-4"),
        );
        wait("garbd joined", 60, || all_synced(&nodes, "5"));
        haproxy_ready(&socket, "n1");
        std::thread::sleep(Duration::from_secs(2));
        let run = measure(&sites, &third, &nodes, write_port, "5");
        eprintln!(
            "garbd run {round}: failover {:?}, gap {:?}, {:.0} B/s",
            run.failover, run.gap, run.bytes_per_s
        );
        garbd_runs.push(run);
        drop(garbd);
        wait("garbd gone", 60, || all_synced(&nodes, "4"));
    }
    let stat = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let (mf, gf) = (
        stat(&minder_runs, |r| r.failover.as_secs_f64()),
        stat(&garbd_runs, |r| r.failover.as_secs_f64()),
    );
    let (mg, gg) = (
        stat(&minder_runs, |r| r.gap.as_secs_f64()),
        stat(&garbd_runs, |r| r.gap.as_secs_f64()),
    );
    let (mb, gb) = (
        stat(&minder_runs, |r| r.bytes_per_s),
        stat(&garbd_runs, |r| r.bytes_per_s),
    );
    let table = format!(
        "| median of {runs} runs | minder | garbd | minder − garbd / ratio |\n|---|---|---|---|\n\
         | cut → first write accepted again | {mf:.2} s | {gf:.2} s | {:+.2} s |\n\
         | longest write gap | {mg:.2} s | {gg:.2} s | {:+.2} s |\n\
         | bytes at the third site under the load | {:.0} B/s | {:.0} B/s | {:.2}% |\n",
        mf - gf,
        mg - gg,
        mb,
        gb,
        100.0 * mb / gb.max(1.0)
    );
    println!("{table}");
    if let Ok(out) = std::env::var("BENCH_OUT") {
        std::fs::write(out, &table).unwrap();
    }
    drop(servers);
}
