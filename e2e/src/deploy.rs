//! Deploying Causeway into a test cluster the way the Helm chart does: the namespace, the RBAC
//! from `charts/causeway/templates/*-rbac.yaml` (rendered by `helm template` as release
//! `causeway`), and operator and agent processes that authenticate as the chart's service
//! accounts (so they run with exactly the chart's least-privilege rules, never as an admin).

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::controlplane::{API_PORT, causeway_binary};
use crate::proc::ProcId;

pub use crate::helm::NAMESPACE;

const OPERATOR: &str = "causeway-operator";
const AGENT: &str = "causeway-node-agent";

/// Where the operator keeps one ServiceAccount per ClientJoin client (the chart's default for
/// release namespace [`NAMESPACE`]: `<namespace>-clients`).
pub const CLIENT_NAMESPACE: &str = "causeway-system-clients";

/// Creates the namespace (if missing) and applies the chart's operator RBAC.
pub fn install_operator_rbac(c: &Cluster) -> Result<()> {
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE}});
    c.kubectl_stdin(&["apply", "-f", "-"], &ns.to_string())?;
    apply_chart_template(c, "operator-rbac.yaml")
}

/// Everything a cluster needs before Causeway runs: the CRDs, the namespace and the chart's
/// RBAC for the operator and the agents.
pub fn install(c: &Cluster) -> Result<()> {
    crate::demo::install_crds(c)?;
    install_rbac(c)
}

/// The namespace and the chart's RBAC: operator, node agent, and ClientJoin clients.
pub fn install_rbac(c: &Cluster) -> Result<()> {
    install_operator_rbac(c)?;
    install_agent_rbac(c)?;
    apply_chart_template(c, "gateway-client-rbac.yaml")
}

/// Applies the chart's node-agent RBAC and its node-restriction admission policies (the
/// namespace must exist: [`install_operator_rbac`]).
pub fn install_agent_rbac(c: &Cluster) -> Result<()> {
    apply_chart_template(c, "node-agent-rbac.yaml")?;
    apply_chart_template(c, "node-restriction.yaml")
}

/// Applies one chart template, rendered by `helm template` as release `causeway` in
/// [`NAMESPACE`] (the names the service accounts below use).
fn apply_chart_template(c: &Cluster, file: &str) -> Result<()> {
    let rendered = crate::helm::render(&format!("templates/{file}"), NAMESPACE)
        .with_context(|| format!("rendering the chart's templates/{file}"))?;
    c.kubectl_stdin(&["apply", "-f", "-"], &rendered)?;
    Ok(())
}

/// The API server's URL as the nodes reach it: its IPv4 address, or its IPv6 one when the
/// nodes have no IPv4 (an IPv6-only underlay; the serving certificate names both).
#[must_use]
pub fn server_url(c: &Cluster) -> String {
    let cp = &c.topology.control_plane;
    let ipv6_only = c.topology.nodes.iter().all(|n| n.ipv4().is_none());
    match cp.address6 {
        Some(a6) if ipv6_only => format!("https://[{a6}]:{API_PORT}"),
        _ => format!("https://{}:{API_PORT}", cp.address),
    }
}

/// A kubeconfig (reachable from node namespaces) for the operator's service account.
pub fn operator_kubeconfig(c: &Cluster) -> Result<String> {
    service_account_kubeconfig(c, OPERATOR)
}

/// A kubeconfig for `node`'s agent: the node agent's service account, with a token the API
/// server binds to the Node object, as the DaemonSet pod's projected token is bound to its pod
/// and node. The API server reports the node as the user's extra
/// `authentication.kubernetes.io/node-name`, which the chart's node-restriction policy keys
/// on. The Node must exist; the token is issued once and reused ([`renew_agent_token`] after
/// the Node was deleted and registered again, which invalidates it, as it would the pod's).
pub fn agent_kubeconfig(c: &Cluster, node: &str) -> Result<String> {
    agent_kubeconfig_for(c, node, &server_url(c), "")
}

/// [`agent_kubeconfig`] for the API server at `server` (e.g. one started with
/// [`Cluster::start_extra_apiserver`]), in a file named with `suffix`.
pub fn agent_kubeconfig_for(c: &Cluster, node: &str, server: &str, suffix: &str) -> Result<String> {
    let token_file = agent_token_file(c, node);
    if !token_file.is_file() {
        renew_agent_token(c, node)?;
    }
    let path = c.dir.join(format!("kubeconfig-agent-{node}{suffix}"));
    c.pki.token_kubeconfig(&path, server, &token_file)?;
    Ok(path.display().to_string())
}

/// Issues `node`'s agent a new node-bound token, in the file its kubeconfig names (a running
/// agent re-reads it within a minute, as it would a pod's refreshed projected token).
pub fn renew_agent_token(c: &Cluster, node: &str) -> Result<()> {
    let token_file = agent_token_file(c, node);
    if let Some(dir) = token_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let token = bound_token(c, AGENT, "Node", node)?;
    // Written aside and renamed, so a reader never sees half a token.
    let partial = token_file.with_extension("new");
    std::fs::write(&partial, token).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &token_file)
        .with_context(|| format!("renaming {}", partial.display()))
}

fn agent_token_file(c: &Cluster, node: &str) -> std::path::PathBuf {
    c.dir.join("tokens").join(format!("agent-{node}"))
}

/// A token of service account `account` bound to the object `kind`/`name` (`Node` or `Pod`
/// in [`NAMESPACE`]), valid for a day or until the object goes: `kubectl create token`.
pub fn bound_token(c: &Cluster, account: &str, kind: &str, name: &str) -> Result<String> {
    let out = c.kubectl(&[
        "create",
        "token",
        account,
        "-n",
        NAMESPACE,
        "--bound-object-kind",
        kind,
        "--bound-object-name",
        name,
        "--duration",
        "24h",
    ])?;
    Ok(out.trim().to_owned())
}

/// The ServiceAccount the operator keeps for ClientJoin client `name` of `gateway`.
#[must_use]
pub fn client_account(gateway: &str, name: &str) -> String {
    // The operator names it like the client's heartbeat Lease (its `credentials` module).
    causeway_kube::heartbeat::client_lease_name(gateway, name)
}

/// Waits up to a minute until the operator has created (`present`) or deleted the
/// ServiceAccount of ClientJoin client `name` of `gateway`.
pub fn wait_client_account(c: &Cluster, gateway: &str, name: &str, present: bool) -> Result<()> {
    let account = client_account(gateway, name);
    let what = if present { "creates" } else { "deletes" };
    crate::traffic::wait_for(
        &format!("the operator {what} ServiceAccount {CLIENT_NAMESPACE}/{account}"),
        std::time::Duration::from_secs(60),
        || {
            let found = c
                .kubectl(&["get", "serviceaccount", &account, "-n", CLIENT_NAMESPACE])
                .is_ok();
            anyhow::ensure!(
                found == present,
                "ServiceAccount {account} present: {found}"
            );
            Ok(())
        },
    )
}

/// A kubeconfig for ClientJoin client `name` of `gateway`, as a user makes one: a token of
/// the client's own ServiceAccount (`kubectl create token`), once the operator has created
/// that account (it waits up to a minute). Each call issues a new token.
pub fn gateway_client_kubeconfig(c: &Cluster, gateway: &str, name: &str) -> Result<String> {
    wait_client_account(c, gateway, name, true)?;
    token_kubeconfig(c, CLIENT_NAMESPACE, &client_account(gateway, name))
}

/// A kubeconfig with a new token of ServiceAccount `namespace/account` (`kubectl create
/// token`), as a user gives one to a machine.
pub fn token_kubeconfig(c: &Cluster, namespace: &str, account: &str) -> Result<String> {
    let token = c.kubectl(&[
        "create",
        "token",
        account,
        "-n",
        namespace,
        "--duration",
        "24h",
    ])?;
    let token_file = c.dir.join("tokens").join(format!("{namespace}-{account}"));
    if let Some(dir) = token_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&token_file, token.trim())
        .with_context(|| format!("writing {}", token_file.display()))?;
    let path = c.dir.join(format!("kubeconfig-{namespace}-{account}"));
    let server = server_url(c);
    c.pki.token_kubeconfig(&path, &server, &token_file)?;
    Ok(path.display().to_string())
}

/// A kubeconfig for the node agent's service account with no node claim: a client
/// certificate, as a token stolen from outside any pod or node would carry.
pub fn unbound_agent_kubeconfig(c: &Cluster) -> Result<String> {
    service_account_kubeconfig(c, AGENT)
}

/// A kubeconfig authenticating as the service account `account` of [`NAMESPACE`] (a client
/// certificate with the user and groups the API server gives that account's tokens).
fn service_account_kubeconfig(c: &Cluster, account: &str) -> Result<String> {
    let path = c.dir.join(format!("kubeconfig-{account}"));
    if !path.is_file() {
        let user = format!("system:serviceaccount:{NAMESPACE}:{account}");
        let groups = [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{NAMESPACE}"),
        ];
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        let (crt, key) = c.pki.client_cert(&user, &groups)?;
        let server = server_url(c);
        c.pki.kubeconfig(&path, &server, &crt, &key)?;
    }
    Ok(path.display().to_string())
}

/// Starts an operator replica in `host`'s namespace with identity `host`, its health socket
/// at [`operator_socket`] and (once it leads) metrics on 127.0.0.1:8080 of that namespace,
/// with `args` appended; returns its process.
pub fn start_operator(c: &Cluster, host: &str, args: &[&str]) -> Result<ProcId> {
    start_operator_as(c, host, host, args)
}

/// Like [`start_operator`], with identity `identity`: several replicas in one namespace are
/// several operator pods on one node (host network), each with its own socket.
pub fn start_operator_as(c: &Cluster, host: &str, identity: &str, args: &[&str]) -> Result<ProcId> {
    let socket = operator_socket(c, host, identity);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let socket = socket.display().to_string();
    let base = [
        "--identity",
        identity,
        "--namespace",
        NAMESPACE,
        "--health-socket",
        &socket,
    ];
    start(
        c,
        host,
        OPERATOR,
        &format!("operator-{identity}"),
        &base,
        args,
    )
}

/// The health socket of the operator replica `identity` on `host` (a pod's emptyDir).
pub fn operator_socket(c: &Cluster, host: &str, identity: &str) -> std::path::PathBuf {
    c.host_dir(host)
        .join("run")
        .join(identity)
        .join("operator.sock")
}

/// Starts the node agent inside `node`'s namespace, the way the DaemonSet runs it (host
/// network, the node's CNI directories), with `args` appended; returns its process.
pub fn start_agent(c: &Cluster, node: &str, args: &[&str]) -> Result<ProcId> {
    let conf_dir = c.cni_conf_dir(node).display().to_string();
    let data_dir = c.cni_state_dir(node).join("networks").display().to_string();
    // Each node's BIRD in the node's own directory: the nodes share this machine's /run.
    let bird_dir = c.host_dir(node).join("bird").display().to_string();
    let base = [
        "--node-name",
        node,
        "--cni-conf-dir",
        &conf_dir,
        "--cni-data-dir",
        &data_dir,
        "--bird-dir",
        &bird_dir,
    ];
    let bin = causeway_binary(AGENT)?;
    let all: Vec<String> = base.iter().chain(args).map(|s| s.to_string()).collect();
    let kubeconfig = agent_kubeconfig(c, node)?;
    // `CAUSEWAY_E2E_AGENT_LOG=causeway_node_agent=debug` makes the agents' logs say more.
    let log = std::env::var("CAUSEWAY_E2E_AGENT_LOG").unwrap_or_else(|_| "info".into());
    c.spawn(
        node,
        &format!("agent-{node}"),
        &bin.display().to_string(),
        &all,
        &[("RUST_LOG", &log), ("KUBECONFIG", &kubeconfig)],
    )
}

/// Starts `causeway-node-agent client` (OverlayGateway ClientJoin) in the non-node `host`'s
/// namespace with a token of the client's own ServiceAccount
/// ([`gateway_client_kubeconfig`]); returns its process.
pub fn start_gateway_client(
    c: &Cluster,
    host: &str,
    gateway: &str,
    name: &str,
    args: &[&str],
) -> Result<ProcId> {
    let base = [
        "client",
        "--gateway",
        gateway,
        "--name",
        name,
        "--namespace",
        NAMESPACE,
    ];
    let kubeconfig = gateway_client_kubeconfig(c, gateway, name)?;
    spawn(
        c,
        host,
        AGENT,
        &format!("client-{host}"),
        &base,
        args,
        &kubeconfig,
    )
}

/// Runs the workspace binary `binary` in `host`'s namespace as the service account of the
/// same name.
fn start(
    c: &Cluster,
    host: &str,
    binary: &str,
    role: &str,
    base: &[&str],
    args: &[&str],
) -> Result<ProcId> {
    let kubeconfig = service_account_kubeconfig(c, binary)?;
    spawn(c, host, binary, role, base, args, &kubeconfig)
}

/// Runs the workspace binary `binary` in `host`'s namespace with `kubeconfig`.
fn spawn(
    c: &Cluster,
    host: &str,
    binary: &str,
    role: &str,
    base: &[&str],
    args: &[&str],
    kubeconfig: &str,
) -> Result<ProcId> {
    let bin = causeway_binary(binary)?;
    let all: Vec<String> = base.iter().chain(args).map(|s| s.to_string()).collect();
    c.spawn(
        host,
        role,
        &bin.display().to_string(),
        &all,
        &[("RUST_LOG", "info"), ("KUBECONFIG", kubeconfig)],
    )
}

/// The NodeSubnets of `network` (label `causeway.dev/network`), as JSON objects.
pub fn node_subnets(c: &Cluster, network: &str) -> Result<Vec<Value>> {
    let out = c.kubectl(&[
        "get",
        "nodesubnets",
        "-l",
        &format!("causeway.dev/network={network}"),
        "-o",
        "json",
    ])?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}
