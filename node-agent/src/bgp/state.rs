//! The session table and learned routes, shared between the session tasks (writers) and
//! [`Speaker::snapshot`](super::Speaker::snapshot) (reader), and the change counter behind
//! [`Speaker::changes`](super::Speaker::changes).
//!
//! After every write the snapshot is recomputed (best paths over all peers' Adj-RIBs-In) and
//! the counter is bumped only when the snapshot differs, so a watcher wakes for real changes
//! only. The lock is a plain mutex never held across an await.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use ipnet::Ipv4Net;
use tokio::sync::watch;

use super::rib::{self, PeerRib, RibChange};

/// One session as the snapshot shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// The peer's address.
    pub peer: Ipv4Addr,
    /// The peer's configured AS.
    pub asn: u32,
    /// RFC 4271 state: Idle, Connect, Active, OpenSent, OpenConfirm or Established. Between
    /// connection attempts (backoff) the session is Idle.
    pub state: String,
    /// Why the session is not Established: the last error or NOTIFICATION, in words; empty
    /// when Established (and before the first attempt ended).
    pub message: String,
    /// When the session entered `state`.
    pub since: SystemTime,
}

/// What the speaker knows right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// One per configured peer, sorted by peer address.
    pub sessions: Vec<SessionState>,
    /// Learned routes: prefix → next hop of the best path over all peers. Routes of a session
    /// that went down are gone.
    pub learned: BTreeMap<Ipv4Net, Ipv4Addr>,
}

/// The tables behind the snapshot.
#[derive(Debug, Default)]
struct Tables {
    sessions: BTreeMap<Ipv4Addr, SessionState>,
    ribs: BTreeMap<Ipv4Addr, PeerRib>,
    published: Snapshot,
}

/// Shared by the speaker and its sessions.
#[derive(Debug)]
pub(crate) struct Shared {
    tables: Mutex<Tables>,
    changes: watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            tables: Mutex::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl Shared {
    pub fn snapshot(&self) -> Snapshot {
        self.lock().published.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records a session's state. `message` replaces the last one when given; Established
    /// clears it. `since` moves only when the state does.
    pub fn set_state(&self, peer: Ipv4Addr, asn: u32, state: &str, message: Option<String>) {
        self.modify(|tables| {
            let entry = tables.sessions.entry(peer).or_insert_with(|| SessionState {
                peer,
                asn,
                state: state.to_owned(),
                message: String::new(),
                since: SystemTime::now(),
            });
            entry.asn = asn;
            if entry.state != state {
                entry.state = state.to_owned();
                entry.since = SystemTime::now();
            }
            if state == "Established" {
                entry.message.clear();
            } else if let Some(message) = message {
                entry.message = message;
            }
        });
    }

    /// Applies an UPDATE's changes to the peer's Adj-RIB-In.
    pub fn update_routes(&self, peer: Ipv4Addr, ebgp: bool, changes: Vec<RibChange>) {
        self.modify(|tables| {
            let rib = tables.ribs.entry(peer).or_default();
            rib.ebgp = ebgp;
            rib::apply(&mut rib.routes, changes);
        });
    }

    /// Forgets the peer's routes: its session went down.
    pub fn clear_routes(&self, peer: Ipv4Addr) {
        self.modify(|tables| {
            tables.ribs.remove(&peer);
        });
    }

    /// Forgets the peer altogether: it was removed from the configuration.
    pub fn remove(&self, peer: Ipv4Addr) {
        self.modify(|tables| {
            tables.ribs.remove(&peer);
            tables.sessions.remove(&peer);
        });
    }

    fn modify(&self, change: impl FnOnce(&mut Tables)) {
        let mut tables = self.lock();
        change(&mut tables);
        let snapshot = Snapshot {
            sessions: tables.sessions.values().cloned().collect(),
            learned: rib::best_routes(&tables.ribs),
        };
        if snapshot != tables.published {
            tables.published = snapshot;
            drop(tables);
            self.changes
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        // A panic while holding the lock leaves whole tables behind (every write is one
        // closure); keep serving them.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bgp::rib::Path;

    const R1: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 2);
    const R2: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 3);

    fn announce(prefix: &str, next_hop: Ipv4Addr) -> Vec<RibChange> {
        vec![RibChange::Announce(
            prefix.parse().expect("prefix"),
            Path {
                next_hop,
                local_pref: 100,
                as_path_len: 1,
                origin: 0,
                med: 0,
            },
        )]
    }

    #[test]
    fn the_counter_moves_only_when_the_snapshot_changes() {
        let shared = Shared::default();
        let changes = shared.subscribe();
        let count = || *changes.borrow();

        shared.set_state(R1, 65000, "Connect", None);
        assert_eq!(count(), 1);
        shared.set_state(R1, 65000, "Connect", None);
        assert_eq!(count(), 1, "same state: no change");
        shared.set_state(R1, 65000, "Established", None);
        assert_eq!(count(), 2);
        shared.update_routes(R1, true, announce("10.250.9.0/24", R1));
        assert_eq!(count(), 3);
        shared.update_routes(R1, true, announce("10.250.9.0/24", R1));
        assert_eq!(count(), 3, "same route again: no change");
        shared.clear_routes(R1);
        assert_eq!(count(), 4);
        assert!(shared.snapshot().learned.is_empty());
        shared.remove(R1);
        assert_eq!(count(), 5);
        assert_eq!(shared.snapshot(), Snapshot::default());
    }

    #[test]
    fn the_message_says_why_until_established_and_since_moves_with_the_state() {
        let shared = Shared::default();
        shared.set_state(R1, 65000, "Idle", Some("peer sent NOTIFICATION: x".into()));
        let first = shared.snapshot().sessions[0].clone();
        assert_eq!(first.message, "peer sent NOTIFICATION: x");

        shared.set_state(R1, 65000, "Connect", None);
        let connecting = shared.snapshot().sessions[0].clone();
        assert_eq!(connecting.message, "peer sent NOTIFICATION: x", "kept");
        assert!(connecting.since >= first.since);

        shared.set_state(R1, 65000, "Connect", Some("other".into()));
        let again = shared.snapshot().sessions[0].clone();
        assert_eq!(again.message, "other");
        assert_eq!(again.since, connecting.since, "same state: same since");

        shared.set_state(R1, 65000, "Established", Some("ignored".into()));
        assert_eq!(shared.snapshot().sessions[0].message, "");
    }

    #[test]
    fn sessions_are_sorted_by_peer_and_routes_merge_over_peers() {
        let shared = Shared::default();
        shared.set_state(R2, 65000, "Established", None);
        shared.set_state(R1, 65000, "Established", None);
        shared.update_routes(R2, true, announce("10.244.2.0/24", R2));
        shared.update_routes(R1, true, announce("10.250.9.0/24", R1));
        let snapshot = shared.snapshot();
        let peers: Vec<Ipv4Addr> = snapshot.sessions.iter().map(|s| s.peer).collect();
        assert_eq!(peers, [R1, R2]);
        assert_eq!(
            snapshot.learned,
            [
                ("10.244.2.0/24".parse().expect("prefix"), R2),
                ("10.250.9.0/24".parse().expect("prefix"), R1)
            ]
            .into()
        );
    }
}
