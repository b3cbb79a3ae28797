//! Wires the service together and runs it until `shutdown` resolves: opens the
//! meta store, resumes every stored job, serves the API on the given listener.
//! `main` calls it with the real listener and signals; the tests call it
//! in-process with a listener on port 0.

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::job::{JobManager, WorkSettings};
use crate::metrics::Metrics;
use crate::store::{self, StoreError};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the listener's address: {0}")]
    Listener(std::io::Error),
}

pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    let metrics = Arc::new(Metrics::new());
    let store = store::open(&config.store).await?;
    let settings = WorkSettings {
        connect_timeout: config.connect_timeout,
        full_sync: config.full_sync,
        apply_connections: config.apply_connections,
    };
    let manager = JobManager::start(store, metrics.clone(), settings).await?;
    let state = Arc::new(ApiState {
        manager: manager.clone(),
        metrics,
        auth_token: config.auth_token.clone(),
    });
    let address = listener.local_addr().map_err(AppError::Listener)?;
    info!(%address, version = env!("CARGO_PKG_VERSION"), "ccr-syncer listening");
    warp::serve(api::routes(state))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    info!("API stopped; stopping jobs");
    manager.shutdown().await;
    info!("ccr-syncer stopped");
    Ok(())
}
