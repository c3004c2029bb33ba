//! `berth-operator`: parse flags, start logging and the HTTP endpoints,
//! wait for the leader Lease, then run the controllers until SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use berth_operator::error::Error;
use berth_operator::leader::{LeaderElector, Timings};
use berth_operator::metrics::Metrics;
use berth_operator::reconcile::{self, Context};
use clap::Parser;
use humantime_serde::re::humantime::parse_duration;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The Berth operator: reconciles Registry and SyncPolicy resources.
/// Kubernetes access comes from KUBECONFIG or the in-cluster config.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "BERTH_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: String,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "BERTH_OPERATOR_LEASE_NAME",
        default_value = "berth-operator"
    )]
    lease_name: String,
    /// How long the leader Lease stays valid without renewal: a standby
    /// takes over this long after the leader stopped renewing.
    #[arg(long, env = "BERTH_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// The leader stops when it could not renew for this long; shorter than
    /// the lease duration, so it stops before a standby can take over.
    #[arg(long, env = "BERTH_OPERATOR_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    renew_deadline: Duration,
    /// Pause between attempts to acquire or renew the Lease; shorter than
    /// the renew deadline.
    #[arg(long, env = "BERTH_OPERATOR_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    retry_period: Duration,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// `text` or `json` logs.
    #[arg(long, env = "BERTH_OPERATOR_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    init_logging(&args.log_format);
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let timings = Timings {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
    }
    .checked()?;
    let metrics = Metrics::new()?;
    let client = Client::try_default().await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signal_stop(stop_tx));

    let listener = TcpListener::bind(&args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    let http = tokio::spawn(berth_operator::http::serve(
        listener,
        metrics.clone(),
        stopped(stop_rx.clone()),
    ));

    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
    let mut elector = LeaderElector::new(leases, &args.lease_name, &identity, timings);
    tokio::select! {
        acquired = elector.acquire() => acquired?,
        () = stopped(stop_rx.clone()) => return Ok(()),
    }
    metrics.leader.set(1);

    let ctx = Arc::new(Context::new(client, metrics.clone(), &identity));
    let result = tokio::select! {
        () = reconcile::run(ctx, stopped(stop_rx.clone())) => Ok(()),
        lost = elector.keep() => Err(lost),
    };
    if let Err(err) = &result {
        tracing::error!(%err, "stopping");
    }
    if matches!(result, Err(Error::LeaseLost)) {
        // Exit at once: the controllers are gone, and a process that kept
        // answering /healthz would never be restarted to stand by again.
        metrics.leader.set(0);
        return Err(Error::LeaseLost.into());
    }
    elector.release().await?;
    let _ = http.await;
    Ok(result?)
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn default_identity() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| format!("berth-operator-{}", std::process::id()))
}

async fn signal_stop(tx: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        } else {
            let _ = ctrl_c.await;
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    let _ = tx.send(true);
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
