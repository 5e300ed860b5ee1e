//! Pods as network namespaces attached the way containerd does it: read the node's CNI
//! configuration directory, take the first file in lexical order, and run the plugin chain
//! with the CNI protocol (`CNI_COMMAND=ADD|DEL`, configuration on stdin, result on stdout).
//! The plugins are the real reference plugins from `/usr/lib/cni`; [`add_with_plugins`] also
//! looks in a directory of its caller's (the datapath bench's flannel CNI plugin, which
//! delegates to the reference `bridge` plugin found through the same search path).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::cluster::Cluster;
use crate::cmd;

/// Directory holding the CNI reference plugins (Debian `containernetworking-plugins`).
pub const CNI_PATH: &str = "/usr/lib/cni";

/// A pod: a namespace with `eth0` attached by CNI.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// Prefix length of the pod's address.
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The CNI result JSON the plugin chain printed.
    pub result: Value,
}

/// A network configuration as found in a CNI config directory, normalised to a plugin list.
#[derive(Clone, Debug)]
pub struct NetConf {
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

/// Loads the configuration a container runtime would use: the first `.conflist`, `.conf` or
/// `.json` file in lexical order.
pub fn load_netconf(dir: &Path) -> Result<NetConf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading CNI config directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let path = files.into_iter().next().with_context(|| {
        format!(
            "no CNI network config in {} (has the agent written it?)",
            dir.display()
        )
    })?;
    let text = std::fs::read_to_string(&path)?;
    parse_netconf(&path, &text)
}

/// Parses a `.conf` (one plugin) or `.conflist` (a chain) into a [`NetConf`].
pub fn parse_netconf(path: &Path, text: &str) -> Result<NetConf> {
    let v: Value =
        serde_json::from_str(text).with_context(|| format!("parsing {}", path.display()))?;
    let name = v["name"]
        .as_str()
        .with_context(|| format!("{}: no network `name`", path.display()))?
        .to_string();
    let cni_version = v["cniVersion"].as_str().unwrap_or("1.0.0").to_string();
    let plugins = match v.get("plugins") {
        Some(Value::Array(list)) => list.clone(),
        Some(_) => bail!("{}: `plugins` is not a list", path.display()),
        None => vec![v.clone()],
    };
    ensure!(!plugins.is_empty(), "{}: empty plugin list", path.display());
    Ok(NetConf {
        path: path.to_path_buf(),
        name,
        cni_version,
        plugins,
    })
}

/// The stdin configuration for one plugin of the chain, as the CNI spec builds it.
pub fn plugin_config(conf: &NetConf, plugin: &Value, prev_result: Option<&Value>) -> Value {
    let mut cfg = plugin.clone();
    cfg["name"] = Value::String(conf.name.clone());
    cfg["cniVersion"] = Value::String(conf.cni_version.clone());
    if let Some(prev) = prev_result {
        cfg["prevResult"] = prev.clone();
    }
    cfg
}

fn invoke(
    cluster: &Cluster,
    node: &str,
    command: &str,
    pod_ns: &str,
    cfg: &Value,
    extra: &[&Path],
) -> Result<Value> {
    let plugin = cfg["type"].as_str().context("plugin without `type`")?;
    let dirs: Vec<&Path> = extra.iter().copied().chain([Path::new(CNI_PATH)]).collect();
    let search = std::env::join_paths(&dirs).context("a CNI plugin directory holds a `:`")?;
    let Some(bin) = dirs.iter().map(|d| d.join(plugin)).find(|b| b.is_file()) else {
        bail!(
            "CNI plugin {plugin} is in none of {}: run `make deps` (containernetworking-plugins)",
            search.to_string_lossy()
        );
    };
    let mut c = cmd::in_netns(&cluster.ns(node), &bin.display().to_string());
    c.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod_ns)
        .env("CNI_NETNS", format!("/run/netns/{pod_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &search);
    let out = cmd::run_stdin(&mut c, cfg.to_string().as_bytes()).map_err(|e| {
        // Plugins report errors as JSON on stdout; the runner's error carries it.
        e.context(format!(
            "CNI {command} of {pod_ns} with plugin `{plugin}` on {node}"
        ))
    })?;
    if out.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&out)
        .with_context(|| format!("CNI plugin {plugin} printed non-JSON: {out}"))
}

/// Creates pod `name` on `node` and attaches it with the node's CNI configuration.
pub fn add(cluster: &Cluster, node: &str, name: &str) -> Result<Pod> {
    add_with_plugins(cluster, node, name, &[])
}

/// [`add`] with plugins looked up in `extra` before [`CNI_PATH`] (the search path a plugin
/// delegating to another gets in `CNI_PATH`, as a runtime configured with several plugin
/// directories passes it).
pub fn add_with_plugins(cluster: &Cluster, node: &str, name: &str, extra: &[&Path]) -> Result<Pod> {
    let (netns, result) = attach(cluster, node, name, extra)?;
    let (ip, prefix_len, gateway) = first_ipv4(&result)?;
    Ok(Pod {
        name: name.to_string(),
        node: node.to_string(),
        netns,
        ip,
        prefix_len,
        gateway,
        result,
    })
}

/// A pod of an IPv6-only network: [`Pod`] with its IPv6 address.
#[derive(Clone, Debug)]
pub struct Pod6 {
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ip: std::net::Ipv6Addr,
    /// The CNI result JSON the plugin chain printed.
    pub result: Value,
}

/// [`add`] on an IPv6-only network: the pod's address is its IPv6 one.
pub fn add6(cluster: &Cluster, node: &str, name: &str) -> Result<Pod6> {
    let (netns, result) = attach(cluster, node, name, &[])?;
    Ok(Pod6 {
        name: name.to_string(),
        node: node.to_string(),
        netns,
        ip: first_ipv6(&result)?,
        result,
    })
}

/// [`del`] for a [`Pod6`].
pub fn del6(cluster: &Cluster, pod: &Pod6) -> Result<()> {
    detach(cluster, &pod.node, &pod.netns, &pod.result, &[])
}

/// Creates namespace `<node's>-pod-<name>` and runs the node's CNI chain (ADD) for it: the
/// namespace and the chain's result.
fn attach(cluster: &Cluster, node: &str, name: &str, extra: &[&Path]) -> Result<(String, Value)> {
    let conf = load_netconf(&cluster.cni_conf_dir(node))?;
    let netns = format!("{}-pod-{name}", cluster.ns(node));
    crate::cmd::ensure_not_shutting_down()?;
    cmd::run(std::process::Command::new("ip").args(["netns", "add", &netns]))?;
    cmd::ip_batch(Some(&netns), &["link set lo up".to_string()])?;
    let mut prev: Option<Value> = None;
    for plugin in &conf.plugins {
        let cfg = plugin_config(&conf, plugin, prev.as_ref());
        let result = invoke(cluster, node, "ADD", &netns, &cfg, extra)?;
        if !result.is_null() {
            prev = Some(result);
        }
    }
    let result = prev.context("the CNI chain returned no result")?;
    Ok((netns, result))
}

/// Detaches a pod (CNI DEL in reverse chain order, as the spec requires) and removes its
/// namespace.
pub fn del(cluster: &Cluster, pod: &Pod) -> Result<()> {
    del_with_plugins(cluster, pod, &[])
}

/// [`del`] of a pod attached by [`add_with_plugins`] with the same `extra`.
pub fn del_with_plugins(cluster: &Cluster, pod: &Pod, extra: &[&Path]) -> Result<()> {
    detach(cluster, &pod.node, &pod.netns, &pod.result, extra)
}

fn detach(
    cluster: &Cluster,
    node: &str,
    netns: &str,
    result: &Value,
    extra: &[&Path],
) -> Result<()> {
    let conf = load_netconf(&cluster.cni_conf_dir(node))?;
    for plugin in conf.plugins.iter().rev() {
        let cfg = plugin_config(&conf, plugin, Some(result));
        invoke(cluster, node, "DEL", netns, &cfg, extra)?;
    }
    cmd::run(std::process::Command::new("ip").args(["netns", "del", netns]))?;
    Ok(())
}

/// The first IPv4 address (with prefix) and gateway of a CNI result.
pub fn first_ipv4(result: &Value) -> Result<(Ipv4Addr, u8, Option<Ipv4Addr>)> {
    let ips = result["ips"]
        .as_array()
        .context("CNI result has no `ips`")?;
    for ip in ips {
        let Some(addr) = ip["address"].as_str() else {
            continue;
        };
        if let Ok(net) = addr.parse::<ipnet::Ipv4Net>() {
            let gw = ip["gateway"].as_str().and_then(|g| g.parse().ok());
            return Ok((net.addr(), net.prefix_len(), gw));
        }
    }
    bail!("CNI result has no IPv4 address: {result}")
}

/// The first IPv6 address of a CNI result (a dual-stack network's second range).
pub fn first_ipv6(result: &Value) -> Result<std::net::Ipv6Addr> {
    let ips = result["ips"]
        .as_array()
        .context("CNI result has no `ips`")?;
    ips.iter()
        .filter_map(|ip| ip["address"].as_str())
        .find_map(|a| a.parse::<ipnet::Ipv6Net>().ok())
        .map(|net| net.addr())
        .with_context(|| format!("CNI result has no IPv6 address: {result}"))
}

/// Writes the node agent's CNI config into a node's CNI config directory, as a stand-in for
/// the agent where a test runs without one (the harness's own tests). Each node gets its own
/// host-local data directory, as separate machines would.
pub fn write_bridge_netconf(
    cluster: &Cluster,
    node: &str,
    subnet: ipnet::Ipv4Net,
    mtu: u32,
) -> Result<PathBuf> {
    let dir = cluster.cni_conf_dir(node);
    let conf = causeway_node_agent::cni::NetConf {
        subnets: vec![subnet.into()],
        bridge: causeway_node_agent::plan::BRIDGE_LINK.to_string(),
        mtu,
        data_dir: Some(cluster.cni_state_dir(node).join("networks")),
    };
    causeway_node_agent::cni::write(&dir, &conf)?;
    Ok(dir.join(causeway_node_agent::cni::FILE_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_plugin_conf_becomes_a_one_element_chain() {
        let conf = parse_netconf(
            Path::new("10-x.conf"),
            r#"{"cniVersion":"1.0.0","name":"podnet","type":"bridge","bridge":"cbr0"}"#,
        )
        .expect("parse");
        assert_eq!(conf.name, "podnet");
        assert_eq!(conf.plugins.len(), 1);
        assert_eq!(conf.plugins[0]["type"], "bridge");
    }

    #[test]
    fn chained_plugins_receive_name_version_and_the_previous_result() {
        let conf = parse_netconf(
            Path::new("10-x.conflist"),
            r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .expect("parse");
        let prev = serde_json::json!({"ips":[{"address":"10.244.1.2/24"}]});
        let cfg = plugin_config(&conf, &conf.plugins[1], Some(&prev));
        assert_eq!(cfg["name"], "podnet");
        assert_eq!(cfg["cniVersion"], "1.0.0");
        assert_eq!(cfg["type"], "portmap");
        assert_eq!(cfg["prevResult"], prev);
    }

    #[test]
    fn a_conf_without_a_name_is_an_error_naming_the_file() {
        let err = parse_netconf(Path::new("/etc/cni/net.d/bad.conf"), r#"{"type":"bridge"}"#)
            .expect_err("no name");
        assert!(format!("{err:#}").contains("bad.conf"));
    }

    #[test]
    fn results_yield_the_first_ipv4_address_and_gateway() {
        let r = serde_json::json!({"ips":[
            {"address":"fd00::2/64"},
            {"address":"10.244.1.2/24","gateway":"10.244.1.1"}]});
        assert_eq!(
            first_ipv4(&r).expect("ip"),
            ([10, 244, 1, 2].into(), 24, Some([10, 244, 1, 1].into()))
        );
        assert!(first_ipv4(&serde_json::json!({"ips":[]})).is_err());
    }
}
