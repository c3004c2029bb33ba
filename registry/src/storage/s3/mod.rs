//! The S3 driver (`aws-sdk-s3`): AWS or any S3-compatible service (MinIO,
//! Ceph, Garage) that every replica shares.
//!
//! Bodies of unknown length are cut into `partSize` parts, at most
//! `uploadConcurrency` of them in memory and in flight at once; a body that
//! fits in one part is a single conditional `PutObject`. A failed body, or
//! a put dropped half-way, aborts the multipart upload ([`pending`]), so
//! nothing is left behind. Throttling and transient errors are retried by
//! the SDK with exponential backoff (`maxAttempts`); parts are held as
//! `Bytes`, so retries can resend them.

mod errors;
mod http;
mod parts;
mod pending;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};

use super::{
    ByteRange, ByteStream, GetObject, Key, ListPage, ObjectMeta, ObjectStore, Part, PutMode,
    StorageError, StorageResult,
};
use crate::config::S3Config;
use crate::config::s3::{MAX_PART_SIZE, MIN_PART_SIZE};

use errors::{conditional, from_sdk};
use parts::read_part;
use pending::PendingUpload;

/// Largest page `ListObjectsV2` returns.
const LIST_PAGE: usize = 1000;

/// An S3 bucket (and key prefix) as an [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    concurrency: usize,
    redirect: Option<Duration>,
}

impl S3Store {
    /// Builds the client; makes no request.
    pub async fn connect(config: &S3Config) -> StorageResult<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts)
                    .with_initial_backoff(config.retry_initial_backoff),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(config.connect_timeout)
                    .read_timeout(config.read_timeout)
                    .build(),
            );
        if let Some(credentials) = explicit_credentials(config).await? {
            loader = loader.credentials_provider(credentials);
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            // Checksums only where S3 requires them: not every
            // S3-compatible service understands the newer CRC headers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let endpoint = config
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", config.region));
        if let Some(client) = http::S3HttpClient::for_endpoint(
            &endpoint,
            config.connect_timeout,
            config.read_timeout,
        )? {
            builder = builder.http_client(client);
        }
        let part_size = usize::try_from(config.part_size)
            .map_err(|_| StorageError::invalid("partSize does not fit in memory"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client: Client::from_conf(builder.build()),
                bucket: config.bucket.clone(),
                prefix: config.key_prefix(),
                part_size,
                concurrency: config.upload_concurrency,
                redirect: config.redirect.enabled.then_some(config.redirect.expiry),
            }),
        })
    }

    fn object_key(&self, key: &Key) -> String {
        format!("{}{}", self.inner.prefix, key)
    }

    fn client(&self) -> &Client {
        &self.inner.client
    }

    fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// One `PutObject` for a body held in memory.
    async fn put_single(
        &self,
        key: &Key,
        data: Bytes,
        mode: &PutMode,
    ) -> StorageResult<ObjectMeta> {
        let size = data.len() as u64;
        let (if_none_match, if_match) = preconditions(mode);
        let output = self
            .client()
            .put_object()
            .bucket(self.bucket())
            .key(self.object_key(key))
            .body(data.into())
            .set_if_none_match(if_none_match)
            .set_if_match(if_match)
            .send()
            .await
            .map_err(|e| conditional(from_sdk(e, key.as_str()), mode))?;
        Ok(ObjectMeta {
            size,
            etag: output.e_tag().unwrap_or_default().to_string(),
            last_modified: SystemTime::now(),
        })
    }

    /// A multipart upload of `first`, then `carry` (bytes read past the
    /// first part) and the rest of `body`.
    async fn put_multipart(
        &self,
        key: &Key,
        first: Bytes,
        mut carry: Option<Bytes>,
        mut body: ByteStream,
        mode: &PutMode,
    ) -> StorageResult<ObjectMeta> {
        let upload = PendingUpload::start(self, key).await?;
        let upload_id = upload.id();
        let uploaded = async {
            let mut in_flight = FuturesUnordered::new();
            let mut parts = Vec::new();
            let mut size = first.len() as u64;
            in_flight.push(self.upload_part(key, upload_id, 1, first));
            let mut number = 1;
            loop {
                // The parts in flight go on uploading while the next one is
                // read from the client (they were polled only when the
                // limit was reached, so reading and uploading took turns).
                let want = part_size_for(self.inner.part_size, number + 1);
                let read = read_part(&mut body, want, &mut carry);
                tokio::pin!(read);
                let (part, eof) = loop {
                    tokio::select! {
                        read = &mut read => break read?,
                        Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                            parts.push(done?);
                        }
                    }
                };
                if !part.is_empty() {
                    if number >= MAX_PARTS {
                        return Err(StorageError::invalid(format!(
                            "{key}: larger than one S3 upload can hold ({MAX_PARTS} parts)"
                        )));
                    }
                    number += 1;
                    size += part.len() as u64;
                    while in_flight.len() >= self.inner.concurrency {
                        if let Some(done) = in_flight.next().await {
                            parts.push(done?);
                        }
                    }
                    in_flight.push(self.upload_part(key, upload_id, number, part));
                }
                if eof {
                    break;
                }
            }
            while let Some(done) = in_flight.next().await {
                parts.push(done?);
            }
            parts.sort_by_key(|p| p.number);
            let etag = self.finish_multipart(key, upload_id, &parts, mode).await?;
            Ok::<_, StorageError>((size, etag))
        }
        .await;
        match uploaded {
            Ok((size, etag)) => {
                upload.completed();
                Ok(ObjectMeta {
                    size,
                    etag,
                    last_modified: SystemTime::now(),
                })
            }
            Err(err) => {
                upload.abort().await;
                Err(err)
            }
        }
    }

    async fn upload_part(
        &self,
        key: &Key,
        upload_id: &str,
        number: u32,
        data: Bytes,
    ) -> StorageResult<Part> {
        let size = data.len() as u64;
        let part_number =
            i32::try_from(number).map_err(|_| StorageError::invalid("too many parts"))?;
        let output = self
            .client()
            .upload_part()
            .bucket(self.bucket())
            .key(self.object_key(key))
            .upload_id(upload_id)
            .part_number(part_number)
            .body(data.into())
            .send()
            .await
            .map_err(|e| from_sdk(e, key.as_str()))?;
        Ok(Part {
            number,
            etag: output.e_tag().unwrap_or_default().to_string(),
            size,
        })
    }

    async fn finish_multipart(
        &self,
        key: &Key,
        upload_id: &str,
        parts: &[Part],
        mode: &PutMode,
    ) -> StorageResult<String> {
        let completed = parts
            .iter()
            .map(|p| {
                let number =
                    i32::try_from(p.number).map_err(|_| StorageError::invalid("too many parts"))?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .e_tag(&p.etag)
                    .build())
            })
            .collect::<StorageResult<Vec<_>>>()?;
        let (if_none_match, if_match) = preconditions(mode);
        let output = self
            .client()
            .complete_multipart_upload()
            .bucket(self.bucket())
            .key(self.object_key(key))
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .set_if_none_match(if_none_match)
            .set_if_match(if_match)
            .send()
            .await
            .map_err(|e| conditional(from_sdk(e, key.as_str()), mode))?;
        Ok(output.e_tag().unwrap_or_default().to_string())
    }

    /// Server-side copy in parts, for sources beyond `CopyObject`'s 5 GiB.
    async fn copy_in_parts(&self, from: &Key, to: &Key, size: u64) -> StorageResult<ObjectMeta> {
        let upload = PendingUpload::start(self, to).await?;
        let upload_id = upload.id();
        let copied = async {
            let mut parts = Vec::new();
            let step = MAX_PART_SIZE / 5;
            let mut start = 0;
            while start < size {
                let end = (start + step).min(size) - 1;
                let number = u32::try_from(parts.len() + 1)
                    .map_err(|_| StorageError::invalid("too many parts"))?;
                parts.push(
                    self.copy_part(from, to, upload_id, number, Some((start, end)))
                        .await?,
                );
                start = end + 1;
            }
            self.finish_multipart(to, upload_id, &parts, &PutMode::Overwrite)
                .await
        }
        .await;
        match copied {
            Ok(etag) => {
                upload.completed();
                Ok(ObjectMeta {
                    size,
                    etag,
                    last_modified: SystemTime::now(),
                })
            }
            Err(err) => {
                upload.abort().await;
                Err(err)
            }
        }
    }

    async fn copy_part(
        &self,
        from: &Key,
        to: &Key,
        upload_id: &str,
        number: u32,
        range: Option<(u64, u64)>,
    ) -> StorageResult<Part> {
        let part_number =
            i32::try_from(number).map_err(|_| StorageError::invalid("too many parts"))?;
        let mut request = self
            .client()
            .upload_part_copy()
            .bucket(self.bucket())
            .key(self.object_key(to))
            .upload_id(upload_id)
            .part_number(part_number)
            .copy_source(self.copy_source(from));
        if let Some((start, end)) = range {
            request = request.copy_source_range(format!("bytes={start}-{end}"));
        }
        let output = request
            .send()
            .await
            .map_err(|e| from_sdk(e, from.as_str()))?;
        let etag = output
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default()
            .to_string();
        let size = range.map_or(0, |(start, end)| end - start + 1);
        Ok(Part { number, etag, size })
    }

    fn copy_source(&self, key: &Key) -> String {
        let raw = format!("{}/{}", self.bucket(), self.object_key(key));
        percent_encoding::utf8_percent_encode(&raw, COPY_SOURCE).to_string()
    }

    /// The concatenation of `sources`, read lazily one after another.
    /// Failures travel as a [`StorageError`] inside the `io::Error`, which
    /// `read_part` takes out again: a missing source stays not found, and
    /// a read broken off mid-object is worth retrying, not a client's
    /// broken body.
    fn concat(&self, sources: Vec<Key>) -> ByteStream {
        let store = self.clone();
        Box::pin(
            futures::stream::iter(sources)
                .then(move |key| {
                    let store = store.clone();
                    async move {
                        let object = store.get(&key, None).await.map_err(std::io::Error::other)?;
                        Ok::<_, std::io::Error>(object.body.map_err(move |err| {
                            std::io::Error::other(StorageError::Backend {
                                message: format!("{key}: read broken off: {err}"),
                                retryable: true,
                            })
                        }))
                    }
                })
                .try_flatten(),
        )
    }
}

/// Characters a `CopySource` keeps as they are (keys use `/`).
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, key: &Key, range: Option<ByteRange>) -> StorageResult<GetObject> {
        let mut request = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(self.object_key(key));
        if let Some(range) = range {
            request = request.range(format!("bytes={}-{}", range.start, range.end));
        }
        let output = request
            .send()
            .await
            .map_err(|e| from_sdk(e, key.as_str()))?;
        // Some S3 implementations clamp or ignore a range outside the object;
        // the contract is to refuse it.
        if let Some(range) = range {
            let served = format!("bytes {}-{}/", range.start, range.end);
            if !output
                .content_range()
                .is_some_and(|r| r.starts_with(&served))
            {
                return Err(StorageError::InvalidRange);
            }
        }
        let length = output
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        let size = output
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|total| total.parse().ok())
            .unwrap_or(length);
        let meta = ObjectMeta {
            size,
            etag: output.e_tag().unwrap_or_default().to_string(),
            last_modified: system_time(output.last_modified()),
        };
        let body = futures::stream::unfold(output.body, |mut body| async move {
            body.next()
                .await
                .map(|chunk| (chunk.map_err(std::io::Error::other), body))
        });
        Ok(GetObject {
            meta,
            body: Box::pin(body),
        })
    }

    async fn head(&self, key: &Key) -> StorageResult<ObjectMeta> {
        let output = self
            .client()
            .head_object()
            .bucket(self.bucket())
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| from_sdk(e, key.as_str()))?;
        Ok(ObjectMeta {
            size: output
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            etag: output.e_tag().unwrap_or_default().to_string(),
            last_modified: system_time(output.last_modified()),
        })
    }

    async fn put(
        &self,
        key: &Key,
        mut body: ByteStream,
        mode: PutMode,
    ) -> StorageResult<ObjectMeta> {
        let mut carry = None;
        let (first, eof) = read_part(&mut body, self.inner.part_size, &mut carry).await?;
        if eof {
            self.put_single(key, first, &mode).await
        } else {
            self.put_multipart(key, first, carry, body, &mode).await
        }
    }

    async fn delete(&self, key: &Key) -> StorageResult<()> {
        self.client()
            .delete_object()
            .bucket(self.bucket())
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| from_sdk(e, key.as_str()))?;
        Ok(())
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> StorageResult<ListPage> {
        let full_prefix = format!("{}{prefix}", self.inner.prefix);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let want = (limit - keys.len()).clamp(1, LIST_PAGE);
            let mut request = self
                .client()
                .list_objects_v2()
                .bucket(self.bucket())
                .prefix(&full_prefix)
                .max_keys(i32::try_from(want).unwrap_or(1000));
            request = match (&token, start_after) {
                (Some(token), _) => request.continuation_token(token),
                (None, Some(after)) => request.start_after(format!("{}{after}", self.inner.prefix)),
                (None, None) => request,
            };
            let output = request.send().await.map_err(|e| from_sdk(e, prefix))?;
            for object in output.contents() {
                if let Some(name) = object
                    .key()
                    .and_then(|k| k.strip_prefix(&self.inner.prefix))
                {
                    keys.push(Key::new(name)?);
                }
            }
            let more = output.is_truncated().unwrap_or(false);
            if keys.len() >= limit || !more {
                keys.truncate(limit);
                return Ok(ListPage {
                    keys,
                    truncated: more,
                });
            }
            token = output.next_continuation_token().map(str::to_string);
            if token.is_none() {
                return Ok(ListPage {
                    keys,
                    truncated: false,
                });
            }
        }
    }

    async fn copy(&self, from: &Key, to: &Key) -> StorageResult<ObjectMeta> {
        let size = self.head(from).await?.size;
        if size > MAX_PART_SIZE {
            return self.copy_in_parts(from, to, size).await;
        }
        let output = self
            .client()
            .copy_object()
            .bucket(self.bucket())
            .key(self.object_key(to))
            .copy_source(self.copy_source(from))
            .send()
            .await
            .map_err(|e| from_sdk(e, from.as_str()))?;
        let etag = output
            .copy_object_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default();
        Ok(ObjectMeta {
            size,
            etag: etag.to_string(),
            last_modified: SystemTime::now(),
        })
    }

    async fn create_multipart(&self, key: &Key) -> StorageResult<String> {
        let output = self
            .client()
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(self.object_key(key))
            .send()
            .await
            .map_err(|e| from_sdk(e, key.as_str()))?;
        output
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| StorageError::Backend {
                message: "no upload id returned".into(),
                retryable: true,
            })
    }

    async fn put_part(
        &self,
        key: &Key,
        upload_id: &str,
        number: u32,
        mut body: ByteStream,
    ) -> StorageResult<Part> {
        let mut data = BytesMut::new();
        while let Some(chunk) = body.next().await {
            data.extend_from_slice(&chunk.map_err(StorageError::Body)?);
        }
        self.upload_part(key, upload_id, number, data.freeze())
            .await
    }

    async fn complete_multipart(
        &self,
        key: &Key,
        upload_id: &str,
        parts: &[Part],
    ) -> StorageResult<ObjectMeta> {
        let etag = self
            .finish_multipart(key, upload_id, parts, &PutMode::Overwrite)
            .await?;
        let size = parts.iter().map(|p| p.size).sum();
        Ok(ObjectMeta {
            size,
            etag,
            last_modified: SystemTime::now(),
        })
    }

    async fn abort_multipart(&self, key: &Key, upload_id: &str) -> StorageResult<()> {
        let result = self
            .client()
            .abort_multipart_upload()
            .bucket(self.bucket())
            .key(self.object_key(key))
            .upload_id(upload_id)
            .send()
            .await;
        match result.map_err(|e| from_sdk(e, key.as_str())) {
            Ok(_) | Err(StorageError::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Server-side `UploadPartCopy` when every source but the last can be a
    /// part (at least 5 MiB); otherwise the sources are streamed through a
    /// new upload (small chunks of a chunked upload end up here).
    async fn compose(&self, sources: &[Key], dest: &Key) -> StorageResult<ObjectMeta> {
        if let [single] = sources {
            return self.copy(single, dest).await;
        }
        let mut sizes = Vec::with_capacity(sources.len());
        for source in sources {
            sizes.push(self.head(source).await?.size);
        }
        let copyable = sizes.split_last().is_some_and(|(last, rest)| {
            rest.iter()
                .all(|s| (MIN_PART_SIZE..=MAX_PART_SIZE).contains(s))
                && *last <= MAX_PART_SIZE
        });
        if !copyable {
            return self
                .put(dest, self.concat(sources.to_vec()), PutMode::Overwrite)
                .await;
        }
        let upload = PendingUpload::start(self, dest).await?;
        let upload_id = upload.id();
        let composed = async {
            let mut parts = Vec::with_capacity(sources.len());
            for (index, (source, size)) in sources.iter().zip(&sizes).enumerate() {
                let number = u32::try_from(index + 1)
                    .map_err(|_| StorageError::invalid("too many parts"))?;
                let range = (*size > 0).then(|| (0, size - 1));
                let mut part = self
                    .copy_part(source, dest, upload_id, number, range)
                    .await?;
                part.size = *size;
                parts.push(part);
            }
            self.finish_multipart(dest, upload_id, &parts, &PutMode::Overwrite)
                .await
        }
        .await;
        match composed {
            Ok(etag) => {
                upload.completed();
                Ok(ObjectMeta {
                    size: sizes.iter().sum(),
                    etag,
                    last_modified: SystemTime::now(),
                })
            }
            Err(err) => {
                upload.abort().await;
                Err(err)
            }
        }
    }

    async fn presign_get(&self, key: &Key) -> StorageResult<Option<String>> {
        let Some(expiry) = self.inner.redirect else {
            return Ok(None);
        };
        let config = PresigningConfig::expires_in(expiry)
            .map_err(|e| StorageError::invalid(e.to_string()))?;
        let request = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(self.object_key(key))
            .presigned(config)
            .await
            .map_err(|e| from_sdk(e, key.as_str()))?;
        Ok(Some(request.uri().to_string()))
    }
}

/// Explicit keys, inline or from files, when configured.
async fn explicit_credentials(config: &S3Config) -> StorageResult<Option<Credentials>> {
    let read = |path: &std::path::PathBuf| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|e| StorageError::invalid(format!("cannot read {}: {e}", path.display())))
    };
    let id = match (&config.access_key_id, &config.access_key_id_file) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(path)) => Some(read(path)?),
        (None, None) => None,
    };
    let secret = match (&config.secret_access_key, &config.secret_access_key_file) {
        (Some(secret), _) => Some(secret.clone()),
        (None, Some(path)) => Some(read(path)?),
        (None, None) => None,
    };
    Ok(match (id, secret) {
        (Some(id), Some(secret)) => Some(Credentials::new(id, secret, None, None, "berth-config")),
        _ => None,
    })
}

fn system_time(time: Option<&DateTime>) -> SystemTime {
    time.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A put's precondition as S3's `If-None-Match` and `If-Match` headers.
fn preconditions(mode: &PutMode) -> (Option<String>, Option<String>) {
    match mode {
        PutMode::Overwrite => (None, None),
        PutMode::CreateNew => (Some("*".to_string()), None),
        PutMode::IfMatch(etag) => (None, Some(etag.clone())),
    }
}

/// S3 takes at most this many parts per upload.
const MAX_PARTS: u32 = 10_000;

/// The size of part `number` of a large put: the configured size for the
/// first quarter of S3's parts, then doubling each quarter, so that one
/// upload holds 37,500 times the configured size (293 GiB with 8 MiB parts,
/// where fixed parts failed at 78 GiB, after uploading all of it). Memory
/// in flight grows only for blobs past 19 GiB.
fn part_size_for(base: usize, number: u32) -> usize {
    let quarter = (number.saturating_sub(1) / (MAX_PARTS / 4)).min(3);
    base.saturating_mul(1 << quarter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_each_quarter_of_the_part_limit() {
        let base = 8 * 1024 * 1024;
        assert_eq!(part_size_for(base, 1), base);
        assert_eq!(part_size_for(base, 2_500), base);
        assert_eq!(part_size_for(base, 2_501), 2 * base);
        assert_eq!(part_size_for(base, MAX_PARTS), 8 * base);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size_for(base, n) as u64).sum();
        assert_eq!(total, 37_500 * base as u64);
    }
}
