//! The server processes under test: Berth, distribution, zot, and the two
//! limits (nginx with sendfile, a bare axum handler); for the S3 rows,
//! MinIO and Berth and distribution on it. Each runs on a free loopback port
//! over its own directory; `/proc` gives its CPU and memory.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http::Method;

use crate::client::Conn;
use crate::load::Sample;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Berth,
    Distribution,
    Zot,
    Nginx,
    Bare,
    /// Berth on the S3 driver, against [`Kind::Minio`].
    BerthS3,
    /// distribution on its S3 driver, against [`Kind::Minio`].
    DistributionS3,
    Minio,
    /// Berth under valgrind's callgrind, for `berth-bench hot-functions`:
    /// writes `callgrind.out` in its directory when stopped.
    BerthCallgrind,
}

/// MinIO's credentials and the bucket the S3 rows share (Berth under the
/// prefix `berth`, distribution under the root directory `/distribution`).
pub const S3_ACCESS_KEY: &str = "berth-bench";
pub const S3_SECRET_KEY: &str = "berth-bench-secret";
pub const S3_BUCKET: &str = "bench";

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Berth => "Berth",
            Kind::Distribution => "distribution",
            Kind::Zot => "zot",
            Kind::Nginx => "nginx sendfile",
            Kind::Bare => "bare axum",
            Kind::BerthS3 => "Berth (S3)",
            Kind::DistributionS3 => "distribution (S3)",
            Kind::Minio => "MinIO",
            Kind::BerthCallgrind => "Berth under callgrind",
        })
    }
}

/// Where the binaries are: Berth next to this executable (target/release),
/// the peers on PATH (`source e2e/tools/env.sh`).
#[derive(Debug, Clone)]
pub struct Bins {
    pub berth: PathBuf,
    pub bench: PathBuf,
}

impl Bins {
    pub fn locate() -> Result<Self> {
        let bench = std::env::current_exe()?;
        let dir = bench.parent().context("executable without a directory")?;
        let berth = dir.join("berth-registry");
        if !berth.exists() {
            bail!(
                "{} is missing: cargo build --release -p berth-registry",
                berth.display()
            );
        }
        Ok(Self { berth, bench })
    }
}

fn free_port() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

#[derive(Debug)]
pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    /// Data directory (storage root, or nginx's document root).
    pub data: PathBuf,
    dir: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready_path: &'static str,
    child: Option<Child>,
    restarts: u32,
}

impl Server {
    /// Writes the configuration and spawns the server; returns it with the
    /// time from spawn to its first ready answer.
    pub async fn start(kind: Kind, bins: &Bins, dir: &Path) -> Result<(Self, Duration)> {
        Self::start_on(kind, bins, dir, None).await
    }

    /// Like [`Server::start`]; the S3 kinds store into the MinIO at `s3`.
    pub async fn start_on(
        kind: Kind,
        bins: &Bins,
        dir: &Path,
        s3: Option<SocketAddr>,
    ) -> Result<(Self, Duration)> {
        let addr = free_port()?;
        let dir = dir.join(kind_slug(kind));
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let s3_endpoint = || {
            s3.map(|a| format!("http://{a}"))
                .with_context(|| format!("{kind} needs MinIO's address"))
        };
        let mut env: Vec<(String, String)> = Vec::new();
        let (program, args, ready_path): (PathBuf, Vec<String>, &'static str) = match kind {
            Kind::BerthS3 => {
                // The storage section as environment, as a container would
                // get it (README); everything else at its default.
                for (k, v) in [
                    ("BERTH_STORAGE__DRIVER", "s3"),
                    ("BERTH_STORAGE__BUCKET", S3_BUCKET),
                    ("BERTH_STORAGE__PREFIX", "berth"),
                    ("BERTH_STORAGE__ENDPOINT", &s3_endpoint()?),
                    ("BERTH_STORAGE__FORCE_PATH_STYLE", "true"),
                    ("BERTH_STORAGE__ACCESS_KEY_ID", S3_ACCESS_KEY),
                    ("BERTH_STORAGE__SECRET_ACCESS_KEY", S3_SECRET_KEY),
                ] {
                    env.push((k.to_string(), v.to_string()));
                }
                (
                    bins.berth.clone(),
                    vec![
                        "--listen".into(),
                        addr.to_string(),
                        "--log-level".into(),
                        "warn".into(),
                    ],
                    "/readyz",
                )
            }
            Kind::DistributionS3 => {
                // distribution 2.8 uses path-style requests whenever
                // `regionendpoint` is set; `forcepathstyle` is 3.0's switch
                // for the same, ignored by 2.8 and there for a newer one;
                // `redirect: disable` makes it serve blobs itself, as Berth
                // does by default, instead of redirecting to MinIO.
                let conf = dir.join("config.yml");
                std::fs::write(
                    &conf,
                    format!(
                        "version: 0.1\n\
                         log:\n  level: error\n  accesslog:\n    disabled: true\n\
                         storage:\n  s3:\n    accesskey: {S3_ACCESS_KEY}\n    secretkey: {S3_SECRET_KEY}\n\
                         \x20   region: us-east-1\n    regionendpoint: {}\n    forcepathstyle: true\n\
                         \x20   bucket: {S3_BUCKET}\n    secure: false\n    v4auth: true\n\
                         \x20   rootdirectory: /distribution\n\
                         \x20 redirect:\n    disable: true\n\
                         \x20 cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: true\n\
                         http:\n  addr: {addr}\n  secret: berth-bench\n",
                        s3_endpoint()?
                    ),
                )?;
                (
                    "docker-registry".into(),
                    vec!["serve".into(), conf.display().to_string()],
                    "/v2/",
                )
            }
            Kind::Minio => {
                for (k, v) in [
                    ("MINIO_ROOT_USER", S3_ACCESS_KEY),
                    ("MINIO_ROOT_PASSWORD", S3_SECRET_KEY),
                    ("MINIO_BROWSER", "off"),
                ] {
                    env.push((k.to_string(), v.to_string()));
                }
                (
                    "minio".into(),
                    vec![
                        "server".into(),
                        data.display().to_string(),
                        "--address".into(),
                        addr.to_string(),
                        "--console-address".into(),
                        free_port()?.to_string(),
                        "--quiet".into(),
                    ],
                    "/minio/health/live",
                )
            }
            Kind::BerthCallgrind => {
                let mut args = vec![
                    "--tool=callgrind".into(),
                    "--demangle=no".into(),
                    format!(
                        "--callgrind-out-file={}",
                        dir.join("callgrind.out").display()
                    ),
                    bins.berth.display().to_string(),
                ];
                args.extend(berth_args(&data, addr));
                ("valgrind".into(), args, "/v2/")
            }
            Kind::Berth => (bins.berth.clone(), berth_args(&data, addr), "/readyz"),
            Kind::Distribution => {
                let conf = dir.join("config.yml");
                std::fs::write(
                    &conf,
                    format!(
                        "version: 0.1\n\
                         log:\n  level: error\n  accesslog:\n    disabled: true\n\
                         storage:\n  filesystem:\n    rootdirectory: {}\n  cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: true\n\
                         http:\n  addr: {addr}\n  secret: berth-bench\n",
                        data.display()
                    ),
                )?;
                (
                    "docker-registry".into(),
                    vec!["serve".into(), conf.display().to_string()],
                    "/v2/",
                )
            }
            Kind::Zot => {
                let conf = dir.join("config.json");
                let json = serde_json::json!({
                    "distSpecVersion": "1.0.1",
                    // gc off: Berth and distribution collect garbage offline
                    // (or not yet); dedupe stays at zot's default (on).
                    "storage": { "rootDirectory": data, "gc": false },
                    "http": { "address": "127.0.0.1", "port": addr.port().to_string() },
                    "log": { "level": "error" }
                });
                std::fs::write(&conf, serde_json::to_vec_pretty(&json)?)?;
                (
                    "zot".into(),
                    vec!["serve".into(), conf.display().to_string()],
                    "/v2/",
                )
            }
            Kind::Nginx => {
                let conf = dir.join("nginx.conf");
                let d = dir.display();
                std::fs::write(
                    &conf,
                    format!(
                        "daemon off;\nmaster_process off;\nworker_processes 1;\n\
                         error_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
                         events {{ worker_connections 1024; }}\n\
                         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
                         keepalive_requests 1000000;\n  keepalive_timeout 600s;\n\
                         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                         server {{\n    listen {addr};\n    root {};\n\
                         location = /health {{ return 200 \"ok\"; }}\n    location / {{ }}\n  }}\n}}\n",
                        data.display()
                    ),
                )?;
                (
                    "nginx".into(),
                    vec![
                        "-c".into(),
                        conf.display().to_string(),
                        "-p".into(),
                        dir.display().to_string(),
                    ],
                    "/health",
                )
            }
            Kind::Bare => (
                bins.bench.clone(),
                vec!["bare".into(), "--listen".into(), addr.to_string()],
                "/health",
            ),
        };
        let mut server = Self {
            kind,
            addr,
            data,
            dir,
            program,
            args,
            env,
            ready_path,
            child: None,
            restarts: 0,
        };
        let ready = server.spawn().await?;
        Ok((server, ready))
    }

    async fn spawn(&mut self) -> Result<Duration> {
        let log = std::fs::File::create(self.dir.join(format!("log-{}.txt", self.restarts)))?;
        let started = Instant::now();
        let mut command = Command::new(&self.program);
        if self.kind == Kind::DistributionS3 {
            // aws-sdk-go panics on AWS_CA_BUNDLE with distribution's own
            // HTTP transport ("LoadCustomCABundleError"); MinIO is plain HTTP.
            command.env_remove("AWS_CA_BUNDLE");
        }
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.program.display()))?;
        self.child = Some(child);
        let ready = self.wait_ready(started).await?;
        Ok(ready)
    }

    /// Polls the ready path every millisecond until it answers 200.
    async fn wait_ready(&mut self, started: Instant) -> Result<Duration> {
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Ok(mut c) = Conn::connect(self.addr).await
                && let Ok((status, _)) = c.call_discard(Method::GET, self.ready_path, &[]).await
                && status.is_success()
            {
                return Ok(started.elapsed());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(code) = child.try_wait()?
            {
                bail!(
                    "{} exited during start-up: {code}; see {}",
                    self.kind,
                    self.dir.display()
                );
            }
            if Instant::now() > deadline {
                bail!("{} not ready after 120 s", self.kind);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Its directory: configuration, logs (`log-<n>.txt`), and what the
    /// server writes besides its data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .map(Child::id)
            .context("server not running")
    }

    /// SIGTERM, then SIGKILL after 10 s (120 s under callgrind, which
    /// writes its profile on the way out).
    pub async fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = if self.kind == Kind::BerthCallgrind {
                120
            } else {
                10
            };
            let deadline = Instant::now() + Duration::from_secs(grace);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                    child.wait()?;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// Stops and starts again on the same data; time from spawn to ready.
    pub async fn restart(&mut self) -> Result<Duration> {
        self.stop().await?;
        self.restarts += 1;
        self.spawn().await
    }

    pub fn stats(&self) -> Result<ProcStats> {
        ProcStats::read(self.pid()?)
    }

    /// Starts measuring this server's CPU time and peak RSS.
    pub fn meter(&self) -> Result<Meter> {
        Meter::start(self.pid()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Berth on the filesystem driver, storing under `data`.
fn berth_args(data: &Path, addr: SocketAddr) -> Vec<String> {
    vec![
        "--root".into(),
        data.display().to_string(),
        "--listen".into(),
        addr.to_string(),
        "--log-level".into(),
        "warn".into(),
    ]
}

fn kind_slug(kind: Kind) -> &'static str {
    match kind {
        Kind::Berth => "berth",
        Kind::Distribution => "distribution",
        Kind::Zot => "zot",
        Kind::Nginx => "nginx",
        Kind::Bare => "bare",
        Kind::BerthS3 => "berth-s3",
        Kind::DistributionS3 => "distribution-s3",
        Kind::Minio => "minio",
        Kind::BerthCallgrind => "berth-callgrind",
    }
}

/// Resets a process's peak RSS (VmHWM) to its current RSS.
pub fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .context("reset VmHWM through /proc/<pid>/clear_refs")
}

/// A server's CPU time and peak RSS over one measured part: the peak is
/// reset when it starts, so each row has a peak of its own.
#[derive(Debug)]
pub struct Meter {
    pid: u32,
    before: ProcStats,
}

impl Meter {
    pub fn start(pid: u32) -> Result<Self> {
        reset_peak(pid)?;
        Ok(Self {
            pid,
            before: ProcStats::read(pid)?,
        })
    }

    /// Adds the CPU seconds since the start to `sample`, and raises its
    /// peak RSS to the peak since the start.
    pub fn finish(self, sample: &mut Sample) -> Result<ProcStats> {
        let after = ProcStats::read(self.pid)?;
        sample.cpu += after.cpu - self.before.cpu;
        sample.peak_kb = sample.peak_kb.max(after.hwm_kb);
        Ok(after)
    }
}

/// CPU seconds (utime + stime) and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct ProcStats {
    pub cpu: f64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

impl ProcStats {
    pub fn read(pid: u32) -> Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let after = stat.rsplit_once(')').context("malformed /proc/pid/stat")?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // After the command name: field 3 (state) is index 0, so utime (14)
        // and stime (15) are at 11 and 12.
        let ticks: u64 = fields.get(11).context("utime")?.parse::<u64>()?
            + fields.get(12).context("stime")?.parse::<u64>()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb = |key: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(key))
                .with_context(|| format!("{key} in /proc/{pid}/status"))?;
            Ok(line
                .split_whitespace()
                .nth(1)
                .context("value")?
                .parse::<u64>()?)
        };
        Ok(Self {
            cpu: ticks as f64 / clock_ticks(),
            rss_kb: kb("VmRSS:")?,
            hwm_kb: kb("VmHWM:")?,
        })
    }
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
