//! The BridgeHosts election: one Lease per OverlayGateway (`causeway-gw-<gateway>` in the
//! agents' namespace), contended by the agents of the candidate nodes; its holder holds the
//! gateway's VIP. The operator only reads it, to report `status.activeHost` and failovers.
//!
//! Writes are compare-and-swap: every change is a `replace` carrying the `resourceVersion`
//! that was read, so two candidates that decide to take over at once cannot both succeed.
//! Why the holder changed travels with the Lease, in annotations the new holder writes:
//! [`REASON`] (a CamelCase reason: `HostUnresponsive`, or what the previous holder gave when
//! it released: `LinkDown`, `AgentStopped`, `HostDeselected`) and [`PREVIOUS`].
//!
//! The pure builders ([`claimed`], [`renewed`], [`released`]) are unit-tested; [`write`]
//! and [`read`] are the only I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, ResourceExt};

use crate::heartbeat::bounded_name;

/// Label on every election Lease (the operator watches by it).
pub const LABEL: (&str, &str) = ("app.kubernetes.io/component", "gateway-election");
/// Label naming the OverlayGateway a Lease elects for.
pub const GATEWAY_LABEL: &str = "causeway.dev/gateway";
/// Annotation: why the current holder took over (absent on the first election).
pub const REASON: &str = "causeway.dev/failover-reason";
/// Annotation: the holder before the current one.
pub const PREVIOUS: &str = "causeway.dev/previous-holder";
/// Annotation a holder leaves when it releases: why it let go.
pub const RELEASE_REASON: &str = "causeway.dev/release-reason";
/// Annotation on an unheld election Lease: a candidate found the VIP answered by a machine
/// that is no candidate (`<mac> answered ARP for <vip> on <node>'s segment`). Cleared by the
/// next claim.
pub const VIP_IN_USE: &str = "causeway.dev/vip-in-use";
/// Annotation: the MAC the holder answers for the VIP with (its underlay's), so a standby
/// that finds the VIP answered can tell the holder (alive, cut off from the API server) from
/// a stranger using the address.
pub const HOLDER_MAC: &str = "causeway.dev/holder-mac";

const PREFIX: &str = "causeway-gw-";

/// The election Lease of `gateway`.
#[must_use]
pub fn lease_name(gateway: &str) -> String {
    bounded_name(PREFIX, gateway)
}

/// The current holder, if any (an empty `holderIdentity` is none: the Lease was released).
#[must_use]
pub fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// The `renewTime`, as text (for noticing renewals by change, never by comparing clocks).
#[must_use]
pub fn renew_mark(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.to_string())
}

/// An annotation's value.
#[must_use]
pub fn annotation<'a>(lease: &'a Lease, key: &str) -> Option<&'a str> {
    lease.annotations().get(key).map(String::as_str)
}

/// `lease`, or a new Lease of `gateway` when `None`, with the election's labels.
fn labelled(lease: Option<&Lease>, namespace: &str, gateway: &str) -> Lease {
    let mut next = lease.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(gateway)),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec::default()),
    });
    let labels = next.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL.0.to_owned(), LABEL.1.to_owned());
    labels.insert(GATEWAY_LABEL.to_owned(), gateway.to_owned());
    next
}

/// `lease` (or a new Lease when `None`) claimed by `me` at `now`: holder, acquire and renew
/// times, one more transition, and [`REASON`]/[`PREVIOUS`] describing the takeover. The
/// `resourceVersion` read is kept, so [`write`] fails if someone else wrote meanwhile.
#[must_use]
pub fn claimed(
    lease: Option<&Lease>,
    namespace: &str,
    gateway: &str,
    me: &str,
    duration_seconds: u32,
    reason: Option<&str>,
    now: Timestamp,
) -> Lease {
    // The holder taken over, or the one that released (recorded when it did).
    let previous = lease
        .and_then(|l| {
            holder(l).or_else(|| annotation(l, RELEASE_REASON).and(annotation(l, PREVIOUS)))
        })
        .map(str::to_owned);
    let mut next = labelled(lease, namespace, gateway);
    let annotations = next.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.remove(RELEASE_REASON);
    annotations.remove(VIP_IN_USE);
    match reason {
        Some(r) => {
            annotations.insert(REASON.to_owned(), r.to_owned());
        }
        None => {
            annotations.remove(REASON);
        }
    }
    match previous {
        Some(p) => {
            annotations.insert(PREVIOUS.to_owned(), p);
        }
        None => {
            annotations.remove(PREVIOUS);
        }
    }
    let spec = next.spec.get_or_insert_with(LeaseSpec::default);
    let transitions = spec.lease_transitions.unwrap_or(0);
    spec.lease_transitions = Some(if lease.is_some() {
        transitions.saturating_add(1)
    } else {
        0
    });
    spec.holder_identity = Some(me.to_owned());
    spec.lease_duration_seconds = Some(i32::try_from(duration_seconds).unwrap_or(i32::MAX));
    spec.acquire_time = Some(MicroTime(now));
    spec.renew_time = Some(MicroTime(now));
    next
}

/// `lease` (or a new, unheld Lease) marked [`VIP_IN_USE`] with `note`, holder unchanged
/// (empty): the operator reports the gateway `VipInUse` until a candidate can claim it.
#[must_use]
pub fn marked_in_use(lease: Option<&Lease>, namespace: &str, gateway: &str, note: &str) -> Lease {
    let mut next = labelled(lease, namespace, gateway);
    next.spec
        .get_or_insert_with(LeaseSpec::default)
        .holder_identity
        .get_or_insert_with(String::new);
    next.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(VIP_IN_USE.to_owned(), note.to_owned());
    next
}

/// `lease` renewed at `now` by its holder.
#[must_use]
pub fn renewed(lease: &Lease, now: Timestamp) -> Lease {
    let mut next = lease.clone();
    next.spec.get_or_insert_with(LeaseSpec::default).renew_time = Some(MicroTime(now));
    next
}

/// `lease` given up by its holder, saying why ([`RELEASE_REASON`]): the holder is emptied,
/// so candidates take over at once instead of waiting for the Lease to lapse.
#[must_use]
pub fn released(lease: &Lease, reason: &str, now: Timestamp) -> Lease {
    let mut next = lease.clone();
    let previous = holder(lease).map(str::to_owned);
    let annotations = next.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(RELEASE_REASON.to_owned(), reason.to_owned());
    if let Some(p) = previous {
        annotations.insert(PREVIOUS.to_owned(), p);
    }
    let spec = next.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(String::new());
    spec.renew_time = Some(MicroTime(now));
    next
}

/// Why a write did not land.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone else changed (or created) the Lease since it was read.
    #[error("the Lease changed since it was read")]
    Conflict,
    /// The API server did not answer in time, could not be reached, or said it cannot serve
    /// now (5xx, 429): nobody else can have written either, as far as this writer knows.
    #[error("writing Lease {name}: the API server is unavailable: {reason}")]
    Unavailable { name: String, reason: String },
    /// The API server answered and refused (forbidden, invalid, ...).
    #[error("writing Lease {name}: {source}")]
    Refused { name: String, source: kube::Error },
}

/// Whether an answer with HTTP `code` means the server cannot serve now (rather than a
/// refusal of this write): 429 and every 5xx.
#[must_use]
pub fn unavailable_code(code: u16) -> bool {
    code == 429 || code >= 500
}

/// Creates `lease` (no `resourceVersion`) or replaces it if unchanged since read; the stored
/// Lease on success. A write that takes longer than `timeout` is abandoned and reported
/// [`WriteError::Unavailable`] (a frozen API server must not hold up the caller).
///
/// # Errors
/// [`WriteError::Conflict`] when another writer got there first; see [`WriteError`].
pub async fn write(
    api: &Api<Lease>,
    lease: &Lease,
    timeout: std::time::Duration,
) -> Result<Lease, WriteError> {
    let name = lease.name_any();
    let request = async {
        if lease.metadata.resource_version.is_some() {
            api.replace(&name, &PostParams::default(), lease).await
        } else {
            api.create(&PostParams::default(), lease).await
        }
    };
    let Ok(result) = tokio::time::timeout(timeout, request).await else {
        return Err(WriteError::Unavailable {
            name,
            reason: format!("no answer within {timeout:?}"),
        });
    };
    result.map_err(|source| match &source {
        kube::Error::Api(s) if s.code == 409 => WriteError::Conflict,
        kube::Error::Api(s) if !unavailable_code(s.code) => WriteError::Refused { name, source },
        _ => WriteError::Unavailable {
            name,
            reason: source.to_string(),
        },
    })
}

/// The Lease of `gateway`, if it exists.
///
/// # Errors
/// The API server's answer when reading fails.
pub async fn read(api: &Api<Lease>, gateway: &str) -> Result<Option<Lease>, kube::Error> {
    api.get_opt(&lease_name(gateway)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vip_in_use_mark_keeps_the_lease_unheld_and_the_next_claim_clears_it() {
        let marked = marked_in_use(None, "ns", "office", "02:00:00:00:00:99 answered ARP");
        assert_eq!(holder(&marked), None);
        assert_eq!(
            annotation(&marked, VIP_IN_USE),
            Some("02:00:00:00:00:99 answered ARP")
        );
        assert_eq!(marked.metadata.name.as_deref(), Some("causeway-gw-office"));
        assert_eq!(
            marked.labels().get(LABEL.0).map(String::as_str),
            Some(LABEL.1)
        );
        let claimed = claimed(
            Some(&marked),
            "ns",
            "office",
            "node-a",
            2,
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(holder(&claimed), Some("node-a"));
        assert_eq!(annotation(&claimed, VIP_IN_USE), None);
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("time")
    }

    #[test]
    fn only_server_side_trouble_counts_as_unavailable() {
        for code in [429, 500, 502, 503, 504] {
            assert!(unavailable_code(code), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!unavailable_code(code), "{code}");
        }
    }

    #[test]
    fn a_first_claim_creates_a_labelled_lease_without_a_reason() {
        let l = claimed(None, "causeway-system", "office", "node-a", 2, None, at(10));
        assert_eq!(l.name_any(), "causeway-gw-office");
        assert_eq!(holder(&l), Some("node-a"));
        assert_eq!(l.labels()[GATEWAY_LABEL], "office");
        assert_eq!(l.labels()[LABEL.0], LABEL.1);
        assert_eq!(annotation(&l, REASON), None);
        let spec = l.spec.as_ref().expect("spec");
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(2));
    }

    #[test]
    fn a_takeover_records_the_previous_holder_and_why() {
        let mut first = claimed(None, "ns", "office", "node-a", 2, None, at(10));
        first.metadata.resource_version = Some("7".into());
        let renewed_once = renewed(&first, at(11));
        assert_ne!(renew_mark(&renewed_once), renew_mark(&first));
        let taken = claimed(
            Some(&renewed_once),
            "ns",
            "office",
            "node-b",
            2,
            Some("HostUnresponsive"),
            at(14),
        );
        assert_eq!(holder(&taken), Some("node-b"));
        assert_eq!(annotation(&taken, PREVIOUS), Some("node-a"));
        assert_eq!(annotation(&taken, REASON), Some("HostUnresponsive"));
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(
            taken.spec.as_ref().and_then(|s| s.lease_transitions),
            Some(1)
        );
    }

    #[test]
    fn a_release_empties_the_holder_and_the_next_claim_carries_its_reason() {
        let first = claimed(None, "ns", "office", "node-a", 2, None, at(10));
        let gone = released(&first, "LinkDown", at(12));
        assert_eq!(holder(&gone), None);
        assert_eq!(annotation(&gone, RELEASE_REASON), Some("LinkDown"));
        let next = claimed(
            Some(&gone),
            "ns",
            "office",
            "node-b",
            2,
            Some("LinkDown"),
            at(12),
        );
        assert_eq!(annotation(&next, PREVIOUS), Some("node-a"));
        assert_eq!(annotation(&next, RELEASE_REASON), None);
        assert_eq!(annotation(&next, REASON), Some("LinkDown"));
    }
}
