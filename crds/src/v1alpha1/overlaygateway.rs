//! `OverlayGateway`: how machines that are not nodes reach pod addresses.
//!
//! Written by platform engineers; the operator validates it against its PodNetwork, elects the
//! active bridge host and renders the routes clients need into `status.clientRoutes`; agents on
//! the selected nodes (and on `ClientJoin` clients) program forwarding.

// `printcolumn(type_ = "string", ...)` repeats key-value pairs across columns, which clippy
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::address::{self, Families, Field};
use super::{
    MAX_CIDR_LENGTH, MAX_CIDR_LIST_ITEMS, MAX_GATEWAY_CLIENTS, MAX_IP_LENGTH, MAX_MESSAGE_LENGTH,
    MAX_OBJECT_NAME_LENGTH,
};
use crate::schema;

/// Most routes rendered into `status.clientRoutes` (one per node subnet, plus the pod CIDR).
pub const MAX_CLIENT_ROUTES: usize = 5001;

/// Pattern of a client name: a DNS-1123 label.
pub const CLIENT_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// `spec.clientCidrs[]` in admission messages.
const CLIENT_CIDR: Field = Field {
    name: "clientCidrs[]",
    good: "the range the clients' own addresses are in",
    example: "192.168.50.0/24",
};

/// The IPv6 example of `spec.clientCidrs[]` in admission messages.
const CLIENT_CIDR6_EXAMPLE: &str = "fd00:50::/64";

/// `spec.bridgeHosts.vip` in admission messages.
const VIP: Field = Field {
    name: "bridgeHosts.vip",
    good: "an unused address on the bridge hosts' underlay segment",
    example: "192.168.1.250",
};

/// The IPv6 example of `spec.bridgeHosts.vip` and `secondaryVip` in admission messages.
const VIP6_EXAMPLE: &str = "fd00:50::250";

/// `spec.bridgeHosts.secondaryVip` in admission messages.
const SECONDARY_VIP: Field = Field {
    name: "bridgeHosts.secondaryVip",
    good: "an unused address of the other family on the bridge hosts' underlay segment",
    example: "fd00:50::250",
};

/// `spec.clientJoin.clients[].address` in admission messages.
const CLIENT_ADDRESS: Field = Field {
    name: "clientJoin.clients[].address",
    good: "the client's address on the underlay network",
    example: "192.168.50.10",
};

/// `spec.clientJoin.clients[].secondaryOverlayAddress` in admission messages.
const CLIENT_SECONDARY_OVERLAY_ADDRESS: Field = Field {
    name: "clientJoin.clients[].secondaryOverlayAddress",
    good: "an unused address of the other family outside the pod ranges and the underlay",
    example: "fd00:250::10",
};

/// `spec.clientJoin.clients[].overlayAddress` in admission messages.
const CLIENT_OVERLAY_ADDRESS: Field = Field {
    name: "clientJoin.clients[].overlayAddress",
    good: "an unused address outside the pod range and the underlay",
    example: "10.250.0.10",
};

/// Desired state of an OverlayGateway: which PodNetwork to open to which non-node machines,
/// and by which strategy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "causeway.dev",
    version = "v1alpha1",
    kind = "OverlayGateway",
    plural = "overlaygateways",
    singular = "overlaygateway",
    shortname = "ogw",
    category = "causeway",
    status = "OverlayGatewayStatus",
    derive = "PartialEq",
    doc = "OverlayGateway lets machines that are not Kubernetes nodes (clients, routers, VMs on the physical network) reach pod addresses of a PodNetwork. Choose a strategy: RouteToNodes (clients route pod subnets to the nodes), BridgeHosts (a virtual IP held by one of several bridge nodes, with failover) or ClientJoin (the Causeway agent runs on the client and joins the overlay). status.clientRoutes lists the exact routes to install on clients or routers.",
    printcolumn(
        name = "STRATEGY",
        type_ = "string",
        json_path = ".spec.strategy",
        description = "RouteToNodes, BridgeHosts or ClientJoin"
    ),
    printcolumn(
        name = "NETWORK",
        type_ = "string",
        json_path = ".spec.network",
        description = "The PodNetwork made reachable"
    ),
    printcolumn(
        name = "ACTIVE",
        type_ = "string",
        json_path = ".status.activeHost",
        description = "The bridge host holding the VIP (BridgeHosts)"
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
        description = "Why the gateway is (not) Ready: kubectl describe shows the message"
    ),
    printcolumn(
        name = "VIP",
        type_ = "string",
        json_path = ".spec.bridgeHosts.vip",
        description = "The virtual IP the bridge hosts hold (BridgeHosts)",
        priority = 1
    ),
    printcolumn(
        name = "JOINED",
        type_ = "string",
        json_path = ".status.clients[?(@.joined==true)].name",
        description = "ClientJoin clients whose agent is joined",
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
    validation = Rule::new("!has(self.routeToNodes) || self.strategy == 'RouteToNodes'")
        .message("spec.routeToNodes may only be set when strategy is RouteToNodes: remove it or set strategy: RouteToNodes")
        .field_path(".routeToNodes")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.bridgeHosts) || self.strategy == 'BridgeHosts'")
        .message("spec.bridgeHosts may only be set when strategy is BridgeHosts: remove it or set strategy: BridgeHosts")
        .field_path(".bridgeHosts")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.clientJoin) || self.strategy == 'ClientJoin'")
        .message("spec.clientJoin may only be set when strategy is ClientJoin: remove it or set strategy: ClientJoin")
        .field_path(".clientJoin")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("self.strategy != 'BridgeHosts' || has(self.bridgeHosts)")
        .message("strategy BridgeHosts requires spec.bridgeHosts with a nodeSelector (which nodes may hold the VIP) and a vip")
        .field_path(".bridgeHosts")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.strategy != 'ClientJoin' || has(self.clientJoin)")
        .message("strategy ClientJoin requires spec.clientJoin with the list of clients")
        .field_path(".clientJoin")
        .reason(Reason::FieldValueRequired)
)]
pub struct OverlayGatewaySpec {
    /// Name of the PodNetwork whose pod addresses become reachable.
    #[schemars(length(min = 1, max = MAX_OBJECT_NAME_LENGTH))]
    pub network: String,

    /// How clients reach pods. RouteToNodes: clients (or their router) route each node's pod
    /// subnet to that node; status.clientRoutes lists the routes, and in Routed mode with BGP
    /// the routers learn them. BridgeHosts: clients route the whole pod CIDR to a virtual IP
    /// held by one of the selected bridge nodes, which forwards into the pod network and hands
    /// the VIP to another node on failure. ClientJoin: the Causeway agent runs on each listed
    /// client, which joins the overlay as a member without becoming a node.
    pub strategy: GatewayStrategy,

    /// Address ranges of the non-node machines that will talk to pods (e.g. 192.168.50.0/24).
    /// Nodes route return traffic for these ranges back through the gateway (unless snat is
    /// true) and accept forwarded traffic from them. At most 64 CIDRs, each with no host bits
    /// set and no overlap with 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 or
    /// 240.0.0.0/4 (IPv4), ::/8, fe80::/10 or ff00::/8 (IPv6). IPv6 ranges (e.g. fd00:50::/64)
    /// serve a network with an IPv6 range: with RouteToNodes, nodes whose IPv6 underlay prefix
    /// lies in one get IPv6 client routes; with BridgeHosts, replies to them return through
    /// the active host's IPv6 address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CIDR_LIST_ITEMS), inner(length(max = MAX_CIDR_LENGTH)))]
    #[schemars(transform = schema::item_rules(address::ip_cidr(&CLIENT_CIDR, Families::Any(CLIENT_CIDR6_EXAMPLE))))]
    pub client_cidrs: Vec<String>,

    /// BridgeHosts only: when true the active bridge host masquerades client traffic to its own
    /// address, so pods' replies return to it without any route to clientCidrs (pods then see
    /// the bridge host's address, not the client's). Both families: IPv6 clientCidrs (with
    /// `bridgeHosts.secondaryVip`) are masqueraded to the host's IPv6 address. Default false:
    /// nodes route clientCidrs via the active bridge host and pods see real client addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snat: bool,

    /// Settings for strategy RouteToNodes. Allowed only with that strategy; may be omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_to_nodes: Option<RouteToNodesSpec>,

    /// Settings for strategy BridgeHosts. Required with that strategy, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_hosts: Option<BridgeHostsSpec>,

    /// Settings for strategy ClientJoin. Required with that strategy, forbidden otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_join: Option<ClientJoinSpec>,
}

/// How non-node machines reach pods: RouteToNodes, BridgeHosts or ClientJoin (see
/// spec.strategy).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum GatewayStrategy {
    /// Clients route each node's pod subnet to that node.
    RouteToNodes,
    /// Clients route the pod CIDR to a failover VIP on bridge nodes.
    BridgeHosts,
    /// Clients run the agent and join the overlay.
    ClientJoin,
}

/// RouteToNodes settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteToNodesSpec {
    /// Which nodes accept and forward client traffic for their pods, by node label; clients
    /// get routes only to these nodes' subnets. Absent: every node of the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::label_selector)]
    pub node_selector: Option<LabelSelector>,
}

/// BridgeHosts settings: which nodes may hold the virtual IP, and the VIP itself.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.secondaryVip) || !isIP(self.vip) || !isIP(self.secondaryVip) || ip(self.vip).family() != ip(self.secondaryVip).family()")
        .message(Message::Expression("'bridgeHosts.secondaryVip ' + self.secondaryVip + ' is of the same address family as vip ' + self.vip + ': on a dual-stack network vip is of the family of the PodNetwork cidr and secondaryVip of its secondaryCidr (e.g. vip: 192.168.1.250, secondaryVip: fd00:50::250)'".into()))
        .field_path(".secondaryVip")
)]
pub struct BridgeHostsSpec {
    /// Which nodes may act as bridge host, by node label (e.g. nodes with a leg on the client
    /// network). One of them holds the VIP at a time; if it fails, another takes over and
    /// announces the move with gratuitous ARP (IPv4) and unsolicited neighbour advertisements
    /// (IPv6). Required; an empty selector selects every node.
    #[schemars(transform = schema::label_selector)]
    pub node_selector: LabelSelector,

    /// The virtual IP clients route the pod CIDR to, on the bridge hosts' underlay network
    /// (e.g. 192.168.1.250): of the family of the PodNetwork's `cidr` (an IPv6 VIP such as
    /// fd00:50::250 for an IPv6 one). It must be unused and on-link for the clients.
    /// An address a host can own: not in 0.0.0.0/8, loopback 127.0.0.0/8, link-local
    /// 169.254.0.0/16, multicast 224.0.0.0/4 or 240.0.0.0/4 (nor 255.255.255.255), ::/8,
    /// fe80::/10 or ff00::/8.
    #[schemars(length(max = MAX_IP_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_address(&VIP, Families::Any(VIP6_EXAMPLE))))]
    pub vip: String,

    /// Dual-stack networks: the VIP of the other family (e.g. fd00:50::250 beside an IPv4
    /// `vip`), which clients route the PodNetwork's `secondaryCidr` to. The active host holds
    /// both VIPs, so both move together. Optional: without it, clients reach pods over the
    /// family of `vip` only. The same rules as `vip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_IP_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_address(&SECONDARY_VIP, Families::Any("192.168.1.250"))))]
    pub secondary_vip: Option<String>,

    /// How long the active host's claim on the VIP lasts without renewal, in seconds (2-60,
    /// default 2). The active host renews ten times per duration and keeps the VIP in the
    /// kernel for half of it, so a host whose agent dies loses the VIP by itself; another
    /// candidate takes over when the claim lapses, or sooner when the VIP stops answering
    /// ARP while renewals have stopped. Shorter is faster failover and more API writes
    /// (5 per second at the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // `int32` in the schema: the API server warns about formats it does not know (`uint32`).
    #[schemars(with = "Option<i32>", range(min = 2, max = 60))]
    pub lease_duration_seconds: Option<u32>,
}

impl BridgeHostsSpec {
    /// Default `leaseDurationSeconds`.
    pub const DEFAULT_LEASE_DURATION_SECONDS: u32 = 2;

    /// `leaseDurationSeconds` or its default.
    #[must_use]
    pub fn lease_duration_seconds(&self) -> u32 {
        self.lease_duration_seconds
            .unwrap_or(Self::DEFAULT_LEASE_DURATION_SECONDS)
            .clamp(2, 60)
    }
}

/// ClientJoin settings: the machines that join the overlay.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientJoinSpec {
    /// The clients (1-64). Each runs the Causeway agent in client mode with its name; names
    /// and addresses must be unique.
    #[schemars(length(max = MAX_GATEWAY_CLIENTS))]
    #[x_kube(
        validation = Rule::new("size(self) > 0")
            .message("clientJoin.clients must list at least one client"),
        validation = address::unique("clientJoin.clients", "name", "give every client its own name"),
        validation = address::unique("clientJoin.clients", "address", "each client joins from its own address"),
        validation = address::unique("clientJoin.clients", "overlayAddress", "pods reach each client at its own overlayAddress")
    )]
    pub clients: Vec<GatewayClient>,
}

/// One machine that joins the overlay as a non-node member.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.secondaryOverlayAddress) || !isIP(self.overlayAddress) || !isIP(self.secondaryOverlayAddress) || ip(self.overlayAddress).family() != ip(self.secondaryOverlayAddress).family()")
        .message(Message::Expression("'clientJoin.clients[].secondaryOverlayAddress ' + self.secondaryOverlayAddress + ' is of the same address family as overlayAddress ' + self.overlayAddress + ': on a dual-stack network overlayAddress is of the family of the PodNetwork cidr and secondaryOverlayAddress of its secondaryCidr (e.g. overlayAddress: 10.250.0.10, secondaryOverlayAddress: fd00:250::10)'".into()))
        .field_path(".secondaryOverlayAddress")
)]
pub struct GatewayClient {
    /// The client's name (a DNS-1123 label such as laptop-1); the agent on the client is
    /// started with it, and its VTEP MAC is derived from it.
    #[schemars(length(min = 1, max = 63), pattern(CLIENT_NAME_PATTERN))]
    pub name: String,

    /// The client's address on the underlay network: nodes send VXLAN packets for this
    /// client there. Of the family the nodes' tunnels use (their `nodeAddress`): IPv6 (e.g.
    /// fd00:50::10) on an IPv6 underlay.
    /// An address a host can own: not in 0.0.0.0/8, loopback 127.0.0.0/8, link-local
    /// 169.254.0.0/16, multicast 224.0.0.0/4 or 240.0.0.0/4 (nor 255.255.255.255), ::/8,
    /// fe80::/10 or ff00::/8.
    #[schemars(length(max = MAX_IP_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_address(&CLIENT_ADDRESS, Families::Any("fd00:50::10"))))]
    pub address: String,

    /// The client's address inside the overlay (e.g. 10.250.0.10): the agent puts it on the
    /// client's VXLAN device, pods see the client's traffic come from it and reach the client
    /// at it. It must be outside the pod range and differ from `address` (nodes route it into
    /// the tunnel, so it cannot also be the tunnel's endpoint). Of the family of the
    /// PodNetwork's `cidr` (IPv6, e.g. fd00:250::10, for an IPv6 network). The same rules as
    /// `address`.
    #[schemars(length(max = MAX_IP_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_address(&CLIENT_OVERLAY_ADDRESS, Families::Any("fd00:250::10"))))]
    pub overlay_address: String,

    /// Dual-stack networks: the client's overlay address of the other family (e.g.
    /// fd00:250::10 beside an IPv4 `overlayAddress`), outside the PodNetwork's `secondaryCidr`:
    /// the agent puts it on the client's VXLAN device too, and pods reach the client at it.
    /// Optional: without it, the client talks to pods over the family of `overlayAddress`
    /// only. The same rules as `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_IP_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_address(&CLIENT_SECONDARY_OVERLAY_ADDRESS, Families::Any("10.250.0.10"))))]
    pub secondary_overlay_address: Option<String>,
}

/// Observed state of an OverlayGateway, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverlayGatewayStatus {
    /// Current state: Ready (clients can reach pods) with reasons such as GatewayReady,
    /// NetworkNotFound or NoEligibleHost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = schema::conditions)]
    pub conditions: Vec<Condition>,

    /// The metadata.generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// BridgeHosts: the node currently holding the VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_OBJECT_NAME_LENGTH))]
    pub active_host: Option<String>,

    /// BridgeHosts: when the VIP last moved to another node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover_time: Option<Time>,

    /// BridgeHosts: why the VIP last moved (a CamelCase reason such as HostUnresponsive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub last_failover_reason: Option<String>,

    /// The routes a client or its router must install, one `ip route` command per line, ready
    /// to paste (e.g. `ip route add 10.244.1.0/24 via 192.168.1.11`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CLIENT_ROUTES), inner(length(max = 128)))]
    pub client_routes: Vec<String>,

    /// ClientJoin: the state of each listed client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_GATEWAY_CLIENTS))]
    pub clients: Vec<GatewayClientStatus>,
}

/// The state of one ClientJoin client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClientStatus {
    /// The client's name (from spec.clientJoin.clients).
    #[schemars(length(max = 63))]
    pub name: String,

    /// Whether the client's agent has joined: nodes have programmed it as a peer and it reports
    /// its routes to the pod CIDR in place.
    #[serde(default)]
    pub joined: bool,

    /// The client's VTEP MAC (derived from its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 17))]
    pub vtep_mac: Option<String>,

    /// Why the client has not joined, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = MAX_MESSAGE_LENGTH))]
    pub message: String,

    /// When the client last joined or left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}
