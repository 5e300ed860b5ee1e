//! The crate's error type: every failure of a pure helper, named after what was being done and
//! carrying the offending input so that a condition message or log line can quote it.

use ipnet::Ipv4Net;

/// Errors returned by the pure helpers of this crate.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A CIDR string did not parse at all.
    #[error("parse CIDR {value:?}: not a CIDR such as 10.244.0.0/16")]
    ParseCidr {
        /// The string that was given.
        value: String,
    },

    /// A CIDR parsed but is IPv6; v1alpha1 only supports IPv4 pod networks.
    #[error(
        "parse CIDR {value:?}: IPv6 is not supported in causeway.dev/v1alpha1, use an IPv4 CIDR"
    )]
    CidrNotIpv4 {
        /// The string that was given.
        value: String,
    },

    /// A CIDR has bits set after its prefix (e.g. `10.244.1.0/16`).
    #[error("parse CIDR {value:?}: host bits are set, did you mean {masked}?")]
    CidrHostBitsSet {
        /// The string that was given.
        value: String,
        /// The same prefix with the host bits cleared.
        masked: Ipv4Net,
    },

    /// A node subnet prefix length does not fit inside the network CIDR.
    #[error(
        "split {cidr} into /{prefix_length} subnets: the prefix length must be larger than {} and at most 32",
        cidr.prefix_len()
    )]
    SubnetPrefixLength {
        /// The network CIDR.
        cidr: Ipv4Net,
        /// The requested node subnet prefix length.
        prefix_length: u8,
    },

    /// A subnet index is past the last subnet of the network.
    #[error(
        "take subnet #{index} of {cidr} split into /{prefix_length}: only {capacity} subnets exist"
    )]
    SubnetIndexOutOfRange {
        /// The network CIDR.
        cidr: Ipv4Net,
        /// The node subnet prefix length.
        prefix_length: u8,
        /// The requested index (0-based).
        index: u64,
        /// How many subnets the network holds.
        capacity: u64,
    },

    /// An address or subnet is not part of the network it was looked up in.
    #[error("locate {subnet} in {cidr} split into /{prefix_length}: not one of its subnets")]
    NotASubnet {
        /// The network CIDR.
        cidr: Ipv4Net,
        /// The node subnet prefix length.
        prefix_length: u8,
        /// The subnet that was looked up.
        subnet: Ipv4Net,
    },

    /// A MAC address string did not parse.
    #[error(
        "parse MAC address {value:?}: expected six lowercase hex pairs such as 0e:12:34:56:78:9a"
    )]
    ParseMac {
        /// The string that was given.
        value: String,
    },

    /// An IPv4 address string did not parse.
    #[error("parse IPv4 address {value:?}: expected a dotted quad such as 192.168.1.10")]
    ParseIpv4 {
        /// The string that was given.
        value: String,
    },
}
