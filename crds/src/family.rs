//! A network's ranges and a node's subnets and addresses, by address family (pure).
//!
//! The API names them by role — a PodNetwork's `cidr` (its primary family) and
//! `secondaryCidr`, a NodeSubnet's `cidr`, `secondaryCidr`, `nodeAddress` and
//! `secondaryNodeAddress` — while what a node programs and announces goes by family: the IPv4
//! range with the IPv4 subnet and the IPv4 address, whichever fields hold them. [`Families`]
//! is that regrouping, done once, for the agent's planner and its BGP configuration alike.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::v1alpha1::ParsedAddresses;

/// One family's part: the network's range of it, the node's subnet in it (when the operator
/// has allocated one) and the node's address of it (when the node has one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Side<N, A> {
    pub range: Option<N>,
    pub subnet: Option<N>,
    pub address: Option<A>,
}

impl<N, A> Default for Side<N, A> {
    fn default() -> Self {
        Self {
            range: None,
            subnet: None,
            address: None,
        }
    }
}

/// Both families' parts of one node of one network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Families {
    /// The network's primary range (`cidr`) is IPv6.
    pub primary_v6: bool,
    pub v4: Side<Ipv4Net, Ipv4Addr>,
    pub v6: Side<Ipv6Net, Ipv6Addr>,
}

impl Families {
    /// Regroups the network's `range` (its `cidr`) and `secondary` range and the NodeSubnet's
    /// parsed fields by family. A subnet goes with the range it belongs to by field (`cidr`
    /// with `cidr`, `secondaryCidr` with `secondaryCidr`) and only when it is of that range's
    /// family (the callers refuse one outside its range with their own message); an address
    /// is the first of `nodeAddress`, `secondaryNodeAddress` of its family.
    #[must_use]
    pub fn split(range: IpNet, secondary: Option<IpNet>, node: &ParsedAddresses) -> Self {
        let mut f = Self {
            primary_v6: matches!(range, IpNet::V6(_)),
            v4: Side::default(),
            v6: Side::default(),
        };
        for (range, subnet) in [
            (Some(range), Some(node.cidr)),
            (secondary, node.secondary_cidr),
        ] {
            match (range, subnet) {
                (Some(IpNet::V4(r)), s) => {
                    f.v4.range = Some(r);
                    if let Some(IpNet::V4(s)) = s {
                        f.v4.subnet = Some(s);
                    }
                }
                (Some(IpNet::V6(r)), s) => {
                    f.v6.range = Some(r);
                    if let Some(IpNet::V6(s)) = s {
                        f.v6.subnet = Some(s);
                    }
                }
                (None, _) => {}
            }
        }
        for a in [Some(node.node_address), node.secondary_node_address]
            .into_iter()
            .flatten()
        {
            match a {
                IpAddr::V4(a) if f.v4.address.is_none() => f.v4.address = Some(a),
                IpAddr::V6(a) if f.v6.address.is_none() => f.v6.address = Some(a),
                _ => {}
            }
        }
        f
    }

    /// The node's subnets, the network's primary family first.
    #[must_use]
    pub fn subnets(&self) -> Vec<IpNet> {
        let v4 = self.v4.subnet.map(IpNet::V4);
        let v6 = self.v6.subnet.map(IpNet::V6);
        let ordered = if self.primary_v6 { [v6, v4] } else { [v4, v6] };
        ordered.into_iter().flatten().collect()
    }

    /// The field holding the range (and subnet) of family `ipv6`: `cidr` for the primary
    /// family, `secondaryCidr` for the other.
    #[must_use]
    pub fn field_of(&self, ipv6: bool) -> &'static str {
        if self.primary_v6 == ipv6 {
            "cidr"
        } else {
            "secondaryCidr"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(
        cidr: &str,
        address: &str,
        cidr2: Option<&str>,
        address2: Option<&str>,
    ) -> ParsedAddresses {
        ParsedAddresses {
            cidr: cidr.parse().expect("cidr"),
            node_address: address.parse().expect("address"),
            secondary_cidr: cidr2.map(|c| c.parse().expect("cidr")),
            secondary_node_address: address2.map(|a| a.parse().expect("address")),
        }
    }

    #[test]
    fn fields_are_regrouped_by_family_whatever_their_role() {
        let net4: IpNet = "10.244.0.0/16".parse().expect("net");
        let net6: IpNet = "fd00:10:244::/56".parse().expect("net");
        // IPv4 first, dual-stack underlay.
        let f = Families::split(
            net4,
            Some(net6),
            &parsed(
                "10.244.1.0/24",
                "192.168.1.11",
                Some("fd00:10:244:1::/64"),
                Some("fd00:1::11"),
            ),
        );
        assert!(!f.primary_v6);
        assert_eq!(f.v4.subnet, Some("10.244.1.0/24".parse().expect("net")));
        assert_eq!(f.v6.address, Some("fd00:1::11".parse().expect("ip")));
        assert_eq!(f.field_of(true), "secondaryCidr");
        // IPv6 first: the IPv6 subnet leads, the IPv4 address is the secondary one.
        let f = Families::split(
            net6,
            Some(net4),
            &parsed(
                "fd00:10:244:1::/64",
                "fd00:1::11",
                Some("10.244.1.0/24"),
                Some("192.168.1.11"),
            ),
        );
        assert_eq!(
            f.subnets(),
            [
                "fd00:10:244:1::/64".parse::<IpNet>().expect("net"),
                "10.244.1.0/24".parse().expect("net")
            ]
        );
        assert_eq!(f.v4.address, Some(Ipv4Addr::new(192, 168, 1, 11)));
        assert_eq!(f.field_of(true), "cidr");
        // An IPv6 network over an IPv4-only underlay: no IPv6 address; a second range not
        // allocated yet: no subnet of it.
        let f = Families::split(
            net6,
            Some(net4),
            &parsed("fd00:10:244:1::/64", "192.168.1.11", None, None),
        );
        assert_eq!(
            (f.v6.address, f.v4.subnet, f.v4.range),
            (None, None, net4.to_string().parse().ok())
        );
        // A subnet of the wrong family for its field is left out (the caller refuses it).
        let f = Families::split(
            net4,
            Some(net6),
            &parsed("10.244.1.0/24", "192.168.1.11", Some("10.245.1.0/24"), None),
        );
        assert_eq!(f.v6.subnet, None);
        assert_eq!(f.subnets().len(), 1);
    }
}
