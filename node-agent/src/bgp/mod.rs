//! The embedded BGP speaker of routed mode (issue #6): the node announces its pod subnet to
//! the network's routers and learns the routes they send back (other nodes' pod subnets,
//! reflected or re-announced by the router).
//!
//! Built on NetGauze: `netgauze-bgp-pkt` is the wire format (every OPEN, UPDATE and
//! NOTIFICATION here is one of its types, encoded and decoded by its codec) and
//! `netgauze-bgp-speaker` runs each connection's state machine and timers. What NetGauze
//! leaves to its user lives here, split so that every decision is a pure function tested with
//! tables and only three modules do I/O:
//!
//! - `config`: the configuration, and what a reconfiguration means for each session (pure);
//! - `message`: the OPEN and UPDATEs we send, built from the configuration, and the peer's
//!   NOTIFICATIONs and the session's end put into words (pure);
//! - `rib`: received UPDATEs turned into route changes, and the best path over all peers
//!   (pure);
//! - `backoff`: the delay between connection attempts (pure);
//! - `codec`: NetGauze's codec with a lenient parsing context, adjusting received UPDATEs
//!   around two NetGauze 0.13 bugs that would otherwise reset every session with a router;
//! - `state`: the session table and learned routes behind [`Speaker::snapshot`] and
//!   [`Speaker::changes`];
//! - `peer`: a session's NetGauze `Peer` assembled from our configuration, with the TCP
//!   connector that can work inside a named network namespace (I/O);
//! - `session`: the loop that drives one `Peer`: reports its state, sends our routes, feeds
//!   received ones to the RIB, reconnects with backoff (I/O);
//! - `speaker`: [`Speaker`], which starts, reconfigures and stops the sessions (I/O).
//!
//! The speaker is the active side only: it connects to each peer and does not listen on
//! port 179. It carries IPv4 unicast only.

mod backoff;
mod codec;
mod config;
mod error;
mod message;
mod peer;
pub mod peering;
mod rib;
mod session;
mod speaker;
mod state;

pub use config::{BGP_PORT, PeerConfig, SpeakerConfig};
pub use error::BgpError;
pub use speaker::Speaker;
pub use state::{SessionState, Snapshot};
