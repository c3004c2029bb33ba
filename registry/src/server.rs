//! Building the application from a [`Config`] and serving it until a
//! shutdown signal. The binary and the tests start servers the same way.

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};

use crate::api::{AppState, app};
use crate::auth::{Authenticator, HtpasswdError};
use crate::config::Config;
use crate::connections::{self, Deadlines};
use crate::metrics::Metrics;
use crate::service::Registry;
use crate::storage::{self, StorageError};
use crate::tls::{self, TlsError};

#[derive(Debug, Error)]
pub enum StartError {
    #[error("cannot open storage: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot set up authentication: {0}")]
    Auth(#[from] HtpasswdError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Opens storage, reads credentials and builds the shared state.
pub async fn build_state(config: &Config) -> Result<AppState, StartError> {
    let auth = match &config.auth {
        Some(auth) => Authenticator::from_config(auth)?,
        None => None,
    };
    let store = storage::from_config(&config.storage).await?;
    let metrics = Arc::new(Metrics::new()?);
    let registry = Registry::new(store, config.limits.clone(), Arc::clone(&metrics));
    Ok(AppState::new(registry, metrics, auth))
}

/// Serves plain HTTP, or HTTPS when `config.tls` is set; see [`serve`].
pub async fn serve_config(
    config: &Config,
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let deadlines = Deadlines {
        header: config.header_timeout,
        drain: config.shutdown_timeout,
    };
    match &config.tls {
        Some(settings) => {
            let acceptor = tls::acceptor(settings)?;
            tls::serve(listener, acceptor, app(state), shutdown, deadlines).await;
        }
        None => serve(listener, state, shutdown, deadlines).await,
    }
    Ok(())
}

/// Binds the configured address.
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    TcpListener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen.clone(),
            source,
        })
}

/// Serves plain HTTP until `shutdown` resolves, then lets in-flight
/// requests finish for at most `deadlines.drain`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    deadlines: Deadlines,
) {
    let handshake = |stream: TcpStream| async move { Some(stream) };
    connections::serve(listener, handshake, app(state), shutdown, deadlines).await;
}
