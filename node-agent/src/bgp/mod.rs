//! The node's BGP speaker in Routed mode (issue #6), as the agent sees it: the node announces
//! its pod subnet to the network's routers and learns the routes they send back (other nodes'
//! pod subnets, reflected or re-announced by the router). On a dual-stack network the same
//! sessions also carry IPv6 unicast (issue #18): the node's IPv6 subnet out, the other nodes'
//! IPv6 subnets in.
//!
//! The speaker is BIRD 2, run and read by [`crate::bird`] (issue #17); this module is its
//! face to the agent:
//! - `config`: [`SpeakerConfig`] and [`PeerConfig`] (data);
//! - [`peering`]: the configuration from the PodNetwork, the NodeSubnet and the Node's labels
//!   (pure);
//! - `state`: [`Snapshot`] and [`SessionState`], what the speaker reports (data);
//! - [`carry`]: after an agent restart, the routes an earlier agent installed, kept while the
//!   new BIRD's sessions come up (pure);
//! - [`Speaker`] (from [`crate::bird`]): `start`, `update`, `snapshot`, `changes`,
//!   `shutdown`, `stop_for_restart`.
//!
//! BIRD never writes the kernel: the agent installs the learned routes itself, through its
//! plan, like every other route it owns.

pub mod carry;
mod config;
pub mod peering;
mod state;

pub use crate::bird::{Options as BirdOptions, Speaker};
pub use config::{
    BGP_PORT, DEFAULT_RESTART_TIME, Ipv6Unicast, Md5Key, PeerConfig, PeerOptions, SpeakerConfig,
    SpeakerOptions, UnusablePeer,
};
pub use state::{Learned, SessionState, Snapshot};
