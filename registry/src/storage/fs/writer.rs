//! Streaming a body into a new, fsynced file without holding the body in
//! memory or stalling the request on the disk.
//!
//! Body bytes are copied into pooled buffers of [`BUFFER_SIZE`] (past
//! `direct_from`, into 1 MiB aligned buffers written past the page cache:
//! see `direct`); one buffer is written on the blocking pool while the next
//! fills, so an upload holds two buffers and hyper's read buffer is free
//! again as soon as a chunk is copied. (`tokio::fs::File` copied every byte
//! into a buffer of its own of up to 2 MiB and handed off each write, open
//! and sync separately.) A chunk of at least [`BUFFER_SIZE`] is written as
//! it came, without a copy: the hashing body of a large push hands over
//! page-aligned batches of its own, which go direct as they are.
//!
//! A slow client (below [`SLOW_RATE`], judged by its first two chunks and
//! again as each buffer fills) gets no buffer at all: each chunk is written
//! through the page cache as it came, and the next is read only once the
//! write is done, so all such an upload holds is hyper's read buffer
//! (which hyper reuses in place once the chunk is dropped). A buffer waits
//! for its client for as long as it takes to fill: 200 clients pushing at
//! 2 MB/s each peaked at 80 MiB with 64 KiB buffers, and at 47 MiB
//! written as they came (BENCHMARKS.md). One that speeds up gets buffers
//! back, judged every [`BUFFER_SIZE`] bytes; the first of them ends where
//! the file is aligned again, so that direct writes may follow. While the
//! store's buffers in use are at `BUSY_BYTES`, every upload fills small
//! ones.
//!
//! Durability without a long stall at the end: what goes through the page
//! cache is flushed to disk while it is written (an `fdatasync` in the
//! background every [`SYNC_EVERY`] bytes), so the fsync that must precede
//! the 201 finds little left to write. With one sync at the end, pushing
//! 1 GiB waited about 0.3 s on it after the last byte arrived
//! (BENCHMARKS.md).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::buffers::{self, BUFFER_SIZE, BUSY_BYTES, BufferPool};
use super::direct::{self, ALIGN, Direct};
use super::joined;
use super::tmp::TmpFile;
use crate::mapped::Mapped;
use crate::storage::{ByteStream, StorageError, StorageResult};

/// Bytes written through the page cache between the starts of two
/// background syncs.
const SYNC_EVERY: u64 = 32 * 1024 * 1024;

/// An upload whose last buffer filled slower than this (bytes per second)
/// gets small buffers next; one filling faster gets full ones again. At
/// 10 MB/s a 256 KiB buffer takes 26 ms to fill, a 64 KiB one 6.5 ms.
const SLOW_RATE: u64 = 10_000_000;

/// Writes `body` to the new file `tmp` and fsyncs it, on the blocking
/// pool (see [`BatchWriter`]); each write task holds `tmp`, so a write
/// still running when the caller is dropped cannot leave the file behind. The first chunk is held back until a second
/// one arrives or the body ends, so that a body of one chunk (a link record,
/// a manifest) is written as it is: no copy, no pooled buffer, one hand-off
/// for create, write and sync together. Later chunks are copied as they
/// arrive and dropped: a chunk kept longer would keep hyper from reusing
/// its read buffer, and every fresh buffer costs page faults. What lies
/// past `direct_from` bytes is written past the page cache where the
/// filesystem allows (`direct`). A slow body is written as it comes (see
/// the module docs); buffers of `small` are for a busy store.
pub(super) async fn write_new(
    tmp: &TmpFile,
    mut body: ByteStream,
    pool: &Arc<BufferPool>,
    small: &Arc<BufferPool>,
    direct_from: u64,
) -> StorageResult<()> {
    let mut writer = BatchWriter::new(tmp, pool, small, direct_from);
    // The first chunk, until a second one shows the body has more.
    let mut first: Option<Bytes> = None;
    let mut more = false;
    let result = loop {
        let pushed = match body.next().await {
            Some(Ok(chunk)) if more => writer.push_chunk(chunk).await,
            Some(Ok(chunk)) => match first.take() {
                None => {
                    first = Some(chunk);
                    Ok(())
                }
                Some(previous) => {
                    more = true;
                    writer.judge_start(previous.len() + chunk.len());
                    match writer.push_chunk(previous).await {
                        Ok(()) => writer.push_chunk(chunk).await,
                        Err(err) => Err(err),
                    }
                }
            },
            Some(Err(err)) => break Err(StorageError::Body(err)),
            None => break writer.finish(first.take()).await,
        };
        if let Err(err) = pushed {
            break Err(err);
        }
    };
    if result.is_err() {
        writer.settle().await;
    }
    result
}

/// Whether `len` bytes arriving in `took` came slower than [`SLOW_RATE`].
fn slower_than_slow_rate(len: usize, took: Duration) -> bool {
    took.as_nanos() * u128::from(SLOW_RATE) > len as u128 * 1_000_000_000
}

/// The open file, between writes.
#[derive(Debug)]
struct Files {
    cached: Arc<File>,
    direct: Direct,
    /// The buffer of the last direct write, emptied for reuse.
    spare: Option<Mapped>,
}

/// A buffer being filled: for the page cache, or for a direct write (see
/// `direct`).
#[derive(Debug)]
enum Batch {
    Cached(buffers::Buffer),
    Direct(Mapped),
}

impl Batch {
    fn push(&mut self, bytes: &[u8]) -> usize {
        match self {
            Self::Cached(buffer) => buffer.push(bytes),
            Self::Direct(buffer) => buffer.push(bytes),
        }
    }

    fn room(&self) -> usize {
        match self {
            Self::Cached(buffer) => buffer.room(),
            Self::Direct(buffer) => buffer.room(),
        }
    }

    /// Bytes of content.
    fn len(&self) -> usize {
        match self {
            Self::Cached(buffer) => buffer.filled().len(),
            Self::Direct(buffer) => buffer.len(),
        }
    }

    fn into_payload(self) -> Payload {
        match self {
            Self::Cached(buffer) => Payload::Cached(buffer.into_bytes()),
            Self::Direct(buffer) => Payload::Direct(buffer),
        }
    }
}

/// What one write hands to the blocking pool.
#[derive(Debug)]
enum Payload {
    /// Through the page cache.
    Cached(Bytes),
    /// Direct where aligned (see `direct`); the buffer is handed back for
    /// reuse.
    Direct(Mapped),
    /// Direct where aligned: a chunk of the body as it came.
    DirectChunk(Bytes),
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Self::Cached(bytes) | Self::DirectChunk(bytes) => bytes.len(),
            Self::Direct(buffer) => buffer.len(),
        }
    }
}

/// A file being written in batches; see the module docs.
struct BatchWriter<'a> {
    tmp: &'a TmpFile,
    pool: &'a Arc<BufferPool>,
    /// Small buffers, for a busy store.
    small: &'a Arc<BufferPool>,
    /// When the buffer being filled was taken.
    filling_since: Instant,
    /// The last buffer (or window, while slow) filled slower than
    /// [`SLOW_RATE`]: chunks are written as they come (see the module docs).
    slow: bool,
    /// When the client was last judged (or the body began): a slow
    /// client's chunks are judged again every [`BUFFER_SIZE`] bytes.
    window_since: Instant,
    /// A slow client's bytes written since `window_since`.
    window_bytes: usize,
    /// Offset from which writes go direct.
    direct_from: u64,
    /// The file, between writes; created by the first one.
    files: Option<Files>,
    /// The write under way; it hands the file back.
    in_flight: Option<JoinHandle<std::io::Result<Files>>>,
    buffer: Option<Batch>,
    /// A direct buffer a finished write handed back.
    spare: Option<Mapped>,
    /// False once the filesystem refused direct I/O.
    direct_possible: bool,
    /// Bytes handed to writes so far: where the next one starts.
    offset: u64,
    /// The background `fdatasync` under way, if any.
    syncing: Option<JoinHandle<std::io::Result<()>>>,
    /// Bytes handed to cached writes since the last background sync started.
    unsynced: u64,
}

impl<'a> BatchWriter<'a> {
    fn new(
        tmp: &'a TmpFile,
        pool: &'a Arc<BufferPool>,
        small: &'a Arc<BufferPool>,
        direct_from: u64,
    ) -> Self {
        let now = Instant::now();
        Self {
            tmp,
            pool,
            small,
            filling_since: now,
            slow: false,
            window_since: now,
            window_bytes: 0,
            direct_from,
            files: None,
            in_flight: None,
            buffer: None,
            spare: None,
            direct_possible: true,
            offset: 0,
            syncing: None,
            unsynced: 0,
        }
    }

    /// Writes a chunk of at least [`BUFFER_SIZE`] as it is, without a copy
    /// (what was buffered before it goes first, as it is): the hashing body
    /// hands over batches of its own, in page-aligned memory, so a large
    /// body is copied once between the socket and the disk. Smaller chunks
    /// (hyper's, at most its 64 KiB read buffer) are copied into buffers
    /// (small ones for a slow client, see [`Self::next_batch`]); a large
    /// chunk is already whole in memory, so writing it at once frees it
    /// soonest, however slowly it came.
    async fn push_chunk(&mut self, chunk: Bytes) -> StorageResult<()> {
        if chunk.len() < BUFFER_SIZE {
            let taken = if self.slow && self.buffer.is_none() {
                0
            } else {
                self.push(&chunk).await?
            };
            if taken < chunk.len() {
                return self.write_slowly(chunk.slice(taken..)).await;
            }
            return Ok(());
        }
        if let Some(buffered) = self.buffer.take() {
            self.write(buffered.into_payload(), false).await?;
        }
        let payload = if self.offset >= self.direct_from && self.direct_possible {
            Payload::DirectChunk(chunk)
        } else {
            Payload::Cached(chunk)
        };
        self.write(payload, false).await
    }

    /// Copies `bytes` in, writing each buffer that fills, until they are
    /// all in or a buffer filled slowly: returns how many were taken.
    /// A buffer ends at a multiple of [`ALIGN`] of the file, so that what
    /// follows may go direct again after a slow client's chunks.
    async fn push(&mut self, bytes: &[u8]) -> StorageResult<usize> {
        let mut taken = 0;
        while taken < bytes.len() {
            if self.buffer.is_none() {
                self.buffer = Some(self.next_batch()?);
                self.filling_since = Instant::now();
            }
            let Some(buffer) = self.buffer.as_mut() else {
                break;
            };
            // The batch ends where the file is at a multiple of ALIGN.
            let end = self.offset + (buffer.len() + buffer.room()) as u64;
            let short = (end % ALIGN as u64) as usize;
            let rest = &bytes[taken..];
            let room = buffer.room().saturating_sub(short);
            taken += buffer.push(&rest[..rest.len().min(room)]);
            if buffer.room() <= short
                && let Some(full) = self.buffer.take()
            {
                let payload = full.into_payload();
                self.judge(payload.len(), self.filling_since.elapsed());
                self.write(payload, false).await?;
                if self.slow {
                    break;
                }
            }
        }
        Ok(taken)
    }

    /// A buffer for what comes next: direct once the file is large enough
    /// and the filesystem has not refused;
    /// a full pooled one otherwise, also when the kernel refuses a new
    /// direct mapping, unless the store's buffers in use are at
    /// [`BUSY_BYTES`] (a small one then). Fails only if the kernel refuses
    /// a pooled one too.
    fn next_batch(&mut self) -> std::io::Result<Batch> {
        if self.offset >= self.direct_from && self.direct_possible {
            let aligned = match self.spare.take() {
                Some(spare) => Ok(spare),
                None => direct::new_buffer(),
            };
            if let Ok(aligned) = aligned {
                return Ok(Batch::Direct(aligned));
            }
        }
        match self.pool.take_within(BUSY_BYTES) {
            Some(full) => Ok(Batch::Cached(full?)),
            None => Ok(Batch::Cached(self.small.take()?)),
        }
    }

    /// Writes what is buffered and `last`, then syncs the file.
    async fn finish(&mut self, last: Option<Bytes>) -> StorageResult<()> {
        match last {
            // Nothing buffered: `last` goes as it is, without a copy.
            Some(last) if self.buffer.is_none() => {
                return self.write(Payload::Cached(last), true).await;
            }
            Some(last) => {
                let taken = self.push(&last).await?;
                if taken < last.len() {
                    return self.write(Payload::Cached(last.slice(taken..)), true).await;
                }
            }
            None => {}
        }
        let tail = self
            .buffer
            .take()
            .map_or(Payload::Cached(Bytes::new()), Batch::into_payload);
        self.write(tail, true).await
    }

    /// Judges the client by its first `bytes`, before any buffer is
    /// taken: a crowd of slow clients starting at once would otherwise
    /// each fill a full buffer first.
    fn judge_start(&mut self, bytes: usize) {
        self.judge(bytes, self.window_since.elapsed());
    }

    /// Judges the client by `bytes` that took `took` to arrive, and starts
    /// the next window of [`Self::write_slowly`].
    fn judge(&mut self, bytes: usize, took: Duration) {
        let slow = slower_than_slow_rate(bytes, took);
        if slow != self.slow {
            tracing::debug!(
                path = %self.tmp.path().display(),
                offset = self.offset,
                bytes,
                ?took,
                "upload judged {}",
                if slow { "slow: chunks written as they come" } else { "fast: buffered" }
            );
        }
        self.slow = slow;
        self.window_since = Instant::now();
        self.window_bytes = 0;
    }

    /// Writes a slow client's `chunk` as it came (see the module docs),
    /// and waits for the write: the chunk is a piece of hyper's read
    /// buffer, which hyper reuses in place only once it is dropped. Every
    /// [`BUFFER_SIZE`] bytes judge the client again.
    async fn write_slowly(&mut self, chunk: Bytes) -> StorageResult<()> {
        self.window_bytes += chunk.len();
        self.write(Payload::Cached(chunk), false).await?;
        self.join().await?;
        if self.window_bytes >= BUFFER_SIZE {
            self.judge(self.window_bytes, self.window_since.elapsed());
        }
        Ok(())
    }

    /// Takes the file back from the write under way, if any.
    async fn join(&mut self) -> StorageResult<()> {
        if let Some(task) = self.in_flight.take() {
            let mut files = joined(task.await)?;
            self.spare = files.spare.take();
            self.direct_possible = files.direct.possible();
            self.files = Some(files);
        }
        Ok(())
    }

    /// Hands `data` to the blocking pool once the previous write is done;
    /// the last write is awaited, with the file's fsync.
    async fn write(&mut self, data: Payload, last: bool) -> StorageResult<()> {
        self.join().await?;
        if !last {
            self.sync_in_background().await?;
        } else if let Some(task) = self.syncing.take() {
            // A sync still running must succeed too: after a failed fsync
            // a later one may report success for pages that were lost.
            joined(task.await)?;
        }
        let offset = self.offset;
        self.offset += data.len() as u64;
        if let Payload::Cached(bytes) = &data {
            self.unsynced += bytes.len() as u64;
        }
        let (tmp, open) = (self.tmp.clone(), self.files.take());
        let task = tokio::task::spawn_blocking(move || {
            let path = tmp.path();
            let mut files = match open {
                Some(files) => files,
                None => Files {
                    cached: Arc::new(File::create(path)?),
                    direct: Direct::Untried,
                    spare: None,
                },
            };
            match data {
                Payload::Cached(bytes) => files.cached.write_all_at(&bytes, offset)?,
                Payload::Direct(mut buffer) => {
                    files
                        .direct
                        .write_at(path, &files.cached, buffer.content(), offset)?;
                    buffer.clear();
                    files.spare = Some(buffer);
                }
                Payload::DirectChunk(bytes) => {
                    files.direct.write_at(path, &files.cached, &bytes, offset)?;
                }
            }
            if last {
                files.cached.sync_data()?;
            }
            Ok(files)
        });
        if last {
            return joined(task.await).map(drop);
        }
        self.in_flight = Some(task);
        Ok(())
    }

    /// Starts an `fdatasync` of what is written so far once [`SYNC_EVERY`]
    /// bytes have gone through the page cache and the previous one is done
    /// (its error, if any, fails the write).
    async fn sync_in_background(&mut self) -> StorageResult<()> {
        if self.unsynced < SYNC_EVERY {
            return Ok(());
        }
        let Some(file) = self.files.as_ref().map(|files| files.cached.clone()) else {
            return Ok(());
        };
        if let Some(task) = self.syncing.take_if(|task| task.is_finished()) {
            joined(task.await)?;
        }
        if self.syncing.is_none() {
            self.unsynced = 0;
            self.syncing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        Ok(())
    }

    /// Waits for work still under way: a write may yet create the file,
    /// and the caller's clean-up of a failed write must come after it.
    async fn settle(&mut self) {
        if let Some(task) = self.in_flight.take() {
            let _ = task.await;
        }
        if let Some(task) = self.syncing.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::buffers::BUFFER_SIZE;
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    /// A file the tests read back: its guard does not remove it.
    fn kept(path: &std::path::Path) -> TmpFile {
        let tmp = TmpFile::new(path.to_path_buf());
        tmp.keep();
        tmp
    }

    fn body_of(data: &[u8], fail_at_end: bool) -> ByteStream {
        let mut chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(1 << 20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if fail_at_end {
            chunks.push(Err(std::io::Error::other("client went away")));
        }
        Box::pin(futures::stream::iter(chunks))
    }

    /// A file large enough for several background syncs is stored whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_syncs_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let pool = Arc::new(BufferPool::default());
        let data = pattern(usize::try_from(2 * SYNC_EVERY).unwrap() + 54_321);
        write_new(&kept(&path), body_of(&data, false), &pool, &pool, u64::MAX)
            .await
            .unwrap();
        assert!(std::fs::read(&path).unwrap() == data, "stored bytes differ");
    }

    /// Past `direct_from` the writer switches to direct buffers; whatever
    /// the chunk sizes, every byte lands in place, also the unaligned tail
    /// and a last chunk that arrives after a full direct buffer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_writes_keep_every_byte() {
        use super::super::direct::DIRECT_BUFFER;
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(BufferPool::default());
        let from = 2 * BUFFER_SIZE as u64;
        for (len, chunk) in [
            (2 * BUFFER_SIZE + 3 * DIRECT_BUFFER + 54_321, 100_003),
            (2 * BUFFER_SIZE + 2 * DIRECT_BUFFER, 1 << 20),
            (2 * BUFFER_SIZE + 1, 4096),
        ] {
            let path = dir.path().join(format!("file-{len}"));
            let data = pattern(len);
            let chunks: Vec<std::io::Result<Bytes>> = data
                .chunks(chunk)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            write_new(
                &kept(&path),
                Box::pin(futures::stream::iter(chunks)),
                &pool,
                &pool,
                from,
            )
            .await
            .unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "{len} bytes differ");
        }
    }

    /// Chunks of at least a buffer (a hashing body's batches) are written
    /// as they came: after small chunks, copied into a pooled buffer, no
    /// pooled buffer is in use again (a copy would hold one partly filled:
    /// the batches do not start at a multiple of the buffer size). Past
    /// `direct_from`, batches in page-aligned memory at aligned offsets go
    /// direct; every byte lands in place either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_chunks_are_written_as_they_came() {
        use super::super::buffers::InUse;
        use crate::mapped::Mapped;
        const MIB: usize = 1 << 20;
        const START: usize = MIB + 10 * 4096;
        let dir = tempfile::tempdir().unwrap();
        let in_use = Arc::new(InUse::default());
        let pool = Arc::new(BufferPool::sharing(BUFFER_SIZE, &in_use));
        let data = pattern(START + 3 * MIB + 54_321);
        for direct_from in [u64::MAX, MIB as u64] {
            // Five small chunks, one up to START, three batches in
            // mappings, a small tail.
            let mut chunks: Vec<Bytes> = data[..500_000]
                .chunks(100_000)
                .map(Bytes::copy_from_slice)
                .collect();
            chunks.push(Bytes::copy_from_slice(&data[500_000..START]));
            for i in 0..3 {
                let mut batch = Mapped::new(MIB).unwrap();
                batch.push(&data[START + i * MIB..START + (i + 1) * MIB]);
                chunks.push(batch.freeze());
            }
            chunks.push(Bytes::copy_from_slice(&data[START + 3 * MIB..]));
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (counter, record) = (in_use.clone(), seen.clone());
            let body = futures::stream::iter(chunks).map(move |chunk| {
                record.lock().unwrap().push(counter.bytes());
                Ok(chunk)
            });
            let path = dir.path().join(format!("file-{direct_from}"));
            write_new(&kept(&path), Box::pin(body), &pool, &pool, direct_from)
                .await
                .unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
            let seen = seen.lock().unwrap();
            assert!(seen[..5].iter().any(|&n| n > 0), "small chunks: {seen:?}");
            assert!(seen[7..].iter().all(|&n| n == 0), "copied: {seen:?}");
        }
    }

    /// A body failing after background syncs started fails the write with
    /// the body's error, once the writes under way have finished. (Whether
    /// `settle` waited is a race this test cannot force; it checks that
    /// what came before the failure was written whole and in order.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failure_after_background_syncs_settles_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let pool = Arc::new(BufferPool::default());
        let data = pattern(usize::try_from(SYNC_EVERY).unwrap() + (3 << 20));
        let err = write_new(&kept(&path), body_of(&data, true), &pool, &pool, u64::MAX)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Body(_)), "{err:?}");
        // Every chunk filled whole buffers, all written before the failure:
        // the file holds exactly the body's bytes.
        assert_eq!(data.len() % BUFFER_SIZE, 0);
        assert!(std::fs::read(&path).unwrap() == data, "bytes differ");
    }

    /// A body that arrives slowly is written as it comes, without a
    /// pooled buffer: it is judged slow by its first two chunks. Every byte
    /// lands in place, also past `direct_from` (the chunks go through the
    /// page cache).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_body_takes_no_buffer() {
        use super::super::buffers::{InUse, TRICKLE_BUFFER_SIZE};
        const PIECE: usize = 10_000;
        let dir = tempfile::tempdir().unwrap();
        let in_use = Arc::new(InUse::default());
        let pool = Arc::new(BufferPool::sharing(BUFFER_SIZE, &in_use));
        let small = Arc::new(BufferPool::sharing(TRICKLE_BUFFER_SIZE, &in_use));
        let data = pattern(2 * BUFFER_SIZE + 54_321);
        for direct_from in [u64::MAX, BUFFER_SIZE as u64] {
            // 10,000 bytes every 4 ms: 2.5 MB/s, well under SLOW_RATE
            // however late the timer fires. Records the pools' bytes in
            // use at each piece.
            let pieces: Vec<Bytes> = data.chunks(PIECE).map(Bytes::copy_from_slice).collect();
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (counter, record) = (in_use.clone(), seen.clone());
            let body = futures::stream::iter(pieces).then(move |piece| {
                let (counter, record) = (counter.clone(), record.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(4)).await;
                    record.lock().unwrap().push(counter.bytes());
                    Ok(piece)
                }
            });
            let path = dir.path().join(format!("slow-{direct_from}"));
            write_new(&kept(&path), Box::pin(body), &pool, &small, direct_from)
                .await
                .unwrap();
            assert!(std::fs::read(&path).unwrap() == data, "stored bytes differ");
            let seen = seen.lock().unwrap();
            assert!(seen.iter().all(|&n| n == 0), "buffers in use: {seen:?}");
        }
    }

    /// A client that speeds up after slow chunks of odd sizes gets buffers
    /// again, the first ending where the file is aligned (so that direct
    /// writes may follow); every byte lands in place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffers_after_slow_chunks_end_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let pool = Arc::new(BufferPool::default());
        let data = pattern(3 * BUFFER_SIZE);
        let tmp = kept(&path);
        let mut writer = BatchWriter::new(&tmp, &pool, &pool, u64::MAX);
        writer
            .write_slowly(Bytes::copy_from_slice(&data[..10_000]))
            .await
            .unwrap();
        assert_eq!(writer.offset, 10_000);
        let taken = writer.push(&data[10_000..]).await.unwrap();
        assert_eq!(taken, data.len() - 10_000);
        // Two buffers written, the first short of full by what aligns it.
        assert!(writer.offset > BUFFER_SIZE as u64, "{}", writer.offset);
        assert_eq!(writer.offset % ALIGN as u64, 0, "unaligned");
        writer.finish(None).await.unwrap();
        assert!(std::fs::read(&path).unwrap() == data, "stored bytes differ");
    }

    /// While the store's buffers in use are at `BUSY_BYTES`, even a fast
    /// upload fills small buffers; once they are given back, full ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_store_gives_uploads_small_buffers() {
        use super::super::buffers::{InUse, TRICKLE_BUFFER_SIZE};
        let dir = tempfile::tempdir().unwrap();
        let in_use = Arc::new(InUse::default());
        let pool = Arc::new(BufferPool::sharing(BUFFER_SIZE, &in_use));
        let small = Arc::new(BufferPool::sharing(TRICKLE_BUFFER_SIZE, &in_use));
        let data = pattern(4 * BUFFER_SIZE);
        // The most bytes in use beyond `base` while `data` is written.
        let most_in_use = async |name: &str, base: usize| {
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let (counter, record) = (in_use.clone(), seen.clone());
            let pieces: Vec<Bytes> = data.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();
            let body = futures::stream::iter(pieces).map(move |piece| {
                let now = counter.bytes();
                record.lock().unwrap().push(now.saturating_sub(base));
                Ok(piece)
            });
            let path = dir.path().join(name);
            write_new(&kept(&path), Box::pin(body), &pool, &small, u64::MAX)
                .await
                .unwrap();
            assert!(
                std::fs::read(&path).unwrap() == data,
                "{name}: bytes differ"
            );
            seen.lock().unwrap().iter().copied().max().unwrap()
        };
        let held = pool.fill_to_busy();
        let busy = most_in_use("busy", in_use.bytes()).await;
        assert!(busy <= 2 * TRICKLE_BUFFER_SIZE, "busy: {busy} bytes in use");
        drop(held);
        let idle = most_in_use("idle", in_use.bytes()).await;
        assert!(idle >= BUFFER_SIZE, "idle: only {idle} bytes in use");
    }
}
