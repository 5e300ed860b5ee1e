//! Test topologies declared as data: L2 segments (a Linux bridge each, in its own namespace),
//! routers joining segments, the control plane, nodes and non-node clients.
//!
//! A segment carries an IPv4 prefix, an IPv6 prefix (ULA, `fd00::/8`) or both (dual-stack);
//! whatever sits on it gets one address per family the segment has, and routers forward both
//! families between their legs.
//!
//! A scenario reads like a diagram (YAML or the builder below). Everything here is pure:
//! [`Topology::validate`] checks the declaration and [`Topology::setup_plan`] turns it into the
//! iproute2 batches the harness runs, so both are unit-tested without root.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail, ensure};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// The whole simulated network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    /// L2 segments: each is one bridge ("switch") in a namespace of its own.
    pub segments: Vec<Segment>,
    /// Where the control plane (etcd, kube-apiserver, kube-controller-manager) sits.
    pub control_plane: ControlPlane,
    /// Routers forwarding between segments (IP forwarding on, one leg per segment).
    #[serde(default)]
    pub routers: Vec<Router>,
    /// Kubernetes nodes: registered as Node objects with their InternalIP.
    #[serde(default)]
    pub nodes: Vec<Host>,
    /// Machines on the underlay that are not nodes.
    #[serde(default)]
    pub clients: Vec<Host>,
    /// Nodes run a real kubelet, containerd (runc) and kube-proxy, which register them and run
    /// pods (see [`crate::kubelet`]); the control plane then also runs kube-scheduler and the
    /// workload controllers. Otherwise the harness registers Node objects itself.
    #[serde(default)]
    pub kubelet: bool,
    /// Hosts and the control plane reach other segments through one default route via a
    /// router leg on their segment, as DHCP sets them up, instead of one route per segment.
    /// Routers still know only their own segments, so nothing leads out of the machine.
    #[serde(default)]
    pub default_routes: bool,
    /// `net.ipv4.conf.{all,default}.rp_filter` on nodes and clients: 1 is strict reverse-path
    /// filtering (the RHEL and CIS default), 2 loose. Unset: the namespace's default (0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rp_filter: Option<u8>,
}

/// The Service ClusterIP range (kube-apiserver `--service-cluster-ip-range`): chosen so it
/// cannot collide with the pod CIDRs tests use (10.244.0.0/16 and friends) or the underlay
/// (192.168.0.0/16).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Segment {
    pub name: String,
    /// The IPv4 prefix; unset on an IPv6-only segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Ipv4Net>,
    /// The IPv6 prefix (dual-stack with `cidr`, IPv6-only without): a ULA prefix from
    /// `fd00::/8`, which nothing outside the machine routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<Ipv6Net>,
}

/// The prefix ULA addresses chosen locally come from (RFC 4193, L bit set).
pub const ULA: &str = "fd00::/8";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlane {
    pub segment: String,
    /// Always IPv4: the API server advertises it (its Service range is IPv4).
    pub address: Ipv4Addr,
    /// Its IPv6 address, on a dual-stack segment (the API server listens on both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    /// Run kube-controller-manager (garbage collection, namespace deletion). Default true.
    #[serde(default = "yes")]
    pub controller_manager: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Router {
    pub name: String,
    pub legs: Vec<Leg>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Leg {
    pub segment: String,
    /// Unset on an IPv6-only segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Set exactly when the segment has an IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
}

/// A node or client: one underlay interface `eth0` on one segment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Host {
    pub name: String,
    pub segment: String,
    /// The IPv4 address; `0.0.0.0` (the default when omitted) on an IPv6-only segment. A
    /// plain address rather than an `Option` so the many IPv4 tests keep reading
    /// `host.address`; [`Host::ipv4`] is the checked form.
    #[serde(default = "no_ipv4", skip_serializing_if = "Ipv4Addr::is_unspecified")]
    pub address: Ipv4Addr,
    /// The IPv6 address: set exactly when the segment has an IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    /// Node labels (nodes only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Routes the host has besides the harness's, as boot scripts, DHCP or an administrator
    /// leave them (`ip route add <dst> via <via> [proto <proto>]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<ExtraRoute>,
}

fn no_ipv4() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

impl Host {
    /// The IPv4 address, unless the host is IPv6-only.
    #[must_use]
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        (!self.address.is_unspecified()).then_some(self.address)
    }

    /// Every address, IPv4 first: the order a dual-stack kubelet lists its InternalIPs in
    /// (its primary family first, and the cluster's primary family is IPv4).
    #[must_use]
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.ipv4()
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.address6.map(IpAddr::V6))
            .collect()
    }
}

/// A route of a host that is not the harness's own.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtraRoute {
    pub dst: Ipv4Net,
    pub via: Ipv4Addr,
    /// The route's origin as iproute2 names it (`static`, `dhcp`, `kernel`, `boot`...);
    /// unset gives what a plain `ip route add` gives (`boot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
}

/// One `ip -batch` script, run in `ns` (or the root namespace when `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub ns: Option<String>,
    pub lines: Vec<String>,
}

/// What the harness creates for a topology, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct SetupPlan {
    /// Every namespace, in creation order.
    pub namespaces: Vec<String>,
    pub batches: Vec<Batch>,
    /// Kernel parameters per namespace (`key=value`): forwarding on routers, reverse-path
    /// filtering on hosts.
    pub sysctls: BTreeMap<String, Vec<String>>,
    /// Switch ports: (host or router name, segment, port name in the segment's namespace).
    pub ports: Vec<(String, String, String)>,
    /// Namespaces with IPv6 addresses: they keep IPv6 on and get [`IPV6_SYSCTLS`] right after
    /// they are created, before any interface; every other namespace has IPv6 off.
    pub ipv6_namespaces: Vec<String>,
}

/// Kernel parameters of a namespace with IPv6 addresses, set before its interfaces exist so
/// that these inherit them (`default`). Duplicate address detection is off: validation
/// already proves every address unique, so DAD could only hold each address `tentative`
/// for a second or two after the link comes up, during which it cannot be a source or be
/// bound (a test's first ping or `socat` listener would fail). Addresses are also added
/// with `nodad`, but that cannot reach the kernel's own link-local addresses, and a router
/// needs its link-local to solicit a neighbour for a packet it forwards: with DAD on, the
/// first forwarded packets to each host are dropped. No router solicitations either: no
/// router advertises, so they would only be noise on the segment.
pub const IPV6_SYSCTLS: [&str; 4] = [
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.router_solicitations=0",
    "net.ipv6.conf.default.router_solicitations=0",
];

/// Longest underlay interface name on a router: `e-` + segment name.
const MAX_SEGMENT_NAME: usize = 12;
/// Keeps node names usable inside namespace and pod names.
const MAX_HOST_NAME: usize = 30;

impl Topology {
    /// Namespace name of a host, segment switch or router in cluster `cluster`.
    pub fn ns(cluster: &str, role: &str, name: &str) -> String {
        format!("cw-{cluster}-{role}-{name}")
    }

    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    pub fn node(&self, name: &str) -> Option<&Host> {
        self.nodes.iter().find(|h| h.name == name)
    }

    /// Nodes and clients, with their role word used in namespace names.
    pub fn hosts(&self) -> impl Iterator<Item = (&'static str, &Host)> {
        self.nodes
            .iter()
            .map(|h| ("node", h))
            .chain(self.clients.iter().map(|h| ("client", h)))
    }

    /// Checks names, addresses and references; the error says which entry is wrong.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            !self.segments.is_empty(),
            "a topology needs at least one segment"
        );
        let ula: Ipv6Net = ULA.parse()?;
        let mut seg_names = BTreeSet::new();
        for (i, s) in self.segments.iter().enumerate() {
            check_name(&s.name, MAX_SEGMENT_NAME).with_context(|| format!("segment {i}"))?;
            ensure!(
                seg_names.insert(&s.name),
                "segment `{}` is declared twice",
                s.name
            );
            ensure!(
                s.cidr.is_some() || s.cidr6.is_some(),
                "segment `{}` needs a `cidr` (IPv4), a `cidr6` (IPv6) or both",
                s.name
            );
            if let Some(c6) = s.cidr6 {
                ensure!(
                    ula.contains(&c6),
                    "segment `{}`: {c6} is not a ULA prefix ({ULA}); only those keep a test \
                     network from ever being routed off the machine",
                    s.name
                );
                ensure!(
                    c6 == c6.trunc(),
                    "segment `{}`: {c6} has host bits set (the prefix is {})",
                    s.name,
                    c6.trunc()
                );
                ensure!(
                    c6.prefix_len() <= 126,
                    "segment `{}`: {c6} is too long a prefix (at most /126)",
                    s.name
                );
            }
            for other in &self.segments[..i] {
                let overlap4 = matches!((other.cidr, s.cidr), (Some(a), Some(b))
                    if a.contains(&b.network()) || b.contains(&a.network()));
                let overlap6 = matches!((other.cidr6, s.cidr6), (Some(a), Some(b))
                    if a.contains(&b.network()) || b.contains(&a.network()));
                ensure!(
                    !overlap4 && !overlap6,
                    "segments `{}` ({}) and `{}` ({}) overlap",
                    other.name,
                    prefixes(other),
                    s.name,
                    prefixes(s)
                );
            }
        }
        let mut addrs = BTreeMap::new();
        let mut claim = |who: String,
                         segment: &str,
                         addr: Option<Ipv4Addr>,
                         addr6: Option<Ipv6Addr>|
         -> Result<()> {
            let seg = self.segment(segment).with_context(|| {
                format!("{who} is on segment `{segment}`, which is not declared")
            })?;
            match (seg.cidr, addr) {
                (Some(cidr), Some(addr)) => ensure!(
                    cidr.contains(&addr) && addr != cidr.network() && addr != cidr.broadcast(),
                    "{who} has address {addr}, which is not a host address of segment `{segment}` ({cidr})"
                ),
                (Some(cidr), None) => {
                    bail!("{who} needs an IPv4 `address` on segment `{segment}` ({cidr})")
                }
                (None, Some(addr)) => {
                    bail!("{who} has IPv4 address {addr}, but segment `{segment}` is IPv6-only")
                }
                (None, None) => {}
            }
            match (seg.cidr6, addr6) {
                (Some(cidr6), Some(addr6)) => ensure!(
                    cidr6.contains(&addr6) && addr6 != cidr6.network(),
                    "{who} has address {addr6}, which is not a host address of segment `{segment}` ({cidr6})"
                ),
                (Some(cidr6), None) => bail!(
                    "{who} needs an IPv6 `address6` on dual-stack or IPv6-only segment `{segment}` ({cidr6})"
                ),
                (None, Some(addr6)) => {
                    bail!("{who} has IPv6 address {addr6}, but segment `{segment}` has no `cidr6`")
                }
                (None, None) => {}
            }
            let family_addrs = addr.map(IpAddr::V4).into_iter();
            for a in family_addrs.chain(addr6.map(IpAddr::V6)) {
                if let Some(prev) = addrs.insert(a, who.clone()) {
                    bail!("{who} and {prev} both have address {a}");
                }
            }
            Ok(())
        };
        let cp = &self.control_plane;
        ensure!(
            self.segment(&cp.segment).is_none_or(|s| s.cidr.is_some()),
            "the control plane needs IPv4 (the API server advertises an IPv4 address): \
             segment `{}` is IPv6-only",
            cp.segment
        );
        claim(
            "the control plane".into(),
            &cp.segment,
            Some(cp.address),
            cp.address6,
        )?;
        let mut host_names = BTreeSet::new();
        for r in &self.routers {
            check_name(&r.name, MAX_HOST_NAME).context("router")?;
            ensure!(
                host_names.insert(&r.name),
                "name `{}` is used twice",
                r.name
            );
            ensure!(
                r.legs.len() >= 2,
                "router `{}` needs legs on at least two segments",
                r.name
            );
            let mut legs = BTreeSet::new();
            for leg in &r.legs {
                ensure!(
                    legs.insert(&leg.segment),
                    "router `{}` has two legs on segment `{}`",
                    r.name,
                    leg.segment
                );
                claim(
                    format!("router `{}`", r.name),
                    &leg.segment,
                    leg.address,
                    leg.address6,
                )?;
            }
        }
        for (role, h) in self.hosts() {
            check_name(&h.name, MAX_HOST_NAME).with_context(|| format!("{role} name"))?;
            ensure!(
                host_names.insert(&h.name),
                "name `{}` is used twice",
                h.name
            );
            claim(
                format!("{role} `{}`", h.name),
                &h.segment,
                h.ipv4(),
                h.address6,
            )?;
            for r in &h.routes {
                let on_link = self
                    .segment(&h.segment)
                    .and_then(|s| s.cidr)
                    .is_some_and(|c| c.contains(&r.via));
                ensure!(
                    on_link,
                    "{role} `{}`: route {} via {} leaves its segment `{}`",
                    h.name,
                    r.dst,
                    r.via,
                    h.segment
                );
            }
        }
        let single = self.segments.len() == 1;
        ensure!(
            !self.default_routes
                || self.hosts().all(|(_, h)| single
                    || (h.ipv4().is_none() || self.gateway_of(&h.segment).is_some())
                        && (h.address6.is_none() || self.gateway6_of(&h.segment).is_some())),
            "defaultRoutes needs a router leg on every segment with hosts, in each of its families"
        );
        ensure!(
            !self.kubelet || self.nodes.iter().all(|h| h.ipv4().is_some()),
            "kubelet nodes need an IPv4 address (IPv4 or dual-stack; the API server's Service is IPv4): use registered nodes (kubelet: false) on IPv6-only segments"
        );
        ensure!(
            self.rp_filter.is_none_or(|m| m <= 2),
            "rpFilter must be 0, 1 or 2"
        );
        Ok(())
    }

    /// The default gateway of hosts on `segment` (with `default_routes`): the first router
    /// leg on it with an IPv4 address.
    pub fn gateway_of(&self, segment: &str) -> Option<Ipv4Addr> {
        self.legs_on(segment).find_map(|l| l.address)
    }

    /// [`Self::gateway_of`] for IPv6: the first router leg on `segment` with an IPv6 address.
    pub fn gateway6_of(&self, segment: &str) -> Option<Ipv6Addr> {
        self.legs_on(segment).find_map(|l| l.address6)
    }

    fn legs_on<'a>(&'a self, segment: &'a str) -> impl Iterator<Item = &'a Leg> + 'a {
        self.routers
            .iter()
            .flat_map(|r| &r.legs)
            .filter(move |l| l.segment == segment)
    }

    /// Routes a host on `segment` needs: every other segment reachable through a router with a
    /// leg on `segment`, via that leg. No default route, so nothing can lead out of the machine.
    pub fn routes_from(&self, segment: &str) -> Vec<(Ipv4Net, Ipv4Addr)> {
        self.routes_by(segment, |l| l.address, |s| s.cidr)
    }

    /// [`Self::routes_from`] for IPv6: the IPv6 prefixes of the segments a router with an
    /// IPv6 leg on `segment` reaches, via that leg.
    pub fn routes6_from(&self, segment: &str) -> Vec<(Ipv6Net, Ipv6Addr)> {
        self.routes_by(segment, |l| l.address6, |s| s.cidr6)
    }

    /// Routes of one family: `via` is a leg's address, `prefix` a segment's prefix.
    fn routes_by<N: Ord, A: Copy>(
        &self,
        segment: &str,
        via: impl Fn(&Leg) -> Option<A>,
        prefix: impl Fn(&Segment) -> Option<N>,
    ) -> Vec<(N, A)> {
        let mut routes = BTreeMap::new();
        for r in &self.routers {
            let Some(gw) = r.legs.iter().find(|l| l.segment == segment).and_then(&via) else {
                continue;
            };
            for leg in r.legs.iter().filter(|l| l.segment != segment) {
                if let Some(dst) = self.segment(&leg.segment).and_then(&prefix) {
                    routes.entry(dst).or_insert(gw);
                }
            }
        }
        routes.into_iter().collect()
    }

    /// The iproute2 batches that build this topology for `cluster`.
    pub fn setup_plan(&self, cluster: &str) -> SetupPlan {
        let mut namespaces = Vec::new();
        let mut root = Vec::new();
        let mut per_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut ports: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut port_list = Vec::new();

        for s in &self.segments {
            let ns = Self::ns(cluster, "seg", &s.name);
            namespaces.push(ns.clone());
            per_ns.entry(ns).or_default().extend([
                "link set lo up".to_string(),
                "link add br0 type bridge".to_string(),
                "link set br0 up".to_string(),
            ]);
        }
        // (namespace, interface, segment, addresses, label) for every underlay attachment.
        type Addresses = (Option<Ipv4Addr>, Option<Ipv6Addr>);
        let mut attach: Vec<(String, String, &str, Addresses, &str)> = Vec::new();
        let cp_ns = Self::ns(cluster, "cp", "apiserver");
        namespaces.push(cp_ns.clone());
        attach.push((
            cp_ns,
            "eth0".into(),
            &self.control_plane.segment,
            (
                Some(self.control_plane.address),
                self.control_plane.address6,
            ),
            "cp",
        ));
        for r in &self.routers {
            let ns = Self::ns(cluster, "router", &r.name);
            namespaces.push(ns.clone());
            for leg in &r.legs {
                attach.push((
                    ns.clone(),
                    format!("e-{}", leg.segment),
                    &leg.segment,
                    (leg.address, leg.address6),
                    &r.name,
                ));
            }
        }
        for (role, h) in self.hosts() {
            let ns = Self::ns(cluster, role, &h.name);
            namespaces.push(ns.clone());
            attach.push((
                ns,
                "eth0".into(),
                &h.segment,
                (h.ipv4(), h.address6),
                &h.name,
            ));
        }
        let mut ipv6_namespaces = Vec::new();

        for (i, (ns, ifname, segment, (addr, addr6), label)) in attach.iter().enumerate() {
            let Some(seg) = self.segment(segment) else {
                continue;
            };
            let seg_ns = Self::ns(cluster, "seg", segment);
            // Switch port names identify the host (`ip -n <segment ns> link` reads as a
            // patch panel) and stay unique through the index.
            let port: String = format!("p{i}-{label}").chars().take(15).collect();
            root.push(format!(
                "link add {ifname} netns {ns} type veth peer name {port} netns {seg_ns}"
            ));
            ports.entry(segment).or_default().push(port.clone());
            port_list.push((label.to_string(), segment.to_string(), port.clone()));
            let lines = per_ns.entry(ns.clone()).or_default();
            if !lines.iter().any(|l| l == "link set lo up") {
                lines.push("link set lo up".into());
            }
            if let (Some(addr), Some(cidr)) = (addr, seg.cidr) {
                lines.push(format!(
                    "addr add {addr}/{} dev {ifname}",
                    cidr.prefix_len()
                ));
            }
            if let (Some(addr6), Some(cidr6)) = (addr6, seg.cidr6) {
                // `nodad`: usable at once, like an IPv4 address (see IPV6_SYSCTLS).
                lines.push(format!(
                    "addr add {addr6}/{} dev {ifname} nodad",
                    cidr6.prefix_len()
                ));
                if !ipv6_namespaces.contains(ns) {
                    ipv6_namespaces.push(ns.clone());
                }
            }
            lines.push(format!("link set {ifname} up"));
        }
        for (segment, ports) in ports {
            let lines = per_ns.entry(Self::ns(cluster, "seg", segment)).or_default();
            for p in ports {
                lines.push(format!("link set {p} master br0"));
                lines.push(format!("link set {p} up"));
            }
        }
        // Routes to other segments through routers (hosts and the control plane only).
        let mut routed: Vec<(String, &str)> = vec![(
            Self::ns(cluster, "cp", "apiserver"),
            self.control_plane.segment.as_str(),
        )];
        routed.extend(
            self.hosts()
                .map(|(role, h)| (Self::ns(cluster, role, &h.name), h.segment.as_str())),
        );
        for (ns, segment) in routed {
            // Each family on its own: a segment without IPv4 (IPv6) has no router leg with an
            // IPv4 (IPv6) address, so it gets no route of that family.
            let routes: Vec<(String, String)> = if self.default_routes {
                // One default route per family via the (first) router leg on the segment.
                let v4 = self.gateway_of(segment).map(|via| via.to_string());
                let v6 = self.gateway6_of(segment).map(|via| via.to_string());
                v4.into_iter()
                    .chain(v6)
                    .map(|via| ("default".to_string(), via))
                    .collect()
            } else {
                let v4 = self.routes_from(segment).into_iter();
                let v4 = v4.map(|(dst, via)| (dst.to_string(), via.to_string()));
                let v6 = self.routes6_from(segment).into_iter();
                v4.chain(v6.map(|(dst, via)| (dst.to_string(), via.to_string())))
                    .collect()
            };
            for (dst, via) in routes {
                per_ns
                    .entry(ns.clone())
                    .or_default()
                    .push(format!("route add {dst} via {via} dev eth0"));
            }
        }
        for (role, h) in self.hosts() {
            for r in &h.routes {
                let proto = r
                    .proto
                    .as_deref()
                    .map(|p| format!(" proto {p}"))
                    .unwrap_or_default();
                per_ns
                    .entry(Self::ns(cluster, role, &h.name))
                    .or_default()
                    .push(format!("route add {} via {}{proto}", r.dst, r.via));
            }
        }
        // Kubelet nodes reach Services (the API server's `kubernetes` Service above all, which
        // in-cluster clients use) through kube-proxy's DNAT. A locally generated packet needs a
        // route before that DNAT happens, so every node routes the Service range towards the
        // control plane: directly on its segment, or through the router leg that reaches it.
        if self.kubelet {
            let cp_segment = self.control_plane.segment.as_str();
            for n in &self.nodes {
                let via = if n.segment == cp_segment {
                    Some(self.control_plane.address)
                } else {
                    self.routes_from(&n.segment)
                        .into_iter()
                        .find(|(dst, _)| dst.contains(&self.control_plane.address))
                        .map(|(_, via)| via)
                        .or_else(|| self.gateway_of(&n.segment))
                };
                if let Some(via) = via {
                    per_ns
                        .entry(Self::ns(cluster, "node", &n.name))
                        .or_default()
                        .push(format!("route add {SERVICE_CIDR} via {via} dev eth0"));
                }
            }
        }

        let mut batches = vec![Batch {
            ns: None,
            lines: namespaces
                .iter()
                .map(|ns| format!("netns add {ns}"))
                .collect(),
        }];
        batches.push(Batch {
            ns: None,
            lines: root,
        });
        // Segments first (bridges exist before ports are enslaved), then everything else.
        for ns in &namespaces {
            if let Some(lines) = per_ns.remove(ns) {
                batches.push(Batch {
                    ns: Some(ns.clone()),
                    lines,
                });
            }
        }
        let mut sysctls: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &self.routers {
            let forwarding = sysctls
                .entry(Self::ns(cluster, "router", &r.name))
                .or_default();
            forwarding.push("net.ipv4.ip_forward=1".into());
            if r.legs.iter().any(|l| l.address6.is_some()) {
                // In the router's namespace only, like ip_forward.
                forwarding.push("net.ipv6.conf.all.forwarding=1".into());
            }
        }
        if let Some(mode) = self.rp_filter {
            for (role, h) in self.hosts() {
                sysctls
                    .entry(Self::ns(cluster, role, &h.name))
                    .or_default()
                    .extend([
                        format!("net.ipv4.conf.all.rp_filter={mode}"),
                        format!("net.ipv4.conf.default.rp_filter={mode}"),
                        format!("net.ipv4.conf.eth0.rp_filter={mode}"),
                    ]);
            }
        }
        SetupPlan {
            namespaces,
            batches,
            sysctls,
            ports: port_list,
            ipv6_namespaces,
        }
    }
}

/// A segment's prefixes for messages: `192.168.50.0/24, fd00:50::/64`.
fn prefixes(s: &Segment) -> String {
    let v4 = s.cidr.map(|c| c.to_string());
    let v6 = s.cidr6.map(|c| c.to_string());
    v4.into_iter().chain(v6).collect::<Vec<_>>().join(", ")
}

fn check_name(name: &str, max: usize) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= max
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-'),
        "`{name}` is not a valid name: use 1-{max} lowercase letters, digits and inner dashes"
    );
    Ok(())
}

/// Ready-made topologies the tests and `make up` use.
pub mod presets {
    use super::*;

    fn host(name: &str, segment: &str, address: [u8; 4]) -> Host {
        Host {
            name: name.into(),
            segment: segment.into(),
            address: address.into(),
            address6: None,
            labels: BTreeMap::new(),
            routes: Vec::new(),
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse()
            .unwrap_or_else(|_| unreachable!("preset CIDR {s} is valid"))
    }

    /// `nodes` nodes and one client on one segment `lan` (192.168.50.0/24).
    pub fn one_segment(nodes: usize) -> Topology {
        Topology {
            segments: vec![Segment {
                name: "lan".into(),
                cidr: Some(net("192.168.50.0/24")),
                cidr6: None,
            }],
            control_plane: ControlPlane {
                segment: "lan".into(),
                address: [192, 168, 50, 2].into(),
                address6: None,
                controller_manager: true,
            },
            routers: vec![],
            nodes: (0..nodes)
                .map(|i| {
                    host(
                        &format!("node-{}", (b'a' + i as u8) as char),
                        "lan",
                        [192, 168, 50, 11 + i as u8],
                    )
                })
                .collect(),
            clients: vec![host("client", "lan", [192, 168, 50, 100])],
            kubelet: false,
            default_routes: false,
            rp_filter: None,
        }
    }

    /// The reference topology of the design brief: segment `lan-a` with the control plane,
    /// nodes a–c and a client; segment `lan-b` with node d; router `r1` between them.
    ///
    /// ```text
    ///  cp .2   node-a .11  node-b .12  node-c .13  client .100      node-d .11
    ///   |         |           |           |          |                 |
    ///  ===================== lan-a 192.168.50.0/24 ===        === lan-b 192.168.60.0/24 ===
    ///                               |  .1                          |  .1
    ///                               +------------ r1 --------------+
    /// ```
    pub fn two_segments() -> Topology {
        let mut t = one_segment(3);
        t.segments.push(Segment {
            name: "lan-b".into(),
            cidr: Some(net("192.168.60.0/24")),
            cidr6: None,
        });
        t.segments[0].name = "lan-a".into();
        t.control_plane.segment = "lan-a".into();
        for h in t.nodes.iter_mut().chain(t.clients.iter_mut()) {
            h.segment = "lan-a".into();
        }
        t.nodes.push(host("node-d", "lan-b", [192, 168, 60, 11]));
        t.routers.push(Router {
            name: "r1".into(),
            legs: vec![
                Leg {
                    segment: "lan-a".into(),
                    address: Some([192, 168, 50, 1].into()),
                    address6: None,
                },
                Leg {
                    segment: "lan-b".into(),
                    address: Some([192, 168, 60, 1].into()),
                    address6: None,
                },
            ],
        });
        t
    }

    /// The node label BGP peers select the nodes of a rack by.
    pub const ZONE: &str = "topology.kubernetes.io/zone";

    /// `t` with every node labelled with its rack ([`ZONE`]): `rack-a` on segment lan-a,
    /// `rack-b` on lan-b (the segment's name after `lan-`).
    pub fn racks(mut t: Topology) -> Topology {
        for node in &mut t.nodes {
            let rack = node.segment.strip_prefix("lan-").unwrap_or(&node.segment);
            node.labels.insert(ZONE.into(), format!("rack-{rack}"));
        }
        t
    }

    /// [`two_segments`] the way real networks are: the control plane behind the router on a
    /// segment of its own (`lan-cp`, 192.168.40.0/24); every host reaches other segments
    /// through a default route; strict reverse-path filtering (`rp_filter=1`, the RHEL and CIS
    /// default) on nodes and clients; and nodes carrying routes of other origins, as boot
    /// scripts (`boot`), DHCP (`dhcp`) and administrators (`static`) leave them.
    ///
    /// ```text
    ///  node-a .11  node-b .12  node-c .13  client .100          node-d .11
    ///   |            |           |           |                    |
    ///  ============== lan-a 192.168.50.0/24 ====      ==== lan-b 192.168.60.0/24 ====
    ///                     |  .1                            |  .1
    ///                     +------------- r1 ---------------+
    ///                                     | .1
    ///                    ==== lan-cp 192.168.40.0/24 ====  cp .2
    /// ```
    pub fn realistic() -> Topology {
        let mut t = two_segments();
        t.segments.push(Segment {
            name: "lan-cp".into(),
            cidr: Some(net("192.168.40.0/24")),
            cidr6: None,
        });
        t.control_plane.segment = "lan-cp".into();
        t.control_plane.address = [192, 168, 40, 2].into();
        t.routers[0].legs.push(Leg {
            segment: "lan-cp".into(),
            address: Some([192, 168, 40, 1].into()),
            address6: None,
        });
        t.default_routes = true;
        t.rp_filter = Some(1);
        let extra = |dst: &str, via: [u8; 4], proto: Option<&str>| ExtraRoute {
            dst: net(dst),
            via: via.into(),
            proto: proto.map(str::to_string),
        };
        for n in &mut t.nodes {
            n.routes = match n.name.as_str() {
                "node-a" => vec![extra("203.0.113.0/24", [192, 168, 50, 1], None)],
                "node-b" => vec![extra("198.51.100.0/24", [192, 168, 50, 1], Some("dhcp"))],
                "node-c" => vec![extra("192.0.2.0/24", [192, 168, 50, 1], Some("static"))],
                _ => vec![extra("192.0.2.0/24", [192, 168, 60, 1], Some("kernel"))],
            };
        }
        t
    }

    /// The IPv6 twin of an IPv4 preset address: `192.168.50.11` → `fd00:50::11`, the last
    /// two octets written as they read (in hex digits), so a test's addresses match across
    /// families at a glance.
    #[must_use]
    pub fn ipv6_twin(v4: Ipv4Addr) -> Ipv6Addr {
        let [_, _, seg, host] = v4.octets();
        format!("fd00:{seg}::{host}")
            .parse()
            .unwrap_or_else(|_| unreachable!("decimal octets are valid hex groups"))
    }

    /// `t` with an IPv6 prefix on every segment (the twin of its IPv4 prefix, a /64:
    /// 192.168.50.0/24 → fd00:50::/64) and an IPv6 address on every host, router leg and the
    /// control plane (the twin of its IPv4 address).
    fn with_ipv6(mut t: Topology) -> Topology {
        for s in &mut t.segments {
            s.cidr6 = s.cidr.map(|c| {
                Ipv6Net::new(ipv6_twin(c.network()), 64)
                    .unwrap_or_else(|_| unreachable!("/64 is a valid prefix length"))
            });
        }
        t.control_plane.address6 = Some(ipv6_twin(t.control_plane.address));
        for leg in t.routers.iter_mut().flat_map(|r| &mut r.legs) {
            leg.address6 = leg.address.map(ipv6_twin);
        }
        for h in t.nodes.iter_mut().chain(t.clients.iter_mut()) {
            h.address6 = h.ipv4().map(ipv6_twin);
        }
        t
    }

    /// [`one_segment`] dual-stack: `lan` also carries fd00:50::/64, and every node and the
    /// client have both addresses (node-a 192.168.50.11 and fd00:50::11, ...), registered as
    /// two InternalIPs (IPv4 first). One underlay for an IPv4 and an IPv6 network side by
    /// side (the datapath benchmark).
    pub fn one_segment_dual_stack(nodes: usize) -> Topology {
        with_ipv6(one_segment(nodes))
    }

    /// [`two_segments`] dual-stack: lan-a also carries fd00:50::/64 and lan-b fd00:60::/64;
    /// everything on them has both addresses (`.11` and `::11`), nodes register both
    /// InternalIPs (IPv4 first), and r1 forwards both families.
    ///
    /// ```text
    ///  cp .2 ::2  node-a .11 ::11  node-b .12 ::12  node-c .13 ::13  client .100 ::100
    ///   |            |               |               |               |
    ///  ======= lan-a 192.168.50.0/24 + fd00:50::/64 =======
    ///                      |  .1 ::1
    ///                      r1
    ///                      |  .1 ::1
    ///  ======= lan-b 192.168.60.0/24 + fd00:60::/64 =======  node-d .11 ::11
    /// ```
    pub fn two_segments_dual_stack() -> Topology {
        with_ipv6(two_segments())
    }

    /// [`two_segments`] IPv6-only: lan-a (fd00:50::/64) and lan-b (fd00:60::/64) have no
    /// IPv4 at all, so nodes register one IPv6 InternalIP. The control plane keeps IPv4 (its
    /// API server advertises it) on a dual-stack segment of its own behind r1, `lan-cp`
    /// (192.168.40.0/24 + fd00:40::/64), which nodes reach over IPv6 at fd00:40::2.
    ///
    /// ```text
    ///  node-a ::11  node-b ::12  node-c ::13  client ::100          node-d ::11
    ///   |            |           |           |                       |
    ///  ========== lan-a fd00:50::/64 ==========      ========== lan-b fd00:60::/64 ==========
    ///                     |  ::1                            |  ::1
    ///                     +-------------- r1 ---------------+
    ///                                     | .1 ::1
    ///              ==== lan-cp 192.168.40.0/24 + fd00:40::/64 ====  cp .2 ::2
    /// ```
    pub fn two_segments_ipv6_only() -> Topology {
        let mut t = two_segments();
        t.segments.push(Segment {
            name: "lan-cp".into(),
            cidr: Some(net("192.168.40.0/24")),
            cidr6: None,
        });
        t.control_plane.segment = "lan-cp".into();
        t.control_plane.address = [192, 168, 40, 2].into();
        t.routers[0].legs.push(Leg {
            segment: "lan-cp".into(),
            address: Some([192, 168, 40, 1].into()),
            address6: None,
        });
        let mut t = with_ipv6(t);
        let ipv6_only = ["lan-a", "lan-b"];
        for s in &mut t.segments {
            if ipv6_only.contains(&s.name.as_str()) {
                s.cidr = None;
            }
        }
        for leg in t.routers.iter_mut().flat_map(|r| &mut r.legs) {
            if ipv6_only.contains(&leg.segment.as_str()) {
                leg.address = None;
            }
        }
        for h in t.nodes.iter_mut().chain(t.clients.iter_mut()) {
            h.address = Ipv4Addr::UNSPECIFIED;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::presets::*;
    use super::*;

    #[test]
    fn the_realistic_preset_gives_hosts_a_default_route_strict_rp_filter_and_foreign_routes() {
        let t = realistic();
        t.validate().expect("valid");
        let plan = t.setup_plan("t1");
        let lines = |ns: &str| -> Vec<String> {
            plan.batches
                .iter()
                .filter(|b| b.ns.as_deref() == Some(ns))
                .flat_map(|b| b.lines.clone())
                .collect()
        };
        let node_d = lines("cw-t1-node-node-d");
        assert!(node_d.contains(&"route add default via 192.168.60.1 dev eth0".to_string()));
        assert!(
            !node_d
                .iter()
                .any(|l| l.starts_with("route add 192.168.50.0/24"))
        );
        assert!(
            node_d.contains(&"route add 192.0.2.0/24 via 192.168.60.1 proto kernel".to_string())
        );
        assert!(
            lines("cw-t1-node-node-a")
                .contains(&"route add 203.0.113.0/24 via 192.168.50.1".to_string())
        );
        assert!(
            lines("cw-t1-cp-apiserver")
                .contains(&"route add default via 192.168.40.1 dev eth0".to_string())
        );
        assert!(
            plan.sysctls["cw-t1-client-client"]
                .contains(&"net.ipv4.conf.all.rp_filter=1".to_string())
        );
        assert!(!plan.sysctls.contains_key("cw-t1-cp-apiserver"));
        // Routers keep only their own segments: no default route leads out of the machine.
        assert!(
            !lines("cw-t1-router-r1")
                .iter()
                .any(|l| l.contains("default"))
        );
    }

    #[test]
    fn racks_label_every_node_with_the_rack_of_its_segment() {
        let t = racks(two_segments());
        let zones: Vec<(&str, &str)> = t
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.labels[ZONE].as_str()))
            .collect();
        assert_eq!(
            zones,
            [
                ("node-a", "rack-a"),
                ("node-b", "rack-a"),
                ("node-c", "rack-a"),
                ("node-d", "rack-b")
            ]
        );
    }

    #[test]
    fn presets_are_valid() {
        one_segment(3).validate().expect("one segment");
        two_segments().validate().expect("two segments");
        realistic().validate().expect("realistic");
    }

    type Mutation = Box<dyn Fn(&mut Topology)>;

    /// Each case's mutation of `base()` fails validation with an error containing its text.
    fn assert_refused(base: fn() -> Topology, cases: Vec<(&str, Mutation, &str)>) {
        for (name, mutate, want) in cases {
            let mut t = base();
            mutate(&mut t);
            let err = format!("{:#}", t.validate().expect_err(name));
            assert!(
                err.contains(want),
                "{name}: `{err}` does not contain `{want}`"
            );
        }
    }

    #[test]
    fn validation_names_the_wrong_entry() {
        let cases: Vec<(&str, Mutation, &str)> = vec![
            (
                "address outside segment",
                Box::new(|t| t.nodes[0].address = [10, 0, 0, 1].into()),
                "not a host address of segment",
            ),
            (
                "duplicate address",
                Box::new(|t| t.nodes[1].address = t.nodes[0].address),
                "both have address",
            ),
            (
                "unknown segment",
                Box::new(|t| t.nodes[0].segment = "nope".into()),
                "not declared",
            ),
            (
                "duplicate name",
                Box::new(|t| t.nodes[1].name = t.nodes[0].name.clone()),
                "used twice",
            ),
            (
                "bad name",
                Box::new(|t| t.nodes[0].name = "Node_A".into()),
                "not a valid name",
            ),
            (
                "network address",
                Box::new(|t| t.nodes[0].address = [192, 168, 50, 0].into()),
                "not a host address",
            ),
            (
                "one-legged router",
                Box::new(|t| {
                    t.routers[0].legs.pop();
                }),
                "at least two segments",
            ),
            (
                "overlapping segments",
                Box::new(|t| t.segments[1].cidr = Some("192.168.50.128/25".parse().expect("cidr"))),
                "overlap",
            ),
        ];
        assert_refused(two_segments, cases);
    }

    #[test]
    fn hosts_get_routes_to_other_segments_via_their_router_leg_and_no_default_route() {
        let t = two_segments();
        assert_eq!(
            t.routes_from("lan-a"),
            vec![(
                "192.168.60.0/24".parse().expect("cidr"),
                [192, 168, 50, 1].into()
            )]
        );
        assert_eq!(
            t.routes_from("lan-b"),
            vec![(
                "192.168.50.0/24".parse().expect("cidr"),
                [192, 168, 60, 1].into()
            )]
        );
        assert!(one_segment(2).routes_from("lan").is_empty());
    }

    #[test]
    fn setup_plan_creates_every_namespace_then_wires_veths_into_segment_bridges() {
        let plan = two_segments().setup_plan("t1");
        assert_eq!(plan.namespaces.len(), 2 + 1 + 1 + 4 + 1);
        assert!(plan.namespaces.iter().all(|ns| ns.starts_with("cw-t1-")));
        assert_eq!(plan.batches[0].lines[0], "netns add cw-t1-seg-lan-a");
        let veths = &plan.batches[1].lines;
        assert!(veths.contains(
            &"link add eth0 netns cw-t1-node-node-d type veth peer name p6-node-d netns cw-t1-seg-lan-b".to_string()
        ), "{veths:#?}");
        let node_d = plan
            .batches
            .iter()
            .find(|b| b.ns.as_deref() == Some("cw-t1-node-node-d"))
            .expect("node-d batch");
        assert_eq!(
            node_d.lines,
            vec![
                "link set lo up",
                "addr add 192.168.60.11/24 dev eth0",
                "link set eth0 up",
                "route add 192.168.50.0/24 via 192.168.60.1 dev eth0"
            ]
        );
        assert_eq!(
            plan.sysctls.get("cw-t1-router-r1"),
            Some(&vec!["net.ipv4.ip_forward=1".to_string()])
        );
        // Every interface name fits the kernel's 15-character limit.
        for line in plan.batches.iter().flat_map(|b| &b.lines) {
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.windows(2) {
                if w[0] == "add" && line.starts_with("link add") || w[0] == "name" {
                    assert!(w[1].len() <= 15, "interface name too long in `{line}`");
                }
            }
        }
    }

    #[test]
    fn topologies_read_from_yaml_like_a_diagram() {
        let yaml = r#"
segments: [{name: lan, cidr: 10.9.0.0/24}]
controlPlane: {segment: lan, address: 10.9.0.2}
nodes:
  - {name: n1, segment: lan, address: 10.9.0.11, labels: {rack: r1}}
"#;
        let t: Topology = serde_yaml::from_str(yaml).expect("parse");
        t.validate().expect("valid");
        assert!(t.control_plane.controller_manager);
        assert_eq!(t.nodes[0].labels["rack"], "r1");
    }

    fn plan_lines(plan: &SetupPlan, ns: &str) -> Vec<String> {
        plan.batches
            .iter()
            .filter(|b| b.ns.as_deref() == Some(ns))
            .flat_map(|b| b.lines.clone())
            .collect()
    }

    #[test]
    fn ipv4_presets_plan_no_ipv6_at_all() {
        for t in [one_segment(3), two_segments(), realistic()] {
            let plan = t.setup_plan("t1");
            assert!(plan.ipv6_namespaces.is_empty());
            assert!(
                plan.batches
                    .iter()
                    .flat_map(|b| &b.lines)
                    .all(|l| !l.contains(':')),
                "an IPv4 preset plans an IPv6 line"
            );
            assert!(
                plan.sysctls
                    .values()
                    .flatten()
                    .all(|kv| !kv.contains("ipv6"))
            );
        }
    }

    #[test]
    fn ipv6_presets_are_valid_and_closed_to_ula() {
        for t in [
            one_segment_dual_stack(2),
            two_segments_dual_stack(),
            two_segments_ipv6_only(),
        ] {
            t.validate().expect("valid");
            let ula: Ipv6Net = ULA.parse().expect("ula");
            assert!(
                t.segments
                    .iter()
                    .filter_map(|s| s.cidr6)
                    .all(|c| ula.contains(&c))
            );
        }
        assert_eq!(
            one_segment_dual_stack(2)
                .node("node-b")
                .expect("node-b")
                .addresses(),
            vec![
                IpAddr::from([192, 168, 50, 12]),
                "fd00:50::12".parse::<IpAddr>().expect("ip")
            ]
        );
    }

    #[test]
    fn dual_stack_hosts_get_both_addresses_and_routes_of_both_families_through_r1() {
        let t = two_segments_dual_stack();
        let node_d = t.node("node-d").expect("node-d");
        assert_eq!(
            node_d.addresses(),
            vec![
                IpAddr::from([192, 168, 60, 11]),
                "fd00:60::11".parse::<IpAddr>().expect("ip")
            ],
            "IPv4 first, as a dual-stack kubelet lists them"
        );
        assert_eq!(
            t.gateway6_of("lan-a"),
            Some("fd00:50::1".parse().expect("ip"))
        );
        assert_eq!(
            t.routes6_from("lan-a"),
            vec![(
                "fd00:60::/64".parse().expect("cidr"),
                "fd00:50::1".parse().expect("ip")
            )]
        );
        let plan = t.setup_plan("t1");
        assert_eq!(
            plan_lines(&plan, "cw-t1-node-node-d"),
            vec![
                "link set lo up",
                "addr add 192.168.60.11/24 dev eth0",
                "addr add fd00:60::11/64 dev eth0 nodad",
                "link set eth0 up",
                "route add 192.168.50.0/24 via 192.168.60.1 dev eth0",
                "route add fd00:50::/64 via fd00:60::1 dev eth0",
            ]
        );
        let r1 = plan_lines(&plan, "cw-t1-router-r1");
        assert!(r1.contains(&"addr add fd00:50::1/64 dev e-lan-a nodad".to_string()));
        assert!(r1.iter().all(|l| !l.starts_with("route")), "{r1:#?}");
        assert_eq!(
            plan.sysctls["cw-t1-router-r1"],
            vec!["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
        );
        // IPv6 stays on where addresses are, only there (the switches are plain L2).
        assert_eq!(plan.ipv6_namespaces.len(), 1 + 1 + 4 + 1, "{plan:#?}");
        assert!(
            plan.ipv6_namespaces
                .iter()
                .all(|ns| !ns.starts_with("cw-t1-seg-"))
        );
    }

    #[test]
    fn ipv6_only_hosts_get_no_ipv4_and_reach_the_control_plane_segment_over_ipv6() {
        let t = two_segments_ipv6_only();
        let node_a = t.node("node-a").expect("node-a");
        assert_eq!(node_a.ipv4(), None);
        assert_eq!(
            node_a.addresses(),
            vec!["fd00:50::11".parse::<IpAddr>().expect("ip")]
        );
        assert!(t.routes_from("lan-a").is_empty());
        assert_eq!(t.gateway_of("lan-a"), None);
        let plan = t.setup_plan("t1");
        assert_eq!(
            plan_lines(&plan, "cw-t1-node-node-a"),
            vec![
                "link set lo up",
                "addr add fd00:50::11/64 dev eth0 nodad",
                "link set eth0 up",
                "route add fd00:40::/64 via fd00:50::1 dev eth0",
                "route add fd00:60::/64 via fd00:50::1 dev eth0",
            ]
        );
        // The control plane: IPv4 only to its own segment, IPv6 to the node segments.
        let cp = plan_lines(&plan, "cw-t1-cp-apiserver");
        assert!(cp.contains(&"addr add 192.168.40.2/24 dev eth0".to_string()));
        assert!(cp.contains(&"route add fd00:50::/64 via fd00:40::1 dev eth0".to_string()));
        assert!(
            !cp.iter().any(|l| l.starts_with("route add 192.")),
            "{cp:#?}"
        );
        // Nothing anywhere leads out of the machine.
        assert!(
            plan.batches
                .iter()
                .flat_map(|b| &b.lines)
                .all(|l| !l.contains("default"))
        );
    }

    #[test]
    fn default_routes_give_one_default_route_per_family() {
        let mut t = two_segments_dual_stack();
        t.default_routes = true;
        t.validate().expect("valid");
        let lines = plan_lines(&t.setup_plan("t1"), "cw-t1-node-node-d");
        assert!(lines.contains(&"route add default via 192.168.60.1 dev eth0".to_string()));
        assert!(lines.contains(&"route add default via fd00:60::1 dev eth0".to_string()));
    }

    #[test]
    fn validation_refuses_bad_ipv6_input_and_names_the_entry() {
        let ip6 = |s: &str| s.parse::<Ipv6Addr>().expect("ip");
        let net6 = |s: &str| s.parse::<Ipv6Net>().expect("cidr");
        let cases: Vec<(&str, Mutation, &str)> = vec![
            (
                "global prefix",
                Box::new(move |t| t.segments[1].cidr6 = Some(net6("2001:db8::/64"))),
                "segment `lan-b`: 2001:db8::/64 is not a ULA prefix",
            ),
            (
                "host bits",
                Box::new(move |t| t.segments[1].cidr6 = Some(net6("fd00:60::1/64"))),
                "has host bits set",
            ),
            (
                "prefix too long",
                Box::new(move |t| t.segments[1].cidr6 = Some(net6("fd00:60::/127"))),
                "too long a prefix",
            ),
            (
                "no prefix",
                Box::new(|t| {
                    t.segments[1].cidr = None;
                    t.segments[1].cidr6 = None;
                }),
                "needs a `cidr` (IPv4), a `cidr6` (IPv6) or both",
            ),
            (
                "address outside the prefix",
                Box::new(move |t| t.nodes[3].address6 = Some(ip6("fd00:50::99"))),
                "node `node-d` has address fd00:50::99, which is not a host address of segment `lan-b`",
            ),
            (
                "subnet-router anycast",
                Box::new(move |t| t.nodes[3].address6 = Some(ip6("fd00:60::"))),
                "not a host address",
            ),
            (
                "duplicate IPv6 address",
                Box::new(|t| t.nodes[1].address6 = t.nodes[0].address6),
                "node `node-b` and node `node-a` both have address fd00:50::11",
            ),
            (
                "overlapping IPv6 prefixes",
                Box::new(move |t| t.segments[1].cidr6 = Some(net6("fd00:50::/48"))),
                "overlap",
            ),
            (
                "IPv6 address on an IPv4-only segment",
                Box::new(|t| t.segments[1].cidr6 = None),
                "router `r1` has IPv6 address fd00:60::1, but segment `lan-b` has no `cidr6`",
            ),
            (
                "no IPv6 address on a dual-stack segment",
                Box::new(|t| t.clients[0].address6 = None),
                "client `client` needs an IPv6 `address6`",
            ),
            (
                "router leg without IPv6",
                Box::new(|t| t.routers[0].legs[1].address6 = None),
                "router `r1` needs an IPv6 `address6`",
            ),
        ];
        assert_refused(two_segments_dual_stack, cases);
        let mut dual_kubelet = two_segments_dual_stack();
        dual_kubelet.kubelet = true;
        dual_kubelet
            .validate()
            .expect("kubelet nodes on dual-stack segments register both addresses");
        let cases: Vec<(&str, Mutation, &str)> = vec![
            (
                "kubelet nodes without IPv4",
                Box::new(|t| t.kubelet = true),
                "kubelet nodes need an IPv4 address",
            ),
            (
                "IPv4 address on an IPv6-only segment",
                Box::new(|t| t.nodes[0].address = [192, 168, 50, 11].into()),
                "node `node-a` has IPv4 address 192.168.50.11, but segment `lan-a` is IPv6-only",
            ),
            (
                "control plane without IPv4",
                Box::new(|t| t.control_plane.segment = "lan-a".into()),
                "the control plane needs IPv4",
            ),
        ];
        assert_refused(two_segments_ipv6_only, cases);
    }

    #[test]
    fn ipv6_only_and_dual_stack_topologies_read_from_yaml() {
        let yaml = r#"
segments:
  - {name: lan, cidr: 10.9.0.0/24, cidr6: "fd00:9::/64"}
  - {name: v6, cidr6: "fd00:10::/64"}
controlPlane: {segment: lan, address: 10.9.0.2, address6: "fd00:9::2"}
routers:
  - name: r1
    legs: [{segment: lan, address: 10.9.0.1, address6: "fd00:9::1"}, {segment: v6, address6: "fd00:10::1"}]
nodes:
  - {name: n1, segment: lan, address: 10.9.0.11, address6: "fd00:9::11"}
  - {name: n2, segment: v6, address6: "fd00:10::11"}
"#;
        let t: Topology = serde_yaml::from_str(yaml).expect("parse");
        t.validate().expect("valid");
        assert_eq!(t.nodes[1].ipv4(), None);
        assert_eq!(t.nodes[0].addresses().len(), 2);
        // Written back, an IPv6-only host has no `address` at all.
        let back = serde_yaml::to_string(&t.nodes[1]).expect("yaml");
        assert!(!back.contains("address:"), "{back}");
    }
}
