//! Blocking work inside a named network namespace (`/run/netns/NAME`), without ever moving a
//! runtime thread: the work runs on a short-lived thread that enters the namespace first.
//!
//! What such a thread opens stays bound to the namespace after it ends, so this serves the
//! netlink socket ([`crate::netlink::Netlink::in_netns`]), `/proc/sys/net` files (which show
//! the namespace of the thread that opens them) and BGP's TCP connections. In production the
//! agent runs in the node's namespace and none of this is used; tests and tools name one.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};

/// Where named network namespaces are mounted (`ip netns add`).
pub const NETNS_DIR: &str = "/run/netns";

/// Why work could not run in the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "{name:?} is not a network namespace name (expected a file name under {NETNS_DIR}, as `ip netns list` shows)"
    )]
    BadName { name: String },
    #[error(
        "cannot open network namespace {name} ({}): {error}; does `ip netns list` show it?",
        path.display()
    )]
    Open {
        name: String,
        path: PathBuf,
        error: io::Error,
    },
    #[error("cannot enter network namespace {name}: {errno} (setns needs root or CAP_SYS_ADMIN)")]
    Enter { name: String, errno: Errno },
    #[error("cannot start a thread to enter network namespace {name}: {error}")]
    Thread { name: String, error: io::Error },
    #[error("the thread in network namespace {name} ended without an answer")]
    ThreadDied { name: String },
}

/// The namespace something lives in, for messages.
#[must_use]
pub fn describe(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("network namespace {name}"),
        None => "the agent's network namespace".into(),
    }
}

/// Runs `work` on a new thread inside `/run/netns/NAME` and returns its result.
///
/// # Errors
/// When `name` is not a plain file name, the namespace cannot be opened or entered, or the
/// thread cannot start.
pub async fn run_in<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(NetnsError::BadName { name: name.into() });
    }
    let path = PathBuf::from(NETNS_DIR).join(name);
    let namespace = File::open(&path).map_err(|error| NetnsError::Open {
        name: name.into(),
        path,
        error,
    })?;
    let (answer, answered) = futures::channel::oneshot::channel();
    let thread_name = name.to_owned();
    std::thread::Builder::new()
        .name("cw-netns".into())
        .spawn(move || {
            let result = setns(&namespace, CloneFlags::CLONE_NEWNET)
                .map(|()| work())
                .map_err(|errno| NetnsError::Enter {
                    name: thread_name,
                    errno,
                });
            // The receiver is gone only if the caller stopped waiting.
            let _ = answer.send(result);
        })
        .map_err(|error| NetnsError::Thread {
            name: name.into(),
            error,
        })?;
    answered
        .await
        .map_err(|_| NetnsError::ThreadDied { name: name.into() })?
}

/// Runs blocking `work` in `netns`, or in the caller's namespace on tokio's blocking pool.
///
/// # Errors
/// The work's own error, or the namespace's as an `io::Error`.
pub async fn run_io<T: Send + 'static>(
    netns: Option<&str>,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    match netns {
        Some(name) => run_in(name, work).await.map_err(io::Error::other)?,
        None => tokio::task::spawn_blocking(work)
            .await
            .map_err(io::Error::other)?,
    }
}
