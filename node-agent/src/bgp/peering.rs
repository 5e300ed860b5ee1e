//! Which routers this node peers with, and what it tells them: the BGP speaker's
//! configuration from the PodNetwork's `routed.bgp`, this node's NodeSubnet, its Node's
//! labels and the password Secrets (pure).
//!
//! [`BgpSpec::for_node`](causeway_crds::v1alpha1::BgpSpec::for_node) resolves the node's AS
//! (`nodeAsnLabel`), its peers (by `nodeSelector`) and every option; this module adds what the
//! node itself knows: its address as router ID and next hop, its pod subnet as the one prefix
//! it announces, and each peer's TCP MD5 key read from its Secret. A peer whose Secret is
//! missing or holds an unusable key gets no session and is reported
//! ([`SpeakerConfig::unusable`]); the node's other sessions carry on.
//!
//! On a dual-stack network (an IPv4 `cidr`, an IPv6 `secondaryCidr`) the same sessions carry
//! IPv6 unicast too ([`SpeakerConfig::ipv6`]): the node's IPv6 subnet announced with its IPv6
//! address as next hop, routes inside `secondaryCidr` learned. A node whose IPv6 subnet is not
//! allocated yet runs IPv4 only until it is.
//!
//! A peer at an IPv6 address gets a session from the node's IPv6 address (NodeSubnet
//! `spec.secondaryNodeAddress`, [`SpeakerConfig::local6`]) carrying the same families as a
//! session with an IPv4 peer. A node without an IPv6 address cannot peer with it: the peer is
//! reported as unusable, naming the field, and the node's other sessions carry on.

use std::collections::BTreeMap;

use causeway_crds::bgp::password;
use causeway_crds::cidr;
use causeway_crds::family::Families;
use causeway_crds::v1alpha1::SecretKeyRef;
use causeway_crds::{NodeSubnet, PodNetworkSpec};
use ipnet::IpNet;

use crate::bgp::{
    Ipv6Unicast, Md5Key, PeerConfig, PeerOptions, SpeakerConfig, SpeakerOptions, UnusablePeer,
};

/// The Secrets of the agent's namespace: name → data.
pub type Secrets = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// The speaker configuration for this node, `None` when the network does not use BGP.
/// `namespace` is where password Secrets are read from (for messages).
///
/// # Errors
/// A sentence naming the field when the configuration cannot be used at all (admission
/// normally prevents all of these): an AS number or port out of range, a reserved AS, a bad
/// `nodeAsnLabel` value on this node, a malformed peer selector, or this node's own fields
/// (on a dual-stack network also its IPv6 ones: a node without an IPv6 address cannot announce
/// its IPv6 subnet).
pub fn speaker_config(
    network: &PodNetworkSpec,
    own: &NodeSubnet,
    labels: &BTreeMap<String, String>,
    secrets: &Secrets,
    namespace: &str,
) -> Result<Option<SpeakerConfig>, String> {
    let Some(bgp) = network.bgp() else {
        return Ok(None);
    };
    let node = bgp.for_node(labels).map_err(|e| e.to_string())?;
    let sides = Sides::of(network, own)?;
    let (ipv4, ipv6) = (sides.ipv4()?, sides.ipv6()?);
    let address4 = sides.f.v4.address;
    let local6 = sides.f.v6.address;
    let mut peers = Vec::new();
    let mut unusable = Vec::new();
    for peer in &node.peers {
        if peer.address.is_ipv6() && local6.is_none() {
            unusable.push(UnusablePeer {
                address: peer.address,
                asn: peer.asn,
                why: no_ipv6_address(peer.index, peer.address, own),
            });
            continue;
        }
        if peer.address.is_ipv4() && address4.is_none() {
            unusable.push(UnusablePeer {
                address: peer.address,
                asn: peer.asn,
                why: format!(
                    "spec.routed.bgp.peers[{}].address {} is an IPv4 address, and this node has no IPv4 address to peer from (NodeSubnet spec.nodeAddress {} is IPv6, and no IPv4 secondaryNodeAddress): peer with the router's IPv6 address, or give the node an IPv4 InternalIP on the router's network; no session is opened without it",
                    peer.index, peer.address, own.spec.node_address
                ),
            });
            continue;
        }
        let (multihop, route_reflector_client) = match peer.session {
            causeway_crds::bgp::Session::External { multihop } => (multihop, false),
            causeway_crds::bgp::Session::Internal {
                route_reflector_client,
            } => (None, route_reflector_client),
        };
        let password = match &peer.password {
            None => None,
            Some(reference) => match md5_key(reference, secrets, namespace) {
                Ok(key) => Some(key),
                Err(why) => {
                    unusable.push(UnusablePeer {
                        address: peer.address,
                        asn: peer.asn,
                        why: format!(
                            "spec.routed.bgp.peers[{}].password: {why}; no session is opened without it",
                            peer.index
                        ),
                    });
                    continue;
                }
            },
        };
        peers.push(PeerConfig {
            address: peer.address,
            asn: peer.asn,
            port: peer.port,
            options: PeerOptions {
                passive: peer.passive,
                multihop,
                route_reflector_client,
                password,
                bfd: peer.bfd,
            },
        });
    }
    peers.sort_by_key(|p| p.address);
    let seconds = |d: std::time::Duration| u16::try_from(d.as_secs()).unwrap_or(u16::MAX);
    Ok(Some(SpeakerConfig {
        local_asn: node.asn,
        router_id: sides.router_id(),
        hold_time: seconds(node.hold_time),
        keepalive: seconds(node.keepalive),
        peers,
        advertise: ipv4.into_iter().collect(),
        next_hop: address4,
        local6,
        ipv6,
        options: SpeakerOptions {
            graceful_restart: node.graceful_restart.map(|g| seconds(g.restart_time)),
            communities: node.communities,
            local_preference: node.local_preference,
        },
        unusable,
        asn_label: match node.asn_source {
            causeway_crds::bgp::AsnSource::Spec => None,
            causeway_crds::bgp::AsnSource::NodeLabel { key, .. } => Some(key),
        },
        ignored: node.ignored.iter().map(ToString::to_string).collect(),
    }))
}

/// This node's side of each family ([`Families`]), with the NodeSubnet for messages.
struct Sides<'a> {
    own: &'a NodeSubnet,
    f: Families,
}

impl<'a> Sides<'a> {
    fn of(network: &PodNetworkSpec, own: &'a NodeSubnet) -> Result<Self, String> {
        let parsed = own
            .spec
            .parse_addresses()
            .map_err(|e| format!("NodeSubnet {e}"))?;
        let range =
            cidr::parse_cidr(&network.cidr).map_err(|e| format!("PodNetwork spec.cidr: {e}"))?;
        let range2 = network
            .secondary_range()
            .map_err(|e| format!("PodNetwork {e}"))?
            .map(|r| r.cidr);
        if let (Some(IpNet::V6(r)), Some(IpNet::V4(_))) = (range2, parsed.secondary_cidr) {
            return Err(format!(
                "NodeSubnet spec.secondaryCidr {} is not an IPv6 subnet, but the PodNetwork's secondaryCidr {r} is IPv6: delete the NodeSubnet so the operator allocates a new one",
                own.spec.secondary_cidr.as_deref().unwrap_or_default()
            ));
        }
        Ok(Self {
            own,
            f: Families::split(range, range2, &parsed),
        })
    }

    /// The IPv4 subnet to announce (its next hop is the node's IPv4 address), `None` on a
    /// network without an IPv4 range and while the node's IPv4 subnet is not allocated.
    fn ipv4(&self) -> Result<Option<ipnet::Ipv4Net>, String> {
        let Some(subnet) = self.f.v4.subnet else {
            return Ok(None);
        };
        if self.f.v4.address.is_none() {
            return Err(format!(
                "this node has no IPv4 address (NodeSubnet spec.nodeAddress {}, spec.secondaryNodeAddress {}): on this Routed network the node announces its IPv4 subnet {subnet} over BGP with its IPv4 address as next hop; give the node an IPv4 InternalIP (the operator copies it into the NodeSubnet)",
                self.own.spec.node_address,
                self.own
                    .spec
                    .secondary_node_address
                    .as_deref()
                    .unwrap_or("not set")
            ));
        }
        Ok(Some(subnet))
    }

    /// IPv6 unicast: this node's IPv6 subnet, its IPv6 address as next hop, the network's
    /// IPv6 range; `None` on a network without an IPv6 range and while the node's IPv6 subnet
    /// is not allocated.
    fn ipv6(&self) -> Result<Option<Ipv6Unicast>, String> {
        let (Some(range), Some(subnet)) = (self.f.v6.range, self.f.v6.subnet) else {
            return Ok(None);
        };
        let Some(next_hop) = self.f.v6.address else {
            return Err(if self.f.primary_v6 {
                format!(
                    "this node has no IPv6 address (NodeSubnet spec.nodeAddress {}): on this Routed network the node announces its IPv6 subnet {subnet} over BGP with its IPv6 address as next hop; give the node an IPv6 InternalIP (the operator copies it into the NodeSubnet)",
                    self.own.spec.node_address
                )
            } else {
                match self.own.spec.secondary_node_address.as_deref() {
                    None => format!(
                        "NodeSubnet spec.secondaryNodeAddress is not set: on this dual-stack Routed network the node announces its IPv6 subnet {subnet} over BGP with its IPv6 address as next hop, and has none; give the node an IPv6 InternalIP (the operator copies it into secondaryNodeAddress)"
                    ),
                    Some(other) => format!(
                        "NodeSubnet spec.secondaryNodeAddress {other} is not an IPv6 address: the node's IPv6 subnet {subnet} needs an IPv6 next hop; give the node an IPv6 InternalIP"
                    ),
                }
            });
        };
        Ok(Some(Ipv6Unicast {
            advertise: vec![subnet],
            next_hop,
            range,
        }))
    }

    /// The BGP identifier: the node's IPv4 address; on a node without one (an IPv6-only
    /// underlay) its IPv6 address folded into 32 bits (the XOR of its four 32-bit words), so
    /// nodes whose addresses differ in one word get different identifiers.
    fn router_id(&self) -> std::net::Ipv4Addr {
        if let Some(a) = self.f.v4.address {
            return a;
        }
        let bits = self.f.v6.address.map_or(0, u128::from);
        let folded = (0..4).fold(0u32, |acc, i| {
            acc ^ u32::try_from((bits >> (32 * i)) & 0xffff_ffff).unwrap_or(0)
        });
        std::net::Ipv4Addr::from(folded.max(1))
    }
}

/// Why peer `index` at IPv6 `address` gets no session on a node without an IPv6 address.
fn no_ipv6_address(index: usize, address: std::net::IpAddr, own: &NodeSubnet) -> String {
    let has = match own.spec.secondary_node_address.as_deref() {
        None => "is not set".to_owned(),
        Some(value) => format!("is {value:?}, not an IPv6 address"),
    };
    format!(
        "spec.routed.bgp.peers[{index}].address {address} is an IPv6 address, and this node has no IPv6 address to peer from (NodeSubnet spec.secondaryNodeAddress {has}): give the node an IPv6 InternalIP on the router's network (the operator copies it into secondaryNodeAddress), or peer with the router's IPv4 address; no session is opened without it"
    )
}

/// The TCP MD5 key `reference` names, or why there is none.
fn md5_key(reference: &SecretKeyRef, secrets: &Secrets, namespace: &str) -> Result<Md5Key, String> {
    let where_ = format!("Secret {namespace}/{}", reference.name);
    let data = secrets.get(&reference.name).ok_or_else(|| {
        format!(
            "{where_} does not exist: create it with `kubectl -n {namespace} create secret generic {} --from-literal={}=<the key shared with the router>`",
            reference.name, reference.key
        )
    })?;
    let value = data.get(&reference.key).ok_or_else(|| {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        format!(
            "{where_} has no key {:?} (it has {keys:?}): add it, or name the right one in secretRef.key",
            reference.key
        )
    })?;
    password::md5_key(value)
        .map(|key| Md5Key(key.to_owned()))
        .map_err(|e| format!("{where_} key {:?}: {e}", reference.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "causeway-system";
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
                secondary_cidr: None,
                secondary_node_address: None,
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
        let config = speaker_config(&spec, &own(), &labels("rack-a"), &Secrets::new(), NS)
            .expect("valid")
            .expect("BGP on");
        assert_eq!(config.local_asn, 64512);
        assert_eq!(config.router_id, Ipv4Addr::new(192, 168, 50, 11));
        assert_eq!(config.next_hop, Some(Ipv4Addr::new(192, 168, 50, 11)));
        assert_eq!(
            config.advertise,
            vec!["10.246.1.0/24".parse::<ipnet::Ipv4Net>().expect("cidr")]
        );
        assert_eq!((config.hold_time, config.keepalive), (9, 3));
        assert_eq!(
            config.peers,
            vec![
                PeerConfig::new(Ipv4Addr::new(192, 168, 50, 1), 64500, 179),
                PeerConfig::new(Ipv4Addr::new(192, 168, 99, 1), 64512, 1179),
            ]
        );
    }

    #[test]
    fn a_dual_stack_node_announces_its_ipv6_subnet_with_its_ipv6_address_on_the_same_sessions() {
        let mut spec = network(serde_json::json!({
            "asn": 64512, "peers": [{"address": "192.168.50.1", "asn": 64500}],
        }));
        let ipv4_only = speaker_config(&spec, &own(), &labels("rack-a"), &Secrets::new(), NS)
            .expect("valid")
            .expect("BGP on");
        assert_eq!(ipv4_only.ipv6, None, "an IPv4 network");
        spec.secondary_cidr = Some("fd00:10:246::/56".into());
        spec.secondary_node_subnet_prefix_length = Some(64);
        let config = |own: &NodeSubnet| {
            speaker_config(&spec, own, &labels("rack-a"), &Secrets::new(), NS)
                .map(|c| c.expect("BGP on"))
        };
        assert_eq!(
            config(&own()).expect("valid").ipv6,
            None,
            "no IPv6 subnet allocated yet: IPv4 only until it is"
        );
        let mut dual = own();
        dual.spec.secondary_cidr = Some("fd00:10:246:1::/64".into());
        dual.spec.secondary_node_address = Some("fd00:50::11".into());
        let got = config(&dual).expect("valid");
        assert_eq!(
            got.ipv6,
            Some(crate::bgp::Ipv6Unicast {
                advertise: vec!["fd00:10:246:1::/64".parse().expect("net")],
                next_hop: "fd00:50::11".parse().expect("ip"),
                range: "fd00:10:246::/56".parse().expect("net"),
            })
        );
        assert_eq!(
            got.peers, ipv4_only.peers,
            "the same sessions, on IPv4 peer addresses"
        );
        assert_eq!(got.next_hop, Some(Ipv4Addr::new(192, 168, 50, 11)));

        let cases = [
            (None, "spec.secondaryNodeAddress is not set"),
            (Some("192.168.50.11"), "is not an IPv6 address"),
            (Some("fd00:50::zz"), "NodeSubnet spec.secondaryNodeAddress:"),
        ];
        for (address, want) in cases {
            let mut bad = dual.clone();
            bad.spec.secondary_node_address = address.map(str::to_owned);
            let err = config(&bad).expect_err("refused");
            assert!(err.contains(want), "{address:?}: {err}");
        }
        let mut v4_subnet = dual.clone();
        v4_subnet.spec.secondary_cidr = Some("10.1.0.0/24".into());
        let err = config(&v4_subnet).expect_err("refused");
        assert!(err.contains("is not an IPv6 subnet"), "{err}");
    }

    #[test]
    fn an_ipv6_first_dual_stack_node_announces_each_family_with_its_address_of_that_family() {
        let mut spec = network(serde_json::json!({
            "asn": 64512, "peers": [
                {"address": "fd00:50::1", "asn": 64500},
                {"address": "192.168.50.1", "asn": 64500},
            ],
        }));
        spec.cidr = "fd00:10:246::/56".into();
        spec.node_subnet_prefix_length = 64;
        spec.secondary_cidr = Some("10.246.0.0/16".into());
        spec.secondary_node_subnet_prefix_length = Some(24);
        let mut node = own();
        node.spec.cidr = "fd00:10:246:1::/64".into();
        node.spec.node_address = "fd00:50::11".into();
        node.spec.secondary_cidr = Some("10.246.1.0/24".into());
        node.spec.secondary_node_address = Some("192.168.50.11".into());
        let got = speaker_config(&spec, &node, &labels("rack-a"), &Secrets::new(), NS)
            .expect("valid")
            .expect("BGP on");
        assert_eq!(
            got.router_id,
            Ipv4Addr::new(192, 168, 50, 11),
            "its IPv4 address"
        );
        assert_eq!(got.next_hop, Some(Ipv4Addr::new(192, 168, 50, 11)));
        assert_eq!(
            got.advertise,
            ["10.246.1.0/24".parse::<ipnet::Ipv4Net>().expect("net")]
        );
        let v6 = got.ipv6.expect("IPv6 unicast");
        assert_eq!(
            (v6.advertise, v6.next_hop.to_string(), v6.range.to_string()),
            (
                vec!["fd00:10:246:1::/64".parse().expect("net")],
                "fd00:50::11".to_owned(),
                "fd00:10:246::/56".to_owned()
            )
        );
        assert_eq!(got.local6, Some("fd00:50::11".parse().expect("ip")));
        assert_eq!(
            got.peers.len(),
            2,
            "both peers get a session: {:?}",
            got.unusable
        );
    }

    #[test]
    fn an_ipv6_peer_gets_a_session_from_the_nodes_ipv6_address_on_a_dual_stack_network() {
        let mut spec = network(serde_json::json!({
            "asn": 64512, "peers": [
                {"address": "fd00:50::1", "asn": 64500, "bfd": {},
                 "password": {"secretRef": {"name": "tor-a"}}},
                {"address": "192.168.50.1", "asn": 64500},
            ],
        }));
        spec.secondary_cidr = Some("fd00:10:246::/56".into());
        spec.secondary_node_subnet_prefix_length = Some(64);
        let mut dual = own();
        dual.spec.secondary_cidr = Some("fd00:10:246:1::/64".into());
        dual.spec.secondary_node_address = Some("fd00:50::11".into());
        let secrets = Secrets::from([(
            "tor-a".to_owned(),
            BTreeMap::from([("password".to_owned(), b"s3cret".to_vec())]),
        )]);
        let config = speaker_config(&spec, &dual, &labels("rack-a"), &secrets, NS)
            .expect("valid")
            .expect("BGP on");
        let v6: std::net::IpAddr = "fd00:50::1".parse().expect("ip");
        let peers: Vec<std::net::IpAddr> = config.peers.iter().map(|p| p.address).collect();
        assert_eq!(peers, [Ipv4Addr::new(192, 168, 50, 1).into(), v6]);
        let ipv6_peer = &config.peers[1].options;
        assert!(ipv6_peer.bfd.is_some() && ipv6_peer.password.is_some());
        assert_eq!(config.local6, Some("fd00:50::11".parse().expect("ip")));
        assert_eq!(
            config.local_address(v6),
            Some("fd00:50::11".parse().expect("ip"))
        );
        assert_eq!(config.router_id, Ipv4Addr::new(192, 168, 50, 11));
        assert!(config.ipv6.is_some() && config.unusable.is_empty());
        assert_eq!(
            config.local_side(),
            "address 192.168.50.11 (IPv6 peers: fd00:50::11), AS 64512 (spec.routed.bgp.asn)"
        );
    }

    #[test]
    fn an_ipv6_peer_on_a_node_without_an_ipv6_address_is_reported_and_the_others_carry_on() {
        let spec = network(serde_json::json!({
            "asn": 64512, "peers": [
                {"address": "192.168.50.1", "asn": 64500},
                {"address": "fd00:50::1", "asn": 64500},
            ],
        }));
        let config = speaker_config(&spec, &own(), &labels("rack-a"), &Secrets::new(), NS)
            .expect("valid")
            .expect("BGP on");
        assert_eq!(
            config.peers,
            [PeerConfig::new(Ipv4Addr::new(192, 168, 50, 1), 64500, 179)]
        );
        assert_eq!(config.local6, None);
        assert_eq!(config.unusable.len(), 1, "{:?}", config.unusable);
        let unusable = &config.unusable[0];
        assert_eq!(unusable.address.to_string(), "fd00:50::1");
        assert_eq!(
            unusable.why,
            "spec.routed.bgp.peers[1].address fd00:50::1 is an IPv6 address, and this node has no IPv6 address to peer from (NodeSubnet spec.secondaryNodeAddress is not set): give the node an IPv6 InternalIP on the router's network (the operator copies it into secondaryNodeAddress), or peer with the router's IPv4 address; no session is opened without it"
        );
        assert_eq!(
            config.local_side(),
            "address 192.168.50.11, AS 64512 (spec.routed.bgp.asn)"
        );
        // An IPv4 network on a dual-stack underlay: the session over IPv6 carries IPv4 only.
        let mut dual_underlay = own();
        dual_underlay.spec.secondary_node_address = Some("fd00:50::11".into());
        let config = speaker_config(
            &spec,
            &dual_underlay,
            &labels("rack-a"),
            &Secrets::new(),
            NS,
        )
        .expect("valid")
        .expect("BGP on");
        assert_eq!(config.peers.len(), 2);
        assert!(config.unusable.is_empty() && config.ipv6.is_none());
        assert_eq!(config.local6, Some("fd00:50::11".parse().expect("ip")));
    }

    #[test]
    fn no_bgp_block_means_no_speaker_and_bad_fields_are_named() {
        let static_routed: PodNetworkSpec = serde_json::from_value(serde_json::json!({
            "cidr": "10.246.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Routed",
        }))
        .expect("spec");
        assert_eq!(
            speaker_config(
                &static_routed,
                &own(),
                &labels("rack-a"),
                &Secrets::new(),
                NS
            ),
            Ok(None)
        );
        let cases = [
            (
                serde_json::json!({"asn": 64512, "peers": [{"address": "tor1", "asn": 1}]}),
                "spec.routed.bgp.peers[0].address \"tor1\" is not an IP address",
            ),
            (
                serde_json::json!({"asn": 64512, "peers": [{"address": "fe80::1", "asn": 1}]}),
                "spec.routed.bgp.peers[0].address fe80::1 is in the link-local fe80::/10 range",
            ),
            (
                serde_json::json!({"asn": 64512, "peers": [{"address": "192.168.50.1", "asn": 4_294_967_296_i64}]}),
                "spec.routed.bgp.peers[0].asn 4294967296 is not in 1-4294967295",
            ),
            (
                serde_json::json!({"asn": 64512, "peers": [{"address": "192.168.50.1", "asn": 1,
                    "nodeSelector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}}]}),
                "spec.routed.bgp.peers[0].nodeSelector.matchExpressions key \"k\": unknown operator",
            ),
        ];
        for (bgp, want) in cases {
            let err = speaker_config(
                &network(bgp),
                &own(),
                &labels("rack-a"),
                &Secrets::new(),
                NS,
            )
            .expect_err("invalid");
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn options_reach_the_speaker_and_a_peer_without_its_password_is_reported_not_configured() {
        let spec = network(serde_json::json!({
            "asn": 64512, "nodeAsnLabel": "causeway.dev/asn",
            "gracefulRestart": {"restartTimeSeconds": 300},
            "advertise": {"communities": ["64512:7"], "localPreference": 150},
            "peers": [
                {"address": "192.168.50.1", "asn": 64500, "passive": true, "ebgpMultihop": 3,
                 "password": {"secretRef": {"name": "tor-a"}},
                 "bfd": {"minIntervalMilliseconds": 100, "multiplier": 5}},
                {"address": "192.168.50.2", "asn": 64500,
                 "password": {"secretRef": {"name": "missing"}}},
                {"address": "192.168.50.3", "asn": 64500,
                 "password": {"secretRef": {"name": "tor-a", "key": "other"}}},
                {"address": "192.168.50.4", "asn": 64500,
                 "password": {"secretRef": {"name": "bad"}}},
            ],
        }));
        let secrets = Secrets::from([
            (
                "tor-a".to_owned(),
                BTreeMap::from([("password".to_owned(), b"s3cret".to_vec())]),
            ),
            (
                "bad".to_owned(),
                BTreeMap::from([("password".to_owned(), b"s3cret\n".to_vec())]),
            ),
        ]);
        let mut node_labels = labels("rack-a");
        node_labels.insert("causeway.dev/asn".into(), "64513".into());
        let config = speaker_config(&spec, &own(), &node_labels, &secrets, NS)
            .expect("valid")
            .expect("BGP on");
        assert_eq!(config.local_asn, 64513, "the node label's AS");
        assert_eq!(config.asn_label.as_deref(), Some("causeway.dev/asn"));
        assert_eq!(config.options.graceful_restart, Some(300));
        assert_eq!(
            config.options.communities,
            [causeway_crds::bgp::Community::Standard(64512, 7)]
        );
        assert_eq!(config.options.local_preference, Some(150));
        assert_eq!(config.peers.len(), 1);
        let options = &config.peers[0].options;
        assert!(options.passive);
        assert_eq!(options.multihop, Some(3));
        assert_eq!(options.password, Some(crate::bgp::Md5Key("s3cret".into())));
        assert_eq!(
            options
                .bfd
                .map(|b| (b.min_interval.as_millis(), b.multiplier)),
            Some((100, 5))
        );
        // The key never shows in Debug output (logs).
        assert!(!format!("{config:?}").contains("s3cret"));
        let why: Vec<(String, &str)> = config
            .unusable
            .iter()
            .map(|u| (u.address.to_string(), u.why.as_str()))
            .collect();
        assert_eq!(why.len(), 3, "{why:?}");
        for (address, words) in [
            (
                "192.168.50.2",
                "peers[1].password: Secret causeway-system/missing does not exist: create it with `kubectl -n causeway-system create secret generic missing --from-literal=password=",
            ),
            (
                "192.168.50.3",
                "Secret causeway-system/tor-a has no key \"other\"",
            ),
            ("192.168.50.4", "ends with a line break"),
        ] {
            let found = why.iter().find(|(a, _)| a == address).map(|(_, w)| *w);
            assert!(
                found.is_some_and(|w| w.contains(words)),
                "{address}: {found:?} lacks {words:?}"
            );
        }
    }
}
