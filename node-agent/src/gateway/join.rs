//! ClientJoin: machines that are not nodes join an Overlay network as members (pure).
//!
//! Each client of an OverlayGateway with strategy ClientJoin runs the agent in client mode
//! (`causeway-node-agent client --gateway <gw> --name <client>`). It gets what a node's
//! VXLAN device would have — the network's VNI and port, a VTEP MAC derived from
//! `client:<name>` ([`causeway_crds::vtep::client_vtep_mac`], so every node knows it without asking)
//! and, per node, one route, neighbour and FDB entry — plus its `overlayAddress` as a /32 on
//! the device, which is the source of its traffic into the overlay. It consumes no pod
//! subnet. Nodes learn the clients from the gateway's spec ([`client_peers`]) and program
//! each as one more tunnel: a /32 route to its overlay address, a neighbour and an FDB entry.
//! Removing a client from the spec removes those three objects from every node.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use causeway_crds::ownership;
use causeway_crds::v1alpha1::{GatewayStrategy, PodNetworkMode};
use causeway_crds::{NodeSubnet, OverlayGateway, PodNetworkSpec};
use ipnet::IpNet;
use kube::{Resource, ResourceExt};

use crate::model::{LinkKind, Mac, State};
use crate::plan::{self, Underlay};

pub use crate::model::ClientPeer;

/// The VTEP MAC of client `name` (the hash of `client:<name>`, which no node name can equal).
#[must_use]
pub fn client_mac(name: &str) -> Mac {
    causeway_crds::vtep::client_vtep_mac(name)
}

/// What every node knows about who owns which address, for [`client_peers`].
#[derive(Clone, Copy, Debug)]
pub struct Known<'a> {
    /// Every NodeSubnet (all networks): their node addresses are taken.
    pub subnets: &'a [Arc<NodeSubnet>],
    /// The API servers' addresses ([`causeway_kube::apiserver::addresses`]).
    pub api_servers: &'a [Ipv4Addr],
    /// Their IPv6 addresses ([`causeway_kube::apiserver::addresses6`]).
    pub api_servers6: &'a [Ipv6Addr],
    /// The next hops of this node's own routes (its routers).
    pub routers: &'a BTreeSet<Ipv4Addr>,
    /// The next hops of this node's own IPv6 routes.
    pub routers6: &'a BTreeSet<Ipv6Addr>,
    /// The network's pod ranges, `cidr` first (BridgeHosts VIPs follow their families).
    pub ranges: &'a [IpNet],
}

impl Known<'_> {
    /// Who owns what, as the operator sees it for `gateway` of `network`
    /// ([`ownership::network_owners`]), plus this node's routers.
    #[must_use]
    pub fn owners(
        &self,
        network: &str,
        gateway: &OverlayGateway,
        gateways: &[Arc<OverlayGateway>],
    ) -> ownership::Owners {
        let mut owners = ownership::network_owners(
            network,
            Some(gateway),
            self.subnets.iter().map(|s| &**s),
            gateways.iter().map(|g| &**g),
            (self.api_servers.iter().map(|a| IpAddr::V4(*a)))
                .chain(self.api_servers6.iter().map(|a| IpAddr::V6(*a))),
        );
        let routers = (self.routers.iter().map(|r| IpAddr::V4(*r)))
            .chain(self.routers6.iter().map(|r| IpAddr::V6(*r)));
        for r in routers {
            owners.claim(r, format!("router {r} (a next hop of this node's routes)"));
        }
        owners
    }
}

/// The clients of `network`'s ClientJoin gateways that pass
/// [`causeway_crds::ownership::check_clients`] — the operator's check, plus this node's
/// routers — and one sentence for each one left out: nothing is programmed for a client whose
/// address or overlay address belongs to someone else.
#[must_use]
pub fn client_peers(
    gateways: &[Arc<OverlayGateway>],
    network: &str,
    known: &Known<'_>,
) -> (Vec<ClientPeer>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for g in gateways
        .iter()
        .filter(|g| g.meta().deletion_timestamp.is_none())
        .filter(|g| g.spec.network == network && g.spec.strategy == GatewayStrategy::ClientJoin)
    {
        let Some(join) = g.spec.client_join.as_ref() else {
            continue;
        };
        let owners = known.owners(network, g, gateways);
        for (client, verdict) in ownership::check_clients(&join.clients, known.ranges, &owners) {
            match verdict {
                Ok(c) => out.push(ClientPeer {
                    name: client.name.clone(),
                    address: c.address,
                    overlays: c.overlays().collect(),
                    mac: client_mac(&client.name),
                }),
                Err(r) => notes.push(format!("OverlayGateway {}: {}", g.name_any(), r.message)),
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    (out, notes)
}

/// What the client's dataplane is computed from.
#[derive(Clone, Copy, Debug)]
pub struct ClientInput<'a> {
    pub gateway: &'a OverlayGateway,
    /// This client's name in `spec.clientJoin.clients`.
    pub name: &'a str,
    pub network: &'a PodNetworkSpec,
    /// The network's NodeSubnets.
    pub peers: &'a [Arc<NodeSubnet>],
    /// The link holding the client's `address`.
    pub underlay: &'a Underlay,
}

/// The client's dataplane: the VXLAN device with its overlay address, and a tunnel to every
/// node's subnet; plus one sentence per node left out.
///
/// # Errors
/// When the gateway does not list this client, the network is not Overlay, or an address
/// does not parse: the message says what to change.
pub fn client_plan(input: &ClientInput<'_>) -> Result<(State, Vec<String>), String> {
    let gw = input.gateway.name_any();
    let entry = input
        .gateway
        .spec
        .client_join
        .as_ref()
        .and_then(|j| j.clients.iter().find(|c| c.name == input.name))
        .ok_or_else(|| {
            format!(
                "OverlayGateway {gw} lists no client named {} in spec.clientJoin.clients",
                input.name
            )
        })?;
    if input.network.mode != PodNetworkMode::Overlay {
        return Err(format!(
            "PodNetwork {} uses {:?} mode; ClientJoin needs an Overlay network",
            input.gateway.spec.network, input.network.mode
        ));
    }
    // The same check the operator and every node make: a client refused there does not
    // take the address on its own machine either.
    let ranges: Vec<IpNet> = input
        .network
        .ranges()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.cidr)
        .collect();
    let owners = ownership::network_owners(
        &input.gateway.spec.network,
        Some(input.gateway),
        input.peers.iter().map(|s| &**s),
        std::iter::empty(),
        [],
    );
    let clients = input
        .gateway
        .spec
        .client_join
        .as_ref()
        .map(|j| j.clients.as_slice())
        .unwrap_or_default();
    let checked = ownership::check_clients(clients, &ranges, &owners)
        .into_iter()
        .find(|(c, _)| c.name == entry.name)
        .map_or_else(
            || Err(format!("client {} is not listed", entry.name)),
            |(_, verdict)| verdict.map_err(|r| r.message),
        )?;
    let (vni, port) = plan::vxlan_params(input.network).map_err(|e| e.to_string())?;
    let mtu = plan::effective_mtu(input.network, input.underlay).map_err(|e| e.to_string())?;
    let vxlan = plan::vxlan_link_name(vni);
    let mut desired = State::default();
    plan::add_link(
        &mut desired,
        &vxlan,
        LinkKind::Vxlan {
            vni,
            port,
            local: checked.address,
            underlay: input.underlay.name.clone(),
            mac: client_mac(&entry.name),
        },
        mtu,
    );
    for overlay in checked.overlays() {
        plan::add_address(&mut desired, &vxlan, IpNet::from(overlay));
    }
    let mut skipped = Vec::new();
    let mut tunnels = 0;
    for peer in input.peers {
        let spec = &peer.spec;
        if spec.network != input.gateway.spec.network || peer.meta().deletion_timestamp.is_some() {
            continue;
        }
        let parsed = match spec.parse_addresses() {
            Ok(p) => p,
            Err(e) => {
                skipped.push(format!("NodeSubnet {} skipped: {e}", peer.name_any()));
                continue;
            }
        };
        // The node's tunnel runs from its nodeAddress: the client's address must be of
        // that family (a VXLAN device has one local address).
        if parsed.node_address.is_ipv6() != checked.address.is_ipv6() {
            skipped.push(format!(
                "NodeSubnet {} skipped: its tunnel runs from {} and this client's address {} is of the other family",
                peer.name_any(),
                parsed.node_address,
                checked.address
            ));
            continue;
        }
        // As every node derives it (a MAC written before the field existed is the hash).
        let mac = spec
            .parsed_vtep_mac()
            .ok()
            .flatten()
            .unwrap_or_else(|| causeway_crds::vtep::vtep_mac(&spec.node_name));
        for subnet in [Some(parsed.cidr), parsed.secondary_cidr]
            .into_iter()
            .flatten()
        {
            if !ranges.iter().any(|r| r.contains(&subnet)) {
                skipped.push(format!(
                    "NodeSubnet {} skipped: {subnet} is outside the network's ranges",
                    peer.name_any()
                ));
                continue;
            }
            plan::tunnel(
                &mut desired,
                &vxlan,
                subnet,
                subnet.network(),
                mac,
                parsed.node_address,
            );
            tunnels += 1;
        }
    }
    if tunnels == 0 && !skipped.is_empty() {
        return Err(format!(
            "no node can be reached from this client: {}",
            skipped.join("; ")
        ));
    }
    Ok((desired, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> OverlayGateway {
        OverlayGateway::new(
            "join",
            serde_json::from_value(serde_json::json!({
                "network": "overlay", "strategy": "ClientJoin",
                "clientJoin": {"clients": [
                    {"name": "laptop", "address": "192.168.50.100", "overlayAddress": "10.250.0.100"},
                    {"name": "vm", "address": "192.168.60.100", "overlayAddress": "10.250.0.101"},
                ]},
            }))
            .expect("spec"),
        )
    }

    fn network(mode: &str) -> PodNetworkSpec {
        serde_json::from_value(serde_json::json!({
            "cidr": "10.247.0.0/16", "nodeSubnetPrefixLength": 24, "mode": mode,
            "overlay": {"vni": 1, "port": 4789},
        }))
        .expect("network")
    }

    fn subnet(node: &str, cidr: &str, address: &str) -> Arc<NodeSubnet> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "causeway.dev/v1alpha1", "kind": "NodeSubnet",
                "metadata": {"name": format!("overlay-{node}")},
                "spec": {"network": "overlay", "nodeName": node, "cidr": cidr, "nodeAddress": address},
            }))
            .expect("subnet"),
        )
    }

    fn underlay() -> Underlay {
        Underlay {
            name: "eth0".into(),
            mtu: 1500,
            prefix: "192.168.50.0/24".parse().expect("net"),
            secondary_prefix: None,
        }
    }

    const API_SERVERS: &[Ipv4Addr] = &[Ipv4Addr::new(192, 168, 60, 2)];
    static NO_ROUTERS6: BTreeSet<Ipv6Addr> = BTreeSet::new();
    static RANGES: std::sync::LazyLock<[IpNet; 1]> =
        std::sync::LazyLock::new(|| ["10.247.0.0/16".parse().expect("net")]);

    fn known<'a>(subnets: &'a [Arc<NodeSubnet>], routers: &'a BTreeSet<Ipv4Addr>) -> Known<'a> {
        Known {
            subnets,
            api_servers: API_SERVERS,
            api_servers6: &[],
            routers,
            routers6: &NO_ROUTERS6,
            ranges: &*RANGES,
        }
    }

    #[test]
    fn nodes_learn_every_client_with_its_derived_mac() {
        let gws = vec![Arc::new(gateway())];
        let none = BTreeSet::new();
        let (peers, notes) = client_peers(&gws, "overlay", &known(&[], &none));
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].name, "laptop");
        assert_eq!(
            peers[0].overlays,
            [IpAddr::from(Ipv4Addr::new(10, 250, 0, 100))]
        );
        assert_eq!(peers[0].mac, client_mac("laptop"));
        assert_ne!(peers[0].mac, client_mac("vm"));
        assert!(client_peers(&gws, "other", &known(&[], &none)).0.is_empty());
    }

    #[test]
    fn a_client_taking_a_node_router_or_api_server_address_is_never_programmed() {
        let subnets = [subnet("node-a", "10.247.0.0/24", "192.168.50.11")];
        let routers = BTreeSet::from([Ipv4Addr::new(192, 168, 50, 1)]);
        for (overlay, owner) in [
            ("192.168.50.11", "node node-a's address"),
            ("192.168.50.1", "router 192.168.50.1"),
            ("192.168.60.2", "the API server's address"),
        ] {
            let mut gw = gateway();
            let join = gw.spec.client_join.as_mut().expect("join");
            join.clients[0].overlay_address = overlay.into();
            let (peers, notes) =
                client_peers(&[Arc::new(gw)], "overlay", &known(&subnets, &routers));
            let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(
                names,
                ["vm"],
                "{overlay}: only the other client is programmed"
            );
            assert_eq!(notes.len(), 1, "{notes:?}");
            assert!(
                notes[0].starts_with(
                    "OverlayGateway join: spec.clientJoin.clients[0] (laptop): overlayAddress"
                ) && notes[0].contains(owner),
                "{}",
                notes[0]
            );
        }
    }

    #[test]
    fn a_client_tunnels_to_every_node_from_its_overlay_address() {
        let gw = gateway();
        let peers = [
            subnet("node-a", "10.247.0.0/24", "192.168.50.11"),
            subnet("node-d", "10.247.3.0/24", "192.168.60.11"),
        ];
        let (state, skipped) = client_plan(&ClientInput {
            gateway: &gw,
            name: "laptop",
            network: &network("Overlay"),
            peers: &peers,
            underlay: &underlay(),
        })
        .expect("plan");
        assert!(skipped.is_empty(), "{skipped:?}");
        let link = &state.links["cw-vx1"];
        assert_eq!(link.mtu, 1450);
        assert!(
            matches!(&link.kind, LinkKind::Vxlan { local, mac, port: 4789, .. }
                if *local == Ipv4Addr::new(192, 168, 50, 100) && *mac == client_mac("laptop"))
        );
        assert!(
            state
                .addresses
                .contains_key(&("cw-vx1".to_owned(), "10.250.0.100/32".parse().expect("net")))
        );
        let route = &state.routes[&"10.247.3.0/24".parse().expect("net")];
        assert_eq!(route.gateway, Some(Ipv4Addr::new(10, 247, 3, 0).into()));
        assert!(route.onlink);
        assert_eq!(state.fdb.len(), 2);
        assert_eq!(state.neighbours.len(), 2);
    }

    #[test]
    fn a_dual_stack_client_tunnels_both_families_and_an_ipv6_one_rides_an_ipv6_underlay() {
        let mut gw = gateway();
        let join = gw.spec.client_join.as_mut().expect("join");
        join.clients[0].secondary_overlay_address = Some("fd00:250::100".into());
        let mut network = network("Overlay");
        network.secondary_cidr = Some("fd00:10:247::/56".into());
        network.secondary_node_subnet_prefix_length = Some(64);
        let dual = |node: &str, cidr: &str, address: &str, cidr6: &str| {
            let mut s = (*subnet(node, cidr, address)).clone();
            s.spec.secondary_cidr = Some(cidr6.into());
            Arc::new(s)
        };
        let peers = [
            dual(
                "node-a",
                "10.247.0.0/24",
                "192.168.50.11",
                "fd00:10:247::/64",
            ),
            dual(
                "node-d",
                "10.247.3.0/24",
                "192.168.60.11",
                "fd00:10:247:3::/64",
            ),
        ];
        let (state, skipped) = client_plan(&ClientInput {
            gateway: &gw,
            name: "laptop",
            network: &network,
            peers: &peers,
            underlay: &underlay(),
        })
        .expect("plan");
        assert!(skipped.is_empty(), "{skipped:?}");
        for address in ["10.250.0.100/32", "fd00:250::100/128"] {
            let key = ("cw-vx1".to_owned(), address.parse().expect("net"));
            assert!(state.addresses.contains_key(&key), "{address}");
        }
        let route = &state.routes[&"fd00:10:247:3::/64".parse().expect("net")];
        assert_eq!(route.gateway, Some("fd00:10:247:3::".parse().expect("ip")));
        assert_eq!(state.fdb.len(), 2, "one FDB entry per node");
        assert_eq!(state.neighbours.len(), 4, "one neighbour per node subnet");

        // An IPv6 network on an IPv6 underlay: the client's tunnel runs from its IPv6 address.
        let mut gw = gateway();
        let join = gw.spec.client_join.as_mut().expect("join");
        join.clients[0].address = "fd00:50::100".into();
        join.clients[0].overlay_address = "fd00:250::100".into();
        let mut v6 = network.clone();
        v6.cidr = "fd00:10:247::/56".into();
        v6.node_subnet_prefix_length = 64;
        v6.secondary_cidr = None;
        v6.secondary_node_subnet_prefix_length = None;
        let peers = [subnet("node-a", "fd00:10:247::/64", "fd00:50::11")];
        let underlay6 = Underlay {
            prefix: "fd00:50::/64".parse().expect("net"),
            ..underlay()
        };
        let (state, _) = client_plan(&ClientInput {
            gateway: &gw,
            name: "laptop",
            network: &v6,
            peers: &peers,
            underlay: &underlay6,
        })
        .expect("plan");
        let link = &state.links["cw-vx1"];
        assert_eq!(link.mtu, 1430, "70 bytes of VXLAN over IPv6");
        assert!(matches!(&link.kind, LinkKind::Vxlan { local, .. }
            if *local == "fd00:50::100".parse::<IpAddr>().expect("ip")));
        // A node tunnelling from IPv4 cannot be reached from an IPv6 client address.
        let peers = [subnet("node-a", "fd00:10:247::/64", "192.168.50.11")];
        let err = client_plan(&ClientInput {
            gateway: &gw,
            name: "laptop",
            network: &v6,
            peers: &peers,
            underlay: &underlay6,
        })
        .expect_err("no node reachable");
        assert!(err.contains("of the other family"), "{err}");
    }

    #[test]
    fn problems_name_the_fix() {
        let gw = gateway();
        let cases = [
            ("nobody", network("Overlay"), "lists no client named nobody"),
            (
                "laptop",
                network("Routed"),
                "ClientJoin needs an Overlay network",
            ),
        ];
        for (name, net, words) in cases {
            let err = client_plan(&ClientInput {
                gateway: &gw,
                name,
                network: &net,
                peers: &[],
                underlay: &underlay(),
            })
            .expect_err("refused");
            assert!(err.contains(words), "{err}");
        }
    }
}
