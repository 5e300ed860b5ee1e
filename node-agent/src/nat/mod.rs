//! Outgoing NAT (`natOutgoing`): the agent's nftables table, built and read with the
//! `nftables` crate's JSON schema and applied by running `nft -j`.
//!
//! The table `ip causeway` ([`crate::model::NAT_TABLE`]) holds one interval set of exempt destinations (the
//! cluster CIDR and `natExcludeCidrs`) and one rule in a `nat` chain on the `postrouting`
//! hook:
//!
//! ```text
//! table ip causeway {
//!     set no-masquerade { type ipv4_addr; flags interval; elements = { 10.244.0.0/16 } }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr 10.244.1.0/24 ip daddr != @no-masquerade masquerade
//!     }
//! }
//! ```
//!
//! Only traffic from this node's pod subnet is rewritten, so pod-to-pod traffic keeps pod
//! addresses and traffic the node itself sends is left alone. The table is replaced whole in
//! one nftables transaction (`add`, `delete`, `add` in one batch): there is never a moment
//! without the rule, and anything someone else added to the table is dropped. Established
//! connections keep their translation (conntrack), whatever the table does.
//!
//! BridgeHosts gateways with `snat: true` get a table of their own on their candidate hosts,
//! `causeway-gateway` ([`crate::model::SNAT_TABLE`]): family `ip` for IPv4 clients and, on a
//! dual-stack network with a `secondaryVip`, family `ip6` for IPv6 clients, each with a set of
//! client ranges and `saddr @clients daddr <the pods' range of that family> masquerade`. Each of
//! the four tables is observed, replaced whole and deleted on its own.
//!
//! The rules are built and read in `rules.rs` (pure, unit-tested: [`masquerade`],
//! [`replace_batch`], [`interpret`]); `nft.rs` ([`Nft`]) is the only code that runs `nft`.

mod nft;
mod rules;

pub use nft::{Nft, NftError};
pub use rules::*;
