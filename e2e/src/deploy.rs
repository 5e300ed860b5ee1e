//! Deploying Causeway into a test cluster the way the Helm chart does: the namespace, the
//! operator's RBAC from `charts/causeway/templates/operator-rbac.yaml`, and operator
//! processes that authenticate as the chart's service account (so they run with exactly the
//! chart's least-privilege rules, never as an admin).

use anyhow::Result;

use crate::cluster::Cluster;
use crate::controlplane::{API_PORT, causeway_binary, workspace_root};
use crate::proc::ProcId;

/// The namespace the chart installs into (leader Lease, service account).
pub const NAMESPACE: &str = "causeway-system";

/// Creates the namespace (if missing) and applies the chart's operator RBAC.
pub fn install_operator_rbac(c: &Cluster) -> Result<()> {
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE}});
    c.kubectl_stdin(&["apply", "-f", "-"], &ns.to_string())?;
    let template = std::fs::read_to_string(
        workspace_root().join("charts/causeway/templates/operator-rbac.yaml"),
    )?;
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &template.replace("{{ .Release.Namespace }}", NAMESPACE),
    )?;
    Ok(())
}

/// A kubeconfig (reachable from node namespaces) for the operator's service account.
pub fn operator_kubeconfig(c: &Cluster) -> Result<String> {
    let path = c.dir.join("kubeconfig-operator");
    if !path.is_file() {
        let user = format!("system:serviceaccount:{NAMESPACE}:causeway-operator");
        let groups = [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{NAMESPACE}"),
        ];
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let (crt, key) = c.pki.client_cert(&user, &groups)?;
        let server = format!("https://{}:{API_PORT}", c.topology.control_plane.address);
        c.pki.kubeconfig(&path, &server, &crt, &key)?;
    }
    Ok(path.display().to_string())
}

/// Starts an operator replica in `host`'s namespace with identity `host`, metrics on
/// port 8080, and `args` appended; returns its process.
pub fn start_operator(c: &Cluster, host: &str, args: &[&str]) -> Result<ProcId> {
    let bin = causeway_binary("causeway-operator")?;
    let all: Vec<String> = [
        "--identity",
        host,
        "--namespace",
        NAMESPACE,
        "--metrics-addr",
        "0.0.0.0:8080",
    ]
    .iter()
    .chain(args)
    .map(|s| s.to_string())
    .collect();
    let kubeconfig = operator_kubeconfig(c)?;
    c.spawn(
        host,
        &format!("operator-{host}"),
        &bin.display().to_string(),
        &all,
        &[("RUST_LOG", "info"), ("KUBECONFIG", &kubeconfig)],
    )
}

/// Applies the chart's node-agent RBAC (the namespace must exist: [`install_operator_rbac`]).
pub fn install_agent_rbac(c: &Cluster) -> Result<()> {
    let template = std::fs::read_to_string(
        workspace_root().join("charts/causeway/templates/node-agent-rbac.yaml"),
    )?;
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &template.replace("{{ .Release.Namespace }}", NAMESPACE),
    )?;
    Ok(())
}

/// A kubeconfig for the node agent's service account (shared by every node's agent, as a
/// DaemonSet's pods share one).
pub fn agent_kubeconfig(c: &Cluster) -> Result<String> {
    let path = c.dir.join("kubeconfig-node-agent");
    if !path.is_file() {
        let user = format!("system:serviceaccount:{NAMESPACE}:causeway-node-agent");
        let groups = [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{NAMESPACE}"),
        ];
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let (crt, key) = c.pki.client_cert(&user, &groups)?;
        let server = format!("https://{}:{API_PORT}", c.topology.control_plane.address);
        c.pki.kubeconfig(&path, &server, &crt, &key)?;
    }
    Ok(path.display().to_string())
}

/// Starts the node agent inside `node`'s namespace, the way the DaemonSet runs it (host
/// network, the node's CNI directories), with `args` appended; returns its process.
pub fn start_agent(c: &Cluster, node: &str, args: &[&str]) -> Result<ProcId> {
    let bin = causeway_binary("causeway-node-agent")?;
    let conf_dir = c.cni_conf_dir(node).display().to_string();
    let data_dir = c.cni_state_dir(node).join("networks").display().to_string();
    let all: Vec<String> = [
        "--node-name",
        node,
        "--cni-conf-dir",
        &conf_dir,
        "--cni-data-dir",
        &data_dir,
    ]
    .iter()
    .chain(args)
    .map(|s| s.to_string())
    .collect();
    let kubeconfig = agent_kubeconfig(c)?;
    c.spawn(
        node,
        &format!("agent-{node}"),
        &bin.display().to_string(),
        &all,
        &[("RUST_LOG", "info"), ("KUBECONFIG", &kubeconfig)],
    )
}
