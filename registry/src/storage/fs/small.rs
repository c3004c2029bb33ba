//! Small objects kept in memory: the link and tag records every manifest
//! GET reads.
//!
//! A manifest GET by tag reads two records (the tag, then the repository's
//! link to the manifest), each an open, a stat, a read and a close; the
//! syscalls are most of what such a request costs the server. A record
//! found here costs one `stat`.
//!
//! Safe to lose, and never older than the last completed write: one
//! process owns a store (see the parent module), which forgets a key here
//! after it replaces or deletes it, and a read that ran concurrently with
//! any write is not kept (generations, as in `listing`). The `stat` of
//! every hit compares the file's identity (inode, size, modification time:
//! its etag) with what was read: a best-effort guard against edits from
//! outside the driver, and what answers a deleted object with not found.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use crate::storage::ObjectMeta;

/// Objects up to this size are kept: records are about 200 bytes.
pub(super) const SMALL_MAX: u64 = 4 * 1024;
/// Bytes kept in all (contents, keys and a per-entry allowance), oldest
/// first out: about 80 records, the tags and links of the images being
/// pulled. 256 KiB raised the peak RSS under the mixed load by 0.9-1.8 MiB
/// (the allocations of entries coming and going, more than what they
/// hold), past the memory target; 32 KiB left it level (BENCHMARKS.md).
const CAPACITY_BYTES: usize = 32 * 1024;
/// What an entry costs besides its key and content (map slot, queue slot,
/// etag, `Bytes`).
const ENTRY_OVERHEAD: usize = 128;

#[derive(Debug, Default)]
pub(super) struct SmallCache {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Keys in insertion order; may name entries since removed.
    order: VecDeque<String>,
    bytes: usize,
    /// Advances on every write; a read started before a write is not kept.
    generation: u64,
}

#[derive(Debug)]
struct Entry {
    data: Bytes,
    /// The etag of the file `data` was read from.
    etag: String,
}

impl SmallCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every statement leaves the state consistent; a panic elsewhere
        // cannot make it serve a wrong object.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Taken before a read of the file, and handed to [`SmallCache::insert`].
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The content of `key` if it was read from the file `meta` describes
    /// (by its etag, from a `stat` just now).
    pub(super) fn get(&self, key: &str, meta: &ObjectMeta) -> Option<Bytes> {
        let state = self.lock();
        let entry = state.entries.get(key)?;
        (entry.etag == meta.etag).then(|| entry.data.clone())
    }

    /// Keeps `data`, read from `key`'s file as `meta` describes it, unless
    /// it is large or a write has completed since `since`
    /// ([`SmallCache::generation`] before the read).
    pub(super) fn insert(&self, key: &str, since: u64, data: &Bytes, meta: &ObjectMeta) {
        if meta.size > SMALL_MAX || data.len() as u64 != meta.size {
            return;
        }
        let added = weight(key, data);
        let mut state = self.lock();
        if state.generation != since {
            return;
        }
        // One edited from outside: its entry is older than `data`.
        state.remove(key);
        while state.bytes + added > CAPACITY_BYTES {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            if let Some(old) = state.entries.remove(&oldest) {
                state.bytes -= weight(&oldest, &old.data);
            }
        }
        state.bytes += added;
        state.order.push_back(key.to_owned());
        // A copy, so a record does not pin a larger buffer it was cut from.
        let entry = Entry {
            data: Bytes::copy_from_slice(data),
            etag: meta.etag.clone(),
        };
        state.entries.insert(key.to_owned(), entry);
    }

    /// Forgets `key`: called once a write or delete of it has completed (or
    /// failed, which may have changed it too).
    pub(super) fn invalidate(&self, key: &str) {
        let mut state = self.lock();
        state.generation += 1;
        state.remove(key);
    }
}

impl State {
    /// Drops `key`'s entry, if any. Its queue slot stays until it comes up
    /// (a re-inserted key gets a second one, and the first then evicts it
    /// early, which is harmless); once stale slots outnumber the entries,
    /// they are swept, so the queue stays bounded.
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= weight(key, &old.data);
            if self.order.len() > 2 * self.entries.len() + 64 {
                let entries = &self.entries;
                self.order.retain(|k| entries.contains_key(k));
            }
        }
    }
}

fn weight(key: &str, data: &Bytes) -> usize {
    key.len() + data.len() + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::UNIX_EPOCH;

    use super::*;

    fn meta(size: usize, etag: &str) -> ObjectMeta {
        ObjectMeta {
            size: size as u64,
            etag: etag.into(),
            last_modified: UNIX_EPOCH,
        }
    }

    #[test]
    fn a_hit_needs_the_same_file() {
        let cache = SmallCache::default();
        let data = Bytes::from_static(b"record");
        cache.insert("k", cache.generation(), &data, &meta(6, "a"));
        assert_eq!(cache.get("k", &meta(6, "a")), Some(data.clone()));
        assert_eq!(cache.get("k", &meta(6, "b")), None, "replaced from outside");
        assert_eq!(cache.get("other", &meta(6, "a")), None);
        let newer = Bytes::from_static(b"edited");
        cache.insert("k", cache.generation(), &newer, &meta(6, "b"));
        assert_eq!(
            cache.get("k", &meta(6, "b")),
            Some(newer),
            "read again, kept"
        );
        assert_eq!(cache.lock().bytes, weight("k", &data));
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = SmallCache::default();
        let since = cache.generation();
        cache.invalidate("anything");
        cache.insert("k", since, &Bytes::from_static(b"old"), &meta(3, "a"));
        assert_eq!(cache.get("k", &meta(3, "a")), None);
    }

    #[test]
    fn writes_forget_the_key() {
        let cache = SmallCache::default();
        cache.insert(
            "k",
            cache.generation(),
            &Bytes::from_static(b"v"),
            &meta(1, "a"),
        );
        cache.invalidate("k");
        assert_eq!(cache.get("k", &meta(1, "a")), None);
        assert_eq!(cache.lock().bytes, 0);
    }

    #[test]
    fn large_objects_are_not_kept_and_the_oldest_go_first() {
        let cache = SmallCache::default();
        let big = Bytes::from(vec![0u8; SMALL_MAX as usize + 1]);
        cache.insert("big", cache.generation(), &big, &meta(big.len(), "a"));
        assert_eq!(cache.get("big", &meta(big.len(), "a")), None);

        let data = Bytes::from(vec![1u8; SMALL_MAX as usize]);
        let keys: Vec<String> = (0..100).map(|i| format!("key{i:03}")).collect();
        for key in &keys {
            cache.insert(key, cache.generation(), &data, &meta(data.len(), "e"));
        }
        let held = |k: &String| cache.get(k, &meta(data.len(), "e")).is_some();
        assert!(!held(&keys[0]), "the oldest went first");
        assert!(held(&keys[99]));
        assert!(cache.lock().bytes <= CAPACITY_BYTES);
        let kept = keys.iter().filter(|k| held(k)).count();
        assert_eq!(kept, CAPACITY_BYTES / weight(&keys[0], &data));
    }

    #[test]
    fn the_queue_does_not_grow_with_rewrites_of_one_key() {
        let cache = SmallCache::default();
        let data = Bytes::from_static(b"v");
        for round in 0..10_000 {
            cache.insert("k", cache.generation(), &data, &meta(1, "a"));
            cache.invalidate("k");
            // Edited from outside and read again: replaced in place.
            let etag = round.to_string();
            cache.insert("k", cache.generation(), &data, &meta(1, &etag));
            cache.insert("k", cache.generation(), &data, &meta(1, "other"));
        }
        assert!(cache.lock().order.len() <= 66);
        assert_eq!(cache.lock().bytes, weight("k", &data));
    }
}
