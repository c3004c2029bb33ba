//! Errors of the registry's content model. The API layer maps each variant
//! to an OCI error code and status in one exhaustive `From`.

use thiserror::Error;

use crate::oci::{Digest, DigestError, NameError};
use crate::storage::StorageError;

pub type ServiceResult<T> = Result<T, ServiceError>;

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("blob unknown to this repository: {0}")]
    BlobUnknown(Digest),
    #[error("upload {0} unknown or finished")]
    UploadUnknown(String),
    #[error("{0}")]
    UploadInvalid(String),
    /// A chunk did not start where the upload ends (HTTP 416).
    #[error("chunk does not start at the upload's offset {offset}")]
    RangeInvalid { offset: u64 },
    /// A chunk's length is not what its `Content-Range` says (HTTP 416);
    /// the upload, at `offset`, did not take it.
    #[error("{detail}")]
    ChunkLengthInvalid { offset: u64, detail: String },
    /// A requested blob range lies outside the blob (HTTP 416).
    #[error("requested range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("manifest references {0}, which is not in this repository")]
    ManifestBlobUnknown(Digest),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    TagInvalid(String),
    #[error("repository {0} is not known")]
    NameUnknown(String),
    /// A delete of a manifest that an index of the repository lists.
    #[error(
        "manifest {child} is listed by index {parent} in this repository: delete the index first"
    )]
    ManifestReferenced { child: Digest, parent: Digest },
    /// A push whose manifest was deleted by digest while it wrote its tags.
    #[error(
        "manifest {0} was deleted while this push wrote its tags; the tags were taken back: push again"
    )]
    DeletedDuringPush(Digest),
    #[error("manifest exceeds the {limit}-byte limit")]
    ManifestTooLarge { limit: u64 },
    #[error("{0}")]
    SizeInvalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<NameError> for ServiceError {
    fn from(err: NameError) -> Self {
        match err {
            NameError::Name(_) => Self::NameInvalid(err.to_string()),
            // A reference with a `:` is meant as a digest.
            NameError::Reference(ref text) if text.contains(':') => {
                Self::DigestInvalid(err.to_string())
            }
            NameError::Tag(_) | NameError::Reference(_) => Self::TagInvalid(err.to_string()),
        }
    }
}

impl From<DigestError> for ServiceError {
    fn from(err: DigestError) -> Self {
        Self::DigestInvalid(err.to_string())
    }
}
