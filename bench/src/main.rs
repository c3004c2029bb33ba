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
        // The client gets one thread per core, like the servers.
        Cmd::All(opts) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(run::all(opts)),
    }
}
