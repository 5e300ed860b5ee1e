//! Names of objects Causeway derives from other names.
//!
//! The operator creates one NodeSubnet per (PodNetwork, Node) pair and names it
//! [`node_subnet_name`]`(network, node)`, so `kubectl get nsub` reads naturally
//! (`pods-node-a`). Both inputs are object names and hence DNS-1123 subdomains, and so is
//! their `-` join, but it can exceed the 253-character limit: then the name is truncated and a
//! hash of both inputs is appended so distinct pairs keep distinct names.
//!
//! A plain join is ambiguous (`a-b` + `c` and `a` + `b-c` both give `a-b-c`). Names are
//! therefore never parsed back: consumers find NodeSubnets by `spec.network` and
//! `spec.nodeName` (both are selectable fields), and the operator, when the plain name is
//! already taken by another pair, uses [`node_subnet_name_hashed`], which always carries the
//! hash.

use crate::vtep::fnv1a64;

/// Longest object name Kubernetes accepts (a DNS-1123 subdomain).
pub const MAX_NAME_LENGTH: usize = 253;

/// Hex digits of the hash suffix (40 bits).
const HASH_DIGITS: usize = 10;

fn pair_hash(network: &str, node: &str) -> String {
    // `/` cannot occur in either name, so the hashed input is unambiguous.
    let hash = fnv1a64(format!("{network}/{node}").as_bytes());
    format!("{:016x}", hash)[16 - HASH_DIGITS..].to_owned()
}

fn with_suffix(joined: &str, suffix: &str) -> String {
    let keep = MAX_NAME_LENGTH - 1 - suffix.len();
    // Names are ASCII (DNS-1123), so byte truncation is character truncation; guard anyway.
    let mut prefix: String = joined.chars().take(keep).collect();
    // A DNS-1123 subdomain may not have `-` or `.` before the `-` we add next to a dot.
    while prefix.ends_with(['-', '.']) {
        prefix.pop();
    }
    format!("{prefix}-{suffix}")
}

/// The name of the NodeSubnet for `node` in the PodNetwork `network`: `<network>-<node>`,
/// or, when that exceeds 253 characters, its first characters followed by `-` and a 10-digit
/// hex hash of both names.
#[must_use]
pub fn node_subnet_name(network: &str, node: &str) -> String {
    let joined = format!("{network}-{node}");
    if joined.len() <= MAX_NAME_LENGTH {
        joined
    } else {
        with_suffix(&joined, &pair_hash(network, node))
    }
}

/// `<network>-<node>-<hash>`, truncated before the hash to fit 253 characters: the
/// collision-free fallback when [`node_subnet_name`] is taken by another (network, node) pair.
#[must_use]
pub fn node_subnet_name_hashed(network: &str, node: &str) -> String {
    let joined = format!("{network}-{node}");
    with_suffix(&joined, &pair_hash(network, node))
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

    #[test]
    fn node_subnet_name_joins_short_names_with_a_dash() {
        let cases: &[(&str, &str, &str)] = &[
            ("pods", "node-a", "pods-node-a"),
            (
                "overlay",
                "worker-1.example.com",
                "overlay-worker-1.example.com",
            ),
            ("a", "b", "a-b"),
        ];
        for (network, node, want) in cases {
            assert_eq!(node_subnet_name(network, node), *want);
        }
    }

    #[test]
    fn node_subnet_names_stay_valid_and_distinct_when_truncated() {
        let long_network = "n".repeat(200);
        let long_node_a = format!("{}.a", "x".repeat(100));
        let long_node_b = format!("{}.b", "x".repeat(100));
        let dotted = format!("{}.{}", "y".repeat(41), "z".repeat(100));
        let very_long_network = "p".repeat(253);
        let long_network_q = "q".repeat(200);
        let cases = [
            (long_network.as_str(), long_node_a.as_str()),
            (long_network.as_str(), long_node_b.as_str()),
            (very_long_network.as_str(), "node-a"),
            (long_network_q.as_str(), dotted.as_str()),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (network, node) in cases {
            let name = node_subnet_name(network, node);
            assert!(name.len() <= MAX_NAME_LENGTH, "{} chars", name.len());
            assert!(is_dns1123_subdomain(&name), "{name}");
            assert!(seen.insert(name), "duplicate for {network}/{node}");
        }
    }

    #[test]
    fn hashed_node_subnet_names_separate_pairs_whose_plain_names_collide() {
        assert_eq!(node_subnet_name("a-b", "c"), node_subnet_name("a", "b-c"));
        let one = node_subnet_name_hashed("a-b", "c");
        let two = node_subnet_name_hashed("a", "b-c");
        assert_ne!(one, two);
        assert!(one.starts_with("a-b-c-") && one.len() == "a-b-c-".len() + HASH_DIGITS);
        assert!(is_dns1123_subdomain(&one) && is_dns1123_subdomain(&two));
        assert_eq!(node_subnet_name_hashed("a-b", "c"), one, "deterministic");
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
