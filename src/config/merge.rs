//! How the config file and the flags make one validated [`Config`]: the
//! flag wins over the file, the file over the default, and every value out
//! of range is refused by name.

use super::*;

impl Config {
    pub(super) fn merge(
        file: FileConfig,
        cli: &ServiceArgs,
        token_env: Option<String>,
    ) -> Result<Config, ConfigError> {
        let minimum_mode = match &file.tls.minimum_mode {
            Some(m) => mode_setting("tls.minimum_mode", m)?,
            None => TlsMode::Disabled,
        };
        let store = store(&file.store, cli, minimum_mode)?;
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
        let full_sync = full_sync(&file.full_sync)?;
        let (apply_connections, stall_secs) = incremental(&file.incremental)?;
        let verify = verify(&file.verify)?;
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
        let group = group(file.group, cli)?;
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
            cluster: super::ClusterSettings {
                backup: backup(&file.backup, cli)?,
                ..cluster(&file.cluster)?
            },
            failpoint: None,
        })
    }
}

/// `[store]` and the `--db-*` flags.
fn store(
    file: &FileStore,
    cli: &ServiceArgs,
    minimum_mode: TlsMode,
) -> Result<StoreConfig, ConfigError> {
    let kind = cli
        .db_type
        .clone()
        .or(file.kind.clone())
        .unwrap_or_else(|| "sqlite".into());
    let pick = |flag: &Option<String>, set: &Option<String>, default: &str| {
        flag.clone()
            .or(set.clone())
            .unwrap_or_else(|| default.into())
    };
    match kind.as_str() {
        "sqlite" => Ok(StoreConfig::Sqlite {
            dir: cli
                .db_dir
                .clone()
                .or(file.dir.clone())
                .unwrap_or_else(|| "db".into()),
        }),
        "mysql" => Ok(StoreConfig::Mysql {
            host: pick(&cli.db_host, &file.host, "127.0.0.1"),
            port: cli.db_port.or(file.port).unwrap_or(3306),
            user: pick(&cli.db_user, &file.user, "root"),
            password: Secret::new(pick(&cli.db_password, &file.password, "")),
            database: pick(&cli.db_name, &file.database, "ccr"),
            tls: store_tls(file, cli, minimum_mode)?,
        }),
        other => Err(ConfigError::Invalid(format!(
            "store type {other:?} is not supported; use \"sqlite\" or \"mysql\""
        ))),
    }
}

fn store_tls(
    file: &FileStore,
    cli: &ServiceArgs,
    minimum_mode: TlsMode,
) -> Result<TlsOptions, ConfigError> {
    let mode = match cli.db_tls_mode.clone().or(file.tls_mode.clone()) {
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
        ca: cli.db_tls_ca.clone().or(file.tls_ca.clone()),
        ..TlsOptions::default()
    };
    tls.validate("store.tls").map_err(ConfigError::Invalid)?;
    Ok(tls)
}

/// `[full_sync]`.
fn full_sync(file: &FileFullSync) -> Result<FullSyncSettings, ConfigError> {
    let defaults = FullSyncSettings::default();
    let full_sync = FullSyncSettings {
        connections: file.connections.unwrap_or(defaults.connections),
        chunk_rows: file.chunk_rows.unwrap_or(defaults.chunk_rows),
        statement_bytes: file.statement_bytes.unwrap_or(defaults.statement_bytes),
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
    if full_sync.statement_bytes < 4096 {
        return Err(ConfigError::Invalid(
            "full_sync.statement_bytes must be at least 4096".into(),
        ));
    }
    Ok(full_sync)
}

/// `[incremental]`: the apply connections and the stall threshold.
fn incremental(file: &FileIncremental) -> Result<(usize, u64), ConfigError> {
    let apply_connections = file.apply_connections.unwrap_or(APPLY_CONNECTIONS);
    if !(1..=64).contains(&apply_connections) {
        return Err(ConfigError::Invalid(
            "incremental.apply_connections must be between 1 and 64".into(),
        ));
    }
    let stall_secs = file.stall_secs.unwrap_or(60);
    if !(1..=86_400).contains(&stall_secs) {
        return Err(ConfigError::Invalid(
            "incremental.stall_secs must be between 1 and 86400".into(),
        ));
    }
    Ok((apply_connections, stall_secs))
}

/// `[verify]`.
fn verify(v: &FileVerify) -> Result<VerifySettings, ConfigError> {
    let d = VerifySettings::default();
    let verify = VerifySettings {
        chunk_rows: v.chunk_rows.unwrap_or(d.chunk_rows),
        rows_per_second: v.rows_per_second.unwrap_or(d.rows_per_second),
        snapshot_secs: v.snapshot_secs.unwrap_or(d.snapshot_secs),
        wait_secs: v.wait_secs.unwrap_or(d.wait_secs),
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
    Ok(verify)
}

/// `[group]` and the member flags.
fn group(file: FileGroup, cli: &ServiceArgs) -> Result<GroupConfig, ConfigError> {
    let defaults = GroupConfig::default();
    let lease_secs = file.lease_secs.unwrap_or(defaults.lease.as_secs());
    if !(2..=300).contains(&lease_secs) {
        return Err(ConfigError::Invalid(
            "group.lease_secs must be between 2 and 300".into(),
        ));
    }
    let heartbeat_ms = file
        .heartbeat_ms
        .unwrap_or(defaults.heartbeat.as_millis() as u64);
    if heartbeat_ms < 100 || heartbeat_ms * 3 > lease_secs * 1000 {
        return Err(ConfigError::Invalid(format!(
            "group.heartbeat_ms must be at least 100 and at most a third of the lease \
             ({} ms)",
            lease_secs * 1000 / 3
        )));
    }
    let member_type = match cli.member_type.clone().or(file.member_type).as_deref() {
        None | Some("normal") => 2,
        Some("learner") => 1,
        Some(other) => {
            return Err(ConfigError::Invalid(format!(
                "group.member_type {other:?} is not \"normal\" or \"learner\""
            )))
        }
    };
    let member_id = cli.member_id.clone().or(file.member_id);
    if member_id
        .as_deref()
        .is_some_and(|m| m.trim().is_empty() || m.len() > 255)
    {
        return Err(ConfigError::Invalid(
            "group.member_id (--member-id) must be 1 to 255 characters".into(),
        ));
    }
    Ok(GroupConfig {
        member_id,
        advertise_address: cli.advertise_address.clone().or(file.advertise_address),
        member_type,
        lease: Duration::from_secs(lease_secs),
        heartbeat: Duration::from_millis(heartbeat_ms),
        peer_ca: file.peer_ca,
    })
}

fn mode_setting(field: &str, text: &str) -> Result<TlsMode, ConfigError> {
    TlsMode::parse(text).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "{field} {text:?} is not one of disabled, preferred, required, verify_ca, verify_identity"
        ))
    })
}

/// A `[cluster]` value in milliseconds, between `min` and `max`.
fn ms(
    key: &str,
    v: Option<u64>,
    default: Duration,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(x) if (min..=max).contains(&x) => Ok(Duration::from_millis(x)),
        Some(x) => Err(ConfigError::Invalid(format!(
            "cluster.{key} = {x}: must be between {min} and {max}"
        ))),
    }
}

/// `[cluster]`.
fn cluster(f: &super::FileCluster) -> Result<super::ClusterSettings, ConfigError> {
    let d = super::ClusterSettings::default();
    let secs = |key: &str, v: Option<u64>, default: Duration, max: u64| match v {
        None => Ok(default),
        Some(s) if (1..=max).contains(&s) => Ok(Duration::from_secs(s)),
        Some(s) => Err(ConfigError::Invalid(format!(
            "cluster.{key} = {s}: must be between 1 and {max}"
        ))),
    };
    Ok(super::ClusterSettings {
        agent_port: match f.agent_port {
            Some(0) => {
                return Err(ConfigError::Invalid(
                    "cluster.agent_port must be between 1 and 65535".into(),
                ))
            }
            Some(p) => p,
            None => d.agent_port,
        },
        step_retry: secs("step_retry_s", f.step_retry_s, d.step_retry, 86_400)?,
        stall: secs("stall_s", f.stall_s, d.stall, 86_400)?,
        probe: match f.probe_ms {
            None => d.probe,
            Some(ms) if (100..=60_000).contains(&ms) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(ConfigError::Invalid(format!(
                    "cluster.probe_ms = {ms}: must be between 100 and 60000"
                )))
            }
        },
        failover_after: secs(
            "failover_after_s",
            f.failover_after_s,
            d.failover_after,
            3_600,
        )?,
        relay_wait: secs("relay_wait_s", f.relay_wait_s, d.relay_wait, 86_400)?,
        failover_block: secs(
            "failover_block_s",
            f.failover_block_s,
            d.failover_block,
            30 * 86_400,
        )?,
        cutover_lag: ms(
            "cutover_lag_ms",
            f.cutover_lag_ms,
            d.cutover_lag,
            10,
            600_000,
        )?,
        cutover_max: ms(
            "cutover_max_ms",
            f.cutover_max_ms,
            d.cutover_max,
            100,
            60_000,
        )?,
        reverse_keep: match f.reverse_keep_s {
            None => d.reverse_keep,
            Some(s) if s <= 86_400 => Duration::from_secs(s),
            Some(s) => {
                return Err(ConfigError::Invalid(format!(
                    "cluster.reverse_keep_s = {s}: must be between 0 and 86400"
                )))
            }
        },
        ..d
    })
}

/// `[backup]` and `--backup-storage`.
fn backup(f: &super::FileBackup, cli: &ServiceArgs) -> Result<super::BackupSettings, ConfigError> {
    let d = super::BackupSettings::default();
    let storage = cli
        .backup_storage
        .clone()
        .or(f.storage.clone())
        .filter(|s| !s.is_empty());
    if let Some(url) = &storage {
        crate::storage::Location::parse(url).map_err(ConfigError::Invalid)?;
    }
    let full_every = match &f.full_every {
        None => None,
        Some(t) => {
            let t = t.trim();
            let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
            let n: u64 = n.parse().map_err(|_| {
                ConfigError::Invalid(format!("backup.full_every = {t:?}: e.g. \"24h\", \"30m\""))
            })?;
            let secs = match unit {
                "h" => n * 3600,
                "m" => n * 60,
                "s" | "" => n,
                "d" => n * 86_400,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "backup.full_every = {t:?}: a number with s, m, h or d"
                    )))
                }
            };
            if secs < 60 {
                return Err(ConfigError::Invalid(format!(
                    "backup.full_every = {t:?}: at least a minute"
                )));
            }
            Some(Duration::from_secs(secs))
        }
    };
    let archive_lag = match f.archive_lag_s {
        None => d.archive_lag,
        Some(s) if (1..=3600).contains(&s) => Duration::from_secs(s),
        Some(s) => {
            return Err(ConfigError::Invalid(format!(
                "backup.archive_lag_s = {s}: must be between 1 and 3600"
            )))
        }
    };
    let object_bytes = match f.object_mb {
        None => d.object_bytes,
        Some(mb) if (16..=1 << 20).contains(&mb) => mb << 20,
        Some(mb) => {
            return Err(ConfigError::Invalid(format!(
                "backup.object_mb = {mb}: must be between 16 and 1048576"
            )))
        }
    };
    if f.keep_full == Some(0) {
        return Err(ConfigError::Invalid(
            "backup.keep_full = 0: keep at least one backup".into(),
        ));
    }
    Ok(super::BackupSettings {
        storage,
        s3: None,
        full_every,
        archive_lag,
        keep_days: f.keep_days,
        keep_full: f.keep_full,
        object_bytes,
    })
}
