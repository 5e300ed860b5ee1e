//! Ordinary pods on kubelet nodes, as users run them: a Deployment of the test image (busybox
//! with `ping` and a TCP echo server) spread over every node, the pods' addresses and nodes as
//! the API reports them, `kubectl exec`, and a pod's own network namespace for precise
//! continuous pings.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::kubelet;
use crate::traffic;

/// The test image (`causeway-e2e image` builds it; imported into every node).
pub const TEST_IMAGE: &str = "localhost/causeway-e2e/testpod:1";

/// The TCP port the test pods' echo server listens on.
pub const ECHO_PORT: u16 = 8080;

/// A Deployment of `replicas` test pods named `name` in `namespace`, spread evenly over the
/// nodes (at most one more on any node than on another), each serving a TCP echo on
/// [`ECHO_PORT`].
pub fn test_deployment(namespace: &str, name: &str, replicas: u32) -> Value {
    let labels = json!({"app": name});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": labels},
                    }],
                    "containers": [{
                        "name": "echo",
                        "image": TEST_IMAGE,
                        "imagePullPolicy": "Never",
                        // busybox nc: -ll keeps listening, -e runs cat per connection.
                        "command": ["nc", "-ll", "-p", ECHO_PORT.to_string(), "-e", "cat"],
                        "ports": [{"name": "echo", "containerPort": ECHO_PORT}],
                        "readinessProbe": {"tcpSocket": {"port": ECHO_PORT}, "periodSeconds": 2},
                    }],
                },
            },
        },
    })
}

/// A pod as the API reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address (`status.podIPs`), on a dual-stack network.
    pub ip6: Option<std::net::Ipv6Addr>,
    pub ready: bool,
    /// containerd id of the first container (`containerd://<id>` without the scheme).
    pub container_id: Option<String>,
}

/// Reads the pods out of a `kubectl get pods -o json` list, leaving out those being deleted
/// (a finished rollout or a scale-down may still have some terminating).
pub fn parse_pods(list: &Value) -> Vec<PodInfo> {
    let mut pods: Vec<PodInfo> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| PodInfo {
            namespace: p["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .into(),
            name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
            node: p["spec"]["nodeName"].as_str().unwrap_or_default().into(),
            ip: p["status"]["podIP"].as_str().and_then(|s| s.parse().ok()),
            ip6: p["status"]["podIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|i| i["ip"].as_str().and_then(|s| s.parse().ok())),
            ready: p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            container_id: p["status"]["containerStatuses"][0]["containerID"]
                .as_str()
                .and_then(|s| s.split_once("://"))
                .map(|(_, id)| id.to_string()),
        })
        .collect();
    pods.sort_by(|a, b| (&a.node, &a.name).cmp(&(&b.node, &b.name)));
    pods
}

/// The pods matching `selector` in `namespace`, sorted by node and name.
pub fn pods(cluster: &Cluster, namespace: &str, selector: &str) -> Result<Vec<PodInfo>> {
    let out = cluster.kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"])?;
    Ok(parse_pods(&serde_json::from_str(&out)?))
}

/// The first of `pods` (sorted by node and name) on `node`.
///
/// # Errors
/// When none is on `node`.
pub fn pod_on<'a>(pods: &'a [PodInfo], node: &str) -> Result<&'a PodInfo> {
    pods.iter()
        .find(|p| p.node == node)
        .with_context(|| format!("no pod on {node}"))
}

/// Applies [`test_deployment`] and waits until `replicas` pods are Ready with addresses, on
/// every node; returns them.
pub fn deploy_test_pods(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    replicas: u32,
) -> Result<Vec<PodInfo>> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    cluster.kubectl_stdin(&["apply", "-f", "-"], &ns.to_string())?;
    cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &test_deployment(namespace, name, replicas).to_string(),
    )?;
    wait_pods_ready(
        cluster,
        namespace,
        &format!("app={name}"),
        replicas as usize,
    )
}

/// Waits until exactly `count` pods match and all are Ready with an address.
pub fn wait_pods_ready(
    cluster: &Cluster,
    namespace: &str,
    selector: &str,
    count: usize,
) -> Result<Vec<PodInfo>> {
    traffic::wait_for(
        &format!("{count} pods {selector} Ready in {namespace}"),
        Duration::from_secs(120),
        || {
            let pods = pods(cluster, namespace, selector)?;
            let ready = pods.iter().filter(|p| p.ready && p.ip.is_some()).count();
            ensure!(
                pods.len() == count && ready == count,
                "{ready} of {} Ready: {}",
                pods.len(),
                cluster
                    .kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "wide"])
                    .unwrap_or_default()
            );
            Ok(pods)
        },
    )
}

/// `kubectl exec` into `pod` and returns stdout.
pub fn exec(cluster: &Cluster, pod: &PodInfo, command: &[&str]) -> Result<String> {
    let mut args = vec!["exec", "-n", &pod.namespace, &pod.name, "--"];
    args.extend_from_slice(command);
    cluster.kubectl(&args)
}

/// From `from`, one `kubectl exec` that pings every address of `to` (two pings 0.2 s apart,
/// each target waiting up to 2 s) and sends a line to each one's TCP echo server; returns
/// the failures, as `from (node) -> to: what`.
pub fn exec_reach(cluster: &Cluster, from: &PodInfo, to: &[Ipv4Addr]) -> Vec<String> {
    let mut script = String::new();
    for ip in to {
        script.push_str(&format!(
            "if ping -c 2 -i 0.2 -W 2 {ip} >/dev/null; then echo ping-ok {ip}; else echo ping-FAIL {ip}; fi; \
             r=$(echo hello-{ip} | nc -w 2 {ip} {ECHO_PORT}); \
             if [ \"$r\" = hello-{ip} ]; then echo tcp-ok {ip}; else echo tcp-FAIL {ip}; fi; "
        ));
    }
    let out = match exec(cluster, from, &["sh", "-c", &script]) {
        Ok(out) => out,
        Err(e) => return vec![format!("{} ({}): {e:#}", from.name, from.node)],
    };
    let mut failures = Vec::new();
    for ip in to {
        for check in ["ping", "tcp"] {
            if !out.lines().any(|l| l == format!("{check}-ok {ip}")) {
                failures.push(format!(
                    "{} ({}) -> {ip}: {check} failed",
                    from.name, from.node
                ));
            }
        }
    }
    failures
}

/// The pid of `pod`'s first container on its node (from the node's containerd), whose
/// network namespace is the pod's.
pub fn container_pid(cluster: &Cluster, pod: &PodInfo) -> Result<u32> {
    let id = pod
        .container_id
        .as_deref()
        .with_context(|| format!("pod {} has no running container", pod.name))?;
    let ctr =
        kubelet::NodeBinaries::locate(&cluster.binaries.kubelet, &cluster.binaries.kube_proxy)?
            .ctr();
    let out = kubelet::node_exec(
        cluster,
        &pod.node,
        &ctr.display().to_string(),
        &["--namespace=k8s.io", "tasks", "ls"],
    )?;
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&id) {
            return f
                .get(1)
                .and_then(|p| p.parse().ok())
                .with_context(|| format!("no pid in `{line}`"));
        }
    }
    bail!(
        "container {id} of pod {} is not running on {}",
        pod.name,
        pod.node
    )
}

/// A command that runs `program` in `pod`'s network namespace (through a container's pid).
pub fn in_pod_netns(cluster: &Cluster, pod: &PodInfo, program: &str) -> Result<Command> {
    let pid = container_pid(cluster, pod)?;
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("--")
        .arg(program);
    Ok(c)
}

/// [`continuous_ping`] over IPv6 (`ping -6`).
pub fn continuous_ping6(
    cluster: &Cluster,
    pod: &PodInfo,
    dst: std::net::Ipv6Addr,
    interval: Duration,
) -> Result<traffic::ContinuousPing> {
    let mut ping = in_pod_netns(cluster, pod, "ping")?;
    ping.arg("-6");
    traffic::ContinuousPing::start_with(ping, dst, interval)
}

/// A ping every `interval` from `pod` to `dst` until stopped, with the host's iputils ping in
/// the pod's network namespace (microsecond timestamps for the longest gap).
pub fn continuous_ping(
    cluster: &Cluster,
    pod: &PodInfo,
    dst: Ipv4Addr,
    interval: Duration,
) -> Result<traffic::ContinuousPing> {
    traffic::ContinuousPing::start_with(in_pod_netns(cluster, pod, "ping")?, dst, interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_read_with_node_address_readiness_and_container() {
        let list = json!({"items": [
            {"metadata": {"namespace": "t", "name": "p2"}, "spec": {"nodeName": "node-b"},
             "status": {"podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00:1::3"}],
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [{"containerID": "containerd://abc"}]}},
            {"metadata": {"namespace": "t", "name": "p1"}, "spec": {"nodeName": "node-a"},
             "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"namespace": "t", "name": "p0", "deletionTimestamp": "2026-12-06T00:00:00Z"},
             "spec": {"nodeName": "node-a"}, "status": {}},
        ]});
        let pods = parse_pods(&list);
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].name, "p1");
        assert!(!pods[0].ready);
        assert_eq!(pods[0].ip, None);
        assert_eq!(pods[1].ip, Some([10, 1, 2, 3].into()));
        assert_eq!(
            pods[1].ip6,
            "fd00:1::3".parse().ok(),
            "the IPv6 one of podIPs"
        );
        assert_eq!(pods[0].ip6, None);
        assert!(pods[1].ready);
        assert_eq!(pods[1].container_id.as_deref(), Some("abc"));
    }

    #[test]
    fn the_test_deployment_spreads_over_nodes_and_never_pulls() {
        let d = test_deployment("t", "echo", 8);
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(
            spec["topologySpreadConstraints"][0]["topologyKey"],
            "kubernetes.io/hostname"
        );
        assert_eq!(d["spec"]["replicas"], 8);
    }
}
