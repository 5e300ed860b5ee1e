//! The agent's Prometheus metrics, served as OpenMetrics text at `/metrics` beside `/healthz`
//! and `/readyz` ([`crate::health`]), on `--health-addr` and on `--metrics-addr` when set.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `causeway_agent_build_info` | gauge | `version` | 1, with the agent's version |
//! | `causeway_agent_pass_duration_seconds` | histogram | `kind` | one pass: `full` (observe → plan → diff → apply), `peers` (changed peers replanned alone), `teardown` (the node left its network) |
//! | `causeway_agent_pass_failures_total` | counter | `kind`, `reason` | passes that ended with a failure condition, by its reason (`ApplyFailed`, `InvalidConfiguration`, …) |
//! | `causeway_agent_operations_total` | counter | `kind` | kernel operations applied (netlink, nftables, sysctls), by [`Op::kind`] |
//! | `causeway_agent_operation_errors_total` | counter | `kind` | kernel operations that failed |
//! | `causeway_agent_repairs_total` | counter | | resyncs that restored something changed outside Causeway (each also a `Repaired` event) |
//! | `causeway_agent_dataplane_programmed` | gauge | | 1 when the last pass left the node as planned (its NodeSubnet's `Programmed` is True), 0 when it failed |
//! | `causeway_agent_programmed_objects` | gauge | `kind` | what the agent holds in the kernel after the last pass: `link`, `address`, `route`, `neighbour`, `fdb`, `proxy_neighbour` |
//! | `causeway_agent_bgp_sessions` | gauge | `state` | this node's BGP sessions by state (`Established`, `Active`, …) |
//! | `causeway_agent_vip_held` | gauge | `gateway` | 1 while this node holds a BridgeHosts gateway's VIP |
//! | `causeway_agent_vip_acquisitions_total` | counter | `gateway` | times this node took a gateway's VIP: a fast-rising rate is failover flapping |
//! | `causeway_agent_heartbeat_age_seconds` | gauge | | since the heartbeat Lease was last renewed (−1 before the first renewal) |
//!
//! Label values are bounded: kinds and reasons are fixed sets, gateways and BGP states few.
//! Nothing here is per peer, so a node's series do not grow with the cluster.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::{Op, State};

/// Which path a pass took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    /// observe → plan → diff → apply over the whole node.
    Full,
    /// Changed peers replanned alone against the last full pass.
    Peers,
    /// The node left its network: everything of the agent's removed.
    Teardown,
}

impl PassKind {
    fn label(self) -> &'static str {
        match self {
            PassKind::Full => "full",
            PassKind::Peers => "peers",
            PassKind::Teardown => "teardown",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabel {
    gateway: String,
}

/// The kinds of [`State`] objects counted in `causeway_agent_programmed_objects`.
const OBJECT_KINDS: [&str; 6] = [
    "link",
    "address",
    "route",
    "neighbour",
    "fdb",
    "proxy_neighbour",
];

/// The agent's metrics; shared (`Arc`) between the loop, the electors and the endpoint.
pub struct Metrics {
    registry: Registry,
    pass_duration: Family<KindLabel, Histogram>,
    pass_failures: Family<FailureLabels, Counter>,
    operations: Family<KindLabel, Counter>,
    operation_errors: Family<KindLabel, Counter>,
    repairs: Counter,
    dataplane_programmed: Gauge,
    programmed: Family<KindLabel, Gauge>,
    bgp_sessions: Family<StateLabel, Gauge>,
    vip_held: Family<GatewayLabel, Gauge>,
    vip_acquisitions: Family<GatewayLabel, Counter>,
    heartbeat_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    renewed: Mutex<Option<Instant>>,
}

impl Metrics {
    /// Metrics of an agent at `version`, all at zero.
    #[must_use]
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::with_prefix("causeway_agent");
        causeway_kube::metrics::register_build_info(&mut registry, "agent", version);
        // 1 ms to 65 s: a peer pass takes milliseconds, a first pass at 20,000 peers seconds.
        let pass_duration = Family::<KindLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 2.0, 17))) as fn() -> Histogram,
        );
        registry.register(
            "pass_duration_seconds",
            "Time one pass took, by kind: full, peers (changed peers replanned alone), teardown",
            pass_duration.clone(),
        );
        let pass_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "pass_failures",
            "Passes that ended with a failure condition, by kind and the condition's reason",
            pass_failures.clone(),
        );
        let operations = Family::<KindLabel, Counter>::default();
        registry.register(
            "operations",
            "Kernel operations applied (netlink, nftables, sysctls), by kind",
            operations.clone(),
        );
        let operation_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "operation_errors",
            "Kernel operations that failed, by kind",
            operation_errors.clone(),
        );
        let repairs = Counter::default();
        registry.register(
            "repairs",
            "Resyncs that restored something changed outside Causeway",
            repairs.clone(),
        );
        let dataplane_programmed = Gauge::default();
        registry.register(
            "dataplane_programmed",
            "1 when the last pass left the node as planned (Programmed is True), 0 when it failed",
            dataplane_programmed.clone(),
        );
        let programmed = Family::<KindLabel, Gauge>::default();
        for kind in OBJECT_KINDS {
            programmed.get_or_create(&KindLabel { kind }).set(0);
        }
        registry.register(
            "programmed_objects",
            "Objects the agent holds in the kernel after its last pass, by kind",
            programmed.clone(),
        );
        let bgp_sessions = Family::<StateLabel, Gauge>::default();
        registry.register(
            "bgp_sessions",
            "This node's BGP sessions by state",
            bgp_sessions.clone(),
        );
        let vip_held = Family::<GatewayLabel, Gauge>::default();
        registry.register(
            "vip_held",
            "1 while this node holds the BridgeHosts gateway's VIP",
            vip_held.clone(),
        );
        let vip_acquisitions = Family::<GatewayLabel, Counter>::default();
        registry.register(
            "vip_acquisitions",
            "Times this node took the BridgeHosts gateway's VIP",
            vip_acquisitions.clone(),
        );
        let heartbeat_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        heartbeat_age.set(-1.0);
        registry.register(
            "heartbeat_age_seconds",
            "Seconds since the heartbeat Lease was last renewed (-1 before the first renewal)",
            heartbeat_age.clone(),
        );
        Self {
            registry,
            pass_duration,
            pass_failures,
            operations,
            operation_errors,
            repairs,
            dataplane_programmed,
            programmed,
            bgp_sessions,
            vip_held,
            vip_acquisitions,
            heartbeat_age,
            renewed: Mutex::new(None),
        }
    }

    /// A pass of `kind` took `took`; `failure` is its failure condition's reason, if any.
    pub fn pass(&self, kind: PassKind, took: Duration, failure: Option<&'static str>) {
        self.dataplane_programmed.set(i64::from(failure.is_none()));
        let kind = kind.label();
        self.pass_duration
            .get_or_create(&KindLabel { kind })
            .observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.pass_failures
                .get_or_create(&FailureLabels { kind, reason })
                .inc();
        }
    }

    /// `ops` were applied in order up to `failed` (its index), which failed; all of them when
    /// `None`.
    pub fn applied(&self, ops: &[Op], failed: Option<usize>) {
        let done = failed.unwrap_or(ops.len()).min(ops.len());
        for op in &ops[..done] {
            self.operations
                .get_or_create(&KindLabel { kind: op.kind() })
                .inc();
        }
        if let Some(op) = failed.and_then(|i| ops.get(i)) {
            self.operation_errors
                .get_or_create(&KindLabel { kind: op.kind() })
                .inc();
        }
    }

    /// A resync restored something.
    pub fn repaired(&self) {
        self.repairs.inc();
    }

    /// What the kernel holds after a pass.
    pub fn programmed(&self, state: &State) {
        let counts = [
            state.links.len(),
            state.addresses.len(),
            state.routes.len(),
            state.neighbours.len(),
            state.fdb.len() + state.fdb_extra.len(),
            state.proxy_neighbours.len(),
        ];
        for (kind, n) in OBJECT_KINDS.into_iter().zip(counts) {
            self.programmed
                .get_or_create(&KindLabel { kind })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// This node's BGP sessions now, by state (states no session is in any more read 0).
    pub fn bgp_sessions<'a>(&self, states: impl IntoIterator<Item = &'a str>) {
        let mut counts: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
        for state in states {
            *counts.entry(state).or_default() += 1;
        }
        self.bgp_sessions.clear();
        for (state, n) in counts {
            self.bgp_sessions
                .get_or_create(&StateLabel {
                    state: state.to_owned(),
                })
                .set(n);
        }
    }

    /// Whether this node holds `gateway`'s VIP; taking it counts an acquisition.
    pub fn vip(&self, gateway: &str, held: bool) {
        let label = GatewayLabel {
            gateway: gateway.to_owned(),
        };
        let gauge = self.vip_held.get_or_create(&label);
        let was = gauge.set(i64::from(held));
        if held && was == 0 {
            self.vip_acquisitions.get_or_create(&label).inc();
        }
    }

    /// The node is no longer a candidate for `gateway`: its VIP series go.
    pub fn forget_gateway(&self, gateway: &str) {
        let label = GatewayLabel {
            gateway: gateway.to_owned(),
        };
        self.vip_held.remove(&label);
        self.vip_acquisitions.remove(&label);
    }

    /// The heartbeat Lease was renewed now.
    pub fn heartbeat_renewed(&self) {
        *self
            .renewed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// The OpenMetrics text exposition, as of now.
    #[must_use]
    pub fn encode(&self) -> String {
        let renewed = *self
            .renewed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = renewed {
            self.heartbeat_age.set(at.elapsed().as_secs_f64());
        }
        causeway_kube::metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Link;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_metric_follows_the_prometheus_naming_conventions() {
        let m = Metrics::new("1.2.3");
        m.pass(
            PassKind::Full,
            Duration::from_millis(5),
            Some("ApplyFailed"),
        );
        m.applied(&[Op::DeleteNat], Some(0));
        m.bgp_sessions(["Established"]);
        m.vip("ogw", true);
        m.heartbeat_renewed();
        let text = m.encode();
        let problems = causeway_kube::metrics::naming_problems(&text, "causeway_agent_");
        assert!(problems.is_empty(), "{problems:?}\n{text}");
    }

    #[test]
    fn operations_count_up_to_the_failure_and_the_failure_as_an_error() {
        let m = Metrics::new("test");
        let ops = [
            Op::DeleteLink("cw-a".into()),
            Op::DeleteLink("cw-b".into()),
            Op::DeleteNat,
            Op::DeleteNat6,
        ];
        m.applied(&ops, Some(2));
        m.applied(&ops[..1], None);
        let text = m.encode();
        assert_eq!(
            value(
                &text,
                "causeway_agent_operations_total{kind=\"delete_link\"}"
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "causeway_agent_operation_errors_total{kind=\"delete_nat\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                "causeway_agent_operations_total{kind=\"delete_nat\"}"
            ),
            None,
            "the failed operation is not counted as applied: {text}"
        );
    }

    #[test]
    fn gauges_follow_the_latest_pass_sessions_and_vip() {
        let m = Metrics::new("test");
        let mut state = State::default();
        state.links.insert(
            "cw-br0".into(),
            Link {
                name: "cw-br0".into(),
                kind: crate::model::LinkKind::Bridge,
                mtu: 1500,
                up: true,
            },
        );
        m.programmed(&state);
        m.bgp_sessions(["Established", "Active", "Established"]);
        m.bgp_sessions(["Established"]);
        m.vip("ogw", true);
        m.vip("ogw", false);
        m.vip("ogw", true);
        let text = m.encode();
        for (series, want) in [
            ("causeway_agent_programmed_objects{kind=\"link\"}", 1.0),
            ("causeway_agent_programmed_objects{kind=\"route\"}", 0.0),
            ("causeway_agent_bgp_sessions{state=\"Established\"}", 1.0),
            ("causeway_agent_vip_held{gateway=\"ogw\"}", 1.0),
            (
                "causeway_agent_vip_acquisitions_total{gateway=\"ogw\"}",
                2.0,
            ),
            ("causeway_agent_heartbeat_age_seconds", -1.0),
            ("causeway_agent_build_info{version=\"test\"}", 1.0),
            ("causeway_agent_dataplane_programmed", 0.0),
        ] {
            assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
        }
        assert_eq!(
            value(&text, "causeway_agent_bgp_sessions{state=\"Active\"}"),
            None,
            "a state no session is in is gone: {text}"
        );
        m.heartbeat_renewed();
        let age = value(&m.encode(), "causeway_agent_heartbeat_age_seconds").expect("age");
        assert!((0.0..5.0).contains(&age), "{age}");
    }
}
