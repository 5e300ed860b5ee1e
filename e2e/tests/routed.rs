//! Flat and Routed modes end to end (issue #6) on the reference topology: node-a..c on lan-a
//! (zone rack-a), node-d on lan-b (zone rack-b) behind router r1, and a non-node client on
//! lan-a. The operator and an agent per node run with the chart's RBAC; pods are attached with
//! the CNI config the agents wrote; every check is real traffic or the kernel's own tables.
//!
//! The networks run one after another (each is deleted, and checked gone, before the next):
//! Flat on rack-a, Routed with static routes on rack-a, then Routed with BGP on all four
//! nodes, with BIRD 2 on r1 as the routers' BGP speaker (AS 64500; nodes AS 64512), and for
//! one test FRRouting in its place (a second router implementation, one session with TCP
//! MD5). The BGP tests also change the network and r1 for a while (passwords, a node's AS
//! from a label) and put both back before they end.
//! Between Flat and Routed, a Routed network without pods checks how agent heartbeats are
//! judged: an API server pause longer than the agents' Lease is nobody's fault, a stopped
//! agent is reported.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use causeway_e2e::bird;
use causeway_e2e::pods::{self, Pod};
use causeway_e2e::suite::{
    Suite, freeze_apiserver, lock, network_ready, node_address, our_nexthops, our_routes, pod_on,
    wait_network_ready,
};
use causeway_e2e::topology::{Topology, presets};
use causeway_e2e::traffic::{self, wait_for};
use causeway_e2e::{Cluster, deploy, testing};
use serde_json::Value;

const RACK_A: [&str; 3] = ["node-a", "node-b", "node-c"];
const ALL: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];
const ZONE: &str = presets::ZONE;
/// The agents' heartbeat Lease duration: short, so a pause can outlast it in seconds.
const LEASE_SECONDS: u64 = 4;

/// Agents on every node, resyncing every 3 s.
static SUITE: Suite = Suite::new(&ALL, 3, LEASE_SECONDS);

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
                "kubectl_causeway_trace_names_the_node_whose_proxy_arp_answers_and_the_neighbour_table_agrees",
                flat_trace,
            ),
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
                "an_api_server_pause_longer_than_the_agents_lease_is_not_reported_but_a_stopped_agent_is",
                api_server_pause,
            ),
            testing::test(
                "routed_static_routes_each_peer_via_its_address_and_pods_reach_each_other",
                routed_static,
            ),
            testing::test(
                "bgp_sessions_establish_bird_learns_every_subnet_and_pods_cross_the_router",
                bgp_up,
            ),
            testing::test(
                "bgp_route_to_nodes_the_router_learns_exactly_the_rendered_routes",
                bgp_route_to_nodes,
            ),
            testing::test(
                "bgp_sessions_recover_from_a_router_restart_and_an_agent_restart",
                bgp_restarts,
            ),
            testing::test(
                "kubectl_causeway_trace_crosses_the_router_that_forwards_and_status_names_the_sessions_a_stopped_router_leaves_down",
                bgp_cli,
            ),
            testing::test(
                "bgp_an_agent_restart_loses_no_ping_and_the_router_keeps_the_nodes_subnet",
                bgp_graceful_restart,
            ),
            testing::test(
                "bgp_with_frr_as_the_router_and_md5_on_one_session_routes_install_pods_cross_it_and_a_wrong_key_is_reported",
                bgp_with_frr,
            ),
            testing::test(
                "bgp_a_password_from_a_secret_missing_wrong_then_right_is_reported_then_established",
                bgp_password,
            ),
            testing::test(
                "bgp_a_node_as_from_a_label_is_established_and_a_bad_label_is_reported",
                bgp_node_asn,
            ),
            testing::test(
                "bgp_a_deleted_node_is_withdrawn_from_bird_and_every_node",
                bgp_node_deleted,
            ),
        ],
    )
}

/// The realistic topology (control plane behind the router, default routes, strict
/// rp_filter, foreign routes of every origin) with zone labels: rack-a is lan-a, rack-b is
/// lan-b.
fn racks() -> Topology {
    presets::racks(presets::realistic())
}

/// A PodNetwork over the rack-a nodes.
fn network(name: &str, cidr: &str, mode: &str) -> Value {
    let rack_a = serde_json::json!({"nodeSelector": {"matchLabels": {ZONE: "rack-a"}}});
    causeway_e2e::suite::pod_network(name, cidr, mode, rack_a)
}

/// Applies `pn`, waits for Ready, and attaches two pods on each rack-a node.
fn bring_up(c: &Cluster, pn: &Value) -> Result<Vec<Pod>> {
    bring_up_on(c, pn, &RACK_A)
}

/// Applies `pn`, waits for Ready, and attaches two pods on each of `nodes`.
fn bring_up_on(c: &Cluster, pn: &Value, nodes: &[&str]) -> Result<Vec<Pod>> {
    let name = pn["metadata"]["name"].as_str().context("name")?;
    SUITE.bring_up(c, &pn.to_string(), name, nodes, name)
}

/// The pods of the current network, bringing the Flat one up if none is.
fn flat_pods(c: &Cluster) -> Result<Vec<Pod>> {
    let pods = SUITE.pods();
    if pods.first().is_some_and(|p| p.name.starts_with("flat")) {
        return Ok(pods);
    }
    bring_up(c, &network("flat", "10.244.0.0/16", "Flat"))
}

/// Detaches the pods, deletes the network and waits until no node holds anything of it.
fn tear_down(c: &Cluster, name: &str) -> Result<()> {
    let pods = SUITE.take_pods();
    for pod in &pods {
        pods::del(c, pod)?;
    }
    c.kubectl(&["delete", "podnetwork", name, "--wait=true", "--timeout=60s"])?;
    for node in ALL {
        wait_for(&format!("{node} is clean"), Duration::from_secs(15), || {
            ensure!(our_routes(c, node)?.is_empty(), "routes left");
            ensure!(our_nexthops(c, node)?.is_empty(), "nexthop objects left");
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

fn proxy_arp(c: &Cluster, node: &str) -> Result<String> {
    Ok(
        c.exec(node, "cat", &["/proc/sys/net/ipv4/conf/eth0/proxy_arp"])?
            .trim()
            .to_string(),
    )
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
    matrix_with(c, pods, &RACK_A)
}

/// Every pod pings every other pod and each of `nodes`, and those nodes ping every pod.
fn matrix_with(c: &Cluster, pods: &[Pod], nodes: &[&str]) -> Result<()> {
    let mut pairs = Vec::new();
    for from in pods {
        for to in pods.iter().filter(|to| to.netns != from.netns) {
            pairs.push((
                from.netns.clone(),
                to.ip,
                format!("{} -> {}", from.netns, to.ip),
            ));
        }
        for node in nodes {
            pairs.push((
                from.netns.clone(),
                node_address(c, node)?,
                format!("{} -> node {node}", from.netns),
            ));
            pairs.push((c.ns(node), from.ip, format!("node {node} -> {}", from.ip)));
        }
    }
    let failures = traffic::ping_matrix(&pairs);
    ensure!(
        failures.is_empty(),
        "{} of {} pairs unreachable:\n{}",
        failures.len(),
        pairs.len(),
        failures.join("\n")
    );
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

/// `kubectl causeway trace` between pods of node-a and node-b on the Flat network names the
/// whole range on-link and node-b's proxy ARP; after real pings node-a's neighbour table
/// holds the pod's address with node-b's MAC, the answer the trace named.
fn flat_trace(c: &Cluster) -> Result<()> {
    let pods = flat_pods(c)?;
    let a = pod_on(&pods, "node-a")?;
    let b = pod_on(&pods, "node-b")?;
    let run =
        causeway_e2e::suite::kubectl_causeway(c, &["trace", &a.ip.to_string(), &b.ip.to_string()])?;
    println!("{}", run.stdout);
    run.expect_all(&[
        "(Flat, proxy ARP)",
        "route 10.244.0.0/16 dev <underlay> (the whole range on-link)",
        &format!("ARP for {}, answered by node-b (proxy ARP", b.ip),
    ])?;
    traffic::expect_ping(&a.netns, b.ip)?;
    let owner = mac(c, "node-b")?;
    let neigh = c.exec("node-a", "ip", &["-j", "neigh", "show", &b.ip.to_string()])?;
    let entries: Value = serde_json::from_str(&neigh)?;
    ensure!(
        entries
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["lladdr"] == owner.as_str()),
        "node-a resolved {} to {entries}, not node-b's {owner}",
        b.ip
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
            let (status, reason, message) = network_ready(c, "flat")?;
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
    wait_network_ready(c, "flat", 30)?;
    // node-d left the network: nothing of it remains there.
    wait_for("node-d is clean", Duration::from_secs(15), || {
        ensure!(our_routes(c, "node-d")?.is_empty(), "routes left");
        ensure!(
            our_nexthops(c, "node-d")?.is_empty(),
            "nexthop objects left"
        );
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
    let by_node = subnets_of(c, "routed")?;
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
    // `kubectl causeway trace` names the route via node-b's address; 20 pings from node-a's
    // pod reach node-b's underlay link (at least 20 more packets received there) and leave
    // node-c's, which is not on the path, with fewer than 20.
    let a = pod_on(&pods, "node-a")?;
    let b = pod_on(&pods, "node-b")?;
    let run =
        causeway_e2e::suite::kubectl_causeway(c, &["trace", &a.ip.to_string(), &b.ip.to_string()])?;
    println!("{}", run.stdout);
    let (b_subnet, b_addr) = by_node.get("node-b").context("no subnet of node-b")?;
    run.expect_all(&[
        "(Routed, static routes)".to_owned(),
        format!("route {b_subnet} via {b_addr} dev <underlay>"),
    ])?;
    let received = |node: &str| traffic::link_packets(c, node, "eth0").map(|(rx, _)| rx);
    let (b0, c0) = (received("node-b")?, received("node-c")?);
    let sent = traffic::ping(&a.netns, b.ip, 20)?;
    ensure!(sent.received == 20, "{sent:?}");
    let (b1, c1) = (received("node-b")? - b0, received("node-c")? - c0);
    println!(
        "[measure] Routed static, 20 pings node-a -> node-b: node-b's eth0 received {b1}, node-c's {c1}"
    );
    ensure!(
        b1 >= 20 && c1 < 20,
        "the pings did not take the path the trace names: node-b received {b1}, node-c {c1}"
    );
    tear_down(c, "routed")
}

/// A condition of PodNetwork `name`: (status, reason, message, lastTransitionTime).
fn condition(c: &Cluster, name: &str, type_: &str) -> Result<(String, String, String, String)> {
    let out = c.kubectl(&["get", "podnetwork", name, "-o", "json"])?;
    let pn: Value = serde_json::from_str(&out)?;
    let Some(cond) = pn["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
    else {
        bail!("no {type_} condition yet");
    };
    let text = |k: &str| cond[k].as_str().unwrap_or_default().to_owned();
    Ok((
        text("status"),
        text("reason"),
        text("message"),
        text("lastTransitionTime"),
    ))
}

/// `type: note` of every event with `reason` about PodNetwork `name`.
fn events_with_reason(c: &Cluster, name: &str, reason: &str) -> Result<Vec<String>> {
    let out = c.kubectl(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        &format!("involvedObject.kind=PodNetwork,involvedObject.name={name},reason={reason}"),
        "-o",
        "json",
    ])?;
    let list: Value = serde_json::from_str(&out)?;
    Ok(list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["type"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Agents renew their heartbeat Lease through the API server, and the operator watches the
/// Leases through it too: while the server is frozen nobody renews and nobody can see. A pause
/// longer than the Lease is the operator's blind spot, not the agents' silence: the network
/// stays Ready and no `AgentNotReporting` event is written. An agent that really stops is
/// still reported, by node and Lease.
fn api_server_pause(c: &Cluster) -> Result<()> {
    const NAME: &str = "pause";
    SUITE.control_plane(c)?;
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &network(NAME, "10.243.0.0/16", "Routed").to_string(),
    )?;
    wait_network_ready(c, NAME, 60)?;
    let result = (|| -> Result<()> {
        // Every agent has renewed since it started, and the operator has seen it do so.
        std::thread::sleep(Duration::from_secs(LEASE_SECONDS + 2));
        let (status, _, _, since) = condition(c, NAME, "Ready")?;
        ensure!(status == "True", "not Ready before the pause");
        let before = events_with_reason(c, NAME, "AgentNotReporting")?;

        let frozen = freeze_apiserver(c)?;
        let pause = Duration::from_secs(LEASE_SECONDS * 2);
        std::thread::sleep(pause);
        drop(frozen);
        let resumed = std::time::Instant::now();

        // Sample Ready and Degraded until well after every agent could have lapsed and come
        // back: any flip is a failure, and so is seeing too little.
        let mut samples = 0usize;
        let mut flips = Vec::new();
        while resumed.elapsed() < Duration::from_secs(LEASE_SECONDS * 2 + 2) {
            if let (Ok(ready), Ok(degraded)) =
                (condition(c, NAME, "Ready"), condition(c, NAME, "Degraded"))
            {
                samples += 1;
                if ready.0 != "True" || degraded.0 != "False" {
                    flips.push(format!(
                        "+{:.1}s Ready={} {}: {} / Degraded={} {}",
                        resumed.elapsed().as_secs_f64(),
                        ready.0,
                        ready.1,
                        ready.2,
                        degraded.0,
                        degraded.1
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ensure!(
            samples >= 10,
            "only {samples} readings of the PodNetwork after the API server resumed"
        );
        let after = events_with_reason(c, NAME, "AgentNotReporting")?;
        let new: Vec<&String> = after.iter().filter(|e| !before.contains(e)).collect();
        let (_, _, _, since_after) = condition(c, NAME, "Ready")?;
        println!(
            "[measure] API server frozen {pause:?} (agents' Lease {LEASE_SECONDS}s): {samples} readings after, {} not Ready, {} AgentNotReporting events",
            flips.len(),
            new.len()
        );
        ensure!(
            new.is_empty(),
            "AgentNotReporting events after a {pause:?} API server pause: {new:#?}"
        );
        ensure!(
            flips.is_empty(),
            "the PodNetwork left Ready after a {pause:?} API server pause: {flips:#?}"
        );
        ensure!(
            since_after == since,
            "Ready's lastTransitionTime moved from {since} to {since_after}: it flipped and came back"
        );

        // A real silence is still reported: node-b's agent stops.
        let node = "node-b";
        let agent = SUITE.agent_of(node)?;
        let stopped = std::time::Instant::now();
        c.stop(&agent);
        let message = wait_for(
            "Ready=False AgentNotReporting",
            Duration::from_secs(LEASE_SECONDS + 10),
            || {
                let (status, reason, message, _) = condition(c, NAME, "Ready")?;
                ensure!(
                    status == "False" && reason == "AgentNotReporting",
                    "{status} {reason}: {message}"
                );
                Ok(message)
            },
        )?;
        println!(
            "[measure] agent stopped -> Ready=False AgentNotReporting in {:.1}s (Lease {LEASE_SECONDS}s)",
            stopped.elapsed().as_secs_f64()
        );
        ensure!(
            message.contains(node) && message.contains("causeway-agent-node-b"),
            "the message does not name the node and its Lease: {message}"
        );
        wait_for(
            "an AgentNotReporting Warning event",
            Duration::from_secs(10),
            || {
                let events = events_with_reason(c, NAME, "AgentNotReporting")?;
                ensure!(
                    events
                        .iter()
                        .any(|e| e.starts_with("Warning:") && e.contains(node)),
                    "{events:?}"
                );
                Ok(())
            },
        )?;
        SUITE.start_agent(c, node)?;
        wait_network_ready(c, NAME, 30)?;
        Ok(())
    })();
    let deleted = tear_down(c, NAME);
    result.and(deleted)
}

const ROUTER_ASN: u32 = 64500;
const NODE_ASN: u32 = 64512;

static BIRD: Mutex<Option<causeway_e2e::bird::Bird>> = Mutex::new(None);

fn bird_config(c: &Cluster) -> Result<causeway_e2e::bird::Config> {
    causeway_e2e::bird::Config::for_nodes(c, &ALL, ROUTER_ASN, [192, 168, 50, 1].into(), NODE_ASN)
}

/// The BGP network: every node; rack-a peers with r1's lan-a leg, rack-b with its lan-b leg.
fn bgp_network() -> Value {
    bird::bgp_network(
        "bgp",
        "10.246.0.0/16",
        NODE_ASN,
        &[
            bird::zone_peer("192.168.50.1", ROUTER_ASN, "rack-a"),
            bird::zone_peer("192.168.60.1", ROUTER_ASN, "rack-b"),
        ],
    )
}

/// node → (subnet, node address) of the `bgp` network.
fn bgp_subnets(c: &Cluster) -> Result<BTreeMap<String, (String, String)>> {
    subnets_of(c, "bgp")
}

/// node → (subnet, node address) of `network`.
fn subnets_of(c: &Cluster, network: &str) -> Result<BTreeMap<String, (String, String)>> {
    Ok(deploy::node_subnets(c, network)?
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
        .collect())
}

/// Every node's subnet is in BIRD's table with the node as next hop, and every session is
/// Established on both ends.
fn bgp_converged(c: &Cluster, nodes: &[&str]) -> Result<()> {
    let bird = lock(&BIRD);
    bird.as_ref()
        .context("BIRD is not running")?
        .expect_converged(c, "bgp", nodes)
}

/// The routes each node must hold: on-link peers direct, the others via its router leg.
fn bgp_routes_ok(c: &Cluster, nodes: &[&str]) -> Result<()> {
    let subnets = bgp_subnets(c)?;
    for node in nodes {
        let node_addr = node_address(c, node)?;
        let mut want: Vec<String> = Vec::new();
        for peer in nodes.iter().filter(|p| *p != node) {
            let (cidr, addr) = subnets.get(*peer).context("no NodeSubnet")?;
            let same_segment = addr.rsplit_once('.').map(|(n, _)| n)
                == node_addr.to_string().rsplit_once('.').map(|(n, _)| n);
            let via = if same_segment {
                addr.clone()
            } else if node_addr.octets()[2] == 50 {
                "192.168.50.1".to_string()
            } else {
                "192.168.60.1".to_string()
            };
            want.push(format!("{cidr} via {via} dev eth0"));
        }
        want.sort();
        let mut got = our_routes(c, node)?;
        got.sort();
        ensure!(got == want, "{node}: routes {got:?}, expected {want:?}");
    }
    Ok(())
}

fn bgp_up(c: &Cluster) -> Result<()> {
    SUITE.control_plane(c)?;
    {
        let mut bird = lock(&BIRD);
        if bird.is_none() {
            *bird = Some(causeway_e2e::bird::Bird::start(c, "r1", &bird_config(c)?)?);
        }
    }
    let pods = bring_up_on(c, &bgp_network(), &ALL)?;
    wait_for("BGP converged", Duration::from_secs(30), || {
        bgp_converged(c, &ALL)
    })?;
    wait_for("routes installed", Duration::from_secs(15), || {
        bgp_routes_ok(c, &ALL)
    })?;
    created_to_established(c)?;
    matrix_with(c, &pods, &ALL)
}

/// Prints the time from the `bgp` network's creation to its last session Established, from
/// the API's own timestamps (1 s resolution).
fn created_to_established(c: &Cluster) -> Result<()> {
    let pn: Value =
        serde_json::from_str(&c.kubectl(&["get", "podnetwork", "bgp", "-o", "json"])?)?;
    let created = pn["metadata"]["creationTimestamp"]
        .as_str()
        .context("creationTimestamp")?
        .parse::<jiff::Timestamp>()?;
    let mut last = created;
    for s in deploy::node_subnets(c, "bgp")? {
        let since = s["status"]["bgpSessions"][0]["since"]
            .as_str()
            .context("a session without since")?;
        last = last.max(since.parse::<jiff::Timestamp>()?);
    }
    println!(
        "[measure] PodNetwork bgp created -> all {} sessions Established: {}s (API timestamps, 1 s resolution)",
        ALL.len(),
        (last - created).get_seconds()
    );
    Ok(())
}

/// RouteToNodes on a BGP network: every route the gateway renders for clients is one the
/// nodes already advertise, so BIRD holds each with the same next hop.
fn bgp_route_to_nodes(c: &Cluster) -> Result<()> {
    let gateway = serde_json::json!({
        "apiVersion": "causeway.dev/v1alpha1",
        "kind": "OverlayGateway",
        "metadata": {"name": "racks"},
        "spec": {
            "network": "bgp",
            "strategy": "RouteToNodes",
            "clientCidrs": ["192.168.50.0/24", "192.168.60.0/24"],
        },
    });
    c.kubectl_stdin(&["apply", "-f", "-"], &gateway.to_string())?;
    let result = (|| -> Result<()> {
        c.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "--timeout=30s",
            "overlaygateway/racks",
        ])?;
        let out = c.kubectl(&["get", "overlaygateway", "racks", "-o", "json"])?;
        let st: Value = serde_json::from_str(&out)?;
        let message = st["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            message.contains("advertise their subnets over BGP"),
            "{message}"
        );
        let rendered: Vec<(String, String)> = st["status"]["clientRoutes"]
            .as_array()
            .context("clientRoutes")?
            .iter()
            .filter_map(|r| {
                let w: Vec<&str> = r.as_str()?.split_whitespace().collect();
                (w.len() == 6 && w[4] == "via").then(|| (w[3].to_string(), w[5].to_string()))
            })
            .collect();
        ensure!(rendered.len() == ALL.len(), "rendered {rendered:?}");
        let bird = lock(&BIRD);
        let bird = bird.as_ref().context("BIRD is not running")?;
        let learned = bird.routes()?;
        for (dst, via) in &rendered {
            ensure!(
                learned.get(dst) == Some(via),
                "the router has {dst} via {:?}, the gateway renders via {via}",
                learned.get(dst)
            );
        }
        Ok(())
    })();
    c.kubectl(&["delete", "overlaygateway", "racks"])?;
    result
}

/// Waits until every session is Established again and every route is back after `what`,
/// reports how long that took, and checks traffic.
fn recovered(c: &Cluster, pods: &[Pod], what: &str, started: std::time::Instant) -> Result<()> {
    wait_for(
        &format!("BGP converged after a {what}"),
        Duration::from_secs(40),
        || bgp_converged(c, &ALL),
    )?;
    wait_for("routes back", Duration::from_secs(15), || {
        bgp_routes_ok(c, &ALL)
    })?;
    println!(
        "[measure] {what} -> every session Established and routes back in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    matrix_with(c, pods, &ALL)
}

fn bgp_restarts(c: &Cluster) -> Result<()> {
    let pods = bgp_pods()?;
    // The router restarts: sessions drop, the agents reconnect, routes come back.
    let started = std::time::Instant::now();
    {
        let mut guard = lock(&BIRD);
        let bird = guard.take().context("BIRD is not running")?;
        *guard = Some(bird.restart(c)?);
    }
    recovered(c, &pods, "BIRD restart", started)?;

    // The router away for 20 s: the agents' reconnect backoff must not make its return wait
    // (issue #14, defect 11: with a 30 s cap, sessions came back 11 s after BIRD did).
    let back = {
        let mut guard = lock(&BIRD);
        let bird = guard.take().context("BIRD is not running")?;
        *guard = Some(bird.restart_after(c, Duration::from_secs(20))?);
        std::time::Instant::now()
    };
    recovered(c, &pods, "BIRD back after 20 s away", back)?;
    ensure!(
        back.elapsed() < Duration::from_secs(8),
        "sessions and routes took {:?} after BIRD came back",
        back.elapsed()
    );

    // An agent restarts: its sessions close and come back, and the routes with them.
    let started = std::time::Instant::now();
    SUITE.restart_agent(c, "node-d")?;
    recovered(c, &pods, "node-d agent restart", started)?;
    wait_network_ready(c, "bgp", 30)?;
    Ok(())
}

/// Packets r1 has sent on all its links so far.
fn router_sent(c: &Cluster) -> Result<u64> {
    let out = c.exec("r1", "ip", &["-j", "-s", "link", "show"])?;
    let links: Value = serde_json::from_str(&out)?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ifname"] != "lo")
        .filter_map(|l| l["stats64"]["tx"]["packets"].as_u64())
        .sum())
}

/// `kubectl causeway` on the BGP network: `trace` from a pod on node-a to one on node-d
/// names the route node-a learned over BGP and r1 in between, and 20 pings along it make r1
/// send at least 40 packets (requests and replies forwarded); `status` is clean, then with
/// BIRD on r1 stopped names every node's session to r1 as down (and nothing else but the
/// network's verdict), and is clean again once BIRD is back.
fn bgp_cli(c: &Cluster) -> Result<()> {
    let pods = bgp_pods()?;
    wait_for("status healthy", Duration::from_secs(30), || {
        let run = causeway_e2e::suite::kubectl_causeway(c, &["status"])?;
        ensure!(run.code == 0, "{}", run.stdout);
        Ok(())
    })?;
    let a = pod_on(&pods, "node-a")?;
    let d = pod_on(&pods, "node-d")?;
    let run =
        causeway_e2e::suite::kubectl_causeway(c, &["trace", &a.ip.to_string(), &d.ip.to_string()])?;
    println!("{}", run.stdout);
    let d_addr = node_address(c, "node-d")?;
    run.expect_all(&[
        "(Routed, BGP)".to_owned(),
        format!("via a router it learned it from over BGP: 192.168.50.1 (AS {ROUTER_ASN})"),
        format!("forwards to {d_addr} (node-d), the next hop node-d announced"),
    ])?;
    let before = router_sent(c)?;
    let sent = traffic::ping(&a.netns, d.ip, 20)?;
    ensure!(sent.received == 20, "{sent:?}");
    let forwarded = router_sent(c)? - before;
    println!("[measure] 20 pings node-a -> node-d: r1 sent {forwarded} packets");
    ensure!(
        forwarded >= 40,
        "r1, which the trace names, forwarded only {forwarded} packets for 20 pings"
    );

    let bird = lock(&BIRD).take().context("BIRD is not running")?;
    bird.stop(c);
    // Four sessions down make one line on screen; `-o json` has each.
    let down = wait_for(
        "status names the sessions down",
        Duration::from_secs(30),
        || {
            let json = causeway_e2e::suite::kubectl_causeway(c, &["status", "-o", "json"])?;
            let report: Value = serde_json::from_str(&json.stdout)?;
            let sessions: Vec<&Value> = report["problems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p["what"]
                        .as_str()
                        .is_some_and(|w| w.starts_with("BGP session to 192.168."))
                })
                .collect();
            ensure!(
                json.code == 1 && sessions.len() == ALL.len(),
                "{}",
                json.stdout
            );
            let text = causeway_e2e::suite::kubectl_causeway(c, &["status"])?;
            Ok((report, text))
        },
    );
    let restarted = causeway_e2e::bird::Bird::start(c, "r1", &bird_config(c)?);
    let (report, text) = down?;
    *lock(&BIRD) = Some(restarted?);
    println!("{}", text.stdout);
    let problems = report["problems"].as_array().context("no problems")?;
    for node in ALL {
        ensure!(
            problems.iter().any(|p| p["node"] == node
                && p["what"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("BGP session to 192.168."))),
            "no session of {node} named: {problems:?}"
        );
    }
    for p in problems {
        let what = p["what"].as_str().unwrap_or_default();
        ensure!(
            what.starts_with("BGP session") || p["object"] == "podnetwork/bgp",
            "a problem that is not the router: {p}"
        );
    }
    text.expect_all(&[
        "BGP sessions: 0 of 4 established",
        "- 4 BGP sessions down: ",
    ])?;
    wait_for("status healthy again", Duration::from_secs(40), || {
        let run = causeway_e2e::suite::kubectl_causeway(c, &["status"])?;
        ensure!(run.code == 0, "{}", run.stdout);
        Ok(())
    })?;
    recovered(
        c,
        &pods,
        "BIRD back after the status check",
        std::time::Instant::now(),
    )
}

/// The TCP MD5 key FRR shares with node-d in `bgp_with_frr`.
const FRR_KEY: &str = "causeway-frr";

/// Issue #17: the nodes' speaker against a second router implementation. FRR replaces BIRD
/// on r1 with the same configuration, plus a TCP MD5 password on node-d's session (the
/// rack-b peer takes it from Secret `r1-frr`): every session is Established on both ends, FRR
/// installs every node's subnet via that node in r1's kernel, every node routes the others
/// through r1, and pods cross it. Then node-d's Secret changes to a key FRR does not share:
/// the session goes down on both ends and node-d says to check the key. BIRD and the
/// password-free network come back afterwards.
fn bgp_with_frr(c: &Cluster) -> Result<()> {
    let pods = bgp_pods()?;
    let config = bird_config_with(c, "node-d", |n| n.password = Some(FRR_KEY.into()))?;
    if let Some(bird) = lock(&BIRD).take() {
        bird.stop(c);
    }
    put_password_secret(c, "r1-frr", FRR_KEY)?;
    apply(c, &bgp_network_with_password("r1-frr"))?;
    let started = std::time::Instant::now();
    let frr = causeway_e2e::frr::Frr::start(c, "r1", &config)?;
    let result = (|| -> Result<()> {
        wait_for(
            "FRR: every session Established, every subnet installed",
            Duration::from_secs(45),
            || {
                let sessions = frr.sessions()?;
                for node in ALL {
                    let address = node_address(c, node)?;
                    let state = sessions.get(&address).cloned().unwrap_or_default();
                    ensure!(
                        state == "Established",
                        "FRR's session with {node}: {state:?}"
                    );
                }
                let routes = frr.routes()?;
                for (node, (cidr, address)) in bgp_subnets(c)? {
                    ensure!(
                        routes.get(&cidr) == Some(&address),
                        "FRR has {cidr} via {:?}, expected via {address} ({node}); table {routes:?}",
                        routes.get(&cidr)
                    );
                }
                for node in ALL {
                    let ready = node_ready(c, node)?;
                    ensure!(established(&ready), "{ready:?}");
                }
                Ok(())
            },
        )?;
        wait_for("routes through FRR", Duration::from_secs(15), || {
            bgp_routes_ok(c, &ALL)
        })?;
        println!(
            "[measure] FRR replaced BIRD on r1 (node-d with TCP MD5) -> every session Established and routes installed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        matrix_with(c, &pods, &ALL)?;

        // node-d's key changes, FRR's does not: each side drops the other's segments.
        let rotated = std::time::Instant::now();
        put_password_secret(c, "r1-frr", "not-the-routers-key")?;
        let ready = wait_node(
            c,
            "node-d",
            "session down with the password hint",
            30,
            |r| {
                r.reason == "BgpSessionsDown"
                    && r.message.contains("check that both sides use the same key")
            },
        )?;
        let node_d = node_address(c, "node-d")?;
        let state = frr.sessions()?.get(&node_d).cloned().unwrap_or_default();
        ensure!(state != "Established", "FRR's session with node-d: {state}");
        println!(
            "[measure] node-d's key changed -> Ready=False with the hint in {:.1}s (FRR: {state}): {}",
            rotated.elapsed().as_secs_f64(),
            ready.message
        );
        Ok(())
    })();
    frr.stop(c);
    *lock(&BIRD) = Some(causeway_e2e::bird::Bird::start(c, "r1", &bird_config(c)?)?);
    let restored = restore_bgp(c, "on BIRD again");
    delete_secret(c, "r1-frr");
    result.and(restored)
}

/// Resident memory of process `pid`, in MiB (`VmRSS`).
fn rss_mib(pid: i32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Issue #17, graceful restart: a ping every 20 ms from a pod in rack-a to a pod on node-d
/// (behind r1) while node-d's agent, and with it its BIRD, restarts. r1 (GR-aware) keeps
/// node-d's subnet throughout (its table is read every 50 ms) and node-d keeps its routes
/// (carried until its new sessions are up): nothing is lost. Also measured: BIRD's memory
/// next to the agent's, and the time from the network's creation to its last session
/// Established.
fn bgp_graceful_restart(c: &Cluster) -> Result<()> {
    let pods = bgp_pods()?;
    let from = pod_on(&pods, "node-a")?;
    let to = pod_on(&pods, "node-d")?;
    let (cidr, _) = bgp_subnets(c)?
        .get("node-d")
        .cloned()
        .context("node-d has no NodeSubnet")?;

    // Memory, before the restart: each node's BIRD next to its agent.
    for node in ALL {
        let pidfile = c.host_dir(node).join("bird").join("bird.pid");
        let bird: i32 = std::fs::read_to_string(&pidfile)
            .with_context(|| format!("reading {}", pidfile.display()))?
            .trim()
            .parse()?;
        let agent = SUITE.agent_of(node)?.pid;
        println!(
            "[measure] {node}: BIRD RSS {:.1} MiB, agent RSS {:.1} MiB",
            rss_mib(bird)?,
            rss_mib(agent)?
        );
    }

    let ping = traffic::ContinuousPing::start(&from.netns, to.ip, Duration::from_millis(20))?;
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        let cidr = cidr.clone();
        std::thread::spawn(move || -> (u32, u32) {
            let (mut reads, mut missing) = (0, 0);
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(bird) = lock(&BIRD).as_ref()
                    && let Ok(routes) = bird.routes()
                {
                    reads += 1;
                    if !routes.contains_key(&cidr) {
                        missing += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (reads, missing)
        })
    };
    let started = std::time::Instant::now();
    let restarted = SUITE.restart_agent(c, "node-d");
    let converged = restarted.and_then(|()| {
        wait_for("node-d Established again", Duration::from_secs(30), || {
            bgp_converged(c, &ALL)
        })
    });
    let back = started.elapsed();
    // A few seconds more, with the new agent in charge.
    std::thread::sleep(Duration::from_secs(3));
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let report = ping.stop()?;
    let (reads, missing) = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    converged?;
    println!(
        "[measure] node-d agent restart (BIRD restarted with it, graceful restart): sessions back in {:.1}s; ping every 20 ms {} -> {}: {} sent, {} lost, longest gap {:?}; r1's table read {reads} times, node-d's subnet missing {missing} times",
        back.as_secs_f64(),
        from.name,
        to.name,
        report.transmitted,
        report.lost(),
        report.max_gap
    );
    ensure!(reads > 10, "r1's table was read only {reads} times");
    ensure!(
        missing == 0,
        "r1 lost node-d's subnet {missing} of {reads} times"
    );
    ensure!(report.lost() == 0, "{} pings lost", report.lost());
    Ok(())
}

/// The `bgp` network's pods, which the BGP tests after `bgp_up` share.
fn bgp_pods() -> Result<Vec<Pod>> {
    let pods = SUITE.pods();
    ensure!(
        pods.first().is_some_and(|p| p.name.starts_with("bgp")),
        "the BGP network is not up"
    );
    Ok(pods)
}

/// What `node`'s NodeSubnet of the `bgp` network says.
struct NodeReady {
    /// The NodeSubnet's name.
    name: String,
    /// Ready's status, reason and message.
    status: String,
    reason: String,
    message: String,
    /// `status.bgpSessions`.
    sessions: Value,
}

fn node_ready(c: &Cluster, node: &str) -> Result<NodeReady> {
    let subnet = deploy::node_subnets(c, "bgp")?
        .into_iter()
        .find(|s| s["spec"]["nodeName"] == node)
        .with_context(|| format!("{node} has no NodeSubnet"))?;
    let ready = subnet["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .context("no Ready yet")?;
    let text = |k: &str| ready[k].as_str().unwrap_or_default().to_owned();
    Ok(NodeReady {
        name: subnet["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        status: text("status"),
        reason: text("reason"),
        message: text("message"),
        sessions: subnet["status"]["bgpSessions"].clone(),
    })
}

impl std::fmt::Debug for NodeReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} Ready={} {}: {}; bgpSessions {}",
            self.name, self.status, self.reason, self.message, self.sessions
        )
    }
}

/// Waits up to `seconds` until `node`'s NodeSubnet reads as `check` wants.
fn wait_node(
    c: &Cluster,
    node: &str,
    what: &str,
    seconds: u64,
    check: impl Fn(&NodeReady) -> bool,
) -> Result<NodeReady> {
    wait_for(
        &format!("{node}: {what}"),
        Duration::from_secs(seconds),
        || {
            let ready = node_ready(c, node)?;
            ensure!(check(&ready), "{ready:?}");
            Ok(ready)
        },
    )
}

/// Whether `ready` is Ready with its session Established.
fn established(ready: &NodeReady) -> bool {
    ready.status == "True" && ready.sessions[0]["state"] == "Established"
}

/// Applies `network` (a PodNetwork).
fn apply(c: &Cluster, network: &Value) -> Result<()> {
    c.kubectl_stdin(&["apply", "-f", "-"], &network.to_string())
        .map(drop)
}

/// Has the running BIRD on r1 read `config`.
fn reconfigure_bird(config: &causeway_e2e::bird::Config) -> Result<()> {
    lock(&BIRD)
        .as_ref()
        .context("BIRD is not running")?
        .reconfigure(config)
}

/// `bird_config` with `change` made to the neighbour `node`.
fn bird_config_with(
    c: &Cluster,
    node: &str,
    change: impl FnOnce(&mut causeway_e2e::bird::Neighbour),
) -> Result<causeway_e2e::bird::Config> {
    let mut config = bird_config(c)?;
    let name = node.replace('-', "_");
    change(
        config
            .neighbours
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no neighbour {name}"))?,
    );
    Ok(config)
}

/// Back to the suite's network and router (BIRD with `bird_config`, when it runs), and BGP
/// converged on every node.
fn restore_bgp(c: &Cluster, what: &str) -> Result<()> {
    apply(c, &bgp_network())?;
    if lock(&BIRD).is_some() {
        reconfigure_bird(&bird_config(c)?)?;
    }
    wait_for(
        &format!("BGP converged {what}"),
        Duration::from_secs(45),
        || bgp_converged(c, &ALL),
    )
}

/// `bgp_network` with a TCP MD5 password from Secret `secret` on the rack-b peer (r1's lan-b
/// leg, node-d's router).
fn bgp_network_with_password(secret: &str) -> Value {
    let mut network = bgp_network();
    network["spec"]["routed"]["bgp"]["peers"][1]["password"] =
        serde_json::json!({"secretRef": {"name": secret}});
    network
}

/// Creates or replaces Secret `name` of the Causeway namespace with `password`.
fn put_password_secret(c: &Cluster, name: &str, password: &str) -> Result<()> {
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": deploy::NAMESPACE},
        "stringData": {"password": password},
    });
    c.kubectl_stdin(&["apply", "-f", "-"], &secret.to_string())
        .map(drop)
}

/// Deletes Secret `name` of the Causeway namespace, if it exists (best effort: clean-up).
fn delete_secret(c: &Cluster, name: &str) {
    let _ = c.kubectl(&[
        "-n",
        deploy::NAMESPACE,
        "delete",
        "secret",
        name,
        "--ignore-not-found",
    ]);
}

/// Issue #17: a TCP MD5 password read from a Secret, end to end with the agents' real
/// (node-bound) credentials. The rack-b peer asks for Secret `r1-bgp`: while it does not
/// exist, node-d says so (`BgpPeerMisconfigured`, naming the peer, the Secret and the
/// command); with a key r1 does not share, the session stays down with the hint; once r1
/// uses the same key, it is Established and pods cross r1 again. The other nodes' sessions
/// never notice.
fn bgp_password(c: &Cluster) -> Result<()> {
    let pods = bgp_pods()?;
    let ns = deploy::NAMESPACE;
    apply(c, &bgp_network_with_password("r1-bgp"))?;
    let result = (|| -> Result<()> {
        let ready = wait_node(c, "node-d", "reports the missing Secret", 30, |r| {
            r.reason == "BgpPeerMisconfigured"
        })?;
        for words in [
            "192.168.60.1 (AS 64500)",
            &format!("Secret {ns}/r1-bgp does not exist"),
            &format!("kubectl -n {ns} create secret generic r1-bgp --from-literal=password="),
        ] {
            ensure!(
                ready.message.contains(words),
                "{words:?} not in {:?}",
                ready.message
            );
        }
        println!("    missing Secret: {}", ready.message);
        // rack-a's sessions are untouched.
        for node in RACK_A {
            let ready = node_ready(c, node)?;
            ensure!(
                ready.sessions[0]["state"] == "Established",
                "{node}: {ready:?}"
            );
        }
        // A key r1 does not know: the session stays down, and says what to check.
        put_password_secret(c, "r1-bgp", "causeway-r1")?;
        let ready = wait_node(
            c,
            "node-d",
            "session down with the password hint",
            45,
            |r| r.reason == "BgpSessionsDown" && r.message.contains("same key"),
        )?;
        println!(
            "    a key r1 does not share: {}: {}",
            ready.reason, ready.message
        );
        // r1 asks node-d for the same key: Established, routes back, pods cross r1.
        reconfigure_bird(&bird_config_with(c, "node-d", |n| {
            n.password = Some("causeway-r1".into());
        })?)?;
        wait_node(
            c,
            "node-d",
            "Established with the password",
            45,
            established,
        )?;
        wait_for("routes installed", Duration::from_secs(15), || {
            bgp_routes_ok(c, &ALL)
        })?;
        matrix_with(c, &pods, &ALL)
    })();
    // Back to the suite's network and router, password-free.
    let restored = restore_bgp(c, "without the password");
    delete_secret(c, "r1-bgp");
    result.and(restored)
}

/// The node label that gives a node its own AS in `bgp_node_asn`
/// (`routed.bgp.nodeAsnLabel`).
const ASN_LABEL: &str = "causeway.dev/asn";

/// Issue #17: a per-node AS from a node label, over a real session. The network names
/// `nodeAsnLabel`; node-b is labelled AS 65010 and r1 expects that AS from it: its session is
/// Established, r1 holds node-b's subnet with AS path 65010 and every other node's with 64512,
/// and pods cross r1. Then the careless cases: a relabel to an AS r1 does not expect (the
/// node's BIRD restarts the session with the new AS, r1 refuses it: `Bad peer AS` in the
/// NodeSubnet), a value that is no AS number and a reserved one (the node names the label, the
/// value and the fix, and withdraws: r1 loses its subnet). The label removed, node-b is back
/// in AS 64512.
fn bgp_node_asn(c: &Cluster) -> Result<()> {
    const NODE: &str = "node-b";
    let pods = bgp_pods()?;
    let label = |value: Option<&str>| {
        let arg = value.map_or_else(|| format!("{ASN_LABEL}-"), |v| format!("{ASN_LABEL}={v}"));
        c.kubectl(&["label", "node", NODE, &arg, "--overwrite"])
            .map(drop)
    };
    let mut network = bgp_network();
    network["spec"]["routed"]["bgp"]["nodeAsnLabel"] = ASN_LABEL.into();
    apply(c, &network)?;
    let result = (|| -> Result<()> {
        let (cidr, _) = bgp_subnets(c)?
            .get(NODE)
            .cloned()
            .context("node-b has no NodeSubnet")?;
        // r1 expects AS 65010 from node-b, and node-b gets it.
        reconfigure_bird(&bird_config_with(c, NODE, |n| n.asn = 65010)?)?;
        label(Some("65010"))?;
        let started = std::time::Instant::now();
        established_in(c, NODE, "65010")?;
        println!(
            "[measure] node-b labelled AS 65010 (r1 expecting it) -> Established, r1's path 65010: {:.1}s",
            started.elapsed().as_secs_f64()
        );
        wait_for("routes installed", Duration::from_secs(15), || {
            bgp_routes_ok(c, &ALL)
        })?;
        matrix_with(c, &pods, &ALL)?;

        // Relabelled to an AS r1 does not expect: node-b's BIRD restarts the session with it
        // (`configure` restarts a protocol whose local AS changed), and r1 refuses it.
        label(Some("65020"))?;
        let ready = wait_node(c, NODE, "session refused with Bad peer AS", 30, |r| {
            r.reason == "BgpSessionsDown"
                && r.sessions[0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("peer sent NOTIFICATION: Bad peer AS"))
        })?;
        println!("    AS 65020, r1 expecting 65010: {}", ready.message);
        // The node's AS, which only its label shows, is in the advice.
        let this_node = format!(
            "check the router's BGP configuration for this node: address {}, AS 65020 (from node label {ASN_LABEL}).",
            node_address(c, NODE)?
        );
        ensure!(
            ready.message.ends_with(&this_node),
            "{:?} does not end with {this_node:?}",
            ready.message
        );
        let described = c.kubectl(&["describe", "nodesubnet", &ready.name])?;
        ensure!(
            described.contains("peer sent NOTIFICATION: Bad peer AS"),
            "kubectl describe nodesubnet {} does not show r1's NOTIFICATION:\n{described}",
            ready.name
        );

        // Not an AS number, then a reserved one: the node says which label, which value and
        // what to write, and withdraws from BGP.
        for (value, problem) in [
            (
                "abc",
                "is not an AS number: write it as one decimal number (asplain, e.g. 4200000001)",
            ),
            (
                "65535",
                "is reserved (RFC 7300): AS numbers 23456, 65535 and 4294967295 cannot be used",
            ),
        ] {
            label(Some(value))?;
            let want = format!(
                "node label {ASN_LABEL}=\"{value}\" (named by spec.routed.bgp.nodeAsnLabel) {problem}; use a private AS number from 64512-65534 or 4200000000-4294967294, or one assigned to you"
            );
            let ready = wait_node(c, NODE, &format!("reports AS label {value:?}"), 30, |r| {
                r.reason == "InvalidConfiguration" && r.message == want
            })?;
            println!(
                "    AS label {value:?}: {}: {}",
                ready.reason, ready.message
            );
        }
        wait_for(
            "r1 withdrew node-b's subnet",
            Duration::from_secs(15),
            || {
                let routes = lock(&BIRD).as_ref().context("BIRD")?.routes()?;
                ensure!(!routes.contains_key(&cidr), "r1 still has {cidr}");
                Ok(())
            },
        )?;
        let (_, reason, message) = wait_for(
            "the PodNetwork names node-b",
            Duration::from_secs(15),
            || {
                let (status, reason, message) = network_ready(c, "bgp")?;
                ensure!(
                    status == "False" && message.contains(NODE),
                    "Ready={status} {reason}: {message}"
                );
                Ok((status, reason, message))
            },
        )?;
        println!("    PodNetwork bgp: {reason}: {message}");

        // The label removed and r1 back to 64512: every path is 64512 again.
        reconfigure_bird(&bird_config(c)?)?;
        label(None)?;
        established_in(c, NODE, &NODE_ASN.to_string())
    })();
    let unlabelled = label(None);
    let restored = restore_bgp(c, "after the per-node AS");
    result.and(unlabelled).and(restored)
}

/// Waits until BGP has converged with `node` in AS `asn` (r1's path for its subnet) and every
/// other node in 64512.
fn established_in(c: &Cluster, node: &str, asn: &str) -> Result<()> {
    wait_for(
        &format!("{node} Established in AS {asn}"),
        Duration::from_secs(30),
        || {
            bgp_converged(c, &ALL)?;
            as_paths_are(c, node, asn)
        },
    )
}

/// r1 holds every node's subnet with AS path 64512, and `node`'s with `path`.
fn as_paths_are(c: &Cluster, node: &str, path: &str) -> Result<()> {
    let paths = lock(&BIRD).as_ref().context("BIRD")?.as_paths()?;
    for (n, (cidr, _)) in bgp_subnets(c)? {
        let want = if n == node {
            path.to_owned()
        } else {
            NODE_ASN.to_string()
        };
        ensure!(
            paths.get(&cidr) == Some(&want),
            "r1 has {cidr} ({n}) with AS path {:?}, expected {want}; {paths:?}",
            paths.get(&cidr)
        );
    }
    Ok(())
}

fn bgp_node_deleted(c: &Cluster) -> Result<()> {
    let gone = "node-d";
    let (cidr, _) = bgp_subnets(c)?
        .get(gone)
        .cloned()
        .context("node-d has no NodeSubnet")?;
    SUITE.detach_pods_on(c, gone)?;
    c.kubectl(&["delete", "node", gone, "--wait=true", "--timeout=30s"])?;
    wait_for(
        "node-d's subnet is withdrawn everywhere",
        Duration::from_secs(30),
        || {
            let bird = lock(&BIRD);
            let routes = bird.as_ref().context("BIRD")?.routes()?;
            ensure!(!routes.contains_key(&cidr), "BIRD still has {cidr}");
            for node in RACK_A {
                ensure!(
                    !our_routes(c, node)?.iter().any(|r| r.starts_with(&cidr)),
                    "{node} still routes {cidr}"
                );
            }
            ensure!(our_routes(c, gone)?.is_empty(), "node-d kept its routes");
            Ok(())
        },
    )?;
    matrix_with(c, &SUITE.pods(), &RACK_A)
}
