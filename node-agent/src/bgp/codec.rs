//! The codec our sessions hand NetGauze: its own `BgpCodec` for every byte, with a lenient
//! parsing context and two adjustments to decoded UPDATEs that work around NetGauze 0.13.
//!
//! NetGauze's connection checks every received UPDATE for its well-known attributes
//! (`handle_update_message` in netgauze-bgp-speaker 0.13), and gets two things wrong that
//! break a session with any ordinary router (found against BIRD 2):
//! - it stops looking once it has seen ORIGIN and AS_PATH, so a NEXT_HOP that follows them —
//!   the order RFC 4271 §5 asks senders to use — counts as missing, and the session is reset
//!   on the router's first UPDATE;
//! - it asks for ORIGIN and AS_PATH in an UPDATE that only withdraws routes, which carries no
//!   attributes (RFC 4271 §5 requires them only with NLRI), so the router's first
//!   withdrawal resets the session.
//!
//! [`adjust`] therefore puts every other attribute before ORIGIN, AS_PATH and AS4_PATH (order
//! means nothing to a receiver), and gives an UPDATE that announces nothing a placeholder
//! ORIGIN and empty AS_PATH (attributes apply to announced routes only, and it has none).
//! Nothing is re-encoded: this only changes what NetGauze's check, and then our RIB, read.
//!
//! The parsing context follows RFC 5492 §5 (a capability that cannot be parsed is ignored,
//! not fatal) and RFC 7606 (a malformed attribute is reported with the UPDATE, which NetGauze
//! then marks treat-as-withdraw, instead of failing the whole message and the session).

use std::collections::HashMap;

use bytes::BytesMut;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::codec::{BgpCodec, BgpCodecDecoderError, BgpCodecInitializer};
use netgauze_bgp_pkt::path_attribute::{AsPath, Origin, PathAttributeValue};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::{BgpParsingContext, BgpParsingIgnoredErrors};
use netgauze_bgp_pkt::wire::serializer::BgpMessageWritingError;
use tokio_util::codec::{Decoder, Encoder};

use super::message::attribute;

/// NetGauze's `BgpCodec`, adjusted as the module says.
#[derive(Debug)]
pub(crate) struct Codec {
    inner: BgpCodec,
}

impl Default for Codec {
    fn default() -> Self {
        // 2-octet AS numbers until both OPENs have offered the 4-octet capability (the inner
        // codec watches the OPENs); no add-path, no multiple labels; non-unicast NLRI still
        // refused; capability and attribute errors reported instead of fatal.
        let context = BgpParsingContext::new(
            false,
            HashMap::new(),
            HashMap::new(),
            true,
            true,
            false,
            false,
        );
        Self {
            inner: BgpCodec::new_from_ctx(false, context),
        }
    }
}

impl<Peer> BgpCodecInitializer<Peer> for Codec {
    fn new(_peer: &Peer) -> Self {
        Self::default()
    }
}

impl Decoder for Codec {
    type Item = (BgpMessage, BgpParsingIgnoredErrors);
    type Error = BgpCodecDecoderError;

    fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        Ok(self
            .inner
            .decode(buffer)?
            .map(|(message, ignored)| (adjust(message), ignored)))
    }
}

impl Encoder<BgpMessage> for Codec {
    type Error = BgpMessageWritingError;

    fn encode(&mut self, message: BgpMessage, buffer: &mut BytesMut) -> Result<(), Self::Error> {
        self.inner.encode(message, buffer)
    }
}

/// A received message as NetGauze's UPDATE check can take it (see the module header).
pub(crate) fn adjust(message: BgpMessage) -> BgpMessage {
    match message {
        BgpMessage::Update(update) if update.end_of_rib().is_none() => {
            BgpMessage::Update(adjust_update(&update))
        }
        other => other,
    }
}

fn adjust_update(update: &BgpUpdateMessage) -> BgpUpdateMessage {
    let is_path = |value: &PathAttributeValue| {
        matches!(
            value,
            PathAttributeValue::Origin(_)
                | PathAttributeValue::AsPath(_)
                | PathAttributeValue::As4Path(_)
        )
    };
    let (mut path, mut attributes): (Vec<_>, Vec<_>) = update
        .path_attributes()
        .iter()
        .cloned()
        .partition(|attribute| is_path(attribute.value()));
    let announces = !update.nlri().is_empty()
        || attributes
            .iter()
            .any(|attribute| matches!(attribute.value(), PathAttributeValue::MpReach(_)));
    if !announces {
        let has = |wanted: fn(&PathAttributeValue) -> bool| {
            path.iter().any(|attribute| wanted(attribute.value()))
        };
        let placeholders = [
            (!has(|v| matches!(v, PathAttributeValue::Origin(_))))
                .then(|| attribute("ORIGIN", PathAttributeValue::Origin(Origin::IGP))),
            (!has(|v| matches!(v, PathAttributeValue::AsPath(_)))).then(|| {
                attribute(
                    "AS_PATH",
                    PathAttributeValue::AsPath(AsPath::As4PathSegments(Box::new([]))),
                )
            }),
        ];
        // The flags come from the attribute types themselves, so building cannot fail.
        path.extend(placeholders.into_iter().flatten().filter_map(Result::ok));
    }
    attributes.extend(path);
    BgpUpdateMessage::new(
        update.withdraw_routes().to_vec(),
        attributes,
        update.nlri().to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress};
    use netgauze_bgp_pkt::path_attribute::{
        As4PathSegment, AsPathSegmentType, MpReach, MpUnreach, NextHop, PathAttribute,
    };

    use super::*;

    fn nlri(prefix: &str) -> Vec<Ipv4UnicastAddress> {
        vec![Ipv4UnicastAddress::new_no_path_id(
            Ipv4Unicast::from_net(prefix.parse().expect("prefix")).expect("unicast"),
        )]
    }

    fn attr(value: PathAttributeValue) -> PathAttribute {
        attribute("test", value).expect("valid flags")
    }

    fn origin() -> PathAttribute {
        attr(PathAttributeValue::Origin(Origin::IGP))
    }

    fn as_path() -> PathAttribute {
        attr(PathAttributeValue::AsPath(AsPath::As4PathSegments(
            vec![As4PathSegment::new(
                AsPathSegmentType::AsSequence,
                vec![65000],
            )]
            .into(),
        )))
    }

    fn next_hop() -> PathAttribute {
        attr(PathAttributeValue::NextHop(NextHop::new(Ipv4Addr::new(
            192, 168, 91, 2,
        ))))
    }

    fn kinds(message: &BgpMessage) -> Vec<&'static str> {
        let BgpMessage::Update(update) = message else {
            panic!("an UPDATE")
        };
        update
            .path_attributes()
            .iter()
            .map(|attribute| match attribute.value() {
                PathAttributeValue::Origin(_) => "ORIGIN",
                PathAttributeValue::AsPath(_) => "AS_PATH",
                PathAttributeValue::NextHop(_) => "NEXT_HOP",
                PathAttributeValue::MpReach(_) => "MP_REACH",
                PathAttributeValue::MpUnreach(_) => "MP_UNREACH",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn updates_are_reordered_or_completed_so_netgauze_reads_them_right() {
        let mp_reach = attr(PathAttributeValue::MpReach(MpReach::Ipv4Unicast {
            next_hop: IpAddr::V4(Ipv4Addr::new(192, 168, 91, 2)),
            next_hop_local: None,
            nlri: nlri("10.250.1.0/24").into(),
        }));
        let mp_unreach = attr(PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast {
            nlri: nlri("10.250.1.0/24").into(),
        }));
        let cases: Vec<(&str, BgpUpdateMessage, Vec<&str>)> = vec![
            (
                "announcement in RFC order: NEXT_HOP moves first",
                BgpUpdateMessage::new(
                    vec![],
                    vec![origin(), as_path(), next_hop()],
                    nlri("10.250.9.0/24"),
                ),
                vec!["NEXT_HOP", "ORIGIN", "AS_PATH"],
            ),
            (
                "MP announcement: MP_REACH moves first",
                BgpUpdateMessage::new(vec![], vec![origin(), as_path(), mp_reach], vec![]),
                vec!["MP_REACH", "ORIGIN", "AS_PATH"],
            ),
            (
                "withdrawal only: placeholders added",
                BgpUpdateMessage::new(nlri("10.250.9.0/24"), vec![], vec![]),
                vec!["ORIGIN", "AS_PATH"],
            ),
            (
                "MP withdrawal only: placeholders added after it",
                BgpUpdateMessage::new(vec![], vec![mp_unreach], vec![]),
                vec!["MP_UNREACH", "ORIGIN", "AS_PATH"],
            ),
            (
                "End-of-RIB: untouched",
                BgpUpdateMessage::new(vec![], vec![], vec![]),
                vec![],
            ),
        ];
        for (name, update, expected) in cases {
            let adjusted = adjust(BgpMessage::Update(update.clone()));
            assert_eq!(kinds(&adjusted), expected, "{name}");
            let BgpMessage::Update(adjusted) = adjusted else {
                panic!("{name}: still an UPDATE")
            };
            assert_eq!(adjusted.nlri(), update.nlri(), "{name}: same NLRI");
            assert_eq!(
                adjusted.withdraw_routes(),
                update.withdraw_routes(),
                "{name}: same withdrawals"
            );
        }
    }

    #[test]
    fn decoding_goes_through_netgauze_and_the_adjustment() {
        // Encoded by NetGauze in RFC order, as a router sends it.
        let update = BgpUpdateMessage::new(
            vec![],
            vec![origin(), as_path(), next_hop()],
            nlri("10.250.9.0/24"),
        );
        let mut buffer = BytesMut::new();
        BgpCodec::new(true)
            .encode(BgpMessage::Update(update), &mut buffer)
            .expect("encode");
        let mut codec = Codec {
            inner: BgpCodec::new(true),
        };
        let (decoded, ignored) = codec
            .decode(&mut buffer)
            .expect("decode")
            .expect("a whole message");
        assert_eq!(kinds(&decoded), ["NEXT_HOP", "ORIGIN", "AS_PATH"]);
        assert!(ignored.path_attr_errors().is_empty());
    }
}
