//! Applying operations: one function per operation family, the ownership checks, and the
//! kernel's errors in words (with hints for the usual causes).

use super::*;

impl Netlink {
    /// The index of the link named `name`, `None` when there is none.
    pub(super) async fn link_index(&self, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
        if let Some(index) = self
            .run_links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return Ok(*index);
        }
        Ok(self.known_link(name).await?.map(|l| l.index))
    }

    /// The link named `name` as last found ([`Netlink::known_links`]), or found now.
    async fn known_link(&self, name: &str) -> Result<Option<KnownLink>, rtnetlink::Error> {
        let known = self
            .known_links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .copied();
        if known.is_some() {
            return Ok(known);
        }
        let Some(link) = self.find_link(name).await? else {
            return Ok(None);
        };
        let found = KnownLink {
            index: link.header.index,
            vxlan: link_kind(&link) == Some(&InfoKind::Vxlan),
        };
        self.known_links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), found);
        Ok(Some(found))
    }

    /// Forgets the links found so far: the next operation on each looks it up again.
    pub(super) fn forget_links(&self) {
        self.known_links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Resolves the links a run of operations uses once, for [`Self::link_index`].
    pub(super) async fn pin_links(&self, ops: &[Op]) -> Result<(), rtnetlink::Error> {
        let names: std::collections::BTreeSet<&str> = ops
            .iter()
            .filter_map(|op| match op {
                Op::ReplaceRoute(r) | Op::DeleteRoute(r) => Some(r.dev.as_str()),
                Op::ReplaceNeighbour(n) | Op::DeleteNeighbour(n) => Some(n.dev.as_str()),
                Op::ReplaceFdb(f) | Op::DeleteFdb(f) => Some(f.dev.as_str()),
                _ => None,
            })
            .collect();
        let mut resolved = BTreeMap::new();
        for name in names {
            let index = self.find_link(name).await?.map(|l| l.header.index);
            resolved.insert(name.to_owned(), index);
        }
        *self
            .run_links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = resolved;
        *self.run_routes.lock().await = RunRoutes::Unread;
        Ok(())
    }

    pub(super) async fn unpin_links(&self) {
        self.run_links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        *self.run_routes.lock().await = RunRoutes::Off;
    }

    /// Whether a route of ours goes to `dst` (the kernel's main table, our protocol), read
    /// once per run ([`Netlink::run_routes`]). Within a run every operation has its own
    /// destination, so a reading taken earlier in the run still answers for `dst`.
    async fn owns_route_to(&self, dst: IpNet) -> Result<bool, NetlinkError> {
        let mut run = self.run_routes.lock().await;
        if let RunRoutes::Read(ours) = &*run {
            return Ok(ours.contains(&dst));
        }
        // Only the destination matters here, not the device (which a route naming a nexthop
        // object leaves out of the dump with `net.ipv4.nexthop_compat_mode=0`).
        let ours: std::collections::BTreeSet<IpNet> = self
            .routes()
            .await?
            .iter()
            .filter_map(observe::our_route_destination)
            .collect();
        let owned = ours.contains(&dst);
        if matches!(*run, RunRoutes::Unread) {
            *run = RunRoutes::Read(ours);
        }
        Ok(owned)
    }

    /// The link named `name`, `None` when there is none.
    pub(super) async fn find_link(
        &self,
        name: &str,
    ) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        let found: Result<Vec<LinkMessage>, _> = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_collect()
            .await;
        match found {
            Ok(links) => Ok(links.into_iter().next()),
            Err(rtnetlink::Error::NetlinkError(e)) if errno_of(&e) == Errno::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of a link the operation needs.
    pub(super) async fn require_link(&self, name: &str, role: Role) -> Result<u32, Failure> {
        self.link_index(name)
            .await?
            .ok_or_else(|| Failure::MissingLink {
                name: name.into(),
                role,
            })
    }

    /// Applies one operation. The links found so far are forgotten after one that changes a
    /// link or fails ([`Netlink::known_links`]).
    pub(super) async fn apply_op(&self, op: &Op) -> Result<(), Failure> {
        let applied = self.apply_by_family(op).await;
        if applied.is_err()
            || matches!(
                op,
                Op::CreateLink(_) | Op::DeleteLink(_) | Op::UpdateLink { .. }
            )
        {
            self.forget_links();
        }
        applied
    }

    /// Applies one operation, by family (one function each below).
    async fn apply_by_family(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::CreateLink(_) | Op::DeleteLink(_) | Op::UpdateLink { .. } => {
                self.apply_link(op).await
            }
            Op::AddAddress { .. } | Op::DeleteAddress { .. } => self.apply_address(op).await,
            Op::ReplaceRoute(_) | Op::DeleteRoute(_) => self.apply_route(op).await,
            Op::ReplaceNeighbour(_) | Op::DeleteNeighbour(_) => self.apply_neighbour(op).await,
            Op::ReplaceFdb(_) | Op::DeleteFdb(_) => self.apply_fdb(op).await,
            Op::MarkPort { .. } | Op::AttachPort { .. } => self.apply_port(op).await,
            Op::SetLooseRpFilter(_)
            | Op::EnableIpv6(_)
            | Op::SetProxyArp { .. }
            | Op::SetProxyNdp { .. } => self.apply_sysctl(op).await,
            Op::AddProxyNeighbour { .. } | Op::DeleteProxyNeighbour { .. } => {
                self.apply_proxy_neighbour(op).await
            }
            Op::ReplaceNat(_)
            | Op::DeleteNat
            | Op::ReplaceNat6(_)
            | Op::DeleteNat6
            | Op::ReplaceSnat(_)
            | Op::DeleteSnat
            | Op::ReplaceSnat6(_)
            | Op::DeleteSnat6 => Err(Failure::Refused(
                "NAT operations go through nft, not rtnetlink".into(),
            )),
        }
    }

    /// Links: create (bridge or VXLAN, with MTU and state), delete, update.
    pub(super) async fn apply_link(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::CreateLink(link) => {
                owned(&link.name)?;
                if link.name.len() > MAX_LINK_NAME {
                    return Err(Failure::Refused(format!(
                        "link names are at most {MAX_LINK_NAME} bytes; {} has {}",
                        link.name,
                        link.name.len()
                    )));
                }
                let message = match &link.kind {
                    LinkKind::Bridge => {
                        with_state(LinkMessageBuilder::<LinkBridge>::new(&link.name), link.up)
                            .mtu(link.mtu)
                            .build()
                    }
                    LinkKind::Vxlan {
                        vni,
                        port,
                        local,
                        underlay,
                        mac,
                    } => {
                        let dev = self
                            .require_link(underlay, Role::Underlay(link.name.clone()))
                            .await?;
                        let builder = LinkVxlan::new(&link.name, *vni).port(*port);
                        let builder = match local {
                            IpAddr::V4(a) => builder.local(*a),
                            IpAddr::V6(a) => builder.local6(*a),
                        };
                        let builder = builder
                            .dev(dev)
                            .learning(false)
                            .address(mac.0.to_vec())
                            .mtu(link.mtu);
                        with_state(builder, link.up).build()
                    }
                };
                self.handle.link().add(message).execute().await?;
                // The kernel quietly caps a new VXLAN device's MTU at its underlay's MTU minus
                // the VXLAN headers instead of refusing; say so rather than leave a link that
                // differs from the plan (a later MTU update would fail with EINVAL).
                if let Some(created) = self.find_link(&link.name).await?
                    && link_mtu(&created) != link.mtu
                {
                    return Err(Failure::Unexpected(format!(
                        "the kernel created {} with MTU {} instead of {} ({MTU_HINT})",
                        link.name,
                        link_mtu(&created),
                        link.mtu
                    )));
                }
            }
            Op::DeleteLink(name) => {
                owned(name)?;
                if let Some(index) = self.link_index(name).await? {
                    ignore_gone(
                        self.handle.link().del(index).execute().await,
                        &[Errno::ENODEV],
                    )?;
                }
            }
            Op::UpdateLink { name, mtu, up } => {
                owned(name)?;
                let index = self.require_link(name, Role::Link).await?;
                let message = with_state(LinkUnspec::new_with_index(index), *up)
                    .mtu(*mtu)
                    .build();
                self.handle.link().set(message).execute().await?;
            }
            other => {
                return Err(Failure::Refused(format!("{other}: not a link operation")));
            }
        }
        Ok(())
    }

    /// Addresses on the agent's links.
    pub(super) async fn apply_address(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::AddAddress { dev, addr } => {
                owned(dev)?;
                let index = self.require_link(dev, Role::Link).await?;
                let mut request = self
                    .handle
                    .address()
                    .add(index, addr.addr(), addr.prefix_len())
                    .replace();
                // IPv6 without duplicate address detection (`nodad`): the addresses are the
                // agent's own in its node's subnet (the gateway, the tunnel source), which no
                // one else is handed, and until DAD completes the kernel neither answers for
                // nor sends from them (pods could not resolve their gateway for up to 2 s
                // after the bridge got its first port; on the VXLAN device DAD was seen never
                // to complete).
                if addr.addr().is_ipv6() {
                    let message = request.message_mut();
                    message.header.flags |= AddressHeaderFlags::Nodad;
                    message
                        .attributes
                        .push(AddressAttribute::Flags(AddressFlags::Nodad));
                }
                request.execute().await?;
            }
            Op::DeleteAddress { dev, addr } => {
                owned(dev)?;
                if let Some(index) = self.link_index(dev).await? {
                    let message = match addr {
                        IpNet::V4(addr) => AddressMessageBuilder::<Ipv4Addr>::new()
                            .index(index)
                            .address(addr.addr(), addr.prefix_len())
                            .build(),
                        IpNet::V6(addr) => AddressMessageBuilder::<Ipv6Addr>::new()
                            .index(index)
                            .address(addr.addr(), addr.prefix_len())
                            .build(),
                    };
                    ignore_gone(
                        self.handle.address().del(message).execute().await,
                        &[Errno::EADDRNOTAVAIL],
                    )?;
                }
            }
            other => {
                return Err(Failure::Refused(format!(
                    "{other}: not a address operation"
                )));
            }
        }
        Ok(())
    }

    /// Routes of protocol 249 in the main table (never over a foreign route). An IPv4 route
    /// via a gateway goes through a nexthop object of its own ([`super::nexthop`]).
    pub(super) async fn apply_route(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::ReplaceRoute(route) => {
                let index = self.require_link(&route.dev, Role::Link).await?;
                if let (IpNet::V4(dst), Some(IpAddr::V4(gateway))) = (route.dst, route.gateway)
                    && self.nexthops.enabled()
                {
                    match self.replace_via_nexthop(route, dst, gateway, index).await {
                        Err(Failure::Kernel(e)) if self.nexthops.refused(&e) => {}
                        done => return done,
                    }
                }
                self.add_or_replace_route(route, route_message(route, index, false))
                    .await?;
                // A route that went through an object of ours no longer does.
                if let IpNet::V4(dst) = route.dst
                    && let Some(id) = self.nexthops.forget(dst)
                {
                    ignore_gone(self.nexthops.delete(id).await, &[Errno::ENOENT])?;
                }
            }
            Op::DeleteRoute(route) => {
                // The route first, then its object: deleting the object would take the route
                // with it, but silently (no RTM_DELROUTE for `ip monitor route` and other
                // watchers of the table).
                if let IpNet::V4(dst) = route.dst
                    && let Some(id) = self.nexthops.forget(dst)
                {
                    let message = RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(dst.addr(), dst.prefix_len())
                        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
                        .scope(RouteScope::NoWhere)
                        .build();
                    ignore_gone(
                        self.handle.route().del(message).execute().await,
                        &[Errno::ESRCH],
                    )?;
                    return ignore_gone(self.nexthops.delete(id).await, &[Errno::ENOENT]);
                }
                if let Some(index) = self.link_index(&route.dev).await? {
                    let message = route_message(route, index, true);
                    ignore_gone(
                        self.handle.route().del(message).execute().await,
                        &[Errno::ESRCH],
                    )?;
                }
            }
            other => {
                return Err(Failure::Refused(format!("{other}: not a route operation")));
            }
        }
        Ok(())
    }

    /// Adds `message` (a route of ours to `route.dst`) exclusively, and replaces the route
    /// in its way only when that one is ours too.
    async fn add_or_replace_route(
        &self,
        route: &Route,
        message: RouteMessage,
    ) -> Result<(), Failure> {
        // Exclusive create first: the main table holds one route per destination and metric,
        // and `replace` would take over a foreign one. Only a route of ours in the way is
        // replaced.
        let added = self.handle.route().add(message.clone()).execute().await;
        match added {
            Err(rtnetlink::Error::NetlinkError(e)) if errno_of(&e) == Errno::EEXIST => {
                let ours = self
                    .owns_route_to(route.dst)
                    .await
                    .map_err(|e| Failure::Unexpected(format!("cannot read our routes: {e}")))?;
                if !ours {
                    return Err(Failure::Refused(format!(
                        "a route to {} that Causeway does not own (another protocol than {ROUTE_PROTOCOL}) is in the way, and Causeway never replaces foreign routes (ip route show {}): if this machine needs that route, the range cannot be a pod subnet here (use a PodNetwork cidr that does not include it); if it is stale, whoever added it can remove it",
                        route.dst, route.dst
                    )));
                }
                self.handle.route().add(message).replace().execute().await?;
            }
            other => other?,
        }
        Ok(())
    }

    /// An IPv4 route via `gateway`: its nexthop object set (made, or changed in place), then
    /// the route naming it. A new object whose route cannot be added is deleted again.
    async fn replace_via_nexthop(
        &self,
        route: &Route,
        dst: Ipv4Net,
        gateway: Ipv4Addr,
        index: u32,
    ) -> Result<(), Failure> {
        let (id, fresh) = match self.nexthops.id_for(dst) {
            Some(id) => {
                self.nexthops
                    .set(id, gateway, index, route.onlink, false)
                    .await?;
                (id, false)
            }
            None => (self.new_nexthop(gateway, index, route.onlink).await?, true),
        };
        let mut message = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        message.attributes.push(RouteAttribute::NhId(id));
        match self.add_or_replace_route(route, message).await {
            Ok(()) => {
                self.nexthops.remember(dst, id);
                Ok(())
            }
            Err(failure) => {
                if fresh {
                    // Best effort: a full observation deletes an object no route names.
                    let _ = self.nexthops.delete(id).await;
                }
                Err(failure)
            }
        }
    }

    /// A new nexthop object via `gateway`, at the first free id from the table's next one.
    async fn new_nexthop(
        &self,
        gateway: Ipv4Addr,
        index: u32,
        onlink: bool,
    ) -> Result<u32, Failure> {
        // An id taken by an object the table does not know (another program's, in our range)
        // is skipped; a few in a row mean something else is wrong.
        for _ in 0..16 {
            let id = self.nexthops.allocate();
            match self.nexthops.set(id, gateway, index, onlink, true).await {
                Err(rtnetlink::Error::NetlinkError(e)) if errno_of(&e) == Errno::EEXIST => {}
                done => return done.map(|()| id).map_err(Failure::Kernel),
            }
        }
        Err(Failure::Unexpected(format!(
            "16 nexthop ids in a row from {:#x} are taken (ip nexthop show): the agent's range is {:#x}..={:#x}",
            nexthop::FIRST_ID,
            nexthop::FIRST_ID,
            nexthop::LAST_ID
        )))
    }

    /// Permanent neighbour entries on the agent's links.
    pub(super) async fn apply_neighbour(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::ReplaceNeighbour(neighbour) => {
                owned(&neighbour.dev)?;
                let index = self.require_link(&neighbour.dev, Role::Link).await?;
                self.handle
                    .neighbours()
                    .add(index, neighbour.ip)
                    .link_layer_address(&neighbour.mac.0)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await?;
            }
            Op::DeleteNeighbour(neighbour) => {
                owned(&neighbour.dev)?;
                if let Some(index) = self.link_index(&neighbour.dev).await? {
                    let mut message = NeighbourMessage::default();
                    message.header.ifindex = index;
                    let destination = match neighbour.ip {
                        IpAddr::V4(ip) => {
                            message.header.family = AddressFamily::Inet;
                            NeighbourAddress::Inet(ip)
                        }
                        IpAddr::V6(ip) => {
                            message.header.family = AddressFamily::Inet6;
                            NeighbourAddress::Inet6(ip)
                        }
                    };
                    message
                        .attributes
                        .push(NeighbourAttribute::Destination(destination));
                    ignore_gone(
                        self.handle.neighbours().del(message).execute().await,
                        &[Errno::ENOENT],
                    )?;
                }
            }
            other => {
                return Err(Failure::Refused(format!(
                    "{other}: not a neighbour operation"
                )));
            }
        }
        Ok(())
    }

    /// FDB entries on the agent's VXLAN devices.
    pub(super) async fn apply_fdb(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::ReplaceFdb(entry) => {
                owned(&entry.dev)?;
                let link =
                    self.known_link(&entry.dev)
                        .await?
                        .ok_or_else(|| Failure::MissingLink {
                            name: entry.dev.to_string(),
                            role: Role::Link,
                        })?;
                // Any other device takes the request and quietly drops `dst` (a bridge adds
                // a local entry of its own), so the entry would never be observed.
                if !link.vxlan {
                    return Err(Failure::Refused(format!(
                        "{} is not a VXLAN device; FDB entries with a destination belong on one",
                        entry.dev
                    )));
                }
                let index = link.index;
                // `self` (NTF_SELF): the entry belongs to the VXLAN device's own table, which
                // is where `dst` means something.
                self.handle
                    .neighbours()
                    .add_bridge(index, &entry.mac.0)
                    .flags(NeighbourFlags::Own)
                    .state(NeighbourState::Permanent)
                    .destination(entry.dst)
                    .replace()
                    .execute()
                    .await?;
            }
            Op::DeleteFdb(entry) => {
                owned(&entry.dev)?;
                if let Some(index) = self.link_index(&entry.dev).await? {
                    let mut message = NeighbourMessage::default();
                    message.header.family = AddressFamily::Bridge;
                    message.header.ifindex = index;
                    message.header.flags = NeighbourFlags::Own;
                    message
                        .attributes
                        .push(NeighbourAttribute::LinkLayerAddress(entry.mac.0.to_vec()));
                    message
                        .attributes
                        .push(NeighbourAttribute::Destination(match entry.dst {
                            IpAddr::V4(a) => NeighbourAddress::Inet(a),
                            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
                        }));
                    ignore_gone(
                        self.handle.neighbours().del(message).execute().await,
                        &[Errno::ENOENT],
                    )?;
                }
            }
            other => {
                return Err(Failure::Refused(format!("{other}: not a fdb operation")));
            }
        }
        Ok(())
    }

    /// Pods' veths: the alias that marks them, and re-attaching them to their bridge.
    pub(super) async fn apply_port(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::MarkPort { port, bridge } | Op::AttachPort { port, bridge } => {
                owned(bridge)?;
                let bridge_index = self.require_link(bridge, Role::Link).await?;
                // Only a pod's veth on this bridge, or marked for it, is ever touched.
                let link = self
                    .find_link(port)
                    .await?
                    .ok_or_else(|| Failure::MissingLink {
                        name: port.clone(),
                        role: Role::Link,
                    })?;
                let ours = BTreeMap::from([(bridge_index, bridge.clone())]);
                let links = BTreeMap::from([(
                    bridge.clone(),
                    Link {
                        name: bridge.clone(),
                        kind: LinkKind::Bridge,
                        mtu: 0,
                        up: true,
                    },
                )]);
                let found = parse_port(&link, &links, &ours);
                if !found.is_some_and(|p| {
                    p.master.as_ref() == Some(bridge) || p.belongs_to.as_ref() == Some(bridge)
                }) {
                    return Err(Failure::Refused(format!(
                        "{port} is not a pod's veth on {bridge} or marked for it"
                    )));
                }
                let message = LinkUnspec::new_with_index(link.header.index);
                let message = match op {
                    Op::MarkPort { .. } => message.alias(format!("{PORT_ALIAS_PREFIX}{bridge}")),
                    _ => message.controller(bridge_index),
                };
                self.handle.link().set(message.build()).execute().await?;
            }
            other => {
                return Err(Failure::Refused(format!("{other}: not a port operation")));
            }
        }
        Ok(())
    }

    /// Proxy ARP or NDP on `dev`: answering at once (`proxy_delay` 0) while ours, and the
    /// kernel's default delay back when leaving; `paths` are the delay's and the switch's.
    async fn set_proxy(
        &self,
        dev: &str,
        on: bool,
        (delay, switch): (std::path::PathBuf, std::path::PathBuf),
    ) -> Result<(), Failure> {
        self.require_link(dev, Role::Link).await?;
        for (path, value) in [
            (delay, if on { "0" } else { DEFAULT_PROXY_DELAY }),
            (switch, if on { "1" } else { "0" }),
        ] {
            self.write_sysctl(&path, value)
                .await
                .map_err(|e| Failure::Refused(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// Sysctls: loose rp_filter and IPv6 on the agent's devices, proxy ARP and NDP in Flat
    /// mode.
    pub(super) async fn apply_sysctl(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::SetLooseRpFilter(dev) => {
                owned(dev)?;
                self.require_link(dev, Role::Link).await?;
                let path = self.sysctl.rp_filter(dev);
                self.write_sysctl(&path, "2")
                    .await
                    .map_err(|e| Failure::Refused(format!("{}: {e}", path.display())))?;
            }
            Op::EnableIpv6(dev) => {
                owned(dev)?;
                self.require_link(dev, Role::Link).await?;
                let path = self.sysctl.disable_ipv6(dev);
                self.write_sysctl(&path, "0").await.map_err(|e| {
                    Failure::Refused(if e.kind() == io::ErrorKind::NotFound {
                        format!(
                            "{} does not exist: this kernel has no IPv6 (booted with ipv6.disable=1?), which a dual-stack network needs on every node; boot the node with IPv6, or keep the network IPv4-only (no secondaryCidr)",
                            path.display()
                        )
                    } else {
                        format!("{}: {e}", path.display())
                    })
                })?;
            }
            Op::SetProxyArp { dev, on } => {
                // Linux delays proxy replies by up to `proxy_delay` (0.8 s by default), which
                // every first contact with a pod would wait for.
                let paths = (self.sysctl.proxy_delay(dev), self.sysctl.proxy_arp(dev));
                self.set_proxy(dev, *on, paths).await?;
            }
            Op::SetProxyNdp { dev, on } => {
                // As for proxy ARP: the kernel holds proxy answers to multicast solicitations
                // back by up to `proxy_delay` (0.8 s by default).
                let paths = (self.sysctl.proxy_delay6(dev), self.sysctl.proxy_ndp(dev));
                self.set_proxy(dev, *on, paths).await?;
            }
            other => {
                return Err(Failure::Refused(format!("{other}: not a sysctl operation")));
            }
        }
        Ok(())
    }

    /// Proxy NDP entries (dual-stack Flat), on the underlay: added with the agent's mark
    /// (protocol [`ROUTE_PROTOCOL`]), deleted only when they carry it.
    pub(super) async fn apply_proxy_neighbour(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::AddProxyNeighbour { dev, ip } => {
                let index = self.require_link(dev, Role::Link).await?;
                let mut request = self
                    .handle
                    .neighbours()
                    .add(index, IpAddr::V6(*ip))
                    .flags(NeighbourFlags::Proxy)
                    .replace();
                request
                    .message_mut()
                    .attributes
                    .push(NeighbourAttribute::Protocol(RouteProtocol::Other(
                        ROUTE_PROTOCOL,
                    )));
                request.execute().await?;
            }
            Op::DeleteProxyNeighbour { dev, ip } => {
                let Some(index) = self.link_index(dev).await? else {
                    return Ok(());
                };
                let links = self
                    .links()
                    .await
                    .map_err(|e| Failure::Refused(e.to_string()))?;
                let names: BTreeMap<u32, &str> = links
                    .iter()
                    .filter_map(|(i, l)| Some((*i, super::observe::link_name(l)?)))
                    .collect();
                let ours = self
                    .proxy_neighbours(&names)
                    .await
                    .map_err(|e| Failure::Refused(e.to_string()))?;
                if !ours.iter().any(|(d, a)| d == dev && a == ip) {
                    // Gone already, or someone else's (no mark): either way not ours to delete.
                    return Ok(());
                }
                let mut message = NeighbourMessage::default();
                message.header.family = AddressFamily::Inet6;
                message.header.ifindex = index;
                message.header.flags = NeighbourFlags::Proxy;
                message
                    .attributes
                    .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                        *ip,
                    )));
                ignore_gone(
                    self.handle.neighbours().del(message).execute().await,
                    &[Errno::ENOENT],
                )?;
            }
            other => {
                return Err(Failure::Refused(format!(
                    "{other}: not a proxy neighbour operation"
                )));
            }
        }
        Ok(())
    }
}

/// Which role a missing link had in an operation.
#[derive(Debug)]
pub(super) enum Role {
    /// The link the operation is about.
    Link,
    /// The underlay of the named VXLAN device.
    Underlay(String),
}

/// Why one operation failed, before it is put into words.
#[derive(Debug)]
pub(super) enum Failure {
    Kernel(rtnetlink::Error),
    MissingLink {
        name: String,
        role: Role,
    },
    Refused(String),
    /// The kernel accepted the request but did something else.
    Unexpected(String),
}

impl From<rtnetlink::Error> for Failure {
    fn from(error: rtnetlink::Error) -> Self {
        Failure::Kernel(error)
    }
}

impl Failure {
    pub(super) fn describe(&self, op: &Op) -> String {
        match self {
            Failure::Kernel(error) => {
                let mut text = describe_error(error);
                if let rtnetlink::Error::NetlinkError(message) = error
                    && let Some(hint) = hint(
                        errno_of(message),
                        op,
                        extack_text(&message.header).is_some(),
                    )
                {
                    text = format!("{text} ({hint})");
                }
                text
            }
            Failure::MissingLink { name, role } => match role {
                Role::Link => format!("No such device (no link named {name})"),
                Role::Underlay(vxlan) => {
                    format!("No such device (no link named {name}, the underlay of {vxlan})")
                }
            },
            Failure::Refused(reason) => format!("refused: {reason}"),
            Failure::Unexpected(what) => what.clone(),
        }
    }
}

/// Refuses to change links the agent does not own.
pub(super) fn owned(name: &str) -> Result<(), Failure> {
    if name.starts_with(DEVICE_PREFIX) {
        Ok(())
    } else {
        Err(Failure::Refused(format!(
            "{name} is not the agent's (its links are named {DEVICE_PREFIX}*)"
        )))
    }
}

/// Treats "already gone" answers to a delete as success.
pub(super) fn ignore_gone(
    result: Result<(), rtnetlink::Error>,
    gone: &[Errno],
) -> Result<(), Failure> {
    match result {
        Err(rtnetlink::Error::NetlinkError(e)) if gone.contains(&errno_of(&e)) => {
            debug!(errno = %errno_of(&e), "already gone");
            Ok(())
        }
        other => Ok(other?),
    }
}

pub(super) fn with_state<T>(builder: LinkMessageBuilder<T>, up: bool) -> LinkMessageBuilder<T> {
    if up { builder.up() } else { builder.down() }
}

/// A route request with our protocol. For deletes the scope is "nowhere" (match any), as
/// `ip route del` sends; the protocol still has to match, so only our routes go.
/// The kernel's default `proxy_delay` (in jiffies of USER_HZ, 0.8 s).
pub(super) const DEFAULT_PROXY_DELAY: &str = "80";

pub(super) fn route_message(route: &Route, oif: u32, delete: bool) -> RouteMessage {
    // The model keeps a gateway in its destination's family; one of another family is left
    // out (and the kernel answers for the device route it then is).
    match route.dst {
        IpNet::V4(dst) => {
            let builder = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len());
            let builder = match route.gateway {
                Some(IpAddr::V4(gateway)) => builder.gateway(gateway),
                _ => builder,
            };
            finish_route(builder, route, oif, delete)
        }
        IpNet::V6(dst) => {
            let builder = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(dst.addr(), dst.prefix_len());
            let builder = match route.gateway {
                Some(IpAddr::V6(gateway)) => builder.gateway(gateway),
                _ => builder,
            };
            finish_route(builder, route, oif, delete)
        }
    }
}

/// The family-independent part of [`route_message`].
fn finish_route<T>(
    builder: RouteMessageBuilder<T>,
    route: &Route,
    oif: u32,
    delete: bool,
) -> RouteMessage {
    let mut builder = builder
        .output_interface(oif)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    if route.gateway.is_none() {
        // A device route is scope link, as `ip route add PREFIX dev DEV` makes it.
        builder = builder.scope(RouteScope::Link);
    }
    if route.onlink {
        builder = builder.onlink();
    }
    if delete {
        builder = builder.scope(RouteScope::NoWhere);
    }
    builder.build()
}

pub(super) fn errno_of(message: &ErrorMessage) -> Errno {
    Errno::from_raw(message.raw_code().saturating_abs())
}

/// An rtnetlink error in words: the errno text, and the kernel's own explanation if it sent
/// one (`Invalid argument: Invalid prefix for given prefix length`).
pub(super) fn describe_error(error: &rtnetlink::Error) -> String {
    match error {
        rtnetlink::Error::NetlinkError(message) => {
            let code = message.raw_code().saturating_abs();
            let text = io::Error::from_raw_os_error(code).to_string();
            let text = text
                .strip_suffix(&format!(" (os error {code})"))
                .unwrap_or(&text)
                .to_owned();
            match extack_text(&message.header) {
                Some(kernel) => format!("{text}: {kernel}"),
                None => text,
            }
        }
        other => other.to_string(),
    }
}

/// The `NLMSGERR_ATTR_MSG` text of an error's payload (after the error code): the echoed
/// request header (capped acks), then attributes.
pub(super) fn extack_text(payload: &[u8]) -> Option<String> {
    let mut rest = payload.get(NLMSG_HEADER_LEN..)?;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let value = &rest[4..len];
            let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
            let text = String::from_utf8_lossy(&value[..end]).trim().to_owned();
            return (!text.is_empty()).then_some(text);
        }
        rest = rest.get(len.next_multiple_of(4).min(rest.len())..)?;
    }
    None
}

/// Advice for the usual cause of an error, in the context of the operation (`explained`:
/// the kernel sent its own text, which may name a different cause).
pub(super) fn hint(errno: Errno, op: &Op, explained: bool) -> Option<String> {
    let dev = match op {
        Op::CreateLink(link) => Some(link.name.as_str()),
        Op::DeleteLink(name) | Op::UpdateLink { name, .. } => Some(name.as_str()),
        Op::AddAddress { dev, .. } | Op::DeleteAddress { dev, .. } => Some(dev.as_str()),
        Op::ReplaceRoute(r) | Op::DeleteRoute(r) => Some(r.dev.as_str()),
        Op::ReplaceNeighbour(n) | Op::DeleteNeighbour(n) => Some(n.dev.as_str()),
        Op::ReplaceFdb(f) | Op::DeleteFdb(f) => Some(f.dev.as_str()),
        Op::ReplaceNat(_)
        | Op::DeleteNat
        | Op::ReplaceNat6(_)
        | Op::DeleteNat6
        | Op::ReplaceSnat(_)
        | Op::DeleteSnat
        | Op::ReplaceSnat6(_)
        | Op::DeleteSnat6 => None,
        Op::SetProxyArp { dev, .. }
        | Op::SetProxyNdp { dev, .. }
        | Op::AddProxyNeighbour { dev, .. }
        | Op::DeleteProxyNeighbour { dev, .. }
        | Op::SetLooseRpFilter(dev)
        | Op::EnableIpv6(dev) => Some(dev.as_str()),
        Op::MarkPort { port, .. } | Op::AttachPort { port, .. } => Some(port.as_str()),
    };
    Some(match (errno, op) {
        // The kernel's text for an IPv6 address on a link without IPv6 is "IPv6 is disabled
        // on this device", with EACCES: not a matter of privileges.
        (
            Errno::EPERM | Errno::EACCES,
            Op::AddAddress {
                dev,
                addr: IpNet::V6(_),
            },
        ) => format!(
            "a dual-stack network needs IPv6 on {dev}: the agent turns it on for its own links (net.ipv6.conf.{dev}.disable_ipv6=0) before adding IPv6 addresses, so something on the node turned it off again"
        ),
        (Errno::EPERM | Errno::EACCES, _) => {
            "the agent needs root or CAP_NET_ADMIN in this network namespace".into()
        }
        (Errno::EOPNOTSUPP, Op::CreateLink(link)) => match link.kind {
            LinkKind::Vxlan { .. } => "is the vxlan kernel module loaded?".into(),
            LinkKind::Bridge => "is the bridge kernel module loaded?".into(),
        },
        (Errno::EOPNOTSUPP, Op::ReplaceFdb(f) | Op::DeleteFdb(f)) => {
            format!("is {} a VXLAN device?", f.dev)
        }
        // A clashing name comes without text; a clashing VXLAN (same VNI, port and local
        // address) comes with "A VXLAN device with the specified VNI already exists".
        (Errno::EEXIST, Op::CreateLink(link)) if !explained => {
            format!("a link named {} already exists", link.name)
        }
        (Errno::EEXIST, Op::CreateLink(_)) => return None,
        (Errno::EEXIST, _) => "it already exists".into(),
        (Errno::ENODEV, _) => format!("no link named {}", dev?),
        (Errno::EINVAL, Op::UpdateLink { mtu, .. }) => {
            format!("is MTU {mtu} possible? {MTU_HINT}, and any link's at least 68")
        }
        (Errno::ENETUNREACH, Op::ReplaceRoute(r)) => match r.gateway {
            Some(gateway) if !r.onlink => {
                format!(
                    "{gateway} is not in a subnet of {}; should the route be onlink?",
                    r.dev
                )
            }
            _ => return None,
        },
        _ => return None,
    })
}
