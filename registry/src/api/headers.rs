//! Header names and values the spec defines, and small response helpers.

use axum::http::header::{CONTENT_LENGTH, LOCATION, RANGE};
use axum::http::{HeaderMap, HeaderName, HeaderValue};

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

/// The `Range` value of an upload holding `offset` bytes: `0-<last byte>`
/// (`0-0` when empty, as clients expect from distribution).
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// Builds a header map from pairs, skipping values that are not valid
/// header text (all of ours are ASCII by construction).
pub fn map(pairs: impl IntoIterator<Item = (HeaderName, String)>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    headers
}

/// Headers of an upload-session response.
pub fn upload(name: &str, id: &str, offset: u64) -> HeaderMap {
    map([
        (LOCATION, format!("/v2/{name}/blobs/uploads/{id}")),
        (RANGE, upload_range(offset)),
        (UPLOAD_UUID, id.to_string()),
        (CONTENT_LENGTH, "0".to_string()),
    ])
}

/// Headers of a created blob.
pub fn blob_created(name: &str, digest: &impl std::fmt::Display) -> HeaderMap {
    map([
        (LOCATION, format!("/v2/{name}/blobs/{digest}")),
        (CONTENT_DIGEST, digest.to_string()),
        (CONTENT_LENGTH, "0".to_string()),
    ])
}

/// A request header as text, if present and valid.
pub fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
