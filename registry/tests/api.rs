//! HTTP-level tests of the registry API: the whole router driven in-process
//! with `oneshot`, once over the filesystem driver and once over the S3 driver
//! (against an in-process S3 server): `api_suite!` at the end instantiates
//! every test for both. Each test
//! is named after the behaviour it pins; DESIGN.md's invariants are cited
//! where a test exists for one of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use common::faulty::{Call, Fault};
use common::{
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST, DOCKER_MANIFEST, Driver, ManifestBuilder, OCI_CONFIG,
    OCI_EMPTY, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Reply, TestRegistry, descriptor, sha256, sha512,
};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

const EMPTY_SHA256: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// `location` with `?digest=` (or `&digest=`) appended.
fn with_digest(location: &str, digest: &str) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={digest}")
}

async fn patch(registry: &TestRegistry, location: &str, range: Option<&str>, data: &[u8]) -> Reply {
    let mut headers = vec![("content-type", "application/octet-stream")];
    if let Some(range) = range {
        headers.push(("content-range", range));
    }
    registry
        .send(
            Method::PATCH,
            location,
            &headers,
            Bytes::copy_from_slice(data),
        )
        .await
}

async fn put_empty(registry: &TestRegistry, path: &str) -> Reply {
    registry.send(Method::PUT, path, &[], Bytes::new()).await
}

/// Asserts that `repo` serves `data` as blob `digest`.
async fn assert_blob(registry: &TestRegistry, repo: &str, digest: &str, data: &[u8]) {
    let reply = registry.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
    assert_eq!(reply.body.as_ref(), data);
    assert_eq!(reply.digest(), digest);
    assert_eq!(
        reply.header("content-length"),
        Some(data.len().to_string().as_str())
    );
}

/// The URL inside a `Link: <url>; rel="next"` header.
fn next_link(reply: &Reply) -> Option<String> {
    let link = reply.header("link")?;
    assert!(link.ends_with(r#">; rel="next""#), "{link}");
    let url = link.strip_prefix('<')?.split_once('>')?.0;
    Some(url.to_string())
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Base endpoint

async fn base_endpoint_answers_empty_json_with_api_version(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    for path in ["/v2/", "/v2"] {
        let reply = registry.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply}");
        assert_eq!(reply.json(), json!({}));
        assert_eq!(
            reply.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }
    let head = registry.head("/v2/").await;
    assert_eq!(head.status, StatusCode::OK);
}

async fn every_response_carries_the_api_version_header(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let reply = registry.get("/v2/nothing/manifests/latest").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
}

// ---------------------------------------------------------------------------
// Blob push and pull

async fn monolithic_post_with_digest_stores_the_blob(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"monolithic blob";
    let digest = sha256(data);
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/library/app/blobs/uploads/?digest={digest}"),
            &[("content-type", "application/octet-stream")],
            &data[..],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(
        reply.location(),
        format!("/v2/library/app/blobs/{digest}").as_str()
    );
    assert_eq!(reply.digest(), digest);
    assert_blob(&registry, "library/app", &digest, data).await;
}

async fn post_then_put_with_body_stores_the_blob(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"sent with the closing PUT";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    assert!(location.starts_with("/v2/app/blobs/uploads/"), "{location}");
    let reply = registry
        .send(
            Method::PUT,
            &with_digest(&location, &digest),
            &[("content-type", "application/octet-stream")],
            &data[..],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply.location(), format!("/v2/app/blobs/{digest}").as_str());
    assert_eq!(reply.digest(), digest);
    assert_blob(&registry, "app", &digest, data).await;
}

async fn head_blob_reports_length_and_digest_without_a_body(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"0123456789abcdef";
    let digest = registry.push_blob("app", data).await;
    let reply = registry.head(&format!("/v2/app/blobs/{digest}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
    assert_eq!(reply.header("content-length"), Some("16"));
    assert_eq!(reply.digest(), digest);
    assert!(reply.body.is_empty());
}

async fn get_blob_advertises_byte_ranges(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let digest = registry.push_blob("app", b"whole").await;
    let reply = registry.get(&format!("/v2/app/blobs/{digest}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
}

async fn sha512_digests_work_for_monolithic_and_chunked_pushes(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"hashed with sha512";
    let digest = sha512(data);
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/app/blobs/uploads/?digest={digest}"),
            &[],
            &data[..],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply.digest(), digest);
    assert_blob(&registry, "app", &digest, data).await;
    let head = registry.head(&format!("/v2/app/blobs/{digest}")).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.digest(), digest);

    // Chunked, completed with a sha512 digest (the saved hash state is sha256).
    let data = b"first chunk, then the second";
    let digest = sha512(data);
    let location = registry.start_upload("app").await;
    let reply = patch(&registry, &location, Some("0-11"), &data[..12]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let reply = patch(&registry, &location, Some("12-27"), &data[12..]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;
}

/// CPU time the calling thread has had (`/proc/thread-self/schedstat`).
fn thread_cpu_time() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let nanos = stat.split_whitespace().next().and_then(|n| n.parse().ok());
    std::time::Duration::from_nanos(nanos.expect("nanoseconds on the CPU"))
}

async fn sha512_completion_hashes_off_the_runtime_thread(driver: Driver) {
    // A chunked upload completed with a sha512 digest is hashed again (its
    // saved state is sha256). That was done on the runtime thread, which
    // every other request on it then waited for. The test runs on a
    // current-thread runtime, so the completion's work there is this
    // thread's CPU time, compared with what hashing the blob here costs
    // (a ratio on one thread, not a timing).
    let registry = TestRegistry::new(driver).await;
    let data: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let location = registry.start_upload("app").await;
    let range = format!("0-{}", data.len() - 1);
    let reply = send_framed(&registry, Method::PATCH, &location, Some(&range), &data).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");

    let before = thread_cpu_time();
    let digest = sha512(&data);
    let hashing = thread_cpu_time() - before;
    let before = thread_cpu_time();
    let reply = put_empty(&registry, &with_digest(reply.location(), &digest)).await;
    let completing = thread_cpu_time() - before;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert!(
        completing < hashing / 2,
        "the completion took {completing:?} of the runtime thread; hashing takes {hashing:?}"
    );
    assert_blob(&registry, "app", &digest, &data).await;
}

async fn empty_blob_is_pushed_by_post_then_put_without_body(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let location = registry.start_upload("app").await;
    let reply = put_empty(&registry, &with_digest(&location, EMPTY_SHA256)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", EMPTY_SHA256, b"").await;
}

async fn blob_is_invisible_in_a_repository_that_does_not_link_it(driver: Driver) {
    // Invariant 1: visible in R only if R links it.
    let registry = TestRegistry::new(driver).await;
    let digest = registry.push_blob("owner", b"private bytes").await;
    for method in [Method::GET, Method::HEAD] {
        let reply = registry
            .send(
                method.clone(),
                &format!("/v2/stranger/blobs/{digest}"),
                &[],
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {reply}");
    }
    registry
        .get(&format!("/v2/stranger/blobs/{digest}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

async fn repushing_a_stored_blob_with_other_bytes_is_digest_invalid(driver: Driver) {
    // Invariant 2 on the dedupe path: the blob exists, but the client's bytes
    // must still hash to the digest it claims before R gets a link.
    let registry = TestRegistry::new(driver).await;
    let data = b"the real content";
    let digest = registry.push_blob("first", data).await;
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/second/blobs/uploads/?digest={digest}"),
            &[],
            &b"forged content"[..],
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    registry
        .get(&format!("/v2/second/blobs/{digest}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    assert_blob(&registry, "first", &digest, data).await;
}

/// `data` as a streamed request body in frames of 64 KiB, as hyper hands a
/// large body to the registry.
fn framed_body(data: &[u8]) -> Body {
    let frames: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures::stream::iter(frames))
}

async fn send_framed(
    registry: &TestRegistry,
    method: Method,
    path: &str,
    range: Option<&str>,
    data: &[u8],
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/octet-stream")
        .header("content-length", data.len());
    if let Some(range) = range {
        request = request.header("content-range", range);
    }
    registry
        .request(request.body(framed_body(data)).unwrap())
        .await
}

async fn large_blobs_are_verified_whole_on_every_push_path(driver: Driver) {
    // Bodies past a few MiB are hashed on a thread of their own while they
    // are written: the whole body must still be checked before anything is
    // stored under its digest (invariant 2), on each path.
    let registry = TestRegistry::new(driver).await;
    let data: Vec<u8> = (0..9 * 1024 * 1024 + 4321u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = sha256(&data);
    let mut forged = data.clone();
    if let Some(last) = forged.last_mut() {
        *last ^= 1;
    }

    // A monolithic push of `forged` under `digest` to `repo` is refused,
    // and the blob is not visible there.
    let refused = |repo: &'static str| {
        let (registry, forged, digest) = (&registry, &forged, &digest);
        async move {
            let path = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
            send_framed(registry, Method::POST, &path, None, forged)
                .await
                .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
            registry
                .get(&format!("/v2/{repo}/blobs/{digest}"))
                .await
                .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
        }
    };

    // Monolithic, wrong bytes for the digest: nothing stored.
    refused("app").await;
    assert_eq!(registry.files_under("blobs").await, Vec::<String>::new());

    // Monolithic, right bytes.
    let path = format!("/v2/app/blobs/uploads/?digest={digest}");
    let reply = send_framed(&registry, Method::POST, &path, None, &data).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, &data).await;

    // The stored blob pushed again to another repository with a changed
    // last byte (the dedupe path): refused, and not linked there.
    refused("other").await;

    // Chunked, two large PATCHes: the hash state saved after the first
    // (hashed partly on the thread) carries on into the second.
    let split = 5 * 1024 * 1024 + 17;
    let location = registry.start_upload("chunked").await;
    let first = format!("0-{}", split - 1);
    let reply = send_framed(
        &registry,
        Method::PATCH,
        &location,
        Some(&first),
        &data[..split],
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let location = reply.header("location").unwrap().to_string();
    let second = format!("{split}-{}", data.len() - 1);
    let reply = send_framed(
        &registry,
        Method::PATCH,
        &location,
        Some(&second),
        &data[split..],
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let location = reply.header("location").unwrap().to_string();
    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "chunked", &digest, &data).await;
}

// ---------------------------------------------------------------------------
// Chunked and streamed uploads

async fn chunked_push_with_content_range_completes(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"hello chunked world";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;

    let reply = patch(&registry, &location, Some("0-5"), &data[..6]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply.header("range"), Some("0-5"));
    assert_eq!(reply.location(), location);
    let reply = patch(&registry, &location, Some("6-13"), &data[6..14]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply.header("range"), Some("0-13"));
    let reply = patch(&registry, &location, Some("14-18"), &data[14..]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply.header("range"), Some("0-18"));

    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply.location(), format!("/v2/app/blobs/{digest}").as_str());
    assert_eq!(reply.digest(), digest);
    assert_blob(&registry, "app", &digest, data).await;
}

async fn upload_status_reports_the_range_received_so_far(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let location = registry.start_upload("app").await;
    let id = location.rsplit('/').next().unwrap().to_string();

    let reply = registry.get(&location).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply}");
    assert_eq!(reply.header("range"), Some("0-0"));

    patch(&registry, &location, Some("0-9"), b"0123456789").await;
    let reply = registry.get(&location).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply}");
    assert_eq!(reply.header("range"), Some("0-9"));
    assert_eq!(reply.location(), location);
    assert_eq!(reply.header("docker-upload-uuid"), Some(id.as_str()));
}

async fn chunked_push_may_send_the_last_chunk_with_the_closing_put(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"most of it, and the tail";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    patch(&registry, &location, Some("0-10"), &data[..11]).await;
    let reply = registry
        .send(
            Method::PUT,
            &with_digest(&location, &digest),
            &[("content-range", "11-23")],
            &data[11..],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;
}

async fn streamed_patch_without_content_range_is_accepted(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let pieces: Vec<&'static [u8]> = vec![b"streamed ", b"in ", b"several ", b"frames"];
    let data: Vec<u8> = pieces.concat();
    let digest = sha256(&data);
    let location = registry.start_upload("app").await;

    let stream = futures::stream::iter(
        pieces
            .into_iter()
            .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p))),
    );
    let request = Request::builder()
        .method(Method::PATCH)
        .uri(&location)
        .header("content-type", "application/octet-stream")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(stream))
        .unwrap();
    let reply = registry.request(request).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(
        reply.header("range"),
        Some(format!("0-{}", data.len() - 1).as_str())
    );

    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, &data).await;
}

async fn upload_continues_on_a_new_process_after_a_restart(driver: Driver) {
    // Invariant 5: upload state lives in storage, not in the process.
    let first = TestRegistry::new(driver).await;
    let data = b"half before the restart, half after";
    let digest = sha256(data);
    let location = first.start_upload("app").await;
    let reply = patch(&first, &location, Some("0-14"), &data[..15]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");

    let second = first.restarted().await;
    drop(first);
    let reply = second.get(&location).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply}");
    assert_eq!(reply.header("range"), Some("0-14"));
    let reply = patch(&second, &location, Some("15-34"), &data[15..]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply.header("range"), Some("0-34"));
    let reply = put_empty(&second, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&second, "app", &digest, data).await;
}

async fn out_of_order_chunk_is_416_and_the_upload_stays_usable(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"abcdefghij";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    patch(&registry, &location, Some("0-4"), &data[..5]).await;

    // A gap, then a repeat of the first chunk.
    for range in ["6-9", "0-4"] {
        let reply = patch(&registry, &location, Some(range), &data[5..]).await;
        assert_eq!(
            reply.status,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{range}: {reply}"
        );
        assert_eq!(reply.header("range"), Some("0-4"), "{range}");
    }

    let reply = registry.get(&location).await;
    assert_eq!(reply.header("range"), Some("0-4"));
    let reply = patch(&registry, &location, Some("5-9"), &data[5..]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;
}

async fn closing_put_body_without_content_length_is_not_ignored(driver: Driver) {
    // HTTP/2 requests need not carry Content-Length (and the server accepts
    // h2). A body the closing PUT carries must be appended whatever framing
    // announced it.
    let registry = TestRegistry::new(driver).await;
    let data = b"final chunk framed without Content-Length";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    let request = Request::builder()
        .method(Method::PUT)
        .uri(with_digest(&location, &digest))
        .header("content-type", "application/octet-stream")
        .body(Body::from(&data[..]))
        .unwrap();
    let reply = registry.request(request).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;
}

async fn malformed_content_range_does_not_misreport_the_offset(driver: Driver) {
    // A client resumes from the Range header of an error: it must name the
    // bytes actually held, never `0-0` for an upload that has five.
    let registry = TestRegistry::new(driver).await;
    let location = registry.start_upload("app").await;
    patch(&registry, &location, Some("0-4"), b"01234").await;
    let reply = patch(&registry, &location, Some("garbage"), b"56789").await;
    assert!(reply.status.is_client_error(), "{reply}");
    if let Some(range) = reply.header("range") {
        assert_eq!(range, "0-4", "{reply}");
    }
    let reply = registry.get(&location).await;
    assert_eq!(reply.header("range"), Some("0-4"));
}

async fn chunk_not_as_long_as_its_content_range_is_416_and_changes_nothing(driver: Driver) {
    // `Content-Range: 0-99` with five bytes was taken as a five-byte chunk.
    let registry = TestRegistry::new(driver).await;
    let data = b"0123456789";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    patch(&registry, &location, Some("0-4"), &data[..5]).await;
    let held = registry.files_under("uploads").await;

    // A Content-Length that disagrees with the range is refused up front;
    // a body without one is refused once it is in, and its chunk removed.
    let declared = patch(&registry, &location, Some("5-99"), &data[5..]).await;
    let streamed = Request::builder()
        .method(Method::PATCH)
        .uri(&location)
        .header("content-range", "5-99")
        .header("transfer-encoding", "chunked")
        .body(framed_body(&data[5..]))
        .unwrap();
    let streamed = registry.request(streamed).await;
    for reply in [declared, streamed] {
        reply.assert_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
        assert_eq!(reply.header("range"), Some("0-4"), "{reply}");
        assert_eq!(registry.files_under("uploads").await, held);
        assert_eq!(registry.get(&location).await.header("range"), Some("0-4"));
    }

    let reply = patch(&registry, &location, Some("5-9"), &data[5..]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;
}

async fn completed_upload_session_is_gone(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"done";
    let location = registry.start_upload("app").await;
    let reply = registry
        .send(
            Method::PUT,
            &with_digest(&location, &sha256(data)),
            &[],
            &data[..],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    registry
        .get(&location)
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    patch(&registry, &location, None, b"more")
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        registry.files_under("uploads").await,
        Vec::<std::path::PathBuf>::new()
    );
}

// The conditional write of an upload's state after a chunk can fail though
// the chunk is fine: the write landed and only its answer was lost, a
// cancel came first, or another chunk won the race.

async fn patch_whose_state_write_landed_before_a_412_succeeds(driver: Driver) {
    // The S3 SDK retries a conditional put whose response was lost; the
    // retry finds the etag changed and gets 412, though the first attempt
    // recorded the chunk. The PATCH succeeded, and its chunk must stay.
    let (registry, faults) = TestRegistry::faulty(driver).await;
    let data = b"0123456789";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    faults.inject(Call::PutIfMatch, "/state", Fault::LoseResponse);
    let reply = patch(&registry, &location, Some("0-4"), &data[..5]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    assert_eq!(reply.header("range"), Some("0-4"));
    let reply = patch(&registry, &location, Some("5-9"), &data[5..]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;
}

async fn patch_racing_a_cancel_is_blob_upload_unknown(driver: Driver) {
    // Spec: a chunk for an upload that is gone is 404 BLOB_UPLOAD_UNKNOWN
    // (it was a 416 naming the offset the upload had before).
    let (registry, faults) = TestRegistry::faulty(driver).await;
    let location = registry.start_upload("app").await;
    let (racer, cancelled) = (registry.clone(), location.clone());
    let cancel = async move {
        let reply = racer.delete(&cancelled).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply}");
    };
    faults.inject(Call::PutIfMatch, "/state", Fault::Before(Box::pin(cancel)));
    patch(&registry, &location, Some("0-4"), b"01234")
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(registry.files_under("uploads").await, Vec::<String>::new());
}

async fn patch_losing_to_another_chunk_is_416_with_the_current_offset(driver: Driver) {
    // The client resumes from the Range of the 416: it must name what the
    // upload holds now (the winner's six bytes), not what it held before.
    let (registry, faults) = TestRegistry::faulty(driver).await;
    let data = b"abcdefghij";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    let (racer, path) = (registry.clone(), location.clone());
    let winner = async move {
        let reply = patch(&racer, &path, Some("0-5"), &data[..6]).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    };
    faults.inject(Call::PutIfMatch, "/state", Fault::Before(Box::pin(winner)));
    let reply = patch(&registry, &location, Some("0-4"), b"01234").await;
    reply.assert_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID");
    assert_eq!(reply.header("range"), Some("0-5"), "{reply}");
    // The state and the winner's chunk; the loser's chunk is gone.
    assert_eq!(registry.files_under("uploads").await.len(), 2);
    let reply = patch(&registry, &location, Some("6-9"), &data[6..]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;
}

async fn completed_upload_is_201_though_its_clean_up_failed(driver: Driver) {
    // The blob is stored and linked once the clean-up starts: a failed
    // delete of the upload's state or chunks was answered 500.
    let (registry, faults) = TestRegistry::faulty(driver).await;
    let data = b"chunked, then cleaned up";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    patch(&registry, &location, Some("0-7"), &data[..8]).await;
    patch(&registry, &location, Some("8-23"), &data[8..]).await;
    faults.inject(Call::Delete, "/chunks/", Fault::Fail);
    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;

    // The monolithic closing PUT likewise.
    let data = b"monolithic, then cleaned up";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    faults.inject(Call::Delete, "/state", Fault::Fail);
    let path = with_digest(&location, &digest);
    let reply = registry.send(Method::PUT, &path, &[], &data[..]).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;
}

/// A body that yields `first` and then fails, as when a client goes away.
fn interrupted_body(first: &'static [u8]) -> Body {
    Body::from_stream(futures::stream::iter(vec![
        Ok(Bytes::from_static(first)),
        Err(std::io::Error::other("client went away")),
    ]))
}

async fn interrupted_patch_leaves_the_upload_at_its_old_offset(driver: Driver) {
    // Invariant 7: no partial write.
    let registry = TestRegistry::new(driver).await;
    let data = b"01234abcde";
    let digest = sha256(data);
    let location = registry.start_upload("app").await;
    patch(&registry, &location, Some("0-4"), &data[..5]).await;
    let chunks_before = registry.files_under("uploads").await.len();

    let request = Request::builder()
        .method(Method::PATCH)
        .uri(&location)
        .header("transfer-encoding", "chunked")
        .body(interrupted_body(b"partial"))
        .unwrap();
    let reply = registry.request(request).await;
    assert!(!reply.status.is_success(), "{reply}");
    assert_eq!(registry.files_under("uploads").await.len(), chunks_before);
    assert_eq!(
        registry.files_under(".berth/tmp").await,
        Vec::<std::path::PathBuf>::new()
    );

    let reply = registry.get(&location).await;
    assert_eq!(reply.header("range"), Some("0-4"));
    patch(&registry, &location, Some("5-9"), &data[5..]).await;
    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "app", &digest, data).await;
}

async fn interrupted_monolithic_push_stores_nothing(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let digest = sha256(b"partial and the rest");
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/v2/app/blobs/uploads/?digest={digest}"))
        .header("transfer-encoding", "chunked")
        .body(interrupted_body(b"partial"))
        .unwrap();
    let reply = registry.request(request).await;
    assert!(!reply.status.is_success(), "{reply}");
    assert_eq!(
        registry.files_under("blobs").await,
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        registry.files_under(".berth/tmp").await,
        Vec::<std::path::PathBuf>::new()
    );
    registry
        .get(&format!("/v2/app/blobs/{digest}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

async fn closing_put_without_digest_is_rejected(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let location = registry.start_upload("app").await;
    put_empty(&registry, &location)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

// ---------------------------------------------------------------------------
// Digest mismatches store nothing (invariant 2)

async fn monolithic_digest_mismatch_is_digest_invalid_and_stores_nothing(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"these bytes";
    let claimed = sha256(b"other bytes");
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/app/blobs/uploads/?digest={claimed}"),
            &[],
            &data[..],
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");

    for digest in [claimed, sha256(data)] {
        registry
            .get(&format!("/v2/app/blobs/{digest}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    }
    assert_eq!(
        registry.files_under("blobs").await,
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        registry.files_under(".berth/tmp").await,
        Vec::<std::path::PathBuf>::new()
    );
    // Not even the repository came into being.
    registry
        .get("/v2/app/tags/list")
        .await
        .assert_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
}

async fn chunked_digest_mismatch_is_digest_invalid_and_stores_nothing(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"chunk one|chunk two";
    let claimed = sha256(b"something else entirely");
    let location = registry.start_upload("app").await;
    patch(&registry, &location, Some("0-9"), &data[..10]).await;
    patch(&registry, &location, Some("10-18"), &data[10..]).await;

    put_empty(&registry, &with_digest(&location, &claimed))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");

    for digest in [claimed, sha256(data)] {
        registry
            .get(&format!("/v2/app/blobs/{digest}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    }
    assert_eq!(
        registry.files_under("blobs").await,
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        registry.files_under("uploads").await,
        Vec::<std::path::PathBuf>::new()
    );
}

async fn chunked_digest_mismatch_with_final_chunk_in_put_stores_nothing(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let claimed = sha256(b"not what is sent");
    let location = registry.start_upload("app").await;
    patch(&registry, &location, Some("0-3"), b"head").await;
    registry
        .send(
            Method::PUT,
            &with_digest(&location, &claimed),
            &[("content-range", "4-7")],
            &b"tail"[..],
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    assert_eq!(
        registry.files_under("blobs").await,
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        registry.files_under("uploads").await,
        Vec::<std::path::PathBuf>::new()
    );
}

// ---------------------------------------------------------------------------
// Upload sessions: cancel, unknown ids, repository binding

async fn cancelled_upload_is_gone(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let location = registry.start_upload("app").await;
    patch(&registry, &location, Some("0-4"), b"bytes").await;

    let reply = registry.delete(&location).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply}");
    registry
        .get(&location)
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    patch(&registry, &location, Some("5-9"), b"more!")
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    registry
        .delete(&location)
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(
        registry.files_under("uploads").await,
        Vec::<std::path::PathBuf>::new()
    );
}

async fn unknown_or_garbage_upload_id_is_blob_upload_unknown(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    for id in [
        "garbage",
        "0123456789abcdef0123456789abcdef",
        "00000000-0000-0000-0000-000000000000",
        "..",
        "%2e%2e",
    ] {
        let location = format!("/v2/app/blobs/uploads/{id}");
        let replies = [
            registry.get(&location).await,
            patch(&registry, &location, None, b"x").await,
            put_empty(&registry, &with_digest(&location, EMPTY_SHA256)).await,
            registry.delete(&location).await,
        ];
        for reply in replies {
            reply.assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
        }
    }
}

async fn upload_started_in_one_repository_cannot_be_continued_through_another(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"belongs to a";
    let digest = sha256(data);
    let location = registry.start_upload("a").await;
    let id = location.rsplit('/').next().unwrap();
    let foreign = format!("/v2/b/blobs/uploads/{id}");

    let replies = [
        registry.get(&foreign).await,
        patch(&registry, &foreign, Some("0-11"), data).await,
        put_empty(&registry, &with_digest(&foreign, &digest)).await,
        registry.delete(&foreign).await,
    ];
    for reply in replies {
        reply.assert_error(StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN");
    }

    let reply = patch(&registry, &location, Some("0-11"), data).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let reply = put_empty(&registry, &with_digest(&location, &digest)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "a", &digest, data).await;
    registry
        .get(&format!("/v2/b/blobs/{digest}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

// ---------------------------------------------------------------------------
// Cross-repository mount

async fn mount_from_a_repository_that_holds_the_blob_is_201(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"shared layer";
    let digest = registry.push_blob("source", data).await;
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={digest}&from=source"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(
        reply.location(),
        format!("/v2/target/blobs/{digest}").as_str()
    );
    assert_eq!(reply.digest(), digest);
    assert_blob(&registry, "target", &digest, data).await;
}

async fn mount_without_from_of_a_blob_stored_elsewhere_is_201(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"discoverable layer";
    let digest = registry.push_blob("somewhere/else", data).await;
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={digest}"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(
        reply.location(),
        format!("/v2/target/blobs/{digest}").as_str()
    );
    assert_blob(&registry, "target", &digest, data).await;
}

async fn mount_of_an_unknown_digest_opens_an_upload_session(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    registry.push_blob("source", b"unrelated").await;
    let data = b"never pushed before";
    let digest = sha256(data);
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={digest}&from=source"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let location = reply.location().to_string();
    assert!(
        location.starts_with("/v2/target/blobs/uploads/"),
        "{location}"
    );
    let reply = registry
        .send(
            Method::PUT,
            &with_digest(&location, &digest),
            &[],
            &data[..],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_blob(&registry, "target", &digest, data).await;
}

async fn mount_from_a_repository_without_the_blob_opens_an_upload_session(driver: Driver) {
    // Invariant 1: `from` must itself link the blob; the global store
    // holding it is not enough when the client names a source.
    let registry = TestRegistry::new(driver).await;
    let digest = registry.push_blob("holder", b"only in holder").await;
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/target/blobs/uploads/?mount={digest}&from=empty"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    registry
        .get(&format!("/v2/target/blobs/{digest}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

// ---------------------------------------------------------------------------
// Range requests

async fn ranged(registry: &TestRegistry, digest: &str, range: &str) -> Reply {
    registry
        .send(
            Method::GET,
            &format!("/v2/app/blobs/{digest}"),
            &[("range", range)],
            Bytes::new(),
        )
        .await
}

async fn range_get_of_the_first_byte(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let digest = registry.push_blob("app", b"0123456789").await;
    let reply = ranged(&registry, &digest, "bytes=0-0").await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{reply}");
    assert_eq!(reply.body.as_ref(), b"0");
    assert_eq!(reply.header("content-range"), Some("bytes 0-0/10"));
    assert_eq!(reply.header("content-length"), Some("1"));
}

async fn range_get_from_an_offset_to_the_end(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let digest = registry.push_blob("app", b"0123456789").await;
    let reply = ranged(&registry, &digest, "bytes=2-").await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{reply}");
    assert_eq!(reply.body.as_ref(), b"23456789");
    assert_eq!(reply.header("content-range"), Some("bytes 2-9/10"));
    assert_eq!(reply.header("content-length"), Some("8"));
}

async fn range_get_of_a_suffix(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let digest = registry.push_blob("app", b"0123456789").await;
    let reply = ranged(&registry, &digest, "bytes=-3").await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{reply}");
    assert_eq!(reply.body.as_ref(), b"789");
    assert_eq!(reply.header("content-range"), Some("bytes 7-9/10"));
}

async fn unsatisfiable_range_is_416_with_the_size(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let digest = registry.push_blob("app", b"0123456789").await;
    for range in ["bytes=10-", "bytes=20-30", "bytes=-0"] {
        let reply = ranged(&registry, &digest, range).await;
        assert_eq!(
            reply.status,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{range}: {reply}"
        );
        assert_eq!(reply.header("content-range"), Some("bytes */10"), "{range}");
    }
}

// ---------------------------------------------------------------------------
// Manifests

async fn manifest_put_by_tag_is_pullable_by_tag_and_by_digest(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"os":"linux"}"#;
    let layer = b"layer bytes";
    registry.push_blob("app", config).await;
    registry.push_blob("app", layer).await;
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .layer(descriptor(OCI_LAYER, layer))
        .build();
    let digest = sha256(&body);

    let reply = registry
        .put_manifest("app", "v1", OCI_MANIFEST, &body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(
        reply.location(),
        format!("/v2/app/manifests/{digest}").as_str()
    );
    assert_eq!(reply.digest(), digest);

    for reference in ["v1", digest.as_str()] {
        let reply = registry
            .get(&format!("/v2/app/manifests/{reference}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reference}: {reply}");
        assert_eq!(reply.body.as_ref(), body.as_slice(), "{reference}");
        assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(reply.digest(), digest);
        assert_eq!(
            reply.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
}

async fn manifest_head_by_tag_and_digest_has_type_length_and_digest(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (digest, body) = registry.push_image("app", "latest", "head").await;
    for reference in ["latest", digest.as_str()] {
        let reply = registry
            .head(&format!("/v2/app/manifests/{reference}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reference}: {reply}");
        assert_eq!(reply.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(
            reply.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(reply.digest(), digest);
        assert!(reply.body.is_empty());
    }
}

async fn manifest_put_by_digest_is_201_with_location(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"by":"digest"}"#;
    registry.push_blob("app", config).await;
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .build();
    let digest = sha256(&body);
    let reply = registry
        .put_manifest("app", &digest, OCI_MANIFEST, &body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(
        reply.location(),
        format!("/v2/app/manifests/{digest}").as_str()
    );
    assert_eq!(reply.digest(), digest);
    let reply = registry.get(&format!("/v2/app/manifests/{digest}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.as_ref(), body.as_slice());
}

async fn manifest_put_by_sha512_digest_is_pullable_by_that_digest(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"hash":"sha512"}"#;
    registry.push_blob("app", config).await;
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .build();
    let digest = sha512(&body);
    let reply = registry
        .put_manifest("app", &digest, OCI_MANIFEST, &body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply.digest(), digest);
    let reply = registry.get(&format!("/v2/app/manifests/{digest}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
    assert_eq!(reply.body.as_ref(), body.as_slice());
    assert_eq!(reply.digest(), digest);
}

async fn manifest_is_invisible_in_a_repository_that_does_not_link_it(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (digest, _) = registry.push_image("owner", "v1", "private").await;
    registry
        .get(&format!("/v2/stranger/manifests/{digest}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    registry
        .get("/v2/owner/manifests/v2")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

async fn docker_schema2_manifest_is_accepted_and_served_with_its_type(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"docker":true}"#;
    let layer = b"docker layer";
    registry.push_blob("app", config).await;
    registry.push_blob("app", layer).await;
    let body = ManifestBuilder::docker_image()
        .config(descriptor(DOCKER_CONFIG, config))
        .layer(descriptor(DOCKER_LAYER, layer))
        .build();
    let reply = registry
        .put_manifest("app", "docker", DOCKER_MANIFEST, &body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    let reply = registry.get("/v2/app/manifests/docker").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some(DOCKER_MANIFEST));
    assert_eq!(reply.body.as_ref(), body.as_slice());
}

async fn docker_manifest_list_is_accepted_and_served_with_its_type(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let mut list = ManifestBuilder::docker_list();
    for arch in ["amd64", "arm64"] {
        let config = format!(r#"{{"architecture":"{arch}"}}"#);
        registry.push_blob("app", config.as_bytes()).await;
        let child = ManifestBuilder::docker_image()
            .config(descriptor(DOCKER_CONFIG, config.as_bytes()))
            .build();
        let reply = registry
            .put_manifest("app", &sha256(&child), DOCKER_MANIFEST, &child)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
        let mut entry = descriptor(DOCKER_MANIFEST, &child);
        entry["platform"] = json!({ "architecture": arch, "os": "linux" });
        list = list.manifest(entry);
    }
    let body = list.build();
    let reply = registry
        .put_manifest("app", "multi", DOCKER_LIST, &body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    let reply = registry.get("/v2/app/manifests/multi").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some(DOCKER_LIST));
    assert_eq!(reply.body.as_ref(), body.as_slice());
}

async fn oci_index_is_accepted_and_served_with_its_type(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (amd, amd_body) = registry.push_image("app", "amd64", "amd64").await;
    let (arm, arm_body) = registry.push_image("app", "arm64", "arm64").await;
    let body = ManifestBuilder::oci_index()
        .manifest(descriptor(OCI_MANIFEST, &amd_body))
        .manifest(descriptor(OCI_MANIFEST, &arm_body))
        .build();
    let reply = registry
        .put_manifest("app", "multi", OCI_INDEX, &body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    let reply = registry.get("/v2/app/manifests/multi").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
    let index = reply.json();
    assert_eq!(index["manifests"][0]["digest"], amd);
    assert_eq!(index["manifests"][1]["digest"], arm);
}

async fn index_with_a_missing_child_is_manifest_blob_unknown(driver: Driver) {
    // Invariant 3, for index children.
    let registry = TestRegistry::new(driver).await;
    let (_, present) = registry.push_image("app", "present", "present").await;
    let missing = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, b"{}"))
        .build();
    let body = ManifestBuilder::oci_index()
        .manifest(descriptor(OCI_MANIFEST, &present))
        .manifest(descriptor(OCI_MANIFEST, &missing))
        .build();
    registry
        .put_manifest("app", "multi", OCI_INDEX, &body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    registry
        .get("/v2/app/manifests/multi")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

async fn image_manifest_with_a_missing_layer_is_manifest_blob_unknown(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"layers":"missing"}"#;
    registry.push_blob("app", config).await;
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .layer(descriptor(OCI_LAYER, b"never pushed"))
        .build();
    registry
        .put_manifest("app", "v1", OCI_MANIFEST, &body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    registry
        .get("/v2/app/manifests/v1")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");

    // A missing config counts too.
    let layer = b"pushed layer";
    registry.push_blob("app", layer).await;
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, b"config never pushed"))
        .layer(descriptor(OCI_LAYER, layer))
        .build();
    registry
        .put_manifest("app", "v1", OCI_MANIFEST, &body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

async fn blob_linked_only_in_another_repository_is_manifest_blob_unknown(driver: Driver) {
    // Invariant 3: present in *that* repository, not merely in storage.
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"elsewhere":true}"#;
    let layer = b"elsewhere layer";
    registry.push_blob("other", config).await;
    registry.push_blob("other", layer).await;
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .layer(descriptor(OCI_LAYER, layer))
        .build();
    registry
        .put_manifest("mine", "v1", OCI_MANIFEST, &body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");

    // Likewise an index child that only another repository holds.
    let (_, child) = registry.push_image("other", "child", "child").await;
    let index = ManifestBuilder::oci_index()
        .manifest(descriptor(OCI_MANIFEST, &child))
        .build();
    registry
        .put_manifest("mine", "multi", OCI_INDEX, &index)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

async fn manifest_naming_a_deleted_blob_is_manifest_blob_unknown(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"deleted":true}"#;
    let digest = registry.push_blob("app", config).await;
    let reply = registry.delete(&format!("/v2/app/blobs/{digest}")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .build();
    registry
        .put_manifest("app", "v1", OCI_MANIFEST, &body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
}

async fn malformed_manifest_is_manifest_invalid(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let not_json = b"{ this is not json".to_vec();
    let no_config = ManifestBuilder::oci_image().build();
    let bad_schema =
        br#"{"schemaVersion":1,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#.to_vec();
    // serde would read a struct from an array of its fields in order.
    let config = br#"{"as":"array"}"#;
    registry.push_blob("app", config).await;
    let as_array = serde_json::to_vec(&json!([
        2,
        OCI_MANIFEST,
        null,
        descriptor(OCI_CONFIG, config),
        [],
        null,
        null,
        null
    ]))
    .unwrap();
    for body in [not_json, no_config, bad_schema, as_array] {
        registry
            .put_manifest("app", "v1", OCI_MANIFEST, &body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
    }
}

async fn content_type_not_matching_media_type_is_manifest_invalid(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"os":"linux"}"#;
    registry.push_blob("app", config).await;
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .build();
    registry
        .put_manifest("app", "v1", DOCKER_MANIFEST, &body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID");
}

async fn manifest_put_by_a_digest_the_body_does_not_have_is_digest_invalid(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"os":"linux"}"#;
    registry.push_blob("app", config).await;
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .build();
    let wrong = sha256(b"a different manifest");
    registry
        .put_manifest("app", &wrong, OCI_MANIFEST, &body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    for digest in [wrong, sha256(&body)] {
        registry
            .get(&format!("/v2/app/manifests/{digest}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    }
}

async fn oversize_manifest_is_413(driver: Driver) {
    let registry = TestRegistry::with_config(driver, |c| c.limits.manifest_max_bytes = 512).await;
    let config = br#"{"os":"linux"}"#;
    registry.push_blob("app", config).await;
    let small = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .build();
    assert!(small.len() < 512);
    let reply = registry
        .put_manifest("app", "small", OCI_MANIFEST, &small)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");

    let large = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .annotation("padding", &"x".repeat(600))
        .build();
    let reply = registry
        .put_manifest("app", "large", OCI_MANIFEST, &large)
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{reply}");

    // Without a Content-Length to refuse up front, the read itself stops.
    let request = Request::builder()
        .method(Method::PUT)
        .uri("/v2/app/manifests/large")
        .header("content-type", OCI_MANIFEST)
        .body(Body::from(large))
        .unwrap();
    let reply = registry.request(request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{reply}");
    registry
        .get("/v2/app/manifests/large")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
}

async fn invalid_tag_is_400(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let config = br#"{"os":"linux"}"#;
    registry.push_blob("app", config).await;
    let body = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, config))
        .build();
    let long = "t".repeat(129);
    for tag in ["-leading-dash", ".hidden", "has%20space", long.as_str()] {
        let reply = registry.put_manifest("app", tag, OCI_MANIFEST, &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{tag}: {reply}");
        assert!(reply.json()["errors"][0]["code"].is_string(), "{reply}");
    }
}

// ---------------------------------------------------------------------------
// Subject and referrers

const SBOM: &str = "application/vnd.example.sbom.v1+json";
const SIGNATURE: &str = "application/vnd.example.signature";

/// Pushes an artifact manifest (empty config, one layer) whose subject is
/// `subject`; returns its digest.
async fn push_referrer(
    registry: &TestRegistry,
    repo: &str,
    subject: &Value,
    artifact_type: &str,
    payload: &[u8],
) -> (String, Reply) {
    registry.push_blob(repo, b"{}").await;
    registry.push_blob(repo, payload).await;
    let body = ManifestBuilder::oci_image()
        .artifact_type(artifact_type)
        .config(descriptor(OCI_EMPTY, b"{}"))
        .layer(descriptor("application/octet-stream", payload))
        .subject(subject.clone())
        .annotation("org.example.kind", artifact_type)
        .build();
    let digest = sha256(&body);
    let reply = registry
        .put_manifest(repo, &digest, OCI_MANIFEST, &body)
        .await;
    (digest, reply)
}

async fn referrers(registry: &TestRegistry, repo: &str, subject: &str, query: &str) -> Reply {
    let reply = registry
        .get(&format!("/v2/{repo}/referrers/{subject}{query}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
    assert_eq!(reply.header("content-type"), Some(OCI_INDEX));
    let index = reply.json();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    reply
}

fn referrer_digests(reply: &Reply) -> Vec<String> {
    let mut digests: Vec<String> = reply.json()["manifests"]
        .as_array()
        .expect("a manifests array")
        .iter()
        .map(|d| d["digest"].as_str().expect("a digest").to_string())
        .collect();
    digests.sort();
    digests
}

async fn manifest_with_a_subject_answers_with_oci_subject(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (subject, body) = registry.push_image("app", "v1", "subject").await;
    let (_, reply) = push_referrer(
        &registry,
        "app",
        &descriptor(OCI_MANIFEST, &body),
        SBOM,
        b"sbom",
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply.header("oci-subject"), Some(subject.as_str()));
}

async fn referrer_may_be_pushed_before_its_subject(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let absent = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, b"not pushed"))
        .build();
    let subject = sha256(&absent);
    let (digest, reply) = push_referrer(
        &registry,
        "app",
        &descriptor(OCI_MANIFEST, &absent),
        SBOM,
        b"early sbom",
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply.header("oci-subject"), Some(subject.as_str()));
    let reply = referrers(&registry, "app", &subject, "").await;
    assert_eq!(referrer_digests(&reply), vec![digest]);
}

async fn referrers_lists_artifacts_with_their_descriptors(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (subject, body) = registry.push_image("app", "v1", "subject").await;
    let (sbom, _) = push_referrer(
        &registry,
        "app",
        &descriptor(OCI_MANIFEST, &body),
        SBOM,
        b"sbom",
    )
    .await;
    let (signature, _) = push_referrer(
        &registry,
        "app",
        &descriptor(OCI_MANIFEST, &body),
        SIGNATURE,
        b"signature",
    )
    .await;

    let reply = referrers(&registry, "app", &subject, "").await;
    assert_eq!(reply.header("oci-filters-applied"), None);
    let mut expected = vec![sbom.clone(), signature];
    expected.sort();
    assert_eq!(referrer_digests(&reply), expected);

    let index = reply.json();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == sbom.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["mediaType"], OCI_MANIFEST);
    assert_eq!(entry["artifactType"], SBOM);
    assert!(entry["size"].as_u64().unwrap() > 0);
    assert_eq!(entry["annotations"]["org.example.kind"], SBOM);
    let manifest = registry.get(&format!("/v2/app/manifests/{sbom}")).await;
    assert_eq!(entry["size"].as_u64(), Some(manifest.body.len() as u64));
}

async fn referrers_filtered_by_artifact_type_says_so(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (subject, body) = registry.push_image("app", "v1", "subject").await;
    let target = descriptor(OCI_MANIFEST, &body);
    let (sbom, _) = push_referrer(&registry, "app", &target, SBOM, b"sbom").await;
    push_referrer(&registry, "app", &target, SIGNATURE, b"signature").await;

    // `+` must be percent-encoded in a query, as clients do.
    let encoded = SBOM.replace('+', "%2B");
    let reply = referrers(
        &registry,
        "app",
        &subject,
        &format!("?artifactType={encoded}"),
    )
    .await;
    assert_eq!(reply.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(referrer_digests(&reply), vec![sbom]);
}

async fn referrers_filter_matching_nothing_gives_an_empty_index(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (subject, body) = registry.push_image("app", "v1", "subject").await;
    push_referrer(
        &registry,
        "app",
        &descriptor(OCI_MANIFEST, &body),
        SBOM,
        b"sbom",
    )
    .await;
    let reply = referrers(
        &registry,
        "app",
        &subject,
        "?artifactType=application/vnd.example.nothing",
    )
    .await;
    assert_eq!(reply.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(reply.json()["manifests"], json!([]));
}

async fn referrers_of_an_unknown_digest_is_an_empty_index(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    registry.push_image("app", "v1", "subject").await;
    let unknown = sha256(b"no such manifest");
    let reply = referrers(&registry, "app", &unknown, "").await;
    assert_eq!(reply.json()["manifests"], json!([]));
}

async fn image_referrer_without_artifact_type_is_listed_under_its_config_type(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (subject, body) = registry.push_image("app", "v1", "subject").await;
    let config = b"signature config";
    let config_type = "application/vnd.example.signature.config";
    registry.push_blob("app", config).await;
    let referrer = ManifestBuilder::oci_image()
        .config(descriptor(config_type, config))
        .subject(descriptor(OCI_MANIFEST, &body))
        .build();
    let reply = registry
        .put_manifest("app", &sha256(&referrer), OCI_MANIFEST, &referrer)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    let reply = referrers(&registry, "app", &subject, "").await;
    assert_eq!(reply.json()["manifests"][0]["artifactType"], config_type);
}

async fn deleted_referrer_disappears_from_the_list(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (subject, body) = registry.push_image("app", "v1", "subject").await;
    let target = descriptor(OCI_MANIFEST, &body);
    let (sbom, _) = push_referrer(&registry, "app", &target, SBOM, b"sbom").await;
    let (signature, _) = push_referrer(&registry, "app", &target, SIGNATURE, b"sig").await;

    let reply = registry.delete(&format!("/v2/app/manifests/{sbom}")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let reply = referrers(&registry, "app", &subject, "").await;
    assert_eq!(referrer_digests(&reply), vec![signature]);
}

// ---------------------------------------------------------------------------
// Deletes

async fn deleting_a_manifest_by_digest_removes_it_and_the_tags_naming_it(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (digest, body) = registry.push_image("app", "v1", "doomed").await;
    let reply = registry
        .put_manifest("app", "latest", OCI_MANIFEST, &body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let (_, _) = registry.push_image("app", "keep", "survivor").await;

    let reply = registry
        .delete(&format!("/v2/app/manifests/{digest}"))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");

    for reference in [digest.as_str(), "v1", "latest"] {
        registry
            .get(&format!("/v2/app/manifests/{reference}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
        let head = registry
            .head(&format!("/v2/app/manifests/{reference}"))
            .await;
        assert_eq!(head.status, StatusCode::NOT_FOUND, "{reference}");
    }
    let tags = registry.get("/v2/app/tags/list").await;
    assert_eq!(strings(&tags.json()["tags"]), vec!["keep"]);
}

/// Invariant 3: an accepted index keeps its children. Deleting one is
/// refused while the index is there, and allowed once it is gone.
async fn deleting_a_manifest_an_index_lists_is_409_until_the_index_goes(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (child, child_body) = registry.push_image("app", "amd64", "child").await;
    let index = ManifestBuilder::oci_index()
        .manifest(descriptor(OCI_MANIFEST, &child_body))
        .build();
    let reply = registry
        .put_manifest("app", "multi", OCI_INDEX, &index)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");

    let reply = registry.delete(&format!("/v2/app/manifests/{child}")).await;
    reply.assert_error(StatusCode::CONFLICT, "DENIED");
    assert!(
        reply.json()["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&sha256(&index))),
        "the message names the index: {reply}"
    );
    for reference in [child.as_str(), "amd64"] {
        let reply = registry
            .get(&format!("/v2/app/manifests/{reference}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{reference}: {reply}");
    }
    let reply = registry.get("/v2/app/manifests/multi").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");

    let reply = registry
        .delete(&format!("/v2/app/manifests/{}", sha256(&index)))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    let reply = registry.delete(&format!("/v2/app/manifests/{child}")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
}

/// An index push that failed (a child missing) does not hold back the
/// deletion of the children it did name.
async fn a_failed_index_push_does_not_protect_its_children(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (child, child_body) = registry.push_image("app", "amd64", "child").await;
    let missing = ManifestBuilder::oci_image()
        .config(descriptor(OCI_CONFIG, b"{}"))
        .build();
    let index = ManifestBuilder::oci_index()
        .manifest(descriptor(OCI_MANIFEST, &child_body))
        .manifest(descriptor(OCI_MANIFEST, &missing))
        .build();
    registry
        .put_manifest("app", "multi", OCI_INDEX, &index)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN");
    let reply = registry.delete(&format!("/v2/app/manifests/{child}")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
}

/// Invariants 1 and 4 under a race: pushes of a manifest under new tags on
/// one replica while another deletes it by digest. Whatever the
/// interleaving, every tag listed afterwards is pullable, and a push that
/// was answered 201 left its tag pullable unless the delete came after it.
async fn manifest_push_racing_its_delete_by_digest_leaves_no_dangling_tag(driver: Driver) {
    let one = TestRegistry::new(driver).await;
    let other = one.restarted().await;
    let (digest, body) = one.push_image("app", "t0", "raced").await;
    for round in 1..=40 {
        let tag = format!("t{round}");
        let (put, delete) = tokio::join!(
            tokio::spawn({
                let other = other.clone();
                let (tag, body) = (tag.clone(), body.clone());
                async move { other.put_manifest("app", &tag, OCI_MANIFEST, &body).await }
            }),
            tokio::spawn({
                let one = one.clone();
                let path = format!("/v2/app/manifests/{digest}");
                async move { one.delete(&path).await }
            }),
        );
        let (put, delete) = (put.unwrap(), delete.unwrap());
        assert!(
            [StatusCode::CREATED, StatusCode::CONFLICT].contains(&put.status),
            "round {round}: {put}"
        );
        assert!(
            [StatusCode::ACCEPTED, StatusCode::NOT_FOUND].contains(&delete.status),
            "round {round}: {delete}"
        );
        let tags = one.get("/v2/app/tags/list").await;
        for listed in strings(&tags.json()["tags"]) {
            let reply = one.get(&format!("/v2/app/manifests/{listed}")).await;
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "round {round}, tag {listed}: {reply}"
            );
        }
        // Put it back for the next round.
        let reply = one.put_manifest("app", "t0", OCI_MANIFEST, &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "round {round}: {reply}");
    }
}

async fn deleting_a_tag_keeps_the_manifest(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (digest, _) = registry.push_image("app", "v1", "tagged").await;
    let reply = registry.delete("/v2/app/manifests/v1").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    registry
        .get("/v2/app/manifests/v1")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    let reply = registry.get(&format!("/v2/app/manifests/{digest}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
    let tags = registry.get("/v2/app/tags/list").await;
    assert_eq!(tags.json()["tags"], json!([]));
}

async fn deleting_a_blob_unlinks_it_from_that_repository_only(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"linked twice";
    let digest = registry.push_blob("one", data).await;
    registry.push_blob("two", data).await;

    let reply = registry.delete(&format!("/v2/one/blobs/{digest}")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
    registry
        .get(&format!("/v2/one/blobs/{digest}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
    let head = registry.head(&format!("/v2/one/blobs/{digest}")).await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    assert_blob(&registry, "two", &digest, data).await;
}

async fn deleting_something_unknown_is_404(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    registry.push_image("app", "v1", "present").await;
    let unknown = sha256(b"unknown");
    registry
        .delete(&format!("/v2/app/manifests/{unknown}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    registry
        .delete("/v2/app/manifests/no-such-tag")
        .await
        .assert_error(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN");
    registry
        .delete(&format!("/v2/app/blobs/{unknown}"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "BLOB_UNKNOWN");
}

// ---------------------------------------------------------------------------
// Tags and catalog

async fn tags_list_paginates_in_lexical_order_with_link(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (_, body) = registry.push_image("app", "v1.0", "tags").await;
    for tag in ["b", "a", "V2", "v1", "c"] {
        let reply = registry.put_manifest("app", tag, OCI_MANIFEST, &body).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    }
    let all = ["V2", "a", "b", "c", "v1", "v1.0"];

    let reply = registry.get("/v2/app/tags/list").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
    assert_eq!(reply.json()["name"], "app");
    assert_eq!(strings(&reply.json()["tags"]), all);
    assert_eq!(reply.header("link"), None);

    let first = registry.get("/v2/app/tags/list?n=2").await;
    assert_eq!(strings(&first.json()["tags"]), ["V2", "a"]);
    assert_eq!(
        first.header("link"),
        Some(r#"</v2/app/tags/list?n=2&last=a>; rel="next""#)
    );

    let mut seen = Vec::new();
    let mut next = Some("/v2/app/tags/list?n=2".to_string());
    let mut pages = 0;
    while let Some(url) = next {
        let reply = registry.get(&url).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {reply}");
        let tags = strings(&reply.json()["tags"]);
        assert!(tags.len() <= 2);
        seen.extend(tags);
        next = next_link(&reply);
        pages += 1;
    }
    assert_eq!(seen, all);
    assert_eq!(pages, 3);

    let reply = registry.get("/v2/app/tags/list?last=b").await;
    assert_eq!(strings(&reply.json()["tags"]), ["c", "v1", "v1.0"]);
    let reply = registry.get("/v2/app/tags/list?n=10&last=c").await;
    assert_eq!(strings(&reply.json()["tags"]), ["v1", "v1.0"]);
    assert_eq!(reply.header("link"), None);
}

async fn tags_of_an_unknown_repository_are_name_unknown(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    registry
        .get("/v2/nobody/tags/list")
        .await
        .assert_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
}

async fn tags_of_an_unknown_repository_are_name_unknown_whatever_the_query(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    for query in ["?n=10", "?last=a", "?n=2&last=v1", "?n=0"] {
        registry
            .get(&format!("/v2/nobody/tags/list{query}"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "NAME_UNKNOWN");
    }
}

async fn retagging_moves_the_tag(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let (first, _) = registry.push_image("app", "latest", "first").await;
    let (second, _) = registry.push_image("app", "latest", "second").await;
    assert_ne!(first, second);
    let reply = registry.get("/v2/app/manifests/latest").await;
    assert_eq!(reply.digest(), second);
    // The old manifest stays pullable by digest.
    let reply = registry.get(&format!("/v2/app/manifests/{first}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
}

async fn tags_list_with_a_non_numeric_n_is_400(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    registry.push_image("app", "v1", "n").await;
    for query in ["n=abc", "n=-1", "n=1.5"] {
        let reply = registry.get(&format!("/v2/app/tags/list?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}: {reply}");
        assert!(reply.json()["errors"][0]["code"].is_string(), "{reply}");
    }
}

async fn catalog_with_a_non_numeric_n_is_400(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let reply = registry.get("/v2/_catalog?n=abc").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply}");
    assert!(reply.json()["errors"][0]["code"].is_string(), "{reply}");
}

async fn catalog_paginates_multi_segment_names_in_lexical_order(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    for repo in ["b", "a/b", "a", "a-b", "a/b/c"] {
        registry.push_blob(repo, repo.as_bytes()).await;
    }
    let all = ["a", "a-b", "a/b", "a/b/c", "b"];

    let reply = registry.get("/v2/_catalog").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
    assert_eq!(strings(&reply.json()["repositories"]), all);
    assert_eq!(reply.header("link"), None);

    let first = registry.get("/v2/_catalog?n=2").await;
    assert_eq!(strings(&first.json()["repositories"]), ["a", "a-b"]);
    let link = next_link(&first).expect("a Link to the next page");
    let decoded = percent_decode_str(&link).decode_utf8().unwrap();
    assert_eq!(decoded, "/v2/_catalog?n=2&last=a-b");

    let mut seen = Vec::new();
    let mut next = Some("/v2/_catalog?n=2".to_string());
    let mut pages = 0;
    while let Some(url) = next {
        let reply = registry.get(&url).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {reply}");
        seen.extend(strings(&reply.json()["repositories"]));
        next = next_link(&reply);
        pages += 1;
    }
    assert_eq!(seen, all);
    assert_eq!(pages, 3);

    let reply = registry.get("/v2/_catalog?n=5&last=a%2Fb").await;
    assert_eq!(strings(&reply.json()["repositories"]), ["a/b/c", "b"]);
    assert_eq!(reply.header("link"), None);
}

// ---------------------------------------------------------------------------
// Bad input never reaches storage (invariant 7)

async fn invalid_repository_names_are_rejected_without_a_5xx(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let digest = registry.push_blob("app", b"target").await;
    let long = "a".repeat(256);
    let names = [
        "Upper",
        "..",
        "a/..",
        "a//b",
        "a/./b",
        "-a",
        "a_",
        "%2e%2e",
        "a%00b",
        "a%2Fb",
        "a%5Cb",
        long.as_str(),
    ];
    for name in names {
        for path in [
            format!("/v2/{name}/tags/list"),
            format!("/v2/{name}/manifests/latest"),
            format!("/v2/{name}/blobs/{digest}"),
            format!("/v2/{name}/blobs/uploads/"),
            format!("/v2/{name}/referrers/{digest}"),
        ] {
            for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
                let reply = registry
                    .send(method.clone(), &path, &[], Bytes::new())
                    .await;
                assert!(!reply.status.is_server_error(), "{method} {path}: {reply}");
                assert!(!reply.status.is_success(), "{method} {path}: {reply}");
                if reply.status == StatusCode::BAD_REQUEST {
                    reply.assert_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
                }
            }
        }
    }
    // The common case answers with the spec's code.
    registry
        .get("/v2/Upper/tags/list")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
    registry
        .get("/v2/a//b/tags/list")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
}

async fn path_traversal_never_escapes_the_store(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let data = b"inside the store";
    let digest = registry.push_blob("app", data).await;
    let hex = digest.trim_start_matches("sha256:");
    for path in [
        format!("/v2/../../etc/blobs/{digest}"),
        format!("/v2/app/../../blobs/{digest}"),
        format!("/v2/%2e%2e/%2e%2e/blobs/{digest}"),
        format!("/v2/..%2f..%2fetc/blobs/{digest}"),
        format!("/v2/app/blobs/sha256:..%2f..%2f{hex}"),
        "/v2/app/blobs/..%2F..%2Fcatalog".to_string(),
        "/v2/app/manifests/..%2F..%2Fcatalog".to_string(),
        "/v2/../../../../etc/passwd".to_string(),
    ] {
        let reply = registry.get(&path).await;
        assert!(
            reply.status == StatusCode::BAD_REQUEST || reply.status == StatusCode::NOT_FOUND,
            "{path}: {reply}"
        );
        assert!(reply.json()["errors"][0]["code"].is_string(), "{path}");
        assert_ne!(reply.body.as_ref(), data, "{path}");
    }
    let reply = registry.get(&format!("/v2/../../etc/blobs/{digest}")).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "NAME_INVALID");
}

async fn percent_encoded_slash_in_a_name_is_not_a_separator(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    registry.push_image("a/b", "v1", "nested").await;
    let reply = registry.get("/v2/a%2Fb/manifests/v1").await;
    assert!(
        reply.status == StatusCode::BAD_REQUEST || reply.status == StatusCode::NOT_FOUND,
        "{reply}"
    );
    let reply = registry.get("/v2/a/b/manifests/v1").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
}

async fn invalid_digests_are_digest_invalid(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let md5 = "md5:d41d8cd98f00b204e9800998ecf8427e";
    let short = "sha256:xyz";
    let upper = EMPTY_SHA256.to_uppercase().replace("SHA256", "sha256");
    for digest in [short, md5, upper.as_str(), "sha256", "nocolon"] {
        for path in [
            format!("/v2/app/blobs/{digest}"),
            format!("/v2/app/blobs/uploads/?digest={digest}"),
            format!("/v2/app/referrers/{digest}"),
        ] {
            let method = if path.contains("uploads") {
                Method::POST
            } else {
                Method::GET
            };
            registry
                .send(method, &path, &[], &b"x"[..])
                .await
                .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
        }
        let location = registry.start_upload("app").await;
        put_empty(&registry, &with_digest(&location, digest))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
    }
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/app/blobs/uploads/?mount={md5}&from=other"),
            &[],
            Bytes::new(),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "DIGEST_INVALID");
}

async fn manifest_reference_that_is_neither_tag_nor_digest_is_400(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    for reference in ["sha256:xyz", "md5:d41d8cd98f00b204e9800998ecf8427e"] {
        let reply = registry
            .get(&format!("/v2/app/manifests/{reference}"))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply}");
        assert!(reply.json()["errors"][0]["code"].is_string(), "{reply}");
    }
}

async fn unknown_endpoint_is_404(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    for path in [
        "/",
        "/v1/",
        "/v3/app/tags/list",
        "/v2/app/unknown/thing",
        "/v2/manifests/latest",
        "/v2/app/tags",
    ] {
        let reply = registry.get(path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply}");
        assert!(reply.json()["errors"][0]["code"].is_string(), "{path}");
    }
}

async fn wrong_method_is_405(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    let digest = sha256(b"x");
    for (method, path) in [
        (Method::POST, "/v2/app/manifests/latest".to_string()),
        (Method::PATCH, "/v2/app/tags/list".to_string()),
        (Method::PUT, "/v2/".to_string()),
        (Method::DELETE, "/v2/_catalog".to_string()),
        (Method::PUT, format!("/v2/app/blobs/{digest}")),
        (Method::GET, "/v2/app/blobs/uploads/".to_string()),
        (Method::POST, format!("/v2/app/referrers/{digest}")),
    ] {
        let reply = registry
            .send(method.clone(), &path, &[], Bytes::new())
            .await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {reply}"
        );
        assert!(reply.json()["errors"][0]["code"].is_string());
    }
}

// ---------------------------------------------------------------------------
// Operations endpoints

async fn metrics_count_requests_by_route(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    registry.get("/v2/").await;
    registry.push_image("app", "v1", "metrics").await;
    registry.get("/v2/app/manifests/v1").await;
    registry.get("/v2/app/manifests/missing").await;
    registry.get("/v2/app/tags/list").await;

    let reply = registry.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("berth_http_requests_total{"))
        .collect();
    let has = |route: &str, method: &str, status: &str, value: Option<&str>| {
        samples.iter().any(|line| {
            line.contains(&format!("route=\"{route}\""))
                && line.contains(&format!("method=\"{method}\""))
                && line.contains(&format!("status=\"{status}\""))
                && value.is_none_or(|v| line.ends_with(&format!(" {v}")))
        })
    };
    assert!(has("base", "GET", "200", Some("1")), "{text}");
    assert!(has("upload", "POST", "201", Some("2")), "{text}");
    assert!(has("manifest", "PUT", "201", Some("1")), "{text}");
    assert!(has("manifest", "GET", "200", Some("1")), "{text}");
    assert!(has("manifest", "GET", "404", Some("1")), "{text}");
    assert!(has("tags", "GET", "200", Some("1")), "{text}");
}

async fn livez_and_readyz_are_200(driver: Driver) {
    let registry = TestRegistry::new(driver).await;
    for path in ["/livez", "/readyz"] {
        let reply = registry.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply}");
    }
}

/// S3 only. Regression: with the bucket missing, S3's 404 `NoSuchBucket`
/// read as "not found": listings failed as a 500 about a missing key, and
/// pulls (on S3, which answers GETs with `NoSuchBucket` too) as unknown
/// manifests. The storage is unavailable, and the client is told so.
#[tokio::test]
async fn a_missing_bucket_is_storage_unavailable() {
    let registry = TestRegistry::with_config(Driver::S3, |config| {
        if let berth_registry::config::StorageConfig::S3(s3) = &mut config.storage {
            s3.bucket = "no-such-bucket".into();
        }
    })
    .await;
    for path in ["/v2/_catalog", "/v2/team/app/tags/list"] {
        let reply = registry.get(path).await;
        reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "UNKNOWN");
    }
}

/// S3 only. Regression: a 5xx's body carried the storage failure in full
/// (keys, S3's answer, for a transport error the endpoint and the SDK's
/// context). Clients, and `/readyz`, get a short message; the detail is
/// only logged.
#[tokio::test]
async fn storage_failures_reach_clients_without_internal_detail() {
    let registry = TestRegistry::with_config(Driver::S3, |config| {
        if let berth_registry::config::StorageConfig::S3(s3) = &mut config.storage {
            s3.bucket = "no-such-bucket".into();
        }
    })
    .await;
    let reply = registry.get("/v2/_catalog").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert_eq!(
        reply.json()["errors"][0]["message"],
        "storage backend unavailable"
    );
    let ready = registry.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready.body.as_ref(), b"storage unavailable\n");
}

/// Instantiates the listed tests for one driver.
macro_rules! api_suite {
    ($module:ident, $driver:expr; $($test:ident),* $(,)?) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($driver).await
                }
            )*
        }
    };
}

api_suite!(
    fs,
    Driver::Fs;
    base_endpoint_answers_empty_json_with_api_version,
    every_response_carries_the_api_version_header,
    monolithic_post_with_digest_stores_the_blob,
    post_then_put_with_body_stores_the_blob,
    head_blob_reports_length_and_digest_without_a_body,
    get_blob_advertises_byte_ranges,
    sha512_digests_work_for_monolithic_and_chunked_pushes,
    sha512_completion_hashes_off_the_runtime_thread,
    empty_blob_is_pushed_by_post_then_put_without_body,
    blob_is_invisible_in_a_repository_that_does_not_link_it,
    repushing_a_stored_blob_with_other_bytes_is_digest_invalid,
    large_blobs_are_verified_whole_on_every_push_path,
    chunked_push_with_content_range_completes,
    upload_status_reports_the_range_received_so_far,
    chunked_push_may_send_the_last_chunk_with_the_closing_put,
    streamed_patch_without_content_range_is_accepted,
    upload_continues_on_a_new_process_after_a_restart,
    out_of_order_chunk_is_416_and_the_upload_stays_usable,
    closing_put_body_without_content_length_is_not_ignored,
    malformed_content_range_does_not_misreport_the_offset,
    chunk_not_as_long_as_its_content_range_is_416_and_changes_nothing,
    completed_upload_session_is_gone,
    interrupted_patch_leaves_the_upload_at_its_old_offset,
    patch_whose_state_write_landed_before_a_412_succeeds,
    patch_racing_a_cancel_is_blob_upload_unknown,
    patch_losing_to_another_chunk_is_416_with_the_current_offset,
    completed_upload_is_201_though_its_clean_up_failed,
    interrupted_monolithic_push_stores_nothing,
    closing_put_without_digest_is_rejected,
    monolithic_digest_mismatch_is_digest_invalid_and_stores_nothing,
    chunked_digest_mismatch_is_digest_invalid_and_stores_nothing,
    chunked_digest_mismatch_with_final_chunk_in_put_stores_nothing,
    cancelled_upload_is_gone,
    unknown_or_garbage_upload_id_is_blob_upload_unknown,
    upload_started_in_one_repository_cannot_be_continued_through_another,
    mount_from_a_repository_that_holds_the_blob_is_201,
    mount_without_from_of_a_blob_stored_elsewhere_is_201,
    mount_of_an_unknown_digest_opens_an_upload_session,
    mount_from_a_repository_without_the_blob_opens_an_upload_session,
    range_get_of_the_first_byte,
    range_get_from_an_offset_to_the_end,
    range_get_of_a_suffix,
    unsatisfiable_range_is_416_with_the_size,
    manifest_put_by_tag_is_pullable_by_tag_and_by_digest,
    manifest_head_by_tag_and_digest_has_type_length_and_digest,
    manifest_put_by_digest_is_201_with_location,
    manifest_put_by_sha512_digest_is_pullable_by_that_digest,
    manifest_is_invisible_in_a_repository_that_does_not_link_it,
    docker_schema2_manifest_is_accepted_and_served_with_its_type,
    docker_manifest_list_is_accepted_and_served_with_its_type,
    oci_index_is_accepted_and_served_with_its_type,
    index_with_a_missing_child_is_manifest_blob_unknown,
    image_manifest_with_a_missing_layer_is_manifest_blob_unknown,
    blob_linked_only_in_another_repository_is_manifest_blob_unknown,
    manifest_naming_a_deleted_blob_is_manifest_blob_unknown,
    malformed_manifest_is_manifest_invalid,
    content_type_not_matching_media_type_is_manifest_invalid,
    manifest_put_by_a_digest_the_body_does_not_have_is_digest_invalid,
    oversize_manifest_is_413,
    invalid_tag_is_400,
    manifest_with_a_subject_answers_with_oci_subject,
    referrer_may_be_pushed_before_its_subject,
    referrers_lists_artifacts_with_their_descriptors,
    referrers_filtered_by_artifact_type_says_so,
    referrers_filter_matching_nothing_gives_an_empty_index,
    referrers_of_an_unknown_digest_is_an_empty_index,
    image_referrer_without_artifact_type_is_listed_under_its_config_type,
    deleted_referrer_disappears_from_the_list,
    deleting_a_manifest_by_digest_removes_it_and_the_tags_naming_it,
    deleting_a_tag_keeps_the_manifest,
    deleting_a_manifest_an_index_lists_is_409_until_the_index_goes,
    a_failed_index_push_does_not_protect_its_children,
    deleting_a_blob_unlinks_it_from_that_repository_only,
    deleting_something_unknown_is_404,
    tags_list_paginates_in_lexical_order_with_link,
    tags_of_an_unknown_repository_are_name_unknown,
    tags_of_an_unknown_repository_are_name_unknown_whatever_the_query,
    retagging_moves_the_tag,
    tags_list_with_a_non_numeric_n_is_400,
    catalog_with_a_non_numeric_n_is_400,
    catalog_paginates_multi_segment_names_in_lexical_order,
    invalid_repository_names_are_rejected_without_a_5xx,
    path_traversal_never_escapes_the_store,
    percent_encoded_slash_in_a_name_is_not_a_separator,
    invalid_digests_are_digest_invalid,
    manifest_reference_that_is_neither_tag_nor_digest_is_400,
    unknown_endpoint_is_404,
    wrong_method_is_405,
    metrics_count_requests_by_route,
    livez_and_readyz_are_200
);

// Every test but those storing keys longer than about 180 bytes (sha512
// links, referrer records): s3s-fs names a metadata file after the base64 of
// the whole key, which overflows the filesystem's 255-byte name limit. Real
// S3 allows 1024-byte keys; these paths run against MinIO in the e2e tier
// (the conformance suite covers sha512 and referrers there).
api_suite!(
    s3,
    Driver::S3;
    base_endpoint_answers_empty_json_with_api_version,
    every_response_carries_the_api_version_header,
    monolithic_post_with_digest_stores_the_blob,
    post_then_put_with_body_stores_the_blob,
    head_blob_reports_length_and_digest_without_a_body,
    get_blob_advertises_byte_ranges,
    empty_blob_is_pushed_by_post_then_put_without_body,
    blob_is_invisible_in_a_repository_that_does_not_link_it,
    repushing_a_stored_blob_with_other_bytes_is_digest_invalid,
    large_blobs_are_verified_whole_on_every_push_path,
    chunked_push_with_content_range_completes,
    upload_status_reports_the_range_received_so_far,
    chunked_push_may_send_the_last_chunk_with_the_closing_put,
    streamed_patch_without_content_range_is_accepted,
    upload_continues_on_a_new_process_after_a_restart,
    out_of_order_chunk_is_416_and_the_upload_stays_usable,
    closing_put_body_without_content_length_is_not_ignored,
    malformed_content_range_does_not_misreport_the_offset,
    chunk_not_as_long_as_its_content_range_is_416_and_changes_nothing,
    completed_upload_session_is_gone,
    interrupted_patch_leaves_the_upload_at_its_old_offset,
    patch_whose_state_write_landed_before_a_412_succeeds,
    patch_racing_a_cancel_is_blob_upload_unknown,
    patch_losing_to_another_chunk_is_416_with_the_current_offset,
    completed_upload_is_201_though_its_clean_up_failed,
    interrupted_monolithic_push_stores_nothing,
    closing_put_without_digest_is_rejected,
    monolithic_digest_mismatch_is_digest_invalid_and_stores_nothing,
    chunked_digest_mismatch_is_digest_invalid_and_stores_nothing,
    chunked_digest_mismatch_with_final_chunk_in_put_stores_nothing,
    cancelled_upload_is_gone,
    unknown_or_garbage_upload_id_is_blob_upload_unknown,
    upload_started_in_one_repository_cannot_be_continued_through_another,
    mount_from_a_repository_that_holds_the_blob_is_201,
    mount_without_from_of_a_blob_stored_elsewhere_is_201,
    mount_of_an_unknown_digest_opens_an_upload_session,
    mount_from_a_repository_without_the_blob_opens_an_upload_session,
    range_get_of_the_first_byte,
    range_get_from_an_offset_to_the_end,
    range_get_of_a_suffix,
    unsatisfiable_range_is_416_with_the_size,
    manifest_put_by_tag_is_pullable_by_tag_and_by_digest,
    manifest_head_by_tag_and_digest_has_type_length_and_digest,
    manifest_put_by_digest_is_201_with_location,
    manifest_is_invisible_in_a_repository_that_does_not_link_it,
    docker_schema2_manifest_is_accepted_and_served_with_its_type,
    docker_manifest_list_is_accepted_and_served_with_its_type,
    oci_index_is_accepted_and_served_with_its_type,
    index_with_a_missing_child_is_manifest_blob_unknown,
    image_manifest_with_a_missing_layer_is_manifest_blob_unknown,
    blob_linked_only_in_another_repository_is_manifest_blob_unknown,
    manifest_naming_a_deleted_blob_is_manifest_blob_unknown,
    malformed_manifest_is_manifest_invalid,
    content_type_not_matching_media_type_is_manifest_invalid,
    manifest_put_by_a_digest_the_body_does_not_have_is_digest_invalid,
    oversize_manifest_is_413,
    invalid_tag_is_400,
    referrers_lists_artifacts_with_their_descriptors,
    referrers_filtered_by_artifact_type_says_so,
    referrers_filter_matching_nothing_gives_an_empty_index,
    referrers_of_an_unknown_digest_is_an_empty_index,
    deleted_referrer_disappears_from_the_list,
    deleting_a_manifest_by_digest_removes_it_and_the_tags_naming_it,
    deleting_a_tag_keeps_the_manifest,
    deleting_a_manifest_an_index_lists_is_409_until_the_index_goes,
    a_failed_index_push_does_not_protect_its_children,
    deleting_a_blob_unlinks_it_from_that_repository_only,
    deleting_something_unknown_is_404,
    tags_list_paginates_in_lexical_order_with_link,
    tags_of_an_unknown_repository_are_name_unknown,
    tags_of_an_unknown_repository_are_name_unknown_whatever_the_query,
    retagging_moves_the_tag,
    tags_list_with_a_non_numeric_n_is_400,
    catalog_with_a_non_numeric_n_is_400,
    catalog_paginates_multi_segment_names_in_lexical_order,
    invalid_repository_names_are_rejected_without_a_5xx,
    path_traversal_never_escapes_the_store,
    percent_encoded_slash_in_a_name_is_not_a_separator,
    invalid_digests_are_digest_invalid,
    manifest_reference_that_is_neither_tag_nor_digest_is_400,
    unknown_endpoint_is_404,
    wrong_method_is_405,
    metrics_count_requests_by_route,
    livez_and_readyz_are_200
);

/// Races want both runtime threads: each push and delete on its own.
mod races {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fs_manifest_push_racing_its_delete_by_digest_leaves_no_dangling_tag() {
        manifest_push_racing_its_delete_by_digest_leaves_no_dangling_tag(Driver::Fs).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3_manifest_push_racing_its_delete_by_digest_leaves_no_dangling_tag() {
        manifest_push_racing_its_delete_by_digest_leaves_no_dangling_tag(Driver::S3).await
    }
}
