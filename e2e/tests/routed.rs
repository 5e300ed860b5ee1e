//! Flat and Routed modes end to end (issue #6) on the reference topology: node-a..c on lan-a
//! (zone rack-a), node-d on lan-b (zone rack-b) behind router r1, and a non-node client on
//! lan-a. The operator and an agent per node run with the chart's RBAC; pods are attached with
//! the CNI config the agents wrote; every check is real traffic or the kernel's own tables.
//!
//! The networks run one after another (each is deleted, and checked gone, before the next):
//! Flat on rack-a, then Routed with static routes on rack-a.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use causeway_e2e::pods::{self, Pod};
use causeway_e2e::topology::{Topology, presets};
use causeway_e2e::traffic::{self, wait_for};
use causeway_e2e::{Cluster, demo, deploy, testing};
use serde_json::Value;

const RACK_A: [&str; 3] = ["node-a", "node-b", "node-c"];
const ALL: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];
const ZONE: &str = "topology.kubernetes.io/zone";

fn main() -> ExitCode {
    testing::run_suite(
        "routed",
        racks,
        vec![
            testing::test(
                "flat_pods_reach_each_other_and_nodes_with_no_per_peer_routes",
                flat_connectivity,
            ),
            testing::test("flat_nodes_answer_arp_only_for_their_own_pods", flat_arp),
            testing::test(
                "flat_a_non_node_host_with_an_on_link_route_reaches_pods",
                flat_client,
            ),
            testing::test(
                "flat_across_two_segments_is_reported_and_recovers",
                flat_two_segments,
            ),
            testing::test(
                "deleting_the_flat_network_removes_its_route_and_proxy_arp",
                flat_deleted,
            ),
            testing::test(
                "routed_static_routes_each_peer_via_its_address_and_pods_reach_each_other",
                routed_static,
            ),
        ],
    )
}

/// The reference topology with zone labels: rack-a is lan-a, rack-b is lan-b.
fn racks() -> Topology {
    let mut t = presets::two_segments();
    for node in &mut t.nodes {
        let zone = if node.segment == "lan-a" {
            "rack-a"
        } else {
            "rack-b"
        };
        node.labels.insert(ZONE.into(), zone.into());
    }
    t
}

static PODS: Mutex<Vec<Pod>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// CRDs, RBAC, the operator and an agent per node (once per run).
fn control_plane(c: &Cluster) -> Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = lock(&DONE);
    if *done {
        return Ok(());
    }
    demo::install_crds(c)?;
    deploy::install_operator_rbac(c)?;
    deploy::install_agent_rbac(c)?;
    deploy::start_operator(c, "node-a", &[])?;
    for node in ALL {
        deploy::start_agent(
            c,
            node,
            &["--resync-seconds", "3", "--status-refresh-seconds", "1"],
        )?;
    }
    *done = true;
    Ok(())
}

/// A PodNetwork over the rack-a nodes.
fn network(name: &str, cidr: &str, mode: &str) -> Value {
    serde_json::json!({
        "apiVersion": "causeway.dev/v1alpha1",
        "kind": "PodNetwork",
        "metadata": {"name": name},
        "spec": {
            "cidr": cidr,
            "nodeSubnetPrefixLength": 24,
            "mode": mode,
            "nodeSelector": {"matchLabels": {ZONE: "rack-a"}},
        },
    })
}

/// Applies `pn`, waits for Ready, and attaches two pods on each rack-a node.
fn bring_up(c: &Cluster, pn: &Value) -> Result<Vec<Pod>> {
    control_plane(c)?;
    let name = pn["metadata"]["name"].as_str().context("name")?;
    c.kubectl_stdin(&["apply", "-f", "-"], &pn.to_string())?;
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        &format!("podnetwork/{name}"),
    ])?;
    let mut pods = lock(&PODS);
    pods.clear();
    for node in RACK_A {
        for i in 0..2 {
            pods.push(pods::add(c, node, &format!("{name}{i}"))?);
        }
    }
    Ok(pods.clone())
}

/// The pods of the current network, bringing the Flat one up if none is.
fn flat_pods(c: &Cluster) -> Result<Vec<Pod>> {
    let pods = lock(&PODS).clone();
    if pods.first().is_some_and(|p| p.name.starts_with("flat")) {
        return Ok(pods);
    }
    bring_up(c, &network("flat", "10.244.0.0/16", "Flat"))
}

/// Detaches the pods, deletes the network and waits until no node holds anything of it.
fn tear_down(c: &Cluster, name: &str) -> Result<()> {
    let pods: Vec<Pod> = lock(&PODS).drain(..).collect();
    for pod in &pods {
        pods::del(c, pod)?;
    }
    c.kubectl(&["delete", "podnetwork", name, "--wait=true", "--timeout=60s"])?;
    for node in ALL {
        wait_for(&format!("{node} is clean"), Duration::from_secs(15), || {
            ensure!(our_routes(c, node)?.is_empty(), "routes left");
            ensure!(proxy_arp(c, node)? == "0", "proxy_arp still on on {node}");
            let links = c.exec(node, "ip", &["-brief", "link", "show"])?;
            ensure!(
                !links.lines().any(|l| l.starts_with("cw-")),
                "links: {links}"
            );
            Ok(())
        })?;
    }
    Ok(())
}

/// Our routes on `node` (`ip route show proto 249`), one line each, trimmed.
fn our_routes(c: &Cluster, node: &str) -> Result<Vec<String>> {
    let out = c.exec(node, "ip", &["route", "show", "proto", "249"])?;
    Ok(out.lines().map(|l| l.trim().to_string()).collect())
}

fn proxy_arp(c: &Cluster, node: &str) -> Result<String> {
    Ok(
        c.exec(node, "cat", &["/proc/sys/net/ipv4/conf/eth0/proxy_arp"])?
            .trim()
            .to_string(),
    )
}

fn address(c: &Cluster, node: &str) -> Result<Ipv4Addr> {
    c.topology
        .node(node)
        .map(|h| h.address)
        .with_context(|| format!("no node {node}"))
}

fn mac(c: &Cluster, node: &str) -> Result<String> {
    let out = c.exec(node, "ip", &["-j", "link", "show", "eth0"])?;
    let links: Value = serde_json::from_str(&out)?;
    links[0]["address"]
        .as_str()
        .map(str::to_string)
        .context("eth0 has no address")
}

/// Every pod pings every other pod and every rack-a node; the failures, if any.
fn matrix(c: &Cluster, pods: &[Pod]) -> Result<()> {
    let mut failures = Vec::new();
    for from in pods {
        for to in pods {
            if from.netns != to.netns
                && let Err(e) = traffic::expect_ping(&from.netns, to.ip)
            {
                failures.push(format!("{} -> {}: {e:#}", from.netns, to.ip));
            }
        }
        for node in RACK_A {
            let addr = address(c, node)?;
            if let Err(e) = traffic::expect_ping(&from.netns, addr) {
                failures.push(format!("{} -> node {node}: {e:#}", from.netns));
            }
            // And the node reaches the pod (node-to-pod, both directions).
            if let Err(e) = traffic::expect_ping(&c.ns(node), from.ip) {
                failures.push(format!("node {node} -> {}: {e:#}", from.ip));
            }
        }
    }
    ensure!(failures.is_empty(), "unreachable:\n{}", failures.join("\n"));
    Ok(())
}

fn flat_connectivity(c: &Cluster) -> Result<()> {
    let pods = flat_pods(c)?;
    ensure!(pods.len() == 6, "{} pods", pods.len());
    matrix(c, &pods)?;
    for node in RACK_A {
        let routes = our_routes(c, node)?;
        ensure!(
            routes == ["10.244.0.0/16 dev eth0 scope link"],
            "{node}: expected only the on-link route for the range, got {routes:?}"
        );
        ensure!(proxy_arp(c, node)? == "1", "{node}: proxy_arp off");
    }
    // Pods get the full underlay MTU: nothing is encapsulated.
    let out = c.exec(&pods[0].node, "ip", &["-j", "link", "show", "cw-br0"])?;
    let link: Value = serde_json::from_str(&out)?;
    ensure!(link[0]["mtu"] == 1500, "bridge MTU {}", link[0]["mtu"]);
    Ok(())
}

/// The MACs that answer `arping` from `from` for `ip`, deduplicated.
fn arp_answers(c: &Cluster, from: &str, ip: Ipv4Addr) -> Result<Vec<String>> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &c.ns(from), "arping", "-c", "2", "-w", "2"])
        .args(["-I", "eth0", &ip.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Debian's `arping` prints `42 bytes from 7e:42:e6:51:8c:78 (10.244.0.2): index=0 ...`;
    // iputils' prints `Unicast reply from 10.244.0.2 [7E:42:E6:51:8C:78] ...`.
    let mut macs: Vec<String> = text
        .lines()
        .filter_map(|l| {
            if let (Some(start), Some(end)) = (l.find('['), l.find(']')) {
                return l.get(start + 1..end).map(str::to_lowercase);
            }
            let after = l.split(" from ").nth(1)?;
            let token = after.split_whitespace().next()?;
            (token.len() == 17 && token.matches(':').count() == 5).then(|| token.to_lowercase())
        })
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

fn flat_arp(c: &Cluster) -> Result<()> {
    let pods = flat_pods(c)?;
    for target in &pods {
        let owner_mac = mac(c, &target.node)?;
        for asker in RACK_A.iter().filter(|n| **n != target.node) {
            let macs = arp_answers(c, asker, target.ip)?;
            ensure!(
                macs == [owner_mac.clone()],
                "ARP for {} ({}) from {asker}: answered by {macs:?}, expected only {} ({owner_mac})",
                target.ip,
                target.node,
                target.node
            );
        }
    }
    // An address of the range no node holds, and the node's own pods asked from that node's
    // segment neighbours, get no stray answers.
    let unallocated: Ipv4Addr = "10.244.200.7".parse()?;
    let macs = arp_answers(c, "node-a", unallocated)?;
    ensure!(
        macs.is_empty(),
        "ARP for unallocated {unallocated}: answered by {macs:?}"
    );
    Ok(())
}

fn flat_client(c: &Cluster) -> Result<()> {
    let pods = flat_pods(c)?;
    let client = c.topology.clients.first().context("a client")?.clone();
    let ns = c.ns(&client.name);
    c.exec(
        &client.name,
        "ip",
        &["route", "replace", "10.244.0.0/16", "dev", "eth0"],
    )?;
    let result = (|| -> Result<()> {
        for pod in &pods {
            traffic::expect_ping(&ns, pod.ip)
                .with_context(|| format!("client -> pod on {}", pod.node))?;
        }
        traffic::tcp_check(&pods[0].netns, &ns, pods[0].ip, 7401)?;
        Ok(())
    })();
    c.exec(&client.name, "ip", &["route", "del", "10.244.0.0/16"])?;
    result
}

/// The Ready condition's (status, reason, message) of `name`.
fn ready(c: &Cluster, name: &str) -> Result<(String, String, String)> {
    let out = c.kubectl(&["get", "podnetwork", name, "-o", "json"])?;
    let pn: Value = serde_json::from_str(&out)?;
    let Some(cond) = pn["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
    else {
        bail!("no Ready condition yet");
    };
    let text = |k: &str| cond[k].as_str().unwrap_or_default().to_owned();
    Ok((text("status"), text("reason"), text("message")))
}

fn select(c: &Cluster, name: &str, zones: &[&str]) -> Result<()> {
    let patch = serde_json::json!({"spec": {"nodeSelector": {
        "matchLabels": null,
        "matchExpressions": [{"key": ZONE, "operator": "In", "values": zones}],
    }}});
    c.kubectl(&[
        "patch",
        "podnetwork",
        name,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .map(drop)
}

fn flat_two_segments(c: &Cluster) -> Result<()> {
    flat_pods(c)?;
    select(c, "flat", &["rack-a", "rack-b"])?;
    let (_, _, message) = wait_for(
        "Ready=False NodesNotOnOneSegment",
        Duration::from_secs(20),
        || {
            let (status, reason, message) = ready(c, "flat")?;
            ensure!(
                status == "False" && reason == "NodesNotOnOneSegment",
                "{status} {reason}: {message}"
            );
            Ok((status, reason, message))
        },
    )?;
    ensure!(
        message.contains("192.168.50.0/24 (node-a, node-b, node-c)")
            && message.contains("192.168.60.0/24 (node-d)"),
        "the message does not name the segments: {message}"
    );
    select(c, "flat", &["rack-a"])?;
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=30s",
        "podnetwork/flat",
    ])?;
    // node-d left the network: nothing of it remains there.
    wait_for("node-d is clean", Duration::from_secs(15), || {
        ensure!(our_routes(c, "node-d")?.is_empty(), "routes left");
        ensure!(proxy_arp(c, "node-d")? == "0", "proxy_arp on");
        Ok(())
    })
}

fn flat_deleted(c: &Cluster) -> Result<()> {
    flat_pods(c)?;
    tear_down(c, "flat")
}

fn routed_static(c: &Cluster) -> Result<()> {
    let pods = bring_up(c, &network("routed", "10.245.0.0/16", "Routed"))?;
    let subnets = deploy::node_subnets(c, "routed")?;
    let by_node: BTreeMap<String, (String, String)> = subnets
        .iter()
        .filter_map(|s| {
            Some((
                s["spec"]["nodeName"].as_str()?.to_string(),
                (
                    s["spec"]["cidr"].as_str()?.to_string(),
                    s["spec"]["nodeAddress"].as_str()?.to_string(),
                ),
            ))
        })
        .collect();
    ensure!(by_node.len() == 3, "{by_node:?}");
    for node in RACK_A {
        let mut want: Vec<String> = by_node
            .iter()
            .filter(|(peer, _)| peer.as_str() != node)
            .map(|(_, (cidr, addr))| format!("{cidr} via {addr} dev eth0"))
            .collect();
        want.sort();
        let mut got = our_routes(c, node)?;
        got.sort();
        ensure!(got == want, "{node}: routes {got:?}, expected {want:?}");
        ensure!(
            proxy_arp(c, node)? == "0",
            "{node}: proxy_arp on in Routed mode"
        );
    }
    matrix(c, &pods)?;
    tear_down(c, "routed")
}
