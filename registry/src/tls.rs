//! TLS on the listener: PEM files to a rustls acceptor, whose handshake the
//! shared accept loop (`connections`) runs on each new connection.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::config::TlsConfig;
use crate::connections::{self, Deadlines};

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read TLS certificates from {path}: {source}")]
    Certs {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("no certificate in {0}")]
    NoCerts(String),
    #[error("cannot read the TLS private key from {path}: {source}")]
    Key {
        path: String,
        source: rustls_pki_types::pem::Error,
    },
    #[error("the TLS certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds the acceptor; HTTP/2 and HTTP/1.1 are offered through ALPN.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let cert_path = config.cert_file.display().to_string();
    let certs = CertificateDer::pem_file_iter(&config.cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certs {
            path: cert_path.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts(cert_path));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|source| TlsError::Key {
        path: config.key_file.display().to_string(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Serves `app` over TLS until `shutdown` resolves, then waits at most
/// `deadlines.drain` for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    deadlines: Deadlines,
) {
    let handshake = move |stream: TcpStream| {
        let acceptor = acceptor.clone();
        async move {
            let peer = stream.peer_addr().ok();
            match acceptor.accept(stream).await {
                Ok(tls) => Some(tls),
                Err(err) => {
                    tracing::debug!(?peer, error = %err, "TLS handshake failed");
                    None
                }
            }
        }
    };
    connections::serve(listener, handshake, app, shutdown, deadlines).await;
}
