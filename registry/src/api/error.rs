//! API errors: an OCI error code, an HTTP status and a message, rendered as
//! the spec's JSON body. Built from service errors by one exhaustive `From`.
//! Rendering does not log; the observing middleware logs 5xx from the
//! [`ErrorMessage`] extension.

use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::service::ServiceError;
use crate::storage::StorageError;

/// The message of a failed response, for the log line of a 5xx.
#[derive(Debug, Clone)]
pub struct ErrorMessage(pub String);

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra response headers (a Vec keeps the error small on the Err path).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
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
            ServiceError::ManifestTooLarge { .. } => {
                Self::new(S::PAYLOAD_TOO_LARGE, "SIZE_INVALID", message)
            }
            ServiceError::SizeInvalid(_) => Self::new(S::BAD_REQUEST, "SIZE_INVALID", message),
            ServiceError::Storage(storage) => storage_error(storage),
        }
    }
}

fn storage_error(err: StorageError) -> ApiError {
    let status = match &err {
        // 507: the request was fine and the registry cannot take it until
        // an operator makes room; nothing was stored.
        StorageError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
        err if err.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, "UNKNOWN", format!("storage failure: {err}"))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({ "errors": [{ "code": self.code, "message": self.message, "detail": null }] });
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        if self.status.is_server_error() {
            response.extensions_mut().insert(ErrorMessage(self.message));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Storage failures reach clients by kind: a full store is 507, a
    /// failure worth retrying 503, anything else 500; all with `UNKNOWN`.
    #[test]
    fn storage_failures_map_by_kind() {
        let cases = [
            (StorageError::Full("blobs/x".into()), 507),
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
}
