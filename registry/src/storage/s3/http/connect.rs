//! Opening connections to S3: DNS, TCP and TLS, all within the connect
//! timeout (as the SDK's client bounds them).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::storage::{StorageError, StorageResult};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection attempt that took longer than the connect timeout.
#[derive(Debug, thiserror::Error)]
#[error("no connection to S3 within {0:?} (DNS, TCP and TLS)")]
pub struct ConnectTimedOut(Duration);

/// The HTTPS-or-HTTP connector of the pool, each connection bounded by
/// `timeout` from DNS to the end of the TLS handshake.
#[derive(Clone)]
pub struct Connect {
    inner: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

impl Connect {
    pub fn new(timeout: Duration) -> StorageResult<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StorageError::invalid(format!("TLS for S3: {e}")))?
            .with_root_certificates(system_roots())
            .with_no_client_auth();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        // HTTP/1 only: the read-buffer cap is an HTTP/1 setting, and S3
        // speaks HTTP/1.1.
        let inner = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Self { inner, timeout })
    }
}

impl tower::Service<Uri> for Connect {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, connecting)
                .await
                .unwrap_or_else(|_| Err(Box::new(ConnectTimedOut(timeout))))
        })
    }
}

/// The system's trusted certificates (`SSL_CERT_FILE` and `SSL_CERT_DIR`
/// override where they are read from). None is a warning, not an error, as
/// with the SDK's client: an image without CA certificates still reaches
/// an `http://` endpoint.
fn system_roots() -> rustls::RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "loading the system's CA certificates for S3");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no CA certificates found: S3 over HTTPS will fail certificate checks");
    }
    roots
}
