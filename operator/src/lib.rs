//! The Causeway operator: turns PodNetworks and Nodes into one NodeSubnet per selected node,
//! rolls the agents' NodeSubnet status up into PodNetwork status, and reports OverlayGateways.
//!
//! - [`podnetwork`]: the PodNetwork controller and its pure parts ([`conflicts`], [`ipam`],
//!   [`rollup`], [`controller::decide`]);
//! - [`gateway`]: the OverlayGateway status (pure) and its controller;
//! - [`context`]: what the two controllers share;
//! - [`leader`], [`metrics`] (and the health endpoints), [`probe`] (the kubelet's exec probe).

pub mod context;
pub mod gateway;
pub mod leader;
pub mod metrics;
pub mod podnetwork;
pub mod probe;

// The PodNetwork modules keep their short paths (`crate::ipam`, `causeway_operator::controller`).
pub use causeway_crds::selector;
pub use podnetwork::{conflicts, controller, gather, incremental, ipam, rollup};
