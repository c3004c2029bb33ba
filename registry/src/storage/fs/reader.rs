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
//! download waits for room as a task, then takes a thread again. Before,
//! a download kept its thread for its whole length, so a few hundred slow
//! downloads (tokio's blocking pool has 512 threads) stalled every write
//! and large read of the server until their clients caught up. A thread
//! per chunk instead cost 15-18% of pull throughput (BENCHMARKS.md); a
//! client that keeps up (at least a chunk per [`HOLD`]) keeps its thread.
//!
//! Tried and measured against this (BENCHMARKS.md): reading cached chunks
//! on the runtime thread with `preadv2(RWF_NOWAIT)`, no hand-off at all. It
//! used 14% less server CPU per byte but pulled 64 MiB about 8% slower
//! with the benchmark client, because the read and the send then run one
//! after the other on one thread instead of side by side on two cores.

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

use super::buffers::BufferPool;
use crate::storage::ByteStream;

/// Chunks read ahead of the client: bounds the memory of one download to
/// about `READ_AHEAD + 2` pooled buffers (those queued, the one being read,
/// the one hyper is writing).
const READ_AHEAD: usize = 2;

/// How long a reading thread waits for room in a full queue before it goes
/// back to the pool. A client taking less than a chunk per `HOLD` (under
/// about 100 MB/s with 1 MiB chunks) gives its thread back between chunks.
const HOLD: Duration = Duration::from_millis(10);

type Item = std::io::Result<Bytes>;

/// Streams `len` bytes of `file` from `start`; see the module docs.
pub(super) fn stream_file(file: File, start: u64, len: u64, pool: Arc<BufferPool>) -> ByteStream {
    let (tx, mut rx) = mpsc::channel::<Item>(READ_AHEAD);
    let wake = Arc::new(Wake::default());
    let reader = Reader {
        file,
        offset: start,
        end: start.saturating_add(len),
        pool,
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
/// falls behind, waits for room in the queue without a thread, queues the
/// chunk in hand, and goes on. Ends at the end, on an error, or when the
/// client is gone.
async fn drive(mut reader: Reader, mut tx: Sender<Item>) {
    loop {
        match tokio::task::spawn_blocking(move || reader.read_while_taken(tx)).await {
            Ok(Some((left, sender))) => (reader, tx) = (left, sender),
            Ok(None) | Err(_) => return,
        }
        let Some(item) = reader.pending.take() else {
            return;
        };
        let Ok(permit) = tx.reserve().await else {
            return;
        };
        let failed = item.is_err();
        permit.send(item);
        if failed || reader.offset >= reader.end {
            return;
        }
    }
}

impl Reader {
    /// Reads chunks and queues each as soon as there is room (the next is
    /// read while the queued ones wait). Returns itself, holding the chunk
    /// in hand, and the sender when the queue stayed full for [`HOLD`];
    /// `None` when the download is over (read, failed, or dropped).
    fn read_while_taken(mut self, tx: Sender<Item>) -> Option<(Self, Sender<Item>)> {
        while self.offset < self.end {
            let item = self.read_next();
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

    /// The next chunk, one pooled buffer's worth at most.
    fn read_next(&mut self) -> Item {
        let size = self.pool.size();
        let n = usize::try_from(self.end - self.offset).map_or(size, |n| n.min(size));
        let mut buffer = self.pool.take();
        self.file.read_exact_at(buffer.fill(n), self.offset)?;
        self.offset += n as u64;
        Ok(buffer.into_bytes())
    }
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

    /// A client that stops reading does not keep a blocking thread: with a
    /// pool of one, other blocking work runs while the download waits
    /// (which it can only once the reader has given the thread back), and
    /// the download then resumes where it stopped, byte for byte.
    #[test]
    fn a_stalled_client_gives_its_thread_back() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let data = pattern(6 * BUFFER_SIZE + 5);
            let (_dir, file) = file_with(&data);
            let pool = Arc::new(BufferPool::default());
            let mut stream = stream_file(file, 0, data.len() as u64, pool);
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
        let mut stream = stream_file(file, 0, 5_000, pool);
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(stream.next().await.is_none());
    }
}
