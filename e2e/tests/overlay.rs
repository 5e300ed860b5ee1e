//! Overlay mode end to end (issue #5): the operator and a node agent on every node of the
//! reference topology (node-a..c on lan-a, node-d behind router r1), two pods per node
//! attached through the CNI config the agents wrote, and real traffic.
//!
//! Everything runs as it would in a cluster: the operator and the agents authenticate as the
//! chart's service accounts (its RBAC, nothing more); agents run inside their node's network
//! namespace with the node's CNI directories; pods are attached by the CNI reference plugins.
//!
//! The OverlayGateway strategies run in their own suite on their own cluster
//! (`gateways.rs`); only `network_deleted` starts a ClientJoin client here, to see it drop its
//! tunnel with the network. Tests run in the order listed and some use what earlier ones
//! left: `node_deleted` removes node-d and its pods, `network_deleted` deletes the network
//! (the tests after it bring up their own).

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use causeway_e2e::pods::{self, Pod};
use causeway_e2e::suite::{
    self, CLIENT_OVERLAY, NODES, OVERLAY_NETWORK as NETWORK, Suite, join_clients, network_ready,
    node_address, our_nexthops, our_routes, patch_network, pod_on, programmed, subnet_of,
    the_client, wait_gateway_ready, wait_network_ready,
};
use causeway_e2e::topology::presets;
use causeway_e2e::traffic::{self, ContinuousPing, wait_for};
use causeway_e2e::{Cluster, deploy, testing};
use serde_json::Value;

/// The agents' resync interval in this suite.
const RESYNC_SECONDS: u64 = 3;
/// The agents' heartbeat Lease duration in this suite (40 s in production).
const LEASE_SECONDS: u64 = 4;

static SUITE: Suite = Suite::new(&NODES, RESYNC_SECONDS, LEASE_SECONDS);

fn main() -> ExitCode {
    testing::run_suite(
        "overlay",
        presets::realistic,
        vec![
            testing::test(
                "agents_program_every_node_and_the_network_becomes_ready",
                ready,
            ),
            testing::test(
                "every_pod_reaches_every_other_pod_and_every_node",
                connectivity,
            ),
            testing::test("pods_get_the_underlay_mtu_minus_the_vxlan_overhead", mtu),
            testing::test(
                "a_route_deleted_by_hand_is_back_within_the_resync_interval",
                repair,
            ),
            testing::test(
                "a_deleted_bridge_is_recreated_and_its_pods_are_attached_again",
                bridge_recreated,
            ),
            testing::test(
                "a_node_deleted_and_registered_again_gets_its_subnet_and_its_running_pods_back",
                node_reregistered,
            ),
            testing::test(
                "a_node_whose_address_is_gone_reports_underlay_not_found_naming_the_field",
                underlay_gone,
            ),
            testing::test("dry_run_prints_the_repair_and_changes_nothing", dry_run),
            testing::test(
                "an_agent_lists_in_pages_from_an_api_server_without_streamed_lists_and_plans_the_same",
                paged_lists,
            ),
            testing::test("foreign_routes_and_devices_are_left_alone", foreign),
            testing::test("an_agent_restart_loses_no_packets", restart),
            testing::test(
                "kubectl_causeway_status_names_a_stopped_agent_and_nothing_else_then_clears",
                cli_status,
            ),
            testing::test(
                "kubectl_causeway_trace_names_the_tunnel_that_counts_the_packets",
                cli_trace,
            ),
            testing::test(
                "an_agent_started_while_the_api_server_is_frozen_is_live_and_ready_only_after_its_first_pass",
                readiness,
            ),
            testing::test(
                "routes_deleted_by_hand_while_the_api_server_is_frozen_are_back_within_the_resync_interval_each_time",
                repairs_while_frozen,
            ),
            testing::test(
                "pod_traffic_leaving_the_cluster_is_masqueraded_except_to_exclusions",
                outgoing_nat,
            ),
            testing::test(
                "a_stopped_agent_makes_the_network_not_ready_with_the_reason",
                stopped_agent,
            ),
            testing::test(
                "a_deleted_node_disappears_from_every_other_node",
                node_deleted,
            ),
            testing::test(
                "deleting_the_pod_network_removes_everything_from_every_node",
                network_deleted,
            ),
            testing::test(
                "cross_subnet_routes_directly_on_the_segment_and_tunnels_across_the_router",
                cross_subnet,
            ),
            testing::test(
                "a_pod_range_holding_node_addresses_is_refused_and_names_the_nodes",
                range_over_nodes,
            ),
            testing::test(
                "dual_stack_pods_get_both_addresses_and_ping_each_other_across_nodes_over_ipv6_and_ipv4",
                dual_stack,
            ),
        ],
    )
}

fn ready(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    // Counts trail conditions by up to a resync plus the status refresh interval.
    let subnets = wait_for(
        "every node counts its 3 peers",
        Duration::from_secs(RESYNC_SECONDS + 3),
        || {
            let subnets = deploy::node_subnets(c, NETWORK)?;
            for s in &subnets {
                let st = &s["status"];
                ensure!(
                    st["routes"] == 3 && st["neighbours"] == 3 && st["fdbEntries"] == 3,
                    "{}: counts {st}",
                    s["spec"]["nodeName"]
                );
            }
            Ok(subnets)
        },
    )?;
    ensure!(
        subnets.len() == NODES.len(),
        "{} NodeSubnets",
        subnets.len()
    );
    for s in &subnets {
        let st = &s["status"];
        let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
        ensure!(st["effectiveMtu"] == 1450, "{node}: mtu {st}");
        let programmed = st["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Programmed"))
            .with_context(|| format!("{node}: no Programmed condition: {st}"))?;
        ensure!(programmed["status"] == "True", "{node}: {programmed}");
        ensure!(
            our_routes(c, node)?.len() == 3,
            "{node}: {:?}",
            our_routes(c, node)?
        );
    }
    Ok(())
}

fn connectivity(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    ensure!(pods.len() == 8, "{} pods", pods.len());
    let mut pairs = Vec::new();
    for from in &pods {
        for to in pods.iter().filter(|to| to.netns != from.netns) {
            pairs.push((
                from.netns.clone(),
                to.ip,
                format!("{}/{} -> {}/{}", from.node, from.name, to.node, to.name),
            ));
        }
        for node in &c.topology.nodes {
            pairs.push((
                from.netns.clone(),
                node.address,
                format!("{}/{} -> node {}", from.node, from.name, node.name),
            ));
        }
    }
    let failures = traffic::ping_matrix(&pairs);
    ensure!(failures.is_empty(), "unreachable:\n{}", failures.join("\n"));
    Ok(())
}

fn mtu(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    ensure!(pods.len() == 8, "{} pods: nothing to check", pods.len());
    for pod in &pods {
        let out = causeway_e2e::cmd::run(
            std::process::Command::new("ip").args(["-n", &pod.netns, "-j", "link", "show", "eth0"]),
        )?;
        let links: Value = serde_json::from_str(&out)?;
        ensure!(
            links[0]["mtu"] == 1450,
            "{}/{}: eth0 mtu {}",
            pod.node,
            pod.name,
            links[0]["mtu"]
        );
    }
    Ok(())
}

/// The host-side veths on `node`'s `cw-br0`, sorted.
fn bridge_ports(c: &Cluster, node: &str) -> Result<Vec<String>> {
    let out = c.exec(node, "ip", &["-j", "link", "show", "master", "cw-br0"]);
    let Ok(out) = out else {
        return Ok(Vec::new());
    };
    let links: Value = serde_json::from_str(&out)?;
    let mut names: Vec<String> = links
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

/// Issue #14, defect 6: deleting `cw-br0` by hand. The agent re-creates it, and the pods'
/// veths (which the kernel detached) are attached again, so the pods are back on the network.
fn bridge_recreated(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node = "node-b";
    let ports = bridge_ports(c, node)?;
    ensure!(ports.len() == 2, "{node}'s pods on cw-br0: {ports:?}");
    c.exec(node, "ip", &["link", "del", "cw-br0"])?;
    let deleted = std::time::Instant::now();
    let pods = SUITE.pods();
    let here: Vec<&Pod> = pods.iter().filter(|p| p.node == node).collect();
    let there = pod_on(&pods, "node-d")?;
    wait_for(
        "the bridge is back with the pods' veths on it",
        Duration::from_secs(RESYNC_SECONDS * 2 + 4),
        || {
            let now = bridge_ports(c, node)?;
            ensure!(now == ports, "ports on cw-br0: {now:?}, were {ports:?}");
            Ok(())
        },
    )?;
    let attached = deleted.elapsed();
    // Pods re-resolve their gateway's MAC (a new bridge) within a few seconds.
    wait_for(
        "the pods reach and are reached again",
        Duration::from_secs(20),
        || {
            for pod in &here {
                traffic::expect_ping(&pod.netns, there.ip)?;
                traffic::expect_ping(&there.netns, pod.ip)?;
            }
            Ok(())
        },
    )?;
    println!(
        "[measure] cw-br0 deleted on {node} (resync every {RESYNC_SECONDS} s): veths attached again after {attached:?}, pods reach node-d's pod both ways after {:?}",
        deleted.elapsed()
    );
    let events = c.kubectl(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "reason=Repaired",
        "-o",
        "jsonpath={.items[*].message}",
    ])?;
    ensure!(
        events.contains("master cw-br0"),
        "no Repaired event names the re-attached veths: {events}"
    );
    Ok(())
}

/// Issue #14, defect 6, second half: a Node deleted while its pods run (an administrator's
/// `kubectl delete node`, a cloud controller) and registered again by its kubelet. The agent
/// tears the node down with its NodeSubnet; the new NodeSubnet gets the same range, the
/// bridge comes back and the running pods' veths are attached to it again.
fn node_reregistered(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node = "node-a";
    let subnet = subnet_of(c, NETWORK, node)?;
    let ports = bridge_ports(c, node)?;
    ensure!(ports.len() == 2, "{node}'s pods on cw-br0: {ports:?}");
    c.kubectl(&["delete", "node", node, "--wait=true", "--timeout=30s"])?;
    wait_for(
        "the agent tore the node down",
        Duration::from_secs(30),
        || {
            ensure!(
                bridge_ports(c, node)?.is_empty(),
                "{:?}",
                bridge_ports(c, node)?
            );
            Ok(())
        },
    )?;
    SUITE.register_nodes_again(c, &[node])?;
    wait_for(
        "the node is back with its subnet and its pods' veths",
        Duration::from_secs(40),
        || {
            let now = subnet_of(c, NETWORK, node)?;
            ensure!(now == subnet, "subnet {now}, was {subnet}");
            let on = bridge_ports(c, node)?;
            ensure!(on == ports, "ports on cw-br0: {on:?}, were {ports:?}");
            Ok(())
        },
    )?;
    wait_network_ready(c, NETWORK, 60)?;
    let pods = SUITE.pods();
    let there = pod_on(&pods, "node-d")?;
    wait_for(
        "the pods reach and are reached again",
        Duration::from_secs(20),
        || {
            for pod in pods.iter().filter(|p| p.node == node) {
                traffic::expect_ping(&pod.netns, there.ip)?;
                traffic::expect_ping(&there.netns, pod.ip)?;
            }
            Ok(())
        },
    )
}

/// Issue #14, defect 11: the node's address (its InternalIP, the NodeSubnet's
/// spec.nodeAddress) is on none of its interfaces. The NodeSubnet says which field names the
/// missing address and how to check (it once suggested a flag that does not exist), and the
/// node recovers by itself once the address is right.
fn underlay_gone(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node = "node-c";
    // The kubelet reports an address the node does not have (a stale --node-ip, a lost
    // DHCP lease): the operator readdresses the NodeSubnet, and the agent finds no interface
    // holding it.
    let wrong: Ipv4Addr = "192.168.50.213".parse()?;
    let right = c
        .topology
        .nodes
        .iter()
        .find(|n| n.name == node)
        .context("node-c in the topology")?
        .address;
    c.set_node_status(node, Some(wrong))?;
    let restore = || c.set_node_status(node, Some(right));
    let reported = wait_for(
        "UnderlayNotFound naming spec.nodeAddress",
        Duration::from_secs(RESYNC_SECONDS * 2 + 4),
        || {
            let (status, reason, message) = programmed(c, NETWORK, node)?;
            ensure!(
                status == "False"
                    && reason == "UnderlayNotFound"
                    && message.contains("spec.nodeAddress")
                    && message.contains("192.168.50.213")
                    && !message.contains("--node-address"),
                "{status} {reason}: {message}"
            );
            Ok(message)
        },
    );
    restore()?;
    let message = reported?;
    println!("[observe] {node} without its address: {message}");
    wait_for(
        "Programmed again once the address is back",
        Duration::from_secs(RESYNC_SECONDS * 2 + 4),
        || {
            let (status, reason, message) = programmed(c, NETWORK, node)?;
            ensure!(status == "True", "{status} {reason}: {message}");
            Ok(())
        },
    )?;
    let pods = SUITE.pods();
    let (here, there) = (pod_on(&pods, node)?, pod_on(&pods, "node-d")?);
    wait_for(
        "pods reach each other again",
        Duration::from_secs(15),
        || traffic::expect_ping(&here.netns, there.ip),
    )
}

fn repair(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let target = subnet_of(c, NETWORK, "node-b")?;
    c.exec("node-a", "ip", &["route", "del", &target, "proto", "249"])?;
    ensure!(
        !our_routes(c, "node-a")?
            .iter()
            .any(|r| r.starts_with(&target)),
        "the route did not go"
    );
    wait_for(
        "the route is back",
        Duration::from_secs(RESYNC_SECONDS * 2 + 2),
        || {
            ensure!(
                our_routes(c, "node-a")?
                    .iter()
                    .any(|r| r.starts_with(&target)),
                "not yet"
            );
            Ok(())
        },
    )?;
    let pods = SUITE.pods();
    let (a, b) = (pod_on(&pods, "node-a")?, pod_on(&pods, "node-b")?);
    traffic::expect_ping(&a.netns, b.ip)?;
    // An entry nobody planned on the agent's VXLAN device goes too: here a flood entry,
    // which would send every broadcast and unknown frame to an arbitrary address.
    let flood = [
        "00:00:00:00:00:00",
        "dev",
        "cw-vx1",
        "dst",
        "192.168.50.99",
        "self",
        "permanent",
    ];
    c.exec(
        "node-a",
        "bridge",
        &[&["fdb", "append"][..], &flood[..]].concat(),
    )?;
    wait_for(
        "the flood entry is removed",
        Duration::from_secs(RESYNC_SECONDS * 2 + 2),
        || {
            let fdb = c.exec("node-a", "bridge", &["fdb", "show", "dev", "cw-vx1"])?;
            ensure!(!fdb.contains("00:00:00:00:00:00"), "still there:\n{fdb}");
            Ok(())
        },
    )
}

fn dry_run(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node = "node-c";
    c.stop(&SUITE.agent_of(node)?);
    let target = subnet_of(c, NETWORK, "node-a")?;
    c.exec(node, "ip", &["route", "del", &target, "proto", "249"])?;
    let kubeconfig = deploy::agent_kubeconfig(c, node)?;
    let out = causeway_e2e::cmd::run(&mut dry_run_of(c, node, &kubeconfig)?)?;
    let want = format!("replace route {target} via");
    ensure!(out.contains(&want), "dry run printed no repair: {out:?}");
    ensure!(
        out.lines().count() == 1,
        "dry run printed more than the one repair: {out:?}"
    );
    ensure!(
        !our_routes(c, node)?.iter().any(|r| r.starts_with(&target)),
        "the dry run changed the dataplane"
    );
    SUITE.start_agent(c, node)?;
    wait_for("the agent repairs it", Duration::from_secs(10), || {
        ensure!(
            our_routes(c, node)?.iter().any(|r| r.starts_with(&target)),
            "not yet"
        );
        Ok(())
    })
}

/// `node`'s agent as a dry run with `kubeconfig`, in the node's namespace: it prints the
/// operations of one pass and stops.
fn dry_run_of(c: &Cluster, node: &str, kubeconfig: &str) -> Result<std::process::Command> {
    let bin = causeway_e2e::controlplane::causeway_binary("causeway-node-agent")?;
    let conf_dir = c.cni_conf_dir(node).display().to_string();
    let mut cmd = causeway_e2e::cmd::in_netns(&c.ns(node), "env");
    cmd.arg(format!("KUBECONFIG={kubeconfig}")).arg(&bin).args([
        "--node-name",
        node,
        "--cni-conf-dir",
        &conf_dir,
        "--dry-run",
    ]);
    Ok(cmd)
}

/// The agent's caches stream their first lists (WatchList, on by default from Kubernetes 1.34);
/// an API server without it (1.33, or the feature gate off) refuses, and the agent lists in
/// pages instead. A dry run of node-c's agent against each server: both find the dataplane
/// as the running agent programmed it, and only the second says it lists in pages.
fn paged_lists(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node = "node-c";
    let role = "kube-apiserver-no-watchlist";
    const PORT: u16 = 6444;
    let extra = c.start_extra_apiserver(role, PORT, &["--feature-gates=WatchList=false"])?;
    let cp = c.topology.control_plane.address;
    let result = (|| {
        for (server, suffix, pages) in [
            (deploy::server_url(c), "", false),
            (format!("https://{cp}:{PORT}"), "-no-watchlist", true),
        ] {
            let kubeconfig = deploy::agent_kubeconfig_for(c, node, &server, suffix)?;
            let out = dry_run_of(c, node, &kubeconfig)?
                .args(["--log-format", "json"])
                .output()
                .context("running the agent's dry run")?;
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            ensure!(
                out.status.success(),
                "dry run against {server} failed: {stderr}"
            );
            ensure!(
                stdout.trim() == "# nothing to do: the dataplane matches the plan",
                "dry run against {server} planned changes: {stdout:?}"
            );
            let paged: Vec<&str> = stderr
                .lines()
                .filter(|l| l.contains("does not stream lists"))
                .collect();
            if pages {
                // One line per cache (NodeSubnets, PodNetworks, the Node, OverlayGateways,
                // Secrets, the API server's endpoints), each naming the server's answer.
                ensure!(
                    paged.len() >= 4 && paged.iter().all(|l| l.contains("WatchList")),
                    "against {server} the agent did not say it lists in pages: {stderr}"
                );
            } else {
                ensure!(
                    paged.is_empty(),
                    "the agent listed in pages from {server}: {paged:?}"
                );
            }
        }
        Ok(())
    })();
    c.stop(&extra);
    result
}

/// The exempt ranges in `node`'s NAT table, or `None` without the table.
fn nat_exemptions(c: &Cluster, node: &str) -> Result<Option<String>> {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.ns(node),
            "nft",
            "list",
            "set",
            "ip",
            "causeway",
        ])
        .arg("no-masquerade")
        .output()?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(Some(
        text.split("elements = {")
            .nth(1)
            .and_then(|r| r.split('}').next())
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    ))
}

fn outgoing_nat(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    let (a, b, d) = (
        pod_on(&pods, "node-a")?,
        pod_on(&pods, "node-b")?,
        pod_on(&pods, "node-d")?,
    );
    let client = c
        .topology
        .clients
        .first()
        .context("the topology has a client")?;
    let client_ns = c.ns(&client.name);

    // The client has no route to pods: only masqueraded traffic gets answers.
    for (pod, node, port) in [(a, "node-a", 7301), (d, "node-d", 7302)] {
        let seen = traffic::tcp_seen_source(&client_ns, &pod.netns, client.address, port)?;
        ensure!(
            seen == node_address(c, node)?,
            "the client saw {seen} from a pod on {node}, not the node's address"
        );
    }
    // Inside the cluster CIDR nothing is rewritten.
    let seen = traffic::tcp_seen_source(&b.netns, &a.netns, b.ip, 7303)?;
    ensure!(seen == a.ip, "pod-to-pod traffic was rewritten to {seen}");

    // An exclusion: the client's segment now sees pod addresses, and cannot answer them.
    patch_network(
        c,
        NETWORK,
        r#"{"spec":{"natExcludeCidrs":["192.168.50.0/24"]}}"#,
    )?;
    for node in NODES {
        wait_for(
            &format!("{node} exempts 192.168.50.0/24"),
            Duration::from_secs(10),
            || {
                let set = nat_exemptions(c, node)?.unwrap_or_default();
                ensure!(set.contains("192.168.50.0/24"), "exempt: {set:?}");
                Ok(())
            },
        )?;
    }
    traffic::expect_no_ping(&a.netns, client.address)?;
    traffic::expect_ping(&a.netns, b.ip)?;
    let seen =
        traffic::tcp_seen_source(&c.ns("node-d"), &a.netns, node_address(c, "node-d")?, 7304)?;
    ensure!(
        seen == node_address(c, "node-a")?,
        "traffic to node-d (not excluded) was not masqueraded: {seen}"
    );

    // natOutgoing off: the table leaves every node.
    patch_network(c, NETWORK, r#"{"spec":{"natOutgoing":false}}"#)?;
    for node in NODES {
        wait_for(
            &format!("{node} drops its NAT table"),
            Duration::from_secs(10),
            || {
                ensure!(nat_exemptions(c, node)?.is_none(), "still there");
                Ok(())
            },
        )?;
    }
    patch_network(
        c,
        NETWORK,
        r#"{"spec":{"natOutgoing":true,"natExcludeCidrs":null}}"#,
    )?;
    wait_for("NAT is back on node-a", Duration::from_secs(10), || {
        ensure!(
            nat_exemptions(c, "node-a")?.as_deref() == Some("10.247.0.0/16"),
            "not yet"
        );
        Ok(())
    })?;
    traffic::expect_ping(&a.netns, client.address)
}

fn foreign(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node = "node-b";
    c.exec(
        node,
        "ip",
        &[
            "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1",
        ],
    )?;
    c.exec(node, "ip", &["link", "set", "foreign0", "up"])?;
    c.exec(node, "ip", &["link", "set", "foreign1", "up"])?;
    c.exec(
        node,
        "ip",
        &[
            "route",
            "add",
            "10.99.0.0/24",
            "dev",
            "foreign0",
            "proto",
            "static",
        ],
    )?;
    // One of the agent's own routes goes too: its return proves the agent ran a repairing
    // pass while the foreign objects sat next to its own (a dead agent would also leave
    // them alone).
    let target = subnet_of(c, NETWORK, "node-a")?;
    c.exec(node, "ip", &["route", "del", &target, "proto", "249"])?;
    // Two resyncs later both are still there.
    std::thread::sleep(Duration::from_secs(RESYNC_SECONDS * 2 + 1));
    ensure!(
        SUITE.agent_of(node)?.alive(),
        "{node}'s agent is not running: nothing was tested"
    );
    ensure!(
        our_routes(c, node)?.iter().any(|r| r.starts_with(&target)),
        "{node}'s agent did not repair its own route {target}: {:?}",
        our_routes(c, node)?
    );
    let links = c.exec(node, "ip", &["-brief", "link", "show", "foreign0"])?;
    ensure!(links.contains("foreign0"), "the foreign link went: {links}");
    let routes = c.exec(node, "ip", &["route", "show", "10.99.0.0/24"])?;
    ensure!(
        routes.contains("proto static"),
        "the foreign route went: {routes:?}"
    );
    c.exec(node, "ip", &["link", "del", "foreign0"])?;
    Ok(())
}

fn restart(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    let (a, d) = (pod_on(&pods, "node-a")?, pod_on(&pods, "node-d")?);
    let ping = ContinuousPing::start(&a.netns, d.ip, Duration::from_millis(50))?;
    std::thread::sleep(Duration::from_secs(1));
    for node in ["node-a", "node-d"] {
        c.stop(&SUITE.agent_of(node)?);
        SUITE.start_agent(c, node)?;
    }
    // Let the new agents run a full pass and a resync.
    std::thread::sleep(Duration::from_secs(RESYNC_SECONDS + 2));
    let report = ping.stop()?;
    println!(
        "[measure] continuous ping across two agent restarts: {} sent, {} lost, max gap {:?}",
        report.transmitted,
        report.lost(),
        report.max_gap
    );
    ensure!(report.transmitted > 50, "too few pings: {report:?}");
    ensure!(
        report.lost() == 0,
        "packets lost during agent restarts: {report:?}"
    );
    Ok(())
}

/// `kubectl causeway status` as the on-call engineer runs it: on the healthy cluster it
/// exits 0 and says so; with node-c's agent stopped it exits 1 and every problem it lists is
/// about node-c (its agent silent, with its Lease and the command to look at its pod; the
/// network not Ready because of it); `-o json` says the same for scripts; with the agent back,
/// it is healthy again.
fn cli_status(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let healthy = wait_for("status healthy", Duration::from_secs(30), || {
        let run = suite::kubectl_causeway(c, &["status"])?;
        ensure!(run.code == 0, "{}", run.stdout);
        Ok(run)
    })?;
    println!("{}", healthy.stdout);
    ensure!(
        healthy.stdout.contains("No problems found."),
        "{}",
        healthy.stdout
    );
    ensure!(
        healthy.stdout.contains(&format!("{NETWORK}   Overlay")) && healthy.stdout.contains("4/4"),
        "{}",
        healthy.stdout
    );
    c.stop(&SUITE.agent_of("node-c")?);
    let broken = wait_for(
        "status names node-c's silent agent",
        Duration::from_secs(30),
        || {
            let run = suite::kubectl_causeway(c, &["status"])?;
            ensure!(
                run.code == 1 && run.stdout.contains("agent silent"),
                "{}",
                run.stdout
            );
            Ok(run)
        },
    );
    let restarted = SUITE.start_agent(c, "node-c");
    let broken = broken?;
    restarted?;
    println!("{}", broken.stdout);
    ensure!(
        broken.stdout.contains(
            "more: kubectl -n causeway-system get pods -o wide --field-selector spec.nodeName=node-c"
        ),
        "{}",
        broken.stdout
    );
    let problems: Vec<&str> = broken
        .stdout
        .lines()
        .filter(|l| l.starts_with("- "))
        .collect();
    ensure!(!problems.is_empty(), "{}", broken.stdout);
    for p in &problems {
        ensure!(
            p.contains("node-c"),
            "a problem not about node-c: {p}\n{}",
            broken.stdout
        );
    }
    wait_for("status healthy again", Duration::from_secs(30), || {
        let run = suite::kubectl_causeway(c, &["status", "-o", "json"])?;
        let report: Value = serde_json::from_str(&run.stdout)?;
        ensure!(
            run.code == 0 && report["problems"].as_array().is_some_and(Vec::is_empty),
            "{}",
            run.stdout
        );
        ensure!(report["nodes"]["programmed"] == 4, "{}", run.stdout);
        Ok(())
    })?;
    Ok(())
}

/// `kubectl causeway trace` from a pod on node-a to one on node-d (across r1) names VXLAN
/// device cw-vx1, the outer addresses and the router; real pings take that path: node-a's
/// cw-vx1 sends and node-d's receives at least as many packets as were pinged, and node-a's
/// bridge sees them. To a pod on the same node, it names no tunnel, and the tunnel counts
/// nothing of such pings.
fn cli_trace(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    let (a, d) = (pod_on(&pods, "node-a")?, pod_on(&pods, "node-d")?);
    let run = suite::kubectl_causeway(c, &["trace", &a.ip.to_string(), &d.ip.to_string()])?;
    println!("{}", run.stdout);
    let a_addr = node_address(c, "node-a")?;
    let d_addr = node_address(c, "node-d")?;
    run.expect_all(&[
        format!("route {} via", subnet_of(c, NETWORK, "node-d")?),
        "dev cw-vx1 onlink".to_owned(),
        format!("outer {a_addr} → {d_addr} UDP 8472, VNI 1"),
        "through the underlay's router".to_owned(),
        "cw-vx1 decapsulates".to_owned(),
    ])?;
    let before = (
        traffic::link_packets(c, "node-a", "cw-vx1")?,
        traffic::link_packets(c, "node-d", "cw-vx1")?,
    );
    let sent = traffic::ping(&a.netns, d.ip, 20)?;
    ensure!(sent.received == 20, "{sent:?}");
    let after = (
        traffic::link_packets(c, "node-a", "cw-vx1")?,
        traffic::link_packets(c, "node-d", "cw-vx1")?,
    );
    let (a_tx, d_rx) = (after.0.1 - before.0.1, after.1.0 - before.1.0);
    println!("[measure] 20 pings: node-a cw-vx1 sent {a_tx}, node-d cw-vx1 received {d_rx}");
    ensure!(
        a_tx >= 20 && d_rx >= 20,
        "the tunnel the trace names did not carry the pings: node-a sent {a_tx}, node-d received {d_rx}"
    );

    // Two pods on node-a: no tunnel in the trace, none used.
    let local: Vec<&Pod> = pods.iter().filter(|p| p.node == "node-a").collect();
    ensure!(local.len() == 2, "{} pods on node-a", local.len());
    let run = suite::kubectl_causeway(
        c,
        &["trace", &local[0].ip.to_string(), &local[1].ip.to_string()],
    )?;
    ensure!(
        run.stdout.contains("is on this node") && !run.stdout.contains("cw-vx1"),
        "{}",
        run.stdout
    );
    let before = traffic::link_packets(c, "node-a", "cw-vx1")?;
    let sent = traffic::ping(&local[0].netns, local[1].ip, 20)?;
    ensure!(sent.received == 20, "{sent:?}");
    let after = traffic::link_packets(c, "node-a", "cw-vx1")?;
    ensure!(
        after.1 - before.1 < 5,
        "pings between two pods of node-a went through the tunnel: {} packets",
        after.1 - before.1
    );
    Ok(())
}

/// GET `path` from the agent's health endpoint on `node` (127.0.0.1:9809 of the node's
/// namespace, where the kubelet's httpGet probes ask): "<status code>\n<body>".
fn agent_health(c: &Cluster, node: &str, path: &str) -> Result<String> {
    c.exec(
        node,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:9809{path}"),
        ],
    )
    .map(|out| match out.rsplit_once('\n') {
        Some((body, code)) => format!("{code}\n{}", body.trim_end()),
        None => out,
    })
}

/// Readiness gates a DaemonSet rolling update: a new agent is ready only once its first full
/// pass has reported on its NodeSubnet. Freezing the API server (SIGSTOP) holds the agent
/// before its first lists: it must stay live (an outage is no reason to restart it) and not
/// ready, then become ready once the server answers again.
fn readiness(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node = "node-b";
    for path in ["/healthz", "/readyz"] {
        let answer = agent_health(c, node, path)?;
        ensure!(answer.starts_with("200\n"), "{path} on {node}: {answer}");
    }
    c.stop(&SUITE.agent_of(node)?);
    let frozen = suite::freeze_apiserver(c)?;
    SUITE.start_agent(c, node)?;
    let waiting = wait_for(
        "the new agent serves /readyz (not ready)",
        Duration::from_secs(20),
        || {
            let r = agent_health(c, node, "/readyz")?;
            ensure!(r.starts_with("503\n"), "{r}");
            Ok(r)
        },
    )?;
    ensure!(waiting.contains("first lists"), "{waiting}");
    std::thread::sleep(Duration::from_secs(2));
    let live = agent_health(c, node, "/healthz")?;
    ensure!(
        live.starts_with("200\n"),
        "liveness failed while the API server was away: {live}"
    );
    let still = agent_health(c, node, "/readyz")?;
    ensure!(still.starts_with("503\n"), "ready without a pass: {still}");
    let resumed = std::time::Instant::now();
    drop(frozen);
    wait_for(
        "the agent is ready after its first pass",
        Duration::from_secs(30),
        || {
            let r = agent_health(c, node, "/readyz")?;
            ensure!(r.starts_with("200\n"), "{r}");
            Ok(())
        },
    )?;
    println!(
        "[measure] new agent ready {:?} after the API server resumed",
        resumed.elapsed()
    );
    wait_network_ready(c, NETWORK, 60)?;
    Ok(())
}

/// A pass never waits for the API server: with the server frozen, routes deleted by hand one
/// after the other are each back within the resync interval, though every repair's event
/// (and the status writes) must wait for the server. Before the agent wrote beside its loop,
/// the first repair's event held the loop for the write's timeout (20 s).
fn repairs_while_frozen(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let targets = [
        subnet_of(c, NETWORK, "node-b")?,
        subnet_of(c, NETWORK, "node-c")?,
        subnet_of(c, NETWORK, "node-d")?,
    ];
    let has = |target: &str| -> Result<bool> {
        Ok(our_routes(c, "node-a")?
            .iter()
            .any(|r| r.starts_with(target)))
    };
    let frozen = suite::freeze_apiserver(c)?;
    let mut took = Vec::new();
    for target in &targets {
        ensure!(has(target)?, "node-a has no route to {target} before");
        c.exec("node-a", "ip", &["route", "del", target, "proto", "249"])?;
        let deleted = std::time::Instant::now();
        wait_for(
            &format!("the route to {target} is back with the API server frozen"),
            Duration::from_secs(RESYNC_SECONDS * 2 + 2),
            || {
                ensure!(has(target)?, "not yet");
                Ok(())
            },
        )?;
        took.push(deleted.elapsed());
    }
    drop(frozen);
    println!(
        "[measure] API server frozen, 3 routes deleted by hand one after the other on node-a: back after {took:?} (resync {RESYNC_SECONDS}s)"
    );
    wait_network_ready(c, NETWORK, 60)?;
    Ok(())
}

fn stopped_agent(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node = "node-c";
    let stopped = std::time::Instant::now();
    c.stop(&SUITE.agent_of(node)?);
    let (_, _, message) = wait_for(
        "Ready=False AgentNotReporting",
        Duration::from_secs(LEASE_SECONDS + 10),
        || {
            let (status, reason, message) = network_ready(c, NETWORK)?;
            ensure!(
                status == "False" && reason == "AgentNotReporting",
                "{status} {reason}: {message}"
            );
            Ok((status, reason, message))
        },
    )?;
    println!(
        "[measure] agent stopped -> PodNetwork Ready=False AgentNotReporting in {:.1}s (lease {LEASE_SECONDS}s)",
        stopped.elapsed().as_secs_f64()
    );
    ensure!(
        message.contains(node) && message.contains("causeway-agent-node-c"),
        "the message does not name the node and its Lease: {message}"
    );
    let waited = c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=2s",
        &format!("podnetwork/{NETWORK}"),
    ]);
    ensure!(
        waited.is_err(),
        "kubectl wait succeeded with an agent stopped"
    );
    let described = c.kubectl(&["describe", "podnetwork", NETWORK])?;
    ensure!(
        described.contains("AgentNotReporting"),
        "kubectl describe does not say why: {described}"
    );

    SUITE.start_agent(c, node)?;
    wait_network_ready(c, NETWORK, 20)?;
    Ok(())
}

fn node_deleted(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let gone = "node-d";
    let subnet = subnet_of(c, NETWORK, gone)?;
    let vtep = deploy::node_subnets(c, NETWORK)?
        .iter()
        .find(|s| s["spec"]["nodeName"] == gone)
        .and_then(|s| s["spec"]["vtepMac"].as_str().map(str::to_string))
        .context("node-d has no vtepMac")?;
    // Its pods go first, as the kubelet would drain them.
    SUITE.detach_pods_on(c, gone)?;
    c.kubectl(&["delete", "node", gone, "--wait=true", "--timeout=30s"])?;
    let gateway: Ipv4Addr = subnet.split('/').next().context("cidr")?.parse()?;
    wait_for(
        "node-d's routes, neighbours and FDB entries gone everywhere",
        Duration::from_secs(30),
        || {
            for node in ["node-a", "node-b", "node-c"] {
                ensure!(
                    !our_routes(c, node)?.iter().any(|r| r.starts_with(&subnet)),
                    "{node} still routes {subnet}"
                );
                let neigh = c.exec(node, "ip", &["neigh", "show", "dev", "cw-vx1"])?;
                ensure!(
                    !neigh.contains(&gateway.to_string()),
                    "{node} still has neighbour {gateway}: {neigh}"
                );
                let fdb = c.exec(node, "bridge", &["fdb", "show", "dev", "cw-vx1"])?;
                ensure!(!fdb.contains(&vtep), "{node} still has FDB {vtep}: {fdb}");
            }
            Ok(())
        },
    )?;
    // The deleted node's agent cleans its own node up, in a full pass of its own, which may
    // end after the other nodes' passes over the one changed peer; its credentials went with
    // the Node, so the operator released the agent's finalizer and said so.
    wait_for(
        "node-d's agent removing everything it programmed",
        Duration::from_secs(30),
        || {
            let kept = our_routes(c, gone)?;
            ensure!(kept.is_empty(), "node-d kept routes: {kept:?}");
            Ok(())
        },
    )?;
    let events = c.kubectl(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "reason=AgentFinalizerReleased",
        "-o",
        "jsonpath={.items[*].message}",
    ])?;
    ensure!(
        events.contains("node node-d no longer exists"),
        "no AgentFinalizerReleased event for node-d: {events:?}"
    );
    Ok(())
}

/// Deletes the suite's PodNetwork and waits until it is gone.
fn delete_network(c: &Cluster) -> Result<()> {
    c.kubectl(&[
        "delete",
        "podnetwork",
        NETWORK,
        "--wait=true",
        "--timeout=60s",
    ])
    .map(drop)
}

/// host-local's allocation store on `node` (the agents run with `--cni-data-dir`).
fn allocation_store(c: &Cluster, node: &str) -> std::path::PathBuf {
    c.cni_state_dir(node).join("networks").join("causeway")
}

/// The addresses host-local holds in `node`'s store (its files named after an address).
fn allocations(c: &Cluster, node: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(allocation_store(c, node))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Deleting the PodNetwork removes everything from every node, and from a ClientJoin client
/// (issue #14, defect 11: the client kept its VXLAN device). host-local's allocations do
/// not outlive the network: forgotten at once where no pod is left; where pods still run
/// (deleted later, when CNI DEL can no longer release anything), forgotten when the network
/// comes back, so a pod created again with the same sandbox ID gets an address instead of
/// "duplicate allocation".
fn network_deleted(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let client = the_client(c)?;
    join_clients(
        c,
        &[("laptop", &client.address.to_string(), CLIENT_OVERLAY)],
    )?;
    let agent = SUITE.start_client(c, &client.name, "join", "laptop")?;
    let result = network_deleted_with_client(c, &client.name);
    let _ = c.kubectl(&["delete", "overlaygateway", "join", "--ignore-not-found"]);
    c.stop(&agent);
    result
}

fn network_deleted_with_client(c: &Cluster, client: &str) -> Result<()> {
    wait_gateway_ready(c, "join")?;
    // node-c's pods keep running through the deletion; the others are deleted first.
    let remaining = SUITE.take_pods();
    let (kept, first): (Vec<Pod>, Vec<Pod>) =
        remaining.into_iter().partition(|p| p.node == "node-c");
    for p in &first {
        pods::del(c, p)?;
    }
    let held = allocations(c, "node-c");
    ensure!(held.len() == kept.len(), "node-c's allocations: {held:?}");
    delete_network(c)?;
    ensure!(
        deploy::node_subnets(c, NETWORK)?.is_empty(),
        "NodeSubnets left"
    );
    for node in ["node-a", "node-b", "node-c"] {
        wait_for(
            &format!("nothing of ours left on {node}"),
            Duration::from_secs(15),
            || {
                let links = c.exec(node, "ip", &["-brief", "link", "show"])?;
                ensure!(
                    !links.lines().any(|l| l.starts_with("cw-")),
                    "links: {links}"
                );
                ensure!(our_routes(c, node)?.is_empty(), "routes left");
                ensure!(our_nexthops(c, node)?.is_empty(), "nexthop objects left");
                ensure!(nat_exemptions(c, node)?.is_none(), "NAT table left");
                ensure!(
                    !c.cni_conf_dir(node).join("10-causeway.conflist").exists(),
                    "CNI config left"
                );
                Ok(())
            },
        )?;
    }
    wait_for(
        "the ClientJoin client removed its tunnel",
        Duration::from_secs(15),
        || {
            let links = c.exec(client, "ip", &["-brief", "link", "show"])?;
            ensure!(!links.contains("cw-vx1"), "client links: {links}");
            Ok(())
        },
    )?;
    for node in ["node-a", "node-b"] {
        ensure!(
            !allocation_store(c, node).exists(),
            "{node} kept host-local's store: {:?}",
            allocations(c, node)
        );
    }
    ensure!(
        allocations(c, "node-c") == held,
        "node-c's running pods lost their allocations: {:?}",
        allocations(c, "node-c")
    );
    // The kubelet removes node-c's pods now: without the CNI config nothing releases their
    // addresses; their sandboxes (and veths) just go.
    for p in &kept {
        causeway_e2e::cmd::run(std::process::Command::new("ip").args(["netns", "del", &p.netns]))?;
    }
    // The network comes back.
    c.kubectl_stdin(&["apply", "-f", "-"], &suite::overlay_example()?)?;
    wait_network_ready(c, NETWORK, 60)?;
    wait_for(
        "node-c forgot the leaked allocations",
        Duration::from_secs(15),
        || {
            let now = allocations(c, "node-c");
            ensure!(now.is_empty(), "{now:?}");
            Ok(())
        },
    )?;
    let again = pods::add(c, "node-c", &kept[0].name)
        .context("a pod with the same sandbox ID after the network came back")?;
    let reached = traffic::ping(&again.netns, Ipv4Addr::new(192, 168, 50, 11), 2);
    pods::del(c, &again)?;
    let reached = reached?;
    ensure!(
        reached.received > 0,
        "the new pod reaches node-a: {reached:?}"
    );
    // Gone again, for the suite's later tests.
    c.kubectl(&["delete", "overlaygateway", "join"])?;
    delete_network(c)?;
    Ok(())
}

/// A PodNetwork whose range holds the nodes' own network is refused (CidrOverlapsNodes, nodes
/// named), allocates nothing and touches no node, even though it selects none of them.
fn range_over_nodes(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let network = serde_json::json!({
        "apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
        "metadata": {"name": "over-nodes"},
        "spec": {
            "cidr": "192.168.48.0/20", "nodeSubnetPrefixLength": 26, "mode": "Overlay",
            "overlay": {"vni": 9},
            "nodeSelector": {"matchLabels": {"causeway.dev/none": "true"}},
        },
    });
    c.kubectl_stdin(&["apply", "-f", "-"], &network.to_string())?;
    let result = (|| -> Result<()> {
        c.kubectl(&[
            "wait",
            "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=CidrOverlapsNodes",
            "--timeout=30s",
            "podnetwork/over-nodes",
        ])?;
        let message = c.kubectl(&[
            "get",
            "podnetwork",
            "over-nodes",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].message}",
        ])?;
        ensure!(
            message.contains(
                "spec.cidr 192.168.48.0/20 holds the addresses of node node-a (192.168.50.11)"
            ) && message.contains("Choose a range no node"),
            "{message}"
        );
        ensure!(
            deploy::node_subnets(c, "over-nodes")?.is_empty(),
            "NodeSubnets were allocated"
        );
        Ok(())
    })();
    c.kubectl(&[
        "delete",
        "podnetwork",
        "over-nodes",
        "--wait=true",
        "--timeout=60s",
    ])?;
    result
}

/// The cross-subnet example: first its MTU (8950) is refused on this 1500-byte underlay with a
/// clear reason; without it, peers on lan-a are reached by plain routes over the underlay and
/// node-d, behind the router, over VXLAN.
/// A dual-stack Overlay network (IPv4 cidr, IPv6 secondaryCidr) over the IPv4 underlay: pods
/// on node-a, node-b (same segment) and node-d (behind the router) get one address of each
/// family from the agents' CNI config and reach each other over both; IPv6 rides the IPv4
/// VXLAN tunnel. Runs after the other networks are gone (one network per node here).
fn dual_stack(c: &Cluster) -> Result<()> {
    let name = "overlay-dual";
    let pn = suite::pod_network(
        name,
        "10.246.0.0/16",
        "Overlay",
        serde_json::json!({
            "secondaryCidr": "fd00:10:246::/56",
            "secondaryNodeSubnetPrefixLength": 64,
            "overlay": {"vni": 7, "port": 8472},
        }),
    );
    let nodes = ["node-a", "node-b", "node-d"];
    // The test underlay has IPv6 off everywhere, for new links too
    // (`default.disable_ipv6=1`): the agent turns it on for its own bridge and VXLAN device
    // only, and the underlay stays IPv4 only.
    for node in nodes {
        let default = c.exec(
            node,
            "sysctl",
            &["-n", "net.ipv6.conf.default.disable_ipv6"],
        )?;
        ensure!(
            default.trim() == "1",
            "{node} starts new links with IPv6: {default}"
        );
    }
    let pods = SUITE
        .bring_up(c, &pn.to_string(), name, &nodes, "ds")
        .with_context(|| {
            let network = c
                .kubectl(&["get", "podnetwork", name, "-o", "jsonpath={.status}"])
                .unwrap_or_default();
            let subnets: Vec<String> = deploy::node_subnets(c, name)
                .unwrap_or_default()
                .iter()
                .map(|s| format!("{}: {}", s["spec"], s["status"]))
                .collect();
            format!("network status {network}; NodeSubnets {subnets:#?}")
        })?;
    let result = (|| -> Result<()> {
        let subnets = deploy::node_subnets(c, name)?;
        for s in &subnets {
            let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
            ensure!(
                s["spec"]["secondaryCidr"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("fd00:10:246:")),
                "{node} has no IPv6 subnet: {}",
                s["spec"]
            );
        }
        for (link, want) in [("cw-br0", "0"), ("cw-vx7", "0"), ("eth0", "1")] {
            let key = format!("net.ipv6.conf.{link}.disable_ipv6");
            let got = c.exec("node-a", "sysctl", &["-n", &key])?;
            ensure!(got.trim() == want, "node-a {key} = {got} (expected {want})");
        }
        // Three peers each way, on every node: three IPv4 and three IPv6 routes.
        let routes = our_routes(c, "node-a")?;
        let v6_routes = c.exec("node-a", "ip", &["-6", "route", "show", "proto", "249"])?;
        ensure!(
            v6_routes
                .lines()
                .filter(|l| l.contains("dev cw-vx7"))
                .count()
                == subnets.len() - 1,
            "node-a's IPv6 routes: {v6_routes} (IPv4: {routes:?})"
        );
        let mut v6 = Vec::new();
        for p in &pods {
            v6.push(pods::first_ipv6(&p.result)?);
        }
        for from in &pods {
            for (j, to) in pods.iter().enumerate() {
                if from.node == to.node {
                    continue;
                }
                // A pod's IPv6 address answers once its duplicate address detection is done
                // (about a second after CNI ADD): the first pings may go unanswered.
                wait_for("IPv6 ping", Duration::from_secs(5), || {
                    traffic::expect_ping6(&from.netns, v6[j])
                })
                .with_context(|| {
                    // What both nodes and the source pod hold, for the failure message.
                    let show = |host: &str, args: &[&str]| {
                        c.exec(host, "ip", args).unwrap_or_else(|e| e.to_string())
                    };
                    let pod = |args: &[&str]| {
                        std::process::Command::new("ip")
                            .args(["-n", &from.netns])
                            .args(args)
                            .output()
                            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                            .unwrap_or_default()
                    };
                    let mut state = String::new();
                    for node in [from.node.as_str(), to.node.as_str()] {
                        for args in [
                            &["-6", "addr"][..],
                            &["-6", "route"][..],
                            &["-6", "neigh"][..],
                        ] {
                            state.push_str(&format!("{node} ip {args:?}:\n{}\n", show(node, args)));
                        }
                        state.push_str(&format!(
                            "{node} forwarding: {}\n",
                            c.exec(
                                node,
                                "sysctl",
                                &[
                                    "net.ipv6.conf.all.forwarding",
                                    "net.ipv6.conf.cw-br0.forwarding"
                                ]
                            )
                            .unwrap_or_else(|e| e.to_string())
                        ));
                    }
                    state.push_str(&format!(
                        "pod addr:\n{}\npod route:\n{}\npod neigh:\n{}",
                        pod(&["-6", "addr"]),
                        pod(&["-6", "route"]),
                        pod(&["-6", "neigh"])
                    ));
                    let target = std::process::Command::new("ip")
                        .args(["-n", &to.netns, "-6", "addr"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    state.push_str(&format!("\ntarget pod addr:\n{target}"));
                    format!(
                        "{}/{} -> {}/{} over IPv6\n{state}",
                        from.node, from.name, to.node, to.name
                    )
                })?;
                traffic::expect_ping(&from.netns, to.ip).with_context(|| {
                    format!(
                        "{}/{} -> {}/{} over IPv4",
                        from.node, from.name, to.node, to.name
                    )
                })?;
            }
        }
        // Both agents of a path restarted under continuous ping -6 and ping, across the
        // router: a new agent finds the dataplane as the plan wants it and changes nothing.
        let a = pods
            .iter()
            .position(|p| p.node == "node-a")
            .context("pod on node-a")?;
        let d = pods
            .iter()
            .position(|p| p.node == "node-d")
            .context("pod on node-d")?;
        let interval = Duration::from_millis(50);
        let ping6 = ContinuousPing::start6(&pods[a].netns, v6[d], interval)?;
        let ping4 = ContinuousPing::start(&pods[a].netns, pods[d].ip, interval)?;
        std::thread::sleep(Duration::from_secs(1));
        for node in ["node-a", "node-d"] {
            c.stop(&SUITE.agent_of(node)?);
            SUITE.start_agent(c, node)?;
        }
        std::thread::sleep(Duration::from_secs(RESYNC_SECONDS + 2));
        let (six, four) = (ping6.stop()?, ping4.stop()?);
        println!(
            "[measure] dual-stack Overlay, agents on node-a and node-d restarted under ping every 50 ms: IPv6 {} sent, {} lost, max gap {:?}; IPv4 {} sent, {} lost, max gap {:?}",
            six.transmitted,
            six.lost(),
            six.max_gap,
            four.transmitted,
            four.lost(),
            four.max_gap
        );
        for (family, report) in [("IPv6", &six), ("IPv4", &four)] {
            ensure!(
                report.transmitted > 50,
                "too few {family} pings: {report:?}"
            );
            ensure!(
                report.lost() == 0,
                "{family} packets lost during agent restarts: {report:?}"
            );
        }
        Ok(())
    })();
    for p in SUITE.take_pods() {
        pods::del(c, &p)?;
    }
    c.kubectl(&["delete", "podnetwork", name, "--wait=true", "--timeout=60s"])?;
    result
}

fn cross_subnet(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    // node-d was deleted by an earlier test: it comes back as a kubelet would register it.
    SUITE.register_nodes_again(c, &["node-d"])?;
    let name = "overlay-cross-subnet";
    let example = causeway_e2e::controlplane::workspace_root()
        .join("docs/examples/podnetwork-overlay-cross-subnet.yaml");
    c.kubectl(&["apply", "-f", &example.display().to_string()])?;
    wait_for("the MTU is refused", Duration::from_secs(30), || {
        let items = deploy::node_subnets(c, name)?;
        ensure!(items.len() == NODES.len(), "{} NodeSubnets", items.len());
        for s in &items {
            let programmed = s["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Programmed"))
                .context("no Programmed yet")?;
            ensure!(
                programmed["status"] == "False"
                    && programmed["reason"] == "InvalidConfiguration"
                    && programmed["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("8950"),
                "{programmed}"
            );
        }
        Ok(())
    })?;
    let ready = c.kubectl(&[
        "get",
        "podnetwork",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
    ])?;
    ensure!(ready == "NodesFailing", "Ready reason {ready}");
    // The fix the message asks for: no explicit MTU (underlay − 50).
    c.kubectl(&[
        "patch",
        "podnetwork",
        name,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/mtu"}]"#,
    ])?;
    wait_network_ready(c, name, 60)?;
    let subnet_of = |node: &str| -> Result<String> {
        let out = c.kubectl(&[
            "get",
            "nodesubnets",
            "-l",
            &format!("causeway.dev/network={name},causeway.dev/node={node}"),
            "-o",
            "jsonpath={.items[0].spec.cidr}",
        ])?;
        ensure!(!out.is_empty(), "{node} has no NodeSubnet");
        Ok(out)
    };
    let routes = our_routes(c, "node-a")?;
    let (b, d) = (subnet_of("node-b")?, subnet_of("node-d")?);
    ensure!(
        routes
            .iter()
            .any(|r| r.starts_with(&format!("{b} via 192.168.50.12 dev eth0"))),
        "no direct route to node-b's {b}: {routes:?}"
    );
    ensure!(
        routes
            .iter()
            .any(|r| r.starts_with(&d) && r.contains("dev cw-vx42")),
        "no VXLAN route to node-d's {d}: {routes:?}"
    );
    let pods: Vec<Pod> = ["node-a", "node-b", "node-d"]
        .iter()
        .map(|n| pods::add(c, n, "x"))
        .collect::<Result<_>>()?;
    let result = traffic::expect_ping(&pods[0].netns, pods[1].ip)
        .and_then(|()| traffic::expect_ping(&pods[0].netns, pods[2].ip))
        .and_then(|()| traffic::expect_ping(&pods[2].netns, pods[1].ip));
    for p in &pods {
        pods::del(c, p)?;
    }
    result?;
    c.kubectl(&["delete", "podnetwork", name, "--wait=true", "--timeout=60s"])?;
    Ok(())
}
