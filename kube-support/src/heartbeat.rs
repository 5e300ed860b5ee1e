//! Agent heartbeats: every node agent renews a Lease (`coordination.k8s.io/v1`) in its own
//! namespace, as the kubelet does in `kube-node-lease`; the operator watches those Leases and
//! reports a network not Ready when an agent stops renewing.
//!
//! Why a Lease and not a timestamp in NodeSubnet status: every agent watches every NodeSubnet
//! of its network, so a heartbeat there would send N watch events to N agents every period
//! (O(N²) traffic). Leases are watched by the operator only: O(N) small writes per period.
//!
//! Staleness is judged by the operator's own clock, never by comparing `renewTime` with it:
//! [`Liveness`] notes the local instant at which it saw each Lease's `renewTime` change, and
//! a node is silent when that is longer ago than the Lease's `leaseDurationSeconds` (the
//! node-lifecycle controller's method; immune to clock skew between nodes).
//!
//! **A lapse counts only while the operator could see.** Renewals travel through the API
//! server and the operator's watch; when either stalls (an API server pause, a broken watch,
//! the operator starting), every agent looks silent although none is. So the operator writes
//! a Lease of its own, [`PROBE_LEASE`], that its heartbeat watch also sees, and [`Probe`]
//! times each write's way back: one seen back proves the view held every write made before it
//! was sent. [`View`] is the result — since when the view has been live without a break, and
//! up to when it is proven complete — and [`counted_lapse`] counts an agent's silence only
//! from the later of its last renewal and the view's last break, up to that point. After any
//! break (and at start-up) every agent gets one full lease duration of grace; during one, no
//! agent newly goes silent; an agent already judged silent stays so until it renews.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

/// Label key and value on every agent heartbeat Lease (the operator watches by it).
pub const LABEL: (&str, &str) = ("app.kubernetes.io/component", "node-agent-heartbeat");

/// Default `leaseDurationSeconds`: like the kubelet's node lease. Agents renew at a quarter
/// of it, so one lost renewal never makes a node look silent.
pub const DEFAULT_DURATION_SECONDS: u32 = 40;

/// Label on the operator's probe Lease ([`PROBE_LEASE`]).
pub const PROBE_LABEL: (&str, &str) = ("app.kubernetes.io/component", "operator-heartbeat-probe");

/// The Lease the operator writes to prove its heartbeat watch live (see the module docs), in
/// the agents' namespace; its holder is the operator replica that leads.
pub const PROBE_LEASE: &str = "causeway-operator-probe";

/// How often the operator writes [`PROBE_LEASE`] (one probe in flight at a time).
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// A probe slower than this from write to watch means the view stalled meanwhile: a break.
pub const PROBE_STALL: Duration = Duration::from_secs(2);

/// A probe not seen back this long after it was sent is given up: a break, and a new probe.
pub const PROBE_LOST: Duration = Duration::from_secs(10);

/// The label selector of the operator's heartbeat watch: agents' Leases and its probe Lease.
#[must_use]
pub fn watch_selector() -> String {
    format!("{} in ({},{})", LABEL.0, LABEL.1, PROBE_LABEL.1)
}

/// Whether `lease` is an agent heartbeat Lease (not the operator's probe).
#[must_use]
pub fn is_agent_lease(lease: &Lease) -> bool {
    lease.labels().get(LABEL.0).map(String::as_str) == Some(LABEL.1)
}

/// Lease names are DNS subdomains of at most this length.
const MAX_NAME: usize = 253;
const PREFIX: &str = "causeway-agent-";

/// The heartbeat Lease name of `node`: `causeway-agent-<node>`, cut and suffixed with a hash
/// when that would exceed 253 characters. The operator never parses it: the Lease's
/// `holderIdentity` names the node.
#[must_use]
pub fn lease_name(node: &str) -> String {
    bounded_name(PREFIX, node)
}

/// `<prefix><name>`, cut and suffixed with a stable hash of `name` when that would exceed
/// 253 characters (the longest object name).
#[must_use]
pub fn bounded_name(prefix: &str, name: &str) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= MAX_NAME {
        return full;
    }
    // FNV-1a, stable across releases (the name must not change on upgrade).
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let suffix = format!("-{hash:016x}");
    let mut cut = MAX_NAME - suffix.len();
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = full[..cut].trim_end_matches(['-', '.']);
    format!("{head}{suffix}")
}

/// Label on every ClientJoin client's heartbeat Lease; the Lease also carries
/// [`crate::election::GATEWAY_LABEL`] and its holder is `<gateway>/<client>`.
pub const CLIENT_LABEL: (&str, &str) = ("app.kubernetes.io/component", "gateway-client-heartbeat");

/// Annotation on a ClientJoin client's heartbeat Lease while the client runs but cannot join
/// (its plan or its kernel refused): why, in the client's words. Absent once it has joined.
pub const CLIENT_PROBLEM: &str = "causeway.dev/client-problem";

/// The heartbeat Lease of ClientJoin client `client` of `gateway`.
#[must_use]
pub fn client_lease_name(gateway: &str, client: &str) -> String {
    bounded_name("causeway-client-", &format!("{gateway}.{client}"))
}

/// The `holderIdentity` of a client's heartbeat Lease.
#[must_use]
pub fn client_holder(gateway: &str, client: &str) -> String {
    format!("{gateway}/{client}")
}

/// Writes `node`'s heartbeat: one server-side apply of the whole Lease (created on first use).
///
/// # Errors
/// The API server's answer when the write fails (the caller logs it and retries next period).
pub async fn renew(
    client: &Client,
    namespace: &str,
    node: &str,
    duration_seconds: u32,
    field_manager: &str,
) -> Result<(), kube::Error> {
    renew_lease(
        client,
        namespace,
        &Beat {
            name: &lease_name(node),
            holder: node,
            labels: &[LABEL],
            annotations: &[],
            owner: None,
            duration_seconds,
        },
        field_manager,
    )
    .await
}

/// One heartbeat Lease as written: its name, holder, labels, optional owner (the garbage
/// collector deletes the Lease with it) and duration.
#[derive(Clone, Copy, Debug)]
pub struct Beat<'a> {
    pub name: &'a str,
    pub holder: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    /// Annotations this writer owns: one it stops sending is removed (server-side apply).
    pub annotations: &'a [(&'a str, &'a str)],
    pub owner: Option<&'a OwnerReference>,
    pub duration_seconds: u32,
}

/// Writes the heartbeat Lease `beat` with one forced server-side apply (created on first
/// use).
///
/// # Errors
/// The API server's answer when the write fails.
pub async fn renew_lease(
    client: &Client,
    namespace: &str,
    beat: &Beat<'_>,
    field_manager: &str,
) -> Result<(), kube::Error> {
    apply_lease(client, namespace, beat, Timestamp::now(), field_manager).await
}

/// A probe's marker for `now`: the time cut to whole microseconds, as a Lease's `renewTime`
/// keeps it, so the value seen on the watch equals the value written.
#[must_use]
pub fn probe_marker(now: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now)
}

/// The marker `lease` carries when it is the operator's probe Lease.
#[must_use]
pub fn probe_marker_of(lease: &Lease) -> Option<Timestamp> {
    if lease.labels().get(PROBE_LABEL.0).map(String::as_str) != Some(PROBE_LABEL.1) {
        return None;
    }
    lease.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

/// Writes the operator's probe Lease with `renewTime` = `marker` (from [`probe_marker`]).
///
/// # Errors
/// The API server's answer when the write fails.
pub async fn write_probe(
    client: &Client,
    namespace: &str,
    holder: &str,
    marker: Timestamp,
    field_manager: &str,
) -> Result<(), kube::Error> {
    let beat = Beat {
        name: PROBE_LEASE,
        holder,
        labels: &[PROBE_LABEL],
        annotations: &[],
        owner: None,
        duration_seconds: u32::try_from(PROBE_LOST.as_secs()).unwrap_or(u32::MAX),
    };
    apply_lease(client, namespace, &beat, marker, field_manager).await
}

/// One forced server-side apply of the Lease `beat` renewed at `renew_time`.
async fn apply_lease(
    client: &Client,
    namespace: &str,
    beat: &Beat<'_>,
    renew_time: Timestamp,
    field_manager: &str,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let labels: serde_json::Map<String, serde_json::Value> = beat
        .labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    let annotations: serde_json::Map<String, serde_json::Value> = beat
        .annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    let owners: Vec<&OwnerReference> = beat.owner.into_iter().collect();
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": beat.name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": owners,
        },
        "spec": {
            "holderIdentity": beat.holder,
            "leaseDurationSeconds": beat.duration_seconds,
            "renewTime": MicroTime(renew_time),
        },
    });
    api.patch(
        beat.name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&lease),
    )
    .await
    .map(drop)
}

/// How long a node's agent has been silent, and the Lease that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Silence {
    /// Time since the operator last saw the Lease renewed (or first saw it).
    pub for_: Duration,
    /// The Lease's `leaseDurationSeconds`, which `for_` exceeds.
    pub limit: Duration,
    /// `namespace/name` of the Lease, for messages.
    pub lease: String,
}

#[derive(Clone, Debug)]
struct Seen {
    renew_time: Option<String>,
    changed: Instant,
    duration: Duration,
    lease: String,
    /// The lapse for which [`Liveness::judge`] found the node silent; kept until it renews.
    judged: Option<Duration>,
}

/// What the operator knows about its own view of the heartbeat Leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Not proven live since its last break (start-up, a watch restart, a failed or lost
    /// probe): no lapse counts.
    Down,
    /// Live without a break since `since`, and holding every Lease write made before
    /// `complete_until`.
    Live {
        since: Instant,
        complete_until: Instant,
    },
}

/// How much of an agent's silence counts against it, when the operator last saw its Lease
/// renewed at `renewed`: the time from the later of `renewed` and the view's last break up to
/// where the view is proven complete; `None` while the view is down.
#[must_use]
pub fn counted_lapse(renewed: Instant, view: View) -> Option<Duration> {
    match view {
        View::Down => None,
        View::Live {
            since,
            complete_until,
        } => Some(complete_until.saturating_duration_since(renewed.max(since))),
    }
}

/// The operator's probe of its own view (see the module docs): which probe is in flight, and
/// the [`View`] the probes seen back so far prove. Pure apart from the instants it is given.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The probe in flight: its marker and when it was sent.
    pending: Option<(Timestamp, Instant)>,
    last_sent: Option<Instant>,
    view: View,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            pending: None,
            last_sent: None,
            view: View::Down,
        }
    }
}

impl Probe {
    /// What the probes prove so far.
    #[must_use]
    pub fn view(&self) -> View {
        self.view
    }

    /// Whether to send a probe at `now`: none is in flight and the last went out at least
    /// [`PROBE_PERIOD`] ago.
    #[must_use]
    pub fn due(&self, now: Instant) -> bool {
        self.pending.is_none()
            && self
                .last_sent
                .is_none_or(|last| now.saturating_duration_since(last) >= PROBE_PERIOD)
    }

    /// A probe with `marker` is being written at `at`.
    pub fn sent(&mut self, marker: Timestamp, at: Instant) {
        self.pending = Some((marker, at));
        self.last_sent = Some(at);
    }

    /// The watch delivered the probe Lease with `marker` at `at` (the store holds it and
    /// everything written before it). A slow round trip is a break that ends at `at`.
    pub fn seen(&mut self, marker: Timestamp, at: Instant) {
        let Some((pending, sent)) = self.pending else {
            return;
        };
        if pending != marker {
            return;
        }
        self.pending = None;
        let since = match self.view {
            _ if at.saturating_duration_since(sent) > PROBE_STALL => at,
            View::Live { since, .. } => since,
            View::Down => sent,
        };
        self.view = View::Live {
            since,
            complete_until: sent,
        };
    }

    /// Writing the probe with `marker` failed: a break (unless another probe is in flight).
    pub fn failed(&mut self, marker: Timestamp) {
        if self.pending.is_some_and(|(pending, _)| pending == marker) {
            self.pending = None;
            self.view = View::Down;
        }
    }

    /// The watch failed or is listing again: a break; a probe in flight proves nothing.
    pub fn interrupted(&mut self) {
        self.pending = None;
        self.view = View::Down;
    }

    /// Gives up the probe in flight when it was sent more than [`PROBE_LOST`] before `now`
    /// (a break); returns whether it did.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.pending {
            Some((_, sent)) if now.saturating_duration_since(sent) > PROBE_LOST => {
                self.pending = None;
                self.view = View::Down;
                true
            }
            _ => false,
        }
    }
}

/// The operator's view of agent heartbeats (see the module docs). Pure apart from the
/// instants it is given.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    by_node: HashMap<String, Seen>,
}

impl Liveness {
    /// Updates from the current heartbeat Leases at local time `now`: notes renewals, and
    /// forgets nodes whose Lease is gone (no Lease: no opinion).
    pub fn observe<'a>(&mut self, leases: impl IntoIterator<Item = &'a Lease>, now: Instant) {
        let mut present = HashMap::with_capacity(self.by_node.len());
        for lease in leases {
            let Some(spec) = lease.spec.as_ref() else {
                continue;
            };
            let Some(node) = spec.holder_identity.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            let renew_time = spec.renew_time.as_ref().map(|t| t.0.to_string());
            let duration = Duration::from_secs(
                spec.lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .filter(|s| *s > 0)
                    .unwrap_or(u64::from(DEFAULT_DURATION_SECONDS)),
            );
            let lease = format!(
                "{}/{}",
                lease.namespace().unwrap_or_default(),
                lease.name_any()
            );
            let (changed, judged) = match self.by_node.get(&node) {
                Some(seen) if seen.renew_time == renew_time => (seen.changed, seen.judged),
                _ => (now, None),
            };
            present.insert(
                node,
                Seen {
                    renew_time,
                    changed,
                    duration,
                    lease,
                    judged,
                },
            );
        }
        self.by_node = present;
    }

    /// Nodes whose agent is silent under `view`: its [`counted_lapse`] exceeds its lease
    /// duration, or did so before and it has not renewed since (a break in the operator's view
    /// neither convicts nor acquits). The operator's judgement of agent heartbeats.
    pub fn judge(&mut self, view: View) -> BTreeMap<String, Silence> {
        let mut silent = BTreeMap::new();
        for (node, seen) in &mut self.by_node {
            if let Some(lapse) = counted_lapse(seen.changed, view)
                && (lapse > seen.duration || seen.judged.is_some())
            {
                seen.judged = Some(seen.judged.map_or(lapse, |before| before.max(lapse)));
            }
            if let Some(for_) = seen.judged {
                silent.insert(
                    node.clone(),
                    Silence {
                        for_,
                        limit: seen.duration,
                        lease: seen.lease.clone(),
                    },
                );
            }
        }
        silent
    }

    /// Nodes whose agent has not renewed within its lease duration, at `now`, assuming the
    /// operator's view of the Leases was live all along (ClientJoin clients; agents are
    /// judged with [`Liveness::judge`]).
    #[must_use]
    pub fn silent(&self, now: Instant) -> BTreeMap<String, Silence> {
        self.by_node
            .iter()
            .filter_map(|(node, seen)| {
                let quiet = now.saturating_duration_since(seen.changed);
                (quiet > seen.duration).then(|| {
                    (
                        node.clone(),
                        Silence {
                            for_: quiet,
                            limit: seen.duration,
                            lease: seen.lease.clone(),
                        },
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use kube::api::ObjectMeta;

    fn lease(node: &str, renewed_second: i64, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(node)),
                namespace: Some("causeway-system".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(node.into()),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(
                    Timestamp::from_second(renewed_second).expect("time"),
                )),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn lease_names_are_prefixed_and_long_ones_are_cut_with_a_stable_hash() {
        assert_eq!(lease_name("node-a"), "causeway-agent-node-a");
        let long = "n".repeat(250);
        let name = lease_name(&long);
        assert_eq!(name.len(), MAX_NAME, "{name}");
        assert!(name.starts_with("causeway-agent-nnn"));
        assert_eq!(name, lease_name(&long), "stable");
        assert_ne!(name, lease_name(&format!("{}m", "n".repeat(249))));
    }

    #[test]
    fn a_node_is_silent_once_its_lease_is_unrenewed_for_longer_than_its_duration() {
        let start = Instant::now();
        let mut live = Liveness::default();
        live.observe([&lease("a", 100, 4), &lease("b", 100, 40)], start);
        assert!(live.silent(start + Duration::from_secs(4)).is_empty());

        // a renews at +3 s; b never does.
        let at = start + Duration::from_secs(3);
        live.observe([&lease("a", 103, 4), &lease("b", 100, 40)], at);
        let later = start + Duration::from_secs(6);
        assert!(live.silent(later).is_empty(), "a renewed 3 s ago");
        let much_later = start + Duration::from_secs(8);
        live.observe([&lease("a", 103, 4), &lease("b", 100, 40)], much_later);
        let silent = live.silent(much_later);
        assert_eq!(silent.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(silent["a"].for_, Duration::from_secs(5));
        assert_eq!(silent["a"].lease, "causeway-system/causeway-agent-a");

        // A renewal ends the silence; a deleted Lease means no opinion.
        let back = start + Duration::from_secs(9);
        live.observe([&lease("a", 109, 4)], back);
        assert!(live.silent(back).is_empty());
        assert!(
            live.silent(start + Duration::from_secs(100))
                .contains_key("a")
        );
        assert!(
            !live
                .silent(start + Duration::from_secs(100))
                .contains_key("b")
        );
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn marker(n: i64) -> Timestamp {
        Timestamp::from_second(1_000_000 + n).expect("time")
    }

    #[test]
    fn a_probe_marker_survives_the_api_servers_microseconds_and_only_the_probe_carries_one() {
        let now = Timestamp::from_nanosecond(1_790_000_000_123_456_789).expect("time");
        let marker = probe_marker(now);
        assert_eq!(marker.as_microsecond(), now.as_microsecond());
        // As the API server stores and returns it: RFC 3339 with microseconds.
        let json = serde_json::to_value(MicroTime(marker)).expect("serializes");
        let back: MicroTime = serde_json::from_value(json.clone()).expect("parses");
        assert_eq!(back.0, marker, "{json}");

        let mut probe = lease("ignored", 0, 10);
        probe.metadata.name = Some(PROBE_LEASE.into());
        probe.metadata.labels = Some([(PROBE_LABEL.0.into(), PROBE_LABEL.1.into())].into());
        if let Some(spec) = probe.spec.as_mut() {
            spec.renew_time = Some(back);
        }
        let mut agent = lease("node-a", 5, 40);
        agent.metadata.labels = Some([(LABEL.0.into(), LABEL.1.into())].into());
        assert_eq!(probe_marker_of(&probe), Some(marker));
        assert_eq!(probe_marker_of(&agent), None);
        assert!(is_agent_lease(&agent) && !is_agent_lease(&probe));
        assert_eq!(
            watch_selector(),
            "app.kubernetes.io/component in (node-agent-heartbeat,operator-heartbeat-probe)"
        );
    }

    #[test]
    fn only_the_part_of_a_lapse_after_the_views_last_break_and_before_its_proof_counts() {
        let t = Instant::now();
        let live = |since: u64, until: u64| View::Live {
            since: t + ms(since),
            complete_until: t + ms(until),
        };
        // (what, last renewal seen at, view, counted lapse)
        let cases: &[(&str, u64, View, Option<u64>)] = &[
            ("a view that is down counts nothing", 0, View::Down, None),
            (
                "live all along: renewal to proof",
                1_000,
                live(0, 6_000),
                Some(5_000),
            ),
            (
                "a break after the renewal: from the break",
                1_000,
                live(4_000, 6_000),
                Some(2_000),
            ),
            (
                "a renewal seen after the proof: nothing yet",
                7_000,
                live(0, 6_000),
                Some(0),
            ),
            (
                "just back from a break: nothing yet",
                1_000,
                live(9_000, 6_000),
                Some(0),
            ),
        ];
        for (what, renewed, view, want) in cases {
            assert_eq!(
                counted_lapse(t + ms(*renewed), *view),
                want.map(ms),
                "{what}"
            );
        }
    }

    #[test]
    fn probes_prove_the_view_up_to_their_sending_and_slow_failed_or_lost_ones_are_breaks() {
        let t = Instant::now();
        let mut probe = Probe::default();
        assert_eq!(probe.view(), View::Down, "nothing proven at start-up");
        assert!(probe.due(t));

        probe.sent(marker(1), t);
        assert!(!probe.due(t + ms(5_000)), "one probe in flight at a time");
        probe.seen(marker(0), t + ms(20));
        assert_eq!(
            probe.view(),
            View::Down,
            "someone else's write proves nothing"
        );
        probe.seen(marker(1), t + ms(30));
        let first = View::Live {
            since: t,
            complete_until: t,
        };
        assert_eq!(probe.view(), first, "live since the first probe went out");
        assert!(!probe.due(t + ms(999)), "one probe per period");
        assert!(probe.due(t + ms(1_000)));

        probe.sent(marker(2), t + ms(1_000));
        probe.seen(marker(2), t + ms(1_050));
        assert_eq!(
            probe.view(),
            View::Live {
                since: t,
                complete_until: t + ms(1_000)
            },
            "a quick probe moves the proof, not the start"
        );

        // Sent, then the API server freezes for 8 s.
        probe.sent(marker(3), t + ms(2_000));
        probe.seen(marker(3), t + ms(10_000));
        assert_eq!(
            probe.view(),
            View::Live {
                since: t + ms(10_000),
                complete_until: t + ms(2_000)
            },
            "a slow probe is a break that ended when it came back"
        );

        probe.sent(marker(4), t + ms(11_000));
        probe.failed(marker(3));
        assert!(
            matches!(probe.view(), View::Live { .. }),
            "an older probe's failure"
        );
        probe.failed(marker(4));
        assert_eq!(probe.view(), View::Down, "a failed write is a break");
        assert!(probe.due(t + ms(12_000)));

        probe.sent(marker(5), t + ms(12_000));
        assert!(!probe.expire(t + ms(12_000) + PROBE_LOST));
        assert!(probe.expire(t + ms(12_001) + PROBE_LOST));
        assert_eq!(probe.view(), View::Down, "a lost probe is a break");
        probe.seen(marker(5), t + ms(30_000));
        assert_eq!(probe.view(), View::Down, "a given-up probe proves nothing");

        probe.sent(marker(6), t + ms(31_000));
        probe.seen(marker(6), t + ms(31_010));
        assert!(matches!(probe.view(), View::Live { .. }));
        probe.sent(marker(7), t + ms(32_000));
        probe.interrupted();
        assert_eq!(probe.view(), View::Down, "a watch restart is a break");
        probe.seen(marker(7), t + ms(32_010));
        assert_eq!(
            probe.view(),
            View::Down,
            "a probe sent before the restart proves nothing"
        );
    }

    /// What happens on the operator's timeline, in milliseconds from its start.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// The agent of this node renews its Lease (seen at once).
        Renew(&'static str),
        /// A probe goes out; `Seen` is the watch bringing the last one back.
        Sent,
        Seen,
        /// The heartbeat watch fails or re-lists.
        Broke,
        /// The operator judges: exactly these nodes are silent.
        Judge(&'static [&'static str]),
    }

    fn every(from: u64, to: u64, step: u64, what: Step) -> Vec<(u64, Step)> {
        (from..to)
            .step_by(usize::try_from(step).expect("small"))
            .map(|at| (at, what))
            .collect()
    }

    /// Probes sent every second in `from..to`, each seen back 20 ms later.
    fn quick_probes(from: u64, to: u64) -> Vec<(u64, Step)> {
        let mut steps = every(from, to, 1_000, Step::Sent);
        steps.extend(every(from + 20, to + 20, 1_000, Step::Seen));
        steps
    }

    /// Plays `steps` (sorted by time; equal times keep their order) with 4 s Leases.
    fn play(name: &str, mut steps: Vec<(u64, Step)>) {
        steps.sort_by_key(|(at, _)| *at);
        let start = Instant::now();
        let mut renewals: BTreeMap<&str, i64> = BTreeMap::new();
        let mut live = Liveness::default();
        let mut probe = Probe::default();
        let mut sent = 0_i64;
        let mut judged = 0;
        for (at_ms, step) in steps {
            let at = start + ms(at_ms);
            match step {
                Step::Renew(node) => *renewals.entry(node).or_default() += 1,
                Step::Sent => {
                    sent += 1;
                    probe.sent(marker(sent), at);
                }
                Step::Seen => probe.seen(marker(sent), at),
                Step::Broke => probe.interrupted(),
                Step::Judge(want) => {
                    let silent = live.judge(probe.view());
                    let got: Vec<&str> = silent.keys().map(String::as_str).collect();
                    assert_eq!(got, want, "{name}: at {at_ms} ms");
                    judged += 1;
                }
            }
            let leases: Vec<Lease> = renewals
                .iter()
                .map(|(node, n)| lease(node, *n, 4))
                .collect();
            live.observe(&leases, at);
        }
        assert!(judged > 0, "{name}: judged nothing");
    }

    #[test]
    fn an_api_server_pause_longer_than_the_lease_is_nobodys_fault() {
        let mut steps = every(0, 10_000, 1_000, Step::Renew("a"));
        steps.extend(every(0, 10_000, 1_000, Step::Renew("b")));
        // Frozen from 9.5 s to 18 s: nothing renews, the probe sent at 10 s hangs. After it,
        // b's next renewal comes after the next probe went out and came back.
        steps.extend(quick_probes(0, 10_000));
        steps.push((10_000, Step::Sent));
        steps.push((18_000, Step::Seen));
        steps.extend(every(18_100, 30_000, 1_000, Step::Renew("a")));
        steps.extend(every(19_500, 30_000, 1_000, Step::Renew("b")));
        steps.extend(quick_probes(19_000, 30_000));
        steps.extend(every(0, 30_000, 250, Step::Judge(&[])));
        play("pause", steps);
    }

    #[test]
    fn a_stopped_agent_is_silent_once_the_live_view_shows_a_full_lease_without_renewal() {
        let mut steps = every(0, 20_000, 1_000, Step::Renew("a"));
        steps.extend(every(0, 5_001, 1_000, Step::Renew("b")));
        steps.extend(quick_probes(0, 20_000));
        steps.push((9_500, Step::Judge(&[])));
        steps.push((10_500, Step::Judge(&["b"])));
        steps.push((12_000, Step::Renew("b")));
        steps.push((12_000, Step::Judge(&[])));
        play("stopped agent", steps);
    }

    #[test]
    fn at_start_up_every_agent_gets_a_full_lease_from_the_first_probe_seen_back() {
        // b's agent is dead; its Lease is there. The first probe is seen at 2 s.
        let mut steps = vec![(0, Step::Renew("b"))];
        steps.extend(every(0, 12_000, 1_000, Step::Renew("a")));
        steps.extend(every(0, 2_000, 500, Step::Judge(&[])));
        steps.extend(quick_probes(2_000, 12_000));
        steps.push((6_500, Step::Judge(&[])));
        steps.push((7_500, Step::Judge(&["b"])));
        play("start-up", steps);
    }

    #[test]
    fn a_break_delays_new_silences_by_a_lease_but_never_acquits_a_silent_agent() {
        // b is dead from the start, c stops at 6 s; the watch breaks at 7 s and is proven
        // again by the probe sent at 9 s.
        let mut steps = vec![(0, Step::Renew("b"))];
        steps.extend(every(0, 20_000, 1_000, Step::Renew("a")));
        steps.extend(every(0, 6_001, 1_000, Step::Renew("c")));
        steps.extend(quick_probes(0, 7_000));
        steps.push((5_500, Step::Judge(&["b"])));
        steps.push((7_000, Step::Broke));
        steps.extend(quick_probes(9_000, 20_000));
        steps.extend(every(7_100, 14_000, 500, Step::Judge(&["b"])));
        steps.push((14_500, Step::Judge(&["b", "c"])));
        steps.push((15_000, Step::Renew("b")));
        steps.push((15_000, Step::Judge(&["c"])));
        play("break", steps);
    }

    #[test]
    fn skewed_clocks_do_not_matter_only_changes_of_renew_time_do() {
        let start = Instant::now();
        let mut live = Liveness::default();
        // The agent's clock is a day behind; it still renews.
        live.observe([&lease("a", 0, 4)], start);
        for step in 1..10_i64 {
            let now = start + Duration::from_secs(u64::try_from(step).expect("small") * 3);
            live.observe([&lease("a", step, 4)], now);
            assert!(live.silent(now).is_empty(), "step {step}");
        }
    }
}
