//! The SyncPolicy reconciler: the policy itself renders nothing (the
//! Registry controller folds it into the Registry's config); this sets the
//! policy's `Accepted` condition, `False` while its Registry is missing.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::Context;
use crate::crd::{Registry, SyncPolicy, SyncPolicyStatus, condition};
use crate::error::{Error, Result};

const CONTROLLER: &str = "syncpolicy";
const RESYNC: Duration = Duration::from_secs(300);
const RETRY: Duration = Duration::from_secs(5);

/// The SyncPolicy controller; a Registry appearing or going re-queues the
/// policies that name it.
pub async fn controller(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let config = watcher::Config::default();
    let controller = Controller::new(Api::<SyncPolicy>::all(client.clone()), config.clone());
    let policies = controller.store();
    controller
        .watches(Api::<Registry>::all(client), config, move |registry| {
            let namespace = registry.namespace();
            let name = registry.name_any();
            policies
                .state()
                .iter()
                .filter(|p| p.spec.registry == name && p.namespace() == namespace)
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "syncpolicy reconcile");
            }
        })
        .await;
}

/// One reconcile of one SyncPolicy.
pub async fn reconcile(policy: Arc<SyncPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    let namespace = policy.namespace().unwrap_or_default();
    let registries: Api<Registry> = Api::namespaced(ctx.client.clone(), &namespace);
    let found = registries
        .get_metadata_opt(&policy.spec.registry)
        .await?
        .is_some();
    let previous = policy.status.clone().unwrap_or_default();
    let status = accepted_status(&previous, &policy, found);
    if status != previous {
        let accepted = &status.conditions[0];
        ctx.publish(
            policy.as_ref(),
            !found,
            &accepted.reason,
            accepted.message.clone(),
        )
        .await;
        let api: Api<SyncPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = Patch::Merge(json!({ "status": status }));
        api.patch_status(&policy.name_any(), &PatchParams::default(), &patch)
            .await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// Counts the failure and retries soon.
pub fn error_policy(policy: Arc<SyncPolicy>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(CONTROLLER, err);
    tracing::warn!(policy = %policy.name_any(), error = %err, "reconcile failed");
    Action::requeue(RETRY)
}

/// The status for whether the named Registry exists.
pub fn accepted_status(
    previous: &SyncPolicyStatus,
    policy: &SyncPolicy,
    found: bool,
) -> SyncPolicyStatus {
    let registry = &policy.spec.registry;
    let (reason, message) = if found {
        (
            "RegistryFound",
            format!("rendered into Registry {registry:?} (ConfigMap {registry:?}, key sync.yaml)"),
        )
    } else {
        (
            "RegistryNotFound",
            format!("Registry {registry:?} does not exist in this namespace"),
        )
    };
    let generation = policy.metadata.generation;
    SyncPolicyStatus {
        observed_generation: generation,
        conditions: vec![condition(
            &previous.conditions,
            "Accepted",
            found,
            reason,
            message,
            generation,
        )],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::mock::{self, Call, echo, not_found};
    use crate::render::fixtures::sync_policy;

    /// Reconciles `mirror` (naming Registry `demo`) against an API server
    /// where `demo` exists or not; returns the calls.
    async fn reconcile_with_registry(exists: bool) -> Vec<Call> {
        let (ctx, server) = mock::context();
        let calls = server.serve(move |call| {
            if call.is("GET", "/registries/demo") && exists {
                let meta = json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": "demo", "namespace": "ns"},
                });
                return (200, meta);
            }
            if call.is("PATCH", "/syncpolicies/mirror/status") {
                let mut policy = serde_json::to_value(sync_policy("mirror", "demo"))
                    .unwrap_or_else(|e| panic!("{e}"));
                policy["status"] = call.body["status"].clone();
                return (200, policy);
            }
            match call.method.as_str() {
                "POST" => echo(call),
                _ => not_found(call),
            }
        });
        let action = reconcile(Arc::new(sync_policy("mirror", "demo")), ctx)
            .await
            .unwrap();
        assert_eq!(action, Action::requeue(RESYNC));
        calls.await.unwrap()
    }

    #[tokio::test]
    async fn a_policy_for_a_missing_registry_is_not_accepted() {
        let calls = reconcile_with_registry(false).await;
        let lines: Vec<_> = calls.iter().map(Call::line).collect();
        assert_eq!(
            lines,
            [
                "GET /apis/berth.dev/v1alpha1/namespaces/ns/registries/demo",
                "POST /apis/events.k8s.io/v1/namespaces/ns/events",
                "PATCH /apis/berth.dev/v1alpha1/namespaces/ns/syncpolicies/mirror/status",
            ]
        );
        assert_eq!(calls[1].body["type"], "Warning");
        assert_eq!(calls[1].body["reason"], "RegistryNotFound");
        let accepted = &calls[2].body["status"]["conditions"][0];
        assert_eq!(
            (&accepted["type"], &accepted["status"], &accepted["reason"]),
            (
                &json!("Accepted"),
                &json!("False"),
                &json!("RegistryNotFound")
            )
        );
        assert_eq!(
            accepted["message"],
            "Registry \"demo\" does not exist in this namespace"
        );
    }

    #[tokio::test]
    async fn a_policy_for_an_existing_registry_is_accepted() {
        let calls = reconcile_with_registry(true).await;
        assert_eq!(calls[1].body["type"], "Normal");
        let accepted = &calls[2].body["status"]["conditions"][0];
        assert_eq!(
            (&accepted["status"], &accepted["reason"]),
            (&json!("True"), &json!("RegistryFound"))
        );
    }

    #[test]
    fn accepted_follows_the_registry() {
        let policy = sync_policy("mirror", "demo");
        let missing = accepted_status(&SyncPolicyStatus::default(), &policy, false);
        let c = &missing.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "RegistryNotFound")
        );
        assert!(c.message.contains("\"demo\" does not exist"));
        let found = accepted_status(&missing, &policy, true);
        assert_eq!(found.conditions[0].status, "True");
        assert_eq!(accepted_status(&found, &policy, true), found);
    }
}
