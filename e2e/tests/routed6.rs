//! Dual-stack Routed mode with BGP end to end (issue #18) on the dual-stack reference
//! topology: node-a..c on lan-a (192.168.50.0/24 + fd00:50::/64, zone rack-a), node-d on
//! lan-b (192.168.60.0/24 + fd00:60::/64, zone rack-b) behind router r1, which forwards both
//! families. BIRD 2 on r1 is the routers' BGP speaker (AS 64500; nodes AS 64512): one session
//! per node, on the node's IPv4 address, carrying IPv4 and IPv6 unicast (an `ipv6` channel
//! beside the `ipv4` one). The operator and an agent per node run with the chart's RBAC; pods
//! are attached with the CNI config the agents wrote; every check is real traffic, BIRD's own
//! table or the kernel's. The first test brings the network up and checks both families end
//! to end; the second restarts node-d's agent under an IPv6 ping.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use causeway_e2e::bird::{self, Bird};
use causeway_e2e::pods::{self, Pod};
use causeway_e2e::suite::{Suite, lock, programmed};
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
