//! An in-memory [`Dataplane`] that answers like the Linux kernel, for unit tests of
//! [`crate::diff`] and of the apply loop without root or a network namespace.
//!
//! It keeps a [`State`] and applies each [`Op`] with the kernel's rules (each verified with
//! `ip`/`bridge` in a network namespace on kernel 6.x), or refuses it with the kernel's error,
//! leaving the state untouched:
//! - creating a link whose name exists → EEXIST; a second VXLAN device with the same VNI and
//!   port → EEXIST; a VXLAN device on a missing underlay → ENODEV; a VXLAN MTU above the
//!   underlay's MTU − 50 → EINVAL;
//! - deleting a link removes its addresses, neighbours, FDB entries and the routes through it;
//!   a bridge's ports (pods' veths, [`State::ports`]) stay, detached, with their alias;
//! - setting a link down flushes the routes through it and its neighbours (FDB entries stay);
//! - deleting the last address of a link flushes the routes through it;
//! - an address, neighbour, FDB entry or route on a missing link → ENODEV; a route through a
//!   link that is down → ENETDOWN;
//! - `Replace*` upserts; deleting what is not there → the kernel's "not found" error;
//! - proxy NDP and proxy neighbour entries sit on any existing link (the underlay), and go
//!   with a deleted link;
//! - a route to a destination a foreign route holds ([`FakeDataplane::foreign_routes`]) is
//!   refused, as [`crate::netlink`] refuses to take one over.
//!
//! Not modelled: secondary addresses (deleting a primary also deletes the addresses of its
//! subnet added after it), gateway reachability of routes without `onlink`.
//!
//! Links the agent does not own (the underlay) live in [`FakeDataplane::foreign_links`]:
//! routes may go through them and VXLAN devices may sit on them, but any other operation on a
//! link without the [`DEVICE_PREFIX`] is refused, so a test fails loudly if the agent ever
//! tries to change something it does not own.

use std::collections::BTreeMap;

use crate::model::{
    ApplyError, DEVICE_PREFIX, Dataplane, ForeignRoutes, Link, LinkKind, MAX_LINK_NAME, Nat,
    Neighbour, Op, Route, State, Underlay,
};

/// Bytes VXLAN over IPv4 adds: the kernel refuses a VXLAN MTU above underlay MTU minus this.
const VXLAN_OVERHEAD: u32 = causeway_crds::mtu::VXLAN_OVERHEAD;

/// An in-memory dataplane with kernel-like semantics (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct FakeDataplane {
    /// Everything the agent owns: what [`Dataplane::observe`] returns.
    pub state: State,
    /// Links that exist but are not the agent's (the underlay), by name, with their MTU.
    pub foreign_links: BTreeMap<String, u32>,
    /// Destinations of routes that are not the agent's (another protocol, metric 0): a route
    /// of the agent's to one of them is refused, as the real dataplane refuses to take one over.
    pub foreign_routes: std::collections::BTreeSet<ipnet::Ipv4Net>,
    /// Next hops of the foreign routes (the node's default gateway, say).
    pub foreign_next_hops: std::collections::BTreeSet<std::net::Ipv4Addr>,
    /// The node's addresses and the links holding them ([`Dataplane::underlay_for`]).
    pub underlays: BTreeMap<std::net::IpAddr, Underlay>,
    /// The node's IPv6 addresses on foreign links, with the link and the on-link prefix
    /// (the secondary prefix of [`Dataplane::underlay_for`]).
    pub addresses6: BTreeMap<std::net::Ipv6Addr, (String, ipnet::Ipv6Net)>,
    /// Next hops of the foreign IPv6 routes.
    pub foreign_next_hops6: std::collections::BTreeSet<std::net::Ipv6Addr>,
    /// IPv4 forwarding was turned on.
    pub forwarding: bool,
    /// IPv6 forwarding was turned on.
    pub forwarding6: bool,
    /// Fails the first op whose `Display` contains `.0`, with message `.1` (a simulated kernel
    /// error), before changing anything.
    pub fail_on: Option<(String, String)>,
    /// The ops applied successfully, in order.
    pub applied: Vec<Op>,
}

impl FakeDataplane {
    /// A dataplane holding `state`, with no foreign links.
    #[must_use]
    pub fn new(state: State) -> Self {
        Self {
            state,
            ..Self::default()
        }
    }

    /// Adds a link the agent does not own (an underlay such as `eth0`).
    #[must_use]
    pub fn with_foreign_link(mut self, name: &str, mtu: u32) -> Self {
        self.foreign_links.insert(name.to_owned(), mtu);
        self
    }

    /// Puts `address` on the foreign link `underlay.name` (added with its MTU), on-link in
    /// `underlay.prefix`.
    #[must_use]
    pub fn with_underlay(
        mut self,
        address: impl Into<std::net::IpAddr>,
        underlay: Underlay,
    ) -> Self {
        self.foreign_links
            .insert(underlay.name.clone(), underlay.mtu);
        // The connected route of the prefix is the kernel's, not the agent's.
        if let Some(prefix) = underlay.prefix4() {
            self.foreign_routes.insert(prefix);
        }
        self.underlays.insert(address.into(), underlay);
        self
    }

    /// Puts IPv6 `address` on the foreign link `link` (which must exist), on-link in `prefix`.
    #[must_use]
    pub fn with_address6(
        mut self,
        link: &str,
        address: std::net::Ipv6Addr,
        prefix: ipnet::Ipv6Net,
    ) -> Self {
        self.addresses6.insert(address, (link.to_owned(), prefix));
        self
    }

    /// Applies `op` to the state, or says why the kernel would refuse it (state unchanged).
    pub(crate) fn kernel(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::CreateLink(link) => self.create_link(link),
            Op::DeleteLink(name) => {
                self.own_link(name)?;
                self.state.links.remove(name);
                self.state.addresses.retain(|(dev, _), _| dev != name);
                self.state.neighbours.retain(|(dev, _), _| dev != name);
                self.state.fdb.retain(|(dev, _), _| dev != name);
                self.state.fdb_extra.retain(|e| e.dev != *name);
                // The device's sysctls go with it.
                self.state.loose_rp_filter.remove(name);
                self.state.ipv6_on.remove(name);
                self.state.proxy_arp.remove(name);
                self.state.proxy_ndp.remove(name);
                self.state.proxy_neighbours.retain(|(dev, _)| dev != name);
                self.flush_routes(name);
                // Its ports stay, detached (their alias stays too).
                for port in self.state.ports.values_mut() {
                    if port.master.as_ref() == Some(name) {
                        port.master = None;
                    }
                }
                Ok(())
            }
            Op::UpdateLink { name, mtu, up } => {
                let link = self.own_link(name)?;
                self.check_vxlan_mtu(&link.kind, *mtu)?;
                let was_up = link.up;
                if let Some(link) = self.state.links.get_mut(name) {
                    link.mtu = *mtu;
                    link.up = *up;
                }
                if was_up && !up {
                    self.flush_routes(name);
                    self.state.neighbours.retain(|(dev, _), _| dev != name);
                }
                Ok(())
            }
            Op::AddAddress { dev, addr } => {
                self.own_link(dev)?;
                let key = (dev.clone(), *addr);
                if self.state.addresses.contains_key(&key) {
                    return Err(EEXIST.into());
                }
                self.state
                    .addresses
                    .insert(key, crate::model::Address { addr: *addr });
                Ok(())
            }
            Op::DeleteAddress { dev, addr } => {
                self.own_link(dev)?;
                if self.state.addresses.remove(&(dev.clone(), *addr)).is_none() {
                    return Err("Address not found (EADDRNOTAVAIL)".into());
                }
                if !self.state.addresses.keys().any(|(d, _)| d == dev) {
                    self.flush_routes(dev);
                }
                Ok(())
            }
            Op::ReplaceRoute(route) => {
                if matches!(route.dst, ipnet::IpNet::V4(dst) if self.foreign_routes.contains(&dst))
                {
                    return Err(format!(
                        "a route to {} that Causeway does not own is in the way",
                        route.dst
                    ));
                }
                self.route_device_up(route)?;
                self.state.routes.insert(route.dst, route.clone());
                Ok(())
            }
            Op::DeleteRoute(route) => {
                if self.state.routes.get(&route.dst) != Some(route) {
                    return Err("No such process (ESRCH)".into());
                }
                self.state.routes.remove(&route.dst);
                Ok(())
            }
            Op::ReplaceNeighbour(n) => {
                self.own_link(&n.dev)?;
                self.state
                    .neighbours
                    .insert((n.dev.clone(), n.ip), n.clone());
                Ok(())
            }
            Op::DeleteNeighbour(Neighbour { dev, ip, .. }) => {
                self.own_link(dev)?;
                self.state
                    .neighbours
                    .remove(&(dev.clone(), *ip))
                    .map(drop)
                    .ok_or_else(|| ENOENT.into())
            }
            Op::ReplaceFdb(entry) => {
                let link = self.own_link(&entry.dev)?;
                if !matches!(link.kind, LinkKind::Vxlan { .. }) {
                    return Err(format!(
                        "Operation not supported (EOPNOTSUPP): {} is not a VXLAN device",
                        entry.dev
                    ));
                }
                self.state
                    .fdb
                    .insert((entry.dev.clone(), entry.mac), entry.clone());
                Ok(())
            }
            Op::DeleteFdb(entry) => {
                self.own_link(&entry.dev)?;
                // One remote at a time, as the kernel deletes them.
                if let Some(i) = self.state.fdb_extra.iter().position(|e| e == entry) {
                    self.state.fdb_extra.remove(i);
                    return Ok(());
                }
                self.state
                    .fdb
                    .remove(&(entry.dev.clone(), entry.mac))
                    .map(drop)
                    .ok_or_else(|| ENOENT.into())
            }
            Op::ReplaceNat(m) => {
                self.state.nat = Some(Nat::Masquerade(m.clone()));
                Ok(())
            }
            Op::ReplaceNat6(m) => {
                self.state.nat6 = Some(crate::model::Nat6::Masquerade(m.clone()));
                Ok(())
            }
            Op::DeleteNat6 => {
                self.state.nat6.take().map(drop).ok_or_else(|| {
                    "Error: Could not process rule: No such file or directory".into()
                })
            }
            Op::MarkPort { port, bridge } => {
                let p = self
                    .state
                    .ports
                    .get_mut(port)
                    .ok_or_else(|| format!("No such device: no link named {port}"))?;
                p.belongs_to = Some(bridge.clone());
                Ok(())
            }
            Op::AttachPort { port, bridge } => {
                if !self
                    .state
                    .links
                    .get(bridge)
                    .is_some_and(|l| l.kind == LinkKind::Bridge)
                {
                    return Err(format!("No such device: no bridge named {bridge}"));
                }
                let p = self
                    .state
                    .ports
                    .get_mut(port)
                    .ok_or_else(|| format!("No such device: no link named {port}"))?;
                p.master = Some(bridge.clone());
                Ok(())
            }
            Op::SetLooseRpFilter(dev) => {
                if !self.state.links.contains_key(dev) {
                    return Err(format!("No such file or directory: no link named {dev}"));
                }
                self.state.loose_rp_filter.insert(dev.clone());
                Ok(())
            }
            Op::EnableIpv6(dev) => {
                if !self.state.links.contains_key(dev) {
                    return Err(format!("No such file or directory: no link named {dev}"));
                }
                self.state.ipv6_on.insert(dev.clone());
                Ok(())
            }
            Op::SetProxyArp { dev, on } => {
                if !self.foreign_links.contains_key(dev) && !self.state.links.contains_key(dev) {
                    return Err(format!("No such file or directory: no link named {dev}"));
                }
                if *on {
                    self.state.proxy_arp.insert(dev.clone());
                } else {
                    self.state.proxy_arp.remove(dev);
                }
                Ok(())
            }
            Op::SetProxyNdp { dev, on } => {
                self.any_link(dev)?;
                if *on {
                    self.state.proxy_ndp.insert(dev.clone());
                } else {
                    self.state.proxy_ndp.remove(dev);
                }
                Ok(())
            }
            Op::AddProxyNeighbour { dev, ip } => {
                self.any_link(dev)?;
                // `ip -6 neigh replace proxy`: an upsert.
                self.state.proxy_neighbours.insert((dev.clone(), *ip));
                Ok(())
            }
            Op::DeleteProxyNeighbour { dev, ip } => {
                self.any_link(dev)?;
                if self.state.proxy_neighbours.remove(&(dev.clone(), *ip)) {
                    Ok(())
                } else {
                    Err(ENOENT.into())
                }
            }
            Op::DeleteNat => {
                self.state.nat.take().map(drop).ok_or_else(|| {
                    "Error: Could not process rule: No such file or directory".into()
                })
            }
            Op::ReplaceSnat(g) => {
                self.state.snat = Some(crate::model::Snat::Masquerade(g.clone()));
                Ok(())
            }
            Op::DeleteSnat => {
                self.state.snat.take().map(drop).ok_or_else(|| {
                    "Error: Could not process rule: No such file or directory".into()
                })
            }
            Op::ReplaceSnat6(g) => {
                self.state.snat6 = Some(crate::model::Snat6::Masquerade(g.clone()));
                Ok(())
            }
            Op::DeleteSnat6 => {
                self.state.snat6.take().map(drop).ok_or_else(|| {
                    "Error: Could not process rule: No such file or directory".into()
                })
            }
        }
    }

    fn create_link(&mut self, link: &Link) -> Result<(), String> {
        ours(&link.name)?;
        if link.name.len() > MAX_LINK_NAME {
            return Err(format!(
                "Invalid argument (EINVAL): name {:?} is longer than {MAX_LINK_NAME} bytes",
                link.name
            ));
        }
        if self.state.links.contains_key(&link.name) || self.foreign_links.contains_key(&link.name)
        {
            return Err(EEXIST.into());
        }
        if let LinkKind::Vxlan {
            vni,
            port,
            underlay,
            ..
        } = &link.kind
        {
            if !self.foreign_links.contains_key(underlay) {
                return Err(format!("{ENODEV}: underlay {underlay} does not exist"));
            }
            let taken = self.state.links.values().any(|l| {
                matches!(&l.kind, LinkKind::Vxlan { vni: v, port: p, .. } if v == vni && p == port)
            });
            if taken {
                return Err("A VXLAN device with the specified VNI already exists (EEXIST)".into());
            }
            self.check_vxlan_mtu(&link.kind, link.mtu)?;
        }
        self.state.links.insert(link.name.clone(), link.clone());
        Ok(())
    }

    /// A link that exists, the agent's or not (proxy NDP lives on the underlay).
    fn any_link(&self, name: &str) -> Result<(), String> {
        if self.foreign_links.contains_key(name) || self.state.links.contains_key(name) {
            Ok(())
        } else {
            Err(format!("{ENODEV}: {name}"))
        }
    }

    /// The agent's link `name`: refuses foreign links and missing ones.
    fn own_link(&self, name: &str) -> Result<Link, String> {
        ours(name)?;
        self.state
            .links
            .get(name)
            .cloned()
            .ok_or_else(|| format!("{ENODEV}: {name}"))
    }

    fn check_vxlan_mtu(&self, kind: &LinkKind, mtu: u32) -> Result<(), String> {
        let LinkKind::Vxlan {
            underlay, local, ..
        } = kind
        else {
            return Ok(());
        };
        let overhead = if local.is_ipv6() {
            causeway_crds::mtu::VXLAN6_OVERHEAD
        } else {
            VXLAN_OVERHEAD
        };
        let max = self
            .foreign_links
            .get(underlay)
            .map_or(0, |m| m.saturating_sub(overhead));
        if mtu > max {
            return Err(format!(
                "Invalid argument (EINVAL): MTU {mtu} is above {max}, the most {underlay} can carry with VXLAN"
            ));
        }
        Ok(())
    }

    /// A route needs its device to exist and, for the agent's links, to be up.
    fn route_device_up(&self, route: &Route) -> Result<(), String> {
        if self.foreign_links.contains_key(route.dev.as_str()) {
            return Ok(());
        }
        match self.state.links.get(route.dev.as_str()) {
            None => Err(format!("{ENODEV}: {}", route.dev)),
            Some(link) if !link.up => Err("Nexthop device is not up (ENETDOWN)".into()),
            Some(_) => Ok(()),
        }
    }

    fn flush_routes(&mut self, dev: &str) {
        self.state.routes.retain(|_, r| r.dev != dev);
    }
}

const EEXIST: &str = "File exists (EEXIST)";
const ENODEV: &str = "No such device (ENODEV)";
const ENOENT: &str = "No such file or directory (ENOENT)";

fn ours(name: &str) -> Result<(), String> {
    if name.starts_with(DEVICE_PREFIX) {
        Ok(())
    } else {
        Err(format!(
            "fake dataplane: {name} is not the agent's link (no {DEVICE_PREFIX} prefix); the agent must never change it"
        ))
    }
}

impl Dataplane for FakeDataplane {
    async fn underlay_for(
        &mut self,
        address: std::net::IpAddr,
        secondary: Option<std::net::IpAddr>,
    ) -> Result<Underlay, String> {
        let mut underlay = self.underlays.get(&address).cloned().ok_or_else(|| {
            format!("no interface of this node has {address}, the NodeSubnet's spec.nodeAddress")
        })?;
        underlay.secondary_prefix = match secondary {
            Some(std::net::IpAddr::V6(a)) => self
                .addresses6
                .get(&a)
                .filter(|(on, _)| *on == underlay.name)
                .map(|(_, prefix)| ipnet::IpNet::V6(*prefix)),
            Some(a @ std::net::IpAddr::V4(_)) => self
                .underlays
                .get(&a)
                .filter(|u| u.name == underlay.name)
                .map(|u| u.prefix),
            None => None,
        };
        Ok(underlay)
    }

    async fn foreign_routes(&mut self) -> Result<ForeignRoutes, String> {
        Ok(ForeignRoutes {
            destinations: self.foreign_routes.clone(),
            next_hops: self.foreign_next_hops.clone(),
            next_hops6: self.foreign_next_hops6.clone(),
            destinations6: std::collections::BTreeSet::new(),
        })
    }

    async fn enable_forwarding(&mut self, ipv6: bool) -> Result<(), String> {
        self.forwarding = true;
        self.forwarding6 |= ipv6;
        Ok(())
    }

    async fn observe(&mut self) -> Result<State, ApplyError> {
        Ok(self.state.clone())
    }

    async fn apply(&mut self, op: &Op) -> Result<(), ApplyError> {
        let text = op.to_string();
        if let Some((needle, message)) = &self.fail_on
            && text.contains(needle.as_str())
        {
            return Err(ApplyError {
                op: text,
                message: message.clone(),
            });
        }
        self.kernel(op)
            .map_err(|message| ApplyError { op: text, message })?;
        self.applied.push(op.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use causeway_crds::{NodeSubnet, NodeSubnetSpec, PodNetworkSpec};

    use super::*;
    use crate::diff::diff;
    use crate::diff::fixtures::*;
    use crate::model::Mac;
    use crate::plan::{Input, Underlay, plan};

    fn fake(state: State) -> FakeDataplane {
        FakeDataplane::new(state).with_foreign_link(UNDERLAY, 1500)
    }

    /// Applies `ops` in order, stopping at the first failure, as the agent's apply loop does.
    async fn apply_all(dp: &mut FakeDataplane, ops: &[Op]) -> Result<(), ApplyError> {
        for op in ops {
            dp.apply(op).await?;
        }
        Ok(())
    }

    /// What `plan` makes for node-a with peers b (on-link), c (routed) and d (on-link).
    fn planned(cross_subnet: bool) -> State {
        let subnet = |node: &str, cidr: &str, address: &str| {
            NodeSubnet::new(
                node,
                NodeSubnetSpec {
                    network: "overlay".into(),
                    node_name: node.into(),
                    cidr: cidr.into(),
                    node_address: address.into(),
                    vtep_mac: None,
                    secondary_cidr: None,
                    secondary_node_address: None,
                },
            )
        };
        let network: PodNetworkSpec = serde_json::from_value(serde_json::json!({
            "cidr": "10.244.0.0/16",
            "nodeSubnetPrefixLength": 24,
            "mode": "Overlay",
            "overlay": { "crossSubnet": cross_subnet },
        }))
        .expect("test PodNetwork spec");
        let peers = [
            Arc::new(subnet("node-b", "10.244.2.0/24", "192.168.1.12")),
            Arc::new(subnet("node-c", "10.244.3.0/24", "192.168.2.13")),
            Arc::new(subnet("node-d", "10.244.4.0/24", "192.168.1.14")),
        ];
        let got = plan(&Input {
            own: &subnet("node-a", "10.244.1.0/24", "192.168.1.11"),
            peers: &peers,
            network: &network,
            underlay: &Underlay {
                name: UNDERLAY.into(),
                mtu: 1500,
                prefix: net("192.168.1.0/24").into(),
                secondary_prefix: None,
            },
            learned: &crate::bgp::Learned::new(),
            returns: &[],
            snat: &[],
            clients: &[],
            protected: &std::collections::BTreeSet::new(),
            protected6: &std::collections::BTreeSet::new(),
            pods6: &std::collections::BTreeSet::new(),
        })
        .expect("plan");
        assert!(got.skipped.is_empty(), "{:?}", got.skipped);
        got.desired
    }

    /// A dual-stack Flat node: both ranges on-link on the underlay, proxy ARP and NDP there,
    /// and one proxy entry per pod address in `pods`.
    fn flat6(pods: &[&str]) -> State {
        let mut state = Node(State::default())
            .link(bridge(1500))
            .address("cw-br0", "10.244.1.1/24")
            .build();
        let gateway6: ipnet::IpNet = "fd00:10:244:1::1/64".parse().expect("net");
        state.addresses.insert(
            ("cw-br0".into(), gateway6),
            crate::model::Address { addr: gateway6 },
        );
        for dst in ["10.244.0.0/16", "fd00:10:244::/56"] {
            let dst: ipnet::IpNet = dst.parse().expect("net");
            state.routes.insert(
                dst,
                Route {
                    dst,
                    gateway: None,
                    dev: UNDERLAY.into(),
                    onlink: false,
                },
            );
        }
        state.proxy_arp.insert(UNDERLAY.into());
        state.proxy_ndp.insert(UNDERLAY.into());
        for pod in pods {
            state
                .proxy_neighbours
                .insert((UNDERLAY.into(), pod.parse().expect("ip")));
        }
        state
    }

    #[tokio::test]
    async fn proxy_ndp_entries_sit_on_an_existing_link_and_the_ipv6_prefix_is_the_links_own() {
        let mut dp = fake(State::default()).with_address6(
            UNDERLAY,
            "fd00:1::11".parse().expect("ip"),
            "fd00:1::/64".parse().expect("net"),
        );
        let ip: std::net::Ipv6Addr = "fd00:10:244:1::2".parse().expect("ip");
        let add = |dev: &str| Op::AddProxyNeighbour {
            dev: dev.into(),
            ip,
        };
        dp.apply(&add(UNDERLAY)).await.expect("on the underlay");
        dp.apply(&add(UNDERLAY))
            .await
            .expect("a replace is idempotent");
        assert_eq!(dp.state.proxy_neighbours.len(), 1);
        let missing = dp.apply(&add("eth9")).await.expect_err("no such link");
        assert!(missing.message.contains("ENODEV"), "{missing}");
        let delete = Op::DeleteProxyNeighbour {
            dev: UNDERLAY.into(),
            ip,
        };
        dp.apply(&delete).await.expect("delete");
        let again = dp.apply(&delete).await.expect_err("gone");
        assert!(again.message.contains("ENOENT"), "{again}");
        dp.apply(&Op::SetProxyNdp {
            dev: UNDERLAY.into(),
            on: true,
        })
        .await
        .expect("proxy_ndp on");
        assert!(dp.state.proxy_ndp.contains(UNDERLAY));

        let underlay = Underlay {
            name: UNDERLAY.into(),
            mtu: 1500,
            prefix: "192.168.1.0/24".parse().expect("net"),
            secondary_prefix: None,
        };
        let v4: std::net::IpAddr = "192.168.1.11".parse().expect("ip");
        let mut dp = dp.with_underlay(v4, underlay.clone());
        let address: std::net::IpAddr = "fd00:1::11".parse().expect("ip");
        assert_eq!(
            dp.underlay_for(v4, Some(address))
                .await
                .map(|u| u.secondary_prefix),
            Ok(Some("fd00:1::/64".parse().expect("net")))
        );
        assert_eq!(
            dp.underlay_for(v4, Some("fd00:1::99".parse().expect("ip")))
                .await
                .map(|u| u.secondary_prefix),
            Ok(None),
            "an address the node does not have"
        );
    }

    /// Kernel-consistent states (no route through a link that is down, one VXLAN device per
    /// VNI and port), each a plausible "observed" and a plausible "desired".
    fn states() -> Vec<(&'static str, State)> {
        let mut legacy = vxlan(1, 8472, 1450);
        legacy.name = "cw-legacy".into();
        let mut down = vxlan(1, 8472, 1450);
        down.up = false;
        vec![
            ("nothing", State::default()),
            ("no peers", Node::new(1).build()),
            ("three peers", Node::new(1).peers(2..5).build()),
            (
                "other peers, one direct",
                Node::new(1).peers(3..7).route(direct_route(2)).build(),
            ),
            ("VNI 2", Node::new(2).peers(2..5).build()),
            (
                "port 4789",
                Node::new(1).link(vxlan(1, 4789, 1450)).peers(2..4).build(),
            ),
            (
                "MTU 1400",
                Node::new(1)
                    .link(bridge(1400))
                    .link(vxlan(1, 8472, 1400))
                    .peers(2..5)
                    .build(),
            ),
            (
                "VNI 1 under another name",
                Node(State::default())
                    .link(bridge(1450))
                    .link(legacy)
                    .address("cw-br0", "10.244.1.1/24")
                    .peers(2..4)
                    .build(),
            ),
            (
                "another bridge address in the same subnet",
                Node::new(1)
                    .without_address("cw-br0", "10.244.1.1/24")
                    .address("cw-br0", "10.244.1.5/24")
                    .peers(2..4)
                    .build(),
            ),
            (
                "VXLAN down: neighbours and FDB only",
                Node(State::default())
                    .link(down)
                    .neighbour(neighbour("cw-vx1", 2))
                    .fdb(fdb("cw-vx1", 2))
                    .build(),
            ),
            (
                "VXLAN without an address",
                Node::new(1)
                    .without_address("cw-vx1", "10.244.1.0/32")
                    .peers(2..5)
                    .build(),
            ),
            ("planned, VXLAN to all", planned(false)),
            ("planned, crossSubnet", planned(true)),
            ("flat", {
                let mut flat = Node(State::default())
                    .link(bridge(1500))
                    .address("cw-br0", "10.244.1.1/24")
                    .route(Route {
                        dst: net("10.244.0.0/16").into(),
                        gateway: None,
                        dev: UNDERLAY.into(),
                        onlink: false,
                    })
                    .build();
                flat.proxy_arp.insert(UNDERLAY.into());
                flat
            }),
            (
                "flat, dual-stack, two pods",
                flat6(&["fd00:10:244:1::2", "fd00:10:244:1::3"]),
            ),
            (
                "flat, dual-stack, other pods",
                flat6(&["fd00:10:244:1::3", "fd00:10:244:1::9"]),
            ),
            (
                "three peers, NAT",
                Node::new(1).peers(2..5).nat(&["10.244.0.0/16"]).build(),
            ),
            (
                "three peers, NAT with an exclusion",
                Node::new(1)
                    .peers(2..5)
                    .nat(&["10.244.0.0/16", "192.168.0.0/16"])
                    .build(),
            ),
        ]
    }

    #[tokio::test]
    async fn applying_the_diff_reaches_the_desired_state_from_every_observed_one() {
        for (from_name, from) in states() {
            for (to_name, to) in states() {
                let case = format!("{from_name} → {to_name}");
                let ops = diff(&to, &from);
                let mut dp = fake(from.clone());
                if let Err(e) = apply_all(&mut dp, &ops).await {
                    let text: Vec<String> = ops.iter().map(ToString::to_string).collect();
                    panic!("{case}: {e}\nops:\n{}", text.join("\n"));
                }
                let reached = dp.observe().await.expect("observe");
                assert_eq!(reached, to, "{case}: ops {:#?}", ops);
                assert_eq!(diff(&to, &reached), vec![], "{case}: second diff");
                assert_eq!(dp.applied, ops, "{case}");
            }
        }
    }

    #[tokio::test]
    async fn a_failing_op_stops_the_apply_names_the_op_and_the_next_diff_finishes_the_job() {
        let desired = Node::new(1).peers(2..5).build();
        let ops = diff(&desired, &State::default());
        let mut dp = fake(State::default());
        dp.fail_on = Some((
            "replace route 10.244.3.0/24".into(),
            "Network is unreachable".into(),
        ));

        let err = apply_all(&mut dp, &ops)
            .await
            .expect_err("the route op fails");
        assert_eq!(
            err.to_string(),
            "replace route 10.244.3.0/24 via 10.244.3.0 dev cw-vx1 onlink proto 249: Network is unreachable"
        );
        let failed = ops
            .iter()
            .position(|op| op.to_string() == err.op)
            .expect("the failing op is one of the diff's");
        assert_eq!(
            dp.applied,
            ops[..failed],
            "only the ops before it were applied"
        );
        assert!(!dp.state.routes.contains_key(&peer_cidr(3).into()));

        dp.fail_on = None;
        let observed = dp.observe().await.expect("observe");
        let rest = diff(&desired, &observed);
        assert_eq!(rest, ops[failed..], "the next pass applies the rest");
        apply_all(&mut dp, &rest).await.expect("apply");
        assert_eq!(dp.state, desired);
    }

    #[tokio::test]
    async fn the_fake_answers_like_the_kernel() {
        let base = || fake(Node::new(1).peers(2..3).route(direct_route(9)).build());
        let mut down = vxlan(1, 8472, 1450);
        down.up = false;
        let foreign_neighbour = Neighbour {
            dev: UNDERLAY.into(),
            ..neighbour("cw-vx1", 2)
        };
        type Check = fn(&State) -> bool;
        let cases: Vec<(&str, FakeDataplane, Op, Result<Check, &str>)> = vec![
            (
                "creating an existing link",
                base(),
                Op::CreateLink(bridge(1450)),
                Err("File exists"),
            ),
            (
                "a second device for one VNI and port",
                base(),
                Op::CreateLink(Link {
                    name: "cw-other".into(),
                    ..vxlan(1, 8472, 1450)
                }),
                Err("A VXLAN device with the specified VNI already exists"),
            ),
            (
                "a VXLAN device on a missing underlay",
                fake(State::default()).tap(|d| d.foreign_links.clear()),
                Op::CreateLink(vxlan(1, 8472, 1450)),
                Err("No such device (ENODEV): underlay eth0 does not exist"),
            ),
            (
                "a route where a foreign route is",
                base().tap(|d| {
                    d.foreign_routes.insert(peer_cidr(5));
                }),
                Op::ReplaceRoute(tunnel_route("cw-vx1", 5)),
                Err("that Causeway does not own is in the way"),
            ),
            (
                "a VXLAN MTU the underlay cannot carry",
                fake(State::default()),
                Op::CreateLink(vxlan(1, 8472, 1451)),
                Err("MTU 1451 is above 1450"),
            ),
            (
                "raising a VXLAN MTU past the underlay's",
                base(),
                Op::UpdateLink {
                    name: "cw-vx1".into(),
                    mtu: 1500,
                    up: true,
                },
                Err("Invalid argument (EINVAL)"),
            ),
            (
                "deleting a link removes everything on it, routes through it included",
                base(),
                Op::DeleteLink("cw-vx1".into()),
                Ok(|s| {
                    s.links.len() == 1
                        && s.addresses.len() == 1
                        && s.neighbours.is_empty()
                        && s.fdb.is_empty()
                        && s.routes.keys().eq([&peer_cidr(9).into()])
                }),
            ),
            (
                "deleting a missing link",
                base(),
                Op::DeleteLink("cw-vx9".into()),
                Err("No such device"),
            ),
            (
                "setting a link down flushes its routes and neighbours but keeps FDB entries",
                base(),
                Op::UpdateLink {
                    name: "cw-vx1".into(),
                    mtu: 1450,
                    up: false,
                },
                Ok(|s| {
                    s.neighbours.is_empty()
                        && s.fdb.len() == 1
                        && s.routes.keys().eq([&peer_cidr(9).into()])
                }),
            ),
            (
                "deleting the last address of a link flushes routes through it",
                base(),
                Op::DeleteAddress {
                    dev: "cw-vx1".into(),
                    addr: net("10.244.1.0/32").into(),
                },
                Ok(|s| s.routes.keys().eq([&peer_cidr(9).into()]) && s.neighbours.len() == 1),
            ),
            (
                "an address on a missing link",
                base(),
                Op::AddAddress {
                    dev: "cw-vx9".into(),
                    addr: net("10.0.0.1/32").into(),
                },
                Err("No such device"),
            ),
            (
                "an address twice",
                base(),
                Op::AddAddress {
                    dev: "cw-br0".into(),
                    addr: net("10.244.1.1/24").into(),
                },
                Err("File exists"),
            ),
            (
                "a route through a missing link",
                base(),
                Op::ReplaceRoute(tunnel_route("cw-vx9", 4)),
                Err("No such device"),
            ),
            (
                "a route through a link that is down",
                fake(Node(State::default()).link(down.clone()).build()),
                Op::ReplaceRoute(tunnel_route("cw-vx1", 4)),
                Err("Nexthop device is not up"),
            ),
            (
                "a neighbour on a link that is down",
                fake(Node(State::default()).link(down).build()),
                Op::ReplaceNeighbour(neighbour("cw-vx1", 4)),
                Ok(|s| s.neighbours.len() == 1),
            ),
            (
                "a route through the underlay",
                base(),
                Op::ReplaceRoute(direct_route(4)),
                Ok(|s| s.routes.len() == 3),
            ),
            (
                "replacing a route upserts it",
                base(),
                Op::ReplaceRoute(direct_route(2)),
                Ok(|s| s.routes.get(&peer_cidr(2).into()) == Some(&direct_route(2))),
            ),
            (
                "replacing a neighbour upserts it",
                base(),
                Op::ReplaceNeighbour(Neighbour {
                    mac: Mac([0x0e, 9, 9, 9, 9, 9]),
                    ..neighbour("cw-vx1", 2)
                }),
                Ok(|s| {
                    s.neighbours.len() == 1
                        && s.neighbours
                            .values()
                            .all(|n| n.mac == Mac([0x0e, 9, 9, 9, 9, 9]))
                }),
            ),
            (
                "an FDB entry on a missing link",
                base(),
                Op::ReplaceFdb(fdb("cw-vx9", 4)),
                Err("No such device"),
            ),
            (
                "an FDB entry with a destination on a bridge",
                base(),
                Op::ReplaceFdb(fdb("cw-br0", 4)),
                Err("not a VXLAN device"),
            ),
            (
                "deleting a missing route",
                base(),
                Op::DeleteRoute(direct_route(4)),
                Err("No such process"),
            ),
            (
                "deleting a route that differs from the one installed",
                base(),
                Op::DeleteRoute(direct_route(2)),
                Err("No such process"),
            ),
            (
                "deleting a missing neighbour",
                base(),
                Op::DeleteNeighbour(neighbour("cw-vx1", 4)),
                Err("No such file or directory"),
            ),
            (
                "deleting a missing FDB entry",
                base(),
                Op::DeleteFdb(fdb("cw-vx1", 4)),
                Err("No such file or directory"),
            ),
            (
                "deleting a missing address",
                base(),
                Op::DeleteAddress {
                    dev: "cw-br0".into(),
                    addr: net("10.9.9.9/32").into(),
                },
                Err("Address not found"),
            ),
            (
                "touching a link the agent does not own",
                base(),
                Op::ReplaceNeighbour(foreign_neighbour),
                Err("eth0 is not the agent's link"),
            ),
            (
                "deleting a link the agent does not own",
                base(),
                Op::DeleteLink(UNDERLAY.into()),
                Err("eth0 is not the agent's link"),
            ),
        ];
        for (name, mut dp, op, want) in cases {
            let before = dp.state.clone();
            let got = dp.apply(&op).await;
            match (want, got) {
                (Ok(check), Ok(())) => {
                    assert!(check(&dp.state), "{name}: {:#?}", dp.state);
                    assert_eq!(dp.applied, [op], "{name}");
                }
                (Err(want), Err(e)) => {
                    assert_eq!(e.op, op.to_string(), "{name}");
                    assert!(e.message.contains(want), "{name}: {e}");
                    assert_eq!(dp.state, before, "{name}: a refused op changed the state");
                    assert!(dp.applied.is_empty(), "{name}");
                }
                (want, got) => panic!(
                    "{name}: want {}, got {got:?}",
                    want.map_or("error", |_| "success")
                ),
            }
        }
    }

    trait Tap: Sized {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }

    impl Tap for FakeDataplane {}
}
