//! Builders of test objects, shared by the rendering and reconcile tests.

use kube::api::ObjectMeta;

use crate::crd::registry::{
    AuthSpec, S3CredentialsSecret, S3StorageSpec, SecretKeyRef, StorageSpec, TlsSpec,
};
use crate::crd::sync_policy::UpstreamSpec;
use crate::crd::{Registry, RegistrySpec, SyncPolicy, SyncPolicySpec};

/// A Registry `demo` in namespace `ns` with every default.
pub fn registry() -> Registry {
    let spec: RegistrySpec =
        serde_json::from_value(serde_json::json!({})).unwrap_or_else(|e| panic!("{e}"));
    let mut registry = Registry::new("demo", spec);
    registry.metadata = ObjectMeta {
        name: Some("demo".into()),
        namespace: Some("ns".into()),
        uid: Some("0000-uid".into()),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    registry
}

/// `registry()` on S3 with a credentials Secret and `replicas` replicas.
pub fn s3_registry(replicas: i32) -> Registry {
    let mut registry = registry();
    registry.spec.replicas = replicas;
    registry.spec.storage = StorageSpec {
        s3: Some(S3StorageSpec {
            bucket: "berth".into(),
            prefix: None,
            region: None,
            endpoint: Some("http://minio:9000".into()),
            force_path_style: true,
            credentials_secret: Some(S3CredentialsSecret {
                name: "s3-creds".into(),
                access_key_id_key: "accessKeyId".into(),
                secret_access_key_key: "secretAccessKey".into(),
            }),
        }),
        pvc: None,
    };
    registry
}

/// `registry` with TLS from Secret `demo-tls` and htpasswd auth from key
/// `htpasswd` of Secret `demo-users`.
pub fn secured(mut registry: Registry) -> Registry {
    registry.spec.tls = Some(TlsSpec {
        secret_name: "demo-tls".into(),
    });
    registry.spec.auth = Some(AuthSpec {
        realm: None,
        htpasswd_secret: SecretKeyRef {
            name: "demo-users".into(),
            key: "htpasswd".into(),
        },
    });
    registry
}

/// A SyncPolicy `name` in `ns` that names Registry `registry`.
pub fn sync_policy(name: &str, registry: &str) -> SyncPolicy {
    let mut policy = SyncPolicy::new(
        name,
        SyncPolicySpec {
            registry: registry.into(),
            upstream: UpstreamSpec {
                url: "https://upstream.example".into(),
                credentials_secret: None,
                tls_verify: true,
            },
            pull_through: true,
            poll_interval: None,
            repositories: vec!["library/*".into()],
            tag_regex: None,
            semver: None,
            destination_prefix: None,
            concurrency: 4,
        },
    );
    policy.metadata.namespace = Some("ns".into());
    policy
}
