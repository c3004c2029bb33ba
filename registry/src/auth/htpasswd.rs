//! Apache htpasswd files with bcrypt hashes (`htpasswd -B`), the format
//! distribution and zot read too, so existing files keep working.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::Semaphore;

use super::AuthError;

/// Verified credentials kept to skip bcrypt (tens of milliseconds of CPU by
/// design) on every request of a session; cleared when it grows past this.
const CACHE_LIMIT: usize = 4096;

/// How long a password check waits for a free bcrypt slot before the
/// request is refused: enough to ride out a burst of a few logins (each
/// check takes about 0.1 s at cost 10), short enough that a flood of wrong
/// passwords is turned away instead of piling up connections.
const QUEUE_WAIT: Duration = Duration::from_millis(500);

/// What unknown users' passwords are checked against; nobody can log in
/// with it, because an unknown user is refused whatever bcrypt says.
const DUMMY_PASSWORD: &str = "berth: no such user";

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
    /// Slots for bcrypt runs, about one per core: each run holds a core for
    /// tens of milliseconds, and unbounded, 64 wrong passwords at once
    /// slowed a cached login from 1.4 ms to 120 ms.
    checks: Arc<Semaphore>,
    /// See [`QUEUE_WAIT`].
    queue_wait: Duration,
    /// A hash that unknown users are checked against, so that they are
    /// answered as slowly as known ones and timing does not tell which users
    /// exist. Made on first need (making it costs as much as a check).
    dummy: Arc<OnceLock<String>>,
    /// The file's most common cost, the dummy hash's cost.
    dummy_cost: u32,
    /// bcrypt runs so far, cached logins not counted.
    runs: AtomicU64,
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
        let dummy_cost = usual_cost(users.values());
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Ok(Self {
            users,
            verified: Mutex::new(Default::default()),
            checks: Arc::new(Semaphore::new(cores)),
            queue_wait: QUEUE_WAIT,
            dummy: Arc::default(),
            dummy_cost,
            runs: AtomicU64::new(0),
        })
    }

    /// Whether `password` is `user`'s. bcrypt runs on a blocking thread so
    /// that it never stalls the request workers, for unknown users too (see
    /// `dummy`); [`AuthError::Busy`] when no bcrypt slot frees up in time.
    pub async fn verify(&self, user: &str, password: &str) -> Result<bool, AuthError> {
        let hash = self.users.get(user).cloned();
        let key = hash.as_deref().map(|hash| cache_key(hash, password));
        if let Some(key) = &key
            && self.verified.lock().is_ok_and(|set| set.contains(key))
        {
            return Ok(true);
        }
        let Ok(Ok(permit)) =
            tokio::time::timeout(self.queue_wait, self.checks.clone().acquire_owned()).await
        else {
            return Err(AuthError::Busy);
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        let password = password.to_string();
        let (dummy, cost) = (self.dummy.clone(), self.dummy_cost);
        // The permit moves into the closure: a client that hangs up does not
        // free the slot while its bcrypt still runs.
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match hash {
                Some(hash) => bcrypt::verify(password, &hash).unwrap_or(false),
                None => {
                    let dummy = dummy
                        .get_or_init(|| bcrypt::hash(DUMMY_PASSWORD, cost).unwrap_or_default());
                    let _ = bcrypt::verify(password, dummy);
                    false
                }
            }
        })
        .await
        .unwrap_or(false);
        if ok
            && let Some(key) = key
            && let Ok(mut set) = self.verified.lock()
        {
            if set.len() >= CACHE_LIMIT {
                set.clear();
            }
            set.insert(key);
        }
        Ok(ok)
    }
}

/// The cache's key for a (hash, password) pair.
fn cache_key(hash: &str, password: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(hash.as_bytes())
        .chain_update([0])
        .chain_update(password.as_bytes())
        .finalize()
        .into()
}

/// The most common cost among `$2y$NN$...` hashes (the higher on a tie), or
/// bcrypt's default when none can be read: the cost most users' checks take.
fn usual_cost<'a>(hashes: impl Iterator<Item = &'a String>) -> u32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for cost in hashes.filter_map(|h| h.get(4..6)?.parse::<u32>().ok()) {
        if (4..=31).contains(&cost) {
            *counts.entry(cost).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(cost, n)| (n, cost))
        .map_or(bcrypt::DEFAULT_COST, |(cost, _)| cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_bcrypt_and_rejects_everything_else() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let file = Htpasswd::parse(&format!("# users\n\nalice:{hash}\n")).unwrap();
        assert!(file.verify("alice", "pw").await.unwrap());
        assert!(
            file.verify("alice", "pw").await.unwrap(),
            "again, from the cache"
        );
        assert!(!file.verify("alice", "wrong").await.unwrap());
        assert!(!file.verify("bob", "pw").await.unwrap());
    }

    /// Regression: unknown users were refused at once while known ones ran
    /// bcrypt, so timing told which users exist. Both run bcrypt now, the
    /// unknown ones against a dummy hash of the file's cost.
    #[tokio::test]
    async fn unknown_users_run_bcrypt_like_known_ones() {
        let hash = bcrypt::hash("pw", 5).unwrap();
        let file = Htpasswd::parse(&format!("alice:{hash}\n")).unwrap();
        assert_eq!(file.dummy_cost, 5);
        assert!(!file.verify("alice", "wrong").await.unwrap());
        assert_eq!(file.runs.load(Ordering::Relaxed), 1);
        assert!(!file.verify("bob", "wrong").await.unwrap());
        assert_eq!(file.runs.load(Ordering::Relaxed), 2);
        let dummy = file.dummy.get().map(String::as_str);
        assert!(
            dummy.is_some_and(|d| d.get(3..7) == Some("$05$")),
            "{dummy:?}"
        );
        assert!(
            !file.verify("bob", DUMMY_PASSWORD).await.unwrap(),
            "the dummy's password opens nothing"
        );
        assert!(file.verify("alice", "pw").await.unwrap());
        assert!(file.verify("alice", "pw").await.unwrap(), "cached");
        assert_eq!(
            file.runs.load(Ordering::Relaxed),
            4,
            "a cached login runs no bcrypt"
        );
    }

    #[test]
    fn the_dummy_cost_is_the_files_usual_one() {
        let hashes = ["$2y$10$a", "$2y$12$b", "$2b$10$c", "$2y$x"].map(String::from);
        assert_eq!(usual_cost(hashes.iter()), 10);
        assert_eq!(usual_cost([].iter()), bcrypt::DEFAULT_COST);
    }

    /// Regression: every wrong password ran bcrypt at once, without bound.
    /// With every slot taken, a check waits `queue_wait` and is refused as
    /// busy, while a cached login still passes at once.
    #[tokio::test(start_paused = true)]
    async fn bcrypt_runs_are_bounded_and_a_full_queue_is_refused() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let mut file = Htpasswd::parse(&format!("alice:{hash}\n")).unwrap();
        file.checks = Arc::new(Semaphore::new(1));
        assert!(file.verify("alice", "pw").await.unwrap(), "now cached");
        let held = file.checks.clone().acquire_owned().await.unwrap();
        let started = tokio::time::Instant::now();
        for (user, password) in [("alice", "wrong"), ("bob", "pw")] {
            assert!(matches!(
                file.verify(user, password).await,
                Err(AuthError::Busy)
            ));
        }
        let waited = started.elapsed();
        assert!(
            waited >= 2 * QUEUE_WAIT && waited < 2 * QUEUE_WAIT + Duration::from_millis(10),
            "each waited, boundedly: {waited:?}"
        );
        assert_eq!(file.runs.load(Ordering::Relaxed), 1, "no bcrypt ran");
        assert!(
            file.verify("alice", "pw").await.unwrap(),
            "cached: no slot needed"
        );
        drop(held);
        assert!(!file.verify("alice", "wrong").await.unwrap());
        assert_eq!(file.checks.available_permits(), 1, "the slot came back");
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
