//! What `make up` shows after the cluster starts: Causeway installed with `helm install` onto
//! the kubelet nodes, the example Overlay network applied and Ready, a Deployment with a pod
//! on every node (addresses from the nodes' NodeSubnets, attached by containerd through the
//! CNI config the agents wrote), and each pod reaching a pod on another node.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::cluster::Cluster;
use crate::controlplane::workspace_root;
use crate::{helm, traffic, workload};

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

/// The namespace and Deployment of the demo's test pods.
const DEMO: &str = "demo";

/// `make up` on a kubelet topology: Causeway installed by helm from the images the nodes
/// imported, the example Overlay network, a Deployment with a pod on every node, and each
/// pod pinging a pod on the next node with `kubectl exec`.
pub fn run(cluster: &Cluster, version: &str) -> Result<()> {
    anyhow::ensure!(
        cluster.topology.kubelet,
        "the demo installs Causeway with helm onto kubelet nodes: set `kubelet: true` in the topology"
    );
    let release =
        helm::Release::default_with(&[("image.tag", version), ("image.pullPolicy", "Never")]);
    println!(
        "$ helm install causeway charts/causeway --namespace {} --create-namespace --set image.tag={version} --wait",
        release.namespace
    );
    let started = std::time::Instant::now();
    print!("{}", release.install(cluster)?);
    println!("\n$ kubectl get pods -n {} -o wide", release.namespace);
    print!(
        "{}",
        cluster.kubectl(&["get", "pods", "-n", &release.namespace, "-o", "wide"])?
    );
    let example = workspace_root().join("docs/examples/podnetwork-overlay.yaml");
    println!("\n$ kubectl apply -f docs/examples/podnetwork-overlay.yaml");
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
    println!("$ kubectl wait --for=condition=Ready podnetwork/{network}");
    print!(
        "{}",
        cluster.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "--timeout=90s",
            &format!("podnetwork/{network}"),
        ])?
    );
    let nodes = cluster.topology.nodes.len() as u32;
    let pods = workload::deploy_test_pods(cluster, DEMO, DEMO, nodes)?;
    println!(
        "\nCauseway installed, network Ready and {nodes} pods Ready {:.1}s after helm install started",
        started.elapsed().as_secs_f64()
    );
    println!("\n$ kubectl get pods -n {DEMO} -o wide");
    print!(
        "{}",
        cluster.kubectl(&["get", "pods", "-n", DEMO, "-o", "wide"])?
    );
    println!();
    for (i, from) in pods.iter().enumerate() {
        let to = &pods[(i + 1) % pods.len()];
        let ip = to.ip.context("pod without an address")?;
        traffic::wait_for("pod-to-pod ping", Duration::from_secs(20), || {
            let failed = workload::exec_reach(cluster, from, &[ip]);
            anyhow::ensure!(failed.is_empty(), "{}", failed.join("; "));
            Ok(())
        })?;
        println!(
            "{} on {} -> {ip} on {}: ping and TCP echo answered",
            from.name, from.node, to.node
        );
    }
    if let (Some(from), Some(to)) = (pods.first(), pods.last().and_then(|p| p.ip)) {
        println!(
            "  try: kubectl exec -n {DEMO} {} -- ping -c 3 {to}",
            from.name
        );
    }
    println!("\n$ kubectl get nodes -o wide");
    print!("{}", cluster.kubectl(&["get", "nodes", "-o", "wide"])?);
    println!("\n$ kubectl get causeway");
    print!("{}", cluster.kubectl(&["get", "causeway"])?);
    Ok(())
}
