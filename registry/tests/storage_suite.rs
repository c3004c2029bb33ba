//! The storage suite (`storage/cases.rs`) for the filesystem driver and for
//! the S3 driver against an in-process S3 server (s3s-fs). The racing case
//! runs only where conditional puts are atomic: s3s-fs checks a condition
//! and then writes, so two racers can both pass; and s3s-fs answers
//! AccessDenied for an unknown multipart upload where S3 answers
//! NoSuchUpload. Real S3 semantics are covered by `e2e/tests/storage_minio.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "storage/cases.rs"]
mod cases;

use std::sync::Arc;

use berth_registry::config::S3Config;
use berth_registry::storage::{FsStore, S3Store};
use cases::{Store, TestResult};

async fn filesystem() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    (Arc::new(store), dir)
}

/// An s3s-fs server on a loopback port, in this test's runtime, and an
/// S3 driver pointed at it.
async fn in_process_s3() -> (Store, tempfile::TempDir) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bucket")).unwrap();
    let mut builder =
        s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(dir.path()).unwrap());
    builder.set_auth(s3s::auth::SimpleAuth::from_single("berth", "berth-secret"));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(connection);
        }
    });
    let config: S3Config = serde_json::from_value(serde_json::json!({
        "bucket": "bucket",
        "prefix": "registry",
        "endpoint": format!("http://{addr}"),
        "forcePathStyle": true,
        "accessKeyId": "berth",
        "secretAccessKey": "berth-secret",
        "partSize": 5 * 1024 * 1024,
        "maxAttempts": 1,
    }))
    .unwrap();
    (Arc::new(S3Store::connect(&config).await.unwrap()), dir)
}

storage_suite!(
    fs,
    filesystem(),
    create_new_race_has_one_winner,
    multipart_abort_is_idempotent
);
storage_suite!(s3, in_process_s3());
