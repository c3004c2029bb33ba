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
