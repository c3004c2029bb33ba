//! A storage wrapper that injects faults into chosen calls, for tests of
//! what the registry does when storage misbehaves or another request races
//! it: each rule fires once, on the first call it matches, and every other
//! call goes to the wrapped driver unchanged.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_registry::storage::{
    ByteRange, ByteStream, GetObject, Key, ListPage, ObjectMeta, ObjectStore, Part, PutMode,
    StorageError, StorageResult,
};
use bytes::Bytes;
use futures::future::BoxFuture;

/// What a rule does to the call it matches.
pub enum Fault {
    /// Runs this first (a racing request, say), then the call.
    Before(BoxFuture<'static, ()>),
    /// Makes the call, then fails: a put answers `PreconditionFailed`, as
    /// the S3 SDK does when it retries a conditional put whose success
    /// response was lost; a delete answers a backend error.
    LoseResponse,
    /// Fails the call without making it.
    Fail,
}

/// The calls a rule can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// A put with `If-Match` (conditional replacement).
    PutIfMatch,
    Delete,
}

struct Rule {
    call: Call,
    /// Matches keys containing this.
    key_contains: String,
    fault: Fault,
}

/// See the module docs.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    rules: Mutex<Vec<Rule>>,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            rules: Mutex::default(),
        }
    }

    /// Applies `fault` to the next `call` of a key containing `key_contains`.
    pub fn inject(&self, call: Call, key_contains: &str, fault: Fault) {
        self.rules.lock().expect("rules").push(Rule {
            call,
            key_contains: key_contains.to_string(),
            fault,
        });
    }

    /// Takes the first rule matching `call` of `key`, if any. The rule is
    /// gone before its fault runs, so a racing request the fault makes
    /// passes through untouched.
    fn take(&self, call: Call, key: &Key) -> Option<Fault> {
        let mut rules = self.rules.lock().expect("rules");
        let index = rules
            .iter()
            .position(|rule| rule.call == call && key.as_str().contains(&rule.key_contains))?;
        Some(rules.remove(index).fault)
    }
}

fn injected(key: &Key) -> StorageError {
    StorageError::Backend {
        message: format!("injected failure on {key}"),
        retryable: false,
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn get(&self, key: &Key, range: Option<ByteRange>) -> StorageResult<GetObject> {
        self.inner.get(key, range).await
    }

    async fn get_bytes(&self, key: &Key) -> StorageResult<(Bytes, ObjectMeta)> {
        self.inner.get_bytes(key).await
    }

    async fn head(&self, key: &Key) -> StorageResult<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn put(&self, key: &Key, body: ByteStream, mode: PutMode) -> StorageResult<ObjectMeta> {
        let fault = match mode {
            PutMode::IfMatch(_) => self.take(Call::PutIfMatch, key),
            PutMode::Overwrite | PutMode::CreateNew => None,
        };
        match fault {
            None => self.inner.put(key, body, mode).await,
            Some(Fault::Before(first)) => {
                first.await;
                self.inner.put(key, body, mode).await
            }
            Some(Fault::LoseResponse) => {
                self.inner.put(key, body, mode).await?;
                Err(StorageError::PreconditionFailed(key.to_string()))
            }
            Some(Fault::Fail) => Err(injected(key)),
        }
    }

    async fn delete(&self, key: &Key) -> StorageResult<()> {
        match self.take(Call::Delete, key) {
            None => self.inner.delete(key).await,
            Some(Fault::Before(first)) => {
                first.await;
                self.inner.delete(key).await
            }
            Some(Fault::LoseResponse) => {
                self.inner.delete(key).await?;
                Err(injected(key))
            }
            Some(Fault::Fail) => Err(injected(key)),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StorageResult<ListPage> {
        self.inner.list(prefix, start_after, limit).await
    }

    async fn copy(&self, from: &Key, to: &Key) -> StorageResult<ObjectMeta> {
        self.inner.copy(from, to).await
    }

    async fn compose(&self, sources: &[Key], dest: &Key) -> StorageResult<ObjectMeta> {
        self.inner.compose(sources, dest).await
    }

    async fn create_multipart(&self, key: &Key) -> StorageResult<String> {
        self.inner.create_multipart(key).await
    }

    async fn put_part(
        &self,
        key: &Key,
        upload_id: &str,
        number: u32,
        body: ByteStream,
    ) -> StorageResult<Part> {
        self.inner.put_part(key, upload_id, number, body).await
    }

    async fn complete_multipart(
        &self,
        key: &Key,
        upload_id: &str,
        parts: &[Part],
    ) -> StorageResult<ObjectMeta> {
        self.inner.complete_multipart(key, upload_id, parts).await
    }

    async fn abort_multipart(&self, key: &Key, upload_id: &str) -> StorageResult<()> {
        self.inner.abort_multipart(key, upload_id).await
    }

    async fn presign_get(&self, key: &Key) -> StorageResult<Option<String>> {
        self.inner.presign_get(key).await
    }
}
