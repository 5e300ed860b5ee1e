//! `causeway-e2e`: bring the local test cluster up, show it, and tear it down.
//!
//! `make up` / `make down` call this; see docs/test-cluster.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use causeway_e2e::cluster::UpOptions;
use causeway_e2e::controlplane::workspace_root;
use causeway_e2e::{Cluster, Topology, demo, state};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "The Causeway test cluster: real control plane, network-namespace nodes")]
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
            // Ctrl-C during start-up must not leave a half-built cluster behind.
            state::teardown_on_interrupt(&name, "[up]")?;
            let cluster = Cluster::up_with(
                &name,
                topo,
                UpOptions {
                    detached: !hold,
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
                demo::run(&cluster).inspect_err(|_| {
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
