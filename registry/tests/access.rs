//! Access to the API: htpasswd basic auth (in process, through the router)
//! and TLS on a real socket (a rustls client against `serve_config`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code, reason = "the shared helpers serve several test crates")]
mod common;

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use berth_registry::config::{
    AuthConfig, Config, FilesystemConfig, HtpasswdConfig, StorageConfig, TlsConfig,
};
use berth_registry::server;
use common::{Driver, TestRegistry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// A registry whose htpasswd file holds alice (password `wonderland`).
async fn guarded() -> (TestRegistry, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    let path = secrets.path().join("htpasswd");
    let hash = bcrypt::hash("wonderland", 4).unwrap();
    std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
    let registry = TestRegistry::with_config(Driver::Fs, |config| {
        config.auth = Some(AuthConfig {
            realm: "berth-test".into(),
            htpasswd: Some(HtpasswdConfig { path }),
        });
    })
    .await;
    (registry, secrets)
}

#[tokio::test]
async fn api_requires_credentials_and_says_how() {
    let (registry, _secrets) = guarded().await;
    let reply = registry.get("/v2/").await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Basic realm=\"berth-test\"")
    );
    assert!(reply.header("docker-distribution-api-version").is_some());

    let wrong = basic("alice", "looking-glass");
    let reply = registry
        .send(Method::GET, "/v2/", &[("authorization", &wrong)], "")
        .await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let unknown = basic("bob", "wonderland");
    let reply = registry
        .send(
            Method::GET,
            "/v2/_catalog",
            &[("authorization", &unknown)],
            "",
        )
        .await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let reply = registry
        .send(Method::GET, "/v2/", &[("authorization", "Bearer abc")], "")
        .await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn valid_credentials_push_and_pull() {
    let (registry, _secrets) = guarded().await;
    let auth = basic("alice", "wonderland");
    let data = b"guarded layer";
    let digest = common::sha256(data);
    let reply = registry
        .send(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
            &[("authorization", &auth)],
            &data[..],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply}");
    let path = format!("/v2/team/app/blobs/{digest}");
    let reply = registry
        .send(Method::GET, &path, &[("authorization", &auth)], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply}");
    assert_eq!(reply.body.as_ref(), data);
    // The same blob without credentials: refused, not leaked.
    registry
        .get(&path)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn probes_and_metrics_stay_open() {
    let (registry, _secrets) = guarded().await;
    for path in ["/livez", "/readyz", "/metrics"] {
        assert_eq!(registry.get(path).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_bad_htpasswd_file_stops_start_up_with_its_line() {
    let secrets = tempfile::tempdir().unwrap();
    let path = secrets.path().join("htpasswd");
    std::fs::write(&path, "# users\nalice:{SHA}abc\n").unwrap();
    let config = Config {
        auth: Some(AuthConfig {
            realm: "berth".into(),
            htpasswd: Some(HtpasswdConfig { path: path.clone() }),
        }),
        ..fs_config(secrets.path())
    };
    let err = server::build_state(&config)
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("line 2") && e.contains("htpasswd -B")),
        "{err:?}"
    );
    std::fs::remove_file(&path).unwrap();
    let err = server::build_state(&config)
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("cannot read htpasswd")),
        "{err:?}"
    );
}

fn fs_config(root: &std::path::Path) -> Config {
    Config {
        storage: StorageConfig::Filesystem(FilesystemConfig {
            root: root.join("data"),
        }),
        ..Config::default()
    }
}

/// A server started with `serve_config` on a real socket, as the binary
/// starts it.
struct Running {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<Result<(), server::StartError>>,
}

impl Running {
    async fn start(config: Config) -> Self {
        let state = server::build_state(&config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            server::serve_config(&config, listener, state, shutdown).await
        });
        Self {
            addr,
            stop,
            serving,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.serving.await.unwrap().unwrap();
    }
}

/// A filesystem registry whose `headerTimeout` is short enough for tests.
fn short_header_timeout(root: &std::path::Path) -> Config {
    Config {
        header_timeout: std::time::Duration::from_millis(300),
        ..fs_config(root)
    }
}

/// What the server sends on `stream` until it closes the connection; fails
/// the test when the server keeps it open past a generous bound (the
/// deadline under test is far shorter).
async fn until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut received),
    )
    .await;
    assert!(read.is_ok(), "the server kept a stalled connection open");
    received
}

const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

/// The types of the HTTP/2 frames in `bytes`, in order.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// `headerTimeout` closes connections whose client stalls: one that sends
/// nothing, one that stops half-way through its headers, a keep-alive
/// connection left idle after a request, an HTTP/2 peer that stops
/// answering, and a TLS connection that never starts its handshake.
#[tokio::test]
async fn stalled_clients_are_disconnected_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(short_header_timeout(dir.path())).await;
    let connect = || tokio::net::TcpStream::connect(running.addr);

    let mut silent = connect().await.unwrap();
    let mut half = connect().await.unwrap();
    half.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    for (name, stream) in [("silent", &mut silent), ("half-sent headers", &mut half)] {
        let received = until_closed(stream).await;
        assert!(
            received.is_empty() || received.starts_with(b"HTTP/1.1 408"),
            "{name}: {}",
            String::from_utf8_lossy(&received)
        );
    }
    let received = String::from_utf8_lossy(&until_closed(&mut idle).await).into_owned();
    assert!(
        received.starts_with("HTTP/1.1 200") && received.matches("HTTP/1.1").count() == 1,
        "the idle connection got its one answer, then was closed: {received}"
    );

    // An HTTP/2 peer that sends its preface and settings, then never
    // answers the server's PING (one that vanished): closed, after a GOAWAY.
    let mut h2 = connect().await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let frames = until_closed(&mut h2).await;
    let types = frame_types(&frames);
    assert!(
        types.contains(&PING) && types.last() == Some(&GOAWAY),
        "frame types sent: {types:?}"
    );
    running.stop().await;

    let (tls, _) = certificate(dir.path());
    let config = Config {
        tls: Some(tls),
        ..short_header_timeout(dir.path())
    };
    let running = Running::start(config).await;
    let mut no_hello = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    assert!(until_closed(&mut no_hello).await.is_empty());
    running.stop().await;
}

/// `headerTimeout` also bounds how long a response may wait for a client
/// that takes none of it: a client that asks for a large blob and then
/// reads nothing is cut off instead of holding the connection and the
/// response's buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_nobody_reads_are_cut_off_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(short_header_timeout(dir.path())).await;
    // Larger than the socket buffers and the server's read-ahead together.
    let data: Vec<u8> = (0..32 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = common::sha256(&data);
    let mut push = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let head = format!(
        "POST /v2/big/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    );
    push.write_all(head.as_bytes()).await.unwrap();
    push.write_all(&data).await.unwrap();
    let answer = until_closed(&mut push).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 201"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // The client reads nothing. Once the server gives up on the response
    // and closes the connection, the closed socket answers a write of ours
    // with a reset, and a later write fails: poll for that.
    let mut pull = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let get = format!("GET /v2/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n");
    pull.write_all(get.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    // An empty line before a request is allowed, so these bytes are
    // harmless to a server that is still reading.
    while pull.write_all(b"\r\n").await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server kept a response nobody read open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    running.stop().await;
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM.
fn certificate(dir: &std::path::Path) -> (TlsConfig, rustls_pki_types::CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let tls = TlsConfig {
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
    };
    std::fs::write(&tls.cert_file, cert.pem()).unwrap();
    std::fs::write(&tls.key_file, key.serialize_pem()).unwrap();
    (tls, cert.der().clone())
}

#[tokio::test]
async fn tls_serves_the_api_and_refuses_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert) = certificate(dir.path());
    let config = Config {
        tls: Some(tls),
        ..fs_config(dir.path())
    };
    let running = Running::start(config).await;
    let addr = running.addr;

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let client = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("docker-distribution-api-version"),
        "{response}"
    );

    // A plain-HTTP client gets no HTTP answer from the TLS port.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP must not be served"
    );

    running.stop().await;
}

#[tokio::test]
async fn tls_files_that_do_not_fit_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, _) = certificate(dir.path());
    std::fs::write(&tls.key_file, "not a key").unwrap();
    let config = Config {
        tls: Some(tls),
        ..fs_config(dir.path())
    };
    let state = server::build_state(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = server::serve_config(&config, listener, state, async {})
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("TLS private key") && e.contains("tls.key")),
        "{err:?}"
    );
}
