//! The minder across two data centres: network namespaces for the DCs,
//! the root namespace as the third site (see `harness/galera.rs`).

use crate::harness::galera;
use crate::minder::{binary, record, run, spawn, summary, wait_summary, Party};
use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A minder process in network namespace `ns` (a data centre).
pub(crate) fn spawn_in(ns: &str, args: &[&str], log: &Path) -> Party {
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
/// equal. During the cut the arbitrator is SIGKILLed and started again (no
/// other decision), and the third site is cut from the promoted half too
/// (dc2 never promoted: dc1 is unreachable, not down). Then a cut of the
/// arbitrator from one DC alone decides nothing; the whole primary DC dies
/// under a write load (dc2 promoted, nothing acknowledged missing); and dc1
/// returns at its recovered positions by IST with the writer staying.
#[test]
fn a_cut_between_the_data_centres_promotes_the_primary_dc_only() {
    use crate::harness::galera::Sites;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let sites = Sites::new(2);
    let (dc1, dc2) = (&sites.dcs[0], &sites.dcs[1]);
    let mut nodes = galera::cluster_in(&[
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
    let arb_args = [
        "arbitrator",
        "--serial",
        "1",
        "--config-db",
        &config_db,
        "--state-dir",
        sd.to_str().unwrap(),
    ];
    let mut arb = spawn(&arb_args, &dir.path().join("arbitrator.log"));
    let servers = crate::minder::dbservers(&nodes, &config_db, dir.path());
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

    // The arbitrator SIGKILLed during the cut and started again: it
    // remembers its decision and makes no other.
    let _ = arb.0.kill();
    let _ = arb.0.wait();
    arb = spawn(&arb_args, &dir.path().join("arbitrator2.log"));
    let s = wait_summary(&arbitrator, 20, "the restarted arbitrator's summary", |s| {
        s["primary"]["members"] == json!(["n1", "n2"])
            && s["nodes"]["n3"]["cluster_status"] == "non-Primary"
    });
    assert_eq!(s["epoch"], 1, "{s:#}");

    // The third site cut from the promoted half too: dc1 is unreachable,
    // not down, and dc2 holds none of the promoted members: never promoted,
    // past hold_s and confirm_s (the sampler is still watching dc2).
    sites.cut_third(0, true);
    let s = wait_summary(
        &arbitrator,
        20,
        "dc1 unreachable from the third site",
        |s| s["nodes"]["n1"]["reachable"] == false && s["nodes"]["n2"]["reachable"] == false,
    );
    record("third_cut.json", &format!("{s:#}"));
    std::thread::sleep(Duration::from_secs(13));
    let s = summary(&arbitrator).unwrap();
    assert_eq!(
        s["epoch"], 1,
        "dc2 promoted while dc1 was only unreachable: {s:#}"
    );
    assert!(
        s["pending"].as_str().is_some_and(|p| !p.is_empty()),
        "the arbitrator says why it waits: {s:#}"
    );
    sites.cut_third(0, false);

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
    // In dc1 still (n1, or n2 while n1 was an IST donor for dc2).
    assert!(s["writer"] == "n1" || s["writer"] == "n2", "{s:#}");

    // The arbitrator cut from dc1 only: the cluster is whole, dc2 reports
    // Primary: no decision.
    sites.cut_third(0, true);
    std::thread::sleep(Duration::from_secs(6));
    let s = summary(&arbitrator).unwrap();
    assert_eq!(s["epoch"], 1, "{s:#}");
    assert_eq!(s["nodes"]["n1"]["reachable"], false, "{s:#}");
    sites.cut_third(0, false);

    // The whole primary DC dies under a write load on n1: its dbservers
    // report mariadbd not running, dc2 (2 of 4, non-Primary) is promoted,
    // and no write n1 acknowledged is missing there.
    let acked = Arc::new(Mutex::new(Vec::<u32>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let socket = nodes[0].sql("SELECT @@socket");
        std::thread::spawn(move || {
            let mut id = 1_000_000u32;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let ok = Command::new("mariadb")
                    .args(["--no-defaults", "-uroot", "--connect-timeout=1"])
                    .arg(format!("--socket={socket}"))
                    .args(["-e", &format!("INSERT INTO load_db.t VALUES ({id})")])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    acked.lock().unwrap().push(id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    nodes[0].kill();
    nodes[1].kill();
    let killed_at = Instant::now();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let s = wait_summary(
        &arbitrator,
        60,
        "dc2 promoted once dc1 is known down",
        |s| s["epoch"] == 2 && s["primary"]["members"] == json!(["n3", "n4"]),
    );
    let promoted_after = killed_at.elapsed();
    assert_eq!(s["nodes"]["n1"]["running"], false, "{s:#}");
    assert_eq!(s["decisions"][0]["component"], json!(["n3", "n4"]), "{s:#}");
    assert_eq!(s["decisions"][1]["component"], json!(["n1", "n2"]), "{s:#}");
    let writer_now = s["writer"].clone();
    assert!(
        writer_now == "n3" || writer_now == "n4",
        "a dc2 writer: {s:#}"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 10, "{} writes acknowledged", acked.len());
    nodes[2].wait_ready(20);
    let ids = acked
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let missing = nodes[2].sql(&format!(
        "SELECT {} - COUNT(*) FROM load_db.t WHERE id IN ({ids})",
        acked.len()
    ));
    assert_eq!(missing.trim(), "0", "acknowledged writes missing on n3");
    nodes[2].sql("INSERT INTO load_db.t VALUES (2000000)");
    record(
        "dc_down.txt",
        &format!("dc2 promoted {promoted_after:?} after dc1 died"),
    );

    // dc1 returns (at its recovered positions, by IST): four again, the
    // writer stays in dc2 (no failback), all equal.
    nodes[0].start_recovered();
    nodes[1].start_recovered();
    let deadline = Instant::now() + Duration::from_secs(90);
    while nodes
        .iter()
        .any(|n| n.wsrep("cluster_size") != "4" || n.wsrep("local_state_comment") != "Synced")
    {
        assert!(Instant::now() < deadline, "dc1 did not rejoin");
        std::thread::sleep(Duration::from_millis(300));
    }
    let s = wait_summary(&arbitrator, 20, "four Primary again", |s| {
        s["primary"]["members"] == json!(["n1", "n2", "n3", "n4"])
            && ["n1", "n2"]
                .iter()
                .all(|n| s["nodes"][n]["local_state"] == "Synced")
    });
    // No failback: the writer stays in dc2 (it may have moved between n3
    // and n4 while one of them was an IST donor, Desynced for a moment).
    assert!(
        s["writer"] == "n3" || s["writer"] == "n4",
        "the writer stayed in dc2 (it was {writer_now}): {s:#}"
    );
    assert_eq!(s["epoch"], 2, "{s:#}");
    let counts: Vec<String> = nodes
        .iter()
        .map(|n| n.sql("SELECT COUNT(*), SUM(id) FROM load_db.t"))
        .collect();
    assert!(counts.windows(2).all(|w| w[0] == w[1]), "{counts:?}");
    drop(arb);
    drop(servers);
}
