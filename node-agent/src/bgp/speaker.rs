//! [`Speaker`], the BGP speaker's public face: a manager task owns one session task per peer;
//! `start`, `update` and `shutdown` send it commands, `snapshot` and `changes` read the state
//! the sessions write.
//!
//! Reconfiguration follows `config::plan`: sessions of removed peers are closed with a Cease
//! (peer de-configured), sessions whose OPEN would change are closed (Cease, other
//! configuration change) and started again, new peers get a session, and every remaining
//! session receives the new timers and routes, sending UPDATEs only for what changed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::future::join_all;
use netgauze_bgp_pkt::notification::CeaseError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::config::{self, Advertisement, Change, Identity, SpeakerConfig, Timers};
use super::session::SessionHandle;
use super::state::{Shared, Snapshot};

/// The embedded BGP speaker.
#[derive(Debug)]
pub struct Speaker {
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
enum Control {
    Update(Box<SpeakerConfig>),
    Shutdown,
}

impl Speaker {
    /// Starts sessions (active side: the speaker connects to each peer's address and port; it
    /// does not listen), in the caller's network namespace, or in the named one
    /// (`/run/netns/NAME`, for tests and `--netns`).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the speaker runs as tasks on it, as `tokio::spawn` does.
    pub fn start(config: SpeakerConfig, netns: Option<String>) -> Speaker {
        let shared = Arc::new(Shared::default());
        let (control, commands) = mpsc::unbounded_channel();
        let manager = Manager {
            netns,
            shared: Arc::clone(&shared),
            sessions: BTreeMap::new(),
        };
        let task = tokio::spawn(manager.run(config, commands));
        Speaker {
            shared,
            control,
            task,
        }
    }

    /// Reconfigures live: peers added or removed (a removed peer's session is closed with a
    /// Cease NOTIFICATION), advertised prefixes changed (UPDATEs and withdrawals sent), timers
    /// changed (used by the next connection). Sessions whose peer configuration is unchanged
    /// stay up.
    pub fn update(&self, config: SpeakerConfig) {
        if self
            .control
            .send(Control::Update(Box::new(config)))
            .is_err()
        {
            warn!("BGP speaker has stopped; configuration update ignored");
        }
    }

    /// Sessions and learned routes right now.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// A receiver that is told whenever the snapshot changes (a session's state or message, or
    /// the learned routes). The value is a change counter.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.subscribe()
    }

    /// Closes every session with a Cease NOTIFICATION (administrative shutdown) and stops.
    pub async fn shutdown(self) {
        let _ = self.control.send(Control::Shutdown);
        if let Err(error) = self.task.await {
            warn!(%error, "BGP speaker task failed");
        }
    }
}

struct Manager {
    netns: Option<String>,
    shared: Arc<Shared>,
    sessions: BTreeMap<Ipv4Addr, (Identity, SessionHandle)>,
}

impl Manager {
    async fn run(mut self, config: SpeakerConfig, mut commands: mpsc::UnboundedReceiver<Control>) {
        self.reconcile(&config).await;
        while let Some(command) = commands.recv().await {
            // Only the newest of several queued configurations matters.
            let mut latest = command;
            while let Ok(next) = commands.try_recv() {
                if matches!(latest, Control::Shutdown) {
                    break;
                }
                latest = next;
            }
            match latest {
                Control::Update(config) => self.reconcile(&config).await,
                Control::Shutdown => break,
            }
        }
        // Shut down, or the Speaker was dropped.
        let addresses: Vec<Ipv4Addr> = self.sessions.keys().copied().collect();
        self.stop(&addresses, || CeaseError::AdministrativeShutdown {
            value: Box::new([]),
        })
        .await;
        info!("BGP speaker stopped");
    }

    async fn reconcile(&mut self, config: &SpeakerConfig) {
        let timers = Timers::from_config(config);
        if (timers.hold_time, timers.keepalive) != (config.hold_time, config.keepalive) {
            warn!(
                hold_time = config.hold_time,
                keepalive = config.keepalive,
                used_hold_time = timers.hold_time,
                used_keepalive = timers.keepalive,
                "BGP timers adjusted: the hold time is 0 or at least 3 s, the keepalive at most a third of it"
            );
        }
        let advertisement = Advertisement::from_config(config);
        let wanted = config::identities(config);
        if wanted.len() != config.peers.len() {
            warn!("BGP peer listed more than once; the first entry is used");
        }
        let running: BTreeMap<Ipv4Addr, Identity> = self
            .sessions
            .iter()
            .map(|(address, (identity, _))| (*address, *identity))
            .collect();

        let changes = config::plan(&running, &wanted);
        let stopped: Vec<Ipv4Addr> = changes
            .iter()
            .filter_map(|change| match change {
                Change::Stop(address) => Some(*address),
                _ => None,
            })
            .collect();
        let restarted: Vec<Ipv4Addr> = changes
            .iter()
            .filter_map(|change| match change {
                Change::Restart(identity) => Some(identity.peer.address),
                _ => None,
            })
            .collect();
        self.stop(&stopped, || CeaseError::PeerDeConfigured {
            value: Box::new([]),
        })
        .await;
        self.stop(&restarted, || CeaseError::OtherConfigurationChange {
            value: Box::new([]),
        })
        .await;

        let mut started = Vec::new();
        for change in &changes {
            match change {
                Change::Stop(address) => info!(peer = %address, "BGP peer removed"),
                Change::Start(identity) | Change::Restart(identity) => {
                    info!(
                        peer = %identity.peer.address,
                        asn = identity.peer.asn,
                        port = identity.peer.port,
                        local_asn = identity.local_asn,
                        "BGP session starting"
                    );
                    let handle = SessionHandle::spawn(
                        *identity,
                        timers,
                        advertisement.clone(),
                        self.netns.clone(),
                        Arc::clone(&self.shared),
                    );
                    self.sessions
                        .insert(identity.peer.address, (*identity, handle));
                    started.push(identity.peer.address);
                }
            }
        }
        // Sessions just started already have this configuration.
        for (address, (_, handle)) in &self.sessions {
            if !started.contains(address) {
                handle.configure(timers, advertisement.clone());
            }
        }
    }

    /// Closes these sessions concurrently with a Cease, and forgets their state.
    async fn stop(&mut self, addresses: &[Ipv4Addr], cease: impl Fn() -> CeaseError) {
        let handles: Vec<SessionHandle> = addresses
            .iter()
            .filter_map(|address| self.sessions.remove(address))
            .map(|(_, handle)| handle)
            .collect();
        join_all(handles.into_iter().map(|handle| handle.stop(cease()))).await;
        for address in addresses {
            self.shared.remove(*address);
        }
    }
}
