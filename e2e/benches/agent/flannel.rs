//! flanneld as the agent benchmark's second baseline (issue #19): the agent's N − 1 peers
//! again, as Node objects carrying flannel's annotations and a `spec.podCIDR`, and flanneld
//! (VXLAN backend, Kubernetes subnet manager) in a node namespace of its own on the same
//! underlay and API server, timed and measured the way `agent.rs` times the agent. Runs after
//! the agent's measurements at the same N, in the same cluster; the Causeway rows do not change.
//!
//! flanneld is flannel v0.28.10 built by `e2e/scripts/build-flannel.sh` (cached under
//! /var/cache/causeway; a benchmark baseline only, never shipped: docs/dependencies.md).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use causeway_crds::vtep::vtep_mac;
use causeway_e2e::Cluster;
use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

use super::{
    CHANGE_TIMEOUT, CREATE_CONCURRENCY, Options, POD_CIDR, PROGRAMMED_TIMEOUT, RouteMonitor, Usage,
    VNI, member, usage,
};

/// flanneld's node: a second node namespace of the bench's cluster, on the agent's underlay.
pub const NODE: &str = "node-f";
pub const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 12);
/// flanneld's role in the cluster's process list and log directory.
pub const ROLE: &str = "flanneld";
/// flannel's VXLAN device for VNI 1 (`flannel.<VNI>`).
const DEVICE: &str = "flannel.1";
const ANNOTATIONS: &str = "flannel.alpha.coreos.com";
/// flannel's kube subnet manager buffers node events in a channel of this depth (the
/// `EVENT_QUEUE_DEPTH` environment variable, `pkg/subnet/kube/kube.go`); the shipped 5,000
/// overflows into its slow retry path once a start lists 5,000 nodes or more.
const EVENT_QUEUE_DEPTH: &str = "100000";
/// How often the start-up wait counts flanneld's routes.
const POLL: Duration = Duration::from_millis(50);

/// What flanneld achieved at one size.
#[derive(Debug, Default)]
pub struct FlannelResult {
    /// `flanneld --version`.
    pub version: String,
    /// Creating the N − 1 peer Nodes (setup, untimed for flanneld).
    pub create_nodes: Duration,
    /// Spawn → all N − 1 routes via `flannel.1` in the kernel.
    pub programmed: Duration,
    pub at_programmed: Usage,
    /// Per change: Node created → its route in the kernel; Node deleted → its route gone.
    pub adds: Vec<Duration>,
    pub deletes: Vec<Duration>,
    /// Per change: how long the create and delete requests took (until answered).
    pub add_requests: Vec<Duration>,
    pub delete_requests: Vec<Duration>,
    /// After the changes and the same settle time as the agent.
    pub after: Usage,
}

/// The name of peer `i`'s Node (not the agent's `peer-NNNNN`: the two sets never meet).
fn peer_name(i: usize) -> String {
    format!("fpeer-{i:05}")
}

/// Peer `i` as flanneld on that node would have annotated its Node, with the /24 and node
/// address of the agent's member `i`.
fn peer_node(i: usize) -> Result<Node> {
    let m = member(i)?;
    let name = peer_name(i);
    let backend = json!({"VNI": VNI, "VtepMAC": vtep_mac(&name).to_string()}).to_string();
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                format!("{ANNOTATIONS}/backend-type"): "vxlan",
                format!("{ANNOTATIONS}/backend-data"): backend,
                format!("{ANNOTATIONS}/public-ip"): m.address.to_string(),
                format!("{ANNOTATIONS}/kube-subnet-manager"): "true",
            },
        },
        "spec": {"podCIDR": m.cidr.to_string(), "podCIDRs": [m.cidr.to_string()]},
    });
    serde_json::from_value(node).with_context(|| format!("building Node {}", peer_name(i)))
}

async fn create_nodes(api: &Api<Node>, range: std::ops::Range<usize>) -> Result<()> {
    futures::stream::iter(range)
        .map(|i| {
            let api = api.clone();
            async move {
                let node = peer_node(i)?;
                api.create(&PostParams::default(), &node)
                    .await
                    .with_context(|| format!("creating Node {}", peer_name(i)))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// Routes via flannel's device in namespace `ns` (0 while the device does not exist yet).
fn route_count(ns: &str) -> Result<usize> {
    causeway_e2e::cmd::ensure_not_shutting_down()?;
    let out = Command::new("ip")
        .args(["-n", ns, "-4", "route", "show", "dev", DEVICE])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running ip route show")?;
    if !out.status.success() {
        return Ok(0);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" via "))
        .count())
}

/// (routes via `flannel.1`, its permanent neighbours, its FDB entries with a remote `dst`).
fn counts(ns: &str) -> Result<(usize, usize, usize)> {
    let json = |program: &str, args: &[&str]| -> Result<Vec<Value>> {
        let text = causeway_e2e::cmd::run(Command::new(program).args(["-n", ns, "-j"]).args(args))?;
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        match serde_json::from_str(&text)? {
            Value::Array(items) => Ok(items),
            other => bail!("expected a JSON array from {program} {args:?}, got {other}"),
        }
    };
    let routes = json("ip", &["-4", "route", "show", "dev", DEVICE])?
        .iter()
        .filter(|r| r.get("gateway").is_some())
        .count();
    let neighbours = json(
        "ip",
        &["-4", "neigh", "show", "dev", DEVICE, "nud", "permanent"],
    )?
    .len();
    let fdb = json("bridge", &["fdb", "show", "dev", DEVICE])?
        .iter()
        .filter(|e| e.get("dst").is_some())
        .count();
    Ok((routes, neighbours, fdb))
}

fn has_route(ns: &str, cidr: Ipv4Net) -> Result<bool> {
    let out = causeway_e2e::cmd::run(Command::new("ip").args([
        "-n",
        ns,
        "-4",
        "route",
        "show",
        "exact",
        &cidr.to_string(),
        "dev",
        DEVICE,
    ]))?;
    Ok(!out.trim().is_empty())
}

/// Waits until namespace `ns` holds `want` routes, neighbours and FDB entries of flannel's
/// (the route is the last of the three flannel adds and the last it deletes, so a short grace
/// suffices).
async fn expect_counts(ns: &str, want: usize, when: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = tokio::task::block_in_place(|| counts(ns))?;
        if found == (want, want, want) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{when}: flanneld's node holds (routes, neighbours, FDB entries) = {found:?}, want {want} each"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// flanneld at size `n`: N − 1 peer Nodes, a cold start timed to all routes in the kernel, the
/// same peer changes as the agent's, its memory and CPU time; stopped by its pid at the end (on
/// failure the cluster's tear-down stops it and removes its namespace).
pub async fn run(c: &Cluster, bin: &Path, n: usize, opts: &Options) -> Result<FlannelResult> {
    let ns = c.ns(NODE);
    let dir = c.host_dir(NODE);
    let conf = dir.join("etc/kube-flannel/net-conf.json");
    let subnet_file = dir.join("run/flannel/subnet.env");
    for d in [conf.parent(), subnet_file.parent()].into_iter().flatten() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // flanneld has its own namespace, so its VNI 1 / port 8472 cannot meet the agent's device.
    let net_conf = json!({"Network": POD_CIDR, "Backend": {"Type": "vxlan", "VNI": VNI}});
    std::fs::write(&conf, net_conf.to_string())
        .with_context(|| format!("writing {}", conf.display()))?;
    // flanneld prints its version on stderr.
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let version = [out.stdout, out.stderr]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "(unknown version)".into());
    let mut result = FlannelResult {
        version,
        ..FlannelResult::default()
    };

    let api: Api<Node> = Api::all(c.client().await?);
    // A kubelet registers its Node with annotations; flanneld v0.28.10 writes its own into
    // the map it finds and panics on a Node that has none (kube.go, AcquireLease).
    let own = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "annotations": {
            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
        "spec": {"podCIDR": member(0)?.cidr.to_string(), "podCIDRs": [member(0)?.cidr.to_string()]}});
    api.create(&PostParams::default(), &serde_json::from_value(own)?)
        .await
        .context("creating flanneld's own Node")?;
    let t = Instant::now();
    create_nodes(&api, 1..n).await?;
    result.create_nodes = t.elapsed();
    eprintln!(
        "[bench] N = {n}: {} flannel peer Nodes created in {:.1} s",
        n - 1,
        result.create_nodes.as_secs_f64()
    );
    tokio::time::sleep(opts.quiet).await;

    // As the DaemonSet runs it, minus what this namespace needs not: no masquerading and no
    // FORWARD rules (iptables work off the route path), files in the node's own directory.
    let args: Vec<String> = vec![
        "--kube-subnet-mgr".into(),
        format!("--kubeconfig-file={}", c.kubeconfig_underlay.display()),
        "--iface=eth0".into(),
        "--ip-masq=false".into(),
        "--iptables-forward-rules=false".into(),
        format!("--net-config-path={}", conf.display()),
        format!("--subnet-file={}", subnet_file.display()),
    ];
    let want = n - 1;
    let started = Instant::now();
    let pid = tokio::task::block_in_place(|| {
        c.spawn(
            NODE,
            ROLE,
            &bin.display().to_string(),
            &args,
            &[
                ("NODE_NAME", NODE),
                ("EVENT_QUEUE_DEPTH", EVENT_QUEUE_DEPTH),
            ],
        )
    })?;
    loop {
        let routes = tokio::task::block_in_place(|| route_count(&ns))?;
        if routes >= want {
            ensure!(
                routes == want,
                "flanneld programmed {routes} routes, want {want}"
            );
            break;
        }
        ensure!(
            pid.alive(),
            "flanneld exited with {routes} of {want} routes programmed"
        );
        ensure!(
            started.elapsed() < PROGRAMMED_TIMEOUT,
            "flanneld programmed {routes} of {want} routes in {PROGRAMMED_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    result.programmed = started.elapsed();
    result.at_programmed = usage(pid.pid)?;
    expect_counts(&ns, want, "at start-up").await?;
    eprintln!(
        "[bench] N = {n}: flanneld programmed {want} routes in {:.2} s",
        result.programmed.as_secs_f64()
    );

    let monitor = tokio::task::block_in_place(|| RouteMonitor::start(&ns))?;
    for k in 0..opts.changes {
        tokio::time::sleep(opts.quiet).await;
        let added = n + k;
        let cidr = member(added)?.cidr;
        let t = Instant::now();
        create_nodes(&api, added..added + 1).await?;
        result.add_requests.push(t.elapsed());
        let wanted = [(format!("route to {cidr}"), format!("{cidr} "))];
        let seen = tokio::task::block_in_place(|| monitor.wait_all(&wanted, CHANGE_TIMEOUT))?;
        result.adds.push(seen[0].saturating_duration_since(t));
        ensure!(
            tokio::task::block_in_place(|| has_route(&ns, cidr))?,
            "ip monitor showed flanneld's route to {cidr}, but `ip route show` does not list it"
        );

        tokio::time::sleep(opts.quiet).await;
        let deleted = 1 + k;
        let cidr = member(deleted)?.cidr;
        let wanted = [(
            format!("removal of the route to {cidr}"),
            format!("Deleted {cidr} "),
        )];
        let t = Instant::now();
        api.delete(&peer_name(deleted), &DeleteParams::default())
            .await
            .with_context(|| format!("deleting Node {}", peer_name(deleted)))?;
        result.delete_requests.push(t.elapsed());
        let seen = tokio::task::block_in_place(|| monitor.wait_all(&wanted, CHANGE_TIMEOUT))?;
        result.deletes.push(seen[0].saturating_duration_since(t));
        ensure!(
            !tokio::task::block_in_place(|| has_route(&ns, cidr))?,
            "ip monitor showed flanneld's route to {cidr} deleted, but `ip route show` still lists it"
        );
    }
    drop(monitor);

    tokio::time::sleep(opts.settle).await;
    ensure!(pid.alive(), "flanneld exited after the peer changes");
    result.after = usage(pid.pid)?;
    expect_counts(&ns, want, "after the peer changes").await?;
    tokio::task::block_in_place(|| c.stop(&pid));
    Ok(result)
}
