//! A running test cluster: topology namespaces, the control plane, registered nodes, and the
//! helpers a scenario uses (kubectl, commands in a node, background processes).
//!
//! `Cluster::up` first sweeps leftovers of crashed runs, records everything it creates in the
//! cluster's state file before creating it, and `Drop` tears it all down (unless the cluster
//! was started detached for `make up`).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cmd;
use crate::controlplane::{self, Binaries, Pki};
use crate::proc::ProcId;
use crate::state::{self, ProcessEntry, State};
use crate::topology::Topology;

/// Longest cluster name: it is part of every namespace name and of the root veth's name.
pub const MAX_CLUSTER_NAME: usize = 8;

/// A running cluster.
pub struct Cluster {
    pub name: String,
    pub topology: Topology,
    /// Directory holding the PKI, kubeconfigs and per-node directories.
    pub dir: PathBuf,
    /// Admin kubeconfig for the root namespace (API server via the harness's veth).
    pub kubeconfig: PathBuf,
    /// Admin kubeconfig for processes inside node namespaces (API server on the underlay).
    pub kubeconfig_underlay: PathBuf,
    pub binaries: Binaries,
    pub pki: Pki,
    /// The API server address as seen from the root namespace.
    pub api_from_root: Ipv4Addr,
    detached: bool,
    children: Mutex<Vec<Child>>,
}

/// Options for [`Cluster::up_with`].
#[derive(Clone, Debug, Default)]
pub struct UpOptions {
    /// Leave the cluster running when this process exits (`make up`).
    pub detached: bool,
    /// Do not register Node objects.
    pub skip_node_registration: bool,
    /// Image archives (OCI layout) imported into every kubelet node's containerd at start.
    pub images: Vec<PathBuf>,
}

/// Fails with the fix when the harness cannot work here (not root, tools missing).
pub fn require_prerequisites() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the e2e harness needs root (network namespaces, veths): run `sudo make test` / `sudo make up`"
    );
    for (program, package) in [
        ("ip", "iproute2"),
        ("openssl", "openssl"),
        ("ping", "iputils-ping"),
        ("socat", "socat"),
    ] {
        cmd::require_program(program, package)?;
    }
    ensure!(
        Path::new("/usr/lib/cni/bridge").is_file(),
        "/usr/lib/cni/bridge is missing: run `make deps` (Debian package containernetworking-plugins)"
    );
    Ok(())
}

impl Cluster {
    /// Starts cluster `name` owned by this process: torn down on drop.
    pub fn up(name: &str, topology: Topology) -> Result<Self> {
        Self::up_with(name, topology, UpOptions::default())
    }

    pub fn up_with(name: &str, topology: Topology, opts: UpOptions) -> Result<Self> {
        ensure!(
            !name.is_empty()
                && name.len() <= MAX_CLUSTER_NAME
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "cluster name `{name}` must be 1-{MAX_CLUSTER_NAME} lowercase letters or digits"
        );
        topology.validate().context("invalid topology")?;
        require_prerequisites()?;
        let binaries = Binaries::locate()?;
        // Leftovers: of this name (whatever its owner) and of any crashed run.
        for what in state::sweep_stale()? {
            eprintln!("[e2e] removed stale {what}");
        }
        if State::load(name)?.is_some() || state::list_clusters().iter().any(|c| c == name) {
            for what in state::teardown(name)? {
                eprintln!("[e2e] removed leftover {what}");
            }
        }
        let dir = State::dir(name);
        std::fs::create_dir_all(&dir)?;
        let mut st = State {
            name: name.to_string(),
            owner: (!opts.detached).then(ProcId::current),
            ..State::default()
        };
        let plan = topology.setup_plan(name);
        st.namespaces = plan.namespaces.clone();
        let root_veth = format!("cw-{name}");
        st.root_veths.push(root_veth.clone());
        st.save()?;

        // A half-built cluster is torn down at once, detached or not: nobody else would know
        // it is broken.
        Self::build(name, topology, plan, binaries, st, root_veth, opts).inspect_err(|_| {
            if let Err(e) = state::teardown(name) {
                eprintln!("[e2e] tear-down after failed start of {name} failed: {e:#}");
            }
        })
    }

    fn build(
        name: &str,
        topology: Topology,
        plan: crate::topology::SetupPlan,
        binaries: Binaries,
        st: State,
        root_veth: String,
        opts: UpOptions,
    ) -> Result<Self> {
        let started = Instant::now();
        // The first batch creates the namespaces; those with IPv6 addresses get their IPv6
        // settings before any interface exists in them (see `IPV6_SYSCTLS`).
        let (create, rest) = plan
            .batches
            .split_first()
            .context("the setup plan has no batches")?;
        cmd::ip_batch(create.ns.as_deref(), &create.lines)?;
        for ns in &plan.ipv6_namespaces {
            let mut c = cmd::in_netns(ns, "sysctl");
            c.arg("-q");
            for kv in crate::topology::IPV6_SYSCTLS {
                c.args(["-w", kv]);
            }
            cmd::run(&mut c)?;
        }
        for batch in rest {
            cmd::ip_batch(batch.ns.as_deref(), &batch.lines)?;
        }
        for ns in plan
            .namespaces
            .iter()
            .filter(|ns| !plan.ipv6_namespaces.contains(ns))
        {
            // No IPv6 noise (router solicitations, DAD) on the test underlay.
            cmd::run(
                cmd::in_netns(ns, "sysctl")
                    .args(["-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
                    .args(["-w", "net.ipv6.conf.default.disable_ipv6=1"]),
            )?;
        }
        for (ns, settings) in &plan.sysctls {
            let mut c = cmd::in_netns(ns, "sysctl");
            c.arg("-q");
            for kv in settings {
                c.args(["-w", kv]);
            }
            cmd::run(&mut c)?;
        }
        // The harness's own link to the API server: a /30 from 198.18.0.0/15 (RFC 2544
        // benchmarking space, never routed) on a veth it owns; nothing else in the root
        // namespace is touched.
        let (root_ip, cp_ip) = free_link_net()?;
        let cp_ns = Topology::ns(name, "cp", "apiserver");
        cmd::ip_batch(
            None,
            &[
                format!("link add {root_veth} type veth peer name harness netns {cp_ns}"),
                format!("addr add {root_ip}/30 dev {root_veth}"),
                format!("link set {root_veth} up"),
            ],
        )?;
        cmd::ip_batch(
            Some(&cp_ns),
            &[
                format!("addr add {cp_ip}/30 dev harness"),
                "link set harness up".to_string(),
            ],
        )?;

        let dir = State::dir(name);
        let mut api_ips = vec![topology.control_plane.address.into(), cp_ip.into()];
        api_ips.extend(topology.control_plane.address6.map(std::net::IpAddr::V6));
        let pki = Pki::create(&dir.join("pki"), &api_ips)?;
        let (admin_crt, admin_key) = pki.client_cert("causeway-admin", &["system:masters"])?;
        let kubeconfig = dir.join("kubeconfig");
        pki.kubeconfig(
            &kubeconfig,
            &format!("https://{cp_ip}:{}", controlplane::API_PORT),
            &admin_crt,
            &admin_key,
        )?;
        let kubeconfig_underlay = dir.join("kubeconfig-underlay");
        pki.kubeconfig(
            &kubeconfig_underlay,
            &format!(
                "https://{}:{}",
                topology.control_plane.address,
                controlplane::API_PORT
            ),
            &admin_crt,
            &admin_key,
        )?;
        let kubeconfig_local = dir.join("kubeconfig-local");
        pki.kubeconfig(
            &kubeconfig_local,
            &format!("https://127.0.0.1:{}", controlplane::API_PORT),
            &admin_crt,
            &admin_key,
        )?;
        st.save()?;

        let cluster = Self {
            name: name.to_string(),
            topology,
            dir: dir.clone(),
            kubeconfig,
            kubeconfig_underlay,
            binaries,
            pki,
            api_from_root: cp_ip,
            detached: opts.detached,
            children: Mutex::new(Vec::new()),
        };
        let etcd_dir = state::etcd_root().join(name);
        std::fs::create_dir_all(&etcd_dir)?;
        let etcd_bin = cluster.binaries.etcd.display().to_string();
        cluster.spawn_ns(
            &cp_ns,
            "etcd",
            &etcd_bin,
            &controlplane::etcd_args(&etcd_dir),
            &[],
        )?;
        let apiserver = cluster.binaries.kube_apiserver.display().to_string();
        cluster.spawn_ns(
            &cp_ns,
            "kube-apiserver",
            &apiserver,
            &controlplane::apiserver_args(
                &cluster.pki,
                cluster.topology.control_plane.address,
                cluster.topology.kubelet,
            ),
            &[],
        )?;
        cluster.wait_ready(None, "kube-apiserver", Duration::from_secs(120))?;
        if cluster.topology.control_plane.controller_manager {
            let kcm = cluster
                .binaries
                .kube_controller_manager
                .display()
                .to_string();
            cluster.spawn_ns(
                &cp_ns,
                "kube-controller-manager",
                &kcm,
                &controlplane::controller_manager_args(
                    &cluster.pki,
                    &kubeconfig_local,
                    cluster.topology.kubelet,
                ),
                &[],
            )?;
        }
        for (_, h) in cluster.topology.hosts() {
            std::fs::create_dir_all(cluster.host_dir(&h.name))?;
        }
        if cluster.topology.kubelet {
            let scheduler = cluster.binaries.kube_scheduler.display().to_string();
            cluster.spawn_ns(
                &cp_ns,
                "kube-scheduler",
                &scheduler,
                &controlplane::scheduler_args(&kubeconfig_local),
                &[],
            )?;
            crate::kubelet::start_nodes(&cluster, &opts.images)?;
        } else if !opts.skip_node_registration {
            cluster.register_nodes()?;
        }
        eprintln!(
            "[e2e] cluster {name} up in {:.1}s (KUBECONFIG={})",
            started.elapsed().as_secs_f64(),
            cluster.kubeconfig.display()
        );
        Ok(cluster)
    }

    /// Starts a second kube-apiserver on the same etcd, at `port` on the control plane's
    /// address, with `extra` flags after the cluster's own (e.g. a feature gate turned off, as
    /// an API server of another version or configuration answers); returns once it answers
    /// `/readyz`. It leaves the `default/kubernetes` endpoints to the first server; stop it
    /// with [`Cluster::stop`].
    pub fn start_extra_apiserver(&self, role: &str, port: u16, extra: &[&str]) -> Result<ProcId> {
        let mut args: Vec<String> = controlplane::apiserver_args(
            &self.pki,
            self.topology.control_plane.address,
            self.topology.kubelet,
        )
        .into_iter()
        .filter(|a| !a.starts_with("--secure-port="))
        .collect();
        args.push(format!("--secure-port={port}"));
        args.push("--endpoint-reconciler-type=none".into());
        args.extend(extra.iter().map(|a| a.to_string()));
        let program = self.binaries.kube_apiserver.display().to_string();
        let cp_ns = Topology::ns(&self.name, "cp", "apiserver");
        let id = self.spawn_ns(&cp_ns, role, &program, &args, &[])?;
        // From the harness, as the cluster's own kubeconfig reaches the first server.
        let server = format!("https://{}:{port}", self.api_from_root);
        if let Err(e) = self.wait_ready(Some(&server), role, Duration::from_secs(60)) {
            self.stop(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Polls `/readyz` of the API server `role` at `server` (the cluster's own kubeconfig's
    /// when `None`) until it answers ok; fails at once when it or etcd exited.
    fn wait_ready(&self, server: Option<&str>, role: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut kubectl = self.kubectl_cmd();
            kubectl.args(["get", "--raw", "/readyz", "--request-timeout=2s"]);
            if let Some(server) = server {
                kubectl.arg(format!("--server={server}"));
            }
            match cmd::run(&mut kubectl) {
                Ok(out) if out.trim() == "ok" => return Ok(()),
                Ok(out) => last = out,
                Err(e) => last = format!("{e:#}"),
            }
            if !self.process_alive(role) || !self.process_alive("etcd") {
                bail!(
                    "the control plane exited during start-up:\n{}",
                    self.log_tail(role, 30) + &self.log_tail("etcd", 10)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "{role} not ready after {timeout:?}: {last}\n{}",
            self.log_tail(role, 30)
        )
    }

    /// Namespace of a node, client or router by name (`cp` for the control plane).
    pub fn ns(&self, host: &str) -> String {
        if host == "cp" {
            return Topology::ns(&self.name, "cp", "apiserver");
        }
        if self.topology.routers.iter().any(|r| r.name == host) {
            return Topology::ns(&self.name, "router", host);
        }
        if self.topology.clients.iter().any(|c| c.name == host) {
            return Topology::ns(&self.name, "client", host);
        }
        Topology::ns(&self.name, "node", host)
    }

    /// Namespace of a segment's switch.
    pub fn segment_ns(&self, segment: &str) -> String {
        Topology::ns(&self.name, "seg", segment)
    }

    /// The switch port of a host's underlay link: (segment namespace, port name). For a
    /// router, the port of its leg on the first segment.
    pub fn switch_port(&self, host: &str) -> Result<(String, String)> {
        let plan = self.topology.setup_plan(&self.name);
        let (_, segment, port) = plan
            .ports
            .into_iter()
            .find(|(label, _, _)| label == host)
            .with_context(|| format!("no underlay link for `{host}` in the topology"))?;
        Ok((self.segment_ns(&segment), port))
    }

    /// Cuts (`up = false`) or restores a host's underlay link at the switch, as pulling the
    /// cable would: the host's own interface stays up and configured.
    pub fn set_underlay_link(&self, host: &str, up: bool) -> Result<()> {
        let (ns, port) = self.switch_port(host)?;
        cmd::ip_batch(
            Some(&ns),
            &[format!(
                "link set {port} {}",
                if up { "up" } else { "down" }
            )],
        )
    }

    /// Per-host directory (the node's "filesystem": CNI config, host-local data, run files).
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join("hosts").join(host)
    }

    /// The node's CNI configuration directory (`/etc/cni/net.d` of a real node).
    pub fn cni_conf_dir(&self, node: &str) -> PathBuf {
        self.host_dir(node).join("etc/cni/net.d")
    }

    /// The node's CNI state directory (`/var/lib/cni` of a real node).
    pub fn cni_state_dir(&self, node: &str) -> PathBuf {
        self.host_dir(node).join("var/lib/cni")
    }

    /// `kubectl` with the admin kubeconfig, from the root namespace.
    pub fn kubectl_cmd(&self) -> Command {
        let mut c = Command::new(&self.binaries.kubectl);
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// Runs kubectl and returns stdout, failing with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        cmd::run(self.kubectl_cmd().args(args))
    }

    /// Runs kubectl with `input` on stdin (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Result<String> {
        cmd::run_stdin(self.kubectl_cmd().args(args), input.as_bytes())
    }

    /// Runs a program inside a host's namespace and returns stdout.
    pub fn exec(&self, host: &str, program: &str, args: &[&str]) -> Result<String> {
        cmd::run(cmd::in_netns(&self.ns(host), program).args(args))
    }

    /// Starts a long-running program inside a host's namespace, with the underlay admin
    /// kubeconfig in `KUBECONFIG`, logging to the cluster's log directory. The process is
    /// recorded (pid + start time) and killed at tear-down; returns its identity.
    pub fn spawn(
        &self,
        host: &str,
        role: &str,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<ProcId> {
        let mut env: Vec<(&str, &str)> = env.to_vec();
        let kc = self.kubeconfig_underlay.display().to_string();
        if !env.iter().any(|(k, _)| *k == "KUBECONFIG") {
            env.push(("KUBECONFIG", &kc));
        }
        self.spawn_ns(&self.ns(host), role, program, args, &env)
    }

    /// Starts a long-running program in the control plane's namespace (next to the API
    /// server, reached at 127.0.0.1), like [`Cluster::spawn`] otherwise: benchmarks run the
    /// controllers they compare there, on equal footing.
    pub fn spawn_control_plane(
        &self,
        role: &str,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<ProcId> {
        let mut env: Vec<(&str, &str)> = env.to_vec();
        let kc = self.dir.join("kubeconfig-local").display().to_string();
        if !env.iter().any(|(k, _)| *k == "KUBECONFIG") {
            env.push(("KUBECONFIG", &kc));
        }
        let cp_ns = Topology::ns(&self.name, "cp", "apiserver");
        self.spawn_ns(&cp_ns, role, program, args, &env)
    }

    fn spawn_ns(
        &self,
        ns: &str,
        role: &str,
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<ProcId> {
        let mut c = cmd::in_netns(ns, program);
        c.args(args);
        self.spawn_command(role, c, env)
    }

    /// Starts `c` (which must exec the long-running program itself, keeping its pid) as a
    /// recorded background process with role `role`, logging to the cluster's log directory.
    pub(crate) fn spawn_command(
        &self,
        role: &str,
        mut c: Command,
        env: &[(&str, &str)],
    ) -> Result<ProcId> {
        cmd::ensure_not_shutting_down()?;
        let log_path = self.log_path(role);
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        c.envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Its own process group: a Ctrl-C in the terminal reaches the harness, which then
        // stops everything in order, instead of racing it.
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        // Record the entry before spawning; fill the identity right after.
        let mut st = State::load(&self.name)?.context("cluster state vanished")?;
        let line = cmd::describe(&c);
        let child = c.spawn().with_context(|| format!("starting `{line}`"))?;
        let id = ProcId::of(child.id())
            .with_context(|| format!("`{line}` exited immediately; see {}", log_path.display()))?;
        st.processes.push(ProcessEntry {
            role: role.to_string(),
            id: Some(id.clone()),
        });
        st.save()?;
        if let Ok(mut children) = self.children.lock() {
            children.push(child);
        }
        Ok(id)
    }

    /// Whether the most recent process started with `role` is still running.
    pub fn process_alive(&self, role: &str) -> bool {
        self.process(role).is_some_and(|p| p.alive())
    }

    /// The most recent process started with `role`.
    pub fn process(&self, role: &str) -> Option<ProcId> {
        State::load(&self.name)
            .ok()
            .flatten()?
            .processes
            .into_iter()
            .rev()
            .find(|p| p.role == role)
            .and_then(|p| p.id)
    }

    /// The CPU time (user + system) kube-apiserver and etcd have used so far, in that order:
    /// what the benchmarks read around what they measure.
    pub fn server_cpu(&self) -> Result<[Duration; 2]> {
        let mut cpu = [Duration::ZERO; 2];
        for (slot, role) in cpu.iter_mut().zip(["kube-apiserver", "etcd"]) {
            let p = self
                .process(role)
                .with_context(|| format!("no {role} process recorded"))?;
            *slot = crate::proc::usage(p.pid)?.cpu;
        }
        Ok(cpu)
    }

    /// A kube client with the cluster's admin kubeconfig.
    pub async fn client(&self) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Stops a process the harness started (SIGTERM, then SIGKILL after 5 s) and reaps it.
    pub fn stop(&self, id: &ProcId) {
        id.terminate(Duration::from_secs(5));
        self.reap();
    }

    /// Stops etcd (SIGTERM) and starts it again on the same data directory, as a restarted
    /// etcd member would come back; returns once the API server answers `/readyz` again.
    ///
    /// # Errors
    /// When etcd is not running, cannot be started, or the API server is not ready within 60 s.
    pub fn restart_etcd(&self) -> Result<()> {
        let etcd = self
            .process("etcd")
            .context("the cluster has no etcd process")?;
        self.stop(&etcd);
        let dir = state::etcd_root().join(&self.name);
        let cp_ns = Topology::ns(&self.name, "cp", "apiserver");
        self.spawn_ns(
            &cp_ns,
            "etcd",
            &self.binaries.etcd.display().to_string(),
            &controlplane::etcd_args(&dir),
            &[],
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.kubectl(&["get", "--raw", "/readyz"]).is_ok() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the API server is not ready 60 s after etcd came back:\n{}",
                self.log_tail("etcd", 10)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills a process the harness started with SIGKILL (a crash, not a clean stop).
    pub fn kill(&self, id: &ProcId) {
        id.signal(nix::sys::signal::Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while id.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.reap();
    }

    fn reap(&self) {
        if let Ok(mut children) = self.children.lock() {
            children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        }
    }

    /// The log file of the process started with `role`.
    pub fn log_path(&self, role: &str) -> PathBuf {
        state::log_root()
            .join(&self.name)
            .join(format!("{role}.log"))
    }

    /// The last `n` lines of a process's log.
    pub fn log_tail(&self, role: &str, n: usize) -> String {
        let path = self.log_path(role);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- {} (last {n} lines) ---\n{}\n",
            path.display(),
            lines[start..].join("\n")
        )
    }

    /// Registers every node of the topology as a Node object, the way a kubelet would: labels,
    /// then status with its InternalIPs (IPv4 first on a dual-stack segment) and Hostname
    /// addresses and a Ready condition.
    pub fn register_nodes(&self) -> Result<()> {
        let mut manifests = String::new();
        for n in &self.topology.nodes {
            let mut labels: BTreeMap<String, String> = n.labels.clone();
            labels.insert("kubernetes.io/hostname".into(), n.name.clone());
            labels.insert("kubernetes.io/os".into(), "linux".into());
            let node = serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": n.name, "labels": labels},
            });
            manifests.push_str(&serde_json::to_string(&node)?);
            manifests.push('\n');
        }
        if manifests.is_empty() {
            return Ok(());
        }
        self.kubectl_stdin(&["apply", "-f", "-"], &manifests)
            .context("registering nodes")?;
        for n in &self.topology.nodes {
            self.set_node_addresses(&n.name, &n.addresses())?;
        }
        Ok(())
    }

    /// Writes a node's status addresses (no InternalIP when `address` is `None`) and Ready.
    pub fn set_node_status(&self, node: &str, address: Option<Ipv4Addr>) -> Result<()> {
        let addresses: Vec<std::net::IpAddr> = address.into_iter().map(Into::into).collect();
        self.set_node_addresses(node, &addresses)
    }

    /// Like [`Self::set_node_status`] with any number of InternalIPs of either family, in the
    /// order the kubelet would list them (a dual-stack node lists its primary family first).
    pub fn set_node_addresses(&self, node: &str, internal: &[std::net::IpAddr]) -> Result<()> {
        let now = now_rfc3339()?;
        let mut addresses: Vec<serde_json::Value> = internal
            .iter()
            .map(|a| serde_json::json!({"type": "InternalIP", "address": a.to_string()}))
            .collect();
        addresses.push(serde_json::json!({"type": "Hostname", "address": node}));
        let patch = serde_json::json!({"status": {
            "addresses": addresses,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "registered by the causeway e2e harness",
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
        }});
        self.kubectl(&[
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])
        .with_context(|| format!("setting status of node {node}"))?;
        Ok(())
    }

    /// Tears the cluster down now (also done on drop unless detached).
    pub fn teardown(&self) -> Result<()> {
        let removed = state::teardown(&self.name)?;
        self.reap();
        if std::env::var_os("CAUSEWAY_E2E_VERBOSE").is_some() {
            for r in removed {
                eprintln!("[e2e] removed {r}");
            }
        }
        Ok(())
    }

    /// Paths users need to talk to the cluster.
    pub fn describe(&self) -> String {
        format!(
            "cluster `{}`: API server https://{}:{} (from nodes: https://{}:{})\n  export KUBECONFIG={}\n  logs: {}",
            self.name,
            self.api_from_root,
            controlplane::API_PORT,
            self.topology.control_plane.address,
            controlplane::API_PORT,
            self.kubeconfig.display(),
            state::log_root().join(&self.name).display(),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.detached
            && let Err(e) = self.teardown()
        {
            eprintln!("[e2e] tear-down of cluster {} failed: {e:#}", self.name);
        }
    }
}

/// Picks a /30 in 198.18.0.0/16 not used by any root-namespace address.
fn free_link_net() -> Result<(Ipv4Addr, Ipv4Addr)> {
    let used = cmd::run(Command::new("ip").args(["-4", "-o", "addr", "show"]))?;
    for third in 0..=255u8 {
        for fourth in (0..=252u8).step_by(4) {
            let root = Ipv4Addr::new(198, 18, third, fourth + 1);
            let cp = Ipv4Addr::new(198, 18, third, fourth + 2);
            let net = format!("198.18.{third}.{fourth}/30");
            if !used.contains(&format!("inet {root}/"))
                && !used.contains(&format!("inet {cp}/"))
                && !used.contains(&net)
            {
                return Ok((root, cp));
            }
        }
    }
    bail!("no free /30 left in 198.18.0.0/16 for the harness veth")
}

fn now_rfc3339() -> Result<String> {
    Ok(
        cmd::run(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))?
            .trim()
            .to_string(),
    )
}
