//! Pushing an image with the OCI distribution API: each blob the registry
//! lacks (HEAD, then POST and one monolithic PUT), then the manifest under
//! its tag.
//!
//! Authentication is whatever the registry asks for when pinged at `/v2/`:
//! none, HTTP Basic, or the bearer-token flow of Docker Hub, GHCR, Harbor
//! and others (a token for `repository:<name>:pull,push` from the realm the
//! challenge names), with the given credentials.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::oci::{Blob, Image};

/// Connecting gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One request (a whole layer upload) gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// How much of an error body an error message quotes.
const ERROR_BODY_CHARS: usize = 500;

/// `HOST/REPOSITORY:TAG`, where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub host: String,
    pub repository: String,
    pub tag: String,
}

impl Reference {
    pub fn parse(reference: &str) -> Result<Self> {
        let shape = || format!("{reference:?} is not HOST/REPOSITORY:TAG");
        let (host, path) = reference.split_once('/').with_context(shape)?;
        let (repository, tag) = path.rsplit_once(':').with_context(shape)?;
        ensure!(
            !host.is_empty() && !repository.is_empty() && !tag.is_empty() && !tag.contains('/'),
            shape()
        );
        Ok(Self {
            host: host.to_string(),
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The host to talk to: Docker Hub's API is not served on `docker.io`.
    fn api_host(&self) -> &str {
        match self.host.as_str() {
            "docker.io" | "index.docker.io" => "registry-1.docker.io",
            host => host,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.host, self.repository, self.tag)
    }
}

/// A user name and password (or token) for the registry.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// HTTP instead of HTTPS (a registry on loopback or a trusted network).
    pub plain_http: bool,
    pub credentials: Option<Credentials>,
}

/// Pushes `image` to `reference`.
pub fn push(image: &Image, reference: &Reference, options: &Options) -> Result<()> {
    let session = Session::open(reference, options)
        .with_context(|| format!("cannot log in to {}", reference.host))?;
    for blob in image.blobs() {
        session
            .put_blob(blob)
            .with_context(|| format!("cannot push blob {} to {reference}", blob.digest))?;
    }
    session
        .put_manifest(&image.manifest, &reference.tag)
        .with_context(|| format!("cannot push the manifest to {reference}"))
}

/// An authorised connection to one repository.
struct Session {
    http: Client,
    base: Url,
    repository: String,
    /// The `Authorization` header value, when the registry wants one.
    authorization: Option<String>,
}

impl Session {
    fn open(reference: &Reference, options: &Options) -> Result<Self> {
        let http = Client::builder()
            .user_agent(concat!("berth-image/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot create the HTTP client")?;
        let scheme = if options.plain_http { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{}/", reference.api_host()))
            .with_context(|| format!("bad registry host {:?}", reference.host))?;
        let mut session = Self {
            http,
            base,
            repository: reference.repository.clone(),
            authorization: None,
        };
        session.authorization = session.authorize(options.credentials.as_ref())?;
        Ok(session)
    }

    /// Pings `/v2/`; when it answers 401, meets its challenge.
    fn authorize(&self, credentials: Option<&Credentials>) -> Result<Option<String>> {
        let response = self.http.get(self.url("v2/")?).send()?;
        if response.status() != StatusCode::UNAUTHORIZED {
            checked(response)?;
            return Ok(None);
        }
        let header = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .context("401 without a WWW-Authenticate challenge")?;
        let challenge = Challenge::parse(header)
            .with_context(|| format!("cannot read the challenge {header:?}"))?;
        match challenge.scheme.as_str() {
            "basic" => {
                let credentials = credentials.context(
                    "the registry wants a user name and password: set BERTH_IMAGE_USERNAME and BERTH_IMAGE_PASSWORD",
                )?;
                Ok(Some(format!("Basic {}", basic(credentials))))
            }
            "bearer" => self.token(&challenge, credentials).map(Some),
            other => bail!("unsupported authentication scheme {other:?}"),
        }
    }

    /// A bearer token for pushing to the repository, from the challenge's
    /// realm.
    fn token(&self, challenge: &Challenge, credentials: Option<&Credentials>) -> Result<String> {
        let realm = challenge
            .params
            .get("realm")
            .context("bearer challenge without a realm")?;
        let mut url = Url::parse(realm).with_context(|| format!("bad token realm {realm:?}"))?;
        if let Some(service) = challenge.params.get("service") {
            url.query_pairs_mut().append_pair("service", service);
        }
        url.query_pairs_mut().append_pair(
            "scope",
            &format!("repository:{}:pull,push", self.repository),
        );
        let mut request = self.http.get(url);
        if let Some(credentials) = credentials {
            request = request.header(AUTHORIZATION, format!("Basic {}", basic(credentials)));
        }
        let body = checked(request.send()?)?.bytes()?;
        let token: TokenResponse =
            serde_json::from_slice(&body).context("the token endpoint answered no JSON")?;
        token
            .token
            .or(token.access_token)
            .map(|token| format!("Bearer {token}"))
            .context("the token endpoint answered no token")
    }

    /// Uploads `blob` unless the repository has it already.
    fn put_blob(&self, blob: &Blob) -> Result<()> {
        let path = format!("v2/{}/blobs/{}", self.repository, blob.digest);
        let head = self.send(self.http.head(self.url(&path)?))?;
        match head.status() {
            StatusCode::OK => return Ok(()),
            StatusCode::NOT_FOUND => {}
            status => bail!("HEAD {path} answered {status}"),
        }
        let uploads = format!("v2/{}/blobs/uploads/", self.repository);
        let started = checked(self.send(self.http.post(self.url(&uploads)?))?)?;
        let location = started
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .context("the upload answer has no Location")?;
        let mut url = self
            .base
            .join(location)
            .with_context(|| format!("bad upload Location {location:?}"))?;
        url.query_pairs_mut().append_pair("digest", &blob.digest);
        let put = self
            .http
            .put(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(blob.bytes.clone());
        checked(self.send(put)?)?;
        Ok(())
    }

    fn put_manifest(&self, manifest: &Blob, tag: &str) -> Result<()> {
        let path = format!("v2/{}/manifests/{tag}", self.repository);
        let put = self
            .http
            .put(self.url(&path)?)
            .header(CONTENT_TYPE, manifest.media_type)
            .body(manifest.bytes.clone());
        checked(self.send(put)?)?;
        Ok(())
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("bad URL path {path:?}"))
    }

    fn send(&self, request: RequestBuilder) -> Result<Response> {
        let request = match &self.authorization {
            Some(authorization) => request.header(AUTHORIZATION, authorization),
            None => request,
        };
        Ok(request.send()?)
    }
}

/// The response when its status is 2xx; otherwise an error quoting the
/// start of its body (an OCI error JSON, usually).
fn checked(response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let url = response.url().clone();
    let body = response.text().unwrap_or_default();
    let body: String = body.chars().take(ERROR_BODY_CHARS).collect();
    bail!("{url} answered {status}: {body}")
}

fn basic(credentials: &Credentials) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", credentials.username, credentials.password))
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

/// One `WWW-Authenticate` challenge: `Bearer realm="...",service="..."`.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    /// Lower case.
    scheme: String,
    /// Keys in lower case; values unquoted.
    params: BTreeMap<String, String>,
}

impl Challenge {
    fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = BTreeMap::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if rest.is_empty() {
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let after = after.trim_start();
            let (value, remaining) = match after.strip_prefix('"') {
                Some(quoted) => quoted.split_once('"')?,
                None => after.split_once(',').unwrap_or((after, "")),
            };
            params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
            rest = remaining;
        }
        Some(Self {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_host_repository_and_tag() {
        let reference = Reference::parse("127.0.0.1:5000/berth/berth-registry:0.1.0").unwrap();
        assert_eq!(reference.host, "127.0.0.1:5000");
        assert_eq!(reference.repository, "berth/berth-registry");
        assert_eq!(reference.tag, "0.1.0");
        assert_eq!(
            reference.to_string(),
            "127.0.0.1:5000/berth/berth-registry:0.1.0"
        );
        assert_eq!(
            Reference::parse("docker.io/berth/x:1").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn references_without_a_host_or_tag_are_refused() {
        for bad in [
            "berth-registry",
            "ghcr.io/berth",
            "/berth:1",
            "ghcr.io/:1",
            "ghcr.io/a:",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bearer_challenges_keep_commas_inside_quotes() {
        let challenge = Challenge::parse(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(challenge.scheme, "bearer");
        assert_eq!(challenge.params["realm"], "https://ghcr.io/token");
        assert_eq!(challenge.params["service"], "ghcr.io");
        assert_eq!(challenge.params["scope"], "repository:a/b:pull,push");
    }

    #[test]
    fn basic_challenges_and_unquoted_values_parse() {
        let challenge = Challenge::parse(r#"Basic realm="Registry", charset=UTF-8"#).unwrap();
        assert_eq!(challenge.scheme, "basic");
        assert_eq!(challenge.params["realm"], "Registry");
        assert_eq!(challenge.params["charset"], "UTF-8");
        assert_eq!(Challenge::parse("Bearer").unwrap().params.len(), 0);
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn credentials_never_show_the_password() {
        let credentials = Credentials {
            username: "me".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }
}
