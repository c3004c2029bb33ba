//! `/v2/<name>/referrers/<digest>`: an image index of the manifests whose
//! subject is `<digest>`, optionally filtered by `artifactType`.

use axum::Json;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::oci::media;

use super::error::ApiError;
use super::{AppState, extract, headers};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrersQuery {
    artifact_type: Option<String>,
}

pub async fn list(
    state: &AppState,
    name: &str,
    digest: &str,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let (repo, subject) = (extract::repo(name)?, extract::digest(digest)?);
    let query: ReferrersQuery = extract::query(uri)?;
    let filter = query.artifact_type.as_deref().filter(|t| !t.is_empty());
    let manifests = state.registry.referrers(&repo, &subject, filter).await?;
    let mut response_headers = headers::map([(CONTENT_TYPE, media::OCI_INDEX.to_string())]);
    if filter.is_some() {
        response_headers.extend(headers::map([(
            headers::OCI_FILTERS_APPLIED,
            "artifactType".to_string(),
        )]));
    }
    let index =
        json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
    Ok((StatusCode::OK, response_headers, Json(index)).into_response())
}
