//! The Causeway node agent.
//!
//! One loop per node: [`plan`] computes the kernel state this node should have from its
//! NodeSubnet, its peers' NodeSubnets and the PodNetwork (pure); a [`model::Dataplane`]
//! observes the kernel state the agent owns; [`diff`] turns the two into readable operations
//! (pure); the dataplane applies them. Only [`netlink`] talks to the kernel.

/// Field manager of everything the agent writes (status, finalizers, events, Leases).
pub const FIELD_MANAGER: &str = "causeway-node-agent";

pub mod agent;
pub mod arp;
pub mod bgp;
pub mod client;
pub mod cni;
pub mod diff;
pub mod elector;
pub mod fake;
pub mod health;
pub mod join;
pub mod model;
pub mod nat;
pub mod netlink;
pub mod netns;
pub mod pass;
pub mod peering;
pub mod plan;
pub mod status;
pub mod sysctl;
