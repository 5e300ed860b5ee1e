//! Dual-stack as users run it (issue #18): Causeway installed with `helm install` on real
//! kubelet + containerd nodes of a dual-stack underlay (`two_segments_dual_stack`: node-a..c
//! on lan-a, 192.168.50.0/24 + fd00:50::/64; node-d on lan-b behind r1; every kubelet
//! registers both InternalIPs, `--node-ip=<IPv4>,<IPv6>`), a dual-stack Overlay PodNetwork
//! (IPv4 `cidr`, IPv6 `secondaryCidr`) and the test Deployment: the pods the kubelets start get
//! both families from the agents' CNI config, reach each other over IPv6 across r1, and an
//! agent pod deleted with `kubectl delete pod` under a 20 ms `ping -6` loses nothing.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use causeway_e2e::install;
use causeway_e2e::topology::{Topology, presets};
use causeway_e2e::traffic::wait_for;
use causeway_e2e::workload::{self, PodInfo, pod_on};
use causeway_e2e::{Cluster, testing};
use serde_json::Value;

const NETWORK: &str = "dual";
const CIDR6: &str = "fd00:10:247::/56";
const APPS: &str = "apps";
const ECHO: &str = "echo";
/// One test pod per node.
const REPLICAS: u32 = 4;

fn main() -> ExitCode {
    testing::run_suite_with(
        "instds",
        topology,
        install::image_archives,
        vec![
            testing::test(
                "helm_install_and_a_dual_stack_network_give_kubelet_pods_both_families_and_they_reach_each_other_over_ipv6",
                dual_stack_up,
            ),
            testing::test(
                "deleting_an_agent_pod_under_a_20_ms_ping6_loses_nothing",
                agent_pod_deleted,
            ),
        ],
    )
}

fn topology() -> Topology {
    Topology {
        kubelet: true,
        ..presets::two_segments_dual_stack()
    }
}

/// The dual-stack Overlay network over every node.
fn network() -> Value {
    causeway_e2e::suite::pod_network(
        NETWORK,
        "10.247.0.0/16",
        "Overlay",
        serde_json::json!({
            "secondaryCidr": CIDR6,
            "secondaryNodeSubnetPrefixLength": 64,
        }),
    )
}

/// Installs the release (this build) unless it is there, applies the network and the test
/// Deployment; returns the pods once each has its IPv6 address.
fn ensure_up(c: &Cluster) -> Result<Vec<PodInfo>> {
    install::ensure_release(c)?;
    c.kubectl_stdin(&["apply", "-f", "-"], &network().to_string())?;
    wait_for(
        "every NodeSubnet Programmed",
        Duration::from_secs(90),
        || install::programmed_subnets(c, NETWORK),
    )?;
    workload::deploy_test_pods(c, APPS, ECHO, REPLICAS)?;
    wait_for(
        "every pod has an IPv6 address",
        Duration::from_secs(30),
        || {
            let pods = workload::pods(c, APPS, &format!("app={ECHO}"))?;
            ensure!(
                pods.len() == REPLICAS as usize && pods.iter().all(|p| p.ip6.is_some()),
                "pods: {pods:?}"
            );
            Ok(pods)
        },
    )
}

/// `count` pings over IPv6 from `from` (the host's iputils in the pod's network namespace) to
/// `to`'s IPv6 address: how many came back.
fn ping6(c: &Cluster, from: &PodInfo, to: &PodInfo, count: u32) -> Result<u32> {
    let dst = to
        .ip6
        .with_context(|| format!("{} has no IPv6 address", to.name))?;
    let out = workload::in_pod_netns(c, from, "ping")?
        .args([
            "-6",
            "-n",
            "-q",
            "-i",
            "0.2",
            "-W",
            "1",
            "-c",
            &count.to_string(),
        ])
        .arg(dst.to_string())
        .output()
        .context("running ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(causeway_e2e::traffic::parse_ping_summary(&text)
        .with_context(|| format!("ping printed no summary: {text}"))?
        .received)
}

fn dual_stack_up(c: &Cluster) -> Result<()> {
    let started = Instant::now();
    let pods = ensure_up(c)?;
    println!(
        "[measure] helm install, the dual-stack network and {REPLICAS} kubelet pods with both families: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for p in &pods {
        let ip6 = p.ip6.context("no IPv6")?;
        ensure!(
            ip6.to_string().starts_with("fd00:10:247:"),
            "{} ({}) has IPv6 address {ip6}, outside {CIDR6}",
            p.name,
            p.node
        );
        ensure!(p.ip.is_some(), "{} has no IPv4 address", p.name);
    }
    // Every pod reaches every other over IPv6 (retried while a new address finishes DAD),
    // node-d's across r1; and over IPv4 with TCP as before.
    let mut pairs = 0;
    for from in &pods {
        for to in pods.iter().filter(|t| t.node != from.node) {
            wait_for("IPv6 ping", Duration::from_secs(10), || {
                let got = ping6(c, from, to, 2)?;
                ensure!(got == 2, "{got} of 2 came back");
                Ok(())
            })
            .with_context(|| {
                format!("{} ({}) -> {} ({})", from.name, from.node, to.name, to.node)
            })?;
            pairs += 1;
        }
    }
    let failures = workload::exec_reach(
        c,
        pod_on(&pods, "node-d")?,
        &[pod_on(&pods, "node-a")?.ip.context("no IPv4")?],
    );
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    println!("[measure] {pairs} kubelet pod pairs across nodes ping over IPv6 (node-d behind r1)");
    Ok(())
}

/// node-a's agent pod deleted with kubectl under a 20 ms `ping -6` from node-d's pod to
/// node-a's (across r1): the running dataplane carries on while the agent is away.
fn agent_pod_deleted(c: &Cluster) -> Result<()> {
    let pods = ensure_up(c)?;
    let (from, to) = (pod_on(&pods, "node-d")?, pod_on(&pods, "node-a")?);
    let dst = to.ip6.context("no IPv6")?;
    let ping = workload::continuous_ping6(c, from, dst, Duration::from_millis(20))?;
    std::thread::sleep(Duration::from_secs(1));
    let restarted = install::delete_agent_pod(c, "node-a");
    std::thread::sleep(Duration::from_secs(3));
    let report = ping.stop()?;
    let restart = restarted?;
    println!(
        "[measure] node-a's agent pod deleted under ping -6 every 20 ms {} (node-d) -> {dst} (node-a): old pod gone {:.1}s, new pod Ready {:.1}s; {} sent, {} lost, longest gap {:?}",
        from.name,
        restart.stopped.as_secs_f64(),
        restart.ready.as_secs_f64(),
        report.transmitted,
        report.lost(),
        report.max_gap
    );
    report.expect_none_lost(100)?;
    install::programmed_subnets(c, NETWORK).map(|_| ())
}
