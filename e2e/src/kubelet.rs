//! Real Kubernetes nodes: a kubelet, containerd (with runc) and kube-proxy inside each node's
//! network namespace, registered with the harness's API server like any node, running pods
//! from images imported into its containerd (never pulled).
//!
//! Each node gets a private mount namespace, held by a small "holder" process, in which:
//! - `/etc`, `/var/lib` and `/var/log` are overlays of the host's directories with a per-node
//!   upper directory, so the node has its own `/etc/cni/net.d`, `/etc/kubernetes`,
//!   `/var/lib/cni` and `/var/log/pods`, and the chart's `hostPath` volumes mean that node's;
//! - `/var/lib/kubelet` and `/var/lib/containerd` are bind mounts of per-node directories on a
//!   real filesystem (containerd's overlayfs snapshotter cannot sit on overlayfs);
//! - `/run` is a tmpfs (containerd's socket and state, pod network-namespace pins);
//! - the host's cgroup hierarchies are mounted again (`ip netns exec` gives the namespace a
//!   fresh `/sys` without them), and every node's pods live under its own cgroup root;
//! - the kernel tunables the kubelet insists on are files bind-mounted over `/proc/sys`, so
//!   the kubelet reads the values it wants and never writes the host's.
//!
//! The daemons join that namespace with `nsenter`, run with their default paths and ports,
//! and are recorded and stopped by pid like every harness process. Tear-down also kills what
//! is left in the node's cgroups (containers of ordinary pods live in network namespaces the
//! harness does not name) and removes the cgroups; see docs/test-cluster.md and
//! ../shared/KUBELET.md for the recipe and its obstacles.
//!
//! Everything that decides *what* to write (configs, kubeconfigs, the mount script, the
//! cgroup layout) is pure and unit-tested; [`start_node`] does the I/O.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cluster::Cluster;
use crate::cmd;
use crate::controlplane::API_PORT;
use crate::proc::ProcId;
use crate::topology::Host;

/// Where node trees live: a real filesystem (not tmpfs, not under the overlaid `/etc`,
/// `/var/lib` or `/var/log`), outside the work tree.
pub fn nodes_root() -> PathBuf {
    std::env::var_os("CAUSEWAY_E2E_NODES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/causeway-e2e"))
}

/// The per-node tree of `node` in `cluster`.
pub fn node_dir(cluster: &str, node: &str) -> PathBuf {
    nodes_root().join(cluster).join(node)
}

/// The first cgroup level of every harness node, in every hierarchy.
pub const CGROUP_PREFIX: &str = "causeway-e2e";

/// The kubelet's `cgroupRoot` for `node` (an absolute path inside each hierarchy).
pub fn cgroup_root(cluster: &str, node: &str) -> String {
    format!("/{CGROUP_PREFIX}/{cluster}/{node}")
}

/// The pause image every node's containerd pins as its sandbox image (imported, never pulled).
pub const PAUSE_IMAGE: &str = "localhost/causeway-e2e/pause:1";

/// Where runc is (Debian's `runc` package).
const RUNC: &str = "/usr/sbin/runc";

/// The programs a kubelet node runs.
#[derive(Clone, Debug)]
pub struct NodeBinaries {
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    /// Directory with `containerd`, `containerd-shim-runc-v2` and `ctr`.
    pub containerd_dir: PathBuf,
    pub runc: PathBuf,
}

impl NodeBinaries {
    /// Finds containerd (the cache `e2e/scripts/build-tools.sh` fills, building it when the
    /// cache is cold) and runc; kubelet and kube-proxy come with the control plane.
    pub fn locate(kubelet: &Path, kube_proxy: &Path) -> Result<Self> {
        let containerd_dir = match std::env::var_os("CAUSEWAY_CONTAINERD_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let script =
                    crate::controlplane::workspace_root().join("e2e/scripts/build-tools.sh");
                let out = cmd::run(Command::new(&script).arg("containerd"))
                    .with_context(|| format!("building containerd with {}", script.display()))?;
                PathBuf::from(out.trim())
            }
        };
        for b in ["containerd", "containerd-shim-runc-v2", "ctr"] {
            ensure!(
                containerd_dir.join(b).is_file(),
                "{} is missing: run `make deps` (builds containerd into the cache)",
                containerd_dir.join(b).display()
            );
        }
        ensure!(
            Path::new(RUNC).is_file(),
            "{RUNC} is missing: run `make deps` (Debian package runc)"
        );
        for (program, package) in [("nsenter", "util-linux"), ("iptables", "iptables")] {
            cmd::require_program(program, package)?;
        }
        Ok(Self {
            kubelet: kubelet.to_path_buf(),
            kube_proxy: kube_proxy.to_path_buf(),
            containerd_dir,
            runc: PathBuf::from(RUNC),
        })
    }

    pub fn ctr(&self) -> PathBuf {
        self.containerd_dir.join("ctr")
    }

    /// `PATH` for the node's daemons: containerd finds its shim there, the kubelet `mount`.
    pub fn path_env(&self) -> String {
        format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            self.containerd_dir.display()
        )
    }
}

/// One cgroup hierarchy of the host, as mounted under `/sys/fs/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// Mount point relative to `/sys/fs/cgroup` (`cpu`, `systemd`, `unified`; empty for a
    /// pure cgroup v2 host).
    pub dir: String,
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: String,
    /// Mount options naming the hierarchy (`cpu`, `none,name=systemd`); empty for cgroup2.
    pub options: String,
}

impl Hierarchy {
    /// The hierarchy's mount point on the host.
    pub fn host_path(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup").join(&self.dir)
    }
}

/// The cgroup hierarchies mounted under `/sys/fs/cgroup`, from `/proc/self/mounts` text.
/// Mount options that do not name a hierarchy (`rw`, `relatime`, ...) are dropped, so the
/// same `mount -t cgroup -o <options>` re-attaches the existing hierarchy.
pub fn parse_hierarchies(mounts: &str) -> Vec<Hierarchy> {
    // Flags, not hierarchy names: a v1 hierarchy is found again by its controllers and name.
    const GENERIC: &[&str] = &[
        "rw",
        "ro",
        "relatime",
        "noatime",
        "nosuid",
        "nodev",
        "noexec",
        "seclabel",
        "xattr",
        "clone_children",
        "noprefix",
        "cpuset_v2_mode",
        "nsdelegate",
        "memory_recursiveprot",
        "favordynmods",
    ];
    let mut out = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, target, fstype, opts, ..] = f[..] else {
            continue;
        };
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let Some(dir) = target
            .strip_prefix("/sys/fs/cgroup")
            .map(|d| d.trim_start_matches('/'))
        else {
            continue;
        };
        let options = if fstype == "cgroup" {
            let named: Vec<&str> = opts
                .split(',')
                .filter(|o| !GENERIC.contains(o) && !o.starts_with("release_agent="))
                .collect();
            // `name=systemd` alone is a named hierarchy without controllers: mount needs `none`.
            if named.iter().all(|o| o.starts_with("name=")) {
                std::iter::once("none")
                    .chain(named)
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                named.join(",")
            }
        } else {
            String::new()
        };
        out.push(Hierarchy {
            dir: dir.to_string(),
            fstype: fstype.to_string(),
            options,
        });
    }
    out
}

/// The host's cgroup hierarchies (fails with the reason when there are none).
pub fn host_hierarchies() -> Result<Vec<Hierarchy>> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let h = parse_hierarchies(&mounts);
    ensure!(
        !h.is_empty(),
        "no cgroup hierarchy is mounted under /sys/fs/cgroup: kubelet nodes need one"
    );
    Ok(h)
}

/// Paths of one node's tree (see the module docs).
#[derive(Clone, Debug)]
pub struct NodeTree {
    pub root: PathBuf,
}

impl NodeTree {
    pub fn overlay_upper(&self, name: &str) -> PathBuf {
        self.root.join("ov").join(name).join("upper")
    }
    pub fn overlay_work(&self, name: &str) -> PathBuf {
        self.root.join("ov").join(name).join("work")
    }
    /// The node's `/etc` as written before start (the overlay's upper directory).
    pub fn etc(&self) -> PathBuf {
        self.overlay_upper("etc")
    }
    pub fn data(&self, name: &str) -> PathBuf {
        self.root.join("data").join(name)
    }
    pub fn sysctl_dir(&self) -> PathBuf {
        self.root.join("sysctl")
    }
    /// Touched by the holder once the namespace is ready.
    pub fn ready_marker(&self) -> PathBuf {
        self.root.join("mounts-ready")
    }
}

/// The overlaid host directories: (mount point, name of the per-node layer).
const OVERLAYS: &[(&str, &str)] = &[
    ("/etc", "etc"),
    ("/var/lib", "varlib"),
    ("/var/log", "varlog"),
];

/// The kernel tunables the kubelet checks (`protectKernelDefaults`) with the values it wants:
/// shown to it through bind-mounted files instead of written to the host.
pub const KUBELET_SYSCTLS: &[(&str, &str)] = &[
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// The shell script the holder runs inside `ip netns exec <node>` (a private mount namespace):
/// it builds the node's filesystem view, marks it ready and then only keeps the namespace
/// alive. `set -e`: any failed mount stops it, and the harness reports its log.
pub fn holder_script(tree: &NodeTree, hierarchies: &[Hierarchy]) -> String {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let mut s = String::from("set -eu\nmount --make-rprivate /\n");
    for (target, name) in OVERLAYS {
        let _ = writeln!(
            s,
            "mount -t overlay cw-{name} -o lowerdir={target},upperdir={},workdir={} {target}",
            q(&tree.overlay_upper(name)),
            q(&tree.overlay_work(name)),
        );
    }
    s.push_str("mount -t tmpfs -o mode=755,size=256m cw-run /run\n");
    for d in ["kubelet", "containerd"] {
        let _ = writeln!(
            s,
            "mkdir -p /var/lib/{d}\nmount --bind {} /var/lib/{d}",
            q(&tree.data(d))
        );
    }
    s.push_str("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup\n");
    for h in hierarchies {
        let target = format!("/sys/fs/cgroup/{}", h.dir);
        let _ = writeln!(s, "mkdir -p {target}");
        if h.fstype == "cgroup2" {
            let _ = writeln!(s, "mount -t cgroup2 cgroup2 {target}");
        } else {
            let _ = writeln!(s, "mount -t cgroup -o {} cgroup {target}", h.options);
        }
    }
    for (key, _) in KUBELET_SYSCTLS {
        let _ = writeln!(
            s,
            "mount --bind {} /proc/sys/{key}",
            q(&tree.sysctl_dir().join(key.replace('/', ".")))
        );
    }
    let _ = writeln!(s, "touch {}", q(&tree.ready_marker()));
    s.push_str("exec sleep infinity\n");
    s
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/-_.=,:".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What a node's configuration files depend on.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub cluster: String,
    pub node: Host,
    /// The API server as nodes reach it.
    pub api_server: Ipv4Addr,
    pub runc: PathBuf,
}

/// A kubeconfig for a node daemon, with the node's own paths (`/etc/kubernetes/pki/...`).
pub fn node_kubeconfig(api_server: Ipv4Addr, stem: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: causeway-e2e\n  cluster:\n    server: https://{api_server}:{API_PORT}\n    certificate-authority: /etc/kubernetes/pki/ca.crt\nusers:\n- name: {stem}\n  user:\n    client-certificate: /etc/kubernetes/pki/{stem}.crt\n    client-key: /etc/kubernetes/pki/{stem}.key\ncontexts:\n- name: {stem}\n  context: {{cluster: causeway-e2e, user: {stem}}}\ncurrent-context: {stem}\n"
    )
}

/// The kubelet's configuration file. Each choice that differs from a kubeadm node is forced
/// by sharing one machine between nodes (see the comments in the file itself).
pub fn kubelet_config(c: &NodeConfig) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# 1.35+ refuses cgroup v1 hosts unless told otherwise; these machines are cgroup v1.
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
cgroupsPerQOS: true
# Every node its own subtree in every hierarchy (made before start, removed at tear-down).
cgroupRoot: {cgroup_root}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: 0.0.0.0
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  # The test API server has no kubelet client certificate to present.
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: /etc/kubernetes/pki/ca.crt}}
authorization: {{mode: AlwaysAllow}}
# Read the kernel tunables (bind-mounted files with the wanted values), never write the host's.
protectKernelDefaults: true
# No upstream DNS: nothing may leave the machine.
resolvConf: ""
clusterDomain: cluster.local
rotateCertificates: false
serverTLSBootstrap: false
# Images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageMinimumGCAge: 876000h
# Nodes share the machine's memory and disks: evict only when they are really exhausted.
evictionHard: {{memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
# The default /usr/libexec/kubernetes/... would be created on the host.
volumePluginDir: /var/lib/kubelet/volumeplugins
"#,
        cgroup_root = cgroup_root(&c.cluster, &c.node.name),
    )
}

/// kube-proxy's configuration (iptables mode, rules in the node's namespace only).
pub fn kube_proxy_config(c: &NodeConfig) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: /etc/kubernetes/kube-proxy.conf}}
hostnameOverride: {node}
mode: iptables
# Pod ranges of every test network: traffic from them to Services is not masqueraded.
clusterCIDR: 10.0.0.0/8
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# The default -999 needs CAP_SYS_RESOURCE, which these machines' root lacks.
oomScoreAdj: 0
# Zeros leave the machine-wide conntrack sysctls alone.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"#,
        node = c.node.name,
    )
}

/// containerd 2's configuration: default paths inside the node's namespace, the imported
/// pause image pinned, the CNI plugins of Debian's `containernetworking-plugins`.
pub fn containerd_config(c: &NodeConfig) -> String {
    format!(
        r#"version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj (sandboxes ask for -998).
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      SystemdCgroup = false
      BinaryName = "{runc}"
"#,
        runc = c.runc.display(),
    )
}

/// The kubelet's command line.
pub fn kubelet_args(c: &NodeConfig) -> Vec<String> {
    let mut args = vec![
        "--config=/etc/kubernetes/kubelet-config.yaml".to_string(),
        "--kubeconfig=/etc/kubernetes/kubelet.conf".to_string(),
        format!("--hostname-override={}", c.node.name),
        // Both InternalIPs on a dual-stack segment, IPv4 first (the cluster's primary family).
        format!(
            "--node-ip={}",
            c.node
                .addresses()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        "--v=1".to_string(),
    ];
    if !c.node.labels.is_empty() {
        let labels: Vec<String> = c
            .node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        args.push(format!("--node-labels={}", labels.join(",")));
    }
    args
}

/// Writes the node's tree: overlay layers with its `/etc` (configs, kubeconfigs, the
/// cluster CA and the daemons' client certificates, an empty CNI directory, a machine id),
/// the data directories and the sysctl files. Everything is written before the overlays are
/// mounted: an upper directory must not change under a mounted overlay.
pub fn prepare_tree(tree: &NodeTree, c: &NodeConfig, pki: &crate::controlplane::Pki) -> Result<()> {
    if tree.root.exists() {
        std::fs::remove_dir_all(&tree.root)
            .with_context(|| format!("removing the old node tree {}", tree.root.display()))?;
    }
    for (_, name) in OVERLAYS {
        std::fs::create_dir_all(tree.overlay_upper(name))?;
        std::fs::create_dir_all(tree.overlay_work(name))?;
    }
    for d in ["kubelet", "containerd"] {
        std::fs::create_dir_all(tree.data(d))?;
    }
    let etc = tree.etc();
    let k8s = etc.join("kubernetes");
    let pki_dir = k8s.join("pki");
    for d in [&pki_dir, &etc.join("containerd"), &etc.join("cni/net.d")] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::copy(pki.ca_cert(), pki_dir.join("ca.crt")).context("copying the cluster CA")?;
    let node = &c.node.name;
    for (stem, user, groups) in [
        (
            "kubelet-client",
            format!("system:node:{node}"),
            vec!["system:nodes"],
        ),
        ("kube-proxy", "system:kube-proxy".to_string(), vec![]),
    ] {
        let (crt, key) = pki.client_cert(&user, &groups)?;
        std::fs::copy(&crt, pki_dir.join(format!("{stem}.crt")))?;
        std::fs::copy(&key, pki_dir.join(format!("{stem}.key")))?;
        let conf = if stem == "kube-proxy" {
            "kube-proxy.conf"
        } else {
            "kubelet.conf"
        };
        std::fs::write(k8s.join(conf), node_kubeconfig(c.api_server, stem))?;
    }
    std::fs::write(k8s.join("kubelet-config.yaml"), kubelet_config(c))?;
    std::fs::write(k8s.join("kube-proxy-config.yaml"), kube_proxy_config(c))?;
    std::fs::write(etc.join("containerd/config.toml"), containerd_config(c))?;
    std::fs::write(etc.join("machine-id"), machine_id(&c.cluster, node))?;
    std::fs::create_dir_all(tree.sysctl_dir())?;
    for (key, value) in KUBELET_SYSCTLS {
        std::fs::write(
            tree.sysctl_dir().join(key.replace('/', ".")),
            format!("{value}\n"),
        )?;
    }
    Ok(())
}

/// A stable, per-node `/etc/machine-id` (32 hex digits).
pub fn machine_id(cluster: &str, node: &str) -> String {
    // FNV-1a, twice with different offsets: stable across runs, distinct per node.
    let h = |seed: u64| {
        format!("cw:{cluster}:{node}").bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}\n",
        h(0xcbf2_9ce4_8422_2325),
        h(0x8422_2325_cbf2_9ce4)
    )
}

/// Creates `root` (e.g. `/causeway-e2e/dev/node-a`) in every hierarchy, level by level, with
/// cpuset's `cpus` and `mems` copied down (a new v1 cpuset starts empty and takes no task).
pub fn create_cgroups(hierarchies: &[Hierarchy], root: &str) -> Result<()> {
    for h in hierarchies {
        let base = h.host_path();
        let mut dir = base.clone();
        for part in root.trim_start_matches('/').split('/') {
            let parent = dir.clone();
            dir = dir.join(part);
            if !dir.is_dir() {
                std::fs::create_dir(&dir)
                    .with_context(|| format!("creating cgroup {}", dir.display()))?;
            }
            if h.options.split(',').any(|o| o == "cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = std::fs::read_to_string(parent.join(f))?;
                    if std::fs::read_to_string(dir.join(f))?.trim().is_empty() {
                        std::fs::write(dir.join(f), v.trim())
                            .with_context(|| format!("writing {}", dir.join(f).display()))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Pids of every process in `dir` and the cgroups below it.
pub fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Kills every process left in `dir`'s subtree in every hierarchy (containers of pods whose
/// runtime is already gone) and removes the cgroups, deepest first. Returns what it did.
pub fn remove_cgroups(hierarchies: &[Hierarchy], dir: &str) -> Vec<String> {
    let mut done = Vec::new();
    let roots: Vec<PathBuf> = hierarchies
        .iter()
        .map(|h| h.host_path().join(dir.trim_start_matches('/')))
        .filter(|p| p.is_dir())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<u32> = roots.iter().flat_map(|r| cgroup_pids(r)).collect();
        if pids.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in pids {
            if let Some(id) = crate::proc::ProcId::of(pid) {
                id.signal(nix::sys::signal::Signal::SIGKILL);
                done.push(format!("process {pid} in cgroup {dir}"));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for root in &roots {
        // Deepest first: a cgroup with children cannot be removed.
        let mut dirs = vec![];
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            dirs.push(d);
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            // A cgroup whose last task just exited may be busy for a moment.
            let mut tries = 0;
            while std::fs::remove_dir(&d).is_err() && d.exists() && tries < 20 {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if root.exists() {
            done.push(format!("cgroup {} NOT removed", root.display()));
        } else {
            done.push(format!("cgroup {}", root.display()));
        }
    }
    done
}

/// Waits until `path` exists, failing early (with `what` and the log) if `alive` turns false.
pub fn wait_for_path(
    path: &Path,
    what: &str,
    timeout: Duration,
    alive: impl Fn() -> bool,
    log: impl Fn() -> String,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return Ok(());
        }
        if !alive() {
            bail!("{what} exited before it was ready:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "{what} not ready after {timeout:?} ({} missing):\n{}",
        path.display(),
        log()
    )
}

/// Starts every node of the cluster's topology as a kubelet node and waits until each has
/// registered its Node object. `images` are imported into every node's containerd first.
pub fn start_nodes(cluster: &Cluster, images: &[PathBuf]) -> Result<()> {
    let bins = NodeBinaries::locate(&cluster.binaries.kubelet, &cluster.binaries.kube_proxy)?;
    let hierarchies = host_hierarchies()?;
    let started = Instant::now();
    for n in &cluster.topology.nodes {
        start_node(cluster, &bins, &hierarchies, n, images)
            .with_context(|| format!("starting kubelet node {}", n.name))?;
    }
    for n in &cluster.topology.nodes {
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster
            .kubectl(&["get", "node", &n.name, "-o", "name"])
            .is_err()
        {
            ensure!(
                Instant::now() < deadline,
                "kubelet of {} did not register its Node within 60 s:\n{}",
                n.name,
                cluster.log_tail(&format!("kubelet-{}", n.name), 30)
            );
            ensure!(
                cluster.process_alive(&format!("kubelet-{}", n.name)),
                "kubelet of {} exited:\n{}",
                n.name,
                cluster.log_tail(&format!("kubelet-{}", n.name), 30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!(
        "[e2e] {} kubelet nodes registered in {:.1}s",
        cluster.topology.nodes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn start_node(
    cluster: &Cluster,
    bins: &NodeBinaries,
    hierarchies: &[Hierarchy],
    node: &Host,
    images: &[PathBuf],
) -> Result<()> {
    let tree = NodeTree {
        root: node_dir(&cluster.name, &node.name),
    };
    let config = NodeConfig {
        cluster: cluster.name.clone(),
        node: node.clone(),
        api_server: cluster.topology.control_plane.address,
        runc: bins.runc.clone(),
    };
    prepare_tree(&tree, &config, &cluster.pki)?;
    create_cgroups(hierarchies, &cgroup_root(&cluster.name, &node.name))?;

    let role = holder_role(&node.name);
    let mut c = cmd::in_netns(&cluster.ns(&node.name), "sh");
    c.args(["-c", &holder_script(&tree, hierarchies)]);
    let holder = cluster.spawn_command(&role, c, &[])?;
    wait_for_path(
        &tree.ready_marker(),
        &format!("the mount namespace of {}", node.name),
        Duration::from_secs(10),
        || holder.alive(),
        || cluster.log_tail(&role, 20),
    )?;

    let path = bins.path_env();
    let env = [("PATH", path.as_str())];
    let containerd_role = format!("containerd-{}", node.name);
    let containerd = cluster.spawn_command(
        &containerd_role,
        in_node(
            &holder,
            &bins.containerd_dir.join("containerd"),
            &["--config", "/etc/containerd/config.toml"],
        ),
        &env,
    )?;
    wait_for_path(
        &PathBuf::from(format!(
            "/proc/{}/root/run/containerd/containerd.sock",
            containerd.pid
        )),
        &format!("containerd of {}", node.name),
        Duration::from_secs(20),
        || containerd.alive(),
        || cluster.log_tail(&containerd_role, 20),
    )?;
    for archive in images {
        import_image(bins, &holder, archive)
            .with_context(|| format!("importing {} into {}", archive.display(), node.name))?;
    }
    cluster.spawn_command(
        &format!("kubelet-{}", node.name),
        in_node(&holder, &bins.kubelet, &kubelet_args(&config)),
        &env,
    )?;
    cluster.spawn_command(
        &format!("kube-proxy-{}", node.name),
        in_node(
            &holder,
            &bins.kube_proxy,
            &["--config=/etc/kubernetes/kube-proxy-config.yaml", "--v=1"],
        ),
        &env,
    )?;
    Ok(())
}

/// Role of the process holding a node's mount namespace.
fn holder_role(node: &str) -> String {
    format!("node-{node}")
}

/// `program args` inside the node's mount and network namespaces (nsenter execs it, so the
/// pid is the program's).
fn in_node(holder: &ProcId, program: &Path, args: &[impl AsRef<str>]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--target={}", holder.pid))
        .args(["--mount", "--net", "--"])
        .arg(program)
        .args(args.iter().map(AsRef::as_ref));
    c
}

fn import_image(bins: &NodeBinaries, holder: &ProcId, archive: &Path) -> Result<()> {
    let archive = archive.canonicalize().with_context(|| {
        format!(
            "image archive {} (built by `make images`?)",
            archive.display()
        )
    })?;
    let archive = archive.display().to_string();
    cmd::run(&mut in_node(
        holder,
        &bins.ctr(),
        &[
            "--namespace=k8s.io",
            "images",
            "import",
            "--local",
            archive.as_str(),
        ],
    ))?;
    Ok(())
}

/// The process holding `node`'s mount namespace (fails if the node is not a running kubelet
/// node).
fn holder(cluster: &Cluster, node: &str) -> Result<ProcId> {
    cluster
        .process(&holder_role(node))
        .filter(ProcId::alive)
        .with_context(|| format!("{node} is not a running kubelet node"))
}

/// Imports an image archive into every kubelet node's containerd, as `kind load` does.
pub fn load_image(cluster: &Cluster, archive: &Path) -> Result<()> {
    let bins = NodeBinaries::locate(&cluster.binaries.kubelet, &cluster.binaries.kube_proxy)?;
    for n in &cluster.topology.nodes {
        import_image(&bins, &holder(cluster, &n.name)?, archive)
            .with_context(|| format!("importing {} into {}", archive.display(), n.name))?;
    }
    Ok(())
}

/// Runs a program in `node`'s mount and network namespaces (its own `/etc`, `/var/lib`,
/// `/run`) and returns stdout.
pub fn node_exec(cluster: &Cluster, node: &str, program: &str, args: &[&str]) -> Result<String> {
    cmd::run(&mut in_node(
        &holder(cluster, node)?,
        Path::new(program),
        args,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
cgroup /sys/fs/cgroup/net_cls,net_prio cgroup rw,relatime,net_cls,net_prio 0 0
";

    fn config() -> NodeConfig {
        NodeConfig {
            cluster: "kube".into(),
            node: Host {
                name: "node-a".into(),
                segment: "lan".into(),
                address: [192, 168, 50, 11].into(),
                address6: None,
                labels: [("topology.kubernetes.io/zone".to_string(), "lan".to_string())]
                    .into_iter()
                    .collect(),
                routes: Vec::new(),
            },
            api_server: [192, 168, 50, 2].into(),
            runc: PathBuf::from(RUNC),
        }
    }

    #[test]
    fn hierarchies_are_read_with_only_the_options_that_name_them() {
        let h = parse_hierarchies(HYBRID);
        let got: Vec<(&str, &str, &str)> = h
            .iter()
            .map(|h| (h.dir.as_str(), h.fstype.as_str(), h.options.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("cpu", "cgroup", "cpu"),
                ("cpuset", "cgroup", "cpuset"),
                ("systemd", "cgroup", "none,name=systemd"),
                ("unified", "cgroup2", ""),
                ("net_cls,net_prio", "cgroup", "net_cls,net_prio"),
            ]
        );
    }

    #[test]
    fn a_pure_cgroup2_host_has_one_hierarchy_at_the_root() {
        let h = parse_hierarchies("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec 0 0\n");
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].dir, "");
        assert_eq!(h[0].host_path(), PathBuf::from("/sys/fs/cgroup/"));
    }

    #[test]
    fn the_holder_mounts_overlays_run_data_cgroups_and_sysctls_then_marks_ready() {
        let tree = NodeTree {
            root: PathBuf::from("/var/tmp/causeway-e2e/kube/node-a"),
        };
        let s = holder_script(&tree, &parse_hierarchies(HYBRID));
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "set -eu");
        assert!(lines.contains(
            &"mount -t overlay cw-etc -o lowerdir=/etc,upperdir=/var/tmp/causeway-e2e/kube/node-a/ov/etc/upper,workdir=/var/tmp/causeway-e2e/kube/node-a/ov/etc/work /etc"
        ));
        assert!(lines.contains(
            &"mount --bind /var/tmp/causeway-e2e/kube/node-a/data/containerd /var/lib/containerd"
        ));
        assert!(
            lines.contains(&"mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd")
        );
        assert!(lines.contains(&"mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified"));
        assert!(lines.contains(
            &"mount --bind /var/tmp/causeway-e2e/kube/node-a/sysctl/vm.overcommit_memory /proc/sys/vm/overcommit_memory"
        ));
        // The cgroup tmpfs comes before the hierarchies, the marker after every mount.
        let pos = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or(usize::MAX)
        };
        assert!(pos("tmpfs -o mode=755 cgroup") < pos("/sys/fs/cgroup/cpu"));
        assert_eq!(
            lines[lines.len() - 2],
            "touch /var/tmp/causeway-e2e/kube/node-a/mounts-ready"
        );
        assert_eq!(lines[lines.len() - 1], "exec sleep infinity");
    }

    #[test]
    fn paths_with_spaces_are_quoted_in_the_holder_script() {
        let tree = NodeTree {
            root: PathBuf::from("/tmp/my nodes/node-a"),
        };
        let s = holder_script(&tree, &[]);
        assert!(
            s.contains("upperdir='/tmp/my nodes/node-a/ov/etc/upper'"),
            "{s}"
        );
    }

    #[test]
    fn node_configs_name_the_node_its_cgroup_root_and_the_pinned_pause_image() {
        let c = config();
        assert!(kubelet_config(&c).contains("cgroupRoot: /causeway-e2e/kube/node-a\n"));
        assert!(kubelet_config(&c).contains("protectKernelDefaults: true"));
        assert!(kube_proxy_config(&c).contains("hostnameOverride: node-a\n"));
        let ctd = containerd_config(&c);
        assert!(ctd.contains(&format!("sandbox = \"{PAUSE_IMAGE}\"")));
        assert!(ctd.contains("BinaryName = \"/usr/sbin/runc\""));
        assert_eq!(
            kubelet_args(&c),
            vec![
                "--config=/etc/kubernetes/kubelet-config.yaml",
                "--kubeconfig=/etc/kubernetes/kubelet.conf",
                "--hostname-override=node-a",
                "--node-ip=192.168.50.11",
                "--v=1",
                "--node-labels=topology.kubernetes.io/zone=lan",
            ]
        );
        let kc = node_kubeconfig(c.api_server, "kubelet-client");
        assert!(kc.contains("server: https://192.168.50.2:6443\n"));
        assert!(kc.contains("client-key: /etc/kubernetes/pki/kubelet-client.key\n"));
    }

    #[test]
    fn machine_ids_are_stable_and_distinct_per_node() {
        let a = machine_id("kube", "node-a");
        assert_eq!(a, machine_id("kube", "node-a"));
        assert_ne!(a, machine_id("kube", "node-b"));
        assert_eq!(a.trim().len(), 32);
        assert!(a.trim().chars().all(|c| c.is_ascii_hexdigit()));
    }
}
