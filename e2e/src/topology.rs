//! Test topologies declared as data: L2 segments (a Linux bridge each, in its own namespace),
//! routers joining segments, the control plane, nodes and non-node clients.
//!
//! A scenario reads like a diagram (YAML or the builder below). Everything here is pure:
//! [`Topology::validate`] checks the declaration and [`Topology::setup_plan`] turns it into the
//! iproute2 batches the harness runs, so both are unit-tested without root.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail, ensure};
use ipnet::Ipv4Net;
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
    pub cidr: Ipv4Net,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlane {
    pub segment: String,
    pub address: Ipv4Addr,
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
    pub address: Ipv4Addr,
}

/// A node or client: one underlay interface `eth0` on one segment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Host {
    pub name: String,
    pub segment: String,
    pub address: Ipv4Addr,
    /// Node labels (nodes only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Routes the host has besides the harness's, as boot scripts, DHCP or an administrator
    /// leave them (`ip route add <dst> via <via> [proto <proto>]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<ExtraRoute>,
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
}

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
        let mut seg_names = BTreeSet::new();
        for (i, s) in self.segments.iter().enumerate() {
            check_name(&s.name, MAX_SEGMENT_NAME).with_context(|| format!("segment {i}"))?;
            ensure!(
                seg_names.insert(&s.name),
                "segment `{}` is declared twice",
                s.name
            );
            for other in &self.segments[..i] {
                ensure!(
                    !other.cidr.contains(&s.cidr.network())
                        && !s.cidr.contains(&other.cidr.network()),
                    "segments `{}` ({}) and `{}` ({}) overlap",
                    other.name,
                    other.cidr,
                    s.name,
                    s.cidr
                );
            }
        }
        let mut addrs = BTreeMap::new();
        let mut claim = |who: String, segment: &str, addr: Ipv4Addr| -> Result<()> {
            let seg = self.segment(segment).with_context(|| {
                format!("{who} is on segment `{segment}`, which is not declared")
            })?;
            ensure!(
                seg.cidr.contains(&addr)
                    && addr != seg.cidr.network()
                    && addr != seg.cidr.broadcast(),
                "{who} has address {addr}, which is not a host address of segment `{segment}` ({})",
                seg.cidr
            );
            if let Some(prev) = addrs.insert(addr, who.clone()) {
                bail!("{who} and {prev} both have address {addr}");
            }
            Ok(())
        };
        claim(
            "the control plane".into(),
            &self.control_plane.segment,
            self.control_plane.address,
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
                claim(format!("router `{}`", r.name), &leg.segment, leg.address)?;
            }
        }
        for (role, h) in self.hosts() {
            check_name(&h.name, MAX_HOST_NAME).with_context(|| format!("{role} name"))?;
            ensure!(
                host_names.insert(&h.name),
                "name `{}` is used twice",
                h.name
            );
            claim(format!("{role} `{}`", h.name), &h.segment, h.address)?;
            for r in &h.routes {
                let on_link = self
                    .segment(&h.segment)
                    .is_some_and(|s| s.cidr.contains(&r.via));
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
        ensure!(
            !self.default_routes
                || self
                    .hosts()
                    .all(|(_, h)| self.segments.len() == 1 || self.gateway_of(&h.segment).is_some()),
            "defaultRoutes needs a router leg on every segment with hosts"
        );
        ensure!(
            self.rp_filter.is_none_or(|m| m <= 2),
            "rpFilter must be 0, 1 or 2"
        );
        Ok(())
    }

    /// The default gateway of hosts on `segment` (with `default_routes`): the first router
    /// leg on it.
    pub fn gateway_of(&self, segment: &str) -> Option<Ipv4Addr> {
        self.routers
            .iter()
            .flat_map(|r| &r.legs)
            .find(|l| l.segment == segment)
            .map(|l| l.address)
    }

    /// Routes a host on `segment` needs: every other segment reachable through a router with a
    /// leg on `segment`, via that leg. No default route, so nothing can lead out of the machine.
    pub fn routes_from(&self, segment: &str) -> Vec<(Ipv4Net, Ipv4Addr)> {
        let mut routes = BTreeMap::new();
        for r in &self.routers {
            let Some(gw) = r.legs.iter().find(|l| l.segment == segment) else {
                continue;
            };
            for leg in r.legs.iter().filter(|l| l.segment != segment) {
                if let Some(seg) = self.segment(&leg.segment) {
                    routes.entry(seg.cidr).or_insert(gw.address);
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
        // (namespace, interface, segment, address, label) for every underlay attachment.
        let mut attach: Vec<(String, String, &str, Ipv4Addr, &str)> = Vec::new();
        let cp_ns = Self::ns(cluster, "cp", "apiserver");
        namespaces.push(cp_ns.clone());
        attach.push((
            cp_ns,
            "eth0".into(),
            &self.control_plane.segment,
            self.control_plane.address,
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
                    leg.address,
                    &r.name,
                ));
            }
        }
        for (role, h) in self.hosts() {
            let ns = Self::ns(cluster, role, &h.name);
            namespaces.push(ns.clone());
            attach.push((ns, "eth0".into(), &h.segment, h.address, &h.name));
        }

        for (i, (ns, ifname, segment, addr, label)) in attach.iter().enumerate() {
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
            lines.push(format!(
                "addr add {addr}/{} dev {ifname}",
                seg.cidr.prefix_len()
            ));
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
            let routes = self.routes_from(segment);
            if self.default_routes {
                // One default route via the (first) router leg on the segment.
                if let Some(via) = self.gateway_of(segment) {
                    per_ns
                        .entry(ns.clone())
                        .or_default()
                        .push(format!("route add default via {via} dev eth0"));
                }
                continue;
            }
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
            sysctls
                .entry(Self::ns(cluster, "router", &r.name))
                .or_default()
                .push("net.ipv4.ip_forward=1".into());
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
        }
    }
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
                cidr: net("192.168.50.0/24"),
            }],
            control_plane: ControlPlane {
                segment: "lan".into(),
                address: [192, 168, 50, 2].into(),
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
            cidr: net("192.168.60.0/24"),
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
                    address: [192, 168, 50, 1].into(),
                },
                Leg {
                    segment: "lan-b".into(),
                    address: [192, 168, 60, 1].into(),
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
            cidr: net("192.168.40.0/24"),
        });
        t.control_plane.segment = "lan-cp".into();
        t.control_plane.address = [192, 168, 40, 2].into();
        t.routers[0].legs.push(Leg {
            segment: "lan-cp".into(),
            address: [192, 168, 40, 1].into(),
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

    #[test]
    fn validation_names_the_wrong_entry() {
        type Mutation = Box<dyn Fn(&mut Topology)>;
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
                Box::new(|t| t.segments[1].cidr = "192.168.50.128/25".parse().expect("cidr")),
                "overlap",
            ),
        ];
        for (name, mutate, want) in cases {
            let mut t = two_segments();
            mutate(&mut t);
            let err = format!("{:#}", t.validate().expect_err(name));
            assert!(
                err.contains(want),
                "{name}: `{err}` does not contain `{want}`"
            );
        }
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
}
