//! CIDR arithmetic for pod networks: parsing the spec's CIDR strings into [`Ipv4Net`] with a
//! typed error, and splitting a network into equally sized node subnets.
//!
//! The operator's IPAM builds on these functions (capacity, the n-th subnet, the index of a
//! subnet), the agent uses [`contains`] to decide whether an address is one of ours. The API
//! stores CIDRs as strings (an `ipnet` type does not give a structural schema), so every
//! consumer goes through [`parse_ipv4_cidr`], which accepts every value the CEL rules of
//! `PodNetwork.spec.cidr` accept: IPv4, with no host bits set (admission also refuses the
//! reserved blocks of [`crate::v1alpha1::address::RESERVED`], which need no check here).

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use crate::Error;

/// Parses an IPv4 CIDR as written in a spec (`10.244.0.0/16`).
///
/// Rejects strings that are not CIDRs, IPv6 CIDRs and CIDRs with host bits set, mirroring the
/// admission rules so that an object the API server accepted always parses here.
///
/// # Errors
/// [`Error::ParseCidr`], [`Error::CidrNotIpv4`] or [`Error::CidrHostBitsSet`].
pub fn parse_ipv4_cidr(value: &str) -> Result<Ipv4Net, Error> {
    let net: IpNet = value.parse().map_err(|_| Error::ParseCidr {
        value: value.to_owned(),
    })?;
    let IpNet::V4(net) = net else {
        return Err(Error::CidrNotIpv4 {
            value: value.to_owned(),
        });
    };
    if net.trunc() != net {
        return Err(Error::CidrHostBitsSet {
            value: value.to_owned(),
            masked: net.trunc(),
        });
    }
    Ok(net)
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

fn check_prefix_length(cidr: Ipv4Net, prefix_length: u8) -> Result<(), Error> {
    if prefix_length <= cidr.prefix_len() || prefix_length > 32 {
        return Err(Error::SubnetPrefixLength {
            cidr,
            prefix_length,
        });
    }
    Ok(())
}

/// How many `/prefix_length` node subnets fit in `cidr`: `2^(prefix_length − cidr prefix)`.
///
/// # Errors
/// [`Error::SubnetPrefixLength`] unless `cidr prefix < prefix_length ≤ 32`.
pub fn subnet_capacity(cidr: Ipv4Net, prefix_length: u8) -> Result<u64, Error> {
    check_prefix_length(cidr, prefix_length)?;
    Ok(1u64 << (prefix_length - cidr.prefix_len()))
}

/// The `index`-th (0-based) `/prefix_length` subnet of `cidr`, in address order.
///
/// # Errors
/// [`Error::SubnetPrefixLength`] for an impossible prefix length,
/// [`Error::SubnetIndexOutOfRange`] when `index ≥ capacity`.
pub fn nth_subnet(cidr: Ipv4Net, prefix_length: u8, index: u64) -> Result<Ipv4Net, Error> {
    let capacity = subnet_capacity(cidr, prefix_length)?;
    if index >= capacity {
        return Err(Error::SubnetIndexOutOfRange {
            cidr,
            prefix_length,
            index,
            capacity,
        });
    }
    let base = u64::from(u32::from(cidr.network()));
    let address = base + (index << (32 - u32::from(prefix_length)));
    let address = u32::try_from(address).map_err(|_| Error::SubnetIndexOutOfRange {
        cidr,
        prefix_length,
        index,
        capacity,
    })?;
    Ipv4Net::new(Ipv4Addr::from(address), prefix_length).map_err(|_| Error::SubnetPrefixLength {
        cidr,
        prefix_length,
    })
}

/// The index of `subnet` among the `/prefix_length` subnets of `cidr`: the inverse of
/// [`nth_subnet`], used by IPAM to rebuild its allocation bitmap from existing NodeSubnets.
///
/// # Errors
/// [`Error::SubnetPrefixLength`] for an impossible prefix length, [`Error::NotASubnet`] when
/// `subnet` has another prefix length, has host bits set or lies outside `cidr`.
pub fn subnet_index(cidr: Ipv4Net, prefix_length: u8, subnet: Ipv4Net) -> Result<u64, Error> {
    check_prefix_length(cidr, prefix_length)?;
    let not_a_subnet = || Error::NotASubnet {
        cidr,
        prefix_length,
        subnet,
    };
    if subnet.prefix_len() != prefix_length || subnet.trunc() != subnet || !cidr.contains(&subnet) {
        return Err(not_a_subnet());
    }
    let offset = u32::from(subnet.network()) - u32::from(cidr.network());
    Ok(u64::from(offset) >> (32 - u32::from(prefix_length)))
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
            ("fd00::/64", Err("IPv6 is not supported")),
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
        let cases: &[(&str, u8, Option<u64>)] = &[
            ("10.244.0.0/16", 24, Some(256)),
            ("10.244.0.0/16", 17, Some(2)),
            ("10.0.0.0/8", 30, Some(1 << 22)),
            ("0.0.0.0/0", 32, Some(1 << 32)),
            ("10.244.0.0/16", 16, None),
            ("10.244.0.0/16", 12, None),
            ("10.244.0.0/16", 33, None),
        ];
        for (cidr, prefix, want) in cases {
            assert_eq!(
                subnet_capacity(net(cidr), *prefix).ok(),
                *want,
                "{cidr} /{prefix}"
            );
        }
    }

    #[test]
    fn nth_subnet_walks_the_network_in_address_order() {
        let cases: &[(&str, u8, u64, Option<&str>)] = &[
            ("10.244.0.0/16", 24, 0, Some("10.244.0.0/24")),
            ("10.244.0.0/16", 24, 1, Some("10.244.1.0/24")),
            ("10.244.0.0/16", 24, 255, Some("10.244.255.0/24")),
            ("10.244.0.0/16", 24, 256, None),
            ("10.244.0.0/16", 26, 5, Some("10.244.1.64/26")),
            ("255.255.255.0/24", 30, 63, Some("255.255.255.252/30")),
            ("0.0.0.0/0", 1, 1, Some("128.0.0.0/1")),
        ];
        for (cidr, prefix, index, want) in cases {
            let got = nth_subnet(net(cidr), *prefix, *index)
                .ok()
                .map(|n| n.to_string());
            assert_eq!(got.as_deref(), *want, "{cidr} /{prefix} #{index}");
        }
    }

    #[test]
    fn subnet_index_inverts_nth_subnet_and_rejects_foreign_subnets() {
        let cidr = net("10.244.0.0/16");
        for index in [0, 1, 17, 255] {
            let subnet = nth_subnet(cidr, 24, index).expect("in range");
            assert_eq!(subnet_index(cidr, 24, subnet), Ok(index));
        }
        let cases: &[(&str, u8, &str)] = &[
            ("10.244.0.0/16", 24, "10.245.0.0/24"),
            ("10.244.0.0/16", 24, "10.244.1.0/25"),
            ("10.244.0.0/16", 24, "10.244.1.5/24"),
        ];
        for (cidr, prefix, subnet) in cases {
            assert!(
                matches!(
                    subnet_index(net(cidr), *prefix, net(subnet)),
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
