//! The running node agent at scale (issue #5): `causeway-node-agent` against a real
//! kube-apiserver holding N NodeSubnets of one Overlay PodNetwork.
//!
//! For each N a fresh test cluster (real kube-apiserver + etcd, no operator: the bench writes
//! the NodeSubnets itself, as the operator would) gets one node namespace, `node-a`, whose
//! `eth0` holds the node address in an underlay /16. Then:
//!
//! 1. **idle reference**: the agent starts with only its own NodeSubnet (N = 1); its time to
//!    Programmed and its memory after 2 s are the reference for the ratios. The NodeSubnet is
//!    then deleted, so the agent removes everything it made and releases it, the agent is
//!    stopped and the NodeSubnet recreated: the node is empty again.
//! 2. **start at N**: N − 1 peer NodeSubnets are created (32 at a time) as the operator writes
//!    them (labels, an owner reference to the PodNetwork), each then given the status its own
//!    agent would write (two conditions, counts, MTU, underlay prefix), so the agent caches
//!    what it caches in a real cluster; the agent is started
//!    and timed until its own NodeSubnet reports `Programmed=True` with `status.routes` = N − 1
//!    (seen on a watch, not polled). The kernel must then hold N − 1 routes, neighbours and
//!    FDB entries. Peak memory (VmHWM) and CPU time are read from `/proc` at that moment.
//! 3. **one peer change**: R times, one more NodeSubnet is created and timed until its route
//!    is in the node namespace, then an original one is deleted and timed until its route is
//!    gone (both seen by `ip -n <node ns> monitor route`, checked with `ip route show proto
//!    249`). The agent's `/metrics` before and after the changes give its own part: the count
//!    and mean of its peer passes (`causeway_agent_pass_duration_seconds{kind="peers"}`), and
//!    of the full passes (the periodic resync) that ran meanwhile.
//! 4. **afterwards**: the agent keeps running through at least one periodic resync (the
//!    chart's 30 s), then its VmHWM and VmRSS are read again.
//! 5. **baseline**: `ip -batch` + `bridge -batch` insert the same 3 × (N − 1) routes (each
//!    IPv4 one through a nexthop object of its own, as the agent adds them),
//!    neighbours and FDB entries into a fresh namespace with the same links (made beforehand,
//!    untimed), as `node-agent/benches/netlink.rs` does; the counts are checked the same way.
//!
//! With `--dual-stack` (issue #18) the PodNetwork also has an IPv6 `secondaryCidr` and every
//! NodeSubnet, the agent's own and the peers', its IPv6 /64; the node namespaces get IPv6 on
//! the links created from then on (`net.ipv6.conf.default.disable_ipv6=0`, in the bench's
//! namespaces only). Per peer the agent then programs 5 entries: an IPv4 and an IPv6 route,
//! an IPv4 and an IPv6 permanent neighbour, and the FDB entry both families share. Every
//! count check is the dual-stack one (`status.routes` counts the routes of both families:
//! 2 × (N − 1)), a peer change is timed until each family's route is in (or gone from) the
//! node, and the baseline inserts the same 5 × (N − 1) entries.
//!
//! With `--ipv6` the PodNetwork is IPv6 only (`fd00:10:64::/48`, a /64 per node) and every
//! node address IPv6 (the node's `eth0` holds `fd00:168::11/64` beside its IPv4 address, the
//! peers' addresses are in `fd00:168::/64`): the VXLAN device tunnels over IPv6 (an IPv6
//! `local`, FDB entries to IPv6 addresses, MTU 1430) and each peer costs an IPv6 route,
//! neighbour and FDB entry; the baseline inserts the same 3 × (N − 1) IPv6 entries.
//!
//! With `--flannel` (issue #19) the IPv4 pass also runs flannel's `flanneld` (v0.28.10, the
//! VXLAN backend with the Kubernetes subnet manager) as a second baseline, at the same N, on the
//! same API server, right after the agent's measurements: a second node namespace, `node-f`,
//! on the same underlay; N − 1 Node objects carrying flannel's annotations and a `spec.podCIDR`
//! (the same /24s and node addresses as the NodeSubnets), plus flannel's own Node; flanneld is
//! started inside `node-f` and timed until all N − 1 routes via `flannel.1` are in the kernel
//! (polled), then the same peer changes are timed on `ip monitor route`, and its VmHWM and CPU
//! time are read from `/proc` as the agent's are. The binary comes from
//! `e2e/scripts/build-flannel.sh` (built once into /var/cache/causeway); the bench runs that
//! script and fails with its output when it cannot build.
//!
//! Run: `make bench`, or `cargo build --release --workspace --bins && cargo bench -p
//! causeway-e2e --bench agent -- [--nodes 1000,5000] [--changes 5] [--settle-seconds 35]
//! [--ipv4] [--dual-stack] [--ipv6] [--flannel] [--cluster agentb]` (one pass per family
//! option, in the order given; none: IPv4 only; `--cluster` names the test cluster, so two
//! runs on one machine do not remove each other's). Without `--bench` (`cargo test --all-targets`, so `make test`) it
//! runs with N = 50 as a smoke test, once IPv4 only, once dual-stack and once IPv6 only, that
//! still checks every count. Needs root, like the e2e suite.
//!
//! Everything happens in namespaces of the bench's cluster (`cw-agentb-*` by default), which the
//! harness removes on success, failure, panic (drop) and Ctrl-C; the root namespace is only
//! touched by the harness's own veth to the API server.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use causeway_crds::conditions::{find_condition, types};
use causeway_crds::vtep::vtep_mac;
use causeway_crds::{NodeSubnet, NodeSubnetSpec, PodNetwork};
use causeway_e2e::apiserver_metrics::{grown, write_counts};
use causeway_e2e::cluster::UpOptions;
use causeway_e2e::controlplane::causeway_binary;
use causeway_e2e::proc::{ProcId, Usage, usage};
use causeway_e2e::topology::{ControlPlane, Host, Segment};
use causeway_e2e::{Cluster, Topology, cmd, demo, deploy, state};
use causeway_node_agent::model::ROUTE_PROTOCOL;
use causeway_node_agent::netlink::nexthop;
use causeway_node_agent::plan::{BRIDGE_LINK, vxlan_link_name};
use futures::{StreamExt, TryStreamExt};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::Value;
use tokio::sync::Notify;

#[path = "agent/flannel.rs"]
mod flannel;

/// The test cluster's name unless `--cluster` gives another.
const DEFAULT_CLUSTER: &str = "agentb";
/// The test cluster's name, set once from the arguments before anything is brought up.
static CLUSTER: OnceLock<String> = OnceLock::new();

fn cluster_name() -> &'static str {
    CLUSTER.get().map_or(DEFAULT_CLUSTER, String::as_str)
}
const NETWORK: &str = "bench";
/// The node the agent runs for (a namespace of the test cluster).
const NODE: &str = "node-a";
/// The underlay: the agent's node and every peer's node address are in it.
const UNDERLAY: &str = "192.168.0.0/16";
const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 11);
const CP_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
/// The PodNetwork's range: 32,768 /24s.
const POD_CIDR: &str = "10.128.0.0/9";
const MASK: u8 = 24;
/// The PodNetwork's IPv6 range with `--dual-stack` (`secondaryCidr`) and `--ipv6` (`cidr`):
/// 65,536 /64s.
const POD_CIDR6: &str = "fd00:10:64::/48";
const MASK6: u8 = 64;
/// The underlay's IPv6 prefix with `--ipv6`, and the node's address in it.
const UNDERLAY6: &str = "fd00:168::/64";
const NODE_ADDRESS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x168, 0, 0, 0, 0, 0, 0x11);
const CP_ADDRESS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x168, 0, 0, 0, 0, 0, 0x2);

/// The families of the benchmarked network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stack {
    /// An IPv4 network over IPv4 node addresses.
    Ipv4,
    /// IPv4 `cidr`, IPv6 `secondaryCidr`, IPv4 node addresses (`--dual-stack`).
    Dual,
    /// An IPv6 network over IPv6 node addresses (`--ipv6`).
    Ipv6,
}

impl Stack {
    fn v4(self) -> bool {
        self != Stack::Ipv6
    }

    fn v6(self) -> bool {
        self != Stack::Ipv4
    }

    /// Routes (and neighbours) per peer.
    fn families(self) -> usize {
        usize::from(self.v4()) + usize::from(self.v6())
    }

    /// `""`, `" (dual-stack)"` or `" (IPv6)"`, for messages.
    fn label(self) -> &'static str {
        match self {
            Stack::Ipv4 => "",
            Stack::Dual => " (dual-stack)",
            Stack::Ipv6 => " (IPv6)",
        }
    }
}
/// The default overlay VNI (the PodNetwork sets no `overlay` block).
const VNI: u32 = 1;
const CREATE_CONCURRENCY: usize = 32;
const PROGRAMMED_TIMEOUT: Duration = Duration::from_secs(600);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

struct Options {
    sizes: Vec<usize>,
    /// The passes over `sizes`, one per family combination.
    stacks: Vec<Stack>,
    /// Peer additions (and as many deletions) timed at each size.
    changes: usize,
    /// How long the agent keeps running after the changes before the last memory reading.
    settle: Duration,
    /// Pause after creating the peers, and between changes, so each measurement starts from
    /// a quiet API server and agent.
    quiet: Duration,
    /// How long the idle agent runs after Programmed before its memory is read.
    idle_settle: Duration,
    /// The test cluster's name (`--cluster`).
    cluster: String,
    /// Also measure flanneld at each size of the IPv4 pass (`--flannel`).
    flannel: bool,
}

fn parse_args() -> Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` (the suite) runs this binary
    // without it: then a small smoke run proves the benchmark still works end to end.
    if !args.iter().any(|a| a == "--bench") {
        // `--cluster NAME` is honoured here too, so the smoke run can be tried beside another
        // run of the bench on the same machine.
        let cluster = args
            .iter()
            .position(|a| a == "--cluster")
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| DEFAULT_CLUSTER.into());
        eprintln!(
            "[bench] not run by `cargo bench`: smoke run with N = 50 and 2 peer changes, IPv4 only, dual-stack, then IPv6 only"
        );
        return Ok(Options {
            sizes: vec![50],
            stacks: vec![Stack::Ipv4, Stack::Dual, Stack::Ipv6],
            changes: 2,
            settle: Duration::ZERO,
            quiet: Duration::from_millis(300),
            // The smoke run's figures are no measurements: a short settle keeps its two
            // passes (IPv4 only, dual-stack, IPv6 only) within ~40 s.
            idle_settle: Duration::from_millis(500),
            cluster,
            flannel: false,
        });
    }
    let mut opts = Options {
        sizes: vec![1000, 5000],
        stacks: vec![Stack::Ipv4],
        changes: 5,
        // The chart's resync interval is 30 s: at least one full resync pass is included.
        settle: Duration::from_secs(35),
        quiet: Duration::from_secs(2),
        idle_settle: Duration::from_secs(2),
        cluster: DEFAULT_CLUSTER.into(),
        flannel: false,
    };
    let mut chosen = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                let v = args
                    .next()
                    .context("--nodes needs a value, e.g. 1000,5000")?;
                opts.sizes = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--nodes {v}: expected numbers like 1000,5000"))?;
            }
            "--changes" => {
                let v = args.next().context("--changes needs a number")?;
                opts.changes = v.parse().with_context(|| format!("--changes {v}"))?;
            }
            "--settle-seconds" => {
                let v = args.next().context("--settle-seconds needs a number")?;
                opts.settle = Duration::from_secs(
                    v.parse().with_context(|| format!("--settle-seconds {v}"))?,
                );
            }
            // Each adds a pass, in the order given; none: IPv4 only.
            "--ipv4" => chosen.push(Stack::Ipv4),
            "--dual-stack" => chosen.push(Stack::Dual),
            "--ipv6" => chosen.push(Stack::Ipv6),
            "--flannel" => opts.flannel = true,
            "--cluster" => {
                opts.cluster = args.next().context("--cluster needs a name, e.g. agentf")?;
            }
            "--bench" => {}
            other => bail!(
                "unknown argument {other}; use --nodes 1000,5000, --changes 5, --settle-seconds 35, --ipv4, --dual-stack, --ipv6, --flannel, --cluster NAME"
            ),
        }
    }
    if !chosen.is_empty() {
        opts.stacks = chosen;
    }
    ensure!(
        !opts.sizes.is_empty() && opts.sizes.iter().all(|&n| n >= 2),
        "--nodes needs sizes of at least 2 (the agent's node and a peer)"
    );
    ensure!(opts.changes > 0, "--changes must be at least 1");
    ensure!(
        !opts.flannel || opts.stacks.contains(&Stack::Ipv4),
        "--flannel runs in the IPv4 pass (flannel's IPv4 VXLAN backend): add --ipv4"
    );
    Ok(opts)
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|opts| {
        let name = CLUSTER.get_or_init(|| opts.cluster.clone());
        if let Err(e) = state::teardown_on_interrupt(name, "[bench]") {
            eprintln!("[bench] {e:#}");
        }
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(run(opts))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[bench] failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(opts: Options) -> Result<()> {
    causeway_e2e::cluster::require_prerequisites()?;
    // Fail before bringing anything up when the agent was not built.
    let agent = causeway_binary("causeway-node-agent")?;
    eprintln!("[bench] agent binary: {}", agent.display());
    let flanneld = if opts.flannel {
        let bin = tokio::task::block_in_place(causeway_e2e::flannel::flanneld)?;
        eprintln!("[bench] flanneld binary: {}", bin.display());
        Some(bin)
    } else {
        None
    };
    let opts = &opts;
    for &stack in &opts.stacks {
        let mut report = Vec::new();
        // flanneld runs beside the agent in the IPv4 pass only.
        let flanneld = flanneld.as_ref().filter(|_| stack == Stack::Ipv4);
        for &n in &opts.sizes {
            let result = with_cluster(stack, flanneld.is_some(), |c| async move {
                let mut result = run_size(&c, n, stack, opts).await?;
                if let Some(bin) = flanneld {
                    result.flannel = Some(
                        flannel::run(&c, bin, n, opts)
                            .await
                            .with_context(|| format!("flanneld at N = {n}"))?,
                    );
                }
                Ok(result)
            })
            .await
            .with_context(|| format!("the agent at N = {n}{}", stack.label()))?;
            print_size(n, stack, &result);
            report.push((n, result));
        }
        print_report(&report, stack, opts.changes, opts.settle);
    }
    Ok(())
}

/// Where the agent's start-up time went, from its own log (wall clock, relative to spawn).
#[derive(Clone, Copy, Debug, Default)]
struct Phases {
    /// Spawn → the first pass's operations decided and logged, just before they are applied
    /// (connect, list both kinds, plan, observe, diff).
    first_op: Duration,
    /// Operations the agent logged.
    ops: usize,
}

/// What the agent achieved at one size.
#[derive(Debug, Default)]
struct SizeResult {
    idle_programmed: Duration,
    idle: Usage,
    create_peers: Duration,
    programmed: Duration,
    at_programmed: Usage,
    phases: Option<Phases>,
    /// Per change: until the peer's IPv4 route was in the node (and gone, for deletions).
    adds: Vec<Duration>,
    deletes: Vec<Duration>,
    /// The same for its IPv6 route (dual-stack only; empty otherwise).
    adds6: Vec<Duration>,
    deletes6: Vec<Duration>,
    /// Per change: how long the create and delete requests took (until the API server
    /// answered; its watch event goes out about then).
    add_requests: Vec<Duration>,
    delete_requests: Vec<Duration>,
    /// The agent's peer passes during the changes (its `pass_duration_seconds` histogram,
    /// `kind="peers"`): how many, and their mean.
    peer_passes: (f64, Duration),
    /// Its full passes (the periodic resync) in the same time.
    full_passes: (f64, Duration),
    after: Usage,
    /// `/metrics` scraped during the settle: how often, and the last answer's size and
    /// sample count.
    scrapes: usize,
    scrape_bytes: usize,
    scrape_series: usize,
    baseline: Duration,
    /// flanneld at the same N (`--flannel`, IPv4 pass only).
    flannel: Option<flannel::FlannelResult>,
    /// API writes by verb and resource (the API server's `apiserver_request_total`): from the
    /// agent's start to Programmed (its join, all the agent's own), during the changes with
    /// the bench's own creates and deletes left out, and during the settle.
    start_writes: BTreeMap<String, f64>,
    change_writes: BTreeMap<String, f64>,
    settle_writes: BTreeMap<String, f64>,
}

/// One node on one /16 segment with the control plane; no kube-controller-manager (nothing
/// here needs it) and no client. With `Stack::Ipv6` the segment also carries
/// [`UNDERLAY6`] and the node its IPv6 address there. With `flannel`, a second node namespace
/// on the same segment for flanneld ([`flannel::NODE`]), idle until the agent is done.
fn topology(stack: Stack, flannel: bool) -> Result<Topology> {
    let v6 = stack == Stack::Ipv6;
    let mut nodes = vec![Host {
        name: NODE.into(),
        segment: "lan".into(),
        address: NODE_ADDRESS,
        address6: v6.then_some(NODE_ADDRESS6),
        labels: Default::default(),
        routes: Vec::new(),
    }];
    if flannel {
        nodes.push(Host {
            name: flannel::NODE.into(),
            segment: "lan".into(),
            address: flannel::NODE_ADDRESS,
            address6: None,
            labels: Default::default(),
            routes: Vec::new(),
        });
    }
    Ok(Topology {
        segments: vec![Segment {
            name: "lan".into(),
            cidr: Some(UNDERLAY.parse()?),
            cidr6: if v6 { Some(UNDERLAY6.parse()?) } else { None },
        }],
        control_plane: ControlPlane {
            segment: "lan".into(),
            address: CP_ADDRESS,
            address6: v6.then_some(CP_ADDRESS6),
            controller_manager: false,
        },
        routers: vec![],
        nodes,
        clients: vec![],
        kubelet: false,
        default_routes: false,
        rp_filter: None,
    })
}

/// Brings up a fresh cluster, runs `f`, and tears the cluster down whatever `f` returned (on
/// a panic, `Cluster`'s drop does).
async fn with_cluster<F, Fut>(stack: Stack, flannel: bool, f: F) -> Result<SizeResult>
where
    F: FnOnce(Arc<Cluster>) -> Fut,
    Fut: std::future::Future<Output = Result<SizeResult>>,
{
    let topology = topology(stack, flannel)?;
    let cluster = Arc::new(tokio::task::block_in_place(|| {
        Cluster::up_with(
            cluster_name(),
            topology,
            UpOptions {
                skip_node_registration: true,
                ..UpOptions::default()
            },
        )
    })?);
    let result = f(cluster.clone()).await;
    if result.is_err() {
        eprintln!("{}", cluster.log_tail(&agent_role(), 20));
        if flannel {
            eprintln!("{}", cluster.log_tail(flannel::ROLE, 30));
        }
    }
    tokio::task::block_in_place(|| cluster.teardown())?;
    result
}

fn agent_role() -> String {
    format!("agent-{NODE}")
}

/// Member `i` of the network: 0 is the agent's own node, 1.. are peers. Subnet `i` of the
/// pool, node address 192.168.1.0 + i (fd00:168::1:0 + i with `--ipv6`), the VTEP MAC the
/// operator would publish.
struct Member {
    node: String,
    cidr: Ipv4Net,
    /// Subnet `i` of the IPv6 pool (`--dual-stack` and `--ipv6` only).
    cidr6: Ipv6Net,
    address: Ipv4Addr,
    /// The node's IPv6 address (`--ipv6` only).
    address6: Ipv6Addr,
}

impl Member {
    /// Its node address as the bench's NodeSubnets have it.
    fn node_address(&self, stack: Stack) -> std::net::IpAddr {
        if stack == Stack::Ipv6 {
            self.address6.into()
        } else {
            self.address.into()
        }
    }
}

fn member(i: usize) -> Result<Member> {
    let i = u32::try_from(i)?;
    ensure!(
        i < 1 << (MASK - 9),
        "at most 32,768 members fit in {POD_CIDR}"
    );
    let pool: Ipv4Net = POD_CIDR.parse()?;
    let cidr = Ipv4Net::new(
        Ipv4Addr::from(u32::from(pool.network()) + (i << (32 - MASK))),
        MASK,
    )?;
    let pool6: Ipv6Net = POD_CIDR6.parse()?;
    let cidr6 = Ipv6Net::new(
        Ipv6Addr::from(u128::from(pool6.network()) + (u128::from(i) << (128 - MASK6))),
        MASK6,
    )?;
    let (node, address, address6) = if i == 0 {
        (NODE.to_string(), NODE_ADDRESS, NODE_ADDRESS6)
    } else {
        ensure!(i < 60_000, "at most 60,000 peer addresses");
        (
            format!("peer-{i:05}"),
            Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 1, 0)) + i),
            Ipv6Addr::from(
                u128::from(Ipv6Addr::new(0xfd00, 0x168, 0, 0, 0, 0, 1, 0)) + u128::from(i),
            ),
        )
    };
    Ok(Member {
        node,
        cidr,
        cidr6,
        address,
        address6,
    })
}

/// The NodeSubnet the operator would write for member `i` (name, labels and spec); dual-stack,
/// its IPv6 subnet too (no `secondaryNodeAddress`: the nodes are IPv4 only); IPv6 only, its
/// IPv6 subnet and address alone.
fn node_subnet(i: usize, stack: Stack, owner_uid: &str) -> Result<NodeSubnet> {
    let m = member(i)?;
    let name = if stack == Stack::Ipv6 {
        format!("{NETWORK}-v6-{i:05}")
    } else {
        format!(
            "{NETWORK}-{}-{}",
            m.cidr.network().to_string().replace('.', "-"),
            m.cidr.prefix_len()
        )
    };
    let cidr = if stack == Stack::Ipv6 {
        m.cidr6.to_string()
    } else {
        m.cidr.to_string()
    };
    let mut ns = NodeSubnet::new(
        &name,
        NodeSubnetSpec {
            network: NETWORK.into(),
            node_name: m.node.clone(),
            cidr,
            node_address: m.node_address(stack).to_string(),
            vtep_mac: Some(vtep_mac(&m.node).to_string()),
            secondary_cidr: (stack == Stack::Dual).then(|| m.cidr6.to_string()),
            secondary_node_address: None,
        },
    );
    ns.metadata = ObjectMeta {
        name: Some(name),
        labels: Some(
            [
                ("causeway.dev/network".to_string(), NETWORK.to_string()),
                ("causeway.dev/node".to_string(), m.node),
            ]
            .into(),
        ),
        owner_references: Some(vec![OwnerReference {
            api_version: "causeway.dev/v1alpha1".into(),
            kind: "PodNetwork".into(),
            name: NETWORK.into(),
            uid: owner_uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..ObjectMeta::default()
    };
    Ok(ns)
}

/// The status a peer's own agent writes once it programmed `peers` peers (what `kubectl get
/// nodesubnet -o yaml` shows on a healthy Overlay node), so the cache the agent under test
/// keeps of its peers holds what it holds in a real cluster.
fn peer_status(peers: usize, stack: Stack) -> serde_json::Value {
    let range = if stack == Stack::Ipv6 {
        POD_CIDR6
    } else {
        POD_CIDR
    };
    let message = format!(
        "The dataplane matches the plan: pod MTU 1450; pod traffic to destinations outside \
         {range} is masqueraded."
    );
    let condition = |kind: &str| {
        serde_json::json!({
            "type": kind, "status": "True", "reason": "Programmed", "message": message,
            "lastTransitionTime": "2026-12-07T00:00:00Z", "observedGeneration": 1,
        })
    };
    serde_json::json!({"status": {
        "conditions": [condition("Programmed"), condition("Ready")],
        "observedGeneration": 1,
        "routes": peers, "neighbours": peers, "fdbEntries": peers,
        "effectiveMtu": 1450,
        "underlayPrefix": "192.168.0.0/16",
    }})
}

/// Creates the NodeSubnets `range`, each, with `status: Some(peers)`, then given the status its
/// agent writes when it has `peers` peers ([`peer_status`]).
async fn create_subnets(
    api: &Api<NodeSubnet>,
    range: std::ops::Range<usize>,
    stack: Stack,
    owner_uid: &str,
    status: Option<usize>,
) -> Result<()> {
    futures::stream::iter(range)
        .map(|i| {
            let api = api.clone();
            async move {
                let ns = node_subnet(i, stack, owner_uid)?;
                let name = ns.name_any();
                api.create(&PostParams::default(), &ns)
                    .await
                    .with_context(|| format!("creating NodeSubnet {name}"))?;
                if let Some(peers) = status {
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(peer_status(peers, stack)),
                    )
                    .await
                    .with_context(|| format!("writing the status of NodeSubnet {name}"))?;
                }
                Ok(())
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// What the agent last reported on its own NodeSubnet.
#[derive(Clone, Debug, Default)]
struct Report {
    exists: bool,
    programmed: bool,
    routes: i32,
    neighbours: i32,
    fdb_entries: i32,
    message: String,
}

/// A watch on the agent's own NodeSubnet, recording every version with the time it arrived,
/// so a wait finds the first version that satisfied it, however late the waiter looks.
struct StatusWatch {
    history: Arc<Mutex<Vec<(Instant, Report)>>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusWatch {
    async fn start(api: Api<NodeSubnet>, name: &str) -> Result<Self> {
        let history: Arc<Mutex<Vec<(Instant, Report)>>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let config = watcher::Config::default()
            .fields(&format!("metadata.name={name}"))
            .any_semantic();
        let task = {
            let history = history.clone();
            let changed = changed.clone();
            tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                let mut stream = Box::pin(watcher(api, config));
                while let Some(ev) = stream.next().await {
                    let report = match ev {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                            let status = o.status.clone().unwrap_or_default();
                            let programmed = find_condition(&status.conditions, types::PROGRAMMED);
                            Report {
                                exists: true,
                                programmed: programmed.is_some_and(|c| c.status == "True"),
                                routes: status.routes,
                                neighbours: status.neighbours,
                                fdb_entries: status.fdb_entries,
                                message: programmed.map(|c| c.message.clone()).unwrap_or_default(),
                            }
                        }
                        Ok(watcher::Event::Delete(_)) => Report::default(),
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                            continue;
                        }
                        Ok(watcher::Event::Init) => continue,
                        Err(e) => {
                            eprintln!("[bench] watch error (retrying): {e}");
                            continue;
                        }
                    };
                    history
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((Instant::now(), report));
                    changed.notify_waiters();
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .context("the watch did not list within 60 s")?
            .context("the watch ended before listing")?;
        Ok(Self {
            history,
            changed,
            task,
        })
    }

    /// A mark: waits only consider versions that arrive after it.
    fn mark(&self) -> usize {
        self.history.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn last(&self) -> Report {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    }

    /// When the first version after `mark` satisfying `done` arrived.
    async fn wait(
        &self,
        mark: usize,
        what: &str,
        timeout: Duration,
        alive: impl Fn() -> bool,
        done: impl Fn(&Report) -> bool,
    ) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let found = self
                .history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .skip(mark)
                .find(|(_, r)| done(r))
                .map(|(at, _)| *at);
            if let Some(at) = found {
                return Ok(at);
            }
            ensure!(
                alive(),
                "{what}: the agent exited; last report {:?}",
                self.last()
            );
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "{what}: not done after {timeout:?}; last report {:?}",
                self.last()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The agent's `/metrics`, as a Prometheus in the node would scrape them.
fn agent_metrics(c: &Cluster) -> Result<String> {
    let body = c.exec(
        NODE,
        "curl",
        &["-sS", "--max-time", "5", "http://127.0.0.1:9809/metrics"],
    )?;
    ensure!(
        body.contains("causeway_agent_build_info"),
        "/metrics answered without the agent's metrics: {body}"
    );
    Ok(body)
}

/// The count and sum (seconds) of the agent's passes of `kind` (`peers`, `full`) in a
/// `/metrics` text.
fn passes(body: &str, kind: &str) -> (f64, f64) {
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value(&format!(
            "causeway_agent_pass_duration_seconds_count{{kind=\"{kind}\"}}"
        )),
        value(&format!(
            "causeway_agent_pass_duration_seconds_sum{{kind=\"{kind}\"}}"
        )),
    )
}

/// `ip -n NS monitor route`, read on a thread: every line with the time it arrived. The
/// process is ours (killed by its handle on drop) and lives in the node namespace, so the
/// cluster's tear-down would end it too.
struct RouteMonitor {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl RouteMonitor {
    fn start(ns: &str) -> Result<Self> {
        causeway_e2e::cmd::ensure_not_shutting_down()?;
        let mut child = Command::new("ip")
            .args(["-n", ns, "monitor", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `ip monitor route`")?;
        let stdout = child.stdout.take().context("ip monitor stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        // `ip` subscribes right after it starts; give it ample time before anything changes.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { child, lines })
    }

    /// For each `(what, prefix)`, when the first line (from now on) starting with `prefix`
    /// arrived, in the order given; waits until all have.
    fn wait_all(&self, wanted: &[(String, String)], timeout: Duration) -> Result<Vec<Instant>> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<Option<Instant>> = vec![None; wanted.len()];
        while seen.iter().any(Option::is_none) {
            let missing = || {
                wanted
                    .iter()
                    .zip(&seen)
                    .filter(|(_, at)| at.is_none())
                    .map(|((what, _), _)| what.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    for ((_, prefix), slot) in wanted.iter().zip(seen.iter_mut()) {
                        if slot.is_none() && line.starts_with(prefix.as_str()) {
                            *slot = Some(at);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{}: not seen within {timeout:?}", missing())
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("{}: `ip monitor route` ended", missing())
                }
            }
        }
        Ok(seen.into_iter().flatten().collect())
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A namespace of the bench's own, named with the cluster's prefix (so the harness's
/// tear-down, Ctrl-C handler and stale-run sweep remove it too), deleted on drop.
struct ScratchNs {
    name: String,
}

impl ScratchNs {
    fn create(suffix: &str) -> Result<Self> {
        let name = format!("cw-{}-{suffix}", cluster_name());
        cmd::ip_batch(None, &[format!("netns add {name}")])?;
        Ok(Self { name })
    }
}

impl Drop for ScratchNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// What a node holds of the agent's per-peer entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    /// IPv4 routes with the agent's protocol.
    routes: usize,
    /// IPv6 routes with the agent's protocol.
    routes6: usize,
    /// IPv4 permanent neighbours on the VXLAN device.
    neighbours: usize,
    /// IPv6 permanent neighbours on the VXLAN device.
    neighbours6: usize,
    /// FDB entries with a remote `dst` on the VXLAN device (shared by both families).
    fdb: usize,
}

impl Counts {
    /// What a node with `peers` peers holds: one route and neighbour each per family, and
    /// one FDB entry each (shared by both families).
    fn expected(peers: usize, stack: Stack) -> Self {
        let v4 = if stack.v4() { peers } else { 0 };
        let v6 = if stack.v6() { peers } else { 0 };
        Self {
            routes: v4,
            routes6: v6,
            neighbours: v4,
            neighbours6: v6,
            fdb: peers,
        }
    }

    fn total(self) -> usize {
        self.routes + self.routes6 + self.neighbours + self.neighbours6 + self.fdb
    }
}

/// Routes with the agent's protocol (each family), its permanent neighbours (each family) and
/// its FDB entries (those with a remote `dst`) in namespace `ns`.
fn kernel_counts(ns: &str) -> Result<Counts> {
    let vx = vxlan_link_name(VNI);
    let json = |program: &str, args: &[&str]| -> Result<Vec<Value>> {
        let text = cmd::run(Command::new(program).args(["-n", ns, "-j"]).args(args))?;
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        match serde_json::from_str(&text)? {
            Value::Array(items) => Ok(items),
            other => bail!("expected a JSON array from {program} {args:?}, got {other}"),
        }
    };
    let proto = ROUTE_PROTOCOL.to_string();
    let routes = json("ip", &["route", "show", "proto", &proto])?.len();
    let routes6 = json("ip", &["-6", "route", "show", "proto", &proto])?.len();
    // Both families (`ip neigh` lists IPv4 and IPv6 without -4/-6), told apart by address.
    let neighbours = json("ip", &["neigh", "show", "dev", &vx, "nud", "permanent"])?;
    let neighbours6 = neighbours
        .iter()
        .filter(|e| {
            e.get("dst")
                .and_then(Value::as_str)
                .is_some_and(|d| d.contains(':'))
        })
        .count();
    let fdb = json("bridge", &["fdb", "show", "dev", &vx])?
        .iter()
        .filter(|e| e.get("dst").is_some())
        .count();
    Ok(Counts {
        routes,
        routes6,
        neighbours: neighbours.len() - neighbours6,
        neighbours6,
        fdb,
    })
}

/// Whether `ip -n NS [-6] route show exact CIDR proto 249` lists the route.
fn has_route(ns: &str, cidr: IpNet) -> Result<bool> {
    let family = match cidr {
        IpNet::V4(_) => "-4",
        IpNet::V6(_) => "-6",
    };
    let out = cmd::run(Command::new("ip").args([
        "-n",
        ns,
        family,
        "route",
        "show",
        "exact",
        &cidr.to_string(),
        "proto",
        &ROUTE_PROTOCOL.to_string(),
    ]))?;
    Ok(!out.trim().is_empty())
}

/// Starts the agent the way the DaemonSet runs it (chart RBAC, the chart's resync interval).
fn start_agent(c: &Cluster) -> Result<ProcId> {
    deploy::start_agent(c, NODE, &["--resync-seconds", "30"])
}

async fn run_size(c: &Cluster, n: usize, stack: Stack, opts: &Options) -> Result<SizeResult> {
    let mut result = SizeResult::default();
    let node_ns = c.ns(NODE);
    tokio::task::block_in_place(|| -> Result<()> {
        if stack.v6() {
            // The test underlay has IPv6 off in every namespace; the node gets it on the links
            // created from now on (the agent's bridge and VXLAN device), as in the overlay
            // suite's dual-stack test. Only this cluster's node namespace is changed.
            c.exec(
                NODE,
                "sysctl",
                &["-q", "-w", "net.ipv6.conf.default.disable_ipv6=0"],
            )?;
        }
        demo::install_crds(c)?;
        c.kubectl(&["create", "namespace", deploy::NAMESPACE])?;
        deploy::install_agent_rbac(c)?;
        // The agent's Node (its token is bound to it), and its credentials now, so that no
        // start below includes issuing them.
        let node =
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}});
        c.kubectl_stdin(&["apply", "-f", "-"], &node.to_string())?;
        deploy::agent_kubeconfig(c, NODE)?;
        let mut pn = serde_json::json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
            "metadata": {"name": NETWORK},
            "spec": {"cidr": POD_CIDR, "nodeSubnetPrefixLength": MASK, "mode": "Overlay"}});
        if stack == Stack::Ipv6 {
            pn["spec"]["cidr"] = POD_CIDR6.into();
            pn["spec"]["nodeSubnetPrefixLength"] = MASK6.into();
        }
        if stack == Stack::Dual {
            pn["spec"]["secondaryCidr"] = POD_CIDR6.into();
            pn["spec"]["secondaryNodeSubnetPrefixLength"] = MASK6.into();
        }
        c.kubectl_stdin(&["apply", "-f", "-"], &pn.to_string())?;
        Ok(())
    })?;
    let client = c.client().await?;
    let owner_uid = Api::<PodNetwork>::all(client.clone())
        .get(NETWORK)
        .await?
        .uid()
        .context("the PodNetwork has no uid")?;
    let api: Api<NodeSubnet> = Api::all(client);
    let own = node_subnet(0, stack, &owner_uid)?;
    let own_name = own.name_any();
    api.create(&PostParams::default(), &own).await?;
    let watch = StatusWatch::start(api.clone(), &own_name).await?;

    // 1. The idle reference: only the agent's own NodeSubnet.
    let mark = watch.mark();
    let started = Instant::now();
    let pid = tokio::task::block_in_place(|| start_agent(c))?;
    let at = watch
        .wait(
            mark,
            "idle agent: Programmed with 0 routes",
            PROGRAMMED_TIMEOUT,
            || pid.alive(),
            |r| r.programmed && r.routes == 0,
        )
        .await?;
    result.idle_programmed = at.saturating_duration_since(started);
    tokio::time::sleep(opts.idle_settle).await;
    result.idle = usage(pid.pid)?;
    // The agent cleans the node up when its NodeSubnet goes, then releases the finalizer.
    let uid = api.get(&own_name).await?.uid();
    api.delete(&own_name, &DeleteParams::default()).await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(
            api.clone(),
            &own_name,
            conditions::is_deleted(&uid.unwrap_or_default()),
        ),
    )
    .await
    .context("the idle agent did not clean up and release its NodeSubnet within 60 s")??;
    tokio::task::block_in_place(|| c.stop(&pid));
    let links = tokio::task::block_in_place(|| c.exec(NODE, "ip", &["-o", "link", "show"]))?;
    let left: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter_map(|name| name.split('@').next())
        .filter(|name| name.starts_with("cw-"))
        .collect();
    ensure!(
        left.is_empty(),
        "the node still has Causeway devices {left:?} after the idle agent's clean-up"
    );
    api.create(&PostParams::default(), &node_subnet(0, stack, &owner_uid)?)
        .await?;

    // 2. N − 1 peers, then the agent from a cold start.
    let t = Instant::now();
    create_subnets(&api, 1..n, stack, &owner_uid, Some(n - 1)).await?;
    result.create_peers = t.elapsed();
    eprintln!(
        "[bench] N = {n}: {} peer NodeSubnets created in {:.1} s",
        n - 1,
        result.create_peers.as_secs_f64()
    );
    tokio::time::sleep(opts.quiet).await;
    let peers = i32::try_from(n - 1)?;
    // `status.routes` counts the routes of both families (`State::routes`, keyed by
    // destination IPv4 or IPv6): one per peer and family; as many neighbours, and one FDB
    // entry per peer either way.
    let want_routes = i32::try_from(stack.families())? * peers;
    let want = Counts::expected(n - 1, stack);
    let status_counts = |r: &Report| {
        stack == Stack::Ipv4 || (r.neighbours == want_routes && r.fdb_entries == peers)
    };
    let mark = watch.mark();
    let writes_before = tokio::task::block_in_place(|| write_counts(c))?;
    let wall = SystemTime::now();
    let started = Instant::now();
    let pid = tokio::task::block_in_place(|| start_agent(c))?;
    let at = watch
        .wait(
            mark,
            &format!("Programmed with {want_routes} routes"),
            PROGRAMMED_TIMEOUT,
            || pid.alive(),
            |r| r.programmed && r.routes == want_routes,
        )
        .await?;
    result.at_programmed = usage(pid.pid)?;
    ensure!(
        result.idle.hwm_kib > 0 && result.at_programmed.hwm_kib > 0,
        "no peak memory read for the agent: idle {:?}, at Programmed {:?}",
        result.idle,
        result.at_programmed
    );
    result.programmed = at.saturating_duration_since(started);
    result.phases = phases_from_log(wall);
    ensure!(
        status_counts(&watch.last()),
        "Programmed with {want_routes} routes, but the status reports {:?} (want {want_routes} neighbours and {peers} FDB entries)",
        watch.last()
    );
    let counts = tokio::task::block_in_place(|| kernel_counts(&node_ns))?;
    ensure!(
        counts == want,
        "Programmed with {want_routes} routes, but the node holds {counts:?} (want {want:?})"
    );
    eprintln!(
        "[bench] N = {n}: Programmed in {:.2} s ({})",
        result.programmed.as_secs_f64(),
        watch.last().message
    );

    // Its join's writes: the status that said Programmed is among them; a write the agent
    // makes later would show in the changes below.
    let writes_programmed = tokio::task::block_in_place(|| write_counts(c))?;
    result.start_writes = grown(&writes_before, &writes_programmed);

    // 3. One peer at a time: added, then an original one deleted.
    let metrics_before = tokio::task::block_in_place(|| agent_metrics(c))?;
    let monitor = tokio::task::block_in_place(|| RouteMonitor::start(&node_ns))?;
    // A peer's routes: its IPv4 one, then its IPv6 one, as the network has them.
    let routes_of = |i: usize| -> Result<Vec<IpNet>> {
        let m = member(i)?;
        let mut cidrs = Vec::new();
        if stack.v4() {
            cidrs.push(IpNet::V4(m.cidr));
        }
        if stack.v6() {
            cidrs.push(IpNet::V6(m.cidr6));
        }
        Ok(cidrs)
    };
    for k in 0..opts.changes {
        tokio::time::sleep(opts.quiet).await;
        let added = n + k;
        let cidrs = routes_of(added)?;
        let wanted: Vec<(String, String)> = cidrs
            .iter()
            .map(|c| (format!("route to {c}"), format!("{c} ")))
            .collect();
        let t = Instant::now();
        create_subnets(&api, added..added + 1, stack, &owner_uid, None).await?;
        result.add_requests.push(t.elapsed());
        let seen = tokio::task::block_in_place(|| monitor.wait_all(&wanted, CHANGE_TIMEOUT))?;
        let took: Vec<Duration> = seen
            .iter()
            .map(|at| at.saturating_duration_since(t))
            .collect();
        result.adds.push(took[0]);
        if stack == Stack::Dual {
            result.adds6.push(took[1]);
        }
        for &cidr in &cidrs {
            ensure!(
                tokio::task::block_in_place(|| has_route(&node_ns, cidr))?,
                "ip monitor showed the route to {cidr}, but `ip route show` does not list it"
            );
        }

        tokio::time::sleep(opts.quiet).await;
        let deleted = node_subnet(1 + k, stack, &owner_uid)?;
        let cidrs = routes_of(1 + k)?;
        let wanted: Vec<(String, String)> = cidrs
            .iter()
            .map(|c| {
                (
                    format!("removal of the route to {c}"),
                    format!("Deleted {c} "),
                )
            })
            .collect();
        let t = Instant::now();
        api.delete(&deleted.name_any(), &DeleteParams::default())
            .await?;
        result.delete_requests.push(t.elapsed());
        let seen = tokio::task::block_in_place(|| monitor.wait_all(&wanted, CHANGE_TIMEOUT))?;
        let took: Vec<Duration> = seen
            .iter()
            .map(|at| at.saturating_duration_since(t))
            .collect();
        result.deletes.push(took[0]);
        if stack == Stack::Dual {
            result.deletes6.push(took[1]);
        }
        for &cidr in &cidrs {
            ensure!(
                !tokio::task::block_in_place(|| has_route(&node_ns, cidr))?,
                "ip monitor showed the route to {cidr} deleted, but `ip route show` still lists it"
            );
        }
    }
    drop(monitor);
    let metrics_after = tokio::task::block_in_place(|| agent_metrics(c))?;
    let between = |kind: &str| {
        let ((c0, s0), (c1, s1)) = (passes(&metrics_before, kind), passes(&metrics_after, kind));
        let count = c1 - c0;
        (count, Duration::from_secs_f64((s1 - s0) / count.max(1.0)))
    };
    result.peer_passes = between("peers");
    result.full_passes = between("full");
    let writes_changed = tokio::task::block_in_place(|| write_counts(c))?;
    result.change_writes = grown(&writes_programmed, &writes_changed);
    for own in ["POST nodesubnets", "DELETE nodesubnets"] {
        result.change_writes.remove(own);
    }

    // 4. Afterwards: through at least one periodic resync, with /metrics scraped every 5 s
    // as a Prometheus would (more often than its usual 15-30 s), so the memory after
    // includes serving them.
    let settle_end = Instant::now() + opts.settle;
    loop {
        let body = tokio::task::block_in_place(|| agent_metrics(c))?;
        result.scrapes += 1;
        result.scrape_bytes = body.len();
        result.scrape_series = body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        let left = settle_end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(Duration::from_secs(5))).await;
    }
    ensure!(pid.alive(), "the agent exited after the peer changes");
    result.after = usage(pid.pid)?;
    result.settle_writes = grown(
        &writes_changed,
        &tokio::task::block_in_place(|| write_counts(c))?,
    );
    // Deletions remove the neighbour and FDB entry right after the route, and the status
    // follows the pass: allow them a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = tokio::task::block_in_place(|| kernel_counts(&node_ns))?;
        let last = watch.last();
        if counts == want
            && last.exists
            && last.programmed
            && last.routes == want_routes
            && status_counts(&last)
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "after {} additions and as many deletions the node holds {counts:?} (want {want:?}) and the agent reports {last:?} (want Programmed with {want_routes} routes)",
            opts.changes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| c.stop(&pid));
    drop(watch);

    // 5. The baseline, in the same run, with the control plane still up (and idle).
    result.baseline = tokio::task::block_in_place(|| ip_batch_baseline(n, stack))?;
    Ok(result)
}

/// `ip -batch` (routes, neighbours) + `bridge -batch` (FDB) inserting the entries for peers
/// 1..n into a fresh namespace holding the same underlay and links (made untimed first).
/// Process start-up is included, as in `node-agent/benches/netlink.rs`. Dual-stack, the links
/// also hold the node's IPv6 addresses and each peer gets its IPv6 route and neighbour too, in
/// the same `ip -batch`; IPv6 only, the VXLAN device tunnels over IPv6 and each peer gets its
/// IPv6 route, neighbour and FDB entry (to its IPv6 address) alone.
fn ip_batch_baseline(n: usize, stack: Stack) -> Result<Duration> {
    let ns = ScratchNs::create("ipbatch")?;
    let vx = vxlan_link_name(VNI);
    let own = member(0)?;
    let underlay: Ipv4Net = UNDERLAY.parse()?;
    let underlay6: Ipv6Net = UNDERLAY6.parse()?;
    if stack.v6() {
        // As on the node: IPv6 on the links created from now on (a fresh namespace usually
        // has it already; this one belongs to the bench).
        cmd::run(cmd::in_netns(&ns.name, "sysctl").args([
            "-q",
            "-w",
            "net.ipv6.conf.default.disable_ipv6=0",
        ]))?;
    }
    let mut setup: Vec<String> = vec![
        "link set lo up".into(),
        "link add eth0 type veth peer name eth1".into(),
        format!("addr add {NODE_ADDRESS}/{} dev eth0", underlay.prefix_len()),
    ];
    let (local, mtu) = if stack == Stack::Ipv6 {
        setup.push(format!(
            "addr add {NODE_ADDRESS6}/{} dev eth0 nodad",
            underlay6.prefix_len()
        ));
        (std::net::IpAddr::from(NODE_ADDRESS6), 1430)
    } else {
        (std::net::IpAddr::from(NODE_ADDRESS), 1450)
    };
    setup.extend([
        "link set eth0 up".into(),
        "link set eth1 up".into(),
        format!("link add {BRIDGE_LINK} mtu {mtu} type bridge"),
        format!(
            "link add {vx} mtu {mtu} address {} type vxlan id {VNI} dstport 8472 local {local} dev eth0 nolearning",
            vtep_mac(NODE)
        ),
    ]);
    if stack.v4() {
        setup.push(format!(
            "addr add {}/{} dev {BRIDGE_LINK}",
            Ipv4Addr::from(u32::from(own.cidr.network()) + 1),
            own.cidr.prefix_len()
        ));
        setup.push(format!("addr add {}/32 dev {vx}", own.cidr.network()));
    }
    setup.push(format!("link set {BRIDGE_LINK} up"));
    setup.push(format!("link set {vx} up"));
    if stack.v6() {
        // The agent's IPv6 addresses: the pods' gateway and the network address as a /128,
        // both without duplicate address detection, as the agent adds them.
        setup.push(format!(
            "addr add {}/{} dev {BRIDGE_LINK} nodad",
            Ipv6Addr::from(u128::from(own.cidr6.network()) + 1),
            own.cidr6.prefix_len()
        ));
        setup.push(format!(
            "addr add {}/128 dev {vx} nodad",
            own.cidr6.network()
        ));
    }
    cmd::ip_batch(Some(&ns.name), &setup)?;
    let mut ip_lines = String::new();
    let mut fdb_lines = String::new();
    for i in 1..n {
        let m = member(i)?;
        let mac = vtep_mac(&m.node);
        if stack.v4() {
            // As the agent programs an IPv4 route via a gateway: through a nexthop object of
            // its own (node-agent/src/kernel/netlink/nexthop.rs).
            let gw = m.cidr.network();
            let id = nexthop::FIRST_ID + u32::try_from(i)?;
            ip_lines.push_str(&format!(
                "nexthop add id {id} via {gw} dev {vx} onlink proto {ROUTE_PROTOCOL}\n"
            ));
            ip_lines.push_str(&format!(
                "route add {} nhid {id} proto {ROUTE_PROTOCOL}\n",
                m.cidr
            ));
            ip_lines.push_str(&format!(
                "neigh add {gw} lladdr {mac} dev {vx} nud permanent\n"
            ));
        }
        if stack.v6() {
            let gw6 = m.cidr6.network();
            ip_lines.push_str(&format!(
                "route add {} via {gw6} dev {vx} onlink proto {ROUTE_PROTOCOL}\n",
                m.cidr6
            ));
            ip_lines.push_str(&format!(
                "neigh add {gw6} lladdr {mac} dev {vx} nud permanent\n"
            ));
        }
        fdb_lines.push_str(&format!(
            "fdb add {mac} dev {vx} dst {} self permanent\n",
            m.node_address(stack)
        ));
    }
    causeway_e2e::cmd::ensure_not_shutting_down()?;
    let started = Instant::now();
    cmd::run_stdin(
        Command::new("bridge").args(["-n", &ns.name, "-batch", "-"]),
        fdb_lines.as_bytes(),
    )?;
    cmd::run_stdin(
        Command::new("ip").args(["-n", &ns.name, "-batch", "-"]),
        ip_lines.as_bytes(),
    )?;
    let elapsed = started.elapsed();
    let counts = kernel_counts(&ns.name)?;
    let want = Counts::expected(n - 1, stack);
    ensure!(
        counts == want,
        "ip -batch: expected {want:?}; found {counts:?}"
    );
    Ok(elapsed)
}

/// The first `applying` line of the agent's log, relative to `spawned`, and how many
/// operations the `applying` lines name: one each, or `operations=N` on a large pass's
/// summary line. `None` when the log does not have them (a changed log format must not fail
/// the benchmark).
fn phases_from_log(spawned: SystemTime) -> Option<Phases> {
    let path = state::log_root()
        .join(cluster_name())
        .join(format!("{}.log", agent_role()));
    let text = std::fs::read_to_string(path).ok()?;
    let spawned = k8s_openapi::jiff::Timestamp::try_from(spawned).ok()?;
    let mut stamps = text.lines().filter_map(|line| {
        let plain = strip_ansi(line);
        if !plain.contains(" applying ") {
            return None;
        }
        let stamp: k8s_openapi::jiff::Timestamp = plain.split_whitespace().next()?.parse().ok()?;
        let nanos = stamp.as_nanosecond() - spawned.as_nanosecond();
        let ops = plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix("operations="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Some((Duration::from_nanos(u64::try_from(nanos).ok()?), ops))
    });
    let (first, ops) = stamps.next()?;
    Some(Phases {
        first_op: first,
        ops: ops + stamps.map(|(_, n)| n).sum::<usize>(),
    })
}

/// `line` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn max(v: &[Duration]) -> Duration {
    v.iter().copied().max().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_size(n: usize, stack: Stack, r: &SizeResult) {
    let v6 = if stack == Stack::Dual {
        format!(
            ", IPv6 route: add median {:.0} ms, delete median {:.0} ms",
            ms(median(&r.adds6)),
            ms(median(&r.deletes6))
        )
    } else {
        String::new()
    };
    eprintln!(
        "[bench] N = {n}{}: Programmed {:.2} s (ip -batch {:.0} ms), VmHWM {:.1} MiB at Programmed / {:.1} MiB after (idle {:.1} MiB), add median {:.0} ms, delete median {:.0} ms{v6}, phases {:?}",
        stack.label(),
        r.programmed.as_secs_f64(),
        ms(r.baseline),
        mib(r.at_programmed.hwm_kib),
        mib(r.after.hwm_kib),
        mib(r.idle.hwm_kib),
        ms(median(&r.adds)),
        ms(median(&r.deletes)),
        r.phases
    );
    if let Some(f) = &r.flannel {
        eprintln!(
            "[bench] N = {n}: flanneld {} all routes in {:.2} s (CPU {:.2} s), VmHWM {:.1} MiB at programmed / {:.1} MiB after, add median {:.0} ms, delete median {:.0} ms",
            f.version,
            f.programmed.as_secs_f64(),
            f.at_programmed.cpu.as_secs_f64(),
            mib(f.at_programmed.hwm_kib),
            mib(f.after.hwm_kib),
            ms(median(&f.adds)),
            ms(median(&f.deletes))
        );
    }
}

fn print_report(report: &[(usize, SizeResult)], stack: Stack, changes: usize, settle: Duration) {
    let settle = settle.as_secs();
    println!(
        "\n## Node agent at scale: `causeway-node-agent` against a real API server{}\n",
        stack.label()
    );
    println!("| N | metric | agent | baseline | ratio |\n|---|---|---|---|---|");
    for (n, r) in report {
        let peers = n - 1;
        let routes = stack.families() * peers;
        println!(
            "| {n} | start → Programmed, routes = {routes} | {:.2} s | `ip -batch` same {} entries: {:.0} ms | {:.1} |",
            r.programmed.as_secs_f64(),
            Counts::expected(peers, stack).total(),
            ms(r.baseline),
            r.programmed.as_secs_f64() / r.baseline.as_secs_f64()
        );
        if let Some(p) = r.phases {
            println!(
                "| {n} | … of which: start → operations decided ({} ops; the agent logs a pass's operations, then applies them pipelined) | {:.2} s | | |",
                p.ops,
                p.first_op.as_secs_f64()
            );
        }
        println!(
            "| {n} | start → Programmed, N = 1 (idle, own subnet only) | {:.2} s | | |",
            r.idle_programmed.as_secs_f64()
        );
        println!(
            "| {n} | CPU time, start → Programmed | {:.2} s | | |",
            r.at_programmed.cpu.as_secs_f64()
        );
        println!(
            "| {n} | peak memory (VmHWM) at Programmed | {:.1} MiB | idle N = 1: {:.1} MiB | {:.2} |",
            mib(r.at_programmed.hwm_kib),
            mib(r.idle.hwm_kib),
            r.at_programmed.hwm_kib as f64 / r.idle.hwm_kib as f64
        );
        println!(
            "| {n} | peak memory (VmHWM) after the changes + {settle} s | {:.1} MiB | idle N = 1: {:.1} MiB | {:.2} |",
            mib(r.after.hwm_kib),
            mib(r.idle.hwm_kib),
            r.after.hwm_kib as f64 / r.idle.hwm_kib as f64
        );
        println!(
            "| {n} | resident memory (VmRSS) after the changes + {settle} s | {:.1} MiB | idle N = 1: {:.1} MiB | {:.2} |",
            mib(r.after.rss_kib),
            mib(r.idle.rss_kib),
            r.after.rss_kib as f64 / r.idle.rss_kib as f64
        );
        println!(
            "| {n} | /metrics scraped every 5 s during those {settle} s (in the memory above) | {} scrapes, {} bytes, {} samples | | |",
            r.scrapes, r.scrape_bytes, r.scrape_series
        );
        if stack == Stack::Dual {
            // Per change, each family's route timed from the same start; "both" is the later.
            let both = |a: &[Duration], b: &[Duration]| -> Vec<Duration> {
                a.iter().zip(b).map(|(x, y)| *x.max(y)).collect()
            };
            let adds_both = both(&r.adds, &r.adds6);
            let deletes_both = both(&r.deletes, &r.deletes6);
            for (what, v) in [
                ("peer added → its IPv4 route in the node", &r.adds),
                ("peer added → its IPv6 route in the node", &r.adds6),
                ("peer added → both its routes in the node", &adds_both),
                ("peer deleted → its IPv4 route gone", &r.deletes),
                ("peer deleted → its IPv6 route gone", &r.deletes6),
                ("peer deleted → both its routes gone", &deletes_both),
            ] {
                println!(
                    "| {n} | {what}, median (max) of {changes} | {:.1} ms ({:.1} ms) | | |",
                    ms(median(v)),
                    ms(max(v))
                );
            }
        } else {
            println!(
                "| {n} | peer added → its route in the node, median (max) of {changes} | {:.1} ms ({:.1} ms) | | |",
                ms(median(&r.adds)),
                ms(max(&r.adds))
            );
            println!(
                "| {n} | peer deleted → its route gone, median (max) of {changes} | {:.1} ms ({:.1} ms) | | |",
                ms(median(&r.deletes)),
                ms(max(&r.deletes))
            );
        }
        println!(
            "| {n} | … the agent's own part: its peer passes during the changes (plan the peer, apply; its pass histogram) | {:.0} passes, mean {:.2} ms | | |",
            r.peer_passes.0,
            ms(r.peer_passes.1)
        );
        println!(
            "| {n} | … its full passes in the same time (the periodic resync: a change arriving meanwhile waits for it) | {:.0} passes, mean {:.1} ms | | |",
            r.full_passes.0,
            ms(r.full_passes.1)
        );
        println!(
            "| {n} | (setup) {peers} NodeSubnets created and their status written, {CREATE_CONCURRENCY} at a time | {:.1} s | | |",
            r.create_peers.as_secs_f64()
        );
        println!(
            "| {n} | API writes, start → Programmed (the agent's join) | {} | | |",
            writes(&r.start_writes, 1.0)
        );
        println!(
            "| {n} | API writes by the agent per peer change (of {}) | {} | | |",
            2 * changes,
            writes(&r.change_writes, (2 * changes).max(1) as f64)
        );
        if settle > 0 {
            println!(
                "| {n} | API writes per minute during the {settle} s after the changes | {} | | |",
                writes(&r.settle_writes, settle as f64 / 60.0)
            );
        }
    }
    print_flannel_report(report, changes, settle);
}

/// Writes by verb and resource, each divided by `per` ("none" without any).
fn writes(counts: &BTreeMap<String, f64>, per: f64) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(key, n)| format!("{key} {:.2}", n / per))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The agent beside flanneld at each size that ran it (`--flannel`): ratios are Causeway ÷
/// flannel, so below 1 means Causeway took less.
fn print_flannel_report(report: &[(usize, SizeResult)], changes: usize, settle: u64) {
    let rows: Vec<(usize, &SizeResult, &flannel::FlannelResult)> = report
        .iter()
        .filter_map(|(n, r)| r.flannel.as_ref().map(|f| (*n, r, f)))
        .collect();
    let Some((_, _, first)) = rows.first() else {
        return;
    };
    println!(
        "\n## Node agent at scale: Causeway beside flannel {} (VXLAN, kube subnet manager), same API server and N\n",
        first.version
    );
    println!("| N | metric | Causeway | flannel | Causeway ÷ flannel |\n|---|---|---|---|---|");
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "–".into()
        }
    };
    for (n, r, f) in rows {
        let peers = n - 1;
        let secs = |d: Duration| d.as_secs_f64();
        println!(
            "| {n} | start → all {peers} peers programmed (Causeway: Programmed on its status; flannel: {peers} routes via flannel.1, polled every 50 ms) | {:.2} s | {:.2} s | {} |",
            secs(r.programmed),
            secs(f.programmed),
            ratio(secs(r.programmed), secs(f.programmed))
        );
        println!(
            "| {n} | CPU time, start → programmed | {:.2} s | {:.2} s | {} |",
            secs(r.at_programmed.cpu),
            secs(f.at_programmed.cpu),
            ratio(secs(r.at_programmed.cpu), secs(f.at_programmed.cpu))
        );
        println!(
            "| {n} | peak memory (VmHWM) at programmed | {:.1} MiB | {:.1} MiB | {} |",
            mib(r.at_programmed.hwm_kib),
            mib(f.at_programmed.hwm_kib),
            ratio(
                r.at_programmed.hwm_kib as f64,
                f.at_programmed.hwm_kib as f64
            )
        );
        println!(
            "| {n} | peak memory (VmHWM) after the changes + {settle} s | {:.1} MiB | {:.1} MiB | {} |",
            mib(r.after.hwm_kib),
            mib(f.after.hwm_kib),
            ratio(r.after.hwm_kib as f64, f.after.hwm_kib as f64)
        );
        // The same changes from the API server's answer: what is left after the create or
        // delete request (CRDs are JSON with CEL rules, Nodes a built-in type).
        let after = |seen: &[Duration], requests: &[Duration]| -> Vec<Duration> {
            seen.iter()
                .zip(requests)
                .map(|(s, r)| s.saturating_sub(*r))
                .collect()
        };
        let rows = [
            (
                "peer added → its route in the node",
                r.adds.clone(),
                f.adds.clone(),
            ),
            (
                "… of which the create request (until answered)",
                r.add_requests.clone(),
                f.add_requests.clone(),
            ),
            (
                "… and from the answer to the route",
                after(&r.adds, &r.add_requests),
                after(&f.adds, &f.add_requests),
            ),
            (
                "peer deleted → its route gone",
                r.deletes.clone(),
                f.deletes.clone(),
            ),
            (
                "… of which the delete request (until answered)",
                r.delete_requests.clone(),
                f.delete_requests.clone(),
            ),
            (
                "… and from the answer to the route's removal",
                after(&r.deletes, &r.delete_requests),
                after(&f.deletes, &f.delete_requests),
            ),
        ];
        for (what, a, b) in &rows {
            println!(
                "| {n} | {what}, median (max) of {changes} | {:.1} ms ({:.1} ms) | {:.1} ms ({:.1} ms) | {} |",
                ms(median(a)),
                ms(max(a)),
                ms(median(b)),
                ms(max(b)),
                ratio(ms(median(a)), ms(median(b)))
            );
        }
        println!(
            "| {n} | (setup) {peers} objects created, {CREATE_CONCURRENCY} at a time (NodeSubnets with their status; Nodes) | {:.1} s | {:.1} s | |",
            secs(r.create_peers),
            secs(f.create_nodes)
        );
    }
}
