//! Measurements: latency samples and fixed-duration closed-loop load at a
//! given concurrency (one keep-alive connection per worker).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use http::Method;
use tokio::sync::Barrier;

use crate::client::Conn;
use crate::servers::Meter;

/// Latencies of one run against one server, with what it moved and the
/// server's CPU time meanwhile.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub lat: Vec<Duration>,
    pub bytes: u64,
    /// Wall time of the run; for serial runs the sum of the latencies.
    pub wall: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Server CPU seconds (utime + stime) during the run.
    pub cpu: f64,
    /// The server's peak RSS (VmHWM, reset first) during the run, KiB; 0
    /// when not measured.
    pub peak_kb: u64,
}

impl Sample {
    pub fn add(&mut self, other: Sample) {
        self.lat.extend(other.lat);
        self.bytes += other.bytes;
        self.wall += other.wall;
        self.errors += other.errors;
        self.cpu += other.cpu;
        self.peak_kb = self.peak_kb.max(other.peak_kb);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn error(&mut self, e: &anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }

    pub fn rps(&self) -> f64 {
        self.lat.len() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile (0..=100) latency, nearest rank.
    pub fn pct(&self, p: f64) -> Duration {
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.lat.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
}

/// A request repeated by every worker.
#[derive(Debug, Clone)]
pub struct Fixed {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    /// Idle time before each measured request (not timed): requests that
    /// find the server idle, as the serial rows of `all` do.
    pub pause: Duration,
}

/// `c` workers send `req` back to back for `dur`, after `warmup`; the
/// server's (`pid`, when given) CPU time and peak RSS are taken over the
/// measured part only.
pub async fn fixed(
    addr: SocketAddr,
    pid: Option<u32>,
    c: usize,
    warmup: Duration,
    dur: Duration,
    req: &Fixed,
) -> Result<Sample> {
    let barrier = Arc::new(Barrier::new(c + 1));
    let mut tasks = Vec::new();
    for _ in 0..c {
        let barrier = barrier.clone();
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Sample::default();
            let mut conn = match Conn::connect(addr).await {
                Ok(conn) => Some(conn),
                Err(e) => {
                    s.error(&e);
                    None
                }
            };
            barrier.wait().await;
            let Some(conn) = conn.as_mut() else {
                barrier.wait().await;
                return s;
            };
            let headers: Vec<(&str, &str)> =
                req.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let warm_end = Instant::now() + warmup;
            while Instant::now() < warm_end {
                let _ = conn
                    .call_discard(req.method.clone(), &req.path, &headers)
                    .await;
            }
            barrier.wait().await;
            let end = Instant::now() + dur;
            while Instant::now() < end {
                if !req.pause.is_zero() {
                    tokio::time::sleep(req.pause).await;
                }
                let t = Instant::now();
                match conn
                    .call_discard(req.method.clone(), &req.path, &headers)
                    .await
                {
                    Ok((status, n)) if status.is_success() => {
                        s.lat.push(t.elapsed());
                        s.bytes += n;
                    }
                    Ok((status, _)) => {
                        s.error(&anyhow::anyhow!("{} {}: {status}", req.method, req.path))
                    }
                    Err(e) => s.error(&e),
                }
            }
            s
        }));
    }
    barrier.wait().await;
    barrier.wait().await;
    let meter = pid.map(Meter::start).transpose()?;
    let start = Instant::now();
    let mut total = Sample::default();
    for t in tasks {
        total.add(t.await?);
    }
    total.wall = start.elapsed();
    if let Some(meter) = meter {
        meter.finish(&mut total)?;
    }
    Ok(total)
}

/// `clients` connections each GET `path` (a blob larger than `rate` ×
/// `dur`) and then read it at `rate` bytes per second, in 16 KiB reads,
/// for `dur`: clients
/// on thin links pulling one layer at once. The sample's bytes are what
/// all of them received, its latencies each client's time to its first
/// byte; a client that saw the connection end early, or anything but a
/// 200, is an error.
pub async fn slow_pulls(
    addr: SocketAddr,
    path: &str,
    clients: usize,
    rate: u64,
    dur: Duration,
) -> Result<Sample> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let start = Arc::new(Barrier::new(clients));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (request, start) = (request.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(addr).await?;
            start.wait().await;
            let t0 = Instant::now();
            socket.write_all(request.as_bytes()).await?;
            let mut piece = vec![0u8; 16 * 1024];
            let (mut received, mut first) = (0u64, None);
            while t0.elapsed() < dur {
                let n = socket.read(&mut piece).await?;
                anyhow::ensure!(n > 0, "connection closed after {received} bytes");
                if first.is_none() {
                    anyhow::ensure!(
                        piece.starts_with(b"HTTP/1.1 200"),
                        "{}",
                        String::from_utf8_lossy(&piece[..n.min(64)])
                    );
                    first = Some(t0.elapsed());
                }
                received += n as u64;
                // Paced: the next read when the rate allows it.
                let due = t0 + Duration::from_secs_f64(received as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            Ok::<_, anyhow::Error>((first.unwrap_or(dur), received))
        }));
    }
    crowd_sample(tasks, dur).await
}

/// `clients` uploads each start a monolithic PUT of `size` bytes (with
/// `digest`) to `repo` and send it at `rate` bytes per second, in 16 KiB
/// writes, for `dur`, then leave: clients on thin links pushing at once.
/// The uploads never finish; the sample's bytes are what all of them sent,
/// its latencies the time each took to start (POST).
pub async fn slow_pushes(
    addr: SocketAddr,
    repo: &str,
    size: usize,
    digest: &str,
    clients: usize,
    rate: u64,
    dur: Duration,
) -> Result<Sample> {
    use tokio::io::AsyncWriteExt;

    let start = Arc::new(Barrier::new(clients));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (repo, digest, start) = (repo.to_string(), digest.to_string(), start.clone());
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let mut c = Conn::connect(addr).await?;
            let location = crate::ops::start_upload(&mut c, &repo).await?;
            let started = t0.elapsed();
            let path = crate::client::with_query(&location, "digest", &digest);
            let mut socket = tokio::net::TcpStream::connect(addr).await?;
            start.wait().await;
            let head = format!(
                "PUT {path} HTTP/1.1\r\nHost: bench\r\ncontent-type: application/octet-stream\r\ncontent-length: {size}\r\n\r\n"
            );
            socket.write_all(head.as_bytes()).await?;
            let piece = vec![0x5au8; 16 * 1024];
            let (t1, mut sent) = (Instant::now(), 0u64);
            while t1.elapsed() < dur && sent + (piece.len() as u64) < size as u64 {
                socket.write_all(&piece).await?;
                sent += piece.len() as u64;
                // Paced: the next write when the rate allows it.
                let due = t1 + Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            Ok::<_, anyhow::Error>((started, sent))
        }));
    }
    crowd_sample(tasks, dur).await
}

/// The sample of a crowd of `dur`: each client's latency and bytes, or
/// its error.
async fn crowd_sample(
    tasks: Vec<tokio::task::JoinHandle<Result<(Duration, u64)>>>,
    dur: Duration,
) -> Result<Sample> {
    let mut sample = Sample {
        wall: dur,
        ..Sample::default()
    };
    for task in tasks {
        match task.await? {
            Ok((latency, bytes)) => {
                sample.lat.push(latency);
                sample.bytes += bytes;
            }
            Err(e) => sample.error(&e),
        }
    }
    Ok(sample)
}
