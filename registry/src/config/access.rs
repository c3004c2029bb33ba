//! Who may talk to the registry and how: TLS for the listener and htpasswd
//! basic auth. Both are off unless configured; both read their secrets from
//! files so that a mounted Kubernetes Secret can be rotated without the
//! secret ever passing through the configuration itself.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// TLS for the HTTP listener (PEM files, e.g. a `kubernetes.io/tls` Secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        non_empty("tls.certFile", &self.cert_file)?;
        non_empty("tls.keyFile", &self.key_file)
    }
}

/// Authentication of clients. Without it every request is anonymous and
/// allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// Realm named in `WWW-Authenticate` challenges.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// Users and bcrypt password hashes in Apache htpasswd format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd: Option<HtpasswdConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            realm: default_realm(),
            htpasswd: None,
        }
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.realm.is_empty() || self.realm.contains('"') {
            return Err(ConfigError::Invalid {
                field: "auth.realm".into(),
                message: "must be non-empty and must not contain '\"'".into(),
            });
        }
        match &self.htpasswd {
            Some(h) => non_empty("auth.htpasswd.path", &h.path),
            None => Err(ConfigError::Invalid {
                field: "auth".into(),
                message: "names no method; set auth.htpasswd.path or remove auth".into(),
            }),
        }
    }
}

/// An htpasswd file: `user:$2y$...` lines, bcrypt only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HtpasswdConfig {
    pub path: PathBuf,
}

fn default_realm() -> String {
    "berth".into()
}

fn non_empty(field: &str, path: &std::path::Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::Invalid {
            field: field.into(),
            message: "must not be empty".into(),
        });
    }
    Ok(())
}
