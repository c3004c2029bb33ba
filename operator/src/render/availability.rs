//! Availability objects: a PodDisruptionBudget when more than one replica
//! runs, and the optional HorizontalPodAutoscaler.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{RenderError, owned_meta, selector_labels};
use crate::crd::Registry;

/// Whether several replicas may run, so that a voluntary disruption can
/// take one away while the rest serve.
pub fn is_replicated(registry: &Registry) -> bool {
    registry.spec.replicas > 1 || registry.spec.autoscaling.is_some()
}

/// At most one replica down at a time, when replicated.
pub fn pdb(registry: &Registry) -> Result<Option<PodDisruptionBudget>, RenderError> {
    if !is_replicated(registry) {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: owned_meta(registry, registry.name_any())?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(registry)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }))
}

/// CPU-based autoscaling of the Deployment, when asked for.
pub fn hpa(registry: &Registry) -> Result<Option<HorizontalPodAutoscaler>, RenderError> {
    let Some(autoscaling) = &registry.spec.autoscaling else {
        return Ok(None);
    };
    Ok(Some(HorizontalPodAutoscaler {
        metadata: owned_meta(registry, registry.name_any())?,
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: registry.name_any(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        },
        status: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::registry::AutoscalingSpec;
    use crate::render::fixtures::{registry, s3_registry};

    #[test]
    fn pdb_only_when_replicated() {
        assert!(pdb(&registry()).unwrap().is_none());
        let pdb = pdb(&s3_registry(3)).unwrap().unwrap();
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }

    #[test]
    fn hpa_targets_the_deployment() {
        assert!(hpa(&s3_registry(2)).unwrap().is_none());
        let mut r = s3_registry(2);
        r.spec.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 6,
            target_cpu_utilization_percentage: 60,
        });
        let spec = hpa(&r).unwrap().unwrap().spec;
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
        assert_eq!(spec.scale_target_ref.name, "demo");
        assert!(pdb(&r).unwrap().is_some());
    }
}
