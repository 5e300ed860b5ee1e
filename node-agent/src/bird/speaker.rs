//! [`Speaker`]: BIRD as the node's BGP speaker behind the face the agent uses (`start`,
//! `update`, `snapshot`, `changes`, `shutdown`). A supervisor task owns the BIRD process:
//!
//! - **start**: kills a BIRD an earlier agent left on the directory, writes and checks the
//!   configuration ([`render`](super::render), `bird -p`), starts BIRD and connects to its
//!   control socket; in graceful-restart recovery (`-R`) when an earlier BIRD may have left
//!   routes at GR-aware routers (the `announced` marker).
//! - **update**: renders the new configuration; when the text changed, checks it with
//!   `bird -p` and only then asks BIRD to `configure` it. BIRD restarts only the sessions
//!   whose own configuration changed; a configuration BIRD refuses is reported (log and
//!   sessions' message) and the one in force stays.
//! - **poll**: every 250 ms `show protocols all`; the routes (`show route where source =
//!   RTS_BGP all`) when a session's state or its received-update counters moved, and every
//!   5 s regardless. `changes()` moves only when the snapshot differs.
//! - **crash**: when BIRD exits, every session shows why, and BIRD is started again (in
//!   recovery) after 1 s, doubling to 30 s while it keeps failing.
//! - **stop**: [`Speaker::shutdown`] closes every session with a Cease (administrative
//!   shutdown: routers withdraw the node's routes at once); [`Speaker::stop_for_restart`]
//!   makes BIRD exit without withdrawing (`graceful restart`), so GR-aware routers keep the
//!   node's routes until the next BIRD sends them again. Either way the process is gone when
//!   the call returns, and dropping the speaker kills it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::control::{self, Control};
use super::error::BirdError;
use super::parse::{self, Protocol};
use super::process::{self, Options, Paths};
use super::render;
use super::sessions::Tracker;
use crate::bgp::{Learned, SessionState, Snapshot, SpeakerConfig};

/// How often BIRD's sessions are read.
const POLL: Duration = Duration::from_millis(250);
/// Routes are read at least this often, even when no counter moved.
const ROUTES_AT_LEAST: Duration = Duration::from_secs(5);
/// The first delay before starting a BIRD that exited, doubled while it keeps failing.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A BIRD that ran this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);
/// How long BIRD may take to close its sessions and exit when asked to.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The node's BGP speaker: BIRD, supervised.
#[derive(Debug)]
pub struct Speaker {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
enum Command {
    Update(Box<SpeakerConfig>),
    Stop(Stop),
}

/// How BIRD stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Cease to every peer; routes withdrawn.
    Withdraw,
    /// Graceful restart: no NOTIFICATION; GR-aware routers keep the routes.
    Restart,
}

impl Speaker {
    /// Starts BIRD with `config` (see the module docs), in `options.netns` when named.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime: the supervisor is a task on it, as `tokio::spawn` is.
    #[must_use]
    pub fn start(config: SpeakerConfig, options: Options) -> Speaker {
        let shared = Arc::new(Shared::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            paths: Paths::new(&options.dir),
            options,
            shared: Arc::clone(&shared),
            config,
            rendered: None,
            bird: None,
            tracker: Tracker::default(),
            problem: None,
            protocols: BTreeMap::new(),
            learned: Learned::new(),
            routes_read: None,
            backoff: FIRST_BACKOFF,
            restart_at: None,
        };
        let task = tokio::spawn(supervisor.run(receiver));
        Speaker {
            shared,
            commands,
            task,
        }
    }

    /// Reconfigures BIRD with a whole new configuration. Sessions whose peer configuration
    /// is unchanged stay up; new prefixes are announced and old ones withdrawn without
    /// restarting any session. Changing the local AS, router ID or timers restarts the
    /// sessions concerned (BIRD's rule for a changed protocol).
    pub fn update(&self, config: SpeakerConfig) {
        if self
            .commands
            .send(Command::Update(Box::new(config)))
            .is_err()
        {
            warn!("BGP speaker has stopped; configuration update ignored");
        }
    }

    /// Sessions and learned routes right now.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// A receiver told whenever the snapshot changes (a session's state or message, or the
    /// learned routes). The value is a change counter.
    #[must_use]
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// The running BIRD's process id, if one runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        Some(self.shared.pid.load(Ordering::Relaxed)).filter(|pid| *pid != 0)
    }

    /// How many times BIRD was started again after it exited by itself.
    #[must_use]
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Closes every session with a Cease (administrative shutdown), so routers withdraw the
    /// node's routes, and stops BIRD.
    pub async fn shutdown(self) {
        self.stop(Stop::Withdraw).await;
    }

    /// Stops BIRD without withdrawing anything (BIRD's `graceful restart`): routers that
    /// support graceful restart keep the node's routes until the next BIRD, started on the
    /// same directory, has sent them again (or 120 s pass). For an agent that is restarting.
    pub async fn stop_for_restart(self) {
        self.stop(Stop::Restart).await;
    }

    async fn stop(self, how: Stop) {
        let _ = self.commands.send(Command::Stop(how));
        if let Err(error) = self.task.await {
            warn!(%error, "BGP speaker task failed");
        }
    }
}

/// What the supervisor publishes.
#[derive(Debug)]
struct Shared {
    published: Mutex<Snapshot>,
    changes: watch::Sender<u64>,
    pid: AtomicU32,
    restarts: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            published: Mutex::default(),
            changes: watch::Sender::new(0),
            pid: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
        }
    }
}

impl Shared {
    fn snapshot(&self) -> Snapshot {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes `snapshot`; the change counter moves only when it differs.
    fn publish(&self, snapshot: Snapshot) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *published != snapshot {
            *published = snapshot;
            drop(published);
            self.changes
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }
}

struct Running {
    child: Child,
    control: Option<Control>,
    started: Instant,
}

struct Supervisor {
    options: Options,
    paths: Paths,
    shared: Arc<Shared>,
    config: SpeakerConfig,
    /// The configuration text BIRD runs with.
    rendered: Option<String>,
    bird: Option<Running>,
    tracker: Tracker,
    /// Why BIRD is not running as configured, shown as every session's message.
    problem: Option<String>,
    protocols: BTreeMap<String, Protocol>,
    learned: Learned,
    /// When routes were last read, and the counters then.
    routes_read: Option<(Instant, Signature)>,
    backoff: Duration,
    restart_at: Option<Instant>,
}

impl Supervisor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        if let Err(error) = process::prepare(&self.options.dir) {
            self.fail(&error);
        } else {
            process::kill_leftover(&self.paths).await;
            let recovering = self.paths.announced.exists();
            self.launch(recovering).await;
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = loop {
            let exited = async {
                match self.bird.as_mut() {
                    Some(running) => running.child.wait().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Update(config)) => {
                        // Only the newest of several queued configurations matters.
                        let mut config = config;
                        let mut stop = None;
                        while let Ok(next) = commands.try_recv() {
                            match next {
                                Command::Update(newer) => config = newer,
                                Command::Stop(how) => stop = Some(how),
                            }
                        }
                        if let Some(how) = stop {
                            break Some(how);
                        }
                        self.reconfigure(*config).await;
                        self.poll().await;
                    }
                    Some(Command::Stop(how)) => break Some(how),
                    None => break None,
                },
                status = exited => {
                    let status = status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
                    self.exited(&status);
                }
                _ = tick.tick() => {
                    if self.bird.is_none() && self.restart_at.is_some_and(|at| Instant::now() >= at) {
                        self.restart_at = None;
                        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
                        self.launch(true).await;
                    }
                    self.poll().await;
                }
            }
        };
        self.stop(stop).await;
    }

    /// Installs the configuration and starts BIRD; on failure, says why and schedules
    /// another attempt.
    async fn launch(&mut self, recovering: bool) {
        let text = render::render(&self.config);
        let result = async {
            process::install_config(&self.options, &self.paths, &text).await?;
            process::start(&self.options, &self.paths, recovering).await
        }
        .await;
        match result {
            Ok((child, control)) => {
                self.shared
                    .pid
                    .store(child.id().unwrap_or(0), Ordering::Relaxed);
                // From now on routers may hold routes of this BIRD across its restarts.
                let _ = std::fs::write(&self.paths.announced, b"");
                self.bird = Some(Running {
                    child,
                    control: Some(control),
                    started: Instant::now(),
                });
                self.rendered = Some(text);
                self.problem = None;
                self.routes_read = None;
            }
            Err(error) => {
                self.fail(&error);
                self.schedule_restart(format!("BIRD is not running: {error}"));
            }
        }
    }

    fn fail(&mut self, error: &BirdError) {
        error!(%error, "BGP speaker");
        self.problem = Some(error.to_string());
        self.publish();
    }

    fn exited(&mut self, status: &str) {
        let ran = self
            .bird
            .take()
            .map_or(Duration::ZERO, |running| running.started.elapsed());
        self.shared.pid.store(0, Ordering::Relaxed);
        if ran >= STABLE {
            self.backoff = FIRST_BACKOFF;
        }
        warn!(%status, ran = ?ran, "BIRD exited");
        self.schedule_restart(format!("BIRD exited ({status})"));
    }

    fn schedule_restart(&mut self, why: String) {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.restart_at = Some(Instant::now() + delay);
        self.problem = Some(format!("{why}; starting it again in {delay:?}"));
        self.protocols.clear();
        self.learned.clear();
        self.publish();
    }

    async fn reconfigure(&mut self, config: SpeakerConfig) {
        let text = render::render(&config);
        self.config = config;
        if self.rendered.as_ref() == Some(&text) {
            return;
        }
        let Some(running) = self.bird.as_mut() else {
            // Not running: the next start uses the new configuration.
            return;
        };
        if let Err(error) = process::install_config(&self.options, &self.paths, &text).await {
            error!(%error, "BIRD refused the new configuration; the previous one stays in force");
            self.problem = Some(format!(
                "{error}; the previous configuration stays in force"
            ));
            self.publish();
            return;
        }
        let command = format!(
            "configure {}",
            render::quote(&self.paths.conf.display().to_string())
        );
        let reply = match running.control.as_mut() {
            Some(control) => control.command(&command).await,
            None => match Control::connect(&self.paths.ctl).await {
                Ok(mut control) => {
                    let reply = control.command(&command).await;
                    running.control = Some(control);
                    reply
                }
                Err(error) => Err(error),
            },
        };
        match reply {
            Ok(lines) => {
                info!(reply = %control::reply_text(&lines).trim(), "BIRD reconfigured");
                self.rendered = Some(text);
                self.problem = None;
                self.routes_read = None;
            }
            Err(error) => {
                // The file is in place: a BIRD started again reads it.
                error!(%error, "BIRD did not take the new configuration");
                running.control = None;
                self.problem = Some(error.to_string());
            }
        }
        self.publish();
    }

    /// Reads BIRD's sessions, and its routes when they may have changed; publishes.
    async fn poll(&mut self) {
        let Some(running) = self.bird.as_mut() else {
            self.publish();
            return;
        };
        if running.control.is_none() {
            running.control = Control::connect(&self.paths.ctl).await.ok();
        }
        let Some(control) = running.control.as_mut() else {
            return;
        };
        match read(control, self.routes_read.as_ref()).await {
            Ok((protocols, routes)) => {
                self.protocols = protocols;
                if let Some(routes) = routes {
                    self.learned = routes;
                    self.routes_read = Some((Instant::now(), signature(&self.protocols)));
                }
            }
            Err(error) => {
                warn!(%error, "cannot read BIRD's state; reconnecting");
                running.control = None;
            }
        }
        self.publish();
    }

    fn publish(&mut self) {
        let peers = render::peers(&self.config);
        let sessions: Vec<SessionState> = self.tracker.observe(
            &peers,
            &self.protocols,
            self.problem.as_deref(),
            SystemTime::now(),
        );
        self.shared.publish(Snapshot {
            sessions,
            learned: self.learned.clone(),
        });
    }

    async fn stop(mut self, how: Option<Stop>) {
        let Some(mut running) = self.bird.take() else {
            if how == Some(Stop::Withdraw) {
                let _ = std::fs::remove_file(&self.paths.announced);
            }
            return;
        };
        let command = match how {
            Some(Stop::Withdraw) => Some("down"),
            Some(Stop::Restart) => Some("graceful restart"),
            None => None,
        };
        let asked = match (command, running.control.as_mut()) {
            (Some(command), Some(control)) => control.command(command).await.is_ok(),
            _ => false,
        };
        if !asked {
            let _ = running.child.start_kill();
        }
        process::reap(&mut running.child, &self.paths, EXIT_GRACE).await;
        self.shared.pid.store(0, Ordering::Relaxed);
        if how == Some(Stop::Withdraw) {
            let _ = std::fs::remove_file(&self.paths.announced);
        }
        info!(?how, "BIRD stopped");
    }
}

/// Per session: state and received counters of both channels, to tell whether routes may
/// have changed.
type Signature = BTreeMap<String, (String, (u64, u64), Option<(u64, u64)>)>;

fn signature(protocols: &BTreeMap<String, Protocol>) -> Signature {
    protocols
        .iter()
        .map(|(name, p)| (name.clone(), (p.state.clone(), p.received, p.received6)))
        .collect()
}

type Read = (BTreeMap<String, Protocol>, Option<Learned>);

async fn read(
    control: &mut Control,
    last: Option<&(Instant, Signature)>,
) -> Result<Read, BirdError> {
    let reply = control.command("show protocols all").await?;
    let protocols = parse::protocols(&control::reply_text(&reply));
    let stale = last.is_none_or(|(when, seen)| {
        when.elapsed() >= ROUTES_AT_LEAST || *seen != signature(&protocols)
    });
    let routes = if stale {
        let reply = control
            .command("show route where source = RTS_BGP all")
            .await?;
        Some(parse::routes(&control::reply_text(&reply)))
    } else {
        None
    };
    Ok((protocols, routes))
}
