//! `diff`: the operations that turn the observed kernel state into the desired one.
//!
//! Third step of the agent's loop (plan → observe → diff → apply). Pure: two [`State`]s in, a
//! list of [`Op`]s out, in an order that a real kernel accepts when they are applied one after
//! the other, and that keeps traffic flowing while they are:
//!
//! 1. links in the way are deleted: a link whose kind attributes changed (VNI, port, local
//!    address, underlay, MAC: none can be changed in place), and a VXLAN link holding the VNI
//!    and port a new one needs (the kernel allows one device per VNI and port);
//! 2. links are created, bridges before VXLAN devices, then MTU and up/down are updated, and
//!    the VXLAN device gets loose reverse-path filtering; pods' veths marked for a bridge
//!    that was re-created are attached to it again, and veths new on a bridge are marked
//!    (see [`crate::model::Port`]);
//! 3. addresses are added;
//! 4. FDB entries, then neighbours, then routes are added or replaced, so that when a route
//!    appears, its next hop already resolves to a VTEP (no ARP, no flooding: packets sent
//!    before would be dropped);
//! 5. proxy ARP and proxy NDP are turned on (after the route they answer for), proxy NDP
//!    entries (one per local pod, dual-stack Flat) are added, and the NAT table is replaced
//!    when it differs (one atomic nftables transaction);
//! 6. what is observed but not desired is removed: routes, neighbours, FDB entries,
//!    addresses, and last the links, so that new paths exist before old ones go
//!    (make-before-break when a route moves to another device).
//!
//! Deleting a link removes everything on it, routes through it included: nothing on a link
//! that is being deleted gets an op of its own (the kernel would answer "not found"), and
//! everything desired on a re-created link is added again. Three more kernel behaviours are
//! accounted for the same way, each verified in a network namespace on kernel 6.x:
//! - setting a link down flushes the routes through it and its neighbour entries (even
//!   permanent ones; FDB entries stay), so they count as gone and are added again;
//! - deleting the last IPv4 address of a link flushes the routes through it, so addresses are
//!   added before old ones are deleted, and when a link must lose all of them the deletions
//!   come early and its routes are added again;
//! - an address added in the subnet of an existing one becomes its secondary and is deleted
//!   with it (`promote_secondaries` is off by default), so such an old address is deleted
//!   before the new one is added.
//!
//! Same states give no ops; one peer added, changed or removed gives a handful of ops,
//! whatever the number of peers (the maps are walked in O(n), but the kernel sees O(1)).
//! `desired` is assumed consistent (as [`crate::plan`] makes it): addresses, neighbours and FDB
//! entries sit on desired links, routes on desired links or on foreign ones (the underlay).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use crate::model::{Link, LinkKind, Nat, Nat6, Op, Snat, Snat6, State};

/// The operations that take the kernel from `observed` to `desired` (see the module docs for
/// their order and why).
#[must_use]
pub fn diff(desired: &State, observed: &State) -> Vec<Op> {
    let links = LinkChanges::new(desired, observed);
    let mut ops = Vec::new();

    ops.extend(links.delete_first.iter().map(|n| Op::DeleteLink(n.clone())));
    ops.extend(links.create.iter().map(|l| Op::CreateLink((*l).clone())));
    ops.extend(links.update.iter().cloned());

    let mut gone = links.gone;
    // Loose reverse-path filtering on the agent's devices as soon as they exist (a re-created
    // device starts from the kernel's default again).
    for dev in &desired.loose_rp_filter {
        if !observed.loose_rp_filter.contains(dev) || gone.all(dev) {
            ops.push(Op::SetLooseRpFilter(dev.clone()));
        }
    }
    // IPv6 on the agent's links of a dual-stack network before their IPv6 addresses (a
    // re-created device starts from the node's default again).
    for dev in &desired.ipv6_on {
        if !observed.ipv6_on.contains(dev) || gone.all(dev) {
            ops.push(Op::EnableIpv6(dev.clone()));
        }
    }
    ports(desired, observed, &gone, &mut ops);
    let late_addresses = addresses(desired, observed, &mut gone, &mut ops);

    for (key, want) in &desired.fdb {
        if observed.fdb.get(key).filter(|_| !gone.all(&key.0)) != Some(want) {
            ops.push(Op::ReplaceFdb(want.clone()));
        }
    }
    for (key, want) in &desired.neighbours {
        if observed
            .neighbours
            .get(key)
            .filter(|_| !gone.neighbours(&key.0))
            != Some(want)
        {
            ops.push(Op::ReplaceNeighbour(want.clone()));
        }
    }
    for (dst, want) in &desired.routes {
        if observed.routes.get(dst).filter(|r| !gone.routes(&r.dev)) != Some(want) {
            ops.push(Op::ReplaceRoute(want.clone()));
        }
    }

    // Proxy ARP once the route that makes it answer is in place.
    for dev in desired.proxy_arp.difference(&observed.proxy_arp) {
        ops.push(Op::SetProxyArp {
            dev: dev.clone(),
            on: true,
        });
    }
    // The same for IPv6 (dual-stack Flat): proxy NDP, then one proxy entry per local pod.
    for dev in desired.proxy_ndp.difference(&observed.proxy_ndp) {
        ops.push(Op::SetProxyNdp {
            dev: dev.clone(),
            on: true,
        });
    }
    for (dev, ip) in desired
        .proxy_neighbours
        .difference(&observed.proxy_neighbours)
    {
        ops.push(Op::AddProxyNeighbour {
            dev: dev.clone(),
            ip: *ip,
        });
    }

    // NAT is independent of links: the table is replaced whole when it differs.
    if let Some(want) = &desired.nat
        && observed.nat.as_ref() != Some(want)
    {
        match want {
            Nat::Masquerade(m) => ops.push(Op::ReplaceNat(m.clone())),
            // Never planned; deleting is the only way to reach it.
            Nat::Unrecognised(_) => ops.push(Op::DeleteNat),
        }
    }
    if let Some(want) = &desired.nat6
        && observed.nat6.as_ref() != Some(want)
    {
        match want {
            Nat6::Masquerade(m) => ops.push(Op::ReplaceNat6(m.clone())),
            Nat6::Unrecognised(_) => ops.push(Op::DeleteNat6),
        }
    }
    if let Some(want) = &desired.snat
        && observed.snat.as_ref() != Some(want)
    {
        match want {
            Snat::Masquerade(g) => ops.push(Op::ReplaceSnat(g.clone())),
            Snat::Unrecognised(_) => ops.push(Op::DeleteSnat),
        }
    }
    if let Some(want) = &desired.snat6
        && observed.snat6.as_ref() != Some(want)
    {
        match want {
            Snat6::Masquerade(g) => ops.push(Op::ReplaceSnat6(g.clone())),
            Snat6::Unrecognised(_) => ops.push(Op::DeleteSnat6),
        }
    }

    // Removals. A route is keyed by destination, so one that moved was replaced above.
    for (dst, have) in &observed.routes {
        if !desired.routes.contains_key(dst) && !gone.routes(&have.dev) && !gone.later(&have.dev) {
            ops.push(Op::DeleteRoute(have.clone()));
        }
    }
    for (key, have) in &observed.neighbours {
        if !desired.neighbours.contains_key(key) && !gone.neighbours(&key.0) && !gone.later(&key.0)
        {
            ops.push(Op::DeleteNeighbour(have.clone()));
        }
    }
    for (key, have) in &observed.fdb {
        if !desired.fdb.contains_key(key) && !gone.all(&key.0) && !gone.later(&key.0) {
            ops.push(Op::DeleteFdb(have.clone()));
        }
    }
    for have in &observed.fdb_extra {
        if !gone.all(&have.dev) && !gone.later(&have.dev) {
            ops.push(Op::DeleteFdb(have.clone()));
        }
    }
    if desired.nat.is_none() && observed.nat.is_some() {
        ops.push(Op::DeleteNat);
    }
    if desired.nat6.is_none() && observed.nat6.is_some() {
        ops.push(Op::DeleteNat6);
    }
    if desired.snat.is_none() && observed.snat.is_some() {
        ops.push(Op::DeleteSnat);
    }
    if desired.snat6.is_none() && observed.snat6.is_some() {
        ops.push(Op::DeleteSnat6);
    }
    for dev in observed.proxy_arp.difference(&desired.proxy_arp) {
        ops.push(Op::SetProxyArp {
            dev: dev.clone(),
            on: false,
        });
    }
    for (dev, ip) in observed
        .proxy_neighbours
        .difference(&desired.proxy_neighbours)
    {
        ops.push(Op::DeleteProxyNeighbour {
            dev: dev.clone(),
            ip: *ip,
        });
    }
    for dev in observed.proxy_ndp.difference(&desired.proxy_ndp) {
        ops.push(Op::SetProxyNdp {
            dev: dev.clone(),
            on: false,
        });
    }
    ops.extend(late_addresses);
    ops.extend(gone.later.iter().map(|n| Op::DeleteLink(n.clone())));
    ops
}

/// Pods' veths: one marked for a desired bridge but not on it (the bridge was deleted, or is
/// re-created in this pass) is attached again; one on a desired bridge without the mark gets
/// it. Veths on bridges that are not desired are left alone (the pods go with the network).
fn ports(desired: &State, observed: &State, gone: &Gone, ops: &mut Vec<Op>) {
    let bridge = |name: &String| {
        desired
            .links
            .get(name)
            .is_some_and(|l| l.kind == LinkKind::Bridge)
    };
    for port in observed.ports.values() {
        let on = |b: &String| port.master.as_ref() == Some(b) && !gone.all(b);
        // Marked for a bridge, or (not yet marked) on one that is re-created in this pass.
        let home = port
            .belongs_to
            .as_ref()
            .or(port.master.as_ref())
            .filter(|b| bridge(b));
        let Some(home) = home else { continue };
        if !on(home) {
            ops.push(Op::AttachPort {
                port: port.name.clone(),
                bridge: home.clone(),
            });
        }
        if port.belongs_to.as_ref() != Some(home) {
            ops.push(Op::MarkPort {
                port: port.name.clone(),
                bridge: home.clone(),
            });
        }
    }
}

/// What the link operations remove from the observed state as a side effect.
#[derive(Default)]
struct Gone {
    /// Links deleted (and maybe re-created) before anything else: nothing observed on them
    /// remains.
    everything: BTreeSet<String>,
    /// Links set down: their routes and neighbours were flushed.
    routes_and_neighbours: BTreeSet<String>,
    /// Links left without an address for a moment: their routes were flushed.
    routes: BTreeSet<String>,
    /// Links deleted at the very end: what is on them needs no op of its own.
    later: BTreeSet<String>,
}

impl Gone {
    fn all(&self, dev: &str) -> bool {
        self.everything.contains(dev)
    }

    fn neighbours(&self, dev: &str) -> bool {
        self.all(dev) || self.routes_and_neighbours.contains(dev)
    }

    fn routes(&self, dev: &str) -> bool {
        self.neighbours(dev) || self.routes.contains(dev)
    }

    fn later(&self, dev: &str) -> bool {
        self.later.contains(dev)
    }
}

/// The link operations, sorted into their phases.
struct LinkChanges<'a> {
    delete_first: BTreeSet<String>,
    create: Vec<&'a Link>,
    update: Vec<Op>,
    gone: Gone,
}

impl<'a> LinkChanges<'a> {
    fn new(desired: &'a State, observed: &'a State) -> Self {
        let mut delete_first = BTreeSet::new();
        let mut create = Vec::new();
        let mut update = Vec::new();
        let mut set_down = BTreeSet::new();
        for (name, want) in &desired.links {
            match observed.links.get(name) {
                None => create.push(want),
                Some(have) if have.kind != want.kind => {
                    delete_first.insert(name.clone());
                    create.push(want);
                }
                Some(have) => {
                    if have.mtu != want.mtu || have.up != want.up {
                        update.push(Op::UpdateLink {
                            name: name.clone(),
                            mtu: want.mtu,
                            up: want.up,
                        });
                    }
                    if have.up && !want.up {
                        set_down.insert(name.clone());
                    }
                }
            }
        }
        // A VXLAN link under another name that holds the VNI and port of one to be created
        // must go first, or the kernel answers "A VXLAN device with the specified VNI already
        // exists". (Plan derives the name from the VNI, so this takes a renaming release or a
        // hand-made device.)
        for want in &create {
            for have in observed.links.values() {
                let kept =
                    desired.links.contains_key(&have.name) && !delete_first.contains(&have.name);
                if have.name != want.name && !kept && same_vni_and_port(&have.kind, &want.kind) {
                    delete_first.insert(have.name.clone());
                }
            }
        }
        create.sort_by_key(|l| (kind_rank(&l.kind), l.name.as_str()));
        let later = observed
            .links
            .keys()
            .filter(|n| !desired.links.contains_key(*n) && !delete_first.contains(*n))
            .cloned()
            .collect();
        Self {
            gone: Gone {
                everything: delete_first.clone(),
                routes_and_neighbours: set_down,
                routes: BTreeSet::new(),
                later,
            },
            delete_first,
            create,
            update,
        }
    }
}

/// Bridges first: nothing depends on a VXLAN device, while a future pod-facing VXLAN port
/// could depend on the bridge.
fn kind_rank(kind: &LinkKind) -> u8 {
    match kind {
        LinkKind::Bridge => 0,
        LinkKind::Vxlan { .. } => 1,
    }
}

fn same_vni_and_port(a: &LinkKind, b: &LinkKind) -> bool {
    match (a, b) {
        (
            LinkKind::Vxlan {
                vni: va, port: pa, ..
            },
            LinkKind::Vxlan {
                vni: vb, port: pb, ..
            },
        ) => va == vb && pa == pb,
        _ => false,
    }
}

/// Whether the kernel puts `a` and `b` in one subnet (the later one becomes a secondary).
fn same_subnet(a: IpNet, b: IpNet) -> bool {
    a.prefix_len() == b.prefix_len() && a.network() == b.network()
}

/// Pushes the address operations of the creation phase and returns the deletions that wait
/// for the removal phase. Records in `gone` the links whose routes an early deletion flushes.
fn addresses(desired: &State, observed: &State, gone: &mut Gone, ops: &mut Vec<Op>) -> Vec<Op> {
    let mut by_dev: BTreeMap<&str, (BTreeSet<IpNet>, BTreeSet<IpNet>)> = BTreeMap::new();
    for (dev, addr) in desired.addresses.keys() {
        by_dev.entry(dev).or_default().0.insert(*addr);
    }
    for (dev, addr) in observed.addresses.keys() {
        if !gone.all(dev) && !gone.later(dev) {
            by_dev.entry(dev).or_default().1.insert(*addr);
        }
    }
    let mut late = Vec::new();
    for (dev, (want, have)) in by_dev {
        let add: Vec<IpNet> = want.difference(&have).copied().collect();
        let (early, later): (Vec<IpNet>, Vec<IpNet>) = have
            .difference(&want)
            .partition(|old| want.is_empty() || add.iter().any(|new| same_subnet(*new, **old)));
        if !early.is_empty() && early.len() == have.len() {
            gone.routes.insert(dev.to_owned());
        }
        let delete = |addr| Op::DeleteAddress {
            dev: dev.to_owned(),
            addr,
        };
        let add_one = |addr| Op::AddAddress {
            dev: dev.to_owned(),
            addr,
        };
        ops.extend(early.into_iter().map(delete));
        ops.extend(add.into_iter().map(add_one));
        late.extend(later.into_iter().map(delete));
    }
    late
}

/// Builders of small and large states for the tests of this module and of [`crate::fake`].
#[cfg(test)]
pub(crate) mod fixtures {
    use std::net::Ipv4Addr;

    use crate::model::{
        Address, Fdb, Link, LinkKind, Mac, Masquerade, Nat, Neighbour, Route, State,
    };
    use ipnet::Ipv4Net;

    pub const UNDERLAY: &str = "eth0";
    pub const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);

    pub fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    /// Peer `i`'s pod subnet: `10.244.0.0/16` split into /24s, wrapping into the next /16s.
    pub fn peer_cidr(i: u32) -> Ipv4Net {
        let base = u32::from(Ipv4Addr::new(10, 244, 0, 0));
        Ipv4Net::new(Ipv4Addr::from(base + (i << 8)), 24).expect("prefix")
    }

    /// Peer `i`'s node address, outside the underlay prefix 192.168.1.0/24.
    pub fn peer_address(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 168, 10, 0)) + i)
    }

    pub fn peer_mac(i: u32) -> Mac {
        let [_, _, hi, lo] = i.to_be_bytes();
        Mac([0x0e, 0xaa, 0, 0, hi, lo])
    }

    pub fn bridge(mtu: u32) -> Link {
        Link {
            name: "cw-br0".into(),
            kind: LinkKind::Bridge,
            mtu,
            up: true,
        }
    }

    pub fn vxlan(vni: u32, port: u16, mtu: u32) -> Link {
        Link {
            name: format!("cw-vx{vni}"),
            kind: LinkKind::Vxlan {
                vni,
                port,
                local: LOCAL.into(),
                underlay: UNDERLAY.into(),
                mac: Mac([0x0e, 0xbb, 0, 0, 0, 1]),
            },
            mtu,
            up: true,
        }
    }

    pub fn tunnel_route(dev: &str, i: u32) -> Route {
        let cidr = peer_cidr(i);
        Route {
            dst: cidr.into(),
            gateway: Some(cidr.network().into()),
            dev: dev.into(),
            onlink: true,
        }
    }

    pub fn direct_route(i: u32) -> Route {
        Route {
            dst: peer_cidr(i).into(),
            gateway: Some(peer_address(i).into()),
            dev: UNDERLAY.into(),
            onlink: false,
        }
    }

    pub fn neighbour(dev: &str, i: u32) -> Neighbour {
        Neighbour {
            dev: dev.into(),
            ip: peer_cidr(i).network().into(),
            mac: peer_mac(i),
        }
    }

    pub fn fdb(dev: &str, i: u32) -> Fdb {
        Fdb {
            dev: dev.into(),
            mac: peer_mac(i),
            dst: peer_address(i).into(),
        }
    }

    /// A small state builder: `Node::new(1).peers(2..5).build()`.
    #[derive(Clone)]
    pub struct Node(pub State);

    impl Node {
        /// Bridge (10.244.1.1/24) and VXLAN device `cw-vx<vni>` (10.244.1.0/32), MTU 1450.
        pub fn new(vni: u32) -> Self {
            Self(State::default())
                .link(bridge(1450))
                .link(vxlan(vni, 8472, 1450))
                .address("cw-br0", "10.244.1.1/24")
                .address(&format!("cw-vx{vni}"), "10.244.1.0/32")
        }

        /// A link; a VXLAN link with the loose reverse-path filtering the plan gives it.
        pub fn link(mut self, link: Link) -> Self {
            if matches!(link.kind, LinkKind::Vxlan { .. }) {
                self.0.loose_rp_filter.insert(link.name.clone());
            }
            self.0.links.insert(link.name.clone(), link);
            self
        }

        pub fn address(mut self, dev: &str, addr: &str) -> Self {
            let addr = net(addr).into();
            self.0
                .addresses
                .insert((dev.to_owned(), addr), Address { addr });
            self
        }

        pub fn without_address(mut self, dev: &str, addr: &str) -> Self {
            self.0.addresses.remove(&(dev.to_owned(), net(addr).into()));
            self
        }

        /// Tunnelled peers through the (only) VXLAN link: route, neighbour and FDB entry each.
        pub fn peers(self, range: impl IntoIterator<Item = u32>) -> Self {
            let dev = self.vxlan_name();
            range.into_iter().fold(self, |node, i| {
                node.route(tunnel_route(&dev, i))
                    .neighbour(neighbour(&dev, i))
                    .fdb(fdb(&dev, i))
            })
        }

        pub fn route(mut self, route: Route) -> Self {
            self.0.routes.insert(route.dst, route);
            self
        }

        pub fn neighbour(mut self, n: Neighbour) -> Self {
            self.0.neighbours.insert((n.dev.clone(), n.ip), n);
            self
        }

        pub fn fdb(mut self, e: Fdb) -> Self {
            self.0.fdb.insert((e.dev.clone(), e.mac), e);
            self
        }

        /// Masquerade from this node's subnet, exempting `exempt`.
        pub fn nat(mut self, exempt: &[&str]) -> Self {
            let source = self
                .0
                .addresses
                .keys()
                .filter(|(dev, _)| dev == "cw-br0")
                .find_map(|(_, a)| match a {
                    ipnet::IpNet::V4(a) => Some(a.trunc()),
                    ipnet::IpNet::V6(_) => None,
                })
                .unwrap_or_else(|| net("10.244.1.0/24"));
            self.0.nat = Some(Nat::Masquerade(Masquerade {
                source,
                exempt: exempt.iter().map(|e| net(e)).collect(),
            }));
            self
        }

        pub fn vxlan_name(&self) -> String {
            self.0
                .links
                .values()
                .find(|l| matches!(l.kind, LinkKind::Vxlan { .. }))
                .map(|l| l.name.clone())
                .unwrap_or_default()
        }

        pub fn build(self) -> State {
            self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::model::{Fdb, Link, Masquerade, Route};

    fn create(link: Link) -> Op {
        Op::CreateLink(link)
    }

    fn add_address(dev: &str, addr: &str) -> Op {
        Op::AddAddress {
            dev: dev.into(),
            addr: net(addr).into(),
        }
    }

    fn delete_address(dev: &str, addr: &str) -> Op {
        Op::DeleteAddress {
            dev: dev.into(),
            addr: net(addr).into(),
        }
    }

    fn peer_ops(dev: &str, i: u32) -> [Op; 3] {
        [
            Op::ReplaceFdb(fdb(dev, i)),
            Op::ReplaceNeighbour(neighbour(dev, i)),
            Op::ReplaceRoute(tunnel_route(dev, i)),
        ]
    }

    fn assert_ops(name: &str, got: &[Op], want: &[Op]) {
        let text = |ops: &[Op]| ops.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(text(got), text(want), "{name}");
        assert_eq!(got, want, "{name}");
    }

    #[test]
    fn ipv6_entries_are_added_and_removed_beside_the_ipv4_ones_without_touching_them() {
        let v4 = Node::new(1).peers(2..3).build();
        let mut dual = v4.clone();
        let v6 = |s: &str| -> ipnet::IpNet { s.parse().expect("IPv6 CIDR") };
        for (dev, addr) in [
            ("cw-br0", "fd00:10:244:1::1/64"),
            ("cw-vx1", "fd00:10:244:1::/128"),
        ] {
            let addr = v6(addr);
            dual.addresses
                .insert((dev.to_owned(), addr), crate::model::Address { addr });
        }
        let gateway: std::net::IpAddr = "fd00:10:244:2::".parse().expect("ip");
        let neighbour6 = crate::model::Neighbour {
            ip: gateway,
            ..neighbour("cw-vx1", 2)
        };
        let route6 = Route {
            dst: v6("fd00:10:244:2::/64"),
            gateway: Some(gateway),
            ..tunnel_route("cw-vx1", 2)
        };
        dual.neighbours
            .insert(("cw-vx1".into(), gateway), neighbour6.clone());
        dual.routes.insert(route6.dst, route6.clone());
        let add = |dev: &str, addr: &str| Op::AddAddress {
            dev: dev.into(),
            addr: v6(addr),
        };
        assert_eq!(
            diff(&dual, &v4),
            vec![
                add("cw-br0", "fd00:10:244:1::1/64"),
                add("cw-vx1", "fd00:10:244:1::/128"),
                Op::ReplaceNeighbour(neighbour6.clone()),
                Op::ReplaceRoute(route6.clone()),
            ]
        );
        let delete = |dev: &str, addr: &str| Op::DeleteAddress {
            dev: dev.into(),
            addr: v6(addr),
        };
        assert_eq!(
            diff(&v4, &dual),
            vec![
                Op::DeleteRoute(route6),
                Op::DeleteNeighbour(neighbour6),
                delete("cw-br0", "fd00:10:244:1::1/64"),
                delete("cw-vx1", "fd00:10:244:1::/128"),
            ],
            "the IPv4 addresses stay, so nothing else is re-added"
        );
        assert!(diff(&dual, &dual).is_empty());
    }

    #[test]
    fn the_ipv6_gateway_snat_table_is_replaced_and_deleted_on_its_own() {
        let base = Node::new(1).peers(2..3).build();
        let snat = crate::model::GatewaySnat {
            clients: vec![net("192.168.77.0/24")],
            pods: net("10.244.0.0/16"),
        };
        let v6 = |s: &str| -> ipnet::Ipv6Net { s.parse().expect("IPv6 CIDR") };
        let snat6 = crate::model::GatewaySnat6 {
            clients: vec![v6("fd00:77::/64")],
            pods: v6("fd00:10:244::/56"),
        };
        let with = |s4: Option<Snat>, s6: Option<Snat6>| State {
            snat: s4,
            snat6: s6,
            ..base.clone()
        };
        let both = with(
            Some(Snat::Masquerade(snat.clone())),
            Some(Snat6::Masquerade(snat6.clone())),
        );
        let only4 = with(Some(Snat::Masquerade(snat.clone())), None);
        let wider = crate::model::GatewaySnat6 {
            clients: vec![v6("fd00:77::/64"), v6("fd00:78::/64")],
            ..snat6.clone()
        };
        for (name, desired, observed, want) in [
            (
                "IPv6 clients added: only the ip6 table is written",
                &both,
                &only4,
                vec![Op::ReplaceSnat6(snat6.clone())],
            ),
            (
                "IPv6 clients gone: only the ip6 table is deleted",
                &only4,
                &both,
                vec![Op::DeleteSnat6],
            ),
            (
                "a client range added: the ip6 table is replaced whole",
                &with(
                    Some(Snat::Masquerade(snat.clone())),
                    Some(Snat6::Masquerade(wider.clone())),
                ),
                &both,
                vec![Op::ReplaceSnat6(wider.clone())],
            ),
            (
                "changed by someone else: replaced",
                &both,
                &with(
                    Some(Snat::Masquerade(snat.clone())),
                    Some(Snat6::Unrecognised("a rule was added".into())),
                ),
                vec![Op::ReplaceSnat6(snat6.clone())],
            ),
            (
                "unrecognised and not desired: deleted",
                &only4,
                &with(
                    Some(Snat::Masquerade(snat.clone())),
                    Some(Snat6::Unrecognised("a rule was added".into())),
                ),
                vec![Op::DeleteSnat6],
            ),
            (
                "the IPv4 table goes, the ip6 one stays",
                &with(None, Some(Snat6::Masquerade(snat6.clone()))),
                &both,
                vec![Op::DeleteSnat],
            ),
            ("same tables: nothing", &both, &both, vec![]),
        ] {
            assert_ops(name, &diff(desired, observed), &want);
        }
    }

    #[test]
    fn diff_orders_creations_before_removals_and_skips_what_link_deletion_removes() {
        let base = || Node::new(1);
        let mut port_changed = vxlan(1, 4789, 1450);
        port_changed.name = "cw-vx1".into();
        let mut down = vxlan(1, 8472, 1450);
        down.up = false;
        let mut legacy = vxlan(1, 8472, 1450);
        legacy.name = "cw-legacy".into();

        let cases: Vec<(&str, State, State, Vec<Op>)> = vec![
            (
                "same state: nothing to do",
                base().peers(2..4).build(),
                base().peers(2..4).build(),
                vec![],
            ),
            (
                "from nothing: links (bridge first), loose rp_filter, addresses, then fdb, neighbour, route",
                base().peers(2..3).build(),
                State::default(),
                vec![
                    create(bridge(1450)),
                    create(vxlan(1, 8472, 1450)),
                    Op::SetLooseRpFilter("cw-vx1".into()),
                    add_address("cw-br0", "10.244.1.1/24"),
                    add_address("cw-vx1", "10.244.1.0/32"),
                    Op::ReplaceFdb(fdb("cw-vx1", 2)),
                    Op::ReplaceNeighbour(neighbour("cw-vx1", 2)),
                    Op::ReplaceRoute(tunnel_route("cw-vx1", 2)),
                ],
            ),
            (
                "to nothing: links deleted, only routes on the underlay need their own op",
                State::default(),
                base().peers(2..4).route(direct_route(9)).build(),
                vec![
                    Op::DeleteRoute(direct_route(9)),
                    Op::DeleteLink("cw-br0".into()),
                    Op::DeleteLink("cw-vx1".into()),
                ],
            ),
            (
                "NAT added: one op, after the peers",
                base().peers(2..3).nat(&["10.244.0.0/16"]).build(),
                base().peers(2..3).build(),
                vec![Op::ReplaceNat(Masquerade {
                    source: net("10.244.1.0/24"),
                    exempt: vec![net("10.244.0.0/16")],
                })],
            ),
            (
                "NAT exclusion changed: the table is replaced",
                base().nat(&["10.244.0.0/16", "192.168.0.0/16"]).build(),
                base().nat(&["10.244.0.0/16"]).build(),
                vec![Op::ReplaceNat(Masquerade {
                    source: net("10.244.1.0/24"),
                    exempt: vec![net("10.244.0.0/16"), net("192.168.0.0/16")],
                })],
            ),
            (
                "NAT table changed by someone else: replaced",
                base().nat(&["10.244.0.0/16"]).build(),
                State {
                    nat: Some(Nat::Unrecognised("a rule was added".into())),
                    ..base().build()
                },
                vec![Op::ReplaceNat(Masquerade {
                    source: net("10.244.1.0/24"),
                    exempt: vec![net("10.244.0.0/16")],
                })],
            ),
            (
                "natOutgoing turned off: the table is deleted",
                base().peers(2..3).build(),
                base().peers(2..3).nat(&["10.244.0.0/16"]).build(),
                vec![Op::DeleteNat],
            ),
            (
                "MTU and state changes update links in place",
                Node(State::default())
                    .link(bridge(1400))
                    .link(vxlan(1, 8472, 1400))
                    .build(),
                Node(State::default())
                    .link(Link {
                        up: false,
                        ..bridge(1450)
                    })
                    .link(vxlan(1, 8472, 1450))
                    .build(),
                vec![
                    Op::UpdateLink {
                        name: "cw-br0".into(),
                        mtu: 1400,
                        up: true,
                    },
                    Op::UpdateLink {
                        name: "cw-vx1".into(),
                        mtu: 1400,
                        up: true,
                    },
                ],
            ),
            (
                "a changed port re-creates the device and re-adds everything on it, deleting nothing",
                base().link(port_changed.clone()).peers(2..4).build(),
                base().peers(2..4).build(),
                [
                    vec![
                        Op::DeleteLink("cw-vx1".into()),
                        create(port_changed),
                        Op::SetLooseRpFilter("cw-vx1".into()),
                        add_address("cw-vx1", "10.244.1.0/32"),
                    ],
                    vec![
                        Op::ReplaceFdb(fdb("cw-vx1", 2)),
                        Op::ReplaceFdb(fdb("cw-vx1", 3)),
                        Op::ReplaceNeighbour(neighbour("cw-vx1", 2)),
                        Op::ReplaceNeighbour(neighbour("cw-vx1", 3)),
                        Op::ReplaceRoute(tunnel_route("cw-vx1", 2)),
                        Op::ReplaceRoute(tunnel_route("cw-vx1", 3)),
                    ],
                ]
                .concat(),
            ),
            (
                "a new VNI is a new device: routes move to it before the old one is deleted",
                Node::new(2).peers(2..3).build(),
                Node::new(1).peers(2..3).build(),
                [
                    vec![
                        create(vxlan(2, 8472, 1450)),
                        Op::SetLooseRpFilter("cw-vx2".into()),
                        add_address("cw-vx2", "10.244.1.0/32"),
                    ],
                    peer_ops("cw-vx2", 2).to_vec(),
                    vec![Op::DeleteLink("cw-vx1".into())],
                ]
                .concat(),
            ),
            (
                "a device holding the needed VNI and port under another name goes first",
                base().peers(2..3).build(),
                Node(State::default())
                    .link(bridge(1450))
                    .link(legacy)
                    .address("cw-br0", "10.244.1.1/24")
                    .peers(2..3)
                    .build(),
                [
                    vec![
                        Op::DeleteLink("cw-legacy".into()),
                        create(vxlan(1, 8472, 1450)),
                        Op::SetLooseRpFilter("cw-vx1".into()),
                        add_address("cw-vx1", "10.244.1.0/32"),
                    ],
                    peer_ops("cw-vx1", 2).to_vec(),
                ]
                .concat(),
            ),
            (
                "a peer moving to a direct route (crossSubnet) replaces its route and drops its VTEP entries",
                base().peers(2..3).route(direct_route(3)).build(),
                base().peers(2..4).build(),
                vec![
                    Op::ReplaceRoute(direct_route(3)),
                    Op::DeleteNeighbour(neighbour("cw-vx1", 3)),
                    Op::DeleteFdb(fdb("cw-vx1", 3)),
                ],
            ),
            (
                "an address in the subnet of an unwanted one waits for its deletion (no secondary)",
                base().build(),
                Node::new(1)
                    .without_address("cw-br0", "10.244.1.1/24")
                    .address("cw-br0", "10.244.1.5/24")
                    .build(),
                vec![
                    delete_address("cw-br0", "10.244.1.5/24"),
                    add_address("cw-br0", "10.244.1.1/24"),
                ],
            ),
            (
                "a changed VXLAN address is added before the old one goes, so routes survive",
                Node::new(1)
                    .without_address("cw-vx1", "10.244.1.0/32")
                    .address("cw-vx1", "10.244.9.0/32")
                    .build(),
                base().build(),
                vec![
                    add_address("cw-vx1", "10.244.9.0/32"),
                    delete_address("cw-vx1", "10.244.1.0/32"),
                ],
            ),
            (
                "a link losing its last address loses its routes too, so they are added again",
                Node::new(1)
                    .peers(2..3)
                    .without_address("cw-vx1", "10.244.1.0/32")
                    .build(),
                base().peers(2..3).build(),
                vec![
                    delete_address("cw-vx1", "10.244.1.0/32"),
                    Op::ReplaceRoute(tunnel_route("cw-vx1", 2)),
                ],
            ),
            (
                "setting a link down flushes its routes and neighbours: no deletes, neighbours re-added",
                Node(State::default())
                    .link(down.clone())
                    .neighbour(neighbour("cw-vx1", 2))
                    .fdb(fdb("cw-vx1", 2))
                    .build(),
                Node(State::default())
                    .link(vxlan(1, 8472, 1450))
                    .peers(2..3)
                    .build(),
                vec![
                    Op::UpdateLink {
                        name: "cw-vx1".into(),
                        mtu: 1450,
                        up: false,
                    },
                    Op::ReplaceNeighbour(neighbour("cw-vx1", 2)),
                ],
            ),
            (
                "entries that differ are replaced, unknown ones deleted in reverse order",
                base()
                    .peers(2..3)
                    .route(Route {
                        onlink: false,
                        ..tunnel_route("cw-vx1", 2)
                    })
                    .build(),
                base()
                    .peers(2..3)
                    .neighbour(neighbour("cw-vx1", 7))
                    .fdb(fdb("cw-vx1", 7))
                    .route(direct_route(8))
                    .address("cw-br0", "10.250.0.1/24")
                    .build(),
                vec![
                    Op::ReplaceRoute(Route {
                        onlink: false,
                        ..tunnel_route("cw-vx1", 2)
                    }),
                    Op::DeleteRoute(direct_route(8)),
                    Op::DeleteNeighbour(neighbour("cw-vx1", 7)),
                    Op::DeleteFdb(fdb("cw-vx1", 7)),
                    delete_address("cw-br0", "10.250.0.1/24"),
                ],
            ),
        ];
        for (name, desired, observed, want) in cases {
            assert_ops(name, &diff(&desired, &observed), &want);
        }
    }

    #[test]
    fn pod_veths_are_marked_on_the_bridge_and_reattached_when_it_comes_back() {
        use crate::model::Port;
        let port = |name: &str, master: Option<&str>, belongs_to: Option<&str>| Port {
            name: name.into(),
            master: master.map(Into::into),
            belongs_to: belongs_to.map(Into::into),
        };
        let desired = Node::new(1).build();
        let with = |ports: &[Port]| {
            let mut s = Node::new(1).build();
            s.ports = ports.iter().map(|p| (p.name.clone(), p.clone())).collect();
            s
        };
        let mark = |p: &str| Op::MarkPort {
            port: p.into(),
            bridge: "cw-br0".into(),
        };
        let attach = |p: &str| Op::AttachPort {
            port: p.into(),
            bridge: "cw-br0".into(),
        };
        let cases: Vec<(&str, State, Vec<Op>)> = vec![
            (
                "a new pod's veth is marked",
                with(&[port("veth1", Some("cw-br0"), None)]),
                vec![mark("veth1")],
            ),
            (
                "a marked veth on its bridge needs nothing",
                with(&[port("veth1", Some("cw-br0"), Some("cw-br0"))]),
                vec![],
            ),
            (
                "a marked veth off its bridge is attached again",
                with(&[port("veth1", None, Some("cw-br0"))]),
                vec![attach("veth1")],
            ),
            (
                "a veth marked for a bridge that is not desired is left alone",
                with(&[port("veth1", None, Some("cw-br9"))]),
                vec![],
            ),
        ];
        for (name, observed, want) in cases {
            assert_ops(name, &diff(&desired, &observed), &want);
        }

        // The bridge is re-created in this pass (its kind attributes cannot change, but its
        // deletion by hand shows up as missing): its veths come back after it.
        let mut gone = with(&[
            port("veth1", None, Some("cw-br0")),
            port("veth2", None, Some("cw-br0")),
        ]);
        gone.links.remove("cw-br0");
        gone.addresses.retain(|(dev, _), _| dev != "cw-br0");
        let ops = diff(&desired, &gone);
        let created = ops
            .iter()
            .position(|o| matches!(o, Op::CreateLink(l) if l.name == "cw-br0"))
            .expect("the bridge is created");
        let attached: Vec<usize> = ops
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Op::AttachPort { .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(attached.len(), 2, "{ops:?}");
        assert!(attached.iter().all(|i| *i > created), "{ops:?}");

        // Applied to the kernel-faithful fake, the diff converges.
        let mut dp = crate::fake::FakeDataplane::new(gone).with_foreign_link("eth0", 1500);
        for op in &ops {
            dp.kernel(op).expect("applies");
        }
        assert_eq!(diff(&desired, &dp.state), vec![]);
    }

    #[test]
    fn one_peer_changing_among_a_thousand_costs_a_handful_of_ops() {
        let peers = 2..1002;
        let observed = Node::new(1).peers(peers.clone()).build();
        let moved = |i: u32| Fdb {
            dst: "192.168.200.1".parse().expect("test address"),
            ..fdb("cw-vx1", i)
        };
        let mut new_mac = neighbour("cw-vx1", 600);
        new_mac.mac = peer_mac(5000);
        let mut new_mac_fdb = fdb("cw-vx1", 600);
        new_mac_fdb.mac = peer_mac(5000);

        let cases: Vec<(&str, State, Vec<Op>)> = vec![
            (
                "a peer joins",
                Node::new(1).peers(2..1003).build(),
                peer_ops("cw-vx1", 1002).to_vec(),
            ),
            (
                "a peer leaves",
                Node::new(1).peers((2..1002).filter(|i| *i != 500)).build(),
                vec![
                    Op::DeleteRoute(tunnel_route("cw-vx1", 500)),
                    Op::DeleteNeighbour(neighbour("cw-vx1", 500)),
                    Op::DeleteFdb(fdb("cw-vx1", 500)),
                ],
            ),
            (
                "a peer's node address changes",
                Node::new(1).peers(peers.clone()).fdb(moved(42)).build(),
                vec![Op::ReplaceFdb(moved(42))],
            ),
            (
                "a peer's VTEP MAC changes",
                Node::new(1)
                    .peers((2..1002).filter(|i| *i != 600))
                    .route(tunnel_route("cw-vx1", 600))
                    .neighbour(new_mac.clone())
                    .fdb(new_mac_fdb.clone())
                    .build(),
                vec![
                    Op::ReplaceFdb(new_mac_fdb),
                    Op::ReplaceNeighbour(new_mac),
                    Op::DeleteFdb(fdb("cw-vx1", 600)),
                ],
            ),
        ];
        for (name, desired, want) in cases {
            assert_ops(name, &diff(&desired, &observed), &want);
        }
        assert_eq!(diff(&observed, &observed), vec![]);
    }

    #[test]
    fn ipv6_goes_on_before_a_links_ipv6_address_and_again_when_the_link_is_new_or_lost_it() {
        let mut desired = State::default();
        desired.links.insert("cw-br0".into(), bridge(1500));
        let v6: ipnet::IpNet = "fd00:10:244:1::1/64".parse().expect("net");
        crate::plan::add_address(&mut desired, "cw-br0", v6);
        let enable = Op::EnableIpv6("cw-br0".into());
        let add = Op::AddAddress {
            dev: "cw-br0".into(),
            addr: v6,
        };
        assert_eq!(
            diff(&desired, &State::default()),
            vec![create(bridge(1500)), enable.clone(), add.clone()]
        );
        assert_eq!(diff(&desired, &desired), vec![]);
        // IPv6 turned off on the link behind the agent's back: the kernel dropped its IPv6
        // addresses with it.
        let mut off = desired.clone();
        off.ipv6_on.clear();
        off.addresses.retain(|_, a| a.addr.addr().is_ipv4());
        assert_eq!(diff(&desired, &off), vec![enable, add]);
    }
}
