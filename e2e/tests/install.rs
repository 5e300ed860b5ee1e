//! Causeway installed the way users install it (issue #13): real kubelet + containerd nodes
//! (node-a..c on lan-a, node-d behind router r1), the images imported into every node's
//! containerd, `helm install` of charts/causeway, the example Overlay network, and a
//! Deployment of ordinary pods that the kubelets attach through the CNI config the agents
//! wrote. Then what users do next: agent restarts by `kubectl delete pod`, `helm upgrade` to
//! a new build, and both uninstall orders — always under real traffic.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use causeway_e2e::cluster::Cluster;
use causeway_e2e::controlplane::workspace_root;
use causeway_e2e::helm::Release;
use causeway_e2e::install::{
    self, Pings, Upgrade, causeway_pods, current_version, image_archives, release,
};
use causeway_e2e::topology::{Topology, presets};
use causeway_e2e::traffic::wait_for;
use causeway_e2e::workload::{self, PodInfo};
use causeway_e2e::{deploy, kubelet, suite, testing};
use serde_json::Value;

const NETWORK: &str = "overlay";
const APPS: &str = "apps";
const ECHO: &str = "echo";
/// Two test pods per node.
const REPLICAS: u32 = 8;
/// Continuous pings under disruption: from node-a to the same segment and across the router.
const PING_PAIRS: &[(&str, &str)] = &[("node-a", "node-b"), ("node-a", "node-d")];

fn main() -> ExitCode {
    testing::run_suite_with(
        "install",
        topology,
        image_archives,
        vec![
            testing::test(
                "helm_install_runs_operator_and_agents_and_deployment_pods_get_addresses_on_every_node",
                install,
            ),
            testing::test(
                "every_deployment_pod_reaches_every_other_across_nodes_and_the_router",
                matrix,
            ),
            testing::test(
                "the_chart_operator_gives_each_client_its_own_account_and_refuses_the_api_servers_address",
                client_credentials_in_pods,
            ),
            testing::test(
                "logs_carry_no_colour_codes_and_the_operator_logs_json_objects",
                logs,
            ),
            testing::test(
                "prometheus_scrapes_every_agent_on_its_node_address_and_the_metrics_agree_with_the_nodesubnets",
                prometheus_scrapes_agents,
            ),
            testing::test(
                "kubectl_causeway_trace_verify_agrees_with_each_nodes_kernel_and_names_a_route_deleted_by_hand",
                trace_verify,
            ),
            testing::test(
                "deleting_agent_pods_with_kubectl_under_continuous_ping_loses_nothing",
                agent_restart,
            ),
            testing::test(
                "both_operator_replicas_run_ready_on_one_node_and_one_leads",
                operators_on_one_node,
            ),
            testing::test(
                "helm_upgrade_to_a_new_build_under_continuous_ping_loses_nothing_one_node_at_a_time",
                upgrade,
            ),
            testing::test(
                "uninstalling_networks_first_then_the_release_leaves_nothing_on_any_node",
                uninstall_in_order,
            ),
            testing::test(
                "helm_uninstall_first_keeps_pods_talking_and_reinstalling_finishes_the_deletion",
                uninstall_release_first,
            ),
        ],
    )
}

/// `kubectl logs` of the release's pods as users read them: the agents' text without terminal
/// colour codes (they write to a pipe), and the operator's `--log-format json` (the release
/// sets it) one JSON object per line with a level, a target and its fields.
fn logs(c: &Cluster) -> Result<()> {
    ensure_installed(c)?;
    let (operators, agents) = causeway_pods(c)?;
    for agent in &agents {
        let text = c.kubectl(&["logs", "-n", deploy::NAMESPACE, &agent.name])?;
        ensure!(
            text.lines().count() > 3 && text.contains("INFO"),
            "{}: {text}",
            agent.name
        );
        ensure!(
            !text.contains('\u{1b}'),
            "{}'s log has terminal escape codes:\n{text}",
            agent.name
        );
    }
    let mut messages = 0;
    for operator in &operators {
        let text = c.kubectl(&["logs", "-n", deploy::NAMESPACE, &operator.name])?;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: a log line is not JSON: {line:?}", operator.name))?;
            ensure!(
                v["level"].is_string() && v["target"].is_string() && v["timestamp"].is_string(),
                "{}: {line}",
                operator.name
            );
            if v["fields"]["message"].is_string() {
                messages += 1;
            }
        }
    }
    ensure!(
        messages > 2,
        "only {messages} JSON messages from the operators"
    );
    Ok(())
}

/// A real Prometheus (Debian's) in node-a's namespace scrapes the four agents at their node
/// addresses (the chart's `nodeAgent.metrics`): every target is up and names this build, every
/// node reports its dataplane programmed, the routes each agent says it holds are the routes
/// its NodeSubnet's status counts, the heartbeat is fresh, and the exposition passes
/// `promtool check metrics`.
fn prometheus_scrapes_agents(c: &Cluster) -> Result<()> {
    ensure_installed(c)?;
    let version = current_version()?;
    let nodes = ["node-a", "node-b", "node-c", "node-d"];
    let mut targets = Vec::new();
    for node in nodes {
        let address = suite::node_address(c, node)?;
        targets.push(std::net::SocketAddr::from((
            address,
            install::AGENT_METRICS_PORT,
        )));
    }
    let server = causeway_e2e::prometheus::start(c, "node-a", "causeway-node-agent", &targets)?;
    let up = wait_for("every agent scraped", Duration::from_secs(60), || {
        let up = server.query(c, "up{job=\"causeway-node-agent\"} == 1")?;
        ensure!(
            up.len() == nodes.len(),
            "{} of {} targets up: {up:?}",
            up.len(),
            nodes.len()
        );
        Ok(up)
    })?;
    println!("up: {up:?}");
    let built = server.query(
        c,
        &format!("causeway_agent_build_info{{version=\"{version}\"}}"),
    )?;
    ensure!(
        built.len() == nodes.len(),
        "build_info of {version}: {built:?}"
    );
    let programmed = server.query(c, "causeway_agent_dataplane_programmed == 1")?;
    ensure!(
        programmed.len() == nodes.len(),
        "programmed: {programmed:?}"
    );
    let fresh = server.query(
        c,
        "causeway_agent_heartbeat_age_seconds >= 0 and causeway_agent_heartbeat_age_seconds < 40",
    )?;
    ensure!(fresh.len() == nodes.len(), "heartbeats: {fresh:?}");
    let passes = server.query(c, "sum(causeway_agent_pass_duration_seconds_count)")?;
    ensure!(
        passes
            .first()
            .is_some_and(|(_, n)| *n >= nodes.len() as f64),
        "passes: {passes:?}"
    );
    let applied = server.query(c, "sum(causeway_agent_operations_total)")?;
    ensure!(
        applied.first().is_some_and(|(_, n)| *n > 0.0),
        "operations: {applied:?}"
    );
    // The agents' route counts against what their NodeSubnets report (both move with each
    // resync: compared until they agree).
    wait_for(
        "metrics and NodeSubnets agree",
        Duration::from_secs(60),
        || {
            let routes = server.query(c, "causeway_agent_programmed_objects{kind=\"route\"}")?;
            let subnets: Value =
                serde_json::from_str(&c.kubectl(&["get", "nodesubnets", "-o", "json"])?)?;
            for (node, target) in nodes.iter().zip(&targets) {
                let status = subnets["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["spec"]["nodeName"] == *node)
                    .with_context(|| format!("no NodeSubnet of {node}"))?;
                let want = status["status"]["routes"]
                    .as_f64()
                    .context("no status.routes")?;
                let got = routes
                    .iter()
                    .find(|(labels, _)| labels["instance"] == target.to_string())
                    .map(|(_, v)| *v)
                    .with_context(|| format!("no route gauge from {target}"))?;
                ensure!(
                    got == want && got >= 3.0,
                    "{node}: the agent reports {got} routes, its NodeSubnet {want}"
                );
            }
            Ok(())
        },
    )?;
    // The exposition itself, through Prometheus's own linter.
    let text = c.exec(
        "node-a",
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://{}/metrics", targets[1]),
        ],
    )?;
    ensure!(text.contains("causeway_agent_build_info"), "{text}");
    let promtool = causeway_e2e::prometheus::promtool()?;
    let lint = causeway_e2e::cmd::run_stdin(
        std::process::Command::new(&promtool).args(["check", "metrics"]),
        causeway_e2e::prometheus::classic_text(&text).as_bytes(),
    )?;
    ensure!(lint.trim().is_empty(), "promtool check metrics: {lint}");
    c.stop(&server.id);
    Ok(())
}

/// `kubectl causeway` against a Helm install on kubelet nodes, as users run it: `status` is
/// clean; `trace --verify` between Deployment pods on node-a and node-d asks both nodes'
/// agents (port-forwarded to their pods) and their kernels agree hop by hop; with the route
/// to node-d's pods deleted by hand on node-a, `--verify` exits 1 naming the difference (the
/// agent repairs it at its next resync).
fn trace_verify(c: &Cluster) -> Result<()> {
    let pods = ensure_installed(c)?;
    let status = suite::kubectl_causeway(c, &["status"])?;
    println!("{}", status.stdout);
    ensure!(status.code == 0, "{}", status.stdout);
    let a = pods
        .iter()
        .find(|p| p.node == "node-a")
        .context("no pod on node-a")?;
    let d = pods
        .iter()
        .find(|p| p.node == "node-d")
        .context("no pod on node-d")?;
    let (a_name, d_name) = (format!("{APPS}/{}", a.name), format!("{APPS}/{}", d.name));
    let run = suite::kubectl_causeway(c, &["trace", &a_name, &d_name, "--verify"])?;
    println!("{}", run.stdout);
    ensure!(
        run.code == 0,
        "--verify found a difference:\n{}{}",
        run.stdout,
        run.stderr
    );
    let d_ip = d.ip.context("no pod address")?;
    let d_addr = suite::node_address(c, "node-d")?;
    run.expect_all(&[
        format!("verified: ip route get {d_ip} on node-a: dev cw-vx1 via"),
        format!("fdb → {d_addr}"),
        format!("verified: ip route get {d_ip} on node-d: dev cw-br0"),
    ])?;
    let subnet = install::programmed_subnets(c, NETWORK)?
        .get("node-d")
        .context("no subnet of node-d")?
        .to_string();
    c.exec("node-a", "ip", &["route", "del", &subnet])?;
    let broken = suite::kubectl_causeway(c, &["trace", &a_name, &d_name, "--verify"]);
    // Whatever the check found, the agent's next resync (the chart's 30 s) puts the route
    // back before the tests after this one run, and --verify agrees again.
    let repaired = wait_for("the route repaired", Duration::from_secs(45), || {
        let run = suite::kubectl_causeway(c, &["trace", &a_name, &d_name, "--verify"])?;
        ensure!(run.code == 0, "{}", run.stdout);
        Ok(())
    });
    let broken = broken?;
    println!("{}", broken.stdout);
    ensure!(
        broken.code == 1
            && broken.stdout.contains(&format!(
                "DIFFERS: ip route get {d_ip} on node-a: no route (Network is unreachable); the trace expects dev cw-vx1"
            )),
        "--verify did not name the missing route:\n{}",
        broken.stdout
    );
    repaired
}

fn topology() -> Topology {
    Topology {
        kubelet: true,
        ..presets::two_segments()
    }
}

fn wait_network_ready(c: &Cluster) -> Result<()> {
    suite::wait_network_ready(c, NETWORK, 60)
}

fn apply_example_network(c: &Cluster) -> Result<()> {
    let example = workspace_root().join("docs/examples/podnetwork-overlay.yaml");
    c.kubectl(&["apply", "-f", &example.display().to_string()])?;
    Ok(())
}

/// Installs the release (this build), the example network and the test Deployment, unless
/// they are there already; returns the test pods.
fn ensure_installed(c: &Cluster) -> Result<Vec<PodInfo>> {
    install::ensure_release(c)?;
    apply_example_network(c)?;
    wait_for(
        "every NodeSubnet Programmed",
        Duration::from_secs(90),
        || install::programmed_subnets(c, NETWORK),
    )?;
    workload::deploy_test_pods(c, APPS, ECHO, REPLICAS)
}

fn install(c: &Cluster) -> Result<()> {
    let version = current_version()?;
    let started = Instant::now();
    let out = release(&version).install(c)?;
    let installed = started.elapsed();
    println!("{out}");
    // The operator: 2 replicas Ready (even when they share a node), one leading.
    let (operators, agents) = causeway_pods(c)?;
    ensure!(
        operators.len() == 2 && operators.iter().all(|p| p.ready),
        "operator pods: {operators:?}"
    );
    // One Ready agent on every node, including node-d behind the router.
    let agent_nodes: Vec<&str> = agents.iter().map(|p| p.node.as_str()).collect();
    ensure!(
        agent_nodes == ["node-a", "node-b", "node-c", "node-d"] && agents.iter().all(|p| p.ready),
        "agent pods: {agents:?}"
    );
    // kubectl logs works on the release's pods and shows the version that runs.
    let logs = c.kubectl(&["logs", "-n", deploy::NAMESPACE, &agents[0].name])?;
    ensure!(
        logs.contains(&version),
        "the agent's log does not name version {version}:\n{logs}"
    );
    // Nodes stay NotReady until a network gives them a CNI config.
    apply_example_network(c)?;
    let subnets = wait_for(
        "every NodeSubnet Programmed",
        Duration::from_secs(90),
        || install::programmed_subnets(c, NETWORK),
    )?;
    let programmed = started.elapsed();
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "node",
        "--all",
        "--timeout=60s",
    ])?;
    let pods = workload::deploy_test_pods(c, APPS, ECHO, REPLICAS)?;
    let pods_ready = started.elapsed();
    println!("{}", c.kubectl(&["get", "pods", "-n", APPS, "-o", "wide"])?);
    // Every pod's address comes from its own node's NodeSubnet; two pods per node.
    for p in &pods {
        let ip = p.ip.context("pod without an address")?;
        let subnet = subnets
            .get(&p.node)
            .with_context(|| format!("no subnet for {}", p.node))?;
        ensure!(
            subnet.contains(&ip),
            "pod {} on {} has {ip}, outside its node's subnet {subnet}",
            p.name,
            p.node
        );
    }
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &pods {
        *per_node.entry(p.node.as_str()).or_default() += 1;
    }
    ensure!(
        per_node.len() == 4 && per_node.values().all(|n| *n == 2),
        "pods per node: {per_node:?}"
    );
    // kubectl exec works on ordinary pods.
    let hostname = workload::exec(c, &pods[0], &["hostname"])?;
    ensure!(hostname.trim() == pods[0].name, "hostname {hostname:?}");
    println!(
        "helm install --wait: {:.1}s; every NodeSubnet Programmed: {:.1}s; {REPLICAS} pods Ready: {:.1}s (from the start of helm install)",
        installed.as_secs_f64(),
        programmed.as_secs_f64(),
        pods_ready.as_secs_f64()
    );
    Ok(())
}

fn matrix(c: &Cluster) -> Result<()> {
    let pods = ensure_installed(c)?;
    let ips: Vec<Ipv4Addr> = pods.iter().filter_map(|p| p.ip).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|from| {
                let to: Vec<Ipv4Addr> = ips
                    .iter()
                    .copied()
                    .filter(|ip| Some(*ip) != from.ip)
                    .collect();
                s.spawn(move || workload::exec_reach(c, from, &to))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["a checker thread panicked".into()])
            })
            .collect()
    });
    ensure!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}",
        failures.len(),
        2 * pods.len() * (pods.len() - 1),
        failures.join("\n")
    );
    println!(
        "{} pods on 4 nodes: {} pings and {} TCP echoes, all answered",
        pods.len(),
        pods.len() * (pods.len() - 1),
        pods.len() * (pods.len() - 1)
    );
    Ok(())
}

fn agent_restart(c: &Cluster) -> Result<()> {
    let pods = ensure_installed(c)?;
    let pings = Pings::start(c, &pods, PING_PAIRS)?;
    for node in ["node-a", "node-d"] {
        install::delete_agent_pod(c, node)?;
    }
    // The new agents have taken over: the network is Ready again.
    wait_network_ready(c)?;
    pings.stop()
}

/// Both operator replicas on one node, as on a one-node cluster: host networking with no
/// container ports (no implicit hostPort), health on per-pod Unix sockets, metrics bound by
/// the leader only.
fn operators_on_one_node(c: &Cluster) -> Result<()> {
    ensure_installed(c)?;
    let version = current_version()?;
    let pinned = Release::default_with(&[
        ("image.tag", &version),
        ("image.pullPolicy", "Never"),
        ("operator.nodeSelector.kubernetes\\.io/hostname", "node-b"),
    ]);
    pinned.upgrade(c)?;
    // The rollout is complete once the new replicas are available; the old ones may still
    // be terminating for a moment.
    let operators = wait_for(
        "both operator replicas Ready on node-b",
        Duration::from_secs(60),
        || {
            let (operators, _) = causeway_pods(c)?;
            ensure!(
                operators.len() == 2 && operators.iter().all(|p| p.ready && p.node == "node-b"),
                "operator pods: {operators:?}"
            );
            Ok(operators)
        },
    )?;
    // One leads (the Lease names it; a replaced leader releases the Lease, and a new one
    // takes it within the lease duration) and only it serves /metrics on 127.0.0.1:8080.
    let holder = wait_for("a new replica leads", Duration::from_secs(40), || {
        let holder = c.kubectl(&[
            "get",
            "lease",
            "-n",
            deploy::NAMESPACE,
            "causeway-operator",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?;
        ensure!(
            operators.iter().any(|p| p.name == holder),
            "the Lease holder {holder:?} is not one of {operators:?}"
        );
        Ok(holder)
    })?;
    let metrics = wait_for("the leader's /metrics", Duration::from_secs(30), || {
        kubelet::node_exec(
            c,
            "node-b",
            "curl",
            &["-sf", "http://127.0.0.1:8080/metrics"],
        )
    })?;
    ensure!(
        metrics.contains("causeway_operator_leader 1"),
        "the metrics on node-b are not the leader's:\n{metrics}"
    );
    println!(
        "operator replicas {} and {} Ready on node-b; {holder} leads and serves /metrics",
        operators[0].name, operators[1].name
    );
    // Back to the default placement.
    release(&version).upgrade(c)?;
    Ok(())
}

/// Issue #16 with the chart as installed: the operator runs in a pod, where its client
/// configuration names only the `kubernetes` Service's cluster IP, so it learns the API
/// server's own address from the `default/kubernetes` EndpointSlices (RBAC from the chart); a
/// ClientJoin client taking that address is refused with a reason naming it. Each listed
/// client gets its own ServiceAccount in the chart's clients' namespace, and a client taken
/// off the gateway loses it.
fn client_credentials_in_pods(c: &Cluster) -> Result<()> {
    ensure_installed(c)?;
    let api_server = c.topology.control_plane.address.to_string();
    let gateway = |clients: &[(&str, &str, &str)]| {
        let clients: Vec<Value> = clients
            .iter()
            .map(|(n, a, o)| serde_json::json!({"name": n, "address": a, "overlayAddress": o}))
            .collect();
        serde_json::json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "OverlayGateway",
            "metadata": {"name": "install-join"},
            "spec": {"network": NETWORK, "strategy": "ClientJoin",
                "clientJoin": {"clients": clients}}})
        .to_string()
    };
    let both = [
        ("laptop", "192.168.50.100", api_server.as_str()),
        ("desktop", "192.168.50.101", "10.250.0.101"),
    ];
    c.kubectl_stdin(&["apply", "-f", "-"], &gateway(&both))?;
    let result = (|| -> Result<()> {
        let message = wait_for(
            "the gateway refuses laptop's overlayAddress",
            Duration::from_secs(30),
            || {
                let st: Value = serde_json::from_str(&c.kubectl(&[
                    "get",
                    "overlaygateway",
                    "install-join",
                    "-o",
                    "json",
                ])?)?;
                let ready = st["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "Ready")
                    .cloned()
                    .context("no Ready condition yet")?;
                let message = ready["message"].as_str().unwrap_or_default().to_string();
                ensure!(
                    ready["status"] == "False"
                        && ready["reason"] == "AddressInUse"
                        && message.contains(&api_server)
                        && message.contains("the API server's address"),
                    "Ready: {ready}"
                );
                Ok(message)
            },
        )?;
        println!("operator in a pod: {message}");
        for client in ["laptop", "desktop"] {
            deploy::wait_client_account(c, "install-join", client, true)?;
        }
        c.kubectl_stdin(&["apply", "-f", "-"], &gateway(&both[1..]))?;
        deploy::wait_client_account(c, "install-join", "laptop", false)?;
        Ok(())
    })();
    c.kubectl(&[
        "delete",
        "overlaygateway",
        "install-join",
        "--ignore-not-found",
    ])?;
    result
}

fn upgrade(c: &Cluster) -> Result<()> {
    let pods = ensure_installed(c)?;
    let subnets_before = deploy::node_subnets(c, NETWORK)?;
    let upgrade = Upgrade::prepare(c)?;
    let pings = Pings::start(c, &pods, PING_PAIRS)?;
    let rollout = upgrade.run(c);
    // The pings' numbers first: they matter most when the rollout failed.
    pings.stop()?;
    rollout?;
    // Every Causeway pod now runs the new build, and says so.
    upgrade.expect_done(c)?;
    // The CRD change of the new chart is in the cluster; the objects are untouched.
    let columns = c.kubectl(&[
        "get",
        "crd",
        "podnetworks.causeway.dev",
        "-o",
        "jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}",
    ])?;
    ensure!(
        columns.contains("Upgraded"),
        "CRD not upgraded: columns {columns}"
    );
    let subnets_after = deploy::node_subnets(c, NETWORK)?;
    let key = |v: &Vec<Value>| -> Vec<(String, String, String)> {
        let mut k: Vec<_> = v
            .iter()
            .map(|n| {
                (
                    n["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    n["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    n["spec"]["cidr"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        k.sort();
        k
    };
    ensure!(
        key(&subnets_before) == key(&subnets_after),
        "NodeSubnets changed in the upgrade"
    );
    wait_network_ready(c)?;
    Ok(())
}

/// What Causeway left on `node`: `cw-*` links, proto-249 routes, nft tables, CNI files.
fn leftovers(c: &Cluster, node: &str) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let links = kubelet::node_exec(c, node, "ip", &["-o", "link", "show"])?;
    left.extend(
        links
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
            .filter(|n| n.starts_with("cw-"))
            .map(|n| format!("link {n}")),
    );
    let routes = kubelet::node_exec(c, node, "ip", &["route", "show", "proto", "249"])?;
    left.extend(routes.lines().map(|r| format!("route {r}")));
    let nexthops = kubelet::node_exec(c, node, "ip", &["nexthop", "show", "proto", "249"])?;
    left.extend(
        nexthops
            .lines()
            .filter(|n| !n.trim().is_empty())
            .map(|n| format!("nexthop {n}")),
    );
    let tables = kubelet::node_exec(c, node, "nft", &["list", "tables"])?;
    left.extend(
        tables
            .lines()
            .filter(|t| t.contains("causeway"))
            .map(|t| t.to_string()),
    );
    let cni = kubelet::node_exec(c, node, "ls", &["-A", "/etc/cni/net.d"])?;
    left.extend(
        cni.lines()
            .filter(|f| f.contains("causeway"))
            .map(|f| format!("/etc/cni/net.d/{f}")),
    );
    Ok(left)
}

fn expect_clean_nodes(c: &Cluster) -> Result<()> {
    let mut problems = Vec::new();
    for n in &topology().nodes {
        for l in leftovers(c, &n.name)? {
            problems.push(format!("{}: {l}", n.name));
        }
    }
    ensure!(problems.is_empty(), "left behind:\n{}", problems.join("\n"));
    Ok(())
}

/// Fails while any Causeway object is left (none may hang on a finalizer).
fn expect_no_networks(c: &Cluster) -> Result<()> {
    let left = c.kubectl(&[
        "get",
        "podnetworks,nodesubnets,overlaygateways",
        "-o",
        "name",
    ])?;
    ensure!(left.trim().is_empty(), "still there: {left}");
    Ok(())
}

fn delete_test_pods(c: &Cluster) -> Result<()> {
    c.kubectl(&[
        "delete",
        "namespace",
        APPS,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    ])?;
    Ok(())
}

fn uninstall_in_order(c: &Cluster) -> Result<()> {
    ensure_installed(c)?;
    // The documented order (docs/install.md): workloads off the pod network, then the
    // networks (the operator and agents clean every node), then the release.
    delete_test_pods(c)?;
    let started = Instant::now();
    c.kubectl(&[
        "delete",
        "podnetworks",
        "--all",
        "--wait=true",
        "--timeout=120s",
    ])?;
    wait_for(
        "every Causeway object gone",
        Duration::from_secs(60),
        || expect_no_networks(c),
    )?;
    let networks_gone = started.elapsed();
    let rel = Release::default_with(&[]);
    rel.uninstall(c)?;
    wait_for("Causeway pods gone", Duration::from_secs(60), || {
        let (o, a) = causeway_pods(c)?;
        ensure!(
            o.is_empty() && a.is_empty(),
            "{} operators, {} agents left",
            o.len(),
            a.len()
        );
        Ok(())
    })?;
    expect_clean_nodes(c)?;
    // The CRDs stay (`helm.sh/resource-policy: keep`): deleting them is the user's last step.
    c.kubectl(&["get", "crd", "podnetworks.causeway.dev", "-o", "name"])?;
    println!(
        "networks deleted and every node clean in {:.1}s; release removed; CRDs kept",
        networks_gone.as_secs_f64()
    );
    Ok(())
}

fn uninstall_release_first(c: &Cluster) -> Result<()> {
    let pods = ensure_installed(c)?;
    let pings = Pings::start(c, &pods, PING_PAIRS)?;
    let rel = Release::default_with(&[]);
    rel.uninstall(c)?;
    // Without Causeway the dataplane stays as it was: pods keep talking.
    std::thread::sleep(Duration::from_secs(2));
    pings.stop()?;
    // Deleting the network now only marks it: the operator's finalizer waits for Causeway.
    delete_test_pods(c)?;
    c.kubectl(&["delete", "podnetwork", NETWORK, "--wait=false"])?;
    std::thread::sleep(Duration::from_secs(3));
    let pn = c.kubectl(&["get", "podnetwork", NETWORK, "-o", "json"])?;
    let pn: Value = serde_json::from_str(&pn)?;
    ensure!(
        !pn["metadata"]["deletionTimestamp"].is_null(),
        "the PodNetwork is not being deleted: {pn}"
    );
    // Recovery (docs/install.md): install the release again; it finishes the deletion.
    let started = Instant::now();
    release(&current_version()?).install(c)?;
    wait_for(
        "the network deleted by the reinstalled release",
        Duration::from_secs(90),
        || expect_no_networks(c),
    )?;
    expect_clean_nodes(c)?;
    println!(
        "reinstalled release finished the deletion in {:.1}s; nodes clean",
        started.elapsed().as_secs_f64()
    );
    rel.uninstall(c)?;
    Ok(())
}
