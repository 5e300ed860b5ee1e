//! ARP for the BridgeHosts VIP: gratuitous announcements when a node takes the VIP, so
//! clients and switches move to it at once, and probes (RFC 5227, sender address 0.0.0.0)
//! that tell whether anyone still answers for the VIP before a node takes it.
//!
//! Frames are built and parsed by the pure functions here (unit-tested); [`announce`] and
//! [`answered`] send and read them on the raw `AF_PACKET` channel of [`super::raw`], in the
//! agent's network namespace. [`super::ndp`] is the same for an IPv6 VIP.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::raw;
use crate::model::Mac;

/// The raw channel's error and `dev`'s MAC, under the names the elector has used.
pub use super::raw::{RawError as ArpError, mac_of};

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
const FRAME_LEN: usize = 42;
const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

/// An ARP frame for IPv4 over Ethernet, broadcast.
fn frame(op: u16, sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&sender_mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP);
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&sender_mac.0);
    f[28..32].copy_from_slice(&sender_ip.octets());
    // Target hardware address: zero in requests; broadcast in a gratuitous reply.
    if op == OP_REPLY {
        f[32..38].copy_from_slice(&BROADCAST);
    }
    f[38..42].copy_from_slice(&target_ip.octets());
    f
}

/// Gratuitous ARP for `ip` at `mac`: a request and a reply, both with sender = target = `ip`
/// (hosts update their caches on either; some only on one).
#[must_use]
pub fn gratuitous(mac: Mac, ip: Ipv4Addr) -> [[u8; FRAME_LEN]; 2] {
    [frame(OP_REQUEST, mac, ip, ip), frame(OP_REPLY, mac, ip, ip)]
}

/// An RFC 5227 probe: who has `ip`? asked from 0.0.0.0, so no cache learns anything.
#[must_use]
pub fn probe(mac: Mac, ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    frame(OP_REQUEST, mac, Ipv4Addr::UNSPECIFIED, ip)
}

/// The sender of `bytes` when it is an ARP packet (request or reply) claiming `ip` as its
/// own address from a MAC other than `own`: someone else holds `ip`.
#[must_use]
pub fn claims(bytes: &[u8], ip: Ipv4Addr, own: Mac) -> Option<Mac> {
    if bytes.len() < FRAME_LEN || bytes[12..14] != ETHERTYPE_ARP {
        return None;
    }
    if bytes[14..16] != [0, 1] || bytes[16..18] != [8, 0] || bytes[18] != 6 || bytes[19] != 4 {
        return None;
    }
    let sender_ip = Ipv4Addr::new(bytes[28], bytes[29], bytes[30], bytes[31]);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[22..28]);
    (sender_ip == ip && Mac(mac) != own).then_some(Mac(mac))
}

/// Announces that `ip` is now at `dev`'s MAC (blocking; run it off the async runtime).
///
/// # Errors
/// When the raw channel cannot be opened or written.
pub fn announce(dev: &str, ip: Ipv4Addr) -> Result<(), ArpError> {
    raw::send_all(dev, |mac| gratuitous(mac, ip).to_vec())
}

/// Whether anyone on `dev`'s segment answers for `ip`: sends `probes` probes `gap` apart and
/// listens until `gap` after the last one. The MAC of the first answer, if any (blocking).
///
/// # Errors
/// When the raw channel cannot be opened or written.
pub fn answered(
    dev: &str,
    ip: Ipv4Addr,
    probes: u32,
    gap: Duration,
) -> Result<Option<Mac>, ArpError> {
    raw::ask(
        dev,
        probes,
        gap,
        |mac| probe(mac, ip),
        |bytes, own| claims(bytes, ip, own),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x0e, 1, 2, 3, 4, 5]);
    const OTHER: Mac = Mac([0x0e, 9, 9, 9, 9, 9]);

    #[test]
    fn gratuitous_arp_names_the_vip_as_sender_and_target() {
        let vip: Ipv4Addr = "192.168.50.250".parse().expect("ip");
        let [request, reply] = gratuitous(MAC, vip);
        assert_eq!(request[20..22], [0, 1]);
        assert_eq!(reply[20..22], [0, 2]);
        for f in [request, reply] {
            assert_eq!(f[0..6], BROADCAST);
            assert_eq!(f[22..28], MAC.0);
            assert_eq!(f[28..32], vip.octets());
            assert_eq!(f[38..42], vip.octets());
            // Our own announcement is not someone else's claim.
            assert_eq!(claims(&f, vip, MAC), None);
            assert_eq!(claims(&f, vip, OTHER), Some(MAC));
        }
    }

    #[test]
    fn a_probe_asks_from_the_unspecified_address_and_claims_nothing() {
        let vip: Ipv4Addr = "192.168.50.250".parse().expect("ip");
        let p = probe(MAC, vip);
        assert_eq!(p[28..32], [0, 0, 0, 0]);
        assert_eq!(p[38..42], vip.octets());
        assert_eq!(claims(&p, vip, OTHER), None, "sender address is 0.0.0.0");
    }

    #[test]
    fn only_arp_from_the_vip_counts_as_a_claim() {
        let vip: Ipv4Addr = "192.168.50.250".parse().expect("ip");
        let [_, reply] = gratuitous(OTHER, "192.168.50.11".parse().expect("ip"));
        assert_eq!(claims(&reply, vip, MAC), None, "another address");
        let mut ipv4 = gratuitous(OTHER, vip)[1];
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(claims(&ipv4, vip, MAC), None, "not ARP");
        assert_eq!(claims(&ipv4[..20], vip, MAC), None, "short");
    }
}
