//! `/v2/<name>/manifests/<reference>`: PUT, GET, HEAD, DELETE.

use axum::body::Body;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::oci::Tag;
use crate::service::ManifestInfo;

use super::error::ApiError;
use super::{AppState, extract, headers};

fn manifest_headers(info: &ManifestInfo) -> HeaderMap {
    headers::map([
        (CONTENT_TYPE, info.media_type.clone()),
        (CONTENT_LENGTH, info.size.to_string()),
        (headers::CONTENT_DIGEST, info.digest.to_string()),
        (ETAG, format!("\"{}\"", info.digest)),
    ])
}

pub async fn head(state: &AppState, name: &str, reference: &str) -> Result<Response, ApiError> {
    let (repo, reference) = (extract::repo(name)?, extract::reference(reference)?);
    let info = state.registry.manifest_info(&repo, &reference).await?;
    Ok((StatusCode::OK, manifest_headers(&info)).into_response())
}

pub async fn get(state: &AppState, name: &str, reference: &str) -> Result<Response, ApiError> {
    let (repo, reference) = (extract::repo(name)?, extract::reference(reference)?);
    let manifest = state.registry.get_manifest(&repo, &reference).await?;
    Ok((
        StatusCode::OK,
        manifest_headers(&manifest.info),
        manifest.body,
    )
        .into_response())
}

pub async fn put(
    state: &AppState,
    name: &str,
    reference: &str,
    uri: &Uri,
    request: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (repo, reference) = (extract::repo(name)?, extract::reference(reference)?);
    let tags = extract::tag_params(uri)?;
    let limit = state.registry.limits().manifest_max_bytes;
    let body = extract::manifest_body(body, request, limit).await?;
    let content_type = headers::text(request, &CONTENT_TYPE);
    let pushed = state
        .registry
        .put_manifest(&repo, &reference, &tags, content_type, body)
        .await?;
    let mut response = headers::map([
        (LOCATION, format!("/v2/{name}/manifests/{}", pushed.digest)),
        (headers::CONTENT_DIGEST, pushed.digest.to_string()),
        (CONTENT_LENGTH, "0".to_string()),
    ]);
    if let Some(subject) = pushed.subject {
        response.extend(headers::map([(headers::OCI_SUBJECT, subject.to_string())]));
    }
    if !tags.is_empty() {
        let names: Vec<&str> = pushed.tags.iter().map(Tag::as_str).collect();
        response.extend(headers::map([(headers::OCI_TAG, names.join(", "))]));
    }
    Ok((StatusCode::CREATED, response).into_response())
}

pub async fn delete(state: &AppState, name: &str, reference: &str) -> Result<Response, ApiError> {
    let (repo, reference) = (extract::repo(name)?, extract::reference(reference)?);
    state.registry.delete_manifest(&repo, &reference).await?;
    Ok((
        StatusCode::ACCEPTED,
        headers::map([(CONTENT_LENGTH, "0".to_string())]),
    )
        .into_response())
}
