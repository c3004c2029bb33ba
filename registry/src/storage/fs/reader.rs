//! Streaming a large file to a client: one pooled buffer per chunk, read
//! where it costs least.
//!
//! A chunk already in the page cache (a blob pulled before, or just
//! pushed) is read on the runtime thread with `preadv2(RWF_NOWAIT)`, which
//! never waits for the disk: a memory copy, no thread hand-off. Only a chunk
//! that would wait for I/O goes to the blocking pool. Reading every chunk
//! on a blocking thread, two wake-ups per chunk, held pulls at about 70% of
//! nginx's `sendfile` (BENCHMARKS.md).
//!
//! Chunks are read when the consumer asks for the next one, so a download
//! holds about two buffers (the one being read, the one hyper is sending)
//! and a slow client slows the reads instead of filling memory. The kernel's
//! readahead keeps the page cache ahead of a sequential reader.

use std::fs::File;
use std::io::IoSliceMut;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use rustix::io::{Errno, ReadWriteFlags};

use super::buffers::{BUFFER_SIZE, BufferPool};
use crate::storage::ByteStream;

/// Streams `len` bytes of `file` from `start`; see the module docs.
pub(super) fn stream_file(file: File, start: u64, len: u64, pool: Arc<BufferPool>) -> ByteStream {
    let reader = Reader {
        file: Arc::new(file),
        offset: start,
        end: start.saturating_add(len),
        pool,
        nowait: true,
    };
    Box::pin(futures::stream::unfold(reader, |mut reader| async move {
        if reader.offset >= reader.end {
            return None;
        }
        match reader.next_chunk().await {
            Ok(chunk) => {
                reader.offset += chunk.len() as u64;
                Some((Ok(chunk), reader))
            }
            Err(err) => {
                reader.offset = reader.end;
                Some((Err(err), reader))
            }
        }
    }))
}

struct Reader {
    file: Arc<File>,
    offset: u64,
    end: u64,
    pool: Arc<BufferPool>,
    /// Cleared when the filesystem does not support `RWF_NOWAIT`.
    nowait: bool,
}

impl Reader {
    /// The next chunk: from the page cache if it is there (possibly only a
    /// cached prefix of it), else read on the blocking pool.
    async fn next_chunk(&mut self) -> std::io::Result<Bytes> {
        let want =
            usize::try_from(self.end - self.offset).map_or(BUFFER_SIZE, |n| n.min(BUFFER_SIZE));
        let mut buffer = self.pool.take();
        if self.nowait {
            let read = rustix::io::preadv2(
                &*self.file,
                &mut [IoSliceMut::new(buffer.fill(want))],
                self.offset,
                ReadWriteFlags::NOWAIT,
            );
            match read {
                Ok(got) if got > 0 => {
                    buffer.truncate(got);
                    return Ok(buffer.into_bytes());
                }
                // Not cached (`EAGAIN`), or the file ends early (`Ok(0)`):
                // the blocking read below waits, or reports the short file.
                Ok(_) | Err(Errno::AGAIN) => {}
                Err(Errno::OPNOTSUPP | Errno::NOSYS) => self.nowait = false,
                Err(err) => return Err(err.into()),
            }
        }
        let (file, offset) = (self.file.clone(), self.offset);
        tokio::task::spawn_blocking(move || {
            file.read_exact_at(buffer.fill(want), offset)?;
            Ok(buffer.into_bytes())
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::StreamExt;

    use super::*;

    fn file_with(data: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, data).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    /// Any range comes back byte for byte, whether chunks came from the
    /// page cache or the blocking pool, in chunks of at most a buffer.
    #[tokio::test]
    async fn streams_a_range_byte_for_byte() {
        let data: Vec<u8> = (0..3 * BUFFER_SIZE + 777)
            .map(|i| (i % 241) as u8)
            .collect();
        let (_dir, file) = file_with(&data);
        let pool = Arc::new(BufferPool::default());
        let (start, len) = (1_000, data.len() - 1_500);
        let mut stream = stream_file(file, start as u64, len as u64, pool);
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            assert!(!chunk.is_empty() && chunk.len() <= BUFFER_SIZE);
            got.extend_from_slice(&chunk);
        }
        assert!(got == data[start..start + len], "streamed bytes differ");
    }

    /// A file out of the page cache is read on the blocking pool, whole.
    #[tokio::test]
    async fn uncached_chunks_are_read_on_the_blocking_pool() {
        let data: Vec<u8> = (0..2 * BUFFER_SIZE + 5).map(|i| (i % 239) as u8).collect();
        let (_dir, file) = file_with(&data);
        file.sync_all().unwrap();
        // Dropping clean pages is advice the kernel may ignore; the bytes
        // must come back right either way.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
        let pool = Arc::new(BufferPool::default());
        let mut stream = stream_file(file, 0, data.len() as u64, pool);
        let mut got = Vec::new();
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert!(got == data, "streamed bytes differ");
    }

    /// A file shorter than the length asked for (changed underneath) ends
    /// the stream with an error rather than a short body.
    #[tokio::test]
    async fn a_short_file_is_an_error() {
        let (_dir, file) = file_with(&[7u8; 1000]);
        let pool = Arc::new(BufferPool::default());
        let mut stream = stream_file(file, 0, 5_000, pool);
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 1000);
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(stream.next().await.is_none());
    }
}
