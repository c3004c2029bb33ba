//! A multipart upload the driver starts for one call of its own (a large
//! put, a copy in parts, a compose), aborted however that call ends short
//! of completing it. An error return aborts it in line; a dropped future (a
//! client that went away over HTTP/2, a server shutting down) runs no error
//! path, so the guard's `Drop` spawns the abort instead: otherwise S3 keeps
//! the parts, and bills for them, until a lifecycle rule removes them.
//!
//! Uploads that span requests (`create_multipart` called by a service)
//! are not guarded: their id lives in storage for the next request.

use super::super::{Key, ObjectStore, StorageResult};
use super::S3Store;

/// An open multipart upload, aborted on drop unless [`completed`] or
/// [`abort`]ed first.
///
/// [`completed`]: PendingUpload::completed
/// [`abort`]: PendingUpload::abort
pub(super) struct PendingUpload {
    store: S3Store,
    key: Key,
    id: String,
    armed: bool,
}

impl PendingUpload {
    /// Starts a multipart upload that will become `key`.
    pub(super) async fn start(store: &S3Store, key: &Key) -> StorageResult<Self> {
        let id = store.create_multipart(key).await?;
        Ok(Self {
            store: store.clone(),
            key: key.clone(),
            id,
            armed: true,
        })
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The upload was completed: nothing is left to abort.
    pub(super) fn completed(mut self) {
        self.armed = false;
    }

    /// Aborts the upload after a failure. The guard stays armed until the
    /// abort has returned, so a drop in the middle still cleans up.
    pub(super) async fn abort(mut self) {
        let result = self.store.abort_multipart(&self.key, &self.id).await;
        self.armed = false;
        if let Err(err) = result {
            tracing::warn!(key = %self.key, upload_id = %self.id, error = %err,
                "cannot abort a failed multipart upload");
        }
    }
}

impl Drop for PendingUpload {
    /// `Drop` cannot wait for a request, so the abort runs as a task of its
    /// own; outside a runtime there is nothing to run it on, and the upload
    /// is only logged.
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let store = self.store.clone();
        let key = self.key.clone();
        let id = std::mem::take(&mut self.id);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(err) = store.abort_multipart(&key, &id).await {
                        tracing::warn!(key = %key, upload_id = %id, error = %err,
                            "cannot abort an abandoned multipart upload");
                    }
                });
            }
            Err(err) => {
                tracing::warn!(key = %key, upload_id = %id, error = %err,
                    "multipart upload abandoned outside a runtime, left open");
            }
        }
    }
}
