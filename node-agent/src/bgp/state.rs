//! What the speaker reports: the sessions and the learned routes behind
//! [`Speaker::snapshot`](super::Speaker::snapshot) (plain data). BIRD's supervisor
//! ([`crate::bird`]) fills them from BIRD's control socket.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use ipnet::{Ipv4Net, Ipv6Net};

/// One session as the snapshot shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// The peer's address (IPv4 or IPv6).
    pub peer: IpAddr,
    /// The peer's configured AS.
    pub asn: u32,
    /// RFC 4271 state: Idle, Connect, Active, OpenSent, OpenConfirm or Established, as BIRD
    /// reports it. While BIRD is not running, Idle.
    pub state: String,
    /// Why the session is not Established: BIRD's last error or the peer's NOTIFICATION, in
    /// words ([`crate::bird::parse::message`]); empty when Established (and before the first
    /// attempt ended).
    pub message: String,
    /// When the session entered `state`.
    pub since: SystemTime,
    /// Routes the peer sent that BIRD holds, and routes BIRD sends it (the `ipv4` channel's
    /// `Routes:` counts).
    pub routes_received: u64,
    pub routes_advertised: u64,
    /// The same for the `ipv6` channel (dual-stack networks): received, advertised. `None`
    /// when the session has no IPv6 channel.
    pub routes6: Option<(u64, u64)>,
}

/// Routes learned over BGP, per address family: prefix → next hop of BIRD's best path over
/// all peers. A family's next hops are of that family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    pub v4: BTreeMap<Ipv4Net, Ipv4Addr>,
    /// IPv6 unicast (dual-stack networks).
    pub v6: BTreeMap<Ipv6Net, Ipv6Addr>,
}

impl Learned {
    /// No routes.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            v4: BTreeMap::new(),
            v6: BTreeMap::new(),
        }
    }

    /// How many routes, both families.
    #[must_use]
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether there are none of either family.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Forgets every route.
    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }
}

/// What the speaker knows right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One per configured peer, sorted by peer address.
    pub sessions: Vec<SessionState>,
    /// Learned routes of both families. Routes of a session that went down are gone (unless
    /// the router is restarting gracefully: BIRD keeps them until it is back or its restart
    /// time passes).
    pub learned: Learned,
}
