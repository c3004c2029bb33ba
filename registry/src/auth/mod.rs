//! Client authentication. Today: htpasswd basic auth (bcrypt). Every
//! replica reads the same mounted file, so any replica can check any
//! request; nothing about a login is kept between requests but a cache of
//! verified credentials, which is safe to lose.

mod htpasswd;

pub use htpasswd::{Htpasswd, HtpasswdError};

use thiserror::Error;

use crate::config::AuthConfig;

/// Who the caller proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
}

/// Why credentials could not be checked (as opposed to being wrong).
#[derive(Debug, Error)]
pub enum AuthError {
    /// Every bcrypt slot stayed taken for the whole wait; the client should
    /// retry shortly.
    #[error("too many logins are being checked; retry shortly")]
    Busy,
}

/// Checks the credentials of requests to `/v2/`.
#[derive(Debug)]
pub struct Authenticator {
    pub realm: String,
    htpasswd: Htpasswd,
}

impl Authenticator {
    /// Reads the configured credential sources.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>, HtpasswdError> {
        let Some(source) = &config.htpasswd else {
            return Ok(None);
        };
        Ok(Some(Self {
            realm: config.realm.clone(),
            htpasswd: Htpasswd::load(&source.path)?,
        }))
    }

    /// The identity behind an `Authorization` header value, if it proves one.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Option<Identity>, AuthError> {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Ok(None);
        };
        let ok = self.htpasswd.verify(&user, &password).await?;
        Ok(ok.then_some(Identity { user }))
    }
}

/// `Basic base64(user:password)`, decoded.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parsing() {
        // "alice:s3cr:et" — the password may contain colons.
        assert_eq!(
            basic_credentials("Basic YWxpY2U6czNjcjpldA=="),
            Some(("alice".into(), "s3cr:et".into()))
        );
        assert_eq!(
            basic_credentials("basic  YWxpY2U6czNjcjpldA== "),
            Some(("alice".into(), "s3cr:et".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Basic YWxpY2U="), None, "no colon");
    }
}
