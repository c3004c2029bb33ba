//! The registry configuration a Registry runs with, built as the registry's
//! own [`berth_registry::config::Config`] (so the operator can only render
//! what the registry accepts) and validated by the registry's own rules.
//!
//! SyncPolicies: the registry's `Config` has no sync section yet, and it
//! denies unknown fields, so upstreams go into a second key of the same
//! ConfigMap (`sync.yaml`, typed by [`SyncConfig`] below). When the registry
//! gains its sync configuration, [`SyncConfig`] moves there and this module
//! renders it as part of `Config`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_registry::config::{
    Config, FilesystemConfig, LimitsConfig, LogConfig, LogFormat, S3Config, StorageConfig,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CONTAINER_PORT, RenderError, owned_meta};
use crate::crd::registry::S3StorageSpec;
use crate::crd::{Registry, SyncPolicy};

/// Where the pods mount the ConfigMap.
pub const CONFIG_DIR: &str = "/etc/berth";
/// The registry config's key in the ConfigMap (and file under [`CONFIG_DIR`]).
pub const CONFIG_KEY: &str = "config.yaml";
/// The sync config's key in the ConfigMap.
pub const SYNC_KEY: &str = "sync.yaml";
/// Where the filesystem driver keeps content (an emptyDir or the PVC).
pub const DATA_DIR: &str = "/var/lib/berth";

/// Upstreams to mirror, one per SyncPolicy, sorted by policy name so the
/// rendering (and its checksum) is stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SyncConfig {
    pub upstreams: Vec<UpstreamConfig>,
}

/// One upstream, from one SyncPolicy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamConfig {
    /// The SyncPolicy's name.
    pub name: String,
    pub url: String,
    pub pull_through: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_prefix: Option<String>,
    pub tls_verify: bool,
    pub concurrency: u32,
    /// Name of the Secret with `username`/`password`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// The rendered files and their checksum.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedConfig {
    pub config: Config,
    pub sync: SyncConfig,
    /// The ConfigMap's data, exactly as applied.
    pub data: BTreeMap<String, String>,
    /// Hex SHA-256 over the data; changes whenever a file changes.
    pub checksum: String,
}

/// Renders and validates the registry's configuration.
pub fn render(registry: &Registry, policies: &[SyncPolicy]) -> Result<RenderedConfig, RenderError> {
    let config = registry_config(registry)?;
    config
        .validate()
        .map_err(|err| RenderError::InvalidConfig(err.to_string()))?;
    let sync = sync_config(registry, policies);
    let data = BTreeMap::from([
        (CONFIG_KEY.to_string(), to_yaml(&config)?),
        (SYNC_KEY.to_string(), to_yaml(&sync)?),
    ]);
    let checksum = checksum(&data);
    Ok(RenderedConfig {
        config,
        sync,
        data,
        checksum,
    })
}

/// The ConfigMap named like the Registry.
pub fn config_map(
    registry: &Registry,
    rendered: &RenderedConfig,
) -> Result<ConfigMap, RenderError> {
    Ok(ConfigMap {
        metadata: owned_meta(registry, registry.name_any())?,
        data: Some(rendered.data.clone()),
        ..ConfigMap::default()
    })
}

fn registry_config(registry: &Registry) -> Result<Config, RenderError> {
    let spec = &registry.spec;
    let defaults = Config::default();
    Ok(Config {
        listen: format!("0.0.0.0:{CONTAINER_PORT}"),
        storage: storage(spec.storage.s3.as_ref())?,
        limits: LimitsConfig {
            manifest_max_bytes: spec
                .manifest_max_bytes
                .unwrap_or(defaults.limits.manifest_max_bytes),
        },
        log: LogConfig {
            format: spec.log.format.unwrap_or(LogFormat::Json),
            level: spec.log.level.clone().unwrap_or(defaults.log.level),
        },
        ..defaults
    })
}

/// S3 settings go through serde so that every field we do not set keeps
/// the registry's own named default (defined once, in the registry).
/// Credentials are not in the file: the pods get them as the AWS
/// environment variables from the Secret, so no secret is in a ConfigMap.
fn storage(s3: Option<&S3StorageSpec>) -> Result<StorageConfig, RenderError> {
    let Some(s3) = s3 else {
        return Ok(StorageConfig::Filesystem(FilesystemConfig {
            root: PathBuf::from(DATA_DIR),
        }));
    };
    let mut fields = serde_json::Map::new();
    fields.insert("bucket".into(), s3.bucket.clone().into());
    if let Some(prefix) = &s3.prefix {
        fields.insert("prefix".into(), prefix.clone().into());
    }
    if let Some(region) = &s3.region {
        fields.insert("region".into(), region.clone().into());
    }
    if let Some(endpoint) = &s3.endpoint {
        fields.insert("endpoint".into(), endpoint.clone().into());
    }
    fields.insert("forcePathStyle".into(), s3.force_path_style.into());
    let config: S3Config = serde_json::from_value(fields.into())
        .map_err(|err| RenderError::InvalidConfig(format!("storage.s3: {err}")))?;
    Ok(StorageConfig::S3(Box::new(config)))
}

fn sync_config(registry: &Registry, policies: &[SyncPolicy]) -> SyncConfig {
    let name = registry.name_any();
    let mut upstreams: Vec<UpstreamConfig> = policies
        .iter()
        .filter(|policy| policy.spec.registry == name && policy.namespace() == registry.namespace())
        .map(upstream)
        .collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    SyncConfig { upstreams }
}

fn upstream(policy: &SyncPolicy) -> UpstreamConfig {
    let spec = &policy.spec;
    UpstreamConfig {
        name: policy.name_any(),
        url: spec.upstream.url.clone(),
        pull_through: spec.pull_through,
        poll_interval: spec.poll_interval.clone(),
        repositories: spec.repositories.clone(),
        tag_regex: spec.tag_regex.clone(),
        semver: spec.semver.clone(),
        destination_prefix: spec.destination_prefix.clone(),
        tls_verify: spec.upstream.tls_verify,
        concurrency: spec.concurrency,
        credentials_secret: spec.upstream.credentials_secret.clone(),
    }
}

fn to_yaml<T: Serialize>(value: &T) -> Result<String, RenderError> {
    serde_yaml_ng::to_string(value).map_err(|err| RenderError::InvalidConfig(err.to_string()))
}

fn checksum(data: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::{registry, s3_registry, sync_policy};

    #[test]
    fn filesystem_config_listens_on_all_interfaces_and_parses_back() {
        let rendered = render(&registry(), &[]).unwrap();
        assert_eq!(rendered.config.listen, "0.0.0.0:5000");
        let text = &rendered.data[CONFIG_KEY];
        let parsed: Config = serde_yaml_ng::from_str(text).unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed, rendered.config);
        assert!(
            matches!(parsed.storage, StorageConfig::Filesystem(ref fs) if fs.root.as_path() == std::path::Path::new(DATA_DIR))
        );
        assert_eq!(parsed.log.format, LogFormat::Json);
    }

    #[test]
    fn s3_config_keeps_registry_defaults_and_has_no_secrets() {
        let rendered = render(&s3_registry(3), &[]).unwrap();
        let StorageConfig::S3(s3) = &rendered.config.storage else {
            panic!("expected s3 storage");
        };
        assert_eq!(s3.bucket, "berth");
        assert_eq!(s3.endpoint.as_deref(), Some("http://minio:9000"));
        assert!(s3.force_path_style);
        assert_eq!(s3.region, "us-east-1", "the registry's default region");
        assert!(s3.access_key_id.is_none() && s3.secret_access_key.is_none());
        assert!(rendered.data[CONFIG_KEY].contains("secretAccessKey: null"));
    }

    #[test]
    fn invalid_s3_prefix_is_a_render_error_naming_the_field() {
        let mut registry = s3_registry(1);
        if let Some(s3) = registry.spec.storage.s3.as_mut() {
            s3.prefix = Some("../escape".into());
        }
        let err = render(&registry, &[]).unwrap_err();
        assert!(err.to_string().contains("storage.prefix"), "{err}");
    }

    #[test]
    fn sync_policies_of_this_registry_are_folded_in_sorted() {
        let policies = [
            sync_policy("zeta", "demo"),
            sync_policy("alpha", "demo"),
            sync_policy("other", "someone-else"),
        ];
        let rendered = render(&registry(), &policies).unwrap();
        let names: Vec<_> = rendered
            .sync
            .upstreams
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert!(rendered.data[SYNC_KEY].contains("url: https://upstream.example"));
    }

    #[test]
    fn checksum_changes_with_config_and_only_then() {
        let base = render(&registry(), &[]).unwrap().checksum;
        assert_eq!(base, render(&registry(), &[]).unwrap().checksum);
        let mut changed = registry();
        changed.spec.log.level = Some("debug".into());
        assert_ne!(base, render(&changed, &[]).unwrap().checksum);
        let with_policy = render(&registry(), &[sync_policy("p", "demo")]).unwrap();
        assert_ne!(base, with_policy.checksum);
    }
}
