//! S3 errors as storage errors: the status and error code decide what
//! callers see (not found, failed precondition, retryable or not). The
//! message (for the request's log line; clients get none of it) is the
//! service's code and message; the SDK's full context is logged here.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::super::{PutMode, StorageError};

/// The codes of a 404 about the object or upload asked for. Any other 404
/// (`NoSuchBucket`, a proxy's page) is the store missing, not the object:
/// reporting it as not found would pass an empty store off as a real one.
/// `NotFound` is the SDK's code for a HEAD's 404, which has no body to say
/// which it is: a HEAD cannot tell a missing bucket from a missing key.
const NOT_FOUND: &[&str] = &["NoSuchKey", "NoSuchUpload", "NotFound"];

/// S3 answers `If-Match` on a missing key with 404; for the trait that is
/// a failed precondition like any other.
pub(super) fn conditional(err: StorageError, mode: &PutMode) -> StorageError {
    match (err, mode) {
        (StorageError::NotFound(key), PutMode::IfMatch(_)) => StorageError::PreconditionFailed(key),
        (err, _) => err,
    }
}

/// Maps an SDK error to a storage error by HTTP status and error code.
pub(super) fn from_sdk<E>(err: SdkError<E, HttpResponse>, what: &str) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default().to_string();
    // A service error's code and message say what went wrong; its full
    // context (raw response, headers, request ids) is logged below, not
    // repeated in the message. Transport errors have no code: their
    // context is the message.
    let message = match (&err, err.message()) {
        (SdkError::ServiceError(_), Some(text)) if !code.is_empty() => {
            format!("{what}: {code}: {text}")
        }
        // Without a message (a HEAD's empty body, a terse server) the code,
        // or else the status, is what the service said.
        (SdkError::ServiceError(_), _) if !code.is_empty() => format!("{what}: {code}"),
        (SdkError::ServiceError(_), _) => {
            format!("{what}: HTTP status {}", status.unwrap_or_default())
        }
        _ => format!("{what}: {}", DisplayErrorContext(&err)),
    };
    let mapped = match (&err, status) {
        (SdkError::ServiceError(_), Some(404)) if NOT_FOUND.contains(&code.as_str()) => {
            StorageError::NotFound(what.to_string())
        }
        (SdkError::ServiceError(_), Some(404)) if code == "NoSuchBucket" => {
            StorageError::Unavailable(format!("the bucket does not exist: {message}"))
        }
        (SdkError::ServiceError(_), Some(404)) => StorageError::Unavailable(message),
        (SdkError::ServiceError(_), Some(412)) => {
            StorageError::PreconditionFailed(what.to_string())
        }
        // A conditional write that raced another one on the same key.
        (SdkError::ServiceError(_), Some(409)) if code == "ConditionalRequestConflict" => {
            StorageError::PreconditionFailed(what.to_string())
        }
        (SdkError::ServiceError(_), Some(416)) => StorageError::InvalidRange,
        (SdkError::ServiceError(_), Some(507)) => StorageError::Full(message),
        (SdkError::ServiceError(_), _) if code == "XMinioStorageFull" => {
            StorageError::Full(message)
        }
        (SdkError::ServiceError(_), Some(s)) => StorageError::Backend {
            message,
            retryable: s == 429 || s >= 500 || code == "SlowDown",
        },
        (
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_),
            _,
        ) => StorageError::Backend {
            message,
            retryable: true,
        },
        _ => StorageError::Backend {
            message,
            retryable: false,
        },
    };
    if let StorageError::Backend { .. } | StorageError::Full(_) | StorageError::Unavailable(_) =
        &mapped
    {
        // The short message goes to the request's log line; the full
        // context (request ids for the provider) only here.
        tracing::warn!(key = what, error = %DisplayErrorContext(&err), "S3 request failed");
    }
    mapped
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A service error reads as its code and message, not as the SDK's
    /// dump of the raw response (headers, request ids); MinIO's full drive
    /// is a full store.
    #[test]
    fn service_errors_read_as_code_and_message() {
        use aws_sdk_s3::error::ErrorMetadata;
        use aws_sdk_s3::operation::put_object::PutObjectError;
        use aws_sdk_s3::primitives::SdkBody;
        let meta = ErrorMetadata::builder()
            .code("XMinioStorageFull")
            .message("Storage backend has reached its minimum free drive threshold.")
            .build();
        let raw = HttpResponse::new(507.try_into().unwrap(), SdkBody::from("<Error/>"));
        let err = SdkError::service_error(PutObjectError::generic(meta), raw);
        match from_sdk(err, "uploads/x/state") {
            StorageError::Full(message) => assert_eq!(
                message,
                "uploads/x/state: XMinioStorageFull: Storage backend has reached its \
                 minimum free drive threshold."
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Regression: a service error without a message (s3s-fs's
    /// `NoSuchBucket`, a HEAD's empty body) read as the SDK's dump of the
    /// raw response, headers and body, which then reached the log line and
    /// the client. It reads as its code, or its status.
    #[test]
    fn service_errors_without_a_message_read_as_code_or_status() {
        use aws_sdk_s3::error::ErrorMetadata;
        use aws_sdk_s3::operation::put_object::PutObjectError;
        use aws_sdk_s3::primitives::SdkBody;
        for (meta, expected) in [
            (
                ErrorMetadata::builder().code("AccessDenied").build(),
                "blobs/x: AccessDenied",
            ),
            (ErrorMetadata::builder().build(), "blobs/x: HTTP status 403"),
        ] {
            let raw = HttpResponse::new(403.try_into().unwrap(), SdkBody::from("<Error/>"));
            let err = SdkError::service_error(PutObjectError::generic(meta), raw);
            match from_sdk(err, "blobs/x") {
                StorageError::Backend { message, .. } => assert_eq!(message, expected),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn not_found_as(code: &str) -> StorageError {
        use aws_sdk_s3::error::ErrorMetadata;
        use aws_sdk_s3::operation::get_object::GetObjectError;
        use aws_sdk_s3::primitives::SdkBody;
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("The specified thing does not exist")
            .build();
        let raw = HttpResponse::new(404.try_into().unwrap(), SdkBody::from("<Error/>"));
        from_sdk(
            SdkError::service_error(GetObjectError::generic(meta), raw),
            "repositories/a/_manifests/tags/latest",
        )
    }

    /// Regression: every 404 was "not found", so a missing bucket read as
    /// unknown manifests on pulls. Only a missing key or upload (or a HEAD's
    /// bodiless 404, which cannot say which) is not found; any other 404 is
    /// the storage failing, and says what S3 answered.
    #[test]
    fn only_missing_keys_and_uploads_are_not_found() {
        for code in ["NoSuchKey", "NoSuchUpload", "NotFound"] {
            let err = not_found_as(code);
            assert!(err.is_not_found(), "{code}: {err:?}");
        }
        for code in ["NoSuchBucket", "SomethingElse"] {
            let err = not_found_as(code);
            assert!(!err.is_not_found(), "{code}: {err:?}");
            assert!(err.to_string().contains(code), "{code}: {err}");
        }
    }
}
