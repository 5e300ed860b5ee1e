//! Allocation and release events, gathered over a short window before they are published.
//!
//! A reconcile that allocates many subnets at once (a network created on a large cluster)
//! records one summary event instead of one per node. Nodes joining one at a time are each
//! their own incremental step, so without gathering a cluster growing by 5,000 nodes would
//! still get 5,000 events, each an API write on the join path competing with the next join.
//! Here every allocation (or release) of a network waits up to [`WINDOW`] for the rest of its
//! burst; the window's items then make one event per node, up to [`PER_NODE_LIMIT`], or one
//! summary beyond it. Which notes a window makes is pure ([`notes`]); [`Gather`] holds the
//! open windows and publishes each when it closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use causeway_kube::events::{Kind, Publisher, Record};
use k8s_openapi::api::core::v1::ObjectReference;

/// How long the first allocation (or release) of a burst waits for the rest of it.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Allocations or releases in one window up to which each gets its own event.
pub const PER_NODE_LIMIT: usize = 10;

/// How many of a summary's items its note names.
const SUMMARY_SHOWS: usize = 3;

/// One allocation or release: what its own event would say, and the node it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub note: String,
    pub node: String,
}

/// One event to publish: its note, and the Node it is related to (per-node events only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub node: Option<String>,
}

/// The events of one window's `items`, in the order they happened: one per item up to
/// [`PER_NODE_LIMIT`], else one summary naming the first few.
pub fn notes(action: &str, items: &[Item]) -> Vec<Note> {
    if items.len() <= PER_NODE_LIMIT {
        return items
            .iter()
            .map(|i| Note {
                text: i.note.clone(),
                node: Some(i.node.clone()),
            })
            .collect();
    }
    let shown: Vec<&str> = items
        .iter()
        .take(SUMMARY_SHOWS)
        .map(|i| i.note.as_str())
        .collect();
    vec![Note {
        text: format!(
            "{} node subnets ({}): {}; and {} more",
            items.len(),
            action.to_lowercase(),
            shown.join("; "),
            items.len() - shown.len()
        ),
        node: None,
    }]
}

/// A window: one network's events of one reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    network: String,
    reason: &'static str,
}

#[derive(Debug)]
struct Open {
    regarding: ObjectReference,
    action: &'static str,
    items: Vec<Item>,
}

/// The open windows, and the publisher that writes them out.
pub struct Gather {
    open: Arc<Mutex<HashMap<Key, Open>>>,
    events: Arc<Publisher>,
}

impl Gather {
    pub fn new(events: Arc<Publisher>) -> Self {
        Gather {
            open: Arc::default(),
            events,
        }
    }

    /// Adds `items` (Normal events of `reason` about `regarding`) to their window, opening it
    /// if none is open: a task publishes it when it closes. Items added after that open the
    /// next one. Events still in an open window when the process ends are lost, as events
    /// are on any restart; the NodeSubnets themselves are the record.
    pub fn add(
        &self,
        regarding: ObjectReference,
        reason: &'static str,
        action: &'static str,
        items: Vec<Item>,
    ) {
        if items.is_empty() {
            return;
        }
        let key = Key {
            network: causeway_kube::events::identity(&regarding),
            reason,
        };
        if !add(&self.open, key.clone(), regarding, action, items) {
            return;
        }
        let (open, events) = (self.open.clone(), self.events.clone());
        tokio::spawn(async move {
            tokio::time::sleep(WINDOW).await;
            let Some(done) = take(&open, &key) else {
                return;
            };
            for note in notes(done.action, &done.items) {
                let record = Record {
                    kind: Kind::Normal,
                    reason: key.reason,
                    action: done.action,
                    note: note.text,
                    related: note.node.as_deref().map(node_ref),
                };
                events.publish(&done.regarding, record).await;
            }
        });
    }
}

/// Appends to `key`'s window; true when this opened it.
fn add(
    open: &Mutex<HashMap<Key, Open>>,
    key: Key,
    regarding: ObjectReference,
    action: &'static str,
    items: Vec<Item>,
) -> bool {
    let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
    match open.get_mut(&key) {
        Some(window) => {
            window.items.extend(items);
            false
        }
        None => {
            open.insert(
                key,
                Open {
                    regarding,
                    action,
                    items,
                },
            );
            true
        }
    }
}

/// Closes `key`'s window.
fn take(open: &Mutex<HashMap<Key, Open>>, key: &Key) -> Option<Open> {
    open.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(key)
}

/// A reference to a Node, the `related` object of per-node events.
pub fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.to_string()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                note: format!("allocated 10.0.{i}.0/24 to node n{i}"),
                node: format!("n{i}"),
            })
            .collect()
    }

    #[test]
    fn up_to_the_limit_each_item_is_its_own_event_naming_its_node() {
        let got = notes("Allocate", &items(PER_NODE_LIMIT));
        assert_eq!(got.len(), PER_NODE_LIMIT);
        assert_eq!(
            got[0],
            Note {
                text: "allocated 10.0.0.0/24 to node n0".into(),
                node: Some("n0".into()),
            }
        );
        assert_eq!(got[9].node.as_deref(), Some("n9"));
    }

    #[test]
    fn beyond_the_limit_one_summary_names_the_first_three_in_order() {
        let got = notes("Release", &items(PER_NODE_LIMIT + 2));
        assert_eq!(
            got,
            vec![Note {
                text: "12 node subnets (release): allocated 10.0.0.0/24 to node n0; \
                       allocated 10.0.1.0/24 to node n1; allocated 10.0.2.0/24 to node n2; \
                       and 9 more"
                    .into(),
                node: None,
            }]
        );
    }

    #[test]
    fn a_window_gathers_every_add_until_it_is_taken_and_the_next_add_opens_another() {
        let open = Mutex::new(HashMap::new());
        let key = |reason| Key {
            network: "uid-1".into(),
            reason,
        };
        let all = items(5);
        let regarding = ObjectReference::default();
        assert!(add(
            &open,
            key("SubnetAllocated"),
            regarding.clone(),
            "Allocate",
            all[..2].to_vec()
        ));
        assert!(!add(
            &open,
            key("SubnetAllocated"),
            regarding.clone(),
            "Allocate",
            all[2..4].to_vec()
        ));
        // Another reason is another window.
        assert!(add(
            &open,
            key("SubnetReleased"),
            regarding.clone(),
            "Release",
            all[4..].to_vec()
        ));
        let done = take(&open, &key("SubnetAllocated")).expect("open");
        assert_eq!(done.items, all[..4].to_vec());
        assert!(take(&open, &key("SubnetAllocated")).is_none());
        assert!(add(
            &open,
            key("SubnetAllocated"),
            regarding,
            "Allocate",
            all[4..].to_vec()
        ));
        assert_eq!(
            take(&open, &key("SubnetReleased")).expect("open").items,
            all[4..].to_vec()
        );
    }
}
