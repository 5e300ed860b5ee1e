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
use std::net::Ipv4Addr;

use causeway_crds::cidr;
use ipnet::Ipv4Net;

/// What IPAM needs to know about a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// `metadata.name`.
    pub name: String,
    /// The node's `InternalIP` from `status.addresses` (the underlay address peers use).
    pub internal_ip: Option<Ipv4Addr>,
    /// `spec.podCIDR` parsed; `None` when absent, IPv6 or unparsable.
    pub pod_cidr: Option<Ipv4Net>,
}

/// One node's subnet: the content of one NodeSubnet's spec (VTEP MAC aside, which follows from
/// the node name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The NodeSubnet's `metadata.name`.
    pub object: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `spec.cidr`.
    pub cidr: Ipv4Net,
    /// `spec.nodeAddress`.
    pub node_address: Ipv4Addr,
}

/// Everything [`plan`] decides from.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The PodNetwork's name (prefix of new NodeSubnet names).
    pub network: &'a str,
    /// `spec.cidr`.
    pub cidr: Ipv4Net,
    /// `spec.nodeSubnetPrefixLength`.
    pub prefix: u8,
    /// Give each node exactly its `spec.podCIDR` (as assigned by kube-controller-manager)
    /// instead of the lowest free subnet.
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
    /// Existing NodeSubnets whose node address changed: the new value (same object and
    /// subnet).
    pub readdress: Vec<Allocation>,
    /// Existing NodeSubnets to delete.
    pub release: Vec<Allocation>,
    /// Nodes with an address that wait for a subnet because none is free.
    pub exhausted: Vec<String>,
    /// Nodes without an InternalIP and without an existing subnet: peers could not reach them.
    pub missing_address: Vec<String>,
    /// `(node, last known address)` for nodes that hold a subnet (kept, in [`Plan::keep`]) but
    /// no longer report an InternalIP: peers keep using the last known address.
    pub lost_address: Vec<(String, Ipv4Addr)>,
    /// `(node, why)` for nodes whose `spec.podCIDR` cannot be used (with `use_node_pod_cidr`).
    pub bad_pod_cidr: Vec<(String, String)>,
    /// The pool the plan cut, for messages; `None` in a plan made without one (e.g. the
    /// controller's "change nothing" plan for an invalid spec).
    pub pool: Option<Pool>,
    /// How many node subnets `cidr` holds (0 when the prefix length is impossible).
    pub capacity: u64,
    /// Node subnets in use once the plan is carried out (keep + readdress + create).
    pub used: u64,
}

impl Plan {
    /// Every allocation in force once the plan is carried out (keep, readdress, create).
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.keep.iter().chain(&self.readdress).chain(&self.create)
    }
}

/// A PodNetwork's address pool: `cidr` cut into `/prefix` node subnets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// `spec.cidr`.
    pub cidr: Ipv4Net,
    /// `spec.nodeSubnetPrefixLength`.
    pub prefix: u8,
}

/// The NodeSubnet name for a subnet of a PodNetwork: the contract lives in
/// [`causeway_crds::naming::node_subnet_name`].
pub use causeway_crds::naming::node_subnet_name as object_name;

/// Inclusive ranges of subnet indices, sorted and merged.
#[derive(Debug, Default)]
struct IndexRanges(Vec<(u64, u64)>);

impl IndexRanges {
    fn from_unsorted(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        Self(merged)
    }

    fn contains(&self, index: u64) -> bool {
        let at = self.0.partition_point(|&(_, hi)| hi < index);
        self.0.get(at).is_some_and(|&(lo, _)| lo <= index)
    }
}

/// Hands out the lowest free indices in increasing order: one pass over the used ranges for
/// the whole plan, whatever the pool size.
struct LowestFree<'r> {
    used: &'r [(u64, u64)],
    capacity: u64,
    next: u64,
}

impl LowestFree<'_> {
    fn take(&mut self) -> Option<u64> {
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

/// Index arithmetic over one plan's pool.
struct Cutter {
    cidr: Ipv4Net,
    prefix: u8,
    capacity: u64,
}

impl Cutter {
    /// The index of `subnet` when it is exactly one of the pool's subnets.
    fn index(&self, subnet: Ipv4Net) -> Option<u64> {
        cidr::subnet_index(self.cidr, self.prefix, subnet).ok()
    }

    fn subnet(&self, index: u64) -> Option<Ipv4Net> {
        cidr::nth_subnet(self.cidr, self.prefix, index).ok()
    }

    /// The indices of the pool subnets `subnet` overlaps, whatever its size.
    fn overlapped(&self, subnet: Ipv4Net) -> Option<(u64, u64)> {
        if self.capacity == 0 {
            return None;
        }
        let base = u64::from(u32::from(self.cidr.network()));
        let lo = u64::from(u32::from(self.cidr.network()).max(u32::from(subnet.network())));
        let hi = u64::from(u32::from(self.cidr.broadcast()).min(u32::from(subnet.broadcast())));
        let shift = 32 - u32::from(self.prefix);
        (lo <= hi).then(|| ((lo - base) >> shift, (hi - base) >> shift))
    }

    /// Why a node's podCIDR is not one of the pool's subnets.
    fn reject_pod_cidr(&self, pod_cidr: Ipv4Net) -> String {
        if pod_cidr.trunc() != pod_cidr {
            format!("podCIDR {pod_cidr} has host bits set")
        } else if !self.cidr.contains(&pod_cidr) {
            format!("podCIDR {pod_cidr} is outside cidr {}", self.cidr)
        } else {
            format!(
                "podCIDR {pod_cidr} is a /{}, but this network gives nodes /{} subnets (nodeSubnetPrefixLength)",
                pod_cidr.prefix_len(),
                self.prefix
            )
        }
    }
}

/// Computes the plan for one network (see the module docs for the rules).
#[must_use]
pub fn plan(input: &Input) -> Plan {
    let pool = Cutter {
        cidr: input.cidr,
        prefix: input.prefix,
        capacity: cidr::subnet_capacity(input.cidr, input.prefix).unwrap_or(0),
    };
    let mut nodes: BTreeMap<&str, &NodeView> = BTreeMap::new();
    for node in input.nodes {
        nodes.entry(node.name.as_str()).or_insert(node);
    }

    let mut release: Vec<&Allocation> = Vec::new();

    // Existing subnets that can stay: the node is still ours and the subnet is one of the
    // pool's. Ordered by (node, subnet) so the first per node is its lowest subnet.
    let mut candidates: Vec<(u64, &Allocation)> = Vec::new();
    for existing in input.existing {
        match pool.index(existing.cidr) {
            Some(index) if nodes.contains_key(existing.node.as_str()) => {
                candidates.push((index, existing));
            }
            _ => release.push(existing),
        }
    }
    candidates.sort_by(|(ia, a), (ib, b)| (&a.node, ia, &a.object).cmp(&(&b.node, ib, &b.object)));
    // A split brain can leave a node with several subnets: keep its lowest.
    let mut per_node: Vec<(u64, &Allocation)> = Vec::with_capacity(candidates.len());
    for (index, existing) in candidates {
        match per_node.last() {
            Some((_, kept)) if kept.node == existing.node => release.push(existing),
            _ => per_node.push((index, existing)),
        }
    }
    // One subnet held by two nodes cannot come from subnet-named objects, but objects named
    // otherwise could do it: the smaller node name keeps it, the other node starts over.
    per_node.sort_by(|(ia, a), (ib, b)| (ia, &a.node).cmp(&(ib, &b.node)));
    let mut kept: Vec<(u64, &Allocation)> = Vec::with_capacity(per_node.len());
    for (index, existing) in per_node {
        match kept.last() {
            Some((kept_index, _)) if *kept_index == index => release.push(existing),
            _ => kept.push((index, existing)),
        }
    }

    // Never hand out what is kept, nor what is being released in this very plan.
    let mut used_ranges: Vec<(u64, u64)> = kept.iter().map(|&(i, _)| (i, i)).collect();
    used_ranges.extend(release.iter().filter_map(|r| pool.overlapped(r.cidr)));
    let used = IndexRanges::from_unsorted(used_ranges);
    let holder: BTreeMap<u64, &str> = kept.iter().map(|&(i, a)| (i, a.node.as_str())).collect();

    let mut plan = Plan {
        pool: Some(Pool {
            cidr: input.cidr,
            prefix: input.prefix,
        }),
        capacity: pool.capacity,
        ..Plan::default()
    };
    for &(_, existing) in &kept {
        let node = nodes.get(existing.node.as_str()).copied();
        match node.and_then(|n| n.internal_ip) {
            Some(address) if address != existing.node_address => {
                plan.readdress.push(Allocation {
                    node_address: address,
                    ..existing.clone()
                });
            }
            Some(_) => plan.keep.push(existing.clone()),
            None => {
                plan.lost_address
                    .push((existing.node.clone(), existing.node_address));
                plan.keep.push(existing.clone());
            }
        }
    }

    let kept_nodes: BTreeSet<&str> = kept.iter().map(|(_, a)| a.node.as_str()).collect();
    let mut lowest_free = LowestFree {
        used: &used.0,
        capacity: pool.capacity,
        next: 0,
    };
    let mut taken_now: BTreeMap<u64, &str> = BTreeMap::new();
    for (&name, node) in nodes.iter().filter(|(n, _)| !kept_nodes.contains(*n)) {
        let Some(address) = node.internal_ip else {
            plan.missing_address.push(name.to_owned());
            continue;
        };
        let index = if input.use_node_pod_cidr {
            match pod_cidr_index(&pool, node, &used, &holder, &taken_now) {
                Ok(index) => index,
                Err(why) => {
                    plan.bad_pod_cidr.push((name.to_owned(), why));
                    continue;
                }
            }
        } else {
            let Some(index) = lowest_free.take() else {
                plan.exhausted.push(name.to_owned());
                continue;
            };
            index
        };
        let Some(subnet) = pool.subnet(index) else {
            plan.exhausted.push(name.to_owned());
            continue;
        };
        taken_now.insert(index, name);
        plan.create.push(Allocation {
            object: object_name(input.network, subnet),
            node: name.to_owned(),
            cidr: subnet,
            node_address: address,
        });
    }

    // An object that is kept is never deleted, even if the input listed it twice.
    let kept_objects: BTreeSet<&str> = kept.iter().map(|(_, a)| a.object.as_str()).collect();
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
    plan.used = u64::try_from(plan.allocations().count()).unwrap_or(u64::MAX);
    plan
}

/// The index of `node`'s podCIDR when it is one of the pool's subnets and free, else why not.
fn pod_cidr_index(
    pool: &Cutter,
    node: &NodeView,
    used: &IndexRanges,
    holder: &BTreeMap<u64, &str>,
    taken_now: &BTreeMap<u64, &str>,
) -> Result<u64, String> {
    let Some(pod_cidr) = node.pod_cidr else {
        return Err("the node has no IPv4 spec.podCIDR".to_owned());
    };
    let Some(index) = pool.index(pod_cidr) else {
        return Err(pool.reject_pod_cidr(pod_cidr));
    };
    if let Some(other) = holder.get(&index).or_else(|| taken_now.get(&index)) {
        return Err(format!(
            "podCIDR {pod_cidr} is already allocated to node {other}"
        ));
    }
    if used.contains(index) {
        return Err(format!(
            "podCIDR {pod_cidr} overlaps a subnet that is being released; it is allocated once the release completes"
        ));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETWORK: &str = "overlay";

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
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
            pod_cidr,
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
        }
    }

    fn show(a: &Allocation) -> String {
        let plain = object_name(NETWORK, a.cidr);
        if a.object == plain {
            format!("{} {} {}", a.node, a.cidr, a.node_address)
        } else {
            format!("{} {} {} {}", a.node, a.cidr, a.node_address, a.object)
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
            cidr: net("10.247.0.0/22"),
            prefix: 24,
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
            cidr: net("10.247.0.0/22"),
            prefix: 24,
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
            cidr: net("10.247.0.0/22"),
            prefix: 22,
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

    #[test]
    fn a_huge_pool_is_not_scanned_subnet_by_subnet() {
        // A /8 cut into /30s: four million subnets, the first 5,000 in use with one gap.
        let cidr = net("10.0.0.0/8");
        let existing: Vec<Allocation> = (0..5_000u64)
            .filter(|i| *i != 1_234)
            .map(|i| {
                let subnet = cidr::nth_subnet(cidr, 30, i).expect("in range");
                Allocation {
                    object: object_name(NETWORK, subnet),
                    node: format!("node-{i:05}"),
                    cidr: subnet,
                    node_address: Ipv4Addr::from(0xc0a8_0000 + u32::try_from(i).expect("small")),
                }
            })
            .collect();
        let mut nodes: Vec<NodeView> = existing
            .iter()
            .map(|a| NodeView {
                name: a.node.clone(),
                internal_ip: Some(a.node_address),
                pod_cidr: None,
            })
            .collect();
        for name in ["new-a", "new-b"] {
            nodes.push(node(&format!("{name} 172.16.0.1")));
        }
        let got = plan(&Input {
            network: NETWORK,
            cidr,
            prefix: 30,
            use_node_pod_cidr: false,
            nodes: &nodes,
            existing: &existing,
        });
        let created: Vec<String> = got.create.iter().map(|a| a.cidr.to_string()).collect();
        assert_eq!(created, ["10.0.19.72/30", "10.0.78.32/30"]);
        assert_eq!(got.keep.len(), 4_999);
        assert_eq!((got.used, got.capacity), (5_001, 1 << 22));
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

    fn random_nodes(rng: &mut Rng, pool: Ipv4Net, prefix: u8) -> Vec<NodeView> {
        let mut nodes = Vec::new();
        for i in 0..30 {
            if !rng.chance(60) {
                continue;
            }
            let last_octet = u8::try_from(rng.below(4)).unwrap_or(0);
            nodes.push(NodeView {
                name: format!("node-{i:02}"),
                internal_ip: rng
                    .chance(90)
                    .then_some(Ipv4Addr::new(192, 168, 0, last_octet)),
                pod_cidr: cidr::nth_subnet(pool, prefix, rng.below(20)).ok(),
            });
        }
        nodes
    }

    /// Existing objects a real cluster could hold, and some it should not.
    fn random_existing(rng: &mut Rng, pool: Ipv4Net, prefix: u8) -> Vec<Allocation> {
        (0..rng.below(12))
            .map(|_| {
                let cidr = match rng.below(10) {
                    0 => net("10.99.0.0/28"),
                    1 => net("10.0.0.0/27"),
                    _ => cidr::nth_subnet(pool, prefix, rng.below(16)).expect("in range"),
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
                    node_address: Ipv4Addr::new(192, 168, 0, 1),
                }
            })
            .collect()
    }

    fn check_invariants(input: &Input, got: &Plan) {
        let allocations: Vec<&Allocation> = got.allocations().collect();
        let subnets: BTreeSet<Ipv4Net> = allocations.iter().map(|a| a.cidr).collect();
        assert_eq!(
            subnets.len(),
            allocations.len(),
            "a subnet went to two nodes"
        );
        let owners: BTreeSet<&str> = allocations.iter().map(|a| a.node.as_str()).collect();
        assert_eq!(owners.len(), allocations.len(), "a node got two subnets");
        for a in &allocations {
            assert!(
                cidr::subnet_index(input.cidr, input.prefix, a.cidr).is_ok(),
                "{} is not a /{} of {}",
                a.cidr,
                input.prefix,
                input.cidr
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
        let mut accounted: Vec<&str> = owners.iter().copied().collect();
        accounted.extend(got.exhausted.iter().map(String::as_str));
        accounted.extend(got.missing_address.iter().map(String::as_str));
        accounted.extend(got.bad_pod_cidr.iter().map(|(n, _)| n.as_str()));
        accounted.sort_unstable();
        let mut wanted: Vec<&str> = input.nodes.iter().map(|n| n.name.as_str()).collect();
        wanted.sort_unstable();
        assert_eq!(accounted, wanted, "every node lands in exactly one outcome");
        // Lost addresses: exactly the kept nodes that report none, with the address they keep.
        let mut lost: Vec<(String, Ipv4Addr)> = got
            .keep
            .iter()
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
        assert!(got.used <= got.capacity);
    }

    #[test]
    fn random_plans_never_share_a_subnet_are_idempotent_and_never_move_a_node() {
        let pool = net("10.0.0.0/24");
        let prefix = 28;
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let use_node_pod_cidr = rng.chance(30);
            let mut existing = random_existing(&mut rng, pool, prefix);
            let mut previous: BTreeMap<String, Ipv4Net> = BTreeMap::new();
            // Injected duplicates may legitimately move a node to a lower subnet (the
            // split-brain rule), so stability is checked only after clean rounds.
            let mut clean = false;
            for round in 0..6 {
                let nodes = random_nodes(&mut rng, pool, prefix);
                let input = Input {
                    network: NETWORK,
                    cidr: pool,
                    prefix,
                    use_node_pod_cidr,
                    nodes: &nodes,
                    existing: &existing,
                };
                let first = plan(&input);
                check_invariants(&input, &first);
                let context = format!("seed {seed} round {round}");
                for a in first.keep.iter().chain(&first.readdress).filter(|_| clean) {
                    if let Some(before) = previous.get(&a.node) {
                        assert_eq!(*before, a.cidr, "{context}: {} moved", a.node);
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
                assert!(again.readdress.is_empty(), "{context}");
                let waited: BTreeSet<&str> = first
                    .exhausted
                    .iter()
                    .map(String::as_str)
                    .chain(first.bad_pod_cidr.iter().map(|(n, _)| n.as_str()))
                    .collect();
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

                previous = settled.iter().map(|a| (a.node.clone(), a.cidr)).collect();
                existing = settled;
                clean = !rng.chance(30);
                if !clean {
                    existing.extend(random_existing(&mut rng, pool, prefix));
                }
            }
        }
    }
}
