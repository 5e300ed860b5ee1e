//! What the agent reports on its own NodeSubnet's status, from the outcome of one pass of
//! the loop (pure).
//!
//! `Programmed` is True when every operation of the pass applied (peers the planner had to
//! skip are named in the message but do not make it False: they are the peer's problem, and
//! their own agents report it). When a step failed, `Programmed` is False with a reason
//! naming the kind of step (`DeviceCreateFailed`, `RouteFailed`, ...) and a message quoting
//! the operation and the kernel's answer, so `kubectl describe nodesubnet` says what to fix.
//! `Ready` follows `Programmed`, and is False while a BGP session is not Established or a BGP
//! peer cannot be configured on this node. A condition's `lastTransitionTime` moves only when
//! its status does; [`keep_handed_times`] keeps the time the agent already handed out while its
//! cache does not show its own write yet.

use causeway_crds::NodeSubnetStatus;
use causeway_crds::conditions::{
    ConditionStatus, find_condition, new_condition, reasons, set_condition, types,
};
use causeway_crds::v1alpha1::BgpSessionStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::model::{Nat, Op, State};

/// Why a pass did not program the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The spec cannot be turned into a dataplane (the message says what to change).
    Plan(String),
    /// No interface holds the node address.
    Underlay(String),
    /// A kernel operation failed.
    Apply { op: Op, message: String },
    /// The CNI config file could not be written.
    Cni(String),
    /// The agent's own kernel state could not be read.
    Observe(String),
}

impl Failure {
    /// The condition reason for this failure.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Plan(_) => reasons::INVALID_CONFIGURATION,
            Failure::Underlay(_) => reasons::UNDERLAY_NOT_FOUND,
            Failure::Cni(_) => reasons::CNI_CONFIG_FAILED,
            Failure::Observe(_) => reasons::APPLY_FAILED,
            Failure::Apply { op, .. } => match op {
                Op::CreateLink(_) => reasons::DEVICE_CREATE_FAILED,
                Op::DeleteLink(_)
                | Op::UpdateLink { .. }
                | Op::SetProxyArp { .. }
                | Op::SetProxyNdp { .. }
                | Op::SetLooseRpFilter(_)
                | Op::EnableIpv6(_)
                | Op::MarkPort { .. }
                | Op::AttachPort { .. }
                | Op::AddAddress { .. }
                | Op::DeleteAddress { .. } => reasons::DEVICE_UPDATE_FAILED,
                Op::ReplaceRoute(_) | Op::DeleteRoute(_) => reasons::ROUTE_FAILED,
                Op::ReplaceNeighbour(_)
                | Op::DeleteNeighbour(_)
                | Op::AddProxyNeighbour { .. }
                | Op::DeleteProxyNeighbour { .. } => reasons::NEIGHBOUR_FAILED,
                Op::ReplaceFdb(_) | Op::DeleteFdb(_) => reasons::FDB_FAILED,
                Op::ReplaceNat(_)
                | Op::DeleteNat
                | Op::ReplaceNat6(_)
                | Op::DeleteNat6
                | Op::ReplaceSnat(_)
                | Op::DeleteSnat
                | Op::ReplaceSnat6(_)
                | Op::DeleteSnat6 => reasons::NAT_FAILED,
            },
        }
    }

    /// The condition message.
    #[must_use]
    pub fn message(&self) -> String {
        match self {
            Failure::Plan(m) | Failure::Underlay(m) | Failure::Cni(m) | Failure::Observe(m) => {
                m.clone()
            }
            Failure::Apply { op, message } => format!("{op}: {message}"),
        }
    }
}

/// The outcome of one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The NodeSubnet's `metadata.generation` the pass worked from.
    pub generation: Option<i64>,
    /// What the kernel holds after the pass (observed, or the plan when it all applied);
    /// shared with what the agent keeps for the next pass ([`crate::pass::Baseline`]).
    pub programmed: std::sync::Arc<State>,
    /// The pod MTU the pass used, when it got that far.
    pub mtu: Option<u32>,
    /// Peers the planner skipped, in words.
    pub skipped: Vec<String>,
    /// `None` when everything applied.
    pub failure: Option<Failure>,
    /// The on-link prefix of the node's address (`spec.nodeAddress`) on the underlay, when
    /// the pass found it: `Some` exactly when the pass read the kernel (a pass refused before, or unable to find its underlay, changed
    /// nothing, and its `programmed` is empty rather than what the kernel holds).
    pub underlay_prefix: Option<ipnet::IpNet>,
    /// The on-link prefix of the node's address of the other family (`secondaryNodeAddress`,
    /// on a dual-stack network) on the same link, as the same observation found it: `None`
    /// there means the node has none.
    pub secondary_underlay_prefix: Option<ipnet::IpNet>,
    /// This node's BGP sessions (Routed mode with BGP), sorted by peer.
    pub bgp: Vec<BgpSessionStatus>,
    /// Peers that cannot be configured on this node (their password), in words naming each.
    pub bgp_misconfigured: Vec<String>,
    /// This node's side of its BGP sessions in words (its address and AS, and where the AS
    /// comes from), for the routers' administrators; `None` without BGP.
    pub bgp_local: Option<String>,
}

/// Skipped peers named in the Programmed message before "and N more": the message stays
/// readable (and within the API's limit) when a whole rack is unreachable.
const MAX_SKIPPED_LISTED: usize = 3;

/// `Established`: the only BGP state that exchanges routes.
pub const ESTABLISHED: &str = "Established";

/// Ready's (status, reason, message) when Programmed is True: False while a BGP session is
/// not Established, naming each and why.
fn ready_with_sessions(
    sessions: &[BgpSessionStatus],
    misconfigured: &[String],
    local: Option<&str>,
    programmed_message: &str,
) -> (ConditionStatus, &'static str, String) {
    if !misconfigured.is_empty() {
        let up = sessions.iter().filter(|s| s.state == ESTABLISHED).count();
        return (
            ConditionStatus::False,
            reasons::BGP_PEER_MISCONFIGURED,
            format!(
                "{} BGP peers cannot be configured on this node: {}. {up} of {} sessions Established.",
                misconfigured.len(),
                misconfigured.join("; "),
                sessions.len()
            ),
        );
    }
    let down: Vec<String> = sessions
        .iter()
        .filter(|s| s.state != ESTABLISHED)
        .map(|s| {
            let why = if s.message.is_empty() {
                String::new()
            } else {
                format!(": {}", s.message)
            };
            format!("{} (AS {}) is {}{why}", s.peer_address, s.peer_asn, s.state)
        })
        .collect();
    if down.is_empty() {
        let mut message = programmed_message.to_owned();
        if !sessions.is_empty() {
            message.push_str(&format!(
                " BGP: {} of {} sessions Established.",
                sessions.len(),
                sessions.len()
            ));
        }
        return (ConditionStatus::True, reasons::PROGRAMMED, message);
    }
    // The node's AS may come from a node label, which nothing else in the status shows.
    let this_node = local.map_or_else(
        || "this node's address and AS".to_owned(),
        |local| format!("this node: {local}"),
    );
    (
        ConditionStatus::False,
        reasons::BGP_SESSIONS_DOWN,
        format!(
            "{} of {} BGP sessions not Established: {}. Routes to nodes behind these routers are missing until they are; check the router's BGP configuration for {this_node}.",
            down.len(),
            sessions.len(),
            down.join("; ")
        ),
    )
}

/// The status to write: `previous` with Programmed and Ready set from `outcome` (other
/// condition types and their transition times are kept) and the counts of what is programmed.
#[must_use]
pub fn status(previous: &NodeSubnetStatus, outcome: &Outcome, now: Time) -> NodeSubnetStatus {
    let mut next = previous.clone();
    let routes = outcome.programmed.routes.len();
    let neighbours = outcome.programmed.neighbours.len();
    let fdb = outcome.programmed.fdb.len();
    let (state, reason, message) = match &outcome.failure {
        None => {
            // No counts here: they change with every peer joining, and a condition change is
            // written at once (see `counts_only`).
            let mut message = "The dataplane matches the plan".to_owned();
            if let Some(mtu) = outcome.mtu {
                message.push_str(&format!(": pod MTU {mtu}"));
            }
            // Both families' exemptions: the IPv4 ranges, then the IPv6 ones.
            let mut exempt: Vec<String> = Vec::new();
            if let Some(Nat::Masquerade(m)) = &outcome.programmed.nat {
                exempt.extend(m.exempt.iter().map(ToString::to_string));
            }
            if let Some(crate::model::Nat6::Masquerade(m)) = &outcome.programmed.nat6 {
                exempt.extend(m.exempt.iter().map(ToString::to_string));
            }
            if !exempt.is_empty() {
                message.push_str(&format!(
                    "; pod traffic to destinations outside {} is masqueraded",
                    exempt.join(", ")
                ));
            }
            message.push('.');
            if !outcome.skipped.is_empty() {
                message.push_str(" Skipped: ");
                let shown: Vec<&str> = outcome
                    .skipped
                    .iter()
                    .take(MAX_SKIPPED_LISTED)
                    .map(String::as_str)
                    .collect();
                message.push_str(&shown.join(" "));
                if outcome.skipped.len() > MAX_SKIPPED_LISTED {
                    message.push_str(&format!(
                        " And {} more (the agent's log lists them all).",
                        outcome.skipped.len() - MAX_SKIPPED_LISTED
                    ));
                }
            }
            (ConditionStatus::True, reasons::PROGRAMMED, message)
        }
        Some(f) => (ConditionStatus::False, f.reason(), f.message()),
    };
    set_condition(
        &mut next.conditions,
        new_condition(
            types::PROGRAMMED,
            state,
            reason,
            message.clone(),
            outcome.generation,
            now.clone(),
        ),
    );
    let (ready, ready_reason, ready_message) = if state == ConditionStatus::True {
        ready_with_sessions(
            &outcome.bgp,
            &outcome.bgp_misconfigured,
            outcome.bgp_local.as_deref(),
            &message,
        )
    } else {
        (state, reason, message)
    };
    set_condition(
        &mut next.conditions,
        new_condition(
            types::READY,
            ready,
            ready_reason,
            ready_message,
            outcome.generation,
            now,
        ),
    );
    next.bgp_sessions.clone_from(&outcome.bgp);
    next.observed_generation = outcome.generation;
    // The counts say what the kernel holds: a pass that never read it (refused up front,
    // changing nothing) leaves them as they were.
    if outcome.underlay_prefix.is_some() {
        next.routes = clamp(routes);
        next.neighbours = clamp(neighbours);
        next.fdb_entries = clamp(fdb);
    }
    if let Some(mtu) = outcome.mtu {
        next.effective_mtu = i32::try_from(mtu).ok();
    }
    if let Some(prefix) = outcome.underlay_prefix {
        next.underlay_prefix = Some(prefix.to_string());
        // Observed together: the IPv6 prefix is known (present or absent) exactly when the
        // IPv4 one is, so an IPv6 address removed from the node clears it.
        next.secondary_underlay_prefix = outcome.secondary_underlay_prefix.map(|p| p.to_string());
    }
    next
}

/// `next`, made by [`status`] from `cached` (the status in the agent's cache), with the
/// transition times of `handed` (the status last handed to the writer for the same NodeSubnet)
/// where the cache does not show a condition's status yet and `handed` has it: the condition
/// changed when the agent first handed it, not when a later pass saw the stale cache.
///
/// The cache catches up with the agent's own write only when its watch event comes back, and
/// a pass can run before that: at every join, the event of the finalizer the agent set first
/// arrives while the first pass runs. Without this that pass stamps Programmed and Ready anew,
/// and the status is written a second time with nothing changed but a later (wrong)
/// `lastTransitionTime`; with it, the pass hands the writer the status it has already written,
/// which the writer skips ([`crate::writes::StatusWriter`]).
#[must_use]
pub fn keep_handed_times(
    mut next: NodeSubnetStatus,
    cached: &NodeSubnetStatus,
    handed: &NodeSubnetStatus,
) -> NodeSubnetStatus {
    // The condition of `c`'s type in `conditions`, if it has `c`'s status.
    let same = |conditions: &'_ [Condition], c: &Condition| {
        find_condition(conditions, &c.type_)
            .filter(|found| found.status == c.status)
            .map(|found| found.last_transition_time.clone())
    };
    for c in &mut next.conditions {
        // The cache shows this status: `status` kept the cache's time, which is the API's.
        if same(&cached.conditions, c).is_some() {
            continue;
        }
        if let Some(time) = same(&handed.conditions, c) {
            c.last_transition_time = time;
        }
    }
    next
}

/// Whether `a` and `b` differ only in the counts of routes, neighbours and FDB entries. Such
/// a change follows every peer joining or leaving, on every node; the agent writes it at a
/// limited rate, so a join costs O(1) API writes per period instead of one per node at once.
#[must_use]
pub fn counts_only(a: &NodeSubnetStatus, b: &NodeSubnetStatus) -> bool {
    let strip = |s: &NodeSubnetStatus| NodeSubnetStatus {
        routes: 0,
        neighbours: 0,
        fdb_entries: 0,
        bgp_sessions: s
            .bgp_sessions
            .iter()
            .map(|b| BgpSessionStatus {
                routes_received: None,
                routes_advertised: None,
                ipv6_routes_received: None,
                ipv6_routes_advertised: None,
                ..b.clone()
            })
            .collect(),
        ..s.clone()
    };
    strip(a) == strip(b)
}

/// The Programmed condition's (status, reason) if it changed from `a` to `b`: what deserves an
/// event.
#[must_use]
pub fn programmed_transition(
    a: &NodeSubnetStatus,
    b: &NodeSubnetStatus,
) -> Option<(bool, String, String)> {
    let get = |s: &NodeSubnetStatus| {
        find_condition(&s.conditions, types::PROGRAMMED).map(|c| {
            (
                causeway_crds::conditions::is_true(c),
                c.reason.clone(),
                c.message.clone(),
            )
        })
    };
    let (before, after) = (get(a), get(b));
    match (&before, &after) {
        (_, None) => None,
        (Some((s0, r0, _)), Some((s1, r1, _))) if s0 == s1 && r0 == r1 => None,
        _ => after,
    }
}

fn clamp(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::model::{Link, LinkKind, Route};

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("time"))
    }

    fn programmed_state(peers: usize) -> State {
        let mut s = State::default();
        for i in 0..peers {
            let dst = format!("10.244.{}.0/24", i + 2).parse().expect("cidr");
            s.routes.insert(
                dst,
                Route {
                    dst,
                    gateway: None,
                    dev: "cw-vx1".into(),
                    onlink: true,
                },
            );
        }
        s
    }

    fn ok(generation: i64, peers: usize) -> Outcome {
        Outcome {
            bgp_misconfigured: vec![],
            bgp_local: None,
            generation: Some(generation),
            programmed: Arc::new(programmed_state(peers)),
            mtu: Some(1450),
            skipped: vec![],
            failure: None,
            underlay_prefix: Some("192.168.50.0/24".parse().expect("prefix")),
            secondary_underlay_prefix: None,
            bgp: vec![],
        }
    }

    #[test]
    fn the_programmed_message_names_the_masquerade_exemptions_of_both_families() {
        let mut outcome = ok(1, 0);
        Arc::make_mut(&mut outcome.programmed).nat =
            Some(Nat::Masquerade(crate::model::Masquerade {
                source: "10.244.1.0/24".parse().expect("net"),
                exempt: vec!["10.244.0.0/16".parse().expect("net")],
            }));
        Arc::make_mut(&mut outcome.programmed).nat6 =
            Some(crate::model::Nat6::Masquerade(crate::model::Masquerade6 {
                source: "fd00:10:244:1::/64".parse().expect("net"),
                exempt: vec!["fd00:10:244::/56".parse().expect("net")],
            }));
        let message = |o: &Outcome| {
            status(&NodeSubnetStatus::default(), o, at(1)).conditions[0]
                .message
                .clone()
        };
        assert!(
            message(&outcome).contains(
                "pod traffic to destinations outside 10.244.0.0/16, fd00:10:244::/56 is masqueraded"
            ),
            "{}",
            message(&outcome)
        );
        // An IPv6 network has only the IPv6 table.
        Arc::make_mut(&mut outcome.programmed).nat = None;
        assert!(
            message(&outcome).contains("outside fd00:10:244::/56 is masqueraded"),
            "{}",
            message(&outcome)
        );
    }

    #[test]
    fn a_pass_refused_before_reading_the_kernel_keeps_the_counts_it_found() {
        let before = status(&NodeSubnetStatus::default(), &ok(1, 3), at(1));
        assert_eq!(before.routes, 3);
        let refused = Outcome {
            programmed: Arc::default(),
            failure: Some(Failure::Plan("spec.cidr is an IPv6 range ...".into())),
            underlay_prefix: None,
            ..ok(2, 0)
        };
        let after = status(&before, &refused, at(2));
        let p = find_condition(&after.conditions, types::PROGRAMMED).expect("Programmed");
        assert_eq!(p.status, "False");
        assert_eq!(
            (after.routes, after.neighbours, after.fdb_entries),
            (before.routes, before.neighbours, before.fdb_entries),
            "nothing was changed on the node, so the counts stay"
        );
        // A pass that read the kernel reports what it holds, failed or not.
        let read = Outcome {
            failure: Some(Failure::Plan("a peer ...".into())),
            ..ok(3, 1)
        };
        assert_eq!(status(&after, &read, at(3)).routes, 1);
    }

    #[test]
    fn the_underlay_prefixes_of_both_families_are_reported_and_a_vanished_ipv6_one_is_cleared() {
        let v4: ipnet::IpNet = "192.168.50.0/24".parse().expect("prefix");
        let v6: ipnet::IpNet = "fd00:50::/64".parse().expect("prefix");
        let cases: [(Option<ipnet::IpNet>, Option<ipnet::IpNet>, Option<&str>); 4] = [
            // Observed with an IPv6 address: reported.
            (Some(v4), Some(v6), Some("fd00:50::/64")),
            // Observed without one (removed, or an IPv4-only node): cleared.
            (Some(v4), None, None),
            // Not observed this pass (it failed before): the last report stands.
            (None, None, Some("fd00:9::/64")),
            (None, Some(v6), Some("fd00:9::/64")),
        ];
        for (prefix, prefix6, want) in cases {
            let before = NodeSubnetStatus {
                secondary_underlay_prefix: Some("fd00:9::/64".into()),
                ..NodeSubnetStatus::default()
            };
            let outcome = Outcome {
                underlay_prefix: prefix,
                secondary_underlay_prefix: prefix6,
                ..ok(1, 0)
            };
            let st = status(&before, &outcome, at(100));
            assert_eq!(
                st.secondary_underlay_prefix.as_deref(),
                want,
                "{prefix:?} {prefix6:?}"
            );
            assert_eq!(
                st.underlay_prefix,
                prefix.map(|p| p.to_string()),
                "{prefix:?}"
            );
        }
    }

    #[test]
    fn a_clean_pass_reports_programmed_and_ready_with_counts() {
        let st = status(&NodeSubnetStatus::default(), &ok(3, 2), at(100));
        let p = find_condition(&st.conditions, types::PROGRAMMED).expect("Programmed");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", "Programmed")
        );
        assert_eq!(p.message, "The dataplane matches the plan: pod MTU 1450.");
        assert_eq!(p.observed_generation, Some(3));
        let r = find_condition(&st.conditions, types::READY).expect("Ready");
        assert_eq!(r.status, "True");
        assert_eq!((st.routes, st.observed_generation), (2, Some(3)));
        assert_eq!(st.effective_mtu, Some(1450));
    }

    #[test]
    fn failures_name_the_step_and_quote_the_kernel() {
        let vxlan = Link {
            name: "cw-vx1".into(),
            kind: LinkKind::Bridge,
            mtu: 1450,
            up: true,
        };
        let cases: Vec<(Failure, &str, &str)> = vec![
            (
                Failure::Apply {
                    op: Op::CreateLink(vxlan),
                    message: "Operation not supported (is the vxlan kernel module loaded?)".into(),
                },
                "DeviceCreateFailed",
                "is the vxlan kernel module loaded?",
            ),
            (
                Failure::Apply {
                    op: Op::DeleteLink("cw-vx1".into()),
                    message: "busy".into(),
                },
                "DeviceUpdateFailed",
                "delete link cw-vx1: busy",
            ),
            (
                Failure::Underlay("no interface has 192.168.50.11".into()),
                "UnderlayNotFound",
                "192.168.50.11",
            ),
            (
                Failure::Plan("overlay.mtu 9000 is larger than 1450".into()),
                "InvalidConfiguration",
                "9000",
            ),
            (
                Failure::Cni("writing /etc/cni/net.d: read-only".into()),
                "CniConfigFailed",
                "read-only",
            ),
        ];
        for (failure, reason, words) in cases {
            let outcome = Outcome {
                failure: Some(failure),
                ..ok(1, 0)
            };
            let st = status(&NodeSubnetStatus::default(), &outcome, at(5));
            let p = find_condition(&st.conditions, types::PROGRAMMED).expect("Programmed");
            assert_eq!((p.status.as_str(), p.reason.as_str()), ("False", reason));
            assert!(p.message.contains(words), "{reason}: {}", p.message);
            let r = find_condition(&st.conditions, types::READY).expect("Ready");
            assert_eq!(r.status, "False");
        }
    }

    #[test]
    fn skipped_peers_are_named_without_failing_the_node() {
        let outcome = Outcome {
            skipped: vec!["peer node-x: vtepMac \"zz\" is not a MAC address.".into()],
            ..ok(1, 1)
        };
        let st = status(&NodeSubnetStatus::default(), &outcome, at(5));
        let p = find_condition(&st.conditions, types::PROGRAMMED).expect("Programmed");
        assert_eq!(p.status, "True");
        assert!(p.message.contains("Skipped: peer node-x"), "{}", p.message);
        assert!(
            p.message.starts_with("The dataplane matches"),
            "{}",
            p.message
        );
    }

    #[test]
    fn ready_waits_for_every_bgp_session_and_names_the_ones_down() {
        let session = |peer: &str, state: &str, message: &str| BgpSessionStatus {
            peer_address: peer.into(),
            peer_asn: 64500,
            state: state.into(),
            message: message.into(),
            since: Some(at(1)),
            routes_received: Some(3),
            routes_advertised: Some(1),
            ..BgpSessionStatus::default()
        };
        let outcome = Outcome {
            bgp: vec![
                session("192.168.50.1", "Established", ""),
                session("192.168.60.1", "Active", "connection refused"),
            ],
            ..ok(1, 2)
        };
        let st = status(&NodeSubnetStatus::default(), &outcome, at(5));
        let p = find_condition(&st.conditions, types::PROGRAMMED).expect("Programmed");
        assert_eq!(p.status, "True", "the dataplane is programmed either way");
        let r = find_condition(&st.conditions, types::READY).expect("Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "BgpSessionsDown")
        );
        assert!(
            r.message.starts_with(
                "1 of 2 BGP sessions not Established: 192.168.60.1 (AS 64500) is Active: connection refused."
            ),
            "{}",
            r.message
        );
        assert_eq!(st.bgp_sessions.len(), 2);
        // Where the node's AS comes from is in the advice: nothing else in the status says.
        let labelled = Outcome {
            bgp_local: Some(
                "address 192.168.50.12, AS 65020 (from node label causeway.dev/asn)".into(),
            ),
            ..outcome.clone()
        };
        let st = status(&NodeSubnetStatus::default(), &labelled, at(5));
        let r = find_condition(&st.conditions, types::READY).expect("Ready");
        assert!(
            r.message.ends_with(
                "check the router's BGP configuration for this node: address 192.168.50.12, AS 65020 (from node label causeway.dev/asn)."
            ),
            "{}",
            r.message
        );

        let up = Outcome {
            bgp: vec![session("192.168.50.1", "Established", "")],
            ..ok(1, 2)
        };
        let st = status(&st, &up, at(6));
        let r = find_condition(&st.conditions, types::READY).expect("Ready");
        assert_eq!(r.status, "True");
        assert!(
            r.message.ends_with("BGP: 1 of 1 sessions Established."),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_peer_joining_changes_only_counts_and_a_failure_is_a_transition() {
        let two = status(&NodeSubnetStatus::default(), &ok(1, 2), at(10));
        let three = status(&two, &ok(1, 3), at(20));
        assert_ne!(two, three);
        assert!(counts_only(&two, &three), "a join only moves counts");
        assert_eq!(programmed_transition(&two, &three), None);

        // A BGP route count moving is a count too; a session's state is not.
        let session = |state: &str, received: i64| BgpSessionStatus {
            peer_address: "192.168.50.1".into(),
            peer_asn: 64500,
            state: state.into(),
            routes_received: Some(received),
            routes_advertised: Some(1),
            ..BgpSessionStatus::default()
        };
        let with = |s: &NodeSubnetStatus, b: BgpSessionStatus| NodeSubnetStatus {
            bgp_sessions: vec![b],
            ..s.clone()
        };
        assert!(counts_only(
            &with(&two, session("Established", 2)),
            &with(&two, session("Established", 3))
        ));
        assert!(!counts_only(
            &with(&two, session("Established", 2)),
            &with(&two, session("Active", 2))
        ));
        let dual = |received6: i64| BgpSessionStatus {
            ipv6_routes_received: Some(received6),
            ipv6_routes_advertised: Some(1),
            ..session("Established", 2)
        };
        assert!(
            counts_only(&with(&two, dual(1)), &with(&two, dual(4))),
            "IPv6 route counts are counts too"
        );

        let new_generation = status(&two, &ok(2, 2), at(20));
        assert!(!counts_only(&two, &new_generation));

        let failed = status(
            &three,
            &Outcome {
                failure: Some(Failure::Cni("read-only".into())),
                ..ok(1, 3)
            },
            at(30),
        );
        assert!(!counts_only(&three, &failed));
        assert_eq!(
            programmed_transition(&three, &failed),
            Some((false, "CniConfigFailed".into(), "read-only".into()))
        );
        let first = programmed_transition(&NodeSubnetStatus::default(), &two);
        assert_eq!(
            first.map(|(ok, reason, _)| (ok, reason)),
            Some((true, "Programmed".into()))
        );
    }

    #[test]
    fn a_pass_before_the_cache_shows_the_agents_own_write_hands_the_same_status() {
        let empty = NodeSubnetStatus::default();
        // The first pass at a join: Programmed, handed to the writer at 10.
        let handed = status(&empty, &ok(1, 3), at(10));
        // The finalizer's watch event comes first: the next pass still sees no status.
        let stale = status(&empty, &ok(1, 3), at(11));
        assert_ne!(stale, handed, "stamped anew, it would be written again");
        let kept = keep_handed_times(stale, &empty, &handed);
        assert_eq!(kept, handed, "the writer skips a status it has written");

        // Once the cache shows the write (the API keeps whole seconds), its times stand.
        let mut written = handed.clone();
        for c in &mut written.conditions {
            c.last_transition_time = at(10);
        }
        let next = status(&written, &ok(1, 3), at(12));
        assert_eq!(keep_handed_times(next.clone(), &written, &handed), next);
        assert_eq!(next, written, "nothing to write");

        // A status the agent has not handed yet is stamped now, whatever the cache shows.
        let t = |s: &NodeSubnetStatus, type_: &str| {
            find_condition(&s.conditions, type_)
                .expect("condition")
                .last_transition_time
                .clone()
        };
        let failed = Outcome {
            failure: Some(Failure::Cni("read-only".into())),
            ..ok(1, 3)
        };
        let next = keep_handed_times(status(&empty, &failed, at(13)), &empty, &handed);
        assert_eq!(t(&next, types::PROGRAMMED), at(13));
        assert_eq!(t(&next, types::READY), at(13));
        // Programmed again after a failure that was handed last: a new transition.
        let handed_failure = status(&empty, &failed, at(13));
        let back = keep_handed_times(status(&empty, &ok(1, 3), at(14)), &empty, &handed_failure);
        assert_eq!(t(&back, types::PROGRAMMED), at(14));
    }

    #[test]
    fn transition_times_move_only_when_the_status_changes() {
        let first = status(&NodeSubnetStatus::default(), &ok(1, 1), at(10));
        let same = status(&first, &ok(2, 3), at(20));
        let t = |s: &NodeSubnetStatus| {
            find_condition(&s.conditions, types::PROGRAMMED)
                .expect("Programmed")
                .last_transition_time
                .clone()
        };
        assert_eq!(t(&same), at(10), "still True: the transition time stays");
        let failed = status(
            &same,
            &Outcome {
                failure: Some(Failure::Cni("x".into())),
                ..ok(2, 3)
            },
            at(30),
        );
        assert_eq!(t(&failed), at(30));
        // Other condition types are left alone.
        let mut with_other = failed.clone();
        with_other.conditions.push(new_condition(
            "BgpEstablished",
            ConditionStatus::True,
            "Up",
            "",
            None,
            at(1),
        ));
        let next = status(&with_other, &ok(2, 3), at(40));
        assert!(find_condition(&next.conditions, "BgpEstablished").is_some());
    }
}
