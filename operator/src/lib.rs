//! The Causeway operator: turns PodNetworks and Nodes into one NodeSubnet per selected node,
//! and rolls the agents' NodeSubnet status up into PodNetwork status.
//!
//! Pure logic (no client): [`selector`], [`conflicts`], [`ipam`], [`rollup`], [`gateway`].
//! I/O at the edges: [`controller`] (kube-runtime), [`leader`], [`metrics`] (and the
//! health endpoints), [`probe`] (the kubelet's exec probe).

pub mod conflicts;
pub mod context;
pub mod controller;
pub mod gateway;
pub mod ipam;
pub mod leader;
pub mod metrics;
pub mod probe;
pub mod rollup;
pub use causeway_crds::selector;
