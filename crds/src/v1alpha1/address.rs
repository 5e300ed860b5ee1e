//! The admission rules of every address and CIDR field of the API, defined once.
//!
//! Every address a user (or the operator) writes is one a host must own or a range of such
//! addresses: a node's underlay address, a BGP router, a VIP, a client's tunnel endpoint and
//! overlay address, the pod ranges and the client ranges. So each address field gets the same
//! CEL rules, built here from its [`Field`] description and the [`Families`] it takes (every
//! field of the API takes IPv4 or IPv6 today; [`Families::Ipv4`] is kept for a field that
//! cannot take IPv6 yet, with its own message):
//!
//! - [`ip_address`]: an IP address, of an accepted family, and not in a [`RESERVED`] or
//!   [`RESERVED_V6`] block (nor the broadcast address): loopback, link-local, multicast,
//!   240.0.0.0/4, 0.0.0.0/8 and the rest of `::/8` hold no address a host can be reached at.
//! - [`ip_cidr`]: a CIDR, of an accepted family, no host bits set (the message gives the masked
//!   value for an IPv4 /8, /16 or /24, and says how to write it otherwise), and no overlap with
//!   a reserved block (so `0.0.0.0/0`, `128.0.0.0/1` and `::/0` are refused too).
//!
//! Each rule after the first is guarded by the ones before it (`!isIP(self) || ...`), so a
//! value gets the one error that explains it rather than several. The messages name the field,
//! the value and the fix; `crds/testdata/admission-cases.yaml` pins them and `docs/api.md`
//! ("Address fields") lists them. The rules reach the fields through [`crate::schema::rules`]
//! and [`crate::schema::item_rules`] transforms, so the API server runs them at admission; they
//! use only CEL functions that Kubernetes 1.33 provides (`isIP`, `ip`, `family`, `isCIDR`,
//! `cidr`, `containsIP`, `masked`, `prefixLength`, and `indexOf`, `lastIndexOf`, `substring` in
//! messages). Every message is built from strings whose size the schema bounds (`self`, its
//! substrings, list entries' fields) and literals: the API server estimates the cost of a
//! message too, and a string it cannot bound (`string(<cidr>)`) puts the estimate over budget
//! and the CRD is refused. The e2e `api` suite installs the CRDs and runs the admission table
//! on a real API server.
//!
//! [`unique`] is the rule of list fields whose entries must differ in one key (BGP peers by
//! address, ClientJoin clients by name, address and overlay address); its message names the
//! duplicated value.
//!
//! `spec.natExcludeCidrs` is not an address field in this sense: its entries are destinations
//! (a link-local metadata range is a fair one) and IPv6 entries are allowed and ignored.

use kube::core::{Message, Rule};

/// A block of addresses no host can own as its address, and what it is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The block in CIDR notation.
    pub cidr: &'static str,
    /// Its name as messages use it ("a loopback address", "the loopback range").
    pub kind: &'static str,
}

/// The blocks address fields refuse and CIDR fields must not overlap, in the order messages
/// name them (a CIDR overlapping several is reported with the first).
pub const RESERVED: [Reserved; 5] = [
    Reserved {
        cidr: "127.0.0.0/8",
        kind: "loopback",
    },
    Reserved {
        cidr: "169.254.0.0/16",
        kind: "link-local",
    },
    Reserved {
        cidr: "224.0.0.0/4",
        kind: "multicast",
    },
    Reserved {
        cidr: "240.0.0.0/4",
        kind: "reserved (class E)",
    },
    Reserved {
        cidr: "0.0.0.0/8",
        kind: "unspecified (this-network)",
    },
];

/// The IPv6 blocks address fields refuse and CIDR fields must not overlap, in the order messages
/// name them: `::/8` holds the loopback and unspecified addresses and the IPv4-mapped and
/// IPv4-compatible ones (RFC 4291), none a host's own unicast address on a link.
pub const RESERVED_V6: [Reserved; 4] = [
    Reserved {
        cidr: "::1/128",
        kind: "loopback",
    },
    Reserved {
        cidr: "fe80::/10",
        kind: "link-local",
    },
    Reserved {
        cidr: "ff00::/8",
        kind: "multicast",
    },
    Reserved {
        cidr: "::/8",
        kind: "reserved (unspecified, IPv4-mapped or IPv4-compatible)",
    },
];

/// Which address families a field takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Families {
    /// IPv4 only: an IPv6 value gets a message saying the field does not take IPv6 yet.
    Ipv4,
    /// IPv4 or IPv6, with an accepted value of the other family than the field's `example`:
    /// messages about a value of one family suggest an example of that family.
    Any(&'static str),
}

impl Families {
    /// The examples for IPv4 and IPv6 values of `field`.
    fn examples(self, field: &Field) -> (&'static str, &'static str) {
        match self {
            Families::Ipv4 => (field.example, field.example),
            Families::Any(other) if field.example.contains(':') => (other, field.example),
            Families::Any(other) => (field.example, other),
        }
    }

    /// The first rule of a field: the value parses (`isIP`, `isCIDR`), with its message.
    fn syntax_rule(self, field: &Field, test: &str, kind: &str) -> Rule {
        let Field { name, example, .. } = *field;
        Rule::new(test).message(Message::Message(match self {
            Families::Ipv4 => format!("{name} must be an IPv4 {kind} such as {example}"),
            Families::Any(other) => {
                format!("{name} must be an IPv4 or IPv6 {kind} such as {example} or {other}")
            }
        }))
    }
}

/// The limited broadcast address, inside 240.0.0.0/4 but named on its own.
pub const BROADCAST: &str = "255.255.255.255";

/// An address field as its messages describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's path below `spec`, `[]` marking list items (`clientJoin.clients[].address`).
    pub name: &'static str,
    /// What to write instead of a refused value, completing "use ...".
    pub good: &'static str,
    /// A value that is accepted.
    pub example: &'static str,
}

/// The rules of an address field: an IP address of one of `families`, an address a host can
/// own.
#[must_use]
pub fn ip_address(field: &Field, families: Families) -> Vec<Rule> {
    let Field {
        name,
        good,
        example,
    } = *field;
    let class = |blocks: &[Reserved]| {
        first_reserved(
            blocks,
            |block| format!("cidr('{}').containsIP(self)", block.cidr),
            |block| {
                let vowel = block.kind.starts_with(['a', 'e', 'i', 'o', 'u']);
                let article = if vowel { "an" } else { "a" };
                format!("{article} {} address ({})", block.kind, block.cidr)
            },
        )
    };
    let (v4, v6) = (class(&RESERVED), class(&RESERVED_V6));
    let (example_v4, example_v6) = families.examples(field);
    let fix = |example: &str| {
        format!(", not a unicast address a host can own: use {good}, such as {example}")
    };
    let mut rules = vec![families.syntax_rule(field, "isIP(self)", "address")];
    if families == Families::Ipv4 {
        rules.push(
            Rule::new("!isIP(self) || ip(self).family() == 4").message(expression(
                name,
                "",
                &format!(
                    " is an IPv6 address: {name} takes IPv4 only in causeway.dev/v1alpha1; use an IPv4 address such as {example}"
                ),
            )),
        );
    }
    rules.push(
        Rule::new(format!(
            "!isIP(self) || ip(self).family() != 4 || !{}.exists(b, cidr(b).containsIP(self))",
            reserved_list(&RESERVED)
        ))
        .message(expression(
            name,
            &format!(
                " + ' is ' + (self == '{BROADCAST}' ? 'the broadcast address {BROADCAST}' : {v4})"
            ),
            &fix(example_v4),
        )),
    );
    if families != Families::Ipv4 {
        rules.push(
            Rule::new(format!(
                "!isIP(self) || ip(self).family() != 6 || !{}.exists(b, cidr(b).containsIP(self))",
                reserved_list(&RESERVED_V6)
            ))
            .message(expression(
                name,
                &format!(" + ' is ' + ({v6})"),
                &fix(example_v6),
            )),
        );
    }
    rules
}

/// The rules of a CIDR field: a CIDR of one of `families`, no host bits set, no reserved
/// addresses.
#[must_use]
pub fn ip_cidr(field: &Field, families: Families) -> Vec<Rule> {
    let Field {
        name,
        good,
        example,
    } = *field;
    let range = |blocks: &[Reserved]| {
        first_reserved(
            blocks,
            |block| {
                let network = block.cidr.split('/').next().unwrap_or(block.cidr);
                format!(
                    "(cidr(self).containsIP('{network}') || cidr('{}').containsIP(cidr(self).ip()))",
                    block.cidr
                )
            },
            |block| format!("the {} range {}", block.kind, block.cidr),
        )
    };
    let (example_v4, example_v6) = families.examples(field);
    let overlap = |family: u8, blocks: &[Reserved], example: &str| {
        Rule::new(format!(
            "!isCIDR(self) || cidr(self).ip().family() != {family} || !{}.exists(b, cidr(self).containsIP(cidr(b).ip()) || cidr(b).containsIP(cidr(self).ip()))",
            reserved_list(blocks)
        ))
        .message(expression(
            name,
            &format!(" + ' overlaps ' + ({})", range(blocks)),
            &format!(", whose addresses no host can own: use {good}, such as {example}"),
        ))
    };
    let mut rules = vec![families.syntax_rule(field, "isCIDR(self)", "CIDR")];
    if families == Families::Ipv4 {
        rules.push(
            Rule::new("!isCIDR(self) || cidr(self).ip().family() == 4").message(expression(
                name,
                "",
                &format!(
                    " is an IPv6 range: {name} takes IPv4 only in causeway.dev/v1alpha1; use an IPv4 CIDR such as {example}"
                ),
            )),
        );
    }
    let guard = match families {
        Families::Ipv4 => "!isCIDR(self) || cidr(self).ip().family() != 4",
        Families::Any(_) => "!isCIDR(self)",
    };
    rules.push(
        Rule::new(format!("{guard} || cidr(self) == cidr(self).masked()")).message(expression(
            name,
            &format!(" + ' has host bits set: ' + ({})", masked_suggestion()),
            "",
        )),
    );
    rules.push(overlap(4, &RESERVED, example_v4));
    if families != Families::Ipv4 {
        rules.push(overlap(6, &RESERVED_V6, example_v6));
    }
    rules
}

/// CEL for the second half of the host-bits message: the masked CIDR when the prefix length is
/// 8, 16 or 24, else how to write it. `string(cidr(self).masked())` would give it for every
/// prefix length, but the API server cannot bound the size of that string, so a message using
/// it exceeds the CEL cost budget and the CRD is refused; substrings of `self` are bounded by
/// its maxLength. The dotted-quad suggestions apply to IPv4 CIDRs only; an IPv6 CIDR gets the
/// how-to.
fn masked_suggestion() -> String {
    let dot = |n: usize| match n {
        1 => "self.indexOf('.')".to_owned(),
        2 => "self.indexOf('.', self.indexOf('.') + 1)".to_owned(),
        _ => "self.lastIndexOf('.')".to_owned(),
    };
    let mut suggestion =
        "'write the network address, with every bit after the prefix length ' + self.substring(self.indexOf('/')) + ' zero'"
            .to_owned();
    let generic = suggestion.clone();
    for (octets, zeros) in [(1, ".0.0.0"), (2, ".0.0"), (3, ".0")] {
        let prefix = octets * 8;
        suggestion = format!(
            "cidr(self).prefixLength() == {prefix} ? 'did you mean ' + self.substring(0, {}) + '{zeros}/{prefix}?' : {suggestion}",
            dot(octets)
        );
    }
    format!("cidr(self).ip().family() == 4 ? ({suggestion}) : {generic}")
}

/// The rule of a list field whose entries must differ in `key`: its message names the list, the
/// key and the duplicated value, then `fix`.
#[must_use]
pub fn unique(list: &str, key: &str, fix: &str) -> Rule {
    // The message maps the entries to their keys before it filters, so the value it names comes
    // straight from the schema's field and its size estimate is the field's maxLength.
    Rule::new(format!(
        "self.all(x, self.exists_one(y, y.{key} == x.{key}))"
    ))
    .message(Message::Expression(format!(
        "{} + self.map(x, x.{key}).filter(v, !self.exists_one(y, y.{key} == v))[0] + {}",
        literal(&format!("{list} has more than one entry with {key} ")),
        literal(&format!(": {fix}")),
    )))
}

/// A message expression `'<name> ' + self<middle> + '<tail>'`: `middle` is CEL continuing the
/// concatenation, `tail` plain text.
fn expression(name: &str, middle: &str, tail: &str) -> Message {
    let tail = if tail.is_empty() {
        String::new()
    } else {
        format!(" + {}", literal(tail))
    };
    Message::Expression(format!(
        "{} + self{middle}{tail}",
        literal(&format!("{name} "))
    ))
}

/// A CEL conditional naming (`name`) the first reserved block for which `test` holds. The last
/// block is not tested: the expression runs in messages of rules that failed, so one holds.
fn first_reserved(
    blocks: &[Reserved],
    test: impl Fn(&Reserved) -> String,
    name: impl Fn(&Reserved) -> String,
) -> String {
    let Some((last, rest)) = blocks.split_last() else {
        return literal("reserved");
    };
    rest.iter()
        .rev()
        .fold(literal(&name(last)), |otherwise, block| {
            format!("{} ? {} : {otherwise}", test(block), literal(&name(block)))
        })
}

/// Reserved blocks as a CEL list literal.
fn reserved_list(blocks: &[Reserved]) -> String {
    let blocks: Vec<String> = blocks.iter().map(|b| literal(b.cidr)).collect();
    format!("[{}]", blocks.join(", "))
}

/// `text` as a single-quoted CEL string literal.
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use kube::core::cel::Validator;
    use serde_json::{Value, json};

    use super::*;

    /// A field whose texts need escaping in CEL (an apostrophe, a backslash).
    const FIELD: Field = Field {
        name: "f",
        good: "the host's own address \\ its range",
        example: "192.0.2.1",
    };

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

    /// Checks that each value gets exactly the listed messages (each a substring of one).
    fn check(rules: &[Rule], cases: &[(&str, &[&str])]) {
        for (value, want) in cases {
            let got = errors(rules, json!(value));
            assert_eq!(got.len(), want.len(), "{value}: {got:?}");
            for (got, want) in got.iter().zip(*want) {
                assert!(got.contains(want), "{value}: {got:?} lacks {want:?}");
            }
        }
    }

    #[test]
    fn an_address_field_accepts_host_addresses_and_explains_each_refusal_once() {
        let syntax = "f must be an IPv4 address such as 192.0.2.1";
        let fix = ", not a unicast address a host can own: use the host's own address \\ its range, such as 192.0.2.1";
        let unspecified = format!("an unspecified (this-network) address (0.0.0.0/8){fix}");
        let loopback = format!("a loopback address (127.0.0.0/8){fix}");
        let link_local = "a link-local address (169.254.0.0/16)";
        let multicast = "a multicast address (224.0.0.0/4)";
        let class_e = "a reserved (class E) address (240.0.0.0/4)";
        let cases: &[(&str, &[&str])] = &[
            ("192.168.1.11", &[]),
            ("1.0.0.0", &[]),
            ("100.64.0.1", &[]),
            ("126.255.255.255", &[]),
            ("128.0.0.0", &[]),
            ("169.253.255.255", &[]),
            ("169.255.0.0", &[]),
            ("223.255.255.255", &[]),
            ("", &[syntax]),
            ("192.168.1", &[syntax]),
            ("192.168.1.11/24", &[syntax]),
            ("::ffff:192.168.1.11", &[syntax]),
            (
                "fd00::1",
                &["f fd00::1 is an IPv6 address: f takes IPv4 only"],
            ),
            ("::1", &["f ::1 is an IPv6 address"]),
            ("0.0.0.0", &[&format!("f 0.0.0.0 is {unspecified}")]),
            ("0.255.255.255", &[&unspecified]),
            ("127.0.0.1", &[&format!("f 127.0.0.1 is {loopback}")]),
            ("127.255.255.255", &[&loopback]),
            ("169.254.0.1", &[link_local]),
            ("169.254.255.255", &[link_local]),
            ("224.0.0.1", &[multicast]),
            ("239.255.255.255", &[multicast]),
            ("240.0.0.1", &[class_e]),
            ("255.255.255.254", &[class_e]),
            (
                "255.255.255.255",
                &["f 255.255.255.255 is the broadcast address 255.255.255.255, not"],
            ),
        ];
        check(&ip_address(&FIELD, Families::Ipv4), cases);
    }

    #[test]
    fn a_cidr_field_accepts_host_ranges_and_names_the_reserved_block_it_overlaps() {
        let syntax = "f must be an IPv4 CIDR such as 192.0.2.1";
        let fix = ", whose addresses no host can own: use the host's own address \\ its range, such as 192.0.2.1";
        let loopback = format!("overlaps the loopback range 127.0.0.0/8{fix}");
        let cases: &[(&str, &[&str])] = &[
            ("10.244.0.0/16", &[]),
            ("10.0.0.1/32", &[]),
            ("1.0.0.0/8", &[]),
            ("126.0.0.0/8", &[]),
            ("128.0.0.0/3", &[]),
            ("170.0.0.0/7", &[]),
            ("169.253.0.0/16", &[]),
            ("169.255.0.0/16", &[]),
            ("192.0.0.0/3", &[]),
            ("223.255.255.255/32", &[]),
            ("10.244.0.0/33", &[syntax]),
            ("10.244.0.0", &[syntax]),
            (
                "fd00::/48",
                &["f fd00::/48 is an IPv6 range: f takes IPv4 only"],
            ),
            ("fd00::1/48", &["is an IPv6 range"]),
            (
                "10.244.1.0/16",
                &["f 10.244.1.0/16 has host bits set: did you mean 10.244.0.0/16?"],
            ),
            (
                "10.244.1.7/24",
                &["has host bits set: did you mean 10.244.1.0/24?"],
            ),
            (
                "10.1.0.0/8",
                &["has host bits set: did you mean 10.0.0.0/8?"],
            ),
            (
                "10.244.17.0/20",
                &[
                    "f 10.244.17.0/20 has host bits set: write the network address, with every bit after the prefix length /20 zero",
                ],
            ),
            ("0.0.0.0/0", &[&format!("f 0.0.0.0/0 {loopback}")]),
            ("126.0.0.0/7", &[&loopback]),
            ("127.1.2.0/24", &[&loopback]),
            ("127.0.0.1/8", &["did you mean 127.0.0.0/8?", &loopback]),
            (
                "128.0.0.0/1",
                &["overlaps the link-local range 169.254.0.0/16"],
            ),
            (
                "169.254.169.254/32",
                &["overlaps the link-local range 169.254.0.0/16"],
            ),
            ("192.0.0.0/2", &["overlaps the multicast range 224.0.0.0/4"]),
            (
                "224.0.0.0/24",
                &["overlaps the multicast range 224.0.0.0/4"],
            ),
            (
                "240.0.0.0/8",
                &["overlaps the reserved (class E) range 240.0.0.0/4"],
            ),
            (
                "255.255.255.255/32",
                &["overlaps the reserved (class E) range 240.0.0.0/4"],
            ),
            (
                "0.0.0.0/8",
                &["overlaps the unspecified (this-network) range 0.0.0.0/8"],
            ),
            (
                "0.0.0.0/32",
                &["overlaps the unspecified (this-network) range 0.0.0.0/8"],
            ),
        ];
        check(&ip_cidr(&FIELD, Families::Ipv4), cases);
    }

    #[test]
    fn a_field_of_either_family_takes_ipv6_host_addresses_and_refuses_ipv6_reserved_blocks() {
        let fix = ", not a unicast address a host can own";
        let cases: &[(&str, &[&str])] = &[
            ("192.168.1.11", &[]),
            ("fd00::11", &[]),
            ("2001:db8:1::11", &[]),
            ("fe7f:ffff::1", &[]),
            ("fec0::1", &[]),
            ("feff::1", &[]),
            ("100::1", &[]),
            ("", &["f must be an IPv4 or IPv6 address such as 192.0.2.1"]),
            ("fd00::/64", &["f must be an IPv4 or IPv6 address"]),
            (
                "127.0.0.1",
                &["f 127.0.0.1 is a loopback address (127.0.0.0/8)"],
            ),
            (
                "::1",
                &[&format!("f ::1 is a loopback address (::1/128){fix}")],
            ),
            (
                "::",
                &[
                    "f :: is a reserved (unspecified, IPv4-mapped or IPv4-compatible) address (::/8)",
                ],
            ),
            ("::2", &["address (::/8)"]),
            (
                "fe80::1",
                &["f fe80::1 is a link-local address (fe80::/10)"],
            ),
            ("febf::1", &["a link-local address (fe80::/10)"]),
            ("ff02::1", &["f ff02::1 is a multicast address (ff00::/8)"]),
        ];
        check(&ip_address(&FIELD, Families::Any("fd00::1")), cases);
    }

    #[test]
    fn a_cidr_field_of_either_family_takes_ipv6_ranges_and_names_the_block_it_overlaps() {
        let cases: &[(&str, &[&str])] = &[
            ("10.244.0.0/16", &[]),
            ("fd00:10:244::/56", &[]),
            ("2001:db8::/32", &[]),
            ("fd00::1/128", &[]),
            ("fc00::/7", &[]),
            ("", &["f must be an IPv4 or IPv6 CIDR such as 192.0.2.1"]),
            (
                "fd00:10:244:1::/56",
                &[
                    "f fd00:10:244:1::/56 has host bits set: write the network address, with every bit after the prefix length /56 zero",
                ],
            ),
            ("10.244.1.0/16", &["did you mean 10.244.0.0/16?"]),
            (
                "::/0",
                &["f ::/0 overlaps the loopback range ::1/128, whose addresses no host can own"],
            ),
            ("fe80::/64", &["overlaps the link-local range fe80::/10"]),
            ("fe00::/7", &["overlaps the link-local range fe80::/10"]),
            ("ff00::/8", &["overlaps the multicast range ff00::/8"]),
            (
                "::2:0/112",
                &["overlaps the reserved (unspecified, IPv4-mapped or IPv4-compatible) range ::/8"],
            ),
            ("::ffff:0:0/96", &["f must be an IPv4 or IPv6 CIDR"]),
            ("0.0.0.0/0", &["overlaps the loopback range 127.0.0.0/8"]),
        ];
        check(&ip_cidr(&FIELD, Families::Any("fd00::1")), cases);
    }

    #[test]
    fn a_unique_list_names_the_value_that_occurs_twice() {
        let rules = [unique("l", "k", "one each")];
        let list =
            |keys: &[&str]| json!(keys.iter().map(|k| json!({ "k": k })).collect::<Vec<_>>());
        assert_eq!(errors(&rules, list(&[])), Vec::<String>::new());
        assert_eq!(errors(&rules, list(&["a", "b"])), Vec::<String>::new());
        assert_eq!(
            errors(&rules, list(&["a", "b", "c", "b"])),
            ["l has more than one entry with k b: one each"]
        );
    }
}
