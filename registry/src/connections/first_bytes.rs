//! Waiting for a connection's first bytes under the header deadline.
//!
//! hyper's header timer covers HTTP/1 requests, but the automatic HTTP/1 or
//! HTTP/2 detection in front of it reads the connection's first bytes with
//! no deadline: a client that connected and sent nothing held a task and a
//! descriptor forever (tests/access.rs). The accept loop therefore reads
//! those bytes itself, under the deadline, and hands hyper a stream that
//! yields them again before the rest.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Most the first read takes. Any amount works: detection reads on until
/// it has what it needs (24 bytes for the HTTP/2 preface), and hyper reads
/// the rest of the request after the replayed bytes.
const FIRST_READ: usize = 64;

/// Reads the first bytes `io` sends; `None` when it closes without any.
pub(super) async fn first_bytes<S>(mut io: S) -> io::Result<Option<Replayed<S>>>
where
    S: AsyncRead + Unpin,
{
    let mut buf = [0u8; FIRST_READ];
    let n = io.read(&mut buf).await?;
    Ok((n > 0).then(|| Replayed {
        head: buf[..n].to_vec(),
        offset: 0,
        inner: io,
    }))
}

/// A stream whose first bytes, already read, are read again first.
#[derive(Debug)]
pub(super) struct Replayed<S> {
    head: Vec<u8>,
    offset: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.head[this.offset..];
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.offset += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The bytes read to wait for the client come again, in order and
    /// whatever the reader's buffer size, followed by the rest.
    #[tokio::test]
    async fn first_bytes_are_read_again() {
        let (client, server) = tokio::io::duplex(1024);
        let mut client = client;
        let request: Vec<u8> = (0..200u8).collect();
        client.write_all(&request).await.unwrap();
        let mut replayed = first_bytes(server).await.unwrap().unwrap();
        let mut got = vec![0u8; 10];
        replayed.read_exact(&mut got).await.unwrap();
        assert_eq!(got, request[..10]);
        client.write_all(b"more").await.unwrap();
        drop(client);
        let mut rest = Vec::new();
        replayed.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest[..190], request[10..]);
        assert_eq!(&rest[190..], b"more");
    }

    /// A client that closes without sending anything yields no stream.
    #[tokio::test]
    async fn a_silent_close_yields_nothing() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(first_bytes(server).await.unwrap().is_none());
    }

    /// Writes go straight through to the connection.
    #[tokio::test]
    async fn writes_go_through() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"x").await.unwrap();
        let mut replayed = first_bytes(server).await.unwrap().unwrap();
        replayed.write_all(b"answer").await.unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
    }
}
