//! Dual-stack Flat and Routed (static) end to end (issue #18) on the dual-stack two-segment
//! topology: node-a..c on lan-a (192.168.50.0/24 + fd00:50::/64, zone rack-a), node-d on
//! lan-b (192.168.60.0/24 + fd00:60::/64, zone rack-b) behind r1, and a non-node client on
//! lan-a. Nodes register both InternalIPs, so the operator fills every NodeSubnet's
//! `nodeAddress` (IPv4) and `secondaryNodeAddress` (IPv6). The operator and an agent per node
//! run with the chart's RBAC; pods are attached with the CNI config the agents wrote; every
//! check is real traffic or the kernel's own tables.
//!
//! The networks run one after another: Flat over rack-a (both ranges on-link on eth0, proxy
//! ARP, proxy NDP with one entry per local pod), then Routed with static routes over rack-a
//! (outgoing NAT per family checked against node-d, outside the network then), then node-d
//! added to it (named as unreachable over both families), then an Overlay network over all
//! four nodes opened to the client by an OverlayGateway RouteToNodes with IPv4 and IPv6
//! clientCidrs (the client pastes the rendered `ip route` and `ip -6 route` lines; an
//! oversized IPv6 packet of the client's gets a Packet Too Big), by BridgeHosts with an IPv6
//! `secondaryVip` (failover under `ping -6`; with `snat: true` too) and by ClientJoin with an
//! IPv6 `secondaryOverlayAddress`, before the Overlay network goes; and last an IPv6-first
//! Overlay network (`cidr` IPv6, `secondaryCidr` IPv4: VXLAN over IPv6). The agents
//! resync every 30 s only, so what happens within seconds (a new pod's proxy entry, a deleted
//! pod's going) is the agent's own pod watch, not the resync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use causeway_e2e::pods::{self, Pod};
use causeway_e2e::suite::{
    Suite, apply_gateway, client_routes, gateway_json, label, our_nexthops, our_routes, pod_on,
    stop_client, the_client, wait_gateway_ready,
};
use causeway_e2e::topology::{Topology, presets};
use causeway_e2e::traffic::{self, wait_for};
use causeway_e2e::{Cluster, deploy, testing};
use serde_json::Value;

const RACK_A: [&str; 3] = ["node-a", "node-b", "node-c"];
const ALL: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];
const ZONE: &str = presets::ZONE;
/// Long on purpose: proxy entries must follow pods faster than this.
const RESYNC_SECONDS: u64 = 30;
const LEASE_SECONDS: u64 = 10;

static SUITE: Suite = Suite::new(&ALL, RESYNC_SECONDS, LEASE_SECONDS);

const FLAT: &str = "flat6";
const FLAT_CIDR: &str = "10.250.0.0/16";
const FLAT_CIDR6: &str = "fd00:10:250::/56";
const ROUTED: &str = "routed6";
const OVERLAY: &str = "overlay6";
const OVERLAY_CIDR: &str = "10.252.0.0/16";
const OVERLAY_CIDR6: &str = "fd00:10:252::/56";
/// The RouteToNodes gateway's entry nodes (label `causeway.dev/gateway=true`).
const ENTRIES: [&str; 2] = ["node-a", "node-b"];

fn main() -> ExitCode {
    // The cluster's name (namespaces, /run/causeway-e2e/dualstk): 1-8 letters or digits.
    testing::run_suite(
        "dualstk",
        topology,
        vec![
            testing::test(
                "flat_pods_get_both_addresses_and_ping_each_other_across_nodes_over_ipv6_and_ipv4",
                flat_connectivity,
            ),
            testing::test(
                "flat_a_non_node_host_with_an_on_link_route_reaches_pods_over_ipv6_answered_by_the_pods_node_only",
                flat_client,
            ),
            testing::test(
                "flat_a_proxy_entry_deleted_by_hand_makes_its_pod_unreachable_until_the_agent_restores_it",
                flat_proxy_entry_repaired,
            ),
            testing::test(
                "flat_a_new_pods_proxy_entry_appears_before_it_sends_anything_and_goes_with_the_pod",
                flat_pod_churn,
            ),
            testing::test(
                "deleting_the_flat_network_removes_both_routes_proxy_ndp_and_every_proxy_entry",
                flat_deleted,
            ),
            testing::test(
                "routed_static_routes_each_peers_ipv6_subnet_via_its_ipv6_address_and_pods_ping_over_both_families",
                routed_static,
            ),
            testing::test(
                "routed_pod_traffic_leaving_the_ranges_is_masqueraded_per_family_except_to_exclusions",
                routed_nat,
            ),
            testing::test(
                "routed_static_names_the_off_segment_node_for_both_families",
                routed_off_segment,
            ),
            testing::test(
                "overlay_route_to_nodes_a_client_with_the_rendered_ipv6_and_ipv4_routes_reaches_every_pod_and_pods_reach_it",
                overlay_route_to_nodes,
            ),
            testing::test(
                "overlay_bridge_hosts_the_active_host_holds_both_vips_and_an_ipv6_client_keeps_reaching_pods_when_it_fails",
                overlay_bridge_hosts,
            ),
            testing::test(
                "overlay_bridge_hosts_with_snat_masquerades_ipv6_clients_on_both_candidates_only_and_pods_see_the_active_host",
                overlay_bridge_hosts_snat6,
            ),
            testing::test(
                "overlay_client_join_a_dual_stack_client_reaches_pods_over_both_families_at_its_own_overlay_addresses",
                overlay_client_join,
            ),
            testing::test(
                "overlay_route_to_nodes_without_ipv6_client_cidrs_renders_ipv4_only_and_says_how_to_add_ipv6",
                overlay_route_to_nodes_ipv4_only,
            ),
            testing::test(
                "overlay_ipv6_first_tunnels_over_ipv6_and_gives_pods_their_ipv6_address_first",
                overlay_ipv6_first,
            ),
        ],
    )
}

/// The dual-stack two-segment topology with zone labels: rack-a is lan-a, rack-b is lan-b.
fn topology() -> Topology {
    presets::racks(presets::two_segments_dual_stack())
}

/// A dual-stack PodNetwork over the rack-a nodes.
fn network(name: &str, cidr: &str, cidr6: &str, mode: &str) -> Value {
    causeway_e2e::suite::pod_network(
        name,
        cidr,
        mode,
        serde_json::json!({
            "secondaryCidr": cidr6,
            "secondaryNodeSubnetPrefixLength": 64,
            "nodeSelector": {"matchLabels": {ZONE: "rack-a"}},
        }),
    )
}

/// The pods of network `name` (`prefix` names them), bringing it up over rack-a if they are
/// not there.
fn pods_of(c: &Cluster, name: &str, prefix: &str, pn: impl Fn() -> Value) -> Result<Vec<Pod>> {
    let pods = SUITE.pods();
    if pods.first().is_some_and(|p| p.name.starts_with(prefix)) {
        return Ok(pods);
    }
    let pn = pn();
    SUITE.bring_up(c, &pn.to_string(), name, &RACK_A, prefix)
}

fn flat_pods(c: &Cluster) -> Result<Vec<Pod>> {
    pods_of(c, FLAT, "f", || {
        network(FLAT, FLAT_CIDR, FLAT_CIDR6, "Flat")
    })
}

fn ipv6_of(pod: &Pod) -> Result<Ipv6Addr> {
    pods::first_ipv6(&pod.result)
        .with_context(|| format!("{}/{} has no IPv6 address", pod.node, pod.name))
}

/// `ip -6 route show proto 249` on `node`, one trimmed line per route.
fn our_routes6(c: &Cluster, node: &str) -> Result<Vec<String>> {
    let out = c.exec(node, "ip", &["-6", "route", "show", "proto", "249"])?;
    Ok(out.lines().map(|l| l.trim().to_string()).collect())
}

/// The IPv6 addresses `node` answers NDP for on eth0 with the agent's mark (proto 249).
fn proxied(c: &Cluster, node: &str) -> Result<BTreeSet<Ipv6Addr>> {
    let out = c.exec(node, "ip", &["-6", "neigh", "show", "proxy", "dev", "eth0"])?;
    let mut set = BTreeSet::new();
    for line in out.lines().filter(|l| l.contains("proto 249")) {
        let first = line.split_whitespace().next().unwrap_or_default();
        set.insert(
            first
                .parse()
                .with_context(|| format!("{node}: proxy line {line:?}"))?,
        );
    }
    Ok(set)
}

fn sysctl(c: &Cluster, node: &str, path: &str) -> Result<String> {
    Ok(c.exec(node, "cat", &[&format!("/proc/sys/net/{path}")])?
        .trim()
        .to_string())
}

fn mac(c: &Cluster, host: &str) -> Result<String> {
    let out = c.exec(host, "ip", &["-j", "link", "show", "eth0"])?;
    let links: Value = serde_json::from_str(&out)?;
    links[0]["address"]
        .as_str()
        .map(str::to_string)
        .context("eth0 has no address")
}

/// The link-layer address `host` holds for IPv6 neighbour `ip` on eth0, if any.
fn neighbour_mac(c: &Cluster, host: &str, ip: Ipv6Addr) -> Result<Option<String>> {
    let out = c.exec(
        host,
        "ip",
        &["-j", "-6", "neigh", "show", &ip.to_string(), "dev", "eth0"],
    )?;
    let entries: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
    Ok(entries
        .as_array()
        .and_then(|a| a.iter().find_map(|e| e["lladdr"].as_str()))
        .map(str::to_string))
}

/// Each pair of pods on different nodes pings over IPv6 (retried while the target's address
/// finishes DAD) and over IPv4.
fn ping_both_families(pods: &[Pod]) -> Result<usize> {
    let mut pairs = 0;
    for from in pods {
        for to in pods.iter().filter(|to| to.node != from.node) {
            let to6 = ipv6_of(to)?;
            wait_for("IPv6 ping", Duration::from_secs(5), || {
                traffic::expect_ping6(&from.netns, to6)
            })
            .with_context(|| {
                format!(
                    "{}/{} -> {}/{} ({to6}) over IPv6",
                    from.node, from.name, to.node, to.name
                )
            })?;
            traffic::expect_ping(&from.netns, to.ip).with_context(|| {
                format!(
                    "{}/{} -> {}/{} ({}) over IPv4",
                    from.node, from.name, to.node, to.name, to.ip
                )
            })?;
            pairs += 1;
        }
    }
    Ok(pairs)
}

fn flat_connectivity(c: &Cluster) -> Result<()> {
    let pods = flat_pods(c)?;
    ensure!(pods.len() == 6, "{} pods", pods.len());
    for s in deploy::node_subnets(c, FLAT)? {
        let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
        ensure!(
            s["spec"]["secondaryCidr"]
                .as_str()
                .is_some_and(|v| v.starts_with("fd00:10:250:")),
            "{node} has no IPv6 subnet: {}",
            s["spec"]
        );
        ensure!(
            s["spec"]["secondaryNodeAddress"]
                .as_str()
                .is_some_and(|v| v.starts_with("fd00:50::")),
            "{node} has no IPv6 node address: {}",
            s["spec"]
        );
    }
    let mut by_node: BTreeMap<String, BTreeSet<Ipv6Addr>> = BTreeMap::new();
    for p in &pods {
        by_node
            .entry(p.node.clone())
            .or_default()
            .insert(ipv6_of(p)?);
    }
    for node in RACK_A {
        // One route per family for the whole range, no per-peer state.
        let v4 = our_routes(c, node)?;
        ensure!(
            v4 == [format!("{FLAT_CIDR} dev eth0 scope link")],
            "{node}: IPv4 routes {v4:?}"
        );
        let v6 = our_routes6(c, node)?;
        ensure!(
            v6.len() == 1 && v6[0].starts_with(&format!("{FLAT_CIDR6} dev eth0 ")),
            "{node}: IPv6 routes {v6:?}"
        );
        ensure!(
            sysctl(c, node, "ipv4/conf/eth0/proxy_arp")? == "1",
            "{node}: proxy_arp"
        );
        ensure!(
            sysctl(c, node, "ipv6/conf/eth0/proxy_ndp")? == "1",
            "{node}: proxy_ndp"
        );
        ensure!(
            sysctl(c, node, "ipv6/conf/all/forwarding")? == "1",
            "{node}: IPv6 forwarding"
        );
        // Exactly this node's pods: one entry each, none for another node's pod.
        let want = by_node.get(node).cloned().unwrap_or_default();
        wait_for(
            &format!("{node}'s proxy entries"),
            Duration::from_secs(5),
            || {
                let got = proxied(c, node)?;
                ensure!(got == want, "{node} proxies {got:?}, its pods are {want:?}");
                Ok(())
            },
        )?;
    }
    let pairs = ping_both_families(&pods)?;
    eprintln!("[measure] flat: {pairs} pod pairs across nodes ping over IPv6 and IPv4");
    // Every node resolved other nodes' pods to the pod's node: nobody else answered.
    let mut resolved = 0;
    for node in RACK_A {
        for p in pods.iter().filter(|p| p.node != node) {
            let ip = ipv6_of(p)?;
            let owner = mac(c, &p.node)?;
            if let Some(seen) = neighbour_mac(c, node, ip)? {
                ensure!(
                    seen == owner,
                    "{node} resolved {ip} ({}'s pod) to {seen}, not {}'s {owner}",
                    p.node,
                    p.node
                );
                resolved += 1;
            }
        }
    }
    // Forwarding pod traffic made each node resolve the other nodes' pods it sent to.
    ensure!(
        resolved >= 6,
        "only {resolved} neighbour entries for other nodes' pods"
    );
    Ok(())
}

fn flat_client(c: &Cluster) -> Result<()> {
    let pods = flat_pods(c)?;
    let client = the_client(c)?;
    let ns = c.ns(&client.name);
    c.exec(
        &client.name,
        "ip",
        &["-6", "route", "replace", FLAT_CIDR6, "dev", "eth0"],
    )?;
    let result = (|| -> Result<()> {
        for pod in &pods {
            let ip = ipv6_of(pod)?;
            // Forget any earlier answer, so the check below reads this solicitation's.
            c.exec(
                &client.name,
                "ip",
                &["-6", "neigh", "flush", "to", &ip.to_string()],
            )?;
            wait_for("client -> pod over IPv6", Duration::from_secs(5), || {
                traffic::expect_ping6(&ns, ip)
            })
            .with_context(|| format!("client -> {}/{} ({ip})", pod.node, pod.name))?;
            let owner = mac(c, &pod.node)?;
            let seen = neighbour_mac(c, &client.name, ip)?;
            ensure!(
                seen.as_deref() == Some(owner.as_str()),
                "the client resolved {ip} ({}'s pod) to {seen:?}, expected {}'s eth0 {owner}",
                pod.node,
                pod.node
            );
        }
        traffic::tcp_check6(&pods[0].netns, &ns, ipv6_of(&pods[0])?, 7461)?;
        Ok(())
    })();
    c.exec(&client.name, "ip", &["-6", "route", "del", FLAT_CIDR6])?;
    result
}

/// Proxy NDP is what makes a pod reachable: with its entry deleted by hand, the pod's node no
/// longer answers for it and the non-node host cannot reach it, until the agent's next pass
/// (the resync at the latest) restores the entry.
fn flat_proxy_entry_repaired(c: &Cluster) -> Result<()> {
    let pods = flat_pods(c)?;
    let pod = pods
        .iter()
        .find(|p| p.node == "node-c")
        .context("a pod on node-c")?;
    let ip = ipv6_of(pod)?;
    let client = the_client(c)?;
    let ns = c.ns(&client.name);
    c.exec(
        &client.name,
        "ip",
        &["-6", "route", "replace", FLAT_CIDR6, "dev", "eth0"],
    )?;
    let result = (|| -> Result<()> {
        c.exec(
            &pod.node,
            "ip",
            &[
                "-6",
                "neigh",
                "del",
                "proxy",
                &ip.to_string(),
                "dev",
                "eth0",
            ],
        )?;
        let removed = Instant::now();
        c.exec(
            &client.name,
            "ip",
            &["-6", "neigh", "flush", "to", &ip.to_string()],
        )?;
        traffic::expect_no_ping6(&ns, ip)
            .with_context(|| format!("{ip} answered without its proxy entry"))?;
        wait_for(
            "the agent restores the proxy entry",
            Duration::from_secs(RESYNC_SECONDS + 5),
            || {
                ensure!(proxied(c, &pod.node)?.contains(&ip), "not yet");
                Ok(())
            },
        )?;
        eprintln!(
            "[measure] a proxy entry deleted by hand was back {} ms later (resync every {RESYNC_SECONDS} s)",
            removed.elapsed().as_millis()
        );
        c.exec(
            &client.name,
            "ip",
            &["-6", "neigh", "flush", "to", &ip.to_string()],
        )?;
        wait_for(
            "client -> pod after the repair",
            Duration::from_secs(5),
            || traffic::expect_ping6(&ns, ip),
        )
    })();
    c.exec(&client.name, "ip", &["-6", "route", "del", FLAT_CIDR6])?;
    result
}

fn flat_pod_churn(c: &Cluster) -> Result<()> {
    let pods = flat_pods(c)?;
    let node = "node-b";
    let added = Instant::now();
    let pod = pods::add(c, node, "fnew")?;
    let result = (|| -> Result<()> {
        let ip = ipv6_of(&pod)?;
        // host-local's allocation is all the agent needs: the entry is there before anyone
        // talks to the pod.
        wait_for("the new pod's proxy entry", Duration::from_secs(5), || {
            ensure!(
                proxied(c, node)?.contains(&ip),
                "{node} does not proxy {ip}"
            );
            Ok(())
        })?;
        eprintln!(
            "[measure] new pod's proxy entry on {node} {} ms after CNI ADD began",
            added.elapsed().as_millis()
        );
        for other in RACK_A.iter().filter(|n| **n != node) {
            ensure!(!proxied(c, other)?.contains(&ip), "{other} proxies {ip}");
        }
        let from = pods
            .iter()
            .find(|p| p.node == "node-a")
            .context("a pod on node-a")?;
        wait_for(
            "node-a pod -> new pod over IPv6",
            Duration::from_secs(5),
            || traffic::expect_ping6(&from.netns, ip),
        )?;
        Ok(())
    })();
    let ip = ipv6_of(&pod);
    let deleted = Instant::now();
    pods::del(c, &pod)?;
    result?;
    let ip = ip?;
    wait_for(
        "the deleted pod's proxy entry goes",
        Duration::from_secs(5),
        || {
            ensure!(
                !proxied(c, node)?.contains(&ip),
                "{node} still proxies {ip}"
            );
            Ok(())
        },
    )?;
    eprintln!(
        "[measure] deleted pod's proxy entry gone on {node} {} ms after CNI DEL began",
        deleted.elapsed().as_millis()
    );
    // The other pods' entries stay.
    let left = proxied(c, node)?;
    for p in pods.iter().filter(|p| p.node == node) {
        ensure!(
            left.contains(&ipv6_of(p)?),
            "{node} lost {}'s entry: {left:?}",
            p.name
        );
    }
    Ok(())
}

/// Detaches the pods, deletes network `name` and waits until no node holds anything of it.
fn tear_down(c: &Cluster, name: &str) -> Result<()> {
    for pod in SUITE.take_pods() {
        pods::del(c, &pod)?;
    }
    c.kubectl(&["delete", "podnetwork", name, "--wait=true", "--timeout=60s"])?;
    for node in ALL {
        wait_for(&format!("{node} is clean"), Duration::from_secs(15), || {
            ensure!(our_routes(c, node)?.is_empty(), "IPv4 routes left");
            ensure!(our_nexthops(c, node)?.is_empty(), "nexthop objects left");
            ensure!(our_routes6(c, node)?.is_empty(), "IPv6 routes left");
            ensure!(proxied(c, node)?.is_empty(), "proxy entries left");
            ensure!(
                sysctl(c, node, "ipv6/conf/eth0/proxy_ndp")? == "0",
                "proxy_ndp on"
            );
            ensure!(
                sysctl(c, node, "ipv4/conf/eth0/proxy_arp")? == "0",
                "proxy_arp on"
            );
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

fn flat_deleted(c: &Cluster) -> Result<()> {
    flat_pods(c)?;
    ensure!(
        !proxied(c, "node-a")?.is_empty(),
        "node-a proxies nothing before"
    );
    tear_down(c, FLAT)
}

fn routed_pods(c: &Cluster) -> Result<Vec<Pod>> {
    pods_of(c, ROUTED, "r", || {
        network(ROUTED, "10.251.0.0/16", "fd00:10:251::/56", "Routed")
    })
}

fn routed_static(c: &Cluster) -> Result<()> {
    let pods = routed_pods(c)?;
    let subnets = deploy::node_subnets(c, ROUTED)?;
    ensure!(subnets.len() == 3, "{} NodeSubnets", subnets.len());
    let field = |s: &Value, f: &str| s["spec"][f].as_str().unwrap_or_default().to_string();
    for node in RACK_A {
        let mut want4 = Vec::new();
        let mut want6 = Vec::new();
        for s in subnets.iter().filter(|s| s["spec"]["nodeName"] != node) {
            want4.push(format!(
                "{} via {} dev eth0",
                field(s, "cidr"),
                field(s, "nodeAddress")
            ));
            want6.push(format!(
                "{} via {} dev eth0",
                field(s, "secondaryCidr"),
                field(s, "secondaryNodeAddress")
            ));
        }
        want4.sort();
        want6.sort();
        let mut got4 = our_routes(c, node)?;
        got4.sort();
        ensure!(
            got4 == want4,
            "{node}: IPv4 routes {got4:?}, expected {want4:?}"
        );
        let mut got6 = our_routes6(c, node)?;
        got6.sort();
        ensure!(
            got6.len() == want6.len()
                && got6
                    .iter()
                    .zip(&want6)
                    .all(|(g, w)| g.starts_with(w.as_str())),
            "{node}: IPv6 routes {got6:?}, expected {want6:?}"
        );
        ensure!(
            proxied(c, node)?.is_empty(),
            "{node}: proxy entries in Routed mode"
        );
        ensure!(
            sysctl(c, node, "ipv6/conf/eth0/proxy_ndp")? == "0",
            "{node}: proxy_ndp"
        );
        let nat6 = c.exec(node, "nft", &["list", "table", "ip6", "causeway"])?;
        ensure!(
            nat6.contains("masquerade") && nat6.contains("fd00:10:251::/56"),
            "{node}: ip6 causeway {nat6}"
        );
    }
    let pairs = ping_both_families(&pods)?;
    eprintln!("[measure] routed: {pairs} pod pairs across nodes ping over IPv6 and IPv4");
    Ok(())
}

/// Outgoing NAT per family: node-d (lan-b, behind r1, not in the network yet) sees a pod's
/// connections from its node's IPv4 and IPv6 addresses; between pods nothing is rewritten;
/// an IPv6 exclusion leaves the IPv4 rule alone and makes node-d see (and be unable to
/// answer) the pod's own IPv6 address.
fn routed_nat(c: &Cluster) -> Result<()> {
    let pods = routed_pods(c)?;
    let (a, b) = (pod_on(&pods, "node-a")?, pod_on(&pods, "node-b")?);
    let subnets = deploy::node_subnets(c, ROUTED)?;
    let of_a = subnets
        .iter()
        .find(|s| s["spec"]["nodeName"] == "node-a")
        .context("node-a's NodeSubnet")?;
    let a4: std::net::Ipv4Addr = of_a["spec"]["nodeAddress"]
        .as_str()
        .context("nodeAddress")?
        .parse()?;
    let a6: Ipv6Addr = of_a["spec"]["secondaryNodeAddress"]
        .as_str()
        .context("secondaryNodeAddress")?
        .parse()?;
    let d = c
        .topology
        .nodes
        .iter()
        .find(|h| h.name == "node-d")
        .context("node-d in the topology")?;
    let d6 = d.address6.context("node-d has no IPv6 address")?;
    let d_ns = c.ns("node-d");
    let seen4 = traffic::tcp_seen_source(&d_ns, &a.netns, d.address, 7311)?;
    let seen6 = traffic::tcp_seen_source6(&d_ns, &a.netns, d6, 7312)?;
    ensure!(
        seen4 == a4 && seen6 == a6,
        "node-d saw a pod on node-a as {seen4} and {seen6}, not node-a's {a4} and {a6}"
    );
    let b6 = ipv6_of(b)?;
    let inside = traffic::tcp_seen_source6(&b.netns, &a.netns, b6, 7313)?;
    let a_pod6 = ipv6_of(a)?;
    ensure!(
        inside == a_pod6,
        "pod-to-pod IPv6 traffic was rewritten to {inside} (the pod is {a_pod6})"
    );

    // An IPv6 exclusion: lan-b sees the pod's IPv6 address, which it cannot answer; IPv4
    // is still masqueraded.
    let lan_b6 = "fd00:60::/64";
    causeway_e2e::suite::patch_network(
        c,
        ROUTED,
        &serde_json::json!({"spec": {"natExcludeCidrs": [lan_b6]}}).to_string(),
    )?;
    let result = (|| -> Result<()> {
        wait_for(
            "node-a exempts lan-b over IPv6",
            Duration::from_secs(10),
            || {
                let nat6 = c.exec("node-a", "nft", &["list", "table", "ip6", "causeway"])?;
                ensure!(nat6.contains(lan_b6), "{nat6}");
                Ok(())
            },
        )?;
        traffic::expect_no_ping6(&a.netns, d6)?;
        let seen4 = traffic::tcp_seen_source(&d_ns, &a.netns, d.address, 7314)?;
        ensure!(
            seen4 == a4,
            "IPv4 to node-d was not masqueraded after an IPv6 exclusion: {seen4}"
        );
        Ok(())
    })();
    causeway_e2e::suite::patch_network(c, ROUTED, r#"{"spec":{"natExcludeCidrs":null}}"#)?;
    result?;
    wait_for(
        "node-d answers pods over IPv6 again",
        Duration::from_secs(10),
        || traffic::expect_ping6(&a.netns, d6),
    )?;
    eprintln!(
        "[measure] routed NAT: node-d saw node-a's pod as {a4} and {a6}; with {lan_b6} excluded it could not answer the pod over IPv6, IPv4 still masqueraded"
    );
    Ok(())
}

fn routed_off_segment(c: &Cluster) -> Result<()> {
    routed_pods(c)?;
    let patch = serde_json::json!({"spec": {"nodeSelector": {
        "matchLabels": null,
        "matchExpressions": [{"key": ZONE, "operator": "In", "values": ["rack-a", "rack-b"]}],
    }}});
    c.kubectl(&[
        "patch",
        "podnetwork",
        ROUTED,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])?;
    let result = wait_for(
        "node-a names node-d for both families",
        Duration::from_secs(30),
        || {
            let subnets = deploy::node_subnets(c, ROUTED)?;
            let d = subnets
                .iter()
                .find(|s| s["spec"]["nodeName"] == "node-d")
                .context("node-d has no NodeSubnet yet")?;
            let d6 = d["spec"]["secondaryCidr"]
                .as_str()
                .context("node-d has no IPv6 subnet yet")?
                .to_string();
            let a = subnets
                .iter()
                .find(|s| s["spec"]["nodeName"] == "node-a")
                .context("node-a's NodeSubnet")?;
            let messages: Vec<String> = a["status"]["conditions"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c["message"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let all = messages.join("\n");
            ensure!(
                all.contains("(node node-d) is unreachable: its node address 192.168.60.11")
                    && all.contains(&format!(
                        "(node node-d): its IPv6 subnet {d6} is unreachable: its IPv6 node address fd00:60::11 is not on this node's IPv6 segment fd00:50::/64"
                    )),
                "node-a's conditions: {all}"
            );
            // And node-a programs nothing towards node-d, in either family.
            let routes = [our_routes(c, "node-a")?, our_routes6(c, "node-a")?].concat();
            ensure!(
                !routes
                    .iter()
                    .any(|r| r.contains("192.168.60.11") || r.contains(&d6)),
                "node-a routes towards node-d: {routes:?}"
            );
            Ok(all)
        },
    );
    if let Ok(all) = &result {
        eprintln!("[measure] node-a's conditions name node-d: {all}");
    }
    let teardown = tear_down(c, ROUTED);
    result.map(drop).and(teardown)
}

/// The dual-stack Overlay network over all four nodes (node-d behind r1 included), two pods
/// each.
fn overlay_pods(c: &Cluster) -> Result<Vec<Pod>> {
    let pods = SUITE.pods();
    if pods.first().is_some_and(|p| p.name.starts_with('o')) {
        return Ok(pods);
    }
    let pn = causeway_e2e::suite::pod_network(
        OVERLAY,
        OVERLAY_CIDR,
        "Overlay",
        serde_json::json!({
            "secondaryCidr": OVERLAY_CIDR6,
            "secondaryNodeSubnetPrefixLength": 64,
        }),
    );
    SUITE.bring_up(c, &pn.to_string(), OVERLAY, &ALL, "o")
}

/// The gateway `office6` on the network, entering at [`ENTRIES`], for `client_cidrs`.
fn apply_office(c: &Cluster, client_cidrs: &[&str]) -> Result<()> {
    for node in ENTRIES {
        label(c, node, "causeway.dev/gateway=true")?;
    }
    apply_gateway(
        c,
        "office6",
        serde_json::json!({
            "network": OVERLAY,
            "strategy": "RouteToNodes",
            "clientCidrs": client_cidrs,
            "routeToNodes": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}},
        }),
    )?;
    wait_gateway_ready(c, "office6")
}

/// `status.clientRoutes` and the Ready message of `office6`.
fn office(c: &Cluster) -> Result<(Vec<String>, String)> {
    let gw = gateway_json(c, "office6")?;
    let routes = gw["status"]["clientRoutes"]
        .as_array()
        .context("no clientRoutes")?
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let message = gw["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string();
    Ok((routes, message))
}

/// The lines the operator should render from the NodeSubnets as they are: per entry node its
/// subnet via its address, then the range via the entries (multipath), IPv4 then IPv6.
fn expected_routes(c: &Cluster, ipv6: bool) -> Result<Vec<String>> {
    let subnets = deploy::node_subnets(c, OVERLAY)?;
    let field = |node: &str, f: &str| -> Result<String> {
        let s = subnets
            .iter()
            .find(|s| s["spec"]["nodeName"] == node)
            .with_context(|| format!("{node} has no NodeSubnet"))?;
        s["spec"][f]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{node}'s NodeSubnet has no {f}: {}", s["spec"]))
    };
    let mut lines = Vec::new();
    let families: &[(&str, &str, &str, &str)] = if ipv6 {
        &[
            ("ip", "cidr", "nodeAddress", OVERLAY_CIDR),
            (
                "ip -6",
                "secondaryCidr",
                "secondaryNodeAddress",
                OVERLAY_CIDR6,
            ),
        ]
    } else {
        &[("ip", "cidr", "nodeAddress", OVERLAY_CIDR)]
    };
    for (ip, cidr, address, range) in families {
        let mut hops = Vec::new();
        for node in ENTRIES {
            let via = field(node, address)?;
            lines.push(format!("{ip} route add {} via {via}", field(node, cidr)?));
            hops.push(format!("nexthop via {via}"));
        }
        lines.push(format!("{ip} route add {range} {}", hops.join(" ")));
    }
    Ok(lines)
}

/// Waits until `office6` renders `want`, returning its Ready message.
fn wait_rendered(c: &Cluster, want: &[String]) -> Result<String> {
    wait_for(
        "the rendered client routes",
        Duration::from_secs(30),
        || {
            let (routes, message) = office(c)?;
            ensure!(
                routes == want,
                "rendered {routes:?}, expected {want:?} ({message})"
            );
            Ok(message)
        },
    )
}

/// Pastes `routes` on `client` exactly as given (each an `ip` command).
fn paste(c: &Cluster, client: &str, routes: &[String]) -> Result<()> {
    for line in routes {
        let words: Vec<&str> = line.split_whitespace().collect();
        ensure!(words.first() == Some(&"ip"), "not an ip command: {line}");
        c.exec(client, "ip", &words[1..])?;
    }
    Ok(())
}

/// Removes pasted `routes` from `client` (best effort: cleanup).
fn unpaste(c: &Cluster, client: &str, routes: &[String]) {
    for line in routes {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(at) = words.iter().position(|w| *w == "add") {
            let mut del: Vec<&str> = words[1..at].to_vec();
            del.extend(["del", words.get(at + 1).copied().unwrap_or_default()]);
            let _ = c.exec(client, "ip", &del);
        }
    }
}

/// The client's IPv6 next hop towards `dst` (`ip -6 route get`).
fn next_hop6(c: &Cluster, host: &str, dst: Ipv6Addr) -> Result<String> {
    let out = c.exec(host, "ip", &["-6", "route", "get", &dst.to_string()])?;
    let words: Vec<&str> = out.split_whitespace().collect();
    Ok(words
        .iter()
        .position(|w| *w == "via")
        .and_then(|i| words.get(i + 1))
        .map_or_else(|| format!("on-link ({})", out.trim()), |v| (*v).to_string()))
}

/// The client (in `client_ns`) and `pod` ping each other over both families; the client is
/// `client4` and `client6` to the pod (retried while a new path settles over IPv6).
fn ping_both_ways(client_ns: &str, pod: &Pod, client4: Ipv4Addr, client6: Ipv6Addr) -> Result<()> {
    let ip6 = ipv6_of(pod)?;
    wait_for("client -> pod over IPv6", Duration::from_secs(5), || {
        traffic::expect_ping6(client_ns, ip6)
    })
    .with_context(|| format!("client -> {}/{} ({ip6})", pod.node, pod.name))?;
    traffic::expect_ping(client_ns, pod.ip)
        .with_context(|| format!("client -> {}/{} ({})", pod.node, pod.name, pod.ip))?;
    wait_for("pod -> client over IPv6", Duration::from_secs(5), || {
        traffic::expect_ping6(&pod.netns, client6)
    })
    .with_context(|| format!("{}/{} -> client ({client6})", pod.node, pod.name))?;
    traffic::expect_ping(&pod.netns, client4)
        .with_context(|| format!("{}/{} -> client ({client4})", pod.node, pod.name))
}

fn overlay_route_to_nodes(c: &Cluster) -> Result<()> {
    let pods = overlay_pods(c)?;
    ensure!(pods.len() == 8, "{} pods", pods.len());
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    let client6 = client.address6.context("the client has no IPv6 address")?;
    let client4: Ipv4Addr = client.address;
    // Every agent reports its IPv6 underlay prefix next to the IPv4 one.
    wait_for(
        "every NodeSubnet reports its IPv6 underlay prefix",
        Duration::from_secs(30),
        || {
            for s in deploy::node_subnets(c, OVERLAY)? {
                let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
                let want = if node == "node-d" {
                    "fd00:60::/64"
                } else {
                    "fd00:50::/64"
                };
                ensure!(
                    s["status"]["secondaryUnderlayPrefix"] == want,
                    "{node}: status {}",
                    s["status"]
                );
            }
            Ok(())
        },
    )?;
    apply_office(c, &["192.168.50.0/24", "fd00:50::/64"])?;
    let want = expected_routes(c, true)?;
    let message = wait_rendered(c, &want)?;
    ensure!(
        message.contains(
            "Clients reach the pods of PodNetwork overlay6 over IPv4 through node-a, node-b and over IPv6 through node-a, node-b:"
        ),
        "Ready: {message}"
    );
    eprintln!(
        "[measure] office6 clientRoutes:\n{}\nReady: {message}",
        want.join("\n")
    );
    paste(c, &client.name, &want)?;
    let result = (|| -> Result<()> {
        let entries6 = entries6(c)?;
        let mut checked = 0;
        for pod in &pods {
            let ip6 = ipv6_of(pod)?;
            // The client's packet takes a pasted route to an entry node, never another path.
            let hop = next_hop6(c, &client.name, ip6)?;
            ensure!(
                entries6.contains(&hop),
                "the client routes {ip6} ({}'s pod) via {hop}, not an entry node {entries6:?}",
                pod.node
            );
            ping_both_ways(&client_ns, pod, client4, client6)?;
            checked += 1;
        }
        // TCP to a pod on every node, over IPv6; and the pod sees the client's own address
        // (nothing masquerades the client's traffic on its way in, nor the replies out).
        for (i, node) in ALL.iter().enumerate() {
            let pod = pods
                .iter()
                .find(|p| p.node == *node)
                .with_context(|| format!("a pod on {node}"))?;
            let port = 7600 + u16::try_from(i)?;
            let ip6 = ipv6_of(pod)?;
            // The reply leaves the pod's node on the underlay (straight to the client, or to
            // r1 from node-d), never back into the tunnel it came through.
            let back = c.exec(
                node,
                "ip",
                &[
                    "-6",
                    "route",
                    "get",
                    &client6.to_string(),
                    "from",
                    &ip6.to_string(),
                    "iif",
                    "cw-br0",
                ],
            )?;
            ensure!(
                back.contains("dev eth0") && !back.contains("cw-vx"),
                "{node} sends its pod's reply to the client by {back}"
            );
            traffic::tcp_check6(&pod.netns, &client_ns, ip6, port)
                .with_context(|| format!("TCP client -> {node}'s pod [{ip6}]:{port}"))?;
            let seen = traffic::tcp_seen_source6(&pod.netns, &client_ns, ip6, port + 100)?;
            ensure!(
                seen == client6,
                "{node}'s pod saw the client as {seen}, not {client6}"
            );
        }
        let d = pod_on(&pods, "node-d")?;
        traffic::tcp_check(&d.netns, &client_ns, d.ip, 7700)?;
        packet_too_big(c, &client.name, &pods)?;
        eprintln!(
            "[measure] route_to_nodes: the client reached {checked} pods on 4 nodes over IPv6 and IPv4 (ping), TCP over IPv6 to a pod on each node with its own address seen, and every pod pinged the client over both families"
        );
        Ok(())
    })();
    unpaste(c, &client.name, &want);
    result
}

/// The BridgeHosts candidates of [`overlay_bridge_hosts`] (label `causeway.dev/bridge=true`).
const BRIDGES: [&str; 2] = ["node-b", "node-c"];
const VIP: &str = "192.168.50.250";
const VIP6: &str = "fd00:50::250";
/// A network behind the client (only the bridge hosts route it, via the client): replies to
/// it from every other node take the return route through the active host.
const BEHIND6: &str = "fd00:80::/64";
const BEHIND6_CLIENT: &str = "fd00:80::10";

/// Nodes among [`BRIDGES`] whose underlay holds `vip` (`/32` or `/128`).
fn holders(c: &Cluster, vip: &str) -> Result<Vec<String>> {
    let (family, len) = if vip.contains(':') {
        ("-6", 128)
    } else {
        ("-4", 32)
    };
    let mut out = Vec::new();
    for node in BRIDGES {
        let addrs = c.exec(node, "ip", &[family, "-o", "addr", "show", "dev", "eth0"])?;
        if addrs.contains(&format!("{vip}/{len}")) {
            out.push(node.to_string());
        }
    }
    Ok(out)
}

fn bridge_active(c: &Cluster) -> Result<Option<String>> {
    Ok(gateway_json(c, "bridge6")?["status"]["activeHost"]
        .as_str()
        .map(str::to_string))
}

/// Waits until both VIPs of `bridge6` are on `host` and nowhere else.
fn wait_vips_on(c: &Cluster, host: &str) -> Result<()> {
    wait_these_vips_on(c, host, [VIP, VIP6])
}

/// Waits until `vips` are on `host` and nowhere else.
fn wait_these_vips_on(c: &Cluster, host: &str, vips: [&str; 2]) -> Result<()> {
    wait_for(
        "both VIPs on the active host only",
        Duration::from_secs(10),
        || {
            for vip in vips {
                let on = holders(c, vip)?;
                ensure!(on == [host], "{vip} on {on:?}, not {host}");
            }
            Ok(())
        },
    )
}

/// The client's neighbour entry for the IPv6 VIP names `host`'s underlay MAC.
fn client_resolves_vip6_to(c: &Cluster, client: &str, host: &str) -> Result<()> {
    let want = mac(c, host)?;
    wait_for(
        "the client's neighbour entry for the IPv6 VIP",
        Duration::from_secs(5),
        || {
            let got = neighbour_mac(c, client, VIP6.parse()?)?;
            ensure!(
                got.as_deref() == Some(want.as_str()),
                "{got:?}, {host} is {want}"
            );
            Ok(())
        },
    )
}

/// One failover of `bridge6`: `cause` breaks `holder` while the client pings the pod at `pod`
/// on node-d from [`BEHIND6_CLIENT`] every 20 ms (the replies take the nodes' IPv6 return
/// routes); the standby must take both VIPs with a longest gap under 3 s, the IPv4 bound.
/// Returns the new holder.
fn failover6(
    c: &Cluster,
    client_ns: &str,
    pod: Ipv6Addr,
    holder: &str,
    what: &str,
    cause: impl FnOnce() -> Result<()>,
) -> Result<String> {
    let mut ping = std::process::Command::new("ip");
    ping.args([
        "netns",
        "exec",
        client_ns,
        "ping",
        "-6",
        "-I",
        BEHIND6_CLIENT,
    ]);
    let ping = traffic::ContinuousPing::start_with(ping, pod, Duration::from_millis(20))?;
    std::thread::sleep(Duration::from_secs(1));
    let caused = cause();
    let after = wait_for("a new active host", Duration::from_secs(20), || {
        let now = bridge_active(c)?;
        ensure!(now.as_deref().is_some_and(|n| n != holder), "still {now:?}");
        Ok(now.unwrap_or_default())
    });
    std::thread::sleep(Duration::from_secs(2));
    let report = ping.stop()?;
    caused?;
    let after = after?;
    println!(
        "[measure] BridgeHosts failover over IPv6 ({what}): {holder} -> {after}; ping -6 every 20 ms from behind the client -> pod on node-d: {} sent, {} lost, longest gap {:?}",
        report.transmitted,
        report.lost(),
        report.max_gap
    );
    // The bound of the IPv4 failover test.
    report.expect_gap_under(100, Duration::from_secs(3))?;
    wait_vips_on(c, &after)?;
    Ok(after)
}

/// BridgeHosts on the dual-stack Overlay network: node-b and node-c stand for an IPv4 VIP and
/// an IPv6 `secondaryVip`; the active host holds both, the client pastes one route per
/// family, and reaches every pod over both families, from its own address and from a network
/// behind it (whose replies take the nodes' IPv6 return routes through the active host). Then
/// the active host's agent is killed under a 20 ms `ping -6` from behind the client to a pod
/// on node-d: the standby takes both VIPs over, with the same gap bound as the IPv4 failover
/// (under 3 s), and the client's neighbour entry for the IPv6 VIP follows it; then the new
/// holder's underlay link is cut at the switch, and the VIPs move back within the same bound.
fn overlay_bridge_hosts(c: &Cluster) -> Result<()> {
    let pods = overlay_pods(c)?;
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    let client6 = client.address6.context("the client has no IPv6 address")?;
    c.exec(
        &client.name,
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{BEHIND6_CLIENT}/128"),
            "dev",
            "eth0",
            "nodad",
        ],
    )?;
    for node in BRIDGES {
        c.exec(
            node,
            "ip",
            &[
                "-6",
                "route",
                "add",
                BEHIND6,
                "via",
                &client6.to_string(),
                "dev",
                "eth0",
            ],
        )?;
        label(c, node, "causeway.dev/bridge=true")?;
    }
    apply_gateway(
        c,
        "bridge6",
        serde_json::json!({
            "network": OVERLAY,
            "strategy": "BridgeHosts",
            "clientCidrs": ["192.168.50.0/24", "fd00:50::/64", BEHIND6],
            "bridgeHosts": {
                "nodeSelector": {"matchLabels": {"causeway.dev/bridge": "true"}},
                "vip": VIP,
                "secondaryVip": VIP6,
            },
        }),
    )?;
    let mut pasted = Vec::new();
    let result = (|| -> Result<()> {
        let routes = client_routes(c, "bridge6")?;
        let want = [
            format!("ip route add {OVERLAY_CIDR} via {VIP}"),
            format!("ip -6 route add {OVERLAY_CIDR6} via {VIP6}"),
        ];
        ensure!(routes == want, "clientRoutes {routes:?}");
        let active = bridge_active(c)?.context("Ready without activeHost")?;
        ensure!(BRIDGES.contains(&active.as_str()), "active host {active}");
        wait_vips_on(c, &active)?;
        paste(c, &client.name, &routes)?;
        pasted = routes;
        // Replies to the network behind the client: node-a and node-d route it through the
        // active host's tunnel; the bridge hosts have their own route.
        wait_for(
            "IPv6 return routes via the active host",
            Duration::from_secs(10),
            || {
                for node in ["node-a", "node-d"] {
                    let routes = our_routes6(c, node)?;
                    ensure!(
                        routes
                            .iter()
                            .any(|r| r.starts_with(BEHIND6) && r.contains("cw-vx")),
                        "{node}: {routes:?}"
                    );
                }
                Ok(())
            },
        )?;
        let mut reached = 0;
        for pod in &pods {
            let ip6 = ipv6_of(pod)?;
            wait_for(
                "client -> pod over IPv6 through the VIP",
                Duration::from_secs(5),
                || traffic::expect_ping6(&client_ns, ip6),
            )
            .with_context(|| format!("client -> {}/{} ({ip6})", pod.node, pod.name))?;
            let behind = std::process::Command::new("ip")
                .args([
                    "netns", "exec", &client_ns, "ping", "-6", "-n", "-c", "1", "-W", "2",
                ])
                .args(["-I", BEHIND6_CLIENT, &ip6.to_string()])
                .output()?;
            ensure!(
                behind.status.success(),
                "{BEHIND6_CLIENT} -> {}/{} ({ip6}) failed: {}",
                pod.node,
                pod.name,
                String::from_utf8_lossy(&behind.stdout)
            );
            traffic::expect_ping(&client_ns, pod.ip)
                .with_context(|| format!("client -> {}/{} ({})", pod.node, pod.name, pod.ip))?;
            reached += 1;
        }
        client_resolves_vip6_to(c, &client.name, &active)?;
        let d = pod_on(&pods, "node-d")?;
        let d6 = ipv6_of(d)?;
        let seen = traffic::tcp_seen_source6(&d.netns, &client_ns, d6, 7800)?;
        ensure!(
            seen == client6,
            "node-d's pod saw the client as {seen}, not {client6}"
        );
        let ready = gateway_json(c, "bridge6")?["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_string();
        ensure!(
            ready.contains(&format!("{active} holds VIPs {VIP} and {VIP6}")),
            "Ready: {ready}"
        );
        eprintln!(
            "[measure] bridge6: {active} holds {VIP} and {VIP6}; the client reached {reached} pods over both families through the VIPs, and over IPv6 from {BEHIND6_CLIENT} behind it"
        );

        // The active host's agent dies: the standby takes both VIPs once they stop answering.
        let after = failover6(c, &client_ns, d6, &active, "agent killed", || {
            c.kill(&SUITE.agent_of(&active)?);
            Ok(())
        })?;
        client_resolves_vip6_to(c, &client.name, &after)?;
        SUITE.start_agent(c, &active)?;
        std::thread::sleep(Duration::from_secs(2));
        ensure!(
            bridge_active(c)?.as_deref() == Some(after.as_str()),
            "a restarted agent must not take the VIPs back"
        );
        wait_vips_on(c, &after)?;
        // The new holder's underlay link is cut at the switch: the client learns the move
        // from the unsolicited neighbour advertisement (the old holder cannot answer).
        let cut = failover6(c, &client_ns, d6, &after, "underlay link cut", || {
            c.set_underlay_link(&after, false)
        });
        let restored = c.set_underlay_link(&after, true);
        let third = cut?;
        restored?;
        ensure!(third == active, "the VIPs went to {third}");
        client_resolves_vip6_to(c, &client.name, &third)?;
        std::thread::sleep(Duration::from_secs(2));
        wait_vips_on(c, &third)?;
        Ok(())
    })();
    unpaste(c, &client.name, &pasted);
    let _ = c.kubectl(&["delete", "overlaygateway", "bridge6", "--wait=true"]);
    let gone = wait_for(
        "no VIP and no IPv6 return route",
        Duration::from_secs(15),
        || {
            for vip in [VIP, VIP6] {
                ensure!(
                    holders(c, vip)?.is_empty(),
                    "{vip} still on {:?}",
                    holders(c, vip)?
                );
            }
            for node in ALL {
                let routes = our_routes6(c, node)?;
                ensure!(
                    !routes.iter().any(|r| r.starts_with(BEHIND6)),
                    "{node}: {routes:?}"
                );
            }
            Ok(())
        },
    );
    let _ = c.exec(
        &client.name,
        "ip",
        &[
            "-6",
            "addr",
            "del",
            &format!("{BEHIND6_CLIENT}/128"),
            "dev",
            "eth0",
        ],
    );
    for node in BRIDGES {
        let _ = c.exec(node, "ip", &["-6", "route", "del", BEHIND6]);
        let _ = label(c, node, "causeway.dev/bridge-");
    }
    result.and(gone)
}

/// ClientJoin on the dual-stack Overlay network: the client joins over the IPv4 underlay (the
/// nodes' tunnels run from their IPv4 `nodeAddress`) with an IPv4 `overlayAddress` and an IPv6
/// `secondaryOverlayAddress`; every node routes both into its tunnel, and client and pods
/// reach each other over both families at their own addresses (no masquerade).
fn overlay_client_join(c: &Cluster) -> Result<()> {
    const OVERLAY4: &str = "10.250.0.10";
    const OVERLAY6: &str = "fd00:250::10";
    let pods = overlay_pods(c)?;
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    apply_gateway(
        c,
        "join6",
        serde_json::json!({
            "network": OVERLAY,
            "strategy": "ClientJoin",
            "clientJoin": {"clients": [{
                "name": "laptop",
                "address": client.address.to_string(),
                "overlayAddress": OVERLAY4,
                "secondaryOverlayAddress": OVERLAY6,
            }]},
        }),
    )?;
    let agent = SUITE.start_client(c, &client.name, "join6", "laptop")?;
    let (overlay4, overlay6): (Ipv4Addr, Ipv6Addr) = (OVERLAY4.parse()?, OVERLAY6.parse()?);
    let result = (|| -> Result<()> {
        wait_gateway_ready(c, "join6")?;
        let addrs = c.exec(&client.name, "ip", &["-o", "addr", "show", "dev", "cw-vx1"])?;
        ensure!(
            addrs.contains(&format!("{OVERLAY4}/32")) && addrs.contains(&format!("{OVERLAY6}/128")),
            "the client's cw-vx1 addresses:\n{addrs}"
        );
        for node in ALL {
            wait_for(
                "both overlay addresses routed on every node",
                Duration::from_secs(10),
                || {
                    let (v4, v6) = (our_routes(c, node)?, our_routes6(c, node)?);
                    ensure!(
                        v4.iter().any(
                            |r| r.starts_with(&format!("{OVERLAY4} via {OVERLAY4} dev cw-vx1"))
                        ) && v6.iter().any(
                            |r| r.starts_with(&format!("{OVERLAY6} via {OVERLAY6} dev cw-vx1"))
                        ),
                        "{node}: {v4:?} {v6:?}"
                    );
                    Ok(())
                },
            )?;
        }
        for pod in &pods {
            ping_both_ways(&client_ns, pod, overlay4, overlay6)?;
        }
        let d = pod_on(&pods, "node-d")?;
        let d6 = ipv6_of(d)?;
        let seen = traffic::tcp_seen_source6(&d.netns, &client_ns, d6, 7810)?;
        ensure!(
            seen == overlay6,
            "node-d's pod saw the client as {seen}, not {OVERLAY6}"
        );
        let seen = traffic::tcp_seen_source6(&client_ns, &d.netns, overlay6, 7811)?;
        ensure!(
            seen == d6,
            "the client saw node-d's pod as {seen}, not {d6}"
        );
        eprintln!(
            "[measure] dual-stack ClientJoin: the client reached all {} pods over both families, and they reached {OVERLAY4} and {OVERLAY6}; TCP unmasqueraded both ways over IPv6",
            pods.len()
        );
        Ok(())
    })();
    stop_client(c, &agent, &client.name, "join6");
    let gone = wait_for("no trace of the client", Duration::from_secs(15), || {
        for node in ALL {
            let (v4, v6) = (our_routes(c, node)?, our_routes6(c, node)?);
            ensure!(
                !v4.iter().any(|r| r.starts_with(OVERLAY4))
                    && !v6.iter().any(|r| r.starts_with(OVERLAY6)),
                "{node}: {v4:?} {v6:?}"
            );
        }
        Ok(())
    });
    result.and(gone)
}

/// The `snat: true` BridgeHosts gateway of [`overlay_bridge_hosts_snat6`], on the
/// [`BRIDGES`] like `bridge6` but with VIPs of its own.
const SNAT_GATEWAY: &str = "snat6";
const SNAT_VIP: &str = "192.168.50.251";
const SNAT_VIP6: &str = "fd00:50::251";

/// `nft list table <family> causeway-gateway` on `node`, or `None` without that table.
fn gateway_table(c: &Cluster, node: &str, family: &str) -> Result<Option<String>> {
    let tables = c.exec(node, "nft", &["list", "tables", family])?;
    let name = format!("table {family} causeway-gateway");
    if !tables.lines().any(|l| l.trim() == name) {
        return Ok(None);
    }
    Ok(Some(c.exec(
        node,
        "nft",
        &["list", "table", family, "causeway-gateway"],
    )?))
}

/// BridgeHosts with `snat: true` on the dual-stack Overlay network: node-b and node-c stand
/// for an IPv4 VIP and an IPv6 `secondaryVip`; both candidates (and no other node) carry the
/// `ip6 causeway-gateway` table next to the `ip` one, the client reaches every pod over IPv6
/// through the IPv6 VIP (and over IPv4 through the IPv4 one) without any return route on the
/// nodes, and a TCP server in a pod on node-a and on node-d sees the active host's IPv6 tunnel
/// address, not the client's. Deleting the gateway removes both tables and the VIPs.
fn overlay_bridge_hosts_snat6(c: &Cluster) -> Result<()> {
    let pods = overlay_pods(c)?;
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    let client6 = client.address6.context("the client has no IPv6 address")?;
    for node in BRIDGES {
        label(c, node, "causeway.dev/bridge=true")?;
    }
    let applied = apply_gateway(
        c,
        SNAT_GATEWAY,
        serde_json::json!({
            "network": OVERLAY,
            "strategy": "BridgeHosts",
            "snat": true,
            "clientCidrs": ["192.168.50.0/24", "fd00:50::/64"],
            "bridgeHosts": {
                "nodeSelector": {"matchLabels": {"causeway.dev/bridge": "true"}},
                "vip": SNAT_VIP,
                "secondaryVip": SNAT_VIP6,
            },
        }),
    );
    let mut pasted = Vec::new();
    let result = applied.and_then(|()| {
        let routes = client_routes(c, SNAT_GATEWAY)?;
        let gw = gateway_json(c, SNAT_GATEWAY)?;
        let want = [
            format!("ip route add {OVERLAY_CIDR} via {SNAT_VIP}"),
            format!("ip -6 route add {OVERLAY_CIDR6} via {SNAT_VIP6}"),
        ];
        ensure!(routes == want, "clientRoutes {routes:?}");
        let active = gw["status"]["activeHost"]
            .as_str()
            .context("Ready without activeHost")?
            .to_string();
        ensure!(BRIDGES.contains(&active.as_str()), "active host {active}");
        let ready = gw["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_string();
        ensure!(
            ready.contains(&format!(
                "{active} holds VIPs {SNAT_VIP} and {SNAT_VIP6} and forwards client traffic into PodNetwork {OVERLAY}; replies return through it (SNAT)."
            )),
            "Ready: {ready}"
        );
        wait_these_vips_on(c, &active, [SNAT_VIP, SNAT_VIP6])?;
        // Every candidate carries both tables (a new holder forwards at once); no one else.
        let rule6 = format!("ip6 saddr @clients ip6 daddr {OVERLAY_CIDR6} masquerade");
        let rule4 = format!("ip saddr @clients ip daddr {OVERLAY_CIDR} masquerade");
        let mut listing = String::new();
        wait_for(
            "the gateway tables on the candidates only",
            Duration::from_secs(10),
            || {
                for node in ALL {
                    let t6 = gateway_table(c, node, "ip6")?;
                    let t4 = gateway_table(c, node, "ip")?;
                    if BRIDGES.contains(&node) {
                        let t6 = t6.with_context(|| format!("{node}: no ip6 table"))?;
                        ensure!(
                            t6.contains(&rule6) && t6.contains("fd00:50::/64"),
                            "{node}: {t6}"
                        );
                        let t4 = t4.with_context(|| format!("{node}: no ip table"))?;
                        ensure!(t4.contains(&rule4), "{node}: {t4}");
                        if node == active {
                            listing = t6;
                        }
                    } else {
                        ensure!(t6.is_none() && t4.is_none(), "{node}: {t6:?} {t4:?}");
                    }
                }
                Ok(())
            },
        )?;
        eprintln!("[measure] {active}: nft list table ip6 causeway-gateway\n{listing}");
        // SNAT needs no return routes: nodes route nothing to the client ranges.
        for node in ALL {
            let routes = [our_routes(c, node)?, our_routes6(c, node)?].concat();
            ensure!(
                !routes
                    .iter()
                    .any(|r| r.starts_with("192.168.50.0/24") || r.starts_with("fd00:50::/64")),
                "{node} routes a client range: {routes:?}"
            );
        }
        paste(c, &client.name, &routes)?;
        pasted = routes;
        let mut reached = 0;
        for pod in &pods {
            let ip6 = ipv6_of(pod)?;
            let hop = next_hop6(c, &client.name, ip6)?;
            ensure!(
                hop == SNAT_VIP6,
                "the client routes {ip6} via {hop}, not the IPv6 VIP"
            );
            wait_for(
                "client -> pod over IPv6 through the IPv6 VIP",
                Duration::from_secs(5),
                || traffic::expect_ping6(&client_ns, ip6),
            )
            .with_context(|| format!("client -> {}/{} ({ip6})", pod.node, pod.name))?;
            traffic::expect_ping(&client_ns, pod.ip)
                .with_context(|| format!("client -> {}/{} ({})", pod.node, pod.name, pod.ip))?;
            reached += 1;
        }
        // Pods off the active host see its IPv6 tunnel address (the network address of its
        // IPv6 pod subnet, on its VXLAN device), not the client's.
        let subnets = deploy::node_subnets(c, OVERLAY)?;
        let tunnel6: Ipv6Addr = subnets
            .iter()
            .find(|s| s["spec"]["nodeName"] == active.as_str())
            .and_then(|s| s["spec"]["secondaryCidr"].as_str())
            .and_then(|cidr| cidr.split('/').next())
            .with_context(|| format!("{active}'s IPv6 subnet"))?
            .parse()?;
        let mut seen_by = Vec::new();
        for (i, node) in ["node-a", "node-d"].iter().enumerate() {
            let p = pod_on(&pods, node)?;
            let ip6 = ipv6_of(p)?;
            let seen =
                traffic::tcp_seen_source6(&p.netns, &client_ns, ip6, 7850 + u16::try_from(i)?)?;
            ensure!(
                seen == tunnel6,
                "a pod on {node} saw {seen}, expected {active}'s {tunnel6} (the client is {client6})"
            );
            seen_by.push(format!("{node}'s pod saw {seen}"));
        }
        eprintln!(
            "[measure] {SNAT_GATEWAY}: {active} holds {SNAT_VIP} and {SNAT_VIP6}; the client ({client6}) reached {reached} pods over both families through the VIPs; over TCP/IPv6 {}",
            seen_by.join(", ")
        );
        Ok(())
    });
    unpaste(c, &client.name, &pasted);
    let deleted = c
        .kubectl(&[
            "delete",
            "overlaygateway",
            SNAT_GATEWAY,
            "--ignore-not-found",
            "--wait=true",
        ])
        .map(drop);
    let gone = wait_for(
        "no gateway table and no VIP left",
        Duration::from_secs(15),
        || {
            for vip in [SNAT_VIP, SNAT_VIP6] {
                let on = holders(c, vip)?;
                ensure!(on.is_empty(), "{vip} still on {on:?}");
            }
            for node in ALL {
                for family in ["ip", "ip6"] {
                    ensure!(
                        gateway_table(c, node, family)?.is_none(),
                        "{node} still has table {family} causeway-gateway"
                    );
                }
            }
            Ok(())
        },
    );
    let mut unlabelled = Ok(());
    for node in BRIDGES {
        if let Err(e) = label(c, node, "causeway.dev/bridge-") {
            unlabelled = Err(e);
        }
    }
    result.and(deleted).and(gone).and(unlabelled)
}

/// An IPv6-first dual-stack Overlay network (`cidr` IPv6, `secondaryCidr` IPv4) over every
/// node: the operator gives each NodeSubnet the node's IPv6 InternalIP as `nodeAddress`, so the
/// tunnel runs over IPv6 (across r1 to node-d, 70 bytes of headers), and each pod's first
/// address, its primary IP, is the IPv6 one.
fn overlay_ipv6_first(c: &Cluster) -> Result<()> {
    const NAME: &str = "v6first";
    let pn = causeway_e2e::suite::pod_network(
        NAME,
        "fd00:10:253::/56",
        "Overlay",
        serde_json::json!({
            "nodeSubnetPrefixLength": 64,
            "secondaryCidr": "10.253.0.0/16",
            "secondaryNodeSubnetPrefixLength": 24,
        }),
    );
    let pods = SUITE.bring_up(c, &pn.to_string(), NAME, &ALL, "v")?;
    let result = (|| -> Result<()> {
        for s in deploy::node_subnets(c, NAME)? {
            let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
            let v6 = c
                .topology
                .node(node)
                .and_then(|h| h.address6)
                .context("a node without IPv6")?;
            ensure!(
                s["spec"]["nodeAddress"] == v6.to_string()
                    && s["spec"]["secondaryNodeAddress"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("192.168."))
                    && s["spec"]["secondaryCidr"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("10.253.")),
                "{node}: {}",
                s["spec"]
            );
            let out = c.exec(node, "ip", &["-j", "-d", "link", "show", "cw-vx1"])?;
            let link: Value = serde_json::from_str(&out)?;
            ensure!(
                link[0]["linkinfo"]["info_data"]["local6"] == v6.to_string()
                    && link[0]["mtu"] == 1430,
                "{node}: cw-vx1 {}",
                link[0]
            );
        }
        for p in &pods {
            let first = p.result["ips"][0]["address"].as_str().unwrap_or_default();
            ensure!(
                first.starts_with("fd00:10:253:"),
                "{}/{}: first address {first:?}, not the IPv6 one: {}",
                p.node,
                p.name,
                p.result
            );
        }
        let pairs = ping_both_families(&pods)?;
        eprintln!(
            "[measure] IPv6-first dual-stack overlay: VXLAN over IPv6 (MTU 1430), pods' first address IPv6, {pairs} pod pairs across nodes ping over both families"
        );
        ipv6_first_bridge_hosts(c, &pods)
    })();
    let teardown = tear_down(c, NAME);
    result.and(teardown)
}

/// BridgeHosts on the IPv6-first network: `vip` is IPv6 (the family of `cidr`) and
/// `secondaryVip` IPv4; the client routes each range to the VIP of its family and reaches
/// every pod over both, through the VIPs only.
fn ipv6_first_bridge_hosts(c: &Cluster, pods: &[Pod]) -> Result<()> {
    const GATEWAY: &str = "bridge6f";
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    let (client4, client6) = (
        client.address,
        client.address6.context("the client has no IPv6 address")?,
    );
    for node in BRIDGES {
        label(c, node, "causeway.dev/bridge=true")?;
    }
    let mut pasted = Vec::new();
    let result = apply_gateway(
        c,
        GATEWAY,
        serde_json::json!({
            "network": "v6first",
            "strategy": "BridgeHosts",
            "clientCidrs": ["fd00:50::/64", "192.168.50.0/24"],
            "bridgeHosts": {
                "nodeSelector": {"matchLabels": {"causeway.dev/bridge": "true"}},
                "vip": "fd00:50::252",
                "secondaryVip": "192.168.50.252",
            },
        }),
    )
    .and_then(|()| {
        let routes = client_routes(c, GATEWAY)?;
        ensure!(
            routes
                == [
                    "ip -6 route add fd00:10:253::/56 via fd00:50::252",
                    "ip route add 10.253.0.0/16 via 192.168.50.252",
                ],
            "clientRoutes {routes:?}"
        );
        paste(c, &client.name, &routes)?;
        pasted = routes;
        for pod in pods {
            ping_both_ways(&client_ns, pod, client4, client6)?;
        }
        eprintln!(
            "[measure] IPv6-first BridgeHosts: the client reached all {} pods through fd00:50::252 and 192.168.50.252",
            pods.len()
        );
        Ok(())
    });
    unpaste(c, &client.name, &pasted);
    let _ = c.kubectl(&[
        "delete",
        "overlaygateway",
        GATEWAY,
        "--ignore-not-found",
        "--wait=true",
    ]);
    for node in BRIDGES {
        let _ = label(c, node, "causeway.dev/bridge-");
    }
    result
}

/// The RouteToNodes entry nodes' IPv6 addresses.
fn entries6(c: &Cluster) -> Result<Vec<String>> {
    ENTRIES
        .iter()
        .map(|n| c.topology.nodes.iter().find(|h| h.name == *n))
        .map(|h| h.and_then(|h| h.address6).map(|a| a.to_string()))
        .collect::<Option<_>>()
        .context("an entry node without an IPv6 address")
}

/// ICMPv6 Packet Too Big to an oversized client packet: the client's link carries 1500 bytes,
/// the pods' 1450 (the tunnel's headers). IPv6 routers never fragment, so a full-size packet
/// from the client must come back as a Packet Too Big from the entry node (which the client's
/// ping prints, naming the hop and the MTU), or large transfers stall. (The client's route to
/// a pod behind the range route is multipath, so the MTU it learns sits on whichever next hop
/// the packet hashed to: ping's own report is the check.)
fn packet_too_big(c: &Cluster, client: &str, pods: &[Pod]) -> Result<()> {
    let ns = c.ns(client);
    let entries6 = entries6(c)?;
    for node in ["node-a", "node-c"] {
        let pod = pods
            .iter()
            .find(|p| p.node == node)
            .with_context(|| format!("a pod on {node}"))?;
        let ip6 = ipv6_of(pod)?;
        c.exec(client, "ip", &["-6", "route", "flush", "cache"])?;
        // 1452 bytes of payload + 8 (ICMPv6) + 40 (IPv6) = 1500.
        let (reached, out) = traffic::df_ping6(&ns, ip6, 1452)?;
        ensure!(
            !reached,
            "a 1500-byte packet reached {node}'s pod through 1450-byte links: {out}"
        );
        ensure!(
            out.contains("Packet too big: mtu=1450")
                && entries6.iter().any(|e| out.contains(&format!("From {e} "))),
            "no Packet Too Big with mtu 1450 from an entry node {entries6:?} for {node}'s pod ({ip6}): {out}"
        );
        let (reached, out) = traffic::df_ping6(&ns, ip6, 1402)?;
        ensure!(
            reached,
            "a 1450-byte packet did not reach {node}'s pod ({ip6}): {out}"
        );
    }
    eprintln!(
        "[measure] route_to_nodes over IPv6: a 1500-byte packet from the client got a Packet Too Big (mtu=1450) from its entry node, and 1450-byte packets reached pods on an entry node and behind the tunnel"
    );
    Ok(())
}

fn overlay_route_to_nodes_ipv4_only(c: &Cluster) -> Result<()> {
    let pods = overlay_pods(c)?;
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    let result = (|| -> Result<()> {
        apply_office(c, &["192.168.50.0/24"])?;
        let want = expected_routes(c, false)?;
        let message = wait_rendered(c, &want)?;
        ensure!(
            message.contains("PodNetwork overlay6 (IPv4 only) over IPv4 through node-a, node-b:")
                && message.contains(
                    "No IPv6 routes: spec.clientCidrs has no IPv6 range, so no node is a next hop for IPv6 clients; add the clients' IPv6 range (e.g. fd00:50::/64) to clientCidrs"
                ),
            "Ready: {message}"
        );
        eprintln!("[measure] IPv4-only clientCidrs on a dual-stack network: Ready: {message}");
        // The IPv4 part still works: the client pastes it and reaches node-d's pod.
        paste(c, &client.name, &want)?;
        let d = pod_on(&pods, "node-d")?;
        let reached = traffic::expect_ping(&client_ns, d.ip);
        unpaste(c, &client.name, &want);
        reached
    })();
    let _ = c.kubectl(&["delete", "overlaygateway", "office6", "--ignore-not-found"]);
    for node in ENTRIES {
        let _ = label(c, node, "causeway.dev/gateway-");
    }
    let teardown = tear_down(c, OVERLAY);
    result.and(teardown)
}
