//! Object storage: the one trait every backend implements, and how a backend
//! is chosen from configuration.
//!
//! The registry's content model (`crate::service`) sees storage only through
//! [`ObjectStore`]. The trait is shaped after S3 (flat keys, whole-object
//! writes, conditional puts, sorted listing, multipart uploads) so that the
//! local filesystem and S3 drivers can be swapped without changing callers.
//! This module may depend on nothing else in the crate but `config`.

mod error;
mod fs;
mod key;
mod s3;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

pub use error::{StorageError, StorageResult};
pub use fs::FsStore;
pub use key::Key;
pub use s3::S3Store;

use crate::config::StorageConfig;

/// A stream of body bytes. A stream that yields an error makes the write that
/// consumes it fail and leave nothing behind: that is how callers abort a
/// write whose bytes turned out not to match their digest.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// What storage knows about one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// Opaque version tag; changes whenever the object is replaced. Used for
    /// `If-Match` conditional puts.
    pub etag: String,
    /// When the object was last written.
    pub last_modified: SystemTime,
}

/// An inclusive byte range `start..=end`, already checked against the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes covered.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a range covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The body of a GET.
pub struct GetObject {
    pub meta: ObjectMeta,
    pub body: ByteStream,
}

impl Debug for GetObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetObject")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Precondition of a put (S3 `If-None-Match: *` / `If-Match: <etag>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Create or replace.
    Overwrite,
    /// Create only; [`StorageError::PreconditionFailed`] when the key exists.
    CreateNew,
    /// Replace only the version with this etag; `PreconditionFailed` otherwise.
    IfMatch(String),
}

/// One page of a listing: keys in ascending byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub keys: Vec<Key>,
    /// Whether more keys follow the last one returned.
    pub truncated: bool,
}

/// A part written to a multipart upload, as needed to complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: u32,
    pub etag: String,
    pub size: u64,
}

/// Object storage with S3's semantics.
///
/// Guarantees every implementation gives, checked by the shared suite in
/// `tests/storage_suite.rs`:
/// - A write is atomic: readers see the old object or the whole new one, never
///   a part. A failed write (error from the body stream, I/O error, failed
///   precondition) leaves the previous state untouched.
/// - `list` returns keys below `prefix` recursively, in ascending byte order,
///   strictly after `start_after`; pages never skip or repeat a key.
/// - `delete` of a missing key succeeds (idempotent).
/// - Errors say whether retrying may help ([`StorageError::is_retryable`]).
///
/// Keys form a tree: no key may equal another key's directory prefix (`a`
/// and `a/b` cannot both exist). The layout in `crate::service::layout`
/// keeps to this so that the filesystem can store any key set.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// Reads an object, or the given range of it.
    async fn get(&self, key: &Key, range: Option<ByteRange>) -> StorageResult<GetObject>;

    /// Size, etag and modification time of an object.
    async fn head(&self, key: &Key) -> StorageResult<ObjectMeta>;

    /// Writes an object from a stream.
    async fn put(&self, key: &Key, body: ByteStream, mode: PutMode) -> StorageResult<ObjectMeta>;

    /// Deletes an object; succeeds when it does not exist.
    async fn delete(&self, key: &Key) -> StorageResult<()>;

    /// Lists keys below `prefix` (which ends in `/`), after `start_after`, at
    /// most `limit` of them.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StorageResult<ListPage>;

    /// Server-side copy; `to` appears atomically.
    async fn copy(&self, from: &Key, to: &Key) -> StorageResult<ObjectMeta>;

    /// Starts a multipart upload that will become `key` on completion.
    async fn create_multipart(&self, key: &Key) -> StorageResult<String>;

    /// Writes (or replaces) part `number` (1-based) of a multipart upload.
    async fn put_part(
        &self,
        key: &Key,
        upload_id: &str,
        number: u32,
        body: ByteStream,
    ) -> StorageResult<Part>;

    /// Assembles the parts, in the order given, into `key` atomically.
    async fn complete_multipart(
        &self,
        key: &Key,
        upload_id: &str,
        parts: &[Part],
    ) -> StorageResult<ObjectMeta>;

    /// Discards a multipart upload and its parts; succeeds when it is gone.
    async fn abort_multipart(&self, key: &Key, upload_id: &str) -> StorageResult<()>;

    /// Concatenates `sources` into `dest` atomically. The default streams the
    /// sources through a multipart upload; drivers override it where they can
    /// do better (the filesystem links a single source instead of copying).
    async fn compose(&self, sources: &[Key], dest: &Key) -> StorageResult<ObjectMeta> {
        if let [single] = sources {
            return self.copy(single, dest).await;
        }
        let upload_id = self.create_multipart(dest).await?;
        let mut parts = Vec::with_capacity(sources.len());
        for (index, source) in sources.iter().enumerate() {
            let written = async {
                let object = self.get(source, None).await?;
                let number = u32::try_from(index + 1)
                    .map_err(|_| StorageError::invalid("too many parts"))?;
                self.put_part(dest, &upload_id, number, object.body).await
            }
            .await;
            match written {
                Ok(part) => parts.push(part),
                Err(err) => {
                    let _ = self.abort_multipart(dest, &upload_id).await;
                    return Err(err);
                }
            }
        }
        self.complete_multipart(dest, &upload_id, &parts).await
    }

    /// A time-limited URL from which clients can download `key` directly,
    /// when the driver is configured to hand them out (S3 `redirect`).
    async fn presign_get(&self, _key: &Key) -> StorageResult<Option<String>> {
        Ok(None)
    }

    /// Reads a whole small object (link records, manifests) into memory.
    async fn get_bytes(&self, key: &Key) -> StorageResult<(Bytes, ObjectMeta)> {
        let object = self.get(key, None).await?;
        let mut buf = Vec::with_capacity(usize::try_from(object.meta.size).unwrap_or(0));
        let mut body = object.body;
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.map_err(StorageError::from)?);
        }
        Ok((Bytes::from(buf), object.meta))
    }

    /// Writes a small object held in memory.
    async fn put_bytes(&self, key: &Key, data: Bytes, mode: PutMode) -> StorageResult<ObjectMeta> {
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(data) }));
        self.put(key, body, mode).await
    }
}

/// Builds the configured storage driver.
pub async fn from_config(config: &StorageConfig) -> StorageResult<Arc<dyn ObjectStore>> {
    match config {
        StorageConfig::Filesystem(fs) => Ok(Arc::new(FsStore::open(&fs.root).await?)),
        StorageConfig::S3(s3) => Ok(Arc::new(S3Store::connect(s3).await?)),
    }
}
