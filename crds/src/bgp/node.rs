//! One node's BGP settings: a PodNetwork's `routed.bgp` resolved for the node's labels, fully
//! typed, for the agent's speaker configuration (pure: no client, no I/O).
//!
//! [`BgpSpec::for_node`] decides, for one node:
//!
//! - its AS: the value of the node label `nodeAsnLabel` names when the node carries it (parsed
//!   and checked like `asn`; a bad value is an error naming the label and the value), else
//!   `asn`;
//! - the routers it peers with: the peers whose `nodeSelector` matches its labels, in spec
//!   order, each eBGP or iBGP relative to the node's own AS ([`Session`]);
//! - the defaults in force: graceful restart (on, 120 s, unless disabled), BFD values, the
//!   Secret data key of a password.
//!
//! Admission checks `ebgpMultihop` (eBGP only) and `routeReflectorClient` (iBGP only) against
//! `asn`. A node whose label gives it another AS can turn an eBGP peer into an iBGP one or the
//! reverse; the setting that no longer applies is then **ignored** for that node and listed in
//! [`NodeBgp::ignored`] for the agent to report, rather than failing the node's BGP: an iBGP
//! session crosses routers without a TTL setting, and an eBGP peer receives every route without
//! reflection, so the session still works as intended.
//!
//! Everything admission refuses is refused here too (objects stored before a rule existed, or
//! written around admission, reach the agent all the same), with the field's path and the fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::asn::{self, AsnProblem};
use super::community::{Community, CommunityError};
use super::password;
use crate::selector::{self, SelectorError};
use crate::v1alpha1::{BgpPeer, BgpSpec, SecretKeyRef};

/// The BGP settings of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBgp {
    /// The node's AS.
    pub asn: u32,
    /// Where the AS comes from.
    pub asn_source: AsnSource,
    /// The hold time proposed to every peer; zero disables keepalives.
    pub hold_time: Duration,
    /// The interval between keepalives.
    pub keepalive: Duration,
    /// Graceful restart, `None` when disabled.
    pub graceful_restart: Option<GracefulRestart>,
    /// Communities attached to the node's own routes, in spec order, each once.
    pub communities: Vec<Community>,
    /// LOCAL_PREF of the node's own routes; BGP sends it to iBGP peers only.
    pub local_preference: Option<u32>,
    /// The routers this node peers with, in spec order.
    pub peers: Vec<NodePeer>,
    /// Settings of this node's peers that do not apply to its sessions, for the agent to
    /// report (see the module docs).
    pub ignored: Vec<Ignored>,
}

/// Where a node's AS comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsnSource {
    /// `spec.routed.bgp.asn`.
    Spec,
    /// The node label `spec.routed.bgp.nodeAsnLabel` names.
    NodeLabel {
        /// The label key.
        key: String,
        /// The label's value on the node.
        value: String,
    },
}

/// Graceful restart (RFC 4724) in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracefulRestart {
    /// How long peers keep the node's routes while its speaker restarts (at most 4095 s).
    pub restart_time: Duration,
}

/// One router a node peers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePeer {
    /// Its position in `spec.routed.bgp.peers`, for messages.
    pub index: usize,
    /// The router's address, IPv4 or IPv6 (a session over IPv6 starts from the node's IPv6
    /// address).
    pub address: IpAddr,
    /// The router's AS.
    pub asn: u32,
    /// The router's BGP port (unused when `passive`).
    pub port: u16,
    /// Only accept the router's connection, never connect.
    pub passive: bool,
    /// eBGP or iBGP relative to this node's AS, with the options of that kind.
    pub session: Session,
    /// Where the TCP MD5 key is, `key` defaulted: a Secret in the namespace Causeway runs in.
    pub password: Option<SecretKeyRef>,
    /// BFD, `None` when off.
    pub bfd: Option<Bfd>,
}

/// The kind of a session, relative to the node's AS, with the options only that kind has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// The router's AS differs from the node's.
    External {
        /// TTL for a router that is not directly connected (2-255); `None`: directly
        /// connected.
        multihop: Option<u8>,
    },
    /// The router's AS is the node's.
    Internal {
        /// The node reflects routes to this router (RFC 4456).
        route_reflector_client: bool,
    },
}

impl Session {
    /// Whether the session is iBGP.
    #[must_use]
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Internal { .. })
    }
}

/// BFD (RFC 5880) in force on one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bfd {
    /// Interval between BFD packets, sent and expected (10 ms to 60 s).
    pub min_interval: Duration,
    /// Missed intervals that declare the router down (1-255).
    pub multiplier: u8,
}

/// A peer setting that does not apply to this node's session with it, and is ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// `ebgpMultihop` on a peer that is iBGP for this node.
    EbgpMultihop {
        /// The peer's position in `spec.routed.bgp.peers`.
        index: usize,
        /// The peer's address.
        address: IpAddr,
        /// The AS the node and the peer share.
        asn: u32,
    },
    /// `routeReflectorClient` on a peer that is eBGP for this node.
    RouteReflectorClient {
        /// The peer's position in `spec.routed.bgp.peers`.
        index: usize,
        /// The peer's address.
        address: IpAddr,
        /// The peer's AS.
        peer_asn: u32,
        /// The node's AS.
        node_asn: u32,
    },
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EbgpMultihop {
                index,
                address,
                asn,
            } => write!(
                f,
                "spec.routed.bgp.peers[{index}].ebgpMultihop is ignored on this node: its AS is {asn}, the same as {address}'s, so the session is iBGP, which may cross routers anyway"
            ),
            Self::RouteReflectorClient {
                index,
                address,
                peer_asn,
                node_asn,
            } => write!(
                f,
                "spec.routed.bgp.peers[{index}].routeReflectorClient is ignored on this node: its AS is {node_asn} and {address}'s is {peer_asn}, so the session is eBGP, which gets every route without reflection"
            ),
        }
    }
}

/// Why `routed.bgp` cannot be resolved for a node. Every message starts with the field (or the
/// node label) and ends with what to write instead.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BgpError {
    /// An AS number field of the spec that is out of range or reserved.
    #[error("{field} {value} {problem}")]
    Asn {
        /// The field's path.
        field: String,
        /// Its value.
        value: i64,
        /// What is wrong.
        problem: AsnProblem,
    },

    /// The node's AS label holds no usable AS number.
    #[error("node label {key}={value:?} (named by spec.routed.bgp.nodeAsnLabel) {problem}")]
    NodeAsn {
        /// The label key.
        key: String,
        /// Its value on the node.
        value: String,
        /// What is wrong.
        problem: AsnProblem,
    },

    /// `nodeAsnLabel` is not a label key.
    #[error("spec.routed.bgp.nodeAsnLabel {key:?}: {why}")]
    NodeAsnLabel {
        /// The key as written.
        key: String,
        /// What is wrong and what a key looks like.
        why: String,
    },

    /// A number outside its field's range.
    #[error("{field} {value} is out of range: use {range}")]
    OutOfRange {
        /// The field's path.
        field: String,
        /// Its value.
        value: i64,
        /// The allowed values, e.g. "1-4095".
        range: &'static str,
    },

    /// The keepalive interval is not below the hold time.
    #[error(
        "spec.routed.bgp.keepaliveSeconds {keepalive} must be less than holdTimeSeconds {hold_time}: use about a third of the hold time, or set holdTimeSeconds to 0 to disable keepalives"
    )]
    Keepalive {
        /// `keepaliveSeconds`.
        keepalive: i32,
        /// `holdTimeSeconds`.
        hold_time: i32,
    },

    /// A peer address that is not an IP address.
    #[error(
        "{field} {value:?} is not an IP address: use the router's address on the node network, such as 192.168.10.1 or fd00:50::1"
    )]
    PeerAddress {
        /// The field's path.
        field: String,
        /// The value as written.
        value: String,
    },

    /// A peer address no host can own (loopback, link-local, multicast, ...), as admission
    /// refuses it.
    #[error(
        "{field} {address} is in the {block} range, not a unicast address a host can own: use the router's address on the node network, such as {example}"
    )]
    PeerAddressReserved {
        /// The field's path.
        field: String,
        /// The address.
        address: IpAddr,
        /// The reserved block, named as [`crate::ownership::reserved_ip`] names it.
        block: &'static str,
        /// An accepted address of the same family.
        example: &'static str,
    },

    /// Two peers with one address.
    #[error(
        "spec.routed.bgp.peers has more than one entry with address {address}: list each router once"
    )]
    DuplicatePeer {
        /// The address listed twice (IPv6 addresses compare as addresses, however written).
        address: IpAddr,
    },

    /// A malformed peer `nodeSelector`.
    #[error("{field}.{source}")]
    PeerSelector {
        /// The peer's path, `spec.routed.bgp.peers[i]`.
        field: String,
        /// What is wrong with its selector.
        source: SelectorError,
    },

    /// A community that does not parse.
    #[error("{field} {value} is {source}")]
    Community {
        /// The entry's path.
        field: String,
        /// The entry as written.
        value: String,
        /// What is wrong.
        source: CommunityError,
    },

    /// A community listed twice.
    #[error(
        "spec.routed.bgp.advertise.communities lists {community} more than once: list each community once"
    )]
    DuplicateCommunity {
        /// The community.
        community: Community,
    },

    /// A Secret reference that cannot name a Secret or a data key.
    #[error("{field} {value:?} is not a {what}")]
    SecretRef {
        /// The field's path.
        field: String,
        /// The value as written.
        value: String,
        /// What it should be and an example.
        what: &'static str,
    },
}

/// `value` as `T`, when it lies in `min..=max`.
fn ranged<T: TryFrom<i64>>(
    field: impl FnOnce() -> String,
    value: i64,
    (min, max): (i64, i64),
    range: &'static str,
) -> Result<T, BgpError> {
    (min..=max)
        .contains(&value)
        .then(|| T::try_from(value).ok())
        .flatten()
        .ok_or_else(|| BgpError::OutOfRange {
            field: field(),
            value,
            range,
        })
}

impl BgpSpec {
    /// This BGP block resolved for a node with `node_labels` (see [`crate::bgp::node`]).
    ///
    /// # Errors
    /// The first field that admission would refuse, and a node AS label that is not a usable
    /// AS number; the message names the field (or the label and its value) and the fix.
    pub fn for_node(&self, node_labels: &BTreeMap<String, String>) -> Result<NodeBgp, BgpError> {
        let spec_asn = asn::check(self.asn).map_err(|problem| BgpError::Asn {
            field: "spec.routed.bgp.asn".into(),
            value: self.asn,
            problem,
        })?;
        let (node_asn, asn_source) = self.node_asn(spec_asn, node_labels)?;
        let hold_time: u16 = ranged(
            || "spec.routed.bgp.holdTimeSeconds".into(),
            self.hold_time_seconds.into(),
            (0, 65535),
            "0 (no keepalives) or 3-65535",
        )?;
        if hold_time != 0 && hold_time < 3 {
            return Err(BgpError::OutOfRange {
                field: "spec.routed.bgp.holdTimeSeconds".into(),
                value: hold_time.into(),
                range: "0 (no keepalives) or 3-65535",
            });
        }
        let keepalive: u16 = ranged(
            || "spec.routed.bgp.keepaliveSeconds".into(),
            self.keepalive_seconds.into(),
            (1, 21845),
            "1-21845",
        )?;
        if hold_time != 0 && keepalive >= hold_time {
            return Err(BgpError::Keepalive {
                keepalive: self.keepalive_seconds,
                hold_time: self.hold_time_seconds,
            });
        }
        let graceful_restart = self.graceful_restart.clone().unwrap_or_default();
        let restart_time = ranged(
            || "spec.routed.bgp.gracefulRestart.restartTimeSeconds".into(),
            graceful_restart.restart_time_seconds.into(),
            (1, 4095),
            "1-4095",
        )?;
        let graceful_restart = graceful_restart.enabled.then(|| GracefulRestart {
            restart_time: Duration::from_secs(restart_time),
        });
        let advertise = self.advertise.clone().unwrap_or_default();
        let mut communities = Vec::new();
        for (i, text) in advertise.communities.iter().enumerate() {
            let community: Community = text.parse().map_err(|source| BgpError::Community {
                field: format!("spec.routed.bgp.advertise.communities[{i}]"),
                value: text.clone(),
                source,
            })?;
            if communities.contains(&community) {
                return Err(BgpError::DuplicateCommunity { community });
            }
            communities.push(community);
        }
        let local_preference = advertise
            .local_preference
            .map(|value| {
                ranged(
                    || "spec.routed.bgp.advertise.localPreference".into(),
                    value,
                    (0, u32::MAX.into()),
                    "0-4294967295",
                )
            })
            .transpose()?;
        let mut peers = Vec::new();
        let mut ignored = Vec::new();
        let mut addresses = BTreeSet::new();
        for (index, spec) in self.peers.iter().enumerate() {
            let (peer, selected) = resolve_peer(spec, index, node_asn, node_labels, &mut ignored)?;
            if !addresses.insert(peer.address) {
                return Err(BgpError::DuplicatePeer {
                    address: peer.address,
                });
            }
            if selected {
                peers.push(peer);
            }
        }
        Ok(NodeBgp {
            asn: node_asn,
            asn_source,
            hold_time: Duration::from_secs(hold_time.into()),
            keepalive: Duration::from_secs(keepalive.into()),
            graceful_restart,
            communities,
            local_preference,
            peers,
            ignored,
        })
    }

    /// The node's AS and where it comes from.
    fn node_asn(
        &self,
        spec_asn: u32,
        node_labels: &BTreeMap<String, String>,
    ) -> Result<(u32, AsnSource), BgpError> {
        let Some(key) = &self.node_asn_label else {
            return Ok((spec_asn, AsnSource::Spec));
        };
        selector::validate_label_key(key).map_err(|why| BgpError::NodeAsnLabel {
            key: key.clone(),
            why,
        })?;
        let Some(value) = node_labels.get(key) else {
            return Ok((spec_asn, AsnSource::Spec));
        };
        let asn = asn::parse(value).map_err(|problem| BgpError::NodeAsn {
            key: key.clone(),
            value: value.clone(),
            problem,
        })?;
        Ok((
            asn,
            AsnSource::NodeLabel {
                key: key.clone(),
                value: value.clone(),
            },
        ))
    }
}

/// Peer `spec` (number `index`) resolved for a node of AS `node_asn`, and whether it
/// selects the node; settings that do not apply are pushed to `ignored` (selected peers
/// only).
fn resolve_peer(
    spec: &BgpPeer,
    index: usize,
    node_asn: u32,
    node_labels: &BTreeMap<String, String>,
    ignored: &mut Vec<Ignored>,
) -> Result<(NodePeer, bool), BgpError> {
    let path = format!("spec.routed.bgp.peers[{index}]");
    let field = |name: &str| format!("{path}.{name}");
    let selected =
        selector::matches(spec.node_selector.as_ref(), node_labels).map_err(|source| {
            BgpError::PeerSelector {
                field: path.clone(),
                source,
            }
        })?;
    let address = crate::cidr::parse_addr(&spec.address).map_err(|_| BgpError::PeerAddress {
        field: field("address"),
        value: spec.address.clone(),
    })?;
    if let Some(block) = crate::ownership::reserved_ip(address) {
        return Err(BgpError::PeerAddressReserved {
            field: field("address"),
            address,
            block,
            example: if address.is_ipv6() {
                "fd00:50::1"
            } else {
                "192.168.10.1"
            },
        });
    }
    let peer_asn = asn::check(spec.asn).map_err(|problem| BgpError::Asn {
        field: field("asn"),
        value: spec.asn,
        problem,
    })?;
    let port = ranged(|| field("port"), spec.port.into(), (1, 65535), "1-65535")?;
    let multihop: Option<u8> = spec
        .ebgp_multihop
        .map(|ttl| ranged(|| field("ebgpMultihop"), ttl.into(), (2, 255), "2-255"))
        .transpose()?;
    let session = if peer_asn == node_asn {
        if multihop.is_some() && selected {
            ignored.push(Ignored::EbgpMultihop {
                index,
                address,
                asn: node_asn,
            });
        }
        Session::Internal {
            route_reflector_client: spec.route_reflector_client,
        }
    } else {
        if spec.route_reflector_client && selected {
            ignored.push(Ignored::RouteReflectorClient {
                index,
                address,
                peer_asn,
                node_asn,
            });
        }
        Session::External { multihop }
    };
    let password = spec
        .password
        .as_ref()
        .map(|p| {
            let secret = &p.secret_ref;
            if !crate::naming::is_dns1123_subdomain(&secret.name) {
                return Err(BgpError::SecretRef {
                    field: field("password.secretRef.name"),
                    value: secret.name.clone(),
                    what: "Secret name: use lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit, such as tor-bgp",
                });
            }
            if !password::is_secret_key(&secret.key) {
                return Err(BgpError::SecretRef {
                    field: field("password.secretRef.key"),
                    value: secret.key.clone(),
                    what: "Secret data key: use letters, digits, '-', '_' and '.', such as password",
                });
            }
            Ok(secret.clone())
        })
        .transpose()?;
    let bfd = spec
        .bfd
        .as_ref()
        .map(|bfd| -> Result<_, BgpError> {
            let min_interval = ranged(
                || field("bfd.minIntervalMilliseconds"),
                bfd.min_interval_milliseconds.into(),
                (10, 60_000),
                "10-60000",
            )?;
            let multiplier = ranged(
                || field("bfd.multiplier"),
                bfd.multiplier.into(),
                (1, 255),
                "1-255",
            )?;
            Ok(bfd.enabled.then(|| Bfd {
                min_interval: Duration::from_millis(min_interval),
                multiplier,
            }))
        })
        .transpose()?
        .flatten();
    let peer = NodePeer {
        index,
        address,
        asn: peer_asn,
        port,
        passive: spec.passive,
        session,
        password,
        bfd,
    };
    Ok((peer, selected))
}
