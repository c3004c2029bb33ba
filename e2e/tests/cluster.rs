//! Three stateless replicas on one MinIO bucket behind a round-robin load
//! balancer (nginx): any request on any replica, a replica killed in the
//! middle of an upload, replicas racing on one tag and one blob, and real
//! clients through the balancer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::thread;

use berth_e2e::clients::{crane_scenario, oras_scenario, skopeo_scenario};
use berth_e2e::conformance::run_conformance;
use berth_e2e::{Cluster, push_blob, request, sha256};

const EMPTY_CONFIG: &[u8] = b"{}";

/// An image manifest with the empty config and one layer.
fn manifest(config: &str, layer: &str, layer_size: usize) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size }],
    })
    .to_string()
    .into_bytes()
}

fn put_manifest(addr: SocketAddr, repo: &str, reference: &str, body: &[u8]) -> u16 {
    let content_type = ("Content-Type", "application/vnd.oci.image.manifest.v1+json");
    request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[content_type],
        body,
    )
    .status
}

#[test]
fn conformance_passes_through_three_replicas_on_one_bucket() {
    let cluster = Cluster::start(3);
    run_conformance(&cluster.host(), "conformance");
    for (i, replica) in cluster.replicas.iter().enumerate() {
        let patches = replica.metric(
            "berth_http_requests_total",
            &[("route", "upload"), ("method", "PATCH")],
        );
        assert!(
            patches > 0.0,
            "replica {i} took no upload chunk: the balancer did not spread uploads"
        );
    }
    assert!(
        cluster.keys("uploads/").is_empty(),
        "finished uploads leave nothing behind"
    );
}

#[test]
fn chunked_upload_survives_losing_the_replica_that_took_the_last_chunk() {
    let mut cluster = Cluster::start(3);
    let lb = cluster.lb.addr;
    let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i: u32| (i % 241) as u8).collect();
    let (first, second) = data.split_at(1024 * 1024 + 17);

    let started = request(lb, "POST", "/v2/e2e/kill/blobs/uploads/", &[], b"");
    assert_eq!(started.status, 202);
    let location = started.header("location").unwrap().to_string();
    let range = format!("0-{}", first.len() - 1);
    let patched = request(lb, "PATCH", &location, &[("Content-Range", &range)], first);
    assert_eq!(patched.status, 202, "{patched:?}");

    // Kill the replica that took that chunk.
    let took = cluster
        .replicas
        .iter()
        .position(|r| {
            r.metric(
                "berth_http_requests_total",
                &[("route", "upload"), ("method", "PATCH")],
            ) > 0.0
        })
        .expect("some replica took the chunk");
    cluster.replicas[took].kill();

    let range = format!("{}-{}", first.len(), data.len() - 1);
    let patched = request(lb, "PATCH", &location, &[("Content-Range", &range)], second);
    assert_eq!(
        patched.status,
        202,
        "{patched:?}\n{}",
        cluster.lb.error_log()
    );
    let digest = sha256(&data);
    let done = request(lb, "PUT", &format!("{location}?digest={digest}"), &[], b"");
    assert_eq!(done.status, 201, "{done:?}");
    let pulled = request(lb, "GET", &format!("/v2/e2e/kill/blobs/{digest}"), &[], b"");
    assert_eq!(pulled.status, 200);
    assert_eq!(
        sha256(&pulled.body),
        digest,
        "the blob verifies after the kill"
    );
}

#[test]
fn replicas_racing_on_one_tag_and_one_blob_stay_consistent() {
    let cluster = Cluster::start(3);
    let [a, b, c] = [
        cluster.replicas[0].addr,
        cluster.replicas[1].addr,
        cluster.replicas[2].addr,
    ];
    let repo = "e2e/race";

    // Two manifests, racing for one tag from two replicas.
    let config = push_blob(a, repo, EMPTY_CONFIG);
    let layer_a = push_blob(a, repo, b"layer a");
    let layer_b = push_blob(b, repo, b"layer b");
    let manifest_a = manifest(&config, &layer_a, 7);
    let manifest_b = manifest(&config, &layer_b, 7);
    let racers: Vec<_> = [(a, manifest_a.clone()), (b, manifest_b.clone())]
        .into_iter()
        .map(|(addr, body)| {
            thread::spawn(move || {
                (0..20)
                    .map(|_| put_manifest(addr, repo, "latest", &body))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for racer in racers {
        assert!(racer.join().unwrap().iter().all(|s| *s == 201));
    }
    let tagged: Vec<String> = [a, b, c]
        .iter()
        .map(|addr| {
            let head = request(
                *addr,
                "HEAD",
                &format!("/v2/{repo}/manifests/latest"),
                &[],
                b"",
            );
            head.header("docker-content-digest").unwrap().to_string()
        })
        .collect();
    assert!(
        tagged.iter().all(|d| d == &tagged[0]),
        "replicas disagree on the tag: {tagged:?}"
    );
    assert!([sha256(&manifest_a), sha256(&manifest_b)].contains(&tagged[0]));
    for body in [&manifest_a, &manifest_b] {
        let got = request(
            c,
            "GET",
            &format!("/v2/{repo}/manifests/{}", sha256(body)),
            &[],
            b"",
        );
        assert_eq!(
            (got.status, &got.body),
            (200, body),
            "both manifests stay pullable"
        );
    }

    // Two uploads of the same blob, completed at the same time on two replicas.
    let data: Vec<u8> = (0..2 * 1024 * 1024).map(|i: u32| (i % 239) as u8).collect();
    let digest = sha256(&data);
    let sessions: Vec<(SocketAddr, String)> = [a, b]
        .iter()
        .map(|addr| {
            let started = request(
                *addr,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                b"",
            );
            let location = started.header("location").unwrap().to_string();
            assert_eq!(request(*addr, "PATCH", &location, &[], &data).status, 202);
            (*addr, location)
        })
        .collect();
    let finishers: Vec<_> = sessions
        .into_iter()
        .map(|(addr, location)| {
            let digest = digest.clone();
            thread::spawn(move || {
                request(
                    addr,
                    "PUT",
                    &format!("{location}?digest={digest}"),
                    &[],
                    b"",
                )
                .status
            })
        })
        .collect();
    for finisher in finishers {
        assert_eq!(finisher.join().unwrap(), 201);
    }
    let hex = digest.trim_start_matches("sha256:");
    assert_eq!(
        cluster.keys(&format!("blobs/sha256/{hex}")).len(),
        1,
        "one copy of the blob"
    );
    assert!(
        cluster.keys("uploads/").is_empty(),
        "both uploads cleaned up"
    );
    let pulled = request(c, "GET", &format!("/v2/{repo}/blobs/{digest}"), &[], b"");
    assert_eq!(sha256(&pulled.body), digest);
}

#[test]
fn real_clients_through_the_load_balancer() {
    let cluster = Cluster::start(3);
    let host = cluster.host();
    crane_scenario(&host, "lb");
    oras_scenario(&host, "lb");
    skopeo_scenario(&host, "lb");
}
