//! Reading what the page cache already holds on the runtime thread.
//!
//! A small blob pulled again (or just pushed) is in the page cache, and
//! reading it is a memory copy of some tens of microseconds. Streaming it
//! from a blocking thread (`reader`) costs more than the copy: a hand-off
//! to the pool and a wake-up back per chunk, each a sleeping core woken on
//! a VM. `preadv2(RWF_NOWAIT)` reads only what is cached and never waits
//! for the disk, so the runtime thread is never held by I/O: from the first
//! chunk that is not cached on, the streaming reader takes over. A 1 MiB
//! blob pulled at 1.6 GB/s streamed and 2.3 GB/s read here, nginx's
//! `sendfile` 2.0 GB/s (BENCHMARKS.md).
//!
//! Each chunk is read when hyper asks for it, so a download holds a chunk
//! or two (the one being sent, the next). A slow client keeps its 1 MiB
//! chunk until it is sent; once the store's buffers in use reach
//! [`BUSY_BYTES`], further chunks come from the streaming reader, which
//! trickles: the same bound as for streamed downloads. Large blobs keep the
//! streaming reader, whose reads run beside the sends on the other core:
//! read here, a 64 MiB pull was 8% slower.

use std::fs::File;
use std::io::IoSliceMut;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use rustix::io::ReadWriteFlags;

use super::buffers::{BUSY_BYTES, Buffer, BufferPool};
use super::reader::stream_file;
use crate::storage::ByteStream;

/// Streams `len` bytes of `file` from `start` in `pool`'s chunks read on the
/// polling thread while the page cache holds them; the rest from a
/// blocking thread (`reader::stream_file`, with `trickle` for slow clients).
pub(super) fn stream_cached(
    file: File,
    start: u64,
    len: u64,
    pool: Arc<BufferPool>,
    trickle: Arc<BufferPool>,
) -> ByteStream {
    let cached = Cached {
        file,
        offset: start,
        end: start.saturating_add(len),
        pool,
        trickle,
    };
    Box::pin(futures::stream::unfold(
        State::Cached(cached),
        |state| async move {
            match state {
                State::Cached(mut cached) => {
                    if cached.offset >= cached.end {
                        return None;
                    }
                    if let Some(chunk) = cached.read_next() {
                        return Some((Ok(chunk), State::Cached(cached)));
                    }
                    let mut rest = cached.rest();
                    let item = rest.next().await?;
                    Some((item, State::Rest(rest)))
                }
                State::Rest(mut rest) => {
                    let item = rest.next().await?;
                    Some((item, State::Rest(rest)))
                }
            }
        },
    ))
}

enum State {
    /// Reading on the polling thread.
    Cached(Cached),
    /// The streaming reader has taken over.
    Rest(ByteStream),
}

/// What is left of one download read from the page cache.
struct Cached {
    file: File,
    offset: u64,
    end: u64,
    pool: Arc<BufferPool>,
    trickle: Arc<BufferPool>,
}

impl Cached {
    /// The next chunk, if the page cache holds (some of) it and the store's
    /// buffers in use stay within [`BUSY_BYTES`]; `None` leaves the rest to
    /// the streaming reader, also when the read failed (it meets the error
    /// again and reports it, or finds the data on the disk).
    fn read_next(&mut self) -> Option<Bytes> {
        let buffer = self.pool.take_within(BUSY_BYTES)?.ok()?;
        let buffer = read_cached(&self.file, self.offset, self.end, buffer)?;
        self.offset += buffer.filled().len() as u64;
        Some(buffer.into_bytes())
    }

    /// The rest of the download, from a blocking thread.
    fn rest(self) -> ByteStream {
        let len = self.end - self.offset;
        stream_file(self.file, self.offset, len, self.pool, self.trickle)
    }
}

/// Fills `buffer` with what the page cache holds of `file` from `offset`
/// (short of `end`), without waiting for the disk; `None` when nothing
/// there is cached (`EAGAIN`), the file ends early, or the read fails: the
/// caller reads from a blocking thread instead, which meets the error
/// again and reports it, or finds the data on the disk. A short read is
/// what was cached of the chunk.
pub(super) fn read_cached(
    file: &File,
    offset: u64,
    end: u64,
    mut buffer: Buffer,
) -> Option<Buffer> {
    let room = buffer.room();
    let want = usize::try_from(end.saturating_sub(offset)).map_or(room, |n| n.min(room));
    let read = rustix::io::preadv2(
        file,
        &mut [IoSliceMut::new(buffer.fill(want))],
        offset,
        ReadWriteFlags::NOWAIT,
    );
    let got = read.ok().filter(|&got| got > 0)?;
    buffer.fill(got);
    Some(buffer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::buffers::BUFFER_SIZE;
    use super::super::reader::tests::file_with;
    use super::*;

    fn cached(file: File, start: u64, len: u64, pool: &Arc<BufferPool>) -> Cached {
        Cached {
            file,
            offset: start,
            end: start + len,
            pool: pool.clone(),
            trickle: Arc::new(BufferPool::new(1024)),
        }
    }

    #[test]
    fn reads_cached_chunks_as_they_are_asked_for() {
        let data: Vec<u8> = (0..BUFFER_SIZE * 2 + 100).map(|i| i as u8).collect();
        let (_dir, file) = file_with(&data);
        let pool = Arc::new(BufferPool::default());
        let mut reader = cached(file, 10, data.len() as u64 - 20, &pool);
        let first = reader.read_next().unwrap();
        assert_eq!(first, &data[10..10 + BUFFER_SIZE]);
        assert_eq!(pool.in_use(), BUFFER_SIZE, "one chunk read, one held");
        let second = reader.read_next().unwrap();
        let third = reader.read_next().unwrap();
        assert_eq!([first, second, third].concat(), &data[10..data.len() - 10]);
        assert_eq!(reader.offset, reader.end);
        assert_eq!(pool.in_use(), 0, "chunks go back to the pool");
    }

    /// The point of `RWF_NOWAIT`: what would wait for the disk is left to
    /// the streaming reader, never read on the runtime thread.
    #[test]
    fn leaves_what_is_not_cached_to_the_streaming_reader() {
        let data = vec![3u8; 3 * BUFFER_SIZE];
        let (_dir, file) = file_with(&data);
        file.sync_all().unwrap();
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let pool = Arc::new(BufferPool::default());
        let mut reader = cached(file, 0, data.len() as u64, &pool);
        assert_eq!(reader.read_next(), None, "read past the page cache");
        assert_eq!(reader.offset, 0);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn takes_no_buffer_past_the_busy_limit() {
        let (_dir, file) = file_with(&[1; 100]);
        let pool = Arc::new(BufferPool::default());
        let held = pool.fill_to_busy();
        let mut reader = cached(file, 0, 100, &pool);
        assert_eq!(reader.read_next(), None);
        drop(held);
        assert_eq!(reader.read_next().unwrap(), [1; 100][..]);
    }

    /// Whatever the cache holds, the download is whole: cached chunks
    /// first, the streaming reader for the rest, and a file shorter than
    /// promised is an error, not a short body.
    #[tokio::test]
    async fn a_download_is_whole_whichever_reader_reads_it() {
        let data: Vec<u8> = (0..BUFFER_SIZE * 3 + 7).map(|i| (i % 251) as u8).collect();
        let (_dir, file) = file_with(&data);
        file.sync_all().unwrap();
        // The first half cached, the second not.
        let half = (BUFFER_SIZE * 3 / 2) as u64;
        rustix::fs::fadvise(&file, half, None, rustix::fs::Advice::DontNeed).unwrap();
        let pool = Arc::new(BufferPool::default());
        let trickle = Arc::new(BufferPool::new(1024));
        let stream = stream_cached(file, 0, data.len() as u64, pool.clone(), trickle);
        let chunks: Vec<Bytes> = stream.map(Result::unwrap).collect().await;
        assert_eq!(chunks.concat(), data);

        let (_dir, short) = file_with(&data[..100]);
        let trickle = Arc::new(BufferPool::new(1024));
        let items: Vec<_> = stream_cached(short, 0, 500, pool, trickle).collect().await;
        let last = items.last().unwrap();
        assert!(last.is_err(), "a short file ends in an error");
    }
}
