//! BridgeHosts: which OverlayGateways this node is a candidate bridge host for, and one
//! elector task per such gateway that contends for the gateway's election Lease
//! ([`causeway_kube::election`]) and holds the VIP while it wins.
//!
//! Two hosts must never answer for the VIP at once. Three things make sure of it:
//! A gateway on a dual-stack network may have two VIPs (`vip` and `secondaryVip`): one
//! election, and the holder holds, refreshes, probes for and announces both together
//! ([`vips`](crate::vips)); below, "the VIP" is both.
//!
//! - **The kernel forgets the VIP by itself.** The holder adds it as a /32 (/128) with a lifetime
//!   ([`Timing::vip_lifetime_seconds`], half the lease) and refreshes it only after a
//!   successful renewal; an agent killed, hung or cut off from the API server loses the VIP
//!   within that lifetime, without doing anything.
//! - **A successor asks the segment first.** A candidate takes over only after it has seen no
//!   renewal for [`Timing::suspect_after`] (or the holder released) *and* nobody answers ARP
//!   probes for the VIP (RFC 5227, from 0.0.0.0), or for an IPv6 VIP duplicate address
//!   detection probes (RFC 4862, from ::). An old holder still answering blocks the
//!   takeover, whatever the Lease says.
//! - **Claims are compare-and-swap** on the Lease's `resourceVersion`: of two candidates
//!   deciding together, one wins; the other sees a conflict and follows.
//!
//! **A control-plane outage is not a data-plane outage.** A holder whose renewal fails because
//! the API server is unavailable (no answer in time, 5xx, 429) keeps the VIP, refreshing its
//! lifetime, for as long as its underlay has carrier and no other host answers for the VIP:
//! before each refresh it probes the segment itself. Nobody can have taken over meanwhile
//! without winning the Lease (impossible while the server is down for everyone) *and* finding
//! the VIP silent (impossible while this holder answers); a standby that can still reach the
//! server while the holder cannot finds the holder answering (the Lease names the holder's
//! MAC, [`HOLDER_MAC`](election::HOLDER_MAC)) and waits. A renewal the server *refuses*
//! (forbidden, invalid) lets the VIP go after its lifetime, as before.
//!
//! A holder whose underlay loses carrier removes the VIP at once and releases the Lease with
//! reason `LinkDown` (if the API server is still reachable; otherwise the Lease lapses), so
//! the successor need not wait. A holder that stops (SIGTERM, node deselected, gateway
//! deleted) releases with a reason too. A new holder announces the VIP with gratuitous ARP
//! and, for an IPv6 VIP, unsolicited neighbour advertisements with the override flag (three
//! times: right away, and with its next two renewals), so clients and switches move at once.
//!
//! [`candidacies`] and [`decide`] are pure and unit-tested; [`Elector`] is the I/O.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_crds::conditions::reasons;
use causeway_crds::ownership::{self, Vips};
use causeway_crds::v1alpha1::GatewayStrategy;
use causeway_crds::{NodeSubnet, OverlayGateway, selector};
use causeway_kube::election;
use causeway_kube::events::{Kind, Publisher, Record};
use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::netlink::Netlink;
use crate::{arp, vips};

/// What an elector needs to know about its gateway; a change restarts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidacy {
    pub gateway: String,
    pub gateway_uid: String,
    /// `vip`, and `secondaryVip` on a dual-stack network.
    pub vips: Vips,
    /// The underlay link the VIPs go on.
    pub dev: String,
    pub lease_seconds: u32,
}

/// The gateways this node is a candidate bridge host for: strategy BridgeHosts on this
/// node's network, the node selected by `bridgeHosts.nodeSelector`, and VIPs that pass
/// [`causeway_crds::ownership::check_vips`] — the operator's check, plus this node's routers —
/// each on one of this node's underlay `segments` (one per family), so no node stands for a
/// VIP the status refuses. By gateway name.
#[must_use]
pub fn candidacies(
    gateways: &[std::sync::Arc<OverlayGateway>],
    own: &NodeSubnet,
    labels: &BTreeMap<String, String>,
    underlay: &str,
    segments: &[IpNet],
    known: &crate::join::Known<'_>,
) -> BTreeMap<String, Candidacy> {
    gateways
        .iter()
        .filter(|g| g.meta().deletion_timestamp.is_none())
        .filter(|g| g.spec.network == own.spec.network)
        .filter(|g| g.spec.strategy == GatewayStrategy::BridgeHosts)
        .filter_map(|g| {
            let bridge = g.spec.bridge_hosts.as_ref()?;
            let owners = known.owners(&own.spec.network, g, gateways);
            let vips = ownership::check_vips(bridge, known.ranges, segments, &owners).ok()?;
            let selected = selector::matches(Some(&bridge.node_selector), labels).ok()?;
            let on_segment = vips
                .all()
                .all(|vip| segments.iter().any(|s| s.contains(&vip)));
            (selected && on_segment).then(|| {
                (
                    g.name_any(),
                    Candidacy {
                        gateway: g.name_any(),
                        gateway_uid: g.uid().unwrap_or_default(),
                        vips,
                        dev: underlay.to_owned(),
                        lease_seconds: bridge.lease_duration_seconds(),
                    },
                )
            })
        })
        .collect()
}

/// Return paths of the BridgeHosts gateways of `network` that do not SNAT and have an
/// active host (`status.activeHost`, which the operator writes from the election Lease: only
/// failovers reach the nodes, never the renewals).
#[must_use]
pub fn returns(
    gateways: &[std::sync::Arc<OverlayGateway>],
    network: &str,
) -> Vec<crate::plan::GatewayReturn> {
    gateways
        .iter()
        .filter(|g| g.meta().deletion_timestamp.is_none())
        .filter(|g| g.spec.network == network && g.spec.strategy == GatewayStrategy::BridgeHosts)
        .filter(|g| !g.spec.snat)
        .filter_map(|g| {
            let via = g.status.as_ref()?.active_host.clone()?;
            Some(crate::plan::GatewayReturn {
                gateway: g.name_any(),
                via,
                clients: g
                    .spec
                    .client_cidrs
                    .iter()
                    .filter_map(|c| c.trim().parse::<IpNet>().ok())
                    .collect(),
            })
        })
        .collect()
}

/// Client ranges of the `snat: true` gateways among `candidacies`, of both families: this
/// node masquerades their traffic into the pod range, IPv4 clients into the network's `cidr`
/// and IPv6 ones into its `secondaryCidr` (all candidates do, so a new holder needs no change
/// to forward; only the holder receives client traffic, through the VIPs). A range counts only
/// when the gateway has a VIP of its family (an IPv6 `secondaryVip` on a dual-stack network):
/// without one, its clients have no way in.
#[must_use]
pub fn snat_clients(
    gateways: &[std::sync::Arc<OverlayGateway>],
    candidacies: &BTreeMap<String, Candidacy>,
) -> Vec<IpNet> {
    gateways
        .iter()
        .filter(|g| g.spec.snat)
        .filter_map(|g| Some((g, candidacies.get(&g.name_any())?)))
        .flat_map(|(g, candidacy)| {
            g.spec
                .client_cidrs
                .iter()
                .filter_map(|c| c.trim().parse::<IpNet>().ok())
                .filter(|c| candidacy.vips.of_family_of(c.network()).is_some())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The elector's clock, from the gateway's `leaseDurationSeconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The holder renews this often (a tenth of the lease, at least 100 ms).
    pub renew_every: Duration,
    /// Without a renewal seen for this long, candidates probe for the VIP and take over if
    /// nobody answers (two renewal periods: one late renewal costs only a probe).
    pub suspect_after: Duration,
    /// The VIP's lifetime in the kernel, refreshed at each renewal (half the lease, at least
    /// 1 s, the kernel's unit).
    pub vip_lifetime_seconds: u32,
    pub lease_seconds: u32,
}

impl Timing {
    #[must_use]
    pub fn for_lease(seconds: u32) -> Self {
        let lease = Duration::from_secs(u64::from(seconds.max(2)));
        let renew_every = (lease / 10).max(Duration::from_millis(100));
        Self {
            renew_every,
            suspect_after: renew_every * 2,
            vip_lifetime_seconds: (seconds / 2).max(1),
            lease_seconds: seconds.max(2),
        }
    }
}

/// What the elector knows at one instant.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub me: &'a str,
    /// Whether the Lease exists (read at least once).
    pub exists: bool,
    /// Its holder, if any.
    pub holder: Option<&'a str>,
    /// Time since the elector last saw the Lease change (renewal, claim or release).
    pub quiet: Duration,
    /// The underlay has carrier.
    pub carrier: bool,
    /// Why the last holder released, if it did.
    pub release_reason: Option<&'a str>,
}

/// The elector's next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// This node holds the Lease: renew it, then refresh the VIP.
    Renew,
    /// This node holds the Lease but must let go (drop the VIP first).
    Release(&'static str),
    /// Take over, with this reason, if no one answers ARP for the VIP.
    ProbeThenClaim(Option<String>),
    /// Another node holds (or may still hold) the VIP: make sure it is not here.
    Follow,
}

/// The step for `view` under `timing` (see the module docs).
#[must_use]
pub fn decide(view: &View<'_>, timing: &Timing) -> Step {
    if view.holder == Some(view.me) {
        return if view.carrier {
            Step::Renew
        } else {
            Step::Release(reasons::LINK_DOWN)
        };
    }
    if !view.carrier {
        return Step::Follow;
    }
    match view.holder {
        _ if !view.exists => Step::ProbeThenClaim(None),
        None => Step::ProbeThenClaim(view.release_reason.map(str::to_owned)),
        Some(_) if view.quiet >= timing.suspect_after => {
            Step::ProbeThenClaim(Some(reasons::HOST_UNRESPONSIVE.to_owned()))
        }
        Some(_) => Step::Follow,
    }
}

/// What a holder does after a renewal that did not land (other than a conflict, after which
/// it re-reads the Lease).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Keep the VIP (its lifetime is not over) and retry at the next tick.
    Retry,
    /// The API server is unavailable: keep the VIP while nobody else answers for it.
    RideOut,
    /// The server refuses the renewal and the VIP's lifetime is over: let it go.
    LetGo,
}

/// See [`AfterFailure`]: `unavailable` as [`election::WriteError::Unavailable`], `since`
/// the last successful renewal (`None`: none since this elector started).
#[must_use]
pub fn after_failure(unavailable: bool, since: Option<Duration>, timing: &Timing) -> AfterFailure {
    let lifetime = Duration::from_secs(u64::from(timing.vip_lifetime_seconds));
    if unavailable {
        AfterFailure::RideOut
    } else if since.is_none_or(|t| t >= lifetime) {
        AfterFailure::LetGo
    } else {
        AfterFailure::Retry
    }
}

/// A running elector: stop it with [`Elector::stop`], which releases the VIP.
pub struct Elector {
    pub candidacy: Candidacy,
    stop: watch::Sender<Option<&'static str>>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Elector {
    /// Starts contending for `candidacy`'s gateway.
    pub fn start(
        client: Client,
        namespace: &str,
        node: &str,
        candidacy: Candidacy,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (stop, stopped) = watch::channel(None);
        let task = Task {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.to_owned(),
            node: node.to_owned(),
            timing: Timing::for_lease(candidacy.lease_seconds),
            c: candidacy.clone(),
            events: Publisher::new(client, crate::FIELD_MANAGER, node),
            lease: None,
            changed: Instant::now(),
            last_renewed: None,
            announcements: 0,
            conflict: None,
            outage_since: None,
            last_probe: None,
            metrics: Arc::clone(&metrics),
        };
        let task = tokio::spawn(task.run(stopped));
        Self {
            candidacy,
            stop,
            task,
            metrics,
        }
    }

    /// Stops contending; a holder drops the VIP and releases the Lease saying `reason`.
    pub async fn stop(self, reason: &'static str) {
        let _ = self.stop.send(Some(reason));
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            warn!(gateway = %self.candidacy.gateway, "elector did not stop in 5 s");
        }
        self.metrics.forget_gateway(&self.candidacy.gateway);
    }
}

struct Task {
    api: Api<Lease>,
    namespace: String,
    node: String,
    timing: Timing,
    c: Candidacy,
    events: Publisher,
    /// The Lease as last read or written.
    lease: Option<Lease>,
    /// When the Lease's holder or renewTime last changed (local clock).
    changed: Instant,
    /// When this node last renewed successfully while holding.
    last_renewed: Option<Instant>,
    /// Gratuitous ARP rounds still to send.
    announcements: u8,
    /// A MAC answering for the VIP while no candidate held it, once reported.
    conflict: Option<crate::model::Mac>,
    /// Holding through an API-server outage since then ([`AfterFailure::RideOut`]).
    outage_since: Option<Instant>,
    /// When this holder last probed the segment for another host answering for the VIP.
    last_probe: Option<Instant>,
    /// Where holding the VIP is reported (`causeway_agent_vip_held`).
    metrics: Arc<Metrics>,
}

impl Task {
    async fn run(mut self, mut stopped: watch::Receiver<Option<&'static str>>) {
        let netlink = match Netlink::connect().await {
            Ok(n) => n,
            Err(e) => {
                warn!(gateway = %self.c.gateway, error = %e, "elector cannot open netlink");
                return;
            }
        };
        info!(gateway = %self.c.gateway, vip = %self.c.vips, dev = %self.c.dev, "candidate bridge host");
        let name = election::lease_name(&self.c.gateway);
        let mut updates = watcher::watch_object(self.api.clone(), &name).boxed();
        // Twice per renewal period: a holder renews at every other tick, but carrier loss
        // and a silent holder are noticed within half a period.
        let mut tick = tokio::time::interval(self.timing.renew_every / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = stopped.changed() => {
                    let reason = if changed.is_ok() {
                        (*stopped.borrow()).unwrap_or(reasons::AGENT_STOPPED)
                    } else {
                        reasons::AGENT_STOPPED
                    };
                    self.quit(&netlink, reason).await;
                    return;
                }
                update = updates.next() => match update {
                    Some(Ok(lease)) => {
                        let was = self.holder().map(str::to_owned);
                        self.note(lease);
                        // A release or a new holder is acted on at once, not at the tick.
                        if self.holder().map(str::to_owned) != was {
                            self.step(&netlink).await;
                        }
                    }
                    Some(Err(e)) => debug!(error = %e, "election watch error; it retries"),
                    None => {
                        updates = watcher::watch_object(self.api.clone(), &name).boxed();
                    }
                },
                _ = tick.tick() => self.step(&netlink).await,
            }
        }
    }

    fn holder(&self) -> Option<&str> {
        self.lease.as_ref().and_then(election::holder)
    }

    /// The MAC the current holder announced in the Lease, if any.
    fn holder_mac(&self) -> Option<crate::model::Mac> {
        self.holder()?;
        self.lease
            .as_ref()
            .and_then(|l| election::annotation(l, election::HOLDER_MAC))
            .and_then(|m| m.parse().ok())
    }

    /// Takes in the Lease as read or written; notes the local instant of any change.
    fn note(&mut self, lease: Option<Lease>) {
        let mark = |l: Option<&Lease>| {
            l.map(|l| {
                (
                    election::holder(l).map(str::to_owned),
                    election::renew_mark(l),
                )
            })
        };
        // A watch event may be older than what this task wrote since.
        if let (Some(new), Some(current)) = (lease.as_ref(), self.lease.as_ref())
            && let (Some(a), Some(b)) = (
                new.resource_version().and_then(|v| v.parse::<u64>().ok()),
                current
                    .resource_version()
                    .and_then(|v| v.parse::<u64>().ok()),
            )
            && a < b
        {
            return;
        }
        if mark(lease.as_ref()) != mark(self.lease.as_ref()) {
            self.changed = Instant::now();
        }
        self.lease = lease;
    }

    async fn step(&mut self, netlink: &Netlink) {
        let link = match vips::read(netlink, &self.c.dev, self.c.vips).await {
            Ok(l) => l,
            Err(e) => {
                warn!(gateway = %self.c.gateway, error = %e, "cannot read the underlay");
                return;
            }
        };
        let release_reason = self
            .lease
            .as_ref()
            .and_then(|l| election::annotation(l, election::RELEASE_REASON))
            .map(str::to_owned);
        let view = View {
            me: &self.node,
            exists: self.lease.is_some(),
            holder: self.holder(),
            quiet: self.changed.elapsed(),
            carrier: link.carrier,
            release_reason: release_reason.as_deref(),
        };
        let step = decide(&view, &self.timing);
        match step {
            Step::Renew => {
                let due = self
                    .last_renewed
                    .is_none_or(|t| t.elapsed() >= self.timing.renew_every * 3 / 4);
                if link.all && !due {
                    return;
                }
                if !link.all {
                    // Back after a restart or a lapse: tell the segment again.
                    self.announcements = self.announcements.max(1);
                }
                self.renew(netlink).await;
            }
            Step::Release(reason) => {
                self.drop_vip(netlink, link.any).await;
                self.release(reason).await;
            }
            Step::Follow => {
                // Holding without the Lease (a lost race, a restart): let go at once.
                self.drop_vip(netlink, link.any).await;
                self.last_renewed = None;
            }
            Step::ProbeThenClaim(reason) => {
                self.drop_vip(netlink, link.any).await;
                self.claim(netlink, reason).await;
            }
        }
    }

    async fn drop_vip(&mut self, netlink: &Netlink, present: bool) {
        if !present {
            return;
        }
        match vips::drop(netlink, &self.c.dev, self.c.vips).await {
            Ok(()) => {
                info!(gateway = %self.c.gateway, vip = %self.c.vips, "removed the VIP");
                self.metrics.vip(&self.c.gateway, false);
            }
            Err(e) => warn!(gateway = %self.c.gateway, error = %e, "cannot remove the VIP"),
        }
    }

    /// A Lease write that gives up after `timeout`: a frozen API server must not hold up the
    /// elector (renewals give up after one renewal period, so the VIP's lifetime is refreshed
    /// in time through an outage; claims and releases after half the lease).
    async fn write(&self, lease: &Lease, timeout: Duration) -> Result<Lease, election::WriteError> {
        election::write(&self.api, lease, timeout).await
    }

    fn patient(&self) -> Duration {
        Duration::from_secs(u64::from(self.timing.lease_seconds)) / 2
    }

    async fn renew(&mut self, netlink: &Netlink) {
        let Some(lease) = self.lease.as_ref() else {
            return;
        };
        let next = election::renewed(lease, k8s_openapi::jiff::Timestamp::now());
        match self.write(&next, self.timing.renew_every).await {
            Ok(stored) => {
                if let Some(since) = self.outage_since.take() {
                    info!(gateway = %self.c.gateway, outage = ?since.elapsed(), "the API server answers again; renewed the claim");
                }
                self.note(Some(stored));
                self.last_renewed = Some(Instant::now());
                self.hold(netlink).await;
            }
            Err(election::WriteError::Conflict) => {
                // Someone else wrote: re-read, and let go if it is no longer ours.
                if let Ok(l) = election::read(&self.api, &self.c.gateway).await {
                    self.note(l);
                }
                if self.holder() != Some(self.node.as_str()) {
                    self.drop_vip(netlink, true).await;
                }
            }
            Err(e) => {
                let unavailable = matches!(e, election::WriteError::Unavailable { .. });
                match after_failure(
                    unavailable,
                    self.last_renewed.map(|t| t.elapsed()),
                    &self.timing,
                ) {
                    AfterFailure::Retry => {
                        debug!(gateway = %self.c.gateway, error = %e, "renewal failed; retrying");
                    }
                    AfterFailure::RideOut => self.ride_out(netlink, &e).await,
                    AfterFailure::LetGo => {
                        // The kernel drops the VIP when its lifetime runs out; removing it
                        // explicitly at the same moment keeps the two in step.
                        warn!(gateway = %self.c.gateway, error = %e, "the API server refuses the renewal; letting the VIP go");
                        self.drop_vip(netlink, true).await;
                    }
                }
            }
        }
    }

    /// Holds the VIP through an API-server outage: once per renewal period, asks the segment
    /// whether another host answers for the VIP; lets go if one does, else refreshes it.
    async fn ride_out(&mut self, netlink: &Netlink, error: &election::WriteError) {
        if self.outage_since.is_none() {
            self.outage_since = Some(Instant::now());
            warn!(gateway = %self.c.gateway, vip = %self.c.vips, %error, "cannot renew the claim: keeping the VIP while no other host answers for it");
        }
        if self
            .last_probe
            .is_some_and(|t| t.elapsed() < self.timing.renew_every)
        {
            return;
        }
        self.last_probe = Some(Instant::now());
        match vips::answered(&self.c.dev, self.c.vips, 1, Duration::from_millis(30)).await {
            Ok(None) => self.hold(netlink).await,
            Ok(Some((vip, mac))) => {
                warn!(gateway = %self.c.gateway, %vip, %mac, "another host answers for the VIP while the API server is unavailable; letting it go");
                self.drop_vip(netlink, true).await;
                self.last_renewed = None;
            }
            // Cannot ask: the lifetime decides, as for any failed renewal.
            Err(e) => {
                warn!(gateway = %self.c.gateway, error = %e, "cannot probe for the VIP during the outage");
            }
        }
    }

    /// Adds or refreshes the VIP, and announces it while announcements are due.
    async fn hold(&mut self, netlink: &Netlink) {
        if let Err(e) = vips::hold(
            netlink,
            &self.c.dev,
            self.c.vips,
            self.timing.vip_lifetime_seconds,
        )
        .await
        {
            warn!(gateway = %self.c.gateway, error = %e, "cannot add the VIP");
            return;
        }
        self.metrics.vip(&self.c.gateway, true);
        if self.announcements > 0 {
            self.announcements -= 1;
            match vips::announce(&self.c.dev, self.c.vips).await {
                Ok(()) => debug!(vip = %self.c.vips, "announced the VIP"),
                Err(e) => warn!(gateway = %self.c.gateway, error = %e, "cannot announce the VIP"),
            }
        }
    }

    async fn claim(&mut self, netlink: &Netlink, reason: Option<String>) {
        match vips::answered(&self.c.dev, self.c.vips, 3, Duration::from_millis(40)).await {
            Ok(Some((vip, mac))) => {
                // The old holder is still there (its lifetime not over yet, or holding
                // through an outage of its own), or someone outside Causeway uses the VIP.
                debug!(gateway = %self.c.gateway, %mac, "the VIP still answers; not taking over");
                if self.holder_mac() == Some(mac) {
                    if self.conflict != Some(mac) {
                        self.conflict = Some(mac);
                        warn!(gateway = %self.c.gateway, holder = ?self.holder(), %mac, "the holder stopped renewing but still answers for the VIP (cut off from the API server?); not taking over");
                    }
                    return;
                }
                let silent_too_long = self.changed.elapsed()
                    > Duration::from_secs(u64::from(
                        self.timing.lease_seconds + self.timing.vip_lifetime_seconds + 1,
                    ));
                if silent_too_long && self.conflict != Some(mac) {
                    self.conflict = Some(mac);
                    self.report_conflict(vip, mac).await;
                }
                return;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(gateway = %self.c.gateway, error = %e, "cannot probe for the VIP; not taking over");
                return;
            }
        }
        self.conflict = None;
        let mut next = election::claimed(
            self.lease.as_ref(),
            &self.namespace,
            &self.c.gateway,
            &self.node,
            self.timing.lease_seconds,
            reason.as_deref(),
            k8s_openapi::jiff::Timestamp::now(),
        );
        match arp::mac_of(&self.c.dev) {
            Ok(mac) => {
                next.annotations_mut()
                    .insert(election::HOLDER_MAC.to_owned(), mac.to_string());
            }
            Err(e) => {
                debug!(error = %e, "cannot read the underlay MAC");
                next.annotations_mut().remove(election::HOLDER_MAC);
            }
        }
        if next.metadata.owner_references.is_none() && !self.c.gateway_uid.is_empty() {
            // Deleting the gateway deletes its Lease.
            next.metadata.owner_references = Some(vec![OwnerReference {
                api_version: OverlayGateway::api_version(&()).into_owned(),
                kind: OverlayGateway::kind(&()).into_owned(),
                name: self.c.gateway.clone(),
                uid: self.c.gateway_uid.clone(),
                ..OwnerReference::default()
            }]);
        }
        match self.write(&next, self.patient()).await {
            Ok(stored) => {
                info!(gateway = %self.c.gateway, vip = %self.c.vips, reason = ?reason, "took the VIP");
                self.note(Some(stored));
                self.last_renewed = Some(Instant::now());
                self.announcements = 3;
                self.hold(netlink).await;
            }
            Err(election::WriteError::Conflict) => {
                debug!(gateway = %self.c.gateway, "another candidate claimed first");
                if let Ok(l) = election::read(&self.api, &self.c.gateway).await {
                    self.note(l);
                }
            }
            Err(e @ election::WriteError::Unavailable { .. }) => {
                debug!(gateway = %self.c.gateway, error = %e, "cannot claim the VIP yet");
            }
            Err(e) => warn!(gateway = %self.c.gateway, error = %e, "cannot claim the VIP"),
        }
    }

    async fn release(&mut self, reason: &'static str) {
        let Some(lease) = self.lease.as_ref() else {
            return;
        };
        if election::holder(lease) != Some(self.node.as_str()) {
            return;
        }
        let next = election::released(lease, reason, k8s_openapi::jiff::Timestamp::now());
        match self.write(&next, self.patient()).await {
            Ok(stored) => {
                info!(gateway = %self.c.gateway, %reason, "released the VIP");
                self.note(Some(stored));
            }
            Err(e) => {
                debug!(gateway = %self.c.gateway, error = %e, "cannot release the claim; it lapses");
            }
        }
        self.last_renewed = None;
    }

    async fn quit(&mut self, netlink: &Netlink, reason: &'static str) {
        if let Ok(link) = vips::read(netlink, &self.c.dev, self.c.vips).await {
            self.drop_vip(netlink, link.any).await;
        }
        self.release(reason).await;
        info!(gateway = %self.c.gateway, %reason, "no longer a candidate bridge host");
    }

    async fn report_conflict(&self, vip: std::net::IpAddr, mac: crate::model::Mac) {
        let message = format!(
            "VIP {vip} is answered by {mac} on {} although no candidate has held it for {} s: another machine uses the address; choose a free VIP or remove it there",
            self.c.dev,
            self.changed.elapsed().as_secs()
        );
        warn!(gateway = %self.c.gateway, "{message}");
        // The gateway's status says so too (VipInUse), through the unheld Lease: a mark
        // any candidate may leave, which the next claim clears.
        if self.holder().is_none() {
            let note = format!(
                "{mac} answered {} for {vip} on node {}'s segment ({})",
                vips::protocol(vip),
                self.node,
                self.c.dev
            );
            let marked = election::marked_in_use(
                self.lease.as_ref(),
                &self.namespace,
                &self.c.gateway,
                &note,
            );
            if let Err(e) = self.write(&marked, Duration::from_secs(5)).await {
                debug!(gateway = %self.c.gateway, error = ?e, "cannot mark the VIP in use on the Lease");
            }
        }
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(OverlayGateway::api_version(&()).into_owned()),
            kind: Some(OverlayGateway::kind(&()).into_owned()),
            name: Some(self.c.gateway.clone()),
            uid: Some(self.c.gateway_uid.clone()),
            ..Default::default()
        };
        self.events
            .publish(
                &reference,
                Record {
                    kind: Kind::Warning,
                    reason: reasons::VIP_CONFLICT,
                    action: "Elect",
                    note: message,
                    related: None,
                },
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(holder: Option<&'a str>, quiet_ms: u64, carrier: bool) -> View<'a> {
        View {
            me: "node-a",
            exists: true,
            holder,
            quiet: Duration::from_millis(quiet_ms),
            carrier,
            release_reason: None,
        }
    }

    #[test]
    fn timing_follows_the_lease() {
        let t = Timing::for_lease(2);
        assert_eq!(t.renew_every, Duration::from_millis(200));
        assert_eq!(t.suspect_after, Duration::from_millis(400));
        assert_eq!(t.vip_lifetime_seconds, 1);
        let t = Timing::for_lease(30);
        assert_eq!(t.renew_every, Duration::from_secs(3));
        assert_eq!(t.vip_lifetime_seconds, 15);
    }

    #[test]
    fn a_holder_rides_out_an_unavailable_server_but_not_a_refusal() {
        let t = Timing::for_lease(2);
        let ms = Duration::from_millis;
        assert_eq!(
            after_failure(true, Some(ms(5_000)), &t),
            AfterFailure::RideOut
        );
        assert_eq!(after_failure(true, None, &t), AfterFailure::RideOut);
        assert_eq!(after_failure(false, Some(ms(300)), &t), AfterFailure::Retry);
        assert_eq!(
            after_failure(false, Some(ms(1_000)), &t),
            AfterFailure::LetGo
        );
        assert_eq!(after_failure(false, None, &t), AfterFailure::LetGo);
    }

    #[test]
    fn steps_follow_holder_silence_and_carrier() {
        let t = Timing::for_lease(2);
        let cases = [
            (view(Some("node-a"), 0, true), Step::Renew),
            (view(Some("node-a"), 0, false), Step::Release("LinkDown")),
            (view(Some("node-b"), 100, true), Step::Follow),
            (
                view(Some("node-b"), 700, true),
                Step::ProbeThenClaim(Some("HostUnresponsive".into())),
            ),
            (view(Some("node-b"), 700, false), Step::Follow),
            (view(None, 0, true), Step::ProbeThenClaim(None)),
            (
                View {
                    release_reason: Some("LinkDown"),
                    ..view(None, 0, true)
                },
                Step::ProbeThenClaim(Some("LinkDown".into())),
            ),
            (
                View {
                    exists: false,
                    ..view(None, 0, true)
                },
                Step::ProbeThenClaim(None),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(decide(&v, &t), want, "{v:?}");
        }
    }

    fn gateway(
        name: &str,
        network: &str,
        vip: &str,
        selector: serde_json::Value,
    ) -> OverlayGateway {
        let mut g = OverlayGateway::new(
            name,
            serde_json::from_value(serde_json::json!({
                "network": network, "strategy": "BridgeHosts",
                "bridgeHosts": {"nodeSelector": selector, "vip": vip},
            }))
            .expect("spec"),
        );
        g.metadata.uid = Some(format!("uid-{name}"));
        g
    }

    #[test]
    fn a_node_is_a_candidate_when_selected_and_on_the_vips_segment() {
        let own: NodeSubnet = serde_json::from_value(serde_json::json!({
            "apiVersion": "causeway.dev/v1alpha1", "kind": "NodeSubnet",
            "metadata": {"name": "overlay-node-a"},
            "spec": {"network": "overlay", "nodeName": "node-a", "cidr": "10.247.0.0/24",
                     "nodeAddress": "192.168.50.11"},
        }))
        .expect("subnet");
        let bridge = serde_json::json!({"matchLabels": {"bridge": "true"}});
        let gws: Vec<std::sync::Arc<OverlayGateway>> = [
            gateway("office", "overlay", "192.168.50.250", bridge.clone()),
            gateway("elsewhere", "overlay", "192.168.70.250", bridge.clone()),
            gateway("other-net", "routed", "192.168.50.251", bridge.clone()),
            gateway(
                "unselected",
                "overlay",
                "192.168.50.252",
                serde_json::json!({"matchLabels": {"x": "y"}}),
            ),
            gateway("own-address", "overlay", "192.168.50.11", bridge.clone()),
            gateway("router", "overlay", "192.168.50.1", bridge.clone()),
            gateway("api-server", "overlay", "192.168.50.2", bridge.clone()),
            gateway("broadcast", "overlay", "192.168.50.255", bridge.clone()),
            gateway("dual-stack", "overlay", "192.168.50.253", bridge.clone()),
            gateway("router6", "overlay", "192.168.50.254", bridge.clone()),
            gateway("api-server6", "overlay", "192.168.50.249", bridge.clone()),
            gateway("off-segment6", "overlay", "192.168.50.248", bridge),
        ]
        .into_iter()
        .map(std::sync::Arc::new)
        .map(|mut g| {
            let secondary = match g.metadata.name.as_deref() {
                Some("dual-stack") => "fd00:50::250",
                Some("router6") => "fd00:50::1",
                Some("api-server6") => "fd00:50::2",
                Some("off-segment6") => "fd00:70::250",
                _ => return g,
            };
            if let Some(b) = std::sync::Arc::make_mut(&mut g).spec.bridge_hosts.as_mut() {
                b.secondary_vip = Some(secondary.into());
            }
            g
        })
        .collect();
        let labels = BTreeMap::from([("bridge".to_owned(), "true".to_owned())]);
        let subnets = [std::sync::Arc::new(own.clone())];
        let routers = std::collections::BTreeSet::from(["192.168.50.1".parse().expect("ip")]);
        let routers6 = std::collections::BTreeSet::from(["fd00:50::1".parse().expect("ip")]);
        let ranges: Vec<IpNet> = ["10.247.0.0/16", "fd00:10:247::/56"]
            .iter()
            .map(|r| r.parse().expect("net"))
            .collect();
        let known = crate::join::Known {
            subnets: &subnets,
            api_servers: &["192.168.50.2".parse().expect("ip")],
            api_servers6: &["fd00:50::2".parse().expect("ip")],
            routers: &routers,
            routers6: &routers6,
            ranges: &ranges,
        };
        let segments: Vec<IpNet> = ["192.168.50.0/24", "fd00:50::/64"]
            .iter()
            .map(|r| r.parse().expect("net"))
            .collect();
        let found = candidacies(&gws, &own, &labels, "eth0", &segments, &known);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["dual-stack", "office"]);
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert_eq!(
            found["office"],
            Candidacy {
                gateway: "office".into(),
                gateway_uid: "uid-office".into(),
                vips: Vips {
                    primary: ip("192.168.50.250"),
                    secondary: None
                },
                dev: "eth0".into(),
                lease_seconds: 2,
            }
        );
        assert_eq!(found["dual-stack"].vips.secondary, Some(ip("fd00:50::250")));
        // Without an IPv6 segment, the node cannot hold the IPv6 VIP.
        let found = candidacies(&gws, &own, &labels, "eth0", &segments[..1], &known);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["office"]);
    }

    #[test]
    fn snat_clients_are_those_of_snat_gateways_this_node_is_a_candidate_for_of_both_families() {
        let bridge = serde_json::json!({"matchLabels": {"bridge": "true"}});
        let with = |name: &str, snat: bool, clients: &[&str]| {
            let mut g = gateway(name, "overlay", "192.168.50.250", bridge.clone());
            g.spec.snat = snat;
            g.spec.client_cidrs = clients.iter().map(|c| (*c).to_owned()).collect();
            std::sync::Arc::new(g)
        };
        let gws = [
            with(
                "dual",
                true,
                &["192.168.77.0/24", "fd00:77::/64", " fd00:78::/64 "],
            ),
            with("routed-back", false, &["192.168.79.0/24", "fd00:79::/64"]),
            with("not-here", true, &["192.168.80.0/24", "fd00:80::/64"]),
            with("v4-vip-only", true, &["192.168.81.0/24", "fd00:81::/64"]),
            with("v6-vip-only", true, &["192.168.82.0/24", "fd00:82::/64"]),
        ];
        let candidacy = |name: &str, secondary: Option<&str>| Candidacy {
            gateway: name.into(),
            gateway_uid: format!("uid-{name}"),
            vips: Vips {
                primary: if name == "v6-vip-only" {
                    "fd00:50::252".parse().expect("ip")
                } else {
                    "192.168.50.250".parse().expect("ip")
                },
                secondary: secondary.map(|v| v.parse().expect("ip")),
            },
            dev: "eth0".into(),
            lease_seconds: 2,
        };
        let candidacies = BTreeMap::from([
            ("dual".to_owned(), candidacy("dual", Some("fd00:50::250"))),
            (
                "routed-back".to_owned(),
                candidacy("routed-back", Some("fd00:50::251")),
            ),
            ("v4-vip-only".to_owned(), candidacy("v4-vip-only", None)),
            // An IPv6 network's gateway: its vip is IPv6.
            ("v6-vip-only".to_owned(), candidacy("v6-vip-only", None)),
        ]);
        let net = |s: &str| s.parse::<IpNet>().expect("net");
        assert_eq!(
            snat_clients(&gws, &candidacies),
            vec![
                net("192.168.77.0/24"),
                net("fd00:77::/64"),
                net("fd00:78::/64"),
                // Without a VIP of their family, clients have no way in: nothing to masquerade.
                net("192.168.81.0/24"),
                net("fd00:82::/64"),
            ]
        );
    }
}
