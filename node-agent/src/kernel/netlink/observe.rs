//! Observing the kernel: the dumps, and parsing their messages into the model (only what
//! carries the agent's marks).

use super::*;

/// The metric the kernel gives an IPv6 route added without one (ours included).
const IPV6_DEFAULT_METRIC: u32 = 1024;

impl Netlink {
    /// The link holding address `addr` (IPv4 or IPv6): the underlay for VXLAN, with the
    /// on-link prefix that decides which peers are on-link, and the on-link prefix of
    /// `secondary` (the node's address of the other family) when the same link holds it. One
    /// dump of the links and one of each family's addresses that is asked about.
    pub async fn underlay_for(
        &mut self,
        addr: IpAddr,
        secondary: Option<IpAddr>,
    ) -> Result<Underlay, NetlinkError> {
        let links = self.links().await?;
        let (mut v4, mut v6) = (None, None);
        for a in [Some(addr), secondary].into_iter().flatten() {
            match a {
                IpAddr::V4(_) if v4.is_none() => v4 = Some(self.addresses().await?),
                IpAddr::V6(_) if v6.is_none() => {
                    v6 = Some(
                        self.addresses_of(AddressFamily::Inet6, "IPv6 addresses")
                            .await?,
                    );
                }
                _ => {}
            }
        }
        // The (link index, on-link prefix) holding `a`.
        let find = |a: IpAddr| -> Option<(u32, IpNet)> {
            let messages = match a {
                IpAddr::V4(_) => v4.as_deref()?,
                IpAddr::V6(_) => v6.as_deref()?,
            };
            messages.iter().find_map(|m| {
                let (ip, len) = match (ipv4_of(m), ipv6_of(m)) {
                    (Some((ip, len)), _) => (IpAddr::V4(ip), len),
                    (None, Some((ip, len))) => (IpAddr::V6(ip), len),
                    (None, None) => return None,
                };
                (ip == a).then(|| {
                    let prefix = IpNet::new(ip, len)
                        .map(|n| n.trunc())
                        .unwrap_or_else(|_| IpNet::from(ip));
                    (m.header.index, prefix)
                })
            })
        };
        let Some((index, prefix)) = find(addr) else {
            return Err(NetlinkError::NoInterfaceHasAddress { addr });
        };
        let Some(link) = links.get(&index) else {
            return Err(NetlinkError::NoInterfaceHasAddress { addr });
        };
        let secondary_prefix = secondary
            .and_then(find)
            .filter(|(i, _)| *i == index)
            .map(|(_, p)| p);
        Ok(Underlay {
            name: link_name(link).unwrap_or_default().to_owned(),
            mtu: link_mtu(link),
            prefix,
            secondary_prefix,
        })
    }

    pub(super) fn dump_error(
        &self,
        what: &'static str,
    ) -> impl Fn(rtnetlink::Error) -> NetlinkError + '_ {
        move |error| NetlinkError::Dump {
            netns: netns::describe(self.netns.as_deref()),
            what,
            reason: describe_error(&error),
        }
    }

    /// All links, by index.
    pub(super) async fn links(&self) -> Result<BTreeMap<u32, LinkMessage>, NetlinkError> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(self.dump_error("links"))?;
        Ok(links.into_iter().map(|l| (l.header.index, l)).collect())
    }

    pub(super) async fn addresses(&self) -> Result<Vec<AddressMessage>, NetlinkError> {
        self.addresses_of(AddressFamily::Inet, "IPv4 addresses")
            .await
    }

    async fn addresses_of(
        &self,
        family: AddressFamily,
        what: &'static str,
    ) -> Result<Vec<AddressMessage>, NetlinkError> {
        let mut request = self.handle.address().get();
        request.message_mut().header.family = family;
        request
            .execute()
            .try_collect()
            .await
            .map_err(self.dump_error(what))
    }

    pub(super) async fn read_state(&self) -> Result<State, NetlinkError> {
        let links = self.links().await?;
        let names: BTreeMap<u32, &str> = links
            .iter()
            .filter_map(|(index, link)| Some((*index, link_name(link)?)))
            .collect();
        let mut state = State::default();
        // Indices of our links; of those, which are VXLAN.
        let mut ours: BTreeMap<u32, String> = BTreeMap::new();
        let mut vxlans: BTreeMap<u32, String> = BTreeMap::new();
        for (index, message) in &links {
            let Some(name) = link_name(message).filter(|n| n.starts_with(DEVICE_PREFIX)) else {
                continue;
            };
            let Some(link) = parse_link(message, &names) else {
                debug!(%name, "ignoring a link with our prefix of a kind the agent never creates");
                continue;
            };
            if matches!(link.kind, LinkKind::Vxlan { .. }) {
                vxlans.insert(*index, name.to_owned());
            }
            ours.insert(*index, name.to_owned());
            state.links.insert(name.to_owned(), link);
        }
        for message in links.values() {
            if let Some(port) = parse_port(message, &state.links, &ours) {
                state.ports.insert(port.name.clone(), port);
            }
        }

        // IPv6: the kernel gives every link a link-local address of its own (fe80::/64), which
        // is never the agent's; only global-scope addresses are read (`ipv6_of`).
        let v6 = self
            .addresses_of(AddressFamily::Inet6, "IPv6 addresses")
            .await?;
        for message in self.addresses().await?.iter().chain(&v6) {
            let Some(dev) = ours.get(&message.header.index) else {
                continue;
            };
            let addr = match (ipv4_of(message), ipv6_of(message)) {
                (Some((ip, len)), _) => Ipv4Net::new(ip, len).ok().map(IpNet::V4),
                (None, Some((ip, len))) => Ipv6Net::new(ip, len).ok().map(IpNet::V6),
                (None, None) => None,
            };
            if let Some(addr) = addr {
                state
                    .addresses
                    .insert((dev.clone(), addr), Address { addr });
            }
        }

        // Our nexthop objects, for the routes that name one (their gateway and device are
        // in the route dump too, unless `net.ipv4.nexthop_compat_mode` is 0).
        let objects = self.nexthop_objects().await?;
        let hops: HashMap<u32, nexthop::Hop> = objects
            .iter()
            .filter(|m| m.is_ours())
            .filter_map(|m| Some((m.id?, nexthop::hop_of(m))))
            .collect();
        let mut via_object: HashMap<Ipv4Net, u32> = HashMap::new();
        for message in self.routes().await? {
            if let Some(route) = parse_route_via(&message, &names, &hops) {
                if let (IpNet::V4(dst), Some(id)) = (route.dst, nexthop_id(&message)) {
                    via_object.insert(dst, id);
                }
                state.routes.insert(route.dst, route);
            }
        }
        self.delete_stray_nexthops(&hops, &via_object).await?;
        self.nexthops
            .reset(via_object, objects.iter().filter_map(|m| m.id));
        // Reverse-path filtering is read on the agent's own links only.
        let links: Vec<String> = state.links.keys().cloned().collect();
        for dev in links {
            if self.sysctl_is(self.sysctl.rp_filter(&dev), "2").await? {
                state.loose_rp_filter.insert(dev.clone());
            }
            // A kernel booted without IPv6 has no such parameter: IPv6 is not on.
            let path = self.sysctl.disable_ipv6(&dev);
            match self.read_sysctl(&path).await {
                Ok(v) if v.trim() == "0" => {
                    state.ipv6_on.insert(dev);
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(NetlinkError::Sysctl { path, error }),
            }
        }
        // Proxy ARP is the agent's only where one of its device routes sits (Flat mode), proxy
        // NDP only where one of its IPv6 device routes does (dual-stack Flat: the link has
        // IPv6, so the parameter exists).
        let devices: std::collections::BTreeSet<String> = state
            .routes
            .values()
            .filter(|r| r.gateway.is_none())
            .map(|r| r.dev.to_string())
            .collect();
        for dev in devices {
            if self.sysctl_is(self.sysctl.proxy_arp(&dev), "1").await? {
                state.proxy_arp.insert(dev);
            }
        }
        let devices6: std::collections::BTreeSet<String> = state
            .routes
            .values()
            .filter(|r| r.gateway.is_none() && matches!(r.dst, IpNet::V6(_)))
            .map(|r| r.dev.to_string())
            .collect();
        for dev in devices6 {
            if self.sysctl_is(self.sysctl.proxy_ndp(&dev), "1").await? {
                state.proxy_ndp.insert(dev);
            }
        }
        for (dev, ip) in self.proxy_neighbours(&names).await? {
            state.proxy_neighbours.insert((dev, ip));
        }

        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            for message in self.neighbours(family, None).await? {
                if let Some(neighbour) = parse_neighbour(&message, &ours) {
                    state
                        .neighbours
                        .insert((neighbour.dev.clone(), neighbour.ip), neighbour);
                }
            }
        }

        for index in vxlans.keys() {
            for message in self.neighbours(AddressFamily::Bridge, Some(*index)).await? {
                if let Some(entry) = parse_fdb(&message, &vxlans) {
                    // Every entry on the agent's VXLAN links is the agent's to reconcile; a
                    // second remote of the same MAC comes as a message of its own.
                    match state.fdb.entry((entry.dev.clone(), entry.mac)) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            state.fdb_extra.push(entry);
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(entry);
                        }
                    }
                }
            }
        }
        Ok(state)
    }

    /// Every nexthop object in the namespace (none where the kernel has no such objects).
    async fn nexthop_objects(&self) -> Result<Vec<nexthop::NexthopMessage>, NetlinkError> {
        if !self.nexthops.enabled() {
            return Ok(Vec::new());
        }
        match self.nexthops.dump().await {
            Ok(objects) => Ok(objects),
            Err(e) if self.nexthops.refused(&e) => Ok(Vec::new()),
            Err(e) => Err(NetlinkError::Dump {
                netns: netns::describe(self.netns.as_deref()),
                what: "nexthop objects",
                reason: apply::describe_error(&e),
            }),
        }
    }

    /// Deletes the objects of ours that no route of ours names: left by an agent that
    /// stopped between an object and its route ([`nexthop`]).
    async fn delete_stray_nexthops(
        &self,
        hops: &HashMap<u32, nexthop::Hop>,
        named: &HashMap<Ipv4Net, u32>,
    ) -> Result<(), NetlinkError> {
        let named: std::collections::HashSet<u32> = named.values().copied().collect();
        for id in hops.keys().filter(|id| !named.contains(id)) {
            debug!(id, "deleting a nexthop object of ours that no route names");
            match self.nexthops.delete(*id).await {
                Err(rtnetlink::Error::NetlinkError(e)) if errno_of(&e) == Errno::ENOENT => {}
                Err(e) => {
                    return Err(NetlinkError::Dump {
                        netns: netns::describe(self.netns.as_deref()),
                        what: "nexthop objects (deleting one no route names)",
                        reason: apply::describe_error(&e),
                    });
                }
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// IPv4 and IPv6 routes of the main table with our protocol, IPv4 first. The socket has
    /// strict checking on, so the kernel filters each dump by family and protocol; the filter
    /// is repeated in [`our_route_destination`] regardless, so an IPv6 route of another protocol (the
    /// kernel's own `fe80::/64` and `ff00::/8` on every link, say) is never read as ours.
    pub(super) async fn routes(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let v4 = RouteMessageBuilder::<Ipv4Addr>::new()
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        let v6 = RouteMessageBuilder::<Ipv6Addr>::new()
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        let mut all = self.dump_routes(v4).await?;
        all.append(&mut self.dump_routes(v6).await?);
        Ok(all)
    }

    /// The routes a (strictly checked) dump request selects.
    async fn dump_routes(&self, filter: RouteMessage) -> Result<Vec<RouteMessage>, NetlinkError> {
        self.handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(self.dump_error("routes"))
    }

    /// The main table's routes that are not the agent's: their destinations (metric 0 only:
    /// a route the agent would need to add there is in the way) and every next hop (the
    /// node's own paths over the underlay, which no planned route may cover).
    pub async fn foreign_routes(&self) -> Result<ForeignRoutes, NetlinkError> {
        // Every origin (boot, kernel, DHCP, static, routing daemons) and every type
        // (unicast, blackhole, unreachable...): the builder's defaults, `proto static` and
        // unicast, would make the kernel's strict dump filter hide all other routes.
        let filter = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
            .protocol(RouteProtocol::Unspec)
            .kind(RouteType::Unspec)
            .build();
        let all = self.dump_routes(filter).await?;
        let mut foreign = ForeignRoutes::default();
        for m in all.iter().filter(|m| {
            m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
                && m.header.table == RouteHeader::RT_TABLE_MAIN
        }) {
            for a in &m.attributes {
                if let RouteAttribute::Gateway(RouteAddress::Inet(gw)) = a {
                    foreign.next_hops.insert(*gw);
                }
                if let RouteAttribute::MultiPath(hops) = a {
                    for hop in hops {
                        for ha in &hop.attributes {
                            if let RouteAttribute::Gateway(RouteAddress::Inet(gw)) = ha {
                                foreign.next_hops.insert(*gw);
                            }
                        }
                    }
                }
            }
            let metric0 = !m
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Priority(p) if *p != 0));
            let dst = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            if metric0 && let Ok(net) = Ipv4Net::new(dst, m.header.destination_prefix_length) {
                foreign.destinations.insert(net);
            }
        }
        // The IPv6 main table's next hops too (an IPv6 default gateway), which a dual-stack
        // plan must not cover either, and the destinations an IPv6 route of ours would
        // replace: the kernel gives IPv6 routes metric 1024 unless told otherwise, ours too.
        let filter6 = RouteMessageBuilder::<Ipv6Addr>::new()
            .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
            .protocol(RouteProtocol::Unspec)
            .kind(RouteType::Unspec)
            .build();
        for m in self.dump_routes(filter6).await?.iter().filter(|m| {
            m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
                && m.header.table == RouteHeader::RT_TABLE_MAIN
        }) {
            for a in &m.attributes {
                match a {
                    RouteAttribute::Gateway(RouteAddress::Inet6(gw)) => {
                        foreign.next_hops6.insert(*gw);
                    }
                    RouteAttribute::MultiPath(hops) => {
                        for ha in hops.iter().flat_map(|h| &h.attributes) {
                            if let RouteAttribute::Gateway(RouteAddress::Inet6(gw)) = ha {
                                foreign.next_hops6.insert(*gw);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let default_metric = m.attributes.iter().all(
                |a| !matches!(a, RouteAttribute::Priority(p) if *p != 0 && *p != IPV6_DEFAULT_METRIC),
            );
            let dst = m
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(*ip),
                    _ => None,
                })
                .unwrap_or(Ipv6Addr::UNSPECIFIED);
            if default_metric
                && let Ok(net) = ipnet::Ipv6Net::new(dst, m.header.destination_prefix_length)
            {
                foreign.destinations6.insert(net);
            }
        }
        Ok(foreign)
    }

    /// The IPv6 proxy NDP entries carrying the agent's mark (protocol [`ROUTE_PROTOCOL`]), on
    /// any link, as (link name, address).
    pub(super) async fn proxy_neighbours(
        &self,
        names: &BTreeMap<u32, &str>,
    ) -> Result<Vec<(String, Ipv6Addr)>, NetlinkError> {
        let messages: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet6)
            .proxies()
            .execute()
            .try_collect()
            .await
            .map_err(self.dump_error("proxy neighbours"))?;
        Ok(messages
            .iter()
            .filter_map(|m| parse_proxy_neighbour(m, names))
            .collect())
    }

    /// Neighbour (`Inet`) or FDB (`Bridge`) entries, optionally of one link only.
    pub(super) async fn neighbours(
        &self,
        family: AddressFamily,
        link: Option<u32>,
    ) -> Result<Vec<NeighbourMessage>, NetlinkError> {
        let mut request = self.handle.neighbours().get().set_address_family(family);
        if let Some(index) = link {
            request
                .message_mut()
                .attributes
                .push(NeighbourAttribute::IfIndex(index));
        }
        let what = if family == AddressFamily::Bridge {
            "FDB entries"
        } else {
            "neighbours"
        };
        request
            .execute()
            .try_collect()
            .await
            .map_err(self.dump_error(what))
    }
}

pub(super) fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

pub(super) fn link_mtu(link: &LinkMessage) -> u32 {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or_default()
}

pub(super) fn mac_of(bytes: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(bytes).ok().map(Mac)
}

pub(super) fn link_infos(link: &LinkMessage) -> &[LinkInfo] {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos.as_slice()),
            _ => None,
        })
        .unwrap_or_default()
}

pub(super) fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link_infos(link).iter().find_map(|i| match i {
        LinkInfo::Kind(kind) => Some(kind),
        _ => None,
    })
}

/// A pod's veth: a veth (never one of the agent's links) attached to one of the agent's
/// bridges (`ours`: index to name), or carrying the alias that marks it for one.
pub(super) fn parse_port(
    message: &LinkMessage,
    links: &BTreeMap<String, Link>,
    ours: &BTreeMap<u32, String>,
) -> Option<Port> {
    let name = link_name(message)?;
    if name.starts_with(DEVICE_PREFIX) || link_kind(message) != Some(&InfoKind::Veth) {
        return None;
    }
    let is_bridge = |n: &String| links.get(n).is_some_and(|l| l.kind == LinkKind::Bridge);
    let master = message
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Controller(index) => ours.get(index),
            _ => None,
        })
        .filter(|n| is_bridge(n))
        .cloned();
    let belongs_to = message.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(alias) => alias
            .strip_prefix(PORT_ALIAS_PREFIX)
            .filter(|b| b.starts_with(DEVICE_PREFIX))
            .map(str::to_owned),
        _ => None,
    });
    (master.is_some() || belongs_to.is_some()).then(|| Port {
        name: name.to_owned(),
        master,
        belongs_to,
    })
}

/// One of our links as the model sees it; `None` for kinds the agent never creates.
/// VXLAN attributes the kernel leaves out come back empty, so they differ from any desired
/// link and the diff re-creates it.
pub(super) fn parse_link(message: &LinkMessage, names: &BTreeMap<u32, &str>) -> Option<Link> {
    let name = link_name(message)?.to_owned();
    let kind = match link_kind(message)? {
        InfoKind::Bridge => LinkKind::Bridge,
        InfoKind::Vxlan => {
            let data = link_infos(message)
                .iter()
                .find_map(|i| match i {
                    LinkInfo::Data(InfoData::Vxlan(data)) => Some(data.as_slice()),
                    _ => None,
                })
                .unwrap_or_default();
            let mut vni = 0;
            let mut port = 0;
            let mut local = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            let mut underlay = String::new();
            for attribute in data {
                match attribute {
                    InfoVxlan::Id(id) => vni = *id,
                    InfoVxlan::Port(p) => port = *p,
                    InfoVxlan::Local(addr) => local = IpAddr::V4(*addr),
                    InfoVxlan::Local6(addr) => local = IpAddr::V6(*addr),
                    InfoVxlan::Link(index) => {
                        underlay = names
                            .get(index)
                            .map_or_else(|| format!("if{index}"), |n| (*n).to_owned());
                    }
                    _ => {}
                }
            }
            let mac = message
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(bytes) => mac_of(bytes),
                    _ => None,
                })
                .unwrap_or(Mac([0; 6]));
            LinkKind::Vxlan {
                vni,
                port,
                local,
                underlay,
                mac,
            }
        }
        _ => return None,
    };
    Some(Link {
        name,
        kind,
        mtu: link_mtu(message),
        up: message.header.flags.contains(LinkFlags::Up),
    })
}

/// The IPv4 address and prefix length of an address message.
pub(super) fn ipv4_of(message: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
    if message.header.family != AddressFamily::Inet {
        return None;
    }
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it only on
    // point-to-point links (where it is the peer's).
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let address = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    Some((local.or(address)?, message.header.prefix_len))
}

/// The global-scope IPv6 address and prefix length of an address message (`None` for
/// link-local and other scopes, which the kernel assigns by itself).
pub(super) fn ipv6_of(message: &AddressMessage) -> Option<(Ipv6Addr, u8)> {
    if message.header.family != AddressFamily::Inet6
        || message.header.scope != AddressScope::Universe
    {
        return None;
    }
    let ip = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V6(ip)) | AddressAttribute::Address(IpAddr::V6(ip)) => {
            Some(*ip)
        }
        _ => None,
    })?;
    Some((ip, message.header.prefix_len))
}

/// The nexthop object a route names (`RTA_NH_ID`), if any.
pub(super) fn nexthop_id(message: &RouteMessage) -> Option<u32> {
    message.attributes.iter().find_map(|a| match a {
        RouteAttribute::NhId(id) => Some(*id),
        _ => None,
    })
}

/// One of our routes; `None` for anything else, including multipath routes (the agent never
/// makes them; a replace of the same destination overwrites one). A route naming a nexthop
/// object takes its gateway, device and `onlink` from the object (in `hops`) when the route
/// dump leaves them out (`net.ipv4.nexthop_compat_mode=0`).
pub(super) fn parse_route_via(
    message: &RouteMessage,
    names: &BTreeMap<u32, &str>,
    hops: &HashMap<u32, nexthop::Hop>,
) -> Option<Route> {
    let dst = our_route_destination(message)?;
    let v6 = dst.addr().is_ipv6();
    let mut gateway = None;
    let mut oif = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) if !v6 => {
                gateway = Some((*ip).into());
            }
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) if v6 => {
                gateway = Some((*ip).into());
            }
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let mut onlink = message.header.flags.contains(RouteFlags::Onlink);
    if oif.is_none()
        && let Some(hop) = nexthop_id(message).and_then(|id| hops.get(&id))
    {
        oif = hop.oif;
        gateway = hop.gateway.filter(|g| g.is_ipv6() == v6);
        onlink = hop.onlink;
    }
    let dev = names.get(&oif?)?;
    Some(Route {
        dst,
        gateway,
        dev: (*dev).into(),
        onlink,
    })
}

/// The destination of a unicast route of ours in the main table (`None` for any other
/// route), whether or not the message names its device.
pub(super) fn our_route_destination(message: &RouteMessage) -> Option<IpNet> {
    let header = &message.header;
    let table = message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(header.table));
    if !matches!(
        header.address_family,
        AddressFamily::Inet | AddressFamily::Inet6
    ) || header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
        || table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || header.kind != RouteType::Unicast
    {
        return None;
    }
    let v6 = header.address_family == AddressFamily::Inet6;
    let mut dst = if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) if !v6 => dst = (*ip).into(),
            RouteAttribute::Destination(RouteAddress::Inet6(ip)) if v6 => dst = (*ip).into(),
            _ => {}
        }
    }
    IpNet::new(dst, header.destination_prefix_length).ok()
}

/// A permanent IPv4 or IPv6 neighbour on one of our links.
pub(super) fn parse_neighbour(
    message: &NeighbourMessage,
    ours: &BTreeMap<u32, String>,
) -> Option<Neighbour> {
    let header = &message.header;
    if !matches!(header.family, AddressFamily::Inet | AddressFamily::Inet6)
        || header.state != NeighbourState::Permanent
    {
        return None;
    }
    let dev = ours.get(&header.ifindex)?;
    let mut ip = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) => {
                ip = Some(IpAddr::V4(*addr));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(addr)) => {
                ip = Some(IpAddr::V6(*addr));
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = mac_of(bytes),
            _ => {}
        }
    }
    Some(Neighbour {
        dev: dev.as_str().into(),
        ip: ip?,
        mac: mac?,
    })
}

/// An IPv6 proxy NDP entry with the agent's mark, as (link name, address); `None` for any
/// other entry.
pub(super) fn parse_proxy_neighbour(
    message: &NeighbourMessage,
    names: &BTreeMap<u32, &str>,
) -> Option<(String, Ipv6Addr)> {
    let header = &message.header;
    if header.family != AddressFamily::Inet6 || !header.flags.contains(NeighbourFlags::Proxy) {
        return None;
    }
    let mut ip = None;
    let mut ours = false;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(addr)) => ip = Some(*addr),
            NeighbourAttribute::Protocol(p) => ours = *p == RouteProtocol::Other(ROUTE_PROTOCOL),
            _ => {}
        }
    }
    let dev = names.get(&header.ifindex)?;
    ours.then_some(((*dev).to_owned(), ip?))
}

/// A permanent unicast FDB entry with an IPv4 or IPv6 destination in one of our VXLAN devices' own
/// tables. Skipped: the all-zero default (flood) entries, entries a bridge reports for its
/// ports (`master`), learned or otherwise non-permanent ones.
pub(super) fn parse_fdb(message: &NeighbourMessage, vxlans: &BTreeMap<u32, String>) -> Option<Fdb> {
    let header = &message.header;
    // Any state and any MAC, the all-zero flood entry included: nothing on the agent's VXLAN
    // devices is someone else's. Entries a bridge master keeps are not the device's own.
    if header.family != AddressFamily::Bridge || header.flags.contains(NeighbourFlags::Controller) {
        return None;
    }
    let dev = vxlans.get(&header.ifindex)?;
    let mut mac = None;
    let mut dst = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = mac_of(bytes),
            // In AF_BRIDGE dumps NDA_DST comes back as raw bytes, not as an IPv4 address.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                dst = <[u8; 4]>::try_from(bytes.as_slice())
                    .ok()
                    .map(|b| IpAddr::V4(Ipv4Addr::from(b)))
                    .or_else(|| {
                        <[u8; 16]>::try_from(bytes.as_slice())
                            .ok()
                            .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
                    });
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                dst = Some(IpAddr::V4(*ip));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => {
                dst = Some(IpAddr::V6(*ip));
            }
            _ => {}
        }
    }
    let mac = mac?;
    Some(Fdb {
        dev: dev.as_str().into(),
        mac,
        dst: dst?,
    })
}
