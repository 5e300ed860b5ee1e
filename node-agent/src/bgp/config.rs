//! The speaker's configuration (pure data): what [`peering`](super::peering) derives from the
//! PodNetwork and [`Speaker`](super::Speaker) renders into BIRD's configuration
//! ([`crate::bird::render`], which also makes the timers valid and orders the peers).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The well-known BGP port.
pub const BGP_PORT: u16 = 179;

/// One BGP neighbour: a router this node peers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerConfig {
    /// The peer's address; the speaker connects to it.
    pub address: Ipv4Addr,
    /// The peer's AS number; its OPEN must carry it. Equal to the local AS for iBGP.
    pub asn: u32,
    /// The peer's TCP port ([`BGP_PORT`] normally).
    pub port: u16,
}

/// Everything the speaker needs; [`Speaker::update`](super::Speaker::update) takes a whole
/// new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// This node's AS number (4-octet ASNs are fine).
    pub local_asn: u32,
    /// BGP identifier: the node address.
    pub router_id: Ipv4Addr,
    /// Hold time offered in our OPEN, in seconds: 0 for no keepalives, else at least 3 (1 and
    /// 2 are raised to 3). The session uses the smaller of ours and the peer's.
    pub hold_time: u16,
    /// Keepalive interval in seconds, at most a third of the hold time (larger values are
    /// lowered to it); BIRD sends keepalives at this interval.
    pub keepalive: u16,
    /// The neighbours; one session each (an address listed twice counts once, first wins).
    pub peers: Vec<PeerConfig>,
    /// Prefixes to announce: this node's pod subnet, usually one.
    pub advertise: Vec<Ipv4Net>,
    /// NEXT_HOP of the announced routes: the node address.
    pub next_hop: Ipv4Addr,
}
