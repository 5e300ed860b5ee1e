//! Kubernetes Events (events.k8s.io/v1), as `kubectl describe` shows them: the operator's about
//! PodNetworks, the agents' about their NodeSubnets.
//!
//! kube-runtime's `Recorder` folds every event with the same reason on the same object into
//! one series and keeps the first note, so "allocated 10.0.3.0/24 to node-c" would be shown
//! as a repeat of "allocated 10.0.1.0/24 to node-a". Like client-go's recorder, this one
//! treats an event as a repeat only when its note is identical too; repeats within
//! [`SERIES_WINDOW`] bump the series count instead of creating new objects.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::sync::Mutex;
use tracing::warn;

/// Repeats of one event within this window update its series instead of adding an object.
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// The API server rejects notes longer than this.
const MAX_NOTE: usize = 1024;

/// Namespace for events about cluster-scoped objects (what kubectl and client-go use).
const CLUSTER_EVENTS_NAMESPACE: &str = "default";

/// Normal or Warning, the two event types Kubernetes knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Normal,
    Warning,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "Normal",
            Kind::Warning => "Warning",
        }
    }
}

/// One event to publish.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub kind: Kind,
    /// CamelCase, machine-readable (`SubnetAllocated`, `PoolExhausted`).
    pub reason: &'a str,
    /// What the controller did (`Allocate`, `Release`, or the condition type).
    pub action: &'a str,
    pub note: String,
    /// A second object involved, e.g. the Node a subnet was allocated to.
    pub related: Option<ObjectReference>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: String,
    kind: Kind,
    reason: String,
    action: String,
    note: String,
}

#[derive(Debug)]
struct Seen {
    name: String,
    namespace: String,
    count: i32,
    last: Instant,
}

/// What tells objects apart for events: the uid, or the name when the reference has none.
pub fn identity(object: &ObjectReference) -> String {
    object
        .uid
        .clone()
        .or_else(|| object.name.clone())
        .unwrap_or_default()
}

/// Publishes events as one controller instance.
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    seen: Mutex<HashMap<Key, Seen>>,
}

impl Publisher {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Publisher {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `record` about `regarding`. Failures are logged, never returned: an event
    /// that cannot be written must not stop reconciliation.
    pub async fn publish(&self, regarding: &ObjectReference, record: Record<'_>) {
        let note = truncate_note(record.note);
        let key = Key {
            regarding: identity(regarding),
            kind: record.kind,
            reason: record.reason.to_string(),
            action: record.action.to_string(),
            note: note.clone(),
        };
        let now = Instant::now();
        // The lock guards the cache only, never an API call: reconciles publish concurrently.
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.retain(|_, s| now.duration_since(s.last) < SERIES_WINDOW);
            seen.get_mut(&key).map(|s| {
                s.count += 1;
                s.last = now;
                (s.name.clone(), s.namespace.clone(), s.count)
            })
        };
        if let Some((name, namespace, count)) = repeat {
            let patch = serde_json::json!({"series": EventSeries {
                count,
                last_observed_time: MicroTime(Timestamp::now()),
            }});
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                // Expired or deleted meanwhile: write a fresh one below.
                Err(e) => {
                    tracing::debug!(error = %e, "cannot update event series; creating a new event");
                    self.seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                }
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| CLUSTER_EVENTS_NAMESPACE.to_string());
        let event = Event {
            metadata: ObjectMeta {
                // As client-go names events: the object's name and the time in hex.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or("causeway"),
                    Timestamp::now().as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            type_: Some(record.kind.as_str().to_string()),
            reason: Some(record.reason.to_string()),
            action: Some(record.action.to_string()),
            note: Some(note),
            regarding: Some(regarding.clone()),
            related: record.related,
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(created) => {
                if let Some(name) = created.metadata.name {
                    self.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(
                        key,
                        Seen {
                            name,
                            namespace,
                            count: 1,
                            last: now,
                        },
                    );
                }
            }
            Err(e) => warn!(error = %e, reason = record.reason, "cannot record event"),
        }
    }
}

/// Cuts a note to what the API server accepts, on a character boundary.
fn truncate_note(mut note: String) -> String {
    if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_notes_are_kept() {
        assert_eq!(truncate_note("ok".into()), "ok");
    }

    #[test]
    fn long_notes_are_cut_to_the_api_limit_on_a_char_boundary() {
        let note = "é".repeat(MAX_NOTE);
        let cut = truncate_note(note);
        assert!(cut.len() <= MAX_NOTE, "{}", cut.len());
        assert!(cut.ends_with("..."));
    }
}
