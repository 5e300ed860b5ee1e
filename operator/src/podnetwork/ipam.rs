//! IPAM: which node subnet of a PodNetwork each of its nodes gets.
//!
//! Sits after [`crate::conflicts`] (which decides the nodes a network owns) and before the
//! controller's writes: [`plan`] takes the owned nodes and the network's existing NodeSubnets,
//! as read from the API, and returns what to keep, create, re-address and delete. The state
//! lives in the API, never in operator memory, so a restarted operator (or a new leader)
//! rebuilds the same picture from the same objects and every node keeps its subnet.
//!
//! Rules, all deterministic:
//! - a node with a valid existing subnet keeps it; only its node address follows the Node's
//!   InternalIP, and a node that stops reporting one keeps its last known address (listed in
//!   [`Plan::lost_address`], so the network can say so);
//! - a new node (in name order) gets the lowest free subnet, or with `use_node_pod_cidr`
//!   exactly its `spec.podCIDR`;
//! - subnets of nodes that left the network are released, and stay unused for the rest of this
//!   plan: the agent of the old node may still route them and the object still exists, so they
//!   are handed out again only in a later reconcile, once the delete went through.
//!
//! **Why NodeSubnets are named after the subnet** ([`object_name`], `overlay-10-247-3-0-24`),
//! not after the node: the API server refuses a second object with the same name, so two
//! operators that both believe they lead (a leader-election split brain, a stale cache) can
//! never hand the same subnet to two nodes — the second `create` fails with `AlreadyExists`,
//! the loser requeues and re-plans from the API. The worst a split brain can produce is two
//! subnets for one node, which the next plan resolves (the lowest is kept, the rest released).
//!
//! Cost: O((N + E) log(N + E)) for N nodes and E existing NodeSubnets. Free subnets are found
//! with a cursor over the sorted, merged set of used index ranges, never by scanning the pool
//! (a /8 cut into /30s holds four million subnets).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use causeway_crds::cidr::{self, Family};
use ipnet::IpNet;

/// What IPAM needs to know about a Node, for one network (the controller picks the addresses
/// and podCIDRs of the network's families).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// `metadata.name`.
    pub name: String,
    /// The node's `InternalIP` of the network's primary family, else its first one (the
    /// underlay address peers use).
    pub internal_ip: Option<IpAddr>,
    /// Its `InternalIP` of the other family, on a dual-stack underlay.
    pub secondary_ip: Option<IpAddr>,
    /// Its `spec.podCIDRs` entry of the primary range's family.
    pub pod_cidr: Option<IpNet>,
    /// Its `spec.podCIDRs` entry of the secondary range's family.
    pub secondary_pod_cidr: Option<IpNet>,
}

/// One node's subnets: the content of one NodeSubnet's spec (VTEP MAC aside, which follows from
/// the node name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The NodeSubnet's `metadata.name`.
    pub object: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `spec.cidr`.
    pub cidr: IpNet,
    /// `spec.nodeAddress`.
    pub node_address: IpAddr,
    /// `spec.secondaryCidr` (dual-stack networks).
    pub secondary_cidr: Option<IpNet>,
    /// `spec.secondaryNodeAddress` (dual-stack underlays).
    pub secondary_node_address: Option<IpAddr>,
}

/// Everything [`plan`] decides from.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The PodNetwork's name (prefix of new NodeSubnet names).
    pub network: &'a str,
    /// `spec.cidr` and `spec.nodeSubnetPrefixLength`.
    pub primary: Pool,
    /// `spec.secondaryCidr` and `spec.secondaryNodeSubnetPrefixLength` (dual-stack).
    pub secondary: Option<Pool>,
    /// Give each node exactly its `spec.podCIDRs` (as assigned by kube-controller-manager)
    /// instead of the lowest free subnets.
    pub use_node_pod_cidr: bool,
    /// The nodes this network owns (already selector- and conflict-filtered).
    pub nodes: &'a [NodeView],
    /// This network's NodeSubnets as read from the API.
    pub existing: &'a [Allocation],
}

/// What to do, and the resulting usage. Every list is sorted (allocations and node lists by
/// node name, releases by object name), so equal inputs give equal plans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Existing NodeSubnets that stay as they are.
    pub keep: Vec<Allocation>,
    /// NodeSubnets to create.
    pub create: Vec<Allocation>,
    /// Existing NodeSubnets whose node addresses changed or that get their secondary subnet
    /// (the network became dual-stack): the new values (same object and primary subnet).
    pub readdress: Vec<Allocation>,
    /// Existing NodeSubnets to delete.
    pub release: Vec<Allocation>,
    /// Nodes with an address that wait for a subnet because none is free (in a dual-stack
    /// network, none of one of the families: a node gets both or neither).
    pub exhausted: Vec<String>,
    /// Nodes without an InternalIP and without an existing subnet: peers could not reach them.
    pub missing_address: Vec<String>,
    /// `(node, last known address)` for nodes that hold a subnet (kept, in [`Plan::keep`]) but
    /// no longer report an InternalIP: peers keep using the last known address.
    pub lost_address: Vec<(String, IpAddr)>,
    /// `(node, why)` for nodes whose `spec.podCIDRs` cannot be used (with `use_node_pod_cidr`).
    pub bad_pod_cidr: Vec<(String, String)>,
    /// The primary pool the plan cut, for messages; `None` in a plan made without one (e.g.
    /// the controller's "change nothing" plan for an invalid spec).
    pub pool: Option<Pool>,
    /// The secondary pool (dual-stack networks).
    pub secondary_pool: Option<Pool>,
    /// How many node subnets the primary range holds (0 when the prefix length is
    /// impossible; saturated at `u128::MAX`).
    pub capacity: u128,
    /// Node subnets of the primary range in use once the plan is carried out (keep +
    /// readdress + create).
    pub used: u64,
    /// How many node subnets the secondary range holds.
    pub secondary_capacity: u128,
    /// Node subnets of the secondary range in use once the plan is carried out.
    pub secondary_used: u64,
}

impl Plan {
    /// Every allocation in force once the plan is carried out (keep, readdress, create).
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.keep.iter().chain(&self.readdress).chain(&self.create)
    }
}

/// A PodNetwork's address pool: one range cut into `/prefix` node subnets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// `spec.cidr` or `spec.secondaryCidr`.
    pub cidr: IpNet,
    /// `spec.nodeSubnetPrefixLength` or `spec.secondaryNodeSubnetPrefixLength`.
    pub prefix: u8,
}

/// The NodeSubnet name for a subnet of a PodNetwork: the contract lives in
/// [`causeway_crds::naming::node_subnet_name`].
pub use causeway_crds::naming::node_subnet_name as object_name;

/// Inclusive ranges of subnet indices, sorted and merged.
#[derive(Debug, Default)]
struct IndexRanges(Vec<(u128, u128)>);

impl IndexRanges {
    fn from_unsorted(mut ranges: Vec<(u128, u128)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Self(merged)
    }

    fn contains(&self, index: u128) -> bool {
        let at = self.0.partition_point(|&(_, hi)| hi < index);
        self.0.get(at).is_some_and(|&(lo, _)| lo <= index)
    }
}

/// Hands out the lowest free indices in increasing order: one pass over the used ranges for
/// the whole plan, whatever the pool size.
struct LowestFree<'r> {
    used: &'r [(u128, u128)],
    capacity: u128,
    next: u128,
}

impl LowestFree<'_> {
    fn take(&mut self) -> Option<u128> {
        while let Some((&(lo, hi), rest)) = self.used.split_first() {
            if lo > self.next {
                break;
            }
            self.next = self.next.max(hi.saturating_add(1));
            self.used = rest;
        }
        let index = self.next;
        (index < self.capacity).then(|| {
            self.next += 1;
            index
        })
    }
}

/// Index arithmetic over one pool.
struct Cutter {
    pool: Pool,
    capacity: u128,
    /// Whether it is the secondary pool, for messages naming the spec fields.
    secondary: bool,
}

/// An address as a number (IPv4 in the low 32 bits).
fn bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Cutter {
    fn new(pool: Pool, secondary: bool) -> Self {
        Self {
            pool,
            capacity: cidr::subnet_capacity(pool.cidr, pool.prefix).unwrap_or(0),
            secondary,
        }
    }

    /// The index of `subnet` when it is exactly one of the pool's subnets.
    fn index(&self, subnet: IpNet) -> Option<u128> {
        cidr::subnet_index(self.pool.cidr, self.pool.prefix, subnet).ok()
    }

    fn subnet(&self, index: u128) -> Option<IpNet> {
        cidr::nth_subnet(self.pool.cidr, self.pool.prefix, index).ok()
    }

    /// The indices of the pool subnets `subnet` overlaps, whatever its size (none for a
    /// subnet of the other family).
    fn overlapped(&self, subnet: IpNet) -> Option<(u128, u128)> {
        let cidr = self.pool.cidr;
        if self.capacity == 0 || Family::of(&cidr) != Family::of(&subnet) {
            return None;
        }
        let base = bits(cidr.network());
        let lo = base.max(bits(subnet.network()));
        let hi = bits(cidr.broadcast()).min(bits(subnet.broadcast()));
        let shift = u32::from(cidr.max_prefix_len() - self.pool.prefix);
        (lo <= hi).then(|| ((lo - base) >> shift, (hi - base) >> shift))
    }

    /// Why a node's podCIDR is not one of the pool's subnets.
    fn reject_pod_cidr(&self, pod_cidr: IpNet) -> String {
        let Pool { cidr, prefix } = self.pool;
        let (range, length) = if self.secondary {
            ("secondaryCidr", "secondaryNodeSubnetPrefixLength")
        } else {
            ("cidr", "nodeSubnetPrefixLength")
        };
        if pod_cidr.trunc() != pod_cidr {
            format!("podCIDR {pod_cidr} has host bits set")
        } else if !cidr.contains(&pod_cidr) {
            format!("podCIDR {pod_cidr} is outside {range} {cidr}")
        } else {
            format!(
                "podCIDR {pod_cidr} is a /{}, but this network gives nodes /{prefix} subnets ({length})",
                pod_cidr.prefix_len(),
            )
        }
    }
}

/// One pool's allocator for a plan: what is held, and the lowest free subnets after it.
struct Allocator<'r> {
    cutter: &'r Cutter,
    used: &'r IndexRanges,
    holder: BTreeMap<u128, &'r str>,
    lowest_free: LowestFree<'r>,
    taken_now: BTreeMap<u128, String>,
}

impl<'r> Allocator<'r> {
    fn new(cutter: &'r Cutter, used: &'r IndexRanges, holder: BTreeMap<u128, &'r str>) -> Self {
        Self {
            cutter,
            used,
            holder,
            lowest_free: LowestFree {
                used: &used.0,
                capacity: cutter.capacity,
                next: 0,
            },
            taken_now: BTreeMap::new(),
        }
    }

    /// The subnet for `node`: its podCIDR (`pod_cidr`, with `use_node_pod_cidr`), or the
    /// lowest free one. `Err(None)` when the pool is exhausted, `Err(Some(why))` when the
    /// podCIDR cannot be used.
    fn take(
        &mut self,
        node: &str,
        pod_cidr: Option<Option<IpNet>>,
    ) -> Result<(u128, IpNet), Option<String>> {
        let index = match pod_cidr {
            Some(pod_cidr) => self.pod_cidr_index(pod_cidr).map_err(Some)?,
            None => self.lowest_free.take().ok_or(None)?,
        };
        let subnet = self.cutter.subnet(index).ok_or(None)?;
        self.taken_now.insert(index, node.to_owned());
        Ok((index, subnet))
    }

    /// Gives back an index taken in this plan (the node's other family failed).
    fn untake(&mut self, index: u128) {
        self.taken_now.remove(&index);
    }

    /// The index of a podCIDR when it is one of the pool's subnets and free, else why not.
    fn pod_cidr_index(&self, pod_cidr: Option<IpNet>) -> Result<u128, String> {
        let Some(pod_cidr) = pod_cidr else {
            return Err(format!(
                "the node has no {} spec.podCIDR",
                Family::of(&self.cutter.pool.cidr)
            ));
        };
        let Some(index) = self.cutter.index(pod_cidr) else {
            return Err(self.cutter.reject_pod_cidr(pod_cidr));
        };
        if let Some(other) = self
            .holder
            .get(&index)
            .copied()
            .or_else(|| self.taken_now.get(&index).map(String::as_str))
        {
            return Err(format!(
                "podCIDR {pod_cidr} is already allocated to node {other}"
            ));
        }
        if self.used.contains(index) {
            return Err(format!(
                "podCIDR {pod_cidr} overlaps a subnet that is being released; it is allocated once the release completes"
            ));
        }
        Ok(index)
    }
}

/// Computes the plan for one network (see the module docs for the rules).
#[must_use]
pub fn plan(input: &Input) -> Plan {
    let primary = Cutter::new(input.primary, false);
    let secondary = input.secondary.map(|p| Cutter::new(p, true));
    let mut nodes: BTreeMap<&str, &NodeView> = BTreeMap::new();
    for node in input.nodes {
        nodes.entry(node.name.as_str()).or_insert(node);
    }

    let mut release: Vec<&Allocation> = Vec::new();

    // Existing subnets that can stay: the node is still ours and the subnets are the pools'
    // (a secondary subnet cannot be changed once set, so a wrong one releases the object; a
    // missing one is added). Ordered by (node, subnet) so the first per node is its lowest.
    let mut candidates: Vec<(u128, Option<u128>, &Allocation)> = Vec::new();
    for existing in input.existing {
        let second = match (&secondary, existing.secondary_cidr) {
            (_, None) => Some(None),
            (Some(cutter), Some(subnet)) => cutter.index(subnet).map(Some),
            (None, Some(_)) => None,
        };
        match (primary.index(existing.cidr), second) {
            (Some(index), Some(second)) if nodes.contains_key(existing.node.as_str()) => {
                candidates.push((index, second, existing));
            }
            _ => release.push(existing),
        }
    }
    candidates
        .sort_by(|(ia, _, a), (ib, _, b)| (&a.node, ia, &a.object).cmp(&(&b.node, ib, &b.object)));
    // A split brain can leave a node with several subnets: keep its lowest.
    let mut per_node: Vec<(u128, Option<u128>, &Allocation)> = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        match per_node.last() {
            Some((_, _, kept)) if kept.node == candidate.2.node => release.push(candidate.2),
            _ => per_node.push(candidate),
        }
    }
    // One subnet held by two nodes cannot come from subnet-named objects, but objects named
    // otherwise could do it: the smaller node name keeps it, the other node starts over. The
    // same for secondary subnets.
    per_node.sort_by(|(ia, _, a), (ib, _, b)| (ia, &a.node).cmp(&(ib, &b.node)));
    let mut kept: Vec<(u128, Option<u128>, &Allocation)> = Vec::with_capacity(per_node.len());
    let mut second_held: BTreeSet<u128> = BTreeSet::new();
    for candidate in per_node {
        let (index, second, existing) = candidate;
        let duplicate = kept.last().is_some_and(|(i, _, _)| *i == index)
            || second.is_some_and(|s| !second_held.insert(s));
        if duplicate {
            release.push(existing);
        } else {
            kept.push(candidate);
        }
    }

    // Never hand out what is kept, nor what is being released in this very plan.
    let used_in = |cutter: &Cutter, held: &mut dyn Iterator<Item = u128>| {
        let mut ranges: Vec<(u128, u128)> = held.map(|i| (i, i)).collect();
        ranges.extend(release.iter().flat_map(|r| {
            [Some(r.cidr), r.secondary_cidr]
                .into_iter()
                .flatten()
                .filter_map(|c| cutter.overlapped(c))
        }));
        IndexRanges::from_unsorted(ranges)
    };
    let used = used_in(&primary, &mut kept.iter().map(|&(i, _, _)| i));
    let second_used = secondary
        .as_ref()
        .map(|cutter| used_in(cutter, &mut kept.iter().filter_map(|&(_, s, _)| s)));
    let mut first = Allocator::new(
        &primary,
        &used,
        kept.iter().map(|&(i, _, a)| (i, a.node.as_str())).collect(),
    );
    let mut second = secondary.as_ref().zip(second_used.as_ref()).map(|(c, u)| {
        let holders = kept
            .iter()
            .filter_map(|&(_, s, a)| Some((s?, a.node.as_str())))
            .collect();
        Allocator::new(c, u, holders)
    });

    let mut plan = Plan {
        pool: Some(input.primary),
        secondary_pool: input.secondary,
        capacity: primary.capacity,
        secondary_capacity: secondary.as_ref().map_or(0, |c| c.capacity),
        ..Plan::default()
    };
    let pod_cidr = |v: Option<IpNet>| input.use_node_pod_cidr.then_some(v);
    for &(_, _, existing) in &kept {
        let node = nodes.get(existing.node.as_str()).copied();
        let mut next = existing.clone();
        match node.and_then(|n| n.internal_ip) {
            Some(address) => {
                next.node_address = address;
                next.secondary_node_address = node.and_then(|n| n.secondary_ip);
            }
            None => plan
                .lost_address
                .push((existing.node.clone(), existing.node_address)),
        }
        // A network that became dual-stack: the node's subnet of the new family.
        if let (Some(allocator), None) = (second.as_mut(), existing.secondary_cidr) {
            match allocator.take(
                &existing.node,
                pod_cidr(node.and_then(|n| n.secondary_pod_cidr)),
            ) {
                Ok((_, subnet)) => next.secondary_cidr = Some(subnet),
                Err(None) => plan.exhausted.push(existing.node.clone()),
                Err(Some(why)) => plan.bad_pod_cidr.push((existing.node.clone(), why)),
            }
        }
        if next == *existing {
            plan.keep.push(next);
        } else {
            plan.readdress.push(next);
        }
    }

    let kept_nodes: BTreeSet<&str> = kept.iter().map(|(_, _, a)| a.node.as_str()).collect();
    for (&name, node) in nodes.iter().filter(|(n, _)| !kept_nodes.contains(*n)) {
        let Some(address) = node.internal_ip else {
            plan.missing_address.push(name.to_owned());
            continue;
        };
        let (index, subnet) = match first.take(name, pod_cidr(node.pod_cidr)) {
            Ok(taken) => taken,
            Err(None) => {
                plan.exhausted.push(name.to_owned());
                continue;
            }
            Err(Some(why)) => {
                plan.bad_pod_cidr.push((name.to_owned(), why));
                continue;
            }
        };
        // Both families or neither: a node never runs half a dual-stack network.
        let secondary_cidr = match second.as_mut() {
            None => None,
            Some(allocator) => match allocator.take(name, pod_cidr(node.secondary_pod_cidr)) {
                Ok((_, subnet)) => Some(subnet),
                Err(why) => {
                    first.untake(index);
                    match why {
                        None => plan.exhausted.push(name.to_owned()),
                        Some(why) => plan.bad_pod_cidr.push((name.to_owned(), why)),
                    }
                    continue;
                }
            },
        };
        plan.create.push(Allocation {
            object: object_name(input.network, subnet),
            node: name.to_owned(),
            cidr: subnet,
            node_address: address,
            secondary_cidr,
            secondary_node_address: node.secondary_ip,
        });
    }

    // An object that is kept is never deleted, even if the input listed it twice.
    let kept_objects: BTreeSet<&str> = kept.iter().map(|(_, _, a)| a.object.as_str()).collect();
    release.sort_by(|a, b| (&a.object, &a.node, a.cidr).cmp(&(&b.object, &b.node, b.cidr)));
    release.dedup_by(|a, b| a.object == b.object);
    plan.release = release
        .into_iter()
        .filter(|r| !kept_objects.contains(r.object.as_str()))
        .cloned()
        .collect();
    plan.keep.sort_by(|a, b| a.node.cmp(&b.node));
    plan.readdress.sort_by(|a, b| a.node.cmp(&b.node));
    plan.lost_address.sort();
    plan.exhausted.sort();
    plan.bad_pod_cidr.sort();
    plan.used = u64::try_from(plan.allocations().count()).unwrap_or(u64::MAX);
    plan.secondary_used = u64::try_from(
        plan.allocations()
            .filter(|a| a.secondary_cidr.is_some())
            .count(),
    )
    .unwrap_or(u64::MAX);
    plan
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const NETWORK: &str = "overlay";

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn pool(cidr: &str, prefix: u8) -> Pool {
        Pool {
            cidr: net(cidr),
            prefix,
        }
    }

    /// `"node-a 192.168.1.1"`, `"node-a -"` (no address), `"node-a 192.168.1.1 10.0.1.0/24"`.
    fn node(spec: &str) -> NodeView {
        let mut parts = spec.split_whitespace();
        let name = parts.next().expect("node name").to_owned();
        let internal_ip = parts.next().filter(|a| *a != "-").map(ip);
        let pod_cidr = parts.next().map(net);
        NodeView {
            name,
            internal_ip,
            secondary_ip: None,
            pod_cidr,
            secondary_pod_cidr: None,
        }
    }

    /// `"node-a 10.247.0.0/24 192.168.1.1"`, named after the subnet, or
    /// `"node-a 10.247.0.0/24 192.168.1.1 legacy-name"`.
    fn alloc(spec: &str) -> Allocation {
        let parts: Vec<&str> = spec.split_whitespace().collect();
        let cidr = net(parts[1]);
        Allocation {
            object: parts
                .get(3)
                .map_or_else(|| object_name(NETWORK, cidr), |o| (*o).to_owned()),
            node: parts[0].to_owned(),
            cidr,
            node_address: ip(parts[2]),
            secondary_cidr: None,
            secondary_node_address: None,
        }
    }

    fn show(a: &Allocation) -> String {
        let plain = object_name(NETWORK, a.cidr);
        let mut line = if a.object == plain {
            format!("{} {} {}", a.node, a.cidr, a.node_address)
        } else {
            format!("{} {} {} {}", a.node, a.cidr, a.node_address, a.object)
        };
        if a.secondary_cidr.is_some() || a.secondary_node_address.is_some() {
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            line += &format!(
                " + {} {}",
                or_dash(a.secondary_cidr.map(|c| c.to_string())),
                or_dash(a.secondary_node_address.map(|c| c.to_string()))
            );
        }
        line
    }

    /// `"node-a 192.168.1.1 fd00:1::1"` (a dual-stack underlay; `-` for none), optionally
    /// followed by the node's two podCIDRs.
    fn dual_node(spec: &str) -> NodeView {
        let parts: Vec<&str> = spec.split_whitespace().collect();
        let some = |i: usize| parts.get(i).filter(|v| **v != "-").copied();
        NodeView {
            name: parts[0].to_owned(),
            internal_ip: some(1).map(ip),
            secondary_ip: some(2).map(ip),
            pod_cidr: some(3).map(net),
            secondary_pod_cidr: some(4).map(net),
        }
    }

    /// `"node-a 10.247.0.0/24 192.168.1.1 fd00:10:247::/64 fd00:1::1"` (`-` for none).
    fn dual_alloc(spec: &str) -> Allocation {
        let parts: Vec<&str> = spec.split_whitespace().collect();
        let some = |i: usize| parts.get(i).filter(|v| **v != "-").copied();
        Allocation {
            object: object_name(NETWORK, net(parts[1])),
            node: parts[0].to_owned(),
            cidr: net(parts[1]),
            node_address: ip(parts[2]),
            secondary_cidr: some(3).map(net),
            secondary_node_address: some(4).map(ip),
        }
    }

    #[test]
    fn dual_stack_plans_give_each_node_one_subnet_of_each_family_or_none() {
        struct Dual {
            name: &'static str,
            pod_cidr: bool,
            nodes: &'static [&'static str],
            existing: &'static [&'static str],
            want: &'static [&'static str],
        }
        let cases = [
            Dual {
                name: "new nodes get the lowest free subnet of each range, and both addresses",
                pod_cidr: false,
                nodes: &["node-a 192.168.1.1 fd00:1::1", "node-b 192.168.1.2 -"],
                existing: &[],
                want: &[
                    "create node-a 10.247.0.0/24 192.168.1.1 + fd00:10:247::/64 fd00:1::1",
                    "create node-b 10.247.1.0/24 192.168.1.2 + fd00:10:247:1::/64 -",
                    "used 2 of 4, 2 of 4",
                ],
            },
            Dual {
                name: "a network that became dual-stack gives its nodes their secondary subnet (in primary subnet order)",
                pod_cidr: false,
                nodes: &["node-a 192.168.1.1 -", "node-b 192.168.1.2 -"],
                existing: &[
                    "node-a 10.247.2.0/24 192.168.1.1",
                    "node-b 10.247.0.0/24 192.168.1.2",
                ],
                want: &[
                    "readdress node-a 10.247.2.0/24 192.168.1.1 + fd00:10:247:1::/64 -",
                    "readdress node-b 10.247.0.0/24 192.168.1.2 + fd00:10:247::/64 -",
                    "used 2 of 4, 2 of 4",
                ],
            },
            Dual {
                name: "the address of the other family follows the node, and goes when it goes",
                pod_cidr: false,
                nodes: &["node-a 192.168.1.1 fd00:1::9", "node-b 192.168.1.2 -"],
                existing: &[
                    "node-a 10.247.0.0/24 192.168.1.1 fd00:10:247::/64 fd00:1::1",
                    "node-b 10.247.1.0/24 192.168.1.2 fd00:10:247:1::/64 fd00:1::2",
                ],
                want: &[
                    "readdress node-a 10.247.0.0/24 192.168.1.1 + fd00:10:247::/64 fd00:1::9",
                    "readdress node-b 10.247.1.0/24 192.168.1.2 + fd00:10:247:1::/64 -",
                    "used 2 of 4, 2 of 4",
                ],
            },
            Dual {
                name: "a secondary subnet outside the range releases the object: it cannot be changed",
                pod_cidr: false,
                nodes: &["node-a 192.168.1.1 -"],
                existing: &["node-a 10.247.0.0/24 192.168.1.1 fd00:99::/64 -"],
                want: &[
                    "create node-a 10.247.1.0/24 192.168.1.1 + fd00:10:247::/64 -",
                    "release node-a 10.247.0.0/24 192.168.1.1 + fd00:99::/64 -",
                    "used 1 of 4, 1 of 4",
                ],
            },
            Dual {
                name: "a full secondary range: a new node gets neither subnet, a held one waits",
                pod_cidr: false,
                nodes: &[
                    "node-a 192.168.1.1 -",
                    "node-b 192.168.1.2 -",
                    "node-c 192.168.1.3 -",
                    "node-d 192.168.1.4 -",
                    "node-e 192.168.1.5 -",
                    "node-f 192.168.1.6 -",
                ],
                existing: &[
                    "node-a 10.247.0.0/24 192.168.1.1 fd00:10:247::/64 -",
                    "node-b 10.247.1.0/24 192.168.1.2 fd00:10:247:1::/64 -",
                    "node-c 10.247.2.0/24 192.168.1.3 fd00:10:247:2::/64 -",
                    "node-d 10.247.3.0/24 192.168.1.4 -",
                ],
                want: &[
                    "keep node-a 10.247.0.0/24 192.168.1.1 + fd00:10:247::/64 -",
                    "keep node-b 10.247.1.0/24 192.168.1.2 + fd00:10:247:1::/64 -",
                    "keep node-c 10.247.2.0/24 192.168.1.3 + fd00:10:247:2::/64 -",
                    "readdress node-d 10.247.3.0/24 192.168.1.4 + fd00:10:247:3::/64 -",
                    "exhausted node-e",
                    "exhausted node-f",
                    "used 4 of 4, 4 of 4",
                ],
            },
            Dual {
                name: "with podCIDR: both families from spec.podCIDRs, or nothing with the reason",
                pod_cidr: true,
                nodes: &[
                    "node-a 192.168.1.1 - 10.247.3.0/24 fd00:10:247:3::/64",
                    "node-b 192.168.1.2 - 10.247.1.0/24 -",
                    "node-c 192.168.1.3 - 10.247.2.0/24 fd00:10:247:3::/64",
                ],
                existing: &[],
                want: &[
                    "create node-a 10.247.3.0/24 192.168.1.1 + fd00:10:247:3::/64 -",
                    "bad node-b: the node has no IPv6 spec.podCIDR",
                    "bad node-c: podCIDR fd00:10:247:3::/64 is already allocated to node node-a",
                    "used 1 of 4, 1 of 4",
                ],
            },
        ];
        for case in &cases {
            let nodes: Vec<NodeView> = case.nodes.iter().map(|s| dual_node(s)).collect();
            let existing: Vec<Allocation> = case.existing.iter().map(|s| dual_alloc(s)).collect();
            let input = Input {
                network: NETWORK,
                primary: pool("10.247.0.0/22", 24),
                secondary: Some(pool("fd00:10:247::/62", 64)),
                use_node_pod_cidr: case.pod_cidr,
                nodes: &nodes,
                existing: &existing,
            };
            let got = plan(&input);
            check_invariants(&input, &got);
            let mut lines = summary(&got);
            if let Some(last) = lines.last_mut() {
                *last += &format!(", {} of {}", got.secondary_used, got.secondary_capacity);
            }
            assert_eq!(lines, case.want, "{}", case.name);
        }
    }

    /// The plan as lines a reader can compare with the table.
    fn summary(plan: &Plan) -> Vec<String> {
        let mut lines = Vec::new();
        lines.extend(plan.keep.iter().map(|a| format!("keep {}", show(a))));
        lines.extend(
            plan.readdress
                .iter()
                .map(|a| format!("readdress {}", show(a))),
        );
        lines.extend(plan.create.iter().map(|a| format!("create {}", show(a))));
        lines.extend(plan.release.iter().map(|a| format!("release {}", show(a))));
        lines.extend(plan.exhausted.iter().map(|n| format!("exhausted {n}")));
        lines.extend(
            plan.missing_address
                .iter()
                .map(|n| format!("no-address {n}")),
        );
        lines.extend(
            plan.lost_address
                .iter()
                .map(|(n, a)| format!("lost-address {n} {a}")),
        );
        lines.extend(
            plan.bad_pod_cidr
                .iter()
                .map(|(n, why)| format!("bad {n}: {why}")),
        );
        lines.push(format!("used {} of {}", plan.used, plan.capacity));
        lines
    }

    struct Case {
        name: &'static str,
        pod_cidr: bool,
        nodes: &'static [&'static str],
        existing: &'static [&'static str],
        want: &'static [&'static str],
    }

    /// Pool of every case: 10.247.0.0/22 cut into four /24s.
    fn run(case: &Case) -> Plan {
        let nodes: Vec<NodeView> = case.nodes.iter().map(|s| node(s)).collect();
        let existing: Vec<Allocation> = case.existing.iter().map(|s| alloc(s)).collect();
        plan(&Input {
            network: NETWORK,
            primary: pool("10.247.0.0/22", 24),
            secondary: None,
            use_node_pod_cidr: case.pod_cidr,
            nodes: &nodes,
            existing: &existing,
        })
    }

    #[test]
    fn plans_follow_the_allocation_rules() {
        let cases = [
            Case {
                name: "new nodes get the lowest free subnets in name order, starting at the first",
                pod_cidr: false,
                nodes: &["node-b 192.168.1.2", "node-a 192.168.1.1"],
                existing: &[],
                want: &[
                    "create node-a 10.247.0.0/24 192.168.1.1",
                    "create node-b 10.247.1.0/24 192.168.1.2",
                    "used 2 of 4",
                ],
            },
            Case {
                name: "a node keeps its subnet and a new node fills the lowest gap",
                pod_cidr: false,
                nodes: &[
                    "node-a 192.168.1.1",
                    "node-b 192.168.1.2",
                    "node-c 192.168.1.3",
                ],
                existing: &[
                    "node-b 10.247.0.0/24 192.168.1.2",
                    "node-c 10.247.2.0/24 192.168.1.3",
                ],
                want: &[
                    "keep node-b 10.247.0.0/24 192.168.1.2",
                    "keep node-c 10.247.2.0/24 192.168.1.3",
                    "create node-a 10.247.1.0/24 192.168.1.1",
                    "used 3 of 4",
                ],
            },
            Case {
                name: "a changed InternalIP readdresses the subnet and a lost one keeps the old address, listed as lost",
                pod_cidr: false,
                nodes: &["node-a 192.168.1.99", "node-b -"],
                existing: &[
                    "node-a 10.247.3.0/24 192.168.1.1",
                    "node-b 10.247.1.0/24 192.168.1.2",
                ],
                want: &[
                    "keep node-b 10.247.1.0/24 192.168.1.2",
                    "readdress node-a 10.247.3.0/24 192.168.1.99",
                    "lost-address node-b 192.168.1.2",
                    "used 2 of 4",
                ],
            },
            Case {
                name: "a departed node's subnet is released and not reused in the same plan",
                pod_cidr: false,
                nodes: &["node-b 192.168.1.2", "node-new 192.168.1.9"],
                existing: &[
                    "node-gone 10.247.0.0/24 192.168.1.1",
                    "node-b 10.247.1.0/24 192.168.1.2",
                ],
                want: &[
                    "keep node-b 10.247.1.0/24 192.168.1.2",
                    "create node-new 10.247.2.0/24 192.168.1.9",
                    "release node-gone 10.247.0.0/24 192.168.1.1",
                    "used 2 of 4",
                ],
            },
            Case {
                name: "a node with several subnets after a split brain keeps the lowest",
                pod_cidr: false,
                nodes: &["node-a 192.168.1.1"],
                existing: &[
                    "node-a 10.247.2.0/24 192.168.1.1",
                    "node-a 10.247.1.0/24 192.168.1.1",
                ],
                want: &[
                    "keep node-a 10.247.1.0/24 192.168.1.1",
                    "release node-a 10.247.2.0/24 192.168.1.1",
                    "used 1 of 4",
                ],
            },
            Case {
                name: "a subnet held by two nodes stays with the smaller name and the other node starts over",
                pod_cidr: false,
                nodes: &["node-a 192.168.1.1", "node-b 192.168.1.2"],
                existing: &[
                    "node-b 10.247.0.0/24 192.168.1.2 overlay-node-b",
                    "node-a 10.247.0.0/24 192.168.1.1 overlay-node-a",
                ],
                want: &[
                    "keep node-a 10.247.0.0/24 192.168.1.1 overlay-node-a",
                    "create node-b 10.247.1.0/24 192.168.1.2",
                    "release node-b 10.247.0.0/24 192.168.1.2 overlay-node-b",
                    "used 2 of 4",
                ],
            },
            Case {
                name: "subnets outside cidr or of the wrong size are released and their space is not reused yet",
                pod_cidr: false,
                nodes: &["node-a 192.168.1.1", "node-b 192.168.1.2"],
                existing: &[
                    "node-a 10.9.0.0/24 192.168.1.1",
                    "node-b 10.247.0.0/23 192.168.1.2",
                ],
                want: &[
                    "create node-a 10.247.2.0/24 192.168.1.1",
                    "create node-b 10.247.3.0/24 192.168.1.2",
                    "release node-b 10.247.0.0/23 192.168.1.2",
                    "release node-a 10.9.0.0/24 192.168.1.1",
                    "used 2 of 4",
                ],
            },
            Case {
                name: "a node without InternalIP waits unless it already has a subnet, which it keeps",
                pod_cidr: false,
                nodes: &["node-a -", "node-b -", "node-c 192.168.1.3"],
                existing: &["node-b 10.247.2.0/24 192.168.1.2"],
                want: &[
                    "keep node-b 10.247.2.0/24 192.168.1.2",
                    "create node-c 10.247.0.0/24 192.168.1.3",
                    "no-address node-a",
                    "lost-address node-b 192.168.1.2",
                    "used 2 of 4",
                ],
            },
            Case {
                name: "when the pool runs out the remaining nodes wait in name order",
                pod_cidr: false,
                nodes: &[
                    "node-f 192.168.1.6",
                    "node-e 192.168.1.5",
                    "node-d 192.168.1.4",
                    "node-c -",
                    "node-b 192.168.1.2",
                    "node-a 192.168.1.1",
                ],
                existing: &["node-e 10.247.1.0/24 192.168.1.5"],
                want: &[
                    "keep node-e 10.247.1.0/24 192.168.1.5",
                    "create node-a 10.247.0.0/24 192.168.1.1",
                    "create node-b 10.247.2.0/24 192.168.1.2",
                    "create node-d 10.247.3.0/24 192.168.1.4",
                    "exhausted node-f",
                    "no-address node-c",
                    "used 4 of 4",
                ],
            },
            Case {
                name: "with podCIDR a node gets exactly its podCIDR, wherever it lies in the pool",
                pod_cidr: true,
                nodes: &[
                    "node-a 192.168.1.1 10.247.3.0/24",
                    "node-b 192.168.1.2 10.247.1.0/24",
                ],
                existing: &[],
                want: &[
                    "create node-a 10.247.3.0/24 192.168.1.1",
                    "create node-b 10.247.1.0/24 192.168.1.2",
                    "used 2 of 4",
                ],
            },
            Case {
                name: "with podCIDR an unusable podCIDR is reported and allocates nothing",
                pod_cidr: true,
                nodes: &[
                    "node-absent 192.168.1.1",
                    "node-outside 192.168.1.2 10.9.0.0/24",
                    "node-small 192.168.1.3 10.247.2.0/25",
                    "node-taken 192.168.1.4 10.247.0.0/24",
                    "node-twin-a 192.168.1.5 10.247.2.0/24",
                    "node-twin-b 192.168.1.6 10.247.2.0/24",
                    "node-z 192.168.1.7 10.247.0.0/24",
                ],
                existing: &["node-z 10.247.0.0/24 192.168.1.7"],
                want: &[
                    "keep node-z 10.247.0.0/24 192.168.1.7",
                    "create node-twin-a 10.247.2.0/24 192.168.1.5",
                    "bad node-absent: the node has no IPv4 spec.podCIDR",
                    "bad node-outside: podCIDR 10.9.0.0/24 is outside cidr 10.247.0.0/22",
                    "bad node-small: podCIDR 10.247.2.0/25 is a /25, but this network gives nodes /24 subnets (nodeSubnetPrefixLength)",
                    "bad node-taken: podCIDR 10.247.0.0/24 is already allocated to node node-z",
                    "bad node-twin-b: podCIDR 10.247.2.0/24 is already allocated to node node-twin-a",
                    "used 2 of 4",
                ],
            },
            Case {
                name: "with podCIDR a podCIDR being released waits for the release",
                pod_cidr: true,
                nodes: &["node-new 192.168.1.9 10.247.1.0/24"],
                existing: &["node-gone 10.247.1.0/24 192.168.1.1"],
                want: &[
                    "release node-gone 10.247.1.0/24 192.168.1.1",
                    "bad node-new: podCIDR 10.247.1.0/24 overlaps a subnet that is being released; it is allocated once the release completes",
                    "used 0 of 4",
                ],
            },
        ];
        for case in &cases {
            assert_eq!(summary(&run(case)), case.want, "{}", case.name);
        }
    }

    #[test]
    fn an_object_listed_twice_is_kept_once_and_never_released() {
        let existing = [
            alloc("node-a 10.247.0.0/24 192.168.1.1"),
            alloc("node-a 10.247.0.0/24 192.168.1.1"),
        ];
        let nodes = [node("node-a 192.168.1.1")];
        let got = plan(&Input {
            network: NETWORK,
            primary: pool("10.247.0.0/22", 24),
            secondary: None,
            use_node_pod_cidr: false,
            nodes: &nodes,
            existing: &existing,
        });
        assert_eq!(
            summary(&got),
            ["keep node-a 10.247.0.0/24 192.168.1.1", "used 1 of 4"]
        );
    }

    #[test]
    fn an_impossible_prefix_allocates_nothing_and_keeps_nothing() {
        let existing = [alloc("node-a 10.247.0.0/22 192.168.1.1")];
        let nodes = [node("node-a 192.168.1.1")];
        let got = plan(&Input {
            network: NETWORK,
            primary: pool("10.247.0.0/22", 22),
            secondary: None,
            use_node_pod_cidr: false,
            nodes: &nodes,
            existing: &existing,
        });
        assert_eq!(
            summary(&got),
            [
                "release node-a 10.247.0.0/22 192.168.1.1",
                "exhausted node-a",
                "used 0 of 0"
            ]
        );
    }

    /// A pool holding 5,000 nodes' subnets with one gap at index 1,234, and two new nodes.
    fn huge_pool_plan(cidr: IpNet, prefix: u8, address: impl Fn(u32) -> IpAddr) -> Plan {
        let existing: Vec<Allocation> = (0..5_000u32)
            .filter(|i| *i != 1_234)
            .map(|i| {
                let subnet = cidr::nth_subnet(cidr, prefix, u128::from(i)).expect("in range");
                Allocation {
                    object: object_name(NETWORK, subnet),
                    node: format!("node-{i:05}"),
                    cidr: subnet,
                    node_address: address(i),
                    secondary_cidr: None,
                    secondary_node_address: None,
                }
            })
            .collect();
        let mut nodes: Vec<NodeView> = existing
            .iter()
            .map(|a| NodeView {
                name: a.node.clone(),
                internal_ip: Some(a.node_address),
                secondary_ip: None,
                pod_cidr: None,
                secondary_pod_cidr: None,
            })
            .collect();
        for (i, name) in ["new-a", "new-b"].into_iter().enumerate() {
            nodes.push(NodeView {
                name: name.to_owned(),
                internal_ip: Some(address(100_000 + u32::try_from(i).expect("two"))),
                ..nodes[0].clone()
            });
        }
        plan(&Input {
            network: NETWORK,
            primary: Pool { cidr, prefix },
            secondary: None,
            use_node_pod_cidr: false,
            nodes: &nodes,
            existing: &existing,
        })
    }

    #[test]
    fn a_huge_pool_is_not_scanned_subnet_by_subnet() {
        // A /8 cut into /30s: four million subnets; an IPv6 /32 cut into /64s: four billion.
        type Case = (&'static str, u8, fn(u32) -> IpAddr, [&'static str; 2], u128);
        let cases: [Case; 2] = [
            (
                "10.0.0.0/8",
                30,
                |i| IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + i)),
                ["10.0.19.72/30", "10.0.78.32/30"],
                1 << 22,
            ),
            (
                "2001:db8::/32",
                64,
                |i| IpAddr::V6(std::net::Ipv6Addr::from((0xfd00 << 112) | u128::from(i))),
                ["2001:db8:0:4d2::/64", "2001:db8:0:1388::/64"],
                1 << 32,
            ),
        ];
        for (cidr, prefix, address, want, capacity) in cases {
            let got = huge_pool_plan(net(cidr), prefix, address);
            let created: Vec<String> = got.create.iter().map(|a| a.cidr.to_string()).collect();
            assert_eq!(created, want, "{cidr}");
            assert_eq!(got.keep.len(), 4_999);
            assert_eq!((got.used, got.capacity), (5_001, capacity));
        }
    }

    /// xorshift64*: a tiny deterministic generator, enough to vary the inputs.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    fn random_nodes(rng: &mut Rng, pools: (Pool, Option<Pool>)) -> Vec<NodeView> {
        let mut nodes = Vec::new();
        for i in 0..30 {
            if !rng.chance(60) {
                continue;
            }
            let last_octet = u8::try_from(rng.below(4)).unwrap_or(0);
            let mut pod_cidr =
                |p: Pool| cidr::nth_subnet(p.cidr, p.prefix, u128::from(rng.below(20))).ok();
            let (pod, second_pod) = (pod_cidr(pools.0), pools.1.and_then(&mut pod_cidr));
            nodes.push(NodeView {
                name: format!("node-{i:02}"),
                internal_ip: rng
                    .chance(90)
                    .then_some(IpAddr::V4(Ipv4Addr::new(192, 168, 0, last_octet))),
                secondary_ip: rng
                    .chance(50)
                    .then(|| ip(&format!("fd00:192:168::{last_octet}"))),
                pod_cidr: pod,
                secondary_pod_cidr: second_pod,
            });
        }
        nodes
    }

    /// Existing objects a real cluster could hold, and some it should not.
    fn random_existing(rng: &mut Rng, pools: (Pool, Option<Pool>)) -> Vec<Allocation> {
        let (pool, second) = pools;
        (0..rng.below(12))
            .map(|_| {
                let cidr = match rng.below(10) {
                    0 => net("10.99.0.0/28"),
                    1 => net("10.0.0.0/27"),
                    _ => cidr::nth_subnet(pool.cidr, pool.prefix, u128::from(rng.below(16)))
                        .expect("in range"),
                };
                let secondary_cidr = match (second, rng.below(10)) {
                    (_, 0) => None,
                    (_, 1) => Some(net("fd99::/64")),
                    (None, _) => None,
                    (Some(p), _) => {
                        cidr::nth_subnet(p.cidr, p.prefix, u128::from(rng.below(16))).ok()
                    }
                };
                let node = format!("node-{:02}", rng.below(34));
                let object = if rng.chance(20) {
                    format!("{NETWORK}-{node}")
                } else {
                    object_name(NETWORK, cidr)
                };
                Allocation {
                    object,
                    node,
                    cidr,
                    node_address: ip("192.168.0.1"),
                    secondary_cidr,
                    secondary_node_address: None,
                }
            })
            .collect()
    }

    fn check_invariants(input: &Input, got: &Plan) {
        let allocations: Vec<&Allocation> = got.allocations().collect();
        let subnets: BTreeSet<IpNet> = allocations.iter().map(|a| a.cidr).collect();
        assert_eq!(
            subnets.len(),
            allocations.len(),
            "a subnet went to two nodes"
        );
        let seconds: Vec<IpNet> = allocations
            .iter()
            .filter_map(|a| a.secondary_cidr)
            .collect();
        let distinct: BTreeSet<&IpNet> = seconds.iter().collect();
        assert_eq!(
            distinct.len(),
            seconds.len(),
            "a secondary subnet went to two nodes"
        );
        for a in &allocations {
            match (input.secondary, a.secondary_cidr) {
                (Some(p), Some(c)) => assert!(cidr::subnet_index(p.cidr, p.prefix, c).is_ok()),
                (None, Some(c)) => panic!("{c} without a secondary pool"),
                // Only a kept node may wait for its secondary subnet (listed as waiting).
                (Some(_), None) => assert!(
                    got.exhausted.contains(&a.node)
                        || got.bad_pod_cidr.iter().any(|(n, _)| *n == a.node),
                    "{} has no secondary subnet and is not waiting for one",
                    a.node
                ),
                (None, None) => {}
            }
        }
        let owners: BTreeSet<&str> = allocations.iter().map(|a| a.node.as_str()).collect();
        assert_eq!(owners.len(), allocations.len(), "a node got two subnets");
        for a in &allocations {
            assert!(
                cidr::subnet_index(input.primary.cidr, input.primary.prefix, a.cidr).is_ok(),
                "{} is not a /{} of {}",
                a.cidr,
                input.primary.prefix,
                input.primary.cidr
            );
        }
        for created in &got.create {
            assert_eq!(created.object, object_name(input.network, created.cidr));
            for released in &got.release {
                assert!(
                    !created.cidr.contains(&released.cidr.network())
                        && !released.cidr.contains(&created.cidr.network()),
                    "{} reuses released {}",
                    created.cidr,
                    released.cidr
                );
            }
        }
        let kept_objects: BTreeSet<&str> = got
            .keep
            .iter()
            .chain(&got.readdress)
            .map(|a| a.object.as_str())
            .collect();
        assert!(
            got.release
                .iter()
                .all(|r| !kept_objects.contains(r.object.as_str()))
        );
        // A kept node waiting for its secondary subnet is both allocated and waiting.
        let mut accounted: Vec<&str> = owners.iter().copied().collect();
        let waiting = got
            .exhausted
            .iter()
            .map(String::as_str)
            .chain(got.bad_pod_cidr.iter().map(|(n, _)| n.as_str()));
        accounted.extend(waiting.filter(|n| !owners.contains(n)));
        accounted.extend(got.missing_address.iter().map(String::as_str));
        accounted.sort_unstable();
        let mut wanted: Vec<&str> = input.nodes.iter().map(|n| n.name.as_str()).collect();
        wanted.sort_unstable();
        assert_eq!(accounted, wanted, "every node lands in exactly one outcome");
        // Lost addresses: exactly the kept nodes that report none, with the address they keep.
        let mut lost: Vec<(String, IpAddr)> = got
            .keep
            .iter()
            .chain(&got.readdress)
            .filter(|a| {
                input
                    .nodes
                    .iter()
                    .find(|n| n.name == a.node)
                    .is_some_and(|n| n.internal_ip.is_none())
            })
            .map(|a| (a.node.clone(), a.node_address))
            .collect();
        lost.sort();
        assert_eq!(got.lost_address, lost);
        assert_eq!(got.used, u64::try_from(allocations.len()).unwrap_or(0));
        assert!(u128::from(got.used) <= got.capacity);
        assert_eq!(
            got.secondary_used,
            u64::try_from(seconds.len()).unwrap_or(0)
        );
    }

    #[test]
    fn random_plans_never_share_a_subnet_are_idempotent_and_never_move_a_node() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let use_node_pod_cidr = rng.chance(30);
            // Half the seeds plan a dual-stack network (an IPv6 /120 cut into /124s: 16
            // subnets, as tight as the IPv4 pool).
            let pools = (
                pool("10.0.0.0/24", 28),
                rng.chance(50).then(|| pool("fd00:10::/120", 124)),
            );
            let mut existing = random_existing(&mut rng, pools);
            let mut previous: BTreeMap<String, (IpNet, Option<IpNet>)> = BTreeMap::new();
            // Injected duplicates may legitimately move a node to a lower subnet (the
            // split-brain rule), so stability is checked only after clean rounds.
            let mut clean = false;
            for round in 0..6 {
                let nodes = random_nodes(&mut rng, pools);
                let input = Input {
                    network: NETWORK,
                    primary: pools.0,
                    secondary: pools.1,
                    use_node_pod_cidr,
                    nodes: &nodes,
                    existing: &existing,
                };
                let first = plan(&input);
                check_invariants(&input, &first);
                let context = format!("seed {seed} round {round}");
                for a in first.keep.iter().chain(&first.readdress).filter(|_| clean) {
                    if let Some((cidr, second)) = previous.get(&a.node) {
                        assert_eq!(*cidr, a.cidr, "{context}: {} moved", a.node);
                        if second.is_some() {
                            assert_eq!(*second, a.secondary_cidr, "{context}: {} moved", a.node);
                        }
                    }
                }

                // Carrying the plan out and planning again changes nothing, except that
                // nodes which waited for a subnet being released may now get one.
                let applied: Vec<Allocation> = first.allocations().cloned().collect();
                let again_input = Input {
                    existing: &applied,
                    ..input
                };
                let again = plan(&again_input);
                check_invariants(&again_input, &again);
                assert!(again.release.is_empty(), "{context}: {:?}", again.release);
                let waited: BTreeSet<&str> = first
                    .exhausted
                    .iter()
                    .map(String::as_str)
                    .chain(first.bad_pod_cidr.iter().map(|(n, _)| n.as_str()))
                    .collect();
                // Only a node that waited for its secondary subnet is updated: it gets it.
                for updated in &again.readdress {
                    let before = applied.iter().find(|a| a.object == updated.object);
                    assert!(
                        waited.contains(updated.node.as_str())
                            && before.is_some_and(|b| b.secondary_cidr.is_none())
                            && updated.secondary_cidr.is_some(),
                        "{context}: {updated:?}"
                    );
                }
                for created in &again.create {
                    assert!(
                        waited.contains(created.node.as_str()),
                        "{context}: {created:?}"
                    );
                }
                let settled: Vec<Allocation> = again.allocations().cloned().collect();
                let third = plan(&Input {
                    existing: &settled,
                    ..input
                });
                assert!(
                    third.create.is_empty() && third.release.is_empty(),
                    "{context}"
                );
                assert_eq!(third.keep.len(), settled.len(), "{context}");

                previous = settled
                    .iter()
                    .map(|a| (a.node.clone(), (a.cidr, a.secondary_cidr)))
                    .collect();
                existing = settled;
                clean = !rng.chance(30);
                if !clean {
                    existing.extend(random_existing(&mut rng, pools));
                }
            }
        }
    }
}
