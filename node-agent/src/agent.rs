//! The agent's loop: watch NodeSubnets, PodNetworks, OverlayGateways and this node's Node,
//! and on every change (and every `resync`) run one pass ([`crate::pass`]: observe → plan →
//! diff → apply), carry out what a valid plan decides (BGP speaker, BridgeHosts electors, CNI
//! config), and report status on this node's NodeSubnet. When only NodeSubnets changed since
//! a clean full pass, the pass covers the changed peers alone ([`pass::run_peers`]), at once
//! (no coalescing window): a node joining costs every other node O(1) work.
//!
//! Behaviour people rely on:
//! - A pass changes only what differs, so restarting the agent changes nothing and a route,
//!   neighbour, FDB entry or device deleted behind its back is back by the next resync.
//! - Losing the API server leaves the dataplane as it is: the caches keep their last state,
//!   resyncs keep repairing from it, and the watches catch up when the server returns.
//! - The agent holds the finalizer [`FINALIZER`] on its own NodeSubnet: when the NodeSubnet is
//!   deleted (node left the selector, PodNetwork deleted), it removes everything it created on
//!   the node, then lets the object go.
//! - It renews a heartbeat Lease ([`causeway_kube::heartbeat`]) from the same loop, so an agent
//!   that stopped or hangs makes its PodNetwork not Ready (`AgentNotReporting`).
//! - API writes stay O(1) per peer change: a condition change is written at once, but counts
//!   that move with every peer joining are written at most every `status_refresh` (and at the
//!   end of that period when a pass left them unwritten); events are
//!   only for this node's own transitions, repairs and clean-up.
//! - The status, events and the heartbeat are written beside the loop ([`crate::writes`]): a
//!   pass hands them over and the next pass never waits for the API server, so routes keep
//!   moving when the failure that moves them also cuts the node off the API server. What the
//!   loop still awaits (finalizers) goes through a client whose requests time out
//!   ([`bounded_writes`]): resyncs keep repairing, and the liveness probe
//!   ([`crate::health`]) stays good.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use causeway_crds::conditions::types;
use causeway_crds::v1alpha1::BgpSessionStatus;
use causeway_crds::{NodeSubnet, NodeSubnetStatus, OverlayGateway, PodNetwork};
use causeway_kube::cache::{cached, cached_slim};
use causeway_kube::events::{Kind, Publisher};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::bgp::Learned;
use crate::bgp::carry::{Carried, Merge};
use crate::bgp::{Speaker, SpeakerConfig};
use crate::elector::{self, Elector};
use crate::health::Health;
use crate::metrics::{Metrics, PassKind};
use crate::model::{Dataplane, Op};
use crate::netlink::Netlink;
use crate::status::{Failure, Outcome};
use crate::sysctl::SysctlDir;
use crate::writes::{Heartbeat, StatusWriter, spawn_event};
use crate::{cni, pass, plan};

pub use crate::FIELD_MANAGER;

/// Finalizer the agent keeps on its own NodeSubnet until it has cleaned the node up.
pub const FINALIZER: &str = causeway_crds::v1alpha1::AGENT_FINALIZER;

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's name (`spec.nodeName` of its NodeSubnet).
    pub node_name: String,
    /// Where the container runtime reads CNI configs (`/etc/cni/net.d`).
    pub cni_conf_dir: PathBuf,
    /// host-local's allocation store; `None` for its default.
    pub cni_data_dir: Option<PathBuf>,
    /// Full pass at least this often, whatever the watches say.
    pub resync: Duration,
    /// Print the operations of one pass instead of applying them, then stop.
    pub dry_run: bool,
    /// Namespace of the heartbeat Lease (the agent's own).
    pub namespace: String,
    /// The heartbeat Lease's duration; renewed every quarter of it.
    pub lease_duration: Duration,
    /// Least time between status writes that only update counts.
    pub status_refresh: Duration,
    /// Where the node's kernel parameters are (`--sysctl-dir`; `/proc/sys` on a node).
    pub sysctl_dir: SysctlDir,
    /// The API server's address as the agent's configuration names it (in a pod: the
    /// `kubernetes` Service's); with the `default/kubernetes` endpoints, no planned route may
    /// cover it.
    pub api_server: Option<std::net::IpAddr>,
    /// How BIRD runs for Routed networks with BGP (`--bird`, `--bird-dir`).
    pub bird: crate::bird::Options,
}

/// How long one API request from the loop may take (connect, send, answer each): the API
/// server's own request timeout is 60 s, but a status write or a Lease renewal that takes this
/// long is lost anyway and retried on the next pass or renewal.
pub const API_TIMEOUT: Duration = Duration::from_secs(20);

/// `config` with timeouts on every request, for the loop's writes. The watches keep a client
/// without a read timeout (their requests are long by design); writes must not hang on a
/// connection the API server no longer answers, or the loop would stop repairing the dataplane
/// until the kernel gave up on the connection (minutes).
#[must_use]
pub fn bounded_writes(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(API_TIMEOUT / 2);
    config.read_timeout = Some(API_TIMEOUT);
    config.write_timeout = Some(API_TIMEOUT);
    // Count the read timeout from the request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    config
}

/// Why a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The first pass after start.
    Start,
    /// A NodeSubnet or PodNetwork changed.
    Watch,
    /// The periodic resync: whatever it changes was changed behind the agent's back.
    Resync,
}

/// The agent's state across passes, over any [`Dataplane`]: the kernel's ([`Netlink`]) in
/// production; every decision it takes from the kernel goes through [`pass`], whose whole
/// passes are unit-tested on the fake.
pub struct Agent<D: Dataplane = Netlink> {
    /// Watches and gateway electors.
    client: Client,
    /// The loop's writes: status, finalizers, events, heartbeat ([`bounded_writes`]).
    writer: Client,
    config: Config,
    dataplane: D,
    subnets: Store<NodeSubnet>,
    networks: Store<PodNetwork>,
    /// This node's Node object (its labels).
    nodes: Store<Node>,
    /// OverlayGateways: BridgeHosts candidacies and return routes.
    gateways: Store<OverlayGateway>,
    /// The `default/kubernetes` EndpointSlices: the API servers' own addresses.
    api_endpoints: Store<k8s_openapi::api::discovery::v1::EndpointSlice>,
    /// The Secrets of the agent's namespace: BGP passwords.
    secrets: Store<Secret>,
    /// One elector per gateway this node is a candidate bridge host for.
    electors: BTreeMap<String, Elector>,
    events: Arc<Publisher>,
    /// Writes the status handed to it, beside the loop.
    status: StatusWriter,
    /// Renews the heartbeat Lease, beside the loop.
    heartbeat: Heartbeat,
    /// When the status was last handed to the writer.
    status_written: Option<Instant>,
    /// A pass left new counts unwritten (a count-only change within `status_refresh` of the
    /// last write): they are written when that period ends ([`Agent::counts_wake`]).
    counts_deferred: bool,
    /// The Programmed (status, reason) last announced by an event, and for which NodeSubnet
    /// (uid): the cache may still show the status before this agent's own write.
    announced: Option<(String, bool, String)>,
    /// Routes learned over BGP (Routed mode with BGP), best path per prefix, both families.
    learned: Learned,
    /// The BGP speaker and its configuration, while the network uses BGP.
    speaker: Option<(Speaker, SpeakerConfig)>,
    /// The change feed of a newly started speaker, for the loop to watch.
    new_bgp_changes: Option<tokio::sync::watch::Receiver<u64>>,
    /// Routes the kernel held at start-up that BGP may have taught an earlier agent.
    carried: Option<Carried>,
    /// BIRD restarts already reported by an event.
    bird_restarts: u64,
    /// Peers the last plan skipped (logged when the list changes).
    last_skipped: Vec<String>,
    /// The subnets host-local's store was last pruned for ([`cni::prune`]).
    pruned_for: Option<Vec<ipnet::IpNet>>,
    /// What the last full pass leaves for passes over changed peers ([`pass::run_peers`]).
    baseline: Option<pass::Baseline>,
    /// What the watches reported since the last pass.
    changed: Changed,
    /// The pods' IPv6 addresses the last pass planned with ([`cni::allocations6`]), while
    /// the plan answers NDP for them (dual-stack Flat); `None` otherwise. The loop re-reads
    /// host-local's store every [`POD_POLL`] and runs a pass when they changed.
    pods6: Option<BTreeSet<std::net::Ipv6Addr>>,
    /// What `/metrics` reports ([`crate::metrics`]), shared with the electors and the endpoint.
    metrics: Arc<Metrics>,
}

/// How often a dual-stack Flat node looks for pods' IPv6 addresses added or released (one
/// directory listing), so a new pod is answered for within about this long, not a resync.
const POD_POLL: Duration = Duration::from_millis(500);

/// What one pass decided, for the caller (and the dry run).
#[derive(Debug, Default)]
pub struct PassReport {
    /// Operations applied (or, in a dry run, that would be).
    pub ops: Vec<Op>,
    /// The status handed to the writer ([`crate::writes::StatusWriter`]), if any.
    pub status: Option<NodeSubnetStatus>,
    /// The pass reached a verdict for this node that is in the API already: its NodeSubnet's
    /// status was current, or it had none and the node was cleaned up. What readiness waits
    /// for ([`crate::health`]); a status handed to the writer tells readiness itself once
    /// written.
    pub settled: bool,
    /// The failure condition's reason when the pass failed (`CleanupFailed` for a teardown
    /// that could not remove everything), for the metrics.
    pub failure: Option<&'static str>,
}

/// Runs until `shutdown` resolves. `client` serves the watches, `writer` (normally
/// [`bounded_writes`]) the loop's writes; `health` learns when the loop comes round and when
/// the first pass settled.
///
/// # Errors
/// Only when the agent cannot start (no netlink); a failing pass is reported on the
/// NodeSubnet and retried.
pub async fn run(
    client: Client,
    writer: Client,
    config: Config,
    health: Health,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let dataplane = Netlink::connect()
        .await
        .context("opening netlink (is the agent root / CAP_NET_ADMIN?)")?
        .with_sysctl_dir(config.sysctl_dir.clone());
    let me = config.node_name.clone();
    let (subnets, subnet_events) =
        cached_slim::<NodeSubnet>(&client, watcher::Config::default(), move |s| {
            pass::slim_peer(s, &me)
        });
    let (networks, network_events) = cached::<PodNetwork>(&client, watcher::Config::default());
    // This node only: its labels pick the BGP peers.
    let (nodes, node_events) = cached::<Node>(
        &client,
        watcher::Config::default().fields(&format!("metadata.name={}", config.node_name)),
    );
    let (gateways, gateway_events) = cached::<OverlayGateway>(&client, watcher::Config::default());
    let (api_endpoints, api_endpoint_events) = causeway_kube::apiserver::cached(&client);
    // BGP passwords: the Secrets of the agent's own namespace (the chart's Role allows no
    // other). Best effort, like the endpoints: without them, peers with a password are
    // reported, not configured.
    let (secrets, secret_events) = causeway_kube::cache::cached_from::<Secret>(
        Api::namespaced(client.clone(), &config.namespace),
        watcher::Config::default(),
    );
    let secret_events = secret_events.filter_map(|r| async move {
        match r {
            Ok(_) => Some(Ok(None)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the Secrets of the agent's namespace (BGP passwords)");
                None
            }
        }
    });
    // NodeSubnets by name, for passes over the peers that changed; the other kinds by kind.
    let subnet_events = subnet_events.map(|r| r.map(|s| Some(s.name_any())));
    let network_events = network_events.map(|r| r.map(|_| None));
    let node_events = node_events.map(|r| r.map(|_| None));
    let gateway_events = gateway_events.map(|r| r.map(|_| None));
    // Best effort: without them (no permission), the configured address is still protected.
    let api_endpoint_events = api_endpoint_events.filter_map(|r| async move {
        match r {
            Ok(_) => Some(Ok(None)),
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the API server endpoints (default/kubernetes)");
                None
            }
        }
    });
    let mut changes = futures::stream::select_all([
        api_endpoint_events.boxed(),
        secret_events.boxed(),
        subnet_events.boxed(),
        network_events.boxed(),
        node_events.boxed(),
        gateway_events.boxed(),
    ]);

    let events = Arc::new(Publisher::new(
        writer.clone(),
        FIELD_MANAGER,
        &config.node_name,
    ));
    let status = StatusWriter::start(writer.clone(), health.clone());
    let mut agent = Agent {
        client,
        writer,
        config,
        dataplane,
        subnets,
        networks,
        nodes,
        gateways,
        api_endpoints,
        secrets,
        electors: BTreeMap::new(),
        events,
        status,
        heartbeat: Heartbeat::default(),
        status_written: None,
        counts_deferred: false,
        announced: None,
        learned: Learned::new(),
        speaker: None,
        new_bgp_changes: None,
        carried: None,
        bird_restarts: 0,
        last_skipped: Vec::new(),
        pruned_for: None,
        baseline: None,
        changed: Changed::default(),
        pods6: None,
        metrics,
    };
    // The first pass waits for full lists: an empty cache must not read as "nothing to do".
    // The watch streams must be polled meanwhile, since they fill the stores.
    {
        let (subnets, networks, nodes, gateways) = (
            agent.subnets.clone(),
            agent.networks.clone(),
            agent.nodes.clone(),
            agent.gateways.clone(),
        );
        let ready = async move {
            let _ = subnets.wait_until_ready().await;
            let _ = networks.wait_until_ready().await;
            let _ = nodes.wait_until_ready().await;
            let _ = gateways.wait_until_ready().await;
        };
        tokio::pin!(ready);
        loop {
            tokio::select! {
                _ = &mut ready => break,
                ev = changes.next() => match ev {
                    Some(Err(e)) => warn!(error = %e, "watch failed; retrying"),
                    Some(Ok(_)) => {}
                    None => anyhow::bail!("the watches ended before listing"),
                },
            }
        }
    }

    agent.carry_learned().await;
    if agent.config.dry_run {
        let report = agent.pass(Trigger::Start).await;
        for op in &report.ops {
            println!("{op}");
        }
        if report.ops.is_empty() {
            println!("# nothing to do: the dataplane matches the plan");
        }
        return Ok(());
    }

    let mut resync = tokio::time::interval(agent.config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset(); // the first pass is the start pass
    let mut heartbeat = tokio::time::interval(renew_interval(agent.config.lease_duration));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut trigger = Some(Trigger::Start);
    let mut bgp_changes: Option<tokio::sync::watch::Receiver<u64>> = None;
    loop {
        // The loop came round: whatever it was doing finished ([`crate::health`]).
        health.turned();
        if let Some(t) = trigger.take() {
            if agent.pass(t).await.settled {
                health.settled();
            }
            if let Some(rx) = agent.new_bgp_changes.take() {
                bgp_changes = Some(rx);
            }
            if agent.speaker.is_none() {
                bgp_changes = None;
            }
        }
        let bgp = async {
            match bgp_changes.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let carried_until = agent.carried_wake();
        let counts_until = agent.counts_wake();
        tokio::select! {
            _ = &mut shutdown => {
                agent.stop_speaker_for_restart().await;
                agent.stop_electors(causeway_crds::conditions::reasons::AGENT_STOPPED).await;
                info!("stopping; the dataplane stays as it is");
                return Ok(());
            }
            // A session went up or down, or learned routes changed.
            alive = bgp => {
                if alive {
                    trigger = Some(Trigger::Watch);
                } else {
                    bgp_changes = None;
                }
            }
            // Carried routes expire: a pass lets them go.
            () = sleep_until(carried_until) => trigger = Some(Trigger::Watch),
            // Counts left unwritten: the period is over, a pass (of no changed peer) writes
            // them. Cleared first, so that a pass that does not defer them again ends it.
            () = sleep_until(counts_until) => {
                agent.counts_deferred = false;
                trigger = Some(Trigger::Watch);
            }
            // In the same loop as the passes: a hung pass stops the heartbeat too.
            _ = heartbeat.tick() => agent.heartbeat(),
            _ = resync.tick() => {
                debug!("resync");
                trigger = Some(Trigger::Resync);
            }
            // Dual-stack Flat: a pod got or released an IPv6 address (its proxy entry).
            () = tokio::time::sleep(POD_POLL), if agent.pods6.is_some() => {
                if agent.pods6_changed() {
                    debug!("pods' IPv6 addresses changed");
                    trigger = Some(Trigger::Watch);
                }
            }
            ev = changes.next() => {
                let Some(ev) = ev else {
                    anyhow::bail!("the watches ended");
                };
                agent.changed.note(ev);
                while let Some(Some(ev)) = changes.next().now_or_never() {
                    agent.changed.note(ev);
                }
                // NodeSubnets alone (peers joining, leaving, reporting) are programmed at
                // once. Anything else waits a moment, to coalesce a burst (a PodNetwork and
                // its NodeSubnets change together).
                if agent.changed.other {
                    tokio::time::sleep(COALESCE).await;
                    while let Some(Some(ev)) = changes.next().now_or_never() {
                        agent.changed.note(ev);
                    }
                }
                trigger = Some(Trigger::Watch);
            }
        }
    }
}

/// How long a change other than NodeSubnets waits for the rest of its burst.
const COALESCE: Duration = Duration::from_millis(20);

/// At most this many changed NodeSubnets are replanned alone; more (a re-list, a rack
/// joining) make one full pass.
const MAX_REPLANNED: usize = 256;

/// What changed since the last pass, as the watches told.
#[derive(Debug, Default)]
struct Changed {
    /// NodeSubnets, by name.
    subnets: BTreeSet<String>,
    /// Anything else (a PodNetwork, a gateway, the Node, a Secret, the API server's
    /// endpoints): the pass compares what it plans from ([`pass::run_peers`]).
    other: bool,
    /// A watch failed: it may have missed changes, so the next pass plans in full.
    lost: bool,
}

impl Changed {
    fn note(&mut self, ev: Result<Option<String>, watcher::Error>) {
        match ev {
            Ok(Some(name)) => {
                self.subnets.insert(name);
            }
            Ok(None) => self.other = true,
            Err(e) => {
                warn!(error = %e, "watch failed; retrying");
                self.lost = true;
            }
        }
    }
}

/// When counts left unwritten (`deferred`) are due: `refresh` after the last status write.
fn counts_wake(deferred: bool, written: Option<Instant>, refresh: Duration) -> Option<Instant> {
    if !deferred {
        return None;
    }
    Some(written.map_or_else(Instant::now, |t| t + refresh))
}

/// Renewals per lease duration: one or two lost renewals never make the node look silent.
fn renew_interval(lease_duration: Duration) -> Duration {
    (lease_duration / 4).max(Duration::from_millis(250))
}

/// At most this many operations are quoted in a repair event.
const QUOTED_OPS: usize = 3;

impl<D: Dataplane> Agent<D> {
    /// Renews this node's heartbeat Lease beside the loop ([`Heartbeat`]); a failure is logged
    /// and retried next period (the operator reports the node silent only after a whole
    /// lease duration).
    fn heartbeat(&mut self) {
        let seconds =
            u32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(u32::MAX);
        self.heartbeat.renew(
            &self.writer,
            &self.config.namespace,
            &self.config.node_name,
            seconds,
            &self.metrics,
        );
    }

    /// Publishes an event about `own`, beside the loop.
    fn event(&self, own: &NodeSubnet, kind: Kind, reason: &str, action: &str, note: String) {
        spawn_event(
            &self.events,
            own.object_ref(&()),
            kind,
            reason,
            action,
            note,
        );
    }

    /// One pass. Failures end up in the NodeSubnet's status, never in a panic.
    pub async fn pass(&mut self, trigger: Trigger) -> PassReport {
        let started = Instant::now();
        let (kind, report) = self.pass_of_some_kind(trigger).await;
        if !self.config.dry_run {
            self.metrics.pass(kind, started.elapsed(), report.failure);
        }
        report
    }

    /// [`Agent::pass`], saying which kind it ran.
    async fn pass_of_some_kind(&mut self, trigger: Trigger) -> (PassKind, PassReport) {
        let changed = std::mem::take(&mut self.changed);
        if trigger == Trigger::Watch
            && !changed.lost
            && changed.subnets.len() <= MAX_REPLANNED
            && let Some(report) = self.peer_pass(&changed.subnets).await
        {
            return (PassKind::Peers, report);
        }
        self.baseline = None;
        let node = self.config.node_name.clone();
        let mine: Vec<Arc<NodeSubnet>> = self
            .subnets
            .state()
            .into_iter()
            .filter(|s| s.spec.node_name == node)
            .collect();
        let live = pass::own_subnet(&mine).cloned();
        let Some(own) = live else {
            // Not in any network (or only leaving one): remove everything of ours.
            self.stop_speaker().await;
            self.stop_electors(causeway_crds::conditions::reasons::HOST_DESELECTED)
                .await;
            let (report, clean) = self.teardown().await;
            if clean {
                for s in &mine {
                    if !report.ops.is_empty() {
                        self.event(
                            s,
                            Kind::Normal,
                            "CleanedUp",
                            "Teardown",
                            format!(
                                "removed everything Causeway had programmed on node {node} ({} operations) and its CNI config",
                                report.ops.len()
                            ),
                        );
                    }
                    self.release(s).await;
                }
            }
            return (PassKind::Teardown, report);
        };
        if !self.config.dry_run {
            self.hold(&own).await;
        }
        let (outcome, ops) = self.program(&own).await;
        (
            PassKind::Full,
            self.report(&own, trigger, outcome, ops).await,
        )
    }

    /// A pass over the NodeSubnets named `changed` alone ([`pass::run_peers`]), when the
    /// last full pass left a baseline and this node's own NodeSubnet is still the one it
    /// planned; `None` when a full pass must run.
    async fn peer_pass(&mut self, changed: &BTreeSet<String>) -> Option<PassReport> {
        let own_name = self.baseline.as_ref()?.own_name()?.to_owned();
        let own = self
            .subnets
            .get(&ObjectRef::new(&own_name))
            .filter(|s| s.metadata.deletion_timestamp.is_none())?;
        let changed: Vec<(String, Option<Arc<NodeSubnet>>)> = changed
            .iter()
            .map(|name| (name.clone(), self.subnets.get(&ObjectRef::new(name))))
            .collect();
        let (outcome, ops) = self.program_peers(&own, &changed).await?;
        Some(self.report(&own, Trigger::Watch, outcome, ops).await)
    }

    /// What a pass programmed, reported: withdrawal when the node cannot be programmed, a
    /// repair event, the status.
    async fn report(
        &mut self,
        own: &NodeSubnet,
        trigger: Trigger,
        outcome: Outcome,
        ops: Vec<Op>,
    ) -> PassReport {
        // A node that cannot be programmed (its plan is invalid, its address is on no
        // interface) must not attract traffic: no BGP sessions, no VIP.
        if !self.config.dry_run
            && matches!(
                outcome.failure,
                Some(crate::status::Failure::Plan(_) | crate::status::Failure::Underlay(_))
            )
        {
            self.withdraw().await;
        }
        let mut report = PassReport {
            ops,
            status: None,
            settled: false,
            failure: outcome.failure.as_ref().map(Failure::reason),
        };
        if self.config.dry_run {
            return report;
        }
        let failed_at = match &outcome.failure {
            Some(Failure::Apply { op, .. }) => report.ops.iter().position(|o| o == op),
            _ => None,
        };
        self.metrics.applied(&report.ops, failed_at);
        if outcome.underlay_prefix.is_some() || failed_at.is_none() {
            self.metrics.programmed(&outcome.programmed);
        }
        self.metrics
            .bgp_sessions(outcome.bgp.iter().map(|s| s.state.as_str()));
        let was_programmed = own.status.as_ref().is_some_and(|st| {
            causeway_crds::conditions::is_condition_true(&st.conditions, types::PROGRAMMED)
        });
        // A resync that had work to do after a good pass found something changed by hand
        // (marking a new pod's veth is routine, not a repair).
        let repairs: Vec<&Op> = report
            .ops
            .iter()
            .filter(|op| !matches!(op, Op::MarkPort { .. }))
            .collect();
        if trigger == Trigger::Resync
            && was_programmed
            && outcome.failure.is_none()
            && !repairs.is_empty()
        {
            let mut quoted: Vec<String> = repairs
                .iter()
                .take(QUOTED_OPS)
                .map(ToString::to_string)
                .collect();
            if repairs.len() > QUOTED_OPS {
                quoted.push(format!("and {} more", repairs.len() - QUOTED_OPS));
            }
            self.metrics.repaired();
            self.event(
                own,
                Kind::Warning,
                "Repaired",
                "Resync",
                format!(
                    "restored what was changed outside Causeway: {}",
                    quoted.join("; ")
                ),
            );
        }
        let previous = own.status.clone().unwrap_or_default();
        let mut next = crate::status::status(
            &previous,
            &outcome,
            Time(k8s_openapi::jiff::Timestamp::now()),
        );
        // The cache may not show this agent's last write yet: what it handed keeps its times.
        if let Some(handed) = self.status.handed(own) {
            next = crate::status::keep_handed_times(next, &previous, &handed);
        }
        if next == previous {
            report.settled = true;
            return report;
        }
        let due = self
            .status_written
            .is_none_or(|t| t.elapsed() >= self.config.status_refresh);
        if crate::status::counts_only(&previous, &next) && !due {
            // Counts move with every peer; they are written when the period ends
            // ([`Self::counts_wake`]). The conditions in the API are current.
            self.counts_deferred = true;
            report.settled = true;
            return report;
        }
        let uid = own.uid().unwrap_or_default();
        if let Some((ok, reason, message)) = crate::status::programmed_transition(&previous, &next)
            && self.announced.as_ref() != Some(&(uid.clone(), ok, reason.clone()))
        {
            let kind = if ok { Kind::Normal } else { Kind::Warning };
            self.event(own, kind, &reason, "Program", message);
            self.announced = Some((uid, ok, reason));
        }
        // Beside the loop: the writer tells `health` when it is in the API.
        self.status.write(own, next.clone());
        self.status_written = Some(Instant::now());
        self.counts_deferred = false;
        report.status = Some(next);
        report
    }

    /// One pass over the dataplane for `own` ([`pass::run`]: observe → plan → diff → apply),
    /// then what a valid plan calls for: the BGP speaker, the BridgeHosts electors, the CNI
    /// config.
    async fn program(&mut self, own: &NodeSubnet) -> (Outcome, Vec<Op>) {
        let snapshot = self.bgp_snapshot(own).await;
        let subnets = self.subnets.state();
        let read = self.read_inputs();
        let inputs = read.inputs(own, &subnets, &self.learned, &self.config);
        let pass::Pass {
            mut outcome,
            ops,
            decisions,
            baseline,
        } = pass::run(&mut self.dataplane, &inputs).await;
        let config = decisions.as_ref().and_then(|d| d.speaker.as_ref());
        report_sessions(&mut outcome, snapshot, config);
        if outcome.skipped != self.last_skipped {
            for line in &outcome.skipped {
                warn!("{line}");
            }
            self.last_skipped.clone_from(&outcome.skipped);
        }
        self.pods6 = decisions
            .as_ref()
            .is_some_and(|d| d.proxy_ndp)
            .then(|| read.pods6.clone());
        let Some(decisions) = decisions else {
            return (outcome, ops);
        };
        if self.config.dry_run {
            return (outcome, ops);
        }
        // The plan is valid: what depends on it starts (or changes) now; a node whose plan
        // fails never gets here (see `withdraw`).
        self.configure_speaker(decisions.speaker).await;
        self.run_electors(decisions.candidacies).await;
        if outcome.failure.is_some() {
            return (outcome, ops);
        }
        let conf = cni::NetConf {
            subnets: decisions.subnets.clone(),
            bridge: plan::BRIDGE_LINK.to_string(),
            mtu: decisions.mtu,
            data_dir: self.config.cni_data_dir.clone(),
        };
        match cni::write(&self.config.cni_conf_dir, &conf) {
            Ok(true) => info!(dir = %self.config.cni_conf_dir.display(), "wrote the CNI config"),
            Ok(false) => {}
            Err(e) => outcome.failure = Some(Failure::Cni(e.to_string())),
        }
        // Everything the plan decided is carried out: peers alone may change from here.
        if outcome.failure.is_none() {
            self.baseline = baseline;
        }
        // Once per subnet (at start-up, when the network comes back, when the subnet
        // changes): forget the allocations no pod can hold.
        let subnets = decisions.subnets;
        if self.pruned_for.as_ref() != Some(&subnets) {
            match self.prune_allocations(&subnets).await {
                Ok(()) => self.pruned_for = Some(subnets),
                Err(e) => warn!(error = %e, "cannot prune host-local's allocations"),
            }
        }
        (outcome, ops)
    }

    /// [`Self::program`] for the NodeSubnets in `changed` alone ([`pass::run_peers`]): the
    /// speaker, electors and CNI config stay as the last full pass left them, since nothing
    /// they depend on changed. `None` when a full pass must run.
    async fn program_peers(
        &mut self,
        own: &NodeSubnet,
        changed: &[(String, Option<Arc<NodeSubnet>>)],
    ) -> Option<(Outcome, Vec<Op>)> {
        let snapshot = self.bgp_snapshot(own).await;
        let read = self.read_inputs();
        let inputs = read.inputs(own, &[], &self.learned, &self.config);
        let pass =
            pass::run_peers(&mut self.dataplane, &inputs, &mut self.baseline, changed).await?;
        let mut outcome = pass.outcome;
        let config = self.speaker.as_ref().map(|(_, config)| config);
        report_sessions(&mut outcome, snapshot, config);
        Some((outcome, pass.ops))
    }

    /// The running speaker's sessions and learned routes, which feed a pass (with the routes
    /// carried over from before a restart, into [`Self::learned`]).
    async fn bgp_snapshot(&mut self, own: &NodeSubnet) -> crate::bgp::Snapshot {
        let snapshot = self
            .speaker
            .as_ref()
            .map(|(s, _)| s.snapshot())
            .unwrap_or_default();
        self.learned = self.learned_with_carried(own, &snapshot);
        self.report_bird_restarts(own).await;
        snapshot
    }

    /// What a pass reads from the caches and the node besides the NodeSubnets.
    fn read_inputs(&self) -> Read {
        let store = cni::store_dir(self.config.cni_data_dir.as_deref());
        let pods6 = match cni::allocations6(&store) {
            Ok(pods) => pods,
            Err(e) => {
                warn!(error = %e, "cannot read host-local's allocations; no proxy NDP entries change");
                self.pods6.clone().unwrap_or_default()
            }
        };
        let endpoints = self.api_endpoints.state();
        Read {
            networks: self.networks.state(),
            gateways: self.gateways.state(),
            labels: self.own_labels(),
            pods6,
            api_servers: causeway_kube::apiserver::addresses(self.config.api_server, &endpoints),
            api_servers6: causeway_kube::apiserver::addresses6(self.config.api_server, &endpoints),
            secrets: secret_data(&self.secrets),
        }
    }

    /// Under host-local's lock, removes the allocations outside `subnets`, or all of them when
    /// no pod's veth is on (or marked for) the bridge: nobody holds those addresses (see
    /// [`cni`]).
    async fn prune_allocations(&mut self, subnets: &[ipnet::IpNet]) -> Result<(), String> {
        let store = cni::store_dir(self.config.cni_data_dir.as_deref());
        let Some(_lock) = cni::lock_store(&store).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let ports = self
            .dataplane
            .observe()
            .await
            .map_err(|e| e.to_string())?
            .ports
            .len();
        let mut keep = Vec::new();
        if ports > 0 {
            keep.extend_from_slice(subnets);
        }
        let gone = cni::prune(&store, &keep).map_err(|e| e.to_string())?;
        if !gone.is_empty() {
            info!(store = %store.display(), pods = ports, addresses = ?gone, "forgot host-local allocations no pod holds");
        }
        Ok(())
    }

    /// Whether host-local's IPv6 allocations differ from those the last pass planned with.
    fn pods6_changed(&self) -> bool {
        let store = cni::store_dir(self.config.cni_data_dir.as_deref());
        match (&self.pods6, cni::allocations6(&store)) {
            (Some(planned), Ok(now)) => *planned != now,
            _ => false,
        }
    }

    /// Starts, reconfigures or stops the BGP speaker to match `config`.
    async fn configure_speaker(&mut self, config: Option<SpeakerConfig>) {
        let Some(config) = config else {
            self.stop_speaker().await;
            return;
        };
        match &mut self.speaker {
            Some((speaker, current)) => {
                if *current != config {
                    info!(peers = config.peers.len(), "reconfiguring the BGP speaker");
                    speaker.update(config.clone());
                    *current = config;
                }
            }
            None => {
                info!(
                    asn = config.local_asn,
                    peers = config.peers.len(),
                    "starting the BGP speaker"
                );
                let speaker = Speaker::start(config.clone(), self.config.bird.clone());
                self.bird_restarts = 0;
                self.new_bgp_changes = Some(speaker.changes());
                self.speaker = Some((speaker, config));
            }
        }
    }

    /// This node's labels (they select BGP peers and bridge hosts).
    fn own_labels(&self) -> BTreeMap<String, String> {
        self.nodes
            .state()
            .into_iter()
            .find(|n| n.name_any() == self.config.node_name)
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// Starts an elector for every gateway this node became a candidate for, and stops (or
    /// restarts, when its settings changed) the others.
    async fn run_electors(&mut self, mut wanted: BTreeMap<String, elector::Candidacy>) {
        let current: Vec<String> = self.electors.keys().cloned().collect();
        for name in current {
            if wanted.get(&name) == self.electors.get(&name).map(|e| &e.candidacy) {
                wanted.remove(&name);
                continue;
            }
            if let Some(elector) = self.electors.remove(&name) {
                elector
                    .stop(causeway_crds::conditions::reasons::HOST_DESELECTED)
                    .await;
            }
        }
        for (name, candidacy) in wanted {
            let elector = Elector::start(
                self.client.clone(),
                &self.config.namespace,
                &self.config.node_name,
                candidacy,
                Arc::clone(&self.metrics),
            );
            self.electors.insert(name, elector);
        }
    }

    /// This node cannot be programmed: its electors let go of any VIP (`NodeNotProgrammed`)
    /// and its BGP sessions close, until a pass plans it again.
    async fn withdraw(&mut self) {
        if !self.electors.is_empty() {
            info!("this node cannot be programmed: leaving the BridgeHosts elections");
            self.stop_electors(causeway_crds::conditions::reasons::NODE_NOT_PROGRAMMED)
                .await;
        }
        self.stop_speaker().await;
    }

    /// Stops every elector; holders drop their VIP and release, saying `reason`.
    async fn stop_electors(&mut self, reason: &'static str) {
        for (_, elector) in std::mem::take(&mut self.electors) {
            elector.stop(reason).await;
        }
    }

    /// Closes every BGP session (Cease: routers withdraw the node's routes) and forgets
    /// learned routes.
    async fn stop_speaker(&mut self) {
        if let Some((speaker, _)) = self.speaker.take() {
            info!("stopping the BGP speaker");
            speaker.shutdown().await;
        }
        self.learned.clear();
        self.carried = None;
    }

    /// The agent is stopping, not the node: BIRD exits without withdrawing (graceful
    /// restart), so GR-aware routers keep the node's routes until the next agent's BIRD sends
    /// them again; the kernel keeps the learned routes, which the next agent carries.
    async fn stop_speaker_for_restart(&mut self) {
        if let Some((speaker, _)) = self.speaker.take() {
            info!(
                "stopping the BGP speaker for a restart (graceful restart: routes stay announced)"
            );
            speaker.stop_for_restart().await;
        }
    }

    /// At start-up: the routes with a next hop that the agent's kernel state already holds
    /// (an earlier agent installed them, some learned over BGP). A new BIRD knows none of
    /// them; they are kept while its sessions come up ([`crate::bgp::carry`]).
    async fn carry_learned(&mut self) {
        match self.dataplane.observe().await {
            Ok(state) => {
                let mut routes = Learned::new();
                for route in state.routes.values().filter(|r| !r.onlink) {
                    match (route.dst, route.gateway) {
                        (ipnet::IpNet::V4(dst), Some(std::net::IpAddr::V4(gw))) => {
                            routes.v4.insert(dst, gw);
                        }
                        (ipnet::IpNet::V6(dst), Some(std::net::IpAddr::V6(gw))) => {
                            routes.v6.insert(dst, gw);
                        }
                        _ => {}
                    }
                }
                self.carried = Carried::new(routes, Instant::now());
            }
            Err(e) => warn!(error = %e, "cannot read the routes an earlier agent installed"),
        }
    }

    /// The routes this pass installs from BGP: the speaker's, plus the carried ones while
    /// they last ([`Carried::merge`]), for a network that uses BGP only.
    fn learned_with_carried(
        &mut self,
        own: &NodeSubnet,
        snapshot: &crate::bgp::Snapshot,
    ) -> Learned {
        let mut learned = snapshot.learned.clone();
        let uses_bgp = self
            .networks
            .state()
            .iter()
            .find(|n| n.name_any() == own.spec.network)
            .is_some_and(|n| {
                n.spec.mode == causeway_crds::v1alpha1::PodNetworkMode::Routed
                    && n.spec.routed.as_ref().is_some_and(|r| r.bgp.is_some())
            });
        let Some(carried) = self.carried.as_mut().filter(|_| uses_bgp) else {
            self.carried = None;
            return learned;
        };
        if carried.merge(&snapshot.sessions, &mut learned, Instant::now()) == Merge::Done {
            info!(
                routes = carried.len(),
                "BGP is up: the routes carried over from before the restart now follow BIRD"
            );
            self.carried = None;
        }
        learned
    }

    /// When carried routes should be looked at again (a pass lets them go).
    fn carried_wake(&self) -> Option<Instant> {
        self.carried.as_ref().map(Carried::wake)
    }

    /// When a pass should write the counts a pass left unwritten: the end of the period since
    /// the last write. `None` when nothing waits.
    fn counts_wake(&self) -> Option<Instant> {
        counts_wake(
            self.counts_deferred,
            self.status_written,
            self.config.status_refresh,
        )
    }

    /// An event when BIRD had to be started again since the last pass.
    async fn report_bird_restarts(&mut self, own: &NodeSubnet) {
        let Some(restarts) = self.speaker.as_ref().map(|(s, _)| s.restarts()) else {
            return;
        };
        if restarts > self.bird_restarts {
            self.bird_restarts = restarts;
            self.event(
                own,
                Kind::Warning,
                "BgpSpeakerRestarted",
                "Restart",
                format!(
                    "BIRD, the node's BGP speaker, exited and was started again ({restarts} times since the agent started); its log is in the agent's"
                ),
            );
        }
    }

    /// Removes everything the agent owns on this node and its CNI config. Returns the
    /// operations and whether the node is now clean (never in a dry run).
    async fn teardown(&mut self) -> (PassReport, bool) {
        let cleared = match pass::clear(&mut self.dataplane, !self.config.dry_run).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read the dataplane to clean it up");
                return (PassReport::default(), false);
            }
        };
        let pass::Cleared {
            ops,
            observed,
            failed,
            failed_at,
        } = cleared;
        if self.config.dry_run {
            return (
                PassReport {
                    ops,
                    status: None,
                    settled: false,
                    failure: None,
                },
                false,
            );
        }
        self.metrics.applied(&ops, failed_at);
        if failed_at.is_none() {
            self.metrics.programmed(&crate::model::State::default());
        }
        let mut clean = true;
        if let Some(e) = failed {
            warn!(error = %e, "clean-up operation failed; retrying next pass");
            clean = false;
        }
        match cni::remove(&self.config.cni_conf_dir) {
            Ok(true) => info!("removed the CNI config"),
            Ok(false) => {}
            Err(e) => {
                warn!(error = %e, "cannot remove the CNI config");
                clean = false;
            }
        }
        // Pods deleted from now on cannot release their addresses (the config is gone), so
        // host-local's store is forgotten with the network, unless pods still hold addresses
        // from it (a Node deleted and registered again gets them back, see `Port`).
        let store = cni::store_dir(self.config.cni_data_dir.as_deref());
        let lock = cni::lock_store(&store);
        match (lock, observed.ports.len()) {
            (Ok(None), _) => {}
            (Ok(Some(_lock)), 0) => match cni::forget(&store) {
                Ok(_) => info!(store = %store.display(), "forgot host-local's allocations"),
                Err(e) => warn!(error = %e, "cannot remove host-local's allocations"),
            },
            (Ok(Some(_)), pods) => {
                info!(pods, store = %store.display(), "pods are still attached: keeping host-local's allocations until the network is back");
            }
            (Err(e), _) => warn!(error = %e, "cannot lock host-local's allocations"),
        }
        self.pruned_for = None;
        self.pods6 = None;
        // Settled either way: the node was read and the clean-up tried (a failure is
        // retried by the next pass).
        (
            PassReport {
                ops,
                status: None,
                settled: true,
                failure: (!clean).then_some("CleanupFailed"),
            },
            clean,
        )
    }

    /// Adds [`FINALIZER`] to `own` if missing.
    async fn hold(&self, own: &NodeSubnet) {
        if own.finalizers().iter().any(|f| f == FINALIZER) {
            return;
        }
        let mut finalizers: BTreeSet<String> = own.finalizers().iter().cloned().collect();
        finalizers.insert(FINALIZER.to_string());
        self.patch_finalizers(own, finalizers).await;
    }

    /// Removes [`FINALIZER`] from `own` (the node is clean).
    async fn release(&self, own: &NodeSubnet) {
        if !own.finalizers().iter().any(|f| f == FINALIZER) {
            return;
        }
        let finalizers: BTreeSet<String> = own
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        info!(nodesubnet = %own.name_any(), "node cleaned up; releasing the NodeSubnet");
        self.patch_finalizers(own, finalizers).await;
    }

    async fn patch_finalizers(&self, own: &NodeSubnet, finalizers: BTreeSet<String>) {
        let api: Api<NodeSubnet> = Api::all(self.writer.clone());
        // The resourceVersion makes this a compare-and-swap: a concurrent change to the list
        // (the operator's) fails it, and the next pass retries on fresh data.
        let patch = serde_json::json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": own.resource_version(),
        }});
        if let Err(e) = api
            .patch(
                &own.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            warn!(nodesubnet = %own.name_any(), error = %e, "cannot update finalizers; retrying next pass");
        }
    }
}

/// What a pass reads from the caches and the node besides the NodeSubnets
/// ([`Agent::read_inputs`]).
struct Read {
    networks: Vec<Arc<PodNetwork>>,
    gateways: Vec<Arc<OverlayGateway>>,
    labels: BTreeMap<String, String>,
    pods6: BTreeSet<std::net::Ipv6Addr>,
    api_servers: Vec<std::net::Ipv4Addr>,
    api_servers6: Vec<std::net::Ipv6Addr>,
    secrets: crate::bgp::peering::Secrets,
}

impl Read {
    /// A pass's inputs: these, `own`, `subnets` (every NodeSubnet; none for
    /// [`pass::run_peers`]) and the routes learned over BGP.
    fn inputs<'a>(
        &'a self,
        own: &'a NodeSubnet,
        subnets: &'a [Arc<NodeSubnet>],
        learned: &'a Learned,
        config: &'a Config,
    ) -> pass::Inputs<'a> {
        pass::Inputs {
            own,
            networks: &self.networks,
            subnets,
            gateways: &self.gateways,
            labels: &self.labels,
            learned,
            api_servers: &self.api_servers,
            api_servers6: &self.api_servers6,
            pods6: &self.pods6,
            secrets: &self.secrets,
            namespace: &config.namespace,
            apply: !config.dry_run,
        }
    }
}

/// The BGP sessions in `outcome`: the speaker's (`snapshot`), and the peers of `config` that
/// cannot be configured (their password), with a reason of their own for Ready.
fn report_sessions(
    outcome: &mut Outcome,
    snapshot: crate::bgp::Snapshot,
    config: Option<&SpeakerConfig>,
) {
    outcome.bgp = snapshot
        .sessions
        .into_iter()
        .map(|s| BgpSessionStatus {
            peer_address: s.peer.to_string(),
            peer_asn: i64::from(s.asn),
            state: s.state,
            message: s.message,
            since: k8s_openapi::jiff::Timestamp::try_from(s.since)
                .ok()
                .map(Time),
            routes_received: i64::try_from(s.routes_received).ok(),
            routes_advertised: i64::try_from(s.routes_advertised).ok(),
            ipv6_routes_received: s.routes6.and_then(|r| i64::try_from(r.0).ok()),
            ipv6_routes_advertised: s.routes6.and_then(|r| i64::try_from(r.1).ok()),
        })
        .collect();
    let Some(config) = config else {
        return;
    };
    for peer in &config.unusable {
        let address = peer.address.to_string();
        outcome.bgp.retain(|s| s.peer_address != address);
        outcome.bgp.push(BgpSessionStatus {
            peer_address: address,
            peer_asn: i64::from(peer.asn),
            state: "Idle".into(),
            message: peer.why.clone(),
            since: None,
            routes_received: None,
            routes_advertised: None,
            ipv6_routes_received: None,
            ipv6_routes_advertised: None,
        });
        outcome
            .bgp_misconfigured
            .push(format!("{} (AS {}): {}", peer.address, peer.asn, peer.why));
    }
    outcome
        .bgp
        .sort_by_key(|s| s.peer_address.parse::<std::net::IpAddr>().ok());
}

/// Sleeps until `at`; forever when `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The Secrets' data by name (BGP passwords).
fn secret_data(store: &Store<Secret>) -> crate::bgp::peering::Secrets {
    store
        .state()
        .iter()
        .map(|secret| {
            let data = secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            (secret.name_any(), data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_counts_are_due_a_period_after_the_last_write_and_nothing_else_wakes() {
        let refresh = Duration::from_secs(30);
        let written = Instant::now();
        assert_eq!(counts_wake(false, Some(written), refresh), None);
        assert_eq!(
            counts_wake(true, Some(written), refresh),
            Some(written + refresh)
        );
        // Never written: due at once.
        let due = counts_wake(true, None, refresh).expect("due");
        assert!(due <= Instant::now());
    }
}
