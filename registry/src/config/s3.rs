//! Settings of the S3 storage driver.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// S3's smallest part (all parts of a multipart upload but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Shortest connect or read timeout: zero would fail every request.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Shortest life of a presigned URL that a client can still follow.
const MIN_REDIRECT_EXPIRY: Duration = Duration::from_secs(1);
/// Longest life of a presigned URL (SigV4's limit: one week).
const MAX_REDIRECT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where and how to reach the bucket. Credentials come from `accessKeyId`
/// and `secretAccessKey` (or the `*File` variants, for mounted Secrets), or
/// else from the standard AWS chain (environment, profile, web identity,
/// instance metadata).
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name; the bucket must exist.
    pub bucket: String,
    /// Key prefix inside the bucket, so several registries can share one.
    #[serde(default)]
    pub prefix: String,
    /// Region (any value works for most S3-compatible services).
    #[serde(default = "default_region")]
    pub region: String,
    /// Custom endpoint, e.g. `http://minio:9000`; AWS when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), as MinIO and Ceph want.
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// File holding the access key id (a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_file: Option<PathBuf>,
    /// File holding the secret access key (a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
    /// Size of the parts that large blobs are uploaded in (5 MiB to 5 GiB).
    /// Each upload holds up to `uploadConcurrency` parts in memory.
    #[serde(default = "default_part_size")]
    pub part_size: u64,
    /// Parts of one blob uploaded at once.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// Attempts per S3 request, with exponential backoff, for throttling
    /// (`SlowDown`, 503) and transient errors.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the first retry; it doubles (with jitter) per attempt.
    #[serde(default = "default_retry_initial_backoff", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub retry_initial_backoff: Duration,
    /// Time to open a connection: DNS, TCP and the TLS handshake.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
    /// Longest time from starting a request to its response's headers,
    /// sending its body (an upload part) included.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub read_timeout: Duration,
    /// Answer blob GETs with a redirect to a presigned S3 URL.
    #[serde(default)]
    pub redirect: RedirectConfig,
}

/// Presigned redirects of blob downloads, for clusters whose clients can
/// reach S3 themselves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedirectConfig {
    #[serde(default)]
    pub enabled: bool,
    /// How long a presigned URL stays valid.
    #[serde(default = "default_redirect_expiry", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub expiry: Duration,
}

impl Default for RedirectConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            expiry: default_redirect_expiry(),
        }
    }
}

impl std::fmt::Debug for S3Config {
    /// Written by hand so that the secret key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("access_key_id_file", &self.access_key_id_file)
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("part_size", &self.part_size)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("max_attempts", &self.max_attempts)
            .field("retry_initial_backoff", &self.retry_initial_backoff)
            .field("redirect", &self.redirect)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| {
            Err(ConfigError::Invalid {
                field: format!("storage.{field}"),
                message,
            })
        };
        if self.bucket.is_empty() {
            return invalid("bucket", "must not be empty".into());
        }
        if self.prefix.starts_with('/') || self.prefix.contains("..") {
            return invalid(
                "prefix",
                format!("{:?} must be relative, without `..`", self.prefix),
            );
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return invalid(
                "partSize",
                format!(
                    "{} is outside {MIN_PART_SIZE}..={MAX_PART_SIZE}",
                    self.part_size
                ),
            );
        }
        if !(1..=64).contains(&self.upload_concurrency) {
            return invalid(
                "uploadConcurrency",
                format!("{} is outside 1..=64", self.upload_concurrency),
            );
        }
        if self.max_attempts == 0 {
            return invalid("maxAttempts", "must be at least 1".into());
        }
        // What follows the SDK would take at start-up and then fail every
        // request with (every redirect, for `redirect.expiry`).
        if let Some(endpoint) = &self.endpoint {
            let uri = endpoint.parse::<http::Uri>().ok();
            let usable = uri.as_ref().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some_and(|host| !host.is_empty())
            });
            if !usable {
                return invalid(
                    "endpoint",
                    format!(
                        "{endpoint:?} is not an http:// or https:// URL such as http://minio:9000"
                    ),
                );
            }
        }
        for (field, timeout) in [
            ("connectTimeout", self.connect_timeout),
            ("readTimeout", self.read_timeout),
        ] {
            if timeout < MIN_TIMEOUT {
                return invalid(field, format!("{timeout:?} is below 1ms"));
            }
        }
        if !(MIN_REDIRECT_EXPIRY..=MAX_REDIRECT_EXPIRY).contains(&self.redirect.expiry) {
            return invalid(
                "redirect.expiry",
                format!(
                    "{:?} is outside 1s..=7days (S3 presigns URLs for a week at most)",
                    self.redirect.expiry
                ),
            );
        }
        if self.access_key_id.is_some() && self.access_key_id_file.is_some() {
            return invalid(
                "accessKeyIdFile",
                "give accessKeyId or accessKeyIdFile, not both".into(),
            );
        }
        if self.secret_access_key.is_some() && self.secret_access_key_file.is_some() {
            return invalid(
                "secretAccessKeyFile",
                "give secretAccessKey or secretAccessKeyFile, not both".into(),
            );
        }
        let has_id = self.access_key_id.is_some() || self.access_key_id_file.is_some();
        let has_secret = self.secret_access_key.is_some() || self.secret_access_key_file.is_some();
        if has_id != has_secret {
            return invalid(
                "secretAccessKey",
                "explicit credentials need both a key id and a secret".into(),
            );
        }
        Ok(())
    }

    /// The prefix as used in keys: empty, or ending in `/`.
    pub fn key_prefix(&self) -> String {
        let trimmed = self.prefix.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        }
    }
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_part_size() -> u64 {
    8 * 1024 * 1024
}

fn default_upload_concurrency() -> usize {
    2
}

fn default_max_attempts() -> u32 {
    5
}

fn default_retry_initial_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_redirect_expiry() -> Duration {
    Duration::from_secs(20 * 60)
}
