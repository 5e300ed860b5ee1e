//! `causeway-operator`: parse flags, set up logging, metrics and leader election, then run
//! the PodNetwork controller while this replica leads.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use causeway_operator::controller::{self, Options};
use causeway_operator::leader::{self, Election};
use causeway_operator::metrics::{self, Metrics};
use clap::Parser;
use tracing::{error, info, warn};

/// `CAUSEWAY_VERSION` at compile time when set, else the crate's version. Read only in the
/// binary, so a new value recompiles just the binary (docs/images.md).
const VERSION: &str = match option_env!("CAUSEWAY_VERSION") {
    Some(v) if !v.is_empty() => v,
    _ => env!("CARGO_PKG_VERSION"),
};

#[derive(Parser, Debug)]
#[command(
    version = VERSION,
    about = "Causeway operator: allocates node subnets and reports PodNetwork status")]
struct Args {
    /// This replica's identity in leader election (the pod name in a Deployment).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Namespace of the leader election Lease and of the agents' heartbeat Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "causeway-system")]
    namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "causeway-operator")]
    lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal: the failover time after a crash.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Seconds before expiry at which the leader renews its Lease.
    #[arg(long, default_value_t = 5)]
    lease_renew_grace: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Use each Node's spec.podCIDR (allocated by kube-controller-manager) as its subnet
    /// instead of allocating one.
    #[arg(long)]
    use_node_pod_cidr: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube_lease_manager=warn".into()),
        )
        .init();
    info!(version = VERSION, "causeway-operator starting");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.lease_duration > 0 && args.lease_renew_grace < args.lease_duration,
        "--lease-renew-grace ({}s) must be shorter than --lease-duration ({}s): the leader \
         renews its Lease that long before it expires",
        args.lease_renew_grace,
        args.lease_duration
    );
    let identity = match args.identity {
        Some(id) => id,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| format!("{}-{}", h.trim(), std::process::id()))
            .unwrap_or_else(|_| format!("operator-{}", std::process::id())),
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server (is KUBECONFIG set, or are we in a pod?)")?;
    let metrics = Arc::new(Metrics::new());
    let addr = args.metrics_addr;
    let server = metrics::bind(addr, metrics.clone())
        .await
        .with_context(|| format!("serving metrics and health on {addr} (--metrics-addr)"))?;
    tokio::spawn(async move {
        if let Err(e) = server.await {
            error!(%addr, error = %e, "metrics endpoint failed");
        }
    });

    let election = Election {
        lease_name: args.lease_name,
        namespace: args.namespace.clone(),
        identity: identity.clone(),
        duration: Duration::from_secs(args.lease_duration),
        grace: Duration::from_secs(args.lease_renew_grace),
    };
    let mut running = leader::elect(client.clone(), &election)
        .await
        .with_context(|| {
            format!(
                "joining leader election on Lease {}/{}",
                election.namespace, election.lease_name
            )
        })?;
    metrics.set_ready(true);
    info!(%identity, "waiting to become the leader");
    loop {
        if *running.leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = running.leading.changed() => changed.context("leader election stopped")?,
            _ = causeway_kube::signal::shutdown() => {
                info!("interrupted while standing by");
                running.release().await;
                return Ok(());
            }
        }
    }
    info!(%identity, "became the leader");
    metrics.set_leader(true);

    let mut leading = running.leading.clone();
    // Why the controller stopped: "" while running, then "lost" or "signal".
    let (why_tx, why_rx) = tokio::sync::watch::channel("");
    tokio::spawn(async move {
        let why = tokio::select! {
            _ = async {
                while leading.changed().await.is_ok() {
                    if !*leading.borrow() {
                        return;
                    }
                }
            } => "lost",
            _ = causeway_kube::signal::shutdown() => "signal",
        };
        let _ = why_tx.send(why);
    });
    let mut stopped = why_rx.clone();
    let shutdown = async move {
        let _ = stopped.wait_for(|why| !why.is_empty()).await;
    };
    controller::run(
        client,
        Options {
            use_node_pod_cidr: args.use_node_pod_cidr,
            agent_namespace: args.namespace.clone(),
        },
        metrics.clone(),
        identity,
        shutdown,
    )
    .await;
    metrics.set_leader(false);
    let why = *why_rx.borrow();
    if why == "signal" {
        info!("shutting down");
        running.release().await;
        Ok(())
    } else {
        warn!("lost the leader Lease");
        anyhow::bail!("lost the leader Lease; exiting so that a fresh process rejoins the election")
    }
}
