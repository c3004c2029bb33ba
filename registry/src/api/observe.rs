//! The one middleware every request passes: the API version header,
//! metrics by route kind, and a log line for each 5xx (from the
//! [`ErrorMessage`] the error carried) and, at debug level, every request.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::error::ErrorMessage;
use super::headers::API_VERSION;
use super::{AppState, RouteKind};

/// Counts a request as in flight until it is answered or dropped.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn start(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::start(&state.metrics.in_flight);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));

    let route = response
        .extensions()
        .get::<RouteKind>()
        .map_or("other", |k| k.0);
    let status = response.status();
    let elapsed = started.elapsed();
    state
        .metrics
        .requests
        .with_label_values(&[route, method.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .durations
        .with_label_values(&[route, method.as_str()])
        .observe(elapsed.as_secs_f64());
    if status.is_server_error() {
        let message = response
            .extensions()
            .get::<ErrorMessage>()
            .map_or("", |m| m.0.as_str());
        tracing::error!(%method, %path, status = status.as_u16(), error = message, "request failed");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), micros = elapsed.as_micros() as u64, "request");
    }
    response
}
