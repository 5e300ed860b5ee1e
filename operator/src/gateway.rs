//! OverlayGateway status (pure): which nodes let machines that are not nodes into a
//! PodNetwork, and the exact routes those machines must install (strategy RouteToNodes).
//!
//! RouteToNodes needs nothing from the agents beyond what every mode already does: a node
//! forwards a client's packet for one of its own pods to its bridge, and for another node's
//! pod into the network's path to that node (VXLAN, a route, or the on-link range). So the
//! gateway is the rendering: for every eligible node (selected by `routeToNodes.nodeSelector`,
//! holding a subnet, and on a segment of one of `clientCidrs`, since a route's next hop must
//! be on-link for the client), its subnet via its address; and when some nodes of the network
//! are not eligible, the whole pod range via the eligible ones, so their pods are reached
//! through the overlay. Each line is an `ip route` command, ready to paste.
//!
//! BridgeHosts and ClientJoin are not implemented yet: they are reported as such, never as
//! working.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use causeway_crds::conditions::{ConditionStatus, new_condition, reasons, set_condition, types};
use causeway_crds::v1alpha1::GatewayStrategy;
use causeway_crds::{OverlayGatewaySpec, OverlayGatewayStatus, PodNetworkSpec, selector};
use ipnet::Ipv4Net;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Reason: the strategy has no implementation in this operator version.
pub const STRATEGY_NOT_IMPLEMENTED: &str = "StrategyNotImplemented";
/// Reason: a client CIDR overlaps the pod range.
pub const CLIENT_CIDR_OVERLAPS_PODS: &str = "ClientCidrOverlapsPods";
/// Reason: a client CIDR or the selector cannot be used.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// One node of the gateway's network, as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node: String,
    pub subnet: Ipv4Net,
    pub address: Ipv4Addr,
    /// The agent's `status.underlayPrefix`, when reported.
    pub segment: Option<Ipv4Net>,
    pub labels: BTreeMap<String, String>,
}

/// What the status is computed from.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub generation: Option<i64>,
    pub spec: &'a OverlayGatewaySpec,
    /// The PodNetwork `spec.network` names, if it exists.
    pub network: Option<&'a PodNetworkSpec>,
    /// The network's nodes with a NodeSubnet, sorted by node.
    pub members: &'a [Member],
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The routes and the Ready condition (status, reason, message) for `input`.
fn render(input: &Input) -> (Vec<String>, ConditionStatus, &'static str, String) {
    let spec = input.spec;
    let not_ready = |reason, message: String| (vec![], ConditionStatus::False, reason, message);
    let Some(network) = input.network else {
        return not_ready(
            reasons::NETWORK_NOT_FOUND,
            format!(
                "PodNetwork {} does not exist; create it or correct spec.network.",
                spec.network
            ),
        );
    };
    if spec.strategy != GatewayStrategy::RouteToNodes {
        return not_ready(
            STRATEGY_NOT_IMPLEMENTED,
            format!(
                "strategy {:?} is not implemented by this version of Causeway yet; use RouteToNodes (clients route pod subnets to nodes).",
                spec.strategy
            ),
        );
    }
    let Ok(range) = network.parsed_cidr() else {
        return not_ready(
            INVALID_SPEC,
            format!("PodNetwork {} has an unusable cidr.", spec.network),
        );
    };
    let mut clients = Vec::new();
    for (i, value) in spec.client_cidrs.iter().enumerate() {
        match value.trim().parse::<Ipv4Net>() {
            Ok(c) if overlaps(c.trunc(), range) => {
                return not_ready(
                    CLIENT_CIDR_OVERLAPS_PODS,
                    format!(
                        "spec.clientCidrs[{i}] {value} overlaps the pod range {range} of PodNetwork {}: clients and pods need distinct addresses; correct clientCidrs.",
                        spec.network
                    ),
                );
            }
            Ok(c) => clients.push(c.trunc()),
            Err(_) => {
                return not_ready(
                    INVALID_SPEC,
                    format!("spec.clientCidrs[{i}] {value:?} is not an IPv4 CIDR."),
                );
            }
        }
    }
    let selector = spec
        .route_to_nodes
        .as_ref()
        .and_then(|r| r.node_selector.as_ref());
    let mut eligible = Vec::new();
    let mut off_segment = Vec::new();
    for member in input.members {
        match selector::matches(selector, &member.labels) {
            Err(e) => return not_ready(INVALID_SPEC, format!("spec.routeToNodes.{e}.")),
            Ok(false) => continue,
            Ok(true) => {}
        }
        let reachable = clients.is_empty()
            || member
                .segment
                .is_none_or(|s| clients.iter().any(|c| overlaps(*c, s)));
        if reachable {
            eligible.push(member);
        } else {
            off_segment.push(member.node.as_str());
        }
    }
    if eligible.is_empty() {
        let why = if off_segment.is_empty() {
            "no node of the network matches spec.routeToNodes.nodeSelector".to_owned()
        } else {
            format!(
                "the selected nodes ({}) are not on a segment of clientCidrs, so clients have no on-link next hop",
                off_segment.join(", ")
            )
        };
        return not_ready(
            reasons::NO_ELIGIBLE_HOST,
            format!("{why}; select nodes on the clients' segment."),
        );
    }
    let mut routes: Vec<String> = eligible
        .iter()
        .map(|m| format!("ip route add {} via {}", m.subnet, m.address))
        .collect();
    let via: Vec<String> = eligible.iter().map(|m| m.address.to_string()).collect();
    if eligible.len() < input.members.len() {
        // The other nodes' pods, through the eligible nodes' overlay paths.
        routes.push(if via.len() == 1 {
            format!("ip route add {range} via {}", via[0])
        } else {
            let hops: Vec<String> = via.iter().map(|v| format!("nexthop via {v}")).collect();
            format!("ip route add {range} {}", hops.join(" "))
        });
    }
    let names: Vec<&str> = eligible.iter().map(|m| m.node.as_str()).collect();
    let mut message = format!(
        "Clients reach the pods of PodNetwork {} through {}: install status.clientRoutes on the clients (or their router).",
        spec.network,
        names.join(", ")
    );
    if !off_segment.is_empty() {
        message.push_str(&format!(
            " Left out (not on a segment of clientCidrs): {}.",
            off_segment.join(", ")
        ));
    }
    (
        routes,
        ConditionStatus::True,
        reasons::GATEWAY_READY,
        message,
    )
}

/// The OverlayGateway status for `input`, with Ready merged into `previous`.
#[must_use]
pub fn status(input: &Input, previous: &OverlayGatewayStatus, now: Time) -> OverlayGatewayStatus {
    let (routes, state, reason, message) = render(input);
    let mut next = previous.clone();
    set_condition(
        &mut next.conditions,
        new_condition(types::READY, state, reason, message, input.generation, now),
    );
    next.observed_generation = input.generation;
    next.client_routes = routes;
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::conditions::find_condition;

    fn gateway(value: serde_json::Value) -> OverlayGatewaySpec {
        serde_json::from_value(value).expect("spec")
    }

    fn network() -> PodNetworkSpec {
        serde_json::from_value(serde_json::json!({
            "cidr": "10.247.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
        }))
        .expect("network")
    }

    fn member(node: &str, i: u8, address: &str, segment: &str, gateway: bool) -> Member {
        let mut labels = BTreeMap::new();
        if gateway {
            labels.insert("causeway.dev/gateway".to_owned(), "true".to_owned());
        }
        Member {
            node: node.into(),
            subnet: format!("10.247.{i}.0/24").parse().expect("subnet"),
            address: address.parse().expect("address"),
            segment: Some(segment.parse().expect("segment")),
            labels,
        }
    }

    fn members() -> Vec<Member> {
        vec![
            member("node-a", 0, "192.168.50.11", "192.168.50.0/24", true),
            member("node-b", 1, "192.168.50.12", "192.168.50.0/24", true),
            member("node-c", 2, "192.168.50.13", "192.168.50.0/24", false),
            member("node-d", 3, "192.168.60.11", "192.168.60.0/24", true),
        ]
    }

    fn run(spec: serde_json::Value, network: Option<&PodNetworkSpec>) -> OverlayGatewayStatus {
        let spec = gateway(spec);
        let members = members();
        status(
            &Input {
                generation: Some(2),
                spec: &spec,
                network,
                members: &members,
            },
            &OverlayGatewayStatus::default(),
            Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        )
    }

    fn ready(st: &OverlayGatewayStatus) -> (String, String, String) {
        let c = find_condition(&st.conditions, types::READY).expect("Ready");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn route_to_nodes_renders_each_eligible_subnet_and_the_range_for_the_rest() {
        let st = run(
            serde_json::json!({
                "network": "overlay", "strategy": "RouteToNodes",
                "clientCidrs": ["192.168.50.0/24"],
                "routeToNodes": {"nodeSelector": {"matchLabels": {"causeway.dev/gateway": "true"}}},
            }),
            Some(&network()),
        );
        assert_eq!(
            st.client_routes,
            vec![
                "ip route add 10.247.0.0/24 via 192.168.50.11",
                "ip route add 10.247.1.0/24 via 192.168.50.12",
                "ip route add 10.247.0.0/16 nexthop via 192.168.50.11 nexthop via 192.168.50.12",
            ]
        );
        let (status, reason, message) = ready(&st);
        assert_eq!((status.as_str(), reason.as_str()), ("True", "GatewayReady"));
        assert!(
            message.contains("through node-a, node-b")
                && message.contains("Left out (not on a segment of clientCidrs): node-d."),
            "{message}"
        );
    }

    #[test]
    fn every_node_selected_needs_no_range_route() {
        let st = run(
            serde_json::json!({"network": "overlay", "strategy": "RouteToNodes"}),
            Some(&network()),
        );
        assert_eq!(st.client_routes.len(), 4, "{:?}", st.client_routes);
        assert!(st.client_routes.iter().all(|r| r.contains("/24 via")));
    }

    #[test]
    fn problems_are_named_and_render_no_routes() {
        let cases = [
            (
                serde_json::json!({"network": "overlay", "strategy": "RouteToNodes"}),
                None,
                "NetworkNotFound",
                "PodNetwork overlay does not exist",
            ),
            (
                serde_json::json!({"network": "overlay", "strategy": "RouteToNodes",
                    "clientCidrs": ["10.247.9.0/24"]}),
                Some(network()),
                "ClientCidrOverlapsPods",
                "spec.clientCidrs[0] 10.247.9.0/24 overlaps the pod range 10.247.0.0/16",
            ),
            (
                serde_json::json!({"network": "overlay", "strategy": "RouteToNodes",
                    "clientCidrs": ["192.168.70.0/24"]}),
                Some(network()),
                "NoEligibleHost",
                "are not on a segment of clientCidrs",
            ),
            (
                serde_json::json!({"network": "overlay", "strategy": "BridgeHosts",
                    "bridgeHosts": {"nodeSelector": {}, "vip": "192.168.50.250"}}),
                Some(network()),
                "StrategyNotImplemented",
                "strategy BridgeHosts is not implemented",
            ),
        ];
        for (spec, net, want_reason, want_words) in cases {
            let st = run(spec, net.as_ref());
            let (status, reason, message) = ready(&st);
            assert_eq!((status.as_str(), reason.as_str()), ("False", want_reason));
            assert!(message.contains(want_words), "{message}");
            assert!(st.client_routes.is_empty());
        }
    }
}
