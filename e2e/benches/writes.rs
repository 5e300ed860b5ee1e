//! What one allocation write costs the API server (issue #19): the operator's NodeSubnet create
//! against kube-controller-manager's Node PATCH, the one write each makes for a joining node.
//!
//! The allocation bench (`ipam.rs`) finds a join's latency decided by that write: the
//! operator's own part is 0.1 ms, the rest is the API server serving its write. This bench
//! takes the writes alone, on one fresh test cluster (kube-apiserver and etcd, no controller):
//! K writes of each kind, one request at a time from one client, interleaved in R rounds (each
//! round runs K/R writes of every kind in turn, the order rotating from round to round):
//!
//! * `POST nodesubnets`: the operator's create as it writes it (labels, the PodNetwork as
//!   controller owner, the node's VTEP MAC), against the chart's CRD with its CEL rules;
//! * the same object against two copies of that CRD in a group of the bench's own: without its
//!   CEL rules (`celfreesubnets`), and without any schema (`schemalesssubnets`, whose objects
//!   are kept as they come: `x-kubernetes-preserve-unknown-fields`). The three split a create's
//!   cost into the CEL rules, the schema, and the rest of a custom resource's create;
//! * `PATCH nodes`: kube-controller-manager's write, a strategic merge patch of `spec.podCIDR`
//!   and `spec.podCIDRs` on an existing Node (K Nodes are created first, untimed).
//!
//! Per kind: the API server's own time per request (`apiserver_request_duration_seconds`, its
//! sum ÷ count over the run), the client's latency (p50, p95), and the CPU time of
//! kube-apiserver and etcd per request (from `/proc`, read around each block of a round).
//! Ratios are ÷ `PATCH nodes`. At the end every kind must hold K objects (or K Nodes with a
//! pod CIDR).
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p causeway-e2e --bench
//! writes -- [--writes 3000] [--rounds 12]`. Without `--bench` (`cargo test --all-targets`, so
//! `make test`) it runs 40 writes of each kind in 2 rounds as a smoke test. Needs root, like the
//! e2e suite; everything happens in the bench's own test cluster, removed afterwards.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use causeway_crds::vtep::vtep_mac;
use causeway_crds::{NodeSubnet, NodeSubnetSpec};
use causeway_e2e::apiserver_metrics::server_time_per_write;
use causeway_e2e::cluster::UpOptions;
use causeway_e2e::controlplane::workspace_root;
use causeway_e2e::topology::presets;
use causeway_e2e::{Cluster, demo};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};

const CLUSTER: &str = "writesb";
/// The group of the bench's copies of the NodeSubnet CRD: nothing of Causeway's watches it.
const BENCH_GROUP: &str = "bench.causeway.dev";
const NETWORK: &str = "bench";
/// Objects created concurrently while setting up (untimed).
const CREATE_CONCURRENCY: usize = 64;

struct Options {
    writes: usize,
    rounds: usize,
}

fn parse_args() -> Result<Options> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("[bench] not run by `cargo bench`: smoke run with 40 writes of each kind");
        return Ok(Options {
            writes: 40,
            rounds: 2,
        });
    }
    let mut opts = Options {
        writes: 3000,
        rounds: 12,
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> Result<usize> {
            let v = args
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            v.parse().with_context(|| format!("{name} {v}"))
        };
        match a.as_str() {
            "--writes" => opts.writes = number("--writes")?,
            "--rounds" => opts.rounds = number("--rounds")?,
            "--bench" => {}
            other => anyhow::bail!("unknown argument {other}; use --writes 3000, --rounds 12"),
        }
    }
    ensure!(opts.rounds > 0, "--rounds must be at least 1");
    ensure!(
        opts.writes >= opts.rounds && opts.writes.is_multiple_of(opts.rounds),
        "--writes must be a multiple of --rounds (each round makes the same number of each write)"
    );
    ensure!(
        opts.writes <= 32_768,
        "--writes at most 32768: each write takes its own /24 of 10.128.0.0/9"
    );
    Ok(opts)
}

/// The writes compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    NodeSubnet,
    CelFree,
    Schemaless,
    NodePatch,
}

impl Write {
    const ALL: [Self; 4] = [
        Self::NodeSubnet,
        Self::CelFree,
        Self::Schemaless,
        Self::NodePatch,
    ];

    /// As [`server_time_per_write`] keys it.
    fn key(self) -> &'static str {
        match self {
            Self::NodeSubnet => "POST nodesubnets",
            Self::CelFree => "POST celfreesubnets",
            Self::Schemaless => "POST schemalesssubnets",
            Self::NodePatch => "PATCH nodes",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::NodeSubnet => "NodeSubnet create (the operator's; the chart's CRD)",
            Self::CelFree => "the same create, the CRD without its CEL rules",
            Self::Schemaless => "the same create, the CRD without a schema",
            Self::NodePatch => "Node PATCH of spec.podCIDR (kube-controller-manager's)",
        }
    }

    /// The bench's copy of the NodeSubnet CRD this write goes to: (plural, kind).
    fn copy(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::CelFree => Some(("celfreesubnets", "CelFreeSubnet")),
            Self::Schemaless => Some(("schemalesssubnets", "SchemalessSubnet")),
            Self::NodeSubnet | Self::NodePatch => None,
        }
    }
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("[bench] {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(&opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[bench] FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(opts: &Options) -> Result<()> {
    causeway_e2e::cluster::require_prerequisites()?;
    let mut topology = presets::one_segment(1);
    topology.control_plane.controller_manager = false;
    let cluster = tokio::task::block_in_place(|| {
        Cluster::up_with(
            CLUSTER,
            topology,
            UpOptions {
                skip_node_registration: true,
                ..UpOptions::default()
            },
        )
    })?;
    let result = measure(&cluster, opts).await;
    tokio::task::block_in_place(|| cluster.teardown())?;
    print_report(&result?, opts);
    Ok(())
}

/// What one kind of write measured.
#[derive(Default)]
struct Measured {
    latencies: Vec<Duration>,
    /// kube-apiserver's and etcd's CPU time over this kind's blocks.
    server_cpu: [Duration; 2],
    /// The API server's own mean time per request.
    server_time: Duration,
}

async fn measure(c: &Cluster, opts: &Options) -> Result<BTreeMap<&'static str, Measured>> {
    tokio::task::block_in_place(|| -> Result<()> {
        demo::install_crds(c)?;
        install_copies(c)
    })?;
    let client = c.client().await?;
    let owner_uid = tokio::task::block_in_place(|| create_network(c))?;
    let started = Instant::now();
    create_nodes(&client, opts.writes).await?;
    eprintln!(
        "[bench] {} Nodes created in {:.1} s",
        opts.writes,
        started.elapsed().as_secs_f64()
    );

    let targets = Targets::new(&client);
    let mut measured: BTreeMap<&'static str, Measured> = BTreeMap::new();
    let per_round = opts.writes / opts.rounds;
    let metrics_before = tokio::task::block_in_place(|| c.kubectl(&["get", "--raw", "/metrics"]))?;
    for round in 0..opts.rounds {
        let range = round * per_round..(round + 1) * per_round;
        for k in 0..Write::ALL.len() {
            let write = Write::ALL[(round + k) % Write::ALL.len()];
            let m = measured.entry(write.key()).or_default();
            let cpu_before = c.server_cpu()?;
            for i in range.clone() {
                let t = Instant::now();
                targets.write(write, i, &owner_uid).await?;
                m.latencies.push(t.elapsed());
            }
            let cpu_after = c.server_cpu()?;
            for (slot, (a, b)) in m
                .server_cpu
                .iter_mut()
                .zip(cpu_after.iter().zip(cpu_before))
            {
                *slot += a.saturating_sub(b);
            }
        }
        eprintln!("[bench] round {} of {} done", round + 1, opts.rounds);
    }
    let metrics_after = tokio::task::block_in_place(|| c.kubectl(&["get", "--raw", "/metrics"]))?;
    let server = server_time_per_write(&metrics_before, &metrics_after)?;
    for write in Write::ALL {
        let m = measured.get_mut(write.key()).context("every kind ran")?;
        m.server_time = *server.get(write.key()).with_context(|| {
            format!(
                "the API server reports no {} in its metrics: {server:?}",
                write.key()
            )
        })?;
        let held = targets.held(write).await?;
        ensure!(
            held == opts.writes,
            "{}: the API server holds {held} objects written, want {}",
            write.describe(),
            opts.writes
        );
    }
    Ok(measured)
}

/// Copies of the chart's NodeSubnet CRD in the bench's own group: one without its CEL rules,
/// one without a schema.
fn install_copies(c: &Cluster) -> Result<()> {
    let path = workspace_root().join("charts/causeway/files/crds/nodesubnets.causeway.dev.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let chart: Value = serde_yaml::from_str(&text)?;
    for write in Write::ALL {
        let Some((plural, kind)) = write.copy() else {
            continue;
        };
        let crd = crd_copy(&chart, plural, kind, write == Write::Schemaless)?;
        let name = format!("{plural}.{BENCH_GROUP}");
        c.kubectl_stdin(
            &["apply", "--server-side", "-f", "-"],
            &serde_json::to_string(&crd)?,
        )?;
        c.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{name}"),
        ])?;
    }
    Ok(())
}

/// `chart` (the NodeSubnet CRD) renamed to `plural`.`BENCH_GROUP`, its CEL rules removed, or
/// with `schemaless` its schema replaced by one that keeps whatever comes.
fn crd_copy(chart: &Value, plural: &str, kind: &str, schemaless: bool) -> Result<Value> {
    let mut crd = chart.clone();
    crd["metadata"] = json!({ "name": format!("{plural}.{BENCH_GROUP}") });
    let spec = crd
        .get_mut("spec")
        .context("the NodeSubnet CRD has no spec")?;
    spec["group"] = json!(BENCH_GROUP);
    spec["names"] = json!({
        "plural": plural,
        "singular": plural.trim_end_matches('s'),
        "kind": kind,
        "listKind": format!("{kind}List"),
    });
    let versions = spec["versions"]
        .as_array_mut()
        .context("the NodeSubnet CRD has no versions")?;
    for version in versions {
        if schemaless {
            version["schema"] = json!({ "openAPIV3Schema": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            }});
            // Both name fields of the schema, which this one no longer has.
            if let Some(v) = version.as_object_mut() {
                v.remove("selectableFields");
                v.remove("additionalPrinterColumns");
            }
        } else {
            remove_rules(&mut version["schema"]);
        }
    }
    Ok(crd)
}

/// Removes every `x-kubernetes-validations` under `v`.
fn remove_rules(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(remove_rules);
        }
        Value::Array(items) => items.iter_mut().for_each(remove_rules),
        _ => {}
    }
}

/// The PodNetwork the NodeSubnets name (and are owned by); returns its uid.
fn create_network(c: &Cluster) -> Result<String> {
    c.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: causeway.dev/v1alpha1\nkind: PodNetwork\nmetadata:\n  name: {NETWORK}\n\
             spec:\n  cidr: 10.128.0.0/9\n  nodeSubnetPrefixLength: 24\n  mode: Overlay\n"
        ),
    )?;
    let uid = c.kubectl(&[
        "get",
        "podnetwork",
        NETWORK,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    ensure!(!uid.trim().is_empty(), "PodNetwork {NETWORK} has no uid");
    Ok(uid.trim().to_string())
}

fn node_name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// The `i`-th /24 of 10.128.0.0/9.
fn cidr(i: usize) -> String {
    let net = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (u32::try_from(i).unwrap_or(0) << 8);
    format!("{}/24", Ipv4Addr::from(net))
}

async fn create_nodes(client: &Client, n: usize) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let node = Node {
                    metadata: ObjectMeta {
                        name: Some(node_name(i)),
                        ..ObjectMeta::default()
                    },
                    spec: Some(NodeSpec::default()),
                    status: None,
                };
                api.create(&PostParams::default(), &node)
                    .await
                    .with_context(|| format!("creating Node {}", node_name(i)))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// Where each kind of write goes.
struct Targets {
    subnets: Api<NodeSubnet>,
    copies: BTreeMap<&'static str, (Api<DynamicObject>, ApiResource)>,
    nodes: Api<Node>,
}

impl Targets {
    fn new(client: &Client) -> Self {
        let copies = Write::ALL
            .iter()
            .filter_map(|w| w.copy())
            .map(|(plural, kind)| {
                let gvk = GroupVersionKind::gvk(BENCH_GROUP, "v1alpha1", kind);
                let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
                (plural, (Api::all_with(client.clone(), &resource), resource))
            })
            .collect();
        Self {
            subnets: Api::all(client.clone()),
            copies,
            nodes: Api::all(client.clone()),
        }
    }

    /// The API of the bench's CRD copy `write` goes to.
    fn copy(&self, write: Write) -> Result<&(Api<DynamicObject>, ApiResource)> {
        let (plural, _) = write.copy().context("a write to the CRD's copies")?;
        self.copies.get(plural).context("every copy has an API")
    }

    /// The `i`-th write of `write`.
    async fn write(&self, write: Write, i: usize, owner_uid: &str) -> Result<()> {
        match write {
            Write::NodePatch => {
                let patch = json!({ "spec": { "podCIDR": cidr(i), "podCIDRs": [cidr(i)] } });
                self.nodes
                    .patch(
                        &node_name(i),
                        &PatchParams::default(),
                        &Patch::Strategic(patch),
                    )
                    .await
                    .with_context(|| format!("patching Node {}", node_name(i)))?;
            }
            Write::NodeSubnet => {
                self.subnets
                    .create(&PostParams::default(), &node_subnet(i, owner_uid))
                    .await
                    .with_context(|| format!("creating NodeSubnet {i}"))?;
            }
            Write::CelFree | Write::Schemaless => {
                let (api, resource) = self.copy(write)?;
                let subnet = node_subnet(i, owner_uid);
                let mut object = DynamicObject::new(
                    subnet.metadata.name.as_deref().unwrap_or_default(),
                    resource,
                );
                object.metadata = subnet.metadata;
                object.data = json!({ "spec": serde_json::to_value(&subnet.spec)? });
                api.create(&PostParams::default(), &object)
                    .await
                    .with_context(|| format!("creating {} {i}", resource.plural))?;
            }
        }
        Ok(())
    }

    /// How many objects `write` has left in the API server.
    async fn held(&self, write: Write) -> Result<usize> {
        let lp = ListParams::default();
        Ok(match write {
            Write::NodePatch => self
                .nodes
                .list(&lp)
                .await?
                .items
                .iter()
                .filter(|n| n.spec.as_ref().is_some_and(|s| s.pod_cidr.is_some()))
                .count(),
            Write::NodeSubnet => self.subnets.list(&lp).await?.items.len(),
            Write::CelFree | Write::Schemaless => self.copy(write)?.0.list(&lp).await?.items.len(),
        })
    }
}

/// The `i`-th node's NodeSubnet as the operator writes it.
fn node_subnet(i: usize, owner_uid: &str) -> NodeSubnet {
    let node = node_name(i);
    let cidr = cidr(i);
    let name = format!("{NETWORK}-{}", cidr.replace(['.', '/'], "-"));
    let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 1)) + i as u32);
    let mut ns = NodeSubnet::new(
        &name,
        NodeSubnetSpec {
            network: NETWORK.into(),
            node_name: node.clone(),
            cidr,
            node_address: address.to_string(),
            vtep_mac: Some(vtep_mac(&node).to_string()),
            secondary_cidr: None,
            secondary_node_address: None,
        },
    );
    ns.metadata.labels = Some(
        [
            ("causeway.dev/network".to_string(), NETWORK.to_string()),
            ("causeway.dev/node".to_string(), node),
        ]
        .into(),
    );
    ns.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "causeway.dev/v1alpha1".into(),
        kind: "PodNetwork".into(),
        name: NETWORK.into(),
        uid: owner_uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    ns
}

fn print_report(measured: &BTreeMap<&'static str, Measured>, opts: &Options) {
    let pick = |l: &[Duration], q: f64| -> Duration {
        let mut l = l.to_vec();
        l.sort();
        l[((l.len() as f64 - 1.0) * q).round() as usize]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let per = |d: Duration| ms(d) / opts.writes as f64;
    let base = &measured[Write::NodePatch.key()];
    let (base_server, base_p50, base_cpu) = (
        ms(base.server_time),
        ms(pick(&base.latencies, 0.5)),
        per(base.server_cpu[0] + base.server_cpu[1]),
    );
    println!(
        "\n## One allocation write: {} of each, {} rounds, one request at a time\n",
        opts.writes, opts.rounds
    );
    println!(
        "| write | API server's time per request (its metrics) | ÷ Node PATCH | client p50 / p95 | ÷ Node PATCH (p50) | kube-apiserver + etcd CPU per request | ÷ Node PATCH |"
    );
    println!("|---|---|---|---|---|---|---|");
    for write in Write::ALL {
        let m = &measured[write.key()];
        let cpu = per(m.server_cpu[0] + m.server_cpu[1]);
        println!(
            "| {} (`{}`) | {:.2} ms | {:.2} | {:.2} / {:.2} ms | {:.2} | {:.2} + {:.2} ms | {:.2} |",
            write.describe(),
            write.key(),
            ms(m.server_time),
            ms(m.server_time) / base_server,
            ms(pick(&m.latencies, 0.5)),
            ms(pick(&m.latencies, 0.95)),
            ms(pick(&m.latencies, 0.5)) / base_p50,
            per(m.server_cpu[0]),
            per(m.server_cpu[1]),
            cpu / base_cpu,
        );
    }
}
