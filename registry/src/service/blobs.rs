//! Blobs as a repository sees them: existence, reads (with ranges), links,
//! cross-repository mounts, monolithic uploads and deletion of links.

use crate::oci::{Digest, Hasher, RepoName};
use crate::storage::{ByteRange, ByteStream, GetObject, PutMode};

use super::{Registry, ServiceError, ServiceResult, layout};

/// A parsed `Range: bytes=...` request, resolved against the size later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobRange {
    /// `bytes=start-` or `bytes=start-end`.
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl BlobRange {
    fn resolve(self, size: u64) -> Option<ByteRange> {
        let last = size.checked_sub(1)?;
        match self {
            Self::From { start, end } if start <= last => {
                let end = end.map_or(last, |e| e.min(last));
                (start <= end).then_some(ByteRange { start, end })
            }
            Self::From { .. } => None,
            Self::Suffix(0) => None,
            Self::Suffix(n) => Some(ByteRange {
                start: size.saturating_sub(n),
                end: last,
            }),
        }
    }
}

/// A blob being read.
#[derive(Debug)]
pub struct BlobRead {
    pub object: GetObject,
    /// Size of the whole blob.
    pub size: u64,
    /// The range served, when the client asked for one.
    pub range: Option<ByteRange>,
}

impl Registry {
    /// Size of a blob visible in `repo`.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> ServiceResult<u64> {
        self.check_blob_link(repo, digest).await?;
        match self.store.head(&layout::blob(digest)?).await {
            Ok(meta) => Ok(meta.size),
            Err(err) if err.is_not_found() => Err(ServiceError::BlobUnknown(digest.clone())),
            Err(err) => Err(err.into()),
        }
    }

    /// Opens a blob visible in `repo`, or a range of it.
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<BlobRange>,
    ) -> ServiceResult<BlobRead> {
        self.check_blob_link(repo, digest).await?;
        let key = layout::blob(digest)?;
        let unknown = |err: crate::storage::StorageError| {
            if err.is_not_found() {
                ServiceError::BlobUnknown(digest.clone())
            } else {
                err.into()
            }
        };
        let Some(range) = range else {
            let object = self.store.get(&key, None).await.map_err(unknown)?;
            let size = object.meta.size;
            self.metrics.bytes_out.inc_by(size);
            return Ok(BlobRead {
                object,
                size,
                range: None,
            });
        };
        let size = self.store.head(&key).await.map_err(unknown)?.size;
        let resolved = range
            .resolve(size)
            .ok_or(ServiceError::RangeNotSatisfiable { size })?;
        let object = self
            .store
            .get(&key, Some(resolved))
            .await
            .map_err(unknown)?;
        self.metrics.bytes_out.inc_by(resolved.len());
        Ok(BlobRead {
            object,
            size,
            range: Some(resolved),
        })
    }

    /// A presigned URL to download a blob visible in `repo` from storage
    /// directly, when the driver hands them out (S3 `redirect.enabled`).
    pub async fn blob_redirect(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> ServiceResult<Option<String>> {
        self.check_blob_link(repo, digest).await?;
        Ok(self.store.presign_get(&layout::blob(digest)?).await?)
    }

    /// Removes `repo`'s link to a blob. The content stays until garbage
    /// collection finds nothing else linking it.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> ServiceResult<()> {
        self.check_blob_link(repo, digest).await?;
        self.store.delete(&layout::blob_link(repo, digest)?).await?;
        Ok(())
    }

    /// Makes an existing blob visible in `repo` without uploading it: from
    /// `from` when given (and it holds the blob), otherwise from the global
    /// store. Returns whether it mounted.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> ServiceResult<bool> {
        if let Some(source) = from
            && self.check_blob_link(source, digest).await.is_err()
        {
            return Ok(false);
        }
        match self.store.head(&layout::blob(digest)?).await {
            Ok(_) => {
                self.link_blob(repo, digest).await?;
                Ok(true)
            }
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Stores a whole blob sent in one request, verified against `digest`.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: ByteStream,
    ) -> ServiceResult<()> {
        let key = layout::blob(digest)?;
        let hasher = Hasher::new(digest.algorithm());
        match self.store.head(&key).await {
            // Already stored (dedupe): verify the client's bytes, keep ours.
            Ok(_) => {
                self.drain_hashed(body, hasher, digest.clone()).await?;
            }
            Err(err) if err.is_not_found() => {
                self.write_hashed(&key, body, hasher, Some(digest.clone()), PutMode::Overwrite)
                    .await?;
            }
            Err(err) => return Err(err.into()),
        }
        self.link_blob(repo, digest).await
    }

    /// Makes a stored blob visible in `repo`.
    pub(super) async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> ServiceResult<()> {
        let link = layout::blob_link(repo, digest)?;
        let record = bytes::Bytes::from(digest.to_string());
        self.store
            .put_bytes(&link, record, PutMode::Overwrite)
            .await?;
        self.ensure_repo(repo).await
    }

    /// `BLOB_UNKNOWN` unless `repo` links the blob.
    pub(super) async fn check_blob_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> ServiceResult<()> {
        match self.store.head(&layout::blob_link(repo, digest)?).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_not_found() => Err(ServiceError::BlobUnknown(digest.clone())),
            Err(err) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_size() {
        let r = |start, end| Some(ByteRange { start, end });
        assert_eq!(
            BlobRange::From {
                start: 0,
                end: Some(9)
            }
            .resolve(100),
            r(0, 9)
        );
        assert_eq!(
            BlobRange::From {
                start: 90,
                end: None
            }
            .resolve(100),
            r(90, 99)
        );
        assert_eq!(
            BlobRange::From {
                start: 90,
                end: Some(500)
            }
            .resolve(100),
            r(90, 99)
        );
        assert_eq!(BlobRange::Suffix(10).resolve(100), r(90, 99));
        assert_eq!(BlobRange::Suffix(500).resolve(100), r(0, 99));
        assert_eq!(
            BlobRange::From {
                start: 100,
                end: None
            }
            .resolve(100),
            None
        );
        assert_eq!(
            BlobRange::From {
                start: 5,
                end: Some(4)
            }
            .resolve(100),
            None
        );
        assert_eq!(
            BlobRange::From {
                start: 0,
                end: None
            }
            .resolve(0),
            None
        );
    }
}
