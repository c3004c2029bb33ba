//! Blob downloads redirected to presigned S3 URLs (`storage.redirect`), on
//! real MinIO: the registry answers 307 with a URL that MinIO honours, and a
//! real client (crane) pulls through the redirects with digests verified.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::net::SocketAddr;

use berth_e2e::clients::crane_scenario;
use berth_e2e::{Minio, Registry, push_blob, request, sha256};

fn redirecting_registry(minio: &Minio) -> Registry {
    minio.create_bucket("redirect");
    Registry::start_s3_with(
        minio,
        "redirect",
        "berth",
        &[
            ("BERTH_STORAGE__REDIRECT__ENABLED", "true"),
            ("BERTH_STORAGE__REDIRECT__EXPIRY", "5m"),
        ],
    )
}

/// `http://host:port/path?query` split into the address and the request target.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, target) = rest.split_at(rest.find('/').expect("a path"));
    (authority.parse().expect("host:port"), target.to_string())
}

#[test]
fn blob_gets_redirect_to_presigned_urls_that_s3_serves() {
    let minio = Minio::start();
    let registry = redirecting_registry(&minio);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let digest = push_blob(registry.addr, "app/redirect", &data);
    let path = format!("/v2/app/redirect/blobs/{digest}");

    let response = request(registry.addr, "GET", &path, &[], b"");
    assert_eq!(response.status, 307, "{response:?}");
    assert_eq!(
        response.header("Docker-Content-Digest"),
        Some(digest.as_str())
    );
    let location = response.header("Location").expect("Location").to_string();
    assert!(
        location.starts_with(&minio.endpoint()) && location.contains("X-Amz-Signature="),
        "a presigned URL on the S3 endpoint: {location}"
    );

    // S3 itself serves the bytes at that URL, without the registry.
    let (s3, target) = split_url(&location);
    let body = request(s3, "GET", &target, &[], b"");
    assert_eq!(body.status, 200, "{:?}", body.headers);
    assert_eq!(sha256(&body.body), digest, "S3 returned the blob's bytes");

    // The URL is bound to its signature: tampering is refused by S3.
    let tampered = target.replace("X-Amz-Signature=", "X-Amz-Signature=00");
    assert_eq!(request(s3, "GET", &tampered, &[], b"").status, 403);

    // HEAD is answered by the registry itself; other repositories see nothing.
    let head = request(registry.addr, "HEAD", &path, &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("300000"));
    let elsewhere = request(
        registry.addr,
        "GET",
        &format!("/v2/other/repo/blobs/{digest}"),
        &[],
        b"",
    );
    assert_eq!(
        elsewhere.status, 404,
        "no redirect leaks a blob to another repository"
    );
}

#[test]
fn crane_pulls_through_redirects() {
    let minio = Minio::start();
    let registry = redirecting_registry(&minio);
    crane_scenario(&registry.host(), "redirected");
    assert!(
        registry.metric(
            "berth_http_requests_total",
            &[("route", "blob"), ("method", "GET"), ("status", "307")]
        ) > 0.0,
        "crane's blob downloads were redirected"
    );
}
