//! `/v2/<name>/blobs/uploads/[<id>]`: start (with mount or monolithic
//! digest), PATCH chunks, PUT to complete, GET status, DELETE to cancel.

use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::{AppState, extract, headers};

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    digest: Option<String>,
    mount: Option<String>,
    from: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CompleteQuery {
    digest: Option<String>,
}

pub async fn start(
    state: &AppState,
    name: &str,
    uri: &Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = extract::repo(name)?;
    let query: StartQuery = extract::query(uri)?;
    if let Some(mount) = &query.mount {
        let digest = extract::digest(mount)?;
        // An invalid `from` is treated as absent source: fall back to upload.
        let from = query
            .from
            .as_deref()
            .map(extract::repo)
            .transpose()
            .ok()
            .flatten();
        if (query.from.is_none() || from.is_some())
            && state
                .registry
                .mount_blob(&repo, &digest, from.as_ref())
                .await?
        {
            return Ok((StatusCode::CREATED, headers::blob_created(name, &digest)).into_response());
        }
    } else if let Some(digest) = &query.digest {
        let digest = extract::digest(digest)?;
        state
            .registry
            .put_blob(&repo, &digest, extract::stream(body))
            .await?;
        return Ok((StatusCode::CREATED, headers::blob_created(name, &digest)).into_response());
    }
    let upload = state.registry.start_upload(&repo).await?;
    Ok((
        StatusCode::ACCEPTED,
        headers::upload(name, &upload.id, upload.offset),
    )
        .into_response())
}

pub async fn status(state: &AppState, name: &str, id: &str) -> Result<Response, ApiError> {
    let repo = extract::repo(name)?;
    let upload = state.registry.upload_status(&repo, id).await?;
    Ok((
        StatusCode::NO_CONTENT,
        headers::upload(name, id, upload.offset),
    )
        .into_response())
}

pub async fn patch(
    state: &AppState,
    name: &str,
    id: &str,
    request: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = extract::repo(name)?;
    let claim = extract::chunk_claim(request)?;
    let upload = state
        .registry
        .append_chunk(&repo, id, claim, extract::stream(body))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        headers::upload(name, id, upload.offset),
    )
        .into_response())
}

pub async fn complete(
    state: &AppState,
    name: &str,
    id: &str,
    uri: &Uri,
    request: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = extract::repo(name)?;
    let query: CompleteQuery = extract::query(uri)?;
    let digest = query
        .digest
        .as_deref()
        .ok_or_else(|| ApiError::digest_invalid("the digest query parameter is required"))?;
    let digest = extract::digest(digest)?;
    let claim = extract::chunk_claim(request)?;
    let last = (!body.is_end_stream()).then(|| extract::stream(body));
    state
        .registry
        .complete_upload(&repo, id, &digest, claim, last)
        .await?;
    Ok((StatusCode::CREATED, headers::blob_created(name, &digest)).into_response())
}

pub async fn cancel(state: &AppState, name: &str, id: &str) -> Result<Response, ApiError> {
    let repo = extract::repo(name)?;
    state.registry.cancel_upload(&repo, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
