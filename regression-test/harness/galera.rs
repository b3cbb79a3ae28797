//! Real Galera clusters for the minder's tests: `mariadbd` nodes with the
//! Galera 4 provider Debian ships, each on a loopback address of its own
//! (127.0.0.x stands for a machine), with small buffers and short failure
//! timeouts. The first node bootstraps and is shut down cleanly; the others
//! start on copies of its datadir and join without a state transfer.

use super::mariadb::{
    find_program, spawn_tied_to_process, sql_on_socket, template, work_root, RUNNING,
};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const PROVIDER: &str = "/usr/lib/galera/libgalera_smm.so";

static NEXT: AtomicU32 = AtomicU32::new(1);

pub struct Node {
    pub name: String,
    pub ip: String,
    pub port: u16,
    /// The network namespace it runs in (a data centre), if any.
    pub netns: Option<String>,
    dir: PathBuf,
    pid: Option<u32>,
    cluster: String,
}

/// A free port on `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Node {
    fn command(&self, new_cluster: bool) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(find_program("mariadbd"));
                c
            }
            None => Command::new(find_program("mariadbd")),
        };
        let gcomm = format!("{}:4567", self.ip);
        // As the mysql user: a joiner's rsync SST daemon drops to nobody
        // when run as root and cannot write the datadir.
        cmd.arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", self.dir.display()))
            .arg(format!(
                "--socket={}",
                self.dir.join("mysqld.sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("mysqld.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                self.dir.join("error.log").display()
            ))
            .arg(format!("--tmpdir={}", self.dir.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--bind-address={}", self.ip))
            .args([
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=2",
                "--skip-name-resolve",
                "--binlog-format=ROW",
                "--innodb-autoinc-lock-mode=2",
                "--wsrep-on=ON",
                "--wsrep-sst-method=rsync",
                // Every node writes the cluster's GTIDs into its binlog: a
                // CCR job can read from any node and move between them.
                "--log-bin=binlog",
                "--log-slave-updates=ON",
                "--binlog-row-image=FULL",
                "--server-id=1",
                "--wsrep-gtid-mode=ON",
                "--wsrep-gtid-domain-id=7",
                "--gtid-domain-id=0",
            ])
            .arg(format!("--wsrep-provider={PROVIDER}"))
            .arg(format!("--wsrep-cluster-address=gcomm://{}", self.cluster))
            .arg(format!("--wsrep-node-address={gcomm}"))
            .arg(format!("--wsrep-node-name={}", self.name))
            .arg(format!(
                "--wsrep-node-incoming-address={}:{}",
                self.ip, self.port
            ))
            .arg(format!(
                "--wsrep-provider-options=gmcast.listen_addr=tcp://{gcomm};ist.recv_addr={}:4568;\
                 evs.suspect_timeout=PT2S;evs.inactive_timeout=PT3S;evs.keepalive_period=PT0.5S;\
                 evs.inactive_check_period=PT0.5S;evs.install_timeout=PT3S;gcache.size=32M",
                self.ip
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if new_cluster {
            cmd.arg("--wsrep-new-cluster");
        }
        cmd
    }

    /// Starts the node; returns once it answers SQL and is Synced.
    pub fn start(&mut self, new_cluster: bool) {
        self.start_with(self.command(new_cluster));
    }

    /// After a crash: starts the node at the position `mariadbd
    /// --wsrep-recover` prints (as Debian's `galera_recovery` does), so that
    /// it rejoins by IST rather than a full state transfer.
    pub fn start_recovered(&mut self) {
        let log = self.dir.join("error.log");
        let _ = std::fs::remove_file(&log);
        let status = self
            .command(false)
            .arg("--wsrep-recover")
            .status()
            .expect("mariadbd --wsrep-recover");
        assert!(status.success(), "{}: --wsrep-recover failed", self.name);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let position = text
            .lines()
            .rev()
            .find_map(|l| l.split("Recovered position: ").nth(1))
            .map(|p| p.trim().to_string())
            .unwrap_or_else(|| panic!("{}: no recovered position in\n{text}", self.name));
        let mut cmd = self.command(false);
        cmd.arg(format!("--wsrep-start-position={position}"));
        self.start_with(cmd);
    }

    fn start_with(&mut self, cmd: Command) {
        let mut child = spawn_tied_to_process(cmd).expect("start mariadbd");
        self.pid = Some(child.id());
        RUNNING.lock().push((child.id(), self.dir.clone()));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                panic!("{} exited with {status}:\n{log}", self.name);
            }
            if self
                .try_sql("SHOW STATUS LIKE 'wsrep_local_state_comment'")
                .is_ok_and(|s| s.contains("Synced"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} is not Synced after 90 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::mem::forget(child);
    }

    /// SIGKILL, as a crash; returns once it is gone.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid.take() {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
            RUNNING.lock().retain(|(p, _)| *p != pid);
        }
    }

    /// A clean shutdown; returns once it is gone.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
            RUNNING.lock().retain(|(p, _)| *p != pid);
        }
    }

    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        sql_on_socket(&self.dir.join("mysqld.sock"), sql)
    }

    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name))
    }

    /// A wsrep status variable (`cluster_status` for `wsrep_cluster_status`).
    pub fn wsrep(&self, name: &str) -> String {
        self.try_sql(&format!("SHOW STATUS LIKE 'wsrep_{name}'"))
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until the node is Primary, Synced and takes statements (a
    /// just-bootstrapped node reports Primary a moment before).
    pub fn wait_ready(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.wsrep("cluster_status") != "Primary"
            || self.wsrep("ready") != "ON"
            || self.wsrep("local_state_comment") != "Synced"
        {
            assert!(Instant::now() < deadline, "{} not ready for SQL", self.name);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chown(dir: &std::path::Path) {
    let status = Command::new("chown")
        .args(["-R", "mysql:mysql"])
        .arg(dir)
        .status()
        .expect("chown");
    assert!(status.success(), "chown -R mysql {}", dir.display());
}

/// A cluster of `nodes` (name, loopback address), every node Synced.
pub fn cluster(nodes: &[(&str, &str)]) -> Vec<Node> {
    let spec: Vec<(&str, &str, Option<&str>)> =
        nodes.iter().map(|(n, ip)| (*n, *ip, None)).collect();
    cluster_in(&spec)
}

/// A cluster of `nodes` (name, address, network namespace: a node in a
/// namespace listens on port 3306 of its address), every node Synced.
pub fn cluster_in(nodes: &[(&str, &str, Option<&str>)]) -> Vec<Node> {
    assert!(
        std::path::Path::new(PROVIDER).exists(),
        "{PROVIDER} not found: the minder's tests need Galera 4 (Debian's galera-4, with mariadb-server)"
    );
    let run = NEXT.fetch_add(1, Ordering::Relaxed);
    let members: Vec<String> = nodes
        .iter()
        .map(|(_, ip, _)| format!("{ip}:4567"))
        .collect();
    let mut out: Vec<Node> = nodes
        .iter()
        .map(|(name, ip, ns)| Node {
            name: name.to_string(),
            ip: ip.to_string(),
            port: if ns.is_some() { 3306 } else { free_port(ip) },
            netns: ns.map(str::to_string),
            dir: work_root().join(format!("galera-{run}-{name}")),
            pid: None,
            cluster: members.join(","),
        })
        .collect();
    // The first node bootstraps a new cluster on the template, and is shut
    // down cleanly: its datadir is then every node's start.
    let copy = |to: &PathBuf| {
        let status = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(to)
            .status()
            .expect("cp");
        assert!(status.success());
    };
    copy(&out[0].dir);
    chown(&out[0].dir);
    out[0].start(true);
    out[0].sql("CREATE USER IF NOT EXISTS 'root'@'%'; GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION");
    out[0].stop();
    for n in &out[1..] {
        let status = Command::new("cp")
            .arg("-a")
            .arg(&out[0].dir)
            .arg(&n.dir)
            .status()
            .expect("cp");
        assert!(status.success());
        let _ = std::fs::remove_file(n.dir.join("gvwstate.dat"));
        chown(&n.dir);
    }
    out[0].start(true);
    for n in out.iter_mut().skip(1) {
        n.start(false);
    }
    let size = nodes.len().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Every node Synced, not only counted: a joiner's IST leaves its donor
    // `Donor/Desynced` for a moment, and a minder started then would pick
    // its writer among the others.
    while out
        .iter()
        .any(|n| n.wsrep("cluster_size") != size || n.wsrep("local_state_comment") != "Synced")
    {
        assert!(
            Instant::now() < deadline,
            "the cluster did not reach {size} Synced nodes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    out
}

/// Two data centres as network namespaces, each joined to the root
/// namespace (the third site) by a veth pair; the root namespace routes
/// between them. Addresses from the documentation ranges only. Removed when
/// dropped.
pub struct Sites {
    pub dcs: Vec<Dc>,
    /// The third site's address, on the root namespace's `lo`.
    pub third: String,
}

pub struct Dc {
    pub netns: String,
    /// The subnet, and the addresses of its nodes.
    pub subnet: String,
    pub nodes: Vec<String>,
    veth: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip_ns(ns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all);
}

impl Sites {
    /// dc1 (198.51.100.0/26) and dc2 (198.51.100.64/26), `per_dc` nodes
    /// each (the subnet's .11, .12 …), and the third site at 203.0.113.1.
    /// (192.0.2.0/24 is this machine's own network, so both data centres
    /// share the second documentation range.)
    pub fn new(per_dc: usize) -> Sites {
        let third = "203.0.113.1".to_string();
        let specs = [("mdc1", 0u8, "mv1"), ("mdc2", 64u8, "mv2")];
        // What a crashed earlier run may have left.
        for (ns, _, veth) in specs {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = Command::new("ip").args(["link", "del", veth]).output();
        }
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{third}/32"), "dev", "lo"])
            .output();
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .expect("enable forwarding between the sites");
        ip(&["addr", "add", &format!("{third}/32"), "dev", "lo"]);
        let mut dcs = Vec::new();
        for (ns, base, veth) in specs {
            let peer = format!("{veth}n");
            let at = |host: u8| format!("198.51.100.{}", base + host);
            ip(&["netns", "add", ns]);
            ip(&["link", "add", veth, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "netns", ns]);
            ip(&["addr", "add", &format!("{}/26", at(1)), "dev", veth]);
            ip(&["link", "set", veth, "up"]);
            ip_ns(ns, &["link", "set", "lo", "up"]);
            let mut nodes = Vec::new();
            for i in 0..per_dc {
                let a = at(11 + i as u8);
                ip_ns(ns, &["addr", "add", &format!("{a}/26"), "dev", &peer]);
                nodes.push(a);
            }
            ip_ns(ns, &["link", "set", &peer, "up"]);
            ip_ns(ns, &["route", "add", "default", "via", &at(1)]);
            dcs.push(Dc {
                netns: ns.to_string(),
                subnet: format!("{}/26", at(0)),
                nodes,
                veth: veth.to_string(),
            });
        }
        Sites { dcs, third }
    }

    /// Cuts the link between the two data centres (a blackhole route in
    /// each for the other's subnet); `false` heals it.
    pub fn cut_between(&self, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        ip_ns(
            &self.dcs[0].netns,
            &["route", verb, "blackhole", &self.dcs[1].subnet],
        );
        ip_ns(
            &self.dcs[1].netns,
            &["route", verb, "blackhole", &self.dcs[0].subnet],
        );
    }

    /// Cuts data centre `dc` from the third site; `false` heals it.
    pub fn cut_third(&self, dc: usize, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        ip_ns(
            &self.dcs[dc].netns,
            &["route", verb, "blackhole", &format!("{}/32", self.third)],
        );
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for dc in &self.dcs {
            let _ = Command::new("ip")
                .args(["netns", "del", &dc.netns])
                .output();
            let _ = Command::new("ip").args(["link", "del", &dc.veth]).output();
        }
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{}/32", self.third), "dev", "lo"])
            .output();
    }
}
