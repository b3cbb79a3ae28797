//! A real S3 server on loopback for the backup tests: `s3s-fs` (pinned;
//! `shell/test.sh` installs it), serving a directory, with fixed test
//! credentials. One is shared by the tests that only store; a test that
//! kills the server starts its own.

use ccr_syncer::secret::Secret;
use ccr_syncer::storage::Credentials;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "ccr-test-access";
pub const SECRET_KEY: &str = "ccr-test-secret-key-never-logged";

pub fn credentials() -> Option<Credentials> {
    Some(Credentials {
        access_key: ACCESS_KEY.into(),
        secret_key: Secret::new(SECRET_KEY),
    })
}

fn program() -> PathBuf {
    if let Ok(p) = std::env::var("CCR_S3S_FS") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo = Path::new(&home).join(".cargo/bin/s3s-fs");
    if cargo.exists() {
        cargo
    } else {
        PathBuf::from("s3s-fs")
    }
}

pub struct S3 {
    pub port: u16,
    pub root: PathBuf,
    child: Option<Child>,
}

impl S3 {
    /// Starts a server over `root` with the bucket `bucket`.
    pub fn start(root: &Path, bucket: &str) -> S3 {
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let port = crate::cluster::free_port("127.0.0.1");
        let mut s = S3 {
            port,
            root: root.to_path_buf(),
            child: None,
        };
        s.restart();
        s
    }

    /// Starts it (again) on the same port and directory.
    pub fn restart(&mut self) {
        let child = Command::new(program())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("s3s-fs ({}): {e}", program().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint=http://127.0.0.1:{}&region=us-east-1",
            self.port
        )
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill();
    }
}
