//! Where the agent finds the kernel parameters it reads and writes (IPv4 and IPv6 forwarding,
//! proxy ARP, proxy NDP and their delays, reverse-path filtering on its own devices). Every such path is built here, from one root: `--sysctl-dir`.
//!
//! Why a root at all: on a node the agent uses `/proc/sys`. In a container that is not
//! privileged, the runtime mounts the container's `/proc/sys` read-only, and runc refuses any
//! mount whose destination lies inside `/proc`, so the host's `/proc/sys/net` cannot be mounted
//! over it. The chart mounts it at `/host/proc/sys/net` and passes `--sysctl-dir /host/proc/sys`.
//! Files under `/proc/sys/net` show the network namespace of the thread that opens them,
//! wherever they are mounted, so a host-network agent (and a test thread that entered a named
//! namespace, [`crate::netns`]) reaches its own namespace's parameters either way.

use std::path::{Path, PathBuf};

/// The default root: the process's own `/proc/sys`.
pub const DEFAULT_DIR: &str = "/proc/sys";

/// The root under which `net/ipv4/...` is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlDir(PathBuf);

impl Default for SysctlDir {
    fn default() -> Self {
        Self(PathBuf::from(DEFAULT_DIR))
    }
}

impl SysctlDir {
    /// A root other than `/proc/sys`, e.g. `/host/proc/sys`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    /// The root itself.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// `net.ipv4.ip_forward`.
    #[must_use]
    pub fn ip_forward(&self) -> PathBuf {
        self.net(&["ipv4", "ip_forward"])
    }

    /// `net.ipv6.conf.all.forwarding`.
    #[must_use]
    pub fn ipv6_forwarding(&self) -> PathBuf {
        self.net(&["ipv6", "conf", "all", "forwarding"])
    }

    /// `net.ipv4.conf.<dev>.proxy_arp`.
    #[must_use]
    pub fn proxy_arp(&self, dev: &str) -> PathBuf {
        self.net(&["ipv4", "conf", dev, "proxy_arp"])
    }

    /// `net.ipv6.conf.<dev>.proxy_ndp`.
    #[must_use]
    pub fn proxy_ndp(&self, dev: &str) -> PathBuf {
        self.net(&["ipv6", "conf", dev, "proxy_ndp"])
    }

    /// `net.ipv6.neigh.<dev>.proxy_delay`.
    #[must_use]
    pub fn proxy_delay6(&self, dev: &str) -> PathBuf {
        self.net(&["ipv6", "neigh", dev, "proxy_delay"])
    }

    /// `net.ipv4.conf.<dev>.rp_filter`.
    #[must_use]
    pub fn rp_filter(&self, dev: &str) -> PathBuf {
        self.net(&["ipv4", "conf", dev, "rp_filter"])
    }

    /// `net.ipv4.neigh.<dev>.proxy_delay`.
    #[must_use]
    pub fn proxy_delay(&self, dev: &str) -> PathBuf {
        self.net(&["ipv4", "neigh", dev, "proxy_delay"])
    }

    /// `<root>/net/<parts...>`. Each part is one path component: a device name may contain
    /// dots (`eth0.100`), which the dotted sysctl notation could not tell from separators.
    fn net(&self, parts: &[&str]) -> PathBuf {
        let mut path = self.0.join("net");
        for part in parts {
            path.push(part);
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_built_under_the_configured_root() {
        let cases = [
            (
                SysctlDir::default(),
                "/proc/sys/net/ipv4/ip_forward",
                "/proc/sys/net/ipv4/conf/eth0/proxy_arp",
                "/proc/sys/net/ipv4/neigh/eth0/proxy_delay",
            ),
            (
                SysctlDir::new("/host/proc/sys"),
                "/host/proc/sys/net/ipv4/ip_forward",
                "/host/proc/sys/net/ipv4/conf/eth0/proxy_arp",
                "/host/proc/sys/net/ipv4/neigh/eth0/proxy_delay",
            ),
            (
                SysctlDir::new("/host/proc/sys/"),
                "/host/proc/sys/net/ipv4/ip_forward",
                "/host/proc/sys/net/ipv4/conf/eth0/proxy_arp",
                "/host/proc/sys/net/ipv4/neigh/eth0/proxy_delay",
            ),
        ];
        for (dir, forward, arp, delay) in cases {
            assert_eq!(dir.ip_forward(), Path::new(forward), "{dir:?}");
            assert_eq!(dir.proxy_arp("eth0"), Path::new(arp), "{dir:?}");
            assert_eq!(dir.proxy_delay("eth0"), Path::new(delay), "{dir:?}");
            let v6 = |leaf: &str| forward.replace("ipv4/ip_forward", leaf);
            assert_eq!(
                dir.proxy_ndp("eth0"),
                Path::new(&v6("ipv6/conf/eth0/proxy_ndp")),
                "{dir:?}"
            );
            assert_eq!(
                dir.proxy_delay6("eth0"),
                Path::new(&v6("ipv6/neigh/eth0/proxy_delay")),
                "{dir:?}"
            );
        }
    }

    #[test]
    fn a_device_name_with_dots_stays_one_path_component() {
        let dir = SysctlDir::new("/host/proc/sys");
        assert_eq!(
            dir.proxy_arp("eth0.100"),
            Path::new("/host/proc/sys/net/ipv4/conf/eth0.100/proxy_arp")
        );
        assert_eq!(
            dir.proxy_arp("eth0.100").components().count(),
            Path::new("/host/proc/sys/net/ipv4/conf/x/proxy_arp")
                .components()
                .count()
        );
    }

    #[test]
    fn the_default_root_is_proc_sys() {
        assert_eq!(SysctlDir::default().root(), Path::new("/proc/sys"));
    }
}
