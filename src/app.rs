//! Wires the service together and runs it until `shutdown` resolves: opens the
//! meta store, resumes every stored job, serves the API on the given listener.
//! `main` calls it with the real listener and signals; the tests call it
//! in-process with a listener on port 0. With a certificate the API answers
//! HTTPS only; the store's passwords are encrypted when a key file is given.

use crate::api::{self, ApiState};
use crate::config::{Config, StoreConfig};
use crate::group::{Group, GroupSettings};
use crate::job::{JobManager, Switches, WorkSettings};
use crate::metrics::Metrics;
use crate::secret;
use crate::store::{self, StoreError};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
    #[error("the API's TLS: {0}")]
    ApiTls(String),
    #[error("the store's secret key: {0}")]
    SecretKey(String),
    #[error("the group: {0}")]
    Group(String),
}

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let metrics = Arc::new(Metrics::new());
    // Read before anything is opened, so a bad file changes nothing.
    let acceptor = match &config.api_tls {
        Some(tls) => Some(api::https::acceptor(tls).map_err(AppError::ApiTls)?),
        None => None,
    };
    let roots = match (&config.group.peer_ca, &config.api_tls) {
        (Some(ca), _) => Some((ca, "group.peer_ca")),
        (None, Some(tls)) => Some((&tls.cert, "tls_cert")),
        (None, None) => None,
    };
    let peer_tls = match roots {
        Some((path, what)) => Some(crate::client::connector(path, what).map_err(AppError::ApiTls)?),
        None => None,
    };
    let keys = secret::Keys::load(
        config.secret_key_file.as_deref(),
        config.previous_secret_key_file.as_deref(),
    )
    .map_err(AppError::SecretKey)?;
    let store = store::open(&config.store, keys).await?;
    let settings = WorkSettings {
        connect_timeout: config.connect_timeout,
        full_sync: config.full_sync,
        apply_connections: config.apply_connections,
        tls_minimum: config.tls.minimum_mode,
        stall_secs: config.stall_secs,
        verify: config.verify,
        failpoint: config.failpoint,
    };
    let manager = JobManager::new(
        store.clone(),
        metrics.clone(),
        settings,
        Arc::new(Switches::default()),
    );
    let address = listener.local_addr().map_err(AppError::Listener)?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let group_settings = group_settings(&config, address, scheme)?;
    let cluster_store = store.clone();
    let group = Group::join(store, manager.clone(), metrics.clone(), group_settings).await?;
    let (group_stop, group_stopped) = tokio::sync::watch::channel(false);
    let cluster = crate::cluster::Manager::new(
        cluster_store,
        group.clone(),
        metrics.registry(),
        config.cluster.clone(),
    );
    let cluster_loop = tokio::spawn(cluster.clone().run(group_stopped.clone()));
    let group_loop = tokio::spawn(group.clone().run(group_stopped));
    let job_lag = Arc::new(crate::history::History::default());
    let lag_sampler = tokio::spawn(api::view::sample_job_lag(manager.clone(), job_lag.clone()));
    let state = Arc::new(ApiState {
        manager: manager.clone(),
        group: group.clone(),
        cluster,
        peer_tls,
        metrics,
        auth_token: config.auth_token.clone(),
        tls: config.tls,
        store_description: match &config.store {
            StoreConfig::Sqlite { dir } => format!("SQLite {}", dir.join("ccr.db").display()),
            StoreConfig::Mysql {
                host,
                port,
                database,
                ..
            } => format!("MySQL {host}:{port}/{database}"),
        },
        address: address.to_string(),
        job_lag,
    });
    info!(%address, scheme, version = env!("CARGO_PKG_VERSION"), "ccr-syncer listening");
    if !address.ip().is_loopback() {
        if acceptor.is_none() {
            warn!(%address, "the API listens on a non-loopback address without TLS: \
                  requests, the bearer token and job passwords cross the network in clear \
                  text; set tls_cert and tls_key (--tls-cert, --tls-key)");
        }
        if config.auth_token.is_none() {
            warn!(%address, "the API listens on a non-loopback address without a token: \
                  anyone who reaches it can create, change and delete jobs; set auth_token \
                  (or CCR_SYNCER_AUTH_TOKEN)");
        }
    }
    match acceptor {
        Some(acceptor) => api::https::serve(api::routes(state), listener, acceptor, shutdown).await,
        None => {
            warp::serve(api::routes(state))
                .incoming(listener)
                .graceful(shutdown)
                .run()
                .await
        }
    }
    lag_sampler.abort();
    info!("API stopped; stopping jobs");
    group_stop.send_replace(true);
    let _ = group_loop.await;
    let _ = cluster_loop.await;
    manager.shutdown().await;
    group.leave().await;
    info!("ccr-syncer stopped");
    Ok(())
}

/// This member's id and address: as configured, or from the API's address
/// (a wildcard address is named by the machine's host name).
fn group_settings(
    config: &Config,
    address: std::net::SocketAddr,
    scheme: &str,
) -> Result<GroupSettings, AppError> {
    let default = if address.ip().is_unspecified() {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", address.port())
    } else {
        address.to_string()
    };
    let advertise = match &config.group.advertise_address {
        Some(a) => crate::group::api_address(a)
            .map_err(|e| AppError::Group(format!("advertise_address: {e}")))?,
        None => format!("{scheme}://{default}"),
    };
    Ok(GroupSettings {
        member_id: config.group.member_id.clone().unwrap_or(default),
        address: advertise,
        member_type: config.group.member_type,
        lease: config.group.lease,
        heartbeat: config.group.heartbeat,
    })
}
