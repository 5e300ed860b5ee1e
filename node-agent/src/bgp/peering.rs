//! Which routers this node peers with, and what it tells them: the BGP speaker's
//! configuration from the PodNetwork's `routed.bgp`, this node's NodeSubnet and its Node's
//! labels (pure).
//!
//! Every node of the network uses `bgp.asn`, its node address as router ID and next hop, and
//! announces exactly its own pod subnet. A peer applies to this node when its `nodeSelector`
//! matches the node's labels (absent: every node), so racks can peer with their own
//! top-of-rack routers.

use std::collections::BTreeMap;
use std::net::IpAddr;

use causeway_crds::v1alpha1::PodNetworkMode;
use causeway_crds::{NodeSubnet, PodNetworkSpec, selector};

use crate::bgp::{PeerConfig, SpeakerConfig};

/// The speaker configuration for this node, `None` when the network does not use BGP.
///
/// # Errors
/// A sentence naming the field when the configuration cannot be used (admission normally
/// prevents all of these): an AS number or port out of range, an IPv6 or unparsable peer
/// address, a malformed peer selector, or this node's own fields.
pub fn speaker_config(
    network: &PodNetworkSpec,
    own: &NodeSubnet,
    labels: &BTreeMap<String, String>,
) -> Result<Option<SpeakerConfig>, String> {
    let Some(bgp) = network
        .routed
        .as_ref()
        .and_then(|r| r.bgp.as_ref())
        .filter(|_| network.mode == PodNetworkMode::Routed)
    else {
        return Ok(None);
    };
    let asn = |value: i64, field: &str| {
        u32::try_from(value)
            .ok()
            .filter(|a| *a != 0)
            .ok_or_else(|| format!("{field} {value} is not an AS number (1-4294967295)"))
    };
    let local_asn = asn(bgp.asn, "spec.routed.bgp.asn")?;
    let address = own
        .spec
        .parsed_node_address()
        .map_err(|e| format!("NodeSubnet spec.nodeAddress: {e}"))?;
    let cidr = own
        .spec
        .parsed_cidr()
        .map_err(|e| format!("NodeSubnet spec.cidr: {e}"))?;
    let mut peers = Vec::new();
    for (i, peer) in bgp.peers.iter().enumerate() {
        let field = format!("spec.routed.bgp.peers[{i}]");
        let selected = selector::matches(peer.node_selector.as_ref(), labels)
            .map_err(|e| format!("{field}.{e}"))?;
        if !selected {
            continue;
        }
        let peer_address = match peer.address.trim().parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => a,
            Ok(IpAddr::V6(_)) => {
                return Err(format!(
                    "{field}.address {} is IPv6: pod networks are IPv4, so peer over IPv4",
                    peer.address
                ));
            }
            Err(_) => {
                return Err(format!(
                    "{field}.address {:?} is not an IP address",
                    peer.address
                ));
            }
        };
        let port = u16::try_from(peer.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{field}.port {} is not a TCP port", peer.port))?;
        peers.push(PeerConfig {
            address: peer_address,
            asn: asn(peer.asn, &format!("{field}.asn"))?,
            port,
        });
    }
    peers.sort();
    Ok(Some(SpeakerConfig {
        local_asn,
        router_id: address,
        hold_time: u16::try_from(bgp.hold_time_seconds).unwrap_or(90),
        keepalive: u16::try_from(bgp.keepalive_seconds).unwrap_or(30),
        peers,
        advertise: vec![cidr],
        next_hop: address,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::NodeSubnetSpec;
    use std::net::Ipv4Addr;

    fn network(bgp: serde_json::Value) -> PodNetworkSpec {
        serde_json::from_value(serde_json::json!({
            "cidr": "10.246.0.0/16",
            "nodeSubnetPrefixLength": 24,
            "mode": "Routed",
            "routed": {"bgp": bgp},
        }))
        .expect("test spec")
    }

    fn own() -> NodeSubnet {
        NodeSubnet::new(
            "routed-10-246-1-0-24",
            NodeSubnetSpec {
                network: "routed".into(),
                node_name: "node-a".into(),
                cidr: "10.246.1.0/24".into(),
                node_address: "192.168.50.11".into(),
                vtep_mac: None,
            },
        )
    }

    fn labels(zone: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("topology.kubernetes.io/zone".to_owned(), zone.to_owned())])
    }

    #[test]
    fn peers_are_chosen_by_the_nodes_labels_and_the_node_announces_its_subnet() {
        let spec = network(serde_json::json!({
            "asn": 64512, "holdTimeSeconds": 9, "keepaliveSeconds": 3,
            "peers": [
                {"address": "192.168.60.1", "asn": 64500,
                 "nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": "rack-b"}}},
                {"address": "192.168.50.1", "asn": 64500,
                 "nodeSelector": {"matchLabels": {"topology.kubernetes.io/zone": "rack-a"}}},
                {"address": "192.168.99.1", "asn": 64512, "port": 1179},
            ],
        }));
        let config = speaker_config(&spec, &own(), &labels("rack-a"))
            .expect("valid")
            .expect("BGP on");
        assert_eq!(config.local_asn, 64512);
        assert_eq!(config.router_id, Ipv4Addr::new(192, 168, 50, 11));
        assert_eq!(config.next_hop, Ipv4Addr::new(192, 168, 50, 11));
        assert_eq!(
            config.advertise,
            vec!["10.246.1.0/24".parse::<ipnet::Ipv4Net>().expect("cidr")]
        );
        assert_eq!((config.hold_time, config.keepalive), (9, 3));
        assert_eq!(
            config.peers,
            vec![
                PeerConfig {
                    address: Ipv4Addr::new(192, 168, 50, 1),
                    asn: 64500,
                    port: 179
                },
                PeerConfig {
                    address: Ipv4Addr::new(192, 168, 99, 1),
                    asn: 64512,
                    port: 1179
                },
            ]
        );
    }

    #[test]
    fn no_bgp_block_means_no_speaker_and_bad_fields_are_named() {
        let static_routed: PodNetworkSpec = serde_json::from_value(serde_json::json!({
            "cidr": "10.246.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Routed",
        }))
        .expect("spec");
        assert_eq!(
            speaker_config(&static_routed, &own(), &labels("rack-a")),
            Ok(None)
        );
        let cases = [
            (
                serde_json::json!({"asn": 64512, "peers": [{"address": "fd00::1", "asn": 1}]}),
                "spec.routed.bgp.peers[0].address fd00::1 is IPv6",
            ),
            (
                serde_json::json!({"asn": 64512, "peers": [{"address": "192.168.50.1", "asn": 4_294_967_296_i64}]}),
                "spec.routed.bgp.peers[0].asn 4294967296 is not an AS number",
            ),
            (
                serde_json::json!({"asn": 64512, "peers": [{"address": "192.168.50.1", "asn": 1,
                    "nodeSelector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}}]}),
                "spec.routed.bgp.peers[0].nodeSelector.matchExpressions key \"k\": unknown operator",
            ),
        ];
        for (bgp, want) in cases {
            let err =
                speaker_config(&network(bgp), &own(), &labels("rack-a")).expect_err("invalid");
            assert!(err.starts_with(want), "{err}");
        }
    }
}
