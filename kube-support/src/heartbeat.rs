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
//! node-lifecycle controller's method; immune to clock skew between nodes). After an operator
//! restart every agent gets one full lease duration of grace.

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
            "renewTime": MicroTime(Timestamp::now()),
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
            let changed = match self.by_node.get(&node) {
                Some(seen) if seen.renew_time == renew_time => seen.changed,
                _ => now,
            };
            present.insert(
                node,
                Seen {
                    renew_time,
                    changed,
                    duration,
                    lease,
                },
            );
        }
        self.by_node = present;
    }

    /// Nodes whose agent has not renewed within its lease duration, at `now`.
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
