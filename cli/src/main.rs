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
        /// Also ask each node on the path what its kernel does with the packet (the agent's
        /// `/debug/route`, reached by port-forwarding to its pod) and report any difference;
        /// exits 1 when there is one. Needs `pods/portforward` in the release's namespace.
        #[arg(long)]
        verify: bool,
        /// The agents' health port (the chart's `nodeAgent.healthPort`), for `--verify`.
        #[arg(long, default_value_t = 9809)]
        agent_port: u16,
    },
}

/// `GET /debug/route?dst=DST` from the agent on `node`, through a port-forward to its pod
/// (the agent listens on the node's loopback, which a host-network pod shares).
async fn ask_agent(
    client: &kube::Client,
    namespace: &str,
    node: &str,
    port: u16,
    dst: std::net::IpAddr,
) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(
            &kube::api::ListParams::default()
                .labels("app.kubernetes.io/component=node-agent")
                .fields(&format!("spec.nodeName={node}")),
        )
        .await
        .with_context(|| format!("listing the agent pods of namespace {namespace}"))?;
    let pod = list
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .with_context(|| format!("no running agent pod on {node} in namespace {namespace}"))?;
    let name = kube::ResourceExt::name_any(pod);
    let mut forward = pods
        .portforward(&name, &[port])
        .await
        .with_context(|| format!("port-forwarding to {namespace}/{name}:{port}"))?;
    let mut stream = forward
        .take_stream(port)
        .context("the port-forward has no stream")?;
    stream
        .write_all(format!("GET /debug/route?dst={dst} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut response),
    )
    .await
    .context("the agent did not answer within 10 s")??;
    drop(stream);
    let _ = forward.join().await;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("not an HTTP answer: {text}"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "{}: {}",
        head.lines().next().unwrap_or_default(),
        body.trim()
    );
    serde_json::from_str(body.trim()).with_context(|| format!("the agent answered {body}"))
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
        Command::Trace {
            src,
            dst,
            output,
            verify,
            agent_port,
        } => {
            let src_pod = pod_of(&client, &src).await?;
            let dst_pod = pod_of(&client, &dst).await?;
            let src = trace::resolve(&snapshot, &src, src_pod).map_err(anyhow::Error::msg)?;
            let dst = trace::resolve(&snapshot, &dst, dst_pod).map_err(anyhow::Error::msg)?;
            let t = trace::trace(&snapshot, &src, &dst).map_err(anyhow::Error::msg)?;
            let mut results = Vec::new();
            if verify {
                for (i, hop) in t.hops.iter().enumerate() {
                    let Some(expect) = &hop.expect else { continue };
                    let answer = ask_agent(
                        &client,
                        &args.namespace,
                        &expect.node,
                        agent_port,
                        expect.dst,
                    )
                    .await;
                    results.push((
                        i,
                        answer
                            .map_err(|e| format!("cannot ask the agent on {}: {e:#}", expect.node))
                            .and_then(|kernel| trace::compare(expect, &kernel)),
                    ));
                }
            }
            match output {
                Output::Text => print!("{}", t.render_verified(&results)),
                Output::Json => {
                    let mut v = serde_json::to_value(&t)?;
                    if verify {
                        v["verified"] = results
                            .iter()
                            .map(|(hop, r)| match r {
                                Ok(s) => {
                                    serde_json::json!({"hop": hop, "agrees": true, "kernel": s})
                                }
                                Err(s) => {
                                    serde_json::json!({"hop": hop, "agrees": false, "kernel": s})
                                }
                            })
                            .collect();
                    }
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
            }
            Ok(if results.iter().all(|(_, r)| r.is_ok()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
