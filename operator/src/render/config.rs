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

use std::time::Duration;

use berth_registry::config::{
    AuthConfig, Config, FilesystemConfig, GcConfig, HtpasswdConfig, LimitsConfig, LogConfig,
    LogFormat, RetentionPolicy, S3Config, StorageConfig, TlsConfig, UploadsConfig,
};
use humantime_serde::re::humantime;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CONTAINER_PORT, RenderError, SecretVersions, owned_meta};
use crate::crd::registry::{AuthSpec, GcSpec, RetentionSpec, S3StorageSpec, UploadsSpec};
use crate::crd::{Registry, SyncPolicy};

/// Where the pods mount the ConfigMap.
pub const CONFIG_DIR: &str = "/etc/berth/config";
/// Where the pods mount the TLS Secret (`spec.tls`).
pub const TLS_DIR: &str = "/etc/berth/tls";
/// File names of the certificate chain and key under [`TLS_DIR`].
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";
/// Where the pods mount the htpasswd Secret (`spec.auth`).
pub const AUTH_DIR: &str = "/etc/berth/auth";
/// File name of the htpasswd file under [`AUTH_DIR`].
pub const HTPASSWD_FILE: &str = "htpasswd";
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
    /// Hex SHA-256 over the data and the referenced Secrets'
    /// resourceVersions; changes whenever a file or a Secret changes.
    pub checksum: String,
}

/// Renders and validates the registry's configuration.
pub fn render(
    registry: &Registry,
    policies: &[SyncPolicy],
    secret_versions: &SecretVersions,
) -> Result<RenderedConfig, RenderError> {
    let config = registry_config(registry)?;
    config
        .validate()
        .map_err(|err| RenderError::InvalidConfig(err.to_string()))?;
    let sync = sync_config(registry, policies);
    let data = BTreeMap::from([
        (CONFIG_KEY.to_string(), to_yaml(&config)?),
        (SYNC_KEY.to_string(), to_yaml(&sync)?),
    ]);
    let checksum = checksum(&data, secret_versions);
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
        tls: spec.tls.as_ref().map(|_| TlsConfig {
            cert_file: PathBuf::from(TLS_DIR).join(TLS_CERT_FILE),
            key_file: PathBuf::from(TLS_DIR).join(TLS_KEY_FILE),
        }),
        auth: spec.auth.as_ref().map(auth),
        gc: gc(&spec.gc)?,
        uploads: uploads(&spec.uploads)?,
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

/// htpasswd from the mounted Secret; the realm defaults in the registry.
fn auth(spec: &AuthSpec) -> AuthConfig {
    AuthConfig {
        realm: spec.realm.clone().unwrap_or(AuthConfig::default().realm),
        htpasswd: Some(HtpasswdConfig {
            path: PathBuf::from(AUTH_DIR).join(HTPASSWD_FILE),
        }),
    }
}

/// `spec.gc`, field by field over the registry's defaults.
fn gc(spec: &GcSpec) -> Result<GcConfig, RenderError> {
    let defaults = GcConfig::default();
    Ok(GcConfig {
        enabled: spec.enabled.unwrap_or(defaults.enabled),
        interval: duration_or(
            "spec.gc.interval",
            spec.interval.as_deref(),
            defaults.interval,
        )?,
        delay: duration_or("spec.gc.delay", spec.delay.as_deref(), defaults.delay)?,
        dry_run: spec.dry_run.unwrap_or(defaults.dry_run),
        retention: spec
            .retention
            .iter()
            .enumerate()
            .map(|(i, policy)| retention(i, policy))
            .collect::<Result<_, _>>()?,
    })
}

fn retention(i: usize, spec: &RetentionSpec) -> Result<RetentionPolicy, RenderError> {
    let field = |name: &str| format!("spec.gc.retention[{i}].{name}");
    Ok(RetentionPolicy {
        repositories: spec.repositories.clone(),
        keep_tags: spec.keep_tags.clone(),
        keep_last: spec.keep_last,
        keep_within: optional_duration(&field("keepWithin"), spec.keep_within.as_deref())?,
        untagged_after: optional_duration(&field("untaggedAfter"), spec.untagged_after.as_deref())?,
    })
}

fn uploads(spec: &UploadsSpec) -> Result<UploadsConfig, RenderError> {
    let defaults = UploadsConfig::default();
    Ok(UploadsConfig {
        max_age: duration_or(
            "spec.uploads.maxAge",
            spec.max_age.as_deref(),
            defaults.max_age,
        )?,
    })
}

fn duration_or(
    field: &str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, RenderError> {
    Ok(optional_duration(field, text)?.unwrap_or(default))
}

/// Parses a duration the way the registry does (humantime), naming the
/// spec field when it cannot (the CRD's pattern lets few such through).
fn optional_duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, RenderError> {
    text.map(|text| {
        humantime::parse_duration(text).map_err(|err| {
            RenderError::InvalidConfig(format!("{field}: {text:?} is not a duration: {err}"))
        })
    })
    .transpose()
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

/// SHA-256 over the ConfigMap's data and the referenced Secrets'
/// resourceVersions (why versions and not contents: see
/// [`super::secrets`]), each entry length-delimited by NUL bytes.
pub fn checksum(data: &BTreeMap<String, String>, secret_versions: &SecretVersions) -> String {
    let mut hasher = Sha256::new();
    let secrets = secret_versions
        .iter()
        .map(|(name, version)| (format!("secret/{name}"), version));
    for (key, value) in data.iter().map(|(k, v)| (k.clone(), v)).chain(secrets) {
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
    use crate::crd::registry::GcSpec;
    use crate::render::fixtures::{registry, s3_registry, secured, sync_policy};

    fn render(registry: &Registry, policies: &[SyncPolicy]) -> Result<RenderedConfig, RenderError> {
        super::render(registry, policies, &SecretVersions::new())
    }

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
        assert!(!rendered.data[CONFIG_KEY].contains("secretAccessKey"));
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

    #[test]
    fn a_rotated_secret_changes_the_checksum() {
        let r = secured(registry());
        let versions = |v: &str| SecretVersions::from([("demo-tls".to_string(), v.to_string())]);
        let first = super::render(&r, &[], &versions("1")).unwrap();
        let same = super::render(&r, &[], &versions("1")).unwrap();
        let rotated = super::render(&r, &[], &versions("2")).unwrap();
        assert_eq!(first.checksum, same.checksum);
        assert_ne!(first.checksum, rotated.checksum);
        assert_eq!(
            first.data, rotated.data,
            "the files themselves do not change"
        );
    }

    #[test]
    fn tls_and_htpasswd_point_at_the_mounted_secrets() {
        let mut r = secured(registry());
        let rendered = render(&r, &[]).unwrap();
        let tls = rendered.config.tls.as_ref().unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("/etc/berth/tls/tls.crt"));
        assert_eq!(tls.key_file, PathBuf::from("/etc/berth/tls/tls.key"));
        let auth = rendered.config.auth.as_ref().unwrap();
        assert_eq!(auth.realm, "berth", "the registry's default realm");
        assert_eq!(
            auth.htpasswd.as_ref().unwrap().path,
            PathBuf::from("/etc/berth/auth/htpasswd")
        );
        let parsed: Config = serde_yaml_ng::from_str(&rendered.data[CONFIG_KEY]).unwrap();
        assert_eq!(parsed, rendered.config);
        if let Some(auth) = r.spec.auth.as_mut() {
            auth.realm = Some("team".into());
        }
        let rendered = render(&r, &[]).unwrap();
        assert_eq!(rendered.config.auth.unwrap().realm, "team");
        assert!(render(&registry(), &[]).unwrap().config.tls.is_none());
    }

    #[test]
    fn gc_retention_and_uploads_render_over_the_registry_defaults() {
        let mut r = registry();
        r.spec.gc = serde_json::from_value(serde_json::json!({
            "enabled": true,
            "delay": "2h",
            "retention": [{
                "repositories": "team/*",
                "keepTags": ["^v[0-9]+"],
                "keepLast": 10,
                "keepWithin": "720h",
                "untaggedAfter": "1d"
            }]
        }))
        .unwrap();
        r.spec.uploads.max_age = Some("12h".into());
        let rendered = render(&r, &[]).unwrap();
        let gc = &rendered.config.gc;
        let defaults = GcConfig::default();
        assert!(gc.enabled);
        assert_eq!(
            gc.interval, defaults.interval,
            "unset: the registry's default"
        );
        assert_eq!(gc.delay, Duration::from_secs(7200));
        assert_eq!(gc.dry_run, defaults.dry_run);
        let policy = &gc.retention[0];
        assert_eq!(policy.repositories, "team/*");
        assert_eq!(policy.keep_tags, ["^v[0-9]+"]);
        assert_eq!(policy.keep_last, Some(10));
        assert_eq!(policy.keep_within, Some(Duration::from_secs(720 * 3600)));
        assert_eq!(policy.untagged_after, Some(Duration::from_secs(86400)));
        assert_eq!(
            rendered.config.uploads.max_age,
            Duration::from_secs(12 * 3600)
        );
        let parsed: Config = serde_yaml_ng::from_str(&rendered.data[CONFIG_KEY]).unwrap();
        assert_eq!(parsed, rendered.config);
        let plain = render(&registry(), &[]).unwrap();
        assert_eq!(plain.config.gc, GcConfig::default());
        assert_eq!(plain.config.uploads, UploadsConfig::default());
    }

    #[test]
    fn gc_errors_name_the_field() {
        let mut r = registry();
        r.spec.gc = GcSpec {
            interval: Some("soon".into()),
            ..GcSpec::default()
        };
        let err = render(&r, &[]).unwrap_err().to_string();
        assert!(err.contains("spec.gc.interval"), "{err}");
        r.spec.gc = serde_json::from_value(serde_json::json!({
            "retention": [{"repositories": "a/*", "keepTags": ["(unclosed"]}]
        }))
        .unwrap();
        let err = render(&r, &[]).unwrap_err().to_string();
        assert!(err.contains("gc.retention[0].keepTags[0]"), "{err}");
    }
}
