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
    let shown: Vec<&str> = items.iter().take(MAX_LISTED).map(AsRef::as_ref).collect();
    let mut text = shown.join(separator);
    if items.len() > MAX_LISTED {
        text.push_str(&format!(" and {} more", items.len() - MAX_LISTED));
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

/// How the agents' reports split the allocated nodes.
#[derive(Default)]
struct Reports<'a> {
    programmed: Vec<&'a str>,
    /// `(node, reason, message)` of nodes whose agent reported Programmed=False.
    failing: Vec<(&'a str, &'a str, &'a str)>,
    /// `node (why)`: agents that stopped renewing their heartbeat.
    silent: Vec<String>,
    /// `node (message)`: programmed nodes whose BGP sessions are not all Established.
    bgp_down: Vec<String>,
    pending: Vec<&'a str>,
    effective_mtu: Option<i32>,
}

fn reports<'a>(plan: &'a ipam::Plan, subnets: &'a [SubnetView]) -> Reports<'a> {
    let allocated: BTreeSet<&str> = plan.allocations().map(|a| a.node.as_str()).collect();
    let mut views: BTreeMap<&str, &SubnetView> = BTreeMap::new();
    for view in subnets
        .iter()
        .filter(|v| allocated.contains(v.node.as_str()))
    {
        views.entry(view.node.as_str()).or_insert(view);
    }
    classify(
        allocated
            .into_iter()
            .map(|node| (node, views.get(node).copied())),
    )
}

/// Sorts the allocated nodes, given in name order each with its report (if any), into
/// [`Reports`]: the one pass both [`rollup`] and [`rollup_allocated`] share.
fn classify<'a>(allocated: impl Iterator<Item = (&'a str, Option<&'a SubnetView>)>) -> Reports<'a> {
    let mut out = Reports::default();
    for (node, view) in allocated {
        if let Some(mtu) = view.and_then(|v| v.effective_mtu) {
            out.effective_mtu = Some(out.effective_mtu.map_or(mtu, |m| m.min(mtu)));
        }
        // A silent agent's last report, good or bad, may no longer hold.
        if let Some(why) = view.and_then(|v| v.silent.as_ref()) {
            out.silent.push(format!("{node} ({why})"));
            continue;
        }
        match view.and_then(|v| v.programmed.as_ref()) {
            Some(p) if p.current && p.status => {
                out.programmed.push(node);
                if let Some(message) = view.and_then(|v| v.bgp_down.as_ref()) {
                    out.bgp_down.push(format!("{node} ({})", quote(message)));
                }
            }
            Some(p) if p.current => {
                let reason = if p.reason.is_empty() {
                    "no reason given"
                } else {
                    p.reason.as_str()
                };
                out.failing.push((node, reason, p.message.as_str()));
            }
            // No report, or one about an older spec: the agent has yet to act.
            _ => out.pending.push(node),
        }
    }
    out
}

/// The failing nodes grouped by what they report, in node order of each group's first node:
/// `node-a, node-b (Reason: message)`. Nodes failing alike (a spec every agent refuses) make
/// one group, so the message is quoted once, whole up to [`MAX_QUOTED`] characters.
fn failing_groups(failing: &[(&str, &str, &str)]) -> Vec<String> {
    let mut groups: Vec<((&str, &str), Vec<&str>)> = Vec::new();
    for &(node, reason, message) in failing {
        match groups.iter_mut().find(|(key, _)| *key == (reason, message)) {
            Some((_, nodes)) => nodes.push(node),
            None => groups.push(((reason, message), vec![node])),
        }
    }
    groups
        .into_iter()
        .map(|((reason, message), nodes)| {
            let nodes = listing(&nodes, ", ");
            if message.is_empty() {
                format!("{nodes} ({reason})")
            } else {
                format!("{nodes} ({reason}: {})", quote(message))
            }
        })
        .collect()
}

/// The sentence saying the nodes are on several segments, when a mode needs one and the
/// agents report more (nodes that have not reported are not judged).
fn segments_sentence<'a>(
    mode: &str,
    subnets: impl Iterator<Item = &'a SubnetView>,
) -> Option<String> {
    let mut groups: BTreeMap<Ipv4Net, Vec<&str>> = BTreeMap::new();
    for view in subnets {
        if let Some(prefix) = view.underlay_prefix {
            groups.entry(prefix).or_default().push(view.node.as_str());
        }
    }
    if groups.len() < 2 {
        return None;
    }
    let parts: Vec<String> = groups
        .iter()
        .map(|(prefix, nodes)| {
            let mut nodes = nodes.clone();
            nodes.sort_unstable();
            format!("{prefix} ({})", listing(&nodes, ", "))
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
#[must_use]
pub fn rollup(input: &Input, previous: &PodNetworkStatus, now: Time) -> PodNetworkStatus {
    let reports = reports(input.plan, input.subnets);
    let segments = input
        .one_segment
        .and_then(|mode| segments_sentence(mode, input.subnets.iter()));
    let allocated = input.plan.allocations().count();
    finish(input, allocated, &reports, segments, previous, now)
}

/// [`rollup`] for a caller that keeps the allocated nodes' reports itself, one per node in
/// name order (the incremental path, [`crate::incremental`]): `input.plan` then only supplies
/// the pool, the counts and the node lists (its allocation lists may be empty), and
/// `input.subnets` is not read. Gives the same status as [`rollup`] over the same nodes and
/// reports.
#[must_use]
pub fn rollup_allocated<'a>(
    input: &Input,
    allocated: impl Iterator<Item = (&'a str, &'a SubnetView)> + Clone,
    previous: &PodNetworkStatus,
    now: Time,
) -> PodNetworkStatus {
    let reports = classify(allocated.clone().map(|(node, view)| (node, Some(view))));
    let segments = input
        .one_segment
        .and_then(|mode| segments_sentence(mode, allocated.clone().map(|(_, view)| view)));
    finish(input, allocated.count(), &reports, segments, previous, now)
}

fn finish(
    input: &Input,
    allocated: usize,
    reports: &Reports,
    segments: Option<String>,
    previous: &PodNetworkStatus,
    now: Time,
) -> PodNetworkStatus {
    let plan = input.plan;
    // Every node handed to IPAM lands in exactly one of these.
    let owned =
        allocated + plan.exhausted.len() + plan.missing_address.len() + plan.bad_pod_cidr.len();
    let nodes = if owned == 1 { "node" } else { "nodes" };
    let of_owned = |count: usize| format!("{count} of {owned} {nodes}");

    let failing = (!reports.failing.is_empty()).then(|| {
        format!(
            "{} failed to program: {}.",
            of_owned(reports.failing.len()),
            listing(&failing_groups(&reports.failing), "; ")
        )
    });
    let bgp_down = (!reports.bgp_down.is_empty()).then(|| {
        format!(
            "BGP sessions are down on {}: {}.",
            of_owned(reports.bgp_down.len()),
            listing(&reports.bgp_down, "; ")
        )
    });
    let silent = (!reports.silent.is_empty()).then(|| {
        format!(
            "{} stopped reporting: {}. What they reported last may no longer hold; check the causeway-node-agent pod on each (kubectl -n causeway-system get pods -o wide --field-selector spec.nodeName=NODE).",
            of_owned(reports.silent.len()),
            listing(&reports.silent, "; ")
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
                    listing(&reports.pending, ", ")
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
            format!("{} programmed.", of_owned(reports.programmed.len())),
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
        programmed_nodes: count(reports.programmed.len()),
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
        effective_mtu: reports.effective_mtu,
    }
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
}
