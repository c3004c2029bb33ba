//! Registry operations as a client performs them, and the test data.

use anyhow::{Result, bail, ensure};
use bytes::Bytes;
use http::{Method, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::client::{Conn, location_path, with_query};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `size` incompressible bytes from `seed` (xorshift), and their digest.
pub fn blob(size: usize, seed: u64) -> (Bytes, String) {
    let mut v = vec![0u8; size];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let digest = sha256(&v);
    (Bytes::from(v), digest)
}

/// A small OCI image config and one 4 KiB layer, and an image manifest
/// pointing at them, padded with an annotation to about 512 bytes.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: (Bytes, String),
    pub layer: (Bytes, String),
    pub manifest: Bytes,
    pub digest: String,
}

impl Image {
    pub fn new(seed: u64) -> Self {
        let config = Bytes::from(format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Env\":[\"SEED={seed}\"]}},\
             \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}}}}"
        ));
        let config = (config.clone(), sha256(&config));
        let layer = blob(4096, seed ^ 0x5eed);
        let mut manifest = String::new();
        for pad in 0..200 {
            manifest = format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\
                 \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{}\",\"size\":{}}},\
                 \"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{}\",\"size\":{}}}],\
                 \"annotations\":{{\"org.example.pad\":\"{}\"}}}}",
                config.1,
                config.0.len(),
                layer.1,
                layer.0.len(),
                "x".repeat(pad)
            );
            if manifest.len() >= 512 {
                break;
            }
        }
        let manifest = Bytes::from(manifest);
        let digest = sha256(&manifest);
        Self {
            config,
            layer,
            manifest,
            digest,
        }
    }

    /// Pushes both blobs and the manifest under `tag`.
    pub async fn push(&self, c: &mut Conn, repo: &str, tag: &str) -> Result<()> {
        push_monolithic(c, repo, &self.config.0, &self.config.1).await?;
        push_monolithic(c, repo, &self.layer.0, &self.layer.1).await?;
        put_manifest(c, repo, tag, &self.manifest).await
    }
}

pub async fn start_upload(c: &mut Conn, repo: &str) -> Result<String> {
    let r = c
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            Bytes::new(),
        )
        .await?;
    if r.status != StatusCode::ACCEPTED {
        bail!("POST upload in {repo}: {} {:?}", r.status, r.body);
    }
    location_path(r.header("location").unwrap_or_default())
}

/// POST, then one PUT with the whole body (what crane and docker do).
pub async fn push_monolithic(c: &mut Conn, repo: &str, data: &Bytes, digest: &str) -> Result<()> {
    let loc = start_upload(c, repo).await?;
    let r = c
        .call(
            Method::PUT,
            &with_query(&loc, "digest", digest),
            &[("content-type", "application/octet-stream")],
            data.clone(),
        )
        .await?;
    if r.status != StatusCode::CREATED {
        bail!("PUT blob in {repo}: {} {:?}", r.status, r.body);
    }
    Ok(())
}

/// POST, PATCH chunks with Content-Range, then an empty PUT with the digest.
pub async fn push_chunked(
    c: &mut Conn,
    repo: &str,
    data: &Bytes,
    digest: &str,
    chunk: usize,
) -> Result<()> {
    let mut loc = start_upload(c, repo).await?;
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        let range = format!("{}-{}", off, end - 1);
        let r = c
            .call(
                Method::PATCH,
                &loc,
                &[
                    ("content-type", "application/octet-stream"),
                    ("content-range", &range),
                ],
                data.slice(off..end),
            )
            .await?;
        if r.status != StatusCode::ACCEPTED {
            bail!("PATCH {range} in {repo}: {} {:?}", r.status, r.body);
        }
        loc = location_path(r.header("location").unwrap_or(&loc))?;
        off = end;
    }
    let r = c
        .call(
            Method::PUT,
            &with_query(&loc, "digest", digest),
            &[],
            Bytes::new(),
        )
        .await?;
    if r.status != StatusCode::CREATED {
        bail!("PUT (close chunked) in {repo}: {} {:?}", r.status, r.body);
    }
    Ok(())
}

/// Mounts a blob from `from` (one POST); pushes it when the server does
/// not mount.
pub async fn mount(c: &mut Conn, repo: &str, from: &str, data: &Bytes, digest: &str) -> Result<()> {
    let r = c
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
            &[],
            Bytes::new(),
        )
        .await?;
    match r.status {
        StatusCode::CREATED => Ok(()),
        StatusCode::ACCEPTED => {
            let loc = location_path(r.header("location").unwrap_or_default())?;
            let r = c
                .call(
                    Method::PUT,
                    &with_query(&loc, "digest", digest),
                    &[("content-type", "application/octet-stream")],
                    data.clone(),
                )
                .await?;
            ensure!(
                r.status == StatusCode::CREATED,
                "PUT blob in {repo}: {}",
                r.status
            );
            Ok(())
        }
        s => bail!("mount into {repo}: {s} {:?}", r.body),
    }
}

pub async fn put_manifest(c: &mut Conn, repo: &str, reference: &str, body: &Bytes) -> Result<()> {
    let r = c
        .call(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("content-type", OCI_MANIFEST)],
            body.clone(),
        )
        .await?;
    if r.status != StatusCode::CREATED {
        bail!("PUT manifest {repo}:{reference}: {} {:?}", r.status, r.body);
    }
    Ok(())
}

/// GETs a blob, counting its bytes.
pub async fn pull_blob(c: &mut Conn, path: &str, size: usize) -> Result<()> {
    let (status, n) = c.call_discard(Method::GET, path, &[]).await?;
    ensure!(status == StatusCode::OK, "GET {path}: {status}");
    ensure!(n == size as u64, "GET {path}: {n} bytes, want {size}");
    Ok(())
}

/// Reads a whole paginated listing (tags or catalog), following `Link`
/// headers; returns the number of entries and pages.
pub async fn list_all(c: &mut Conn, first: &str, field: &str) -> Result<(usize, usize)> {
    let mut path = first.to_string();
    let mut entries = 0;
    let mut pages = 0;
    loop {
        let r = c.call(Method::GET, &path, &[], Bytes::new()).await?;
        ensure!(r.status == StatusCode::OK, "GET {path}: {}", r.status);
        let v: serde_json::Value = serde_json::from_slice(&r.body)?;
        entries += v
            .get(field)
            .and_then(|t| t.as_array())
            .map_or(0, |a| a.len());
        pages += 1;
        match r.header("link").and_then(link_target) {
            Some(next) => path = location_path(&next)?,
            None => return Ok((entries, pages)),
        }
    }
}

/// `<url>; rel="next"` to `url`.
fn link_target(link: &str) -> Option<String> {
    let start = link.find('<')? + 1;
    let end = link[start..].find('>')? + start;
    Some(link[start..end].to_string())
}
