//! Status roll-up: the PodNetwork's `status` from what the controller observed.
//!
//! The last step of a PodNetwork reconcile: after [`crate::conflicts`] and [`crate::ipam`]
//! decided who owns which subnet, [`rollup`] combines that plan with what the agents reported
//! on their NodeSubnets into counts and three conditions (Ready, Degraded, SubnetsExhausted).
//! The controller writes the result only when it differs from the current status, so the
//! output must be a pure function of its inputs: node lists are sorted, and conditions are
//! merged into the previous ones with [`set_condition`], which moves `lastTransitionTime`
//! only when a condition's status changes.
//!
//! Messages are for people reading `kubectl describe`: whole sentences, naming at most five
//! nodes and then "and N more", and saying what to do where there is something to do. Reasons
//! are the stable CamelCase words of [`reasons`], for runbooks and alerts.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;

use causeway_crds::PodNetworkStatus;
use causeway_crds::conditions::{ConditionStatus, new_condition, reasons, set_condition, types};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::ipam;

/// Node names a message lists before "and N more".
const MAX_LISTED: usize = 5;
/// Longest agent message quoted per group of failing nodes, in characters.
const MAX_QUOTED: usize = 300;

/// What the agent of one allocated node reported on its NodeSubnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetView {
    /// `spec.nodeName`.
    pub node: String,
    /// The Programmed condition; `None` while the agent has not reported.
    pub programmed: Option<ProgrammedView>,
    /// `status.effectiveMtu`.
    pub effective_mtu: Option<i32>,
    /// Why the node's agent counts as not reporting (its heartbeat Lease went unrenewed), in
    /// words; `None` while it reports or has no Lease.
    pub silent: Option<String>,
    /// `status.underlayPrefix`: the L2 segment the agent found its node on.
    pub underlay_prefix: Option<Ipv4Net>,
    /// The NodeSubnet's Ready message when Ready is False because BGP sessions are down (the
    /// dataplane is programmed, but routes through the routers are missing).
    pub bgp_down: Option<String>,
}

/// A NodeSubnet's Programmed condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgrammedView {
    /// Whether the status is `True`.
    pub status: bool,
    /// The condition's reason.
    pub reason: String,
    /// The condition's message.
    pub message: String,
    /// Whether its observedGeneration equals the NodeSubnet's `metadata.generation`, i.e. the
    /// agent has seen the current spec.
    pub current: bool,
}

/// What the controller observed for one PodNetwork.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The PodNetwork's `metadata.generation`.
    pub generation: Option<i64>,
    /// Why the spec cannot be used (e.g. an unparsable cidr), if it cannot.
    pub invalid_spec: Option<String>,
    /// Why a well-formed range cannot be used, with its own reason (nodes' addresses or the
    /// Service range inside it).
    pub unusable: Option<(&'static str, String)>,
    /// The earlier PodNetwork whose cidr this one overlaps.
    pub overlap: Option<&'a str>,
    /// How many nodes match `spec.nodeSelector`.
    pub selected: usize,
    /// `(node, other network)`: selected nodes that an earlier network owns.
    pub claimed_elsewhere: &'a [(String, String)],
    /// The IPAM plan of this reconcile.
    pub plan: &'a ipam::Plan,
    /// The agents' reports, one per allocated node.
    pub subnets: &'a [SubnetView],
    /// When the mode needs every node on one L2 segment, its name for messages (`Flat mode`,
    /// `Routed mode without BGP`).
    pub one_segment: Option<&'static str>,
}

/// One reason a condition is not in its happy state, with the sentence that explains it.
struct Cause {
    reason: &'static str,
    sentence: String,
}

fn cause(reason: &'static str, sentence: String) -> Cause {
    Cause { reason, sentence }
}

/// `a, b, c, d, e and 3 more`: at most [`MAX_LISTED`] items of a sorted list.
fn listing<S: AsRef<str>>(items: &[S], separator: &str) -> String {
    listing_of(items.iter().map(AsRef::as_ref), items.len(), separator)
}

/// [`listing`] of the first items of a longer sorted list, `count` long in all.
fn listing_of<'a>(items: impl Iterator<Item = &'a str>, count: usize, separator: &str) -> String {
    let shown: Vec<&str> = items.take(MAX_LISTED).collect();
    let mut text = shown.join(separator);
    if count > shown.len() {
        text.push_str(&format!(" and {} more", count - shown.len()));
    }
    text
}

fn plural(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("{count} {one}")
    } else {
        format!("{count} {many}")
    }
}

fn quote(message: &str) -> String {
    if message.chars().count() <= MAX_QUOTED {
        message.to_owned()
    } else {
        let cut: String = message.chars().take(MAX_QUOTED).collect();
        format!("{cut}…")
    }
}

/// What the agents of a network's allocated nodes report, tallied so that a roll-up reads
/// only what its messages show: counts, and the first [`MAX_LISTED`] names of each list.
///
/// The full re-plan counts it from scratch ([`Tallies::count`], inside [`rollup`]); the
/// incremental path ([`crate::incremental`]) keeps one per network and updates it as nodes
/// join, leave and report ([`Tallies::add`], [`Tallies::remove`], O(log N) each), so its
/// roll-up ([`rollup_tallied`]) costs the same at 20,000 nodes as at 20. Both give the same
/// status (the tests check it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tallies {
    /// Allocated nodes tallied.
    allocated: usize,
    /// Nodes whose agent reported Programmed=True for the current spec.
    programmed: usize,
    /// `node → (reason, message)` of nodes whose agent reported Programmed=False.
    failing: BTreeMap<String, (String, String)>,
    /// The failing nodes by what they report.
    failing_groups: BTreeMap<(String, String), BTreeSet<String>>,
    /// The groups of `failing_groups` in order of their first node.
    group_order: BTreeSet<(String, (String, String))>,
    /// `node → "node (why)"`: agents that stopped renewing their heartbeat.
    silent: BTreeMap<String, String>,
    /// `node → "node (message)"`: programmed nodes whose BGP sessions are not all Established.
    bgp_down: BTreeMap<String, String>,
    /// Nodes whose agent has yet to report on the current spec.
    pending: BTreeSet<String>,
    /// How many nodes report each effective MTU (the status shows the lowest).
    mtus: BTreeMap<i32, usize>,
    /// The nodes of each L2 segment the agents report.
    segments: BTreeMap<Ipv4Net, BTreeSet<String>>,
}

/// Where one node's report counts.
enum Class<'a> {
    Silent(&'a str),
    Programmed,
    Failing(&'a str, &'a str),
    Pending,
}

fn class(view: Option<&SubnetView>) -> Class<'_> {
    // A silent agent's last report, good or bad, may no longer hold.
    if let Some(why) = view.and_then(|v| v.silent.as_deref()) {
        return Class::Silent(why);
    }
    match view.and_then(|v| v.programmed.as_ref()) {
        Some(p) if p.current && p.status => Class::Programmed,
        Some(p) if p.current => {
            let reason = if p.reason.is_empty() {
                "no reason given"
            } else {
                p.reason.as_str()
            };
            Class::Failing(reason, p.message.as_str())
        }
        // No report, or one about an older spec: the agent has yet to act.
        _ => Class::Pending,
    }
}

impl Tallies {
    /// Counts from scratch: `allocated` in name order, each with its report (if any).
    #[must_use]
    pub fn count<'a>(allocated: impl Iterator<Item = (&'a str, Option<&'a SubnetView>)>) -> Self {
        let mut tallies = Self::default();
        for (node, view) in allocated {
            tallies.add(node, view);
        }
        tallies
    }

    /// Counts an allocated node with its report (`None`: not reported yet). A node is added
    /// at most once; to change its report, [`Tallies::remove`] the old one first.
    pub fn add(&mut self, node: &str, view: Option<&SubnetView>) {
        self.allocated += 1;
        if let Some(mtu) = view.and_then(|v| v.effective_mtu) {
            *self.mtus.entry(mtu).or_default() += 1;
        }
        if let Some(prefix) = view.and_then(|v| v.underlay_prefix) {
            self.segments
                .entry(prefix)
                .or_default()
                .insert(node.to_owned());
        }
        match class(view) {
            Class::Silent(why) => {
                self.silent
                    .insert(node.to_owned(), format!("{node} ({why})"));
            }
            Class::Programmed => {
                self.programmed += 1;
                if let Some(message) = view.and_then(|v| v.bgp_down.as_ref()) {
                    self.bgp_down
                        .insert(node.to_owned(), format!("{node} ({})", quote(message)));
                }
            }
            Class::Failing(reason, message) => {
                let key = (reason.to_owned(), message.to_owned());
                self.failing.insert(node.to_owned(), key.clone());
                let group = self.failing_groups.entry(key.clone()).or_default();
                let first = group.first().cloned();
                group.insert(node.to_owned());
                if group.first() != first.as_ref() {
                    if let Some(first) = first {
                        self.group_order.remove(&(first, key.clone()));
                    }
                    self.group_order.insert((node.to_owned(), key));
                }
            }
            Class::Pending => {
                self.pending.insert(node.to_owned());
            }
        }
    }

    /// Takes back what [`Tallies::add`] counted for `node` with this same `view`.
    pub fn remove(&mut self, node: &str, view: Option<&SubnetView>) {
        self.allocated = self.allocated.saturating_sub(1);
        if let Some(mtu) = view.and_then(|v| v.effective_mtu)
            && let Some(count) = self.mtus.get_mut(&mtu)
        {
            *count -= 1;
            if *count == 0 {
                self.mtus.remove(&mtu);
            }
        }
        if let Some(prefix) = view.and_then(|v| v.underlay_prefix)
            && let Some(nodes) = self.segments.get_mut(&prefix)
        {
            nodes.remove(node);
            if nodes.is_empty() {
                self.segments.remove(&prefix);
            }
        }
        match class(view) {
            Class::Silent(_) => {
                self.silent.remove(node);
            }
            Class::Programmed => {
                self.programmed = self.programmed.saturating_sub(1);
                self.bgp_down.remove(node);
            }
            Class::Failing(..) => {
                let Some(key) = self.failing.remove(node) else {
                    return;
                };
                let Some(group) = self.failing_groups.get_mut(&key) else {
                    return;
                };
                let first = group.first().cloned();
                group.remove(node);
                if group.first() != first.as_ref() {
                    if let Some(first) = first {
                        self.group_order.remove(&(first, key.clone()));
                    }
                    if let Some(now) = group.first() {
                        self.group_order.insert((now.clone(), key));
                    } else {
                        self.failing_groups.remove(&key);
                    }
                }
            }
            Class::Pending => {
                self.pending.remove(node);
            }
        }
    }

    /// `a (Reason: message); b, c (Reason: message)`: the first [`MAX_LISTED`] groups of
    /// failing nodes, each naming its first [`MAX_LISTED`] nodes.
    fn failing_text(&self) -> String {
        let groups = self.group_order.iter().filter_map(|(_, key)| {
            let nodes = self.failing_groups.get(key)?;
            let listed = listing_of(nodes.iter().map(String::as_str), nodes.len(), ", ");
            let (reason, message) = key;
            Some(if message.is_empty() {
                format!("{listed} ({reason})")
            } else {
                format!("{listed} ({reason}: {})", quote(message))
            })
        });
        let shown: Vec<String> = groups.take(MAX_LISTED).collect();
        listing_of(
            shown.iter().map(String::as_str),
            self.group_order.len(),
            "; ",
        )
    }
}

/// The sentence saying the nodes are on several segments, when a mode needs one and the
/// agents report more (nodes that have not reported are not judged): `groups` holds the
/// nodes of each segment.
fn segments_sentence(mode: &str, groups: &BTreeMap<Ipv4Net, BTreeSet<String>>) -> Option<String> {
    if groups.len() < 2 {
        return None;
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(prefix, nodes)| {
            let listed = listing_of(nodes.iter().map(String::as_str), nodes.len(), ", ");
            format!("{prefix} ({listed})")
        })
        .collect();
    let (last, first) = parts.split_last()?;
    Some(format!(
        "{mode} needs every node on one L2 segment, but the agents report {}: {} and {last}. Pods on different segments cannot reach each other; use mode Overlay (or Routed with BGP), or select the nodes of one segment.",
        groups.len(),
        first.join(", ")
    ))
}

fn pool_text(plan: &ipam::Plan) -> String {
    let primary = match plan.pool {
        Some(pool) => format!(
            "cidr {} has room for {} node subnets of /{}",
            pool.cidr, plan.capacity, pool.prefix
        ),
        None => format!("cidr has room for {} node subnets", plan.capacity),
    };
    match plan.secondary_pool {
        Some(pool) => format!(
            "{primary}, secondaryCidr {} for {} of /{} ({} in use)",
            pool.cidr, plan.secondary_capacity, pool.prefix, plan.secondary_used
        ),
        None => primary,
    }
}

fn exhausted_sentence(plan: &ipam::Plan) -> String {
    let waiting = plan.exhausted.len();
    format!(
        "{}; {} for one: {}; use a larger cidr in a new PodNetwork or select fewer nodes.",
        pool_text(plan),
        plural(waiting, "node waits", "nodes wait"),
        listing(&plan.exhausted, ", ")
    )
}

fn claimed_sentence(claimed: &[(String, String)]) -> String {
    let mut by_network: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (node, network) in claimed {
        by_network.entry(network).or_default().push(node);
    }
    let sentences: Vec<String> = by_network
        .into_iter()
        .map(|(network, mut nodes)| {
            nodes.sort_unstable();
            let (verb, stay) = if nodes.len() == 1 {
                ("is", "it stays")
            } else {
                ("are", "they stay")
            };
            format!(
                "{} {verb} selected by PodNetwork `{network}` too, which was created earlier; {stay} in `{network}`.",
                listing(&nodes, ", ")
            )
        })
        .collect();
    sentences.join(" ")
}

fn without_address_sentence(nodes: &[String]) -> String {
    let (count, verbs) = if nodes.len() == 1 {
        ("1 node".to_owned(), "has no InternalIP address and gets")
    } else {
        (
            format!("{} nodes", nodes.len()),
            "have no InternalIP address and get",
        )
    };
    format!(
        "{count} {verbs} no subnet until the kubelet reports one: {}.",
        listing(nodes, ", ")
    )
}

fn lost_address_sentence(nodes: &[(String, std::net::IpAddr)]) -> String {
    match nodes {
        [(node, address)] => format!(
            "Node {node} reports no InternalIP address any more; its NodeSubnet keeps the last known address {address}, which its peers keep using. Make the kubelet report the node's address again (its --node-ip flag, or the node's addresses from the cloud provider)."
        ),
        _ => {
            let items: Vec<String> = nodes
                .iter()
                .map(|(node, address)| format!("{node} (keeps {address})"))
                .collect();
            format!(
                "{} nodes report no InternalIP address any more; their NodeSubnets keep the last known address, which their peers keep using: {}. Make the kubelets report the nodes' addresses again (their --node-ip flag, or the nodes' addresses from the cloud provider).",
                nodes.len(),
                listing(&items, ", ")
            )
        }
    }
}

fn bad_pod_cidr_sentence(bad: &[(String, String)]) -> String {
    let items: Vec<String> = bad
        .iter()
        .map(|(node, why)| format!("{node} ({why})"))
        .collect();
    format!(
        "{} a podCIDR this network cannot use: {}.",
        plural(bad.len(), "node has", "nodes have"),
        listing(&items, "; ")
    )
}

/// The condition for `causes`: `problem` status with the first cause's reason and every
/// cause's sentence, or the happy status, reason and message when there is no cause.
fn condition_from(
    causes: &[Cause],
    problem: ConditionStatus,
    happy: (ConditionStatus, &'static str, String),
) -> (ConditionStatus, &'static str, String) {
    match causes.first() {
        Some(first) => {
            let sentences: Vec<&str> = causes.iter().map(|c| c.sentence.as_str()).collect();
            (problem, first.reason, sentences.join(" "))
        }
        None => happy,
    }
}

/// The PodNetwork status for `input`, with conditions merged into `previous.conditions`
/// (conditions of other types are kept). `now` stamps conditions whose status changes.
///
/// Counts the reports from scratch, O(N): the full re-plan's path. The incremental path
/// keeps its [`Tallies`] and calls [`rollup_tallied`].
#[must_use]
pub fn rollup(input: &Input, previous: &PodNetworkStatus, now: Time) -> PodNetworkStatus {
    let allocated: BTreeSet<&str> = input.plan.allocations().map(|a| a.node.as_str()).collect();
    let mut views: BTreeMap<&str, &SubnetView> = BTreeMap::new();
    for view in input
        .subnets
        .iter()
        .filter(|v| allocated.contains(v.node.as_str()))
    {
        views.entry(view.node.as_str()).or_insert(view);
    }
    let tallies = Tallies::count(
        allocated
            .into_iter()
            .map(|node| (node, views.get(node).copied())),
    );
    let mut segments: BTreeMap<Ipv4Net, BTreeSet<String>> = BTreeMap::new();
    for view in input.subnets {
        if let Some(prefix) = view.underlay_prefix {
            segments
                .entry(prefix)
                .or_default()
                .insert(view.node.clone());
        }
    }
    let allocated = input.plan.allocations().count();
    finish(input, allocated, &tallies, &segments, previous, now)
}

/// [`rollup`] for a caller that keeps the allocated nodes' reports tallied itself (the
/// incremental path, [`crate::incremental`]): `input.plan` then only supplies the pool, the
/// counts and the node lists (its allocation lists may be empty), and `input.subnets` is not
/// read. Reads only what the messages show, whatever the number of nodes; gives the same
/// status as [`rollup`] over the same nodes and reports.
#[must_use]
pub fn rollup_tallied(
    input: &Input,
    tallies: &Tallies,
    previous: &PodNetworkStatus,
    now: Time,
) -> PodNetworkStatus {
    finish(
        input,
        tallies.allocated,
        tallies,
        &tallies.segments,
        previous,
        now,
    )
}

fn finish(
    input: &Input,
    allocated: usize,
    reports: &Tallies,
    segments: &BTreeMap<Ipv4Net, BTreeSet<String>>,
    previous: &PodNetworkStatus,
    now: Time,
) -> PodNetworkStatus {
    let plan = input.plan;
    let segments = input
        .one_segment
        .and_then(|mode| segments_sentence(mode, segments));
    // Every node handed to IPAM lands in exactly one of these.
    let owned =
        allocated + plan.exhausted.len() + plan.missing_address.len() + plan.bad_pod_cidr.len();
    let nodes = if owned == 1 { "node" } else { "nodes" };
    let of_owned = |count: usize| format!("{count} of {owned} {nodes}");

    let failing = (!reports.failing.is_empty()).then(|| {
        format!(
            "{} failed to program: {}.",
            of_owned(reports.failing.len()),
            reports.failing_text()
        )
    });
    let bgp_down = (!reports.bgp_down.is_empty()).then(|| {
        format!(
            "BGP sessions are down on {}: {}.",
            of_owned(reports.bgp_down.len()),
            listing_of(
                reports.bgp_down.values().map(String::as_str),
                reports.bgp_down.len(),
                "; "
            )
        )
    });
    let silent = (!reports.silent.is_empty()).then(|| {
        format!(
            "{} stopped reporting: {}. What they reported last may no longer hold; check the causeway-node-agent pod on each (kubectl -n causeway-system get pods -o wide --field-selector spec.nodeName=NODE).",
            of_owned(reports.silent.len()),
            listing_of(
                reports.silent.values().map(String::as_str),
                reports.silent.len(),
                "; "
            )
        )
    });
    let without_address =
        (!plan.missing_address.is_empty()).then(|| without_address_sentence(&plan.missing_address));
    // Not a reason to leave Ready: the node keeps its subnet and peers their routes to it.
    let lost_address =
        (!plan.lost_address.is_empty()).then(|| lost_address_sentence(&plan.lost_address));
    let claimed =
        (!input.claimed_elsewhere.is_empty()).then(|| claimed_sentence(input.claimed_elsewhere));
    let bad_pod_cidr =
        (!plan.bad_pod_cidr.is_empty()).then(|| bad_pod_cidr_sentence(&plan.bad_pod_cidr));

    // Ready: the first blocking cause, in order of importance, gives the reason.
    let mut blocking: Vec<Cause> = Vec::new();
    if let Some(why) = &input.invalid_spec {
        blocking.push(cause(
            reasons::INVALID_SPEC,
            format!("The spec cannot be used: {why}."),
        ));
    }
    if let Some((reason, why)) = &input.unusable {
        blocking.push(cause(reason, why.clone()));
    }
    if let Some(earlier) = input.overlap {
        let cidr = plan
            .pool
            .map_or_else(|| "cidr".to_owned(), |p| format!("cidr {}", p.cidr));
        blocking.push(cause(
            reasons::CIDR_OVERLAP,
            format!(
                "{cidr} overlaps PodNetwork `{earlier}`, created earlier; change cidr or delete one of them. No subnets are allocated while it overlaps."
            ),
        ));
    }
    if blocking.is_empty() && input.selected == 0 {
        blocking.push(cause(
            reasons::NO_NODES_SELECTED,
            "No node matches spec.nodeSelector; check the selector against the node labels (kubectl get nodes --show-labels).".to_owned(),
        ));
    }
    if blocking.is_empty() && owned == 0 {
        blocking.push(cause(
            reasons::NODES_CLAIMED_BY_OTHER_NETWORK,
            format!(
                "Every selected node belongs to another PodNetwork. {}",
                claimed.clone().unwrap_or_default()
            ),
        ));
    }
    if blocking.is_empty() {
        if !plan.exhausted.is_empty() {
            blocking.push(cause(reasons::SUBNETS_EXHAUSTED, exhausted_sentence(plan)));
        }
        if let Some(sentence) = &failing {
            blocking.push(cause(reasons::NODES_FAILING, sentence.clone()));
        }
        if let Some(sentence) = &segments {
            blocking.push(cause(reasons::NODES_NOT_ON_ONE_SEGMENT, sentence.clone()));
        }
        if let Some(sentence) = &bgp_down {
            blocking.push(cause(reasons::BGP_SESSIONS_DOWN, sentence.clone()));
        }
        if let Some(sentence) = &silent {
            blocking.push(cause(reasons::AGENT_NOT_REPORTING, sentence.clone()));
        }
        if !reports.pending.is_empty() {
            blocking.push(cause(
                reasons::NODES_PENDING,
                format!(
                    "{} not programmed yet: {} (waiting for their agents).",
                    of_owned(reports.pending.len()),
                    listing_of(
                        reports.pending.iter().map(String::as_str),
                        reports.pending.len(),
                        ", "
                    )
                ),
            ));
        }
        if let Some(sentence) = &without_address {
            blocking.push(cause(reasons::NODES_WITHOUT_ADDRESS, sentence.clone()));
        }
        if let Some(sentence) = &bad_pod_cidr {
            blocking.push(cause(reasons::INVALID_NODE_POD_CIDR, sentence.clone()));
        }
    }
    let ready = condition_from(
        &blocking,
        ConditionStatus::False,
        (
            ConditionStatus::True,
            reasons::ALL_NODES_PROGRAMMED,
            format!("{} programmed.", of_owned(reports.programmed)),
        ),
    );

    // Degraded: every cause present, the most severe first.
    let degraded_causes: Vec<Cause> = [
        (reasons::NODES_NOT_ON_ONE_SEGMENT, segments),
        (reasons::NODES_FAILING, failing),
        (reasons::BGP_SESSIONS_DOWN, bgp_down),
        (reasons::AGENT_NOT_REPORTING, silent),
        (reasons::NODES_WITHOUT_ADDRESS, without_address),
        (reasons::NODES_LOST_ADDRESS, lost_address),
        (reasons::NODES_CLAIMED_BY_OTHER_NETWORK, claimed),
        (reasons::INVALID_NODE_POD_CIDR, bad_pod_cidr),
    ]
    .into_iter()
    .filter_map(|(reason, sentence)| sentence.map(|s| cause(reason, s)))
    .collect();
    let degraded = condition_from(
        &degraded_causes,
        ConditionStatus::True,
        (
            ConditionStatus::False,
            reasons::AS_EXPECTED,
            "No node is failing, silent, off the network's segment, lacks an address, has an unusable podCIDR or is claimed by another PodNetwork.".to_owned(),
        ),
    );

    let free = plan.capacity.saturating_sub(u128::from(plan.used));
    let secondary_free = plan.secondary_pool.map(|_| {
        plan.secondary_capacity
            .saturating_sub(u128::from(plan.secondary_used))
    });
    let exhausted = if plan.exhausted.is_empty() {
        (
            ConditionStatus::False,
            reasons::AS_EXPECTED,
            match secondary_free {
                None => format!("{free} of {} node subnets free.", plan.capacity),
                Some(second) => format!(
                    "{free} of {} node subnets of cidr free, {second} of {} of secondaryCidr.",
                    plan.capacity, plan.secondary_capacity
                ),
            },
        )
    } else {
        (
            ConditionStatus::True,
            reasons::POOL_EXHAUSTED,
            exhausted_sentence(plan),
        )
    };

    let mut conditions = previous.conditions.clone();
    for (type_, (status, reason, message)) in [
        (types::READY, ready),
        (types::DEGRADED, degraded),
        (types::SUBNETS_EXHAUSTED, exhausted),
    ] {
        set_condition(
            &mut conditions,
            new_condition(
                type_,
                status,
                reason,
                message,
                input.generation,
                now.clone(),
            ),
        );
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    PodNetworkStatus {
        conditions,
        observed_generation: input.generation,
        selected_nodes: count(input.selected),
        allocated_nodes: count(allocated),
        programmed_nodes: count(reports.programmed),
        subnets_allocated: i64::try_from(plan.used).unwrap_or(i64::MAX),
        subnets_free: i64::try_from(free).unwrap_or(i64::MAX),
        ip_families: [plan.pool, plan.secondary_pool]
            .into_iter()
            .flatten()
            .map(|p| causeway_crds::cidr::Family::of(&p.cidr).name().to_owned())
            .collect(),
        secondary_subnets_allocated: plan
            .secondary_pool
            .map(|_| i64::try_from(plan.secondary_used).unwrap_or(i64::MAX)),
        secondary_subnets_free: secondary_free.map(|f| i64::try_from(f).unwrap_or(i64::MAX)),
        effective_mtu: reports.mtus.keys().next().copied(),
    }
}

/// Whether `b` differs from `a` only in what moves with every node joining or reporting: the
/// counts, and the conditions' messages (which quote them), not any condition's status or
/// reason, the generation, the families or the MTU.
pub fn counts_only(a: &PodNetworkStatus, b: &PodNetworkStatus) -> bool {
    let without_counts = |s: &PodNetworkStatus| {
        let mut s = s.clone();
        s.selected_nodes = 0;
        s.allocated_nodes = 0;
        s.programmed_nodes = 0;
        s.subnets_allocated = 0;
        s.subnets_free = 0;
        s.secondary_subnets_allocated = s.secondary_subnets_allocated.map(|_| 0);
        s.secondary_subnets_free = s.secondary_subnets_free.map(|_| 0);
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    };
    a != b && without_counts(a) == without_counts(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::conditions::find_condition;
    use ipnet::Ipv4Net;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use std::net::Ipv4Addr;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).expect("valid test time"))
    }

    #[test]
    fn counts_and_the_messages_quoting_them_are_counts_only_a_condition_change_is_not() {
        let ready = |status, reason, message: &str| {
            new_condition(types::READY, status, reason, message, Some(1), at(1))
        };
        let mut a = PodNetworkStatus {
            conditions: vec![ready(
                ConditionStatus::False,
                "NodesPending",
                "3 of 4 nodes",
            )],
            observed_generation: Some(1),
            selected_nodes: 4,
            allocated_nodes: 4,
            programmed_nodes: 3,
            subnets_allocated: 4,
            subnets_free: 252,
            ..PodNetworkStatus::default()
        };
        assert!(!counts_only(&a, &a), "no change is not a count change");
        let mut b = a.clone();
        b.selected_nodes = 5;
        b.allocated_nodes = 5;
        b.subnets_allocated = 5;
        b.subnets_free = 251;
        b.conditions[0].message = "3 of 5 nodes".into();
        assert!(counts_only(&a, &b));
        let mut c = b.clone();
        c.conditions = vec![ready(ConditionStatus::True, "AllNodesProgrammed", "5 of 5")];
        c.programmed_nodes = 5;
        assert!(!counts_only(&b, &c), "Ready turned True");
        let mut d = b.clone();
        d.observed_generation = Some(2);
        assert!(!counts_only(&b, &d), "a new generation");
        a.effective_mtu = Some(1450);
        assert!(!counts_only(&a, &b), "the MTU moved");
    }

    fn pool() -> ipam::Pool {
        ipam::Pool {
            cidr: "10.1.0.0/16".parse().expect("test CIDR"),
            prefix: 24,
        }
    }

    fn allocation(node: &str, index: u8) -> ipam::Allocation {
        let cidr = Ipv4Net::new(Ipv4Addr::new(10, 1, index, 0), 24).expect("test subnet");
        ipam::Allocation {
            object: ipam::object_name("pods", cidr),
            node: node.to_owned(),
            cidr: cidr.into(),
            node_address: Ipv4Addr::new(192, 168, 1, index).into(),
            secondary_cidr: None,
            secondary_node_address: None,
        }
    }

    fn names(prefix: &str, count: usize) -> Vec<String> {
        (0..count).map(|i| format!("{prefix}-{i}")).collect()
    }

    /// A plan in which `allocated` nodes hold subnets (the first ones kept, the last created).
    fn plan(allocated: &[String], capacity: u128) -> ipam::Plan {
        let mut plan = ipam::Plan {
            pool: Some(pool()),
            capacity,
            ..ipam::Plan::default()
        };
        for (i, node) in allocated.iter().enumerate() {
            plan.keep
                .push(allocation(node, u8::try_from(i).expect("few test nodes")));
        }
        plan.used = u64::try_from(allocated.len()).expect("few test nodes");
        plan
    }

    fn programmed(node: &str) -> SubnetView {
        report(node, true, "Programmed", "", true)
    }

    fn report(node: &str, status: bool, reason: &str, message: &str, current: bool) -> SubnetView {
        SubnetView {
            node: node.to_owned(),
            programmed: Some(ProgrammedView {
                status,
                reason: reason.to_owned(),
                message: message.to_owned(),
                current,
            }),
            effective_mtu: Some(1450),
            silent: None,
            underlay_prefix: None,
            bgp_down: None,
        }
    }

    /// Everything the status is computed from, owned, so cases can tweak it.
    #[derive(Clone)]
    struct World {
        invalid_spec: Option<String>,
        unusable: Option<(&'static str, String)>,
        overlap: Option<&'static str>,
        selected: usize,
        claimed_elsewhere: Vec<(String, String)>,
        plan: ipam::Plan,
        subnets: Vec<SubnetView>,
        one_segment: Option<&'static str>,
    }

    impl World {
        /// Three nodes, all allocated and programmed.
        fn healthy() -> Self {
            let nodes = names("node", 3);
            Self {
                invalid_spec: None,
                unusable: None,
                overlap: None,
                selected: 3,
                claimed_elsewhere: Vec::new(),
                plan: plan(&nodes, 256),
                subnets: nodes.iter().map(|n| programmed(n)).collect(),
                one_segment: None,
            }
        }

        fn status(&self, previous: &PodNetworkStatus, now: i64) -> PodNetworkStatus {
            rollup(
                &Input {
                    generation: Some(7),
                    invalid_spec: self.invalid_spec.clone(),
                    unusable: self.unusable.clone(),
                    overlap: self.overlap,
                    selected: self.selected,
                    claimed_elsewhere: &self.claimed_elsewhere,
                    plan: &self.plan,
                    subnets: &self.subnets,
                    one_segment: self.one_segment,
                },
                previous,
                at(now),
            )
        }
    }

    fn get<'a>(status: &'a PodNetworkStatus, type_: &str) -> &'a Condition {
        find_condition(&status.conditions, type_).expect("condition present")
    }

    /// `(status, reason, words the message must contain)`.
    type Want = (&'static str, &'static str, &'static [&'static str]);

    struct Case {
        name: &'static str,
        world: World,
        ready: Want,
        degraded: Want,
        exhausted: Want,
    }

    fn cases() -> Vec<Case> {
        let as_expected: Want = ("False", "AsExpected", &[]);
        let h = World::healthy;
        vec![
            Case {
                name: "every node programmed is ready",
                world: h(),
                ready: ("True", "AllNodesProgrammed", &["3 of 3 nodes programmed."]),
                degraded: as_expected,
                exhausted: ("False", "AsExpected", &["253 of 256 node subnets free."]),
            },
            Case {
                name: "an unusable spec is reported first, whatever else is wrong",
                world: World {
                    invalid_spec: Some("parse CIDR \"x\": not a CIDR".into()),
                    selected: 0,
                    plan: ipam::Plan::default(),
                    subnets: Vec::new(),
                    ..h()
                },
                ready: (
                    "False",
                    "InvalidSpec",
                    &["The spec cannot be used: parse CIDR \"x\": not a CIDR."],
                ),
                degraded: as_expected,
                exhausted: as_expected,
            },
            Case {
                name: "an overlapping cidr names the earlier network and what to do",
                world: World {
                    overlap: Some("a"),
                    plan: ipam::Plan {
                        pool: Some(pool()),
                        capacity: 256,
                        ..ipam::Plan::default()
                    },
                    subnets: Vec::new(),
                    ..h()
                },
                ready: (
                    "False",
                    "CidrOverlap",
                    &[
                        "cidr 10.1.0.0/16 overlaps PodNetwork `a`, created earlier; change cidr or delete one of them.",
                        "No subnets are allocated while it overlaps.",
                    ],
                ),
                degraded: as_expected,
                exhausted: as_expected,
            },
            Case {
                name: "a selector matching no node is not ready",
                world: World {
                    selected: 0,
                    plan: plan(&[], 256),
                    subnets: Vec::new(),
                    ..h()
                },
                ready: (
                    "False",
                    "NoNodesSelected",
                    &["No node matches spec.nodeSelector"],
                ),
                degraded: as_expected,
                exhausted: as_expected,
            },
            Case {
                name: "selecting only nodes of earlier networks is not ready and is degraded",
                world: World {
                    selected: 2,
                    claimed_elsewhere: vec![
                        ("node-y".into(), "b".into()),
                        ("node-x".into(), "b".into()),
                    ],
                    plan: plan(&[], 256),
                    subnets: Vec::new(),
                    ..h()
                },
                ready: (
                    "False",
                    "NodesClaimedByOtherNetwork",
                    &["Every selected node belongs to another PodNetwork."],
                ),
                degraded: (
                    "True",
                    "NodesClaimedByOtherNetwork",
                    &[
                        "node-x, node-y are selected by PodNetwork `b` too, which was created earlier; they stay in `b`.",
                    ],
                ),
                exhausted: as_expected,
            },
            Case {
                name: "a full pool names the waiting nodes and the way out",
                world: World {
                    selected: 5,
                    plan: ipam::Plan {
                        exhausted: vec!["node-3".into(), "node-4".into()],
                        ..plan(&names("node", 3), 3)
                    },
                    ..h()
                },
                ready: (
                    "False",
                    "SubnetsExhausted",
                    &["2 nodes wait for one: node-3, node-4"],
                ),
                degraded: as_expected,
                exhausted: (
                    "True",
                    "PoolExhausted",
                    &[
                        "cidr 10.1.0.0/16 has room for 3 node subnets of /24; 2 nodes wait for one: node-3, node-4; use a larger cidr in a new PodNetwork or select fewer nodes.",
                    ],
                ),
            },
            Case {
                name: "a failing agent names the node and its reason",
                world: World {
                    subnets: vec![
                        programmed("node-0"),
                        report(
                            "node-1",
                            false,
                            "ApplyFailed",
                            "add route: no such device",
                            true,
                        ),
                        programmed("node-2"),
                    ],
                    ..h()
                },
                ready: (
                    "False",
                    "NodesFailing",
                    &[
                        "1 of 3 nodes failed to program: node-1 (ApplyFailed: add route: no such device).",
                    ],
                ),
                degraded: (
                    "True",
                    "NodesFailing",
                    &["node-1 (ApplyFailed: add route: no such device)"],
                ),
                exhausted: as_expected,
            },
            Case {
                name: "nodes failing alike are listed once with their common reason",
                world: World {
                    subnets: vec![
                        report("node-0", false, "InvalidConfiguration", "spec.secondaryCidr ...", true),
                        report("node-1", false, "ApplyFailed", "add route: no such device", true),
                        report("node-2", false, "InvalidConfiguration", "spec.secondaryCidr ...", true),
                    ],
                    ..h()
                },
                ready: (
                    "False",
                    "NodesFailing",
                    &["3 of 3 nodes failed to program: node-0, node-2 (InvalidConfiguration: spec.secondaryCidr ...); node-1 (ApplyFailed: add route: no such device)."],
                ),
                degraded: ("True", "NodesFailing", &["3 of 3 nodes failed"]),
                exhausted: as_expected,
            },
            Case {
                name: "failing comes before pending and both are told",
                world: World {
                    subnets: vec![
                        report("node-0", false, "ApplyFailed", "", true),
                        report("node-1", true, "Programmed", "", false),
                    ],
                    ..h()
                },
                ready: (
                    "False",
                    "NodesFailing",
                    &[
                        "node-0 (ApplyFailed).",
                        "2 of 3 nodes not programmed yet: node-1, node-2 (waiting for their agents).",
                    ],
                ),
                degraded: ("True", "NodesFailing", &["1 of 3 nodes failed"]),
                exhausted: as_expected,
            },
            Case {
                name: "programmed nodes with BGP sessions down are not ready, and say why",
                world: World {
                    subnets: vec![
                        programmed("node-0"),
                        SubnetView {
                            bgp_down: Some("1 of 1 BGP sessions not Established: 192.168.60.1 (AS 64500) is Idle".into()),
                            ..programmed("node-1")
                        },
                        programmed("node-2"),
                    ],
                    ..h()
                },
                ready: (
                    "False",
                    "BgpSessionsDown",
                    &["BGP sessions are down on 1 of 3 nodes: node-1 (1 of 1 BGP sessions not Established: 192.168.60.1 (AS 64500) is Idle)."],
                ),
                degraded: ("True", "BgpSessionsDown", &["BGP sessions are down on 1 of 3 nodes"]),
                exhausted: as_expected,
            },
            Case {
                name: "flat nodes reported on two segments: not ready, degraded, with the groups",
                world: World {
                    one_segment: Some("Flat mode"),
                    subnets: ["node-0", "node-1", "node-2"]
                        .iter()
                        .zip(["192.168.50.0/24", "192.168.60.0/24", "192.168.50.0/24"])
                        .map(|(n, p)| SubnetView {
                            underlay_prefix: Some(p.parse().expect("prefix")),
                            ..programmed(n)
                        })
                        .collect(),
                    ..h()
                },
                ready: (
                    "False",
                    "NodesNotOnOneSegment",
                    &[
                        "Flat mode needs every node on one L2 segment, but the agents report 2: 192.168.50.0/24 (node-0, node-2) and 192.168.60.0/24 (node-1).",
                        "use mode Overlay",
                    ],
                ),
                degraded: ("True", "NodesNotOnOneSegment", &["report 2"]),
                exhausted: as_expected,
            },
            Case {
                name: "one segment, or a mode that does not need one, is fine",
                world: World {
                    one_segment: Some("Flat mode"),
                    subnets: ["node-0", "node-1", "node-2"]
                        .iter()
                        .map(|n| SubnetView {
                            underlay_prefix: Some("192.168.50.0/24".parse().expect("prefix")),
                            ..programmed(n)
                        })
                        .collect(),
                    ..h()
                },
                ready: ("True", "AllNodesProgrammed", &[]),
                degraded: as_expected,
                exhausted: as_expected,
            },
            Case {
                name: "a silent agent's last report no longer counts: not ready, degraded",
                world: World {
                    subnets: vec![
                        programmed("node-0"),
                        SubnetView {
                            silent: Some("no heartbeat for more than 4s".into()),
                            ..programmed("node-1")
                        },
                        SubnetView {
                            silent: Some("no heartbeat for more than 40s".into()),
                            ..report("node-2", false, "ApplyFailed", "", true)
                        },
                    ],
                    ..h()
                },
                ready: (
                    "False",
                    "AgentNotReporting",
                    &[
                        "2 of 3 nodes stopped reporting: node-1 (no heartbeat for more than 4s); node-2 (no heartbeat for more than 40s).",
                        "check the causeway-node-agent pod on each",
                    ],
                ),
                degraded: (
                    "True",
                    "AgentNotReporting",
                    &["2 of 3 nodes stopped reporting"],
                ),
                exhausted: as_expected,
            },
            Case {
                name: "a report about an older generation counts as pending, even a failure",
                world: World {
                    subnets: vec![
                        programmed("node-0"),
                        programmed("node-1"),
                        report("node-2", false, "ApplyFailed", "old", false),
                    ],
                    ..h()
                },
                ready: (
                    "False",
                    "NodesPending",
                    &["1 of 3 nodes not programmed yet: node-2"],
                ),
                degraded: as_expected,
                exhausted: as_expected,
            },
            Case {
                name: "a single node waiting for its agent reads as one of one node",
                world: World {
                    selected: 1,
                    plan: plan(&names("node", 1), 256),
                    subnets: Vec::new(),
                    ..h()
                },
                ready: (
                    "False",
                    "NodesPending",
                    &["1 of 1 node not programmed yet: node-0 (waiting for their agents)."],
                ),
                degraded: as_expected,
                exhausted: as_expected,
            },
            Case {
                name: "a node without InternalIP blocks readiness and degrades",
                world: World {
                    selected: 4,
                    plan: ipam::Plan {
                        missing_address: vec!["node-9".into()],
                        ..plan(&names("node", 3), 256)
                    },
                    ..h()
                },
                ready: (
                    "False",
                    "NodesWithoutAddress",
                    &["1 node has no InternalIP address"],
                ),
                degraded: (
                    "True",
                    "NodesWithoutAddress",
                    &[
                        "1 node has no InternalIP address and gets no subnet until the kubelet reports one: node-9.",
                    ],
                ),
                exhausted: as_expected,
            },
            Case {
                name: "a node that lost its InternalIP keeps its subnet: degraded, still ready",
                world: World {
                    plan: ipam::Plan {
                        lost_address: vec![("node-1".into(), Ipv4Addr::new(192, 168, 1, 1).into())],
                        ..plan(&names("node", 3), 256)
                    },
                    ..h()
                },
                ready: ("True", "AllNodesProgrammed", &["3 of 3 nodes programmed."]),
                degraded: (
                    "True",
                    "NodesLostAddress",
                    &[
                        "Node node-1 reports no InternalIP address any more; its NodeSubnet keeps the last known address 192.168.1.1, which its peers keep using.",
                        "--node-ip",
                    ],
                ),
                exhausted: as_expected,
            },
            Case {
                name: "several nodes that lost their InternalIP are listed with their addresses",
                world: World {
                    plan: ipam::Plan {
                        lost_address: vec![
                            ("node-0".into(), Ipv4Addr::new(192, 168, 1, 0).into()),
                            ("node-2".into(), Ipv4Addr::new(192, 168, 1, 2).into()),
                        ],
                        ..plan(&names("node", 3), 256)
                    },
                    ..h()
                },
                ready: ("True", "AllNodesProgrammed", &[]),
                degraded: (
                    "True",
                    "NodesLostAddress",
                    &[
                        "2 nodes report no InternalIP address any more; their NodeSubnets keep the last known address, which their peers keep using: node-0 (keeps 192.168.1.0), node-2 (keeps 192.168.1.2).",
                        "--node-ip",
                    ],
                ),
                exhausted: as_expected,
            },
            Case {
                name: "an unusable podCIDR blocks readiness and degrades with the reason",
                world: World {
                    selected: 4,
                    plan: ipam::Plan {
                        bad_pod_cidr: vec![(
                            "node-9".into(),
                            "podCIDR 10.9.0.0/24 is outside cidr 10.1.0.0/16".into(),
                        )],
                        ..plan(&names("node", 3), 256)
                    },
                    ..h()
                },
                ready: ("False", "InvalidNodePodCidr", &["1 node has a podCIDR"]),
                degraded: (
                    "True",
                    "InvalidNodePodCidr",
                    &["node-9 (podCIDR 10.9.0.0/24 is outside cidr 10.1.0.0/16)."],
                ),
                exhausted: as_expected,
            },
            Case {
                name: "a node claimed by an earlier network degrades but does not block readiness",
                world: World {
                    selected: 4,
                    claimed_elsewhere: vec![("node-x".into(), "b".into())],
                    ..h()
                },
                ready: ("True", "AllNodesProgrammed", &["3 of 3 nodes programmed."]),
                degraded: (
                    "True",
                    "NodesClaimedByOtherNetwork",
                    &[
                        "node-x is selected by PodNetwork `b` too, which was created earlier; it stays in `b`.",
                    ],
                ),
                exhausted: as_expected,
            },
            Case {
                name: "degraded tells every cause, the most severe first",
                world: World {
                    selected: 6,
                    claimed_elsewhere: vec![("node-x".into(), "b".into())],
                    plan: ipam::Plan {
                        missing_address: vec!["node-8".into()],
                        lost_address: vec![("node-1".into(), Ipv4Addr::new(192, 168, 1, 1).into())],
                        bad_pod_cidr: vec![(
                            "node-9".into(),
                            "the node has no IPv4 spec.podCIDR".into(),
                        )],
                        ..plan(&names("node", 3), 256)
                    },
                    subnets: vec![
                        programmed("node-0"),
                        programmed("node-1"),
                        report("node-2", false, "ApplyFailed", "boom", true),
                    ],
                    ..h()
                },
                ready: (
                    "False",
                    "NodesFailing",
                    &["1 of 5 nodes failed", "node-8", "node-9"],
                ),
                degraded: (
                    "True",
                    "NodesFailing",
                    &[
                        "node-2 (ApplyFailed: boom).",
                        "node-8.",
                        "Node node-1 reports no InternalIP",
                        "node-x is selected",
                        "node-9 (the node",
                    ],
                ),
                exhausted: as_expected,
            },
        ]
    }

    #[test]
    fn each_situation_gets_its_reason_and_a_message_that_explains_it() {
        for case in cases() {
            let status = case.world.status(&PodNetworkStatus::default(), 100);
            for (type_, (want_status, want_reason, want_words)) in [
                (types::READY, case.ready),
                (types::DEGRADED, case.degraded),
                (types::SUBNETS_EXHAUSTED, case.exhausted),
            ] {
                let got = get(&status, type_);
                let context = format!("{}: {type_}: {}", case.name, got.message);
                assert_eq!(got.status, want_status, "{context}");
                assert_eq!(got.reason, want_reason, "{context}");
                for words in want_words {
                    assert!(got.message.contains(words), "{context}\nwant: {words}");
                }
                assert_eq!(got.observed_generation, Some(7), "{context}");
                assert_eq!(got.last_transition_time, at(100), "{context}");
            }
        }
    }

    #[test]
    fn degraded_lists_causes_in_order_of_severity() {
        let world = cases()
            .into_iter()
            .find(|c| c.name.starts_with("degraded tells every cause"))
            .expect("case exists")
            .world;
        let status = world.status(&PodNetworkStatus::default(), 1);
        let message = &get(&status, types::DEGRADED).message;
        let position = |words: &str| message.find(words).expect(words);
        assert!(position("failed to program") < position("no InternalIP"));
        assert!(position("has no InternalIP") < position("reports no InternalIP"));
        assert!(position("reports no InternalIP") < position("selected by PodNetwork"));
        assert!(position("selected by PodNetwork") < position("cannot use"));
    }

    #[test]
    fn counts_summarise_the_plan_and_the_reports() {
        let world = World {
            selected: 5,
            claimed_elsewhere: vec![("node-x".into(), "b".into())],
            plan: ipam::Plan {
                missing_address: vec!["node-9".into()],
                ..plan(&names("node", 3), 16)
            },
            subnets: vec![
                programmed("node-0"),
                SubnetView {
                    effective_mtu: Some(1400),
                    ..report("node-1", true, "Programmed", "", false)
                },
                SubnetView {
                    effective_mtu: Some(1200),
                    ..programmed("node-not-allocated")
                },
            ],
            ..World::healthy()
        };
        let status = world.status(&PodNetworkStatus::default(), 1);
        assert_eq!(status.observed_generation, Some(7));
        assert_eq!(status.selected_nodes, 5);
        assert_eq!(status.allocated_nodes, 3);
        assert_eq!(status.programmed_nodes, 1);
        assert_eq!(status.subnets_allocated, 3);
        assert_eq!(status.subnets_free, 13);
        assert_eq!(
            status.effective_mtu,
            Some(1400),
            "the smallest MTU an allocated node reports"
        );
    }

    #[test]
    fn last_transition_time_moves_only_when_a_status_changes() {
        let pending = World {
            subnets: vec![programmed("node-0")],
            ..World::healthy()
        };
        let less_pending = World {
            subnets: vec![programmed("node-0"), programmed("node-1")],
            ..World::healthy()
        };
        let first = pending.status(&PodNetworkStatus::default(), 100);
        let cases: [(&str, &World, &PodNetworkStatus, i64, &str, i64); 4] = [
            (
                "an identical roll-up keeps every time",
                &pending,
                &first,
                200,
                "False",
                100,
            ),
            (
                "a new message with the same status keeps the time",
                &less_pending,
                &first,
                200,
                "False",
                100,
            ),
            (
                "a status flip takes the new time",
                &World::healthy(),
                &first,
                300,
                "True",
                300,
            ),
            (
                "the first roll-up stamps now",
                &pending,
                &PodNetworkStatus::default(),
                400,
                "False",
                400,
            ),
        ];
        for (name, world, previous, now, want_status, want_time) in cases {
            let status = world.status(previous, now);
            let ready = get(&status, types::READY);
            assert_eq!(ready.status, want_status, "{name}");
            assert_eq!(ready.last_transition_time, at(want_time), "{name}");
            let degraded = get(&status, types::DEGRADED);
            let degraded_since = if previous.conditions.is_empty() {
                now
            } else {
                100
            };
            assert_eq!(
                degraded.last_transition_time,
                at(degraded_since),
                "{name}: Degraded stayed False"
            );
        }
        assert_eq!(
            pending.status(&first, 999),
            first,
            "an unchanged world rolls up to an equal status, so the controller skips the write"
        );
    }

    #[test]
    fn conditions_of_other_types_survive_the_roll_up() {
        let mut previous = PodNetworkStatus::default();
        previous.conditions.push(new_condition(
            "Custom",
            ConditionStatus::True,
            "Because",
            "kept",
            Some(1),
            at(5),
        ));
        let status = World::healthy().status(&previous, 10);
        assert_eq!(get(&status, "Custom").message, "kept");
        assert_eq!(status.conditions.len(), 4);
    }

    #[test]
    fn messages_name_at_most_five_nodes_then_say_how_many_more() {
        let nodes = names("node", 8);
        let world = World {
            selected: 8,
            plan: plan(&nodes, 256),
            subnets: Vec::new(),
            ..World::healthy()
        };
        let status = world.status(&PodNetworkStatus::default(), 1);
        assert_eq!(
            get(&status, types::READY).message,
            "8 of 8 nodes not programmed yet: node-0, node-1, node-2, node-3, node-4 and 3 more (waiting for their agents)."
        );
        let cases: &[(usize, &str)] = &[
            (0, ""),
            (1, "n-0"),
            (5, "n-0, n-1, n-2, n-3, n-4"),
            (6, "n-0, n-1, n-2, n-3, n-4 and 1 more"),
            (5_000, "n-0, n-1, n-2, n-3, n-4 and 4995 more"),
        ];
        for (count, want) in cases {
            assert_eq!(listing(&names("n", *count), ", "), *want, "{count} names");
        }
    }

    #[test]
    fn long_agent_messages_are_shortened_in_the_roll_up() {
        let world = World {
            subnets: vec![
                programmed("node-0"),
                programmed("node-1"),
                report("node-2", false, "ApplyFailed", &"x".repeat(5_000), true),
            ],
            ..World::healthy()
        };
        let status = world.status(&PodNetworkStatus::default(), 1);
        let message = &get(&status, types::READY).message;
        assert!(
            message.contains(&format!("{}…)", "x".repeat(MAX_QUOTED))),
            "{message}"
        );
        assert!(message.len() < 400, "{} chars", message.len());
    }

    /// A report drawn from a few of each kind, so that groups, segments and MTUs collide.
    fn any_view(node: String) -> impl proptest::strategy::Strategy<Value = Option<SubnetView>> {
        use proptest::prelude::*;
        let reasons = prop::sample::select(vec!["", "ApplyFailed", "NoVxlan"]);
        let messages = prop::sample::select(vec!["", "link busy", "module missing"]);
        let mtus = prop::option::of(prop::sample::select(vec![1400, 1450]));
        let prefixes = prop::option::of(prop::sample::select(vec![
            "192.168.1.0/24",
            "192.168.2.0/24",
        ]));
        let silent = prop::option::weighted(0.15, Just("no heartbeat for 60s"));
        let bgp = prop::option::weighted(0.15, Just("peer 10.0.0.1 Idle"));
        prop::option::weighted(
            0.85,
            (
                prop::option::weighted(0.8, (any::<bool>(), reasons, messages, any::<bool>())),
                mtus,
                prefixes,
                silent,
                bgp,
            ),
        )
        .prop_map(move |view| {
            view.map(|(programmed, mtu, prefix, silent, bgp)| SubnetView {
                node: node.clone(),
                programmed: programmed.map(|(status, reason, message, current)| ProgrammedView {
                    status,
                    reason: reason.to_owned(),
                    message: message.to_owned(),
                    current,
                }),
                effective_mtu: mtu,
                silent: silent.map(str::to_owned),
                underlay_prefix: prefix.map(|p| p.parse().expect("test prefix")),
                bgp_down: bgp.map(str::to_owned),
            })
        })
    }

    /// One change to the allocated nodes: a node (of 12) joins or reports anew (`Some`), or
    /// leaves (`None`).
    fn any_change()
    -> impl proptest::strategy::Strategy<Value = (String, Option<Option<SubnetView>>)> {
        use proptest::prelude::*;
        (0..12usize).prop_flat_map(|i| {
            let node = format!("node-{i:02}");
            (
                Just(node.clone()),
                prop::option::weighted(0.8, any_view(node)),
            )
        })
    }

    proptest::proptest! {
        /// The incremental path's tallies, updated change by change, are the full re-plan's
        /// recount of the same nodes, and roll up to the same status.
        #[test]
        fn tallies_updated_change_by_change_agree_with_a_recount(
            changes in proptest::collection::vec(any_change(), 1..80),
            one_segment in proptest::option::of(proptest::strategy::Just("Flat mode")),
        ) {
            let mut nodes: BTreeMap<String, Option<SubnetView>> = BTreeMap::new();
            let mut tallies = Tallies::default();
            for (node, change) in changes {
                if let Some(old) = nodes.remove(&node) {
                    tallies.remove(&node, old.as_ref());
                }
                if let Some(view) = change {
                    tallies.add(&node, view.as_ref());
                    nodes.insert(node, view);
                }
                let recount =
                    Tallies::count(nodes.iter().map(|(n, v)| (n.as_str(), v.as_ref())));
                proptest::prop_assert_eq!(&tallies, &recount);
            }
            let allocated: Vec<String> = nodes.keys().cloned().collect();
            let world = World {
                selected: allocated.len(),
                plan: plan(&allocated, 256),
                subnets: nodes.values().flatten().cloned().collect(),
                one_segment,
                ..World::healthy()
            };
            let full = world.status(&PodNetworkStatus::default(), 1);
            let tallied = rollup_tallied(
                &Input {
                    generation: Some(7),
                    invalid_spec: None,
                    unusable: None,
                    overlap: None,
                    selected: allocated.len(),
                    claimed_elsewhere: &[],
                    plan: &world.plan,
                    subnets: &[],
                    one_segment,
                },
                &tallies,
                &PodNetworkStatus::default(),
                at(1),
            );
            proptest::prop_assert_eq!(full, tallied);
        }
    }
}
