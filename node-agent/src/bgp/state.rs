//! What the speaker reports: the sessions and the learned routes behind
//! [`Speaker::snapshot`](super::Speaker::snapshot) (plain data). BIRD's supervisor
//! ([`crate::bird`]) fills them from BIRD's control socket.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use ipnet::Ipv4Net;

/// One session as the snapshot shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// The peer's address.
    pub peer: Ipv4Addr,
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
    /// Routes the peer sent that BIRD holds, and routes BIRD sends it (the channel's
    /// `Routes:` counts).
    pub routes_received: u64,
    pub routes_advertised: u64,
}

/// What the speaker knows right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One per configured peer, sorted by peer address.
    pub sessions: Vec<SessionState>,
    /// Learned routes: prefix → next hop of BIRD's best path over all peers. Routes of a
    /// session that went down are gone (unless the router is restarting gracefully: BIRD keeps
    /// them until it is back or its restart time passes).
    pub learned: BTreeMap<Ipv4Net, Ipv4Addr>,
}
