//! BIRD's answers in words and data (pure): `show protocols all` → each BGP session's state,
//! last error and per-channel counts, `show route where source = RTS_BGP all` → learned routes
//! of both families (`master4` and `master6`), and the error put into a sentence for
//! `SessionState.message`.
//!
//! The input is the text of a control-socket reply ([`crate::bird::control`] strips the reply
//! codes), which is what `birdc` prints; the tests read replies captured from BIRD 2.0.12 in
//! a network namespace (`testdata/`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::bgp::{Learned, PeerConfig};

/// One BGP protocol of `show protocols all`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Protocol {
    /// BIRD's name (`peer_192_168_1_1`).
    pub name: String,
    /// RFC 4271 state: Idle, Connect, Active, OpenSent, OpenConfirm or Established. BIRD's
    /// Close (a connection being torn down) and a protocol without a BGP state are Idle.
    pub state: String,
    /// `Last error:` as BIRD says it (`Socket: Connection refused`, `Received: Bad peer AS`).
    pub last_error: Option<String>,
    /// Route updates and withdrawals received so far on the `ipv4` channel: when these
    /// move, the routes changed.
    pub received: (u64, u64),
    /// The `ipv4` channel's `Routes:` line: routes imported from the peer and exported to it.
    pub routes: (u64, u64),
    /// The same two for the `ipv6` channel; `None` when the session has none.
    pub received6: Option<(u64, u64)>,
    pub routes6: Option<(u64, u64)>,
}

/// The BGP protocols of a `show protocols all` reply, by name. Other protocols (device,
/// static) are left out.
#[must_use]
pub fn protocols(text: &str) -> BTreeMap<String, Protocol> {
    let mut out = BTreeMap::new();
    let mut current: Option<Protocol> = None;
    // The channel whose lines follow (`Channel ipv4`, `Channel ipv6`).
    let mut ipv6 = false;
    for line in text.lines() {
        if line.is_empty() || line.starts_with("Name ") {
            continue;
        }
        if !line.starts_with(' ') {
            // A protocol's summary line: name, protocol, table, state, since, info.
            if let Some(done) = current.take() {
                out.insert(done.name.clone(), done);
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some("BGP")) = (words.next(), words.next()) else {
                continue;
            };
            current = Some(Protocol {
                name: name.to_owned(),
                state: "Idle".to_owned(),
                ..Protocol::default()
            });
            ipv6 = false;
            continue;
        }
        let Some(protocol) = current.as_mut() else {
            continue;
        };
        let trimmed = line.trim();
        if let Some(channel) = field(trimmed, "Channel") {
            ipv6 = channel == "ipv6";
            if ipv6 {
                protocol.received6 = Some((0, 0));
                protocol.routes6 = Some((0, 0));
            }
            continue;
        }
        if let Some(state) = field(trimmed, "BGP state:") {
            protocol.state = rfc_state(state).to_owned();
            continue;
        }
        if let Some(error) = field(trimmed, "Last error:") {
            protocol.last_error = Some(error.to_owned()).filter(|e| !e.is_empty());
            continue;
        }
        let (received, routes) = if ipv6 {
            (
                protocol.received6.get_or_insert_default(),
                protocol.routes6.get_or_insert_default(),
            )
        } else {
            (&mut protocol.received, &mut protocol.routes)
        };
        if let Some(counts) = field(trimmed, "Import updates:") {
            received.0 = first_number(counts);
        } else if let Some(counts) = field(trimmed, "Import withdraws:") {
            received.1 = first_number(counts);
        } else if let Some(counts) = field(trimmed, "Routes:") {
            // `1 imported, 0 exported, 1 preferred`
            let mut numbers = counts.split(',').map(|part| first_number(part.trim()));
            *routes = (
                numbers.next().unwrap_or_default(),
                numbers.next().unwrap_or_default(),
            );
        }
    }
    if let Some(done) = current {
        out.insert(done.name.clone(), done);
    }
    out
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.strip_prefix(name).map(str::trim)
}

fn first_number(text: &str) -> u64 {
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// BIRD's BGP state names are RFC 4271's, plus `Close` and `Down`.
fn rfc_state(bird: &str) -> &'static str {
    match bird {
        "Connect" => "Connect",
        "Active" => "Active",
        "OpenSent" => "OpenSent",
        "OpenConfirm" => "OpenConfirm",
        "Established" => "Established",
        _ => "Idle",
    }
}

/// The learned routes of a `show route where source = RTS_BGP all` reply, both families:
/// prefix → next hop of the best route (the one BIRD marks `*`, else the first listed). The
/// next hop is the route's BGP NEXT_HOP (`BGP.next_hop:`; its first address of the prefix's
/// family, the global one where BIRD also shows a link-local one), or its gateway (`via`) when
/// the attribute is not shown; routes without a next hop of their prefix's family are left
/// out.
#[must_use]
pub fn routes(text: &str) -> Learned {
    #[derive(Default)]
    struct Route {
        best: bool,
        next_hop: Option<IpAddr>,
        via: Option<IpAddr>,
    }
    // `None` for a network that is neither (its routes are skipped too).
    let mut networks: Vec<(Option<IpNet>, Vec<Route>)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("Table ") || line.trim().is_empty() {
            continue;
        }
        let is_route = line.contains(" [") && line.contains(']');
        if is_route {
            // A network's first route starts with the prefix; further routes of the same
            // network start with blanks.
            if !line.starts_with([' ', '\t']) {
                let prefix = line.split_whitespace().next().unwrap_or_default();
                networks.push((prefix.parse::<IpNet>().ok(), Vec::new()));
            }
            let best = line
                .split_once(']')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('*'));
            if let Some((_, routes)) = networks.last_mut() {
                routes.push(Route {
                    best,
                    ..Route::default()
                });
            }
            continue;
        }
        let Some((net, route)) = networks
            .last_mut()
            .and_then(|(net, r)| Some(((*net)?, r.last_mut()?)))
        else {
            continue;
        };
        let of_family = |word: &str| {
            word.parse::<IpAddr>()
                .ok()
                .filter(|a| a.is_ipv4() == matches!(net, IpNet::V4(_)))
        };
        let trimmed = line.trim();
        if let Some(value) = field(trimmed, "BGP.next_hop:") {
            route.next_hop = value.split_whitespace().find_map(of_family);
        } else if let Some(value) = trimmed.strip_prefix("via ") {
            route.via = value.split_whitespace().next().and_then(of_family);
        }
    }
    let mut learned = Learned::new();
    for (net, routes) in networks {
        let Some(net) = net else { continue };
        let Some(best) = routes.iter().find(|r| r.best).or_else(|| routes.first()) else {
            continue;
        };
        match (net, best.next_hop.or(best.via)) {
            (IpNet::V4(net), Some(IpAddr::V4(hop))) => {
                learned.v4.insert(net, hop);
            }
            (IpNet::V6(net), Some(IpAddr::V6(hop))) => {
                learned.v6.insert(net, hop);
            }
            _ => {}
        }
    }
    learned
}

/// Why a session is not Established, in words, from BIRD's last error. `notification` is
/// the last NOTIFICATION the peer sent since the session was last up, remembered by the
/// speaker: BIRD replaces it with the next error (usually the peer resetting our next
/// connection while it waits), and it is the more useful half.
#[must_use]
pub fn message(peer: &PeerConfig, last_error: &str, notification: Option<&str>) -> String {
    let (kind, detail) = last_error
        .split_once(": ")
        .map_or(("", last_error), |(k, d)| (k, d.trim()));
    let text = match kind {
        "Received" => format!("peer sent NOTIFICATION: {detail}"),
        "BGP Error" => match detail {
            "Hold timer expired" => format!(
                "hold timer expired: nothing from {} within the hold time; sent NOTIFICATION: Hold timer expired",
                peer.address
            ),
            "Bad peer AS" => format!(
                "the peer's OPEN does not carry the configured peer AS {}; sent NOTIFICATION: Bad peer AS",
                peer.asn
            ),
            other => format!("sent NOTIFICATION: {other}"),
        },
        "Socket" if detail == "Connection closed" => {
            format!("{} closed the connection", socket(peer))
        }
        "Socket" => format!("cannot connect to {}: {detail}", socket(peer)),
        "Error" if detail == "Link down" => {
            format!("the link towards {} went down", peer.address)
        }
        _ => last_error.to_owned(),
    };
    match notification {
        Some(sent) if kind != "Received" => {
            format!("{text} (the peer's last NOTIFICATION: {sent})")
        }
        _ => text,
    }
}

/// The peer's address and port as `192.168.1.1:179` or `[fd00:50::1]:179`.
fn socket(peer: &PeerConfig) -> std::net::SocketAddr {
    std::net::SocketAddr::new(peer.address, peer.port)
}

/// The NOTIFICATION text of a `Received: ...` error.
#[must_use]
pub fn received_notification(last_error: &str) -> Option<&str> {
    last_error.strip_prefix("Received: ").map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::BGP_PORT;
    use ipnet::{Ipv4Net, Ipv6Net};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const R1: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 2);

    fn peer() -> PeerConfig {
        PeerConfig {
            address: R1.into(),
            asn: 65000,
            port: BGP_PORT,
            options: Default::default(),
        }
    }

    #[test]
    fn protocols_in_every_captured_state() {
        let cases: [(&str, &str, &str, Option<&str>); 6] = [
            (
                include_str!("testdata/protocols_established.txt"),
                "peer_192_168_91_2",
                "Established",
                None,
            ),
            (
                include_str!("testdata/protocols_established.txt"),
                "peer_192_168_91_9",
                "Connect",
                Some("Socket: No route to host"),
            ),
            (
                include_str!("testdata/protocols_hold_timer.txt"),
                "peer_192_168_91_2",
                "Idle",
                Some("BGP Error: Hold timer expired"),
            ),
            (
                include_str!("testdata/protocols_refused.txt"),
                "peer_192_168_91_2",
                "Active",
                Some("Socket: Connection refused"),
            ),
            (
                include_str!("testdata/protocols_received_bad_peer_as.txt"),
                "peer_192_168_91_2",
                "Idle",
                Some("Received: Bad peer AS"),
            ),
            (
                include_str!("testdata/protocols_sent_bad_peer_as.txt"),
                "peer_192_168_91_2",
                "Idle",
                Some("BGP Error: Bad peer AS"),
            ),
        ];
        for (text, name, state, error) in cases {
            let all = protocols(text);
            let protocol = all.get(name).unwrap_or_else(|| panic!("{name} in {all:?}"));
            assert_eq!(protocol.state, state, "{name}");
            assert_eq!(protocol.last_error.as_deref(), error, "{name}");
        }
    }

    #[test]
    fn only_bgp_protocols_are_listed_with_their_received_counts() {
        let all = protocols(include_str!("testdata/protocols_established.txt"));
        let names: Vec<&str> = all.keys().map(String::as_str).collect();
        assert_eq!(names, ["peer_192_168_91_2", "peer_192_168_91_9"]);
        assert_eq!(all["peer_192_168_91_2"].received, (2, 0));
        assert_eq!(all["peer_192_168_91_9"].received, (0, 0));
        // The static protocol's `Routes:` line (before the first BGP one) counts for none.
        assert_eq!(all["peer_192_168_91_2"].routes, (2, 1));
        assert_eq!(all["peer_192_168_91_9"].routes, (0, 0));
    }

    #[test]
    fn routes_map_each_prefix_to_its_bgp_next_hop() {
        let learned = routes(include_str!("testdata/routes.txt"));
        let expected: BTreeMap<Ipv4Net, Ipv4Addr> = [
            ("10.250.8.0/24".parse().expect("prefix"), R1),
            ("10.250.9.0/24".parse().expect("prefix"), R1),
        ]
        .into();
        assert_eq!(learned.v4, expected);
        assert!(learned.v6.is_empty());
        assert!(routes("Table master4:\n").is_empty());
        assert!(routes("").is_empty());
    }

    #[test]
    fn the_best_of_several_routes_wins_in_either_family() {
        // BIRD's layout for a network with two routes (the second starts with blanks) and
        // for an IPv6 network.
        let text = "Table master4:
10.250.9.0/24        unicast [peer_192_168_91_3 09:36:51.489] (100) [AS65000i]
\tvia 192.168.91.3 on eth0
\tBGP.next_hop: 192.168.91.3
                     unicast [peer_192_168_91_2 09:36:51.489] * (100) [AS65000i]
\tvia 192.168.91.2 on eth0
\tBGP.next_hop: 192.168.91.2
10.250.7.0/24        unicast [peer_192_168_91_3 09:36:51.489] (100) [AS65000i]
\tvia 192.168.91.3 on eth0
fd00::/64            unicast [peer_192_168_91_2 09:36:51.489] * (100) [AS65000i]
\tvia fe80::1 on eth0
fd00:1::/64          unicast [peer_192_168_91_3 09:36:51.489 from 192.168.91.3] (100) [AS65000i]
\tvia fd00:91::3 on eth0
\tBGP.next_hop: fd00:91::3 fe80::3
                     unicast [peer_192_168_91_2 09:36:51.489 from 192.168.91.2] * (100) [AS65000i]
\tvia fd00:91::2 on eth0
\tBGP.next_hop: ::ffff:192.168.91.2
";
        let learned = routes(text);
        let expected: BTreeMap<Ipv4Net, Ipv4Addr> = [
            (
                "10.250.7.0/24".parse().expect("prefix"),
                Ipv4Addr::new(192, 168, 91, 3),
            ),
            ("10.250.9.0/24".parse().expect("prefix"), R1),
        ]
        .into();
        assert_eq!(learned.v4, expected);
        // Only a gateway shown: it is the next hop; a mapped IPv4 next hop is IPv6 as sent.
        let expected6: BTreeMap<Ipv6Net, Ipv6Addr> = [
            (
                "fd00::/64".parse().expect("prefix"),
                "fe80::1".parse().expect("ip"),
            ),
            (
                "fd00:1::/64".parse().expect("prefix"),
                "::ffff:192.168.91.2".parse().expect("ip"),
            ),
        ]
        .into();
        assert_eq!(learned.v6, expected6);
    }

    #[test]
    fn a_dual_stack_session_reports_each_channels_counts() {
        // Captured from BIRD 2.0.12: a session with an ipv4 and an ipv6 channel (the router
        // sent two IPv4 routes and three IPv6 ones, one outside the network's range and
        // filtered on import), and a session that never came up.
        let all = protocols(include_str!("testdata/protocols_dual_stack.txt"));
        let up = &all["peer_192_168_91_2"];
        assert_eq!(up.state, "Established");
        assert_eq!(up.routes, (2, 1), "ipv4: imported, exported");
        assert_eq!(up.received, (2, 0));
        assert_eq!(up.routes6, Some((2, 1)), "ipv6: imported, exported");
        assert_eq!(up.received6, Some((3, 0)), "received, filtered or not");
        let down = &all["peer_192_168_91_9"];
        assert_eq!(down.state, "Connect");
        assert_eq!((down.routes, down.routes6), ((0, 0), Some((0, 0))));
        // An IPv4-only session has no IPv6 counts.
        let ipv4 = protocols(include_str!("testdata/protocols_established.txt"));
        assert_eq!(ipv4["peer_192_168_91_2"].routes6, None);
        assert_eq!(ipv4["peer_192_168_91_2"].received6, None);
    }

    #[test]
    fn routes_of_both_tables_are_read_with_their_own_familys_next_hop() {
        // Captured from BIRD 2.0.12: IPv6 routes over an IPv4 session (`from 192.168.91.2`),
        // their next hop the router's IPv6 address.
        let learned = routes(include_str!("testdata/routes_dual_stack.txt"));
        let v4: BTreeMap<Ipv4Net, Ipv4Addr> = [
            ("10.244.7.0/24".parse().expect("prefix"), R1),
            ("10.250.9.0/24".parse().expect("prefix"), R1),
        ]
        .into();
        let r1_6: Ipv6Addr = "fd00:91::2".parse().expect("ip");
        let v6: BTreeMap<Ipv6Net, Ipv6Addr> = [
            ("fd00:10:244:7::/64".parse().expect("prefix"), r1_6),
            ("fd00:10:244:8::/64".parse().expect("prefix"), r1_6),
        ]
        .into();
        assert_eq!((learned.v4, learned.v6), (v4, v6));
    }

    #[test]
    fn errors_become_sentences() {
        let cases = [
            (
                "Received: Bad peer AS",
                None,
                "peer sent NOTIFICATION: Bad peer AS",
            ),
            (
                "BGP Error: Bad peer AS",
                None,
                "the peer's OPEN does not carry the configured peer AS 65000; sent NOTIFICATION: Bad peer AS",
            ),
            (
                "BGP Error: Hold timer expired",
                None,
                "hold timer expired: nothing from 192.168.91.2 within the hold time; sent NOTIFICATION: Hold timer expired",
            ),
            (
                "Socket: Connection refused",
                None,
                "cannot connect to 192.168.91.2:179: Connection refused",
            ),
            (
                "Socket: Connection reset by peer",
                Some("Bad peer AS"),
                "cannot connect to 192.168.91.2:179: Connection reset by peer (the peer's last NOTIFICATION: Bad peer AS)",
            ),
            (
                "Socket: Connection closed",
                None,
                "192.168.91.2:179 closed the connection",
            ),
            (
                "Error: Link down",
                None,
                "the link towards 192.168.91.2 went down",
            ),
            ("Something new", None, "Something new"),
        ];
        for (error, notification, expected) in cases {
            assert_eq!(message(&peer(), error, notification), expected, "{error}");
        }
        assert_eq!(
            received_notification("Received: Bad peer AS"),
            Some("Bad peer AS")
        );
        assert_eq!(received_notification("Socket: Connection refused"), None);
        // An IPv6 peer's address and port read as a socket address.
        let mut ipv6 = peer();
        ipv6.address = "fd00:50::1".parse().expect("address");
        for (error, expected) in [
            (
                "Socket: Connection refused",
                "cannot connect to [fd00:50::1]:179: Connection refused",
            ),
            (
                "Socket: Connection closed",
                "[fd00:50::1]:179 closed the connection",
            ),
        ] {
            assert_eq!(message(&ipv6, error, None), expected, "{error}");
        }
    }
}
