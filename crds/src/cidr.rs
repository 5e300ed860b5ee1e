//! CIDR arithmetic for pod networks: parsing the spec's CIDR strings into `ipnet` types with a
//! typed error, and splitting a range into equally sized node subnets, for both families.
//!
//! The operator's IPAM builds on these functions (capacity, the n-th subnet, the index of a
//! subnet), the agent uses [`contains`] to decide whether an address is one of ours. The API
//! stores CIDRs as strings (an `ipnet` type does not give a structural schema), so every
//! consumer goes through [`parse_cidr`] (or [`parse_ipv4_cidr`] where only IPv4 is handled
//! yet), which accepts every value the CEL rules of the pod range fields accept: no host bits
//! set (admission also refuses the reserved blocks of [`crate::v1alpha1::address::RESERVED`]
//! and [`crate::v1alpha1::address::RESERVED_V6`], which need no check here).
//!
//! Subnet indexes are `u128`: an IPv6 range cut into /64s holds up to 2^64 of them (a /0 into
//! /128s 2^128, which [`subnet_capacity`] saturates), and the arithmetic never iterates the
//! range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::Error;

/// An address family, named as Kubernetes names them (`Service.spec.ipFamilies`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of a network.
    #[must_use]
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// The family of an address.
    #[must_use]
    pub fn of_addr(address: &IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// `IPv4` or `IPv6`, as in `ipFamilies`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// Bits in an address of the family.
    #[must_use]
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a CIDR of either family as written in a spec (`10.244.0.0/16`, `fd00:10:244::/56`).
///
/// # Errors
/// [`Error::ParseCidr`] or [`Error::CidrHostBitsSet`].
pub fn parse_cidr(value: &str) -> Result<IpNet, Error> {
    let net: IpNet = value.parse().map_err(|_| Error::ParseCidr {
        value: value.to_owned(),
    })?;
    if net.trunc() != net {
        return Err(Error::CidrHostBitsSet {
            value: value.to_owned(),
            masked: net.trunc(),
        });
    }
    Ok(net)
}

/// Parses an IPv4 CIDR as written in a spec (`10.244.0.0/16`), for the consumers that handle
/// IPv4 only.
///
/// # Errors
/// [`Error::ParseCidr`], [`Error::CidrNotIpv4`] or [`Error::CidrHostBitsSet`].
pub fn parse_ipv4_cidr(value: &str) -> Result<Ipv4Net, Error> {
    match parse_cidr(value)? {
        IpNet::V4(net) => Ok(net),
        IpNet::V6(_) => Err(Error::CidrNotIpv4 {
            value: value.to_owned(),
        }),
    }
}

/// Parses an IP address of either family as written in a spec.
///
/// # Errors
/// [`Error::ParseIp`] when the string is not an IP address.
pub fn parse_addr(value: &str) -> Result<IpAddr, Error> {
    value.parse().map_err(|_| Error::ParseIp {
        value: value.to_owned(),
    })
}

/// Parses an IPv4 address as written in a spec (`192.168.1.10`).
///
/// # Errors
/// [`Error::ParseIpv4`] when the string is not an IPv4 address.
pub fn parse_ipv4_addr(value: &str) -> Result<Ipv4Addr, Error> {
    value.parse().map_err(|_| Error::ParseIpv4 {
        value: value.to_owned(),
    })
}

fn check_prefix_length(cidr: IpNet, prefix_length: u8) -> Result<(), Error> {
    if prefix_length <= cidr.prefix_len() || prefix_length > cidr.max_prefix_len() {
        return Err(Error::SubnetPrefixLength {
            cidr,
            prefix_length,
        });
    }
    Ok(())
}

/// A network's address as a number, left-aligned in its family's width.
fn to_bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// How many `/prefix_length` node subnets fit in `cidr`: `2^(prefix_length − cidr prefix)`,
/// saturated at `u128::MAX` (only `::/0` cut into /128s reaches it).
///
/// # Errors
/// [`Error::SubnetPrefixLength`] unless `cidr prefix < prefix_length ≤ 32` (IPv4) or `128`.
pub fn subnet_capacity(cidr: IpNet, prefix_length: u8) -> Result<u128, Error> {
    check_prefix_length(cidr, prefix_length)?;
    Ok(1u128
        .checked_shl(u32::from(prefix_length - cidr.prefix_len()))
        .unwrap_or(u128::MAX))
}

/// The `index`-th (0-based) `/prefix_length` subnet of `cidr`, in address order.
///
/// # Errors
/// [`Error::SubnetPrefixLength`] for an impossible prefix length,
/// [`Error::SubnetIndexOutOfRange`] when `index ≥ capacity`.
pub fn nth_subnet(cidr: IpNet, prefix_length: u8, index: u128) -> Result<IpNet, Error> {
    let capacity = subnet_capacity(cidr, prefix_length)?;
    if index >= capacity {
        return Err(Error::SubnetIndexOutOfRange {
            cidr,
            prefix_length,
            index,
            capacity,
        });
    }
    let shift = u32::from(cidr.max_prefix_len() - prefix_length);
    // index < capacity ≤ 2^(prefix_length − cidr prefix), so the offset stays inside cidr.
    let address = to_bits(cidr.network()) + index.checked_shl(shift).unwrap_or(0);
    let bad_length = || Error::SubnetPrefixLength {
        cidr,
        prefix_length,
    };
    Ok(match cidr {
        IpNet::V4(_) => {
            let address = u32::try_from(address).map_err(|_| bad_length())?;
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(address), prefix_length).map_err(|_| bad_length())?,
            )
        }
        IpNet::V6(_) => IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(address), prefix_length).map_err(|_| bad_length())?,
        ),
    })
}

/// The index of `subnet` among the `/prefix_length` subnets of `cidr`: the inverse of
/// [`nth_subnet`], used by IPAM to rebuild its picture from existing NodeSubnets.
///
/// # Errors
/// [`Error::SubnetPrefixLength`] for an impossible prefix length, [`Error::NotASubnet`] when
/// `subnet` has another family or prefix length, has host bits set or lies outside `cidr`.
pub fn subnet_index(cidr: IpNet, prefix_length: u8, subnet: IpNet) -> Result<u128, Error> {
    check_prefix_length(cidr, prefix_length)?;
    if subnet.prefix_len() != prefix_length || subnet.trunc() != subnet || !cidr.contains(&subnet) {
        return Err(Error::NotASubnet {
            cidr,
            prefix_length,
            subnet,
        });
    }
    let offset = to_bits(subnet.network()) - to_bits(cidr.network());
    Ok(offset >> u32::from(cidr.max_prefix_len() - prefix_length))
}

/// Whether `address` lies in `prefix` (network and broadcast addresses included).
#[must_use]
pub fn contains(prefix: Ipv4Net, address: Ipv4Addr) -> bool {
    prefix.contains(&address)
}

/// Whether two prefixes share any address (one contains the other's network address).
#[must_use]
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Whether two prefixes of any family share any address (never across families).
#[must_use]
pub fn overlaps_any(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The gateway address of a node subnet: its first host address, which the agent puts on the
/// node's pod bridge and which the CNI `host-local` plugin hands out as the pods' default route.
#[must_use]
pub fn gateway_address(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test CIDR")
    }

    fn any(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn parse_ipv4_cidr_accepts_canonical_ipv4_and_rejects_the_rest() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("10.244.0.0/16", Ok("10.244.0.0/16")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("192.168.1.7/32", Ok("192.168.1.7/32")),
            ("10.244.0.0", Err("not a CIDR")),
            ("10.244.0.0/33", Err("not a CIDR")),
            ("not-a-cidr", Err("not a CIDR")),
            ("", Err("not a CIDR")),
            ("fd00::/64", Err("IPv6")),
            ("10.244.1.0/16", Err("did you mean 10.244.0.0/16")),
        ];
        for (input, want) in cases {
            let got = parse_ipv4_cidr(input);
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(g.to_string(), *w, "{input}"),
                (Err(w), Err(g)) => assert!(g.to_string().contains(w), "{input}: {g}"),
                (w, g) => panic!("{input}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn subnet_capacity_is_two_to_the_prefix_difference() {
        let cases: &[(&str, u8, Option<u128>)] = &[
            ("10.244.0.0/16", 24, Some(256)),
            ("10.244.0.0/16", 17, Some(2)),
            ("10.0.0.0/8", 30, Some(1 << 22)),
            ("0.0.0.0/0", 32, Some(1 << 32)),
            ("10.244.0.0/16", 16, None),
            ("10.244.0.0/16", 12, None),
            ("10.244.0.0/16", 33, None),
            ("fd00:10:244::/56", 64, Some(256)),
            ("fd00::/48", 64, Some(1 << 16)),
            ("2001:db8::/32", 126, Some(1 << 94)),
            ("::/0", 127, Some(1 << 127)),
            ("::/0", 128, Some(u128::MAX)),
            ("fd00::/48", 48, None),
            ("fd00::/48", 129, None),
        ];
        for (cidr, prefix, want) in cases {
            assert_eq!(
                subnet_capacity(any(cidr), *prefix).ok(),
                *want,
                "{cidr} /{prefix}"
            );
        }
    }

    #[test]
    fn nth_subnet_walks_the_network_in_address_order() {
        let cases: &[(&str, u8, u128, Option<&str>)] = &[
            ("10.244.0.0/16", 24, 0, Some("10.244.0.0/24")),
            ("10.244.0.0/16", 24, 1, Some("10.244.1.0/24")),
            ("10.244.0.0/16", 24, 255, Some("10.244.255.0/24")),
            ("10.244.0.0/16", 24, 256, None),
            ("10.244.0.0/16", 26, 5, Some("10.244.1.64/26")),
            ("255.255.255.0/24", 30, 63, Some("255.255.255.252/30")),
            ("0.0.0.0/0", 1, 1, Some("128.0.0.0/1")),
            ("fd00:10:244::/56", 64, 0, Some("fd00:10:244::/64")),
            ("fd00:10:244::/56", 64, 255, Some("fd00:10:244:ff::/64")),
            ("fd00:10:244::/56", 64, 256, None),
            ("fd00::/48", 112, 65_537, Some("fd00::1:1:0/112")),
            (
                "2001:db8::/32",
                126,
                (1 << 94) - 1,
                Some("2001:db8:ffff:ffff:ffff:ffff:ffff:fffc/126"),
            ),
        ];
        for (cidr, prefix, index, want) in cases {
            let got = nth_subnet(any(cidr), *prefix, *index)
                .ok()
                .map(|n| n.to_string());
            assert_eq!(got.as_deref(), *want, "{cidr} /{prefix} #{index}");
        }
    }

    #[test]
    fn subnet_index_inverts_nth_subnet_and_rejects_foreign_subnets() {
        for (cidr, prefix, indexes) in [
            ("10.244.0.0/16", 24, &[0, 1, 17, 255][..]),
            ("fd00::/48", 64, &[0, 1, 17, 65_535][..]),
            ("2001:db8::/32", 126, &[0, 3, (1 << 94) - 1][..]),
        ] {
            for index in indexes {
                let subnet = nth_subnet(any(cidr), prefix, *index).expect("in range");
                assert_eq!(subnet_index(any(cidr), prefix, subnet), Ok(*index));
            }
        }
        let cases: &[(&str, u8, &str)] = &[
            ("10.244.0.0/16", 24, "10.245.0.0/24"),
            ("10.244.0.0/16", 24, "10.244.1.0/25"),
            ("10.244.0.0/16", 24, "10.244.1.5/24"),
            ("fd00::/48", 64, "fd00:0:0:1::1/64"),
            ("fd00::/48", 64, "fd01::/64"),
            ("10.0.0.0/8", 24, "::a00:0/120"),
        ];
        for (cidr, prefix, subnet) in cases {
            assert!(
                matches!(
                    subnet_index(any(cidr), *prefix, any(subnet)),
                    Err(Error::NotASubnet { .. })
                ),
                "{subnet} in {cidr}"
            );
        }
    }

    #[test]
    fn contains_includes_network_and_broadcast_addresses_only_inside_the_prefix() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.244.1.0/24", "10.244.1.0", true),
            ("10.244.1.0/24", "10.244.1.77", true),
            ("10.244.1.0/24", "10.244.1.255", true),
            ("10.244.1.0/24", "10.244.2.0", false),
            ("10.244.1.0/24", "10.244.0.255", false),
            ("0.0.0.0/0", "8.8.8.8", true),
        ];
        for (prefix, addr, want) in cases {
            let addr = parse_ipv4_addr(addr).expect("test address");
            assert_eq!(contains(net(prefix), addr), *want, "{addr} in {prefix}");
        }
    }

    #[test]
    fn gateway_address_is_the_first_host_of_the_subnet() {
        assert_eq!(
            gateway_address(net("10.244.3.0/24")),
            Ipv4Addr::new(10, 244, 3, 1)
        );
        assert_eq!(
            gateway_address(net("10.244.3.64/26")),
            Ipv4Addr::new(10, 244, 3, 65)
        );
    }
}
