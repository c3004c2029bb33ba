//! Regression tests of the S3 driver alone, against an in-process S3 server
//! (s3s-fs): behaviour the shared storage suite cannot express because it
//! needs to look into the bucket or to break the S3 side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/s3_server.rs"]
mod s3_server;

use std::time::Duration;

use berth_registry::storage::{ByteStream, Key, ObjectStore, PutMode, S3Store};
use bytes::Bytes;
use futures::StreamExt;

/// Polls `condition` every 20 ms for up to 10 s.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Regression: a put whose future was dropped mid-body (a client gone over
/// HTTP/2, a server shutting down) left its multipart upload open in the
/// bucket, because only an error return aborted it.
#[tokio::test]
async fn a_dropped_put_leaves_no_multipart_upload_open() {
    let dir = tempfile::tempdir().unwrap();
    let addr = s3_server::start(dir.path()).await;
    let store = S3Store::connect(&s3_server::config(addr)).await.unwrap();
    // More than one part, then a body that never ends: the put sits in its
    // multipart upload, waiting for bytes.
    let first = Bytes::from(vec![7u8; 5 * 1024 * 1024 + 1]);
    let body: ByteStream =
        Box::pin(futures::stream::once(async move { Ok(first) }).chain(futures::stream::pending()));
    let put = tokio::spawn(async move {
        let key = Key::new("blobs/dropped").unwrap();
        store.put(&key, body, PutMode::Overwrite).await
    });
    assert!(
        eventually(|| !s3_server::open_multipart_uploads(dir.path()).is_empty()).await,
        "the put never started its multipart upload"
    );

    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());

    assert!(
        eventually(|| s3_server::open_multipart_uploads(dir.path()).is_empty()).await,
        "still open: {:?}",
        s3_server::open_multipart_uploads(dir.path())
    );
}

/// Regression: the parts of a large put were uploaded only while the driver
/// waited for a free upload slot, never while it read the next part from
/// the client, so reading and uploading took turns. Here the body holds two
/// whole parts and then stalls: both must reach the bucket meanwhile.
#[tokio::test]
async fn parts_upload_while_the_next_part_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let addr = s3_server::start(dir.path()).await;
    let store = S3Store::connect(&s3_server::config(addr)).await.unwrap();
    let two_parts = Bytes::from(vec![7u8; 2 * 5 * 1024 * 1024 + 1]);
    let body: ByteStream = Box::pin(
        futures::stream::once(async move { Ok(two_parts) }).chain(futures::stream::pending()),
    );
    let put = tokio::spawn(async move {
        let key = Key::new("blobs/stalled").unwrap();
        store.put(&key, body, PutMode::Overwrite).await
    });
    // s3s-fs keeps each uploaded part as `.upload_id-<id>.part-<n>`.
    let uploaded_parts = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(".upload_id-") && name.contains(".part-"))
            .count()
    };
    assert!(
        eventually(|| uploaded_parts() >= 2).await,
        "parts uploaded while the body stalled: {}",
        uploaded_parts()
    );
    put.abort();
}

/// Regression: S3's 404 `NoSuchBucket` read as "not found" like a missing
/// key, so a registry whose bucket is gone answered as if it held nothing.
/// (s3s-fs checks the bucket on listings; it answers GETs of a missing
/// bucket with `NoSuchKey`, unlike S3, so the listing is what shows it.)
#[tokio::test]
async fn a_missing_bucket_is_a_storage_failure_not_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let addr = s3_server::start(dir.path()).await;
    let mut config = s3_server::config(addr);
    config.bucket = "no-such-bucket".into();
    let store = S3Store::connect(&config).await.unwrap();

    let err = store.list("repositories/", None, 10).await.unwrap_err();
    assert!(!err.is_not_found(), "{err:?}");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
}

/// Regression: a source `compose` could not read in its streaming
/// fallback (chunks too small to copy as parts) failed the compose as a
/// broken body, which the API answers with 500; a throttled read is worth
/// retrying (503), and must say so.
#[tokio::test]
async fn compose_fallback_keeps_the_kind_of_a_failed_read() {
    let dir = tempfile::tempdir().unwrap();
    // Requests: two puts, two heads, then the fallback's first GET, which
    // is the fifth: the one the server throttles.
    let addr = s3_server::start_flaky(dir.path(), 5).await;
    let store = S3Store::connect(&s3_server::config(addr)).await.unwrap();
    let (a, b) = (Key::new("chunks/a").unwrap(), Key::new("chunks/b").unwrap());
    store
        .put_bytes(&a, Bytes::from_static(b"first"), PutMode::Overwrite)
        .await
        .unwrap();
    store
        .put_bytes(&b, Bytes::from_static(b"second"), PutMode::Overwrite)
        .await
        .unwrap();

    let err = store
        .compose(&[a, b], &Key::new("blobs/ab").unwrap())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}
