//! Rules for object names Causeway derives from other names.
//!
//! NodeSubnets are named by the operator after the network and the subnet they hold,
//! `<network>-<a>-<b>-<c>-<d>-<prefix length>` (`overlay-10-247-3-0-24`; an IPv6 subnet with
//! its eight groups, `overlay-fd00-10-244-3-0-0-0-0-64`; [`node_subnet_name`]): two operators that race for one subnet race for
//! one name, and the API server lets only one create it. Names are never parsed back:
//! consumers find NodeSubnets by `spec.network` and `spec.nodeName` or the
//! `causeway.dev/network` and `causeway.dev/node` labels.

use ipnet::IpNet;

/// Longest object name Kubernetes accepts (a DNS-1123 subdomain).
pub const MAX_NAME_LENGTH: usize = 253;

/// Hex digits of the hash that keeps truncated names distinct (40 bits).
const HASH_DIGITS: usize = 10;

/// 64-bit FNV-1a: tiny, dependency-free and fixed by its specification, so a name (or a VTEP
/// MAC, [`crate::vtep`]) computed by one release is computed identically by the next. Not
/// collision resistant against an adversary (it does not need to be).
#[must_use]
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// The NodeSubnet name for `subnet` of the PodNetwork `network`: `<network>-a-b-c-d-<len>`
/// (`overlay-10-247-3-0-24`), or for an IPv6 subnet its eight groups in hex without leading
/// zeros (`overlay-fd00-10-244-3-0-0-0-0-64`).
///
/// The subnet part always has five (IPv6: nine) numbers, so a name reads unambiguously from
/// the right. When the result would exceed 253 characters the network part is truncated and a
/// 10-digit hash of the full network name is inserted before the subnet part, so long network
/// names that share a prefix keep distinct names.
#[must_use]
pub fn node_subnet_name(network: &str, subnet: impl Into<IpNet>) -> String {
    let subnet: IpNet = subnet.into();
    let groups: Vec<String> = match subnet {
        IpNet::V4(net) => net.network().octets().iter().map(u8::to_string).collect(),
        IpNet::V6(net) => net
            .network()
            .segments()
            .iter()
            .map(|g| format!("{g:x}"))
            .collect(),
    };
    let suffix = format!("{}-{}", groups.join("-"), subnet.prefix_len());
    let joined = format!("{network}-{suffix}");
    if joined.len() <= MAX_NAME_LENGTH {
        return joined;
    }
    let hash = format!("{:016x}", fnv1a64(network.as_bytes()));
    let hash = &hash[16 - HASH_DIGITS..];
    let keep = MAX_NAME_LENGTH - suffix.len() - HASH_DIGITS - 2;
    // Names are ASCII (DNS-1123), so characters are bytes.
    let mut prefix: String = network.chars().take(keep).collect();
    // A DNS-1123 label may not end in `-`, and `.-` is not allowed either.
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}-{hash}-{suffix}")
}

/// Whether `name` is a valid DNS-1123 subdomain (the rule for Kubernetes object names).
#[must_use]
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            matches!((bytes.first(), bytes.last()), (Some(f), Some(l)) if alnum(f) && alnum(l))
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn net(s: &str) -> IpNet {
        s.parse().expect("CIDR")
    }

    #[test]
    fn object_names_are_the_network_and_the_subnet() {
        let cases: &[(&str, &str, &str)] = &[
            ("overlay", "10.247.3.0/24", "overlay-10-247-3-0-24"),
            ("pods", "10.0.0.0/30", "pods-10-0-0-0-30"),
            ("a.b", "192.168.255.128/25", "a.b-192-168-255-128-25"),
            (
                "dual",
                "fd00:10:244:3::/64",
                "dual-fd00-10-244-3-0-0-0-0-64",
            ),
            ("v6", "2001:db8::fffc/126", "v6-2001-db8-0-0-0-0-0-fffc-126"),
        ];
        for (network, subnet, want) in cases {
            assert_eq!(node_subnet_name(network, net(subnet)), *want);
        }
    }

    #[test]
    fn long_network_names_are_truncated_into_valid_distinct_object_names() {
        let subnet = net("255.255.255.252/30");
        let networks = [
            "n".repeat(234),
            "n".repeat(235),
            format!("{}-x", "n".repeat(250)),
            format!("{}-y", "n".repeat(250)),
            format!("{}.{}", "m".repeat(220), "k".repeat(32)),
            format!("{}-{}", "m".repeat(220), "k".repeat(32)),
        ];
        let mut seen = BTreeSet::new();
        for network in &networks {
            let name = node_subnet_name(network, subnet);
            assert!(name.len() <= MAX_NAME_LENGTH, "{} chars", name.len());
            assert!(is_dns1123_subdomain(&name), "{name}");
            assert!(name.ends_with("-255-255-255-252-30"), "{name}");
            assert!(seen.insert(name.clone()), "duplicate {name}");
            assert_eq!(node_subnet_name(network, subnet), name, "deterministic");
        }
        assert_eq!(
            node_subnet_name(&networks[0], subnet).len(),
            MAX_NAME_LENGTH
        );
    }

    #[test]
    fn is_dns1123_subdomain_follows_the_kubernetes_rule() {
        let cases: &[(&str, bool)] = &[
            ("node-a", true),
            ("worker-1.example.com", true),
            ("a", true),
            ("", false),
            ("Node-A", false),
            ("-a", false),
            ("a-", false),
            ("a..b", false),
            ("a_b", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_dns1123_subdomain(name), *want, "{name:?}");
        }
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }
}
