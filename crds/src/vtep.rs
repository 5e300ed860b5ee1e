//! Deterministic VXLAN VTEP MAC addresses.
//!
//! With learning and flooding off, every node programs a permanent neighbour entry and an FDB
//! entry for each peer's VTEP, so each peer's MAC must be known before the peer's VXLAN device
//! exists. The operator derives it from the node name with [`vtep_mac`] and publishes it in
//! `NodeSubnet.spec.vtepMac`; the agent creates its VXLAN device with that MAC. Because the MAC
//! comes from the name alone, a recreated device or a restarted agent gets the same address and
//! peers need no reprogramming.
//!
//! **Stability contract** (do not change across releases; peers running different versions
//! must agree): the MAC is `0e` followed by the five low-order bytes, big-endian, of the 64-bit
//! FNV-1a hash of the UTF-8 bytes of the name. `0x0e` sets the locally administered bit and
//! clears the multicast bit, so the address is a valid unicast MAC that cannot clash with a
//! vendor-assigned one. Non-node overlay members (OverlayGateway `ClientJoin` clients) hash
//! `client:<name>`, which no node name can equal because node names cannot contain `:`.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The first octet of every Causeway VTEP MAC: locally administered, unicast.
pub const VTEP_MAC_FIRST_OCTET: u8 = 0x0e;

/// A 48-bit Ethernet MAC address, displayed as six lowercase hex pairs (`0e:c2:20:78:cb:53`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether the locally administered bit is set and the multicast bit clear.
    #[must_use]
    pub fn is_local_unicast(self) -> bool {
        self.0[0] & 0b10 != 0 && self.0[0] & 0b1 == 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    /// Parses the form the API uses (`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`, lowercase only).
    fn from_str(value: &str) -> Result<Self, Error> {
        let err = || Error::ParseMac {
            value: value.to_owned(),
        };
        let mut out = [0u8; 6];
        let mut parts = value.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            let lower_hex = part.len() == 2
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !lower_hex {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

fn mac_from_hash_input(input: &[u8]) -> MacAddr {
    let h = crate::naming::fnv1a64(input).to_be_bytes();
    MacAddr([VTEP_MAC_FIRST_OCTET, h[3], h[4], h[5], h[6], h[7]])
}

/// The VTEP MAC of the node called `node_name` (see the module docs for the exact algorithm).
#[must_use]
pub fn vtep_mac(node_name: &str) -> MacAddr {
    mac_from_hash_input(node_name.as_bytes())
}

/// The VTEP MAC of the OverlayGateway `ClientJoin` client called `client_name`.
#[must_use]
pub fn client_vtep_mac(client_name: &str) -> MacAddr {
    mac_from_hash_input(format!("client:{client_name}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: if this test fails, the derivation changed and mixed-version clusters
    /// would disagree on peers' MACs. Fix the code, never the table.
    #[test]
    fn vtep_mac_matches_the_published_derivation_for_known_names() {
        let cases: &[(&str, &str)] = &[
            ("node-a", "0e:c2:20:78:cb:53"),
            ("node-b", "0e:c2:20:78:cd:06"),
            ("a", "0e:4c:86:01:ec:8c"),
            ("", "0e:e4:84:22:23:25"),
        ];
        for (name, want) in cases {
            assert_eq!(vtep_mac(name).to_string(), *want, "{name:?}");
        }
        assert_eq!(client_vtep_mac("laptop-1").to_string(), "0e:b3:46:33:77:2a");
    }

    #[test]
    fn vtep_macs_are_locally_administered_unicast_and_differ_between_names() {
        let names = ["node-a", "node-b", "node-c", "worker-1.example.com", "x"];
        let macs: std::collections::BTreeSet<_> = names.iter().map(|n| vtep_mac(n)).collect();
        assert_eq!(macs.len(), names.len());
        assert!(macs.iter().all(|m| m.is_local_unicast()));
        assert_ne!(vtep_mac("laptop-1"), client_vtep_mac("laptop-1"));
    }

    #[test]
    fn mac_addr_parses_only_the_lowercase_colon_form() {
        let cases: &[(&str, bool)] = &[
            ("0e:c2:20:78:cb:53", true),
            ("00:00:00:00:00:00", true),
            ("0E:C2:20:78:CB:53", false),
            ("0e-c2-20-78-cb-53", false),
            ("0e:c2:20:78:cb", false),
            ("0e:c2:20:78:cb:53:00", false),
            ("0e:c2:20:78:cb:5", false),
            ("0e:c2:20:78:cb:5g", false),
            ("", false),
        ];
        for (input, ok) in cases {
            let parsed = input.parse::<MacAddr>();
            assert_eq!(parsed.is_ok(), *ok, "{input:?}");
            if let Ok(mac) = parsed {
                assert_eq!(mac.to_string(), *input);
            }
        }
    }
}
