//! The S3 driver's HTTP client: the SDK's own (hyper 1, rustls with
//! aws-lc-rs, the system's root certificates) but with hyper's
//! per-connection read buffer capped.
//!
//! Why: hyper grows a connection's read buffer to about 400 KiB while a
//! response body is read slowly, and every chunk it hands out pins that
//! buffer. A download streamed from S3 to a slow client is read slowly, so
//! each one held about 1.1 MiB (200 such pulls: 224 MiB); with reads of at
//! most [`MAX_READ_BUFFER`] it holds two of them. The SDK's client does not
//! let its hyper builder be configured (awslabs/aws-sdk-rust#1334), so this
//! module assembles the same parts itself: timeouts, error kinds the retry
//! policy understands, and connection poisoning.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::retry::ErrorKind;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{CaptureConnection, HttpConnector as TcpConnector};
use hyper_util::client::legacy::{Client, connect::capture_connection};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::storage::{StorageError, StorageResult};

/// Largest read hyper makes into a connection's buffer, and so the most a
/// response chunk pins. 64 KiB reads keep a 1 GB/s stream from MinIO at
/// its rate (measured: BENCHMARKS.md, S3 rows).
pub const MAX_READ_BUFFER: usize = 64 * 1024;

/// A pool of keep-alive connections to the S3 endpoint, shared by every
/// request of the store.
#[derive(Clone)]
pub struct S3HttpClient {
    connector: SharedHttpConnector,
}

impl fmt::Debug for S3HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3HttpClient")
    }
}

impl S3HttpClient {
    /// `connect_timeout` bounds the TCP connect; `read_timeout` everything
    /// up to a response's headers (a TLS handshake included), as the SDK's
    /// own client does. A body's later bytes are bounded by the SDK's
    /// stalled-stream protection.
    pub fn shared(
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> StorageResult<SharedHttpClient> {
        let connector = SharedHttpConnector::new(Connector::new(connect_timeout, read_timeout)?);
        Ok(SharedHttpClient::new(Self { connector }))
    }
}

impl HttpClient for S3HttpClient {
    /// One pool for all: the store's timeouts are set here, not per
    /// operation.
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.connector.clone()
    }
}

struct Connector {
    client: Client<HttpsConnector<TcpConnector>, SdkBody>,
    read_timeout: Duration,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    fn new(connect_timeout: Duration, read_timeout: Duration) -> StorageResult<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StorageError::invalid(format!("TLS for S3: {e}")))?
            .with_root_certificates(system_roots())
            .with_no_client_auth();
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(MAX_READ_BUFFER)
            .build(https);
        Ok(Self {
            client,
            read_timeout,
        })
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        // Lets the SDK poison the connection after a transient error, so
        // its retry does not reuse it.
        let captured = capture_connection(&mut request);
        if let Some(smithy) = request.extensions().get::<CaptureSmithyConnection>() {
            smithy.set_connection_retriever(move || connection_metadata(&captured));
        }
        let response = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            match tokio::time::timeout(read_timeout, response).await {
                Ok(Ok(response)) => HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Ok(Err(e)) => Err(classify(e)),
                Err(_) => Err(ConnectorError::timeout(
                    format!("no response from S3 within {read_timeout:?}").into(),
                )),
            }
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

fn connection_metadata(captured: &CaptureConnection) -> Option<ConnectionMetadata> {
    captured.connection_metadata().as_ref()?;
    let captured = captured.clone();
    Some(
        ConnectionMetadata::builder()
            .proxied(false)
            .poison_fn(move || {
                if let Some(connected) = captured.connection_metadata().as_ref() {
                    connected.poison();
                }
            })
            .build(),
    )
}

/// The kind the SDK's retry policy acts on: timeouts and I/O failures are
/// transient, a request the client could not send is the caller's.
fn classify(err: hyper_util::client::legacy::Error) -> ConnectorError {
    let hyper = find::<hyper::Error>(&err);
    let kind = if hyper.is_some_and(hyper::Error::is_timeout) {
        Kind::Timeout
    } else if hyper.is_some_and(hyper::Error::is_user) {
        Kind::User
    } else if err.is_connect()
        || find::<std::io::Error>(&err).is_some()
        || hyper.is_some_and(|h| h.is_closed() || h.is_canceled())
    {
        Kind::Io
    } else if hyper.is_some_and(hyper::Error::is_incomplete_message) {
        // S3 sometimes closes a kept-alive connection as a request starts.
        Kind::Transient
    } else {
        Kind::Other
    };
    let err = Box::new(err);
    match kind {
        Kind::Timeout => ConnectorError::timeout(err),
        Kind::User => ConnectorError::user(err),
        Kind::Io => ConnectorError::io(err),
        Kind::Transient => ConnectorError::other(err, Some(ErrorKind::TransientError)),
        Kind::Other => ConnectorError::other(err, None),
    }
}

enum Kind {
    Timeout,
    User,
    Io,
    Transient,
    Other,
}

/// The first error of type `E` in `err`'s source chain, `err` included.
fn find<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    std::iter::successors(Some(err), |&e| e.source()).find_map(|e| e.downcast_ref::<E>())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    async fn get(
        connector: &Connector,
        addr: std::net::SocketAddr,
    ) -> Result<HttpResponse, ConnectorError> {
        let request = HttpRequest::get(format!("http://{addr}/bucket/key")).unwrap();
        connector.call(request).await
    }

    /// A response read slowly comes in chunks of about the cap, however
    /// much the connection has waiting: a slow download pins little.
    #[tokio::test]
    async fn a_body_read_slowly_comes_in_small_chunks() {
        const LEN: usize = 4 << 20;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let server_sent = sent.clone();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = socket.read(&mut head).await.unwrap();
            let header = format!("HTTP/1.1 200 OK\r\ncontent-length: {LEN}\r\n\r\n");
            socket.write_all(header.as_bytes()).await.unwrap();
            let block = vec![7u8; 64 * 1024];
            for _ in 0..LEN / block.len() {
                socket.write_all(&block).await.unwrap();
                server_sent.fetch_add(block.len(), Ordering::SeqCst);
            }
        });
        let connector = Connector::new(SECOND, 5 * SECOND).unwrap();
        let mut body = get(&connector, addr).await.unwrap().into_body();
        let (mut received, mut largest) = (0, 0);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            received += data.len();
            largest = largest.max(data.len());
            // A reader that falls behind: the next read only once the
            // sender has filled the socket's buffers ahead of it.
            let ahead = received + (1 << 20);
            let until = tokio::time::Instant::now() + 5 * SECOND;
            while sent.load(Ordering::SeqCst) < ahead.min(LEN)
                && tokio::time::Instant::now() < until
            {
                tokio::task::yield_now().await;
            }
        }
        server.await.unwrap();
        assert_eq!(received, LEN);
        // hyper reads into all the room its buffer has, which may be up to
        // twice what it asked for (without the cap: 400 KiB chunks and more).
        assert!(largest <= 2 * MAX_READ_BUFFER, "a chunk of {largest} bytes");
    }

    /// A refused connection is an I/O error, which the SDK retries.
    #[tokio::test]
    async fn a_refused_connection_is_retryable_io() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let connector = Connector::new(SECOND, 5 * SECOND).unwrap();
        let err = get(&connector, addr).await.unwrap_err();
        assert!(err.is_io(), "{err:?}");
    }

    /// A server that accepts and never answers is a timeout (retried too),
    /// not a hang.
    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { listener.accept().await });
        let connector = Connector::new(SECOND, Duration::from_millis(200)).unwrap();
        let err = get(&connector, addr).await.unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        drop(server);
    }
}
