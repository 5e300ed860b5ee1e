//! Rules across PodNetworks that admission cannot check, because they involve more than one
//! object: overlapping CIDRs, nodes selected by several networks, and a pod range holding the
//! addresses of nodes ([`nodes_inside`]).
//!
//! Sits between the watch caches and [`crate::ipam`]: the controller builds a [`NetworkView`]
//! per PodNetwork, asks [`earlier_overlap`] whether a network may allocate at all, and builds
//! [`Claims`] once per reconcile to find, for every Node, the one network that owns it. Only
//! owned nodes reach IPAM; the others are reported in status.
//!
//! Both rules resolve a conflict with the same stable "who was first" order ([`order`]):
//! earlier `metadata.creationTimestamp`, then name. The earlier network keeps working and the
//! later one reports the conflict, so creating a bad PodNetwork never disturbs one that works,
//! and every operator replica (and every restart) reaches the same verdict.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use std::net::IpAddr;

use causeway_crds::cidr::overlaps_any;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

use crate::selector;

/// What the conflict rules need to know about one PodNetwork.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.creationTimestamp` (absent only for objects not yet persisted).
    pub created: Option<Time>,
    /// `spec.cidr` and `spec.secondaryCidr` parsed; `None` when the spec's ranges do not
    /// parse (the network reports InvalidSpec).
    pub cidrs: Option<Vec<IpNet>>,
    /// `spec.nodeSelector`.
    pub selector: Option<LabelSelector>,
    /// Whether `metadata.deletionTimestamp` is set. A network being deleted keeps its CIDR
    /// and its nodes until it is gone: agents still carry its routes until then.
    pub deleting: bool,
}

/// The "who was first" order: earlier creation first, then name. A network without a
/// creation time sorts after every network that has one.
#[must_use]
pub fn order(a: &NetworkView, b: &NetworkView) -> Ordering {
    let created = match (&a.created, &b.created) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    created.then_with(|| a.name.cmp(&b.name))
}

/// The first network (by [`order`]) that orders before `me` and has a valid range overlapping
/// one of `me`'s, even while it is being deleted (its subnets are programmed until it is gone). `None` when `me` has no valid CIDR or overlaps nothing
/// earlier.
///
/// The later network of an overlapping pair is the one in conflict; it allocates nothing until
/// its CIDR is changed or the earlier network is deleted.
#[must_use]
pub fn earlier_overlap<'a>(me: &NetworkView, all: &'a [NetworkView]) -> Option<&'a NetworkView> {
    let mine = me.cidrs.as_ref()?;
    let overlap = |theirs: &Vec<IpNet>| {
        mine.iter()
            .any(|m| theirs.iter().any(|t| overlaps_any(*m, *t)))
    };
    all.iter()
        .filter(|other| other.name != me.name)
        .filter(|other| other.cidrs.as_ref().is_some_and(overlap))
        .filter(|other| order(other, me) == Ordering::Less)
        .min_by(|a, b| order(a, b))
}

/// The networks that may own nodes, in [`order`]: built once per reconcile from every
/// PodNetwork, then asked about each Node.
///
/// A network is eligible (even while being deleted) when it has a valid CIDR that overlaps no
/// earlier network, and has a well-formed selector. A node belongs to the first eligible
/// network whose selector matches it; later networks that also select it report it as claimed
/// elsewhere. Building costs O(M²) for M networks (a handful); each lookup O(M) selector
/// evaluations, so 5,000 nodes cost 5,000 × M cheap checks.
#[derive(Clone, Debug)]
pub struct Claims<'a> {
    eligible: Vec<&'a NetworkView>,
}

impl<'a> Claims<'a> {
    /// Orders the eligible networks of `all` once.
    #[must_use]
    pub fn new(all: &'a [NetworkView]) -> Self {
        let mut eligible: Vec<&NetworkView> = all
            .iter()
            .filter(|n| n.cidrs.is_some())
            .filter(|n| selector::validate(n.selector.as_ref()).is_ok())
            .filter(|n| earlier_overlap(n, all).is_none())
            .collect();
        eligible.sort_by(|a, b| order(a, b));
        Self { eligible }
    }

    /// The network that owns a node with these labels, if any.
    #[must_use]
    pub fn owner_view(&self, labels: &BTreeMap<String, String>) -> Option<&'a NetworkView> {
        self.eligible
            .iter()
            .copied()
            .find(|n| selector::matches(n.selector.as_ref(), labels).unwrap_or(false))
    }

    /// The name of the network that owns a node with these labels, if any.
    #[must_use]
    pub fn owner(&self, labels: &BTreeMap<String, String>) -> Option<&'a str> {
        self.owner_view(labels).map(|n| n.name.as_str())
    }

    /// Whether the network called `name` may own nodes at all.
    #[must_use]
    pub fn is_eligible(&self, name: &str) -> bool {
        self.eligible.iter().any(|n| n.name == name)
    }
}

/// The network that owns a node with these labels (see [`Claims`]; build a [`Claims`] instead
/// when asking about many nodes).
#[must_use]
pub fn owner_of<'a>(
    labels: &BTreeMap<String, String>,
    all: &'a [NetworkView],
) -> Option<&'a NetworkView> {
    Claims::new(all).owner_view(labels)
}

/// Why `cidr` (the spec field `field`) cannot be a pod range because it overlaps the cluster's
/// Service range (`services`: where the range comes from, e.g. `ServiceCIDR kubernetes`, and
/// the range), or `None`: a pod given a Service address would never receive the traffic
/// kube-proxy steers to that Service.
#[must_use]
pub fn services_inside(field: &str, cidr: IpNet, services: &[(String, IpNet)]) -> Option<String> {
    let (name, range) = services
        .iter()
        .find(|(_, range)| overlaps_any(cidr, *range))?;
    Some(format!(
        "{field} {cidr} overlaps the Service range {range} ({name}): pods would take Service addresses. Choose a range outside it and outside the node network (e.g. 10.244.0.0/16 next to a Service range 10.96.0.0/12); nothing is allocated until then."
    ))
}

/// Why `cidr` (the spec field `field`) cannot be a pod range because it holds nodes' own
/// addresses (every node, selected or not: a pod address equal to a node's, or a node
/// answering ARP or NDP for its segment's router, cuts nodes off), or `None`. `nodes`: (name,
/// InternalIP), every InternalIP of every family.
#[must_use]
pub fn nodes_inside(field: &str, cidr: IpNet, nodes: &[(String, IpAddr)]) -> Option<String> {
    let mut inside: Vec<String> = nodes
        .iter()
        .filter(|(_, ip)| cidr.contains(ip))
        .map(|(n, ip)| format!("{n} ({ip})"))
        .collect();
    if inside.is_empty() {
        return None;
    }
    inside.sort();
    let total = inside.len();
    inside.truncate(5);
    let more = if total > 5 {
        format!(" and {} more", total - 5)
    } else {
        String::new()
    };
    Some(format!(
        "{field} {cidr} holds the addresses of node {}{more}: pods would take addresses of the node network (its nodes, its routers). Choose a range no node, router or service uses (e.g. 10.244.0.0/16); nothing is allocated until then.",
        inside.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_range_holding_node_addresses_is_refused_with_the_nodes_named() {
        let ip = |s: &str| -> IpAddr { s.parse().expect("address") };
        let nodes = vec![
            ("node-a".to_string(), ip("192.168.50.11")),
            ("node-a".to_string(), ip("fd00:50::11")),
            ("node-d".to_string(), ip("192.168.60.11")),
        ];
        let net = |s: &str| -> IpNet { s.parse().expect("net") };
        let field = "spec.cidr";
        assert_eq!(nodes_inside(field, net("10.244.0.0/16"), &nodes), None);
        assert_eq!(nodes_inside(field, net("fd00:10:244::/56"), &nodes), None);
        let why = nodes_inside("spec.secondaryCidr", net("fd00::/16"), &nodes).expect("refused");
        assert!(
            why.starts_with(
                "spec.secondaryCidr fd00::/16 holds the addresses of node node-a (fd00:50::11):"
            ),
            "{why}"
        );
        let why = nodes_inside(field, net("192.168.0.0/16"), &nodes).expect("refused");
        assert!(
            why.starts_with("spec.cidr 192.168.0.0/16 holds the addresses of node node-a (192.168.50.11), node-d (192.168.60.11):"),
            "{why}"
        );
        let why = nodes_inside(field, net("192.168.60.0/24"), &nodes).expect("refused");
        assert!(
            why.contains("node-d (192.168.60.11)") && !why.contains("node-a"),
            "{why}"
        );
    }
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn at(second: i64) -> Option<Time> {
        let t = k8s_openapi::jiff::Timestamp::from_second(second).expect("valid test time");
        Some(Time(t))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn zone(value: &str) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(labels(&[("zone", value)])),
            match_expressions: None,
        })
    }

    fn net(name: &str, created: i64, cidr: &str, selector: Option<LabelSelector>) -> NetworkView {
        NetworkView {
            name: name.to_owned(),
            created: at(created),
            cidrs: cidr.parse().ok().map(|c| vec![c]),
            selector,
            deleting: false,
        }
    }

    fn deleting(mut n: NetworkView) -> NetworkView {
        n.deleting = true;
        n
    }

    #[test]
    fn order_puts_the_earlier_network_first_then_the_smaller_name() {
        let cases: Vec<(&str, NetworkView, NetworkView, Ordering)> = vec![
            (
                "earlier creation wins over name",
                net("z", 1, "10.0.0.0/16", None),
                net("a", 2, "10.1.0.0/16", None),
                Ordering::Less,
            ),
            (
                "same creation time falls back to the name",
                net("a", 5, "10.0.0.0/16", None),
                net("b", 5, "10.1.0.0/16", None),
                Ordering::Less,
            ),
            (
                "a network without creation time comes last",
                NetworkView {
                    created: None,
                    ..net("a", 0, "10.0.0.0/16", None)
                },
                net("b", 9, "10.1.0.0/16", None),
                Ordering::Greater,
            ),
            (
                "a network equals itself",
                net("a", 5, "10.0.0.0/16", None),
                net("a", 5, "10.0.0.0/16", None),
                Ordering::Equal,
            ),
        ];
        for (name, a, b, want) in cases {
            assert_eq!(order(&a, &b), want, "{name}");
            assert_eq!(order(&b, &a), want.reverse(), "{name} (reversed)");
        }
    }

    #[test]
    fn the_later_network_of_an_overlapping_pair_is_the_one_in_conflict() {
        let all = vec![
            net("first", 1, "10.244.0.0/16", None),
            net("inside-first", 2, "10.244.8.0/24", None),
            net("around-first", 3, "10.0.0.0/8", None),
            net("apart", 4, "10.245.0.0/16", None),
            net("broken", 5, "not-a-cidr", None),
            deleting(net("going", 0, "192.168.0.0/16", None)),
            net("after-going", 6, "192.168.1.0/24", None),
            net("same-time-b", 7, "172.16.0.0/16", None),
            net("same-time-a", 7, "172.16.0.0/16", None),
        ];
        let cases: &[(&str, Option<&str>, &str)] = &[
            ("first", None, "the first network conflicts with nothing"),
            ("inside-first", Some("first"), "a contained cidr overlaps"),
            (
                "around-first",
                Some("first"),
                "the earliest of several wins",
            ),
            ("apart", Some("around-first"), "any earlier overlap counts"),
            ("broken", None, "an invalid cidr overlaps nothing"),
            (
                "after-going",
                Some("going"),
                "a network being deleted holds its cidr until it is gone",
            ),
            ("same-time-a", None, "equal times are broken by name"),
            ("same-time-b", Some("same-time-a"), "the larger name loses"),
        ];
        for (me, want, why) in cases {
            let me = all.iter().find(|n| n.name == *me).expect("test network");
            let got = earlier_overlap(me, &all).map(|n| n.name.as_str());
            assert_eq!(got, *want, "{}: {why}", me.name);
        }
    }

    #[test]
    fn a_node_belongs_to_the_first_eligible_network_that_selects_it() {
        let bad_selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: "Equals".into(),
                values: Some(vec!["a".into()]),
            }]),
        });
        let all = vec![
            net("zone-b", 3, "10.2.0.0/16", zone("b")),
            net("zone-a", 2, "10.1.0.0/16", zone("a")),
            net("zone-a-overlapping", 1, "10.1.0.0/24", zone("c")),
            net("malformed", 0, "10.9.0.0/16", bad_selector),
            deleting(net("zone-e-going", 0, "10.8.0.0/16", zone("e"))),
            net("broken-cidr", 0, "nope", None),
            net("catch-all", 4, "10.3.0.0/16", None),
            net("zone-d-late", 5, "10.4.0.0/16", zone("d")),
        ];
        let claims = Claims::new(&all);
        type Labels = &'static [(&'static str, &'static str)];
        let cases: &[(Labels, Option<&str>, &str)] = &[
            (
                &[("zone", "a")],
                Some("catch-all"),
                "zone-a overlaps an earlier network, so the catch-all owns zone a",
            ),
            (
                &[("zone", "b")],
                Some("zone-b"),
                "the earlier selector wins",
            ),
            (
                &[("zone", "c")],
                Some("zone-a-overlapping"),
                "the earliest network of an overlapping pair works normally",
            ),
            (
                &[("zone", "d")],
                Some("catch-all"),
                "a later network selecting the node does not take it",
            ),
            (&[], Some("catch-all"), "a node without labels"),
            (
                &[("zone", "e")],
                Some("zone-e-going"),
                "a network being deleted keeps its nodes until it is gone",
            ),
        ];
        for (node, want, why) in cases {
            let node = labels(node);
            assert_eq!(claims.owner(&node), *want, "{why}");
            assert_eq!(
                owner_of(&node, &all).map(|n| n.name.as_str()),
                *want,
                "{why} (owner_of)"
            );
        }
        for (name, eligible) in [
            ("zone-a-overlapping", true),
            ("zone-a", false),
            ("malformed", false),
            ("zone-e-going", true),
            ("broken-cidr", false),
            ("catch-all", true),
        ] {
            assert_eq!(claims.is_eligible(name), eligible, "{name}");
        }
    }

    #[test]
    fn no_network_owns_a_node_nothing_selects() {
        let all = vec![net("zone-a", 1, "10.1.0.0/16", zone("a"))];
        assert_eq!(Claims::new(&all).owner(&labels(&[("zone", "b")])), None);
        assert_eq!(Claims::new(&[]).owner(&labels(&[("zone", "a")])), None);
    }
}
