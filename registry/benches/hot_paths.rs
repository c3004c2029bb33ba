//! Criterion micro-benchmarks of the registry's hot paths, compared in
//! BENCHMARKS.md to the machine's limit (`openssl speed -evp sha256`):
//!
//! - hashing: the SHA-256 / SHA-512 of every pushed byte (`oci::Hasher`),
//!   in the request-body chunk sizes a push sees;
//! - manifest parsing and validation (`oci::Manifest::parse`) of a typical
//!   image manifest and a multi-platform index, and digest parsing;
//! - routing: `api::Route::parse` of the paths of a pull and a push, and
//!   repository name and reference validation.
//!
//! Run: `cargo bench -p berth-registry --bench hot_paths`.

use std::hint::black_box;

use berth_registry::api::Route;
use berth_registry::oci::{Algorithm, Digest, Hasher, Manifest, Reference, RepoName};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn digest_of(seed: usize) -> String {
    Digest::of(Algorithm::Sha256, &seed.to_le_bytes()).to_string()
}

/// An image manifest with a config and `layers` layers.
fn image_manifest(layers: usize) -> String {
    let layers: Vec<String> = (0..layers)
        .map(|i| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
                digest_of(i + 1),
                1_000_000 + i
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1234}},"layers":[{}],"annotations":{{"org.opencontainers.image.created":"2026-01-01T00:00:00Z"}}}}"#,
        digest_of(0),
        layers.join(",")
    )
}

/// An index of `n` platform manifests.
fn index_manifest(n: usize) -> String {
    let children: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"architecture":"arch{i}","os":"linux"}}}}"#,
                digest_of(100 + i),
                500 + i
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
        children.join(",")
    )
}

fn hashing(c: &mut Criterion) {
    let data: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let mut group = c.benchmark_group("hashing");
    for (name, algorithm) in [("sha256", Algorithm::Sha256), ("sha512", Algorithm::Sha512)] {
        for chunk in [16 * 1024, 1024 * 1024] {
            group.throughput(Throughput::Bytes(data.len() as u64));
            group.bench_function(
                format!("{name} 1 MiB in {} KiB chunks", chunk / 1024),
                |b| {
                    b.iter(|| {
                        let mut hasher = Hasher::new(algorithm);
                        for piece in data.chunks(chunk) {
                            hasher.update(black_box(piece));
                        }
                        hasher.finish()
                    })
                },
            );
        }
    }
    let manifest = image_manifest(1);
    group.throughput(Throughput::Bytes(manifest.len() as u64));
    group.bench_function(
        format!("sha256 of a {}-byte manifest", manifest.len()),
        |b| b.iter(|| Digest::of(Algorithm::Sha256, black_box(manifest.as_bytes()))),
    );
    group.finish();
}

fn manifests(c: &mut Criterion) {
    let mut group = c.benchmark_group("manifest");
    for (name, body, content_type) in [
        ("image, 1 layer", image_manifest(1), OCI_MANIFEST),
        ("image, 20 layers", image_manifest(20), OCI_MANIFEST),
        ("index, 8 platforms", index_manifest(8), OCI_INDEX),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("parse+validate {name} ({} B)", body.len()), |b| {
            b.iter(|| Manifest::parse(black_box(body.as_bytes()), Some(content_type)))
        });
    }
    group.throughput(Throughput::Elements(1));
    let digest = digest_of(7);
    group.bench_function("digest parse", |b| {
        b.iter(|| black_box(digest.as_str()).parse::<Digest>())
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let digest = digest_of(9);
    let paths = [
        "/v2/library/alpine/manifests/3.20".to_string(),
        format!("/v2/team/project/app/blobs/{digest}"),
        "/v2/team/project/app/blobs/uploads/0f5e4c1d9a8b4c7e8f9a0b1c2d3e4f50".to_string(),
        "/v2/_catalog".to_string(),
    ];
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    for path in &paths {
        group.bench_function(format!("Route::parse {path}"), |b| {
            b.iter(|| Route::parse(black_box(path)))
        });
    }
    group.bench_function("name + tag validation", |b| {
        b.iter(|| {
            (
                RepoName::parse(black_box("team/project/app")),
                Reference::parse(black_box("v1.2.3")),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, hashing, manifests, routing);
criterion_main!(benches);
