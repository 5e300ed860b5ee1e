//! Allocation benchmark (issue #4): Causeway's operator against kube-controller-manager's node
//! IPAM (the baseline), on the same real API server, in the same run.
//!
//! For each cluster size N it brings up a fresh test cluster (no node namespaces: IPAM needs
//! only Node objects), creates N Nodes with an InternalIP, then measures
//!
//! * **initial allocation**: from starting the controller to every node allocated (a NodeSubnet
//!   for Causeway, `spec.podCIDR` for kube-controller-manager), watched, not polled;
//! * **joins**: J nodes added one at a time to the allocated cluster: per-join latency
//!   (p50/p95) and the API writes each join costs, read from the API server's own
//!   `apiserver_request_total` (proves O(1) writes per join);
//! * **peak memory** (VmHWM) and CPU time of each controller process;
//! * **the load of the agents' watches**: during the joins, K raw watches (`--watchers K`,
//!   default 3) are open on each resource an agent watches (NodeSubnets and PodNetworks for
//!   Causeway's agent; Nodes for one taking its subnet from `spec.podCIDR`, as flannel's does),
//!   counting what they receive, and the CPU time kube-apiserver and etcd spend per join with
//!   them open (from `/proc`): K = 1,000 is the fan-out of a 1,000-node cluster.
//!
//! kube-controller-manager runs twice: with its default client rate limit (20 requests/s,
//! burst 30, what clusters ship) and raised to 1,000/s (its best case). Ratios are
//! Causeway ÷ baseline; below 1 means Causeway is faster.
//!
//! Run: `make bench`, or `cargo build --release --workspace --bins && cargo bench -p
//! causeway-e2e --bench ipam -- [--nodes 1000,5000] [--joins 50] [--watchers 3] [--ipv6]
//! [--no-default-qps]`.
//! Needs root (namespaces), like the e2e suite. `--ipv6` makes both allocators cut an IPv6 /48
//! into /64s (65,536 subnets) instead of an IPv4 /9 into /24s. `--no-default-qps` skips the
//! qps=20 baseline, which needs N/20 seconds to allocate (over 16 minutes at 20,000 nodes).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use causeway_crds::NodeSubnet;
use causeway_e2e::apiserver_metrics::{server_time_per_write, write_counts};
use causeway_e2e::cluster::UpOptions;
use causeway_e2e::controlplane::{self, causeway_binary};
use causeway_e2e::proc::{ProcId, Usage, usage};
use causeway_e2e::topology::presets;
use causeway_e2e::{Cluster, demo, state};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;

const CLUSTER: &str = "bench";
/// The pool both allocators carve /24s from: 32,768 of them.
const CLUSTER_CIDR: &str = "10.128.0.0/9";
const MASK: u8 = 24;
/// With `--ipv6`: the pool both allocators carve /64s from, 65,536 of them
/// (kube-controller-manager allows at most 16 bits between the two).
const CLUSTER_CIDR_V6: &str = "fd00:10::/48";
const MASK_V6: u8 = 64;
/// Nodes created concurrently while setting a cluster up.
const CREATE_CONCURRENCY: usize = 64;
/// How long the initial allocation of `n` nodes may take: 15 minutes, plus 60 ms a node over
/// it (kube-controller-manager at qps 20 needs 50 ms a node; 20,000 nodes: 35 minutes).
fn allocation_timeout(n: usize) -> Duration {
    Duration::from_secs(900) + Duration::from_millis(60) * u32::try_from(n).unwrap_or(u32::MAX)
}

struct Options {
    sizes: Vec<usize>,
    joins: usize,
    /// The pool and node prefix length both allocators cut.
    pool: (&'static str, u8),
    /// Skip the baselines (for iterating on the operator; reports no ratios).
    causeway_only: bool,
    /// Also run kube-controller-manager with its default qps (20).
    default_qps: bool,
    /// How long the steady state (no joins) is watched for its writes per minute.
    steady: Duration,
    /// Watches opened on each resource an agent watches, as that many agents would.
    watchers: usize,
}

fn parse_args() -> Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test --all-targets` (the suite) runs this binary
    // without it: then a small smoke run proves the benchmark still works end to end.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("[bench] not run by `cargo bench`: smoke run with 30 nodes and 3 joins");
        return Ok(Options {
            sizes: vec![30],
            joins: 3,
            pool: (CLUSTER_CIDR, MASK),
            causeway_only: false,
            default_qps: true,
            steady: Duration::from_secs(2),
            watchers: WATCHERS,
        });
    }
    let mut opts = Options {
        sizes: vec![1000, 5000],
        joins: 50,
        pool: (CLUSTER_CIDR, MASK),
        causeway_only: false,
        default_qps: true,
        steady: Duration::from_secs(20),
        watchers: WATCHERS,
    };
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
            "--joins" => {
                let v = args.next().context("--joins needs a number")?;
                opts.joins = v.parse().with_context(|| format!("--joins {v}"))?;
            }
            "--steady" => {
                let v = args.next().context("--steady needs seconds")?;
                opts.steady =
                    Duration::from_secs(v.parse().with_context(|| format!("--steady {v}"))?);
            }
            "--watchers" => {
                let v = args.next().context("--watchers needs a number")?;
                opts.watchers = v.parse().with_context(|| format!("--watchers {v}"))?;
            }
            "--causeway-only" => opts.causeway_only = true,
            "--no-default-qps" => opts.default_qps = false,
            "--ipv6" => opts.pool = (CLUSTER_CIDR_V6, MASK_V6),
            // cargo bench passes --bench; libtest-style filters are not used here.
            "--bench" => {}
            other => bail!(
                "unknown argument {other}; use --nodes 1000,5000, --joins 50, --steady 20, --watchers 3, --causeway-only, --no-default-qps, --ipv6"
            ),
        }
    }
    ensure!(opts.joins > 0, "--joins must be at least 1");
    ensure!(opts.watchers > 0, "--watchers must be at least 1");
    Ok(opts)
}

fn main() -> ExitCode {
    if let Err(e) = state::teardown_on_interrupt(CLUSTER, "[bench]") {
        eprintln!("[bench] {e:#}");
    }
    let result = parse_args().and_then(|opts| {
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

/// What one controller achieved at one size.
#[derive(Debug, Default, Clone)]
struct RunResult {
    initial: Duration,
    /// kube-apiserver's and etcd's CPU time per join, while the joins ran (with the watches
    /// of `--watchers` open).
    server_cpu: [Duration; 2],
    join_p50: Duration,
    join_p95: Duration,
    /// API writes per join, by `verb resource[/subresource]`, excluding the bench's own.
    writes_per_join: BTreeMap<String, f64>,
    peak_rss_kib: u64,
    cpu: Duration,
    /// The operator's own reconcile count, mean duration and full re-plans (its /metrics),
    /// Causeway only.
    reconciles: Option<(f64, Duration, f64)>,
    /// Where a join's time goes in the operator (mean of its join_phase_seconds: queued,
    /// planned, created), Causeway only.
    phases: Option<[Duration; 3]>,
    /// The mean join latency the bench saw (with `phases`, the rest is the two watch
    /// deliveries and the bench's own Node POST).
    join_mean: Duration,
    /// What one watcher of each resource received per join: (resource, events, bytes).
    watched: Vec<(String, f64, f64)>,
    /// The API server's own count, per join, of watch events it sent for each resource to all
    /// its watchers (apiserver_watch_events_total / _sizes): (resource, events, bytes).
    server_watch: Vec<(String, f64, f64)>,
    /// API writes per minute at steady state (no joins), by `verb resource[/subresource]`.
    steady: BTreeMap<String, f64>,
}

async fn run(opts: Options) -> Result<()> {
    causeway_e2e::cluster::require_prerequisites()?;
    let operator = causeway_binary("causeway-operator")?;
    let mut report = Vec::new();
    let pool = opts.pool;
    println!("[bench] pool {} cut into /{}", pool.0, pool.1);
    for &n in &opts.sizes {
        let causeway = with_cluster(n, |c, client| {
            let operator = operator.clone();
            async move {
                run_causeway(
                    &c,
                    client,
                    &operator,
                    pool,
                    n,
                    (opts.joins, opts.steady, opts.watchers),
                )
                .await
            }
        })
        .await
        .with_context(|| format!("Causeway at {n} nodes"))?;
        print_run("causeway-operator", n, &causeway);
        if opts.causeway_only {
            continue;
        }
        let kcm_default = if opts.default_qps {
            let r = with_cluster(n, |c, client| async move {
                run_kcm(
                    &c,
                    client,
                    pool,
                    None,
                    n,
                    (opts.joins, opts.steady, opts.watchers),
                )
                .await
            })
            .await
            .with_context(|| format!("kube-controller-manager (default qps) at {n} nodes"))?;
            print_run("kube-controller-manager qps=20", n, &r);
            Some(r)
        } else {
            None
        };
        let kcm_fast = with_cluster(n, |c, client| async move {
            run_kcm(
                &c,
                client,
                pool,
                Some(1000),
                n,
                (opts.joins, opts.steady, opts.watchers),
            )
            .await
        })
        .await
        .with_context(|| format!("kube-controller-manager (qps 1000) at {n} nodes"))?;
        print_run("kube-controller-manager qps=1000", n, &kcm_fast);
        report.push((n, causeway, kcm_default, kcm_fast));
    }
    print_report(&report, opts.joins, opts.watchers);
    Ok(())
}

/// Brings up a fresh cluster with `n` Nodes, runs `f`, and tears the cluster down whatever
/// `f` returned.
async fn with_cluster<F, Fut>(n: usize, f: F) -> Result<RunResult>
where
    F: FnOnce(std::sync::Arc<Cluster>, Client) -> Fut,
    Fut: std::future::Future<Output = Result<RunResult>>,
{
    let mut topology = presets::one_segment(1);
    topology.control_plane.controller_manager = false;
    let cluster = std::sync::Arc::new(tokio::task::block_in_place(|| {
        Cluster::up_with(
            CLUSTER,
            topology,
            UpOptions {
                skip_node_registration: true,
                ..UpOptions::default()
            },
        )
    })?);
    let client = cluster.client().await?;
    let started = Instant::now();
    create_nodes(&client, 0..n).await?;
    eprintln!(
        "[bench] {n} nodes created in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let result = f(cluster.clone(), client).await;
    tokio::task::block_in_place(|| cluster.teardown())?;
    result
}

fn node_name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// A Node as a kubelet registers it: name, labels, InternalIP (status is accepted on create).
fn node(i: usize) -> Node {
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i as u32);
    Node {
        metadata: ObjectMeta {
            name: Some(node_name(i)),
            labels: Some([("bench".to_string(), "ipam".to_string())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: addr.to_string(),
            }]),
            ..NodeStatus::default()
        }),
    }
}

async fn create_nodes(client: &Client, range: std::ops::Range<usize>) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(range)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &node(i))
                    .await
                    .with_context(|| format!("creating node {}", node_name(i)))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// One watch, started before the controller, recording when each node was first seen
/// allocated. Joins and the initial allocation are both timed from it, so the benchmark
/// issues no per-join LIST that would grow with the cluster.
struct Tracker {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracker {
    /// Starts watching `api`; `allocated` names the node an object shows allocated, if any.
    /// Returns once the initial list is in.
    async fn start<K, F>(api: Api<K>, allocated: F) -> Result<Self>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
        F: Fn(&K) -> Option<String> + Send + 'static,
    {
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let changed = Arc::new(Notify::new());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = {
            let seen = seen.clone();
            let changed = changed.clone();
            tokio::spawn(async move {
                let mut ready = Some(ready_tx);
                let mut stream = Box::pin(watcher(api, watcher::Config::default().any_semantic()));
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                            if let Some(node) = allocated(&o) {
                                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                                seen.entry(node).or_insert_with(Instant::now);
                                drop(seen);
                                changed.notify_waiters();
                            }
                        }
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => eprintln!("[bench] watch error (retrying): {e}"),
                    }
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(60), ready_rx)
            .await
            .context("the watch did not list within 60 s")?
            .context("the watch ended before listing")?;
        Ok(Tracker {
            seen,
            changed,
            task,
        })
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn when(&self, node: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .copied()
    }

    /// Waits until `done` holds, re-checking on every change.
    async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Self) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if done(self) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(!left.is_zero(), "{what}: not done after {timeout:?}");
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the controller and times it until `n` nodes are allocated.
async fn initial_allocation(
    tracker: &Tracker,
    n: usize,
    start: impl FnOnce() -> Result<ProcId>,
) -> Result<(ProcId, Duration)> {
    let started = Instant::now();
    let pid = tokio::task::block_in_place(start)?;
    tracker
        .wait("initial allocation", allocation_timeout(n), |t| {
            t.count() >= n
        })
        .await?;
    Ok((pid, started.elapsed()))
}

async fn run_causeway(
    c: &Cluster,
    client: Client,
    operator: &std::path::Path,
    (cidr, mask): (&str, u8),
    n: usize,
    (joins, steady, watchers): (usize, Duration, usize),
) -> Result<RunResult> {
    tokio::task::block_in_place(|| -> Result<()> {
        demo::install_crds(c)?;
        c.kubectl(&["create", "namespace", "causeway-system"])?;
        let pn = serde_json::json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
            "metadata": {"name": "bench"},
            "spec": {"cidr": cidr, "nodeSubnetPrefixLength": mask, "mode": "Overlay",
                     "nodeSelector": {"matchLabels": {"bench": "ipam"}}}});
        c.kubectl_stdin(&["apply", "-f", "-"], &pn.to_string())?;
        Ok(())
    })?;
    let tracker = Tracker::start(Api::<NodeSubnet>::all(client.clone()), |s: &NodeSubnet| {
        Some(s.spec.node_name.clone())
    })
    .await?;
    let (pid, initial) = initial_allocation(&tracker, n, || {
        c.spawn_control_plane(
            "causeway-operator",
            &operator.display().to_string(),
            &[
                "--identity".into(),
                "bench".into(),
                "--metrics-addr".into(),
                "127.0.0.1:18080".into(),
                "--health-socket".into(),
                c.dir.join("bench-operator.sock").display().to_string(),
            ],
            &[("RUST_LOG", "warn")],
        )
    })
    .await?;
    // What a node agent watches: every NodeSubnet and every PodNetwork.
    let watch = [
        (
            "nodesubnets",
            "/apis/causeway.dev/v1alpha1/nodesubnets",
            "NodeSubnet",
        ),
        (
            "podnetworks",
            "/apis/causeway.dev/v1alpha1/podnetworks",
            "PodNetwork",
        ),
    ];
    let before = tokio::task::block_in_place(|| operator_metrics(c))?;
    let joined = measure_joins(c, &client, &tracker, n, (joins, steady, watchers), &watch).await?;
    let after = tokio::task::block_in_place(|| operator_metrics(c))?;
    let reconciles = operator_reconciles(&after)?;
    let phases = join_phases(&before, &after)?;
    let mut result = finish(c, &pid, initial, joined)?;
    result.reconciles = Some(reconciles);
    result.phases = Some(phases);
    Ok(result)
}

/// The operator's /metrics text (it listens on 127.0.0.1:18080 in the control plane's
/// namespace).
fn operator_metrics(c: &Cluster) -> Result<String> {
    let ns = causeway_e2e::Topology::ns(&c.name, "cp", "apiserver");
    causeway_e2e::cmd::run(causeway_e2e::cmd::in_netns(&ns, "curl").args([
        "-sS",
        "--max-time",
        "5",
        "http://127.0.0.1:18080/metrics",
    ]))
}

/// The value of the series `metric` (with its labels, if any) in a /metrics text.
fn metric_value(text: &str, metric: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(metric)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .with_context(|| format!("{metric} missing from the operator's /metrics"))?
        .trim()
        .parse::<f64>()
        .with_context(|| format!("{metric} is not a number"))
}

/// Reconcile count, mean duration and full re-plans from the operator's /metrics.
fn operator_reconciles(text: &str) -> Result<(f64, Duration, f64)> {
    let count = metric_value(text, "causeway_operator_reconcile_duration_seconds_count")?;
    let sum = metric_value(text, "causeway_operator_reconcile_duration_seconds_sum")?;
    let full = metric_value(text, "causeway_operator_full_replans_total")?;
    ensure!(count > 0.0, "the operator reports no reconciles");
    Ok((count, Duration::from_secs_f64(sum / count), full))
}

/// The mean of each phase of the operator's joins between two /metrics texts (queued,
/// planned, created; see the operator's `join_phase_seconds`).
fn join_phases(before: &str, after: &str) -> Result<[Duration; 3]> {
    let mut out = [Duration::ZERO; 3];
    for (slot, phase) in out.iter_mut().zip(["queued", "planned", "created"]) {
        let series = |text: &str, suffix: &str| {
            metric_value(
                text,
                &format!("causeway_operator_join_phase_seconds_{suffix}{{phase=\"{phase}\"}}"),
            )
            .unwrap_or(0.0)
        };
        let count = series(after, "count") - series(before, "count");
        let sum = series(after, "sum") - series(before, "sum");
        ensure!(count > 0.0, "the operator timed no join phase {phase}");
        *slot = Duration::from_secs_f64(sum / count);
    }
    Ok(out)
}

async fn run_kcm(
    c: &Cluster,
    client: Client,
    (cidr, mask): (&str, u8),
    qps: Option<u32>,
    n: usize,
    (joins, steady, watchers): (usize, Duration, usize),
) -> Result<RunResult> {
    let tracker = Tracker::start(Api::<Node>::all(client.clone()), |node: &Node| {
        node.spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_ref())
            .map(|_| node.name_any())
    })
    .await?;
    let (pid, initial) = initial_allocation(&tracker, n, || {
        let args =
            controlplane::nodeipam_args(&c.pki, &c.dir.join("kubeconfig-local"), cidr, mask, qps);
        c.spawn_control_plane(
            "kube-controller-manager",
            &c.binaries.kube_controller_manager.display().to_string(),
            &args,
            &[],
        )
    })
    .await?;
    // What an agent that takes its subnet from kube-controller-manager watches (flannel,
    // for one): every Node.
    let watch = [("nodes", "/api/v1/nodes", "Node")];
    let joined = measure_joins(c, &client, &tracker, n, (joins, steady, watchers), &watch).await?;
    finish(c, &pid, initial, joined)
}

fn finish(c: &Cluster, pid: &ProcId, initial: Duration, joined: Joined) -> Result<RunResult> {
    let mut latencies = joined.latencies;
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let join_mean = latencies.iter().sum::<Duration>() / u32::try_from(latencies.len())?;
    let Usage {
        hwm_kib: peak_rss_kib,
        cpu,
        ..
    } = usage(pid.pid)?;
    c.stop(pid);
    Ok(RunResult {
        initial,
        server_cpu: joined.server_cpu,
        join_p50: pick(0.5),
        join_p95: pick(0.95),
        writes_per_join: joined.writes,
        peak_rss_kib,
        cpu,
        reconciles: None,
        phases: None,
        join_mean,
        watched: joined.watched,
        server_watch: joined.server_watch,
        steady: joined.steady,
    })
}

/// What the joins and the steady state after them showed.
struct Joined {
    latencies: Vec<Duration>,
    /// kube-apiserver's and etcd's CPU time per join, while the joins ran.
    server_cpu: [Duration; 2],
    writes: BTreeMap<String, f64>,
    watched: Vec<(String, f64, f64)>,
    server_watch: Vec<(String, f64, f64)>,
    steady: BTreeMap<String, f64>,
}

/// Watchers of one resource opened per run by default: each receives the same events; the
/// mean is reported (one agent's view). `--watchers K` opens K, as K agents would.
const WATCHERS: usize = 3;

/// Watches one client (one HTTP/2 connection) carries: below the API server's limit of
/// concurrent streams per connection.
const WATCHES_PER_CLIENT: usize = 100;

/// Raw watches of one resource (as many as `--watchers`), counting the events (one JSON line
/// each) and bytes they receive: what the agents watching the resource would receive.
struct WatchCounter {
    resource: String,
    watchers: usize,
    events: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WatchCounter {
    /// Opens `watchers` watches of `path` (e.g. `/api/v1/nodes`) from the current resource
    /// version, [`WATCHES_PER_CLIENT`] per connection (`client` carries the first ones).
    async fn start(
        c: &Cluster,
        client: &Client,
        (resource, path): (&str, &str),
        watchers: usize,
    ) -> Result<Self> {
        let list = client
            .request_text(http::Request::get(format!("{path}?limit=1")).body(Vec::new())?)
            .await
            .with_context(|| format!("listing {path}"))?;
        let list: serde_json::Value = serde_json::from_str(&list)?;
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .context("a list without resourceVersion")?
            .to_owned();
        let (events, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut tasks = Vec::new();
        let mut clients = vec![client.clone()];
        for i in 0..watchers {
            if i / WATCHES_PER_CLIENT >= clients.len() {
                clients.push(c.client().await?);
            }
            let request = http::Request::get(format!(
                "{path}?watch=1&resourceVersion={rv}&timeoutSeconds=3600"
            ))
            .body(Vec::new())?;
            let mut body = Box::pin(
                clients[i / WATCHES_PER_CLIENT]
                    .request_stream(request)
                    .await
                    .with_context(|| format!("watching {path} (watch {})", i + 1))?,
            );
            let (events, bytes) = (events.clone(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match futures::AsyncBufReadExt::read_until(&mut body, b'\n', &mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            events.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        Ok(Self {
            resource: resource.to_owned(),
            watchers,
            events,
            bytes,
            tasks,
        })
    }

    /// Events and bytes received so far, per watcher.
    fn per_watcher(&self) -> (f64, f64) {
        let k = self.watchers as f64;
        (
            self.events.load(Ordering::Relaxed) as f64 / k,
            self.bytes.load(Ordering::Relaxed) as f64 / k,
        )
    }
}

impl Drop for WatchCounter {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The API server's count and bytes of watch events sent for a resource (to all watchers),
/// from apiserver_watch_events_total and apiserver_watch_events_sizes (labelled by resource
/// or by kind, depending on the Kubernetes version).
fn server_watch_events(text: &str, resource: &str, kind: &str) -> (f64, f64) {
    let sum_of = |metric: &str| -> f64 {
        let prefix = format!("{metric}{{");
        text.lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .filter_map(|rest| rest.rsplit_once("} "))
            .filter(|(labels, _)| {
                labels.contains(&format!("resource=\"{resource}\""))
                    || labels.contains(&format!("kind=\"{kind}\""))
            })
            .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
            .sum()
    };
    (
        sum_of("apiserver_watch_events_total"),
        sum_of("apiserver_watch_events_sizes_sum"),
    )
}

/// Adds `joins` nodes one at a time after `n`, waiting for each to be allocated, then watches
/// the steady state for `steady`. Returns the latencies, the API writes per join
/// (apiserver_request_total before/after, minus the node creations the bench itself makes and
/// the controllers' time-driven lease renewals), what a watcher of each of `watch`
/// (`(resource, path, kind)`) received per join, and the writes per minute at steady state.
async fn measure_joins(
    c: &Cluster,
    client: &Client,
    tracker: &Tracker,
    n: usize,
    (joins, steady, watchers): (usize, Duration, usize),
    watch: &[(&str, &str, &str)],
) -> Result<Joined> {
    // Let the initial allocation's trailing status writes settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut counters = Vec::new();
    for (resource, path, _) in watch {
        counters.push(WatchCounter::start(c, client, (resource, path), watchers).await?);
    }
    let before = tokio::task::block_in_place(|| write_counts(c))?;
    let metrics_before = tokio::task::block_in_place(|| c.kubectl(&["get", "--raw", "/metrics"]))?;
    let watched_before: Vec<(f64, f64)> = counters.iter().map(WatchCounter::per_watcher).collect();
    let cpu_before = c.server_cpu()?;
    let mut latencies = Vec::with_capacity(joins);
    for i in n..n + joins {
        let name = node_name(i);
        let started = Instant::now();
        create_nodes(client, i..i + 1).await?;
        tracker
            .wait(&format!("join of {name}"), Duration::from_secs(120), |t| {
                t.when(&name).is_some()
            })
            .await?;
        let at = tracker.when(&name).context("seen")?;
        latencies.push(at.saturating_duration_since(started));
    }
    let cpu_after = c.server_cpu()?;
    let k32 = u32::try_from(joins)?;
    let server_cpu = [
        cpu_after[0].saturating_sub(cpu_before[0]) / k32,
        cpu_after[1].saturating_sub(cpu_before[1]) / k32,
    ];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = tokio::task::block_in_place(|| write_counts(c))?;
    let metrics_after = tokio::task::block_in_place(|| c.kubectl(&["get", "--raw", "/metrics"]))?;
    let k = joins as f64;
    let watched = counters
        .iter()
        .zip(&watched_before)
        .map(|(counter, (e0, b0))| {
            let (e1, b1) = counter.per_watcher();
            (counter.resource.clone(), (e1 - e0) / k, (b1 - b0) / k)
        })
        .collect();
    let server_watch = watch
        .iter()
        .map(|(resource, _, kind)| {
            let (e0, b0) = server_watch_events(&metrics_before, resource, kind);
            let (e1, b1) = server_watch_events(&metrics_after, resource, kind);
            ((*resource).to_owned(), (e1 - e0) / k, (b1 - b0) / k)
        })
        .collect();
    drop(counters);
    let server: Vec<String> = server_time_per_write(&metrics_before, &metrics_after)?
        .iter()
        .map(|(k, d)| format!("{k} {:.2} ms", d.as_secs_f64() * 1e3))
        .collect();
    eprintln!(
        "[bench] API server time per write during the joins: {}",
        server.join(", ")
    );
    let mut per_join = BTreeMap::new();
    for (key, count) in &after {
        let delta = count - before.get(key).copied().unwrap_or(0.0);
        let own = key == "POST nodes" || key.ends_with(" leases");
        if delta > 0.0 && !own {
            per_join.insert(key.clone(), delta / k);
        }
    }
    // Steady state: no joins, every write counted (lease renewals included).
    tokio::time::sleep(steady).await;
    let quiet = tokio::task::block_in_place(|| write_counts(c))?;
    let minutes = steady.as_secs_f64() / 60.0;
    let steady = quiet
        .iter()
        .filter_map(|(key, count)| {
            let delta = count - after.get(key).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| (key.clone(), delta / minutes))
        })
        .collect();
    Ok(Joined {
        latencies,
        server_cpu,
        writes: per_join,
        watched,
        server_watch,
        steady,
    })
}

fn print_run(who: &str, n: usize, r: &RunResult) {
    eprintln!(
        "[bench] {who} @ {n}: initial {:.2}s, join p50 {:.0}ms p95 {:.0}ms, peak RSS {} MiB, CPU {:.1}s, writes/join {:?}, reconciles {:?}",
        r.initial.as_secs_f64(),
        r.join_p50.as_secs_f64() * 1e3,
        r.join_p95.as_secs_f64() * 1e3,
        r.peak_rss_kib / 1024,
        r.cpu.as_secs_f64(),
        r.writes_per_join,
        r.reconciles
    );
    if let Some([queued, planned, created]) = r.phases {
        eprintln!(
            "[bench] {who} @ {n}: join mean {:.2} ms = queued {:.2} + planned {:.2} + POST nodesubnets {:.2} + the rest {:.2} (bench's POST node, watch to the operator, watch to the bench)",
            r.join_mean.as_secs_f64() * 1e3,
            queued.as_secs_f64() * 1e3,
            planned.as_secs_f64() * 1e3,
            created.as_secs_f64() * 1e3,
            r.join_mean
                .saturating_sub(queued + planned + created)
                .as_secs_f64()
                * 1e3
        );
    }
    eprintln!(
        "[bench] {who} @ {n}: per join one watcher got {:?}; the API server sent {:?} (events, bytes); steady writes/min {:?}",
        r.watched, r.server_watch, r.steady
    );
}

/// `nodesubnets 1.00 (1.3 KiB)` for each resource of `watched` (resource, events, bytes),
/// each scaled by `factor`.
fn watch_text(watched: &[(String, f64, f64)], factor: f64) -> String {
    let parts: Vec<String> = watched
        .iter()
        .map(|(resource, events, bytes)| {
            let (e, b) = (events * factor, bytes * factor);
            let size = if b >= 1024.0 * 1024.0 {
                format!("{:.1} MiB", b / 1024.0 / 1024.0)
            } else {
                format!("{:.1} KiB", b / 1024.0)
            };
            if factor > 1.0 {
                format!("{resource} {e:.0} ({size})")
            } else {
                format!("{resource} {e:.2} ({size})")
            }
        })
        .collect();
    parts.join(", ")
}

/// `12.0 (APPLY podnetworks/status 6.0, PUT leases 6.0)`.
fn per_minute_text(writes: &BTreeMap<String, f64>) -> String {
    let total: f64 = writes.values().sum();
    let parts: Vec<String> = writes.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
    format!("{total:.1} ({})", parts.join(", "))
}

fn print_report(
    report: &[(usize, RunResult, Option<RunResult>, RunResult)],
    joins: usize,
    watchers: usize,
) {
    let secs = |v: f64| format!("{v:.2} s");
    let ms = |v: f64| format!("{:.0} ms", v * 1e3);
    let ms1 = |v: f64| format!("{:.1} ms", v * 1e3);
    let mib = |v: f64| format!("{:.0} MiB", v / 1024.0);
    println!("\n## Allocation: Causeway operator vs kube-controller-manager node IPAM\n");
    println!(
        "| nodes | metric | causeway | kcm qps=20 | ratio | kcm qps=1000 | ratio |\n|---|---|---|---|---|---|---|"
    );
    for (n, cw, d, f) in report {
        // One row: the metric for all three runs, and Causeway's ratio to each baseline.
        let row = |metric: &str, value: fn(&RunResult) -> f64, show: &dyn Fn(f64) -> String| {
            let (c, f) = (value(cw), value(f));
            let (d, ratio) = match d {
                Some(d) => (show(value(d)), format!("{:.2}", c / value(d))),
                None => ("—".to_owned(), "—".to_owned()),
            };
            println!(
                "| {n} | {metric} | {} | {d} | {ratio} | {} | {:.2} |",
                show(c),
                show(f),
                c / f
            );
        };
        row("initial allocation", |r| r.initial.as_secs_f64(), &secs);
        row(
            &format!("join latency p50 ({joins} joins)"),
            |r| r.join_p50.as_secs_f64(),
            &ms,
        );
        row("join latency p95", |r| r.join_p95.as_secs_f64(), &ms);
        row("peak RSS", |r| r.peak_rss_kib as f64, &mib);
        row("CPU time (whole run)", |r| r.cpu.as_secs_f64(), &secs);
        row(
            &format!(
                "kube-apiserver CPU per join, {watchers} watches open on each resource an agent watches"
            ),
            |r| r.server_cpu[0].as_secs_f64(),
            &ms1,
        );
        row(
            "etcd CPU per join, the same joins",
            |r| r.server_cpu[1].as_secs_f64(),
            &ms1,
        );
        let writes = |r: &RunResult| {
            let total: f64 = r.writes_per_join.values().sum();
            let parts: Vec<String> = r
                .writes_per_join
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            format!("{total:.2} ({})", parts.join(", "))
        };
        if let Some((count, mean, full)) = cw.reconciles {
            println!(
                "| {n} | operator reconciles (mean duration; full re-plans) | {count:.0} ({:.1} ms; {full:.0} full) | | | | |",
                mean.as_secs_f64() * 1e3
            );
        }
        println!(
            "| {n} | API writes per join | {} | {} | | {} | |",
            writes(cw),
            d.as_ref().map_or_else(|| "—".to_owned(), writes),
            writes(f)
        );
        if let Some([queued, planned, created]) = cw.phases {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "| {n} | join mean: operator queue + plan + POST nodesubnets + rest | {:.1} ms: {:.2} + {:.2} + {:.2} + {:.2} | | | {:.1} ms | |",
                ms(cw.join_mean),
                ms(queued),
                ms(planned),
                ms(created),
                ms(cw.join_mean.saturating_sub(queued + planned + created)),
                ms(f.join_mean)
            );
        }
        let other = |r: &RunResult, show: &dyn Fn(&RunResult) -> String| {
            (d.as_ref().map_or_else(|| "—".to_owned(), show), show(r))
        };
        let one = |r: &RunResult| watch_text(&r.watched, 1.0);
        let (d1, f1) = other(f, &one);
        println!(
            "| {n} | watch events (bytes) per join, one watcher | {} | {d1} | | {f1} | |",
            one(cw)
        );
        let all = |r: &RunResult| watch_text(&r.watched, *n as f64);
        let (d_all, f_all) = other(f, &all);
        println!(
            "| {n} | per join, {n} agents watching (computed) | {} | {d_all} | | {f_all} | |",
            all(cw)
        );
        let server = |r: &RunResult| watch_text(&r.server_watch, 1.0);
        let (d_s, f_s) = other(f, &server);
        println!(
            "| {n} | watch events per join sent by the API server (all watchers) | {} | {d_s} | | {f_s} | |",
            server(cw)
        );
        let steady = |r: &RunResult| per_minute_text(&r.steady);
        let (d_q, f_q) = other(f, &steady);
        println!(
            "| {n} | API writes per minute at steady state (controller and its leases) | {} | {d_q} | | {f_q} | |",
            steady(cw)
        );
        println!(
            "| {n} | + {n} agents' heartbeat Leases (computed, one renewal per 10 s each) | {:.0} / min | | | | |",
            *n as f64 * 6.0
        );
    }
}
