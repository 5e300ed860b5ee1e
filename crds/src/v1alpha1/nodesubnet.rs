//! `NodeSubnet`: one node's share of one PodNetwork.
//!
//! The operator creates one per (PodNetwork, selected node) and writes its spec; the agent on
//! that node writes its status. Every other agent of the network watches NodeSubnets to learn
//! its peers, so the spec carries everything needed to program a path to the node without
//! asking it. One object per node keeps a node join at O(1) API writes: nothing lists all
//! peers.

// `printcolumn(type_ = "string", ...)` repeats key-value pairs across columns, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::address::{self, Families, Field};
use super::{
    MAX_BGP_PEERS, MAX_CIDR_LENGTH, MAX_IP_LENGTH, MAX_MESSAGE_LENGTH, MAX_OBJECT_NAME_LENGTH,
};
use crate::vtep::MacAddr;
use crate::{Error, cidr, schema};

/// The finalizer a node's agent holds on its own NodeSubnet, so that it can clean its node up
/// before the object goes. The operator releases it only when the Node is gone (the agent's
/// credentials are bound to the Node and went with it).
pub const AGENT_FINALIZER: &str = "causeway.dev/node-agent";

/// Pattern of a VTEP MAC: six lowercase hex pairs separated by colons.
pub const MAC_PATTERN: &str = "^([0-9a-f]{2}:){5}[0-9a-f]{2}$";

/// `spec.cidr` in admission messages.
const NODE_CIDR: Field = Field {
    name: "cidr",
    good: "a slice of the PodNetwork's cidr (the operator writes it)",
    example: "10.244.3.0/24",
};

/// `spec.secondaryCidr` in admission messages.
const SECONDARY_NODE_CIDR: Field = Field {
    name: "secondaryCidr",
    good: "a slice of the PodNetwork's secondaryCidr (the operator writes it)",
    example: "fd00:10:244:3::/64",
};

/// `spec.secondaryNodeAddress` in admission messages.
const SECONDARY_NODE_ADDRESS: Field = Field {
    name: "secondaryNodeAddress",
    good: "the node's InternalIP of the other family on the underlay network",
    example: "fd00:192:168:1::11",
};

/// `spec.nodeAddress` in admission messages.
const NODE_ADDRESS: Field = Field {
    name: "nodeAddress",
    good: "the node's InternalIP on the underlay network",
    example: "192.168.1.11",
};

/// One node's pod subnet in one PodNetwork and how peers reach it. The spec is written by the
/// Causeway operator (do not edit it by hand); the status is written by the node's agent.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "causeway.dev",
    version = "v1alpha1",
    kind = "NodeSubnet",
    plural = "nodesubnets",
    singular = "nodesubnet",
    shortname = "nsub",
    category = "causeway",
    status = "NodeSubnetStatus",
    derive = "PartialEq",
    selectable = ".spec.network",
    selectable = ".spec.nodeName",
    doc = "NodeSubnet is one node's slice of a PodNetwork's address range and what other nodes need to reach it (the node's underlay address, its VXLAN VTEP MAC). The Causeway operator creates one per selected node and writes the spec; the agent on that node programs the dataplane and reports status.conditions (Programmed, Ready). Other nodes' agents watch NodeSubnets to learn their peers.",
    printcolumn(
        name = "NODE",
        type_ = "string",
        json_path = ".spec.nodeName",
        description = "The node this subnet belongs to"
    ),
    printcolumn(
        name = "NETWORK",
        type_ = "string",
        json_path = ".spec.network",
        description = "The PodNetwork this subnet is part of",
        priority = 1
    ),
    printcolumn(
        name = "CIDR",
        type_ = "string",
        json_path = ".spec.cidr",
        description = "The node's pod subnet"
    ),
    printcolumn(
        name = "SECONDARY",
        type_ = "string",
        json_path = ".spec.secondaryCidr",
        description = "The node's subnet of the network's secondaryCidr (dual-stack)",
        priority = 1
    ),
    printcolumn(
        name = "ADDRESS",
        type_ = "string",
        json_path = ".spec.nodeAddress",
        description = "The node's underlay address"
    ),
    printcolumn(
        name = "PROGRAMMED",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].status",
        description = "Status of the Programmed condition"
    ),
    printcolumn(
        name = "REASON",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].reason",
        description = "Why the node is (not) Programmed: kubectl describe shows the message",
        priority = 1
    ),
    printcolumn(
        name = "ROUTES",
        type_ = "integer",
        json_path = ".status.routes",
        description = "Routes the agent holds for its peers",
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
    validation = Rule::new("!has(oldSelf.secondaryCidr) || has(self.secondaryCidr)")
        .message("secondaryCidr cannot be removed: pods hold addresses from it; delete the NodeSubnet to release it")
        .field_path(".secondaryCidr"),
    validation = Rule::new("!has(self.secondaryCidr) || !isCIDR(self.cidr) || !isCIDR(self.secondaryCidr) || cidr(self.cidr).ip().family() != cidr(self.secondaryCidr).ip().family()")
        .message("secondaryCidr must be of the other address family than cidr: a dual-stack node has one IPv4 and one IPv6 subnet")
        .field_path(".secondaryCidr"),
    validation = Rule::new("!has(self.secondaryNodeAddress) || !isIP(self.nodeAddress) || !isIP(self.secondaryNodeAddress) || ip(self.nodeAddress).family() != ip(self.secondaryNodeAddress).family()")
        .message("secondaryNodeAddress must be of the other address family than nodeAddress: it is the node's InternalIP of the other family")
        .field_path(".secondaryNodeAddress")
)]
pub struct NodeSubnetSpec {
    /// Name of the PodNetwork this subnet belongs to. Immutable.
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("network is immutable: the operator deletes and recreates a NodeSubnet to move a node to another PodNetwork")
    )]
    pub network: String,

    /// Name of the Node this subnet belongs to. Immutable.
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("nodeName is immutable: a NodeSubnet belongs to one node for its whole life")
    )]
    pub node_name: String,

    /// The node's pod subnet, a /nodeSubnetPrefixLength slice of the PodNetwork's cidr (e.g.
    /// 10.244.3.0/24 or fd00:10:244:3::/64). Its first address is the node's pod bridge
    /// (gateway) address. Immutable: pods hold addresses from it; the operator releases a
    /// subnet only by deleting the object. No host bits set, and no overlap with a reserved
    /// block (0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4, 240.0.0.0/4; ::/8,
    /// fe80::/10, ff00::/8).
    #[schemars(length(max = MAX_CIDR_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_cidr(&NODE_CIDR, Families::Any("fd00:10:244:3::/64"))))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("cidr is immutable: pods hold addresses from it; delete the NodeSubnet to release it")
    )]
    pub cidr: String,

    /// The node's address on the underlay network (its InternalIP of the family of the
    /// PodNetwork's cidr, else its first InternalIP): the next hop of direct routes and the
    /// outer destination of VXLAN packets sent to this node. It must be an address a host can
    /// own: not in a reserved block (0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4,
    /// 240.0.0.0/4, 255.255.255.255; ::/8, fe80::/10, ff00::/8).
    #[schemars(length(max = MAX_IP_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_address(&NODE_ADDRESS, Families::Any("fd00:192:168:1::11"))))]
    pub node_address: String,

    /// The node's slice of the PodNetwork's secondaryCidr (dual-stack networks), e.g.
    /// fd00:10:244:3::/64: of the other family than cidr, the same rules. Set once (when the
    /// node joins a dual-stack network, or when secondaryCidr is added to its network), then
    /// immutable like cidr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CIDR_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_cidr(&SECONDARY_NODE_CIDR, Families::Any("10.245.3.0/24"))))]
    #[x_kube(
        validation = Rule::new("self == oldSelf")
            .message("secondaryCidr is immutable once set: pods hold addresses from it; delete the NodeSubnet to release it")
    )]
    pub secondary_cidr: Option<String>,

    /// The node's InternalIP of the other family than nodeAddress, when it has one (a
    /// dual-stack underlay): the next hop of routes to secondaryCidr on peers of that family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_IP_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_address(&SECONDARY_NODE_ADDRESS, Families::Any("192.168.1.11"))))]
    pub secondary_node_address: Option<String>,

    /// MAC address of the node's VXLAN device (Overlay mode only), six lowercase hex pairs such
    /// as 0e:c2:20:78:cb:53. Derived from the node name so that it is known before the device
    /// exists and never changes: 0e followed by the low 5 bytes of the FNV-1a-64 hash of the
    /// name. Must be a locally administered unicast address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 17), pattern(MAC_PATTERN))]
    #[x_kube(
        validation = Rule::new("!self.matches('^[0-9a-f]{2}:') || self.matches('^[0-9a-f][26ae]:')")
            .message("vtepMac must be a locally administered unicast MAC: its first byte must end in 2, 6, a or e (e.g. 0e:...)")
    )]
    pub vtep_mac: Option<String>,
}

/// Observed state of a NodeSubnet, written by the agent on spec.nodeName.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSubnetStatus {
    /// Current state: Programmed (the agent applied this node's dataplane for the current
    /// spec; reason ApplyFailed with the failing operation when not) and Ready (programmed and
    /// every BGP session up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = schema::conditions)]
    pub conditions: Vec<Condition>,

    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Routes the agent has programmed for peers' pod subnets.
    #[serde(default)]
    pub routes: i32,

    /// Permanent neighbour (ARP) entries the agent has programmed (Overlay: peer VTEPs).
    #[serde(default)]
    pub neighbours: i32,

    /// VXLAN forwarding database entries the agent has programmed (Overlay only).
    #[serde(default)]
    pub fdb_entries: i32,

    /// The MTU of this node's pod interfaces, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_mtu: Option<i32>,

    /// The on-link prefix of the node's underlay interface, as the agent found it (the
    /// interface holding spec.nodeAddress, e.g. 192.168.50.0/24). Flat mode, and Routed mode
    /// without BGP, need every node's address inside it; the operator checks that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CIDR_LENGTH))]
    pub underlay_prefix: Option<String>,

    /// The IPv6 on-link prefix of the node's underlay interface (the prefix of
    /// spec.secondaryNodeAddress on the interface holding spec.nodeAddress, e.g.
    /// fd00:50::/64), on a dual-stack network whose node has an IPv6 address there; absent
    /// otherwise. OverlayGateway RouteToNodes gives IPv6 client routes via the nodes whose
    /// prefix lies in an IPv6 clientCidrs entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_CIDR_LENGTH))]
    pub secondary_underlay_prefix: Option<String>,

    /// State of this node's BGP sessions (Routed mode with BGP), one entry per router.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_BGP_PEERS))]
    pub bgp_sessions: Vec<BgpSessionStatus>,
}

/// The state of one BGP session of a node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpSessionStatus {
    /// The router's IP address (a peer of spec.routed.bgp.peers).
    #[schemars(length(max = MAX_IP_LENGTH))]
    pub peer_address: String,

    /// The router's autonomous system number.
    pub peer_asn: i64,

    /// The BGP finite-state-machine state: Idle, Connect, Active, OpenSent, OpenConfirm or
    /// Established. Only Established exchanges routes.
    #[schemars(length(max = 32))]
    pub state: String,

    /// Why the session is not Established (last error or notification), or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = MAX_MESSAGE_LENGTH))]
    pub message: String,

    /// When the session entered its current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,

    /// Routes this router sent that the node's speaker holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes_received: Option<i64>,

    /// Routes the node's speaker sends this router (the node's own subnet: 1 when
    /// Established).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes_advertised: Option<i64>,

    /// On a dual-stack network (IPv6 unicast on the same session): IPv6 routes this router
    /// sent that the node's speaker holds. routesReceived counts IPv4 routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_routes_received: Option<i64>,

    /// On a dual-stack network: IPv6 routes the node's speaker sends this router (the node's
    /// own IPv6 subnet: 1 when Established). routesAdvertised counts IPv4 routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_routes_advertised: Option<i64>,
}

/// A NodeSubnet's address fields parsed once: what the operator's and the agent's decisions
/// work with, instead of each consumer re-parsing the spec's strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedSubnet {
    /// `spec.cidr`: the node's pod subnet.
    pub cidr: Ipv4Net,
    /// `spec.nodeAddress`: the node's underlay address.
    pub node_address: Ipv4Addr,
    /// `spec.vtepMac`, or the MAC the operator derives from `spec.nodeName` when it is unset
    /// (NodeSubnets written before the field existed; see [`crate::vtep::vtep_mac`]).
    pub vtep_mac: MacAddr,
}

/// A NodeSubnet spec field that does not parse, named by its path.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{field}: {source}")]
pub struct FieldError {
    /// The field's path, e.g. `spec.nodeAddress`.
    pub field: &'static str,
    /// Why it does not parse.
    pub source: Error,
}

/// A NodeSubnet's addresses of both families parsed: what the operator's IPAM works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedAddresses {
    /// `spec.cidr`.
    pub cidr: IpNet,
    /// `spec.nodeAddress`.
    pub node_address: IpAddr,
    /// `spec.secondaryCidr`.
    pub secondary_cidr: Option<IpNet>,
    /// `spec.secondaryNodeAddress`.
    pub secondary_node_address: Option<IpAddr>,
}

impl NodeSubnetSpec {
    /// The address fields of both families parsed, the first bad one named.
    ///
    /// # Errors
    /// When `spec.cidr`, `spec.nodeAddress`, `spec.secondaryCidr` or
    /// `spec.secondaryNodeAddress` does not parse.
    pub fn parse_addresses(&self) -> Result<ParsedAddresses, FieldError> {
        let field = |field: &'static str| move |source| FieldError { field, source };
        Ok(ParsedAddresses {
            cidr: cidr::parse_cidr(&self.cidr).map_err(field("spec.cidr"))?,
            node_address: cidr::parse_addr(&self.node_address)
                .map_err(field("spec.nodeAddress"))?,
            secondary_cidr: self
                .secondary_cidr
                .as_deref()
                .map(cidr::parse_cidr)
                .transpose()
                .map_err(field("spec.secondaryCidr"))?,
            secondary_node_address: self
                .secondary_node_address
                .as_deref()
                .map(cidr::parse_addr)
                .transpose()
                .map_err(field("spec.secondaryNodeAddress"))?,
        })
    }

    /// Every address field parsed, the first bad one named.
    ///
    /// # Errors
    /// When `spec.cidr`, `spec.nodeAddress` or `spec.vtepMac` does not parse.
    pub fn parse(&self) -> Result<ParsedSubnet, FieldError> {
        let field = |field: &'static str| move |source| FieldError { field, source };
        Ok(ParsedSubnet {
            cidr: self.parsed_cidr().map_err(field("spec.cidr"))?,
            node_address: self
                .parsed_node_address()
                .map_err(field("spec.nodeAddress"))?,
            vtep_mac: self
                .parsed_vtep_mac()
                .map_err(field("spec.vtepMac"))?
                .unwrap_or_else(|| crate::vtep::vtep_mac(&self.node_name)),
        })
    }

    /// `spec.cidr` parsed.
    ///
    /// # Errors
    /// When it is not a canonical IPv4 CIDR.
    pub fn parsed_cidr(&self) -> Result<Ipv4Net, Error> {
        cidr::parse_ipv4_cidr(&self.cidr)
    }

    /// `spec.nodeAddress` parsed.
    ///
    /// # Errors
    /// When it is not an IPv4 address.
    pub fn parsed_node_address(&self) -> Result<Ipv4Addr, Error> {
        cidr::parse_ipv4_addr(&self.node_address)
    }

    /// `spec.vtepMac` parsed, if set.
    ///
    /// # Errors
    /// When it is set but not a lowercase colon-separated MAC.
    pub fn parsed_vtep_mac(&self) -> Result<Option<MacAddr>, Error> {
        self.vtep_mac.as_deref().map(str::parse).transpose()
    }
}
