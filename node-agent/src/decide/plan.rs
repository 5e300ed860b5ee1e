//! `plan`: the kernel state this node should have, computed from the API objects alone.
//!
//! First step of the agent's loop (plan → observe → diff → apply). Input: this node's
//! NodeSubnet, its peers' NodeSubnets, the PodNetwork spec and the underlay link the caller
//! observed. Output: a [`State`] for [`crate::diff`], the pod MTU for the CNI config and the
//! status, and the peers that could not be programmed, in words for a condition or a log line.
//! Pure: no client, no netlink, no clock; the same input always gives the same plan.
//!
//! Overlay mode, per node (flannel's VXLAN backend; the sequence in `DATAPLANE_NOTES.md`):
//! - a bridge [`BRIDGE_LINK`] for pods, holding the subnet's gateway (`10.244.1.1/24`);
//! - a VXLAN device `cw-vx<vni>` with the node's VTEP MAC, no learning, holding the subnet's
//!   network address as a /32 (`10.244.1.0/32`), so that packets the node itself sends into the
//!   tunnel have a source address peers route back;
//! - per peer reached through the tunnel: a route `peer-cidr via peer-network onlink`, a
//!   permanent neighbour `peer-network → peer VTEP MAC` and an FDB entry `peer VTEP MAC →
//!   peer node address` (three kernel objects, no ARP, no flooding);
//! - per peer on the underlay's own prefix when `crossSubnet` is set: only a direct route
//!   `peer-cidr via peer-address dev <underlay>` (no encapsulation).
//!
//! Dual-stack Overlay (IPv4 `cidr`, IPv6 `secondaryCidr`, IPv4 underlay): the bridge also
//! holds the IPv6 gateway (`fd00:10:244:1::1/64`), the VXLAN device the IPv6 subnet's network
//! address as a /128, and per peer with an IPv6 subnet a route `peer-v6 via peer-v6-network
//! dev cw-vx1 onlink` and a permanent neighbour `peer-v6-network → peer VTEP MAC`; the FDB
//! entry (MAC → peer IPv4 node address) is the IPv4 path's (VXLAN is L2: IPv6 frames ride the
//! IPv4 tunnel). IPv6 stays tunnelled under `crossSubnet` (a direct IPv6 route would need an
//! IPv6 underlay), so an on-link peer gets the FDB entry for its IPv6 subnet alone.
//!
//! Dual-stack Flat and Routed (static): IPv6 crosses the underlay unencapsulated, within the
//! IPv6 prefix the node's `secondaryNodeAddress` has on the underlay link
//! ([`Underlay::prefix6`]; without it the plan fails, naming what is missing). Flat puts the
//! whole `secondaryCidr` on-link there, turns proxy NDP on and adds one proxy entry per local
//! pod IPv6 address ([`Input::pods6`], only inside this node's IPv6 subnet); Routed adds, per
//! peer on that prefix, `peer-v6 via peer-secondaryNodeAddress dev <underlay>`. Peers on
//! another IPv6 prefix are named in [`Plan::skipped`], unless the network uses BGP: then the
//! IPv6 routes learned over BGP ([`Input::learned`]) inside `secondaryCidr`, with a next hop on
//! that prefix, become `prefix via next-hop dev <underlay>` like the IPv4 ones.
//!
//! Outgoing NAT, when `natOutgoing` is set (the default): masquerade from this node's subnet
//! to destinations outside the PodNetwork's cidr and `natExcludeCidrs` (see [`crate::nat`]).
//!
//! Robustness: a peer whose NodeSubnet cannot be programmed safely (unparsable field, a subnet
//! of either family overlapping ours or an earlier peer's, an IPv6 subnet outside the
//! network's secondaryCidr, our node name or address, a VTEP MAC already in use) is
//! left out whole and reported in [`Plan::skipped`]; it never makes the plan fail and never
//! yields half of its entries. Conflicts are resolved first-come-first-served (oldest
//! `creationTimestamp`, then name), so a newly created bad object cannot take a working peer's
//! place. Only this node's own objects can fail the plan ([`PlanError`]): without them there is
//! nothing correct to program.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use causeway_crds::cidr;
use causeway_crds::mtu::{MAX_MTU, MIN_MTU, VXLAN_OVERHEAD};
use causeway_crds::v1alpha1::{ParsedSubnet, PodNetworkMode};
use causeway_crds::{NodeSubnet, NodeSubnetSpec, PodNetworkSpec};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::model::{
    Address, DEVICE_PREFIX, Fdb, Link, LinkKind, MAX_LINK_NAME, Mac, Nat, Nat6, Neighbour, Route,
    Snat, State,
};

/// The pod bridge of every node; the CNI `bridge` plugin attaches pods to it.
pub const BRIDGE_LINK: &str = "cw-br0";

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The name of the VXLAN device for `vni` (`cw-vx1`). At most 13 bytes for any 24-bit VNI, so
/// always a valid interface name; the VNI in the name makes a VNI change a new device.
#[must_use]
pub fn vxlan_link_name(vni: u32) -> String {
    format!("{DEVICE_PREFIX}vx{vni}")
}

pub use crate::model::Underlay;

/// Everything [`plan`] reads.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// This node's NodeSubnet. Its own deletion is the caller's business (tear down instead
    /// of planning); `plan` ignores `deletionTimestamp` here.
    pub own: &'a NodeSubnet,
    /// The NodeSubnets of the same network, as a reflector store lists them. The list may
    /// contain `own` (recognised by name and ignored) and objects being deleted (ignored:
    /// their node is leaving, and their subnet may be handed out again).
    pub peers: &'a [Arc<NodeSubnet>],
    /// The PodNetwork `own` belongs to.
    pub network: &'a PodNetworkSpec,
    /// The underlay link carrying `own.spec.nodeAddress`.
    pub underlay: &'a Underlay,
    /// Routed mode with BGP: the prefixes the routers advertise, with their next hop (the
    /// speaker's best paths), IPv6 ones too on a dual-stack network. Empty otherwise.
    pub learned: &'a crate::bgp::Learned,
    /// BridgeHosts gateways without SNAT: client ranges whose replies go back through the
    /// gateway's active host.
    pub returns: &'a [GatewayReturn],
    /// BridgeHosts gateways with `snat: true` this node is a candidate for: client ranges
    /// whose traffic into the pod range it masquerades.
    pub snat: &'a [Ipv4Net],
    /// ClientJoin clients of the network's gateways (Overlay mode only).
    pub clients: &'a [crate::model::ClientPeer],
    /// Addresses this node must keep reaching over the underlay besides its peers' node
    /// addresses: the API server's and the next hops of the node's own routes (its default
    /// gateway, say). No planned route may cover one (see `protect_underlay`).
    pub protected: &'a BTreeSet<Ipv4Addr>,
    /// The IPv6 counterpart of `protected` (the next hops of the node's own IPv6 routes); the
    /// node's and its peers' `secondaryNodeAddress` are protected besides.
    pub protected6: &'a BTreeSet<Ipv6Addr>,
    /// This node's pods' IPv6 addresses (host-local's allocations): on a dual-stack Flat
    /// network, the node answers neighbour solicitations on the underlay for each one inside
    /// its IPv6 subnet (proxy NDP entries), and for nothing else.
    pub pods6: &'a BTreeSet<Ipv6Addr>,
}

/// Return traffic of one BridgeHosts gateway (`snat: false`): packets for `clients` go to
/// `via`, the node holding the VIP, on the same path as its pods' traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayReturn {
    /// The OverlayGateway, for messages.
    pub gateway: String,
    /// The active host's node name (`status.activeHost`).
    pub via: String,
    pub clients: Vec<Ipv4Net>,
}

/// What this node's dataplane should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The kernel objects the agent should own, for [`crate::diff::diff`].
    pub desired: State,
    /// The pod MTU: bridge, VXLAN device and the CNI config use it; status reports it.
    pub mtu: u32,
    /// This node's pod subnet (the CNI config hands out its addresses).
    pub subnet: Ipv4Net,
    /// This node's IPv6 pod subnet on a dual-stack network (`spec.secondaryCidr`), when the
    /// operator has allocated one; the CNI config hands out its addresses too.
    pub secondary: Option<Ipv6Net>,
    /// One sentence per peer left out, naming the NodeSubnet and the reason.
    pub skipped: Vec<String>,
}

/// Why no plan could be made for this node. Each message names the object and field at fault
/// and, where one exists, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A field of this node's own NodeSubnet does not parse.
    #[error("NodeSubnet {name}: {field}: {source}")]
    OwnField {
        /// The NodeSubnet's name.
        name: String,
        /// The field path (`spec.cidr`).
        field: &'static str,
        source: causeway_crds::Error,
    },

    /// The PodNetwork's `spec.cidr` does not parse.
    #[error("PodNetwork spec.cidr: {source}")]
    NetworkCidr { source: causeway_crds::Error },

    /// This node's subnet is not part of the network's range.
    #[error(
        "NodeSubnet {name}: spec.cidr {cidr} lies outside the PodNetwork's cidr {network}: the operator did not allocate it from this network; delete the NodeSubnet so the operator allocates a new one"
    )]
    OutsideNetwork {
        name: String,
        cidr: Ipv4Net,
        network: Ipv4Net,
    },

    /// The pod range overlaps the network this node's underlay address is on.
    #[error(
        "PodNetwork spec.cidr {network} overlaps this node's network {underlay} (on {dev}): pod addresses would collide with the node network's own (nodes, routers), so nothing is programmed; choose a range no node network uses (e.g. 10.244.0.0/16)"
    )]
    OverlapsUnderlay {
        network: Ipv4Net,
        underlay: Ipv4Net,
        dev: String,
    },

    /// `spec.secondaryCidr` or `spec.secondaryNodeSubnetPrefixLength` of the PodNetwork is
    /// invalid (admission normally prevents this).
    #[error("PodNetwork spec.secondaryCidr: {source}")]
    SecondaryCidr { source: causeway_crds::Error },

    /// This node's IPv6 subnet is not part of the network's IPv6 range.
    #[error(
        "NodeSubnet {name}: spec.secondaryCidr {cidr} lies outside the PodNetwork's secondaryCidr {network}: the operator did not allocate it from this network; delete the NodeSubnet so the operator allocates a new one"
    )]
    SecondaryOutsideNetwork {
        name: String,
        cidr: String,
        network: Ipv6Net,
    },

    /// This node's IPv6 subnet has no room for a gateway and pods.
    #[error(
        "NodeSubnet {name}: spec.secondaryCidr {cidr} is too small: a node subnet needs a prefix length of at most 126 (a gateway address and pod addresses)"
    )]
    SecondaryTooSmall { name: String, cidr: Ipv6Net },

    /// This node's subnet has no room for a gateway and pods.
    #[error(
        "NodeSubnet {name}: spec.cidr {cidr} is too small: a node subnet needs a prefix length of at most 30 (a gateway address and pod addresses)"
    )]
    SubnetTooSmall { name: String, cidr: Ipv4Net },

    /// An entry of `spec.natExcludeCidrs` is not a CIDR (admission normally prevents this).
    #[error(
        "PodNetwork spec.natExcludeCidrs[{index}] {value:?} is not a CIDR: write it like 192.168.0.0/16"
    )]
    NatExclude { index: usize, value: String },

    /// `spec.overlay.vni` is out of range (admission normally prevents this).
    #[error("PodNetwork spec.overlay.vni {value} is out of range: use 1-16777215")]
    Vni { value: i32 },

    /// `spec.overlay.port` is out of range (admission normally prevents this).
    #[error("PodNetwork spec.overlay.port {value} is out of range: use 1-65535")]
    Port { value: i32 },

    /// `spec.mtu` is outside what the API allows (admission normally prevents this).
    #[error("PodNetwork spec.mtu {value} is out of range: use {MIN_MTU}-{MAX_MTU}")]
    MtuOutOfRange { value: i32 },

    /// `spec.mtu` is larger than the underlay can carry (once VXLAN has added its headers, in
    /// Overlay mode); the kernel refuses such a VXLAN MTU, and large pod packets would be
    /// dropped anyway.
    #[error(
        "PodNetwork spec.mtu {mtu} does not fit through underlay link {underlay} (MTU {underlay_mtu}){headers}: set spec.mtu to {max} or less, or remove it to get {max} automatically"
    )]
    MtuTooLarge {
        mtu: u32,
        underlay: String,
        underlay_mtu: u32,
        /// ` with 50 bytes of VXLAN headers`, or empty without encapsulation.
        headers: String,
        max: u32,
    },

    /// The underlay's MTU leaves less than the smallest pod MTU (after VXLAN's headers, in
    /// Overlay mode).
    #[error(
        "underlay link {underlay} has MTU {underlay_mtu}: pods would get {mtu}, below the minimum of {MIN_MTU}; raise the underlay MTU"
    )]
    UnderlayMtuTooSmall {
        underlay: String,
        underlay_mtu: u32,
        mtu: u32,
    },

    /// The network's IPv6 range overlaps the IPv6 prefix this node's underlay is on.
    #[error(
        "PodNetwork spec.secondaryCidr {network} overlaps this node's IPv6 network {underlay} (on {dev}): pod addresses would collide with the node network's own, so nothing is programmed; choose an IPv6 range no node network uses (e.g. fd00:10:244::/56)"
    )]
    OverlapsUnderlay6 {
        network: Ipv6Net,
        underlay: Ipv6Net,
        dev: String,
    },

    /// A dual-stack Flat or Routed network needs this node's IPv6 address, which its
    /// NodeSubnet does not carry (or not as IPv6).
    #[error(
        "NodeSubnet {name}: spec.secondaryNodeAddress is {value}, and this dual-stack {mode:?} network needs node {node}'s IPv6 address on its underlay (IPv6 pod traffic goes over the underlay unencapsulated): give node {node} an IPv6 address and register it as an InternalIP (the operator copies it into spec.secondaryNodeAddress), or use mode Overlay; nothing on this node is changed until then"
    )]
    NoNodeAddress6 {
        name: String,
        node: String,
        mode: PodNetworkMode,
        /// `missing`, or the value in quotes.
        value: String,
    },

    /// The node's IPv6 address is not on the underlay link (the one holding its IPv4 address).
    #[error(
        "this node's IPv6 address {address} (NodeSubnet spec.secondaryNodeAddress, its IPv6 InternalIP) is not on underlay link {underlay}, which holds its IPv4 address {address4}: a dual-stack {mode:?} network reaches IPv6 pods over that link; add {address} to {underlay} (with its on-link prefix) or correct the node's IPv6 InternalIP; nothing on this node is changed until then"
    )]
    NotOnUnderlay6 {
        address: Ipv6Addr,
        address4: Ipv4Addr,
        underlay: String,
        mode: PodNetworkMode,
    },

    /// The underlay link the caller found does not hold the node's address.
    #[error(
        "underlay link {underlay} ({prefix}) does not hold this node's address {address} (NodeSubnet spec.nodeAddress): VXLAN packets would leave from the wrong link; check the node's InternalIP"
    )]
    UnderlayMismatch {
        underlay: String,
        prefix: Ipv4Net,
        address: Ipv4Addr,
    },
}

/// Computes the desired dataplane of this node (see the module docs).
///
/// # Errors
/// A [`PlanError`] when this node's own NodeSubnet, the PodNetwork spec or the underlay make a
/// correct plan impossible. Problems with peers never fail the plan: see [`Plan::skipped`].
pub fn plan(input: &Input<'_>) -> Result<Plan, PlanError> {
    let network = input.network;
    let own = OwnNode::parse(input)?;
    let underlay = input.underlay.prefix;
    if own.network.contains(&underlay.network()) || underlay.contains(&own.network.network()) {
        return Err(PlanError::OverlapsUnderlay {
            network: own.network,
            underlay,
            dev: input.underlay.name.clone(),
        });
    }
    if let (Some(network6), Some(prefix6)) = (own.network6, input.underlay.prefix6)
        && (network6.contains(&prefix6.network()) || prefix6.contains(&network6.network()))
    {
        return Err(PlanError::OverlapsUnderlay6 {
            network: network6,
            underlay: prefix6,
            dev: input.underlay.name.clone(),
        });
    }
    let mtu = effective_mtu(network, input.underlay)?;
    let mut desired = State::default();
    add_link(&mut desired, BRIDGE_LINK, LinkKind::Bridge, mtu);
    add_address(
        &mut desired,
        BRIDGE_LINK,
        // Prefix lengths ≤ 30 are checked in `OwnNode::parse`, so this cannot fail.
        Ipv4Net::new(cidr::gateway_address(own.cidr), own.cidr.prefix_len())
            .unwrap_or(own.cidr)
            .into(),
    );
    if let Some(secondary) = own.secondary {
        add_address(&mut desired, BRIDGE_LINK, gateway6(secondary).into());
    }
    let skipped = match network.mode {
        PodNetworkMode::Overlay => overlay(input, &own, mtu, &mut desired)?,
        PodNetworkMode::Flat => flat(input, &own, &mut desired)?,
        PodNetworkMode::Routed => routed(input, &own, &mut desired)?,
    };
    let mut skipped = skipped;
    skipped.extend(gateway_returns(input, &own, &mut desired));
    skipped.extend(protect_underlay(input, &own, &mut desired));
    if !input.snat.is_empty() {
        desired.snat = Some(Snat::Masquerade(crate::nat::gateway_snat(
            input.snat,
            own.network,
        )));
    }
    if network.nat_outgoing {
        let mut exclude = nat_exclusions(network)?;
        // ClientJoin clients are members of the overlay: pods talk to them unmasqueraded.
        exclude.extend(input.clients.iter().map(|c| Ipv4Net::from(c.overlay)));
        desired.nat = Some(Nat::Masquerade(crate::nat::masquerade(
            own.cidr,
            own.network,
            &exclude,
        )));
        if let (Some(secondary), Some(network6)) = (own.secondary, own.network6) {
            desired.nat6 = Some(Nat6::Masquerade(crate::nat::masquerade6(
                secondary,
                network6,
                &nat_exclusions6(network),
            )));
        }
    }
    Ok(Plan {
        desired,
        mtu,
        subnet: own.cidr,
        secondary: own.secondary,
        skipped,
    })
}

/// Overlay: the VXLAN device, and per peer a tunnel (or, with `crossSubnet`, a direct route).
fn overlay(
    input: &Input<'_>,
    own: &OwnNode<'_>,
    mtu: u32,
    desired: &mut State,
) -> Result<Vec<String>, PlanError> {
    let overlay = input.network.overlay_or_default();
    let (vni, port) = vxlan_params(input.network)?;
    let vxlan = vxlan_link_name(vni);
    debug_assert!(vxlan.len() <= MAX_LINK_NAME);
    add_link(
        desired,
        &vxlan,
        LinkKind::Vxlan {
            vni,
            port,
            local: own.address,
            underlay: input.underlay.name.clone(),
            mac: own.mac,
        },
        mtu,
    );
    add_address(desired, &vxlan, Ipv4Net::from(own.cidr.network()).into());
    // The same for IPv6 inner packets: the subnet's network address as a /128.
    if let Some(secondary) = own.secondary {
        add_address(desired, &vxlan, Ipv6Net::from(secondary.network()).into());
    }
    // Client traffic of a RouteToNodes gateway enters at a gateway node and reaches the pod's
    // node through the tunnel with the client's source, whose route back is the underlay:
    // strict reverse-path filtering (the RHEL and CIS default) would drop it here.
    desired.loose_rp_filter.insert(vxlan.clone());

    // With crossSubnet, peers on the underlay's prefix are reached directly.
    let direct_prefix = overlay.cross_subnet.then_some(input.underlay.prefix);
    let mut peers = Peers::new(own);
    let mut skipped = Vec::new();
    for peer in ordered_peers(input) {
        let admitted = peers.admit(peer, own, direct_prefix, true);
        match &admitted {
            Ok((Path::Direct { cidr, address }, _)) => {
                direct_route(desired, input, (*cidr).into(), (*address).into());
            }
            Ok((Path::Tunnel { cidr, address, mac }, _)) => {
                tunnel(
                    desired,
                    &vxlan,
                    (*cidr).into(),
                    cidr.network().into(),
                    *mac,
                    *address,
                );
            }
            Ok((Path::Elsewhere { .. }, _)) => {}
            Err(reason) => skipped.push(format!("{} skipped: {reason}", describe(peer))),
        }
        // IPv6 always rides the tunnel (VXLAN is L2; the outer packets are IPv4), even when
        // `crossSubnet` reaches the peer's IPv4 subnet directly: a direct IPv6 route would
        // need an IPv6 underlay. Its FDB entry is the one the IPv4 path uses, or the same
        // entry added here for a direct peer.
        if let Ok((_, Some(v6))) = admitted {
            tunnel(
                desired,
                &vxlan,
                v6.cidr.into(),
                v6.cidr.network().into(),
                v6.mac,
                v6.address,
            );
        }
    }
    // ClientJoin clients: one /32 each, through the tunnel to the client's own VTEP.
    for client in input.clients {
        let dst = IpNet::from(Ipv4Net::from(client.overlay));
        if own.network.contains(&client.overlay) || desired.routes.contains_key(&dst) {
            skipped.push(format!(
                "ClientJoin client {} skipped: overlayAddress {} is inside the pod range or already routed",
                client.name, client.overlay
            ));
            continue;
        }
        tunnel(
            desired,
            &vxlan,
            dst,
            client.overlay.into(),
            client.mac,
            client.address,
        );
    }
    Ok(skipped)
}

/// The gateway of an IPv6 node subnet: its first address after the network address
/// (`fd00:10:244:1::1/64`), which the bridge holds and the CNI config names.
#[must_use]
pub fn gateway6(subnet: Ipv6Net) -> Ipv6Net {
    let first = std::net::Ipv6Addr::from(u128::from(subnet.network()).saturating_add(1));
    Ipv6Net::new(first, subnet.prefix_len()).unwrap_or(subnet)
}

/// The network's VNI and UDP port, checked.
pub(crate) fn vxlan_params(network: &PodNetworkSpec) -> Result<(u32, u16), PlanError> {
    let overlay = network.overlay_or_default();
    let vni = u32::try_from(overlay.vni)
        .ok()
        .filter(|v| (1..=MAX_VNI).contains(v))
        .ok_or(PlanError::Vni { value: overlay.vni })?;
    let port = u16::try_from(overlay.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(PlanError::Port {
            value: overlay.port,
        })?;
    Ok((vni, port))
}

/// A route to `dst` via `gateway` on the VXLAN device, with the permanent neighbour entry that
/// resolves `gateway` to the remote VTEP's `mac` and the FDB entry that sends `mac`'s frames
/// to `endpoint`: the three objects per remote member, none needing ARP or flooding.
pub(crate) fn tunnel(
    desired: &mut State,
    vxlan: &str,
    dst: IpNet,
    gateway: IpAddr,
    mac: Mac,
    endpoint: Ipv4Addr,
) {
    desired.routes.insert(
        dst,
        Route {
            dst,
            gateway: Some(gateway),
            dev: vxlan.to_owned(),
            onlink: true,
        },
    );
    desired.neighbours.insert(
        (vxlan.to_owned(), gateway),
        Neighbour {
            dev: vxlan.to_owned(),
            ip: gateway,
            mac,
        },
    );
    desired.fdb.insert(
        (vxlan.to_owned(), mac),
        Fdb {
            dev: vxlan.to_owned(),
            mac,
            dst: endpoint,
        },
    );
}

/// BridgeHosts return routes: each client range via the gateway's active host, on the path
/// this node already uses for the host's pod subnet (its tunnel, or its underlay address when
/// on-link). Nothing on the active host itself, and nothing for client ranges on this node's
/// own segment: it reaches those clients directly, and the kernel's connected route is there.
/// One route per client range: O(1) per node, replaced on failover.
fn gateway_returns(input: &Input<'_>, own: &OwnNode<'_>, desired: &mut State) -> Vec<String> {
    let mut skipped = Vec::new();
    for ret in input.returns {
        if ret.via == input.own.spec.node_name {
            continue;
        }
        let Some(host) = input
            .peers
            .iter()
            .find(|p| p.spec.node_name == ret.via && p.metadata.deletion_timestamp.is_none())
        else {
            skipped.push(format!(
                "OverlayGateway {}: active host {} has no NodeSubnet in this network; no return route",
                ret.gateway, ret.via
            ));
            continue;
        };
        let Ok(ParsedSubnet {
            cidr,
            node_address: address,
            ..
        }) = host.spec.parse()
        else {
            continue;
        };
        let path = match desired.routes.get(&IpNet::V4(cidr)) {
            Some(r) => Some((r.gateway, r.dev.clone(), r.onlink)),
            None if input.underlay.prefix.contains(&address) => {
                Some((Some(address.into()), input.underlay.name.clone(), false))
            }
            None => None,
        };
        let Some((gateway, dev, onlink)) = path else {
            skipped.push(format!(
                "OverlayGateway {}: no path to active host {} ({address}); no return route",
                ret.gateway, ret.via
            ));
            continue;
        };
        for client in &ret.clients {
            let client = client.trunc();
            let on_segment = client.contains(&input.underlay.prefix.network())
                || input.underlay.prefix.contains(&client.network());
            if on_segment
                || client.contains(&own.network.network())
                || own.network.contains(&client.network())
            {
                continue;
            }
            desired.routes.insert(
                client.into(),
                Route {
                    dst: client.into(),
                    gateway,
                    dev: dev.clone(),
                    onlink,
                },
            );
        }
    }
    skipped
}

/// The underlay invariant: no route the agent plans may cover an address the node must keep
/// reaching over the underlay — its own and its peers' node addresses, the API server, the
/// next hops of its own routes — and no neighbour entry may claim one. Such a route would
/// send the node's tunnel packets, API requests or routed traffic into its own devices (a
/// BridgeHosts client range holding the nodes' segment, on a node that reaches that segment
/// through a default route, did exactly that). Offending entries are dropped, each with a
/// note naming the addresses it would have captured.
fn protect_underlay(input: &Input<'_>, own: &OwnNode<'_>, desired: &mut State) -> Vec<String> {
    let mut protected: BTreeMap<Ipv4Addr, String> = input
        .protected
        .iter()
        .map(|a| (*a, a.to_string()))
        .collect();
    protected.insert(
        own.address,
        format!("{own_addr} (this node)", own_addr = own.address),
    );
    for peer in input.peers {
        if let Ok(a) = peer.spec.parsed_node_address() {
            protected.insert(a, format!("{a} ({}'s address)", peer.spec.node_name));
        }
    }
    // The IPv6 side (dual-stack): the node's and its peers' IPv6 node addresses and the next
    // hops of the node's own IPv6 routes.
    let mut protected6: BTreeMap<Ipv6Addr, String> = input
        .protected6
        .iter()
        .map(|a| (*a, a.to_string()))
        .collect();
    if let Some(a) = own.address6 {
        protected6.insert(a, format!("{a} (this node)"));
    }
    for peer in input.peers {
        if let Some(IpAddr::V6(a)) = node_address6(&peer.spec) {
            protected6.insert(a, format!("{a} ({}'s address)", peer.spec.node_name));
        }
    }
    let mut notes = Vec::new();
    desired.routes.retain(|dst, route| {
        let covered: Vec<&str> = match dst {
            IpNet::V4(dst) => protected
                .range(dst.network()..=dst.broadcast())
                .map(|(_, what)| what.as_str())
                .collect(),
            IpNet::V6(dst) => protected6
                .range(dst.network()..=dst.broadcast())
                .map(|(_, what)| what.as_str())
                .collect(),
        };
        if covered.is_empty() {
            return true;
        }
        let shown: Vec<&str> = covered.iter().take(3).copied().collect();
        let more = covered.len().saturating_sub(shown.len());
        notes.push(format!(
            "route {dst} via {} skipped: it covers {}{}, which this node must keep reaching over the underlay",
            route.dev,
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
        false
    });
    desired.proxy_neighbours.retain(|(dev, ip)| {
        let keep = !protected6.contains_key(ip);
        if !keep {
            notes.push(format!(
                "proxy neighbour {ip} on {dev} skipped: {ip} must stay reachable over the underlay"
            ));
        }
        keep
    });
    desired.neighbours.retain(|(dev, ip), _| {
        let keep = !match ip {
            IpAddr::V4(a) => protected.contains_key(a),
            IpAddr::V6(a) => protected6.contains_key(a),
        };
        if !keep {
            notes.push(format!(
                "neighbour {ip} on {dev} skipped: {ip} must stay reachable over the underlay"
            ));
        }
        keep
    });
    notes
}

fn direct_route(desired: &mut State, input: &Input<'_>, cidr: IpNet, address: IpAddr) {
    desired.routes.insert(
        cidr,
        Route {
            dst: cidr,
            gateway: Some(address),
            dev: input.underlay.name.clone(),
            onlink: false,
        },
    );
}

/// Flat: the whole range on-link on the underlay, and proxy ARP there, so this node answers
/// ARP for its own pods (its subnet is routed to the bridge, another link) and never for other
/// nodes' (routed back out of the underlay itself, which proxy ARP does not answer for). No
/// per-peer state: peers are only checked for being on this segment.
///
/// Dual-stack: the whole IPv6 range on-link on the underlay too, proxy NDP on, and one proxy
/// entry per local pod's IPv6 address (Linux proxy NDP answers only for listed addresses, never
/// for a range): this node answers neighbour solicitations for its own pods and no others.
fn flat(
    input: &Input<'_>,
    own: &OwnNode<'_>,
    desired: &mut State,
) -> Result<Vec<String>, PlanError> {
    let underlay = &input.underlay.name;
    desired.routes.insert(
        own.network.into(),
        Route {
            dst: own.network.into(),
            gateway: None,
            dev: underlay.clone(),
            onlink: false,
        },
    );
    desired.proxy_arp.insert(underlay.clone());
    let peers = ordered_peers(input);
    let mut skipped: Vec<String> = peers
        .iter()
        .filter_map(|peer| {
            let address = peer.spec.parsed_node_address().ok()?;
            (!cidr::contains(input.underlay.prefix, address)).then(|| {
                format!(
                    "{} is unreachable: its node address {address} is not on this node's segment {}, and Flat mode needs every node on one segment (use mode Routed with BGP or Overlay).",
                    describe(peer),
                    input.underlay.prefix
                )
            })
        })
        .collect();
    let (Some(segment6), Some(network6), Some(secondary)) =
        (underlay6(input, own)?, own.network6, own.secondary)
    else {
        return Ok(skipped);
    };
    desired.routes.insert(
        network6.into(),
        Route {
            dst: network6.into(),
            gateway: None,
            dev: underlay.clone(),
            onlink: false,
        },
    );
    desired.proxy_ndp.insert(underlay.clone());
    let gateway = gateway6(secondary).addr();
    for ip in input.pods6 {
        // Only pods' addresses: inside this node's IPv6 subnet, not its network address (the
        // subnet-router anycast address) nor the bridge's gateway.
        if secondary.contains(ip) && *ip != secondary.network() && *ip != gateway {
            desired.proxy_neighbours.insert((underlay.clone(), *ip));
        }
    }
    for peer in peers {
        if peer.spec.secondary_cidr.is_none() {
            continue;
        }
        if let Some(why) = off_segment6(peer, segment6) {
            skipped.push(format!(
                "{}: its IPv6 pods are unreachable: {why}, and Flat mode needs every node on one segment (use mode Overlay, or select the nodes of one segment).",
                describe(peer)
            ));
        }
    }
    Ok(skipped)
}

/// This node's IPv6 underlay on a dual-stack Flat or Routed network with an IPv6 subnet: the
/// on-link prefix of its `secondaryNodeAddress` on the underlay link. `None` when the node
/// has no IPv6 subnet (single-stack, or not allocated yet: the node runs IPv4 only); an error
/// naming what is missing when the node has no usable IPv6 address there.
fn underlay6(input: &Input<'_>, own: &OwnNode<'_>) -> Result<Option<Ipv6Net>, PlanError> {
    if own.secondary.is_none() {
        return Ok(None);
    }
    let mode = input.network.mode;
    let address = match own.spec.secondary_node_address.as_deref() {
        None => None,
        Some(text) => match cidr::parse_addr(text) {
            Ok(IpAddr::V6(a)) => Some(a),
            _ => {
                return Err(PlanError::NoNodeAddress6 {
                    name: own.name.to_owned(),
                    node: own.spec.node_name.clone(),
                    mode,
                    value: format!("{text:?}, not an IPv6 address"),
                });
            }
        },
    };
    let Some(address) = address else {
        return Err(PlanError::NoNodeAddress6 {
            name: own.name.to_owned(),
            node: own.spec.node_name.clone(),
            mode,
            value: "missing".into(),
        });
    };
    match input.underlay.prefix6 {
        Some(prefix) if prefix.contains(&address) => Ok(Some(prefix)),
        _ => Err(PlanError::NotOnUnderlay6 {
            address,
            address4: own.address,
            underlay: input.underlay.name.clone(),
            mode,
        }),
    }
}

/// `spec.secondaryNodeAddress` parsed, `None` when missing or unparsable.
fn node_address6(spec: &NodeSubnetSpec) -> Option<IpAddr> {
    spec.secondary_node_address
        .as_deref()
        .and_then(|t| cidr::parse_addr(t).ok())
}

/// Why `peer`'s IPv6 node address is not on `segment6` (this node's IPv6 on-link prefix),
/// as the end of a sentence; `None` when it is.
fn off_segment6(peer: &NodeSubnet, segment6: Ipv6Net) -> Option<String> {
    match node_address6(&peer.spec) {
        Some(IpAddr::V6(a)) if segment6.contains(&a) => None,
        Some(IpAddr::V6(a)) => Some(format!(
            "its IPv6 node address {a} is not on this node's IPv6 segment {segment6}"
        )),
        _ => Some(format!(
            "it has no IPv6 node address (spec.secondaryNodeAddress; give node {} an IPv6 InternalIP on {segment6})",
            peer.spec.node_name
        )),
    }
}

/// Routed: a direct route to every peer on this segment; routes the routers advertise over
/// BGP for the rest. Dual-stack (static only): each peer's IPv6 subnet via its IPv6 node
/// address when that is on this node's IPv6 segment.
fn routed(
    input: &Input<'_>,
    own: &OwnNode<'_>,
    desired: &mut State,
) -> Result<Vec<String>, PlanError> {
    let bgp = input
        .network
        .routed
        .as_ref()
        .is_some_and(|r| r.bgp.is_some());
    let segment6 = underlay6(input, own)?;
    let mut peers = Peers::new(own);
    let mut skipped = Vec::new();
    for peer in ordered_peers(input) {
        let (path, v6) = match peers.admit(peer, own, Some(input.underlay.prefix), false) {
            Ok(admitted) => admitted,
            Err(reason) => {
                skipped.push(format!("{} skipped: {reason}", describe(peer)));
                continue;
            }
        };
        match path {
            Path::Direct { cidr, address } => {
                direct_route(desired, input, cidr.into(), address.into());
            }
            Path::Elsewhere { address, .. } if !bgp => skipped.push(format!(
                "{} is unreachable: its node address {address} is not on this node's segment {}; add spec.routed.bgp so the routers carry its subnet, or use mode Overlay.",
                describe(peer),
                input.underlay.prefix
            )),
            _ => {}
        }
        let (Some(v6), Some(segment6)) = (v6, segment6) else {
            continue;
        };
        match v6.node6 {
            Some(IpAddr::V6(a)) if segment6.contains(&a) && Some(a) != own.address6 => {
                direct_route(desired, input, v6.cidr.into(), a.into());
            }
            Some(IpAddr::V6(a)) if Some(a) == own.address6 => skipped.push(format!(
                "{}: its IPv6 subnet {} skipped: spec.secondaryNodeAddress {a} is this node's own IPv6 address",
                describe(peer),
                v6.cidr
            )),
            // Off this segment: the routers carry it over BGP, as its IPv4 subnet.
            _ if bgp => {}
            _ => {
                let why = off_segment6(peer, segment6).unwrap_or_default();
                skipped.push(format!(
                    "{}: its IPv6 subnet {} is unreachable: {why}; static Routed mode reaches only peers on this node's segment (use mode Overlay).",
                    describe(peer),
                    v6.cidr
                ));
            }
        }
    }
    for (prefix, next_hop) in &input.learned.v4 {
        // Inside the network's range, not our own subnet (or part of it), and not a peer we
        // reach directly already. An aggregate covering our subnet is fine: the bridge's more
        // specific route wins.
        let wanted = own.network.contains(prefix)
            && !own.cidr.contains(prefix)
            && !desired.routes.contains_key(&IpNet::V4(*prefix));
        if !wanted {
            continue;
        }
        if !cidr::contains(input.underlay.prefix, *next_hop) {
            skipped.push(format!(
                "BGP route {prefix} skipped: its next hop {next_hop} is not on this node's segment {}.",
                input.underlay.prefix
            ));
            continue;
        }
        direct_route(desired, input, (*prefix).into(), (*next_hop).into());
    }
    skipped.extend(learned6(input, own, segment6, desired));
    Ok(skipped)
}

/// Routed with BGP on a dual-stack network: the IPv6 routes the routers advertise, filtered
/// as the IPv4 ones are (inside the network's `secondaryCidr`, not this node's IPv6 subnet, not
/// a destination that already has a route, such as an on-segment peer's, and a next hop on
/// `segment6`, this node's IPv6 underlay prefix from [`underlay6`]).
fn learned6(
    input: &Input<'_>,
    own: &OwnNode<'_>,
    segment6: Option<Ipv6Net>,
    desired: &mut State,
) -> Vec<String> {
    let mut skipped = Vec::new();
    let (Some(network6), Some(secondary), Some(segment6)) = (own.network6, own.secondary, segment6)
    else {
        return skipped;
    };
    for (prefix, next_hop) in &input.learned.v6 {
        let wanted = network6.contains(prefix)
            && !secondary.contains(prefix)
            && !desired.routes.contains_key(&IpNet::V6(*prefix));
        if !wanted {
            continue;
        }
        if !segment6.contains(next_hop) {
            skipped.push(format!(
                "BGP route {prefix} skipped: its next hop {next_hop} is not on this node's IPv6 segment {segment6}."
            ));
            continue;
        }
        direct_route(desired, input, (*prefix).into(), (*next_hop).into());
    }
    skipped
}

/// `spec.natExcludeCidrs`' IPv6 entries (host bits dropped), for a dual-stack network's IPv6
/// masquerade; entries that do not parse fail the plan in [`nat_exclusions`] already.
fn nat_exclusions6(network: &PodNetworkSpec) -> Vec<Ipv6Net> {
    network
        .nat_exclude_cidrs
        .iter()
        .filter_map(|v| match v.trim().parse::<IpNet>() {
            Ok(IpNet::V6(n)) => Some(n.trunc()),
            _ => None,
        })
        .collect()
}

/// `spec.natExcludeCidrs` as IPv4 prefixes (host bits dropped; IPv6 entries cannot match
/// IPv4 pod traffic and go to the IPv6 rule of a dual-stack network).
fn nat_exclusions(network: &PodNetworkSpec) -> Result<Vec<Ipv4Net>, PlanError> {
    let mut out = Vec::new();
    for (index, value) in network.nat_exclude_cidrs.iter().enumerate() {
        match value.trim().parse::<ipnet::IpNet>() {
            Ok(ipnet::IpNet::V4(n)) => out.push(n.trunc()),
            Ok(ipnet::IpNet::V6(_)) => {}
            Err(_) => {
                return Err(PlanError::NatExclude {
                    index,
                    value: value.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// This node's NodeSubnet, parsed and checked.
struct OwnNode<'a> {
    name: &'a str,
    spec: &'a NodeSubnetSpec,
    /// The PodNetwork's range, which every node subnet must lie in.
    network: Ipv4Net,
    cidr: Ipv4Net,
    address: Ipv4Addr,
    mac: Mac,
    /// The network's IPv6 range (`spec.secondaryCidr`) on a dual-stack network.
    network6: Option<Ipv6Net>,
    /// This node's IPv6 subnet (`spec.secondaryCidr` of its NodeSubnet); `None` on a
    /// single-stack network, and until the operator has allocated one.
    secondary: Option<Ipv6Net>,
    /// This node's IPv6 address (`spec.secondaryNodeAddress`), when it parses as one.
    address6: Option<Ipv6Addr>,
}

impl<'a> OwnNode<'a> {
    fn parse(input: &Input<'a>) -> Result<Self, PlanError> {
        let name = input.own.metadata.name.as_deref().unwrap_or("<unnamed>");
        let spec = &input.own.spec;
        let network = input
            .network
            .parsed_cidr()
            .map_err(|source| PlanError::NetworkCidr { source })?;
        let parsed = spec.parse().map_err(|e| PlanError::OwnField {
            name: name.to_owned(),
            field: e.field,
            source: e.source,
        })?;
        let (cidr, address) = (parsed.cidr, parsed.node_address);
        if !network.contains(&cidr) {
            return Err(PlanError::OutsideNetwork {
                name: name.to_owned(),
                cidr,
                network,
            });
        }
        if cidr.prefix_len() > 30 {
            return Err(PlanError::SubnetTooSmall {
                name: name.to_owned(),
                cidr,
            });
        }
        let underlay = input.underlay;
        if !cidr::contains(underlay.prefix, address) {
            return Err(PlanError::UnderlayMismatch {
                underlay: underlay.name.clone(),
                prefix: underlay.prefix,
                address,
            });
        }
        let (network6, secondary) = Self::secondary(input, name)?;
        Ok(Self {
            name,
            spec,
            network,
            cidr,
            address,
            mac: parsed.vtep_mac,
            network6,
            secondary,
            address6: match node_address6(spec) {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            },
        })
    }

    /// The network's IPv6 range and this node's IPv6 subnet in it, checked. An IPv4
    /// secondary range (an IPv6-primary network) is refused before planning (see
    /// [`crate::pass`]); here it plans as single-stack.
    fn secondary(
        input: &Input<'_>,
        name: &str,
    ) -> Result<(Option<Ipv6Net>, Option<Ipv6Net>), PlanError> {
        let range = input
            .network
            .secondary_range()
            .map_err(|e| PlanError::SecondaryCidr { source: e.source })?;
        let Some(IpNet::V6(network6)) = range.map(|r| r.cidr) else {
            return Ok((None, None));
        };
        let field = |field: &'static str| {
            move |source| PlanError::OwnField {
                name: name.to_owned(),
                field,
                source,
            }
        };
        let Some(text) = input.own.spec.secondary_cidr.as_deref() else {
            return Ok((Some(network6), None));
        };
        let secondary = match cidr::parse_cidr(text).map_err(field("spec.secondaryCidr"))? {
            IpNet::V6(net) => net,
            IpNet::V4(_) => {
                return Err(PlanError::SecondaryOutsideNetwork {
                    name: name.to_owned(),
                    cidr: text.to_owned(),
                    network: network6,
                });
            }
        };
        if !network6.contains(&secondary) {
            return Err(PlanError::SecondaryOutsideNetwork {
                name: name.to_owned(),
                cidr: text.to_owned(),
                network: network6,
            });
        }
        if secondary.prefix_len() > 126 {
            return Err(PlanError::SecondaryTooSmall {
                name: name.to_owned(),
                cidr: secondary,
            });
        }
        Ok((Some(network6), Some(secondary)))
    }
}

/// The pod MTU: `spec.mtu` when set and it fits the underlay, else the underlay's (minus the
/// VXLAN overhead in Overlay mode).
pub(crate) fn effective_mtu(
    network: &PodNetworkSpec,
    underlay: &Underlay,
) -> Result<u32, PlanError> {
    let overhead = match network.mode {
        PodNetworkMode::Overlay => VXLAN_OVERHEAD,
        PodNetworkMode::Flat | PodNetworkMode::Routed => 0,
    };
    let max = underlay.mtu.saturating_sub(overhead);
    if let Some(value) = network.mtu {
        let mtu = u32::try_from(value)
            .ok()
            .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
            .ok_or(PlanError::MtuOutOfRange { value })?;
        if mtu > max {
            return Err(PlanError::MtuTooLarge {
                mtu,
                underlay: underlay.name.clone(),
                underlay_mtu: underlay.mtu,
                headers: if overhead > 0 {
                    format!(" with {overhead} bytes of VXLAN headers")
                } else {
                    String::new()
                },
                max,
            });
        }
    }
    let mtu = network.effective_mtu(underlay.mtu);
    if mtu < MIN_MTU {
        return Err(PlanError::UnderlayMtuTooSmall {
            underlay: underlay.name.clone(),
            underlay_mtu: underlay.mtu,
            mtu,
        });
    }
    Ok(mtu)
}

/// Live peers other than ourselves, oldest first: the order in which conflicts are settled.
fn ordered_peers<'a>(input: &Input<'a>) -> Vec<&'a NodeSubnet> {
    let own_name = input.own.metadata.name.as_deref();
    let mut peers: Vec<&NodeSubnet> = input
        .peers
        .iter()
        .map(Arc::as_ref)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| own_name.is_none() || p.metadata.name.as_deref() != own_name)
        .collect();
    peers.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    peers
}

fn describe(peer: &NodeSubnet) -> String {
    format!(
        "NodeSubnet {} (node {})",
        peer.metadata.name.as_deref().unwrap_or("<unnamed>"),
        peer.spec.node_name
    )
}

/// How a peer's subnet is reached.
enum Path {
    /// On the underlay's prefix with `crossSubnet`: a plain route via the peer's address.
    Direct { cidr: Ipv4Net, address: Ipv4Addr },
    /// Through the VXLAN device.
    Tunnel {
        cidr: Ipv4Net,
        address: Ipv4Addr,
        mac: Mac,
    },
    /// Off this segment, without a tunnel (Routed): reached over BGP, or not at all.
    Elsewhere {
        #[allow(dead_code)]
        cidr: Ipv4Net,
        address: Ipv4Addr,
    },
}

/// A peer's IPv6 subnet on a dual-stack Overlay network: reached through the tunnel to its
/// VTEP, whatever path its IPv4 subnet takes.
struct PeerV6 {
    cidr: Ipv6Net,
    /// The peer's IPv4 underlay address: the VTEP.
    address: Ipv4Addr,
    mac: Mac,
    /// The peer's `secondaryNodeAddress` (Routed: the IPv6 next hop), when it has one.
    node6: Option<IpAddr>,
}

/// The subnets and VTEP MACs taken so far, to refuse peers that would collide with them.
struct Peers {
    /// Pairwise disjoint subnets by network address, with who holds them. Disjointness makes
    /// an overlap check two ordered-map lookups, so planning thousands of peers stays cheap.
    subnets: BTreeMap<Ipv4Addr, (Ipv4Net, String)>,
    /// The same for IPv6 subnets (dual-stack Overlay).
    subnets6: BTreeMap<std::net::Ipv6Addr, (Ipv6Net, String)>,
    /// VTEP MACs of this node and of tunnelled peers, with their node address and holder.
    macs: BTreeMap<Mac, (Ipv4Addr, String)>,
}

impl Peers {
    fn new(own: &OwnNode<'_>) -> Self {
        let holder = format!("this node's subnet (NodeSubnet {})", own.name);
        let subnets6 = own
            .secondary
            .map(|net| (net.network(), (net, holder.clone())))
            .into_iter()
            .collect();
        Self {
            subnets: BTreeMap::from([(own.cidr.network(), (own.cidr, holder.clone()))]),
            subnets6,
            macs: BTreeMap::from([(own.mac, (own.address, holder))]),
        }
    }

    /// Checks one peer and, when it is sound, takes its subnets (and MAC) and says how to
    /// reach them: its IPv4 subnet by the [`Path`], its IPv6 subnet (dual-stack, when it has
    /// one) through the tunnel (Overlay) or via its IPv6 node address (Routed). A peer with any bad field, IPv6 ones included, is
    /// refused whole. The error is the reason, as the end of a sentence.
    fn admit(
        &mut self,
        peer: &NodeSubnet,
        own: &OwnNode<'_>,
        direct_prefix: Option<Ipv4Net>,
        tunnel: bool,
    ) -> Result<(Path, Option<PeerV6>), String> {
        let spec = &peer.spec;
        if spec.network != own.spec.network {
            return Err(format!(
                "it belongs to PodNetwork {:?}, not {:?}",
                spec.network, own.spec.network
            ));
        }
        if spec.node_name == own.spec.node_name {
            return Err(format!(
                "it claims this node's name {:?}; only one NodeSubnet per node and network may exist",
                spec.node_name
            ));
        }
        let parsed = spec.parse().map_err(|e| e.to_string())?;
        let (cidr, address, mac) = (parsed.cidr, parsed.node_address, parsed.vtep_mac);
        if !own.network.contains(&cidr) {
            return Err(format!(
                "spec.cidr {cidr} lies outside the PodNetwork's cidr {}",
                own.network
            ));
        }
        if address == own.address {
            return Err(format!(
                "spec.nodeAddress {address} is this node's own address"
            ));
        }
        if let Some((taken, holder)) = self.overlapping(cidr) {
            return Err(format!(
                "spec.cidr {cidr} overlaps {taken}, held by {holder}"
            ));
        }
        let v6 = match own.network6 {
            Some(network6) => self.check_v6(spec, network6)?,
            None => None,
        };
        let path = if direct_prefix.is_some_and(|prefix| cidr::contains(prefix, address)) {
            Path::Direct { cidr, address }
        } else if !tunnel {
            Path::Elsewhere { cidr, address }
        } else {
            Path::Tunnel { cidr, address, mac }
        };
        if tunnel && (matches!(path, Path::Tunnel { .. }) || v6.is_some()) {
            // One FDB entry per MAC: a second VTEP with the same MAC at another address would
            // silently take the first one's traffic (our own MAC is registered with our own
            // address, which no admitted peer has). The same MAC at the same address is one
            // VTEP, and its FDB entry is shared.
            if let Some((holder_address, holder)) = self.macs.get(&mac)
                && *holder_address != address
            {
                return Err(format!(
                    "its VTEP MAC {mac} is already used by {holder} at {holder_address}"
                ));
            }
            self.macs.insert(mac, (address, describe(peer)));
        }
        self.subnets.insert(cidr.network(), (cidr, describe(peer)));
        if let Some(net) = v6 {
            self.subnets6.insert(net.network(), (net, describe(peer)));
        }
        let node6 = node_address6(spec);
        let v6 = v6.map(|cidr| PeerV6 {
            cidr,
            address,
            mac,
            node6,
        });
        Ok((path, v6))
    }

    /// A peer's `spec.secondaryCidr` on a dual-stack network, checked like `spec.cidr`:
    /// IPv6, inside the network's secondaryCidr, overlapping no subnet taken. `None` when the
    /// peer has none yet (the operator adds it; until then the peer is IPv4 only).
    fn check_v6(
        &self,
        spec: &NodeSubnetSpec,
        network6: Ipv6Net,
    ) -> Result<Option<Ipv6Net>, String> {
        let Some(text) = spec.secondary_cidr.as_deref() else {
            return Ok(None);
        };
        let net = match cidr::parse_cidr(text).map_err(|e| format!("spec.secondaryCidr: {e}"))? {
            IpNet::V6(net) if network6.contains(&net) => net,
            _ => {
                return Err(format!(
                    "spec.secondaryCidr {text} lies outside the PodNetwork's secondaryCidr {network6}"
                ));
            }
        };
        let start = net.network();
        let before = self.subnets6.range(..=start).next_back();
        let after = self.subnets6.range(start..).next();
        if let Some((_, (taken, holder))) = before
            .filter(|(_, (taken, _))| taken.contains(&start))
            .or(after.filter(|(_, (taken, _))| net.contains(taken)))
        {
            return Err(format!(
                "spec.secondaryCidr {net} overlaps {taken}, held by {holder}"
            ));
        }
        Ok(Some(net))
    }

    /// A taken subnet overlapping `net`, if any. Taken subnets are disjoint, so only the last
    /// one starting at or before `net` can contain its start, and only the first one starting
    /// at or after it can lie inside `net`.
    fn overlapping(&self, net: Ipv4Net) -> Option<(Ipv4Net, &str)> {
        let start = net.network();
        let before = self.subnets.range(..=start).next_back();
        let after = self.subnets.range(start..).next();
        before
            .filter(|(_, (taken, _))| taken.contains(&start))
            .or(after.filter(|(_, (taken, _))| net.contains(taken)))
            .map(|(_, (taken, holder))| (*taken, holder.as_str()))
    }
}

pub(crate) fn add_link(state: &mut State, name: &str, kind: LinkKind, mtu: u32) {
    state.links.insert(
        name.to_owned(),
        Link {
            name: name.to_owned(),
            kind,
            mtu,
            up: true,
        },
    );
}

pub(crate) fn add_address(state: &mut State, dev: &str, addr: IpNet) {
    // An IPv6 address needs IPv6 on its link, which a node may start new links without
    // (`net.ipv6.conf.default.disable_ipv6=1`). Addresses go on the agent's own links only.
    if matches!(addr, IpNet::V6(_)) {
        state.ipv6_on.insert(dev.to_owned());
    }
    state
        .addresses
        .insert((dev.to_owned(), addr), Address { addr });
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::vtep::vtep_mac;

    const NETWORK: &str = "overlay";
    const NO_ROUTES: crate::bgp::Learned = crate::bgp::Learned::new();

    fn spec(cross_subnet: bool) -> PodNetworkSpec {
        serde_json::from_value(serde_json::json!({
            "cidr": "10.244.0.0/16",
            "nodeSubnetPrefixLength": 24,
            "mode": "Overlay",
            "overlay": { "vni": 1, "port": 8472, "crossSubnet": cross_subnet },
        }))
        .expect("test PodNetwork spec")
    }

    fn underlay() -> Underlay {
        Underlay {
            name: "eth0".into(),
            mtu: 1500,
            prefix: "192.168.1.0/24".parse().expect("prefix"),
            prefix6: None,
        }
    }

    /// A NodeSubnet named after its node, with the node's derived VTEP MAC.
    fn subnet(node: &str, cidr: &str, address: &str) -> NodeSubnet {
        subnet_with(node, node, cidr, address, Some(&vtep_mac(node).to_string()))
    }

    fn subnet_with(
        name: &str,
        node: &str,
        cidr: &str,
        address: &str,
        mac: Option<&str>,
    ) -> NodeSubnet {
        NodeSubnet::new(
            name,
            NodeSubnetSpec {
                network: NETWORK.into(),
                node_name: node.into(),
                cidr: cidr.into(),
                node_address: address.into(),
                vtep_mac: mac.map(str::to_owned),
                secondary_cidr: None,
                secondary_node_address: None,
            },
        )
    }

    fn with_metadata(subnet: NodeSubnet, metadata: serde_json::Value) -> NodeSubnet {
        let mut value = serde_json::to_value(subnet).expect("serialise");
        for (k, v) in metadata.as_object().expect("object") {
            value["metadata"][k] = v.clone();
        }
        serde_json::from_value(value).expect("deserialise")
    }

    fn deleting(subnet: NodeSubnet) -> NodeSubnet {
        with_metadata(
            subnet,
            serde_json::json!({ "deletionTimestamp": "2025-01-01T00:00:00Z" }),
        )
    }

    fn created_at(subnet: NodeSubnet, at: &str) -> NodeSubnet {
        with_metadata(subnet, serde_json::json!({ "creationTimestamp": at }))
    }

    fn own() -> NodeSubnet {
        subnet("node-a", "10.244.1.0/24", "192.168.1.11")
    }
    /// On the underlay prefix.
    fn node_b() -> NodeSubnet {
        subnet("node-b", "10.244.2.0/24", "192.168.1.12")
    }
    /// Behind a router.
    fn node_c() -> NodeSubnet {
        subnet("node-c", "10.244.3.0/24", "192.168.2.13")
    }
    /// On the underlay prefix.
    fn node_d() -> NodeSubnet {
        subnet("node-d", "10.244.4.0/24", "192.168.1.14")
    }

    /// The state as sorted lines, in `ip`-like words, so tables read like a shell session.
    fn lines(state: &State) -> Vec<String> {
        let mut out = Vec::new();
        for l in state.links.values() {
            let kind = match &l.kind {
                LinkKind::Bridge => "bridge".to_owned(),
                LinkKind::Vxlan {
                    vni,
                    port,
                    local,
                    underlay,
                    mac,
                } => format!(
                    "vxlan id {vni} dstport {port} local {local} dev {underlay} address {mac}"
                ),
            };
            let state = if l.up { "up" } else { "down" };
            out.push(format!("link {} {kind} mtu {} {state}", l.name, l.mtu));
        }
        for (dev, addr) in state.addresses.keys() {
            out.push(format!("addr {addr} dev {dev}"));
        }
        for r in state.routes.values() {
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let onlink = if r.onlink { " onlink" } else { "" };
            out.push(format!("route {}{via} dev {}{onlink}", r.dst, r.dev));
        }
        for n in state.neighbours.values() {
            out.push(format!("neigh {} lladdr {} dev {}", n.ip, n.mac, n.dev));
        }
        for f in state.fdb.values() {
            out.push(format!("fdb {} dev {} dst {}", f.mac, f.dev, f.dst));
        }
        for dev in &state.proxy_ndp {
            out.push(format!("proxy_ndp dev {dev}"));
        }
        for (dev, ip) in &state.proxy_neighbours {
            out.push(format!("neigh proxy {ip} dev {dev}"));
        }
        out.sort();
        out
    }

    fn base(mtu: u32) -> Vec<String> {
        vec![
            format!("link cw-br0 bridge mtu {mtu} up"),
            format!(
                "link cw-vx1 vxlan id 1 dstport 8472 local 192.168.1.11 dev eth0 address {} mtu {mtu} up",
                vtep_mac("node-a")
            ),
            "addr 10.244.1.1/24 dev cw-br0".into(),
            "addr 10.244.1.0/32 dev cw-vx1".into(),
        ]
    }

    fn tunnel(node: &str, cidr: &str, gateway: &str, address: &str) -> Vec<String> {
        let mac = vtep_mac(node);
        vec![
            format!("route {cidr} via {gateway} dev cw-vx1 onlink"),
            format!("neigh {gateway} lladdr {mac} dev cw-vx1"),
            format!("fdb {mac} dev cw-vx1 dst {address}"),
        ]
    }

    fn direct(cidr: &str, address: &str) -> Vec<String> {
        vec![format!("route {cidr} via {address} dev eth0")]
    }

    fn sorted(parts: Vec<Vec<String>>) -> Vec<String> {
        let mut all: Vec<String> = parts.into_iter().flatten().collect();
        all.sort();
        all
    }

    fn run(
        own: &NodeSubnet,
        peers: Vec<NodeSubnet>,
        network: &PodNetworkSpec,
    ) -> Result<Plan, PlanError> {
        let peers: Vec<Arc<NodeSubnet>> = peers.into_iter().map(Arc::new).collect();
        plan(&Input {
            own,
            peers: &peers,
            network,
            underlay: &underlay(),
            learned: &NO_ROUTES,
            returns: &[],
            snat: &[],
            clients: &[],
            protected: &BTreeSet::new(),
            protected6: &BTreeSet::new(),
            pods6: &BTreeSet::new(),
        })
    }

    #[test]
    fn overlay_peers_get_a_route_neighbour_and_fdb_entry_or_a_direct_route_when_on_link() {
        struct Case {
            name: &'static str,
            cross_subnet: bool,
            peers: Vec<NodeSubnet>,
            want: Vec<Vec<String>>,
        }
        let cases = [
            Case {
                name: "no peers: bridge and vxlan device only",
                cross_subnet: false,
                peers: vec![],
                want: vec![base(1450)],
            },
            Case {
                name: "two peers, all tunnelled",
                cross_subnet: false,
                peers: vec![node_b(), node_c()],
                want: vec![
                    base(1450),
                    tunnel("node-b", "10.244.2.0/24", "10.244.2.0", "192.168.1.12"),
                    tunnel("node-c", "10.244.3.0/24", "10.244.3.0", "192.168.2.13"),
                ],
            },
            Case {
                name: "three peers, crossSubnet: on-link peers direct, the routed one tunnelled",
                cross_subnet: true,
                peers: vec![node_d(), node_c(), node_b()],
                want: vec![
                    base(1450),
                    direct("10.244.2.0/24", "192.168.1.12"),
                    tunnel("node-c", "10.244.3.0/24", "10.244.3.0", "192.168.2.13"),
                    direct("10.244.4.0/24", "192.168.1.14"),
                ],
            },
            Case {
                name: "crossSubnet with every peer behind a router: all tunnelled",
                cross_subnet: true,
                peers: vec![node_c()],
                want: vec![
                    base(1450),
                    tunnel("node-c", "10.244.3.0/24", "10.244.3.0", "192.168.2.13"),
                ],
            },
            Case {
                name: "own object in the peer list and deleted peers are ignored",
                cross_subnet: false,
                peers: vec![own(), deleting(node_b()), node_c()],
                want: vec![
                    base(1450),
                    tunnel("node-c", "10.244.3.0/24", "10.244.3.0", "192.168.2.13"),
                ],
            },
            Case {
                name: "a peer without vtepMac gets the MAC derived from its node name",
                cross_subnet: false,
                peers: vec![subnet_with(
                    "node-b",
                    "node-b",
                    "10.244.2.0/24",
                    "192.168.1.12",
                    None,
                )],
                want: vec![
                    base(1450),
                    tunnel("node-b", "10.244.2.0/24", "10.244.2.0", "192.168.1.12"),
                ],
            },
        ];
        for case in cases {
            let got = run(&own(), case.peers, &spec(case.cross_subnet))
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(lines(&got.desired), sorted(case.want), "{}", case.name);
            assert_eq!(got.mtu, 1450, "{}", case.name);
            assert!(got.skipped.is_empty(), "{}: {:?}", case.name, got.skipped);
        }
    }

    #[test]
    fn the_plan_does_not_depend_on_the_order_peers_are_listed_in() {
        // Peers that conflict (an overlapping range, a reused VTEP MAC) as well as plain
        // ones: which of two conflicting peers wins must follow their age, never the order
        // the cache happens to list them in.
        let peers = vec![
            created_at(node_b(), "2025-01-01T00:00:00Z"),
            created_at(node_c(), "2025-01-02T00:00:00Z"),
            created_at(
                subnet("node-y", "10.244.3.128/25", "192.168.2.98"),
                "2025-01-03T00:00:00Z",
            ),
            created_at(
                subnet_with(
                    "node-x",
                    "node-x",
                    "10.244.9.0/24",
                    "192.168.2.97",
                    Some(&vtep_mac("node-c").to_string()),
                ),
                "2025-01-04T00:00:00Z",
            ),
            created_at(node_d(), "2025-01-05T00:00:00Z"),
        ];
        let reference = run(&own(), peers.clone(), &spec(true)).expect("plan");
        assert_eq!(
            reference.skipped.len(),
            2,
            "both younger conflicting peers are skipped: {:?}",
            reference.skipped
        );
        assert!(
            reference
                .skipped
                .iter()
                .all(|s| s.starts_with("NodeSubnet node-y") || s.starts_with("NodeSubnet node-x")),
            "{:?}",
            reference.skipped
        );
        // Every order of the five peers: the same plan, the same skips.
        let mut order: Vec<usize> = (0..peers.len()).collect();
        let mut orders = 0;
        loop {
            let listed: Vec<NodeSubnet> = order.iter().map(|&i| peers[i].clone()).collect();
            let got = run(&own(), listed, &spec(true)).expect("plan");
            assert_eq!(got, reference, "order {order:?}");
            orders += 1;
            // Next permutation (lexicographic), until the last.
            let Some(i) = (0..order.len() - 1)
                .rev()
                .find(|&i| order[i] < order[i + 1])
            else {
                break;
            };
            let j = (i + 1..order.len())
                .rev()
                .find(|&j| order[j] > order[i])
                .expect("a larger element after i");
            order.swap(i, j);
            order[i + 1..].reverse();
        }
        assert_eq!(orders, 120);
    }

    #[test]
    fn outgoing_nat_masquerades_this_subnet_to_outside_the_cidr_and_the_exclusions() {
        let masquerade = |source: &str, exempt: &[&str]| {
            Some(Nat::Masquerade(crate::model::Masquerade {
                source: source.parse().expect("cidr"),
                exempt: exempt.iter().map(|e| e.parse().expect("cidr")).collect(),
            }))
        };
        type Case = (
            &'static str,
            serde_json::Value,
            Result<Option<Nat>, &'static str>,
        );
        let cases: &[Case] = &[
            (
                "default: on, the cluster CIDR exempt",
                serde_json::json!({}),
                Ok(masquerade("10.244.1.0/24", &["10.244.0.0/16"])),
            ),
            (
                "exclusions merged, host bits dropped, IPv6 left out",
                serde_json::json!({"natExcludeCidrs": [
                    "192.168.7.1/16", "10.244.9.0/24", "fd00::/8", "172.16.0.0/12"
                ]}),
                Ok(masquerade(
                    "10.244.1.0/24",
                    &["10.244.0.0/16", "172.16.0.0/12", "192.168.0.0/16"],
                )),
            ),
            (
                "off: no table",
                serde_json::json!({"natOutgoing": false, "natExcludeCidrs": ["bogus"]}),
                Ok(None),
            ),
            (
                "a bad exclusion names the entry",
                serde_json::json!({"natExcludeCidrs": ["10.0.0.0/8", "bogus"]}),
                Err(
                    "PodNetwork spec.natExcludeCidrs[1] \"bogus\" is not a CIDR: write it like 192.168.0.0/16",
                ),
            ),
        ];
        for (name, fields, want) in cases {
            let mut value = serde_json::to_value(spec(false)).expect("serialise");
            for (k, v) in fields.as_object().expect("object") {
                value[k] = v.clone();
            }
            let network: PodNetworkSpec = serde_json::from_value(value).expect("spec");
            let got = plan(&Input {
                own: &own(),
                peers: &[],
                network: &network,
                underlay: &underlay(),
                learned: &NO_ROUTES,
                returns: &[],
                snat: &[],
                clients: &[],
                protected: &BTreeSet::new(),
                protected6: &BTreeSet::new(),
                pods6: &BTreeSet::new(),
            });
            match (want, got) {
                (Ok(nat), Ok(p)) => assert_eq!(&p.desired.nat, nat, "{name}"),
                (Err(w), Err(e)) => assert_eq!(e.to_string(), *w, "{name}"),
                (w, g) => panic!("{name}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn mtu_is_underlay_minus_vxlan_overhead_unless_set_and_never_more() {
        let cases: &[(Option<i32>, u32, Result<u32, &str>)] = &[
            (None, 1500, Ok(1450)),
            (None, 9000, Ok(8950)),
            (Some(1400), 1500, Ok(1400)),
            (Some(1450), 1500, Ok(1450)),
            (
                Some(1451),
                1500,
                Err(
                    "spec.mtu 1451 does not fit through underlay link eth0 (MTU 1500) with 50 bytes of VXLAN headers: set spec.mtu to 1450 or less",
                ),
            ),
            (Some(9000), 1500, Err("set spec.mtu to 1450 or less")),
            (
                Some(100),
                1500,
                Err("spec.mtu 100 is out of range: use 576-9216"),
            ),
            (Some(-1), 1500, Err("spec.mtu -1 is out of range")),
            (
                None,
                600,
                Err("underlay link eth0 has MTU 600: pods would get 550, below the minimum of 576"),
            ),
        ];
        for (explicit, underlay_mtu, want) in cases {
            let mut network = spec(false);
            network.mtu = *explicit;
            let peers = [Arc::new(node_b())];
            let got = plan(&Input {
                own: &own(),
                peers: &peers,
                network: &network,
                underlay: &Underlay {
                    mtu: *underlay_mtu,
                    ..underlay()
                },
                learned: &NO_ROUTES,
                returns: &[],
                snat: &[],
                clients: &[],
                protected: &BTreeSet::new(),
                protected6: &BTreeSet::new(),
                pods6: &BTreeSet::new(),
            });
            match (want, got) {
                (Ok(mtu), Ok(p)) => {
                    assert_eq!(p.mtu, *mtu, "{explicit:?} on {underlay_mtu}");
                    assert!(p.desired.links.values().all(|l| l.mtu == *mtu));
                }
                (Err(w), Err(e)) => {
                    assert!(
                        e.to_string().contains(w),
                        "{explicit:?} on {underlay_mtu}: {e}"
                    );
                }
                (w, g) => panic!("{explicit:?} on {underlay_mtu}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn peers_that_cannot_be_programmed_safely_are_skipped_whole_with_a_reason() {
        let cases: Vec<(&str, NodeSubnet, &str)> = vec![
            (
                "unparsable cidr",
                subnet("node-x", "10.244.9.0/33", "192.168.1.20"),
                "NodeSubnet node-x (node node-x) skipped: spec.cidr: parse CIDR \"10.244.9.0/33\"",
            ),
            (
                "cidr with host bits",
                subnet("node-x", "10.244.9.1/24", "192.168.1.20"),
                "spec.cidr: parse CIDR \"10.244.9.1/24\": host bits are set",
            ),
            (
                "cidr outside the network",
                subnet("node-x", "192.168.0.0/16", "192.168.1.20"),
                "spec.cidr 192.168.0.0/16 lies outside the PodNetwork's cidr 10.244.0.0/16",
            ),
            (
                "unparsable address",
                subnet("node-x", "10.244.9.0/24", "192.168.1"),
                "spec.nodeAddress: parse IPv4 address \"192.168.1\"",
            ),
            (
                "unparsable vtepMac",
                subnet_with(
                    "node-x",
                    "node-x",
                    "10.244.9.0/24",
                    "192.168.1.20",
                    Some("0E:00:00:00:00:01"),
                ),
                "spec.vtepMac: parse MAC address \"0E:00:00:00:00:01\"",
            ),
            (
                "overlaps our subnet",
                subnet("node-x", "10.244.1.128/25", "192.168.1.20"),
                "spec.cidr 10.244.1.128/25 overlaps 10.244.1.0/24, held by this node's subnet (NodeSubnet node-a)",
            ),
            (
                "contains our subnet",
                subnet("node-x", "10.244.0.0/22", "192.168.1.20"),
                "overlaps 10.244.1.0/24, held by this node's subnet",
            ),
            (
                "overlaps an older peer",
                created_at(
                    subnet("node-x", "10.244.2.0/23", "192.168.1.20"),
                    "2025-06-01T00:00:00Z",
                ),
                "spec.cidr 10.244.2.0/23 overlaps 10.244.2.0/24, held by NodeSubnet node-b (node node-b)",
            ),
            (
                "our node name",
                subnet_with("other", "node-a", "10.244.9.0/24", "192.168.1.20", None),
                "NodeSubnet other (node node-a) skipped: it claims this node's name \"node-a\"",
            ),
            (
                "our node address",
                subnet("node-x", "10.244.9.0/24", "192.168.1.11"),
                "spec.nodeAddress 192.168.1.11 is this node's own address",
            ),
            (
                "our VTEP MAC",
                subnet_with(
                    "node-x",
                    "node-x",
                    "10.244.9.0/24",
                    "192.168.2.20",
                    Some(&vtep_mac("node-a").to_string()),
                ),
                "its VTEP MAC 0e:c2:20:78:cb:53 is already used by this node's subnet (NodeSubnet node-a) at 192.168.1.11",
            ),
            (
                "an older peer's VTEP MAC at another address",
                created_at(
                    subnet_with(
                        "node-x",
                        "node-x",
                        "10.244.9.0/24",
                        "192.168.2.20",
                        Some(&vtep_mac("node-b").to_string()),
                    ),
                    "2025-06-01T00:00:00Z",
                ),
                "is already used by NodeSubnet node-b (node node-b) at 192.168.1.12",
            ),
            (
                "another network",
                {
                    let mut s = subnet("node-x", "10.244.9.0/24", "192.168.1.20");
                    s.spec.network = "other".into();
                    s
                },
                "it belongs to PodNetwork \"other\", not \"overlay\"",
            ),
        ];
        let good = created_at(node_b(), "2025-01-01T00:00:00Z");
        let want_good = sorted(vec![
            base(1450),
            tunnel("node-b", "10.244.2.0/24", "10.244.2.0", "192.168.1.12"),
        ]);
        for (name, bad, want) in cases {
            let got = run(&own(), vec![bad, good.clone()], &spec(false))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                lines(&got.desired),
                want_good,
                "{name}: the bad peer left entries"
            );
            assert_eq!(got.skipped.len(), 1, "{name}: {:?}", got.skipped);
            assert!(got.skipped[0].contains(want), "{name}: {}", got.skipped[0]);
        }
    }

    fn dual_spec(cross_subnet: bool) -> PodNetworkSpec {
        let mut spec = spec(cross_subnet);
        spec.secondary_cidr = Some("fd00:10:244::/56".into());
        spec.secondary_node_subnet_prefix_length = Some(64);
        spec
    }

    fn dual(node: &str, cidr: &str, address: &str, v6: Option<&str>) -> NodeSubnet {
        let mut s = subnet(node, cidr, address);
        s.spec.secondary_cidr = v6.map(str::to_owned);
        s
    }

    #[test]
    fn dual_stack_overlay_tunnels_each_peers_ipv6_subnet_and_shares_its_fdb_entry() {
        let own = dual(
            "node-a",
            "10.244.1.0/24",
            "192.168.1.11",
            Some("fd00:10:244:1::/64"),
        );
        let b = dual(
            "node-b",
            "10.244.2.0/24",
            "192.168.1.12",
            Some("fd00:10:244:2::/64"),
        );
        let c = dual(
            "node-c",
            "10.244.3.0/24",
            "192.168.2.13",
            Some("fd00:10:244:3::/64"),
        );
        // Not allocated an IPv6 subnet yet: IPv4 only.
        let d = dual("node-d", "10.244.4.0/24", "192.168.1.14", None);
        let v6 = |node: &str, cidr: &str, gw: &str| {
            vec![
                format!("route {cidr} via {gw} dev cw-vx1 onlink"),
                format!("neigh {gw} lladdr {} dev cw-vx1", vtep_mac(node)),
            ]
        };
        let own_v6 = vec![
            "addr fd00:10:244:1::1/64 dev cw-br0".to_owned(),
            "addr fd00:10:244:1::/128 dev cw-vx1".to_owned(),
        ];
        for cross_subnet in [false, true] {
            let network = dual_spec(cross_subnet);
            let p = run(&own, vec![b.clone(), c.clone(), d.clone()], &network).expect("plan");
            let b_v4 = if cross_subnet {
                // Direct for IPv4, but IPv6 still needs the tunnel, hence its FDB entry.
                let mut v = direct("10.244.2.0/24", "192.168.1.12");
                v.push(format!(
                    "fdb {} dev cw-vx1 dst 192.168.1.12",
                    vtep_mac("node-b")
                ));
                v
            } else {
                tunnel("node-b", "10.244.2.0/24", "10.244.2.0", "192.168.1.12")
            };
            let d_v4 = if cross_subnet {
                direct("10.244.4.0/24", "192.168.1.14")
            } else {
                tunnel("node-d", "10.244.4.0/24", "10.244.4.0", "192.168.1.14")
            };
            assert_eq!(
                lines(&p.desired),
                sorted(vec![
                    base(1450),
                    own_v6.clone(),
                    b_v4,
                    v6("node-b", "fd00:10:244:2::/64", "fd00:10:244:2::"),
                    tunnel("node-c", "10.244.3.0/24", "10.244.3.0", "192.168.2.13"),
                    v6("node-c", "fd00:10:244:3::/64", "fd00:10:244:3::"),
                    d_v4,
                ]),
                "crossSubnet {cross_subnet}"
            );
            assert_eq!(p.mtu, 1450, "IPv6 inside IPv4 VXLAN: the same 50 bytes");
            assert_eq!(
                p.desired.ipv6_on,
                ["cw-br0", "cw-vx1"].map(String::from).into(),
                "IPv6 on the links holding IPv6 addresses, whatever the node's default"
            );
            assert_eq!(
                p.desired.nat6,
                Some(Nat6::Masquerade(crate::model::Masquerade6 {
                    source: "fd00:10:244:1::/64".parse().expect("net"),
                    exempt: vec!["fd00:10:244::/56".parse().expect("net")],
                })),
                "IPv6 pods are masqueraded outside secondaryCidr"
            );
            assert_eq!(
                p.secondary,
                Some("fd00:10:244:1::/64".parse().expect("net"))
            );
            assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        }
    }

    #[test]
    fn a_peer_with_a_bad_ipv6_subnet_is_skipped_whole_both_families() {
        let own = dual(
            "node-a",
            "10.244.1.0/24",
            "192.168.1.11",
            Some("fd00:10:244:1::/64"),
        );
        let cases = [
            (
                "overlapping ours",
                "fd00:10:244:1::/64",
                "overlaps fd00:10:244:1::/64",
            ),
            (
                "outside the range",
                "fd00:99::/64",
                "outside the PodNetwork's secondaryCidr",
            ),
            (
                "IPv4",
                "10.250.0.0/24",
                "outside the PodNetwork's secondaryCidr",
            ),
            ("unparsable", "fd00::zz/64", "spec.secondaryCidr"),
        ];
        for (what, v6, reason) in cases {
            let bad = dual("node-b", "10.244.2.0/24", "192.168.1.12", Some(v6));
            let p = run(&own, vec![bad], &dual_spec(false)).expect("plan");
            assert!(
                p.desired.routes.is_empty(),
                "{what}: {:?}",
                p.desired.routes
            );
            assert!(p.desired.neighbours.is_empty(), "{what}");
            assert!(p.desired.fdb.is_empty(), "{what}");
            assert_eq!(p.skipped.len(), 1, "{what}: {:?}", p.skipped);
            assert!(
                p.skipped[0].contains("node-b") && p.skipped[0].contains(reason),
                "{what}: {}",
                p.skipped[0]
            );
        }
        // Two peers claiming one IPv6 subnet: the older keeps it, the newer goes whole.
        let older = created_at(
            dual(
                "node-b",
                "10.244.2.0/24",
                "192.168.1.12",
                Some("fd00:10:244:2::/64"),
            ),
            "2025-01-01T00:00:00Z",
        );
        let newer = created_at(
            dual(
                "node-c",
                "10.244.3.0/24",
                "192.168.2.13",
                Some("fd00:10:244:2::/64"),
            ),
            "2025-02-01T00:00:00Z",
        );
        let p = run(&own, vec![newer, older], &dual_spec(false)).expect("plan");
        let dsts: Vec<String> = p.desired.routes.keys().map(ToString::to_string).collect();
        assert_eq!(dsts, ["10.244.2.0/24", "fd00:10:244:2::/64"]);
        assert!(p.skipped[0].contains("node-c"), "{:?}", p.skipped);
    }

    #[test]
    fn own_ipv6_subnet_problems_fail_the_plan_and_its_absence_plans_ipv4_only() {
        let network = dual_spec(false);
        let outside = dual(
            "node-a",
            "10.244.1.0/24",
            "192.168.1.11",
            Some("fd00:99::/64"),
        );
        let e = run(&outside, vec![], &network).expect_err("outside");
        assert!(
            e.to_string()
                .contains("secondaryCidr fd00:99::/64 lies outside"),
            "{e}"
        );
        let tiny = dual(
            "node-a",
            "10.244.1.0/24",
            "192.168.1.11",
            Some("fd00:10:244:1::/127"),
        );
        let e = run(&tiny, vec![], &network).expect_err("too small");
        assert!(e.to_string().contains("too small"), "{e}");
        let none = dual("node-a", "10.244.1.0/24", "192.168.1.11", None);
        let p = run(&none, vec![], &network).expect("plan");
        assert_eq!(lines(&p.desired), sorted(vec![base(1450)]));
        assert_eq!(p.secondary, None);
    }

    #[test]
    fn the_older_of_two_overlapping_peers_keeps_its_subnet() {
        let older = created_at(node_c(), "2025-01-01T00:00:00Z");
        let newer = created_at(
            subnet("node-z", "10.244.3.0/24", "192.168.2.99"),
            "2025-02-01T00:00:00Z",
        );
        let got = run(&own(), vec![newer, older], &spec(false)).expect("plan");
        assert_eq!(
            lines(&got.desired),
            sorted(vec![
                base(1450),
                tunnel("node-c", "10.244.3.0/24", "10.244.3.0", "192.168.2.13"),
            ])
        );
        assert_eq!(
            got.skipped,
            [
                "NodeSubnet node-z (node node-z) skipped: spec.cidr 10.244.3.0/24 overlaps 10.244.3.0/24, held by NodeSubnet node-c (node node-c)"
            ]
        );
    }

    #[test]
    fn problems_with_this_nodes_own_objects_fail_the_plan_naming_the_field() {
        let with_spec = |f: fn(&mut NodeSubnetSpec)| {
            let mut s = own();
            f(&mut s.spec);
            s
        };
        let cases: Vec<(&str, NodeSubnet, PodNetworkSpec, Underlay, &str)> = vec![
            (
                "cidr",
                with_spec(|s| s.cidr = "10.244.1.0".into()),
                spec(false),
                underlay(),
                "NodeSubnet node-a: spec.cidr: parse CIDR \"10.244.1.0\"",
            ),
            (
                "node address",
                with_spec(|s| s.node_address = "fd00::1".into()),
                spec(false),
                underlay(),
                "NodeSubnet node-a: spec.nodeAddress: parse IPv4 address \"fd00::1\"",
            ),
            (
                "vtep mac",
                with_spec(|s| s.vtep_mac = Some("nope".into())),
                spec(false),
                underlay(),
                "NodeSubnet node-a: spec.vtepMac: parse MAC address \"nope\"",
            ),
            (
                "subnet outside the network",
                with_spec(|s| s.cidr = "10.245.1.0/24".into()),
                spec(false),
                underlay(),
                "spec.cidr 10.245.1.0/24 lies outside the PodNetwork's cidr 10.244.0.0/16",
            ),
            (
                "subnet too small",
                with_spec(|s| s.cidr = "10.244.1.0/31".into()),
                spec(false),
                underlay(),
                "a node subnet needs a prefix length of at most 30",
            ),
            (
                "network cidr",
                own(),
                PodNetworkSpec {
                    cidr: "10.244.0.0".into(),
                    ..spec(false)
                },
                underlay(),
                "PodNetwork spec.cidr: parse CIDR \"10.244.0.0\"",
            ),
            (
                "vni",
                own(),
                {
                    let mut s = spec(false);
                    s.overlay = Some(causeway_crds::v1alpha1::OverlaySpec {
                        vni: 1 << 24,
                        ..Default::default()
                    });
                    s
                },
                underlay(),
                "spec.overlay.vni 16777216 is out of range",
            ),
            (
                "port",
                own(),
                {
                    let mut s = spec(false);
                    s.overlay = Some(causeway_crds::v1alpha1::OverlaySpec {
                        port: 0,
                        ..Default::default()
                    });
                    s
                },
                underlay(),
                "spec.overlay.port 0 is out of range",
            ),
            (
                "underlay without the node address",
                own(),
                spec(false),
                Underlay {
                    prefix: "10.0.0.0/8".parse().expect("prefix"),
                    prefix6: None,
                    ..underlay()
                },
                "underlay link eth0 (10.0.0.0/8) does not hold this node's address 192.168.1.11",
            ),
        ];
        for (name, own, network, underlay, want) in cases {
            let peers = [Arc::new(node_b())];
            let got = plan(&Input {
                own: &own,
                peers: &peers,
                network: &network,
                underlay: &underlay,
                learned: &NO_ROUTES,
                returns: &[],
                snat: &[],
                clients: &[],
                protected: &BTreeSet::new(),
                protected6: &BTreeSet::new(),
                pods6: &BTreeSet::new(),
            });
            match got {
                Err(e) => assert!(e.to_string().contains(want), "{name}: {e}"),
                Ok(p) => panic!("{name}: planned {:?}", lines(&p.desired)),
            }
        }
    }

    fn mode(mode: &str, routed: serde_json::Value) -> PodNetworkSpec {
        let mut value = serde_json::json!({
            "cidr": "10.244.0.0/16",
            "nodeSubnetPrefixLength": 24,
            "mode": mode,
        });
        if !routed.is_null() {
            value["routed"] = routed;
        }
        serde_json::from_value(value).expect("test PodNetwork spec")
    }

    fn plan_with(
        network: &PodNetworkSpec,
        peers: Vec<NodeSubnet>,
        learned: &crate::bgp::Learned,
    ) -> Plan {
        let peers: Vec<Arc<NodeSubnet>> = peers.into_iter().map(Arc::new).collect();
        plan(&Input {
            own: &own(),
            peers: &peers,
            network,
            underlay: &underlay(),
            learned,
            returns: &[],
            snat: &[],
            clients: &[],
            protected: &BTreeSet::new(),
            protected6: &BTreeSet::new(),
            pods6: &BTreeSet::new(),
        })
        .expect("plan")
    }

    /// Overlay node-a's plan with gateway inputs.
    fn plan_gateways(
        peers: &[Arc<NodeSubnet>],
        returns: &[GatewayReturn],
        clients: &[crate::join::ClientPeer],
    ) -> Plan {
        plan_protecting(peers, returns, clients, &BTreeSet::new())
    }

    /// [`plan_gateways`] with `protected` as the node's own next hops and API server.
    fn plan_protecting(
        peers: &[Arc<NodeSubnet>],
        returns: &[GatewayReturn],
        clients: &[crate::join::ClientPeer],
        protected: &BTreeSet<Ipv4Addr>,
    ) -> Plan {
        plan(&Input {
            own: &own(),
            peers,
            network: &spec(false),
            underlay: &underlay(),
            learned: &NO_ROUTES,
            returns,
            snat: &[],
            clients,
            protected,
            protected6: &BTreeSet::new(),
            pods6: &BTreeSet::new(),
        })
        .expect("plan")
    }

    #[test]
    fn client_join_clients_are_one_tunnel_each_and_never_inside_the_pod_range() {
        let peers: Vec<Arc<NodeSubnet>> = [own(), node_b()].into_iter().map(Arc::new).collect();
        let client = |name: &str, overlay: &str| crate::join::ClientPeer {
            name: name.into(),
            address: "192.168.1.100".parse().expect("ip"),
            overlay: overlay.parse().expect("ip"),
            mac: crate::join::client_mac(name),
        };
        let clients = [
            client("laptop", "10.250.0.100"),
            client("bad", "10.244.9.9"),
        ];
        let p = plan_gateways(&peers, &[], &clients);
        let l = lines(&p.desired);
        let mac = crate::join::client_mac("laptop");
        for want in [
            "route 10.250.0.100/32 via 10.250.0.100 dev cw-vx1 onlink".to_owned(),
            format!("neigh 10.250.0.100 lladdr {mac} dev cw-vx1"),
            format!("fdb {mac} dev cw-vx1 dst 192.168.1.100"),
        ] {
            assert!(l.contains(&want), "{want} missing from {l:#?}");
        }
        assert!(!l.iter().any(|x| x.contains("10.244.9.9")), "{l:#?}");
        assert!(
            p.skipped.iter().any(|s| s.contains("client bad skipped")),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn bridge_host_returns_follow_the_active_hosts_path_and_skip_on_link_clients() {
        let peers: Vec<Arc<NodeSubnet>> = [own(), node_b(), node_c()]
            .into_iter()
            .map(Arc::new)
            .collect();
        let returns = |via: &str| {
            vec![GatewayReturn {
                gateway: "office".into(),
                via: via.into(),
                clients: vec![
                    "192.168.70.0/24".parse().expect("net"),
                    // The node's own segment: reached directly.
                    "192.168.1.0/24".parse().expect("net"),
                ],
            }]
        };
        let routes_for = |via: &str| {
            let r = returns(via);
            let p = plan_gateways(&peers, &r, &[]);
            let client: Ipv4Net = "192.168.70.0/24".parse().expect("net");
            assert!(
                !p.desired
                    .routes
                    .contains_key(&"192.168.1.0/24".parse().expect("net")),
                "no route for the on-link client range"
            );
            (p.desired.routes.get(&client.into()).cloned(), p.skipped)
        };
        // Through node-b's tunnel, exactly like node-b's pod subnet.
        let (via_b, _) = routes_for("node-b");
        let via_b = via_b.expect("a return route via node-b");
        let to_b = plan_with(&spec(false), vec![own(), node_b()], &NO_ROUTES);
        let b_path = &to_b.desired.routes[&"10.244.2.0/24".parse().expect("net")];
        assert_eq!(
            (via_b.gateway, via_b.dev.as_str(), via_b.onlink),
            (b_path.gateway, b_path.dev.as_str(), b_path.onlink)
        );
        // The active host itself has no return route.
        assert_eq!(routes_for("node-a").0, None);
        // An active host without a NodeSubnet is named.
        let (none, skipped) = routes_for("node-z");
        assert_eq!(none, None);
        assert!(
            skipped.iter().any(|s| s.contains("active host node-z")),
            "{skipped:?}"
        );
    }

    /// Node-a's Overlay plan with node-b holding a BridgeHosts VIP for `clients`, and
    /// `protected` as the node's own next hops and API server.
    fn plan_returns(
        peers: &[Arc<NodeSubnet>],
        clients: Vec<Ipv4Net>,
        protected: &BTreeSet<Ipv4Addr>,
    ) -> Plan {
        let returns = [GatewayReturn {
            gateway: "office".into(),
            via: "node-b".into(),
            clients,
        }];
        plan_protecting(peers, &returns, &[], protected)
    }

    #[test]
    fn no_route_covers_a_peer_the_api_server_or_the_nodes_next_hops_and_each_skip_is_named() {
        let peers: Vec<Arc<NodeSubnet>> = [own(), node_b(), node_c()]
            .into_iter()
            .map(Arc::new)
            .collect();
        let net = |s: &str| -> Ipv4Net { s.parse().expect("net") };
        let protected: BTreeSet<Ipv4Addr> = [
            Ipv4Addr::new(192, 168, 80, 1), // the node's default gateway
            Ipv4Addr::new(192, 168, 40, 2), // the API server
        ]
        .into();
        let p = plan_returns(
            &peers,
            vec![
                net("192.168.2.0/24"),  // node-c's segment, reached by a default route
                net("192.168.80.0/24"), // the default gateway's segment
                net("192.168.40.0/30"), // the API server
                net("192.168.70.0/24"), // clients only
            ],
            &protected,
        );
        let routed: Vec<&IpNet> = p.desired.routes.keys().collect();
        assert!(
            routed.contains(&&net("192.168.70.0/24").into()),
            "{routed:?}"
        );
        for gone in ["192.168.2.0/24", "192.168.80.0/24", "192.168.40.0/30"] {
            assert!(
                !routed.contains(&&net(gone).into()),
                "{gone} planned: {routed:?}"
            );
        }
        let notes = p.skipped.join("\n");
        for named in [
            "route 192.168.2.0/24 via cw-vx1 skipped: it covers 192.168.2.13 (node-c's address)",
            "route 192.168.80.0/24 via cw-vx1 skipped: it covers 192.168.80.1",
            "route 192.168.40.0/30 via cw-vx1 skipped: it covers 192.168.40.2",
        ] {
            assert!(notes.contains(named), "{named} missing from:\n{notes}");
        }
    }

    proptest::proptest! {
        /// Whatever the peers, client ranges and protected addresses: no planned route covers
        /// a protected address, and every client range that covers none (and is not on the
        /// node's segment or in the pod range) is routed.
        #[test]
        fn over_generated_inputs_no_planned_route_covers_an_address_the_underlay_needs(
            peer_hosts in proptest::collection::btree_set(1u8..=254, 1..12),
            clients in proptest::collection::vec((0u8..=255, 16u8..=30), 0..12),
            protected in proptest::collection::btree_set((0u8..=255, 1u8..=254), 0..6),
        ) {
            // Peers on 192.168.<h>.<h>, pod subnets 10.244.<i+2>.0/24; node-b holds the VIP.
            let mut peers: Vec<Arc<NodeSubnet>> = vec![Arc::new(own()), Arc::new(node_b())];
            for (i, h) in peer_hosts.iter().enumerate() {
                peers.push(Arc::new(subnet(
                    &format!("peer-{i}"),
                    &format!("10.244.{}.0/24", i + 10),
                    &format!("192.168.{h}.{h}"),
                )));
            }
            let clients: Vec<Ipv4Net> = clients
                .into_iter()
                .filter_map(|(third, len)| Ipv4Net::new(Ipv4Addr::new(192, 168, third, 0), len).ok())
                .map(|n| n.trunc())
                .collect();
            let protected: BTreeSet<Ipv4Addr> = protected
                .into_iter()
                .map(|(third, host)| Ipv4Addr::new(192, 168, third, host))
                .collect();
            let p = plan_returns(&peers, clients.clone(), &protected);
            let mut must_reach: BTreeSet<Ipv4Addr> = protected.clone();
            for peer in &peers {
                must_reach.insert(peer.spec.parsed_node_address().expect("address"));
            }
            for route in p.desired.routes.values() {
                for a in &must_reach {
                    proptest::prop_assert!(
                        !route.dst.contains(&IpAddr::V4(*a)),
                        "route {} covers {a}",
                        route.dst
                    );
                }
            }
            for c in &clients {
                let covers = must_reach.iter().any(|a| c.contains(a));
                let on_segment = c.contains(&underlay().prefix.network())
                    || underlay().prefix.contains(&c.network());
                if !covers && !on_segment {
                    proptest::prop_assert!(
                        p.desired.routes.contains_key(&IpNet::V4(*c)),
                        "client range {c} covers nothing protected but is not routed"
                    );
                }
            }
        }
    }

    #[test]
    fn a_pod_range_overlapping_the_node_network_is_refused_before_anything_is_planned() {
        // node-a's underlay is 192.168.1.0/24; a network of 192.168.0.0/16 would put pod
        // addresses (the bridge's among them) into it.
        let mut own = subnet("node-a", "192.168.9.0/24", "192.168.1.11");
        own.spec.network = "overlay".into();
        let wide: PodNetworkSpec = serde_json::from_value(serde_json::json!({
            "cidr": "192.168.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
        }))
        .expect("spec");
        let err = plan(&Input {
            own: &own,
            peers: &[],
            network: &wide,
            underlay: &underlay(),
            learned: &NO_ROUTES,
            returns: &[],
            snat: &[],
            clients: &[],
            protected: &BTreeSet::new(),
            protected6: &BTreeSet::new(),
            pods6: &BTreeSet::new(),
        })
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "PodNetwork spec.cidr 192.168.0.0/16 overlaps this node's network 192.168.1.0/24 (on eth0): pod addresses would collide with the node network's own (nodes, routers), so nothing is programmed; choose a range no node network uses (e.g. 10.244.0.0/16)"
        );
    }

    #[test]
    fn flat_puts_the_range_on_link_with_proxy_arp_and_no_per_peer_state() {
        let p = plan_with(
            &mode("Flat", serde_json::Value::Null),
            vec![node_b(), node_c(), node_d()],
            &NO_ROUTES,
        );
        assert_eq!(
            lines(&p.desired),
            vec![
                "addr 10.244.1.1/24 dev cw-br0",
                "link cw-br0 bridge mtu 1500 up",
                "route 10.244.0.0/16 dev eth0",
            ]
        );
        assert_eq!(
            p.desired.proxy_arp.iter().collect::<Vec<_>>(),
            ["eth0"],
            "proxy ARP on the underlay only"
        );
        assert_eq!(p.mtu, 1500, "no encapsulation, the underlay's MTU");
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert!(
            p.skipped[0].contains("node-c")
                && p.skipped[0].contains("not on this node's segment 192.168.1.0/24"),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn routed_without_bgp_routes_on_link_peers_via_their_address_and_names_the_rest() {
        let p = plan_with(
            &mode("Routed", serde_json::Value::Null),
            vec![node_b(), node_c(), node_d()],
            &NO_ROUTES,
        );
        assert_eq!(
            lines(&p.desired),
            vec![
                "addr 10.244.1.1/24 dev cw-br0",
                "link cw-br0 bridge mtu 1500 up",
                "route 10.244.2.0/24 via 192.168.1.12 dev eth0",
                "route 10.244.4.0/24 via 192.168.1.14 dev eth0",
            ]
        );
        assert!(p.desired.proxy_arp.is_empty());
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert!(
            p.skipped[0].contains("node-c") && p.skipped[0].contains("add spec.routed.bgp"),
            "{:?}",
            p.skipped
        );
    }

    /// A dual-stack Flat or Routed (static) network: IPv4 as [`mode`], IPv6 fd00:10:244::/56
    /// cut into /64s.
    fn dual_mode(mode_name: &str) -> PodNetworkSpec {
        let mut spec = mode(mode_name, serde_json::Value::Null);
        spec.secondary_cidr = Some("fd00:10:244::/56".into());
        spec.secondary_node_subnet_prefix_length = Some(64);
        spec
    }

    /// A NodeSubnet with both families: node `n`'s IPv6 subnet fd00:10:244:n::/64 and IPv6
    /// node address `node6`.
    fn dual6(node: &str, cidr: &str, address: &str, n: u8, node6: Option<&str>) -> NodeSubnet {
        let mut s = subnet(node, cidr, address);
        s.spec.secondary_cidr = Some(format!("fd00:10:244:{n}::/64"));
        s.spec.secondary_node_address = node6.map(str::to_owned);
        s
    }

    /// node-a (fd00:1::11 on eth0's fd00:1::/64) and its peers: node-b on both segments,
    /// node-c on neither, node-d on the IPv4 one without an IPv6 node address.
    fn dual_nodes() -> (NodeSubnet, Vec<NodeSubnet>) {
        (
            dual6(
                "node-a",
                "10.244.1.0/24",
                "192.168.1.11",
                1,
                Some("fd00:1::11"),
            ),
            vec![
                dual6(
                    "node-b",
                    "10.244.2.0/24",
                    "192.168.1.12",
                    2,
                    Some("fd00:1::12"),
                ),
                dual6(
                    "node-c",
                    "10.244.3.0/24",
                    "192.168.2.13",
                    3,
                    Some("fd00:2::13"),
                ),
                dual6("node-d", "10.244.4.0/24", "192.168.1.14", 4, None),
            ],
        )
    }

    fn underlay6() -> Underlay {
        Underlay {
            prefix6: Some("fd00:1::/64".parse().expect("prefix")),
            ..underlay()
        }
    }

    fn run6(
        own: &NodeSubnet,
        peers: Vec<NodeSubnet>,
        network: &PodNetworkSpec,
        underlay: &Underlay,
        pods6: &[&str],
        protected6: &[&str],
    ) -> Result<Plan, PlanError> {
        let peers: Vec<Arc<NodeSubnet>> = peers.into_iter().map(Arc::new).collect();
        let set = |v: &[&str]| -> BTreeSet<Ipv6Addr> {
            v.iter().map(|a| a.parse().expect("ip")).collect()
        };
        plan(&Input {
            own,
            peers: &peers,
            network,
            underlay,
            learned: &NO_ROUTES,
            returns: &[],
            snat: &[],
            clients: &[],
            protected: &BTreeSet::new(),
            protected6: &set(protected6),
            pods6: &set(pods6),
        })
    }

    #[test]
    fn dual_stack_flat_puts_both_ranges_on_link_and_answers_ndp_for_its_own_pods_only() {
        let (own, peers) = dual_nodes();
        let pods6 = [
            "fd00:10:244:1::2",
            "fd00:10:244:1::3",
            // The bridge's gateway and the subnet's network address are no pods.
            "fd00:10:244:1::1",
            "fd00:10:244:1::",
            // Another node's pod and an address outside the network: never answered for.
            "fd00:10:244:2::5",
            "fd00:99::1",
        ];
        let p = run6(&own, peers, &dual_mode("Flat"), &underlay6(), &pods6, &[]).expect("plan");
        assert_eq!(
            lines(&p.desired),
            vec![
                "addr 10.244.1.1/24 dev cw-br0",
                "addr fd00:10:244:1::1/64 dev cw-br0",
                "link cw-br0 bridge mtu 1500 up",
                "neigh proxy fd00:10:244:1::2 dev eth0",
                "neigh proxy fd00:10:244:1::3 dev eth0",
                "proxy_ndp dev eth0",
                "route 10.244.0.0/16 dev eth0",
                "route fd00:10:244::/56 dev eth0",
            ]
        );
        assert_eq!(p.desired.proxy_arp.iter().collect::<Vec<_>>(), ["eth0"]);
        assert_eq!(p.mtu, 1500);
        assert_eq!(
            p.secondary,
            Some("fd00:10:244:1::/64".parse().expect("net"))
        );
        assert_eq!(
            p.desired.nat6,
            Some(Nat6::Masquerade(crate::model::Masquerade6 {
                source: "fd00:10:244:1::/64".parse().expect("net"),
                exempt: vec!["fd00:10:244::/56".parse().expect("net")],
            })),
            "IPv6 pods are masqueraded outside secondaryCidr, as in Overlay"
        );
        assert_eq!(
            p.skipped,
            [
                "NodeSubnet node-c (node node-c) is unreachable: its node address 192.168.2.13 is not on this node's segment 192.168.1.0/24, and Flat mode needs every node on one segment (use mode Routed with BGP or Overlay).",
                "NodeSubnet node-c (node node-c): its IPv6 pods are unreachable: its IPv6 node address fd00:2::13 is not on this node's IPv6 segment fd00:1::/64, and Flat mode needs every node on one segment (use mode Overlay, or select the nodes of one segment).",
                "NodeSubnet node-d (node node-d): its IPv6 pods are unreachable: it has no IPv6 node address (spec.secondaryNodeAddress; give node node-d an IPv6 InternalIP on fd00:1::/64), and Flat mode needs every node on one segment (use mode Overlay, or select the nodes of one segment).",
            ]
        );
    }

    #[test]
    fn dual_stack_routed_routes_each_on_segment_peers_ipv6_subnet_via_its_ipv6_address() {
        let (own, peers) = dual_nodes();
        let p = run6(
            &own,
            peers,
            &dual_mode("Routed"),
            &underlay6(),
            &["fd00:10:244:1::2"],
            &[],
        )
        .expect("plan");
        assert_eq!(
            lines(&p.desired),
            vec![
                "addr 10.244.1.1/24 dev cw-br0",
                "addr fd00:10:244:1::1/64 dev cw-br0",
                "link cw-br0 bridge mtu 1500 up",
                "route 10.244.2.0/24 via 192.168.1.12 dev eth0",
                "route 10.244.4.0/24 via 192.168.1.14 dev eth0",
                "route fd00:10:244:2::/64 via fd00:1::12 dev eth0",
            ],
            "no proxy NDP in Routed mode"
        );
        assert!(p.desired.nat6.is_some());
        assert_eq!(
            p.skipped,
            [
                "NodeSubnet node-c (node node-c) is unreachable: its node address 192.168.2.13 is not on this node's segment 192.168.1.0/24; add spec.routed.bgp so the routers carry its subnet, or use mode Overlay.",
                "NodeSubnet node-c (node node-c): its IPv6 subnet fd00:10:244:3::/64 is unreachable: its IPv6 node address fd00:2::13 is not on this node's IPv6 segment fd00:1::/64; static Routed mode reaches only peers on this node's segment (use mode Overlay).",
                "NodeSubnet node-d (node node-d): its IPv6 subnet fd00:10:244:4::/64 is unreachable: it has no IPv6 node address (spec.secondaryNodeAddress; give node node-d an IPv6 InternalIP on fd00:1::/64); static Routed mode reaches only peers on this node's segment (use mode Overlay).",
            ]
        );
    }

    #[test]
    fn no_ipv6_route_covers_an_ipv6_node_address_or_next_hop_and_each_skip_is_named() {
        let (own, peers) = dual_nodes();
        // A foreign IPv6 route's next hop inside node-b's IPv6 subnet: that route must go.
        let p = run6(
            &own,
            peers.clone(),
            &dual_mode("Routed"),
            &underlay6(),
            &[],
            &["fd00:10:244:2::99"],
        )
        .expect("plan");
        assert!(
            !p.desired
                .routes
                .contains_key(&"fd00:10:244:2::/64".parse().expect("net")),
            "{:?}",
            p.desired.routes
        );
        assert!(
            p.skipped.contains(
                &"route fd00:10:244:2::/64 via eth0 skipped: it covers fd00:10:244:2::99, which this node must keep reaching over the underlay".to_owned()
            ),
            "{:?}",
            p.skipped
        );
        // A peer's IPv6 node address inside the IPv6 range: Flat's on-link route would
        // capture it, so it is left out and named (the IPv4 side stays).
        let mut odd = peers;
        odd[0].spec.secondary_node_address = Some("fd00:10:244:7::12".into());
        let p = run6(&own, odd, &dual_mode("Flat"), &underlay6(), &[], &[]).expect("plan");
        assert!(
            !p.desired
                .routes
                .contains_key(&"fd00:10:244::/56".parse().expect("net"))
                && p.desired
                    .routes
                    .contains_key(&"10.244.0.0/16".parse().expect("net")),
            "{:?}",
            p.desired.routes
        );
        assert!(
            p.skipped.iter().any(|m| m.starts_with(
                "route fd00:10:244::/56 via eth0 skipped: it covers fd00:10:244:7::12 (node-b's address)"
            )),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn a_dual_stack_flat_or_routed_node_without_ipv6_on_its_underlay_fails_the_plan_naming_what_is_missing()
     {
        let (own, peers) = dual_nodes();
        for mode_name in ["Flat", "Routed"] {
            let network = dual_mode(mode_name);
            let err = run6(&own, peers.clone(), &network, &underlay(), &[], &[])
                .expect_err("no IPv6 on eth0");
            assert_eq!(
                err.to_string(),
                format!(
                    "this node's IPv6 address fd00:1::11 (NodeSubnet spec.secondaryNodeAddress, its IPv6 InternalIP) is not on underlay link eth0, which holds its IPv4 address 192.168.1.11: a dual-stack {mode_name} network reaches IPv6 pods over that link; add fd00:1::11 to eth0 (with its on-link prefix) or correct the node's IPv6 InternalIP; nothing on this node is changed until then"
                )
            );
            let mut bare = own.clone();
            bare.spec.secondary_node_address = None;
            let err = run6(&bare, peers.clone(), &network, &underlay6(), &[], &[])
                .expect_err("no IPv6 InternalIP");
            assert_eq!(
                err.to_string(),
                format!(
                    "NodeSubnet node-a: spec.secondaryNodeAddress is missing, and this dual-stack {mode_name} network needs node node-a's IPv6 address on its underlay (IPv6 pod traffic goes over the underlay unencapsulated): give node node-a an IPv6 address and register it as an InternalIP (the operator copies it into spec.secondaryNodeAddress), or use mode Overlay; nothing on this node is changed until then"
                )
            );
            bare.spec.secondary_node_address = Some("192.168.1.11".into());
            let err = run6(&bare, peers.clone(), &network, &underlay6(), &[], &[])
                .expect_err("IPv4 as the IPv6 address");
            assert!(
                err.to_string().starts_with(
                    "NodeSubnet node-a: spec.secondaryNodeAddress is \"192.168.1.11\", not an IPv6 address"
                ),
                "{err}"
            );
            // The IPv6 range holding the node's IPv6 network.
            let overlapping = Underlay {
                prefix6: Some("fd00:10:244:1::/64".parse().expect("net")),
                ..underlay()
            };
            let mut inside = own.clone();
            inside.spec.secondary_node_address = Some("fd00:10:244:1::11".into());
            let err = run6(&inside, peers.clone(), &network, &overlapping, &[], &[])
                .expect_err("overlap");
            assert!(
                err.to_string().starts_with(
                    "PodNetwork spec.secondaryCidr fd00:10:244::/56 overlaps this node's IPv6 network fd00:10:244:1::/64 (on eth0)"
                ),
                "{err}"
            );
            // No IPv6 subnet allocated yet: IPv4 only, no IPv6 address needed.
            let mut v4_only = own.clone();
            v4_only.spec.secondary_cidr = None;
            v4_only.spec.secondary_node_address = None;
            let p =
                run6(&v4_only, peers.clone(), &network, &underlay(), &[], &[]).expect("IPv4 only");
            assert!(
                p.secondary.is_none()
                    && p.desired.proxy_neighbours.is_empty()
                    && p.desired.routes.keys().all(|d| matches!(d, IpNet::V4(_))),
                "{mode_name}: {:?}",
                p.desired
            );
        }
    }

    #[test]
    fn routed_with_bgp_installs_learned_routes_inside_the_range_only() {
        let network = mode(
            "Routed",
            serde_json::json!({"bgp": {"asn": 64512, "peers": [{"address": "192.168.1.1", "asn": 64512}]}}),
        );
        let learned: BTreeMap<Ipv4Net, Ipv4Addr> = [
            ("10.244.3.0/24", "192.168.1.1"), // node-c, behind the router
            ("10.244.1.0/24", "192.168.1.1"), // our own subnet, reflected back
            ("10.244.2.0/24", "192.168.1.1"), // node-b: the direct route wins
            ("10.99.0.0/16", "192.168.1.1"),  // outside the range
            ("10.244.9.0/24", "192.168.5.5"), // next hop off this segment
        ]
        .into_iter()
        .map(|(p, h)| (p.parse().expect("prefix"), h.parse().expect("ip")))
        .collect();
        let learned = crate::bgp::Learned {
            v4: learned,
            v6: BTreeMap::new(),
        };
        let p = plan_with(&network, vec![node_b(), node_c()], &learned);
        assert_eq!(
            lines(&p.desired),
            vec![
                "addr 10.244.1.1/24 dev cw-br0",
                "link cw-br0 bridge mtu 1500 up",
                "route 10.244.2.0/24 via 192.168.1.12 dev eth0",
                "route 10.244.3.0/24 via 192.168.1.1 dev eth0",
            ]
        );
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert!(
            p.skipped[0].contains("10.244.9.0/24") && p.skipped[0].contains("192.168.5.5"),
            "{:?}",
            p.skipped
        );
    }

    #[test]
    fn dual_stack_routed_with_bgp_installs_learned_ipv6_routes_like_ipv4_ones() {
        let mut network = mode(
            "Routed",
            serde_json::json!({"bgp": {"asn": 64512, "peers": [{"address": "192.168.1.1", "asn": 64512}]}}),
        );
        network.secondary_cidr = Some("fd00:10:244::/56".into());
        network.secondary_node_subnet_prefix_length = Some(64);
        let mut own = own();
        own.spec.secondary_cidr = Some("fd00:10:244:1::/64".into());
        own.spec.secondary_node_address = Some("fd00:1::11".into());
        let v6 = |p: &str, h: &str| (p.parse().expect("prefix"), h.parse().expect("ip"));
        let learned = crate::bgp::Learned {
            v4: [("10.244.3.0/24", "192.168.1.1")]
                .into_iter()
                .map(|(p, h)| (p.parse().expect("prefix"), h.parse().expect("ip")))
                .collect(),
            v6: [
                v6("fd00:10:244:3::/64", "fd00:1::1"), // node-c, behind the router
                v6("fd00:10:244:1::/64", "fd00:1::1"), // our own subnet, reflected back
                v6("fd00:99::/64", "fd00:1::1"),       // outside secondaryCidr
                v6("fd00:10:244:9::/64", "fd00:5::5"), // next hop off this segment
                v6("fd00:10:244:4::/64", "::ffff:192.168.1.1"), // a mapped IPv4 next hop
                v6("fd00:10:244:2::/64", "fd00:1::1"), // node-b: its direct route wins
            ]
            .into(),
        };
        // node-c is on another segment for both families: BGP carries both its subnets, so
        // nothing is named unreachable.
        let peers: Vec<Arc<NodeSubnet>> = vec![
            Arc::new(dual6(
                "node-c",
                "10.244.3.0/24",
                "192.168.2.13",
                3,
                Some("fd00:2::13"),
            )),
            Arc::new(dual6(
                "node-b",
                "10.244.2.0/24",
                "192.168.1.12",
                2,
                Some("fd00:1::12"),
            )),
        ];
        let (underlay, none, none6) = (underlay6(), BTreeSet::new(), BTreeSet::new());
        let run = |own: &NodeSubnet, network: &PodNetworkSpec| {
            plan(&Input {
                own,
                peers: &peers,
                network,
                underlay: &underlay,
                learned: &learned,
                returns: &[],
                snat: &[],
                clients: &[],
                protected: &none,
                protected6: &none6,
                pods6: &none6,
            })
        };
        let p = run(&own, &network).expect("plan");
        let routes: Vec<String> = lines(&p.desired)
            .into_iter()
            .filter(|l| l.starts_with("route"))
            .collect();
        assert_eq!(
            routes,
            [
                "route 10.244.2.0/24 via 192.168.1.12 dev eth0",
                "route 10.244.3.0/24 via 192.168.1.1 dev eth0",
                "route fd00:10:244:2::/64 via fd00:1::12 dev eth0",
                "route fd00:10:244:3::/64 via fd00:1::1 dev eth0",
            ]
        );
        assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
        assert!(
            p.skipped[0].contains("fd00:10:244:4::/64")
                && p.skipped[0].contains("::ffff:192.168.1.1")
                && p.skipped[0].contains("not on this node's IPv6 segment fd00:1::/64"),
            "{:?}",
            p.skipped
        );
        assert!(
            p.skipped[1].contains("fd00:10:244:9::/64") && p.skipped[1].contains("fd00:5::5"),
            "{:?}",
            p.skipped
        );

        // Without an IPv6 address of its own the node has no IPv6 segment: the plan fails,
        // naming the field.
        let mut without = own.clone();
        without.spec.secondary_node_address = None;
        let e = run(&without, &network).expect_err("no IPv6 address");
        assert!(e.to_string().contains("secondaryNodeAddress"), "{e}");
        // An IPv4-only network ignores IPv6 routes.
        let mut ipv4 = network.clone();
        ipv4.secondary_cidr = None;
        ipv4.secondary_node_subnet_prefix_length = None;
        let p = run(&own, &ipv4).expect("plan");
        assert_eq!(p.desired.routes.len(), 2, "{:?}", p.desired.routes);
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
    }

    #[test]
    fn the_mtu_limit_has_no_vxlan_overhead_without_encapsulation() {
        let mut network = mode("Routed", serde_json::Value::Null);
        network.mtu = Some(1501);
        let peers: Vec<Arc<NodeSubnet>> = vec![];
        let err = plan(&Input {
            own: &own(),
            peers: &peers,
            network: &network,
            underlay: &underlay(),
            learned: &NO_ROUTES,
            returns: &[],
            snat: &[],
            clients: &[],
            protected: &BTreeSet::new(),
            protected6: &BTreeSet::new(),
            pods6: &BTreeSet::new(),
        })
        .expect_err("too large");
        assert_eq!(
            err.to_string(),
            "PodNetwork spec.mtu 1501 does not fit through underlay link eth0 (MTU 1500): set spec.mtu to 1500 or less, or remove it to get 1500 automatically"
        );
    }

    #[test]
    fn vni_and_port_come_from_the_overlay_block_and_name_the_device() {
        let mut network = spec(false);
        network.overlay = Some(causeway_crds::v1alpha1::OverlaySpec {
            vni: 16_777_215,
            port: 4789,
            cross_subnet: false,
        });
        let got = run(&own(), vec![node_c()], &network).expect("plan");
        let vx = got.desired.links.get("cw-vx16777215").expect("vxlan link");
        assert!(vx.name.len() <= MAX_LINK_NAME);
        assert!(matches!(
            vx.kind,
            LinkKind::Vxlan {
                vni: 16_777_215,
                port: 4789,
                ..
            }
        ));
        assert_eq!(
            got.desired
                .routes
                .values()
                .map(|r| r.dev.as_str())
                .collect::<Vec<_>>(),
            ["cw-vx16777215"]
        );
    }

    #[test]
    fn a_thousand_peers_plan_to_three_thousand_entries() {
        let peers: Vec<NodeSubnet> = (2..1002u32)
            .map(|i| {
                let node = format!("node-{i}");
                subnet(
                    &node,
                    &format!("10.{}.{}.0/24", 244 + i / 256, i % 256),
                    &format!("192.168.{}.{}", 2 + i / 250, 1 + i % 250),
                )
            })
            .collect();
        let mut network = spec(false);
        network.cidr = "10.0.0.0/8".into();
        let got = run(&own(), peers, &network).expect("plan");
        assert!(
            got.skipped.is_empty(),
            "{:?}",
            &got.skipped[..3.min(got.skipped.len())]
        );
        assert_eq!(got.desired.routes.len(), 1000);
        assert_eq!(got.desired.neighbours.len(), 1000);
        assert_eq!(got.desired.fdb.len(), 1000);
    }
}
