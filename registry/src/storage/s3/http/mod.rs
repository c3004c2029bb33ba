//! The S3 driver's HTTP client: the SDK's own (hyper 1, rustls with
//! aws-lc-rs, the system's root certificates) but with hyper's
//! per-connection read buffer capped.
//!
//! Why: hyper grows a connection's read buffer to about 400 KiB while a
//! response body is read slowly, and every chunk it hands out pins that
//! buffer. A download streamed from S3 to a slow client is read slowly, so
//! each one held about 1.1 MiB (200 such pulls: 224 MiB); with reads
//! capped at [`MAX_READ_BUFFER`] it holds a few hundred KiB. The SDK's
//! client does not let its hyper builder be configured
//! (awslabs/aws-sdk-rust#1334), so this module assembles the same parts
//! itself: connect and read timeouts, error kinds the retry policy
//! understands, and connection poisoning. HTTP/1.1 only (the cap is an
//! HTTP/1 setting). Through a proxy from the environment the SDK's client
//! stays in charge, since it knows how to tunnel.

mod classify;
mod connect;

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use aws_sdk_s3::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use hyper_util::client::legacy::connect::CaptureConnection;
use hyper_util::client::legacy::{Client, connect::capture_connection};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::storage::StorageResult;

use classify::classify;
use connect::Connect;

/// What hyper asks to read into a connection's buffer at most. It reads
/// into all the room the buffer has, which can be up to twice that, so a
/// response chunk pins at most about 128 KiB. 64 KiB reads keep a 1 GB/s
/// stream from a local MinIO within about 10% of its rate (BENCHMARKS.md).
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
    /// The client for `endpoint`, or `None` when a proxy from the
    /// environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, unless
    /// `NO_PROXY`) applies to it: the SDK's own client then goes through
    /// that proxy, without the cap. `connect_timeout` bounds each new
    /// connection from DNS to the end of the TLS handshake;
    /// `read_timeout` each request from its start to the response's
    /// headers, sending its body included, as with the SDK's client. A
    /// body's later bytes are watched by the SDK's stalled-stream
    /// protection.
    pub fn for_endpoint(
        endpoint: &str,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> StorageResult<Option<SharedHttpClient>> {
        if proxied(&Matcher::from_env(), endpoint) {
            tracing::info!(
                endpoint,
                "S3 through the proxy from the environment, with the SDK's HTTP client \
                 (its read buffers are not capped: slow downloads hold more memory)"
            );
            return Ok(None);
        }
        let connector = SharedHttpConnector::new(Connector::new(connect_timeout, read_timeout)?);
        Ok(Some(SharedHttpClient::new(Self { connector })))
    }
}

/// Whether `proxies` send requests to `endpoint` through a proxy.
fn proxied(proxies: &Matcher, endpoint: &str) -> bool {
    endpoint
        .parse()
        .ok()
        .and_then(|uri| proxies.intercept(&uri))
        .is_some()
}

impl HttpClient for S3HttpClient {
    /// One pool for every operation, with the store's timeouts: the
    /// per-operation settings the SDK passes are not consulted (Berth sets
    /// them in one place, `S3Store::connect`, from the same values).
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.connector.clone()
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("hyper", Some(Cow::Borrowed("1.x"))))
    }
}

struct Connector {
    client: Client<Connect, SdkBody>,
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
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(MAX_READ_BUFFER)
            .build(Connect::new(connect_timeout)?);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_smithy_types::retry::ErrorKind;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    /// Each test's own limit: a regression that hangs fails instead.
    const DEADLINE: Duration = Duration::from_secs(30);

    async fn get(connector: &Connector, url: String) -> Result<HttpResponse, ConnectorError> {
        let request = HttpRequest::get(url).unwrap();
        tokio::time::timeout(DEADLINE, connector.call(request))
            .await
            .expect("an answer within the test's deadline")
    }

    /// A loopback listener that accepts connections and says nothing.
    async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (addr, server)
    }

    /// A response read slowly comes in chunks of about the cap, however
    /// much the connection has waiting: a slow download pins little.
    #[tokio::test]
    async fn a_body_read_slowly_comes_in_small_chunks() {
        const LEN: usize = 4 << 20;
        const LEAD: usize = 512 << 10;
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
            let block = vec![7u8; 16 * 1024];
            for _ in 0..LEN / block.len() {
                socket.write_all(&block).await.unwrap();
                server_sent.fetch_add(block.len(), Ordering::SeqCst);
            }
        });
        let connector = Connector::new(SECOND, 5 * SECOND).unwrap();
        let mut body = get(&connector, format!("http://{addr}/bucket/key"))
            .await
            .unwrap()
            .into_body();
        let (mut received, mut largest) = (0, 0);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            received += data.len();
            largest = largest.max(data.len());
            // A reader that falls behind: the next read only once the
            // sender has put LEAD bytes into the sockets ahead of it.
            let ahead = (received + LEAD).min(LEN);
            let until = tokio::time::Instant::now() + DEADLINE;
            while sent.load(Ordering::SeqCst) < ahead {
                assert!(
                    tokio::time::Instant::now() < until,
                    "the sender never got {LEAD} bytes ahead of {received}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        server.await.unwrap();
        assert_eq!(received, LEN);
        // hyper reads into all the room its buffer has, which may be up to
        // twice what it asked for (without the cap: about 500 KiB).
        assert!(largest <= 2 * MAX_READ_BUFFER, "a chunk of {largest} bytes");
    }

    /// A refused connection is an I/O error, which the SDK retries.
    #[tokio::test]
    async fn a_refused_connection_is_retryable_io() {
        // Bound but not listening: connections to it are refused.
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let connector = Connector::new(SECOND, 5 * SECOND).unwrap();
        let err = get(&connector, format!("http://{addr}/"))
            .await
            .unwrap_err();
        assert!(err.is_io(), "{err:?}");
        drop(socket);
    }

    /// A server that accepts and never answers is a timeout (retried too),
    /// not a hang.
    #[tokio::test]
    async fn a_silent_server_times_out() {
        let (addr, server) = silent_server().await;
        let connector = Connector::new(5 * SECOND, Duration::from_millis(200)).unwrap();
        let err = get(&connector, format!("http://{addr}/"))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        server.abort();
    }

    /// The connect timeout covers the TLS handshake, not only TCP: an
    /// HTTPS endpoint that accepts and never completes one fails after
    /// it, long before the (here one hour) read timeout.
    #[tokio::test]
    async fn a_stalled_tls_handshake_is_a_connect_timeout() {
        let (addr, server) = silent_server().await;
        let connector = Connector::new(Duration::from_millis(200), 3600 * SECOND).unwrap();
        let err = get(&connector, format!("https://{addr}/"))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(format!("{err:?}").contains("ConnectTimedOut"), "{err:?}");
        server.abort();
    }

    /// Only an endpoint a proxy applies to leaves the SDK's client in
    /// charge; `NO_PROXY` and the other scheme's proxy do not count.
    #[test]
    fn the_sdk_client_is_kept_only_for_proxied_endpoints() {
        let https = Matcher::builder()
            .https("http://proxy.internal:3128")
            .no("minio.storage.svc")
            .build();
        assert!(proxied(&https, "https://s3.eu-west-1.amazonaws.com"));
        assert!(!proxied(&https, "http://s3.eu-west-1.amazonaws.com"));
        assert!(!proxied(&https, "https://minio.storage.svc:9000"));
        assert!(!proxied(
            &Matcher::builder().build(),
            "https://s3.amazonaws.com"
        ));
    }

    /// A connection closed before any response (S3 closing a kept-alive
    /// one) is transient: retried.
    #[tokio::test]
    async fn a_connection_closed_before_the_response_is_transient() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = socket.read(&mut head).await.unwrap();
        });
        let connector = Connector::new(SECOND, 5 * SECOND).unwrap();
        let err = get(&connector, format!("http://{addr}/"))
            .await
            .unwrap_err();
        server.await.unwrap();
        assert!(
            err.is_io() || err.as_other() == Some(ErrorKind::TransientError),
            "{err:?}"
        );
    }
}
