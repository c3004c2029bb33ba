//! The accept loop, for plain HTTP and TLS alike: how each connection is
//! set up and served, and the graceful shutdown (stop accepting, let
//! in-flight requests finish within the drain).
//!
//! Ours rather than `axum::serve` for the connection settings it does not
//! expose: hyper's read buffer may otherwise grow to about 400 KiB per
//! connection while a body streams in, which was most of the server's peak
//! RSS under the mixed load (BENCHMARKS.md). A slow client also gets a
//! deadline for its TLS handshake and request headers, which also closes
//! idle keep-alive connections, and for taking the response it asked for.

mod first_bytes;
mod write_deadline;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use first_bytes::first_bytes;
use write_deadline::WriteDeadline;

/// Largest HTTP/1 read buffer of one connection: the memory a pushing
/// client can hold in the server beyond the storage driver's own buffers.
/// Measured (BENCHMARKS.md): peak RSS under the mixed load 34-40 MiB with
/// hyper's default (about 400 KiB), 23-25 MiB with 128 KiB, 20-21 MiB with
/// 64 KiB. A single 1 GiB push ran about 14% slower than with 256 KiB
/// (more reads and wake-ups) when it was copied twice; copied once, it runs
/// as fast (1,063 against 1,060 MB/s over six pushes each). Memory per
/// connection is what limits a registry that many nodes push to at once.
const MAX_READ_BUFFER: usize = 64 * 1024;
/// Back-off after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The deadlines of the accept loop (configuration: `headerTimeout`,
/// `shutdownTimeout`).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// How long a client may take to send a request's headers (and to
    /// complete a TLS handshake). hyper starts this timer when it waits for
    /// the next request, so it is also how long an idle keep-alive
    /// connection stays open (tests/access.rs), and how long a response may
    /// wait for a client that takes none of it (`write_deadline`).
    pub header: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    pub drain: Duration,
}

/// Serves `app` on every connection accepted from `listener` until
/// `shutdown` resolves, then waits at most `deadlines.drain` for open
/// connections to finish their requests. `handshake` turns a TCP stream into the stream
/// HTTP is spoken on (TLS, or the stream itself); `None` drops the
/// connection.
pub async fn serve<H, F, S>(
    listener: TcpListener,
    handshake: H,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    deadlines: Deadlines,
) where
    H: Fn(TcpStream) -> F + Clone + Send + 'static,
    F: Future<Output = Option<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = builder(deadlines.header);
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
            // The TLS handshake and the first bytes of the first request
            // share the header deadline (see `first_bytes`); hyper's own
            // header timer takes over from there.
            let opened = async move {
                let io = handshake(stream).await?;
                first_bytes(io).await.ok().flatten()
            };
            let Ok(Some(io)) = tokio::time::timeout(deadlines.header, opened).await else {
                return;
            };
            let io = WriteDeadline::new(io, deadlines.header);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(err) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drain = deadlines.drain;
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
fn builder(header: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header)
        .max_buf_size(MAX_READ_BUFFER);
    // HTTP/2 has no header timer: a connection that has been silent for
    // `header` gets a PING, and one that does not answer it within as long
    // again (a peer that vanished without closing) is closed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header)
        .keep_alive_timeout(header);
    builder
}
