//! The BridgeHosts VIP on the underlay (outside the agent's owned state): carrier, hold with a
//! kernel lifetime, drop.

use super::*;

/// The BridgeHosts VIP on the underlay, as the elector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipLink {
    /// The link is up with carrier (`LOWER_UP`): it can reach the segment.
    pub carrier: bool,
    /// The VIP is one of its addresses.
    pub holds_vip: bool,
}

/// The VIP outside the agent's own links: it sits on the underlay, so it is not part of
/// [`State`] (never observed by a pass, never removed by a diff). Only the BridgeHosts
/// elector ([`crate::elector`]) adds and removes it, always as a /32 with a lifetime, so the
/// kernel drops it by itself when the agent dies without removing it.
impl Netlink {
    /// Carrier of `dev` and whether `vip` is on it.
    pub async fn vip_link(&self, dev: &str, vip: Ipv4Addr) -> Result<VipLink, ApplyError> {
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
        // This link's IPv4 addresses only: the elector asks ten times a second.
        let mut request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.header.index);
        request.message_mut().header.family = AddressFamily::Inet;
        let addresses: Vec<AddressMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| fail(describe_error(&e)))?;
        let holds_vip = addresses.iter().any(|a| {
            a.header.index == link.header.index && ipv4_of(a).map(|(ip, _)| ip) == Some(vip)
        });
        Ok(VipLink { carrier, holds_vip })
    }

    /// Adds `vip`/32 to `dev`, or refreshes it, valid for `lifetime_seconds` from now.
    pub async fn hold_vip(
        &self,
        dev: &str,
        vip: Ipv4Addr,
        lifetime_seconds: u32,
    ) -> Result<(), ApplyError> {
        let op = format!(
            "replace address {vip}/32 dev {dev} valid_lft {lifetime_seconds} preferred_lft {lifetime_seconds}"
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
        let mut request = self
            .handle
            .address()
            .add(index, IpAddr::V4(vip), 32)
            .replace();
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::CacheInfo({
                let mut info = netlink_packet_route::address::CacheInfo::default();
                info.ifa_preferred = lifetime_seconds;
                info.ifa_valid = lifetime_seconds;
                info
            }));
        request
            .execute()
            .await
            .map_err(|e| fail(describe_error(&e)))
    }

    /// Removes `vip`/32 from `dev` (gone already is fine).
    pub async fn drop_vip(&self, dev: &str, vip: Ipv4Addr) -> Result<(), ApplyError> {
        let op = format!("delete address {vip}/32 dev {dev}");
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
        let message = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(link.header.index)
            .address(vip, 32)
            .build();
        match self.handle.address().del(message).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if errno_of(&e) == Errno::EADDRNOTAVAIL => {
                Ok(())
            }
            other => other.map_err(|e| fail(describe_error(&e))),
        }
    }
}
