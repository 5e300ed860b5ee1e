//! FRRouting (Debian `frr`) as the BGP router of a router namespace: the second router
//! implementation of the Routed-mode tests, so the nodes' speaker is shown to interoperate
//! beyond BIRD-to-BIRD. It takes the same [`Config`] as [`crate::bird`] and plays the same
//! part: one session per node, pod subnets learned from the nodes installed in the router's
//! kernel (through zebra) and passed on to every other node with the router as next hop.
//!
//! `zebra` and `bgpd` run in the foreground as harness processes in the router's namespace
//! (ended by pid at tear-down), as user `frr` (FRR refuses to run its vty as a user outside
//! group `frrvty`), with their configuration, pid files and sockets in the router's host
//! directory; `vtysh --vty_socket` talks to them there.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::Cluster;
use crate::bird::Config;
use crate::proc::ProcId;
use crate::traffic::wait_for;

/// Where Debian installs the FRR daemons.
const DAEMONS: &str = "/usr/lib/frr";

/// `frr.conf` for `config`: eBGP or iBGP per neighbour as its AS says, no policy required
/// (FRR's datacenter defaults otherwise refuse eBGP routes without one), every route
/// accepted and passed on. iBGP neighbours are route-reflector clients with the router as
/// next hop, as [`crate::bird`] configures them.
#[must_use]
pub fn render(config: &Config) -> String {
    let mut conf = format!(
        "frr defaults datacenter\n\
         hostname router\n\
         log stdout informational\n\
         !\n\
         router bgp {asn}\n \
         bgp router-id {id}\n \
         no bgp ebgp-requires-policy\n \
         no bgp network import-check\n \
         timers bgp {keep} {hold}\n",
        asn = config.asn,
        id = config.router_id,
        keep = (config.hold_time / 3).max(1),
        hold = config.hold_time,
    );
    for n in &config.neighbours {
        conf.push_str(&format!(
            " neighbor {addr} remote-as {peer}\n \
             neighbor {addr} description {name}\n \
             neighbor {addr} timers connect 1\n",
            addr = n.address,
            peer = n.asn,
            name = n.name,
        ));
        if let Some(password) = &n.password {
            conf.push_str(&format!(" neighbor {} password {password}\n", n.address));
        }
    }
    conf.push_str(" address-family ipv4 unicast\n");
    for n in config.neighbours.iter().filter(|n| n.asn == config.asn) {
        conf.push_str(&format!(
            "  neighbor {addr} route-reflector-client\n  \
             neighbor {addr} next-hop-self force\n",
            addr = n.address
        ));
    }
    conf.push_str(" exit-address-family\n!\n");
    conf
}

/// A running FRR (zebra + bgpd).
pub struct Frr {
    dir: PathBuf,
    zebra: ProcId,
    bgpd: ProcId,
}

impl Frr {
    /// Writes `config` and starts zebra and bgpd in `router`'s namespace; waits until bgpd
    /// answers vtysh.
    pub fn start(c: &Cluster, router: &str, config: &Config) -> Result<Frr> {
        let dir = c.host_dir(router).join("frr");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("frr.conf");
        std::fs::write(&conf, render(config))?;
        let frr = nix::unistd::User::from_name("frr")
            .context("looking up user frr")?
            .context("no user frr: install Debian's frr (make deps)")?;
        for path in [dir.clone(), conf.clone()] {
            std::os::unix::fs::chown(&path, Some(frr.uid.as_raw()), Some(frr.gid.as_raw()))
                .with_context(|| format!("chown frr {}", path.display()))?;
        }
        let common = |pid: &str| -> Vec<String> {
            let at = |name: &str| dir.join(name).display().to_string();
            vec![
                "-u".into(),
                "frr".into(),
                "-g".into(),
                "frr".into(),
                "-f".into(),
                at("frr.conf"),
                "-i".into(),
                at(pid),
                "-z".into(),
                at("zserv.api"),
                "--vty_socket".into(),
                dir.display().to_string(),
            ]
        };
        let zebra = c.spawn(
            router,
            "frr-zebra",
            &format!("{DAEMONS}/zebra"),
            &common("zebra.pid"),
            &[],
        )?;
        wait_for(
            "zebra's socket",
            Duration::from_secs(10),
            || -> Result<()> {
                anyhow::ensure!(dir.join("zserv.api").exists(), "no zserv.api yet");
                Ok(())
            },
        )?;
        let bgpd = c.spawn(
            router,
            "frr-bgpd",
            &format!("{DAEMONS}/bgpd"),
            &common("bgpd.pid"),
            &[],
        )?;
        let frr = Frr { dir, zebra, bgpd };
        wait_for("bgpd answers vtysh", Duration::from_secs(15), || {
            frr.vtysh("show bgp summary json").map(drop)
        })?;
        Ok(frr)
    }

    /// Stops bgpd and zebra (by pid).
    pub fn stop(self, c: &Cluster) {
        c.stop(&self.bgpd);
        c.stop(&self.zebra);
    }

    /// `vtysh --vty_socket <dir> -c COMMAND`.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        vtysh(&self.dir, command)
    }

    /// Neighbour address → BGP state (`Established`, `Active`, ...) of every session.
    pub fn sessions(&self) -> Result<BTreeMap<Ipv4Addr, String>> {
        let summary: Value =
            serde_json::from_str(&self.vtysh("show bgp ipv4 unicast summary json")?)
                .context("parsing `show bgp summary json`")?;
        Ok(summary["peers"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(addr, peer)| {
                Some((addr.parse().ok()?, peer["state"].as_str()?.to_string()))
            })
            .collect())
    }

    /// The BGP routes zebra installed in the router's kernel: prefix → next hop.
    pub fn routes(&self) -> Result<BTreeMap<String, String>> {
        let table: Value = serde_json::from_str(&self.vtysh("show ip route bgp json")?)
            .context("parsing `show ip route bgp json`")?;
        Ok(table
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(prefix, entries)| {
                let best = entries
                    .as_array()?
                    .iter()
                    .find(|e| e["selected"] == true && e["installed"] == true)?;
                let hop = best["nexthops"].as_array()?.first()?["ip"].as_str()?;
                Some((prefix.clone(), hop.to_string()))
            })
            .collect())
    }
}

fn vtysh(dir: &Path, command: &str) -> Result<String> {
    let out = Command::new("vtysh")
        .arg("--vty_socket")
        .arg(dir)
        .arg("-c")
        .arg(command)
        .output()
        .context("running vtysh (is frr installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "vtysh -c {command:?}: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bird::Neighbour;

    #[test]
    fn ebgp_and_ibgp_neighbours_are_rendered_like_birds() {
        let config = Config {
            asn: 64500,
            router_id: Ipv4Addr::new(192, 168, 50, 1),
            neighbours: vec![
                Neighbour {
                    name: "node_a".into(),
                    address: Ipv4Addr::new(192, 168, 50, 11).into(),
                    asn: 64512,
                    password: None,
                    ipv6_channel: false,
                    ipv4_channel: false,
                },
                Neighbour {
                    name: "node_b".into(),
                    address: Ipv4Addr::new(192, 168, 50, 12).into(),
                    asn: 64500,
                    password: Some("s3cret".into()),
                    ipv6_channel: false,
                    ipv4_channel: false,
                },
            ],
            hold_time: 9,
            bfd: None,
            announce: Vec::new(),
        };
        let conf = render(&config);
        for line in [
            "router bgp 64500",
            " bgp router-id 192.168.50.1",
            " no bgp ebgp-requires-policy",
            " timers bgp 3 9",
            " neighbor 192.168.50.11 remote-as 64512",
            " neighbor 192.168.50.12 remote-as 64500",
            " neighbor 192.168.50.12 password s3cret",
            "  neighbor 192.168.50.12 route-reflector-client",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line:?} missing:\n{conf}");
        }
        // The eBGP neighbour is no reflector client.
        assert!(
            !conf.contains("192.168.50.11 route-reflector-client"),
            "{conf}"
        );
    }
}
