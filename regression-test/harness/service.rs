//! The service, started in-process on port 0 through `app::run` (the same
//! function `main` calls), and a small JSON client for it.

use ccr_syncer::app;
use ccr_syncer::config::{Config, StoreConfig};
use ccr_syncer::secret::Secret;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Service {
    pub addr: SocketAddr,
    http: reqwest::Client,
    token: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), app::AppError>>>,
    /// The SQLite store's folder, when the service owns it.
    _store_dir: Option<tempfile::TempDir>,
    /// The real binary, when the service runs as a process.
    child: Option<std::process::Child>,
}

/// A response: HTTP status and JSON body.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn error_msg(&self) -> &str {
        self.body["error_msg"].as_str().unwrap_or("")
    }

    /// Asserts a success envelope.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "expected success, got {}", self.text);
        assert_eq!(self.body["success"], Value::Bool(true), "{}", self.text);
        self.body
    }

    /// Asserts a failure envelope with this status whose message contains `needle`.
    #[track_caller]
    pub fn fails(&self, status: u16, needle: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.body["success"], Value::Bool(false), "{}", self.text);
        assert!(
            self.error_msg().contains(needle),
            "error_msg {:?} does not mention {needle:?}",
            self.error_msg()
        );
    }
}

pub fn sqlite_config(dir: &Path) -> Config {
    Config::with_store(StoreConfig::Sqlite {
        dir: dir.to_path_buf(),
    })
}

impl Service {
    pub async fn start(config: Config) -> Service {
        // CCR_TEST_LOG=debug (or any filter) shows the service's logs.
        if let Ok(filter) = std::env::var("CCR_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let token = config.auth_token.as_ref().map(|t| t.expose().to_string());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app::run(config, listener, async move {
            let _ = rx.await;
        }));
        let service = Service {
            addr,
            http: reqwest::Client::new(),
            token,
            shutdown: Some(tx),
            task: Some(task),
            _store_dir: None,
            child: None,
        };
        // The store opens before the API answers; wait until it does. A
        // service that stopped (its store did not open) says why.
        let mut service = service;
        for _ in 0..200 {
            if service.task.as_ref().is_some_and(|t| t.is_finished()) {
                let ended = service.task.take().unwrap().await;
                panic!("the service stopped as it started: {ended:?}");
            }
            let mut request = service.http.get(format!("http://{}/version", service.addr));
            if let Some(t) = &service.token {
                request = request.bearer_auth(t);
            }
            let answered = request.send().await.is_ok_and(|r| r.status() == 200);
            if answered {
                return service;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("service did not answer /version");
    }

    /// The real binary on a free port, with `config` (TOML) as its config
    /// file and its SQLite store and log in `dir`.
    pub async fn process(dir: &Path, config: &str) -> Service {
        Service::process_with_env(dir, config, &[]).await
    }

    /// [`Service::process`] with more environment variables (failpoints).
    pub async fn process_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Service {
        Service::process_as(dir, config, env, None).await
    }

    /// [`Service::process_with_env`] under group `gid` when given (a
    /// firewall rule can then cut this process alone).
    pub async fn process_as(
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
        gid: Option<u32>,
    ) -> Service {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let config_file = dir.join("syncer.toml");
        std::fs::write(&config_file, config).expect("write config");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ccr-syncer"));
        cmd.arg("--config")
            .arg(&config_file)
            .arg("--port")
            .arg(port.to_string())
            .arg("--db-dir")
            .arg(dir.join("db"))
            .arg("--log-dir")
            .arg(dir)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null());
        if let Some(g) = gid {
            std::os::unix::process::CommandExt::gid(&mut cmd, g);
        }
        let child = cmd.spawn().expect("start the ccr-syncer binary");
        let service = Service {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            http: reqwest::Client::new(),
            token: None,
            shutdown: None,
            task: None,
            _store_dir: None,
            child: Some(child),
        };
        for _ in 0..400 {
            if let Ok(r) = service.http.get(service.url("version")).send().await {
                if r.status().is_success() {
                    return service;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("ccr-syncer binary did not answer /version");
    }

    /// The process id of a service started with [`Service::process`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits up to `limit` for the process to end by itself (a failpoint).
    pub async fn wait_exit(&mut self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return true;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A service with a SQLite store in a folder of its own, removed with it.
    pub async fn fresh() -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut service = Service::start(sqlite_config(dir.path())).await;
        service._store_dir = Some(dir);
        service
    }

    pub fn with_token(config: Config, token: &str) -> Config {
        Config {
            auth_token: Some(Secret::new(token)),
            ..config
        }
    }

    fn url(&self, operation: &str) -> String {
        format!("http://{}/{operation}", self.addr)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        Self::reply(request).await
    }

    async fn reply(request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request reaches the service");
        let status = response.status().as_u16();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body, text }
    }

    pub async fn post(&self, operation: &str, body: Value) -> Reply {
        self.send(self.http.post(self.url(operation)).json(&body))
            .await
    }

    pub async fn post_raw(&self, operation: &str, body: impl Into<reqwest::Body>) -> Reply {
        self.send(
            self.http
                .post(self.url(operation))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn get(&self, operation: &str) -> Reply {
        self.send(self.http.get(self.url(operation))).await
    }

    /// A request without the configured token, with this Authorization header.
    pub async fn post_with_auth(&self, operation: &str, authorization: Option<&str>) -> Reply {
        let mut request = self.http.post(self.url(operation)).body("{}");
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        Self::reply(request).await
    }

    /// Stops the service the way SIGTERM does and waits until it has.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(std::time::Duration::from_secs(30), task)
                .await
                .expect("service stops within 30 s")
                .expect("service task")
                .expect("service ran cleanly");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
