//! `/v2/<name>/blobs/<digest>`: HEAD, GET (with ranges), DELETE.

use axum::body::Body;
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LOCATION,
};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AppState, extract, headers};

fn blob_headers(digest: &str, length: u64) -> HeaderMap {
    headers::map([
        (CONTENT_TYPE, "application/octet-stream".to_string()),
        (CONTENT_LENGTH, length.to_string()),
        (headers::CONTENT_DIGEST, digest.to_string()),
        (ETAG, format!("\"{digest}\"")),
        (ACCEPT_RANGES, "bytes".to_string()),
    ])
}

pub async fn head(state: &AppState, name: &str, digest: &str) -> Result<Response, ApiError> {
    let (repo, digest) = (extract::repo(name)?, extract::digest(digest)?);
    let size = state.registry.stat_blob(&repo, &digest).await?;
    Ok((StatusCode::OK, blob_headers(&digest.to_string(), size)).into_response())
}

pub async fn get(
    state: &AppState,
    name: &str,
    digest: &str,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let (repo, digest) = (extract::repo(name)?, extract::digest(digest)?);
    if let Some(url) = state.registry.blob_redirect(&repo, &digest).await? {
        let headers = headers::map([
            (LOCATION, url),
            (headers::CONTENT_DIGEST, digest.to_string()),
        ]);
        return Ok((StatusCode::TEMPORARY_REDIRECT, headers).into_response());
    }
    let read = state
        .registry
        .read_blob(&repo, &digest, extract::blob_range(request))
        .await?;
    let body = Body::from_stream(read.object.body);
    Ok(match read.range {
        None => (
            StatusCode::OK,
            blob_headers(&digest.to_string(), read.size),
            body,
        )
            .into_response(),
        Some(range) => {
            let mut headers = blob_headers(&digest.to_string(), range.len());
            headers.extend(headers::map([(
                CONTENT_RANGE,
                format!("bytes {}-{}/{}", range.start, range.end, read.size),
            )]));
            (StatusCode::PARTIAL_CONTENT, headers, body).into_response()
        }
    })
}

pub async fn delete(state: &AppState, name: &str, digest: &str) -> Result<Response, ApiError> {
    let (repo, digest) = (extract::repo(name)?, extract::digest(digest)?);
    state.registry.delete_blob(&repo, &digest).await?;
    Ok((
        StatusCode::ACCEPTED,
        headers::map([(CONTENT_LENGTH, "0".to_string())]),
    )
        .into_response())
}
