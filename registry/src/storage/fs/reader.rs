//! Streaming a large file to a client: a blocking thread reads pooled
//! buffers at most [`READ_AHEAD`] chunks ahead of the consumer.
//!
//! One copy per byte (kernel to the buffer) and one channel hand-off per
//! chunk, where `tokio::fs::File` reads into its own buffer, copies, and
//! makes a blocking-pool round trip per read. Large reads use the larger
//! pool's chunks, a quarter of the hand-offs (`buffers`). The reader stops
//! when the stream is dropped (client gone).
//!
//! A client that falls behind does not keep the thread: once the queue has
//! stayed full for [`HOLD`], the thread goes back to the pool and the
//! download trickles: one small chunk at a time, read on a blocking thread
//! only once the client has taken the one queued before it. Before, a download
//! kept its thread for its whole length, so a few hundred slow downloads
//! (tokio's blocking pool has 512 threads) stalled every write and large
//! read of the server; and a slow download kept four 1 MiB chunks (queued,
//! in hand, being written), so 200 clients pulling a large layer at 2 MB/s
//! each held 900 MiB of buffers, where trickling holds two 64 KiB chunks
//! (one queued, one being written). Waiting until hyper had written a
//! chunk whole (one chunk per client) was tried: it deadlocks a consumer
//! that keeps a chunk while it asks for the next (`StreamReader` does),
//! and it saved little (BENCHMARKS.md).
//! A trickling client that takes [`WINDOW_CHUNKS`] chunks (1 MiB) within
//! [`HOLD`], the rate that keeps a full-size download going, gets
//! read-ahead and full chunks again. So does every new
//! download, unless the store's buffers in use have reached [`BUSY_BYTES`]:
//! then it trickles from the start, and no download takes a full chunk
//! that would pass it, which bounds what a crowd of clients starting at
//! once (a node pool rolling out one image) can hold.
//! A thread per chunk for every download cost 15-18% of pull throughput
//! (BENCHMARKS.md); a client that keeps up (at least a chunk per [`HOLD`])
//! keeps its thread.
//!
//! Tried and measured against this (BENCHMARKS.md): reading cached chunks
//! on the runtime thread with `preadv2(RWF_NOWAIT)`, no hand-off at all. It
//! used 14% less server CPU per byte but pulled 64 MiB about 8% slower
//! with the benchmark client, because the read and the send then run one
//! after the other on one thread instead of side by side on two cores.
//! A trickling download has no send to overlap with, so its chunks are
//! read that way when the page cache holds them (`cached::read_cached`):
//! 200 clients at 2 MB/s cost 0.7-0.9 s of server CPU instead of 1.8-2.9.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::thread::Thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::{self, Permit, Sender};

use super::buffers::{BUSY_BYTES, Buffer, BufferPool, LARGE_BUFFER_SIZE, TRICKLE_BUFFER_SIZE};
use super::cached::read_cached;
use crate::storage::ByteStream;

/// Chunks read ahead of the client: bounds the memory of one download to
/// about `READ_AHEAD + 2` pooled buffers (those queued, the one being read,
/// the one hyper is writing).
const READ_AHEAD: usize = 2;

/// How long a reading thread waits for room in a full queue before it goes
/// back to the pool. A client taking less than a chunk per `HOLD` (under
/// about 100 MB/s with 1 MiB chunks) gives its thread back between chunks,
/// and trickles.
const HOLD: Duration = Duration::from_millis(10);

/// Trickle chunks over which a trickling client's rate is judged: 1 MiB,
/// one full-size chunk. Taken within [`HOLD`] (about 100 MB/s, the rate
/// that keeps a full-size download from falling behind), the download
/// reads ahead in full chunks again. A rate over a window rather than a
/// wait per chunk: one late wake-up on a busy machine does not keep a
/// fast client trickling.
const WINDOW_CHUNKS: u32 = (LARGE_BUFFER_SIZE / TRICKLE_BUFFER_SIZE) as u32;

type Item = std::io::Result<Bytes>;

/// Streams `len` bytes of `file` from `start` in chunks of `pool`'s size,
/// or of `trickle`'s while the client is slow; see the module docs.
pub(super) fn stream_file(
    file: File,
    start: u64,
    len: u64,
    pool: Arc<BufferPool>,
    trickle: Arc<BufferPool>,
) -> ByteStream {
    let (tx, mut rx) = mpsc::channel::<Item>(READ_AHEAD);
    let wake = Arc::new(Wake::default());
    let reader = Reader {
        file,
        offset: start,
        end: start.saturating_add(len),
        pool,
        trickle,
        pending: None,
        wake: wake.clone(),
    };
    tokio::spawn(drive(reader, tx));
    Box::pin(futures::stream::poll_fn(move |cx| {
        let next = rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = next {
            wake.room_made();
        }
        next
    }))
}

/// The reading thread, while it waits for room in the queue; woken by the
/// consumer when it takes a chunk. (A plain `park_timeout`: a tokio timer
/// per wait cost 8-20% of pull throughput.)
#[derive(Debug, Default)]
struct Wake {
    waiting: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

impl Wake {
    fn room_made(&self) {
        if self.waiting.load(Ordering::Acquire)
            && let Some(thread) = self.slot().take()
        {
            self.waiting.store(false, Ordering::Release);
            thread.unpark();
        }
    }

    fn register(&self) {
        *self.slot() = Some(std::thread::current());
        self.waiting.store(true, Ordering::Release);
    }

    fn clear(&self) {
        self.waiting.store(false, Ordering::Release);
        self.slot().take();
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Thread>> {
        self.thread.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What is left to read of one download.
struct Reader {
    file: File,
    offset: u64,
    end: u64,
    pool: Arc<BufferPool>,
    trickle: Arc<BufferPool>,
    /// A chunk read but not yet queued: the client had fallen behind.
    pending: Option<Item>,
    wake: Arc<Wake>,
}

/// How a wait for room in the queue ended.
enum Room<'a> {
    Free(Permit<'a, Item>),
    /// The client is gone.
    Closed,
    /// Still full after [`HOLD`].
    Slow,
}

/// Reads on a blocking thread for as long as the client keeps up; when it
/// falls behind (or the store's buffers are busy), queues the chunk in hand
/// once there is room and trickles until the client proves fast again. Ends
/// at the end, on an error, or when the client is gone.
async fn drive(mut reader: Reader, mut tx: Sender<Item>) {
    loop {
        if !reader.busy() {
            match tokio::task::spawn_blocking(move || reader.read_while_taken(tx)).await {
                Ok(Some((left, sender))) => (reader, tx) = (left, sender),
                Ok(None) | Err(_) => return,
            }
            if let Some(item) = reader.pending.take() {
                let Ok(permit) = tx.reserve().await else {
                    return;
                };
                let failed = item.is_err();
                permit.send(item);
                if failed {
                    return;
                }
            }
        }
        match reader.trickle(&tx).await {
            Some(fast_again) => reader = fast_again,
            None => return,
        }
    }
}

impl Reader {
    /// Whether a full chunk would take the store's buffers in use past
    /// [`BUSY_BYTES`].
    fn busy(&self) -> bool {
        !self.pool.has_room(BUSY_BYTES)
    }

    /// Reads chunks and queues each as soon as there is room (the next is
    /// read while the queued ones wait). Returns itself (holding the chunk
    /// in hand, if any) and the sender when the queue stayed full for
    /// [`HOLD`] or the store's buffers became busy; `None` when the
    /// download is over (read, failed, or dropped).
    fn read_while_taken(mut self, tx: Sender<Item>) -> Option<(Self, Sender<Item>)> {
        while self.offset < self.end {
            // Room for a full chunk within the budget, or trickle.
            let item = match self.pool.take_within(BUSY_BYTES) {
                None => return Some((self, tx)),
                Some(buffer) => buffer
                    .and_then(|buffer| self.fill(buffer))
                    .map(Buffer::into_bytes),
            };
            let failed = item.is_err();
            let permit = match self.wait_for_room(&tx) {
                Room::Free(permit) => permit,
                Room::Closed => return None,
                Room::Slow => {
                    self.pending = Some(item);
                    break;
                }
            };
            permit.send(item);
            if failed {
                return None;
            }
        }
        self.pending.is_some().then_some((self, tx))
    }

    /// Reads one [`TRICKLE_BUFFER_SIZE`] chunk at a time, each once the
    /// client has taken everything queued, without a thread in between.
    /// Returns itself when the client took [`WINDOW_CHUNKS`] chunks within
    /// [`HOLD`] and the store's buffers are not busy; `None` when the
    /// download is over.
    async fn trickle(mut self, tx: &Sender<Item>) -> Option<Self> {
        // When the current window began, and the chunks sent in it.
        let mut window = (Instant::now(), 0);
        tracing::debug!(
            offset = self.offset,
            busy = self.busy(),
            "download trickles"
        );
        while self.offset < self.end {
            // Everything sent has been taken once the queue is empty.
            let mut permits = tx.reserve_many(tx.max_capacity()).await.ok()?;
            if window.1 == WINDOW_CHUNKS {
                if window.0.elapsed() <= HOLD && !self.busy() {
                    tracing::debug!(offset = self.offset, "download reads ahead again");
                    return Some(self);
                }
                window = (Instant::now(), 0);
            }
            let permit = permits.next()?;
            let item = match self.read_cached() {
                Some(chunk) => Ok(chunk),
                None => {
                    let pool = self.trickle.clone();
                    let (reader, item) = tokio::task::spawn_blocking(move || {
                        let item = pool.take().and_then(|buffer| self.fill(buffer));
                        (self, item.map(Buffer::into_bytes))
                    })
                    .await
                    .ok()?;
                    self = reader;
                    item
                }
            };
            let failed = item.is_err();
            permit.send(item);
            if failed {
                return None;
            }
            window.1 += 1;
        }
        None
    }

    fn wait_for_room<'a>(&self, tx: &'a Sender<Item>) -> Room<'a> {
        let deadline = Instant::now() + HOLD;
        loop {
            match tx.try_reserve() {
                Ok(permit) => return Room::Free(permit),
                Err(TrySendError::Closed(())) => return Room::Closed,
                Err(TrySendError::Full(())) => {}
            }
            // Register, then look again: room made in between is not missed.
            self.wake.register();
            match tx.try_reserve() {
                Ok(permit) => {
                    self.wake.clear();
                    return Room::Free(permit);
                }
                Err(TrySendError::Closed(())) => {
                    self.wake.clear();
                    return Room::Closed;
                }
                Err(TrySendError::Full(())) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                self.wake.clear();
                return Room::Slow;
            }
            std::thread::park_timeout(deadline - now);
        }
    }

    /// The next trickle chunk, read here if the page cache holds it
    /// (`cached`): the client is slow, so the read has no send to overlap
    /// with, and a hand-off to a blocking thread and back per 64 KiB chunk
    /// cost more than the copy.
    fn read_cached(&mut self) -> Option<Bytes> {
        let buffer = self.trickle.take().ok()?;
        let buffer = read_cached(&self.file, self.offset, self.end, buffer)?;
        self.offset += buffer.filled().len() as u64;
        Some(buffer.into_bytes())
    }

    /// Reads the next chunk into `buffer`, as much as fits.
    fn fill(&mut self, mut buffer: Buffer) -> std::io::Result<Buffer> {
        let size = buffer.room();
        if size == 0 {
            // Would never advance; a pooled buffer always has room.
            return Err(std::io::Error::other("read buffer without room"));
        }
        let n = usize::try_from(self.end - self.offset).map_or(size, |n| n.min(size));
        self.file.read_exact_at(buffer.fill(n), self.offset)?;
        self.offset += n as u64;
        Ok(buffer)
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::StreamExt;

    use super::super::buffers::{BUFFER_SIZE, InUse};
    use super::*;

    /// A file holding `data`, in a directory that goes when dropped.
    pub(in super::super) fn file_with(data: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, data).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file)
    }

    /// A pool of full chunks and a trickle pool counting their buffers in
    /// use together, and the count.
    fn shared_pools() -> (Arc<InUse>, Arc<BufferPool>, Arc<BufferPool>) {
        let in_use = Arc::new(InUse::default());
        let pool = Arc::new(BufferPool::sharing(LARGE_BUFFER_SIZE, &in_use));
        let trickle = Arc::new(BufferPool::sharing(TRICKLE_BUFFER_SIZE, &in_use));
        (in_use, pool, trickle)
    }

    /// A runtime whose blocking pool has a single thread.
    fn one_blocking_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    fn trickle() -> Arc<BufferPool> {
        Arc::new(BufferPool::new(TRICKLE_BUFFER_SIZE))
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
        let (sizes, got) =
            drain(stream_file(file, start as u64, len as u64, pool, trickle())).await;
        assert_eq!(sizes, [BUFFER_SIZE, BUFFER_SIZE, len - 2 * BUFFER_SIZE]);
        assert!(got == data[start..start + len], "streamed bytes differ");
    }

    /// With a pool of large buffers, chunks are that size.
    #[tokio::test]
    async fn large_pools_read_large_chunks() {
        let data = pattern(2 * LARGE_BUFFER_SIZE + 99);
        let (_dir, file) = file_with(&data);
        let pool = Arc::new(BufferPool::new(LARGE_BUFFER_SIZE));
        let (sizes, got) = drain(stream_file(file, 0, data.len() as u64, pool, trickle())).await;
        assert_eq!(sizes, [LARGE_BUFFER_SIZE, LARGE_BUFFER_SIZE, 99]);
        assert!(got == data, "streamed bytes differ");
    }

    /// A client that stops reading does not keep a blocking thread: with a
    /// pool of one, other blocking work runs while the download waits
    /// (which it can only once the reader has given the thread back), and
    /// the download then resumes where it stopped, byte for byte.
    #[test]
    fn a_stalled_client_gives_its_thread_back() {
        let runtime = one_blocking_thread();
        runtime.block_on(async {
            let data = pattern(6 * BUFFER_SIZE + 5);
            let (_dir, file) = file_with(&data);
            let pool = Arc::new(BufferPool::default());
            let mut stream = stream_file(file, 0, data.len() as u64, pool, trickle());
            let mut got = Vec::new();
            // After each chunk taken, the queue refills and the reader
            // waits for room; the probe needs the pool's only thread.
            while let Some(chunk) = stream.next().await {
                got.extend_from_slice(&chunk.unwrap());
                let probe = tokio::task::spawn_blocking(|| 42);
                let probe = tokio::time::timeout(Duration::from_secs(5), probe).await;
                assert_eq!(probe.unwrap().unwrap(), 42, "the blocking pool was free");
            }
            assert!(got == data, "streamed bytes differ");
        });
    }

    /// A file shorter than the length asked for (changed underneath) ends
    /// the stream with an error rather than a short body.
    #[tokio::test]
    async fn a_short_file_is_an_error() {
        let (_dir, file) = file_with(&[7u8; 1000]);
        let pool = Arc::new(BufferPool::default());
        let mut stream = stream_file(file, 0, 5_000, pool, trickle());
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(stream.next().await.is_none());
    }

    /// A client that falls behind gets small chunks, and no more than two
    /// of them are out at a time (one queued, one in its hands); once it
    /// takes them as fast as they come, full chunks again. Every byte
    /// arrives either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_clients_trickle_until_they_catch_up() {
        let data = pattern(48 * LARGE_BUFFER_SIZE + 3);
        let (_dir, file) = file_with(&data);
        let (in_use, pool, trickle) = shared_pools();
        let mut stream = stream_file(file, 0, data.len() as u64, pool, trickle);
        let (mut sizes, mut got) = (Vec::new(), Vec::new());
        let mut most_while_trickling = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            sizes.push(chunk.len());
            got.extend_from_slice(&chunk);
            // Slow for the first 40 chunks, then as fast as it can.
            if sizes.len() <= 40 {
                tokio::time::sleep(2 * HOLD).await;
                if chunk.len() == TRICKLE_BUFFER_SIZE {
                    most_while_trickling = most_while_trickling.max(in_use.bytes());
                }
            }
        }
        assert!(got == data, "streamed bytes differ");
        let first_small = sizes.iter().position(|&n| n == TRICKLE_BUFFER_SIZE);
        let first_small = first_small.expect("a slow client gets small chunks");
        assert!(
            first_small <= 6,
            "trickled only from chunk {first_small}: {sizes:?}"
        );
        assert!(
            most_while_trickling <= 2 * TRICKLE_BUFFER_SIZE,
            "{most_while_trickling} bytes of buffers out while trickling"
        );
        let back = sizes[40..].iter().position(|&n| n == LARGE_BUFFER_SIZE);
        assert!(
            back.is_some(),
            "full chunks again once it keeps up: {sizes:?}"
        );
    }

    /// A trickling download reads what the page cache holds on its own
    /// thread: with the blocking pool's only thread taken, a download of a
    /// cached file on a busy store (which trickles from the start) still
    /// completes, byte for byte.
    #[test]
    fn cached_trickle_chunks_need_no_blocking_thread() {
        let runtime = one_blocking_thread();
        runtime.block_on(async {
            let data = pattern(8 * TRICKLE_BUFFER_SIZE + 5);
            let (_dir, file) = file_with(&data);
            // Read once, so that the page cache holds it.
            let mut copy = vec![0; data.len()];
            file.read_exact_at(&mut copy, 0).unwrap();
            let (_, pool, trickle) = shared_pools();
            let _held = pool.fill_to_busy();
            let (release, blocked) = std::sync::mpsc::channel::<()>();
            let blocker = tokio::task::spawn_blocking(move || blocked.recv());
            let stream = stream_file(file, 0, data.len() as u64, pool, trickle);
            let drained = tokio::time::timeout(Duration::from_secs(10), drain(stream)).await;
            release.send(()).unwrap();
            blocker.await.unwrap().unwrap();
            let (sizes, got) = drained.expect("the download waited for a blocking thread");
            assert!(got == data, "streamed bytes differ");
            assert!(
                sizes.iter().all(|&n| n <= TRICKLE_BUFFER_SIZE),
                "trickled: {sizes:?}"
            );
        });
    }

    /// While the store's buffers in use are at [`BUSY_BYTES`], a new
    /// download reads small chunks from the start, however fast its
    /// client; once they are returned, it reads full chunks again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_stores_start_downloads_trickling() {
        let data = pattern(32 * LARGE_BUFFER_SIZE);
        let (_dir, file) = file_with(&data);
        let (_, pool, trickle) = shared_pools();
        let held = pool.fill_to_busy();
        let mut stream = stream_file(file, 0, data.len() as u64, pool, trickle);
        let (mut sizes, mut got) = (Vec::new(), Vec::new());
        let mut held = Some(held);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            sizes.push(chunk.len());
            got.extend_from_slice(&chunk);
            if sizes.len() == 20 {
                held = None;
            }
        }
        assert!(held.is_none());
        assert!(got == data, "streamed bytes differ");
        assert!(
            sizes[..20].iter().all(|&n| n == TRICKLE_BUFFER_SIZE),
            "small chunks while busy: {sizes:?}"
        );
        assert!(
            sizes[20..].contains(&LARGE_BUFFER_SIZE),
            "full chunks once the buffers are back: {sizes:?}"
        );
    }

    /// A client that goes away while its download trickles leaves nothing
    /// behind: the reading task ends and every buffer is returned, also
    /// when it leaves while the next chunk is being read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_leaving_a_trickle_leaves_no_buffers_behind() {
        let data = pattern(4 * LARGE_BUFFER_SIZE);
        let (in_use, pool, trickle) = shared_pools();
        let held = pool.fill_to_busy();
        for round in 0..40 {
            let (_dir, file) = file_with(&data);
            let mut stream = stream_file(file, 0, data.len() as u64, pool.clone(), trickle.clone());
            // Take a few chunks, let go of the last, then leave a moment
            // later: in some rounds while the reader reads the next one.
            for _ in 0..=round % 4 {
                let chunk = stream.next().await.unwrap().unwrap();
                assert_eq!(chunk.len(), TRICKLE_BUFFER_SIZE);
            }
            let until = Instant::now() + Duration::from_micros(10 * round);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            drop(stream);
        }
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        while in_use.bytes() != 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            in_use.bytes(),
            0,
            "buffers still out after the clients left"
        );
    }

    /// A consumer that keeps each chunk until the next one arrives (as
    /// `StreamReader` does) still gets the whole download while it
    /// trickles.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consumers_holding_the_last_chunk_still_get_the_next() {
        let data = pattern(LARGE_BUFFER_SIZE + 5);
        let (_dir, file) = file_with(&data);
        let (_, pool, trickle) = shared_pools();
        let _held = pool.fill_to_busy();
        let mut stream = stream_file(file, 0, data.len() as u64, pool, trickle);
        let read_all = async {
            let (mut got, mut last) = (Vec::new(), None);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                got.extend_from_slice(&chunk);
                last = Some(chunk);
            }
            drop(last);
            got
        };
        let got = tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("the download went on");
        assert!(got == data, "streamed bytes differ");
    }
}
