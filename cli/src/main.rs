//! `kubectl-causeway`: installed by copying it onto the PATH, run as `kubectl causeway`.
//! Connects like kubectl (`KUBECONFIG`, `~/.kube/config`, or in-cluster), reads once, prints.
//! Exit codes: 0 when all is well, 1 when `status` found a problem, 2 on a usage or
//! connection error.

use std::process::ExitCode;

use anyhow::Context;
use causeway_cli::{snapshot::Snapshot, status, trace};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// `CAUSEWAY_VERSION` at compile time when set, else the crate's version.
const VERSION: &str = match option_env!("CAUSEWAY_VERSION") {
    Some(v) => v,
    _ => env!("CARGO_PKG_VERSION"),
};

#[derive(Parser)]
#[command(
    name = "kubectl-causeway",
    bin_name = "kubectl causeway",
    version = VERSION,
    about = "Causeway's state on one screen (status), and the path a packet takes (trace)"
)]
struct Args {
    /// The namespace Causeway is installed in (its Leases are there).
    #[arg(
        short,
        long,
        global = true,
        env = "CAUSEWAY_NAMESPACE",
        default_value = "causeway-system"
    )]
    namespace: String,
    /// The operator's leader Lease (the chart names it after the release).
    #[arg(long, global = true, default_value = "causeway-operator")]
    operator_lease: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Networks, nodes, BGP sessions, gateways and subnets left; every problem with the
    /// command that shows more. Exits 1 when something is wrong.
    Status {
        /// `text` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The path a packet takes from SRC to DST, hop by hop, as the agents program it: routes,
    /// VXLAN tunnels (device, VNI, outer addresses), routers, MTU, NAT, gateways. SRC and DST:
    /// a pod as NAMESPACE/NAME (or pod/NAME in the default namespace), a node as node/NAME (or
    /// its name), or an IP address (a pod's, a node's, or a machine outside the cluster).
    Trace {
        src: String,
        dst: String,
        /// `text` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// `NAMESPACE/NAME` or `pod/NAME` (default namespace): the pod's label, IP and node; `None`
/// for anything else (`node/NAME`, a name, an address).
async fn pod_of(
    client: &kube::Client,
    arg: &str,
) -> anyhow::Result<Option<(String, std::net::IpAddr, String)>> {
    let Some((ns, name)) = arg.split_once('/') else {
        return Ok(None);
    };
    if ns == "node" {
        return Ok(None);
    }
    let ns = if ns == "pod" { "default" } else { ns };
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading pod {ns}/{name}"))?
        .with_context(|| format!("no pod {name} in namespace {ns} (kubectl get pods -n {ns})"))?;
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .with_context(|| {
            format!("pod {ns}/{name} has no IP address yet (kubectl describe pod -n {ns} {name})")
        })?
        .parse()
        .with_context(|| format!("pod {ns}/{name}'s status.podIP"))?;
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .with_context(|| format!("pod {ns}/{name} is not scheduled on a node yet"))?;
    Ok(Some((format!("{ns}/{name}"), ip, node)))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the API server (is KUBECONFIG set, or ~/.kube/config present?)")?;
    let snapshot = Snapshot::read(&client, &args.namespace, &args.operator_lease).await?;
    match args.command {
        Command::Status { output } => {
            let report = status::report(&snapshot);
            match output {
                Output::Text => print!("{}", status::render(&report)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(if report.healthy() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Trace { src, dst, output } => {
            let src_pod = pod_of(&client, &src).await?;
            let dst_pod = pod_of(&client, &dst).await?;
            let src = trace::resolve(&snapshot, &src, src_pod).map_err(anyhow::Error::msg)?;
            let dst = trace::resolve(&snapshot, &dst, dst_pod).map_err(anyhow::Error::msg)?;
            let t = trace::trace(&snapshot, &src, &dst).map_err(anyhow::Error::msg)?;
            match output {
                Output::Text => print!("{}", t.render()),
                Output::Json => println!("{}", serde_json::to_string_pretty(&t)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
