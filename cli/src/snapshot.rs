//! What `kubectl causeway` reads from the API server, in one place and once per run: the
//! three Causeway kinds, the agents' heartbeat Leases and the operator's leader Lease. The
//! commands ([`crate::status`], [`crate::trace`]) are pure functions of a [`Snapshot`].

use anyhow::{Context, Result};
use causeway_crds::{NodeSubnet, OverlayGateway, PodNetwork};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client};

/// The cluster as read at [`Snapshot::now`].
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The release's namespace (`-n`), where the Leases are.
    pub namespace: String,
    pub networks: Vec<PodNetwork>,
    pub subnets: Vec<NodeSubnet>,
    pub gateways: Vec<OverlayGateway>,
    pub nodes: Vec<Node>,
    /// The agents' heartbeat Leases (`causeway-agent-<node>`).
    pub heartbeats: Vec<Lease>,
    /// The operator's leader Lease, when it exists.
    pub operator: Option<Lease>,
    /// When the snapshot was read (this machine's clock).
    pub now: Timestamp,
}

impl Snapshot {
    /// Reads everything, failing with the fix when Causeway is not installed or the
    /// credentials cannot list its objects.
    ///
    /// # Errors
    /// The API server cannot be reached or refuses a list.
    pub async fn read(client: &Client, namespace: &str, operator_lease: &str) -> Result<Self> {
        let lp = ListParams::default();
        let networks = Api::<PodNetwork>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| crd_error(e, "podnetworks"))?
            .items;
        let subnets = Api::<NodeSubnet>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| crd_error(e, "nodesubnets"))?
            .items;
        let gateways = Api::<OverlayGateway>::all(client.clone())
            .list(&lp)
            .await
            .map_err(|e| crd_error(e, "overlaygateways"))?
            .items;
        let nodes = Api::<Node>::all(client.clone())
            .list(&lp)
            .await
            .context("listing Nodes")?
            .items;
        let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let heartbeats = leases
            .list(&ListParams::default().labels(&format!(
                "{}={}",
                causeway_kube::heartbeat::LABEL.0,
                causeway_kube::heartbeat::LABEL.1
            )))
            .await
            .with_context(|| {
                format!("listing the agents' heartbeat Leases in namespace {namespace}")
            })?
            .items;
        let operator = leases
            .get_opt(operator_lease)
            .await
            .with_context(|| format!("reading Lease {namespace}/{operator_lease}"))?;
        Ok(Self {
            namespace: namespace.to_owned(),
            networks,
            subnets,
            gateways,
            nodes,
            heartbeats,
            operator,
            now: Timestamp::now(),
        })
    }
}

/// A list of a Causeway kind failed: a 404 means the CRDs are not installed.
fn crd_error(e: kube::Error, plural: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 404 => anyhow::anyhow!(
            "the API server serves no {plural}.causeway.dev: Causeway's CRDs are not installed in this cluster (helm install causeway charts/causeway -n causeway-system --create-namespace)"
        ),
        kube::Error::Api(s) if s.code == 403 => anyhow::anyhow!(
            "not allowed to list {plural}.causeway.dev ({}): kubectl causeway needs read access to Causeway's objects, Nodes and the Leases of the release's namespace",
            s.message
        ),
        _ => anyhow::Error::new(e).context(format!("listing {plural}.causeway.dev")),
    }
}

/// Seconds since `lease` was last renewed, and its duration in seconds; `None` when it was
/// never renewed.
#[must_use]
pub fn lease_age(lease: &Lease, now: Timestamp) -> Option<(i64, i64)> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    Some((now.duration_since(renewed).as_secs(), duration))
}
