//! `PodNetwork`: the platform team's description of one pod network (see `docs/api.md`).
//!
//! Written by people (or GitOps); read by the operator, which allocates node subnets and rolls
//! node status up into `status`, and by every agent, which derives its dataplane from it.

// `printcolumn(type_ = "string", ...)` repeats key-value pairs across columns, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::address::{self, Families, Field};
use super::{BgpSpec, MAX_CIDR_LENGTH, MAX_CIDR_LIST_ITEMS, default_true};
use crate::cidr::Family;
use crate::{Error, cidr, mtu, schema};

/// `spec.cidr` in admission messages.
const POD_CIDR: Field = Field {
    name: "cidr",
    good: "a private range that no node or Service address is in",
    example: "10.244.0.0/16",
};

/// `spec.secondaryCidr` in admission messages.
const SECONDARY_POD_CIDR: Field = Field {
    name: "secondaryCidr",
    good: "a private range of the other family that no node or Service address is in",
    example: "fd00:10:244::/56",
};

/// The largest node subnet prefix length per family: an IPv4 /30 holds the bridge and one pod
/// between its network and broadcast addresses, an IPv6 /126 the bridge and two pods.
pub const MAX_NODE_PREFIX_V4: u8 = 30;
/// See [`MAX_NODE_PREFIX_V4`].
pub const MAX_NODE_PREFIX_V6: u8 = 126;

/// Desired state of a PodNetwork: which address range pods get, how it is split into per-node
/// subnets, which nodes take part, and how packets travel between nodes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "causeway.dev",
    version = "v1alpha1",
    kind = "PodNetwork",
    plural = "podnetworks",
    singular = "podnetwork",
    shortname = "pn",
    category = "causeway",
    status = "PodNetworkStatus",
    derive = "PartialEq",
    doc = "PodNetwork is a cluster-wide pod address range and the way pods on different nodes reach each other. Platform engineers write it; the Causeway operator gives every selected node a slice of spec.cidr (a NodeSubnet) and the node agents program routes, proxy ARP or VXLAN tunnels according to spec.mode. Watch status.conditions (Ready, Degraded, SubnetsExhausted) for progress.",
    printcolumn(
        name = "MODE",
        type_ = "string",
        json_path = ".spec.mode",
        description = "How packets cross between nodes: Flat, Routed or Overlay"
    ),
    printcolumn(
        name = "CIDR",
        type_ = "string",
        json_path = ".spec.cidr",
        description = "The pod address range"
    ),
    printcolumn(
        name = "SECONDARY",
        type_ = "string",
        json_path = ".spec.secondaryCidr",
        description = "The second pod range of a dual-stack network",
        priority = 1
    ),
    printcolumn(
        name = "NODES",
        type_ = "integer",
        json_path = ".status.selectedNodes",
        description = "Nodes selected by spec.nodeSelector"
    ),
    printcolumn(
        name = "PROGRAMMED",
        type_ = "integer",
        json_path = ".status.programmedNodes",
        description = "Selected nodes whose agent reported Programmed=True"
    ),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Status of the Ready condition"
    ),
    printcolumn(
        name = "REASON",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the network is (not) Ready: kubectl describe shows the message"
    ),
    printcolumn(
        name = "FREE",
        type_ = "integer",
        json_path = ".status.subnetsFree",
        description = "Node subnets of cidr still free",
        priority = 1
    ),
    printcolumn(
        name = "FREE2",
        type_ = "integer",
        json_path = ".status.secondarySubnetsFree",
        description = "Node subnets of secondaryCidr still free (dual-stack)",
        priority = 1
    ),
    printcolumn(
        name = "MTU",
        type_ = "integer",
        json_path = ".status.effectiveMtu",
        description = "The pod MTU in use",
        priority = 1
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!isCIDR(self.cidr) || (self.nodeSubnetPrefixLength > cidr(self.cidr).prefixLength() && self.nodeSubnetPrefixLength <= (cidr(self.cidr).ip().family() == 4 ? 30 : 126))")
        .message(Message::Expression("'nodeSubnetPrefixLength must be larger than the prefix length of cidr ' + self.cidr + (cidr(self.cidr).ip().family() == 4 ? ' and at most 30: each node gets a /nodeSubnetPrefixLength slice of cidr (for a /16, 24 gives 256 nodes 254 pod addresses each)' : ' and at most 126: each node gets a /nodeSubnetPrefixLength slice of cidr (64 is usual for IPv6: a /56 gives 256 nodes a /64 each)')".into()))
        .field_path(".nodeSubnetPrefixLength"),
    validation = Rule::new("has(self.secondaryCidr) == has(self.secondaryNodeSubnetPrefixLength)")
        .message("secondaryCidr and secondaryNodeSubnetPrefixLength go together: set both (e.g. secondaryCidr: fd00:10:244::/56 with secondaryNodeSubnetPrefixLength: 64) for a dual-stack network, or neither")
        .field_path(".secondaryCidr")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.secondaryCidr) || !isCIDR(self.cidr) || !isCIDR(self.secondaryCidr) || cidr(self.cidr).ip().family() != cidr(self.secondaryCidr).ip().family()")
        .message(Message::Expression("'secondaryCidr ' + self.secondaryCidr + ' is of the same address family as cidr ' + self.cidr + ': a dual-stack network has one IPv4 and one IPv6 range; to use more addresses of one family, give cidr a shorter prefix in a new PodNetwork'".into()))
        .field_path(".secondaryCidr"),
    validation = Rule::new("!has(self.secondaryCidr) || !has(self.secondaryNodeSubnetPrefixLength) || !isCIDR(self.secondaryCidr) || (self.secondaryNodeSubnetPrefixLength > cidr(self.secondaryCidr).prefixLength() && self.secondaryNodeSubnetPrefixLength <= (cidr(self.secondaryCidr).ip().family() == 4 ? 30 : 126))")
        .message(Message::Expression("'secondaryNodeSubnetPrefixLength must be larger than the prefix length of secondaryCidr ' + self.secondaryCidr + (cidr(self.secondaryCidr).ip().family() == 4 ? ' and at most 30 (24 is usual for IPv4)' : ' and at most 126 (64 is usual for IPv6: a /56 gives 256 nodes a /64 each)')".into()))
        .field_path(".secondaryNodeSubnetPrefixLength"),
    validation = Rule::new("!has(oldSelf.secondaryCidr) || has(self.secondaryCidr)")
        .message("secondaryCidr cannot be removed: pods hold addresses from it; create a new PodNetwork without it and move nodes to it")
        .field_path(".secondaryCidr"),
    validation = Rule::new("!has(self.flat) || self.mode == 'Flat'")
        .message("spec.flat may only be set when mode is Flat: remove spec.flat or set mode: Flat")
        .field_path(".flat")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.routed) || self.mode == 'Routed'")
        .message("spec.routed may only be set when mode is Routed: remove spec.routed or set mode: Routed")
        .field_path(".routed")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.overlay) || self.mode == 'Overlay'")
        .message("spec.overlay may only be set when mode is Overlay: remove spec.overlay or set mode: Overlay")
        .field_path(".overlay")
        .reason(Reason::FieldValueForbidden)
)]
pub struct PodNetworkSpec {
    /// The address range pods of this network get addresses from, in CIDR notation with no
    /// host bits set: IPv4 (e.g. 10.244.0.0/16) or IPv6 (e.g. fd00:10:244::/56). Its family is
    /// the network's primary one (pods list that address first). Every selected node receives
    /// one /nodeSubnetPrefixLength slice of it. It must not overlap the node (underlay)
    /// network, the Service CIDR or another PodNetwork, nor 0.0.0.0/8, loopback 127.0.0.0/8,
    /// link-local 169.254.0.0/16, multicast 224.0.0.0/4 or 240.0.0.0/4, nor for IPv6 ::/8
    /// (loopback, unspecified, IPv4-mapped), link-local fe80::/10 or multicast ff00::/8.
    /// Immutable: to change the range, create a new PodNetwork and move nodes to it.
    #[schemars(length(max = MAX_CIDR_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_cidr(&POD_CIDR, Families::Any("fd00:10:244::/56"))))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("cidr is immutable: create a new PodNetwork with the new range and move nodes to it")
    )]
    pub cidr: String,

    /// Prefix length of each node's pod subnet (e.g. 24 gives every node a /24 of cidr: 254
    /// usable pod addresses per node, and 256 nodes in a /16; 64 is usual for IPv6). Must be
    /// larger than the prefix length of cidr and at most 30 for IPv4, 126 for IPv6. Choose it
    /// for the largest number of pods one node runs, since a node never gets a second subnet.
    /// Immutable: node subnets already handed out would no longer tile the range.
    #[schemars(range(min = 1, max = 126))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("nodeSubnetPrefixLength is immutable: create a new PodNetwork with the new subnet size and move nodes to it")
    )]
    pub node_subnet_prefix_length: i32,

    /// A second pod range, of the other address family than cidr, for a dual-stack network
    /// (e.g. fd00:10:244::/56 next to an IPv4 cidr): every node then gets one slice of each,
    /// and pods one address of each. The same rules as cidr apply. It may be added to a
    /// running network (existing nodes get their slice; pods created afterwards get both
    /// addresses), but not changed or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CIDR_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_cidr(&SECONDARY_POD_CIDR, Families::Any("10.245.0.0/16"))))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("secondaryCidr cannot be changed once set: create a new PodNetwork with the new range and move nodes to it")
    )]
    pub secondary_cidr: Option<String>,

    /// Prefix length of each node's slice of secondaryCidr (64 is usual for IPv6, as
    /// kube-controller-manager's default). Required with secondaryCidr; the same bounds as
    /// nodeSubnetPrefixLength. Cannot be changed once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 126))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("secondaryNodeSubnetPrefixLength cannot be changed once set: create a new PodNetwork with the new subnet size and move nodes to it")
    )]
    pub secondary_node_subnet_prefix_length: Option<i32>,

    /// Which nodes take part in this network, by node label. Absent: every node. A node must be
    /// selected by at most one PodNetwork. Changing the selector adds or removes nodes; a
    /// removed node's subnet is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::label_selector)]
    pub node_selector: Option<LabelSelector>,

    /// How pod packets cross between nodes. Flat: all nodes share one L2 segment and answer
    /// ARP for their pods (proxy ARP); nothing to configure elsewhere. Routed: each node's
    /// subnet is routed via the node's address (direct routes to on-link peers, optional BGP
    /// towards routers); best performance, the network must carry pod routes. Overlay: pod
    /// packets are encapsulated in VXLAN between nodes; works on any IP network, costs 50
    /// bytes of MTU. Immutable: to change mode, create a second PodNetwork with the new mode
    /// and move nodes to it.
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("mode is immutable: create a second PodNetwork with the new mode and move nodes to it (a node's network can be changed by relabelling it)")
    )]
    pub mode: PodNetworkMode,

    /// Settings for mode Flat. Allowed only when mode is Flat; may be omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat: Option<FlatSpec>,

    /// Settings for mode Routed. Allowed only when mode is Routed; omit it for static routes
    /// between on-link nodes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routed: Option<RoutedSpec>,

    /// Settings for mode Overlay. Allowed only when mode is Overlay; omitted means all defaults
    /// (VNI 1, UDP port 8472, VXLAN to every peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<OverlaySpec>,

    /// MTU of pod interfaces, in bytes (576-9216). Absent: automatic, the MTU of the node's
    /// underlay interface minus the encapsulation overhead (50 bytes in Overlay mode, 0
    /// otherwise). Set it only when the automatic value is wrong, e.g. when the underlay is
    /// itself a tunnel. status.effectiveMtu shows the value in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 576, max = 9216))]
    pub mtu: Option<i32>,

    /// Whether nodes masquerade (SNAT to the node's address) pod traffic leaving cidr for
    /// destinations outside it, so pods can reach networks that have no route back to pod
    /// addresses. Default true. Set false when the network routes pod addresses (Routed mode
    /// with BGP, for example) and destinations should see pod IPs.
    #[serde(default = "default_true")]
    pub nat_outgoing: bool,

    /// Destinations, besides cidr itself, that pod traffic reaches without masquerade (e.g. a
    /// datacenter range that routes pod addresses back). Each entry is a CIDR; at most 64.
    /// Ignored when natOutgoing is false.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CIDR_LIST_ITEMS), inner(length(max = MAX_CIDR_LENGTH)))]
    #[schemars(transform = schema::item_rules([Rule::new("isCIDR(self)")
        .message("every natExcludeCidrs entry must be a CIDR such as 192.168.0.0/16")]))]
    pub nat_exclude_cidrs: Vec<String>,
}

/// How pod packets cross between nodes: Flat, Routed or Overlay (see spec.mode).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PodNetworkMode {
    /// One L2 segment; nodes answer ARP for their own pod subnets (proxy ARP).
    Flat,
    /// Per-node routes via the node's address; BGP towards routers.
    Routed,
    /// VXLAN encapsulation between nodes.
    Overlay,
}

/// Flat mode has no settings. Every node puts an on-link route for the whole cidr on its
/// underlay interface and answers ARP (proxy ARP) only for addresses in its own node subnet,
/// then forwards to its pod bridge. All nodes must share one L2 segment (one VLAN, no router
/// in between); write `flat: {}` or omit the block.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct FlatSpec {}

/// Routed mode settings. Peers on the same L2 segment always get direct routes (pod subnet
/// via the peer's node address, like flannel host-gw). BGP, when configured, reaches peers
/// behind routers: every node advertises its own pod subnet to the listed routers and learns
/// the others' from them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutedSpec {
    /// BGP sessions from the nodes to routers. Absent: no BGP; only on-link peers are
    /// reachable, through direct routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpSpec>,
}

/// Overlay (VXLAN) settings. Each node gets one VXLAN device; peers are programmed with
/// static neighbour and forwarding entries (no multicast, flooding or learning).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverlaySpec {
    /// VXLAN network identifier (1-16777215). Default 1. Change it only to keep this network
    /// apart from another VXLAN overlay on the same underlay and port.
    #[serde(default = "default_vni")]
    #[schemars(range(min = 1, max = 16_777_215))]
    pub vni: i32,

    /// UDP destination port of VXLAN packets (1-65535). Default 8472, the Linux kernel's and
    /// flannel's traditional port; 4789 is the IANA-assigned one. Firewalls between nodes must
    /// allow it.
    #[serde(default = "default_vxlan_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// When true, peers on the same L2 segment get direct routes (no encapsulation) and VXLAN
    /// is used only for peers across a router, like Calico's CrossSubnet or flannel's
    /// DirectRouting. Default false: VXLAN to every peer.
    #[serde(default)]
    pub cross_subnet: bool,
}

fn default_vni() -> i32 {
    1
}

fn default_vxlan_port() -> i32 {
    8472
}

impl Default for OverlaySpec {
    fn default() -> Self {
        Self {
            vni: default_vni(),
            port: default_vxlan_port(),
            cross_subnet: false,
        }
    }
}

/// Observed state of a PodNetwork, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodNetworkStatus {
    /// Current state: Ready (every selected node programmed), Degraded (some nodes failing),
    /// SubnetsExhausted (no free node subnet left in cidr). Each carries a CamelCase reason and
    /// the observedGeneration it describes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = schema::conditions)]
    pub conditions: Vec<Condition>,

    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Number of nodes matching spec.nodeSelector.
    #[serde(default)]
    pub selected_nodes: i32,

    /// Number of selected nodes that have a NodeSubnet (a subnet allocated).
    #[serde(default)]
    pub allocated_nodes: i32,

    /// Number of selected nodes whose agent reported Programmed=True for the current spec.
    #[serde(default)]
    pub programmed_nodes: i32,

    /// Node subnets of cidr in use.
    #[serde(default)]
    pub subnets_allocated: i64,

    /// Node subnets of cidr still free (at most 2^63 − 1 is shown).
    #[serde(default)]
    pub subnets_free: i64,

    /// The network's address families, primary (cidr's) first: [IPv4], [IPv6], or both for a
    /// dual-stack network, as a Service's spec.ipFamilies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2), inner(length(max = 4)))]
    pub ip_families: Vec<String>,

    /// Node subnets of secondaryCidr in use (dual-stack networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_subnets_allocated: Option<i64>,

    /// Node subnets of secondaryCidr still free (dual-stack networks; at most 2^63 − 1 is
    /// shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_subnets_free: Option<i64>,

    /// The pod MTU in use (the smallest one nodes report), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_mtu: Option<i32>,
}

/// One pod range of a network, parsed: a CIDR and the prefix length of its node slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodRange {
    /// `cidr` or `secondaryCidr`.
    pub cidr: IpNet,
    /// `nodeSubnetPrefixLength` or `secondaryNodeSubnetPrefixLength`.
    pub prefix_length: u8,
}

impl PodRange {
    /// A range from its spec fields, checked: the CIDR parses, and the prefix length is larger
    /// than the CIDR's and at most [`MAX_NODE_PREFIX_V4`] or [`MAX_NODE_PREFIX_V6`].
    ///
    /// # Errors
    /// When the CIDR does not parse or the prefix length does not fit.
    pub fn parse(cidr_field: &str, prefix_length: i32) -> Result<PodRange, Error> {
        let net = cidr::parse_cidr(cidr_field)?;
        let max = match Family::of(&net) {
            Family::V4 => MAX_NODE_PREFIX_V4,
            Family::V6 => MAX_NODE_PREFIX_V6,
        };
        let bad = Error::SubnetPrefixLength {
            cidr: net,
            prefix_length: u8::try_from(prefix_length).unwrap_or(u8::MAX),
        };
        let prefix_length = u8::try_from(prefix_length)
            .ok()
            .filter(|p| *p <= max)
            .ok_or(bad)?;
        cidr::subnet_capacity(net, prefix_length)?;
        Ok(PodRange {
            cidr: net,
            prefix_length,
        })
    }

    /// The range's address family.
    #[must_use]
    pub fn family(&self) -> Family {
        Family::of(&self.cidr)
    }

    /// How many node subnets the range holds.
    #[must_use]
    pub fn capacity(&self) -> u128 {
        cidr::subnet_capacity(self.cidr, self.prefix_length).unwrap_or(0)
    }
}

/// A spec field that does not parse, named by its path.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{field}: {source}")]
pub struct SpecError {
    /// The field's path, e.g. `spec.secondaryCidr`.
    pub field: &'static str,
    /// Why it does not parse.
    pub source: Error,
}

impl PodNetworkSpec {
    /// `spec.cidr` parsed, for the consumers that handle IPv4 only.
    ///
    /// # Errors
    /// When the CIDR is not a canonical IPv4 CIDR (an IPv6 range included).
    pub fn parsed_cidr(&self) -> Result<Ipv4Net, Error> {
        cidr::parse_ipv4_cidr(&self.cidr)
    }

    /// The primary range: `spec.cidr` and `spec.nodeSubnetPrefixLength`.
    ///
    /// # Errors
    /// When either is invalid (admission normally prevents this), naming the field.
    pub fn primary_range(&self) -> Result<PodRange, SpecError> {
        PodRange::parse(&self.cidr, self.node_subnet_prefix_length).map_err(|source| {
            let field = match source {
                Error::SubnetPrefixLength { .. } | Error::SubnetIndexOutOfRange { .. } => {
                    "spec.nodeSubnetPrefixLength"
                }
                _ => "spec.cidr",
            };
            SpecError { field, source }
        })
    }

    /// The secondary range of a dual-stack network: `spec.secondaryCidr` and
    /// `spec.secondaryNodeSubnetPrefixLength`; `None` for a single-stack network.
    ///
    /// # Errors
    /// When either is invalid, only one is set, or the range has the primary's family.
    pub fn secondary_range(&self) -> Result<Option<PodRange>, SpecError> {
        let field = "spec.secondaryCidr";
        match (
            &self.secondary_cidr,
            self.secondary_node_subnet_prefix_length,
        ) {
            (None, None) => Ok(None),
            (Some(c), Some(p)) => {
                let range = PodRange::parse(c, p).map_err(|source| {
                    let field = match source {
                        Error::SubnetPrefixLength { .. } => "spec.secondaryNodeSubnetPrefixLength",
                        _ => field,
                    };
                    SpecError { field, source }
                })?;
                let primary = cidr::parse_cidr(&self.cidr).ok();
                if primary.is_some_and(|p| Family::of(&p) == range.family()) {
                    return Err(SpecError {
                        field,
                        source: Error::SameFamily {
                            primary: self.cidr.clone(),
                            secondary: c.clone(),
                        },
                    });
                }
                Ok(Some(range))
            }
            _ => Err(SpecError {
                field,
                source: Error::SecondaryIncomplete,
            }),
        }
    }

    /// Every range of the network, primary first.
    ///
    /// # Errors
    /// As [`Self::primary_range`] and [`Self::secondary_range`].
    pub fn ranges(&self) -> Result<Vec<PodRange>, SpecError> {
        let mut ranges = vec![self.primary_range()?];
        ranges.extend(self.secondary_range()?);
        Ok(ranges)
    }

    /// The overlay settings in force: `spec.overlay`, or the defaults when it is omitted.
    #[must_use]
    pub fn overlay_or_default(&self) -> OverlaySpec {
        self.overlay.clone().unwrap_or_default()
    }

    /// The BGP block in force: `spec.routed.bgp` when the mode is Routed (admission refuses
    /// `routed` in other modes, but an agent must not start BGP for a stored object that has
    /// it). Resolve it for a node with [`BgpSpec::for_node`].
    #[must_use]
    pub fn bgp(&self) -> Option<&BgpSpec> {
        self.routed
            .as_ref()
            .and_then(|r| r.bgp.as_ref())
            .filter(|_| self.mode == PodNetworkMode::Routed)
    }

    /// The pod MTU for a node whose underlay interface has `underlay_mtu` (see [`mtu`]).
    #[must_use]
    pub fn effective_mtu(&self, underlay_mtu: u32) -> u32 {
        mtu::effective_mtu(self.mode == PodNetworkMode::Overlay, self.mtu, underlay_mtu)
    }
}
