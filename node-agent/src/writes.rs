//! The loop's API writes, off the loop: the NodeSubnet status, events and the heartbeat.
//!
//! A pass hands them over and goes on, so a slow or unreachable API server never holds up the
//! dataplane. It matters most exactly when the network fails: a router that fails over can be
//! the node's path to the API server too, and the pass that moves the node's routes to the
//! other router must not wait out a write's timeout ([`crate::agent::API_TIMEOUT`]) first, nor
//! must the next one.
//!
//! - [`StatusWriter`]: one task writes the newest status it was handed (a status handed while
//!   a write is under way replaces the one waiting); a status equal to the last one written
//!   is not written again (the pass compares with its cache, which catches up a moment after
//!   the write, and keeps the transition times of the status last handed,
//!   [`StatusWriter::handed`], so a pass that runs before the cache caught up hands the same
//!   status). A failed write is logged; the next pass hands the status again, since the
//!   cache still shows the old one. The first write that succeeds makes the agent ready
//!   ([`Health::reported`]).
//! - [`spawn_event`]: an event is published by a task of its own.
//! - [`Heartbeat`]: each renewal is a task; the loop starts one per period, and skips a
//!   period while the previous renewal is still under way. The loop still starts them, so an
//!   agent whose loop hangs stops renewing (the operator reports it).

use std::sync::Arc;

use causeway_crds::v1alpha1::{NodeSubnet, NodeSubnetStatus};
use causeway_kube::events::{Kind, Publisher, Record};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::FIELD_MANAGER;
use crate::health::Health;
use crate::metrics::Metrics;

/// A status to write: the NodeSubnet (name, and uid so that a NodeSubnet deleted and made
/// again under the same name is never taken for the one written) and the whole status.
#[derive(Clone, Debug, PartialEq)]
struct Wanted {
    name: String,
    uid: String,
    status: NodeSubnetStatus,
}

/// Writes the newest NodeSubnet status handed to it, in a task of its own.
#[derive(Debug)]
pub struct StatusWriter {
    wanted: watch::Sender<Option<Wanted>>,
    task: JoinHandle<()>,
}

impl StatusWriter {
    /// Starts the writing task on the current runtime; a write that succeeds tells `health`
    /// ([`Health::reported`]).
    #[must_use]
    pub fn start(client: Client, health: Health) -> Self {
        let (wanted, mut rx) = watch::channel(None::<Wanted>);
        let task = tokio::spawn(async move {
            let mut written: Option<Wanted> = None;
            while rx.changed().await.is_ok() {
                let Some(next) = rx.borrow_and_update().clone() else {
                    continue;
                };
                if written.as_ref() == Some(&next) {
                    continue;
                }
                match causeway_kube::status::apply::<NodeSubnet>(
                    &client,
                    &next.name,
                    &next.status,
                    FIELD_MANAGER,
                )
                .await
                {
                    Ok(()) => {
                        health.reported();
                        written = Some(next);
                    }
                    Err(e) => {
                        warn!(nodesubnet = %next.name, error = %e, "cannot write status; the next pass tries again");
                    }
                }
            }
        });
        Self { wanted, task }
    }

    /// The status last handed over for `subnet` (the same name and uid), written or not.
    #[must_use]
    pub fn handed(&self, subnet: &NodeSubnet) -> Option<NodeSubnetStatus> {
        let wanted = self.wanted.borrow();
        wanted
            .as_ref()
            .filter(|w| w.name == subnet.name_any() && w.uid == subnet.uid().unwrap_or_default())
            .map(|w| w.status.clone())
    }

    /// Hands `status` of `subnet` over; returns at once.
    pub fn write(&self, subnet: &NodeSubnet, status: NodeSubnetStatus) {
        self.wanted.send_replace(Some(Wanted {
            name: subnet.name_any(),
            uid: subnet.uid().unwrap_or_default(),
            status,
        }));
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes an event about `regarding` in a task of its own (failures are logged by the
/// publisher).
pub fn spawn_event(
    events: &Arc<Publisher>,
    regarding: ObjectReference,
    kind: Kind,
    reason: &str,
    action: &str,
    note: String,
) {
    let events = Arc::clone(events);
    let (reason, action) = (reason.to_owned(), action.to_owned());
    tokio::spawn(async move {
        events
            .publish(
                &regarding,
                Record {
                    kind,
                    reason: &reason,
                    action: &action,
                    note,
                    related: None,
                },
            )
            .await;
    });
}

/// The heartbeat Lease's renewals, one task at a time.
#[derive(Debug, Default)]
pub struct Heartbeat {
    renewing: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts renewing this node's Lease unless the previous renewal is still under way.
    pub fn renew(
        &mut self,
        client: &Client,
        namespace: &str,
        node: &str,
        seconds: u32,
        metrics: &Arc<Metrics>,
    ) {
        if self.renewing.as_ref().is_some_and(|t| !t.is_finished()) {
            debug!("the previous heartbeat renewal is still under way; skipping this one");
            return;
        }
        let (client, namespace, node) = (client.clone(), namespace.to_owned(), node.to_owned());
        let metrics = Arc::clone(metrics);
        self.renewing = Some(tokio::spawn(async move {
            match causeway_kube::heartbeat::renew(
                &client,
                &namespace,
                &node,
                seconds,
                FIELD_MANAGER,
            )
            .await
            {
                Ok(_) => metrics.heartbeat_renewed(),
                Err(e) => {
                    warn!(error = %e, %namespace, "cannot renew the heartbeat Lease; retrying");
                }
            }
        }));
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(task) = &self.renewing {
            task.abort();
        }
    }
}
