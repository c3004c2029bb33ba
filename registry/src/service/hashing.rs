//! A body stream that hashes and counts what passes through it, and that
//! fails *before* its end when the bytes do not match the expected digest,
//! so the storage write consuming it is abandoned (DESIGN invariant 2).
//!
//! A large body is hashed on a thread of its own while it is received and
//! written: on one thread, receiving and hashing a blob ran at about half
//! the speed SHA-256 allows (BENCHMARKS.md). Small bodies (manifests, most
//! layers of a mixed load) are hashed inline, which costs less than a
//! hand-off. At most one hashing thread per core runs at a time (more would
//! not hash faster); a body that finds them all busy is hashed inline. That
//! bound also keeps hashers, which wait for the body, from taking every
//! thread of the blocking pool that the writers of those bodies need.
//!
//! On a hashing thread, the body is gathered into batches in buffers of our
//! own ([`Mapped`], page-aligned), and the stream yields those batches in
//! place of the client's chunks: the thread hashes a batch while the
//! storage driver writes the same bytes, so a large body is copied once on
//! its way from the socket to the disk (it was copied twice, once for each).
//! Batches end at multiples of [`BATCH_BYTES`] of the body, so a file
//! written from offset 0 meets each at an offset direct I/O accepts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::mapped::{Mapped, Spare};
use crate::oci::{Digest, Hasher};
use crate::storage::ByteStream;

/// Bytes hashed inline before the rest of a body goes to a hashing thread.
/// 1 MiB was slower for 4 MiB upload chunks (BENCHMARKS.md): the hand-off
/// costs more than the overlap saves on a few MiB.
const INLINE_MAX: u64 = 4 * 1024 * 1024;
/// Chunks are gathered into batches of this size for the hashing thread, so
/// that a hand-off (and a wake-up) is paid per batch, not per chunk; the
/// storage driver writes the same batches, and the filesystem's direct
/// writes are fastest at 1 MiB (`storage/fs/direct.rs`).
const BATCH_BYTES: usize = 1024 * 1024;
/// Batches queued for the hashing thread: with [`BATCH_BYTES`], about the
/// most a body can be ahead of its hash (the memory it pins, with the
/// batch filling and the one being hashed, which the storage driver may be
/// writing). With two, a 64 MiB push peaked 1 MiB higher and ran no faster.
const QUEUED_BATCHES: usize = 1;

/// Hashing threads running now, across all bodies.
static HASHERS: AtomicUsize = AtomicUsize::new(0);

/// The most hashing threads at a time: one per core.
fn max_hashers() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A running hashing thread's place under [`max_hashers`], given back on
/// drop.
struct HasherSlot;

impl HasherSlot {
    fn take() -> Option<Self> {
        HASHERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_hashers()).then_some(n + 1)
            })
            .ok()
            .map(|_| Self)
    }
}

impl Drop for HasherSlot {
    fn drop(&mut self) {
        HASHERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The marker error a [`hashing_body`] yields on a digest mismatch.
#[derive(Debug, thiserror::Error)]
#[error("content does not match digest {expected} (computed {computed})")]
pub struct DigestMismatch {
    pub expected: Digest,
    pub computed: Digest,
}

/// The marker error a [`hashing_body`] yields when hashing itself failed
/// (its thread stopped, its state was poisoned by a panic): the server's
/// fault, not the client's body.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HashingFailed(pub &'static str);

/// Hash state and byte count shared between the stream and its owner.
/// `bytes` counts as the body passes; `hasher` holds the final state once
/// the body has ended (before that, the initial one).
#[derive(Debug)]
pub struct Progress {
    pub hasher: Hasher,
    pub bytes: u64,
}

/// Where the hash state is while the body streams.
enum Hashing {
    Inline(Hasher),
    Thread {
        batches: mpsc::Sender<Bytes>,
        /// The batch being filled, holding the body from `batch_start`.
        batch: Mapped,
        batch_start: u64,
        /// Batches whose last user (the hashing thread or the storage
        /// driver) is done come back here, so that their memory is reused
        /// rather than mapped (and faulted in) again.
        spare: Spare,
        done: JoinHandle<Hasher>,
    },
    /// The thread has every batch and finishes the hash.
    Finishing(JoinHandle<Hasher>),
    /// Ended, or failed: the stream yields nothing more.
    Over,
}

struct State {
    inner: ByteStream,
    progress: Arc<Mutex<Progress>>,
    expect: Option<Digest>,
    hashing: Hashing,
    seen: u64,
    /// Full batches not yet yielded.
    ready: VecDeque<Bytes>,
    /// The body has ended; what is left to yield is in `ready`, then the
    /// verdict.
    ended: bool,
}

/// Wraps `inner` (see the module docs); the returned handle reads the
/// progress afterwards.
pub fn hashing_body(
    inner: ByteStream,
    hasher: Hasher,
    expect: Option<Digest>,
) -> (ByteStream, Arc<Mutex<Progress>>) {
    let progress = Arc::new(Mutex::new(Progress {
        hasher: hasher.clone(),
        bytes: 0,
    }));
    let state = State {
        inner,
        progress: progress.clone(),
        expect,
        hashing: Hashing::Inline(hasher),
        seen: 0,
        ready: VecDeque::new(),
        ended: false,
    };
    let body = futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    });
    (Box::pin(body), progress)
}

impl State {
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            if self.ended {
                return self.verdict().await;
            }
            if matches!(self.hashing, Hashing::Over) {
                return None;
            }
            match self.inner.next().await {
                Some(Ok(chunk)) => match self.hash(chunk).await {
                    Ok(Some(chunk)) => return Some(Ok(chunk)),
                    Ok(None) => {}
                    Err(err) => return self.fail(err),
                },
                Some(Err(err)) => return self.fail(err),
                None => {
                    self.ended = true;
                    if let Err(err) = self.send_last_batch().await {
                        return self.fail(err);
                    }
                }
            }
        }
    }

    /// Hashes `chunk`, or hands it to the hashing thread: the chunk itself
    /// when it is to be yielded as it came (hashed inline), nothing when it
    /// went into batches (those that filled are in `ready`).
    async fn hash(&mut self, chunk: Bytes) -> std::io::Result<Option<Bytes>> {
        self.seen += chunk.len() as u64;
        if let Ok(mut progress) = self.progress.lock() {
            progress.bytes = self.seen;
        }
        match &mut self.hashing {
            Hashing::Inline(hasher) => {
                hasher.update(&chunk);
                // Where the kernel refuses the first batch's mapping, the
                // body stays inline: slower, but nothing fails.
                if self.seen > INLINE_MAX
                    && let Some(slot) = HasherSlot::take()
                    && let Ok(batch) = Mapped::new(BATCH_BYTES)
                {
                    let inline = std::mem::replace(&mut self.hashing, Hashing::Over);
                    self.hashing = spawn_hasher(inline, slot, batch, self.seen);
                }
                Ok(Some(chunk))
            }
            Hashing::Thread {
                batches,
                batch,
                batch_start,
                spare,
                ..
            } => {
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let batch_end = (*batch_start / BATCH_BYTES as u64 + 1) * BATCH_BYTES as u64;
                    let room = (batch_end - *batch_start) as usize - batch.len();
                    let n = batch.push(&rest[..rest.len().min(room)]);
                    rest = &rest[n..];
                    if n == room {
                        let next = match spare.lock().ok().and_then(|mut spare| spare.pop()) {
                            Some(reused) => reused,
                            None => Mapped::new(BATCH_BYTES).map_err(|_| {
                                std::io::Error::other(HashingFailed(
                                    "the kernel refused memory for a batch",
                                ))
                            })?,
                        };
                        let full = std::mem::replace(batch, next).freeze_into(spare);
                        *batch_start = batch_end;
                        batches
                            .send(full.clone())
                            .await
                            .map_err(|_| hasher_gone())?;
                        self.ready.push_back(full);
                    }
                }
                Ok(None)
            }
            Hashing::Finishing(_) | Hashing::Over => Ok(Some(chunk)),
        }
    }

    /// The body ended: the partly filled batch, if any, goes to the hashing
    /// thread and into `ready`, and the thread is told that was all.
    async fn send_last_batch(&mut self) -> std::io::Result<()> {
        let hashing = std::mem::replace(&mut self.hashing, Hashing::Over);
        let Hashing::Thread {
            batches,
            batch,
            spare,
            done,
            ..
        } = hashing
        else {
            self.hashing = hashing;
            return Ok(());
        };
        if !batch.is_empty() {
            let last = batch.freeze_into(&spare);
            batches
                .send(last.clone())
                .await
                .map_err(|_| hasher_gone())?;
            self.ready.push_back(last);
        }
        self.hashing = Hashing::Finishing(done);
        Ok(())
    }

    /// After every byte: the final hash state, and the mismatch error if
    /// the bytes are not what was expected.
    async fn verdict(&mut self) -> Option<std::io::Result<Bytes>> {
        let hasher = match std::mem::replace(&mut self.hashing, Hashing::Over) {
            Hashing::Inline(hasher) => hasher,
            Hashing::Finishing(done) => match done.await {
                Ok(hasher) => hasher,
                Err(_) => return Some(Err(hasher_gone())),
            },
            // `send_last_batch` leaves no `Thread` behind.
            Hashing::Thread { .. } => return Some(Err(hasher_gone())),
            Hashing::Over => return None,
        };
        match self.progress.lock() {
            Ok(mut progress) => progress.hasher = hasher.clone(),
            Err(_) => {
                return Some(Err(std::io::Error::other(HashingFailed(
                    "hash state poisoned",
                ))));
            }
        }
        let expected = self.expect.take()?;
        let computed = hasher.finish();
        (computed != expected).then(|| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                DigestMismatch { expected, computed },
            ))
        })
    }

    fn fail(&mut self, err: std::io::Error) -> Option<std::io::Result<Bytes>> {
        // Dropping the sender ends the hashing thread.
        self.hashing = Hashing::Over;
        self.ready.clear();
        Some(Err(err))
    }
}

/// Moves an inline hash state to a thread of its own, which holds `slot`
/// until it ends; `seen` bytes of the body have been hashed inline, and
/// `batch` is the first batch's buffer.
fn spawn_hasher(hashing: Hashing, slot: HasherSlot, batch: Mapped, seen: u64) -> Hashing {
    let Hashing::Inline(mut hasher) = hashing else {
        return hashing;
    };
    let (batches, mut queued) = mpsc::channel::<Bytes>(QUEUED_BATCHES);
    let done = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        while let Some(batch) = queued.blocking_recv() {
            hasher.update(&batch);
        }
        hasher
    });
    Hashing::Thread {
        batches,
        batch,
        batch_start: seen,
        spare: Spare::default(),
        done,
    }
}

fn hasher_gone() -> std::io::Error {
    std::io::Error::other(HashingFailed("the hashing thread stopped"))
}

/// Whether a storage error came from a [`hashing_body`] mismatch.
pub fn mismatch_of(err: &std::io::Error) -> Option<&DigestMismatch> {
    err.get_ref()?.downcast_ref::<DigestMismatch>()
}

/// Whether a storage error came from a [`hashing_body`] that failed itself.
pub fn hashing_failure_of(err: &std::io::Error) -> Option<&HashingFailed> {
    err.get_ref()?.downcast_ref::<HashingFailed>()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::oci::Algorithm;

    fn body_of(data: &[u8], chunk: usize) -> ByteStream {
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// The hashing slots are global: tests that use them take turns when
    /// they share a process (`cargo test`; nextest runs each alone).
    static SLOTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Everything the stream yields, and the error that ended it, if any.
    async fn drain(mut body: ByteStream) -> (Vec<u8>, Option<std::io::Error>) {
        let mut out = Vec::new();
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(err) => return (out, Some(err)),
            }
        }
        (out, None)
    }

    /// Sizes below, at and well above the inline limit, in chunks that do
    /// and do not divide a batch: the bytes pass unchanged, the final hash
    /// state and count are the body's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_bytes_through_and_hashes_them_inline_or_on_a_thread() {
        let _turn = SLOTS.lock().await;
        for (len, chunk) in [
            (0, 1),
            (1000, 7),
            (INLINE_MAX as usize, 65_536),
            (INLINE_MAX as usize + 1, 65_536),
            (3 * INLINE_MAX as usize + 12_345, 65_521),
        ] {
            let data = pattern(len);
            let digest = Digest::of(Algorithm::Sha256, &data);
            let (body, progress) = hashing_body(
                body_of(&data, chunk),
                Hasher::new(Algorithm::Sha256),
                Some(digest.clone()),
            );
            let (out, err) = drain(body).await;
            assert!(err.is_none(), "{len}: {err:?}");
            assert!(out == data, "{len}: bytes changed");
            let progress = progress.lock().unwrap();
            assert_eq!(progress.bytes, len as u64);
            assert_eq!(progress.hasher.clone().finish(), digest, "{len}");
        }
    }

    /// On a hashing thread, chunks are copied into its batches, not kept:
    /// once the consumer drops a chunk nothing else holds it, so hyper can
    /// reuse its read buffer. Kept chunks made every read allocate a fresh
    /// buffer: about 100,000 page faults per GiB pushed (BENCHMARKS.md).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_sent_to_the_thread_are_not_kept() {
        let _turn = SLOTS.lock().await;
        let head = pattern(INLINE_MAX as usize + 1);
        let small: Vec<Bytes> = (0..8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let mut chunks = vec![Ok(Bytes::from(head.clone()))];
        chunks.extend(small.iter().cloned().map(Ok));
        let (mut body, _) = hashing_body(
            Box::pin(futures::stream::iter(chunks)),
            Hasher::new(Algorithm::Sha256),
            None,
        );
        assert!(body.next().await.unwrap().unwrap() == head, "the head");
        let batch = body.next().await.unwrap().unwrap();
        let expected: Vec<u8> = small.iter().flat_map(|c| c.to_vec()).collect();
        assert!(batch == expected, "the rest, as one batch");
        assert!(body.next().await.is_none());
        for (i, kept) in small.iter().enumerate() {
            assert!(kept.is_unique(), "chunk {i} is still held");
        }
    }

    /// On a hashing thread the stream yields its batches: page-aligned
    /// memory (direct writes take it as it is), each full one starting at a
    /// multiple of [`BATCH_BYTES`] of the body, and their buffers reused,
    /// not mapped afresh for each batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn yields_aligned_batches_from_reused_buffers() {
        let _turn = SLOTS.lock().await;
        let data = pattern(40 * BATCH_BYTES + 12_345);
        let (mut body, _) = hashing_body(
            body_of(&data, 65_521),
            Hasher::new(Algorithm::Sha256),
            Some(Digest::of(Algorithm::Sha256, &data)),
        );
        let (mut offset, mut full, mut buffers) = (0, 0, std::collections::HashSet::new());
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            assert!(
                chunk[..] == data[offset..offset + chunk.len()],
                "at {offset}"
            );
            if chunk.len() == BATCH_BYTES {
                full += 1;
                assert_eq!(offset % BATCH_BYTES, 0, "a batch at {offset}");
                assert_eq!(chunk.as_ptr() as usize % 4096, 0, "memory at {offset}");
                buffers.insert(chunk.as_ptr() as usize);
            }
            offset += chunk.len();
        }
        assert_eq!(offset, data.len());
        assert!(full >= 35, "{full} full batches");
        assert!(
            buffers.len() <= QUEUED_BATCHES + 4,
            "{} buffers for {full} batches",
            buffers.len()
        );
    }

    /// A mismatch is reported in place of the end, after every byte, so a
    /// writer never sees the body end and never completes (it removes what it
    /// wrote).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mismatch_replaces_the_end_of_the_body() {
        let _turn = SLOTS.lock().await;
        for len in [10, 3 * INLINE_MAX as usize] {
            let data = pattern(len);
            let wrong = Digest::of(Algorithm::Sha256, b"something else");
            let (body, _) = hashing_body(
                body_of(&data, 65_536),
                Hasher::new(Algorithm::Sha256),
                Some(wrong.clone()),
            );
            let (out, err) = drain(body).await;
            assert!(out == data, "{len}: bytes before the error");
            let err = err.unwrap();
            let mismatch = mismatch_of(&err).unwrap();
            assert_eq!(mismatch.expected, wrong);
            assert_eq!(mismatch.computed, Digest::of(Algorithm::Sha256, &data));
        }
    }

    /// With every hashing thread busy, a large body is hashed inline, whole,
    /// and the slots are all given back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_inline_when_every_hashing_thread_is_busy() {
        let _turn = SLOTS.lock().await;
        let busy: Vec<HasherSlot> = std::iter::from_fn(HasherSlot::take).collect();
        assert_eq!(busy.len(), max_hashers());
        let data = pattern(3 * INLINE_MAX as usize);
        let digest = Digest::of(Algorithm::Sha256, &data);
        let (body, progress) = hashing_body(
            body_of(&data, 65_536),
            Hasher::new(Algorithm::Sha256),
            Some(digest.clone()),
        );
        let (out, err) = drain(body).await;
        assert!(err.is_none() && out == data);
        assert_eq!(progress.lock().unwrap().hasher.clone().finish(), digest);
        assert_eq!(HASHERS.load(Ordering::Acquire), max_hashers());
        drop(busy);
        assert_eq!(HASHERS.load(Ordering::Acquire), 0);
    }

    /// A resumed hash state (a later upload chunk) continues where it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn continues_a_saved_hash_state() {
        let _turn = SLOTS.lock().await;
        let data = pattern(2 * INLINE_MAX as usize);
        let (first, rest) = data.split_at(1000);
        let mut hasher = Hasher::new(Algorithm::Sha256);
        hasher.update(first);
        let (body, progress) = hashing_body(body_of(rest, 65_536), hasher, None);
        let (out, err) = drain(body).await;
        assert!(err.is_none() && out == rest);
        let progress = progress.lock().unwrap();
        assert_eq!(
            progress.hasher.clone().finish(),
            Digest::of(Algorithm::Sha256, &data)
        );
    }

    /// An error from the client's body ends the stream with that error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_body_fails_the_stream() {
        let _turn = SLOTS.lock().await;
        let data = pattern(2 * INLINE_MAX as usize);
        let mut chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(65_536)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        chunks.push(Err(std::io::Error::other("client went away")));
        let (body, _) = hashing_body(
            Box::pin(futures::stream::iter(chunks)),
            Hasher::new(Algorithm::Sha256),
            None,
        );
        let (out, err) = drain(body).await;
        assert!(out == data);
        assert_eq!(err.unwrap().to_string(), "client went away");
    }
}
