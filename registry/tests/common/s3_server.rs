//! An in-process S3 server (s3s-fs over a directory) on a loopback port, and
//! the driver configuration that reaches it. Shared by the storage suite and
//! the API tests so both run the S3 driver without any external service.

use std::net::SocketAddr;
use std::path::Path;

use berth_registry::config::S3Config;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub const BUCKET: &str = "bucket";

/// Serves `dir` (holding bucket `bucket`) until the test's runtime ends.
pub async fn start(dir: &Path) -> SocketAddr {
    std::fs::create_dir_all(dir.join(BUCKET)).expect("bucket directory");
    let fs = s3s_fs::FileSystem::new(dir).expect("s3s-fs over the directory");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single("berth", "berth-secret"));
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(connection);
        }
    });
    addr
}

/// The S3 driver's settings for a server at `addr`.
pub fn config(addr: SocketAddr) -> S3Config {
    serde_json::from_value(serde_json::json!({
        "bucket": BUCKET,
        "prefix": "registry",
        "endpoint": format!("http://{addr}"),
        "forcePathStyle": true,
        "accessKeyId": "berth",
        "secretAccessKey": "berth-secret",
        "partSize": 5 * 1024 * 1024,
        "maxAttempts": 1,
    }))
    .expect("valid S3 config")
}

/// Multipart uploads open in the server over `dir`. s3s-fs has no
/// `ListMultipartUploads`; it records each open upload as an
/// `.upload-<id>.json` file at the top of its directory, removed when the
/// upload is completed or aborted.
#[allow(
    dead_code,
    reason = "only the S3 driver tests look for open uploads; the API tests share this module"
)]
pub fn open_multipart_uploads(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("the server's directory")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(".upload-") && name.ends_with(".json"))
        .collect()
}

/// Like [`start`], but every `every`-th request is answered with
/// `503 SlowDown`, as a throttling S3 does; the driver must retry it away.
#[allow(
    dead_code,
    reason = "only the storage suite throttles; the API tests share this module"
)]
pub async fn start_flaky(dir: &Path, every: usize) -> SocketAddr {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    std::fs::create_dir_all(dir.join(BUCKET)).expect("bucket directory");
    let fs = s3s_fs::FileSystem::new(dir).expect("s3s-fs over the directory");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single("berth", "berth-secret"));
    let service = Flaky {
        inner: builder.build(),
        count: Arc::new(AtomicUsize::new(0)),
        every,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(connection);
        }
    });
    return addr;

    #[derive(Clone)]
    struct Flaky {
        inner: s3s::service::S3Service,
        count: Arc<AtomicUsize>,
        every: usize,
    }

    type Inner = s3s::service::S3Service;
    type Req = hyper::Request<hyper::body::Incoming>;

    impl hyper::service::Service<Req> for Flaky {
        type Response = <Inner as hyper::service::Service<Req>>::Response;
        type Error = <Inner as hyper::service::Service<Req>>::Error;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
        >;

        fn call(&self, request: Req) -> Self::Future {
            if self.count.fetch_add(1, Ordering::SeqCst) % self.every == self.every - 1 {
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                            <Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>";
                let response = hyper::Response::builder()
                    .status(503)
                    .header("content-type", "application/xml")
                    .body(s3s::Body::from(body.to_string()))
                    .expect("a valid response");
                return Box::pin(async move { Ok(response) });
            }
            let inner = self.inner.clone();
            Box::pin(async move { hyper::service::Service::call(&inner, request).await })
        }
    }
}
