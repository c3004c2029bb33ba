//! Resumable uploads (POST, PATCH, PUT, GET status, DELETE).
//!
//! All state is in storage (`uploads/<id>/state`, replaced with `If-Match`
//! so two racing chunks cannot both win), and each chunk is its own object:
//! any replica, or this one after a restart, continues where the last chunk
//! ended. Completion verifies the digest from the saved hash state and then
//! composes the chunks into the content-addressed blob, or discards them
//! when that blob already exists (dedupe).

use bytes::Bytes;
use futures::StreamExt;

use crate::ids::random_id;
use crate::oci::{Digest, Hasher, RepoName};
use crate::storage::{ByteStream, Key, PutMode, StorageError};

use super::hashing::HashingFailed;
use super::records::{self, UploadState};
use super::{Registry, ServiceError, ServiceResult, layout, server_fault};

/// The bytes a chunk's `Content-Range` names: `start` to `end`, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    /// Not before `start`.
    pub end: u64,
}

impl ChunkRange {
    /// How many bytes the range names.
    pub fn byte_count(&self) -> u64 {
        self.end - self.start + 1
    }
}

/// What a chunk's request says about it: its `Content-Range` and its
/// `Content-Length`, each when given. The range is checked against the
/// upload and the body; the length only against the range (HTTP itself
/// holds a body to its `Content-Length`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkClaim {
    pub range: Option<ChunkRange>,
    pub length: Option<u64>,
}

impl ChunkClaim {
    fn start(&self) -> Option<u64> {
        self.range.map(|range| range.start)
    }

    /// Refuses, before any byte is stored, a chunk that does not start at
    /// `offset` or whose length disagrees with its range.
    fn check(&self, offset: u64) -> ServiceResult<()> {
        let Some(range) = self.range else {
            return Ok(());
        };
        if range.start != offset {
            return Err(ServiceError::RangeInvalid { offset });
        }
        match self.length {
            Some(length) if length != range.byte_count() => Err(ServiceError::ChunkLengthInvalid {
                offset,
                detail: format!(
                    "Content-Length {length} disagrees with Content-Range {}-{}",
                    range.start, range.end
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a chunk of `written` bytes that its range says is longer or
    /// shorter (a body without `Content-Length`).
    fn check_written(&self, offset: u64, written: u64) -> ServiceResult<()> {
        match self.range {
            Some(range) if range.byte_count() != written => Err(ServiceError::ChunkLengthInvalid {
                offset,
                detail: format!(
                    "the chunk has {written} bytes, not the {} of Content-Range {}-{}",
                    range.byte_count(),
                    range.start,
                    range.end
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// Pieces of chunk bodies queued for the thread that hashes them again
/// (`digest_of_upload`): up to a few MiB from the filesystem driver, which
/// reads 1 MiB at a time.
const REHASH_QUEUE: usize = 4;

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
}

impl Registry {
    /// Starts an upload session in `repo`.
    pub async fn start_upload(&self, repo: &RepoName) -> ServiceResult<UploadStatus> {
        let id = random_id().map_err(StorageError::from)?;
        let state = UploadState::new(repo.as_str());
        self.store
            .put_bytes(
                &layout::upload_state(&id)?,
                records::encode(&state)?,
                PutMode::CreateNew,
            )
            .await?;
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Where upload `id` stands.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> ServiceResult<UploadStatus> {
        let (state, _) = self.load_upload(repo, id).await?;
        Ok(UploadStatus {
            id: id.to_string(),
            offset: state.offset,
        })
    }

    /// Appends a chunk. What the client says about it (`claim`) must
    /// hold: it starts at the current offset and is as long as its range.
    /// A chunk that turns out not to be is deleted, the state unchanged.
    pub async fn append_chunk(
        &self,
        repo: &RepoName,
        id: &str,
        claim: ChunkClaim,
        body: ByteStream,
    ) -> ServiceResult<UploadStatus> {
        let (mut state, etag) = self.load_upload(repo, id).await?;
        claim.check(state.offset)?;
        let chunk = layout::upload_chunk(id, state.offset)?;
        let (hasher, written) = self
            .write_hashed(&chunk, body, state.hasher()?, None, PutMode::Overwrite)
            .await?;
        if let Err(err) = claim.check_written(state.offset, written) {
            self.discard_chunk(&chunk).await;
            return Err(err);
        }
        if written == 0 {
            self.store.delete(&chunk).await?;
            return Ok(UploadStatus {
                id: id.to_string(),
                offset: state.offset,
            });
        }
        state.offset += written;
        state.chunks.push(chunk.to_string());
        state.set_hasher(&hasher);
        let saved = self
            .store
            .put_bytes(
                &layout::upload_state(id)?,
                records::encode(&state)?,
                PutMode::IfMatch(etag),
            )
            .await;
        match saved {
            Ok(_) => Ok(UploadStatus {
                id: id.to_string(),
                offset: state.offset,
            }),
            Err(err) => self.after_failed_save(repo, id, &chunk, &state, err).await,
        }
    }

    /// Answers a chunk whose conditional state write (of `wanted`) failed
    /// with `err`, from the state stored now: the write may have landed
    /// even so (its response was lost, and the S3 SDK's retry got 412),
    /// the upload may have ended meanwhile, or another chunk won. The chunk
    /// is deleted only when the state does not reference it; chunk keys
    /// are never reused, so a reference to it is this write's.
    async fn after_failed_save(
        &self,
        repo: &RepoName,
        id: &str,
        chunk: &Key,
        wanted: &UploadState,
        err: StorageError,
    ) -> ServiceResult<UploadStatus> {
        let current = match self.load_upload(repo, id).await {
            Ok((current, _)) => Some(current),
            Err(ServiceError::UploadUnknown(_)) => None,
            // Whether the state references the chunk is unknown: keep it.
            Err(_) => return Err(err.into()),
        };
        if let Some(current) = &current
            && current.chunks.iter().any(|key| key == chunk.as_str())
        {
            return Ok(UploadStatus {
                id: id.to_string(),
                offset: wanted.offset,
            });
        }
        self.discard_chunk(chunk).await;
        match (current, err) {
            (None, _) => Err(ServiceError::UploadUnknown(id.to_string())),
            (Some(current), StorageError::PreconditionFailed(_)) => {
                Err(ServiceError::RangeInvalid {
                    offset: current.offset,
                })
            }
            (Some(_), other) => Err(other.into()),
        }
    }

    /// Deletes a chunk that no upload state references. A failure is only
    /// logged: the answer to the client does not depend on it, and what
    /// it leaves is an object under `uploads/<id>/` that nothing reads,
    /// for the sweep of abandoned uploads (DESIGN: `uploads.maxAge`).
    async fn discard_chunk(&self, chunk: &Key) {
        if let Err(err) = self.store.delete(chunk).await {
            tracing::warn!(%chunk, error = %err, "could not delete an unreferenced upload chunk");
        }
    }

    /// Finishes upload `id` as blob `digest`, appending `last` first when the
    /// final PUT carries bytes (`claim` says what its headers say of them).
    pub async fn complete_upload(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        claim: ChunkClaim,
        last: Option<ByteStream>,
    ) -> ServiceResult<()> {
        let (state, _) = self.load_upload(repo, id).await?;
        if let Some(body) = last {
            if state.chunks.is_empty() && claim.start().unwrap_or(0) == 0 {
                // The digest verifies every byte; only a claim that
                // contradicts itself is refused first.
                claim.check(0)?;
                return self.complete_monolithic(repo, id, digest, body).await;
            }
            self.append_chunk(repo, id, claim, body).await?;
        }
        let (state, _) = self.load_upload(repo, id).await?;
        let chunks = state.chunk_keys()?;
        let computed = self.digest_of_upload(&state, &chunks, digest).await?;
        if computed != *digest {
            self.close_upload(id, &chunks).await;
            return Err(ServiceError::DigestInvalid(format!(
                "uploaded content has digest {computed}, not {digest}"
            )));
        }
        let blob = layout::blob(digest)?;
        match self.store.head(&blob).await {
            Ok(_) => {}
            Err(err) if err.is_not_found() => {
                if chunks.is_empty() {
                    self.store
                        .put_bytes(&blob, Bytes::new(), PutMode::Overwrite)
                        .await?;
                } else {
                    self.store
                        .compose(&chunks, &blob)
                        .await
                        .map_err(|err| match err {
                            StorageError::NotFound(_) => {
                                ServiceError::UploadUnknown(id.to_string())
                            }
                            other => other.into(),
                        })?;
                }
            }
            Err(err) => return Err(err.into()),
        }
        self.link_blob(repo, digest).await?;
        self.close_upload(id, &chunks).await;
        Ok(())
    }

    /// The monolithic push (POST, then one PUT with the whole blob): the
    /// body goes straight to the content-addressed blob, verified as it is
    /// written, instead of becoming a chunk and an upload-state update first.
    /// Half the writes and fsyncs of the chunk path; the bytes are checked
    /// against `digest` just the same (nothing is stored under a digest they
    /// do not match, DESIGN invariant 2).
    async fn complete_monolithic(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        body: ByteStream,
    ) -> ServiceResult<()> {
        let result = self.put_blob(repo, digest, body).await;
        // Success and a digest mismatch end the upload, as on the chunk
        // path; after any other failure the client may retry the PUT.
        if matches!(result, Ok(()) | Err(ServiceError::DigestInvalid(_))) {
            self.close_upload(id, &[]).await;
        }
        result
    }

    /// Cancels upload `id`, deleting what it received.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> ServiceResult<()> {
        let (state, _) = self.load_upload(repo, id).await?;
        self.discard_upload(id, &state.chunk_keys()?).await
    }

    /// Uploads in storage not yet completed or cancelled, on every replica
    /// (counted up to a bound, so a scrape stays cheap).
    pub async fn count_open_uploads(&self) -> ServiceResult<u64> {
        const MAX_KEYS: usize = 100_000;
        let page = self
            .store
            .list(layout::UPLOADS_PREFIX, None, MAX_KEYS)
            .await?;
        let states = page
            .keys
            .iter()
            .filter(|k| k.as_str().ends_with("/state"))
            .count();
        Ok(states as u64)
    }

    async fn load_upload(&self, repo: &RepoName, id: &str) -> ServiceResult<(UploadState, String)> {
        let unknown = || ServiceError::UploadUnknown(id.to_string());
        if uuid::Uuid::try_parse(id).is_err() {
            return Err(unknown());
        }
        let key = layout::upload_state(id)?;
        let (data, meta) = match self.store.get_bytes(&key).await {
            Ok(found) => found,
            Err(err) if err.is_not_found() => return Err(unknown()),
            Err(err) => return Err(err.into()),
        };
        let state: UploadState = records::decode(&data, &key)?;
        if state.repo != repo.as_str() {
            return Err(unknown());
        }
        Ok((state, meta.etag))
    }

    /// The digest of the uploaded bytes in `want`'s algorithm: from the saved
    /// state when it matches, otherwise by reading the chunks again. Those
    /// are hashed on a blocking thread as they are read: hashing a whole
    /// blob on the runtime thread stalled every request it serves. (One
    /// thread per such completion, unlike the bounded hashing of request
    /// bodies in `hashing`: only a digest in another algorithm than the
    /// saved state's gets here, and nothing waits for the thread but this.)
    async fn digest_of_upload(
        &self,
        state: &UploadState,
        chunks: &[Key],
        want: &Digest,
    ) -> ServiceResult<Digest> {
        let saved = state.hasher()?;
        if saved.algorithm() == want.algorithm() {
            return Ok(saved.finish());
        }
        let (pieces, mut queued) = tokio::sync::mpsc::channel::<Bytes>(REHASH_QUEUE);
        let mut hasher = Hasher::new(want.algorithm());
        let hashing = tokio::task::spawn_blocking(move || {
            while let Some(piece) = queued.blocking_recv() {
                hasher.update(&piece);
            }
            hasher.finish()
        });
        'chunks: for chunk in chunks {
            let mut body = self.store.get(chunk, None).await?.body;
            while let Some(piece) = body.next().await {
                let piece = piece.map_err(StorageError::from)?;
                if pieces.send(piece).await.is_err() {
                    // The thread is gone; joining it says why.
                    break 'chunks;
                }
            }
        }
        drop(pieces);
        hashing
            .await
            .map_err(|_| server_fault(&HashingFailed("the hashing thread stopped")))
    }

    /// Ends an upload whose answer is decided (its blob stored and linked,
    /// or its digest refused): what the client hears does not depend on
    /// the clean-up, so a failed delete is logged, not answered with a
    /// 500. It leaves an abandoned upload, for the sweep of those
    /// (DESIGN: `uploads.maxAge`).
    async fn close_upload(&self, id: &str, chunks: &[Key]) {
        if let Err(err) = self.discard_upload(id, chunks).await {
            tracing::warn!(upload = id, error = %err, "could not clean up a finished upload");
        }
    }

    /// Deletes an upload's state (ending it at once for every replica), then
    /// its chunks.
    async fn discard_upload(&self, id: &str, chunks: &[Key]) -> ServiceResult<()> {
        self.store.delete(&layout::upload_state(id)?).await?;
        for chunk in chunks {
            self.store.delete(chunk).await?;
        }
        Ok(())
    }
}
