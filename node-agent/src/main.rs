//! `causeway-node-agent`: programs this node's dataplane from its NodeSubnet and its peers',
//! writes the CNI config, and reports status. Runs as a DaemonSet with host networking, or in
//! the test cluster inside a node's network namespace. `causeway-node-agent client` joins a
//! machine that is not a node to an Overlay network (OverlayGateway strategy ClientJoin).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use causeway_node_agent::agent::{self, Config};
use causeway_node_agent::client::{self, ClientConfig};
use causeway_node_agent::health::{self, Health};
use causeway_node_agent::metrics::Metrics;
use causeway_node_agent::sysctl::{self, SysctlDir};
use clap::{Parser, Subcommand};
use tracing::{error, info};

/// `CAUSEWAY_VERSION` at compile time when set, else the crate's version. Read only in the
/// binary, so a new value recompiles just the binary (docs/images.md).
const VERSION: &str = match option_env!("CAUSEWAY_VERSION") {
    Some(v) if !v.is_empty() => v,
    _ => env!("CARGO_PKG_VERSION"),
};

/// How long the agent waits for its health address while a previous agent still holds it.
const HEALTH_BIND_WAIT: Duration = Duration::from_secs(15);

#[derive(Parser, Debug)]
#[command(
    version = VERSION,
    propagate_version = true,
    about = "Causeway node agent: programs this node's pod networking",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(flatten)]
    log: causeway_kube::logging::LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
    /// This node's name (the Node object; `spec.nodeName` in a DaemonSet). Required unless a
    /// subcommand is given.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
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
    /// Where the node's kernel parameters are: `net/ipv4/...` is read and written below it. In
    /// a container that is not privileged, mount the host's /proc/sys/net at
    /// <DIR>/net (runc refuses mounts inside /proc); the chart uses /host/proc/sys.
    #[arg(long, default_value = sysctl::DEFAULT_DIR)]
    sysctl_dir: PathBuf,
    /// Address of /healthz (liveness), /readyz (readiness) and /metrics; empty to serve none.
    #[arg(long, default_value = health::DEFAULT_ADDR, value_parser = causeway_kube::cli::optional_addr)]
    health_addr: causeway_kube::cli::MaybeAddr,
    /// A second address serving the same routes, for Prometheus (e.g. the node's address and
    /// a port of its own); empty for none. Unauthenticated: choose what may reach it.
    #[arg(long, default_value = "", value_parser = causeway_kube::cli::optional_addr)]
    metrics_addr: causeway_kube::cli::MaybeAddr,
    /// The BIRD 2 program that speaks BGP for Routed networks with `routed.bgp` (found on PATH
    /// when it has no slash).
    #[arg(long, default_value = "bird")]
    bird: PathBuf,
    /// BIRD's runtime directory: its configuration, control socket (`birdc -s DIR/bird.ctl`)
    /// and pid file. One per node; keep it across agent restarts (graceful restart).
    #[arg(long, default_value = causeway_node_agent::bird::DEFAULT_DIR)]
    bird_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Join this machine (not a node) to an Overlay network as a client of an OverlayGateway
    /// with strategy ClientJoin. Never run it on a node: it owns the same devices.
    Client(ClientArgs),
}

#[derive(clap::Args, Debug)]
struct ClientArgs {
    /// The OverlayGateway that lists this client in spec.clientJoin.clients.
    #[arg(long)]
    gateway: String,
    /// This client's name in that list.
    #[arg(long)]
    name: String,
    /// Namespace of the client's heartbeat Lease (the Causeway release's).
    #[arg(long, env = "POD_NAMESPACE", default_value = "causeway-system")]
    namespace: String,
    /// Seconds between full passes that repair anything changed behind the client's back.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// Seconds the heartbeat Lease is valid (renewed every quarter of it); the gateway shows
    /// the client as not joined once it lapses.
    #[arg(long, default_value_t = causeway_kube::heartbeat::DEFAULT_DURATION_SECONDS)]
    lease_duration_seconds: u32,
}

/// One thread runs the whole agent: its loop, the watches, the netlink connection and the
/// writers. The loop is one sequence (a pass awaits its netlink answers; the watches feed the
/// next pass), so a second worker thread only moved each wake-up between threads: with the
/// default two workers on a 2-core node a peer's pass took 0.83–1.25 ms and the start at
/// 5,000 peers 0.92–1.06 s of CPU, with one thread 0.44–0.73 ms and 0.57 s (docs/benchmarks.md,
/// "One thread for the agent"). Blocking work (raw ARP/NDP sockets, entering a namespace)
/// runs on tokio's blocking threads, as before.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    causeway_kube::logging::init(&args.log, "info");
    info!(version = VERSION, "causeway-node-agent starting");
    if let Some(Command::Client(c)) = args.command {
        return run_client(c).await;
    }
    let Some(node_name) = args.node_name else {
        error!("--node-name (or NODE_NAME) is required: the name of the Node this agent runs on");
        return ExitCode::from(2);
    };
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
    let (client, writer, api_server) = match clients().await {
        Ok(c) => c,
        Err(e) => {
            error!("connecting to the API server (is KUBECONFIG set, or are we in a pod?): {e}");
            return ExitCode::FAILURE;
        }
    };
    let health = Health::new(Duration::from_secs(args.resync_seconds));
    let metrics = Arc::new(Metrics::new(VERSION));
    if !args.dry_run {
        for (addr, flag) in [
            (args.health_addr, "--health-addr"),
            (args.metrics_addr, "--metrics-addr"),
        ] {
            let Some(addr) = addr else { continue };
            match health::bind(addr, HEALTH_BIND_WAIT).await {
                Ok(listener) => {
                    let (health, metrics) = (health.clone(), Arc::clone(&metrics));
                    tokio::spawn(async move {
                        if let Err(e) = health::serve(listener, health, metrics).await {
                            error!(%addr, error = %e, "the health and metrics endpoint failed");
                        }
                    });
                }
                Err(e) => {
                    error!(
                        "serving /healthz, /readyz and /metrics on {addr} ({flag}): {e}; is another agent running on this node?"
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let config = Config {
        node_name,
        cni_conf_dir: args.cni_conf_dir,
        cni_data_dir: args.cni_data_dir,
        resync: Duration::from_secs(args.resync_seconds),
        dry_run: args.dry_run,
        namespace: args.namespace,
        lease_duration: Duration::from_secs(u64::from(args.lease_duration_seconds)),
        status_refresh: Duration::from_secs(args.status_refresh_seconds),
        sysctl_dir: SysctlDir::new(args.sysctl_dir),
        api_server,
        bird: causeway_node_agent::bird::Options {
            program: args.bird,
            dir: args.bird_dir,
            netns: None,
        },
    };
    // On SIGINT or SIGTERM the agent stops without touching the dataplane, so an upgrade or a
    // restart never interrupts traffic.
    match agent::run(
        client,
        writer,
        config,
        health,
        metrics,
        causeway_kube::signal::shutdown(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One client for the watches and one whose requests time out for the loop's writes
/// ([`agent::bounded_writes`]), from the same inferred configuration; and the API server's
/// address when the configuration names it by IP (the planner keeps it reachable).
async fn clients() -> anyhow::Result<(kube::Client, kube::Client, Option<std::net::IpAddr>)> {
    let config = kube::Config::infer().await?;
    let api_server = causeway_kube::apiserver::configured(&config);
    let writer = kube::Client::try_from(agent::bounded_writes(config.clone()))?;
    Ok((kube::Client::try_from(config)?, writer, api_server))
}

async fn run_client(args: ClientArgs) -> ExitCode {
    if args.resync_seconds == 0 || args.lease_duration_seconds < 2 {
        error!("--resync-seconds must be at least 1 and --lease-duration-seconds at least 2");
        return ExitCode::from(2);
    }
    let kube = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            error!("connecting to the API server (is KUBECONFIG set?): {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = ClientConfig {
        gateway: args.gateway,
        name: args.name,
        namespace: args.namespace,
        resync: Duration::from_secs(args.resync_seconds),
        lease_duration: Duration::from_secs(u64::from(args.lease_duration_seconds)),
    };
    match client::run(kube, config, causeway_kube::signal::shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_flag_defaults_parses_and_turns_off_when_empty() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["bin"];
            argv.extend(extra);
            Args::try_parse_from(argv).map(|a| a.health_addr)
        };
        assert_eq!(parse(&[]).ok(), Some("127.0.0.1:9809".parse().ok()));
        assert_eq!(
            parse(&["--health-addr", "0.0.0.0:1234"]).ok(),
            Some("0.0.0.0:1234".parse().ok())
        );
        assert_eq!(parse(&["--health-addr="]).ok(), Some(None));
        assert!(parse(&["--health-addr", "nonsense"]).is_err());
    }
}
