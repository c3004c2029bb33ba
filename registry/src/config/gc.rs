//! Garbage collection, retention and abandoned uploads. The schema is fixed
//! here so that the operator can render it; DESIGN.md describes the online
//! collector that honours it.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Online mark-and-sweep, run by one replica at a time under a Lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Time between two runs.
    #[serde(default = "default_interval", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub interval: Duration,
    /// Grace period: nothing younger (or touched more recently) is swept.
    #[serde(default = "default_delay", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub delay: Duration,
    /// Report what would be deleted, delete nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Retention policies; the first whose `repositories` matches applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<RetentionPolicy>,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: default_interval(),
            delay: default_delay(),
            dry_run: false,
            retention: Vec::new(),
        }
    }
}

impl GcConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.interval < Duration::from_secs(1) {
            return Err(invalid("gc.interval", "must be at least 1s"));
        }
        for (i, policy) in self.retention.iter().enumerate() {
            policy.validate(i)?;
        }
        Ok(())
    }
}

/// Which manifests of matching repositories survive. A tagged manifest is
/// kept when any `keep*` rule keeps it; with no `keep*` rule all tags stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Repository glob (`*` within a path segment, `**` across segments).
    pub repositories: String,
    /// Tags matching any of these regular expressions are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    /// Keep the N most recently pushed or pulled tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep tags pushed or pulled within this long.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    #[schemars(with = "Option<String>")]
    pub keep_within: Option<Duration>,
    /// Delete untagged manifests (that nothing references) after this long.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    #[schemars(with = "Option<String>")]
    pub untagged_after: Option<Duration>,
}

impl RetentionPolicy {
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
        if self.repositories.is_empty() {
            return Err(invalid(
                &format!("gc.retention[{i}].repositories"),
                "must not be empty",
            ));
        }
        for (j, re) in self.keep_tags.iter().enumerate() {
            if let Err(e) = regex::Regex::new(re) {
                return Err(invalid(
                    &format!("gc.retention[{i}].keepTags[{j}]"),
                    &format!("{re:?} is not a regular expression: {e}"),
                ));
            }
        }
        Ok(())
    }
}

/// Uploads that clients started and never finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadsConfig {
    /// An upload untouched this long is abandoned and may be removed.
    #[serde(default = "default_upload_max_age", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_age: Duration,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            max_age: default_upload_max_age(),
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_delay() -> Duration {
    Duration::from_secs(3600)
}

fn default_upload_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn invalid(field: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}
