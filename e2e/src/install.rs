//! Causeway installed with the chart on kubelet nodes, as users install it: what the suites
//! that run `helm install` share (`install`, `install_bgp`). This build's release and the
//! next build's (`make images` makes both), the release's own pods, an agent pod deleted with
//! `kubectl delete pod` and its replacement, a `helm upgrade` watched node by node, and
//! continuous pings between the test Deployment's pods that must lose nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::helm::{self, Release};
use crate::traffic::{self, wait_for};
use crate::workload::{self, PodInfo, pod_on};
use crate::{deploy, image, kubelet};

/// The agents' pods.
pub const AGENT_SELECTOR: &str =
    "app.kubernetes.io/name=causeway,app.kubernetes.io/component=node-agent";
/// The operator's pods.
pub const OPERATOR_SELECTOR: &str =
    "app.kubernetes.io/name=causeway,app.kubernetes.io/component=operator";

/// The version of this build (the image the suites install).
///
/// # Errors
/// When the agent binary has not been built.
pub fn current_version() -> Result<String> {
    let agent = crate::controlplane::causeway_binary("causeway-node-agent")?;
    image::binaries_version(agent.parent().context("binary without a directory")?)
}

/// The version of the second build `make images` makes for the upgrade tests.
///
/// # Errors
/// When that build is missing.
pub fn next_version() -> Result<String> {
    image::binaries_version(&image::next_bin_dir())
}

/// The Causeway image archive of `version`.
#[must_use]
pub fn archive(version: &str) -> PathBuf {
    image::test_images_dir().join(image::CAUSEWAY.archive_name(version))
}

/// The images every node starts with: pause, the test pods' image and this build's Causeway.
///
/// # Errors
/// When an archive has not been built (`make images`).
pub fn image_archives() -> Result<Vec<PathBuf>> {
    image::node_archives(&current_version()?)
}

/// The release of `version`'s image, never pulled (it is imported into every node).
#[must_use]
pub fn release(version: &str) -> Release {
    Release::default_with(&[
        ("image.tag", version),
        ("image.pullPolicy", "Never"),
        // As a monitored install runs: the agents' /metrics on each node's address (scraped
        // by Prometheus in the install suite), the operator logging JSON for a log pipeline.
        ("nodeAgent.metrics.enabled", "true"),
        ("operator.logFormat", "json"),
    ])
}

/// The agents' metrics port in [`release`] (the chart's default).
pub const AGENT_METRICS_PORT: u16 = 9810;

/// Installs [`release`] of this build unless it is installed already (suites whose tests
/// each start from "Causeway is installed").
///
/// # Errors
/// When helm fails.
pub fn ensure_release(c: &Cluster) -> Result<()> {
    let rel = release(&current_version()?);
    if !rel.installed(c)? {
        rel.install(c)?;
    }
    Ok(())
}

/// The release's pods: (operator, agents), sorted by node.
///
/// # Errors
/// When kubectl fails.
pub fn causeway_pods(c: &Cluster) -> Result<(Vec<PodInfo>, Vec<PodInfo>)> {
    Ok((
        workload::pods(c, deploy::NAMESPACE, OPERATOR_SELECTOR)?,
        workload::pods(c, deploy::NAMESPACE, AGENT_SELECTOR)?,
    ))
}

/// The node subnets of `network`, once every node of the topology has one Programmed.
///
/// # Errors
/// While some node has none, or it is not Programmed.
pub fn programmed_subnets(c: &Cluster, network: &str) -> Result<BTreeMap<String, Ipv4Net>> {
    let mut out = BTreeMap::new();
    let mut waiting = Vec::new();
    for ns in deploy::node_subnets(c, network)? {
        let node = ns["spec"]["nodeName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let programmed = ns["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["type"] == "Programmed" && k["status"] == "True");
        if !programmed {
            waiting.push(node.clone());
        }
        if let Some(cidr) = ns["spec"]["cidr"].as_str() {
            out.insert(node, cidr.parse()?);
        }
    }
    let nodes = c.topology.nodes.len();
    ensure!(
        out.len() == nodes && waiting.is_empty(),
        "Programmed on {} of {nodes} nodes (waiting: {waiting:?})",
        out.len() - waiting.len(),
    );
    Ok(out)
}

/// Continuous pings between test pods, each labelled `pod (node) -> address (node)`.
pub struct Pings(Vec<(String, traffic::ContinuousPing)>);

impl Pings {
    /// A ping every 20 ms from the first pod of `pods` on each `from` node to the first on
    /// its `to` node.
    ///
    /// # Errors
    /// When a node has no test pod or a ping cannot start.
    pub fn start(c: &Cluster, pods: &[PodInfo], pairs: &[(&str, &str)]) -> Result<Pings> {
        let mut pings = Vec::new();
        for (from, to) in pairs {
            let src = pod_on(pods, from)?;
            let dst = pod_on(pods, to)?.ip.context("no address")?;
            pings.push((
                format!("{} ({from}) -> {dst} ({to})", src.name),
                workload::continuous_ping(c, src, dst, Duration::from_millis(20))?,
            ));
        }
        Ok(Pings(pings))
    }

    /// Stops the pings, prints what each saw, and fails unless every one was answered.
    ///
    /// # Errors
    /// When a ping was lost, too few were sent, or a ping printed no summary.
    pub fn stop(self) -> Result<()> {
        let mut problems = Vec::new();
        for (what, ping) in self.0 {
            let r = ping.stop()?;
            println!(
                "{what}: {} sent, {} lost, longest gap {:.0} ms",
                r.transmitted,
                r.lost(),
                r.max_gap.as_secs_f64() * 1000.0
            );
            if r.transmitted < 50 || r.lost() > 0 {
                problems.push(format!("{what}: {} of {} lost", r.lost(), r.transmitted));
            }
        }
        ensure!(problems.is_empty(), "{}", problems.join("; "));
        Ok(())
    }
}

/// An agent pod replaced by `kubectl delete pod`.
#[derive(Clone, Debug)]
pub struct AgentRestart {
    pub old: PodInfo,
    pub new: PodInfo,
    /// From the delete to the old pod gone (its agent stopped).
    pub stopped: Duration,
    /// From the delete to the new pod Ready.
    pub ready: Duration,
    /// The old agent's log, to its last line (`kubectl logs -f` through the stop).
    pub old_log: String,
}

/// Deletes `node`'s agent pod with `kubectl delete pod` (waiting until it is gone), keeping
/// its log through the stop, and waits for the DaemonSet's new pod there to be Ready.
///
/// # Errors
/// When the delete fails or no new agent is Ready within 60 s.
pub fn delete_agent_pod(c: &Cluster, node: &str) -> Result<AgentRestart> {
    let (_, agents) = causeway_pods(c)?;
    let old = pod_on(&agents, node)?.clone();
    let log_path = c.dir.join(format!("{}.log", old.name));
    let mut follow = c
        .kubectl_cmd()
        .args(["logs", "-f", "-n", deploy::NAMESPACE, &old.name])
        .stdout(std::fs::File::create(&log_path)?)
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting kubectl logs -f")?;
    let started = Instant::now();
    let deleted = c.kubectl(&[
        "delete",
        "pod",
        "-n",
        deploy::NAMESPACE,
        &old.name,
        "--wait=true",
    ]);
    let stopped = started.elapsed();
    // The stream ends with the container; a stuck one is ended after 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while follow.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let old_log = std::fs::read_to_string(&log_path)?;
    deleted?;
    let new = wait_for(
        &format!("a new Ready agent on {node}"),
        Duration::from_secs(60),
        || {
            let (_, agents) = causeway_pods(c)?;
            let p = pod_on(&agents, node)?;
            ensure!(
                p.name != old.name && p.ready,
                "{} ready={}",
                p.name,
                p.ready
            );
            Ok(p.clone())
        },
    )?;
    let restart = AgentRestart {
        old,
        new,
        stopped,
        ready: started.elapsed(),
        old_log,
    };
    println!(
        "agent on {node}: {} deleted (gone after {:.1}s), {} Ready after {:.1}s",
        restart.old.name,
        restart.stopped.as_secs_f64(),
        restart.new.name,
        restart.ready.as_secs_f64()
    );
    Ok(restart)
}

/// A copy of the chart as the next release would ship it: version `version`, and one change
/// to a CRD (an extra printer column on PodNetworks) that `helm upgrade` must bring into the
/// cluster.
///
/// # Errors
/// When the copy or its edits fail.
pub fn next_chart(dir: &Path, version: &str) -> Result<PathBuf> {
    let chart = dir.join("causeway");
    if chart.exists() {
        std::fs::remove_dir_all(&chart)?;
    }
    crate::cmd::run(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(helm::chart_dir())
            .arg(&chart),
    )?;
    let meta = chart.join("Chart.yaml");
    let text = std::fs::read_to_string(&meta)?;
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("appVersion:") {
                format!("appVersion: \"{version}\"")
            } else if l.starts_with("version:") {
                format!("version: {version}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&meta, text + "\n")?;
    let crd_path = chart.join("files/crds/podnetworks.causeway.dev.yaml");
    let mut crd: Value = serde_yaml::from_str(&std::fs::read_to_string(&crd_path)?)?;
    for v in crd["spec"]["versions"]
        .as_array_mut()
        .context("CRD without versions")?
    {
        v["additionalPrinterColumns"]
            .as_array_mut()
            .context("version without printer columns")?
            .push(serde_json::json!({
                "name": "Upgraded", "type": "string", "priority": 1,
                "jsonPath": ".metadata.name",
                "description": "added by the upgrade test's next chart"
            }));
    }
    std::fs::write(&crd_path, serde_yaml::to_string(&crd)?)?;
    Ok(chart)
}

/// The upgrade `make images` prepared: from this build to the next.
pub struct Upgrade {
    pub from: String,
    pub to: String,
    /// The next build's release, with the next chart ([`next_chart`]).
    pub release: Release,
}

impl Upgrade {
    /// Loads the next build's image onto every node (like `kind load`: nothing is pulled)
    /// and writes the next chart under the cluster's directory.
    ///
    /// # Errors
    /// When the next build is missing or has this build's version.
    pub fn prepare(c: &Cluster) -> Result<Upgrade> {
        let (from, to) = (current_version()?, next_version()?);
        ensure!(
            from != to,
            "the upgrade build has the same version {from}: run `make images`"
        );
        kubelet::load_image(c, &archive(&to))?;
        let tmp = c.dir.join("upgrade");
        std::fs::create_dir_all(&tmp)?;
        let mut release = release(&to);
        release.chart = next_chart(&tmp, &to)?;
        Ok(Upgrade { from, to, release })
    }

    /// `helm upgrade` (and `kubectl rollout status`) while the agents are sampled every
    /// 100 ms; prints how the rollout went and fails unless it went one node at a time and
    /// reached every node.
    ///
    /// # Errors
    /// When the upgrade fails, or the rollout was not one node at a time to every node.
    pub fn run(&self, c: &Cluster) -> Result<Rollout> {
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        let (upgraded, rollout) = std::thread::scope(|s| {
            let watcher = s.spawn(|| {
                let mut r = Rollout::default();
                loop {
                    // One last sample after the rollout finished: it sees the last node
                    // updated.
                    let last = stop.load(Ordering::Relaxed);
                    if let Err(e) = r.sample(c, &self.to, started) {
                        eprintln!("sampling agents: {e:#}");
                    }
                    if last {
                        break r;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            // Includes `kubectl rollout status`: the watcher sees the whole rollout.
            let upgraded = self.release.upgrade(c);
            stop.store(true, Ordering::Relaxed);
            (upgraded, watcher.join())
        });
        let out = upgraded?;
        let rollout = rollout.map_err(|_| anyhow::anyhow!("the rollout watcher panicked"))?;
        println!("{out}");
        println!(
            "helm upgrade {} -> {}: {:.1}s; agents updated at {:?}; most nodes without a Ready agent at once: {:?} ({} samples)",
            self.from,
            self.to,
            started.elapsed().as_secs_f64(),
            rollout.updated_at,
            rollout.most_unavailable,
            rollout.samples
        );
        ensure!(
            rollout.most_unavailable.len() <= 1,
            "agents on {:?} were down at the same time",
            rollout.most_unavailable
        );
        ensure!(
            rollout.updated_at.len() == c.topology.nodes.len(),
            "updated agents seen on {:?} only",
            rollout.updated_at.keys()
        );
        Ok(rollout)
    }

    /// Every pod of the release runs the new build's image, and an agent's log names it.
    ///
    /// # Errors
    /// When a pod runs another image.
    pub fn expect_done(&self, c: &Cluster) -> Result<()> {
        let (operators, agents) = causeway_pods(c)?;
        for p in operators.iter().chain(&agents) {
            let image = c.kubectl(&[
                "get",
                "pod",
                "-n",
                deploy::NAMESPACE,
                &p.name,
                "-o",
                "jsonpath={.spec.containers[0].image}",
            ])?;
            ensure!(
                image.ends_with(&format!(":{}", self.to)),
                "{} runs {image}",
                p.name
            );
        }
        let agent = agents.first().context("no agent pods")?;
        let logs = c.kubectl(&["logs", "-n", deploy::NAMESPACE, &agent.name])?;
        ensure!(
            logs.contains(&self.to),
            "the new agent's log does not name {}:\n{logs}",
            self.to
        );
        Ok(())
    }
}

/// What an upgrade's rollout looked like: for every sample, the nodes without a Ready,
/// non-terminating agent; and when each node first had a Ready agent of the new version.
#[derive(Debug, Default)]
pub struct Rollout {
    pub samples: usize,
    pub most_unavailable: Vec<String>,
    pub updated_at: BTreeMap<String, Duration>,
}

impl Rollout {
    fn sample(&mut self, c: &Cluster, version: &str, since: Instant) -> Result<()> {
        let out = c.kubectl(&[
            "get",
            "pods",
            "-n",
            deploy::NAMESPACE,
            "-l",
            AGENT_SELECTOR,
            "-o",
            "json",
        ])?;
        let list: Value = serde_json::from_str(&out)?;
        let mut available: BTreeMap<String, bool> = c
            .topology
            .nodes
            .iter()
            .map(|n| (n.name.clone(), false))
            .collect();
        for p in list["items"].as_array().into_iter().flatten() {
            let node = p["spec"]["nodeName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ready = p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["type"] == "Ready" && k["status"] == "True");
            if ready {
                available.insert(node.clone(), true);
                let image = p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default();
                if image.ends_with(&format!(":{version}")) {
                    self.updated_at
                        .entry(node)
                        .or_insert_with(|| since.elapsed());
                }
            }
        }
        let down: Vec<String> = available
            .into_iter()
            .filter(|(_, up)| !up)
            .map(|(n, _)| n)
            .collect();
        if down.len() > self.most_unavailable.len() {
            self.most_unavailable = down;
        }
        self.samples += 1;
        Ok(())
    }
}
