//! The real [`Dataplane`]: reads and changes the kernel's links, addresses, routes, neighbours
//! and VXLAN FDB entries over rtnetlink, and its NAT table through [`crate::nat::Nft`] (the one
//! object netfilter keeps outside rtnetlink). This is the only module that changes the kernel; it
//! sits at both ends of a pass ([`crate::pass`]: **observe** → plan → diff → **apply**).
//! `observe.rs` holds the dumps and their parsing, `apply.rs` one function per operation
//! family with the ownership checks and the kernel's errors in words, `vip.rs` the BridgeHosts
//! VIP; this file the connection and the [`Dataplane`] implementation.
//!
//! Ownership is enforced here as well as in the diff, so a bug upstream cannot touch what the
//! agent does not own:
//! - [`Netlink::observe`] only reports links named with [`DEVICE_PREFIX`], their IPv4 and
//!   global-scope IPv6 addresses (never the link-local ones the kernel adds by itself),
//!   permanent IPv4 and IPv6 neighbours and permanent FDB entries on them, proxy NDP entries
//!   carrying protocol [`ROUTE_PROTOCOL`] (on any link: they sit on the underlay), and IPv4 and IPv6
//!   routes of the main table with protocol [`ROUTE_PROTOCOL`] (on any device: direct routes
//!   to on-link peers use the underlay); IPv6 routes of any other protocol (the kernel's
//!   `fe80::/64` on every link) are never read;
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
//! read-back). Runs of independent operations (routes, neighbours, FDB entries) are pipelined,
//! 64 requests in flight on the one socket ([`Dataplane::apply_all`]); everything else is
//! applied alone, in order.
//!
//! In a named namespace ([`Netlink::in_netns`]) the socket is opened on a short-lived thread
//! that entered the namespace; the socket stays bound to that namespace while the runtime's
//! threads never switch.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use futures::{StreamExt, TryStreamExt};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_core::ErrorMessage;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
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

mod apply;
mod lookup;
pub mod nexthop;
mod observe;
mod vip;

use apply::{Failure, describe_error, errno_of};
pub use lookup::Lookup;
use observe::{ipv4_of, ipv6_of, link_kind, link_mtu, parse_port};
pub use vip::VipLink;

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
        "no interface of this node has {addr}, the NodeSubnet's spec.nodeAddress (the Node's InternalIP): is the agent on the right node, and is the address still configured (ip addr)?"
    )]
    NoInterfaceHasAddress { addr: IpAddr },
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
    /// Links found by name, kept from one pass to the next so that a peer's route, neighbour
    /// and FDB entry cost no lookup of their device each: forgotten when a full pass observes
    /// the kernel, when an operation creates, deletes or changes a link, and when one fails.
    /// A device deleted and made again behind the agent's back gets a new index (the kernel
    /// does not hand an index out again soon), so a stale entry fails its operation with
    /// `ENODEV`, which sends the agent to a full pass; it never reaches another link.
    known_links: std::sync::Mutex<BTreeMap<String, KnownLink>>,
    /// The destinations of our routes, read at most once per run of pipelined operations:
    /// the first route add that finds a route in its way reads them, under this lock, and
    /// the others in the run wait for that reading and use it. Two dumps at once on one
    /// netlink socket fail (`EBUSY`), and a dump per route moved would cost O(n²).
    run_routes: tokio::sync::Mutex<RunRoutes>,
    /// Where the namespace's kernel parameters are read and written (`--sysctl-dir`).
    sysctl: SysctlDir,
    /// The nexthop objects under IPv4 gateway routes, on a socket of their own
    /// ([`nexthop`]).
    nexthops: nexthop::Nexthops,
}

/// A link found by name ([`Netlink::known_links`]).
#[derive(Debug, Clone, Copy)]
struct KnownLink {
    index: u32,
    vxlan: bool,
}

/// [`Netlink::run_routes`]: outside a run every check reads the kernel; inside one, the
/// first reading is kept.
#[derive(Debug)]
enum RunRoutes {
    Off,
    Unread,
    Read(std::collections::BTreeSet<IpNet>),
}

impl Netlink {
    /// Connects to the kernel in the caller's network namespace (a DaemonSet pod with
    /// `hostNetwork: true` is in the node's). Call inside a tokio runtime: the connection runs
    /// as a task on it.
    pub async fn connect() -> Result<Self, NetlinkError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NetlinkError::NoRuntime);
        }
        let sockets = open_sockets().map_err(|error| NetlinkError::Socket {
            netns: netns::describe(None),
            error,
        })?;
        Ok(Self::start(sockets, None))
    }

    /// Connects to the kernel in the named network namespace `/run/netns/NAME` (tests,
    /// `--netns`). The socket is opened on a short-lived thread that enters the namespace and
    /// then ends, so no runtime thread ever changes namespace.
    pub async fn in_netns(name: &str) -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let netns = netns::describe(Some(name));
        let sockets = netns::run_in(name, move || {
            // Registers the sockets with the caller's runtime; only the sockets' creation needs
            // this thread's namespace.
            let _runtime = runtime.enter();
            open_sockets()
        })
        .await?
        .map_err(|error| NetlinkError::Socket { netns, error })?;
        Ok(Self::start(sockets, Some(name.to_owned())))
    }

    /// Reads and writes kernel parameters under `dir` instead of `/proc/sys` (the chart mounts
    /// the host's `/proc/sys/net` at `/host/proc/sys/net`: [`crate::sysctl`]).
    #[must_use]
    pub fn with_sysctl_dir(mut self, dir: SysctlDir) -> Self {
        self.sysctl = dir;
        self
    }

    /// Turns IPv4 forwarding on in this namespace (pods reach other nodes through the node),
    /// and `net.ipv6.conf.all.forwarding` too when `ipv6` (a dual-stack network), unless they
    /// already are.
    ///
    /// # Errors
    /// A sentence naming the file and the likely cause.
    pub async fn enable_forwarding(&self, ipv6: bool) -> Result<(), String> {
        let mut paths = vec![("IPv4", self.sysctl.ip_forward())];
        if ipv6 {
            paths.push(("IPv6", self.sysctl.ipv6_forwarding()));
        }
        for (family, path) in paths {
            if self.read_sysctl(&path).await.is_ok_and(|v| v.trim() == "1") {
                continue;
            }
            self.write_sysctl(&path, "1").await.map_err(|e| {
                format!(
                    "cannot enable {family} forwarding ({}): {e}; the agent needs CAP_NET_ADMIN and a writable {} (--sysctl-dir){}",
                    path.display(),
                    self.sysctl.root().join("net").display(),
                    if family == "IPv6" { ", and IPv6 enabled in the kernel" } else { "" }
                )
            })?;
        }
        Ok(())
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

    fn start((socket, nexthop_socket): (TokioSocket, TokioSocket), netns: Option<String>) -> Self {
        let (connection, handle, _unsolicited) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Self {
            nexthops: nexthop::Nexthops::start(nexthop_socket),
            handle,
            netns,
            run_links: std::sync::Mutex::new(BTreeMap::new()),
            known_links: std::sync::Mutex::new(BTreeMap::new()),
            run_routes: tokio::sync::Mutex::new(RunRoutes::Off),
            sysctl: SysctlDir::default(),
        }
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

impl Dataplane for Netlink {
    async fn underlay_for(
        &mut self,
        address: IpAddr,
        secondary: Option<IpAddr>,
    ) -> Result<Underlay, String> {
        Netlink::underlay_for(self, address, secondary)
            .await
            .map_err(|e| e.to_string())
    }

    async fn foreign_routes(&mut self) -> Result<ForeignRoutes, String> {
        Netlink::foreign_routes(self)
            .await
            .map_err(|e| e.to_string())
    }

    async fn enable_forwarding(&mut self, ipv6: bool) -> Result<(), String> {
        Netlink::enable_forwarding(self, ipv6).await
    }

    async fn observe(&mut self) -> Result<State, ApplyError> {
        self.forget_links();
        let mut state = self.read_state().await.map_err(|error| ApplyError {
            op: "observe".into(),
            message: error.to_string(),
        })?;
        state.nat = self.nft().observe().await.map_err(|error| ApplyError {
            op: format!("nft list table ip {NAT_TABLE}"),
            message: error.to_string(),
        })?;
        state.nat6 = self.nft().observe6().await.map_err(|error| ApplyError {
            op: format!("nft list table ip6 {NAT_TABLE}"),
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
        state.snat6 = self
            .nft()
            .observe_snat6()
            .await
            .map_err(|error| ApplyError {
                op: format!("nft list table ip6 {SNAT_TABLE}"),
                message: error.to_string(),
            })?;
        Ok(state)
    }

    #[instrument(skip_all, fields(%op))]
    async fn apply(&mut self, op: &Op) -> Result<(), ApplyError> {
        let nat = match op {
            Op::ReplaceNat(m) => Some(nat::replace_batch(m)),
            Op::DeleteNat => Some(nat::delete_batch()),
            Op::ReplaceNat6(m) => Some(nat::replace_batch6(m)),
            Op::DeleteNat6 => Some(nat::delete_batch6()),
            Op::ReplaceSnat(g) => Some(nat::snat_replace_batch(g)),
            Op::DeleteSnat => Some(nat::snat_delete_batch()),
            Op::ReplaceSnat6(g) => Some(nat::snat_replace_batch6(g)),
            Op::DeleteSnat6 => Some(nat::snat_delete_batch6()),
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
    /// `PIPELINE` (64) at a time; everything else is applied alone, in order. On a failure in a
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
                self.unpin_links().await;
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

/// Opens the two route-netlink sockets (rtnetlink's, and one for nexthop objects, which
/// rtnetlink's messages do not cover) in the calling thread's namespace.
fn open_sockets() -> io::Result<(TokioSocket, TokioSocket)> {
    Ok((open_socket()?, open_socket()?))
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

#[cfg(test)]
mod tests {
    use super::apply::*;
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
                local: Ipv4Addr::new(192, 168, 50, 11).into(),
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
