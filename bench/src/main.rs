//! `berth-bench`: side-by-side load benchmarks of Berth, distribution and
//! zot, with the machine's limits measured in the same run (see
//! BENCHMARKS.md).
//!
//! - `berth-bench all`: start every server, run every workload, print the
//!   Markdown report (and write it to `--out`).
//! - `berth-bench bare --listen ADDR`: the bare axum handler (a limit); the
//!   runner starts it as its own process.

mod bare;
mod client;
mod hot;
mod load;
mod ops;
mod run;
mod servers;

use std::net::SocketAddr;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "berth-bench", about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run every workload against Berth, distribution and zot, and the limits.
    All(run::Opts),
    /// One fixed-duration load against a running server (for profiling):
    /// `c` keep-alive connections repeat one request.
    Load {
        /// Server address, e.g. 127.0.0.1:5000.
        #[arg(long)]
        addr: SocketAddr,
        /// Request path, e.g. /v2/bench/app/manifests/latest.
        #[arg(long)]
        path: String,
        #[arg(long, default_value = "GET")]
        method: http::Method,
        #[arg(long, short, default_value_t = 64)]
        concurrency: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Milliseconds each worker waits before each request (not
        /// timed), so that requests find the server idle: the serial blob
        /// rows of `all` do. Then only the latencies mean much.
        #[arg(long, default_value_t = 0.0)]
        pause_ms: f64,
        /// The server's pid, to report its CPU seconds.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Push the benchmark image to `bench/app:latest` (for `load`), and
    /// optionally the tag-list and catalog data of `all` (for `list`).
    Seed {
        #[arg(long)]
        addr: SocketAddr,
        /// Also tag the image as `bench/tags:t00000` ... (16 connections).
        #[arg(long, default_value_t = 0)]
        tags: usize,
        /// Also create `bench/cat/r00000` ... (2 mounts + manifest PUT each).
        #[arg(long, default_value_t = 0)]
        repos: usize,
    },
    /// Read a whole paginated listing (tags or catalog) repeatedly for a
    /// fixed time, following `Link` headers: the listing rows of `all`.
    List {
        #[arg(long)]
        addr: SocketAddr,
        /// First page, e.g. /v2/bench/tags/tags/list?n=1000.
        #[arg(long, default_value = "/v2/bench/tags/tags/list?n=1000")]
        path: String,
        /// JSON field holding the entries: tags or repositories.
        #[arg(long, default_value = "tags")]
        field: String,
        /// Seconds.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// The server's pid, to report its CPU seconds.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The mixed push/pull load of `all` against a running server seeded
    /// with `seed` (for profiling memory): resets the server's peak RSS
    /// first and prints it after.
    Mixed {
        #[arg(long)]
        addr: SocketAddr,
        /// The server's pid: CPU seconds and peak RSS (VmHWM, reset first).
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long, short, default_value_t = 16)]
        concurrency: usize,
        /// Seconds.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Blob pushes of one size against a running server, monolithic (POST +
    /// PUT) or chunked, one at a time on one keep-alive connection (for
    /// profiling): MB/s and the server's CPU seconds per push.
    Push {
        #[arg(long)]
        addr: SocketAddr,
        /// Blob size in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: usize,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Push in PATCH requests of this many MiB instead (chunked push).
        #[arg(long)]
        chunk_mib: Option<usize>,
        /// The server's pid, to report its CPU seconds.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// The slow-pulls or slow-pushes row of `all` against a running server
    /// (for profiling memory): `clients` connections at once, each pulling
    /// the 64 MiB blob (pushed first) or pushing one, at `rate` bytes per
    /// second for `duration`; resets the server's peak RSS first and
    /// prints it after.
    Crowd {
        #[arg(long)]
        addr: SocketAddr,
        /// Push instead of pull.
        #[arg(long)]
        push: bool,
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Bytes per second, per client.
        #[arg(long, default_value_t = 2_000_000)]
        rate: u64,
        /// Seconds.
        #[arg(long, default_value_t = 4.0)]
        duration: f64,
        /// The server's pid: CPU seconds and peak RSS (VmHWM, reset first).
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Write the linker script that places the functions Berth runs
    /// together (`registry/hot-functions.ld`): runs each binary under
    /// callgrind (valgrind) through the workloads. `bench/hot-functions.sh`
    /// builds the binaries and calls this.
    HotFunctions {
        /// The berth-registry binaries to run (the release build and the
        /// image build: their symbols differ).
        #[arg(long = "binary", required = true)]
        binaries: Vec<std::path::PathBuf>,
        #[arg(long, default_value_os_t = hot::script_path())]
        out: std::path::PathBuf,
    },
    /// Serve the bare axum handler (started by `all`).
    Bare {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Bare { listen } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(bare::serve(listen)),
        Cmd::Load {
            addr,
            path,
            method,
            concurrency,
            duration,
            pause_ms,
            pid,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run::load(
                addr,
                path,
                method,
                concurrency,
                duration,
                std::time::Duration::try_from_secs_f64(pause_ms / 1000.0)
                    .map_err(|e| anyhow::anyhow!("--pause-ms {pause_ms}: {e}"))?,
                pid,
            )),
        Cmd::Seed { addr, tags, repos } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run::seed_cmd(addr, tags, repos)),
        Cmd::List {
            addr,
            path,
            field,
            duration,
            pid,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run::list(addr, path, field, duration, pid)),
        Cmd::Mixed {
            addr,
            pid,
            concurrency,
            duration,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run::mixed_cmd(addr, pid, concurrency, duration)),
        Cmd::Push {
            addr,
            mib,
            reps,
            chunk_mib,
            pid,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run::push_cmd(addr, mib, reps, chunk_mib, pid)),
        Cmd::Crowd {
            addr,
            push,
            clients,
            rate,
            duration,
            pid,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run::crowd_cmd(addr, push, clients, rate, duration, pid)),
        Cmd::HotFunctions { binaries, out } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(hot::generate(&binaries, &out)),
        // The client gets one thread per core, like the servers.
        Cmd::All(opts) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run::all(opts)),
    }
}
