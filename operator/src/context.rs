//! What the operator's two controllers share: the PodNetwork controller
//! ([`crate::controller`]) builds one [`Context`] and hands it to the OverlayGateway controller
//! ([`crate::gateway::controller`]), which reads its caches and listens on
//! [`Context::reconciled`], the one channel between them (a PodNetwork reconciled: its
//! gateways' routes follow its nodes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use causeway_crds::{NodeSubnet, PodNetwork, PodNetworkStatus};
use causeway_kube::events::Publisher;
use causeway_kube::heartbeat::Silence;
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::runtime::reflector::Store;

use crate::incremental::{Dirty, Index};
use crate::metrics::Metrics;

/// Field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "causeway-operator";

/// Operator-wide options (command-line flags).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Use each node's `spec.podCIDR` (set by kube-controller-manager) as its subnet.
    pub use_node_pod_cidr: bool,
    /// Namespace of the agents' heartbeat Leases (the operator's own).
    pub agent_namespace: String,
    /// Namespace of the ClientJoin clients' ServiceAccounts (one per client, kept by the
    /// OverlayGateway controller).
    pub client_namespace: String,
    /// The API server's address, when the client configuration names it by IP address.
    pub api_server: Option<std::net::IpAddr>,
    /// Service ranges given by flag (`--service-cidr`), besides the ServiceCIDR objects.
    pub service_cidrs: Vec<ipnet::IpNet>,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub nodes: Store<Node>,
    pub subnets: Store<NodeSubnet>,
    pub networks: Store<PodNetwork>,
    /// The cluster's ServiceCIDR objects (`networking.k8s.io/v1`): no pod range may overlap
    /// them.
    pub service_cidrs: Store<k8s_openapi::api::networking::v1::ServiceCIDR>,
    /// The `default/kubernetes` EndpointSlices: the API servers' own addresses, which no
    /// ClientJoin client may take.
    pub api_endpoints: Store<k8s_openapi::api::discovery::v1::EndpointSlice>,
    pub events: Arc<Publisher>,
    /// Allocation and release events, gathered over a short window before they are
    /// published ([`crate::podnetwork::gather`]).
    pub allocation_events: crate::podnetwork::gather::Gather,
    pub metrics: Arc<Metrics>,
    pub options: Options,
    /// Asks for every network to be re-planned (a network finished deleting: what it held
    /// is free for the others).
    pub replan: tokio::sync::mpsc::UnboundedSender<()>,
    /// True once the Node and NodeSubnet caches hold a full list. One task waits on the
    /// stores and flips this; reconciles wait here (every waiter is woken, unlike a store's
    /// own readiness future with several concurrent waiters).
    pub caches_ready: tokio::sync::watch::Receiver<bool>,
    /// Nodes whose agent stopped renewing its heartbeat Lease (see `controller::watch_heartbeats`).
    pub silent: tokio::sync::watch::Receiver<BTreeMap<String, Silence>>,
    /// Names of reconciled PodNetworks, for the OverlayGateway controller
    /// ([`crate::gateway::controller`]): their gateways' routes follow their nodes.
    pub reconciled: tokio::sync::mpsc::UnboundedSender<String>,
    /// What changed since each network's last reconcile, and the index its last full re-plan
    /// left ([`crate::incremental`]).
    pub changes: Changes,
}

/// The last status write of one network: its number, when it was done and what it wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub order: u64,
    pub at: Option<Instant>,
    pub status: Option<PodNetworkStatus>,
}

/// The incremental path's state between reconciles, by PodNetwork name: the names the watches
/// reported, and each network's [`Index`] with the time its full re-plan ran. The controller
/// never runs two reconciles of one network at once, so a reconcile takes both out and puts
/// the index back when it is done (a failed reconcile does not: the next one re-plans in full).
#[derive(Debug, Default)]
pub struct Changes {
    dirty: Mutex<HashMap<String, Dirty>>,
    /// When the watch first reported each Node in `dirty` (for the join phase metric): taken
    /// by the first network that reconciles after it.
    node_seen: Mutex<HashMap<String, Instant>>,
    indexes: Mutex<HashMap<String, (Index, Instant)>>,
    /// Networks whose index must not be used again (a status write in the background failed).
    stale: Mutex<HashSet<String>>,
    /// The last status each network's reconcile queued for writing (written, or being
    /// written), with the number that orders its write.
    last_status: Mutex<HashMap<String, (PodNetworkStatus, u64)>>,
    /// Orders status writes: each write takes the next number, and a write never follows a
    /// newer one (the lock of each network holds the last write's number and time).
    sequence: AtomicU64,
    written: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Written>>>>,
    /// Wakes a status write waiting out its interval when a newer status is queued
    /// ([`Changes::newer_queued`]).
    newer: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    /// One lock per network, held by whoever reconciles it: the controller, or the Node
    /// events handled at once ([`crate::controller`]'s `join_at_once`).
    reconciling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Changes {
    /// A Node changed: every network may gain or lose it.
    pub fn node_changed<'a>(&self, networks: impl Iterator<Item = &'a str>, node: &str) {
        let mut dirty = self.dirty.lock().unwrap_or_else(PoisonError::into_inner);
        let mut any = false;
        for network in networks {
            any = true;
            dirty
                .entry(network.to_owned())
                .or_default()
                .nodes
                .insert(node.to_owned());
        }
        drop(dirty);
        if any {
            self.node_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(node.to_owned())
                .or_insert_with(Instant::now);
        }
    }

    /// A NodeSubnet of `network` changed.
    pub fn subnet_changed(&self, network: &str, subnet: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(network.to_owned())
            .or_default()
            .subnets
            .insert(subnet.to_owned());
    }

    /// What changed for `network` since its last reconcile, and its index, both taken out.
    pub fn take(&self, network: &str) -> (Dirty, Option<(Index, Instant)>) {
        let dirty = self
            .dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(network)
            .unwrap_or_default();
        let index = self
            .indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(network);
        let stale = self
            .stale
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(network);
        (dirty, index.filter(|_| !stale))
    }

    /// When the watch first reported the earliest of `nodes` (that no reconcile took yet);
    /// forgets them.
    pub fn first_seen(&self, nodes: &std::collections::BTreeSet<String>) -> Option<Instant> {
        let mut seen = self
            .node_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        nodes.iter().filter_map(|n| seen.remove(n)).min()
    }

    /// The next index must not be used: the next reconcile re-plans in full.
    pub fn mark_stale(&self, network: &str) {
        self.stale
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(network.to_owned());
        self.last_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(network);
    }

    /// The status the last reconcile of `network` computed, if this process has one.
    pub fn last_status(&self, network: &str) -> Option<PodNetworkStatus> {
        self.last_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(network)
            .map(|(status, _)| status.clone())
    }

    /// Records a status about to be written, and returns the number that orders its write.
    pub fn queued(&self, network: &str, status: &PodNetworkStatus) -> u64 {
        let order = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        self.last_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(network.to_owned(), (status.clone(), order));
        self.newer_queued(network).notify_waiters();
        order
    }

    /// Notified whenever a status is queued for `network`.
    pub fn newer_queued(&self, network: &str) -> Arc<tokio::sync::Notify> {
        per_network(&self.newer, network)
    }

    /// Whether a status newer than the write numbered `order` is queued for `network`.
    pub fn superseded(&self, network: &str, order: u64) -> bool {
        self.last_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(network)
            .is_some_and(|(_, latest)| *latest > order)
    }

    /// The lock that orders `network`'s status writes.
    pub fn write_order(&self, network: &str) -> Arc<tokio::sync::Mutex<Written>> {
        per_network(&self.written, network)
    }

    /// The lock held while `network` is reconciled.
    pub fn reconciling(&self, network: &str) -> Arc<tokio::sync::Mutex<()>> {
        per_network(&self.reconciling, network)
    }

    /// Whether `network` has an index for the incremental path (and it is not stale).
    pub fn has_index(&self, network: &str) -> bool {
        let stale = self
            .stale
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(network);
        !stale
            && self
                .indexes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(network)
    }

    /// Keeps `network`'s index for its next reconcile.
    pub fn keep(&self, network: &str, index: Index, full_replan: Instant) {
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(network.to_owned(), (index, full_replan));
    }

    /// Drops what is kept for a network that is gone.
    pub fn forget(&self, network: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(network);
        self.indexes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(network);
        self.last_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(network);
    }
}

/// `network`'s entry of `map`, made on first use.
fn per_network<T: Default>(map: &Mutex<HashMap<String, Arc<T>>>, network: &str) -> Arc<T> {
    map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(network.to_owned())
        .or_default()
        .clone()
}
