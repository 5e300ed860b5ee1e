//! After an agent restart, the routes an earlier agent installed from BGP, kept while the new
//! BIRD's sessions come up (pure; the agent passes the clock in).
//!
//! The kernel keeps the agent's routes across its restart, but a new BIRD knows none of
//! them. Planning from BIRD's empty table would remove every route to other racks until the
//! sessions are back (a second or so), and then add them again. So the agent reads its routes
//! at start-up ([`Carried::new`]) and keeps installing them until every session has been
//! Established for [`SETTLE`] (the routers' routes arrive right after the session comes up)
//! or [`LIMIT`] has passed, whichever comes first ([`Carried::merge`]); then only BIRD's
//! table counts, so a route that disappeared meanwhile goes too. Routes BIRD learned win
//! over carried ones for the same prefix. The plan filters them like any learned route
//! (inside the network's range, next hop on the segment, not a direct peer's). Both
//! families are carried alike (IPv6 routes of a dual-stack network too).

use std::time::{Duration, Instant};

use super::{Learned, SessionState};

/// How long carried routes stay at most: as long as a router helping a graceful restart
/// keeps the node's own routes by default ([`crate::bgp::DEFAULT_RESTART_TIME`]).
pub const LIMIT: Duration = Duration::from_secs(crate::bgp::DEFAULT_RESTART_TIME as u64);

/// How long every session must have been Established before carried routes go.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Routes from before the restart, and how long they stay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Carried {
    routes: Learned,
    until: Instant,
    established: Option<Instant>,
}

/// What [`Carried::merge`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Carried routes were added; look again at [`Carried::wake`] at the latest.
    Kept,
    /// Their time is over: drop the [`Carried`].
    Done,
}

impl Carried {
    /// Carries `routes` (none: nothing to carry) from `now`.
    #[must_use]
    pub fn new(routes: Learned, now: Instant) -> Option<Self> {
        (!routes.is_empty()).then(|| Self {
            routes,
            until: now + LIMIT,
            established: None,
        })
    }

    /// How many routes are carried, both families.
    #[must_use]
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether nothing is carried (never, for a value [`Carried::new`] returned).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Adds the carried routes to BIRD's `learned` while their time lasts, given the
    /// sessions now.
    pub fn merge(
        &mut self,
        sessions: &[SessionState],
        learned: &mut Learned,
        now: Instant,
    ) -> Merge {
        let up = !sessions.is_empty() && sessions.iter().all(|s| s.state == "Established");
        self.established = if up {
            Some(self.established.unwrap_or(now))
        } else {
            None
        };
        if now >= self.wake() {
            return Merge::Done;
        }
        for (prefix, next_hop) in &self.routes.v4 {
            learned.v4.entry(*prefix).or_insert(*next_hop);
        }
        for (prefix, next_hop) in &self.routes.v6 {
            learned.v6.entry(*prefix).or_insert(*next_hop);
        }
        Merge::Kept
    }

    /// When the carried routes go unless the sessions drop again: a pass then lets them go.
    #[must_use]
    pub fn wake(&self) -> Instant {
        self.established
            .map_or(self.until, |at| (at + SETTLE).min(self.until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::{Ipv4Net, Ipv6Net};
    use std::collections::BTreeMap;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::SystemTime;

    fn net(p: &str) -> Ipv4Net {
        p.parse().expect("prefix")
    }

    const R: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
    const S: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);

    fn session(state: &str) -> SessionState {
        SessionState {
            peer: R.into(),
            asn: 64500,
            state: state.to_owned(),
            message: String::new(),
            since: SystemTime::UNIX_EPOCH,
            routes_received: 0,
            routes_advertised: 0,
            routes6: None,
        }
    }

    #[test]
    fn nothing_to_carry_is_none() {
        assert_eq!(Carried::new(Learned::new(), Instant::now()), None);
    }

    #[test]
    fn carried_routes_stay_until_every_session_settled_or_the_limit() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let old = Learned {
            v4: [(net("10.246.3.0/24"), R), (net("10.246.9.0/24"), R)].into(),
            v6: BTreeMap::new(),
        };
        let bird = Learned {
            v4: [(net("10.246.3.0/24"), S)].into(),
            v6: BTreeMap::new(),
        };
        let up = [session("Established")];
        let down = [session("Active")];
        let mixed = [session("Established"), session("Connect")];
        // (sessions, BIRD's table, when, outcome, routes then)
        type Step<'a> = (
            &'a [SessionState],
            bool,
            u64,
            Merge,
            Vec<(&'a str, Ipv4Addr)>,
        );
        let steps: Vec<Step<'_>> = vec![
            (
                &[],
                false,
                0,
                Merge::Kept,
                vec![("10.246.3.0/24", R), ("10.246.9.0/24", R)],
            ),
            (
                &down,
                false,
                500,
                Merge::Kept,
                vec![("10.246.3.0/24", R), ("10.246.9.0/24", R)],
            ),
            (
                &mixed,
                true,
                900,
                Merge::Kept,
                vec![("10.246.3.0/24", S), ("10.246.9.0/24", R)],
            ),
            (
                &up,
                true,
                1000,
                Merge::Kept,
                vec![("10.246.3.0/24", S), ("10.246.9.0/24", R)],
            ),
            // A flap restarts the settling time.
            (
                &down,
                false,
                1500,
                Merge::Kept,
                vec![("10.246.3.0/24", R), ("10.246.9.0/24", R)],
            ),
            (
                &up,
                true,
                2000,
                Merge::Kept,
                vec![("10.246.3.0/24", S), ("10.246.9.0/24", R)],
            ),
            (
                &up,
                true,
                3999,
                Merge::Kept,
                vec![("10.246.3.0/24", S), ("10.246.9.0/24", R)],
            ),
            (&up, true, 4000, Merge::Done, vec![("10.246.3.0/24", S)]),
        ];
        let mut carried = Carried::new(old.clone(), t0).expect("routes");
        assert_eq!(carried.len(), 2);
        for (i, (sessions, with_bird, when, outcome, routes)) in steps.into_iter().enumerate() {
            let mut learned = if with_bird {
                bird.clone()
            } else {
                Learned::new()
            };
            assert_eq!(
                carried.merge(sessions, &mut learned, at(when)),
                outcome,
                "step {i}"
            );
            let want: BTreeMap<Ipv4Net, Ipv4Addr> =
                routes.into_iter().map(|(p, n)| (net(p), n)).collect();
            assert_eq!(learned.v4, want, "step {i}");
            assert!(learned.v6.is_empty(), "step {i}");
        }
        assert_eq!(carried.wake(), at(4000));

        let mut never_up = Carried::new(old, t0).expect("routes");
        assert_eq!(never_up.wake(), t0 + LIMIT);
        let mut learned = Learned::new();
        assert_eq!(never_up.merge(&down, &mut learned, t0 + LIMIT), Merge::Done);
        assert!(learned.is_empty(), "the limit passed: BIRD's table only");
    }

    #[test]
    fn ipv6_routes_are_carried_beside_ipv4_ones_and_birds_win_per_family() {
        let net6 = |p: &str| -> Ipv6Net { p.parse().expect("prefix") };
        let r6: Ipv6Addr = "fd00:50::1".parse().expect("address");
        let s6: Ipv6Addr = "fd00:50::2".parse().expect("address");
        let t0 = Instant::now();
        let old = Learned {
            v4: [(net("10.246.3.0/24"), R)].into(),
            v6: [
                (net6("fd00:10:246:3::/64"), r6),
                (net6("fd00:10:246:9::/64"), r6),
            ]
            .into(),
        };
        let mut carried = Carried::new(old, t0).expect("routes");
        assert_eq!(carried.len(), 3);
        // BIRD knows one IPv6 route by now, with another next hop: it wins for its prefix.
        let mut learned = Learned {
            v4: BTreeMap::new(),
            v6: [(net6("fd00:10:246:3::/64"), s6)].into(),
        };
        assert_eq!(
            carried.merge(&[session("Established")], &mut learned, t0),
            Merge::Kept
        );
        assert_eq!(learned.v4, BTreeMap::from([(net("10.246.3.0/24"), R)]));
        assert_eq!(
            learned.v6,
            BTreeMap::from([
                (net6("fd00:10:246:3::/64"), s6),
                (net6("fd00:10:246:9::/64"), r6),
            ])
        );
        let mut later = Learned::new();
        assert_eq!(
            carried.merge(&[session("Established")], &mut later, t0 + SETTLE),
            Merge::Done
        );
        assert!(later.is_empty(), "settled: BIRD's table only");
    }
}
