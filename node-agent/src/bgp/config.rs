//! The speaker's configuration (pure data): what [`peering`](super::peering) derives from the
//! PodNetwork and [`Speaker`](super::Speaker) renders into BIRD's configuration
//! ([`crate::bird::render`], which also makes the timers valid and orders the peers).
//!
//! A peer's address is IPv4 or IPv6 (issue #18): a session with an IPv6 peer starts from the
//! node's IPv6 address ([`SpeakerConfig::local6`]) and carries the same families as one with
//! an IPv4 peer (IPv4 unicast, and IPv6 unicast on a dual-stack network).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The well-known BGP port.
pub const BGP_PORT: u16 = 179;

/// One BGP neighbour: a router this node peers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's address; the speaker connects to it, from the node's address of the same
    /// family.
    pub address: IpAddr,
    /// The peer's AS number; its OPEN must carry it. Equal to the local AS for iBGP.
    pub asn: u32,
    /// The peer's TCP port ([`BGP_PORT`] normally).
    pub port: u16,
    /// The session's options (`spec.routed.bgp.peers[]`).
    pub options: PeerOptions,
}

impl PeerConfig {
    /// A peer with the default options: active, directly connected, no password, no BFD.
    #[must_use]
    pub fn new(address: impl Into<IpAddr>, asn: u32, port: u16) -> Self {
        Self {
            address: address.into(),
            asn,
            port,
            options: PeerOptions::default(),
        }
    }
}

/// What a session does beyond address, AS and port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerOptions {
    /// Only accept the peer's connection, never connect.
    pub passive: bool,
    /// eBGP to a router that is not directly connected: the TTL (2-255).
    pub multihop: Option<u8>,
    /// iBGP: this node reflects routes to the peer (RFC 4456).
    pub route_reflector_client: bool,
    /// The TCP MD5 key (RFC 2385), read from its Secret.
    pub password: Option<Md5Key>,
    /// BFD on the session.
    pub bfd: Option<causeway_crds::bgp::Bfd>,
}

/// A TCP MD5 key: printable ASCII without `"` and `\` (checked when read from its Secret),
/// never shown by `Debug`, so no log line carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Md5Key(pub String);

impl std::fmt::Debug for Md5Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Md5Key(<redacted>)")
    }
}

/// A configured peer this node cannot open a session with (its password Secret is missing
/// or unusable, or it is at an IPv6 address and the node has none): reported in the
/// NodeSubnet's status, never given to BIRD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnusablePeer {
    pub address: IpAddr,
    pub asn: u32,
    /// Why, naming the field and the fix.
    pub why: String,
}

/// What the node's own routes carry, and graceful restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerOptions {
    /// Graceful restart's restart time in seconds (RFC 4724), `None` when off.
    pub graceful_restart: Option<u16>,
    /// Communities on the node's routes.
    pub communities: Vec<causeway_crds::bgp::Community>,
    /// LOCAL_PREF of the node's routes (sent to iBGP peers only).
    pub local_preference: Option<u32>,
}

impl Default for SpeakerOptions {
    /// Graceful restart on with 120 s, nothing attached to the routes.
    fn default() -> Self {
        Self {
            graceful_restart: Some(DEFAULT_RESTART_TIME),
            communities: Vec::new(),
            local_preference: None,
        }
    }
}

/// What a dual-stack node announces and learns over IPv6 (the `ipv6` channel of every
/// session, whatever the family of the peer's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Unicast {
    /// Prefixes to announce: this node's IPv6 pod subnet (NodeSubnet `spec.secondaryCidr`).
    pub advertise: Vec<Ipv6Net>,
    /// NEXT_HOP of the announced routes: the node's IPv6 underlay address (NodeSubnet
    /// `spec.secondaryNodeAddress`).
    pub next_hop: Ipv6Addr,
    /// Only routes inside this range are imported: the PodNetwork's `spec.secondaryCidr`.
    pub range: Ipv6Net,
}

/// The restart time routers keep the node's routes for when nothing else is configured.
pub const DEFAULT_RESTART_TIME: u16 = 120;

/// Everything the speaker needs; [`Speaker::update`](super::Speaker::update) takes a whole
/// new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// This node's AS number (4-octet ASNs are fine).
    pub local_asn: u32,
    /// BGP identifier: the node's IPv4 address (also for sessions with IPv6 peers); on a
    /// node without one, its IPv6 address folded into 32 bits ([`crate::bgp::peering`]).
    pub router_id: Ipv4Addr,
    /// Hold time offered in our OPEN, in seconds: 0 for no keepalives, else at least 3 (1 and
    /// 2 are raised to 3). The session uses the smaller of ours and the peer's.
    pub hold_time: u16,
    /// Keepalive interval in seconds, at most a third of the hold time (larger values are
    /// lowered to it); BIRD sends keepalives at this interval.
    pub keepalive: u16,
    /// The neighbours; one session each (an address listed twice counts once, first wins).
    pub peers: Vec<PeerConfig>,
    /// IPv4 prefixes to announce: this node's IPv4 pod subnet, usually one (none on an IPv6
    /// network).
    pub advertise: Vec<Ipv4Net>,
    /// NEXT_HOP of the announced IPv4 routes, and the local address of sessions with IPv4
    /// peers: the node's IPv4 address. `None` on a node without one (an IPv6-only underlay):
    /// then no session carries IPv4 unicast and no IPv4 peer gets a session.
    pub next_hop: Option<Ipv4Addr>,
    /// The node's IPv6 address (NodeSubnet `spec.nodeAddress` or `spec.secondaryNodeAddress`,
    /// whichever is IPv6): the local address of sessions with IPv6 peers. `None` when the node has none; then no IPv6 peer gets a
    /// session (each is in [`Self::unusable`]).
    pub local6: Option<Ipv6Addr>,
    /// IPv6 unicast on the same sessions (MP-BGP, RFC 4760) for a dual-stack network; `None`
    /// for IPv4 only.
    pub ipv6: Option<Ipv6Unicast>,
    /// Graceful restart and what the node's routes carry.
    pub options: SpeakerOptions,
    /// Peers of this node that cannot be configured, with why (not rendered).
    pub unusable: Vec<UnusablePeer>,
    /// The node label whose value is `local_asn` (`spec.routed.bgp.nodeAsnLabel`), `None`
    /// when it is `spec.routed.bgp.asn`; for messages (not rendered).
    pub asn_label: Option<String>,
    /// Peer settings that do not apply to this node's sessions and are ignored, each in
    /// words naming the field; for the NodeSubnet's status (not rendered).
    pub ignored: Vec<String>,
}

impl SpeakerConfig {
    /// This node's side of its sessions, for a router's administrator: "address
    /// 192.168.50.12, AS 65020 (from node label causeway.dev/asn)"; with sessions to IPv6
    /// peers also the node's IPv6 address ("address 192.168.50.12 (IPv6 peers: fd00:50::12),
    /// AS ...").
    #[must_use]
    pub fn local_side(&self) -> String {
        let source = match &self.asn_label {
            Some(key) => format!("from node label {key}"),
            None => "spec.routed.bgp.asn".to_owned(),
        };
        let address = match (self.next_hop, self.local6) {
            (Some(v4), Some(local6)) if self.peers.iter().any(|p| p.address.is_ipv6()) => {
                format!("{v4} (IPv6 peers: {local6})")
            }
            (Some(v4), _) => v4.to_string(),
            (None, Some(v6)) => v6.to_string(),
            (None, None) => "none".to_owned(),
        };
        format!("address {address}, AS {} ({source})", self.local_asn)
    }

    /// The node's address sessions with `peer` start from: its IPv4 address for an IPv4
    /// peer, its IPv6 address for an IPv6 one (`None` when it has none).
    #[must_use]
    pub fn local_address(&self, peer: IpAddr) -> Option<IpAddr> {
        match peer {
            IpAddr::V4(_) => self.next_hop.map(IpAddr::V4),
            IpAddr::V6(_) => self.local6.map(IpAddr::V6),
        }
    }
}
