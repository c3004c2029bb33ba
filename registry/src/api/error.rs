//! API errors: an OCI error code, an HTTP status and a message, rendered as
//! the spec's JSON body. Built from service errors by one exhaustive `From`.
//! Rendering does not log; the observing middleware logs 5xx from the
//! [`ErrorMessage`] extension. A storage failure tells the client only its
//! kind: its detail (keys, the S3 endpoint, the SDK's context) is for the
//! log.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::service::ServiceError;
use crate::storage::StorageError;

/// What went wrong, for the log line of a 5xx: the failure in full, where
/// the response body has only a short message.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers (a Vec keeps the error small on the Err path).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The failure in full, for the log only, when `message` leaves it out.
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
            detail: None,
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: String) -> Self {
        if let Ok(value) = HeaderValue::from_str(&value) {
            self.headers.push((name, value));
        }
        self
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "method not supported on this endpoint",
        )
    }

    pub fn digest_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
    }

    pub fn pagination_invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "PAGINATION_NUMBER_INVALID",
            message,
        )
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        use StatusCode as S;
        let message = err.to_string();
        match err {
            ServiceError::BlobUnknown(_) => Self::new(S::NOT_FOUND, "BLOB_UNKNOWN", message),
            ServiceError::UploadUnknown(_) => {
                Self::new(S::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN", message)
            }
            ServiceError::UploadInvalid(_) => {
                Self::new(S::BAD_REQUEST, "BLOB_UPLOAD_INVALID", message)
            }
            ServiceError::RangeInvalid { offset }
            | ServiceError::ChunkLengthInvalid { offset, .. } => {
                Self::new(S::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID", message).with_header(
                    axum::http::header::RANGE,
                    super::headers::upload_range(offset),
                )
            }
            ServiceError::RangeNotSatisfiable { size } => {
                Self::new(S::RANGE_NOT_SATISFIABLE, "RANGE_INVALID", message)
                    .with_header(axum::http::header::CONTENT_RANGE, format!("bytes */{size}"))
            }
            ServiceError::DigestInvalid(_) => Self::new(S::BAD_REQUEST, "DIGEST_INVALID", message),
            ServiceError::ManifestBlobUnknown(_) => {
                Self::new(S::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", message)
            }
            ServiceError::ManifestInvalid(_) => {
                Self::new(S::BAD_REQUEST, "MANIFEST_INVALID", message)
            }
            ServiceError::ManifestUnknown(_) => {
                Self::new(S::NOT_FOUND, "MANIFEST_UNKNOWN", message)
            }
            ServiceError::NameInvalid(_) => Self::new(S::BAD_REQUEST, "NAME_INVALID", message),
            ServiceError::TagInvalid(_) => Self::new(S::BAD_REQUEST, "TAG_INVALID", message),
            ServiceError::NameUnknown(_) => Self::new(S::NOT_FOUND, "NAME_UNKNOWN", message),
            // 409: the request conflicts with the repository's state (or a
            // request running beside it); the message says what to do.
            ServiceError::ManifestReferenced { .. } | ServiceError::DeletedDuringPush(_) => {
                Self::new(S::CONFLICT, "DENIED", message)
            }
            ServiceError::ManifestTooLarge { .. } => {
                Self::new(S::PAYLOAD_TOO_LARGE, "SIZE_INVALID", message)
            }
            ServiceError::SizeInvalid(_) => Self::new(S::BAD_REQUEST, "SIZE_INVALID", message),
            ServiceError::Storage(storage) => storage_error(storage),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let message = err.to_string();
        match err {
            // 429, not 500: the registry is fine and the client may retry;
            // a second clears a burst of bcrypt checks (about 0.1 s each).
            AuthError::Busy => Self::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
                .with_header(axum::http::header::RETRY_AFTER, "1".into()),
        }
    }
}

fn storage_error(err: StorageError) -> ApiError {
    use StatusCode as S;
    let (status, message) = match &err {
        // 507: the request was fine and the registry cannot take it until
        // an operator makes room; nothing was stored.
        StorageError::Full(_) => (S::INSUFFICIENT_STORAGE, "storage is full"),
        // The store itself is missing: no request can succeed until an
        // operator restores it.
        StorageError::Unavailable(_) => (S::SERVICE_UNAVAILABLE, "storage backend unavailable"),
        err if err.is_retryable() => (S::SERVICE_UNAVAILABLE, "storage backend unavailable"),
        _ => (S::INTERNAL_SERVER_ERROR, "internal error"),
    };
    let mut api = ApiError::new(status, "UNKNOWN", message);
    api.detail = Some(chain(&err));
    api
}

/// `err` and its sources, on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({ "errors": [{ "code": self.code, "message": self.message, "detail": null }] });
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        if self.status.is_server_error() {
            let logged = self.detail.unwrap_or(self.message);
            response.extensions_mut().insert(ErrorMessage(logged));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Storage failures reach clients by kind: a full store is 507, a
    /// missing one or a failure worth retrying 503, anything else 500; all
    /// with `UNKNOWN`.
    #[test]
    fn storage_failures_map_by_kind() {
        let cases = [
            (StorageError::Full("blobs/x".into()), 507),
            (StorageError::Unavailable("no bucket".into()), 503),
            (
                StorageError::Backend {
                    message: "slow down".into(),
                    retryable: true,
                },
                503,
            ),
            (
                StorageError::Backend {
                    message: "denied".into(),
                    retryable: false,
                },
                500,
            ),
        ];
        for (err, status) in cases {
            let api = ApiError::from(ServiceError::Storage(err));
            assert_eq!(api.status.as_u16(), status, "{}", api.message);
            assert_eq!(api.code, "UNKNOWN");
        }
    }

    /// A full queue of password checks is the spec's 429 with a
    /// `Retry-After`, not a 500.
    #[test]
    fn busy_auth_is_too_many_requests_with_retry_after() {
        let response = ApiError::from(AuthError::Busy).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(axum::http::header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
        assert!(response.extensions().get::<ErrorMessage>().is_none());
    }

    /// Regression: a storage failure's body carried its whole message (the
    /// S3 endpoint, keys, the SDK's dump of the response). The client gets
    /// a short message; the detail goes only to the log line, through the
    /// response's [`ErrorMessage`].
    #[tokio::test]
    async fn storage_failures_tell_clients_nothing_internal() {
        let detail = "blobs/sha256/ab: dispatch failure: io error: tcp connect error \
                      to http://10.1.2.3:9000: Connection refused";
        for retryable in [true, false] {
            let err = StorageError::Backend {
                message: detail.into(),
                retryable,
            };
            let response = ApiError::from(ServiceError::Storage(err)).into_response();
            let logged = response
                .extensions()
                .get::<ErrorMessage>()
                .map(|m| m.0.clone())
                .unwrap_or_default();
            assert!(logged.contains(detail), "{logged}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains("\"code\":\"UNKNOWN\""), "{body}");
            for internal in ["10.1.2.3", "blobs/", "dispatch"] {
                assert!(!body.contains(internal), "{body}");
            }
        }
    }
}
