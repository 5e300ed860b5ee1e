//! The kernel objects the agent owns, as plain data: what [`crate::plan`] wants, what a
//! [`Dataplane`] observes, and the [`Op`]erations [`crate::diff`] derives between the two.
//!
//! Ownership marks, so the agent never touches what it did not create:
//! - every link's name starts with [`DEVICE_PREFIX`];
//! - every route carries protocol [`ROUTE_PROTOCOL`] (`ip route` shows `proto 249`), IPv4 and
//!   IPv6 alike;
//! - neighbour and FDB entries are only ever read and written on the agent's own links;
//! - NAT rules live in the nftables table [`NAT_TABLE`] (`ip causeway`, and `ip6 causeway` for
//!   a dual-stack network's IPv6 pods), which the agent replaces whole; other tables are never
//!   read or written;
//! - proxy ARP and proxy NDP are read and changed only on links that carry one of the agent's
//!   device routes (Flat mode's on-link routes for the network's ranges);
//! - proxy NDP entries (`ip -6 neigh add proxy ...`) carry protocol [`ROUTE_PROTOCOL`] too
//!   (`ip -6 neigh show proxy` prints `proto 249`): only those are read, and only those deleted;
//! - pods' host-side veths (created by the CNI `bridge` plugin, not by the agent) are read
//!   only when attached to one of the agent's bridges or carrying its alias
//!   ([`PORT_ALIAS_PREFIX`]), and only ever given that alias or re-attached to that bridge.
//!
//! Collections are ordered maps keyed by identity, so two states compare with `==`, print in
//! a stable order, and a diff is a merge of two sorted sequences.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Route protocol number on every route the agent installs (unassigned in
/// `/etc/iproute2/rt_protos`; Calico uses 80, BIRD 12). Routes with any other protocol are
/// never read as ours, never changed, never deleted.
pub const ROUTE_PROTOCOL: u8 = 249;

/// Prefix of every link the agent creates (`cw-br0`, `cw-vx1`). Links without it are never
/// changed or deleted. Link names are at most 15 bytes (IFNAMSIZ − 1).
pub const DEVICE_PREFIX: &str = "cw-";

/// The nftables table (family `ip`) holding the agent's outgoing-NAT rules.
pub const NAT_TABLE: &str = "causeway";

/// The nftables table holding the BridgeHosts SNAT rule (`snat: true`): family `ip` for IPv4
/// clients, and a table of the same name in family `ip6` for IPv6 clients.
pub const SNAT_TABLE: &str = "causeway-gateway";

/// Alias (`ip link set <veth> alias ...`) the agent gives each pod's host-side veth on one
/// of its bridges, followed by the bridge's name: it outlives the bridge, so a bridge deleted
/// and re-created gets its pods back ([`Op::AttachPort`]).
pub const PORT_ALIAS_PREFIX: &str = "causeway-pod-port:";

/// Longest Linux interface name.
pub const MAX_LINK_NAME: usize = 15;

/// A MAC address: the API's type (`causeway_crds::vtep::MacAddr`), one type for the
/// `vtepMac` the operator publishes and the kernel objects the agent programs.
pub use causeway_crds::vtep::MacAddr as Mac;

/// A link's name in the entries planned and observed per peer (routes, neighbours, FDB
/// entries): at most 15 bytes (`IFNAMSIZ`), so always held inline, with no allocation. At
/// 20,000 peers a plan, the kernel read and a first pass's operations hold 60,000 such
/// entries each, five names per peer.
pub type LinkName = compact_str::CompactString;

/// What kind of link, with the attributes the agent sets at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// The node bridge pods attach to (through the CNI `bridge` plugin).
    Bridge,
    /// A VXLAN device without learning: peers come from FDB entries the agent writes.
    Vxlan {
        vni: u32,
        /// UDP destination port.
        port: u16,
        /// This node's underlay address (the tunnel source), IPv4 or IPv6.
        local: IpAddr,
        /// Name of the underlay link carrying the tunnel.
        underlay: String,
        /// The MAC address the device gets (the NodeSubnet's `vtepMac`).
        mac: Mac,
    },
}

/// A link the agent owns. Changing a Vxlan's kind attributes means delete and re-create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub kind: LinkKind,
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
}

/// An IPv4 or IPv6 address on one of the agent's links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// The address with its prefix length (`10.244.1.1/24`, `fd00:10:244:1::1/64`).
    pub addr: IpNet,
}

/// A route in the main table with protocol [`ROUTE_PROTOCOL`], IPv4 or IPv6 (the gateway,
/// when set, has the destination's family).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    /// Next hop; `None` for a device route.
    pub gateway: Option<IpAddr>,
    /// Output link.
    pub dev: LinkName,
    /// `onlink`: the gateway is reachable on `dev` without a covering prefix (VXLAN).
    pub onlink: bool,
}

/// A pod's host-side veth: attached to one of the agent's bridges, or marked as belonging to
/// one. Observed only, never planned: pods come and go through the CNI plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// The agent's bridge it is attached to now, if any.
    pub master: Option<String>,
    /// The bridge its alias names ([`PORT_ALIAS_PREFIX`]), if it has been marked.
    pub belongs_to: Option<String>,
}

/// One ClientJoin client, as nodes program it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPeer {
    pub name: String,
    /// Its underlay address: the tunnel's endpoint.
    pub address: IpAddr,
    /// Its addresses inside the overlay (`overlayAddress`, and `secondaryOverlayAddress` on a
    /// dual-stack network).
    pub overlays: Vec<IpAddr>,
    pub mac: Mac,
}

/// The link holding the node's address: what the plan needs to know of the underlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Underlay {
    /// Link name (`eth0`).
    pub name: String,
    /// Its MTU; a VXLAN device on it needs 50 bytes less (70 over IPv6).
    pub mtu: u32,
    /// The on-link prefix of the node's address (NodeSubnet `spec.nodeAddress`) on it
    /// (`192.168.50.0/24`, or `fd00:50::/64` on an IPv6 underlay): peers inside it are
    /// reachable without a router, which is what `crossSubnet` tests.
    pub prefix: IpNet,
    /// The on-link prefix of the node's address of the other family (NodeSubnet
    /// `spec.secondaryNodeAddress`) on the same link (`fd00:50::/64`), when it holds it: a
    /// dual-stack underlay. `None` when the node has no such address there.
    pub secondary_prefix: Option<IpNet>,
}

impl Underlay {
    /// The underlay's IPv4 on-link prefix, when the node has an IPv4 address on it.
    #[must_use]
    pub fn prefix4(&self) -> Option<Ipv4Net> {
        [Some(self.prefix), self.secondary_prefix]
            .into_iter()
            .flatten()
            .find_map(|p| match p {
                IpNet::V4(p) => Some(p),
                IpNet::V6(_) => None,
            })
    }

    /// The underlay's IPv6 on-link prefix, when the node has an IPv6 address on it.
    #[must_use]
    pub fn prefix6(&self) -> Option<Ipv6Net> {
        [Some(self.prefix), self.secondary_prefix]
            .into_iter()
            .flatten()
            .find_map(|p| match p {
                IpNet::V6(p) => Some(p),
                IpNet::V4(_) => None,
            })
    }
}

/// The main table's routes that are not the agent's, as far as the plan needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForeignRoutes {
    /// Destinations with a metric-0 route (`0.0.0.0/0` for a default route).
    pub destinations: BTreeSet<Ipv4Net>,
    /// Every next hop (`via`) of those routes, multipath hops included: the node's own paths
    /// over the underlay, which no planned route may cover.
    pub next_hops: BTreeSet<Ipv4Addr>,
    /// The same for the IPv6 main table's routes (an IPv6 default gateway, say).
    pub next_hops6: BTreeSet<Ipv6Addr>,
    /// Destinations of the IPv6 main table's routes with the metric the agent's IPv6 routes
    /// get (1024, the kernel's default, which `ip -6 route add` uses too).
    pub destinations6: BTreeSet<ipnet::Ipv6Net>,
}

/// A permanent neighbour entry (ARP for IPv4, NDP for IPv6) on one of the agent's links.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub dev: LinkName,
    pub ip: IpAddr,
    pub mac: Mac,
}

/// A forwarding-database entry on a VXLAN link (`bridge fdb ... self`): frames for `mac` are
/// sent to the VTEP at `dst`. The agent plans permanent unicast entries only; any other entry
/// on its links (the all-zero flood entry, say) is observed too, and removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fdb {
    pub dev: LinkName,
    pub mac: Mac,
    /// The remote VTEP's underlay address, of the local VTEP's family.
    pub dst: IpAddr,
}

/// Outgoing NAT: packets from `source` (the node's pod subnet) to any destination outside
/// `exempt` (the cluster CIDR and `natExcludeCidrs`) leave with the node's address
/// (`masquerade`), so destinations without a route back to pods can answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masquerade {
    pub source: Ipv4Net,
    /// Sorted, without overlaps (nftables refuses overlapping intervals).
    pub exempt: Vec<Ipv4Net>,
}

/// Outgoing NAT for IPv6 (dual-stack): packets from `source` (the node's IPv6 pod subnet)
/// to any destination outside `exempt` (the network's secondaryCidr and IPv6
/// `natExcludeCidrs`) leave with the node's IPv6 address. In the table [`NAT_TABLE`] of
/// family `ip6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masquerade6 {
    pub source: Ipv6Net,
    /// Sorted, without overlaps.
    pub exempt: Vec<Ipv6Net>,
}

/// The agent's `ip6` nftables table as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nat6 {
    /// The table holds exactly the agent's masquerade rule.
    Masquerade(Masquerade6),
    /// Changed by someone else; replaced whole.
    Unrecognised(String),
}

/// The agent's nftables table as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nat {
    /// The table holds exactly the agent's masquerade rule.
    Masquerade(Masquerade),
    /// The table exists but was changed by someone else (a rule added or edited, the set
    /// changed shape); it is replaced whole.
    Unrecognised(String),
}

/// BridgeHosts SNAT (`snat: true`), on the gateway's candidate hosts: packets from `clients`
/// to `pods` leave with this node's address (`masquerade`), so replies come back to the
/// bridge host without any route to the clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySnat {
    /// Sorted, without overlaps.
    pub clients: Vec<Ipv4Net>,
    pub pods: Ipv4Net,
}

/// The agent's SNAT table as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snat {
    /// The table holds exactly the agent's rule.
    Masquerade(GatewaySnat),
    /// Changed by someone else; replaced whole.
    Unrecognised(String),
}

/// BridgeHosts SNAT for IPv6 clients (dual-stack, `snat: true`): packets from `clients` to
/// `pods` (the network's secondaryCidr) leave with this node's IPv6 address. In the table
/// [`SNAT_TABLE`] of family `ip6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySnat6 {
    /// Sorted, without overlaps.
    pub clients: Vec<Ipv6Net>,
    pub pods: Ipv6Net,
}

/// The agent's `ip6` SNAT table as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Snat6 {
    /// The table holds exactly the agent's rule.
    Masquerade(GatewaySnat6),
    /// Changed by someone else; replaced whole.
    Unrecognised(String),
}

/// The complete state of everything the agent owns on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// By name.
    pub links: BTreeMap<String, Link>,
    /// By (link name, address); IPv4 sorts before IPv6.
    pub addresses: BTreeMap<(String, IpNet), Address>,
    /// By destination (the main table holds one route per destination and metric; the
    /// agent uses metric 0 only); IPv4 sorts before IPv6.
    pub routes: BTreeMap<IpNet, Route>,
    /// By (link name, IP).
    pub neighbours: BTreeMap<(LinkName, IpAddr), Neighbour>,
    /// By (link name, MAC).
    pub fdb: BTreeMap<(LinkName, Mac), Fdb>,
    /// Further entries on the agent's VXLAN links with a MAC that [`Self::fdb`] already holds
    /// (more remotes of a flood entry: the kernel keeps several only for the all-zero and
    /// multicast MACs): never planned, so always removed.
    pub fdb_extra: Vec<Fdb>,
    /// The [`NAT_TABLE`] table; `None` when absent.
    pub nat: Option<Nat>,
    /// The [`NAT_TABLE`] table of family `ip6`; `None` when absent.
    pub nat6: Option<Nat6>,
    /// The [`SNAT_TABLE`] table; `None` when absent.
    pub snat: Option<Snat>,
    /// The [`SNAT_TABLE`] table of family `ip6`; `None` when absent.
    pub snat6: Option<Snat6>,
    /// Links (the underlay, in Flat mode) on which the agent turned proxy ARP on: those that
    /// carry one of its device routes and have `proxy_arp` set. Observed only on such links,
    /// so a proxy ARP someone else set elsewhere is never read as the agent's.
    pub proxy_arp: BTreeSet<String>,
    /// Links (the underlay, on a dual-stack Flat network) with `net.ipv6.conf.<dev>.proxy_ndp`
    /// on; observed, like [`Self::proxy_arp`], only on links carrying one of the agent's
    /// device routes.
    pub proxy_ndp: BTreeSet<String>,
    /// Proxy NDP entries with the agent's mark, by (link name, IPv6 address): this node
    /// answers neighbour solicitations on that link for each address (its own pods' IPv6
    /// addresses on a dual-stack Flat network; Linux proxy NDP has no range mode).
    pub proxy_neighbours: BTreeSet<(String, Ipv6Addr)>,
    /// The agent's own links with loose reverse-path filtering (`rp_filter=2`): the VXLAN
    /// device, where traffic arrives on a different interface than its replies leave by
    /// design (RouteToNodes clients). Observed on the agent's links only.
    pub loose_rp_filter: BTreeSet<String>,
    /// The agent's own links that must have IPv6 on (`disable_ipv6=0`): the bridge and the
    /// VXLAN device of a dual-stack network, which hold its IPv6 addresses even on a node
    /// whose other links start with IPv6 disabled. Observed on the agent's links only, each
    /// one with IPv6 on whether a plan asked for it or not (the kernel's default): the diff
    /// only ever turns IPv6 on.
    pub ipv6_on: BTreeSet<String>,
    /// Pods' host-side veths on (or marked for) the agent's bridges, by name. Observed only:
    /// a desired state has none, and [`crate::diff`] reads them from the observed state.
    pub ports: BTreeMap<String, Port>,
}

/// One change to the kernel. `Display` is the readable form `--dry-run` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create a link (and set its MTU and state).
    CreateLink(Link),
    /// Delete a link and everything on it (addresses, neighbours, FDB entries, routes via it).
    DeleteLink(String),
    /// Change MTU and/or up state of an existing link.
    UpdateLink {
        name: String,
        mtu: u32,
        up: bool,
    },
    AddAddress {
        dev: String,
        addr: IpNet,
    },
    DeleteAddress {
        dev: String,
        addr: IpNet,
    },
    /// Add or replace (`ip route replace`).
    ReplaceRoute(Route),
    DeleteRoute(Route),
    /// Add or replace (`ip neigh replace ... nud permanent`).
    ReplaceNeighbour(Neighbour),
    DeleteNeighbour(Neighbour),
    /// Add or replace (`bridge fdb replace ... self permanent`).
    ReplaceFdb(Fdb),
    DeleteFdb(Fdb),
    /// Replace the [`NAT_TABLE`] table with one holding this rule, in one nftables
    /// transaction (packets never see a moment without it).
    ReplaceNat(Masquerade),
    /// Delete the [`NAT_TABLE`] table.
    DeleteNat,
    /// Replace the `ip6` [`NAT_TABLE`] table with one holding this rule, in one transaction.
    ReplaceNat6(Masquerade6),
    /// Delete the `ip6` [`NAT_TABLE`] table.
    DeleteNat6,
    /// Replace the [`SNAT_TABLE`] table with one holding this rule, in one transaction.
    ReplaceSnat(GatewaySnat),
    /// Delete the [`SNAT_TABLE`] table.
    DeleteSnat,
    /// Replace the `ip6` [`SNAT_TABLE`] table with one holding this rule, in one transaction.
    ReplaceSnat6(GatewaySnat6),
    /// Delete the `ip6` [`SNAT_TABLE`] table.
    DeleteSnat6,
    /// Turn `net.ipv4.conf.<dev>.proxy_arp` on or off.
    SetProxyArp {
        dev: String,
        on: bool,
    },
    /// Turn `net.ipv6.conf.<dev>.proxy_ndp` on or off (with `net.ipv6.neigh.<dev>.proxy_delay`
    /// 0 while on, the kernel's default when off).
    SetProxyNdp {
        dev: String,
        on: bool,
    },
    /// Add a proxy NDP entry with the agent's mark (`ip -6 neigh replace proxy <ip> dev <dev>
    /// protocol 249`).
    AddProxyNeighbour {
        dev: String,
        ip: Ipv6Addr,
    },
    /// Delete a proxy NDP entry.
    DeleteProxyNeighbour {
        dev: String,
        ip: Ipv6Addr,
    },
    /// Set `net.ipv4.conf.<dev>.rp_filter=2` (loose) on one of the agent's links. The kernel
    /// applies the larger of `all` and the device's value, so this holds under a strict
    /// `all.rp_filter=1` and changes nothing elsewhere.
    SetLooseRpFilter(String),
    /// Set `net.ipv6.conf.<dev>.disable_ipv6=0` on one of the agent's links (a dual-stack
    /// network's IPv6 addresses go there), whatever the node's default for new links.
    EnableIpv6(String),
    /// Give a pod's veth attached to `bridge` the alias [`PORT_ALIAS_PREFIX`]`bridge`, which
    /// survives the bridge being deleted.
    MarkPort {
        port: String,
        bridge: String,
    },
    /// Attach a pod's veth marked for `bridge` to it again (the bridge was re-created).
    AttachPort {
        port: String,
        bridge: String,
    },
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateLink(l) => {
                let state = if l.up { "up" } else { "down" };
                match &l.kind {
                    LinkKind::Bridge => {
                        write!(
                            f,
                            "create link {} type bridge mtu {} {state}",
                            l.name, l.mtu
                        )
                    }
                    LinkKind::Vxlan {
                        vni,
                        port,
                        local,
                        underlay,
                        mac,
                    } => write!(
                        f,
                        "create link {} type vxlan id {vni} dstport {port} local {local} dev {underlay} nolearning address {mac} mtu {} {state}",
                        l.name, l.mtu
                    ),
                }
            }
            Op::DeleteLink(name) => write!(f, "delete link {name}"),
            Op::UpdateLink { name, mtu, up } => {
                let state = if *up { "up" } else { "down" };
                write!(f, "set link {name} mtu {mtu} {state}")
            }
            Op::AddAddress { dev, addr } => write!(f, "add address {addr} dev {dev}"),
            Op::DeleteAddress { dev, addr } => write!(f, "delete address {addr} dev {dev}"),
            Op::ReplaceRoute(r) => write!(f, "replace route {}", RouteText(r)),
            Op::DeleteRoute(r) => write!(f, "delete route {}", RouteText(r)),
            Op::ReplaceNeighbour(n) => write!(
                f,
                "replace neighbour {} lladdr {} dev {} permanent",
                n.ip, n.mac, n.dev
            ),
            Op::DeleteNeighbour(n) => write!(f, "delete neighbour {} dev {}", n.ip, n.dev),
            Op::ReplaceFdb(e) => write!(
                f,
                "replace fdb {} dev {} dst {} self permanent",
                e.mac, e.dev, e.dst
            ),
            Op::DeleteFdb(e) => write!(f, "delete fdb {} dev {} dst {}", e.mac, e.dev, e.dst),
            Op::ReplaceNat(m) => {
                let exempt: Vec<String> = m.exempt.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "replace nft table ip {NAT_TABLE}: ip saddr {} ip daddr != {{ {} }} masquerade",
                    m.source,
                    exempt.join(", ")
                )
            }
            Op::DeleteNat => write!(f, "delete nft table ip {NAT_TABLE}"),
            Op::ReplaceNat6(m) => {
                let exempt: Vec<String> = m.exempt.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "replace nft table ip6 {NAT_TABLE}: ip6 saddr {} ip6 daddr != {{ {} }} masquerade",
                    m.source,
                    exempt.join(", ")
                )
            }
            Op::DeleteNat6 => write!(f, "delete nft table ip6 {NAT_TABLE}"),
            Op::ReplaceSnat(g) => {
                let clients: Vec<String> = g.clients.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "replace nft table ip {SNAT_TABLE}: ip saddr {{ {} }} ip daddr {} masquerade",
                    clients.join(", "),
                    g.pods
                )
            }
            Op::DeleteSnat => write!(f, "delete nft table ip {SNAT_TABLE}"),
            Op::ReplaceSnat6(g) => {
                let clients: Vec<String> = g.clients.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "replace nft table ip6 {SNAT_TABLE}: ip6 saddr {{ {} }} ip6 daddr {} masquerade",
                    clients.join(", "),
                    g.pods
                )
            }
            Op::DeleteSnat6 => write!(f, "delete nft table ip6 {SNAT_TABLE}"),
            Op::SetProxyArp { dev, on } => {
                write!(
                    f,
                    "set sysctl net.ipv4.conf.{dev}.proxy_arp={}",
                    u8::from(*on)
                )
            }
            Op::SetProxyNdp { dev, on } => {
                write!(
                    f,
                    "set sysctl net.ipv6.conf.{dev}.proxy_ndp={}",
                    u8::from(*on)
                )
            }
            Op::AddProxyNeighbour { dev, ip } => write!(
                f,
                "replace neighbour proxy {ip} dev {dev} proto {ROUTE_PROTOCOL}"
            ),
            Op::DeleteProxyNeighbour { dev, ip } => {
                write!(f, "delete neighbour proxy {ip} dev {dev}")
            }
            Op::SetLooseRpFilter(dev) => write!(f, "set sysctl net.ipv4.conf.{dev}.rp_filter=2"),
            Op::EnableIpv6(dev) => write!(f, "set sysctl net.ipv6.conf.{dev}.disable_ipv6=0"),
            Op::MarkPort { port, bridge } => {
                write!(f, "set link {port} alias {PORT_ALIAS_PREFIX}{bridge}")
            }
            Op::AttachPort { port, bridge } => write!(f, "set link {port} master {bridge}"),
        }
    }
}

struct RouteText<'a>(&'a Route);

impl fmt::Display for RouteText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "{}", r.dst)?;
        if let Some(gw) = r.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev {}", r.dev)?;
        if r.onlink {
            write!(f, " onlink")?;
        }
        write!(f, " proto {ROUTE_PROTOCOL}")
    }
}

/// Why a dataplane operation failed, in words for a NodeSubnet condition.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {message}")]
pub struct ApplyError {
    /// The operation, as `--dry-run` prints it.
    pub op: String,
    /// The kernel's answer, with a hint when one is known
    /// (`Operation not supported (is the vxlan kernel module loaded?)`).
    pub message: String,
}

/// Where the agent reads and changes kernel state: netlink in production and in netns tests
/// ([`crate::netlink::Netlink`]), an in-memory fake in unit tests.
#[allow(async_fn_in_trait)]
pub trait Dataplane {
    /// Everything the agent owns now: links named with [`DEVICE_PREFIX`], their addresses,
    /// neighbours and FDB entries, and routes with [`ROUTE_PROTOCOL`].
    async fn observe(&mut self) -> Result<State, ApplyError>;

    /// Applies one operation.
    async fn apply(&mut self, op: &Op) -> Result<(), ApplyError>;

    /// The link holding `address` (the node's underlay), with the on-link prefix of
    /// `secondary` (the node's address of the other family) when the same link holds it;
    /// `Err` says why no link holds `address`, in words for the NodeSubnet (naming
    /// `spec.nodeAddress`).
    async fn underlay_for(
        &mut self,
        address: IpAddr,
        secondary: Option<IpAddr>,
    ) -> Result<Underlay, String>;

    /// The main table's routes that are not the agent's (every origin and type).
    async fn foreign_routes(&mut self) -> Result<ForeignRoutes, String>;

    /// Turns IPv4 forwarding on (nodes forward pod traffic), and IPv6 forwarding too when
    /// `ipv6` (a dual-stack network: only then, since IPv6 forwarding makes the kernel ignore
    /// router advertisements on links with `accept_ra=1`).
    async fn enable_forwarding(&mut self, ipv6: bool) -> Result<(), String>;

    /// Applies `ops` in order, stopping at the first failure, which it returns with its index
    /// (everything before it applied). A dataplane may overlap operations that do not depend
    /// on each other ([`Op::parallel_group`]); by default they run one at a time.
    async fn apply_all(&mut self, ops: &[Op]) -> Result<(), (usize, ApplyError)> {
        for (i, op) in ops.iter().enumerate() {
            self.apply(op).await.map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

impl Op {
    /// Operations that may run concurrently with their neighbours of the same group: each
    /// touches one kernel object of its own (a route, a neighbour, an FDB entry), and
    /// [`crate::diff`] emits them in runs whose order within the run does not matter. `None`
    /// for operations that must run alone (links, addresses, NAT, sysctls).
    #[must_use]
    pub fn parallel_group(&self) -> Option<u8> {
        match self {
            Op::ReplaceFdb(_) => Some(1),
            Op::ReplaceNeighbour(_) => Some(2),
            Op::ReplaceRoute(_) => Some(3),
            Op::DeleteRoute(_) => Some(4),
            Op::DeleteNeighbour(_) => Some(5),
            Op::DeleteFdb(_) => Some(6),
            _ => None,
        }
    }

    /// What kind of kernel object the operation changes and how, as a short label
    /// (`replace_route`, `delete_fdb`, `set_proxy_arp`): for summaries in logs and for metric
    /// labels, where the whole operation would be one series per object.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateLink(_) => "create_link",
            Op::DeleteLink(_) => "delete_link",
            Op::UpdateLink { .. } => "update_link",
            Op::AddAddress { .. } => "add_address",
            Op::DeleteAddress { .. } => "delete_address",
            Op::ReplaceRoute(_) => "replace_route",
            Op::DeleteRoute(_) => "delete_route",
            Op::ReplaceNeighbour(_) => "replace_neighbour",
            Op::DeleteNeighbour(_) => "delete_neighbour",
            Op::ReplaceFdb(_) => "replace_fdb",
            Op::DeleteFdb(_) => "delete_fdb",
            Op::ReplaceNat(_) | Op::ReplaceNat6(_) => "replace_nat",
            Op::DeleteNat | Op::DeleteNat6 => "delete_nat",
            Op::ReplaceSnat(_) | Op::ReplaceSnat6(_) => "replace_snat",
            Op::DeleteSnat | Op::DeleteSnat6 => "delete_snat",
            Op::SetProxyArp { .. } => "set_proxy_arp",
            Op::SetProxyNdp { .. } => "set_proxy_ndp",
            Op::AddProxyNeighbour { .. } => "add_proxy_neighbour",
            Op::DeleteProxyNeighbour { .. } => "delete_proxy_neighbour",
            Op::SetLooseRpFilter(_) => "set_loose_rp_filter",
            Op::EnableIpv6(_) => "enable_ipv6",
            Op::MarkPort { .. } => "mark_port",
            Op::AttachPort { .. } => "attach_port",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print_in_the_usual_form() {
        let mac: Mac = "0e:c2:20:78:cb:53".parse().expect("valid");
        assert_eq!(mac.to_string(), "0e:c2:20:78:cb:53");
        for bad in [
            "",
            "0e:c2:20:78:cb",
            "0e:c2:20:78:cb:zz",
            "0e-c2-20-78-cb-53",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn operations_print_like_the_ip_commands_they_stand_for() {
        let route = Route {
            dst: "10.244.2.0/24".parse().expect("cidr"),
            gateway: Some("10.244.2.0".parse().expect("ip")),
            dev: "cw-vx1".into(),
            onlink: true,
        };
        assert_eq!(
            Op::ReplaceRoute(route).to_string(),
            "replace route 10.244.2.0/24 via 10.244.2.0 dev cw-vx1 onlink proto 249"
        );
        let fdb = Fdb {
            dev: "cw-vx1".into(),
            mac: Mac([0x0e, 1, 2, 3, 4, 5]),
            dst: "192.168.50.12".parse().expect("ip"),
        };
        assert_eq!(
            Op::ReplaceFdb(fdb).to_string(),
            "replace fdb 0e:01:02:03:04:05 dev cw-vx1 dst 192.168.50.12 self permanent"
        );
        let route6 = Route {
            dst: "fd00:10:244:2::/64".parse().expect("cidr"),
            gateway: Some("fd00:10:244:2::".parse().expect("ip")),
            dev: "cw-vx1".into(),
            onlink: true,
        };
        assert_eq!(
            Op::ReplaceRoute(route6).to_string(),
            "replace route fd00:10:244:2::/64 via fd00:10:244:2:: dev cw-vx1 onlink proto 249"
        );
        let nat6 = Masquerade6 {
            source: "fd00:10:244:1::/64".parse().expect("cidr"),
            exempt: vec!["fd00:10:244::/56".parse().expect("cidr")],
        };
        assert_eq!(
            Op::ReplaceNat6(nat6).to_string(),
            "replace nft table ip6 causeway: ip6 saddr fd00:10:244:1::/64 ip6 daddr != { fd00:10:244::/56 } masquerade"
        );
        let snat6 = GatewaySnat6 {
            clients: vec![
                "fd00:50::/64".parse().expect("cidr"),
                "fd00:77::/64".parse().expect("cidr"),
            ],
            pods: "fd00:10:244::/56".parse().expect("cidr"),
        };
        assert_eq!(
            Op::ReplaceSnat6(snat6).to_string(),
            "replace nft table ip6 causeway-gateway: ip6 saddr { fd00:50::/64, fd00:77::/64 } ip6 daddr fd00:10:244::/56 masquerade"
        );
        assert_eq!(
            Op::DeleteSnat6.to_string(),
            "delete nft table ip6 causeway-gateway"
        );
    }
}
