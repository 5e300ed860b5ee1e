//! Helm, as users run it: the harness renders the chart's templates with `helm template` (so
//! the RBAC it gives processes is exactly what `helm install` creates), the chart test
//! (`e2e/tests/chart.rs`) lints and renders it, and kubelet clusters get it with `helm
//! install`, `upgrade` and `uninstall`. Helm is built from its Go module at the version
//! pinned in `e2e/scripts/build-tools.sh` (cached); `$CAUSEWAY_HELM` points at another binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::cluster::Cluster;
use crate::cmd;
use crate::controlplane::{Binaries, workspace_root};

/// The namespace the chart installs into (leader Lease, service accounts).
pub const NAMESPACE: &str = "causeway-system";

/// The release name the harness installs and renders with: objects get the names the docs
/// use (`causeway-operator`, `causeway-node-agent`, `causeway-gateway-client`, the clients'
/// namespace `causeway-system-clients`).
pub const RELEASE: &str = "causeway";

/// The chart in this repository.
#[must_use]
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/causeway")
}

/// The helm binary: `$CAUSEWAY_HELM`, or the cache `e2e/scripts/build-tools.sh` fills
/// (building it when the cache is cold).
///
/// # Errors
/// When it is missing and cannot be built, saying how to get it.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CAUSEWAY_HELM") {
        return Ok(PathBuf::from(p));
    }
    let script = workspace_root().join("e2e/scripts/build-tools.sh");
    let out = cmd::run(Command::new(&script).arg("helm"))
        .with_context(|| format!("building helm with {} (`make deps`)", script.display()))?;
    let helm = Path::new(out.trim()).join("helm");
    anyhow::ensure!(
        helm.is_file(),
        "{} is missing: run `make deps`",
        helm.display()
    );
    Ok(helm)
}

/// The Kubernetes version `helm template` renders for: the pinned control plane's (Helm's
/// own default is older than the chart's kubeVersion allows).
///
/// # Errors
/// When `e2e/controlplane/go.mod` cannot be read.
pub fn kube_version() -> Result<String> {
    Ok(Binaries::pinned_version()?
        .trim_start_matches('v')
        .to_string())
}

/// A `helm` command with no state of its own: its cache, config and data directories are
/// fresh temporary ones (rendering needs no repositories and no cluster).
///
/// # Errors
/// When helm is missing ([`binary`]).
pub fn command() -> Result<Command> {
    let mut c = Command::new(binary()?);
    let home = std::env::temp_dir().join(format!("causeway-helm-{}", std::process::id()));
    c.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    Ok(c)
}

/// `helm template <release> charts/causeway --namespace <namespace> <args>`: the rendered
/// manifests.
///
/// # Errors
/// When helm is missing or fails (the message quotes its stderr).
pub fn template(release: &str, namespace: &str, args: &[&str]) -> Result<String> {
    let chart = chart_dir().display().to_string();
    let version = kube_version()?;
    cmd::run(
        command()?
            .args(["template", release, &chart, "--namespace", namespace])
            .args(["--kube-version", &version])
            .args(args),
    )
}

/// One template file of the chart rendered as the harness's release ([`RELEASE`]) in
/// `namespace`, e.g. `templates/operator-rbac.yaml`.
///
/// # Errors
/// As [`template`].
pub fn render(file: &str, namespace: &str) -> Result<String> {
    template(RELEASE, namespace, &["--show-only", file])
}

/// `helm` against `cluster` with its admin kubeconfig and private config, cache and data
/// directories (nothing under the user's home).
///
/// # Errors
/// When helm is missing ([`binary`]).
pub fn cluster_command(cluster: &Cluster) -> Result<Command> {
    let mut c = Command::new(binary()?);
    let home = cluster.dir.join("helm");
    c.env("KUBECONFIG", &cluster.kubeconfig)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    Ok(c)
}

/// Runs `helm args...` against the cluster and returns stdout.
///
/// # Errors
/// When helm fails (the message quotes its stderr).
pub fn run(cluster: &Cluster, args: &[&str]) -> Result<String> {
    cmd::run(cluster_command(cluster)?.args(args))
}

/// A release of the chart: where it goes and with which values.
#[derive(Clone, Debug)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    /// The chart directory (normally [`chart_dir`]).
    pub chart: PathBuf,
    pub values: Vec<(String, String)>,
}

impl Release {
    /// Release `causeway` of this repository's chart in `causeway-system`.
    pub fn default_with(values: &[(&str, &str)]) -> Self {
        Self {
            name: RELEASE.into(),
            namespace: NAMESPACE.into(),
            chart: chart_dir(),
            values: values
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn args(&self, verb: &str, extra: &[&str]) -> Vec<String> {
        let mut a = vec![
            verb.to_string(),
            self.name.clone(),
            self.chart.display().to_string(),
            "--namespace".into(),
            self.namespace.clone(),
        ];
        for (k, v) in &self.values {
            a.extend(["--set".to_string(), format!("{k}={v}")]);
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// `helm install --create-namespace --wait`, then `kubectl rollout status` of the agents
    /// and the operator: returns once every pod of the release is Ready.
    pub fn install(&self, cluster: &Cluster) -> Result<String> {
        let args = self.args("install", &["--create-namespace", "--wait", "--timeout=3m"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(cluster, &args)
            .and_then(|out| self.wait_rolled_out(cluster).map(|()| out))
            .with_context(|| {
                format!(
                    "installing release {}\n{}",
                    self.name,
                    self.diagnose(cluster)
                )
            })
    }

    /// `helm upgrade --wait` to this release's chart and values, then `kubectl rollout
    /// status` as for [`Self::install`].
    pub fn upgrade(&self, cluster: &Cluster) -> Result<String> {
        let args = self.args("upgrade", &["--wait", "--timeout=5m"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(cluster, &args)
            .and_then(|out| self.wait_rolled_out(cluster).map(|()| out))
            .with_context(|| {
                format!(
                    "upgrading release {}\n{}",
                    self.name,
                    self.diagnose(cluster)
                )
            })
    }

    /// The base name of the release's objects (the chart's `causeway.fullname`).
    pub fn fullname(&self) -> String {
        if self.name.contains("causeway") {
            self.name.clone()
        } else {
            format!("{}-causeway", self.name)
        }
    }

    /// Waits until the agents' DaemonSet and the operator's Deployment are fully rolled out.
    /// `helm --wait` alone returns once a DaemonSet has at most `maxUnavailable` pods not
    /// Ready, so the last node's agent may still be starting.
    pub fn wait_rolled_out(&self, cluster: &Cluster) -> Result<()> {
        let name = self.fullname();
        for what in [
            format!("daemonset/{name}-node-agent"),
            format!("deployment/{name}-operator"),
        ] {
            cluster.kubectl(&[
                "rollout",
                "status",
                "-n",
                &self.namespace,
                &what,
                "--timeout=180s",
            ])?;
        }
        Ok(())
    }

    /// What a failed install or upgrade needs to be understood: the release's pods and the
    /// namespace's latest events.
    pub fn diagnose(&self, cluster: &Cluster) -> String {
        let pods = cluster
            .kubectl(&["get", "pods", "-n", &self.namespace, "-o", "wide"])
            .unwrap_or_else(|e| format!("{e:#}"));
        let events = cluster
            .kubectl(&[
                "get",
                "events",
                "-n",
                &self.namespace,
                "--sort-by=.lastTimestamp",
            ])
            .unwrap_or_else(|e| format!("{e:#}"));
        let tail: Vec<&str> = events.lines().rev().take(25).collect();
        format!(
            "pods in {}:\n{pods}\nlatest events:\n{}",
            self.namespace,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    /// `helm uninstall --wait`.
    pub fn uninstall(&self, cluster: &Cluster) -> Result<String> {
        run(
            cluster,
            &[
                "uninstall",
                &self.name,
                "--namespace",
                &self.namespace,
                "--wait",
                "--timeout=3m",
            ],
        )
        .with_context(|| format!("uninstalling release {}", self.name))
    }

    /// Whether the release is installed.
    pub fn installed(&self, cluster: &Cluster) -> Result<bool> {
        let out = run(
            cluster,
            &["list", "--namespace", &self.namespace, "--short"],
        )?;
        Ok(out.lines().any(|l| l.trim() == self.name))
    }
}
