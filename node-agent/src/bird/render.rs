//! `bird.conf` from a [`SpeakerConfig`] (pure): what BIRD runs as this node's BGP speaker.
//!
//! The text is a function of the configuration alone (peers in address order, prefixes
//! sorted and deduplicated), so the same configuration always renders the same bytes and
//! [`crate::bird::Speaker::update`] reconfigures BIRD only when something changed. What it
//! asks of BIRD, and why:
//! - **No `protocol kernel`.** BIRD never writes the kernel: the agent stays the one owner of
//!   the node's routes and installs what BIRD learned itself (`plan::routed`), so a route
//!   appears, changes and goes through the same plan, diff and apply as every other one.
//! - **Export only the node's own prefixes**, from one static protocol per address family
//!   (`advertised4`, `advertised6`), with the node address as next hop. Changing the prefixes
//!   changes only that static protocol: BIRD re-announces without restarting any session.
//! - **Import everything** over IPv4; over IPv6 only routes inside the network's
//!   `secondaryCidr`. `allow local as` accepts routes whose path already carries the
//!   node's AS (every node of a network shares one AS; routers call it allowas-in). The node
//!   never re-announces what it learns, so no loop can form through it.
//! - **Dual-stack: one session per peer, two channels** (MP-BGP, RFC 4760). The sessions stay
//!   on the peers' IPv4 addresses; an `ipv6` channel beside the `ipv4` one announces the
//!   node's IPv6 subnet and learns the others'. Its next hop is the node's IPv6 underlay
//!   address (`secondaryNodeAddress`), set by the export filter (`bgp_next_hop = ...`), not
//!   by `next hop self`: over an IPv4 session BIRD's "self" is an IPv6 address it picks
//!   from the session's interface, and `next hop address` takes effect only when a session
//!   restarts, whereas a next hop set by the filter is used as is and a new one is
//!   re-announced on `configure` without restarting the session (BIRD 2.0.12, checked in a
//!   network namespace).
//! - **Peers at IPv6 addresses** (issue #18): the session runs over IPv6, from the node's IPv6
//!   address (`local <secondaryNodeAddress>`, `strict bind` on it), and carries the same
//!   channels as one with an IPv4 peer. Its `ipv4` channel announces the node's IPv4 subnet
//!   with a plain IPv4 next hop, the node address, set by the export filter as the `ipv6`
//!   channel's is: an IPv4 NEXT_HOP needs no `extended next hop` (RFC 8950 is for IPv6 next
//!   hops of IPv4 routes), and BIRD's "self" on an IPv6 session would be an IPv4 address it
//!   picks from the interface. The router's IPv4 routes come with its IPv4 address as next
//!   hop (BIRD does the same on its side), which the plan installs as before. The router ID
//!   stays the node's IPv4 address. An IPv6 peer on a node without an IPv6 address is never
//!   rendered ([`crate::bgp::peering`] reports it).
//! - **Peers on the node's segment** (`direct`, iBGP too): the plan installs only routes whose
//!   next hop is on the segment, and direct sessions notice a link going down at once. BIRD
//!   connects to each peer and also accepts its connections, on port 179 of the node address
//!   only (`strict bind`).
//! - **Graceful restart on** (unless `gracefulRestart.enabled: false`): an agent that stops
//!   for a restart does not withdraw the node's subnet at GR-aware routers (BIRD routers are
//!   by default); they keep it for the restart time (`gracefulRestart.restartTimeSeconds`,
//!   120 s by default) or until the new BIRD has sent its routes again. `graceful restart
//!   wait` bounds how long a restarted BIRD holds its announcements back while some peer does
//!   not answer.
//! - **Peer options** from `spec.routed.bgp.peers[]`: `passive on`, `multihop N` (instead of
//!   `direct`; eBGP only), `rr client` (iBGP only), `password` (the TCP MD5 key from its
//!   Secret, quoted) and `bfd { ... }` with a `protocol bfd` instance whenever a session asks
//!   for BFD.
//! - **What the node's routes carry** (`advertise`): communities and LOCAL_PREF are set by
//!   the export filter, which passes only the node's own prefixes.
//! - **Short retries**: `connect delay time 1` (BIRD's default waits 5 s before the first
//!   attempt after a session restarts), `connect retry time 1` and `error wait time 1, 5`
//!   bring a session back about a second after its router returns, 5 s at most after
//!   repeated errors.
//!
//! One channel block per address family ([`Family`]), each with its static protocol; an
//! IPv4-only configuration renders exactly as before dual-stack existed.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::bgp::{PeerConfig, SpeakerConfig};

/// How long a restarted BIRD (`bird -R`) holds back its announcements while some peer has
/// not sent all its routes yet, in seconds. Far below the restart time routers keep our
/// routes for (120 s), so they get them again before they would drop them.
pub const GRACEFUL_RESTART_WAIT: u16 = 10;

/// An address family the node announces and learns: IPv4 unicast always, IPv6 unicast on a
/// dual-stack network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// BIRD's channel keyword.
    #[must_use]
    pub fn channel(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    /// The static protocol holding the node's own prefixes of this family.
    #[must_use]
    pub fn advertised(self) -> &'static str {
        match self {
            Family::Ipv4 => "advertised4",
            Family::Ipv6 => "advertised6",
        }
    }
}

/// BIRD's name of the session to `address`, e.g. `peer_192_168_1_1`: deterministic, and only
/// letters, digits and underscores (valid without quoting).
#[must_use]
pub fn protocol_name(address: IpAddr) -> String {
    let text = address.to_string();
    let body: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("peer_{body}")
}

/// A BIRD string literal: double quotes around `text`, with `"` and `\` escaped.
#[must_use]
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The hold time and keepalive interval BIRD is given: a hold time of 1 or 2 s becomes 3 s
/// (RFC 4271 §4.2), the keepalive is at least 1 s and at most a third of the hold time, or
/// none when the hold time is 0.
#[must_use]
pub fn timers(config: &SpeakerConfig) -> (u16, Option<u16>) {
    let hold_time = match config.hold_time {
        0 => 0,
        held => held.max(3),
    };
    let keepalive = (hold_time != 0).then(|| config.keepalive.clamp(1, hold_time / 3));
    (hold_time, keepalive)
}

/// The peers BIRD gets sessions for: one per address, the first entry winning, in address
/// order (IPv4 before IPv6); an IPv6 peer only when the node has an IPv6 address to peer
/// from.
#[must_use]
pub fn peers(config: &SpeakerConfig) -> Vec<PeerConfig> {
    let mut seen = BTreeSet::new();
    let mut peers: Vec<PeerConfig> = config
        .peers
        .iter()
        .filter(|p| config.local_address(p.address).is_some())
        .filter(|p| seen.insert(p.address))
        .cloned()
        .collect();
    peers.sort_by_key(|p| p.address);
    peers
}

/// The prefixes announced, truncated to their network address and deduplicated.
#[must_use]
pub fn advertised(config: &SpeakerConfig) -> BTreeSet<Ipv4Net> {
    config.advertise.iter().map(Ipv4Net::trunc).collect()
}

/// The IPv6 prefixes announced (dual-stack), truncated and deduplicated; none without IPv6.
#[must_use]
pub fn advertised6(config: &SpeakerConfig) -> BTreeSet<Ipv6Net> {
    config
        .ipv6
        .iter()
        .flat_map(|v6| v6.advertise.iter().map(Ipv6Net::trunc))
        .collect()
}

/// The families every session carries.
#[must_use]
pub fn families(config: &SpeakerConfig) -> Vec<Family> {
    let mut families = Vec::new();
    // IPv4 unicast needs the node's IPv4 address as next hop; an IPv6-only node has none.
    if config.next_hop.is_some() {
        families.push(Family::Ipv4);
    }
    if config.ipv6.is_some() {
        families.push(Family::Ipv6);
    }
    families
}

/// The whole `bird.conf`.
#[must_use]
pub fn render(config: &SpeakerConfig) -> String {
    let mut out = String::new();
    let (hold_time, keepalive) = timers(config);
    let _ = writeln!(
        out,
        "# Written by causeway-node-agent from its PodNetwork's spec.routed.bgp; changes are overwritten.\n\
         # BIRD announces the node's subnet and learns the routers' routes; it never writes the\n\
         # kernel (no kernel protocol): the agent installs the learned routes itself."
    );
    let _ = writeln!(out, "router id {};", config.router_id);
    let _ = writeln!(out, "log stderr all;");
    let _ = writeln!(out, "graceful restart wait {GRACEFUL_RESTART_WAIT};");
    let _ = writeln!(out, "protocol device {{ scan time 10; }}");
    let peers = peers(config);
    if peers.iter().any(|p| p.options.bfd.is_some()) {
        // BFD sessions are requested by the BGP sessions that ask for them; the instance
        // accepts both families (BIRD's default), so IPv6 sessions need nothing more.
        let _ = writeln!(out, "protocol bfd {{ }}");
    }
    if config.next_hop.is_some() {
        let prefixes: Vec<IpNet> = advertised(config).into_iter().map(IpNet::V4).collect();
        static_protocol(&mut out, Family::Ipv4, &prefixes);
    }
    if config.ipv6.is_some() {
        let prefixes: Vec<IpNet> = advertised6(config).into_iter().map(IpNet::V6).collect();
        static_protocol(&mut out, Family::Ipv6, &prefixes);
    }
    let families = families(config);
    for peer in &peers {
        session(&mut out, config, peer, hold_time, keepalive, &families);
    }
    out
}

/// The export clause: the node's own prefixes, with the communities and LOCAL_PREF
/// `advertise` asks for (and `next_hop`, where the filter sets it); to a route-reflector
/// client (`reflect`)
/// also the routes learned over BGP, which BIRD then reflects by RFC 4456's rules (iBGP
/// routes from non-clients to clients, unchanged).
fn export(
    family: &Family,
    options: &crate::bgp::SpeakerOptions,
    reflect: bool,
    next_hop: Option<IpAddr>,
) -> String {
    let own = quote(family.advertised());
    if options.communities.is_empty()
        && options.local_preference.is_none()
        && !reflect
        && next_hop.is_none()
    {
        return format!("export where proto = {own};");
    }
    if reflect {
        let mut filter = format!("export filter {{ if proto = {own} then {{");
        push_attributes(&mut filter, options, next_hop);
        filter.push_str(" accept; } if source = RTS_BGP then accept; reject; };");
        return filter;
    }
    let mut filter = format!("export filter {{ if proto != {own} then reject;");
    push_attributes(&mut filter, options, next_hop);
    filter.push_str(" accept; };");
    filter
}

/// The statements that set what the node's own routes carry.
fn push_attributes(
    filter: &mut String,
    options: &crate::bgp::SpeakerOptions,
    next_hop: Option<IpAddr>,
) {
    for community in &options.communities {
        match community {
            causeway_crds::bgp::Community::Standard(a, b) => {
                let _ = write!(filter, " bgp_community.add(({a},{b}));");
            }
            causeway_crds::bgp::Community::Large(a, b, c) => {
                let _ = write!(filter, " bgp_large_community.add(({a},{b},{c}));");
            }
        }
    }
    if let Some(pref) = options.local_preference {
        let _ = write!(filter, " bgp_local_pref = {pref};");
    }
    if let Some(next_hop) = next_hop {
        let _ = write!(filter, " bgp_next_hop = {next_hop};");
    }
}

/// The node's own prefixes of `family`, in BIRD's table only (`unreachable` there; BIRD
/// never installs them anywhere).
fn static_protocol(out: &mut String, family: Family, prefixes: &[IpNet]) {
    let _ = writeln!(out, "protocol static {} {{", family.advertised());
    let _ = writeln!(out, "  {};", family.channel());
    for prefix in prefixes {
        let _ = writeln!(out, "  route {prefix} unreachable;");
    }
    let _ = writeln!(out, "}}");
}

fn session(
    out: &mut String,
    config: &SpeakerConfig,
    peer: &PeerConfig,
    hold_time: u16,
    keepalive: Option<u16>,
    families: &[Family],
) {
    // `peers` leaves out IPv6 peers on a node without an IPv6 address.
    let Some(local) = config.local_address(peer.address) else {
        return;
    };
    let _ = writeln!(out, "protocol bgp {} {{", protocol_name(peer.address));
    let _ = writeln!(out, "  local {local} as {};", config.local_asn);
    let _ = writeln!(
        out,
        "  neighbor {} port {} as {};",
        peer.address, peer.port, peer.asn
    );
    let options = &peer.options;
    let internal = peer.asn == config.local_asn;
    match options.multihop {
        Some(ttl) if !internal => {
            let _ = writeln!(out, "  multihop {ttl};");
        }
        _ => {
            let _ = writeln!(out, "  direct;");
        }
    }
    // BIRD also accepts the peer's connections: on the node address only, so other BGP
    // daemons on the node's other addresses are left alone.
    let _ = writeln!(out, "  strict bind on;");
    if options.passive {
        let _ = writeln!(out, "  passive on;");
    }
    if options.route_reflector_client && internal {
        let _ = writeln!(out, "  rr client;");
    }
    if let Some(key) = &options.password {
        let _ = writeln!(out, "  password {};", quote(&key.0));
    }
    if let Some(bfd) = options.bfd {
        let ms = bfd.min_interval.as_millis();
        let _ = writeln!(
            out,
            "  bfd {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier {}; }};",
            bfd.multiplier
        );
    }
    let _ = writeln!(out, "  hold time {hold_time};");
    if let Some(keepalive) = keepalive {
        let _ = writeln!(out, "  keepalive time {keepalive};");
    }
    // BIRD waits 5 s by default before its first connection attempt after a (re)start of
    // the session; 1 s brings a session back about a second after its router returns.
    let _ = writeln!(out, "  connect delay time 1;");
    let _ = writeln!(out, "  connect retry time 1;");
    let _ = writeln!(out, "  error wait time 1, 5;");
    let _ = writeln!(out, "  allow local as;");
    match config.options.graceful_restart {
        Some(time) => {
            let _ = writeln!(out, "  graceful restart on;");
            let _ = writeln!(out, "  graceful restart time {time};");
        }
        None => {
            let _ = writeln!(out, "  graceful restart off;");
        }
    }
    for family in families {
        let _ = writeln!(out, "  {} {{", family.channel());
        let reflect = options.route_reflector_client && internal;
        match (family, &config.ipv6) {
            (Family::Ipv6, Some(v6)) => {
                // Only the network's IPv6 range; the node's own routes leave with its IPv6
                // address as next hop, set by the filter (see the module docs), and reflected
                // eBGP routes with BIRD's own.
                let _ = writeln!(out, "    import where net ~ [ {}+ ];", v6.range.trunc());
                let _ = writeln!(
                    out,
                    "    {}",
                    export(family, &config.options, reflect, Some(v6.next_hop.into()))
                );
                if reflect {
                    let _ = writeln!(out, "    next hop self ebgp;");
                }
            }
            (Family::Ipv4, _) if peer.address.is_ipv6() => {
                // IPv4 over an IPv6 session: the node's own routes leave with its IPv4
                // address, set by the filter (see the module docs).
                let _ = writeln!(out, "    import all;");
                let _ = writeln!(
                    out,
                    "    {}",
                    export(
                        family,
                        &config.options,
                        reflect,
                        config.next_hop.map(IpAddr::V4)
                    )
                );
                if reflect {
                    let _ = writeln!(out, "    next hop self ebgp;");
                }
            }
            _ => {
                let _ = writeln!(out, "    import all;");
                let _ = writeln!(
                    out,
                    "    {}",
                    export(family, &config.options, reflect, None)
                );
                // The node's own routes leave with its address as next hop; reflected ones
                // keep theirs (RFC 4456), so a client reaches their origin directly.
                let _ = writeln!(
                    out,
                    "    next hop self{};",
                    if reflect { " ebgp" } else { "" }
                );
            }
        }
        if internal {
            // iBGP: a direct next hop, as for eBGP (BIRD would resolve it recursively).
            let _ = writeln!(out, "    gateway direct;");
        }
        let _ = writeln!(out, "  }};");
    }
    let _ = writeln!(out, "}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::BGP_PORT;
    use std::net::Ipv4Addr;

    const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 1);
    const R1: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 2);
    const R2: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 1);

    fn peer(address: impl Into<IpAddr>, asn: u32) -> PeerConfig {
        PeerConfig {
            address: address.into(),
            asn,
            port: BGP_PORT,
            options: Default::default(),
        }
    }

    fn config(peers: &[PeerConfig]) -> SpeakerConfig {
        SpeakerConfig {
            local_asn: 65001,
            router_id: NODE,
            hold_time: 9,
            keepalive: 3,
            peers: peers.to_vec(),
            advertise: vec!["10.244.1.0/24".parse().expect("prefix")],
            next_hop: Some(NODE),
            local6: None,
            ipv6: None,
            options: Default::default(),
            unusable: vec![],
            asn_label: None,
            ignored: vec![],
        }
    }

    /// The lines of the block that starts with `header`, trimmed, up to its closing brace.
    fn block(text: &str, header: &str) -> Vec<String> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(header));
        let mut out = Vec::new();
        for line in lines.by_ref() {
            out.push(line.trim().to_owned());
            if line == "}" {
                break;
            }
        }
        assert!(!out.is_empty(), "no block {header:?} in:\n{text}");
        out
    }

    #[test]
    fn names_are_deterministic_and_need_no_quoting() {
        for (address, name) in [
            ("192.168.1.1", "peer_192_168_1_1"),
            ("10.0.0.254", "peer_10_0_0_254"),
            ("fd00::1", "peer_fd00__1"),
        ] {
            let address: IpAddr = address.parse().expect("address");
            assert_eq!(protocol_name(address), name);
        }
    }

    #[test]
    fn strings_are_quoted_with_quotes_and_backslashes_escaped() {
        for (text, quoted) in [
            (
                "/run/causeway/bird/bird.conf",
                "\"/run/causeway/bird/bird.conf\"",
            ),
            ("a\"b", "\"a\\\"b\""),
            ("c:\\d", "\"c:\\\\d\""),
            ("", "\"\""),
        ] {
            assert_eq!(quote(text), quoted, "{text}");
        }
    }

    #[test]
    fn a_session_per_peer_announces_only_the_nodes_prefixes_and_never_writes_the_kernel() {
        let text = render(&config(&[peer(R1, 65000)]));
        assert!(text.contains("router id 192.168.91.1;\n"), "{text}");
        assert!(!text.contains("protocol kernel"), "{text}");
        assert_eq!(
            block(&text, "protocol static advertised4"),
            [
                "protocol static advertised4 {",
                "ipv4;",
                "route 10.244.1.0/24 unreachable;",
                "}"
            ]
        );
        assert_eq!(
            block(&text, "protocol bgp peer_192_168_91_2"),
            [
                "protocol bgp peer_192_168_91_2 {",
                "local 192.168.91.1 as 65001;",
                "neighbor 192.168.91.2 port 179 as 65000;",
                "direct;",
                "strict bind on;",
                "hold time 9;",
                "keepalive time 3;",
                "connect delay time 1;",
                "connect retry time 1;",
                "error wait time 1, 5;",
                "allow local as;",
                "graceful restart on;",
                "graceful restart time 120;",
                "ipv4 {",
                "import all;",
                "export where proto = \"advertised4\";",
                "next hop self;",
                "};",
                "}",
            ]
        );
    }

    /// A configuration with every option `spec.routed.bgp` offers: an eBGP peer that is
    /// passive, two hops away, with a password and BFD; an iBGP route-reflector client;
    /// communities, LOCAL_PREF and a restart time.
    pub(crate) fn every_option() -> SpeakerConfig {
        let mut ebgp = peer(R2, 65000);
        ebgp.options = crate::bgp::PeerOptions {
            passive: true,
            multihop: Some(3),
            route_reflector_client: true, // ignored: eBGP
            password: Some(crate::bgp::Md5Key("s3cr\"et".into())),
            bfd: Some(causeway_crds::bgp::Bfd {
                min_interval: std::time::Duration::from_millis(100),
                multiplier: 5,
            }),
        };
        let mut ibgp = peer(R1, 65001);
        ibgp.options.route_reflector_client = true;
        ibgp.options.multihop = Some(4); // ignored: iBGP
        let mut config = config(&[ebgp, ibgp]);
        config.options = crate::bgp::SpeakerOptions {
            graceful_restart: Some(300),
            communities: vec![
                causeway_crds::bgp::Community::Standard(65000, 100),
                causeway_crds::bgp::Community::Large(4_200_000_000, 1, 2),
            ],
            local_preference: Some(150),
        };
        config
    }

    #[test]
    fn every_peer_option_and_what_the_routes_carry_are_rendered() {
        let text = render(&every_option());
        assert!(text.contains("\nprotocol bfd { }\n"), "{text}");
        let ebgp = block(&text, "protocol bgp peer_192_168_60_1");
        for line in [
            "multihop 3;",
            "passive on;",
            "password \"s3cr\\\"et\";",
            "bfd { min rx interval 100 ms; min tx interval 100 ms; multiplier 5; };",
            "graceful restart on;",
            "graceful restart time 300;",
            "export filter { if proto != \"advertised4\" then reject; bgp_community.add((65000,100)); bgp_large_community.add((4200000000,1,2)); bgp_local_pref = 150; accept; };",
        ] {
            assert!(ebgp.contains(&line.to_owned()), "{line:?} not in {ebgp:#?}");
        }
        for absent in ["direct;", "rr client;"] {
            assert!(
                !ebgp.contains(&absent.to_owned()),
                "{absent:?} in {ebgp:#?}"
            );
        }
        let ibgp = block(&text, "protocol bgp peer_192_168_91_2");
        for line in [
            "direct;",
            "rr client;",
            "gateway direct;",
            "next hop self ebgp;",
            "export filter { if proto = \"advertised4\" then { bgp_community.add((65000,100)); bgp_large_community.add((4200000000,1,2)); bgp_local_pref = 150; accept; } if source = RTS_BGP then accept; reject; };",
        ] {
            assert!(ibgp.contains(&line.to_owned()), "{line:?} not in {ibgp:#?}");
        }
        for absent in ["multihop 4;", "passive on;", "bfd on;"] {
            assert!(
                !ibgp.contains(&absent.to_owned()),
                "{absent:?} in {ibgp:#?}"
            );
        }
        // Graceful restart off, and no BFD instance without a BFD session.
        let mut off = config(&[peer(R1, 65000)]);
        off.options.graceful_restart = None;
        let text = render(&off);
        assert!(text.contains("  graceful restart off;"), "{text}");
        assert!(!text.contains("protocol bfd"), "{text}");
        assert!(
            text.contains("    export where proto = \"advertised4\";"),
            "{text}"
        );
    }

    #[test]
    fn ibgp_peers_use_a_direct_gateway_and_ports_and_ases_come_from_the_peer() {
        let text = render(&config(&[PeerConfig {
            address: R1.into(),
            asn: 65001,
            port: 1179,
            options: Default::default(),
        }]));
        let session = block(&text, "protocol bgp peer_192_168_91_2");
        assert!(
            session.contains(&"neighbor 192.168.91.2 port 1179 as 65001;".to_owned()),
            "{session:?}"
        );
        assert!(
            session.contains(&"gateway direct;".to_owned()),
            "{session:?}"
        );
        let ebgp = render(&config(&[peer(R1, 65000)]));
        assert!(!ebgp.contains("gateway direct"), "{ebgp}");
    }

    #[test]
    fn timers_are_made_valid() {
        for (hold_time, keepalive, hold_line, keepalive_line) in [
            (90, 30, "hold time 90;", Some("keepalive time 30;")),
            (3, 1, "hold time 3;", Some("keepalive time 1;")),
            (0, 30, "hold time 0;", None),
            (1, 1, "hold time 3;", Some("keepalive time 1;")),
            (2, 0, "hold time 3;", Some("keepalive time 1;")),
            (9, 10, "hold time 9;", Some("keepalive time 3;")),
            (30, 1, "hold time 30;", Some("keepalive time 1;")),
        ] {
            let text = render(&SpeakerConfig {
                hold_time,
                keepalive,
                ..config(&[peer(R1, 65000)])
            });
            let session = block(&text, "protocol bgp");
            assert!(
                session.contains(&hold_line.to_owned()),
                "{hold_time}/{keepalive}: {session:?}"
            );
            let keepalives: Vec<&String> = session
                .iter()
                .filter(|l| l.starts_with("keepalive"))
                .collect();
            assert_eq!(
                keepalives.first().map(|l| l.as_str()),
                keepalive_line,
                "{hold_time}/{keepalive}"
            );
        }
    }

    #[test]
    fn the_same_configuration_renders_the_same_text_whatever_the_order() {
        let a = config(&[peer(R1, 65000), peer(R2, 65000)]);
        let mut b = config(&[peer(R2, 65000), peer(R1, 65000)]);
        b.advertise = ["10.244.9.0/24", "10.244.1.7/24", "10.244.1.0/24"]
            .iter()
            .map(|p| p.parse().expect("prefix"))
            .collect();
        let mut a2 = a.clone();
        a2.advertise = b.advertise.clone();
        assert_eq!(render(&a2), render(&b));
        assert_eq!(render(&a), render(&a.clone()));
        let text = render(&b);
        let sessions: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("protocol bgp"))
            .collect();
        assert_eq!(
            sessions,
            [
                "protocol bgp peer_192_168_60_1 {",
                "protocol bgp peer_192_168_91_2 {"
            ],
            "address order"
        );
        assert_eq!(
            block(&text, "protocol static"),
            [
                "protocol static advertised4 {",
                "ipv4;",
                "route 10.244.1.0/24 unreachable;",
                "route 10.244.9.0/24 unreachable;",
                "}"
            ],
            "truncated, deduplicated, sorted"
        );
    }

    #[test]
    fn an_address_listed_twice_is_one_session_and_the_first_entry_wins() {
        let text = render(&config(&[peer(R1, 65000), peer(R1, 65009)]));
        assert_eq!(text.matches("protocol bgp").count(), 1, "{text}");
        assert!(text.contains("as 65000;"), "{text}");
    }

    #[test]
    fn changing_prefixes_changes_only_the_static_protocol() {
        let before = render(&config(&[peer(R1, 65000)]));
        let after = render(&SpeakerConfig {
            advertise: vec!["10.244.2.0/24".parse().expect("prefix")],
            ..config(&[peer(R1, 65000)])
        });
        assert_eq!(
            block(&before, "protocol bgp"),
            block(&after, "protocol bgp"),
            "sessions unchanged, so BIRD keeps them up"
        );
        assert_ne!(before, after);
    }

    #[test]
    fn an_ipv6_only_node_renders_ipv6_sessions_with_one_ipv6_channel_and_nothing_of_ipv4() {
        let v6_peer = peer("fd00:91::2".parse::<IpAddr>().expect("ip"), 65000);
        let mut only6 = dual_stack(config(&[v6_peer]));
        only6.next_hop = None;
        only6.advertise.clear();
        only6.local6 = Some("fd00:91::1".parse().expect("address"));
        only6.router_id = Ipv4Addr::new(253, 0, 0, 16);
        let text = render(&only6);
        assert!(text.contains("router id 253.0.0.16;"), "{text}");
        assert!(
            !text.contains("advertised4"),
            "no IPv4 static protocol:\n{text}"
        );
        let session = block(&text, "protocol bgp");
        assert!(
            session.iter().any(|l| l == "local fd00:91::1 as 65001;")
                && session.iter().any(|l| l == "ipv6 {")
                && !session.iter().any(|l| l == "ipv4 {"),
            "{session:?}"
        );
        assert!(
            session
                .iter()
                .any(|l| l.contains("bgp_next_hop = fd00:91::1;")),
            "{session:?}"
        );
    }

    /// `config` made dual-stack: node-a's IPv6 subnet, its IPv6 address, the network's range.
    pub(crate) fn dual_stack(mut config: SpeakerConfig) -> SpeakerConfig {
        config.ipv6 = Some(crate::bgp::Ipv6Unicast {
            advertise: vec!["fd00:10:244:1::/64".parse().expect("prefix")],
            next_hop: "fd00:91::1".parse().expect("address"),
            range: "fd00:10:244::/56".parse().expect("range"),
        });
        config
    }

    /// `text` without the lines of `advertised6` and of every `ipv6` channel.
    fn without_ipv6(text: &str) -> String {
        let mut out = String::new();
        let mut skipping: Option<&str> = None;
        for line in text.lines() {
            if let Some(end) = skipping {
                if line == end {
                    skipping = None;
                }
                continue;
            }
            if line.starts_with("protocol static advertised6") {
                skipping = Some("}");
                continue;
            }
            if line == "  ipv6 {" {
                skipping = Some("  };");
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    #[test]
    fn a_dual_stack_node_adds_an_ipv6_channel_with_its_ipv6_next_hop_to_each_session() {
        let ipv4 = config(&[peer(R1, 65000), peer(R2, 65001)]);
        let text = render(&dual_stack(ipv4.clone()));
        assert_eq!(
            block(&text, "protocol static advertised6"),
            [
                "protocol static advertised6 {",
                "ipv6;",
                "route fd00:10:244:1::/64 unreachable;",
                "}"
            ]
        );
        let session = block(&text, "protocol bgp peer_192_168_91_2");
        let channel: Vec<&str> = session
            .iter()
            .map(String::as_str)
            .skip_while(|l| *l != "ipv6 {")
            .collect();
        assert_eq!(
            channel,
            [
                "ipv6 {",
                "import where net ~ [ fd00:10:244::/56+ ];",
                "export filter { if proto != \"advertised6\" then reject; bgp_next_hop = fd00:91::1; accept; };",
                "};",
                "}",
            ],
            "one session, the IPv6 channel after the IPv4 one"
        );
        assert!(
            session.contains(&"neighbor 192.168.91.2 port 179 as 65000;".to_owned()),
            "the session stays on the peer's IPv4 address: {session:?}"
        );
        let ibgp = block(&text, "protocol bgp peer_192_168_60_1");
        assert_eq!(
            ibgp.iter().filter(|l| *l == "gateway direct;").count(),
            2,
            "iBGP: a direct next hop in both channels: {ibgp:?}"
        );
        // Everything IPv4 stays byte for byte what an IPv4-only node renders.
        assert_eq!(without_ipv6(&text), render(&ipv4));
    }

    #[test]
    fn a_dual_stack_route_reflector_client_gets_both_families_with_what_the_routes_carry() {
        let text = render(&dual_stack(every_option()));
        let ibgp = block(&text, "protocol bgp peer_192_168_91_2");
        for line in [
            "export filter { if proto = \"advertised6\" then { bgp_community.add((65000,100)); bgp_large_community.add((4200000000,1,2)); bgp_local_pref = 150; bgp_next_hop = fd00:91::1; accept; } if source = RTS_BGP then accept; reject; };",
            "next hop self ebgp;",
        ] {
            assert!(ibgp.contains(&line.to_owned()), "{line:?} not in {ibgp:#?}");
        }
        let ebgp = block(&text, "protocol bgp peer_192_168_60_1");
        assert!(
            ebgp.contains(&"export filter { if proto != \"advertised6\" then reject; bgp_community.add((65000,100)); bgp_large_community.add((4200000000,1,2)); bgp_local_pref = 150; bgp_next_hop = fd00:91::1; accept; };".to_owned()),
            "{ebgp:#?}"
        );
        assert_eq!(without_ipv6(&text), render(&every_option()));
    }

    /// The node's IPv6 address in these tests, and an IPv6 router on its segment.
    const NODE6: &str = "fd00:91::1";
    const R6: &str = "fd00:91::2";

    fn address6(text: &str) -> IpAddr {
        text.parse().expect("IPv6 address")
    }

    #[test]
    fn an_ipv6_peer_gets_a_session_over_ipv6_from_the_nodes_ipv6_address_carrying_ipv4() {
        let mut ipv4_network = config(&[peer(R1, 65000), peer(address6(R6), 65000)]);
        ipv4_network.local6 = Some(NODE6.parse().expect("address"));
        let text = render(&ipv4_network);
        assert!(text.contains("router id 192.168.91.1;\n"), "{text}");
        assert_eq!(
            block(&text, "protocol bgp peer_fd00_91__2"),
            [
                "protocol bgp peer_fd00_91__2 {",
                "local fd00:91::1 as 65001;",
                "neighbor fd00:91::2 port 179 as 65000;",
                "direct;",
                "strict bind on;",
                "hold time 9;",
                "keepalive time 3;",
                "connect delay time 1;",
                "connect retry time 1;",
                "error wait time 1, 5;",
                "allow local as;",
                "graceful restart on;",
                "graceful restart time 120;",
                "ipv4 {",
                "import all;",
                "export filter { if proto != \"advertised4\" then reject; bgp_next_hop = 192.168.91.1; accept; };",
                "};",
                "}",
            ],
            "IPv4 unicast only (no IPv6 subnet), its next hop the node's IPv4 address"
        );
        assert!(!text.contains("advertised6"), "{text}");
        // The IPv4 peer's session is what it is without the IPv6 one.
        assert_eq!(
            block(&text, "protocol bgp peer_192_168_91_2"),
            block(
                &render(&config(&[peer(R1, 65000)])),
                "protocol bgp peer_192_168_91_2"
            )
        );
        let sessions: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("protocol bgp"))
            .collect();
        assert_eq!(
            sessions,
            [
                "protocol bgp peer_192_168_91_2 {",
                "protocol bgp peer_fd00_91__2 {"
            ],
            "IPv4 peers first"
        );
    }

    #[test]
    fn a_dual_stack_node_gives_an_ipv6_peer_both_channels_each_with_its_own_next_hop() {
        let mut both = dual_stack(config(&[peer(address6(R6), 65000)]));
        both.local6 = Some(NODE6.parse().expect("address"));
        let text = render(&both);
        assert_eq!(
            block(&text, "protocol bgp peer_fd00_91__2"),
            [
                "protocol bgp peer_fd00_91__2 {",
                "local fd00:91::1 as 65001;",
                "neighbor fd00:91::2 port 179 as 65000;",
                "direct;",
                "strict bind on;",
                "hold time 9;",
                "keepalive time 3;",
                "connect delay time 1;",
                "connect retry time 1;",
                "error wait time 1, 5;",
                "allow local as;",
                "graceful restart on;",
                "graceful restart time 120;",
                "ipv4 {",
                "import all;",
                "export filter { if proto != \"advertised4\" then reject; bgp_next_hop = 192.168.91.1; accept; };",
                "};",
                "ipv6 {",
                "import where net ~ [ fd00:10:244::/56+ ];",
                "export filter { if proto != \"advertised6\" then reject; bgp_next_hop = fd00:91::1; accept; };",
                "};",
                "}",
            ]
        );
        // iBGP: a direct gateway in both channels, as on an IPv4 session.
        let mut ibgp = dual_stack(config(&[peer(address6(R6), 65001)]));
        ibgp.local6 = Some(NODE6.parse().expect("address"));
        let session = block(&render(&ibgp), "protocol bgp peer_fd00_91__2");
        assert_eq!(
            session.iter().filter(|l| *l == "gateway direct;").count(),
            2,
            "{session:?}"
        );
        assert!(
            !session.contains(&"next hop self;".to_owned()),
            "{session:?}"
        );
    }

    #[test]
    fn an_ipv6_peer_gets_md5_bfd_and_reflection_as_an_ipv4_one() {
        let mut options = every_option();
        let mut v6: Vec<PeerConfig> = options.peers.clone();
        for (p, address) in v6.iter_mut().zip(["fd00:60::1", R6]) {
            p.address = address6(address);
        }
        options.peers.extend(v6);
        options.local6 = Some(NODE6.parse().expect("address"));
        let text = render(&dual_stack(options));
        assert_eq!(text.matches("protocol bfd").count(), 1, "{text}");
        let ebgp = block(&text, "protocol bgp peer_fd00_60__1");
        for line in [
            "local fd00:91::1 as 65001;",
            "neighbor fd00:60::1 port 179 as 65000;",
            "multihop 3;",
            "passive on;",
            "password \"s3cr\\\"et\";",
            "bfd { min rx interval 100 ms; min tx interval 100 ms; multiplier 5; };",
            "export filter { if proto != \"advertised4\" then reject; bgp_community.add((65000,100)); bgp_large_community.add((4200000000,1,2)); bgp_local_pref = 150; bgp_next_hop = 192.168.91.1; accept; };",
        ] {
            assert!(ebgp.contains(&line.to_owned()), "{line:?} not in {ebgp:#?}");
        }
        let ibgp = block(&text, "protocol bgp peer_fd00_91__2");
        for line in [
            "rr client;",
            "export filter { if proto = \"advertised4\" then { bgp_community.add((65000,100)); bgp_large_community.add((4200000000,1,2)); bgp_local_pref = 150; bgp_next_hop = 192.168.91.1; accept; } if source = RTS_BGP then accept; reject; };",
            "export filter { if proto = \"advertised6\" then { bgp_community.add((65000,100)); bgp_large_community.add((4200000000,1,2)); bgp_local_pref = 150; bgp_next_hop = fd00:91::1; accept; } if source = RTS_BGP then accept; reject; };",
        ] {
            assert!(ibgp.contains(&line.to_owned()), "{line:?} not in {ibgp:#?}");
        }
        assert_eq!(
            ibgp.iter().filter(|l| *l == "next hop self ebgp;").count(),
            2,
            "{ibgp:#?}"
        );
    }

    #[test]
    fn an_ipv6_peer_without_an_ipv6_node_address_is_not_rendered() {
        let text = render(&config(&[peer(R1, 65000), peer(address6(R6), 65000)]));
        assert_eq!(text.matches("protocol bgp").count(), 1, "{text}");
        assert_eq!(text, render(&config(&[peer(R1, 65000)])));
        let mut bfd_only_on_v6 = peer(address6(R6), 65000);
        bfd_only_on_v6.options.bfd = Some(causeway_crds::bgp::Bfd {
            min_interval: std::time::Duration::from_millis(300),
            multiplier: 3,
        });
        let text = render(&config(&[bfd_only_on_v6]));
        assert!(!text.contains("protocol bfd"), "{text}");
    }

    #[test]
    fn no_peers_still_renders_a_valid_configuration() {
        let text = render(&config(&[]));
        assert!(!text.contains("protocol bgp"), "{text}");
        assert!(text.contains("protocol static advertised4"), "{text}");
    }
}
