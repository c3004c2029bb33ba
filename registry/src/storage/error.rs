//! Storage errors, typed so callers can tell "not there" and "lost a race"
//! from failures, and know whether a retry may help.

use thiserror::Error;

pub type StorageResult<T> = Result<T, StorageError>;

#[derive(Debug, Error)]
pub enum StorageError {
    /// The object (or multipart upload) does not exist.
    #[error("object not found: {0}")]
    NotFound(String),
    /// A conditional put lost: the object exists (`CreateNew`) or changed
    /// (`IfMatch`).
    #[error("precondition failed for {0}")]
    PreconditionFailed(String),
    /// A requested range lies outside the object.
    #[error("range not satisfiable")]
    InvalidRange,
    /// The caller asked for something malformed (a bad key, a bad part list).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The body stream that fed a write failed; nothing was written. Carries
    /// the stream's own error so callers can recover a digest mismatch.
    #[error("body stream failed: {0}")]
    Body(std::io::Error),
    /// The backend has no room left (a full disk or quota, MinIO's
    /// `XMinioStorageFull`): an operator's problem, not a client's, and one
    /// an immediate retry does not solve.
    #[error("storage is full: {0}")]
    Full(String),
    /// The backend cannot serve this store at all: its bucket is missing,
    /// or the endpoint answers for something else. An operator's problem,
    /// like `Full`, which retrying does not solve until it is fixed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend failed; `retryable` says whether trying again may help.
    #[error("storage backend error: {message}")]
    Backend { message: String, retryable: bool },
}

impl StorageError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// Whether the same call may succeed if repeated.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Backend {
                retryable: true,
                ..
            }
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}

impl From<std::io::Error> for StorageError {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let retryable = matches!(
            err.kind(),
            ErrorKind::Interrupted | ErrorKind::TimedOut | ErrorKind::WouldBlock
        );
        match err.kind() {
            ErrorKind::NotFound => Self::NotFound(err.to_string()),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Self::Full(err.to_string()),
            _ => Self::Backend {
                message: err.to_string(),
                retryable,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk or an exhausted quota is told apart from other I/O
    /// failures (clients get 507, not a 500 or a 503 inviting retries).
    #[test]
    fn full_disks_and_quotas_are_full() {
        for kind in [
            std::io::ErrorKind::StorageFull,
            std::io::ErrorKind::QuotaExceeded,
        ] {
            let err = StorageError::from(std::io::Error::from(kind));
            assert!(matches!(err, StorageError::Full(_)), "{kind:?}: {err:?}");
            assert!(!err.is_retryable());
        }
        let err = StorageError::from(std::io::Error::other("disk on fire"));
        assert!(matches!(err, StorageError::Backend { .. }), "{err:?}");
    }
}
