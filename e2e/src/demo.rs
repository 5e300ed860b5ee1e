//! What `make up` shows after the cluster starts: the Causeway CRDs installed, an example
//! network applied, and pods attached through the CNI reference plugins on every node.
//!
//! Until the operator and node agent land, the per-node CNI config is written by the harness
//! (the agent's job later); the demo says so rather than pretending.

use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

use crate::cluster::Cluster;
use crate::controlplane::workspace_root;
use crate::{pods, traffic};

/// Installs every CRD in `charts/causeway/crds/` and waits until the API serves them.
pub fn install_crds(cluster: &Cluster) -> Result<Vec<String>> {
    let dir = workspace_root().join("charts/causeway/crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut names = Vec::new();
    for f in &files {
        let out = cluster.kubectl(&["apply", "--server-side", "-f", &f.display().to_string()])?;
        names.extend(out.split_whitespace().next().map(|s| s.to_string()));
    }
    for n in &names {
        cluster.kubectl(&["wait", "--for=condition=Established", "--timeout=60s", n])?;
    }
    Ok(names)
}

pub fn run(cluster: &Cluster) -> Result<()> {
    let crds = install_crds(cluster)?;
    println!("installed {}", crds.join(", "));
    let example = workspace_root().join("docs/examples/podnetwork-overlay.yaml");
    print!(
        "{}",
        cluster.kubectl(&["apply", "-f", &example.display().to_string()])?
    );
    // Node subnets carved from the example's range, as the operator will allocate them.
    let spec: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(&example)?)?;
    let cidr: Ipv4Net = spec["spec"]["cidr"]
        .as_str()
        .context("example without spec.cidr")?
        .parse()?;
    let prefix = spec["spec"]["nodeSubnetPrefixLength"]
        .as_u64()
        .context("example without spec.nodeSubnetPrefixLength")?;
    let mut subnets = cidr.subnets(u8::try_from(prefix)?)?.skip(1);
    let nodes: Vec<String> = cluster
        .topology
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    for node in &nodes {
        let subnet = subnets
            .next()
            .context("example cidr too small for the demo")?;
        pods::write_bridge_netconf(cluster, node, subnet, 1450)?;
        let pod = pods::add(cluster, node, "demo")?;
        let gw = pod.gateway.context("CNI result without a gateway")?;
        traffic::wait_for(
            "pod reaches its node bridge",
            Duration::from_secs(5),
            || traffic::expect_ping(&pod.netns, gw),
        )?;
        println!(
            "pod demo on {node}: {}/{} via CNI bridge, pings its gateway {gw}",
            pod.ip, pod.prefix_len
        );
    }
    println!("(node agents are not running yet: the CNI config above was written by the harness)");
    println!("\n$ kubectl get nodes -o wide");
    print!("{}", cluster.kubectl(&["get", "nodes", "-o", "wide"])?);
    println!("\n$ kubectl get causeway");
    print!("{}", cluster.kubectl(&["get", "causeway"])?);
    Ok(())
}
