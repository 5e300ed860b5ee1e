//! The Causeway node agent.
//!
//! One loop per node ([`agent`]) runs one pass ([`pass`]) per change: observe the kernel
//! through a [`model::Dataplane`], [`plan`] the state this node should have from its
//! NodeSubnet, its peers' and the PodNetwork (pure), [`diff`] the two into readable operations
//! (pure), and apply them. The folders say where each part belongs:
//! - [`decide`]: the pure data and decisions (model, plan, diff, status);
//! - [`kernel`]: the only code that touches the kernel ([`netlink`]), its fake, namespaces,
//!   sysctls; [`nat`] runs `nft`;
//! - [`gateway`]: OverlayGateways on the node (the VIP elector, ARP and NDP, ClientJoin,
//!   client mode);
//! - [`bgp`]: the BGP speaker of Routed mode as the agent sees it (configuration, snapshot),
//!   and [`bird`]: BIRD 2, which speaks BGP for it (rendered, run and read by the agent);
//! - [`cni`], [`health`], [`metrics`]: the CNI config file, the probes' endpoint and the
//!   Prometheus metrics it also serves; [`writes`]: the loop's API writes (status, events,
//!   heartbeat), carried out beside it.

/// Field manager of everything the agent writes (status, finalizers, events, Leases).
pub const FIELD_MANAGER: &str = "causeway-node-agent";

pub mod agent;
pub mod bgp;
pub mod bird;
pub mod cni;
pub mod decide;
pub mod gateway;
pub mod health;
pub mod kernel;
pub mod metrics;
pub mod nat;
pub mod pass;
pub mod writes;

// The modules keep their short paths (`crate::plan`, `causeway_node_agent::netlink`, ...);
// the folders above say where each belongs.
pub use bgp::peering;
pub use decide::{diff, model, plan, status};
pub use gateway::{arp, client, elector, join, ndp, vips};
pub use kernel::{fake, netlink, netns, sysctl};
