//! `kubectl causeway status`: the whole cluster on one screen, computed from a [`Snapshot`]
//! (pure, so every verdict is unit-tested): each network with its mode, ranges, readiness and
//! subnets left; the nodes whose agent is silent, failing or not programmed yet; BGP sessions
//! that are down; each gateway with its active host and clients; the operator's leadership.
//! Every problem comes with the command that shows more. The binary exits 1 when there is a
//! problem, so scripts and `watch` can use it; `-o json` prints the same [`Report`].

use std::fmt::Write as _;

use causeway_crds::conditions::{find_condition, types};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use serde::Serialize;

use crate::snapshot::{Snapshot, lease_age};

/// The BGP state that exchanges routes; any other is a session down.
const ESTABLISHED: &str = "Established";

/// One PodNetwork.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub name: String,
    pub mode: String,
    /// `cidr`, then `secondaryCidr` on a dual-stack network.
    pub ranges: Vec<String>,
    /// The Ready condition's status (`True`, `False`, `Unknown` when the operator has not
    /// written one).
    pub ready: String,
    pub reason: String,
    pub selected_nodes: i32,
    pub programmed_nodes: i32,
    /// Node subnets left in `cidr` (and `secondaryCidr`).
    pub subnets_free: Vec<i64>,
    pub mtu: Option<i32>,
}

/// One OverlayGateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gateway {
    pub name: String,
    pub strategy: String,
    pub network: String,
    pub ready: String,
    pub reason: String,
    /// The bridge host holding the VIP (BridgeHosts).
    pub active_host: Option<String>,
    /// ClientJoin clients joined, of those listed.
    pub clients_joined: usize,
    pub clients: usize,
}

/// Counts over every node's NodeSubnet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Nodes {
    pub total: usize,
    pub programmed: usize,
    pub failing: usize,
    pub pending: usize,
    pub silent: usize,
    pub bgp_sessions: usize,
    pub bgp_sessions_down: usize,
}

/// Something wrong, with the object it is about and the command that shows more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// `podnetwork/overlay`, `nodesubnet/overlay-10-247-2-0-24`, `lease/...`.
    pub object: String,
    /// The node it is about, when it is about one.
    pub node: Option<String>,
    pub what: String,
    /// A command that shows more.
    pub next: String,
    /// For a per-node problem that many nodes can share: its kind, and how a grouped line
    /// names this node ([`render`] groups them).
    #[serde(skip)]
    group: Option<(GroupKind, String)>,
}

/// What `status` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub namespace: String,
    /// The operator replica holding the leader Lease, while it is renewed.
    pub operator_leader: Option<String>,
    pub networks: Vec<Network>,
    pub nodes: Nodes,
    pub gateways: Vec<Gateway>,
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether nothing is wrong (the exit code is 0 exactly then).
    #[must_use]
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

fn condition_of<'a>(conditions: Option<&'a [Condition]>, type_: &str) -> Option<&'a Condition> {
    conditions.and_then(|c| find_condition(c, type_))
}

fn status_and_reason(c: Option<&Condition>) -> (String, String) {
    c.map_or_else(
        || ("Unknown".to_owned(), String::new()),
        |c| (c.status.clone(), c.reason.clone()),
    )
}

/// The report of `s`.
#[must_use]
pub fn report(s: &Snapshot) -> Report {
    let ns = &s.namespace;
    let mut problems = Vec::new();

    // The operator: someone must hold and renew its Lease.
    let operator_leader = match &s.operator {
        None => {
            if !s.networks.is_empty() {
                problems.push(Problem {
                    object: format!("lease/{ns}/causeway-operator"),
                    node: None,
                    what: format!("no operator has ever led in namespace {ns}: nothing allocates node subnets or reports on networks (is the release in another namespace? kubectl causeway -n <namespace> status)"),
                    next: format!("kubectl -n {ns} get pods -l app.kubernetes.io/component=operator"),
 group: None,
});
            }
            None
        }
        Some(lease) => {
            let holder = lease.spec.as_ref().and_then(|l| l.holder_identity.clone());
            match lease_age(lease, s.now) {
                Some((age, duration)) if age <= duration => holder,
                age => {
                    problems.push(Problem {
                        object: format!("lease/{ns}/{}", lease.name_any()),
                        node: None,
                        what: match age {
                            Some((age, _)) => format!("no operator replica leads: the leader Lease was last renewed {age}s ago (by {})", holder.as_deref().unwrap_or("nobody")),
                            None => "no operator replica leads: the leader Lease was never renewed".to_owned(),
                        },
                        next: format!("kubectl -n {ns} get pods -l app.kubernetes.io/component=operator"),
 group: None,
});
                    None
                }
            }
        }
    };

    let mut networks = Vec::new();
    for pn in &s.networks {
        let name = pn.name_any();
        let st = pn.status.as_ref();
        let conditions = st.map(|st| st.conditions.as_slice());
        let ready = condition_of(conditions, types::READY);
        let (ready_status, reason) = status_and_reason(ready);
        let mut ranges = vec![pn.spec.cidr.clone()];
        ranges.extend(pn.spec.secondary_cidr.clone());
        let mut free = vec![st.map_or(0, |st| st.subnets_free)];
        free.extend(st.and_then(|st| st.secondary_subnets_free));
        networks.push(Network {
            name: name.clone(),
            mode: format!("{:?}", pn.spec.mode),
            ranges,
            ready: ready_status.clone(),
            reason,
            selected_nodes: st.map_or(0, |st| st.selected_nodes),
            programmed_nodes: st.map_or(0, |st| st.programmed_nodes),
            subnets_free: free,
            mtu: st.and_then(|st| st.effective_mtu),
        });
        let next = format!("kubectl describe podnetwork {name}");
        if pn.metadata.deletion_timestamp.is_some() {
            problems.push(Problem {
                object: format!("podnetwork/{name}"),
                node: None,
                what: "being deleted: waiting for its agents to clean their nodes up".to_owned(),
                next: next.clone(),
                group: None,
            });
            continue;
        }
        match ready {
            Some(c) if c.status == "True" => {}
            Some(c) => problems.push(Problem {
                object: format!("podnetwork/{name}"),
                node: None,
                what: format!("Ready={} {}: {}", c.status, c.reason, c.message),
                next: next.clone(),
                group: None,
            }),
            None => problems.push(Problem {
                object: format!("podnetwork/{name}"),
                node: None,
                what: "no Ready condition yet: the operator has not reported on it".to_owned(),
                next: next.clone(),
                group: None,
            }),
        }
        for type_ in [types::DEGRADED, types::SUBNETS_EXHAUSTED] {
            if let Some(c) = condition_of(conditions, type_)
                .filter(|c| c.status == "True")
                // The same words as Ready's say nothing new.
                .filter(|c| ready.is_none_or(|r| r.message != c.message))
            {
                problems.push(Problem {
                    object: format!("podnetwork/{name}"),
                    node: None,
                    what: format!("{type_} {}: {}", c.reason, c.message),
                    next: next.clone(),
                    group: None,
                });
            }
        }
    }

    let mut nodes = Nodes::default();
    for sub in s
        .subnets
        .iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
    {
        let name = sub.name_any();
        let node = sub.spec.node_name.clone();
        nodes.total += 1;
        let next = format!("kubectl describe nodesubnet {name}");
        let object = format!("nodesubnet/{name}");
        let lease_name = causeway_kube::heartbeat::lease_name(&node);
        let heartbeat = s.heartbeats.iter().find(|l| l.name_any() == lease_name);
        let silent = match heartbeat.and_then(|l| lease_age(l, s.now)) {
            Some((age, duration)) if age > duration => Some(format!(
                "agent silent: no heartbeat for {age}s (Lease {ns}/{lease_name}, valid {duration}s); what it reported last may no longer hold"
            )),
            Some(_) => None,
            None if sub.status.is_some() => Some(format!(
                "agent silent: no heartbeat Lease {ns}/{lease_name} (is the agent running on {node}, or the release in another namespace?)"
            )),
            None => None,
        };
        let st = sub.status.as_ref();
        let programmed = condition_of(st.map(|st| st.conditions.as_slice()), types::PROGRAMMED);
        let is_silent = silent.is_some();
        if let Some(what) = silent {
            nodes.silent += 1;
            problems.push(Problem {
                object: object.clone(),
                node: Some(node.clone()),
                what,
                next: format!(
                    "kubectl -n {ns} get pods -o wide --field-selector spec.nodeName={node}"
                ),
                group: Some((GroupKind::Silent, node.clone())),
            });
        }
        match programmed {
            // A silent agent's last report is not counted as the node's state.
            Some(c) if is_silent && c.status == "True" => {}
            Some(c) if c.status == "True" => {
                let current = c
                    .observed_generation
                    .is_none_or(|g| Some(g) >= sub.metadata.generation);
                if current {
                    nodes.programmed += 1;
                } else {
                    nodes.pending += 1;
                }
            }
            Some(c) => {
                nodes.failing += 1;
                problems.push(Problem {
                    object: object.clone(),
                    node: Some(node.clone()),
                    what: format!("Programmed={} {}: {}", c.status, c.reason, c.message),
                    next: next.clone(),
                    group: Some((GroupKind::Failing, format!("{node} ({})", c.reason))),
                });
            }
            None => {
                nodes.pending += 1;
                problems.push(Problem {
                    object: object.clone(),
                    node: Some(node.clone()),
                    what: "not programmed yet: its agent has not reported (is one running on the node?)".to_owned(),
                    next: format!("kubectl -n {ns} get pods -o wide --field-selector spec.nodeName={node}"),
                    group: Some((GroupKind::Pending, node.clone())),
                });
            }
        }
        for session in st.map(|st| st.bgp_sessions.as_slice()).unwrap_or_default() {
            nodes.bgp_sessions += 1;
            if session.state != ESTABLISHED {
                nodes.bgp_sessions_down += 1;
                let why = if session.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", session.message)
                };
                problems.push(Problem {
                    object: object.clone(),
                    node: Some(node.clone()),
                    what: format!(
                        "BGP session to {} (AS {}) is {}{why}",
                        session.peer_address, session.peer_asn, session.state
                    ),
                    next: next.clone(),
                    group: Some((GroupKind::Bgp, format!("{node} → {}", session.peer_address))),
                });
            }
        }
    }

    let mut gateways = Vec::new();
    for gw in &s.gateways {
        let name = gw.name_any();
        let st = gw.status.as_ref();
        let ready = condition_of(st.map(|st| st.conditions.as_slice()), types::READY);
        let (ready_status, reason) = status_and_reason(ready);
        let clients = gw.spec.client_join.as_ref().map_or(0, |c| c.clients.len());
        let clients_joined = st.map_or(0, |st| st.clients.iter().filter(|c| c.joined).count());
        gateways.push(Gateway {
            name: name.clone(),
            strategy: format!("{:?}", gw.spec.strategy),
            network: gw.spec.network.clone(),
            ready: ready_status,
            reason,
            active_host: st.and_then(|st| st.active_host.clone()),
            clients_joined,
            clients,
        });
        match ready {
            Some(c) if c.status == "True" => {}
            Some(c) => problems.push(Problem {
                object: format!("overlaygateway/{name}"),
                node: None,
                what: format!("Ready={} {}: {}", c.status, c.reason, c.message),
                next: format!("kubectl describe overlaygateway {name}"),
                group: None,
            }),
            None => problems.push(Problem {
                object: format!("overlaygateway/{name}"),
                node: None,
                what: "no Ready condition yet: the operator has not reported on it".to_owned(),
                next: format!("kubectl describe overlaygateway {name}"),
                group: None,
            }),
        }
    }

    Report {
        namespace: ns.clone(),
        operator_leader,
        networks,
        nodes,
        gateways,
        problems,
    }
}

/// Left-aligned columns, three spaces apart, as kubectl prints them.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let _ = write!(line, "{cell:<w$}   ", w = widths[i]);
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The report as people read it.
#[must_use]
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Causeway (namespace {}): operator {}",
        r.namespace,
        r.operator_leader
            .as_deref()
            .map_or_else(|| "has no leader".to_owned(), |l| format!("led by {l}"))
    );
    out.push('\n');
    if r.networks.is_empty() {
        out.push_str("No PodNetworks: nodes get no pod network until one selects them (docs/examples/podnetwork-overlay.yaml).\n");
    } else {
        let mut rows = vec![
            [
                "NETWORK",
                "MODE",
                "RANGES",
                "READY",
                "REASON",
                "NODES",
                "SUBNETS FREE",
                "MTU",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for n in &r.networks {
            rows.push(vec![
                n.name.clone(),
                n.mode.clone(),
                n.ranges.join(","),
                n.ready.clone(),
                n.reason.clone(),
                format!("{}/{}", n.programmed_nodes, n.selected_nodes),
                n.subnets_free
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                n.mtu.map_or_else(|| "-".to_owned(), |m| m.to_string()),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out.push('\n');
    let n = &r.nodes;
    let _ = write!(
        out,
        "Nodes: {} with a subnet: {} programmed, {} failing, {} pending, {} silent",
        n.total, n.programmed, n.failing, n.pending, n.silent
    );
    if n.bgp_sessions > 0 {
        let _ = write!(
            out,
            "; BGP sessions: {} of {} established",
            n.bgp_sessions - n.bgp_sessions_down,
            n.bgp_sessions
        );
    }
    out.push('\n');
    if !r.gateways.is_empty() {
        out.push('\n');
        let mut rows = vec![
            [
                "GATEWAY", "STRATEGY", "NETWORK", "READY", "REASON", "ACTIVE", "CLIENTS",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for g in &r.gateways {
            rows.push(vec![
                g.name.clone(),
                g.strategy.clone(),
                g.network.clone(),
                g.ready.clone(),
                g.reason.clone(),
                g.active_host.clone().unwrap_or_else(|| "-".to_owned()),
                if g.clients == 0 {
                    "-".to_owned()
                } else {
                    format!("{}/{} joined", g.clients_joined, g.clients)
                },
            ]);
        }
        out.push_str(&table(&rows));
    }
    out.push('\n');
    if r.problems.is_empty() {
        out.push_str("No problems found.\n");
    } else {
        let _ = writeln!(out, "Problems ({}):", r.problems.len());
        let mut grouped: Vec<GroupKind> = Vec::new();
        for p in &r.problems {
            if let Some((kind, _)) = p.group {
                let same: Vec<&Problem> = r
                    .problems
                    .iter()
                    .filter(|q| q.group.as_ref().is_some_and(|(k, _)| *k == kind))
                    .collect();
                if same.len() > GROUP_OVER {
                    if !grouped.contains(&kind) {
                        grouped.push(kind);
                        render_group(&mut out, kind, &same, &r.namespace);
                    }
                    continue;
                }
            }
            let on = p
                .node
                .as_deref()
                .map_or_else(String::new, |n| format!(" (node {n})"));
            let _ = writeln!(out, "- {}{on}: {}", p.object, p.what);
            let _ = writeln!(out, "    more: {}", p.next);
        }
    }
    out
}

/// Node problems of one kind beyond this many are printed as one line naming a few nodes
/// (`-o json` lists every one): on a 100-node cluster still one screen.
const GROUP_OVER: usize = 3;

/// Nodes named in a grouped line before "and N more".
const GROUP_NAMES: usize = 5;

/// A kind of per-node problem that many nodes can share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GroupKind {
    Silent,
    Pending,
    Failing,
    Bgp,
}

impl GroupKind {
    /// How a grouped line says it, after the count.
    fn says(self) -> &'static str {
        match self {
            GroupKind::Silent => "agents silent (no heartbeat)",
            GroupKind::Pending => "nodes not programmed yet (no report from their agents)",
            GroupKind::Failing => "nodes failing to program",
            GroupKind::Bgp => "BGP sessions down",
        }
    }
}

/// One line for many nodes with the same kind of problem.
fn render_group(out: &mut String, kind: GroupKind, same: &[&Problem], namespace: &str) {
    let names: Vec<&str> = same
        .iter()
        .take(GROUP_NAMES)
        .filter_map(|p| p.group.as_ref().map(|(_, label)| label.as_str()))
        .collect();
    let more = if same.len() > GROUP_NAMES {
        format!(" and {} more", same.len() - GROUP_NAMES)
    } else {
        String::new()
    };
    let next = match kind {
        GroupKind::Silent | GroupKind::Pending => format!(
            "kubectl -n {namespace} get pods -o wide -l app.kubernetes.io/component=node-agent"
        ),
        GroupKind::Failing | GroupKind::Bgp => {
            "kubectl get nodesubnets -o wide (REASON), then kubectl describe nodesubnet <name>"
                .to_owned()
        }
    };
    let _ = writeln!(
        out,
        "- {} {}: {}{more}",
        same.len(),
        kind.says(),
        names.join(", ")
    );
    let _ = writeln!(out, "    more: {next}  (-o json lists each)");
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::v1alpha1::{
        BgpSessionStatus, NodeSubnetSpec, NodeSubnetStatus, PodNetworkSpec, PodNetworkStatus,
    };
    use causeway_crds::{NodeSubnet, PodNetwork};
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
    use k8s_openapi::jiff::{SignedDuration, Timestamp};

    fn now() -> Timestamp {
        "2026-12-07T08:00:00Z".parse().expect("time")
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(now()),
            observed_generation: Some(1),
        }
    }

    fn lease(name: &str, holder: &str, seconds_ago: i64, duration: i32) -> Lease {
        let mut l = Lease::default();
        l.metadata.name = Some(name.into());
        l.spec = Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(now() - SignedDuration::from_secs(seconds_ago))),
            ..LeaseSpec::default()
        });
        l
    }

    fn network(ready: Condition) -> PodNetwork {
        let spec: PodNetworkSpec = serde_json::from_value(serde_json::json!({
            "cidr": "10.247.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay"}))
        .expect("spec");
        let mut pn = PodNetwork::new("overlay", spec);
        pn.status = Some(PodNetworkStatus {
            conditions: vec![ready],
            selected_nodes: 2,
            programmed_nodes: 2,
            subnets_allocated: 2,
            subnets_free: 254,
            effective_mtu: Some(1450),
            ..PodNetworkStatus::default()
        });
        pn
    }

    fn subnet(node: &str, programmed: Option<Condition>, bgp: Vec<BgpSessionStatus>) -> NodeSubnet {
        let spec: NodeSubnetSpec = serde_json::from_value(serde_json::json!({
            "network": "overlay", "nodeName": node, "cidr": "10.247.1.0/24",
            "nodeAddress": "192.168.50.12"}))
        .expect("spec");
        let mut s = NodeSubnet::new(&format!("overlay-{node}"), spec);
        s.metadata.generation = Some(1);
        s.status = Some(NodeSubnetStatus {
            conditions: programmed.into_iter().collect(),
            bgp_sessions: bgp,
            ..NodeSubnetStatus::default()
        });
        s
    }

    fn healthy() -> Snapshot {
        let ok = || condition("Programmed", "True", "Programmed", "in place");
        Snapshot {
            namespace: "causeway-system".into(),
            networks: vec![network(condition(
                "Ready",
                "True",
                "AllNodesProgrammed",
                "2 of 2",
            ))],
            subnets: vec![
                subnet("node-a", Some(ok()), vec![]),
                subnet("node-b", Some(ok()), vec![]),
            ],
            heartbeats: vec![
                lease("causeway-agent-node-a", "node-a", 3, 40),
                lease("causeway-agent-node-b", "node-b", 5, 40),
            ],
            operator: Some(lease("causeway-operator", "causeway-operator-abc", 2, 15)),
            now: now(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_healthy_cluster_has_no_problems_and_says_so() {
        let r = report(&healthy());
        assert!(r.healthy(), "{:?}", r.problems);
        assert_eq!(r.operator_leader.as_deref(), Some("causeway-operator-abc"));
        assert_eq!(r.nodes.programmed, 2);
        let text = render(&r);
        assert!(
            text.contains("overlay   Overlay   10.247.0.0/16   True    AllNodesProgrammed   2/2"),
            "{text}"
        );
        assert!(text.contains("No problems found."), "{text}");
    }

    #[test]
    fn a_silent_agent_is_named_with_its_lease_and_the_command_to_look_at_its_pod() {
        let mut s = healthy();
        s.heartbeats[1] = lease("causeway-agent-node-b", "node-b", 95, 40);
        let r = report(&s);
        assert_eq!(r.nodes.silent, 1);
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        let p = &r.problems[0];
        assert_eq!(p.node.as_deref(), Some("node-b"));
        assert!(p.what.contains("no heartbeat for 95s"), "{}", p.what);
        assert!(
            p.what.contains("causeway-system/causeway-agent-node-b"),
            "{}",
            p.what
        );
        assert_eq!(
            p.next,
            "kubectl -n causeway-system get pods -o wide --field-selector spec.nodeName=node-b"
        );
    }

    #[test]
    fn failing_nodes_bgp_sessions_down_and_networks_not_ready_are_each_a_problem() {
        let mut s = healthy();
        s.networks[0] = network(condition(
            "Ready",
            "False",
            "NodesFailing",
            "1 of 2 nodes failed",
        ));
        s.subnets[0] = subnet(
            "node-a",
            Some(condition(
                "Programmed",
                "False",
                "UnderlayNotFound",
                "no interface holds 192.168.50.11",
            )),
            vec![],
        );
        s.subnets[1] = subnet(
            "node-b",
            Some(condition("Programmed", "True", "Programmed", "in place")),
            vec![
                BgpSessionStatus {
                    peer_address: "192.168.50.1".into(),
                    peer_asn: 64512,
                    state: "Active".into(),
                    message: "Connection refused".into(),
                    ..BgpSessionStatus::default()
                },
                BgpSessionStatus {
                    peer_address: "192.168.50.2".into(),
                    peer_asn: 64512,
                    state: "Established".into(),
                    ..BgpSessionStatus::default()
                },
            ],
        );
        let r = report(&s);
        let whats: Vec<&str> = r.problems.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(r.problems.len(), 3, "{whats:?}");
        assert!(
            whats[0].starts_with("Ready=False NodesFailing"),
            "{whats:?}"
        );
        assert!(
            whats[1].starts_with("Programmed=False UnderlayNotFound: no interface"),
            "{whats:?}"
        );
        assert_eq!(
            whats[2],
            "BGP session to 192.168.50.1 (AS 64512) is Active: Connection refused"
        );
        assert_eq!(
            r.problems[2].next,
            "kubectl describe nodesubnet overlay-node-b"
        );
        assert_eq!((r.nodes.bgp_sessions, r.nodes.bgp_sessions_down), (2, 1));
        let text = render(&r);
        assert!(text.contains("Problems (3):"), "{text}");
        assert!(text.contains("BGP sessions: 1 of 2 established"), "{text}");
    }

    #[test]
    fn an_exhausted_range_and_a_lapsed_operator_are_problems() {
        let mut s = healthy();
        let mut pn = network(condition(
            "Ready",
            "False",
            "SubnetsExhausted",
            "2 nodes wait",
        ));
        if let Some(st) = pn.status.as_mut() {
            st.subnets_free = 0;
            st.conditions.push(condition(
                "SubnetsExhausted",
                "True",
                "PoolExhausted",
                "cidr 10.247.0.0/16 has room for 256 node subnets of /24; 2 nodes wait for one",
            ));
        }
        s.networks[0] = pn;
        s.operator = Some(lease("causeway-operator", "causeway-operator-abc", 60, 15));
        let r = report(&s);
        assert_eq!(r.operator_leader, None);
        let whats: Vec<&str> = r.problems.iter().map(|p| p.what.as_str()).collect();
        assert!(
            whats[0].contains("last renewed 60s ago (by causeway-operator-abc)"),
            "{whats:?}"
        );
        assert!(
            whats
                .iter()
                .any(|w| w.starts_with("SubnetsExhausted PoolExhausted: cidr 10.247.0.0/16")),
            "{whats:?}"
        );
        assert!(render(&r).contains("   0   "), "subnets free 0 shown");
    }

    #[test]
    fn many_nodes_with_the_same_problem_take_one_line_and_json_keeps_each() {
        let mut s = healthy();
        for i in 0..10 {
            s.subnets
                .push(subnet(&format!("rack-{i:03}"), None, vec![]));
        }
        for sub in s.subnets.iter_mut().skip(2) {
            sub.status = None;
        }
        s.subnets[0] = subnet(
            "node-a",
            Some(condition(
                "Programmed",
                "False",
                "UnderlayNotFound",
                "no interface",
            )),
            vec![],
        );
        let r = report(&s);
        assert_eq!(r.problems.len(), 11, "{:?}", r.problems);
        let text = render(&r);
        assert!(
            text.contains("- 10 nodes not programmed yet (no report from their agents): rack-000, rack-001, rack-002, rack-003, rack-004 and 5 more"),
            "{text}"
        );
        assert!(
            text.contains("more: kubectl -n causeway-system get pods -o wide -l app.kubernetes.io/component=node-agent  (-o json lists each)"),
            "{text}"
        );
        // One failing node stays a line of its own, with its own command.
        assert!(
            text.contains(
                "- nodesubnet/overlay-node-a (node node-a): Programmed=False UnderlayNotFound"
            ),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("- ")).count(),
            2,
            "{text}"
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["problems"].as_array().map(Vec::len), Some(11));
    }

    #[test]
    fn a_node_without_any_report_is_pending_and_a_problem() {
        let mut s = healthy();
        s.subnets.push(subnet("node-c", None, vec![]));
        if let Some(st) = s.subnets[2].status.as_mut() {
            st.conditions.clear();
        }
        s.subnets[2].status = None;
        let r = report(&s);
        assert_eq!(r.nodes.pending, 1);
        assert_eq!(r.problems.len(), 1);
        assert!(
            r.problems[0].what.starts_with("not programmed yet"),
            "{:?}",
            r.problems
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["problems"][0]["node"], "node-c");
        assert_eq!(json["nodes"]["pending"], 1);
    }
}
