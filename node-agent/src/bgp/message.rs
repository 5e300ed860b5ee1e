//! The messages we send, built from the configuration, and what the peer did put into words
//! (pure).
//!
//! Every message is a NetGauze type; its codec does the encoding. Our OPEN offers IPv4
//! unicast and the 4-octet AS capability (RFC 6793). Our routes carry ORIGIN IGP and NEXT_HOP
//! = the node address; over eBGP the AS_PATH is our AS, over iBGP it is empty and LOCAL_PREF
//! is present (RFC 4271 §5.1.2, §5.1.5). A peer without the 4-octet AS capability gets a
//! 2-octet AS_PATH, with AS_TRANS and an AS4_PATH when our AS does not fit in 16 bits.
//!
//! The words: a session that is not Established reports why in its `message`, so a person
//! (and `kubectl describe`) reads "peer sent NOTIFICATION: OPEN message error: bad peer AS"
//! rather than an event name.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::iana::AS_TRANS;
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress};
use netgauze_bgp_pkt::notification::{
    BgpNotificationMessage, CeaseError, FiniteStateMachineError, MessageHeaderError,
    OpenMessageError, RouteRefreshError, UpdateMessageError,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, LocalPreference, NextHop,
    Origin, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_speaker::events::BgpEvent;
use netgauze_bgp_speaker::fsm::FsmState;
use netgauze_iana::address_family::AddressType;

use super::config::{Advertisement, Identity};
use super::error::BgpError;

/// LOCAL_PREF of our routes over iBGP: the usual default.
pub(crate) const DEFAULT_LOCAL_PREF: u32 = 100;

/// Prefixes per UPDATE: at most 5 octets each, so 400 stay well inside the 4096-octet
/// message limit with the attributes.
const PREFIXES_PER_UPDATE: usize = 400;

/// Our OPEN for a session.
pub(crate) fn open_message(identity: &Identity, hold_time: u16) -> BgpOpenMessage {
    // The 2-octet "My AS" field carries AS_TRANS when our AS needs 4 octets; the capability
    // always carries the real one.
    let my_as = u16::try_from(identity.local_asn).unwrap_or(AS_TRANS);
    let capabilities = vec![
        BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
            AddressType::Ipv4Unicast,
        )),
        BgpCapability::FourOctetAs(FourOctetAsCapability::new(identity.local_asn)),
    ];
    BgpOpenMessage::new(
        my_as,
        hold_time,
        identity.router_id,
        vec![BgpOpenMessageParameter::Capabilities(
            capabilities.into_boxed_slice(),
        )],
    )
}

/// Whether the peer's OPEN offered the 4-octet AS capability (we always do, so this decides).
pub(crate) fn offers_asn4(open: &BgpOpenMessage) -> bool {
    open.capabilities()
        .iter()
        .any(|capability| matches!(capability, BgpCapability::FourOctetAs(_)))
}

/// What shapes our UPDATEs on one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outbound {
    pub local_asn: u32,
    pub ebgp: bool,
    /// Both sides offered the 4-octet AS capability.
    pub asn4: bool,
}

/// The UPDATEs that take the peer from holding `sent` (nothing, on a new session) to holding
/// `wanted`: withdrawals first, then announcements. A new next hop re-announces everything.
pub(crate) fn updates(
    sent: Option<&Advertisement>,
    wanted: &Advertisement,
    outbound: Outbound,
) -> Result<Vec<BgpUpdateMessage>, BgpError> {
    let empty = BTreeSet::new();
    let (held, next_hop_changed) = match sent {
        None => (&empty, true),
        Some(sent) => (&sent.prefixes, sent.next_hop != wanted.next_hop),
    };
    let withdrawn: Vec<Ipv4Net> = held.difference(&wanted.prefixes).copied().collect();
    let announced: Vec<Ipv4Net> = if next_hop_changed {
        wanted.prefixes.iter().copied().collect()
    } else {
        wanted.prefixes.difference(held).copied().collect()
    };

    let mut messages = Vec::new();
    for chunk in withdrawn.chunks(PREFIXES_PER_UPDATE) {
        messages.push(BgpUpdateMessage::new(nlri(chunk)?, vec![], vec![]));
    }
    if !announced.is_empty() {
        let attributes = path_attributes(wanted.next_hop, outbound)?;
        for chunk in announced.chunks(PREFIXES_PER_UPDATE) {
            messages.push(BgpUpdateMessage::new(
                vec![],
                attributes.clone(),
                nlri(chunk)?,
            ));
        }
    }
    Ok(messages)
}

fn nlri(prefixes: &[Ipv4Net]) -> Result<Vec<Ipv4UnicastAddress>, BgpError> {
    prefixes
        .iter()
        .map(|prefix| {
            Ipv4Unicast::from_net(*prefix)
                .map(Ipv4UnicastAddress::new_no_path_id)
                .map_err(|_| BgpError::NotUnicast { prefix: *prefix })
        })
        .collect()
}

/// ORIGIN, AS_PATH (and AS4_PATH when needed), NEXT_HOP and, over iBGP, LOCAL_PREF.
fn path_attributes(next_hop: Ipv4Addr, outbound: Outbound) -> Result<Vec<PathAttribute>, BgpError> {
    // eBGP: the path is our AS (prepended to the empty path of a route we originate); iBGP
    // leaves it empty.
    let path: Vec<u32> = if outbound.ebgp {
        vec![outbound.local_asn]
    } else {
        vec![]
    };
    let sequence = |path: &[u32]| -> Vec<As4PathSegment> {
        if path.is_empty() {
            vec![]
        } else {
            vec![As4PathSegment::new(AsPathSegmentType::AsSequence, path)]
        }
    };
    let mut attributes = vec![attribute(
        "ORIGIN",
        PathAttributeValue::Origin(Origin::IGP),
    )?];
    if outbound.asn4 {
        attributes.push(attribute(
            "AS_PATH",
            PathAttributeValue::AsPath(AsPath::As4PathSegments(sequence(&path).into())),
        )?);
    } else {
        let narrow: Vec<u16> = path
            .iter()
            .map(|asn| u16::try_from(*asn).unwrap_or(AS_TRANS))
            .collect();
        let segments = if narrow.is_empty() {
            vec![]
        } else {
            vec![As2PathSegment::new(AsPathSegmentType::AsSequence, narrow)]
        };
        attributes.push(attribute(
            "AS_PATH",
            PathAttributeValue::AsPath(AsPath::As2PathSegments(segments.into())),
        )?);
        if path.iter().any(|asn| u16::try_from(*asn).is_err()) {
            attributes.push(attribute(
                "AS4_PATH",
                PathAttributeValue::As4Path(As4Path::new(sequence(&path))),
            )?);
        }
    }
    attributes.push(attribute(
        "NEXT_HOP",
        PathAttributeValue::NextHop(NextHop::new(next_hop)),
    )?);
    if !outbound.ebgp {
        attributes.push(attribute(
            "LOCAL_PREF",
            PathAttributeValue::LocalPreference(LocalPreference::new(DEFAULT_LOCAL_PREF)),
        )?);
    }
    Ok(attributes)
}

/// A path attribute with the flags its type requires (well-known attributes transitive,
/// AS4_PATH optional transitive).
pub(crate) fn attribute(
    name: &'static str,
    value: PathAttributeValue,
) -> Result<PathAttribute, BgpError> {
    let optional = value.can_be_optional().unwrap_or(false);
    let transitive = value.can_be_transitive().unwrap_or(true);
    let partial = value.can_be_partial().unwrap_or(false);
    PathAttribute::from(optional, transitive, partial, false, value).map_err(|(_, reason)| {
        BgpError::PathAttribute {
            attribute: name,
            reason,
        }
    })
}

/// The state's name as RFC 4271 §8.2.2 spells it.
pub(crate) fn state_name(state: FsmState) -> &'static str {
    match state {
        FsmState::Idle => "Idle",
        FsmState::Connect => "Connect",
        FsmState::Active => "Active",
        FsmState::OpenSent => "OpenSent",
        FsmState::OpenConfirm => "OpenConfirm",
        FsmState::Established => "Established",
    }
}

/// Why a connection attempt is over, if `event` (after which the state machine is in `state`)
/// ended it. `connect_error` is the TCP connector's own account of a failed connect.
pub(crate) fn attempt_end<A>(
    event: &BgpEvent<A>,
    state: FsmState,
    peer_asn: u32,
    connect_error: Option<String>,
) -> Option<String> {
    let over = matches!(state, FsmState::Idle | FsmState::Active)
        || matches!(event, BgpEvent::TcpConnectionFails);
    if !over {
        return None;
    }
    Some(match event {
        BgpEvent::TcpConnectionFails => {
            connect_error.unwrap_or_else(|| "the peer closed the TCP connection".into())
        }
        BgpEvent::NotifMsg(notification) => {
            format!("peer sent NOTIFICATION: {}", describe_notification(notification))
        }
        BgpEvent::NotifMsgVerErr => {
            "peer sent NOTIFICATION: OPEN message error: unsupported version number".into()
        }
        BgpEvent::BGPOpenMsgErr(OpenMessageError::BadPeerAs { .. }) => format!(
            "the peer's OPEN does not carry the configured peer AS {peer_asn}; sent NOTIFICATION: OPEN message error: bad peer AS"
        ),
        BgpEvent::BGPOpenMsgErr(error) => format!(
            "sent NOTIFICATION: {}",
            describe_notification(&BgpNotificationMessage::OpenMessageError(error.clone()))
        ),
        BgpEvent::BGPHeaderErr(error) => format!(
            "sent NOTIFICATION: {}",
            describe_notification(&BgpNotificationMessage::MessageHeaderError(error.clone()))
        ),
        BgpEvent::HoldTimerExpires => {
            "hold timer expired: nothing heard from the peer within the hold time; sent NOTIFICATION"
                .into()
        }
        BgpEvent::UpdateMsgErr(error) => format!(
            "malformed UPDATE from the peer: {}",
            describe_notification(&BgpNotificationMessage::UpdateMessageError(error.clone()))
        ),
        BgpEvent::BGPOpen(_) | BgpEvent::BGPOpenWithDelayOpenTimer(_) => {
            "unexpected second OPEN from the peer".into()
        }
        other => format!("session ended by BGP event {other}"),
    })
}

/// Why a session whose attempt goes on is not Established yet, when `event` says so.
pub(crate) fn attempt_note<A>(event: &BgpEvent<A>) -> Option<String> {
    match event {
        BgpEvent::ConnectRetryTimerExpires => {
            Some("no answer to the TCP connection request yet; trying again".into())
        }
        _ => None,
    }
}

/// A NOTIFICATION in words: "OPEN message error: bad peer AS".
pub(crate) fn describe_notification(notification: &BgpNotificationMessage) -> String {
    match notification {
        BgpNotificationMessage::MessageHeaderError(error) => {
            let what = match error {
                MessageHeaderError::Unspecific { .. } => "unspecific",
                MessageHeaderError::ConnectionNotSynchronized { .. } => {
                    "connection not synchronized"
                }
                MessageHeaderError::BadMessageLength { .. } => "bad message length",
                MessageHeaderError::BadMessageType { .. } => "bad message type",
            };
            format!("message header error: {what}")
        }
        BgpNotificationMessage::OpenMessageError(error) => {
            let what = match error {
                OpenMessageError::Unspecific { .. } => "unspecific",
                OpenMessageError::UnsupportedVersionNumber { .. } => "unsupported version number",
                OpenMessageError::BadPeerAs { .. } => "bad peer AS",
                OpenMessageError::BadBgpIdentifier { .. } => "bad BGP identifier",
                OpenMessageError::UnsupportedOptionalParameter { .. } => {
                    "unsupported optional parameter"
                }
                OpenMessageError::UnacceptableHoldTime { .. } => "unacceptable hold time",
                OpenMessageError::UnsupportedCapability { .. } => "unsupported capability",
                OpenMessageError::RoleMismatch { .. } => "role mismatch",
            };
            format!("OPEN message error: {what}")
        }
        BgpNotificationMessage::UpdateMessageError(error) => {
            let what = match error {
                UpdateMessageError::Unspecific { .. } => "unspecific",
                UpdateMessageError::MalformedAttributeList { .. } => "malformed attribute list",
                UpdateMessageError::UnrecognizedWellKnownAttribute { .. } => {
                    "unrecognized well-known attribute"
                }
                UpdateMessageError::MissingWellKnownAttribute { .. } => {
                    "missing well-known attribute"
                }
                UpdateMessageError::AttributeFlagsError { .. } => "attribute flags error",
                UpdateMessageError::AttributeLengthError { .. } => "attribute length error",
                UpdateMessageError::InvalidOriginAttribute { .. } => "invalid ORIGIN attribute",
                UpdateMessageError::InvalidNextHopAttribute { .. } => "invalid NEXT_HOP attribute",
                UpdateMessageError::OptionalAttributeError { .. } => "optional attribute error",
                UpdateMessageError::InvalidNetworkField { .. } => "invalid network field",
                UpdateMessageError::MalformedAsPath { .. } => "malformed AS_PATH",
            };
            format!("UPDATE message error: {what}")
        }
        BgpNotificationMessage::HoldTimerExpiredError(_) => "hold timer expired".into(),
        BgpNotificationMessage::FiniteStateMachineError(error) => {
            let what = match error {
                FiniteStateMachineError::Unspecific { .. } => "unspecific",
                FiniteStateMachineError::ReceiveUnexpectedMessageInOpenSentState { .. } => {
                    "unexpected message in OpenSent"
                }
                FiniteStateMachineError::ReceiveUnexpectedMessageInOpenConfirmState { .. } => {
                    "unexpected message in OpenConfirm"
                }
                FiniteStateMachineError::ReceiveUnexpectedMessageInEstablishedState { .. } => {
                    "unexpected message in Established"
                }
            };
            format!("finite state machine error: {what}")
        }
        BgpNotificationMessage::CeaseError(error) => {
            let (what, value): (&str, &[u8]) = match error {
                CeaseError::MaximumNumberOfPrefixesReached { value } => {
                    ("maximum number of prefixes reached", value)
                }
                CeaseError::AdministrativeShutdown { value } => ("administrative shutdown", value),
                CeaseError::PeerDeConfigured { value } => ("peer de-configured", value),
                CeaseError::AdministrativeReset { value } => ("administrative reset", value),
                CeaseError::ConnectionRejected { value } => ("connection rejected", value),
                CeaseError::OtherConfigurationChange { value } => {
                    ("other configuration change", value)
                }
                CeaseError::ConnectionCollisionResolution { value } => {
                    ("connection collision resolution", value)
                }
                CeaseError::OutOfResources { value } => ("out of resources", value),
                CeaseError::HardReset { value } => ("hard reset", value),
                CeaseError::BfdDown { value } => ("BFD down", value),
            };
            let shutdown = matches!(
                error,
                CeaseError::AdministrativeShutdown { .. } | CeaseError::AdministrativeReset { .. }
            );
            match shutdown_communication(value).filter(|_| shutdown) {
                Some(text) => format!("cease: {what}: {text:?}"),
                None => format!("cease: {what}"),
            }
        }
        BgpNotificationMessage::RouteRefreshError(RouteRefreshError::InvalidMessageLength {
            ..
        }) => "ROUTE-REFRESH message error: invalid message length".into(),
    }
}

/// The operator's text in an administrative shutdown or reset (RFC 9003: a length octet,
/// then UTF-8), when there is one.
fn shutdown_communication(value: &[u8]) -> Option<String> {
    let (&length, text) = value.split_first()?;
    if length == 0 || usize::from(length) != text.len() {
        return None;
    }
    std::str::from_utf8(text).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use bytes::BytesMut;
    use netgauze_bgp_pkt::BgpMessage;
    use netgauze_bgp_pkt::codec::BgpCodec;
    use netgauze_bgp_pkt::notification::HoldTimerExpiredError;
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;
    use crate::bgp::config::{BGP_PORT, PeerConfig};

    const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 1);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 2);

    fn identity(local_asn: u32, peer_asn: u32) -> Identity {
        Identity {
            local_asn,
            router_id: NODE,
            peer: PeerConfig {
                address: ROUTER,
                asn: peer_asn,
                port: BGP_PORT,
            },
        }
    }

    fn advertisement(prefixes: &[&str], next_hop: Ipv4Addr) -> Advertisement {
        Advertisement {
            prefixes: prefixes
                .iter()
                .map(|p| p.parse().expect("prefix"))
                .collect(),
            next_hop,
        }
    }

    /// The message through NetGauze's codec and back, as the peer would decode it.
    fn wire_round_trip(message: BgpMessage, asn4: bool) -> BgpMessage {
        let mut codec = BgpCodec::new(asn4);
        let mut buffer = BytesMut::new();
        codec
            .encode(message, &mut buffer)
            .expect("NetGauze encodes our message");
        let (decoded, _ignored) = codec
            .decode(&mut buffer)
            .expect("NetGauze decodes our message")
            .expect("a whole message");
        assert!(buffer.is_empty(), "one message, nothing left over");
        decoded
    }

    /// (withdrawn, announced) prefixes and the AS path of each UPDATE.
    fn summary(updates: &[BgpUpdateMessage]) -> Vec<(Vec<String>, Vec<String>, Option<AsPath>)> {
        updates
            .iter()
            .map(|update| {
                let withdrawn = update
                    .withdraw_routes()
                    .iter()
                    .map(|a| a.network().to_string())
                    .collect();
                let announced = update
                    .nlri()
                    .iter()
                    .map(|a| a.network().to_string())
                    .collect();
                let path = update
                    .path_attributes()
                    .iter()
                    .find_map(|a| match a.value() {
                        PathAttributeValue::AsPath(path) => Some(path.clone()),
                        _ => None,
                    });
                (withdrawn, announced, path)
            })
            .collect()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn open_offers_ipv4_unicast_and_four_octet_as_with_as_trans_for_large_asns() {
        for (local_asn, my_as) in [(65001, 65001), (4_200_000_001, AS_TRANS)] {
            let open = open_message(&identity(local_asn, 65000), 3);
            assert_eq!(open.my_as(), my_as);
            assert_eq!(open.my_asn4(), local_asn);
            assert_eq!(open.hold_time(), 3);
            assert_eq!(open.bgp_id(), NODE);
            assert!(offers_asn4(&open));
            assert!(
                open.capabilities()
                    .contains(&&BgpCapability::MultiProtocolExtensions(
                        MultiProtocolExtensionsCapability::new(AddressType::Ipv4Unicast)
                    ))
            );
            let BgpMessage::Open(decoded) = wire_round_trip(BgpMessage::Open(open.clone()), false)
            else {
                panic!("an OPEN decodes as an OPEN");
            };
            assert_eq!(decoded, open);
        }
    }

    #[test]
    fn updates_send_the_difference_between_what_the_peer_holds_and_what_we_want() {
        let ebgp = Outbound {
            local_asn: 65001,
            ebgp: true,
            asn4: true,
        };
        let ours = AsPath::As4PathSegments(
            vec![As4PathSegment::new(
                AsPathSegmentType::AsSequence,
                vec![65001],
            )]
            .into(),
        );
        let other_hop = Ipv4Addr::new(192, 168, 91, 3);
        let cases: Vec<(&str, Option<Advertisement>, Advertisement, Vec<_>)> = vec![
            (
                "new session: everything",
                None,
                advertisement(&["10.244.1.0/24"], NODE),
                vec![(vec![], strings(&["10.244.1.0/24"]), Some(ours.clone()))],
            ),
            (
                "new session, nothing to say",
                None,
                advertisement(&[], NODE),
                vec![],
            ),
            (
                "unchanged: nothing",
                Some(advertisement(&["10.244.1.0/24"], NODE)),
                advertisement(&["10.244.1.0/24"], NODE),
                vec![],
            ),
            (
                "prefix replaced: withdraw then announce",
                Some(advertisement(&["10.244.1.0/24"], NODE)),
                advertisement(&["10.244.2.0/24"], NODE),
                vec![
                    (strings(&["10.244.1.0/24"]), vec![], None),
                    (vec![], strings(&["10.244.2.0/24"]), Some(ours.clone())),
                ],
            ),
            (
                "prefix added",
                Some(advertisement(&["10.244.1.0/24"], NODE)),
                advertisement(&["10.244.1.0/24", "10.244.3.0/24"], NODE),
                vec![(vec![], strings(&["10.244.3.0/24"]), Some(ours.clone()))],
            ),
            (
                "all removed",
                Some(advertisement(&["10.244.1.0/24", "10.244.3.0/24"], NODE)),
                advertisement(&[], NODE),
                vec![(strings(&["10.244.1.0/24", "10.244.3.0/24"]), vec![], None)],
            ),
            (
                "new next hop: everything again",
                Some(advertisement(&["10.244.1.0/24"], NODE)),
                advertisement(&["10.244.1.0/24"], other_hop),
                vec![(vec![], strings(&["10.244.1.0/24"]), Some(ours.clone()))],
            ),
        ];
        for (name, sent, wanted, expected) in cases {
            let updates = updates(sent.as_ref(), &wanted, ebgp).expect("updates");
            assert_eq!(summary(&updates), expected, "{name}");
            for update in updates {
                let decoded = wire_round_trip(BgpMessage::Update(update.clone()), true);
                assert_eq!(
                    decoded,
                    BgpMessage::Update(update),
                    "{name}: wire round trip"
                );
            }
        }
    }

    #[test]
    fn path_attributes_follow_ebgp_ibgp_and_the_peers_as_width() {
        let as4 = |path: &[u32]| {
            let segments = if path.is_empty() {
                vec![]
            } else {
                vec![As4PathSegment::new(AsPathSegmentType::AsSequence, path)]
            };
            PathAttributeValue::AsPath(AsPath::As4PathSegments(segments.into()))
        };
        let as2 = |path: &[u16]| {
            let segments = if path.is_empty() {
                vec![]
            } else {
                vec![As2PathSegment::new(AsPathSegmentType::AsSequence, path)]
            };
            PathAttributeValue::AsPath(AsPath::As2PathSegments(segments.into()))
        };
        let origin = PathAttributeValue::Origin(Origin::IGP);
        let next_hop = PathAttributeValue::NextHop(NextHop::new(NODE));
        let local_pref = PathAttributeValue::LocalPreference(LocalPreference::new(100));
        let cases = vec![
            (
                "eBGP, 4-octet",
                65001,
                true,
                true,
                vec![origin.clone(), as4(&[65001]), next_hop.clone()],
            ),
            (
                "iBGP: empty path and LOCAL_PREF",
                65001,
                false,
                true,
                vec![
                    origin.clone(),
                    as4(&[]),
                    next_hop.clone(),
                    local_pref.clone(),
                ],
            ),
            (
                "eBGP, 2-octet peer",
                65001,
                true,
                false,
                vec![origin.clone(), as2(&[65001]), next_hop.clone()],
            ),
            (
                "eBGP, 2-octet peer, large AS: AS_TRANS and AS4_PATH",
                4_200_000_001,
                true,
                false,
                vec![
                    origin.clone(),
                    as2(&[AS_TRANS]),
                    PathAttributeValue::As4Path(As4Path::new(vec![As4PathSegment::new(
                        AsPathSegmentType::AsSequence,
                        vec![4_200_000_001],
                    )])),
                    next_hop.clone(),
                ],
            ),
            (
                "iBGP, 2-octet peer",
                65001,
                false,
                false,
                vec![
                    origin.clone(),
                    as2(&[]),
                    next_hop.clone(),
                    local_pref.clone(),
                ],
            ),
        ];
        for (name, local_asn, ebgp, asn4, expected) in cases {
            let outbound = Outbound {
                local_asn,
                ebgp,
                asn4,
            };
            let attributes = path_attributes(NODE, outbound).expect("attributes");
            let values: Vec<PathAttributeValue> =
                attributes.iter().map(|a| a.value().clone()).collect();
            assert_eq!(values, expected, "{name}");
            let update = BgpUpdateMessage::new(
                vec![],
                attributes,
                nlri(&["10.244.1.0/24".parse().expect("prefix")]).expect("nlri"),
            );
            let decoded = wire_round_trip(BgpMessage::Update(update.clone()), asn4);
            assert_eq!(
                decoded,
                BgpMessage::Update(update),
                "{name}: wire round trip"
            );
        }
    }

    #[test]
    fn a_multicast_prefix_is_refused_with_its_name() {
        let error = updates(
            None,
            &advertisement(&["224.0.0.0/24"], NODE),
            Outbound {
                local_asn: 65001,
                ebgp: true,
                asn4: true,
            },
        )
        .expect_err("multicast is not unicast");
        assert!(error.to_string().contains("224.0.0.0/24"), "{error}");
    }

    #[test]
    fn many_prefixes_are_split_across_updates() {
        let prefixes: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        let updates = updates(
            None,
            &advertisement(&prefixes, NODE),
            Outbound {
                local_asn: 65001,
                ebgp: true,
                asn4: true,
            },
        )
        .expect("updates");
        let sizes: Vec<usize> = updates.iter().map(|u| u.nlri().len()).collect();
        assert_eq!(sizes, [400, 400, 200]);
        for update in updates {
            wire_round_trip(BgpMessage::Update(update), true);
        }
    }

    #[test]
    fn notifications_read_as_words() {
        let empty = || Box::new([]) as Box<[u8]>;
        let cases = vec![
            (
                BgpNotificationMessage::OpenMessageError(OpenMessageError::BadPeerAs {
                    value: empty(),
                }),
                "OPEN message error: bad peer AS",
            ),
            (
                BgpNotificationMessage::OpenMessageError(OpenMessageError::UnacceptableHoldTime {
                    value: empty(),
                }),
                "OPEN message error: unacceptable hold time",
            ),
            (
                BgpNotificationMessage::HoldTimerExpiredError(HoldTimerExpiredError::Unspecific {
                    sub_code: 0,
                    value: empty(),
                }),
                "hold timer expired",
            ),
            (
                BgpNotificationMessage::CeaseError(CeaseError::PeerDeConfigured { value: empty() }),
                "cease: peer de-configured",
            ),
            (
                BgpNotificationMessage::CeaseError(CeaseError::AdministrativeShutdown {
                    value: empty(),
                }),
                "cease: administrative shutdown",
            ),
            (
                BgpNotificationMessage::CeaseError(CeaseError::AdministrativeShutdown {
                    value: b"\x0bmaintenance".to_vec().into(),
                }),
                "cease: administrative shutdown: \"maintenance\"",
            ),
            (
                BgpNotificationMessage::CeaseError(CeaseError::AdministrativeShutdown {
                    value: b"\x09garbled".to_vec().into(),
                }),
                "cease: administrative shutdown",
            ),
            (
                BgpNotificationMessage::UpdateMessageError(UpdateMessageError::MalformedAsPath {
                    value: empty(),
                }),
                "UPDATE message error: malformed AS_PATH",
            ),
            (
                BgpNotificationMessage::MessageHeaderError(
                    MessageHeaderError::ConnectionNotSynchronized { value: empty() },
                ),
                "message header error: connection not synchronized",
            ),
        ];
        for (notification, expected) in cases {
            assert_eq!(describe_notification(&notification), expected);
        }
    }

    #[test]
    fn an_attempt_ends_on_failure_and_says_why() {
        let empty = || Box::new([]) as Box<[u8]>;
        let refused = || Some("cannot connect to 192.168.91.2:179: Connection refused".to_owned());
        // (event, state after it, the connector's error, the reason expected)
        type Case = (
            BgpEvent<SocketAddr>,
            FsmState,
            Option<String>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (BgpEvent::ManualStart, FsmState::Connect, None, None),
            (
                BgpEvent::ConnectRetryTimerExpires,
                FsmState::Connect,
                None,
                None,
            ),
            (BgpEvent::KeepAliveMsg, FsmState::Established, None, None),
            (
                BgpEvent::TcpConnectionFails,
                FsmState::Connect,
                refused(),
                Some("cannot connect to 192.168.91.2:179: Connection refused"),
            ),
            (
                BgpEvent::TcpConnectionFails,
                FsmState::Idle,
                None,
                Some("the peer closed the TCP connection"),
            ),
            (
                BgpEvent::TcpConnectionFails,
                FsmState::Active,
                None,
                Some("the peer closed the TCP connection"),
            ),
            (
                BgpEvent::NotifMsg(BgpNotificationMessage::OpenMessageError(
                    OpenMessageError::BadPeerAs { value: empty() },
                )),
                FsmState::Idle,
                None,
                Some("peer sent NOTIFICATION: OPEN message error: bad peer AS"),
            ),
            (
                BgpEvent::BGPOpenMsgErr(OpenMessageError::BadPeerAs { value: empty() }),
                FsmState::Idle,
                None,
                Some(
                    "the peer's OPEN does not carry the configured peer AS 65000; sent NOTIFICATION: OPEN message error: bad peer AS",
                ),
            ),
            (
                BgpEvent::HoldTimerExpires,
                FsmState::Idle,
                None,
                Some(
                    "hold timer expired: nothing heard from the peer within the hold time; sent NOTIFICATION",
                ),
            ),
        ];
        for (event, state, connect_error, expected) in cases {
            assert_eq!(
                attempt_end(&event, state, 65000, connect_error).as_deref(),
                expected,
                "{event} in {state}"
            );
        }
    }

    #[test]
    fn an_unanswered_connection_request_is_noted_while_the_attempt_goes_on() {
        let cases: Vec<(BgpEvent<SocketAddr>, Option<&str>)> = vec![
            (
                BgpEvent::ConnectRetryTimerExpires,
                Some("no answer to the TCP connection request yet; trying again"),
            ),
            (BgpEvent::ManualStart, None),
            (BgpEvent::KeepAliveMsg, None),
        ];
        for (event, expected) in cases {
            assert_eq!(attempt_note(&event).as_deref(), expected, "{event}");
        }
    }

    #[test]
    fn states_are_named_as_in_rfc_4271() {
        for (state, name) in [
            (FsmState::Idle, "Idle"),
            (FsmState::Connect, "Connect"),
            (FsmState::Active, "Active"),
            (FsmState::OpenSent, "OpenSent"),
            (FsmState::OpenConfirm, "OpenConfirm"),
            (FsmState::Established, "Established"),
        ] {
            assert_eq!(state_name(state), name);
        }
    }
}
