//! The registry Deployment: rolling updates, the config checksum on the pod
//! template, the downward API, probes (HTTPS with TLS), S3 credentials from
//! a Secret, the TLS and htpasswd Secrets mounted read-only, and the user's
//! placement.
//!
//! Every mount is a sibling under `/etc/berth` (`config/`, `tls/`, `auth/`),
//! never one inside another: a mount point inside a read-only ConfigMap or
//! Secret volume cannot be created by every container runtime.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::config::{
    AUTH_DIR, CONFIG_DIR, CONFIG_KEY, DATA_DIR, HTPASSWD_FILE, TLS_CERT_FILE, TLS_DIR, TLS_KEY_FILE,
};
use super::{
    CONFIG_CHECKSUM_ANNOTATION, CONTAINER_PORT, RenderError, labels, owned_meta, scheme,
    selector_labels,
};
use crate::crd::Registry;
use crate::crd::registry::S3CredentialsSecret;

/// The uid and gid the registry runs as (no root needed: port 5000).
const RUN_AS: i64 = 65532;
/// Mode of mounted Secret files: readable by the owner and the pod's
/// `fsGroup` ([`RUN_AS`]), which the kubelet applies to Secret volumes.
const SECRET_MODE: i32 = 0o440;

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
            // Everything the "restricted" Pod Security Standard asks, so
            // that the pods are admitted in namespaces that enforce it.
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(RUN_AS),
                run_as_group: Some(RUN_AS),
                fs_group: Some(RUN_AS),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
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
            name: Some(scheme(registry).into()),
            container_port: CONTAINER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env(registry)),
        resources: spec.resources.clone(),
        liveness_probe: Some(probe(registry, "/livez", 10)),
        readiness_probe: Some(probe(registry, "/readyz", 5)),
        volume_mounts: Some(volume_mounts(registry)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn volume_mounts(registry: &Registry) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("data", DATA_DIR, false),
    ];
    if registry.spec.tls.is_some() {
        mounts.push(mount("tls", TLS_DIR, true));
    }
    if registry.spec.auth.is_some() {
        mounts.push(mount("auth", AUTH_DIR, true));
    }
    mounts
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

/// An HTTP(S) GET probe on the named port. With TLS the kubelet speaks
/// HTTPS and does not verify the certificate (as for every HTTPS probe).
fn probe(registry: &Registry, path: &str, period_seconds: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(scheme(registry).into()),
            scheme: Some(scheme(registry).to_uppercase()),
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
    let mut volumes = vec![config, data];
    if let Some(tls) = &registry.spec.tls {
        volumes.push(secret_volume(
            "tls",
            &tls.secret_name,
            &[("tls.crt", TLS_CERT_FILE), ("tls.key", TLS_KEY_FILE)],
        ));
    }
    if let Some(auth) = &registry.spec.auth {
        let secret = &auth.htpasswd_secret;
        volumes.push(secret_volume(
            "auth",
            &secret.name,
            &[(secret.key.as_str(), HTPASSWD_FILE)],
        ));
    }
    volumes
}

/// A Secret volume projecting `items` (key, file name), so the file names
/// the config points at do not depend on the Secret's key names.
fn secret_volume(name: &str, secret: &str, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(
                items
                    .iter()
                    .map(|(key, path)| KeyToPath {
                        key: (*key).into(),
                        path: (*path).into(),
                        ..KeyToPath::default()
                    })
                    .collect(),
            ),
            default_mode: Some(SECRET_MODE),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::registry::{AutoscalingSpec, PvcStorageSpec};
    use crate::render::fixtures::{registry, s3_registry, secured};

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

    /// The "restricted" Pod Security Standard: non-root, no privilege
    /// escalation, every capability dropped, the runtime's seccomp profile.
    #[test]
    fn pods_meet_the_restricted_pod_security_standard() {
        let d = deployment(&registry(), "abc").unwrap();
        let pod = pod(&d);
        let pod_security = pod.security_context.clone().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let container = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(container.allow_privilege_escalation, Some(false));
        assert_eq!(
            container.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
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
            &["--config", "/etc/berth/config/config.yaml"]
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

    #[test]
    fn tls_and_htpasswd_secrets_are_mounted_read_only_and_probes_use_https() {
        let d = deployment(&secured(registry()), "abc").unwrap();
        let container = &pod(&d).containers[0];
        let mounts: Vec<_> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                ("config", "/etc/berth/config", Some(true)),
                ("data", "/var/lib/berth", None),
                ("tls", "/etc/berth/tls", Some(true)),
                ("auth", "/etc/berth/auth", Some(true)),
            ]
        );
        let volumes = pod(&d).volumes.as_ref().unwrap();
        let tls = volumes[2].secret.as_ref().unwrap();
        assert_eq!(tls.secret_name.as_deref(), Some("demo-tls"));
        let items: Vec<_> = tls
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| (i.key.as_str(), i.path.as_str()))
            .collect();
        assert_eq!(items, [("tls.crt", "tls.crt"), ("tls.key", "tls.key")]);
        let auth = volumes[3].secret.as_ref().unwrap();
        assert_eq!(auth.secret_name.as_deref(), Some("demo-users"));
        let readiness = container.readiness_probe.as_ref().unwrap();
        let get = readiness.http_get.as_ref().unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        assert_eq!(get.port, IntOrString::String("https".into()));
        let port = &container.ports.as_ref().unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("https"));
    }

    #[test]
    fn without_tls_the_probes_speak_http() {
        let d = deployment(&registry(), "abc").unwrap();
        let container = &pod(&d).containers[0];
        let get = container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(get.scheme.as_deref(), Some("HTTP"));
        assert_eq!(pod(&d).volumes.as_ref().unwrap().len(), 2);
    }
}
