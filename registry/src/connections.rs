//! The accept loop, for plain HTTP and TLS alike: how each connection is
//! set up and served, and the graceful shutdown (stop accepting, let
//! in-flight requests finish within the drain).
//!
//! Ours rather than `axum::serve` for the connection settings it does not
//! expose: hyper's read buffer may otherwise grow to about 400 KiB per
//! connection while a body streams in, which was most of the server's peak
//! RSS under the mixed load (BENCHMARKS.md). A slow client also gets a
//! deadline for its request headers, which also closes idle keep-alive
//! connections.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Largest HTTP/1 read buffer of one connection: the memory a pushing
/// client can hold in the server beyond the storage driver's own buffers.
/// Measured (BENCHMARKS.md): peak RSS under the mixed load 34-40 MiB with
/// hyper's default (about 400 KiB), 23-25 MiB with 128 KiB, 20-21 MiB with
/// 64 KiB; a single 1 GiB push runs about 14% slower than with 256 KiB
/// (more reads and wake-ups). Memory per connection is what limits a
/// registry that many nodes push to at once, so the smaller buffer wins.
const MAX_READ_BUFFER: usize = 64 * 1024;
/// How long a client may take to send a request's headers (and to complete
/// a TLS handshake). hyper starts
/// this timer when it waits for the next request, so it is also how long
/// an idle keep-alive connection stays open (measured: closed after it).
/// 60 s like nginx's `client_header_timeout`; clients' pools (Go's default
/// idle timeout is 90 s) drop such connections and open new ones.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// Back-off after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on every connection accepted from `listener` until
/// `shutdown` resolves, then waits at most `drain` for open connections to
/// finish their requests. `handshake` turns a TCP stream into the stream
/// HTTP is spoken on (TLS, or the stream itself); `None` drops the
/// connection.
pub async fn serve<H, F, S>(
    listener: TcpListener,
    handshake: H,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) where
    H: Fn(TcpStream) -> F + Clone + Send + 'static,
    F: Future<Output = Option<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = builder();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are written whole; waiting to coalesce them only adds
        // latency.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let handshake = handshake.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // A client that opens a connection and never completes the
            // TLS handshake gets the same deadline as one that never
            // finishes its headers.
            let Ok(Some(io)) = tokio::time::timeout(HEADER_TIMEOUT, handshake(stream)).await else {
                return;
            };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "requests still running after the shutdown timeout; stopping anyway"
        );
    }
}

/// HTTP/1.1 and HTTP/2 with the settings in the module docs.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_READ_BUFFER);
    builder.http2().timer(TokioTimer::new());
    builder
}
