//! The BridgeHosts VIP on the underlay (outside the agent's owned state): carrier, hold with a
//! kernel lifetime, drop. Either family: an IPv4 VIP is a /32, an IPv6 VIP a /128 without
//! the kernel's duplicate address detection (`nodad`).

use super::*;

/// The BridgeHosts VIP on the underlay, as the elector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipLink {
    /// The link is up with carrier (`LOWER_UP`): it can reach the segment.
    pub carrier: bool,
    /// The VIP is one of its addresses.
    pub holds_vip: bool,
}

/// The host prefix length of `vip`: /32 or /128.
fn host_prefix(vip: IpAddr) -> u8 {
    match vip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The VIP outside the agent's own links: it sits on the underlay, so it is not part of
/// [`State`] (never observed by a pass, never removed by a diff). Only the BridgeHosts
/// elector ([`crate::elector`]) adds and removes it, always as a host address (/32 or /128)
/// with a lifetime, so the kernel drops it by itself when the agent dies without removing it.
///
/// An IPv6 VIP is added with `nodad`: the elector runs its own duplicate detection (NDP
/// probes, [`crate::ndp`]) before it takes the VIP, and a tentative address (the second or
/// so of the kernel's DAD) could neither be answered for nor sent from.
impl Netlink {
    /// Carrier of `dev` and whether `vip` is on it.
    pub async fn vip_link(&self, dev: &str, vip: IpAddr) -> Result<VipLink, ApplyError> {
        let fail = |message: String| ApplyError {
            op: format!("read link {dev} and its addresses"),
            message,
        };
        let link = self
            .find_link(dev)
            .await
            .map_err(|e| fail(describe_error(&e)))?
            .ok_or_else(|| fail(format!("No such device (no link named {dev})")))?;
        let flags = link.header.flags;
        let carrier = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
        // This link's addresses of the VIP's family only: the elector asks ten times a second.
        let mut request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.header.index);
        request.message_mut().header.family = match vip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let addresses: Vec<AddressMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| fail(describe_error(&e)))?;
        let holds_vip = addresses.iter().any(|a| {
            a.header.index == link.header.index
                && match vip {
                    IpAddr::V4(vip) => ipv4_of(a).map(|(ip, _)| ip) == Some(vip),
                    IpAddr::V6(vip) => ipv6_of(a).map(|(ip, _)| ip) == Some(vip),
                }
        });
        Ok(VipLink { carrier, holds_vip })
    }

    /// Adds `vip` (/32 or /128, an IPv6 one `nodad`) to `dev`, or refreshes it, valid for
    /// `lifetime_seconds` from now.
    pub async fn hold_vip(
        &self,
        dev: &str,
        vip: IpAddr,
        lifetime_seconds: u32,
    ) -> Result<(), ApplyError> {
        let len = host_prefix(vip);
        let nodad = if vip.is_ipv6() { " nodad" } else { "" };
        let op = format!(
            "replace address {vip}/{len} dev {dev} valid_lft {lifetime_seconds} preferred_lft {lifetime_seconds}{nodad}"
        );
        let fail = |message: String| ApplyError {
            op: op.clone(),
            message,
        };
        let index = self
            .find_link(dev)
            .await
            .map_err(|e| fail(describe_error(&e)))?
            .ok_or_else(|| fail(format!("No such device (no link named {dev})")))?
            .header
            .index;
        let mut request = self.handle.address().add(index, vip, len).replace();
        let message = request.message_mut();
        message.attributes.push(AddressAttribute::CacheInfo({
            let mut info = netlink_packet_route::address::CacheInfo::default();
            info.ifa_preferred = lifetime_seconds;
            info.ifa_valid = lifetime_seconds;
            info
        }));
        if vip.is_ipv6() {
            // In the header's byte (older kernels) and IFA_FLAGS (which the kernel prefers).
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .map_err(|e| fail(describe_error(&e)))
    }

    /// Removes `vip` (/32 or /128) from `dev` (gone already is fine).
    pub async fn drop_vip(&self, dev: &str, vip: IpAddr) -> Result<(), ApplyError> {
        let op = format!("delete address {vip}/{} dev {dev}", host_prefix(vip));
        let fail = |message: String| ApplyError {
            op: op.clone(),
            message,
        };
        let Some(link) = self
            .find_link(dev)
            .await
            .map_err(|e| fail(describe_error(&e)))?
        else {
            return Ok(());
        };
        let message = match vip {
            IpAddr::V4(vip) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(link.header.index)
                .address(vip, 32)
                .build(),
            IpAddr::V6(vip) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(link.header.index)
                .address(vip, 128)
                .build(),
        };
        match self.handle.address().del(message).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if errno_of(&e) == Errno::EADDRNOTAVAIL => {
                Ok(())
            }
            other => other.map_err(|e| fail(describe_error(&e))),
        }
    }
}
