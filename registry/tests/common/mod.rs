//! Helpers for the HTTP-level tests: a registry over a temporary directory
//! driven in-process with `oneshot`, blob and manifest push helpers, and a
//! small manifest builder. Digests are computed here with `sha2` directly,
//! not with the crate's own `Digest`, so the tests do not check the
//! implementation against itself.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use berth_registry::config::{Config, FilesystemConfig, StorageConfig};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::Digest as _;
use tempfile::TempDir;
use tower::ServiceExt;

use faulty::FaultyStore;

pub mod faulty;
mod s3_server;

/// The storage driver a test runs against: every API test runs on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The filesystem driver over a temporary directory.
    Fs,
    /// The S3 driver against an in-process S3 server (s3s-fs).
    S3,
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// `sha512:<hex>` of `data`.
pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (panics with the body text when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the status and the first OCI error code of the body, and that
    /// the body has the spec's shape.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{self}");
        let body = self.json();
        let errors = body["errors"].as_array().expect("an errors array");
        assert!(!errors.is_empty(), "{self}");
        assert_eq!(errors[0]["code"], code, "{self}");
        assert!(errors[0]["message"].is_string(), "{self}");
    }

    /// The `Docker-Content-Digest` header.
    pub fn digest(&self) -> &str {
        self.header("docker-content-digest")
            .expect("a Docker-Content-Digest header")
    }

    /// The `Location` header.
    pub fn location(&self) -> &str {
        self.header("location").expect("a Location header")
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} {}",
            self.status,
            self.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// A registry over a temporary directory, driven in-process.
#[derive(Debug, Clone)]
pub struct TestRegistry {
    /// Shared so that a restarted registry keeps the directory alive.
    dir: Arc<TempDir>,
    config: Config,
    app: Router,
}

impl TestRegistry {
    /// A registry with the default configuration.
    pub async fn new(driver: Driver) -> Self {
        Self::with_config(driver, |_| {}).await
    }

    /// A registry whose configuration `adjust` changed.
    pub async fn with_config(driver: Driver, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = Arc::new(TempDir::new().expect("a temporary directory"));
        let storage = match driver {
            Driver::Fs => StorageConfig::Filesystem(FilesystemConfig {
                root: dir.path().to_path_buf(),
            }),
            Driver::S3 => {
                let addr = s3_server::start(dir.path()).await;
                StorageConfig::S3(Box::new(s3_server::config(addr)))
            }
        };
        let mut config = Config {
            storage,
            ..Config::default()
        };
        adjust(&mut config);
        Self::open(dir, config).await
    }

    /// A registry whose storage goes through a [`FaultyStore`], returned
    /// beside it so that the test can inject faults.
    pub async fn faulty(driver: Driver) -> (Self, Arc<FaultyStore>) {
        let base = Self::new(driver).await;
        let inner = berth_registry::storage::from_config(&base.config.storage)
            .await
            .expect("storage opens");
        let store = Arc::new(FaultyStore::new(inner));
        let metrics = Arc::new(berth_registry::metrics::Metrics::new().expect("metrics"));
        let registry = berth_registry::service::Registry::new(
            store.clone(),
            base.config.limits.clone(),
            metrics.clone(),
        );
        let state = berth_registry::api::AppState::new(registry, metrics, None);
        let app = berth_registry::api::app(state);
        (Self { app, ..base }, store)
    }

    async fn open(dir: Arc<TempDir>, config: Config) -> Self {
        let state = berth_registry::server::build_state(&config)
            .await
            .expect("state builds");
        let app = berth_registry::api::app(state);
        Self { dir, config, app }
    }

    /// A brand-new state and app over the same directory, as after a
    /// process restart (or as another replica would see it).
    pub async fn restarted(&self) -> Self {
        Self::open(self.dir.clone(), self.config.clone()).await
    }

    /// Every stored object whose key starts with `prefix` (`blobs`,
    /// `uploads`, ...), through the storage driver itself; for the
    /// filesystem driver this includes its temporary files (`.berth/tmp`).
    pub async fn files_under(&self, prefix: &str) -> Vec<String> {
        let store = berth_registry::storage::from_config(&self.config.storage)
            .await
            .expect("storage opens");
        let page = store
            .list(&format!("{prefix}/"), None, 100_000)
            .await
            .expect("storage lists");
        page.keys.iter().map(|k| k.to_string()).collect()
    }

    /// Sends a request. A non-empty body gets a `Content-Length` unless the
    /// headers already give one or a `Transfer-Encoding`, as HTTP/1.1 clients
    /// do.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let body: Bytes = body.into();
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let framed = headers.iter().any(|(name, _)| {
            name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("transfer-encoding")
        });
        if !body.is_empty() && !framed {
            request = request.header(header::CONTENT_LENGTH, body.len());
        }
        self.request(request.body(Body::from(body)).expect("a valid request"))
            .await
    }

    /// Sends a request exactly as built.
    pub async fn request(&self, request: Request<Body>) -> Reply {
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("a readable body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn head(&self, path: &str) -> Reply {
        self.send(Method::HEAD, path, &[], Bytes::new()).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, &[], Bytes::new()).await
    }

    /// Starts an upload session; returns its Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let reply = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Bytes::new(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply}");
        reply.location().to_string()
    }

    /// Pushes `data` monolithically (POST with `?digest=`); returns its
    /// sha256 digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let reply = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                &[("content-type", "application/octet-stream")],
                Bytes::copy_from_slice(data),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
        digest
    }

    /// PUTs a manifest with `media_type` as its Content-Type.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Reply {
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", media_type)],
            Bytes::copy_from_slice(body),
        )
        .await
    }

    /// Pushes a config and one layer (`seed` makes them unique) and an OCI
    /// image manifest naming them under `reference`; returns the manifest's
    /// digest and body.
    pub async fn push_image(&self, repo: &str, reference: &str, seed: &str) -> (String, Vec<u8>) {
        let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#);
        let layer = format!("layer of {seed}");
        self.push_blob(repo, config.as_bytes()).await;
        self.push_blob(repo, layer.as_bytes()).await;
        let body = ManifestBuilder::oci_image()
            .config(descriptor(OCI_CONFIG, config.as_bytes()))
            .layer(descriptor(OCI_LAYER, layer.as_bytes()))
            .build();
        let reply = self
            .put_manifest(repo, reference, OCI_MANIFEST, &body)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
        (sha256(&body), body)
    }
}

/// A descriptor of `data` as `media_type`.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha256(data), "size": data.len() })
}

/// Builds manifest JSON; every field is optional so that tests can also
/// build invalid manifests.
#[derive(Debug, Clone, Default)]
pub struct ManifestBuilder {
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Value>,
    layers: Option<Vec<Value>>,
    manifests: Option<Vec<Value>>,
    subject: Option<Value>,
    annotations: Option<Value>,
}

impl ManifestBuilder {
    fn typed(media_type: &str) -> Self {
        Self {
            media_type: Some(media_type.to_string()),
            ..Self::default()
        }
    }

    /// An OCI image manifest with no layers yet.
    pub fn oci_image() -> Self {
        Self {
            layers: Some(Vec::new()),
            ..Self::typed(OCI_MANIFEST)
        }
    }

    /// A Docker schema2 image manifest with no layers yet.
    pub fn docker_image() -> Self {
        Self {
            layers: Some(Vec::new()),
            ..Self::typed(DOCKER_MANIFEST)
        }
    }

    /// An OCI index with no children yet.
    pub fn oci_index() -> Self {
        Self {
            manifests: Some(Vec::new()),
            ..Self::typed(OCI_INDEX)
        }
    }

    /// A Docker manifest list with no children yet.
    pub fn docker_list() -> Self {
        Self {
            manifests: Some(Vec::new()),
            ..Self::typed(DOCKER_LIST)
        }
    }

    pub fn config(mut self, descriptor: Value) -> Self {
        self.config = Some(descriptor);
        self
    }

    pub fn layer(mut self, descriptor: Value) -> Self {
        self.layers.get_or_insert_with(Vec::new).push(descriptor);
        self
    }

    pub fn manifest(mut self, descriptor: Value) -> Self {
        self.manifests.get_or_insert_with(Vec::new).push(descriptor);
        self
    }

    pub fn subject(mut self, descriptor: Value) -> Self {
        self.subject = Some(descriptor);
        self
    }

    pub fn artifact_type(mut self, artifact_type: &str) -> Self {
        self.artifact_type = Some(artifact_type.to_string());
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        let annotations = self.annotations.get_or_insert_with(|| json!({}));
        annotations[key] = json!(value);
        self
    }

    /// The manifest's bytes.
    pub fn build(self) -> Vec<u8> {
        let mut manifest = json!({ "schemaVersion": 2 });
        let fields = [
            ("mediaType", self.media_type.map(Value::from)),
            ("artifactType", self.artifact_type.map(Value::from)),
            ("config", self.config),
            ("layers", self.layers.map(Value::from)),
            ("manifests", self.manifests.map(Value::from)),
            ("subject", self.subject),
            ("annotations", self.annotations),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                manifest[name] = value;
            }
        }
        serde_json::to_vec(&manifest).expect("JSON serialises")
    }
}
