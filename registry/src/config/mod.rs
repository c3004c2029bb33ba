//! The registry's configuration: one validated [`Config`], read once at
//! start-up from a YAML file, environment variables and flags (in rising
//! precedence), and never changed afterwards.
//!
//! This type is the single definition of the configuration schema: the
//! operator renders exactly this type into the ConfigMap it mounts, which is
//! why it derives `JsonSchema` and serialises in camelCase.

mod access;
mod gc;
mod load;
pub mod s3;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use access::{AuthConfig, HtpasswdConfig, TlsConfig};
pub use gc::{GcConfig, RetentionPolicy, UploadsConfig};
pub use load::{ConfigError, Overrides, load};
pub use s3::{RedirectConfig, S3Config};

/// Everything the registry can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Address and port the HTTP API listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where content lives.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Limits on what clients may send.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// How long a graceful shutdown waits for in-flight requests.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send a request's headers, or to finish
    /// a TLS handshake; also how long an idle HTTP/1.1 keep-alive connection
    /// stays open, and how long HTTP/2 waits before and after a PING.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub header_timeout: Duration,
    /// TLS on the listener; plain HTTP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Client authentication; anonymous access when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Garbage collection and retention.
    #[serde(default)]
    pub gc: GcConfig,
    /// Abandoned uploads.
    #[serde(default)]
    pub uploads: UploadsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            shutdown_timeout: default_shutdown_timeout(),
            header_timeout: default_header_timeout(),
            tls: None,
            auth: None,
            gc: GcConfig::default(),
            uploads: UploadsConfig::default(),
        }
    }
}

/// Fields that hold secrets, as dotted paths: `--print-config` shows them as
/// `<redacted>` and configuration errors never quote their values.
pub const SECRET_FIELDS: &[&str] = &["storage.secretAccessKey"];

impl Config {
    /// The configuration as YAML with each field of [`SECRET_FIELDS`] that is
    /// set shown as `<redacted>`: what `--print-config` prints. (The plain
    /// `Serialize` stays complete: the operator renders configs with it.)
    pub fn to_redacted_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        let mut value = serde_yaml_ng::to_value(self)?;
        for path in SECRET_FIELDS {
            let mut node = Some(&mut value);
            for key in path.split('.') {
                node = node.and_then(|n| n.get_mut(key));
            }
            if let Some(secret) = node.filter(|n| !n.is_null()) {
                *secret = serde_yaml_ng::Value::String("<redacted>".into());
            }
        }
        serde_yaml_ng::to_string(&value)
    }

    /// The top-level keys, as environment variables may name them. Kept in
    /// step with the struct by a unit test against the JSON schema.
    pub const KEYS: &'static [&'static str] = &[
        "listen",
        "storage",
        "limits",
        "log",
        "shutdownTimeout",
        "headerTimeout",
        "tls",
        "auth",
        "gc",
        "uploads",
    ];

    /// The listen address, parsed (validated at load time).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            field: "listen".into(),
            message: format!(
                "{:?} is not an address:port such as 127.0.0.1:5000",
                self.listen
            ),
        })
    }

    /// Checks rules the types alone cannot express; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let max = self.limits.manifest_max_bytes;
        if max == 0 || max > 64 * 1024 * 1024 {
            return Err(ConfigError::Invalid {
                field: "limits.manifestMaxBytes".into(),
                message: format!("{max} is outside 1..=67108864"),
            });
        }
        if self.header_timeout < Duration::from_millis(1)
            || self.header_timeout > MAX_HEADER_TIMEOUT
        {
            return Err(ConfigError::Invalid {
                field: "headerTimeout".into(),
                message: format!("{:?} is outside 1ms..=1h", self.header_timeout),
            });
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        if let Some(auth) = &self.auth {
            auth.validate()?;
        }
        self.gc.validate()?;
        match &self.storage {
            StorageConfig::Filesystem(fs) if fs.root.as_os_str().is_empty() => {
                Err(ConfigError::Invalid {
                    field: "storage.root".into(),
                    message: "must not be empty".into(),
                })
            }
            StorageConfig::Filesystem(_) => Ok(()),
            StorageConfig::S3(s3) => s3.validate(),
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:5000".into()
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

/// 60 s like nginx's `client_header_timeout`; clients' pools (Go's default
/// idle timeout is 90 s) drop connections closed under them and open new
/// ones.
fn default_header_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Longer deadlines only let stalled clients hold connections longer.
const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(3600);

/// The storage driver and its settings, chosen by `driver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "driver", rename_all = "lowercase")]
pub enum StorageConfig {
    /// A local directory: the embedded default, for a single process.
    Filesystem(FilesystemConfig),
    /// An S3 bucket (AWS or any S3-compatible service): what several
    /// replicas share.
    S3(Box<S3Config>),
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self::Filesystem(FilesystemConfig {
            root: PathBuf::from("./berth-data"),
        })
    }
}

/// Settings of the filesystem driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilesystemConfig {
    /// Directory holding all content; created when missing.
    pub root: PathBuf,
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest manifest accepted, in bytes (the spec suggests at least 4 MiB).
    #[serde(default = "default_manifest_max_bytes")]
    pub manifest_max_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            manifest_max_bytes: default_manifest_max_bytes(),
        }
    }
}

fn default_manifest_max_bytes() -> u64 {
    4 * 1024 * 1024
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log pipelines.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `berth_registry=debug,info`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

/// Log line format.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
