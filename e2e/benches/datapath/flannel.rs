//! flannel's pod↔pod paths as the datapath bench's reference (`--flannel`, issue #19): the
//! same two nodes, the same interleaved runs and checks as a Causeway block, with flanneld
//! (v0.28.10, Kubernetes subnet manager) on each node and pods attached by flannel's CNI
//! plugin, as flannel's own manifest (`kube-flannel.yml`) sets it up, once per [`Backend`]:
//! VXLAN (the manifest's default; Causeway's Overlay is its counterpart) and host-gw (routes
//! to each node's subnet via its address; Causeway's Routed):
//!
//! - each Node gets a `spec.podCIDR` of `10.244.0.0/16` (a /24, as kube-controller-manager
//!   would allocate; Causeway's blocks are over by then and use the same range) and flanneld
//!   its `net-conf.json` (`{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}`: VNI 1,
//!   port 8472; or `"host-gw"`);
//! - flanneld runs with the manifest's `--ip-masq --kube-subnet-mgr` (masquerading and its
//!   FORWARD rules through iptables, so conntrack is on the path as with Causeway's NAT table),
//!   `--iface=eth0`, and its files in the node's own directory;
//! - the CNI config is the manifest's: the `flannel` plugin with `delegate: {hairpinMode: true,
//!   isDefaultGateway: true}`, which attaches the pod with the reference `bridge` plugin to
//!   `cni0` (gateway on the bridge, the MTU from flanneld's subnet.env: the underlay's − 50),
//!   host-local on the node's /24. The manifest's second plugin, `portmap`, is left out, as
//!   Causeway's config has none; it does nothing for a pod without host ports.
//!
//! After each block flanneld is stopped by its pid, and what it built (`flannel.1`, `cni0`, the
//! host-gw route, its iptables rules, the CNI config) is removed, so that the next block and
//! the end baseline run on clean nodes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use causeway_crds::v1alpha1::PodNetworkMode;
use causeway_e2e::proc::ProcId;
use causeway_e2e::traffic::wait_for;
use causeway_e2e::{Cluster, pods};
use serde_json::json;

use super::{
    BenchPod, CLIENT, Family, ModeResult, NODES, Options, Series, Subject, interleave, link_mtu,
    load_average, node_is_clean,
};

/// flanneld's backend of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Vxlan,
    HostGw,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Vxlan, Backend::HostGw];

    pub fn label(self) -> &'static str {
        match self {
            Backend::Vxlan => "VXLAN",
            Backend::HostGw => "host-gw",
        }
    }

    /// `Backend.Type` in flanneld's net-conf.json.
    fn type_name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }

    /// The Causeway mode whose path has the same shape.
    pub fn causeway_mode(self) -> PodNetworkMode {
        match self {
            Backend::Vxlan => PodNetworkMode::Overlay,
            Backend::HostGw => PodNetworkMode::Routed,
        }
    }

    /// What the backend costs the pod MTU (flanneld's subnet.env says the underlay's − this).
    fn overhead(self) -> u32 {
        match self {
            Backend::Vxlan => 50,
            Backend::HostGw => 0,
        }
    }

    /// The device flanneld routes the other node's subnet through.
    fn route_device(self) -> &'static str {
        match self {
            Backend::Vxlan => DEVICE,
            Backend::HostGw => "eth0",
        }
    }
}

/// flannel's VXLAN device (`flannel.<VNI>`) and the bridge its CNI config attaches pods to.
const DEVICE: &str = "flannel.1";
const BRIDGE: &str = "cni0";
/// The network flanneld is given, and each node's /24 of it (node-a the first).
const NETWORK: &str = "10.244.0.0/16";
const CONF_FILE: &str = "10-flannel.conflist";
/// How long flanneld may take to write its subnet.env and route to the other node.
const UP_TIMEOUT: Duration = Duration::from_secs(60);

/// flannel's binaries: flanneld, and the directory holding its CNI plugin.
pub struct Binaries {
    pub flanneld: PathBuf,
    pub cni_dir: PathBuf,
}

impl Binaries {
    /// Builds them the first time (`e2e/scripts/build-flannel.sh`), else finds them.
    pub fn find() -> Result<Self> {
        Ok(Binaries {
            flanneld: causeway_e2e::flannel::flanneld()?,
            cni_dir: causeway_e2e::flannel::cni_plugin_dir()?,
        })
    }
}

fn role(node: &str) -> String {
    format!("flanneld-{node}")
}

/// The process roles whose logs a failure shows.
pub fn roles() -> Vec<String> {
    NODES.iter().map(|n| role(n)).collect()
}

fn subnet_file(c: &Cluster, node: &str) -> PathBuf {
    c.host_dir(node).join("run/flannel/subnet.env")
}

/// `node`'s /24: node-a 10.244.0.0/24, node-b 10.244.1.0/24.
fn pod_cidr(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

/// The flannel block of `backend`: flanneld up on both nodes, a pod on each, the interleaved
/// runs, and everything flannel built removed again.
pub fn run(
    c: &Cluster,
    bins: &Binaries,
    backend: Backend,
    underlay_mtu: u32,
    opts: &Options,
) -> Result<ModeResult> {
    let load = load_average()?;
    let mut procs = Vec::new();
    let measured = start(c, bins, backend, &mut procs)
        .and_then(|()| measure(c, bins, backend, underlay_mtu, opts, load));
    for id in &procs {
        c.stop(id);
    }
    let cleaned = NODES.iter().try_for_each(|node| clean(c, node));
    let result = measured?;
    cleaned?;
    Ok(result)
}

/// Gives the Nodes their pod CIDRs and flanneld's config, and starts flanneld on each node
/// (its ids into `procs`, so the caller stops them whatever happens next); returns once each
/// has written its subnet.env and routes the other node's /24 through the backend's device.
fn start(c: &Cluster, bins: &Binaries, backend: Backend, procs: &mut Vec<ProcId>) -> Result<()> {
    for (i, node) in NODES.iter().enumerate() {
        // podCIDR as kube-controller-manager would set it; flanneld v0.28.10 also needs an
        // annotations map on the Node to add its own to (as a kubelet registers it).
        let patch = json!({
            "metadata": {"annotations": {"causeway.dev/bench": "flannel reference"}},
            "spec": {"podCIDR": pod_cidr(i), "podCIDRs": [pod_cidr(i)]},
        });
        c.kubectl(&[
            "patch",
            "node",
            node,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])?;
        let dir = c.host_dir(node);
        let conf = dir.join("etc/kube-flannel/net-conf.json");
        for d in [conf.parent(), subnet_file(c, node).parent()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let net_conf = json!({"Network": NETWORK, "Backend": {"Type": backend.type_name()}});
        std::fs::write(&conf, net_conf.to_string())
            .with_context(|| format!("writing {}", conf.display()))?;
        let args = vec![
            "--ip-masq".to_string(),
            "--kube-subnet-mgr".into(),
            format!("--kubeconfig-file={}", c.kubeconfig_underlay.display()),
            "--iface=eth0".into(),
            format!("--net-config-path={}", conf.display()),
            format!("--subnet-file={}", subnet_file(c, node).display()),
        ];
        procs.push(c.spawn(
            node,
            &role(node),
            &bins.flanneld.display().to_string(),
            &args,
            &[("NODE_NAME", node)],
        )?);
    }
    let dev = backend.route_device();
    for (i, node) in NODES.iter().enumerate() {
        let other = pod_cidr(1 - i);
        wait_for(
            &format!("flanneld on {node} writes its subnet.env and routes {other} via {dev}"),
            UP_TIMEOUT,
            || {
                ensure!(
                    procs.iter().all(ProcId::alive),
                    "a flanneld exited (its log is below)"
                );
                let env = std::fs::read_to_string(subnet_file(c, node)).unwrap_or_default();
                ensure!(env.contains("FLANNEL_SUBNET="), "no subnet.env yet");
                let route = c.exec(node, "ip", &["-4", "route", "show", &other, "dev", dev]);
                ensure!(
                    route.is_ok_and(|r| !r.trim().is_empty()),
                    "no route to {other} via {dev} yet"
                );
                Ok(())
            },
        )?;
    }
    Ok(())
}

/// flannel's CNI config for `node`, as `kube-flannel.yml` writes it, with the files it keeps
/// (subnet.env, the delegate's saved config, host-local's store) in the node's directory.
fn write_conf(c: &Cluster, node: &str) -> Result<()> {
    let dir = c.host_dir(node);
    let conf = json!({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [{
            "type": "flannel",
            "subnetFile": subnet_file(c, node),
            "dataDir": dir.join("var/lib/cni/flannel"),
            "ipam": {"type": "host-local", "dataDir": dir.join("var/lib/cni/networks")},
            "delegate": {"hairpinMode": true, "isDefaultGateway": true},
        }],
    });
    let conf_dir = c.cni_conf_dir(node);
    std::fs::create_dir_all(&conf_dir)
        .with_context(|| format!("creating {}", conf_dir.display()))?;
    let path = conf_dir.join(CONF_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&conf)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn measure(
    c: &Cluster,
    bins: &Binaries,
    backend: Backend,
    underlay_mtu: u32,
    opts: &Options,
    load: String,
) -> Result<ModeResult> {
    for node in NODES {
        write_conf(c, node)?;
    }
    let extra: [&Path; 1] = [&bins.cni_dir];
    let mut pods = Vec::new();
    let attached = NODES.iter().try_for_each(|node| {
        pods.push(pods::add_with_plugins(c, node, "flannel", &extra)?);
        Ok(())
    });
    let measured = attached.and_then(|()| {
        let [client, server] = [&pods[0], &pods[1]].map(|p| BenchPod::V4(p.clone()));
        let want_mtu = underlay_mtu - backend.overhead();
        for pod in [&client, &server] {
            let mtu = link_mtu(pod.netns(), "eth0")?;
            ensure!(
                mtu == want_mtu,
                "flannel {} pod on {} has MTU {mtu}, want the underlay's {underlay_mtu} − {}",
                backend.label(),
                pod.node(),
                backend.overhead()
            );
        }
        wait_for(
            "the flannel pod on node-a reaches the one on node-b",
            Duration::from_secs(15),
            || client.expect_ping(server.ip()),
        )?;
        let (IpAddr::V4(a), IpAddr::V4(b)) = (client.ip(), server.ip()) else {
            unreachable!("flannel pods are IPv4 pods");
        };
        eprintln!(
            "[bench] flannel {} IPv4: pods {a} ({CLIENT}) → {b}, MTU {want_mtu}, load {load}",
            backend.label()
        );
        let mut result = ModeResult {
            subject: Subject::Flannel(backend),
            family: Family::V4,
            pod_mtu: want_mtu,
            load,
            single: Series::default(),
            parallel: (opts.parallel > 1).then(Series::default),
            vxlan_tx: (backend == Backend::Vxlan).then_some(0),
        };
        interleave(c, &mut result, &client, &server, opts)?;
        Ok(result)
    });
    for pod in &pods {
        pods::del_with_plugins(c, pod, &extra)?;
    }
    measured
}

/// Removes what flannel built on `node`: its CNI config, `flannel.1` and `cni0` (their routes
/// go with them), host-gw's route to the other node's subnet, its iptables rules and the
/// nftables tables they live in; then checks the node holds nothing of Causeway's or flannel's.
fn clean(c: &Cluster, node: &str) -> Result<()> {
    let conf = c.cni_conf_dir(node).join(CONF_FILE);
    if conf.exists() {
        std::fs::remove_file(&conf).with_context(|| format!("removing {}", conf.display()))?;
    }
    for link in [DEVICE, BRIDGE] {
        if c.exec(node, "ip", &["link", "show", link]).is_ok() {
            c.exec(node, "ip", &["link", "del", link])?;
        }
    }
    for i in 0..NODES.len() {
        let cidr = pod_cidr(i);
        if !c
            .exec(node, "ip", &["-4", "route", "show", &cidr])?
            .trim()
            .is_empty()
        {
            c.exec(node, "ip", &["-4", "route", "del", &cidr])?;
        }
    }
    // Only this node's namespace: the rules flanneld added (iptables-nft keeps them in the
    // `ip nat` and `ip filter` tables, which hold nothing else here).
    for table in ["nat", "filter"] {
        c.exec(node, "iptables", &["-t", table, "-F"])?;
        c.exec(node, "iptables", &["-t", table, "-X"])?;
    }
    c.exec(node, "nft", &["flush", "ruleset"])?;
    let links = c.exec(node, "ip", &["-brief", "link", "show"])?;
    ensure!(
        !links
            .lines()
            .any(|l| l.starts_with(DEVICE) || l.starts_with(BRIDGE)),
        "{node}: flannel's links left: {links}"
    );
    let routes = c.exec(node, "ip", &["-4", "route", "show", "root", NETWORK])?;
    ensure!(
        routes.trim().is_empty(),
        "{node}: flannel's routes left: {routes}"
    );
    let rules = c.exec(node, "nft", &["list", "ruleset"])?;
    ensure!(
        rules.trim().is_empty(),
        "{node}: nftables rules left: {rules}"
    );
    wait_for(
        &format!("{node} is clean after the flannel block"),
        Duration::from_secs(5),
        || node_is_clean(c, node),
    )?;
    Ok(())
}
