//! Request parsing shared by the handlers: validated names and digests
//! (bad ones become the spec's errors), query strings, bodies, ranges.

use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderMap, Uri, header};
use futures::TryStreamExt;
use serde::de::DeserializeOwned;

use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::service::{BlobRange, ChunkClaim, ChunkRange, ServiceError};
use crate::storage::ByteStream;

use super::error::ApiError;
use super::headers;

pub fn repo(name: &str) -> Result<RepoName, ApiError> {
    RepoName::parse(name).map_err(|e| ServiceError::from(e).into())
}

pub fn digest(text: &str) -> Result<Digest, ApiError> {
    text.parse()
        .map_err(|e: crate::oci::DigestError| ApiError::digest_invalid(e.to_string()))
}

pub fn reference(text: &str) -> Result<Reference, ApiError> {
    Reference::parse(text).map_err(|e| ServiceError::from(e).into())
}

/// The query string as `T`; malformed queries are the client's error.
pub fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri).map(|q| q.0).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            format!("invalid query: {e}"),
        )
    })
}

/// The repeatable `?tag=` parameter of a manifest PUT.
pub fn tag_params(uri: &Uri) -> Result<Vec<Tag>, ApiError> {
    let pairs: Vec<(String, String)> = query(uri)?;
    pairs
        .into_iter()
        .filter(|(key, _)| key == "tag")
        .map(|(_, tag)| Tag::parse(&tag).map_err(|e| ServiceError::from(e).into()))
        .collect()
}

/// A request body as a byte stream, never buffered.
pub fn stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(std::io::Error::other))
}

/// What a chunk's headers say about it: `Content-Range: [bytes
/// ]<start>-<end>` and `Content-Length` (checked by the service).
pub fn chunk_claim(headers: &HeaderMap) -> Result<ChunkClaim, ApiError> {
    let length =
        headers::text(headers, &header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
    Ok(ChunkClaim {
        range: chunk_range(headers)?,
        length,
    })
}

/// The `Content-Range: [bytes ]<start>-<end>` of a chunk, if any.
fn chunk_range(headers: &HeaderMap) -> Result<Option<ChunkRange>, ApiError> {
    let Some(value) = headers::text(headers, &header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let spec = value
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    let range = spec.split_once('-').and_then(|(start, end)| {
        let start: u64 = start.trim().parse().ok()?;
        let end: u64 = end.split('/').next()?.trim().parse().ok()?;
        (start <= end).then_some(ChunkRange { start, end })
    });
    range.map(Some).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            format!("malformed Content-Range {value:?}"),
        )
    })
}

/// A single `Range: bytes=...` request; other forms are ignored and the
/// whole blob is served, as HTTP allows.
pub fn blob_range(headers: &HeaderMap) -> Option<BlobRange> {
    let spec = headers::text(headers, &header::RANGE)?
        .trim()
        .strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    if start.is_empty() {
        return end.parse().ok().map(BlobRange::Suffix);
    }
    let start = start.parse().ok()?;
    let end = if end.is_empty() {
        None
    } else {
        Some(end.parse().ok()?)
    };
    Some(BlobRange::From { start, end })
}

/// Reads a manifest body, refusing more than `limit` bytes.
pub async fn manifest_body(
    body: Body,
    headers: &HeaderMap,
    limit: u64,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || ApiError::from(ServiceError::ManifestTooLarge { limit });
    let declared =
        headers::text(headers, &header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        if is_length_limit(&err) {
            too_large()
        } else {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                format!("could not read the manifest body: {err}"),
            )
        }
    })
}

/// Whether a body error is the length limit (rather than, say, a client
/// that went away).
fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}
