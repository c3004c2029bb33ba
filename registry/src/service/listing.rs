//! Paginated listings: tags of a repository and the catalog. Both page
//! through storage in key order, so `last` maps to a `start_after` and no
//! request walks more than it returns.

use crate::oci::RepoName;
use crate::storage::Key;

use super::{Registry, ServiceError, ServiceResult, layout};

/// Most entries one page returns, whatever `n` asks for.
pub const MAX_PAGE: usize = 10_000;
/// Page size when reading a whole listing from storage.
const STORAGE_PAGE: usize = 1_000;

/// One page of names, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

impl Page {
    /// What `n=0` asks for.
    fn empty() -> Self {
        Self {
            items: Vec::new(),
            more: false,
        }
    }
}

impl Registry {
    /// Tags of `repo` in lexical order, after `last`, at most `n`.
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> ServiceResult<Page> {
        if n == Some(0) {
            // An empty page still answers NAME_UNKNOWN for a repository
            // that does not exist, as every other page size does.
            if !self.repo_exists(repo).await? {
                return Err(ServiceError::NameUnknown(repo.to_string()));
            }
            return Ok(Page::empty());
        }
        let prefix = layout::tags_prefix(repo);
        let page = self
            .list_page(&prefix, last.map(|l| format!("{prefix}{l}")), n)
            .await?;
        let items: Vec<String> = page
            .0
            .iter()
            .filter_map(|k| k.as_str().strip_prefix(&prefix).map(str::to_string))
            .collect();
        if items.is_empty() && !self.repo_exists(repo).await? {
            return Err(ServiceError::NameUnknown(repo.to_string()));
        }
        Ok(Page {
            items,
            more: page.1,
        })
    }

    /// Repository names in lexical order, after `last`, at most `n`.
    pub async fn catalog(&self, last: Option<&str>, n: Option<usize>) -> ServiceResult<Page> {
        if n == Some(0) {
            return Ok(Page::empty());
        }
        let start = last.map(|l| format!("{}{l}!", layout::CATALOG_PREFIX));
        let (keys, more) = self.list_page(layout::CATALOG_PREFIX, start, n).await?;
        let items = keys
            .iter()
            .filter_map(layout::repo_of_catalog_key)
            .map(str::to_string)
            .collect();
        Ok(Page { items, more })
    }

    /// Every key below `prefix`.
    pub(super) async fn list_all(&self, prefix: &str) -> ServiceResult<Vec<Key>> {
        Ok(self.list_page(prefix, None, None).await?.0)
    }

    /// Up to `n` keys (all when `None`, capped at [`MAX_PAGE`] when given)
    /// after `start_after`, and whether more follow. A store's `truncated`
    /// is exact, so a full page needs no second look to decide on `Link`.
    async fn list_page(
        &self,
        prefix: &str,
        mut start_after: Option<String>,
        n: Option<usize>,
    ) -> ServiceResult<(Vec<Key>, bool)> {
        let want = n.map(|n| n.min(MAX_PAGE));
        let mut keys = Vec::new();
        loop {
            let room = want.map_or(STORAGE_PAGE, |w| (w - keys.len()).min(STORAGE_PAGE));
            if room == 0 {
                // `n=0`: nothing asked for; whether anything exists decides.
                let peek = self.store.list(prefix, start_after.as_deref(), 1).await?;
                return Ok((keys, !peek.keys.is_empty()));
            }
            let page = self
                .store
                .list(prefix, start_after.as_deref(), room)
                .await?;
            start_after = page.keys.last().map(|k| k.to_string()).or(start_after);
            keys.extend(page.keys);
            if !page.truncated || want.is_some_and(|w| keys.len() >= w) {
                return Ok((keys, page.truncated));
            }
        }
    }
}
