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

use std::net::Ipv4Addr;
use std::sync::Arc;

use causeway_crds::v1alpha1::{GatewayStrategy, PodNetworkMode};
use causeway_crds::{NodeSubnet, OverlayGateway, PodNetworkSpec};
use ipnet::Ipv4Net;
use kube::{Resource, ResourceExt};

use crate::model::{LinkKind, Mac, State};
use crate::plan::{self, Underlay};

pub use crate::model::ClientPeer;

/// The VTEP MAC of client `name` (the hash of `client:<name>`, which no node name can equal).
#[must_use]
pub fn client_mac(name: &str) -> Mac {
    causeway_crds::vtep::client_vtep_mac(name)
}

/// The clients of `network`'s ClientJoin gateways; entries that do not parse are left out
/// (the operator reports them).
#[must_use]
pub fn client_peers(gateways: &[Arc<OverlayGateway>], network: &str) -> Vec<ClientPeer> {
    let mut out: Vec<ClientPeer> = gateways
        .iter()
        .filter(|g| g.meta().deletion_timestamp.is_none())
        .filter(|g| g.spec.network == network && g.spec.strategy == GatewayStrategy::ClientJoin)
        .filter_map(|g| g.spec.client_join.as_ref())
        .flat_map(|j| j.clients.iter())
        .filter_map(|c| {
            Some(ClientPeer {
                name: c.name.clone(),
                address: c.address.trim().parse().ok()?,
                overlay: c.overlay_address.trim().parse().ok()?,
                mac: client_mac(&c.name),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
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
    let address: Ipv4Addr = entry.address.trim().parse().map_err(|_| {
        format!(
            "client {}: address {:?} is not IPv4",
            entry.name, entry.address
        )
    })?;
    let overlay: Ipv4Addr = entry.overlay_address.trim().parse().map_err(|_| {
        format!(
            "client {}: overlayAddress {:?} is not IPv4",
            entry.name, entry.overlay_address
        )
    })?;
    let range = input.network.parsed_cidr().map_err(|e| e.to_string())?;
    if range.contains(&overlay) {
        return Err(format!(
            "client {}: overlayAddress {overlay} is inside the pod range {range}; choose an address outside it",
            entry.name
        ));
    }
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
            local: address,
            underlay: input.underlay.name.clone(),
            mac: client_mac(&entry.name),
        },
        mtu,
    );
    plan::add_address(&mut desired, &vxlan, Ipv4Net::from(overlay));
    let mut skipped = Vec::new();
    for peer in input.peers {
        let spec = &peer.spec;
        if spec.network != input.gateway.spec.network || peer.meta().deletion_timestamp.is_some() {
            continue;
        }
        match spec.parse() {
            Ok(p) if range.contains(&p.cidr) => {
                let (cidr, node, mac) = (p.cidr, p.node_address, p.vtep_mac);
                plan::tunnel(&mut desired, &vxlan, cidr, cidr.network(), mac, node);
            }
            Ok(p) => skipped.push(format!(
                "NodeSubnet {} skipped: {} is outside {range}",
                peer.name_any(),
                p.cidr
            )),
            Err(e) => skipped.push(format!("NodeSubnet {} skipped: {e}", peer.name_any())),
        }
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
        }
    }

    #[test]
    fn nodes_learn_every_client_with_its_derived_mac() {
        let gws = vec![Arc::new(gateway())];
        let peers = client_peers(&gws, "overlay");
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].name, "laptop");
        assert_eq!(peers[0].overlay, Ipv4Addr::new(10, 250, 0, 100));
        assert_eq!(peers[0].mac, client_mac("laptop"));
        assert_ne!(peers[0].mac, client_mac("vm"));
        assert!(client_peers(&gws, "other").is_empty());
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
        assert_eq!(route.gateway, Some(Ipv4Addr::new(10, 247, 3, 0)));
        assert!(route.onlink);
        assert_eq!(state.fdb.len(), 2);
        assert_eq!(state.neighbours.len(), 2);
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
