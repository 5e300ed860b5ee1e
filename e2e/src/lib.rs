//! The Causeway test cluster: a real kube-apiserver + etcd (+ kube-controller-manager) and
//! network-namespace nodes, segments, routers, clients and pods on one machine.
//!
//! - [`topology`]: the simulated network as data, and the pure plan that builds it.
//! - [`cluster`]: bring-up, kubectl, commands and processes in nodes, tear-down on drop.
//! - [`pods`]: pod namespaces attached through the real CNI reference plugins.
//! - [`traffic`]: ping/TCP checks and a loss counter for disruptions.
//! - [`bird`]: BIRD 2 as a router namespace's BGP speaker (Routed mode).
//! - [`state`]: what a cluster left on the machine, so any run can remove it.
//! - [`helm`]: the Helm binary and the chart, rendered as the harness installs it.
//! - [`testing`]: glue for the e2e test binaries (one cluster per binary, Ctrl-C safe).

pub mod bird;
pub mod cluster;
pub mod cmd;
pub mod controlplane;
pub mod demo;
pub mod deploy;
pub mod helm;
pub mod pods;
pub mod proc;
pub mod state;
pub mod testing;
pub mod topology;
pub mod traffic;

pub use cluster::Cluster;
pub use topology::Topology;
