//! `causeway-operator`: parse flags, set up logging, health, metrics and leader election,
//! then run the PodNetwork controller while this replica leads. `causeway-operator probe
//! live|ready` is the kubelet's exec probe against a running replica.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use causeway_operator::controller::{self, Options};
use causeway_operator::leader::{self, Election};
use causeway_operator::metrics::{self, Metrics};
use causeway_operator::probe::{self, Check};
use clap::{Parser, Subcommand};
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
    about = "Causeway operator: allocates node subnets and reports PodNetwork status",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(flatten)]
    log: causeway_kube::logging::LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
    /// This replica's identity in leader election (the pod name in a Deployment).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Namespace of the leader election Lease and of the agents' heartbeat Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = "causeway-system")]
    namespace: String,
    /// Namespace where the operator keeps one ServiceAccount per ClientJoin client (default:
    /// `<namespace>-clients`). It must exist; the chart creates it.
    #[arg(long, env = "CLIENT_NAMESPACE")]
    client_namespace: Option<String>,
    /// The cluster's Service ranges (repeatable, IPv4 or IPv6), for clusters that serve no ServiceCIDR
    /// objects (before Kubernetes 1.33, or with the MultiCIDRServiceAllocator feature off):
    /// no PodNetwork's range may overlap it. The ServiceCIDR objects are read either way.
    #[arg(long = "service-cidr", value_name = "CIDR")]
    service_cidrs: Vec<ipnet::IpNet>,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "causeway-operator")]
    lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal: the failover time after a crash.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Seconds before expiry at which the leader renews its Lease.
    #[arg(long, default_value_t = 5)]
    lease_renew_grace: u64,
    /// TCP address of /metrics, served by the leader only, from when it leads (empty: none).
    /// Unauthenticated: keep it on 127.0.0.1 (reach it with `kubectl port-forward` to the
    /// leader pod) unless a firewall or NetworkPolicy guards the address.
    #[arg(long, default_value = metrics::DEFAULT_METRICS_ADDR, value_parser = causeway_kube::cli::optional_addr)]
    metrics_addr: causeway_kube::cli::MaybeAddr,
    /// Unix socket of this replica's /healthz, /readyz and /metrics, which
    /// `causeway-operator probe` asks (empty: none). Its directory must exist.
    #[arg(long, default_value = metrics::DEFAULT_HEALTH_SOCKET)]
    health_socket: PathBuf,
    /// Use each Node's spec.podCIDR (allocated by kube-controller-manager) as its subnet
    /// instead of allocating one.
    #[arg(long)]
    use_node_pod_cidr: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ask a running replica's /healthz (`live`) or /readyz (`ready`) on its Unix socket; exit
    /// 0 when it answers 200 (the kubelet's exec probes).
    Probe(ProbeArgs),
}

#[derive(clap::Args, Debug)]
struct ProbeArgs {
    /// `live` (/healthz) or `ready` (/readyz).
    #[arg(value_enum)]
    check: Check,
    /// The replica's socket (its --health-socket).
    #[arg(long, default_value = metrics::DEFAULT_HEALTH_SOCKET)]
    health_socket: PathBuf,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    timeout_seconds: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Probe(p)) = &args.command {
        // No runtime, no logging set-up: this runs every few seconds.
        let timeout = Duration::from_secs(p.timeout_seconds.max(1));
        return match probe::probe(&p.health_socket, p.check, timeout) {
            Ok(body) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    causeway_kube::logging::init(&args.log, "info,kube_lease_manager=warn");
    info!(version = VERSION, "causeway-operator starting");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
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
    let metrics = Arc::new(Metrics::new(VERSION));
    // First, so the liveness probe answers while the rest starts.
    if !args.health_socket.as_os_str().is_empty() {
        let path = args.health_socket.clone();
        let listener = metrics::bind_unix(&path).with_context(|| {
            format!(
                "serving health on {} (--health-socket; its directory must exist, or pass \
                 --health-socket= for none)",
                path.display()
            )
        })?;
        let served = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve_unix(listener, served).await {
                error!(path = %path.display(), error = %e, "the health endpoint failed");
            }
        });
    }
    let config = kube::Config::infer()
        .await
        .context("connecting to the API server (is KUBECONFIG set, or are we in a pod?)")?;
    // The API server's address when the configuration names it by IP: no ClientJoin client
    // may take it (in a pod this is the `kubernetes` Service's address).
    let api_server = causeway_kube::apiserver::configured(&config);
    let client = kube::Client::try_from(config).context("building the API client")?;

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
    if let Some(addr) = args.metrics_addr {
        tokio::spawn(metrics::serve_tcp(addr, metrics.clone()));
    }

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
            client_namespace: args
                .client_namespace
                .clone()
                .unwrap_or_else(|| format!("{}-clients", args.namespace)),
            agent_namespace: args.namespace.clone(),
            api_server,
            service_cidrs: args.service_cidrs.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_flag_defaults_parses_and_turns_off_when_empty() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["bin"];
            argv.extend(extra);
            Args::try_parse_from(argv).map(|a| a.metrics_addr)
        };
        assert_eq!(parse(&[]).ok(), Some("127.0.0.1:8080".parse().ok()));
        assert_eq!(
            parse(&["--metrics-addr", "0.0.0.0:1234"]).ok(),
            Some("0.0.0.0:1234".parse().ok())
        );
        assert_eq!(parse(&["--metrics-addr="]).ok(), Some(None));
        assert!(parse(&["--metrics-addr", "nonsense"]).is_err());
    }

    #[test]
    fn service_cidrs_repeat_and_bad_ones_are_refused() {
        let args = Args::try_parse_from([
            "bin",
            "--service-cidr",
            "10.96.0.0/12",
            "--service-cidr=10.100.0.0/16",
        ])
        .expect("parses");
        assert_eq!(
            args.service_cidrs,
            [
                "10.96.0.0/12".parse().expect("net"),
                "10.100.0.0/16".parse().expect("net")
            ]
        );
        assert!(Args::try_parse_from(["bin", "--service-cidr", "10.96.0.0"]).is_err());
        assert!(Args::try_parse_from(["bin", "--service-cidr", "fd00::/108"]).is_ok());
        assert!(Args::try_parse_from(["bin", "--service-cidr", "fd00::"]).is_err());
        assert!(
            Args::try_parse_from(["bin"])
                .expect("parses")
                .service_cidrs
                .is_empty()
        );
    }

    #[test]
    fn probe_is_a_subcommand_with_the_default_socket() {
        let args = Args::try_parse_from(["bin", "probe", "ready"]).expect("parses");
        let Some(Command::Probe(p)) = args.command else {
            panic!("no probe subcommand");
        };
        assert_eq!(p.check, Check::Ready);
        assert_eq!(
            p.health_socket,
            PathBuf::from(metrics::DEFAULT_HEALTH_SOCKET)
        );
        assert!(Args::try_parse_from(["bin", "probe", "sideways"]).is_err());
    }
}
