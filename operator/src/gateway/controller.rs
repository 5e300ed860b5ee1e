//! The OverlayGateway controller: the I/O around the pure [`super::status`].
//!
//! A gateway is reconciled when it changes, and whenever its PodNetwork is (the PodNetwork
//! reconcile runs on every Node and NodeSubnet change of the network and sends the network's
//! name here), so `status.clientRoutes` follows nodes joining and leaving without a watch of
//! its own on Nodes or NodeSubnets. BridgeHosts gateways are also reconciled when their
//! election Lease changes (the agents' namespace, label
//! `app.kubernetes.io/component=gateway-election`); renewals cost a reconcile that writes
//! nothing, holder changes write `status.activeHost`, which is what the nodes watch (they
//! never see the renewals). It reads the PodNetwork controller's caches, writes only the
//! gateway's status (server-side apply, field manager `causeway-operator`) and records an
//! event when Ready changes and when the VIP moves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use causeway_crds::conditions::{find_condition, types};
use causeway_crds::ownership;
use causeway_crds::{NodeSubnet, OverlayGateway, OverlayGatewayStatus};
use causeway_kube::cache::cached_from;
use causeway_kube::election;
use causeway_kube::events::{Kind, Record};
use causeway_kube::heartbeat::{self, Liveness};
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::credentials;
use super::routes6::Member6;
use super::status::{self as gateway, Member, Member4};
use crate::context::{Context, FIELD_MANAGER};

/// Periodic resync, on top of the triggers.
const RESYNC: Duration = Duration::from_secs(300);

/// How often a ClientJoin gateway checks its clients' heartbeats.
const CLIENT_CHECK: Duration = Duration::from_secs(2);

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
    let gateways = store.clone();
    let triggers = networks_changed.flat_map(move |network| {
        let refs: Vec<ObjectRef<OverlayGateway>> = store
            .state()
            .iter()
            .filter(|g| g.spec.network == network)
            .map(|g| ObjectRef::from_obj(g.as_ref()))
            .collect();
        futures::stream::iter(refs)
    });
    let (leases, lease_events) = cached_from::<Lease>(
        Api::namespaced(ctx.client.clone(), &ctx.options.agent_namespace),
        watcher::Config::default()
            .labels(&format!("{}={}", election::LABEL.0, election::LABEL.1))
            .any_semantic(),
    );
    let (clients, client_events) = cached_from::<Lease>(
        Api::namespaced(ctx.client.clone(), &ctx.options.agent_namespace),
        watcher::Config::default()
            .labels(&format!(
                "{}={}",
                heartbeat::CLIENT_LABEL.0,
                heartbeat::CLIENT_LABEL.1
            ))
            .any_semantic(),
    );
    let (accounts, account_events) = cached_from::<ServiceAccount>(
        Api::namespaced(ctx.client.clone(), &ctx.options.client_namespace),
        watcher::Config::default()
            .labels(&format!(
                "{}={}",
                credentials::LABEL.0,
                credentials::LABEL.1
            ))
            .any_semantic(),
    );
    let credentials = account_events.filter_map(|event| async move {
        let account = event.ok()?;
        let gateway = account.annotations().get(credentials::GATEWAY_ANNOTATION)?;
        Some(ObjectRef::<OverlayGateway>::new(gateway))
    });
    let by_gateway = |event: Result<Lease, watcher::Error>| async move {
        let lease = event.ok()?;
        let gateway = lease.labels().get(election::GATEWAY_LABEL)?.clone();
        Some(ObjectRef::<OverlayGateway>::new(&gateway))
    };
    let elections = lease_events.filter_map(by_gateway);
    let joins = client_events.filter_map(by_gateway);
    let gctx = Arc::new(GatewayContext {
        accounts_api: Api::namespaced(ctx.client.clone(), &ctx.options.client_namespace),
        ctx,
        accounts,
        leases,
        gateways,
        clients,
        liveness: std::sync::Mutex::new(Liveness::default()),
    });
    controller
        .reconcile_on(futures::stream::select_all([
            triggers.boxed(),
            elections.boxed(),
            joins.boxed(),
            credentials.boxed(),
        ]))
        .run(reconcile, error_policy, gctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "gateway reconcile failed");
            }
        })
        .await;
}

/// The PodNetwork controller's context, plus the election Leases.
struct GatewayContext {
    ctx: Arc<Context>,
    leases: Store<Lease>,
    gateways: Store<OverlayGateway>,
    /// ClientJoin clients' heartbeat Leases, and which of them are live.
    clients: Store<Lease>,
    liveness: std::sync::Mutex<Liveness>,
    /// ClientJoin clients' ServiceAccounts ([`credentials`]) in the clients' namespace.
    accounts: Store<ServiceAccount>,
    accounts_api: Api<ServiceAccount>,
}

fn error_policy(gw: Arc<OverlayGateway>, error: &Error, _ctx: Arc<GatewayContext>) -> Action {
    warn!(gateway = %gw.name_any(), error = %error, "gateway reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// One gateway reconcile, timed and counted (`causeway_operator_gateway_reconcile_*`).
async fn reconcile(gw: Arc<OverlayGateway>, gctx: Arc<GatewayContext>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let metrics = Arc::clone(&gctx.ctx.metrics);
    let result = reconcile_gateway(gw, gctx).await;
    metrics.gateway_reconciled(started.elapsed(), result.is_err());
    result
}

async fn reconcile_gateway(
    gw: Arc<OverlayGateway>,
    gctx: Arc<GatewayContext>,
) -> Result<Action, Error> {
    let ctx = &gctx.ctx;
    if gw.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = gw.name_any();
    let election = gctx
        .leases
        .state()
        .into_iter()
        .find(|l| l.name_any() == election::lease_name(&name))
        .map(|l| gateway::Election {
            holder: election::holder(&l).map(str::to_owned),
            reason: election::annotation(&l, election::REASON).map(str::to_owned),
            previous: election::annotation(&l, election::PREVIOUS).map(str::to_owned),
            in_use: election::annotation(&l, election::VIP_IN_USE).map(str::to_owned),
            acquired: l
                .spec
                .as_ref()
                .and_then(|s| s.acquire_time.as_ref())
                .map(|t| Time(t.0)),
        });
    let credentials_error = client_accounts(&gctx, &gw).await.err();
    let silent: BTreeSet<String> = ctx.silent.borrow().keys().cloned().collect();
    let (joined, refused) = joined_clients(&gctx, &gw);
    let other_vips: Vec<(String, String)> = gctx
        .gateways
        .state()
        .iter()
        .filter(|g| g.name_any() != name && g.meta().deletion_timestamp.is_none())
        .filter_map(|g| Some((g.name_any(), g.spec.bridge_hosts.clone()?)))
        .flat_map(|(g, b)| {
            [Some(b.vip), b.secondary_vip]
                .into_iter()
                .flatten()
                .map(move |v| (g.clone(), v))
        })
        .collect();
    let network = ctx
        .networks
        .state()
        .into_iter()
        .find(|n| n.name_any() == gw.spec.network && n.meta().deletion_timestamp.is_none());
    let (all_subnets, all_gateways) = (ctx.subnets.state(), gctx.gateways.state());
    let owners = ownership::network_owners(
        &gw.spec.network,
        Some(&gw),
        all_subnets.iter().map(|s| &**s),
        all_gateways.iter().map(|g| &**g),
        api_servers(ctx),
    );
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
            let (v4, v6) = sides(s)?;
            Some(Member {
                node: s.spec.node_name.clone(),
                v4,
                v6,
                labels: labels.get(&s.spec.node_name).cloned().unwrap_or_default(),
                unprogrammable: unprogrammable(s),
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
            silent: &silent,
            election: election.as_ref(),
            other_vips: &other_vips,
            owners: &owners,
            joined: &joined,
            refused: &refused,
            gateway_name: &name,
            client_namespace: &ctx.options.client_namespace,
            credentials_error: credentials_error.as_deref(),
        },
        &previous,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    if next != previous {
        announce(ctx, &gw, &previous, &next, election.as_ref()).await;
        write_status(ctx, &name, &next).await?;
    }
    if gw.spec.strategy == causeway_crds::v1alpha1::GatewayStrategy::ClientJoin {
        // A client that stops renewing sends no event: look again soon.
        return Ok(Action::requeue(CLIENT_CHECK));
    }
    Ok(Action::requeue(RESYNC))
}

/// Creates the ServiceAccounts of `gw`'s ClientJoin clients that are missing and deletes
/// those of clients no longer listed (all of them when the gateway is no longer ClientJoin).
async fn client_accounts(gctx: &GatewayContext, gw: &OverlayGateway) -> Result<(), String> {
    let clients: Vec<&str> = gw
        .spec
        .client_join
        .as_ref()
        .filter(|_| gw.spec.strategy == causeway_crds::v1alpha1::GatewayStrategy::ClientJoin)
        .map(|j| j.clients.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let existing = gctx.accounts.state();
    let plan = credentials::plan(
        &gw.name_any(),
        &gw.uid().unwrap_or_default(),
        &clients,
        &existing.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
    );
    if plan == credentials::Plan::default() {
        return Ok(());
    }
    let namespace = &gctx.ctx.options.client_namespace;
    let result = credentials::apply(&gctx.accounts_api, gw, namespace, &plan).await;
    match &result {
        Ok(()) => info!(
            gateway = %gw.name_any(),
            created = ?plan.create.keys().collect::<Vec<_>>(),
            deleted = ?plan.delete,
            %namespace,
            "ClientJoin client accounts updated"
        ),
        Err(e) => {
            warn!(gateway = %gw.name_any(), error = %e, "cannot update ClientJoin client accounts")
        }
    }
    result
}

/// The ClientJoin clients of `gw` whose heartbeat Lease is live (renewed within its duration,
/// by this operator's clock): those that joined, and those that run but say why they cannot
/// ([`heartbeat::CLIENT_PROBLEM`]).
fn joined_clients(
    gctx: &GatewayContext,
    gw: &OverlayGateway,
) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let Some(join) = gw.spec.client_join.as_ref() else {
        return (BTreeSet::new(), BTreeMap::new());
    };
    let leases = gctx.clients.state();
    let now = std::time::Instant::now();
    let silent = {
        let mut live = gctx
            .liveness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.observe(leases.iter().map(AsRef::as_ref), now);
        live.silent(now)
    };
    // Live Leases by name and holder, with the problem they report, if any. A client counts
    // only through the Lease named after it (the one its own account may write) holding its
    // own name.
    let live: BTreeMap<(&str, &str), Option<&String>> = leases
        .iter()
        .filter_map(|l| {
            let holder = l.spec.as_ref()?.holder_identity.as_deref()?;
            let name = l.metadata.name.as_deref()?;
            Some((
                (name, holder),
                l.annotations().get(heartbeat::CLIENT_PROBLEM),
            ))
        })
        .filter(|((_, h), _)| !silent.contains_key(*h))
        .collect();
    let name = gw.name_any();
    let mut joined = BTreeSet::new();
    let mut refused = BTreeMap::new();
    for c in &join.clients {
        let lease = heartbeat::client_lease_name(&name, &c.name);
        let holder = heartbeat::client_holder(&name, &c.name);
        match live.get(&(lease.as_str(), holder.as_str())) {
            Some(None) => {
                joined.insert(c.name.clone());
            }
            Some(Some(problem)) => {
                refused.insert(c.name.clone(), (*problem).clone());
            }
            None => {}
        }
    }
    (joined, refused)
}

/// The API server's addresses of both families (configured, and the `default/kubernetes`
/// endpoints): nobody else may take one.
fn api_servers(ctx: &Context) -> impl Iterator<Item = IpAddr> + use<> {
    let (configured, slices) = (ctx.options.api_server, ctx.api_endpoints.state());
    let v4 = causeway_kube::apiserver::addresses(configured, &slices);
    let v6 = causeway_kube::apiserver::addresses6(configured, &slices);
    v4.into_iter()
        .map(IpAddr::V4)
        .chain(v6.into_iter().map(IpAddr::V6))
}

/// A NodeSubnet's sides by family, whichever fields hold them (`cidr` or `secondaryCidr`,
/// `nodeAddress` or `secondaryNodeAddress`, `status.underlayPrefix` or
/// `status.secondaryUnderlayPrefix`): the IPv4 side when it has an IPv4 subnet and address,
/// the IPv6 side when it has an IPv6 subnet. `None` when the spec does not parse; unparsable
/// status values read as absent.
fn sides(s: &NodeSubnet) -> Option<(Option<Member4>, Option<Member6>)> {
    let parsed = s.spec.parse_addresses().ok()?;
    let subnets = [Some(parsed.cidr), parsed.secondary_cidr];
    let addresses = [Some(parsed.node_address), parsed.secondary_node_address];
    let status = s.status.as_ref();
    let segments: Vec<IpNet> = [
        status.and_then(|st| st.underlay_prefix.as_deref()),
        status.and_then(|st| st.secondary_underlay_prefix.as_deref()),
    ]
    .into_iter()
    .flatten()
    .filter_map(|p| p.parse().ok())
    .collect();
    let v4 = match (
        subnets.into_iter().flatten().find(|n| n.addr().is_ipv4()),
        addresses.into_iter().flatten().find(IpAddr::is_ipv4),
    ) {
        (Some(IpNet::V4(subnet)), Some(IpAddr::V4(address))) => Some(Member4 {
            subnet,
            address,
            segment: segments.iter().find_map(|n| match n {
                IpNet::V4(n) => Some(*n),
                IpNet::V6(_) => None,
            }),
        }),
        _ => None,
    };
    let v6 = match subnets.into_iter().flatten().find(|n| n.addr().is_ipv6()) {
        Some(IpNet::V6(subnet)) => Some(Member6 {
            subnet,
            address: addresses.into_iter().flatten().find_map(|a| match a {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            }),
            segment: segments.iter().find_map(|n| match n {
                IpNet::V6(n) => Some(*n),
                IpNet::V4(_) => None,
            }),
        }),
        _ => None,
    };
    Some((v4, v6))
}

/// The reason a NodeSubnet's agent reports that it cannot program its node at all (current
/// `Programmed=False` with `InvalidConfiguration` or `UnderlayNotFound`): such an agent leaves
/// every BridgeHosts election (see the agent's `withdraw`).
fn unprogrammable(s: &causeway_crds::NodeSubnet) -> Option<String> {
    let st = s.status.as_ref()?;
    let p = find_condition(&st.conditions, types::PROGRAMMED)?;
    let current = p.observed_generation.is_some() && p.observed_generation == s.metadata.generation;
    let fatal = p.reason == causeway_crds::conditions::reasons::INVALID_CONFIGURATION
        || p.reason == causeway_crds::conditions::reasons::UNDERLAY_NOT_FOUND;
    (current && p.status == "False" && fatal).then(|| p.reason.clone())
}

/// An event when Ready's status or reason changes, and one when the VIP moves.
async fn announce(
    ctx: &Context,
    gw: &OverlayGateway,
    previous: &OverlayGatewayStatus,
    next: &OverlayGatewayStatus,
    election: Option<&gateway::Election>,
) {
    if let Some(active) = next.active_host.as_ref()
        && previous.active_host.as_ref() != Some(active)
    {
        // Both VIPs of a dual-stack gateway move together: the event names both.
        let vip = gw
            .spec
            .bridge_hosts
            .as_ref()
            .map(|b| match &b.secondary_vip {
                Some(second) => format!("{} and {second}", b.vip),
                None => b.vip.clone(),
            })
            .unwrap_or_default();
        let (reason, note) = match election.and_then(|e| e.reason.as_ref().zip(e.previous.as_ref()))
        {
            Some((why, from)) => (
                "Failover",
                format!("VIP {vip} moved from {from} to {active} ({why})"),
            ),
            None => ("Elected", format!("{active} holds VIP {vip}")),
        };
        ctx.events
            .publish(
                &gw.object_ref(&()),
                Record {
                    kind: Kind::Normal,
                    reason,
                    action: "Elect",
                    note,
                    related: None,
                },
            )
            .await;
    }
    let Some(ready) = find_condition(&next.conditions, types::READY) else {
        return;
    };
    let before = find_condition(&previous.conditions, types::READY);
    if before.is_some_and(|b| b.status == ready.status && b.reason == ready.reason) {
        return;
    }
    let kind = if causeway_crds::conditions::is_true(ready) {
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
