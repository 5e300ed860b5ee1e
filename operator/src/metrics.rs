//! Prometheus metrics and the health endpoints: `/metrics` (OpenMetrics text), `/healthz` (the
//! process serves requests), `/readyz` (this replica is the leader with warm caches, or a
//! standby in the election).
//!
//! Served in two places, because replicas run with host networking and may share a node:
//! - every replica, from start, on its Unix socket `--health-socket` (in a per-pod emptyDir):
//!   what the kubelet's exec probes (`causeway-operator probe`, [`crate::probe`]) ask, each
//!   replica for itself, with no port to collide and nothing on a node address;
//! - the leader only, once it leads, on TCP `--metrics-addr` (default `127.0.0.1:8080`): one
//!   port per node is enough because only one process at a time binds it; a replica that loses
//!   the Lease exits, which frees it ([`serve_tcp`] retries while a predecessor shuts down).
//!
//! Metric names: `causeway_operator_build_info{version}` (always 1),
//! `causeway_operator_reconciles_total`, `..._reconcile_errors_total`,
//! `..._reconcile_duration_seconds`, `..._allocation_latency_seconds` (node creation to
//! NodeSubnet creation), `..._join_phase_seconds{phase}` (where an incremental join's time
//! goes: `queued` from the Node watch event to the reconcile, `planned` from there to the
//! NodeSubnet POST, `created` the POST itself), `..._subnets_allocated{network}`, `..._subnets_free{network}`,
//! `..._subnet_allocations_total` and `..._subnet_releases_total` (NodeSubnets created and
//! deleted), `..._gateway_reconciles_total`, `..._gateway_reconcile_errors_total` and
//! `..._gateway_reconcile_duration_seconds` (the OverlayGateway controller), `..._leader` (1 on the active replica). All follow Prometheus's naming
//! conventions, checked by a test ([`causeway_kube::metrics::naming_problems`]).

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, UnixListener};
use tracing::{error, info, warn};

/// Where a replica serves its health endpoints unless `--health-socket` says otherwise (the
/// chart mounts an emptyDir at `/run/causeway`).
pub const DEFAULT_HEALTH_SOCKET: &str = "/run/causeway/operator.sock";

/// Where the leader serves `/metrics` unless `--metrics-addr` says otherwise.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:8080";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

/// The phases of an incremental join, in order (see [`Metrics::join`]).
#[derive(Clone, Copy, Debug)]
pub struct JoinPhases {
    /// From the Node watch event to the reconcile's start: the controller's queue.
    pub queued: Duration,
    /// From the reconcile's start to the NodeSubnet POST: the index step.
    pub planned: Duration,
    /// The NodeSubnet POST, sent to answered.
    pub created: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabel {
    network: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    full_replans: Counter,
    errors: Counter,
    duration: Histogram,
    allocation_latency: Histogram,
    join_phases: Family<PhaseLabel, Histogram>,
    allocated: Family<NetworkLabel, Gauge>,
    free: Family<NetworkLabel, Gauge>,
    allocations: Counter,
    releases: Counter,
    gateway_reconciles: Counter,
    gateway_errors: Counter,
    gateway_duration: Histogram,
    leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(env!("CARGO_PKG_VERSION"))
    }
}

impl Metrics {
    /// Metrics of an operator at `version`, all at zero.
    #[must_use]
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::with_prefix("causeway_operator");
        causeway_kube::metrics::register_build_info(&mut registry, "operator", version);
        let allocations = Counter::default();
        registry.register(
            "subnet_allocations",
            "NodeSubnets created (a node subnet allocated to a node)",
            allocations.clone(),
        );
        let gateway_reconciles = Counter::default();
        registry.register(
            "gateway_reconciles",
            "OverlayGateway reconciles run",
            gateway_reconciles.clone(),
        );
        let gateway_errors = Counter::default();
        registry.register(
            "gateway_reconcile_errors",
            "OverlayGateway reconciles that failed",
            gateway_errors.clone(),
        );
        let gateway_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "gateway_reconcile_duration_seconds",
            "Time one OverlayGateway reconcile took",
            gateway_duration.clone(),
        );
        let releases = Counter::default();
        registry.register(
            "subnet_releases",
            "NodeSubnets deleted because their node left or stopped matching",
            releases.clone(),
        );
        let reconciles = Counter::default();
        let full_replans = Counter::default();
        let errors = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let allocation_latency = Histogram::new(exponential_buckets(0.25, 2.0, 12));
        let join_phases = Family::<PhaseLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_25, 2.0, 14))) as fn() -> Histogram,
        );
        let allocated = Family::<NetworkLabel, Gauge>::default();
        let free = Family::<NetworkLabel, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "PodNetwork reconciles run",
            reconciles.clone(),
        );
        registry.register(
            "full_replans",
            "PodNetwork reconciles that re-planned the whole network (the others took the incremental path)",
            full_replans.clone(),
        );
        registry.register(
            "reconcile_errors",
            "PodNetwork reconciles that failed",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one PodNetwork reconcile took",
            duration.clone(),
        );
        registry.register(
            "allocation_latency_seconds",
            "Time from a Node's creation to its NodeSubnet's creation",
            allocation_latency.clone(),
        );
        registry.register(
            "join_phase_seconds",
            "Where an incremental join's time goes: queued (Node watch event to reconcile), planned (reconcile to NodeSubnet POST), created (the POST)",
            join_phases.clone(),
        );
        registry.register(
            "subnets_allocated",
            "Node subnets in use per PodNetwork",
            allocated.clone(),
        );
        registry.register(
            "subnets_free",
            "Node subnets still free per PodNetwork",
            free.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica holds the leader Lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            full_replans,
            errors,
            duration,
            allocation_latency,
            join_phases,
            allocated,
            free,
            allocations,
            releases,
            gateway_reconciles,
            gateway_errors,
            gateway_duration,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// A reconcile re-planned the whole network.
    pub fn full_replan(&self) {
        self.full_replans.inc();
    }

    pub fn reconcile_error(&self) {
        self.errors.inc();
    }

    pub fn allocation_latency(&self, node_created: &Time) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let secs = now.duration_since(node_created.0).as_secs_f64();
        self.allocation_latency.observe(secs.max(0.0));
    }

    /// One incremental step that created NodeSubnets (joins), phase by phase.
    pub fn join(&self, phases: JoinPhases) {
        for (phase, took) in [
            ("queued", phases.queued),
            ("planned", phases.planned),
            ("created", phases.created),
        ] {
            self.join_phases
                .get_or_create(&PhaseLabel { phase })
                .observe(took.as_secs_f64());
        }
    }

    /// An OverlayGateway reconcile took `took` and failed or not.
    pub fn gateway_reconciled(&self, took: Duration, failed: bool) {
        self.gateway_reconciles.inc();
        if failed {
            self.gateway_errors.inc();
        }
        self.gateway_duration.observe(took.as_secs_f64());
    }

    /// `n` NodeSubnets were created.
    pub fn allocations(&self, n: usize) {
        self.allocations.inc_by(n as u64);
    }

    /// `n` NodeSubnets were deleted (released).
    pub fn releases(&self, n: usize) {
        self.releases.inc_by(n as u64);
    }

    pub fn subnets(&self, network: &str, allocated: i64, free: i64) {
        let label = NetworkLabel {
            network: network.to_string(),
        };
        self.allocated.get_or_create(&label).set(allocated);
        self.free.get_or_create(&label).set(free);
    }

    /// Drops the per-network series of a deleted network.
    pub fn forget(&self, network: &str) {
        let label = NetworkLabel {
            network: network.to_string(),
        };
        self.allocated.remove(&label);
        self.free.remove(&label);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        causeway_kube::metrics::encode(&self.registry)
    }
}

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// The routes, the same on both listeners.
fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_route))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

async fn metrics_route(state: State<Arc<Metrics>>) -> impl IntoResponse {
    metrics(state).await
}

/// Binds the Unix socket at `path`. A socket file left by a previous container of the same
/// pod (the emptyDir outlives restarts) is removed first, unless a live process still answers
/// on it: two replicas must never share a socket.
///
/// # Errors
/// When a live process holds the socket, the path is something else than a socket, or binding
/// fails (the directory must exist).
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another process serves {}; give each replica its own",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until the process exits.
///
/// # Errors
/// When accepting connections fails for good.
pub async fn serve_unix(listener: UnixListener, metrics: Arc<Metrics>) -> io::Result<()> {
    axum::serve(listener, router(metrics)).await
}

/// Serves `/metrics` (and the health paths) on TCP `addr` until the process exits: called by
/// the leader once it leads. While the address is in use (the previous leader on this node
/// still shutting down) it retries every half second; any other bind error is logged and
/// metrics stay off, the operator keeps working.
pub async fn serve_tcp(addr: SocketAddr, metrics: Arc<Metrics>) {
    const RETRY: Duration = Duration::from_millis(500);
    // Warn at the first refusal, then once a minute.
    const WARN_EVERY: u32 = 120;
    let mut attempts: u32 = 0;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if attempts.is_multiple_of(WARN_EVERY) {
                    warn!(%addr, waited_s = (RETRY * attempts).as_secs(), "the metrics address is in use (previous leader stopping?); retrying");
                }
                attempts = attempts.saturating_add(1);
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => {
                error!(%addr, error = %e, "cannot serve metrics (--metrics-addr); the operator runs on without them");
                return;
            }
        }
    };
    info!(%addr, "serving /metrics");
    if let Err(e) = axum::serve(listener, router(metrics)).await {
        error!(%addr, error = %e, "the metrics endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_the_operator_prefix_and_network_labels() {
        let m = Metrics::new("1.2.3");
        m.reconciled(Duration::from_millis(3));
        m.reconcile_error();
        m.subnets("overlay", 3, 253);
        m.set_leader(true);
        m.allocations(2);
        m.gateway_reconciled(Duration::from_millis(2), true);
        m.join(JoinPhases {
            queued: Duration::from_millis(1),
            planned: Duration::from_millis(1),
            created: Duration::from_millis(2),
        });
        let text = m.encode();
        let problems = causeway_kube::metrics::naming_problems(&text, "causeway_operator_");
        assert!(problems.is_empty(), "{problems:?}\n{text}");
        for want in [
            "causeway_operator_build_info{version=\"1.2.3\"} 1",
            "causeway_operator_subnet_allocations_total 2",
            "causeway_operator_subnet_releases_total 0",
            "causeway_operator_gateway_reconciles_total 1",
            "causeway_operator_gateway_reconcile_errors_total 1",
            "causeway_operator_gateway_reconcile_duration_seconds_count 1",
            "causeway_operator_reconciles_total 1",
            "causeway_operator_reconcile_errors_total 1",
            "causeway_operator_subnets_allocated{network=\"overlay\"} 3",
            "causeway_operator_subnets_free{network=\"overlay\"} 253",
            "causeway_operator_leader 1",
            "causeway_operator_reconcile_duration_seconds_count 1",
        ] {
            assert!(text.contains(want), "missing `{want}` in:\n{text}");
        }
    }

    #[tokio::test]
    async fn the_health_socket_answers_probes_and_replaces_only_a_stale_socket() {
        use crate::probe::{Check, ProbeError, probe};
        let dir = std::env::temp_dir().join(format!("causeway-op-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("operator.sock");
        // What a previous container of the pod left in the emptyDir.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
        let m = Arc::new(Metrics::default());
        let listener = bind_unix(&path).expect("a stale socket is replaced");
        tokio::spawn(serve_unix(listener, m.clone()));
        let second = bind_unix(&path).expect_err("a live socket is never taken over");
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);

        let ask = |check| {
            let path = path.clone();
            tokio::task::spawn_blocking(move || probe(&path, check, Duration::from_secs(2)))
        };
        match ask(Check::Ready).await.expect("join") {
            Err(ProbeError::Status {
                code: 503, body, ..
            }) => assert_eq!(body, "not ready"),
            other => panic!("ready before joining the election: {other:?}"),
        }
        m.set_ready(true);
        assert_eq!(ask(Check::Ready).await.expect("join").expect("ready"), "ok");
        assert_eq!(ask(Check::Live).await.expect("join").expect("live"), "ok");

        let file = dir.join("not-a-socket");
        std::fs::write(&file, "x").expect("file");
        assert!(bind_unix(&file).is_err(), "a regular file is never removed");
        assert!(file.exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
