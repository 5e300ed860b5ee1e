//! BFD (issue #17): two routers towards each rack, and a link cut under traffic.
//!
//! Topology: node-a..c on lan-a, node-d on lan-b, and two routers, r1 (.1 on both segments)
//! and r2 (.254 on both), each running BIRD with BFD on every session (100 ms × 3). The Routed
//! network peers every node with both routers of its segment, BFD on. BGP prefers r1 (lower
//! router ID), so pod traffic between the racks crosses r1. Cutting r1's lan-a leg must move
//! it to r2 within a second: r1's BFD sessions with rack-a fail, r1 withdraws rack-a's subnets
//! from node-d, and rack-a's BFD sessions with r1 fail, so both directions turn to r2. A
//! ping every 20 ms from a pod on node-d to a pod on node-a measures the gap.

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use causeway_e2e::bird::{Bird, Config};
use causeway_e2e::suite::{Suite, lock, our_routes};
use causeway_e2e::topology::{Leg, Router, Topology, presets};
use causeway_e2e::traffic::{self, wait_for};
use causeway_e2e::{Cluster, deploy, testing};
use serde_json::Value;

const ALL: [&str; 4] = ["node-a", "node-b", "node-c", "node-d"];
const ROUTER_ASN: u32 = 64500;
const NODE_ASN: u32 = 64512;
/// BFD interval (ms) and multiplier, on the nodes and the routers.
const BFD: (u32, u8) = (100, 3);

static SUITE: Suite = Suite::new(&ALL, 3, 6);
static ROUTERS: Mutex<Vec<Bird>> = Mutex::new(Vec::new());

fn main() -> ExitCode {
    testing::run_suite(
        "bfd",
        two_routers,
        vec![testing::test(
            "bfd_a_cut_router_link_moves_pod_traffic_to_the_other_router_within_a_second",
            failover,
        )],
    )
}

/// [`presets::two_segments`] with a second router, r2, on both segments, and zone labels.
fn two_routers() -> Topology {
    let mut t = presets::two_segments();
    t.routers.push(Router {
        name: "r2".into(),
        legs: vec![
            Leg {
                segment: "lan-a".into(),
                address: Some([192, 168, 50, 254].into()),
                address6: None,
            },
            Leg {
                segment: "lan-b".into(),
                address: Some([192, 168, 60, 254].into()),
                address6: None,
            },
        ],
    });
    presets::racks(t)
}

fn router_config(c: &Cluster, router_id: &str) -> Result<Config> {
    Ok(Config {
        bfd: Some(BFD),
        ..Config::for_nodes(c, &ALL, ROUTER_ASN, router_id.parse()?, NODE_ASN)?
    })
}

fn network() -> Value {
    let bfd = serde_json::json!({"minIntervalMilliseconds": BFD.0, "multiplier": BFD.1});
    let peer = |address: &str, zone: &str| {
        let mut peer = causeway_e2e::bird::zone_peer(address, ROUTER_ASN, zone);
        peer["bfd"] = bfd.clone();
        peer
    };
    causeway_e2e::bird::bgp_network(
        "bfd",
        "10.245.0.0/16",
        NODE_ASN,
        &[
            peer("192.168.50.1", "rack-a"),
            peer("192.168.50.254", "rack-a"),
            peer("192.168.60.1", "rack-b"),
            peer("192.168.60.254", "rack-b"),
        ],
    )
}

/// Every node has both sessions Established, and BFD is Up on both routers for every node.
fn converged(c: &Cluster) -> Result<()> {
    for s in deploy::node_subnets(c, "bfd")? {
        let sessions = s["status"]["bgpSessions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        ensure!(
            sessions.len() == 2 && sessions.iter().all(|x| x["state"] == "Established"),
            "{}: bgpSessions {sessions:?}",
            s["spec"]["nodeName"]
        );
    }
    for bird in lock(&ROUTERS).iter() {
        let bfd = bird.birdc(&["show", "bfd", "sessions"])?;
        let up = bfd.lines().filter(|l| l.contains(" Up ")).count();
        ensure!(up == ALL.len(), "BFD sessions Up {up}:\n{bfd}");
    }
    Ok(())
}

/// node-d's route to `cidr` goes via `via`.
fn routes_via(c: &Cluster, node: &str, cidr: &str, via: &str) -> Result<()> {
    let routes = our_routes(c, node)?;
    ensure!(
        routes
            .iter()
            .any(|r| r.starts_with(&format!("{cidr} via {via} "))),
        "{node}: {routes:?}, expected {cidr} via {via}"
    );
    Ok(())
}

fn failover(c: &Cluster) -> Result<()> {
    SUITE.control_plane(c)?;
    {
        let mut routers = lock(&ROUTERS);
        routers.push(Bird::start(c, "r1", &router_config(c, "192.168.50.1")?)?);
        routers.push(Bird::start(c, "r2", &router_config(c, "192.168.50.254")?)?);
    }
    let pods = SUITE.bring_up(c, &network().to_string(), "bfd", &ALL, "bfd")?;
    wait_for("sessions and BFD up", Duration::from_secs(45), || {
        converged(c)
    })?;
    let subnets: std::collections::BTreeMap<String, String> = deploy::node_subnets(c, "bfd")?
        .iter()
        .filter_map(|s| {
            Some((
                s["spec"]["nodeName"].as_str()?.to_string(),
                s["spec"]["cidr"].as_str()?.to_string(),
            ))
        })
        .collect();
    let a_subnet = subnets.get("node-a").context("node-a's subnet")?;
    let d_subnet = subnets.get("node-d").context("node-d's subnet")?;
    // BGP prefers r1 (lower router ID) in both directions.
    wait_for("traffic through r1", Duration::from_secs(15), || {
        routes_via(c, "node-d", a_subnet, "192.168.60.1")?;
        routes_via(c, "node-a", d_subnet, "192.168.50.1")
    })?;
    let from = pods
        .iter()
        .find(|p| p.node == "node-d")
        .context("pod on node-d")?;
    let to = pods
        .iter()
        .find(|p| p.node == "node-a")
        .context("pod on node-a")?;
    let ping = traffic::ContinuousPing::start(&from.netns, to.ip, Duration::from_millis(20))?;
    std::thread::sleep(Duration::from_secs(2));
    let cut = std::time::Instant::now();
    c.exec("r1", "ip", &["link", "set", "e-lan-a", "down"])?;
    let moved = wait_for("traffic through r2", Duration::from_secs(10), || {
        routes_via(c, "node-d", a_subnet, "192.168.60.254")?;
        routes_via(c, "node-a", d_subnet, "192.168.50.254")
    });
    let switched = cut.elapsed();
    if moved.is_err() {
        print_state(c);
    }
    std::thread::sleep(Duration::from_secs(2));
    let report = ping.stop()?;
    c.exec("r1", "ip", &["link", "set", "e-lan-a", "up"])?;
    moved?;
    println!(
        "[measure] r1's lan-a link cut, BFD {}ms x {}: both directions' routes on r2 after {:.2}s; ping every 20 ms {} -> {}: {} sent, {} lost, longest gap {:?}",
        BFD.0,
        BFD.1,
        switched.as_secs_f64(),
        from.name,
        to.name,
        report.transmitted,
        report.lost(),
        report.max_gap
    );
    ensure!(
        report.max_gap < Duration::from_secs(1),
        "traffic stopped for {:?} (BFD should move it within a second)",
        report.max_gap
    );
    // r1 back: sessions and BFD come back, and the traffic with them.
    wait_for("sessions and BFD up again", Duration::from_secs(45), || {
        converged(c)
    })?;
    Ok(())
}

/// What r1 and node-d's BIRD and kernel hold, for a failure's report (errors are printed in
/// place of what could not be read).
fn print_state(c: &Cluster) {
    let read = |r: Result<String>| r.unwrap_or_else(|e| format!("({e:#})"));
    if let Some(r1) = lock(&ROUTERS).first() {
        for args in [
            &["show", "protocols"][..],
            &["show", "route", "all"],
            &["show", "bfd", "sessions"],
        ] {
            eprintln!(
                "[state] r1 birdc {}:\n{}",
                args.join(" "),
                read(r1.birdc(args))
            );
        }
    }
    let ctl = c.host_dir("node-d").join("bird").join("bird.ctl");
    for args in [&["show", "protocols", "all"][..], &["show", "route", "all"]] {
        let text = std::process::Command::new("birdc")
            .arg("-s")
            .arg(&ctl)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .map_err(anyhow::Error::from);
        eprintln!("[state] node-d birdc {}:\n{}", args.join(" "), read(text));
    }
    eprintln!(
        "[state] node-d ip route:\n{}",
        read(c.exec("node-d", "ip", &["route"]))
    );
}
