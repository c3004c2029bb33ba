//! `Registry`: one Berth registry cluster (a Deployment of stateless
//! replicas, its Service, config and RBAC) in one namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use berth_registry::config::LogFormat;

/// The image the operator runs when a Registry names none; built by the
/// project's image command with the same version as the operator.
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/berth-dev/berth-registry:",
    env!("CARGO_PKG_VERSION")
);

/// The desired state of a Berth registry.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Registry",
    namespaced,
    status = "RegistryStatus",
    shortname = "reg",
    category = "berth",
    doc = "A Berth OCI registry: stateless replicas sharing one storage backend.",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(
    validation = Rule::new("self.replicas <= 1 || has(self.storage.s3)")
        .message("more than one replica needs shared storage: set spec.storage.s3 (a filesystem or PVC serves one replica only)")
        .field_path(".replicas"),
    validation = Rule::new("!has(self.autoscaling) || has(self.storage.s3)")
        .message("spec.autoscaling needs shared storage: set spec.storage.s3")
        .field_path(".autoscaling"),
    validation = Rule::new("!has(self.autoscaling) || self.autoscaling.maxReplicas >= self.autoscaling.minReplicas")
        .message("spec.autoscaling.maxReplicas must be at least minReplicas")
        .field_path(".autoscaling.maxReplicas")
)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// Number of registry replicas. More than one requires S3 storage.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Container image of the registry.
    #[serde(default = "default_image")]
    pub image: String,
    /// Image pull policy (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Compute resources of the registry container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where content lives.
    #[serde(default)]
    pub storage: StorageSpec,
    /// The Service in front of the replicas.
    #[serde(default)]
    pub service: ServiceSpec,
    /// Largest manifest accepted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub manifest_max_bytes: Option<u64>,
    /// Logging of the registry pods.
    #[serde(default)]
    pub log: LogSpec,
    /// Horizontal pod autoscaling (requires S3 storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Pod placement.
    #[serde(default)]
    pub placement: PlacementSpec,
    /// Serve HTTPS with the certificate of a `kubernetes.io/tls` Secret;
    /// plain HTTP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Require authentication; anonymous access when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Online garbage collection and retention policies.
    #[serde(default)]
    pub gc: GcSpec,
    /// Abandoned uploads.
    #[serde(default)]
    pub uploads: UploadsSpec,
    /// Prometheus Operator integration.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
}

fn default_replicas() -> i32 {
    1
}

fn default_image() -> String {
    DEFAULT_IMAGE.into()
}

/// Storage backend: `s3` for any number of replicas; otherwise a
/// PersistentVolumeClaim (`pvc`) or, when neither is set, an `emptyDir`
/// that loses content with the pod (for trying things out).
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!(has(self.s3) && has(self.pvc))")
        .message("spec.storage: set s3 or pvc, not both")
)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// An S3 bucket shared by every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3StorageSpec>,
    /// An existing PersistentVolumeClaim, for a single replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcStorageSpec>,
}

/// S3 bucket settings; see the registry's `storage` configuration.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3StorageSpec {
    /// Bucket name; the bucket must exist.
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Custom endpoint, e.g. `http://minio.storage:9000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing, as MinIO and Ceph want.
    #[serde(default)]
    pub force_path_style: bool,
    /// A Secret with the access key; without it the pods use the standard
    /// AWS chain (for example a web identity from the ServiceAccount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<S3CredentialsSecret>,
}

/// Names a Secret and the keys holding an S3 access key pair.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsSecret {
    /// Secret name, in the Registry's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key of the access key id.
    #[serde(default = "default_access_key_id_key")]
    pub access_key_id_key: String,
    /// Key of the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "accessKeyId".into()
}

fn default_secret_access_key_key() -> String {
    "secretAccessKey".into()
}

/// A PersistentVolumeClaim that holds the content of a single replica.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PvcStorageSpec {
    /// Name of an existing claim in the Registry's namespace.
    #[schemars(length(min = 1))]
    pub claim_name: String,
}

/// How the registry is exposed inside the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Service port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_port(),
        }
    }
}

fn default_port() -> i32 {
    5000
}

/// The Service types a registry can use.
#[derive(JsonSchema, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Logging of the registry pods.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogSpec {
    /// `text` or `json` (the default in a cluster, for log pipelines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<LogFormat>,
    /// A `tracing` filter such as `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

/// HorizontalPodAutoscaler settings; when set, the HPA owns the replica
/// count and `spec.replicas` only seeds it.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Average CPU utilisation the HPA aims at, in percent of requests.
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_min_replicas() -> i32 {
    2
}

fn default_cpu_target() -> i32 {
    70
}

/// Where the pods may run.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// A duration such as `90s`, `30m`, `1h30m` or `7d` (a subset of what the
/// registry's humantime parser reads, so whatever the API server accepts
/// renders).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";

/// TLS for the registry's HTTP API.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret of type `kubernetes.io/tls` (keys `tls.crt` and `tls.key`)
    /// in the Registry's namespace, e.g. one cert-manager writes. It is
    /// mounted read-only; rotating it rolls the pods.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// Authentication of clients.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The realm in `WWW-Authenticate` challenges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub realm: Option<String>,
    /// A Secret key holding an htpasswd file (bcrypt entries, as
    /// `htpasswd -B` writes them), mounted read-only.
    pub htpasswd_secret: SecretKeyRef,
}

/// One key of a Secret in the Registry's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret.
    #[serde(default = "default_htpasswd_key")]
    #[schemars(length(min = 1))]
    pub key: String,
}

fn default_htpasswd_key() -> String {
    "htpasswd".into()
}

/// Online mark-and-sweep garbage collection, run by one replica at a time
/// (the holder of the GC Lease). Unset fields keep the registry's defaults.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GcSpec {
    /// Run garbage collection (the registry's default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Time between runs, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Grace period: nothing younger than this is swept, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub delay: Option<String>,
    /// Report what would be removed, remove nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Retention policies; for each repository the first policy whose
    /// `repositories` glob matches applies. Repositories no policy matches
    /// keep every tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention: Vec<RetentionSpec>,
}

/// Which manifests of matching repositories to keep: a tagged manifest
/// stays when any `keep*` rule keeps it, and with no `keep*` rule every tag
/// stays.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Repository glob: `*` within a path segment, `**` across segments,
    /// e.g. `team/*`.
    #[schemars(length(min = 1))]
    pub repositories: String,
    /// Keep tags matching any of these regular expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    /// Keep the N most recently pushed or pulled tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep what was pushed or pulled within this duration, e.g. `720h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub keep_within: Option<String>,
    /// Remove untagged manifests after this duration, e.g. `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub untagged_after: Option<String>,
}

/// Uploads that were started and never finished.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UploadsSpec {
    /// GC removes uploads (and S3 multipart uploads) older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_age: Option<String>,
}

/// Monitoring integrations.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A Prometheus Operator `ServiceMonitor` for the registry's `/metrics`.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
}

/// A `monitoring.coreos.com/v1` ServiceMonitor; the Prometheus Operator's
/// CRDs must be installed, or the Registry reports `Degraded`.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create the ServiceMonitor.
    #[serde(default)]
    pub enabled: bool,
    /// Scrape interval, e.g. `30s`; Prometheus' own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Extra labels, for a Prometheus whose `serviceMonitorSelector`
    /// wants them (e.g. `release: prometheus`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What the operator observed.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Replicas that pass `/readyz`.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The in-cluster address, e.g. `http://name.ns.svc:5000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Checksum of the rendered configuration the pods run with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_checksum: Option<String>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
