//! Sorted, paginated listing for the filesystem driver.
//!
//! A directory read yields names in hash order (ext4), while `list` must
//! return keys in byte order, strictly after `start_after`, and stop after
//! `limit`. Walking and sorting the whole prefix for every page made reading
//! a 10,000-tag repository page by page quadratic (BENCHMARKS.md). So:
//!
//! - The walk visits directories in key order and starts at `start_after`:
//!   subtrees wholly before it are skipped, and the walk stops once it has
//!   one key more than the page (which says whether the listing is
//!   truncated).
//! - Each directory is read and sorted once, then kept in a [`DirCache`]
//!   while it is unchanged, so a page costs a binary search and the keys it
//!   returns, not a read of the whole directory.
//!
//! The cache is safe to lose and never serves a listing older than the
//! last completed write: the driver invalidates every ancestor directory of
//! a key after it creates or deletes it (one process owns a store; see the
//! parent module), a listing read concurrently with such a write is never
//! stored (generations), and a directory whose inode or timestamps changed
//! since it was read is read again: a best-effort guard against edits from
//! outside the driver, which coarse timestamps can miss.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::storage::{Key, ListPage, StorageResult};

/// Bytes of sorted listings the cache may hold: about 250,000 short names.
/// Beyond it the least recently used listings go.
const CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Directories with fewer entries are not cached: reading them costs a few
/// microseconds, less than keeping them warm is worth.
const CACHE_MIN_ENTRIES: usize = 128;

/// One directory's entries in key order. Each entry is stored as its sort
/// key: the name, with a `/` appended for a directory, because a directory
/// `d` holds keys `d/...`, which sort exactly where `d/` sorts among its
/// siblings (`d-x` < `d/…` < `d0`).
#[derive(Debug)]
struct Listing {
    /// The sort keys, concatenated.
    names: String,
    /// End offset of each entry in `names`.
    ends: Box<[usize]>,
    /// The directory as it was when it was read.
    stamp: DirStamp,
}

impl Listing {
    /// Reads and sorts the directory at `path`; `None` when it is gone.
    /// Names that are not UTF-8 and entries that are neither files nor
    /// directories are not keys and are left out.
    fn read(path: &Path, stamp: DirStamp) -> std::io::Result<Option<Self>> {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(err) if is_absent(&err) => return Ok(None),
            Err(err) => return Err(err),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let Ok(mut name) = entry.file_name().into_string() else {
                continue;
            };
            if file_type.is_dir() {
                name.push('/');
            } else if !file_type.is_file() {
                continue;
            }
            keys.push(name);
        }
        keys.sort_unstable();
        let mut names = String::with_capacity(keys.iter().map(String::len).sum());
        let ends = keys
            .iter()
            .map(|key| {
                names.push_str(key);
                names.len()
            })
            .collect();
        Ok(Some(Self { names, ends, stamp }))
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// The sort key of entry `index` (`name` or `name/`).
    fn entry(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        &self.names[start..self.ends[index]]
    }

    /// Index of the first entry whose every key sorts after `rest`.
    fn first_after(&self, rest: &str) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if self.entry(mid) <= rest {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// Heap bytes held, for the cache budget.
    fn weight(&self) -> usize {
        self.names.capacity() + self.ends.len() * size_of::<usize>()
    }
}

/// What identifies one state of a directory: its inode and its change
/// times. A write from outside the driver changes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStamp {
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl DirStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            ino: meta.ino(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Sorted listings of large directories, by directory (relative to the
/// store's root, without a trailing `/`).
#[derive(Debug, Default)]
pub(super) struct DirCache {
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    slots: HashMap<String, Slot>,
    /// Sum of the cached listings' weights.
    bytes: usize,
    /// Source of generations and of use ticks; never repeats.
    clock: u64,
}

/// A directory being read (`listing` is `None`) or cached.
#[derive(Debug)]
struct Slot {
    /// The read that may fill this slot; a listing from any other read is
    /// dropped, because an invalidation or a newer read came in between.
    generation: u64,
    listing: Option<Arc<Listing>>,
    last_used: u64,
}

/// The result of looking a directory up.
enum Lookup {
    Hit(Arc<Listing>),
    /// Read the directory, then offer the listing under this generation.
    Miss(u64),
}

impl DirCache {
    fn lock(&self) -> MutexGuard<'_, CacheState> {
        // The state stays consistent between statements; a panic elsewhere
        // cannot leave it half-updated in a way that serves wrong listings.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the listing of every directory above `key`: called after a
    /// write or delete of `key` has completed, since it may have added or
    /// removed `key` and any directories on its path.
    pub(super) fn invalidate_ancestors(&self, key: &str) {
        let mut state = self.lock();
        if state.slots.is_empty() {
            return;
        }
        for (at, _) in key.match_indices('/') {
            state.remove(&key[..at]);
        }
    }

    fn lookup(&self, dir: &str, stamp: DirStamp) -> Lookup {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        if let Some(slot) = state.slots.get_mut(dir)
            && let Some(listing) = &slot.listing
            && listing.stamp == stamp
        {
            slot.last_used = now;
            return Lookup::Hit(listing.clone());
        }
        state.remove(dir);
        state.slots.insert(
            dir.to_string(),
            Slot {
                generation: now,
                listing: None,
                last_used: now,
            },
        );
        Lookup::Miss(now)
    }

    /// Keeps `listing` if no invalidation or other read of `dir` happened
    /// since generation `generation` began and it is worth keeping.
    fn offer(&self, dir: &str, generation: u64, listing: Option<&Arc<Listing>>) {
        let mut state = self.lock();
        let current = state.slots.get(dir).map(|slot| slot.generation);
        if current != Some(generation) {
            return;
        }
        let Some(listing) =
            listing.filter(|l| l.len() >= CACHE_MIN_ENTRIES && l.weight() <= CACHE_BYTES)
        else {
            state.slots.remove(dir);
            return;
        };
        while state.bytes + listing.weight() > CACHE_BYTES && state.evict_one(dir) {}
        state.bytes += listing.weight();
        if let Some(slot) = state.slots.get_mut(dir) {
            slot.listing = Some(listing.clone());
        }
    }
}

impl CacheState {
    fn remove(&mut self, dir: &str) {
        if let Some(slot) = self.slots.remove(dir)
            && let Some(listing) = slot.listing
        {
            self.bytes -= listing.weight();
        }
    }

    /// Drops the least recently used listing other than `keep`'s; false
    /// when there is none.
    fn evict_one(&mut self, keep: &str) -> bool {
        let victim = self
            .slots
            .iter()
            .filter(|(dir, slot)| slot.listing.is_some() && dir.as_str() != keep)
            .min_by_key(|(_, slot)| slot.last_used)
            .map(|(dir, _)| dir.clone());
        match victim {
            Some(dir) => {
                self.remove(&dir);
                true
            }
            None => false,
        }
    }
}

/// Lists the keys below `prefix` (ending in `/`) strictly after
/// `start_after`, at most `limit`, in byte order. `cache` is `None` for
/// directories the driver writes without invalidating (its internal one).
pub(super) fn list(
    root: &Path,
    cache: Option<&DirCache>,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> StorageResult<ListPage> {
    let bound = match start_after {
        None => None,
        Some(after) => match after.strip_prefix(prefix) {
            Some(rest) => Some(rest),
            // Every key below the prefix sorts after it...
            None if after < prefix => None,
            // ...or before it.
            None => return Ok(ListPage::default()),
        },
    };
    let mut walk = Walk {
        root,
        cache,
        keys: Vec::new(),
        want: limit.saturating_add(1),
    };
    walk.visit(&mut prefix.to_string(), bound)?;
    let truncated = walk.keys.len() > limit;
    walk.keys.truncate(limit);
    Ok(ListPage {
        keys: walk.keys,
        truncated,
    })
}

/// A depth-first walk in key order that stops after `want` keys.
struct Walk<'a> {
    root: &'a Path,
    cache: Option<&'a DirCache>,
    keys: Vec<Key>,
    want: usize,
}

impl Walk<'_> {
    fn full(&self) -> bool {
        self.keys.len() >= self.want
    }

    /// Visits directory `dir` (a key prefix ending in `/`), taking only
    /// keys whose remainder after `dir` sorts after `bound`.
    fn visit(&mut self, dir: &mut String, bound: Option<&str>) -> StorageResult<()> {
        let Some(listing) = self.listing(&dir[..dir.len() - 1])? else {
            return Ok(());
        };
        let mut index = 0;
        if let Some(rest) = bound {
            index = listing.first_after(rest);
            // The entry before may be a directory on the path to `rest`,
            // holding keys on both sides of it.
            if let Some(last) = index.checked_sub(1)
                && let entry = listing.entry(last)
                && entry.ends_with('/')
                && let Some(inner) = rest.strip_prefix(entry)
            {
                self.descend(dir, entry, Some(inner))?;
            }
        }
        while index < listing.len() && !self.full() {
            let entry = listing.entry(index);
            if entry.ends_with('/') {
                self.descend(dir, entry, None)?;
            } else {
                self.keys.push(Key::new(format!("{dir}{entry}"))?);
            }
            index += 1;
        }
        Ok(())
    }

    fn descend(&mut self, dir: &mut String, entry: &str, bound: Option<&str>) -> StorageResult<()> {
        let len = dir.len();
        dir.push_str(entry);
        let result = self.visit(dir, bound);
        dir.truncate(len);
        result
    }

    /// The sorted listing of directory `rel`, from the cache when it is
    /// unchanged; `None` when it does not exist (or is not a directory).
    fn listing(&self, rel: &str) -> StorageResult<Option<Arc<Listing>>> {
        let path = self.root.join(rel);
        let stamp = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => DirStamp::of(&meta),
            Ok(_) => return Ok(None),
            Err(err) if is_absent(&err) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        let Some(cache) = self.cache else {
            return Ok(Listing::read(&path, stamp)?.map(Arc::new));
        };
        let generation = match cache.lookup(rel, stamp) {
            Lookup::Hit(listing) => return Ok(Some(listing)),
            Lookup::Miss(generation) => generation,
        };
        let listing = Listing::read(&path, stamp).map(|l| l.map(Arc::new));
        cache.offer(
            rel,
            generation,
            listing.as_ref().ok().and_then(Option::as_ref),
        );
        Ok(listing?)
    }
}

fn is_absent(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn touch(root: &Path, key: &str) {
        let path = root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b".").unwrap();
    }

    fn page(
        root: &Path,
        cache: &DirCache,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<String>, bool) {
        let page = list(root, Some(cache), prefix, after, limit).unwrap();
        let keys = page.keys.iter().map(|k| k.as_str().to_string()).collect();
        (keys, page.truncated)
    }

    /// Every `start_after`, including ones that are not keys, inside
    /// directories or outside the prefix, gives exactly the keys after it.
    #[test]
    fn pages_start_after_any_string() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [
            "p/a", "p/b-x", "p/b/c", "p/b/d/e", "p/b/d0", "p/b0", "p/c/z", "q/x",
        ];
        for key in keys {
            touch(dir.path(), key);
        }
        let below: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| k.starts_with("p/"))
            .collect();
        let cache = DirCache::default();
        let probes = [
            "", "a", "p", "p/", "p/a", "p/b", "p/b-", "p/b/", "p/b/c", "p/b/d", "p/b/d/",
            "p/b/d/e", "p/b/d/f", "p/b/d0", "p/b0", "p/c", "p/c/z", "p/d", "q", "q/x",
        ];
        for after in probes {
            let want: Vec<&str> = below.iter().copied().filter(|k| *k > after).collect();
            for limit in 0..=want.len() + 1 {
                let (got, truncated) = page(dir.path(), &cache, "p/", Some(after), limit);
                let expect: Vec<&str> = want.iter().copied().take(limit).collect();
                assert_eq!(got, expect, "after {after:?}, limit {limit}");
                assert_eq!(
                    truncated,
                    want.len() > limit,
                    "after {after:?}, limit {limit}"
                );
            }
        }
    }

    /// A cached directory sees keys created and deleted through the driver
    /// (which invalidates) and, by its timestamps, from outside it.
    #[test]
    fn cached_listing_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DirCache::default();
        for i in 0..CACHE_MIN_ENTRIES {
            touch(dir.path(), &format!("t/{i:04}"));
        }
        let (first, _) = page(dir.path(), &cache, "t/", None, 1_000);
        assert_eq!(first.len(), CACHE_MIN_ENTRIES);
        assert_eq!(cache.lock().slots.len(), 1, "the large directory is cached");

        touch(dir.path(), "t/0000a");
        cache.invalidate_ancestors("t/0000a");
        let (keys, _) = page(dir.path(), &cache, "t/", Some("t/0000"), 1);
        assert_eq!(keys, ["t/0000a"]);

        std::fs::remove_file(dir.path().join("t/0001")).unwrap();
        cache.invalidate_ancestors("t/0001");
        let (keys, _) = page(dir.path(), &cache, "t/", Some("t/0000a"), 1);
        assert_eq!(keys, ["t/0002"]);

        // Not through the driver: the directory's timestamps change. (Set
        // explicitly: a filesystem with coarse timestamps may give two
        // changes within one tick the same mtime, which is why the driver's
        // own writes invalidate rather than rely on timestamps.)
        std::fs::remove_file(dir.path().join("t/0002")).unwrap();
        std::fs::File::open(dir.path().join("t"))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
            .unwrap();
        let (keys, _) = page(dir.path(), &cache, "t/", Some("t/0000a"), 1);
        assert_eq!(keys, ["t/0003"]);
    }

    /// A listing read while an invalidation came in is not kept.
    #[test]
    fn listing_read_across_an_invalidation_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..CACHE_MIN_ENTRIES {
            touch(dir.path(), &format!("t/{i:04}"));
        }
        let cache = DirCache::default();
        let stamp = DirStamp::of(&std::fs::metadata(dir.path().join("t")).unwrap());
        let Lookup::Miss(generation) = cache.lookup("t", stamp) else {
            panic!("empty cache hit");
        };
        let listing = Listing::read(&dir.path().join("t"), stamp)
            .unwrap()
            .map(Arc::new);
        cache.invalidate_ancestors("t/9999");
        cache.offer("t", generation, listing.as_ref());
        assert!(cache.lock().slots.is_empty());
        assert_eq!(cache.lock().bytes, 0);
    }

    /// The budget holds: old listings make room for new ones.
    #[test]
    fn cache_stays_within_its_budget() {
        let cache = DirCache::default();
        let stamp = DirStamp {
            ino: 1,
            mtime: (0, 0),
            ctime: (0, 0),
        };
        for dir in ["a", "b", "c"] {
            let half = CACHE_BYTES / 2 - CACHE_MIN_ENTRIES * size_of::<usize>();
            let listing = Arc::new(Listing {
                names: "x".repeat(half),
                ends: vec![half; CACHE_MIN_ENTRIES].into_boxed_slice(),
                stamp,
            });
            let Lookup::Miss(generation) = cache.lookup(dir, stamp) else {
                panic!("{dir} was never cached");
            };
            cache.offer(dir, generation, Some(&listing));
            assert!(cache.lock().bytes <= CACHE_BYTES);
        }
        let state = cache.lock();
        let cached: Vec<&str> = state.slots.keys().map(String::as_str).collect();
        assert_eq!(cached.len(), 2, "{cached:?}");
        assert!(!state.slots.contains_key("a"), "the oldest went");
    }
}
