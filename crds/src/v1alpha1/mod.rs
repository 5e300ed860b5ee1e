//! `causeway.dev/v1alpha1`: the three cluster-scoped kinds of Causeway's API.
//!
//! - [`PodNetwork`] (written by platform engineers): the pod CIDR, how it is split per node,
//!   and how packets cross between nodes (Flat, Routed or Overlay).
//! - [`NodeSubnet`] (spec by the operator, status by the node's agent): one node's share of a
//!   PodNetwork and everything a peer needs to reach it.
//! - [`OverlayGateway`] (written by platform engineers): how machines that are not nodes reach
//!   pod IPs.
//!
//! The derives produce the CRD's OpenAPI schema; `#[x_kube(validation = ...)]` attributes add
//! the CEL rules the API server runs at admission, and [`address`] holds the one set of rules
//! every IPv4 address and CIDR field carries, [`bgp_rules`] those of the BGP block. Limits used
//! in several places live here so the schema, the docs and the tests agree on them.

pub mod address;
mod bgp;
pub mod bgp_rules;
mod nodesubnet;
mod overlaygateway;
mod podnetwork;

pub use bgp::*;
pub use nodesubnet::*;
pub use overlaygateway::*;
pub use podnetwork::*;

/// Longest Kubernetes object name (DNS-1123 subdomain): bound for fields naming objects.
pub const MAX_OBJECT_NAME_LENGTH: usize = crate::naming::MAX_NAME_LENGTH;
/// Longest CIDR string (an IPv6 CIDR in full form): bound for CIDR fields, large enough that an
/// IPv6 value reaches the "IPv4 only" CEL rule and gets its explanatory message.
pub const MAX_CIDR_LENGTH: usize = 43;
/// Longest IP address string (IPv6 with an embedded IPv4 tail).
pub const MAX_IP_LENGTH: usize = 45;
/// Most CIDRs in a CIDR list field (`natExcludeCidrs`, `clientCidrs`).
pub const MAX_CIDR_LIST_ITEMS: usize = 64;
/// Most BGP peers of a PodNetwork (and BGP sessions a node reports).
pub const MAX_BGP_PEERS: usize = 32;
/// Most clients of a `ClientJoin` gateway.
pub const MAX_GATEWAY_CLIENTS: usize = 64;
/// Longest free-text status message.
pub const MAX_MESSAGE_LENGTH: usize = 1024;

/// `serde` default helper for fields that default to `true`.
pub(crate) fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vtep::vtep_mac;

    #[test]
    fn empty_statuses_deserialise_to_their_defaults() {
        let empty = serde_json::json!({});
        assert_eq!(
            serde_json::from_value::<PodNetworkStatus>(empty.clone()).ok(),
            Some(PodNetworkStatus::default())
        );
        assert_eq!(
            serde_json::from_value::<NodeSubnetStatus>(empty.clone()).ok(),
            Some(NodeSubnetStatus::default())
        );
        assert_eq!(
            serde_json::from_value::<OverlayGatewayStatus>(empty).ok(),
            Some(OverlayGatewayStatus::default())
        );
    }

    #[test]
    fn a_minimal_pod_network_gets_the_documented_defaults_and_derived_values() {
        let spec: PodNetworkSpec = serde_json::from_value(serde_json::json!({
            "cidr": "10.244.0.0/16",
            "nodeSubnetPrefixLength": 24,
            "mode": "Overlay",
        }))
        .expect("minimal spec deserialises");
        assert!(spec.nat_outgoing, "natOutgoing defaults to true");
        assert!(spec.nat_exclude_cidrs.is_empty());
        assert_eq!(
            spec.overlay_or_default(),
            OverlaySpec {
                vni: 1,
                port: 8472,
                cross_subnet: false
            }
        );
        let range = spec.primary_range().expect("valid range");
        assert_eq!((range.capacity(), range.prefix_length), (256, 24));
        assert_eq!(spec.secondary_range(), Ok(None));
        assert_eq!(spec.effective_mtu(1500), 1450);
    }

    #[test]
    fn pod_network_helpers_reject_what_admission_rejects() {
        let base = PodNetworkSpec {
            cidr: "10.244.0.0/16".into(),
            node_subnet_prefix_length: 24,
            node_selector: None,
            mode: PodNetworkMode::Flat,
            flat: None,
            routed: None,
            overlay: None,
            mtu: None,
            nat_outgoing: true,
            nat_exclude_cidrs: Vec::new(),
            secondary_cidr: None,
            secondary_node_subnet_prefix_length: None,
        };
        let cases: &[(&str, i32, &str)] = &[
            ("10.244.1.0/16", 24, "spec.cidr"),
            ("10.244.0.0/16", 16, "spec.nodeSubnetPrefixLength"),
            ("10.244.0.0/16", -1, "spec.nodeSubnetPrefixLength"),
            ("10.244.0.0/16", 31, "spec.nodeSubnetPrefixLength"),
            ("fd00::/48", 127, "spec.nodeSubnetPrefixLength"),
            ("fd00::1/48", 64, "spec.cidr"),
        ];
        for (cidr, prefix, field) in cases {
            let spec = PodNetworkSpec {
                cidr: (*cidr).into(),
                node_subnet_prefix_length: *prefix,
                ..base.clone()
            };
            let got = spec.primary_range().map(|_| ()).map_err(|e| e.field);
            assert_eq!(got, Err(*field), "{cidr} /{prefix}");
        }
        let ipv6 = PodNetworkSpec {
            cidr: "fd00:10:244::/56".into(),
            node_subnet_prefix_length: 64,
            ..base.clone()
        };
        assert_eq!(ipv6.primary_range().map(|r| r.capacity()), Ok(256));
        let dual = |secondary: Option<&str>, prefix: Option<i32>| PodNetworkSpec {
            secondary_cidr: secondary.map(Into::into),
            secondary_node_subnet_prefix_length: prefix,
            ..base.clone()
        };
        let ranges = dual(Some("fd00:10:244::/56"), Some(64))
            .ranges()
            .expect("dual-stack");
        assert_eq!(
            ranges.iter().map(|r| r.family().name()).collect::<Vec<_>>(),
            ["IPv4", "IPv6"]
        );
        let refused: &[(Option<&str>, Option<i32>, &str)] = &[
            (Some("10.245.0.0/16"), Some(24), "same address family"),
            (Some("fd00:10:244::/56"), None, "go together"),
            (None, Some(64), "go together"),
            (
                Some("fd00:10:244::/56"),
                Some(56),
                "prefix length must be larger than 56",
            ),
        ];
        for (secondary, prefix, want) in refused {
            let got = dual(*secondary, *prefix).secondary_range();
            assert!(
                got.as_ref().is_err_and(|e| e.to_string().contains(want)),
                "{secondary:?} /{prefix:?}: {got:?}"
            );
        }
        assert_eq!(base.effective_mtu(1500), 1500);
    }

    #[test]
    fn the_bgp_block_is_in_force_in_routed_mode_only() {
        let spec = |mode: &str| -> PodNetworkSpec {
            serde_json::from_value(serde_json::json!({
                "cidr": "10.244.0.0/16", "nodeSubnetPrefixLength": 24, "mode": mode,
                "routed": {"bgp": {"asn": 64512, "peers": [{"address": "192.168.1.1", "asn": 64500}]}},
            }))
            .expect("spec deserialises")
        };
        assert_eq!(spec("Routed").bgp().map(|b| b.asn), Some(64512));
        assert_eq!(spec("Overlay").bgp(), None);
        let mut static_routed = spec("Routed");
        static_routed.routed = Some(RoutedSpec::default());
        assert_eq!(static_routed.bgp(), None);
    }

    #[test]
    fn node_subnet_helpers_parse_what_the_operator_writes() {
        let spec = NodeSubnetSpec {
            network: "overlay".into(),
            node_name: "node-a".into(),
            cidr: "10.244.1.0/24".into(),
            node_address: "192.168.1.11".into(),
            vtep_mac: Some(vtep_mac("node-a").to_string()),
            secondary_cidr: None,
            secondary_node_address: None,
        };
        assert_eq!(
            spec.parsed_cidr().map(|c| c.to_string()),
            Ok("10.244.1.0/24".into())
        );
        assert_eq!(
            spec.parsed_node_address().map(|a| a.to_string()),
            Ok("192.168.1.11".into())
        );
        assert_eq!(spec.parsed_vtep_mac(), Ok(Some(vtep_mac("node-a"))));
        let bad = NodeSubnetSpec {
            vtep_mac: Some("0E:00:00:00:00:01".into()),
            secondary_cidr: None,
            secondary_node_address: None,
            ..spec.clone()
        };
        assert!(bad.parsed_vtep_mac().is_err());
        assert_eq!(
            bad.parse().map_err(|e| e.field),
            Err("spec.vtepMac"),
            "the view names the field that does not parse"
        );
        let parsed = spec.parse().expect("valid spec");
        assert_eq!(Ok(parsed.cidr), spec.parsed_cidr());
        assert_eq!(parsed.vtep_mac, vtep_mac("node-a"));
        let legacy = NodeSubnetSpec {
            vtep_mac: None,
            secondary_cidr: None,
            secondary_node_address: None,
            node_address: "192.168.1.300".into(),
            ..spec.clone()
        };
        let error = legacy.parse().map_err(|e| e.to_string());
        assert!(
            error
                .as_ref()
                .is_err_and(|e| e.starts_with("spec.nodeAddress: ")),
            "{error:?}"
        );
        let legacy = NodeSubnetSpec {
            vtep_mac: None,
            secondary_cidr: None,
            secondary_node_address: None,
            ..spec
        };
        assert_eq!(
            legacy.parse().map(|p| p.vtep_mac),
            Ok(vtep_mac("node-a")),
            "without vtepMac the derived MAC is used"
        );
    }
}
