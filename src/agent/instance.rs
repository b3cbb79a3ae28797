//! The MariaDB instances an agent manages: kept in `instances.json` in its
//! state directory (written to a temporary file and renamed, so a crash
//! leaves the old list or the new one), each with its own directory
//! (`<base>/<port>`: `my.cnf`, `data/`, `binlog/`, `tmp/`, the socket, the
//! pid file and the error log). Every operation is written "make sure X
//! holds": installing an installed instance, starting a running one or
//! stopping a stopped one does nothing more, so an operation sent again
//! after a crash is safe.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One managed instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub port: u16,
    /// Its own directory.
    pub dir: PathBuf,
    pub innodb_size_mb: u64,
    pub max_connections: u64,
    pub server_id: u64,
    /// False after a deliberate stop: auto pullup leaves it down.
    pub wanted_running: bool,
    /// Auto pullup paused until this unix ms (`i64::MAX`: until resumed).
    #[serde(default)]
    pub pullup_paused_until: i64,
    /// A replica: `read_only` in its `my.cnf`, so it stays so after any
    /// restart.
    #[serde(default)]
    pub read_only: bool,
    /// MariaDB semi-synchronous replication: `master`, `slave` or none.
    #[serde(default)]
    pub semi_sync: String,
    /// Its CPU limit, applied whenever it starts.
    #[serde(default)]
    pub cgroup: Option<crate::protocol::Cgroup>,
    /// A compute node: the Spider engine loaded at start.
    #[serde(default)]
    pub spider: bool,
}

/// What an install asks for.
#[derive(Clone, Debug)]
pub struct InstallSpec {
    pub port: u16,
    pub base: PathBuf,
    pub innodb_size_mb: u64,
    pub max_connections: u64,
    pub server_id: u64,
    pub read_only: bool,
    pub semi_sync: String,
    pub cgroup: Option<crate::protocol::Cgroup>,
    pub spider: bool,
}

impl Instance {
    fn cnf(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("mysqld.pid")
    }

    /// The pid of its running `mariadbd`, if one runs.
    pub fn running_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cnf = self.cnf();
        let cnf = cnf.to_string_lossy();
        String::from_utf8_lossy(&cmdline)
            .contains(cnf.as_ref())
            .then_some(pid)
    }

    pub fn is_running(&self) -> bool {
        self.running_pid().is_some()
    }

    fn config_text(&self, host: &str) -> String {
        let d = self.dir.display();
        let mut text = format!(
            "[mariadbd]\n\
             datadir={d}/data\n\
             socket={d}/mysqld.sock\n\
             pid-file={d}/mysqld.pid\n\
             log-error={d}/error.log\n\
             tmpdir={d}/tmp\n\
             port={}\n\
             bind-address={host}\n\
             report-host={host}\n\
             report-port={}\n\
             server-id={}\n\
             log-bin={d}/binlog/binlog\n\
             binlog-format=ROW\n\
             log-slave-updates=ON\n\
             innodb-buffer-pool-size={}M\n\
             innodb-log-file-size=16M\n\
             max-connections={}\n\
             skip-name-resolve\n\
             character-set-server=utf8mb4\n\
             userstat=ON\n",
            self.port, self.port, self.server_id, self.innodb_size_mb, self.max_connections
        );
        if self.read_only {
            // The manager turns the current primary writable; a node that
            // restarts (auto pullup, a machine back) stays read-only.
            text.push_str("read-only=ON\n");
        }
        // Replicas notice a silent primary within 4 s (heartbeats every
        // 2 s), so that they tell the manager it is gone.
        text.push_str("slave-net-timeout=4\n");
        if !self.semi_sync.is_empty() {
            // Any node may be promoted: each acknowledges as a replica, and
            // as a primary commits only after a replica acknowledged
            // (AFTER_SYNC). A node restarting as a semi-synchronous
            // replica rolls back what it logged but no replica
            // acknowledged, so an old primary rejoins without errant
            // transactions.
            text.push_str(
                "rpl-semi-sync-slave-enabled=ON\n\
                 rpl-semi-sync-master-wait-point=AFTER_SYNC\n",
            );
            if self.semi_sync == "master" && !self.read_only {
                text.push_str("rpl-semi-sync-master-enabled=ON\n");
            }
        }
        if self.spider {
            // A compute node: tables whose rows live on the shards. The
            // DDL it takes is in its binlog, which the manager follows.
            text.push_str(
                "plugin-load-add=ha_spider\n\
                 spider-connect-timeout=5\n\
                 spider-net-read-timeout=60\n\
                 spider-net-write-timeout=60\n",
            );
        }
        if is_root() {
            text.push_str("user=root\n");
        }
        text
    }

    /// The instance `spec` describes (not yet on disk).
    pub fn of(spec: &InstallSpec) -> Instance {
        Instance {
            port: spec.port,
            dir: spec.base.join(spec.port.to_string()),
            innodb_size_mb: spec.innodb_size_mb,
            max_connections: spec.max_connections,
            server_id: spec.server_id,
            wanted_running: false,
            pullup_paused_until: 0,
            read_only: spec.read_only,
            semi_sync: spec.semi_sync.clone(),
            cgroup: spec.cgroup,
            spider: spec.spider,
        }
    }

    /// Its directory, `my.cnf`, and empty `binlog/` and `tmp/` (the datadir
    /// is the caller's).
    pub fn lay_out(&self, host: &str) -> Result<(), String> {
        for sub in ["binlog", "tmp"] {
            std::fs::create_dir_all(self.dir.join(sub))
                .map_err(|e| format!("{}: {e}", self.dir.join(sub).display()))?;
        }
        std::fs::write(self.cnf(), self.config_text(host))
            .map_err(|e| format!("{}: {e}", self.cnf().display()))
    }

    /// Makes sure the instance is installed: its directory, `my.cnf` and an
    /// initialised datadir. An interrupted install (no `data/mysql`) is
    /// started over.
    pub async fn install(spec: &InstallSpec, host: &str) -> Result<Instance, String> {
        let instance = Instance::of(spec);
        let data = instance.dir.join("data");
        if data.join("mysql").is_dir() && instance.cnf().is_file() {
            return Ok(instance);
        }
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        instance.lay_out(host)?;
        let mut cmd = std::process::Command::new(program("mariadb-install-db")?);
        cmd.arg(format!("--defaults-file={}", instance.cnf().display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"])
            .stdin(std::process::Stdio::null());
        if is_root() {
            cmd.arg("--user=root");
        }
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| format!("mariadb-install-db: {e}"))?
            .map_err(|e| format!("mariadb-install-db: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&data);
            return Err(format!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(instance)
    }

    /// Its datadir.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Puts back the datadir and binlogs a clone set aside and did not
    /// finish replacing (`data.old`, `binlog.old`: the clone's swap was cut
    /// off), so that the instance never starts without its datadir nor on a
    /// clone that was never confirmed. The instance must be stopped.
    pub fn recover_swap(&self) -> Result<bool, String> {
        let old = self.dir.join("data.old");
        if !old.is_dir() {
            return Ok(false);
        }
        let data = self.data();
        let binlog = self.dir.join("binlog");
        let old_binlog = self.dir.join("binlog.old");
        let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        if data.exists() {
            std::fs::remove_dir_all(&data).map_err(|e| io(&data, e))?;
        }
        if old_binlog.is_dir() {
            if binlog.exists() {
                std::fs::remove_dir_all(&binlog).map_err(|e| io(&binlog, e))?;
            }
            std::fs::rename(&old_binlog, &binlog).map_err(|e| io(&old_binlog, e))?;
        }
        std::fs::rename(&old, &data).map_err(|e| io(&old, e))?;
        Ok(true)
    }

    /// Removes what a confirmed clone left behind (an old datadir it was
    /// removing, binlogs set aside with no datadir to go back to).
    pub fn clear_leftovers(&self) {
        if self.dir.join("data.old").is_dir() {
            return;
        }
        let _ = std::fs::remove_dir_all(self.dir.join("binlog.old"));
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with("data.discard-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Makes sure `mariadbd` runs and answers on its socket (at most 60 s).
    pub async fn start(&self) -> Result<(), String> {
        let mut spawned = None;
        if !self.is_running() {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("mariadbd.out"))
                .map_err(|e| format!("{}: {e}", self.dir.display()))?;
            let mut cmd = std::process::Command::new(program("mariadbd")?);
            cmd.arg(format!("--defaults-file={}", self.cnf().display()))
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log);
            // Its own process group: the instance outlives the agent.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut child = cmd.spawn().map_err(|e| format!("mariadbd: {e}"))?;
            spawned = Some(child.id() as i32);
            // Reaped when it exits, so it never stays a zombie of the agent.
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.is_running() && tokio::net::UnixStream::connect(self.socket()).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                // One that never came up (no pid file yet) is not left
                // running behind its instance's back.
                if let Some(pid) = spawned {
                    signal(pid, libc::SIGKILL);
                    for _ in 0..50 {
                        if !Path::new(&format!("/proc/{pid}")).exists() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                return Err(format!(
                    "mariadbd on port {} did not come up within 60 s: see {}",
                    self.port,
                    self.dir.join("error.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Makes sure `mariadbd` does not run: SIGTERM, then SIGKILL after 60 s.
    pub async fn stop(&self) -> Result<(), String> {
        let Some(pid) = self.running_pid() else {
            return Ok(());
        };
        signal(pid, libc::SIGTERM);
        for i in 0..300 {
            if !self.is_running() {
                return Ok(());
            }
            if i == 299 {
                signal(pid, libc::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if self.is_running() {
            Err(format!("mariadbd on port {} does not stop", self.port))
        } else {
            Ok(())
        }
    }

    /// Makes sure nothing of the instance is left: stopped, directory gone.
    pub async fn uninstall(&self) -> Result<(), String> {
        self.stop().await?;
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", self.dir.display())),
        }
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid read from the instance's own pid file,
    // checked to be its mariadbd.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A MariaDB program, from the usual directories.
pub fn program(name: &str) -> Result<PathBuf, String> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or_else(|| format!("{name} is not installed on this machine"))
}

/// The instance list in the state directory. Operations on different
/// instances run side by side: a change of the list is read, made and
/// saved under one lock, so no change is lost to another.
pub struct Registry {
    file: PathBuf,
    changing: parking_lot::Mutex<()>,
}

impl Registry {
    pub fn new(state_dir: &Path) -> Registry {
        Registry {
            file: state_dir.join("instances.json"),
            changing: parking_lot::Mutex::new(()),
        }
    }

    pub fn load(&self) -> Result<Vec<Instance>, String> {
        match std::fs::read(&self.file) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", self.file.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(format!("{}: {e}", self.file.display())),
        }
    }

    pub fn save(&self, list: &[Instance]) -> Result<(), String> {
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(list).expect("serializes"))
            .and_then(|()| std::fs::rename(&tmp, &self.file))
            .map_err(|e| format!("{}: {e}", self.file.display()))
    }

    /// Applies `change` to the list and saves it.
    pub fn update<T>(&self, change: impl FnOnce(&mut Vec<Instance>) -> T) -> Result<T, String> {
        let _changing = self.changing.lock();
        let mut list = self.load()?;
        let out = change(&mut list);
        self.save(&list)?;
        Ok(out)
    }
}

/// Free space of the file system holding `path`, in MB.
pub fn free_mb(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64) >> 20)
}
