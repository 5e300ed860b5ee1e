//! Datapath throughput (issues #6 and #18): iperf3 from a pod on one node to a pod on another,
//! in each mode users choose between (Flat, Routed, Overlay) and for each address family (an
//! IPv4 network over the nodes' IPv4 addresses, an IPv6 network over their IPv6 addresses),
//! against iperf3 between the two nodes themselves over the same underlay and family (the
//! baseline), in one run on one test cluster.
//!
//! The cluster is `one_segment_dual_stack(2)`: node-a (192.168.50.11, fd00:50::11) and node-b
//! (.12, ::12) on one dual-stack segment (a Linux bridge in its own namespace), each node
//! registered with both InternalIPs; the operator and an agent per node with the chart's
//! RBAC, started as `e2e/tests/routed.rs` starts them. Then:
//!
//! 1. **baseline, start**: R runs node-a → node-b over the underlay addresses of each family,
//!    the families alternating, before any PodNetwork exists.
//! 2. **each mode, each family**: a PodNetwork, `10.244.0.0/16` with `nodeSubnetPrefixLength:
//!    24` (IPv4) or `fd00:10:244::/56` with 64 (IPv6, no IPv4 range at all), the mode,
//!    everything else default (outgoing NAT on), waited Ready. Each NodeSubnet must carry the
//!    node's address of the network's family as `nodeAddress` (the operator picks the
//!    InternalIP of the range's family), so an IPv6 Overlay network tunnels over IPv6 (its
//!    VXLAN device's local address is the node's IPv6 address), and report the pod MTU the
//!    API promises (underlay − 50 for IPv4 Overlay, − 70 for IPv6 Overlay, the underlay's
//!    otherwise). One pod on each node attached with the CNI config the node's agent wrote;
//!    the pods must have that MTU and reach each other. Then R times node-a → node-b (over
//!    the nodes' addresses of the network's family) and pod(node-a) → pod(node-b),
//!    alternately, and node → node once more at the end, so that the pod runs and the
//!    baseline they are divided by see the same machine load. Every run checks that the
//!    server saw the connection come from the client's own address (nothing rewrote it), and
//!    that pod traffic went through a VXLAN device in Overlay and that no node has one in
//!    the other modes. The pods are detached, the network is deleted, and both nodes must be
//!    clean (no route of protocol 249 of either family, no proxy NDP entry, no `cw-*` link,
//!    no CNI config, no `ip causeway` or `ip6 causeway` nftables table) before the next
//!    block: the mode is immutable, so each is a new network. The families of one mode run
//!    one after the other (IPv4, then IPv6), so both see about the same machine load.
//! 3. **flannel, with `--flannel`** (issue #19's reference): flanneld and flannel's CNI plugin
//!    on the same two nodes, IPv4, a block of the same interleaved runs and checks (its pods'
//!    MTU, traffic through its VXLAN device or through none) for each of its backends VXLAN
//!    and host-gw, everything it built removed after each ([`flannel`]). The report sets
//!    Causeway's IPv4 Overlay block beside flannel's VXLAN, Routed beside host-gw.
//! 4. **baseline, end**: R runs of each family again, with no PodNetwork left.
//!
//! Each run is one TCP stream (`iperf3 -c`, one-shot server `iperf3 -s -1`), its throughput
//! the receiver's; with two or more CPUs the client is pinned to CPU 0 and the server to CPU 1
//! (`iperf3 -A`). With `--parallel N` (8 by default) every run of a block is followed by an
//! `iperf3 -P N` run of the same path, a second series interleaved like the first. The ratio
//! is pod↔pod ÷ node↔node of the same block (medians); the per-run ratios pair each pod run
//! with the mean of the node runs just before and after it, and are printed as their median,
//! a 95% percentile bootstrap interval of that median (seeded: `causeway_e2e::stats`) and
//! their range, with whether the interval clears issue #19's target (Flat and Routed ≥ 0.95,
//! Overlay ≥ 0.85). The baselines at the start and end show how stable the machine was.
//! Each run also records the mean size of the packets node-a's underlay interface sent: far
//! above the MTU, it shows segmentation offload carrying whole TCP segments (or VXLAN
//! packets of them) through the veths unsplit. The 1-minute load average is printed before
//! the run, at the start of each block and at the end: other work on the machine competes
//! for the CPU the paths are bound by, so only same-run (better, same-block) ratios mean
//! anything.
//!
//! Run: `make bench`, or `cargo build --release --workspace --bins && cargo bench -p
//! causeway-e2e --bench datapath -- [--seconds 5] [--omit 1] [--repeats 10] [--parallel 8]
//! [--modes Flat,Routed,Overlay] [--family ipv4|ipv6|both] [--flannel]` (default both;
//! `--flannel` builds flannel the first time, `e2e/scripts/build-flannel.sh`). Without `--bench`
//! (`cargo test --all-targets`, so `make test`) it runs every mode of both families once for
//! 1 s, single stream only, as a smoke test that still makes every check. Needs root, like
//! the e2e suite.
//!
//! Everything is veth pairs and bridges between network namespaces of one machine: no NIC,
//! no wire. Throughput is bound by the CPU the kernel spends per packet on the path, so the
//! absolute numbers say little; the ratios show what each mode's path costs over the
//! underlay's. Everything happens in the bench cluster's namespaces (`cw-datapath-*`), which
//! the harness removes on success, failure, panic (drop) and Ctrl-C; the root namespace is
//! only touched by the harness's own veth to the API server. The iperf3 servers are one-shot
//! and killed by pid when a run fails.

use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use causeway_crds::mtu::{VXLAN_OVERHEAD, VXLAN6_OVERHEAD, effective_mtu_over};
use causeway_crds::v1alpha1::PodNetworkMode;
use causeway_e2e::controlplane::causeway_binary;
use causeway_e2e::pods::{self, Pod, Pod6};
use causeway_e2e::stats::{self, bootstrap_median, median};
use causeway_e2e::topology::presets;
use causeway_e2e::traffic::{self, wait_for};
use causeway_e2e::{Cluster, cmd, deploy, state};
use causeway_node_agent::cni;
use causeway_node_agent::model::{NAT_TABLE, ROUTE_PROTOCOL};
use ipnet::IpNet;
use serde_json::Value;

#[path = "datapath/flannel.rs"]
mod flannel;

const CLUSTER: &str = "datapath";
const NETWORK: &str = "bench";
/// The iperf3 client runs here (and the client pod)...
const CLIENT: &str = "node-a";
/// ...and the server here.
const SERVER: &str = "node-b";
const NODES: [&str; 2] = [CLIENT, SERVER];
const PORT: u16 = 5201;
const READY_TIMEOUT: &str = "--timeout=120s";
const CLEAN_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the iperf3 client and server run (`iperf3 -A`) on a machine with two or more CPUs:
/// each on a core of its own, as two nodes would be, so that the scheduler cannot put both on
/// one core for part of a run.
const CLIENT_CPU: &str = "0";
const SERVER_CPU: &str = "1";
/// How long a one-shot server may take to listen, and to exit after its test.
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The address family of a PodNetwork and of the node addresses its baseline runs between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The bench network's range and the prefix length of each node's subnet.
    fn pod_cidr(self) -> (&'static str, u8) {
        match self {
            Family::V4 => ("10.244.0.0/16", 24),
            Family::V6 => ("fd00:10:244::/56", 64),
        }
    }

    /// Bytes VXLAN adds over an underlay of this family.
    fn vxlan_overhead(self) -> u32 {
        match self {
            Family::V4 => VXLAN_OVERHEAD,
            Family::V6 => VXLAN6_OVERHEAD,
        }
    }
}

struct Options {
    /// Seconds each iperf3 run sends (`-t`).
    seconds: u32,
    /// Seconds at the start of each run left out of its result (`-O`: TCP slow start).
    omit: u32,
    /// Runs of each path per block.
    repeats: usize,
    /// TCP streams of the second column (`iperf3 -P`), run after each single-stream run of
    /// the same path; 0 for none.
    parallel: u32,
    modes: Vec<PodNetworkMode>,
    /// IPv4 first when both: each mode's IPv6 block follows its IPv4 block.
    families: Vec<Family>,
    /// Also run flannel's VXLAN pod↔pod path as a reference block (`--flannel`, IPv4).
    flannel: bool,
}

const ALL_MODES: [PodNetworkMode; 3] = [
    PodNetworkMode::Flat,
    PodNetworkMode::Routed,
    PodNetworkMode::Overlay,
];

const BOTH: [Family; 2] = [Family::V4, Family::V6];

fn parse_args() -> Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` (the suite) runs this binary
    // without it: then a short smoke run proves the benchmark still works end to end.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!(
            "[bench] not run by `cargo bench`: smoke run, every mode of both families once for 1 s"
        );
        return Ok(Options {
            seconds: 1,
            omit: 0,
            repeats: 1,
            parallel: 0,
            modes: ALL_MODES.to_vec(),
            families: BOTH.to_vec(),
            flannel: false,
        });
    }
    let mut opts = Options {
        seconds: 5,
        omit: 1,
        repeats: 10,
        parallel: 8,
        modes: ALL_MODES.to_vec(),
        families: BOTH.to_vec(),
        flannel: false,
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut number = |flag: &str| -> Result<u32> {
            let v = args
                .next()
                .with_context(|| format!("{flag} needs a number"))?;
            v.parse().with_context(|| format!("{flag} {v}"))
        };
        match a.as_str() {
            "--seconds" => opts.seconds = number("--seconds")?,
            "--omit" => opts.omit = number("--omit")?,
            "--repeats" => opts.repeats = usize::try_from(number("--repeats")?)?,
            "--parallel" => opts.parallel = number("--parallel")?,
            "--modes" => {
                let v = args
                    .next()
                    .context("--modes needs a value, e.g. Flat,Routed,Overlay")?;
                opts.modes = v
                    .split(',')
                    .map(|s| {
                        serde_json::from_value(Value::String(s.trim().to_string())).with_context(
                            || format!("--modes {v}: `{s}` is not one of Flat, Routed, Overlay"),
                        )
                    })
                    .collect::<Result<_>>()?;
            }
            "--family" => {
                let v = args.next().context("--family needs ipv4, ipv6 or both")?;
                opts.families = match v.as_str() {
                    "ipv4" => vec![Family::V4],
                    "ipv6" => vec![Family::V6],
                    "both" => BOTH.to_vec(),
                    other => bail!("--family {other}: use ipv4, ipv6 or both"),
                };
            }
            "--flannel" => opts.flannel = true,
            "--bench" => {}
            other => bail!(
                "unknown argument {other}; use --seconds 5, --omit 1, --repeats 10, --parallel 8 (0: none), --modes Flat,Routed,Overlay, --family ipv4|ipv6|both, --flannel"
            ),
        }
    }
    ensure!(opts.seconds > 0, "--seconds must be at least 1");
    ensure!(opts.repeats > 0, "--repeats must be at least 1");
    ensure!(
        opts.parallel != 1,
        "--parallel 1 is the single stream already measured: use 0 or 2 and more"
    );
    ensure!(!opts.modes.is_empty(), "--modes needs at least one mode");
    ensure!(
        !opts.flannel || opts.families.contains(&Family::V4),
        "--flannel measures flannel's IPv4 VXLAN path: use it with --family ipv4 or both"
    );
    Ok(opts)
}

fn main() -> ExitCode {
    if let Err(e) = state::teardown_on_interrupt(CLUSTER, "[bench]") {
        eprintln!("[bench] {e:#}");
    }
    match parse_args().and_then(|opts| run(&opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[bench] failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One iperf3 test, as the receiver measured it.
#[derive(Clone, Copy, Debug)]
struct Run {
    bits_per_second: f64,
    bytes: u64,
    retransmits: u64,
    /// Mean size of the packets node-a's underlay interface sent during the run: far above
    /// the MTU when segmentation offload hands whole TCP segments (or VXLAN packets of them)
    /// down the path unsplit.
    wire_packet: f64,
}

/// The pod runs of a block and the node runs alternating with them (`nodes[i]` just before
/// `pods[i]`, `nodes[i + 1]` just after), all with the same number of streams.
#[derive(Debug, Default)]
struct Series {
    pods: Vec<Run>,
    nodes: Vec<Run>,
}

/// Whose pod↔pod path a block measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subject {
    /// A Causeway PodNetwork of this mode.
    Mode(PodNetworkMode),
    /// flanneld with this backend and flannel's CNI plugin (`--flannel`, [`flannel`]).
    Flannel(flannel::Backend),
}

impl Subject {
    fn label(self) -> String {
        match self {
            Subject::Mode(mode) => format!("{mode:?}"),
            Subject::Flannel(backend) => format!("flannel {} (reference)", backend.label()),
        }
    }

    /// The issue's target for the pod↔pod ÷ node↔node ratio (issue #19): Flat and Routed ≥
    /// 0.95, Overlay ≥ 0.85; none for the reference.
    fn target(self) -> Option<f64> {
        match self {
            Subject::Mode(PodNetworkMode::Overlay) => Some(0.85),
            Subject::Mode(_) => Some(0.95),
            Subject::Flannel(_) => None,
        }
    }
}

/// One block: a mode (or the flannel reference) and family, its pod MTU, and its runs: one
/// TCP stream, and `--parallel` streams (each parallel run right after the single-stream run
/// of the same path).
#[derive(Debug)]
struct ModeResult {
    subject: Subject,
    family: Family,
    pod_mtu: u32,
    /// The 1-minute load average when the block's network was created.
    load: String,
    single: Series,
    parallel: Option<Series>,
    /// Bytes the client node's VXLAN device sent during the pod runs (Overlay only).
    vxlan_tx: Option<u64>,
}

/// node↔node runs of one family with no PodNetwork.
#[derive(Debug)]
struct Baseline {
    family: Family,
    runs: Vec<Run>,
}

#[derive(Debug)]
struct Report {
    /// Kernel and iperf3 versions.
    versions: String,
    /// The machine's 1-minute load average before the cluster started and after the last
    /// run: other work on the machine competes for the CPU the paths are bound by.
    load: String,
    load_end: String,
    underlay_mtu: u32,
    start: Vec<Baseline>,
    modes: Vec<ModeResult>,
    end: Vec<Baseline>,
}

fn run(opts: &Options) -> Result<()> {
    causeway_e2e::cluster::require_prerequisites()?;
    cmd::require_program("iperf3", "iperf3")?;
    cmd::require_program("nft", "nftables")?;
    // Fail before bringing anything up when the workspace binaries were not built.
    for binary in ["causeway-operator", "causeway-node-agent"] {
        eprintln!("[bench] {binary}: {}", causeway_binary(binary)?.display());
    }
    let flannel = if opts.flannel {
        let bins = flannel::Binaries::find()?;
        eprintln!(
            "[bench] flanneld: {}; flannel's CNI plugin in {}",
            bins.flanneld.display(),
            bins.cni_dir.display()
        );
        Some(bins)
    } else {
        None
    };
    let load = load_average()?;
    if load.parse::<f64>().is_ok_and(|l| l > 0.5) {
        eprintln!(
            "[bench] warning: load average {load} before the run: other work competes for the \
             CPU the paths are bound by; only same-block ratios stay meaningful"
        );
    }
    let cluster = Cluster::up(CLUSTER, presets::one_segment_dual_stack(2))?;
    let result = measure(&cluster, opts, flannel.as_ref(), load);
    if result.is_err() {
        let roles = ["operator-node-a", "agent-node-a", "agent-node-b"]
            .map(String::from)
            .into_iter()
            .chain(flannel.iter().flat_map(|_| flannel::roles()));
        for role in roles {
            eprintln!("{}", cluster.log_tail(&role, 15));
        }
    }
    cluster.teardown()?;
    let report = result?;
    print_report(&report, opts);
    Ok(())
}

fn measure(
    c: &Cluster,
    opts: &Options,
    flannel: Option<&flannel::Binaries>,
    load: String,
) -> Result<Report> {
    control_plane(c)?;
    let versions = format!(
        "kernel {}, {}",
        cmd::run(std::process::Command::new("uname").arg("-r"))?.trim(),
        cmd::run(std::process::Command::new("iperf3").arg("--version"))?
            .lines()
            .next()
            .unwrap_or("iperf3")
    );
    let underlay_mtu = link_mtu(&c.ns(CLIENT), "eth0")?;
    ensure!(
        underlay_mtu == link_mtu(&c.ns(SERVER), "eth0")?,
        "node-a and node-b have different underlay MTUs"
    );
    let start = node_runs(c, opts, "start")?;
    let mut modes = Vec::new();
    for &mode in &opts.modes {
        for &family in &opts.families {
            modes.push(
                run_mode(c, mode, family, underlay_mtu, opts)
                    .with_context(|| format!("{mode:?} {}", family.label()))?,
            );
        }
    }
    if let Some(bins) = flannel {
        for backend in flannel::Backend::ALL {
            modes.push(
                flannel::run(c, bins, backend, underlay_mtu, opts)
                    .with_context(|| format!("the flannel {} reference block", backend.label()))?,
            );
        }
    }
    let end = node_runs(c, opts, "end")?;
    Ok(Report {
        versions,
        load,
        load_end: load_average()?,
        underlay_mtu,
        start,
        modes,
        end,
    })
}

/// CRDs, RBAC, the operator and an agent per node, as the e2e suite runs them.
fn control_plane(c: &Cluster) -> Result<()> {
    deploy::install(c)?;
    deploy::start_operator(c, CLIENT, &[])?;
    for node in NODES {
        deploy::start_agent(
            c,
            node,
            &["--resync-seconds", "3", "--status-refresh-seconds", "1"],
        )?;
    }
    Ok(())
}

/// `repeats` node-a → node-b runs per family with no PodNetwork, the families alternating.
fn node_runs(c: &Cluster, opts: &Options, when: &str) -> Result<Vec<Baseline>> {
    for node in NODES {
        node_is_clean(c, node)?;
    }
    let mut out: Vec<Baseline> = opts
        .families
        .iter()
        .map(|&family| Baseline {
            family,
            runs: Vec::new(),
        })
        .collect();
    for i in 0..opts.repeats {
        for b in &mut out {
            let run = node_run(c, b.family, opts, 1)?;
            log_run(
                &format!("{} node↔node ({when})", b.family.label()),
                i,
                opts.repeats,
                &run,
            );
            b.runs.push(run);
        }
    }
    Ok(out)
}

/// `node`'s underlay address of `family`.
fn node_address(c: &Cluster, node: &str, family: Family) -> Result<IpAddr> {
    let host = c
        .topology
        .node(node)
        .with_context(|| format!("no node {node} in the topology"))?;
    match family {
        Family::V4 => host.ipv4().map(IpAddr::V4),
        Family::V6 => host.address6.map(IpAddr::V6),
    }
    .with_context(|| format!("{node} has no {} address", family.label()))
}

/// One node-a → node-b run of `streams` TCP streams.
fn node_run(c: &Cluster, family: Family, opts: &Options, streams: u32) -> Result<Run> {
    iperf3(
        c,
        (&c.ns(SERVER), node_address(c, SERVER, family)?),
        (&c.ns(CLIENT), node_address(c, CLIENT, family)?),
        opts,
        streams,
    )
    .with_context(|| format!("node-a → node-b over the {} underlay", family.label()))
}

fn log_run(what: &str, i: usize, n: usize, run: &Run) {
    eprintln!(
        "[bench] {what} {}/{n}: {:.2} Gbit/s, {} retransmits",
        i + 1,
        run.bits_per_second / 1e9,
        run.retransmits
    );
}

/// A bench pod of either family: an IPv4 network's pods have an IPv4 address, an IPv6-only
/// network's an IPv6 one.
enum BenchPod {
    V4(Pod),
    V6(Pod6),
}

impl BenchPod {
    fn add(c: &Cluster, node: &str, name: &str, family: Family) -> Result<Self> {
        Ok(match family {
            Family::V4 => BenchPod::V4(pods::add(c, node, name)?),
            Family::V6 => BenchPod::V6(pods::add6(c, node, name)?),
        })
    }

    fn ip(&self) -> IpAddr {
        match self {
            BenchPod::V4(p) => p.ip.into(),
            BenchPod::V6(p) => p.ip.into(),
        }
    }

    fn netns(&self) -> &str {
        match self {
            BenchPod::V4(p) => &p.netns,
            BenchPod::V6(p) => &p.netns,
        }
    }

    fn node(&self) -> &str {
        match self {
            BenchPod::V4(p) => &p.node,
            BenchPod::V6(p) => &p.node,
        }
    }

    fn del(&self, c: &Cluster) -> Result<()> {
        match self {
            BenchPod::V4(p) => pods::del(c, p),
            BenchPod::V6(p) => pods::del6(c, p),
        }
    }

    /// Every one of 3 pings from this pod to `dst` comes back.
    fn expect_ping(&self, dst: IpAddr) -> Result<()> {
        match dst {
            IpAddr::V4(a) => traffic::expect_ping(self.netns(), a),
            IpAddr::V6(a) => traffic::expect_ping6(self.netns(), a),
        }
    }
}

fn run_mode(
    c: &Cluster,
    mode: PodNetworkMode,
    family: Family,
    underlay_mtu: u32,
    opts: &Options,
) -> Result<ModeResult> {
    let load = load_average()?;
    let (cidr, prefix_len) = family.pod_cidr();
    let pn = serde_json::json!({
        "apiVersion": "causeway.dev/v1alpha1",
        "kind": "PodNetwork",
        "metadata": {"name": NETWORK},
        "spec": {"cidr": cidr, "nodeSubnetPrefixLength": prefix_len, "mode": mode},
    });
    c.kubectl_stdin(&["apply", "-f", "-"], &pn.to_string())?;
    c.kubectl(&[
        "wait",
        "--for=condition=Ready",
        READY_TIMEOUT,
        &format!("podnetwork/{NETWORK}"),
    ])?;
    let overlay = mode == PodNetworkMode::Overlay;
    let overhead = if overlay { family.vxlan_overhead() } else { 0 };
    let want_mtu = effective_mtu_over(overhead, None, underlay_mtu);
    node_subnets_match(c, family, want_mtu)?;
    if overlay {
        for node in NODES {
            vxlan_local_is_node_address(c, node, family)?;
        }
    }
    let name = format!("{mode:?}-{}", family.label()).to_lowercase();
    let client = BenchPod::add(c, CLIENT, &name, family)?;
    let server = BenchPod::add(c, SERVER, &name, family)?;
    for pod in [&client, &server] {
        let mtu = link_mtu(pod.netns(), "eth0")?;
        ensure!(
            mtu == want_mtu,
            "pod on {} has MTU {mtu}, {mode:?} {} on a {underlay_mtu}-byte underlay promises {want_mtu}",
            pod.node(),
            family.label()
        );
    }
    // IPv6 pod addresses may still be tentative (duplicate address detection) for a moment.
    wait_for(
        "the pod on node-a reaches the pod on node-b",
        Duration::from_secs(15),
        || client.expect_ping(server.ip()),
    )?;
    eprintln!(
        "[bench] {mode:?} {}: pods {} (node-a) → {} (node-b), MTU {want_mtu}, load {load}",
        family.label(),
        client.ip(),
        server.ip()
    );

    let mut result = ModeResult {
        subject: Subject::Mode(mode),
        family,
        pod_mtu: want_mtu,
        load,
        single: Series::default(),
        parallel: (opts.parallel > 1).then(Series::default),
        vxlan_tx: overlay.then_some(0),
    };
    interleave(c, &mut result, &client, &server, opts)?;

    client.del(c)?;
    server.del(c)?;
    let what = format!("{mode:?} {}", family.label());
    c.kubectl(&[
        "delete",
        "podnetwork",
        NETWORK,
        "--wait=true",
        "--timeout=60s",
    ])?;
    for node in NODES {
        wait_for(
            &format!("{node} is clean after deleting the {what} network"),
            CLEAN_TIMEOUT,
            || node_is_clean(c, node),
        )?;
    }
    Ok(result)
}

/// A block's runs: `repeats` pod runs (and `--parallel` runs after each), each between two
/// node runs of the same family, into `result`.
fn interleave(
    c: &Cluster,
    result: &mut ModeResult,
    client: &BenchPod,
    server: &BenchPod,
    opts: &Options,
) -> Result<()> {
    let family = result.family;
    let what = format!("{} {}", result.subject.label(), family.label());
    let p = opts.parallel;
    for i in 0..=opts.repeats {
        // The node runs bracket the pod runs: one more node run (of each width) at the end.
        let last = i == opts.repeats;
        let of = opts.repeats + usize::from(last);
        let run = node_run(c, family, opts, 1)?;
        log_run(&format!("{what} node↔node"), i, of, &run);
        result.single.nodes.push(run);
        if let Some(par) = &mut result.parallel {
            let run = node_run(c, family, opts, p)?;
            log_run(&format!("{what} node↔node ×{p}"), i, of, &run);
            par.nodes.push(run);
        }
        if last {
            break;
        }
        let run = pod_run(c, &what, client, server, opts, 1, &mut result.vxlan_tx)?;
        log_run(&format!("{what} pod↔pod"), i, opts.repeats, &run);
        result.single.pods.push(run);
        if let Some(par) = &mut result.parallel {
            let run = pod_run(c, &what, client, server, opts, p, &mut result.vxlan_tx)?;
            log_run(&format!("{what} pod↔pod ×{p}"), i, opts.repeats, &run);
            par.pods.push(run);
        }
    }
    Ok(())
}

/// Each node's NodeSubnet of the bench network: a subnet of the network's range, the node's
/// address of the network's family as `nodeAddress` (what the tunnel or the routes use; on
/// this dual-stack underlay the operator must pick the InternalIP of the range's family) and
/// the pod MTU `want_mtu` in its status.
fn node_subnets_match(c: &Cluster, family: Family, want_mtu: u32) -> Result<()> {
    let range: IpNet = family.pod_cidr().0.parse()?;
    let subnets = deploy::node_subnets(c, NETWORK)?;
    ensure!(
        subnets.len() == NODES.len(),
        "{} NodeSubnets for {} nodes",
        subnets.len(),
        NODES.len()
    );
    for s in subnets {
        let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
        let want = node_address(c, node, family)?;
        let address: Option<IpAddr> = s["spec"]["nodeAddress"]
            .as_str()
            .and_then(|a| a.parse().ok());
        ensure!(
            address == Some(want),
            "{node}: nodeAddress {}, not its {} address {want}",
            s["spec"]["nodeAddress"],
            family.label()
        );
        let cidr: Option<IpNet> = s["spec"]["cidr"].as_str().and_then(|a| a.parse().ok());
        ensure!(
            cidr.is_some_and(|n| range.contains(&n) && n.prefix_len() == family.pod_cidr().1),
            "{node}: subnet {} is not a /{} of {range}",
            s["spec"]["cidr"],
            family.pod_cidr().1
        );
        ensure!(
            s["status"]["effectiveMtu"] == want_mtu,
            "{node}: status.effectiveMtu {}, want {want_mtu}",
            s["status"]["effectiveMtu"]
        );
    }
    Ok(())
}

/// `node`'s VXLAN device has the node's address of `family` as its local address: the
/// tunnel runs over that family.
fn vxlan_local_is_node_address(c: &Cluster, node: &str, family: Family) -> Result<()> {
    let out = c.exec(node, "ip", &["-j", "-d", "link", "show", "type", "vxlan"])?;
    let links: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
    let [link] = links.as_array().map(Vec::as_slice).unwrap_or_default() else {
        bail!("{node}: not exactly one VXLAN device: {out}");
    };
    let data = &link["linkinfo"]["info_data"];
    let local: Option<IpAddr> = data["local"]
        .as_str()
        .or_else(|| data["local6"].as_str())
        .and_then(|a| a.parse().ok());
    let want = node_address(c, node, family)?;
    ensure!(
        local == Some(want),
        "{node}: VXLAN device's local address {local:?}, not the node's {} address {want}",
        family.label()
    );
    Ok(())
}

/// One pod → pod run of `streams` TCP streams, checking which device carried it: the client
/// node's VXLAN device in Overlay (its transmitted bytes are added to `vxlan_tx`), no VXLAN
/// device anywhere otherwise.
fn pod_run(
    c: &Cluster,
    what: &str,
    client: &BenchPod,
    server: &BenchPod,
    opts: &Options,
    streams: u32,
    vxlan_tx: &mut Option<u64>,
) -> Result<Run> {
    let before = vxlan_devices(&c.ns(CLIENT))?;
    let run = iperf3(
        c,
        (server.netns(), server.ip()),
        (client.netns(), client.ip()),
        opts,
        streams,
    )
    .context("pod on node-a → pod on node-b")?;
    let after = vxlan_devices(&c.ns(CLIENT))?;
    match vxlan_tx {
        Some(total) => {
            let ([(name, tx0)], [(name1, tx1)]) = (before.as_slice(), after.as_slice()) else {
                bail!(
                    "{what}: node-a should have one VXLAN device; before {before:?}, after {after:?}"
                );
            };
            ensure!(name == name1, "the VXLAN device changed: {name} → {name1}");
            let sent = tx1.saturating_sub(*tx0);
            ensure!(
                sent >= run.bytes,
                "{what}: {name} sent {sent} bytes while the pods exchanged {}: the pod traffic did not go through VXLAN",
                run.bytes
            );
            *total += sent;
        }
        None => {
            let server_side = vxlan_devices(&c.ns(SERVER))?;
            ensure!(
                after.is_empty() && server_side.is_empty(),
                "{what}: VXLAN devices on the nodes: node-a {after:?}, node-b {server_side:?}"
            );
        }
    }
    Ok(run)
}
/// The VXLAN devices in namespace `ns` with the bytes each has sent.
fn vxlan_devices(ns: &str) -> Result<Vec<(String, u64)>> {
    let out = cmd::run(
        std::process::Command::new("ip")
            .args(["-n", ns, "-j", "-s", "link", "show", "type", "vxlan"]),
    )?;
    let links: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
    links
        .as_array()
        .context("`ip -j link` printed no list")?
        .iter()
        .map(|l| {
            let name = l["ifname"].as_str().context("link without ifname")?;
            let tx = l["stats64"]["tx"]["bytes"]
                .as_u64()
                .with_context(|| format!("{name}: no tx byte counter in {l}"))?;
            Ok((name.to_string(), tx))
        })
        .collect()
}

/// (bytes, packets) `link` in namespace `ns` has sent.
fn tx_counters(ns: &str, link: &str) -> Result<(u64, u64)> {
    let out = cmd::run(
        std::process::Command::new("ip").args(["-n", ns, "-j", "-s", "link", "show", link]),
    )?;
    let links: Value = serde_json::from_str(&out)?;
    let tx = &links[0]["stats64"]["tx"];
    match (tx["bytes"].as_u64(), tx["packets"].as_u64()) {
        (Some(bytes), Some(packets)) => Ok((bytes, packets)),
        _ => bail!("{link} in {ns}: no tx counters in {out}"),
    }
}

fn link_mtu(ns: &str, link: &str) -> Result<u32> {
    let out =
        cmd::run(std::process::Command::new("ip").args(["-n", ns, "-j", "link", "show", link]))?;
    let links: Value = serde_json::from_str(&out)?;
    let mtu = links[0]["mtu"]
        .as_u64()
        .with_context(|| format!("{link} in {ns}: no MTU in {out}"))?;
    Ok(u32::try_from(mtu)?)
}

/// Nothing of Causeway is left on `node`: no route of our protocol (either family), no proxy
/// NDP entry, no `cw-*` link, no CNI config, no NAT table (either family).
fn node_is_clean(c: &Cluster, node: &str) -> Result<()> {
    let proto = ROUTE_PROTOCOL.to_string();
    for family in ["-4", "-6"] {
        let routes = c.exec(node, "ip", &[family, "route", "show", "proto", &proto])?;
        ensure!(
            routes.trim().is_empty(),
            "{node}: routes left (ip {family}): {routes}"
        );
    }
    let proxies = c.exec(node, "ip", &["-6", "neigh", "show", "proxy"])?;
    ensure!(
        proxies.trim().is_empty(),
        "{node}: proxy NDP entries left: {proxies}"
    );
    let links = c.exec(node, "ip", &["-brief", "link", "show"])?;
    let ours: Vec<&str> = links.lines().filter(|l| l.starts_with("cw-")).collect();
    ensure!(ours.is_empty(), "{node}: links left: {ours:?}");
    let conf = c.cni_conf_dir(node).join(cni::FILE_NAME);
    ensure!(!conf.exists(), "{node}: CNI config {} left", conf.display());
    for family in ["ip", "ip6"] {
        let tables = c.exec(node, "nft", &["list", "tables", family])?;
        ensure!(
            !tables
                .lines()
                .any(|l| l.trim() == format!("table {family} {NAT_TABLE}")),
            "{node}: nftables table {family} {NAT_TABLE} left"
        );
    }
    Ok(())
}

/// A one-shot iperf3 server, killed (by its pid) if it is still running when dropped: after a
/// failed run, or a client that never connected.
struct OneShotServer {
    child: Child,
}

impl OneShotServer {
    /// Waits until it exits by itself (it does after one test), up to `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "the iperf3 server exited with {status}");
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the one-shot iperf3 server still runs {timeout:?} after its test"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OneShotServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // The child is not reaped yet, so its pid cannot have been reused.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One iperf3 test: a one-shot server bound to `server.1` in namespace `server.0`, a client
/// bound to `client.1` in `client.0` sending `streams` TCP streams to it (`-P`; iperf3 3.12
/// runs them all in its one pinned thread). Both JSON reports are read: the server must have
/// seen the connection come from the client's own address, and have received what the
/// client reports.
fn iperf3(
    c: &Cluster,
    server: (&str, IpAddr),
    client: (&str, IpAddr),
    opts: &Options,
    streams: u32,
) -> Result<Run> {
    let (server_ns, server_ip) = server;
    let (client_ns, client_ip) = client;
    let port = PORT.to_string();
    let out_path = c.dir.join("iperf3-server.json");
    let err_path = c.dir.join("iperf3-server.err");
    let wire_ns = c.ns(CLIENT);
    causeway_e2e::cmd::ensure_not_shutting_down()?;
    let mut server = OneShotServer {
        child: cmd::in_netns(server_ns, "iperf3")
            .args(["-s", "-1", "-J", "-p", &port, "-B", &server_ip.to_string()])
            .args(affinity(SERVER_CPU))
            .stdin(Stdio::null())
            .stdout(File::create(&out_path)?)
            .stderr(File::create(&err_path)?)
            .spawn()
            .context("starting the iperf3 server")?,
    };
    wait_for("the iperf3 server listens", SERVER_TIMEOUT, || {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "the iperf3 server exited ({status}) before listening: {}",
                read_text(&out_path) + &read_text(&err_path)
            );
        }
        let listening = listening_on_port(server_ns)?;
        ensure!(listening, "not listening on port {PORT} yet");
        Ok(())
    })?;
    // `timeout` bounds the client should the path stall; iperf3 bounds only its sending.
    let limit = (opts.seconds + opts.omit + 20).to_string();
    let wire_before = tx_counters(&wire_ns, "eth0")?;
    let out = cmd::run(
        cmd::in_netns(client_ns, "timeout")
            .args([
                "-k",
                "5",
                &limit,
                "iperf3",
                "-c",
                &server_ip.to_string(),
                "-B",
                &client_ip.to_string(),
                "-p",
                &port,
                "-t",
                &opts.seconds.to_string(),
                "-O",
                &opts.omit.to_string(),
                "-J",
                "--connect-timeout",
                "5000",
                "-P",
                &streams.max(1).to_string(),
            ])
            .args(affinity(CLIENT_CPU)),
    )?;
    let wire_after = tx_counters(&wire_ns, "eth0")?;
    server.wait_exit(SERVER_TIMEOUT)?;
    let client_report: Value =
        serde_json::from_str(&out).context("the iperf3 client printed no JSON")?;
    let server_text = read_text(&out_path);
    let server_report: Value = serde_json::from_str(&server_text)
        .with_context(|| format!("the iperf3 server printed no JSON: {server_text}"))?;
    for (who, report) in [("client", &client_report), ("server", &server_report)] {
        if let Some(e) = report["error"].as_str() {
            bail!("iperf3 {who}: {e}");
        }
    }
    let seen = server_report["start"]["connected"][0]["remote_host"]
        .as_str()
        .context("the iperf3 server reports no connection")?;
    // Compared as addresses: iperf3 may print an IPv4 peer of a dual-stack socket mapped.
    ensure!(
        seen.parse::<IpAddr>()
            .is_ok_and(|a| a.to_canonical() == client_ip),
        "the server saw the connection come from {seen}, not from the client's {client_ip}"
    );
    let received = &client_report["end"]["sum_received"];
    let run = Run {
        bits_per_second: received["bits_per_second"]
            .as_f64()
            .context("no end.sum_received.bits_per_second")?,
        bytes: received["bytes"]
            .as_u64()
            .context("no end.sum_received.bytes")?,
        retransmits: client_report["end"]["sum_sent"]["retransmits"]
            .as_u64()
            .unwrap_or_default(),
        wire_packet: wire_after.0.saturating_sub(wire_before.0) as f64
            / wire_after.1.saturating_sub(wire_before.1).max(1) as f64,
    };
    let server_bytes = server_report["end"]["sum_received"]["bytes"]
        .as_u64()
        .unwrap_or_default();
    ensure!(
        run.bytes > 0 && run.bits_per_second > 0.0 && server_bytes > 0,
        "nothing arrived: client reports {} bytes received, server {server_bytes}",
        run.bytes
    );
    Ok(run)
}

/// Whether something listens on [`PORT`] in namespace `ns`.
fn listening_on_port(ns: &str) -> Result<bool> {
    let out = cmd::run(cmd::in_netns(ns, "ss").args(["-Hltn", "sport", "=", &format!(":{PORT}")]))?;
    Ok(!out.trim().is_empty())
}

/// `-A cpu` when the machine has a second CPU to give the other end.
fn affinity(cpu: &str) -> Vec<&str> {
    if cpus() >= 2 { vec!["-A", cpu] } else { vec![] }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_average() -> Result<String> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn gbps(r: &Run) -> f64 {
    r.bits_per_second / 1e9
}

fn rates(runs: &[Run]) -> Vec<f64> {
    runs.iter().map(gbps).collect()
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// `median (min–max)` of the runs' Gbit/s.
fn spread(runs: &[Run]) -> String {
    let r = rates(runs);
    let (lo, hi) = min_max(&r);
    format!("{:.2} ({lo:.2}–{hi:.2})", median(&r))
}

fn median_retransmits(runs: &[Run]) -> f64 {
    median(
        &runs
            .iter()
            .map(|r| r.retransmits as f64)
            .collect::<Vec<_>>(),
    )
}

fn median_wire_packet(runs: &[Run]) -> f64 {
    median(&runs.iter().map(|r| r.wire_packet).collect::<Vec<_>>())
}

/// Each pod run of a series ÷ the mean of the node runs just before and after it: the paired
/// per-run ratios, which see the same machine state on both sides.
fn run_ratios(s: &Series) -> Vec<f64> {
    s.pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let around: Vec<f64> = s.nodes.iter().skip(i).take(2).map(gbps).collect();
            let mean = around.iter().sum::<f64>() / around.len().max(1) as f64;
            gbps(p) / mean
        })
        .collect()
}

/// Resamples of the bootstrap and its confidence.
const BOOTSTRAP_RESAMPLES: usize = 10_000;
const CONFIDENCE: f64 = 0.95;

/// `median [lo, hi] (min–max)` of a series' per-run ratios: the bootstrap interval of the
/// median, then the range of the ratios themselves.
fn ratio_spread(s: &Series) -> String {
    let r = run_ratios(s);
    let (lo, hi) = min_max(&r);
    let interval = bootstrap_median(&r, BOOTSTRAP_RESAMPLES, CONFIDENCE, stats::SEED)
        .map_or_else(|| "[–]".to_string(), |(a, b)| format!("[{a:.2}, {b:.2}]"));
    format!("{:.2} {interval} ({lo:.2}–{hi:.2})", median(&r))
}

/// Whether a series' bootstrap interval says the subject's target is met.
fn verdict(subject: Subject, s: &Series) -> String {
    let Some(t) = subject.target() else {
        return "reference".into();
    };
    let r = run_ratios(s);
    match bootstrap_median(&r, BOOTSTRAP_RESAMPLES, CONFIDENCE, stats::SEED)
        .map(|i| stats::meets(i, t))
    {
        Some(Some(true)) => format!("≥ {t}: met"),
        Some(Some(false)) => format!("≥ {t}: missed"),
        Some(None) => format!("≥ {t}: cannot tell"),
        None => format!("≥ {t}: one run"),
    }
}

fn baseline_of(baselines: &[Baseline], family: Family) -> Option<&Baseline> {
    baselines.iter().find(|b| b.family == family)
}

fn same_block_ratio(s: &Series) -> f64 {
    median(&rates(&s.pods)) / median(&rates(&s.nodes))
}

fn print_report(r: &Report, opts: &Options) {
    let start_median = |family: Family| {
        baseline_of(&r.start, family).map_or(f64::NAN, |b| median(&rates(&b.runs)))
    };
    println!("\n## Datapath throughput (iperf3): pod↔pod across nodes vs node↔node, per family\n");
    println!(
        "One TCP stream node-a → node-b, {} s per run{}, Gbit/s as the receiver measured it: \
         median (min–max) of {} runs per path and block; node↔node runs (over the nodes' \
         addresses of the block's family) alternate with the pod runs of the same block; \
         per-run ratio = each pod run ÷ the mean of the node runs before and after it, shown \
         as median [{:.0}% percentile bootstrap interval of the median, {BOOTSTRAP_RESAMPLES} \
         resamples, seed {:#x}] (min–max); target: the issue's (Flat and Routed ≥ 0.95, \
         Overlay ≥ 0.85), met when the whole interval is at or above it. {}; {} CPUs{}; load \
         average {} before the run, {} after it.\n",
        opts.seconds,
        if opts.omit > 0 {
            format!(" (the first {} s omitted)", opts.omit)
        } else {
            String::new()
        },
        opts.repeats,
        CONFIDENCE * 100.0,
        stats::SEED,
        r.versions,
        cpus(),
        if cpus() >= 2 {
            format!(", iperf3 client on CPU {CLIENT_CPU} and server on CPU {SERVER_CPU}")
        } else {
            String::new()
        },
        r.load,
        r.load_end
    );
    println!(
        "| family | path | MTU | Gbit/s | node↔node in the same block, Gbit/s | ratio to same block | per-run ratios | target | ratio to start | retransmits | bytes/packet on node-a's eth0 | load at block start |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let baseline_row = |label: &str, b: &Baseline| {
        println!(
            "| {} | node↔node, no PodNetwork ({label}) | {} | {} | | | | | {:.2} | {:.0} | {:.0} | |",
            b.family.label(),
            r.underlay_mtu,
            spread(&b.runs),
            median(&rates(&b.runs)) / start_median(b.family),
            median_retransmits(&b.runs),
            median_wire_packet(&b.runs)
        );
    };
    for b in &r.start {
        baseline_row("start", b);
    }
    for m in &r.modes {
        let s = &m.single;
        println!(
            "| {} | {} pod↔pod | {} | {} | {} | {:.2} | {} | {} | {:.2} | {:.0} | {:.0} | {} |",
            m.family.label(),
            m.subject.label(),
            m.pod_mtu,
            spread(&s.pods),
            spread(&s.nodes),
            same_block_ratio(s),
            ratio_spread(s),
            verdict(m.subject, s),
            median(&rates(&s.pods)) / start_median(m.family),
            median_retransmits(&s.pods),
            median_wire_packet(&s.pods),
            m.load
        );
    }
    for b in &r.end {
        baseline_row("end", b);
    }
    if opts.parallel > 1 {
        print_parallel(r, opts.parallel);
    }
    if opts.families.len() > 1 {
        print_families_side_by_side(r);
    }
    print_against_flannel(r);
    println!();
    for &family in &opts.families {
        let all: Vec<f64> = baseline_of(&r.start, family)
            .into_iter()
            .flat_map(|b| &b.runs)
            .chain(
                r.modes
                    .iter()
                    .filter(|m| m.family == family)
                    .flat_map(|m| &m.single.nodes),
            )
            .chain(
                baseline_of(&r.end, family)
                    .into_iter()
                    .flat_map(|b| &b.runs),
            )
            .map(gbps)
            .collect();
        let (lo, hi) = min_max(&all);
        println!(
            "All {} {} single-stream node↔node runs: {lo:.2}–{hi:.2} Gbit/s (median {:.2}).",
            all.len(),
            family.label(),
            median(&all)
        );
    }
    for m in &r.modes {
        if let Some(tx) = m.vxlan_tx {
            let payload: u64 = m
                .single
                .pods
                .iter()
                .chain(m.parallel.iter().flat_map(|p| &p.pods))
                .map(|r| r.bytes)
                .sum();
            println!(
                "{} {}: node-a's VXLAN device sent {:.2} GB during the pod runs (iperf3 \
                 counted {:.2} GB of payload).",
                m.subject.label(),
                m.family.label(),
                tx as f64 / 1e9,
                payload as f64 / 1e9,
            );
        }
    }
}

/// Each Causeway IPv4 block against the flannel reference block of the same shape in the same
/// run (Overlay against VXLAN, Routed against host-gw), when both ran: the same-block ratios
/// side by side, and the pod↔pod throughputs divided.
fn print_against_flannel(r: &Report) {
    let find = |subject: Subject| {
        r.modes
            .iter()
            .find(|m| m.subject == subject && m.family == Family::V4)
    };
    let pods = |m: &ModeResult| median(&rates(&m.single.pods));
    for backend in flannel::Backend::ALL {
        let (Some(ours), Some(theirs)) = (
            find(Subject::Mode(backend.causeway_mode())),
            find(Subject::Flannel(backend)),
        ) else {
            continue;
        };
        println!(
            "\nCauseway {:?} ÷ flannel {} (IPv4, one stream, same run): ratio to same block \
             {:.2} against {:.2} ({:.2}×); pod↔pod {:.2} against {:.2} Gbit/s ({:.2}×).",
            backend.causeway_mode(),
            backend.label(),
            same_block_ratio(&ours.single),
            same_block_ratio(&theirs.single),
            same_block_ratio(&ours.single) / same_block_ratio(&theirs.single),
            pods(ours),
            pods(theirs),
            pods(ours) / pods(theirs),
        );
    }
}

/// The `--parallel` runs of each block next to its single stream: the same paired ratios.
fn print_parallel(r: &Report, streams: u32) {
    println!(
        "\n{streams} parallel TCP streams (`iperf3 -P {streams}`, one client process pinned as \
         above), each run right after the single-stream run of the same path:\n"
    );
    println!(
        "| family | path | pod↔pod ×{streams}, Gbit/s | node↔node ×{streams}, Gbit/s | ratio to same block | per-run ratios | target | pod↔pod ×{streams} ÷ single stream | retransmits |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for m in &r.modes {
        let Some(p) = &m.parallel else { continue };
        println!(
            "| {} | {} pod↔pod | {} | {} | {:.2} | {} | {} | {:.2} | {:.0} |",
            m.family.label(),
            m.subject.label(),
            spread(&p.pods),
            spread(&p.nodes),
            same_block_ratio(p),
            ratio_spread(p),
            verdict(m.subject, p),
            median(&rates(&p.pods)) / median(&rates(&m.single.pods)),
            median_retransmits(&p.pods),
        );
    }
}

/// Per mode, the IPv6 block next to the IPv4 block that ran just before it.
fn print_families_side_by_side(r: &Report) {
    println!(
        "\n| mode | ratio to same block, IPv4 | ratio to same block, IPv6 | IPv6 ÷ IPv4, pod↔pod Gbit/s | IPv6 ÷ IPv4, node↔node Gbit/s |"
    );
    println!("|---|---|---|---|---|");
    if let (Some(v4), Some(v6)) = (
        baseline_of(&r.start, Family::V4),
        baseline_of(&r.start, Family::V6),
    ) {
        println!(
            "| no PodNetwork (start) | | | | {:.2} |",
            median(&rates(&v6.runs)) / median(&rates(&v4.runs))
        );
    }
    for v6 in r.modes.iter().filter(|m| m.family == Family::V6) {
        let Some(v4) = r
            .modes
            .iter()
            .find(|m| m.family == Family::V4 && m.subject == v6.subject)
        else {
            continue;
        };
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            v6.subject.label(),
            same_block_ratio(&v4.single),
            same_block_ratio(&v6.single),
            median(&rates(&v6.single.pods)) / median(&rates(&v4.single.pods)),
            median(&rates(&v6.single.nodes)) / median(&rates(&v4.single.nodes))
        );
    }
    if let (Some(v4), Some(v6)) = (
        baseline_of(&r.end, Family::V4),
        baseline_of(&r.end, Family::V6),
    ) {
        println!(
            "| no PodNetwork (end) | | | | {:.2} |",
            median(&rates(&v6.runs)) / median(&rates(&v4.runs))
        );
    }
}
