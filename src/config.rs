//! The service's configuration: one validated struct, built from the config
//! file (`conf/syncer.toml` documents every setting and its default) with the
//! command-line flags on top. Nothing else reads the environment or the file.

use crate::secret::Secret;
pub use crate::sync::full::FullSyncSettings;
pub use crate::sync::verify::VerifySettings;
use crate::tls::{TlsMode, TlsOptions};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "conf/syncer.toml";
/// Environment variable for the MySQL meta store's password, so it never shows in `ps`.
pub const DB_PASSWORD_ENV: &str = "CCR_SYNCER_DB_PASSWORD";
/// Environment variable for the API bearer token.
pub const AUTH_TOKEN_ENV: &str = "CCR_SYNCER_AUTH_TOKEN";

/// The service's own flags (`ccr-syncer [FLAGS]`); the other roles'
/// command lines live with them (`main.rs` lists them).
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// Config file; a missing file is an error unless it is the default one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The backup storage: s3://BUCKET/PREFIX?endpoint=URL&region=R or
    /// file:///PATH (`[backup] storage`; S3 credentials from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    #[arg(long)]
    pub backup_storage: Option<String>,
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
    #[serde(default)]
    backup: FileBackup,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackup {
    storage: Option<String>,
    full_every: Option<String>,
    archive_lag_s: Option<u64>,
    keep_days: Option<u64>,
    keep_full: Option<u64>,
    object_mb: Option<u64>,
}

/// Backups and the binlog archive (`[backup]`).
#[derive(Clone, Debug)]
pub struct BackupSettings {
    /// The backup storage's URL (`storage`, `--backup-storage`): none, no
    /// backups.
    pub storage: Option<String>,
    /// S3 credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    pub s3: Option<crate::storage::Credentials>,
    /// A cluster backup of every cluster this often (`full_every`, off by
    /// default).
    pub full_every: Option<Duration>,
    /// How far the archive may be behind a primary (`archive_lag_s`).
    pub archive_lag: Duration,
    /// Retention: backups older than this many days go (`keep_days`) …
    pub keep_days: Option<u64>,
    /// … but at least this many are kept (`keep_full`).
    pub keep_full: Option<u64>,
    /// A backup object's size at most (`object_mb`).
    pub object_bytes: u64,
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            storage: None,
            s3: None,
            full_every: None,
            archive_lag: Duration::from_secs(5),
            keep_days: None,
            keep_full: None,
            object_bytes: 4 << 30,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    agent_port: Option<u16>,
    step_retry_s: Option<u64>,
    stall_s: Option<u64>,
    probe_ms: Option<u64>,
    failover_after_s: Option<u64>,
    relay_wait_s: Option<u64>,
    failover_block_s: Option<u64>,
    cutover_lag_ms: Option<u64>,
    cutover_max_ms: Option<u64>,
    reverse_keep_s: Option<u64>,
}

/// The cluster manager's settings (`[cluster]`), and what the environment
/// gives it once at start.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// The port the manager reaches a machine's node agent on, unless
    /// `create_machine` names another.
    pub agent_port: u16,
    /// How long a step that fails transiently (an agent or instance that
    /// does not answer) is retried before the job fails and undoes.
    pub step_retry: Duration,
    /// An agent operation that reports no progress this long fails.
    pub stall: Duration,
    /// The agents' token (`CCR_AGENT_TOKEN`).
    pub agent_token: Option<Secret>,
    /// Tests only (`CCR_SYNCER_CM_FAILPOINT`): `before:STEP`,
    /// `during:STEP` or `after:STEP`, where the manager aborts.
    pub failpoint: Option<String>,
    /// Tests in-process only: at the failpoint the manager stops driving
    /// every job, as if it had died, instead of aborting the process.
    pub failpoint_halts: bool,
    /// How often every shard's nodes are probed (`probe_ms`).
    pub probe: Duration,
    /// A primary failing this long is declared failed
    /// (`failover_after_s`).
    pub failover_after: Duration,
    /// How long a candidate may take to apply its relay log
    /// (`relay_wait_s`).
    pub relay_wait: Duration,
    /// No second automatic failover of a shard within this, unless
    /// acknowledged (`failover_block_s`).
    pub failover_block: Duration,
    /// `[backup]`.
    pub backup: BackupSettings,
    /// A table move's cutover starts only when its stream lags less than
    /// this (`cutover_lag_ms`).
    pub cutover_lag: Duration,
    /// The longest a cutover holds the table's writes before it backs out
    /// (`cutover_max_ms`).
    pub cutover_max: Duration,
    /// How long after its switch a move keeps the reverse stream (and may
    /// be cancelled back) before it completes (`reverse_keep_s`).
    pub reverse_keep: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            agent_port: 9998,
            step_retry: Duration::from_secs(300),
            stall: Duration::from_secs(600),
            agent_token: None,
            failpoint: None,
            failpoint_halts: false,
            probe: Duration::from_millis(1000),
            failover_after: Duration::from_secs(5),
            relay_wait: Duration::from_secs(30),
            failover_block: Duration::from_secs(600),
            backup: BackupSettings::default(),
            cutover_lag: Duration::from_millis(500),
            cutover_max: Duration::from_millis(2000),
            reverse_keep: Duration::from_secs(30),
        }
    }
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
    /// The cluster manager's (`[cluster]`).
    pub cluster: ClusterSettings,
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

/// Caps glibc's malloc arenas at two: with one arena per thread that
/// allocates (tokio's workers, the blocking pool), freed row buffers stay
/// spread over many arenas and a long transaction's peak RSS grows with
/// the number of threads, not with what is held. Call before any thread
/// exists.
pub fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) with a documented parameter, before any thread.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

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

/// The environment variable of the agent's failpoint (tests only).
pub const AGENT_FAILPOINT_ENV: &str = "CCR_AGENT_FAILPOINT";

/// `CCR_AGENT_FAILPOINT=hold_ms:N`: how long each agent operation holds
/// its instance before it ends (tests only; zero without it).
pub fn agent_hold() -> Duration {
    std::env::var(AGENT_FAILPOINT_ENV)
        .ok()
        .and_then(|v| v.strip_prefix("hold_ms:")?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis)
}

/// The agents' token, when set (and not empty).
pub fn agent_token() -> Option<Secret> {
    std::env::var(AGENT_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Secret::new)
}

/// S3 credentials for the backup storage, from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` (none when unset).
pub fn s3_credentials() -> Option<crate::storage::Credentials> {
    let access_key = std::env::var("AWS_ACCESS_KEY_ID")
        .ok()
        .filter(|k| !k.is_empty())?;
    Some(crate::storage::Credentials {
        access_key,
        secret_key: Secret::new(std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default()),
    })
}

/// The minder dbserver's password for its node (empty when unset).
pub fn minder_mysql_password() -> Secret {
    Secret::new(std::env::var(MINDER_MYSQL_PASSWORD_ENV).unwrap_or_default())
}

fn failpoint_from_env() -> Option<u64> {
    let v = std::env::var(FAILPOINT_ENV).ok()?;
    v.strip_prefix("before_checkpoint:")?.parse().ok()
}

/// Default of `[incremental] apply_connections`.
pub const APPLY_CONNECTIONS: usize = 4;

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
    pub fn load(cli: &ServiceArgs) -> Result<Config, ConfigError> {
        let (path, required) = match &cli.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let file = read_file(&path, required)?;
        let token_env = std::env::var(AUTH_TOKEN_ENV).ok();
        let mut config = Self::merge(file, cli, token_env)?;
        config.failpoint = failpoint_from_env();
        config.cluster.agent_token = agent_token();
        config.cluster.failpoint = cluster_failpoint();
        config.cluster.backup.s3 = s3_credentials();
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
            cluster: ClusterSettings::default(),
            failpoint: None,
        }
    }
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

mod merge;

#[cfg(test)]
mod tests;
