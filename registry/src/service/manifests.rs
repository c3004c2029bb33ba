//! Manifests and tags: push (with reference checks, DESIGN invariant 3),
//! pull by tag or digest, and deletion.
//!
//! Write order keeps every crash harmless: content, then the repository's
//! link, then the referrer record, then the tag.
//!
//! Deleting by digest runs the other way and starts with the link, so that a
//! push racing it either sees the link gone or is seen by it:
//! - an index records itself under each child (`_parents/`) before checking
//!   that the children are linked, and a delete of a child removes the
//!   child's link before looking for such records: one of the two sees the
//!   other, and the delete is refused (the link put back) or the push fails
//!   with `MANIFEST_BLOB_UNKNOWN` (invariant 3: an accepted index keeps its
//!   children);
//! - a push checks, after writing its tags, that its link is still there; a
//!   delete that removed it meanwhile may have missed those tags, so the
//!   push takes them back and fails (invariants 1 and 4: the push loses,
//!   loudly, not a later pull).
//!
//! A crash in the middle of a delete can leave tags naming a manifest whose
//! link is gone: they answer `MANIFEST_UNKNOWN`, and `DELETE` of the tag
//! removes them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;

use crate::oci::{Algorithm, Descriptor, Digest, Manifest, Reference, RepoName, Tag};
use crate::storage::{Key, PutMode};

use super::records::{self, ManifestLink, ParentRecord, TagRecord};
use super::{Registry, ServiceError, ServiceResult, layout};

/// References checked at once when a manifest is pushed: a 4 MiB manifest
/// may name tens of thousands, each a storage request.
const CHECKS_AT_ONCE: usize = 16;

/// How long a `_parents/` record whose index is not linked counts as an
/// index push in progress (it records itself first, then checks and links;
/// seconds, or a minute with S3 retries). An older one is left over from a
/// push that failed or crashed, and no longer protects the child.
const PARENT_PUSH_GRACE: Duration = Duration::from_secs(10 * 60);

/// The result of a manifest push.
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    /// The `subject` it names, for the `OCI-Subject` header.
    pub subject: Option<Digest>,
    /// Tags now pointing at it, for the `OCI-Tag` header.
    pub tags: Vec<Tag>,
}

/// What HEAD needs: no body.
#[derive(Debug, Clone)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest as stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub info: ManifestInfo,
    pub body: Bytes,
}

impl Registry {
    /// Stores a manifest under `reference`, and under every tag in
    /// `extra_tags` (the `?tag=` parameter), after checking that everything
    /// it references is present in `repo`.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        extra_tags: &[Tag],
        content_type: Option<&str>,
        body: Bytes,
    ) -> ServiceResult<PutManifest> {
        let limit = self.limits.manifest_max_bytes;
        if body.len() as u64 > limit {
            return Err(ServiceError::ManifestTooLarge { limit });
        }
        let digest = match reference {
            Reference::Digest(claimed) => {
                let computed = Digest::of(claimed.algorithm(), &body);
                if computed != *claimed {
                    return Err(ServiceError::DigestInvalid(format!(
                        "manifest has digest {computed}, not {claimed}"
                    )));
                }
                computed
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        let manifest =
            Manifest::parse(&body, content_type).map_err(|e| ServiceError::ManifestInvalid(e.0))?;
        let parent_record = records::encode(&ParentRecord {
            index: digest.clone(),
        })?;
        for child in &manifest.children {
            self.store
                .put_bytes(
                    &layout::parent(repo, &child.digest, &digest)?,
                    parent_record.clone(),
                    PutMode::Overwrite,
                )
                .await?;
        }
        if let Err(err) = self.check_references(repo, &manifest).await {
            self.forget_parent(repo, &digest, &manifest).await;
            return Err(err);
        }

        let size = body.len() as u64;
        let blob = layout::blob(&digest)?;
        if self.store.head(&blob).await.is_err() {
            self.store
                .put_bytes(&blob, body, PutMode::Overwrite)
                .await?;
        }
        let link = ManifestLink {
            media_type: manifest.media_type.clone(),
            size,
        };
        let link_key = layout::manifest_link(repo, &digest)?;
        self.store
            .put_bytes(&link_key, records::encode(&link)?, PutMode::Overwrite)
            .await?;
        if let Some(subject) = &manifest.subject {
            let descriptor = Descriptor {
                media_type: manifest.media_type.clone(),
                digest: digest.clone(),
                size,
                urls: Vec::new(),
                annotations: manifest.annotations.clone(),
                artifact_type: manifest.artifact_type.clone(),
            };
            let key = layout::referrer(repo, &subject.digest, &digest)?;
            self.store
                .put_bytes(&key, records::encode(&descriptor)?, PutMode::Overwrite)
                .await?;
        }
        let mut tags: Vec<Tag> = extra_tags.to_vec();
        if let Reference::Tag(tag) = reference {
            tags.insert(0, tag.clone());
        }
        let mut seen = HashSet::new();
        tags.retain(|tag| seen.insert(tag.clone()));
        let record = records::encode(&TagRecord {
            digest: digest.clone(),
        })?;
        for tag in &tags {
            let key = layout::tag(repo, tag)?;
            self.store
                .put_bytes(&key, record.clone(), PutMode::Overwrite)
                .await?;
        }
        match self.store.head(&link_key).await {
            Ok(_) => {}
            Err(err) if err.is_not_found() => {
                self.take_back(repo, &digest, &manifest, &tags).await;
                return Err(ServiceError::DeletedDuringPush(digest));
            }
            Err(err) => return Err(err.into()),
        }
        self.ensure_repo(repo).await?;
        Ok(PutManifest {
            digest,
            subject: manifest.subject.map(|s| s.digest),
            tags,
        })
    }

    /// Media type, digest and size of a manifest, without its body.
    pub async fn manifest_info(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> ServiceResult<ManifestInfo> {
        let digest = self.resolve(repo, reference).await?;
        let key = layout::manifest_link(repo, &digest)?;
        let data = match self.store.get_bytes(&key).await {
            Ok((data, _)) => data,
            Err(err) if err.is_not_found() => {
                return Err(ServiceError::ManifestUnknown(reference.to_string()));
            }
            Err(err) => return Err(err.into()),
        };
        let link: ManifestLink = records::decode(&data, &key)?;
        Ok(ManifestInfo {
            digest,
            media_type: link.media_type,
            size: link.size,
        })
    }

    /// A manifest with its body.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> ServiceResult<StoredManifest> {
        let info = self.manifest_info(repo, reference).await?;
        let body = match self.manifest_bodies.get(&info.digest) {
            Some(body) => body,
            None => match self.store.get_bytes(&layout::blob(&info.digest)?).await {
                Ok((body, _)) => {
                    self.manifest_bodies.insert(&info.digest, &body);
                    body
                }
                Err(err) if err.is_not_found() => {
                    return Err(ServiceError::ManifestUnknown(reference.to_string()));
                }
                Err(err) => return Err(err.into()),
            },
        };
        self.metrics.bytes_out.inc_by(body.len() as u64);
        Ok(StoredManifest { info, body })
    }

    /// Deletes a tag, or a manifest by digest together with the tags that
    /// name it and its referrer record.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> ServiceResult<()> {
        match reference {
            Reference::Tag(tag) => {
                let key = layout::tag(repo, tag)?;
                if self.store.head(&key).await.is_err() {
                    return Err(ServiceError::ManifestUnknown(tag.to_string()));
                }
                self.store.delete(&key).await?;
                Ok(())
            }
            Reference::Digest(digest) => self.delete_manifest_by_digest(repo, digest).await,
        }
    }

    async fn delete_manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> ServiceResult<()> {
        let stored = self
            .get_manifest(repo, &Reference::Digest(digest.clone()))
            .await?;
        let link_key = layout::manifest_link(repo, digest)?;
        self.store.delete(&link_key).await?;
        if let Some(parent) = self.live_parent(repo, digest).await? {
            let link = ManifestLink {
                media_type: stored.info.media_type.clone(),
                size: stored.info.size,
            };
            self.store
                .put_bytes(&link_key, records::encode(&link)?, PutMode::Overwrite)
                .await?;
            return Err(ServiceError::ManifestReferenced {
                child: digest.clone(),
                parent,
            });
        }
        let parsed = Manifest::parse(&stored.body, Some(&stored.info.media_type)).ok();
        if let Some(manifest) = &parsed {
            for child in &manifest.children {
                self.store
                    .delete(&layout::parent(repo, &child.digest, digest)?)
                    .await?;
            }
        }
        if let Some(subject) = parsed.and_then(|m| m.subject) {
            self.store
                .delete(&layout::referrer(repo, &subject.digest, digest)?)
                .await?;
        }
        for tag in self.tags_naming(repo, digest).await? {
            self.store.delete(&layout::tag(repo, &tag)?).await?;
        }
        Ok(())
    }

    /// An index of `repo` that lists `child` and is linked, or being pushed
    /// (see the module docs). Records left by pushes that failed long ago
    /// are removed on the way.
    async fn live_parent(&self, repo: &RepoName, child: &Digest) -> ServiceResult<Option<Digest>> {
        for key in self.list_all(&layout::parents_prefix(repo, child)).await? {
            let (data, meta) = match self.store.get_bytes(&key).await {
                Ok(found) => found,
                Err(err) if err.is_not_found() => continue,
                Err(err) => return Err(err.into()),
            };
            let parent = records::decode::<ParentRecord>(&data, &key)?.index;
            match self
                .store
                .head(&layout::manifest_link(repo, &parent)?)
                .await
            {
                Ok(_) => return Ok(Some(parent)),
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(err.into()),
            }
            let recorded = meta.last_modified;
            let age = SystemTime::now()
                .duration_since(recorded)
                .unwrap_or(Duration::ZERO);
            if age < PARENT_PUSH_GRACE {
                return Ok(Some(parent));
            }
            self.store.delete(&key).await?;
        }
        Ok(None)
    }

    /// Best effort, after a push of `digest` failed: its `_parents/` records.
    async fn forget_parent(&self, repo: &RepoName, digest: &Digest, manifest: &Manifest) {
        for child in &manifest.children {
            if let Ok(key) = layout::parent(repo, &child.digest, digest)
                && let Err(err) = self.store.delete(&key).await
            {
                tracing::warn!(%repo, %digest, %err, "removing an index's parent record");
            }
        }
    }

    /// Best effort, after a delete removed `digest`'s link while it was
    /// being pushed: the tags (those still naming it), referrer record and
    /// parent records the push wrote.
    async fn take_back(&self, repo: &RepoName, digest: &Digest, manifest: &Manifest, tags: &[Tag]) {
        for tag in tags {
            let Ok(key) = layout::tag(repo, tag) else {
                continue;
            };
            let names_it = match self.store.get_bytes(&key).await {
                Ok((data, _)) => records::decode::<TagRecord>(&data, &key)
                    .is_ok_and(|record| record.digest == *digest),
                Err(_) => false,
            };
            if names_it && let Err(err) = self.store.delete(&key).await {
                tracing::warn!(%repo, %tag, %err, "taking back a tag");
            }
        }
        if let Some(subject) = &manifest.subject
            && let Ok(key) = layout::referrer(repo, &subject.digest, digest)
            && let Err(err) = self.store.delete(&key).await
        {
            tracing::warn!(%repo, %digest, %err, "taking back a referrer record");
        }
        self.forget_parent(repo, digest, manifest).await;
    }

    /// Tags of `repo` that currently name `digest`.
    async fn tags_naming(&self, repo: &RepoName, digest: &Digest) -> ServiceResult<Vec<Tag>> {
        let mut naming = Vec::new();
        for key in self.list_all(&layout::tags_prefix(repo)).await? {
            let (data, _) = match self.store.get_bytes(&key).await {
                Ok(found) => found,
                Err(err) if err.is_not_found() => continue,
                Err(err) => return Err(err.into()),
            };
            let record: TagRecord = records::decode(&data, &key)?;
            if record.digest == *digest
                && let Some(name) = key.as_str().rsplit('/').next()
            {
                naming.push(Tag::parse(name)?);
            }
        }
        Ok(naming)
    }

    /// The digest a reference names in `repo`.
    async fn resolve(&self, repo: &RepoName, reference: &Reference) -> ServiceResult<Digest> {
        match reference {
            Reference::Digest(digest) => Ok(digest.clone()),
            Reference::Tag(tag) => {
                let key = layout::tag(repo, tag)?;
                match self.store.get_bytes(&key).await {
                    Ok((data, _)) => Ok(records::decode::<TagRecord>(&data, &key)?.digest),
                    Err(err) if err.is_not_found() => {
                        Err(ServiceError::ManifestUnknown(tag.to_string()))
                    }
                    Err(err) => Err(err.into()),
                }
            }
        }
    }

    /// `MANIFEST_BLOB_UNKNOWN` unless every blob and child manifest the
    /// manifest needs is linked in `repo`. Each distinct reference is
    /// checked once, [`CHECKS_AT_ONCE`] at a time.
    async fn check_references(&self, repo: &RepoName, manifest: &Manifest) -> ServiceResult<()> {
        let mut needed: Vec<(Key, Digest)> = Vec::new();
        let mut seen = HashSet::new();
        for blob in &manifest.blobs {
            if seen.insert((false, &blob.digest)) {
                needed.push((layout::blob_link(repo, &blob.digest)?, blob.digest.clone()));
            }
        }
        for child in &manifest.children {
            if seen.insert((true, &child.digest)) {
                needed.push((
                    layout::manifest_link(repo, &child.digest)?,
                    child.digest.clone(),
                ));
            }
        }
        let store = &self.store;
        let mut checks = futures::stream::iter(needed)
            .map(|(key, digest)| async move { (store.head(&key).await, digest) })
            .buffer_unordered(CHECKS_AT_ONCE);
        while let Some((result, digest)) = checks.next().await {
            match result {
                Ok(_) => {}
                Err(err) if err.is_not_found() => {
                    return Err(ServiceError::ManifestBlobUnknown(digest));
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}
