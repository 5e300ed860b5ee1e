//! Prometheus metrics and the health endpoints, served on `--metrics-addr`:
//! `/metrics` (OpenMetrics text), `/healthz` (the process runs), `/readyz` (this replica is
//! the leader with warm caches, or a healthy standby).
//!
//! Metric names: `causeway_operator_reconciles_total`, `..._reconcile_errors_total`,
//! `..._reconcile_duration_seconds`, `..._allocation_latency_seconds` (node creation to
//! NodeSubnet creation), `..._subnets_allocated{network}`, `..._subnets_free{network}`,
//! `..._leader` (1 on the active replica).

use std::net::SocketAddr;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetworkLabel {
    network: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Counter,
    duration: Histogram,
    allocation_latency: Histogram,
    allocated: Family<NetworkLabel, Gauge>,
    free: Family<NetworkLabel, Gauge>,
    leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("causeway_operator");
        let reconciles = Counter::default();
        let errors = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let allocation_latency = Histogram::new(exponential_buckets(0.25, 2.0, 12));
        let allocated = Family::<NetworkLabel, Gauge>::default();
        let free = Family::<NetworkLabel, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "PodNetwork reconciles run",
            reconciles.clone(),
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
            errors,
            duration,
            allocation_latency,
            allocated,
            free,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn reconcile_error(&self) {
        self.errors.inc();
    }

    pub fn allocation_latency(&self, node_created: &Time) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let secs = now.duration_since(node_created.0).as_secs_f64();
        self.allocation_latency.observe(secs.max(0.0));
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
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
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

/// Serves `/metrics`, `/healthz` and `/readyz` until the process exits.
/// Binds `addr` now (so a taken port fails start-up, not silently later) and returns the
/// server to run.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(serve(listener, metrics))
}

async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_route))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    axum::serve(listener, app).await
}

async fn metrics_route(state: State<Arc<Metrics>>) -> impl IntoResponse {
    metrics(state).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_the_operator_prefix_and_network_labels() {
        let m = Metrics::new();
        m.reconciled(Duration::from_millis(3));
        m.reconcile_error();
        m.subnets("overlay", 3, 253);
        m.set_leader(true);
        let text = m.encode();
        for want in [
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
}
