//! Fixed-size I/O buffers, reused across requests.
//!
//! Blob reads and writes move data in [`BUFFER_SIZE`] pieces through
//! tokio's blocking pool. Allocating a fresh buffer for each piece made the
//! process's RSS under load several times its live heap (BENCHMARKS.md):
//! glibc gives each of up to 8 × cores threads its own arena, a buffer
//! allocated on one blocking thread and freed on another returns to the
//! first thread's arena, and arenas keep what they once held. A buffer taken
//! from the pool goes back to it when its last user drops it (for a read,
//! when hyper has written it to the socket: see [`Buffer::into_bytes`]), so
//! under a steady load the allocator sees almost no large allocations.
//!
//! The pool bounds only what it keeps idle ([`KEEP_IDLE`]); what is in use
//! is bounded by each stream (a read holds a few buffers ahead of its
//! client, a write two), never by a global limit a few stalled clients
//! could exhaust.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// Size of every buffer: a read chunk of a blob GET and a write batch of a
/// PUT. Each buffer costs two thread wake-ups (hand-off to the blocking
/// pool and back), which bound small pulls: a 1 MiB blob pulled at
/// 2.3 GB/s with 256 KiB buffers and 1.8 GB/s with 128 KiB ones (c=1,
/// quiet machine), while peak RSS under the mixed load was about 4 MiB
/// higher (16 connections, each holding a few buffers).
pub(super) const BUFFER_SIZE: usize = 256 * 1024;
/// Idle buffers kept for reuse (4 MiB); more are freed when returned.
const KEEP_IDLE: usize = 16;

/// Buffers not in use.
#[derive(Debug, Default)]
pub(super) struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// An empty buffer of [`BUFFER_SIZE`] bytes of capacity.
    pub(super) fn take(self: &Arc<Self>) -> Buffer {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        Buffer {
            data: reused.unwrap_or_else(|| vec![0; BUFFER_SIZE]),
            filled: 0,
            pool: self.clone(),
        }
    }

    fn give_back(&self, data: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < KEEP_IDLE && data.len() == BUFFER_SIZE {
            idle.push(data);
        }
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A pooled buffer: `data` is always [`BUFFER_SIZE`] initialised bytes, of
/// which the first `filled` hold content.
#[derive(Debug)]
pub(super) struct Buffer {
    data: Vec<u8>,
    filled: usize,
    pool: Arc<BufferPool>,
}

impl Buffer {
    /// The content.
    pub(super) fn filled(&self) -> &[u8] {
        &self.data[..self.filled]
    }

    /// Bytes that still fit.
    pub(super) fn room(&self) -> usize {
        self.data.len() - self.filled
    }

    /// Appends as much of `bytes` as fits; returns how much that was.
    pub(super) fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        self.data[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
        self.filled += n;
        n
    }

    /// The first `len` bytes (at most [`BUFFER_SIZE`]) to fill, as content.
    pub(super) fn fill(&mut self, len: usize) -> &mut [u8] {
        self.filled = len.min(self.data.len());
        &mut self.data[..self.filled]
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
        self.pool.give_back(std::mem::take(&mut self.data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_return_when_their_bytes_are_dropped() {
        let pool = Arc::new(BufferPool::default());
        let mut buffer = pool.take();
        assert_eq!(buffer.push(b"hello"), 5);
        let bytes = buffer.into_bytes();
        let clone = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(pool.idle(), 0, "a clone still uses it");
        assert_eq!(&clone[..], b"el");
        drop(clone);
        assert_eq!(pool.idle(), 1);

        let mut again = pool.take();
        assert!(again.filled().is_empty(), "a reused buffer starts empty");
        assert_eq!(again.fill(3).len(), 3);
        assert_eq!(again.room(), BUFFER_SIZE - 3);
    }

    #[test]
    fn push_stops_at_capacity_and_idle_buffers_are_bounded() {
        let pool = Arc::new(BufferPool::default());
        let mut buffer = pool.take();
        let big = vec![7u8; BUFFER_SIZE + 10];
        assert_eq!(buffer.push(&big), BUFFER_SIZE);
        assert_eq!(buffer.push(&big), 0);
        let many: Vec<Buffer> = (0..KEEP_IDLE + 5).map(|_| pool.take()).collect();
        drop(many);
        drop(buffer);
        assert_eq!(pool.idle(), KEEP_IDLE);
    }
}
