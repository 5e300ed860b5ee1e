//! Tables for [`BgpSpec::for_node`]: what a node gets from a BGP block and its labels.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::v1alpha1::{BgpSpec, SecretKeyRef};

fn spec(bgp: Value) -> BgpSpec {
    serde_json::from_value(bgp).expect("test BGP block deserialises")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

const TOR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));

#[test]
fn a_block_written_before_the_new_fields_keeps_its_behaviour_and_gains_graceful_restart() {
    let bgp = spec(json!({"asn": 64512, "peers": [{"address": "192.168.1.1", "asn": 64500}]}));
    let node = bgp.for_node(&labels(&[])).expect("valid");
    assert_eq!(
        node,
        NodeBgp {
            asn: 64512,
            asn_source: AsnSource::Spec,
            hold_time: Duration::from_secs(90),
            keepalive: Duration::from_secs(30),
            graceful_restart: Some(GracefulRestart {
                restart_time: Duration::from_secs(120)
            }),
            communities: vec![],
            local_preference: None,
            peers: vec![NodePeer {
                index: 0,
                address: TOR,
                asn: 64500,
                port: 179,
                passive: false,
                session: Session::External { multihop: None },
                password: None,
                bfd: None,
            }],
            ignored: vec![],
        }
    );
}

#[test]
fn a_top_of_rack_block_resolves_to_typed_settings_with_defaults_filled_in() {
    let bgp = spec(json!({
        "asn": 64512,
        "holdTimeSeconds": 9, "keepaliveSeconds": 3,
        "gracefulRestart": {"restartTimeSeconds": 300},
        "advertise": {"communities": ["65000:100", "4200000000:1:2"], "localPreference": 200},
        "peers": [
            {"address": "192.168.1.1", "asn": 65000, "ebgpMultihop": 2,
             "password": {"secretRef": {"name": "tor-bgp"}}, "bfd": {}},
            {"address": "192.168.1.2", "asn": 64512, "routeReflectorClient": true, "passive": true,
             "port": 1179, "password": {"secretRef": {"name": "rr", "key": "md5"}},
             "bfd": {"minIntervalMilliseconds": 50, "multiplier": 5}},
            {"address": "192.168.1.3", "asn": 65000, "bfd": {"enabled": false}},
        ],
    }));
    let node = bgp.for_node(&labels(&[])).expect("valid");
    assert_eq!(node.hold_time, Duration::from_secs(9));
    assert_eq!(node.keepalive, Duration::from_secs(3));
    assert_eq!(
        node.graceful_restart,
        Some(GracefulRestart {
            restart_time: Duration::from_secs(300)
        })
    );
    assert_eq!(
        node.communities,
        [
            Community::Standard(65000, 100),
            Community::Large(4_200_000_000, 1, 2)
        ]
    );
    assert_eq!(node.local_preference, Some(200));
    assert_eq!(
        node.peers,
        [
            NodePeer {
                index: 0,
                address: TOR,
                asn: 65000,
                port: 179,
                passive: false,
                session: Session::External { multihop: Some(2) },
                password: Some(SecretKeyRef {
                    name: "tor-bgp".into(),
                    key: "password".into()
                }),
                bfd: Some(Bfd {
                    min_interval: Duration::from_millis(300),
                    multiplier: 3
                }),
            },
            NodePeer {
                index: 1,
                address: Ipv4Addr::new(192, 168, 1, 2).into(),
                asn: 64512,
                port: 1179,
                passive: true,
                session: Session::Internal {
                    route_reflector_client: true
                },
                password: Some(SecretKeyRef {
                    name: "rr".into(),
                    key: "md5".into()
                }),
                bfd: Some(Bfd {
                    min_interval: Duration::from_millis(50),
                    multiplier: 5
                }),
            },
            NodePeer {
                index: 2,
                address: Ipv4Addr::new(192, 168, 1, 3).into(),
                asn: 65000,
                port: 179,
                passive: false,
                session: Session::External { multihop: None },
                password: None,
                bfd: None,
            },
        ]
    );
    assert!(node.ignored.is_empty());
    assert!(node.peers[1].session.is_internal() && !node.peers[0].session.is_internal());
}

#[test]
fn graceful_restart_is_on_for_120_seconds_unless_disabled() {
    let on = |restart_time| {
        Some(GracefulRestart {
            restart_time: Duration::from_secs(restart_time),
        })
    };
    let cases = [
        (None, on(120)),
        (Some(json!({})), on(120)),
        (
            Some(json!({"enabled": true, "restartTimeSeconds": 4095})),
            on(4095),
        ),
        (Some(json!({"enabled": false})), None),
        (
            Some(json!({"enabled": false, "restartTimeSeconds": 1})),
            None,
        ),
    ];
    for (gr, want) in cases {
        let mut block = json!({"asn": 64512, "peers": [{"address": "192.168.1.1", "asn": 64500}]});
        if let Some(gr) = &gr {
            block["gracefulRestart"] = gr.clone();
        }
        let node = spec(block).for_node(&labels(&[])).expect("valid");
        assert_eq!(node.graceful_restart, want, "{gr:?}");
    }
}

#[test]
fn the_node_label_gives_a_node_its_own_as_and_a_bad_value_names_the_label() {
    let bgp = spec(json!({
        "asn": 64512, "nodeAsnLabel": "causeway.dev/asn",
        "peers": [{"address": "192.168.1.1", "asn": 65000}],
    }));
    let from_label = |value: &str| AsnSource::NodeLabel {
        key: "causeway.dev/asn".into(),
        value: value.into(),
    };
    // (node labels, the node's AS and its source, or the start of the error)
    type Case = (
        BTreeMap<String, String>,
        Result<(u32, AsnSource), &'static str>,
    );
    let cases: Vec<Case> = vec![
        (labels(&[]), Ok((64512, AsnSource::Spec))),
        (
            labels(&[("other/asn", "65001")]),
            Ok((64512, AsnSource::Spec)),
        ),
        (
            labels(&[("causeway.dev/asn", "65001")]),
            Ok((65001, from_label("65001"))),
        ),
        (
            labels(&[("causeway.dev/asn", "4200000001")]),
            Ok((4_200_000_001, from_label("4200000001"))),
        ),
        (
            labels(&[("causeway.dev/asn", "65535")]),
            Err(
                "node label causeway.dev/asn=\"65535\" (named by spec.routed.bgp.nodeAsnLabel) is reserved (RFC 7300): AS numbers 23456, 65535 and 4294967295 cannot be used; use a private AS number",
            ),
        ),
        (
            labels(&[("causeway.dev/asn", "0")]),
            Err(
                "node label causeway.dev/asn=\"0\" (named by spec.routed.bgp.nodeAsnLabel) is not in 1-4294967295",
            ),
        ),
        (
            labels(&[("causeway.dev/asn", "AS65001")]),
            Err(
                "node label causeway.dev/asn=\"AS65001\" (named by spec.routed.bgp.nodeAsnLabel) is not an AS number: write it as one decimal number",
            ),
        ),
        (
            labels(&[("causeway.dev/asn", "")]),
            Err(
                "node label causeway.dev/asn=\"\" (named by spec.routed.bgp.nodeAsnLabel) is not an AS number",
            ),
        ),
    ];
    for (node_labels, want) in cases {
        let got = bgp
            .for_node(&node_labels)
            .map(|n| (n.asn, n.asn_source))
            .map_err(|e| e.to_string());
        match want {
            Ok(want) => assert_eq!(got, Ok(want), "{node_labels:?}"),
            Err(want) => {
                let got = got.expect_err(want);
                assert!(got.starts_with(want), "{got}");
            }
        }
    }
}

#[test]
fn sessions_are_ebgp_or_ibgp_relative_to_the_nodes_own_as_and_misfits_are_ignored_and_reported() {
    let bgp = spec(json!({
        "asn": 64512, "nodeAsnLabel": "causeway.dev/asn",
        "peers": [
            {"address": "192.168.1.1", "asn": 65000, "ebgpMultihop": 3},
            {"address": "192.168.1.2", "asn": 64512, "routeReflectorClient": true},
        ],
    }));
    // Spec AS: as admission saw it.
    let node = bgp.for_node(&labels(&[])).expect("valid");
    assert_eq!(
        node.peers.iter().map(|p| p.session).collect::<Vec<_>>(),
        [
            Session::External { multihop: Some(3) },
            Session::Internal {
                route_reflector_client: true
            }
        ]
    );
    assert_eq!(node.ignored, []);
    // A node in the router's AS: the first peer turns iBGP, the second eBGP.
    let node = bgp
        .for_node(&labels(&[("causeway.dev/asn", "65000")]))
        .expect("valid");
    assert_eq!(
        node.peers.iter().map(|p| p.session).collect::<Vec<_>>(),
        [
            Session::Internal {
                route_reflector_client: false
            },
            Session::External { multihop: None }
        ]
    );
    let ignored: Vec<String> = node.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(
        ignored,
        [
            "spec.routed.bgp.peers[0].ebgpMultihop is ignored on this node: its AS is 65000, the same as 192.168.1.1's, so the session is iBGP, which may cross routers anyway",
            "spec.routed.bgp.peers[1].routeReflectorClient is ignored on this node: its AS is 65000 and 192.168.1.2's is 64512, so the session is eBGP, which gets every route without reflection",
        ]
    );
}

#[test]
fn a_node_gets_the_peers_that_select_it_in_spec_order() {
    let bgp = spec(json!({
        "asn": 64512,
        "peers": [
            {"address": "192.168.2.1", "asn": 65000,
             "nodeSelector": {"matchLabels": {"rack": "b"}}},
            {"address": "192.168.9.9", "asn": 65000},
            {"address": "192.168.1.1", "asn": 65000, "ebgpMultihop": 2, "routeReflectorClient": true,
             "nodeSelector": {"matchLabels": {"rack": "a"}}},
        ],
    }));
    let cases = [
        (labels(&[("rack", "a")]), vec![1, 2]),
        (labels(&[("rack", "b")]), vec![0, 1]),
        (labels(&[]), vec![1]),
    ];
    for (node_labels, want) in cases {
        let node = bgp.for_node(&node_labels).expect("valid");
        let got: Vec<usize> = node.peers.iter().map(|p| p.index).collect();
        assert_eq!(got, want, "{node_labels:?}");
        // Only the peers of this node report ignored settings.
        assert_eq!(node.ignored.len(), usize::from(want.contains(&2)));
    }
}

#[test]
fn what_admission_refuses_is_refused_with_the_field_and_the_fix() {
    let peer = || json!({"address": "192.168.1.1", "asn": 65000});
    let with = |key: &str, value: Value| {
        let mut block = json!({"asn": 64512, "peers": [peer()]});
        block[key] = value;
        block
    };
    let with_peer = |key: &str, value: Value| {
        let mut p = peer();
        p[key] = value;
        json!({"asn": 64512, "peers": [p]})
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with("asn", json!(23456)),
            "spec.routed.bgp.asn 23456 is reserved (AS_TRANS, RFC 6793): AS numbers 23456, 65535 and 4294967295 cannot be used; use a private AS number from 64512-65534 or 4200000000-4294967294, or one assigned to you",
        ),
        (
            with("asn", json!(0)),
            "spec.routed.bgp.asn 0 is not in 1-4294967295",
        ),
        (
            with_peer("asn", json!(4_294_967_295_i64)),
            "spec.routed.bgp.peers[0].asn 4294967295 is reserved (RFC 7300)",
        ),
        (
            with("nodeAsnLabel", json!("causeway.dev/")),
            "spec.routed.bgp.nodeAsnLabel \"causeway.dev/\": a label key is [prefix/]name",
        ),
        (
            with("holdTimeSeconds", json!(2)),
            "spec.routed.bgp.holdTimeSeconds 2 is out of range: use 0 (no keepalives) or 3-65535",
        ),
        (
            json!({"asn": 64512, "peers": [peer()], "holdTimeSeconds": 9, "keepaliveSeconds": 9}),
            "spec.routed.bgp.keepaliveSeconds 9 must be less than holdTimeSeconds 9",
        ),
        (
            with("gracefulRestart", json!({"restartTimeSeconds": 4096})),
            "spec.routed.bgp.gracefulRestart.restartTimeSeconds 4096 is out of range: use 1-4095",
        ),
        (
            with(
                "advertise",
                json!({"communities": ["65000:100", "65536:1"]}),
            ),
            "spec.routed.bgp.advertise.communities[1] 65536:1 is out of range: both numbers of a standard community are 0-65535",
        ),
        (
            with("advertise", json!({"communities": ["no-export"]})),
            "spec.routed.bgp.advertise.communities[0] no-export is not a BGP community",
        ),
        (
            with("advertise", json!({"communities": ["1:2", "1:2:3", "1:2"]})),
            "spec.routed.bgp.advertise.communities lists 1:2 more than once",
        ),
        (
            with("advertise", json!({"localPreference": -1})),
            "spec.routed.bgp.advertise.localPreference -1 is out of range: use 0-4294967295",
        ),
        (
            with_peer("address", json!("tor1")),
            "spec.routed.bgp.peers[0].address \"tor1\" is not an IP address: use the router's address on the node network, such as 192.168.10.1 or fd00:50::1",
        ),
        (
            with_peer("address", json!("fe80::1")),
            "spec.routed.bgp.peers[0].address fe80::1 is in the link-local fe80::/10 range, not a unicast address a host can own: use the router's address on the node network, such as fd00:50::1",
        ),
        (
            with_peer("address", json!("127.0.0.1")),
            "spec.routed.bgp.peers[0].address 127.0.0.1 is in the loopback 127.0.0.0/8 range",
        ),
        (
            json!({"asn": 64512, "peers": [
                {"address": "fd00:50::1", "asn": 65000},
                {"address": "fd00:50:0::1", "asn": 65001},
            ]}),
            "spec.routed.bgp.peers has more than one entry with address fd00:50::1",
        ),
        (
            json!({"asn": 64512, "peers": [peer(), peer()]}),
            "spec.routed.bgp.peers has more than one entry with address 192.168.1.1",
        ),
        (
            with_peer("port", json!(0)),
            "spec.routed.bgp.peers[0].port 0 is out of range: use 1-65535",
        ),
        (
            with_peer("ebgpMultihop", json!(1)),
            "spec.routed.bgp.peers[0].ebgpMultihop 1 is out of range: use 2-255",
        ),
        (
            with_peer(
                "nodeSelector",
                json!({"matchExpressions": [{"key": "k", "operator": "Near"}]}),
            ),
            "spec.routed.bgp.peers[0].nodeSelector.matchExpressions key \"k\": unknown operator",
        ),
        (
            with_peer("password", json!({"secretRef": {"name": "Tor"}})),
            "spec.routed.bgp.peers[0].password.secretRef.name \"Tor\" is not a Secret name",
        ),
        (
            with_peer(
                "password",
                json!({"secretRef": {"name": "tor", "key": "a/b"}}),
            ),
            "spec.routed.bgp.peers[0].password.secretRef.key \"a/b\" is not a Secret data key",
        ),
        (
            with_peer("bfd", json!({"minIntervalMilliseconds": 5})),
            "spec.routed.bgp.peers[0].bfd.minIntervalMilliseconds 5 is out of range: use 10-60000",
        ),
        (
            with_peer("bfd", json!({"multiplier": 256})),
            "spec.routed.bgp.peers[0].bfd.multiplier 256 is out of range: use 1-255",
        ),
    ];
    for (block, want) in cases {
        let got = spec(block.clone())
            .for_node(&labels(&[]))
            .expect_err(want)
            .to_string();
        assert!(got.starts_with(want), "{block}:\n got {got}\nwant {want}");
    }
}

#[test]
fn a_disabled_bfd_block_is_no_bfd_and_a_peer_elsewhere_is_still_checked() {
    let bgp = spec(json!({"asn": 64512, "peers": [
        {"address": "192.168.1.1", "asn": 65000, "bfd": {"enabled": false, "multiplier": 7}},
        {"address": "192.168.2.1", "asn": 65000, "port": 0,
         "nodeSelector": {"matchLabels": {"rack": "b"}}},
    ]}));
    // The second peer does not select this node, but its port is refused on every node, so a
    // spec error never depends on which node reads it.
    let err = bgp.for_node(&labels(&[("rack", "a")])).expect_err("port 0");
    assert!(
        err.to_string()
            .starts_with("spec.routed.bgp.peers[1].port 0"),
        "{err}"
    );
    let bgp = spec(json!({"asn": 64512, "peers": [
        {"address": "192.168.1.1", "asn": 65000, "bfd": {"enabled": false, "multiplier": 7}},
    ]}));
    let node = bgp.for_node(&labels(&[])).expect("valid");
    assert_eq!(node.peers[0].bfd, None);
}

#[test]
fn an_ipv6_router_address_is_a_peer_like_an_ipv4_one() {
    let bgp = spec(json!({"asn": 64512, "peers": [
        {"address": "fd00:50::1", "asn": 64500, "bfd": {}},
        {"address": "192.168.1.1", "asn": 64500},
    ]}));
    let node = bgp.for_node(&labels(&[])).expect("valid");
    let peers: Vec<(IpAddr, bool)> = node
        .peers
        .iter()
        .map(|p| (p.address, p.bfd.is_some()))
        .collect();
    assert_eq!(
        peers,
        [("fd00:50::1".parse().expect("address"), true), (TOR, false)],
        "spec order, both families"
    );
}
