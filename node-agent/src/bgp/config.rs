//! The speaker's configuration, and what a reconfiguration means for each session (pure).
//!
//! [`Speaker::update`](super::Speaker::update) receives a whole new [`SpeakerConfig`]. A
//! session is restarted only when something it put in its OPEN changed (local AS, router ID)
//! or its peer's own settings did (AS, port); new timers apply to the next connection, and a
//! new set of advertised prefixes travels as UPDATEs. So a reconfiguration never flaps a
//! session whose peer configuration is unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The well-known BGP port.
pub const BGP_PORT: u16 = 179;

/// RFC 4271 §4.2: a hold time is either zero or at least three seconds.
pub(crate) const MIN_HOLD_TIME: u16 = 3;

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
    /// lowered to it). NetGauze's state machine sends keepalives every third of the negotiated
    /// hold time; the session sends extra ones at this interval when it is shorter.
    pub keepalive: u16,
    /// The neighbours; one session each (an address listed twice counts once, first wins).
    pub peers: Vec<PeerConfig>,
    /// Prefixes to announce: this node's pod subnet, usually one.
    pub advertise: Vec<Ipv4Net>,
    /// NEXT_HOP of the announced routes: the node address.
    pub next_hop: Ipv4Addr,
}

/// What a session puts in its OPEN, and where it connects: any change restarts the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    pub peer: PeerConfig,
}

impl Identity {
    /// External BGP: the peer is in another AS.
    pub fn ebgp(&self) -> bool {
        self.peer.asn != self.local_asn
    }
}

/// Timers for a session's next connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timers {
    pub hold_time: u16,
    pub keepalive: u16,
}

impl Timers {
    /// The configured timers made valid: a hold time of 1 or 2 s becomes 3 s (RFC 4271
    /// §4.2), and the keepalive interval is at most a third of the hold time and at least 1 s,
    /// or 0 when the hold time is 0.
    pub fn from_config(config: &SpeakerConfig) -> Self {
        let hold_time = match config.hold_time {
            0 => 0,
            held => held.max(MIN_HOLD_TIME),
        };
        let keepalive = if hold_time == 0 {
            0
        } else {
            config.keepalive.clamp(1, hold_time / 3)
        };
        Self {
            hold_time,
            keepalive,
        }
    }
}

/// The routes this node originates: the same for every peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Advertisement {
    pub prefixes: BTreeSet<Ipv4Net>,
    pub next_hop: Ipv4Addr,
}

impl Advertisement {
    /// The configured prefixes, truncated to their network address (`10.0.0.5/24` is
    /// `10.0.0.0/24`) and deduplicated.
    pub fn from_config(config: &SpeakerConfig) -> Self {
        Self {
            prefixes: config.advertise.iter().map(Ipv4Net::trunc).collect(),
            next_hop: config.next_hop,
        }
    }
}

/// The sessions a configuration asks for, by peer address.
pub(crate) fn identities(config: &SpeakerConfig) -> BTreeMap<Ipv4Addr, Identity> {
    let mut sessions = BTreeMap::new();
    for peer in &config.peers {
        sessions.entry(peer.address).or_insert(Identity {
            local_asn: config.local_asn,
            router_id: config.router_id,
            peer: *peer,
        });
    }
    sessions
}

/// What happens to one session when the configuration changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A new peer: start a session.
    Start(Identity),
    /// Something in the session's OPEN or its peer's settings changed: close the session
    /// (Cease, other configuration change) and start it again.
    Restart(Identity),
    /// The peer is gone: close its session (Cease, peer de-configured).
    Stop(Ipv4Addr),
}

/// The changes that take the `running` sessions to the `wanted` ones: stops first, then
/// restarts and starts, each in address order. Sessions that are the same in both are not
/// mentioned: they keep running.
pub(crate) fn plan(
    running: &BTreeMap<Ipv4Addr, Identity>,
    wanted: &BTreeMap<Ipv4Addr, Identity>,
) -> Vec<Change> {
    let stops = running
        .keys()
        .filter(|address| !wanted.contains_key(address))
        .map(|address| Change::Stop(*address));
    let starts = wanted
        .iter()
        .filter_map(|(address, identity)| match running.get(address) {
            None => Some(Change::Start(*identity)),
            Some(current) if current != identity => Some(Change::Restart(*identity)),
            Some(_) => None,
        });
    stops.chain(starts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const R1: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 254);
    const R2: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 253);

    fn peer(address: Ipv4Addr, asn: u32) -> PeerConfig {
        PeerConfig {
            address,
            asn,
            port: BGP_PORT,
        }
    }

    fn config(local_asn: u32, peers: &[PeerConfig]) -> SpeakerConfig {
        SpeakerConfig {
            local_asn,
            router_id: NODE,
            hold_time: 90,
            keepalive: 30,
            peers: peers.to_vec(),
            advertise: vec!["10.244.1.0/24".parse().expect("prefix")],
            next_hop: NODE,
        }
    }

    fn id(local_asn: u32, peer: PeerConfig) -> Identity {
        Identity {
            local_asn,
            router_id: NODE,
            peer,
        }
    }

    #[test]
    fn plan_starts_stops_and_restarts_only_sessions_whose_identity_changed() {
        let cases: Vec<(&str, SpeakerConfig, SpeakerConfig, Vec<Change>)> = vec![
            (
                "same config: nothing",
                config(65001, &[peer(R1, 65000)]),
                config(65001, &[peer(R1, 65000)]),
                vec![],
            ),
            (
                "timers and prefixes only: nothing",
                config(65001, &[peer(R1, 65000)]),
                SpeakerConfig {
                    hold_time: 9,
                    keepalive: 3,
                    advertise: vec!["10.244.2.0/24".parse().expect("prefix")],
                    ..config(65001, &[peer(R1, 65000)])
                },
                vec![],
            ),
            (
                "peer added",
                config(65001, &[peer(R1, 65000)]),
                config(65001, &[peer(R1, 65000), peer(R2, 65000)]),
                vec![Change::Start(id(65001, peer(R2, 65000)))],
            ),
            (
                "peer removed",
                config(65001, &[peer(R1, 65000), peer(R2, 65000)]),
                config(65001, &[peer(R2, 65000)]),
                vec![Change::Stop(R1)],
            ),
            (
                "peer AS changed",
                config(65001, &[peer(R1, 65000), peer(R2, 65000)]),
                config(65001, &[peer(R1, 65005), peer(R2, 65000)]),
                vec![Change::Restart(id(65001, peer(R1, 65005)))],
            ),
            (
                "peer port changed",
                config(65001, &[peer(R1, 65000)]),
                config(
                    65001,
                    &[PeerConfig {
                        port: 1179,
                        ..peer(R1, 65000)
                    }],
                ),
                vec![Change::Restart(id(
                    65001,
                    PeerConfig {
                        port: 1179,
                        ..peer(R1, 65000)
                    },
                ))],
            ),
            (
                "local AS changed: every session",
                config(65001, &[peer(R1, 65000), peer(R2, 65000)]),
                config(65002, &[peer(R1, 65000), peer(R2, 65000)]),
                vec![
                    Change::Restart(id(65002, peer(R2, 65000))),
                    Change::Restart(id(65002, peer(R1, 65000))),
                ],
            ),
            (
                "all peers removed, one added",
                config(65001, &[peer(R1, 65000)]),
                config(65001, &[peer(R2, 65000)]),
                vec![Change::Stop(R1), Change::Start(id(65001, peer(R2, 65000)))],
            ),
        ];
        for (name, before, after, expected) in cases {
            let running = identities(&before);
            let wanted = identities(&after);
            assert_eq!(plan(&running, &wanted), expected, "{name}");
        }
    }

    #[test]
    fn an_address_listed_twice_is_one_session_and_the_first_entry_wins() {
        let sessions = identities(&config(65001, &[peer(R1, 65000), peer(R1, 65009)]));
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[&R1].peer.asn, 65000);
    }

    #[test]
    fn timers_are_made_valid() {
        for (hold_time, keepalive, expected) in [
            (90, 30, (90, 30)),
            (3, 1, (3, 1)),
            (0, 30, (0, 0)),
            (1, 1, (3, 1)),
            (2, 0, (3, 1)),
            (9, 10, (9, 3)),
            (9, 0, (9, 1)),
        ] {
            let timers = Timers::from_config(&SpeakerConfig {
                hold_time,
                keepalive,
                ..config(65001, &[])
            });
            assert_eq!(
                (timers.hold_time, timers.keepalive),
                expected,
                "hold {hold_time} keepalive {keepalive}"
            );
        }
    }

    #[test]
    fn advertised_prefixes_are_truncated_and_deduplicated() {
        let advertisement = Advertisement::from_config(&SpeakerConfig {
            advertise: ["10.244.1.7/24", "10.244.1.0/24", "10.244.9.0/24"]
                .iter()
                .map(|p| p.parse().expect("prefix"))
                .collect(),
            ..config(65001, &[])
        });
        let prefixes: Vec<String> = advertisement
            .prefixes
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(prefixes, ["10.244.1.0/24", "10.244.9.0/24"]);
        assert_eq!(advertisement.next_hop, NODE);
    }
}
