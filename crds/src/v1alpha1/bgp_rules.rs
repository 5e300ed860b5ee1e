//! The admission rules of a PodNetwork's BGP fields (`spec.routed.bgp`), defined once.
//!
//! They are built from the same tables and phrases as the checks in [`crate::bgp`], which the
//! agent runs per node (a node label can give a node its own AS, which admission never sees),
//! so admission and the agent refuse the same values with the same words; the unit tests below
//! run both over one table. What the rules check:
//!
//! - [`asn`]: the reserved AS numbers 23456, 65535 and 4294967295 ([`crate::bgp::asn::RESERVED`])
//!   on `asn` and `peers[].asn`; 0 and the range are the schema's `minimum`/`maximum`.
//! - [`community`] and [`unique_values`]: `advertise.communities` entries are canonical
//!   standard (`a:b`, 0-65535) or large (`a:b:c`, 0-4294967295) communities, listed once.
//! - [`label_key`]: `nodeAsnLabel` is a label key ([`crate::selector::validate_label_key`]).
//! - [`object_name`] and [`secret_key`]: `password.secretRef` names a Secret and a data key.
//! - [`ebgp_multihop_only_for_ebgp`] and [`route_reflector_client_only_for_ibgp`]: rules of the
//!   whole `bgp` block, comparing each peer's AS with `asn`.
//!
//! As in [`super::address`], every message is built from `self`, its substrings and fields the
//! schema bounds, and literals, so the API server can bound its cost; nothing converts a number
//! to a string. A message naming a peer maps the peers to their addresses (`map(p, cond,
//! p.address)`) rather than filtering peer objects and selecting the address afterwards: the API
//! server cannot bound the size of a field read from a filtered object, and refuses the CRD
//! because that message's estimated cost exceeds the budget more than 100 times. Regular
//! expressions avoid backslashes (`[.]` for a dot).

use kube::core::{Message, Rule};

use super::address::literal;
use crate::bgp::asn::{RESERVED, reserved_advice};
use crate::bgp::community::CommunityError;

/// A community as written: two or three decimal numbers without leading zeros, of at most 10
/// digits each (so `int()` never overflows); the ranges are a separate rule.
pub const COMMUNITY_PATTERN: &str =
    "^(0|[1-9][0-9]{0,9}):(0|[1-9][0-9]{0,9})(:(0|[1-9][0-9]{0,9}))?$";

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at most 63 characters
/// (the prefix's 253-character limit is checked separately).
pub const LABEL_KEY_PATTERN: &str = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// A Kubernetes object name (DNS-1123 subdomain; the length is the field's `maxLength`).
pub const OBJECT_NAME_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A key of a Secret's data (the length is the field's `maxLength`).
pub const SECRET_KEY_PATTERN: &str = "^[-._a-zA-Z0-9]+$";

/// What a label key looks like, for messages.
const LABEL_KEY_ADVICE: &str = "write [prefix/]name, the name at most 63 letters, digits, '-', '_' and '.' beginning and ending with a letter or digit, the optional prefix a lowercase DNS subdomain, such as causeway.dev/asn";

/// The rule of an AS number field (`field` as messages name it): not a reserved AS number.
#[must_use]
pub fn asn(field: &str) -> Rule {
    let numbers: Vec<String> = RESERVED.iter().map(|r| r.asn.to_string()).collect();
    let which = RESERVED.split_last().map_or_else(
        || literal("reserved"),
        |(last, rest)| {
            let name = |r: &crate::bgp::asn::ReservedAsn| {
                literal(&format!("{} is reserved ({})", r.asn, r.why))
            };
            rest.iter().rev().fold(name(last), |otherwise, r| {
                format!("self == {} ? {} : {otherwise}", r.asn, name(r))
            })
        },
    );
    Rule::new(format!("!(self in [{}])", numbers.join(", "))).message(Message::Expression(format!(
        "{} + ({which}) + {}",
        literal(&format!("{field} ")),
        literal(&format!(": {}", reserved_advice()))
    )))
}

/// The rules of one community (the items of `field`): the syntax, then the ranges.
#[must_use]
pub fn community(field: &str) -> Vec<Rule> {
    let syntax = format!("self.matches({})", literal(COMMUNITY_PATTERN));
    let standard = "size(self.split(':')) == 2";
    vec![
        Rule::new(syntax.clone()).message(Message::Expression(format!(
            "{} + self + {}",
            literal(&format!("{field} ")),
            literal(&format!(" is {}", CommunityError::Syntax))
        ))),
        Rule::new(format!(
            "!{syntax} || ({standard} ? self.split(':').all(n, int(n) <= 65535) : self.split(':').all(n, int(n) <= 4294967295))"
        ))
        .message(Message::Expression(format!(
            "{} + self + ({standard} ? {} : {})",
            literal(&format!("{field} ")),
            literal(&format!(" is {}", CommunityError::StandardRange)),
            literal(&format!(" is {}", CommunityError::LargeRange)),
        ))),
    ]
}

/// The rule of a list of strings whose entries must differ: its message names the list, the
/// duplicated value, then `fix`.
#[must_use]
pub fn unique_values(list: &str, fix: &str) -> Rule {
    Rule::new("self.all(x, self.exists_one(y, y == x))").message(Message::Expression(format!(
        "{} + self.filter(v, !self.exists_one(y, y == v))[0] + {}",
        literal(&format!("{list} lists ")),
        literal(&format!(" more than once: {fix}")),
    )))
}

/// The rule of a field that holds a node label key.
#[must_use]
pub fn label_key(field: &str) -> Rule {
    Rule::new(format!(
        "self.matches({}) && (!self.contains('/') || self.indexOf('/') <= 253)",
        literal(LABEL_KEY_PATTERN)
    ))
    .message(Message::Expression(format!(
        "{} + self + {}",
        literal(&format!("{field} ")),
        literal(&format!(" is not a label key: {LABEL_KEY_ADVICE}")),
    )))
}

/// The rule of a field that names an object of `kind` (a DNS-1123 subdomain).
#[must_use]
pub fn object_name(field: &str, kind: &str, example: &str) -> Rule {
    Rule::new(format!("self.matches({})", literal(OBJECT_NAME_PATTERN))).message(
        Message::Expression(format!(
            "{} + self + {}",
            literal(&format!("{field} ")),
            literal(&format!(
                " is not a {kind} name: use lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit, such as {example}"
            )),
        )),
    )
}

/// The rule of a field that names a key of a Secret's data.
#[must_use]
pub fn secret_key(field: &str, example: &str) -> Rule {
    Rule::new(format!("self.matches({})", literal(SECRET_KEY_PATTERN))).message(
        Message::Expression(format!(
            "{} + self + {}",
            literal(&format!("{field} ")),
            literal(&format!(
                " is not a Secret data key: use letters, digits, '-', '_' and '.', such as {example}"
            )),
        )),
    )
}

/// The rule of `routed.bgp` that allows `ebgpMultihop` on eBGP peers only; the message names
/// the first iBGP peer that sets it.
#[must_use]
pub fn ebgp_multihop_only_for_ebgp() -> Rule {
    Rule::new("self.peers.all(p, !has(p.ebgpMultihop) || p.asn != self.asn)")
        .message(Message::Expression(format!(
            "{} + self.peers.map(p, has(p.ebgpMultihop) && p.asn == self.asn, p.address)[0] + {}",
            literal("routed.bgp.peers[].ebgpMultihop is set for "),
            literal(
                ", an iBGP peer (its asn equals routed.bgp.asn), and iBGP sessions may cross routers without it: remove ebgpMultihop, or correct the peer's asn"
            ),
        )))
        .field_path(".peers")
}

/// The rule of `routed.bgp` that allows `routeReflectorClient` on iBGP peers only; the message
/// names the first eBGP peer that sets it.
#[must_use]
pub fn route_reflector_client_only_for_ibgp() -> Rule {
    let reflects = "has(p.routeReflectorClient) && p.routeReflectorClient";
    Rule::new(format!("self.peers.all(p, !({reflects}) || p.asn == self.asn)"))
        .message(Message::Expression(format!(
            "{} + self.peers.map(p, {reflects} && p.asn != self.asn, p.address)[0] + {}",
            literal("routed.bgp.peers[].routeReflectorClient is true for "),
            literal(
                ", an eBGP peer (its asn differs from routed.bgp.asn): route reflection is between iBGP peers only, and eBGP peers get every route anyway; remove routeReflectorClient, or give the peer the asn routed.bgp.asn"
            ),
        )))
        .field_path(".peers")
}

#[cfg(test)]
mod tests {
    use kube::core::cel::Validator;
    use serde_json::{Value, json};

    use super::*;
    use crate::bgp::asn;
    use crate::bgp::community::{CASES, Community};

    /// The messages of the rules failing for `value` in a field carrying `rules`.
    fn errors(rules: &[Rule], value: Value) -> Vec<String> {
        let schema = json!({
            "type": "object",
            "properties": {"f": {"x-kubernetes-validations": rules}},
        });
        match Validator::new().validate(&schema, &json!({ "f": value }), None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
        }
    }

    #[test]
    fn the_asn_rule_refuses_exactly_what_the_agent_refuses_with_the_same_words() {
        let rules = [asn("a")];
        for value in [
            1_i64,
            23_455,
            23_456,
            64_512,
            65_534,
            65_535,
            65_536,
            4_294_967_294,
            4_294_967_295,
        ] {
            let got = errors(&rules, json!(value));
            match asn::check(value) {
                Ok(_) => assert_eq!(got, Vec::<String>::new(), "{value}"),
                Err(problem) => assert_eq!(got, [format!("a {value} {problem}")], "{value}"),
            }
        }
    }

    #[test]
    fn the_community_rules_accept_exactly_what_the_parser_accepts_with_the_same_words() {
        let rules = community("c[]");
        for (text, parsed) in CASES {
            let got = errors(&rules, json!(text));
            match parsed {
                Ok(_) => assert_eq!(got, Vec::<String>::new(), "{text:?}"),
                Err(e) => assert_eq!(got, [format!("c[] {text} is {e}")], "{text:?}"),
            }
        }
        assert!(
            CASES
                .iter()
                .any(|(_, p)| matches!(p, Ok(Community::Large(..))))
        );
    }

    #[test]
    fn a_list_of_unique_values_names_the_value_listed_twice() {
        let rules = [unique_values("l", "list each once")];
        assert_eq!(errors(&rules, json!([])), Vec::<String>::new());
        assert_eq!(errors(&rules, json!(["a", "b"])), Vec::<String>::new());
        assert_eq!(
            errors(&rules, json!(["a", "b", "c", "b"])),
            ["l lists b more than once: list each once"]
        );
    }

    #[test]
    fn the_label_key_rule_accepts_exactly_what_selectors_accept() {
        let long_prefix = format!("{}/asn", "a".repeat(254));
        let longest_prefix = format!("{}/asn", "a".repeat(253));
        let long_name = "n".repeat(64);
        let longest_name = "n".repeat(63);
        let keys = [
            "causeway.dev/asn",
            "asn",
            "topology.kubernetes.io/zone",
            "example.com/Rack_1.a-b",
            "a",
            "A/asn",
            "causeway.dev/",
            "/asn",
            "causeway.dev/asn/x",
            "-asn",
            "asn-",
            "has space",
            "causeway..dev/asn",
            ".causeway.dev/asn",
            "",
            &long_prefix,
            &longest_prefix,
            &long_name,
            &longest_name,
        ];
        let rules = [label_key("k")];
        for key in keys {
            let got = errors(&rules, json!(key));
            match crate::selector::validate_label_key(key) {
                Ok(()) => assert_eq!(got, Vec::<String>::new(), "{key:?}"),
                Err(_) => {
                    assert_eq!(got.len(), 1, "{key:?}: {got:?}");
                    assert!(
                        got[0].starts_with(&format!(
                            "k {key} is not a label key: write [prefix/]name"
                        )),
                        "{got:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn secret_references_are_object_names_and_data_keys() {
        let name = [object_name("n", "Secret", "tor-bgp")];
        for (value, ok) in [
            ("tor-bgp", true),
            ("bgp.tor-1", true),
            ("a", true),
            ("Tor", false),
            ("tor_bgp", false),
            ("-tor", false),
            ("tor.", false),
            ("", false),
        ] {
            let got = errors(&name, json!(value));
            assert_eq!(got.is_empty(), ok, "{value:?}: {got:?}");
            assert_eq!(ok, crate::naming::is_dns1123_subdomain(value), "{value:?}");
            if !ok {
                assert_eq!(
                    got,
                    [format!(
                        "n {value} is not a Secret name: use lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit, such as tor-bgp"
                    )]
                );
            }
        }
        let key = [secret_key("k", "password")];
        for (value, ok) in [
            ("password", true),
            ("tor.md5-key_1", true),
            ("Password", true),
            ("pass word", false),
            ("pass/word", false),
            ("", false),
        ] {
            assert_eq!(errors(&key, json!(value)).is_empty(), ok, "{value:?}");
            assert_eq!(crate::bgp::password::is_secret_key(value), ok, "{value:?}");
        }
    }

    /// A peer as `(asn, ebgpMultihop, routeReflectorClient)`.
    type Peer = (i64, Option<i64>, Option<bool>);

    /// The messages of the `bgp` block rules for `peers` in a block with asn 64512.
    fn block_errors(peers: &[Peer]) -> Vec<String> {
        let rules = [
            ebgp_multihop_only_for_ebgp(),
            route_reflector_client_only_for_ibgp(),
        ];
        let peers: Vec<Value> = peers
            .iter()
            .enumerate()
            .map(|(i, (asn, hop, rr))| {
                let mut peer = json!({"address": format!("192.0.2.{}", i + 1), "asn": asn});
                if let Some(hop) = hop {
                    peer["ebgpMultihop"] = json!(hop);
                }
                if let Some(rr) = rr {
                    peer["routeReflectorClient"] = json!(rr);
                }
                peer
            })
            .collect();
        let schema = json!({
            "type": "object",
            "properties": {"f": {"type": "object", "x-kubernetes-validations": rules}},
        });
        let object = json!({"f": {"asn": 64512, "peers": peers}});
        match Validator::new().validate(&schema, &object, None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
        }
    }

    #[test]
    fn multihop_is_for_ebgp_peers_and_reflection_for_ibgp_peers() {
        let hop = "routed.bgp.peers[].ebgpMultihop is set for";
        let rr = "routed.bgp.peers[].routeReflectorClient is true for";
        let cases: &[(&[Peer], &[&str])] = &[
            (&[(64_500, None, None), (64_512, None, None)], &[]),
            (&[(64_500, Some(2), None), (64_512, None, Some(true))], &[]),
            (
                &[(64_500, None, Some(false)), (64_512, None, Some(false))],
                &[],
            ),
            (
                &[(64_500, Some(2), None), (64_512, Some(3), None)],
                &[&format!("{hop} 192.0.2.2, an iBGP peer")],
            ),
            (
                &[(64_512, None, Some(true)), (64_500, None, Some(true))],
                &[&format!("{rr} 192.0.2.2, an eBGP peer")],
            ),
            (
                &[(64_512, Some(2), None), (64_500, None, Some(true))],
                &[hop, rr],
            ),
        ];
        for (peers, want) in cases {
            let got = block_errors(peers);
            assert_eq!(got.len(), want.len(), "{peers:?}: {got:?}");
            for (got, want) in got.iter().zip(*want) {
                assert!(got.starts_with(want), "{got:?} lacks {want:?}");
            }
        }
    }
}
