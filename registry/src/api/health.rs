//! Liveness, readiness and metrics endpoints.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ErrorMessage;

/// The process is up and serving HTTP.
pub async fn livez() -> &'static str {
    "ok\n"
}

/// Storage answers: the replica can serve requests. Why it does not goes
/// to the log, not to whoever asks.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.registry.check_storage().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(err) => {
            let mut response =
                (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n").into_response();
            response
                .extensions_mut()
                .insert(ErrorMessage(err.to_string()));
            response
        }
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.registry.count_open_uploads().await {
        Ok(open) => state
            .metrics
            .uploads_open
            .set(i64::try_from(open).unwrap_or(i64::MAX)),
        Err(err) => tracing::warn!(error = %err, "cannot count open uploads"),
    }
    match state.metrics.render() {
        Ok(text) => ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}
