//! The controllers: `Registry` (render, server-side apply, status, Events)
//! and `SyncPolicy` (re-queue its Registry, `Accepted` condition). They run
//! only on the replica that holds the leader Lease (see `leader`).

#[cfg(test)]
pub(crate) mod mock;
pub mod registry;
pub mod status;
pub mod sync_policy;

use std::fmt::Debug;
use std::sync::Arc;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::metrics::Metrics;

/// The one field manager of every apply, so ownership of fields is ours and
/// a field we stop rendering is removed.
pub const FIELD_MANAGER: &str = "berth-operator";

/// What every reconcile needs.
#[derive(Clone)]
pub struct Context {
    /// The API client (the operator's ServiceAccount identity).
    pub client: Client,
    /// Publishes Events as `berth-operator` with this replica's identity.
    pub recorder: Recorder,
    /// Reconcile counters and durations.
    pub metrics: Metrics,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// A context whose Events name `identity` as the reporting instance.
    pub fn new(client: Client, metrics: Metrics, identity: &str) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(identity.into()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
        }
    }

    /// Publishes an Event about `object`; failures are logged, not
    /// returned, because an Event is never worth failing a reconcile for.
    pub async fn publish<K>(&self, object: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%err, reason, "cannot publish Event");
        }
    }
}

/// Server-side applies `object` in its namespace with [`FIELD_MANAGER`],
/// forcing ownership of the fields we render.
pub async fn apply<K>(client: &Client, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&object.name_any(), &params, &Patch::Apply(object))
        .await?)
}

/// Deletes `name` if it exists (an object we no longer render).
pub async fn delete_if_present<K>(client: &Client, namespace: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let wait = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let registries = registry::controller(ctx.clone(), wait(rx.clone()));
    let policies = sync_policy::controller(ctx, wait(rx));
    let stop = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    tokio::join!(registries, policies, stop);
}
