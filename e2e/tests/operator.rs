//! The operator on a real control plane (issue #4): allocation for 50 nodes, selector,
//! release and reuse, restart stability, two replicas with one leader, conflicts,
//! exhaustion, nodes without an address or that lose it, readiness roll-up, deletion, metrics.
//!
//! Nodes here are Node objects registered as a kubelet would (name, labels, InternalIP); the
//! operators run inside node namespaces with the underlay kubeconfig. No agent exists yet:
//! where a test needs "agent reported Programmed", it writes the NodeSubnet status exactly as
//! the agent will (status subresource), and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use causeway_e2e::proc::ProcId;
use causeway_e2e::topology::presets;
use causeway_e2e::traffic::wait_for;
use causeway_e2e::{Cluster, demo, deploy, testing};
use ipnet::Ipv4Net;
use serde_json::{Value, json};

const NS: &str = deploy::NAMESPACE;
const LEASE_SECONDS: u64 = 6;

fn main() -> ExitCode {
    testing::run_suite(
        "operator",
        || presets::one_segment(2),
        vec![
            testing::test(
                "fifty_nodes_get_disjoint_subnets_inside_the_cidr_and_the_selector_is_respected",
                fifty_nodes,
            ),
            testing::test(
                "a_deleted_node_releases_its_subnet_and_a_later_node_reuses_it",
                release_and_reuse,
            ),
            testing::test(
                "a_restarted_operator_keeps_every_allocation_and_catches_up",
                restart_keeps_allocations,
            ),
            testing::test(
                "two_operators_elect_one_leader_fail_over_and_never_double_allocate",
                two_operators,
            ),
            testing::test(
                "an_overlapping_network_reports_the_earlier_one_and_recovers_when_it_goes",
                overlap,
            ),
            testing::test(
                "a_node_selected_by_two_networks_stays_with_the_earlier_and_moves_when_it_goes",
                double_selection,
            ),
            testing::test(
                "a_full_cidr_reports_subnets_exhausted_with_waiting_nodes_and_recovers",
                exhaustion,
            ),
            testing::test(
                "a_node_without_an_internal_ip_is_reported_and_allocated_once_it_has_one",
                missing_address,
            ),
            testing::test(
                "a_node_that_loses_its_internal_ip_is_reported_and_keeps_its_subnet_and_address",
                lost_address,
            ),
            testing::test(
                "ready_follows_what_agents_report_on_their_node_subnets",
                readiness,
            ),
            testing::test(
                "deleting_a_pod_network_removes_its_node_subnets_first",
                deletion,
            ),
            testing::test(
                "metrics_come_from_the_leader_health_from_each_replica_and_two_replicas_share_a_node",
                metrics,
            ),
            testing::test(
                "a_network_made_dual_stack_gives_every_node_an_ipv6_subnet_without_moving_its_ipv4_one",
                dual_stack,
            ),
            testing::test(
                "an_ipv6_network_allocates_slash_64s_named_by_their_groups_and_agents_refuse_it_whole",
                ipv6_only,
            ),
            testing::test(
                "with_use_node_pod_cidr_nodes_keep_the_pod_cidr_kubernetes_gave_them",
                node_pod_cidr,
            ),
            testing::test(
                "an_operator_killed_while_allocating_500_nodes_neither_double_allocates_nor_leaks",
                killed_mid_allocation,
            ),
        ],
    )
}

/// The operator replicas started so far: (host, process).
static OPERATORS: Mutex<Vec<(String, ProcId)>> = Mutex::new(Vec::new());

fn start_operator(c: &Cluster, host: &str) -> Result<ProcId> {
    start_operator_with(c, host, &[])
}

fn start_operator_with(c: &Cluster, host: &str, extra: &[&str]) -> Result<ProcId> {
    let lease = LEASE_SECONDS.to_string();
    let mut args = vec!["--lease-duration", &lease, "--lease-renew-grace", "2"];
    args.extend(extra);
    let id = deploy::start_operator(c, host, &args)?;
    OPERATORS
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .push((host.to_string(), id.clone()));
    Ok(id)
}

/// Installs the CRDs, the namespace and one operator on node-a (once per suite).
fn setup(c: &Cluster) -> Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    if *done {
        return Ok(());
    }
    demo::install_crds(c)?;
    deploy::install_operator_rbac(c)?;
    start_operator(c, "node-a")?;
    wait_for("node-a leads", Duration::from_secs(30), || {
        expect_leader(c, "node-a")
    })?;
    *done = true;
    Ok(())
}

/// The identity holding the operator's leader Lease.
fn leader(c: &Cluster) -> Result<String> {
    c.kubectl(&[
        "get",
        "lease",
        "-n",
        NS,
        "causeway-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

fn expect_leader(c: &Cluster, host: &str) -> Result<()> {
    let holder = leader(c)?;
    ensure!(holder == host, "lease held by {holder:?}, expected {host}");
    Ok(())
}

/// A Node to register: name, InternalIP (None: no address yet) and its `pool` label.
struct TestNode {
    name: String,
    address: Option<Ipv4Addr>,
    pool: String,
}

/// Registers API-only nodes (no namespace: IPAM does not need one) with a `pool` label and,
/// when given, an InternalIP.
fn add_nodes(c: &Cluster, nodes: &[TestNode]) -> Result<()> {
    let mut manifest = String::new();
    for node in nodes {
        let doc = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node.name, "labels": {"pool": node.pool}}});
        manifest.push_str(&doc.to_string());
        manifest.push('\n');
    }
    c.kubectl_stdin(&["apply", "-f", "-"], &manifest)?;
    for node in nodes {
        c.set_node_status(&node.name, node.address)?;
    }
    Ok(())
}

/// Nodes `{pool}-{i}` for `i` in `range`, addressed 192.168.`third`.(10+i).
fn pool_nodes(range: std::ops::Range<u8>, third: u8, pool: &str) -> Vec<TestNode> {
    range
        .map(|i| TestNode {
            name: format!("{pool}-{i:02}"),
            address: Some(Ipv4Addr::new(192, 168, third, 10 + i)),
            pool: pool.to_string(),
        })
        .collect()
}

fn apply_network(c: &Cluster, name: &str, cidr: &str, prefix: u8, pool: &str) -> Result<()> {
    let pn = json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "nodeSubnetPrefixLength": prefix, "mode": "Overlay",
                 "nodeSelector": {"matchLabels": {"pool": pool}}}});
    c.kubectl_stdin(&["apply", "-f", "-"], &pn.to_string())?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
struct SubnetObj {
    name: String,
    uid: String,
    cidr: Ipv4Net,
    address: String,
}

fn subnets(c: &Cluster, network: &str) -> Result<BTreeMap<String, SubnetObj>> {
    let mut map = BTreeMap::new();
    for item in &deploy::node_subnets(c, network)? {
        let node = item["spec"]["nodeName"]
            .as_str()
            .context("nodeName")?
            .to_string();
        let obj = SubnetObj {
            name: item["metadata"]["name"]
                .as_str()
                .context("name")?
                .to_string(),
            uid: item["metadata"]["uid"].as_str().context("uid")?.to_string(),
            cidr: item["spec"]["cidr"].as_str().context("cidr")?.parse()?,
            address: item["spec"]["nodeAddress"]
                .as_str()
                .context("nodeAddress")?
                .to_string(),
        };
        ensure!(
            map.insert(node.clone(), obj).is_none(),
            "node {node} has two NodeSubnets in {network}"
        );
    }
    Ok(map)
}

fn status(c: &Cluster, network: &str) -> Result<Value> {
    Ok(
        serde_json::from_str::<Value>(&c.kubectl(&[
            "get",
            "podnetwork",
            network,
            "-o",
            "json",
        ])?)?["status"]
            .clone(),
    )
}

fn condition(c: &Cluster, network: &str, type_: &str) -> Result<(String, String, String)> {
    let st = status(c, network)?;
    let cond = st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|x| x["type"] == type_))
        .with_context(|| format!("{network} has no {type_} condition yet: {st}"))?;
    Ok((
        cond["status"].as_str().unwrap_or_default().to_string(),
        cond["reason"].as_str().unwrap_or_default().to_string(),
        cond["message"].as_str().unwrap_or_default().to_string(),
    ))
}

fn expect_condition(
    c: &Cluster,
    network: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Result<String> {
    wait_for(
        &format!("{network} {type_}={status} ({reason})"),
        Duration::from_secs(30),
        || {
            let (s, r, m) = condition(c, network, type_)?;
            ensure!(s == status && r == reason, "{type_}={s} reason {r}: {m}");
            Ok(m)
        },
    )
}

fn events(c: &Cluster, network: &str) -> Result<Vec<(String, String)>> {
    let out = c.kubectl(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        &format!("involvedObject.kind=PodNetwork,involvedObject.name={network}"),
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
                    (
                        e["reason"].as_str().unwrap_or_default().to_string(),
                        e["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

fn expect_event(c: &Cluster, network: &str, reason: &str, contains: &str) -> Result<()> {
    wait_for(
        &format!("event {reason} on {network}"),
        Duration::from_secs(20),
        || {
            let evs = events(c, network)?;
            ensure!(
                evs.iter().any(|(r, m)| r == reason && m.contains(contains)),
                "no {reason} event mentioning {contains:?}: {evs:?}"
            );
            Ok(())
        },
    )
}

fn check_disjoint_inside(
    map: &BTreeMap<String, SubnetObj>,
    cidr: Ipv4Net,
    prefix: u8,
) -> Result<()> {
    let mut seen = BTreeSet::new();
    for (node, s) in map {
        ensure!(
            s.cidr.prefix_len() == prefix,
            "{node}: {} is not a /{prefix}",
            s.cidr
        );
        ensure!(cidr.contains(&s.cidr), "{node}: {} outside {cidr}", s.cidr);
        ensure!(seen.insert(s.cidr), "{} handed out twice", s.cidr);
    }
    Ok(())
}

fn fifty_nodes(c: &Cluster) -> Result<()> {
    setup(c)?;
    let mut nodes = pool_nodes(0..50, 51, "blue");
    nodes.extend(pool_nodes(0..5, 52, "green"));
    add_nodes(c, &nodes)?;
    apply_network(c, "blue", "10.100.0.0/16", 24, "blue")?;
    let map = wait_for("50 NodeSubnets", Duration::from_secs(60), || {
        let m = subnets(c, "blue")?;
        ensure!(m.len() == 50, "{} NodeSubnets", m.len());
        Ok(m)
    })?;
    check_disjoint_inside(&map, "10.100.0.0/16".parse()?, 24)?;
    for node in &nodes[..50] {
        let name = &node.name;
        let s = map
            .get(name)
            .with_context(|| format!("{name} has no subnet"))?;
        let want = node.address.map(|a| a.to_string());
        ensure!(
            Some(s.address.as_str()) == want.as_deref(),
            "{name}: nodeAddress {} vs {want:?}",
            s.address
        );
    }
    ensure!(
        map.keys().all(|n| n.starts_with("blue-")),
        "a node outside the selector got a subnet: {:?}",
        map.keys()
    );
    wait_for("status counts", Duration::from_secs(20), || {
        let st = status(c, "blue")?;
        ensure!(
            st["selectedNodes"] == 50
                && st["allocatedNodes"] == 50
                && st["subnetsAllocated"] == 50
                && st["subnetsFree"] == 206,
            "status {st}"
        );
        ensure!(st["observedGeneration"] == 1, "observedGeneration {st}");
        Ok(())
    })?;
    // No agents yet: Ready is False and says why.
    let msg = expect_condition(c, "blue", "Ready", "False", "NodesPending")?;
    ensure!(
        msg.contains("50"),
        "Ready message does not count pending nodes: {msg}"
    );
    expect_event(c, "blue", "SubnetAllocated", "blue-00")?;
    Ok(())
}

fn release_and_reuse(c: &Cluster) -> Result<()> {
    setup(c)?;
    let before = subnets(c, "blue")?;
    let freed = before.get("blue-07").context("blue-07 has no subnet")?.cidr;
    c.kubectl(&["delete", "node", "blue-07"])?;
    wait_for("blue-07's subnet released", Duration::from_secs(30), || {
        ensure!(
            !subnets(c, "blue")?.contains_key("blue-07"),
            "still allocated"
        );
        Ok(())
    })?;
    expect_event(c, "blue", "SubnetReleased", &freed.to_string())?;
    add_nodes(c, &pool_nodes(50..51, 51, "blue"))?;
    let got = wait_for("blue-50 allocated", Duration::from_secs(30), || {
        subnets(c, "blue")?
            .get("blue-50")
            .map(|s| s.cidr)
            .context("not yet")
    })?;
    ensure!(
        got == freed,
        "the later node got {got}, expected the freed (lowest) {freed}"
    );
    Ok(())
}

fn restart_keeps_allocations(c: &Cluster) -> Result<()> {
    setup(c)?;
    let before = subnets(c, "blue")?;
    let op = OPERATORS
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .iter()
        .find(|(h, _)| h == "node-a")
        .map(|(_, p)| p.clone())
        .context("no operator")?;
    // A second network, so the restart must bring up more than one reconcile at once.
    apply_network(c, "idle", "10.101.0.0/16", 24, "nobody")?;
    wait_for("idle observed", Duration::from_secs(20), || {
        ensure!(status(c, "idle")?["observedGeneration"] == 1, "not yet");
        Ok(())
    })?;
    c.kill(&op);
    // While it is down, a node joins and the second network's spec changes.
    add_nodes(c, &pool_nodes(51..52, 51, "blue"))?;
    apply_network(c, "idle", "10.101.0.0/16", 24, "nobody-else")?;
    // A restarted process waits out its own stale Lease (different start, same identity
    // renews at once), then reconciles.
    start_operator(c, "node-a")?;
    let after = wait_for(
        "the joined node allocated after restart",
        Duration::from_secs(40),
        || {
            let m = subnets(c, "blue")?;
            ensure!(m.contains_key("blue-51"), "blue-51 not allocated yet");
            Ok(m)
        },
    )?;
    for (node, s) in &before {
        let a = after
            .get(node)
            .with_context(|| format!("{node} lost its subnet"))?;
        ensure!(a == s, "{node} changed from {s:?} to {a:?}");
    }
    check_disjoint_inside(&after, "10.100.0.0/16".parse()?, 24)?;
    wait_for(
        "the second network reconciled after restart",
        Duration::from_secs(20),
        || {
            let st = status(c, "idle")?;
            ensure!(st["observedGeneration"] == 2, "status {st}");
            Ok(())
        },
    )?;
    c.kubectl(&[
        "delete",
        "podnetwork",
        "idle",
        "--wait=true",
        "--timeout=30s",
    ])?;
    Ok(())
}

fn two_operators(c: &Cluster) -> Result<()> {
    setup(c)?;
    start_operator(c, "node-b")?;
    std::thread::sleep(Duration::from_secs(2));
    expect_leader(c, "node-a")?;
    // Both run; nodes join in a burst; still one subnet per node, none twice.
    add_nodes(c, &pool_nodes(52..62, 51, "blue"))?;
    let map = wait_for("burst allocated", Duration::from_secs(40), || {
        let m = subnets(c, "blue")?;
        ensure!(m.len() == 61, "{} NodeSubnets", m.len());
        Ok(m)
    })?;
    check_disjoint_inside(&map, "10.100.0.0/16".parse()?, 24)?;
    // The leader dies: the standby takes over within the lease duration (+ renew period).
    let leader = OPERATORS
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .iter()
        .rev()
        .find(|(h, _)| h == "node-a")
        .map(|(_, p)| p.clone())
        .context("no node-a operator")?;
    let killed = Instant::now();
    c.kill(&leader);
    wait_for(
        "node-b takes the lease",
        Duration::from_secs(LEASE_SECONDS * 3),
        || expect_leader(c, "node-b"),
    )?;
    let failover = killed.elapsed();
    eprintln!(
        "[measure] leader failover after SIGKILL: {:.1}s (lease duration {LEASE_SECONDS}s)",
        failover.as_secs_f64()
    );
    ensure!(
        failover <= Duration::from_secs(LEASE_SECONDS + 4),
        "failover took {failover:?}"
    );
    add_nodes(c, &pool_nodes(62..63, 51, "blue"))?;
    wait_for("the new leader allocates", Duration::from_secs(30), || {
        ensure!(
            subnets(c, "blue")?.contains_key("blue-62"),
            "blue-62 not allocated"
        );
        Ok(())
    })?;
    check_disjoint_inside(&subnets(c, "blue")?, "10.100.0.0/16".parse()?, 24)?;
    Ok(())
}

fn overlap(c: &Cluster) -> Result<()> {
    setup(c)?;
    add_nodes(c, &pool_nodes(0..2, 53, "x"))?;
    apply_network(c, "first", "10.110.0.0/16", 24, "none")?;
    std::thread::sleep(Duration::from_millis(1100)); // creation timestamps have 1 s resolution
    apply_network(c, "second", "10.110.128.0/17", 24, "x")?;
    let msg = expect_condition(c, "second", "Ready", "False", "CidrOverlap")?;
    ensure!(
        msg.contains("first"),
        "the message does not name the earlier network: {msg}"
    );
    expect_event(c, "second", "CidrOverlap", "first")?;
    ensure!(
        subnets(c, "second")?.is_empty(),
        "an overlapping network allocated subnets"
    );
    // The earlier network goes: the later one recovers on its own.
    c.kubectl(&[
        "delete",
        "podnetwork",
        "first",
        "--wait=true",
        "--timeout=30s",
    ])?;
    wait_for("second allocates", Duration::from_secs(30), || {
        ensure!(subnets(c, "second")?.len() == 2, "not yet");
        Ok(())
    })?;
    expect_condition(c, "second", "Ready", "False", "NodesPending")?;
    c.kubectl(&[
        "delete",
        "podnetwork",
        "second",
        "--wait=true",
        "--timeout=30s",
    ])?;
    Ok(())
}

fn double_selection(c: &Cluster) -> Result<()> {
    setup(c)?;
    // The five `green` nodes of the first test belong to no network yet.
    apply_network(c, "green-first", "10.140.0.0/16", 24, "green")?;
    wait_for("green-first allocates", Duration::from_secs(30), || {
        ensure!(subnets(c, "green-first")?.len() == 5, "not yet");
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(1100)); // creation timestamps have 1 s resolution
    apply_network(c, "green-second", "10.141.0.0/16", 24, "green")?;
    let msg = expect_condition(
        c,
        "green-second",
        "Ready",
        "False",
        "NodesClaimedByOtherNetwork",
    )?;
    ensure!(
        msg.contains("green-first"),
        "the message does not name the network holding the nodes: {msg}"
    );
    expect_event(
        c,
        "green-second",
        "NodesClaimedByOtherNetwork",
        "green-first",
    )?;
    ensure!(
        subnets(c, "green-second")?.is_empty(),
        "a node got subnets from two networks"
    );
    c.kubectl(&[
        "delete",
        "podnetwork",
        "green-first",
        "--wait=true",
        "--timeout=30s",
    ])?;
    wait_for(
        "the nodes move to green-second",
        Duration::from_secs(30),
        || {
            ensure!(subnets(c, "green-second")?.len() == 5, "not yet");
            Ok(())
        },
    )?;
    expect_condition(c, "green-second", "Degraded", "False", "AsExpected")?;
    c.kubectl(&[
        "delete",
        "podnetwork",
        "green-second",
        "--wait=true",
        "--timeout=30s",
    ])?;
    Ok(())
}

fn exhaustion(c: &Cluster) -> Result<()> {
    setup(c)?;
    add_nodes(c, &pool_nodes(0..3, 54, "tiny"))?;
    apply_network(c, "tiny", "10.120.0.0/29", 30, "tiny")?;
    let msg = expect_condition(c, "tiny", "SubnetsExhausted", "True", "PoolExhausted")?;
    ensure!(
        msg.contains("tiny-02") && msg.contains('1'),
        "exhaustion message names no waiting node: {msg}"
    );
    expect_event(c, "tiny", "PoolExhausted", "tiny-02")?;
    ensure!(
        subnets(c, "tiny")?.len() == 2,
        "capacity is two /30s in a /29"
    );
    // `kubectl causeway status` says the same: no subnet left, the waiting node named, with
    // the command that shows more (and exit 1). This suite runs no agents, so every node is
    // also "not programmed yet".
    let run = causeway_e2e::suite::kubectl_causeway(c, &["status", "-o", "json"])?;
    let report: serde_json::Value = serde_json::from_str(&run.stdout)?;
    ensure!(
        run.code == 1,
        "status exited {} on an exhausted range",
        run.code
    );
    let tiny = report["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"] == "tiny")
        .context("status lists no network tiny")?;
    ensure!(tiny["subnetsFree"][0] == 0, "{tiny}");
    let exhausted = report["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["object"] == "podnetwork/tiny"
                && p["what"].as_str().is_some_and(|w| {
                    w.starts_with("SubnetsExhausted PoolExhausted") && w.contains("tiny-02")
                })
        })
        .with_context(|| {
            format!(
                "no exhaustion problem naming tiny-02 in {}",
                report["problems"]
            )
        })?;
    ensure!(
        exhausted["next"] == "kubectl describe podnetwork tiny",
        "{exhausted}"
    );
    c.kubectl(&["label", "node", "tiny-00", "pool-"])?;
    wait_for(
        "the waiting node gets the freed subnet",
        Duration::from_secs(30),
        || {
            let m = subnets(c, "tiny")?;
            ensure!(
                m.contains_key("tiny-02") && !m.contains_key("tiny-00"),
                "{m:?}"
            );
            Ok(())
        },
    )?;
    expect_condition(c, "tiny", "SubnetsExhausted", "False", "AsExpected")?;
    Ok(())
}

fn missing_address(c: &Cluster) -> Result<()> {
    setup(c)?;
    add_nodes(
        c,
        &[TestNode {
            name: "blue-noip".into(),
            address: None,
            pool: "blue".into(),
        }],
    )?;
    let msg = expect_condition(c, "blue", "Degraded", "True", "NodesWithoutAddress")?;
    ensure!(
        msg.contains("blue-noip"),
        "message does not name the node: {msg}"
    );
    expect_event(c, "blue", "NodesWithoutAddress", "blue-noip")?;
    ensure!(
        !subnets(c, "blue")?.contains_key("blue-noip"),
        "allocated without an address"
    );
    c.set_node_status("blue-noip", Some(Ipv4Addr::new(192, 168, 55, 10)))?;
    wait_for("allocated once addressed", Duration::from_secs(30), || {
        let s = subnets(c, "blue")?;
        let got = s.get("blue-noip").context("not yet")?;
        ensure!(got.address == "192.168.55.10", "address {}", got.address);
        Ok(())
    })?;
    expect_condition(c, "blue", "Degraded", "False", "AsExpected")?;
    Ok(())
}

/// A node with a subnet whose kubelet stops reporting an InternalIP keeps its NodeSubnet and
/// the last known address (peers keep routing to it), and the network says so by name until
/// the address is back.
fn lost_address(c: &Cluster) -> Result<()> {
    setup(c)?;
    let nodes = pool_nodes(0..2, 57, "amber");
    add_nodes(c, &nodes)?;
    apply_network(c, "amber", "10.140.0.0/16", 24, "amber")?;
    let before = wait_for("2 NodeSubnets", Duration::from_secs(30), || {
        let m = subnets(c, "amber")?;
        ensure!(m.len() == 2, "{m:?}");
        Ok(m)
    })?;
    expect_condition(c, "amber", "Degraded", "False", "AsExpected")?;
    let result = (|| -> Result<()> {
        c.set_node_status("amber-01", None)?;
        let msg = expect_condition(c, "amber", "Degraded", "True", "NodesLostAddress")?;
        ensure!(
            msg.contains("amber-01") && msg.contains("192.168.57.11") && msg.contains("--node-ip"),
            "the message does not name the node, its last address and what to do: {msg}"
        );
        expect_event(c, "amber", "NodesLostAddress", "amber-01")?;
        // Nothing is torn down: same object, same subnet, same address.
        ensure!(
            subnets(c, "amber")? == before,
            "the NodeSubnets changed: {:?} -> {:?}",
            before,
            subnets(c, "amber")?
        );
        c.set_node_status("amber-01", Some(Ipv4Addr::new(192, 168, 57, 11)))?;
        expect_condition(c, "amber", "Degraded", "False", "AsExpected")?;
        ensure!(subnets(c, "amber")? == before, "the NodeSubnets changed");
        Ok(())
    })();
    let deleted = c
        .kubectl(&[
            "delete",
            "podnetwork",
            "amber",
            "--wait=true",
            "--timeout=60s",
        ])
        .map(drop);
    result.and(deleted)
}

/// Writes what an agent writes: Programmed on its NodeSubnet's status.
fn report_programmed(c: &Cluster, obj: &str, ok: bool, reason: &str, message: &str) -> Result<()> {
    let generation = c.kubectl(&[
        "get",
        "nodesubnet",
        obj,
        "-o",
        "jsonpath={.metadata.generation}",
    ])?;
    let patch = json!({"status": {"observedGeneration": generation.parse::<i64>()?, "effectiveMtu": 1450,
        "conditions": [{"type": "Programmed", "status": if ok {"True"} else {"False"}, "reason": reason,
            "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": generation.parse::<i64>()?}]}});
    c.kubectl(&[
        "patch",
        "nodesubnet",
        obj,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(())
}

fn readiness(c: &Cluster) -> Result<()> {
    setup(c)?;
    let map = subnets(c, "tiny")?;
    ensure!(!map.is_empty(), "tiny has no subnets");
    ensure!(
        c.kubectl(&[
            "wait",
            "--for=condition=Ready",
            "--timeout=2s",
            "podnetwork/tiny"
        ])
        .is_err(),
        "Ready before any agent reported"
    );
    for s in map.values() {
        report_programmed(
            c,
            &s.name,
            true,
            "Programmed",
            "routes 1, neighbours 1, fdb 1",
        )?;
    }
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=30s",
        "podnetwork/tiny",
    ])?;
    let st = status(c, "tiny")?;
    ensure!(
        st["programmedNodes"] == map.len() as u64 && st["effectiveMtu"] == 1450,
        "status {st}"
    );
    let (node, first) = map.iter().next().context("no subnet")?;
    report_programmed(
        c,
        &first.name,
        false,
        "DeviceCreateFailed",
        "vxlan module not loaded",
    )?;
    let msg = expect_condition(c, "tiny", "Ready", "False", "NodesFailing")?;
    ensure!(
        msg.contains(node) && msg.contains("DeviceCreateFailed"),
        "message lacks node and agent reason: {msg}"
    );
    expect_condition(c, "tiny", "Degraded", "True", "NodesFailing")?;
    report_programmed(c, &first.name, true, "Programmed", "ok")?;
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=30s",
        "podnetwork/tiny",
    ])?;
    Ok(())
}

fn deletion(c: &Cluster) -> Result<()> {
    setup(c)?;
    let map = subnets(c, "tiny")?;
    let held = map.values().next().context("no subnet")?.name.clone();
    // An agent's finalizer on one NodeSubnet: the network must wait for it.
    c.kubectl(&[
        "patch",
        "nodesubnet",
        &held,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["causeway.dev/agent-cleanup"]}}"#,
    ])?;
    c.kubectl(&["delete", "podnetwork", "tiny", "--wait=false"])?;
    wait_for("the other NodeSubnets go", Duration::from_secs(30), || {
        let left = subnets(c, "tiny")?;
        ensure!(left.len() == 1, "{} left", left.len());
        Ok(())
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let still = c.kubectl(&[
        "get",
        "podnetwork",
        "tiny",
        "-o",
        "name",
        "--ignore-not-found",
    ])?;
    ensure!(
        !still.trim().is_empty(),
        "the PodNetwork went before its NodeSubnets"
    );
    c.kubectl(&[
        "patch",
        "nodesubnet",
        &held,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ])?;
    wait_for("the PodNetwork goes", Duration::from_secs(30), || {
        let out = c.kubectl(&[
            "get",
            "podnetwork",
            "tiny",
            "-o",
            "name",
            "--ignore-not-found",
        ])?;
        ensure!(out.trim().is_empty(), "still there");
        Ok(())
    })?;
    ensure!(subnets(c, "tiny")?.is_empty(), "NodeSubnets orphaned");
    Ok(())
}

/// GET `path` from the TCP metrics endpoint on `host` (127.0.0.1:8080 of its namespace, bound
/// by the leader only): "<status code>\n<body>".
fn tcp_get(c: &Cluster, host: &str, path: &str) -> Result<String> {
    c.exec(
        host,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:8080{path}"),
        ],
    )
    .map(|out| match out.rsplit_once('\n') {
        Some((body, code)) => format!("{code}\n{body}"),
        None => out,
    })
}

/// GET `path` from replica `identity` on `host` over its health socket (what a person gets
/// on the node, `curl --unix-socket`): "<status code>\n<body>".
fn socket_get(c: &Cluster, host: &str, identity: &str, path: &str) -> Result<String> {
    let socket = deploy::operator_socket(c, host, identity)
        .display()
        .to_string();
    causeway_e2e::cmd::run(std::process::Command::new("curl").args([
        "-sS",
        "--max-time",
        "5",
        "--unix-socket",
        &socket,
        "-w",
        "\n%{http_code}",
        &format!("http://localhost{path}"),
    ]))
    .map(|out| match out.rsplit_once('\n') {
        Some((body, code)) => format!("{code}\n{body}"),
        None => out,
    })
}

/// The kubelet's exec probe against replica `identity` on `host`: `causeway-operator probe
/// <check>`.
fn probe(c: &Cluster, host: &str, identity: &str, check: &str) -> Result<String> {
    let bin = causeway_e2e::controlplane::causeway_binary("causeway-operator")?;
    let socket = deploy::operator_socket(c, host, identity)
        .display()
        .to_string();
    causeway_e2e::cmd::run(std::process::Command::new(bin).args([
        "probe",
        check,
        "--health-socket",
        &socket,
    ]))
}

fn metrics(c: &Cluster) -> Result<()> {
    setup(c)?;
    let leader = leader(c)?;
    // The leader binds the TCP metrics address once it leads.
    let text = wait_for(
        "the leader serves /metrics",
        Duration::from_secs(10),
        || {
            let t = tcp_get(c, &leader, "/metrics")?;
            ensure!(t.starts_with("200\n"), "{t}");
            Ok(t)
        },
    )?;
    for want in [
        "causeway_operator_reconciles_total",
        "causeway_operator_leader 1",
        "causeway_operator_subnets_allocated{network=\"blue\"}",
        "causeway_operator_allocation_latency_seconds_count",
    ] {
        ensure!(
            text.contains(want),
            "/metrics on {leader} lacks {want}:\n{text}"
        );
    }
    // Health: every replica answers for itself on its own socket, through the same exec
    // probe the chart's kubelet runs.
    for check in ["live", "ready"] {
        let answer = probe(c, &leader, &leader, check)?;
        ensure!(answer.trim() == "ok", "probe {check} on {leader}: {answer}");
    }
    for path in ["/healthz", "/readyz"] {
        let answer = socket_get(c, &leader, &leader, path)?;
        ensure!(answer.starts_with("200\n"), "{path} on {leader}: {answer}");
    }
    // A standby (if one runs) is ready, reports leader 0 on its socket and binds no TCP port,
    // so two replicas can share a node.
    let standby = if leader == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let standby_runs = OPERATORS
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .iter()
        .any(|(h, p)| h == standby && p.alive());
    if standby_runs {
        ensure!(
            probe(c, standby, standby, "ready")?.trim() == "ok",
            "standby not ready"
        );
        let t = socket_get(c, standby, standby, "/metrics")?;
        ensure!(
            t.contains("causeway_operator_leader 0"),
            "standby claims to lead:\n{t}"
        );
        ensure!(
            tcp_get(c, standby, "/metrics").is_err(),
            "the standby on {standby} serves TCP metrics"
        );
    }
    two_replicas_on_one_node(c, &leader)
}

/// Two replicas on one node (a one-node cluster, host network): a second replica next to the
/// leader is ready on its own socket and binds no port; when the leader dies it leads and
/// binds the metrics port the leader freed.
fn two_replicas_on_one_node(c: &Cluster, leader: &str) -> Result<()> {
    let twin = format!("{leader}-twin");
    let lease = LEASE_SECONDS.to_string();
    let id = deploy::start_operator_as(
        c,
        leader,
        &twin,
        &["--lease-duration", &lease, "--lease-renew-grace", "2"],
    )?;
    let leader_process = {
        let mut operators = OPERATORS.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let found = operators
            .iter()
            .rev()
            .find(|(h, p)| h == leader && p.alive())
            .map(|(_, p)| p.clone());
        operators.push((leader.to_string(), id));
        found.context("the leader's process is not running")?
    };
    wait_for(
        "the second replica on the node is ready",
        Duration::from_secs(20),
        || {
            let answer = probe(c, leader, &twin, "ready")?;
            ensure!(answer.trim() == "ok", "{answer}");
            Ok(())
        },
    )?;
    let t = socket_get(c, leader, &twin, "/metrics")?;
    ensure!(
        t.contains("causeway_operator_leader 0"),
        "the twin claims to lead:\n{t}"
    );
    let t = tcp_get(c, leader, "/metrics")?;
    ensure!(
        t.contains("causeway_operator_leader 1"),
        "127.0.0.1:8080 on {leader} is not the leader's:\n{t}"
    );
    c.kill(&leader_process);
    wait_for(
        "the twin takes the Lease",
        Duration::from_secs(LEASE_SECONDS + 10),
        || expect_leader(c, &twin),
    )?;
    wait_for(
        "the twin serves /metrics on the freed port",
        Duration::from_secs(10),
        || {
            let t = tcp_get(c, leader, "/metrics")?;
            ensure!(t.contains("causeway_operator_leader 1"), "{t}");
            Ok(())
        },
    )?;
    Ok(())
}

/// Clusters where kube-controller-manager allocates `spec.podCIDR` run the operator with
/// `--use-node-pod-cidr`: each NodeSubnet then carries the node's podCIDR, and a podCIDR the
/// network cannot use is reported, not silently replaced.
fn node_pod_cidr(c: &Cluster) -> Result<()> {
    setup(c)?;
    let running: Vec<ProcId> = OPERATORS
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .drain(..)
        .map(|(_, p)| p)
        .collect();
    for p in &running {
        c.kill(p);
    }
    let nodes = pool_nodes(0..3, 56, "pc");
    add_nodes(c, &nodes)?;
    // What kube-controller-manager's node IPAM writes (podCIDR is set once, then immutable).
    for (node, cidr) in [
        ("pc-00", "10.130.5.0/24"),
        ("pc-01", "10.130.9.0/24"),
        ("pc-02", "10.131.0.0/24"),
    ] {
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        c.kubectl(&["patch", "node", node, "-p", &patch.to_string()])?;
    }
    start_operator_with(c, "node-a", &["--use-node-pod-cidr"])?;
    apply_network(c, "pc", "10.130.0.0/16", 24, "pc")?;
    let map = wait_for("podCIDR subnets", Duration::from_secs(40), || {
        let m = subnets(c, "pc")?;
        ensure!(m.len() == 2, "{} NodeSubnets: {m:?}", m.len());
        Ok(m)
    })?;
    for (node, want) in [("pc-00", "10.130.5.0/24"), ("pc-01", "10.130.9.0/24")] {
        let got = map
            .get(node)
            .with_context(|| format!("{node} has no subnet"))?;
        ensure!(
            got.cidr.to_string() == want,
            "{node}: {} instead of its podCIDR {want}",
            got.cidr
        );
    }
    let msg = expect_condition(c, "pc", "Degraded", "True", "InvalidNodePodCidr")?;
    ensure!(
        msg.contains("pc-02") && msg.contains("10.131.0.0/24"),
        "the message does not name the node and its podCIDR: {msg}"
    );
    Ok(())
}

/// The NodeSubnets of `network` by node: (name, uid, cidr, secondaryCidr, nodeAddress,
/// secondaryNodeAddress), every value as the API returns it.
fn dual_subnets(c: &Cluster, network: &str) -> Result<BTreeMap<String, [String; 6]>> {
    let mut map = BTreeMap::new();
    for item in &deploy::node_subnets(c, network)? {
        let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let spec = &item["spec"];
        map.insert(
            field(&spec["nodeName"]),
            [
                field(&item["metadata"]["name"]),
                field(&item["metadata"]["uid"]),
                field(&spec["cidr"]),
                field(&spec["secondaryCidr"]),
                field(&spec["nodeAddress"]),
                field(&spec["secondaryNodeAddress"]),
            ],
        );
    }
    Ok(map)
}

/// Issue #18: an IPv4 network becomes dual-stack by adding secondaryCidr; every node keeps its
/// NodeSubnet (same object, same IPv4 subnet) and gets an IPv6 /64 and, where it has one, its
/// IPv6 InternalIP; a node joining afterwards gets both at once.
fn dual_stack(c: &Cluster) -> Result<()> {
    setup(c)?;
    let ip = |s: &str| -> Result<std::net::IpAddr> { Ok(s.parse()?) };
    let nodes = [
        ("ds-00", vec![ip("192.168.57.10")?, ip("fd00:57::10")?]),
        ("ds-01", vec![ip("192.168.57.11")?, ip("fd00:57::11")?]),
        ("ds-02", vec![ip("192.168.57.12")?]),
    ];
    let register = |name: &str, addresses: &[std::net::IpAddr]| -> Result<()> {
        let doc = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"pool": "ds"}}});
        c.kubectl_stdin(&["apply", "-f", "-"], &doc.to_string())?;
        c.set_node_addresses(name, addresses)
    };
    for (name, addresses) in &nodes {
        register(name, addresses)?;
    }
    apply_network(c, "ds", "10.140.0.0/16", 24, "ds")?;
    let before = wait_for("IPv4 subnets", Duration::from_secs(30), || {
        let m = dual_subnets(c, "ds")?;
        ensure!(m.len() == 3, "{} NodeSubnets: {m:?}", m.len());
        Ok(m)
    })?;
    // No IPv6 subnet yet; the nodes' IPv6 InternalIPs are recorded all the same (the
    // underlay is dual-stack whatever the pods are).
    ensure!(
        before
            .iter()
            .all(|(node, [.., second_cidr, _, second_ip])| {
                second_cidr.is_empty() && (second_ip.is_empty() == (node == "ds-02"))
            }),
        "an IPv4 network on a dual-stack underlay: {before:?}"
    );

    let pn = json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
        "metadata": {"name": "ds"},
        "spec": {"cidr": "10.140.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
                 "secondaryCidr": "fd00:140::/56", "secondaryNodeSubnetPrefixLength": 64,
                 "nodeSelector": {"matchLabels": {"pool": "ds"}}}});
    c.kubectl_stdin(&["apply", "-f", "-"], &pn.to_string())?;
    let after = wait_for("IPv6 subnets added", Duration::from_secs(30), || {
        let m = dual_subnets(c, "ds")?;
        ensure!(
            m.values().all(|v| !v[3].is_empty()),
            "not every node has its secondaryCidr yet: {m:?}"
        );
        Ok(m)
    })?;
    let mut seconds = BTreeSet::new();
    for (node, [name, uid, cidr, second, address, second_address]) in &after {
        let [name0, uid0, cidr0, ..] = before.get(node).context("a node appeared")?;
        ensure!(
            (name, uid, cidr) == (name0, uid0, cidr0),
            "{node}'s NodeSubnet changed from {name0} {uid0} {cidr0} to {name} {uid} {cidr}"
        );
        let net: ipnet::Ipv6Net = second.parse()?;
        ensure!(
            net.prefix_len() == 64 && "fd00:140::/56".parse::<ipnet::Ipv6Net>()?.contains(&net),
            "{node}: {second} is not a /64 of fd00:140::/56"
        );
        ensure!(seconds.insert(second.clone()), "{second} handed out twice");
        let want = nodes
            .iter()
            .find(|(n, _)| n == node)
            .and_then(|(_, a)| a.get(1))
            .map(ToString::to_string)
            .unwrap_or_default();
        ensure!(
            *second_address == want && address.starts_with("192.168.57."),
            "{node}: addresses {address} / {second_address:?}, expected the IPv4 one / {want:?}"
        );
    }
    expect_event(c, "ds", "SecondarySubnetAllocated", "fd00:140:0:")?;
    let st = wait_for("dual-stack status", Duration::from_secs(20), || {
        let st = status(c, "ds")?;
        ensure!(
            st["ipFamilies"] == json!(["IPv4", "IPv6"]) && st["secondarySubnetsAllocated"] == 3,
            "status: {st}"
        );
        Ok(st)
    })?;
    ensure!(st["secondarySubnetsFree"] == 253, "status: {st}");
    let (_, _, message) = condition(c, "ds", "SubnetsExhausted")?;
    ensure!(
        message.contains("253 of 256 of secondaryCidr"),
        "SubnetsExhausted does not count the IPv6 range: {message}"
    );

    // A node joining a dual-stack network gets both subnets at once.
    register("ds-03", &[ip("192.168.57.13")?, ip("fd00:57::13")?])?;
    let joined = wait_for("ds-03 allocated", Duration::from_secs(30), || {
        dual_subnets(c, "ds")?
            .get("ds-03")
            .cloned()
            .context("not yet")
    })?;
    ensure!(
        joined[2].starts_with("10.140.")
            && joined[3].starts_with("fd00:140:0:")
            && joined[5] == "fd00:57::13",
        "ds-03 got {joined:?}"
    );
    Ok(())
}

/// Issue #18: an IPv6-only network over an IPv4 underlay: /64s of the range, NodeSubnets
/// named by the subnet's eight groups, nodeAddress the node's IPv4 InternalIP (its only one).
fn ipv6_only(c: &Cluster) -> Result<()> {
    setup(c)?;
    add_nodes(c, &pool_nodes(0..2, 58, "v6"))?;
    apply_network(c, "v6", "fd00:141::/56", 64, "v6")?;
    let map = wait_for("IPv6 subnets", Duration::from_secs(30), || {
        let m = dual_subnets(c, "v6")?;
        ensure!(m.len() == 2, "{} NodeSubnets: {m:?}", m.len());
        Ok(m)
    })?;
    let first = map.get("v6-00").context("v6-00 has no subnet")?;
    ensure!(
        first[0] == "v6-fd00-141-0-0-0-0-0-0-64"
            && first[2] == "fd00:141::/64"
            && first[4] == "192.168.58.10",
        "v6-00 got {first:?}"
    );
    let st = status(c, "v6")?;
    ensure!(st["ipFamilies"] == json!(["IPv6"]), "status: {st}");
    Ok(())
}

/// Issue #16, reliability: the operator is SIGKILLed while it allocates 500 nodes; a new one
/// finishes the job. Every node ends with exactly one subnet, no subnet is handed out twice,
/// and no NodeSubnet is left for a node that does not exist.
fn killed_mid_allocation(c: &Cluster) -> Result<()> {
    setup(c)?;
    const NODES: usize = 500;
    let nodes: Vec<TestNode> = (0..NODES)
        .map(|i| TestNode {
            name: format!("scale-{i:03}"),
            address: Some(Ipv4Addr::new(
                192,
                168,
                u8::try_from(100 + i / 200).unwrap_or(255),
                u8::try_from(10 + i % 200).unwrap_or(255),
            )),
            pool: "scale".into(),
        })
        .collect();
    add_nodes(c, &nodes)?;
    // Whatever earlier tests left running (an operator with --use-node-pod-cidr, say): one
    // plain operator, leading.
    let running = |ops: &Mutex<Vec<(String, ProcId)>>| -> Result<Vec<ProcId>> {
        Ok(ops
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .iter()
            .map(|(_, p)| p.clone())
            .filter(ProcId::alive)
            .collect())
    };
    for op in running(&OPERATORS)? {
        c.kill(&op);
    }
    start_operator(c, "node-a")?;
    wait_for("node-a leads", Duration::from_secs(30), || {
        expect_leader(c, "node-a")
    })?;
    // Every NodeSubnet, counted from one item and the count of the rest (the API server
    // gives that count only without a selector): cheap enough to poll while 500 are
    // written. The scale network's are those beyond what earlier tests left.
    let all = || -> Result<usize> {
        let out = c.kubectl(&[
            "get",
            "--raw",
            "/apis/causeway.dev/v1alpha1/nodesubnets?limit=1",
        ])?;
        let list: Value = serde_json::from_str(&out)?;
        let items = list["items"].as_array().map_or(0, Vec::len);
        let rest = list["metadata"]["remainingItemCount"].as_u64().unwrap_or(0);
        Ok(items + usize::try_from(rest)?)
    };
    let baseline = all()?;
    let count = || -> Result<usize> { Ok(all()?.saturating_sub(baseline)) };
    // A range no earlier test of this suite uses (an overlap would allocate nothing).
    apply_network(c, "scale", "10.150.0.0/15", 24, "scale")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let started = loop {
        let n = count()?;
        if n > 0 {
            break n;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no allocation 60 s after the network was created: {}",
            status(c, "scale")?
        );
    };
    // Kill every replica at once, mid-flight.
    for op in running(&OPERATORS)? {
        c.kill(&op);
    }
    std::thread::sleep(Duration::from_secs(1));
    let at_kill = count()?;
    eprintln!(
        "[measure] operator SIGKILLed with {at_kill} of {NODES} NodeSubnets written (first seen: {started})"
    );
    ensure!(
        at_kill < NODES,
        "every subnet was written before the kill ({at_kill}): nothing was tested"
    );
    start_operator(c, "node-a")?;
    let map = wait_for("every node allocated", Duration::from_secs(120), || {
        let n = count()?;
        ensure!(n >= NODES, "{n} NodeSubnets");
        subnets(c, "scale")
    })?;
    let total = deploy::node_subnets(c, "scale")?.len();
    ensure!(
        total == NODES && map.len() == NODES,
        "{total} NodeSubnets for {} nodes: a node got two (double allocation)",
        map.len()
    );
    check_disjoint_inside(&map, "10.150.0.0/15".parse()?, 24)?;
    ensure!(
        map.keys().all(|n| n.starts_with("scale-")),
        "a NodeSubnet for a node outside the pool: {:?}",
        map.keys()
            .filter(|n| !n.starts_with("scale-"))
            .collect::<Vec<_>>()
    );
    // Leaks: the status counts what is really held.
    wait_for("status counts", Duration::from_secs(30), || {
        let st = status(c, "scale")?;
        ensure!(
            st["subnetsAllocated"] == NODES && st["subnetsFree"] == 512 - NODES,
            "status {st}"
        );
        Ok(())
    })?;
    c.kubectl(&[
        "delete",
        "podnetwork",
        "scale",
        "--wait=true",
        "--timeout=120s",
    ])?;
    c.kubectl(&["delete", "nodes", "-l", "pool=scale", "--wait=false"])?;
    Ok(())
}
