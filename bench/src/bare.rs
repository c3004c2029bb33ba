//! The request-rate limit: a bare axum handler answering every request with
//! a fixed 512-byte manifest and the headers a registry sends with it.

use std::net::SocketAddr;

use anyhow::Result;
use axum::Router;
use axum::response::IntoResponse;
use bytes::Bytes;

use crate::ops::{Image, OCI_MANIFEST};

pub async fn serve(listen: SocketAddr) -> Result<()> {
    let image = Image::new(0);
    let body = image.manifest.clone();
    let digest = image.digest.clone();
    let app = Router::new().fallback(move || {
        let body: Bytes = body.clone();
        let digest = digest.clone();
        async move {
            (
                [
                    ("content-type", OCI_MANIFEST.to_string()),
                    ("docker-content-digest", digest),
                ],
                body,
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
