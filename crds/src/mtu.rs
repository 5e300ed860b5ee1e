//! The pod MTU each mode needs: the agent writes it into the CNI config and onto the pod
//! bridge; the agent reports it in `NodeSubnet.status.effectiveMtu`, the operator rolls it up
//! into `PodNetwork.status.effectiveMtu`.
//!
//! VXLAN wraps every pod packet in an outer Ethernet (14 bytes), IPv4 (20), UDP (8) and VXLAN
//! (8) header: 50 bytes that must fit in the underlay MTU, or large packets are dropped
//! (TCP connections that "hang after the handshake" are the classic symptom). Flat and Routed
//! modes forward pod packets unchanged, so pods can use the full underlay MTU.

/// Bytes VXLAN over IPv4 adds to each packet (outer Ethernet + IPv4 + UDP + VXLAN headers).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Bytes VXLAN over IPv6 adds to each packet (the outer IPv6 header is 40 bytes, not 20).
pub const VXLAN6_OVERHEAD: u32 = 70;

/// The smallest MTU the API accepts (the IPv4 minimum datagram every host must accept).
pub const MIN_MTU: u32 = 576;

/// The largest MTU the API accepts (common jumbo-frame limit of switches and NICs).
pub const MAX_MTU: u32 = 9216;

/// The MTU pods get on a node whose underlay interface has `underlay_mtu`; `encapsulated`:
/// the mode wraps pod packets in VXLAN (Overlay) over IPv4, adding [`VXLAN_OVERHEAD`] (see
/// [`effective_mtu_over`] for an IPv6 underlay).
///
/// An explicit `spec.mtu` always wins (the operator trusts the platform engineer, e.g. when
/// the underlay itself is a tunnel the node cannot see). Otherwise Overlay networks subtract
/// [`VXLAN_OVERHEAD`] and Flat and Routed networks use the underlay MTU unchanged. Overlay with
/// `crossSubnet` still subtracts the overhead: pods cannot know which peers are reached
/// without encapsulation, so one MTU must fit the encapsulated path.
#[must_use]
pub fn effective_mtu(encapsulated: bool, explicit: Option<i32>, underlay_mtu: u32) -> u32 {
    let overhead = if encapsulated { VXLAN_OVERHEAD } else { 0 };
    effective_mtu_over(overhead, explicit, underlay_mtu)
}

/// [`effective_mtu`] with the encapsulation's `overhead` in bytes: 0 (Flat, Routed),
/// [`VXLAN_OVERHEAD`] (VXLAN over IPv4) or [`VXLAN6_OVERHEAD`] (VXLAN over IPv6).
#[must_use]
pub fn effective_mtu_over(overhead: u32, explicit: Option<i32>, underlay_mtu: u32) -> u32 {
    if let Some(mtu) = explicit.and_then(|m| u32::try_from(m).ok()) {
        return mtu;
    }
    underlay_mtu.saturating_sub(overhead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_mtu_subtracts_vxlan_overhead_only_for_overlay_and_explicit_mtu_wins() {
        let (overlay, flat, routed) = (true, false, false);
        let cases: &[(bool, Option<i32>, u32, u32)] = &[
            (overlay, None, 1500, 1450),
            (overlay, None, 9000, 8950),
            (flat, None, 1500, 1500),
            (routed, None, 9000, 9000),
            (overlay, Some(1400), 1500, 1400),
            (flat, Some(1280), 1500, 1280),
            (overlay, None, 40, 0),
            (routed, Some(-1), 1500, 1500),
        ];
        for (encapsulated, explicit, underlay, want) in cases {
            assert_eq!(
                effective_mtu(*encapsulated, *explicit, *underlay),
                *want,
                "encapsulated={encapsulated} explicit={explicit:?} underlay={underlay}"
            );
        }
    }
}
