//! Nexthop objects under the agent's IPv4 routes via a gateway.
//!
//! **Why.** The kernel shares one `fib_info` between IPv4 routes with the same next hop. To
//! find the one to share, `fib_create_info` hashes a new route's next-hop attributes, and for
//! a route with its own gateway the hash covers the device but **not the gateway**. Every peer
//! route of a node leaves by the same device (the VXLAN device, or the underlay) with a
//! gateway of its own, so all of them fall into one hash bucket, and each insert compares
//! itself with every route before it. Measured on kernel 6.18 (docs/benchmarks.md "Peer
//! routes through nexthop objects"): 53 µs per route insert at 1,000 routes, 535 µs at
//! 20,000, 94% of it in `fib_create_info` and its `memcmp`; programming N peers costs O(N²).
//! A route naming a nexthop object (`RTA_NH_ID`, kernel ≥ 5.3) is hashed by the object's id
//! instead, and a nexthop plus its route cost 33–48 µs at every size. IPv6 routes share no
//! next hops this way (flat, 26 µs), so they stay plain routes.
//!
//! **What.** Each IPv4 route of the agent with a gateway gets a nexthop object of its own
//! (`ip nexthop add id ID via GW dev DEV [onlink] proto 249`), and the route names it (`ip
//! route add DST nhid ID proto 249`). One object per route, never shared: a route's gateway
//! changes by replacing its object, and a route is deleted before its object (deleting the
//! object alone would remove the route too, but without telling the route table's watchers). Ids come from the range [`FIRST_ID`]..=[`LAST_ID`] (the
//! route protocol 249 in the high byte), and the objects carry protocol 249 too; objects of
//! others are never touched.
//!
//! **Where the ids live.** The destination → id table is read from the routes on every full
//! observation (`RTA_NH_ID` in the route dump) and kept up to date by the agent's own
//! operations in between. On a full observation, objects of ours that no route of ours
//! names (left by an agent that stopped between the object and its route) are deleted.
//!
//! **Fallback.** A kernel without nexthop objects (before 5.3) refuses the first request with
//! `EOPNOTSUPP`; the agent then programs plain gateway routes, as before, for the rest of its
//! life.
//!
//! netlink-packet-route 0.34 has no nexthop messages, so this module holds the small codec
//! for the three the agent sends and reads (`struct nhmsg` and the `NHA_ID`, `NHA_OIF`,
//! `NHA_GATEWAY` attributes), carried over netlink-proto on a second socket.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use ipnet::Ipv4Net;
use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable, NlasIterator,
};
use netlink_sys::{SocketAddr, TokioSocket};
use nix::errno::Errno;
use rtnetlink::proto::ConnectionHandle;

use super::apply::errno_of;
use crate::model::ROUTE_PROTOCOL;

const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
const RTM_GETNEXTHOP: u16 = 106;
const NHA_ID: u16 = 1;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
/// `RTNH_F_ONLINK`: the gateway is on the device without a covering prefix.
const RTNH_F_ONLINK: u32 = 4;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
/// Length of `struct nhmsg`.
const HEADER_LEN: usize = 8;

/// The first id of the agent's nexthop objects: the route protocol in the high byte.
pub const FIRST_ID: u32 = (ROUTE_PROTOCOL as u32) << 24;
/// The last id of the agent's nexthop objects (16,777,216 in all).
pub const LAST_ID: u32 = FIRST_ID | 0x00ff_ffff;

/// One nexthop message (`struct nhmsg` and the attributes the agent uses).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NexthopMessage {
    /// `RTM_NEWNEXTHOP`, `RTM_DELNEXTHOP` or `RTM_GETNEXTHOP`.
    pub kind: u16,
    pub family: u8,
    pub protocol: u8,
    pub flags: u32,
    pub id: Option<u32>,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
}

impl NexthopMessage {
    fn attributes(&self) -> Vec<DefaultNla> {
        let mut out = Vec::new();
        if let Some(id) = self.id {
            out.push(DefaultNla::new(NHA_ID, id.to_ne_bytes().to_vec()));
        }
        if let Some(oif) = self.oif {
            out.push(DefaultNla::new(NHA_OIF, oif.to_ne_bytes().to_vec()));
        }
        match self.gateway {
            Some(IpAddr::V4(ip)) => out.push(DefaultNla::new(NHA_GATEWAY, ip.octets().to_vec())),
            Some(IpAddr::V6(ip)) => out.push(DefaultNla::new(NHA_GATEWAY, ip.octets().to_vec())),
            None => {}
        }
        out
    }

    /// Whether this object is one of the agent's: its protocol and an id in its range.
    pub fn is_ours(&self) -> bool {
        self.protocol == ROUTE_PROTOCOL
            && self.id.is_some_and(|id| (FIRST_ID..=LAST_ID).contains(&id))
    }
}

impl NetlinkSerializable for NexthopMessage {
    fn message_type(&self) -> u16 {
        self.kind
    }

    fn buffer_len(&self) -> usize {
        HEADER_LEN + self.attributes().as_slice().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = 0; // scope: set by the kernel
        buffer[2] = self.protocol;
        buffer[3] = 0;
        buffer[4..8].copy_from_slice(&self.flags.to_ne_bytes());
        self.attributes().as_slice().emit(&mut buffer[HEADER_LEN..]);
    }
}

impl NetlinkDeserializable for NexthopMessage {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        if payload.len() < HEADER_LEN {
            return Err(DecodeError::from(format!(
                "nexthop message of {} bytes, shorter than its header",
                payload.len()
            )));
        }
        let mut message = NexthopMessage {
            kind: header.message_type,
            family: payload[0],
            protocol: payload[2],
            flags: u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]),
            ..NexthopMessage::default()
        };
        for nla in NlasIterator::new(&payload[HEADER_LEN..]) {
            let nla = nla?;
            let value = nla.value();
            match (nla.kind(), value.len()) {
                (NHA_ID, 4) => {
                    message.id = Some(u32::from_ne_bytes(value.try_into().unwrap_or_default()))
                }
                (NHA_OIF, 4) => {
                    message.oif = Some(u32::from_ne_bytes(value.try_into().unwrap_or_default()))
                }
                (NHA_GATEWAY, 4) => {
                    let octets: [u8; 4] = value.try_into().unwrap_or_default();
                    message.gateway = Some(Ipv4Addr::from(octets).into());
                }
                (NHA_GATEWAY, 16) => {
                    let octets: [u8; 16] = value.try_into().unwrap_or_default();
                    message.gateway = Some(Ipv6Addr::from(octets).into());
                }
                _ => {}
            }
        }
        Ok(message)
    }
}

/// A nexthop object of the agent's as read from the kernel: what its route goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub onlink: bool,
}

/// The agent's nexthop objects: the connection, the destination → id table, the next id.
#[derive(Debug)]
pub struct Nexthops {
    handle: ConnectionHandle<NexthopMessage>,
    table: std::sync::Mutex<Table>,
    /// Off once the kernel has refused nexthop objects ([`Nexthops::refused`]).
    enabled: AtomicBool,
}

#[derive(Debug)]
struct Table {
    by_dst: HashMap<Ipv4Net, u32>,
    next: u32,
}

impl Table {
    /// Replaces the table with what a full observation found ([`Nexthops::reset`]).
    fn reset(&mut self, routes: HashMap<Ipv4Net, u32>, used: impl IntoIterator<Item = u32>) {
        let highest = used
            .into_iter()
            .chain(routes.values().copied())
            .filter(|id| (FIRST_ID..=LAST_ID).contains(id))
            .max();
        self.by_dst = routes;
        self.next = match highest {
            Some(id) if id < LAST_ID => id + 1,
            _ => FIRST_ID,
        };
    }

    /// The next id of the range, wrapping at its end.
    fn allocate(&mut self) -> u32 {
        let id = self.next;
        self.next = if id >= LAST_ID { FIRST_ID } else { id + 1 };
        id
    }
}

impl Nexthops {
    /// Starts the connection on `socket` (a second route-netlink socket in the agent's
    /// namespace) as a task on the current runtime.
    pub fn start(socket: TokioSocket) -> Self {
        let (connection, handle, _unsolicited) = rtnetlink::proto::from_socket_with_codec::<
            NexthopMessage,
            _,
            rtnetlink::proto::NetlinkCodec,
        >(socket);
        tokio::spawn(connection);
        Self {
            handle,
            table: std::sync::Mutex::new(Table {
                by_dst: HashMap::new(),
                next: FIRST_ID,
            }),
            enabled: AtomicBool::new(true),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether routes should go through nexthop objects (the kernel has not refused them).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Whether `error` says the kernel has no nexthop objects; if so, they are off from now on.
    pub fn refused(&self, error: &rtnetlink::Error) -> bool {
        let unsupported = matches!(error, rtnetlink::Error::NetlinkError(e)
            if matches!(errno_of(e), Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT));
        if unsupported && self.enabled.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "this kernel has no nexthop objects (Linux 5.3 or later): IPv4 peer routes are plain gateway routes, which cost O(routes) each to insert"
            );
        }
        unsupported
    }

    /// The id of the object under our route to `dst`, if it has one.
    pub fn id_for(&self, dst: Ipv4Net) -> Option<u32> {
        self.table().by_dst.get(&dst).copied()
    }

    /// A fresh id for a new object.
    pub fn allocate(&self) -> u32 {
        self.table().allocate()
    }

    /// Records that our route to `dst` names object `id`.
    pub fn remember(&self, dst: Ipv4Net, id: u32) {
        self.table().by_dst.insert(dst, id);
    }

    /// Forgets the object under our route to `dst`, returning its id.
    pub fn forget(&self, dst: Ipv4Net) -> Option<u32> {
        self.table().by_dst.remove(&dst)
    }

    /// Replaces the table with what a full observation found: our routes' objects, and every
    /// id in use in the namespace (new ids start after the highest of ours).
    pub fn reset(&self, routes: HashMap<Ipv4Net, u32>, used: impl IntoIterator<Item = u32>) {
        self.table().reset(routes, used);
    }

    /// Sends one request and collects the answers; an error answer is the error.
    async fn request(
        &self,
        message: NexthopMessage,
        flags: u16,
    ) -> Result<Vec<NexthopMessage>, rtnetlink::Error> {
        let mut request = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(message),
        );
        request.header.flags = NLM_F_REQUEST | flags;
        request.finalize();
        let mut answers = self
            .handle
            .request(request, SocketAddr::new(0, 0))
            .map_err(|_| rtnetlink::Error::RequestFailed)?;
        let mut out = Vec::new();
        while let Some(answer) = answers.next().await {
            match answer.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(rtnetlink::Error::NetlinkError(e));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Creates (`exclusive`: only if the id is free) or creates-or-replaces object `id`:
    /// via `gateway` on link `oif`, with the agent's protocol.
    pub async fn set(
        &self,
        id: u32,
        gateway: Ipv4Addr,
        oif: u32,
        onlink: bool,
        exclusive: bool,
    ) -> Result<(), rtnetlink::Error> {
        let message = NexthopMessage {
            kind: RTM_NEWNEXTHOP,
            family: AF_INET,
            protocol: ROUTE_PROTOCOL,
            flags: if onlink { RTNH_F_ONLINK } else { 0 },
            id: Some(id),
            oif: Some(oif),
            gateway: Some(gateway.into()),
        };
        let mode = if exclusive { NLM_F_EXCL } else { NLM_F_REPLACE };
        self.request(message, NLM_F_ACK | NLM_F_CREATE | mode)
            .await
            .map(drop)
    }

    /// Deletes object `id` (and, in the kernel, every route that names it).
    pub async fn delete(&self, id: u32) -> Result<(), rtnetlink::Error> {
        let message = NexthopMessage {
            kind: RTM_DELNEXTHOP,
            family: AF_UNSPEC,
            id: Some(id),
            ..NexthopMessage::default()
        };
        self.request(message, NLM_F_ACK).await.map(drop)
    }

    /// Every nexthop object in the namespace, ours and others'.
    pub async fn dump(&self) -> Result<Vec<NexthopMessage>, rtnetlink::Error> {
        let message = NexthopMessage {
            kind: RTM_GETNEXTHOP,
            family: AF_UNSPEC,
            ..NexthopMessage::default()
        };
        self.request(message, NLM_F_DUMP).await
    }
}

/// What object `message` (one of ours) routes through.
pub fn hop_of(message: &NexthopMessage) -> Hop {
    Hop {
        gateway: message.gateway,
        oif: message.oif,
        onlink: message.flags & RTNH_F_ONLINK != 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AF_INET6: u8 = 10;

    fn roundtrip(message: &NexthopMessage) -> NexthopMessage {
        let mut buffer = vec![0u8; message.buffer_len()];
        message.serialize(&mut buffer);
        let mut header = NetlinkHeader::default();
        header.message_type = message.kind;
        NexthopMessage::deserialize(&header, &buffer).expect("parses")
    }

    #[test]
    fn an_object_via_an_ipv4_gateway_survives_encoding_and_decoding() {
        let message = NexthopMessage {
            kind: RTM_NEWNEXTHOP,
            family: AF_INET,
            protocol: ROUTE_PROTOCOL,
            flags: RTNH_F_ONLINK,
            id: Some(FIRST_ID + 7),
            oif: Some(3),
            gateway: Some(Ipv4Addr::new(10, 244, 2, 0).into()),
        };
        // nhmsg (8) + three attributes of 8 bytes each.
        assert_eq!(message.buffer_len(), 32);
        let back = roundtrip(&message);
        assert_eq!(back, message);
        assert!(back.is_ours());
        assert_eq!(
            hop_of(&back),
            Hop {
                gateway: Some(Ipv4Addr::new(10, 244, 2, 0).into()),
                oif: Some(3),
                onlink: true
            }
        );
    }

    #[test]
    fn ipv6_gateways_and_bare_deletes_decode_too() {
        let six = NexthopMessage {
            kind: RTM_NEWNEXTHOP,
            family: AF_INET6,
            protocol: 3,
            id: Some(12),
            oif: Some(2),
            gateway: Some("fd00::1".parse().expect("address")),
            ..NexthopMessage::default()
        };
        assert_eq!(roundtrip(&six), six);
        assert!(!six.is_ours(), "another protocol and id range");
        let delete = NexthopMessage {
            kind: RTM_DELNEXTHOP,
            id: Some(FIRST_ID),
            ..NexthopMessage::default()
        };
        assert_eq!(delete.buffer_len(), 16);
        assert_eq!(roundtrip(&delete), delete);
    }

    #[test]
    fn short_messages_are_an_error_not_a_panic() {
        let header = NetlinkHeader::default();
        assert!(NexthopMessage::deserialize(&header, &[0; 4]).is_err());
        // A truncated attribute after a full header.
        assert!(NexthopMessage::deserialize(&header, &[2, 0, 249, 0, 0, 0, 0, 0, 8, 0]).is_err());
    }

    #[test]
    fn ours_means_our_protocol_and_our_id_range() {
        let mut m = NexthopMessage {
            protocol: ROUTE_PROTOCOL,
            id: Some(FIRST_ID - 1),
            ..NexthopMessage::default()
        };
        assert!(!m.is_ours());
        m.id = Some(LAST_ID);
        assert!(m.is_ours());
        m.protocol = 4;
        assert!(!m.is_ours());
    }

    #[test]
    fn ids_start_after_the_highest_of_ours_and_wrap_at_the_end_of_the_range() {
        let mut table = Table {
            by_dst: HashMap::new(),
            next: LAST_ID - 1,
        };
        assert_eq!(table.allocate(), LAST_ID - 1);
        assert_eq!(table.allocate(), LAST_ID);
        assert_eq!(table.allocate(), FIRST_ID);
        assert_eq!(FIRST_ID, 0xf900_0000);

        let dst: Ipv4Net = "10.244.2.0/24".parse().expect("prefix");
        // Others' ids (below the range) do not move the start; ours do.
        table.reset(HashMap::from([(dst, FIRST_ID + 4)]), [7, FIRST_ID + 9]);
        assert_eq!(table.allocate(), FIRST_ID + 10);
        assert_eq!(table.by_dst.get(&dst), Some(&(FIRST_ID + 4)));
        table.reset(HashMap::new(), [3]);
        assert_eq!(table.allocate(), FIRST_ID);
        table.reset(HashMap::new(), [LAST_ID]);
        assert_eq!(table.allocate(), FIRST_ID);
    }
}
