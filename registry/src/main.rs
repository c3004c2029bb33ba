//! `berth-registry`: parse configuration, start logging, build the state,
//! serve until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_registry::config::{self, LogFormat, Overrides};
use berth_registry::{server, telemetry};
use clap::Parser;

/// An OCI registry. With no options it serves ./berth-data on
/// 127.0.0.1:5000. Every configuration field can also be set in a YAML file
/// (--config) or by environment: BERTH_<FIELD>, nested levels joined by
/// "__", e.g. BERTH_STORAGE__ROOT=/data or BERTH_LIMITS__MANIFEST_MAX_BYTES=8388608.
/// Precedence: flags, then environment, then file, then defaults.
#[derive(Debug, Parser)]
#[command(name = "berth-registry", version, about, long_about = None)]
struct Cli {
    /// YAML configuration file (see the README for every field).
    #[arg(long, short = 'c', env = "BERTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:5000 [default: 127.0.0.1:5000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Serve content from this directory (filesystem storage) [default: ./berth-data].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter such as info or berth_registry=debug [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let flags = Overrides {
        listen: cli.listen,
        root: cli.root,
        log_format: cli.log_format,
        log_level: cli.log_level,
    };
    let config = match config::load(cli.config.as_deref(), std::env::vars(), &flags) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("berth-registry: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        return match config.to_redacted_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("berth-registry: {err}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(err) = telemetry::init(&config.log) {
        eprintln!("berth-registry: {err}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("berth-registry: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "berth-registry stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: config::Config) -> Result<(), server::StartError> {
    let state = server::build_state(&config).await?;
    let listener = server::bind(&config).await?;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| config.listen.clone());
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, scheme, storage = ?config.storage, auth = config.auth.is_some(), "berth-registry listening");
    if config.gc.enabled {
        tracing::warn!(
            "gc.enabled is set, but this version does not collect garbage yet: nothing is deleted"
        );
    }
    server::serve_config(&config, listener, state, shutdown_signal()).await?;
    tracing::info!("berth-registry stopped");
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
