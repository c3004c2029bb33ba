//! Fixed-size I/O buffers, reused across requests.
//!
//! Blob reads and writes move data in pooled pieces: [`BUFFER_SIZE`] for
//! writes, [`LARGE_BUFFER_SIZE`] for reads. Allocating a fresh
//! buffer for each piece made the process's RSS under load several times
//! its live heap (BENCHMARKS.md): glibc gives each of up to 8 × cores
//! threads its own arena, a buffer
//! allocated on one blocking thread and freed on another returns to the
//! first thread's arena, and arenas keep what they once held. A buffer taken
//! from the pool goes back to it when its last user drops it (for a read,
//! when hyper has written it to the socket: see [`Buffer::into_bytes`]), so
//! under a steady load the allocator sees almost no large allocations.
//! Each buffer is an anonymous mapping of its own (as S3 parts are), so
//! what a burst needed beyond the idle buffers goes back to the kernel when
//! the burst ends: as heap `Vec`s, glibc's dynamic mmap threshold moved
//! them into arenas, which kept them (200 slow downloads left 76 MiB of
//! RSS behind, 25 MiB as mappings; peak RSS under the mixed load 20 MiB,
//! 18.5 as mappings).
//!
//! The pool bounds only what it keeps idle ([`KEEP_IDLE_BYTES`]); what is
//! in use is bounded by each stream (a read holds a few buffers ahead of
//! its client, a write two), never by a global limit a few stalled clients
//! could exhaust. Pools that share an [`InUse`] count what they have handed
//! out together, so readers can see when the store's buffers run high and
//! read in smaller pieces (`reader`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use memmap2::MmapMut;

/// Size of a write batch of a PUT. (It was the read chunk too: each chunk
/// read on a blocking thread costs two thread wake-ups, and a 1 MiB blob
/// pulled at 2.3 GB/s with 256 KiB chunks and 1.8 GB/s with 128 KiB ones.)
pub(super) const BUFFER_SIZE: usize = 256 * 1024;
/// Size of the read chunks of blob GETs. Streamed from a blocking thread, a
/// quarter of the wake-ups per byte of [`BUFFER_SIZE`]: pulls of a 64 MiB
/// blob ran 1.15-1.6x as fast (BENCHMARKS.md). Read from the page cache on
/// the runtime thread (`cached`), a blob of up to 1 MiB is one chunk, one
/// write to the socket.
pub(super) const LARGE_BUFFER_SIZE: usize = 1024 * 1024;
/// Size of the read chunks of a client that reads slowly: two of them
/// (one queued, one being written) are all such a download holds; and of
/// the write buffers of uploads while the store is busy (a slow upload
/// takes none: `writer`).
pub(super) const TRICKLE_BUFFER_SIZE: usize = 64 * 1024;
/// Bytes of the store's buffers in use (reads and writes) past which no
/// download or upload takes a full buffer (the check and the take are one
/// atomic step, [`BufferPool::take_within`]): new downloads trickle, and
/// uploads fill small buffers. Enough for eight large downloads at full
/// speed, more than two cores can send.
pub(super) const BUSY_BYTES: usize = 32 * 1024 * 1024;
/// Bytes of idle buffers a pool keeps for reuse; more are freed when
/// returned.
const KEEP_IDLE_BYTES: usize = 4 * 1024 * 1024;

/// Bytes of buffers handed out and not yet returned, by all the pools that
/// share it.
#[derive(Debug, Default)]
pub(super) struct InUse(AtomicUsize);

impl InUse {
    pub(super) fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Buffers of one size not in use.
#[derive(Debug)]
pub(super) struct BufferPool {
    size: usize,
    idle: Mutex<Vec<MmapMut>>,
    in_use: Arc<InUse>,
}

impl Default for BufferPool {
    fn default() -> Self {
        Self::new(BUFFER_SIZE)
    }
}

impl BufferPool {
    /// A pool of buffers of `size` bytes, counting what it hands out on
    /// its own.
    pub(super) fn new(size: usize) -> Self {
        Self::sharing(size, &Arc::default())
    }

    /// A pool of buffers of `size` bytes, counting what it hands out in
    /// `in_use` together with the other pools that share it.
    pub(super) fn sharing(size: usize, in_use: &Arc<InUse>) -> Self {
        Self {
            size,
            idle: Mutex::new(Vec::new()),
            in_use: in_use.clone(),
        }
    }

    /// Bytes handed out and not yet returned, by this pool and the pools
    /// sharing its count.
    pub(super) fn in_use(&self) -> usize {
        self.in_use.bytes()
    }

    /// An empty buffer of [`BufferPool::size`] bytes of capacity; fails
    /// only if the kernel refuses a new mapping.
    pub(super) fn take(self: &Arc<Self>) -> std::io::Result<Buffer> {
        self.in_use.0.fetch_add(self.size, Ordering::Relaxed);
        self.hand_out()
    }

    /// Whether one more buffer would keep the bytes in use within `limit`
    /// (a hint: [`BufferPool::take_within`] is what holds to it).
    pub(super) fn has_room(&self, limit: usize) -> bool {
        self.in_use().saturating_add(self.size) <= limit
    }

    /// Like [`BufferPool::take`], but only if the bytes in use, counted
    /// with the new buffer, stay within `limit`; `None` otherwise. The
    /// check and the count are one atomic step, so readers racing for the
    /// last room cannot all get it.
    pub(super) fn take_within(self: &Arc<Self>, limit: usize) -> Option<std::io::Result<Buffer>> {
        let counter = &self.in_use.0;
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            let next = current.checked_add(self.size).filter(|&n| n <= limit)?;
            match counter.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        Some(self.hand_out())
    }

    /// A buffer whose bytes the caller has already counted as in use; the
    /// count is undone if none can be had.
    fn hand_out(self: &Arc<Self>) -> std::io::Result<Buffer> {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let data = match reused.map_or_else(|| MmapMut::map_anon(self.size), Ok) {
            Ok(data) => data,
            Err(err) => {
                self.in_use.0.fetch_sub(self.size, Ordering::Relaxed);
                return Err(err);
            }
        };
        Ok(Buffer {
            data: Some(data),
            filled: 0,
            pool: self.clone(),
        })
    }

    fn give_back(&self, data: MmapMut) {
        self.in_use.0.fetch_sub(self.size, Ordering::Relaxed);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if (idle.len() + 1) * self.size <= KEEP_IDLE_BYTES && data.len() == self.size {
            idle.push(data);
        }
    }

    /// Buffers of this pool that take the bytes in use to [`BUSY_BYTES`]:
    /// the store is busy while they are held.
    #[cfg(test)]
    pub(super) fn fill_to_busy(self: &Arc<Self>) -> Vec<Buffer> {
        let missing = BUSY_BYTES.saturating_sub(self.in_use());
        (0..missing.div_ceil(self.size))
            .filter_map(|_| self.take().ok())
            .collect()
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A pooled buffer: `data` is its pool's size of bytes (until it is given
/// back, on drop), of which the first `filled` hold content.
#[derive(Debug)]
pub(super) struct Buffer {
    data: Option<MmapMut>,
    filled: usize,
    pool: Arc<BufferPool>,
}

impl Buffer {
    fn data(&self) -> &[u8] {
        self.data.as_deref().unwrap_or_default()
    }

    fn data_mut(&mut self) -> &mut [u8] {
        self.data.as_deref_mut().unwrap_or_default()
    }

    /// The content.
    pub(super) fn filled(&self) -> &[u8] {
        &self.data()[..self.filled]
    }

    /// Bytes that still fit.
    pub(super) fn room(&self) -> usize {
        self.data().len() - self.filled
    }

    /// Appends as much of `bytes` as fits; returns how much that was.
    pub(super) fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        let start = self.filled;
        self.data_mut()[start..start + n].copy_from_slice(&bytes[..n]);
        self.filled += n;
        n
    }

    /// The first `len` bytes (at most the buffer's size) to fill, as content.
    pub(super) fn fill(&mut self, len: usize) -> &mut [u8] {
        self.filled = len.min(self.data().len());
        let filled = self.filled;
        &mut self.data_mut()[..filled]
    }

    /// The content as `Bytes` without a copy; the buffer returns to the
    /// pool when the last clone of them is dropped.
    pub(super) fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.filled()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.pool.give_back(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_when_their_bytes_are_dropped() {
        let pool = Arc::new(BufferPool::default());
        let mut buffer = pool.take().unwrap();
        assert_eq!(buffer.push(b"hello"), 5);
        let bytes = buffer.into_bytes();
        let clone = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(pool.idle(), 0, "a clone still uses it");
        assert_eq!(&clone[..], b"el");
        drop(clone);
        assert_eq!(pool.idle(), 1);

        let mut again = pool.take().unwrap();
        assert!(again.filled().is_empty(), "a reused buffer starts empty");
        assert_eq!(again.fill(3).len(), 3);
        assert_eq!(again.room(), BUFFER_SIZE - 3);
    }

    #[test]
    fn push_stops_at_capacity_and_idle_buffers_are_bounded() {
        let pool = Arc::new(BufferPool::default());
        let mut buffer = pool.take().unwrap();
        let big = vec![7u8; BUFFER_SIZE + 10];
        assert_eq!(buffer.push(&big), BUFFER_SIZE);
        assert_eq!(buffer.push(&big), 0);
        let keep = KEEP_IDLE_BYTES / BUFFER_SIZE;
        let many: Vec<Buffer> = (0..keep + 5).map(|_| pool.take().unwrap()).collect();
        drop(many);
        drop(buffer);
        assert_eq!(pool.idle(), keep);
    }

    /// A pool of large buffers hands out its size, and keeps fewer of them
    /// idle for the same byte budget.
    #[test]
    fn large_pools_keep_the_same_idle_bytes() {
        let pool = Arc::new(BufferPool::new(LARGE_BUFFER_SIZE));
        let mut buffer = pool.take().unwrap();
        assert_eq!(buffer.room(), LARGE_BUFFER_SIZE);
        assert_eq!(buffer.fill(usize::MAX).len(), LARGE_BUFFER_SIZE);
        let many: Vec<Buffer> = (0..8).map(|_| pool.take().unwrap()).collect();
        drop(many);
        drop(buffer);
        assert_eq!(pool.idle(), KEEP_IDLE_BYTES / LARGE_BUFFER_SIZE);
    }

    /// Pools sharing a count see each other's buffers in use, from take to
    /// the drop of the last clone of their bytes.
    #[test]
    fn shared_pools_count_buffers_in_use_together() {
        let in_use = Arc::new(InUse::default());
        let small = Arc::new(BufferPool::sharing(BUFFER_SIZE, &in_use));
        let large = Arc::new(BufferPool::sharing(LARGE_BUFFER_SIZE, &in_use));
        let a = small.take().unwrap();
        let b = large.take().unwrap().into_bytes();
        assert_eq!(small.in_use(), BUFFER_SIZE + LARGE_BUFFER_SIZE);
        assert_eq!(large.in_use(), small.in_use());
        let clone = b.clone();
        drop(b);
        drop(a);
        assert_eq!(in_use.bytes(), LARGE_BUFFER_SIZE, "a clone still holds it");
        drop(clone);
        assert_eq!(in_use.bytes(), 0);
        assert_eq!(
            BufferPool::default().in_use(),
            0,
            "a pool of its own counts alone"
        );
    }

    /// Threads racing for the last room under a limit never take more than
    /// it together; an unconditional take is not limited.
    #[test]
    fn takes_within_a_limit_never_pass_it() {
        let pool = Arc::new(BufferPool::new(BUFFER_SIZE));
        let limit = 10 * BUFFER_SIZE;
        let taken: Vec<Buffer> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        (0..4)
                            .filter_map(|_| pool.take_within(limit))
                            .map(Result::unwrap)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            racers
                .into_iter()
                .flat_map(|racer| racer.join().unwrap())
                .collect()
        });
        assert_eq!(taken.len(), 10);
        assert_eq!(pool.in_use(), limit);
        assert!(!pool.has_room(limit));
        assert!(pool.take_within(limit).is_none());
        let extra = pool.take().unwrap();
        assert_eq!(pool.in_use(), limit + BUFFER_SIZE);
        drop((taken, extra));
        assert_eq!(pool.in_use(), 0);
        assert!(pool.has_room(limit));
        assert!(pool.take_within(limit).is_some());
    }
}
