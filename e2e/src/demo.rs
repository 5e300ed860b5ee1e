//! What `make up` shows after the cluster starts: the Causeway CRDs installed, the operator
//! and a node agent per node running with the chart's RBAC, the example Overlay network
//! applied, allocated and Ready, a pod on every node attached through the CNI config the
//! node's agent wrote, and each pod pinging a pod on another node.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

use crate::cluster::Cluster;
use crate::controlplane::workspace_root;
use crate::{deploy, pods, traffic};

/// Installs every CRD in `charts/causeway/files/crds/` and waits until the API serves them.
pub fn install_crds(cluster: &Cluster) -> Result<Vec<String>> {
    let dir = workspace_root().join("charts/causeway/files/crds");
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
    let nodes: Vec<String> = cluster
        .topology
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let first = nodes.first().context("the topology has no nodes")?;
    let logs = crate::state::log_root().join(&cluster.name);
    deploy::install_rbac(cluster)?;
    deploy::start_operator(cluster, first, &[])?;
    println!("operator running on {first}");
    for node in &nodes {
        deploy::start_agent(cluster, node, &["--resync-seconds", "10"])?;
    }
    println!(
        "node agents running on {} (logs: {})",
        nodes.join(", "),
        logs.display()
    );
    let example = workspace_root().join("docs/examples/podnetwork-overlay.yaml");
    print!(
        "{}",
        cluster.kubectl(&["apply", "-f", &example.display().to_string()])?
    );
    let network =
        serde_yaml::from_str::<serde_json::Value>(&std::fs::read_to_string(&example)?)?["metadata"]
            ["name"]
            .as_str()
            .context("example without metadata.name")?
            .to_string();
    traffic::wait_for(
        "the operator allocates a subnet to every node",
        Duration::from_secs(30),
        || node_subnets(cluster, &network, &nodes),
    )?;
    println!("$ kubectl wait --for=condition=Ready podnetwork/{network}");
    print!(
        "{}",
        cluster.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "--timeout=60s",
            &format!("podnetwork/{network}"),
        ])?
    );
    // One pod per node, attached with the CNI config each node's agent wrote.
    let mut pods = Vec::new();
    for node in &nodes {
        let pod = pods::add(cluster, node, "demo")?;
        println!(
            "pod demo on {node}: {}/{} (CNI bridge plugin, config written by the agent)",
            pod.ip, pod.prefix_len
        );
        pods.push(pod);
    }
    for (i, from) in pods.iter().enumerate() {
        let to = &pods[(i + 1) % pods.len()];
        traffic::wait_for("pod-to-pod ping", Duration::from_secs(10), || {
            traffic::expect_ping(&from.netns, to.ip)
        })?;
        println!(
            "{} on {} pings {} on {} over VXLAN",
            from.ip, from.node, to.ip, to.node
        );
    }
    println!("\n$ kubectl get nodes -o wide");
    print!("{}", cluster.kubectl(&["get", "nodes", "-o", "wide"])?);
    println!("\n$ kubectl get causeway");
    print!("{}", cluster.kubectl(&["get", "causeway"])?);
    Ok(())
}

/// The subnet of each of `nodes` in `network`, once every node has one.
fn node_subnets(
    cluster: &Cluster,
    network: &str,
    nodes: &[String],
) -> Result<BTreeMap<String, Ipv4Net>> {
    let mut found = BTreeMap::new();
    for item in &deploy::node_subnets(cluster, network)? {
        let node = item["spec"]["nodeName"].as_str().unwrap_or_default();
        if let Some(cidr) = item["spec"]["cidr"].as_str() {
            found.insert(node.to_string(), cidr.parse()?);
        }
    }
    let missing: Vec<&String> = nodes.iter().filter(|n| !found.contains_key(*n)).collect();
    anyhow::ensure!(missing.is_empty(), "no NodeSubnet yet for {missing:?}");
    Ok(found)
}
