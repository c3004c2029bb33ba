//! A MinIO server (the real S3 of the e2e tier) on a free loopback port
//! over its own directory, stopped when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::{free_port, is_live, start_on_free_port, tool};

pub const ACCESS_KEY: &str = "berth-admin";
pub const SECRET_KEY: &str = "berth-secret-key";

/// A running MinIO.
#[derive(Debug)]
pub struct Minio {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
    /// Serving HTTPS with the certificate in this directory.
    certs: Option<PathBuf>,
}

impl Minio {
    /// Starts MinIO and waits until it is live.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (child, addr) = spawn(dir.path(), None);
        Self {
            addr,
            child,
            dir,
            certs: None,
        }
    }

    /// Stops MinIO and starts it again on the same data (buckets
    /// included), now serving HTTPS with `certs/public.crt` and
    /// `certs/private.key`; the helpers of this type speak plain HTTP, so
    /// create buckets before.
    pub fn restart_with_tls(&mut self, certs: &Path) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr) = spawn(self.dir.path(), Some(certs));
        self.child = child;
        self.addr = addr;
        self.certs = Some(certs.to_path_buf());
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The registry's S3 settings as environment variables.
    pub fn registry_env(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        [
            ("BERTH_STORAGE__DRIVER", "s3"),
            ("BERTH_STORAGE__BUCKET", bucket),
            ("BERTH_STORAGE__PREFIX", prefix),
            ("BERTH_STORAGE__ENDPOINT", &self.endpoint()),
            ("BERTH_STORAGE__FORCE_PATH_STYLE", "true"),
            ("BERTH_STORAGE__ACCESS_KEY_ID", ACCESS_KEY),
            ("BERTH_STORAGE__SECRET_ACCESS_KEY", SECRET_KEY),
            ("BERTH_STORAGE__PART_SIZE", "5242880"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The driver configuration for in-process use (the storage suite).
    pub fn s3_config(&self, bucket: &str, prefix: &str) -> berth_registry::config::S3Config {
        serde_json::from_value(serde_json::json!({
            "bucket": bucket,
            "prefix": prefix,
            "endpoint": self.endpoint(),
            "forcePathStyle": true,
            "accessKeyId": ACCESS_KEY,
            "secretAccessKey": SECRET_KEY,
            "partSize": 5 * 1024 * 1024,
        }))
        .expect("valid S3 config")
    }

    fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "e2e"))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) {
        let client = self.client();
        block_on(async move { client.create_bucket().bucket(bucket).send().await })
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
    }

    /// Every key in the bucket below `prefix`.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let client = self.client();
        block_on(async move {
            let mut keys = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.unwrap_or_else(|e| panic!("list {bucket}: {e:?}"));
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
            }
            keys
        })
    }
}

impl Drop for Minio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts MinIO over `dir` on a free port: plain HTTP, or HTTPS with the
/// certificate in `certs` (then ready once it accepts connections).
fn spawn(dir: &Path, certs: Option<&Path>) -> (Child, SocketAddr) {
    start_on_free_port(
        "minio",
        |addr| {
            let mut command = Command::new(tool("minio"));
            command.arg("server").arg(dir).args([
                "--address",
                &addr.to_string(),
                "--console-address",
                &free_port().to_string(),
                "--quiet",
            ]);
            if let Some(certs) = certs {
                command.arg("--certs-dir").arg(certs);
            }
            command
                .env("MINIO_ROOT_USER", ACCESS_KEY)
                .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
                .env("MINIO_BROWSER", "off")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn minio")
        },
        |addr| match certs {
            Some(_) => TcpStream::connect(addr).is_ok(),
            None => is_live(addr, "/minio/health/live"),
        },
    )
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}
