//! The real [`Dataplane`]: reads and changes the kernel's links, addresses, routes, neighbours
//! and VXLAN FDB entries over rtnetlink, and its NAT table through [`crate::nat::Nft`] (the one
//! object netfilter keeps outside rtnetlink). This is the only module that changes the kernel; it
//! sits at the end of the loop (plan → observe → diff → **apply**) and at the start of the
//! next one (**observe**).
//!
//! Ownership is enforced here as well as in the diff, so a bug upstream cannot touch what the
//! agent does not own:
//! - [`Netlink::observe`] only reports links named with [`DEVICE_PREFIX`], their IPv4
//!   addresses, permanent IPv4 neighbours and permanent FDB entries on them, and IPv4 routes of
//!   the main table with protocol [`ROUTE_PROTOCOL`] (on any device: direct routes to on-link
//!   peers use the underlay);
//! - [`Netlink::apply`] refuses link, address, neighbour and FDB operations on links without
//!   the prefix, and installs and deletes routes only with [`ROUTE_PROTOCOL`] (the kernel
//!   matches the protocol on delete, so a foreign route to the same destination survives).
//!   The main table holds one route per destination and metric: a route is created
//!   exclusively, and replaced only when the one in the way is the agent's, so a foreign route
//!   with the same destination and metric 0 is never taken over (the operation fails, naming
//!   it).
//!
//! Writes are idempotent: routes, neighbours, FDB entries and addresses use `NLM_F_REPLACE`,
//! and deleting something that is already gone succeeds (the goal is reached).
//!
//! Kernel errors become [`ApplyError`]s that name the operation and carry a hint where the
//! cause is usually the same (`EOPNOTSUPP` creating a VXLAN: the module is missing), plus the
//! kernel's own extended-ack text when it sends one. Two requests the kernel accepts but gets
//! wrong fail here instead: an FDB entry on a non-VXLAN device (the kernel drops `dst`) and a
//! VXLAN MTU above the underlay's minus 50 (the kernel caps it silently on creation).
//!
//! Each operation is a few netlink requests (a link-name lookup, the change, for a new link a
//! read-back); rtnetlink sends one message per request, and operations are applied one at a
//! time. That is plenty for a few objects per peer; batching would need `netlink-proto`
//! directly.
//!
//! In a named namespace ([`Netlink::in_netns`]) the socket is opened on a short-lived thread
//! that entered the namespace; the socket stays bound to that namespace while the runtime's
//! threads never switch.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use netlink_packet_core::ErrorMessage;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{AsyncSocket, TokioSocket};
use nix::errno::Errno;
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVxlan,
    RouteMessageBuilder,
};
use tracing::{debug, instrument};

use crate::model::{
    Address, ApplyError, DEVICE_PREFIX, Dataplane, Fdb, Link, LinkKind, MAX_LINK_NAME, Mac,
    NAT_TABLE, Neighbour, Op, PORT_ALIAS_PREFIX, Port, ROUTE_PROTOCOL, Route, SNAT_TABLE, State,
};
use crate::nat::{self, Nft};
use crate::netns::{self, NetnsError};
use crate::sysctl::SysctlDir;

/// `NLMSGERR_ATTR_MSG`: the extended-ack attribute holding the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Why the kernel refuses or caps an MTU, usually.
const MTU_HINT: &str =
    "a VXLAN device's MTU is at most its underlay's MTU minus 50 bytes of VXLAN headers";

/// Length of a netlink message header (`struct nlmsghdr`).
const NLMSG_HEADER_LEN: usize = 16;

/// The link that carries this node's tunnel traffic (one model for the plan and netlink).
pub use crate::model::{ForeignRoutes, Underlay};

/// Why opening a netlink connection or reading the kernel's state failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink needs a tokio runtime; call this from inside one")]
    NoRuntime,
    #[error(transparent)]
    Namespace(#[from] NetnsError),
    #[error("cannot open a netlink socket in {netns}: {error}")]
    Socket { netns: String, error: io::Error },
    #[error("cannot list {what} in {netns}: {reason}")]
    Dump {
        netns: String,
        what: &'static str,
        reason: String,
    },
    #[error(
        "no interface of this node has {addr}, the NodeSubnet's spec.nodeAddress (the Node's InternalIP): is the agent on the right node, and is the address still configured (ip -4 addr)?"
    )]
    NoInterfaceHasAddress { addr: Ipv4Addr },
    #[error("cannot read {}: {error}", path.display())]
    Sysctl { path: PathBuf, error: io::Error },
}

/// The kernel's dataplane over rtnetlink, in the current or a named network namespace.
#[derive(Debug)]
pub struct Netlink {
    handle: Handle,
    /// Named namespace the socket lives in; `None` for the process's own.
    netns: Option<String>,
    /// Link indexes resolved once for a run of pipelined operations, which never change links
    /// (see [`Dataplane::apply_all`]); empty otherwise.
    run_links: std::sync::Mutex<BTreeMap<String, Option<u32>>>,
    /// Where the namespace's kernel parameters are read and written (`--sysctl-dir`).
    sysctl: SysctlDir,
}

impl Netlink {
    /// Connects to the kernel in the caller's network namespace (a DaemonSet pod with
    /// `hostNetwork: true` is in the node's). Call inside a tokio runtime: the connection runs
    /// as a task on it.
    pub async fn connect() -> Result<Self, NetlinkError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NetlinkError::NoRuntime);
        }
        let socket = open_socket().map_err(|error| NetlinkError::Socket {
            netns: netns::describe(None),
            error,
        })?;
        Ok(Self::start(socket, None))
    }

    /// Connects to the kernel in the named network namespace `/run/netns/NAME` (tests,
    /// `--netns`). The socket is opened on a short-lived thread that enters the namespace and
    /// then ends, so no runtime thread ever changes namespace.
    pub async fn in_netns(name: &str) -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let netns = netns::describe(Some(name));
        let socket = netns::run_in(name, move || {
            // Registers the socket with the caller's runtime; only the socket's creation needs
            // this thread's namespace.
            let _runtime = runtime.enter();
            open_socket()
        })
        .await?
        .map_err(|error| NetlinkError::Socket { netns, error })?;
        Ok(Self::start(socket, Some(name.to_owned())))
    }

    /// Reads and writes kernel parameters under `dir` instead of `/proc/sys` (the chart mounts
    /// the host's `/proc/sys/net` at `/host/proc/sys/net`: [`crate::sysctl`]).
    #[must_use]
    pub fn with_sysctl_dir(mut self, dir: SysctlDir) -> Self {
        self.sysctl = dir;
        self
    }

    /// Turns IPv4 forwarding on in this namespace (pods reach other nodes through the node),
    /// unless it already is.
    ///
    /// # Errors
    /// A sentence naming the file and the likely cause.
    pub async fn enable_forwarding(&self) -> Result<(), String> {
        let path = self.sysctl.ip_forward();
        if self.read_sysctl(&path).await.is_ok_and(|v| v.trim() == "1") {
            return Ok(());
        }
        self.write_sysctl(&path, "1").await.map_err(|e| {
            format!(
                "cannot enable IPv4 forwarding ({}): {e}; the agent needs CAP_NET_ADMIN and a writable {} (--sysctl-dir)",
                path.display(),
                self.sysctl.root().join("net").display()
            )
        })
    }

    /// Reads a kernel parameter file (under `--sysctl-dir`) in the agent's namespace.
    async fn read_sysctl(&self, path: &std::path::Path) -> io::Result<String> {
        let path = path.to_owned();
        netns::run_io(self.netns.as_deref(), move || {
            std::fs::read_to_string(&path)
        })
        .await
    }

    /// Writes a kernel parameter file (under `--sysctl-dir`) in the agent's namespace.
    /// Whether the sysctl at `path` holds `value`.
    async fn sysctl_is(&self, path: std::path::PathBuf, value: &str) -> Result<bool, NetlinkError> {
        match self.read_sysctl(&path).await {
            Ok(v) => Ok(v.trim() == value),
            Err(error) => Err(NetlinkError::Sysctl { path, error }),
        }
    }

    async fn write_sysctl(&self, path: &std::path::Path, value: &'static str) -> io::Result<()> {
        let path = path.to_owned();
        netns::run_io(self.netns.as_deref(), move || std::fs::write(&path, value)).await
    }

    /// `nft` in the same namespace: the NAT table is the one kernel object not reached over
    /// rtnetlink.
    fn nft(&self) -> Nft {
        Nft::new(self.netns.clone())
    }

    fn start(socket: TokioSocket, netns: Option<String>) -> Self {
        let (connection, handle, _unsolicited) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Self {
            handle,
            netns,
            run_links: std::sync::Mutex::new(BTreeMap::new()),
            sysctl: SysctlDir::default(),
        }
    }

    /// The link holding IPv4 address `addr`: the underlay for VXLAN, with the subnet that
    /// decides which peers are on-link.
    pub async fn underlay_for(&mut self, addr: Ipv4Addr) -> Result<Underlay, NetlinkError> {
        let links = self.links().await?;
        for message in self.addresses().await? {
            let Some((local, prefix_len)) = ipv4_of(&message) else {
                continue;
            };
            if local != addr {
                continue;
            }
            let Some(link) = links.get(&message.header.index) else {
                continue;
            };
            let prefix = Ipv4Net::new(local, prefix_len)
                .map(|net| net.trunc())
                .unwrap_or_else(|_| Ipv4Net::from(local));
            return Ok(Underlay {
                name: link_name(link).unwrap_or_default().to_owned(),
                mtu: link_mtu(link),
                prefix,
            });
        }
        Err(NetlinkError::NoInterfaceHasAddress { addr })
    }

    fn dump_error(&self, what: &'static str) -> impl Fn(rtnetlink::Error) -> NetlinkError + '_ {
        move |error| NetlinkError::Dump {
            netns: netns::describe(self.netns.as_deref()),
            what,
            reason: describe_error(&error),
        }
    }

    /// All links, by index.
    async fn links(&self) -> Result<BTreeMap<u32, LinkMessage>, NetlinkError> {
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

    async fn addresses(&self) -> Result<Vec<AddressMessage>, NetlinkError> {
        let mut request = self.handle.address().get();
        request.message_mut().header.family = AddressFamily::Inet;
        request
            .execute()
            .try_collect()
            .await
            .map_err(self.dump_error("IPv4 addresses"))
    }

    async fn read_state(&self) -> Result<State, NetlinkError> {
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

        for message in self.addresses().await? {
            let (Some(dev), Some((ip, prefix_len))) =
                (ours.get(&message.header.index), ipv4_of(&message))
            else {
                continue;
            };
            if let Ok(addr) = Ipv4Net::new(ip, prefix_len) {
                state
                    .addresses
                    .insert((dev.clone(), addr), Address { addr });
            }
        }

        for message in self.routes().await? {
            if let Some(route) = parse_route(&message, &names) {
                state.routes.insert(route.dst, route);
            }
        }
        // Reverse-path filtering is read on the agent's own links only.
        let links: Vec<String> = state.links.keys().cloned().collect();
        for dev in links {
            if self.sysctl_is(self.sysctl.rp_filter(&dev), "2").await? {
                state.loose_rp_filter.insert(dev);
            }
        }
        // Proxy ARP is the agent's only where one of its device routes sits (Flat mode).
        let devices: std::collections::BTreeSet<String> = state
            .routes
            .values()
            .filter(|r| r.gateway.is_none())
            .map(|r| r.dev.clone())
            .collect();
        for dev in devices {
            if self.sysctl_is(self.sysctl.proxy_arp(&dev), "1").await? {
                state.proxy_arp.insert(dev);
            }
        }

        for message in self.neighbours(AddressFamily::Inet, None).await? {
            if let Some(neighbour) = parse_neighbour(&message, &ours) {
                state
                    .neighbours
                    .insert((neighbour.dev.clone(), neighbour.ip), neighbour);
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

    /// IPv4 routes of the main table with our protocol. The socket has strict checking on, so
    /// the kernel filters the dump; the filter is repeated in [`parse_route`] regardless.
    async fn routes(&self) -> Result<Vec<RouteMessage>, NetlinkError> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new()
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
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
        let all: Vec<RouteMessage> = self
            .handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(self.dump_error("routes"))?;
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
        Ok(foreign)
    }

    /// Neighbour (`Inet`) or FDB (`Bridge`) entries, optionally of one link only.
    async fn neighbours(
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

    /// The index of the link named `name`, `None` when there is none.
    async fn link_index(&self, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
        if let Some(index) = self
            .run_links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
        {
            return Ok(*index);
        }
        Ok(self.find_link(name).await?.map(|l| l.header.index))
    }

    /// Resolves the links a run of operations uses once, for [`Self::link_index`].
    async fn pin_links(&self, ops: &[Op]) -> Result<(), rtnetlink::Error> {
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
        Ok(())
    }

    fn unpin_links(&self) {
        self.run_links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// The link named `name`, `None` when there is none.
    async fn find_link(&self, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
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
    async fn require_link(&self, name: &str, role: Role) -> Result<u32, Failure> {
        self.link_index(name)
            .await?
            .ok_or_else(|| Failure::MissingLink {
                name: name.into(),
                role,
            })
    }

    /// Applies one operation, by family (one function each below).
    async fn apply_op(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::CreateLink(_) | Op::DeleteLink(_) | Op::UpdateLink { .. } => {
                self.apply_link(op).await
            }
            Op::AddAddress { .. } | Op::DeleteAddress { .. } => self.apply_address(op).await,
            Op::ReplaceRoute(_) | Op::DeleteRoute(_) => self.apply_route(op).await,
            Op::ReplaceNeighbour(_) | Op::DeleteNeighbour(_) => self.apply_neighbour(op).await,
            Op::ReplaceFdb(_) | Op::DeleteFdb(_) => self.apply_fdb(op).await,
            Op::MarkPort { .. } | Op::AttachPort { .. } => self.apply_port(op).await,
            Op::SetLooseRpFilter(_) | Op::SetProxyArp { .. } => self.apply_sysctl(op).await,
            Op::ReplaceNat(_) | Op::DeleteNat | Op::ReplaceSnat(_) | Op::DeleteSnat => Err(
                Failure::Refused("NAT operations go through nft, not rtnetlink".into()),
            ),
        }
    }

    /// Links: create (bridge or VXLAN, with MTU and state), delete, update.
    async fn apply_link(&self, op: &Op) -> Result<(), Failure> {
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
                        let builder = LinkVxlan::new(&link.name, *vni)
                            .port(*port)
                            .local(*local)
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
    async fn apply_address(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::AddAddress { dev, addr } => {
                owned(dev)?;
                let index = self.require_link(dev, Role::Link).await?;
                self.handle
                    .address()
                    .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
                    .replace()
                    .execute()
                    .await?;
            }
            Op::DeleteAddress { dev, addr } => {
                owned(dev)?;
                if let Some(index) = self.link_index(dev).await? {
                    let message = AddressMessageBuilder::<Ipv4Addr>::new()
                        .index(index)
                        .address(addr.addr(), addr.prefix_len())
                        .build();
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

    /// Routes of protocol 249 in the main table (never over a foreign route).
    async fn apply_route(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::ReplaceRoute(route) => {
                let index = self.require_link(&route.dev, Role::Link).await?;
                // Exclusive create first: the main table holds one route per destination and
                // metric, and `replace` would take over a foreign one. Only a route of ours
                // in the way is replaced.
                let added = self
                    .handle
                    .route()
                    .add(route_message(route, index, false))
                    .execute()
                    .await;
                match added {
                    Err(rtnetlink::Error::NetlinkError(e)) if errno_of(&e) == Errno::EEXIST => {
                        let ours = self.routes().await.map_err(|e| {
                            Failure::Unexpected(format!("cannot read our routes: {e}"))
                        })?;
                        // Only the destination matters here, not the device's name.
                        let names: BTreeMap<u32, &str> = ours
                            .iter()
                            .flat_map(|m| &m.attributes)
                            .filter_map(|a| match a {
                                RouteAttribute::Oif(index) => Some((*index, "")),
                                _ => None,
                            })
                            .collect();
                        if !ours
                            .iter()
                            .filter_map(|m| parse_route(m, &names))
                            .any(|r| r.dst == route.dst)
                        {
                            return Err(Failure::Refused(format!(
                                "a route to {} that Causeway does not own (another protocol than {ROUTE_PROTOCOL}) is in the way; Causeway never replaces foreign routes: remove it (ip route show {}) or give this node another subnet",
                                route.dst, route.dst
                            )));
                        }
                        self.handle
                            .route()
                            .add(route_message(route, index, false))
                            .replace()
                            .execute()
                            .await?;
                    }
                    other => other?,
                }
            }
            Op::DeleteRoute(route) => {
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

    /// Permanent neighbour entries on the agent's links.
    async fn apply_neighbour(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::ReplaceNeighbour(neighbour) => {
                owned(&neighbour.dev)?;
                let index = self.require_link(&neighbour.dev, Role::Link).await?;
                self.handle
                    .neighbours()
                    .add(index, IpAddr::V4(neighbour.ip))
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
                    message.header.family = AddressFamily::Inet;
                    message.header.ifindex = index;
                    message.attributes.push(NeighbourAttribute::Destination(
                        NeighbourAddress::Inet(neighbour.ip),
                    ));
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
    async fn apply_fdb(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::ReplaceFdb(entry) => {
                owned(&entry.dev)?;
                let link =
                    self.find_link(&entry.dev)
                        .await?
                        .ok_or_else(|| Failure::MissingLink {
                            name: entry.dev.clone(),
                            role: Role::Link,
                        })?;
                // Any other device takes the request and quietly drops `dst` (a bridge adds
                // a local entry of its own), so the entry would never be observed.
                if link_kind(&link) != Some(&InfoKind::Vxlan) {
                    return Err(Failure::Refused(format!(
                        "{} is not a VXLAN device; FDB entries with a destination belong on one",
                        entry.dev
                    )));
                }
                let index = link.header.index;
                // `self` (NTF_SELF): the entry belongs to the VXLAN device's own table, which
                // is where `dst` means something.
                self.handle
                    .neighbours()
                    .add_bridge(index, &entry.mac.0)
                    .flags(NeighbourFlags::Own)
                    .state(NeighbourState::Permanent)
                    .destination(IpAddr::V4(entry.dst))
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
                    message.attributes.push(NeighbourAttribute::Destination(
                        NeighbourAddress::Inet(entry.dst),
                    ));
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
    async fn apply_port(&self, op: &Op) -> Result<(), Failure> {
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

    /// Sysctls: loose rp_filter on the agent's devices, proxy ARP in Flat mode.
    async fn apply_sysctl(&self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::SetLooseRpFilter(dev) => {
                owned(dev)?;
                self.require_link(dev, Role::Link).await?;
                let path = self.sysctl.rp_filter(dev);
                self.write_sysctl(&path, "2")
                    .await
                    .map_err(|e| Failure::Refused(format!("{}: {e}", path.display())))?;
            }
            Op::SetProxyArp { dev, on } => {
                self.require_link(dev, Role::Link).await?;
                // Linux delays proxy replies by up to `proxy_delay` (0.8 s by default), which
                // every first contact with a pod would wait for; answer at once while ours,
                // and put the kernel's default back when leaving.
                let delay = if *on { "0" } else { DEFAULT_PROXY_DELAY };
                let path = self.sysctl.proxy_delay(dev);
                self.write_sysctl(&path, delay)
                    .await
                    .map_err(|e| Failure::Refused(format!("{}: {e}", path.display())))?;
                let path = self.sysctl.proxy_arp(dev);
                self.write_sysctl(&path, if *on { "1" } else { "0" })
                    .await
                    .map_err(|e| Failure::Refused(format!("{}: {e}", path.display())))?;
            }

            other => {
                return Err(Failure::Refused(format!("{other}: not a sysctl operation")));
            }
        }
        Ok(())
    }
}

/// Requests of one run of independent operations in flight at once: the kernel answers them
/// in order on one socket, and pipelining hides the round trips (what makes `ip -batch` fast).
const PIPELINE: usize = 64;

impl Netlink {
    fn apply_error(op: &Op, failure: &Failure) -> ApplyError {
        ApplyError {
            op: op.to_string(),
            message: failure.describe(op),
        }
    }
}

/// The BridgeHosts VIP on the underlay, as the elector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipLink {
    /// The link is up with carrier (`LOWER_UP`): it can reach the segment.
    pub carrier: bool,
    /// The VIP is one of its addresses.
    pub holds_vip: bool,
}

/// The VIP outside the agent's own links: it sits on the underlay, so it is not part of
/// [`State`] (never observed by a pass, never removed by a diff). Only the BridgeHosts
/// elector ([`crate::elector`]) adds and removes it, always as a /32 with a lifetime, so the
/// kernel drops it by itself when the agent dies without removing it.
impl Netlink {
    /// Carrier of `dev` and whether `vip` is on it.
    pub async fn vip_link(&self, dev: &str, vip: Ipv4Addr) -> Result<VipLink, ApplyError> {
        let fail = |message: String| ApplyError {
            op: format!("read link {dev} and its addresses"),
            message,
        };
        let link = self
            .find_link(dev)
            .await
            .map_err(|e| fail(describe_error(&e)))?
            .ok_or_else(|| fail(format!("No such device (no link named {dev})")))?;
        let flags = link.header.flags;
        let carrier = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
        // This link's IPv4 addresses only: the elector asks ten times a second.
        let mut request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.header.index);
        request.message_mut().header.family = AddressFamily::Inet;
        let addresses: Vec<AddressMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| fail(describe_error(&e)))?;
        let holds_vip = addresses.iter().any(|a| {
            a.header.index == link.header.index && ipv4_of(a).map(|(ip, _)| ip) == Some(vip)
        });
        Ok(VipLink { carrier, holds_vip })
    }

    /// Adds `vip`/32 to `dev`, or refreshes it, valid for `lifetime_seconds` from now.
    pub async fn hold_vip(
        &self,
        dev: &str,
        vip: Ipv4Addr,
        lifetime_seconds: u32,
    ) -> Result<(), ApplyError> {
        let op = format!(
            "replace address {vip}/32 dev {dev} valid_lft {lifetime_seconds} preferred_lft {lifetime_seconds}"
        );
        let fail = |message: String| ApplyError {
            op: op.clone(),
            message,
        };
        let index = self
            .find_link(dev)
            .await
            .map_err(|e| fail(describe_error(&e)))?
            .ok_or_else(|| fail(format!("No such device (no link named {dev})")))?
            .header
            .index;
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V4(vip), 32)
            .replace();
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo({
                let mut info = netlink_packet_route::address::CacheInfo::default();
                info.ifa_preferred = lifetime_seconds;
                info.ifa_valid = lifetime_seconds;
                info
            }));
        request
            .execute()
            .await
            .map_err(|e| fail(describe_error(&e)))
    }

    /// Removes `vip`/32 from `dev` (gone already is fine).
    pub async fn drop_vip(&self, dev: &str, vip: Ipv4Addr) -> Result<(), ApplyError> {
        let op = format!("delete address {vip}/32 dev {dev}");
        let fail = |message: String| ApplyError {
            op: op.clone(),
            message,
        };
        let Some(link) = self
            .find_link(dev)
            .await
            .map_err(|e| fail(describe_error(&e)))?
        else {
            return Ok(());
        };
        let message = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(link.header.index)
            .address(vip, 32)
            .build();
        match self.handle.address().del(message).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if errno_of(&e) == Errno::EADDRNOTAVAIL => {
                Ok(())
            }
            other => other.map_err(|e| fail(describe_error(&e))),
        }
    }
}

impl Dataplane for Netlink {
    async fn underlay_for(&mut self, address: Ipv4Addr) -> Result<Underlay, String> {
        Netlink::underlay_for(self, address)
            .await
            .map_err(|e| e.to_string())
    }

    async fn foreign_routes(&mut self) -> Result<ForeignRoutes, String> {
        Netlink::foreign_routes(self)
            .await
            .map_err(|e| e.to_string())
    }

    async fn enable_forwarding(&mut self) -> Result<(), String> {
        Netlink::enable_forwarding(self).await
    }

    async fn observe(&mut self) -> Result<State, ApplyError> {
        let mut state = self.read_state().await.map_err(|error| ApplyError {
            op: "observe".into(),
            message: error.to_string(),
        })?;
        state.nat = self.nft().observe().await.map_err(|error| ApplyError {
            op: format!("nft list table ip {NAT_TABLE}"),
            message: error.to_string(),
        })?;
        state.snat = self
            .nft()
            .observe_snat()
            .await
            .map_err(|error| ApplyError {
                op: format!("nft list table ip {SNAT_TABLE}"),
                message: error.to_string(),
            })?;
        Ok(state)
    }

    #[instrument(skip_all, fields(%op))]
    async fn apply(&mut self, op: &Op) -> Result<(), ApplyError> {
        let nat = match op {
            Op::ReplaceNat(m) => Some(nat::replace_batch(m)),
            Op::DeleteNat => Some(nat::delete_batch()),
            Op::ReplaceSnat(g) => Some(nat::snat_replace_batch(g)),
            Op::DeleteSnat => Some(nat::snat_delete_batch()),
            _ => None,
        };
        if let Some(batch) = nat {
            return self.nft().apply(&batch).await.map_err(|error| ApplyError {
                op: op.to_string(),
                message: error.to_string(),
            });
        }
        self.apply_op(op)
            .await
            .map_err(|failure| Self::apply_error(op, &failure))
    }

    /// Runs of independent operations ([`Op::parallel_group`]) are pipelined, up to
    /// [`PIPELINE`] at a time; everything else is applied alone, in order. On a failure in a
    /// run, the rest of that run may have applied too; the next pass's diff sees exactly
    /// what did.
    async fn apply_all(&mut self, ops: &[Op]) -> Result<(), (usize, ApplyError)> {
        let mut start = 0;
        while start < ops.len() {
            let group = ops[start].parallel_group();
            let end = match group {
                None => start + 1,
                Some(g) => {
                    start
                        + ops[start..]
                            .iter()
                            .take_while(|op| op.parallel_group() == Some(g))
                            .count()
                }
            };
            if end - start == 1 {
                self.apply(&ops[start]).await.map_err(|e| (start, e))?;
            } else {
                let run = &ops[start..end];
                if let Err(e) = self.pin_links(run).await {
                    let failure = Failure::Kernel(e);
                    return Err((start, Self::apply_error(&ops[start], &failure)));
                }
                let this = &*self;
                let mut failures: Vec<(usize, ApplyError)> =
                    futures::stream::iter(ops[start..end].iter().enumerate())
                        .map(|(i, op)| async move {
                            this.apply_op(op)
                                .await
                                .map_err(|failure| (start + i, Self::apply_error(op, &failure)))
                        })
                        .buffer_unordered(PIPELINE)
                        .filter_map(|r| async move { r.err() })
                        .collect()
                        .await;
                self.unpin_links();
                failures.sort_by_key(|(i, _)| *i);
                if let Some(first) = failures.into_iter().next() {
                    return Err(first);
                }
            }
            start = end;
        }
        Ok(())
    }
}

/// Which role a missing link had in an operation.
#[derive(Debug)]
enum Role {
    /// The link the operation is about.
    Link,
    /// The underlay of the named VXLAN device.
    Underlay(String),
}

/// Why one operation failed, before it is put into words.
#[derive(Debug)]
enum Failure {
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
    fn describe(&self, op: &Op) -> String {
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
fn owned(name: &str) -> Result<(), Failure> {
    if name.starts_with(DEVICE_PREFIX) {
        Ok(())
    } else {
        Err(Failure::Refused(format!(
            "{name} is not the agent's (its links are named {DEVICE_PREFIX}*)"
        )))
    }
}

/// Treats "already gone" answers to a delete as success.
fn ignore_gone(result: Result<(), rtnetlink::Error>, gone: &[Errno]) -> Result<(), Failure> {
    match result {
        Err(rtnetlink::Error::NetlinkError(e)) if gone.contains(&errno_of(&e)) => {
            debug!(errno = %errno_of(&e), "already gone");
            Ok(())
        }
        other => Ok(other?),
    }
}

fn with_state<T>(builder: LinkMessageBuilder<T>, up: bool) -> LinkMessageBuilder<T> {
    if up { builder.up() } else { builder.down() }
}

/// A route request with our protocol. For deletes the scope is "nowhere" (match any), as
/// `ip route del` sends; the protocol still has to match, so only our routes go.
/// The kernel's default `proxy_delay` (in jiffies of USER_HZ, 0.8 s).
const DEFAULT_PROXY_DELAY: &str = "80";

fn route_message(route: &Route, oif: u32, delete: bool) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .output_interface(oif)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
    builder = match route.gateway {
        Some(gateway) => builder.gateway(gateway),
        // A device route is scope link, as `ip route add PREFIX dev DEV` makes it.
        None => builder.scope(RouteScope::Link),
    };
    if route.onlink {
        builder = builder.onlink();
    }
    if delete {
        builder = builder.scope(RouteScope::NoWhere);
    }
    builder.build()
}

fn link_name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

fn link_mtu(link: &LinkMessage) -> u32 {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(mtu) => Some(*mtu),
            _ => None,
        })
        .unwrap_or_default()
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    <[u8; 6]>::try_from(bytes).ok().map(Mac)
}

fn link_infos(link: &LinkMessage) -> &[LinkInfo] {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos.as_slice()),
            _ => None,
        })
        .unwrap_or_default()
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link_infos(link).iter().find_map(|i| match i {
        LinkInfo::Kind(kind) => Some(kind),
        _ => None,
    })
}

/// A pod's veth: a veth (never one of the agent's links) attached to one of the agent's
/// bridges (`ours`: index to name), or carrying the alias that marks it for one.
fn parse_port(
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
fn parse_link(message: &LinkMessage, names: &BTreeMap<u32, &str>) -> Option<Link> {
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
            let mut local = Ipv4Addr::UNSPECIFIED;
            let mut underlay = String::new();
            for attribute in data {
                match attribute {
                    InfoVxlan::Id(id) => vni = *id,
                    InfoVxlan::Port(p) => port = *p,
                    InfoVxlan::Local(addr) => local = *addr,
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
fn ipv4_of(message: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
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

/// One of our routes; `None` for anything else, including multipath routes (the agent never
/// makes them; a replace of the same destination overwrites one).
fn parse_route(message: &RouteMessage, names: &BTreeMap<u32, &str>) -> Option<Route> {
    let header = &message.header;
    let table = message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(header.table));
    if header.address_family != AddressFamily::Inet
        || header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
        || table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || header.kind != RouteType::Unicast
    {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let dev = names.get(&oif?)?;
    Some(Route {
        dst: Ipv4Net::new(dst, header.destination_prefix_length).ok()?,
        gateway,
        dev: (*dev).to_owned(),
        onlink: header.flags.contains(RouteFlags::Onlink),
    })
}

/// A permanent IPv4 neighbour on one of our links.
fn parse_neighbour(message: &NeighbourMessage, ours: &BTreeMap<u32, String>) -> Option<Neighbour> {
    let header = &message.header;
    if header.family != AddressFamily::Inet || header.state != NeighbourState::Permanent {
        return None;
    }
    let dev = ours.get(&header.ifindex)?;
    let mut ip = None;
    let mut mac = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) => ip = Some(*addr),
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = mac_of(bytes),
            _ => {}
        }
    }
    Some(Neighbour {
        dev: dev.clone(),
        ip: ip?,
        mac: mac?,
    })
}

/// A permanent unicast FDB entry with an IPv4 destination in one of our VXLAN devices' own
/// tables. Skipped: the all-zero default (flood) entries, entries a bridge reports for its
/// ports (`master`), learned or otherwise non-permanent ones.
fn parse_fdb(message: &NeighbourMessage, vxlans: &BTreeMap<u32, String>) -> Option<Fdb> {
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
                    .map(Ipv4Addr::from);
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
            _ => {}
        }
    }
    let mac = mac?;
    Some(Fdb {
        dev: dev.clone(),
        mac,
        dst: dst?,
    })
}

/// Opens a route-netlink socket in the calling thread's namespace, registered with the
/// current tokio runtime.
fn open_socket() -> io::Result<TokioSocket> {
    let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
    let inner = socket.socket_mut();
    // Strict checking makes the kernel filter dumps (routes by protocol and table, neighbours
    // by link) instead of ignoring the request's header.
    inner.set_netlink_get_strict_chk(true)?;
    // Extended acks carry the kernel's error text; capped acks echo only the request's header,
    // so that text sits right after it.
    inner.set_ext_ack(true)?;
    inner.set_cap_ack(true)?;
    Ok(socket)
}

fn errno_of(message: &ErrorMessage) -> Errno {
    Errno::from_raw(message.raw_code().saturating_abs())
}

/// An rtnetlink error in words: the errno text, and the kernel's own explanation if it sent
/// one (`Invalid argument: Invalid prefix for given prefix length`).
fn describe_error(error: &rtnetlink::Error) -> String {
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
fn extack_text(payload: &[u8]) -> Option<String> {
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
fn hint(errno: Errno, op: &Op, explained: bool) -> Option<String> {
    let dev = match op {
        Op::CreateLink(link) => Some(link.name.as_str()),
        Op::DeleteLink(name) | Op::UpdateLink { name, .. } => Some(name.as_str()),
        Op::AddAddress { dev, .. } | Op::DeleteAddress { dev, .. } => Some(dev.as_str()),
        Op::ReplaceRoute(r) | Op::DeleteRoute(r) => Some(r.dev.as_str()),
        Op::ReplaceNeighbour(n) | Op::DeleteNeighbour(n) => Some(n.dev.as_str()),
        Op::ReplaceFdb(f) | Op::DeleteFdb(f) => Some(f.dev.as_str()),
        Op::ReplaceNat(_) | Op::DeleteNat | Op::ReplaceSnat(_) | Op::DeleteSnat => None,
        Op::SetProxyArp { dev, .. } | Op::SetLooseRpFilter(dev) => Some(dev.as_str()),
        Op::MarkPort { port, .. } | Op::AttachPort { port, .. } => Some(port.as_str()),
    };
    Some(match (errno, op) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).expect("short");
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    #[test]
    fn the_kernels_error_text_is_read_after_the_echoed_header() {
        let mut payload = vec![0u8; NLMSG_HEADER_LEN];
        payload.extend(attribute(3, &[1, 2, 3, 4, 5]));
        payload.extend(attribute(
            NLMSGERR_ATTR_MSG,
            b"Invalid prefix for given prefix length\0",
        ));
        assert_eq!(
            extack_text(&payload).as_deref(),
            Some("Invalid prefix for given prefix length")
        );
    }

    #[test]
    fn errors_without_or_with_broken_extended_acks_have_no_kernel_text() {
        assert_eq!(extack_text(&[]), None);
        assert_eq!(extack_text(&[0; NLMSG_HEADER_LEN]), None);
        let mut broken = vec![0u8; NLMSG_HEADER_LEN];
        broken.extend([200, 0, 1, 0, b'x']);
        assert_eq!(extack_text(&broken), None);
    }

    #[test]
    fn hints_name_the_likely_cause() {
        let vxlan = Op::CreateLink(Link {
            name: "cw-vx1".into(),
            kind: LinkKind::Vxlan {
                vni: 1,
                port: 8472,
                local: Ipv4Addr::new(192, 168, 50, 11),
                underlay: "eth0".into(),
                mac: Mac([0x0e, 0, 0, 0, 0, 1]),
            },
            mtu: 1450,
            up: true,
        });
        assert_eq!(
            hint(Errno::EOPNOTSUPP, &vxlan, false).as_deref(),
            Some("is the vxlan kernel module loaded?")
        );
        assert_eq!(
            hint(Errno::EEXIST, &vxlan, false).as_deref(),
            Some("a link named cw-vx1 already exists")
        );
        assert_eq!(
            hint(Errno::EPERM, &Op::DeleteLink("cw-br0".into()), false).as_deref(),
            Some("the agent needs root or CAP_NET_ADMIN in this network namespace")
        );
        assert_eq!(
            hint(
                Errno::ENODEV,
                &Op::UpdateLink {
                    name: "cw-br0".into(),
                    mtu: 1450,
                    up: true
                },
                false
            )
            .as_deref(),
            Some("no link named cw-br0")
        );
        assert_eq!(
            hint(Errno::EINVAL, &Op::DeleteLink("cw-br0".into()), false),
            None
        );
    }

    #[test]
    fn only_prefixed_links_are_owned() {
        assert!(owned("cw-br0").is_ok());
        assert!(owned("eth0").is_err());
        assert!(owned("cw").is_err());
    }
}
