//! NDP for an IPv6 BridgeHosts VIP, as [`super::arp`] is for an IPv4 one: unsolicited
//! Neighbour Advertisements (RFC 4861 §7.2.6) when a node takes the VIP, so neighbours that
//! know it move to the node at once, and duplicate address detection probes (Neighbour
//! Solicitations from `::`, RFC 4862 §5.4.2) that tell whether anyone still answers for the
//! VIP before a node takes it.
//!
//! Frames are built and parsed by the pure functions here (unit-tested); [`announce`] and
//! [`answered`] send and read them on the raw `AF_PACKET` channel of [`super::raw`], in the
//! agent's network namespace. Only plain frames are read: ICMPv6 right after the IPv6 header
//! (no extension headers), as every kernel sends Neighbour Discovery.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::raw::{self, RawError};
use crate::model::Mac;

const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
const NEXT_HEADER_ICMPV6: u8 = 58;
/// Neighbour Discovery is only valid with hop limit 255 (it never crossed a router).
const HOP_LIMIT: u8 = 255;
const TYPE_NS: u8 = 135;
const TYPE_NA: u8 = 136;
/// The Override flag of a Neighbour Advertisement.
const FLAG_OVERRIDE: u8 = 0x20;
/// The Router flag (Solicited is 0x40): the bridge host forwards, so it is a router, and a
/// client that had marked the VIP's neighbour a router keeps it so.
const FLAG_ROUTER: u8 = 0x80;
const OPTION_SOURCE_LLADDR: u8 = 1;
const OPTION_TARGET_LLADDR: u8 = 2;
/// ff02::1, all nodes on the link.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Offsets in a frame: Ethernet (14), IPv6 (40), then ICMPv6.
const IP: usize = 14;
const IP_SRC: usize = IP + 8;
const IP_DST: usize = IP + 24;
const ICMP: usize = IP + 40;
/// The target address of a solicitation or advertisement.
const TARGET: usize = ICMP + 8;
/// The first option, after the target.
const OPTIONS: usize = TARGET + 16;
/// A solicitation without options (a DAD probe).
const NS_LEN: usize = OPTIONS;
/// An advertisement with its target link-layer address option.
const NA_LEN: usize = OPTIONS + 8;

/// The Ethernet multicast address of an IPv6 multicast address: 33:33 and its last 32 bits.
fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The solicited-node multicast address of `ip`: ff02::1:ff and its last 24 bits.
fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    let mut group = [0u8; 16];
    group[0] = 0xff;
    group[1] = 0x02;
    group[11] = 0x01;
    group[12] = 0xff;
    group[13..16].copy_from_slice(&o[13..16]);
    Ipv6Addr::from(group)
}

/// The ICMPv6 checksum of `message` (its checksum field included as it is: zero it to
/// compute one, or leave it to check one, which then sums to zero) between `src` and `dst`:
/// the ones' complement of the ones' complement sum over the IPv6 pseudo-header (RFC 8200
/// §8.1) and the message.
#[must_use]
pub fn checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut pseudo = [0u8; 40];
    pseudo[0..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&length.to_be_bytes());
    pseudo[39] = NEXT_HEADER_ICMPV6;
    let mut sum: u64 = 0;
    for bytes in [&pseudo[..], message] {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u64::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above folded the sum into 16 bits.
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// An Ethernet frame carrying an ICMPv6 Neighbour Discovery message of `N` bytes in all:
/// the headers from the arguments, `icmp_type`, the first byte of flags, the target, and
/// the checksum; the caller adds options before [`seal`].
fn frame<const N: usize>(
    eth_dst: [u8; 6],
    mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    flags: u8,
    target: Ipv6Addr,
) -> [u8; N] {
    let mut f = [0u8; N];
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&mac.0);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6);
    f[IP] = 0x60; // version 6, traffic class and flow label 0
    let payload = u16::try_from(N - ICMP).unwrap_or(u16::MAX);
    f[IP + 4..IP + 6].copy_from_slice(&payload.to_be_bytes());
    f[IP + 6] = NEXT_HEADER_ICMPV6;
    f[IP + 7] = HOP_LIMIT;
    f[IP_SRC..IP_DST].copy_from_slice(&src.octets());
    f[IP_DST..ICMP].copy_from_slice(&dst.octets());
    f[ICMP] = icmp_type;
    f[ICMP + 4] = flags;
    f[TARGET..OPTIONS].copy_from_slice(&target.octets());
    f
}

/// Writes the ICMPv6 checksum of a frame whose message is complete.
fn seal(f: &mut [u8]) {
    let src = address(f, IP_SRC);
    let dst = address(f, IP_DST);
    f[ICMP + 2..ICMP + 4].copy_from_slice(&[0, 0]);
    let sum = checksum(src, dst, &f[ICMP..]);
    f[ICMP + 2..ICMP + 4].copy_from_slice(&sum.to_be_bytes());
}

/// The IPv6 address at `at` in `bytes` (which the caller checked is long enough).
fn address(bytes: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&bytes[at..at + 16]);
    Ipv6Addr::from(o)
}

/// An unsolicited Neighbour Advertisement: `ip` is at `mac`, to all nodes, from `ip`, with
/// Override set (neighbours replace the MAC they had), Router set (the holder forwards), and
/// `mac` as target link-layer address.
/// A neighbour only updates an entry it has; none is created.
#[must_use]
pub fn unsolicited_na(mac: Mac, ip: Ipv6Addr) -> [u8; NA_LEN] {
    let mut f = frame::<NA_LEN>(
        multicast_mac(ALL_NODES),
        mac,
        ip,
        ALL_NODES,
        TYPE_NA,
        FLAG_ROUTER | FLAG_OVERRIDE,
        ip,
    );
    f[OPTIONS] = OPTION_TARGET_LLADDR;
    f[OPTIONS + 1] = 1; // in units of 8 bytes
    f[OPTIONS + 2..OPTIONS + 8].copy_from_slice(&mac.0);
    seal(&mut f);
    f
}

/// A duplicate address detection probe: who has `ip`? A Neighbour Solicitation from `::` to
/// the solicited-node group of `ip`, without a source link-layer address option (forbidden
/// from `::`), so no cache learns anything; a holder answers with an advertisement to all
/// nodes.
#[must_use]
pub fn probe(mac: Mac, ip: Ipv6Addr) -> [u8; NS_LEN] {
    let group = solicited_node(ip);
    let mut f = frame::<NS_LEN>(
        multicast_mac(group),
        mac,
        Ipv6Addr::UNSPECIFIED,
        group,
        TYPE_NS,
        0,
        ip,
    );
    seal(&mut f);
    f
}

/// The link-layer address in option `kind` of the Neighbour Discovery message in `bytes`
/// (options run from [`OPTIONS`] to the end of the IPv6 payload).
fn lladdr_option(bytes: &[u8], kind: u8) -> Option<Mac> {
    let payload = usize::from(u16::from_be_bytes([bytes[IP + 4], bytes[IP + 5]]));
    let end = bytes.len().min(ICMP + payload);
    let mut at = OPTIONS;
    while at + 2 <= end {
        let len = usize::from(bytes[at + 1]) * 8;
        if len == 0 || at + len > end {
            return None;
        }
        if bytes[at] == kind && len >= 8 {
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&bytes[at + 2..at + 8]);
            return Some(Mac(mac));
        }
        at += len;
    }
    None
}

/// The holder of `ip` when `bytes` shows someone other than `own` claiming it: a Neighbour
/// Advertisement for `ip`, or a Neighbour Solicitation sent from `ip` (the holder resolving
/// a neighbour), from an Ethernet source other than `own`. The MAC is the message's own
/// link-layer option (target for an advertisement, source for a solicitation) when it has
/// one, else the Ethernet source. A probe (from `::`) claims nothing.
#[must_use]
pub fn claims(bytes: &[u8], ip: Ipv6Addr, own: Mac) -> Option<Mac> {
    if bytes.len() < NS_LEN || bytes[12..14] != ETHERTYPE_IPV6 || bytes[IP] >> 4 != 6 {
        return None;
    }
    if bytes[IP + 6] != NEXT_HEADER_ICMPV6 || bytes[IP + 7] != HOP_LIMIT || bytes[ICMP + 1] != 0 {
        return None;
    }
    let mut sender = [0u8; 6];
    sender.copy_from_slice(&bytes[6..12]);
    let sender = Mac(sender);
    let holder = match bytes[ICMP] {
        TYPE_NA if address(bytes, TARGET) == ip => {
            lladdr_option(bytes, OPTION_TARGET_LLADDR).unwrap_or(sender)
        }
        TYPE_NS if address(bytes, IP_SRC) == ip && !ip.is_unspecified() => {
            lladdr_option(bytes, OPTION_SOURCE_LLADDR).unwrap_or(sender)
        }
        _ => return None,
    };
    (sender != own && holder != own).then_some(holder)
}

/// Announces that `ip` is now at `dev`'s MAC (blocking; run it off the async runtime).
///
/// # Errors
/// When the raw channel cannot be opened or written.
pub fn announce(dev: &str, ip: Ipv6Addr) -> Result<(), RawError> {
    raw::send_all(dev, |mac| vec![unsolicited_na(mac, ip)])
}

/// Whether anyone on `dev`'s segment answers for `ip`: sends `probes` probes `gap` apart and
/// listens until `gap` after the last one. The MAC of the first answer, if any (blocking).
///
/// # Errors
/// When the raw channel cannot be opened or written.
pub fn answered(
    dev: &str,
    ip: Ipv6Addr,
    probes: u32,
    gap: Duration,
) -> Result<Option<Mac>, RawError> {
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

    fn vip() -> Ipv6Addr {
        "fd00:50::250".parse().expect("ip")
    }

    /// Whether the checksum in `f` is right: summed with it, the message sums to zero.
    fn checks(f: &[u8]) -> bool {
        checksum(address(f, IP_SRC), address(f, IP_DST), &f[ICMP..]) == 0
    }

    #[test]
    fn an_unsolicited_advertisement_names_the_vip_with_override_to_all_nodes() {
        let na = unsolicited_na(MAC, vip());
        assert_eq!(na.len(), 86);
        assert_eq!(na[0..6], [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(na[6..12], MAC.0);
        assert_eq!(na[12..14], [0x86, 0xdd]);
        assert_eq!(na[14], 0x60);
        assert_eq!(na[18..20], [0, 32], "payload length");
        assert_eq!(na[20], 58, "ICMPv6");
        assert_eq!(na[21], 255, "hop limit");
        assert_eq!(na[22..38], vip().octets(), "from the VIP");
        assert_eq!(na[38..54], ALL_NODES.octets());
        assert_eq!(na[54..56], [136, 0]);
        assert_eq!(na[58], 0xa0, "Router and Override, not Solicited");
        assert_eq!(na[59..62], [0, 0, 0]);
        assert_eq!(na[62..78], vip().octets(), "target");
        assert_eq!(na[78..80], [2, 1], "target link-layer address, 8 bytes");
        assert_eq!(na[80..86], MAC.0);
        assert!(checks(&na));
        // Our own announcement is not someone else's claim.
        assert_eq!(claims(&na, vip(), MAC), None);
        assert_eq!(claims(&na, vip(), OTHER), Some(MAC));
    }

    #[test]
    fn a_probe_asks_the_solicited_node_group_from_the_unspecified_address_and_claims_nothing() {
        let p = probe(MAC, vip());
        assert_eq!(p.len(), 78);
        assert_eq!(p[0..6], [0x33, 0x33, 0xff, 0x00, 0x02, 0x50]);
        assert_eq!(p[6..12], MAC.0);
        assert_eq!(p[18..20], [0, 24], "payload length: no options");
        assert_eq!(p[20..22], [58, 255]);
        assert_eq!(p[22..38], [0; 16], "from ::");
        let group: Ipv6Addr = "ff02::1:ff00:250".parse().expect("ip");
        assert_eq!(p[38..54], group.octets());
        assert_eq!(p[54..56], [135, 0]);
        assert_eq!(p[58..62], [0; 4], "reserved");
        assert_eq!(p[62..78], vip().octets(), "target");
        assert!(checks(&p));
        assert_eq!(claims(&p, vip(), OTHER), None, "source address is ::");
    }

    #[test]
    fn the_checksum_is_the_kernels() {
        // Captured in test namespaces (fd00:50::12 at b6:ec:… pinging fd00:50::11 at
        // 72:82:…): the kernel's solicitation, with a source link-layer option, the
        // solicited advertisement answering it, with a target link-layer option, and the
        // kernel's own DAD probe of its link-local address, with a nonce option.
        let ns = hex(KERNEL_NS);
        let na = hex(KERNEL_NA);
        let dad = hex(KERNEL_DAD);
        assert!(checks(&ns) && checks(&na) && checks(&dad));
        let mut zeroed = na.clone();
        zeroed[56..58].copy_from_slice(&[0, 0]);
        let sum = checksum(address(&na, IP_SRC), address(&na, IP_DST), &zeroed[ICMP..]);
        assert_eq!(sum.to_be_bytes(), na[56..58]);
        // Both are claims: the advertisement of its target, the solicitation of its source.
        let asked: Ipv6Addr = "fd00:50::12".parse().expect("ip");
        let answered: Ipv6Addr = "fd00:50::11".parse().expect("ip");
        assert_eq!(claims(&ns, asked, OTHER), Some(Mac(mac_at(&ns, 6))));
        assert_eq!(claims(&na, answered, OTHER), Some(Mac(mac_at(&na, 6))));
        assert_eq!(claims(&na, asked, OTHER), None, "not its target");
        let link_local: Ipv6Addr = "fe80::b4ec:62ff:fe55:a16d".parse().expect("ip");
        assert_eq!(claims(&dad, link_local, OTHER), None, "a probe");
    }

    #[test]
    fn a_checksum_over_an_odd_length_pads_with_zero() {
        let src: Ipv6Addr = "fe80::1".parse().expect("ip");
        let dst = ALL_NODES;
        // The same words; only the pseudo-header's length differs, by one.
        assert_eq!(
            checksum(src, dst, &[0x12, 0x34, 0x56]),
            checksum(src, dst, &[0x12, 0x34, 0x56, 0]) + 1
        );
    }

    #[test]
    fn a_solicitation_from_the_vip_is_a_claim_by_its_source_link_layer_address() {
        // The holder resolving a neighbour: a solicitation from the VIP, with the option.
        let mut ns = probe(OTHER, "fd00:50::1".parse().expect("ip")).to_vec();
        ns[22..38].copy_from_slice(&vip().octets());
        assert_eq!(claims(&ns, vip(), MAC), Some(OTHER), "Ethernet source");
        let mut option = [OPTION_SOURCE_LLADDR, 1, 0x0e, 7, 7, 7, 7, 7];
        ns.extend_from_slice(&option);
        ns[18..20].copy_from_slice(&[0, 32]);
        assert_eq!(claims(&ns, vip(), MAC), Some(Mac([0x0e, 7, 7, 7, 7, 7])));
        assert_eq!(claims(&ns, vip(), OTHER), None, "sent by us");
        // A malformed option (length 0) is skipped, not looped on.
        option[1] = 0;
        ns[78..86].copy_from_slice(&option);
        assert_eq!(claims(&ns, vip(), MAC), Some(OTHER));
    }

    #[test]
    fn only_neighbour_discovery_about_the_vip_counts_as_a_claim() {
        let other_ip: Ipv6Addr = "fd00:50::11".parse().expect("ip");
        let na = unsolicited_na(OTHER, other_ip);
        assert_eq!(claims(&na, vip(), MAC), None, "another target");

        let mut not_ipv6 = unsolicited_na(OTHER, vip());
        not_ipv6[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(claims(&not_ipv6, vip(), MAC), None, "not IPv6");

        let mut not_icmp = unsolicited_na(OTHER, vip());
        not_icmp[20] = 17;
        assert_eq!(claims(&not_icmp, vip(), MAC), None, "not ICMPv6");

        let mut echo = unsolicited_na(OTHER, vip());
        echo[54] = 129;
        assert_eq!(claims(&echo, vip(), MAC), None, "an echo reply");

        let mut forwarded = unsolicited_na(OTHER, vip());
        forwarded[21] = 64;
        assert_eq!(claims(&forwarded, vip(), MAC), None, "hop limit not 255");

        let na = unsolicited_na(OTHER, vip());
        assert_eq!(claims(&na[..60], vip(), MAC), None, "short");
        assert_eq!(claims(&[], vip(), MAC), None, "empty");
        // Cut after the target: still a claim, by the Ethernet source.
        assert_eq!(claims(&na[..78], vip(), MAC), Some(OTHER));
    }

    fn mac_at(bytes: &[u8], at: usize) -> [u8; 6] {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&bytes[at..at + 6]);
        mac
    }

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|b| u8::try_from(char::from(b).to_digit(16).expect("hex")).expect("digit"))
            .collect();
        digits.chunks(2).map(|d| d[0] << 4 | d[1]).collect()
    }

    const KERNEL_NS: &str = concat!(
        "3333ff000011b6ec6255a16d86dd6000000000203afffd000050000000000000",
        "000000000012ff0200000000000000000001ff0000118700c41900000000fd00",
        "00500000000000000000000000110101b6ec6255a16d",
    );
    const KERNEL_NA: &str = concat!(
        "b6ec6255a16d7282bdc58e0886dd6000000000203afffd000050000000000000",
        "000000000011fd00005000000000000000000000001288005f2c60000000fd00",
        "005000000000000000000000001102017282bdc58e08",
    );
    const KERNEL_DAD: &str = concat!(
        "3333ff55a16db6ec6255a16d86dd6000000000203aff00000000000000000000",
        "000000000000ff0200000000000000000001ff55a16d8700930c00000000fe80",
        "000000000000b4ec62fffe55a16d0e010ddd43323090",
    );
}
