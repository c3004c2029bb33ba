//! The local filesystem driver: the embedded default, for one process.
//!
//! Objects are files under `root` at their key's path. Every write goes to a
//! temporary file in `root/.berth/tmp`, is fsynced, then renamed into place,
//! so readers never see a partial object; the temporary file is removed
//! however the write ends, also when its request is cancelled (`tmp`). Conditional puts and deletes on a
//! key are serialised by an in-process lock stripe (one process owns a
//! directory; several replicas need the S3 driver). Multipart uploads keep
//! their parts in `root/.berth/multipart/<id>/`.
//!
//! Where the blocking work runs is a performance choice (BENCHMARKS.md):
//! `stat`, `open` and reads of small objects (link and tag records,
//! manifests up to [`INLINE_READ_MAX`]) run on the calling runtime thread.
//! On a local disk they take microseconds, a fraction of what handing each
//! call to tokio's blocking pool costs (two thread wake-ups per call, which
//! dominated a manifest GET). Blobs under [`STREAM_READ_MIN`] are read
//! there too while the page cache holds them, never waiting for the disk
//! (`cached`); larger ones, and what is not cached, stream from one
//! blocking thread per GET (`reader`); every write (they fsync) stays on
//! the blocking pool.
//!
//! Objects of up to 4 KiB (link and tag records) are kept in memory once
//! read (`small`): a hit costs one `stat`, which also checks that the file
//! is the one read; every write of a key forgets it.
//!
//! Listings walk directories in key order from `start_after` and keep the
//! sorted entries of large directories in memory (`listing`), so that a
//! page costs what it returns, not a read and sort of the whole prefix.

mod buffers;
mod cached;
mod direct;
mod listing;
mod reader;
mod small;
mod tmp;
mod writer;

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;

use buffers::{BUFFER_SIZE, BufferPool, InUse, LARGE_BUFFER_SIZE, TRICKLE_BUFFER_SIZE};
use cached::stream_cached;
use reader::stream_file;
use tmp::TmpFile;
use writer::write_new;

use crate::ids::random_id;

use super::{
    ByteRange, ByteStream, GetObject, Key, ListPage, ObjectMeta, ObjectStore, Part, PutMode,
    StorageError, StorageResult,
};

/// Internal directory of the driver; never a key's first component.
const INTERNAL_DIR: &str = ".berth";
/// Objects up to this size are read whole on the calling thread (see the
/// module docs); a manifest of this size is read in well under 100 µs.
const INLINE_READ_MAX: u64 = 256 * 1024;
/// Reads of this many bytes or more stream from a blocking thread from the
/// start (`reader`), their reads beside the sends on the other core; smaller
/// ones are read on the runtime thread while cached (`cached`). At 8 MiB
/// both pulled alike (BENCHMARKS.md).
const STREAM_READ_MIN: u64 = 8 * 1024 * 1024;
/// Number of lock stripes for conditional writes.
const STRIPES: usize = 64;

/// Filesystem object store rooted at one directory.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    /// Shared, so that a commit's blocking task can hold its key's lock
    /// until the rename is done, even once the request is gone.
    locks: Vec<Arc<Mutex<()>>>,
    /// Sorted listings of large directories; every create or delete of a
    /// key invalidates its ancestors' entries.
    dirs: Arc<listing::DirCache>,
    /// Buffers of blob writes, reused (see `buffers`).
    write_buffers: Arc<BufferPool>,
    /// Buffers of blob reads: larger, a quarter of the hand-offs per byte.
    read_buffers: Arc<BufferPool>,
    /// Smaller buffers, for clients that fall behind: their reads
    /// (`reader`) and their uploads (`writer`). All three pools count their
    /// buffers in use together.
    trickle_buffers: Arc<BufferPool>,
    /// Offset past which writes bypass the page cache (`direct`).
    direct_from: u64,
    /// Small objects read before; every write of a key forgets it.
    small: Arc<small::SmallCache>,
}

impl FsStore {
    /// Opens (creating if needed) a store at `root`, and removes the
    /// temporary files a crashed process left there (see [`tmp::sweep`]).
    pub async fn open(root: &Path) -> StorageResult<Self> {
        let tmp_dir = root.join(INTERNAL_DIR).join("tmp");
        tokio::fs::create_dir_all(&tmp_dir).await?;
        tokio::fs::create_dir_all(root.join(INTERNAL_DIR).join("multipart")).await?;
        let removed = blocking(move || tmp::sweep(&tmp_dir, tmp::STALE_AFTER)).await?;
        if removed > 0 {
            tracing::info!(removed, "removed stale temporary files");
        }
        let in_use = Arc::new(InUse::default());
        let pool = |size| Arc::new(BufferPool::sharing(size, &in_use));
        Ok(Self {
            root: root.to_path_buf(),
            locks: (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect(),
            dirs: Arc::default(),
            write_buffers: pool(BUFFER_SIZE),
            read_buffers: pool(LARGE_BUFFER_SIZE),
            trickle_buffers: pool(TRICKLE_BUFFER_SIZE),
            direct_from: direct::DIRECT_FROM,
            small: Arc::default(),
        })
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn tmp_file(&self) -> StorageResult<TmpFile> {
        let path = self.root.join(INTERNAL_DIR).join("tmp").join(random_id()?);
        Ok(TmpFile::new(path))
    }

    fn multipart_dir(&self, upload_id: &str) -> StorageResult<PathBuf> {
        if upload_id.is_empty() || !upload_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(StorageError::NotFound(format!(
                "multipart upload {upload_id}"
            )));
        }
        Ok(self
            .root
            .join(INTERNAL_DIR)
            .join("multipart")
            .join(upload_id))
    }

    fn lock_for(&self, key: &Key) -> &Arc<Mutex<()>> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0);
        &self.locks[index]
    }

    /// Streams `body` into a new temporary file, fsynced. However the
    /// write ends, short of success, the file is removed (see `tmp`).
    async fn write_tmp(&self, body: ByteStream) -> StorageResult<TmpFile> {
        let tmp = self.tmp_file()?;
        let pools = (&self.write_buffers, &self.trickle_buffers);
        write_new(&tmp, body, pools.0, pools.1, self.direct_from).await?;
        Ok(tmp)
    }

    /// Moves a finished temporary file to `key`, honouring `mode`. The
    /// rename and what must follow it run in one blocking task that owns
    /// the key's lock, the temporary file and the caches' handles: when
    /// the request is cancelled meanwhile, the rename still either happens
    /// with the caches invalidated after it (invalidating before it would
    /// let a concurrent read cache the old object again), or does not
    /// happen and the file is removed; and no other write of the key runs
    /// in between.
    async fn commit(&self, tmp: TmpFile, key: &Key, mode: PutMode) -> StorageResult<ObjectMeta> {
        let dest = self.path(key);
        let lock = self.lock_for(key).clone().lock_owned().await;
        match &mode {
            PutMode::Overwrite => {}
            PutMode::CreateNew => {
                if exists(&dest)? {
                    return Err(StorageError::PreconditionFailed(key.to_string()));
                }
            }
            PutMode::IfMatch(etag) => match stat(&dest) {
                Ok(current) if &current.etag == etag => {}
                Ok(_) | Err(StorageError::NotFound(_)) => {
                    return Err(StorageError::PreconditionFailed(key.to_string()));
                }
                Err(err) => return Err(err),
            },
        }
        let (dirs, small, key) = (self.dirs.clone(), self.small.clone(), key.to_string());
        blocking(move || {
            let _lock = lock;
            let renamed = rename_into_place(tmp.path(), &dest);
            // Even a failed rename may have created directories.
            dirs.invalidate_ancestors(&key);
            small.invalidate(&key);
            renamed?;
            tmp.keep();
            stat(&dest)
        })
        .await
    }

    /// Concatenates files into a new temporary file, fsynced, on one
    /// blocking thread: `std::io::copy` between files uses
    /// `copy_file_range`, so the bytes need not pass through user space.
    async fn concat_tmp(&self, sources: Vec<PathBuf>) -> StorageResult<TmpFile> {
        let tmp = self.tmp_file()?;
        let out = tmp.clone();
        blocking(move || -> std::io::Result<()> {
            let mut file = std::fs::File::create(out.path())?;
            for source in &sources {
                std::io::copy(&mut std::fs::File::open(source)?, &mut file)?;
            }
            file.sync_data()
        })
        .await?;
        Ok(tmp)
    }

    /// Removes now-empty parent directories of `path`, up to the root.
    async fn prune_dirs(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(current) = dir {
            if current == self.root || !current.starts_with(&self.root) {
                break;
            }
            if tokio::fs::remove_dir(current).await.is_err() {
                break;
            }
            dir = current.parent();
        }
    }
}

#[async_trait]
impl ObjectStore for FsStore {
    async fn get(&self, key: &Key, range: Option<ByteRange>) -> StorageResult<GetObject> {
        let (file, meta) = open_file(&self.path(key), key)?;
        let (start, len) = match range {
            None => (0, meta.size),
            Some(range) => {
                if range.end >= meta.size || range.start > range.end {
                    return Err(StorageError::InvalidRange);
                }
                (range.start, range.len())
            }
        };
        let body: ByteStream = if len <= INLINE_READ_MAX {
            let data = read_at(&file, start, len)?;
            Box::pin(futures::stream::once(async move { Ok(data) }))
        } else {
            let (pool, trickle) = (self.read_buffers.clone(), self.trickle_buffers.clone());
            if len < STREAM_READ_MIN {
                stream_cached(file, start, len, pool, trickle)
            } else {
                stream_file(file, start, len, pool, trickle)
            }
        };
        Ok(GetObject { meta, body })
    }

    async fn get_bytes(&self, key: &Key) -> StorageResult<(Bytes, ObjectMeta)> {
        let path = self.path(key);
        let since = self.small.generation();
        let current = std::fs::metadata(&path).map_err(|e| not_found(e, key))?;
        if !current.is_file() {
            return Err(StorageError::NotFound(key.to_string()));
        }
        let current = meta_from(&current);
        if let Some(data) = self.small.get(key.as_str(), &current) {
            return Ok((data, current));
        }
        let (file, meta) = open_file(&path, key)?;
        if meta.size <= small::SMALL_MAX {
            let data = read_at(&file, 0, meta.size)?;
            self.small.insert(key.as_str(), since, &data, &meta);
            return Ok((data, meta));
        }
        let data = if meta.size <= INLINE_READ_MAX {
            read_at(&file, 0, meta.size)?
        } else {
            let size = meta.size;
            joined(tokio::task::spawn_blocking(move || read_at(&file, 0, size)).await)?
        };
        Ok((data, meta))
    }

    async fn head(&self, key: &Key) -> StorageResult<ObjectMeta> {
        stat(&self.path(key))
    }

    async fn put(&self, key: &Key, body: ByteStream, mode: PutMode) -> StorageResult<ObjectMeta> {
        let tmp = self.write_tmp(body).await?;
        self.commit(tmp, key, mode).await
    }

    async fn delete(&self, key: &Key) -> StorageResult<()> {
        let path = self.path(key);
        let _guard = self.lock_for(key).lock().await;
        let removed = tokio::fs::remove_file(&path).await;
        self.small.invalidate(key.as_str());
        match removed {
            Ok(()) => {
                self.prune_dirs(&path).await;
                self.dirs.invalidate_ancestors(key.as_str());
                Ok(())
            }
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StorageResult<ListPage> {
        if !prefix.ends_with('/') || Key::new(prefix.trim_end_matches('/')).is_err() {
            return Err(StorageError::invalid(format!(
                "invalid list prefix {prefix:?}"
            )));
        }
        let root = self.root.clone();
        // The driver's own directory changes without invalidations.
        let internal = prefix.split('/').next() == Some(INTERNAL_DIR);
        let dirs = (!internal).then(|| self.dirs.clone());
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        let listed = tokio::task::spawn_blocking(move || {
            listing::list(
                &root,
                dirs.as_deref(),
                &prefix,
                start_after.as_deref(),
                limit,
            )
        })
        .await;
        joined(listed)
    }

    /// A copy through [`FsStore::concat_tmp`], which fsyncs it before the
    /// rename (a rename of unsynced data can leave an empty or partial
    /// object after a crash).
    async fn copy(&self, from: &Key, to: &Key) -> StorageResult<ObjectMeta> {
        let tmp = self
            .concat_tmp(vec![self.path(from)])
            .await
            .map_err(|err| match err {
                StorageError::NotFound(_) => StorageError::NotFound(from.to_string()),
                other => other,
            })?;
        self.commit(tmp, to, PutMode::Overwrite).await
    }

    async fn compose(&self, sources: &[Key], dest: &Key) -> StorageResult<ObjectMeta> {
        let tmp = match sources {
            // Sources are immutable, so sharing the inode is as good as a copy.
            [single] => {
                let tmp = self.tmp_file()?;
                let (link, source, single) = (tmp.clone(), self.path(single), single.clone());
                blocking(move || {
                    std::fs::hard_link(&source, link.path()).map_err(|e| not_found(e, &single))
                })
                .await?;
                tmp
            }
            many => {
                let paths: Vec<PathBuf> = many.iter().map(|k| self.path(k)).collect();
                self.concat_tmp(paths).await?
            }
        };
        self.commit(tmp, dest, PutMode::Overwrite).await
    }

    async fn create_multipart(&self, key: &Key) -> StorageResult<String> {
        let upload_id = random_id()?;
        let dir = self.multipart_dir(&upload_id)?;
        tokio::fs::create_dir_all(dir.join("parts")).await?;
        tokio::fs::write(dir.join("key"), key.as_str()).await?;
        Ok(upload_id)
    }

    async fn put_part(
        &self,
        key: &Key,
        upload_id: &str,
        number: u32,
        body: ByteStream,
    ) -> StorageResult<Part> {
        let dir = self.multipart_dir(upload_id)?;
        check_multipart_key(&dir, key).await?;
        let tmp = self.write_tmp(body).await?;
        let dest = dir.join("parts").join(number.to_string());
        let meta = blocking(move || {
            rename_into_place(tmp.path(), &dest)?;
            tmp.keep();
            stat(&dest)
        })
        .await?;
        Ok(Part {
            number,
            etag: meta.etag,
            size: meta.size,
        })
    }

    async fn complete_multipart(
        &self,
        key: &Key,
        upload_id: &str,
        parts: &[Part],
    ) -> StorageResult<ObjectMeta> {
        let dir = self.multipart_dir(upload_id)?;
        check_multipart_key(&dir, key).await?;
        let mut paths = Vec::with_capacity(parts.len());
        for part in parts {
            let path = dir.join("parts").join(part.number.to_string());
            let meta = stat(&path)?;
            if meta.etag != part.etag {
                return Err(StorageError::invalid(format!(
                    "part {} changed",
                    part.number
                )));
            }
            paths.push(path);
        }
        let tmp = self.concat_tmp(paths).await?;
        let meta = self.commit(tmp, key, PutMode::Overwrite).await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(meta)
    }

    async fn abort_multipart(&self, _key: &Key, upload_id: &str) -> StorageResult<()> {
        match tokio::fs::remove_dir_all(self.multipart_dir(upload_id)?).await {
            Err(err) if err.kind() != ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static, E: Into<StorageError> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> StorageResult<T> {
    joined(tokio::task::spawn_blocking(work).await)
}

/// The result of a blocking task, with a panic or cancellation as an error.
fn joined<T, E: Into<StorageError>>(
    result: Result<Result<T, E>, tokio::task::JoinError>,
) -> StorageResult<T> {
    match result {
        Ok(done) => done.map_err(Into::into),
        Err(err) => Err(StorageError::Backend {
            message: err.to_string(),
            retryable: false,
        }),
    }
}

async fn check_multipart_key(dir: &Path, key: &Key) -> StorageResult<()> {
    let recorded = tokio::fs::read_to_string(dir.join("key"))
        .await
        .map_err(|_| StorageError::NotFound(format!("multipart upload for {key}")))?;
    if recorded != key.as_str() {
        return Err(StorageError::NotFound(format!(
            "multipart upload for {key}"
        )));
    }
    Ok(())
}

/// How often a rename is retried when a concurrent delete prunes the
/// directories it just created.
const RENAME_ATTEMPTS: usize = 8;

/// Renames `tmp` to `dest`, creating parents, then makes that durable
/// (see [`sync_up`]); on a blocking thread (see [`FsStore::commit`]). A
/// concurrent delete may prune an empty parent between its creation and
/// the rename (or between two levels of `create_dir_all`): both show up as
/// `NotFound` and are retried. So is `AlreadyExists`: `create_dir_all`
/// reports it when its `mkdir` found the directory and a prune removed it
/// before its own check that it is one.
fn rename_into_place(tmp: &Path, dest: &Path) -> StorageResult<()> {
    rename_and_sync(tmp, dest, sync_dir)
}

/// [`rename_into_place`], syncing directories with `sync` (a test's
/// stand-in for [`sync_dir`]).
fn rename_and_sync(
    tmp: &Path,
    dest: &Path,
    mut sync: impl FnMut(&Path) -> std::io::Result<()>,
) -> StorageResult<()> {
    let parent = dest
        .parent()
        .ok_or_else(|| StorageError::invalid("key without parent"))?;
    // The highest directory found existing before an attempt created the
    // ones below it (a prune may remove what an earlier attempt created).
    let mut existed = first_existing(parent);
    for attempt in 0..RENAME_ATTEMPTS {
        if attempt > 0 {
            let found = first_existing(parent);
            if existed.starts_with(&found) {
                existed = found;
            }
        }
        let renamed = std::fs::create_dir_all(parent).and_then(|()| std::fs::rename(tmp, dest));
        match renamed {
            Ok(()) => return sync_up(parent, &existed, &mut sync),
            Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::AlreadyExists) => {
                continue;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Err(StorageError::Backend {
        message: format!(
            "could not create {} (pruned concurrently {RENAME_ATTEMPTS} times)",
            parent.display()
        ),
        retryable: true,
    })
}

/// `dir`, or its nearest ancestor that exists.
fn first_existing(dir: &Path) -> PathBuf {
    let mut current = dir;
    while let Err(err) = std::fs::symlink_metadata(current)
        && err.kind() == ErrorKind::NotFound
        && let Some(up) = current.parent()
    {
        current = up;
    }
    current.to_path_buf()
}

/// Fsyncs `dir`, which holds a renamed object, and each ancestor up to
/// `existed`, the first that existed: every directory created on the way
/// is an entry in its parent, and until that parent is synced a crash can
/// lose the directory with the object in it (the first link of a new
/// repository). Any failure fails the write: the object is in place, but
/// not durably.
fn sync_up(
    dir: &Path,
    existed: &Path,
    sync: &mut impl FnMut(&Path) -> std::io::Result<()>,
) -> StorageResult<()> {
    let mut current = dir;
    loop {
        sync(current)?;
        match current.parent() {
            Some(up) if current != existed => current = up,
            _ => return Ok(()),
        }
    }
}

/// Fsyncs a directory, making the entries renamed or created in it
/// durable. A filesystem that cannot sync directories at all answers
/// `EINVAL` (PostgreSQL's `fsync_fname` allows for the same): there is
/// nothing to wait for then. Every other error is the caller's.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let handle = std::fs::File::open(dir)?;
    match handle.sync_all() {
        Err(err) if err.kind() == ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

/// Whether anything is at `path`, on the calling thread (a `stat`).
fn exists(path: &Path) -> StorageResult<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Opens an object for reading, on the calling thread (see the module docs).
fn open_file(path: &Path, key: &Key) -> StorageResult<(std::fs::File, ObjectMeta)> {
    let file = std::fs::File::open(path).map_err(|e| not_found(e, key))?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(StorageError::NotFound(key.to_string()));
    }
    Ok((file, meta_from(&meta)))
}

/// `len` bytes of `file` from `start`; an object that shrank under us (it
/// cannot: objects are replaced by rename, never truncated) is an error.
fn read_at(file: &std::fs::File, start: u64, len: u64) -> StorageResult<Bytes> {
    use std::os::unix::fs::FileExt;
    let len = usize::try_from(len).map_err(|_| StorageError::InvalidRange)?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, start)?;
    Ok(Bytes::from(buf))
}

/// Metadata of an object, on the calling thread.
fn stat(path: &Path) -> StorageResult<ObjectMeta> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(StorageError::NotFound(path.display().to_string()));
    }
    Ok(meta_from(&meta))
}

fn meta_from(meta: &std::fs::Metadata) -> ObjectMeta {
    let last_modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let nanos = last_modified
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    ObjectMeta {
        size: meta.len(),
        etag: format!("{:x}-{:x}-{:x}", meta.len(), nanos, meta.ino()),
        last_modified,
    }
}

fn not_found(err: std::io::Error, key: &Key) -> StorageError {
    if err.kind() == ErrorKind::NotFound {
        StorageError::NotFound(key.to_string())
    } else {
        err.into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::buffers::BUFFER_SIZE;
    use super::*;

    /// Regression: a put under `uploads/<id>/` failed with "object not
    /// found" when a concurrent delete pruned the emptied `uploads/`
    /// between `create_dir_all`'s two levels (seen under the mixed load),
    /// and with "File exists" when the prune came between its `mkdir` and
    /// its check (about one run in twenty of this test).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn puts_survive_concurrent_pruning_of_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStore::open(dir.path()).await.unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|worker| {
                let store = store.clone();
                tokio::spawn(async move {
                    for round in 0..200 {
                        let key = Key::new(format!("uploads/{worker}-{round}/state")).unwrap();
                        store
                            .put_bytes(&key, Bytes::from_static(b"s"), PutMode::Overwrite)
                            .await?;
                        store.delete(&key).await?;
                    }
                    StorageResult::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }

    /// Small objects are served from memory after the first read
    /// (`small`): every write through the store forgets the key and is
    /// read back at once, and a delete or rewrite from outside is seen (the
    /// etag check).
    #[tokio::test]
    async fn small_objects_read_back_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let key = Key::new("repositories/r/_tags/t").unwrap();
        for round in 0..300u32 {
            let value = Bytes::from(format!("{round:08}"));
            let mode = if round == 0 {
                PutMode::CreateNew
            } else {
                PutMode::Overwrite
            };
            let before = store.head(&key).await.ok();
            store.put_bytes(&key, value.clone(), mode).await.unwrap();
            if let Some(before) = before {
                assert_eq!(
                    store.small.get(key.as_str(), &before),
                    None,
                    "not forgotten"
                );
            }
            for _ in 0..2 {
                let (read, meta) = store.get_bytes(&key).await.unwrap();
                assert_eq!(read, value, "round {round}");
                assert_eq!(meta, store.head(&key).await.unwrap());
            }
        }
        store.delete(&key).await.unwrap();
        assert!(store.get_bytes(&key).await.unwrap_err().is_not_found());

        let other = Key::new("repositories/r/_tags/u").unwrap();
        store
            .put_bytes(&other, Bytes::from_static(b"v"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(store.get_bytes(&other).await.unwrap().0, "v");
        std::fs::remove_file(store.path(&other)).unwrap();
        assert!(store.get_bytes(&other).await.unwrap_err().is_not_found());
        std::fs::write(store.path(&other), b"w").unwrap();
        assert_eq!(store.get_bytes(&other).await.unwrap().0, "w");
    }

    /// A body that fails midway leaves no temporary file behind, even with
    /// a batch write still running when the error arrives.
    #[tokio::test]
    async fn failed_body_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from(vec![1u8; BUFFER_SIZE])),
            Ok(Bytes::from(vec![2u8; 10])),
            Err(std::io::Error::other("client went away")),
        ];
        let body: ByteStream = Box::pin(futures::stream::iter(chunks));
        let key = Key::new("a/b").unwrap();
        let err = store.put(&key, body, PutMode::Overwrite).await.unwrap_err();
        assert!(matches!(err, StorageError::Body(_)), "{err:?}");
        let tmp = dir.path().join(INTERNAL_DIR).join("tmp");
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
        assert!(store.head(&key).await.unwrap_err().is_not_found());
    }

    /// Regression: a cancelled request (an HTTP/2 stream reset, an HTTP/1
    /// client that half-closed) left its temporary file in `.berth/tmp`
    /// for good: the put was dropped after its writes had started on the
    /// blocking pool. Once with a body that stalls after two buffers, once
    /// with one that never stops (writes in flight when it is dropped).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_put_leaves_no_temporary_file() {
        use std::time::{Duration, Instant};

        use futures::StreamExt;

        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let tmp = dir.path().join(INTERNAL_DIR).join("tmp");
        let files = || std::fs::read_dir(&tmp).unwrap().count();
        let chunk = |i: usize| Ok(Bytes::from(vec![i as u8; BUFFER_SIZE]));
        let stalling: ByteStream =
            Box::pin(futures::stream::iter((0..2).map(chunk)).chain(futures::stream::pending()));
        let endless: ByteStream = Box::pin(futures::stream::iter((0..).map(chunk)));
        let key = Key::new("a/b").unwrap();
        for body in [stalling, endless] {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut put = Box::pin(store.put(&key, body, PutMode::Overwrite));
            while files() == 0 {
                assert!(Instant::now() < deadline, "no write started");
                tokio::select! {
                    done = &mut put => panic!("the put ended: {done:?}"),
                    () = tokio::time::sleep(Duration::from_millis(2)) => {}
                }
            }
            drop(put);
            while files() > 0 {
                assert!(Instant::now() < deadline, "temporary file left behind");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(store.head(&key).await.unwrap_err().is_not_found());
    }

    /// A crashed process's temporary files are swept at open; one written
    /// recently (perhaps by a process still running) is kept.
    #[tokio::test]
    async fn open_sweeps_stale_temporary_files_only() {
        use std::time::{Duration, SystemTime};

        let dir = tempfile::tempdir().unwrap();
        let tmp_dir = dir.path().join(INTERNAL_DIR).join("tmp");
        std::fs::create_dir_all(&tmp_dir).unwrap();
        let (stale, fresh) = (tmp_dir.join("stale"), tmp_dir.join("fresh"));
        std::fs::write(&stale, b"left by a crash").unwrap();
        std::fs::write(&fresh, b"being written").unwrap();
        let long_ago = SystemTime::now() - tmp::STALE_AFTER - Duration::from_secs(60);
        let file = std::fs::File::options().write(true).open(&stale).unwrap();
        file.set_modified(long_ago).unwrap();
        drop(file);
        FsStore::open(dir.path()).await.unwrap();
        assert!(!stale.exists(), "stale temporary file kept");
        assert!(fresh.exists(), "fresh temporary file removed");
    }

    /// Regression: a rename synced only the directory it landed in, so the
    /// first link of a new repository could be lost in a crash with the
    /// directories created for it; and an error of that sync was dropped.
    /// Each directory created is synced in its parent, up to the first that
    /// existed.
    #[test]
    fn renames_sync_every_directory_they_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut synced = Vec::new();
        let mut rename = |name: &str, dest: &str| {
            synced.clear();
            let tmp = root.join(name);
            std::fs::write(&tmp, name).unwrap();
            let record = |dir: &Path| {
                synced.push(dir.strip_prefix(root).unwrap().to_path_buf());
                Ok(())
            };
            rename_and_sync(&tmp, &root.join(dest), record).unwrap();
            synced.clone()
        };
        let paths = |list: &[&str]| list.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            rename("one", "a/b/c/one"),
            paths(&["a/b/c", "a/b", "a", ""])
        );
        assert_eq!(rename("two", "a/b/c/two"), paths(&["a/b/c"]));
        assert_eq!(rename("three", "a/d/three"), paths(&["a/d", "a"]));

        let tmp = root.join("four");
        std::fs::write(&tmp, "four").unwrap();
        let failing = |_: &Path| Err(std::io::Error::other("disk gone"));
        let err = rename_and_sync(&tmp, &root.join("e/four"), failing).unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
    }

    /// Bodies of any chunking are stored byte for byte across batches.
    #[tokio::test]
    async fn batched_writes_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).await.unwrap();
        let data: Vec<u8> = (0..3 * BUFFER_SIZE + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(40_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let key = Key::new("big/object").unwrap();
        let body: ByteStream = Box::pin(futures::stream::iter(chunks));
        let meta = store.put(&key, body, PutMode::Overwrite).await.unwrap();
        assert_eq!(meta.size, data.len() as u64);
        let (stored, _) = store.get_bytes(&key).await.unwrap();
        assert!(stored == data, "stored bytes differ");
    }
}
