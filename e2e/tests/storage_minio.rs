//! The storage suite (`registry/tests/storage/cases.rs`) against real S3
//! semantics: the S3 driver on MinIO, racing and idempotency cases
//! included; and the registry reaching S3 over TLS and through a proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../../registry/tests/storage/cases.rs"]
mod cases;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    push_and_pull(&registry, "e2e/tls");

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

/// With `HTTP_PROXY` in its environment the registry reaches S3 through
/// that proxy (as the AWS SDK does: a cluster whose egress goes through
/// one), and everything still works; without it, directly.
#[test]
fn the_registry_reaches_s3_through_a_proxy_from_the_environment() {
    let minio = Minio::start();
    minio.create_bucket("proxied");
    let (proxy, carried) = forward_proxy();
    let proxy = format!("http://{proxy}");
    let registry = Registry::start_s3_with(
        &minio,
        "proxied",
        "registry",
        &[("HTTP_PROXY", &proxy), ("NO_PROXY", ""), ("no_proxy", "")],
    );
    push_and_pull(&registry, "e2e/proxied");
    assert!(
        carried.load(Ordering::SeqCst) > 0,
        "nothing went through the proxy"
    );
}

/// Pushes a 3 MiB blob to `repo` and pulls it back whole.
fn push_and_pull(registry: &Registry, repo: &str) {
    let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let digest = berth_e2e::push_blob(registry.addr, repo, &data);
    let path = format!("/v2/{repo}/blobs/{digest}");
    let pulled = berth_e2e::request(registry.addr, "GET", &path, &[], b"");
    assert_eq!(pulled.status, 200);
    assert_eq!(berth_e2e::sha256(&pulled.body), digest);
}

/// A forward HTTP proxy on loopback for plain-HTTP origins (requests in
/// absolute form, as clients send them to a proxy), counting the
/// connections it carried.
fn forward_proxy() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let carried = Arc::new(AtomicUsize::new(0));
    let count = carried.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || relay(client));
        }
    });
    (addr, carried)
}

/// Connects a proxy client to the origin its first request line names
/// (`GET http://host:port/path HTTP/1.1`) and copies bytes both ways.
fn relay(mut client: TcpStream) {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        line.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&line).to_string();
    let origin = text
        .split_whitespace()
        .nth(1)
        .and_then(|uri| uri.strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("not a proxy request: {text}"));
    let mut upstream = TcpStream::connect(origin).unwrap();
    upstream.write_all(&line).unwrap();
    let (mut from_client, mut to_client) = (client.try_clone().unwrap(), client);
    let mut from_upstream = upstream.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut from_upstream, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Write);
}
