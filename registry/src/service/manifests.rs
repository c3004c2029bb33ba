//! Manifests and tags: push (with reference checks, DESIGN invariant 3),
//! pull by tag or digest, and deletion.
//!
//! Write order keeps every crash harmless: content, then the repository's
//! link, then the referrer record, then the tag.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::oci::{Algorithm, Descriptor, Digest, Manifest, Reference, RepoName, Tag};
use crate::storage::{Key, PutMode};

use super::records::{self, ManifestLink, TagRecord};
use super::{Registry, ServiceError, ServiceResult, layout};

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
        self.check_references(repo, &manifest).await?;

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
        self.store
            .put_bytes(
                &layout::manifest_link(repo, &digest)?,
                records::encode(&link)?,
                PutMode::Overwrite,
            )
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
        tags.dedup();
        let record = records::encode(&TagRecord {
            digest: digest.clone(),
        })?;
        for tag in &tags {
            let key = layout::tag(repo, tag)?;
            self.store
                .put_bytes(&key, record.clone(), PutMode::Overwrite)
                .await?;
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
        let parsed = Manifest::parse(&stored.body, Some(&stored.info.media_type)).ok();
        if let Some(subject) = parsed.and_then(|m| m.subject) {
            self.store
                .delete(&layout::referrer(repo, &subject.digest, digest)?)
                .await?;
        }
        for tag in self.tags_naming(repo, digest).await? {
            self.store.delete(&layout::tag(repo, &tag)?).await?;
        }
        self.store
            .delete(&layout::manifest_link(repo, digest)?)
            .await?;
        Ok(())
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
    /// manifest needs is linked in `repo`. Checks run concurrently.
    async fn check_references(&self, repo: &RepoName, manifest: &Manifest) -> ServiceResult<()> {
        let mut needed: Vec<(Key, &Digest)> = Vec::new();
        for blob in &manifest.blobs {
            needed.push((layout::blob_link(repo, &blob.digest)?, &blob.digest));
        }
        for child in &manifest.children {
            needed.push((layout::manifest_link(repo, &child.digest)?, &child.digest));
        }
        let mut checks: FuturesUnordered<_> = needed
            .iter()
            .map(|(key, digest)| async move { (self.store.head(key).await, *digest) })
            .collect();
        while let Some((result, digest)) = checks.next().await {
            match result {
                Ok(_) => {}
                Err(err) if err.is_not_found() => {
                    return Err(ServiceError::ManifestBlobUnknown(digest.clone()));
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}
