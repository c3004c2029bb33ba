//! A body stream that hashes and counts what passes through it, and that
//! fails *before* its end when the bytes do not match the expected digest,
//! so the storage write consuming it is abandoned (DESIGN invariant 2).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;

use crate::oci::{Digest, Hasher};
use crate::storage::ByteStream;

/// The marker error a [`HashingBody`] yields on a digest mismatch.
#[derive(Debug, thiserror::Error)]
#[error("content does not match digest {expected} (computed {computed})")]
pub struct DigestMismatch {
    pub expected: Digest,
    pub computed: Digest,
}

/// Hash state and byte count shared between the stream and its owner.
#[derive(Debug)]
pub struct Progress {
    pub hasher: Hasher,
    pub bytes: u64,
}

/// See the module docs.
pub struct HashingBody {
    inner: ByteStream,
    progress: Arc<Mutex<Progress>>,
    expect: Option<Digest>,
    finished: bool,
}

impl HashingBody {
    /// Wraps `inner`; the returned handle reads the progress afterwards.
    pub fn new(
        inner: ByteStream,
        hasher: Hasher,
        expect: Option<Digest>,
    ) -> (Self, Arc<Mutex<Progress>>) {
        let progress = Arc::new(Mutex::new(Progress { hasher, bytes: 0 }));
        let body = Self {
            inner,
            progress: progress.clone(),
            expect,
            finished: false,
        };
        (body, progress)
    }

    fn check_end(&mut self) -> Option<std::io::Result<Bytes>> {
        let expected = self.expect.take()?;
        let computed = match self.progress.lock() {
            Ok(progress) => progress.hasher.clone().finish(),
            Err(_) => return Some(Err(std::io::Error::other("hash state poisoned"))),
        };
        (computed != expected).then(|| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                DigestMismatch { expected, computed },
            ))
        })
    }
}

impl Stream for HashingBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Ok(mut progress) = self.progress.lock() {
                    progress.hasher.update(&chunk);
                    progress.bytes += chunk.len() as u64;
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(self.check_end())
            }
            other => other,
        }
    }
}

/// Whether a storage error came from a [`HashingBody`] mismatch.
pub fn mismatch_of(err: &std::io::Error) -> Option<&DigestMismatch> {
    err.get_ref()?.downcast_ref::<DigestMismatch>()
}
