//! `causeway-node-agent`: programs this node's dataplane from its NodeSubnet and its peers',
//! writes the CNI config, and reports status. Runs as a DaemonSet with host networking, or in
//! the test cluster inside a node's network namespace.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use causeway_node_agent::agent::{self, Config};
use clap::Parser;
use tracing::error;

#[derive(Parser, Debug)]
#[command(about = "Causeway node agent: programs this node's pod networking")]
struct Args {
    /// This node's name (the Node object; `spec.nodeName` in a DaemonSet).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Directory the container runtime reads CNI network configs from.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// host-local IPAM's allocation store (default: the plugin's /var/lib/cni/networks).
    #[arg(long)]
    cni_data_dir: Option<PathBuf>,
    /// Seconds between full passes that repair anything changed behind the agent's back.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// Print the operations one pass would apply, change nothing, and exit.
    #[arg(long)]
    dry_run: bool,
    /// Namespace of this agent's heartbeat Lease (the DaemonSet's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "causeway-system")]
    namespace: String,
    /// Seconds the heartbeat Lease is valid; renewed every quarter of it. The operator reports
    /// the node's network not Ready (AgentNotReporting) once it lapses.
    #[arg(long, default_value_t = causeway_kube::heartbeat::DEFAULT_DURATION_SECONDS)]
    lease_duration_seconds: u32,
    /// Least seconds between status writes that only refresh the route, neighbour and FDB
    /// counts (they change with every peer joining; conditions are written at once).
    #[arg(long, default_value_t = 30)]
    status_refresh_seconds: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.resync_seconds == 0 {
        error!("--resync-seconds must be at least 1");
        return ExitCode::from(2);
    }
    if args.lease_duration_seconds < 2 {
        error!(
            "--lease-duration-seconds must be at least 2 (the Lease is renewed every quarter of it)"
        );
        return ExitCode::from(2);
    }
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            error!("connecting to the API server (is KUBECONFIG set, or are we in a pod?): {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config {
        node_name: args.node_name,
        cni_conf_dir: args.cni_conf_dir,
        cni_data_dir: args.cni_data_dir,
        resync: Duration::from_secs(args.resync_seconds),
        dry_run: args.dry_run,
        namespace: args.namespace,
        lease_duration: Duration::from_secs(u64::from(args.lease_duration_seconds)),
        status_refresh: Duration::from_secs(args.status_refresh_seconds),
    };
    // On SIGINT or SIGTERM the agent stops without touching the dataplane, so an upgrade or a
    // restart never interrupts traffic.
    match agent::run(client, config, causeway_kube::signal::shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
