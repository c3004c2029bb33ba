//! Loading: YAML file, then `BERTH_*` environment variables, then flags,
//! merged as YAML values and deserialised once so that every error names the
//! field it is about.
//!
//! Environment naming: `BERTH_` followed by the field path, levels joined by
//! `__`, each level in SCREAMING_SNAKE_CASE: `storage.root` is
//! `BERTH_STORAGE__ROOT`, `limits.manifestMaxBytes` is
//! `BERTH_LIMITS__MANIFEST_MAX_BYTES`. A value is taken verbatim when the
//! schema says its field holds text (a secret key `12345678` or `#abc` stays
//! what it is) and read as a YAML scalar otherwise (numbers, booleans).
//! Variables whose first level is not a configuration key (such as
//! `BERTH_CONFIG`) are left alone.
//!
//! Errors about a field in [`SECRET_FIELDS`] never quote its value.

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};
use thiserror::Error;

use super::{Config, FilesystemConfig, LogFormat, S3Config, SECRET_FIELDS};

/// Errors in configuration; each names the file or the field at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("invalid configuration at `{field}`: {message}")]
    Invalid { field: String, message: String },
}

/// Values given as command-line flags; they win over file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub root: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}

/// Builds the configuration from an optional file, the given environment
/// variables and flag overrides.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &Overrides,
) -> Result<Config, ConfigError> {
    let mut root = match file {
        Some(path) => read_file(path)?,
        None => Mapping::new(),
    };
    // The schema says which variables are text. It is built only when a
    // BERTH_ variable is set: building it runs much code that a plain
    // start-up would otherwise page in (about 2 MiB more resident at idle).
    let mut schema = None;
    for (name, value) in env {
        if !name.starts_with("BERTH_") {
            continue;
        }
        let schema = schema.get_or_insert_with(|| schemars::schema_for!(Config));
        apply_env(&mut root, schema.as_value(), &name, &value);
    }
    apply_flags(&mut root, flags);
    default_storage_driver(&mut root);
    let storage = root.get("storage").cloned();
    let config: Config = serde_path_to_error::deserialize(Value::Mapping(root)).map_err(|err| {
        let field = err.path().to_string();
        if field == "storage"
            && let Some(precise) = storage.and_then(storage_error)
        {
            return precise;
        }
        invalid(field, err.into_inner().to_string())
    })?;
    config.validate()?;
    Ok(config)
}

/// A deserialisation error, its message withheld when the field is secret:
/// serde quotes the value it could not take ("invalid type: integer
/// `12345678`").
fn invalid(field: String, message: String) -> ConfigError {
    let message = if SECRET_FIELDS.contains(&field.as_str()) {
        "invalid value (not shown: the field holds a secret)".into()
    } else {
        message
    };
    ConfigError::Invalid { field, message }
}

/// The error inside the `storage` section, at its field. serde buffers an
/// internally tagged enum before it picks the variant, so the path of an
/// error inside it stops at `storage`; decoding the chosen driver's struct
/// on its own finds the field. `None` when that does not reproduce it.
fn storage_error(storage: Value) -> Option<ConfigError> {
    let Value::Mapping(mut section) = storage else {
        return None;
    };
    let driver = section.remove("driver")?;
    let section = Value::Mapping(section);
    let err = match driver.as_str()? {
        "filesystem" => serde_path_to_error::deserialize::<_, FilesystemConfig>(section).err()?,
        "s3" => serde_path_to_error::deserialize::<_, S3Config>(section).err()?,
        _ => return None,
    };
    let field = match err.path().to_string() {
        root if root == "." => "storage".to_string(),
        inner => format!("storage.{inner}"),
    };
    Some(invalid(field, err.into_inner().to_string()))
}

fn read_file(path: &Path) -> Result<Mapping, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Yaml {
        path: path.to_path_buf(),
        source,
    })?;
    match value {
        Value::Mapping(map) => Ok(map),
        Value::Null => Ok(Mapping::new()),
        _ => Err(ConfigError::Invalid {
            field: ".".into(),
            message: format!("{} must hold a YAML mapping", path.display()),
        }),
    }
}

fn apply_env(root: &mut Mapping, schema: &serde_json::Value, name: &str, value: &str) {
    let Some(rest) = name.strip_prefix("BERTH_") else {
        return;
    };
    let path: Vec<String> = rest.split("__").map(camel_case).collect();
    if !path
        .first()
        .is_some_and(|top| Config::KEYS.contains(&top.as_str()))
    {
        return;
    }
    let parsed = if takes_text(schema, &path) {
        Value::String(value.to_string())
    } else {
        serde_yaml_ng::from_str::<Value>(value)
            .ok()
            .filter(|v| !matches!(v, Value::Mapping(_) | Value::Sequence(_)))
            .unwrap_or_else(|| Value::String(value.to_string()))
    };
    set_path(root, &path, parsed);
}

/// Whether the field at `path` holds text, by the JSON schema of
/// [`Config`]. A path the schema does not know counts as text: the
/// deserialiser then names it as an unknown field, without its value.
fn takes_text(schema: &serde_json::Value, path: &[String]) -> bool {
    let mut nodes = vec![schema];
    for segment in path {
        nodes = nodes
            .into_iter()
            .flat_map(|node| alternatives(schema, node))
            .filter_map(|node| node.get("properties")?.get(segment))
            .collect();
    }
    let leaves: Vec<_> = nodes
        .into_iter()
        .flat_map(|node| alternatives(schema, node))
        .collect();
    leaves.is_empty() || leaves.into_iter().any(is_text)
}

/// `node` and every schema it refers to or combines (`$ref`, `allOf`,
/// `anyOf`, `oneOf`: options, tagged enums, boxed structs). The
/// configuration's types are not recursive, so neither is this walk's end.
fn alternatives<'a>(
    root: &'a serde_json::Value,
    node: &'a serde_json::Value,
) -> Vec<&'a serde_json::Value> {
    let mut out = vec![node];
    let target = node
        .get("$ref")
        .and_then(serde_json::Value::as_str)
        .and_then(|r| root.pointer(r.strip_prefix('#')?));
    if let Some(target) = target {
        out.extend(alternatives(root, target));
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        let subs = node.get(key).and_then(serde_json::Value::as_array);
        for sub in subs.into_iter().flatten() {
            out.extend(alternatives(root, sub));
        }
    }
    out
}

/// A schema of type `string` (alone or among others, as for options), or
/// an enumeration of strings.
fn is_text(leaf: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match leaf.get("type") {
        Some(J::String(kind)) => kind == "string",
        Some(J::Array(kinds)) => kinds.iter().any(|k| k == "string"),
        _ => {
            leaf.get("const").is_some_and(J::is_string)
                || leaf
                    .get("enum")
                    .and_then(J::as_array)
                    .is_some_and(|values| values.iter().any(J::is_string))
        }
    }
}

fn apply_flags(root: &mut Mapping, flags: &Overrides) {
    let set = |root: &mut Mapping, path: &[&str], value: Value| {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        set_path(root, &path, value);
    };
    if let Some(listen) = &flags.listen {
        set(root, &["listen"], Value::String(listen.clone()));
    }
    if let Some(dir) = &flags.root {
        set(
            root,
            &["storage", "driver"],
            Value::String("filesystem".into()),
        );
        set(
            root,
            &["storage", "root"],
            Value::String(dir.display().to_string()),
        );
    }
    if let Some(format) = flags.log_format {
        let name = if format == LogFormat::Json {
            "json"
        } else {
            "text"
        };
        set(root, &["log", "format"], Value::String(name.into()));
    }
    if let Some(level) = &flags.log_level {
        set(root, &["log", "level"], Value::String(level.clone()));
    }
}

/// `driver` may be left out when the filesystem driver is meant, so that
/// `BERTH_STORAGE__ROOT=/data` alone is enough.
fn default_storage_driver(root: &mut Mapping) {
    if let Some(Value::Mapping(storage)) = root.get_mut("storage") {
        storage
            .entry(Value::String("driver".into()))
            .or_insert_with(|| Value::String("filesystem".into()));
    }
}

fn set_path(map: &mut Mapping, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let key = Value::String(first.clone());
    if rest.is_empty() {
        map.insert(key, value);
        return;
    }
    let entry = map
        .entry(key)
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if !entry.is_mapping() {
        *entry = Value::Mapping(Mapping::new());
    }
    if let Value::Mapping(inner) = entry {
        set_path(inner, rest, value);
    }
}

/// `MANIFEST_MAX_BYTES` → `manifestMaxBytes`.
fn camel_case(upper_snake: &str) -> String {
    let mut out = String::with_capacity(upper_snake.len());
    for (i, word) in upper_snake.split('_').filter(|w| !w.is_empty()).enumerate() {
        let lower = word.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            let mut chars = lower.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageConfig;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() -> Result<(), ConfigError> {
        let config = load(None, Vec::new(), &Overrides::default())?;
        assert_eq!(config, Config::default());
        Ok(())
    }

    #[test]
    fn file_then_env_then_flags() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("berth.yaml");
        std::fs::write(
            &path,
            "listen: 0.0.0.0:1\nlimits:\n  manifestMaxBytes: 100\nlog:\n  level: debug\n",
        )?;
        let vars = env(&[
            ("BERTH_LISTEN", "0.0.0.0:2"),
            ("BERTH_LIMITS__MANIFEST_MAX_BYTES", "200"),
            ("BERTH_STORAGE__ROOT", "/from-env"),
            ("BERTH_CACHE", "/not/a/config/key"),
        ]);
        let flags = Overrides {
            listen: Some("0.0.0.0:3".into()),
            ..Overrides::default()
        };
        let config = load(Some(&path), vars, &flags)?;
        assert_eq!(config.listen, "0.0.0.0:3");
        assert_eq!(config.limits.manifest_max_bytes, 200);
        assert_eq!(config.log.level, "debug");
        match &config.storage {
            StorageConfig::Filesystem(fs) => assert_eq!(fs.root, PathBuf::from("/from-env")),
            other => panic!("expected filesystem storage, got {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn errors_name_the_field() {
        let vars = env(&[("BERTH_LIMITS__MANIFEST_MAX_BYTE", "1")]);
        let err = load(None, vars, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("limits.manifestMaxByte")),
            "{err:?}"
        );

        let vars = env(&[("BERTH_LISTEN", "nowhere")]);
        let err = load(None, vars, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("`listen`")),
            "{err:?}"
        );

        let vars = env(&[("BERTH_STORAGE__DRIVER", "tape")]);
        let err = load(None, vars, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("storage") && e.contains("tape")),
            "{err:?}"
        );
    }

    #[test]
    fn header_timeout_from_env_and_its_bounds() -> Result<(), ConfigError> {
        let config = load(
            None,
            env(&[("BERTH_HEADER_TIMEOUT", "1500ms")]),
            &Overrides::default(),
        )?;
        assert_eq!(config.header_timeout, Duration::from_millis(1500));
        for bad in ["0s", "2h"] {
            let err = load(
                None,
                env(&[("BERTH_HEADER_TIMEOUT", bad)]),
                &Overrides::default(),
            )
            .err()
            .map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("headerTimeout") && e.contains("1ms..=1h")),
                "{bad}: {err:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn keys_match_the_schema() -> Result<(), serde_json::Error> {
        let schema = serde_json::to_value(schemars::schema_for!(Config))?;
        let mut names: Vec<&str> = schema["properties"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        names.sort_unstable();
        let mut keys = Config::KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(names, keys);
        Ok(())
    }

    #[test]
    fn s3_from_env_and_its_errors() -> Result<(), ConfigError> {
        let vars = env(&[
            ("BERTH_STORAGE__DRIVER", "s3"),
            ("BERTH_STORAGE__BUCKET", "images"),
            ("BERTH_STORAGE__FORCE_PATH_STYLE", "true"),
            ("BERTH_STORAGE__SECRET_ACCESS_KEY", "hunter2"),
            ("BERTH_STORAGE__ACCESS_KEY_ID", "berth"),
        ]);
        let config = load(None, vars, &Overrides::default())?;
        match &config.storage {
            StorageConfig::S3(s3) => {
                assert_eq!(s3.bucket, "images");
                assert!(s3.force_path_style);
                assert!(
                    !format!("{s3:?}").contains("hunter2"),
                    "secrets never reach Debug"
                );
            }
            other => panic!("expected s3 storage, got {other:?}"),
        }
        let vars = env(&[
            ("BERTH_STORAGE__DRIVER", "s3"),
            ("BERTH_STORAGE__BUCKET", "b"),
            ("BERTH_STORAGE__PART_SIZE", "1024"),
        ]);
        let err = load(None, vars, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("storage.partSize")),
            "{err:?}"
        );
        let vars = env(&[("BERTH_STORAGE__DRIVER", "s3")]);
        let err = load(None, vars, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("bucket")),
            "{err:?}"
        );
        Ok(())
    }

    /// Regression: environment values were read as YAML, so a numeric
    /// secret key failed with the key in the error ("invalid type: integer
    /// `12345678`"), `#abc` became null and `0x1F` became 31.
    #[test]
    fn env_values_of_text_fields_are_verbatim() -> Result<(), ConfigError> {
        let vars = env(&[
            ("BERTH_STORAGE__DRIVER", "s3"),
            ("BERTH_STORAGE__BUCKET", "'quoted'"),
            ("BERTH_STORAGE__PREFIX", "0x1F"),
            ("BERTH_STORAGE__ACCESS_KEY_ID", "#abc"),
            ("BERTH_STORAGE__SECRET_ACCESS_KEY", "12345678"),
            ("BERTH_STORAGE__FORCE_PATH_STYLE", "true"),
            ("BERTH_STORAGE__PART_SIZE", "6291456"),
            ("BERTH_LOG__LEVEL", "null"),
        ]);
        let config = load(None, vars, &Overrides::default())?;
        let StorageConfig::S3(s3) = &config.storage else {
            panic!("expected s3 storage, got {:?}", config.storage);
        };
        assert_eq!(s3.bucket, "'quoted'");
        assert_eq!(s3.prefix, "0x1F");
        assert_eq!(s3.access_key_id.as_deref(), Some("#abc"));
        assert_eq!(s3.secret_access_key.as_deref(), Some("12345678"));
        assert!(s3.force_path_style);
        assert_eq!(s3.part_size, 6 * 1024 * 1024);
        assert_eq!(config.log.level, "null");
        Ok(())
    }

    /// Regression: an error inside `storage` named only `storage` and
    /// quoted the value, secret or not.
    #[test]
    fn storage_errors_name_the_field_and_never_quote_a_secret() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("berth.yaml");
        std::fs::write(
            &path,
            "storage:\n  driver: s3\n  bucket: b\n  accessKeyId: k\n  secretAccessKey: 12345678\n",
        )
        .expect("config file");
        let err = load(Some(&path), Vec::new(), &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("`storage.secretAccessKey`") && !e.contains("12345678")),
            "{err:?}"
        );

        let vars = env(&[
            ("BERTH_STORAGE__DRIVER", "s3"),
            ("BERTH_STORAGE__BUCKET", "b"),
            ("BERTH_STORAGE__PART_SIZE", "lots"),
        ]);
        let err = load(None, vars, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("`storage.partSize`") && e.contains("lots")),
            "{err:?}"
        );

        let vars = env(&[("BERTH_STORAGE__DRIVER", "s3")]);
        let err = load(None, vars, &Overrides::default())
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("`storage`") && e.contains("bucket")),
            "{err:?}"
        );
    }

    #[test]
    fn printed_config_redacts_secrets() -> Result<(), Box<dyn std::error::Error>> {
        let vars = env(&[
            ("BERTH_STORAGE__DRIVER", "s3"),
            ("BERTH_STORAGE__BUCKET", "images"),
            ("BERTH_STORAGE__ACCESS_KEY_ID", "berth"),
            ("BERTH_STORAGE__SECRET_ACCESS_KEY", "hunter2"),
        ]);
        let config = load(None, vars, &Overrides::default())?;
        let yaml = config.to_redacted_yaml()?;
        assert!(!yaml.contains("hunter2"), "{yaml}");
        assert!(yaml.contains("secretAccessKey: <redacted>"), "{yaml}");
        assert!(yaml.contains("accessKeyId: berth"), "{yaml}");
        // Without a secret there is nothing to redact, and nothing is added.
        let yaml = Config::default().to_redacted_yaml()?;
        assert!(!yaml.contains("redacted"), "{yaml}");
        Ok(())
    }

    /// Regression: S3 settings that pass start-up and then fail every
    /// request (a presigned URL valid beyond S3's one-week limit, a zero
    /// timeout, an endpoint without a scheme) are refused at load time,
    /// naming the field; the limits themselves are accepted.
    #[test]
    fn s3_settings_that_fail_every_request_are_refused() {
        let s3 = |extra: &str| format!("storage:\n  driver: s3\n  bucket: b\n{extra}");
        let load_yaml = |yaml: &str| {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("berth.yaml");
            std::fs::write(&path, yaml).expect("config file");
            load(Some(&path), Vec::new(), &Overrides::default()).map_err(|e| e.to_string())
        };
        for (extra, field) in [
            (
                "  redirect:\n    expiry: 7days 1s\n",
                "storage.redirect.expiry",
            ),
            ("  redirect:\n    expiry: 0s\n", "storage.redirect.expiry"),
            ("  readTimeout: 0s\n", "storage.readTimeout"),
            ("  connectTimeout: 0s\n", "storage.connectTimeout"),
            ("  endpoint: minio:9000\n", "storage.endpoint"),
            ("  endpoint: ftp://minio:9000\n", "storage.endpoint"),
            ("  endpoint: 'http://'\n", "storage.endpoint"),
        ] {
            let err = load_yaml(&s3(extra)).err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains(field)),
                "{extra}: {err:?}"
            );
        }
        for extra in [
            "  redirect:\n    enabled: true\n    expiry: 7days\n",
            "  readTimeout: 1ms\n  connectTimeout: 1ms\n",
            "  endpoint: http://minio:9000\n",
            "  endpoint: https://s3.eu-west-1.amazonaws.com\n",
        ] {
            let loaded = load_yaml(&s3(extra));
            assert!(loaded.is_ok(), "{extra}: {loaded:?}");
        }
    }

    #[test]
    fn tls_auth_and_gc_sections() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("berth.yaml");
        std::fs::write(
            &path,
            "tls:\n  certFile: /tls/tls.crt\n  keyFile: /tls/tls.key\n\
             auth:\n  htpasswd:\n    path: /auth/htpasswd\n\
             gc:\n  enabled: true\n  interval: 10m\n  retention:\n\
             \x20   - repositories: \"team/**\"\n      keepTags: [\"^v[0-9]+\"]\n      keepLast: 3\n\
             uploads:\n  maxAge: 2h\n",
        )?;
        let vars = env(&[("BERTH_GC__DRY_RUN", "true")]);
        let config = load(Some(&path), vars, &Overrides::default())?;
        let tls = config.tls.as_ref().ok_or("tls")?;
        assert_eq!(tls.key_file, PathBuf::from("/tls/tls.key"));
        let auth = config.auth.as_ref().ok_or("auth")?;
        assert_eq!(auth.realm, "berth");
        assert!(config.gc.enabled && config.gc.dry_run);
        assert_eq!(config.gc.interval, std::time::Duration::from_secs(600));
        assert_eq!(config.gc.retention[0].keep_last, Some(3));
        assert_eq!(config.uploads.max_age, std::time::Duration::from_secs(7200));
        // What the operator renders reads back as the same configuration.
        let again: Config = serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&config)?)?;
        assert_eq!(again, config);
        Ok(())
    }

    #[test]
    fn bad_tls_auth_and_gc_name_the_field() {
        for (yaml, field) in [
            ("auth: {}\n", "`auth`"),
            ("tls:\n  certFile: ''\n  keyFile: k\n", "tls.certFile"),
            ("gc:\n  interval: 0s\n", "gc.interval"),
            (
                "gc:\n  retention:\n    - repositories: a\n      keepTags: ['(']\n",
                "gc.retention[0].keepTags[0]",
            ),
        ] {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("berth.yaml");
            std::fs::write(&path, yaml).expect("config file");
            let err = load(Some(&path), Vec::new(), &Overrides::default())
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(field)),
                "{yaml}: {err:?}"
            );
        }
    }

    #[test]
    fn camel_case_of_env_segments() {
        assert_eq!(camel_case("MANIFEST_MAX_BYTES"), "manifestMaxBytes");
        assert_eq!(camel_case("ROOT"), "root");
    }
}
