//! A BridgeHosts gateway's VIPs on the underlay, of either family, as one: the elector holds,
//! drops, probes and announces `vip` and `secondaryVip` together, through the kernel
//! ([`Netlink`]'s VIP calls) and the segment ([`arp`] for IPv4, [`ndp`] for IPv6).
//!
//! Probes and announcements are blocking raw-socket work: they run off the async runtime, one
//! task per VIP, side by side, so a dual-stack gateway takes no longer to probe than an
//! IPv4 one.

use std::net::IpAddr;
use std::time::Duration;

use causeway_crds::ownership::Vips;

use crate::model::{ApplyError, Mac};
use crate::netlink::Netlink;
use crate::{arp, ndp};

/// The underlay link as the elector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnLink {
    /// The link is up with carrier.
    pub carrier: bool,
    /// Every VIP is one of its addresses.
    pub all: bool,
    /// At least one VIP is.
    pub any: bool,
}

/// Carrier of `dev` and which of `vips` it holds.
///
/// # Errors
/// When the link or its addresses cannot be read.
pub async fn read(netlink: &Netlink, dev: &str, vips: Vips) -> Result<OnLink, ApplyError> {
    let mut on = OnLink {
        carrier: true,
        all: true,
        any: false,
    };
    for vip in vips.all() {
        let link = netlink.vip_link(dev, vip).await?;
        on.carrier &= link.carrier;
        on.all &= link.holds_vip;
        on.any |= link.holds_vip;
    }
    Ok(on)
}

/// Adds or refreshes every VIP on `dev` for `lifetime_seconds`.
///
/// # Errors
/// The first VIP the kernel refuses (the others are still tried).
pub async fn hold(
    netlink: &Netlink,
    dev: &str,
    vips: Vips,
    lifetime_seconds: u32,
) -> Result<(), ApplyError> {
    let mut first = Ok(());
    for vip in vips.all() {
        let held = netlink.hold_vip(dev, vip, lifetime_seconds).await;
        if first.is_ok() {
            first = held;
        }
    }
    first
}

/// Removes every VIP from `dev` (those gone already are fine).
///
/// # Errors
/// The first VIP the kernel would not remove (the others are still tried).
pub async fn drop(netlink: &Netlink, dev: &str, vips: Vips) -> Result<(), ApplyError> {
    let mut first = Ok(());
    for vip in vips.all() {
        let dropped = netlink.drop_vip(dev, vip).await;
        if first.is_ok() {
            first = dropped;
        }
    }
    first
}

/// Tells the segment every VIP is now at `dev`'s MAC: gratuitous ARP for IPv4, an
/// unsolicited neighbour advertisement for IPv6.
///
/// # Errors
/// Why a VIP could not be announced, in words.
pub async fn announce(dev: &str, vips: Vips) -> Result<(), String> {
    let tasks: Vec<_> = vips
        .all()
        .map(|vip| {
            let dev = dev.to_owned();
            tokio::task::spawn_blocking(move || match vip {
                IpAddr::V4(v) => arp::announce(&dev, v),
                IpAddr::V6(v) => ndp::announce(&dev, v),
            })
        })
        .collect();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(format!("announcement task failed: {e}")),
        }
    }
    Ok(())
}

/// Whether anyone on `dev`'s segment answers for one of `vips` (ARP probes for IPv4, duplicate
/// address detection probes for IPv6; `probes` each, `gap` apart): the first VIP found
/// answered and the MAC that answered.
///
/// # Errors
/// Why the segment could not be asked, in words.
pub async fn answered(
    dev: &str,
    vips: Vips,
    probes: u32,
    gap: Duration,
) -> Result<Option<(IpAddr, Mac)>, String> {
    let tasks: Vec<_> = vips
        .all()
        .map(|vip| {
            let dev = dev.to_owned();
            let task = tokio::task::spawn_blocking(move || match vip {
                IpAddr::V4(v) => arp::answered(&dev, v, probes, gap),
                IpAddr::V6(v) => ndp::answered(&dev, v, probes, gap),
            });
            (vip, task)
        })
        .collect();
    let mut found = None;
    for (vip, task) in tasks {
        match task.await {
            Ok(Ok(Some(mac))) => found = found.or(Some((vip, mac))),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(format!("probe task failed: {e}")),
        }
    }
    Ok(found)
}

/// How a VIP is asked about on the segment, for messages: `ARP` or `NDP`.
#[must_use]
pub fn protocol(vip: IpAddr) -> &'static str {
    if vip.is_ipv6() { "NDP" } else { "ARP" }
}
