//! The PodNetwork controller: the I/O around the pure [`ipam`], [`conflicts`] and [`rollup`].
//!
//! One reconcile per PodNetwork, triggered by the PodNetwork, by any Node (labels, addresses
//! or podCIDR may move a node in or out), by its NodeSubnets (agents report status there),
//! by an agent going silent or coming back (heartbeat Leases, see
//! [`causeway_kube::heartbeat`]), and by a periodic resync. Each run:
//!
//! 1. waits until the Node and NodeSubnet caches hold a complete list — an empty cache must
//!    never look like "every node left" and release subnets;
//! 2. decides which nodes the network owns ([`conflicts`]: overlaps and double selection are
//!    settled in favour of the earlier network) and plans allocations ([`ipam`]);
//! 3. creates, re-addresses and deletes NodeSubnets (creation by POST, so the API server's
//!    name uniqueness — names are derived from the subnet — forbids handing one subnet out
//!    twice, even to two operators);
//! 4. records events for every allocation, release and condition change, and writes status
//!    with server-side apply under the field manager `causeway-operator`.
//!
//! The user's spec is never written. Deleting a PodNetwork deletes its NodeSubnets first
//! (finalizer `causeway.dev/node-subnets`) and waits until they are gone, so agents can
//! clean their nodes (NodeSubnets may carry agent finalizers); owner references let the
//! garbage collector catch anything left.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_crds::cidr::Family;
use causeway_crds::conditions::{find_condition, reasons, types};
use causeway_crds::v1alpha1::PodRange;
use causeway_crds::v1alpha1::{AGENT_FINALIZER, PodNetworkMode};
use causeway_crds::{NodeSubnet, NodeSubnetSpec, PodNetwork, PodNetworkStatus, vtep};
use causeway_kube::cache::cached;
use causeway_kube::heartbeat::{self, Liveness, Silence};
use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, instrument, warn};

use crate::conflicts::{self, NetworkView};
pub use crate::context::{Context, FIELD_MANAGER, Options};
use crate::incremental::{Fallback, Index, Inputs, Step};
use crate::ipam::{self, Allocation, NodeView};
use crate::metrics::{JoinPhases, Metrics};
use crate::podnetwork::gather;
use crate::rollup::{self, ProgrammedView, SubnetView};
use crate::selector;
use causeway_kube::events::{Kind, Publisher, Record};

/// Finalizer on PodNetworks: NodeSubnets are removed before the network goes.
pub const FINALIZER: &str = "causeway.dev/node-subnets";
/// Label on NodeSubnets naming their PodNetwork.
pub const LABEL_NETWORK: &str = "causeway.dev/network";
/// Label on NodeSubnets naming their node.
pub const LABEL_NODE: &str = "causeway.dev/node";
/// Periodic resync, on top of watch events.
pub const RESYNC: Duration = Duration::from_secs(300);

/// Errors of one reconcile; each names the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating NodeSubnet {name}: {source}")]
    CreateSubnet { name: String, source: kube::Error },
    #[error("updating NodeSubnet {name}: {source}")]
    UpdateSubnet { name: String, source: kube::Error },
    #[error("deleting NodeSubnet {name}: {source}")]
    DeleteSubnet { name: String, source: kube::Error },
    #[error("listing NodeSubnets of {network}: {source}")]
    ListSubnets {
        network: String,
        source: kube::Error,
    },
    #[error("writing status of PodNetwork {name}: {source}")]
    WriteStatus { name: String, source: kube::Error },
    #[error("waiting for the {0} cache: {1}")]
    Cache(&'static str, String),
    #[error("PodNetwork {name} is being deleted: waiting for {count} NodeSubnets to go")]
    CleanupPending { name: String, count: usize },
    #[error("finalizer of {name}: {message}")]
    Finalizer { name: String, message: String },
    #[error("PodNetwork without a name")]
    NoName,
}

/// API writes one reconcile issues at once (NodeSubnet creates and deletes): a network
/// created on a 20,000-node cluster allocates in seconds without flooding the API server
/// (whose default limit is 200 mutating requests in flight). At 16 the creates waited on
/// round trips, not on the API server.
const WRITE_CONCURRENCY: usize = 64;

/// Objects the shared PodNetwork watch may buffer for a slow consumer.
const SUBSCRIBE_BUFFER: usize = 256;

/// How often heartbeat Leases are checked for agents going silent or coming back: the delay
/// between an expiry and the network's condition.
const HEARTBEAT_CHECK: Duration = Duration::from_secs(1);

/// Runs the controller until `shutdown` resolves (lost leadership, signal).
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    instance: String,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (nodes, node_events) = cached::<Node>(&client, watcher::Config::default());
    let (subnets, subnet_events) = cached::<NodeSubnet>(&client, watcher::Config::default());
    // The Service ranges, best effort: a cluster that does not serve ServiceCIDRs (or an
    // operator not allowed to read them) only loses this check, with a warning.
    let (service_cidrs, service_cidr_events) =
        cached::<ServiceCIDR>(&client, watcher::Config::default());
    tokio::spawn(service_cidr_events.for_each(|event| async move {
        if let Err(e) = event {
            warn!(error = %e, "ServiceCIDR watch failed; pod ranges are not checked against the Service range until it works");
        }
    }));
    // The API servers' own addresses, best effort in the same way.
    let (api_endpoints, api_endpoint_events) = causeway_kube::apiserver::cached(&client);
    tokio::spawn(api_endpoint_events.for_each(|event| async move {
        if let Err(e) = event {
            warn!(error = %e, "watching default/kubernetes EndpointSlices failed; only the configured API server address is protected until it works");
        }
    }));

    // PodNetworks feed two consumers from one watch: the controller, and a trigger that
    // re-plans every network when one network's spec changes or it starts deleting
    // (overlaps and node claims are decided across networks). Both read one store, updated
    // before either sees the object, so a re-plan never sees an older network list.
    let (networks, network_writer) = reflector::store_shared::<PodNetwork>(SUBSCRIBE_BUFFER);
    let network_objects = network_writer
        .subscribe()
        .expect("a shared store can be subscribed");
    let network_changes = network_writer
        .subscribe()
        .expect("a shared store can be subscribed");
    let network_watch = watcher(
        Api::<PodNetwork>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .reflect_shared(network_writer)
    .for_each(|event| async move {
        if let Err(e) = event {
            warn!(error = %e, "PodNetwork watch failed; retrying");
        }
    });
    let mut seen: HashMap<String, (Option<i64>, bool)> = HashMap::new();
    let cross_network = network_changes.filter_map(move |pn| {
        let key = pn.uid().unwrap_or_else(|| pn.name_any());
        let now = (pn.meta().generation, pn.meta().deletion_timestamp.is_some());
        let changed = seen.insert(key, now) != Some(now);
        futures::future::ready(changed.then_some(()))
    });
    let (replan, replans) = tokio::sync::mpsc::unbounded_channel();
    let cross_network = futures::stream::select(
        cross_network,
        futures::stream::unfold(replans, |mut rx| async move {
            rx.recv().await.map(|()| ((), rx))
        }),
    );
    let controller = Controller::for_shared_stream(network_objects, networks.clone());
    let all_networks = networks.clone();
    let events = Arc::new(Publisher::new(client.clone(), FIELD_MANAGER, &instance));
    let (ready_tx, caches_ready) = tokio::sync::watch::channel(false);
    {
        let (nodes, subnets, metrics) = (nodes.clone(), subnets.clone(), metrics.clone());
        // Not ready while the caches fill: a new leader serves nothing stale.
        metrics.set_ready(false);
        tokio::spawn(async move {
            if nodes.wait_until_ready().await.is_ok() && subnets.wait_until_ready().await.is_ok() {
                info!("Node and NodeSubnet caches are filled");
                metrics.set_ready(true);
                let _ = ready_tx.send(true);
            }
        });
    }
    let (reconciled, reconciled_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (silent_tx, silent) = tokio::sync::watch::channel(BTreeMap::new());
    let heartbeat_changes =
        watch_heartbeats(&client, &options, &instance, subnets.clone(), silent_tx);
    let ctx = Arc::new(Context {
        client,
        nodes,
        subnets,
        networks,
        service_cidrs,
        api_endpoints,
        allocation_events: gather::Gather::new(events.clone()),
        events,
        metrics,
        options,
        replan,
        caches_ready,
        silent,
        reconciled,
        changes: crate::context::Changes::default(),
    });
    let gateways = crate::gateway::controller::run(
        ctx.clone(),
        futures::stream::unfold(reconciled_rx, |mut rx| async move {
            rx.recv().await.map(|n| (n, rx))
        }),
    );
    // Both watches note what changed (names only) for the incremental path, then queue the
    // networks concerned; the queue coalesces bursts, the notes accumulate. Node events are
    // also handled at once, beside the queue ([`join_at_once`]).
    let (node_ctx, subnet_ctx) = (ctx.clone(), ctx.clone());
    let (at_once, at_once_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(join_at_once(ctx.clone(), at_once_rx));
    let running = controller
        .watches_stream(subnet_events, move |s: NodeSubnet| {
            subnet_ctx
                .changes
                .subnet_changed(&s.spec.network, &s.name_any());
            Some(ObjectRef::<PodNetwork>::new(&s.spec.network))
        })
        // Any node change may move it between networks: every network looks at it.
        .watches_stream(node_events, move |node: Node| {
            let networks = all_networks.state();
            let name = node.name_any();
            node_ctx.changes.node_changed(
                networks
                    .iter()
                    .map(|n| n.meta().name.as_deref().unwrap_or_default()),
                &name,
            );
            for network in networks.iter() {
                let _ = at_once.send(network.name_any());
            }
            networks
                .iter()
                .map(|n| ObjectRef::from_obj(n.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(cross_network)
        .reconcile_on(heartbeat_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(network = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile failed"),
            }
        });
    // The controller ends on shutdown; the watch feeding it ends with it.
    tokio::select! {
        _ = running => {}
        _ = network_watch => {}
        () = gateways => {}
    }
}

/// What the heartbeat watch and the probe writes tell the judging loop about the operator's
/// own view of the Leases ([`heartbeat::Probe`]), each with the instant it happened.
enum ViewEvent {
    /// The watch delivered the probe Lease with this marker.
    Seen(k8s_openapi::jiff::Timestamp, Instant),
    /// Writing the probe with this marker failed.
    Failed(k8s_openapi::jiff::Timestamp, String),
    /// The watch failed, or is listing again.
    Interrupted,
}

/// Watches the agents' heartbeat Leases and keeps `silent` up to date; yields the networks
/// to reconcile when a node's agent goes silent or comes back. Renewals of a live agent
/// trigger nothing: only transitions, checked every [`HEARTBEAT_CHECK`], cost a reconcile.
///
/// The same watch carries the operator's probe Lease, written every
/// [`heartbeat::PROBE_PERIOD`]: a lapse counts against an agent only while the probes prove
/// the operator's own view live ([`heartbeat::counted_lapse`]), so an API server pause, a
/// broken watch or the operator's start-up never reads as agents going silent.
fn watch_heartbeats(
    client: &Client,
    options: &Options,
    instance: &str,
    subnets: Store<NodeSubnet>,
    silent: tokio::sync::watch::Sender<BTreeMap<String, Silence>>,
) -> impl futures::Stream<Item = ObjectRef<PodNetwork>> + Send + 'static {
    let (store, writer) = reflector::store::<Lease>();
    let api: Api<Lease> = Api::namespaced(client.clone(), &options.agent_namespace);
    let (view_tx, mut view_rx) = tokio::sync::mpsc::unbounded_channel::<ViewEvent>();
    let from_watch = view_tx.clone();
    let watch = reflector::reflector(
        writer,
        watcher(
            api,
            watcher::Config::default()
                .labels(&heartbeat::watch_selector())
                .any_semantic(),
        ),
    )
    .default_backoff()
    .for_each(move |event| {
        let at = Instant::now();
        // The store already holds what the event says: a probe seen here proves it.
        let note = match &event {
            Ok(watcher::Event::Apply(lease)) => {
                heartbeat::probe_marker_of(lease).map(|m| ViewEvent::Seen(m, at))
            }
            // A re-list: the store is replaced at InitDone, so probes seen while listing
            // prove nothing; the next one after it does.
            Ok(watcher::Event::Init | watcher::Event::InitDone) => Some(ViewEvent::Interrupted),
            Ok(_) => None,
            Err(e) => {
                warn!(error = %e, "heartbeat Lease watch failed; retrying");
                Some(ViewEvent::Interrupted)
            }
        };
        if let Some(note) = note {
            let _ = from_watch.send(note);
        }
        futures::future::ready(())
    });
    let (client, namespace, instance) = (
        client.clone(),
        options.agent_namespace.clone(),
        instance.to_owned(),
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ObjectRef<PodNetwork>>();
    tokio::spawn(async move {
        tokio::pin!(watch);
        let mut liveness = Liveness::default();
        let mut probe = heartbeat::Probe::default();
        // Whether the last probe write went through: failures are logged once per run of them.
        let mut probe_writes_ok = true;
        let mut tick = tokio::time::interval(HEARTBEAT_CHECK);
        loop {
            tokio::select! {
                () = &mut watch => return,
                Some(event) = view_rx.recv() => {
                    let seen = matches!(event, ViewEvent::Seen(..));
                    match event {
                        ViewEvent::Seen(marker, at) => {
                            probe.seen(marker, at);
                            if !probe_writes_ok {
                                info!(lease = heartbeat::PROBE_LEASE, "probe Lease written and seen again; agents are judged again");
                                probe_writes_ok = true;
                            }
                        }
                        ViewEvent::Failed(marker, error) => {
                            probe.failed(marker);
                            if probe_writes_ok {
                                warn!(lease = heartbeat::PROBE_LEASE, %error, "writing the probe Lease failed; no agent is reported as not reporting until it succeeds");
                                probe_writes_ok = false;
                            }
                        }
                        ViewEvent::Interrupted => probe.interrupted(),
                    }
                    // A probe seen back moves the proof to now: judge at once rather than
                    // up to a tick later. Nothing else can make an agent silent.
                    if !seen {
                        continue;
                    }
                }
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            if probe.expire(now) {
                warn!(
                    lease = heartbeat::PROBE_LEASE,
                    "the probe Lease did not come back on the heartbeat watch within {}s; no agent is reported as not reporting until one does",
                    heartbeat::PROBE_LOST.as_secs()
                );
            }
            if probe.due(now) {
                let marker = heartbeat::probe_marker(k8s_openapi::jiff::Timestamp::now());
                probe.sent(marker, now);
                let (client, namespace, instance, view_tx) = (
                    client.clone(),
                    namespace.clone(),
                    instance.clone(),
                    view_tx.clone(),
                );
                // Its own task: a frozen API server must not stop the judging loop.
                tokio::spawn(async move {
                    let write = heartbeat::write_probe(
                        &client,
                        &namespace,
                        &instance,
                        marker,
                        FIELD_MANAGER,
                    );
                    match tokio::time::timeout(heartbeat::PROBE_LOST, write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            let _ = view_tx.send(ViewEvent::Failed(marker, e.to_string()));
                        }
                        // Given up by `expire` by now.
                        Err(_) => {}
                    }
                });
            }
            liveness.observe(
                store
                    .state()
                    .iter()
                    .map(AsRef::as_ref)
                    .filter(|l| heartbeat::is_agent_lease(l)),
                now,
            );
            let next = liveness.judge(probe.view());
            let changed: Vec<String> = {
                let previous = silent.borrow();
                next.keys()
                    .filter(|n| !previous.contains_key(*n))
                    .chain(previous.keys().filter(|n| !next.contains_key(*n)))
                    .cloned()
                    .collect()
            };
            if changed.is_empty() {
                continue;
            }
            for node in &changed {
                match next.get(node) {
                    Some(s) => warn!(%node, lease = %s.lease, "node agent stopped reporting"),
                    None => info!(%node, "node agent reports again"),
                }
            }
            silent.send_replace(next);
            let networks: std::collections::BTreeSet<String> = subnets
                .state()
                .iter()
                .filter(|s| changed.contains(&s.spec.node_name))
                .map(|s| s.spec.network.clone())
                .collect();
            for network in networks {
                if tx.send(ObjectRef::new(&network)).is_err() {
                    return;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

fn error_policy(pn: Arc<PodNetwork>, error: &Error, ctx: Arc<Context>) -> Action {
    match error {
        // Waiting for agents to clean up is progress, not a failure.
        Error::CleanupPending { .. } => Action::requeue(Duration::from_secs(2)),
        _ => {
            ctx.metrics.reconcile_error();
            warn!(network = %pn.name_any(), error = %error, "reconcile failed; retrying");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// Networks whose Nodes changed, handled at once, beside the controller's queue: the
/// controller's scheduler hands a request over on its timer's next millisecond tick (1–2 ms
/// in the join benchmark, a fifth of a join), while a join needs only the index step and one
/// POST. Only networks with an index (the incremental path; a step that cannot be taken falls
/// back to the full re-plan as in [`apply`]) and with the finalizer in place, not being
/// deleted; everything else is left to the controller, which sees the same events and runs
/// after, finding nothing left to do. A failure asks the controller to re-plan.
async fn join_at_once(ctx: Arc<Context>, mut names: tokio::sync::mpsc::UnboundedReceiver<String>) {
    while let Some(first) = names.recv().await {
        let mut networks = std::collections::BTreeSet::from([first]);
        while let Ok(more) = names.try_recv() {
            networks.insert(more);
        }
        for name in networks {
            let Some(pn) = ctx.networks.get(&ObjectRef::new(&name)) else {
                continue;
            };
            let ours = pn.finalizers().iter().any(|f| f == FINALIZER);
            if !ours || pn.meta().deletion_timestamp.is_some() || !*ctx.caches_ready.borrow() {
                continue;
            }
            let lock = ctx.changes.reconciling(&name);
            let _held = lock.lock().await;
            if !ctx.changes.has_index(&name) {
                continue;
            }
            let started = Instant::now();
            if let Err(e) = apply(&pn, &ctx).await {
                ctx.metrics.reconcile_error();
                warn!(network = %name, error = %e, "handling a node change failed; re-planning");
                let _ = ctx.replan.send(());
            }
            ctx.metrics.reconciled(started.elapsed());
            let _ = ctx.reconciled.send(name);
        }
    }
}

#[instrument(skip_all, fields(network = %pn.name_any()))]
async fn reconcile(pn: Arc<PodNetwork>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.caches_ready
        .clone()
        .wait_for(|ready| *ready)
        .await
        .map_err(|e| Error::Cache("Node and NodeSubnet", e.to_string()))?;
    let name = pn.meta().name.clone().ok_or(Error::NoName)?;
    // Never beside a reconcile of the same network by [`join_at_once`].
    let lock = ctx.changes.reconciling(&name);
    let _held = lock.lock().await;
    let api: Api<PodNetwork> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, pn, |event| async {
        match event {
            Finalizer::Apply(pn) => apply(&pn, &ctx).await,
            Finalizer::Cleanup(pn) => cleanup(&pn, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer {
            name: name.clone(),
            message: other.to_string(),
        },
    });
    ctx.metrics.reconciled(started.elapsed());
    // Its gateways' routes follow its nodes (the receiver lives as long as the controller).
    let _ = ctx.reconciled.send(name);
    result
}

/// This network's NodeSubnets in the cache.
fn owned_subnets(ctx: &Context, network: &str) -> Vec<Arc<NodeSubnet>> {
    ctx.subnets
        .state()
        .into_iter()
        .filter(|s| s.spec.network == network)
        .collect()
}

pub(crate) fn network_view(pn: &PodNetwork) -> NetworkView {
    NetworkView {
        name: pn.name_any(),
        created: pn.meta().creation_timestamp.clone(),
        cidrs: pn
            .spec
            .ranges()
            .ok()
            .map(|ranges| ranges.iter().map(|r| r.cidr).collect()),
        selector: pn.spec.node_selector.clone(),
        deleting: pn.meta().deletion_timestamp.is_some(),
    }
}

/// The node's InternalIPs in the order the node lists them, of both families.
pub fn internal_ips(node: &Node) -> Vec<IpAddr> {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        // A loopback, link-local or other reserved address is no address peers can reach
        // (and admission refuses it as a NodeSubnet's nodeAddress): such a node counts as
        // one without an InternalIP.
        .filter(|a| causeway_crds::ownership::reserved_ip(*a).is_none())
        .collect()
}

/// The node's first IPv4 InternalIP.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    internal_ips(node).into_iter().find_map(|a| match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    })
}

/// What IPAM needs of `node` for a network whose ranges are `ranges` (primary first): the
/// InternalIP of the primary range's family (else its first one) and the one of the other
/// family, and its podCIDRs of the ranges' families.
pub(crate) fn node_view(node: &Node, ranges: &[PodRange]) -> NodeView {
    let ips = internal_ips(node);
    let primary = ranges.first().map_or(Family::V4, PodRange::family);
    let internal_ip = ips
        .iter()
        .find(|a| Family::of_addr(a) == primary)
        .or(ips.first())
        .copied();
    let secondary_ip = internal_ip
        .and_then(|main| {
            ips.iter()
                .find(|a| Family::of_addr(a) != Family::of_addr(&main))
        })
        .copied();
    let pod_cidrs: Vec<IpNet> = node
        .spec
        .iter()
        .flat_map(|s| s.pod_cidrs.iter().flatten().chain(s.pod_cidr.iter()))
        .filter_map(|c| c.parse().ok())
        .collect();
    let pod_cidr = |range: Option<&PodRange>| {
        let family = range?.family();
        pod_cidrs.iter().find(|c| Family::of(c) == family).copied()
    };
    NodeView {
        name: node.name_any(),
        internal_ip,
        secondary_ip,
        pod_cidr: pod_cidr(ranges.first()),
        secondary_pod_cidr: pod_cidr(ranges.get(1)),
    }
}

/// What [`apply`] decides for one PodNetwork before it writes anything (pure): the
/// cross-network rules, which nodes it owns, and the allocation plan.
#[derive(Debug)]
pub struct Decision {
    /// The earlier network whose range overlaps this one's, if any (this one then allocates
    /// nothing and gives back what it holds).
    pub overlap: Option<String>,
    /// Why the spec cannot be used (range, selector).
    pub invalid_spec: Option<String>,
    /// Why a well-formed range cannot be used, with its reason: it holds nodes' addresses
    /// (`CidrOverlapsNodes`) or overlaps the Service range (`CidrOverlapsServices`).
    pub unusable: Option<(&'static str, String)>,
    /// Nodes the selector matches.
    pub selected: usize,
    /// Selected nodes an earlier network owns: (node, owner), sorted.
    pub claimed_elsewhere: Vec<(String, String)>,
    /// The allocation plan (keep, create, readdress, release).
    pub plan: ipam::Plan,
    /// Why each released NodeSubnet goes, by object name, for its event.
    pub released_why: BTreeMap<String, String>,
}

/// The cluster's Service ranges of both families, each with where it comes from: the
/// ServiceCIDR objects (`ServiceCIDR <name>`), and `flags` (the operator's `--service-cidr`,
/// for clusters that serve no ServiceCIDR objects).
#[must_use]
pub fn service_ranges(objects: &[Arc<ServiceCIDR>], flags: &[IpNet]) -> Vec<(String, IpNet)> {
    let from_flags = flags
        .iter()
        .map(|c| ("the operator's --service-cidr".to_owned(), c.trunc()));
    objects
        .iter()
        .flat_map(|o| {
            let name = format!("ServiceCIDR {}", o.name_any());
            o.spec
                .iter()
                .flat_map(|s| s.cidrs.iter().flatten())
                .filter_map(move |c| Some((name.clone(), c.parse::<IpNet>().ok()?.trunc())))
        })
        .chain(from_flags)
        .collect()
}

#[cfg(test)]
impl Decision {
    /// The status this decision rolls up to from no previous status, at the Unix epoch, for
    /// tests comparing decisions.
    pub(crate) fn status_from_scratch(
        &self,
        subnets: &[Arc<NodeSubnet>],
        generation: Option<i64>,
    ) -> PodNetworkStatus {
        let views = subnet_views(&self.plan, subnets, &BTreeMap::new());
        rollup::rollup(
            &rollup::Input {
                generation,
                invalid_spec: self.invalid_spec.clone(),
                unusable: self.unusable.clone(),
                overlap: self.overlap.as_deref(),
                selected: self.selected,
                claimed_elsewhere: &self.claimed_elsewhere,
                plan: &self.plan,
                subnets: &views,
                one_segment: None,
            },
            &PodNetworkStatus::default(),
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        )
    }
}

/// [`Decision`] for `pn` given every PodNetwork, every Node, `pn`'s NodeSubnets and the
/// cluster's Service ranges (pure).
#[must_use]
pub fn decide(
    pn: &PodNetwork,
    networks: &[Arc<PodNetwork>],
    nodes: &[Arc<Node>],
    subnets: &[Arc<NodeSubnet>],
    services: &[(String, IpNet)],
    use_node_pod_cidr: bool,
) -> Decision {
    let name = pn.name_any();
    let me = network_view(pn);
    let all: Vec<NetworkView> = networks.iter().map(|n| network_view(n)).collect();
    let overlap = conflicts::earlier_overlap(&me, &all).map(|n| n.name.clone());
    let claims = conflicts::Claims::new(&all);
    let (ranges, invalid_spec) = match pn.spec.ranges() {
        Ok(ranges) => (Some(ranges), None),
        Err(e) => (None, Some(e.to_string())),
    };
    // A malformed selector is a spec error too: report it, and keep what nodes have rather
    // than release every subnet over a typo.
    let (ranges, invalid_spec) = match selector::validate(pn.spec.node_selector.as_ref()) {
        Ok(()) => (ranges, invalid_spec),
        Err(e) => (None, Some(invalid_spec.unwrap_or(e.to_string()))),
    };
    // A range holding nodes' own addresses, or overlapping the Service range, cannot be
    // used: nothing is allocated (nor changed) until it is fixed, and the reason says which.
    let node_addresses: Vec<(String, IpAddr)> = nodes
        .iter()
        .flat_map(|n| internal_ips(n).into_iter().map(move |a| (n.name_any(), a)))
        .collect();
    let unusable = ranges.iter().flatten().enumerate().find_map(|(i, range)| {
        let field = if i == 0 {
            "spec.cidr"
        } else {
            "spec.secondaryCidr"
        };
        conflicts::nodes_inside(field, range.cidr, &node_addresses)
            .map(|why| (reasons::CIDR_OVERLAPS_NODES, why))
            .or_else(|| {
                conflicts::services_inside(field, range.cidr, services)
                    .map(|why| (reasons::CIDR_OVERLAPS_SERVICES, why))
            })
    });
    let ranges = if unusable.is_some() { None } else { ranges };
    let no_ranges = Vec::new();
    let view_ranges = ranges.as_ref().unwrap_or(&no_ranges);

    // Nodes this network owns, and those it selects but an earlier network owns.
    let mut owned = Vec::new();
    let mut claimed_elsewhere = Vec::new();
    let mut selected = 0usize;
    let empty = BTreeMap::new();
    for node in nodes {
        if node.meta().deletion_timestamp.is_some() {
            continue;
        }
        let labels = node.meta().labels.as_ref().unwrap_or(&empty);
        if !selector::matches(pn.spec.node_selector.as_ref(), labels).unwrap_or(false) {
            continue;
        }
        selected += 1;
        match claims.owner(labels) {
            Some(owner) if owner == name => owned.push(node_view(node, view_ranges)),
            Some(owner) => claimed_elsewhere.push((node.name_any(), owner.to_string())),
            None => {}
        }
    }
    owned.sort_by(|a, b| a.name.cmp(&b.name));
    claimed_elsewhere.sort();

    let existing: Vec<Allocation> = subnets
        .iter()
        .filter_map(|s| {
            let parsed = s.spec.parse_addresses().ok()?;
            Some(Allocation {
                object: s.name_any(),
                node: s.spec.node_name.clone(),
                cidr: parsed.cidr,
                node_address: parsed.node_address,
                secondary_cidr: parsed.secondary_cidr,
                secondary_node_address: parsed.secondary_node_address,
            })
        })
        .collect();
    let pool = |r: &PodRange| ipam::Pool {
        cidr: r.cidr,
        prefix: r.prefix_length,
    };
    let pools = ranges
        .as_ref()
        .and_then(|r| Some((pool(r.first()?), r.get(1).map(pool))));
    let plan = match pools {
        // While the spec is invalid nothing changes: existing allocations stay as they are.
        None => ipam::Plan {
            keep: existing,
            ..ipam::Plan::default()
        },
        Some((primary, secondary)) => {
            // An overlapping (later) network allocates nothing and gives back what it holds.
            let nodes: &[NodeView] = if overlap.is_some() { &[] } else { &owned };
            ipam::plan(&ipam::Input {
                network: &name,
                primary,
                secondary,
                use_node_pod_cidr,
                nodes,
                existing: &existing,
            })
        }
    };
    let released_why = plan
        .release
        .iter()
        .map(|a| {
            let why = if !nodes.iter().any(|n| n.name_any() == a.node) {
                format!("node {} no longer exists", a.node)
            } else if overlap.is_some() {
                format!(
                    "this network's range overlaps the earlier PodNetwork {}",
                    overlap.as_deref().unwrap_or_default()
                )
            } else if !owned.iter().any(|n| n.name == a.node) {
                format!(
                    "node {} is not selected by this network (or an earlier network owns it)",
                    a.node
                )
            } else if let Some((subnet, pool)) = pools.and_then(|(primary, secondary)| {
                let outside = |subnet: IpNet, pool: ipam::Pool| {
                    !(pool.cidr.contains(&subnet) && subnet.prefix_len() == pool.prefix)
                };
                if outside(a.cidr, primary) {
                    return Some((a.cidr, primary));
                }
                match (a.secondary_cidr, secondary) {
                    (Some(subnet), Some(pool)) if outside(subnet, pool) => Some((subnet, pool)),
                    (Some(subnet), None) => Some((subnet, primary)),
                    _ => None,
                }
            }) {
                format!(
                    "{subnet} is not a /{} slice of the network's range {} (written by hand, or left from an older spec)",
                    pool.prefix, pool.cidr
                )
            } else {
                format!(
                    "node {} holds another subnet of this network, or another node holds this one: each node keeps one, each subnet one node",
                    a.node
                )
            };
            (a.object.clone(), why)
        })
        .collect();
    Decision {
        overlap,
        invalid_spec,
        unusable,
        selected,
        claimed_elsewhere,
        plan,
        released_why,
    }
}

/// Shortest time between two status writes of the incremental path (see
/// [`write_status_ordered`]).
const STATUS_INTERVAL: Duration = Duration::from_millis(100);

/// Shortest time between two status writes of the incremental path that change only counts
/// ([`rollup::counts_only`]): every agent watches PodNetworks, so each write reaches every node.
const COUNTS_INTERVAL: Duration = Duration::from_secs(2);

/// Longest time the incremental path runs without a full re-plan (which also catches what no
/// watch reported).
const FULL_REPLAN_EVERY: Duration = RESYNC;

/// One network's reconcile: the incremental path when the index its last full re-plan left
/// still describes it and every change since is one it handles; the full re-plan otherwise
/// (start-up, resync, spec or cross-network changes, anything unusual).
async fn apply(pn: &PodNetwork, ctx: &Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let name = pn.name_any();
    // Taken before the caches are read: a change noted later is looked at again next time.
    let (dirty, index) = ctx.changes.take(&name);
    let seen = ctx.changes.first_seen(&dirty.nodes);
    let networks = ctx.networks.state();
    let services = service_ranges(&ctx.service_cidrs.state(), &ctx.options.service_cidrs);
    let silent = ctx.silent.borrow().clone();
    let inputs = Inputs::new(
        pn,
        &networks,
        services.clone(),
        &silent,
        ctx.options.use_node_pod_cidr,
    );
    if let Some((mut index, full_replan)) = index {
        let why = if full_replan.elapsed() >= FULL_REPLAN_EVERY {
            Fallback("periodic full re-plan".to_owned())
        } else if !index.current(&inputs) {
            Fallback(
                "the spec, another network, the Service ranges or a heartbeat changed".to_owned(),
            )
        } else {
            let node = |n: &str| ctx.nodes.get(&ObjectRef::new(n));
            let subnet = |s: &str| ctx.subnets.get(&ObjectRef::new(s));
            match index.step(&dirty, pn, node, subnet) {
                Ok(step) => {
                    let timing = Timing { seen, started };
                    return apply_step(pn, ctx, index, full_replan, step, timing).await;
                }
                Err(why) => why,
            }
        };
        debug!(reason = %why, "full re-plan");
    }
    ctx.metrics.full_replan();
    let nodes = ctx.nodes.state();
    let subnets = owned_subnets(ctx, &name);
    let decision = decide(
        pn,
        &networks,
        &nodes,
        &subnets,
        &services,
        ctx.options.use_node_pod_cidr,
    );
    let full_replan = Instant::now();
    let action = apply_decision(pn, ctx, &decision, &subnets, &silent).await?;
    match Index::build(pn, inputs, &nodes, &subnets, &decision, &silent) {
        Ok(index) if action == Action::requeue(RESYNC) => {
            ctx.changes.keep(&name, index, full_replan);
        }
        Ok(_) => {}
        Err(why) => debug!(reason = %why, "no incremental path until the next full re-plan"),
    }
    Ok(action)
}

/// When a reconcile's earliest Node event arrived and when the reconcile started.
struct Timing {
    seen: Option<Instant>,
    started: Instant,
}

/// The writes of one incremental step, then the status from the index (see [`apply`]).
///
/// Only the NodeSubnet writes are awaited: the allocation events, condition events and the
/// status write go on in the background, in order (see [`write_status_ordered`]), so the next
/// joining node does not wait for them. A failed background status write makes the next
/// reconcile a full re-plan.
async fn apply_step(
    pn: &PodNetwork,
    ctx: &Arc<Context>,
    index: Index,
    full_replan: Instant,
    step: Step,
    timing: Timing,
) -> Result<Action, Error> {
    let name = pn.name_any();
    release(ctx, pn, &step.release, &step.released_why).await?;
    let posted = Instant::now();
    let (created, allocated) = create(ctx, pn, &step.create).await?;
    if let (Some(seen), false) = (timing.seen, allocated.is_empty()) {
        ctx.metrics.join(JoinPhases {
            queued: timing.started.saturating_duration_since(seen),
            planned: posted.saturating_duration_since(timing.started),
            created: posted.elapsed(),
        });
    }
    if matches!(created, Created::SomeTaken) {
        // The index counted a subnet someone else holds: it is dropped, and the next
        // reconcile re-plans from the API and writes the status.
        publish_allocated(ctx, pn, &allocated);
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let previous = previous_status(ctx, pn);
    let status = index.status(&previous, Time(k8s_openapi::jiff::Timestamp::now()));
    ctx.metrics
        .subnets(&name, status.subnets_allocated, status.subnets_free);
    let order = (status != previous).then(|| ctx.changes.queued(&name, &status));
    publish_allocated(ctx, pn, &allocated);
    let (ctx_, pn_) = (ctx.clone(), pn.clone());
    tokio::spawn(async move {
        let (ctx, pn) = (ctx_, pn_);
        let Some(order) = order else {
            return;
        };
        announce_transitions(&ctx, &pn, &previous, &status).await;
        let name = pn.name_any();
        if let Err(e) = write_status_ordered(&ctx, &name, order, &status, true).await {
            warn!(network = %name, error = %e, "status write failed; re-planning in full");
            ctx.changes.mark_stale(&name);
            let _ = ctx.replan.send(());
        }
    });
    ctx.changes.keep(&name, index, full_replan);
    Ok(Action::requeue(
        FULL_REPLAN_EVERY.saturating_sub(full_replan.elapsed()),
    ))
}

/// Carries out a full re-plan's [`Decision`] and writes the status.
async fn apply_decision(
    pn: &PodNetwork,
    ctx: &Context,
    decision: &Decision,
    subnets: &[Arc<NodeSubnet>],
    silent: &BTreeMap<String, Silence>,
) -> Result<Action, Error> {
    let name = pn.name_any();
    let Decision {
        overlap,
        invalid_spec,
        unusable,
        selected,
        claimed_elsewhere,
        plan,
        released_why,
    } = decision;
    let selected = *selected;

    release(ctx, pn, &plan.release, released_why).await?;
    let gone = |node: &str| ctx.nodes.get(&ObjectRef::new(node)).is_none();
    release_agent_finalizers(ctx, pn, &stranded(subnets, gone)).await?;
    let (created, allocated) = create(ctx, pn, &plan.create).await?;
    publish_allocated(ctx, pn, &allocated);
    match created {
        Created::All => {}
        // Another operator (split brain) or a stale cache: the next reconcile plans around it.
        Created::SomeTaken => return Ok(Action::requeue(Duration::from_secs(1))),
    }
    readdress(ctx, pn, &plan.readdress).await?;

    // Status: what agents report on the NodeSubnets of the allocated nodes.
    let views = subnet_views(plan, subnets, silent);
    let previous = pn.status.clone().unwrap_or_default();
    let status = rollup::rollup(
        &rollup::Input {
            generation: pn.meta().generation,
            invalid_spec: invalid_spec.clone(),
            unusable: unusable.clone(),
            overlap: overlap.as_deref(),
            selected,
            claimed_elsewhere,
            plan,
            subnets: &views,
            one_segment: one_segment(&pn.spec),
        },
        &previous,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    ctx.metrics
        .subnets(&name, status.subnets_allocated, status.subnets_free);
    // A background write of an older status may still land: write this one after it even
    // when the cache already shows it.
    let pending = ctx
        .changes
        .last_status(&name)
        .is_some_and(|last| last != status);
    if status != previous || pending {
        let order = ctx.changes.queued(&name, &status);
        announce_transitions(ctx, pn, &previous, &status).await;
        if let Err(e) = write_status_ordered(ctx, &name, order, &status, false).await {
            ctx.changes.mark_stale(&name);
            return Err(e);
        }
    }
    Ok(Action::requeue(RESYNC))
}

/// The status an incremental step starts from: the one this process computed last (its
/// background write may not be in the cache yet), else the cached one.
fn previous_status(ctx: &Context, pn: &PodNetwork) -> PodNetworkStatus {
    ctx.changes
        .last_status(&pn.name_any())
        .or_else(|| pn.status.clone())
        .unwrap_or_default()
}

/// Writes `status`, queued as number `order`, unless a newer one was written already:
/// background writes never overwrite a newer status. With `throttle` (the incremental path)
/// a network's status is written at most every [`STATUS_INTERVAL`], or every
/// [`COUNTS_INTERVAL`] when it changes only counts since the last write, and a status that a
/// newer one supersedes meanwhile is not written at all: during a burst of joins the API
/// server spends its time on the joins, and the status follows within the interval. A newer
/// status cuts the wait short, so a condition change never waits out a count's interval.
async fn write_status_ordered(
    ctx: &Context,
    name: &str,
    order: u64,
    status: &PodNetworkStatus,
    throttle: bool,
) -> Result<(), Error> {
    let lock = ctx.changes.write_order(name);
    let mut written = lock.lock().await;
    if written.order > order {
        return Ok(());
    }
    if throttle {
        if let Some(at) = written.at {
            let interval = match &written.status {
                Some(last) if rollup::counts_only(last, status) => COUNTS_INTERVAL,
                _ => STATUS_INTERVAL,
            };
            let newer = ctx.changes.newer_queued(name);
            let queued = newer.notified();
            tokio::pin!(queued);
            // Registered before the check: a status queued right after it still wakes us.
            queued.as_mut().enable();
            if !ctx.changes.superseded(name, order) {
                tokio::select! {
                    () = tokio::time::sleep_until((at + interval).into()) => {}
                    () = queued => {}
                }
            }
        }
        // The newer status's own write, queued behind this lock, writes it.
        if ctx.changes.superseded(name, order) {
            return Ok(());
        }
    }
    write_status(ctx, name, status).await?;
    written.order = order;
    written.at = Some(Instant::now());
    written.status = Some(status.clone());
    Ok(())
}

/// The SubnetAllocated events of NodeSubnets just created.
fn publish_allocated(ctx: &Context, pn: &PodNetwork, allocated: &[Allocation]) {
    publish_allocations(ctx, pn, "SubnetAllocated", "Allocate", allocated, |a| {
        format!(
            "allocated {} to node {} ({})",
            a.cidr, a.node, a.node_address
        )
    });
}

/// Deletes the NodeSubnets the plan gives back (already gone counts as done), with an event.
async fn release(
    ctx: &Context,
    pn: &PodNetwork,
    release: &[Allocation],
    why: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let api: Api<NodeSubnet> = Api::all(ctx.client.clone());
    // Owned items: borrowed ones trip the compiler's `Send` inference for stream closures.
    let released: Vec<Allocation> = futures::stream::iter(release.to_vec())
        .map(|a| {
            let api = api.clone();
            async move {
                info!(node = %a.node, cidr = %a.cidr, "releasing node subnet");
                match api.delete(&a.object, &DeleteParams::default()).await {
                    Ok(_) => Ok(a),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(a),
                    Err(source) => Err(Error::DeleteSubnet {
                        name: a.object.clone(),
                        source,
                    }),
                }
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect()
        .await?;
    ctx.metrics.releases(released.len());
    publish_allocations(ctx, pn, "SubnetReleased", "Release", &released, |a| {
        let because = why
            .get(&a.object)
            .map_or_else(String::new, |w| format!(": {w}"));
        format!(
            "released {} of node {} (NodeSubnet {}){because}",
            a.cidr, a.node, a.object
        )
    });
    Ok(())
}

/// NodeSubnets being deleted that still carry their agent's finalizer although their Node is
/// gone (per `gone`, the cache). That agent can no longer release it: its credentials are
/// bound to the Node and went with it, so the NodeSubnet would never go. Pure.
pub fn stranded(subnets: &[Arc<NodeSubnet>], gone: impl Fn(&str) -> bool) -> Vec<Arc<NodeSubnet>> {
    subnets
        .iter()
        .filter(|s| s.meta().deletion_timestamp.is_some())
        .filter(|s| s.finalizers().iter().any(|f| f == AGENT_FINALIZER))
        .filter(|s| gone(&s.spec.node_name))
        .cloned()
        .collect()
}

/// Releases the agent finalizer of each stranded NodeSubnet once the API confirms its Node is
/// gone (the cache may lag), with a test-and-remove patch that fails if the finalizers moved,
/// and an event naming the NodeSubnet and why.
async fn release_agent_finalizers(
    ctx: &Context,
    pn: &PodNetwork,
    stranded: &[Arc<NodeSubnet>],
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let api: Api<NodeSubnet> = Api::all(ctx.client.clone());
    for s in stranded {
        let node = &s.spec.node_name;
        match nodes.get_opt(node).await {
            Ok(None) => {}
            Ok(Some(_)) => continue,
            Err(source) => {
                warn!(%node, error = %source, "cannot tell whether the node is gone");
                continue;
            }
        }
        let kept: Vec<&String> = s
            .finalizers()
            .iter()
            .filter(|f| *f != AGENT_FINALIZER)
            .collect();
        // The resourceVersion makes the patch conditional: if the finalizers moved meanwhile
        // the API server answers 409 and the next reconcile looks again.
        let patch = serde_json::json!({"metadata": {
            "finalizers": kept,
            "resourceVersion": s.resource_version(),
        }});
        let name = s.name_any();
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
            Err(source) => return Err(Error::UpdateSubnet { name, source }),
        }
        info!(%node, subnet = %name, "released the agent finalizer of a node that is gone");
        publish_related(
            ctx,
            pn,
            Kind::Normal,
            "AgentFinalizerReleased",
            "Release",
            format!(
                "NodeSubnet {name}: node {node} no longer exists, so its agent (whose credentials were bound to the Node) cannot release {AGENT_FINALIZER}; the operator released it. If the machine still runs, its routes stay until its agent runs again."
            ),
            node_ref(node),
        )
        .await;
    }
    Ok(())
}

/// Whether every planned NodeSubnet was created.
enum Created {
    All,
    /// At least one name already existed: re-plan before going on.
    SomeTaken,
}

/// Creates the planned NodeSubnets, with the allocation latency metric for those created,
/// which it returns (for their events, [`publish_allocated`]). The first failure is returned
/// after the others were tried.
async fn create(
    ctx: &Context,
    pn: &PodNetwork,
    create: &[Allocation],
) -> Result<(Created, Vec<Allocation>), Error> {
    let api: Api<NodeSubnet> = Api::all(ctx.client.clone());
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    let results: Vec<Result<Option<Allocation>, Error>> = futures::stream::iter(create.to_vec())
        .map(|a| {
            let api = api.clone();
            let params = &params;
            async move {
                match api.create(params, &node_subnet(pn, &a)).await {
                    Ok(_) => {
                        info!(node = %a.node, cidr = %a.cidr, "allocated node subnet");
                        Ok(Some(a))
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        warn!(node = %a.node, cidr = %a.cidr, "subnet already taken; re-planning");
                        Ok(None)
                    }
                    Err(source) => Err(Error::CreateSubnet {
                        name: a.object.clone(),
                        source,
                    }),
                }
            }
        })
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut allocated = Vec::new();
    let mut taken = false;
    let mut failed = None;
    for r in results {
        match r {
            Ok(Some(a)) => allocated.push(a),
            Ok(None) => taken = true,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    allocated.sort_by(|a, b| a.node.cmp(&b.node));
    ctx.metrics.allocations(allocated.len());
    for a in &allocated {
        let node = ctx.nodes.get(&ObjectRef::new(&a.node));
        if let Some(created) = node
            .as_ref()
            .and_then(|n| n.meta().creation_timestamp.as_ref())
        {
            ctx.metrics.allocation_latency(created);
        }
    }
    match (failed, taken) {
        (Some(e), _) => {
            // The events of those created are not lost with the error.
            publish_allocated(ctx, pn, &allocated);
            Err(e)
        }
        (None, true) => Ok((Created::SomeTaken, allocated)),
        (None, false) => Ok((Created::All, allocated)),
    }
}

/// Moves NodeSubnets whose node changed address to the new one, with an event each.
async fn readdress(ctx: &Context, pn: &PodNetwork, moved: &[Allocation]) -> Result<(), Error> {
    let api: Api<NodeSubnet> = Api::all(ctx.client.clone());
    let subnets = owned_subnets(ctx, &pn.name_any());
    for a in moved {
        let before = subnets
            .iter()
            .find(|s| s.name_any() == a.object)
            .map(|s| s.spec.clone());
        // A merge patch: `null` removes secondaryNodeAddress when the node lost its address
        // of the other family.
        let patch = serde_json::json!({
            "spec": {
                "nodeAddress": a.node_address.to_string(),
                "secondaryCidr": a.secondary_cidr.map(|c| c.to_string()),
                "secondaryNodeAddress": a.secondary_node_address.map(|c| c.to_string()),
            },
        });
        api.patch(&a.object, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::UpdateSubnet {
                name: a.object.clone(),
                source,
            })?;
        let gained = before
            .as_ref()
            .is_some_and(|b| b.secondary_cidr.is_none())
            .then_some(a.secondary_cidr)
            .flatten();
        let (reason, note) = match gained {
            Some(subnet) => (
                "SecondarySubnetAllocated",
                format!("node {} now also has {subnet} (secondaryCidr)", a.node),
            ),
            None => (
                "NodeAddressChanged",
                match a.secondary_node_address {
                    Some(second) => format!(
                        "node {} now has addresses {} and {second}",
                        a.node, a.node_address
                    ),
                    None => format!("node {} now has address {}", a.node, a.node_address),
                },
            ),
        };
        publish_related(
            ctx,
            pn,
            Kind::Normal,
            reason,
            "Update",
            note,
            node_ref(&a.node),
        )
        .await;
    }
    Ok(())
}

/// What the roll-up needs from each allocated node's NodeSubnet status and heartbeat: its
/// Programmed condition (and whether it describes the current spec), MTU, segment, BGP
/// trouble and silence. Pure.
pub fn subnet_views(
    plan: &ipam::Plan,
    subnets: &[Arc<NodeSubnet>],
    silent: &BTreeMap<String, Silence>,
) -> Vec<SubnetView> {
    let by_node: BTreeMap<&str, &Arc<NodeSubnet>> = subnets
        .iter()
        .map(|s| (s.spec.node_name.as_str(), s))
        .collect();
    plan.keep
        .iter()
        .chain(&plan.readdress)
        .chain(&plan.create)
        .map(|a| {
            subnet_view(
                &a.node,
                by_node.get(a.node.as_str()).map(|s| s.as_ref()),
                silent.get(&a.node),
            )
        })
        .collect()
}

/// What the roll-up needs of one allocated node: its NodeSubnet `s` as cached (if it is) and
/// its agent's silence. Pure; [`subnet_views`] and the incremental path share it.
pub fn subnet_view(node: &str, s: Option<&NodeSubnet>, silent: Option<&Silence>) -> SubnetView {
    let status = s.and_then(|s| s.status.as_ref());
    let programmed = status
        .and_then(|st| find_condition(&st.conditions, types::PROGRAMMED))
        .map(|c| ProgrammedView {
            status: causeway_crds::conditions::is_true(c),
            reason: c.reason.clone(),
            message: c.message.clone(),
            current: s.is_some_and(|s| {
                c.observed_generation.is_some() && c.observed_generation == s.meta().generation
            }),
        });
    SubnetView {
        node: node.to_owned(),
        programmed,
        effective_mtu: status.and_then(|st| st.effective_mtu),
        // Ready=False BgpSessionsDown: programmed, but routes through the routers
        // are missing, which is a problem of the network too.
        bgp_down: status
            .and_then(|st| find_condition(&st.conditions, types::READY))
            .filter(|r| {
                r.status == "False"
                    && (r.reason == reasons::BGP_SESSIONS_DOWN
                        || r.reason == reasons::BGP_PEER_MISCONFIGURED)
            })
            .map(|r| r.message.clone()),
        underlay_prefix: status
            .and_then(|st| st.underlay_prefix.as_deref())
            .and_then(|p| p.parse().ok()),
        silent: silent.map(|s| {
            format!(
                "no heartbeat for more than {}s, Lease {}",
                s.limit.as_secs(),
                s.lease
            )
        }),
    }
}

/// The mode's name for messages when it needs every node on one L2 segment: Flat, and Routed
/// without BGP (no router carries pod routes between segments).
pub(crate) fn one_segment(spec: &causeway_crds::PodNetworkSpec) -> Option<&'static str> {
    match spec.mode {
        PodNetworkMode::Flat => Some("Flat mode"),
        PodNetworkMode::Routed if spec.routed.as_ref().is_none_or(|r| r.bgp.is_none()) => {
            Some("Routed mode without BGP")
        }
        _ => None,
    }
}

/// The NodeSubnet the operator writes for one allocation.
pub fn node_subnet(pn: &PodNetwork, a: &Allocation) -> NodeSubnet {
    let owner = OwnerReference {
        api_version: "causeway.dev/v1alpha1".into(),
        kind: "PodNetwork".into(),
        name: pn.name_any(),
        uid: pn.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    NodeSubnet {
        metadata: ObjectMeta {
            name: Some(a.object.clone()),
            labels: Some(BTreeMap::from([
                (LABEL_NETWORK.to_string(), pn.name_any()),
                (LABEL_NODE.to_string(), a.node.clone()),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: NodeSubnetSpec {
            network: pn.name_any(),
            node_name: a.node.clone(),
            cidr: a.cidr.to_string(),
            node_address: a.node_address.to_string(),
            vtep_mac: Some(vtep::vtep_mac(&a.node).to_string()),
            secondary_cidr: a.secondary_cidr.map(|c| c.to_string()),
            secondary_node_address: a.secondary_node_address.map(|a| a.to_string()),
        },
        status: None,
    }
}

async fn write_status(ctx: &Context, name: &str, status: &PodNetworkStatus) -> Result<(), Error> {
    causeway_kube::status::apply::<PodNetwork>(&ctx.client, name, status, FIELD_MANAGER)
        .await
        .map_err(|source| Error::WriteStatus {
            name: name.to_string(),
            source,
        })
}

/// One event per condition whose status or reason changed, so `kubectl describe` tells the
/// story (conflicts, exhaustion, readiness) without reading logs.
async fn announce_transitions(
    ctx: &Context,
    pn: &PodNetwork,
    previous: &PodNetworkStatus,
    status: &PodNetworkStatus,
) {
    for c in &status.conditions {
        let before = find_condition(&previous.conditions, &c.type_);
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason) {
            continue;
        }
        // Bad states are warnings; good ones (Ready=True, others back to False) normal.
        let healthy = (c.type_ == types::READY) == causeway_crds::conditions::is_true(c);
        if before.is_none() && healthy && c.type_ != types::READY {
            continue; // no event for a condition that starts out fine
        }
        let kind = if healthy { Kind::Normal } else { Kind::Warning };
        publish(
            ctx,
            pn,
            kind,
            &c.reason,
            &c.type_,
            format!("{}={}: {}", c.type_, c.status, c.message),
        )
        .await;
    }
}

async fn publish(
    ctx: &Context,
    pn: &PodNetwork,
    kind: Kind,
    reason: &str,
    action: &str,
    note: String,
) {
    publish_related(ctx, pn, kind, reason, action, note, None).await
}

async fn publish_related(
    ctx: &Context,
    pn: &PodNetwork,
    kind: Kind,
    reason: &str,
    action: &str,
    note: String,
    related: Option<ObjectReference>,
) {
    let record = Record {
        kind,
        reason,
        action,
        note,
        related,
    };
    ctx.events.publish(&pn.object_ref(&()), record).await;
}

/// The events of allocations or releases just done, gathered with the rest of their burst
/// ([`gather`]): one per node, or one summary for more than [`gather::PER_NODE_LIMIT`].
fn publish_allocations(
    ctx: &Context,
    pn: &PodNetwork,
    reason: &'static str,
    action: &'static str,
    done: &[Allocation],
    describe: impl Fn(&Allocation) -> String,
) {
    let items = done
        .iter()
        .map(|a| gather::Item {
            note: describe(a),
            node: a.node.clone(),
        })
        .collect();
    ctx.allocation_events
        .add(pn.object_ref(&()), reason, action, items);
}

/// A reference to a Node, the `related` object of per-node events.
fn node_ref(name: &str) -> Option<ObjectReference> {
    Some(gather::node_ref(name))
}

/// Once `pn` has left the cache (its finalizer is being removed now), re-plans every other
/// network: an overlapping or node-sharing network may take over what it held.
fn replan_when_gone(ctx: &Context, pn: &PodNetwork) {
    let key = ObjectRef::from_obj(pn);
    let store = ctx.networks.clone();
    let replan = ctx.replan.clone();
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        while store.get(&key).is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = replan.send(());
    });
}

/// Deletion: delete this network's NodeSubnets and wait until they are gone.
async fn cleanup(pn: &PodNetwork, ctx: &Context) -> Result<Action, Error> {
    let name = pn.name_any();
    let api: Api<NodeSubnet> = Api::all(ctx.client.clone());
    // Ask the API, not the cache: the finalizer must not be removed on stale data.
    let list = api
        .list(&ListParams::default().labels(&format!("{LABEL_NETWORK}={name}")))
        .await
        .map_err(|source| Error::ListSubnets {
            network: name.clone(),
            source,
        })?;
    if list.items.is_empty() {
        info!("all NodeSubnets gone; releasing the PodNetwork");
        ctx.metrics.forget(&name);
        ctx.changes.forget(&name);
        replan_when_gone(ctx, pn);
        return Ok(Action::await_change());
    }
    for s in &list.items {
        if s.meta().deletion_timestamp.is_none() {
            let sname = s.name_any();
            match api.delete(&sname, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(source) => {
                    return Err(Error::DeleteSubnet {
                        name: sname,
                        source,
                    });
                }
            }
        }
    }
    publish(
        ctx,
        pn,
        Kind::Normal,
        "DeletingNodeSubnets",
        "Delete",
        format!(
            "waiting for {} to be removed (agents clean up their nodes first)",
            plural(list.items.len(), "NodeSubnet")
        ),
    )
    .await;
    Err(Error::CleanupPending {
        name,
        count: list.items.len(),
    })
}

/// "1 NodeSubnet", "3 NodeSubnets".
fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    //! [`decide`] over plain objects: what a reconcile plans before it writes anything.

    use super::*;

    fn network(name: &str, created: &str, spec: serde_json::Value) -> Arc<PodNetwork> {
        let mut pn = PodNetwork::new(name, serde_json::from_value(spec).expect("spec"));
        pn.metadata.creation_timestamp = Some(Time(created.parse().expect("time")));
        Arc::new(pn)
    }

    fn overlay(name: &str, created: &str, cidr: &str) -> Arc<PodNetwork> {
        network(
            name,
            created,
            serde_json::json!({"cidr": cidr, "nodeSubnetPrefixLength": 24, "mode": "Overlay"}),
        )
    }

    fn node(name: &str, ip: &str, labels: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
            }))
            .expect("node"),
        )
    }

    fn nodes() -> Vec<Arc<Node>> {
        vec![
            node("node-a", "192.168.1.11", &[("rack", "a")]),
            node("node-b", "192.168.1.12", &[("rack", "b")]),
            node("node-c", "192.168.1.13", &[("rack", "b")]),
        ]
    }

    fn created(d: &Decision) -> Vec<(String, String)> {
        d.plan
            .create
            .iter()
            .map(|a| (a.node.clone(), a.cidr.to_string()))
            .collect()
    }

    #[test]
    fn a_node_view_takes_the_address_and_pod_cidr_of_each_range_family() {
        let dual: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-a"},
            "spec": {"podCIDRs": ["fd00:10:244:7::/64", "10.244.7.0/24"]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "fe80::1"},
                {"type": "InternalIP", "address": "fd00:1::11"},
                {"type": "Hostname", "address": "node-a"},
                {"type": "InternalIP", "address": "192.168.1.11"},
            ]},
        }))
        .expect("node");
        let range = |cidr: &str, prefix: i32| PodRange::parse(cidr, prefix).expect("range");
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let net = |s: &str| -> IpNet { s.parse().expect("net") };
        // IPv4 primary: the IPv4 address first, whatever order the node lists them in; the
        // link-local address is no address peers can use.
        let view = node_view(
            &dual,
            &[range("10.244.0.0/16", 24), range("fd00:10:244::/56", 64)],
        );
        assert_eq!(
            (
                view.internal_ip,
                view.secondary_ip,
                view.pod_cidr,
                view.secondary_pod_cidr
            ),
            (
                Some(ip("192.168.1.11")),
                Some(ip("fd00:1::11")),
                Some(net("10.244.7.0/24")),
                Some(net("fd00:10:244:7::/64"))
            )
        );
        // IPv6-only network: the IPv6 address, the IPv4 one second.
        let view = node_view(&dual, &[range("fd00:10:244::/56", 64)]);
        assert_eq!(
            (
                view.internal_ip,
                view.secondary_ip,
                view.pod_cidr,
                view.secondary_pod_cidr
            ),
            (
                Some(ip("fd00:1::11")),
                Some(ip("192.168.1.11")),
                Some(net("fd00:10:244:7::/64")),
                None
            )
        );
        // An IPv4-only node in an IPv6 network: its IPv4 address carries the pods' packets.
        let v4 = node("node-b", "192.168.1.12", &[]);
        let view = node_view(&v4, &[range("fd00:10:244::/56", 64)]);
        assert_eq!(
            (view.internal_ip, view.secondary_ip),
            (Some(ip("192.168.1.12")), None)
        );
    }

    #[test]
    fn a_network_allocates_one_subnet_per_selected_node_and_then_keeps_them() {
        let pn = overlay("pods", "2025-01-01T00:00:00Z", "10.244.0.0/16");
        let d = decide(&pn, std::slice::from_ref(&pn), &nodes(), &[], &[], false);
        assert_eq!(
            (d.overlap.as_deref(), d.invalid_spec.as_deref()),
            (None, None)
        );
        assert_eq!(d.selected, 3);
        assert_eq!(
            created(&d),
            [
                ("node-a".to_owned(), "10.244.0.0/24".to_owned()),
                ("node-b".to_owned(), "10.244.1.0/24".to_owned()),
                ("node-c".to_owned(), "10.244.2.0/24".to_owned()),
            ]
        );
        // The next reconcile sees what was created and keeps it.
        let subnets: Vec<Arc<NodeSubnet>> = d
            .plan
            .create
            .iter()
            .map(|a| Arc::new(node_subnet(&pn, a)))
            .collect();
        let again = decide(
            &pn,
            std::slice::from_ref(&pn),
            &nodes(),
            &subnets,
            &[],
            false,
        );
        assert!(again.plan.create.is_empty() && again.plan.release.is_empty());
        assert_eq!(again.plan.keep.len(), 3);
    }

    #[test]
    fn a_later_overlapping_network_allocates_nothing_and_gives_back_what_it_holds() {
        let first = overlay("first", "2025-01-01T00:00:00Z", "10.244.0.0/16");
        let later = overlay("later", "2025-02-01T00:00:00Z", "10.244.128.0/17");
        let networks = [first.clone(), later.clone()];
        let d = decide(&first, &networks, &nodes(), &[], &[], false);
        assert_eq!(d.overlap, None);
        let held = ipam::Allocation {
            object: "later-10-244-128-0-24".into(),
            node: "node-a".into(),
            cidr: "10.244.128.0/24".parse().expect("cidr"),
            node_address: "192.168.1.11".parse().expect("ip"),
            secondary_cidr: None,
            secondary_node_address: None,
        };
        let subnets = [Arc::new(node_subnet(&later, &held))];
        let d = decide(&later, &networks, &nodes(), &subnets, &[], false);
        assert_eq!(d.overlap.as_deref(), Some("first"));
        assert!(d.plan.create.is_empty());
        assert_eq!(d.plan.release, [held]);
    }

    #[test]
    fn service_ranges_come_from_service_cidr_objects_and_the_flag() {
        let object = Arc::new(ServiceCIDR {
            metadata: kube::api::ObjectMeta {
                name: Some("kubernetes".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::networking::v1::ServiceCIDRSpec {
                cidrs: Some(vec!["10.96.0.0/12".into(), "fd00:10:96::/112".into()]),
            }),
            ..Default::default()
        });
        let flag: IpNet = "10.100.0.5/16".parse().expect("net");
        assert_eq!(
            service_ranges(&[object], &[flag]),
            [
                (
                    "ServiceCIDR kubernetes".to_owned(),
                    "10.96.0.0/12".parse().expect("net")
                ),
                (
                    "ServiceCIDR kubernetes".to_owned(),
                    "fd00:10:96::/112".parse().expect("net")
                ),
                (
                    "the operator's --service-cidr".to_owned(),
                    "10.100.0.0/16".parse().expect("net")
                ),
            ]
        );
        // A network over the flag's range is refused with its own reason, naming the flag.
        let why = conflicts::services_inside(
            "spec.cidr",
            "10.100.0.0/16".parse().expect("net"),
            &service_ranges(&[], &[flag]),
        )
        .expect("overlap");
        assert!(why.contains("(the operator's --service-cidr)"), "{why}");
    }

    #[test]
    fn spec_problems_keep_what_nodes_have_and_say_why() {
        let held = ipam::Allocation {
            object: "pods-10-244-0-0-24".into(),
            node: "node-a".into(),
            cidr: "10.244.0.0/24".parse().expect("cidr"),
            node_address: "192.168.1.11".parse().expect("ip"),
            secondary_cidr: None,
            secondary_node_address: None,
        };
        let services = [(
            "ServiceCIDR kubernetes".to_owned(),
            "10.96.0.0/12".parse().expect("cidr"),
        )];
        let cases = [
            (
                "a selector with an unknown operator",
                serde_json::json!({"cidr": "10.244.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
                    "nodeSelector": {"matchExpressions": [{"key": "rack", "operator": "Near", "values": ["a"]}]}}),
                reasons::INVALID_SPEC,
                "Near",
            ),
            (
                "a selector with a malformed label key",
                serde_json::json!({"cidr": "10.244.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
                    "nodeSelector": {"matchLabels": {"bad key": "a"}}}),
                reasons::INVALID_SPEC,
                "matchLabels key \"bad key\"",
            ),
            (
                "a range holding the nodes' own addresses",
                serde_json::json!({"cidr": "192.168.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay"}),
                reasons::CIDR_OVERLAPS_NODES,
                "node-a",
            ),
            (
                "a range overlapping the Service range",
                serde_json::json!({"cidr": "10.96.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay"}),
                reasons::CIDR_OVERLAPS_SERVICES,
                "overlaps the Service range 10.96.0.0/12 (ServiceCIDR kubernetes)",
            ),
        ];
        for (what, spec, reason, words) in cases {
            let pn = network("pods", "2025-01-01T00:00:00Z", spec);
            let subnets = [Arc::new(node_subnet(&pn, &held))];
            let d = decide(
                &pn,
                std::slice::from_ref(&pn),
                &nodes(),
                &subnets,
                &services,
                false,
            );
            let (got, why) = match (d.invalid_spec, d.unusable) {
                (Some(why), _) => (reasons::INVALID_SPEC, why),
                (None, Some((reason, why))) => (reason, why),
                (None, None) => ("none", String::new()),
            };
            assert_eq!(got, reason, "{what}: {why}");
            assert!(why.contains(words), "{what}: {why}");
            assert!(
                d.plan.create.is_empty() && d.plan.release.is_empty(),
                "{what}: nothing changes"
            );
            assert_eq!(d.plan.keep, std::slice::from_ref(&held), "{what}");
        }
    }

    const CIDRS: [&str; 8] = [
        "10.244.0.0/16",
        "10.244.1.0/16",
        "0.0.0.0/0",
        "192.168.0.0/16",
        "10.96.0.0/16",
        "10.244.0.0/30",
        "fe80::/64",
        "garbage",
    ];
    const SELECTORS: [&str; 5] = [
        "{}",
        r#"{"matchLabels": {"rack": "a"}}"#,
        r#"{"matchLabels": {"bad key": "a"}}"#,
        r#"{"matchExpressions": [{"key": "rack", "operator": "Near"}]}"#,
        r#"{"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a b"]}]}"#,
    ];
    const HELD: [&str; 6] = [
        "10.244.0.0/24",
        "10.244.1.0/24",
        "10.244.0.0/25",
        "10.245.0.0/24",
        "10.244.1.1/24",
        "bad",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        /// Whatever the spec, the nodes and what the network holds, planning and the roll-up
        /// never panic, every node is accounted for, and the status always has a Ready
        /// condition with a reason and a message; when Ready is False, the message is the
        /// fix the user needs, not an empty string.
        #[test]
        fn over_generated_specs_planning_never_panics_and_every_refusal_says_why(
            cidr in 0..CIDRS.len(),
            prefix in proptest::sample::select(vec![8i64, 16, 24, 30, 31, 32]),
            selector in 0..SELECTORS.len(),
            held in proptest::collection::vec((0..HELD.len(), 0..4usize), 0..5),
            use_node_pod_cidr in proptest::bool::ANY,
        ) {
            let spec = serde_json::json!({"cidr": CIDRS[cidr], "nodeSubnetPrefixLength": prefix,
                "mode": "Overlay",
                "nodeSelector": serde_json::from_str::<serde_json::Value>(SELECTORS[selector]).expect("json")});
            let pn = network("pods", "2025-01-01T00:00:00Z", spec);
            let subnets: Vec<Arc<NodeSubnet>> = held
                .iter()
                .enumerate()
                .map(|(i, (c, n))| {
                    let mut s = node_subnet(&pn, &ipam::Allocation {
                        object: format!("held-{i}"),
                        node: ["node-a", "node-b", "node-c", "node-zz"][*n].into(),
                        cidr: "10.244.0.0/24".parse().expect("cidr"),
                        node_address: "192.168.1.11".parse().expect("ip"),
                        secondary_cidr: None,
                        secondary_node_address: None,
                    });
                    s.spec.cidr = HELD[*c].into();
                    Arc::new(s)
                })
                .collect();
            let services = [("ServiceCIDR kubernetes".to_owned(), "10.96.0.0/12".parse().expect("cidr"))];
            let d = decide(&pn, std::slice::from_ref(&pn), &nodes(), &subnets, &services, use_node_pod_cidr);
            proptest::prop_assert_eq!(d.released_why.len(), d.plan.release.len());
            for why in d.released_why.values() {
                proptest::prop_assert!(!why.trim().is_empty());
            }
            let status = d.status_from_scratch(&subnets, Some(1));
            let ready = find_condition(&status.conditions, types::READY);
            proptest::prop_assert!(ready.is_some(), "no Ready condition: {:?}", status.conditions);
            let ready = ready.expect("checked");
            proptest::prop_assert!(!ready.reason.is_empty());
            proptest::prop_assert!(!ready.message.trim().is_empty(), "{ready:?}");
            if d.invalid_spec.is_some() || d.unusable.is_some() {
                proptest::prop_assert_eq!(ready.status.as_str(), "False");
                proptest::prop_assert!(d.plan.create.is_empty() && d.plan.release.is_empty(), "a refused spec changes nothing");
            }
        }
    }

    #[test]
    fn every_release_says_why() {
        let pn = network(
            "pods",
            "2025-01-01T00:00:00Z",
            serde_json::json!({"cidr": "10.244.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
                "nodeSelector": {"matchLabels": {"rack": "a"}}}),
        );
        let held = |object: &str, node: &str, cidr: &str| {
            let a = ipam::Allocation {
                object: object.into(),
                node: node.into(),
                cidr: cidr.parse().expect("cidr"),
                node_address: "192.168.1.11".parse().expect("ip"),
                secondary_cidr: None,
                secondary_node_address: None,
            };
            Arc::new(node_subnet(&pn, &a))
        };
        let selected: Vec<String> = nodes()
            .iter()
            .filter(|n| n.labels().get("rack").map(String::as_str) == Some("a"))
            .map(|n| n.name_any())
            .collect();
        let unselected = nodes()
            .iter()
            .map(|n| n.name_any())
            .find(|n| !selected.contains(n))
            .expect("an unselected node");
        let subnets = [
            held("gone", "node-zz", "10.244.9.0/24"),
            held("unselected", &unselected, "10.244.8.0/24"),
            held("by-hand", &selected[0], "10.244.7.0/25"),
        ];
        let d = decide(
            &pn,
            std::slice::from_ref(&pn),
            &nodes(),
            &subnets,
            &[],
            false,
        );
        let why = |object: &str| d.released_why.get(object).cloned().unwrap_or_default();
        assert!(
            why("gone").contains("node node-zz no longer exists"),
            "{}",
            why("gone")
        );
        assert!(
            why("unselected").contains("is not selected by this network"),
            "{}",
            why("unselected")
        );
        assert!(
            why("by-hand")
                .contains("10.244.7.0/25 is not a /24 slice of the network's range 10.244.0.0/16"),
            "{}",
            why("by-hand")
        );
        assert_eq!(d.released_why.len(), d.plan.release.len());
    }

    #[test]
    fn only_deleted_subnets_of_gone_nodes_with_the_agent_finalizer_are_stranded() {
        let pn = overlay("pods", "2025-01-01T00:00:00Z", "10.244.0.0/16");
        let d = decide(&pn, std::slice::from_ref(&pn), &nodes(), &[], &[], false);
        let subnets: Vec<Arc<NodeSubnet>> = d
            .plan
            .create
            .iter()
            .zip([
                // (deleting, agent finalizer)
                (true, true),  // node-a: gone below -> stranded
                (true, true),  // node-b: still exists
                (false, true), // node-c: gone, but not being deleted
            ])
            .map(|(a, (deleting, held))| {
                let mut s = node_subnet(&pn, a);
                if deleting {
                    s.metadata.deletion_timestamp =
                        Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
                }
                if held {
                    s.metadata.finalizers =
                        Some(vec!["example.com/other".into(), AGENT_FINALIZER.into()]);
                }
                Arc::new(s)
            })
            .collect();
        assert_eq!(subnets.len(), 3);
        let gone = |node: &str| node == "node-a" || node == "node-c";
        let found: Vec<String> = stranded(&subnets, gone)
            .iter()
            .map(|s| s.spec.node_name.clone())
            .collect();
        assert_eq!(found, ["node-a"]);
        // Without the agent's finalizer there is nothing to release.
        let mut other = (*subnets[0]).clone();
        other.metadata.finalizers = Some(vec!["example.com/other".into()]);
        assert!(stranded(&[Arc::new(other)], gone).is_empty());
    }

    #[test]
    fn subnet_views_read_what_agents_and_heartbeats_report() {
        use causeway_crds::NodeSubnetStatus;
        use causeway_crds::conditions::set_condition;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let pn = overlay("pods", "2025-01-01T00:00:00Z", "10.244.0.0/16");
        let d = decide(&pn, std::slice::from_ref(&pn), &nodes(), &[], &[], false);
        let mut subnets: Vec<NodeSubnet> =
            d.plan.create.iter().map(|a| node_subnet(&pn, a)).collect();
        for s in &mut subnets {
            s.metadata.generation = Some(2);
        }
        let condition = |type_: &str, status: &str, reason: &str, generation: i64| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: format!("{type_} {reason}"),
            observed_generation: Some(generation),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        // node-a: programmed for the current spec, BGP down, on 192.168.1.0/24.
        let mut st = NodeSubnetStatus {
            underlay_prefix: Some("192.168.1.0/24".into()),
            effective_mtu: Some(1450),
            ..NodeSubnetStatus::default()
        };
        set_condition(
            &mut st.conditions,
            condition(types::PROGRAMMED, "True", "Programmed", 2),
        );
        set_condition(
            &mut st.conditions,
            condition(types::READY, "False", reasons::BGP_SESSIONS_DOWN, 2),
        );
        subnets[0].status = Some(st);
        // node-b: its report describes an older spec.
        let mut st = NodeSubnetStatus::default();
        set_condition(
            &mut st.conditions,
            condition(types::PROGRAMMED, "False", "ApplyFailed", 1),
        );
        subnets[1].status = Some(st);
        let subnets: Vec<Arc<NodeSubnet>> = subnets.into_iter().map(Arc::new).collect();
        let silent = BTreeMap::from([(
            "node-c".to_owned(),
            Silence {
                for_: Duration::from_secs(50),
                limit: Duration::from_secs(40),
                lease: "causeway-system/node-c".into(),
            },
        )]);
        let views = subnet_views(&d.plan, &subnets, &silent);
        let by_node: BTreeMap<&str, &SubnetView> =
            views.iter().map(|v| (v.node.as_str(), v)).collect();
        let a = by_node["node-a"];
        assert!(a.programmed.as_ref().is_some_and(|p| p.status && p.current));
        assert_eq!(a.bgp_down.as_deref(), Some("Ready BgpSessionsDown"));
        assert_eq!(a.effective_mtu, Some(1450));
        assert_eq!(a.underlay_prefix, "192.168.1.0/24".parse().ok());
        let b = by_node["node-b"];
        assert!(
            b.programmed
                .as_ref()
                .is_some_and(|p| !p.status && !p.current && p.reason == "ApplyFailed")
        );
        assert_eq!(b.bgp_down, None);
        let c = by_node["node-c"];
        assert!(c.programmed.is_none(), "no report yet");
        assert_eq!(
            c.silent.as_deref(),
            Some("no heartbeat for more than 40s, Lease causeway-system/node-c")
        );
        assert_eq!(
            views.len(),
            d.plan.create.len(),
            "one view per allocated node"
        );
    }

    #[test]
    fn a_node_selected_by_an_earlier_network_stays_with_it() {
        let all = overlay("all", "2025-01-01T00:00:00Z", "10.244.0.0/16");
        let rack_b = network(
            "rack-b",
            "2025-02-01T00:00:00Z",
            serde_json::json!({"cidr": "10.250.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
                "nodeSelector": {"matchLabels": {"rack": "b"}}}),
        );
        let networks = [all, rack_b.clone()];
        let d = decide(&rack_b, &networks, &nodes(), &[], &[], false);
        assert_eq!(d.selected, 2);
        assert_eq!(
            d.claimed_elsewhere,
            [
                ("node-b".to_owned(), "all".to_owned()),
                ("node-c".to_owned(), "all".to_owned())
            ]
        );
        assert!(d.plan.create.is_empty());
    }
}
