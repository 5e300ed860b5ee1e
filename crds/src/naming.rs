//! Rules for object names Causeway derives from other names.
//!
//! NodeSubnets are named by the operator after the network and the subnet they hold,
//! `<network>-<a>-<b>-<c>-<d>-<prefix length>` (`overlay-10-247-3-0-24`; see
//! `causeway_operator::ipam::object_name`): two operators that race for one subnet race for
//! one name, and the API server lets only one create it. Names are never parsed back:
//! consumers find NodeSubnets by `spec.network` and `spec.nodeName` or the
//! `causeway.dev/network` and `causeway.dev/node` labels.

/// Longest object name Kubernetes accepts (a DNS-1123 subdomain).
pub const MAX_NAME_LENGTH: usize = 253;

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
