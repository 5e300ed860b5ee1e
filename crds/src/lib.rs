//! Causeway's API: the `causeway.dev/v1alpha1` custom resources, pure helpers on them, and the
//! CRD generator used by the `crdgen` binary.
//!
//! This crate sits at the very start of the data flow: platform engineers write
//! [`PodNetwork`] and [`OverlayGateway`] objects, the operator turns each selected node into a
//! [`NodeSubnet`], and every node agent programs its dataplane from those objects. Nothing here
//! talks to the API server or the kernel; everything is plain data and pure functions, so the
//! operator, the agent and the tests share one definition of the API.
//!
//! Modules:
//! - [`v1alpha1`]: the three kinds, with their OpenAPI schema and CEL admission rules.
//! - [`bgp`]: a PodNetwork's BGP block resolved for one node (AS, peers, defaults), typed for
//!   the agent's speaker configuration.
//! - [`cidr`]: parsing the spec's CIDR strings and node-subnet arithmetic (IPAM building blocks).
//! - [`mtu`]: the effective pod MTU per mode.
//! - [`family`]: a network's ranges and a node's subnets and addresses regrouped by address
//!   family, whichever fields hold them.
//! - [`vtep`]: deterministic VXLAN VTEP MAC addresses.
//! - [`conditions`]: condition types, reasons and `set_condition`.
//! - [`naming`]: object names derived from other names (NodeSubnet names).
//! - [`ownership`]: who owns an address (nodes, the API server, routers, clients), checked
//!   the same way by the operator and the agents before anything is programmed for it.
//! - [`schema`]: schema transforms that put Kubernetes limits on embedded types.
//! - [`selector`]: `metav1.LabelSelector` matching, as Kubernetes evaluates it.
//! - [`crdgen`]: renders the CustomResourceDefinitions as YAML for the Helm chart.

pub mod bgp;
pub mod cidr;
pub mod conditions;
pub mod crdgen;
pub mod error;
pub mod family;
pub mod mtu;
pub mod naming;
pub mod ownership;
pub mod schema;
pub mod selector;
pub mod v1alpha1;
pub mod vtep;

pub use error::Error;
pub use v1alpha1::{
    NodeSubnet, NodeSubnetSpec, NodeSubnetStatus, OverlayGateway, OverlayGatewaySpec,
    OverlayGatewayStatus, PodNetwork, PodNetworkSpec, PodNetworkStatus,
};

/// The API group of every Causeway kind.
pub const GROUP: &str = "causeway.dev";
/// The API version this crate defines.
pub const VERSION: &str = "v1alpha1";
