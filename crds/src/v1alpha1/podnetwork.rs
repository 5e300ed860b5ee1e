//! `PodNetwork`: the platform team's description of one pod network (see `docs/api.md`).
//!
//! Written by people (or GitOps); read by the operator, which allocates node subnets and rolls
//! node status up into `status`, and by every agent, which derives its dataplane from it.

// `printcolumn(type_ = "string", ...)` repeats key-value pairs across columns, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::address::{self, Field};
use super::{BgpSpec, MAX_CIDR_LENGTH, MAX_CIDR_LIST_ITEMS, default_true};
use crate::{Error, cidr, mtu, schema};

/// `spec.cidr` in admission messages.
const POD_CIDR: Field = Field {
    name: "cidr",
    good: "a private range that no node or Service address is in",
    example: "10.244.0.0/16",
};

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
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!isCIDR(self.cidr) || cidr(self.cidr).ip().family() != 4 || self.nodeSubnetPrefixLength > cidr(self.cidr).prefixLength()")
        .message(Message::Expression("'nodeSubnetPrefixLength must be larger than the prefix length of cidr ' + self.cidr + ' and at most 30: each node gets a /nodeSubnetPrefixLength slice of cidr (for a /16, 24 gives 256 nodes 254 pod addresses each)'".into()))
        .field_path(".nodeSubnetPrefixLength"),
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
    /// The IPv4 address range pods of this network get addresses from, in CIDR notation with
    /// no host bits set (e.g. 10.244.0.0/16). Every selected node receives one
    /// /nodeSubnetPrefixLength slice of it. It must not overlap the node (underlay) network,
    /// the Service CIDR or another PodNetwork, nor 0.0.0.0/8, loopback 127.0.0.0/8, link-local
    /// 169.254.0.0/16, multicast 224.0.0.0/4 or 240.0.0.0/4. IPv6 is not supported in v1alpha1.
    /// Immutable: to change the range, create a new PodNetwork and move nodes to it.
    #[schemars(length(max = MAX_CIDR_LENGTH))]
    #[schemars(transform = schema::rules(address::ipv4_cidr(&POD_CIDR)))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("cidr is immutable: create a new PodNetwork with the new range and move nodes to it")
    )]
    pub cidr: String,

    /// Prefix length of each node's pod subnet (e.g. 24 gives every node a /24 of cidr: 254
    /// usable pod addresses per node, and 256 nodes in a /16). Must be larger than the prefix
    /// length of cidr and at most 30. Choose it for the largest number of pods one node runs,
    /// since a node never gets a second subnet. Immutable: node subnets already handed out
    /// would no longer tile the range.
    #[schemars(range(min = 1, max = 30))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("nodeSubnetPrefixLength is immutable: create a new PodNetwork with the new subnet size and move nodes to it")
    )]
    pub node_subnet_prefix_length: i32,

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

    /// Node subnets of cidr still free.
    #[serde(default)]
    pub subnets_free: i64,

    /// The pod MTU in use (the smallest one nodes report), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_mtu: Option<i32>,
}

impl PodNetworkSpec {
    /// `spec.cidr` parsed.
    ///
    /// # Errors
    /// When the CIDR is not a canonical IPv4 CIDR (admission normally prevents this).
    pub fn parsed_cidr(&self) -> Result<Ipv4Net, Error> {
        cidr::parse_ipv4_cidr(&self.cidr)
    }

    /// `spec.nodeSubnetPrefixLength` as a prefix length, checked against `cidr`.
    ///
    /// # Errors
    /// When it is not larger than the CIDR's prefix length or exceeds 32.
    pub fn subnet_prefix_length(&self) -> Result<u8, Error> {
        let net = self.parsed_cidr()?;
        let prefix_length = u8::try_from(self.node_subnet_prefix_length).map_err(|_| {
            Error::SubnetPrefixLength {
                cidr: net,
                prefix_length: u8::MAX,
            }
        })?;
        cidr::subnet_capacity(net, prefix_length)?;
        Ok(prefix_length)
    }

    /// How many node subnets the network holds.
    ///
    /// # Errors
    /// When cidr or nodeSubnetPrefixLength is invalid.
    pub fn subnet_capacity(&self) -> Result<u64, Error> {
        cidr::subnet_capacity(self.parsed_cidr()?, self.subnet_prefix_length()?)
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
