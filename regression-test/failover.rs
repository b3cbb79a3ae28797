//! Host mapping and failover across networks: a primary and a replica in a
//! network namespace of their own, on private addresses the service cannot
//! reach; the service reaches them only at mapped public addresses. The job
//! discovers the topology, and when the primary dies and the replica is
//! promoted, follows it — once the mapping lets it reach it.

use crate::full_sync::checksums;
use crate::harness::mariadb::with_users;
use crate::harness::*;
use crate::incremental::wait_caught_up;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace `ccr_<pid>` holding the cluster: private addresses
/// 10.213.N.1 and .2 on its loopback, public 10.214.N.2 on a veth whose
/// other end (10.214.N.1) is in the test's namespace, where the private
/// range is unreachable. Removed on drop.
struct Cluster {
    ns: String,
    veth: String,
    private_net: String,
    n: u32,
}

impl Cluster {
    fn new() -> Cluster {
        let n = std::process::id() % 200 + 20;
        let ns = format!("ccr_{}", std::process::id());
        let veth = format!("ccrv{n}");
        let peer = format!("ccrp{n}");
        let cluster = Cluster {
            ns: ns.clone(),
            veth: veth.clone(),
            private_net: format!("10.213.{n}.0/24"),
            n,
        };
        cluster.remove();
        sh(&["ip", "netns", "add", &ns]);
        sh(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ]);
        sh(&["ip", "link", "set", &peer, "netns", &ns]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.214.{n}.1/24"),
            "dev",
            &veth,
        ]);
        sh(&["ip", "link", "set", &veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &ns];
            all.extend_from_slice(args);
            sh(&all);
        };
        inside(&["ip", "link", "set", "lo", "up"]);
        inside(&[
            "ip",
            "addr",
            "add",
            &format!("10.214.{n}.2/24"),
            "dev",
            &peer,
        ]);
        inside(&["ip", "link", "set", &peer, "up"]);
        for host in [1, 2] {
            inside(&[
                "ip",
                "addr",
                "add",
                &format!("10.213.{n}.{host}/32"),
                "dev",
                "lo",
            ]);
        }
        // From here the private addresses fail at once rather than time out.
        sh(&["ip", "route", "add", "unreachable", &cluster.private_net]);
        cluster
    }

    fn private(&self, host: u32) -> String {
        format!("10.213.{}.{host}", self.n)
    }

    fn public(&self) -> String {
        format!("10.214.{}.2", self.n)
    }

    fn remove(&self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new(args[0]).args(&args[1..]).output();
        };
        quiet(&["ip", "route", "del", "unreachable", &self.private_net]);
        quiet(&["ip", "link", "del", &self.veth]);
        quiet(&["ip", "netns", "del", &self.ns]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.remove();
    }
}

fn node(ns: &str) -> MariaDb {
    let mut options = ServerOptions::source();
    options.netns = Some(ns.to_string());
    options.extra.push("--log-slave-updates");
    let s = with_users(MariaDb::start(options));
    // Discovery and the failover check read replication state.
    s.admin(
        "SET sql_log_bin = 0;
         GRANT REPLICA MONITOR, REPLICATION MASTER ADMIN ON *.* TO 'ccr_src'@'%';
         CREATE USER 'repl'@'%' IDENTIFIED BY 'repl';
         GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';",
    );
    s
}

async fn detail(service: &Service, name: &str) -> Value {
    service.post("job_detail", json!({"name": name})).await.ok()["job_detail"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_follows_a_promoted_replica_through_the_host_mapping() {
    let cluster = Cluster::new();
    let primary = node(&cluster.ns);
    let replica = {
        let mut options = ServerOptions::source();
        options.netns = Some(cluster.ns.clone());
        options.extra.push("--log-slave-updates");
        let host: &'static str = Box::leak(format!("--report-host={}", cluster.private(2)).into());
        options.extra.push(host);
        let s = with_users(MariaDb::start(options));
        s.admin(
            "SET sql_log_bin = 0;
             GRANT REPLICA MONITOR, REPLICATION MASTER ADMIN ON *.* TO 'ccr_src'@'%';",
        );
        s
    };
    // The replica starts after what both servers already have (their users).
    let base = primary.admin("SELECT @@gtid_binlog_pos");
    let db = table_t(&primary, "fo", 100);
    let start = primary.admin("SELECT @@gtid_binlog_pos");
    replica.admin(&format!(
        "SET GLOBAL gtid_slave_pos = '{base}';
         CHANGE MASTER TO master_host = '{}', master_port = {}, master_user = 'repl',
           master_password = 'repl', master_use_gtid = slave_pos;
         START SLAVE;",
        cluster.private(1),
        primary.port
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica.admin("SELECT @@gtid_slave_pos") != start {
        assert!(
            Instant::now() < deadline,
            "replica not caught up: {}",
            replica.admin("SHOW SLAVE STATUS\\G")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The job reaches the primary at its public address; only the
    // primary's private address is mapped so far.
    let service = Service::fresh().await;
    let mut src = src_endpoint(&primary, &db, None);
    src["host"] = json!(cluster.public());
    src["host_mapping"] = json!({ cluster.private(1): cluster.public() });
    let dest_db = unique("fo_copy");
    service
        .post(
            "create_ccr",
            json!({"name": "fo", "src": src, "dest": dest_endpoint(dest(), &dest_db, None)}),
        )
        .await
        .ok();
    // A second job reads from the replica: it names its primary.
    let mut via_replica = src_endpoint(&replica, &db, None);
    via_replica["host"] = json!(cluster.public());
    via_replica["host_mapping"] = json!({ cluster.private(1): cluster.public() });
    let dest_db2 = unique("fo_copy_r");
    service
        .post(
            "create_ccr",
            json!({"name": "fo_r", "src": via_replica, "dest": dest_endpoint(dest(), &dest_db2, None)}),
        )
        .await
        .ok();
    for name in ["fo", "fo_r"] {
        wait_for_state(&service, name, "DBIncrementalSync").await;
    }
    primary.admin(&format!("UPDATE {db}.t SET v = 1 WHERE id <= 10"));
    wait_caught_up(&service, "fo", &primary).await;

    // What each job discovered, as reported and as mapped.
    let d = detail(&service, "fo").await;
    let replica_addr = format!("{}:{}", cluster.private(2), replica.port);
    assert_eq!(
        d["src_topology"]["replicas"],
        json!([{"reported": replica_addr, "connect_to": replica_addr}]),
        "{d:#}"
    );
    let d = detail(&service, "fo_r").await;
    assert_eq!(
        d["src_topology"]["primary"],
        json!({"reported": format!("{}:{}", cluster.private(1), primary.port),
               "connect_to": format!("{}:{}", cluster.public(), primary.port)}),
        "{d:#}"
    );

    // The primary dies; the replica is promoted and takes writes.
    let replica_port = replica.port;
    drop(primary);
    replica.admin("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0;");
    replica.admin(&format!("UPDATE {db}.t SET v = 2 WHERE id > 90"));

    // The replica's private address is not mapped: the job cannot reach it
    // and keeps retrying, applying nothing.
    poll_job(&service, "job_status", "fo", 30, "retrying", |s| {
        s["retrying"] == true && s["retries"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    assert_eq!(
        dest().admin(&format!("SELECT COUNT(*) FROM {dest_db}.t WHERE v = 2")),
        "0"
    );
    // Mapped: from the next connection on, the job follows the new primary.
    service
        .post(
            "update_host_mapping",
            json!({"name": "fo", "src_host_mapping": { cluster.private(2): cluster.public() }}),
        )
        .await
        .ok();
    replica.admin(&format!("INSERT INTO {db}.t VALUES (101, 3)"));
    wait_caught_up(&service, "fo", &replica).await;
    assert_eq!(
        checksums(dest(), &dest_db, &["t"]),
        checksums(&replica, &db, &["t"])
    );
    let d = detail(&service, "fo").await;
    assert_eq!(
        d["source"],
        json!({"reported": replica_addr,
               "connect_to": format!("{}:{}", cluster.public(), replica_port)}),
        "{d:#}"
    );
    assert_eq!(
        d["src"]["host_mapping"][cluster.private(2)],
        json!(cluster.public()),
        "{d:#}"
    );
    // The job that read from the replica all along goes on too.
    wait_caught_up(&service, "fo_r", &replica).await;
    assert_eq!(
        checksums(dest(), &dest_db2, &["t"]),
        checksums(&replica, &db, &["t"])
    );
    service.stop().await;
    drop(replica);
    drop(cluster);
}
