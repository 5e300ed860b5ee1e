//! `kubectl causeway trace SRC DST`: the path a packet takes, hop by hop, computed from the
//! API objects as the agents program it (`node-agent/src/decide/plan.rs`): which network and
//! mode, the route (and for a tunnel the VXLAN device, VNI, outer addresses and FDB entry) on
//! each node, the router in between, the MTU of each leg, NAT on the way out, and for machines
//! that are not nodes the OverlayGateway that lets them in. Pure: [`resolve`] turns an argument
//! into an [`Endpoint`] (pods are looked up by the caller), [`trace`] computes the [`Trace`].

use std::fmt::Write as _;
use std::net::IpAddr;

use causeway_crds::v1alpha1::{GatewayStrategy, PodNetworkMode};
use causeway_crds::{NodeSubnet, OverlayGateway, PodNetwork};
use ipnet::IpNet;
use kube::ResourceExt;
use serde::Serialize;

use crate::snapshot::Snapshot;

/// The agent's names for its devices (`node-agent/src/decide/plan.rs`).
const BRIDGE: &str = "cw-br0";

/// One end of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A pod (or a pod address) on a node.
    Pod {
        label: String,
        ip: IpAddr,
        node: String,
    },
    /// A node itself, at its node address.
    Node { name: String, address: IpAddr },
    /// Anything else: a machine that is not a node, or a destination outside the cluster.
    Outside { ip: IpAddr },
}

impl Endpoint {
    fn ip(&self) -> IpAddr {
        match self {
            Endpoint::Pod { ip, .. } | Endpoint::Outside { ip } => *ip,
            Endpoint::Node { address, .. } => *address,
        }
    }

    fn describe(&self) -> String {
        match self {
            Endpoint::Pod { label, ip, node } if label == &ip.to_string() => {
                format!("{ip} (a pod address of {node})")
            }
            Endpoint::Pod { label, ip, node } => format!("{ip} (pod {label} on {node})"),
            Endpoint::Node { name, address } => format!("{address} (node {name})"),
            Endpoint::Outside { ip } => format!("{ip} (not a node, outside every pod range)"),
        }
    }
}

/// One hop: where the packet is and what decides where it goes next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// `pod default/a`, `node-a`, `underlay`, `client`.
    pub at: String,
    pub step: String,
    /// What the kernel of the node this hop is on should answer for the destination, when
    /// the hop is a route lookup on a node (`--verify` asks the node's agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
}

/// A node's expected answer to `ip route get <dst>` (and, through a VXLAN device, the FDB
/// entry behind the next hop).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub node: String,
    pub dst: IpAddr,
    /// The output device, when the API objects name it (`cw-vx1`, `cw-br0`; the underlay's
    /// name is not in them).
    pub dev: Option<String>,
    /// Acceptable next hops; empty for a route without one (on-link, connected).
    pub gateways: Vec<IpAddr>,
    /// Through a tunnel: the underlay address the packet is sent to.
    pub fdb_dst: Option<IpAddr>,
}

fn expect(
    node: &str,
    dst: IpAddr,
    dev: Option<String>,
    gateways: Vec<IpAddr>,
    fdb_dst: Option<IpAddr>,
) -> Option<Expect> {
    Some(Expect {
        node: node.to_owned(),
        dst,
        dev,
        gateways,
        fdb_dst,
    })
}

/// A computed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trace {
    pub from: String,
    pub to: String,
    /// `overlay (Overlay, VNI 1, UDP 8472), pod MTU 1450`.
    pub network: String,
    pub hops: Vec<Hop>,
}

/// Compares a node's kernel answer (the agent's `/debug/route` JSON: `dev`, `gateway`,
/// `fdb_dst`) with what the trace expects: the answer in words when they agree, the
/// difference when they do not.
///
/// # Errors
/// The kernel does something else than the trace says.
pub fn compare(e: &Expect, kernel: &serde_json::Value) -> Result<String, String> {
    let dev = kernel["dev"].as_str();
    let gateway: Option<IpAddr> = kernel["gateway"].as_str().and_then(|g| g.parse().ok());
    let fdb: Option<IpAddr> = kernel["fdb_dst"].as_str().and_then(|g| g.parse().ok());
    let mut said = match kernel["unreachable"].as_str() {
        Some(why) => format!("no route ({why})"),
        None => format!("dev {}", dev.unwrap_or("none")),
    };
    if let Some(g) = gateway {
        let _ = write!(said, " via {g}");
    }
    if let Some(f) = fdb {
        let _ = write!(said, ", fdb → {f}");
    }
    let mut wrong = Vec::new();
    if let Some(want) = &e.dev
        && dev != Some(want.as_str())
    {
        wrong.push(format!("the trace expects dev {want}"));
    }
    match (e.gateways.as_slice(), gateway) {
        ([], Some(g)) => wrong.push(format!(
            "the trace expects no next hop, the kernel uses {g}"
        )),
        ([], None) => {}
        (want, g) if !g.is_some_and(|g| want.contains(&g)) => {
            let want: Vec<String> = want.iter().map(ToString::to_string).collect();
            wrong.push(format!("the trace expects next hop {}", want.join(" or ")));
        }
        _ => {}
    }
    if let Some(want) = e.fdb_dst
        && fdb != Some(want)
    {
        wrong.push(format!("the trace expects the tunnel to {want}"));
    }
    let lookup = format!("ip route get {} on {}: {said}", e.dst, e.node);
    if wrong.is_empty() {
        Ok(lookup)
    } else {
        Err(format!("{lookup}; {}", wrong.join("; ")))
    }
}

impl Trace {
    /// As people read it, with each checked hop's verdict under it (`--verify`): `results`
    /// holds the hop's index and what [`compare`] (or asking the agent) said.
    #[must_use]
    pub fn render_verified(&self, results: &[(usize, Result<String, String>)]) -> String {
        let mut out = String::new();
        let mut lines = self
            .render()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter();
        // The two header lines, then one line per hop.
        for _ in 0..2 {
            if let Some(l) = lines.next() {
                out.push_str(&l);
                out.push('\n');
            }
        }
        for (i, line) in lines.enumerate() {
            out.push_str(&line);
            out.push('\n');
            for (_, r) in results.iter().filter(|(h, _)| *h == i) {
                match r {
                    Ok(s) => {
                        let _ = writeln!(out, "      verified: {s}");
                    }
                    Err(s) => {
                        let _ = writeln!(out, "      DIFFERS: {s}");
                    }
                }
            }
        }
        out
    }

    /// As people read it.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} → {}", self.from, self.to);
        let _ = writeln!(out, "network {}", self.network);
        let width = self
            .hops
            .iter()
            .map(|h| h.at.chars().count())
            .max()
            .unwrap_or(0);
        for (i, h) in self.hops.iter().enumerate() {
            let _ = writeln!(out, "{:>2}  {:<width$}   {}", i + 1, h.at, h.step);
        }
        out
    }
}

/// A node's NodeSubnet, parsed for tracing.
struct Member<'a> {
    node: &'a str,
    subnets: Vec<IpNet>,
    address: IpAddr,
    segment: Option<IpNet>,
    vtep: String,
    mtu: Option<i32>,
    sub: &'a NodeSubnet,
}

fn member(sub: &NodeSubnet) -> Option<Member<'_>> {
    let mut subnets = vec![sub.spec.cidr.parse().ok()?];
    subnets.extend(
        sub.spec
            .secondary_cidr
            .as_deref()
            .and_then(|c| c.parse::<IpNet>().ok()),
    );
    let st = sub.status.as_ref();
    Some(Member {
        node: &sub.spec.node_name,
        subnets,
        address: sub.spec.node_address.parse().ok()?,
        segment: st
            .and_then(|s| s.underlay_prefix.as_deref())
            .and_then(|p| p.parse().ok()),
        vtep: sub
            .spec
            .vtep_mac
            .clone()
            .unwrap_or_else(|| causeway_crds::vtep::vtep_mac(&sub.spec.node_name).to_string()),
        mtu: st.and_then(|s| s.effective_mtu),
        sub,
    })
}

impl Member<'_> {
    fn subnet_for(&self, ip: IpAddr) -> Option<IpNet> {
        self.subnets.iter().copied().find(|n| n.contains(&ip))
    }

    fn subnet_of_family(&self, ip: IpAddr) -> Option<IpNet> {
        self.subnets
            .iter()
            .copied()
            .find(|n| n.addr().is_ipv4() == ip.is_ipv4())
    }
}

/// The subnet's gateway on the node bridge: its first address.
fn gateway(net: IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(n.network()) + 1)),
        IpNet::V6(n) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(n.network()) + 1)),
    }
}

/// Turns `arg` into an endpoint: `node/NAME` or a node's name, an IP address (a pod
/// address, a node address or anything else), or a pod already looked up by the caller
/// (`pod`: its label, IP and node).
///
/// # Errors
/// Nothing matches `arg`, with what would.
pub fn resolve(
    s: &Snapshot,
    arg: &str,
    pod: Option<(String, IpAddr, String)>,
) -> Result<Endpoint, String> {
    if let Some((label, ip, node)) = pod {
        return Ok(Endpoint::Pod { label, ip, node });
    }
    let live = || {
        s.subnets
            .iter()
            .filter(|x| x.metadata.deletion_timestamp.is_none())
            .filter_map(member)
    };
    if let Ok(ip) = arg.parse::<IpAddr>() {
        if let Some(m) = live().find(|m| m.subnet_for(ip).is_some()) {
            return Ok(Endpoint::Pod {
                label: ip.to_string(),
                ip,
                node: m.node.to_owned(),
            });
        }
        if let Some(m) = live().find(|m| m.address == ip) {
            return Ok(Endpoint::Node {
                name: m.node.to_owned(),
                address: ip,
            });
        }
        return Ok(Endpoint::Outside { ip });
    }
    let name = arg.strip_prefix("node/").unwrap_or(arg);
    if let Some(m) = live().find(|m| m.node == name) {
        return Ok(Endpoint::Node {
            name: name.to_owned(),
            address: m.address,
        });
    }
    Err(format!(
        "{arg:?} is no node with a NodeSubnet and no IP address; give a pod as NAMESPACE/NAME (or pod/NAME in the default namespace), a node as node/NAME, or an address"
    ))
}

/// The path from `src` to `dst`.
///
/// # Errors
/// No PodNetwork covers either end, or the network is not programmed enough to say.
pub fn trace(s: &Snapshot, src: &Endpoint, dst: &Endpoint) -> Result<Trace, String> {
    let members: Vec<Member<'_>> = s
        .subnets
        .iter()
        .filter(|x| x.metadata.deletion_timestamp.is_none())
        .filter_map(member)
        .collect();

    let find = |node: &str| members.iter().find(|m| m.node == node);
    // The network: the one of either end's node.
    let any_node = node_of(dst).or_else(|| node_of(src)).ok_or_else(|| {
        format!(
            "neither {} nor {} is a node or a pod address: a trace starts or ends in the cluster",
            src.ip(),
            dst.ip()
        )
    })?;
    let m = find(any_node).ok_or_else(|| format!("node {any_node} has no NodeSubnet"))?;
    let net_name = m.sub.spec.network.clone();
    let pn = s
        .networks
        .iter()
        .find(|p| p.name_any() == net_name)
        .ok_or_else(|| {
            format!(
                "NodeSubnet {} names PodNetwork {net_name}, which does not exist",
                m.sub.name_any()
            )
        })?;
    let header = network_header(pn, m);
    let mut hops = Vec::new();

    // Leaving the source.
    let src_member = node_of(src).and_then(find);
    let dst_member = node_of(dst).and_then(find);
    match src {
        Endpoint::Pod { label, ip, node } => {
            let at = pod_at(label, *ip);
            let sm = src_member.ok_or_else(|| format!("node {node} has no NodeSubnet"))?;
            let net = sm.subnet_for(*ip).or_else(|| sm.subnet_of_family(dst.ip()));
            let gw = net
                .map(gateway)
                .map_or_else(|| "the node".to_owned(), |g| g.to_string());
            hops.push(Hop {
                at,
                step: format!(
                    "eth0 {ip} → default route via {gw} ({BRIDGE} on {node}, over the pod's veth){}",
                    mtu_note(sm.mtu)
                ), expect: None });
        }
        Endpoint::Node { .. } => {}
        Endpoint::Outside { ip } => {
            let dm = dst_member.ok_or("a trace from outside must end at a pod or node")?;
            outside_in(s, pn, &members, *ip, dst, dm, &mut hops)?;
            return Ok(Trace {
                from: src.describe(),
                to: dst.describe(),
                network: header,
                hops,
            });
        }
    }

    let sm = src_member.ok_or("the source has no NodeSubnet")?;
    match dst {
        Endpoint::Pod { label, ip, node } if node == sm.node => {
            hops.push(Hop {
                at: sm.node.to_owned(),
                step: format!(
                    "{ip} is on this node: route {} dev {BRIDGE} (connected), bridged to the pod's veth",
                    sm.subnet_for(*ip)
                        .map_or_else(|| "?".to_owned(), |n| n.trunc().to_string())
                ), expect: expect(sm.node, *ip, Some(BRIDGE.into()), vec![], None) });
            hops.push(Hop {
                at: pod_at(label, *ip),
                step: "delivered".into(),
                expect: None,
            });
        }
        Endpoint::Node { name, address } if name == sm.node => {
            hops.push(Hop {
                at: sm.node.to_owned(),
                step: format!("delivered to the node itself ({address})"),
                expect: None,
            });
        }
        Endpoint::Pod { .. } | Endpoint::Node { .. } => {
            let dm = dst_member.ok_or("the destination has no NodeSubnet")?;
            between_nodes(pn, sm, dm, src.ip(), dst, &mut hops)?;
        }
        Endpoint::Outside { ip } => {
            leaving(pn, sm, *ip, &mut hops);
        }
    }
    Ok(Trace {
        from: src.describe(),
        to: dst.describe(),
        network: header,
        hops,
    })
}

/// The node an endpoint is on, unless it is outside.
fn node_of(e: &Endpoint) -> Option<&str> {
    match e {
        Endpoint::Pod { node, .. } | Endpoint::Node { name: node, .. } => Some(node.as_str()),
        Endpoint::Outside { .. } => None,
    }
}

fn pod_at(label: &str, ip: IpAddr) -> String {
    if label == ip.to_string() {
        format!("pod {ip}")
    } else {
        format!("pod {label}")
    }
}

fn mtu_note(mtu: Option<i32>) -> String {
    mtu.map_or_else(String::new, |m| format!("; pod MTU {m}"))
}

fn overlay_of(pn: &PodNetwork) -> causeway_crds::v1alpha1::OverlaySpec {
    pn.spec.overlay.clone().unwrap_or_default()
}

fn network_header(pn: &PodNetwork, m: &Member<'_>) -> String {
    let mut ranges = vec![pn.spec.cidr.clone()];
    ranges.extend(pn.spec.secondary_cidr.clone());
    let mode = match pn.spec.mode {
        PodNetworkMode::Overlay => {
            let o = overlay_of(pn);
            format!(
                "Overlay, VXLAN VNI {} UDP {}{}",
                o.vni,
                o.port,
                if o.cross_subnet { ", crossSubnet" } else { "" }
            )
        }
        PodNetworkMode::Routed if pn.spec.routed.as_ref().is_some_and(|r| r.bgp.is_some()) => {
            "Routed, BGP".to_owned()
        }
        PodNetworkMode::Routed => "Routed, static routes".to_owned(),
        PodNetworkMode::Flat => "Flat, proxy ARP".to_owned(),
    };
    let mtu = pn
        .status
        .as_ref()
        .and_then(|s| s.effective_mtu)
        .or(m.mtu)
        .map_or_else(String::new, |m| format!(", pod MTU {m}"));
    format!("{} ({mode}) {}{mtu}", pn.name_any(), ranges.join(" + "))
}

/// Two different nodes of one network: the route on the source node, the underlay, the
/// destination node. `src_ip` is the packet's source (a pod's, a node's, a client's).
fn between_nodes(
    pn: &PodNetwork,
    sm: &Member<'_>,
    dm: &Member<'_>,
    src_ip: IpAddr,
    dst: &Endpoint,
    hops: &mut Vec<Hop>,
) -> Result<(), String> {
    let dst_ip = dst.ip();
    let dst_net = dm
        .subnet_for(dst_ip)
        .or_else(|| dm.subnet_of_family(dst_ip))
        .ok_or_else(|| format!("{} has no subnet of {dst_ip}'s family", dm.node))?;
    let same_segment = match (sm.segment, dm.segment) {
        (Some(a), Some(b)) => a == b,
        _ => sm.segment.is_some_and(|a| a.contains(&dm.address)),
    };
    let segments = format!(
        "{}'s segment {}, {}'s {}",
        sm.node,
        sm.segment
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
        dm.node,
        dm.segment
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string())
    );
    let underlay_hop = |hops: &mut Vec<Hop>, what: String| {
        let via = if same_segment {
            format!(
                "on one segment ({})",
                sm.segment.map_or_else(|| "?".to_owned(), |s| s.to_string())
            )
        } else {
            format!("through the underlay's router ({segments})")
        };
        hops.push(Hop {
            at: "underlay".into(),
            step: format!("{what}, {via}"),
            expect: None,
        });
    };
    let dst_arrival = |hops: &mut Vec<Hop>, how: &str| {
        let end = match dst {
            Endpoint::Pod { .. } => format!(
                "{how} → route {} dev {BRIDGE} (connected), bridged to the pod's veth",
                dst_net.trunc()
            ),
            _ => format!("{how}, delivered to the node ({dst_ip})"),
        };
        let check = matches!(dst, Endpoint::Pod { .. })
            .then(|| expect(dm.node, dst_ip, Some(BRIDGE.into()), vec![], None))
            .flatten();
        hops.push(Hop {
            at: dm.node.to_owned(),
            step: end,
            expect: check,
        });
    };
    let to_node = matches!(dst, Endpoint::Node { .. });
    match pn.spec.mode {
        PodNetworkMode::Overlay => {
            let o = overlay_of(pn);
            if o.cross_subnet && same_segment {
                hops.push(Hop {
                    at: sm.node.to_owned(),
                    step: format!(
                        "route {} via {} dev <underlay> (crossSubnet: same segment, no encapsulation)",
                        dst_net.trunc(),
                        dm.address
                    ), expect: expect(sm.node, dst_ip, None, vec![dm.address], None) });
                underlay_hop(hops, format!("plain IP {src_ip} → {dst_ip}"));
                dst_arrival(hops, "arrives on the underlay");
            } else {
                let inner = dst_net.network();
                let overhead = if sm.address.is_ipv4() { 50 } else { 70 };
                hops.push(Hop {
                    at: sm.node.to_owned(),
                    step: format!(
                        "route {} via {inner} dev cw-vx{} onlink; neighbour {inner} lladdr {}; fdb {} dst {} → VXLAN encapsulation",
                        if to_node { IpNet::from(dst_ip).to_string() } else { dst_net.trunc().to_string() },
                        o.vni,
                        dm.vtep,
                        dm.vtep,
                        dm.address
                    ), expect: expect(sm.node, dst_ip, Some(format!("cw-vx{}", o.vni)), vec![inner], Some(dm.address)) });
                underlay_hop(
                    hops,
                    format!(
                        "outer {} → {} UDP {}, VNI {} (+{overhead} bytes: the underlay needs MTU ≥ pod MTU + {overhead})",
                        sm.address, dm.address, o.port, o.vni
                    ),
                );
                dst_arrival(hops, &format!("cw-vx{} decapsulates", o.vni));
            }
        }
        PodNetworkMode::Flat => {
            if !same_segment {
                return Err(format!(
                    "Flat mode needs both nodes on one segment, and they are not ({segments}): the network's Ready condition says so"
                ));
            }
            hops.push(Hop {
                at: sm.node.to_owned(),
                step: format!(
                    "route {} dev <underlay> (the whole range on-link) → ARP for {dst_ip}, answered by {} (proxy ARP for its subnet {})",
                    pn.spec.cidr,
                    dm.node,
                    dst_net.trunc()
                ), expect: expect(sm.node, dst_ip, None, vec![], None) });
            underlay_hop(
                hops,
                format!("frame to {}'s MAC, IP {src_ip} → {dst_ip}", dm.node),
            );
            dst_arrival(hops, "receives it as the ARP answerer");
        }
        PodNetworkMode::Routed => {
            let bgp = pn.spec.routed.as_ref().is_some_and(|r| r.bgp.is_some());
            if same_segment {
                hops.push(Hop {
                    at: sm.node.to_owned(),
                    step: format!(
                        "route {} via {} dev <underlay>",
                        dst_net.trunc(),
                        dm.address
                    ),
                    expect: expect(sm.node, dst_ip, None, vec![dm.address], None),
                });
                underlay_hop(hops, format!("plain IP, next hop {}", dm.address));
                dst_arrival(hops, "arrives on the underlay");
            } else if bgp {
                let established: Vec<&causeway_crds::v1alpha1::BgpSessionStatus> = sm
                    .sub
                    .status
                    .iter()
                    .flat_map(|s| s.bgp_sessions.iter())
                    .filter(|b| b.state == "Established")
                    .collect();
                let routers: Vec<String> = established
                    .iter()
                    .map(|b| format!("{} (AS {})", b.peer_address, b.peer_asn))
                    .collect();
                let router_ips: Vec<IpAddr> = established
                    .iter()
                    .filter_map(|b| b.peer_address.parse().ok())
                    .collect();
                let via = if routers.is_empty() {
                    "a router — but this node has no Established BGP session, so no learned route: the packet has no path".to_owned()
                } else {
                    format!(
                        "a router it learned it from over BGP: {}",
                        routers.join(" or ")
                    )
                };
                hops.push(Hop {
                    at: sm.node.to_owned(),
                    step: format!(
                        "route {} via {via} (dev <underlay>, proto 249)",
                        dst_net.trunc()
                    ),
                    expect: expect(sm.node, dst_ip, None, router_ips, None),
                });
                hops.push(Hop {
                    at: "router".into(),
                    step: format!(
                        "forwards to {} ({}), the next hop {} announced for {} ({segments})",
                        dm.address,
                        dm.node,
                        dm.node,
                        dst_net.trunc()
                    ),
                    expect: None,
                });
                dst_arrival(hops, "arrives on the underlay");
            } else {
                return Err(format!(
                    "Routed mode without BGP reaches only peers on the node's own segment ({segments}): {} names {} unreachable in its Programmed message; add spec.routed.bgp or use mode Overlay",
                    sm.sub.name_any(),
                    dm.node
                ));
            }
        }
    }
    if let Endpoint::Pod { label, ip, .. } = dst {
        hops.push(Hop {
            at: pod_at(label, *ip),
            step: "delivered".into(),
            expect: None,
        });
    }
    Ok(())
}

/// From a pod or node to an address outside every pod range: NAT on the way out.
fn leaving(pn: &PodNetwork, sm: &Member<'_>, ip: IpAddr, hops: &mut Vec<Hop>) {
    let excluded = std::iter::once(pn.spec.cidr.as_str())
        .chain(pn.spec.secondary_cidr.as_deref())
        .chain(pn.spec.nat_exclude_cidrs.iter().map(String::as_str))
        .filter_map(|c| c.parse::<IpNet>().ok())
        .find(|n| n.contains(&ip));
    let nat = match (pn.spec.nat_outgoing, excluded) {
        (false, _) => {
            "not masqueraded (natOutgoing: false): the destination must route pod addresses back"
                .to_owned()
        }
        (true, Some(n)) => {
            format!("not masqueraded: {ip} is in {n} (the pod range or natExcludeCidrs)")
        }
        (true, None) => format!(
            "masqueraded to the node's address on the way out (nftables table `ip causeway`, natOutgoing: {} is outside {} and natExcludeCidrs)",
            ip, pn.spec.cidr
        ),
    };
    hops.push(Hop {
        at: sm.node.to_owned(),
        step: format!(
            "{nat}; leaves by the node's own routes (its default route) from {}",
            sm.address
        ),
        expect: None,
    });
    hops.push(Hop {
        at: "outside".into(),
        step: format!("{ip}"),
        expect: None,
    });
}

/// The most specific of `routes` (rendered `ip route add CIDR via ADDR` or `ip route add
/// CIDR nexthop via A nexthop via B`) covering `ip`: its CIDR and next hops.
fn client_route(routes: &[String], ip: IpAddr) -> Option<(IpNet, Vec<IpAddr>)> {
    routes
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let cidr: IpNet = words
                .iter()
                .skip_while(|w| **w != "add")
                .nth(1)?
                .parse()
                .ok()?;
            let hops: Vec<IpAddr> = words
                .windows(2)
                .filter(|w| w[0] == "via")
                .filter_map(|w| w[1].parse().ok())
                .collect();
            (cidr.contains(&ip) && !hops.is_empty()).then_some((cidr, hops))
        })
        .max_by_key(|(cidr, _)| cidr.prefix_len())
}

/// From a machine that is not a node into the cluster: the OverlayGateway whose clientCidrs
/// hold it decides how.
fn outside_in(
    s: &Snapshot,
    pn: &PodNetwork,
    members: &[Member<'_>],
    ip: IpAddr,
    dst: &Endpoint,
    dm: &Member<'_>,
    hops: &mut Vec<Hop>,
) -> Result<(), String> {
    let serves = |g: &&OverlayGateway| {
        let listed = g
            .spec
            .client_cidrs
            .iter()
            .filter_map(|c| c.parse::<IpNet>().ok())
            .any(|n| n.contains(&ip));
        let joined = g.spec.client_join.as_ref().is_some_and(|j| {
            j.clients.iter().any(|c| {
                c.address.parse::<IpAddr>().ok() == Some(ip)
                    || c.overlay_address.parse::<IpAddr>().ok() == Some(ip)
            })
        });
        g.spec.network == pn.name_any() && (listed || joined)
    };
    let Some(gw) = s.gateways.iter().find(serves) else {
        let bgp = pn.spec.routed.as_ref().is_some_and(|r| r.bgp.is_some());
        return Err(if bgp {
            format!(
                "no OverlayGateway of {} lists {ip} in clientCidrs; with BGP, {ip} reaches {} if its router learned {} from {} (check the router)",
                pn.name_any(),
                dst.ip(),
                dm.subnets[0],
                dm.node
            )
        } else {
            format!(
                "no OverlayGateway of PodNetwork {} lists {ip} in its clientCidrs: machines that are not nodes reach pods only through one (docs/gateways.md)",
                pn.name_any()
            )
        });
    };
    let name = gw.name_any();
    let dst_net = dm.subnet_for(dst.ip()).unwrap_or(dm.subnets[0]);
    match gw.spec.strategy {
        GatewayStrategy::RouteToNodes => {
            let routes: &[String] = gw
                .status
                .as_ref()
                .map_or(&[], |st| st.client_routes.as_slice());
            let (cidr, next_hops) = client_route(routes, dst.ip()).ok_or_else(|| {
                format!(
                    "OverlayGateway {name} renders no client route covering {} (status.clientRoutes: {routes:?}); kubectl describe overlaygateway {name}",
                    dst.ip()
                )
            })?;
            let shown: Vec<String> = next_hops.iter().map(ToString::to_string).collect();
            hops.push(Hop {
                at: "client".into(),
                step: format!(
                    "route {cidr} via {} (OverlayGateway {name}, RouteToNodes: status.clientRoutes)",
                    shown.join(" or ")
                ), expect: None });
            // The first next hop stands for all of them (the client spreads flows over them).
            let entry = next_hops[0];
            let Some(em) = members.iter().find(|m| m.address == entry) else {
                hops.push(Hop {
                    at: "router".into(),
                    step: format!(
                        "{entry} forwards to {} ({}), which announced {} over BGP",
                        dm.address,
                        dm.node,
                        dst_net.trunc()
                    ),
                    expect: None,
                });
                hops.push(Hop {
                    at: dm.node.to_owned(),
                    step: format!("route {} dev {BRIDGE} (connected)", dst_net.trunc()),
                    expect: None,
                });
                if let Endpoint::Pod { label, ip, .. } = dst {
                    hops.push(Hop {
                        at: pod_at(label, *ip),
                        step: "delivered".into(),
                        expect: None,
                    });
                }
                return Ok(());
            };
            if em.node == dm.node {
                hops.push(Hop {
                    at: dm.node.to_owned(),
                    step: format!(
                        "route {} dev {BRIDGE} (connected); replies go back by the node's routes to {ip}",
                        dst_net.trunc()
                    ), expect: None });
            } else {
                hops.push(Hop {
                    at: em.node.to_owned(),
                    step: format!(
                        "receives it for {} and forwards it into the pod network",
                        dst.ip()
                    ),
                    expect: None,
                });
                let mut rest = Vec::new();
                between_nodes(pn, em, dm, ip, dst, &mut rest)?;
                rest.retain(|h| !h.at.starts_with("pod "));
                hops.extend(rest);
            }
        }
        GatewayStrategy::BridgeHosts => {
            let vip = gw
                .spec
                .bridge_hosts
                .as_ref()
                .map_or("?", |b| b.vip.as_str());
            let active = gw.status.as_ref().and_then(|st| st.active_host.clone());
            let Some(active) = active else {
                return Err(format!(
                    "OverlayGateway {name} has no active bridge host: nothing holds VIP {vip} (kubectl describe overlaygateway {name})"
                ));
            };
            hops.push(Hop {
                at: "client".into(),
                step: format!(
                    "route {} via VIP {vip} (OverlayGateway {name}, BridgeHosts)",
                    pn.spec.cidr
                ),
                expect: None,
            });
            let back = if gw.spec.snat {
                format!(
                    "masquerades {ip} to its own address (snat: true, table `ip causeway-gateway`)"
                )
            } else {
                format!("every node routes replies to {ip} back through it (return routes)")
            };
            if active == dm.node {
                hops.push(Hop {
                    at: active.clone(),
                    step: format!(
                        "holds VIP {vip}; {back}; route {} dev {BRIDGE} (connected)",
                        dst_net.trunc()
                    ),
                    expect: None,
                });
            } else {
                let am = members
                    .iter()
                    .find(|m| m.node == active)
                    .ok_or_else(|| format!("the active host {active} has no NodeSubnet"))?;
                hops.push(Hop {
                    at: active.clone(),
                    step: format!("holds VIP {vip}; {back}; forwards into the pod network"),
                    expect: None,
                });
                let mut rest = Vec::new();
                between_nodes(pn, am, dm, ip, dst, &mut rest)?;
                // The active host's own step is the route it takes; the pod hop is added below.
                rest.retain(|h| !h.at.starts_with("pod "));
                hops.extend(rest);
            }
        }
        GatewayStrategy::ClientJoin => {
            let o = overlay_of(pn);
            let client = gw.spec.client_join.as_ref().and_then(|c| {
                c.clients.iter().find(|c| {
                    c.address.parse::<IpAddr>().ok() == Some(ip)
                        || c.overlay_address.parse::<IpAddr>().ok() == Some(ip)
                })
            });
            let who = client.map_or_else(
                || ip.to_string(),
                |c| format!("{} (overlay address {})", c.name, c.overlay_address),
            );
            hops.push(Hop {
                at: "client".into(),
                step: format!(
                    "{who}: its agent (causeway-node-agent client) routes {} via cw-vx{} → VXLAN to {} (fdb {}), VNI {}, UDP {}",
                    dst_net.trunc(), o.vni, dm.address, dm.vtep, o.vni, o.port
                ), expect: None });
            hops.push(Hop {
                at: dm.node.to_owned(),
                step: format!(
                    "cw-vx{} decapsulates → route {} dev {BRIDGE} (connected)",
                    o.vni,
                    dst_net.trunc()
                ),
                expect: None,
            });
        }
    }
    if let Endpoint::Pod { label, ip, .. } = dst {
        hops.push(Hop {
            at: pod_at(label, *ip),
            step: "delivered".into(),
            expect: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::v1alpha1::{
        NodeSubnetSpec, NodeSubnetStatus, PodNetworkSpec, PodNetworkStatus,
    };

    fn network(mode: &str, extra: serde_json::Value) -> PodNetwork {
        let mut spec = serde_json::json!({"cidr": "10.247.0.0/16", "nodeSubnetPrefixLength": 24, "mode": mode});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let spec: PodNetworkSpec = serde_json::from_value(spec).expect("spec");
        let mut pn = PodNetwork::new("net", spec);
        pn.status = Some(PodNetworkStatus {
            effective_mtu: Some(1450),
            ..PodNetworkStatus::default()
        });
        pn
    }

    fn subnet(node: &str, i: u8, address: &str, segment: &str) -> NodeSubnet {
        let spec: NodeSubnetSpec = serde_json::from_value(serde_json::json!({
            "network": "net", "nodeName": node, "cidr": format!("10.247.{i}.0/24"),
            "nodeAddress": address, "vtepMac": format!("0e:00:00:00:00:0{i}")}))
        .expect("spec");
        let mut s = NodeSubnet::new(&format!("net-{node}"), spec);
        s.status = Some(NodeSubnetStatus {
            underlay_prefix: Some(segment.into()),
            effective_mtu: Some(1450),
            ..NodeSubnetStatus::default()
        });
        s
    }

    fn cluster(pn: PodNetwork) -> Snapshot {
        Snapshot {
            networks: vec![pn],
            subnets: vec![
                subnet("node-a", 0, "192.168.50.11", "192.168.50.0/24"),
                subnet("node-b", 1, "192.168.50.12", "192.168.50.0/24"),
                subnet("node-d", 3, "192.168.60.11", "192.168.60.0/24"),
            ],
            ..Snapshot::default()
        }
    }

    fn pod(label: &str, ip: &str, node: &str) -> Endpoint {
        Endpoint::Pod {
            label: label.into(),
            ip: ip.parse().expect("ip"),
            node: node.into(),
        }
    }

    fn steps(t: &Trace) -> Vec<String> {
        t.hops
            .iter()
            .map(|h| format!("{}: {}", h.at, h.step))
            .collect()
    }

    #[test]
    fn overlay_names_the_tunnel_its_outer_addresses_and_the_router_between_segments() {
        let s = cluster(network("Overlay", serde_json::json!({})));
        let t = trace(
            &s,
            &pod("default/a", "10.247.0.2", "node-a"),
            &pod("default/d", "10.247.3.5", "node-d"),
        )
        .expect("trace");
        let st = steps(&t);
        assert_eq!(
            t.network,
            "net (Overlay, VXLAN VNI 1 UDP 8472) 10.247.0.0/16, pod MTU 1450"
        );
        assert!(
            st[0].starts_with(
                "pod default/a: eth0 10.247.0.2 → default route via 10.247.0.1 (cw-br0 on node-a"
            ),
            "{st:?}"
        );
        assert_eq!(
            st[1],
            "node-a: route 10.247.3.0/24 via 10.247.3.0 dev cw-vx1 onlink; neighbour 10.247.3.0 lladdr 0e:00:00:00:00:03; fdb 0e:00:00:00:00:03 dst 192.168.60.11 → VXLAN encapsulation"
        );
        assert!(
            st[2].starts_with(
                "underlay: outer 192.168.50.11 → 192.168.60.11 UDP 8472, VNI 1 (+50 bytes"
            ),
            "{st:?}"
        );
        assert!(st[2].contains("through the underlay's router"), "{st:?}");
        assert!(
            st[3].starts_with("node-d: cw-vx1 decapsulates → route 10.247.3.0/24 dev cw-br0"),
            "{st:?}"
        );
        assert_eq!(st[4], "pod default/d: delivered");
    }

    #[test]
    fn cross_subnet_goes_direct_on_one_segment_and_tunnels_across_the_router() {
        let s = cluster(network(
            "Overlay",
            serde_json::json!({"overlay": {"crossSubnet": true}}),
        ));
        let a = pod("default/a", "10.247.0.2", "node-a");
        let direct = trace(&s, &a, &pod("default/b", "10.247.1.4", "node-b")).expect("trace");
        assert!(
            steps(&direct)[1].contains("via 192.168.50.12 dev <underlay> (crossSubnet"),
            "{:?}",
            steps(&direct)
        );
        let tunnel = trace(&s, &a, &pod("default/d", "10.247.3.5", "node-d")).expect("trace");
        assert!(
            steps(&tunnel)[1].contains("dev cw-vx1 onlink"),
            "{:?}",
            steps(&tunnel)
        );
    }

    #[test]
    fn flat_is_proxy_arp_on_one_segment_and_refused_across_segments() {
        let s = cluster(network("Flat", serde_json::json!({})));
        let a = pod("default/a", "10.247.0.2", "node-a");
        let t = trace(&s, &a, &pod("default/b", "10.247.1.4", "node-b")).expect("trace");
        assert!(
            steps(&t)[1].contains("answered by node-b (proxy ARP for its subnet 10.247.1.0/24)"),
            "{:?}",
            steps(&t)
        );
        let err =
            trace(&s, &a, &pod("default/d", "10.247.3.5", "node-d")).expect_err("two segments");
        assert!(
            err.contains("Flat mode needs both nodes on one segment"),
            "{err}"
        );
    }

    #[test]
    fn routed_static_routes_via_the_peer_and_bgp_via_the_router_it_learned_from() {
        let s = cluster(network("Routed", serde_json::json!({})));
        let a = pod("default/a", "10.247.0.2", "node-a");
        let t = trace(&s, &a, &pod("default/b", "10.247.1.4", "node-b")).expect("trace");
        assert_eq!(
            steps(&t)[1],
            "node-a: route 10.247.1.0/24 via 192.168.50.12 dev <underlay>"
        );
        let err = trace(&s, &a, &pod("default/d", "10.247.3.5", "node-d")).expect_err("no bgp");
        assert!(err.contains("add spec.routed.bgp"), "{err}");

        let mut s = cluster(network(
            "Routed",
            serde_json::json!({"routed": {"bgp": {"asn": 64512, "peers": [{"address": "192.168.50.1", "asn": 64500}]}}}),
        ));
        if let Some(st) = s.subnets[0].status.as_mut() {
            st.bgp_sessions
                .push(causeway_crds::v1alpha1::BgpSessionStatus {
                    peer_address: "192.168.50.1".into(),
                    peer_asn: 64512,
                    state: "Established".into(),
                    ..Default::default()
                });
        }
        let t = trace(&s, &a, &pod("default/d", "10.247.3.5", "node-d")).expect("trace");
        assert!(
            steps(&t)[1]
                .contains("via a router it learned it from over BGP: 192.168.50.1 (AS 64512)"),
            "{:?}",
            steps(&t)
        );
        assert!(
            steps(&t)[2].starts_with("router: forwards to 192.168.60.11 (node-d)"),
            "{:?}",
            steps(&t)
        );
    }

    #[test]
    fn leaving_the_cluster_is_masqueraded_unless_excluded() {
        let s = cluster(network(
            "Overlay",
            serde_json::json!({"natExcludeCidrs": ["172.16.0.0/12"]}),
        ));
        let a = pod("default/a", "10.247.0.2", "node-a");
        let out = trace(
            &s,
            &a,
            &Endpoint::Outside {
                ip: "8.8.8.8".parse().expect("ip"),
            },
        )
        .expect("trace");
        assert!(
            steps(&out)[1].contains("masqueraded to the node's address"),
            "{:?}",
            steps(&out)
        );
        let excluded = trace(
            &s,
            &a,
            &Endpoint::Outside {
                ip: "172.16.1.1".parse().expect("ip"),
            },
        )
        .expect("trace");
        assert!(
            steps(&excluded)[1].contains("not masqueraded: 172.16.1.1 is in 172.16.0.0/12"),
            "{:?}",
            steps(&excluded)
        );
    }

    fn gateway(strategy: &str, extra: serde_json::Value, active: Option<&str>) -> OverlayGateway {
        let mut spec = serde_json::json!({"network": "net", "strategy": strategy,
            "clientCidrs": ["192.168.50.0/24"]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let mut g = OverlayGateway::new("office", serde_json::from_value(spec).expect("spec"));
        g.status = Some(causeway_crds::v1alpha1::OverlayGatewayStatus {
            active_host: active.map(str::to_owned),
            ..Default::default()
        });
        g
    }

    #[test]
    fn a_machine_outside_comes_in_through_the_gateway_that_lists_it() {
        let client = Endpoint::Outside {
            ip: "192.168.50.200".parse().expect("ip"),
        };
        let d = pod("default/d", "10.247.3.5", "node-d");
        let mut s = cluster(network("Overlay", serde_json::json!({})));
        let err = trace(&s, &client, &d).expect_err("no gateway");
        assert!(
            err.contains("no OverlayGateway of PodNetwork net lists 192.168.50.200"),
            "{err}"
        );

        s.gateways = vec![gateway("RouteToNodes", serde_json::json!({}), None)];
        if let Some(st) = s.gateways[0].status.as_mut() {
            st.client_routes = vec![
                "ip route add 10.247.0.0/24 via 192.168.50.11".into(),
                "ip route add 10.247.1.0/24 via 192.168.50.12".into(),
                "ip route add 10.247.0.0/16 nexthop via 192.168.50.11 nexthop via 192.168.50.12"
                    .into(),
            ];
        }
        let t = trace(&s, &client, &d).expect("trace");
        let st = steps(&t);
        assert_eq!(
            st[0],
            "client: route 10.247.0.0/16 via 192.168.50.11 or 192.168.50.12 (OverlayGateway office, RouteToNodes: status.clientRoutes)"
        );
        assert!(
            st[1].starts_with("node-a: receives it for 10.247.3.5"),
            "{st:?}"
        );
        assert!(
            st[2].starts_with("node-a: route 10.247.3.0/24 via 10.247.3.0 dev cw-vx1"),
            "{st:?}"
        );
        let b = pod("default/b", "10.247.1.4", "node-b");
        let t = trace(&s, &client, &b).expect("trace");
        assert_eq!(
            steps(&t)[0],
            "client: route 10.247.1.0/24 via 192.168.50.12 (OverlayGateway office, RouteToNodes: status.clientRoutes)"
        );
        assert!(
            steps(&t)[1].starts_with("node-b: route 10.247.1.0/24 dev cw-br0"),
            "{:?}",
            steps(&t)
        );

        s.gateways = vec![gateway(
            "BridgeHosts",
            serde_json::json!({"bridgeHosts": {"vip": "192.168.50.250", "nodeSelector": {}}}),
            Some("node-b"),
        )];
        let t = trace(&s, &client, &d).expect("trace");
        let st = steps(&t);
        assert_eq!(
            st[0],
            "client: route 10.247.0.0/16 via VIP 192.168.50.250 (OverlayGateway office, BridgeHosts)"
        );
        assert!(
            st[1].starts_with("node-b: holds VIP 192.168.50.250; every node routes replies"),
            "{st:?}"
        );
        assert!(
            st[2].starts_with("node-b: route 10.247.3.0/24 via 10.247.3.0 dev cw-vx1 onlink"),
            "{st:?}"
        );
        assert_eq!(
            st.last().map(String::as_str),
            Some("pod default/d: delivered")
        );

        s.gateways[0].status = None;
        let err = trace(&s, &client, &d).expect_err("no active host");
        assert!(err.contains("has no active bridge host"), "{err}");
    }

    #[test]
    fn the_kernels_answer_is_compared_with_each_expected_hop() {
        let s = cluster(network("Overlay", serde_json::json!({})));
        let t = trace(
            &s,
            &pod("default/a", "10.247.0.2", "node-a"),
            &pod("default/d", "10.247.3.5", "node-d"),
        )
        .expect("trace");
        let checks: Vec<&Expect> = t.hops.iter().filter_map(|h| h.expect.as_ref()).collect();
        assert_eq!(checks.len(), 2, "node-a's tunnel route and node-d's bridge");
        let tunnel = serde_json::json!({"dev": "cw-vx1", "gateway": "10.247.3.0", "fdb_dst": "192.168.60.11"});
        assert_eq!(
            compare(checks[0], &tunnel),
            Ok(
                "ip route get 10.247.3.5 on node-a: dev cw-vx1 via 10.247.3.0, fdb → 192.168.60.11"
                    .into()
            )
        );
        let elsewhere = serde_json::json!({"dev": "eth0", "gateway": "192.168.50.1"});
        let err = compare(checks[0], &elsewhere).expect_err("differs");
        assert!(err.contains("the trace expects dev cw-vx1"), "{err}");
        assert!(
            err.contains("the trace expects next hop 10.247.3.0"),
            "{err}"
        );
        assert!(
            err.contains("the trace expects the tunnel to 192.168.60.11"),
            "{err}"
        );
        let bridge = serde_json::json!({"dev": "cw-br0"});
        assert!(compare(checks[1], &bridge).is_ok());
        let rendered = t.render_verified(&[
            (1, compare(checks[0], &tunnel)),
            (3, compare(checks[1], &elsewhere)),
        ]);
        assert!(
            rendered.contains("      verified: ip route get 10.247.3.5 on node-a"),
            "{rendered}"
        );
        assert!(
            rendered.contains(
                "      DIFFERS: ip route get 10.247.3.5 on node-d: dev eth0 via 192.168.50.1"
            ),
            "{rendered}"
        );
    }

    #[test]
    fn arguments_resolve_to_pod_addresses_nodes_and_outside_addresses() {
        let s = cluster(network("Overlay", serde_json::json!({})));
        assert_eq!(
            resolve(&s, "10.247.1.7", None),
            Ok(pod("10.247.1.7", "10.247.1.7", "node-b"))
        );
        assert_eq!(
            resolve(&s, "node/node-d", None),
            Ok(Endpoint::Node {
                name: "node-d".into(),
                address: "192.168.60.11".parse().expect("ip")
            })
        );
        assert_eq!(
            resolve(&s, "192.168.50.12", None),
            Ok(Endpoint::Node {
                name: "node-b".into(),
                address: "192.168.50.12".parse().expect("ip")
            })
        );
        assert_eq!(
            resolve(&s, "192.168.50.200", None),
            Ok(Endpoint::Outside {
                ip: "192.168.50.200".parse().expect("ip")
            })
        );
        assert!(
            resolve(&s, "nonsense", None)
                .expect_err("no match")
                .contains("NAMESPACE/NAME")
        );
    }
}
