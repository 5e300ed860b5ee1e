//! IPv6-only networks on an IPv6-only underlay end to end (issue #18), on
//! `two_segments_ipv6_only` with zone labels: node-a..c on lan-a (fd00:50::/64, rack-a), node-d
//! on lan-b (fd00:60::/64, rack-b) behind r1, a non-node client on lan-a (fd00:50::100), the
//! control plane on lan-cp (reached over IPv6 at fd00:40::2). No node has an IPv4 address:
//! each registers one IPv6 InternalIP, which the operator copies into its NodeSubnet's
//! `nodeAddress`, and every pod gets one IPv6 address. The operator and an agent per node run
//! with the chart's RBAC; pods are attached with the CNI config the agents wrote; every check
//! is real traffic or the kernel's own tables.
//!
//! The networks run one after another: Overlay over all four nodes (VXLAN over IPv6, 70
//! bytes of headers: full-size packets cross r1 inside the tunnel; outgoing NAT to the
//! client; an agent restart under `ping -6`), the same with `crossSubnet` (rack-a's peers
//! directly, node-d through the tunnel), Routed with static routes (node-d named), then Flat
//! over rack-a (proxy NDP: the client reaches pods with one on-link route).

use std::net::Ipv6Addr;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use causeway_e2e::bird::{self, Bird};
use causeway_e2e::pods::{self, Pod6};
use causeway_e2e::suite::{
    Suite, apply_gateway, client_routes, gateway_json, label, lock, programmed, stop_client,
    the_client, wait_gateway_ready, wait_network_ready,
};
use causeway_e2e::topology::{Topology, presets};
use causeway_e2e::traffic::{self, wait_for};
use causeway_e2e::{Cluster, deploy, testing};
use serde_json::Value;

const RACK_A: [&str; 3] = ["node-a", "node-b", "node-c"];
const ALL: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];
const ZONE: &str = presets::ZONE;

static SUITE: Suite = Suite::new(&ALL, 3, 4);
/// The pods of the network up now, with its name.
static PODS: Mutex<Option<(String, Vec<Pod6>)>> = Mutex::new(None);

const OVERLAY: &str = "v6-overlay";
const OVERLAY_CIDR: &str = "fd00:10:253::/56";
const ROUTED: &str = "v6-routed";
const ROUTED_CIDR: &str = "fd00:10:254::/56";
const BGP: &str = "v6-bgp";
const BGP_CIDR: &str = "fd00:10:256::/56";
const ROUTER_ASN: u32 = 64500;
const NODE_ASN: u32 = 64512;
const FLAT: &str = "v6-flat";
const FLAT_CIDR: &str = "fd00:10:255::/56";

fn main() -> ExitCode {
    // The cluster's name (namespaces, /run/causeway-e2e/v6net): 1-8 letters or digits.
    testing::run_suite(
        "v6net",
        topology,
        vec![
            testing::test(
                "overlay_ipv6_pods_cross_nodes_and_the_router_in_vxlan_over_ipv6_with_70_bytes_of_headers",
                overlay,
            ),
            testing::test(
                "overlay_ipv6_pod_traffic_leaving_the_range_is_masqueraded_to_the_nodes_ipv6_address",
                overlay_nat,
            ),
            testing::test(
                "overlay_ipv6_an_agent_restart_under_ping6_loses_nothing",
                overlay_agent_restart,
            ),
            testing::test(
                "overlay_ipv6_route_to_nodes_a_client_with_the_rendered_routes_reaches_every_pod",
                overlay_route_to_nodes,
            ),
            testing::test(
                "overlay_ipv6_bridge_hosts_an_ipv6_vip_moves_to_the_standby_when_the_holders_agent_dies",
                overlay_bridge_hosts,
            ),
            testing::test(
                "overlay_ipv6_client_join_a_client_tunnels_over_ipv6_and_pods_reach_it_at_its_overlay_address",
                overlay_client_join,
            ),
            testing::test(
                "overlay_ipv6_cross_subnet_routes_on_segment_peers_directly_and_tunnels_the_rest",
                overlay_cross_subnet,
            ),
            testing::test(
                "routed_ipv6_static_routes_on_segment_peers_and_names_the_node_behind_the_router",
                routed,
            ),
            testing::test(
                "routed_ipv6_a_client_reaches_every_pod_through_one_entry_node_and_through_a_bridge_hosts_vip",
                routed_gateways,
            ),
            testing::test(
                "routed_ipv6_bgp_sessions_over_ipv6_carry_ipv6_unicast_and_pods_cross_the_router",
                routed_bgp,
            ),
            testing::test(
                "flat_ipv6_pods_ping_and_a_non_node_host_reaches_them_through_proxy_ndp",
                flat,
            ),
        ],
    )
}

fn topology() -> Topology {
    presets::racks(presets::two_segments_ipv6_only())
}

/// An IPv6-only PodNetwork (a /64 per node).
fn network(name: &str, cidr: &str, mode: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["nodeSubnetPrefixLength"] = 64.into();
    causeway_e2e::suite::pod_network(name, cidr, mode, spec)
}

/// The pods of network `name`: brought up on `nodes` (two per node, named `<prefix><i>`)
/// unless they are up already; the network before it is deleted first, its pods detached.
fn pods_of(
    c: &Cluster,
    name: &str,
    nodes: &[&str],
    prefix: &str,
    pn: impl Fn() -> Value,
) -> Result<Vec<Pod6>> {
    let mut up = lock(&PODS);
    if let Some((network, pods)) = up.as_ref()
        && network == name
    {
        return Ok(pods.clone());
    }
    SUITE.control_plane(c)?;
    if let Some((network, pods)) = up.take() {
        for p in &pods {
            pods::del6(c, p)?;
        }
        c.kubectl(&["delete", "podnetwork", &network, "--wait=true"])?;
        wait_for(
            "the old network's NodeSubnets go",
            Duration::from_secs(30),
            || {
                ensure!(deploy::node_subnets(c, &network)?.is_empty(), "not yet");
                Ok(())
            },
        )?;
    }
    c.kubectl_stdin(&["apply", "-f", "-"], &pn().to_string())?;
    wait_network_ready(c, name, 60)?;
    let mut pods = Vec::new();
    for node in nodes {
        for i in 0..2 {
            pods.push(pods::add6(c, node, &format!("{prefix}{i}"))?);
        }
    }
    *up = Some((name.to_string(), pods.clone()));
    Ok(pods)
}

fn overlay_pods(c: &Cluster) -> Result<Vec<Pod6>> {
    pods_of(c, OVERLAY, &ALL, "o", || {
        network(OVERLAY, OVERLAY_CIDR, "Overlay", serde_json::json!({}))
    })
}

/// The node's IPv6 address in the topology.
fn address6(c: &Cluster, node: &str) -> Result<Ipv6Addr> {
    c.topology
        .node(node)
        .and_then(|n| n.address6)
        .with_context(|| format!("{node} has no IPv6 address"))
}

/// `ip -6 route show proto 249` on `node`, one trimmed line per route.
fn our_routes6(c: &Cluster, node: &str) -> Result<Vec<String>> {
    let out = c.exec(node, "ip", &["-6", "route", "show", "proto", "249"])?;
    Ok(out.lines().map(|l| l.trim().to_string()).collect())
}

/// Every ordered pair of pods on different nodes pings over IPv6 (retried while the target's
/// address finishes DAD): the number of pairs.
fn ping_all(pods: &[Pod6]) -> Result<usize> {
    let mut pairs = 0;
    for from in pods {
        for to in pods.iter().filter(|to| to.node != from.node) {
            wait_for("IPv6 ping", Duration::from_secs(5), || {
                traffic::expect_ping6(&from.netns, to.ip)
            })
            .with_context(|| {
                format!(
                    "{}/{} -> {}/{} ({})",
                    from.node, from.name, to.node, to.name, to.ip
                )
            })?;
            pairs += 1;
        }
    }
    Ok(pairs)
}

fn overlay(c: &Cluster) -> Result<()> {
    let pods = overlay_pods(c)?;
    ensure!(pods.len() == 8, "{} pods", pods.len());
    for s in deploy::node_subnets(c, OVERLAY)? {
        let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
        let want = address6(c, node)?.to_string();
        ensure!(
            s["spec"]["nodeAddress"].as_str() == Some(want.as_str())
                && s["spec"]["cidr"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("fd00:10:253:") && v.ends_with("/64")),
            "{node}: {}",
            s["spec"]
        );
        ensure!(
            s["status"]["effectiveMtu"] == 1430,
            "{node}: effectiveMtu {} (1500 minus 70 for VXLAN over IPv6)",
            s["status"]["effectiveMtu"]
        );
    }
    for node in ALL {
        let out = c.exec(node, "ip", &["-j", "-d", "link", "show", "cw-vx1"])?;
        let link: Value = serde_json::from_str(&out)?;
        let data = &link[0]["linkinfo"]["info_data"];
        ensure!(
            data["local6"].as_str() == Some(address6(c, node)?.to_string().as_str()),
            "{node}: cw-vx1 {data}"
        );
        ensure!(
            link[0]["mtu"] == 1430,
            "{node}: cw-vx1 MTU {}",
            link[0]["mtu"]
        );
        let fdb = c.exec(node, "bridge", &["-j", "fdb", "show", "dev", "cw-vx1"])?;
        let fdb: Value = serde_json::from_str(&fdb)?;
        let dsts: Vec<&str> = fdb
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["dst"].as_str()).collect())
            .unwrap_or_default();
        ensure!(
            dsts.len() == 3 && dsts.iter().all(|d| d.starts_with("fd00:")),
            "{node}: FDB destinations {dsts:?}"
        );
    }
    let pairs = ping_all(&pods)?;
    // Full-size packets: the pods' MTU is what the tunnel carries, through r1 too.
    let (a, d) = (on(&pods, "node-a")?, on(&pods, "node-d")?);
    let eth0 = std::process::Command::new("ip")
        .args(["-n", &a.netns, "-j", "link", "show", "eth0"])
        .output()
        .context("ip link")?;
    let eth0: Value = serde_json::from_slice(&eth0.stdout)?;
    ensure!(eth0[0]["mtu"] == 1430, "pod eth0 MTU {}", eth0[0]["mtu"]);
    // 1430 - 40 (IPv6) - 8 (ICMPv6) = 1382 bytes of payload fill the pod MTU exactly.
    let (crossed, out) = traffic::df_ping6(&a.netns, d.ip, 1382)?;
    ensure!(
        crossed,
        "a full-size packet (1430 bytes) from node-a's pod to node-d's did not cross the tunnel: {out}"
    );
    let (crossed, out) = traffic::df_ping6(&a.netns, d.ip, 1383)?;
    ensure!(
        !crossed,
        "a packet above the pod MTU went out unfragmented: {out}"
    );
    traffic::tcp_check6(&d.netns, &a.netns, d.ip, 7462)?;
    // A node reaches pods on other nodes through its own tunnel.
    traffic::expect_ping6(&c.ns("node-a"), d.ip).context("node-a -> node-d's pod")?;
    eprintln!(
        "[measure] IPv6 overlay: {pairs} pod pairs across nodes ping (node-d behind r1); 1430-byte packets cross the IPv6 VXLAN tunnel, 1431 do not leave the pod"
    );
    Ok(())
}

fn on<'a>(pods: &'a [Pod6], node: &str) -> Result<&'a Pod6> {
    pods.iter()
        .find(|p| p.node == node)
        .with_context(|| format!("no pod on {node}"))
}

/// A pod's connection to the client (outside the pod range) arrives from its node's IPv6
/// address; the client's answer finds its way back.
fn overlay_nat(c: &Cluster) -> Result<()> {
    let pods = overlay_pods(c)?;
    let client = the_client(c)?;
    let client6 = client.address6.context("the client has no IPv6 address")?;
    for node in ["node-a", "node-d"] {
        let pod = on(&pods, node)?;
        let seen = traffic::tcp_seen_source6(&c.ns(&client.name), &pod.netns, client6, 7463)
            .with_context(|| format!("{node}'s pod -> the client"))?;
        ensure!(
            seen == address6(c, node)?,
            "the client saw {seen} for {node}'s pod {}, not {node}'s address",
            pod.ip
        );
    }
    Ok(())
}

/// node-d's agent restarts under a ping every 20 ms from node-a's pod to node-d's: nothing
/// the new agent does interrupts the IPv6 tunnel.
fn overlay_agent_restart(c: &Cluster) -> Result<()> {
    let pods = overlay_pods(c)?;
    let (from, to) = (on(&pods, "node-a")?, on(&pods, "node-d")?);
    let ping = traffic::ContinuousPing::start6(&from.netns, to.ip, Duration::from_millis(20))?;
    std::thread::sleep(Duration::from_secs(1));
    let restarted = SUITE.restart_agent(c, "node-d").and_then(|()| {
        wait_for("node-d programmed again", Duration::from_secs(20), || {
            let (status, reason, _) = programmed(c, OVERLAY, "node-d")?;
            ensure!(status == "True", "Programmed={status} ({reason})");
            Ok(())
        })
    });
    std::thread::sleep(Duration::from_secs(3));
    let report = ping.stop()?;
    restarted?;
    println!(
        "[measure] node-d agent restart, IPv6 overlay: ping -6 every 20 ms {} -> {}: {} sent, {} lost, longest gap {:?}",
        from.name,
        to.name,
        report.transmitted,
        report.lost(),
        report.max_gap
    );
    report.expect_none_lost(100)?;
    Ok(())
}

/// Runs `ip <words after "ip">` on `host` for each line (`add`), or with `del` (cleanup).
fn routes_on(c: &Cluster, host: &str, lines: &[String], add: bool) -> Result<()> {
    for line in lines {
        let mut words: Vec<&str> = line.split_whitespace().skip(1).collect();
        if !add {
            let at = words.iter().position(|w| *w == "add").context("no add")?;
            words[at] = "del";
            words.truncate(at + 2);
        }
        c.exec(host, "ip", &words)?;
    }
    Ok(())
}

/// The client reaches every pod over IPv6 (retried while routes settle).
fn client_reaches(client_ns: &str, pods: &[Pod6]) -> Result<()> {
    for pod in pods {
        wait_for("client -> pod over IPv6", Duration::from_secs(5), || {
            traffic::expect_ping6(client_ns, pod.ip)
        })
        .with_context(|| format!("client -> {}/{} ({})", pod.node, pod.name, pod.ip))?;
    }
    Ok(())
}

/// RouteToNodes on the IPv6 network: node-a and node-b are the entries; the client pastes
/// their /64s via their addresses and the range via both, and reaches the pods of all four
/// nodes (node-d's through an entry and the tunnel); a pod sees the client's own address.
fn overlay_route_to_nodes(c: &Cluster) -> Result<()> {
    let pods = overlay_pods(c)?;
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    let client6 = client.address6.context("the client has no IPv6 address")?;
    for node in ["node-a", "node-b"] {
        label(c, node, "causeway.dev/gateway=true")?;
    }
    apply_gateway(
        c,
        "entry6",
        serde_json::json!({
            "network": OVERLAY,
            "strategy": "RouteToNodes",
            "clientCidrs": ["fd00:50::/64"],
            "routeToNodes": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}},
        }),
    )?;
    let mut pasted = Vec::new();
    let result = (|| -> Result<()> {
        let routes = client_routes(c, "entry6")?;
        let subnet = |node: &str| -> Result<String> {
            deploy::node_subnets(c, OVERLAY)?
                .iter()
                .find(|s| s["spec"]["nodeName"] == node)
                .and_then(|s| s["spec"]["cidr"].as_str().map(str::to_string))
                .with_context(|| format!("{node}'s subnet"))
        };
        let (a, b) = (address6(c, "node-a")?, address6(c, "node-b")?);
        let want = [
            format!("ip -6 route add {} via {a}", subnet("node-a")?),
            format!("ip -6 route add {} via {b}", subnet("node-b")?),
            format!("ip -6 route add {OVERLAY_CIDR} nexthop via {a} nexthop via {b}"),
        ];
        ensure!(routes == want, "clientRoutes {routes:?}, expected {want:?}");
        routes_on(c, &client.name, &routes, true)?;
        pasted = routes;
        client_reaches(&client_ns, &pods)?;
        let d = on(&pods, "node-d")?;
        let seen = traffic::tcp_seen_source6(&d.netns, &client_ns, d.ip, 7464)?;
        ensure!(
            seen == client6,
            "node-d's pod saw the client as {seen}, not {client6}"
        );
        eprintln!(
            "[measure] IPv6 RouteToNodes: the client reached all {} pods with the 3 rendered routes; node-d's pod saw the client's own address",
            pods.len()
        );
        Ok(())
    })();
    let _ = routes_on(c, &client.name, &pasted, false);
    let _ = c.kubectl(&["delete", "overlaygateway", "entry6", "--wait=true"]);
    for node in ["node-a", "node-b"] {
        let _ = label(c, node, "causeway.dev/gateway-");
    }
    result
}

/// The nodes among `nodes` whose eth0 holds `vip`/128.
fn vip6_holders(c: &Cluster, nodes: &[&str], vip: &str) -> Result<Vec<String>> {
    let mut on = Vec::new();
    for node in nodes {
        let addrs = c.exec(node, "ip", &["-6", "-o", "addr", "show", "dev", "eth0"])?;
        if addrs.contains(&format!("{vip}/128")) {
            on.push((*node).to_string());
        }
    }
    Ok(on)
}

/// BridgeHosts on the IPv6 network: node-b and node-c stand for the IPv6 VIP fd00:50::250;
/// the client routes the pod range to it and reaches every pod. The holder's agent is killed
/// under a 20 ms `ping -6` from the client to node-d's pod: the standby takes the VIP (DAD
/// probes find it silent once its kernel lifetime ran out) within the IPv4 bound (3 s).
fn overlay_bridge_hosts(c: &Cluster) -> Result<()> {
    const BRIDGES: [&str; 2] = ["node-b", "node-c"];
    const VIP6: &str = "fd00:50::250";
    let pods = overlay_pods(c)?;
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    for node in BRIDGES {
        label(c, node, "causeway.dev/bridge=true")?;
    }
    apply_gateway(
        c,
        "bridge6",
        serde_json::json!({
            "network": OVERLAY,
            "strategy": "BridgeHosts",
            "clientCidrs": ["fd00:50::/64"],
            "bridgeHosts": {
                "nodeSelector": {"matchLabels": {"causeway.dev/bridge": "true"}},
                "vip": VIP6,
            },
        }),
    )?;
    let active = || -> Result<Option<String>> {
        Ok(gateway_json(c, "bridge6")?["status"]["activeHost"]
            .as_str()
            .map(str::to_string))
    };
    let mut pasted = Vec::new();
    let result = (|| -> Result<()> {
        let routes = client_routes(c, "bridge6")?;
        ensure!(
            routes == [format!("ip -6 route add {OVERLAY_CIDR} via {VIP6}")],
            "clientRoutes {routes:?}"
        );
        let holder = active()?.context("Ready without activeHost")?;
        wait_for(
            "the VIP on the holder only",
            Duration::from_secs(10),
            || {
                let on = vip6_holders(c, &BRIDGES, VIP6)?;
                ensure!(
                    on == [holder.clone()],
                    "{VIP6} on {on:?}, activeHost {holder}"
                );
                Ok(())
            },
        )?;
        routes_on(c, &client.name, &routes, true)?;
        pasted = routes;
        client_reaches(&client_ns, &pods)?;
        let d = on(&pods, "node-d")?;
        let ping = traffic::ContinuousPing::start6(&client_ns, d.ip, Duration::from_millis(20))?;
        std::thread::sleep(Duration::from_secs(1));
        c.kill(&SUITE.agent_of(&holder)?);
        let after = wait_for("a new active host", Duration::from_secs(20), || {
            let now = active()?;
            ensure!(now.as_deref().is_some_and(|n| n != holder), "still {now:?}");
            Ok(now.unwrap_or_default())
        });
        std::thread::sleep(Duration::from_secs(2));
        let report = ping.stop()?;
        let after = after?;
        println!(
            "[measure] BridgeHosts failover on an IPv6-only network (agent killed): {holder} -> {after}; ping -6 every 20 ms client -> pod on node-d: {} sent, {} lost, longest gap {:?}",
            report.transmitted,
            report.lost(),
            report.max_gap
        );
        // The bound of the IPv4 failover test.
        report.expect_gap_under(100, Duration::from_secs(3))?;
        wait_for(
            "the VIP on the new holder only",
            Duration::from_secs(10),
            || {
                let on = vip6_holders(c, &BRIDGES, VIP6)?;
                ensure!(
                    on == [after.clone()],
                    "{VIP6} on {on:?}, activeHost {after}"
                );
                Ok(())
            },
        )?;
        SUITE.start_agent(c, &holder)?;
        client_reaches(&client_ns, &pods)?;
        Ok(())
    })();
    let _ = routes_on(c, &client.name, &pasted, false);
    let _ = c.kubectl(&["delete", "overlaygateway", "bridge6", "--wait=true"]);
    let gone = wait_for("the VIP gone", Duration::from_secs(10), || {
        let on = vip6_holders(c, &BRIDGES, VIP6)?;
        ensure!(on.is_empty(), "{VIP6} still on {on:?}");
        Ok(())
    });
    for node in BRIDGES {
        let _ = label(c, node, "causeway.dev/bridge-");
    }
    result.and(gone)
}

/// ClientJoin on the IPv6 network: the client joins from its IPv6 address with an IPv6
/// overlay address; its agent builds a VXLAN device over IPv6 (70 bytes of headers), every
/// node routes the overlay address into its tunnel, and client and pods reach each other at
/// their own addresses.
fn overlay_client_join(c: &Cluster) -> Result<()> {
    const OVERLAY6: &str = "fd00:250::10";
    let pods = overlay_pods(c)?;
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    let address = client.address6.context("the client has no IPv6 address")?;
    apply_gateway(
        c,
        "join6",
        serde_json::json!({
            "network": OVERLAY,
            "strategy": "ClientJoin",
            "clientJoin": {"clients": [
                {"name": "laptop", "address": address.to_string(), "overlayAddress": OVERLAY6},
            ]},
        }),
    )?;
    let agent = SUITE.start_client(c, &client.name, "join6", "laptop")?;
    let overlay: Ipv6Addr = OVERLAY6.parse()?;
    let result = (|| -> Result<()> {
        wait_gateway_ready(c, "join6")?;
        let out = c.exec(&client.name, "ip", &["-j", "-d", "link", "show", "cw-vx1"])?;
        let link: Value = serde_json::from_str(&out)?;
        let data = &link[0]["linkinfo"]["info_data"];
        ensure!(
            data["local6"].as_str() == Some(address.to_string().as_str()) && link[0]["mtu"] == 1430,
            "the client's cw-vx1: {}",
            link[0]
        );
        for node in ALL {
            wait_for(
                "the client's route on every node",
                Duration::from_secs(10),
                || {
                    let routes = our_routes6(c, node)?;
                    ensure!(
                        routes.iter().any(
                            |r| r.starts_with(&format!("{OVERLAY6} via {OVERLAY6} dev cw-vx1"))
                        ),
                        "{node}: {routes:?}"
                    );
                    Ok(())
                },
            )?;
        }
        client_reaches(&client_ns, &pods)?;
        for pod in &pods {
            wait_for(
                "pod -> client's overlay address",
                Duration::from_secs(5),
                || traffic::expect_ping6(&pod.netns, overlay),
            )
            .with_context(|| format!("{}/{} -> {OVERLAY6}", pod.node, pod.name))?;
        }
        let d = on(&pods, "node-d")?;
        let seen = traffic::tcp_seen_source6(&d.netns, &client_ns, d.ip, 7465)?;
        ensure!(
            seen == overlay,
            "node-d's pod saw the client as {seen}, not {OVERLAY6}"
        );
        let seen = traffic::tcp_seen_source6(&client_ns, &d.netns, overlay, 7466)?;
        ensure!(
            seen == d.ip,
            "the client saw node-d's pod as {seen}, not {}",
            d.ip
        );
        eprintln!(
            "[measure] IPv6 ClientJoin: the client's tunnel runs over IPv6 from {address} (MTU 1430); it reached all {} pods and they reached {OVERLAY6}, unmasqueraded both ways",
            pods.len()
        );
        Ok(())
    })();
    stop_client(c, &agent, &client.name, "join6");
    let gone = wait_for("no trace of the client", Duration::from_secs(15), || {
        for node in ALL {
            let routes = our_routes6(c, node)?;
            ensure!(
                !routes.iter().any(|r| r.starts_with(OVERLAY6)),
                "{node}: {routes:?}"
            );
        }
        Ok(())
    });
    result.and(gone)
}

fn overlay_cross_subnet(c: &Cluster) -> Result<()> {
    let pods = overlay_pods(c)?;
    causeway_e2e::suite::patch_network(c, OVERLAY, r#"{"spec":{"overlay":{"crossSubnet":true}}}"#)?;
    let subnet = |node: &str| causeway_e2e::suite::subnet_of(c, OVERLAY, node);
    let (b, d) = (subnet("node-b")?, subnet("node-d")?);
    let b6 = address6(c, "node-b")?;
    wait_for(
        "node-a's direct route to node-b",
        Duration::from_secs(10),
        || {
            let routes = our_routes6(c, "node-a")?;
            ensure!(
                routes
                    .iter()
                    .any(|r| r.starts_with(&format!("{b} via {b6} dev eth0"))),
                "node-a's routes: {routes:?}"
            );
            ensure!(
                routes
                    .iter()
                    .any(|r| r.starts_with(&format!("{d} via ")) && r.contains("dev cw-vx1")),
                "node-d (behind r1) is not tunnelled: {routes:?}"
            );
            Ok(())
        },
    )?;
    let pairs = ping_all(&pods)?;
    let (a, pb) = (on(&pods, "node-a")?, on(&pods, "node-b")?);
    // Unencapsulated on the segment: full-size packets between rack-a pods need no room for
    // headers, and the tunnel's counters do not move for them.
    let tx = |node: &str| -> Result<u64> {
        let out = c.exec(node, "ip", &["-j", "-s", "link", "show", "cw-vx1"])?;
        let v: Value = serde_json::from_str(&out)?;
        v[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .context("no tx counter")
    };
    let before = tx("node-a")?;
    let stats = traffic::ping6(&a.netns, pb.ip, 20)?;
    let after = tx("node-a")?;
    ensure!(stats.received == 20, "{stats:?}");
    ensure!(
        after - before < 5,
        "{} packets went into node-a's tunnel for 20 pings to an on-segment peer",
        after - before
    );
    eprintln!(
        "[measure] IPv6 overlay crossSubnet: {pairs} pod pairs ping; 20 pings node-a -> node-b moved the tunnel's counter by {}",
        after - before
    );
    Ok(())
}

fn routed(c: &Cluster) -> Result<()> {
    let pods = pods_of(c, ROUTED, &RACK_A, "r", || {
        network(
            ROUTED,
            ROUTED_CIDR,
            "Routed",
            serde_json::json!({"nodeSelector": {"matchExpressions": [
                {"key": ZONE, "operator": "In", "values": ["rack-a", "rack-b"]},
            ]}}),
        )
    })?;
    for node in RACK_A {
        let routes = our_routes6(c, node)?;
        // One route per on-segment peer, via its IPv6 address on eth0.
        let via: Vec<&String> = routes.iter().filter(|r| r.contains("dev eth0")).collect();
        ensure!(via.len() == 2, "{node}: {routes:?}");
    }
    let pairs = ping_all(&pods)?;
    // node-d is selected but behind r1: named, for each rack-a node.
    wait_for("node-d named", Duration::from_secs(10), || {
        let (status, reason, message) = programmed(c, ROUTED, "node-a")?;
        ensure!(
            message.contains("node-d")
                && message.contains("add spec.routed.bgp so the routers carry its subnet"),
            "node-a: Programmed={status} {reason}: {message}"
        );
        Ok(())
    })?;
    eprintln!("[measure] IPv6 routed: {pairs} pod pairs on rack-a ping over static routes");
    Ok(())
}

/// Gateways on the static Routed IPv6 network (rack-a): RouteToNodes with node-a as the only
/// entry (the client reaches node-b's and node-c's pods through node-a's static routes), then
/// BridgeHosts with an IPv6 VIP on node-b and node-c.
fn routed_gateways(c: &Cluster) -> Result<()> {
    let pods = pods_of(c, ROUTED, &RACK_A, "r", || {
        network(ROUTED, ROUTED_CIDR, "Routed", serde_json::json!({}))
    })?;
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    label(c, "node-a", "causeway.dev/gateway=true")?;
    for node in ["node-b", "node-c"] {
        label(c, node, "causeway.dev/bridge=true")?;
    }
    let mut pasted = Vec::new();
    let result = (|| -> Result<()> {
        apply_gateway(
            c,
            "routed-entry",
            serde_json::json!({
                "network": ROUTED,
                "strategy": "RouteToNodes",
                "clientCidrs": ["fd00:50::/64"],
                "routeToNodes": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}},
            }),
        )?;
        let routes = client_routes(c, "routed-entry")?;
        let a = address6(c, "node-a")?;
        ensure!(
            routes.len() == 2 && routes[1] == format!("ip -6 route add {ROUTED_CIDR} via {a}"),
            "clientRoutes {routes:?}"
        );
        routes_on(c, &client.name, &routes, true)?;
        pasted = routes;
        client_reaches(&client_ns, &pods)?;
        routes_on(c, &client.name, &pasted, false)?;
        pasted.clear();
        c.kubectl(&["delete", "overlaygateway", "routed-entry", "--wait=true"])?;

        apply_gateway(
            c,
            "routed-bridge",
            serde_json::json!({
                "network": ROUTED,
                "strategy": "BridgeHosts",
                "clientCidrs": ["fd00:50::/64"],
                "bridgeHosts": {
                    "nodeSelector": {"matchLabels": {"causeway.dev/bridge": "true"}},
                    "vip": "fd00:50::251",
                },
            }),
        )?;
        let routes = client_routes(c, "routed-bridge")?;
        ensure!(
            routes == [format!("ip -6 route add {ROUTED_CIDR} via fd00:50::251")],
            "clientRoutes {routes:?}"
        );
        routes_on(c, &client.name, &routes, true)?;
        pasted = routes;
        client_reaches(&client_ns, &pods)?;
        eprintln!(
            "[measure] IPv6 routed gateways: the client reached all {} pods through node-a alone (RouteToNodes) and through the VIP fd00:50::251 (BridgeHosts)",
            pods.len()
        );
        Ok(())
    })();
    let _ = routes_on(c, &client.name, &pasted, false);
    for gw in ["routed-entry", "routed-bridge"] {
        let _ = c.kubectl(&[
            "delete",
            "overlaygateway",
            gw,
            "--ignore-not-found",
            "--wait=true",
        ]);
    }
    let _ = label(c, "node-a", "causeway.dev/gateway-");
    for node in ["node-b", "node-c"] {
        let _ = label(c, node, "causeway.dev/bridge-");
    }
    result
}

/// The BGP identifier an IPv6-only node uses: its IPv6 address folded into 32 bits (the XOR
/// of its four 32-bit words).
fn folded_router_id(a: Ipv6Addr) -> std::net::Ipv4Addr {
    let bits = u128::from(a);
    let folded = (0..4).fold(0u32, |acc, i| {
        acc ^ u32::try_from((bits >> (32 * i)) & 0xffff_ffff).unwrap_or(0)
    });
    folded.max(1).into()
}

/// Routed with BGP on the IPv6-only underlay: BIRD on r1 with one IPv6 session per node (r1's
/// address on the node's segment, per rack), IPv6 unicast only; each node announces its /64
/// with its IPv6 address as next hop and installs the others' via r1.
fn routed_bgp(c: &Cluster) -> Result<()> {
    SUITE.control_plane(c)?;
    let r1 = Bird::start(
        c,
        "r1",
        &bird::Config::for_nodes_ipv6(c, &ALL, ROUTER_ASN, [192, 168, 40, 1].into(), NODE_ASN)?,
    )?;
    let result = (|| -> Result<()> {
        let pods = pods_of(c, BGP, &ALL, "b", || {
            let mut pn = bird::bgp_network(
                BGP,
                BGP_CIDR,
                NODE_ASN,
                &[
                    bird::zone_peer("fd00:50::1", ROUTER_ASN, "rack-a"),
                    bird::zone_peer("fd00:60::1", ROUTER_ASN, "rack-b"),
                ],
            );
            pn["spec"]["nodeSubnetPrefixLength"] = 64.into();
            pn
        })?;
        let subnets = deploy::node_subnets(c, BGP)?;
        ensure!(subnets.len() == ALL.len(), "{} NodeSubnets", subnets.len());
        wait_for(
            "every session Established over IPv6",
            Duration::from_secs(30),
            || {
                for s in deploy::node_subnets(c, BGP)? {
                    let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
                    let session = &s["status"]["bgpSessions"][0];
                    let peer = if node == "node-d" {
                        "fd00:60::1"
                    } else {
                        "fd00:50::1"
                    };
                    ensure!(
                        session["peerAddress"] == peer
                            && session["state"] == "Established"
                            && session["ipv6RoutesAdvertised"] == 1
                            && session["ipv6RoutesReceived"].as_i64() >= Some(1),
                        "{node}: bgpSessions {}",
                        s["status"]["bgpSessions"]
                    );
                }
                Ok(())
            },
        )?;
        // r1 holds every node's /64 via the node's IPv6 address, in BIRD and in its kernel,
        // and knows each node by its folded router ID.
        wait_for(
            "r1 learns every node's subnet",
            Duration::from_secs(20),
            || {
                let routes = r1.routes()?;
                for s in &subnets {
                    let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
                    let cidr = s["spec"]["cidr"].as_str().unwrap_or_default();
                    let via = address6(c, node)?.to_string();
                    ensure!(
                        routes.get(cidr) == Some(&via),
                        "{node}: r1 has {cidr} via {:?}, expected {via}",
                        routes.get(cidr)
                    );
                    let kernel = c.exec("r1", "ip", &["-6", "route", "show", cidr])?;
                    ensure!(
                        kernel.contains(&format!("via {via}")),
                        "r1's kernel: {kernel:?}"
                    );
                }
                Ok(())
            },
        )?;
        for node in ALL {
            let name = node.replace('-', "_");
            let protocol = r1.birdc(&["show", "protocols", "all", &name])?;
            let id = folded_router_id(address6(c, node)?);
            ensure!(
                protocol.contains(&format!("Neighbor ID:      {id}"))
                    || protocol.contains(&format!("Neighbor ID: {id}")),
                "r1 does not see {node} as router ID {id}:\n{protocol}"
            );
        }
        // node-d reaches rack-a's subnets via r1's lan-b address.
        let routes = our_routes6(c, "node-d")?;
        ensure!(
            routes
                .iter()
                .filter(|r| r.contains("via fd00:60::1 dev eth0"))
                .count()
                == 3,
            "node-d's routes: {routes:?}"
        );
        let pairs = ping_all(&pods)?;
        let (a, d) = (on(&pods, "node-a")?, on(&pods, "node-d")?);
        traffic::tcp_check6(&d.netns, &a.netns, d.ip, 7465)?;
        eprintln!(
            "[measure] IPv6 routed with BGP: every node's session to r1 Established over IPv6 (router IDs folded from the IPv6 addresses), r1 holds all 4 /64s via the nodes, {pairs} pod pairs ping across r1"
        );
        Ok(())
    })();
    r1.stop(c);
    result
}

fn flat(c: &Cluster) -> Result<()> {
    let pods = pods_of(c, FLAT, &RACK_A, "f", || {
        network(
            FLAT,
            FLAT_CIDR,
            "Flat",
            serde_json::json!({"nodeSelector": {"matchLabels": {ZONE: "rack-a"}}}),
        )
    })?;
    for node in RACK_A {
        let routes = our_routes6(c, node)?;
        ensure!(
            routes.len() == 1 && routes[0].starts_with(&format!("{FLAT_CIDR} dev eth0 ")),
            "{node}: {routes:?}"
        );
    }
    let pairs = ping_all(&pods)?;
    let client = the_client(c)?;
    let ns = c.ns(&client.name);
    c.exec(
        &client.name,
        "ip",
        &["-6", "route", "replace", FLAT_CIDR, "dev", "eth0"],
    )?;
    let result = (|| -> Result<()> {
        for pod in &pods {
            wait_for("client -> pod", Duration::from_secs(5), || {
                traffic::expect_ping6(&ns, pod.ip)
            })
            .with_context(|| format!("client -> {}/{} ({})", pod.node, pod.name, pod.ip))?;
        }
        traffic::tcp_check6(&pods[0].netns, &ns, pods[0].ip, 7464)
    })();
    c.exec(&client.name, "ip", &["-6", "route", "del", FLAT_CIDR])?;
    result?;
    // The same pods through one RouteToNodes entry (node-a), which forwards to the others'
    // pods on the segment (they answer for them by proxy NDP).
    label(c, "node-a", "causeway.dev/gateway=true")?;
    let mut pasted = Vec::new();
    let entry = apply_gateway(
        c,
        "flat-entry",
        serde_json::json!({
            "network": FLAT,
            "strategy": "RouteToNodes",
            "clientCidrs": ["fd00:50::/64"],
            "routeToNodes": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}},
        }),
    )
    .and_then(|()| {
        let routes = client_routes(c, "flat-entry")?;
        let a = address6(c, "node-a")?;
        ensure!(
            routes.len() == 2 && routes[1] == format!("ip -6 route add {FLAT_CIDR} via {a}"),
            "clientRoutes {routes:?}"
        );
        routes_on(c, &client.name, &routes, true)?;
        pasted = routes;
        client_reaches(&ns, &pods)
    });
    let _ = routes_on(c, &client.name, &pasted, false);
    let _ = c.kubectl(&[
        "delete",
        "overlaygateway",
        "flat-entry",
        "--ignore-not-found",
        "--wait=true",
    ]);
    let _ = label(c, "node-a", "causeway.dev/gateway-");
    entry?;
    eprintln!(
        "[measure] IPv6 flat: {pairs} pod pairs ping; the client reaches all {} pods with one on-link route, and through node-a alone (RouteToNodes)",
        pods.len()
    );
    Ok(())
}
