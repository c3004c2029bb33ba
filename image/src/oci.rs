//! The OCI image: its config (entrypoint, user, ports, labels), its
//! manifest, and the OCI image layout it is written to on disk.
//!
//! Types follow the OCI image spec v1.1; JSON keys come out in a fixed
//! order, so a given layer and provenance always give the same digests.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::images::{CA_BUNDLE, Component, UID};
use crate::layer::Layer;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A content-addressed blob: a layer, a config or a manifest.
#[derive(Debug)]
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Self {
            media_type,
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    fn json(media_type: &'static str, value: &impl Serialize) -> Result<Self> {
        let bytes = serde_json::to_vec(value).context("cannot serialise image JSON")?;
        Ok(Self::new(media_type, bytes))
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type,
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            annotations: BTreeMap::new(),
        }
    }

    /// The blob's hex digest: its file name under `blobs/sha256/`.
    fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// Where and when an image was made; becomes its labels and timestamps.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The packaged software's version (the workspace version).
    pub version: String,
    /// The git commit the binaries were built from.
    pub revision: String,
    /// Seconds since the epoch: the commit's time or `SOURCE_DATE_EPOCH`,
    /// never the wall clock, so rebuilding a commit gives the same image.
    pub created: u64,
    /// The source repository's URL.
    pub source: String,
}

impl Provenance {
    /// `created` as RFC 3339, as the image spec wants it.
    pub fn created_rfc3339(&self) -> String {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(self.created))
            .to_string()
    }
}

/// One built image: a manifest naming a config and one layer.
#[derive(Debug)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

impl Image {
    /// The image of `component` with `layer` as its whole root filesystem,
    /// for `architecture` (a GOARCH name: `amd64`, `arm64`).
    pub fn new(
        component: Component,
        layer: Layer,
        provenance: &Provenance,
        architecture: &str,
    ) -> Result<Self> {
        let created = provenance.created_rfc3339();
        let config = Blob::json(
            CONFIG_MEDIA_TYPE,
            &ImageConfig {
                created: created.clone(),
                architecture: architecture.to_string(),
                os: "linux",
                config: run_config(component, provenance, &created),
                rootfs: RootFs {
                    kind: "layers",
                    diff_ids: vec![layer.diff_id],
                },
                history: vec![History {
                    created,
                    created_by: format!("berth-image {}", env!("CARGO_PKG_VERSION")),
                    comment: format!(
                        "static {} binary, CA bundle, passwd and group",
                        component.name()
                    ),
                }],
            },
        )?;
        let layers = vec![Blob::new(LAYER_MEDIA_TYPE, layer.gzip)];
        let manifest = Blob::json(
            MANIFEST_MEDIA_TYPE,
            &Manifest {
                schema_version: 2,
                media_type: MANIFEST_MEDIA_TYPE,
                config: config.descriptor(),
                layers: layers.iter().map(Blob::descriptor).collect(),
            },
        )?;
        Ok(Self {
            manifest,
            config,
            layers,
        })
    }

    /// The blobs the manifest references: layers, then the config.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        self.layers.iter().chain([&self.config])
    }

    /// Writes the image as an OCI image layout in `dir` (replacing what
    /// was there), with `tag` as its `org.opencontainers.image.ref.name`,
    /// so `skopeo copy oci:DIR:TAG ...` and `crane push DIR ...` read it.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs)
            .with_context(|| format!("cannot create {}", blobs.display()))?;
        for blob in self.blobs().chain([&self.manifest]) {
            write(&blobs.join(blob.hex()), &blob.bytes)?;
        }
        let mut manifest = self.manifest.descriptor();
        manifest
            .annotations
            .insert("org.opencontainers.image.ref.name".into(), tag.into());
        let index = Index {
            schema_version: 2,
            media_type: INDEX_MEDIA_TYPE,
            manifests: vec![manifest],
        };
        let index = serde_json::to_vec(&index).context("cannot serialise index.json")?;
        write(&dir.join("index.json"), &index)?;
        write(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn run_config(component: Component, provenance: &Provenance, created: &str) -> RunConfig {
    let label = |key: &str, value: &str| (format!("org.opencontainers.image.{key}"), value.into());
    RunConfig {
        user: format!("{UID}:{UID}"),
        exposed_ports: component
            .ports()
            .into_iter()
            .map(|port| (port, Empty {}))
            .collect(),
        env: vec![
            "PATH=/usr/local/bin".into(),
            format!("SSL_CERT_FILE={CA_BUNDLE}"),
        ],
        entrypoint: vec![component.entrypoint()],
        cmd: component.cmd(),
        working_dir: "/".into(),
        labels: BTreeMap::from([
            label("title", component.name()),
            label("description", component.description()),
            label("source", &provenance.source),
            label("version", &provenance.version),
            label("revision", &provenance.revision),
            label("created", created),
            label("licenses", env!("CARGO_PKG_LICENSE")),
        ]),
    }
}

#[derive(Serialize)]
struct ImageConfig {
    created: String,
    architecture: String,
    os: &'static str,
    config: RunConfig,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    user: String,
    exposed_ports: BTreeMap<String, Empty>,
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    working_dir: String,
    labels: BTreeMap<String, String>,
}

/// `{}`: the value of each `ExposedPorts` key.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created: String,
    created_by: String,
    comment: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::layer::{Entry, pack};

    fn provenance() -> Provenance {
        Provenance {
            version: "1.2.3".into(),
            revision: "0123abcd".into(),
            created: 1_700_000_000,
            source: "https://example.test/berth".into(),
        }
    }

    fn image() -> Image {
        let layer = pack(vec![Entry::file("/bin/x", 0o755, b"x".to_vec())], 1).unwrap();
        Image::new(Component::Registry, layer, &provenance(), "amd64").unwrap()
    }

    #[test]
    fn the_config_says_how_to_run_it_and_where_it_comes_from() {
        let image = image();
        let config: Value = serde_json::from_slice(&image.config.bytes).unwrap();
        assert_eq!(config["os"], "linux");
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        let run = &config["config"];
        assert_eq!(run["User"], "65532:65532");
        assert_eq!(run["Entrypoint"][0], "/usr/local/bin/berth-registry");
        assert_eq!(run["ExposedPorts"]["5000/tcp"], serde_json::json!({}));
        let labels = &run["Labels"];
        assert_eq!(labels["org.opencontainers.image.title"], "berth-registry");
        assert_eq!(labels["org.opencontainers.image.version"], "1.2.3");
        assert_eq!(labels["org.opencontainers.image.revision"], "0123abcd");
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_manifest_references_the_config_and_layer_by_digest_and_size() {
        let image = image();
        let manifest: Value = serde_json::from_slice(&image.manifest.bytes).unwrap();
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["digest"], image.config.digest.as_str());
        assert_eq!(manifest["config"]["size"], image.config.bytes.len());
        assert_eq!(manifest["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(
            manifest["layers"][0]["digest"],
            image.layers[0].digest.as_str()
        );
        assert_eq!(image.manifest.digest, sha256_digest(&image.manifest.bytes));
    }

    #[test]
    fn the_layout_holds_every_blob_under_its_digest_and_the_tag() {
        let dir = tempfile::tempdir().unwrap();
        let image = image();
        image.write_layout(dir.path(), "v1").unwrap();
        image.write_layout(dir.path(), "v1").unwrap();
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        let manifest = &index["manifests"][0];
        assert_eq!(manifest["digest"], image.manifest.digest.as_str());
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        for blob in image.blobs().chain([&image.manifest]) {
            let path = dir.path().join("blobs/sha256").join(blob.hex());
            assert_eq!(sha256_digest(&std::fs::read(path).unwrap()), blob.digest);
        }
    }
}
