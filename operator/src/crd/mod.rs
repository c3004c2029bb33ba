//! The custom resources, group `berth.dev`, version `v1alpha1`: their spec
//! and status types, and the CEL rules the schema alone cannot state. These
//! types are the only source of `crds/*.yaml` (written by `crdgen`).
//!
//! May depend on k8s-openapi types and the registry's config enums only.

pub mod registry;
pub mod sync_policy;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub use registry::{Registry, RegistrySpec, RegistryStatus};
pub use sync_policy::{SyncPolicy, SyncPolicySpec, SyncPolicyStatus};

/// The API group of every Berth resource.
pub const GROUP: &str = "berth.dev";

/// Builds a condition, keeping `lastTransitionTime` from `previous` when the
/// status did not change (the Kubernetes convention: the time says when the
/// status last flipped, not when it was last written).
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether the condition `type_` is `True` in `conditions`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}
