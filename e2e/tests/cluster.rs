//! The test cluster itself (issue #3): control plane, topology, CNI pods, traffic helpers and
//! crash clean-up, all against real parts.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use causeway_e2e::bird::{self, Bird, Neighbour};
use causeway_e2e::controlplane::Binaries;
use causeway_e2e::topology::presets;
use causeway_e2e::traffic::{self, ContinuousPing};
use causeway_e2e::{Cluster, pods, state, testing};

fn main() -> ExitCode {
    testing::run_suite(
        "cluster",
        presets::two_segments,
        vec![
            testing::test(
                "control_plane_is_ready_and_serves_the_pinned_version",
                control_plane_ready,
            ),
            testing::test(
                "a_crd_installs_and_a_custom_object_is_created_read_and_deleted",
                crd_round_trip,
            ),
            testing::test(
                "nodes_are_registered_with_their_internal_ip_like_a_kubelet_would",
                nodes_registered,
            ),
            testing::test(
                "a_process_in_a_node_namespace_reaches_the_api_server_over_the_underlay",
                node_process_reaches_api,
            ),
            testing::test(
                "nodes_on_one_segment_reach_each_other_and_the_client",
                same_segment,
            ),
            testing::test(
                "nodes_on_different_segments_reach_each_other_only_through_the_router",
                cross_segment,
            ),
            testing::test(
                "a_cni_pod_gets_an_address_from_the_node_subnet_and_reaches_its_gateway",
                cni_pod,
            ),
            testing::test(
                "tcp_checks_pass_and_the_loss_counter_sees_a_cut_link",
                traffic_helpers,
            ),
            testing::test(
                "a_killed_harness_leaves_leftovers_that_the_next_start_removes",
                killed_harness,
            ),
            testing::test(
                "a_dual_stack_topology_comes_up_closed_and_routes_both_families_through_the_router",
                dual_stack,
            ),
            testing::test(
                "an_ipv6_only_topology_comes_up_closed_and_a_bird_router_learns_an_ipv6_prefix",
                ipv6_only,
            ),
        ],
    )
}

fn control_plane_ready(c: &Cluster) -> Result<()> {
    let ready = c.kubectl(&["get", "--raw", "/readyz"])?;
    ensure!(ready.trim() == "ok", "/readyz said {ready:?}");
    let version: serde_json::Value = serde_json::from_str(&c.kubectl(&["version", "-o", "json"])?)?;
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or_default();
    let pinned = Binaries::pinned_version()?;
    ensure!(
        server == pinned,
        "server reports {server:?}, pinned release is {pinned}"
    );
    Ok(())
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.causeway.dev}
spec:
  group: e2e.causeway.dev
  scope: Cluster
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"#;

fn crd_round_trip(c: &Cluster) -> Result<()> {
    c.kubectl_stdin(&["apply", "-f", "-"], WIDGET_CRD)?;
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/widgets.e2e.causeway.dev",
    ])?;
    let obj =
        "apiVersion: e2e.causeway.dev/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n";
    traffic::wait_for("the new kind is served", Duration::from_secs(20), || {
        c.kubectl_stdin(&["create", "-f", "-"], obj)
    })?;
    let size = c.kubectl(&["get", "widget", "w1", "-o", "jsonpath={.spec.size}"])?;
    ensure!(size == "3", "read back size {size:?}");
    // The schema is enforced: a size below the minimum is rejected.
    let bad =
        "apiVersion: e2e.causeway.dev/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: 0}\n";
    let err = c
        .kubectl_stdin(&["create", "-f", "-"], bad)
        .expect_err("size 0 must be rejected");
    ensure!(
        format!("{err:#}").contains("spec.size"),
        "unexpected rejection: {err:#}"
    );
    c.kubectl(&["delete", "widget", "w1", "--wait=true"])?;
    let gone = c.kubectl(&["get", "widget", "w1", "--ignore-not-found", "-o", "name"])?;
    ensure!(gone.trim().is_empty(), "w1 still there: {gone}");
    c.kubectl(&["delete", "crd", "widgets.e2e.causeway.dev"])?;
    Ok(())
}

fn nodes_registered(c: &Cluster) -> Result<()> {
    let out = c.kubectl(&[
        "get",
        "nodes",
        "-o",
        r#"jsonpath={range .items[*]}{.metadata.name}={.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}"#,
    ])?;
    let mut want: Vec<String> = c
        .topology
        .nodes
        .iter()
        .map(|n| format!("{}={}", n.name, n.address))
        .collect();
    want.sort();
    let mut got: Vec<String> = out.lines().map(str::to_string).collect();
    got.sort();
    ensure!(got == want, "nodes {got:?}, expected {want:?}");
    Ok(())
}

fn node_process_reaches_api(c: &Cluster) -> Result<()> {
    let kubectl = c.binaries.kubectl.display().to_string();
    let kc = c.kubeconfig_underlay.display().to_string();
    // node-d is behind the router: its API traffic crosses r1.
    for node in ["node-a", "node-d"] {
        let out = c.exec(
            node,
            &kubectl,
            &["--kubeconfig", &kc, "get", "node", node, "-o", "name"],
        )?;
        ensure!(out.trim() == format!("node/{node}"), "{node}: {out}");
    }
    // A background process started in a node is recorded and stopped by pid.
    let id = c.spawn("node-b", "sleeper", "sleep", &["300".into()], &[])?;
    ensure!(id.alive(), "sleeper not running");
    // `ip netns exec` enters the namespace right after the fork: under load, give it a moment.
    traffic::wait_for(
        "the sleeper in node-b's network namespace",
        Duration::from_secs(5),
        || {
            ensure!(
                state::pids_in(&c.ns("node-b")).contains(&(id.pid as u32)),
                "sleeper is not in node-b's network namespace"
            );
            Ok(())
        },
    )?;
    c.stop(&id);
    ensure!(!id.alive(), "sleeper survived stop");
    Ok(())
}

fn node(c: &Cluster, name: &str) -> Result<std::net::Ipv4Addr> {
    Ok(c.topology
        .node(name)
        .with_context(|| format!("no node {name}"))?
        .address)
}

fn same_segment(c: &Cluster) -> Result<()> {
    for dst in ["node-b", "node-c"] {
        traffic::expect_ping(&c.ns("node-a"), node(c, dst)?)?;
    }
    traffic::expect_ping(&c.ns("node-a"), c.topology.clients[0].address)?;
    traffic::expect_ping(&c.ns("client"), node(c, "node-c")?)?;
    Ok(())
}

fn cross_segment(c: &Cluster) -> Result<()> {
    let a = c.ns("node-a");
    let d = node(c, "node-d")?;
    let out = c.exec(
        "node-a",
        "ping",
        &["-n", "-c", "1", "-W", "2", &d.to_string()],
    )?;
    ensure!(
        out.contains("ttl=63"),
        "expected one router hop (ttl=63): {out}"
    );
    // No default route anywhere: nothing leads out of the machine.
    for host in ["node-a", "node-d", "client", "cp"] {
        let default = c.exec(host, "ip", &["-4", "route", "show", "default"])?;
        ensure!(
            default.trim().is_empty(),
            "{host} has a default route: {default}"
        );
    }
    // Only through the router: with forwarding off in r1 the segments are cut off.
    c.exec("r1", "sysctl", &["-q", "-w", "net.ipv4.ip_forward=0"])?;
    let cut = traffic::expect_no_ping(&a, d);
    c.exec("r1", "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
    cut.context("node-d must be unreachable without the router")?;
    traffic::expect_ping(&a, d)?;
    Ok(())
}

fn cni_pod(c: &Cluster) -> Result<()> {
    for (node, subnet) in [("node-a", "10.244.1.0/24"), ("node-d", "10.244.4.0/24")] {
        let subnet: ipnet::Ipv4Net = subnet.parse()?;
        pods::write_bridge_netconf(c, node, subnet, 1400)?;
        let pod = pods::add(c, node, "web")?;
        ensure!(
            subnet.contains(&pod.ip),
            "{node}: pod ip {} outside {subnet}",
            pod.ip
        );
        ensure!(pod.ip != subnet.network(), "pod got the network address");
        let gw = pod.gateway.context("no gateway in CNI result")?;
        ensure!(
            gw == subnet.hosts().next().context("empty subnet")?,
            "gateway {gw}"
        );
        traffic::expect_ping(&pod.netns, gw)?;
        let link = cmd_out("ip", &["-n", &pod.netns, "link", "show", "eth0"])?;
        ensure!(
            link.contains("mtu 1400"),
            "pod MTU not from the CNI config: {link}"
        );
        // The address is really held by host-local in this node's own store.
        let lease = c
            .cni_state_dir(node)
            .join("networks/causeway")
            .join(pod.ip.to_string());
        ensure!(
            lease.is_file(),
            "no host-local lease at {}",
            lease.display()
        );
        pods::del(c, &pod)?;
        ensure!(!lease.exists(), "CNI DEL did not release {}", pod.ip);
        ensure!(
            !state::list_namespaces().contains(&pod.netns),
            "pod namespace {} left behind",
            pod.netns
        );
    }
    Ok(())
}

fn cmd_out(program: &str, args: &[&str]) -> Result<String> {
    causeway_e2e::cmd::run(Command::new(program).args(args))
}

fn traffic_helpers(c: &Cluster) -> Result<()> {
    let b = node(c, "node-b")?;
    traffic::tcp_check(&c.ns("node-b"), &c.ns("node-a"), b, 7001)?;
    // A TCP check to a host that does not listen fails (the helper cannot pass vacuously).
    let d = node(c, "node-d")?;
    c.exec("r1", "sysctl", &["-q", "-w", "net.ipv4.ip_forward=0"])?;
    let blocked = traffic::tcp_check(&c.ns("node-d"), &c.ns("node-a"), d, 7002);
    c.exec("r1", "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
    ensure!(
        blocked.is_err(),
        "TCP through a router with forwarding off succeeded"
    );

    let steady = ContinuousPing::start(&c.ns("node-a"), b, Duration::from_millis(20))?;
    std::thread::sleep(Duration::from_secs(1));
    let r = steady.stop()?;
    ensure!(
        r.transmitted >= 20 && r.lost() == 0,
        "steady link lost packets: {r:?}"
    );

    let cut = ContinuousPing::start(&c.ns("node-a"), b, Duration::from_millis(20))?;
    std::thread::sleep(Duration::from_millis(500));
    c.set_underlay_link("node-b", false)?;
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    c.set_underlay_link("node-b", true)?;
    let outage = t.elapsed();
    std::thread::sleep(Duration::from_millis(700));
    let r = cut.stop()?;
    ensure!(
        r.lost() >= 20,
        "a 1 s cut at 20 ms intervals lost only {} packets: {r:?}",
        r.lost()
    );
    ensure!(
        r.max_gap >= outage.mul_f64(0.8),
        "gap {:?} shorter than the {outage:?} outage",
        r.max_gap
    );
    traffic::expect_ping(&c.ns("node-a"), b)?;
    Ok(())
}

fn killed_harness(_c: &Cluster) -> Result<()> {
    const NAME: &str = "killt";
    let cli = env!("CARGO_BIN_EXE_causeway-e2e");
    let mut holder = Command::new(cli)
        .args(["up", "--name", NAME, "--bare", "--hold"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Kill it mid-run: as soon as the API server has been started.
    let apiserver = traffic::wait_for(
        "the holder starts kube-apiserver",
        Duration::from_secs(60),
        || {
            state::State::load(NAME)?
                .and_then(|s| s.processes.into_iter().find(|p| p.role == "kube-apiserver"))
                .and_then(|p| p.id)
                .context("not yet")
        },
    );
    holder.kill()?;
    holder.wait()?;
    let apiserver = apiserver?;
    let ours = |ns: &String| ns.starts_with(&format!("cw-{NAME}-"));
    ensure!(
        state::list_namespaces().iter().any(ours),
        "the killed harness left no namespaces (test proves nothing)"
    );
    ensure!(
        apiserver.alive(),
        "kube-apiserver died with the harness (test proves nothing)"
    );
    ensure!(
        state::State::load(NAME)?.is_some_and(|s| s.is_stale()),
        "the killed holder's cluster is not recognised as stale"
    );

    // Restart: a new start sweeps the leftovers first, then comes up.
    let out = Command::new(cli)
        .args(["up", "--name", NAME, "--bare"])
        .output()?;
    if !out.status.success() {
        bail!("restart failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let log = String::from_utf8_lossy(&out.stderr);
    ensure!(
        log.contains("removed stale"),
        "restart did not report removing leftovers: {log}"
    );
    ensure!(
        !apiserver.alive(),
        "the old kube-apiserver (pid {}) survived the restart",
        apiserver.pid
    );

    let down = Command::new(cli).args(["down", "--name", NAME]).output()?;
    ensure!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let left: Vec<String> = state::list_namespaces().into_iter().filter(ours).collect();
    ensure!(left.is_empty(), "namespaces left after down: {left:?}");
    ensure!(state::State::load(NAME)?.is_none(), "state left after down");
    ensure!(
        !causeway_e2e::cmd::succeeds(Command::new("ip").args([
            "link",
            "show",
            "dev",
            &format!("cw-{NAME}")
        ])),
        "root veth left after down"
    );
    Ok(())
}

/// The dual-stack preset in a cluster of its own: both families cross r1, nodes list both
/// InternalIPs (IPv4 first).
fn dual_stack(_c: &Cluster) -> Result<()> {
    let c = Cluster::up("dual6", presets::two_segments_dual_stack())?;
    ipv6_routed_and_closed(&c)?;
    // IPv4 still crosses r1 alongside.
    traffic::expect_ping(&c.ns("node-a"), node(&c, "node-d")?)?;
    Ok(())
}

/// The IPv6-only preset in a cluster of its own: nodes without IPv4 reach each other through
/// r1 and the API server at its IPv6 address; BIRD on r1 learns a prefix from a peer BIRD on
/// node-d over an IPv6 session and installs it in r1's kernel.
fn ipv6_only(_c: &Cluster) -> Result<()> {
    let c = Cluster::up("v6only", presets::two_segments_ipv6_only())?;
    ipv6_routed_and_closed(&c)?;
    let v4 = c.exec("node-a", "ip", &["-4", "addr", "show", "dev", "eth0"])?;
    ensure!(!v4.contains("inet "), "node-a has IPv4: {v4}");
    // An IPv6-only node reaches the API server over IPv6 (its certificate names the address).
    let cp6 = c.topology.control_plane.address6.context("cp has IPv6")?;
    let kubectl = c.binaries.kubectl.display().to_string();
    let kc = c.kubeconfig_underlay.display().to_string();
    let server = format!("--server=https://[{cp6}]:6443");
    let out = c.exec(
        "node-d",
        &kubectl,
        &[
            "--kubeconfig",
            &kc,
            &server,
            "get",
            "node",
            "node-d",
            "-o",
            "name",
        ],
    )?;
    ensure!(out.trim() == "node/node-d", "{out}");

    let r1 = Bird::start(
        &c,
        "r1",
        &bird::Config::for_nodes_ipv6(&c, &["node-d"], 64500, [192, 168, 40, 1].into(), 64512)?,
    )?;
    let peer = bird::Config {
        asn: 64512,
        router_id: [10, 0, 0, 4].into(),
        neighbours: vec![Neighbour {
            name: "r1".into(),
            address: c.topology.routers[0].legs[1]
                .address6
                .context("r1 has IPv6 on lan-b")?
                .into(),
            asn: 64500,
            password: None,
            ipv6_channel: false,
            ipv4_channel: false,
        }],
        hold_time: 9,
        bfd: None,
        announce: vec!["fd00:244:4::/64".parse()?],
    };
    let _peer = Bird::start(&c, "node-d", &peer)?;
    let d6 = c.topology.node("node-d").and_then(|n| n.address6);
    let d6 = d6.context("node-d has IPv6")?.to_string();
    traffic::wait_for(
        "r1 learns fd00:244:4::/64 from node-d",
        Duration::from_secs(20),
        || {
            let routes = r1.routes()?;
            ensure!(
                routes.get("fd00:244:4::/64") == Some(&d6),
                "BIRD's table: {routes:?}"
            );
            let kernel = c.exec("r1", "ip", &["-6", "route", "show", "fd00:244:4::/64"])?;
            ensure!(
                kernel.contains(&format!("via {d6}")) && kernel.contains("proto bird"),
                "r1's kernel: {kernel:?}"
            );
            Ok(())
        },
    )?;
    Ok(())
}

/// node-a pings node-d over IPv6 one router hop away (hop limit 63), TCP crosses too, a
/// continuous ping loses nothing; no namespace has a default route and a global address is
/// unreachable; with IPv6 forwarding off in r1 node-d is cut off; nodes registered their
/// addresses in the kubelet's order.
fn ipv6_routed_and_closed(c: &Cluster) -> Result<()> {
    let v6 = |name: &str| -> Result<std::net::Ipv6Addr> {
        c.topology
            .node(name)
            .and_then(|n| n.address6)
            .with_context(|| format!("{name} has no IPv6 address"))
    };
    for n in &c.topology.nodes {
        let got = c.kubectl(&[
            "get",
            "node",
            &n.name,
            "-o",
            r#"jsonpath={.status.addresses[?(@.type=="InternalIP")].address}"#,
        ])?;
        let want: Vec<String> = n.addresses().iter().map(ToString::to_string).collect();
        ensure!(
            got.trim() == want.join(" "),
            "{}: {got:?}, expected {want:?}",
            n.name
        );
    }
    let (a, d) = (c.ns("node-a"), v6("node-d")?);
    let out = c.exec(
        "node-a",
        "ping",
        &["-6", "-n", "-c", "1", "-W", "2", &d.to_string()],
    )?;
    ensure!(
        out.contains("ttl=63"),
        "expected one router hop (hop limit 63): {out}"
    );
    traffic::expect_ping6(&a, v6("node-b")?)?;
    traffic::expect_ping6(&c.ns("client"), d)?;
    traffic::tcp_check6(&c.ns("node-d"), &a, d, 7006)?;
    let steady = ContinuousPing::start6(&a, d, Duration::from_millis(20))?;
    std::thread::sleep(Duration::from_millis(600));
    let r = steady.stop()?;
    ensure!(
        r.transmitted >= 10 && r.lost() == 0,
        "steady IPv6 ping lost packets: {r:?}"
    );

    // Closed: no default route of either family anywhere, and no route at all to a global
    // address (a ping would not even leave: `connect: Network is unreachable`).
    let hosts = c.topology.nodes.iter().chain(&c.topology.clients);
    for host in hosts.map(|h| h.name.as_str()).chain(["cp", "r1"]) {
        let default = c.exec(host, "ip", &["route", "show", "default"])?
            + &c.exec(host, "ip", &["-6", "route", "show", "default"])?;
        ensure!(
            default.trim().is_empty(),
            "{host} has a default route: {default}"
        );
        for global in ["2001:db8::1", "192.0.2.1"] {
            ensure!(
                c.exec(host, "ip", &["route", "get", global]).is_err(),
                "{host} has a route to {global}"
            );
        }
    }
    // Only through the router.
    let forwarding = |on: &str| {
        c.exec(
            "r1",
            "sysctl",
            &["-q", "-w", &format!("net.ipv6.conf.all.forwarding={on}")],
        )
    };
    forwarding("0")?;
    let cut = traffic::expect_no_ping6(&a, d);
    forwarding("1")?;
    cut.context("node-d must be unreachable over IPv6 without the router")?;
    traffic::expect_ping6(&a, d)
}
