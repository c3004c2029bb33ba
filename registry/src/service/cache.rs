//! A small in-process cache of manifest bodies by digest.
//!
//! Safe to lose and safe across replicas (DESIGN invariant 5): a digest names
//! immutable content, so a cached body is never stale. Visibility is not
//! cached: every read still checks the repository's link (and resolves the
//! tag) in storage, so a deletion on any replica takes effect at once. Only
//! the body read is saved — one storage round trip per manifest GET, which on
//! S3 is a whole request.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

use crate::oci::Digest;

/// Total bytes of bodies kept: small, so the server's RSS stays low.
const CAPACITY_BYTES: usize = 2 * 1024 * 1024;
/// Larger bodies are not cached (most manifests are a few KiB).
const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Bodies in insertion order; the oldest go first when full.
#[derive(Debug, Default)]
pub struct ManifestCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    bodies: HashMap<Digest, Bytes>,
    order: VecDeque<Digest>,
    bytes: usize,
}

impl ManifestCache {
    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.inner.lock().ok()?.bodies.get(digest).cloned()
    }

    /// Keeps `body`, which the caller read from storage under `digest`.
    pub fn insert(&self, digest: &Digest, body: &Bytes) {
        if body.len() > MAX_ENTRY_BYTES {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.bodies.contains_key(digest) {
            return;
        }
        while inner.bytes + body.len() > CAPACITY_BYTES {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(evicted) = inner.bodies.remove(&old) {
                inner.bytes -= evicted.len();
            }
        }
        inner.bytes += body.len();
        inner.order.push_back(digest.clone());
        // A copy, so a small body does not pin a larger buffer it was cut from.
        inner
            .bodies
            .insert(digest.clone(), Bytes::copy_from_slice(body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn keeps_bodies_and_evicts_the_oldest_when_full() {
        let cache = ManifestCache::default();
        let body = Bytes::from(vec![7u8; MAX_ENTRY_BYTES]);
        let digests: Vec<Digest> = (0..40u32)
            .map(|i| Digest::of(Algorithm::Sha256, &i.to_le_bytes()))
            .collect();
        for d in &digests {
            cache.insert(d, &body);
        }
        let kept = CAPACITY_BYTES / MAX_ENTRY_BYTES;
        assert!(cache.get(&digests[0]).is_none(), "oldest evicted");
        assert_eq!(cache.get(&digests[39]).as_deref(), Some(&body[..]));
        let held = digests.iter().filter(|d| cache.get(d).is_some()).count();
        assert_eq!(held, kept);
    }

    #[test]
    fn skips_large_bodies() {
        let cache = ManifestCache::default();
        let d = Digest::of(Algorithm::Sha256, b"x");
        cache.insert(&d, &Bytes::from(vec![0u8; MAX_ENTRY_BYTES + 1]));
        assert!(cache.get(&d).is_none());
    }
}
