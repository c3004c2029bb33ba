//! The storage suite (`registry/tests/storage/cases.rs`) against real S3
//! semantics: the S3 driver on MinIO, racing and idempotency cases
//! included; and the registry reaching S3 over TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../../registry/tests/storage/cases.rs"]
mod cases;

use std::sync::Arc;

use berth_e2e::{Minio, Registry};
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

/// The registry stores in an S3 endpoint over HTTPS whose certificate it
/// checks against the system's trust store, which `SSL_CERT_FILE` points
/// at a private CA (an in-cluster MinIO or Ceph with its own CA): a blob
/// pushed is stored and pulled back whole. Without that CA, the same push
/// fails as the storage being unavailable (503; the log names the
/// certificate): TLS is real.
#[test]
fn the_registry_reaches_s3_over_tls_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    berth_e2e::self_signed(certs.path(), "public.crt", "private.key");
    let mut minio = Minio::start();
    minio.create_bucket("tls");
    minio.restart_with_tls(certs.path());
    assert!(minio.endpoint().starts_with("https://"));

    let ca = certs.path().join("public.crt").display().to_string();
    let registry = Registry::start_s3_with(&minio, "tls", "registry", &[("SSL_CERT_FILE", &ca)]);
    let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let digest = berth_e2e::push_blob(registry.addr, "e2e/tls", &data);
    let pulled = berth_e2e::request(
        registry.addr,
        "GET",
        &format!("/v2/e2e/tls/blobs/{digest}"),
        &[],
        b"",
    );
    assert_eq!(pulled.status, 200);
    assert_eq!(berth_e2e::sha256(&pulled.body), digest);

    let untrusting =
        Registry::start_s3_with(&minio, "tls", "registry", &[("SSL_CERT_FILE", "/dev/null")]);
    let response = berth_e2e::request(
        untrusting.addr,
        "POST",
        "/v2/e2e/tls/blobs/uploads/",
        &[],
        b"",
    );
    assert_eq!(response.status, 503);
}
