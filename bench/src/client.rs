//! A minimal HTTP/1.1 client: one keep-alive connection per worker, driven
//! by hyper directly so the client adds as little as possible to what is
//! measured (no pool, no redirects, no decompression).

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Body = Full<Bytes>;

/// A response whose body was read into memory.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One keep-alive connection; reconnects when the server closed it.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    host: String,
    send: SendRequest<Body>,
}

async fn handshake(addr: SocketAddr) -> Result<SendRequest<Body>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        Ok(Self {
            addr,
            host: addr.to_string(),
            send: handshake(addr).await?,
        })
    }

    /// Sends one request; the caller reads (or drops) the body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let mut b = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
            b = b.header(header::CONTENT_LENGTH, body.len());
        }
        let req = b.body(Full::new(body))?;
        if self.send.ready().await.is_err() {
            self.send = handshake(self.addr).await?;
        }
        self.send
            .send_request(req)
            .await
            .with_context(|| format!("{method} {path}"))
    }

    /// Sends a request and reads the whole response body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Resp> {
        let resp = self.send(method, path, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends a request and counts the body's bytes without keeping them.
    pub async fn call_discard(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, u64)> {
        let resp = self.send(method, path, headers, Bytes::new()).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                n += data.len() as u64;
            }
        }
        Ok((status, n))
    }
}

/// Turns a `Location` header (absolute, as distribution sends it, or
/// relative) into a path with query.
pub fn location_path(location: &str) -> Result<String> {
    for scheme in ["http://", "https://"] {
        if let Some(rest) = location.strip_prefix(scheme) {
            return match rest.find('/') {
                Some(i) => Ok(rest[i..].to_string()),
                None => bail!("Location without a path: {location}"),
            };
        }
    }
    Ok(location.to_string())
}

/// Appends `key=value` to a path that may already hold a query.
pub fn with_query(path: &str, key: &str, value: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{key}={value}")
}
