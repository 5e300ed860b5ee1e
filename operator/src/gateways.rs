//! The OverlayGateway controller: the I/O around the pure [`crate::gateway`].
//!
//! A gateway is reconciled when it changes, and whenever its PodNetwork is (the PodNetwork
//! reconcile runs on every Node and NodeSubnet change of the network and sends the network's
//! name here), so `status.clientRoutes` follows nodes joining and leaving without a watch of
//! its own on Nodes or NodeSubnets. It reads the PodNetwork controller's caches, writes only
//! the gateway's status (server-side apply, field manager `causeway-operator`) and records an
//! event when Ready changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use causeway_crds::conditions::{find_condition, types};
use causeway_crds::{OverlayGateway, OverlayGatewayStatus};
use causeway_kube::events::{Kind, Record};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use crate::controller::{Context, FIELD_MANAGER};
use crate::gateway::{self, Member};

/// Periodic resync, on top of the triggers.
const RESYNC: Duration = Duration::from_secs(300);

/// Errors of one gateway reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status of OverlayGateway {name}: {source}")]
    WriteStatus { name: String, source: kube::Error },
}

/// Runs until the future is dropped. `networks_changed` yields the name of every PodNetwork
/// the PodNetwork controller reconciled.
pub async fn run(
    ctx: Arc<Context>,
    networks_changed: impl futures::Stream<Item = String> + Send + 'static,
) {
    let api: Api<OverlayGateway> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default().any_semantic());
    let store = controller.store();
    let triggers = networks_changed.flat_map(move |network| {
        let refs: Vec<ObjectRef<OverlayGateway>> = store
            .state()
            .iter()
            .filter(|g| g.spec.network == network)
            .map(|g| ObjectRef::from_obj(g.as_ref()))
            .collect();
        futures::stream::iter(refs)
    });
    controller
        .reconcile_on(triggers)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "gateway reconcile failed");
            }
        })
        .await;
}

fn error_policy(gw: Arc<OverlayGateway>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(gateway = %gw.name_any(), error = %error, "gateway reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(gw: Arc<OverlayGateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    if gw.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let network = ctx
        .networks
        .state()
        .into_iter()
        .find(|n| n.name_any() == gw.spec.network && n.meta().deletion_timestamp.is_none());
    let labels: BTreeMap<String, BTreeMap<String, String>> = ctx
        .nodes
        .state()
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect();
    let mut members: Vec<Member> = ctx
        .subnets
        .state()
        .iter()
        .filter(|s| s.spec.network == gw.spec.network && s.meta().deletion_timestamp.is_none())
        .filter_map(|s| {
            Some(Member {
                node: s.spec.node_name.clone(),
                subnet: s.spec.parsed_cidr().ok()?,
                address: s.spec.parsed_node_address().ok()?,
                segment: s
                    .status
                    .as_ref()
                    .and_then(|st| st.underlay_prefix.as_deref())
                    .and_then(|p| p.parse().ok()),
                labels: labels.get(&s.spec.node_name).cloned().unwrap_or_default(),
            })
        })
        .collect();
    members.sort_by(|a, b| a.node.cmp(&b.node));
    let previous = gw.status.clone().unwrap_or_default();
    let next = gateway::status(
        &gateway::Input {
            generation: gw.meta().generation,
            spec: &gw.spec,
            network: network.as_ref().map(|n| &n.spec),
            members: &members,
        },
        &previous,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    if next != previous {
        announce(&ctx, &gw, &previous, &next).await;
        write_status(&ctx, &gw.name_any(), &next).await?;
    }
    Ok(Action::requeue(RESYNC))
}

/// An event when Ready's status or reason changes.
async fn announce(
    ctx: &Context,
    gw: &OverlayGateway,
    previous: &OverlayGatewayStatus,
    next: &OverlayGatewayStatus,
) {
    let Some(ready) = find_condition(&next.conditions, types::READY) else {
        return;
    };
    let before = find_condition(&previous.conditions, types::READY);
    if before.is_some_and(|b| b.status == ready.status && b.reason == ready.reason) {
        return;
    }
    let kind = if ready.status == "True" {
        Kind::Normal
    } else {
        Kind::Warning
    };
    ctx.events
        .publish(
            &gw.object_ref(&()),
            Record {
                kind,
                reason: &ready.reason,
                action: types::READY,
                note: format!("Ready={}: {}", ready.status, ready.message),
                related: None,
            },
        )
        .await;
}

async fn write_status(
    ctx: &Context,
    name: &str,
    status: &OverlayGatewayStatus,
) -> Result<(), Error> {
    causeway_kube::status::apply::<OverlayGateway>(&ctx.client, name, status, FIELD_MANAGER)
        .await
        .map_err(|source| Error::WriteStatus {
            name: name.to_string(),
            source,
        })
}
