//! The referrers API: manifests whose `subject` is a given digest, read from
//! the per-subject records written at push time.

use futures::StreamExt;

use crate::oci::{Descriptor, Digest, RepoName};

use super::{Registry, ServiceResult, layout, records};

/// How many referrer records are read at once.
const READ_CONCURRENCY: usize = 16;

impl Registry {
    /// Descriptors of `subject`'s referrers in `repo`, optionally only those
    /// of one artifact type.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> ServiceResult<Vec<Descriptor>> {
        let keys = self
            .list_all(&layout::referrers_prefix(repo, subject))
            .await?;
        let reads = futures::stream::iter(keys)
            .map(|key| async move {
                match self.store.get_bytes(&key).await {
                    Ok((data, _)) => records::decode::<Descriptor>(&data, &key).map(Some),
                    Err(err) if err.is_not_found() => Ok(None),
                    Err(err) => Err(err.into()),
                }
            })
            .buffered(READ_CONCURRENCY);
        let found: Vec<ServiceResult<Option<Descriptor>>> = reads.collect().await;
        let mut descriptors = Vec::new();
        for descriptor in found.into_iter().filter_map(Result::transpose) {
            let descriptor = descriptor?;
            if artifact_type
                .is_none_or(|wanted| descriptor.artifact_type.as_deref() == Some(wanted))
            {
                descriptors.push(descriptor);
            }
        }
        Ok(descriptors)
    }
}
