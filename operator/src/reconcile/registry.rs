//! The Registry reconciler: check what the user must provide (the Secrets
//! the pods read), render everything, server-side apply, delete what is no
//! longer rendered, then report status and Events.
//!
//! A problem the user must fix before anything can be applied (a missing
//! Secret or key, an invalid spec) leaves the owned objects as they are and
//! reports `Degraded` and `Ready=False`; a problem with something optional
//! (the ServiceMonitor API missing) is reported as `Degraded` after
//! everything else is applied, and `Ready` keeps following the rollout.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::status::{Problem, Rollout, registry_status, transition_events};
use super::{Context, FIELD_MANAGER, apply, delete_if_present};
use crate::crd::{Registry, RegistryStatus, SyncPolicy};
use crate::error::{Error, Result};
use crate::render::{self, Owned, SecretVersions, monitoring};

const CONTROLLER: &str = "registry";
/// Drift check interval when nothing changes.
const RESYNC: Duration = Duration::from_secs(300);
/// Retry interval after an error the user must fix.
const USER_ERROR_RETRY: Duration = Duration::from_secs(30);
/// Retry interval after a transient error.
const RETRY: Duration = Duration::from_secs(5);

/// The Registry controller: owns Deployments, ConfigMaps and Services (so
/// drift and rollout progress re-trigger it) and watches SyncPolicies,
/// re-queueing the Registry each names.
pub async fn controller(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let config = watcher::Config::default();
    Controller::new(Api::<Registry>::all(client.clone()), config.clone())
        .owns(Api::<Deployment>::all(client.clone()), config.clone())
        .owns(Api::<ConfigMap>::all(client.clone()), config.clone())
        .owns(Api::<Service>::all(client.clone()), config.clone())
        .watches(Api::<SyncPolicy>::all(client), config, |policy| {
            let namespace = policy.namespace().unwrap_or_default();
            Some(ObjectRef::<Registry>::new(&policy.spec.registry).within(&namespace))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "registry reconcile");
            }
        })
        .await;
}

/// One reconcile of one Registry.
pub async fn reconcile(registry: Arc<Registry>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let namespace = registry.namespace().unwrap_or_default();
    let policies = Api::<SyncPolicy>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let owned = secret_versions(&registry, &ctx, &namespace)
        .await
        .and_then(|versions| Ok(render::render(&registry, &policies, &versions)?));
    match owned {
        Ok(owned) => apply_and_report(&registry, &ctx, owned).await,
        Err(err) => fail(&registry, &ctx, None, err).await,
    }
}

/// Reports a user error as `Degraded` (with the rollout and config
/// checksum, when everything else was applied) and returns it, so
/// `error_policy` counts and retries.
async fn fail(
    registry: &Registry,
    ctx: &Context,
    applied: Option<(Rollout, &String)>,
    err: Error,
) -> Result<Action> {
    if err.is_user_error() {
        let problem = Problem {
            reason: err.reason(),
            message: err.to_string(),
        };
        let (rollout, checksum) = applied.unzip();
        report(registry, ctx, rollout, Some(&problem), checksum).await?;
    }
    Err(err)
}

/// Counts the failure and retries: slowly when the user must act.
pub fn error_policy(registry: Arc<Registry>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, err);
    tracing::warn!(registry = %registry.name_any(), error = %err, "reconcile failed");
    Action::requeue(if err.is_user_error() {
        USER_ERROR_RETRY
    } else {
        RETRY
    })
}

/// Fetches every Secret the pods read, checks it has the keys they read,
/// and returns the resourceVersions for the config checksum (see
/// `render::secrets` for why versions).
async fn secret_versions(
    registry: &Registry,
    ctx: &Context,
    namespace: &str,
) -> Result<SecretVersions> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut versions = SecretVersions::new();
    for used in render::secrets::uses(registry) {
        let Some(secret) = api.get_opt(&used.name).await? else {
            return Err(Error::SecretMissing {
                name: used.name,
                namespace: namespace.into(),
                purpose: used.purpose,
            });
        };
        let data = secret.data.unwrap_or_default();
        if let Some(key) = used.keys.iter().find(|key| !data.contains_key(*key)) {
            return Err(Error::SecretKeyMissing {
                name: used.name,
                key: key.clone(),
                purpose: used.purpose,
            });
        }
        let version = secret.metadata.resource_version.unwrap_or_default();
        versions.insert(used.name, version);
    }
    Ok(versions)
}

async fn apply_and_report(registry: &Registry, ctx: &Context, owned: Owned) -> Result<Action> {
    let client = &ctx.client;
    let namespace = registry.namespace().unwrap_or_default();
    let name = registry.name_any();
    apply(client, &owned.service_account).await?;
    apply(client, &owned.role).await?;
    apply(client, &owned.role_binding).await?;
    apply(client, &owned.config_map).await?;
    apply(client, &owned.service).await?;
    let deployment = apply(client, &owned.deployment).await?;
    match &owned.pdb {
        Some(pdb) => drop(apply(client, pdb).await?),
        None => delete_if_present::<PodDisruptionBudget>(client, &namespace, &name).await?,
    }
    match &owned.hpa {
        Some(hpa) => drop(apply(client, hpa).await?),
        None => delete_if_present::<HorizontalPodAutoscaler>(client, &namespace, &name).await?,
    }
    let rollout = Rollout::of(&deployment);
    if let Err(err) = service_monitor(ctx, registry, owned.service_monitor.as_ref()).await {
        let applied = Some((rollout, &owned.config_checksum));
        return fail(registry, ctx, applied, err).await;
    }
    report(
        registry,
        ctx,
        Some(rollout),
        None,
        Some(&owned.config_checksum),
    )
    .await?;
    Ok(Action::requeue(RESYNC))
}

/// Applies the ServiceMonitor, or deletes one we rendered before. A 404 on
/// apply means the API server has no such resource (server-side apply
/// creates missing objects): the Prometheus Operator's CRD is not installed.
async fn service_monitor(
    ctx: &Context,
    registry: &Registry,
    object: Option<&DynamicObject>,
) -> Result<()> {
    let namespace = registry.namespace().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &monitoring::api_resource());
    let name = registry.name_any();
    let result = match object {
        Some(object) => {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(&name, &params, &Patch::Apply(object))
                .await
                .map(drop)
        }
        None => api.delete(&name, &DeleteParams::default()).await.map(drop),
    };
    match result {
        Ok(()) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 && object.is_some() => {
            Err(Error::ServiceMonitorUnavailable)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Writes the status and publishes Events for what changed.
async fn report(
    registry: &Registry,
    ctx: &Context,
    rollout: Option<Rollout>,
    problem: Option<&Problem>,
    checksum: Option<&String>,
) -> Result<()> {
    let previous = registry.status.clone().unwrap_or_default();
    let mut status = registry_status(&previous, registry.metadata.generation, rollout, problem);
    status.endpoint = render::endpoint(registry);
    if let Some(checksum) = checksum {
        status.config_checksum = Some(checksum.clone());
    }
    for (warning, reason, note) in transition_events(&previous.conditions, &status.conditions) {
        ctx.publish(registry, warning, &reason, note).await;
    }
    if previous.config_checksum.is_some() && status.config_checksum != previous.config_checksum {
        let note = "the rendered configuration changed; the pods roll".to_string();
        ctx.publish(registry, false, "ConfigChanged", note).await;
    }
    if status != previous {
        patch_status(registry, ctx, &status).await?;
    }
    Ok(())
}

async fn patch_status(registry: &Registry, ctx: &Context, status: &RegistryStatus) -> Result<()> {
    let namespace = registry.namespace().unwrap_or_default();
    let api: Api<Registry> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = Patch::Merge(json!({ "status": status }));
    api.patch_status(&registry.name_any(), &PatchParams::default(), &patch)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::reconcile::mock::{self, Answer, Call, echo, empty_list, not_found};
    use crate::render::fixtures::{registry, s3_registry, secured};

    /// The API server of a namespace with no SyncPolicies and the given
    /// Secrets (`name, resourceVersion, keys`), in a cluster without the
    /// Prometheus Operator's CRDs: applies and status patches succeed, the
    /// Deployment answers fully rolled out, deletes find nothing.
    fn cluster(
        secrets: Vec<(&'static str, &'static str, Vec<&'static str>)>,
    ) -> impl Fn(&Call) -> Answer {
        move |call| {
            if call.path.starts_with("/apis/monitoring.coreos.com/") {
                return not_found(call);
            }
            if call.is("GET", "/syncpolicies") {
                return empty_list("berth.dev/v1alpha1", "SyncPolicyList");
            }
            if call.is("PATCH", "/deployments/demo") {
                return (200, rolled_out(call.body.clone()));
            }
            if call.is("PATCH", "/registries/demo/status") {
                return (200, with_status(&call.body["status"]));
            }
            if call.method == "GET" {
                let found = secrets
                    .iter()
                    .find(|(name, ..)| call.path.ends_with(&format!("/secrets/{name}")));
                return found.map_or_else(
                    || not_found(call),
                    |(name, version, keys)| secret(name, version, keys),
                );
            }
            match call.method.as_str() {
                "PATCH" | "POST" => echo(call),
                _ => not_found(call),
            }
        }
    }

    fn rolled_out(mut deployment: Value) -> Value {
        deployment["metadata"]["generation"] = 1.into();
        deployment["status"] = serde_json::json!({
            "observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1,
        });
        deployment
    }

    /// The Registry the API server answers a status patch with.
    fn with_status(status: &Value) -> Value {
        serde_json::json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "demo", "namespace": "ns"},
            "spec": {}, "status": status,
        })
    }

    fn secret(name: &str, version: &str, keys: &[&str]) -> Answer {
        let data: serde_json::Map<String, Value> = keys
            .iter()
            .map(|k| ((*k).to_string(), "c2VjcmV0".into()))
            .collect();
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": version},
            "data": data,
        });
        (200, body)
    }

    fn lines(calls: &[Call]) -> Vec<String> {
        calls.iter().map(Call::line).collect()
    }

    fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
    }

    /// `(type, reason, note)` of every Event published.
    fn events(calls: &[Call]) -> Vec<(String, String, String)> {
        calls
            .iter()
            .filter(|c| c.is("POST", "/events"))
            .map(|c| {
                let field = |f: &str| c.body[f].as_str().unwrap_or_default().to_string();
                (field("type"), field("reason"), field("note"))
            })
            .collect()
    }

    fn status_patch(calls: &[Call]) -> &Value {
        let patch = calls
            .iter()
            .rfind(|c| c.is("PATCH", "/registries/demo/status"));
        &patch.expect("a status patch").body["status"]
    }

    #[tokio::test]
    async fn a_registry_is_applied_in_full_and_its_status_patched() {
        let (ctx, server) = mock::context();
        let calls = server.serve(cluster(vec![]));
        let action = reconcile(Arc::new(registry()), ctx).await.unwrap();
        let calls = calls.await.unwrap();
        assert_eq!(
            lines(&calls),
            [
                "GET /apis/berth.dev/v1alpha1/namespaces/ns/syncpolicies",
                "PATCH /api/v1/namespaces/ns/serviceaccounts/demo",
                "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/ns/roles/demo-leases",
                "PATCH /apis/rbac.authorization.k8s.io/v1/namespaces/ns/rolebindings/demo-leases",
                "PATCH /api/v1/namespaces/ns/configmaps/demo",
                "PATCH /api/v1/namespaces/ns/services/demo",
                "PATCH /apis/apps/v1/namespaces/ns/deployments/demo",
                "DELETE /apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo",
                "DELETE /apis/autoscaling/v2/namespaces/ns/horizontalpodautoscalers/demo",
                "DELETE /apis/monitoring.coreos.com/v1/namespaces/ns/servicemonitors/demo",
                "POST /apis/events.k8s.io/v1/namespaces/ns/events",
                "PATCH /apis/berth.dev/v1alpha1/namespaces/ns/registries/demo/status",
            ]
        );
        for apply in calls
            .iter()
            .filter(|c| c.method == "PATCH" && !c.path.ends_with("/status"))
        {
            assert!(
                apply.query.contains("fieldManager=berth-operator")
                    && apply.query.contains("force=true"),
                "{}: {}",
                apply.path,
                apply.query
            );
        }
        let status = status_patch(&calls);
        assert_eq!(condition(status, "Ready")["status"], "True");
        assert_eq!(condition(status, "Degraded")["status"], "False");
        assert_eq!(status["endpoint"], "http://demo.ns.svc:5000");
        assert_eq!(status["readyReplicas"], 1);
        let deployment = &calls[6].body;
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["annotations"]["berth.dev/config-checksum"],
            status["configChecksum"]
        );
        assert!(calls[4].body["data"]["config.yaml"].is_string());
        assert_eq!(
            events(&calls),
            [(
                "Normal".into(),
                "Ready".into(),
                "1 of 1 replicas ready".into()
            )]
        );
        assert_eq!(action, Action::requeue(RESYNC));
    }

    #[tokio::test]
    async fn a_missing_secret_degrades_with_an_event_and_applies_nothing() {
        let (ctx, server) = mock::context();
        let calls = server.serve(cluster(vec![]));
        let err = reconcile(Arc::new(s3_registry(2)), ctx).await.unwrap_err();
        assert!(matches!(err, Error::SecretMissing { .. }), "{err}");
        let calls = calls.await.unwrap();
        assert_eq!(
            lines(&calls),
            [
                "GET /apis/berth.dev/v1alpha1/namespaces/ns/syncpolicies",
                "GET /api/v1/namespaces/ns/secrets/s3-creds",
                "POST /apis/events.k8s.io/v1/namespaces/ns/events",
                "PATCH /apis/berth.dev/v1alpha1/namespaces/ns/registries/demo/status",
            ]
        );
        let message = "Secret \"s3-creds\" (S3 credentials, spec.storage.s3.credentialsSecret) \
                       does not exist in namespace \"ns\"";
        assert_eq!(
            events(&calls),
            [("Warning".into(), "SecretMissing".into(), message.into())]
        );
        let status = status_patch(&calls);
        let degraded = condition(status, "Degraded");
        assert_eq!(
            (&degraded["status"], &degraded["reason"]),
            (&"True".into(), &"SecretMissing".into())
        );
        assert_eq!(degraded["message"], message);
        assert_eq!(condition(status, "Ready")["status"], "False");
    }

    #[tokio::test]
    async fn a_secret_without_the_key_the_pods_read_degrades() {
        let (ctx, server) = mock::context();
        let secrets = vec![("demo-tls", "7", vec!["tls.crt"])];
        let calls = server.serve(cluster(secrets));
        let err = reconcile(Arc::new(secured(registry())), ctx)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Secret \"demo-tls\" (TLS certificate, spec.tls.secretName) has no key \"tls.key\""
        );
        let calls = calls.await.unwrap();
        assert!(!calls.iter().any(|c| c.path.ends_with("/deployments/demo")));
        let degraded = condition(status_patch(&calls), "Degraded");
        assert_eq!(degraded["reason"], "SecretKeyMissing");
    }

    #[tokio::test]
    async fn a_rotated_secret_rolls_the_pods() {
        let mut checksums = Vec::new();
        for version in ["1", "1", "2"] {
            let (ctx, server) = mock::context();
            let secrets = vec![
                ("demo-tls", version, vec!["tls.crt", "tls.key"]),
                ("demo-users", "5", vec!["htpasswd"]),
            ];
            let calls = server.serve(cluster(secrets));
            reconcile(Arc::new(secured(registry())), ctx).await.unwrap();
            let calls = calls.await.unwrap();
            let deployment = calls
                .iter()
                .find(|c| c.is("PATCH", "/deployments/demo"))
                .unwrap();
            let annotations = &deployment.body["spec"]["template"]["metadata"]["annotations"];
            checksums.push(annotations["berth.dev/config-checksum"].clone());
            assert_eq!(status_patch(&calls)["endpoint"], "https://demo.ns.svc:5000");
        }
        assert_eq!(checksums[0], checksums[1]);
        assert_ne!(checksums[1], checksums[2]);
    }

    #[tokio::test]
    async fn without_the_service_monitor_api_the_rest_is_applied_and_degraded() {
        let (ctx, server) = mock::context();
        let calls = server.serve(cluster(vec![]));
        let mut r = registry();
        r.spec.monitoring.service_monitor.enabled = true;
        let err = reconcile(Arc::new(r), ctx).await.unwrap_err();
        assert!(matches!(err, Error::ServiceMonitorUnavailable));
        let calls = calls.await.unwrap();
        assert!(calls.iter().any(|c| c.is("PATCH", "/deployments/demo")));
        let monitor = calls
            .iter()
            .find(|c| c.path.contains("/servicemonitors/"))
            .unwrap();
        assert_eq!(monitor.method, "PATCH");
        assert_eq!(monitor.body["kind"], "ServiceMonitor");
        let status = status_patch(&calls);
        assert_eq!(
            condition(status, "Ready")["status"],
            "True",
            "the registry serves"
        );
        let degraded = condition(status, "Degraded");
        assert_eq!(degraded["reason"], "ServiceMonitorUnavailable");
        assert!(status["configChecksum"].is_string());
        let reasons: Vec<_> = events(&calls).into_iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(
            reasons,
            [
                ("Warning".into(), "ServiceMonitorUnavailable".into()),
                ("Normal".into(), "Ready".into())
            ]
        );
    }
}
