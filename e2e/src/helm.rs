//! Helm and the chart: the harness renders the chart's templates with `helm template` (so its
//! RBAC is exactly what `helm install` creates), and the chart test (`e2e/tests/chart.rs`)
//! lints and renders it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};

use crate::cmd;
use crate::controlplane::{Binaries, workspace_root};

/// The Helm release the project builds and tests with.
pub const HELM_VERSION: &str = "v3.22.0";

/// The release name the harness renders with: objects get the names the docs use
/// (`causeway-operator`, `causeway-node-agent`, `causeway-gateway-client`).
pub const RELEASE: &str = "causeway";

/// `$CAUSEWAY_HELM`, or the binary `make deps` builds into the cache.
///
/// # Errors
/// When it is missing, saying how to get it.
pub fn helm_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("CAUSEWAY_HELM") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(format!("/var/cache/causeway/helm/{HELM_VERSION}/bin/helm")),
    };
    if !path.is_file() {
        bail!(
            "helm {HELM_VERSION} is missing at {}: run `make deps` (builds it into /var/cache/causeway/helm), or set CAUSEWAY_HELM to a helm binary",
            path.display()
        );
    }
    Ok(path)
}

/// The chart's directory in the workspace.
#[must_use]
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/causeway")
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
/// When helm is missing ([`helm_binary`]).
pub fn command() -> Result<Command> {
    let mut c = Command::new(helm_binary()?);
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
