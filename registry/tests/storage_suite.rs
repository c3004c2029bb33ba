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
#[path = "common/s3_server.rs"]
mod s3_server;

use std::sync::Arc;

use berth_registry::storage::{FsStore, S3Store};
use cases::{Store, TestResult};

async fn filesystem() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    (Arc::new(store), dir)
}

/// The S3 driver against an in-process s3s-fs server.
async fn in_process_s3() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let addr = s3_server::start(dir.path()).await;
    let store = S3Store::connect(&s3_server::config(addr)).await.unwrap();
    (Arc::new(store), dir)
}

/// The S3 driver against an s3s-fs server that answers every third request
/// with `503 SlowDown`: every case must still pass, retried by the driver.
async fn throttling_s3() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let addr = s3_server::start_flaky(dir.path(), 3).await;
    let mut config = s3_server::config(addr);
    config.max_attempts = 6;
    config.retry_initial_backoff = std::time::Duration::from_millis(5);
    (Arc::new(S3Store::connect(&config).await.unwrap()), dir)
}

storage_suite!(
    fs,
    filesystem(),
    create_new_race_has_one_winner,
    multipart_abort_is_idempotent
);
storage_suite!(s3, in_process_s3());
storage_suite!(s3_throttled, throttling_s3());
