//! BIRD 2 as the BGP router of a router namespace, configured as a top-of-rack router would
//! be for Routed mode: one eBGP (or iBGP) session per node, pod subnets learned from the nodes,
//! installed in the router's kernel table (so it forwards pod traffic between segments), and
//! passed on to every other node with the router as next hop.
//!
//! A neighbour at an IPv6 address gets an IPv6 unicast session (its prefixes go into the
//! router's IPv6 kernel table), one at an IPv4 address an IPv4 one, so the same router serves
//! dual-stack and IPv6-only segments. A neighbour at an IPv4 address may also carry IPv6
//! unicast on the same session ([`Neighbour::ipv6_channel`], MP-BGP), as a dual-stack Routed
//! network's nodes do; one at an IPv6 address may carry IPv4 unicast
//! ([`Neighbour::ipv4_channel`]), as a node peering with a router's IPv6 address does.
//!
//! BIRD runs in the foreground (`-f`) as a harness process, so it is ended by pid at
//! tear-down like everything else; its control socket lives in the router's host directory,
//! and `birdc -s` talks to it directly (no namespace needed for a unix socket).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ipnet::IpNet;
use serde_json::Value;

use crate::Cluster;
use crate::proc::ProcId;
use crate::traffic::wait_for;

/// One BGP neighbour (a node) of the router.
#[derive(Clone, Debug)]
pub struct Neighbour {
    /// BIRD protocol name (`node_a`).
    pub name: String,
    /// The node's address: its family is the session's (IPv4 or IPv6 unicast).
    pub address: IpAddr,
    /// The node's AS.
    pub asn: u32,
    /// The TCP MD5 password the session requires, if any.
    pub password: Option<String>,
    /// An IPv4 session that also carries IPv6 unicast (an `ipv6` channel beside the `ipv4`
    /// one): a dual-stack Routed network's node.
    pub ipv6_channel: bool,
    /// An IPv6 session that also carries IPv4 unicast (an `ipv4` channel beside the `ipv6`
    /// one): a node of a network whose peer is this router's IPv6 address. BIRD sends the
    /// IPv4 routes with its IPv4 address on the session's link as next hop.
    pub ipv4_channel: bool,
}

/// The router's BGP configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The router's AS.
    pub asn: u32,
    /// Router ID (one of its addresses).
    pub router_id: Ipv4Addr,
    pub neighbours: Vec<Neighbour>,
    /// Hold time proposed to the nodes, in seconds.
    pub hold_time: u16,
    /// BFD on every session: (interval in ms, both ways; multiplier).
    pub bfd: Option<(u32, u8)>,
    /// Prefixes this BIRD originates itself (static, blackholed locally), announced on every
    /// session of their family: a peer standing in for a node's speaker.
    pub announce: Vec<IpNet>,
}

impl Config {
    /// A router of AS `asn`, ID `router_id`, with one session per node of `nodes` (all in AS
    /// `node_asn`, no password; sessions named after the nodes, `node_a`), hold time 9 s and
    /// no BFD.
    pub fn for_nodes(
        c: &Cluster,
        nodes: &[&str],
        asn: u32,
        router_id: Ipv4Addr,
        node_asn: u32,
    ) -> Result<Config> {
        Self::sessions_with(nodes, asn, router_id, node_asn, |node| {
            Ok(crate::suite::node_address(c, node)?.into())
        })
    }

    /// [`Self::for_nodes`] over IPv6: one IPv6 unicast session per node of `nodes`, with
    /// the node's IPv6 address (dual-stack and IPv6-only segments).
    pub fn for_nodes_ipv6(
        c: &Cluster,
        nodes: &[&str],
        asn: u32,
        router_id: Ipv4Addr,
        node_asn: u32,
    ) -> Result<Config> {
        Self::sessions_with(nodes, asn, router_id, node_asn, |node| {
            let address = c.topology.node(node).and_then(|h| h.address6);
            Ok(address
                .with_context(|| format!("node {node} has no IPv6 address in the topology"))?
                .into())
        })
    }

    fn sessions_with(
        nodes: &[&str],
        asn: u32,
        router_id: Ipv4Addr,
        node_asn: u32,
        address: impl Fn(&str) -> Result<IpAddr>,
    ) -> Result<Config> {
        let neighbours = nodes
            .iter()
            .map(|node| {
                Ok(Neighbour {
                    name: node.replace('-', "_"),
                    address: address(node)?,
                    asn: node_asn,
                    password: None,
                    ipv6_channel: false,
                    ipv4_channel: false,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Config {
            asn,
            router_id,
            neighbours,
            hold_time: 9,
            bfd: None,
            announce: Vec::new(),
        })
    }

    /// The `bird.conf` text.
    #[must_use]
    pub fn render(&self) -> String {
        let mut conf = format!(
            "router id {};\n\
             protocol device {{ scan time 2; }}\n\
             # Routes learned from the nodes go into this router's kernel table.\n\
             protocol kernel {{ ipv4 {{ import none; export all; }}; }}\n",
            self.router_id
        );
        let v6 = self
            .neighbours
            .iter()
            .any(|n| n.address.is_ipv6() || n.ipv6_channel)
            || self.announce.iter().any(|p| matches!(p, IpNet::V6(_)));
        if v6 {
            conf.push_str("protocol kernel { ipv6 { import none; export all; }; }\n");
        }
        for (family, v6) in [("ipv4", false), ("ipv6", true)] {
            let routes: String = self
                .announce
                .iter()
                .filter(|p| matches!(p, IpNet::V6(_)) == v6)
                .map(|p| format!(" route {p} blackhole;"))
                .collect();
            if !routes.is_empty() {
                conf.push_str(&format!("protocol static {{ {family};{routes} }}\n"));
            }
        }
        let bfd = match self.bfd {
            Some((ms, multiplier)) => {
                conf.push_str("protocol bfd { }\n");
                format!(
                    "  bfd {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier {multiplier}; }};\n"
                )
            }
            None => String::new(),
        };
        for n in &self.neighbours {
            let ibgp = n.asn == self.asn;
            conf.push_str(&format!(
                "protocol bgp {name} {{\n  \
                   local as {local};\n  \
                   neighbor {addr} as {peer};\n  \
                   hold time {hold}; keepalive time {keep};\n  \
                   connect retry time 1; error wait time 1, 4;\n{password}{bfd}  \
                   {family} {{ import all; export all;{nh} }};\n{second}{rr}\
                 }}\n",
                password = n
                    .password
                    .as_ref()
                    .map(|p| format!("  password \"{p}\";\n"))
                    .unwrap_or_default(),
                name = n.name,
                local = self.asn,
                addr = n.address,
                peer = n.asn,
                hold = self.hold_time,
                keep = (self.hold_time / 3).max(1),
                nh = if ibgp { " next hop self;" } else { "" },
                rr = if ibgp { "  rr client;\n" } else { "" },
                bfd = bfd,
                family = if n.address.is_ipv6() { "ipv6" } else { "ipv4" },
                // BIRD announces its own IPv6 next hop, taken from the session's link.
                second = match (n.address.is_ipv4(), n.ipv6_channel, n.ipv4_channel) {
                    (true, true, _) | (false, _, true) => format!(
                        "  {} {{ import all; export all;{nh} }};\n",
                        if n.address.is_ipv4() { "ipv6" } else { "ipv4" },
                        nh = if ibgp { " next hop self;" } else { "" }
                    ),
                    _ => String::new(),
                },
            ));
        }
        conf
    }
}

/// A Routed PodNetwork with BGP towards the harness's routers: nodes in AS `node_asn`, hold
/// time 9 s with keepalives every 3 s (a lost session shows in seconds), and `peers`.
#[must_use]
pub fn bgp_network(name: &str, cidr: &str, node_asn: u32, peers: &[Value]) -> Value {
    let bgp = serde_json::json!({
        "asn": node_asn,
        "holdTimeSeconds": 9,
        "keepaliveSeconds": 3,
        "peers": peers,
    });
    crate::suite::pod_network(
        name,
        cidr,
        "Routed",
        serde_json::json!({"routed": {"bgp": bgp}}),
    )
}

/// A BGP peer for the nodes of one rack ([`crate::topology::presets::racks`]): the router's
/// `address` and `asn`.
#[must_use]
pub fn zone_peer(address: &str, asn: u32, zone: &str) -> Value {
    serde_json::json!({"address": address, "asn": asn,
        "nodeSelector": {"matchLabels": {crate::topology::presets::ZONE: zone}}})
}

/// A running BIRD.
pub struct Bird {
    router: String,
    ctl: PathBuf,
    conf: PathBuf,
    /// The BIRD process.
    pub id: ProcId,
}

impl Bird {
    /// Writes `config` and starts BIRD in `router`'s namespace; waits until it answers.
    pub fn start(c: &Cluster, router: &str, config: &Config) -> Result<Bird> {
        let dir = c.host_dir(router);
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config.render())?;
        let ctl = dir.join("bird.ctl");
        Self::spawn(c, router, conf, ctl)
    }

    fn spawn(c: &Cluster, router: &str, conf: PathBuf, ctl: PathBuf) -> Result<Bird> {
        let args = vec![
            "-f".to_string(),
            "-c".to_string(),
            conf.display().to_string(),
            "-s".to_string(),
            ctl.display().to_string(),
        ];
        let id = c.spawn(router, "bird", "bird", &args, &[])?;
        let bird = Bird {
            router: router.to_string(),
            ctl,
            conf,
            id,
        };
        wait_for(
            "BIRD answers on its socket",
            Duration::from_secs(10),
            || bird.birdc(&["show", "status"]).map(drop),
        )?;
        Ok(bird)
    }

    /// Writes `config` and has the running BIRD read it (`birdc configure`): sessions whose
    /// settings changed restart, the others stay up.
    pub fn reconfigure(&self, config: &Config) -> Result<()> {
        std::fs::write(&self.conf, config.render())?;
        let out = self.birdc(&["configure"])?;
        if !out.contains("Reconfigured") && !out.contains("Reconfiguration in progress") {
            bail!("birdc configure: {}", out.trim());
        }
        Ok(())
    }

    /// Stops BIRD (by pid) and removes its control socket.
    pub fn stop(self, c: &Cluster) {
        c.stop(&self.id);
        let _ = std::fs::remove_file(&self.ctl);
    }

    /// Stops BIRD (by pid) and starts it again with the same configuration.
    pub fn restart(self, c: &Cluster) -> Result<Bird> {
        self.restart_after(c, Duration::ZERO)
    }

    /// Stops BIRD (by pid), waits `down` (the router away), and starts it again.
    pub fn restart_after(self, c: &Cluster, down: Duration) -> Result<Bird> {
        c.stop(&self.id);
        let _ = std::fs::remove_file(&self.ctl);
        std::thread::sleep(down);
        Self::spawn(c, &self.router.clone(), self.conf.clone(), self.ctl.clone())
    }

    /// `birdc -s <ctl> ARGS`.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        birdc(&self.ctl, args)
    }

    /// Protocol name → state column and info (`Established`, `Active  Socket: ...`) of every
    /// BGP protocol.
    pub fn sessions(&self) -> Result<BTreeMap<String, String>> {
        Ok(parse_sessions(&self.birdc(&["show", "protocols"])?))
    }

    /// The prefixes in BIRD's table with their next hop (`show route`), best route only.
    pub fn routes(&self) -> Result<BTreeMap<String, String>> {
        Ok(parse_routes(&self.birdc(&["show", "route", "primary"])?))
    }

    /// The prefixes in BIRD's table with the AS path of their best route (`show route all`'s
    /// `BGP.as_path`, e.g. `64512`); routes without one (not from BGP) are left out.
    pub fn as_paths(&self) -> Result<BTreeMap<String, String>> {
        let text = self.birdc(&["show", "route", "all", "primary"])?;
        Ok(first_per_prefix(&text, |line| {
            line.trim()
                .strip_prefix("BGP.as_path:")
                .map(|path| path.trim().to_string())
        }))
    }

    /// Fails unless every session with `nodes` is Established on both ends and BIRD holds
    /// each node's subnet of `network` via the node: BIRD's sessions and table, and each
    /// NodeSubnet's `status.bgpSessions` (one session, with this router).
    pub fn expect_converged(&self, c: &Cluster, network: &str, nodes: &[&str]) -> Result<()> {
        let sessions = self.sessions()?;
        for node in nodes {
            let name = node.replace('-', "_");
            let state = sessions.get(&name).cloned().unwrap_or_default();
            ensure!(state.starts_with("Established"), "BIRD {name}: {state:?}");
        }
        let routes = self.routes()?;
        let subnets = crate::deploy::node_subnets(c, network)?;
        for node in nodes {
            let subnet = subnets
                .iter()
                .find(|s| s["spec"]["nodeName"] == *node)
                .with_context(|| format!("{node} has no NodeSubnet in {network}"))?;
            let cidr = subnet["spec"]["cidr"].as_str().unwrap_or_default();
            let addr = subnet["spec"]["nodeAddress"].as_str().unwrap_or_default();
            ensure!(
                routes.get(cidr).map(String::as_str) == Some(addr),
                "BIRD has {cidr} via {:?}, expected via {addr} ({node}); table {routes:?}",
                routes.get(cidr)
            );
        }
        for s in &subnets {
            let node = s["spec"]["nodeName"].as_str().unwrap_or_default();
            let sessions = s["status"]["bgpSessions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            // BIRD's counts: the node sends its own subnet, and holds the others' from us.
            ensure!(
                sessions.len() == 1
                    && sessions[0]["state"] == "Established"
                    && sessions[0]["routesAdvertised"] == 1
                    && sessions[0]["routesReceived"].as_i64() >= Some(1),
                "{node}: bgpSessions {sessions:?}"
            );
        }
        Ok(())
    }

    /// Reads BIRD's sessions and table every `every` in a thread until [`Watch::stop`]:
    /// whether each of `prefixes` is there, and how long each session is not Established.
    /// For disruptions on the nodes' side (an agent restarting), when a GR-aware router
    /// must keep their routes.
    #[must_use]
    pub fn watch(&self, prefixes: &[String], every: Duration) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (ctl, stop) = (self.ctl.clone(), Arc::clone(&stop));
            let prefixes = prefixes.to_vec();
            std::thread::spawn(move || watch(&ctl, &prefixes, every, &stop))
        };
        Watch { stop, thread }
    }
}

/// `birdc -s <ctl> ARGS`.
fn birdc(ctl: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(ctl)
        .args(args)
        .output()
        .context("running birdc (is bird2 installed?)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("Unable to connect") {
        bail!(
            "birdc {}: {}{}",
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

/// BGP protocols of `show protocols`: name → state column and info.
fn parse_sessions(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1) == Some(&"BGP")).then(|| {
                (
                    cols[0].to_string(),
                    cols.get(5..).map(|c| c.join(" ")).unwrap_or_default(),
                )
            })
        })
        .collect()
}

/// `show route` text: prefix → next hop of its first route.
fn parse_routes(text: &str) -> BTreeMap<String, String> {
    first_per_prefix(text, |line| {
        let via = line.find("via ")?;
        line[via + 4..]
            .split_whitespace()
            .next()
            .map(str::to_string)
    })
}

/// For each prefix of a `show route` reply, the first value `pick` finds on the lines from
/// the prefix's line up to the next prefix's.
fn first_per_prefix(text: &str, pick: impl Fn(&str) -> Option<String>) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(first) = line.split_whitespace().next()
            && first.contains('/')
            && first.parse::<IpNet>().is_ok()
        {
            current = Some(first.to_string());
        }
        if let (Some(prefix), Some(value)) = (&current, pick(line)) {
            found.entry(prefix.clone()).or_insert(value);
        }
    }
    found
}

/// A running [`Bird::watch`].
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Watched>,
}

impl Watch {
    /// Stops watching and returns what was seen.
    ///
    /// # Errors
    /// When the watching thread panicked.
    pub fn stop(self) -> Result<Watched> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the BIRD watcher panicked"))
    }
}

/// What a [`Watch`] saw.
#[derive(Clone, Debug, Default)]
pub struct Watched {
    /// Reads of sessions and table that succeeded.
    pub reads: u32,
    /// Reads that failed (BIRD not answering).
    pub failed: u32,
    /// Per watched prefix, how many reads lacked it.
    pub missing: BTreeMap<String, u32>,
    /// Per session that was ever seen not Established: the longest time it stayed so, from
    /// the first read seeing it down to the first seeing it Established again (or the end).
    pub down: BTreeMap<String, Duration>,
    /// The longest time between two successful reads: the resolution of the above.
    pub longest_between_reads: Duration,
}

impl Watched {
    /// `prefix` was in every read.
    #[must_use]
    pub fn never_lacked(&self, prefix: &str) -> bool {
        self.missing.get(prefix) == Some(&0)
    }
}

fn watch(ctl: &Path, prefixes: &[String], every: Duration, stop: &AtomicBool) -> Watched {
    let mut w = Watched {
        missing: prefixes.iter().map(|p| (p.clone(), 0)).collect(),
        ..Watched::default()
    };
    let mut down_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut last_read: Option<Instant> = None;
    let record = |w: &mut Watched, name: String, since: Instant| {
        let d = w.down.entry(name).or_default();
        *d = (*d).max(since.elapsed());
    };
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let read = birdc(ctl, &["show", "protocols"])
            .and_then(|sessions| Ok((sessions, birdc(ctl, &["show", "route", "primary"])?)));
        match read {
            Ok((sessions, routes)) => {
                w.reads += 1;
                if let Some(last) = last_read {
                    w.longest_between_reads = w.longest_between_reads.max(now - last);
                }
                last_read = Some(now);
                let routes = parse_routes(&routes);
                for (prefix, missing) in &mut w.missing {
                    if !routes.contains_key(prefix) {
                        *missing += 1;
                    }
                }
                for (name, state) in parse_sessions(&sessions) {
                    if state.starts_with("Established") {
                        if let Some(since) = down_since.remove(&name) {
                            record(&mut w, name, since);
                        }
                    } else {
                        down_since.entry(name).or_insert(now);
                    }
                }
            }
            Err(_) => w.failed += 1,
        }
        std::thread::sleep(every);
    }
    for (name, since) in down_since {
        record(&mut w, name, since);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            asn: 64500,
            router_id: Ipv4Addr::new(192, 168, 40, 1),
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
                    name: "node_d".into(),
                    address: "fd00:60::11".parse().expect("ip"),
                    asn: 64512,
                    password: None,
                    ipv6_channel: false,
                    ipv4_channel: false,
                },
            ],
            hold_time: 9,
            bfd: None,
            announce: vec!["fd00:244:9::/64".parse().expect("cidr")],
        }
    }

    #[test]
    fn an_ipv6_neighbour_gets_an_ipv6_channel_and_bird_accepts_the_configuration() {
        let mut config = config();
        // node_a: an IPv4 session carrying IPv6 too (a dual-stack Routed node).
        config.neighbours[0].ipv6_channel = true;
        let conf = config.render();
        assert!(
            conf.contains(
                "neighbor 192.168.50.11 as 64512;\n  hold time 9; keepalive time 3;\n  connect retry time 1; error wait time 1, 4;\n  ipv4 { import all; export all; };\n  ipv6 { import all; export all; };\n}"
            ),
            "{conf}"
        );
        assert!(conf.contains("neighbor fd00:60::11 as 64512;"), "{conf}");
        assert_eq!(
            conf.matches("  ipv4 { import all; export all; };").count(),
            1,
            "no IPv4 on node_d's IPv6 session: {conf}"
        );
        assert!(
            conf.contains("  ipv6 { import all; export all; };"),
            "{conf}"
        );
        assert!(
            conf.contains("  ipv4 { import all; export all; };"),
            "{conf}"
        );
        assert!(conf.contains("protocol kernel { ipv6 {"), "{conf}");
        assert!(
            conf.contains("protocol static { ipv6; route fd00:244:9::/64 blackhole; }"),
            "{conf}"
        );
        expect_bird_accepts(&conf, "v6");
    }

    /// BIRD itself parses `conf` (`bird -p`): the test machine has bird2 (DATAPLANE_NOTES.md).
    fn expect_bird_accepts(conf: &str, tag: &str) {
        let dir = std::env::temp_dir().join(format!("causeway-bird-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("bird.conf");
        std::fs::write(&path, conf).expect("write");
        let out = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("running bird -p (is bird2 installed?)");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "bird -p refused:\n{}{}\n{conf}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn an_ipv6_neighbour_may_carry_ipv4_too_and_bird_accepts_the_configuration() {
        let mut config = config();
        config.neighbours[1].ipv4_channel = true;
        let conf = config.render();
        assert!(
            conf.contains(
                "neighbor fd00:60::11 as 64512;\n  hold time 9; keepalive time 3;\n  connect retry time 1; error wait time 1, 4;\n  ipv6 { import all; export all; };\n  ipv4 { import all; export all; };\n}"
            ),
            "{conf}"
        );
        expect_bird_accepts(&conf, "v6v4");
    }

    #[test]
    fn an_ipv4_only_configuration_renders_as_before() {
        let mut c = config();
        c.neighbours.truncate(1);
        c.announce.clear();
        let conf = c.render();
        assert!(!conf.contains("ipv6"), "{conf}");
        assert_eq!(conf.matches("protocol kernel").count(), 1);
    }

    #[test]
    fn ipv6_routes_are_read_from_show_route() {
        let text = "Table master6:\n\
fd00:244:4::/64      unicast [node_d 13:30:01.123] * (100) [AS64512i]\n\
\tvia fd00:60::11 on e-lan-b\n\
Table master4:\n\
10.244.1.0/24        unicast [node_a 13:30:01.123] * (100) [AS64512i]\n\
\tvia 192.168.50.11 on e-lan-a\n";
        let routes = parse_routes(text);
        assert_eq!(routes["fd00:244:4::/64"], "fd00:60::11");
        assert_eq!(routes["10.244.1.0/24"], "192.168.50.11");
    }
}
