//! Harness for end-to-end tests: starts the real `berth-registry` binary on
//! a free loopback port over its own directory, finds the pinned test tools,
//! and runs them with their output shown when they fail.
//!
//! The tools are installed and put on `PATH` by `e2e/tools/install.sh` and
//! `e2e/tools/env.sh` (the README's test command does both). A missing tool
//! fails the test with a message saying so: nothing is skipped.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test harness: failing loudly is the point

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

pub mod clients;
mod cluster;
pub mod conformance;
mod minio;

pub use cluster::{Cluster, Nginx};
pub use minio::Minio;

/// How long a server gets to answer `/livez` after it starts.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running `berth-registry` process; killed when dropped.
#[derive(Debug)]
pub struct Registry {
    pub addr: SocketAddr,
    pub root: PathBuf,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Registry {
    /// Starts a registry on a fresh directory.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut registry = Self::start_on(dir.path());
        registry._dir = Some(dir);
        registry
    }

    /// Starts a registry serving `root` (which may hold earlier content).
    pub fn start_on(root: &Path) -> Self {
        let mut args: Vec<String> = vec!["--root".into(), root.display().to_string()];
        args.extend(["--log-level".into(), "warn".into()]);
        Self::spawn(&args, &[], root)
    }

    /// Starts a registry on S3 storage (MinIO), configured through the
    /// environment as a container would be.
    pub fn start_s3(minio: &Minio, bucket: &str, prefix: &str) -> Self {
        Self::start_s3_with(minio, bucket, prefix, &[])
    }

    /// Like [`Registry::start_s3`], with more `BERTH_*` variables.
    pub fn start_s3_with(
        minio: &Minio,
        bucket: &str,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut env = minio.registry_env(bucket, prefix);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let args: Vec<String> = vec!["--log-level".into(), "warn".into()];
        Self::spawn(&args, &env, Path::new("."))
    }

    /// Starts a registry on a fresh directory with extra `BERTH_*`
    /// variables: ready once it accepts connections (a plain-HTTP probe
    /// could not speak TLS when the variables turn it on).
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (child, addr) = start_on_free_port(
            "berth-registry",
            |addr| {
                Command::new(registry_bin())
                    .args([
                        "--listen",
                        &addr.to_string(),
                        "--log-level",
                        "warn",
                        "--root",
                    ])
                    .arg(dir.path())
                    .envs(env.iter().copied())
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn berth-registry")
            },
            |addr| TcpStream::connect(addr).is_ok(),
        );
        Self {
            addr,
            root: dir.path().to_path_buf(),
            child,
            _dir: Some(dir),
        }
    }

    fn spawn(args: &[String], env: &[(String, String)], root: &Path) -> Self {
        let (child, addr) = start_on_free_port(
            "berth-registry",
            |addr| {
                Command::new(registry_bin())
                    .args(["--listen", &addr.to_string()])
                    .args(args)
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn berth-registry")
            },
            |addr| is_live(addr, "/livez"),
        );
        Self {
            addr,
            root: root.to_path_buf(),
            child,
            _dir: None,
        }
    }

    /// Stops the process at once (SIGKILL): a crashed replica.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of one counter sample in `/metrics`, 0 when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .filter(|line| line.starts_with(name) && !line.starts_with('#'))
            .filter(|line| {
                labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        run(Command::new("kill").args(["-TERM", &self.pid().to_string()]));
    }

    /// Waits up to `deadline` for the process to exit; its exit status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + deadline;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Peak resident memory of the server so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        self.proc_status_bytes("VmHWM")
    }

    /// Resident memory of the server now, in bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        self.proc_status_bytes("VmRSS")
    }

    /// A `kB` field of the server's `/proc/<pid>/status`, in bytes.
    fn proc_status_bytes(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"));
        kib * 1024
    }

    /// `host:port`, as clients name the registry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// A status code and body of a plain HTTP GET.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `path` on `addr` until it answers 200.
pub fn wait_live(addr: SocketAddr, path: &str) {
    poll_until(
        &format!("a 200 from http://{addr}{path}"),
        START_DEADLINE,
        Duration::from_millis(25),
        || is_live(addr, path).then_some(()),
    );
}

/// Whether `path` on `addr` answers 200.
pub fn is_live(addr: SocketAddr, path: &str) -> bool {
    matches!(http_get(addr, path), Ok((200, _)))
}

/// A self-signed certificate for 127.0.0.1, written to `dir` as the PEM
/// files `cert` and `key` (it is its own CA: trust `cert`).
pub fn self_signed(dir: &Path, cert: &str, key: &str) {
    let pair = rcgen::KeyPair::generate().expect("key pair");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).expect("params");
    let signed = params.self_signed(&pair).expect("self-signed certificate");
    std::fs::write(dir.join(cert), signed.pem()).expect("write certificate");
    std::fs::write(dir.join(key), pair.serialize_pem()).expect("write key");
}

/// Starts a server on a free loopback port: `spawn` starts it listening on
/// the address given, `ready` says when it serves there. Tests run in
/// parallel, so another process may take a free port between the probe and
/// the server's bind; a server that exits before it is ready (as ours and
/// MinIO do when the port is taken) is started again on a new port.
pub fn start_on_free_port(
    what: &str,
    mut spawn: impl FnMut(SocketAddr) -> Child,
    ready: impl Fn(SocketAddr) -> bool,
) -> (Child, SocketAddr) {
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        let addr = free_port();
        let mut child = spawn(addr);
        let started = poll_until(
            &format!("{what} to serve on {addr}"),
            START_DEADLINE,
            Duration::from_millis(20),
            || match child.try_wait() {
                Ok(Some(status)) => Some(Err(status)),
                _ => ready(addr).then_some(Ok(())),
            },
        );
        match started {
            Ok(()) => return (child, addr),
            Err(status) => {
                eprintln!("{what} exited ({status}) before serving on {addr}; another port")
            }
        }
    }
    panic!("{what} exited before serving, on {ATTEMPTS} ports in a row");
}

/// Calls `check` every `interval` until it returns `Some`; panics naming
/// `what` when `deadline` has passed first.
pub fn poll_until<T>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(interval);
    }
}

/// The `berth-registry` binary: `$BERTH_REGISTRY_BIN`, or the one built
/// beside this test binary by `cargo build -p berth-registry`.
pub fn registry_bin() -> PathBuf {
    workspace_bin("berth-registry")
}

/// A binary of this workspace: `$BERTH_<NAME>_BIN` (`berth-operator` reads
/// `BERTH_OPERATOR_BIN`), or the one `cargo build --workspace --bins` put
/// beside this test binary's profile directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    let variable = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(&variable) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p {name}` or set {variable}",
        bin.display()
    );
    bin
}

/// A tool from `PATH`; fails the test when it is not installed.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not on PATH: run e2e/tools/install.sh and source e2e/tools/env.sh")
        })
}

/// Runs a command and returns its output; fails the test, showing both
/// streams, when it exits non-zero.
pub fn run(command: &mut Command) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a command and returns its trimmed stdout.
pub fn stdout(command: &mut Command) -> String {
    String::from_utf8_lossy(&run(command).stdout)
        .trim()
        .to_string()
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Picks a loopback port that is free now.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr")
}

/// A response read by [`RawRequest::send`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A hand-written HTTP/1.1 request over one connection, for tests that need
/// control over when body bytes are sent (streaming, shutdown mid-request).
#[derive(Debug)]
pub struct RawRequest {
    stream: TcpStream,
}

impl RawRequest {
    /// Connects and sends the request line and headers of a chunked request.
    pub fn start_chunked(addr: SocketAddr, method: &str, path: &str) -> Self {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .expect("send head");
        Self { stream }
    }

    /// Sends one chunk of the body.
    pub fn send_chunk(&mut self, data: &[u8]) {
        write!(self.stream, "{:x}\r\n", data.len()).expect("chunk size");
        self.stream.write_all(data).expect("chunk data");
        self.stream.write_all(b"\r\n").expect("chunk end");
    }

    /// Ends the body and reads the whole response.
    pub fn finish(mut self) -> RawResponse {
        self.stream.write_all(b"0\r\n\r\n").expect("last chunk");
        let mut raw = Vec::new();
        self.stream.read_to_end(&mut raw).expect("read response");
        parse_response(&raw)
    }
}

fn parse_response(raw: &[u8]) -> RawResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Pushes a blob in one request (POST with `?digest=`); its digest.
pub fn push_blob(addr: SocketAddr, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let response = request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[],
        data,
    );
    assert_eq!(response.status, 201, "{response:?}");
    digest
}

/// One HTTP/1.1 request with a `Content-Length` body; the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send head");
    stream.write_all(body).expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    parse_response(&raw)
}
