//! Throwaway `mariadbd` servers for the tests.
//!
//! Each server has its own datadir, port and socket under a temporary folder.
//! One datadir is initialised per test process with `mariadb-install-db` and
//! copied for every server, which makes a start take about a second. The
//! shared servers ([`source`], [`dest`]) live for the whole test process: every
//! test uses its own databases on them. Servers are killed when the test
//! process exits (an `atexit` hook) and, should it be killed outright, by the
//! kernel (`PR_SET_PDEATHSIG`); a server a test starts for itself is also
//! stopped when its handle drops, even when the test fails.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How a server is configured.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub log_bin: bool,
    pub binlog_format: &'static str,
    pub binlog_row_image: &'static str,
    /// More `mariadbd` options, e.g. `--default-time-zone=+05:30`.
    pub extra: Vec<&'static str>,
    /// A network namespace to run in (listening on every address there).
    pub netns: Option<String>,
}

impl ServerOptions {
    /// A replication source: binary log on, ROW, FULL images.
    pub fn source() -> Self {
        ServerOptions {
            log_bin: true,
            binlog_format: "ROW",
            binlog_row_image: "FULL",
            extra: Vec::new(),
            netns: None,
        }
    }

    /// A destination: no binary log.
    pub fn plain() -> Self {
        ServerOptions {
            log_bin: false,
            binlog_format: "ROW",
            binlog_row_image: "FULL",
            extra: Vec::new(),
            netns: None,
        }
    }
}

pub struct MariaDb {
    pub port: u16,
    dir: PathBuf,
    pid: u32,
    id: u32,
    options: ServerOptions,
}

fn server_command(dir: &Path, port: u16, id: u32, options: &ServerOptions) -> Command {
    let mut cmd = match &options.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(find_program("mariadbd"));
            c
        }
        None => Command::new(find_program("mariadbd")),
    };
    cmd.arg("--no-defaults")
        .arg("--user=root")
        .arg(format!("--datadir={}", dir.display()))
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .arg(format!("--tmpdir={}", dir.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--server-id={id}"))
        .args([
            "--innodb-buffer-pool-size=64M",
            "--innodb-log-file-size=32M",
            "--innodb-flush-log-at-trx-commit=2",
            "--max-connections=500",
            "--character-set-server=utf8mb4",
            "--skip-name-resolve",
        ])
        .args(&options.extra)
        .args(options.netns.iter().map(|_| "--bind-address=0.0.0.0"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if options.log_bin {
        cmd.arg(format!("--log-bin={}", dir.join("binlog").display()))
            .arg(format!("--binlog-format={}", options.binlog_format))
            .arg(format!("--binlog-row-image={}", options.binlog_row_image));
    }
    cmd
}

/// Servers still running, killed at process exit.
pub(crate) static RUNNING: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());
static SERVER_ID: AtomicU32 = AtomicU32::new(1);

pub(crate) fn work_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ccr-syncer-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test work folder");
        extern "C" fn cleanup() {
            for (pid, dir) in RUNNING.lock().drain(..) {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                let _ = std::fs::remove_dir_all(dir);
            }
            let _ = std::fs::remove_dir_all(
                std::env::temp_dir().join(format!("ccr-syncer-test-{}", std::process::id())),
            );
        }
        unsafe { libc::atexit(cleanup) };
        dir
    })
}

pub(crate) fn find_program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{name} not found: these tests start real MariaDB servers. Install MariaDB \
         (apt-get install mariadb-server mariadb-client) and run them again"
    );
}

/// The initialised datadir every server starts from.
pub(crate) fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = work_root().join("template");
        let out = Command::new(find_program("mariadb-install-db"))
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .arg(format!("--datadir={}", dir.display()))
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// Spawns from a thread that lives as long as the process, so that the
/// parent-death signal fires when the process dies, not when a test thread ends.
pub(crate) fn spawn_tied_to_process(mut command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(command.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("spawner thread answers")
}

impl MariaDb {
    pub fn start(options: ServerOptions) -> MariaDb {
        let root = work_root();
        let template = template();
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let id = SERVER_ID.fetch_add(1, Ordering::Relaxed);
            let dir = root.join(format!("server-{id}"));
            let status = Command::new("cp")
                .arg("-a")
                .arg(template)
                .arg(&dir)
                .status()
                .expect("copy the template datadir");
            assert!(status.success(), "copying the template datadir failed");
            let port = free_port();
            let cmd = server_command(&dir, port, id, &options);
            let mut child = spawn_tied_to_process(cmd).expect("start mariadbd");
            RUNNING.lock().push((child.id(), dir.clone()));
            let server = MariaDb {
                port,
                dir: dir.clone(),
                pid: child.id(),
                id,
                options: options.clone(),
            };
            match server.wait_ready(&mut child) {
                Ok(()) => {
                    server.admin(
                        "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; \
                         GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION",
                    );
                    // The child is reaped by `kill`; keep no handle to it.
                    std::mem::forget(child);
                    return server;
                }
                Err(e) => {
                    last_error = e;
                    drop(server);
                }
            }
        }
        panic!("mariadbd did not start: {last_error}");
    }

    /// Kills the server outright (SIGKILL, as a crash) and starts it again
    /// on the same datadir and port; returns once it answers.
    pub fn crash_and_restart(&mut self) {
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        RUNNING.lock().retain(|(pid, _)| *pid != self.pid);
        // Reap it (it is this process's child): its port and files are free after.
        unsafe { libc::waitpid(self.pid as i32, std::ptr::null_mut(), 0) };
        let cmd = server_command(&self.dir, self.port, self.id, &self.options);
        let mut child = spawn_tied_to_process(cmd).expect("restart mariadbd");
        self.pid = child.id();
        RUNNING.lock().push((child.id(), self.dir.clone()));
        self.wait_ready(&mut child).expect("mariadbd restarts");
        std::mem::forget(child);
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }

    fn wait_ready(&self, child: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                return Err(format!("mariadbd exited with {status}; error log:\n{log}"));
            }
            if self.run_sql("SELECT 1").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("mariadbd not ready after 60 s".into())
    }

    fn run_sql(&self, sql: &str) -> Result<String, String> {
        sql_on_socket(&self.socket(), sql)
    }

    /// Runs SQL as root; panics with the server's message if it fails.
    pub fn admin(&self, sql: &str) -> String {
        self.run_sql(sql)
            .unwrap_or_else(|e| panic!("SQL failed on port {}: {sql}\n{e}", self.port))
    }
}

/// Runs SQL as root through a server's socket: its output, or its error.
pub(crate) fn sql_on_socket(socket: &Path, sql: &str) -> Result<String, String> {
    let out = Command::new(find_program("mariadb"))
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        RUNNING.lock().retain(|(pid, _)| *pid != self.pid);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shared source (binary log on, ROW). Tests use their own databases on it.
pub fn source() -> &'static MariaDb {
    static SOURCE: OnceLock<MariaDb> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let s = MariaDb::start(ServerOptions::source());
        create_users(&s);
        s
    })
}

/// The shared destination (no binary log).
pub fn dest() -> &'static MariaDb {
    static DEST: OnceLock<MariaDb> = OnceLock::new();
    DEST.get_or_init(|| {
        let s = MariaDb::start(ServerOptions::plain());
        create_users(&s);
        s
    })
}

pub const SRC_USER: &str = "ccr_src";
pub const SRC_PASSWORD: &str = "Src-Pa55word";
/// Like SRC_USER but without RELOAD: full syncs copy over one connection.
pub const SRC_USER_NO_RELOAD: &str = "ccr_src_noreload";
pub const DEST_USER: &str = "ccr_dest";
pub const DEST_PASSWORD: &str = "Dest-Pa55word";

/// The users a job needs, as an operator would create them (RELOAD lets a
/// full sync copy in parallel; the user without it is the least-privileged).
fn create_users(s: &MariaDb) {
    s.admin(&format!(
        "CREATE USER '{SRC_USER}'@'%' IDENTIFIED BY '{SRC_PASSWORD}'; \
         GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD, SELECT, SHOW VIEW ON *.* TO '{SRC_USER}'@'%'; \
         CREATE USER '{SRC_USER_NO_RELOAD}'@'%' IDENTIFIED BY '{SRC_PASSWORD}'; \
         GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, SHOW VIEW ON *.* TO '{SRC_USER_NO_RELOAD}'@'%'; \
         CREATE USER '{DEST_USER}'@'%' IDENTIFIED BY '{DEST_PASSWORD}'; \
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE VIEW, SHOW VIEW, PROCESS ON *.* TO '{DEST_USER}'@'%'"
    ));
}

/// Creates the job users on a server a test started for itself.
pub fn with_users(s: MariaDb) -> MariaDb {
    create_users(&s);
    s
}

/// A name no other test in this process uses: `prefix_N`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}", N.fetch_add(1, Ordering::Relaxed))
}
