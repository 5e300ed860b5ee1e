//! Graceful restart as users run it (issue #17): Causeway installed with `helm install` on
//! real kubelet + containerd nodes (node-a..c on lan-a, rack-a; node-d on lan-b, rack-b,
//! behind router r1), a Routed PodNetwork with BGP, and BIRD 2 on r1 as the top-of-rack
//! router (AS 64500; nodes AS 64512), GR-aware as BIRD is by default. A ping every 20 ms
//! crosses r1 between test pods while an agent pod is deleted with `kubectl delete pod`, and
//! while `helm upgrade` rolls every agent to the next build one node at a time: the agent
//! stops its BIRD without withdrawing (the chart's grace period covers it), the new pod's
//! agent starts BIRD in recovery (`-R`, from the marker in the host directory
//! `/run/causeway/bird`) and carries the node's kernel routes, and r1, whose table is read
//! every 50 ms, keeps every node's subnet throughout. Nothing is lost.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use causeway_e2e::bird::{self, Bird, Watched};
use causeway_e2e::install::{self, Pings, Upgrade, causeway_pods};
use causeway_e2e::suite::{lock, wait_network_ready};
use causeway_e2e::topology::{Topology, presets};
use causeway_e2e::traffic::wait_for;
use causeway_e2e::workload::{self, PodInfo, pod_on};
use causeway_e2e::{Cluster, deploy, testing};
use serde_json::Value;

const NETWORK: &str = "bgp";
const APPS: &str = "apps";
const ECHO: &str = "echo";
/// One test pod per node.
const REPLICAS: u32 = 4;
const ALL: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];
const ROUTER_ASN: u32 = 64500;
const NODE_ASN: u32 = 64512;
/// How often r1's table is read while agents restart.
const WATCH_EVERY: Duration = Duration::from_millis(50);

static BIRD: Mutex<Option<Bird>> = Mutex::new(None);

fn main() -> ExitCode {
    testing::run_suite_with(
        "instbgp",
        topology,
        install::image_archives,
        vec![
            testing::test(
                "helm_install_with_a_bgp_network_peers_every_node_with_the_router_and_pods_cross_it",
                bgp_up,
            ),
            testing::test(
                "deleting_an_agent_pod_under_a_20_ms_ping_loses_nothing_and_the_router_keeps_its_subnet",
                agent_pod_deleted,
            ),
            testing::test(
                "helm_upgrade_under_20_ms_pings_loses_nothing_and_the_router_keeps_every_subnet",
                upgrade,
            ),
        ],
    )
}

/// [`presets::two_segments`] on kubelet nodes, with zone labels: rack-a is lan-a, rack-b is
/// lan-b.
fn topology() -> Topology {
    presets::racks(Topology {
        kubelet: true,
        ..presets::two_segments()
    })
}

/// Every node peers with r1: rack-a with its lan-a leg, rack-b with its lan-b leg. Graceful
/// restart is on by default (120 s).
fn network() -> Value {
    bird::bgp_network(
        NETWORK,
        "10.246.0.0/16",
        NODE_ASN,
        &[
            bird::zone_peer("192.168.50.1", ROUTER_ASN, "rack-a"),
            bird::zone_peer("192.168.60.1", ROUTER_ASN, "rack-b"),
        ],
    )
}

/// Every session Established on both ends, every subnet in r1's table via its node.
fn converged(c: &Cluster) -> Result<()> {
    let bird = lock(&BIRD);
    bird.as_ref()
        .context("BIRD is not running on r1")?
        .expect_converged(c, NETWORK, &ALL)
}

/// Installs the release (this build) unless it is there, starts BIRD on r1, applies the BGP
/// network and the test Deployment, and waits until BGP has converged; returns the pods.
fn ensure_up(c: &Cluster) -> Result<Vec<PodInfo>> {
    install::ensure_release(c)?;
    {
        let mut bird = lock(&BIRD);
        if bird.is_none() {
            let config =
                bird::Config::for_nodes(c, &ALL, ROUTER_ASN, [192, 168, 50, 1].into(), NODE_ASN)?;
            *bird = Some(Bird::start(c, "r1", &config)?);
        }
    }
    c.kubectl_stdin(&["apply", "-f", "-"], &network().to_string())?;
    wait_for(
        "every NodeSubnet Programmed",
        Duration::from_secs(90),
        || install::programmed_subnets(c, NETWORK),
    )?;
    let pods = workload::deploy_test_pods(c, APPS, ECHO, REPLICAS)?;
    wait_for("BGP converged", Duration::from_secs(60), || converged(c))?;
    Ok(pods)
}

/// Node → its subnet, as r1's table names it.
fn subnets(c: &Cluster) -> Result<Vec<(String, String)>> {
    Ok(install::programmed_subnets(c, NETWORK)?
        .into_iter()
        .map(|(node, cidr)| (node, cidr.to_string()))
        .collect())
}

fn bgp_up(c: &Cluster) -> Result<()> {
    let started = Instant::now();
    let pods = ensure_up(c)?;
    println!(
        "[measure] helm install, BIRD on r1, the BGP network and {REPLICAS} pods: converged in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        lock(&BIRD)
            .as_ref()
            .context("BIRD")?
            .birdc(&["show", "route"])?
    );
    // Across the router both ways, and within rack-a.
    let mut failures = Vec::new();
    for (from, to) in [
        ("node-d", "node-a"),
        ("node-a", "node-d"),
        ("node-b", "node-c"),
    ] {
        let dst = pod_on(&pods, to)?.ip.context("no address")?;
        failures.extend(workload::exec_reach(c, pod_on(&pods, from)?, &[dst]));
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Fails unless the agent in `pod` started its BIRD in graceful-restart recovery (`-R`).
fn expect_bird_recovering(c: &Cluster, pod: &PodInfo) -> Result<()> {
    let logs = c.kubectl(&["logs", "-n", deploy::NAMESPACE, &pod.name])?;
    let started: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("BIRD started"))
        .collect();
    ensure!(
        !started.is_empty() && started.iter().all(|l| l.contains("recovering=true")),
        "{} ({}) did not start BIRD in graceful-restart recovery: {started:?}",
        pod.name,
        pod.node
    );
    Ok(())
}

/// Prints what r1's table showed, and fails unless it never lacked any of `cidrs` (node,
/// subnet).
fn expect_kept(watched: &Watched, cidrs: &[(String, String)]) -> Result<()> {
    for (node, cidr) in cidrs {
        let session = node.replace('-', "_");
        let missing = watched.missing.get(cidr).copied().unwrap_or_default();
        let down = watched.down.get(&session).map_or_else(
            || "never seen down".to_string(),
            |d| format!("not Established for {:.2}s", d.as_secs_f64()),
        );
        println!(
            "[measure] r1: {node}'s subnet {cidr} missing in {missing} of {} reads; session {session} {down}{}",
            watched.reads,
            if missing == 0 && watched.down.contains_key(&session) {
                " (the route held stale meanwhile)"
            } else {
                ""
            }
        );
    }
    println!(
        "[measure] r1 read every {WATCH_EVERY:?}: {} reads, {} failed, longest between reads {:.0} ms",
        watched.reads,
        watched.failed,
        watched.longest_between_reads.as_secs_f64() * 1000.0
    );
    ensure!(
        watched.reads > 20 && watched.failed == 0,
        "r1's table read {} times ({} failed)",
        watched.reads,
        watched.failed
    );
    // Each restart reached r1 (its session went down), or the test proved nothing.
    let unseen: Vec<&str> = cidrs
        .iter()
        .filter(|(node, _)| !watched.down.contains_key(&node.replace('-', "_")))
        .map(|(node, _)| node.as_str())
        .collect();
    ensure!(
        unseen.is_empty(),
        "r1 never saw the session with {unseen:?} go down: did the agent restart?"
    );
    let lacked: Vec<&str> = cidrs
        .iter()
        .filter(|(_, cidr)| !watched.never_lacked(cidr))
        .map(|(node, _)| node.as_str())
        .collect();
    ensure!(
        lacked.is_empty(),
        "r1 lost the subnet of {lacked:?} during the restart: {:?}",
        watched.missing
    );
    Ok(())
}

/// Starts watching r1's table for `cidrs`.
fn watch_r1(cidrs: &[(String, String)]) -> Result<bird::Watch> {
    let prefixes: Vec<String> = cidrs.iter().map(|(_, cidr)| cidr.clone()).collect();
    Ok(lock(&BIRD)
        .as_ref()
        .context("BIRD is not running on r1")?
        .watch(&prefixes, WATCH_EVERY))
}

/// node-a's agent pod deleted with kubectl under a ping from node-d (across r1) to node-a.
fn agent_pod_deleted(c: &Cluster) -> Result<()> {
    let pods = ensure_up(c)?;
    let node_a: Vec<(String, String)> = subnets(c)?
        .into_iter()
        .filter(|(node, _)| node == "node-a")
        .collect();
    let pings = Pings::start(c, &pods, &[("node-d", "node-a")])?;
    let watch = watch_r1(&node_a)?;
    let started = Instant::now();
    let restarted = install::delete_agent_pod(c, "node-a").and_then(|r| {
        wait_for(
            "node-a's session Established again",
            Duration::from_secs(60),
            || converged(c),
        )?;
        Ok((r, started.elapsed()))
    });
    // A little longer, with the new agent in charge (its carried routes give way to BIRD's
    // 2 s after its sessions are up).
    std::thread::sleep(Duration::from_secs(3));
    let watched = watch.stop()?;
    let pinged = pings.stop();
    let (restart, back) = restarted?;
    println!(
        "[measure] node-a's agent pod deleted: old pod gone {:.1}s, new pod Ready {:.1}s, every session Established again {:.1}s after `kubectl delete pod`",
        restart.stopped.as_secs_f64(),
        restart.ready.as_secs_f64(),
        back.as_secs_f64()
    );
    let kept = expect_kept(&watched, &node_a);
    pinged?;
    kept?;
    // The chart's grace period let the old agent stop its BIRD without withdrawing; the new
    // one started BIRD in recovery.
    let stop: Vec<&str> = restart
        .old_log
        .lines()
        .filter(|l| l.contains("BGP speaker") || l.contains("BIRD stopped"))
        .collect();
    ensure!(
        stop.iter()
            .any(|l| l.contains("stopping the BGP speaker for a restart"))
            && stop
                .iter()
                .any(|l| l.contains("BIRD stopped how=Some(Restart)")),
        "the old agent did not stop BIRD for a graceful restart: {stop:?}"
    );
    println!("old agent: {}", stop.join(" | "));
    expect_bird_recovering(c, &restart.new)?;
    wait_network_ready(c, NETWORK, 60)
}

/// `helm upgrade` to the next build under pings across r1 both ways; r1 watched for every
/// node's subnet.
fn upgrade(c: &Cluster) -> Result<()> {
    let pods = ensure_up(c)?;
    let all = subnets(c)?;
    let upgrade = Upgrade::prepare(c)?;
    let pings = Pings::start(
        c,
        &pods,
        &[
            ("node-d", "node-a"),
            ("node-a", "node-d"),
            ("node-b", "node-d"),
        ],
    )?;
    let watch = watch_r1(&all)?;
    let started = Instant::now();
    let upgraded = upgrade.run(c).and_then(|_| {
        wait_for(
            "every session Established after the upgrade",
            Duration::from_secs(60),
            || converged(c),
        )?;
        Ok(started.elapsed())
    });
    std::thread::sleep(Duration::from_secs(3));
    let watched = watch.stop()?;
    let pinged = pings.stop();
    let back = upgraded?;
    println!(
        "[measure] helm upgrade {} -> {}: every agent replaced and every session Established in {:.1}s",
        upgrade.from,
        upgrade.to,
        back.as_secs_f64()
    );
    let kept = expect_kept(&watched, &all);
    pinged?;
    kept?;
    upgrade.expect_done(c)?;
    let (_, agents) = causeway_pods(c)?;
    for agent in &agents {
        expect_bird_recovering(c, agent)?;
    }
    wait_network_ready(c, NETWORK, 60)
}
