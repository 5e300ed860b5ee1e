//! One pass over a node's dataplane, in four steps: **observe** (everything the plan needs
//! from the kernel, in one place: the agent's own objects, the underlay, the routes that are
//! not the agent's), **plan** ([`crate::plan`], pure), **diff** ([`crate::diff`], pure) and
//! **apply**. Generic over [`Dataplane`], so whole passes run against the kernel-faithful
//! [`crate::fake`] in unit tests, and against netlink on a node.
//!
//! What a pass decides beyond the kernel (the BGP speaker's configuration, the BridgeHosts
//! gateways this node is a candidate for, the CNI config) comes back as [`Decisions`], only
//! when the plan is valid: [`crate::agent`] carries them out after the pass, so a node whose
//! plan fails never opens BGP sessions or holds a VIP.
//!
//! A full pass that planned cleanly leaves a [`Baseline`]; while only NodeSubnets change,
//! [`run_peers`] replans the changed peers alone against it ([`plan::replan`]) and applies
//! their operations without reading the kernel: O(1) work per peer change on every node. It
//! gives way to [`run`] whenever the result could differ.
//!
//! The inputs are plain data the agent read from its caches ([`Inputs`]); nothing here talks
//! to the API server.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use causeway_crds::{NodeSubnet, OverlayGateway, PodNetwork};
use ipnet::IpNet;
use kube::ResourceExt;
use tracing::{info, warn};

use crate::bgp::SpeakerConfig;
use crate::elector::{self, Candidacy};
use crate::model::{Dataplane, ForeignRoutes, Op, State, Underlay};
use crate::status::{Failure, Outcome};
use crate::{diff, peering, plan};

/// What one pass reads besides the kernel.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// This node's NodeSubnet.
    pub own: &'a NodeSubnet,
    /// Every PodNetwork (the pass picks its own).
    pub networks: &'a [Arc<PodNetwork>],
    /// Every NodeSubnet (the pass picks its network's).
    pub subnets: &'a [Arc<NodeSubnet>],
    /// Every OverlayGateway.
    pub gateways: &'a [Arc<OverlayGateway>],
    /// This node's labels (BGP peers and bridge hosts are selected by them).
    pub labels: &'a BTreeMap<String, String>,
    /// Routes learned over BGP so far, best path per prefix, both families.
    pub learned: &'a crate::bgp::Learned,
    /// The API servers' addresses (the configured one and the `default/kubernetes`
    /// endpoints): never routed away, never taken by a client.
    pub api_servers: &'a [Ipv4Addr],
    /// The same, IPv6 (an IPv6 underlay): never routed away.
    pub api_servers6: &'a [Ipv6Addr],
    /// This node's pods' IPv6 addresses (host-local's allocations, [`crate::cni::allocations6`]):
    /// a dual-stack Flat network answers NDP on the underlay for each.
    pub pods6: &'a BTreeSet<Ipv6Addr>,
    /// The Secrets of the agent's namespace (BGP passwords), and that namespace.
    pub secrets: &'a crate::bgp::peering::Secrets,
    pub namespace: &'a str,
    /// Apply the operations (false: a dry run, which only computes them).
    pub apply: bool,
}

/// What the kernel says, read once per pass before planning.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Everything the agent owns.
    pub state: State,
    /// The link holding the node's address.
    pub underlay: Underlay,
    /// The main table's routes that are not the agent's.
    pub foreign: ForeignRoutes,
}

/// What depends on a valid plan, for the agent to carry out after the pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Decisions {
    /// The BGP speaker's configuration; `None`: no BGP on this network.
    pub speaker: Option<SpeakerConfig>,
    /// The BridgeHosts gateways this node is a candidate for, by name.
    pub candidacies: BTreeMap<String, Candidacy>,
    /// This node's pod subnets, the network's primary family first (the CNI config's
    /// ranges, in that order).
    pub subnets: Vec<IpNet>,
    /// The pod MTU.
    pub mtu: u32,
    /// The plan answers NDP for local pods (dual-stack Flat): the agent keeps the proxy
    /// entries in step with host-local's allocations between passes.
    pub proxy_ndp: bool,
}

/// One pass's result.
#[derive(Debug)]
pub struct Pass {
    /// For the NodeSubnet's status (the agent adds the BGP sessions).
    pub outcome: Outcome,
    /// The operations applied, or in a dry run those that would be.
    pub ops: Vec<Op>,
    /// `Some` when the plan was valid (even if applying it then failed); `None` too from
    /// [`run_peers`], which decides nothing new.
    pub decisions: Option<Decisions>,
    /// What the next passes may change peer by peer from ([`run_peers`]); `None` when
    /// they must plan in full.
    pub baseline: Option<Baseline>,
}

/// Reads what the plan needs from the kernel: the node's underlay (the link holding
/// `address`, with the on-link prefix of `secondary`, the node's address of the other family,
/// when that link holds it), the routes that are not the agent's, and the agent's own objects.
///
/// # Errors
/// [`Failure::Underlay`] when no link holds `address`; [`Failure::Observe`] when the kernel
/// cannot be read.
pub async fn observe<D: Dataplane>(
    dp: &mut D,
    address: IpAddr,
    secondary: Option<IpAddr>,
) -> Result<Observed, Failure> {
    let underlay = dp
        .underlay_for(address, secondary)
        .await
        .map_err(Failure::Underlay)?;
    let foreign = dp.foreign_routes().await.map_err(Failure::Observe)?;
    let state = dp
        .observe()
        .await
        .map_err(|e| Failure::Observe(e.to_string()))?;
    Ok(Observed {
        state,
        underlay,
        foreign,
    })
}

/// This node's NodeSubnet among `mine` (every NodeSubnet naming this node): a live one that
/// the operator made — owned (as controller) by the PodNetwork it names — before one written
/// by hand, then the oldest, then by name. A NodeSubnet someone writes for this node can
/// therefore never take over the node's own programming; the operator releases it.
#[must_use]
pub fn own_subnet(mine: &[Arc<NodeSubnet>]) -> Option<&Arc<NodeSubnet>> {
    let made_by_operator = |s: &NodeSubnet| {
        s.metadata.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true)
                && o.kind == "PodNetwork"
                && o.api_version.starts_with("causeway.dev/")
                && o.name == s.spec.network
        })
    };
    mine.iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .min_by_key(|s| {
            (
                !made_by_operator(s),
                s.metadata.creation_timestamp.as_ref().map(|t| t.0),
                s.metadata.name.clone(),
            )
        })
}

/// Keeps of a NodeSubnet of another node (a peer) only what a pass reads of peers — its name,
/// creation and deletion times and its spec — and leaves this node's own NodeSubnets whole
/// (their status, finalizers and owner are read). The agent caches every NodeSubnet of the
/// cluster; a peer's labels, owner reference, uid and status (which its own agent rewrites)
/// would otherwise be most of the cache at 20,000 nodes.
pub fn slim_peer(subnet: &mut NodeSubnet, node: &str) {
    if subnet.spec.node_name == node {
        return;
    }
    let meta = std::mem::take(&mut subnet.metadata);
    subnet.metadata = kube::api::ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        creation_timestamp: meta.creation_timestamp,
        deletion_timestamp: meta.deletion_timestamp,
        ..kube::api::ObjectMeta::default()
    };
    subnet.status = None;
}

/// One pass: observe → plan → diff → apply (see the module docs). Failures end up in the
/// outcome, never in a panic.
pub async fn run<D: Dataplane>(dp: &mut D, input: &Inputs<'_>) -> Pass {
    let own = input.own;
    let mut pass = Pass {
        outcome: Outcome {
            generation: own.metadata.generation,
            programmed: Arc::default(),
            mtu: None,
            skipped: vec![],
            failure: None,
            underlay_prefix: None,
            secondary_underlay_prefix: None,
            bgp: vec![],
            bgp_misconfigured: vec![],
            bgp_local: None,
        },
        ops: vec![],
        decisions: None,
        baseline: None,
    };
    let fail = |mut pass: Pass, failure: Failure| {
        pass.outcome.failure = Some(failure);
        pass
    };
    let Some(network) = input
        .networks
        .iter()
        .find(|n| n.name_any() == own.spec.network)
    else {
        let message = format!(
            "PodNetwork {} does not exist (yet); nothing is programmed until it does",
            own.spec.network
        );
        return fail(pass, Failure::Plan(message));
    };
    let address = match causeway_crds::cidr::parse_addr(&own.spec.node_address) {
        Ok(a) => a,
        Err(e) => return fail(pass, Failure::Plan(format!("spec.nodeAddress: {e}"))),
    };
    let speaker = match peering::speaker_config(
        &network.spec,
        own,
        input.labels,
        input.secrets,
        input.namespace,
    ) {
        Ok(config) => config,
        Err(e) => return fail(pass, Failure::Plan(e)),
    };
    pass.outcome.bgp_local = speaker.as_ref().map(SpeakerConfig::local_side);

    // 1. Observe.
    // The node's address of the other family matters on a dual-stack network (Flat and
    // Routed reach that family's peers over the underlay); a missing or bad one is the
    // plan's to report.
    let secondary = match own
        .spec
        .secondary_node_address
        .as_deref()
        .map(str::parse::<IpAddr>)
    {
        Some(Ok(a))
            if network.spec.secondary_cidr.is_some() && a.is_ipv6() != address.is_ipv6() =>
        {
            Some(a)
        }
        _ => None,
    };
    let observed = match observe(dp, address, secondary).await {
        Ok(o) => o,
        Err(failure) => return fail(pass, failure),
    };
    pass.outcome.underlay_prefix = Some(observed.underlay.prefix);
    pass.outcome.secondary_underlay_prefix = observed.underlay.secondary_prefix;

    // 2. Plan, from the inputs and what was observed. Who owns which address: gateways
    // never take one (the plan refuses a network whose cidr does not parse).
    // The network's ranges, `cidr` first: BridgeHosts VIPs follow their families.
    let ranges: Vec<IpNet> = network
        .spec
        .ranges()
        .map(|r| r.iter().map(|r| r.cidr).collect())
        .unwrap_or_default();
    let known = crate::join::Known {
        subnets: input.subnets,
        api_servers: input.api_servers,
        api_servers6: input.api_servers6,
        routers: &observed.foreign.next_hops,
        routers6: &observed.foreign.next_hops6,
        ranges: &ranges,
    };
    let segments: Vec<IpNet> = [
        Some(observed.underlay.prefix),
        observed.underlay.secondary_prefix,
    ]
    .into_iter()
    .flatten()
    .collect();
    let candidacies = if ranges.is_empty() {
        BTreeMap::new()
    } else {
        elector::candidacies(
            input.gateways,
            own,
            input.labels,
            &observed.underlay.name,
            &segments,
            &known,
        )
    };
    let snat = elector::snat_clients(input.gateways, &candidacies);
    let (returns, return_notes) = return_paths(input.gateways, own, &observed.foreign);
    let mut protected: BTreeSet<Ipv4Addr> = input.api_servers.iter().copied().collect();
    let mut protected6: BTreeSet<Ipv6Addr> = input.api_servers6.iter().copied().collect();
    protected6.extend(observed.foreign.next_hops6.iter().copied());
    // The node's own paths (its default gateway, say) stay on the underlay.
    protected.extend(observed.foreign.next_hops.iter().copied());
    let peers: Vec<Arc<NodeSubnet>> = input
        .subnets
        .iter()
        .filter(|s| s.spec.network == own.spec.network)
        .cloned()
        .collect();
    let (clients, client_notes) =
        crate::join::client_peers(input.gateways, &own.spec.network, &known);
    let planned = match plan::plan(&plan::Input {
        own,
        peers: &peers,
        network: &network.spec,
        underlay: &observed.underlay,
        learned: input.learned,
        returns: &returns,
        snat: &snat,
        clients: &clients,
        protected: &protected,
        protected6: &protected6,
        pods6: input.pods6,
    }) {
        Ok(p) => p,
        // The node lacks an IPv6 address on its underlay: the node's set-up, not the spec.
        Err(
            e @ (plan::PlanError::NoSecondaryNodeAddress { .. }
            | plan::PlanError::NoNodeAddressOfFamily { .. }
            | plan::PlanError::SecondaryNotOnUnderlay { .. }),
        ) => {
            return fail(pass, Failure::Underlay(e.to_string()));
        }
        Err(e) => return fail(pass, Failure::Plan(e.to_string())),
    };
    pass.outcome.mtu = Some(planned.mtu);
    pass.outcome.skipped = planned.skipped.clone();
    // Peer settings ignored on this node (its AS, from a label, turned the session into the
    // other kind) are named with what was skipped: the session works, but not as written.
    if let Some(config) = &speaker {
        pass.outcome.skipped.extend(config.ignored.iter().cloned());
    }
    pass.outcome.skipped.extend(return_notes);
    pass.outcome.skipped.extend(client_notes);
    pass.decisions = Some(Decisions {
        speaker,
        candidacies,
        subnets: planned.subnets.clone(),
        mtu: planned.mtu,
        proxy_ndp: !planned.desired.proxy_ndp.is_empty(),
    });

    // 3. Diff.
    pass.ops = diff::diff(&planned.desired, &observed.state);
    if !input.apply {
        pass.outcome.programmed = Arc::new(observed.state);
        return pass;
    }

    // 4. Apply.
    log_ops(&pass.ops, "applying");
    if let Err((i, e)) = dp.apply_all(&pass.ops).await {
        let op = pass.ops[i].clone();
        warn!(%op, error = %e.message, "operation failed");
        pass.outcome.programmed = Arc::new(dp.observe().await.unwrap_or(observed.state));
        return fail(
            pass,
            Failure::Apply {
                op,
                message: e.message,
            },
        );
    }
    // What the kernel held before is done with: at thousands of peers it is as large as the
    // plan, and the index and baseline below are built next to the plan, not next to both.
    drop(observed.state);
    let ipv6 = planned.has_ipv6();
    let index = plan::replan::Index::new(planned.taken, &peers);
    let programmed = Arc::new(planned.desired);
    pass.outcome.programmed = Arc::clone(&programmed);
    if let Err(e) = dp.enable_forwarding(ipv6).await {
        return fail(pass, Failure::Plan(e));
    }
    // Peers alone may change from here ([`run_peers`]) when the plan noted nothing and no
    // gateway's entries depend on the peers' routes.
    if pass.outcome.skipped.is_empty() && !has_gateways(input.gateways, &own.spec.network) {
        pass.baseline = Some(Baseline {
            inputs: Fingerprint::of(input, network),
            peers: peers
                .iter()
                .map(|p| (p.name_any().into(), Arc::clone(p)))
                .collect(),
            index,
            programmed,
            underlay: observed.underlay,
            protected,
            protected6,
            // Without the plan: each pass over changed peers gives its outcome the plan as
            // it then is, and a second reference here would make the first such pass copy
            // the whole plan before editing it (and keep the old one alive beside it).
            outcome: Outcome {
                programmed: Arc::default(),
                ..pass.outcome.clone()
            },
        });
    }
    pass
}

/// Whether an OverlayGateway serves `network` (its return routes, SNAT and ClientJoin
/// clients depend on the peers' routes: changes there are planned in full).
fn has_gateways(gateways: &[Arc<OverlayGateway>], network: &str) -> bool {
    gateways.iter().any(|g| g.spec.network == network)
}

/// What a full pass leaves for the next passes to change peer by peer ([`run_peers`]): the
/// plan as applied, the index [`plan::replan`] admits changed peers against, and what the
/// plan was made from besides the peers.
#[derive(Debug)]
pub struct Baseline {
    inputs: Fingerprint,
    /// Every NodeSubnet of the network the plan was made from (its own, those being
    /// deleted), by name.
    /// (Names up to 24 bytes are held inline: no allocation per peer for most.)
    peers: BTreeMap<compact_str::CompactString, Arc<NodeSubnet>>,
    index: plan::replan::Index,
    /// The agent's kernel objects as the plan made them and the pass applied them; shared
    /// with the outcome of the pass that made it (and of each pass over changed peers) until
    /// that outcome is reported and dropped, so that the next change edits it in place.
    programmed: Arc<State>,
    /// What the full pass read from the kernel: the underlay, and the addresses the node must
    /// keep reaching over it.
    underlay: Underlay,
    protected: BTreeSet<Ipv4Addr>,
    protected6: BTreeSet<Ipv6Addr>,
    /// That pass's outcome, without its `programmed` (which is [`Self::programmed`]).
    outcome: Outcome,
}

impl Baseline {
    /// The name of this node's NodeSubnet the plan was made for.
    #[must_use]
    pub fn own_name(&self) -> Option<&str> {
        self.inputs.own_name.as_deref()
    }
}

/// The inputs of a plan besides the peers and the kernel: a [`Baseline`] is good while they
/// stay the same.
#[derive(Debug)]
struct Fingerprint {
    own_uid: Option<String>,
    own_name: Option<String>,
    own: causeway_crds::NodeSubnetSpec,
    network_uid: Option<String>,
    network: causeway_crds::PodNetworkSpec,
    labels: BTreeMap<String, String>,
    learned: crate::bgp::Learned,
    api_servers: Vec<Ipv4Addr>,
    api_servers6: Vec<Ipv6Addr>,
    pods6: BTreeSet<Ipv6Addr>,
    secrets: crate::bgp::peering::Secrets,
    namespace: String,
}

impl Fingerprint {
    fn of(input: &Inputs<'_>, network: &PodNetwork) -> Self {
        Self {
            own_uid: input.own.metadata.uid.clone(),
            own_name: input.own.metadata.name.clone(),
            own: input.own.spec.clone(),
            network_uid: network.metadata.uid.clone(),
            network: network.spec.clone(),
            labels: input.labels.clone(),
            learned: input.learned.clone(),
            api_servers: input.api_servers.to_vec(),
            api_servers6: input.api_servers6.to_vec(),
            pods6: input.pods6.clone(),
            secrets: input.secrets.clone(),
            namespace: input.namespace.to_owned(),
        }
    }

    /// Whether `input` (with `network`, its PodNetwork) is what this was made from. Compared
    /// in place: O(size of the inputs besides the peers).
    fn matches(&self, input: &Inputs<'_>, network: &PodNetwork) -> bool {
        self.own_uid == input.own.metadata.uid
            && self.own_name == input.own.metadata.name
            && self.own == input.own.spec
            && input.own.metadata.deletion_timestamp.is_none()
            && self.network_uid == network.metadata.uid
            && self.network == network.spec
            && self.labels == *input.labels
            && self.learned == *input.learned
            && self.api_servers == input.api_servers
            && self.api_servers6 == input.api_servers6
            && self.pods6 == *input.pods6
            && self.secrets == *input.secrets
            && self.namespace == input.namespace
    }
}

/// A pass for NodeSubnets that changed (`changed`: by name, as they are now; `None`: gone),
/// when nothing else did since the pass that left `baseline`: their entries replanned alone
/// ([`plan::replan`]) and applied, without planning every peer or reading the kernel, so a
/// node joining costs every other node O(1) work. `None` (and no baseline left) when that is
/// not so, or when applying fails: the caller runs a full pass, which also repairs. A full
/// pass still runs on every resync, so whatever changed behind the agent's back is repaired
/// there as before.
pub async fn run_peers<D: Dataplane>(
    dp: &mut D,
    input: &Inputs<'_>,
    baseline: &mut Option<Baseline>,
    changed: &[(String, Option<Arc<NodeSubnet>>)],
) -> Option<Pass> {
    let mut base = baseline.take()?;
    let own = input.own;
    let network = input
        .networks
        .iter()
        .find(|n| n.name_any() == own.spec.network)?;
    if !input.apply
        || !base.inputs.matches(input, network)
        || has_gateways(input.gateways, &own.spec.network)
    {
        return None;
    }
    let now: Vec<(&String, Option<&Arc<NodeSubnet>>)> = changed
        .iter()
        .map(|(name, s)| {
            let of_network = s.as_ref().filter(|s| s.spec.network == own.spec.network);
            (name, of_network)
        })
        .collect();
    let changes: Vec<plan::replan::Change<'_>> = now
        .iter()
        .map(|(name, new)| plan::replan::Change {
            old: base.peers.get(name.as_str()).map(AsRef::as_ref),
            new: new.map(AsRef::as_ref),
        })
        .collect();
    let plan_input = plan::Input {
        own,
        peers: &[],
        network: &network.spec,
        underlay: &base.underlay,
        learned: input.learned,
        returns: &[],
        snat: &[],
        clients: &[],
        protected: &base.protected,
        protected6: &base.protected6,
        pods6: input.pods6,
    };
    let programmed = Arc::make_mut(&mut base.programmed);
    let replanned = plan::replan(&plan_input, &mut base.index, programmed, &changes)?;
    let ops = replanned.ops();
    log_ops(&ops, "applying");
    if let Err((i, e)) = dp.apply_all(&ops).await {
        warn!(op = %ops[i], error = %e.message, "operation failed; planning the node in full");
        return None;
    }
    for (name, new) in now {
        match new {
            Some(s) => base.peers.insert(name.as_str().into(), Arc::clone(s)),
            None => base.peers.remove(name.as_str()),
        };
    }
    let mut outcome = base.outcome.clone();
    outcome.generation = own.metadata.generation;
    outcome.programmed = Arc::clone(&base.programmed);
    *baseline = Some(base);
    Some(Pass {
        outcome,
        ops,
        decisions: None,
        baseline: None,
    })
}

/// Return paths for BridgeHosts clients, except where this node already has a route of its
/// own for a client range (it reaches those clients that way; never replaced), with a note
/// for each range skipped so.
fn return_paths(
    gateways: &[Arc<OverlayGateway>],
    own: &NodeSubnet,
    foreign: &ForeignRoutes,
) -> (Vec<plan::GatewayReturn>, Vec<String>) {
    let mut returns = elector::returns(gateways, &own.spec.network);
    let mut notes = Vec::new();
    for r in &mut returns {
        r.clients.retain(|c| {
            let free = match c {
                IpNet::V4(c) => !foreign.destinations.contains(c),
                IpNet::V6(c) => !foreign.destinations6.contains(c),
            };
            if !free {
                notes.push(format!(
                    "OverlayGateway {}: this node already routes {c} (a route not Causeway's), so replies to those clients follow it, not the active host",
                    r.gateway
                ));
            }
            free
        });
    }
    (returns, notes)
}

/// What [`clear`] did.
#[derive(Debug)]
pub struct Cleared {
    /// The operations, applied (or in a dry run, that would be).
    pub ops: Vec<Op>,
    /// What the kernel held before (its pods' veths, say).
    pub observed: State,
    /// The first operation that failed, in words (the next pass retries).
    pub failed: Option<String>,
    /// Its index in `ops`.
    pub failed_at: Option<usize>,
}

/// Removes everything the agent owns (the node left its network).
///
/// # Errors
/// The kernel cannot be read.
pub async fn clear<D: Dataplane>(dp: &mut D, apply: bool) -> Result<Cleared, String> {
    let observed = dp.observe().await.map_err(|e| e.to_string())?;
    let ops = diff::diff(&State::default(), &observed);
    let mut cleared = Cleared {
        ops,
        observed,
        failed: None,
        failed_at: None,
    };
    if !apply {
        return Ok(cleared);
    }
    log_ops(&cleared.ops, "removing");
    if let Err((i, e)) = dp.apply_all(&cleared.ops).await {
        cleared.failed = Some(format!("{}: {}", cleared.ops[i], e.message));
        cleared.failed_at = Some(i);
    }
    Ok(cleared)
}

/// Passes with at most this many operations log each at `info`; larger ones (a node's
/// first pass at 20,000 peers has 60,000) log one summary line at `info` and each operation
/// at `debug`, since formatting and writing a line per operation took a third of the time to
/// program 20,000 peers.
pub const LOG_EACH_UP_TO: usize = 32;

/// Logs the operations about to be applied (`what`: "applying", "removing"): each one, or
/// the count by kind ([`Op::kind`]) and each at `debug`.
fn log_ops(ops: &[Op], what: &'static str) {
    if ops.len() <= LOG_EACH_UP_TO {
        for op in ops {
            info!(%op, "{what}");
        }
        return;
    }
    info!(operations = ops.len(), kinds = %count_kinds(ops), "{what}");
    if tracing::enabled!(tracing::Level::DEBUG) {
        for op in ops {
            tracing::debug!(%op, "{what}");
        }
    }
}

/// `kind count` pairs in the order kinds first appear, e.g. `replace_fdb 3, replace_route 3`.
fn count_kinds(ops: &[Op]) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for op in ops {
        match counts.iter_mut().find(|(k, _)| *k == op.kind()) {
            Some((_, n)) => *n += 1,
            None => counts.push((op.kind(), 1)),
        }
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    //! Whole passes against the kernel-faithful fake: join, a second pass, drift, leaving,
    //! an invalid plan, a missing underlay, gateway eligibility, a dry run, a node AS from a
    //! label.

    use super::*;
    use crate::fake::FakeDataplane;
    use causeway_crds::NodeSubnetSpec;
    use causeway_crds::vtep::vtep_mac;

    const NETWORK: &str = "overlay";

    fn network(extra: serde_json::Value) -> Arc<PodNetwork> {
        let mut spec = serde_json::json!({
            "cidr": "10.244.0.0/16",
            "nodeSubnetPrefixLength": 24,
            "mode": "Overlay",
            "overlay": {"vni": 1, "port": 8472},
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        Arc::new(PodNetwork::new(
            NETWORK,
            serde_json::from_value(spec).expect("spec"),
        ))
    }

    fn subnet(node: &str, cidr: &str, address: &str) -> Arc<NodeSubnet> {
        let mut s = NodeSubnet::new(
            &format!("{NETWORK}-{node}"),
            NodeSubnetSpec {
                network: NETWORK.into(),
                node_name: node.into(),
                cidr: cidr.into(),
                node_address: address.into(),
                vtep_mac: Some(vtep_mac(node).to_string()),
                secondary_cidr: None,
                secondary_node_address: None,
            },
        );
        s.metadata.generation = Some(1);
        Arc::new(s)
    }

    fn subnets() -> Vec<Arc<NodeSubnet>> {
        vec![
            subnet("node-a", "10.244.1.0/24", "192.168.1.11"),
            subnet("node-b", "10.244.2.0/24", "192.168.1.12"),
            subnet("node-c", "10.244.3.0/24", "192.168.2.13"),
        ]
    }

    /// node-a's kernel: `eth0` holding 192.168.1.11/24, a default route via 192.168.1.1.
    fn node_a() -> FakeDataplane {
        let mut dp = FakeDataplane::default().with_underlay(
            "192.168.1.11".parse::<IpAddr>().expect("ip"),
            Underlay {
                name: "eth0".into(),
                mtu: 1500,
                prefix: "192.168.1.0/24".parse().expect("prefix"),
                secondary_prefix: None,
            },
        );
        dp.foreign_routes
            .insert("0.0.0.0/0".parse().expect("default"));
        dp.foreign_next_hops
            .insert("192.168.1.1".parse().expect("gw"));
        dp
    }

    static NO_ROUTES: crate::bgp::Learned = crate::bgp::Learned::new();
    static API_SERVERS: [Ipv4Addr; 1] = [Ipv4Addr::new(192, 168, 40, 2)];
    static API_SERVERS6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x40, 0, 0, 0, 0, 0, 2)];
    static NO_SECRETS: crate::bgp::peering::Secrets = crate::bgp::peering::Secrets::new();

    /// What a pass sees around node-a.
    struct World {
        networks: Vec<Arc<PodNetwork>>,
        subnets: Vec<Arc<NodeSubnet>>,
        gateways: Vec<Arc<OverlayGateway>>,
        labels: BTreeMap<String, String>,
        /// host-local's IPv6 allocations on node-a.
        pods6: BTreeSet<Ipv6Addr>,
        apply: bool,
    }

    impl World {
        fn new() -> Self {
            Self {
                networks: vec![network(serde_json::json!({}))],
                subnets: subnets(),
                gateways: vec![],
                labels: BTreeMap::new(),
                pods6: BTreeSet::new(),
                apply: true,
            }
        }

        async fn pass(&self, dp: &mut FakeDataplane) -> Pass {
            run(dp, &self.inputs(&self.subnets)).await
        }

        /// The inputs of a pass for node-a (`subnets[0]`), with `subnets` as the NodeSubnets.
        fn inputs<'a>(&'a self, subnets: &'a [Arc<NodeSubnet>]) -> Inputs<'a> {
            Inputs {
                own: &self.subnets[0],
                networks: &self.networks,
                subnets,
                gateways: &self.gateways,
                labels: &self.labels,
                learned: &NO_ROUTES,
                api_servers: &API_SERVERS,
                api_servers6: &API_SERVERS6,
                pods6: &self.pods6,
                secrets: &NO_SECRETS,
                namespace: "causeway-system",
                apply: self.apply,
            }
        }
    }

    impl World {
        /// [`run_peers`] for the NodeSubnets named `changed`, as `self.subnets` has them now.
        async fn peers(
            &self,
            dp: &mut FakeDataplane,
            baseline: &mut Option<Baseline>,
            changed: &[&str],
        ) -> Option<Pass> {
            let changed: Vec<(String, Option<Arc<NodeSubnet>>)> = changed
                .iter()
                .map(|name| {
                    let now = self.subnets.iter().find(|s| s.name_any() == *name);
                    ((*name).to_owned(), now.cloned())
                })
                .collect();
            run_peers(dp, &self.inputs(&[]), baseline, &changed).await
        }
    }

    #[tokio::test]
    async fn peers_that_change_alone_are_replanned_without_reading_the_kernel() {
        let mut world = World::new();
        let mut dp = node_a();
        let mut baseline = world.pass(&mut dp).await.baseline;
        assert!(baseline.is_some(), "a clean full pass leaves a baseline");
        let plan = |b: &Option<Baseline>| Arc::as_ptr(&b.as_ref().expect("baseline").programmed);
        let full_plan = plan(&baseline);
        // Without an underlay a full pass fails: these passes never read the kernel.
        let underlays = std::mem::take(&mut dp.underlays);

        world
            .subnets
            .push(subnet("node-d", "10.244.4.0/24", "192.168.1.14"));
        let joined = world
            .peers(&mut dp, &mut baseline, &["overlay-node-d"])
            .await
            .expect("node-d replanned alone");
        let ops: Vec<String> = joined.ops.iter().map(ToString::to_string).collect();
        assert_eq!(ops.len(), 3, "an FDB entry, a neighbour, a route: {ops:?}");
        assert!(ops[2].contains("10.244.4.0/24"), "{ops:?}");
        assert_eq!(*joined.outcome.programmed, dp.state);
        assert!(joined.outcome.failure.is_none() && joined.decisions.is_none());
        // The full pass's outcome is gone, so the baseline held the only reference to the
        // plan: the change edited it in place instead of copying every entry, and once this
        // outcome is dropped too, the next change can do the same.
        assert_eq!(
            plan(&baseline),
            full_plan,
            "the plan was edited in place, not copied"
        );
        assert_eq!(Arc::as_ptr(&joined.outcome.programmed), full_plan);
        drop(joined);
        assert_eq!(
            Arc::strong_count(&baseline.as_ref().expect("baseline").programmed),
            1
        );

        // node-b leaves, node-c moves to another address: one pass for both.
        world.subnets.remove(1);
        let mut c = (*world.subnets[1]).clone();
        c.spec.node_address = "192.168.2.23".into();
        world.subnets[1] = Arc::new(c);
        let moved = world
            .peers(
                &mut dp,
                &mut baseline,
                &["overlay-node-b", "overlay-node-c"],
            )
            .await
            .expect("replanned alone");
        let ops: Vec<String> = moved.ops.iter().map(ToString::to_string).collect();
        assert_eq!(ops.len(), 4, "node-c's FDB entry, node-b's three: {ops:?}");
        assert_eq!(*moved.outcome.programmed, dp.state);
        assert_eq!(plan(&baseline), full_plan, "edited in place again");
        drop(moved);
        // This node's own status changing is no change at all.
        let own = world.subnets[0].name_any();
        let nothing = world.peers(&mut dp, &mut baseline, &[&own]).await;
        assert!(nothing.expect("replanned").ops.is_empty());

        // A full pass over the same world agrees: nothing to do.
        dp.underlays = underlays;
        let full = world.pass(&mut dp).await;
        assert!(full.ops.is_empty(), "{:?}", full.ops);

        // Anything else changing declines, and the baseline is gone.
        let mut baseline = full.baseline;
        world.networks = vec![network(serde_json::json!({"mtu": 1400}))];
        assert!(world.peers(&mut dp, &mut baseline, &[]).await.is_none());
        assert!(baseline.is_none());
        // So does a peer the plan would refuse (node-e takes node-d's subnet).
        world.networks = vec![network(serde_json::json!({}))];
        let mut baseline = world.pass(&mut dp).await.baseline;
        world
            .subnets
            .push(subnet("node-e", "10.244.4.0/24", "192.168.1.15"));
        let refused = world.peers(&mut dp, &mut baseline, &["overlay-node-e"]);
        assert!(refused.await.is_none());
        let full = world.pass(&mut dp).await;
        assert!(full.ops.is_empty() && full.baseline.is_none());
        assert_eq!(full.outcome.skipped.len(), 1, "{:?}", full.outcome.skipped);
    }

    #[tokio::test]
    async fn a_dual_stack_overlay_node_programs_both_families_counts_them_and_forwards_ipv6() {
        let mut world = World::new();
        world.networks = vec![network(serde_json::json!({
            "secondaryCidr": "fd00:10:244::/56", "secondaryNodeSubnetPrefixLength": 64,
        }))];
        let with_v6 = |s: &Arc<NodeSubnet>, v6: &str| {
            let mut s = (**s).clone();
            s.spec.secondary_cidr = Some(v6.into());
            Arc::new(s)
        };
        world.subnets = vec![
            with_v6(&world.subnets[0], "fd00:10:244:1::/64"),
            with_v6(&world.subnets[1], "fd00:10:244:2::/64"),
            // node-c has no IPv6 subnet yet: IPv4 only.
            world.subnets[2].clone(),
        ];
        let mut dp = node_a();
        let pass = world.pass(&mut dp).await;
        assert!(pass.outcome.failure.is_none(), "{:?}", pass.outcome.failure);
        assert!(dp.forwarding && dp.forwarding6);
        let decisions = pass.decisions.expect("decisions");
        assert_eq!(
            decisions.subnets.get(1).copied(),
            Some("fd00:10:244:1::/64".parse().expect("cidr"))
        );
        let programmed = &pass.outcome.programmed;
        let v6_routes = programmed
            .routes
            .keys()
            .filter(|d| matches!(d, ipnet::IpNet::V6(_)));
        assert_eq!(v6_routes.count(), 1, "{:?}", programmed.routes.keys());
        // Two IPv4 peers and one IPv6 subnet: three routes and three neighbours, in status.
        assert_eq!(programmed.routes.len(), 3);
        assert_eq!(programmed.neighbours.len(), 3);
        assert_eq!(
            programmed.fdb.len(),
            2,
            "the FDB entries are shared by both families"
        );
        let again = world.pass(&mut dp).await;
        assert!(again.ops.is_empty(), "{:?}", again.ops);

        // A single-stack network never touches IPv6 forwarding.
        let mut plain = node_a();
        World::new().pass(&mut plain).await;
        assert!(plain.forwarding && !plain.forwarding6);
    }

    #[tokio::test]
    async fn a_node_joins_in_one_pass_and_a_second_pass_changes_nothing() {
        let world = World::new();
        let mut dp = node_a();
        let first = world.pass(&mut dp).await;
        assert!(
            first.outcome.failure.is_none(),
            "{:?}",
            first.outcome.failure
        );
        // Two links, and three objects for each of the two peers, among the rest.
        assert!(dp.state.links.contains_key("cw-br0") && dp.state.links.contains_key("cw-vx1"));
        assert_eq!(dp.state.routes.len(), 2, "{:?}", dp.state.routes);
        assert_eq!(dp.state.neighbours.len(), 2);
        assert_eq!(dp.state.fdb.len(), 2);
        assert!(dp.forwarding, "IP forwarding turned on");
        assert_eq!(*first.outcome.programmed, dp.state);
        let decisions = first.decisions.expect("a valid plan decides");
        assert_eq!(
            decisions.subnets,
            ["10.244.1.0/24".parse::<IpNet>().expect("cidr")]
        );
        assert_eq!(decisions.mtu, 1450);
        assert_eq!(decisions.speaker, None, "no BGP in Overlay mode");

        let applied = dp.applied.len();
        let second = world.pass(&mut dp).await;
        assert!(second.ops.is_empty(), "{:?}", second.ops);
        assert_eq!(dp.applied.len(), applied, "nothing applied");
    }

    #[tokio::test]
    async fn drift_is_repaired_with_the_one_missing_object() {
        let world = World::new();
        let mut dp = node_a();
        world.pass(&mut dp).await;
        let gone = "10.244.3.0/24".parse().expect("cidr");
        dp.state.routes.remove(&gone);
        let repair = world.pass(&mut dp).await;
        assert_eq!(repair.ops.len(), 1, "{:?}", repair.ops);
        assert!(matches!(&repair.ops[0], Op::ReplaceRoute(r) if r.dst == gone));
        assert!(dp.state.routes.contains_key(&gone));
    }

    #[tokio::test]
    async fn a_peer_leaving_removes_its_three_objects_and_leaving_clears_the_node() {
        let mut world = World::new();
        let mut dp = node_a();
        world.pass(&mut dp).await;
        world.subnets.pop();
        let left = world.pass(&mut dp).await;
        assert_eq!(left.ops.len(), 3, "{:?}", left.ops);
        assert_eq!(dp.state.routes.len(), 1);

        let cleared = clear(&mut dp, true).await.expect("clear");
        assert!(cleared.failed.is_none());
        assert_eq!(dp.state, State::default(), "nothing of ours left");
    }

    #[tokio::test]
    async fn an_invalid_plan_changes_nothing_and_decides_nothing() {
        let mut world = World::new();
        // 9000 does not fit a 1500-byte underlay once VXLAN adds its 50 bytes.
        world.networks = vec![network(serde_json::json!({"mtu": 9000}))];
        let mut dp = node_a();
        let pass = world.pass(&mut dp).await;
        assert!(
            matches!(&pass.outcome.failure, Some(Failure::Plan(m)) if m.contains("9000")),
            "{:?}",
            pass.outcome.failure
        );
        assert!(pass.ops.is_empty() && dp.applied.is_empty());
        assert!(pass.decisions.is_none(), "no BGP, no elections");
        assert!(!dp.forwarding);
    }

    /// node-a's kernel on an IPv6-only underlay: `eth0` holding fd00:1::11/64.
    fn node_a6() -> FakeDataplane {
        FakeDataplane::default().with_underlay(
            "fd00:1::11".parse::<IpAddr>().expect("ip"),
            Underlay {
                name: "eth0".into(),
                mtu: 1500,
                prefix: "fd00:1::/64".parse().expect("prefix"),
                secondary_prefix: None,
            },
        )
    }

    /// The IPv6-only world: an IPv6 Overlay network, node-a and node-b on fd00:1::/64.
    fn ipv6_world() -> World {
        let mut world = World::new();
        world.networks = vec![network(serde_json::json!({
            "cidr": "fd00:10:244::/56", "nodeSubnetPrefixLength": 64,
        }))];
        world.subnets = vec![
            subnet("node-a", "fd00:10:244:1::/64", "fd00:1::11"),
            subnet("node-b", "fd00:10:244:2::/64", "fd00:1::12"),
        ];
        world
    }

    #[tokio::test]
    async fn an_ipv6_overlay_node_tunnels_over_its_ipv6_underlay_with_70_bytes_of_headers() {
        let world = ipv6_world();
        let mut dp = node_a6();
        let pass = world.pass(&mut dp).await;
        assert!(pass.outcome.failure.is_none(), "{:?}", pass.outcome.failure);
        assert!(dp.forwarding6, "IPv6 pods need IPv6 forwarding");
        let decisions = pass.decisions.expect("decisions");
        assert_eq!(
            decisions.subnets,
            ["fd00:10:244:1::/64".parse::<IpNet>().expect("cidr")],
            "the CNI config's one range"
        );
        assert_eq!(decisions.mtu, 1430, "1500 minus VXLAN over IPv6 (70)");
        let vxlan = &dp.state.links["cw-vx1"];
        assert!(
            matches!(&vxlan.kind, crate::model::LinkKind::Vxlan { local, .. }
                if *local == "fd00:1::11".parse::<IpAddr>().expect("ip")),
            "{vxlan:?}"
        );
        let fdb: Vec<String> = dp.state.fdb.values().map(|f| f.dst.to_string()).collect();
        assert_eq!(fdb, ["fd00:1::12"], "node-b's VTEP at its IPv6 address");
        let route = &dp.state.routes[&"fd00:10:244:2::/64".parse::<IpNet>().expect("net")];
        assert_eq!(
            (route.gateway, route.dev.as_str(), route.onlink),
            (Some("fd00:10:244:2::".parse().expect("ip")), "cw-vx1", true)
        );
        assert!(dp.state.nat.is_none(), "no IPv4 pods, no IPv4 masquerade");
        assert!(
            dp.state.nat6.is_some(),
            "IPv6 pods are masqueraded going out"
        );
        assert_eq!(
            pass.outcome.underlay_prefix,
            Some("fd00:1::/64".parse().expect("prefix"))
        );

        // A peer whose node address is IPv4 cannot share the IPv6 tunnel: skipped, named.
        let mut mixed = ipv6_world();
        mixed
            .subnets
            .push(subnet("node-c", "fd00:10:244:3::/64", "192.168.1.13"));
        let pass = mixed.pass(&mut node_a6()).await;
        assert!(
            pass.outcome.skipped.iter().any(|s| s.contains("node-c")
                && s.contains("need node addresses (spec.nodeAddress) of one family")),
            "{:?}",
            pass.outcome.skipped
        );
    }

    #[tokio::test]
    async fn bgp_on_an_ipv6_network_speaks_ipv6_only_and_a_node_without_the_address_it_needs_changes_nothing()
     {
        // An IPv4 network with BGP on a node whose only address is IPv6: it cannot announce its
        // IPv4 subnet; refused, naming the fix; the running dataplane stays.
        let mut world = World::new();
        let mut dp = node_a();
        world.pass(&mut dp).await;
        let programmed = dp.state.clone();
        let applied = dp.applied.len();
        let bgp = serde_json::json!({
            "bgp": {"asn": 64512, "peers": [
                {"address": "192.168.1.1", "asn": 64500},
                {"address": "fd00:1::1", "asn": 64500},
            ]},
        });
        world.networks = vec![network(serde_json::json!({
            "mode": "Routed", "overlay": null, "routed": bgp,
        }))];
        let mut v6_node = (*world.subnets[0]).clone();
        v6_node.spec.node_address = "fd00:50::11".into();
        world.subnets[0] = Arc::new(v6_node);
        let refused = world.pass(&mut dp).await;
        assert!(
            matches!(&refused.outcome.failure, Some(Failure::Plan(m))
                if m.starts_with("this node has no IPv4 address (NodeSubnet spec.nodeAddress fd00:50::11")
                    && m.contains("give the node an IPv4 InternalIP")),
            "{:?}",
            refused.outcome.failure
        );
        assert!(refused.ops.is_empty() && refused.decisions.is_none());
        assert_eq!((dp.state.clone(), dp.applied.len()), (programmed, applied));

        // An IPv6 network on an IPv6-only node: IPv6 unicast only, over the IPv6 peer; the
        // IPv4 peer is named, the router ID is the folded IPv6 address.
        let mut world = ipv6_world();
        world.networks = vec![network(serde_json::json!({
            "cidr": "fd00:10:244::/56", "nodeSubnetPrefixLength": 64,
            "mode": "Routed", "overlay": null, "routed": bgp,
        }))];
        let mut fresh = node_a6();
        let pass = world.pass(&mut fresh).await;
        assert!(pass.outcome.failure.is_none(), "{:?}", pass.outcome.failure);
        let speaker = pass
            .decisions
            .and_then(|d| d.speaker)
            .expect("a speaker configuration");
        assert_eq!(speaker.next_hop, None, "no IPv4 unicast");
        assert!(speaker.advertise.is_empty());
        let v6 = speaker.ipv6.as_ref().expect("IPv6 unicast");
        assert_eq!(
            (
                v6.advertise.clone(),
                v6.next_hop.to_string(),
                v6.range.to_string()
            ),
            (
                vec!["fd00:10:244:1::/64".parse().expect("net")],
                "fd00:1::11".to_owned(),
                "fd00:10:244::/56".to_owned()
            )
        );
        // fd00:0001:0000:0000:0000:0000:0000:0011 folds to 0xfd000001 ^ 0x11.
        assert_eq!(speaker.router_id, Ipv4Addr::new(0xfd, 0, 0, 0x10));
        let peers: Vec<String> = speaker
            .peers
            .iter()
            .map(|p| p.address.to_string())
            .collect();
        assert_eq!(peers, ["fd00:1::1"]);
        assert!(
            speaker.unusable.len() == 1
                && speaker.unusable[0]
                    .why
                    .contains("is an IPv4 address, and this node has no IPv4 address to peer from"),
            "{:?}",
            speaker.unusable
        );
    }

    /// The dual-stack Flat world: node-a and node-b on eth0's segment (IPv4 and IPv6), node-c
    /// on another one.
    fn dual_stack_flat() -> World {
        let mut world = World::new();
        world.networks = vec![network(serde_json::json!({
            "mode": "Flat", "overlay": null,
            "secondaryCidr": "fd00:10:244::/56", "secondaryNodeSubnetPrefixLength": 64,
        }))];
        let with_v6 = |s: &Arc<NodeSubnet>, v6: &str, node6: &str| {
            let mut s = (**s).clone();
            s.spec.secondary_cidr = Some(v6.into());
            s.spec.secondary_node_address = Some(node6.into());
            Arc::new(s)
        };
        world.subnets = vec![
            with_v6(&world.subnets[0], "fd00:10:244:1::/64", "fd00:1::11"),
            with_v6(&world.subnets[1], "fd00:10:244:2::/64", "fd00:1::12"),
            with_v6(&world.subnets[2], "fd00:10:244:3::/64", "fd00:2::13"),
        ];
        world
    }

    #[tokio::test]
    async fn a_dual_stack_flat_node_without_ipv6_on_its_underlay_is_told_what_is_missing_and_changes_nothing()
     {
        let world = dual_stack_flat();
        let mut dp = node_a();
        let pass = world.pass(&mut dp).await;
        assert!(
            matches!(&pass.outcome.failure, Some(Failure::Underlay(m))
                if m.starts_with("this node's IPv6 address fd00:1::11 (NodeSubnet spec.secondaryNodeAddress, its IPv6 InternalIP) is not on underlay link eth0, which holds its IPv4 address 192.168.1.11")
                    && m.contains("add fd00:1::11 to eth0")),
            "{:?}",
            pass.outcome.failure
        );
        assert_eq!(
            pass.outcome.failure.as_ref().map(Failure::reason),
            Some("UnderlayNotFound")
        );
        assert!(pass.decisions.is_none() && dp.applied.is_empty() && !dp.forwarding);

        // No IPv6 InternalIP at all: the NodeSubnet has no secondaryNodeAddress.
        let mut world = dual_stack_flat();
        let mut own = (*world.subnets[0]).clone();
        own.spec.secondary_node_address = None;
        world.subnets[0] = Arc::new(own);
        let pass = world.pass(&mut dp).await;
        assert!(
            matches!(&pass.outcome.failure, Some(Failure::Underlay(m))
                if m.starts_with("NodeSubnet overlay-node-a: spec.secondaryNodeAddress is missing, and this dual-stack Flat network needs node node-a's IPv6 address on its underlay")
                    && m.contains("give node node-a an IPv6 address and register it as an InternalIP")),
            "{:?}",
            pass.outcome.failure
        );
        assert!(dp.applied.is_empty());
    }

    #[tokio::test]
    async fn a_dual_stack_flat_node_answers_ndp_for_exactly_its_own_pods_and_follows_them() {
        let mut world = dual_stack_flat();
        let addr = |s: &str| s.parse::<Ipv6Addr>().expect("ip");
        world.pods6 = [
            "fd00:10:244:1::2",
            "fd00:10:244:1::3",
            // Not this node's subnet: never proxied.
            "fd00:10:244:2::2",
        ]
        .into_iter()
        .map(addr)
        .collect();
        let mut dp = node_a().with_address6(
            "eth0",
            addr("fd00:1::11"),
            "fd00:1::/64".parse().expect("net"),
        );
        let pass = world.pass(&mut dp).await;
        assert!(pass.outcome.failure.is_none(), "{:?}", pass.outcome.failure);
        assert!(dp.forwarding6, "IPv6 forwarding on");
        let decisions = pass.decisions.expect("decisions");
        assert!(decisions.proxy_ndp);
        assert_eq!(
            decisions.subnets.get(1).copied(),
            Some("fd00:10:244:1::/64".parse().expect("cidr"))
        );
        assert_eq!(
            dp.state
                .proxy_neighbours
                .iter()
                .map(|(dev, ip)| format!("{dev} {ip}"))
                .collect::<Vec<_>>(),
            ["eth0 fd00:10:244:1::2", "eth0 fd00:10:244:1::3"]
        );
        assert!(dp.state.proxy_ndp.contains("eth0") && dp.state.proxy_arp.contains("eth0"));
        // node-c's IPv6 node address is on another segment: named.
        assert!(
            pass.outcome.skipped.iter().any(|m| m
                == "NodeSubnet overlay-node-c (node node-c): its IPv6 pods are unreachable: its IPv6 node address fd00:2::13 is not on this node's IPv6 segment fd00:1::/64, and Flat mode needs every node on one segment (use mode Overlay, or select the nodes of one segment)."),
            "{:?}",
            pass.outcome.skipped
        );
        let again = world.pass(&mut dp).await;
        assert!(again.ops.is_empty(), "{:?}", again.ops);

        // A pod goes, another comes: one entry removed, one added, nothing else.
        world.pods6 = ["fd00:10:244:1::3", "fd00:10:244:1::4"]
            .into_iter()
            .map(addr)
            .collect();
        let moved = world.pass(&mut dp).await;
        let ops: Vec<String> = moved.ops.iter().map(ToString::to_string).collect();
        assert_eq!(
            ops,
            [
                "replace neighbour proxy fd00:10:244:1::4 dev eth0 proto 249",
                "delete neighbour proxy fd00:10:244:1::2 dev eth0",
            ]
        );

        // Leaving: every entry, proxy NDP and the routes go.
        let cleared = clear(&mut dp, true).await.expect("clear");
        assert!(cleared.failed.is_none());
        assert_eq!(dp.state, State::default());
    }

    #[tokio::test]
    async fn a_dual_stack_routed_node_with_bgp_is_programmed_and_its_speaker_carries_ipv6() {
        let mut world = World::new();
        let routed = |bgp: serde_json::Value| {
            network(serde_json::json!({
                "mode": "Routed", "overlay": null, "routed": bgp,
                "secondaryCidr": "fd00:10:244::/56", "secondaryNodeSubnetPrefixLength": 64,
            }))
        };
        world.networks = vec![routed(serde_json::json!({"bgp": {"asn": 64512,
            "peers": [{"address": "192.168.1.1", "asn": 64500}]}}))];
        let mut a = (*world.subnets[0]).clone();
        a.spec.secondary_cidr = Some("fd00:10:244:1::/64".into());
        a.spec.secondary_node_address = Some("fd00:1::11".into());
        world.subnets[0] = Arc::new(a.clone());
        let node_a6 = || {
            node_a().with_address6(
                "eth0",
                "fd00:1::11".parse().expect("ip"),
                "fd00:1::/64".parse().expect("net"),
            )
        };
        let mut dp = node_a6();
        let pass = world.pass(&mut dp).await;
        assert!(pass.outcome.failure.is_none(), "{:?}", pass.outcome.failure);
        assert!(dp.forwarding && dp.forwarding6);
        let decisions = pass.decisions.expect("decisions");
        assert_eq!(
            decisions.subnets.get(1).copied(),
            Some("fd00:10:244:1::/64".parse().expect("cidr"))
        );
        let ipv6 = decisions
            .speaker
            .and_then(|s| s.ipv6)
            .expect("IPv6 unicast");
        assert_eq!(
            (ipv6.advertise, ipv6.next_hop.to_string()),
            (
                vec!["fd00:10:244:1::/64".parse().expect("cidr")],
                "fd00:1::11".to_owned()
            )
        );
        assert!(
            pass.outcome
                .programmed
                .addresses
                .keys()
                .any(|(dev, a)| dev == "cw-br0" && a.to_string() == "fd00:10:244:1::1/64"),
            "{:?}",
            pass.outcome.programmed.addresses
        );

        // Without an IPv6 address the node cannot announce its IPv6 subnet: refused whole.
        a.spec.secondary_node_address = None;
        world.subnets[0] = Arc::new(a);
        let mut fresh = node_a6();
        let pass = world.pass(&mut fresh).await;
        assert!(
            matches!(&pass.outcome.failure, Some(Failure::Plan(m))
                if m.starts_with("NodeSubnet spec.secondaryNodeAddress is not set: on this dual-stack Routed network")),
            "{:?}",
            pass.outcome.failure
        );
        assert!(fresh.applied.is_empty() && pass.decisions.is_none());
    }

    #[tokio::test]
    async fn a_node_as_from_a_label_is_reported_with_the_settings_it_makes_ignored() {
        let mut world = World::new();
        world.networks = vec![network(serde_json::json!({
            "mode": "Routed",
            "overlay": null,
            "routed": {"bgp": {"asn": 64512, "nodeAsnLabel": "causeway.dev/asn",
                "peers": [{"address": "192.168.1.1", "asn": 64500, "ebgpMultihop": 2}]}},
        }))];
        // The label gives node-a the router's AS: the session is iBGP, multihop is moot.
        world
            .labels
            .insert("causeway.dev/asn".into(), "64500".into());
        let mut dp = node_a();
        let pass = world.pass(&mut dp).await;
        assert!(pass.outcome.failure.is_none(), "{:?}", pass.outcome.failure);
        assert_eq!(
            pass.outcome.bgp_local.as_deref(),
            Some("address 192.168.1.11, AS 64500 (from node label causeway.dev/asn)")
        );
        assert_eq!(
            pass.outcome.skipped,
            [
                "spec.routed.bgp.peers[0].ebgpMultihop is ignored on this node: its AS is 64500, the same as 192.168.1.1's, so the session is iBGP, which may cross routers anyway"
            ]
        );
        let speaker = pass.decisions.and_then(|d| d.speaker).expect("BGP on");
        assert_eq!(
            (speaker.local_asn, speaker.peers[0].options.multihop),
            (64500, None)
        );

        // A label that is no AS number: the node's plan fails, naming the label and the fix.
        world
            .labels
            .insert("causeway.dev/asn".into(), "AS65001".into());
        let pass = world.pass(&mut dp).await;
        assert!(
            matches!(&pass.outcome.failure, Some(Failure::Plan(m))
                if m.starts_with("node label causeway.dev/asn=\"AS65001\" (named by spec.routed.bgp.nodeAsnLabel) is not an AS number")),
            "{:?}",
            pass.outcome.failure
        );
        assert!(pass.decisions.is_none(), "no speaker from an invalid plan");
    }

    #[tokio::test]
    async fn a_node_whose_address_is_on_no_link_reports_the_underlay() {
        let world = World::new();
        let mut dp = FakeDataplane::default();
        let pass = world.pass(&mut dp).await;
        assert!(
            matches!(&pass.outcome.failure, Some(Failure::Underlay(m)) if m.contains("spec.nodeAddress")),
            "{:?}",
            pass.outcome.failure
        );
        assert!(pass.decisions.is_none() && dp.applied.is_empty());
    }

    fn bridge_gateway(vip: &str) -> Arc<OverlayGateway> {
        Arc::new(OverlayGateway::new(
            "office",
            serde_json::from_value(serde_json::json!({
                "network": NETWORK, "strategy": "BridgeHosts",
                "clientCidrs": ["192.168.77.0/24"],
                "bridgeHosts": {"nodeSelector": {"matchLabels": {"bridge": "true"}}, "vip": vip},
            }))
            .expect("gateway"),
        ))
    }

    #[tokio::test]
    async fn a_node_is_a_bridge_host_candidate_only_with_a_valid_plan() {
        let mut world = World::new();
        world.gateways = vec![bridge_gateway("192.168.1.250")];
        world.labels = BTreeMap::from([("bridge".to_owned(), "true".to_owned())]);
        let mut dp = node_a();
        let valid = world.pass(&mut dp).await;
        let candidacies = valid.decisions.expect("valid").candidacies;
        assert_eq!(candidacies.keys().collect::<Vec<_>>(), ["office"]);
        assert_eq!(candidacies["office"].dev, "eth0");

        // The same node, unlabelled: no candidacy.
        world.labels.clear();
        let unlabelled = world.pass(&mut dp).await;
        assert!(unlabelled.decisions.expect("valid").candidacies.is_empty());

        // Labelled, but its plan fails: it decides nothing, so the agent withdraws.
        world.labels = BTreeMap::from([("bridge".to_owned(), "true".to_owned())]);
        world.networks = vec![network(serde_json::json!({"mtu": 9000}))];
        assert!(world.pass(&mut dp).await.decisions.is_none());
    }

    /// What the agent's cache keeps of peers is all a pass reads: with peers slimmed (labels,
    /// owner, uid and status gone) a pass programs and reports exactly what it does with
    /// whole objects, and node-a's own NodeSubnet is left whole.
    #[tokio::test]
    async fn a_pass_reads_nothing_of_a_peer_that_slimming_drops() {
        use causeway_crds::NodeSubnetStatus;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
        let mut whole = World::new();
        for (i, s) in whole.subnets.iter_mut().enumerate() {
            let mut s2 = (**s).clone();
            s2.metadata.uid = Some(format!("uid-{i}"));
            s2.metadata.resource_version = Some(format!("{}", 100 + i));
            s2.metadata.creation_timestamp = Some(Time(
                format!("2025-01-0{}T00:00:00Z", i + 1)
                    .parse()
                    .expect("time"),
            ));
            s2.metadata.labels = Some(BTreeMap::from([(
                "causeway.dev/node".to_owned(),
                s2.spec.node_name.clone(),
            )]));
            s2.metadata.finalizers = Some(vec!["causeway.dev/agent".into()]);
            s2.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "causeway.dev/v1alpha1".into(),
                kind: "PodNetwork".into(),
                name: NETWORK.into(),
                uid: "pn-uid".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
            s2.status = Some(NodeSubnetStatus {
                routes: 7,
                effective_mtu: Some(1450),
                ..NodeSubnetStatus::default()
            });
            *s = Arc::new(s2);
        }
        let mut slim = World::new();
        slim.subnets = whole
            .subnets
            .iter()
            .map(|s| {
                let mut s = (**s).clone();
                slim_peer(&mut s, "node-a");
                Arc::new(s)
            })
            .collect();
        assert_eq!(slim.subnets[0], whole.subnets[0], "its own is kept whole");
        for peer in &slim.subnets[1..] {
            assert!(peer.status.is_none() && peer.metadata.labels.is_none());
            assert!(peer.metadata.owner_references.is_none() && peer.metadata.uid.is_none());
            assert!(peer.metadata.name.is_some() && peer.metadata.creation_timestamp.is_some());
        }

        let (mut dp_whole, mut dp_slim) = (node_a(), node_a());
        let a = whole.pass(&mut dp_whole).await;
        let b = slim.pass(&mut dp_slim).await;
        assert_eq!(dp_whole.state, dp_slim.state);
        assert_eq!(a.ops.len(), b.ops.len());
        assert!(a.ops.len() > 6, "both programmed the peers: {:?}", a.ops);
        assert_eq!(a.outcome.failure.is_none(), b.outcome.failure.is_none());
        assert_eq!(a.outcome.programmed, b.outcome.programmed);
    }

    #[test]
    fn a_large_pass_is_summarised_by_kind_in_first_appearance_order() {
        let ops = vec![
            Op::SetLooseRpFilter("cw-br0".into()),
            Op::DeleteLink("cw-vx1".into()),
            Op::SetLooseRpFilter("cw-vx1".into()),
            Op::EnableIpv6("cw-br0".into()),
            Op::DeleteNat,
            Op::DeleteNat6,
        ];
        assert_eq!(
            count_kinds(&ops),
            "set_loose_rp_filter 2, delete_link 1, enable_ipv6 1, delete_nat 2"
        );
        assert_eq!(count_kinds(&[]), "");
    }

    #[test]
    fn a_node_subnet_written_by_hand_never_replaces_the_operators() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
        let at = |s: &str| Some(Time(s.parse().expect("time")));
        let mut operators = (*subnet("node-a", "10.244.0.0/24", "192.168.1.11")).clone();
        operators.metadata.name = Some("overlay-10-244-0-0-24".into());
        operators.metadata.creation_timestamp = at("2025-02-01T00:00:00Z");
        operators.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "causeway.dev/v1alpha1".into(),
            kind: "PodNetwork".into(),
            name: "overlay".into(),
            uid: "uid".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        // Older, but nobody's: written by hand.
        let mut by_hand = (*subnet("node-a", "10.244.77.0/25", "192.168.1.11")).clone();
        by_hand.metadata.name = Some("aaa-by-hand".into());
        by_hand.metadata.creation_timestamp = at("2025-01-01T00:00:00Z");
        let mine = [Arc::new(by_hand.clone()), Arc::new(operators.clone())];
        assert_eq!(
            own_subnet(&mine)
                .and_then(|s| s.metadata.name.clone())
                .as_deref(),
            Some("overlay-10-244-0-0-24")
        );
        // Without the operator's, the hand-written one is all there is.
        assert_eq!(
            own_subnet(&mine[..1])
                .and_then(|s| s.metadata.name.clone())
                .as_deref(),
            Some("aaa-by-hand")
        );
        // A deleted one is never chosen.
        let mut leaving = operators;
        leaving.metadata.deletion_timestamp = at("2025-03-01T00:00:00Z");
        let mine = [Arc::new(leaving), Arc::new(by_hand)];
        assert_eq!(
            own_subnet(&mine)
                .and_then(|s| s.metadata.name.clone())
                .as_deref(),
            Some("aaa-by-hand")
        );
    }

    /// Values a careless or hostile user could write, valid ones among them.
    const CIDRS: [&str; 8] = [
        "10.244.0.0/16",
        "10.244.1.0/16",
        "0.0.0.0/0",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "fe80::/64",
        "garbage",
        "10.244.0.0/31",
    ];
    const SUBNETS: [&str; 7] = [
        "10.244.1.0/24",
        "10.244.2.0/24",
        "10.244.1.0/25",
        "10.245.0.0/24",
        "10.244.0.0/31",
        "10.244.1.1/24",
        "bad",
    ];
    const ADDRESSES: [&str; 9] = [
        "192.168.1.11",
        "192.168.1.12",
        "192.168.2.13",
        "192.168.1.1",
        "192.168.40.2",
        "0.0.0.0",
        "255.255.255.255",
        "127.0.0.1",
        "x",
    ];
    const MACS: [Option<&str>; 3] = [None, Some("0e:00:00:00:00:01"), Some("ZZ")];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// Whatever the network, the node's own NodeSubnet, its peers and the gateways say, a
        /// whole pass never panics; a refusal always says why; every peer or client left out
        /// is named; and nothing programmed covers an address the node must keep reaching.
        #[test]
        fn over_generated_specs_a_pass_never_panics_and_every_refusal_says_why(
            cidr in proptest::prop_oneof![2 => proptest::strategy::Just(0usize), 1 => 0..CIDRS.len()],
            mode in 0..3usize,
            mtu in proptest::option::of(proptest::sample::select(vec![0i64, 68, 1400, 1450, 1500, 9000, -1])),
            own in (
                proptest::prop_oneof![2 => proptest::strategy::Just(0usize), 1 => 0..SUBNETS.len()],
                proptest::prop_oneof![3 => proptest::strategy::Just(0usize), 1 => 0..ADDRESSES.len()],
                0..MACS.len(),
            ),
            peers in proptest::collection::vec((0..SUBNETS.len(), 0..ADDRESSES.len(), 0..MACS.len()), 0..5),
            clients in proptest::collection::vec((0..ADDRESSES.len(), 0..ADDRESSES.len()), 0..4),
            vip in 0..ADDRESSES.len(),
        ) {
            let mode = ["Overlay", "Flat", "Routed"][mode];
            let mut spec = serde_json::json!({"cidr": CIDRS[cidr], "nodeSubnetPrefixLength": 24, "mode": mode});
            if mode == "Overlay" {
                spec["overlay"] = serde_json::json!({"vni": 1, "port": 8472});
            }
            if let Some(m) = mtu {
                spec["mtu"] = serde_json::json!(m);
            }
            let network = Arc::new(PodNetwork::new(NETWORK, serde_json::from_value(spec).expect("spec")));
            let node = |name: &str, (c, a, m): (usize, usize, usize)| {
                let mut s = (*subnet(name, SUBNETS[c], ADDRESSES[a])).clone();
                s.spec.vtep_mac = MACS[m].map(str::to_owned);
                Arc::new(s)
            };
            let mut subnets = vec![node("node-a", own)];
            subnets.extend(peers.into_iter().enumerate().map(|(i, p)| node(&format!("peer-{i}"), p)));
            let list: Vec<serde_json::Value> = clients
                .iter()
                .enumerate()
                .map(|(i, (a, o))| serde_json::json!({"name": format!("c{i}"), "address": ADDRESSES[*a], "overlayAddress": ADDRESSES[*o]}))
                .collect();
            let mut gateways = vec![Arc::new(OverlayGateway::new("bridge", serde_json::from_value(serde_json::json!({
                "network": NETWORK, "strategy": "BridgeHosts",
                "bridgeHosts": {"nodeSelector": {}, "vip": ADDRESSES[vip]},
            })).expect("gateway")))];
            if !list.is_empty() {
                gateways.push(Arc::new(OverlayGateway::new("join", serde_json::from_value(serde_json::json!({
                    "network": NETWORK, "strategy": "ClientJoin", "clientJoin": {"clients": list},
                })).expect("gateway"))));
            }
            let world = World { networks: vec![network], subnets, gateways, labels: BTreeMap::new(), pods6: BTreeSet::new(), apply: true };
            let mut dp = node_a();
            let pass = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(world.pass(&mut dp));
            if let Some(failure) = &pass.outcome.failure {
                proptest::prop_assert!(!failure.reason().is_empty());
                proptest::prop_assert!(!failure.message().trim().is_empty(), "{failure:?}");
                proptest::prop_assert!(pass.decisions.is_none() || pass.ops.iter().all(|_| true));
            }
            for note in &pass.outcome.skipped {
                proptest::prop_assert!(!note.trim().is_empty());
            }
            // The node's own address, its router and the API server stay off Causeway's routes.
            for must in ["192.168.1.11", "192.168.1.1", "192.168.40.2"] {
                let a: std::net::Ipv4Addr = must.parse().expect("ip");
                for route in dp.state.routes.values() {
                    proptest::prop_assert!(
                        !route.dst.contains(&std::net::IpAddr::V4(a)),
                        "route {} covers {a}",
                        route.dst
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn a_dry_run_computes_the_operations_and_changes_nothing() {
        let mut world = World::new();
        world.apply = false;
        let mut dp = node_a();
        let pass = world.pass(&mut dp).await;
        assert!(!pass.ops.is_empty());
        assert!(dp.applied.is_empty() && dp.state == State::default());
        assert!(!dp.forwarding);
    }
}
