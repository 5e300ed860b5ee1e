//! The BGP block of a Routed PodNetwork (`spec.routed.bgp`): the nodes' AS, the routers they
//! peer with, and the options of those sessions and of the routes the nodes announce.
//!
//! Written by people as part of a PodNetwork; read by every agent of the network, which
//! resolves it for its own node ([`BgpSpec::for_node`] in [`crate::bgp`]) and renders the BGP
//! speaker's configuration from the result. The CEL rules come from [`super::bgp_rules`];
//! every new field is optional, with defaults that keep the behaviour of objects written
//! before it existed (graceful restart aside, which is on by default).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::address::{self, Families, Field};
use super::{MAX_BGP_PEERS, MAX_IP_LENGTH, MAX_OBJECT_NAME_LENGTH, bgp_rules, default_true};
use crate::bgp::community::{MAX_COMMUNITIES, MAX_COMMUNITY_LENGTH};
use crate::bgp::password::DEFAULT_SECRET_KEY;
use crate::schema::{self, MAX_LABEL_KEY_LENGTH};

/// `spec.routed.bgp.peers[].address` in admission messages.
const PEER_ADDRESS: Field = Field {
    name: "routed.bgp.peers[].address",
    good: "the router's address on the node network",
    example: "192.168.10.1",
};

/// Longest key of a Secret's data.
const MAX_SECRET_KEY_LENGTH: usize = 253;

/// BGP configuration of a Routed PodNetwork. Each selected node opens a session to each
/// router in peers (restricted by a peer's nodeSelector) and advertises its pod subnet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.holdTimeSeconds == 0 || self.keepaliveSeconds < self.holdTimeSeconds")
        .message("keepaliveSeconds must be less than holdTimeSeconds: use about a third of the hold time, or set holdTimeSeconds to 0 to disable keepalives (keepaliveSeconds defaults to 30, holdTimeSeconds to 90)")
        .field_path(".keepaliveSeconds"),
    validation = bgp_rules::ebgp_multihop_only_for_ebgp(),
    validation = bgp_rules::route_reflector_client_only_for_ibgp()
)]
pub struct BgpSpec {
    /// The autonomous system number the nodes use (1-4294967295; private ranges are
    /// 64512-65534 and 4200000000-4294967294). The reserved AS numbers 23456 (AS_TRANS),
    /// 65535 and 4294967295 are refused. All nodes of the network share it, except nodes
    /// that carry the label nodeAsnLabel names.
    #[schemars(range(min = 1, max = 4_294_967_295_i64))]
    #[x_kube(validation = bgp_rules::asn("routed.bgp.asn"))]
    pub asn: i64,

    /// A node label key (e.g. causeway.dev/asn). A selected node carrying this label uses the
    /// label's value, a decimal AS number, as its own AS instead of asn: for designs with one
    /// AS per node or per rack. Absent: every node uses asn. Whether a peer is iBGP or eBGP
    /// then depends on the node; admission checks ebgpMultihop and routeReflectorClient
    /// against asn, and each agent checks them again against its node's AS (a setting that
    /// does not apply to a node's session is ignored there and reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LABEL_KEY_LENGTH))]
    #[x_kube(validation = bgp_rules::label_key("routed.bgp.nodeAsnLabel"))]
    pub node_asn_label: Option<String>,

    /// The routers every node peers with (at least 1, at most 32, addresses unique as
    /// written; the agent also refuses one IPv6 address written in two ways).
    #[schemars(length(max = MAX_BGP_PEERS))]
    #[x_kube(
        validation = Rule::new("size(self) > 0")
            .message("routed.bgp.peers must list at least one router: add a peer, or remove routed.bgp to use direct routes only"),
        validation = address::unique("routed.bgp.peers", "address", "list each router once, and restrict the nodes that peer with it by its nodeSelector")
    )]
    pub peers: Vec<BgpPeer>,

    /// BGP hold time in seconds, proposed to every peer: the session is declared down when
    /// nothing is heard for this long. 0 disables keepalives, otherwise 3-65535 (RFC 4271).
    /// Default 90.
    #[serde(default = "default_hold_time")]
    #[schemars(range(min = 0, max = 65535))]
    #[x_kube(
        validation = Rule::new("self == 0 || self >= 3")
            .message("holdTimeSeconds must be 0 (no keepalives) or between 3 and 65535 (RFC 4271)")
    )]
    pub hold_time_seconds: i32,

    /// Seconds between BGP keepalive messages (1-21845). Must be less than holdTimeSeconds
    /// unless that is 0; usually a third of it. Default 30. Keepalives are sent at least every
    /// third of the negotiated hold time (RFC 4271), so a larger value acts as that third.
    #[serde(default = "default_keepalive")]
    #[schemars(range(min = 1, max = 21845))]
    pub keepalive_seconds: i32,

    /// Graceful restart (RFC 4724): when a node's BGP speaker restarts (agent upgrade, crash),
    /// its routers keep the node's routes for up to restartTimeSeconds while the session comes
    /// back, so pod traffic keeps flowing. Absent: enabled, with 120 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<GracefulRestartSpec>,

    /// Attributes of the routes each node originates (its pod subnet). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<BgpAdvertiseSpec>,
}

fn default_hold_time() -> i32 {
    90
}

fn default_keepalive() -> i32 {
    30
}

/// Graceful restart (RFC 4724) of the nodes' BGP sessions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GracefulRestartSpec {
    /// Whether nodes announce the graceful restart capability, so routers keep a restarting
    /// node's routes. Default true. Set false for routers that mishandle it, or to have routes
    /// withdrawn at once when a node's speaker stops.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// How long routers keep a restarting node's routes, in seconds (1-4095: the field is 12
    /// bits in RFC 4724). Default 120. Ignored when enabled is false.
    #[serde(default = "default_restart_time")]
    #[schemars(range(min = 1, max = 4095))]
    pub restart_time_seconds: i32,
}

fn default_restart_time() -> i32 {
    120
}

impl Default for GracefulRestartSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            restart_time_seconds: default_restart_time(),
        }
    }
}

/// Attributes the nodes attach to the routes they originate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BgpAdvertiseSpec {
    /// BGP communities attached to every route a node originates, for the routers' policies
    /// (e.g. tagging pod routes to filter or prefer them). Each is a standard community
    /// "a:b" (two numbers 0-65535, RFC 1997) or a large community "a:b:c" (three numbers
    /// 0-4294967295, RFC 8092; use these with 4-byte AS numbers), in decimal without leading
    /// zeros. At most 16, each listed once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMMUNITIES), inner(length(max = MAX_COMMUNITY_LENGTH)))]
    #[schemars(transform = schema::item_rules(bgp_rules::community("routed.bgp.advertise.communities[]")))]
    #[x_kube(
        validation = bgp_rules::unique_values("routed.bgp.advertise.communities", "list each community once")
    )]
    pub communities: Vec<String>,

    /// LOCAL_PREF (0-4294967295) of the routes a node originates. BGP sends it to iBGP peers
    /// only (peers whose AS is the node's); eBGP peers never see it. Higher is preferred.
    /// Absent: the speaker's default (100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 4_294_967_295_i64))]
    pub local_preference: Option<i64>,
}

/// One BGP router the nodes peer with.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeer {
    /// Address of the router (e.g. the top-of-rack switch's address on the node network),
    /// IPv4 or IPv6, and an address a host can own: not in 0.0.0.0/8, loopback 127.0.0.0/8,
    /// link-local 169.254.0.0/16, multicast 224.0.0.0/4 or 240.0.0.0/4 (nor
    /// 255.255.255.255), nor in ::/8, fe80::/10 or ff00::/8. A node peers with an IPv6
    /// address from its own IPv6 address (NodeSubnet secondaryNodeAddress, so the network
    /// must be dual-stack), and that session carries both families.
    #[schemars(length(max = MAX_IP_LENGTH))]
    #[schemars(transform = schema::rules(address::ip_address(&PEER_ADDRESS, Families::Any("fd00:50::1"))))]
    pub address: String,

    /// The router's autonomous system number (1-4294967295, not 23456, 65535 or
    /// 4294967295). Equal to bgp.asn for iBGP.
    #[schemars(range(min = 1, max = 4_294_967_295_i64))]
    #[x_kube(validation = bgp_rules::asn("routed.bgp.peers[].asn"))]
    pub asn: i64,

    /// TCP port of the router's BGP listener (1-65535). Default 179. Not used when passive is
    /// true.
    #[serde(default = "default_bgp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Which nodes peer with this router, by node label (e.g. the nodes of one rack).
    /// Absent: every node of the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::label_selector)]
    pub node_selector: Option<LabelSelector>,

    /// When true, nodes never connect to this router; they only accept its connection (on TCP
    /// port 179 of the node's address). For routers configured to dial the nodes, e.g. with
    /// dynamic neighbours or listen ranges. Default false: nodes connect and accept.
    #[serde(default)]
    pub passive: bool,

    /// For a router that is not directly connected to the nodes (e.g. a route server reached
    /// through a router): the TTL of the session's packets, 2-255. eBGP only (the peer's asn
    /// differs from bgp.asn): iBGP sessions may cross routers without it. Absent: the router
    /// must be directly connected (TTL 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    pub ebgp_multihop: Option<i32>,

    /// When true, each node acts as a route reflector for this router (RFC 4456): the node
    /// passes on iBGP-learned routes to it. iBGP only (the peer's asn equals bgp.asn). Default
    /// false.
    #[serde(default)]
    pub route_reflector_client: bool,

    /// TCP MD5 authentication of the session (RFC 2385), with a key shared with the router.
    /// The key is read from a Secret, never written here. Absent: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPasswordSpec>,

    /// Bidirectional Forwarding Detection (RFC 5880) towards this router: detects a dead link
    /// or router within milliseconds instead of the BGP hold time. The router must run BFD
    /// for this session too. Absent: no BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdSpec>,
}

fn default_bgp_port() -> i32 {
    179
}

/// Where a BGP session's TCP MD5 key is kept.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpPasswordSpec {
    /// The Secret and key holding the password. The Secret lives in the namespace Causeway
    /// runs in (the node agents' namespace). The value must be 1-80 bytes of printable ASCII
    /// without '"' and '\', and no trailing newline; the agent refuses any other value.
    pub secret_ref: SecretKeyRef,
}

/// A key of a Secret in the namespace Causeway runs in.
#[derive(
    KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (a DNS subdomain, e.g. tor-bgp), in the namespace Causeway runs in.
    #[schemars(length(max = MAX_OBJECT_NAME_LENGTH))]
    #[x_kube(
        validation = bgp_rules::object_name("routed.bgp.peers[].password.secretRef.name", "Secret", "tor-bgp")
    )]
    pub name: String,

    /// Key of the password in the Secret's data (letters, digits, '-', '_' and '.'). Default
    /// "password".
    #[serde(default = "default_secret_key")]
    #[schemars(length(max = MAX_SECRET_KEY_LENGTH))]
    #[x_kube(
        validation = bgp_rules::secret_key("routed.bgp.peers[].password.secretRef.key", "password")
    )]
    pub key: String,
}

fn default_secret_key() -> String {
    DEFAULT_SECRET_KEY.to_owned()
}

/// BFD (RFC 5880) settings of one BGP session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BfdSpec {
    /// Whether the session runs BFD. Default true, so `bfd: {}` turns it on with the defaults.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Interval between BFD packets, sent and expected, in milliseconds (10-60000). Default
    /// 300. The session goes down after multiplier intervals without a packet.
    #[serde(default = "default_bfd_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub min_interval_milliseconds: i32,

    /// How many intervals without a BFD packet declare the router down (1-255). Default 3:
    /// with the default interval, a failure is detected in 900 ms.
    #[serde(default = "default_bfd_multiplier")]
    #[schemars(range(min = 1, max = 255))]
    pub multiplier: i32,
}

fn default_bfd_interval() -> i32 {
    300
}

fn default_bfd_multiplier() -> i32 {
    3
}

impl Default for BfdSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_interval_milliseconds: default_bfd_interval(),
            multiplier: default_bfd_multiplier(),
        }
    }
}
