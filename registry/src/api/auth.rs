//! The authentication layer in front of every `/v2/` route: a request
//! without valid credentials gets the spec's `UNAUTHORIZED` error and a
//! `WWW-Authenticate` challenge, so clients (docker, crane, helm) prompt for
//! or send their stored login.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

pub async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(auth) = &state.auth else {
        return next.run(request).await;
    };
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.authenticate(header).await {
        Ok(Some(identity)) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(err) => ApiError::from(err).into_response(),
        Ok(None) => {
            let message = if header.is_some() {
                "invalid credentials"
            } else {
                "authentication required"
            };
            ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
                .with_header(WWW_AUTHENTICATE, format!("Basic realm=\"{}\"", auth.realm))
                .into_response()
        }
    }
}
