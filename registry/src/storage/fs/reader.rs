//! Streaming a large file to a client: one blocking thread per download
//! reads pooled buffers at most [`READ_AHEAD`] ahead of the consumer.
//!
//! One copy per byte (kernel to the buffer) and one channel hand-off per
//! chunk, where `tokio::fs::File` reads into its own buffer, copies, and
//! makes a blocking-pool round trip per read. The reader stops when the
//! stream is dropped (client gone). Large reads use the larger pool's
//! chunks, a quarter of the hand-offs (`buffers`).
//!
//! Tried and measured against this (BENCHMARKS.md): reading cached chunks
//! on the runtime thread with `preadv2(RWF_NOWAIT)`, no hand-off at all. It
//! used 14% less server CPU per byte but pulled 64 MiB about 8% slower
//! with the benchmark client, because the read and the send then run one
//! after the other on one thread instead of side by side on two cores.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::buffers::BufferPool;
use crate::storage::ByteStream;

/// Chunks read ahead of the client: bounds the memory of one download to
/// about `READ_AHEAD + 2` pooled buffers (those queued, the one being read,
/// the one hyper is writing).
const READ_AHEAD: usize = 2;

/// Streams `len` bytes of `file` from `start`; see the module docs.
pub(super) fn stream_file(file: File, start: u64, len: u64, pool: Arc<BufferPool>) -> ByteStream {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut offset = start;
        let end = start.saturating_add(len);
        while offset < end {
            let size = pool.size();
            let n = usize::try_from(end - offset).map_or(size, |n| n.min(size));
            let mut buffer = pool.take();
            let item = file
                .read_exact_at(buffer.fill(n), offset)
                .map(|()| buffer.into_bytes());
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
            offset += n as u64;
        }
    });
    Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::StreamExt;

    use super::super::buffers::BUFFER_SIZE;
    use super::*;

    fn file_with(data: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, data).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 241) as u8).collect()
    }

    /// The chunk sizes and the bytes of a whole stream.
    async fn drain(mut stream: ByteStream) -> (Vec<usize>, Vec<u8>) {
        let (mut sizes, mut bytes) = (Vec::new(), Vec::new());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            sizes.push(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        (sizes, bytes)
    }

    /// Any range comes back byte for byte, in chunks of one buffer.
    #[tokio::test]
    async fn streams_a_range_byte_for_byte() {
        let data = pattern(3 * BUFFER_SIZE + 777);
        let (_dir, file) = file_with(&data);
        let pool = Arc::new(BufferPool::default());
        let (start, len) = (1_000, data.len() - 1_500);
        let (sizes, got) = drain(stream_file(file, start as u64, len as u64, pool)).await;
        assert_eq!(sizes, [BUFFER_SIZE, BUFFER_SIZE, len - 2 * BUFFER_SIZE]);
        assert!(got == data[start..start + len], "streamed bytes differ");
    }

    /// With a pool of large buffers, chunks are that size.
    #[tokio::test]
    async fn large_pools_read_large_chunks() {
        use super::super::buffers::LARGE_BUFFER_SIZE;
        let data = pattern(2 * LARGE_BUFFER_SIZE + 99);
        let (_dir, file) = file_with(&data);
        let pool = Arc::new(BufferPool::new(LARGE_BUFFER_SIZE));
        let (sizes, got) = drain(stream_file(file, 0, data.len() as u64, pool)).await;
        assert_eq!(sizes, [LARGE_BUFFER_SIZE, LARGE_BUFFER_SIZE, 99]);
        assert!(got == data, "streamed bytes differ");
    }

    /// A file shorter than the length asked for (changed underneath) ends
    /// the stream with an error rather than a short body.
    #[tokio::test]
    async fn a_short_file_is_an_error() {
        let (_dir, file) = file_with(&[7u8; 1000]);
        let pool = Arc::new(BufferPool::default());
        let mut stream = stream_file(file, 0, 5_000, pool);
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(stream.next().await.is_none());
    }
}
