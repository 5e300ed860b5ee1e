//! The incremental path: what one PodNetwork's full re-plan ([`crate::controller::decide`])
//! leaves behind as an [`Index`], so that the Node and NodeSubnet events that follow cost
//! only what they change.
//!
//! Sits beside [`crate::controller::decide`] and before the controller's writes. After a full
//! re-plan the controller builds an [`Index`] from the same inputs and the resulting plan;
//! the watches record the names of the Nodes and NodeSubnets that changed ([`Dirty`]), and the
//! next reconcile hands them to [`Index::step`], which looks up only those objects and
//! returns the NodeSubnets to create and release. The agents' reports are kept tallied
//! ([`rollup::Tallies`], updated as nodes join, leave and report), and [`Index::status`] rolls
//! them up with [`rollup::rollup_tallied`] without walking the nodes: a join costs O(log N)
//! from event to status, and incremental and full re-plan give the same status.
//!
//! The index holds, for one network: the selected nodes (owner and addresses), the allocated
//! nodes in name order with their agents' reports, every NodeSubnet of the network by name,
//! the pool indices those hold and the lowest free index (so a join takes its subnet in
//! O(log N)), the selected count, the nodes an earlier network claims and the nodes waiting
//! for an address.
//!
//! It handles joins, leaves, label changes (in or out of the network, to or from an earlier
//! network), an address appearing on a node that waited for one, agents' reports, and
//! released NodeSubnets going away. Anything else is a [`Fallback`]: the controller throws
//! the index away and re-plans in full (which builds a new one) — a spec change (generation),
//! another network's change, Service ranges, heartbeat silences, an address change of a node
//! holding a subnet, exhaustion, a NodeSubnet written or deleted by someone else, a node
//! address inside the range, and any state the full plan reports as unusual (overlap,
//! invalid spec, dual-stack, `--use-node-pod-cidr`, duplicates, lost addresses). Pure: no
//! client, no clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use causeway_crds::cidr;
use causeway_crds::v1alpha1::{AGENT_FINALIZER, PodRange};
use causeway_crds::{NodeSubnet, NodeSubnetSpec, PodNetwork, PodNetworkStatus};
use causeway_kube::heartbeat::Silence;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{Resource, ResourceExt};

use crate::conflicts::{Claims, NetworkView};
use crate::controller::{self, Decision};
use crate::ipam::{self, Allocation, Pool};
use crate::rollup::{self, SubnetView, Tallies};
use crate::selector;

/// Why an event cannot be handled incrementally: the controller re-plans in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback(pub String);

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fallback<T>(why: impl Into<String>) -> Result<T, Fallback> {
    Err(Fallback(why.into()))
}

/// The names of the objects that changed since a network's last reconcile, as the watches
/// reported them. Only names: [`Index::step`] reads each object's current state from the
/// caches, so an event seen twice, or late, changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Nodes added, changed or deleted.
    pub nodes: BTreeSet<String>,
    /// NodeSubnets of the network added, changed or deleted.
    pub subnets: BTreeSet<String>,
}

/// What must not have changed since the index was built: anything here moving means a full
/// re-plan. Compared whole on every reconcile (a handful of networks and Service ranges).
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// The PodNetwork's uid and generation (its spec).
    pub uid: Option<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Every PodNetwork as the conflict rules see it (claims and overlaps).
    pub networks: Vec<NetworkView>,
    /// The cluster's Service ranges.
    pub services: Vec<(String, IpNet)>,
    /// Silent agents: (node, limit in seconds, Lease).
    pub silent: Vec<(String, u64, String)>,
    /// `--use-node-pod-cidr`.
    pub use_node_pod_cidr: bool,
}

impl Inputs {
    /// The inputs of a reconcile of `pn`.
    #[must_use]
    pub fn new(
        pn: &PodNetwork,
        networks: &[Arc<PodNetwork>],
        services: Vec<(String, IpNet)>,
        silent: &BTreeMap<String, Silence>,
        use_node_pod_cidr: bool,
    ) -> Self {
        Self {
            uid: pn.meta().uid.clone(),
            generation: pn.meta().generation,
            networks: networks
                .iter()
                .map(|n| controller::network_view(n))
                .collect(),
            services,
            silent: silent
                .iter()
                .map(|(n, s)| (n.clone(), s.limit.as_secs(), s.lease.clone()))
                .collect(),
            use_node_pod_cidr,
        }
    }
}

/// Who owns a node the network selects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Owner {
    Me,
    Other(String),
    Nobody,
}

/// A node the network's selector matches.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Selected {
    owner: Owner,
    internal_ip: Option<IpAddr>,
    secondary_ip: Option<IpAddr>,
}

/// One NodeSubnet of the network, as the index expects to find it in the cache.
#[derive(Clone, Debug)]
struct Held {
    node: String,
    index: u128,
    spec: NodeSubnetSpec,
}

/// An allocated node: its allocation and its agent's report.
#[derive(Clone, Debug)]
struct Allocated {
    allocation: Allocation,
    view: SubnetView,
}

/// What one incremental step writes: the controller creates and releases these, with the
/// same events as after a full re-plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// NodeSubnets to create, in node-name order.
    pub create: Vec<Allocation>,
    /// NodeSubnets to delete.
    pub release: Vec<Allocation>,
    /// Why each released NodeSubnet goes, by object name.
    pub released_why: BTreeMap<String, String>,
}

/// One network's state between reconciles (see the module docs).
#[derive(Clone, Debug)]
pub struct Index {
    network: String,
    inputs: Inputs,
    pool: Pool,
    capacity: u128,
    ranges: Vec<PodRange>,
    selector: Option<LabelSelector>,
    generation: Option<i64>,
    one_segment: Option<&'static str>,
    /// Nodes the selector matches (not being deleted).
    selected: HashMap<String, Selected>,
    /// Selected nodes an earlier network owns: node → owner.
    claimed_elsewhere: BTreeMap<String, String>,
    /// Owned nodes without an InternalIP (and without a subnet).
    missing_address: BTreeSet<String>,
    /// Owned nodes holding a subnet, in name order, each with its agent's report.
    allocated: BTreeMap<String, Allocated>,
    /// Every NodeSubnet of the network by object name: cached, or created by this index.
    objects: HashMap<String, Held>,
    /// How many of `objects` name each node.
    objects_per_node: HashMap<String, usize>,
    /// Pool indices `objects` hold (each at most once).
    used: BTreeSet<u128>,
    /// The lowest index not in `used`.
    next_free: u128,
    /// Silent agents' words for the roll-up, by node.
    silent: BTreeMap<String, Silence>,
    /// The reports of `allocated`, tallied for the roll-up.
    tallies: Tallies,
}

/// The index of the lowest subnet of the pool not in `used` at or after `from`.
fn lowest_free(used: &BTreeSet<u128>, from: u128) -> u128 {
    let mut next = from;
    for &i in used.range(from..) {
        if i != next {
            break;
        }
        next += 1;
    }
    next
}

impl Index {
    /// The index a full re-plan leaves: `d` is [`controller::decide`] over these same `nodes`
    /// (the whole Node cache) and `subnets` (the network's NodeSubnets as cached), and every
    /// write it planned is assumed done. `Err` when the resulting state is one the incremental
    /// path does not handle: then every reconcile re-plans in full until it is.
    ///
    /// # Errors
    /// [`Fallback`] naming the unusual state.
    pub fn build(
        pn: &PodNetwork,
        inputs: Inputs,
        nodes: &[Arc<Node>],
        subnets: &[Arc<NodeSubnet>],
        d: &Decision,
        silent: &BTreeMap<String, Silence>,
    ) -> Result<Self, Fallback> {
        if d.invalid_spec.is_some() || d.unusable.is_some() || d.overlap.is_some() {
            return fallback(
                "the network cannot allocate (invalid spec, unusable or overlapping range)",
            );
        }
        if inputs.use_node_pod_cidr {
            return fallback("--use-node-pod-cidr");
        }
        let plan = &d.plan;
        let Some(pool) = plan.pool else {
            return fallback("no pool");
        };
        if plan.secondary_pool.is_some() {
            return fallback("a dual-stack network");
        }
        if !plan.exhausted.is_empty()
            || !plan.bad_pod_cidr.is_empty()
            || !plan.lost_address.is_empty()
        {
            return fallback("nodes wait (exhausted pool, unusable podCIDR or lost address)");
        }
        let ranges = pn
            .spec
            .ranges()
            .map_err(|e| Fallback(format!("spec: {e}")))?;
        let network = pn.name_any();
        let mut index = Self {
            network: network.clone(),
            inputs,
            pool,
            capacity: plan.capacity,
            ranges,
            selector: pn.spec.node_selector.clone(),
            generation: pn.meta().generation,
            one_segment: controller::one_segment(&pn.spec),
            selected: HashMap::new(),
            claimed_elsewhere: d.claimed_elsewhere.iter().cloned().collect(),
            missing_address: plan.missing_address.iter().cloned().collect(),
            allocated: BTreeMap::new(),
            objects: HashMap::new(),
            objects_per_node: HashMap::new(),
            used: BTreeSet::new(),
            next_free: 0,
            silent: silent.clone(),
            tallies: Tallies::default(),
        };
        let claims = Claims::new(&index.inputs.networks);
        for node in nodes {
            if let Some(selected) = index.selected_state(node, &claims) {
                index.selected.insert(node.name_any(), selected);
            }
        }
        if index.selected.len() != d.selected {
            return fallback("selected nodes disagree with the plan");
        }
        // What the cache holds, with the re-addressed specs the plan writes.
        let readdressed: HashMap<&str, &Allocation> = plan
            .readdress
            .iter()
            .map(|a| (a.object.as_str(), a))
            .collect();
        for s in subnets {
            let mut spec = s.spec.clone();
            if let Some(a) = readdressed.get(s.name_any().as_str()) {
                spec.node_address = a.node_address.to_string();
                spec.secondary_cidr = a.secondary_cidr.map(|c| c.to_string());
                spec.secondary_node_address = a.secondary_node_address.map(|c| c.to_string());
            }
            index.hold(s.name_any(), spec)?;
        }
        let views = controller::subnet_views(plan, subnets, silent);
        let created: std::collections::HashSet<&str> =
            plan.create.iter().map(|a| a.object.as_str()).collect();
        for (a, view) in plan.allocations().zip(views) {
            if created.contains(a.object.as_str()) {
                index.hold(a.object.clone(), controller::node_subnet(pn, a).spec)?;
            }
            if index.objects_per_node.get(&a.node) != Some(&1) {
                return fallback(format!("node {} is named by several NodeSubnets", a.node));
            }
            index.tallies.add(&a.node, Some(&view));
            let allocated = Allocated {
                allocation: a.clone(),
                view,
            };
            if index.allocated.insert(a.node.clone(), allocated).is_some() {
                return fallback(format!("node {} holds two subnets", a.node));
            }
        }
        index.next_free = lowest_free(&index.used, 0);
        Ok(index)
    }

    /// Records a NodeSubnet of the network; `Err` for one that is not exactly a subnet of the
    /// pool (which may block several) or that shares its subnet with another.
    fn hold(&mut self, object: String, spec: NodeSubnetSpec) -> Result<(), Fallback> {
        if spec.network != self.network {
            return fallback(format!("NodeSubnet {object} belongs to {}", spec.network));
        }
        if spec.secondary_cidr.is_some() {
            return fallback(format!("NodeSubnet {object} has a secondaryCidr"));
        }
        let index = spec
            .cidr
            .parse::<IpNet>()
            .ok()
            .and_then(|c| cidr::subnet_index(self.pool.cidr, self.pool.prefix, c).ok());
        let Some(index) = index else {
            return fallback(format!("NodeSubnet {object} is not a subnet of the pool"));
        };
        if spec.parse_addresses().is_err() {
            return fallback(format!("NodeSubnet {object} does not parse"));
        }
        if !self.used.insert(index) {
            return fallback(format!("NodeSubnet {object} shares its subnet"));
        }
        *self
            .objects_per_node
            .entry(spec.node_name.clone())
            .or_default() += 1;
        let held = Held {
            node: spec.node_name.clone(),
            index,
            spec,
        };
        if self.objects.insert(object.clone(), held).is_some() {
            return fallback(format!("NodeSubnet {object} listed twice"));
        }
        Ok(())
    }

    /// Forgets a NodeSubnet that left the cache: its subnet is free again.
    fn unhold(&mut self, object: &str) {
        if let Some(held) = self.objects.remove(object) {
            self.used.remove(&held.index);
            self.next_free = self.next_free.min(held.index);
            if let Some(count) = self.objects_per_node.get_mut(&held.node) {
                *count -= 1;
                if *count == 0 {
                    self.objects_per_node.remove(&held.node);
                }
            }
        }
    }

    /// What the network sees of `node` now: `None` unless its selector matches it (and it is
    /// not being deleted), as in [`controller::decide`].
    fn selected_state(&self, node: &Node, claims: &Claims) -> Option<Selected> {
        if node.meta().deletion_timestamp.is_some() {
            return None;
        }
        let empty = BTreeMap::new();
        let labels = node.meta().labels.as_ref().unwrap_or(&empty);
        if !selector::matches(self.selector.as_ref(), labels).unwrap_or(false) {
            return None;
        }
        let owner = match claims.owner(labels) {
            Some(owner) if owner == self.network => Owner::Me,
            Some(owner) => Owner::Other(owner.to_owned()),
            None => Owner::Nobody,
        };
        let view = controller::node_view(node, &self.ranges);
        Some(Selected {
            owner,
            internal_ip: view.internal_ip,
            secondary_ip: view.secondary_ip,
        })
    }

    /// Whether the index still describes the network: `inputs` are those of this reconcile.
    #[must_use]
    pub fn current(&self, inputs: &Inputs) -> bool {
        self.inputs == *inputs
    }

    /// Applies what changed (`dirty`, read through `node` and `subnet`, the caches) and returns
    /// the writes that follow. On `Err` the index is left half-updated: throw it away and
    /// re-plan in full.
    ///
    /// # Errors
    /// [`Fallback`] when a change is one the incremental path does not handle.
    pub fn step(
        &mut self,
        dirty: &Dirty,
        pn: &PodNetwork,
        node: impl Fn(&str) -> Option<Arc<Node>>,
        subnet: impl Fn(&str) -> Option<Arc<NodeSubnet>>,
    ) -> Result<Step, Fallback> {
        let mut step = Step::default();
        // NodeSubnets first: a released one that went away frees its subnet for a join of
        // this same step, as the full plan (which sees the cache) would hand it out.
        for name in &dirty.subnets {
            self.subnet_changed(name, subnet(name), &node)?;
        }
        let networks = self.inputs.networks.clone();
        let claims = Claims::new(&networks);
        // Name order: joins take the lowest free subnets in the order the full plan does.
        for name in &dirty.nodes {
            let now = node(name);
            if let Some(n) = &now {
                for address in controller::internal_ips(n) {
                    if self.ranges.iter().any(|r| r.cidr.contains(&address)) {
                        return fallback(format!("node {name} has address {address} in the range"));
                    }
                }
            }
            let after = now.as_ref().and_then(|n| self.selected_state(n, &claims));
            let before = match &after {
                Some(a) => self.selected.insert(name.clone(), a.clone()),
                None => self.selected.remove(name),
            };
            self.claimed_elsewhere.remove(name);
            if let Some(Selected {
                owner: Owner::Other(owner),
                ..
            }) = &after
            {
                self.claimed_elsewhere.insert(name.clone(), owner.clone());
            }
            let owned = |s: &Option<Selected>| s.as_ref().is_some_and(|s| s.owner == Owner::Me);
            match (owned(&before), owned(&after)) {
                (false, false) => {}
                (true, false) => self.leave(name, now.is_some(), &mut step),
                (false, true) => self.join(name, after.as_ref(), pn, &mut step)?,
                (true, true) => {
                    let (before, after) = (before.as_ref(), after.as_ref());
                    let addresses =
                        |s: Option<&Selected>| s.map(|s| (s.internal_ip, s.secondary_ip));
                    if addresses(before) == addresses(after) {
                        continue;
                    }
                    if self.allocated.contains_key(name) {
                        return fallback(format!("node {name} changed address"));
                    }
                    self.missing_address.remove(name);
                    self.join(name, after, pn, &mut step)?;
                }
            }
        }
        Ok(step)
    }

    /// A node the network now owns, without a subnet: the lowest free one.
    fn join(
        &mut self,
        name: &str,
        node: Option<&Selected>,
        pn: &PodNetwork,
        step: &mut Step,
    ) -> Result<(), Fallback> {
        if self.objects_per_node.contains_key(name) {
            // The full plan would keep what it holds.
            return fallback(format!("node {name} is still named by a NodeSubnet"));
        }
        let Some(address) = node.and_then(|n| n.internal_ip) else {
            self.missing_address.insert(name.to_owned());
            return Ok(());
        };
        let index = self.next_free;
        if index >= self.capacity {
            return fallback("the pool is exhausted");
        }
        let subnet = cidr::nth_subnet(self.pool.cidr, self.pool.prefix, index)
            .map_err(|e| Fallback(format!("subnet {index} of the pool: {e}")))?;
        let allocation = Allocation {
            object: ipam::object_name(&self.network, subnet),
            node: name.to_owned(),
            cidr: subnet,
            node_address: address,
            secondary_cidr: None,
            secondary_node_address: node.and_then(|n| n.secondary_ip),
        };
        self.hold(
            allocation.object.clone(),
            controller::node_subnet(pn, &allocation).spec,
        )?;
        self.next_free = lowest_free(&self.used, index);
        let view = controller::subnet_view(name, None, self.silent.get(name));
        self.tallies.add(name, Some(&view));
        self.allocated.insert(
            name.to_owned(),
            Allocated {
                allocation: allocation.clone(),
                view,
            },
        );
        step.create.push(allocation);
        Ok(())
    }

    /// A node the network no longer owns: its subnet is released (and stays in use until its
    /// NodeSubnet leaves the cache). `exists`: whether the Node is still in the cache.
    fn leave(&mut self, name: &str, exists: bool, step: &mut Step) {
        self.missing_address.remove(name);
        if let Some(gone) = self.allocated.remove(name) {
            self.tallies.remove(name, Some(&gone.view));
            let why = if exists {
                format!(
                    "node {name} is not selected by this network (or an earlier network owns it)"
                )
            } else {
                format!("node {name} no longer exists")
            };
            step.released_why
                .insert(gone.allocation.object.clone(), why);
            step.release.push(gone.allocation);
        }
    }

    /// A NodeSubnet event: the echo of a create, an agent's report, a release completing.
    fn subnet_changed(
        &mut self,
        name: &str,
        now: Option<Arc<NodeSubnet>>,
        node: &impl Fn(&str) -> Option<Arc<Node>>,
    ) -> Result<(), Fallback> {
        let now = now.filter(|s| s.spec.network == self.network);
        let Some(held) = self.objects.get(name) else {
            return match now {
                None => Ok(()),
                Some(_) => fallback(format!(
                    "NodeSubnet {name} was not written by this operator"
                )),
            };
        };
        let allocated = self
            .allocated
            .get(&held.node)
            .is_some_and(|a| a.allocation.object == name);
        let Some(now) = now else {
            if allocated {
                return fallback(format!(
                    "NodeSubnet {name} of node {} was deleted",
                    held.node
                ));
            }
            self.unhold(name);
            return Ok(());
        };
        if now.spec != held.spec {
            return fallback(format!("NodeSubnet {name} changed its spec"));
        }
        if now.meta().deletion_timestamp.is_some()
            && now.finalizers().iter().any(|f| f == AGENT_FINALIZER)
            && node(&held.node).is_none()
        {
            return fallback(format!("NodeSubnet {name} is stranded"));
        }
        if allocated {
            let node_name = held.node.clone();
            let view = controller::subnet_view(&node_name, Some(&now), self.silent.get(&node_name));
            if let Some(a) = self.allocated.get_mut(&node_name)
                && a.view != view
            {
                self.tallies.remove(&node_name, Some(&a.view));
                self.tallies.add(&node_name, Some(&view));
                a.view = view;
            }
        }
        Ok(())
    }

    /// Subnets in use (the status's `subnetsAllocated`).
    #[must_use]
    pub fn allocated(&self) -> usize {
        self.allocated.len()
    }

    /// The network's status, as [`rollup::rollup`] would give it after a full re-plan.
    #[must_use]
    pub fn status(&self, previous: &PodNetworkStatus, now: Time) -> PodNetworkStatus {
        let plan = ipam::Plan {
            missing_address: self.missing_address.iter().cloned().collect(),
            pool: Some(self.pool),
            capacity: self.capacity,
            used: u64::try_from(self.allocated.len()).unwrap_or(u64::MAX),
            ..ipam::Plan::default()
        };
        let claimed: Vec<(String, String)> = self
            .claimed_elsewhere
            .iter()
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect();
        rollup::rollup_tallied(
            &rollup::Input {
                generation: self.generation,
                invalid_spec: None,
                unusable: None,
                overlap: None,
                selected: self.selected.len(),
                claimed_elsewhere: &claimed,
                plan: &plan,
                subnets: &[],
                one_segment: self.one_segment,
            },
            &self.tallies,
            previous,
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    //! The incremental path against the full re-plan over the same caches: a model cluster
    //! takes random joins, leaves, label and address changes, agents' reports and completed
    //! deletions, and after every reconcile both must agree on the writes and the status.

    use super::*;
    use causeway_crds::NodeSubnetStatus;
    use causeway_crds::conditions::{reasons, types};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use proptest::prelude::*;

    fn network(name: &str, created: &str, spec: serde_json::Value) -> Arc<PodNetwork> {
        let mut pn = PodNetwork::new(name, serde_json::from_value(spec).expect("spec"));
        pn.metadata.creation_timestamp = Some(Time(created.parse().expect("time")));
        pn.metadata.generation = Some(1);
        pn.metadata.uid = Some(format!("uid-{name}"));
        Arc::new(pn)
    }

    fn epoch() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    /// What a test does to the cluster.
    #[derive(Clone, Debug)]
    enum Op {
        /// Creates or changes node `node`: rack label (0 none, 1 a, 2 b), address (0 none,
        /// 1 and 2 two underlay addresses, 3 one inside the pod range), being deleted.
        Upsert {
            node: u8,
            rack: u8,
            address: u8,
            deleting: bool,
        },
        /// Deletes node `node`.
        Remove { node: u8 },
        /// The agent of node `node` reports Programmed (`ok`) on its NodeSubnet.
        Report { node: u8, ok: bool },
        /// The `which`-th NodeSubnet being deleted goes (its agent released it).
        Finish { which: u8 },
        /// The operator reconciles (changes before it coalesce).
        Reconcile,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..10u8, 0..3u8, prop_oneof![1 => Just(0u8), 6 => Just(1u8), 3 => Just(2u8), 1 => Just(3u8)], proptest::bool::weighted(0.1))
                .prop_map(|(node, rack, address, deleting)| Op::Upsert { node, rack, address, deleting }),
            2 => (0..10u8).prop_map(|node| Op::Remove { node }),
            2 => (0..10u8, proptest::bool::ANY).prop_map(|(node, ok)| Op::Report { node, ok }),
            2 => (0..4u8).prop_map(|which| Op::Finish { which }),
            4 => Just(Op::Reconcile),
        ]
    }

    /// A cluster's caches and the operator's state between reconciles.
    struct World {
        networks: Vec<Arc<PodNetwork>>,
        pn: Arc<PodNetwork>,
        nodes: BTreeMap<String, Arc<Node>>,
        subnets: BTreeMap<String, Arc<NodeSubnet>>,
        index: Option<Index>,
        dirty: Dirty,
        incremental: usize,
        fallbacks: Vec<String>,
    }

    impl World {
        /// `first` (earlier, rack=b) and `pods` (rack a or b, eight /30s).
        fn new() -> Self {
            let first = network(
                "first",
                "2025-01-01T00:00:00Z",
                serde_json::json!({"cidr": "10.250.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
                    "nodeSelector": {"matchLabels": {"rack": "b"}}}),
            );
            let pn = network(
                "pods",
                "2025-02-01T00:00:00Z",
                serde_json::json!({"cidr": "10.244.0.0/27", "nodeSubnetPrefixLength": 30, "mode": "Overlay",
                    "nodeSelector": {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a", "b"]}]}}),
            );
            Self {
                networks: vec![first, pn.clone()],
                pn,
                nodes: BTreeMap::new(),
                subnets: BTreeMap::new(),
                index: None,
                dirty: Dirty::default(),
                incremental: 0,
                fallbacks: Vec::new(),
            }
        }

        fn apply(&mut self, op: &Op) {
            match *op {
                Op::Upsert {
                    node,
                    rack,
                    address,
                    deleting,
                } => {
                    let name = format!("node-{node}");
                    let labels = match rack {
                        1 => serde_json::json!({"rack": "a"}),
                        2 => serde_json::json!({"rack": "b"}),
                        _ => serde_json::json!({}),
                    };
                    let addresses = match address {
                        1 => {
                            serde_json::json!([{"type": "InternalIP", "address": format!("192.168.1.{}", 10 + node)}])
                        }
                        2 => {
                            serde_json::json!([{"type": "InternalIP", "address": format!("192.168.2.{}", 10 + node)}])
                        }
                        3 => {
                            serde_json::json!([{"type": "InternalIP", "address": format!("10.244.0.{}", 1 + node)}])
                        }
                        _ => serde_json::json!([]),
                    };
                    let mut meta = serde_json::json!({"name": name, "labels": labels});
                    if deleting {
                        meta["deletionTimestamp"] = serde_json::json!("2025-03-01T00:00:00Z");
                    }
                    let n: Node = serde_json::from_value(serde_json::json!({
                        "metadata": meta,
                        "status": {"addresses": addresses},
                    }))
                    .expect("node");
                    self.nodes.insert(name.clone(), Arc::new(n));
                    self.dirty.nodes.insert(name);
                }
                Op::Remove { node } => {
                    let name = format!("node-{node}");
                    self.nodes.remove(&name);
                    self.dirty.nodes.insert(name);
                }
                Op::Report { node, ok } => {
                    let name = format!("node-{node}");
                    let Some(s) = self.subnets.values().find(|s| {
                        s.spec.node_name == name && s.metadata.deletion_timestamp.is_none()
                    }) else {
                        return;
                    };
                    let mut s = (**s).clone();
                    let (status, reason) = if ok {
                        ("True", "Programmed")
                    } else {
                        ("False", "ApplyFailed")
                    };
                    s.status = Some(NodeSubnetStatus {
                        conditions: vec![Condition {
                            type_: types::PROGRAMMED.into(),
                            status: status.into(),
                            reason: reason.into(),
                            message: format!("{reason} on {name}"),
                            observed_generation: s.metadata.generation,
                            last_transition_time: epoch(),
                        }],
                        effective_mtu: Some(1400 + i32::from(node)),
                        ..NodeSubnetStatus::default()
                    });
                    self.dirty.subnets.insert(s.name_any());
                    self.subnets.insert(s.name_any(), Arc::new(s));
                }
                Op::Finish { which } => {
                    let deleting: Vec<String> = self
                        .subnets
                        .values()
                        .filter(|s| s.metadata.deletion_timestamp.is_some())
                        .map(|s| s.name_any())
                        .collect();
                    if let Some(name) = deleting.get(usize::from(which) % deleting.len().max(1)) {
                        self.subnets.remove(name);
                        self.dirty.subnets.insert(name.clone());
                    }
                }
                Op::Reconcile => self.reconcile(),
            }
        }

        /// Carries out writes as the API would: creates appear, releases start deleting.
        fn carry_out(
            &mut self,
            create: &[Allocation],
            release: &[Allocation],
            readdress: &[Allocation],
        ) {
            for a in create {
                let mut s = controller::node_subnet(&self.pn, a);
                s.metadata.generation = Some(1);
                self.subnets.insert(a.object.clone(), Arc::new(s));
                self.dirty.subnets.insert(a.object.clone());
            }
            for a in release {
                if let Some(s) = self.subnets.get(&a.object) {
                    let mut s = (**s).clone();
                    s.metadata.deletion_timestamp = Some(epoch());
                    self.subnets.insert(a.object.clone(), Arc::new(s));
                    self.dirty.subnets.insert(a.object.clone());
                }
            }
            for a in readdress {
                if let Some(s) = self.subnets.get(&a.object) {
                    let mut s = (**s).clone();
                    s.spec.node_address = a.node_address.to_string();
                    s.spec.secondary_node_address = a.secondary_node_address.map(|c| c.to_string());
                    s.spec.secondary_cidr = a.secondary_cidr.map(|c| c.to_string());
                    self.subnets.insert(a.object.clone(), Arc::new(s));
                    self.dirty.subnets.insert(a.object.clone());
                }
            }
        }

        fn inputs(&self) -> Inputs {
            Inputs::new(
                &self.pn,
                &self.networks,
                Vec::new(),
                &BTreeMap::new(),
                false,
            )
        }

        /// One reconcile: the full re-plan over the caches is the reference; the incremental
        /// step, when the index takes it, must agree with it.
        fn reconcile(&mut self) {
            let dirty = std::mem::take(&mut self.dirty);
            let nodes: Vec<Arc<Node>> = self.nodes.values().cloned().collect();
            let subnets: Vec<Arc<NodeSubnet>> = self.subnets.values().cloned().collect();
            let d = controller::decide(&self.pn, &self.networks, &nodes, &subnets, &[], false);
            let full_status = d.status_from_scratch(&subnets, self.pn.meta().generation);
            if let Some(mut index) = self.index.take() {
                assert!(index.current(&self.inputs()));
                let (node_cache, subnet_cache) = (&self.nodes, &self.subnets);
                let step = index.step(
                    &dirty,
                    &self.pn,
                    |n| node_cache.get(n).cloned(),
                    |s| subnet_cache.get(s).cloned(),
                );
                match step {
                    Ok(step) => {
                        assert_eq!(step.create, d.plan.create, "creates: {d:#?}");
                        assert!(
                            d.plan.readdress.is_empty(),
                            "a readdress the index missed: {d:#?}"
                        );
                        for r in &step.release {
                            assert!(d.plan.release.contains(r), "release {r:?} not in {d:#?}");
                            assert_eq!(
                                step.released_why.get(&r.object),
                                d.released_why.get(&r.object)
                            );
                        }
                        for r in d.plan.release.iter().filter(|r| !step.release.contains(r)) {
                            let again = self
                                .subnets
                                .get(&r.object)
                                .is_some_and(|s| s.metadata.deletion_timestamp.is_some());
                            assert!(again, "a release the index missed: {r:?}");
                        }
                        assert_eq!(
                            index.status(&PodNetworkStatus::default(), epoch()),
                            full_status
                        );
                        assert_eq!(index.allocated(), d.plan.allocations().count());
                        self.incremental += 1;
                        self.carry_out(&step.create, &step.release, &[]);
                        self.index = Some(index);
                        return;
                    }
                    Err(why) => self.fallbacks.push(why.0),
                }
            }
            self.carry_out(&d.plan.create, &d.plan.release, &d.plan.readdress);
            self.index = Index::build(
                &self.pn,
                self.inputs(),
                &nodes,
                &subnets,
                &d,
                &BTreeMap::new(),
            )
            .ok();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Over random joins, leaves, label and address changes, agents' reports and completed
        /// deletions, reconciled in random batches: whenever the incremental path takes a
        /// step, it creates exactly what the full re-plan over the same caches creates,
        /// releases what it releases (bar NodeSubnets already being deleted, which the full
        /// re-plan deletes again), and gives the same status.
        #[test]
        fn incremental_steps_agree_with_the_full_replan(ops in proptest::collection::vec(op(), 1..60)) {
            let mut world = World::new();
            for op in &ops {
                world.apply(op);
            }
            world.reconcile();
        }
    }

    /// The property above is only as strong as the share of steps the incremental path takes:
    /// over a long pseudo-random run (the same ops, a fixed seed), most reconciles must be
    /// incremental, and each must agree with the full re-plan.
    #[test]
    fn most_reconciles_of_a_long_random_run_are_incremental_and_agree() {
        let mut world = World::new();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            u8::try_from(seed % below).expect("small")
        };
        let mut reconciles = 0;
        for _ in 0..5000 {
            let op = match next(16) {
                0..=5 => Op::Upsert {
                    node: next(10),
                    rack: next(3),
                    // Rarely an address inside the range (the network is unusable then).
                    address: if next(50) == 0 {
                        3
                    } else {
                        [0, 1, 1, 1, 1, 1, 1, 2, 2][usize::from(next(9))]
                    },
                    deleting: next(10) == 0,
                },
                6 | 7 => Op::Remove { node: next(10) },
                8 | 9 => Op::Report {
                    node: next(10),
                    ok: next(2) == 0,
                },
                10 | 11 => Op::Finish { which: next(4) },
                _ => {
                    reconciles += 1;
                    Op::Reconcile
                }
            };
            world.apply(&op);
        }
        assert!(
            world.incremental * 2 > reconciles,
            "{} of {reconciles} reconciles incremental; fallbacks: {:?}",
            world.incremental,
            world.fallbacks.iter().collect::<BTreeSet<_>>()
        );
    }

    #[test]
    fn joins_leaves_label_changes_and_reports_after_the_first_replan_are_all_incremental() {
        let mut world = World::new();
        let upsert = |node, rack, address| Op::Upsert {
            node,
            rack,
            address,
            deleting: false,
        };
        world.apply(&upsert(0, 1, 1));
        world.apply(&Op::Reconcile);
        let script = [
            vec![upsert(1, 1, 1)],
            vec![upsert(3, 1, 1), upsert(2, 1, 1)],
            vec![
                Op::Report { node: 0, ok: true },
                Op::Report { node: 1, ok: false },
            ],
            vec![upsert(1, 2, 1)],        // to the earlier network: released
            vec![Op::Remove { node: 2 }], // gone: released
            vec![upsert(4, 1, 0)],        // no address yet
            vec![upsert(4, 1, 1)],        // now it has one
            vec![Op::Finish { which: 0 }, upsert(5, 1, 1)], // a freed subnet goes to a joiner
            vec![upsert(6, 0, 1)],        // not selected
            vec![upsert(0, 1, 1)],        // no change
        ];
        for batch in script {
            for op in &batch {
                world.apply(op);
            }
            world.apply(&Op::Reconcile);
        }
        assert_eq!(world.fallbacks, Vec::<String>::new());
        assert_eq!(world.incremental, 10);
        let index = world.index.as_ref().expect("index");
        let status = index.status(&PodNetworkStatus::default(), epoch());
        assert_eq!(status.selected_nodes, 5, "{status:#?}");
        assert_eq!(status.allocated_nodes, 4);
        assert_eq!(status.programmed_nodes, 1);
        assert!(
            status.conditions.iter().any(|c| c.type_ == types::DEGRADED
                && c.reason == reasons::NODES_CLAIMED_BY_OTHER_NETWORK)
        );
    }

    #[test]
    fn a_range_holding_a_joining_node_s_address_falls_back_to_the_full_replan() {
        let mut world = World::new();
        world.apply(&Op::Upsert {
            node: 0,
            rack: 1,
            address: 1,
            deleting: false,
        });
        world.apply(&Op::Reconcile);
        world.apply(&Op::Upsert {
            node: 1,
            rack: 0,
            address: 3,
            deleting: false,
        });
        world.apply(&Op::Reconcile);
        assert_eq!(world.fallbacks.len(), 1, "{:?}", world.fallbacks);
        assert!(world.index.is_none(), "an unusable range has no index");
    }
}
