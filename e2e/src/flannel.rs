//! flannel as a benchmark baseline (issue #19; never shipped, docs/dependencies.md): its
//! binaries, built by `e2e/scripts/build-flannel.sh` into the cache outside the work tree the
//! first time (minutes) and afterwards only looked up.
//!
//! - [`flanneld`]: flanneld v0.28.10 (the agent bench's peer-programming baseline, the
//!   datapath bench's VXLAN reference);
//! - [`cni_plugin_dir`]: flannel's CNI plugin (`flannel`, which delegates the pod's attachment
//!   to the reference `bridge` plugin), for the datapath bench's flannel pods.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};

use crate::controlplane::workspace_root;

/// Runs `build-flannel.sh [what]` (its progress on our stderr) and returns the bin directory it
/// prints last; fails loudly with the fix when it cannot build.
fn build(what: Option<&str>) -> Result<PathBuf> {
    let script = workspace_root().join("e2e/scripts/build-flannel.sh");
    crate::cmd::ensure_not_shutting_down()?;
    let out = Command::new(&script)
        .args(what)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "{} {} failed (its messages are above): flannel is built from the Go module proxy with go (and gcc for flanneld); run `make deps`, then the script by hand",
        script.display(),
        what.unwrap_or_default()
    );
    let stdout = String::from_utf8(out.stdout).context("build-flannel.sh printed non-UTF-8")?;
    let dir = stdout
        .lines()
        .last()
        .context("build-flannel.sh printed no bin directory")?;
    Ok(PathBuf::from(dir.trim()))
}

/// The path of `name` in `dir`, which must hold it.
fn binary_in(dir: &Path, name: &str) -> Result<PathBuf> {
    let bin = dir.join(name);
    ensure!(
        bin.is_file(),
        "build-flannel.sh printed {}, which holds no {name}",
        dir.display()
    );
    Ok(bin)
}

/// flanneld's binary.
///
/// # Errors
/// The build failed or printed a directory without it.
pub fn flanneld() -> Result<PathBuf> {
    binary_in(&build(None)?, "flanneld")
}

/// The directory holding flannel's CNI plugin `flannel`, to put before the reference plugins'
/// directory in a CNI search path.
///
/// # Errors
/// The build failed or printed a directory without it.
pub fn cni_plugin_dir() -> Result<PathBuf> {
    let dir = build(Some("cni"))?;
    binary_in(&dir, "flannel")?;
    Ok(dir)
}
