//! The agent's health endpoint (`--health-addr`, default [`DEFAULT_ADDR`]), what the kubelet's
//! probes ask. The chart probes it with `httpGet` on `host: 127.0.0.1`: the kubelet probes from
//! the node's network namespace, which a host-network agent shares, so nothing listens on a
//! node address.
//!
//! - **`/healthz` (liveness)**: the agent's loop has come round within [`liveness_bound`] of the
//!   resync period. The loop wakes at least every resync and every heartbeat renewal, so a loop
//!   that has not come round for that long is stuck in a pass (a netlink call or `nft` that
//!   never returns) — the one state a restart cures. It never depends on the API server: during
//!   an outage the agent keeps the dataplane and keeps looping (status, events and heartbeat
//!   are written beside the loop, [`crate::writes`]; what it still awaits times out, see
//!   [`crate::agent::bounded_writes`]), and restarting it would only lose its caches. Before the
//!   loop starts (waiting for the API server's first lists) the agent is live.
//! - **`/readyz` (readiness)**: the agent has completed its first full pass since it started:
//!   it planned and applied this node's NodeSubnet and the result is in the API (status written
//!   or already current, with a failure condition if it failed), or it found no NodeSubnet and
//!   cleaned up. A DaemonSet rolling update (`maxUnavailable: 1`) moves to the next node only
//!   then, so the new agent has taken over this node before the next one restarts. It stays
//!   ready afterwards: a later failure is a condition on the NodeSubnet, not a reason to pull
//!   the pod out of a rollout.
//!
//! - **`/metrics`**: the agent's Prometheus metrics ([`crate::metrics`]).
//! - **`/debug/route?dst=IP`**: what this node's kernel does with a packet to `IP` (the route
//!   lookup, and on a VXLAN device the neighbour and FDB entries behind it) as JSON
//!   ([`crate::netlink::Lookup`]), for `kubectl causeway trace --verify`. Read-only.
//!
//! The same routes are served on `--metrics-addr` when it is set (a node address Prometheus
//! can reach; `--health-addr` stays on loopback for the kubelet).
//!
//! The state ([`State`]) is pure and driven with explicit instants, so it is tested directly.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// Where the endpoint listens unless `--health-addr` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9809";

/// What a pass may spend waiting for the API server on top of the resync period: the few writes
/// a pass still awaits (finalizers), each bounded by [`crate::agent::API_TIMEOUT`] (plus its
/// connect timeout).
pub const API_ALLOWANCE: Duration = Duration::from_secs(180);

/// How long the loop may go without coming round before `/healthz` fails: the resync period
/// plus [`API_ALLOWANCE`] (3.5 minutes with the default 30 s resync).
#[must_use]
pub fn liveness_bound(resync: Duration) -> Duration {
    resync + API_ALLOWANCE
}

/// What the probes are answered from.
#[derive(Clone, Debug)]
pub struct State {
    bound: Duration,
    started: Instant,
    /// When the loop last came round (`None` until it starts).
    last_turn: Option<Instant>,
    /// When the first full pass completed (`None` until then).
    first_pass: Option<Instant>,
}

impl State {
    /// A freshly started agent with resync period `resync`.
    #[must_use]
    pub fn new(resync: Duration, now: Instant) -> Self {
        Self {
            bound: liveness_bound(resync),
            started: now,
            last_turn: None,
            first_pass: None,
        }
    }

    /// The loop came round (it is not stuck in a pass).
    pub fn turned(&mut self, now: Instant) {
        self.last_turn = Some(now);
    }

    /// A pass completed with a verdict for this node that is in the API (or found nothing to
    /// do). The first one makes the agent ready.
    pub fn settled(&mut self, now: Instant) {
        self.last_turn = Some(now);
        self.first_pass.get_or_insert(now);
    }

    /// A pass's status reached the API after the pass ([`crate::writes::StatusWriter`]): the
    /// first one makes the agent ready. Says nothing about the loop.
    pub fn reported(&mut self, now: Instant) {
        self.first_pass.get_or_insert(now);
    }

    /// Liveness: `Ok` with a line for people, or `Err` saying what is wrong.
    ///
    /// # Errors
    /// When the loop has not come round for longer than the bound.
    pub fn live(&self, now: Instant) -> Result<String, String> {
        let Some(last) = self.last_turn else {
            return Ok(format!(
                "ok: starting for {}s, waiting for the API server's first lists",
                now.saturating_duration_since(self.started).as_secs()
            ));
        };
        let quiet = now.saturating_duration_since(last);
        if quiet > self.bound {
            Err(format!(
                "the agent's loop has not come round for {}s (bound {}s): a pass is stuck",
                quiet.as_secs(),
                self.bound.as_secs()
            ))
        } else {
            Ok(format!("ok: the loop came round {}s ago", quiet.as_secs()))
        }
    }

    /// Readiness: `Ok` once the first full pass has completed.
    ///
    /// # Errors
    /// Before the first full pass, saying what the agent waits for.
    pub fn ready(&self, now: Instant) -> Result<String, String> {
        match self.first_pass {
            Some(at) => Ok(format!(
                "ok: first pass completed {}s after start",
                at.saturating_duration_since(self.started).as_secs()
            )),
            None if self.last_turn.is_none() => Err(format!(
                "not ready: waiting for the API server's first lists ({}s since start)",
                now.saturating_duration_since(self.started).as_secs()
            )),
            None => Err(
                "not ready: the first pass has not completed (its status write may be failing; see the log)"
                    .into(),
            ),
        }
    }
}

/// The shared handle: the loop updates it, the HTTP server reads it.
#[derive(Clone, Debug)]
pub struct Health(Arc<Mutex<State>>);

impl Health {
    /// For an agent starting now with resync period `resync`.
    #[must_use]
    pub fn new(resync: Duration) -> Self {
        Self(Arc::new(Mutex::new(State::new(resync, Instant::now()))))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section is a field update: a poisoned lock still holds a usable state.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// See [`State::turned`].
    pub fn turned(&self) {
        self.state().turned(Instant::now());
    }

    /// See [`State::settled`].
    pub fn settled(&self) {
        self.state().settled(Instant::now());
    }

    /// See [`State::reported`].
    pub fn reported(&self) {
        self.state().reported(Instant::now());
    }

    /// See [`State::live`].
    ///
    /// # Errors
    /// As [`State::live`].
    pub fn live(&self) -> Result<String, String> {
        self.state().live(Instant::now())
    }

    /// See [`State::ready`].
    ///
    /// # Errors
    /// As [`State::ready`].
    pub fn ready(&self) -> Result<String, String> {
        self.state().ready(Instant::now())
    }
}

/// Binds `addr`, retrying for up to `wait` while the address is in use (a predecessor on this
/// node still shutting down).
///
/// # Errors
/// The bind error once `wait` has passed, or at once for anything but "address in use".
pub async fn bind(addr: SocketAddr, wait: Duration) -> io::Result<TcpListener> {
    let deadline = Instant::now() + wait;
    let mut warned = false;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !warned {
                    warn!(%addr, "the health address is in use (a previous agent stopping?); retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the endpoint answers from.
#[derive(Clone)]
struct Served {
    health: Health,
    metrics: Arc<Metrics>,
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `listener` until the process exits.
///
/// # Errors
/// When accepting connections fails for good.
pub async fn serve(listener: TcpListener, health: Health, metrics: Arc<Metrics>) -> io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /healthz, /readyz and /metrics");
    }
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/debug/route", get(route_lookup))
        .with_state(Served { health, metrics });
    axum::serve(listener, app).await
}

fn answer(verdict: Result<String, String>) -> (StatusCode, String) {
    match verdict {
        Ok(line) => (StatusCode::OK, line + "\n"),
        Err(line) => (StatusCode::SERVICE_UNAVAILABLE, line + "\n"),
    }
}

async fn healthz(Extract(served): Extract<Served>) -> (StatusCode, String) {
    answer(served.health.live())
}

async fn readyz(Extract(served): Extract<Served>) -> (StatusCode, String) {
    answer(served.health.ready())
}

/// `/debug/route?dst=IP`: the kernel's answer as JSON, 400 without a valid `dst`, 500 when
/// the kernel cannot be asked.
async fn route_lookup(uri: axum::http::Uri) -> (StatusCode, String) {
    let dst = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("dst="))
        .and_then(|v| v.parse::<std::net::IpAddr>().ok());
    let Some(dst) = dst else {
        return (
            StatusCode::BAD_REQUEST,
            "give the destination as ?dst=IP (e.g. /debug/route?dst=10.244.1.5)\n".into(),
        );
    };
    let answer = match crate::netlink::Netlink::connect().await {
        Ok(netlink) => netlink.lookup(dst).await,
        Err(e) => Err(e),
    };
    match answer.map(|l| serde_json::to_string(&l)) {
        Ok(Ok(json)) => (StatusCode::OK, json + "\n"),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn metrics_text(Extract(served): Extract<Served>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        served.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESYNC: Duration = Duration::from_secs(30);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_starting_agent_is_live_but_not_ready_however_long_the_api_server_takes() {
        let t0 = Instant::now();
        let s = State::new(RESYNC, t0);
        for secs in [0, 60, 3_600] {
            assert!(s.live(at(t0, secs)).is_ok(), "{secs}s");
            let not_ready = s.ready(at(t0, secs)).expect_err("not ready before a pass");
            assert!(not_ready.contains("first lists"), "{not_ready}");
        }
    }

    #[test]
    fn the_first_settled_pass_makes_the_agent_ready_for_good() {
        let t0 = Instant::now();
        let mut s = State::new(RESYNC, t0);
        s.turned(at(t0, 1));
        let waiting = s.ready(at(t0, 1)).expect_err("turned is not a pass");
        assert!(waiting.contains("first pass"), "{waiting}");
        s.settled(at(t0, 2));
        assert_eq!(
            s.ready(at(t0, 2)),
            Ok("ok: first pass completed 2s after start".into())
        );
        // Later passes, good or not, never take readiness away.
        s.turned(at(t0, 40));
        assert!(s.ready(at(t0, 10_000)).is_ok());
    }

    #[test]
    fn liveness_fails_only_when_the_loop_stops_coming_round_for_longer_than_the_bound() {
        let t0 = Instant::now();
        let bound = liveness_bound(RESYNC);
        assert_eq!(bound, Duration::from_secs(210));
        let mut s = State::new(RESYNC, t0);
        s.settled(at(t0, 5));
        // Resyncs and heartbeats keep it coming round, API server or not.
        for secs in (5..2_000).step_by(30) {
            s.turned(at(t0, secs));
            assert!(s.live(at(t0, secs + 29)).is_ok(), "{secs}");
        }
        let last = 1_985;
        assert!(s.live(at(t0, last + 210)).is_ok(), "exactly the bound");
        let stuck = s
            .live(at(t0, last + 211))
            .expect_err("stuck past the bound");
        assert!(stuck.contains("211s (bound 210s)"), "{stuck}");
        // Coming round again makes it live again.
        s.turned(at(t0, last + 212));
        assert!(s.live(at(t0, last + 212)).is_ok());
    }

    #[test]
    fn the_bound_grows_with_the_resync_period() {
        assert_eq!(
            liveness_bound(Duration::from_secs(3)),
            Duration::from_secs(183)
        );
        assert_eq!(
            liveness_bound(Duration::from_secs(300)),
            Duration::from_secs(480)
        );
    }

    #[tokio::test]
    async fn the_endpoint_answers_200_and_503_with_the_reason_and_serves_metrics() {
        let health = Health::new(RESYNC);
        let listener = bind("127.0.0.1:0".parse().expect("addr"), Duration::ZERO)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = Arc::new(Metrics::new("test"));
        tokio::spawn(serve(listener, health.clone(), Arc::clone(&metrics)));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        let r = get("/readyz").await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains("first lists"), "{r}");
        health.settled();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get("/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("application/openmetrics-text"), "{m}");
        assert!(
            m.contains("causeway_agent_build_info{version=\"test\"} 1"),
            "{m}"
        );
        let bad = get("/debug/route?dst=nonsense").await;
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        assert!(bad.contains("?dst=IP"), "{bad}");
    }

    #[tokio::test]
    async fn binding_an_address_in_use_fails_after_the_wait() {
        let held = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = held.local_addr().expect("addr");
        let t = Instant::now();
        let err = bind(addr, Duration::from_millis(600))
            .await
            .expect_err("in use");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(t.elapsed() >= Duration::from_millis(500));
    }
}
