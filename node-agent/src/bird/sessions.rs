//! The session table the agent sees, from what BIRD reports (pure).
//!
//! [`Tracker::observe`] turns one poll of `show protocols all` into [`SessionState`]s for the
//! configured peers: the RFC state, when it last changed (BIRD prints only a time of day, so
//! the tracker notes the moment it saw the change), and why the session is not Established.
//! It remembers the last NOTIFICATION a peer sent until the session is up again: BIRD keeps
//! only the last error, and a router that refused us usually resets our next attempts, which
//! would otherwise hide the reason.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use super::parse::{self, Protocol};
use super::render::protocol_name;
use crate::bgp::{PeerConfig, SessionState};

#[derive(Clone, Debug)]
struct Tracked {
    state: String,
    since: SystemTime,
    message: String,
    notification: Option<String>,
}

/// Sessions as last reported, by peer address.
#[derive(Debug, Default)]
pub struct Tracker {
    sessions: BTreeMap<IpAddr, Tracked>,
}

impl Tracker {
    /// The sessions of `peers` given BIRD's `protocols`, at `now`. With `problem` (BIRD is
    /// not running, or refused the configuration), every session is Idle and says so.
    pub fn observe(
        &mut self,
        peers: &[PeerConfig],
        protocols: &BTreeMap<String, Protocol>,
        problem: Option<&str>,
        now: SystemTime,
    ) -> Vec<SessionState> {
        self.sessions
            .retain(|address, _| peers.iter().any(|p| p.address == *address));
        let mut out = Vec::with_capacity(peers.len());
        for peer in peers {
            let protocol = protocols.get(&protocol_name(peer.address));
            let state = match (problem, protocol) {
                (Some(_), _) | (None, None) => "Idle",
                (None, Some(p)) => p.state.as_str(),
            };
            let tracked = self
                .sessions
                .entry(peer.address)
                .or_insert_with(|| Tracked {
                    state: state.to_owned(),
                    since: now,
                    message: String::new(),
                    notification: None,
                });
            if tracked.state != state {
                tracked.state = state.to_owned();
                tracked.since = now;
            }
            if let Some(problem) = problem {
                tracked.message = problem.to_owned();
            } else if state == "Established" {
                tracked.message.clear();
                tracked.notification = None;
            } else if let Some(error) = protocol.and_then(|p| p.last_error.as_deref()) {
                if let Some(sent) = parse::received_notification(error) {
                    tracked.notification = Some(sent.to_owned());
                }
                tracked.message = parse::message(peer, error, tracked.notification.as_deref());
            }
            if tracked.message.is_empty() && state != "Established" {
                tracked.message = silence(peer).unwrap_or_default();
            }
            out.push(SessionState {
                peer: peer.address,
                asn: peer.asn,
                state: tracked.state.clone(),
                message: tracked.message.clone(),
                since: tracked.since,
                routes_received: protocol.map_or(0, |p| p.routes.0),
                routes_advertised: protocol.map_or(0, |p| p.routes.1),
                routes6: protocol.and_then(|p| p.routes6),
            });
        }
        out.sort_by_key(|s| s.peer);
        out
    }
}

/// Why a session may stay down without any error to show: a router whose TCP MD5 key
/// differs drops every segment without a reply, and a passive node waits for the router.
fn silence(peer: &PeerConfig) -> Option<String> {
    if peer.options.password.is_some() {
        return Some(
            "no answer from the router yet: with a TCP MD5 password, a router configured with another password (or none) drops every segment without a reply; check that both sides use the same key"
                .to_owned(),
        );
    }
    peer.options
        .passive
        .then(|| "waiting for the router to connect (passive: this node never connects)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::BGP_PORT;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const R1: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 91, 2));
    const R2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 91, 9));

    fn peer(address: IpAddr) -> PeerConfig {
        PeerConfig {
            address,
            asn: 65000,
            port: BGP_PORT,
            options: Default::default(),
        }
    }

    fn bird(state: &str, error: Option<&str>) -> BTreeMap<String, Protocol> {
        let name = protocol_name(R1);
        [(
            name.clone(),
            Protocol {
                name,
                state: state.to_owned(),
                last_error: error.map(str::to_owned),
                received: (0, 0),
                routes: (3, 1),
                received6: None,
                routes6: None,
            },
        )]
        .into()
    }

    #[test]
    fn state_since_and_message_follow_bird_and_the_notification_is_remembered() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let later = |s| t0 + Duration::from_secs(s);
        let peers = [peer(R1)];
        let mut tracker = Tracker::default();

        let steps: Vec<(BTreeMap<String, Protocol>, &str, &str, SystemTime)> = vec![
            (bird("Active", None), "Active", "", t0),
            (
                bird("Idle", Some("Received: Bad peer AS")),
                "Idle",
                "peer sent NOTIFICATION: Bad peer AS",
                later(1),
            ),
            (
                bird("Active", Some("Socket: Connection reset by peer")),
                "Active",
                "cannot connect to 192.168.91.2:179: Connection reset by peer (the peer's last NOTIFICATION: Bad peer AS)",
                later(2),
            ),
            (
                bird("Active", Some("Socket: Connection reset by peer")),
                "Active",
                "cannot connect to 192.168.91.2:179: Connection reset by peer (the peer's last NOTIFICATION: Bad peer AS)",
                later(2),
            ),
            (bird("Established", None), "Established", "", later(4)),
            (
                bird("Active", Some("Socket: Connection refused")),
                "Active",
                "cannot connect to 192.168.91.2:179: Connection refused",
                later(5),
            ),
        ];
        for (i, (protocols, state, message, since)) in steps.into_iter().enumerate() {
            let now = later(i as u64);
            let sessions = tracker.observe(&peers, &protocols, None, now);
            assert_eq!(sessions.len(), 1);
            let s = &sessions[0];
            assert_eq!(
                (s.state.as_str(), s.message.as_str(), s.since),
                (state, message, since),
                "step {i}"
            );
            assert_eq!((s.peer, s.asn), (R1, 65000));
        }
    }

    #[test]
    fn a_peer_bird_does_not_know_is_idle_and_a_problem_speaks_for_every_session() {
        let now = SystemTime::UNIX_EPOCH;
        let mut tracker = Tracker::default();
        let sessions =
            tracker.observe(&[peer(R2), peer(R1)], &bird("Established", None), None, now);
        let seen: Vec<(IpAddr, &str)> = sessions
            .iter()
            .map(|s| (s.peer, s.state.as_str()))
            .collect();
        assert_eq!(
            seen,
            [(R1, "Established"), (R2, "Idle")],
            "sorted by address"
        );

        let sessions = tracker.observe(
            &[peer(R1)],
            &BTreeMap::new(),
            Some("BIRD exited (signal 9); starting it again in 1s"),
            now,
        );
        assert_eq!(sessions.len(), 1, "removed peers are forgotten");
        assert_eq!(sessions[0].state, "Idle");
        assert_eq!(
            sessions[0].message,
            "BIRD exited (signal 9); starting it again in 1s"
        );
    }

    #[test]
    fn an_ipv6_peers_session_is_read_under_its_own_name_and_listed_after_ipv4_ones() {
        let v6: IpAddr = "fd00:50::1".parse().expect("address");
        let name = protocol_name(v6);
        assert_eq!(name, "peer_fd00_50__1");
        let mut protocols = bird("Active", Some("Socket: Connection refused"));
        protocols.insert(
            name.clone(),
            Protocol {
                name,
                state: "Established".to_owned(),
                last_error: None,
                received: (0, 0),
                routes: (2, 1),
                received6: Some((0, 0)),
                routes6: Some((3, 1)),
            },
        );
        let sessions = Tracker::default().observe(
            &[peer(v6), peer(R1)],
            &protocols,
            None,
            SystemTime::UNIX_EPOCH,
        );
        let seen: Vec<(IpAddr, &str)> = sessions
            .iter()
            .map(|s| (s.peer, s.state.as_str()))
            .collect();
        assert_eq!(seen, [(R1, "Active"), (v6, "Established")]);
        let ipv4: Vec<(u64, u64)> = sessions
            .iter()
            .map(|s| (s.routes_received, s.routes_advertised))
            .collect();
        assert_eq!(ipv4, [(3, 1), (2, 1)], "the ipv4 channels' counts");
        assert_eq!(sessions[0].routes6, None);
        assert_eq!(sessions[1].routes6, Some((3, 1)), "the ipv6 channel's");
        assert_eq!(
            sessions[0].message,
            "cannot connect to 192.168.91.2:179: Connection refused"
        );
    }
}
