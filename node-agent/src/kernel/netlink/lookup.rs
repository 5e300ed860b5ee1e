//! What the kernel does with a packet to one address: the route lookup (`ip route get`), and
//! for a VXLAN device the neighbour and FDB entries that give the outer destination. Served
//! as `/debug/route?dst=IP` ([`crate::health`]) so that `kubectl causeway trace --verify`
//! compares the path it computed from the API objects with each node's kernel.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::InfoKind;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use serde::Serialize;

use nix::errno::Errno;

use super::apply::errno_of;
use super::observe::{link_kind, link_name, parse_fdb, parse_neighbour};
use super::{Netlink, NetlinkError};

/// The kernel's answer for one destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lookup {
    pub dst: IpAddr,
    /// The output device (`cw-vx1`, `cw-br0`, `eth0`); `None` for a route without one
    /// (`unreachable`, `blackhole`).
    pub dev: Option<String>,
    /// The next hop, when the route has one.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would pick.
    pub src: Option<IpAddr>,
    /// On a VXLAN device: the MAC the next hop resolves to (a permanent neighbour entry, as
    /// the agent programs them).
    pub neighbour_mac: Option<String>,
    /// On a VXLAN device: the underlay address the FDB entry for that MAC sends to.
    pub fdb_dst: Option<IpAddr>,
    /// Why the kernel has no route at all (`Network is unreachable`), when it has none.
    pub unreachable: Option<String>,
}

impl Netlink {
    /// `ip route get dst`, and on a VXLAN device the neighbour and FDB entries behind it.
    ///
    /// No route at all is an answer too ([`Lookup::unreachable`]).
    ///
    /// # Errors
    /// The kernel refuses the lookup for another reason, or a dump.
    pub async fn lookup(&self, dst: IpAddr) -> Result<Lookup, NetlinkError> {
        let mut message = RouteMessage::default();
        let (family, len, address) = match dst {
            IpAddr::V4(ip) => (AddressFamily::Inet, 32, RouteAddress::Inet(ip)),
            IpAddr::V6(ip) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(ip)),
        };
        message.header.address_family = family;
        message.header.destination_prefix_length = len;
        message
            .attributes
            .push(RouteAttribute::Destination(address));
        let mut found = Lookup {
            dst,
            dev: None,
            gateway: None,
            src: None,
            neighbour_mac: None,
            fdb_dst: None,
            unreachable: None,
        };
        let answer = match self.handle.route().get(message).execute().try_next().await {
            Ok(answer) => answer,
            Err(rtnetlink::Error::NetlinkError(e))
                if matches!(errno_of(&e), Errno::ENETUNREACH | Errno::EHOSTUNREACH) =>
            {
                found.unreachable = Some(errno_of(&e).desc().to_owned());
                return Ok(found);
            }
            Err(e) => return Err((self.dump_error("route lookup"))(e)),
        };
        let Some(answer) = answer else {
            return Ok(found);
        };
        let mut oif = None;
        for attribute in &answer.attributes {
            match attribute {
                RouteAttribute::Oif(i) => oif = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => {
                    found.gateway = Some((*ip).into())
                }
                RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => {
                    found.gateway = Some((*ip).into())
                }
                RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => {
                    found.src = Some((*ip).into())
                }
                RouteAttribute::PrefSource(RouteAddress::Inet6(ip)) => {
                    found.src = Some((*ip).into())
                }
                _ => {}
            }
        }
        let Some(oif) = oif else {
            return Ok(found);
        };
        let links = self.links().await?;
        let Some(link) = links.get(&oif) else {
            return Ok(found);
        };
        found.dev = link_name(link).map(str::to_owned);
        let vxlan = matches!(link_kind(link), Some(InfoKind::Vxlan));
        let (Some(gateway), true, Some(dev)) = (found.gateway, vxlan, found.dev.clone()) else {
            return Ok(found);
        };
        let family = if gateway.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let ours = std::collections::BTreeMap::from([(oif, dev)]);
        let mac = self
            .neighbours(family, Some(oif))
            .await?
            .iter()
            .filter_map(|n| parse_neighbour(n, &ours))
            .find(|n| n.ip == gateway)
            .map(|n| n.mac);
        let Some(mac) = mac else {
            return Ok(found);
        };
        found.neighbour_mac = Some(mac.to_string());
        let fdb = self.neighbours(AddressFamily::Bridge, Some(oif)).await?;
        found.fdb_dst = fdb
            .iter()
            .filter_map(|m| parse_fdb(m, &ours))
            .find(|f| f.mac == mac)
            .map(|f| f.dst);
        Ok(found)
    }
}
