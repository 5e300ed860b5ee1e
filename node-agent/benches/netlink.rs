//! Programming many peers with the netlink dataplane, against `ip -batch` / `bridge -batch`
//! inserting the same routes, neighbours and FDB entries in the same run.
//!
//! `cargo bench -p causeway-node-agent --bench netlink [-- --peers 1000,5000]`: for each N,
//! a throwaway namespace `cwbench-<pid>-<n>` with a veth underlay (as in `tests/netlink.rs`)
//! gets a bridge, a VXLAN device and N peers (route + neighbour + FDB entry each) through
//! observe → diff → apply, then one peer changed, added and removed is timed; two more fresh
//! namespaces get the same N peers from `ip -batch` and `bridge -batch`: once with each IPv4
//! route through a nexthop object of its own, as the agent adds them, once with plain gateway
//! routes (as flannel adds them; the kernel's insert of those costs O(routes) each,
//! `node-agent/src/kernel/netlink/nexthop.rs`). After the largest N it prints the process's
//! peak memory.
//!
//! Without `--bench` (`cargo test --all-targets`) it runs once with N = 50 as a smoke test.
//! Needs root and iproute2. Every namespace is removed by a guard, also on error or panic;
//! the root namespace is never touched.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use causeway_node_agent::diff::diff;
use causeway_node_agent::model::{
    Address, Dataplane, Fdb, Link, LinkKind, LinkName, Mac, Neighbour, Op, Route, State,
};
use causeway_node_agent::netlink::{Netlink, nexthop};
use causeway_node_agent::plan::{BRIDGE_LINK, vxlan_link_name};
use ipnet::Ipv4Net;
use serde_json::Value;

static NEXT: AtomicUsize = AtomicUsize::new(0);

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const VNI: u32 = 1;
const VTEP_MAC: Mac = Mac([0x0e, 0xcc, 0, 0, 0, 1]);
const PROTO: u8 = causeway_node_agent::model::ROUTE_PROTOCOL;
const SMOKE_PEERS: usize = 50;
const DEFAULT_PEERS: [usize; 2] = [1000, 5000];

/// A throwaway network namespace (and its batch files), deleted on drop.
struct Netns {
    name: String,
    files: Vec<PathBuf>,
}

impl Netns {
    /// A namespace with an underlay: veth `eth0` (192.168.77.1/24, up) and its peer `eth1`.
    fn with_underlay() -> Result<Self> {
        let name = format!(
            "cwbench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name])?;
        let ns = Netns {
            name,
            files: Vec::new(),
        };
        ns.ip("link set lo up")?;
        ns.ip("link add eth0 type veth peer name eth1")?;
        ns.ip(&format!("addr add {NODE_IP}/24 dev eth0"))?;
        ns.ip("link set eth0 up")?;
        ns.ip("link set eth1 up")?;
        Ok(ns)
    }

    fn ip(&self, args: &str) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend(args.split_whitespace());
        run("ip", &all)
    }

    fn json(&self, program: &str, args: &str) -> Result<Vec<Value>> {
        let mut all = vec!["-n", &self.name, "-j"];
        all.extend(args.split_whitespace());
        let text = run(program, &all)?;
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        match serde_json::from_str(&text).context("JSON output")? {
            Value::Array(items) => Ok(items),
            other => bail!("expected a JSON array from `{program} {args}`, got {other}"),
        }
    }

    /// Writes a batch file that is removed with the namespace.
    fn batch_file(&mut self, what: &str, text: &str) -> Result<PathBuf> {
        let path = std::env::temp_dir().join(format!("{}-{what}.batch", self.name));
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        self.files.push(path.clone());
        Ok(path)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

fn output(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (the benchmark needs iproute2)"))
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = output(program, args)?;
    ensure!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Peer `i`: pod subnet 10.(16 + i/256).(i%256).0/24, VTEP MAC 0e:cd:00:00:hi:lo, node
/// address 172.16.0.1 + i (not reachable; the kernel does not care).
struct Peer {
    cidr: Ipv4Net,
    mac: Mac,
    node: Ipv4Addr,
}

fn peer(i: usize) -> Result<Peer> {
    let i = u32::try_from(i)?;
    ensure!(i < 60_000, "at most 60000 peers");
    let [_, _, hi, lo] = i.to_be_bytes();
    let cidr = Ipv4Net::new(Ipv4Addr::new(10, 16 + hi, lo, 0), 24)?;
    Ok(Peer {
        cidr,
        mac: Mac([0x0e, 0xcd, 0, 0, hi, lo]),
        node: Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i),
    })
}

fn bridge_cidr() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 1), 24).unwrap_or_default()
}

fn vxlan_cidr() -> Ipv4Net {
    Ipv4Net::from(Ipv4Addr::new(10, 244, 0, 0))
}

/// The state the agent would plan: bridge and VXLAN device with their addresses.
fn base_state() -> State {
    let vx = vxlan_link_name(VNI);
    let mut state = State::default();
    for link in [
        Link {
            name: BRIDGE_LINK.into(),
            kind: LinkKind::Bridge,
            mtu: 1450,
            up: true,
        },
        Link {
            name: vx.clone(),
            kind: LinkKind::Vxlan {
                vni: VNI,
                port: 8472,
                local: NODE_IP.into(),
                underlay: "eth0".into(),
                mac: VTEP_MAC,
            },
            mtu: 1450,
            up: true,
        },
    ] {
        state.links.insert(link.name.clone(), link);
    }
    for (dev, addr) in [(BRIDGE_LINK.to_owned(), bridge_cidr()), (vx, vxlan_cidr())] {
        let addr = ipnet::IpNet::from(addr);
        state.addresses.insert((dev, addr), Address { addr });
    }
    state
}

fn add_peer(state: &mut State, p: &Peer) {
    let vx: LinkName = vxlan_link_name(VNI).into();
    let gateway = p.cidr.network();
    state.routes.insert(
        p.cidr.into(),
        Route {
            dst: p.cidr.into(),
            gateway: Some(gateway.into()),
            dev: vx.clone(),
            onlink: true,
        },
    );
    state.neighbours.insert(
        (vx.clone(), gateway.into()),
        Neighbour {
            dev: vx.clone(),
            ip: gateway.into(),
            mac: p.mac,
        },
    );
    state.fdb.insert(
        (vx.clone(), p.mac),
        Fdb {
            dev: vx,
            mac: p.mac,
            dst: p.node.into(),
        },
    );
}

fn remove_peer(state: &mut State, p: &Peer) {
    let vx: LinkName = vxlan_link_name(VNI).into();
    state.routes.remove(&p.cidr.into());
    state
        .neighbours
        .remove(&(vx.clone(), p.cidr.network().into()));
    state.fdb.remove(&(vx, p.mac));
}

async fn apply_all(netlink: &mut Netlink, ops: &[Op]) -> Result<()> {
    Dataplane::apply_all(netlink, ops)
        .await
        .map_err(|(i, e)| anyhow::anyhow!("apply op {i}: {e}"))
}

/// Observes and checks that the kernel holds exactly `desired` (an empty diff) with `n` peers.
async fn verify(netlink: &mut Netlink, desired: &State, n: usize) -> Result<State> {
    let observed = netlink.observe().await.context("observe")?;
    let counts = (
        observed.routes.len(),
        observed.neighbours.len(),
        observed.fdb.len(),
    );
    ensure!(
        counts == (n, n, n),
        "expected {n} routes, neighbours and FDB entries; observed {counts:?}"
    );
    let left = diff(desired, &observed);
    ensure!(
        left.is_empty(),
        "kernel differs from desired state after apply; first of {} ops left: {}",
        left.len(),
        left[0]
    );
    Ok(observed)
}

struct Run {
    causeway: Duration,
    ops: usize,
    /// The agent's diff + apply of one peer added to the N programmed.
    add_one: Duration,
}

/// Causeway: program `n` peers into a fresh namespace, then time one peer changed, added and
/// removed.
async fn causeway(n: usize) -> Result<Run> {
    // Declared first so it is dropped last, after the netlink connection.
    let ns = Netns::with_underlay()?;
    let mut netlink = Netlink::in_netns(&ns.name).await?;
    let mut desired = base_state();
    for i in 0..n {
        add_peer(&mut desired, &peer(i)?);
    }

    let start = Instant::now();
    let observed = netlink.observe().await.context("observe")?;
    let ops = diff(&desired, &observed);
    apply_all(&mut netlink, &ops).await?;
    let elapsed = start.elapsed();
    let mut observed = verify(&mut netlink, &desired, n).await?;
    let mut add_one = Duration::ZERO;

    println!();
    println!("One peer change at N = {n} (diff + apply; observe timed separately):");
    let t = Instant::now();
    let again = netlink.observe().await.context("observe")?;
    let observe_time = t.elapsed();
    ensure!(again == observed, "observe is not stable");
    println!(
        "  observe (full read of {n} peers): {:>9.3} ms",
        ms(observe_time)
    );

    let p0 = peer(0)?;
    let vx: LinkName = vxlan_link_name(VNI).into();
    let mut changed = desired.clone();
    if let Some(entry) = changed.fdb.get_mut(&(vx, p0.mac)) {
        entry.dst = Ipv4Addr::new(172, 31, 0, 1).into();
    }
    let mut added = changed.clone();
    add_peer(&mut added, &peer(n)?);
    let mut removed = added.clone();
    remove_peer(&mut removed, &peer(1)?);

    for (what, next, peers) in [
        ("change node address (FDB dst)", changed, n),
        ("add one peer", added, n + 1),
        ("remove one peer", removed, n),
    ] {
        let t = Instant::now();
        let ops = diff(&next, &observed);
        let diffed = t.elapsed();
        apply_all(&mut netlink, &ops).await?;
        let took = t.elapsed();
        if peers == n + 1 {
            add_one = took - diffed;
        }
        let kinds: Vec<String> = ops
            .iter()
            .map(|op| {
                op.to_string()
                    .split(' ')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        println!(
            "  {what:<30} {:>2} ops {:>9.3} ms (diff {:.3} ms)  [{}]",
            ops.len(),
            ms(took),
            ms(diffed),
            kinds.join(", ")
        );
        ensure!(
            (1..=3).contains(&ops.len()),
            "{what}: expected 1-3 ops, got {}",
            ops.len()
        );
        observed = verify(&mut netlink, &next, peers).await?;
    }
    drop(netlink);
    drop(ns);
    Ok(Run {
        causeway: elapsed,
        ops: ops.len(),
        add_one,
    })
}

/// Which routes a baseline adds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routes {
    /// As the agent adds them: each through a nexthop object of its own.
    Nexthops,
    /// Plain gateway routes (`route add DST via GW dev DEV onlink`), as flannel and the agent
    /// before nexthop objects add them.
    Plain,
}

/// Baseline: the same links made with `ip` (not timed), then `ip -batch` (routes, with or
/// without nexthop objects, and neighbours) and `bridge -batch` (FDB entries) timed together.
fn baseline(n: usize, routes: Routes) -> Result<Duration> {
    let mut ns = Netns::with_underlay()?;
    let vx = vxlan_link_name(VNI);
    ns.ip(&format!("link add {BRIDGE_LINK} mtu 1450 type bridge"))?;
    ns.ip(&format!(
        "link add {vx} mtu 1450 address {VTEP_MAC} type vxlan id {VNI} dstport 8472 local {NODE_IP} dev eth0 nolearning"
    ))?;
    ns.ip(&format!("addr add {} dev {BRIDGE_LINK}", bridge_cidr()))?;
    ns.ip(&format!("addr add {} dev {vx}", vxlan_cidr()))?;
    ns.ip(&format!("link set {BRIDGE_LINK} up"))?;
    ns.ip(&format!("link set {vx} up"))?;

    let mut ip_lines = String::new();
    let mut fdb_lines = String::new();
    for i in 0..n {
        let p = peer(i)?;
        let gw = p.cidr.network();
        if routes == Routes::Nexthops {
            let id = nexthop::FIRST_ID + u32::try_from(i)?;
            writeln!(
                ip_lines,
                "nexthop add id {id} via {gw} dev {vx} onlink proto {PROTO}"
            )?;
            writeln!(ip_lines, "route add {} nhid {id} proto {PROTO}", p.cidr)?;
        } else {
            writeln!(
                ip_lines,
                "route add {} via {gw} dev {vx} onlink proto {PROTO}",
                p.cidr
            )?;
        }
        writeln!(
            ip_lines,
            "neigh add {gw} lladdr {} dev {vx} nud permanent",
            p.mac
        )?;
        writeln!(
            fdb_lines,
            "fdb add {} dev {vx} dst {} self permanent",
            p.mac, p.node
        )?;
    }
    let ip_file = ns.batch_file("ip", &ip_lines)?;
    let fdb_file = ns.batch_file("fdb", &fdb_lines)?;
    let ip_file = ip_file.to_string_lossy().into_owned();
    let fdb_file = fdb_file.to_string_lossy().into_owned();

    let start = Instant::now();
    run("bridge", &["-n", &ns.name, "-batch", &fdb_file])?;
    run("ip", &["-n", &ns.name, "-batch", &ip_file])?;
    let elapsed = start.elapsed();

    let routes = ns.json("ip", &format!("route show proto {PROTO}"))?.len();
    let neighbours = ns
        .json("ip", &format!("neigh show dev {vx} nud permanent"))?
        .len();
    let fdb = ns
        .json("bridge", &format!("fdb show dev {vx}"))?
        .iter()
        .filter(|e| e.get("dst").is_some())
        .count();
    ensure!(
        (routes, neighbours, fdb) == (n, n, n),
        "ip -batch: expected {n} routes, neighbours and FDB entries; found {routes}, {neighbours}, {fdb}"
    );
    Ok(elapsed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn vm_hwm() -> Result<String> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .map(|v| v.trim().to_owned())
        .context("no VmHWM in /proc/self/status")
}

fn peer_counts(args: &[String]) -> Result<Vec<usize>> {
    let bench = args.iter().any(|a| a == "--bench");
    let given = args
        .iter()
        .position(|a| a == "--peers")
        .map(|i| {
            args.get(i + 1)
                .context("--peers needs a value like 1000,5000")
        })
        .transpose()?;
    match given {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse().with_context(|| format!("--peers {list}")))
            .collect(),
        None if bench => Ok(DEFAULT_PEERS.to_vec()),
        None => Ok(vec![SMOKE_PEERS]),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let counts = peer_counts(&args)?;
    ensure!(
        !counts.is_empty() && counts.iter().all(|&n| n > 1),
        "--peers needs counts above 1"
    );
    let largest = counts.iter().copied().max().unwrap_or_default();
    if !args.iter().any(|a| a == "--bench") {
        println!("smoke run (no --bench): N = {counts:?}");
    }

    let mut rows = Vec::new();
    for &n in &counts {
        let run = causeway(n).await?;
        let ip = baseline(n, Routes::Nexthops)?;
        let plain = baseline(n, Routes::Plain)?;
        rows.push((n, run, ip, plain));
        if n == largest {
            println!();
            println!(
                "Peak memory (VmHWM) after the N = {n} run: {} -- of this bench process, which holds the same State and Netlink as the agent (plus the bench's own copies).",
                vm_hwm()?
            );
        }
    }

    println!();
    println!(
        "Programming N peers (route + neighbour + FDB each) into an empty namespace; causeway = observe + diff + apply (incl. 2 links, 2 addresses), ip-batch = `ip -batch` + `bridge -batch` of the same entries (routes through nexthop objects; links made beforehand), ip-batch plain = the same with plain gateway routes; apply one peer = the kernel operations of one new peer added to N (the agent's peer pass plans that peer alone; this bench's full diff is timed apart above):"
    );
    println!(
        "{:>6} | {:>11} | {:>11} | {:>17} | {:>13} | {:>17} | {:>11} | {:>17}",
        "N",
        "causeway ms",
        "ip-batch ms",
        "ip-batch plain ms",
        "ratio (cw/ip)",
        "ratio (cw/plain)",
        "netlink ops",
        "apply one peer ms"
    );
    for (n, run, ip, plain) in &rows {
        println!(
            "{n:>6} | {:>11.1} | {:>11.1} | {:>17.1} | {:>13.2} | {:>17.2} | {:>11} | {:>17.3}",
            ms(run.causeway),
            ms(*ip),
            ms(*plain),
            run.causeway.as_secs_f64() / ip.as_secs_f64(),
            run.causeway.as_secs_f64() / plain.as_secs_f64(),
            run.ops,
            ms(run.add_one)
        );
    }
    Ok(())
}
