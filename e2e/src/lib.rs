//! The Causeway test cluster: a real kube-apiserver + etcd (+ kube-controller-manager) and
//! network-namespace nodes, segments, routers, clients and pods on one machine.
//!
//! - [`topology`]: the simulated network as data, and the pure plan that builds it.
//! - [`cluster`]: bring-up, kubectl, commands and processes in nodes, tear-down on drop.
//! - [`helm`]: the chart installed, upgraded and removed with helm, as users do.
//! - [`install`]: what the suites that `helm install` share: releases of this build and the
//!   next, agent pods replaced, an upgrade watched node by node, pings between pods.
//! - [`kubelet`]: real kubelet + containerd + kube-proxy nodes in node namespaces.
//! - [`pods`]: pod namespaces attached through the real CNI reference plugins.
//! - [`traffic`]: ping/TCP checks and a loss counter for disruptions.
//! - [`image`]: deterministic OCI image archives (Causeway, pause, test pod) from this repo.
//! - [`apiserver_metrics`]: the API server's write counts, for writes per change and minute.
//! - [`bird`]: BIRD 2 as a router namespace's BGP speaker (Routed mode);
//! - [`frr`]: FRRouting as the second router implementation (interoperability).
//! - [`flannel`]: flanneld and flannel's CNI plugin, the benchmarks' second baseline.
//! - [`workload`]: ordinary pods of a test Deployment on kubelet nodes.
//! - [`state`]: what a cluster left on the machine, so any run can remove it.
//! - [`stats`]: median and bootstrap interval of the benchmarks' same-run ratios.
//! - [`suite`]: what the suites running Causeway share: agents, pods, bring-up, probes.
//! - [`testing`]: glue for the e2e test binaries (one cluster per binary, Ctrl-C safe).

pub mod apiserver_metrics;
pub mod bird;
pub mod cluster;
pub mod cmd;
pub mod controlplane;
pub mod demo;
pub mod deploy;
pub mod flannel;
pub mod frr;
pub mod helm;
pub mod image;
pub mod install;
pub mod kubelet;
pub mod pods;
pub mod proc;
pub mod prometheus;
pub mod state;
pub mod stats;
pub mod suite;
pub mod testing;
pub mod topology;
pub mod traffic;
pub mod workload;

pub use cluster::Cluster;
pub use topology::Topology;
