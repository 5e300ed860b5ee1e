//! One BGP session: the loop that drives a NetGauze `Peer` for one configured neighbour.
//!
//! NetGauze runs the connection's state machine (OPEN, KEEPALIVE, hold timer, NOTIFICATION on
//! errors). This loop starts it and acts on the events `Peer::run` returns:
//! - reports every state change to [`Shared`], with the reason when the session is not
//!   Established;
//! - on Established, sends our routes; when the caller changes them, sends the difference;
//! - feeds received UPDATEs to the peer's Adj-RIB-In, and empties it when the session ends;
//! - when a connection attempt ends (TCP failure, NOTIFICATION, hold timer, ...), waits with
//!   [`Backoff`] and starts a fresh `Peer`: NetGauze's `Peer` does not restart by itself;
//! - on stop, sends a Cease NOTIFICATION and lingers until the peer closes (at most
//!   [`LINGER`]), so our close does not become a reset that could discard the NOTIFICATION.
//!
//! Commands and the Peer's next event are awaited together, commands first, as NetGauze's own
//! `PeerController` does. New configuration before Established is only stored, and the same
//! `Peer::run` future goes on; a command that needs the `Peer` (new routes while Established,
//! stop) drops it while it waits for a read or a timer, which loses nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::notification::{BgpNotificationMessage, CeaseError};
use netgauze_bgp_speaker::events::{BgpEvent, UpdateTreatment};
use netgauze_bgp_speaker::fsm::FsmState;
use netgauze_bgp_speaker::peer::{PeerAdminEvents, PeerResult};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::config::{Advertisement, Identity, Timers};
use super::message::{self, Outbound};
use super::peer::{BgpPeer, Connector, new_peer};
use super::rib::{self, Receiver};
use super::state::Shared;

/// Longest wait for the peer to close after our Cease.
const LINGER: Duration = Duration::from_secs(1);

/// What the speaker tells a running session.
#[derive(Debug)]
pub(crate) enum Command {
    /// Timers for the next connection; routes to advertise now (if Established) and on every
    /// later connection.
    Configure {
        timers: Timers,
        advertisement: Advertisement,
    },
    /// Close with this Cease and end.
    Stop(CeaseError),
}

/// A running session task.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl SessionHandle {
    /// Starts the session's task on the current tokio runtime.
    pub fn spawn(
        identity: Identity,
        timers: Timers,
        advertisement: Advertisement,
        netns: Option<String>,
        shared: Arc<Shared>,
    ) -> Self {
        let (commands, received) = mpsc::unbounded_channel();
        let session = Session {
            identity,
            timers,
            advertisement,
            netns,
            shared,
            backoff: Backoff::default(),
        };
        let task = tokio::spawn(session.run(received));
        Self { commands, task }
    }

    pub fn configure(&self, timers: Timers, advertisement: Advertisement) {
        // A send fails only when the task has ended, which it does only when told to stop.
        let _ = self.commands.send(Command::Configure {
            timers,
            advertisement,
        });
    }

    /// Closes the session with `cease` and waits for its task to end.
    pub async fn stop(self, cease: CeaseError) {
        let _ = self.commands.send(Command::Stop(cease));
        if let Err(error) = self.task.await {
            warn!(%error, "BGP session task failed");
        }
    }
}

/// How a connection attempt ended.
enum Ended {
    /// Told to stop: the task ends.
    Stopped,
    /// The connection failed or closed: back off and try again.
    Failed { reason: String },
}

/// What woke the attempt loop.
enum Next {
    Command(Option<Command>),
    Event(PeerResult<SocketAddr>),
    /// Our own keepalive interval elapsed while Established.
    Keepalive,
}

struct Session {
    identity: Identity,
    timers: Timers,
    advertisement: Advertisement,
    netns: Option<String>,
    shared: Arc<Shared>,
    backoff: Backoff,
}

impl Session {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.report(FsmState::Idle, None);
        loop {
            match self.attempt(&mut commands).await {
                Ended::Stopped => return,
                Ended::Failed { reason } => {
                    self.shared.clear_routes(self.identity.peer.address);
                    let delay = self.backoff.next_delay();
                    info!(
                        peer = %self.identity.peer.address,
                        asn = self.identity.peer.asn,
                        %reason,
                        ?delay,
                        "BGP session down; connecting again after the delay"
                    );
                    self.report(FsmState::Idle, Some(reason));
                    if self.wait(delay, &mut commands).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps `delay` while taking new configuration; true if told to stop.
    async fn wait(
        &mut self,
        delay: Duration,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return false,
                command = commands.recv() => match command {
                    Some(Command::Configure { timers, advertisement }) => {
                        self.timers = timers;
                        self.advertisement = advertisement;
                    }
                    Some(Command::Stop(_)) | None => return true,
                },
            }
        }
    }

    /// One connection attempt with a fresh `Peer`, until it fails or the session is stopped.
    async fn attempt(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) -> Ended {
        let connector = Connector::new(self.netns.clone());
        let mut peer = new_peer(&self.identity, self.timers, connector.clone());
        peer.add_admin_event(PeerAdminEvents::ManualStart);

        let address = self.identity.peer.address;
        let receiver = Receiver {
            local_asn: self.identity.local_asn,
            router_id: self.identity.router_id,
            ebgp: self.identity.ebgp(),
        };
        let mut outbound = Outbound {
            local_asn: self.identity.local_asn,
            ebgp: self.identity.ebgp(),
            asn4: false,
        };
        // What the peer holds from us on this connection.
        let mut sent: Option<Advertisement> = None;
        let mut reported = FsmState::Idle;
        // NetGauze sends keepalives every third of the negotiated hold time; when the
        // configured interval is shorter, this sends the extra ones (RFC 4271 allows any
        // interval up to that third).
        let mut keepalive =
            tokio::time::interval(Duration::from_secs(u64::from(self.timers.keepalive).max(1)));
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            let established = reported == FsmState::Established && self.timers.keepalive > 0;
            let next = {
                let run = peer.run();
                tokio::pin!(run);
                loop {
                    tokio::select! {
                        biased;
                        _ = keepalive.tick(), if established => break Next::Keepalive,
                        command = commands.recv() => match command {
                            // Not Established: nothing to send, so keep the same `run` going
                            // rather than interrupt a connect or a handshake.
                            Some(Command::Configure { timers, advertisement })
                                if reported != FsmState::Established =>
                            {
                                self.timers = timers;
                                self.advertisement = advertisement;
                            }
                            command => break Next::Command(command),
                        },
                        result = &mut run => break Next::Event(result),
                    }
                }
            };
            let event = match next {
                Next::Command(Some(Command::Configure {
                    timers,
                    advertisement,
                })) => {
                    self.timers = timers;
                    self.advertisement = advertisement;
                    if peer.fsm_state() == FsmState::Established
                        && let Err(reason) =
                            send_routes(&mut peer, &mut sent, &self.advertisement, outbound).await
                    {
                        return Ended::Failed { reason };
                    }
                    continue;
                }
                Next::Command(Some(Command::Stop(cease))) => {
                    close(&mut peer, cease).await;
                    return Ended::Stopped;
                }
                Next::Command(None) => {
                    close(
                        &mut peer,
                        CeaseError::AdministrativeShutdown {
                            value: Box::new([]),
                        },
                    )
                    .await;
                    return Ended::Stopped;
                }
                Next::Event(Err(error)) => {
                    return Ended::Failed {
                        reason: format!("BGP state machine error: {error}"),
                    };
                }
                Next::Event(Ok(event)) => event,
                Next::Keepalive => {
                    if let Err(error) = peer.send_bgp_message(BgpMessage::KeepAlive).await {
                        return Ended::Failed {
                            reason: format!("cannot send a KEEPALIVE: {error}"),
                        };
                    }
                    continue;
                }
            };

            match &event {
                BgpEvent::BGPOpen(open) => outbound.asn4 = message::offers_asn4(open),
                BgpEvent::UpdateMsg(update, treatment) => {
                    let usable = matches!(
                        treatment,
                        UpdateTreatment::Normal | UpdateTreatment::AttributeDiscard
                    );
                    let changes = rib::changes(update, usable, receiver);
                    debug!(peer = %address, ?changes, "BGP UPDATE received");
                    self.shared.update_routes(address, receiver.ebgp, changes);
                }
                _ => {}
            }

            let state = peer.fsm_state();
            if state != reported {
                reported = state;
                self.report(state, None);
                if state == FsmState::Established {
                    info!(peer = %address, asn = self.identity.peer.asn, "BGP session established");
                    self.backoff.reset();
                    if let Err(reason) =
                        send_routes(&mut peer, &mut sent, &self.advertisement, outbound).await
                    {
                        return Ended::Failed { reason };
                    }
                }
            }

            if let Some(note) = message::attempt_note(&event) {
                self.report(state, Some(note));
            }
            if let Some(reason) = message::attempt_end(
                &event,
                state,
                self.identity.peer.asn,
                connector.take_error(),
            ) {
                return Ended::Failed { reason };
            }
        }
    }

    fn report(&self, state: FsmState, message: Option<String>) {
        self.shared.set_state(
            self.identity.peer.address,
            self.identity.peer.asn,
            message::state_name(state),
            message,
        );
    }
}

/// Sends the UPDATEs that take the peer from `sent` to `wanted`.
async fn send_routes(
    peer: &mut BgpPeer,
    sent: &mut Option<Advertisement>,
    wanted: &Advertisement,
    outbound: Outbound,
) -> Result<(), String> {
    let updates =
        message::updates(sent.as_ref(), wanted, outbound).map_err(|error| error.to_string())?;
    for update in updates {
        debug!(?update, "BGP UPDATE sent");
        peer.send_bgp_message(BgpMessage::Update(update))
            .await
            .map_err(|error| format!("cannot send an UPDATE: {error}"))?;
    }
    *sent = Some(wanted.clone());
    Ok(())
}

/// Sends the Cease NOTIFICATION if a connection is up, then reads until the peer closes (at
/// most [`LINGER`]) so unread KEEPALIVEs do not turn our close into a reset.
async fn close(peer: &mut BgpPeer, cease: CeaseError) {
    if !matches!(
        peer.fsm_state(),
        FsmState::OpenSent | FsmState::OpenConfirm | FsmState::Established
    ) {
        return;
    }
    let notification = BgpMessage::Notification(BgpNotificationMessage::CeaseError(cease));
    if peer.send_bgp_message(notification).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            match peer.run().await {
                Ok(BgpEvent::TcpConnectionFails) | Err(_) => break,
                Ok(_) if matches!(peer.fsm_state(), FsmState::Idle | FsmState::Active) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
