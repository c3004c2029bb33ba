//! Pure rendering of every object a `Registry` owns: from the Registry (and
//! the SyncPolicies that name it) to typed Kubernetes objects, with labels
//! and a controller owner reference, so the garbage collector removes them
//! with the Registry. No API calls here; the reconciler applies the result.

pub mod access;
pub mod availability;
pub mod config;
pub mod deployment;
pub mod monitoring;
pub mod secrets;
pub mod service;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use thiserror::Error;

use crate::crd::{Registry, SyncPolicy};

pub use config::RenderedConfig;
pub use secrets::{SecretUse, SecretVersions};

/// The port the registry listens on inside its pods.
pub const CONTAINER_PORT: i32 = 5000;
/// Pod annotation holding the rendered config's checksum: a config change
/// changes the pod template, so the Deployment rolls.
pub const CONFIG_CHECKSUM_ANNOTATION: &str = "berth.dev/config-checksum";
/// The `app.kubernetes.io/managed-by` value of everything we render.
pub const MANAGED_BY: &str = "berth-operator";

/// Why a Registry cannot be rendered: errors the user must fix.
#[derive(Debug, Error)]
pub enum RenderError {
    #[error("the Registry has no namespace or uid yet")]
    MissingMetadata,
    #[error("the rendered registry configuration is invalid: {0}")]
    InvalidConfig(String),
}

/// Labels that select a Registry's pods; stable for the Registry's life
/// (a Deployment's selector is immutable).
pub fn selector_labels(registry: &Registry) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "berth-registry".into()),
        ("app.kubernetes.io/instance".into(), registry.name_any()),
    ])
}

/// Selector labels plus the descriptive ones.
pub fn labels(registry: &Registry) -> BTreeMap<String, String> {
    let mut labels = selector_labels(registry);
    labels.insert("app.kubernetes.io/component".into(), "registry".into());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    labels
}

/// Metadata of an owned object named `name`: namespace, labels and the
/// controller owner reference.
pub fn owned_meta(registry: &Registry, name: String) -> Result<ObjectMeta, RenderError> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: registry.namespace(),
        labels: Some(labels(registry)),
        owner_references: Some(vec![owner_reference(registry)?]),
        ..ObjectMeta::default()
    })
}

fn owner_reference(registry: &Registry) -> Result<OwnerReference, RenderError> {
    registry
        .controller_owner_ref(&())
        .ok_or(RenderError::MissingMetadata)
}

/// Everything a Registry owns, rendered.
#[derive(Debug, Clone)]
pub struct Owned {
    pub config_map: k8s_openapi::api::core::v1::ConfigMap,
    pub service_account: k8s_openapi::api::core::v1::ServiceAccount,
    pub role: k8s_openapi::api::rbac::v1::Role,
    pub role_binding: k8s_openapi::api::rbac::v1::RoleBinding,
    pub service: k8s_openapi::api::core::v1::Service,
    pub deployment: k8s_openapi::api::apps::v1::Deployment,
    /// Present when more than one replica (or an HPA) can run.
    pub pdb: Option<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    pub hpa: Option<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>,
    /// A Prometheus Operator ServiceMonitor, when enabled (a dynamic object:
    /// its CRD may be missing from the cluster).
    pub service_monitor: Option<kube::api::DynamicObject>,
    /// Checksum of the rendered configuration (also on the pod template).
    pub config_checksum: String,
}

/// Renders every owned object of `registry`, folding in `policies` (the
/// SyncPolicies that name it) and the `resourceVersion`s of the Secrets it
/// references (see [`secrets`]).
pub fn render(
    registry: &Registry,
    policies: &[SyncPolicy],
    secret_versions: &SecretVersions,
) -> Result<Owned, RenderError> {
    if registry.namespace().is_none() || registry.uid().is_none() {
        return Err(RenderError::MissingMetadata);
    }
    let rendered = config::render(registry, policies, secret_versions)?;
    Ok(Owned {
        config_map: config::config_map(registry, &rendered)?,
        service_account: access::service_account(registry)?,
        role: access::role(registry)?,
        role_binding: access::role_binding(registry)?,
        service: service::service(registry)?,
        deployment: deployment::deployment(registry, &rendered.checksum)?,
        pdb: availability::pdb(registry)?,
        hpa: availability::hpa(registry)?,
        service_monitor: monitoring::service_monitor(registry)?,
        config_checksum: rendered.checksum,
    })
}

/// `https` when the registry serves TLS, else `http`: the URL scheme, and
/// the name of the container and Service port.
pub fn scheme(registry: &Registry) -> &'static str {
    if registry.spec.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The in-cluster endpoint clients use.
pub fn endpoint(registry: &Registry) -> Option<String> {
    let namespace = registry.namespace()?;
    Some(format!(
        "{}://{}.{namespace}.svc:{}",
        scheme(registry),
        registry.name_any(),
        registry.spec.service.port
    ))
}

#[cfg(test)]
pub(crate) mod fixtures;
