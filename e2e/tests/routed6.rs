//! Dual-stack Routed mode with BGP end to end (issue #18) on the dual-stack reference
//! topology: node-a..c on lan-a (192.168.50.0/24 + fd00:50::/64, zone rack-a), node-d on
//! lan-b (192.168.60.0/24 + fd00:60::/64, zone rack-b) behind router r1, which forwards both
//! families. BIRD 2 on r1 is the routers' BGP speaker (AS 64500; nodes AS 64512): one session
//! per node, on the node's IPv4 address, carrying IPv4 and IPv6 unicast (an `ipv6` channel
//! beside the `ipv4` one). The operator and an agent per node run with the chart's RBAC; pods
//! are attached with the CNI config the agents wrote; every check is real traffic, BIRD's own
//! table or the kernel's. The first test brings the network up and checks both families end
//! to end; the second restarts node-d's agent under an IPv6 ping; the third moves every
//! session to IPv6 (the network's peers become r1's IPv6 addresses, r1 peers with the nodes'
//! IPv6 addresses) and checks both families again, so it runs last.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use causeway_e2e::bird::{self, Bird};
use causeway_e2e::pods::{self, Pod};
use causeway_e2e::suite::{Suite, lock, programmed, without_nhid};
use causeway_e2e::topology::{Topology, presets};
use causeway_e2e::traffic::{self, wait_for};
use causeway_e2e::{Cluster, deploy, testing};
use serde_json::Value;

const ALL: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];
const NETWORK: &str = "routed6";
const ROUTER_ASN: u32 = 64500;
const NODE_ASN: u32 = 64512;
/// r1's IPv6 address on lan-b: node-d's next hop to rack-a's subnets.
const R1_LAN_B6: &str = "fd00:60::1";
/// r1's IPv4 address on lan-b: node-d's next hop to rack-a's IPv4 subnets.
const R1_LAN_B: &str = "192.168.60.1";
/// r1's IPv6 address on lan-a: rack-a's peer in the third test.
const R1_LAN_A6: &str = "fd00:50::1";
/// The third test's BFD on every session (interval in ms, multiplier), and the TCP MD5 key of
/// node-d's session, from Secret `R1_SECRET`.
const BFD: (u32, u8) = (100, 3);
const R1_KEY: &str = "v6-s3cret key";
const R1_SECRET: &str = "r1-bgp6";

/// Agents on every node, resyncing every 3 s, heartbeat Lease 4 s.
static SUITE: Suite = Suite::new(&ALL, 3, 4);
static BIRD: Mutex<Option<Bird>> = Mutex::new(None);

fn main() -> ExitCode {
    testing::run_suite(
        "routed6",
        topology,
        vec![
            testing::test(
                "bgp_dual_stack_one_session_per_node_carries_both_families_and_pods_cross_the_router_over_ipv6",
                dual_stack_bgp,
            ),
            testing::test(
                "bgp_dual_stack_an_agent_restart_keeps_the_ipv6_routes_on_both_sides_and_loses_no_ipv6_ping",
                agent_restart,
            ),
            testing::test(
                "bgp_sessions_to_ipv6_peer_addresses_carry_both_families_and_pods_cross_the_router",
                ipv6_peers,
            ),
        ],
    )
}

/// The dual-stack two-segment topology with zone labels: rack-a is lan-a, rack-b is lan-b.
fn topology() -> Topology {
    presets::racks(presets::two_segments_dual_stack())
}

/// r1: one session per node on the node's IPv4 address, with an IPv6 channel too.
fn router_config(c: &Cluster) -> Result<bird::Config> {
    let mut config =
        bird::Config::for_nodes(c, &ALL, ROUTER_ASN, [192, 168, 50, 1].into(), NODE_ASN)?;
    for n in &mut config.neighbours {
        n.ipv6_channel = true;
    }
    Ok(config)
}

/// The dual-stack Routed network: every node; rack-a peers with r1's lan-a leg, rack-b with
/// its lan-b leg (IPv4 addresses, as the API has them).
fn network() -> Value {
    let mut pn = bird::bgp_network(
        NETWORK,
        "10.246.0.0/16",
        NODE_ASN,
        &[
            bird::zone_peer("192.168.50.1", ROUTER_ASN, "rack-a"),
            bird::zone_peer("192.168.60.1", ROUTER_ASN, "rack-b"),
        ],
    );
    pn["spec"]["secondaryCidr"] = "fd00:10:246::/56".into();
    pn["spec"]["secondaryNodeSubnetPrefixLength"] = 64.into();
    pn
}

/// node → (IPv6 subnet, IPv6 node address) of the network, every node having both.
fn subnets6(c: &Cluster) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for s in deploy::node_subnets(c, NETWORK)? {
        let field = |f: &str| s["spec"][f].as_str().map(str::to_owned);
        let node = field("nodeName").context("nodeName")?;
        let (Some(cidr), Some(address)) = (field("secondaryCidr"), field("secondaryNodeAddress"))
        else {
            anyhow::bail!("{node} lacks an IPv6 subnet or address: {}", s["spec"]);
        };
        out.push((node, cidr, address));
    }
    ensure!(out.len() == ALL.len(), "NodeSubnets: {out:?}");
    Ok(out)
}

fn dual_stack_bgp(c: &Cluster) -> Result<()> {
    SUITE.control_plane(c)?;
    {
        let mut bird = lock(&BIRD);
        if bird.is_none() {
            *bird = Some(Bird::start(c, "r1", &router_config(c)?)?);
        }
    }
    let pods = SUITE
        .bring_up(c, &network().to_string(), NETWORK, &ALL, "ds")
        .with_context(|| {
            let status = c
                .kubectl(&["get", "podnetwork", NETWORK, "-o", "jsonpath={.status}"])
                .unwrap_or_default();
            let subnets: Vec<String> = deploy::node_subnets(c, NETWORK)
                .unwrap_or_default()
                .iter()
                .map(|s| format!("{}: {}", s["spec"], s["status"]))
                .collect();
            format!("network status {status}; NodeSubnets {subnets:#?}")
        })?;
    let guard = lock(&BIRD);
    let bird = guard.as_ref().context("BIRD is not running")?;

    // IPv4 as in the routed suite: sessions Established on both ends, r1 holds every node's
    // subnet via the node, the NodeSubnets' bgpSessions count one route sent each.
    wait_for("BGP converged (IPv4)", Duration::from_secs(30), || {
        bird.expect_converged(c, NETWORK, &ALL)
    })?;
    // Each session's status counts both families: the node's own subnet sent, the others'
    // held, per family.
    wait_for(
        "IPv6 counts in bgpSessions",
        Duration::from_secs(15),
        || {
            for s in deploy::node_subnets(c, NETWORK)? {
                let session = &s["status"]["bgpSessions"][0];
                ensure!(
                    session["ipv6RoutesAdvertised"] == 1
                        && session["ipv6RoutesReceived"].as_i64() >= Some(1),
                    "{}: bgpSessions {}",
                    s["spec"]["nodeName"],
                    s["status"]["bgpSessions"]
                );
            }
            Ok(())
        },
    )?;
    let sessions = bird.birdc(&["show", "protocols", "all", "node_a"])?;
    ensure!(
        sessions.matches("AF announced: ipv4 ipv6").count() == 2,
        "r1 and node-a both announce IPv4 and IPv6 unicast on one session:\n{sessions}"
    );

    // IPv6: r1 holds every node's IPv6 subnet via the node's IPv6 address (its
    // secondaryNodeAddress), in BIRD's table and in its kernel.
    let subnets = subnets6(c)?;
    wait_for(
        "r1 learns every IPv6 subnet",
        Duration::from_secs(20),
        || {
            let routes = bird.routes()?;
            for (node, cidr, address) in &subnets {
                ensure!(
                    routes.get(cidr) == Some(address),
                    "{node}: r1 has {cidr} via {:?}, expected via {address}; table {routes:?}",
                    routes.get(cidr)
                );
                let kernel = c.exec("r1", "ip", &["-6", "route", "show", cidr])?;
                ensure!(
                    kernel.contains(&format!("via {address}")),
                    "r1's kernel: {kernel:?}"
                );
            }
            Ok(())
        },
    )?;

    // node-d learned rack-a's IPv6 subnets from r1, with r1's lan-b address as next hop, and
    // installed them as its own routes; every node holds a route to every other node's.
    wait_for(
        "the nodes install the learned IPv6 routes",
        Duration::from_secs(15),
        || {
            for node in ALL {
                let ours = c.exec(node, "ip", &["-6", "route", "show", "proto", "249"])?;
                for (peer, cidr, _) in subnets.iter().filter(|(n, _, _)| n != node) {
                    let line = ours
                        .lines()
                        .find(|l| l.starts_with(&format!("{cidr} via ")));
                    ensure!(
                        line.is_some(),
                        "{node} has no route to {peer}'s {cidr}: {ours}"
                    );
                    if node == "node-d" {
                        ensure!(
                            line.is_some_and(|l| l.contains(&format!("via {R1_LAN_B6} dev eth0"))),
                            "node-d reaches {peer}'s {cidr} through r1: {ours}"
                        );
                    }
                }
            }
            Ok(())
        },
    )?;
    drop(guard);
    // Nothing is named unreachable: BGP carries node-d's subnets of both families to rack-a,
    // and rack-a's to node-d.
    for node in ALL {
        let (status, reason, message) = programmed(c, NETWORK, node)?;
        ensure!(
            status == "True" && !message.contains("unreachable") && !message.contains("skipped"),
            "{node}: Programmed {status} {reason}: {message}"
        );
    }

    // Traffic: node-d's pod and node-a's pod over IPv6 across r1, both ways, and every other
    // pair of pods on different nodes; IPv4 alongside.
    let v6: Vec<std::net::Ipv6Addr> = pods
        .iter()
        .map(|p| pods::first_ipv6(&p.result))
        .collect::<Result<_>>()?;
    let pod = |node: &str| -> Result<(usize, &Pod)> {
        pods.iter()
            .enumerate()
            .find(|(_, p)| p.node == node)
            .with_context(|| format!("no pod on {node}"))
    };
    let ((d, pod_d), (a, pod_a)) = (pod("node-d")?, pod("node-a")?);
    for (from, to, dst) in [(pod_d, pod_a, v6[a]), (pod_a, pod_d, v6[d])] {
        // A pod's IPv6 address answers once its duplicate address detection is done.
        wait_for("IPv6 ping across r1", Duration::from_secs(10), || {
            traffic::expect_ping6(&from.netns, dst)
        })
        .with_context(|| {
            let show = |host: &str| {
                c.exec(host, "ip", &["-6", "route"])
                    .unwrap_or_else(|e| e.to_string())
            };
            format!(
                "{} -> {} ({dst}); {}: {}; {}: {}; r1: {}",
                from.netns,
                to.netns,
                from.node,
                show(&from.node),
                to.node,
                show(&to.node),
                show("r1")
            )
        })?;
    }
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod_d.netns,
            "ping",
            "-6",
            "-n",
            "-c",
            "1",
            "-W",
            "2",
        ])
        .arg(v6[a].to_string())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("ttl=61"),
        "three hops (node-d, r1, node-a), hop limit 61: {text}"
    );
    for (i, from) in pods.iter().enumerate() {
        for (j, to) in pods.iter().enumerate() {
            if from.node == to.node || i == j {
                continue;
            }
            wait_for("IPv6 ping", Duration::from_secs(10), || {
                traffic::expect_ping6(&from.netns, v6[j])
            })
            .with_context(|| format!("{} -> {} ({})", from.netns, to.netns, v6[j]))?;
            traffic::expect_ping(&from.netns, to.ip)
                .with_context(|| format!("{} -> {} ({})", from.netns, to.netns, to.ip))?;
        }
    }
    Ok(())
}

/// node-d's agent (and its BIRD) restarts under a ping every 20 ms over IPv6 from a pod on
/// node-a to a pod on node-d: r1 keeps node-d's IPv6 subnet (graceful restart), node-d's
/// kernel keeps its learned IPv6 route to node-a's subnet (the new agent carries it until
/// BGP is back), and no ping is lost.
fn agent_restart(c: &Cluster) -> Result<()> {
    let pods = SUITE.pods();
    ensure!(
        pods.first().is_some_and(|p| p.name.starts_with("ds")),
        "the dual-stack network is not up (the first test brings it up)"
    );
    let on = |node: &str| {
        pods.iter()
            .find(|p| p.node == node)
            .with_context(|| format!("no pod on {node}"))
    };
    let (from, to) = (on("node-a")?, on("node-d")?);
    let dst = pods::first_ipv6(&to.result)?;
    let subnets = subnets6(c)?;
    let cidr = |node: &str| {
        subnets
            .iter()
            .find(|(n, _, _)| n == node)
            .map(|(_, cidr, _)| cidr.clone())
            .with_context(|| format!("{node} has no IPv6 subnet"))
    };
    let (cidr_a, cidr_d) = (cidr("node-a")?, cidr("node-d")?);
    let node_d = c.ns("node-d");

    let ping = traffic::ContinuousPing::start6(&from.netns, dst, Duration::from_millis(20))?;
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || -> (u32, u32, u32) {
            let (mut reads, mut r1_missing, mut d_missing) = (0, 0, 0);
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(bird) = lock(&BIRD).as_ref()
                    && let Ok(routes) = bird.routes()
                {
                    reads += 1;
                    if !routes.contains_key(&cidr_d) {
                        r1_missing += 1;
                    }
                    let kernel = std::process::Command::new("ip")
                        .args([
                            "-n", &node_d, "-6", "route", "show", &cidr_a, "proto", "249",
                        ])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    if !kernel.contains(&format!("via {R1_LAN_B6}")) {
                        d_missing += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (reads, r1_missing, d_missing)
        })
    };
    let started = std::time::Instant::now();
    let converged = SUITE.restart_agent(c, "node-d").and_then(|()| {
        wait_for("node-d Established again", Duration::from_secs(30), || {
            lock(&BIRD)
                .as_ref()
                .context("BIRD is not running")?
                .expect_converged(c, NETWORK, &ALL)
        })
    });
    let back = started.elapsed();
    // A few seconds more, with the new agent in charge.
    std::thread::sleep(Duration::from_secs(3));
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let report = ping.stop()?;
    let (reads, r1_missing, d_missing) = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))?;
    converged?;
    println!(
        "[measure] node-d agent restart, dual-stack: sessions back in {:.1}s; IPv6 ping every 20 ms {} -> {}: {} sent, {} lost, longest gap {:?}; read {reads} times: r1 lacked node-d's IPv6 subnet {r1_missing} times, node-d lacked its route to node-a's {d_missing} times",
        back.as_secs_f64(),
        from.name,
        to.name,
        report.transmitted,
        report.lost(),
        report.max_gap
    );
    ensure!(reads > 10, "read only {reads} times");
    ensure!(
        r1_missing == 0 && d_missing == 0,
        "r1 lacked node-d's IPv6 subnet {r1_missing} times, node-d its IPv6 route {d_missing} times, of {reads}"
    );
    ensure!(report.lost() == 0, "{} IPv6 pings lost", report.lost());
    Ok(())
}

/// r1 for the third test: one session per node on the node's IPv6 address
/// (`secondaryNodeAddress`), with an IPv4 channel too, BFD on each, and node-d's with a TCP
/// MD5 password.
fn router_config6(c: &Cluster) -> Result<bird::Config> {
    let mut config =
        bird::Config::for_nodes_ipv6(c, &ALL, ROUTER_ASN, [192, 168, 50, 1].into(), NODE_ASN)?;
    for n in &mut config.neighbours {
        n.ipv4_channel = true;
        if n.name == "node_d" {
            n.password = Some(R1_KEY.to_owned());
        }
    }
    config.bfd = Some(BFD);
    Ok(config)
}

/// The network with r1's IPv6 addresses as the peers: rack-a peers with r1's lan-a leg
/// (fd00:50::1), rack-b with its lan-b leg (fd00:60::1, with the password from Secret
/// `R1_SECRET`); BFD on both.
fn network6() -> Value {
    let mut pn = network();
    let bfd = serde_json::json!({"minIntervalMilliseconds": BFD.0, "multiplier": BFD.1});
    let mut peers = [
        bird::zone_peer(R1_LAN_A6, ROUTER_ASN, "rack-a"),
        bird::zone_peer(R1_LAN_B6, ROUTER_ASN, "rack-b"),
    ];
    for peer in &mut peers {
        peer["bfd"] = bfd.clone();
    }
    peers[1]["password"] = serde_json::json!({"secretRef": {"name": R1_SECRET}});
    pn["spec"]["routed"]["bgp"]["peers"] = serde_json::json!(peers);
    pn
}

/// The session block `protocol bgp <name> { ... }` of `node`'s rendered bird.conf.
fn node_session(c: &Cluster, node: &str, name: &str) -> Result<String> {
    let path = c.host_dir(node).join("bird").join("bird.conf");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let start = text
        .find(&format!("protocol bgp {name} {{"))
        .with_context(|| format!("{node}'s bird.conf has no session {name}:\n{text}"))?;
    let end = text[start..]
        .find("\n}\n")
        .map_or(text.len(), |i| start + i + 3);
    Ok(text[start..end].to_owned())
}

/// The network's peers become r1's IPv6 addresses and r1 peers with the nodes' IPv6
/// addresses: each node's one session runs over IPv6 from its `secondaryNodeAddress` and
/// carries IPv4 and IPv6 unicast. r1 holds every node's IPv4 subnet via the node's IPv4
/// address and its IPv6 subnet via its IPv6 address; node-d routes rack-a's subnets of both
/// families via r1's lan-b addresses; the NodeSubnets show the IPv6 peer addresses with both
/// families' counts; pods on node-a and node-d ping each other over IPv4 and IPv6 across r1.
fn ipv6_peers(c: &Cluster) -> Result<()> {
    let pods = SUITE.pods();
    ensure!(
        pods.first().is_some_and(|p| p.name.starts_with("ds")),
        "the dual-stack network is not up (the first test brings it up)"
    );
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": R1_SECRET, "namespace": deploy::NAMESPACE},
        "stringData": {"password": R1_KEY},
    });
    c.kubectl_stdin(&["apply", "-f", "-"], &secret.to_string())?;
    let guard = lock(&BIRD);
    let bird = guard.as_ref().context("BIRD is not running")?;
    bird.reconfigure(&router_config6(c)?)?;
    c.kubectl_stdin(&["apply", "-f", "-"], &network6().to_string())?;
    let started = std::time::Instant::now();
    let peer_of = |node: &str| {
        if node == "node-d" {
            R1_LAN_B6
        } else {
            R1_LAN_A6
        }
    };
    // Established on both ends, r1 holds each node's IPv4 subnet via its IPv4 address, and
    // each NodeSubnet shows its one session, to r1's IPv6 address, with both families' counts.
    wait_for("BGP converged over IPv6", Duration::from_secs(40), || {
        bird.expect_converged(c, NETWORK, &ALL)?;
        for s in deploy::node_subnets(c, NETWORK)? {
            let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
            let sessions = &s["status"]["bgpSessions"];
            let session = &sessions[0];
            ensure!(
                sessions.as_array().map(Vec::len) == Some(1)
                    && session["peerAddress"] == peer_of(node)
                    && session["ipv6RoutesAdvertised"] == 1
                    && session["ipv6RoutesReceived"].as_i64() >= Some(1)
                    && session["routesReceived"].as_i64() >= Some(1),
                "{node}: bgpSessions {sessions}"
            );
        }
        Ok(())
    })?;
    println!(
        "[measure] sessions moved to IPv6 peer addresses: every session Established over IPv6 with both families' routes {:.1}s after the PodNetwork changed",
        started.elapsed().as_secs_f64()
    );
    // BFD runs over IPv6 on every session (r1 sees each node's IPv6 address Up), and node-d's
    // session, Established, carries the MD5 key from the Secret.
    wait_for("BFD Up over IPv6", Duration::from_secs(15), || {
        let bfd = bird.birdc(&["show", "bfd", "sessions"])?;
        for (node, _, address) in subnets6(c)? {
            ensure!(
                bfd.lines()
                    .any(|l| l.starts_with(&format!("{address} ")) && l.contains(" Up ")),
                "r1 has no BFD session Up with {node} ({address}):\n{bfd}"
            );
        }
        Ok(())
    })?;
    let session_d = node_session(c, "node-d", "peer_fd00_60__1")?;
    println!("[evidence] node-d's bird.conf session with r1:\n{session_d}");
    for line in [
        "  local fd00:60::11 as 64512;\n",
        "  neighbor fd00:60::1 port 179 as 64500;\n",
        &format!("  password \"{R1_KEY}\";\n"),
        "  bfd { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; };\n",
        " bgp_next_hop = 192.168.60.11; accept; };",
    ] {
        ensure!(session_d.contains(line), "{line:?} not in:\n{session_d}");
    }
    println!(
        "[evidence] r1's session with node-d:\n{}",
        bird.birdc(&["show", "protocols", "all", "node_d"])?
    );
    for node in ALL {
        let name = node.replace('-', "_");
        let shown = bird.birdc(&["show", "protocols", "all", &name])?;
        let address = subnets6(c)?
            .into_iter()
            .find(|(n, _, _)| n == node)
            .map(|(_, _, address)| address)
            .context("no IPv6 node address")?;
        ensure!(
            shown.contains(&format!("Neighbor address: {address}"))
                && shown.matches("AF announced: ipv4 ipv6").count() == 2,
            "r1's session with {node} runs over IPv6 ({address}) and both ends announce IPv4 and IPv6 unicast:\n{shown}"
        );
    }

    // r1 holds every node's IPv6 subnet via its IPv6 address, in BIRD's table and kernel
    // (the IPv4 ones via the IPv4 addresses: checked by expect_converged).
    let subnets = subnets6(c)?;
    wait_for(
        "r1 holds every IPv6 subnet",
        Duration::from_secs(20),
        || {
            let routes = bird.routes()?;
            for (node, cidr, address) in &subnets {
                ensure!(
                    routes.get(cidr) == Some(address),
                    "{node}: r1 has {cidr} via {:?}, expected via {address}",
                    routes.get(cidr)
                );
                let kernel = c.exec("r1", "ip", &["-6", "route", "show", cidr])?;
                ensure!(kernel.contains(&format!("via {address}")), "r1: {kernel:?}");
            }
            Ok(())
        },
    )?;
    drop(guard);

    // node-d installed rack-a's subnets of both families via r1's lan-b addresses, learned
    // over its IPv6 session.
    let v4: Vec<(String, String)> = deploy::node_subnets(c, NETWORK)?
        .iter()
        .map(|s| {
            (
                s["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                s["spec"]["cidr"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    wait_for(
        "node-d routes rack-a through r1, both families",
        Duration::from_secs(15),
        || {
            let ours4 = c.exec("node-d", "ip", &["route", "show", "proto", "249"])?;
            let ours6 = c.exec("node-d", "ip", &["-6", "route", "show", "proto", "249"])?;
            for (node, cidr) in v4.iter().filter(|(n, _)| n != "node-d") {
                ensure!(
                    ours4
                        .lines()
                        .map(without_nhid)
                        .any(|l| l.starts_with(&format!("{cidr} via {R1_LAN_B} dev eth0"))),
                    "node-d reaches {node}'s {cidr} via {R1_LAN_B}: {ours4}"
                );
            }
            for (node, cidr, _) in subnets.iter().filter(|(n, _, _)| n != "node-d") {
                ensure!(
                    ours6
                        .lines()
                        .any(|l| l.starts_with(&format!("{cidr} via {R1_LAN_B6} dev eth0"))),
                    "node-d reaches {node}'s {cidr} via {R1_LAN_B6}: {ours6}"
                );
            }
            Ok(())
        },
    )?;
    for node in ALL {
        let (status, reason, message) = programmed(c, NETWORK, node)?;
        ensure!(
            status == "True" && !message.contains("unreachable") && !message.contains("skipped"),
            "{node}: Programmed {status} {reason}: {message}"
        );
    }

    // Traffic across r1 both ways, both families; three hops each way (TTL and hop limit 61).
    let on = |node: &str| {
        pods.iter()
            .find(|p| p.node == node)
            .with_context(|| format!("no pod on {node}"))
    };
    let (pod_a, pod_d) = (on("node-a")?, on("node-d")?);
    for (from, to) in [(pod_a, pod_d), (pod_d, pod_a)] {
        let dst6 = pods::first_ipv6(&to.result)?;
        wait_for("IPv6 ping across r1", Duration::from_secs(10), || {
            traffic::expect_ping6(&from.netns, dst6)
        })
        .with_context(|| format!("{} -> {} ({dst6})", from.netns, to.netns))?;
        wait_for("IPv4 ping across r1", Duration::from_secs(10), || {
            traffic::expect_ping(&from.netns, to.ip)
        })
        .with_context(|| format!("{} -> {} ({})", from.netns, to.netns, to.ip))?;
        for (flag, dst) in [("-4", to.ip.to_string()), ("-6", dst6.to_string())] {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &from.netns, "ping", flag, "-n", "-c", "1"])
                .args(["-W", "2", &dst])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            ensure!(
                text.contains("ttl=61"),
                "{} -> {dst}: three hops (two nodes and r1), TTL 61: {text}",
                from.netns
            );
        }
    }
    let _ = c.kubectl(&[
        "-n",
        deploy::NAMESPACE,
        "delete",
        "secret",
        R1_SECRET,
        "--ignore-not-found",
    ]);
    Ok(())
}
