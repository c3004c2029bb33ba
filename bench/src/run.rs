//! `berth-bench all`: one run, every server, every workload, interleaved
//! (each repetition or row visits the servers in a rotated order), and the
//! Markdown report with Berth's ratios to the peers and to the limits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http::Method;

use crate::client::Conn;
use crate::load::{self, Fixed, Sample};
use crate::ops::{self, ACCEPT, Image};
use crate::servers::{
    Bins, Kind, Meter, ProcStats, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, Server,
};

#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Seconds of each fixed-duration run (manifest loads, listings).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Unmeasured seconds before each fixed-duration run.
    #[arg(long, default_value_t = 0.25)]
    pub warmup: f64,
    /// Seconds of the mixed push/pull load.
    #[arg(long, default_value_t = 5.0)]
    pub mixed_duration: f64,
    /// Tags seeded into one repository for the tag-list row.
    #[arg(long, default_value_t = 10_000)]
    pub tags: usize,
    /// Repositories seeded for the catalog row and the start-up timing.
    #[arg(long, default_value_t = 10_000)]
    pub repos: usize,
    /// Repetitions of the 1 GiB push (pull: at least 3); 0 skips 1 GiB.
    #[arg(long, default_value_t = 2)]
    pub gib_reps: usize,
    /// A smoke run: 1 s loads, 500 tags and repositories, no 1 GiB.
    #[arg(long)]
    pub quick: bool,
    /// Also write the Markdown report here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Parent of the temporary directory holding every store (default: $TMPDIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the temporary directory (stores, configs, server logs).
    #[arg(long)]
    pub keep: bool,
    /// Skip the S3 rows (MinIO, Berth and distribution on it).
    #[arg(long, conflicts_with = "s3_only")]
    pub no_s3: bool,
    /// Only the S3 rows (to check them without the 14-minute run).
    #[arg(long)]
    pub s3_only: bool,
}

const PEERS: [Kind; 3] = [Kind::Berth, Kind::Distribution, Kind::Zot];
const MIB: usize = 1 << 20;
/// Suffix of the rows of the first pull right after a push.
const FIRST_PULL: &str = ", first after the push";

/// Rotated visiting order for repetition `rep` of `n` servers.
fn order(n: usize, rep: usize) -> Vec<usize> {
    (0..n).map(|i| (i + rep) % n).collect()
}

fn log(t0: Instant, msg: impl AsRef<str>) {
    eprintln!(
        "[bench {:6.1}s] {}",
        t0.elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    MBps,
    Rps,
}

/// One workload: a sample per server, and the limit it is compared to.
#[derive(Debug)]
struct Row {
    name: String,
    unit: Unit,
    cells: Vec<(Kind, Sample)>,
    /// A limit measured outside the servers (openssl), in the row's unit.
    scalar_limit: Option<(String, f64)>,
}

impl Row {
    fn new(name: impl Into<String>, unit: Unit) -> Self {
        Self {
            name: name.into(),
            unit,
            cells: Vec::new(),
            scalar_limit: None,
        }
    }

    fn get(&self, k: Kind) -> Option<&Sample> {
        self.cells.iter().find(|(c, _)| *c == k).map(|(_, s)| s)
    }

    fn value(&self, k: Kind) -> Option<f64> {
        let s = self.get(k)?;
        if s.lat.is_empty() {
            return None;
        }
        Some(match self.unit {
            Unit::MBps => s.mbps(),
            Unit::Rps => s.rps(),
        })
    }

    fn limit(&self) -> Option<(String, f64)> {
        if let Some(l) = &self.scalar_limit {
            return Some(l.clone());
        }
        for k in [Kind::Nginx, Kind::Bare] {
            if let Some(v) = self.value(k) {
                return Some((k.to_string(), v));
            }
        }
        None
    }

    fn add(&mut self, k: Kind, s: Sample) {
        match self.cells.iter_mut().find(|(c, _)| *c == k) {
            Some((_, old)) => old.add(s),
            None => self.cells.push((k, s)),
        }
    }
}

#[derive(Debug, Default)]
struct Resources {
    startup_empty: BTreeMap<Kind, Duration>,
    startup_full: BTreeMap<Kind, Vec<Duration>>,
    idle_fresh_kb: BTreeMap<Kind, u64>,
    idle_full_kb: BTreeMap<Kind, u64>,
    peak_run_kb: BTreeMap<Kind, u64>,
    peak_mixed_kb: BTreeMap<Kind, u64>,
    cpu_run: BTreeMap<Kind, f64>,
    seed_secs: BTreeMap<Kind, f64>,
}

struct Bench {
    opts: Opts,
    t0: Instant,
    targets: Vec<Server>,
    nginx: Server,
    bare: Server,
    rows: Vec<Row>,
    res: Resources,
    notes: Vec<String>,
    image: Image,
    /// Durable write rate of the stores' filesystem, MB/s.
    disk: f64,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench").finish_non_exhaustive()
    }
}

pub async fn all(mut opts: Opts) -> Result<()> {
    if opts.quick {
        opts.duration = opts.duration.min(1.0);
        opts.mixed_duration = opts.mixed_duration.min(2.0);
        opts.tags = opts.tags.min(500);
        opts.repos = opts.repos.min(500);
        opts.gib_reps = 0;
    }
    let t0 = Instant::now();
    let bins = Bins::locate()?;
    let mut machine = Machine::read();
    machine.versions.push((
        "Hot-function layout".into(),
        crate::hot::coverage(&bins.berth),
    ));
    let parent = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    // `--dir` names where the stores go; a missing one is created rather
    // than failing the run after the build.
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir_in(&parent)?;
    log(t0, format!("stores under {}", tmp.path().display()));

    log(t0, "limit: openssl speed -evp sha256 (16384-byte blocks)");
    let sha = openssl_sha256()?;
    log(t0, format!("  SHA-256 on one core: {sha:.0} MB/s"));
    let disk_mib = if opts.quick { 64 } else { 512 };
    let disk = disk_sync_rate(tmp.path(), disk_mib)?;
    log(
        t0,
        format!("  durable write (write + fdatasync of {disk_mib} MiB): {disk:.0} MB/s"),
    );

    let mut res = Resources::default();
    let mut targets = Vec::new();
    for kind in PEERS {
        let (s, ready) = Server::start(kind, &bins, tmp.path()).await?;
        log(t0, format!("{kind} on {} ready in {ready:?}", s.addr));
        res.startup_empty.insert(kind, ready);
        targets.push(s);
    }
    let (nginx, _) = Server::start(Kind::Nginx, &bins, tmp.path()).await?;
    let (bare, _) = Server::start(Kind::Bare, &bins, tmp.path()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for s in &targets {
        res.idle_fresh_kb.insert(s.kind, s.stats()?.rss_kb);
    }

    let mut b = Bench {
        opts,
        t0,
        targets,
        nginx,
        bare,
        rows: Vec::new(),
        res,
        notes: Vec::new(),
        image: Image::new(1),
        disk,
    };
    for s in &b.targets {
        let mut c = Conn::connect(s.addr).await?;
        b.image
            .push(&mut c, "bench/app", "latest")
            .await
            .with_context(|| format!("seed bench/app on {}", s.kind))?;
    }

    if !b.opts.s3_only {
        b.blobs(sha).await?;
        b.chunked().await?;
        b.manifests().await?;
        b.listings().await?;
        for s in &b.targets {
            // Each row resets the peak: the run's is the largest of theirs.
            let st = s.stats()?;
            let rows = b.rows.iter().filter_map(|r| r.get(s.kind));
            let peak = rows.map(|x| x.peak_kb).fold(st.hwm_kb, u64::max);
            b.res.peak_run_kb.insert(s.kind, peak);
            b.res.cpu_run.insert(s.kind, st.cpu);
        }
        b.restarts().await?;
        b.mixed().await?;
        b.slow_pulls().await?;
        b.slow_pushes().await?;
    }
    if !b.opts.no_s3 {
        b.s3(&bins, tmp.path()).await?;
    }

    let report = b.report(&machine, sha);
    println!("{report}");
    if let Some(out) = &b.opts.out {
        std::fs::write(out, &report)?;
        log(t0, format!("report written to {}", out.display()));
    }
    for s in b.targets.iter_mut() {
        s.stop().await?;
    }
    b.nginx.stop().await?;
    b.bare.stop().await?;
    if b.opts.keep {
        let kept = tmp.keep();
        log(t0, format!("kept {}", kept.display()));
    }
    log(t0, "done");
    Ok(())
}

/// `berth-bench load`: one fixed-duration run, printed on one line.
pub async fn load(
    addr: std::net::SocketAddr,
    path: String,
    method: Method,
    c: usize,
    duration: f64,
    pause: Duration,
    pid: Option<u32>,
) -> Result<()> {
    let req = Fixed {
        method,
        path,
        headers: vec![("accept", ACCEPT.to_string())],
        pause,
    };
    let s = load::fixed(
        addr,
        pid,
        c,
        Duration::from_millis(250),
        Duration::from_secs_f64(duration),
        &req,
    )
    .await?;
    println!(
        "{} {} c={c}: {:.0} req/s, {:.1} MB/s, p50 {}, p99 {}, {} errors{}{}",
        req.method,
        req.path,
        s.rps(),
        s.mbps(),
        fmt_dur(s.pct(50.0)),
        fmt_dur(s.pct(99.0)),
        s.errors,
        s.first_error
            .map_or(String::new(), |e| format!(" (first: {e})")),
        pid.map_or(String::new(), |_| format!(", server CPU {:.2} s", s.cpu)),
    );
    Ok(())
}

impl Bench {
    fn dur(&self) -> Duration {
        Duration::from_secs_f64(self.opts.duration)
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.opts.warmup)
    }

    /// Times one serial operation against server `s`, with its CPU time and
    /// peak RSS.
    async fn timed<F, Fut>(s: &Server, bytes: usize, sample: &mut Sample, f: F) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let meter = s.meter()?;
        let t = Instant::now();
        let r = f().await;
        let el = t.elapsed();
        meter.finish(sample)?;
        match r {
            Ok(()) => {
                sample.lat.push(el);
                sample.wall += el;
                sample.bytes += bytes as u64;
            }
            Err(e) => sample.error(&e),
        }
        Ok(())
    }

    async fn blobs(&mut self, sha: f64) -> Result<()> {
        let mut sizes = vec![("1 MiB", MIB, 20, 20), ("64 MiB", 64 * MIB, 5, 5)];
        if self.opts.gib_reps > 0 {
            sizes.push((
                "1 GiB",
                1024 * MIB,
                self.opts.gib_reps,
                self.opts.gib_reps.max(3),
            ));
        }
        if self.opts.quick {
            sizes = vec![("1 MiB", MIB, 5, 5), ("64 MiB", 64 * MIB, 2, 2)];
        }
        let mut conns = Vec::new();
        for s in &self.targets {
            conns.push(Conn::connect(s.addr).await?);
        }
        for (label, size, push_reps, pull_reps) in sizes {
            log(self.t0, format!("blob push {label} x{push_reps}"));
            let mut row = Row::new(format!("blob push {label} (POST + PUT)"), Unit::MBps);
            row.scalar_limit = Some(("SHA-256, 1 core".into(), sha));
            let mut first: Option<(Bytes, String)> = None;
            for rep in 0..push_reps {
                let (data, digest) = ops::blob(size, (size as u64) << 8 | rep as u64);
                for i in order(3, rep) {
                    let s = &self.targets[i];
                    let mut sample = Sample::default();
                    let c = &mut conns[i];
                    Self::timed(s, size, &mut sample, || {
                        ops::push_monolithic(c, "bench/blobs", &data, &digest)
                    })
                    .await?;
                    row.add(s.kind, sample);
                }
                if rep == 0 {
                    first = Some((data, digest));
                }
            }
            self.rows.push(row);
            let (data, digest) = first.context("no push repetition")?;
            let file = format!("blob-{}", label.replace(' ', ""));
            std::fs::write(self.nginx.data.join(&file), &data)?;
            drop(data);

            log(self.t0, format!("blob pull {label} x1+{pull_reps}"));
            // The first pull right after the push is a row of its own: what
            // a push left in the page cache differs (Berth writes the bulk of
            // large blobs past it, BENCHMARKS.md), and the steady row below
            // compares the servers' own read paths.
            let mut first_row = Row::new(format!("blob pull {label}{FIRST_PULL}"), Unit::MBps);
            let mut row = Row::new(format!("blob pull {label}"), Unit::MBps);
            let mut nginx_conn = Conn::connect(self.nginx.addr).await?;
            for rep in 0..=pull_reps {
                let row = if rep == 0 { &mut first_row } else { &mut row };
                for i in order(4, rep) {
                    let mut sample = Sample::default();
                    if i == 3 {
                        let path = format!("/{file}");
                        Self::timed(&self.nginx, size, &mut sample, || {
                            ops::pull_blob(&mut nginx_conn, &path, size)
                        })
                        .await?;
                        row.add(Kind::Nginx, sample);
                    } else {
                        let s = &self.targets[i];
                        let path = format!("/v2/bench/blobs/blobs/{digest}");
                        let c = &mut conns[i];
                        Self::timed(s, size, &mut sample, || ops::pull_blob(c, &path, size))
                            .await?;
                        row.add(s.kind, sample);
                    }
                }
            }
            self.rows.push(first_row);
            self.rows.push(row);
        }
        Ok(())
    }

    async fn chunked(&mut self) -> Result<()> {
        let reps = if self.opts.quick { 1 } else { 3 };
        log(
            self.t0,
            format!("chunked push 64 MiB in 4 MiB chunks x{reps}"),
        );
        let mut row = Row::new("chunked push 64 MiB (16 PATCH of 4 MiB)", Unit::MBps);
        for rep in 0..reps {
            let (data, digest) = ops::blob(64 * MIB, 0xC0FFEE + rep as u64);
            for i in order(3, rep) {
                let s = &self.targets[i];
                let mut c = Conn::connect(s.addr).await?;
                let mut sample = Sample::default();
                Self::timed(s, data.len(), &mut sample, || {
                    ops::push_chunked(&mut c, "bench/chunked", &data, &digest, 4 * MIB)
                })
                .await?;
                row.add(s.kind, sample);
            }
        }
        self.rows.push(row);
        Ok(())
    }

    async fn manifests(&mut self) -> Result<()> {
        let digest = self.image.digest.clone();
        let mut idx = 0;
        for c in [1usize, 16, 64] {
            for (method, by, reference) in [
                (Method::GET, "digest", digest.as_str()),
                (Method::HEAD, "digest", digest.as_str()),
                (Method::GET, "tag", "latest"),
                (Method::HEAD, "tag", "latest"),
            ] {
                let name = format!("manifest {method} by {by}, c={c}");
                log(self.t0, &name);
                let req = Fixed {
                    method: method.clone(),
                    path: format!("/v2/bench/app/manifests/{reference}"),
                    headers: vec![("accept", ACCEPT.to_string())],
                    pause: Duration::ZERO,
                };
                let mut row = Row::new(name, Unit::Rps);
                for i in order(4, idx) {
                    let s = if i == 3 { &self.bare } else { &self.targets[i] };
                    let sample =
                        load::fixed(s.addr, Some(s.pid()?), c, self.warmup(), self.dur(), &req)
                            .await?;
                    row.add(s.kind, sample);
                }
                self.rows.push(row);
                idx += 1;
            }
        }
        Ok(())
    }

    /// Seeds `--tags` tags and `--repos` repositories through the API
    /// (16 connections), records the rates, then lists them.
    async fn listings(&mut self) -> Result<()> {
        let (ntags, nrepos) = (self.opts.tags, self.opts.repos);
        let mut tag_row = Row::new("seed: manifest PUT to a new tag, c=16", Unit::Rps);
        let mut repo_row = Row::new(
            "seed: new repository (2 mounts + manifest PUT), c=16",
            Unit::Rps,
        );
        for i in order(3, 0) {
            let s = &self.targets[i];
            let t = Instant::now();
            log(
                self.t0,
                format!(
                    "seed {ntags} tags and {nrepos} repositories into {}",
                    s.kind
                ),
            );
            let image = Arc::new(self.image.clone());
            let meter = s.meter()?;
            let mut sample = seed_tags(s.addr, ntags, image.clone()).await?;
            meter.finish(&mut sample)?;
            tag_row.add(s.kind, sample);
            let meter = s.meter()?;
            let mut sample = seed_repos(s.addr, nrepos, image).await?;
            meter.finish(&mut sample)?;
            repo_row.add(s.kind, sample);
            self.res.seed_secs.insert(s.kind, t.elapsed().as_secs_f64());
        }
        self.rows.push(tag_row);
        self.rows.push(repo_row);

        // Pages of 1,000: distribution 2.8.2 answers a larger `n` with 400
        // (its catalog `maxentries` default, the CVE-2023-2253 fix), and a
        // client pages anyway.
        for (name, first, field) in [
            (
                format!("tag list of {ntags} tags (all pages), c=1"),
                "/v2/bench/tags/tags/list?n=1000",
                "tags",
            ),
            (
                format!("catalog of {} repositories (all pages), c=1", nrepos + 4),
                "/v2/_catalog?n=1000",
                "repositories",
            ),
        ] {
            log(self.t0, &name);
            let mut row = Row::new(name, Unit::Rps);
            for i in order(3, self.rows.len()) {
                let s = &self.targets[i];
                let mut c = Conn::connect(s.addr).await?;
                let (entries, pages) = ops::list_all(&mut c, first, field)
                    .await
                    .with_context(|| format!("list on {}", s.kind))?;
                self.notes.push(format!(
                    "{} {first}: {entries} entries in {pages} page(s)",
                    s.kind
                ));
                let meter = s.meter()?;
                let mut sample = list_for(&mut c, first, field, self.dur()).await;
                meter.finish(&mut sample)?;
                row.add(s.kind, sample);
            }
            self.rows.push(row);
        }
        Ok(())
    }

    async fn restarts(&mut self) -> Result<()> {
        log(self.t0, "restart each server 3 times on its full store");
        for rep in 0..3 {
            for i in order(3, rep) {
                let s = &mut self.targets[i];
                let d = s.restart().await?;
                self.res.startup_full.entry(s.kind).or_default().push(d);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for s in &self.targets {
            self.res.idle_full_kb.insert(s.kind, s.stats()?.rss_kb);
        }
        Ok(())
    }

    async fn mixed(&mut self) -> Result<()> {
        let dur = Duration::from_secs_f64(self.opts.mixed_duration);
        log(self.t0, format!("mixed push/pull, c=16, {dur:?} each"));
        ensure!(
            self.rows
                .iter()
                .any(|r| r.name == "blob push 1 MiB (POST + PUT)"),
            "no 1 MiB blob pushed"
        );
        let data = MixedData::new();
        let mut row = Row::new(
            "mixed: 20% push 1 MiB, 10% manifest PUT, 40% manifest GET, 30% blob GET 1 MiB; c=16",
            Unit::Rps,
        );
        for i in order(3, 1) {
            let s = &self.targets[i];
            let mut c = Conn::connect(s.addr).await?;
            self.image.push(&mut c, "bench/mixed", "base").await?;
            let meter = s.meter()?;
            let mut sample = mixed(s.addr, 16, dur, &data, self.image.clone()).await?;
            meter.finish(&mut sample)?;
            self.res.peak_mixed_kb.insert(s.kind, sample.peak_kb);
            row.add(s.kind, sample);
        }
        self.rows.push(row);
        Ok(())
    }

    /// Many clients pulling the 64 MiB blob slowly at once: what a server
    /// holds for downloads whose clients cannot keep up (the ratio table's
    /// peak RSS is the figure; every server delivers the same bytes).
    async fn slow_pulls(&mut self) -> Result<()> {
        let (_, digest) = ops::blob(64 * MIB, (64 * MIB as u64) << 8);
        let path = format!("/v2/bench/blobs/blobs/{digest}");
        let targets: Vec<&Server> = self.targets.iter().collect();
        let row = self.slow_pull_row("", &targets, |k| k, &path).await?;
        self.rows.push(row);
        Ok(())
    }

    /// Many clients pushing a 64 MiB blob slowly at once: what a server
    /// holds for uploads whose clients send slowly (the ratio table's peak
    /// RSS is the figure; every server receives the same bytes). Each
    /// server is restarted first: a Go server keeps what the slow pulls
    /// before made it allocate, which would count as this row's peak.
    async fn slow_pushes(&mut self) -> Result<()> {
        let (clients, secs) = if self.opts.quick { (50, 2) } else { (200, 4) };
        let rate = 2_000_000;
        let dur = Duration::from_secs(secs);
        let mut row = Row::new(
            format!("slow pushes: {clients} clients push a 64 MiB blob at 2 MB/s each"),
            Unit::MBps,
        );
        log(self.t0, format!("{}: {rate} B/s for {dur:?}", row.name));
        let (_, digest) = ops::blob(64 * MIB, 0x510_0000);
        for i in order(self.targets.len(), 0) {
            let s = &mut self.targets[i];
            s.restart().await?;
            let meter = s.meter()?;
            let mut sample =
                load::slow_pushes(s.addr, "bench/slow", 64 * MIB, &digest, clients, rate, dur)
                    .await?;
            meter.finish(&mut sample)?;
            row.add(s.kind, sample);
        }
        self.rows.push(row);
        Ok(())
    }

    /// The slow-pulls row against `servers` (in the columns `column` names),
    /// all reading the 64 MiB blob at `path`.
    async fn slow_pull_row(
        &self,
        prefix: &str,
        servers: &[&Server],
        column: impl Fn(Kind) -> Kind,
        path: &str,
    ) -> Result<Row> {
        let (clients, secs) = if self.opts.quick { (50, 2) } else { (200, 4) };
        let rate = 2_000_000;
        let dur = Duration::from_secs(secs);
        let mut row = Row::new(
            format!("{prefix}slow pulls: {clients} clients read the 64 MiB blob at 2 MB/s each"),
            Unit::MBps,
        );
        log(self.t0, format!("{}: {rate} B/s for {dur:?}", row.name));
        for i in order(servers.len(), 0) {
            let s = servers[i];
            let meter = s.meter()?;
            let mut sample = load::slow_pulls(s.addr, path, clients, rate, dur).await?;
            meter.finish(&mut sample)?;
            row.add(column(s.kind), sample);
        }
        Ok(row)
    }

    /// The S3 rows: MinIO, then Berth and distribution storing into one
    /// bucket of it (distribution serving blobs itself, not redirecting),
    /// each with the same client, data and interleaving as the filesystem
    /// rows. Their figures go in the Berth and distribution columns of rows
    /// named `S3: ...`; MinIO's own CPU seconds go in the notes.
    async fn s3(&mut self, bins: &Bins, dir: &std::path::Path) -> Result<()> {
        log(self.t0, "S3: start MinIO, Berth and distribution on it");
        let (mut minio, _) = Server::start(Kind::Minio, bins, dir).await?;
        create_bucket(minio.addr).await?;
        let mut servers = Vec::new();
        for kind in [Kind::BerthS3, Kind::DistributionS3] {
            let (s, ready) = Server::start_on(kind, bins, dir, Some(minio.addr)).await?;
            log(self.t0, format!("{kind} on {} ready in {ready:?}", s.addr));
            let mut c = Conn::connect(s.addr).await?;
            self.image
                .push(&mut c, "bench/app", "latest")
                .await
                .with_context(|| format!("seed bench/app on {kind}"))?;
            servers.push(s);
        }
        // Where each server's figures go in the table.
        let column = |k: Kind| match k {
            Kind::BerthS3 => Kind::Berth,
            _ => Kind::Distribution,
        };
        let size = 64 * MIB;
        let reps = if self.opts.quick { 2 } else { 5 };
        let mut conns = Vec::new();
        for s in &servers {
            conns.push(Conn::connect(s.addr).await?);
        }
        log(self.t0, format!("S3: blob push and pull 64 MiB x{reps}"));
        let mut push = Row::new("S3: blob push 64 MiB (POST + PUT)", Unit::MBps);
        let mut pull = Row::new("S3: blob pull 64 MiB", Unit::MBps);
        let minio_before = minio.stats()?.cpu;
        let mut first = None;
        for rep in 0..reps {
            let (data, digest) = ops::blob(size, 0x53_0000 | rep as u64);
            for i in order(2, rep) {
                let (s, c) = (&servers[i], &mut conns[i]);
                let mut sample = Sample::default();
                Self::timed(s, size, &mut sample, || {
                    ops::push_monolithic(c, "bench/blobs", &data, &digest)
                })
                .await?;
                push.add(column(s.kind), sample);
            }
            first.get_or_insert(digest);
        }
        let minio_push = minio.stats()?.cpu - minio_before;
        let digest = first.context("no push repetition")?;
        let path = format!("/v2/bench/blobs/blobs/{digest}");
        let minio_before = minio.stats()?.cpu;
        for rep in 0..reps {
            for i in order(2, rep) {
                let (s, c) = (&servers[i], &mut conns[i]);
                let mut sample = Sample::default();
                Self::timed(s, size, &mut sample, || ops::pull_blob(c, &path, size)).await?;
                pull.add(column(s.kind), sample);
            }
        }
        let minio_pull = minio.stats()?.cpu - minio_before;
        self.notes.push(format!(
            "S3 rows: MinIO's CPU seconds, both servers together: {minio_push:.2} s during the 64 MiB pushes, {minio_pull:.2} s during the pulls"
        ));
        let rows_before = self.rows.len();
        self.rows.push(push);
        self.rows.push(pull);

        let digest = self.image.digest.clone();
        for (idx, (by, reference)) in [("digest", digest.as_str()), ("tag", "latest")]
            .into_iter()
            .enumerate()
        {
            let name = format!("S3: manifest GET by {by}, c=16");
            log(self.t0, &name);
            let req = Fixed {
                method: Method::GET,
                path: format!("/v2/bench/app/manifests/{reference}"),
                headers: vec![("accept", ACCEPT.to_string())],
                pause: Duration::ZERO,
            };
            let mut row = Row::new(name, Unit::Rps);
            let minio_before = minio.stats()?.cpu;
            for i in order(2, idx) {
                let s = &servers[i];
                let sample =
                    load::fixed(s.addr, Some(s.pid()?), 16, self.warmup(), self.dur(), &req)
                        .await?;
                row.add(column(s.kind), sample);
            }
            self.notes.push(format!(
                "S3 rows: MinIO's CPU seconds during {}: {:.2} s",
                row.name,
                minio.stats()?.cpu - minio_before
            ));
            self.rows.push(row);
        }
        // Peak RSS per phase, from the rows: push, pull, manifest GETs.
        let s3_rows = &self.rows[rows_before..];
        for s in &servers {
            let peak = |rows: &[Row]| {
                rows.iter()
                    .filter_map(|r| r.get(column(s.kind)))
                    .map(|x| x.peak_kb)
                    .max()
                    .unwrap_or(0)
            };
            let (push, pull, get) = (
                peak(&s3_rows[..1]),
                peak(&s3_rows[1..2]),
                peak(&s3_rows[2..]),
            );
            let mib = |kb: u64| kb as f64 / 1024.0;
            self.notes.push(format!(
                "S3 rows: {} peak RSS {:.1} MiB during the 64 MiB pushes, {:.1} MiB during the pulls, {:.1} MiB during the manifest GETs; CPU {:.1} s in all",
                s.kind,
                mib(push),
                mib(pull),
                mib(get),
                s.stats()?.cpu
            ));
        }
        // Last: a Go server keeps what a crowd made it allocate, which would
        // count as the next row's peak.
        let targets: Vec<&Server> = servers.iter().collect();
        let slow = self.slow_pull_row("S3: ", &targets, column, &path).await?;
        self.rows.push(slow);
        for mut s in servers {
            s.stop().await?;
        }
        minio.stop().await?;
        Ok(())
    }
}

/// Creates the bucket of the S3 rows in the MinIO at `addr`.
async fn create_bucket(addr: std::net::SocketAddr) -> Result<()> {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://{addr}"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            S3_ACCESS_KEY,
            S3_SECRET_KEY,
            None,
            None,
            "berth-bench",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(config)
        .create_bucket()
        .bucket(S3_BUCKET)
        .send()
        .await
        .with_context(|| format!("create bucket {S3_BUCKET} in MinIO"))?;
    Ok(())
}

type SeedFn = for<'a> fn(
    &'a mut Conn,
    Arc<Image>,
    usize,
) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Runs `f(i)` for every `i < n` on 16 connections; fails on any error.
async fn seed(
    addr: std::net::SocketAddr,
    n: usize,
    image: Arc<Image>,
    f: SeedFn,
) -> Result<Sample> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let next = next.clone();
        let image = image.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr).await?;
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(lat);
                }
                let t = Instant::now();
                f(&mut c, image.clone(), i).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut sample = Sample::default();
    for t in tasks {
        sample.lat.extend(t.await??);
    }
    sample.wall = start.elapsed();
    Ok(sample)
}

/// Pushes the image's blobs into `bench/tags`, then tags its manifest
/// `t00000` ... on 16 connections: the tag-list data.
async fn seed_tags(addr: std::net::SocketAddr, n: usize, image: Arc<Image>) -> Result<Sample> {
    let mut c = Conn::connect(addr).await?;
    ops::push_monolithic(&mut c, "bench/tags", &image.config.0, &image.config.1).await?;
    ops::push_monolithic(&mut c, "bench/tags", &image.layer.0, &image.layer.1).await?;
    seed(addr, n, image, |c, img, i| {
        Box::pin(async move {
            ops::put_manifest(c, "bench/tags", &format!("t{i:05}"), &img.manifest).await
        })
    })
    .await
}

/// Creates `bench/cat/r00000` ... (the image mounted from `bench/app`,
/// which must exist) on 16 connections: the catalog data.
async fn seed_repos(addr: std::net::SocketAddr, n: usize, image: Arc<Image>) -> Result<Sample> {
    seed(addr, n, image, |c, img, i| {
        Box::pin(async move {
            let repo = format!("bench/cat/r{i:05}");
            ops::mount(c, &repo, "bench/app", &img.config.0, &img.config.1).await?;
            ops::mount(c, &repo, "bench/app", &img.layer.0, &img.layer.1).await?;
            ops::put_manifest(c, &repo, "latest", &img.manifest).await
        })
    })
    .await
}

/// Reads the whole listing from `first` over and over for `dur`; one
/// latency per whole listing.
async fn list_for(c: &mut Conn, first: &str, field: &str, dur: Duration) -> Sample {
    let mut sample = Sample::default();
    let start = Instant::now();
    let end = start + dur;
    while Instant::now() < end {
        let t = Instant::now();
        match ops::list_all(c, first, field).await {
            Ok(_) => sample.lat.push(t.elapsed()),
            Err(e) => sample.error(&e),
        }
    }
    sample.wall = start.elapsed();
    sample
}

/// `berth-bench seed`: `bench/app:latest`, then `tags` tags and `repos`
/// repositories as `all` seeds them.
pub async fn seed_cmd(addr: std::net::SocketAddr, tags: usize, repos: usize) -> Result<()> {
    let mut c = Conn::connect(addr).await?;
    let image = Arc::new(Image::new(1));
    image.push(&mut c, "bench/app", "latest").await?;
    println!("bench/app:latest = {}", image.digest);
    if tags > 0 {
        let s = seed_tags(addr, tags, image.clone()).await?;
        println!("{tags} tags in bench/tags: {:.0} req/s", s.rps());
    }
    if repos > 0 {
        let s = seed_repos(addr, repos, image).await?;
        println!("{repos} repositories bench/cat/*: {:.0} req/s", s.rps());
    }
    Ok(())
}

/// `berth-bench push`: pushes of one size, one line each.
pub async fn push_cmd(
    addr: std::net::SocketAddr,
    mib: usize,
    reps: usize,
    chunk_mib: Option<usize>,
    pid: Option<u32>,
) -> Result<()> {
    let mut c = Conn::connect(addr).await?;
    let size = mib * MIB;
    for rep in 0..reps {
        let (data, digest) = ops::blob(size, (size as u64) << 8 | rep as u64);
        let meter = pid.map(Meter::start).transpose()?;
        let t = Instant::now();
        match chunk_mib {
            Some(chunk) => {
                ops::push_chunked(&mut c, "bench/blobs", &data, &digest, chunk * MIB).await?
            }
            None => ops::push_monolithic(&mut c, "bench/blobs", &data, &digest).await?,
        }
        let el = t.elapsed();
        let mut sample = Sample::default();
        let cpu = match meter.map(|m| m.finish(&mut sample)).transpose()? {
            Some(_) => format!(
                ", server CPU {:.2} s, peak RSS {:.1} MiB",
                sample.cpu,
                sample.peak_kb as f64 / 1024.0
            ),
            None => String::new(),
        };
        println!(
            "push {mib} MiB #{rep}: {:.0} MB/s ({}){cpu}",
            size as f64 / el.as_secs_f64() / 1e6,
            fmt_dur(el),
        );
    }
    Ok(())
}

/// p50, p99 and errors of `sample`, for a one-line report.
fn latencies_and_errors(sample: &Sample) -> String {
    format!(
        "p50 {}, p99 {}, {} errors{}",
        fmt_dur(sample.pct(50.0)),
        fmt_dur(sample.pct(99.0)),
        sample.errors,
        sample
            .first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})")),
    )
}

/// The server's CPU seconds, RSS and peak RSS over `sample`, as the end of
/// a one-line report (empty without a meter).
fn server_figures(meter: Option<Meter>, sample: &mut Sample) -> Result<String> {
    Ok(match meter.map(|m| m.finish(sample)).transpose()? {
        Some(after) => format!(
            ", server CPU {:.2} s, RSS {:.1} MiB, peak {:.1} MiB",
            sample.cpu,
            after.rss_kb as f64 / 1024.0,
            sample.peak_kb as f64 / 1024.0
        ),
        None => String::new(),
    })
}

/// `berth-bench crowd`: the slow-pulls or slow-pushes row against one
/// server, printed on one line.
pub async fn crowd_cmd(
    addr: std::net::SocketAddr,
    push: bool,
    clients: usize,
    rate: u64,
    duration: f64,
    pid: Option<u32>,
) -> Result<()> {
    let dur = Duration::try_from_secs_f64(duration)
        .map_err(|e| anyhow::anyhow!("--duration {duration}: {e}"))?;
    ensure!(clients > 0, "--clients must be at least 1");
    ensure!(rate > 0, "--rate must be at least 1 byte per second");
    let (data, digest) = ops::blob(
        64 * MIB,
        if push {
            0x510_0000
        } else {
            (64 * MIB as u64) << 8
        },
    );
    if !push {
        let mut c = Conn::connect(addr).await?;
        ops::push_monolithic(&mut c, "bench/blobs", &data, &digest).await?;
    }
    drop(data);
    let meter = pid.map(Meter::start).transpose()?;
    let mut s = if push {
        load::slow_pushes(addr, "bench/slow", 64 * MIB, &digest, clients, rate, dur).await?
    } else {
        let path = format!("/v2/bench/blobs/blobs/{digest}");
        load::slow_pulls(addr, &path, clients, rate, dur).await?
    };
    let server = server_figures(meter, &mut s)?;
    println!(
        "slow {} x{clients}: {:.0} MB/s, {}{server}",
        if push { "pushes" } else { "pulls" },
        s.bytes as f64 / dur.as_secs_f64() / 1e6,
        latencies_and_errors(&s),
    );
    Ok(())
}

/// `berth-bench list`: one listing row, printed on one line.
pub async fn list(
    addr: std::net::SocketAddr,
    path: String,
    field: String,
    duration: f64,
    pid: Option<u32>,
) -> Result<()> {
    let mut c = Conn::connect(addr).await?;
    let (entries, pages) = ops::list_all(&mut c, &path, &field).await?;
    let cpu = || pid.map_or(Ok(0.0), |pid| ProcStats::read(pid).map(|s| s.cpu));
    let before = cpu()?;
    let s = list_for(&mut c, &path, &field, Duration::from_secs_f64(duration)).await;
    let server_cpu = cpu()? - before;
    println!(
        "{path}: {entries} entries in {pages} pages; {:.2} listings/s, p50 {}, p99 {}, {} errors{}",
        s.rps(),
        fmt_dur(s.pct(50.0)),
        fmt_dur(s.pct(99.0)),
        s.errors,
        pid.map_or(String::new(), |_| format!(
            ", server CPU {:.3} s per listing",
            server_cpu / s.lat.len().max(1) as f64
        )),
    );
    Ok(())
}

/// The mixed load: each worker cycles through ten operations, two blob
/// pushes (1 MiB, from a pool of distinct blobs), one manifest PUT to a new
/// tag, four manifest GETs by tag and three 1 MiB blob GETs.
/// The blobs of the mixed load: 256 distinct 1 MiB blobs to push, and the
/// 1 MiB blob the blob-push row left in `bench/blobs` to pull.
#[derive(Debug, Clone)]
struct MixedData {
    pool: Arc<Vec<(Bytes, String)>>,
    pull: (Bytes, String),
}

impl MixedData {
    fn new() -> Self {
        Self {
            pool: Arc::new(
                (0..256)
                    .map(|j| ops::blob(MIB, 1_000_000 + j as u64))
                    .collect(),
            ),
            pull: ops::blob(MIB, (MIB as u64) << 8),
        }
    }
}

/// `berth-bench mixed`: the mixed load against a running server, with
/// what it needs seeded first (`bench/app:latest`, `bench/mixed:base`, the
/// blob to pull); prints the rate and the server's peak RSS.
pub async fn mixed_cmd(
    addr: std::net::SocketAddr,
    pid: Option<u32>,
    c: usize,
    duration: f64,
) -> Result<()> {
    let data = MixedData::new();
    let image = Image::new(1);
    let mut conn = Conn::connect(addr).await?;
    image.push(&mut conn, "bench/app", "latest").await?;
    image.push(&mut conn, "bench/mixed", "base").await?;
    ops::push_monolithic(&mut conn, "bench/blobs", &data.pull.0, &data.pull.1).await?;
    let meter = pid.map(Meter::start).transpose()?;
    let mut s = mixed(addr, c, Duration::from_secs_f64(duration), &data, image).await?;
    let server = server_figures(meter, &mut s)?;
    println!(
        "mixed c={c}: {:.0} req/s, {}{server}",
        s.rps(),
        latencies_and_errors(&s),
    );
    Ok(())
}

async fn mixed(
    addr: std::net::SocketAddr,
    c: usize,
    dur: Duration,
    data: &MixedData,
    image: Image,
) -> Result<Sample> {
    let pull = data.pull.1.clone();
    let pool = data.pool.clone();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let end = start + dur;
    let mut tasks = Vec::new();
    for w in 0..c {
        let (pool, image, pull, next) = (pool.clone(), image.clone(), pull.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = Sample::default();
            let mut conn = Conn::connect(addr).await?;
            let mut k = 0usize;
            while Instant::now() < end {
                let op = (w * 3 + k) % 10;
                let t = Instant::now();
                let (r, bytes) = match op {
                    0 | 1 => {
                        let (data, digest) =
                            &pool[next.fetch_add(1, Ordering::Relaxed) % pool.len()];
                        (
                            ops::push_monolithic(&mut conn, "bench/mixed", data, digest).await,
                            MIB,
                        )
                    }
                    2 => (
                        ops::put_manifest(
                            &mut conn,
                            "bench/mixed",
                            &format!("m{w}-{k}"),
                            &image.manifest,
                        )
                        .await,
                        image.manifest.len(),
                    ),
                    3..=6 => {
                        let r = conn
                            .call_discard(
                                Method::GET,
                                "/v2/bench/app/manifests/latest",
                                &[("accept", ACCEPT)],
                            )
                            .await;
                        match r {
                            Ok((st, n)) if st.is_success() => (Ok(()), n as usize),
                            Ok((st, _)) => (Err(anyhow::anyhow!("manifest GET: {st}")), 0),
                            Err(e) => (Err(e), 0),
                        }
                    }
                    _ => (
                        ops::pull_blob(&mut conn, &format!("/v2/bench/blobs/blobs/{pull}"), MIB)
                            .await,
                        MIB,
                    ),
                };
                match r {
                    Ok(()) => {
                        s.lat.push(t.elapsed());
                        s.bytes += bytes as u64;
                    }
                    Err(e) => s.error(&e),
                }
                k += 1;
            }
            anyhow::Ok(s)
        }));
    }
    let mut total = Sample::default();
    for t in tasks {
        total.add(t.await??);
    }
    total.wall = start.elapsed();
    Ok(total)
}

/// Writes `mib` MiB in 1 MiB writes to a file under `dir`, then
/// fdatasync: the rate (MB/s) at which this filesystem makes bytes durable,
/// the bound of any push that syncs before it answers.
fn disk_sync_rate(dir: &std::path::Path, mib: usize) -> Result<f64> {
    use std::io::Write as _;
    let path = dir.join("disk-sync-probe");
    let (chunk, _) = ops::blob(MIB, 42);
    let start = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    for _ in 0..mib {
        file.write_all(&chunk)?;
    }
    file.sync_data()?;
    let rate = (mib * MIB) as f64 / 1e6 / start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// `openssl speed -evp sha256 -bytes 16384`: MB/s (10^6 bytes) on one core.
fn openssl_sha256() -> Result<f64> {
    let out = Command::new("openssl")
        .args([
            "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "3",
        ])
        .output()
        .context("run openssl speed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_openssl(&text).with_context(|| format!("parse openssl speed output:\n{text}"))
}

fn parse_openssl(text: &str) -> Result<f64> {
    let header: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("type"))
        .context("no header")?
        .split_whitespace()
        .collect();
    // "type 16 bytes 64 bytes ...": column j is the number at 1 + 2j.
    let cols = (header.len() - 1) / 2;
    let col = (0..cols)
        .find(|j| header.get(1 + 2 * j) == Some(&"16384"))
        .context("no 16384-byte column")?;
    let line: Vec<&str> = text
        .lines()
        .rev()
        .find(|l| l.to_ascii_lowercase().starts_with("sha256") || l.starts_with("SHA2-256"))
        .context("no sha256 line")?
        .split_whitespace()
        .collect();
    let v = line
        .get(line.len() - cols + col)
        .context("short sha256 line")?
        .trim_end_matches('k')
        .parse::<f64>()?;
    Ok(v * 1000.0 / 1e6)
}

/// The machine and tool versions, for the report's header.
#[derive(Debug)]
struct Machine {
    date: String,
    cpu: String,
    nproc: usize,
    mem_gib: f64,
    /// Whether a virtio balloon hands freed guest memory back to the host
    /// (free page reporting): then new page-cache pages may cost a host
    /// page fault each, and rows that write to disk swing between runs.
    free_page_reporting: bool,
    load_start: String,
    versions: Vec<(String, String)>,
}

fn cmd_out(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if s.is_empty() {
                String::from_utf8_lossy(&o.stderr).trim().to_string()
            } else {
                s
            }
        })
        .unwrap_or_else(|e| format!("({e})"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let sha_ni = cpuinfo.contains(" sha_ni");
        let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(0.0);
        let first_line = |s: String| s.lines().next().unwrap_or_default().to_string();
        Self {
            date: cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            cpu: format!("{cpu}{}", if sha_ni { " (sha_ni)" } else { "" }),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            mem_gib: mem_kb / 1024.0 / 1024.0,
            free_page_reporting: free_page_reporting(),
            load_start: loadavg(),
            versions: vec![
                (
                    "Berth".into(),
                    cmd_out("git", &["rev-parse", "--short", "HEAD"]),
                ),
                (
                    "distribution".into(),
                    first_line(cmd_out("docker-registry", &["--version"])),
                ),
                ("zot".into(), cmd_out("sh", &["-c", "command -v zot"])),
                ("nginx".into(), cmd_out("nginx", &["-v"])),
                ("openssl".into(), cmd_out("openssl", &["version"])),
                ("kernel".into(), cmd_out("uname", &["-sr"])),
            ],
        }
    }
}

/// Feature bit 5 (`VIRTIO_BALLOON_F_REPORTING`) of any virtio balloon the
/// kernel drives: the string in sysfs has one character per bit, bit 0 first.
fn free_page_reporting() -> bool {
    let Ok(devices) = std::fs::read_dir("/sys/bus/virtio/drivers/virtio_balloon") else {
        return false;
    };
    devices.flatten().any(|d| {
        std::fs::read_to_string(d.path().join("features")).is_ok_and(|f| reporting_bit_set(&f))
    })
}

fn reporting_bit_set(features: &str) -> bool {
    features.as_bytes().get(5) == Some(&b'1')
}

/// Berth's latency, CPU per operation and peak RSS as ratios to each
/// peer, row by row (the throughput table has the rate ratios).
fn ratios_table(rows: &[Row], o: &mut String) {
    let _ = writeln!(
        o,
        "\n### Ratios per operation (Berth ÷ peer; lower is better; CPU per operation = server CPU ÷ operations; peak RSS = the server's VmHWM during the row, reset before each measured part)\n"
    );
    let _ = writeln!(
        o,
        "| workload | p50 ÷ d / ÷ z | p99 ÷ d / ÷ z | CPU per op ÷ d / ÷ z | peak RSS B / d / z | peak RSS ÷ d / ÷ z |"
    );
    let _ = writeln!(o, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let berth = r.get(Kind::Berth).and_then(per_op);
        let pair = |i: usize| {
            [Kind::Distribution, Kind::Zot]
                .iter()
                .map(|k| {
                    let peer = r.get(*k).and_then(per_op);
                    fmt_ratio(berth.map(|b| b[i]), peer.map(|p| p[i]))
                })
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let peak = |k: Kind| {
            r.get(k)
                .map(|s| s.peak_kb)
                .filter(|kb| *kb > 0)
                .map(|kb| kb as f64 / 1024.0)
        };
        let peaks = PEERS
            .iter()
            .map(|k| peak(*k).map_or("–".into(), |v| format!("{v:.1}")))
            .collect::<Vec<_>>()
            .join(" / ");
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {peaks} MiB | {} / {} |",
            r.name,
            pair(0),
            pair(1),
            pair(2),
            fmt_ratio(peak(Kind::Berth), peak(Kind::Distribution)),
            fmt_ratio(peak(Kind::Berth), peak(Kind::Zot)),
        );
    }
}

/// What a sample says per operation, for the ratio table.
fn per_op(s: &Sample) -> Option<[f64; 3]> {
    if s.lat.is_empty() {
        return None;
    }
    Some([
        s.pct(50.0).as_secs_f64(),
        s.pct(99.0).as_secs_f64(),
        s.cpu / s.lat.len() as f64,
    ])
}

fn fmt_rate(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    }
}

fn fmt_dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn mb(kb: Option<&u64>) -> Option<f64> {
    kb.map(|k| *k as f64 / 1024.0)
}

fn median(v: &[Duration]) -> Option<Duration> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

impl Bench {
    fn report(&self, m: &Machine, sha: f64) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "## Run of {}\n", m.date);
        let _ = writeln!(
            o,
            "- Machine: {} cores, {:.1} GiB, {}\n- Load average (1/5/15 min) at start: {}; at end: {}\n- Total run time: {:.0} s",
            m.nproc,
            m.mem_gib,
            m.cpu,
            m.load_start,
            loadavg(),
            self.t0.elapsed().as_secs_f64()
        );
        if m.free_page_reporting {
            let _ = writeln!(
                o,
                "- Memory: this VM hands freed memory back to its host (virtio-balloon free page reporting); \
                 page cache that grows into such memory costs a host page fault per 4 KiB page \
                 (up to about 3 s of the writer's CPU per GiB), so rows that write new data to disk \
                 swing between runs and between repetitions (BENCHMARKS.md, \"Memory on this machine\")"
            );
        }
        for (k, v) in &m.versions {
            let _ = writeln!(o, "- {k}: {v}");
        }
        let _ = writeln!(
            o,
            "- Options: duration {} s, warm-up {} s, mixed {} s, {} tags, {} repositories, 1 GiB push reps {}",
            self.opts.duration,
            self.opts.warmup,
            self.opts.mixed_duration,
            self.opts.tags,
            self.opts.repos,
            self.opts.gib_reps
        );
        let _ = writeln!(
            o,
            "- SHA-256 limit (openssl, 16384-byte blocks, one core): {sha:.0} MB/s\n\
             - Durable write limit of the stores' filesystem (1 MiB writes, then fdatasync): {:.0} MB/s; \
             Berth fsyncs every object before answering, distribution and zot do not\n",
            self.disk
        );

        let _ = writeln!(
            o,
            "### Throughput (MB/s = 10^6 bytes/s; higher is better)\n"
        );
        let _ = writeln!(
            o,
            "| workload | unit | Berth | distribution | zot | limit | Berth ÷ distribution | Berth ÷ zot | Berth ÷ limit |"
        );
        let _ = writeln!(
            o,
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for r in &self.rows {
            let b = r.value(Kind::Berth);
            let limit = r.limit();
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                if r.unit == Unit::MBps {
                    "MB/s"
                } else {
                    "req/s"
                },
                fmt_rate(b),
                fmt_rate(r.value(Kind::Distribution)),
                fmt_rate(r.value(Kind::Zot)),
                limit.as_ref().map_or("–".into(), |(l, v)| format!(
                    "{} ({l})",
                    fmt_rate(Some(*v))
                )),
                fmt_ratio(b, r.value(Kind::Distribution)),
                fmt_ratio(b, r.value(Kind::Zot)),
                fmt_ratio(b, limit.map(|l| l.1)),
            );
        }

        let _ = writeln!(
            o,
            "\n### Latency and server CPU (p50 / p99 per operation; CPU = server utime+stime during the measured part)\n"
        );
        let _ = writeln!(
            o,
            "| workload | Berth p50 / p99 | distribution p50 / p99 | zot p50 / p99 | limit p50 / p99 | ops B / d / z | CPU s B / d / z | errors B / d / z |"
        );
        let _ = writeln!(
            o,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for r in &self.rows {
            let lat = |k: Kind| {
                r.get(k)
                    .filter(|s| !s.lat.is_empty())
                    .map_or("–".into(), |s| {
                        format!("{} / {}", fmt_dur(s.pct(50.0)), fmt_dur(s.pct(99.0)))
                    })
            };
            let limit = [Kind::Nginx, Kind::Bare]
                .into_iter()
                .find(|k| r.get(*k).is_some())
                .map_or("–".into(), lat);
            let three = |f: &dyn Fn(&Sample) -> String| {
                PEERS
                    .iter()
                    .map(|k| r.get(*k).map_or("–".into(), f))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                lat(Kind::Berth),
                lat(Kind::Distribution),
                lat(Kind::Zot),
                limit,
                three(&|s| s.lat.len().to_string()),
                three(&|s| format!("{:.2}", s.cpu)),
                three(&|s| s.errors.to_string()),
            );
        }

        ratios_table(&self.rows, &mut o);

        let res = &self.res;
        let _ = writeln!(o, "\n### Memory and start-up (lower is better)\n");
        let _ = writeln!(
            o,
            "| measure | Berth | distribution | zot | Berth ÷ distribution | Berth ÷ zot |"
        );
        let _ = writeln!(o, "| --- | ---: | ---: | ---: | ---: | ---: |");
        let mut line = |name: &str, f: &dyn Fn(Kind) -> Option<f64>, unit: &str| {
            let v: Vec<Option<f64>> = PEERS.iter().map(|k| f(*k)).collect();
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} |",
                v[0].map_or("–".into(), |x| format!("{} {unit}", fmt_rate(Some(x)))),
                v[1].map_or("–".into(), |x| format!("{} {unit}", fmt_rate(Some(x)))),
                v[2].map_or("–".into(), |x| format!("{} {unit}", fmt_rate(Some(x)))),
                fmt_ratio(v[0], v[1]),
                fmt_ratio(v[0], v[2]),
            );
        };
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        line(
            "start-up to ready, empty store",
            &|k| ms(res.startup_empty.get(&k).copied()),
            "ms",
        );
        line(
            &format!(
                "start-up to ready, {} repositories (median of 3)",
                self.opts.repos + 4
            ),
            &|k| ms(res.startup_full.get(&k).and_then(|v| median(v))),
            "ms",
        );
        line(
            "RSS idle, fresh empty store",
            &|k| mb(res.idle_fresh_kb.get(&k)),
            "MiB",
        );
        line(
            "RSS idle after restart on the full store",
            &|k| mb(res.idle_full_kb.get(&k)),
            "MiB",
        );
        line(
            "peak RSS (VmHWM) under the mixed load",
            &|k| mb(res.peak_mixed_kb.get(&k)),
            "MiB",
        );
        line(
            "peak RSS (VmHWM) over the run before the restarts (incl. 1 GiB pushes)",
            &|k| mb(res.peak_run_kb.get(&k)),
            "MiB",
        );
        line(
            "CPU seconds over the run before the restarts",
            &|k| res.cpu_run.get(&k).copied(),
            "s",
        );
        line(
            "seeding time (tags + repositories)",
            &|k| res.seed_secs.get(&k).copied(),
            "s",
        );

        let _ = writeln!(o, "\n### Against the issue's targets\n");
        for t in self.targets_check(sha) {
            let _ = writeln!(o, "- {t}");
        }
        if !self.notes.is_empty() {
            let _ = writeln!(o, "\n### Notes\n");
            for n in &self.notes {
                let _ = writeln!(o, "- {n}");
            }
            for r in &self.rows {
                for (k, s) in &r.cells {
                    if let Some(e) = &s.first_error {
                        let _ = writeln!(o, "- {} on {k}: {} errors, first: {e}", r.name, s.errors);
                    }
                }
            }
        }
        o
    }

    fn targets_check(&self, sha: f64) -> Vec<String> {
        let mark = |ok: bool| if ok { "**met**" } else { "**missed**" };
        let mut out = Vec::new();
        if let Some(r) = self
            .rows
            .iter()
            .rev()
            .find(|r| r.name.starts_with("blob push"))
            && let Some(b) = r.value(Kind::Berth)
        {
            out.push(format!(
                "{}: {b:.0} MB/s = {:.0}% of SHA-256 ({sha:.0} MB/s), target ≥ 70%: {}; \
                 {:.0}% of the durable write limit ({:.0} MB/s)",
                r.name,
                100.0 * b / sha,
                mark(b >= 0.7 * sha),
                100.0 * b / self.disk.max(1e-9),
                self.disk
            ));
        }
        for r in self.rows.iter().filter(|r| r.name.starts_with("blob pull")) {
            let (Some(b), Some(n)) = (r.value(Kind::Berth), r.value(Kind::Nginx)) else {
                continue;
            };
            let peer = r
                .value(Kind::Distribution)
                .unwrap_or(0.0)
                .max(r.value(Kind::Zot).unwrap_or(0.0));
            let judged = if r.name.ends_with(FIRST_PULL) {
                "not a target row (the steady row is): shows what the page cache held after each server's push".to_string()
            } else {
                format!(
                    "targets ≥ 1× and ≥ 85%: {} / {}",
                    mark(b >= peer),
                    mark(b >= 0.85 * n)
                )
            };
            out.push(format!(
                "{}: {b:.0} MB/s = {:.2}× the faster peer ({peer:.0}) and {:.0}% of nginx ({n:.0}); {judged}",
                r.name,
                b / peer.max(1e-9),
                100.0 * b / n,
            ));
        }
        for r in self.rows.iter().filter(|r| r.name.ends_with("c=64")) {
            let Some(b) = r.get(Kind::Berth) else {
                continue;
            };
            let Some((pk, p)) = [Kind::Distribution, Kind::Zot]
                .into_iter()
                .filter_map(|k| r.get(k).filter(|s| !s.lat.is_empty()).map(|s| (k, s)))
                .max_by(|a, b| a.1.rps().total_cmp(&b.1.rps()))
            else {
                continue;
            };
            let (bp99, pp99) = (b.pct(99.0), p.pct(99.0));
            out.push(format!(
                "{}: {:.1}× {pk} ({:.0} vs {:.0} req/s), p99 {} vs {} = 1/{:.1}; targets ≥ 5× and ≤ 1/5: {} / {}",
                r.name,
                b.rps() / p.rps(),
                b.rps(),
                p.rps(),
                fmt_dur(bp99),
                fmt_dur(pp99),
                pp99.as_secs_f64() / bp99.as_secs_f64().max(1e-9),
                mark(b.rps() >= 5.0 * p.rps()),
                mark(bp99.as_secs_f64() * 5.0 <= pp99.as_secs_f64())
            ));
        }
        for (name, map) in [
            ("RSS idle (fresh)", &self.res.idle_fresh_kb),
            ("RSS idle (full store)", &self.res.idle_full_kb),
            ("peak RSS under the mixed load", &self.res.peak_mixed_kb),
        ] {
            let lean = [Kind::Distribution, Kind::Zot]
                .iter()
                .filter_map(|k| map.get(k).copied())
                .min();
            out.push(rss_verdict(name, map.get(&Kind::Berth).copied(), lean));
        }
        if let Some(d) = self
            .res
            .startup_full
            .get(&Kind::Berth)
            .and_then(|v| median(v))
        {
            out.push(format!(
                "start-up to ready with {} repositories: {}; target < 100 ms: {}",
                self.opts.repos + 4,
                fmt_dur(d),
                mark(d < Duration::from_millis(100))
            ));
        }
        out
    }
}

/// The RSS target's line: Berth's figure at most half the leaner peer's.
/// A figure this run did not take (`--s3-only`) gives no verdict, where 0
/// against 0 once read as "met".
fn rss_verdict(name: &str, berth_kb: Option<u64>, lean_kb: Option<u64>) -> String {
    let (Some(b), Some(lean)) = (berth_kb, lean_kb) else {
        return format!("{name}: not measured in this run");
    };
    let verdict = if b * 2 <= lean {
        "**met**"
    } else {
        "**missed**"
    };
    format!(
        "{name}: Berth {:.1} MiB vs leaner peer {:.1} MiB = {:.2}; target ≤ 0.5: {verdict}",
        b as f64 / 1024.0,
        lean as f64 / 1024.0,
        b as f64 / (lean as f64).max(1.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    #[test]
    fn rss_targets_need_both_figures() {
        assert_eq!(
            rss_verdict("RSS idle", None, Some(1024)),
            "RSS idle: not measured in this run"
        );
        assert_eq!(
            rss_verdict("RSS idle", Some(512), None),
            "RSS idle: not measured in this run"
        );
        assert!(rss_verdict("RSS idle", Some(512), Some(1024)).ends_with("**met**"));
        assert!(rss_verdict("RSS idle", Some(513), Some(1024)).ends_with("**missed**"));
    }

    #[test]
    fn ratios_per_operation_against_each_peer() {
        let ms = Duration::from_millis;
        let mut row = Row::new("w", Unit::Rps);
        let sample = |lat: Vec<Duration>, cpu: f64, peak_mib: u64| Sample {
            lat,
            cpu,
            peak_kb: peak_mib * 1024,
            ..Sample::default()
        };
        row.add(Kind::Berth, sample(vec![ms(1), ms(2)], 0.002, 10));
        row.add(Kind::Distribution, sample(vec![ms(2), ms(4)], 0.008, 40));
        let mut o = String::new();
        ratios_table(&[row], &mut o);
        let line = o.lines().last().unwrap_or_default();
        assert_eq!(
            line,
            "| w | 0.50 / – | 0.50 / – | 0.25 / – | 10.0 / 40.0 / – MiB | 0.25 / – |"
        );
    }

    #[test]
    fn reads_the_free_page_reporting_bit() {
        // This machine's balloon: stats queue, deflate on OOM, reporting.
        assert!(reporting_bit_set("0110010100000000\n"));
        assert!(!reporting_bit_set("0110000100000000\n"));
        assert!(!reporting_bit_set("0110"));
    }

    #[test]
    fn parses_openssl_speed() -> Result<()> {
        let text = "version: 3.0.17\nbuilt on: x\noptions: bn(64,64)\n\
            The 'numbers' are in 1000s of bytes per second processed.\n\
            type          16384 bytes\nsha256         1834567.89k\n";
        let v = parse_openssl(text)?;
        if (v - 1834.56789).abs() > 1e-3 {
            bail!("got {v}");
        }
        let full = "type             16 bytes     64 bytes    256 bytes   1024 bytes   8192 bytes  16384 bytes\n\
            sha256          105000.00k   370000.00k   900000.00k  1500000.00k  1800000.00k  1810000.00k\n";
        let v = parse_openssl(full)?;
        if (v - 1810.0).abs() > 1e-6 {
            bail!("got {v}");
        }
        Ok(())
    }
}
