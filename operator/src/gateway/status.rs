//! OverlayGateway status (pure): which nodes let machines that are not nodes into a
//! PodNetwork, and the exact routes those machines must install (strategy RouteToNodes).
//!
//! RouteToNodes needs nothing from the agents beyond what every mode already does: a node
//! forwards a client's packet for one of its own pods to its bridge, and for another node's
//! pod into the network's path to that node (VXLAN, a route, or the on-link range). So the
//! gateway is the rendering: for every eligible node (selected by `routeToNodes.nodeSelector`,
//! holding a subnet, and on a segment of one of `clientCidrs`, since a route's next hop must
//! be on-link for the client), its subnet via its address; and when some nodes of the network
//! are not eligible, the whole pod range via the eligible ones, so their pods are reached
//! through the overlay. Each line is an `ip route` command, ready to paste. On a dual-stack
//! Overlay network the same again for IPv6 ([`super::routes6`]): `ip -6 route` lines via the
//! nodes whose IPv6 underlay prefix lies in an IPv6 `clientCidrs` entry; the Ready message
//! names the families clients reach, and why IPv6 has no route when it has none.
//!
//! BridgeHosts: the candidates are the selected nodes whose agent is alive and whose
//! segment holds the VIP; their agents elect the holder through the gateway's Lease
//! ([`causeway_kube::election`]), which this module reads (never writes) into
//! `status.activeHost` and, when the holder changed, `lastFailoverTime`/`lastFailoverReason`.
//! Clients need one route: the pod range via the VIP.
//!
//! ClientJoin: each listed client runs the agent in client mode and renews a heartbeat Lease
//! while its tunnels are programmed; `status.clients` says which joined (and since when), and
//! Ready is True once all have. Nodes program the clients from the spec, not from here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use causeway_crds::cidr::{overlaps, overlaps_any};
use causeway_crds::conditions::{ConditionStatus, new_condition, reasons, set_condition, types};
use causeway_crds::ownership;
use causeway_crds::v1alpha1::GatewayClientStatus;
use causeway_crds::v1alpha1::GatewayStrategy;
use causeway_crds::vtep::client_vtep_mac;
use causeway_crds::{OverlayGatewaySpec, OverlayGatewayStatus, PodNetworkSpec, selector};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use reasons::{CLIENT_CIDR_OVERLAPS_PODS, INVALID_SPEC};

use super::credentials;
use super::routes6::{self, Member6};

/// One node of the gateway's network, as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node: String,
    /// The node's IPv4 side, when it has an IPv4 subnet and an IPv4 address.
    pub v4: Option<Member4>,
    /// The node's IPv6 side, when it has an IPv6 subnet.
    pub v6: Option<Member6>,
    pub labels: BTreeMap<String, String>,
    /// The node's agent reports that it cannot program the node at all (its NodeSubnet's
    /// current `Programmed` is False with `InvalidConfiguration` or `UnderlayNotFound`): its
    /// agent leaves every election, so it is no candidate. The reason, when so.
    pub unprogrammable: Option<String>,
}

/// A node's IPv4 side, as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member4 {
    /// The node's IPv4 pod subnet (`spec.cidr` or `spec.secondaryCidr`).
    pub subnet: Ipv4Net,
    /// Its IPv4 node address.
    pub address: Ipv4Addr,
    /// The agent's report of the IPv4 underlay prefix (`status.underlayPrefix` or
    /// `status.secondaryUnderlayPrefix`), when reported.
    pub segment: Option<Ipv4Net>,
}

impl Member {
    /// The node's underlay segments its agent reported, of both families.
    #[must_use]
    pub fn segments(&self) -> Vec<IpNet> {
        let v4 = self.v4.as_ref().and_then(|v| v.segment);
        let v6 = self.v6.as_ref().and_then(|v| v.segment);
        [v4.map(IpNet::V4), v6.map(IpNet::V6)]
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The gateway's election Lease, as far as the status needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Election {
    pub holder: Option<String>,
    /// Why the holder took over ([`causeway_kube::election::REASON`]); absent on a first
    /// election.
    pub reason: Option<String>,
    pub previous: Option<String>,
    pub acquired: Option<Time>,
    /// A candidate found the unheld VIP answered by another machine
    /// ([`causeway_kube::election::VIP_IN_USE`]).
    pub in_use: Option<String>,
}

/// What the status is computed from.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub generation: Option<i64>,
    pub spec: &'a OverlayGatewaySpec,
    /// The PodNetwork `spec.network` names, if it exists.
    pub network: Option<&'a PodNetworkSpec>,
    /// The network's nodes with a NodeSubnet, sorted by node.
    pub members: &'a [Member],
    /// Nodes whose agent stopped reporting (heartbeat): never candidates.
    pub silent: &'a BTreeSet<String>,
    /// BridgeHosts: the election Lease, if it exists.
    pub election: Option<&'a Election>,
    /// VIPs of the other BridgeHosts gateways, with their names.
    pub other_vips: &'a [(String, String)],
    /// Addresses that belong to someone ([`ownership::network_owners`]): no ClientJoin client
    /// may take one.
    pub owners: &'a ownership::Owners,
    /// ClientJoin: the clients whose heartbeat Lease is live and says they joined, by name.
    pub joined: &'a BTreeSet<String>,
    /// ClientJoin: clients whose heartbeat Lease is live but says they cannot join, with
    /// why (the client's own words).
    pub refused: &'a BTreeMap<String, String>,
    /// The gateway's name, for messages.
    pub gateway_name: &'a str,
    /// ClientJoin: the namespace of the clients' ServiceAccounts
    /// ([`super::credentials`]), for messages.
    pub client_namespace: &'a str,
    /// ClientJoin: why the operator could not create or delete a client's ServiceAccount,
    /// if it could not.
    pub credentials_error: Option<&'a str>,
}

/// What [`render`] decides.
struct Rendered {
    routes: Vec<String>,
    state: ConditionStatus,
    reason: &'static str,
    message: String,
}

/// Ready=False for `reason`, with nothing for clients to install.
fn not_ready(reason: &'static str, message: String) -> Rendered {
    Rendered {
        routes: vec![],
        state: ConditionStatus::False,
        reason,
        message,
    }
}

/// ClientJoin: addresses checked against the network, and who has joined.
fn client_join(input: &Input, network: &PodNetworkSpec, ranges: &[IpNet]) -> Rendered {
    let spec = input.spec;
    if network.mode != causeway_crds::v1alpha1::PodNetworkMode::Overlay {
        return not_ready(
            INVALID_SPEC,
            format!(
                "PodNetwork {} uses {:?} mode; ClientJoin needs an Overlay network (clients join through VXLAN). Use RouteToNodes or BridgeHosts instead.",
                spec.network, network.mode
            ),
        );
    }
    let clients = spec
        .client_join
        .as_ref()
        .map(|j| j.clients.as_slice())
        .unwrap_or_default();
    // The same check the agents make before programming a client: nothing is programmed
    // for a client refused here.
    let refused: Vec<ownership::Refusal> = ownership::check_clients(clients, ranges, input.owners)
        .into_iter()
        .filter_map(|(_, verdict)| verdict.err())
        .collect();
    if let Some(first) = refused.first() {
        let more = match refused.len() {
            1 => String::new(),
            n => format!(" ({} more clients are refused too.)", n - 1),
        };
        return not_ready(first.reason, format!("{}{more}", first.message));
    }
    let waiting: Vec<&str> = clients
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !input.joined.contains(*n))
        .collect();
    if !waiting.is_empty() {
        let (refused, absent): (Vec<&str>, Vec<&str>) = waiting
            .iter()
            .partition(|n| input.refused.contains_key(**n));
        let mut why: Vec<String> = refused
            .iter()
            .map(|n| {
                format!(
                    "{n} runs but cannot join: {}",
                    input.refused[*n].trim_end_matches('.')
                )
            })
            .collect();
        if !absent.is_empty() {
            let accounts: Vec<String> = absent
                .iter()
                .map(|n| format!("{n}: {}", credentials::account_name(input.gateway_name, n)))
                .collect();
            let trouble = input
                .credentials_error
                .map(|e| format!(" (the operator could not set up these accounts: {e})"))
                .unwrap_or_default();
            why.push(format!(
                "{} not running: on each, run `causeway-node-agent client --gateway {} --name <client>` with a token of the client's own ServiceAccount, `kubectl create token <account> -n {}` ({}){trouble}",
                absent.join(", "),
                input.gateway_name,
                input.client_namespace,
                accounts.join(", ")
            ));
        }
        return not_ready(
            reasons::CLIENTS_NOT_JOINED,
            format!(
                "{} of {} clients have not joined: {}. {}.",
                waiting.len(),
                clients.len(),
                waiting.join(", "),
                why.join("; ")
            ),
        );
    }
    let at: Vec<String> = clients
        .iter()
        .map(|c| format!("{} at {}", c.name, c.overlay_address))
        .collect();
    Rendered {
        routes: vec![],
        state: ConditionStatus::True,
        reason: reasons::GATEWAY_READY,
        message: format!(
            "Every client joined PodNetwork {}; pods reach {}.",
            spec.network,
            at.join(", ")
        ),
    }
}

/// `status.clients` for ClientJoin: one entry per listed client, `since` kept while its
/// state holds.
fn client_statuses(
    input: &Input,
    previous: &[GatewayClientStatus],
    now: &Time,
) -> Vec<GatewayClientStatus> {
    let Some(join) = input.spec.client_join.as_ref() else {
        return vec![];
    };
    join.clients
        .iter()
        .map(|c| {
            let joined = input.joined.contains(&c.name);
            let before = previous.iter().find(|p| p.name == c.name);
            let since = match before {
                Some(b) if b.joined == joined => b.since.clone(),
                _ => Some(now.clone()),
            };
            GatewayClientStatus {
                name: c.name.clone(),
                joined,
                vtep_mac: Some(client_vtep_mac(&c.name).to_string()),
                message: match input.refused.get(&c.name) {
                    _ if joined => String::new(),
                    Some(problem) => format!("running but cannot join: {problem}"),
                    None => format!(
                        "no live heartbeat: run `causeway-node-agent client --gateway {} --name {}` on the client",
                        input.gateway_name, c.name
                    ),
                },
                since,
            }
        })
        .collect()
}

/// The routes, the Ready condition and the active host for `input`.
fn render(input: &Input) -> Rendered {
    let spec = input.spec;
    let Some(network) = input.network else {
        return not_ready(
            reasons::NETWORK_NOT_FOUND,
            format!(
                "PodNetwork {} does not exist; create it or correct spec.network.",
                spec.network
            ),
        );
    };
    let ranges: Vec<IpNet> = match network.ranges() {
        Ok(r) => r.iter().map(|r| r.cidr).collect(),
        Err(e) => {
            return not_ready(
                INVALID_SPEC,
                format!("PodNetwork {} has an unusable range: {e}.", spec.network),
            );
        }
    };
    let range4 = ranges.iter().find_map(|r| match r {
        IpNet::V4(r) => Some(*r),
        IpNet::V6(_) => None,
    });
    let range6 = ranges.iter().find_map(|r| match r {
        IpNet::V6(r) => Some(*r),
        IpNet::V4(_) => None,
    });
    let mut clients = Vec::new();
    let mut clients6 = Vec::new();
    for (i, value) in spec.client_cidrs.iter().enumerate() {
        let overlapping = |pods: IpNet| {
            not_ready(
                CLIENT_CIDR_OVERLAPS_PODS,
                format!(
                    "spec.clientCidrs[{i}] {value} overlaps the pod range {pods} of PodNetwork {}: clients and pods need distinct addresses; correct clientCidrs.",
                    spec.network
                ),
            )
        };
        match value.trim().parse::<IpNet>() {
            Ok(IpNet::V4(c)) => match range4 {
                Some(r4) if overlaps(c.trunc(), r4) => return overlapping(r4.into()),
                _ => clients.push(c.trunc()),
            },
            Ok(IpNet::V6(c)) => match range6 {
                Some(r6) if overlaps_any(c.trunc().into(), r6.into()) => {
                    return overlapping(r6.into());
                }
                _ => clients6.push(c.trunc()),
            },
            Err(_) => {
                return not_ready(
                    INVALID_SPEC,
                    format!("spec.clientCidrs[{i}] {value:?} is not a CIDR."),
                );
            }
        }
    }
    match spec.strategy {
        GatewayStrategy::BridgeHosts => return bridge_hosts(input, &ranges, &clients6),
        GatewayStrategy::ClientJoin => return client_join(input, network, &ranges),
        GatewayStrategy::RouteToNodes => {}
    }
    let selector = spec
        .route_to_nodes
        .as_ref()
        .and_then(|r| r.node_selector.as_ref());
    let mut eligible = Vec::new();
    let mut off_segment = Vec::new();
    let mut selected = Vec::new();
    for member in input.members {
        match selector::matches(selector, &member.labels) {
            Err(e) => return not_ready(INVALID_SPEC, format!("spec.routeToNodes.{e}.")),
            Ok(false) => continue,
            Ok(true) => {}
        }
        selected.push((member.node.as_str(), member.v6.as_ref()));
        let Some(v4) = member.v4.as_ref().filter(|_| range4.is_some()) else {
            continue;
        };
        let reachable = clients.is_empty()
            || v4
                .segment
                .is_none_or(|s| clients.iter().any(|c| overlaps(*c, s)));
        if reachable {
            eligible.push((member.node.as_str(), v4));
        } else {
            off_segment.push(member.node.as_str());
        }
    }
    let v6 = range6.map(|r6| {
        let with_subnet = input.members.iter().filter(|m| m.v6.is_some()).count();
        routes6::render(&selected, &clients6, r6, with_subnet)
    });
    if eligible.is_empty() && v6.as_ref().is_none_or(|v| v.through.is_empty()) {
        if range4.is_none() {
            // An IPv6 network: the IPv6 side says why.
            let none = v6.and_then(|v| v.none).unwrap_or_else(|| {
                "no node of the network matches spec.routeToNodes.nodeSelector".into()
            });
            return not_ready(reasons::NO_ELIGIBLE_HOST, format!("{none}."));
        }
        let why = if off_segment.is_empty() {
            "no node of the network matches spec.routeToNodes.nodeSelector".to_owned()
        } else {
            format!(
                "the selected nodes ({}) are not on a segment of clientCidrs, so clients have no on-link next hop",
                off_segment.join(", ")
            )
        };
        let ipv6 = v6
            .and_then(|v| v.none)
            .map(|none| format!(" IPv6: {none}."))
            .unwrap_or_default();
        return not_ready(
            reasons::NO_ELIGIBLE_HOST,
            format!("{why}; select nodes on the clients' segment.{ipv6}"),
        );
    }
    let mut routes: Vec<String> = eligible
        .iter()
        .map(|(_, m)| format!("ip route add {} via {}", m.subnet, m.address))
        .collect();
    let with_subnet4 = input.members.iter().filter(|m| m.v4.is_some()).count();
    if let Some(range) = range4
        && !eligible.is_empty()
        && eligible.len() < with_subnet4
    {
        // The other nodes' pods, through the eligible nodes' paths to them.
        let via: Vec<_> = eligible.iter().map(|(_, m)| m.address).collect();
        routes.push(super::routes6::range_route("ip route add", range, &via));
    }
    let names: Vec<&str> = eligible.iter().map(|(n, _)| *n).collect();
    let mut message = match (&v6, range4) {
        (Some(v6), None) => format!(
            "Clients reach the pods of PodNetwork {} through {}: install status.clientRoutes on the clients (or their router).",
            spec.network,
            v6.through.join(", ")
        ),
        (None, _) => format!(
            "Clients reach the pods of PodNetwork {} through {}: install status.clientRoutes on the clients (or their router).",
            spec.network,
            names.join(", ")
        ),
        (Some(v6), Some(_)) => {
            let mut families = Vec::new();
            if !names.is_empty() {
                families.push(format!("over IPv4 through {}", names.join(", ")));
            }
            if !v6.through.is_empty() {
                families.push(format!("over IPv6 through {}", v6.through.join(", ")));
            }
            let only = match (names.is_empty(), v6.through.is_empty()) {
                (false, false) => "",
                (false, true) => " (IPv4 only)",
                _ => " (IPv6 only)",
            };
            format!(
                "Clients reach the pods of PodNetwork {}{only} {}: install status.clientRoutes on the clients (or their router).",
                spec.network,
                families.join(" and ")
            )
        }
    };
    if !off_segment.is_empty() {
        let family = if range6.is_some() { " of IPv4" } else { "" };
        message.push_str(&format!(
            " Left out{family} (not on a segment of clientCidrs): {}.",
            off_segment.join(", ")
        ));
    }
    if let Some(v6) = &v6 {
        routes.extend(v6.routes.iter().cloned());
        if let Some(none) = &v6.none {
            message.push_str(&format!(" No IPv6 routes: {none}."));
        } else if !v6.left_out.is_empty() {
            message.push_str(&format!(" Left out of IPv6: {}.", v6.left_out.join(", ")));
        }
    } else if !clients6.is_empty() {
        let list: Vec<String> = clients6.iter().map(ToString::to_string).collect();
        message.push_str(&format!(
            " The IPv6 clientCidrs {} are unused: PodNetwork {} has no IPv6 range (secondaryCidr).",
            list.join(", "),
            spec.network
        ));
    }
    if range4.is_none() && !clients.is_empty() {
        let list: Vec<String> = clients.iter().map(ToString::to_string).collect();
        message.push_str(&format!(
            " The IPv4 clientCidrs {} are unused: PodNetwork {} has no IPv4 range.",
            list.join(", "),
            spec.network
        ));
    }
    if let Some(bgp) = network.routed.as_ref().and_then(|r| r.bgp.as_ref()) {
        let peers: Vec<String> = bgp.peers.iter().map(|p| p.address.clone()).collect();
        message.push_str(&format!(
            " The nodes also advertise their subnets over BGP (AS {}) to {}: clients behind those routers need no routes.",
            bgp.asn,
            peers.join(", ")
        ));
    }
    Rendered {
        routes,
        state: ConditionStatus::True,
        reason: reasons::GATEWAY_READY,
        message,
    }
}

/// BridgeHosts: VIP checks, candidates, and the election's outcome. `ranges` are the
/// network's pod ranges, `cidr` first: `vip` serves the first, and on a dual-stack network a
/// `secondaryVip` the second (the active host holds both VIPs); `clients6` are the IPv6
/// client ranges, for messages.
fn bridge_hosts(input: &Input, ranges: &[IpNet], clients6: &[Ipv6Net]) -> Rendered {
    let spec = input.spec;
    let Some(bridge) = spec.bridge_hosts.as_ref() else {
        return not_ready(INVALID_SPEC, "spec.bridgeHosts is missing.".into());
    };
    // The same check the agents make before they stand for the VIPs.
    let segments: Vec<IpNet> = input.members.iter().flat_map(Member::segments).collect();
    let vips = match ownership::check_vips(bridge, ranges, &segments, input.owners) {
        Ok(vips) => vips,
        Err(refusal) => return not_ready(refusal.reason, refusal.message),
    };
    if let Some((other, taken)) = input.other_vips.iter().find_map(|(other, v)| {
        let v = v.trim().parse::<IpAddr>().ok()?;
        vips.all().any(|mine| mine == v).then_some((other, v))
    }) {
        return not_ready(
            reasons::VIP_CONFLICT,
            format!(
                "VIP {taken} is also a VIP of OverlayGateway {other}: give each gateway its own VIPs."
            ),
        );
    }
    let mut candidates = Vec::new();
    let (mut off_segment, mut silent, mut unprogrammable) = (Vec::new(), Vec::new(), Vec::new());
    for member in input.members {
        match selector::matches(Some(&bridge.node_selector), &member.labels) {
            Err(e) => return not_ready(INVALID_SPEC, format!("spec.bridgeHosts.{e}.")),
            Ok(false) => continue,
            Ok(true) => {}
        }
        let on_segment = |v: IpAddr| member.segments().iter().any(|s| s.contains(&v));
        if !vips.all().all(on_segment) {
            off_segment.push(member.node.as_str());
        } else if input.silent.contains(&member.node) {
            silent.push(member.node.as_str());
        } else if let Some(reason) = &member.unprogrammable {
            unprogrammable.push(format!("{} ({reason})", member.node));
        } else {
            candidates.push(member.node.as_str());
        }
    }
    if candidates.is_empty() {
        let mut why = Vec::new();
        if !off_segment.is_empty() {
            why.push(format!(
                "{} not on the segment of every VIP (or not reported yet)",
                off_segment.join(", ")
            ));
        }
        if !silent.is_empty() {
            why.push(format!(
                "the agents of {} are not reporting",
                silent.join(", ")
            ));
        }
        if !unprogrammable.is_empty() {
            why.push(format!(
                "{} cannot be programmed (see their NodeSubnets)",
                unprogrammable.join(", ")
            ));
        }
        if why.is_empty() {
            why.push("no node of the network matches spec.bridgeHosts.nodeSelector".into());
        }
        return not_ready(
            reasons::NO_ELIGIBLE_HOST,
            format!(
                "no node can hold VIP {vips}: {}; label nodes on the VIP's segment to match spec.bridgeHosts.nodeSelector.",
                why.join("; ")
            ),
        );
    }
    let holder = input.election.and_then(|e| e.holder.as_deref());
    if let (None, Some(note)) = (holder, input.election.and_then(|e| e.in_use.as_deref())) {
        return not_ready(
            reasons::VIP_IN_USE,
            format!(
                "VIP {vips} is in use by a machine that is no candidate: {note}. No candidate takes it while it answers; choose a free VIP, or free the address on that machine (the candidates claim it once it stops answering)."
            ),
        );
    }
    let Some(active) = holder.filter(|h| candidates.contains(h)) else {
        let now = match holder {
            // Cut off from the API server, a holder keeps the VIP while it answers for it.
            Some(h) if input.silent.contains(h) => format!(
                " {h} holds the claim but its agent is not reporting (cut off from the API server?): it keeps answering for the VIP while it is alive, and a standby takes over once it stops answering."
            ),
            Some(h) => format!(" {h} still holds the claim but is no longer a candidate."),
            None => String::new(),
        };
        return not_ready(
            reasons::ELECTION_IN_PROGRESS,
            format!(
                "candidates {} are electing the holder of VIP {vips}.{now}",
                candidates.join(", ")
            ),
        );
    };
    let others: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|c| *c != active)
        .collect();
    let standby = if others.is_empty() {
        " No standby: add candidates for failover.".to_owned()
    } else {
        format!(" Standby: {}.", others.join(", "))
    };
    let back = if spec.snat {
        "replies return through it (SNAT)"
    } else {
        "every node routes replies for clientCidrs through it"
    };
    let covering = if spec.snat {
        String::new()
    } else {
        covered_nodes(spec, input.members)
    };
    let route = |range: &IpNet, vip: IpAddr| {
        let ip = if vip.is_ipv6() { "ip -6" } else { "ip" };
        format!("{ip} route add {range} via {vip}")
    };
    let mut routes = vec![route(&ranges[0], vips.primary)];
    let second = match (ranges.get(1), vips.secondary) {
        (Some(r), Some(v)) => {
            routes.push(route(r, v));
            String::new()
        }
        (Some(r), None) => {
            let family = if r.addr().is_ipv6() { "IPv6" } else { "IPv4" };
            let unused = if clients6.is_empty() || !r.addr().is_ipv6() {
                String::new()
            } else {
                let list: Vec<String> = clients6.iter().map(ToString::to_string).collect();
                format!(" (the IPv6 clientCidrs {} are unused)", list.join(", "))
            };
            format!(
                " {family} clients have no route to the pods' {family} range {r}{unused}: set spec.bridgeHosts.secondaryVip to an unused {family} address on the bridge hosts' segment."
            )
        }
        (None, _) => String::new(),
    };
    let (vip_words, route_words) = if vips.secondary.is_some() {
        ("VIPs", "each pod range to the VIP of its family")
    } else {
        ("VIP", "the pod range to the VIP")
    };
    Rendered {
        routes,
        state: ConditionStatus::True,
        reason: reasons::GATEWAY_READY,
        message: format!(
            "{active} holds {vip_words} {vips} and forwards client traffic into PodNetwork {}; {back}. Clients route {route_words} (status.clientRoutes).{standby}{second}{covering}",
            spec.network
        ),
    }
}

/// The client ranges holding nodes' own addresses: no node routes those through the active
/// host (the route would capture its tunnels and API traffic to those nodes), so replies to
/// such clients take the underlay. Named, with the addresses, for the Ready message.
fn covered_nodes(spec: &OverlayGatewaySpec, members: &[Member]) -> String {
    let mut notes = Vec::new();
    for cidr in spec
        .client_cidrs
        .iter()
        .filter_map(|c| c.trim().parse::<IpNet>().ok())
    {
        let inside: Vec<String> = members
            .iter()
            .filter_map(|m| {
                let v4 = m.v4.as_ref().map(|v| IpAddr::V4(v.address));
                let v6 = m.v6.as_ref().and_then(|v| v.address).map(IpAddr::V6);
                let address = [v4, v6].into_iter().flatten().find(|a| cidr.contains(a))?;
                Some(format!("{} ({address})", m.node))
            })
            .collect();
        if !inside.is_empty() {
            notes.push(format!("{cidr} holds {}", inside.join(", ")));
        }
    }
    if notes.is_empty() {
        return String::new();
    }
    format!(
        " clientCidrs {}: nodes never route those ranges through the active host (it would capture their own underlay), so replies to clients there take the underlay; list only client networks that hold no node.",
        notes.join("; ")
    )
}

/// The OverlayGateway status for `input`, with Ready merged into `previous`.
#[must_use]
pub fn status(input: &Input, previous: &OverlayGatewayStatus, now: Time) -> OverlayGatewayStatus {
    let r = render(input);
    let mut next = previous.clone();
    set_condition(
        &mut next.conditions,
        new_condition(
            types::READY,
            r.state,
            r.reason,
            r.message,
            input.generation,
            now.clone(),
        ),
    );
    next.observed_generation = input.generation;
    next.client_routes = r.routes;
    next.clients = client_statuses(input, &previous.clients, &now);
    if input.spec.strategy == GatewayStrategy::BridgeHosts {
        // A takeover (the Lease says why) is a failover; a first election is not.
        if let Some(e) = input.election
            && e.holder.is_some()
            && let Some(reason) = e.reason.as_ref()
        {
            next.last_failover_reason = Some(reason.clone());
            next.last_failover_time = e.acquired.clone();
        }
        // The node holding the Lease holds the VIP, whatever Ready says: a holder cut off
        // from the API server (its agent silent) keeps answering for the VIP, and the nodes'
        // return routes must keep following it.
        next.active_host = input.election.and_then(|e| e.holder.clone());
    } else {
        next.active_host = None;
        next.last_failover_reason = None;
        next.last_failover_time = None;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::conditions::find_condition;

    fn gateway(value: serde_json::Value) -> OverlayGatewaySpec {
        serde_json::from_value(value).expect("spec")
    }

    fn network() -> PodNetworkSpec {
        serde_json::from_value(serde_json::json!({
            "cidr": "10.247.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
        }))
        .expect("network")
    }

    fn member(node: &str, i: u8, address: &str, segment: &str, gateway: bool) -> Member {
        let mut labels = BTreeMap::new();
        if gateway {
            labels.insert("causeway.dev/gateway".to_owned(), "true".to_owned());
        }
        Member {
            node: node.into(),
            v4: Some(Member4 {
                subnet: format!("10.247.{i}.0/24").parse().expect("subnet"),
                address: address.parse().expect("address"),
                segment: Some(segment.parse().expect("segment")),
            }),
            v6: None,
            labels,
            unprogrammable: None,
        }
    }

    fn members() -> Vec<Member> {
        vec![
            member("node-a", 0, "192.168.50.11", "192.168.50.0/24", true),
            member("node-b", 1, "192.168.50.12", "192.168.50.0/24", true),
            member("node-c", 2, "192.168.50.13", "192.168.50.0/24", false),
            member("node-d", 3, "192.168.60.11", "192.168.60.0/24", true),
        ]
    }

    /// What a test varies besides the spec; the rest is the four-node network.
    #[derive(Default)]
    struct Around<'a> {
        silent: &'a [&'a str],
        election: Option<&'a Election>,
        others: &'a [(String, String)],
        joined: &'a [&'a str],
        refused: &'a [(&'a str, &'a str)],
    }

    /// The members' addresses and the API server's, as the controller gathers them.
    fn owners(members: &[Member]) -> ownership::Owners {
        let mut owners = ownership::Owners::new();
        for m in members {
            if let Some(v4) = &m.v4 {
                owners.claim(v4.address, format!("node {}'s address", m.node));
            }
            if let Some(a) = m.v6.as_ref().and_then(|v| v.address) {
                owners.claim(a, format!("node {}'s address", m.node));
            }
        }
        owners.claim(Ipv4Addr::new(192, 168, 60, 2), "the API server's address");
        owners
    }

    fn compute(
        spec: serde_json::Value,
        network: Option<&PodNetworkSpec>,
        around: &Around<'_>,
    ) -> OverlayGatewayStatus {
        compute_with(spec, network, around, &members())
    }

    fn compute_with(
        spec: serde_json::Value,
        network: Option<&PodNetworkSpec>,
        around: &Around<'_>,
        members: &[Member],
    ) -> OverlayGatewayStatus {
        let spec = gateway(spec);
        let set = |names: &[&str]| -> BTreeSet<String> {
            names.iter().map(|s| (*s).to_owned()).collect()
        };
        status(
            &Input {
                generation: Some(2),
                spec: &spec,
                network,
                members,
                silent: &set(around.silent),
                election: around.election,
                other_vips: around.others,
                owners: &owners(members),
                joined: &set(around.joined),
                refused: &around
                    .refused
                    .iter()
                    .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
                    .collect(),
                gateway_name: "gw",
                client_namespace: "causeway-system-clients",
                credentials_error: None,
            },
            &OverlayGatewayStatus::default(),
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        )
    }

    fn run(spec: serde_json::Value, network: Option<&PodNetworkSpec>) -> OverlayGatewayStatus {
        compute(spec, network, &Around::default())
    }

    /// Ready is False with `reason`, and its message says `words`.
    fn expect_not_ready(st: &OverlayGatewayStatus, reason: &str, words: &str) {
        let (status, got, message) = ready(st);
        assert_eq!(
            (status.as_str(), got.as_str()),
            ("False", reason),
            "{message}"
        );
        assert!(message.contains(words), "{message}");
    }

    fn ready(st: &OverlayGatewayStatus) -> (String, String, String) {
        let c = find_condition(&st.conditions, types::READY).expect("Ready");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn route_to_nodes_renders_each_eligible_subnet_and_the_range_for_the_rest() {
        let st = run(
            serde_json::json!({
                "network": "overlay", "strategy": "RouteToNodes",
                "clientCidrs": ["192.168.50.0/24"],
                "routeToNodes": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}},
            }),
            Some(&network()),
        );
        assert_eq!(
            st.client_routes,
            vec![
                "ip route add 10.247.0.0/24 via 192.168.50.11",
                "ip route add 10.247.1.0/24 via 192.168.50.12",
                "ip route add 10.247.0.0/16 nexthop via 192.168.50.11 nexthop via 192.168.50.12",
            ]
        );
        let (status, reason, message) = ready(&st);
        assert_eq!((status.as_str(), reason.as_str()), ("True", "GatewayReady"));
        assert!(
            message.contains("through node-a, node-b")
                && message.contains("Left out (not on a segment of clientCidrs): node-d."),
            "{message}"
        );
    }

    fn dual_network(mode: &str) -> PodNetworkSpec {
        serde_json::from_value(serde_json::json!({
            "cidr": "10.247.0.0/16", "nodeSubnetPrefixLength": 24, "mode": mode,
            "secondaryCidr": "fd00:10:247::/56", "secondaryNodeSubnetPrefixLength": 64,
        }))
        .expect("network")
    }

    /// [`members`] on a dual-stack underlay: each node's IPv6 subnet, address and segment are
    /// the twins of its IPv4 ones (192.168.50.11 → fd00:50::11).
    fn dual_members() -> Vec<Member> {
        members()
            .into_iter()
            .enumerate()
            .map(|(i, mut m)| {
                let twin = |v4: &str| v4.replace("192.168.", "fd00:").replacen('.', "::", 1);
                let v4 = m.v4.clone().expect("IPv4 side");
                let address = twin(&v4.address.to_string());
                let segment = v4
                    .segment
                    .map(|s| format!("{}/64", twin(&s.network().to_string())));
                m.v6 = Some(Member6 {
                    subnet: format!("fd00:10:247:{i}::/64").parse().expect("subnet"),
                    address: Some(address.parse().expect("address")),
                    segment: segment.map(|s| s.parse().expect("segment")),
                });
                m
            })
            .collect()
    }

    fn run_on(
        spec: serde_json::Value,
        network: &PodNetworkSpec,
        members: &[Member],
    ) -> OverlayGatewayStatus {
        let spec = gateway(spec);
        let none = BTreeSet::new();
        status(
            &Input {
                generation: Some(2),
                spec: &spec,
                network: Some(network),
                members,
                silent: &none,
                election: None,
                other_vips: &[],
                owners: &owners(members),
                joined: &none,
                refused: &BTreeMap::new(),
                gateway_name: "gw",
                client_namespace: "causeway-system-clients",
                credentials_error: None,
            },
            &OverlayGatewayStatus::default(),
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        )
    }

    #[test]
    fn dual_stack_route_to_nodes_renders_ipv6_routes_per_family_and_says_why_when_there_are_none() {
        let selector =
            serde_json::json!({"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}});
        let v4_lines = [
            "ip route add 10.247.0.0/24 via 192.168.50.11",
            "ip route add 10.247.1.0/24 via 192.168.50.12",
            "ip route add 10.247.0.0/16 nexthop via 192.168.50.11 nexthop via 192.168.50.12",
        ];
        let v6_lines = [
            "ip -6 route add fd00:10:247::/64 via fd00:50::11",
            "ip -6 route add fd00:10:247:1::/64 via fd00:50::12",
            "ip -6 route add fd00:10:247::/56 nexthop via fd00:50::11 nexthop via fd00:50::12",
        ];
        // (clientCidrs, routes, reason, words in the Ready message)
        type Case<'a> = (&'a [&'a str], Vec<&'a str>, &'a str, &'a [&'a str]);
        let cases: [Case; 5] = [
            (
                &["192.168.50.0/24", "fd00:50::/64"],
                [v4_lines, v6_lines].concat(),
                "GatewayReady",
                &[
                    "PodNetwork overlay over IPv4 through node-a, node-b and over IPv6 through node-a, node-b:",
                    "Left out of IPv6: node-d (its IPv6 segment fd00:60::/64 is not in clientCidrs).",
                ],
            ),
            (
                &["192.168.50.0/24"],
                v4_lines.to_vec(),
                "GatewayReady",
                &[
                    "PodNetwork overlay (IPv4 only) over IPv4 through node-a, node-b:",
                    "No IPv6 routes: spec.clientCidrs has no IPv6 range, so no node is a next hop for IPv6 clients; add the clients' IPv6 range (e.g. fd00:50::/64) to clientCidrs",
                ],
            ),
            (
                &["192.168.50.0/24", "fd00:70::/64"],
                v4_lines.to_vec(),
                "GatewayReady",
                &[
                    "(IPv4 only)",
                    "No IPv6 routes: no selected node has an IPv6 address on a segment of the IPv6 clientCidrs fd00:70::/64 (node-a (its IPv6 segment fd00:50::/64 is not in clientCidrs),",
                    "give the nodes an IPv6 InternalIP on the clients' IPv6 segment",
                ],
            ),
            (
                // Only node-d's IPv6 segment: IPv6 via node-d alone, the range through it.
                &["192.168.50.0/24", "fd00:60::/64"],
                [
                    &v4_lines[..],
                    &[
                        "ip -6 route add fd00:10:247:3::/64 via fd00:60::11",
                        "ip -6 route add fd00:10:247::/56 via fd00:60::11",
                    ],
                ]
                .concat(),
                "GatewayReady",
                &[
                    "over IPv4 through node-a, node-b and over IPv6 through node-d:",
                    "Left out of IPv4 (not on a segment of clientCidrs): node-d.",
                    "Left out of IPv6: node-a (its IPv6 segment fd00:50::/64 is not in clientCidrs), node-b (its IPv6 segment fd00:50::/64 is not in clientCidrs).",
                ],
            ),
            (
                &["192.168.50.0/24", "fd00:10:247:8::/64"],
                vec![],
                "ClientCidrOverlapsPods",
                &[
                    "spec.clientCidrs[1] fd00:10:247:8::/64 overlaps the pod range fd00:10:247::/56 of PodNetwork overlay",
                ],
            ),
        ];
        let members = dual_members();
        for (cidrs, routes, reason, words) in cases {
            let st = run_on(
                serde_json::json!({
                    "network": "overlay", "strategy": "RouteToNodes",
                    "clientCidrs": cidrs, "routeToNodes": selector,
                }),
                &dual_network("Overlay"),
                &members,
            );
            assert_eq!(st.client_routes, routes, "{cidrs:?}");
            let (_, got, message) = ready(&st);
            assert_eq!(got, reason, "{cidrs:?}: {message}");
            for w in words {
                assert!(message.contains(w), "{cidrs:?}: {message}");
            }
        }
    }

    #[test]
    fn client_join_checks_overlay_addresses_per_family_and_ipv6_client_ranges_route_nothing_on_ipv4()
     {
        let members = dual_members();
        let join = |client: serde_json::Value| {
            serde_json::json!({"network": "overlay", "strategy": "ClientJoin",
                "clientJoin": {"clients": [client]}})
        };
        // A dual-stack client on a dual-stack network waits for its agent.
        let st = run_on(
            join(
                serde_json::json!({"name": "laptop", "address": "192.168.50.100",
                "overlayAddress": "10.250.0.10", "secondaryOverlayAddress": "fd00:250::10"}),
            ),
            &dual_network("Overlay"),
            &members,
        );
        expect_not_ready(&st, "ClientsNotJoined", "laptop");
        // Its IPv6 overlay address inside the IPv6 pod range is refused, naming the field.
        let st = run_on(
            join(
                serde_json::json!({"name": "laptop", "address": "192.168.50.100",
                "overlayAddress": "10.250.0.10", "secondaryOverlayAddress": "fd00:10:247:9::10"}),
            ),
            &dual_network("Overlay"),
            &members,
        );
        expect_not_ready(
            &st,
            "ClientCidrOverlapsPods",
            "secondaryOverlayAddress fd00:10:247:9::10 is inside the pod range fd00:10:247::/56",
        );
        // An IPv6 network: an IPv4 overlay address names the family.
        let st = run_on(
            join(
                serde_json::json!({"name": "laptop", "address": "fd00:50::100",
                "overlayAddress": "10.250.0.10"}),
            ),
            &v6_network("Overlay"),
            &v6_members(),
        );
        expect_not_ready(
            &st,
            "InvalidSpec",
            "overlayAddress 10.250.0.10 is not of the family of the PodNetwork's cidr fd00:10:247::/56",
        );
        // An IPv4 network: IPv6 client ranges route nothing, and Ready says so.
        let st = run_on(
            serde_json::json!({"network": "overlay", "strategy": "RouteToNodes",
                "clientCidrs": ["192.168.50.0/24", "fd00:50::/64"]}),
            &network(),
            &members,
        );
        let (state, _, message) = ready(&st);
        assert_eq!(state, "True", "{message}");
        assert!(st.client_routes.iter().all(|r| !r.contains("-6")));
        assert!(
            message.contains("The IPv6 clientCidrs fd00:50::/64 are unused: PodNetwork overlay has no IPv6 range (secondaryCidr)."),
            "{message}"
        );
        let _ = &members;
    }

    /// [`dual_members`] on an IPv6 network: the IPv6 sides only.
    fn v6_members() -> Vec<Member> {
        dual_members()
            .into_iter()
            .map(|mut m| {
                m.v4 = None;
                m
            })
            .collect()
    }

    fn v6_network(mode: &str) -> PodNetworkSpec {
        serde_json::from_value(serde_json::json!({
            "cidr": "fd00:10:247::/56", "nodeSubnetPrefixLength": 64, "mode": mode,
        }))
        .expect("network")
    }

    #[test]
    fn route_to_nodes_serves_ipv6_networks_and_dual_stack_ones_in_every_mode() {
        let selector =
            serde_json::json!({"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}});
        let spec = |cidrs: &[&str]| {
            serde_json::json!({"network": "overlay", "strategy": "RouteToNodes",
                "clientCidrs": cidrs, "routeToNodes": selector})
        };
        for mode in ["Flat", "Routed", "Overlay"] {
            let st = run_on(spec(&["fd00:50::/64"]), &v6_network(mode), &v6_members());
            assert_eq!(
                st.client_routes,
                [
                    "ip -6 route add fd00:10:247::/64 via fd00:50::11",
                    "ip -6 route add fd00:10:247:1::/64 via fd00:50::12",
                    "ip -6 route add fd00:10:247::/56 nexthop via fd00:50::11 nexthop via fd00:50::12",
                ],
                "{mode}"
            );
            let (state, reason, message) = ready(&st);
            assert_eq!(
                (state.as_str(), reason.as_str()),
                ("True", "GatewayReady"),
                "{message}"
            );
            assert!(
                message.starts_with(
                    "Clients reach the pods of PodNetwork overlay through node-a, node-b:"
                ) && !message.contains("IPv4"),
                "{mode}: {message}"
            );
            // IPv4 client ranges route nothing on an IPv6 network, and Ready says so.
            let st = run_on(
                spec(&["fd00:50::/64", "192.168.50.0/24"]),
                &v6_network(mode),
                &v6_members(),
            );
            assert!(
                ready(&st).2.contains(
                    "The IPv4 clientCidrs 192.168.50.0/24 are unused: PodNetwork overlay has no IPv4 range."
                ),
                "{}",
                ready(&st).2
            );
            // Without an IPv6 client range there is no next hop, and the fix is named.
            let st = run_on(spec(&[]), &v6_network(mode), &v6_members());
            expect_not_ready(&st, "NoEligibleHost", "add the clients' IPv6 range");
            // Dual-stack Flat and Routed as Overlay: both families.
            let st = run_on(
                spec(&["192.168.50.0/24", "fd00:50::/64"]),
                &dual_network(mode),
                &dual_members(),
            );
            assert_eq!(st.client_routes.len(), 6, "{mode}: {:?}", st.client_routes);
            assert!(
                ready(&st).2.contains(
                    "over IPv4 through node-a, node-b and over IPv6 through node-a, node-b"
                ),
                "{mode}: {}",
                ready(&st).2
            );
        }
    }

    #[test]
    fn bridge_hosts_on_ipv6_and_ipv6_first_networks_route_the_primary_range_to_vip() {
        let elected = Election {
            holder: Some("node-a".into()),
            ..Election::default()
        };
        let around = Around {
            election: Some(&elected),
            ..Around::default()
        };
        let spec = |vip: &str, secondary: Option<&str>| {
            let mut bridge = serde_json::json!({
                "nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}, "vip": vip,
            });
            if let Some(v) = secondary {
                bridge["secondaryVip"] = v.into();
            }
            serde_json::json!({"network": "overlay", "strategy": "BridgeHosts",
                "clientCidrs": ["fd00:70::/64"], "bridgeHosts": bridge})
        };
        let st = compute_with(
            spec("fd00:50::250", None),
            Some(&v6_network("Routed")),
            &around,
            &v6_members(),
        );
        assert_eq!(
            st.client_routes,
            ["ip -6 route add fd00:10:247::/56 via fd00:50::250"]
        );
        assert_eq!(ready(&st).1, "GatewayReady", "{}", ready(&st).2);
        assert!(
            ready(&st).2.contains("node-a holds VIP fd00:50::250"),
            "{}",
            ready(&st).2
        );
        // An IPv4 VIP for an IPv6 network names the family.
        let st = compute_with(
            spec("192.168.50.250", None),
            Some(&v6_network("Routed")),
            &around,
            &v6_members(),
        );
        expect_not_ready(
            &st,
            "InvalidSpec",
            "spec.bridgeHosts.vip 192.168.50.250 is not of the family of the PodNetwork's cidr fd00:10:247::/56",
        );
        // IPv6-first: vip IPv6, secondaryVip IPv4; without the IPv4 one, the fix names IPv4.
        let first: PodNetworkSpec = serde_json::from_value(serde_json::json!({
            "cidr": "fd00:10:247::/56", "nodeSubnetPrefixLength": 64, "mode": "Overlay",
            "secondaryCidr": "10.247.0.0/16", "secondaryNodeSubnetPrefixLength": 24,
        }))
        .expect("network");
        let st = compute_with(
            spec("fd00:50::250", Some("192.168.50.250")),
            Some(&first),
            &around,
            &dual_members(),
        );
        assert_eq!(
            st.client_routes,
            [
                "ip -6 route add fd00:10:247::/56 via fd00:50::250",
                "ip route add 10.247.0.0/16 via 192.168.50.250",
            ]
        );
        let st = compute_with(
            spec("fd00:50::250", None),
            Some(&first),
            &around,
            &dual_members(),
        );
        assert!(
            ready(&st).2.contains(
                "IPv4 clients have no route to the pods' IPv4 range 10.247.0.0/16: set spec.bridgeHosts.secondaryVip to an unused IPv4 address"
            ),
            "{}",
            ready(&st).2
        );
    }

    fn bridge(
        election: Option<&Election>,
        silent: &[&str],
        others: &[(String, String)],
        vip: &str,
    ) -> OverlayGatewayStatus {
        compute(
            serde_json::json!({
                "network": "overlay", "strategy": "BridgeHosts", "clientCidrs": ["192.168.70.0/24"],
                "bridgeHosts": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}, "vip": vip},
            }),
            Some(&network()),
            &Around {
                silent,
                election,
                others,
                ..Around::default()
            },
        )
    }

    #[test]
    fn bridge_hosts_name_client_ranges_that_hold_node_addresses() {
        let elected = Election {
            holder: Some("node-b".into()),
            ..Election::default()
        };
        let spec = |snat: bool| {
            serde_json::json!({
                "network": "overlay", "strategy": "BridgeHosts", "snat": snat,
                "clientCidrs": ["192.168.50.0/24", "192.168.70.0/24"],
                "bridgeHosts": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}, "vip": "192.168.50.250"},
            })
        };
        let around = Around {
            election: Some(&elected),
            ..Around::default()
        };
        let st = compute(spec(false), Some(&network()), &around);
        let (status, reason, message) = ready(&st);
        assert_eq!((status.as_str(), reason.as_str()), ("True", "GatewayReady"));
        assert!(
            message.contains(
                "clientCidrs 192.168.50.0/24 holds node-a (192.168.50.11), node-b (192.168.50.12), node-c (192.168.50.13)"
            ),
            "{message}"
        );
        assert!(!message.contains("192.168.70.0/24"), "{message}");
        // With SNAT there are no return routes to worry about.
        let st = compute(spec(true), Some(&network()), &around);
        assert!(!ready(&st).2.contains("holds node-a"), "{}", ready(&st).2);
    }

    #[test]
    fn bridge_hosts_report_the_holder_the_vip_route_and_failovers() {
        let elected = Election {
            holder: Some("node-b".into()),
            ..Election::default()
        };
        let st = bridge(Some(&elected), &[], &[], "192.168.50.250");
        assert_eq!(ready(&st).1, "GatewayReady", "{:?}", ready(&st));
        assert_eq!(st.active_host.as_deref(), Some("node-b"));
        assert_eq!(
            st.client_routes,
            ["ip route add 10.247.0.0/16 via 192.168.50.250"]
        );
        assert!(
            ready(&st).2.contains("Standby: node-a."),
            "{}",
            ready(&st).2
        );
        assert_eq!(
            st.last_failover_reason, None,
            "a first election is no failover"
        );

        let taken = Election {
            holder: Some("node-a".into()),
            reason: Some("LinkDown".into()),
            previous: Some("node-b".into()),
            acquired: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(5).expect("t"),
            )),
            in_use: None,
        };
        let st = bridge(Some(&taken), &[], &[], "192.168.50.250");
        assert_eq!(st.active_host.as_deref(), Some("node-a"));
        assert_eq!(st.last_failover_reason.as_deref(), Some("LinkDown"));
        assert!(st.last_failover_time.is_some());

        // node-d is selected but on the other segment; node-a and node-b are candidates.
        let none = bridge(None, &[], &[], "192.168.50.250");
        let (status, reason, message) = ready(&none);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ElectionInProgress")
        );
        assert!(message.contains("candidates node-a, node-b"), "{message}");
        assert_eq!(none.active_host, None);

        // Unheld, and a candidate found the VIP answered by a machine that is no candidate.
        let in_use = Election {
            in_use: Some(
                "02:00:00:00:00:99 answered ARP for 192.168.50.250 on node node-a's segment (eth0)"
                    .into(),
            ),
            ..Election::default()
        };
        let st = bridge(Some(&in_use), &[], &[], "192.168.50.250");
        expect_not_ready(
            &st,
            "VipInUse",
            "VIP 192.168.50.250 is in use by a machine that is no candidate: 02:00:00:00:00:99 answered ARP",
        );

        // A holder whose agent went silent keeps the VIP while it answers: the message says
        // so rather than calling it no longer a candidate.
        let st = bridge(Some(&taken), &["node-a"], &[], "192.168.50.250");
        expect_not_ready(
            &st,
            "ElectionInProgress",
            "node-a holds the claim but its agent is not reporting",
        );
        assert_eq!(
            st.active_host.as_deref(),
            Some("node-a"),
            "the return routes keep following the holder"
        );
    }

    #[test]
    fn bridge_hosts_on_a_dual_stack_network_route_each_family_to_its_vip() {
        let elected = Election {
            holder: Some("node-b".into()),
            ..Election::default()
        };
        let around = Around {
            election: Some(&elected),
            ..Around::default()
        };
        let spec = |secondary: Option<&str>| {
            let mut bridge = serde_json::json!({
                "nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}},
                "vip": "192.168.50.250",
            });
            if let Some(v) = secondary {
                bridge["secondaryVip"] = v.into();
            }
            serde_json::json!({"network": "overlay", "strategy": "BridgeHosts",
                "clientCidrs": ["192.168.70.0/24", "fd00:70::/64"], "bridgeHosts": bridge})
        };
        let dual = dual_network("Overlay");
        let members = dual_members();
        let st = compute_with(spec(Some("fd00:50::250")), Some(&dual), &around, &members);
        let (status, reason, message) = ready(&st);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "GatewayReady"),
            "{message}"
        );
        assert_eq!(
            st.client_routes,
            [
                "ip route add 10.247.0.0/16 via 192.168.50.250",
                "ip -6 route add fd00:10:247::/56 via fd00:50::250",
            ]
        );
        assert!(
            message.contains("node-b holds VIPs 192.168.50.250 and fd00:50::250")
                && message.contains("Clients route each pod range to the VIP of its family"),
            "{message}"
        );
        // A client range holding nodes' IPv6 addresses is named like an IPv4 one.
        let mut on_nodes = spec(Some("fd00:50::250"));
        on_nodes["clientCidrs"] = serde_json::json!(["fd00:50::/64"]);
        let st = compute_with(on_nodes.clone(), Some(&dual), &around, &members);
        let message = ready(&st).2;
        assert!(
            message.contains(
                "clientCidrs fd00:50::/64 holds node-a (fd00:50::11), node-b (fd00:50::12)"
            ),
            "{message}"
        );
        // With SNAT, replies of both families return through the holder: the same routes,
        // and no return routes to warn about.
        on_nodes["snat"] = true.into();
        let st = compute_with(on_nodes, Some(&dual), &around, &members);
        let message = ready(&st).2;
        assert_eq!(st.client_routes.len(), 2, "{:?}", st.client_routes);
        assert!(
            message.starts_with(
                "node-b holds VIPs 192.168.50.250 and fd00:50::250 and forwards client traffic into PodNetwork overlay; replies return through it (SNAT)."
            ) && !message.contains("holds node-a"),
            "{message}"
        );
        assert_eq!(st.active_host.as_deref(), Some("node-b"));

        // Without secondaryVip: IPv4 only, and the fix for IPv6.
        let st = compute_with(spec(None), Some(&dual), &around, &members);
        let (status, _, message) = ready(&st);
        assert_eq!(status, "True", "{message}");
        assert_eq!(
            st.client_routes,
            ["ip route add 10.247.0.0/16 via 192.168.50.250"]
        );
        assert!(
            message.contains("IPv6 clients have no route to the pods' IPv6 range fd00:10:247::/56 (the IPv6 clientCidrs fd00:70::/64 are unused): set spec.bridgeHosts.secondaryVip"),
            "{message}"
        );

        // A node without an IPv6 segment cannot hold the IPv6 VIP: no candidate.
        let mut no_v6 = members.clone();
        for m in &mut no_v6 {
            if m.node == "node-a" {
                m.v6 = None;
            }
        }
        let st = compute_with(
            spec(Some("fd00:50::250")),
            Some(&dual),
            &Around::default(),
            &no_v6,
        );
        expect_not_ready(&st, "ElectionInProgress", "candidates node-b are electing");

        for (secondary, network, reason, words) in [
            (
                "fd00:50::250",
                network(),
                "InvalidSpec",
                "spec.bridgeHosts.secondaryVip fd00:50::250 is set, and the PodNetwork has no secondaryCidr",
            ),
            (
                "fd00:50::12",
                dual.clone(),
                "VipConflict",
                "VIP fd00:50::12 is node node-b's address",
            ),
            (
                "fd00:50::",
                dual.clone(),
                "VipConflict",
                "subnet-router anycast address of the segment fd00:50::/64",
            ),
        ] {
            let st = compute_with(spec(Some(secondary)), Some(&network), &around, &members);
            expect_not_ready(&st, reason, words);
            assert!(st.client_routes.is_empty());
        }
        // Another gateway's IPv6 VIP.
        let others = [("lab".to_owned(), "fd00:50::250".to_owned())];
        let st = compute_with(
            spec(Some("fd00:50::250")),
            Some(&dual),
            &Around {
                others: &others,
                ..Around::default()
            },
            &members,
        );
        expect_not_ready(
            &st,
            "VipConflict",
            "VIP fd00:50::250 is also a VIP of OverlayGateway lab",
        );
    }

    #[test]
    fn a_node_that_cannot_be_programmed_is_no_candidate() {
        let spec = gateway(serde_json::json!({
            "network": "overlay", "strategy": "BridgeHosts", "clientCidrs": ["192.168.70.0/24"],
            "bridgeHosts": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}, "vip": "192.168.50.250"},
        }));
        let mut members = members();
        for m in &mut members {
            if m.node == "node-a" || m.node == "node-b" {
                m.unprogrammable = Some("InvalidConfiguration".into());
            }
        }
        let empty = BTreeSet::new();
        let st = status(
            &Input {
                generation: Some(2),
                spec: &spec,
                network: Some(&network()),
                members: &members,
                silent: &empty,
                election: None,
                other_vips: &[],
                owners: &owners(&members),
                joined: &empty,
                refused: &BTreeMap::new(),
                gateway_name: "gw",
                client_namespace: "causeway-system-clients",
                credentials_error: None,
            },
            &OverlayGatewayStatus::default(),
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        );
        expect_not_ready(
            &st,
            "NoEligibleHost",
            "node-a (InvalidConfiguration), node-b (InvalidConfiguration) cannot be programmed",
        );
    }

    #[test]
    fn bridge_hosts_problems_are_named() {
        type Case<'a> = (
            &'a [&'a str],
            Vec<(String, String)>,
            &'a str,
            &'a str,
            &'a str,
        );
        let cases: [Case; 9] = [
            (
                &[],
                vec![],
                "10.247.3.3",
                "VipConflict",
                "inside the pod range",
            ),
            (
                &[],
                vec![],
                "192.168.60.2",
                "VipConflict",
                "VIP 192.168.60.2 is the API server's address",
            ),
            (
                &[],
                vec![],
                "192.168.50.255",
                "VipConflict",
                "is the broadcast address of the segment 192.168.50.0/24",
            ),
            (
                &[],
                vec![],
                "192.168.50.0",
                "VipConflict",
                "is the network address of the segment 192.168.50.0/24",
            ),
            (
                &[],
                vec![],
                "127.0.0.1",
                "InvalidSpec",
                "loopback 127.0.0.0/8",
            ),
            (
                &[],
                vec![],
                "192.168.50.12",
                "VipConflict",
                "VIP 192.168.50.12 is node node-b's address",
            ),
            (
                &[],
                vec![("lab".into(), "192.168.50.250".into())],
                "192.168.50.250",
                "VipConflict",
                "also a VIP of OverlayGateway lab",
            ),
            (
                &["node-a", "node-b"],
                vec![],
                "192.168.50.250",
                "NoEligibleHost",
                "the agents of node-a, node-b are not reporting",
            ),
            (
                &[],
                vec![],
                "192.168.80.250",
                "NoEligibleHost",
                "not on the segment of every VIP",
            ),
        ];
        for (silent, others, vip, want, words) in cases {
            let st = bridge(None, silent, &others, vip);
            expect_not_ready(&st, want, words);
        }
    }

    fn join(joined: &[&str], mode: &str, overlay: &str) -> OverlayGatewayStatus {
        let mut net = network();
        net.mode = serde_json::from_value(serde_json::json!(mode)).expect("mode");
        compute(
            serde_json::json!({
                "network": "overlay", "strategy": "ClientJoin",
                "clientJoin": {"clients": [
                    {"name": "laptop", "address": "192.168.50.100", "overlayAddress": overlay},
                    {"name": "vm", "address": "192.168.50.101", "overlayAddress": "10.250.0.101"},
                ]},
            }),
            Some(&net),
            &Around {
                joined,
                ..Around::default()
            },
        )
    }

    #[test]
    fn client_join_reports_each_client_and_is_ready_once_all_joined() {
        let st = join(&["laptop", "vm"], "Overlay", "10.250.0.100");
        let (status, reason, message) = ready(&st);
        assert_eq!((status.as_str(), reason.as_str()), ("True", "GatewayReady"));
        assert!(message.contains("laptop at 10.250.0.100"), "{message}");
        assert_eq!(st.clients.len(), 2);
        assert!(st.clients.iter().all(|c| c.joined && c.since.is_some()));
        assert_eq!(
            st.clients[0].vtep_mac.as_deref(),
            Some(client_vtep_mac("laptop").to_string().as_str())
        );
        assert!(st.client_routes.is_empty());

        let st = join(&["laptop"], "Overlay", "10.250.0.100");
        let (status, reason, message) = ready(&st);
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ClientsNotJoined")
        );
        assert!(
            message.contains("1 of 2 clients have not joined: vm"),
            "{message}"
        );
        assert!(!st.clients[1].joined && st.clients[1].message.contains("--name vm"));

        // A client that runs but cannot join says why, on the gateway and in its entry.
        let problem = "route 10.247.0.0/24 via 10.247.0.0 dev cw-vx1: a route to 10.247.0.0/24 that Causeway does not own is in the way";
        let mut net = network();
        net.mode = serde_json::from_value(serde_json::json!("Overlay")).expect("mode");
        let st = compute(
            serde_json::json!({
                "network": "overlay", "strategy": "ClientJoin",
                "clientJoin": {"clients": [
                    {"name": "laptop", "address": "192.168.50.100", "overlayAddress": "10.250.0.100"},
                    {"name": "vm", "address": "192.168.50.101", "overlayAddress": "10.250.0.101"},
                ]},
            }),
            Some(&net),
            &Around {
                refused: &[("laptop", problem)],
                ..Around::default()
            },
        );
        expect_not_ready(
            &st,
            "ClientsNotJoined",
            &format!("laptop runs but cannot join: {problem}; vm not running: on each, run"),
        );
        // The command names the client's own account, exactly.
        expect_not_ready(
            &st,
            "ClientsNotJoined",
            "`kubectl create token <account> -n causeway-system-clients` (vm: causeway-client-gw.vm)",
        );
        assert_eq!(
            st.clients[0].message,
            format!("running but cannot join: {problem}")
        );
        assert!(st.clients[1].message.contains("no live heartbeat"));

        for (mode, overlay, want, words) in [
            (
                "Routed",
                "10.250.0.100",
                "InvalidSpec",
                "ClientJoin needs an Overlay network",
            ),
            (
                "Overlay",
                "10.247.9.9",
                "ClientCidrOverlapsPods",
                "inside the pod range",
            ),
            (
                "Overlay",
                "192.168.50.100",
                "InvalidSpec",
                "is also its address",
            ),
            (
                "Overlay",
                "192.168.50.11",
                "AddressInUse",
                "overlayAddress 192.168.50.11 is node node-a's address",
            ),
            (
                "Overlay",
                "192.168.60.2",
                "AddressInUse",
                "is the API server's address",
            ),
            (
                "Overlay",
                "192.168.50.101",
                "AddressInUse",
                "clients[1] (vm): address 192.168.50.101 is client laptop's overlay address",
            ),
            (
                "Overlay",
                "127.0.0.1",
                "InvalidSpec",
                "loopback 127.0.0.0/8",
            ),
        ] {
            let st = join(&["laptop", "vm"], mode, overlay);
            expect_not_ready(&st, want, words);
        }
    }

    #[test]
    fn every_node_selected_needs_no_range_route() {
        let st = run(
            serde_json::json!({"network": "overlay", "strategy": "RouteToNodes"}),
            Some(&network()),
        );
        assert_eq!(st.client_routes.len(), 4, "{:?}", st.client_routes);
        assert!(st.client_routes.iter().all(|r| r.contains("/24 via")));
    }

    #[test]
    fn problems_are_named_and_render_no_routes() {
        let cases = [
            (
                serde_json::json!({"network": "overlay", "strategy": "RouteToNodes"}),
                None,
                "NetworkNotFound",
                "PodNetwork overlay does not exist",
            ),
            (
                serde_json::json!({"network": "overlay", "strategy": "RouteToNodes",
                    "clientCidrs": ["10.247.9.0/24"]}),
                Some(network()),
                "ClientCidrOverlapsPods",
                "spec.clientCidrs[0] 10.247.9.0/24 overlaps the pod range 10.247.0.0/16",
            ),
            (
                serde_json::json!({"network": "overlay", "strategy": "RouteToNodes",
                    "clientCidrs": ["192.168.70.0/24"]}),
                Some(network()),
                "NoEligibleHost",
                "are not on a segment of clientCidrs",
            ),
        ];
        for (spec, net, want_reason, want_words) in cases {
            let st = run(spec, net.as_ref());
            let (status, reason, message) = ready(&st);
            assert_eq!((status.as_str(), reason.as_str()), ("False", want_reason));
            assert!(message.contains(want_words), "{message}");
            assert!(st.client_routes.is_empty());
        }
    }
}
