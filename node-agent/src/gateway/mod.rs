//! OverlayGateways on the node: [`elector`] contends for a BridgeHosts VIP (with [`arp`]
//! probes and announcements for an IPv4 VIP, [`ndp`] ones for an IPv6 VIP, both sent on the
//! [`raw`] channel, and [`vips`] handling a gateway's VIPs of both families as one), [`join`]
//! plans ClientJoin tunnels (on nodes and on clients), and [`client`] is the agent's client
//! mode on a machine that is not a node.

pub mod arp;
pub mod client;
pub mod elector;
pub mod join;
pub mod ndp;
pub mod raw;
pub mod vips;
