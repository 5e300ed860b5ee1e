//! What the suites that run Causeway itself share (`overlay`, `gateways`, `routed`): a
//! [`Suite`] holding one test binary's agents and pods, the one-time bring-up (CRDs and the
//! chart's RBAC, the operator, an agent per node, a network with two pods per node), and the
//! small probes their tests read the cluster with: NodeSubnets and their conditions, our
//! routes, labels, OverlayGateways and ClientJoin clients.
//!
//! Tests in one binary run one at a time against one cluster ([`crate::testing`]), so a
//! [`Suite`] is a `static` of its test file and its state carries from one test to the next.

use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::deploy;
use crate::pods::{self, Pod};
use crate::proc::ProcId;
use crate::topology::Host;

/// The nodes of `presets::realistic`: node-a..c on lan-a, node-d behind router r1.
pub const NODES: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];

/// The Overlay example network the overlay and gateways suites run on (range 10.247.0.0/16).
pub const OVERLAY_NETWORK: &str = "overlay";
/// Its manifest, relative to the workspace root.
pub const OVERLAY_EXAMPLE: &str = "docs/examples/podnetwork-overlay.yaml";

/// The ClientJoin client's overlay address in the suites' `join` gateway.
pub const CLIENT_OVERLAY: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 100);

/// Locks `m`, carrying on past a test that panicked while holding it (the next test reports
/// what state it finds).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One suite's Causeway: the nodes it runs agents on, the agents' timings, and what its tests
/// started (agents, in start order) and attached (pods).
pub struct Suite {
    pub nodes: &'static [&'static str],
    /// The agents' `--resync-seconds` (and the ClientJoin clients').
    pub resync_seconds: u64,
    /// The agents' heartbeat Lease duration (40 s in production; short here, so a stopped
    /// agent is noticed in seconds).
    pub lease_seconds: u64,
    agents: Mutex<Vec<(String, ProcId)>>,
    pods: Mutex<Vec<Pod>>,
    installed: Mutex<bool>,
    overlay_up: Mutex<bool>,
}

impl Suite {
    pub const fn new(
        nodes: &'static [&'static str],
        resync_seconds: u64,
        lease_seconds: u64,
    ) -> Self {
        Self {
            nodes,
            resync_seconds,
            lease_seconds,
            agents: Mutex::new(Vec::new()),
            pods: Mutex::new(Vec::new()),
            installed: Mutex::new(false),
            overlay_up: Mutex::new(false),
        }
    }

    /// Starts an agent on `node` with the suite's flags (status refreshed every second) and
    /// remembers it as `node`'s current agent.
    pub fn start_agent(&self, c: &Cluster, node: &str) -> Result<()> {
        let resync = self.resync_seconds.to_string();
        let lease = self.lease_seconds.to_string();
        let id = deploy::start_agent(
            c,
            node,
            &[
                "--resync-seconds",
                &resync,
                "--lease-duration-seconds",
                &lease,
                "--status-refresh-seconds",
                "1",
            ],
        )?;
        lock(&self.agents).push((node.to_string(), id));
        Ok(())
    }

    /// The most recently started agent of `node`.
    pub fn agent_of(&self, node: &str) -> Result<ProcId> {
        lock(&self.agents)
            .iter()
            .rev()
            .find(|(n, _)| n == node)
            .map(|(_, p)| p.clone())
            .with_context(|| format!("no agent on {node}"))
    }

    /// Stops `node`'s agent (SIGTERM, by pid) and starts a new one.
    pub fn restart_agent(&self, c: &Cluster, node: &str) -> Result<()> {
        c.stop(&self.agent_of(node)?);
        self.start_agent(c, node)
    }

    /// Registers every Node again, as kubelets do after `kubectl delete node`. A deleted
    /// Node took its agent's credentials with it (the token is bound to the Node, as a pod's
    /// is to its node), so each of `restarted`'s agents gets a new token and is restarted, as
    /// the DaemonSet replaces a pod whose node was deleted.
    pub fn register_nodes_again(&self, c: &Cluster, restarted: &[&str]) -> Result<()> {
        c.register_nodes()?;
        for node in restarted {
            deploy::renew_agent_token(c, node)?;
            self.restart_agent(c, node)?;
        }
        Ok(())
    }

    /// Starts the ClientJoin client `name` of gateway `gateway` on the non-node `host`, with
    /// the agents' resync interval and Lease.
    pub fn start_client(
        &self,
        c: &Cluster,
        host: &str,
        gateway: &str,
        name: &str,
    ) -> Result<ProcId> {
        deploy::start_gateway_client(
            c,
            host,
            gateway,
            name,
            &[
                "--resync-seconds",
                &self.resync_seconds.to_string(),
                "--lease-duration-seconds",
                &self.lease_seconds.to_string(),
            ],
        )
    }

    /// CRDs, the chart's RBAC, the operator (on node-a) and an agent per node; once per run.
    pub fn control_plane(&self, c: &Cluster) -> Result<()> {
        let mut done = lock(&self.installed);
        if *done {
            return Ok(());
        }
        deploy::install(c)?;
        deploy::start_operator(c, "node-a", &[])?;
        for node in self.nodes {
            self.start_agent(c, node)?;
        }
        *done = true;
        Ok(())
    }

    /// Applies the PodNetwork `manifest` (YAML or JSON) named `network`, waits for Ready, and
    /// attaches two pods (`<prefix>0`, `<prefix>1`) on each of `nodes`: the suite's pods from
    /// now on (those of an earlier network are forgotten, not detached).
    pub fn bring_up(
        &self,
        c: &Cluster,
        manifest: &str,
        network: &str,
        nodes: &[&str],
        prefix: &str,
    ) -> Result<Vec<Pod>> {
        self.control_plane(c)?;
        c.kubectl_stdin(&["apply", "-f", "-"], manifest)?;
        wait_network_ready(c, network, 60)?;
        let mut pods = lock(&self.pods);
        pods.clear();
        for node in nodes {
            for i in 0..2 {
                pods.push(pods::add(c, node, &format!("{prefix}{i}"))?);
            }
        }
        Ok(pods.clone())
    }

    /// The overlay and gateways suites' starting point, once per run: the control plane, the
    /// Overlay example network Ready, and two pods (`p0`, `p1`) per node. Later calls change
    /// nothing: a test sees what the tests before it left.
    pub fn overlay(&self, c: &Cluster) -> Result<()> {
        let mut done = lock(&self.overlay_up);
        if *done {
            return Ok(());
        }
        let nodes = self.nodes.to_vec();
        self.bring_up(c, &overlay_example()?, OVERLAY_NETWORK, &nodes, "p")?;
        *done = true;
        Ok(())
    }

    /// The suite's pods now.
    pub fn pods(&self) -> Vec<Pod> {
        lock(&self.pods).clone()
    }

    /// The suite's pods, forgotten by the suite (the caller detaches them, or not).
    pub fn take_pods(&self) -> Vec<Pod> {
        std::mem::take(&mut *lock(&self.pods))
    }

    /// Detaches the suite's pods on `node` (CNI DEL, as the kubelet draining it would) and
    /// forgets them.
    pub fn detach_pods_on(&self, c: &Cluster, node: &str) -> Result<()> {
        let mine: Vec<Pod> = self.pods().into_iter().filter(|p| p.node == node).collect();
        for p in &mine {
            pods::del(c, p)?;
        }
        lock(&self.pods).retain(|p| p.node != node);
        Ok(())
    }
}

/// The text of [`OVERLAY_EXAMPLE`].
pub fn overlay_example() -> Result<String> {
    let path = crate::controlplane::workspace_root().join(OVERLAY_EXAMPLE);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// PodNetwork `name` over `cidr` (a /24 per node) in `mode`, with the fields of `spec`
/// (an object) added to its spec.
#[must_use]
pub fn pod_network(name: &str, cidr: &str, mode: &str, spec: Value) -> Value {
    let mut pn = serde_json::json!({
        "apiVersion": "causeway.dev/v1alpha1",
        "kind": "PodNetwork",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "nodeSubnetPrefixLength": 24, "mode": mode},
    });
    if let (Some(all), Value::Object(more)) = (pn["spec"].as_object_mut(), spec) {
        all.extend(more);
    }
    pn
}

/// `kubectl wait --for=condition=Ready` on PodNetwork `network`.
pub fn wait_network_ready(c: &Cluster, network: &str, timeout_seconds: u64) -> Result<()> {
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("--timeout={timeout_seconds}s"),
        &format!("podnetwork/{network}"),
    ])?;
    Ok(())
}

/// A merge patch of PodNetwork `network`.
pub fn patch_network(c: &Cluster, network: &str, patch: &str) -> Result<()> {
    c.kubectl(&["patch", "podnetwork", network, "--type=merge", "-p", patch])
        .map(drop)
}

/// PodNetwork `network`'s Ready condition: (status, reason, message); an error while it has
/// none.
pub fn network_ready(c: &Cluster, network: &str) -> Result<(String, String, String)> {
    let out = c.kubectl(&["get", "podnetwork", network, "-o", "json"])?;
    let pn: Value = serde_json::from_str(&out)?;
    let Some(ready) = pn["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
    else {
        bail!("no Ready condition yet");
    };
    let text = |k: &str| ready[k].as_str().unwrap_or_default().to_owned();
    Ok((text("status"), text("reason"), text("message")))
}

/// `node`'s NodeSubnet range in `network`.
pub fn subnet_of(c: &Cluster, network: &str, node: &str) -> Result<String> {
    deploy::node_subnets(c, network)?
        .iter()
        .find(|s| s["spec"]["nodeName"] == node)
        .and_then(|s| s["spec"]["cidr"].as_str().map(str::to_string))
        .with_context(|| format!("{node} has no NodeSubnet"))
}

/// `node`'s Programmed condition in `network`: (status, reason, message).
pub fn programmed(c: &Cluster, network: &str, node: &str) -> Result<(String, String, String)> {
    let subnets = deploy::node_subnets(c, network)?;
    let st = subnets
        .iter()
        .find(|s| s["spec"]["nodeName"] == node)
        .with_context(|| format!("no NodeSubnet for {node}"))?;
    let cond = st["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Programmed"))
        .with_context(|| format!("{node}: no Programmed condition"))?;
    let text = |k: &str| cond[k].as_str().unwrap_or_default().to_string();
    Ok((text("status"), text("reason"), text("message")))
}

/// Our routes on `node` (`ip route show proto 249`), one line each, trimmed and without the
/// nexthop object's id ([`without_nhid`]).
pub fn our_routes(c: &Cluster, node: &str) -> Result<Vec<String>> {
    let out = c.exec(node, "ip", &["route", "show", "proto", "249"])?;
    Ok(out.lines().map(without_nhid).collect())
}

/// An `ip route` line without its `nhid ID` (the agent's IPv4 routes via a gateway go
/// through a nexthop object of their own, whose id says nothing about where the route goes:
/// `10.245.1.0/24 nhid 4177526785 via 192.168.50.12 dev eth0` reads as `10.245.1.0/24 via
/// 192.168.50.12 dev eth0`), trimmed.
pub fn without_nhid(line: &str) -> String {
    let mut words = line.split_whitespace().peekable();
    let mut out: Vec<&str> = Vec::new();
    while let Some(word) = words.next() {
        if word == "nhid" {
            words.next();
            continue;
        }
        out.push(word);
    }
    out.join(" ")
}

/// Our nexthop objects on `node` (`ip nexthop show proto 249`), one line each, trimmed: one
/// under each IPv4 route of ours via a gateway.
pub fn our_nexthops(c: &Cluster, node: &str) -> Result<Vec<String>> {
    let out = c.exec(node, "ip", &["nexthop", "show", "proto", "249"])?;
    Ok(out
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The first of `pods` on `node`.
pub fn pod_on<'a>(pods: &'a [Pod], node: &str) -> Result<&'a Pod> {
    pods.iter()
        .find(|p| p.node == node)
        .with_context(|| format!("no pod on {node}"))
}

/// `node`'s underlay address in the topology.
pub fn node_address(c: &Cluster, node: &str) -> Result<Ipv4Addr> {
    c.topology
        .node(node)
        .map(|h| h.address)
        .with_context(|| format!("no node {node}"))
}

/// Sets (`key=value`) or removes (`key-`) a label on `node`.
pub fn label(c: &Cluster, node: &str, change: &str) -> Result<()> {
    c.kubectl(&["label", "node", node, change, "--overwrite"])?;
    Ok(())
}

/// The topology's (first) non-node client.
pub fn the_client(c: &Cluster) -> Result<Host> {
    c.topology
        .clients
        .first()
        .cloned()
        .context("the topology has a client")
}

/// Creates or updates the OverlayGateway `name` with `spec`.
pub fn apply_gateway(c: &Cluster, name: &str, spec: Value) -> Result<()> {
    let gateway = serde_json::json!({
        "apiVersion": "causeway.dev/v1alpha1",
        "kind": "OverlayGateway",
        "metadata": {"name": name},
        "spec": spec,
    });
    c.kubectl_stdin(&["apply", "-f", "-"], &gateway.to_string())?;
    Ok(())
}

/// `kubectl wait --for=condition=Ready` on OverlayGateway `name`, for up to 30 s.
pub fn wait_gateway_ready(c: &Cluster, name: &str) -> Result<()> {
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=30s",
        &format!("overlaygateway/{name}"),
    ])?;
    Ok(())
}

/// OverlayGateway `name` as JSON.
pub fn gateway_json(c: &Cluster, name: &str) -> Result<Value> {
    let out = c.kubectl(&["get", "overlaygateway", name, "-o", "json"])?;
    Ok(serde_json::from_str(&out)?)
}

/// Ends a ClientJoin test: stops the client agent `agent` on `host` (its tunnel stays, as a
/// client machine keeps working across restarts, so it is removed by hand) and deletes
/// `gateway` (best effort: cleanup).
pub fn stop_client(c: &Cluster, agent: &ProcId, host: &str, gateway: &str) {
    c.stop(agent);
    let _ = c.exec(host, "ip", &["link", "del", "cw-vx1"]);
    let _ = c.kubectl(&["delete", "overlaygateway", gateway, "--wait=true"]);
}

/// `status.clientRoutes` of OverlayGateway `name` once it is Ready: one `ip` command each.
pub fn client_routes(c: &Cluster, name: &str) -> Result<Vec<String>> {
    wait_gateway_ready(c, name)?;
    let gw = gateway_json(c, name)?;
    Ok(gw["status"]["clientRoutes"]
        .as_array()
        .context("no clientRoutes")?
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect())
}

/// The ClientJoin gateway `join` of the Overlay example network with `clients` as
/// (name, address, overlay address), created or replaced.
pub fn join_clients(c: &Cluster, clients: &[(&str, &str, Ipv4Addr)]) -> Result<()> {
    let list: Vec<Value> = clients
        .iter()
        .map(|(name, address, overlay)| {
            serde_json::json!({"name": name, "address": address, "overlayAddress": overlay.to_string()})
        })
        .collect();
    apply_gateway(
        c,
        "join",
        serde_json::json!({"network": OVERLAY_NETWORK, "strategy": "ClientJoin", "clientJoin": {"clients": list}}),
    )
}

/// Resumes a SIGSTOPped process when dropped, so a failing check never leaves it frozen.
pub struct Resume(pub ProcId);

/// Freezes the cluster's kube-apiserver (SIGSTOP) until the returned guard is dropped.
///
/// # Errors
/// The cluster has no API server process, or it cannot be signalled.
pub fn freeze_apiserver(c: &Cluster) -> Result<Resume> {
    let apiserver = c
        .process("kube-apiserver")
        .context("the cluster has no kube-apiserver process")?;
    ensure!(
        apiserver.signal(nix::sys::signal::Signal::SIGSTOP),
        "cannot freeze kube-apiserver"
    );
    Ok(Resume(apiserver))
}

impl Drop for Resume {
    fn drop(&mut self) {
        self.0.signal(nix::sys::signal::Signal::SIGCONT);
    }
}

/// What `kubectl causeway ...` did: its exit code and output.
#[derive(Debug)]
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Fails unless the output holds every one of `wants`, naming the first one missing.
    ///
    /// # Errors
    /// One of `wants` is not in the output.
    pub fn expect_all<S: AsRef<str>>(&self, wants: &[S]) -> Result<()> {
        for want in wants {
            ensure!(
                self.stdout.contains(want.as_ref()),
                "`kubectl causeway` printed no {:?}:\n{}",
                want.as_ref(),
                self.stdout
            );
        }
        Ok(())
    }
}

/// Runs `kubectl causeway ARGS` as users do: kubectl finds the plugin `kubectl-causeway` that
/// this build made on the PATH, with the cluster's admin kubeconfig. Never fails on the
/// plugin's own exit code (1 means "a problem found"): the caller checks [`CliRun::code`].
///
/// # Errors
/// The plugin is not built, or kubectl cannot be started.
pub fn kubectl_causeway(c: &Cluster, args: &[&str]) -> Result<CliRun> {
    let plugin = crate::controlplane::causeway_binary("kubectl-causeway")?;
    let dir = plugin.parent().context("the plugin has no directory")?;
    let path = std::env::var("PATH").unwrap_or_default();
    let out = c
        .kubectl_cmd()
        .arg("causeway")
        .args(args)
        .env("PATH", format!("{}:{path}", dir.display()))
        .output()
        .context("running kubectl causeway")?;
    let run = CliRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    ensure!(
        run.code == 0 || run.code == 1,
        "kubectl causeway {args:?} failed ({}): {}{}",
        run.code,
        run.stderr,
        run.stdout
    );
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::without_nhid;

    #[test]
    fn a_route_line_reads_the_same_with_or_without_its_nexthop_object() {
        assert_eq!(
            without_nhid("10.245.1.0/24 nhid 4177526785 via 192.168.50.12 dev eth0 "),
            "10.245.1.0/24 via 192.168.50.12 dev eth0"
        );
        assert_eq!(
            without_nhid("10.247.3.0/24 via 10.247.3.0 dev cw-vx1 onlink"),
            "10.247.3.0/24 via 10.247.3.0 dev cw-vx1 onlink"
        );
        assert_eq!(without_nhid("  "), "");
    }
}
