//! Who owns an address. Causeway programs routes, neighbours and VIPs for addresses that users
//! write into OverlayGateways; an address that already belongs to someone (a node, the API
//! server, a router, another client) would be captured: every node would send that owner's
//! traffic into the tunnel or to the VIP holder. The operator (status) and the agents (what
//! they program) check the same addresses here, with the same messages, so an agent never
//! programs what the operator refuses; agents add what only they can see (their routers).
//!
//! The static rules (IPv4, unicast, not loopback, multicast, link-local...) are admission's,
//! in the CRDs' CEL; this module checks again what it needs to stay safe for objects written
//! before those rules existed.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use kube::ResourceExt;

use crate::conditions::reasons;
use crate::v1alpha1::{
    BridgeHostsSpec, GatewayClient, GatewayStrategy, NodeSubnet, OverlayGateway,
};

/// Addresses that belong to someone, with the owner in words for messages
/// (`node node-a's address`, `the API server`, `router 192.168.50.1`).
#[derive(Clone, Debug, Default)]
pub struct Owners {
    by_address: BTreeMap<IpAddr, String>,
}

impl Owners {
    /// No owners.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `owner` for `address`; the first owner recorded keeps it.
    pub fn claim(&mut self, address: impl Into<IpAddr>, owner: impl Into<String>) {
        self.by_address
            .entry(address.into())
            .or_insert_with(|| owner.into());
    }

    /// Who owns `address`, if anyone.
    #[must_use]
    pub fn owner(&self, address: impl Into<IpAddr>) -> Option<&str> {
        self.by_address.get(&address.into()).map(String::as_str)
    }
}

/// The owners every check in a network starts from: each node's addresses of both families
/// (from every NodeSubnet, whatever its network: a node of another network is still a machine
/// the nodes must reach), the API servers' addresses, and the clients of the ClientJoin gateways of
/// `network` created before `gateway` (older first, then by name: the earlier gateway keeps
/// an address both list). Agents add what only they see (their routers) with
/// [`Owners::claim`].
#[must_use]
pub fn network_owners<'a>(
    network: &str,
    gateway: Option<&OverlayGateway>,
    subnets: impl IntoIterator<Item = &'a NodeSubnet>,
    gateways: impl IntoIterator<Item = &'a OverlayGateway>,
    api_servers: impl IntoIterator<Item = IpAddr>,
) -> Owners {
    let mut owners = Owners::new();
    for s in subnets {
        if let Ok(parsed) = s.spec.parse_addresses() {
            for address in [Some(parsed.node_address), parsed.secondary_node_address]
                .into_iter()
                .flatten()
            {
                owners.claim(address, format!("node {}'s address", s.spec.node_name));
            }
        }
    }
    for a in api_servers {
        owners.claim(a, "the API server's address");
    }
    let order = |g: &OverlayGateway| (g.creation_timestamp().map(|t| t.0), g.name_any());
    let mut earlier: Vec<&OverlayGateway> = gateways
        .into_iter()
        .filter(|g| g.spec.network == network && g.spec.strategy == GatewayStrategy::ClientJoin)
        .filter(|g| g.metadata.deletion_timestamp.is_none())
        .filter(|g| gateway.is_none_or(|me| order(g) < order(me)))
        .collect();
    earlier.sort_by_key(|g| order(g));
    for g in earlier {
        for c in g.spec.client_join.iter().flat_map(|j| &j.clients) {
            let gw = g.name_any();
            if let Ok(a) = c.address.trim().parse::<IpAddr>() {
                owners.claim(
                    a,
                    format!("client {}'s address (OverlayGateway {gw})", c.name),
                );
            }
            let overlays = [
                Some(&c.overlay_address),
                c.secondary_overlay_address.as_ref(),
            ];
            for a in overlays
                .into_iter()
                .flatten()
                .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            {
                owners.claim(
                    a,
                    format!("client {}'s overlay address (OverlayGateway {gw})", c.name),
                );
            }
        }
    }
    owners
}

/// Why an address cannot be used, as a condition reason and a sentence naming the field, the
/// owner and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// A reason of [`crate::conditions::reasons`].
    pub reason: &'static str,
    /// The sentence for the condition message (or the agent's status), ending with the fix.
    pub message: String,
}

/// A ClientJoin client whose addresses passed [`check_client`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedClient {
    /// Its underlay address: the tunnel endpoint.
    pub address: IpAddr,
    /// Its address inside the overlay, which every node routes into the tunnel: of the
    /// family of the network's `cidr`.
    pub overlay: IpAddr,
    /// Its overlay address of the other family, on a dual-stack network.
    pub secondary_overlay: Option<IpAddr>,
}

impl CheckedClient {
    /// Its overlay addresses, `overlayAddress` first.
    pub fn overlays(&self) -> impl Iterator<Item = IpAddr> + use<> {
        [Some(self.overlay), self.secondary_overlay]
            .into_iter()
            .flatten()
    }
}

/// The range an address is in that no host can own, if any.
#[must_use]
pub fn reserved(address: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = address.octets();
    match a {
        0 => Some("0.0.0.0/8 (this network)"),
        127 => Some("loopback 127.0.0.0/8"),
        169 if b == 254 => Some("link-local 169.254.0.0/16"),
        224..=239 => Some("multicast 224.0.0.0/4"),
        240..=255 => Some("reserved 240.0.0.0/4 (with broadcast 255.255.255.255)"),
        _ => None,
    }
}

/// The reserved block (as [`crate::v1alpha1::address::RESERVED`] and
/// [`crate::v1alpha1::address::RESERVED_V6`] name them) holding `address`, of either family.
#[must_use]
pub fn reserved_ip(address: std::net::IpAddr) -> Option<&'static str> {
    match address {
        std::net::IpAddr::V4(a) => reserved(a),
        std::net::IpAddr::V6(a) => {
            let first = a.segments()[0];
            if a.is_loopback() {
                Some("loopback ::1/128")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local fe80::/10")
            } else if first & 0xff00 == 0xff00 {
                Some("multicast ff00::/8")
            } else if first & 0xff00 == 0 {
                Some("reserved ::/8 (unspecified, IPv4-mapped, IPv4-compatible)")
            } else {
                None
            }
        }
    }
}

/// Checks client `index` of a ClientJoin gateway against its network's pod `ranges`
/// (`cidr` first): every address parses and none is reserved; `overlayAddress` is of the
/// family of the first range and `secondaryOverlayAddress` (if set) of the second; the overlay
/// addresses are outside the pod ranges, differ from the client's own address and belong to
/// nobody in `owners`; and the underlay address is nobody else's.
///
/// # Errors
/// The first problem, with reason `InvalidSpec`, `ClientCidrOverlapsPods` or `AddressInUse`.
pub fn check_client(
    index: usize,
    client: &GatewayClient,
    ranges: &[IpNet],
    owners: &Owners,
) -> Result<CheckedClient, Refusal> {
    let field = format!("spec.clientJoin.clients[{index}] ({})", client.name);
    let invalid = |message: String| Refusal {
        reason: reasons::INVALID_SPEC,
        message,
    };
    let parse = |value: &str, what: &str, example: &str| {
        value.trim().parse::<IpAddr>().map_err(|_| {
            invalid(format!(
                "{field}: {what} {value:?} is not an IP address; write one such as {example}."
            ))
        })
    };
    let address = parse(&client.address, "address", "192.168.50.10")?;
    let mut overlays = vec![(
        "overlayAddress",
        "cidr",
        parse(&client.overlay_address, "overlayAddress", "10.250.0.10")?,
    )];
    if let Some(second) = &client.secondary_overlay_address {
        overlays.push((
            "secondaryOverlayAddress",
            "secondaryCidr",
            parse(second, "secondaryOverlayAddress", "fd00:250::10")?,
        ));
    }
    for (what, value) in [("address", address)]
        .into_iter()
        .chain(overlays.iter().map(|(w, _, v)| (*w, *v)))
    {
        if let Some(range) = reserved_ip(value) {
            return Err(invalid(format!(
                "{field}: {what} {value} is in {range}, which no host can own; use a unicast address of the client."
            )));
        }
    }
    for (i, (what, range_field, overlay)) in overlays.iter().copied().enumerate() {
        let Some(range) = ranges.get(i) else {
            return Err(invalid(format!(
                "{field}: {what} {overlay} is set, and the PodNetwork has no {range_field}; remove {what}."
            )));
        };
        if overlay.is_ipv6() != range.addr().is_ipv6() {
            let family = if range.addr().is_ipv6() {
                "IPv6"
            } else {
                "IPv4"
            };
            return Err(invalid(format!(
                "{field}: {what} {overlay} is not of the family of the PodNetwork's {range_field} {range}; pods reach the client over that family, so write an {family} address."
            )));
        }
        if let Some(pods) = ranges.iter().find(|r| r.contains(&overlay)) {
            return Err(Refusal {
                reason: reasons::CLIENT_CIDR_OVERLAPS_PODS,
                message: format!(
                    "{field}: {what} {overlay} is inside the pod range {pods}; choose an address outside it."
                ),
            });
        }
        if overlay == address {
            return Err(invalid(format!(
                "{field}: {what} {overlay} is also its address; nodes route the overlay address into the tunnel, so it must be an address of its own, outside the pod range and the node network."
            )));
        }
        if let Some(owner) = owners.owner(overlay) {
            return Err(Refusal {
                reason: reasons::ADDRESS_IN_USE,
                message: format!(
                    "{field}: {what} {overlay} is {owner}; every node would route it into the tunnel and lose its path to it, so nothing is programmed for this client. Choose an unused address outside the pod range and the node network."
                ),
            });
        }
    }
    if let Some(owner) = owners.owner(address) {
        return Err(Refusal {
            reason: reasons::ADDRESS_IN_USE,
            message: format!(
                "{field}: address {address} is {owner}; a client's address is its own tunnel endpoint, so nothing is programmed for this client. Write the client machine's own underlay address."
            ),
        });
    }
    Ok(CheckedClient {
        address,
        overlay: overlays[0].2,
        secondary_overlay: overlays.get(1).map(|o| o.2),
    })
}

/// The clients of one ClientJoin gateway checked in order, each with its verdict: each
/// accepted client's addresses are claimed for the clients after it (two clients of one
/// gateway cannot share an address either way round).
#[must_use]
pub fn check_clients<'c>(
    clients: &'c [GatewayClient],
    ranges: &[IpNet],
    owners: &Owners,
) -> Vec<(&'c GatewayClient, Result<CheckedClient, Refusal>)> {
    let mut owners = owners.clone();
    let mut out = Vec::with_capacity(clients.len());
    for (i, client) in clients.iter().enumerate() {
        let verdict = check_client(i, client, ranges, &owners);
        if let Ok(checked) = &verdict {
            owners.claim(checked.address, format!("client {}'s address", client.name));
            for overlay in checked.overlays() {
                owners.claim(overlay, format!("client {}'s overlay address", client.name));
            }
        }
        out.push((client, verdict));
    }
    out
}

/// The VIPs of a BridgeHosts gateway that passed [`check_vips`]: `vip`, of the family of the
/// network's `cidr`, and `secondaryVip`, of its `secondaryCidr`'s, when set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vips {
    pub primary: IpAddr,
    pub secondary: Option<IpAddr>,
}

impl Vips {
    /// Both VIPs, `vip` first.
    pub fn all(&self) -> impl Iterator<Item = IpAddr> + use<> {
        [Some(self.primary), self.secondary].into_iter().flatten()
    }

    /// The VIP of the family of `ip`, if the gateway has one.
    #[must_use]
    pub fn of_family_of(&self, ip: IpAddr) -> Option<IpAddr> {
        self.all().find(|v| v.is_ipv6() == ip.is_ipv6())
    }
}

impl std::fmt::Display for Vips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.secondary {
            Some(s) => write!(f, "{} and {s}", self.primary),
            None => write!(f, "{}", self.primary),
        }
    }
}

/// Checks a BridgeHosts gateway's VIPs against its network's pod `ranges` (`cidr` first,
/// then `secondaryCidr`): `vip` of the family of the first, `secondaryVip` (if set) of the
/// second, each passing [`check_vip`] against `segments` (the bridge hosts' underlay
/// segments, of either family).
///
/// # Errors
/// `InvalidSpec` for a VIP of the wrong family or without a range of its family,
/// otherwise [`check_vip`]'s refusal.
pub fn check_vips(
    bridge: &BridgeHostsSpec,
    ranges: &[IpNet],
    segments: &[IpNet],
    owners: &Owners,
) -> Result<Vips, Refusal> {
    let invalid = |message: String| Refusal {
        reason: reasons::INVALID_SPEC,
        message,
    };
    let family = |net: &IpNet| if net.addr().is_ipv6() { "IPv6" } else { "IPv4" };
    let mut checked = Vec::with_capacity(2);
    let fields = [
        ("vip", "cidr", Some(&bridge.vip)),
        (
            "secondaryVip",
            "secondaryCidr",
            bridge.secondary_vip.as_ref(),
        ),
    ];
    for (i, (field, range_field, value)) in fields.into_iter().enumerate() {
        let Some(value) = value else { continue };
        let name = format!("spec.bridgeHosts.{field}");
        let Some(range) = ranges.get(i) else {
            return Err(invalid(format!(
                "{name} {value} is set, and the PodNetwork has no {range_field}: remove {field}, or give the network a secondaryCidr of the VIP's family to serve those clients."
            )));
        };
        let address: IpAddr = value.trim().parse().map_err(|_| {
            invalid(format!(
                "{name} {value:?} is not an IP address: choose an unused {} address on the bridge hosts' underlay segment.",
                family(range)
            ))
        })?;
        if address.is_ipv6() != range.addr().is_ipv6() {
            return Err(invalid(format!(
                "{name} {address} is not of the family of the PodNetwork's {range_field} {range}: clients route {range} to {field}, so it must be an {} address on the bridge hosts' underlay segment.",
                family(range)
            )));
        }
        let same_family = segments
            .iter()
            .filter(|s| s.addr().is_ipv6() == address.is_ipv6())
            .copied();
        checked.push(check_vip(&name, address, ranges, same_family, owners)?);
    }
    Ok(Vips {
        primary: checked[0],
        secondary: checked.get(1).copied(),
    })
}

/// Checks one BridgeHosts VIP, `field` in messages: an address no host can be refused for
/// ([`reserved_ip`]), outside the pod `ranges`, nobody's in `owners`, and neither the network
/// nor the broadcast address of any of `segments` (for IPv6, the network address is the
/// subnet-router anycast address, which forwarding hosts answer for).
///
/// # Errors
/// `InvalidSpec` for an unusable value, `VipConflict` for an address that is taken.
pub fn check_vip(
    field: &str,
    address: IpAddr,
    ranges: &[IpNet],
    segments: impl IntoIterator<Item = IpNet>,
    owners: &Owners,
) -> Result<IpAddr, Refusal> {
    let conflict = |message: String| Refusal {
        reason: reasons::VIP_CONFLICT,
        message,
    };
    let fix = "choose an unused address on the bridge hosts' underlay segment";
    if let Some(range) = reserved_ip(address) {
        return Err(Refusal {
            reason: reasons::INVALID_SPEC,
            message: format!("{field} {address} is in {range}, which no host can own: {fix}."),
        });
    }
    if let Some(pods) = ranges.iter().find(|r| r.contains(&address)) {
        return Err(conflict(format!(
            "VIP {address} is inside the pod range {pods}: {fix}."
        )));
    }
    if let Some(owner) = owners.owner(address) {
        return Err(conflict(format!("VIP {address} is {owner}: {fix}.")));
    }
    // A segment's network and broadcast addresses belong to the segment: Linux refuses
    // routes via them on the clients, and a host holding one would answer for everyone.
    for segment in segments {
        if segment.prefix_len() + 1 >= segment.max_prefix_len() {
            continue;
        }
        let which = if address == segment.network() {
            if segment.addr().is_ipv6() {
                "subnet-router anycast"
            } else {
                "network"
            }
        } else if address == segment.broadcast() && address.is_ipv4() {
            "broadcast"
        } else {
            continue;
        };
        return Err(conflict(format!(
            "VIP {address} is the {which} address of the segment {segment}: choose an unused host address inside it."
        )));
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, address: &str, overlay: &str) -> GatewayClient {
        GatewayClient {
            name: name.into(),
            address: address.into(),
            overlay_address: overlay.into(),
            secondary_overlay_address: None,
        }
    }

    fn client6(name: &str, address: &str, overlay: &str, second: &str) -> GatewayClient {
        GatewayClient {
            secondary_overlay_address: Some(second.into()),
            ..client(name, address, overlay)
        }
    }

    fn owners() -> Owners {
        let mut o = Owners::new();
        o.claim(Ipv4Addr::new(192, 168, 50, 11), "node node-a's address");
        o.claim(Ipv4Addr::new(192, 168, 60, 2), "the API server");
        o.claim(Ipv4Addr::new(192, 168, 50, 1), "router 192.168.50.1");
        o
    }

    #[test]
    fn every_refusal_names_the_field_the_owner_and_has_its_reason() {
        let pods = nets(&["10.247.0.0/16"]);
        let dual = nets(&["10.247.0.0/16", "fd00:10:247::/56"]);
        let mut owners = owners();
        owners.claim(
            "fd00:50::11".parse::<IpAddr>().expect("ip"),
            "node node-a's address",
        );
        let cases = [
            (
                client("a", "192.168.50.100", "192.168.50.11"),
                reasons::ADDRESS_IN_USE,
                "node node-a's address",
            ),
            (
                client("b", "192.168.50.100", "192.168.60.2"),
                reasons::ADDRESS_IN_USE,
                "the API server",
            ),
            (
                client("c", "192.168.50.100", "192.168.50.1"),
                reasons::ADDRESS_IN_USE,
                "router 192.168.50.1",
            ),
            (
                client("d", "192.168.50.11", "10.250.0.1"),
                reasons::ADDRESS_IN_USE,
                "address 192.168.50.11 is node node-a's address",
            ),
            (
                client("e", "192.168.50.100", "10.247.3.4"),
                reasons::CLIENT_CIDR_OVERLAPS_PODS,
                "inside the pod range 10.247.0.0/16",
            ),
            (
                client("f", "192.168.50.100", "192.168.50.100"),
                reasons::INVALID_SPEC,
                "is also its address",
            ),
            (
                client("g", "192.168.50.100", "127.0.0.1"),
                reasons::INVALID_SPEC,
                "loopback",
            ),
            (
                client("h", "192.168.50.100", "255.255.255.255"),
                reasons::INVALID_SPEC,
                "broadcast",
            ),
            (
                client("i", "192.168.50.100", "224.0.0.5"),
                reasons::INVALID_SPEC,
                "multicast",
            ),
            (
                client("j", "0.0.0.0", "10.250.0.1"),
                reasons::INVALID_SPEC,
                "0.0.0.0/8",
            ),
            (
                client("k", "192.168.50.100", "fd00:250::1"),
                reasons::INVALID_SPEC,
                "overlayAddress fd00:250::1 is not of the family of the PodNetwork's cidr 10.247.0.0/16",
            ),
            (
                client6("m", "192.168.50.100", "10.250.0.1", "fd00:250::1"),
                reasons::INVALID_SPEC,
                "secondaryOverlayAddress fd00:250::1 is set, and the PodNetwork has no secondaryCidr",
            ),
            (
                client("n", "192.168.50.100", "nope"),
                reasons::INVALID_SPEC,
                "overlayAddress \"nope\" is not an IP address",
            ),
            (
                client("l", "192.168.50.100", "169.254.1.1"),
                reasons::INVALID_SPEC,
                "link-local",
            ),
        ];
        let dual_cases = [
            (
                client6("o", "192.168.50.100", "10.250.0.1", "fd00:10:247::9"),
                reasons::CLIENT_CIDR_OVERLAPS_PODS,
                "secondaryOverlayAddress fd00:10:247::9 is inside the pod range fd00:10:247::/56",
            ),
            (
                client6("p", "192.168.50.100", "10.250.0.1", "fd00:50::11"),
                reasons::ADDRESS_IN_USE,
                "secondaryOverlayAddress fd00:50::11 is node node-a's address",
            ),
            (
                client6("q", "192.168.50.100", "10.250.0.1", "fe80::1"),
                reasons::INVALID_SPEC,
                "secondaryOverlayAddress fe80::1 is in link-local fe80::/10",
            ),
        ];
        let all = cases
            .into_iter()
            .map(|(c, r, w)| (c, r, w, &pods))
            .chain(dual_cases.into_iter().map(|(c, r, w)| (c, r, w, &dual)));
        for (c, reason, words, ranges) in all {
            let refusal = check_client(3, &c, ranges, &owners).expect_err(&c.name);
            assert_eq!(refusal.reason, reason, "{}: {}", c.name, refusal.message);
            assert!(
                refusal.message.contains(words),
                "{}: {}",
                c.name,
                refusal.message
            );
            assert!(
                refusal
                    .message
                    .starts_with(&format!("spec.clientJoin.clients[3] ({})", c.name)),
                "{}",
                refusal.message
            );
        }
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let ok = check_client(
            0,
            &client("ok", "192.168.50.100", "10.250.0.100"),
            &pods,
            &owners,
        );
        assert_eq!(
            ok,
            Ok(CheckedClient {
                address: ip("192.168.50.100"),
                overlay: ip("10.250.0.100"),
                secondary_overlay: None,
            })
        );
        let both = check_client(
            0,
            &client6("ok", "192.168.50.100", "10.250.0.100", "fd00:250::100"),
            &dual,
            &owners,
        )
        .expect("dual-stack client");
        assert_eq!(
            both.overlays().collect::<Vec<_>>(),
            [ip("10.250.0.100"), ip("fd00:250::100")]
        );
        // An IPv6 network over an IPv6 underlay: everything IPv6.
        let v6 = nets(&["fd00:10:247::/56"]);
        let only6 = check_client(
            0,
            &client("ok", "fd00:50::100", "fd00:250::100"),
            &v6,
            &owners,
        );
        assert_eq!(only6.map(|c| c.overlay), Ok(ip("fd00:250::100")));
    }

    #[test]
    fn a_later_client_cannot_take_an_earlier_clients_addresses() {
        let pods = nets(&["10.247.0.0/16"]);
        let clients = [
            client("laptop", "192.168.50.100", "10.250.0.100"),
            // Its overlay address is the laptop's tunnel endpoint.
            client("desk", "192.168.50.101", "192.168.50.100"),
            client("phone", "192.168.50.102", "10.250.0.102"),
        ];
        let verdicts = check_clients(&clients, &pods, &Owners::new());
        let names: Vec<&str> = verdicts
            .iter()
            .filter(|(_, v)| v.is_ok())
            .map(|(c, _)| c.name.as_str())
            .collect();
        assert_eq!(names, ["laptop", "phone"]);
        let refused: Vec<&Refusal> = verdicts
            .iter()
            .filter_map(|(_, v)| v.as_ref().err())
            .collect();
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].message.contains("client laptop's address"),
            "{}",
            refused[0].message
        );
    }

    fn bridge(vip: &str, secondary: Option<&str>) -> BridgeHostsSpec {
        BridgeHostsSpec {
            node_selector: Default::default(),
            vip: vip.into(),
            secondary_vip: secondary.map(Into::into),
            lease_duration_seconds: None,
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("cidr")).collect()
    }

    #[test]
    fn a_vip_must_be_nobodys_and_a_host_address_of_its_segment() {
        let mut owners = owners();
        owners.claim(
            "fd00:50::11".parse::<IpAddr>().expect("ip"),
            "node node-a's address",
        );
        let dual = nets(&["10.247.0.0/16", "fd00:10:247::/56"]);
        let segments = nets(&["192.168.50.0/24", "fd00:50::/64"]);
        let check = |vip: &str, secondary: Option<&str>, ranges: &[IpNet]| {
            check_vips(&bridge(vip, secondary), ranges, &segments, &owners)
        };
        let v4 = &dual[..1];
        for (vip, secondary, ranges, reason, words) in [
            (
                "192.168.50.11",
                None,
                v4,
                reasons::VIP_CONFLICT,
                "node node-a's address",
            ),
            (
                "192.168.60.2",
                None,
                v4,
                reasons::VIP_CONFLICT,
                "the API server",
            ),
            (
                "192.168.50.1",
                None,
                v4,
                reasons::VIP_CONFLICT,
                "router 192.168.50.1",
            ),
            (
                "192.168.50.255",
                None,
                v4,
                reasons::VIP_CONFLICT,
                "broadcast address of the segment 192.168.50.0/24",
            ),
            (
                "192.168.50.0",
                None,
                v4,
                reasons::VIP_CONFLICT,
                "network address of the segment",
            ),
            (
                "10.247.0.1",
                None,
                v4,
                reasons::VIP_CONFLICT,
                "inside the pod range",
            ),
            ("127.0.0.1", None, v4, reasons::INVALID_SPEC, "loopback"),
            (
                "fe80::1",
                None,
                v4,
                reasons::INVALID_SPEC,
                "spec.bridgeHosts.vip fe80::1 is not of the family of the PodNetwork's cidr 10.247.0.0/16",
            ),
            (
                "192.168.50.250",
                Some("fd00:50::250"),
                v4,
                reasons::INVALID_SPEC,
                "spec.bridgeHosts.secondaryVip fd00:50::250 is set, and the PodNetwork has no secondaryCidr",
            ),
            (
                "192.168.50.250",
                Some("fd00:50::11"),
                &dual,
                reasons::VIP_CONFLICT,
                "VIP fd00:50::11 is node node-a's address",
            ),
            (
                "192.168.50.250",
                Some("fd00:50::"),
                &dual,
                reasons::VIP_CONFLICT,
                "subnet-router anycast address of the segment fd00:50::/64",
            ),
            (
                "192.168.50.250",
                Some("fd00:10:247::9"),
                &dual,
                reasons::VIP_CONFLICT,
                "inside the pod range fd00:10:247::/56",
            ),
            (
                "192.168.50.250",
                Some("fe80::1"),
                &dual,
                reasons::INVALID_SPEC,
                "spec.bridgeHosts.secondaryVip fe80::1 is in link-local fe80::/10",
            ),
            (
                "192.168.50.250",
                Some("nope"),
                &dual,
                reasons::INVALID_SPEC,
                "is not an IP address",
            ),
        ] {
            let refusal = check(vip, secondary, ranges).expect_err(vip);
            assert_eq!(refusal.reason, reason, "{vip}: {}", refusal.message);
            assert!(
                refusal.message.contains(words),
                "{vip}: {}",
                refusal.message
            );
        }
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            check("192.168.50.250", None, v4),
            Ok(Vips {
                primary: ip("192.168.50.250"),
                secondary: None
            })
        );
        let both = check("192.168.50.250", Some("fd00:50::250"), &dual).expect("dual-stack");
        assert_eq!(both.secondary, Some(ip("fd00:50::250")));
        assert_eq!(both.of_family_of(ip("fd00::1")), Some(ip("fd00:50::250")));
        assert_eq!(both.to_string(), "192.168.50.250 and fd00:50::250");
        // An IPv6 network's VIP is IPv6.
        let v6 = nets(&["fd00:10:247::/56"]);
        assert_eq!(
            check("fd00:50::250", None, &v6).map(|v| v.primary),
            Ok(ip("fd00:50::250"))
        );
    }

    #[test]
    fn reserved_ranges_are_named() {
        for (a, words) in [
            ("0.0.0.0", "0.0.0.0/8"),
            ("127.1.2.3", "loopback"),
            ("169.254.9.9", "link-local"),
            ("239.1.1.1", "multicast"),
            ("255.255.255.255", "broadcast"),
        ] {
            let address: Ipv4Addr = a.parse().expect("ip");
            assert!(reserved(address).is_some_and(|r| r.contains(words)), "{a}");
        }
        for a in ["10.0.0.1", "192.168.1.1", "169.253.1.1", "223.255.255.254"] {
            assert_eq!(reserved(a.parse().expect("ip")), None, "{a}");
        }
    }
}
