//! The CNI network configuration the agent writes for the node's container runtime.
//!
//! containerd (or CRI-O) reads the first `.conflist` in its CNI config directory
//! (`/etc/cni/net.d`) and calls the plugins in it for every pod. The agent writes
//! [`FILE_NAME`] there: the reference `bridge` plugin on the agent's node bridge with the
//! subnet's gateway, `host-local` IPAM with one range set per subnet of the node (IPv4,
//! IPv6, or both on a dual-stack network, the network's primary family first) and a default
//! route of each family, and the network's MTU, so a
//! kubelet attaches pods with no further set-up. The file is written atomically (a temporary
//! file in the same directory, flushed, then renamed), so a runtime never reads half a file,
//! and only when its content changes.
//!
//! host-local keeps one file per allocated address in its store ([`store_dir`]); a pod
//! deleted after the config is gone (the network deleted first) cannot release its address,
//! and a node that gets another subnet keeps the old range's files. When the agent first
//! programs a subnet, it takes host-local's own lock ([`lock_store`]), looks at the pods on
//! its bridge, and removes the allocations no pod can hold ([`prune`]): those outside the
//! subnet, or all of them when no pod is attached (host-local allocates only after the
//! `bridge` plugin attached the pod's veth, so under the lock a pod with an address has a
//! veth). When the node leaves the network with no pod left, the whole store goes
//! ([`forget`]). A re-created network thus starts clean instead of leaking addresses or
//! answering "duplicate allocation".
//!
//! The same store tells a dual-stack Flat node which IPv6 addresses its pods hold
//! ([`allocations6`]), so it answers NDP on the underlay for exactly those.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde_json::{Value, json};

/// The file the agent owns in the CNI config directory. `10-` sorts before most other
/// networks' files, so the runtime picks it.
pub const FILE_NAME: &str = "10-causeway.conflist";

/// The CNI network name pods are attached with.
pub const NETWORK_NAME: &str = "causeway";

/// What the config says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConf {
    /// This node's pod subnets, the network's primary family first (pods get an address of
    /// each, in this order: the first is the pod's primary IP).
    pub subnets: Vec<IpNet>,
    /// The node bridge the `bridge` plugin attaches pods to.
    pub bridge: String,
    /// Pod interface MTU.
    pub mtu: u32,
    /// host-local's allocation store; `None` for its default (`/var/lib/cni/networks`).
    pub data_dir: Option<PathBuf>,
}

/// host-local's default store, when the config names none.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// host-local's store of [`NETWORK_NAME`]'s allocations under `data_dir`.
#[must_use]
pub fn store_dir(data_dir: Option<&Path>) -> PathBuf {
    data_dir
        .unwrap_or_else(|| Path::new(DEFAULT_DATA_DIR))
        .join(NETWORK_NAME)
}

/// The allocation files among `names` (host-local names each after the address it holds)
/// whose address (IPv4 or IPv6) is outside every subnet of `keep` (all of them when `keep`
/// is empty: no pod holds one). Other files (`lock`, `last_reserved_ip.0`) are not
/// allocations.
#[must_use]
pub fn stale<'a>(names: impl IntoIterator<Item = &'a str>, keep: &[IpNet]) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| {
            n.parse::<IpAddr>()
                .is_ok_and(|ip| !keep.iter().any(|k| k.contains(&ip)))
        })
        .map(str::to_owned)
        .collect()
}

/// The IPv6 addresses among `names` (host-local's allocation files): the node's pods' IPv6
/// addresses, which a dual-stack Flat node answers NDP for.
#[must_use]
pub fn ipv6_allocations<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeSet<std::net::Ipv6Addr> {
    names
        .into_iter()
        .filter_map(|n| n.parse::<std::net::Ipv6Addr>().ok())
        .collect()
}

/// The pods' IPv6 addresses host-local has allocated in `store` ([`ipv6_allocations`]):
/// known from the moment the plugin allocates, before the pod sends anything. A missing store
/// holds none.
///
/// # Errors
/// The store exists but cannot be read; the message names the path.
pub fn allocations6(
    store: &Path,
) -> std::io::Result<std::collections::BTreeSet<std::net::Ipv6Addr>> {
    let entries = match std::fs::read_dir(store) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("reading {}: {e}", store.display()),
            ));
        }
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    Ok(ipv6_allocations(names.iter().map(String::as_str)))
}

/// Takes host-local's lock on `store` (its file `lock`, with `flock`, as the plugin does),
/// held until the returned file is dropped; `None` when there is no store.
///
/// # Errors
/// The lock file cannot be opened or locked.
pub fn lock_store(store: &Path) -> std::io::Result<Option<std::fs::File>> {
    if !store.is_dir() {
        return Ok(None);
    }
    let path = store.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    file.lock()
        .map_err(|e| std::io::Error::new(e.kind(), format!("locking {}: {e}", path.display())))?;
    Ok(Some(file))
}

/// Removes the allocations in `store` that [`stale`] names for `keep`; the names removed. A
/// missing store is fine. Call it holding [`lock_store`].
///
/// # Errors
/// The store cannot be read or a file cannot be removed; the message names the path.
pub fn prune(store: &Path, keep: &[IpNet]) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(store) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("reading {}: {e}", store.display()),
            ));
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let gone = stale(names.iter().map(String::as_str), keep);
    for name in &gone {
        let path = store.join(name);
        std::fs::remove_file(&path).map_err(|e| {
            std::io::Error::new(e.kind(), format!("removing {}: {e}", path.display()))
        })?;
    }
    Ok(gone)
}

/// Removes the whole store (the node left the network and no pod holds an address from it).
/// Returns whether there was one.
///
/// # Errors
/// The store exists but cannot be removed.
pub fn forget(store: &Path) -> std::io::Result<bool> {
    match std::fs::remove_dir_all(store) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("removing {}: {e}", store.display()),
        )),
    }
}

/// The subnet's first host address: the bridge's address and the pods' default gateway.
#[must_use]
pub fn gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// The `.conflist` document.
#[must_use]
pub fn render(conf: &NetConf) -> Value {
    let mut ranges = Vec::new();
    let mut routes = Vec::new();
    for subnet in &conf.subnets {
        let (gw, default): (IpAddr, _) = match subnet {
            IpNet::V4(v4) => (gateway(*v4).into(), "0.0.0.0/0"),
            IpNet::V6(v6) => (crate::plan::gateway6(*v6).addr().into(), "::/0"),
        };
        ranges.push(json!([{"subnet": subnet.to_string(), "gateway": gw.to_string()}]));
        routes.push(json!({"dst": default}));
    }
    let mut ipam = json!({
        "type": "host-local",
        "ranges": ranges,
        "routes": routes,
    });
    if let Some(dir) = &conf.data_dir {
        ipam["dataDir"] = json!(dir.display().to_string());
    }
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": conf.bridge,
                "isGateway": true,
                // Outgoing NAT is the agent's (nftables, with the network's exceptions),
                // not the plugin's.
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": conf.mtu,
                "ipam": ipam,
            },
        ],
    })
}

/// Writes `conf` into `dir` as [`FILE_NAME`] unless the file already says exactly that.
/// Returns whether the file changed.
///
/// # Errors
/// Creating the directory, writing, flushing or renaming failed; the message names the path.
pub fn write(dir: &Path, conf: &NetConf) -> std::io::Result<bool> {
    let path = dir.join(FILE_NAME);
    let mut text = serde_json::to_string_pretty(&render(conf)).map_err(std::io::Error::other)?;
    text.push('\n');
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let context = |what: &str, p: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| context("creating", dir, e))?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| context("creating", &tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| context("writing", &tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| context("renaming to", &path, e))?;
    Ok(true)
}

/// Removes the agent's file from `dir` (the node left the network). Missing is fine.
///
/// # Errors
/// The file exists but cannot be removed.
pub fn remove(dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(dir.join(FILE_NAME)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> NetConf {
        NetConf {
            subnets: vec!["10.244.3.0/24".parse().expect("cidr")],
            bridge: "cw-br0".into(),
            mtu: 1450,
            data_dir: Some("/var/lib/cni/causeway".into()),
        }
    }

    #[test]
    fn the_gateway_is_the_subnets_first_host() {
        for (subnet, gw) in [
            ("10.244.3.0/24", "10.244.3.1"),
            ("10.0.0.0/16", "10.0.0.1"),
            ("192.168.7.64/26", "192.168.7.65"),
        ] {
            assert_eq!(gateway(subnet.parse().expect("cidr")).to_string(), gw);
        }
    }

    #[test]
    fn the_config_attaches_pods_to_the_bridge_with_the_subnet_and_mtu() {
        let doc = render(&conf());
        assert_eq!(doc["name"], NETWORK_NAME);
        let bridge = &doc["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["bridge"], "cw-br0");
        assert_eq!(bridge["mtu"], 1450);
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipMasq"], false);
        let range = &bridge["ipam"]["ranges"][0][0];
        assert_eq!(range["subnet"], "10.244.3.0/24");
        assert_eq!(range["gateway"], "10.244.3.1");
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/cni/causeway");
        assert_eq!(doc["plugins"].as_array().map(Vec::len), Some(1));
        let without_dir = render(&NetConf {
            data_dir: None,
            ..conf()
        });
        assert!(without_dir["plugins"][0]["ipam"].get("dataDir").is_none());
        assert_eq!(
            bridge["ipam"]["routes"],
            json!([{"dst": "0.0.0.0/0"}]),
            "single-stack: IPv4 only"
        );
    }

    #[test]
    fn an_ipv6_config_and_an_ipv6_primary_dual_stack_one_list_their_ranges_primary_first() {
        let v6 = "fd00:10:244:3::/64".parse().expect("cidr");
        let only6 = render(&NetConf {
            subnets: vec![v6],
            ..conf()
        });
        assert_eq!(
            only6["plugins"][0]["ipam"]["ranges"],
            json!([[{"subnet": "fd00:10:244:3::/64", "gateway": "fd00:10:244:3::1"}]])
        );
        assert_eq!(
            only6["plugins"][0]["ipam"]["routes"],
            json!([{"dst": "::/0"}]),
            "IPv6 only: no IPv4 default route"
        );
        let six_first = render(&NetConf {
            subnets: vec![v6, "10.244.3.0/24".parse().expect("cidr")],
            ..conf()
        });
        assert_eq!(
            six_first["plugins"][0]["ipam"]["routes"],
            json!([{"dst": "::/0"}, {"dst": "0.0.0.0/0"}])
        );
        assert_eq!(
            six_first["plugins"][0]["ipam"]["ranges"][1][0]["subnet"],
            "10.244.3.0/24"
        );
    }

    #[test]
    fn a_dual_stack_config_has_one_range_set_and_one_default_route_per_family() {
        let doc = render(&NetConf {
            subnets: vec![
                "10.244.3.0/24".parse().expect("cidr"),
                "fd00:10:244:3::/64".parse().expect("cidr"),
            ],
            ..conf()
        });
        let ipam = &doc["plugins"][0]["ipam"];
        assert_eq!(
            ipam["ranges"],
            json!([
                [{"subnet": "10.244.3.0/24", "gateway": "10.244.3.1"}],
                [{"subnet": "fd00:10:244:3::/64", "gateway": "fd00:10:244:3::1"}],
            ])
        );
        assert_eq!(
            ipam["routes"],
            json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}])
        );
        let v6: IpNet = "fd00:10:244:3::/64".parse().expect("cidr");
        let v4: IpNet = "10.244.3.0/24".parse().expect("cidr");
        assert_eq!(
            stale(
                [
                    "fd00:10:244:3::2",
                    "fd00:10:244:9::2",
                    "10.244.3.2",
                    "last_reserved_ip.1"
                ],
                &[v4, v6]
            ),
            ["fd00:10:244:9::2"]
        );
    }

    #[test]
    fn the_pods_ipv6_addresses_are_the_stores_ipv6_allocation_files_and_nothing_else() {
        let names = [
            "10.244.1.2",
            "fd00:10:244:1::2",
            "fd00:10:244:1::a",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock",
            "fd00:10:244:1::2.tmp",
        ];
        let got: Vec<String> = ipv6_allocations(names)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["fd00:10:244:1::2", "fd00:10:244:1::a"]);

        let store = std::env::temp_dir()
            .join(format!("causeway-cni-v6-test-{}", std::process::id()))
            .join("causeway");
        let _ = std::fs::remove_dir_all(&store);
        assert!(allocations6(&store).expect("missing is empty").is_empty());
        std::fs::create_dir_all(&store).expect("store");
        for name in names {
            std::fs::write(store.join(name), "container-id").expect("file");
        }
        assert_eq!(allocations6(&store).expect("read").len(), 2);
        std::fs::remove_dir_all(store.parent().expect("parent")).expect("clean up");
    }

    #[test]
    fn allocations_outside_the_subnet_are_stale_and_nothing_else_is() {
        let subnet: IpNet = "10.244.3.0/24".parse().expect("cidr");
        let subnet = &[subnet][..];
        let names = [
            "10.244.3.2",
            "10.244.7.2",
            "10.244.7.9",
            "lock",
            "last_reserved_ip.0",
            "10.244.3.250",
        ];
        assert_eq!(stale(names, subnet), ["10.244.7.2", "10.244.7.9"]);
        assert_eq!(
            stale(names, &[]),
            ["10.244.3.2", "10.244.7.2", "10.244.7.9", "10.244.3.250"]
        );

        let store = std::env::temp_dir()
            .join(format!("causeway-cni-store-{}", std::process::id()))
            .join(NETWORK_NAME);
        let _ = std::fs::remove_dir_all(&store);
        assert_eq!(
            prune(&store, subnet).expect("missing is fine"),
            Vec::<String>::new()
        );
        assert!(lock_store(&store).expect("no store").is_none());
        std::fs::create_dir_all(&store).expect("store");
        for n in names {
            std::fs::write(store.join(n), "container\neth0").expect("file");
        }
        let lock = lock_store(&store).expect("lock").expect("a store");
        assert_eq!(
            prune(&store, subnet).expect("prune"),
            ["10.244.7.2", "10.244.7.9"]
        );
        drop(lock);
        let mut left: Vec<String> = std::fs::read_dir(&store)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["10.244.3.2", "10.244.3.250", "last_reserved_ip.0", "lock"]
        );
        assert!(forget(&store).expect("forget"));
        assert!(!store.exists());
        assert!(!forget(&store).expect("again"), "missing is fine");
        assert_eq!(store_dir(None), Path::new("/var/lib/cni/networks/causeway"));
    }

    #[test]
    fn writing_is_atomic_idempotent_and_removable() {
        let dir = std::env::temp_dir().join(format!("causeway-cni-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            write(&dir, &conf()).expect("first write"),
            "first write changes"
        );
        assert!(
            !write(&dir, &conf()).expect("second write"),
            "same content: no rewrite"
        );
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).expect("file");
        let parsed: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed, render(&conf()));
        let names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()], "no temporary file left");
        let bigger = NetConf {
            mtu: 1400,
            ..conf()
        };
        assert!(
            write(&dir, &bigger).expect("rewrite"),
            "changed content rewrites"
        );
        assert!(remove(&dir).expect("remove"));
        assert!(!remove(&dir).expect("remove again"), "missing is fine");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
