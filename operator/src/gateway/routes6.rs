//! RouteToNodes, IPv6 side (pure): which nodes clients reach over IPv6, and the `ip -6 route`
//! lines they install (issue #18), on dual-stack networks and IPv6 ones.
//!
//! [`super::status`] renders the IPv4 side and calls [`render`] for the IPv6 one with the
//! nodes the selector chose. The rule is the IPv4 one, per family: a node is IPv6-eligible
//! when it has an IPv6 subnet, an IPv6 node address and its agent's IPv6 underlay prefix lies
//! on a segment of an IPv6 `clientCidrs` entry (whichever fields hold them: `cidr` or
//! `secondaryCidr`, and so on), since the next hop must be on-link for the client. Clients
//! get each eligible node's IPv6 subnet via its IPv6 address and, when some nodes with an
//! IPv6 subnet are not eligible, the IPv6 range via the eligible ones (multipath with
//! `nexthop` when several): the packet enters there and takes the network's path to the pod's
//! node (the tunnel, a route, or the on-link range), whose reply goes straight back over the
//! underlay.
//!
//! Without an eligible node the IPv6 side renders no line and says why with the fix; the
//! IPv4 side is unaffected.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

/// A node's IPv6 side, as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member6 {
    /// The node's IPv6 pod subnet (`spec.cidr` or `spec.secondaryCidr`).
    pub subnet: Ipv6Net,
    /// Its IPv6 node address (`spec.nodeAddress` or `spec.secondaryNodeAddress`), when the
    /// node has an IPv6 InternalIP.
    pub address: Option<Ipv6Addr>,
    /// The agent's report of the IPv6 underlay prefix (`status.underlayPrefix` or
    /// `status.secondaryUnderlayPrefix`), when reported.
    pub segment: Option<Ipv6Net>,
}

/// The IPv6 side of a RouteToNodes gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered6 {
    /// `ip -6 route add ...` lines, in member order, the range last.
    pub routes: Vec<String>,
    /// The IPv6-eligible nodes.
    pub through: Vec<String>,
    /// Selected nodes that are not IPv6-eligible, each with why (`node-d (its IPv6 segment
    /// fd00:60::/64 is not in clientCidrs)`).
    pub left_out: Vec<String>,
    /// When no node is IPv6-eligible: why, and the fix, as a sentence.
    pub none: Option<String>,
}

/// `member`'s IPv6 address when it is IPv6-eligible for `clients`, else why not.
fn eligibility(member: &Member6, clients: &[Ipv6Net]) -> Result<Ipv6Addr, String> {
    let Some(address) = member.address else {
        return Err("no IPv6 node address".into());
    };
    match member.segment {
        None => Err(format!(
            "its agent has not reported the IPv6 segment of {address} yet"
        )),
        Some(s)
            if clients
                .iter()
                .any(|c| c.contains(&s.network()) || s.contains(&c.network())) =>
        {
            Ok(address)
        }
        Some(s) => Err(format!("its IPv6 segment {s} is not in clientCidrs")),
    }
}

/// The route clients install for the whole `range` via the entry nodes at `via` (at least
/// one): a plain next hop, or a multipath route with one `nexthop` each. `command` is
/// `ip route add` or `ip -6 route add`.
pub fn range_route<A: std::fmt::Display>(
    command: &str,
    range: impl std::fmt::Display,
    via: &[A],
) -> String {
    match via {
        [one] => format!("{command} {range} via {one}"),
        several => {
            let hops: Vec<String> = several.iter().map(|v| format!("nexthop via {v}")).collect();
            format!("{command} {range} {}", hops.join(" "))
        }
    }
}

/// The IPv6 routes for the selected nodes `selected` (name, IPv6 side; `None` for a node
/// without an IPv6 subnet yet) of a network whose IPv6 range is `range`, with the IPv6
/// `clientCidrs` entries `clients`; `with_subnet` counts the network's nodes holding an IPv6
/// subnet (selected or not): when the eligible ones are fewer, the range goes via them.
#[must_use]
pub fn render(
    selected: &[(&str, Option<&Member6>)],
    clients: &[Ipv6Net],
    range: Ipv6Net,
    with_subnet: usize,
) -> Rendered6 {
    let mut eligible: Vec<(&str, &Member6, Ipv6Addr)> = Vec::new();
    let mut left_out = Vec::new();
    for (node, member) in selected {
        let Some(member) = member else {
            left_out.push(format!("{node} (no IPv6 subnet yet)"));
            continue;
        };
        match eligibility(member, clients) {
            Ok(address) => eligible.push((node, member, address)),
            Err(why) => left_out.push(format!("{node} ({why})")),
        }
    }
    let mut routes: Vec<String> = eligible
        .iter()
        .map(|(_, m, a)| format!("ip -6 route add {} via {a}", m.subnet))
        .collect();
    if !eligible.is_empty() && eligible.len() < with_subnet {
        let via: Vec<Ipv6Addr> = eligible.iter().map(|(_, _, a)| *a).collect();
        routes.push(range_route("ip -6 route add", range, &via));
    }
    let none = if !eligible.is_empty() {
        None
    } else if clients.is_empty() {
        Some(format!(
            "spec.clientCidrs has no IPv6 range, so no node is a next hop for IPv6 clients; add the clients' IPv6 range (e.g. fd00:50::/64) to clientCidrs to route the pods' IPv6 range {range}"
        ))
    } else if selected.is_empty() {
        Some("no selected node has an IPv6 subnet".into())
    } else {
        let list: Vec<String> = clients.iter().map(ToString::to_string).collect();
        Some(format!(
            "no selected node has an IPv6 address on a segment of the IPv6 clientCidrs {} ({}); give the nodes an IPv6 InternalIP on the clients' IPv6 segment, or list that segment in clientCidrs",
            list.join(", "),
            left_out.join(", ")
        ))
    };
    Rendered6 {
        routes,
        through: eligible.iter().map(|(n, _, _)| (*n).to_owned()).collect(),
        left_out,
        none,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(subnet: &str, address: Option<&str>, segment: Option<&str>) -> Member6 {
        Member6 {
            subnet: subnet.parse().expect("subnet"),
            address: address.map(|a| a.parse().expect("address")),
            segment: segment.map(|s| s.parse().expect("segment")),
        }
    }

    fn nets(list: &[&str]) -> Vec<Ipv6Net> {
        list.iter().map(|c| c.parse().expect("cidr")).collect()
    }

    const RANGE: &str = "fd00:10:247::/56";

    #[test]
    fn ipv6_routes_follow_the_nodes_on_ipv6_client_segments() {
        let a = m(
            "fd00:10:247::/64",
            Some("fd00:50::11"),
            Some("fd00:50::/64"),
        );
        let b = m(
            "fd00:10:247:1::/64",
            Some("fd00:50::12"),
            Some("fd00:50::/64"),
        );
        let d = m(
            "fd00:10:247:3::/64",
            Some("fd00:60::11"),
            Some("fd00:60::/64"),
        );
        let bare = m("fd00:10:247:2::/64", None, None);
        let quiet = m("fd00:10:247:4::/64", Some("fd00:50::14"), None);
        struct Case<'a> {
            name: &'a str,
            selected: Vec<(&'a str, Option<&'a Member6>)>,
            clients: Vec<Ipv6Net>,
            with_subnet: usize,
            routes: Vec<&'a str>,
            through: Vec<&'a str>,
            left_out: Vec<&'a str>,
            none: Option<&'a str>,
        }
        let cases = [
            Case {
                name: "two eligible of three: subnets, then the range by multipath",
                selected: vec![
                    ("node-a", Some(&a)),
                    ("node-b", Some(&b)),
                    ("node-d", Some(&d)),
                ],
                clients: nets(&["fd00:50::/64"]),
                with_subnet: 3,
                routes: vec![
                    "ip -6 route add fd00:10:247::/64 via fd00:50::11",
                    "ip -6 route add fd00:10:247:1::/64 via fd00:50::12",
                    "ip -6 route add fd00:10:247::/56 nexthop via fd00:50::11 nexthop via fd00:50::12",
                ],
                through: vec!["node-a", "node-b"],
                left_out: vec!["node-d (its IPv6 segment fd00:60::/64 is not in clientCidrs)"],
                none: None,
            },
            Case {
                name: "one eligible: the range via it, no nexthop",
                selected: vec![("node-a", Some(&a)), ("node-c", Some(&bare))],
                clients: nets(&["fd00:50::/64"]),
                with_subnet: 2,
                routes: vec![
                    "ip -6 route add fd00:10:247::/64 via fd00:50::11",
                    "ip -6 route add fd00:10:247::/56 via fd00:50::11",
                ],
                through: vec!["node-a"],
                left_out: vec!["node-c (no IPv6 node address)"],
                none: None,
            },
            Case {
                name: "every node with an IPv6 subnet eligible: no range line",
                selected: vec![("node-a", Some(&a)), ("node-d", Some(&d))],
                clients: nets(&["fd00:50::/64", "fd00:60::/64"]),
                with_subnet: 2,
                routes: vec![
                    "ip -6 route add fd00:10:247::/64 via fd00:50::11",
                    "ip -6 route add fd00:10:247:3::/64 via fd00:60::11",
                ],
                through: vec!["node-a", "node-d"],
                left_out: vec![],
                none: None,
            },
            Case {
                name: "a wider client range holds the segment",
                selected: vec![("node-a", Some(&a))],
                clients: nets(&["fd00::/16"]),
                with_subnet: 1,
                routes: vec!["ip -6 route add fd00:10:247::/64 via fd00:50::11"],
                through: vec!["node-a"],
                left_out: vec![],
                none: None,
            },
            Case {
                name: "no IPv6 clientCidrs: nothing, and the fix",
                selected: vec![("node-a", Some(&a))],
                clients: vec![],
                with_subnet: 1,
                routes: vec![],
                through: vec![],
                left_out: vec!["node-a (its IPv6 segment fd00:50::/64 is not in clientCidrs)"],
                none: Some(
                    "spec.clientCidrs has no IPv6 range, so no node is a next hop for IPv6 clients; add the clients' IPv6 range (e.g. fd00:50::/64) to clientCidrs to route the pods' IPv6 range fd00:10:247::/56",
                ),
            },
            Case {
                name: "IPv6 clientCidrs but no node with an address there",
                selected: vec![
                    ("node-c", Some(&bare)),
                    ("node-d", Some(&d)),
                    ("node-e", Some(&quiet)),
                    ("node-f", None),
                ],
                clients: nets(&["fd00:50::/64"]),
                with_subnet: 4,
                routes: vec![],
                through: vec![],
                left_out: vec![
                    "node-c (no IPv6 node address)",
                    "node-d (its IPv6 segment fd00:60::/64 is not in clientCidrs)",
                    "node-e (its agent has not reported the IPv6 segment of fd00:50::14 yet)",
                    "node-f (no IPv6 subnet yet)",
                ],
                none: Some(
                    "no selected node has an IPv6 address on a segment of the IPv6 clientCidrs fd00:50::/64 (node-c (no IPv6 node address), node-d (its IPv6 segment fd00:60::/64 is not in clientCidrs), node-e (its agent has not reported the IPv6 segment of fd00:50::14 yet), node-f (no IPv6 subnet yet)); give the nodes an IPv6 InternalIP on the clients' IPv6 segment, or list that segment in clientCidrs",
                ),
            },
        ];
        for case in cases {
            let got = render(
                &case.selected,
                &case.clients,
                RANGE.parse().expect("range"),
                case.with_subnet,
            );
            assert_eq!(got.routes, case.routes, "{}", case.name);
            assert_eq!(got.through, case.through, "{}", case.name);
            assert_eq!(got.left_out, case.left_out, "{}", case.name);
            assert_eq!(got.none.as_deref(), case.none, "{}", case.name);
        }
    }
}
