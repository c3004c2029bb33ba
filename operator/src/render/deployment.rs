//! The registry Deployment: rolling updates, the config checksum on the pod
//! template, the downward API, probes, S3 credentials from a Secret, and the
//! user's placement.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::config::{CONFIG_DIR, CONFIG_KEY, DATA_DIR};
use super::{
    CONFIG_CHECKSUM_ANNOTATION, CONTAINER_PORT, RenderError, labels, owned_meta, selector_labels,
};
use crate::crd::Registry;
use crate::crd::registry::S3CredentialsSecret;

/// The uid and gid the registry runs as (no root needed: port 5000).
const RUN_AS: i64 = 65532;

/// The Deployment named like the Registry.
pub fn deployment(registry: &Registry, config_checksum: &str) -> Result<Deployment, RenderError> {
    let spec = &registry.spec;
    Ok(Deployment {
        metadata: owned_meta(registry, registry.name_any())?,
        spec: DeploymentSpec {
            // With an HPA the replica count is the HPA's: leaving the field
            // out of our apply keeps us from fighting it.
            replicas: spec.autoscaling.is_none().then_some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(registry)),
                ..LabelSelector::default()
            },
            strategy: Some(strategy(registry)),
            template: pod_template(registry, config_checksum),
            ..DeploymentSpec::default()
        },
        status: None,
    })
}

/// Rolling update without losing capacity when the storage is shared;
/// `Recreate` for a PVC, which one pod at a time may mount.
fn strategy(registry: &Registry) -> DeploymentStrategy {
    if registry.spec.storage.pvc.is_some() {
        return DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        };
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    }
}

fn pod_template(registry: &Registry, config_checksum: &str) -> PodTemplateSpec {
    let placement = &registry.spec.placement;
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(registry)),
            annotations: Some(BTreeMap::from([(
                CONFIG_CHECKSUM_ANNOTATION.into(),
                config_checksum.into(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(registry.name_any()),
            containers: vec![container(registry)],
            volumes: Some(volumes(registry)),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                ..PodSecurityContext::default()
            }),
            node_selector: (!placement.node_selector.is_empty())
                .then(|| placement.node_selector.clone()),
            tolerations: (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone()),
            affinity: placement.affinity.clone(),
            topology_spread_constraints: (!placement.topology_spread_constraints.is_empty())
                .then(|| placement.topology_spread_constraints.clone()),
            ..PodSpec::default()
        }),
    }
}

fn container(registry: &Registry) -> Container {
    let spec = &registry.spec;
    Container {
        name: "registry".into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: CONTAINER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env(registry)),
        resources: spec.resources.clone(),
        liveness_probe: Some(probe("/livez", 10)),
        readiness_probe: Some(probe("/readyz", 5)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// POD_NAME and POD_NAMESPACE (the GC Lease holder identity and namespace)
/// from the downward API; S3 credentials, when a Secret is named, as the
/// standard AWS variables that the registry's credential chain reads, so
/// the secret never appears in the ConfigMap.
fn env(registry: &Registry) -> Vec<EnvVar> {
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
    ];
    let secret = registry
        .spec
        .storage
        .s3
        .as_ref()
        .and_then(|s3| s3.credentials_secret.as_ref());
    if let Some(secret) = secret {
        env.push(secret_env(
            "AWS_ACCESS_KEY_ID",
            secret,
            &secret.access_key_id_key,
        ));
        env.push(secret_env(
            "AWS_SECRET_ACCESS_KEY",
            secret,
            &secret.secret_access_key_key,
        ));
    }
    env
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
        value: None,
    }
}

fn secret_env(name: &str, secret: &S3CredentialsSecret, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        value: None,
    }
}

fn probe(path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn volumes(registry: &Registry) -> Vec<Volume> {
    let config = Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: registry.name_any(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let data = match &registry.spec.storage.pvc {
        Some(pvc) => Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim_name.clone(),
                read_only: None,
            }),
            ..Volume::default()
        },
        // S3 needs no disk, but a writable scratch dir keeps the root
        // filesystem read-only; without S3 this is the (ephemeral) content.
        None => Volume {
            name: "data".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    };
    vec![config, data]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::registry::{AutoscalingSpec, PvcStorageSpec};
    use crate::render::fixtures::{registry, s3_registry};

    fn pod(deployment: &Deployment) -> &PodSpec {
        deployment.spec.template.spec.as_ref().unwrap()
    }

    #[test]
    fn rolls_with_surge_and_carries_the_config_checksum() {
        let d = deployment(&s3_registry(3), "abc").unwrap();
        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(3));
        let strategy = spec.strategy.as_ref().unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap();
        assert_eq!(annotations[CONFIG_CHECKSUM_ANNOTATION], "abc");
        assert_eq!(
            spec.selector.match_labels.as_ref(),
            Some(&selector_labels(&s3_registry(3)))
        );
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Registry", Some(true))
        );
    }

    #[test]
    fn downward_api_probes_and_config_mount() {
        let d = deployment(&registry(), "abc").unwrap();
        let container = &pod(&d).containers[0];
        let env = container.env.as_ref().unwrap();
        let paths: Vec<_> = env
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.value_from
                        .as_ref()
                        .unwrap()
                        .field_ref
                        .as_ref()
                        .unwrap()
                        .field_path
                        .as_str(),
                )
            })
            .collect();
        assert_eq!(
            paths,
            [
                ("POD_NAME", "metadata.name"),
                ("POD_NAMESPACE", "metadata.namespace")
            ]
        );
        let path = |p: &Option<Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
        assert_eq!(path(&container.liveness_probe).as_deref(), Some("/livez"));
        assert_eq!(path(&container.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(
            container.args.as_ref().unwrap(),
            &["--config", "/etc/berth/config.yaml"]
        );
        assert_eq!(pod(&d).service_account_name.as_deref(), Some("demo"));
    }

    #[test]
    fn s3_credentials_come_from_the_secret() {
        let d = deployment(&s3_registry(2), "abc").unwrap();
        let env = pod(&d).containers[0].env.clone().unwrap();
        let aws: Vec<_> = env
            .iter()
            .filter_map(|e| {
                let key = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.as_str(), key.name.as_str(), key.key.as_str()))
            })
            .collect();
        assert_eq!(
            aws,
            [
                ("AWS_ACCESS_KEY_ID", "s3-creds", "accessKeyId"),
                ("AWS_SECRET_ACCESS_KEY", "s3-creds", "secretAccessKey")
            ]
        );
    }

    #[test]
    fn pvc_storage_recreates_and_mounts_the_claim() {
        let mut r = registry();
        r.spec.storage.pvc = Some(PvcStorageSpec {
            claim_name: "data-claim".into(),
        });
        let d = deployment(&r, "abc").unwrap();
        let spec = &d.spec;
        assert_eq!(
            spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("Recreate")
        );
        let volumes = pod(&d).volumes.as_ref().unwrap();
        let claim = volumes[1].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(claim.claim_name, "data-claim");
    }

    #[test]
    fn with_an_hpa_the_replica_count_is_left_to_it() {
        let mut r = s3_registry(2);
        r.spec.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 5,
            target_cpu_utilization_percentage: 70,
        });
        let d = deployment(&r, "abc").unwrap();
        assert_eq!(d.spec.replicas, None);
    }
}
