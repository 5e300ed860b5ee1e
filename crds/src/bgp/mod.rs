//! BGP settings as the node agent uses them: a PodNetwork's `spec.routed.bgp` resolved for one
//! node, fully typed, and the checks behind it (pure: no client, no I/O).
//!
//! The agent calls [`BgpSpec::for_node`](crate::v1alpha1::BgpSpec::for_node) with its Node's
//! labels and renders its BGP speaker's configuration from the [`NodeBgp`] it gets: numbers are
//! numbers, addresses are addresses, communities are [`Community`] values and every default is
//! filled in, so nothing is parsed twice. The checks are the admission rules' counterparts
//! ([`crate::v1alpha1::bgp_rules`] builds those from the same tables): the agent re-runs them
//! because a node label (`nodeAsnLabel`) can give a node an AS that admission never saw, and
//! because objects stored before a rule existed reach the agent unchanged.
//!
//! - [`asn`]: usable AS numbers (the reserved ones refused) and node label values.
//! - [`community`]: standard and large communities.
//! - [`password`]: what a TCP MD5 key read from a Secret may hold.
//! - [`node`]: the resolution itself and its types.

pub mod asn;
pub mod community;
pub mod node;
pub mod password;

#[cfg(test)]
mod tests;

pub use community::Community;
pub use node::{AsnSource, Bfd, BgpError, GracefulRestart, Ignored, NodeBgp, NodePeer, Session};
