//! Temporary files (`root/.berth/tmp`): every write lands in one first, and
//! a [`TmpFile`] guard owns it until it is renamed into place.
//!
//! Removing the file on an error return was not enough: a request that is
//! cancelled (an HTTP/2 stream reset, a client that half-closes) drops its
//! future at an await point, and a write already handed to the blocking
//! pool runs on regardless. So the guard removes the file when dropped, and
//! every blocking task that may create or write the file holds a clone of
//! it: the file goes when the last of them is done, after which nothing can
//! create it again. What a crashed process left behind is swept at open.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// Temporary files untouched for this long are swept at open (see
/// [`sweep`]).
pub(super) const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

/// A temporary file, removed when the last clone is dropped unless
/// [`TmpFile::keep`] was called once it was renamed into place.
#[derive(Debug, Clone)]
pub(super) struct TmpFile(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    kept: AtomicBool,
}

impl TmpFile {
    pub(super) fn new(path: PathBuf) -> Self {
        Self(Arc::new(Inner {
            path,
            kept: AtomicBool::new(false),
        }))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0.path
    }

    /// Disarms the guard: the file was renamed away, nothing to remove.
    pub(super) fn keep(&self) {
        self.0.kept.store(true, Ordering::Release);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if *self.kept.get_mut() {
            return;
        }
        // Synchronous: a drop cannot await, and an unlink takes
        // microseconds.
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(
                path = %self.path.display(),
                error = %err,
                "could not remove a temporary file"
            ),
        }
    }
}

/// Removes the files in `dir` not modified for `stale_after`: leftovers
/// of a process that crashed mid-write. Not all of them: another process
/// may be writing into the same root (the one a restart replaces, still
/// finishing its requests), and a live write keeps its file's modification
/// time current. (A hard link made for `compose` carries its source's
/// time, but lives only until the rename that follows it.) Returns how
/// many were removed.
pub(super) fn sweep(dir: &Path, stale_after: Duration) -> std::io::Result<usize> {
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|modified| now.duration_since(modified).ok());
        if !meta.is_file() || age.is_none_or(|age| age < stale_after) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(removed)
}
