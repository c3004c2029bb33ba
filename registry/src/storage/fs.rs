//! The local filesystem driver: the embedded default, for one process.
//!
//! Objects are files under `root` at their key's path. Every write goes to a
//! temporary file in `root/.berth/tmp`, is fsynced, then renamed into place,
//! so readers never see a partial object. Conditional puts and deletes on a
//! key are serialised by an in-process lock stripe (one process owns a
//! directory; several replicas need the S3 driver). Multipart uploads keep
//! their parts in `root/.berth/multipart/<id>/`.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_util::io::ReaderStream;

use super::{
    ByteRange, ByteStream, GetObject, Key, ListPage, ObjectMeta, ObjectStore, Part, PutMode,
    StorageError, StorageResult,
};

/// Internal directory of the driver; never a key's first component.
const INTERNAL_DIR: &str = ".berth";
/// Read buffer for streaming GETs: large enough that a pull is not limited
/// by per-chunk overhead.
const READ_CHUNK: usize = 256 * 1024;
/// Number of lock stripes for conditional writes.
const STRIPES: usize = 64;

/// Filesystem object store rooted at one directory.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    locks: Vec<Mutex<()>>,
}

impl FsStore {
    /// Opens (creating if needed) a store at `root`.
    pub async fn open(root: &Path) -> StorageResult<Self> {
        tokio::fs::create_dir_all(root.join(INTERNAL_DIR).join("tmp")).await?;
        tokio::fs::create_dir_all(root.join(INTERNAL_DIR).join("multipart")).await?;
        Ok(Self {
            root: root.to_path_buf(),
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn tmp_path(&self) -> PathBuf {
        self.root
            .join(INTERNAL_DIR)
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
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

    fn lock_for(&self, key: &Key) -> &Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let index = usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0);
        &self.locks[index]
    }

    /// Streams `body` into a new temporary file, fsynced. On any error the
    /// temporary file is removed.
    async fn write_tmp(&self, mut body: ByteStream) -> StorageResult<PathBuf> {
        let tmp = self.tmp_path();
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StorageError::Body)?;
                file.write_all(&chunk).await?;
            }
            file.sync_data().await?;
            Ok::<_, StorageError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(tmp),
            Err(err) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(err)
            }
        }
    }

    /// Moves a finished temporary file to `key`, honouring `mode`.
    async fn commit(&self, tmp: PathBuf, key: &Key, mode: PutMode) -> StorageResult<ObjectMeta> {
        let dest = self.path(key);
        let _guard = self.lock_for(key).lock().await;
        let result = async {
            match &mode {
                PutMode::Overwrite => {}
                PutMode::CreateNew => {
                    if exists(&dest).await? {
                        return Err(StorageError::PreconditionFailed(key.to_string()));
                    }
                }
                PutMode::IfMatch(etag) => match meta_of(&dest).await {
                    Ok(current) if &current.etag == etag => {}
                    Ok(_) | Err(StorageError::NotFound(_)) => {
                        return Err(StorageError::PreconditionFailed(key.to_string()));
                    }
                    Err(err) => return Err(err),
                },
            }
            rename_into_place(&tmp, &dest).await?;
            meta_of(&dest).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Concatenates files into a new temporary file.
    async fn concat_tmp(&self, sources: &[PathBuf]) -> StorageResult<PathBuf> {
        let tmp = self.tmp_path();
        let result = async {
            let mut out = tokio::fs::File::create(&tmp).await?;
            for source in sources {
                let mut input = tokio::fs::File::open(source).await?;
                tokio::io::copy(&mut input, &mut out).await?;
            }
            out.sync_data().await?;
            Ok::<_, StorageError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(tmp),
            Err(err) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(err)
            }
        }
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
        let path = self.path(key);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| not_found(e, key))?;
        let meta = meta_from(&file.metadata().await?);
        let body: ByteStream = match range {
            None => Box::pin(ReaderStream::with_capacity(file, READ_CHUNK)),
            Some(range) => {
                if range.end >= meta.size || range.start > range.end {
                    return Err(StorageError::InvalidRange);
                }
                file.seek(std::io::SeekFrom::Start(range.start)).await?;
                Box::pin(ReaderStream::with_capacity(
                    file.take(range.len()),
                    READ_CHUNK,
                ))
            }
        };
        Ok(GetObject { meta, body })
    }

    async fn head(&self, key: &Key) -> StorageResult<ObjectMeta> {
        meta_of(&self.path(key)).await
    }

    async fn put(&self, key: &Key, body: ByteStream, mode: PutMode) -> StorageResult<ObjectMeta> {
        let tmp = self.write_tmp(body).await?;
        self.commit(tmp, key, mode).await
    }

    async fn delete(&self, key: &Key) -> StorageResult<()> {
        let path = self.path(key);
        let _guard = self.lock_for(key).lock().await;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                self.prune_dirs(&path).await;
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
        let prefix = prefix.to_string();
        let start_after = start_after.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            list_sorted(&root, &prefix, start_after.as_deref(), limit)
        })
        .await
        .map_err(|e| StorageError::Backend {
            message: e.to_string(),
            retryable: false,
        })?
    }

    async fn copy(&self, from: &Key, to: &Key) -> StorageResult<ObjectMeta> {
        let tmp = self.tmp_path();
        if let Err(err) = tokio::fs::copy(self.path(from), &tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(not_found(err, from));
        }
        self.commit(tmp, to, PutMode::Overwrite).await
    }

    async fn compose(&self, sources: &[Key], dest: &Key) -> StorageResult<ObjectMeta> {
        let tmp = match sources {
            // Sources are immutable, so sharing the inode is as good as a copy.
            [single] => {
                let tmp = self.tmp_path();
                tokio::fs::hard_link(self.path(single), &tmp)
                    .await
                    .map_err(|e| not_found(e, single))?;
                tmp
            }
            many => {
                let paths: Vec<PathBuf> = many.iter().map(|k| self.path(k)).collect();
                self.concat_tmp(&paths).await?
            }
        };
        self.commit(tmp, dest, PutMode::Overwrite).await
    }

    async fn create_multipart(&self, key: &Key) -> StorageResult<String> {
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
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
        if let Err(err) = tokio::fs::rename(&tmp, &dest).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(err.into());
        }
        let meta = meta_of(&dest).await?;
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
            let meta = meta_of(&path).await?;
            if meta.etag != part.etag {
                return Err(StorageError::invalid(format!(
                    "part {} changed",
                    part.number
                )));
            }
            paths.push(path);
        }
        let tmp = self.concat_tmp(&paths).await?;
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

/// Renames `tmp` to `dest`, creating parents; retries when a concurrent
/// delete pruned a parent directory in between.
async fn rename_into_place(tmp: &Path, dest: &Path) -> StorageResult<()> {
    let parent = dest
        .parent()
        .ok_or_else(|| StorageError::invalid("key without parent"))?;
    for _ in 0..3 {
        tokio::fs::create_dir_all(parent).await?;
        match tokio::fs::rename(tmp, dest).await {
            Ok(()) => {
                sync_dir(parent).await;
                return Ok(());
            }
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(StorageError::Backend {
        message: format!("could not create {}", parent.display()),
        retryable: true,
    })
}

/// Makes a rename durable. Best effort: some filesystems refuse to fsync a
/// directory, and the data itself was already synced.
async fn sync_dir(dir: &Path) {
    if let Ok(handle) = tokio::fs::File::open(dir).await {
        let _ = handle.sync_all().await;
    }
}

async fn exists(path: &Path) -> StorageResult<bool> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err.into()),
    }
}

async fn meta_of(path: &Path) -> StorageResult<ObjectMeta> {
    let meta = tokio::fs::metadata(path).await?;
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

/// Lists every file below `prefix`, sorted by key bytes (which is not the
/// order a directory walk yields: `a/b-x` sorts before `a/b/c`).
fn list_sorted(
    root: &Path,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> StorageResult<ListPage> {
    let mut keys = Vec::new();
    let mut stack = vec![root.join(prefix.trim_end_matches('/'))];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(err.into()),
        };
        for entry in entries {
            let entry = entry?;
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if file_type.is_file()
                && let Ok(relative) = entry.path().strip_prefix(root)
                && let Some(key) = relative.to_str()
                && start_after.is_none_or(|after| key > after)
            {
                keys.push(key.to_string());
            }
        }
    }
    keys.sort_unstable();
    let truncated = keys.len() > limit;
    keys.truncate(limit);
    let keys = keys
        .into_iter()
        .map(Key::new)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ListPage { keys, truncated })
}
