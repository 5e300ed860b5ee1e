//! OverlayGateway end to end (issue #7): how machines outside the cluster reach the pods of
//! the Overlay example network on the reference topology (node-a..c on lan-a, node-d behind
//! router r1, a non-node client on lan-a), with the operator and an agent per node as in the
//! overlay suite, on a cluster of its own.
//!
//! - RouteToNodes: the client pastes the rendered routes and reaches every pod through the
//!   selected nodes, under every reverse-path filtering setting.
//! - BridgeHosts: a VIP on node-b or node-c (one at a time, never both) through API server
//!   outages, partitions, agent deaths and cut links; return routes for a network only the
//!   bridge hosts reach; SNAT.
//! - ClientJoin: a client joins the overlay with `causeway-node-agent client`, and says why
//!   when it cannot.
//! - Problems a gateway reports with a reason and the fix.
//!
//! Tests run in the order listed; the bridge_* tests share one BridgeHosts gateway
//! (`bridge`, created by the first that needs it) until `bridge_failover` deletes it.

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use causeway_e2e::pods::Pod;
use causeway_e2e::suite::{
    self as suite, CLIENT_OVERLAY, NODES, OVERLAY_NETWORK as NETWORK, Suite, apply_gateway,
    gateway_json, join_clients, label, lock, our_routes, patch_network, pod_on, programmed,
    subnet_of, the_client, wait_gateway_ready,
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
        "gateways",
        presets::realistic,
        vec![
            testing::test(
                "route_to_nodes_a_client_reaches_every_pod_with_the_routes_as_rendered",
                route_to_nodes,
            ),
            testing::test(
                "bridge_hosts_a_client_reaches_every_pod_through_the_vip_and_back",
                bridge_hosts,
            ),
            testing::test(
                "bridge_hosts_keep_the_vip_on_the_holder_through_an_api_server_outage",
                bridge_outage,
            ),
            testing::test(
                "bridge_hosts_a_holder_cut_off_from_the_api_server_alone_keeps_the_vip_and_no_standby_takes_it",
                bridge_partition,
            ),
            testing::test(
                "bridge_hosts_fail_over_when_the_agent_dies_or_the_link_is_cut_never_doubling_the_vip",
                bridge_failover,
            ),
            testing::test(
                "bridge_hosts_a_node_that_cannot_be_programmed_never_holds_the_vip",
                bridge_unprogrammed,
            ),
            testing::test(
                "bridge_hosts_with_snat_pods_see_the_bridge_host_and_replies_need_no_route",
                bridge_snat,
            ),
            testing::test(
                "gateway_problems_are_reported_with_a_reason_and_the_fix",
                gateway_problems,
            ),
            testing::test(
                "client_join_a_client_joins_the_overlay_reaches_every_pod_and_leaves_no_trace",
                client_join,
            ),
            testing::test(
                "client_join_a_client_that_cannot_join_says_why_on_the_gateway",
                client_refused,
            ),
        ],
    )
}

fn route_to_nodes(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    for node in ["node-a", "node-b"] {
        label(c, node, "causeway.dev/gateway=true")?;
    }
    apply_gateway(
        c,
        "office",
        serde_json::json!({
            "network": NETWORK,
            "strategy": "RouteToNodes",
            "clientCidrs": ["192.168.50.0/24"],
            "routeToNodes": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}},
        }),
    )?;
    wait_gateway_ready(c, "office")?;
    let out = c.kubectl(&["get", "overlaygateway", "office", "-o", "json"])?;
    let status: Value = serde_json::from_str(&out)?;
    let routes: Vec<String> = status["status"]["clientRoutes"]
        .as_array()
        .context("no clientRoutes")?
        .iter()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    ensure!(
        routes.len() == 3 && routes[2].starts_with("ip route add 10.247.0.0/16 nexthop via"),
        "rendered routes: {routes:?}"
    );
    // Pasted on the client exactly as given.
    for line in &routes {
        let words: Vec<&str> = line.split_whitespace().collect();
        ensure!(words.first() == Some(&"ip"), "not an ip command: {line}");
        c.exec(&client.name, "ip", &words[1..])?;
    }
    let result = (|| -> Result<()> {
        // Client traffic for node-c's and node-d's pods enters at node-a or node-b and
        // reaches them through the tunnel with the client's source, whose route back is the
        // underlay: with strict reverse-path filtering on every node (the topology's
        // rp_filter=1), only the agent's loose setting on its VXLAN device lets it in.
        for node in NODES {
            let all = c.exec(node, "sysctl", &["-n", "net.ipv4.conf.all.rp_filter"])?;
            let vx = c.exec(node, "sysctl", &["-n", "net.ipv4.conf.cw-vx1.rp_filter"])?;
            ensure!(
                (all.trim(), vx.trim()) == ("1", "2"),
                "{node}: all.rp_filter={} cw-vx1.rp_filter={}",
                all.trim(),
                vx.trim()
            );
        }
        let pairs = client_pairs(&pods, &client_ns, client.address);
        let failures = traffic::ping_matrix(&pairs);
        ensure!(failures.is_empty(), "unreachable:\n{}", failures.join("\n"));
        let d = pod_on(&pods, "node-d")?;
        traffic::tcp_check(&d.netns, &client_ns, d.ip, 7501)?;
        // A client packet too large for the overlay gets "fragmentation needed" back from the
        // node (never a silent drop), and one that fits passes.
        expect_frag_needed(&client_ns, d.ip)?;
        // `kubectl causeway trace` from the client to node-d's pod: in at node-a or node-b
        // by the rendered /16 route, then their tunnel to node-d; 20 pings raise exactly
        // those tunnels' counters.
        let run = suite::kubectl_causeway(
            c,
            &["trace", &client.address.to_string(), &d.ip.to_string()],
        )?;
        println!("{}", run.stdout);
        run.expect_all(&[
            "route 10.247.0.0/16 via 192.168.50.11 or 192.168.50.12 (OverlayGateway office, RouteToNodes",
            "receives it for",
            "dev cw-vx1 onlink",
            "cw-vx1 decapsulates",
        ])?;
        let before = tunnel_counts(c, &["node-a", "node-b", "node-d"])?;
        let sent = traffic::ping(&client_ns, d.ip, 20)?;
        ensure!(sent.received == 20, "{sent:?}");
        let after = tunnel_counts(c, &["node-a", "node-b", "node-d"])?;
        let entered = (after[0].1 - before[0].1) + (after[1].1 - before[1].1);
        let arrived = after[2].0 - before[2].0;
        println!(
            "[measure] RouteToNodes, 20 pings: node-a + node-b cw-vx1 sent {entered}, node-d received {arrived}"
        );
        ensure!(
            entered >= 20 && arrived >= 20,
            "the path the trace names did not carry the pings: entry nodes sent {entered}, node-d received {arrived}"
        );
        // The other reverse-path settings users have: none (0, the kernel's default) and
        // loose (2) everywhere; the agent's device setting is the same under each.
        for setting in ["0", "2"] {
            for node in NODES {
                c.exec(
                    node,
                    "sysctl",
                    &["-qw", &format!("net.ipv4.conf.all.rp_filter={setting}")],
                )?;
            }
            let failures = traffic::ping_matrix(&pairs);
            ensure!(
                failures.is_empty(),
                "with all.rp_filter={setting}, unreachable:\n{}",
                failures.join("\n")
            );
        }
        Ok(())
    })();
    for node in NODES {
        let _ = c.exec(node, "sysctl", &["-qw", "net.ipv4.conf.all.rp_filter=1"]);
    }
    for line in &routes {
        if let Some(dst) = line.split_whitespace().nth(3) {
            let _ = c.exec(&client.name, "ip", &["route", "del", dst]);
        }
    }
    c.kubectl(&["delete", "overlaygateway", "office"])?;
    for node in ["node-a", "node-b"] {
        label(c, node, "causeway.dev/gateway-")?;
    }
    result
}

const VIP: &str = "192.168.50.250";
/// A client network only the bridge hosts reach (their "second leg"): the client holds
/// 192.168.77.100 and the bridge hosts route the range to it; every other node must send
/// replies through the active host.
const BEHIND: &str = "192.168.77.0/24";
const BEHIND_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);
const BRIDGES: [&str; 2] = ["node-b", "node-c"];

fn active_host(c: &Cluster) -> Result<Option<String>> {
    Ok(gateway_json(c, "bridge")?["status"]["activeHost"]
        .as_str()
        .map(str::to_string))
}

/// Nodes whose underlay holds the VIP now.
fn vip_holders(c: &Cluster) -> Result<Vec<String>> {
    vip_holders_of(c, VIP)
}

/// Nodes whose underlay holds `vip` now.
fn vip_holders_of(c: &Cluster, vip: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for node in NODES {
        let addrs = c.exec(node, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"])?;
        if addrs.contains(&format!("{vip}/32")) {
            out.push(node.to_string());
        }
    }
    Ok(out)
}

/// The MAC of `node`'s underlay link.
fn underlay_mac(c: &Cluster, node: &str) -> Result<String> {
    let out = c.exec(node, "cat", &["/sys/class/net/eth0/address"])?;
    Ok(out.trim().to_string())
}

/// Creates the BridgeHosts gateway on node-b and node-c, waits for Ready, and pastes the
/// rendered route on the client. Returns the client's name.
fn bridge_gateway(c: &Cluster) -> Result<String> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let client = c
        .topology
        .clients
        .first()
        .context("the topology has a client")?
        .name
        .clone();
    let mut done = lock(&DONE);
    if *done {
        return Ok(client);
    }
    c.exec(
        &client,
        "ip",
        &["addr", "add", &format!("{BEHIND_CLIENT}/32"), "dev", "eth0"],
    )?;
    let client_addr = c.topology.clients[0].address.to_string();
    for node in BRIDGES {
        c.exec(
            node,
            "ip",
            &["route", "add", BEHIND, "via", &client_addr, "dev", "eth0"],
        )?;
        label(c, node, "causeway.dev/bridge=true")?;
    }
    apply_gateway(
        c,
        "bridge",
        serde_json::json!({
            "network": NETWORK,
            "strategy": "BridgeHosts",
            "clientCidrs": ["192.168.50.0/24", BEHIND],
            "bridgeHosts": {
                "nodeSelector": {"matchLabels": {"causeway.dev/bridge": "true"}},
                "vip": VIP,
            },
        }),
    )?;
    wait_gateway_ready(c, "bridge")?;
    let status = gateway_json(c, "bridge")?;
    let routes: Vec<&str> = status["status"]["clientRoutes"]
        .as_array()
        .context("no clientRoutes")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        routes == [format!("ip route add 10.247.0.0/16 via {VIP}")],
        "rendered routes: {routes:?}"
    );
    let words: Vec<&str> = routes[0].split_whitespace().collect();
    c.exec(&client, "ip", &words[1..])?;
    *done = true;
    Ok(client)
}

fn bridge_hosts(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    let client_name = bridge_gateway(c)?;
    let client = c
        .topology
        .clients
        .iter()
        .find(|h| h.name == client_name)
        .context("client")?
        .clone();
    let client_ns = c.ns(&client.name);
    let active = active_host(c)?.context("Ready without activeHost")?;
    ensure!(BRIDGES.contains(&active.as_str()), "active host {active}");
    let holders = vip_holders(c)?;
    ensure!(
        holders == [active.clone()],
        "VIP held by {holders:?}, status says {active}"
    );
    // Nodes that do not reach the client network behind the bridge hosts route replies to
    // it through the active host's tunnel; the active host and the standby (which route it
    // themselves) do not. 192.168.50.0/24 is on-link for node-a..c; node-d reaches it by its
    // default route, and a route for it through the tunnel would capture node-d's own
    // tunnels to node-a..c: nobody gets one, and node-d and the gateway say why.
    check_returns(c, &active)?;
    let node_d = c.kubectl(&[
        "get",
        "nodesubnets",
        "-l",
        &format!("causeway.dev/network={NETWORK}"),
        "-o",
        "jsonpath={.items[?(@.spec.nodeName==\"node-d\")].status.conditions[?(@.type==\"Programmed\")].message}",
    ])?;
    ensure!(
        node_d.contains("route 192.168.50.0/24 via cw-vx1 skipped: it covers")
            && node_d.contains("node-a's address"),
        "node-d's Programmed message: {node_d}"
    );
    let ready = wait_reason(c, "bridge", "GatewayReady")?;
    ensure!(
        ready.contains("clientCidrs 192.168.50.0/24 holds node-a (192.168.50.11)"),
        "gateway Ready message: {ready}"
    );
    let mut pairs = client_pairs(&pods, &client_ns, client.address);
    for pod in &pods {
        pairs.push((
            pod.netns.clone(),
            BEHIND_CLIENT,
            format!("{}/{} -> client behind", pod.node, pod.name),
        ));
    }
    let failures = traffic::ping_matrix(&pairs);
    ensure!(failures.is_empty(), "unreachable:\n{}", failures.join("\n"));
    // `kubectl causeway trace` from the client to node-a's pod names the VIP and the active
    // host, then its tunnel to node-a; 20 pings go through exactly that tunnel.
    let target = pod_on(&pods, "node-a")?;
    let run = suite::kubectl_causeway(
        c,
        &["trace", &client.address.to_string(), &target.ip.to_string()],
    )?;
    println!("{}", run.stdout);
    run.expect_all(&[
        format!("route 10.247.0.0/16 via VIP {VIP} (OverlayGateway bridge, BridgeHosts)"),
        "dev cw-vx1 onlink".to_owned(),
    ])?;
    ensure!(
        run.stdout
            .lines()
            .any(|l| l.contains(&active) && l.contains(&format!("holds VIP {VIP}"))),
        "the trace does not name {active} holding the VIP:\n{}",
        run.stdout
    );
    let before = tunnel_counts(c, &[&active, "node-a"])?;
    let sent = traffic::ping(&client_ns, target.ip, 20)?;
    ensure!(sent.received == 20, "{sent:?}");
    let after = tunnel_counts(c, &[&active, "node-a"])?;
    let (sent_by_active, arrived) = (after[0].1 - before[0].1, after[1].0 - before[1].0);
    println!(
        "[measure] BridgeHosts, 20 pings: {active} cw-vx1 sent {sent_by_active}, node-a received {arrived}"
    );
    ensure!(
        sent_by_active >= 20 && arrived >= 20,
        "the path the trace names did not carry the pings"
    );
    for pod in &pods {
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &client_ns, "ping", "-n", "-c", "1", "-W", "2", "-I",
            ])
            .args([BEHIND_CLIENT.to_string(), pod.ip.to_string()])
            .output()?;
        ensure!(
            out.status.success(),
            "{BEHIND_CLIENT} -> {}/{} failed: {}",
            pod.node,
            pod.name,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    for node in ["node-a", "node-d"] {
        let p = pod_on(&pods, node)?;
        traffic::tcp_check(&p.netns, &client_ns, p.ip, 7502)?;
    }
    // The client's ARP entry for the VIP is the active host's MAC.
    let neigh = c.exec(&client.name, "ip", &["neigh", "show", VIP])?;
    let mac = underlay_mac(c, &active)?;
    ensure!(
        neigh.contains(&mac),
        "client's neighbour entry {neigh:?}, {active} is {mac}"
    );
    // Too large for the overlay: fragmentation needed, from the bridge host.
    let d = pod_on(&pods, "node-d")?;
    expect_frag_needed(&client_ns, d.ip)?;
    let out = c.kubectl(&["describe", "overlaygateway", "bridge"])?;
    ensure!(
        out.contains("Elected") && out.contains(&format!("holds VIP {VIP}")),
        "describe:\n{out}"
    );
    Ok(())
}

/// Return routes for [`BEHIND`] on every node but the bridge hosts, via `active`'s tunnel.
fn check_returns(c: &Cluster, active: &str) -> Result<()> {
    let gw = subnet_of(c, NETWORK, active)?
        .split('/')
        .next()
        .context("cidr")?
        .to_string();
    wait_for(
        "return routes via the active host",
        Duration::from_secs(10),
        || {
            for node in NODES {
                let routes = our_routes(c, node)?;
                let has = routes
                    .iter()
                    .any(|r| r.starts_with(&format!("{BEHIND} via {gw} dev cw-vx")));
                let want = !BRIDGES.contains(&node);
                ensure!(has == want, "{node} (active {active}): {routes:?}");
                ensure!(
                    !routes.iter().any(|r| r.starts_with("192.168.50.0/24")),
                    "{node}: {routes:?}"
                );
            }
            Ok(())
        },
    )
}

/// Polls which nodes hold the VIP until stopped; the samples where more than one did.
struct VipWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<VipSamples>,
}

/// What a [`VipWatch`] saw: samples taken, those with the VIP on two hosts, and how many found
/// it on none.
struct VipSamples {
    samples: usize,
    doubled: Vec<String>,
    vacant: usize,
}

impl VipWatch {
    fn start(c: &Cluster) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let namespaces: Vec<(String, String)> =
            BRIDGES.iter().map(|n| (n.to_string(), c.ns(n))).collect();
        let thread = std::thread::spawn(move || {
            let (mut samples, mut doubled, mut vacant) = (0, Vec::new(), 0);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let holders: Vec<&str> = namespaces
                    .iter()
                    .filter(|(_, ns)| {
                        std::process::Command::new("ip")
                            .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "eth0"])
                            .output()
                            .is_ok_and(|o| {
                                String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/32"))
                            })
                    })
                    .map(|(n, _)| n.as_str())
                    .collect();
                samples += 1;
                if holders.len() > 1 {
                    doubled.push(format!("sample {samples}: {holders:?}"));
                }
                if holders.is_empty() {
                    vacant += 1;
                }
            }
            VipSamples {
                samples,
                doubled,
                vacant,
            }
        });
        Self { stop, thread }
    }

    fn stop(self) -> VipSamples {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(VipSamples {
            samples: 0,
            doubled: vec!["watch thread panicked".into()],
            vacant: 0,
        })
    }
}

/// Distinct MACs answering ARP for the VIP from the client (`arping`, 3 probes).
fn vip_answerers(c: &Cluster, client: &str) -> Result<Vec<String>> {
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.ns(client),
            "arping",
            "-c",
            "3",
            "-w",
            "2",
            "-i",
            "eth0",
            VIP,
        ])
        .output()?;
    let mut macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_string))
        .collect();
    macs.sort();
    macs.dedup();
    Ok(macs)
}

/// The VIP sampled on both candidates, and a ping every 20 ms from the network behind the
/// bridge hosts to a pod on node-d (its replies need node-d's return route via the holder),
/// running for a second before the caller disturbs anything.
struct Watched {
    /// The active host when it started.
    holder: String,
    /// The pod pinged.
    pod: Ipv4Addr,
    watch: VipWatch,
    ping: ContinuousPing,
}

fn watch_and_ping(c: &Cluster, client: &str) -> Result<Watched> {
    let pods = SUITE.pods();
    let pod = pod_on(&pods, "node-d")?.ip;
    let holder = active_host(c)?.context("no active host")?;
    let watch = VipWatch::start(c);
    let ping = ContinuousPing::start_from(
        &c.ns(client),
        Some(BEHIND_CLIENT),
        pod,
        Duration::from_millis(20),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(Watched {
        holder,
        pod,
        watch,
        ping,
    })
}

/// One failover: `cause` breaks the active host while a client pings a pod on node-d (whose
/// replies take the return route) every 20 ms; returns the new active host.
fn failover(
    c: &Cluster,
    client: &str,
    what: &str,
    cause: impl FnOnce(&str) -> Result<()>,
) -> Result<String> {
    let Watched {
        holder: before,
        pod,
        watch,
        ping,
    } = watch_and_ping(c, client)?;
    cause(&before)?;
    let after = wait_for("a new active host", Duration::from_secs(20), || {
        let now = active_host(c)?;
        ensure!(now.as_deref().is_some_and(|n| n != before), "still {now:?}");
        Ok(now.unwrap_or_default())
    });
    std::thread::sleep(Duration::from_secs(2));
    let report = ping.stop()?;
    let VipSamples {
        samples, doubled, ..
    } = watch.stop();
    let after = after?;
    check_returns(c, &after)?;
    println!(
        "[measure] BridgeHosts failover ({what}): {before} -> {after}; ping every 20 ms client -> pod on node-d: {} sent, {} lost, longest gap {:?}; VIP holders sampled {samples} times, held twice {} times",
        report.transmitted,
        report.lost(),
        report.max_gap,
        doubled.len()
    );
    ensure!(
        doubled.is_empty(),
        "the VIP was on two hosts at once: {doubled:?}"
    );
    ensure!(samples > 20, "too few VIP samples ({samples})");
    ensure!(
        report.max_gap < Duration::from_secs(3),
        "traffic did not recover through the new host: {report:?}"
    );
    let tail = traffic::ping(&c.ns(client), pod, 3)?;
    ensure!(tail.received == 3, "after the failover: {tail:?}");
    ensure!(
        report.lost() < report.transmitted / 2,
        "most pings lost: {report:?}"
    );
    Ok(after)
}

/// Ends a disturbance when dropped.
trait Undo {}
impl<T> Undo for T {}

/// What the client behind the bridge hosts saw while `disturb` ran with the VIP held by the
/// active host: pings to a pod on node-d every 20 ms (the replies take node-d's return route
/// via the holder), the client's ARP entry for the VIP flushed every 2 s (as a longer outage
/// would age it out), and the VIP sampled on both candidates. Returns the holder before,
/// the holders seen while disturbed, the ping report and the samples.
fn through_disturbance(
    c: &Cluster,
    client: &str,
    disturb: impl FnOnce() -> Result<Box<dyn Undo>>,
) -> Result<(String, Vec<String>, traffic::LossReport, VipSamples)> {
    let Watched {
        holder,
        watch,
        ping,
        ..
    } = watch_and_ping(c, client)?;
    let guard = disturb();
    let during = guard.and_then(|_undo| {
        let mut holders = Vec::new();
        for _ in 0..4 {
            std::thread::sleep(Duration::from_secs(2));
            c.exec(client, "ip", &["neigh", "flush", "to", VIP, "dev", "eth0"])?;
            holders.extend(vip_holders(c)?);
        }
        Ok(holders)
        // `_undo` drops here: the disturbance ends.
    });
    std::thread::sleep(Duration::from_secs(3));
    let report = ping.stop()?;
    let samples = watch.stop();
    Ok((holder, during?, report, samples))
}

fn check_undisturbed(
    c: &Cluster,
    what: &str,
    (holder, during, report, seen): (String, Vec<String>, traffic::LossReport, VipSamples),
) -> Result<()> {
    println!(
        "[measure] BridgeHosts, {what} for 8 s: ping every 20 ms client -> pod on node-d: {} sent, {} lost, longest gap {:?}; VIP sampled {} times: on two hosts {}, on none {}",
        report.transmitted,
        report.lost(),
        report.max_gap,
        seen.samples,
        seen.doubled.len(),
        seen.vacant
    );
    ensure!(
        seen.doubled.is_empty(),
        "the VIP was on two hosts at once: {:?}",
        seen.doubled
    );
    ensure!(seen.samples > 20, "too few VIP samples ({})", seen.samples);
    ensure!(
        during.iter().all(|h| *h == holder) && during.len() == 4,
        "while {what}, the VIP was on {during:?} (holder {holder})"
    );
    ensure!(
        seen.vacant == 0,
        "while {what}, the VIP was on no host in {} of {} samples",
        seen.vacant,
        seen.samples
    );
    ensure!(
        report.transmitted > 300 && report.max_gap < Duration::from_secs(1) && report.lost() <= 3,
        "client traffic through the VIP suffered while {what}: {report:?}"
    );
    wait_for("the holder renews again", Duration::from_secs(10), || {
        let now = active_host(c)?;
        ensure!(
            now.as_deref() == Some(holder.as_str()),
            "active host {now:?}"
        );
        ensure!(
            vip_holders(c)? == [holder.clone()],
            "holders {:?}",
            vip_holders(c)?
        );
        Ok(())
    })
}

/// Issue #14, defect 5: with the API server frozen, nobody can renew or claim the election
/// Lease, so the holder keeps the VIP (it probes the segment and finds no other answer); the
/// client, re-resolving the VIP, still gets an answer.
fn bridge_outage(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let client = bridge_gateway(c)?;
    let failovers = gateway_json(c, "bridge")?["status"]["lastFailoverTime"].clone();
    let result = through_disturbance(c, &client, || Ok(Box::new(suite::freeze_apiserver(c)?)))?;
    check_undisturbed(c, "the API server was frozen", result)?;
    let after = gateway_json(c, "bridge")?["status"]["lastFailoverTime"].clone();
    ensure!(
        after == failovers,
        "a failover happened: {failovers} -> {after}"
    );
    Ok(())
}

/// Deletes the test's nftables table from a node's namespace when dropped.
struct DropTable {
    ns: String,
}

impl Drop for DropTable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "nft",
                "delete",
                "table",
                "ip",
                "e2e-cut-api",
            ])
            .status();
    }
}

/// Issue #14, defect 5, the asymmetric case: only the holder loses the API server (its
/// packets to it are dropped), the standby still reaches it and sees the renewals stop. The
/// holder keeps answering for the VIP, so the standby's probes find it and it does not take
/// over: the VIP is never on two hosts, and the clients lose nothing.
fn bridge_partition(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let client = bridge_gateway(c)?;
    let api = c.topology.control_plane.address.to_string();
    let result = through_disturbance(c, &client, || {
        let holder = active_host(c)?.context("no active host")?;
        let rules = format!(
            "table ip e2e-cut-api {{\n  chain out {{\n    type filter hook output priority 0;\n    ip daddr {api} tcp dport 6443 drop\n  }}\n}}\n"
        );
        let file = c.host_dir(&holder).join("e2e-cut-api.nft");
        std::fs::write(&file, rules)?;
        c.exec(&holder, "nft", &["-f", &file.to_string_lossy()])?;
        Ok(Box::new(DropTable { ns: c.ns(&holder) }))
    })?;
    check_undisturbed(c, "only the holder was cut off from the API server", result)
}

/// Issue #15: electors start only after a valid plan. node-c's underlay MTU drops below what
/// the network's `mtu` needs (MtuTooLarge: its plan fails); as the only candidate of a
/// BridgeHosts gateway it must not take the VIP, and once its plan is valid again it does.
fn bridge_unprogrammed(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node = "node-c";
    let vip = "192.168.50.251";
    patch_network(c, NETWORK, r#"{"spec":{"mtu":1450}}"#)?;
    c.exec(node, "ip", &["link", "set", "eth0", "mtu", "1400"])?;
    label(c, node, "causeway.dev/solo=true")?;
    let result = (|| -> Result<()> {
        wait_for(
            "node-c's plan fails",
            Duration::from_secs(RESYNC_SECONDS * 2 + 4),
            || {
                let (status, reason, message) = programmed(c, NETWORK, node)?;
                ensure!(
                    status == "False" && reason == "InvalidConfiguration",
                    "{status} {reason}: {message}"
                );
                Ok(())
            },
        )?;
        apply_gateway(
            c,
            "solo",
            serde_json::json!({
                "network": NETWORK,
                "strategy": "BridgeHosts",
                "clientCidrs": [BEHIND],
                "bridgeHosts": {
                    "nodeSelector": {"matchLabels": {"causeway.dev/solo": "true"}},
                    "vip": vip,
                },
            }),
        )?;
        // Several renewal periods and resyncs: nobody may take the VIP.
        for _ in 0..6 {
            std::thread::sleep(Duration::from_secs(1));
            let holders = vip_holders_of(c, vip)?;
            ensure!(
                holders.is_empty(),
                "the VIP is on {holders:?} although node-c cannot be programmed"
            );
        }
        let st = gateway_json(c, "solo")?;
        ensure!(
            st["status"]["activeHost"].is_null(),
            "activeHost {}",
            st["status"]["activeHost"]
        );
        let ready = st["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .cloned()
            .unwrap_or_default();
        ensure!(
            ready["reason"] == "NoEligibleHost"
                && ready["message"].as_str().is_some_and(
                    |m| m.contains("node-c (InvalidConfiguration) cannot be programmed")
                ),
            "the gateway's Ready: {ready}"
        );
        // Its plan valid again, node-c takes the VIP.
        c.exec(node, "ip", &["link", "set", "eth0", "mtu", "1500"])?;
        wait_for(
            "node-c holds the VIP once programmed",
            Duration::from_secs(RESYNC_SECONDS * 2 + 6),
            || {
                let holders = vip_holders_of(c, vip)?;
                ensure!(holders == [node], "holders {holders:?}");
                Ok(())
            },
        )?;
        Ok(())
    })();
    let _ = c.exec(node, "ip", &["link", "set", "eth0", "mtu", "1500"]);
    let _ = c.kubectl(&["delete", "overlaygateway", "solo", "--ignore-not-found"]);
    let _ = label(c, node, "causeway.dev/solo-");
    patch_network(c, NETWORK, r#"{"spec":{"mtu":null}}"#)?;
    result?;
    wait_for(
        "node-c programmed again",
        Duration::from_secs(RESYNC_SECONDS * 2 + 4),
        || {
            let (status, reason, message) = programmed(c, NETWORK, node)?;
            ensure!(status == "True", "{status} {reason}: {message}");
            Ok(())
        },
    )
}

fn bridge_failover(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let client = bridge_gateway(c)?;
    // 1. The active host's agent dies (SIGKILL): its VIP lapses in the kernel, and the
    //    standby takes over once it no longer answers.
    let first = failover(c, &client, "agent killed", |host| {
        c.kill(&SUITE.agent_of(host)?);
        Ok(())
    })?;
    let st = gateway_json(c, "bridge")?;
    ensure!(
        st["status"]["lastFailoverReason"] == "HostUnresponsive"
            && st["status"]["lastFailoverTime"].is_string(),
        "status after the kill: {}",
        st["status"]
    );
    let old = BRIDGES
        .iter()
        .find(|n| **n != first)
        .context("other")?
        .to_string();
    ensure!(
        vip_holders(c)? == [first.clone()],
        "holders {:?}",
        vip_holders(c)?
    );
    let macs = vip_answerers(c, &client)?;
    ensure!(
        macs.len() == 1 && macs[0] == underlay_mac(c, &first)?,
        "ARP answers for the VIP: {macs:?}"
    );
    SUITE.start_agent(c, &old)?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        active_host(c)?.as_deref() == Some(first.as_str()),
        "a restarted agent must not take the VIP back"
    );
    ensure!(
        vip_holders(c)? == [first.clone()],
        "holders {:?}",
        vip_holders(c)?
    );

    // 2. The active host's underlay link is cut at the switch.
    let second = failover(c, &client, "underlay link cut", |host| {
        c.set_underlay_link(host, false)
    });
    let restored = c.set_underlay_link(&first, true);
    let second = second?;
    restored?;
    ensure!(second == old, "the VIP went to {second}");
    // Back on the segment, the old host does not hold the VIP.
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        vip_holders(c)? == [second.clone()],
        "holders after the link came back {:?}",
        vip_holders(c)?
    );
    let macs = vip_answerers(c, &client)?;
    ensure!(
        macs.len() == 1 && macs[0] == underlay_mac(c, &second)?,
        "ARP answers for the VIP: {macs:?}"
    );
    let events = c.kubectl(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "reason=Failover",
        "-o",
        "jsonpath={.items[*].message}",
    ])?;
    ensure!(
        events.contains(&format!("moved from {first} to {second}")),
        "failover events: {events}"
    );

    // Deleting the gateway removes the VIP and the return routes.
    c.kubectl(&["delete", "overlaygateway", "bridge"])?;
    lease_gone(c, "causeway-gw-bridge")?;
    wait_for(
        "no VIP and no return route",
        Duration::from_secs(10),
        || {
            ensure!(
                vip_holders(c)?.is_empty(),
                "VIP still on {:?}",
                vip_holders(c)?
            );
            for node in NODES {
                let routes = our_routes(c, node)?;
                ensure!(
                    !routes.iter().any(|r| r.starts_with(BEHIND)),
                    "{node}: {routes:?}"
                );
            }
            Ok(())
        },
    )?;
    let _ = c.exec(&client, "ip", &["route", "del", "10.247.0.0/16"]);
    let _ = c.exec(
        &client,
        "ip",
        &["addr", "del", &format!("{BEHIND_CLIENT}/32"), "dev", "eth0"],
    );
    for node in BRIDGES {
        let _ = c.exec(node, "ip", &["route", "del", BEHIND]);
        label(c, node, "causeway.dev/bridge-")?;
    }
    Ok(())
}

/// A 1,500-byte DF ping from the client to `dst` gets "fragmentation needed" (MTU 1450) back,
/// and a 1,450-byte one passes.
fn expect_frag_needed(client_ns: &str, dst: Ipv4Addr) -> Result<()> {
    let big = std::process::Command::new("ip")
        .args([
            "netns", "exec", client_ns, "ping", "-n", "-M", "do", "-c", "2",
        ])
        .args(["-i", "0.2", "-W", "1", "-s", "1472", &dst.to_string()])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&big.stdout),
        String::from_utf8_lossy(&big.stderr)
    );
    ensure!(
        text.contains("mtu = 1450") || text.contains("mtu=1450"),
        "a 1500-byte DF packet from the client got no fragmentation-needed answer: {text}"
    );
    let fits = std::process::Command::new("ip")
        .args([
            "netns", "exec", client_ns, "ping", "-n", "-M", "do", "-c", "1",
        ])
        .args(["-W", "1", "-s", "1422", &dst.to_string()])
        .output()?;
    ensure!(
        fits.status.success(),
        "a 1450-byte DF packet did not pass: {}",
        String::from_utf8_lossy(&fits.stdout)
    );
    Ok(())
}

/// `nft list table ip causeway-gateway` on `node`, if the table exists.
fn snat_table(c: &Cluster, node: &str) -> Result<Option<String>> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &c.ns(node), "nft", "list", "table", "ip"])
        .arg("causeway-gateway")
        .output()?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn bridge_snat(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    for node in BRIDGES {
        label(c, node, "causeway.dev/bridge=true")?;
    }
    let vip = "192.168.50.251";
    apply_gateway(
        c,
        "bridge-snat",
        serde_json::json!({
            "network": NETWORK,
            "strategy": "BridgeHosts",
            "clientCidrs": ["192.168.50.0/24"],
            "snat": true,
            "bridgeHosts": {
                "nodeSelector": {"matchLabels": {"causeway.dev/bridge": "true"}},
                "vip": vip,
            },
        }),
    )?;
    wait_gateway_ready(c, "bridge-snat")?;
    let st = gateway_json(c, "bridge-snat")?;
    let active = st["status"]["activeHost"]
        .as_str()
        .context("activeHost")?
        .to_string();
    c.exec(
        &client.name,
        "ip",
        &["route", "add", "10.247.0.0/16", "via", vip],
    )?;
    let result = (|| -> Result<()> {
        // Every candidate carries the rule (a new holder forwards at once); no one else does.
        for node in NODES {
            let text = snat_table(c, node)?.unwrap_or_default();
            let has = text.contains("ip saddr @clients ip daddr 10.247.0.0/16 masquerade");
            ensure!(has == BRIDGES.contains(&node), "{node}: {text}");
        }
        let failures = traffic::ping_matrix(&client_pairs(&pods, &client_ns, client.address));
        ensure!(failures.is_empty(), "unreachable:\n{}", failures.join("\n"));
        // Pods see the bridge host's tunnel address, not the client's.
        let tunnel: Ipv4Addr = subnet_of(c, NETWORK, &active)?
            .split('/')
            .next()
            .context("cidr")?
            .parse()?;
        for node in ["node-a", "node-d"] {
            let p = pod_on(&pods, node)?;
            let seen = traffic::tcp_seen_source(&p.netns, &client_ns, p.ip, 7503)?;
            ensure!(
                seen == tunnel,
                "a pod on {node} saw {seen}, expected {active}'s {tunnel}"
            );
        }
        Ok(())
    })();
    let _ = c.exec(&client.name, "ip", &["route", "del", "10.247.0.0/16"]);
    c.kubectl(&["delete", "overlaygateway", "bridge-snat"])?;
    for node in BRIDGES {
        label(c, node, "causeway.dev/bridge-")?;
    }
    result?;
    wait_for(
        "no SNAT table and no VIP left",
        Duration::from_secs(10),
        || {
            for node in BRIDGES {
                ensure!(snat_table(c, node)?.is_none(), "{node} still has the table");
                let addrs = c.exec(node, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"])?;
                ensure!(!addrs.contains(vip), "{node} still holds {vip}");
            }
            Ok(())
        },
    )
}

/// Waits until the Lease `name` (owned by a deleted gateway) is garbage-collected.
fn lease_gone(c: &Cluster, name: &str) -> Result<()> {
    wait_for(
        &format!("Lease {name} deleted with its gateway"),
        Duration::from_secs(30),
        || {
            let out = c.kubectl(&[
                "get",
                "lease",
                "-n",
                deploy::NAMESPACE,
                name,
                "--ignore-not-found",
                "-o",
                "yaml",
            ])?;
            ensure!(out.trim().is_empty(), "still there:\n{out}");
            Ok(())
        },
    )
}

/// Waits until the gateway's Ready condition has `reason`; its message.
fn wait_reason(c: &Cluster, name: &str, reason: &str) -> Result<String> {
    c.kubectl(&[
        "wait",
        &format!("--for=jsonpath={{.status.conditions[?(@.type==\"Ready\")].reason}}={reason}"),
        "--timeout=20s",
        &format!("overlaygateway/{name}"),
    ])?;
    let st = gateway_json(c, name)?;
    Ok(st["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_string())
}

fn gateway_problems(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let client = the_client(c)?;
    let bridge = |vip: &str, selector: Value| {
        serde_json::json!({
            "network": NETWORK, "strategy": "BridgeHosts",
            "bridgeHosts": {"nodeSelector": selector, "vip": vip},
        })
    };
    let cases = [
        (
            "clash",
            bridge("192.168.50.11", serde_json::json!({})),
            "VipConflict",
            "VIP 192.168.50.11 is node node-a's address",
        ),
        (
            "nobody",
            bridge(
                "192.168.50.252",
                serde_json::json!({"matchLabels": {"no": "such"}}),
            ),
            "NoEligibleHost",
            "no node of the network matches spec.bridgeHosts.nodeSelector",
        ),
        (
            "overlap",
            serde_json::json!({"network": NETWORK, "strategy": "RouteToNodes", "clientCidrs": ["10.247.200.0/24"]}),
            "ClientCidrOverlapsPods",
            "overlaps the pod range 10.247.0.0/16",
        ),
    ];
    let mut result = Ok(());
    for (name, spec, reason, words) in &cases {
        apply_gateway(c, name, spec.clone())?;
        let outcome = wait_reason(c, name, reason).and_then(|m| {
            ensure!(m.contains(words), "{name}: {m}");
            Ok(())
        });
        c.kubectl(&["delete", "overlaygateway", name])?;
        result = result.and(outcome);
    }
    result?;

    // Something outside Causeway already answers for the VIP: no candidate takes it, the
    // gateway reports VipInUse with the MAC that answered, and the candidates' agents record
    // a VipConflict event.
    let taken = "192.168.50.253";
    c.exec(
        &client.name,
        "ip",
        &["addr", "add", &format!("{taken}/32"), "dev", "eth0"],
    )?;
    for node in BRIDGES {
        label(c, node, "causeway.dev/bridge=true")?;
    }
    apply_gateway(
        c,
        "squatted",
        bridge(
            taken,
            serde_json::json!({"matchLabels": {"causeway.dev/bridge": "true"}}),
        ),
    )?;
    let client_mac = c.exec(&client.name, "cat", &["/sys/class/net/eth0/address"])?;
    let outcome = (|| -> Result<()> {
        // First an election; once the candidates have waited out a holder's lease and
        // lifetime, the gateway says who squats the VIP (issue #16: VipInUse, with the MAC).
        let message = wait_reason(c, "squatted", "VipInUse")?;
        ensure!(
            message.contains(client_mac.trim())
                && message.contains("answered ARP for 192.168.50.253"),
            "{message}"
        );
        wait_for("a VipConflict event", Duration::from_secs(20), || {
            let events = c.kubectl(&[
                "get",
                "events",
                "-A",
                "--field-selector",
                "reason=VipConflict",
                "-o",
                "jsonpath={.items[*].message}",
            ])?;
            ensure!(events.contains(client_mac.trim()), "events: {events:?}");
            Ok(())
        })?;
        ensure!(
            vip_holders_of(c, taken)?.is_empty(),
            "a node took a VIP someone else answers for"
        );
        Ok(())
    })();
    c.kubectl(&["delete", "overlaygateway", "squatted"])?;
    let _ = c.exec(
        &client.name,
        "ip",
        &["addr", "del", &format!("{taken}/32"), "dev", "eth0"],
    );
    for node in BRIDGES {
        label(c, node, "causeway.dev/bridge-")?;
    }
    outcome
}

/// Whether `node` holds anything for a client at `overlay` with VTEP `mac`.
fn client_traces(c: &Cluster, node: &str, overlay: Ipv4Addr, mac: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for (what, args) in [
        ("route", vec!["route", "show", "proto", "249"]),
        ("neighbour", vec!["neigh", "show", "dev", "cw-vx1"]),
    ] {
        let out = c.exec(node, "ip", &args)?;
        found.extend(
            out.lines()
                .filter(|l| l.split_whitespace().next() == Some(&overlay.to_string()))
                .map(|l| format!("{what}: {l}")),
        );
    }
    let fdb = c.exec(node, "bridge", &["fdb", "show", "dev", "cw-vx1"])?;
    found.extend(
        fdb.lines()
            .filter(|l| l.starts_with(mac))
            .map(|l| format!("fdb: {l}")),
    );
    Ok(found)
}

/// (received, sent) packets of cw-vx1 on each host, in order.
fn tunnel_counts(c: &Cluster, hosts: &[&str]) -> Result<Vec<(u64, u64)>> {
    hosts
        .iter()
        .map(|host| traffic::link_packets(c, host, "cw-vx1"))
        .collect()
}

fn client_join(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    let client = the_client(c)?;
    let client_ns = c.ns(&client.name);
    let address = client.address.to_string();
    join_clients(c, &[("laptop", &address, CLIENT_OVERLAY)])?;
    let agent = SUITE.start_client(c, &client.name, "join", "laptop")?;
    let result = (|| -> Result<()> {
        wait_gateway_ready(c, "join")?;
        let st = gateway_json(c, "join")?;
        let entry = &st["status"]["clients"][0];
        let mac = c.exec(&client.name, "cat", &["/sys/class/net/cw-vx1/address"])?;
        let mac = mac.trim().to_string();
        ensure!(
            mac == causeway_crds::vtep::vtep_mac("client:laptop").to_string(),
            "the client's VTEP MAC {mac} is not the one derived from its name"
        );
        ensure!(
            entry["name"] == "laptop"
                && entry["joined"] == true
                && entry["vtepMac"] == mac.as_str(),
            "status.clients: {entry}, the client's VTEP is {mac}"
        );
        // Every node has exactly the three objects for it; the client has a tunnel per node.
        for node in NODES {
            let traces = client_traces(c, node, CLIENT_OVERLAY, &mac)?;
            ensure!(traces.len() == 3, "{node}: {traces:#?}");
        }
        let routes = c.exec(&client.name, "ip", &["route", "show", "proto", "249"])?;
        ensure!(
            routes.lines().count() == NODES.len(),
            "client routes:\n{routes}"
        );
        ensure!(
            c.exec(
                &client.name,
                "ip",
                &["-4", "-o", "addr", "show", "dev", "cw-vx1"]
            )?
            .contains(&format!("{CLIENT_OVERLAY}/32")),
            "the client's overlay address"
        );
        let failures = traffic::ping_matrix(&client_pairs(&pods, &client_ns, CLIENT_OVERLAY));
        ensure!(failures.is_empty(), "unreachable:\n{}", failures.join("\n"));
        // Both ways, the real addresses: no NAT between members of the overlay.
        let d = pod_on(&pods, "node-d")?;
        let seen = traffic::tcp_seen_source(&d.netns, &client_ns, d.ip, 7504)?;
        ensure!(seen == CLIENT_OVERLAY, "a pod saw the client as {seen}");
        let seen = traffic::tcp_seen_source(&client_ns, &d.netns, CLIENT_OVERLAY, 7505)?;
        ensure!(seen == d.ip, "the client saw the pod as {seen}");
        // Too large for the tunnel: the client's own stack says so (its device has the
        // overlay MTU), and what fits passes.
        expect_frag_needed(&client_ns, d.ip)?;
        // `kubectl causeway trace` from the client names its own tunnel straight to node-d;
        // 20 pings leave by the client's cw-vx1 and arrive on node-d's.
        let run = suite::kubectl_causeway(c, &["trace", &address, &d.ip.to_string()])?;
        println!("{}", run.stdout);
        run.expect_all(&[
            format!(
                "laptop (overlay address {CLIENT_OVERLAY}): its agent (causeway-node-agent client) routes"
            ),
            format!("VXLAN to {}", suite::node_address(c, "node-d")?),
        ])?;
        let before = tunnel_counts(c, &[&client.name, "node-d"])?;
        let sent = traffic::ping(&client_ns, d.ip, 20)?;
        ensure!(sent.received == 20, "{sent:?}");
        let after = tunnel_counts(c, &[&client.name, "node-d"])?;
        let (left, arrived) = (after[0].1 - before[0].1, after[1].0 - before[1].0);
        println!(
            "[measure] ClientJoin, 20 pings: client cw-vx1 sent {left}, node-d received {arrived}"
        );
        ensure!(
            left >= 20 && arrived >= 20,
            "the path the trace names did not carry the pings"
        );

        // A second client that never runs the agent: the gateway says who is missing.
        join_clients(
            c,
            &[
                ("laptop", &address, CLIENT_OVERLAY),
                ("ghost", "192.168.50.101", Ipv4Addr::new(10, 250, 0, 101)),
            ],
        )?;
        wait_for(
            "ClientsNotJoined naming ghost",
            Duration::from_secs(15),
            || {
                let st = gateway_json(c, "join")?;
                let ready = st["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .cloned()
                    .unwrap_or_default();
                ensure!(
                    ready["reason"] == "ClientsNotJoined"
                        && ready["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("ghost")),
                    "{ready}"
                );
                Ok(())
            },
        )?;

        // Removed from the gateway: no trace on any node, and the client cleans up.
        join_clients(
            c,
            &[("ghost", "192.168.50.101", Ipv4Addr::new(10, 250, 0, 101))],
        )?;
        wait_for("no trace of laptop", Duration::from_secs(15), || {
            for node in NODES {
                let traces = client_traces(c, node, CLIENT_OVERLAY, &mac)?;
                ensure!(traces.is_empty(), "{node}: {traces:#?}");
            }
            let links = c.exec(&client.name, "ip", &["-o", "link", "show"])?;
            ensure!(
                !links.contains("cw-vx1"),
                "the client kept its tunnel: {links}"
            );
            Ok(())
        })?;
        Ok(())
    })();
    c.stop(&agent);
    c.kubectl(&["delete", "overlaygateway", "join"])?;
    result?;
    lease_gone(c, "causeway-client-join.laptop")?;
    let ghost_mac = causeway_crds::vtep::vtep_mac("client:ghost").to_string();
    wait_for("no trace of ghost", Duration::from_secs(15), || {
        for node in NODES {
            let traces = client_traces(c, node, Ipv4Addr::new(10, 250, 0, 101), &ghost_mac)?;
            ensure!(traces.is_empty(), "{node}: {traces:#?}");
        }
        Ok(())
    })
}

/// Issue #14, defect 7: a client whose machine already routes a pod subnet elsewhere cannot
/// program its tunnel; it keeps heartbeating with the reason, and the gateway shows it
/// instead of telling the user to start a client that is already running.
fn client_refused(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let client = the_client(c)?;
    let address = client.address.to_string();
    let subnet = subnet_of(c, NETWORK, "node-d")?;
    c.exec(
        &client.name,
        "ip",
        &["route", "add", &subnet, "dev", "eth0", "proto", "static"],
    )?;
    join_clients(c, &[("laptop", &address, CLIENT_OVERLAY)])?;
    let agent = SUITE.start_client(c, &client.name, "join", "laptop")?;
    let result = (|| -> Result<()> {
        let message = wait_for(
            "the gateway says why laptop cannot join",
            Duration::from_secs(20),
            || {
                let st = gateway_json(c, "join")?;
                let ready = st["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .cloned()
                    .unwrap_or_default();
                let message = ready["message"].as_str().unwrap_or_default().to_string();
                ensure!(
                    ready["reason"] == "ClientsNotJoined"
                        && message.contains("laptop runs but cannot join")
                        && message.contains(&subnet),
                    "{ready}"
                );
                let entry = &st["status"]["clients"][0];
                ensure!(
                    entry["joined"] == false
                        && entry["message"]
                            .as_str()
                            .is_some_and(|m| m.starts_with("running but cannot join")),
                    "{entry}"
                );
                Ok(message)
            },
        )?;
        println!("[observe] the gateway's Ready message: {message}");
        // The route gone, the client joins by itself.
        c.exec(
            &client.name,
            "ip",
            &["route", "del", &subnet, "dev", "eth0", "proto", "static"],
        )?;
        wait_gateway_ready(c, "join")?;
        let entry = gateway_json(c, "join")?["status"]["clients"][0].clone();
        ensure!(
            entry["joined"] == true && entry["message"].as_str().unwrap_or_default().is_empty(),
            "{entry}"
        );
        Ok(())
    })();
    let _ = c.exec(
        &client.name,
        "ip",
        &["route", "del", &subnet, "dev", "eth0", "proto", "static"],
    );
    c.kubectl(&["delete", "overlaygateway", "join"])?;
    let cleaned = wait_for(
        "the client removed its tunnel",
        Duration::from_secs(15),
        || {
            let links = c.exec(&client.name, "ip", &["-o", "link", "show"])?;
            ensure!(!links.contains("cw-vx1"), "{links}");
            Ok(())
        },
    );
    c.stop(&agent);
    result?;
    cleaned?;
    lease_gone(c, "causeway-client-join.laptop")
}

/// Pings both ways between a client and every pod.
fn client_pairs(
    pods: &[Pod],
    client_ns: &str,
    client: Ipv4Addr,
) -> Vec<(String, Ipv4Addr, String)> {
    let mut pairs = Vec::new();
    for pod in pods {
        pairs.push((
            client_ns.to_string(),
            pod.ip,
            format!("client -> {}/{}", pod.node, pod.name),
        ));
        pairs.push((
            pod.netns.clone(),
            client,
            format!("{}/{} -> client", pod.node, pod.name),
        ));
    }
    pairs
}
