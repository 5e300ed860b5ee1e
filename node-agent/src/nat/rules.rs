//! The agent's nftables tables as data: built for `nft -j` and read back from its listing
//! (pure).

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{
    Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag, SetType, SetTypeValue,
    Table,
};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::model::{
    GatewaySnat, GatewaySnat6, Masquerade, Masquerade6, NAT_TABLE, Nat, Nat6, SNAT_TABLE, Snat,
    Snat6,
};

/// The chain holding the rule.
const CHAIN: &str = "postrouting";
/// The set of exempt destinations.
const SET: &str = "no-masquerade";
/// The set of BridgeHosts client ranges (in [`SNAT_TABLE`]).
const CLIENTS_SET: &str = "clients";
/// The BridgeHosts SNAT rule's comment.
const GATEWAY_COMMENT: &str = "causeway: BridgeHosts client traffic into the pod network";
/// `priority srcnat`.
const SRCNAT_PRIORITY: i32 = 100;
/// The rule's comment, so `nft list ruleset` says whose rule it is.
const COMMENT: &str = "causeway: pod traffic leaving the cluster";

/// The masquerade rule for pods of `source` in a network of `cluster`, exempting `exclude`:
/// exempt ranges are merged (nftables refuses overlapping intervals) and sorted.
#[must_use]
pub fn masquerade(source: Ipv4Net, cluster: Ipv4Net, exclude: &[Ipv4Net]) -> Masquerade {
    let mut all = vec![cluster.trunc()];
    all.extend(exclude.iter().map(Ipv4Net::trunc));
    let mut exempt = Ipv4Net::aggregate(&all);
    exempt.sort();
    Masquerade {
        source: source.trunc(),
        exempt,
    }
}

/// The IPv6 masquerade rule for pods of `source` in a network whose IPv6 range is `cluster`,
/// exempting `exclude` (merged and sorted, as for IPv4).
#[must_use]
pub fn masquerade6(source: Ipv6Net, cluster: Ipv6Net, exclude: &[Ipv6Net]) -> Masquerade6 {
    let mut all = vec![cluster.trunc()];
    all.extend(exclude.iter().map(Ipv6Net::trunc));
    let mut exempt = Ipv6Net::aggregate(&all);
    exempt.sort();
    Masquerade6 {
        source: source.trunc(),
        exempt,
    }
}

fn table(family: NfFamily, name: &'static str) -> Table<'static> {
    Table {
        family,
        name: Cow::Borrowed(name),
        handle: None,
    }
}

fn prefix(net: IpNet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(Cow::Owned(net.network().to_string()))),
        len: u32::from(net.prefix_len()),
    }))
}

fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(name),
        },
    )))
}

/// One side of a rule's address match: a prefix, or one of the table's set (`@name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Prefix(IpNet),
    /// `== @set` (true) or `!= @set` (false).
    Set(bool),
}

/// A table read back: its set's elements, and the rule's saddr and daddr sides.
type Listed = (Vec<IpNet>, Side, Side);

/// The shape both tables share: one interval set, one `nat` chain on `postrouting`, one rule
/// `ip saddr <side> ip daddr <side> masquerade`.
struct Shape {
    /// `ip` or `ip6`: the table's family, and the payload protocol of its rule.
    family: NfFamily,
    protocol: &'static str,
    set_type: SetType,
    table: &'static str,
    set: &'static str,
    comment: &'static str,
}

const OUTGOING: Shape = Shape {
    family: NfFamily::IP,
    protocol: "ip",
    set_type: SetType::Ipv4Addr,
    table: NAT_TABLE,
    set: SET,
    comment: COMMENT,
};

/// [`OUTGOING`] for a dual-stack network's IPv6 pods: the same table name, family `ip6`.
const OUTGOING6: Shape = Shape {
    family: NfFamily::IP6,
    protocol: "ip6",
    set_type: SetType::Ipv6Addr,
    table: NAT_TABLE,
    set: SET,
    comment: COMMENT,
};

const GATEWAY: Shape = Shape {
    family: NfFamily::IP,
    protocol: "ip",
    set_type: SetType::Ipv4Addr,
    table: SNAT_TABLE,
    set: CLIENTS_SET,
    comment: GATEWAY_COMMENT,
};

/// [`GATEWAY`] for a dual-stack gateway's IPv6 clients: the same table name, family `ip6`.
const GATEWAY6: Shape = Shape {
    family: NfFamily::IP6,
    protocol: "ip6",
    set_type: SetType::Ipv6Addr,
    table: SNAT_TABLE,
    set: CLIENTS_SET,
    comment: GATEWAY_COMMENT,
};

fn side(s: Side, set: &'static str) -> (Expression<'static>, Operator) {
    match s {
        Side::Prefix(net) => (prefix(net), Operator::EQ),
        Side::Set(eq) => (
            Expression::String(Cow::Owned(format!("@{set}"))),
            if eq { Operator::EQ } else { Operator::NEQ },
        ),
    }
}

impl Shape {
    /// The batch replacing the table with one holding the rule, atomically.
    fn replace(&self, elements: &[IpNet], saddr: Side, daddr: Side) -> Nftables<'static> {
        let add = |o| NfObject::CmdObject(NfCmd::Add(o));
        let set = Set {
            family: self.family,
            table: Cow::Borrowed(self.table),
            name: Cow::Borrowed(self.set),
            handle: None,
            set_type: SetTypeValue::Single(self.set_type),
            policy: None,
            flags: Some(HashSet::from([SetFlag::Interval])),
            elem: Some(Cow::Owned(elements.iter().map(|n| prefix(*n)).collect())),
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        };
        let chain = Chain {
            family: self.family,
            table: Cow::Borrowed(self.table),
            name: Cow::Borrowed(CHAIN),
            newname: None,
            handle: None,
            _type: Some(NfChainType::NAT),
            hook: Some(NfHook::Postrouting),
            prio: Some(SRCNAT_PRIORITY),
            dev: None,
            policy: Some(NfChainPolicy::Accept),
        };
        let (src, src_op) = side(saddr, self.set);
        let (dst, dst_op) = side(daddr, self.set);
        let rule = Rule {
            family: self.family,
            table: Cow::Borrowed(self.table),
            chain: Cow::Borrowed(CHAIN),
            expr: Cow::Owned(vec![
                Statement::Match(Match {
                    left: field(self.protocol, "saddr"),
                    right: src,
                    op: src_op,
                }),
                Statement::Match(Match {
                    left: field(self.protocol, "daddr"),
                    right: dst,
                    op: dst_op,
                }),
                Statement::Masquerade(None),
            ]),
            handle: None,
            index: None,
            comment: Some(Cow::Borrowed(self.comment)),
        };
        Nftables {
            objects: Cow::Owned(vec![
                // `add` of an existing table is a no-op, so the delete never fails.
                add(NfListObject::Table(table(self.family, self.table))),
                NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(table(
                    self.family,
                    self.table,
                )))),
                add(NfListObject::Table(table(self.family, self.table))),
                add(NfListObject::Set(Box::new(set))),
                add(NfListObject::Chain(chain)),
                add(NfListObject::Rule(rule)),
            ]),
        }
    }

    fn delete(&self) -> Nftables<'static> {
        Nftables {
            objects: Cow::Owned(vec![NfObject::CmdObject(NfCmd::Delete(
                NfListObject::Table(table(self.family, self.table)),
            ))]),
        }
    }

    /// The listing read back as (set elements, saddr side, daddr side): `None` without the
    /// table, `Err` with the reason when it holds anything but exactly this shape.
    fn read(&self, listing: &Nftables<'_>) -> Option<Result<Listed, &'static str>> {
        let mut found_table = false;
        let (mut sets, mut chains, mut rules) = (Vec::new(), Vec::new(), Vec::new());
        let mut other = 0usize;
        for object in listing.objects.iter() {
            match object {
                NfObject::ListObject(NfListObject::Table(t))
                    if t.name == self.table && t.family == self.family =>
                {
                    found_table = true;
                }
                NfObject::ListObject(NfListObject::Set(s)) => sets.push(s),
                NfObject::ListObject(NfListObject::Chain(c)) => chains.push(c),
                NfObject::ListObject(NfListObject::Rule(r)) => rules.push(r),
                NfObject::ListObject(NfListObject::MetainfoObject(_)) => {}
                _ => other += 1,
            }
        }
        if !found_table {
            return None;
        }
        if other > 0 || sets.len() != 1 || chains.len() != 1 || rules.len() != 1 {
            return Some(Err("the table holds objects the agent did not create"));
        }
        let (set, chain, rule) = (sets[0], chains[0], rules[0]);
        if set.name != self.set
            || chain.name != CHAIN
            || chain._type != Some(NfChainType::NAT)
            || chain.hook != Some(NfHook::Postrouting)
            || chain.prio != Some(SRCNAT_PRIORITY)
            || rule.chain != CHAIN
        {
            return Some(Err("the chain or set was changed"));
        }
        let read_side = |m: &Match<'_>| match &m.right {
            Expression::String(s) if s.as_ref() == format!("@{}", self.set) => match m.op {
                Operator::EQ => Some(Side::Set(true)),
                Operator::NEQ => Some(Side::Set(false)),
                _ => None,
            },
            other if m.op == Operator::EQ => as_net(other).map(Side::Prefix),
            _ => None,
        };
        let sides = match rule.expr.as_ref() {
            [
                Statement::Match(src),
                Statement::Match(dst),
                Statement::Masquerade(None),
            ] if is_field(&src.left, self.protocol, "saddr")
                && is_field(&dst.left, self.protocol, "daddr") =>
            {
                read_side(src).zip(read_side(dst))
            }
            _ => None,
        };
        let Some((saddr, daddr)) = sides else {
            return Some(Err("the rule was changed"));
        };
        let mut elements = Vec::new();
        for e in set.elem.as_deref().unwrap_or_default() {
            match as_net(e) {
                Some(n) => elements.push(n),
                None => return Some(Err("the set holds an element the agent did not write")),
            }
        }
        elements.sort();
        Some(Ok((elements, saddr, daddr)))
    }
}

/// The batch that replaces the table with one holding `m`, atomically.
#[must_use]
pub fn replace_batch(m: &Masquerade) -> Nftables<'static> {
    let exempt: Vec<IpNet> = m.exempt.iter().map(|n| IpNet::V4(*n)).collect();
    OUTGOING.replace(&exempt, Side::Prefix(m.source.into()), Side::Set(false))
}

/// The batch that replaces the `ip6` table with one holding `m`, atomically.
#[must_use]
pub fn replace_batch6(m: &Masquerade6) -> Nftables<'static> {
    let exempt: Vec<IpNet> = m.exempt.iter().map(|n| IpNet::V6(*n)).collect();
    OUTGOING6.replace(&exempt, Side::Prefix(m.source.into()), Side::Set(false))
}

/// The batch that deletes the `ip6` table.
#[must_use]
pub fn delete_batch6() -> Nftables<'static> {
    OUTGOING6.delete()
}

/// The batch that deletes the table.
#[must_use]
pub fn delete_batch() -> Nftables<'static> {
    OUTGOING.delete()
}

/// The BridgeHosts SNAT rule for `clients` (merged, sorted) into `pods`.
#[must_use]
pub fn gateway_snat(clients: &[Ipv4Net], pods: Ipv4Net) -> GatewaySnat {
    let all: Vec<Ipv4Net> = clients.iter().map(Ipv4Net::trunc).collect();
    let mut clients = Ipv4Net::aggregate(&all);
    clients.sort();
    GatewaySnat {
        clients,
        pods: pods.trunc(),
    }
}

/// The batch that replaces the [`SNAT_TABLE`] with one holding `g`, atomically.
#[must_use]
pub fn snat_replace_batch(g: &GatewaySnat) -> Nftables<'static> {
    let clients: Vec<IpNet> = g.clients.iter().map(|n| IpNet::V4(*n)).collect();
    GATEWAY.replace(&clients, Side::Set(true), Side::Prefix(g.pods.into()))
}

/// The batch that deletes the [`SNAT_TABLE`].
#[must_use]
pub fn snat_delete_batch() -> Nftables<'static> {
    GATEWAY.delete()
}

/// The BridgeHosts SNAT rule for IPv6 `clients` (merged, sorted) into `pods`, the network's
/// IPv6 range.
#[must_use]
pub fn gateway_snat6(clients: &[Ipv6Net], pods: Ipv6Net) -> GatewaySnat6 {
    let all: Vec<Ipv6Net> = clients.iter().map(Ipv6Net::trunc).collect();
    let mut clients = Ipv6Net::aggregate(&all);
    clients.sort();
    GatewaySnat6 {
        clients,
        pods: pods.trunc(),
    }
}

/// The batch that replaces the `ip6` [`SNAT_TABLE`] with one holding `g`, atomically.
#[must_use]
pub fn snat_replace_batch6(g: &GatewaySnat6) -> Nftables<'static> {
    let clients: Vec<IpNet> = g.clients.iter().map(|n| IpNet::V6(*n)).collect();
    GATEWAY6.replace(&clients, Side::Set(true), Side::Prefix(g.pods.into()))
}

/// The batch that deletes the `ip6` [`SNAT_TABLE`].
#[must_use]
pub fn snat_delete_batch6() -> Nftables<'static> {
    GATEWAY6.delete()
}

/// A prefix written as `{"prefix": {...}}` or a bare address (a /32 or /128).
fn as_net(e: &Expression<'_>) -> Option<IpNet> {
    match e {
        Expression::String(s) => Some(IpNet::from(s.parse::<IpAddr>().ok()?)),
        Expression::Named(NamedExpression::Prefix(p)) => match p.addr.as_ref() {
            Expression::String(s) => {
                IpNet::new(s.parse::<IpAddr>().ok()?, u8::try_from(p.len).ok()?).ok()
            }
            _ => None,
        },
        _ => None,
    }
}

fn is_field(e: &Expression<'_>, protocol: &str, name: &str) -> bool {
    matches!(
        e,
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(f)))
            if f.protocol == protocol && f.field == name
    )
}

/// IPv4 prefixes only, or `None` when one is IPv6.
fn all_v4(nets: Vec<IpNet>) -> Option<Vec<Ipv4Net>> {
    nets.into_iter()
        .map(|n| match n {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .collect()
}

/// IPv6 prefixes only, or `None` when one is IPv4.
fn all_v6(nets: Vec<IpNet>) -> Option<Vec<Ipv6Net>> {
    nets.into_iter()
        .map(|n| match n {
            IpNet::V6(n) => Some(n),
            IpNet::V4(_) => None,
        })
        .collect()
}

/// What `nft -j list table ip causeway` shows, as the agent's model: `None` without the
/// table, [`Nat::Unrecognised`] when it holds anything but exactly the agent's objects.
#[must_use]
pub fn interpret(listing: &Nftables<'_>) -> Option<Nat> {
    Some(match OUTGOING.read(listing)? {
        Ok((exempt, Side::Prefix(IpNet::V4(source)), Side::Set(false))) => match all_v4(exempt) {
            Some(exempt) => Nat::Masquerade(Masquerade { source, exempt }),
            None => Nat::Unrecognised("the set holds an element the agent did not write".into()),
        },
        Ok(_) => Nat::Unrecognised("the rule was changed".to_owned()),
        Err(why) => Nat::Unrecognised(why.to_owned()),
    })
}

/// What `nft -j list table ip6 causeway` shows, as the agent's model (see [`interpret`]).
#[must_use]
pub fn interpret6(listing: &Nftables<'_>) -> Option<Nat6> {
    Some(match OUTGOING6.read(listing)? {
        Ok((exempt, Side::Prefix(IpNet::V6(source)), Side::Set(false))) => match all_v6(exempt) {
            Some(exempt) => Nat6::Masquerade(Masquerade6 { source, exempt }),
            None => Nat6::Unrecognised("the set holds an element the agent did not write".into()),
        },
        Ok(_) => Nat6::Unrecognised("the rule was changed".to_owned()),
        Err(why) => Nat6::Unrecognised(why.to_owned()),
    })
}

/// What `nft -j list table ip causeway-gateway` shows, as the agent's model.
#[must_use]
pub fn interpret_snat(listing: &Nftables<'_>) -> Option<Snat> {
    Some(match GATEWAY.read(listing)? {
        Ok((clients, Side::Set(true), Side::Prefix(IpNet::V4(pods)))) => match all_v4(clients) {
            Some(clients) => Snat::Masquerade(GatewaySnat { clients, pods }),
            None => Snat::Unrecognised("the set holds an element the agent did not write".into()),
        },
        Ok(_) => Snat::Unrecognised("the rule was changed".to_owned()),
        Err(why) => Snat::Unrecognised(why.to_owned()),
    })
}

/// What `nft -j list table ip6 causeway-gateway` shows, as the agent's model.
#[must_use]
pub fn interpret_snat6(listing: &Nftables<'_>) -> Option<Snat6> {
    Some(match GATEWAY6.read(listing)? {
        Ok((clients, Side::Set(true), Side::Prefix(IpNet::V6(pods)))) => match all_v6(clients) {
            Some(clients) => Snat6::Masquerade(GatewaySnat6 { clients, pods }),
            None => Snat6::Unrecognised("the set holds an element the agent did not write".into()),
        },
        Ok(_) => Snat6::Unrecognised("the rule was changed".to_owned()),
        Err(why) => Snat6::Unrecognised(why.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn exempt_ranges_are_merged_and_sorted() {
        let m = masquerade(
            net("10.244.1.0/24"),
            net("10.244.0.0/16"),
            &[
                net("192.168.0.0/16"),
                net("10.244.7.0/24"),
                net("172.16.0.0/12"),
                net("192.168.3.0/24"),
            ],
        );
        assert_eq!(m.source, net("10.244.1.0/24"));
        assert_eq!(
            m.exempt,
            vec![
                net("10.244.0.0/16"),
                net("172.16.0.0/12"),
                net("192.168.0.0/16")
            ]
        );
    }

    #[test]
    fn the_replace_batch_is_what_nft_expects() {
        let m = masquerade(net("10.244.1.0/24"), net("10.244.0.0/16"), &[]);
        let json = serde_json::to_value(replace_batch(&m)).expect("serializes");
        let cmds = json["nftables"].as_array().expect("array");
        assert_eq!(cmds.len(), 6);
        assert_eq!(cmds[0]["add"]["table"]["name"], NAT_TABLE);
        assert_eq!(cmds[1]["delete"]["table"]["family"], "ip");
        assert_eq!(cmds[3]["add"]["set"]["elem"][0]["prefix"]["len"], 16);
        assert_eq!(cmds[4]["add"]["chain"]["hook"], "postrouting");
        let expr = &cmds[5]["add"]["rule"]["expr"];
        assert_eq!(expr[0]["match"]["right"]["prefix"]["addr"], "10.244.1.0");
        assert_eq!(expr[1]["match"]["op"], "!=");
        assert_eq!(expr[1]["match"]["right"], "@no-masquerade");
        assert!(expr[2].get("masquerade").is_some(), "{expr}");
    }

    /// `nft -j list table ip causeway` of nftables 1.0.6 after applying our batch with one
    /// host exemption: the bare address is how nft prints a /32.
    const LISTING: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "ip", "name": "causeway", "handle": 1}},
      {"set": {"family": "ip", "name": "no-masquerade", "table": "causeway", "type": "ipv4_addr",
               "handle": 2, "flags": ["interval"],
               "elem": [{"prefix": {"addr": "10.244.0.0", "len": 16}}, "172.16.5.5"]}},
      {"chain": {"family": "ip", "table": "causeway", "name": "postrouting", "handle": 1,
                 "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "causeway", "chain": "postrouting", "handle": 3,
                "comment": "causeway: pod traffic leaving the cluster",
                "expr": [
                  {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                             "right": {"prefix": {"addr": "10.244.1.0", "len": 24}}}},
                  {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                             "right": "@no-masquerade"}},
                  {"masquerade": null}]}}]}"#;

    #[test]
    fn a_listing_of_our_table_reads_back_as_the_rule() {
        let listing: Nftables<'_> = serde_json::from_str(LISTING).expect("parses");
        assert_eq!(
            interpret(&listing),
            Some(Nat::Masquerade(Masquerade {
                source: net("10.244.1.0/24"),
                exempt: vec![net("10.244.0.0/16"), net("172.16.5.5/32")],
            }))
        );
    }

    #[test]
    fn the_ipv6_table_is_family_ip6_and_round_trips_through_a_listing() {
        let net6 = |s: &str| -> Ipv6Net { s.parse().expect("IPv6 CIDR") };
        let m = masquerade6(
            net6("fd00:10:244:1::/64"),
            net6("fd00:10:244::/56"),
            &[net6("fd00:10:244:7::1/64"), net6("2001:db8::/32")],
        );
        assert_eq!(
            m.exempt,
            vec![net6("2001:db8::/32"), net6("fd00:10:244::/56")],
            "merged (the /64 lies in the /56) and sorted"
        );
        let batch = serde_json::to_value(replace_batch6(&m)).expect("JSON");
        let cmds = batch["nftables"].as_array().expect("commands");
        assert_eq!(cmds[0]["add"]["table"]["family"], "ip6");
        assert_eq!(cmds[0]["add"]["table"]["name"], NAT_TABLE);
        assert_eq!(cmds[3]["add"]["set"]["type"], "ipv6_addr");
        let rule = &cmds[5]["add"]["rule"];
        assert_eq!(rule["family"], "ip6");
        assert_eq!(
            rule["expr"][0]["match"]["left"]["payload"]["protocol"],
            "ip6"
        );
        // What `nft -j list table ip6 causeway` prints for it.
        let listing = r#"{"nftables": [
          {"metainfo": {"version": "1.0.6", "release_name": "x", "json_schema_version": 1}},
          {"table": {"family": "ip6", "name": "causeway", "handle": 1}},
          {"set": {"family": "ip6", "name": "no-masquerade", "table": "causeway", "type": "ipv6_addr",
                   "handle": 2, "flags": ["interval"],
                   "elem": [{"prefix": {"addr": "2001:db8::", "len": 32}}, {"prefix": {"addr": "fd00:10:244::", "len": 56}}]}},
          {"chain": {"family": "ip6", "table": "causeway", "name": "postrouting", "handle": 1,
                     "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
          {"rule": {"family": "ip6", "table": "causeway", "chain": "postrouting", "handle": 3,
                    "comment": "causeway: pod traffic leaving the cluster",
                    "expr": [
                      {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                                 "right": {"prefix": {"addr": "fd00:10:244:1::", "len": 64}}}},
                      {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                                 "right": "@no-masquerade"}},
                      {"masquerade": null}]}}]}"#;
        let listing: Nftables<'_> = serde_json::from_str(listing).expect("parses");
        assert_eq!(interpret6(&listing), Some(Nat6::Masquerade(m)));
        // The IPv4 reader never takes the ip6 table for its own.
        assert_eq!(interpret(&listing), None);
        let delete = serde_json::to_value(delete_batch6()).expect("JSON");
        assert_eq!(delete["nftables"][0]["delete"]["table"]["family"], "ip6");
    }

    #[test]
    fn the_gateway_snat_table_round_trips_through_a_listing() {
        let g = gateway_snat(
            &[
                net("192.168.77.0/24"),
                net("192.168.50.0/24"),
                net("192.168.77.5/32"),
            ],
            net("10.247.0.0/16"),
        );
        assert_eq!(
            g.clients,
            vec![net("192.168.50.0/24"), net("192.168.77.0/24")]
        );
        let json = serde_json::to_value(snat_replace_batch(&g)).expect("serializes");
        let cmds = json["nftables"].as_array().expect("array");
        assert_eq!(cmds[0]["add"]["table"]["name"], SNAT_TABLE);
        let expr = &cmds[5]["add"]["rule"]["expr"];
        assert_eq!(expr[0]["match"]["right"], "@clients");
        assert_eq!(expr[0]["match"]["op"], "==");
        assert_eq!(expr[1]["match"]["right"]["prefix"]["addr"], "10.247.0.0");
        // What nft lists back: the same objects, as ListObjects.
        let listed: Vec<serde_json::Value> = cmds[2..].iter().map(|c| c["add"].clone()).collect();
        let listing: Nftables<'_> =
            serde_json::from_value(serde_json::json!({ "nftables": listed })).expect("parses");
        assert_eq!(interpret_snat(&listing), Some(Snat::Masquerade(g)));
        // The other table's reader does not take it for its own.
        assert_eq!(interpret(&listing), None);
    }

    #[test]
    fn the_ipv6_gateway_snat_table_is_family_ip6_and_round_trips_through_a_listing() {
        let net6 = |s: &str| -> Ipv6Net { s.parse().expect("IPv6 CIDR") };
        let g = gateway_snat6(
            &[
                net6("fd00:77::/64"),
                net6("fd00:50::/64"),
                net6("fd00:77::5/128"),
            ],
            net6("fd00:10:247::/56"),
        );
        assert_eq!(
            g.clients,
            vec![net6("fd00:50::/64"), net6("fd00:77::/64")],
            "merged (the /128 lies in a /64) and sorted"
        );
        let json = serde_json::to_value(snat_replace_batch6(&g)).expect("serializes");
        let cmds = json["nftables"].as_array().expect("array");
        assert_eq!(cmds[0]["add"]["table"]["family"], "ip6");
        assert_eq!(cmds[0]["add"]["table"]["name"], SNAT_TABLE);
        assert_eq!(cmds[3]["add"]["set"]["type"], "ipv6_addr");
        let expr = &cmds[5]["add"]["rule"]["expr"];
        assert_eq!(expr[0]["match"]["left"]["payload"]["protocol"], "ip6");
        assert_eq!(expr[0]["match"]["right"], "@clients");
        assert_eq!(expr[1]["match"]["right"]["prefix"]["addr"], "fd00:10:247::");
        let listed: Vec<serde_json::Value> = cmds[2..].iter().map(|c| c["add"].clone()).collect();
        let listing: Nftables<'_> =
            serde_json::from_value(serde_json::json!({ "nftables": listed })).expect("parses");
        assert_eq!(interpret_snat6(&listing), Some(Snat6::Masquerade(g)));
        // Neither the IPv4 gateway table's reader nor the ip6 NAT table's takes it for its own.
        assert_eq!(interpret_snat(&listing), None);
        assert_eq!(interpret6(&listing), None);
        let delete = serde_json::to_value(snat_delete_batch6()).expect("JSON");
        assert_eq!(delete["nftables"][0]["delete"]["table"]["family"], "ip6");
        assert_eq!(delete["nftables"][0]["delete"]["table"]["name"], SNAT_TABLE);
    }

    #[test]
    fn a_changed_table_is_unrecognised_and_a_missing_one_is_none() {
        let tampered = LISTING.replace(r#""op": "!=""#, r#""op": "==""#);
        let listing: Nftables<'_> = serde_json::from_str(&tampered).expect("parses");
        assert!(matches!(interpret(&listing), Some(Nat::Unrecognised(_))));

        let extra_rule = LISTING.replace(
            r#"{"rule":"#,
            r#"{"rule": {"family": "ip", "table": "causeway", "chain": "postrouting", "handle": 9, "expr": [{"accept": null}]}}, {"rule":"#,
        );
        let listing: Nftables<'_> = serde_json::from_str(&extra_rule).expect("parses");
        assert!(matches!(interpret(&listing), Some(Nat::Unrecognised(_))));

        let empty: Nftables<'_> =
            serde_json::from_str(r#"{"nftables": [{"metainfo": {"json_schema_version": 1}}]}"#)
                .expect("parses");
        assert_eq!(interpret(&empty), None);
    }
}
