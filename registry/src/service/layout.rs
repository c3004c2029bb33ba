//! Where everything lives in the object store. The one place that builds
//! keys; every component comes from a validated type, so no request can
//! reach outside these prefixes.
//!
//! ```text
//! blobs/<alg>/<hex>                                  content, one copy per digest
//! repositories/<name>/_blobs/<alg>/<hex>             blob link: R may serve it
//! repositories/<name>/_manifests/<alg>/<hex>         manifest link (media type, size)
//! repositories/<name>/_tags/<tag>                    tag → digest
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>   subject → referrer descriptor
//! repositories/<name>/_parents/<alg>/<hex>/<alg>-<hex32>   child manifest → index listing it
//! catalog/<name>!                                    repository exists
//! uploads/<id>/state                                 upload offset, hash state, chunks
//! uploads/<id>/chunks/<offset>-<nonce>               upload bytes
//! ```
//!
//! Name components start with `[a-z0-9]`, so `_blobs` and friends never
//! collide with a nested repository. The catalog key ends in `!`, which
//! sorts below every character a name may hold: listing `catalog/` yields
//! names in lexical order, and `a!` never collides with the directory `a/`.

use crate::ids::random_id;
use crate::oci::{Digest, RepoName, Tag};
use crate::storage::{Key, StorageError};

use super::{ServiceError, ServiceResult};

pub const CATALOG_PREFIX: &str = "catalog/";
pub const UPLOADS_PREFIX: &str = "uploads/";

fn key(s: String) -> ServiceResult<Key> {
    Key::new(s).map_err(ServiceError::from)
}

pub fn blob(digest: &Digest) -> ServiceResult<Key> {
    key(format!(
        "blobs/{}/{}",
        digest.algorithm().as_str(),
        digest.hex()
    ))
}

pub fn blob_link(repo: &RepoName, digest: &Digest) -> ServiceResult<Key> {
    key(format!(
        "repositories/{repo}/_blobs/{}/{}",
        digest.algorithm().as_str(),
        digest.hex()
    ))
}

pub fn manifest_link(repo: &RepoName, digest: &Digest) -> ServiceResult<Key> {
    key(format!(
        "repositories/{repo}/_manifests/{}/{}",
        digest.algorithm().as_str(),
        digest.hex()
    ))
}

pub fn tag(repo: &RepoName, tag: &Tag) -> ServiceResult<Key> {
    key(format!("repositories/{repo}/_tags/{tag}"))
}

pub fn tags_prefix(repo: &RepoName) -> String {
    format!("repositories/{repo}/_tags/")
}

pub fn referrer(repo: &RepoName, subject: &Digest, referrer: &Digest) -> ServiceResult<Key> {
    key(format!(
        "{}{}-{}",
        referrers_prefix(repo, subject),
        referrer.algorithm().as_str(),
        referrer.hex()
    ))
}

pub fn referrers_prefix(repo: &RepoName, subject: &Digest) -> String {
    format!(
        "repositories/{repo}/_referrers/{}/{}/",
        subject.algorithm().as_str(),
        subject.hex()
    )
}

/// Written before an index's children are checked, so that deleting a
/// child sees the index (DESIGN invariant 3; `service/manifests.rs`). The
/// record holds the index's digest; its name carries the first 128 bits of
/// it, enough to keep indexes apart and short enough for stores that put
/// an object's key in a file name (s3s-fs, which the tests run on).
pub fn parent(repo: &RepoName, child: &Digest, parent: &Digest) -> ServiceResult<Key> {
    let hex = parent.hex();
    key(format!(
        "{}{}-{}",
        parents_prefix(repo, child),
        parent.algorithm().as_str(),
        &hex[..hex.len().min(32)]
    ))
}

pub fn parents_prefix(repo: &RepoName, child: &Digest) -> String {
    format!(
        "repositories/{repo}/_parents/{}/{}/",
        child.algorithm().as_str(),
        child.hex()
    )
}

pub fn catalog_entry(repo: &RepoName) -> ServiceResult<Key> {
    key(format!("{CATALOG_PREFIX}{repo}!"))
}

/// The repository name of a catalog key, if it is one.
pub fn repo_of_catalog_key(key: &Key) -> Option<&str> {
    key.as_str().strip_prefix(CATALOG_PREFIX)?.strip_suffix('!')
}

pub fn upload_state(id: &str) -> ServiceResult<Key> {
    key(format!("{UPLOADS_PREFIX}{id}/state"))
}

/// A fresh key per chunk write: two racing writers never share one.
pub fn upload_chunk(id: &str, offset: u64) -> ServiceResult<Key> {
    let nonce = random_id().map_err(StorageError::from)?;
    key(format!(
        "{UPLOADS_PREFIX}{id}/chunks/{offset:020}-{}",
        &nonce[..8]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_keys_sort_like_names() -> ServiceResult<()> {
        let names = ["a", "a-b", "a/b", "a0", "ab"];
        let mut keys = Vec::new();
        for name in names {
            keys.push(catalog_entry(&RepoName::parse(name)?)?);
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let back: Vec<_> = keys.iter().filter_map(repo_of_catalog_key).collect();
        assert_eq!(back, names);
        Ok(())
    }
}
