//! Status conditions: the types and reasons Causeway reports, and [`set_condition`], which
//! updates a condition list the way `meta.SetStatusCondition` does in Go controllers.
//!
//! The operator writes the PodNetwork and OverlayGateway conditions, each node agent writes the
//! conditions of its own NodeSubnet. Types and reasons are part of the API: runbooks,
//! `kubectl wait --for=condition=Ready` and GitOps health checks (kstatus) match on them, so
//! they are stable CamelCase words. Every condition carries the `observedGeneration` of the
//! spec it describes, so a reader can tell a stale condition from a fresh one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types.
pub mod types {
    /// The object does what its spec says: PodNetwork (every selected node programmed),
    /// NodeSubnet (this node reaches its peers), OverlayGateway (clients can reach pods).
    pub const READY: &str = "Ready";
    /// Some part works and some does not (e.g. 2 of 10 nodes failed to program); the network
    /// still carries traffic where it can.
    pub const DEGRADED: &str = "Degraded";
    /// PodNetwork: every node subnet of `spec.cidr` is allocated; further nodes get none.
    pub const SUBNETS_EXHAUSTED: &str = "SubnetsExhausted";
    /// NodeSubnet: the agent applied the desired dataplane state of this node.
    pub const PROGRAMMED: &str = "Programmed";
}

/// Condition reasons (stable CamelCase words for runbooks).
pub mod reasons {
    /// Ready=True on a PodNetwork: every selected node reported Programmed=True.
    pub const ALL_NODES_PROGRAMMED: &str = "AllNodesProgrammed";
    /// Ready=False on a PodNetwork: some selected nodes have not reported Programmed=True yet.
    pub const NODES_PENDING: &str = "NodesPending";
    /// Ready=False on a PodNetwork whose node selector matches no node: nothing carries pod
    /// traffic, which is usually a selector typo.
    pub const NO_NODES_SELECTED: &str = "NoNodesSelected";
    /// Degraded=True (and Ready=False on a PodNetwork): some nodes reported Programmed=False.
    pub const NODES_FAILING: &str = "NodesFailing";
    /// Degraded=False, SubnetsExhausted=False: nothing to report.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// SubnetsExhausted=True: no free node subnet is left in `spec.cidr`.
    pub const POOL_EXHAUSTED: &str = "PoolExhausted";
    /// Ready=False: the spec passed admission but the operator cannot use it (e.g. an
    /// unparsable CIDR or prefix length); the message says what to change.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Ready=False on a PodNetwork whose cidr overlaps an earlier (older) PodNetwork's: the
    /// later network allocates nothing until its cidr changes or the earlier one is deleted.
    pub const CIDR_OVERLAP: &str = "CidrOverlap";
    /// Ready=False on a PodNetwork: some owned nodes wait for a node subnet because
    /// `spec.cidr` is full (the SubnetsExhausted condition has the details).
    pub const SUBNETS_EXHAUSTED: &str = "SubnetsExhausted";
    /// Ready=False, Degraded=True on a PodNetwork: some owned nodes report no InternalIP, so
    /// peers could not reach them and they get no subnet.
    pub const NODES_WITHOUT_ADDRESS: &str = "NodesWithoutAddress";
    /// Degraded=True on a PodNetwork: some nodes that hold a NodeSubnet no longer report an
    /// InternalIP; their NodeSubnet keeps the last known address (nothing is torn down).
    pub const NODES_LOST_ADDRESS: &str = "NodesLostAddress";
    /// Ready=False, Degraded=True on a Flat PodNetwork (or Routed without BGP): the agents
    /// report their nodes on more than one L2 segment, so some pods cannot reach others.
    pub const NODES_NOT_ON_ONE_SEGMENT: &str = "NodesNotOnOneSegment";
    /// Degraded=True on a PodNetwork: some selected nodes are selected by an earlier PodNetwork
    /// too and stay there (a node belongs to one network). Ready=False when that is every
    /// selected node.
    pub const NODES_CLAIMED_BY_OTHER_NETWORK: &str = "NodesClaimedByOtherNetwork";
    /// Ready=False, Degraded=True on a PodNetwork that uses the nodes' `spec.podCIDR`: some
    /// nodes have none, or one outside `spec.cidr`, of the wrong size or already taken.
    pub const INVALID_NODE_POD_CIDR: &str = "InvalidNodePodCidr";
    /// Ready=False on a PodNetwork: its `cidr` holds nodes' own addresses; nothing is
    /// allocated until it changes.
    pub const CIDR_OVERLAPS_NODES: &str = "CidrOverlapsNodes";
    /// Ready=False on a PodNetwork: its `cidr` overlaps the cluster's Service range (a
    /// ServiceCIDR object); nothing is allocated until it changes.
    pub const CIDR_OVERLAPS_SERVICES: &str = "CidrOverlapsServices";
    /// Programmed=True on a NodeSubnet: routes, neighbours and FDB entries are in place.
    pub const PROGRAMMED: &str = "Programmed";
    /// Programmed=False on a NodeSubnet: a kernel operation failed; the message quotes it.
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Programmed=False on a NodeSubnet: creating a device failed (e.g. the vxlan module is
    /// missing); the message quotes the operation and the kernel's answer.
    pub const DEVICE_CREATE_FAILED: &str = "DeviceCreateFailed";
    /// Programmed=False on a NodeSubnet: changing or deleting a device or its address failed.
    pub const DEVICE_UPDATE_FAILED: &str = "DeviceUpdateFailed";
    /// Programmed=False on a NodeSubnet: installing or removing a route failed.
    pub const ROUTE_FAILED: &str = "RouteFailed";
    /// Programmed=False on a NodeSubnet: a neighbour (ARP) entry could not be written.
    pub const NEIGHBOUR_FAILED: &str = "NeighbourFailed";
    /// Programmed=False on a NodeSubnet: a VXLAN forwarding entry could not be written.
    pub const FDB_FAILED: &str = "FdbFailed";
    /// Programmed=False on a NodeSubnet: the outgoing-NAT table could not be written with
    /// `nft` (missing binary, kernel without nf_tables); the message quotes nft.
    pub const NAT_FAILED: &str = "NatFailed";
    /// Ready=False on a PodNetwork: some nodes' agents stopped renewing their heartbeat Lease
    /// (agent stopped, node down or cut off from the API server); what they reported last may
    /// no longer hold.
    pub const AGENT_NOT_REPORTING: &str = "AgentNotReporting";
    /// Programmed=False on a NodeSubnet: no interface of the node holds `spec.nodeAddress`.
    pub const UNDERLAY_NOT_FOUND: &str = "UnderlayNotFound";
    /// Programmed=False on a NodeSubnet: the agent cannot turn the spec into a dataplane
    /// (e.g. an MTU larger than the underlay allows, a mode it does not support yet).
    pub const INVALID_CONFIGURATION: &str = "InvalidConfiguration";
    /// Programmed=False on a NodeSubnet: the CNI config file could not be written.
    pub const CNI_CONFIG_FAILED: &str = "CniConfigFailed";
    /// Ready=False on a NodeSubnet: some configured BGP sessions are not Established.
    pub const BGP_SESSIONS_DOWN: &str = "BgpSessionsDown";
    /// Ready=False on a NodeSubnet: some BGP peers cannot be configured on this node (their
    /// password Secret is missing or holds an unusable key, or the peer is at an IPv6 address
    /// and the node has no IPv6 address); the message names each peer and the fix. The node's
    /// other sessions run.
    pub const BGP_PEER_MISCONFIGURED: &str = "BgpPeerMisconfigured";
    /// Ready=False on an OverlayGateway: `spec.network` names no PodNetwork.
    pub const NETWORK_NOT_FOUND: &str = "NetworkNotFound";
    /// Ready=False on an OverlayGateway `BridgeHosts`: no selected node can hold the VIP.
    pub const NO_ELIGIBLE_HOST: &str = "NoEligibleHost";
    /// Ready=True on an OverlayGateway: the gateway forwards client traffic.
    pub const GATEWAY_READY: &str = "GatewayReady";
    /// `lastFailoverReason`: the previous active host stopped renewing its claim.
    pub const HOST_UNRESPONSIVE: &str = "HostUnresponsive";
    /// `lastFailoverReason`: the previous active host no longer matches the node selector.
    pub const HOST_DESELECTED: &str = "HostDeselected";
    /// `lastFailoverReason`: the previous active host lost the carrier on its underlay link.
    pub const LINK_DOWN: &str = "LinkDown";
    /// `lastFailoverReason`: the previous active host's agent stopped and handed the VIP over.
    pub const AGENT_STOPPED: &str = "AgentStopped";
    /// `lastFailoverReason`: the previous active host's own dataplane could not be programmed
    /// (its plan failed, its address is on no interface), so it let the VIP go.
    pub const NODE_NOT_PROGRAMMED: &str = "NodeNotProgrammed";
    /// Ready=False on an OverlayGateway `BridgeHosts`: candidates exist but none holds the VIP
    /// yet (first election, or a failover under way).
    pub const ELECTION_IN_PROGRESS: &str = "ElectionInProgress";
    /// Ready=False on an OverlayGateway `ClientJoin`: some listed clients' agents have not
    /// joined (or stopped reporting).
    pub const CLIENTS_NOT_JOINED: &str = "ClientsNotJoined";
    /// Ready=False on an OverlayGateway `BridgeHosts`: the VIP is already in use (a node's
    /// address, a pod address, or another gateway's VIP).
    pub const VIP_CONFLICT: &str = "VipConflict";
    /// Ready=False on an OverlayGateway `BridgeHosts`: no candidate holds the VIP because a
    /// machine that is no candidate answers ARP for it (the message gives its MAC).
    pub const VIP_IN_USE: &str = "VipInUse";
    /// Ready=False on an OverlayGateway: a client CIDR (or a ClientJoin `overlayAddress`)
    /// overlaps the pod range.
    pub const CLIENT_CIDR_OVERLAPS_PODS: &str = "ClientCidrOverlapsPods";
    /// Ready=False on an OverlayGateway `ClientJoin`: a client's address or overlayAddress
    /// belongs to someone else (a node, the API server, another client): nothing is
    /// programmed for that client ([`crate::ownership`]).
    pub const ADDRESS_IN_USE: &str = "AddressInUse";
}

/// The status of a condition: `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The writer cannot tell (yet).
    Unknown,
}

impl ConditionStatus {
    /// The string Kubernetes uses for this status.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// Builds a condition stamped with `now` as its transition time.
#[must_use]
pub fn new_condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Inserts or updates `condition` in `conditions` by type.
///
/// When a condition of that type exists with the same status, its `lastTransitionTime` is
/// kept and only reason, message and observedGeneration are updated: the time records when
/// the status last *changed*, which is what `kubectl describe` readers and alerting need.
/// Returns whether anything other than the time changed, so callers can skip a status write.
pub fn set_condition(conditions: &mut Vec<Condition>, condition: Condition) -> bool {
    let Some(existing) = conditions.iter_mut().find(|c| c.type_ == condition.type_) else {
        conditions.push(condition);
        return true;
    };
    if existing.status != condition.status {
        *existing = condition;
        return true;
    }
    let changed = existing.reason != condition.reason
        || existing.message != condition.message
        || existing.observed_generation != condition.observed_generation;
    existing.reason = condition.reason;
    existing.message = condition.message;
    existing.observed_generation = condition.observed_generation;
    changed
}

/// The condition of type `type_`, if present.
#[must_use]
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether `condition`'s status is `True` (the one place a status string is compared).
#[must_use]
pub fn is_true(condition: &Condition) -> bool {
    condition.status == ConditionStatus::True.as_str()
}

/// Whether the condition of type `type_` is present with status `True`.
#[must_use]
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(is_true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("valid test time"))
    }

    fn ready(
        status: ConditionStatus,
        reason: &str,
        message: &str,
        generation: i64,
        t: i64,
    ) -> Condition {
        new_condition(
            types::READY,
            status,
            reason,
            message,
            Some(generation),
            at(t),
        )
    }

    #[test]
    fn set_condition_keeps_or_moves_the_transition_time_as_the_status_dictates() {
        use ConditionStatus::{False, True};
        struct Case {
            name: &'static str,
            before: Option<Condition>,
            update: Condition,
            want_changed: bool,
            want_time: i64,
            want_reason: &'static str,
        }
        let cases = [
            Case {
                name: "a new type is appended with its own time",
                before: None,
                update: ready(True, "AllNodesProgrammed", "3/3", 1, 100),
                want_changed: true,
                want_time: 100,
                want_reason: "AllNodesProgrammed",
            },
            Case {
                name: "an identical update changes nothing and keeps the old time",
                before: Some(ready(True, "AllNodesProgrammed", "3/3", 1, 100)),
                update: ready(True, "AllNodesProgrammed", "3/3", 1, 200),
                want_changed: false,
                want_time: 100,
                want_reason: "AllNodesProgrammed",
            },
            Case {
                name: "a new message with the same status keeps the old time",
                before: Some(ready(False, "NodesPending", "1/3", 1, 100)),
                update: ready(False, "NodesPending", "2/3", 2, 200),
                want_changed: true,
                want_time: 100,
                want_reason: "NodesPending",
            },
            Case {
                name: "a status flip takes the new time and reason",
                before: Some(ready(False, "NodesPending", "2/3", 2, 100)),
                update: ready(True, "AllNodesProgrammed", "3/3", 2, 300),
                want_changed: true,
                want_time: 300,
                want_reason: "AllNodesProgrammed",
            },
        ];
        for case in cases {
            let mut conditions: Vec<Condition> = case.before.into_iter().collect();
            let changed = set_condition(&mut conditions, case.update.clone());
            assert_eq!(changed, case.want_changed, "{}", case.name);
            assert_eq!(conditions.len(), 1, "{}", case.name);
            let got = &conditions[0];
            assert_eq!(
                got.last_transition_time,
                at(case.want_time),
                "{}",
                case.name
            );
            assert_eq!(got.reason, case.want_reason, "{}", case.name);
            assert_eq!(got.message, case.update.message, "{}", case.name);
            assert_eq!(
                got.observed_generation, case.update.observed_generation,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn set_condition_leaves_other_types_alone() {
        let mut conditions = vec![
            ready(
                ConditionStatus::True,
                reasons::ALL_NODES_PROGRAMMED,
                "",
                1,
                1,
            ),
            new_condition(
                types::DEGRADED,
                ConditionStatus::False,
                reasons::AS_EXPECTED,
                "",
                Some(1),
                at(1),
            ),
        ];
        set_condition(
            &mut conditions,
            new_condition(
                types::DEGRADED,
                ConditionStatus::True,
                reasons::NODES_FAILING,
                "node-b",
                Some(1),
                at(5),
            ),
        );
        assert_eq!(conditions.len(), 2);
        assert!(is_condition_true(&conditions, types::READY));
        assert!(is_condition_true(&conditions, types::DEGRADED));
        assert!(!is_condition_true(&conditions, types::PROGRAMMED));
        assert_eq!(
            find_condition(&conditions, types::DEGRADED).map(|c| c.message.as_str()),
            Some("node-b")
        );
    }

    #[test]
    fn condition_status_renders_the_kubernetes_words() {
        assert_eq!(ConditionStatus::from(true).as_str(), "True");
        assert_eq!(ConditionStatus::from(false).as_str(), "False");
        assert_eq!(ConditionStatus::Unknown.as_str(), "Unknown");
    }
}

#[cfg(test)]
mod catalogue_tests {
    use std::collections::BTreeSet;

    /// The values of the `pub const` strings of `pub mod reasons` in this file's source.
    fn catalogue() -> BTreeSet<String> {
        let source = include_str!("conditions.rs");
        let start = source
            .find("pub mod reasons {")
            .expect("the reasons module");
        let block = &source[start..];
        let block = &block[..block.find("\n}\n").expect("its end")];
        block
            .lines()
            .filter(|l| l.trim_start().starts_with("pub const "))
            .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
            .collect()
    }

    /// Every backticked CamelCase word in the reasons column of docs/api.md's conditions table.
    fn documented() -> BTreeSet<String> {
        let docs = include_str!("../../docs/api.md");
        let start = docs.find("## Conditions and reasons").expect("the section");
        let section = &docs[start..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
        section
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| kind"))
            .filter_map(|l| l.split('|').nth(3))
            .flat_map(|reasons| {
                reasons
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|w| w.chars().next().is_some_and(char::is_uppercase))
                    .filter(|w| w.chars().all(char::is_alphanumeric))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn the_api_docs_list_exactly_the_reasons_in_the_catalogue() {
        let (code, docs) = (catalogue(), documented());
        assert!(code.len() > 30, "the catalogue parsed: {code:?}");
        let undocumented: Vec<&String> = code.difference(&docs).collect();
        let unknown: Vec<&String> = docs.difference(&code).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "reasons in crds/src/conditions.rs but not in docs/api.md: {undocumented:?}; in docs/api.md but not in the catalogue: {unknown:?}"
        );
    }
}
