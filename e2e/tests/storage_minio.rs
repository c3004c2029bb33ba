//! The storage suite (`registry/tests/storage/cases.rs`) against real S3
//! semantics: the S3 driver on MinIO, racing and idempotency cases
//! included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../../registry/tests/storage/cases.rs"]
mod cases;

use std::sync::Arc;

use berth_e2e::Minio;
use berth_registry::storage::S3Store;
use cases::{Store, TestResult};

/// A fresh MinIO and bucket per case (nextest runs each test in its own
/// process, so nothing could be shared anyway).
async fn minio() -> (Store, Minio) {
    let minio = tokio::task::spawn_blocking(|| {
        let minio = Minio::start();
        minio.create_bucket("suite");
        minio
    })
    .await
    .unwrap();
    let store = S3Store::connect(&minio.s3_config("suite", "registry"))
        .await
        .unwrap();
    (Arc::new(store), minio)
}

storage_suite!(
    minio,
    minio(),
    create_new_race_has_one_winner,
    multipart_abort_is_idempotent
);
