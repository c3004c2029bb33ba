//! The small JSON records stored beside content: what a link, a tag and an
//! upload hold. Field names are part of the storage format; change them only
//! with a migration.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::oci::{Algorithm, Digest, DigestError, Hasher};
use crate::storage::Key;

use super::{ServiceError, ServiceResult};

/// A repository's link to a manifest: enough to answer HEAD without
/// reading the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestLink {
    pub media_type: String,
    pub size: u64,
}

/// A tag: which manifest it names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: Digest,
}

/// An index that lists a manifest (`layout::parent`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParentRecord {
    pub index: Digest,
}

/// An upload in progress. Lives in storage so that any replica, or this one
/// after a restart, can take the next chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadState {
    pub repo: String,
    pub offset: u64,
    /// Algorithm of `hash_state`.
    pub algorithm: String,
    /// Base64 of the serialised hasher covering bytes `0..offset`.
    pub hash_state: String,
    /// Chunk keys, in order; together they hold bytes `0..offset`.
    pub chunks: Vec<String>,
    /// Seconds since the Unix epoch when the upload began.
    pub started: u64,
}

impl UploadState {
    pub fn new(repo: &str) -> Self {
        let hasher = Hasher::new(Algorithm::Sha256);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        Self {
            repo: repo.to_string(),
            offset: 0,
            algorithm: Algorithm::Sha256.as_str().into(),
            hash_state: STANDARD.encode(hasher.save()),
            chunks: Vec::new(),
            started,
        }
    }

    pub fn hasher(&self) -> ServiceResult<Hasher> {
        let algorithm = Algorithm::parse(&self.algorithm)?;
        let state = STANDARD
            .decode(&self.hash_state)
            .map_err(|_| DigestError::BadState)?;
        Ok(Hasher::restore(algorithm, &state)?)
    }

    pub fn set_hasher(&mut self, hasher: &Hasher) {
        self.algorithm = hasher.algorithm().as_str().into();
        self.hash_state = STANDARD.encode(hasher.save());
    }

    pub fn chunk_keys(&self) -> ServiceResult<Vec<Key>> {
        self.chunks
            .iter()
            .map(|k| Key::new(k.as_str()).map_err(ServiceError::from))
            .collect()
    }
}

/// Encodes a record.
pub fn encode<T: Serialize>(record: &T) -> ServiceResult<bytes::Bytes> {
    serde_json::to_vec(record)
        .map(bytes::Bytes::from)
        .map_err(|e| ServiceError::Storage(crate::storage::StorageError::invalid(e.to_string())))
}

/// Decodes a record; a corrupt record is a storage fault, not the client's.
pub fn decode<T: for<'de> Deserialize<'de>>(data: &[u8], what: &Key) -> ServiceResult<T> {
    serde_json::from_slice(data).map_err(|e| {
        ServiceError::Storage(crate::storage::StorageError::Backend {
            message: format!("corrupt record {what}: {e}"),
            retryable: false,
        })
    })
}
