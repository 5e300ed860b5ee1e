//! Client mode (`causeway-node-agent client`): a machine that is not a node joins an Overlay
//! network as a ClientJoin member of one OverlayGateway.
//!
//! The same loop shape as a node's, smaller: on every change of the gateway, the network or
//! its NodeSubnets (and every `resync`), plan ([`crate::join::client_plan`]) → observe → diff
//! → apply. While the gateway lists it, it renews its heartbeat Lease
//! (`causeway-client-<gateway>.<name>`), from which the operator reports it in the gateway's
//! `status.clients`: joined once programmed, or running but unable to join, with why
//! ([`heartbeat::CLIENT_PROBLEM`]: a conflicting route, a missing network, a kernel error),
//! so `kubectl describe overlaygateway` says what the client's log says. When the gateway no longer lists it (or is deleted), it removes
//! everything it created. Stopping leaves the dataplane as it is, like the node agent.
//!
//! What it may read and write is the chart's `causeway-gateway-client` role: read PodNetworks,
//! NodeSubnets and OverlayGateways, write Leases in its namespace. Nothing else.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use causeway_crds::{NodeSubnet, OverlayGateway, PodNetwork};
use causeway_kube::cache::cached;
use causeway_kube::{election, heartbeat};
use futures::StreamExt;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::diff;
use crate::join::{ClientInput, client_plan};
use crate::model::{Dataplane, State};
use crate::netlink::Netlink;

/// How the client runs.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The OverlayGateway (strategy ClientJoin) listing this client.
    pub gateway: String,
    /// This client's name in `spec.clientJoin.clients`.
    pub name: String,
    /// Namespace of the heartbeat Lease (the agents').
    pub namespace: String,
    pub resync: Duration,
    pub lease_duration: Duration,
}

/// Runs until `shutdown` resolves.
///
/// # Errors
/// Only when netlink cannot be opened or the watches end.
pub async fn run(
    client: Client,
    config: ClientConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut dataplane = Netlink::connect()
        .await
        .context("opening netlink (is the agent root / CAP_NET_ADMIN?)")?;
    let (gateways, gateway_events) = cached::<OverlayGateway>(
        &client,
        watcher::Config::default().fields(&format!("metadata.name={}", config.gateway)),
    );
    let (networks, network_events) = cached::<PodNetwork>(&client, watcher::Config::default());
    let (subnets, subnet_events) = cached::<NodeSubnet>(&client, watcher::Config::default());
    let mut changes = futures::stream::select_all([
        gateway_events.map(|r| r.map(|_| ())).boxed(),
        network_events.map(|r| r.map(|_| ())).boxed(),
        subnet_events.map(|r| r.map(|_| ())).boxed(),
    ]);
    let ready = {
        let (g, n, s) = (gateways.clone(), networks.clone(), subnets.clone());
        async move {
            let _ = g.wait_until_ready().await;
            let _ = n.wait_until_ready().await;
            let _ = s.wait_until_ready().await;
        }
    };
    tokio::pin!(ready);
    loop {
        tokio::select! {
            _ = &mut ready => break,
            ev = changes.next() => if ev.is_none() { anyhow::bail!("the watches ended before listing") },
        }
    }
    info!(gateway = %config.gateway, name = %config.name, "joining as a ClientJoin client");
    let mut resync = tokio::time::interval(config.resync);
    let mut heartbeat =
        tokio::time::interval((config.lease_duration / 4).max(Duration::from_millis(250)));
    tokio::pin!(shutdown);
    let mut joined = false;
    // Listed by the gateway, but the last pass failed: why.
    let mut problem: Option<String> = None;
    let mut last_problem: Option<(String, Instant)> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("stopping; the dataplane stays as it is");
                return Ok(());
            }
            _ = heartbeat.tick() => {
                // Owned by the gateway: deleting it deletes the Lease.
                let owner = gateways
                    .state()
                    .into_iter()
                    .find(|g| g.name_any() == config.gateway)
                    .and_then(|g| {
                        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                            api_version: OverlayGateway::api_version(&()).into_owned(),
                            kind: OverlayGateway::kind(&()).into_owned(),
                            name: config.gateway.clone(),
                            uid: g.uid()?,
                            ..Default::default()
                        })
                    });
                // Never without the owner: a Lease written after the gateway is gone (its
                // deletion not yet seen by a pass) would outlive it.
                if (joined || problem.is_some()) && owner.is_some() {
                    let seconds = u32::try_from(config.lease_duration.as_secs().max(1)).unwrap_or(u32::MAX);
                    let name = heartbeat::client_lease_name(&config.gateway, &config.name);
                    let holder = heartbeat::client_holder(&config.gateway, &config.name);
                    let annotations: Vec<(&str, &str)> = problem
                        .iter()
                        .map(|p| (heartbeat::CLIENT_PROBLEM, p.as_str()))
                        .collect();
                    let beat = heartbeat::Beat {
                        name: &name,
                        holder: &holder,
                        labels: &[heartbeat::CLIENT_LABEL, (election::GATEWAY_LABEL, &config.gateway)],
                        annotations: &annotations,
                        owner: owner.as_ref(),
                        duration_seconds: seconds,
                    };
                    if let Err(e) = heartbeat::renew_lease(
                        &client,
                        &config.namespace,
                        &beat,
                        crate::FIELD_MANAGER,
                    ).await {
                        warn!(error = %e, "cannot renew the client heartbeat Lease; retrying");
                    }
                }
                continue;
            }
            _ = resync.tick() => {}
            ev = changes.next() => {
                if ev.is_none() {
                    anyhow::bail!("the watches ended");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let gateway = gateways
            .state()
            .into_iter()
            .find(|g| g.name_any() == config.gateway);
        let listed = gateway.as_ref().is_some_and(|g| {
            g.spec
                .client_join
                .as_ref()
                .is_some_and(|j| j.clients.iter().any(|c| c.name == config.name))
        });
        let result = match gateway {
            Some(gw) if listed => {
                let r = program(
                    &mut dataplane,
                    &gw,
                    &config,
                    &networks.state(),
                    &subnets.state(),
                )
                .await;
                let now = r.as_ref().err().cloned();
                if now != problem {
                    // The gateway hears of the change at once, not at the next beat.
                    heartbeat.reset_immediately();
                }
                problem = now;
                r
            }
            _ => {
                // Not (or no longer) a member: nothing of ours stays.
                let r = apply(&mut dataplane, &State::default()).await;
                if r.is_ok() && joined {
                    info!(
                        "no longer listed by OverlayGateway {}; removed the client's tunnel",
                        config.gateway
                    );
                }
                joined = false;
                problem = None;
                r.and(Err(format!(
                    "OverlayGateway {} does not list client {}; waiting",
                    config.gateway, config.name
                )))
            }
        };
        match result {
            Ok(()) => {
                if !joined {
                    info!("joined: tunnels to every node are programmed");
                    heartbeat.reset_immediately();
                }
                joined = true;
                last_problem = None;
            }
            Err(failed) => {
                joined = false;
                // Said once per minute, not at every pass.
                let repeat = last_problem
                    .as_ref()
                    .is_some_and(|(p, at)| *p == failed && at.elapsed() < Duration::from_secs(60));
                if !repeat {
                    warn!("{failed}");
                    last_problem = Some((failed, Instant::now()));
                }
            }
        }
    }
}

async fn program(
    dataplane: &mut Netlink,
    gateway: &OverlayGateway,
    config: &ClientConfig,
    networks: &[std::sync::Arc<PodNetwork>],
    subnets: &[std::sync::Arc<NodeSubnet>],
) -> Result<(), String> {
    let Some(network) = networks
        .iter()
        .find(|n| n.name_any() == gateway.spec.network)
        .filter(|n| n.meta().deletion_timestamp.is_none())
    else {
        // Gone (or going): its tunnel leads nowhere, so nothing of ours stays.
        apply(dataplane, &State::default()).await?;
        return Err(format!(
            "PodNetwork {} does not exist; the client has no tunnel until it does",
            gateway.spec.network
        ));
    };
    let entry = gateway
        .spec
        .client_join
        .as_ref()
        .and_then(|j| j.clients.iter().find(|c| c.name == config.name))
        .ok_or("not listed")?;
    let address: std::net::IpAddr = entry
        .address
        .trim()
        .parse()
        .map_err(|_| format!("address {:?} is not an IP address", entry.address))?;
    let underlay = dataplane
        .underlay_for(address, None)
        .await
        .map_err(|e| format!("client address {address}: {e}"))?;
    let (desired, skipped) = client_plan(&ClientInput {
        gateway,
        name: &config.name,
        network: &network.spec,
        peers: subnets,
        underlay: &underlay,
    })?;
    for line in &skipped {
        warn!("{line}");
    }
    apply(dataplane, &desired).await
}

async fn apply(dataplane: &mut Netlink, desired: &State) -> Result<(), String> {
    let observed = dataplane.observe().await.map_err(|e| e.to_string())?;
    let ops = diff::diff(desired, &observed);
    for op in &ops {
        info!(%op, "applying");
    }
    dataplane
        .apply_all(&ops)
        .await
        .map_err(|(i, e)| format!("{}: {}", ops[i], e.message))
}
