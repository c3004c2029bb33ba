//! The Registry reconciler: render everything, check what the user must
//! provide (the S3 Secret), server-side apply, delete what is no longer
//! rendered, then report status and Events.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::status::{Problem, Rollout, registry_status, transition_event};
use super::{Context, apply, delete_if_present};
use crate::crd::{Registry, RegistryStatus, SyncPolicy};
use crate::error::{Error, Result};
use crate::render::{self, Owned};

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
    let outcome = check_secret(&registry, &ctx, &namespace).await;
    let owned = outcome.and_then(|()| Ok(render::render(&registry, &policies)?));
    match owned {
        Ok(owned) => apply_and_report(&registry, &ctx, owned).await,
        Err(err) if err.is_user_error() => {
            let problem = Problem {
                reason: err.reason(),
                message: err.to_string(),
            };
            report(&registry, &ctx, None, Some(&problem), None).await?;
            Err(err)
        }
        Err(err) => Err(err),
    }
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

async fn check_secret(registry: &Registry, ctx: &Context, namespace: &str) -> Result<()> {
    let secret = registry
        .spec
        .storage
        .s3
        .as_ref()
        .and_then(|s3| s3.credentials_secret.as_ref());
    let Some(secret) = secret else {
        return Ok(());
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    match api.get_metadata_opt(&secret.name).await? {
        Some(_) => Ok(()),
        None => Err(Error::SecretMissing(secret.name.clone())),
    }
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
    if let Some((warning, reason, note)) =
        transition_event(&previous.conditions, &status.conditions)
    {
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
