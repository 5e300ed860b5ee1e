//! Errors of the BGP speaker, each naming what failed and where.
//!
//! Sessions do not return errors to the caller: a failed connection attempt becomes the
//! session's `message` in the snapshot (via `Display`) and a log line, and the session retries.

use std::io;
use std::net::SocketAddr;

use ipnet::Ipv4Net;
use netgauze_bgp_pkt::path_attribute::InvalidPathAttribute;

/// What went wrong in the speaker.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error(transparent)]
    Namespace(#[from] crate::netns::NetnsError),
    #[error("cannot connect to {peer} from {netns}: {error}")]
    Connect {
        peer: SocketAddr,
        netns: String,
        error: io::Error,
    },
    #[error("cannot advertise {prefix}: BGP IPv4 unicast carries no multicast or broadcast prefix")]
    NotUnicast { prefix: Ipv4Net },
    #[error("cannot build the {attribute} path attribute: {reason}")]
    PathAttribute {
        attribute: &'static str,
        reason: InvalidPathAttribute,
    },
}
