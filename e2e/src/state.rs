//! What a cluster left on the machine, persisted so that anyone can remove it: the test that
//! made it (on success, failure or Ctrl-C), `causeway-e2e down`, or the next run after a crash.
//!
//! The state file lists every process (pid + start time), namespace and root-namespace veth.
//! It is written before each thing is created, so a crash between the two leaves at worst an
//! entry for something that does not exist, never something that exists without an entry.
//! Tear-down additionally sweeps namespaces carrying the cluster's name prefix and kills every
//! process inside them (`ip netns pids`): only the harness puts processes there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cmd::{self, begin_shutdown};
use crate::proc::ProcId;

/// Tears a cluster down from a signal handler: stop creating, remove everything, then sweep
/// once more for anything a racing thread created in between.
pub fn interrupt_teardown(name: &str) {
    begin_shutdown();
    for pass in 0..2 {
        if let Err(e) = teardown(name) {
            eprintln!("[e2e] tear-down pass {pass} of {name} failed: {e:#}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Installs a Ctrl-C (and SIGTERM) handler that tears cluster `name` down
/// ([`interrupt_teardown`]) and exits with 130; `who` prefixes its message (`[e2e]`).
///
/// # Errors
/// When a handler is already installed.
pub fn teardown_on_interrupt(name: &str, who: &'static str) -> Result<()> {
    let name = name.to_owned();
    ctrlc::set_handler(move || {
        eprintln!("\n{who} interrupted: tearing down cluster {name}");
        interrupt_teardown(&name);
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

/// Root of all clusters' state (pids, PKI, kubeconfigs, per-node directories).
pub fn state_root() -> PathBuf {
    std::env::var_os("CAUSEWAY_E2E_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/causeway-e2e"))
}

/// Where etcd keeps its data: tmpfs when the machine has one, for speed.
pub fn etcd_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join("causeway-e2e")
    } else {
        state_root().join("etcd")
    }
}

/// Logs survive tear-down so a failed run can be read afterwards.
pub fn log_root() -> PathBuf {
    std::env::var_os("CAUSEWAY_E2E_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("causeway-e2e-logs"))
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessEntry {
    pub role: String,
    #[serde(flatten)]
    pub id: Option<ProcId>,
}

/// Everything one cluster created.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    /// The harness process that owns the cluster; `None` for a cluster left running on
    /// purpose (`make up`). A cluster whose owner died is stale.
    pub owner: Option<ProcId>,
    pub namespaces: Vec<String>,
    pub root_veths: Vec<String>,
    pub processes: Vec<ProcessEntry>,
}

impl State {
    pub fn dir(name: &str) -> PathBuf {
        state_root().join(name)
    }

    fn file(name: &str) -> PathBuf {
        Self::dir(name).join("state.json")
    }

    pub fn load(name: &str) -> Result<Option<State>> {
        let path = Self::file(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Atomically replaces the state file.
    pub fn save(&self) -> Result<()> {
        let dir = Self::dir(&self.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, Self::file(&self.name)).context("renaming state file")?;
        Ok(())
    }

    /// True when the owning harness process is gone (a crashed or killed run).
    pub fn is_stale(&self) -> bool {
        self.owner.as_ref().is_some_and(|o| !o.alive())
    }
}

/// Network namespaces currently on the machine.
pub fn list_namespaces() -> Vec<String> {
    cmd::run(Command::new("ip").args(["netns", "list"]))
        .map(|out| {
            out.lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Cluster names that have a state directory or a namespace on this machine.
pub fn list_clusters() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state_root())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("state.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for ns in list_namespaces() {
        if let Some(rest) = ns.strip_prefix("cw-")
            && let Some((cluster, _)) = rest.split_once('-')
        {
            names.push(cluster.to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Removes everything cluster `name` created; safe to call repeatedly and on partial state.
/// Returns what was removed, for logs and tests.
pub fn teardown(name: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let state = State::load(name)?.unwrap_or_default();
    // 1. Processes we recorded, newest first (kube-controller-manager before the API server
    //    before etcd), each verified by start time.
    for p in state.processes.iter().rev() {
        if let Some(id) = &p.id
            && id.alive()
        {
            id.terminate(Duration::from_secs(5));
            removed.push(format!("process {} ({})", id.pid, p.role));
        }
    }
    // 2. Our namespaces: the recorded ones and any carrying our prefix (a crash between
    //    `netns add` and the state write cannot hide one).
    let prefix = format!("cw-{name}-");
    let mut namespaces = state.namespaces.clone();
    namespaces.extend(
        list_namespaces()
            .into_iter()
            .filter(|ns| ns.starts_with(&prefix)),
    );
    namespaces.sort();
    namespaces.dedup();
    let present = list_namespaces();
    for ns in namespaces.iter().filter(|ns| present.contains(ns)) {
        for pid in pids_in(ns) {
            if let Some(id) = ProcId::of(pid) {
                id.terminate(Duration::from_secs(3));
                removed.push(format!("process {pid} in {ns}"));
            }
        }
    }
    // 3. Kubelet nodes: whatever is left in their cgroups (containers of ordinary pods sit in
    //    network namespaces the harness does not name), then the cgroups themselves. Found by
    //    the cluster's name, so a crash before any state was written leaves nothing behind.
    let kubelet_cgroups = format!("/{}/{name}", crate::kubelet::CGROUP_PREFIX);
    if let Ok(hierarchies) = crate::kubelet::host_hierarchies() {
        let present = hierarchies.iter().any(|h| {
            h.host_path()
                .join(kubelet_cgroups.trim_start_matches('/'))
                .is_dir()
        });
        if present {
            removed.extend(crate::kubelet::remove_cgroups(
                &hierarchies,
                &kubelet_cgroups,
            ));
            // The shared first level goes once no other cluster uses it (rmdir fails while
            // it has children; never kill there: other clusters' pods live below it).
            for h in &hierarchies {
                let _ = std::fs::remove_dir(h.host_path().join(crate::kubelet::CGROUP_PREFIX));
            }
        }
    }
    // 4. Root-namespace veths before namespaces (their removal with a namespace is async).
    for veth in &state.root_veths {
        if cmd::succeeds(Command::new("ip").args(["link", "show", "dev", veth])) {
            cmd::run(Command::new("ip").args(["link", "del", "dev", veth]))?;
            removed.push(format!("veth {veth}"));
        }
    }
    for ns in namespaces.iter().filter(|ns| present.contains(ns)) {
        cmd::run(Command::new("ip").args(["netns", "del", ns]))?;
        removed.push(format!("namespace {ns}"));
    }
    // 5. Files: state (PKI, kubeconfigs, CNI dirs), etcd data and kubelet node trees (their
    //    mounts went with the nodes' mount namespaces). Logs stay for debugging.
    for dir in [
        State::dir(name),
        etcd_root().join(name),
        crate::kubelet::nodes_root().join(name),
    ] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            removed.push(format!("directory {}", dir.display()));
        }
    }
    Ok(removed)
}

/// Pids of the processes whose network namespace is `ns`.
pub fn pids_in(ns: &str) -> Vec<u32> {
    cmd::run(Command::new("ip").args(["netns", "pids", ns]))
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Tears down every cluster whose owning harness process died (a crashed or killed run) and
/// every namespace of ours that no state file accounts for. Clusters left up on purpose
/// (`make up`) and clusters of live harness processes are kept.
pub fn sweep_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_clusters() {
        let stale = match State::load(&name)? {
            Some(state) => state.is_stale(),
            None => true, // namespaces without a state file: an interrupted start
        };
        if stale {
            removed.extend(teardown(&name)?);
        }
    }
    Ok(removed)
}
