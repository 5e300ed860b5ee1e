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
//! Families: the plan works per family, IPv4 and IPv6 alike (`OwnNode` holds the network's
//! range, this node's subnet and its node address of each family it has). The network's
//! `cidr` gives the primary family, `secondaryCidr` the other (dual-stack); `nodeAddress` is
//! the node's address of the primary family when it has one, `secondaryNodeAddress` the other.
//!
//! Overlay tunnels in `nodeAddress`'s family (over an IPv6 underlay: an IPv6 `local`, FDB
//! entries to IPv6 addresses, 70 bytes of headers instead of 50); every pod family rides it
//! (VXLAN is L2): per peer and family a route `peer-subnet via peer-subnet-network dev cw-vx1
//! onlink` and a permanent neighbour, the FDB entry shared. Under `crossSubnet` a family goes
//! direct when this node and the peer have an address of it on one prefix of the underlay
//! link. Peers whose `nodeAddress` is of the other family cannot share the tunnel: skipped.
//!
//! Flat and Routed carry each family unencapsulated within the underlay's prefix of that
//! family (`segment`: `nodeAddress`'s for the primary family, `secondaryNodeAddress`'s on the
//! same link for the other; without it the plan fails, naming what is missing). Flat puts the
//! family's whole range on-link, with proxy ARP (IPv4) or proxy NDP and one proxy entry per
//! local pod IPv6 address ([`Input::pods6`], only inside this node's IPv6 subnet); Routed adds,
//! per peer on that prefix, `peer-subnet via peer-address dev <underlay>`. Peers on another
//! prefix are named in [`Plan::skipped`], unless the network uses BGP: then the routes learned
//! over BGP ([`Input::learned`]) inside the family's range, with a next hop on that prefix,
//! become `prefix via next-hop dev <underlay>`.
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
//!
//! [`replan`] applies changed peers to the last plan without planning every peer again, with
//! the same per-peer code ([`PeerPaths`]), or declines when the result could differ.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use causeway_crds::cidr;
use causeway_crds::family::Families;
use causeway_crds::mtu::{MAX_MTU, MIN_MTU, VXLAN_OVERHEAD, VXLAN6_OVERHEAD};
use causeway_crds::v1alpha1::PodNetworkMode;
use causeway_crds::{NodeSubnet, NodeSubnetSpec, PodNetworkSpec};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub mod replan;
pub use replan::replan;

use crate::model::{
    Address, DEVICE_PREFIX, Fdb, Link, LinkKind, MAX_LINK_NAME, Mac, Nat, Nat6, Neighbour, Route,
    Snat, Snat6, State,
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
    /// whose traffic into the pod range it masquerades, of both families (IPv4 ones into the
    /// network's `cidr`, IPv6 ones into its `secondaryCidr`).
    pub snat: &'a [IpNet],
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
    /// The client ranges, of both families.
    pub clients: Vec<IpNet>,
}

/// What this node's dataplane should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The kernel objects the agent should own, for [`crate::diff::diff`].
    pub desired: State,
    /// The pod MTU: bridge, VXLAN device and the CNI config use it; status reports it.
    pub mtu: u32,
    /// This node's pod subnets, the network's primary family first (`spec.cidr`'s slice, then
    /// `spec.secondaryCidr`'s once the operator has allocated it): the CNI config hands out
    /// an address of each, in this order.
    pub subnets: Vec<IpNet>,
    /// One sentence per peer left out, naming the NodeSubnet and the reason.
    pub skipped: Vec<String>,
    /// The peers' subnets and VTEP MACs admitted (Overlay and Routed), for [`replan`].
    pub taken: Option<Peers>,
}

impl Plan {
    /// Whether the plan carries IPv6 pods (IPv6 forwarding is needed).
    #[must_use]
    pub fn has_ipv6(&self) -> bool {
        self.subnets.iter().any(|s| matches!(s, IpNet::V6(_)))
    }
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
        cidr: String,
        network: IpNet,
    },

    /// The pod range overlaps the network this node's underlay address is on.
    #[error(
        "PodNetwork spec.{field} {network} overlaps this node's {kind}network {underlay} (on {dev}): pod addresses would collide with the node network's own (nodes, routers), so nothing is programmed; choose a range no node network uses (e.g. {example})"
    )]
    OverlapsUnderlay {
        /// `cidr` or `secondaryCidr`.
        field: &'static str,
        /// `` (IPv4) or `IPv6 `.
        kind: &'static str,
        network: IpNet,
        underlay: IpNet,
        dev: String,
        /// A range of the same family to suggest.
        example: &'static str,
    },

    /// `spec.secondaryCidr` or `spec.secondaryNodeSubnetPrefixLength` of the PodNetwork is
    /// invalid (admission normally prevents this).
    #[error("PodNetwork spec.secondaryCidr: {source}")]
    SecondaryCidr { source: causeway_crds::Error },

    /// This node's second subnet is not part of the network's second range.
    #[error(
        "NodeSubnet {name}: spec.secondaryCidr {cidr} lies outside the PodNetwork's secondaryCidr {network}: the operator did not allocate it from this network; delete the NodeSubnet so the operator allocates a new one"
    )]
    SecondaryOutsideNetwork {
        name: String,
        cidr: String,
        network: IpNet,
    },

    /// This node's subnet (`spec.cidr` or `spec.secondaryCidr`) has no room for a gateway
    /// and pods.
    #[error(
        "NodeSubnet {name}: spec.{field} {cidr} is too small: a node subnet needs a prefix length of at most {max} (a gateway address and pod addresses)"
    )]
    SubnetTooSmall {
        name: String,
        field: &'static str,
        cidr: IpNet,
        /// 30 (IPv4) or 126 (IPv6).
        max: u8,
    },

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

    /// A dual-stack Flat or Routed network needs this node's address of the second family,
    /// which its NodeSubnet does not carry (or not of that family).
    #[error(
        "NodeSubnet {name}: spec.secondaryNodeAddress is {value}, and this dual-stack {mode:?} network needs node {node}'s {family} address on its underlay ({family} pod traffic goes over the underlay unencapsulated): give node {node} an {family} address and register it as an InternalIP (the operator copies it into spec.secondaryNodeAddress), or use mode Overlay; nothing on this node is changed until then"
    )]
    NoSecondaryNodeAddress {
        name: String,
        node: String,
        mode: PodNetworkMode,
        /// `IPv6` or `IPv4`.
        family: &'static str,
        /// `missing`, or the value in quotes.
        value: String,
    },

    /// A single-stack Flat or Routed network of one family on a node whose only address
    /// (`nodeAddress`) is of the other: its pods' packets cannot cross the underlay
    /// unencapsulated.
    #[error(
        "NodeSubnet {name}: this {family} {mode:?} network carries {family} pod traffic over the underlay unencapsulated, and node {node} has no {family} address (spec.nodeAddress {address} is {other}): give node {node} an {family} InternalIP (the operator copies it into the NodeSubnet), or use mode Overlay, which tunnels {family} pods over {other}; nothing on this node is changed until then"
    )]
    NoNodeAddressOfFamily {
        name: String,
        node: String,
        mode: PodNetworkMode,
        family: &'static str,
        other: &'static str,
        address: IpAddr,
    },

    /// The node's second address is not on the underlay link (the one holding its
    /// `nodeAddress`).
    #[error(
        "this node's {family} address {address} (NodeSubnet spec.secondaryNodeAddress, its {family} InternalIP) is not on underlay link {underlay}, which holds its {other} address {primary}: a dual-stack {mode:?} network reaches {family} pods over that link; add {address} to {underlay} (with its on-link prefix) or correct the node's {family} InternalIP; nothing on this node is changed until then"
    )]
    SecondaryNotOnUnderlay {
        family: &'static str,
        other: &'static str,
        address: IpAddr,
        primary: IpAddr,
        underlay: String,
        mode: PodNetworkMode,
    },

    /// The underlay link the caller found does not hold the node's address.
    #[error(
        "underlay link {underlay} ({prefix}) does not hold this node's address {address} (NodeSubnet spec.nodeAddress): VXLAN packets would leave from the wrong link; check the node's InternalIP"
    )]
    UnderlayMismatch {
        underlay: String,
        prefix: IpNet,
        address: IpAddr,
    },
}

/// `IPv4` or `IPv6`, for messages.
fn family_name(ipv6: bool) -> &'static str {
    if ipv6 { "IPv6" } else { "IPv4" }
}

/// Computes the desired dataplane of this node (see the module docs).
///
/// # Errors
/// A [`PlanError`] when this node's own NodeSubnet, the PodNetwork spec or the underlay make a
/// correct plan impossible. Problems with peers never fail the plan: see [`Plan::skipped`].
pub fn plan(input: &Input<'_>) -> Result<Plan, PlanError> {
    let network = input.network;
    let own = OwnNode::parse(input)?;
    let dev = &input.underlay.name;
    if let (Some(net), Some(prefix)) = (own.f.v4.range, input.underlay.prefix4())
        && (net.contains(&prefix.network()) || prefix.contains(&net.network()))
    {
        return Err(PlanError::OverlapsUnderlay {
            field: own.f.field_of(false),
            kind: "",
            network: net.into(),
            underlay: prefix.into(),
            dev: dev.clone(),
            example: "10.244.0.0/16",
        });
    }
    if let (Some(net), Some(prefix)) = (own.f.v6.range, input.underlay.prefix6())
        && (net.contains(&prefix.network()) || prefix.contains(&net.network()))
    {
        return Err(PlanError::OverlapsUnderlay {
            field: own.f.field_of(true),
            kind: "IPv6 ",
            network: net.into(),
            underlay: prefix.into(),
            dev: dev.clone(),
            example: "fd00:10:244::/56",
        });
    }
    let mtu = effective_mtu(network, input.underlay)?;
    let mut desired = State::default();
    add_link(&mut desired, BRIDGE_LINK, LinkKind::Bridge, mtu);
    if let Some(cidr4) = own.f.v4.subnet {
        // Prefix lengths ≤ 30 are checked in `OwnNode::parse`, so this cannot fail.
        let gateway =
            Ipv4Net::new(cidr::gateway_address(cidr4), cidr4.prefix_len()).unwrap_or(cidr4);
        add_address(&mut desired, BRIDGE_LINK, gateway.into());
    }
    if let Some(cidr6) = own.f.v6.subnet {
        add_address(&mut desired, BRIDGE_LINK, gateway6(cidr6).into());
    }
    let mut taken = None;
    let mut skipped = match network.mode {
        PodNetworkMode::Overlay => overlay(input, &own, mtu, &mut desired, &mut taken)?,
        PodNetworkMode::Flat => flat(input, &own, &mut desired)?,
        PodNetworkMode::Routed => routed(input, &own, &mut desired, &mut taken)?,
    };
    skipped.extend(gateway_returns(input, &own, &mut desired));
    skipped.extend(protect_underlay(input, &own, &mut desired));
    let (snat4, snat6) = split_families(input.snat);
    if let Some(network4) = own.f.v4.range
        && !snat4.is_empty()
    {
        desired.snat = Some(Snat::Masquerade(crate::nat::gateway_snat(&snat4, network4)));
    }
    if let Some(network6) = own.f.v6.range
        && !snat6.is_empty()
    {
        desired.snat6 = Some(Snat6::Masquerade(crate::nat::gateway_snat6(
            &snat6, network6,
        )));
    }
    if network.nat_outgoing {
        let mut exclude = nat_exclusions(network)?;
        if let (Some(cidr4), Some(network4)) = (own.f.v4.subnet, own.f.v4.range) {
            // ClientJoin clients are members of the overlay: pods talk to them unmasqueraded.
            exclude.extend(client_overlays(input).filter_map(|a| match a {
                IpAddr::V4(a) => Some(Ipv4Net::from(a)),
                IpAddr::V6(_) => None,
            }));
            desired.nat = Some(Nat::Masquerade(crate::nat::masquerade(
                cidr4, network4, &exclude,
            )));
        }
        if let (Some(cidr6), Some(network6)) = (own.f.v6.subnet, own.f.v6.range) {
            let mut exclude6 = nat_exclusions6(network);
            exclude6.extend(client_overlays(input).filter_map(|a| match a {
                IpAddr::V6(a) => Some(Ipv6Net::from(a)),
                IpAddr::V4(_) => None,
            }));
            desired.nat6 = Some(Nat6::Masquerade(crate::nat::masquerade6(
                cidr6, network6, &exclude6,
            )));
        }
    }
    Ok(Plan {
        desired,
        mtu,
        subnets: own.f.subnets(),
        skipped,
        taken,
    })
}

/// `nets` split by family.
fn split_families(nets: &[IpNet]) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in nets {
        match net {
            IpNet::V4(n) => v4.push(*n),
            IpNet::V6(n) => v6.push(*n),
        }
    }
    (v4, v6)
}

/// Overlay: the VXLAN device, and per peer a tunnel (or, with `crossSubnet`, a direct route).
fn overlay(
    input: &Input<'_>,
    own: &OwnNode<'_>,
    mtu: u32,
    desired: &mut State,
    taken: &mut Option<Peers>,
) -> Result<Vec<String>, PlanError> {
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
    // Each subnet's network address on the device (a /32, a /128), so that packets the node
    // itself sends into the tunnel have a source address peers route back.
    if let Some(cidr4) = own.f.v4.subnet {
        add_address(desired, &vxlan, Ipv4Net::from(cidr4.network()).into());
    }
    if let Some(cidr6) = own.f.v6.subnet {
        add_address(desired, &vxlan, Ipv6Net::from(cidr6.network()).into());
    }
    // Client traffic of a RouteToNodes gateway enters at a gateway node and reaches the pod's
    // node through the tunnel with the client's source, whose route back is the underlay:
    // strict reverse-path filtering (the RHEL and CIS default) would drop it here.
    desired.loose_rp_filter.insert(vxlan.clone());

    let ctx = PeerPaths::Overlay {
        vxlan: vxlan.clone(),
        direct: Direct::new(input, own),
    };
    let (peers, mut skipped) = ctx.add_all(desired, input, own);
    *taken = Some(peers);
    // ClientJoin clients: a /32 (a /128) per overlay address, through the tunnel to the
    // client's own VTEP, whose address must be of the family of this node's tunnel.
    for client in input.clients {
        if client.address.is_ipv6() != own.address.is_ipv6() {
            skipped.push(format!(
                "ClientJoin client {} skipped: its address {} is not of the family of this node's tunnel ({})",
                client.name, client.address, own.address
            ));
            continue;
        }
        for overlay in &client.overlays {
            let dst = IpNet::from(*overlay);
            let inside = match overlay {
                IpAddr::V4(a) => own.f.v4.range.is_some_and(|r| r.contains(a)),
                IpAddr::V6(a) => own.f.v6.range.is_some_and(|r| r.contains(a)),
            };
            if inside || desired.routes.contains_key(&dst) {
                skipped.push(format!(
                    "ClientJoin client {} skipped: overlay address {overlay} is inside the pod range or already routed",
                    client.name
                ));
                continue;
            }
            tunnel(desired, &vxlan, dst, *overlay, client.mac, client.address);
        }
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
    endpoint: IpAddr,
) {
    desired.routes.insert(
        dst,
        Route {
            dst,
            gateway: Some(gateway),
            dev: vxlan.into(),
            onlink: true,
        },
    );
    desired.neighbours.insert(
        (vxlan.into(), gateway),
        Neighbour {
            dev: vxlan.into(),
            ip: gateway,
            mac,
        },
    );
    desired.fdb.insert(
        (vxlan.into(), mac),
        Fdb {
            dev: vxlan.into(),
            mac,
            dst: endpoint,
        },
    );
}

/// BridgeHosts return routes: each client range via the gateway's active host, on the path
/// this node already uses for the host's pod subnet of the client range's family (its
/// tunnel, or its underlay address of that family when on-link). Nothing on the active host
/// itself, and nothing for client ranges on this node's own segment of that family: it
/// reaches those clients directly, and the kernel's connected route is there. One route per
/// client range: O(1) per node, replaced on failover. Each family's client ranges on a network
/// with a range of that family.
fn gateway_returns(input: &Input<'_>, own: &OwnNode<'_>, desired: &mut State) -> Vec<String> {
    let mut skipped = Vec::new();
    let segments = [
        input.underlay.prefix4().map(IpNet::V4),
        input.underlay.prefix6().map(IpNet::V6),
    ];
    let ranges = [own.f.v4.range.map(IpNet::V4), own.f.v6.range.map(IpNet::V6)];
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
        let Ok(parsed) = host.spec.parse_addresses() else {
            continue;
        };
        for (i, ipv6) in [false, true].into_iter().enumerate() {
            let clients: Vec<IpNet> = ret
                .clients
                .iter()
                .map(IpNet::trunc)
                .filter(|c| c.addr().is_ipv6() == ipv6)
                .collect();
            let (Some(range), false) = (ranges[i], clients.is_empty()) else {
                continue;
            };
            let of_family = |n: &IpNet| n.addr().is_ipv6() == ipv6;
            let subnet = [Some(parsed.cidr), parsed.secondary_cidr]
                .into_iter()
                .flatten()
                .find(of_family);
            let address = [Some(parsed.node_address), parsed.secondary_node_address]
                .into_iter()
                .flatten()
                .find(|a| a.is_ipv6() == ipv6);
            let segment = segments[i];
            let path = match (subnet.and_then(|n| desired.routes.get(&n)), address) {
                (Some(r), _) => Some((r.gateway, r.dev.clone(), r.onlink)),
                (None, Some(a)) if segment.is_some_and(|s| s.contains(&a)) => {
                    Some((Some(a), input.underlay.name.as_str().into(), false))
                }
                _ => None,
            };
            let Some((gateway, dev, onlink)) = path else {
                let at = address.map(|a| format!(" ({a})")).unwrap_or_default();
                skipped.push(format!(
                    "OverlayGateway {}: no path to active host {}{at}; no return route",
                    ret.gateway, ret.via
                ));
                continue;
            };
            for client in clients {
                let on_segment = segment.is_some_and(|s| cidr::overlaps_any(client, s));
                if on_segment || cidr::overlaps_any(client, range) {
                    continue;
                }
                desired.routes.insert(
                    client,
                    Route {
                        dst: client,
                        gateway,
                        dev: dev.clone(),
                        onlink,
                    },
                );
            }
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
    let mut protected6: BTreeMap<Ipv6Addr, String> = input
        .protected6
        .iter()
        .map(|a| (*a, a.to_string()))
        .collect();
    let mut protect = |a: IpAddr, what: String| match a {
        IpAddr::V4(a) => {
            protected.insert(a, what);
        }
        IpAddr::V6(a) => {
            protected6.insert(a, what);
        }
    };
    for a in [
        Some(own.address),
        own.f.v4.address.map(IpAddr::V4),
        own.f.v6.address.map(IpAddr::V6),
    ]
    .into_iter()
    .flatten()
    {
        protect(a, format!("{a} (this node)"));
    }
    for peer in input.peers {
        for a in [
            cidr::parse_addr(&peer.spec.node_address).ok(),
            node_address2(&peer.spec),
        ]
        .into_iter()
        .flatten()
        {
            protect(a, format!("{a} ({}'s address)", peer.spec.node_name));
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
            dev: input.underlay.name.as_str().into(),
            onlink: false,
        },
    );
}

fn device_route(desired: &mut State, dst: IpNet, dev: &str) {
    desired.routes.insert(
        dst,
        Route {
            dst,
            gateway: None,
            dev: dev.into(),
            onlink: false,
        },
    );
}

/// Flat: the whole range on-link on the underlay, and proxy ARP there, so this node answers
/// ARP for its own pods (its subnet is routed to the bridge, another link) and never for other
/// nodes' (routed back out of the underlay itself, which proxy ARP does not answer for). No
/// per-peer state: peers are only checked for being on this segment.
///
/// IPv6: the whole IPv6 range on-link on the underlay too, proxy NDP on, and one proxy entry
/// per local pod's IPv6 address (Linux proxy NDP answers only for listed addresses, never
/// for a range): this node answers neighbour solicitations for its own pods and no others.
fn flat(
    input: &Input<'_>,
    own: &OwnNode<'_>,
    desired: &mut State,
) -> Result<Vec<String>, PlanError> {
    let underlay = &input.underlay.name;
    let peers = ordered_peers(input);
    let mut skipped = Vec::new();
    if let (Some(segment4), Some(network4)) = (segment(input, own, false)?, own.f.v4.range) {
        device_route(desired, network4.into(), underlay);
        desired.proxy_arp.insert(underlay.clone());
        skipped.extend(peers.iter().filter_map(|peer| {
            off_segment(peer, segment4, own).map(|why| {
                format!(
                    "{} is unreachable: {why}, and Flat mode needs every node on one segment (use mode Routed with BGP or Overlay).",
                    describe(peer),
                )
            })
        }));
    }
    let (Some(segment6), Some(network6), Some(cidr6)) =
        (segment(input, own, true)?, own.f.v6.range, own.f.v6.subnet)
    else {
        return Ok(skipped);
    };
    device_route(desired, network6.into(), underlay);
    desired.proxy_ndp.insert(underlay.clone());
    let gateway = gateway6(cidr6).addr();
    for ip in input.pods6 {
        // Only pods' addresses: inside this node's IPv6 subnet, not its network address (the
        // subnet-router anycast address) nor the bridge's gateway.
        if cidr6.contains(ip) && *ip != cidr6.network() && *ip != gateway {
            desired.proxy_neighbours.insert((underlay.clone(), *ip));
        }
    }
    for peer in peers {
        if !has_subnet(peer, true, own) {
            continue;
        }
        if let Some(why) = off_segment(peer, segment6, own) {
            skipped.push(format!(
                "{}: its IPv6 pods are unreachable: {why}, and Flat mode needs every node on one segment (use mode Overlay, or select the nodes of one segment).",
                describe(peer)
            ));
        }
    }
    Ok(skipped)
}

/// Whether `peer` has a subnet of the family `ipv6` (its `cidr` of the network's primary
/// family, its `secondaryCidr` of the other), by the fields' presence only.
fn has_subnet(peer: &NodeSubnet, ipv6: bool, own: &OwnNode<'_>) -> bool {
    if own.f.primary_v6 == ipv6 {
        true
    } else {
        peer.spec.secondary_cidr.is_some()
    }
}

/// The on-link prefix over which this node reaches its peers' pods of family `ipv6`
/// unencapsulated (Flat, Routed, Overlay's `crossSubnet`): the underlay's prefix of its
/// `nodeAddress` for the network's primary family, that of its `secondaryNodeAddress` for
/// the other. `None` when the node has no subnet of that family (single-stack, or not
/// allocated yet: the node runs the other family only); an error naming what is missing when
/// the node has no usable address of that family on the underlay link.
fn segment(input: &Input<'_>, own: &OwnNode<'_>, ipv6: bool) -> Result<Option<IpNet>, PlanError> {
    let has = if ipv6 {
        own.f.v6.subnet.is_some()
    } else {
        own.f.v4.subnet.is_some()
    };
    if !has {
        return Ok(None);
    }
    if own.address.is_ipv6() == ipv6 {
        return Ok(Some(input.underlay.prefix));
    }
    let mode = input.network.mode;
    let family = family_name(ipv6);
    if own.f.primary_v6 == ipv6 {
        // The network's own family, which the node's only address is not of (a single-stack
        // network on a node of the other family).
        return Err(PlanError::NoNodeAddressOfFamily {
            name: own.name.to_owned(),
            node: own.spec.node_name.clone(),
            mode,
            family,
            other: family_name(!ipv6),
            address: own.address,
        });
    }
    let missing = |value: String| PlanError::NoSecondaryNodeAddress {
        name: own.name.to_owned(),
        node: own.spec.node_name.clone(),
        mode,
        family,
        value,
    };
    let address = match own.spec.secondary_node_address.as_deref() {
        None => return Err(missing("missing".into())),
        Some(text) => match cidr::parse_addr(text) {
            Ok(a) if a.is_ipv6() == ipv6 => a,
            _ => return Err(missing(format!("{text:?}, not an {family} address"))),
        },
    };
    match input.underlay.secondary_prefix {
        Some(prefix) if prefix.contains(&address) => Ok(Some(prefix)),
        _ => Err(PlanError::SecondaryNotOnUnderlay {
            family,
            other: family_name(!ipv6),
            address,
            primary: own.address,
            underlay: input.underlay.name.clone(),
            mode,
        }),
    }
}

/// `spec.secondaryNodeAddress` parsed, `None` when missing or unparsable.
fn node_address2(spec: &NodeSubnetSpec) -> Option<IpAddr> {
    spec.secondary_node_address
        .as_deref()
        .and_then(|t| cidr::parse_addr(t).ok())
}

/// The peer's node address of `segment`'s family: `spec.nodeAddress` or
/// `spec.secondaryNodeAddress`, whichever is of that family.
fn peer_address_of(peer: &NodeSubnetSpec, ipv6: bool) -> Option<IpAddr> {
    [
        cidr::parse_addr(&peer.node_address).ok(),
        node_address2(peer),
    ]
    .into_iter()
    .flatten()
    .find(|a| a.is_ipv6() == ipv6)
}

/// Why `peer`'s node address of `segment`'s family is not on `segment` (this node's on-link
/// prefix of that family), as the end of a sentence; `None` when it is.
fn off_segment(peer: &NodeSubnet, segment: IpNet, own: &OwnNode<'_>) -> Option<String> {
    let ipv6 = matches!(segment, IpNet::V6(_));
    let field = if own.f.primary_v6 == ipv6 {
        "spec.nodeAddress"
    } else {
        "spec.secondaryNodeAddress"
    };
    let v = if ipv6 { "IPv6 " } else { "" };
    match peer_address_of(&peer.spec, ipv6) {
        Some(a) if segment.contains(&a) => None,
        Some(a) => Some(format!(
            "its {v}node address {a} is not on this node's {v}segment {segment}"
        )),
        None => Some(format!(
            "it has no {} node address ({field}; give node {} an {} InternalIP on {segment})",
            family_name(ipv6),
            peer.spec.node_name,
            family_name(ipv6),
        )),
    }
}

/// Routed: a direct route to every peer on this segment, per family; routes the routers
/// advertise over BGP for the rest.
fn routed(
    input: &Input<'_>,
    own: &OwnNode<'_>,
    desired: &mut State,
    taken: &mut Option<Peers>,
) -> Result<Vec<String>, PlanError> {
    let segments = [segment(input, own, false)?, segment(input, own, true)?];
    let ctx = PeerPaths::Routed {
        segments,
        bgp: uses_bgp(input.network),
    };
    let (peers, mut skipped) = ctx.add_all(desired, input, own);
    *taken = Some(peers);
    let v4 = (
        own.f.v4.range.map(IpNet::V4),
        own.f.v4.subnet.map(IpNet::V4),
        segments[0],
    );
    let routes4 = input
        .learned
        .v4
        .iter()
        .map(|(p, h)| (IpNet::V4(*p), IpAddr::V4(*h)));
    skipped.extend(learned(input, v4, routes4, desired));
    let v6 = (
        own.f.v6.range.map(IpNet::V6),
        own.f.v6.subnet.map(IpNet::V6),
        segments[1],
    );
    let routes6 = input
        .learned
        .v6
        .iter()
        .map(|(p, h)| (IpNet::V6(*p), IpAddr::V6(*h)));
    skipped.extend(learned(input, v6, routes6, desired));
    Ok(skipped)
}

/// Routed: the direct routes to one admitted peer's subnets on this node's segments (per
/// family), and a note for each subnet that cannot be reached (without BGP, off the segment).
fn routed_peer(
    desired: &mut State,
    input: &Input<'_>,
    own: &OwnNode<'_>,
    peer: &NodeSubnet,
    admitted: &Admitted,
    segments: [Option<IpNet>; 2],
    bgp: bool,
) -> Vec<String> {
    let mut skipped = Vec::new();
    let subnets = [admitted.cidr4.map(IpNet::V4), admitted.cidr6.map(IpNet::V6)];
    for (subnet, segment) in subnets.into_iter().zip(segments) {
        let (Some(subnet), Some(segment)) = (subnet, segment) else {
            continue;
        };
        let ipv6 = matches!(subnet, IpNet::V6(_));
        let own_address = if ipv6 {
            own.f.v6.address.map(IpAddr::V6)
        } else {
            own.f.v4.address.map(IpAddr::V4)
        };
        match peer_address_of(&peer.spec, ipv6) {
            Some(a) if segment.contains(&a) && Some(a) != own_address => {
                direct_route(desired, input, subnet, a);
            }
            Some(a) if Some(a) == own_address => skipped.push(format!(
                "{}: its subnet {subnet} skipped: its node address {a} is this node's own",
                describe(peer),
            )),
            // Off this segment: the routers carry it over BGP.
            _ if bgp => {}
            _ => {
                let why = off_segment(peer, segment, own).unwrap_or_default();
                skipped.push(if own.f.primary_v6 == ipv6 {
                    format!(
                        "{} is unreachable: {why}; add spec.routed.bgp so the routers carry its subnet, or use mode Overlay.",
                        describe(peer)
                    )
                } else {
                    format!(
                        "{}: its {} subnet {subnet} is unreachable: {why}; static Routed mode reaches only peers on this node's segment (use mode Overlay).",
                        describe(peer),
                        family_name(ipv6)
                    )
                });
            }
        }
    }
    skipped
}

/// Routed with BGP: the routes of one family the routers advertise (`learned`), kept when
/// inside the network's range of that family, not this node's subnet (or part of it), not a
/// destination that already has a route (an on-segment peer's), with a next hop on `segment`,
/// this node's on-link prefix of the family. An aggregate covering our subnet is fine: the
/// bridge's more specific route wins.
fn learned(
    input: &Input<'_>,
    (network, subnet, segment): (Option<IpNet>, Option<IpNet>, Option<IpNet>),
    learned: impl Iterator<Item = (IpNet, IpAddr)>,
    desired: &mut State,
) -> Vec<String> {
    let mut skipped = Vec::new();
    let (Some(network), Some(subnet), Some(segment)) = (network, subnet, segment) else {
        return skipped;
    };
    let v = if matches!(segment, IpNet::V6(_)) {
        "IPv6 "
    } else {
        ""
    };
    for (prefix, next_hop) in learned {
        let wanted = network.contains(&prefix)
            && !subnet.contains(&prefix)
            && !desired.routes.contains_key(&prefix);
        if !wanted {
            continue;
        }
        if !segment.contains(&next_hop) {
            skipped.push(format!(
                "BGP route {prefix} skipped: its next hop {next_hop} is not on this node's {v}segment {segment}."
            ));
            continue;
        }
        direct_route(desired, input, prefix, next_hop);
    }
    skipped
}

/// `spec.natExcludeCidrs`' IPv6 entries (host bits dropped), for the IPv6 masquerade;
/// entries that do not parse fail the plan in [`nat_exclusions`] already.
/// The ClientJoin clients' overlay addresses, of both families.
fn client_overlays<'a>(input: &'a Input<'_>) -> impl Iterator<Item = IpAddr> + 'a {
    input
        .clients
        .iter()
        .flat_map(|c| c.overlays.iter().copied())
}

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
/// IPv4 pod traffic and go to the IPv6 rule).
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

/// This node's NodeSubnet, parsed and checked, by family: the network's ranges, this node's
/// subnets in them and its node addresses.
struct OwnNode<'a> {
    name: &'a str,
    spec: &'a NodeSubnetSpec,
    /// `spec.nodeAddress`: the VXLAN tunnel's source, and the address that finds the underlay.
    address: IpAddr,
    mac: Mac,
    /// Per family: the network's range (which every node subnet of that family must lie in),
    /// this node's subnet in it (`None` on a network without that family, and on a network
    /// made dual-stack in place until the operator has allocated the second subnet) and this
    /// node's address of it (`nodeAddress` or `secondaryNodeAddress`), when it has one.
    f: Families,
}

impl<'a> OwnNode<'a> {
    fn parse(input: &Input<'a>) -> Result<Self, PlanError> {
        let name = input.own.metadata.name.as_deref().unwrap_or("<unnamed>");
        let spec = &input.own.spec;
        let field = |field: &'static str| {
            move |source| PlanError::OwnField {
                name: name.to_owned(),
                field,
                source,
            }
        };
        let network = cidr::parse_cidr(&input.network.cidr)
            .map_err(|source| PlanError::NetworkCidr { source })?;
        let cidr = cidr::parse_cidr(&spec.cidr).map_err(field("spec.cidr"))?;
        let address = cidr::parse_addr(&spec.node_address).map_err(field("spec.nodeAddress"))?;
        let mac = spec
            .parsed_vtep_mac()
            .map_err(field("spec.vtepMac"))?
            .unwrap_or_else(|| causeway_crds::vtep::vtep_mac(&spec.node_name));
        if !network.contains(&cidr) {
            return Err(PlanError::OutsideNetwork {
                name: name.to_owned(),
                cidr: spec.cidr.clone(),
                network,
            });
        }
        check_size(name, "cidr", cidr)?;
        let underlay = input.underlay;
        if !underlay.prefix.contains(&address) {
            return Err(PlanError::UnderlayMismatch {
                underlay: underlay.name.clone(),
                prefix: underlay.prefix,
                address,
            });
        }
        let (network2, cidr2) = Self::secondary(input, name, network)?;
        let families = Families::split(
            network,
            network2,
            &causeway_crds::v1alpha1::ParsedAddresses {
                cidr,
                node_address: address,
                secondary_cidr: cidr2,
                secondary_node_address: node_address2(spec),
            },
        );
        Ok(Self {
            name,
            spec,
            address,
            mac,
            f: families,
        })
    }

    /// The network's second range (of the other family than `network`) and this node's
    /// subnet in it, checked; the subnet is `None` until the operator has allocated it.
    fn secondary(
        input: &Input<'_>,
        name: &str,
        network: IpNet,
    ) -> Result<(Option<IpNet>, Option<IpNet>), PlanError> {
        let range = input
            .network
            .secondary_range()
            .map_err(|e| PlanError::SecondaryCidr { source: e.source })?;
        let Some(network2) = range
            .map(|r| r.cidr)
            .filter(|r| r.addr().is_ipv6() != network.addr().is_ipv6())
        else {
            return Ok((None, None));
        };
        let Some(text) = input.own.spec.secondary_cidr.as_deref() else {
            return Ok((Some(network2), None));
        };
        let secondary = cidr::parse_cidr(text).map_err(|source| PlanError::OwnField {
            name: name.to_owned(),
            field: "spec.secondaryCidr",
            source,
        })?;
        if !network2.contains(&secondary) {
            return Err(PlanError::SecondaryOutsideNetwork {
                name: name.to_owned(),
                cidr: text.to_owned(),
                network: network2,
            });
        }
        check_size(name, "secondaryCidr", secondary)?;
        Ok((Some(network2), Some(secondary)))
    }
}

/// A node subnet needs room for a gateway and pods: a prefix length of at most 30 (IPv4) or
/// 126 (IPv6).
fn check_size(name: &str, field: &'static str, cidr: IpNet) -> Result<(), PlanError> {
    let max = if cidr.addr().is_ipv6() { 126 } else { 30 };
    if cidr.prefix_len() > max {
        return Err(PlanError::SubnetTooSmall {
            name: name.to_owned(),
            field,
            cidr,
            max,
        });
    }
    Ok(())
}

/// The VXLAN overhead for a tunnel whose outer packets are IPv6 (`true`) or IPv4.
#[must_use]
pub(crate) fn vxlan_overhead(ipv6: bool) -> u32 {
    if ipv6 {
        VXLAN6_OVERHEAD
    } else {
        VXLAN_OVERHEAD
    }
}

/// The pod MTU: `spec.mtu` when set and it fits the underlay, else the underlay's (minus the
/// VXLAN overhead in Overlay mode: 50 bytes over an IPv4 underlay, 70 over IPv6).
pub(crate) fn effective_mtu(
    network: &PodNetworkSpec,
    underlay: &Underlay,
) -> Result<u32, PlanError> {
    let overhead = match network.mode {
        PodNetworkMode::Overlay => vxlan_overhead(matches!(underlay.prefix, IpNet::V6(_))),
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
    let mtu = causeway_crds::mtu::effective_mtu_over(overhead, network.mtu, underlay.mtu);
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

/// Overlay with `crossSubnet`: the on-link prefixes, per family, within which peers are
/// reached without the tunnel.
struct Direct {
    v4: Option<Ipv4Net>,
    v6: Option<Ipv6Net>,
}

impl Direct {
    /// With `crossSubnet`, the underlay's prefix of each family this node has an address of
    /// (both nodes hold an address of it on one segment); nothing without.
    fn new(input: &Input<'_>, own: &OwnNode<'_>) -> Self {
        let cross_subnet = input.network.overlay_or_default().cross_subnet;
        Self {
            v4: cross_subnet
                .then(|| input.underlay.prefix4())
                .flatten()
                .filter(|_| own.f.v4.address.is_some()),
            v6: cross_subnet
                .then(|| input.underlay.prefix6())
                .flatten()
                .filter(|_| own.f.v6.address.is_some()),
        }
    }
}

/// Whether the network is Routed with BGP.
fn uses_bgp(network: &PodNetworkSpec) -> bool {
    network.mode == PodNetworkMode::Routed
        && network.routed.as_ref().is_some_and(|r| r.bgp.is_some())
}

/// How this node reaches an admitted peer's subnets, per mode: what [`plan`] and
/// [`replan`] add for each peer, so that both give the same entries.
enum PeerPaths {
    /// Through the VXLAN device, or directly within the `crossSubnet` prefixes.
    Overlay { vxlan: String, direct: Direct },
    /// Directly within this node's segment of each family (IPv4, IPv6); with BGP, peers
    /// elsewhere come from the routers.
    Routed {
        segments: [Option<IpNet>; 2],
        bgp: bool,
    },
}

impl PeerPaths {
    /// The prefixes reached directly, for admission: `Some` for Overlay only.
    fn tunnel(&self) -> Option<&Direct> {
        match self {
            Self::Overlay { direct, .. } => Some(direct),
            Self::Routed { .. } => None,
        }
    }

    /// Admits every live peer, oldest first, and adds each one's entries to `desired`; returns
    /// what was admitted and a note for each peer (or part of one) left out.
    fn add_all(
        &self,
        desired: &mut State,
        input: &Input<'_>,
        own: &OwnNode<'_>,
    ) -> (Peers, Vec<String>) {
        let mut peers = Peers::new(own);
        let mut skipped = Vec::new();
        for peer in ordered_peers(input) {
            match peers.admit(peer, own, self.tunnel()) {
                Ok(admitted) => skipped.extend(self.add(desired, input, own, peer, &admitted)),
                Err(reason) => skipped.push(format!("{} skipped: {reason}", describe(peer))),
            }
        }
        (peers, skipped)
    }

    /// Adds the entries for one admitted peer to `desired`; returns the notes on what of it
    /// could not be reached.
    fn add(
        &self,
        desired: &mut State,
        input: &Input<'_>,
        own: &OwnNode<'_>,
        peer: &NodeSubnet,
        admitted: &Admitted,
    ) -> Vec<String> {
        match self {
            Self::Overlay { vxlan, direct } => {
                let subnets = [
                    admitted
                        .cidr4
                        .map(|c| (IpNet::V4(c), admitted.direct4(direct).map(IpAddr::V4))),
                    admitted
                        .cidr6
                        .map(|c| (IpNet::V6(c), admitted.direct6(direct).map(IpAddr::V6))),
                ];
                for (cidr, direct) in subnets.into_iter().flatten() {
                    match direct {
                        Some(a) => direct_route(desired, input, cidr, a),
                        None => tunnel(
                            desired,
                            vxlan,
                            cidr,
                            cidr.network(),
                            admitted.mac,
                            admitted.endpoint,
                        ),
                    }
                }
                Vec::new()
            }
            Self::Routed { segments, bgp } => {
                routed_peer(desired, input, own, peer, admitted, *segments, *bgp)
            }
        }
    }
}

/// A peer admitted into the plan: its subnets by family and its addresses.
struct Admitted {
    /// `spec.cidr`, and `spec.secondaryCidr` when the network has a second range.
    cidr: IpNet,
    second: Option<IpNet>,
    cidr4: Option<Ipv4Net>,
    cidr6: Option<Ipv6Net>,
    /// `spec.nodeAddress`: the VXLAN endpoint.
    endpoint: IpAddr,
    address4: Option<Ipv4Addr>,
    address6: Option<Ipv6Addr>,
    mac: Mac,
}

impl Admitted {
    /// Reads a peer's fields and checks each against this node and the network (not against
    /// other peers: that is [`Peers::admit`]). The error is the reason, as the end of a
    /// sentence.
    fn read(peer: &NodeSubnet, own: &OwnNode<'_>) -> Result<Self, String> {
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
        let parsed = spec.parse_addresses().map_err(|e| e.to_string())?;
        let mac = spec
            .parsed_vtep_mac()
            .map_err(|e| format!("spec.vtepMac: {e}"))?
            .unwrap_or_else(|| causeway_crds::vtep::vtep_mac(&spec.node_name));
        let primary = if own.f.primary_v6 {
            own.f.v6.range.map(IpNet::V6)
        } else {
            own.f.v4.range.map(IpNet::V4)
        };
        let secondary = if own.f.primary_v6 {
            own.f.v4.range.map(IpNet::V4)
        } else {
            own.f.v6.range.map(IpNet::V6)
        };
        let cidr = parsed.cidr;
        if !primary.is_some_and(|n| n.contains(&cidr)) {
            return Err(format!(
                "spec.cidr {cidr} lies outside the PodNetwork's cidr {}",
                primary.map(|n| n.to_string()).unwrap_or_default()
            ));
        }
        if parsed.node_address == own.address {
            return Err(format!(
                "spec.nodeAddress {} is this node's own address",
                parsed.node_address
            ));
        }
        let second = match (secondary, parsed.secondary_cidr) {
            (Some(network2), Some(net)) if network2.contains(&net) => Some(net),
            (Some(network2), Some(_)) => {
                return Err(format!(
                    "spec.secondaryCidr {} lies outside the PodNetwork's secondaryCidr {network2}",
                    spec.secondary_cidr.as_deref().unwrap_or_default()
                ));
            }
            _ => None,
        };
        let mut admitted = Self {
            cidr,
            second,
            cidr4: None,
            cidr6: None,
            endpoint: parsed.node_address,
            address4: None,
            address6: None,
            mac,
        };
        for net in admitted.subnets() {
            match net {
                IpNet::V4(n) => admitted.cidr4 = Some(n),
                IpNet::V6(n) => admitted.cidr6 = Some(n),
            }
        }
        for a in [Some(parsed.node_address), parsed.secondary_node_address]
            .into_iter()
            .flatten()
        {
            match a {
                IpAddr::V4(a) if admitted.address4.is_none() => admitted.address4 = Some(a),
                IpAddr::V6(a) if admitted.address6.is_none() => admitted.address6 = Some(a),
                _ => {}
            }
        }
        Ok(admitted)
    }

    /// Its subnets, `spec.cidr` first.
    fn subnets(&self) -> Vec<IpNet> {
        [Some(self.cidr), self.second]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The peer's IPv4 address when its IPv4 subnet is reached directly.
    fn direct4(&self, direct: &Direct) -> Option<Ipv4Addr> {
        self.address4
            .filter(|a| direct.v4.is_some_and(|p| p.contains(a)))
    }

    /// The peer's IPv6 address when its IPv6 subnet is reached directly.
    fn direct6(&self, direct: &Direct) -> Option<Ipv6Addr> {
        self.address6
            .filter(|a| direct.v6.is_some_and(|p| p.contains(a)))
    }

    /// Whether any of its subnets goes through the tunnel.
    fn tunnelled(&self, direct: &Direct) -> bool {
        (self.cidr4.is_some() && self.direct4(direct).is_none())
            || (self.cidr6.is_some() && self.direct6(direct).is_none())
    }
}

/// The subnets and VTEP MACs taken so far, to refuse peers that would collide with them; what
/// [`plan`] leaves in [`Plan::taken`] for [`replan`] to admit a changed peer against.
/// Who holds a subnet or a MAC, in words for a refusal: one allocation per peer, shared by
/// its entries.
type Holder = Arc<str>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peers {
    /// Pairwise disjoint subnets of both families by network address, with who holds them.
    /// Disjointness makes an overlap check two ordered-map lookups, so planning thousands of
    /// peers stays cheap (IPv4 keys sort before IPv6 ones, and ranges of different families
    /// never overlap).
    subnets: BTreeMap<IpAddr, (IpNet, Holder)>,
    /// VTEP MACs of this node and of tunnelled peers, with their node address and holder.
    macs: BTreeMap<Mac, (IpAddr, Holder)>,
    /// MACs admitted for more than one peer (one VTEP, one shared FDB entry).
    shared: BTreeSet<Mac>,
}

impl Peers {
    fn new(own: &OwnNode<'_>) -> Self {
        let holder: Holder = format!("this node's subnet (NodeSubnet {})", own.name).into();
        let subnets = own
            .f
            .subnets()
            .into_iter()
            .map(|net| (net.network(), (net, holder.clone())))
            .collect();
        Self {
            subnets,
            macs: BTreeMap::from([(own.mac, (own.address, holder))]),
            shared: BTreeSet::new(),
        }
    }

    /// Checks one peer and, when it is sound, takes its subnets (and, through the tunnel,
    /// its MAC). A peer with any bad field, its second family's included, is refused whole.
    /// `tunnel`: Overlay mode, with the prefixes reached directly. The error is the reason,
    /// as the end of a sentence.
    fn admit(
        &mut self,
        peer: &NodeSubnet,
        own: &OwnNode<'_>,
        tunnel: Option<&Direct>,
    ) -> Result<Admitted, String> {
        let admitted = Admitted::read(peer, own)?;
        let holder: Holder = describe(peer).into();
        for (field, net) in [
            ("cidr", Some(admitted.cidr)),
            ("secondaryCidr", admitted.second),
        ] {
            if let Some(net) = net
                && let Some((taken, holder)) = self.overlapping(net)
            {
                return Err(format!(
                    "spec.{field} {net} overlaps {taken}, held by {holder}"
                ));
            }
        }
        if let Some(direct) = tunnel
            && admitted.tunnelled(direct)
        {
            let address = admitted.endpoint;
            if address.is_ipv6() != own.address.is_ipv6() {
                return Err(format!(
                    "its node address {address} is {}, and this node's VXLAN tunnel runs over {} (its address {}): the nodes of an Overlay network need node addresses (spec.nodeAddress) of one family",
                    family_name(address.is_ipv6()),
                    family_name(own.address.is_ipv6()),
                    own.address
                ));
            }
            // One FDB entry per MAC: a second VTEP with the same MAC at another address would
            // silently take the first one's traffic (our own MAC is registered with our own
            // address, which no admitted peer has). The same MAC at the same address is one
            // VTEP, and its FDB entry is shared.
            let mac = admitted.mac;
            if let Some((holder_address, holder)) = self.macs.get(&mac) {
                if *holder_address != address {
                    return Err(format!(
                        "its VTEP MAC {mac} is already used by {holder} at {holder_address}"
                    ));
                }
                self.shared.insert(mac);
            }
            self.macs.insert(mac, (address, Holder::clone(&holder)));
        }
        for net in admitted.subnets() {
            self.subnets
                .insert(net.network(), (net, Holder::clone(&holder)));
        }
        Ok(admitted)
    }

    /// Gives back what [`Self::admit`] took for `admitted`; `false` (and nothing changed)
    /// when its FDB entry is shared with another peer, or what it took is not held.
    fn forget(&mut self, admitted: &Admitted, tunnel: Option<&Direct>) -> bool {
        let tunnelled = tunnel.is_some_and(|direct| admitted.tunnelled(direct));
        if tunnelled && self.shared.contains(&admitted.mac) {
            return false;
        }
        let held = |net: &IpNet| {
            self.subnets
                .get(&net.network())
                .is_some_and(|(taken, _)| taken == net)
        };
        if !admitted.subnets().iter().all(held)
            || (tunnelled && !self.macs.contains_key(&admitted.mac))
        {
            return false;
        }
        for net in admitted.subnets() {
            self.subnets.remove(&net.network());
        }
        if tunnelled {
            self.macs.remove(&admitted.mac);
        }
        true
    }

    /// A taken subnet overlapping `net`, if any. Taken subnets are disjoint, so only the last
    /// one starting at or before `net` can contain its start, and only the first one starting
    /// at or after it can lie inside `net`.
    fn overlapping(&self, net: IpNet) -> Option<(IpNet, &str)> {
        let start = net.network();
        let before = self.subnets.range(..=start).next_back();
        let after = self.subnets.range(start..).next();
        before
            .filter(|(_, (taken, _))| taken.contains(&start))
            .or(after.filter(|(_, (taken, _))| net.contains(taken)))
            .map(|(_, (taken, holder))| (*taken, &**holder))
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
            secondary_prefix: None,
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
                "spec.nodeAddress: parse IP address \"192.168.1\"",
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
                p.subnets.get(1).copied(),
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
        assert_eq!(p.subnets.len(), 1, "{:?}", p.subnets);
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
                with_spec(|s| s.node_address = "192.168.1".into()),
                spec(false),
                underlay(),
                "NodeSubnet node-a: spec.nodeAddress: parse IP address \"192.168.1\"",
            ),
            (
                "an IPv6 node address on an IPv4 underlay",
                with_spec(|s| s.node_address = "fd00::1".into()),
                spec(false),
                underlay(),
                "underlay link eth0 (192.168.1.0/24) does not hold this node's address fd00::1 (NodeSubnet spec.nodeAddress)",
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
                    secondary_prefix: None,
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
            overlays: vec![overlay.parse().expect("ip")],
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
            clients: clients.into_iter().map(IpNet::V4).collect(),
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
                let segment = underlay().prefix4().expect("IPv4 underlay");
                let on_segment =
                    c.contains(&segment.network()) || segment.contains(&c.network());
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
            secondary_prefix: Some("fd00:1::/64".parse().expect("prefix")),
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
    fn snat_client_ranges_go_to_the_table_of_their_family_into_that_familys_pod_range() {
        let nets =
            |v: &[&str]| -> Vec<IpNet> { v.iter().map(|c| c.parse().expect("net")).collect() };
        let run_snat = |own: &NodeSubnet,
                        peers: Vec<NodeSubnet>,
                        network: &PodNetworkSpec,
                        underlay: &Underlay,
                        snat: &[IpNet]| {
            let peers: Vec<Arc<NodeSubnet>> = peers.into_iter().map(Arc::new).collect();
            plan(&Input {
                own,
                peers: &peers,
                network,
                underlay,
                learned: &NO_ROUTES,
                returns: &[],
                snat,
                clients: &[],
                protected: &BTreeSet::new(),
                protected6: &BTreeSet::new(),
                pods6: &BTreeSet::new(),
            })
            .expect("plan")
        };
        let (own, peers) = dual_nodes();
        let dual = dual_mode("Overlay");
        let both = nets(&[
            "192.168.70.0/24",
            "fd00:70::/64",
            "192.168.70.7/32",
            "fd00:50::/64",
            "fd00:70::7/128",
        ]);
        let p = run_snat(&own, peers.clone(), &dual, &underlay6(), &both);
        assert_eq!(
            p.desired.snat,
            Some(Snat::Masquerade(crate::model::GatewaySnat {
                clients: vec!["192.168.70.0/24".parse().expect("net")],
                pods: "10.244.0.0/16".parse().expect("net"),
            })),
            "IPv4 clients into cidr"
        );
        assert_eq!(
            p.desired.snat6,
            Some(Snat6::Masquerade(crate::model::GatewaySnat6 {
                clients: vec![
                    "fd00:50::/64".parse().expect("net"),
                    "fd00:70::/64".parse().expect("net"),
                ],
                pods: "fd00:10:244::/56".parse().expect("net"),
            })),
            "IPv6 clients into secondaryCidr, merged and sorted"
        );

        let only6 = nets(&["fd00:70::/64"]);
        let p = run_snat(&own, peers.clone(), &dual, &underlay6(), &only6);
        assert_eq!(p.desired.snat, None, "no IPv4 clients, no ip table");
        assert!(p.desired.snat6.is_some());

        let only4 = nets(&["192.168.70.0/24"]);
        let p = run_snat(&own, peers, &dual, &underlay6(), &only4);
        assert!(p.desired.snat.is_some());
        assert_eq!(p.desired.snat6, None, "no IPv6 clients, no ip6 table");

        // An IPv4-only network has no IPv6 pod range to masquerade into.
        let v4 = mode("Overlay", serde_json::Value::Null);
        let p = run_snat(&self::own(), vec![], &v4, &underlay(), &both);
        assert!(p.desired.snat.is_some());
        assert_eq!(p.desired.snat6, None);

        // An IPv6 network: IPv6 clients go into its cidr, the ip table is not planned.
        let (own6, peers6) = v6_nodes();
        let v6 = v6_mode("Overlay", serde_json::Value::Null);
        let p = run_snat(&own6, peers6, &v6, &v6_underlay(), &both);
        assert_eq!(p.desired.snat, None);
        assert_eq!(
            p.desired.snat6.as_ref().map(|s| match s {
                Snat6::Masquerade(g) => g.pods.to_string(),
                Snat6::Unrecognised(why) => why.clone(),
            }),
            Some("fd00:10:244::/56".to_owned())
        );
    }

    #[test]
    fn bridge_host_returns_go_per_family_via_the_active_hosts_address_of_that_family() {
        let (own, peers) = dual_nodes();
        let peers: Vec<Arc<NodeSubnet>> = peers.into_iter().map(Arc::new).collect();
        let network = dual_mode("Routed");
        let plan_via = |via: &str| {
            let returns = [GatewayReturn {
                gateway: "office".into(),
                via: via.into(),
                clients: ["192.168.70.0/24", "fd00:70::/64", "fd00:1::/64"]
                    .iter()
                    .map(|c| c.parse().expect("net"))
                    .collect(),
            }];
            plan(&Input {
                own: &own,
                peers: &peers,
                network: &network,
                underlay: &underlay6(),
                learned: &NO_ROUTES,
                returns: &returns,
                snat: &[],
                clients: &[],
                protected: &BTreeSet::new(),
                protected6: &BTreeSet::new(),
                pods6: &BTreeSet::new(),
            })
            .expect("plan")
        };
        let p = plan_via("node-b");
        let client_routes: Vec<String> = lines(&p.desired)
            .into_iter()
            .filter(|l| l.contains(":70:") || l.contains(".70.") || l.starts_with("route fd00:1::"))
            .collect();
        assert_eq!(
            client_routes,
            [
                "route 192.168.70.0/24 via 192.168.1.12 dev eth0",
                "route fd00:70::/64 via fd00:1::12 dev eth0",
            ],
            "the on-link IPv6 client range gets no route"
        );
        // node-c is on neither segment, and static routes do not reach it: named per family.
        let p = plan_via("node-c");
        assert!(
            lines(&p.desired)
                .iter()
                .all(|l| !l.contains(":70:") && !l.contains(".70.")),
            "{:?}",
            lines(&p.desired)
        );
        let named: Vec<&String> = p
            .skipped
            .iter()
            .filter(|s| s.contains("no path to active host node-c"))
            .collect();
        assert_eq!(named.len(), 2, "{:?}", p.skipped);
        assert!(named[1].contains("fd00:2::13"), "{named:?}");
    }

    #[test]
    fn client_join_clients_get_a_route_per_overlay_address_of_both_families_unmasqueraded() {
        let (own, peers) = dual_nodes();
        let peers: Vec<Arc<NodeSubnet>> = peers.into_iter().map(Arc::new).collect();
        let mut network = dual_mode("Overlay");
        network.routed = None;
        let client = |name: &str, address: &str| crate::join::ClientPeer {
            name: name.into(),
            address: address.parse().expect("ip"),
            overlays: vec![
                "10.250.0.100".parse().expect("ip"),
                "fd00:250::100".parse().expect("ip"),
            ],
            mac: crate::join::client_mac(name),
        };
        let clients = [
            client("laptop", "192.168.1.100"),
            client("v6", "fd00:1::100"),
        ];
        let p = plan(&Input {
            own: &own,
            peers: &peers,
            network: &network,
            underlay: &underlay6(),
            learned: &NO_ROUTES,
            returns: &[],
            snat: &[],
            clients: &clients,
            protected: &BTreeSet::new(),
            protected6: &BTreeSet::new(),
            pods6: &BTreeSet::new(),
        })
        .expect("plan");
        let l = lines(&p.desired);
        let mac = crate::join::client_mac("laptop");
        for want in [
            "route 10.250.0.100/32 via 10.250.0.100 dev cw-vx1 onlink".to_owned(),
            "route fd00:250::100/128 via fd00:250::100 dev cw-vx1 onlink".to_owned(),
            format!("neigh fd00:250::100 lladdr {mac} dev cw-vx1"),
            format!("fdb {mac} dev cw-vx1 dst 192.168.1.100"),
        ] {
            assert!(l.contains(&want), "{want} missing from {l:#?}");
        }
        // The client tunnelling from an IPv6 address cannot reach this node's IPv4 tunnel.
        assert!(
            p.skipped
                .iter()
                .any(|s| s.contains("client v6 skipped: its address fd00:1::100")),
            "{:?}",
            p.skipped
        );
        // Pods talk to the client's overlay addresses unmasqueraded, in both families.
        let Some(Nat6::Masquerade(m6)) = &p.desired.nat6 else {
            panic!("no IPv6 masquerade: {:?}", p.desired.nat6);
        };
        assert!(
            m6.exempt
                .contains(&"fd00:250::100/128".parse().expect("net")),
            "{m6:?}"
        );
    }

    /// An IPv6-only network of `mode_name` (fd00:10:244::/56, /64 per node).
    fn v6_mode(mode_name: &str, extra: serde_json::Value) -> PodNetworkSpec {
        let mut spec = mode(mode_name, extra);
        spec.cidr = "fd00:10:244::/56".into();
        spec.node_subnet_prefix_length = 64;
        spec
    }

    /// An IPv6-only underlay: eth0 holding fd00:1::11/64.
    fn v6_underlay() -> Underlay {
        Underlay {
            name: "eth0".into(),
            mtu: 1500,
            prefix: "fd00:1::/64".parse().expect("prefix"),
            secondary_prefix: None,
        }
    }

    /// node-a on fd00:1::/64 with its peers: node-b on the same segment, node-c behind a
    /// router (fd00:2::/64).
    fn v6_nodes() -> (NodeSubnet, Vec<NodeSubnet>) {
        (
            subnet("node-a", "fd00:10:244:1::/64", "fd00:1::11"),
            vec![
                subnet("node-b", "fd00:10:244:2::/64", "fd00:1::12"),
                subnet("node-c", "fd00:10:244:3::/64", "fd00:2::13"),
            ],
        )
    }

    #[test]
    fn an_ipv6_network_on_an_ipv6_underlay_plans_every_mode_in_ipv6_alone() {
        let (own, peers) = v6_nodes();
        let (mac_b, mac_c) = (vtep_mac("node-b"), vtep_mac("node-c"));
        let bridge = |mtu: u32| {
            vec![
                format!("link cw-br0 bridge mtu {mtu} up"),
                "addr fd00:10:244:1::1/64 dev cw-br0".to_owned(),
            ]
        };
        let vxlan = vec![
            format!(
                "link cw-vx1 vxlan id 1 dstport 8472 local fd00:1::11 dev eth0 address {} mtu 1430 up",
                vtep_mac("node-a")
            ),
            "addr fd00:10:244:1::/128 dev cw-vx1".to_owned(),
        ];
        let cases: Vec<(&str, PodNetworkSpec, Vec<Vec<String>>, usize)> = vec![
            (
                "Overlay: VXLAN over IPv6, 70 bytes of headers",
                v6_mode("Overlay", serde_json::Value::Null),
                vec![
                    bridge(1430),
                    vxlan.clone(),
                    vec![
                        "route fd00:10:244:2::/64 via fd00:10:244:2:: dev cw-vx1 onlink".into(),
                        format!("neigh fd00:10:244:2:: lladdr {mac_b} dev cw-vx1"),
                        format!("fdb {mac_b} dev cw-vx1 dst fd00:1::12"),
                        "route fd00:10:244:3::/64 via fd00:10:244:3:: dev cw-vx1 onlink".into(),
                        format!("neigh fd00:10:244:3:: lladdr {mac_c} dev cw-vx1"),
                        format!("fdb {mac_c} dev cw-vx1 dst fd00:2::13"),
                    ],
                ],
                0,
            ),
            (
                "Overlay crossSubnet: the on-link peer directly, the other through the tunnel",
                {
                    let mut spec = v6_mode("Overlay", serde_json::Value::Null);
                    spec.overlay = Some(
                        serde_json::from_value(serde_json::json!({"crossSubnet": true}))
                            .expect("overlay"),
                    );
                    spec
                },
                vec![
                    bridge(1430),
                    vxlan.clone(),
                    vec![
                        "route fd00:10:244:2::/64 via fd00:1::12 dev eth0".into(),
                        "route fd00:10:244:3::/64 via fd00:10:244:3:: dev cw-vx1 onlink".into(),
                        format!("neigh fd00:10:244:3:: lladdr {mac_c} dev cw-vx1"),
                        format!("fdb {mac_c} dev cw-vx1 dst fd00:2::13"),
                    ],
                ],
                0,
            ),
            (
                "Routed: a direct route to the on-link peer, the other named",
                v6_mode("Routed", serde_json::Value::Null),
                vec![
                    bridge(1500),
                    vec!["route fd00:10:244:2::/64 via fd00:1::12 dev eth0".into()],
                ],
                1,
            ),
            (
                "Flat: the range on-link, proxy NDP for this node's pods",
                v6_mode("Flat", serde_json::Value::Null),
                vec![
                    bridge(1500),
                    vec![
                        "route fd00:10:244::/56 dev eth0".into(),
                        "proxy_ndp dev eth0".into(),
                        "neigh proxy fd00:10:244:1::2 dev eth0".into(),
                    ],
                ],
                1,
            ),
        ];
        for (name, network, want, skipped) in cases {
            let p = run6(
                &own,
                peers.clone(),
                &network,
                &v6_underlay(),
                &["fd00:10:244:1::2", "fd00:10:244:2::2"],
                &[],
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(lines(&p.desired), sorted(want), "{name}");
            assert_eq!(
                p.subnets,
                ["fd00:10:244:1::/64".parse::<IpNet>().expect("net")],
                "{name}"
            );
            assert!(
                p.desired.proxy_arp.is_empty() && p.desired.nat.is_none(),
                "{name}: no IPv4"
            );
            assert!(p.desired.nat6.is_some(), "{name}: IPv6 masquerade");
            assert_eq!(p.skipped.len(), skipped, "{name}: {:?}", p.skipped);
            if skipped > 0 {
                assert!(
                    p.skipped[0].contains("node-c")
                        && p.skipped[0].contains(
                            "node address fd00:2::13 is not on this node's IPv6 segment fd00:1::/64"
                        ),
                    "{name}: {:?}",
                    p.skipped
                );
            }
        }
        // An explicit MTU that fits IPv4's 50 bytes but not IPv6's 70 is refused, naming 70.
        let mut tight = v6_mode("Overlay", serde_json::Value::Null);
        tight.mtu = Some(1450);
        let err = run6(&own, peers, &tight, &v6_underlay(), &[], &[]).expect_err("too big");
        assert!(
            err.to_string()
                .contains("with 70 bytes of VXLAN headers: set spec.mtu to 1430 or less"),
            "{err}"
        );
    }

    #[test]
    fn dual_stack_cross_subnet_routes_each_family_directly_only_where_both_nodes_have_it_on_link() {
        let (own, peers) = dual_nodes();
        let mut network = dual_mode("Overlay");
        network.overlay = Some(
            serde_json::from_value(serde_json::json!({"crossSubnet": true})).expect("overlay"),
        );
        let routes = |underlay: &Underlay| -> Vec<String> {
            let p = run6(&own, peers.clone(), &network, underlay, &[], &[]).expect("plan");
            p.desired
                .routes
                .values()
                .map(|r| format!("{} dev {}", r.dst, r.dev))
                .collect()
        };
        // A dual-stack underlay: node-b (both families on eth0's prefixes) directly in both;
        // node-d (no IPv6 address) directly in IPv4, through the tunnel in IPv6; node-c
        // (another segment) through the tunnel in both.
        assert_eq!(
            routes(&underlay6()),
            [
                "10.244.2.0/24 dev eth0",
                "10.244.3.0/24 dev cw-vx1",
                "10.244.4.0/24 dev eth0",
                "fd00:10:244:2::/64 dev eth0",
                "fd00:10:244:3::/64 dev cw-vx1",
                "fd00:10:244:4::/64 dev cw-vx1",
            ]
        );
        // An IPv4-only underlay: IPv6 always through the tunnel.
        let v4_only = routes(&underlay());
        assert!(
            v4_only
                .iter()
                .filter(|r| r.starts_with("fd00"))
                .all(|r| r.ends_with("dev cw-vx1")),
            "{v4_only:?}"
        );
    }

    #[test]
    fn an_ipv4_flat_or_routed_network_on_an_ipv6_only_node_names_the_missing_address_and_overlay_works()
     {
        let own = subnet("node-a", "10.244.1.0/24", "fd00:1::11");
        let peers = vec![subnet("node-b", "10.244.2.0/24", "fd00:1::12")];
        for mode_name in ["Flat", "Routed"] {
            let err = run6(
                &own,
                peers.clone(),
                &mode(mode_name, serde_json::Value::Null),
                &v6_underlay(),
                &[],
                &[],
            )
            .expect_err("no IPv4 address");
            assert_eq!(
                err.to_string(),
                format!(
                    "NodeSubnet node-a: this IPv4 {mode_name} network carries IPv4 pod traffic over the underlay unencapsulated, and node node-a has no IPv4 address (spec.nodeAddress fd00:1::11 is IPv6): give node node-a an IPv4 InternalIP (the operator copies it into the NodeSubnet), or use mode Overlay, which tunnels IPv4 pods over IPv6; nothing on this node is changed until then"
                )
            );
        }
        // Overlay: IPv4 pods over VXLAN over IPv6.
        let p = run6(&own, peers, &spec(false), &v6_underlay(), &[], &[]).expect("plan");
        assert!(
            lines(&p.desired)
                .iter()
                .any(|l| l.starts_with("fdb ") && l.ends_with("dst fd00:1::12")),
            "{:?}",
            lines(&p.desired)
        );
        assert_eq!(p.mtu, 1430);
    }

    #[test]
    fn an_ipv6_primary_dual_stack_network_lists_the_ipv6_subnet_first_and_routes_ipv4_via_the_secondary_address()
     {
        let mut network = v6_mode("Routed", serde_json::Value::Null);
        network.secondary_cidr = Some("10.244.0.0/16".into());
        network.secondary_node_subnet_prefix_length = Some(24);
        let with4 = |node: &str, v6: &str, node6: &str, v4: &str, node4: &str| {
            let mut s = subnet(node, v6, node6);
            s.spec.secondary_cidr = Some(v4.into());
            s.spec.secondary_node_address = Some(node4.into());
            s
        };
        let own = with4(
            "node-a",
            "fd00:10:244:1::/64",
            "fd00:1::11",
            "10.244.1.0/24",
            "192.168.1.11",
        );
        let peers = vec![with4(
            "node-b",
            "fd00:10:244:2::/64",
            "fd00:1::12",
            "10.244.2.0/24",
            "192.168.1.12",
        )];
        let underlay = Underlay {
            secondary_prefix: Some("192.168.1.0/24".parse().expect("prefix")),
            ..v6_underlay()
        };
        let p = run6(&own, peers.clone(), &network, &underlay, &[], &[]).expect("plan");
        assert_eq!(
            p.subnets,
            [
                "fd00:10:244:1::/64".parse::<IpNet>().expect("net"),
                "10.244.1.0/24".parse().expect("net"),
            ],
            "the primary family first: pods' first address is IPv6"
        );
        assert_eq!(
            lines(&p.desired),
            sorted(vec![vec![
                "link cw-br0 bridge mtu 1500 up".into(),
                "addr 10.244.1.1/24 dev cw-br0".into(),
                "addr fd00:10:244:1::1/64 dev cw-br0".into(),
                "route 10.244.2.0/24 via 192.168.1.12 dev eth0".into(),
                "route fd00:10:244:2::/64 via fd00:1::12 dev eth0".into(),
            ]]),
        );
        // Without an IPv4 address on the underlay, the plan names what is missing.
        let err = run6(&own, peers, &network, &v6_underlay(), &[], &[]).expect_err("no IPv4");
        assert!(
            err.to_string().starts_with("this node's IPv4 address 192.168.1.11 (NodeSubnet spec.secondaryNodeAddress, its IPv4 InternalIP) is not on underlay link eth0, which holds its IPv6 address fd00:1::11"),
            "{err}"
        );
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
            p.subnets.get(1).copied(),
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
                secondary_prefix: Some("fd00:10:244:1::/64".parse().expect("net")),
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
                p.subnets.len() == 1
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
