//! Errors of the BGP speaker, each naming what failed and where.
//!
//! Sessions do not return errors to the caller: a failed connection attempt becomes the
//! session's `message` in the snapshot (via `Display`) and a log line, and the session retries.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use netgauze_bgp_pkt::path_attribute::InvalidPathAttribute;
use nix::errno::Errno;

/// Where named network namespaces are mounted (`ip netns add`).
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// What went wrong in the speaker.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error(
        "{name:?} is not a network namespace name (expected a file name under {NETNS_DIR}, as `ip netns list` shows)"
    )]
    BadNamespaceName { name: String },
    #[error(
        "cannot open network namespace {name} ({}): {error}; does `ip netns list` show it?",
        path.display()
    )]
    OpenNamespace {
        name: String,
        path: PathBuf,
        error: io::Error,
    },
    #[error("cannot enter network namespace {name}: {errno} (setns needs root or CAP_SYS_ADMIN)")]
    EnterNamespace { name: String, errno: Errno },
    #[error("cannot start a thread to connect from network namespace {name}: {error}")]
    Thread { name: String, error: io::Error },
    #[error("the thread connecting from network namespace {name} ended without an answer")]
    ThreadDied { name: String },
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

/// The namespace a socket lives in, for messages.
pub(crate) fn describe_netns(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("network namespace {name}"),
        None => "the agent's network namespace".into(),
    }
}
