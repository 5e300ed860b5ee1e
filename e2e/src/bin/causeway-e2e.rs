//! `causeway-e2e`: bring the local test cluster up, show it, and tear it down; build the
//! container images.
//!
//! `make up` / `make down` / `make image` call this; see docs/test-cluster.md and docs/images.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use causeway_e2e::cluster::UpOptions;
use causeway_e2e::controlplane::{causeway_binary, workspace_root};
use causeway_e2e::{Cluster, Topology, demo, image, state};
use clap::{Parser, Subcommand};

/// `CAUSEWAY_VERSION` at compile time when set, else the crate's version. Read only in the
/// binary, so a new value recompiles just the binary (docs/images.md).
const VERSION: &str = match option_env!("CAUSEWAY_VERSION") {
    Some(v) if !v.is_empty() => v,
    _ => env!("CARGO_PKG_VERSION"),
};

#[derive(Parser)]
#[command(
    version = VERSION,
    about = "The Causeway test cluster: real control plane, network-namespace nodes")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster and leave it running (replaces a cluster of the same name).
    Up {
        #[arg(long, default_value = "dev")]
        name: String,
        /// Topology YAML (default: e2e/topologies/dev.yaml).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Start only the bare cluster: no CRDs, no example network, no pods.
        #[arg(long)]
        bare: bool,
        /// Own the cluster and keep running until killed (tests of crash clean-up use this:
        /// the cluster of a killed holder is stale and the next start removes it).
        #[arg(long, hide = true)]
        hold: bool,
    },
    /// Remove a cluster: its processes, namespaces, veth and files.
    Down {
        #[arg(long, default_value = "dev")]
        name: String,
        /// Remove the clusters of crashed or killed runs (whose owner process is gone).
        #[arg(long, conflicts_with = "all")]
        stale: bool,
        /// Remove every cluster on this machine.
        #[arg(long)]
        all: bool,
    },
    /// List clusters on this machine and whether their processes run.
    Status,
    /// Build the container images as OCI archives: causeway-<version>.tar (operator + agent),
    /// pause.tar and testpod.tar (docs/images.md).
    Image {
        /// Directory the archives are written to.
        #[arg(long)]
        out: PathBuf,
        /// Directory holding causeway-operator and causeway-node-agent.
        #[arg(long, default_value = "target/release")]
        bin_dir: PathBuf,
        /// Tag of the causeway image (default: what the binaries print with --version).
        #[arg(long)]
        version: Option<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("causeway-e2e: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Up {
            name,
            topology,
            bare,
            hold,
        } => {
            let path = topology.unwrap_or_else(|| workspace_root().join("e2e/topologies/dev.yaml"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading topology {}", path.display()))?;
            let topo: Topology = serde_yaml::from_str(&text)
                .with_context(|| format!("parsing topology {}", path.display()))?;
            // Kubelet nodes start with this build's images (`make images`) in their containerd.
            let (version, images) = if topo.kubelet {
                let agent = causeway_binary("causeway-node-agent")?;
                let version =
                    image::binaries_version(agent.parent().context("binary without a directory")?)?;
                let images = image::node_archives(&version)?;
                (version, images)
            } else {
                (String::new(), Vec::new())
            };
            // Ctrl-C during start-up must not leave a half-built cluster behind.
            state::teardown_on_interrupt(&name, "[up]")?;
            let cluster = Cluster::up_with(
                &name,
                topo,
                UpOptions {
                    detached: !hold,
                    images,
                    ..UpOptions::default()
                },
            )?;
            if hold {
                println!("holding cluster {name}");
                loop {
                    std::thread::park();
                }
            }
            if !bare {
                demo::run(&cluster, &version).inspect_err(|_| {
                    eprintln!("the demo failed; the cluster is still up: `make down` removes it");
                })?;
            }
            println!("\n{}", cluster.describe());
            println!("  tear down: make down");
            Ok(())
        }
        Cmd::Down { name, stale, all } => {
            let removed = if stale {
                state::sweep_stale()?
            } else if all {
                let mut removed = Vec::new();
                for c in state::list_clusters() {
                    removed.extend(state::teardown(&c)?);
                }
                removed
            } else {
                state::teardown(&name)?
            };
            for r in &removed {
                println!("removed {r}");
            }
            if removed.is_empty() {
                println!("nothing to remove");
            }
            Ok(())
        }
        Cmd::Image {
            out,
            bin_dir,
            version,
        } => {
            let version = match version {
                Some(v) => v,
                None => image::binaries_version(&bin_dir)?,
            };
            let started = std::time::Instant::now();
            let built = image::build_all(&image::BuildOptions {
                bin_dir,
                out_dir: out,
                version,
            })?;
            for b in &built {
                println!(
                    "{}\n  archive {} ({:.1} MB)\n  digest  {}",
                    b.reference,
                    b.archive.display(),
                    b.size as f64 / 1e6,
                    b.manifest_digest
                );
            }
            println!("built in {:.1} s", started.elapsed().as_secs_f64());
            Ok(())
        }
        Cmd::Status => {
            let clusters = state::list_clusters();
            if clusters.is_empty() {
                println!("no clusters");
            }
            for c in clusters {
                let st = state::State::load(&c)?.unwrap_or_default();
                let owner = match &st.owner {
                    None => "detached (make up)".to_string(),
                    Some(o) if o.alive() => format!("owned by pid {}", o.pid),
                    Some(o) => format!("STALE: owner pid {} is gone", o.pid),
                };
                println!("{c}: {owner}; {} namespaces", st.namespaces.len());
                for p in &st.processes {
                    let alive = p.id.as_ref().is_some_and(|i| i.alive());
                    let pid = p.id.as_ref().map(|i| i.pid).unwrap_or(0);
                    println!(
                        "  {:<24} pid {pid:<8} {}",
                        p.role,
                        if alive { "running" } else { "exited" }
                    );
                }
                println!(
                    "  export KUBECONFIG={}",
                    state::State::dir(&c).join("kubeconfig").display()
                );
            }
            Ok(())
        }
    }
}
