//! The crate's error type: every failure of a pure helper, named after what was being done and
//! carrying the offending input so that a condition message or log line can quote it.

use ipnet::IpNet;

/// Errors returned by the pure helpers of this crate.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A CIDR string did not parse at all.
    #[error("parse CIDR {value:?}: not a CIDR such as 10.244.0.0/16")]
    ParseCidr {
        /// The string that was given.
        value: String,
    },

    /// A CIDR parsed but is IPv6 where only IPv4 is handled yet.
    #[error("parse CIDR {value:?}: an IPv6 range where only IPv4 is handled yet (issue #18)")]
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
        masked: IpNet,
    },

    /// A node subnet prefix length does not fit inside the network CIDR.
    #[error(
        "split {cidr} into /{prefix_length} subnets: the prefix length must be larger than {} and at most {}",
        cidr.prefix_len(),
        cidr.max_prefix_len()
    )]
    SubnetPrefixLength {
        /// The network CIDR.
        cidr: IpNet,
        /// The requested node subnet prefix length.
        prefix_length: u8,
    },

    /// A subnet index is past the last subnet of the network.
    #[error(
        "take subnet #{index} of {cidr} split into /{prefix_length}: only {capacity} subnets exist"
    )]
    SubnetIndexOutOfRange {
        /// The network CIDR.
        cidr: IpNet,
        /// The node subnet prefix length.
        prefix_length: u8,
        /// The requested index (0-based).
        index: u128,
        /// How many subnets the network holds.
        capacity: u128,
    },

    /// An address or subnet is not part of the network it was looked up in.
    #[error("locate {subnet} in {cidr} split into /{prefix_length}: not one of its subnets")]
    NotASubnet {
        /// The network CIDR.
        cidr: IpNet,
        /// The node subnet prefix length.
        prefix_length: u8,
        /// The subnet that was looked up.
        subnet: IpNet,
    },

    /// A dual-stack network's two ranges are of one family.
    #[error(
        "secondaryCidr {secondary} is of the same address family as cidr {primary}: a dual-stack network has one IPv4 and one IPv6 range"
    )]
    SameFamily {
        /// `spec.cidr`.
        primary: String,
        /// `spec.secondaryCidr`.
        secondary: String,
    },

    /// Only one of secondaryCidr and secondaryNodeSubnetPrefixLength is set.
    #[error("secondaryCidr and secondaryNodeSubnetPrefixLength go together: set both, or neither")]
    SecondaryIncomplete,

    /// A MAC address string did not parse.
    #[error(
        "parse MAC address {value:?}: expected six lowercase hex pairs such as 0e:12:34:56:78:9a"
    )]
    ParseMac {
        /// The string that was given.
        value: String,
    },

    /// An IP address string did not parse.
    #[error(
        "parse IP address {value:?}: expected an IPv4 or IPv6 address such as 192.168.1.10 or fd00::10"
    )]
    ParseIp {
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
