//! Apache htpasswd files with bcrypt hashes (`htpasswd -B`), the format
//! distribution and zot read too, so existing files keep working.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Verified credentials kept to skip bcrypt (tens of milliseconds of CPU by
/// design) on every request of a session; cleared when it grows past this.
const CACHE_LIMIT: usize = 4096;

#[derive(Debug, Error)]
pub enum HtpasswdError {
    #[error("cannot read htpasswd file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("htpasswd file {path}, line {line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Users and their bcrypt hashes.
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// SHA-256 of (hash, password) pairs that bcrypt accepted: a fast path
    /// that never holds a password itself.
    verified: Mutex<std::collections::HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for Htpasswd {
    /// Names the users, never the hashes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut users: Vec<_> = self.users.keys().collect();
        users.sort();
        f.debug_struct("Htpasswd")
            .field("users", &users)
            .finish_non_exhaustive()
    }
}

impl Htpasswd {
    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|(line, message)| HtpasswdError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        })
    }

    /// Parses `user:hash` lines; blank lines and `#` comments are skipped.
    /// Errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err((i + 1, "expected user:hash".into()));
            };
            if user.is_empty() {
                return Err((i + 1, "empty user name".into()));
            }
            if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
                return Err((
                    i + 1,
                    format!("user {user:?} has no bcrypt hash; create it with `htpasswd -B`"),
                ));
            }
            if users.insert(user.to_string(), hash.to_string()).is_some() {
                return Err((i + 1, format!("user {user:?} appears twice")));
            }
        }
        Ok(Self {
            users,
            verified: Mutex::new(Default::default()),
        })
    }

    /// Whether `password` is `user`'s. bcrypt runs on a blocking thread so
    /// that it never stalls the request workers.
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(hash.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if self.verified.lock().is_ok_and(|set| set.contains(&key)) {
            return true;
        }
        let (password, hash) = (password.to_string(), hash.clone());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|result| result.unwrap_or(false));
        if ok && let Ok(mut set) = self.verified.lock() {
            if set.len() >= CACHE_LIMIT {
                set.clear();
            }
            set.insert(key);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_bcrypt_and_rejects_everything_else() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let file = Htpasswd::parse(&format!("# users\n\nalice:{hash}\n")).unwrap();
        assert!(file.verify("alice", "pw").await);
        assert!(file.verify("alice", "pw").await, "again, from the cache");
        assert!(!file.verify("alice", "wrong").await);
        assert!(!file.verify("bob", "pw").await);
    }

    #[test]
    fn errors_name_the_line() {
        let err = Htpasswd::parse("alice:$2y$05$abc\nbob:{SHA}xyz\n").err();
        assert_eq!(err.as_ref().map(|e| e.0), Some(2));
        assert!(err.is_some_and(|e| e.1.contains("htpasswd -B")));
        assert_eq!(Htpasswd::parse("nocolon\n").err().map(|e| e.0), Some(1));
        assert!(
            Htpasswd::parse("a:$2y$x\na:$2y$y\n").is_err(),
            "duplicate user"
        );
    }
}
