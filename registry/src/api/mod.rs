//! The HTTP API: `app(state)` builds the router. Routes are thin: they
//! validate input (`extract`), call one service method and shape the
//! response; rules live in `crate::service`.
//!
//! `/v2/...` paths are parsed once by [`route::Route`] (repository names
//! span several segments), then dispatched by method.

mod auth;
mod blobs;
mod error;
mod extract;
mod headers;
mod health;
mod listing;
mod manifests;
mod observe;
mod referrers;
mod route;
mod uploads;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

pub use error::ApiError;
pub use route::{Route, RouteKind};

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::metrics::Metrics;
use crate::service::Registry;

/// What every handler can reach: a handle to one shared [`Shared`].
///
/// axum clones the state for every request (once per middleware and
/// handler); one reference count to bump keeps that off the profile, where
/// cloning each field's handles (a dozen contended atomics) showed up at
/// about 4% of a manifest GET.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The state behind [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// Credentials checked on `/v2/`; anonymous access when `None`.
    pub auth: Option<Authenticator>,
}

impl AppState {
    pub fn new(registry: Registry, metrics: Arc<Metrics>, auth: Option<Authenticator>) -> Self {
        Self(Arc::new(Shared {
            registry,
            metrics,
            auth,
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The whole HTTP application. Health and metrics stay open (probes and
/// scrapers carry no credentials); the API is behind authentication.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ));
    Router::new()
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(api)
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(route) = Route::parse(parts.uri.path()) else {
        return ApiError::not_found().into_response();
    };
    let kind = route.kind();
    let result = handle(
        &state,
        route,
        &parts.method,
        &parts.uri,
        &parts.headers,
        body,
    )
    .await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(kind);
    response
}

async fn handle(
    state: &AppState,
    route: Route,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use Method as M;
    match (route, method) {
        (Route::Base, &M::GET | &M::HEAD) => {
            Ok((StatusCode::OK, axum::Json(serde_json::json!({}))).into_response())
        }
        (Route::Catalog, &M::GET) => listing::catalog(state, uri).await,
        (Route::Tags { name }, &M::GET) => listing::tags(state, &name, uri).await,
        (Route::Manifest { name, reference }, &M::GET) => {
            manifests::get(state, &name, &reference).await
        }
        (Route::Manifest { name, reference }, &M::HEAD) => {
            manifests::head(state, &name, &reference).await
        }
        (Route::Manifest { name, reference }, &M::PUT) => {
            manifests::put(state, &name, &reference, uri, headers, body).await
        }
        (Route::Manifest { name, reference }, &M::DELETE) => {
            manifests::delete(state, &name, &reference).await
        }
        (Route::Blob { name, digest }, &M::GET) => blobs::get(state, &name, &digest, headers).await,
        (Route::Blob { name, digest }, &M::HEAD) => blobs::head(state, &name, &digest).await,
        (Route::Blob { name, digest }, &M::DELETE) => blobs::delete(state, &name, &digest).await,
        (Route::Uploads { name }, &M::POST) => uploads::start(state, &name, uri, body).await,
        (Route::Upload { name, id }, &M::GET) => uploads::status(state, &name, &id).await,
        (Route::Upload { name, id }, &M::PATCH) => {
            uploads::patch(state, &name, &id, headers, body).await
        }
        (Route::Upload { name, id }, &M::PUT) => {
            uploads::complete(state, &name, &id, uri, headers, body).await
        }
        (Route::Upload { name, id }, &M::DELETE) => uploads::cancel(state, &name, &id).await,
        (Route::Referrers { name, digest }, &M::GET) => {
            referrers::list(state, &name, &digest, uri).await
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}
