//! The real control plane: etcd (built from its Go module by `e2e/scripts/build-tools.sh`) and
//! kube-apiserver plus
//! kube-controller-manager built from the pinned `k8s.io/kubernetes` module
//! (`e2e/controlplane/`), with a per-cluster PKI and admin kubeconfigs.
//!
//! Flags follow controller-runtime's envtest; see docs/test-cluster.md for each choice.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cmd;

pub use crate::topology::SERVICE_CIDR;
pub const FIRST_SERVICE_IP: &str = "10.96.0.1";
pub const API_PORT: u16 = 6443;

/// Paths of the control-plane programs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
    /// The node side of the same release (kubelet topologies only).
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
}

/// The workspace root (where `Makefile` and `e2e/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Binaries {
    /// Finds the binaries: `$CAUSEWAY_CP_BIN` if set, otherwise the cache that
    /// `e2e/controlplane/build.sh` fills (running it when the cache is cold).
    pub fn locate() -> Result<Self> {
        let dir = match std::env::var_os("CAUSEWAY_CP_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let script = workspace_root().join("e2e/controlplane/build.sh");
                let out = cmd::run(&mut Command::new(&script)).with_context(|| {
                    format!("building the control plane with {}", script.display())
                })?;
                PathBuf::from(out.trim())
            }
        };
        let bin = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if !p.is_file() {
                bail!(
                    "{} is missing: run `make deps` (builds the control plane into the cache)",
                    p.display()
                );
            }
            Ok(p)
        };
        Ok(Self {
            etcd: etcd()?,
            kube_apiserver: bin("kube-apiserver")?,
            kube_controller_manager: bin("kube-controller-manager")?,
            kube_scheduler: bin("kube-scheduler")?,
            kubectl: bin("kubectl")?,
            kubelet: bin("kubelet")?,
            kube_proxy: bin("kube-proxy")?,
        })
    }

    /// The pinned release, as `kubectl version` shows it for the server.
    pub fn pinned_version() -> Result<String> {
        let gomod = workspace_root().join("e2e/controlplane/go.mod");
        let text = std::fs::read_to_string(&gomod)
            .with_context(|| format!("reading {}", gomod.display()))?;
        text.lines()
            .map(str::split_whitespace)
            .filter_map(|mut w| match (w.next(), w.next(), w.next()) {
                (Some("k8s.io/kubernetes"), Some(v), _) if v.starts_with('v') => {
                    Some(v.to_string())
                }
                (Some("require"), Some("k8s.io/kubernetes"), Some(v)) => Some(v.to_string()),
                _ => None,
            })
            .next()
            .with_context(|| format!("no k8s.io/kubernetes requirement in {}", gomod.display()))
    }
}

/// etcd: `$CAUSEWAY_ETCD`, or the cache `e2e/scripts/build-tools.sh` fills (building it when
/// the cache is cold), at the version upstream pairs with the pinned Kubernetes release.
fn etcd() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CAUSEWAY_ETCD") {
        return Ok(PathBuf::from(p));
    }
    let script = workspace_root().join("e2e/scripts/build-tools.sh");
    let out = cmd::run(Command::new(&script).arg("etcd"))
        .with_context(|| format!("building etcd with {} (`make deps`)", script.display()))?;
    let etcd = Path::new(out.trim()).join("etcd");
    if !etcd.is_file() {
        bail!("{} is missing: run `make deps`", etcd.display());
    }
    Ok(etcd)
}

/// Files of the cluster's PKI.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    /// Creates a CA, the API server's serving certificate (SANs for every address a client
    /// may use), and the service-account signing key pair. ECDSA P-256 throughout.
    pub fn create(dir: &Path, ips: &[IpAddr]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pki = Self {
            dir: dir.to_path_buf(),
        };
        let openssl = |args: &[&str]| -> Result<()> {
            cmd::run(Command::new("openssl").args(args).current_dir(dir)).map(|_| ())
        };
        cmd::require_program("openssl", "openssl")?;
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ])?;
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-days",
            "30",
            "-subj",
            "/CN=causeway-e2e-ca",
            "-out",
            "ca.crt",
        ])?;
        let mut san = String::from(
            "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1",
        );
        san.push_str(&format!(",IP:{FIRST_SERVICE_IP}"));
        for ip in ips {
            san.push_str(&format!(",IP:{ip}"));
        }
        std::fs::write(
            dir.join("apiserver.ext"),
            format!(
                "subjectAltName={san}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
            ),
        )?;
        pki.issue("apiserver", "/CN=kube-apiserver", "apiserver.ext")?;
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sa.key",
        ])?;
        openssl(&["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
        Ok(pki)
    }

    fn issue(&self, stem: &str, subject: &str, ext: &str) -> Result<()> {
        let run = |args: &[&str]| -> Result<()> {
            cmd::run(Command::new("openssl").args(args).current_dir(&self.dir)).map(|_| ())
        };
        let key = format!("{stem}.key");
        let csr = format!("{stem}.csr");
        let crt = format!("{stem}.crt");
        run(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &key,
        ])?;
        run(&["req", "-new", "-key", &key, "-subj", subject, "-out", &csr])?;
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            ext,
            "-out",
            &crt,
        ])?;
        Ok(())
    }

    /// A client certificate for `user` in `groups` (e.g. `system:masters` for an admin, or a
    /// restricted identity for RBAC tests); returns (cert, key).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(PathBuf, PathBuf)> {
        let stem: String = format!("client-{user}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let ext = format!("{stem}.ext");
        std::fs::write(
            self.dir.join(&ext),
            "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
        )?;
        let mut subject = String::new();
        for g in groups {
            subject.push_str(&format!("/O={g}"));
        }
        subject.push_str(&format!("/CN={user}"));
        self.issue(&stem, &subject, &ext)?;
        Ok((
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        ))
    }

    /// Writes a kubeconfig for `server` authenticating with the given client certificate.
    pub fn kubeconfig(&self, path: &Path, server: &str, cert: &Path, key: &Path) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: causeway-e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: causeway-e2e\n  context: {{cluster: causeway-e2e, user: user}}\ncurrent-context: causeway-e2e\n",
            ca = self.ca_cert().display(),
            cert = cert.display(),
            key = key.display(),
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes a kubeconfig for `server` that authenticates with the bearer token in
    /// `token_file` (re-read by clients as it changes, as a pod's projected token is).
    pub fn token_kubeconfig(&self, path: &Path, server: &str, token_file: &Path) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: causeway-e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    tokenFile: {token}\ncontexts:\n- name: causeway-e2e\n  context: {{cluster: causeway-e2e, user: user}}\ncurrent-context: causeway-e2e\n",
            ca = self.ca_cert().display(),
            token = token_file.display(),
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// etcd's command line (inside the control-plane namespace, client port on loopback only).
pub fn etcd_args(data_dir: &Path) -> Vec<String> {
    [
        "--name=causeway-e2e",
        &format!("--data-dir={}", data_dir.display()),
        "--listen-client-urls=http://127.0.0.1:2379",
        "--advertise-client-urls=http://127.0.0.1:2379",
        "--listen-peer-urls=http://127.0.0.1:2380",
        "--initial-advertise-peer-urls=http://127.0.0.1:2380",
        "--initial-cluster=causeway-e2e=http://127.0.0.1:2380",
        "--initial-cluster-state=new",
        "--logger=zap",
        "--log-level=warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// kube-apiserver's command line. `kubelets`: the nodes run real kubelets (pods with
/// service-account tokens, `kubectl logs`/`exec`).
pub fn apiserver_args(pki: &Pki, advertise: Ipv4Addr, kubelets: bool) -> Vec<String> {
    let p = |path: PathBuf| path.display().to_string();
    let mut args = vec![
        "--etcd-servers=http://127.0.0.1:2379".into(),
        "--bind-address=0.0.0.0".into(),
        format!("--secure-port={API_PORT}"),
        // Required in a namespace without a default route; must not be loopback.
        format!("--advertise-address={advertise}"),
        format!("--tls-cert-file={}", p(pki.server_cert())),
        format!("--tls-private-key-file={}", p(pki.server_key())),
        format!("--client-ca-file={}", p(pki.ca_cert())),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p(pki.sa_pub())),
        format!("--service-account-signing-key-file={}", p(pki.sa_key())),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--authorization-mode=Node,RBAC".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    if kubelets {
        // Node names do not resolve in the control plane's namespace (no DNS): reach kubelets
        // (logs, exec, port-forward) at their InternalIP.
        args.push("--kubelet-preferred-address-types=InternalIP,Hostname".into());
    } else {
        // No kubelet or pods here; the ServiceAccount admission plugin would only get in the
        // way of tests that create objects before kube-controller-manager made the default
        // service accounts. With kubelets it stays on: pods get their token volumes from it.
        args.push("--disable-admission-plugins=ServiceAccount".into());
    }
    args
}

/// kube-controller-manager's command line: garbage collection (owner references), namespace
/// deletion and service-account tokens; with `kubelets`, also what running workloads needs:
/// DaemonSets, Deployments and their ReplicaSets, EndpointSlices for kube-proxy, node
/// lifecycle (it lifts the `not-ready` taint every new Node gets), PodDisruptionBudgets, pod
/// garbage collection, and the `kube-root-ca.crt` ConfigMap every token volume mounts. Node
/// IPAM is off unless a test asks for it.
pub fn controller_manager_args(pki: &Pki, kubeconfig: &Path, kubelets: bool) -> Vec<String> {
    let p = |path: PathBuf| path.display().to_string();
    let mut controllers =
        "garbagecollector,namespace,serviceaccount,serviceaccount-token".to_string();
    if kubelets {
        controllers.push_str(
            ",daemonset,deployment,replicaset,endpointslice,endpointslicemirroring,\
             nodelifecycle,disruption,podgc,root-ca-certificate-publisher-controller",
        );
    }
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        format!("--service-account-private-key-file={}", p(pki.sa_key())),
        format!("--root-ca-file={}", p(pki.ca_cert())),
        format!("--controllers={controllers}"),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--v=1".into(),
    ]
}

/// kube-scheduler's command line (kubelet topologies): binds every pod, DaemonSet pods included.
pub fn scheduler_args(kubeconfig: &Path) -> Vec<String> {
    let kc = kubeconfig.display();
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--v=1".into(),
    ]
}

/// A Causeway binary of this workspace (`causeway-operator`, later the agent), built by
/// `cargo build --workspace --bins` (which `make test` runs before the tests), or with
/// `--release` when the caller itself is an optimised build (benchmarks).
pub fn causeway_binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let (profile, flag) = if cfg!(debug_assertions) {
        ("debug", "")
    } else {
        ("release", " --release")
    };
    let path = target.join(profile).join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo build{flag} --workspace --bins` first (`make test` and \
             `make bench` do)",
            path.display()
        );
    }
    Ok(path)
}

/// kube-controller-manager running only node IPAM, the way clusters that let Kubernetes
/// allocate `spec.podCIDR` run it: the baseline of the allocation benchmark. `qps` raises the
/// client rate limit (the default is 20 requests/s, burst 30).
pub fn nodeipam_args(
    pki: &Pki,
    kubeconfig: &Path,
    cluster_cidr: &str,
    mask: u8,
    qps: Option<u32>,
) -> Vec<String> {
    let mut args = controller_manager_args(pki, kubeconfig, false);
    for a in &mut args {
        if a.starts_with("--controllers=") {
            *a = "--controllers=nodeipam".into();
        }
    }
    args.extend([
        "--allocate-node-cidrs=true".into(),
        format!("--cluster-cidr={cluster_cidr}"),
        format!("--node-cidr-mask-size={mask}"),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
    ]);
    if let Some(q) = qps {
        args.push(format!("--kube-api-qps={q}"));
        args.push(format!("--kube-api-burst={q}"));
    }
    args
}
