//! The registry's content model over an [`ObjectStore`]: blobs, uploads,
//! manifests, tags, referrers and listings, with the invariants of
//! DESIGN.md enforced here (and nowhere else).
//!
//! May depend on `oci`, `storage`, `config` and `metrics`; never on `api`.

mod blobs;
mod cache;
mod error;
mod hashing;
pub mod layout;
mod listing;
mod manifests;
mod records;
mod referrers;
mod uploads;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::oci::{Digest, Hasher, RepoName};
use crate::storage::{ByteStream, Key, ObjectStore, PutMode, StorageError};

pub use blobs::{BlobRange, BlobRead};
pub use error::{ServiceError, ServiceResult};
pub use listing::Page;
pub use manifests::{ManifestInfo, PutManifest, StoredManifest};
pub use uploads::{ChunkClaim, ChunkRange, UploadStatus};

/// The registry service shared by all request handlers.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn ObjectStore>,
    limits: LimitsConfig,
    metrics: Arc<Metrics>,
    /// Repositories known to have a catalog entry. A cache: losing it only
    /// costs one conditional put per repository.
    known_repos: Arc<RwLock<HashSet<RepoName>>>,
    /// Manifest bodies by digest (immutable content; see `cache`).
    manifest_bodies: Arc<cache::ManifestCache>,
}

impl Registry {
    pub fn new(store: Arc<dyn ObjectStore>, limits: LimitsConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            limits,
            metrics,
            known_repos: Arc::default(),
            manifest_bodies: Arc::default(),
        }
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// Whether storage answers at all (for `/readyz`).
    pub async fn check_storage(&self) -> ServiceResult<()> {
        self.store.list(layout::CATALOG_PREFIX, None, 1).await?;
        Ok(())
    }

    /// Records that `repo` exists, for the catalog.
    async fn ensure_repo(&self, repo: &RepoName) -> ServiceResult<()> {
        if self
            .known_repos
            .read()
            .is_ok_and(|known| known.contains(repo))
        {
            return Ok(());
        }
        let key = layout::catalog_entry(repo)?;
        match self
            .store
            .put_bytes(&key, bytes::Bytes::new(), PutMode::CreateNew)
            .await
        {
            Ok(_) | Err(StorageError::PreconditionFailed(_)) => {}
            Err(err) => return Err(err.into()),
        }
        if let Ok(mut known) = self.known_repos.write() {
            known.insert(repo.clone());
        }
        Ok(())
    }

    /// Whether `repo` has ever been written to.
    async fn repo_exists(&self, repo: &RepoName) -> ServiceResult<bool> {
        match self.store.head(&layout::catalog_entry(repo)?).await {
            Ok(_) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Streams `body` into `key` through `hasher`, failing with
    /// `DIGEST_INVALID` (and writing nothing) when `expect` is given and the
    /// bytes do not match it. Returns the hasher and the byte count.
    async fn write_hashed(
        &self,
        key: &Key,
        body: ByteStream,
        hasher: Hasher,
        expect: Option<Digest>,
        mode: PutMode,
    ) -> ServiceResult<(Hasher, u64)> {
        let (hashing, progress) = hashing::hashing_body(body, hasher, expect);
        let result = self.store.put(key, hashing, mode).await;
        let (hasher, bytes) = take_progress(progress)?;
        self.metrics.bytes_in.inc_by(bytes);
        match result {
            Ok(_) => Ok((hasher, bytes)),
            Err(err) => Err(body_error(err)),
        }
    }

    /// Reads `body` through `hasher` without storing it, to verify a client's
    /// claim about content that is already stored.
    async fn drain_hashed(
        &self,
        body: ByteStream,
        hasher: Hasher,
        expect: Digest,
    ) -> ServiceResult<u64> {
        use futures::StreamExt;
        let (mut hashing, progress) = hashing::hashing_body(body, hasher, Some(expect));
        while let Some(chunk) = hashing.next().await {
            if let Err(err) = chunk {
                return Err(body_error(StorageError::Body(err)));
            }
        }
        let (_, bytes) = take_progress(progress)?;
        self.metrics.bytes_in.inc_by(bytes);
        Ok(bytes)
    }
}

fn take_progress(
    progress: Arc<std::sync::Mutex<hashing::Progress>>,
) -> ServiceResult<(Hasher, u64)> {
    let progress = progress
        .lock()
        .map_err(|_| server_fault(&hashing::HashingFailed("hash state poisoned")))?;
    Ok((progress.hasher.clone(), progress.bytes))
}

/// Turns a failed body stream into the client's error: a mismatch is the
/// client's (400 `DIGEST_INVALID`), as is a body that broke off; a failure
/// of the hashing itself is the server's (500).
fn body_error(err: StorageError) -> ServiceError {
    match err {
        StorageError::Body(io) => {
            if let Some(mismatch) = hashing::mismatch_of(&io) {
                ServiceError::DigestInvalid(mismatch.to_string())
            } else if let Some(failure) = hashing::hashing_failure_of(&io) {
                server_fault(failure)
            } else {
                ServiceError::UploadInvalid(format!("request body failed: {io}"))
            }
        }
        other => other.into(),
    }
}

/// A fault of this process while handling a body: answered 500, not retried
/// by the storage layer.
fn server_fault(failure: &hashing::HashingFailed) -> ServiceError {
    ServiceError::Storage(StorageError::Backend {
        message: failure.to_string(),
        retryable: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A digest mismatch and a broken body are the client's errors (400); a
    /// failure of the hashing itself is the server's (500, not retried).
    #[test]
    fn body_errors_blame_the_right_side() {
        let mismatch = hashing::DigestMismatch {
            expected: Hasher::new(crate::oci::Algorithm::Sha256).finish(),
            computed: Hasher::new(crate::oci::Algorithm::Sha512).finish(),
        };
        let err = body_error(StorageError::Body(std::io::Error::other(mismatch)));
        assert!(matches!(err, ServiceError::DigestInvalid(_)), "{err:?}");

        let failed = hashing::HashingFailed("the hashing thread stopped");
        let err = body_error(StorageError::Body(std::io::Error::other(failed)));
        assert!(
            matches!(
                &err,
                ServiceError::Storage(StorageError::Backend {
                    retryable: false,
                    message,
                }) if message == "the hashing thread stopped"
            ),
            "{err:?}"
        );

        let gone = std::io::Error::other("client went away");
        let err = body_error(StorageError::Body(gone));
        assert!(matches!(err, ServiceError::UploadInvalid(_)), "{err:?}");
    }
}
