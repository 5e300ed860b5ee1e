//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): several replicas run,
//! one reconciles. A standby takes over when the leader's Lease expires (`--lease-duration`);
//! a leader that loses the Lease stops at once and exits, so two replicas never act together
//! for longer than the API server lets a stale Lease holder believe it still leads.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct Election {
    pub lease_name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// A running election: `leading` turns `true` when this replica leads and `false` when it
/// lost the Lease.
pub struct Running {
    pub leading: watch::Receiver<bool>,
    task:
        JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

impl Running {
    /// Gives the Lease up (a standby takes over at once instead of after expiry).
    pub async fn release(self) {
        drop(self.leading);
        match tokio::time::timeout(Duration::from_secs(3), self.task).await {
            Ok(Ok(Ok(_))) => info!("released the leader Lease"),
            Ok(Ok(Err(e))) => warn!(error = %e, "releasing the leader Lease failed"),
            Ok(Err(e)) => warn!(error = %e, "lease task failed"),
            Err(_) => warn!("timed out releasing the leader Lease"),
        }
    }
}

/// Starts the election.
pub async fn elect(client: Client, e: &Election) -> anyhow::Result<Running> {
    let manager = LeaseManagerBuilder::new(client, &e.lease_name)
        .with_namespace(&e.namespace)
        .with_parameters(LeaseParams::new(
            &e.identity,
            e.duration.as_secs(),
            e.grace.as_secs(),
        ))
        .build()
        .await?;
    let (leading, task) = manager.watch().await;
    info!(lease = %e.lease_name, namespace = %e.namespace, identity = %e.identity, "leader election started");
    Ok(Running { leading, task })
}
