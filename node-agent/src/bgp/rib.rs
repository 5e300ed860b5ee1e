//! Received UPDATEs turned into route changes, and the best path over all peers (pure).
//!
//! Each session keeps an Adj-RIB-In (prefix → path) fed by [`changes`]; the snapshot's
//! learned routes are [`best_routes`] over all of them. Only IPv4 unicast is accepted:
//! classic NLRI and withdrawn routes, and MP_REACH/MP_UNREACH for AFI 1/SAFI 1; other address
//! families are ignored. A route is refused (counted as withdrawn, replacing an earlier path
//! for the same prefix) when:
//! - its ORIGINATOR_ID is our router ID: a route reflector sent us our own route (RFC 4456);
//! - it has no IPv4 next hop;
//! - NetGauze found a malformed attribute calling for treat-as-withdraw (RFC 7606).
//!
//! A path holding our own AS is accepted (what routers call `allowas-in`): every node of a
//! network shares one AS, so an eBGP router hands node-a's subnet to node-b with that AS in the
//! path, and the speaker is a stub that never re-announces what it learns, so no loop can form
//! through it. Our own subnet coming back that way is dropped by the caller, with everything
//! else outside the cluster CIDR: prefixes are kept as the peer sent them.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use netgauze_bgp_pkt::path_attribute::{
    AsPath, AsPathSegmentType, MpReach, MpUnreach, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;

use super::message::DEFAULT_LOCAL_PREF;

/// What best-path selection needs of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Path {
    pub next_hop: Ipv4Addr,
    /// LOCAL_PREF from an iBGP peer, [`DEFAULT_LOCAL_PREF`] otherwise (an eBGP peer's is
    /// ignored, RFC 4271 §5.1.5).
    pub local_pref: u32,
    /// AS_PATH length: each AS of a sequence counts, a set counts once (RFC 4271 §9.1.2.2).
    pub as_path_len: usize,
    /// ORIGIN: 0 IGP, 1 EGP, 2 incomplete.
    pub origin: u8,
    /// MULTI_EXIT_DISC, 0 when absent.
    pub med: u32,
}

/// One change to a peer's Adj-RIB-In.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RibChange {
    Announce(Ipv4Net, Path),
    Withdraw(Ipv4Net),
}

/// Who receives the UPDATE: decides loops and whether LOCAL_PREF counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Receiver {
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    /// The session is eBGP.
    pub ebgp: bool,
}

/// The changes an UPDATE makes to the sending peer's Adj-RIB-In. `usable` is false when
/// NetGauze asks for the UPDATE to be treated as a withdrawal (RFC 7606).
pub(crate) fn changes(
    update: &BgpUpdateMessage,
    usable: bool,
    receiver: Receiver,
) -> Vec<RibChange> {
    let mut withdrawn: Vec<Ipv4Net> = update
        .withdraw_routes()
        .iter()
        .map(|address| address.network().address())
        .collect();
    let mut announced: Vec<(Ipv4Net, Hop)> = update
        .nlri()
        .iter()
        .map(|address| (address.network().address(), Hop::Classic))
        .collect();

    let mut next_hop = None;
    let mut as_path_len = 0;
    let mut local_pref = None;
    let mut origin = 0;
    let mut med = 0;
    let mut originator = None;
    for attribute in update.path_attributes() {
        match attribute.value() {
            PathAttributeValue::NextHop(hop) => next_hop = Some(hop.next_hop()),
            PathAttributeValue::AsPath(path) => as_path_len = path_length(path),
            PathAttributeValue::LocalPreference(pref) => local_pref = Some(pref.metric()),
            PathAttributeValue::Origin(value) => origin = u8::from(*value),
            PathAttributeValue::MultiExitDiscriminator(value) => med = value.metric(),
            PathAttributeValue::Originator(id) => originator = Some(id.id()),
            PathAttributeValue::MpReach(MpReach::Ipv4Unicast { next_hop, nlri, .. }) => {
                let hop = match next_hop {
                    IpAddr::V4(hop) => Some(*hop),
                    IpAddr::V6(_) => None,
                };
                announced.extend(nlri.iter().map(|a| (a.network().address(), Hop::Mp(hop))));
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => {
                withdrawn.extend(nlri.iter().map(|a| a.network().address()));
            }
            _ => {}
        }
    }

    let refused = !usable || originator == Some(receiver.router_id);
    let local_pref = if receiver.ebgp {
        DEFAULT_LOCAL_PREF
    } else {
        local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    };

    let mut result: Vec<RibChange> = withdrawn.into_iter().map(RibChange::Withdraw).collect();
    for (prefix, hop) in announced {
        let hop = match hop {
            Hop::Classic => next_hop,
            Hop::Mp(hop) => hop,
        };
        match hop {
            Some(next_hop) if !refused => result.push(RibChange::Announce(
                prefix,
                Path {
                    next_hop,
                    local_pref,
                    as_path_len,
                    origin,
                    med,
                },
            )),
            _ => result.push(RibChange::Withdraw(prefix)),
        }
    }
    result
}

/// Where an announced prefix's next hop comes from: classic NLRI use the NEXT_HOP attribute,
/// MP_REACH NLRI carry their own (`None` when it is not IPv4).
enum Hop {
    Classic,
    Mp(Option<Ipv4Addr>),
}

fn path_length(path: &AsPath) -> usize {
    let count = |kind: AsPathSegmentType, len: usize| match kind {
        AsPathSegmentType::AsSequence => len,
        AsPathSegmentType::AsSet => usize::from(len > 0),
    };
    match path {
        AsPath::As2PathSegments(segments) => segments
            .iter()
            .map(|s| count(s.segment_type(), s.as_numbers().len()))
            .sum(),
        AsPath::As4PathSegments(segments) => segments
            .iter()
            .map(|s| count(s.segment_type(), s.as_numbers().len()))
            .sum(),
    }
}

/// One peer's routes: prefix → path.
pub(crate) type AdjRibIn = BTreeMap<Ipv4Net, Path>;

/// Applies changes in order; true if the RIB changed.
pub(crate) fn apply(rib: &mut AdjRibIn, changes: Vec<RibChange>) -> bool {
    let mut changed = false;
    for change in changes {
        changed |= match change {
            RibChange::Announce(prefix, path) => rib.insert(prefix, path.clone()) != Some(path),
            RibChange::Withdraw(prefix) => rib.remove(&prefix).is_some(),
        };
    }
    changed
}

/// A session's routes and whether it is eBGP (preferred over iBGP on a tie).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PeerRib {
    pub ebgp: bool,
    pub routes: AdjRibIn,
}

/// Per prefix, the next hop of the best path over all peers (RFC 4271 §9.1.2, simplified):
/// highest LOCAL_PREF, then shortest AS_PATH, lowest ORIGIN, lowest MED (compared across
/// neighbour ASes too), eBGP over iBGP, and finally the lowest peer address, so the choice is
/// deterministic.
pub(crate) fn best_routes(ribs: &BTreeMap<Ipv4Addr, PeerRib>) -> BTreeMap<Ipv4Net, Ipv4Addr> {
    let mut best: BTreeMap<Ipv4Net, (BestKey, Ipv4Addr)> = BTreeMap::new();
    for (peer, rib) in ribs {
        for (prefix, path) in &rib.routes {
            let key = (
                Reverse(path.local_pref),
                path.as_path_len,
                path.origin,
                path.med,
                !rib.ebgp,
                *peer,
            );
            match best.get(prefix) {
                Some((current, _)) if *current <= key => {}
                _ => {
                    best.insert(*prefix, (key, path.next_hop));
                }
            }
        }
    }
    best.into_iter()
        .map(|(prefix, (_, next_hop))| (prefix, next_hop))
        .collect()
}

/// Lower is better.
type BestKey = (Reverse<u32>, usize, u8, u32, bool, Ipv4Addr);

#[cfg(test)]
mod tests {
    use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress};
    use netgauze_bgp_pkt::path_attribute::{
        As2PathSegment, As4Path, As4PathSegment, LocalPreference, MultiExitDiscriminator, NextHop,
        Origin, Originator, PathAttribute,
    };

    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 1);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 2);
    const NODE2: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 3);

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("prefix")
    }

    fn nlri(prefixes: &[&str]) -> Vec<Ipv4UnicastAddress> {
        prefixes
            .iter()
            .map(|p| {
                Ipv4UnicastAddress::new_no_path_id(Ipv4Unicast::from_net(net(p)).expect("unicast"))
            })
            .collect()
    }

    fn attr(value: PathAttributeValue) -> PathAttribute {
        let optional = value.can_be_optional().unwrap_or(false);
        let transitive = value.can_be_transitive().unwrap_or(true);
        PathAttribute::from(optional, transitive, false, false, value).expect("valid flags")
    }

    fn as_path(asns: &[u32]) -> PathAttribute {
        attr(PathAttributeValue::AsPath(AsPath::As4PathSegments(
            vec![As4PathSegment::new(AsPathSegmentType::AsSequence, asns)].into(),
        )))
    }

    fn base(asns: &[u32]) -> Vec<PathAttribute> {
        vec![
            attr(PathAttributeValue::Origin(Origin::IGP)),
            as_path(asns),
            attr(PathAttributeValue::NextHop(NextHop::new(ROUTER))),
        ]
    }

    fn path(next_hop: Ipv4Addr, as_path_len: usize) -> Path {
        Path {
            next_hop,
            local_pref: DEFAULT_LOCAL_PREF,
            as_path_len,
            origin: 0,
            med: 0,
        }
    }

    const EBGP: Receiver = Receiver {
        local_asn: 65001,
        router_id: ME,
        ebgp: true,
    };
    const IBGP: Receiver = Receiver {
        local_asn: 65000,
        router_id: ME,
        ebgp: false,
    };

    #[test]
    fn updates_become_announcements_and_withdrawals() {
        let mp_reach = |hop: IpAddr, prefixes: &[&str]| {
            attr(PathAttributeValue::MpReach(MpReach::Ipv4Unicast {
                next_hop: hop,
                next_hop_local: None,
                nlri: nlri(prefixes).into(),
            }))
        };
        let cases: Vec<(&str, BgpUpdateMessage, bool, Receiver, Vec<RibChange>)> = vec![
            (
                "classic NLRI with NEXT_HOP",
                BgpUpdateMessage::new(vec![], base(&[65000]), nlri(&["10.250.9.0/24"])),
                true,
                EBGP,
                vec![RibChange::Announce(net("10.250.9.0/24"), path(ROUTER, 1))],
            ),
            (
                "withdrawn routes",
                BgpUpdateMessage::new(nlri(&["10.250.9.0/24", "10.250.7.0/24"]), vec![], vec![]),
                true,
                EBGP,
                vec![
                    RibChange::Withdraw(net("10.250.9.0/24")),
                    RibChange::Withdraw(net("10.250.7.0/24")),
                ],
            ),
            (
                "our AS in the path is accepted: nodes share one AS and never re-announce",
                BgpUpdateMessage::new(vec![], base(&[65000, 65001]), nlri(&["10.244.1.0/24"])),
                true,
                EBGP,
                vec![RibChange::Announce(net("10.244.1.0/24"), path(ROUTER, 2))],
            ),
            (
                "our AS in AS4_PATH (2-octet session) is accepted too",
                BgpUpdateMessage::new(
                    vec![],
                    vec![
                        attr(PathAttributeValue::Origin(Origin::IGP)),
                        attr(PathAttributeValue::AsPath(AsPath::As2PathSegments(
                            vec![As2PathSegment::new(
                                AsPathSegmentType::AsSequence,
                                vec![65000, 23456],
                            )]
                            .into(),
                        ))),
                        attr(PathAttributeValue::As4Path(As4Path::new(vec![
                            As4PathSegment::new(
                                AsPathSegmentType::AsSequence,
                                vec![65000, 4_200_000_001],
                            ),
                        ]))),
                        attr(PathAttributeValue::NextHop(NextHop::new(ROUTER))),
                    ],
                    nlri(&["10.244.1.0/24"]),
                ),
                true,
                Receiver {
                    local_asn: 4_200_000_001,
                    ..EBGP
                },
                vec![RibChange::Announce(net("10.244.1.0/24"), path(ROUTER, 2))],
            ),
            (
                "reflected back to its originator",
                BgpUpdateMessage::new(
                    vec![],
                    [
                        base(&[]),
                        vec![attr(PathAttributeValue::Originator(Originator::new(ME)))],
                    ]
                    .concat(),
                    nlri(&["10.244.1.0/24"]),
                ),
                true,
                IBGP,
                vec![RibChange::Withdraw(net("10.244.1.0/24"))],
            ),
            (
                "reflected from another node over iBGP, with LOCAL_PREF",
                BgpUpdateMessage::new(
                    vec![],
                    vec![
                        attr(PathAttributeValue::Origin(Origin::IGP)),
                        as_path(&[]),
                        attr(PathAttributeValue::NextHop(NextHop::new(NODE2))),
                        attr(PathAttributeValue::LocalPreference(LocalPreference::new(
                            200,
                        ))),
                        attr(PathAttributeValue::Originator(Originator::new(NODE2))),
                    ],
                    nlri(&["10.244.2.0/24"]),
                ),
                true,
                IBGP,
                vec![RibChange::Announce(
                    net("10.244.2.0/24"),
                    Path {
                        local_pref: 200,
                        ..path(NODE2, 0)
                    },
                )],
            ),
            (
                "an eBGP peer's LOCAL_PREF is ignored, MED and ORIGIN kept",
                BgpUpdateMessage::new(
                    vec![],
                    vec![
                        attr(PathAttributeValue::Origin(Origin::Incomplete)),
                        as_path(&[65000, 65010]),
                        attr(PathAttributeValue::NextHop(NextHop::new(ROUTER))),
                        attr(PathAttributeValue::LocalPreference(LocalPreference::new(
                            500,
                        ))),
                        attr(PathAttributeValue::MultiExitDiscriminator(
                            MultiExitDiscriminator::new(7),
                        )),
                    ],
                    nlri(&["10.250.9.0/24"]),
                ),
                true,
                EBGP,
                vec![RibChange::Announce(
                    net("10.250.9.0/24"),
                    Path {
                        origin: 2,
                        med: 7,
                        ..path(ROUTER, 2)
                    },
                )],
            ),
            (
                "MP_REACH and MP_UNREACH for IPv4 unicast",
                BgpUpdateMessage::new(
                    vec![],
                    vec![
                        attr(PathAttributeValue::Origin(Origin::IGP)),
                        as_path(&[65000]),
                        mp_reach(IpAddr::V4(NODE2), &["10.250.1.0/24"]),
                        attr(PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast {
                            nlri: nlri(&["10.250.2.0/24"]).into(),
                        })),
                    ],
                    vec![],
                ),
                true,
                EBGP,
                vec![
                    RibChange::Withdraw(net("10.250.2.0/24")),
                    RibChange::Announce(net("10.250.1.0/24"), path(NODE2, 1)),
                ],
            ),
            (
                "an IPv6 next hop is no use",
                BgpUpdateMessage::new(
                    vec![],
                    vec![
                        attr(PathAttributeValue::Origin(Origin::IGP)),
                        as_path(&[65000]),
                        mp_reach("fe80::1".parse().expect("v6"), &["10.250.1.0/24"]),
                    ],
                    vec![],
                ),
                true,
                EBGP,
                vec![RibChange::Withdraw(net("10.250.1.0/24"))],
            ),
            (
                "treat-as-withdraw",
                BgpUpdateMessage::new(vec![], base(&[65000]), nlri(&["10.250.9.0/24"])),
                false,
                EBGP,
                vec![RibChange::Withdraw(net("10.250.9.0/24"))],
            ),
            (
                "End-of-RIB: nothing",
                BgpUpdateMessage::new(vec![], vec![], vec![]),
                true,
                EBGP,
                vec![],
            ),
        ];
        for (name, update, usable, receiver, expected) in cases {
            assert_eq!(changes(&update, usable, receiver), expected, "{name}");
        }
    }

    #[test]
    fn as_sets_count_once_in_the_path_length() {
        let path = AsPath::As4PathSegments(
            vec![
                As4PathSegment::new(AsPathSegmentType::AsSequence, vec![1, 2]),
                As4PathSegment::new(AsPathSegmentType::AsSet, vec![3, 4, 5]),
            ]
            .into(),
        );
        assert_eq!(path_length(&path), 3);
    }

    #[test]
    fn applying_changes_reports_whether_anything_changed() {
        let mut rib = AdjRibIn::new();
        let a = net("10.250.9.0/24");
        assert!(apply(
            &mut rib,
            vec![RibChange::Announce(a, path(ROUTER, 1))]
        ));
        assert!(!apply(
            &mut rib,
            vec![RibChange::Announce(a, path(ROUTER, 1))]
        ));
        assert!(apply(
            &mut rib,
            vec![RibChange::Announce(a, path(NODE2, 1))]
        ));
        assert!(!apply(
            &mut rib,
            vec![RibChange::Withdraw(net("10.1.0.0/16"))]
        ));
        assert!(apply(&mut rib, vec![RibChange::Withdraw(a)]));
        assert!(rib.is_empty());
    }

    #[test]
    fn the_best_path_wins_and_ties_break_on_the_lowest_peer_address() {
        let a = net("10.250.9.0/24");
        let r1 = Ipv4Addr::new(192, 168, 91, 2);
        let r2 = Ipv4Addr::new(192, 168, 91, 4);
        let hop1 = Ipv4Addr::new(10, 0, 0, 1);
        let hop2 = Ipv4Addr::new(10, 0, 0, 2);
        let rib = |ebgp: bool, path: Path| PeerRib {
            ebgp,
            routes: [(a, path)].into(),
        };
        let cases: Vec<(&str, PeerRib, PeerRib, Ipv4Addr)> = vec![
            (
                "shorter AS path",
                rib(true, path(hop1, 3)),
                rib(true, path(hop2, 2)),
                hop2,
            ),
            (
                "higher LOCAL_PREF beats a shorter path",
                rib(
                    false,
                    Path {
                        local_pref: 200,
                        ..path(hop1, 3)
                    },
                ),
                rib(true, path(hop2, 1)),
                hop1,
            ),
            (
                "lower ORIGIN",
                rib(
                    true,
                    Path {
                        origin: 2,
                        ..path(hop1, 1)
                    },
                ),
                rib(true, path(hop2, 1)),
                hop2,
            ),
            (
                "lower MED",
                rib(
                    true,
                    Path {
                        med: 5,
                        ..path(hop1, 1)
                    },
                ),
                rib(
                    true,
                    Path {
                        med: 1,
                        ..path(hop2, 1)
                    },
                ),
                hop2,
            ),
            (
                "eBGP over iBGP",
                rib(false, path(hop1, 1)),
                rib(true, path(hop2, 1)),
                hop2,
            ),
            (
                "all equal: lowest peer address",
                rib(true, path(hop1, 1)),
                rib(true, path(hop2, 1)),
                hop1,
            ),
        ];
        for (name, first, second, expected) in cases {
            let ribs: BTreeMap<Ipv4Addr, PeerRib> = [(r1, first), (r2, second)].into();
            assert_eq!(best_routes(&ribs), [(a, expected)].into(), "{name}");
        }
    }

    #[test]
    fn prefixes_from_different_peers_are_all_learned() {
        let ribs: BTreeMap<Ipv4Addr, PeerRib> = [
            (
                ROUTER,
                PeerRib {
                    ebgp: true,
                    routes: [(net("10.250.9.0/24"), path(ROUTER, 1))].into(),
                },
            ),
            (
                NODE2,
                PeerRib {
                    ebgp: false,
                    routes: [(net("10.244.2.0/24"), path(NODE2, 0))].into(),
                },
            ),
        ]
        .into();
        assert_eq!(
            best_routes(&ribs),
            [
                (net("10.244.2.0/24"), NODE2),
                (net("10.250.9.0/24"), ROUTER)
            ]
            .into()
        );
    }
}
