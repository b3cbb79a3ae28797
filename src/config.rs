//! The service's configuration: one validated struct, built from the config
//! file (`conf/syncer.toml` documents every setting and its default) with the
//! command-line flags on top. Nothing else reads the environment or the file.

use crate::secret::Secret;
use crate::tls::{TlsMode, TlsOptions};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "conf/syncer.toml";
/// Environment variable for the MySQL meta store's password, so it never shows in `ps`.
pub const DB_PASSWORD_ENV: &str = "CCR_SYNCER_DB_PASSWORD";
/// Environment variable for the API bearer token.
pub const AUTH_TOKEN_ENV: &str = "CCR_SYNCER_AUTH_TOKEN";

#[derive(Debug, Parser)]
#[command(
    name = "ccr-syncer",
    version,
    about = "Cross-cluster replication for MySQL-protocol databases"
)]
pub struct Cli {
    /// Config file; a missing file is an error unless it is the default one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address the HTTP API listens on [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
    /// Port the HTTP API listens on [default: 9190].
    #[arg(long)]
    pub port: Option<u16>,
    /// Meta store backend [default: sqlite].
    #[arg(long, value_parser = ["sqlite", "mysql"])]
    pub db_type: Option<String>,
    /// Folder of the SQLite meta store file `ccr.db` [default: db].
    #[arg(long)]
    pub db_dir: Option<PathBuf>,
    /// MySQL meta store host [default: 127.0.0.1].
    #[arg(long)]
    pub db_host: Option<String>,
    /// MySQL meta store port [default: 3306].
    #[arg(long)]
    pub db_port: Option<u16>,
    /// MySQL meta store user [default: root].
    #[arg(long)]
    pub db_user: Option<String>,
    /// MySQL meta store password; prefer the environment variable CCR_SYNCER_DB_PASSWORD.
    #[arg(long, env = DB_PASSWORD_ENV, hide_env_values = true)]
    pub db_password: Option<String>,
    /// MySQL meta store database [default: ccr].
    #[arg(long)]
    pub db_name: Option<String>,
    /// trace, debug, info, warn or error [default: info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Folder for `ccr_syncer.log`; without it logs go to standard error.
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// File the process id is written to while the service runs.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// TLS to the MySQL meta store: disabled, preferred, required, verify_ca
    /// or verify_identity [default: preferred].
    #[arg(long)]
    pub db_tls_mode: Option<String>,
    /// CA file (PEM) the MySQL meta store's certificate is verified against.
    #[arg(long)]
    pub db_tls_ca: Option<PathBuf>,
    /// Certificate (PEM) of the API: with --tls-key the API answers HTTPS only.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of the API's certificate.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Key file (32 random bytes) the store's passwords are encrypted with;
    /// `ccr-syncer secret-key generate PATH` writes one.
    #[arg(long)]
    pub secret_key_file: Option<PathBuf>,
    /// The key the store was encrypted with before --secret-key-file: the
    /// passwords are decrypted with it and encrypted again with the new key.
    #[arg(long)]
    pub previous_secret_key_file: Option<PathBuf>,
    /// This syncer's id in its group (default: the API's host:port).
    #[arg(long)]
    pub member_id: Option<String>,
    /// The API address the group's other members reach this one at
    /// (default: http(s)://host:port of the API).
    #[arg(long)]
    pub advertise_address: Option<String>,
    /// normal (owns jobs) or learner (serves the API, owns no jobs), when
    /// this member joins a group for the first time.
    #[arg(long, value_parser = ["normal", "learner"])]
    pub member_type: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// A command-line client of a running service: create, list, status,
    /// progress, pause, resume, skip, resync, verify, repair, delete, watch, stat.
    Ctl(Box<crate::ctl::CtlArgs>),
    /// The Galera minder: dbserver, arbitrator, notify, command, config
    /// (see doc/minder.md).
    Minder(Box<crate::minder::MinderArgs>),
    /// The node agent of one machine, driven by the cluster manager
    /// (`POST /`, seed 000; token from CCR_AGENT_TOKEN).
    Agent(Box<crate::agent::AgentArgs>),
    /// Manage the key file that encrypts the store's passwords.
    SecretKey {
        #[command(subcommand)]
        action: SecretKeyAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretKeyAction {
    /// Writes 32 random bytes to PATH (mode 0600); refuses to overwrite a file.
    Generate { path: PathBuf },
}

/// The config file's shape. Every field is optional; unknown keys are errors,
/// so a misspelt setting is reported instead of ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<String>,
    port: Option<u16>,
    auth_token: Option<String>,
    log_level: Option<String>,
    log_dir: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    connect_timeout_secs: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    secret_key_file: Option<PathBuf>,
    previous_secret_key_file: Option<PathBuf>,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    store: FileStore,
    #[serde(default)]
    full_sync: FileFullSync,
    #[serde(default)]
    incremental: FileIncremental,
    #[serde(default)]
    verify: FileVerify,
    #[serde(default)]
    group: FileGroup,
    #[serde(default)]
    cluster: FileCluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    agent_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup {
    member_id: Option<String>,
    advertise_address: Option<String>,
    member_type: Option<String>,
    lease_secs: Option<u64>,
    heartbeat_ms: Option<u64>,
    peer_ca: Option<PathBuf>,
}

/// How this syncer takes part in its group (`[group]`).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// Unset: the API's host:port (with the machine's name for a wildcard
    /// address).
    pub member_id: Option<String>,
    /// Unset: http(s)://host:port of the API.
    pub advertise_address: Option<String>,
    /// 2 normal, 1 learner.
    pub member_type: i64,
    pub lease: Duration,
    pub heartbeat: Duration,
    /// The CA that signed the other members' API certificates (forwarding
    /// to a member serving HTTPS); unset: the certificates in `tls_cert`.
    pub peer_ca: Option<PathBuf>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            member_id: None,
            advertise_address: None,
            member_type: 2,
            lease: Duration::from_secs(8),
            heartbeat: Duration::from_secs(1),
            peer_ca: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    default_mode: Option<String>,
    minimum_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIncremental {
    apply_connections: Option<usize>,
    stall_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVerify {
    chunk_rows: Option<u64>,
    rows_per_second: Option<u64>,
    snapshot_secs: Option<u64>,
    wait_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFullSync {
    connections: Option<usize>,
    chunk_rows: Option<u64>,
    statement_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStore {
    #[serde(rename = "type")]
    kind: Option<String>,
    dir: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    database: Option<String>,
    tls_mode: Option<String>,
    tls_ca: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub enum StoreConfig {
    Sqlite {
        dir: PathBuf,
    },
    Mysql {
        host: String,
        port: u16,
        user: String,
        password: Secret,
        database: String,
        tls: TlsOptions,
    },
}

/// How jobs' connections to sources and destinations are secured when
/// `create_ccr` names no `tls`, and the weakest mode a job may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsPolicy {
    pub default_mode: TlsMode,
    pub minimum_mode: TlsMode,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        TlsPolicy {
            default_mode: TlsMode::Preferred,
            minimum_mode: TlsMode::Disabled,
        }
    }
}

impl TlsPolicy {
    /// Refuses a mode below the minimum; `field` names it in the message.
    pub fn check(&self, field: &str, mode: TlsMode) -> Result<(), String> {
        if mode < self.minimum_mode {
            return Err(format!(
                "{field} {mode} is below this service's tls.minimum_mode {}; use {} or stricter",
                self.minimum_mode, self.minimum_mode
            ));
        }
        Ok(())
    }
}

/// The API's certificate and key: the API then answers HTTPS only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// When set, every API call must carry `Authorization: Bearer <token>`.
    pub auth_token: Option<Secret>,
    pub log_level: String,
    pub log_dir: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// How long a connection attempt to a source or destination may take.
    pub connect_timeout: Duration,
    pub store: StoreConfig,
    pub full_sync: FullSyncSettings,
    /// Destination connections an incremental job applies on side by side.
    pub apply_connections: usize,
    /// A running job applying nothing this long while behind is stalled.
    pub stall_secs: u64,
    pub verify: VerifySettings,
    /// HTTPS on the API, when set.
    pub api_tls: Option<ApiTls>,
    /// Jobs' TLS default and minimum.
    pub tls: TlsPolicy,
    /// The key the store's passwords are encrypted with.
    pub secret_key_file: Option<PathBuf>,
    /// The key they were encrypted with before (key rotation).
    pub previous_secret_key_file: Option<PathBuf>,
    pub group: GroupConfig,
    /// The port the cluster manager reaches a machine's node agent on,
    /// unless `create_machine` names another (`[cluster] agent_port`).
    pub cluster_agent_port: u16,
    /// `CCR_SYNCER_FAILPOINT=before_checkpoint:N`, for tests only: the
    /// process aborts at the Nth group of an incremental sync, after its
    /// statements ran, before its checkpoint and COMMIT.
    pub failpoint: Option<u64>,
}

/// The environment variable of [`Config::failpoint`].
pub const FAILPOINT_ENV: &str = "CCR_SYNCER_FAILPOINT";

/// mysql_async keeps up to 128 I/O buffers of up to 4 MiB each for reuse;
/// a full sync's megabyte-sized INSERTs would keep hundreds of MB pooled.
/// Buffers larger than this are freed instead (an operator's own setting of
/// the variable wins).
const MYSQL_BUFFER_SIZE_CAP: &str = "262144";

/// Caps the driver's pooled I/O buffers (see [`MYSQL_BUFFER_SIZE_CAP`]).
/// Call before any thread exists, so nothing reads the environment
/// concurrently.
pub fn cap_driver_buffers() {
    if std::env::var_os("MYSQL_ASYNC_BUFFER_SIZE_CAP").is_none() {
        std::env::set_var("MYSQL_ASYNC_BUFFER_SIZE_CAP", MYSQL_BUFFER_SIZE_CAP);
    }
}

/// The environment variable with the password of the minder's dbserver
/// account for its node.
pub const MINDER_MYSQL_PASSWORD_ENV: &str = "MINDER_MYSQL_PASSWORD";
/// The token the cluster manager and its node agents share.
pub const AGENT_TOKEN_ENV: &str = "CCR_AGENT_TOKEN";

/// Where the cluster manager aborts (tests of its crash safety):
/// `before:STEP`, `during:STEP` or `after:STEP`.
pub const CLUSTER_FAILPOINT_ENV: &str = "CCR_SYNCER_CM_FAILPOINT";

pub fn cluster_failpoint() -> Option<String> {
    std::env::var(CLUSTER_FAILPOINT_ENV)
        .ok()
        .filter(|f| !f.is_empty())
}

/// The agents' token, when set (and not empty).
pub fn agent_token() -> Option<Secret> {
    std::env::var(AGENT_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new)
}

/// The minder dbserver's password for its node (empty when unset).
pub fn minder_mysql_password() -> Secret {
    Secret::new(std::env::var(MINDER_MYSQL_PASSWORD_ENV).unwrap_or_default())
}

fn failpoint_from_env() -> Option<u64> {
    let v = std::env::var(FAILPOINT_ENV).ok()?;
    v.strip_prefix("before_checkpoint:")?.parse().ok()
}

/// How verifications (`/verify`) and repairs (`/repair`) read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifySettings {
    /// Source rows per compared chunk (and per page of a narrowed chunk).
    pub chunk_rows: u64,
    /// At most this many source rows compared per second; 0: no limit.
    pub rows_per_second: u64,
    /// A pair of snapshots is used this long, then a new one is taken.
    pub snapshot_secs: u64,
    /// How long a try waits for the stream to reach the source snapshot's
    /// position before trying again.
    pub wait_secs: u64,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            chunk_rows: 10_000,
            rows_per_second: 100_000,
            snapshot_secs: 5,
            wait_secs: 60,
        }
    }
}

/// Default of `[incremental] apply_connections`.
pub const APPLY_CONNECTIONS: usize = 4;

/// How full syncs copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FullSyncSettings {
    /// Snapshot connections (and destination connections) copying at once.
    pub connections: usize,
    /// Rows per chunk: the unit of parallel work and of resumption.
    pub chunk_rows: u64,
    /// Largest INSERT statement sent, in bytes (also capped by the
    /// destination's max_allowed_packet).
    pub statement_bytes: usize,
}

impl Default for FullSyncSettings {
    fn default() -> Self {
        FullSyncSettings {
            connections: 4,
            chunk_rows: 50_000,
            statement_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the config file, then the flags.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let (path, required) = match &cli.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let file = read_file(&path, required)?;
        let token_env = std::env::var(AUTH_TOKEN_ENV).ok();
        let mut config = Self::merge(file, cli, token_env)?;
        config.failpoint = failpoint_from_env();
        Ok(config)
    }

    /// Settings for tests and embedding: defaults with the given store.
    pub fn with_store(store: StoreConfig) -> Config {
        Config {
            host: "127.0.0.1".into(),
            port: 0,
            auth_token: None,
            log_level: "info".into(),
            log_dir: None,
            pid_file: None,
            connect_timeout: Duration::from_secs(5),
            store,
            full_sync: FullSyncSettings::default(),
            apply_connections: APPLY_CONNECTIONS,
            stall_secs: 60,
            verify: VerifySettings::default(),
            api_tls: None,
            tls: TlsPolicy::default(),
            secret_key_file: None,
            previous_secret_key_file: None,
            group: GroupConfig::default(),
            cluster_agent_port: 9998,
            failpoint: None,
        }
    }

    fn merge(
        file: FileConfig,
        cli: &Cli,
        token_env: Option<String>,
    ) -> Result<Config, ConfigError> {
        let minimum_mode = match &file.tls.minimum_mode {
            Some(m) => mode_setting("tls.minimum_mode", m)?,
            None => TlsMode::Disabled,
        };
        let kind = cli
            .db_type
            .clone()
            .or(file.store.kind)
            .unwrap_or_else(|| "sqlite".into());
        let store = match kind.as_str() {
            "sqlite" => StoreConfig::Sqlite {
                dir: cli
                    .db_dir
                    .clone()
                    .or(file.store.dir)
                    .unwrap_or_else(|| "db".into()),
            },
            "mysql" => StoreConfig::Mysql {
                host: cli
                    .db_host
                    .clone()
                    .or(file.store.host)
                    .unwrap_or_else(|| "127.0.0.1".into()),
                port: cli.db_port.or(file.store.port).unwrap_or(3306),
                user: cli
                    .db_user
                    .clone()
                    .or(file.store.user)
                    .unwrap_or_else(|| "root".into()),
                password: Secret::new(
                    cli.db_password
                        .clone()
                        .or(file.store.password)
                        .unwrap_or_default(),
                ),
                database: cli
                    .db_name
                    .clone()
                    .or(file.store.database)
                    .unwrap_or_else(|| "ccr".into()),
                tls: {
                    let mode = match cli.db_tls_mode.clone().or(file.store.tls_mode) {
                        Some(m) => mode_setting("store.tls_mode (--db-tls-mode)", &m)?,
                        // Unset: preferred, or the minimum when stricter.
                        None => TlsMode::Preferred.max(minimum_mode),
                    };
                    if mode < minimum_mode {
                        return Err(ConfigError::Invalid(format!(
                            "store.tls_mode (--db-tls-mode) {mode} is below tls.minimum_mode {minimum_mode}"
                        )));
                    }
                    let tls = TlsOptions {
                        mode,
                        ca: cli.db_tls_ca.clone().or(file.store.tls_ca),
                        ..TlsOptions::default()
                    };
                    tls.validate("store.tls").map_err(ConfigError::Invalid)?;
                    tls
                },
            },
            other => {
                return Err(ConfigError::Invalid(format!(
                    "store type {other:?} is not supported; use \"sqlite\" or \"mysql\""
                )))
            }
        };
        let log_level = cli
            .log_level
            .clone()
            .or(file.log_level)
            .unwrap_or_else(|| "info".into());
        if !["trace", "debug", "info", "warn", "error"].contains(&log_level.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "log_level {log_level:?} is not one of trace, debug, info, warn, error"
            )));
        }
        let connect_timeout_secs = file.connect_timeout_secs.unwrap_or(5);
        if connect_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "connect_timeout_secs must be at least 1".into(),
            ));
        }
        let defaults = FullSyncSettings::default();
        let full_sync = FullSyncSettings {
            connections: file.full_sync.connections.unwrap_or(defaults.connections),
            chunk_rows: file.full_sync.chunk_rows.unwrap_or(defaults.chunk_rows),
            statement_bytes: file
                .full_sync
                .statement_bytes
                .unwrap_or(defaults.statement_bytes),
        };
        if !(1..=64).contains(&full_sync.connections) {
            return Err(ConfigError::Invalid(
                "full_sync.connections must be between 1 and 64".into(),
            ));
        }
        if full_sync.chunk_rows == 0 {
            return Err(ConfigError::Invalid(
                "full_sync.chunk_rows must be at least 1".into(),
            ));
        }
        let apply_connections = file
            .incremental
            .apply_connections
            .unwrap_or(APPLY_CONNECTIONS);
        if !(1..=64).contains(&apply_connections) {
            return Err(ConfigError::Invalid(
                "incremental.apply_connections must be between 1 and 64".into(),
            ));
        }
        let verify = {
            let d = VerifySettings::default();
            let v = &file.verify;
            VerifySettings {
                chunk_rows: v.chunk_rows.unwrap_or(d.chunk_rows),
                rows_per_second: v.rows_per_second.unwrap_or(d.rows_per_second),
                snapshot_secs: v.snapshot_secs.unwrap_or(d.snapshot_secs),
                wait_secs: v.wait_secs.unwrap_or(d.wait_secs),
            }
        };
        for (key, value, range) in [
            ("chunk_rows", verify.chunk_rows, 10..=1_000_000),
            ("snapshot_secs", verify.snapshot_secs, 1..=3600),
            ("wait_secs", verify.wait_secs, 1..=3600),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError::Invalid(format!(
                    "verify.{key} must be between {} and {}",
                    range.start(),
                    range.end()
                )));
            }
        }
        let stall_secs = file.incremental.stall_secs.unwrap_or(60);
        if !(1..=86_400).contains(&stall_secs) {
            return Err(ConfigError::Invalid(
                "incremental.stall_secs must be between 1 and 86400".into(),
            ));
        }
        if full_sync.statement_bytes < 4096 {
            return Err(ConfigError::Invalid(
                "full_sync.statement_bytes must be at least 4096".into(),
            ));
        }
        let tls = TlsPolicy {
            // Unset: preferred, or the minimum when that is stricter.
            default_mode: match &file.tls.default_mode {
                Some(m) => mode_setting("tls.default_mode", m)?,
                None => TlsMode::Preferred.max(minimum_mode),
            },
            minimum_mode,
        };
        tls.check("tls.default_mode", tls.default_mode)
            .map_err(ConfigError::Invalid)?;
        let api_tls = match (
            cli.tls_cert.clone().or(file.tls_cert),
            cli.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(ApiTls { cert, key }),
            (None, None) => None,
            _ => return Err(ConfigError::Invalid(
                "tls_cert (--tls-cert) and tls_key (--tls-key) go together: give both or neither"
                    .into(),
            )),
        };
        let secret_key_file = cli.secret_key_file.clone().or(file.secret_key_file);
        let previous_secret_key_file = cli
            .previous_secret_key_file
            .clone()
            .or(file.previous_secret_key_file);
        if previous_secret_key_file.is_some() && secret_key_file.is_none() {
            return Err(ConfigError::Invalid(
                "previous_secret_key_file needs secret_key_file: the key to encrypt with from now on"
                    .into(),
            ));
        }
        let group = {
            let defaults = GroupConfig::default();
            let lease_secs = file.group.lease_secs.unwrap_or(defaults.lease.as_secs());
            if !(2..=300).contains(&lease_secs) {
                return Err(ConfigError::Invalid(
                    "group.lease_secs must be between 2 and 300".into(),
                ));
            }
            let heartbeat_ms = file
                .group
                .heartbeat_ms
                .unwrap_or(defaults.heartbeat.as_millis() as u64);
            if heartbeat_ms < 100 || heartbeat_ms * 3 > lease_secs * 1000 {
                return Err(ConfigError::Invalid(format!(
                    "group.heartbeat_ms must be at least 100 and at most a third of the lease \
                     ({} ms)",
                    lease_secs * 1000 / 3
                )));
            }
            let member_type = match cli
                .member_type
                .clone()
                .or(file.group.member_type)
                .as_deref()
            {
                None | Some("normal") => 2,
                Some("learner") => 1,
                Some(other) => {
                    return Err(ConfigError::Invalid(format!(
                        "group.member_type {other:?} is not \"normal\" or \"learner\""
                    )))
                }
            };
            let member_id = cli.member_id.clone().or(file.group.member_id);
            if member_id
                .as_deref()
                .is_some_and(|m| m.trim().is_empty() || m.len() > 255)
            {
                return Err(ConfigError::Invalid(
                    "group.member_id (--member-id) must be 1 to 255 characters".into(),
                ));
            }
            GroupConfig {
                member_id,
                advertise_address: cli
                    .advertise_address
                    .clone()
                    .or(file.group.advertise_address),
                member_type,
                lease: Duration::from_secs(lease_secs),
                heartbeat: Duration::from_millis(heartbeat_ms),
                peer_ca: file.group.peer_ca,
            }
        };
        let auth_token = token_env
            .or(file.auth_token)
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        Ok(Config {
            host: cli
                .host
                .clone()
                .or(file.host)
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: cli.port.or(file.port).unwrap_or(9190),
            auth_token,
            log_level,
            log_dir: cli.log_dir.clone().or(file.log_dir),
            pid_file: cli.pid_file.clone().or(file.pid_file),
            connect_timeout: Duration::from_secs(connect_timeout_secs),
            store,
            full_sync,
            apply_connections,
            stall_secs,
            verify,
            api_tls,
            tls,
            secret_key_file,
            previous_secret_key_file,
            group,
            cluster_agent_port: match file.cluster.agent_port {
                Some(0) => {
                    return Err(ConfigError::Invalid(
                        "cluster.agent_port must be between 1 and 65535".into(),
                    ))
                }
                Some(p) => p,
                None => 9998,
            },
            failpoint: None,
        })
    }
}

fn mode_setting(field: &str, text: &str) -> Result<TlsMode, ConfigError> {
    TlsMode::parse(text).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "{field} {text:?} is not one of disabled, preferred, required, verify_ca, verify_identity"
        ))
    })
}

fn read_file(path: &Path, required: bool) -> Result<FileConfig, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(FileConfig::default())
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
