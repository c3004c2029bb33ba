//! `SyncPolicy`: mirroring from an upstream registry into a `Registry`
//! of the same namespace, folded into that Registry's rendered config.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// What to mirror from where, into which Registry.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "SyncPolicy",
    namespaced,
    status = "SyncPolicyStatus",
    shortname = "syncp",
    category = "berth",
    doc = "Mirrors content from an upstream registry into a Berth Registry.",
    printcolumn = r#"{"name":"Registry","type":"string","jsonPath":".spec.registry"}"#,
    printcolumn = r#"{"name":"Upstream","type":"string","jsonPath":".spec.upstream.url"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.pullThrough || has(self.pollInterval)")
        .message("a SyncPolicy needs pullThrough: true, a pollInterval, or both")
)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicySpec {
    /// Name of the Registry (same namespace) that mirrors.
    #[schemars(length(min = 1))]
    pub registry: String,
    /// The registry to mirror from.
    pub upstream: UpstreamSpec,
    /// Fetch on demand when a client pulls something missing.
    #[serde(default)]
    pub pull_through: bool,
    /// Poll the upstream periodically, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub poll_interval: Option<String>,
    /// Repository globs or prefixes to mirror; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// Only tags matching this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_regex: Option<String>,
    /// Only tags in this semver range, e.g. `>=1.2, <2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// Prefix prepended to repository names in the Registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_prefix: Option<String>,
    /// Transfers at once.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: u32,
}

fn default_concurrency() -> u32 {
    4
}

/// An upstream registry.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// Base URL, e.g. `https://registry-1.docker.io`.
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: String,
    /// A Secret with `username` and `password` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Verify the upstream's TLS certificate.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
}

fn default_true() -> bool {
    true
}

/// What the operator observed.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`: the Registry exists and renders this policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
