//! `/v2/<name>/tags/list` and `/v2/_catalog`, paginated with `n`, `last`
//! and a `Link` header to the next page.

use axum::Json;
use axum::http::header::LINK;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::json;

use crate::service::Page;

use super::error::ApiError;
use super::{AppState, extract, headers};

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    n: Option<String>,
    last: Option<String>,
}

impl PageQuery {
    fn n(&self) -> Result<Option<usize>, ApiError> {
        self.n
            .as_deref()
            .map(|n| {
                n.parse::<usize>()
                    .map_err(|_| ApiError::pagination_invalid(format!("n={n:?} is not a count")))
            })
            .transpose()
    }
}

/// `Link: <path?n=..&last=..>; rel="next"` when more entries follow.
fn next_link(path: &str, page: &Page, n: Option<usize>) -> HeaderMap {
    match (page.more, page.items.last()) {
        (true, Some(last)) => {
            let n = n.unwrap_or(page.items.len());
            let last = utf8_percent_encode(last, NON_ALPHANUMERIC);
            headers::map([(LINK, format!("<{path}?n={n}&last={last}>; rel=\"next\""))])
        }
        _ => HeaderMap::new(),
    }
}

pub async fn tags(state: &AppState, name: &str, uri: &Uri) -> Result<Response, ApiError> {
    let repo = extract::repo(name)?;
    let query: PageQuery = extract::query(uri)?;
    let n = query.n()?;
    let page = state
        .registry
        .list_tags(&repo, query.last.as_deref(), n)
        .await?;
    let link = next_link(&format!("/v2/{name}/tags/list"), &page, n);
    Ok((link, Json(json!({ "name": name, "tags": page.items }))).into_response())
}

pub async fn catalog(state: &AppState, uri: &Uri) -> Result<Response, ApiError> {
    let query: PageQuery = extract::query(uri)?;
    let n = query.n()?;
    let page = state.registry.catalog(query.last.as_deref(), n).await?;
    let link = next_link("/v2/_catalog", &page, n);
    Ok((link, Json(json!({ "repositories": page.items }))).into_response())
}
