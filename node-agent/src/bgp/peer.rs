//! A session's NetGauze `Peer`, assembled from our configuration: its properties and timers,
//! the policy that hands it our OPEN, and the connector that opens its TCP connection —
//! inside a named network namespace when asked.
//!
//! A socket belongs to the network namespace of the thread that created it. In a named
//! namespace (tests, `--netns`) the connection is made on a short-lived thread that entered
//! the namespace, the way `Netlink::in_netns` opens its netlink socket, and the connected
//! socket is handed to tokio; the runtime's threads never switch namespace. An agent running
//! in the host's namespace connects directly.

use std::future::{Future, ready};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use netgauze_bgp_pkt::open::BgpOpenMessage;
use netgauze_bgp_speaker::connection::{ActiveConnect, Connection};
use netgauze_bgp_speaker::events::ConnectionEvent;
use netgauze_bgp_speaker::peer::{Peer, PeerConfigBuilder, PeerEvent, PeerPolicy, PeerProperties};
use tokio::net::TcpStream;

use super::codec::Codec;
use super::config::{Identity, Timers};
use super::error::BgpError;
use super::message::open_message;
use crate::netns::{self, describe as describe_netns};

/// NetGauze's `Peer` as our sessions use it: keyed by the peer's address, over TCP.
pub(crate) type BgpPeer = Peer<Ipv4Addr, SocketAddr, TcpStream, Codec, Connector, OpenPolicy>;

/// How long a TCP connect may take. Also NetGauze's ConnectRetryTimer: an unanswered SYN is
/// retried this often without counting as a failed attempt.
const CONNECT_TIMEOUT_SECS: u16 = 5;

/// Hold time while waiting for the peer's OPEN: RFC 4271 §8.2.2 suggests 4 minutes.
const OPEN_HOLD_TIME_SECS: u16 = 240;

/// A new NetGauze `Peer` for one connection attempt: active (it connects, it does not
/// listen), no DelayOpen, our OPEN from [`open_message`].
pub(crate) fn new_peer(identity: &Identity, timers: Timers, connector: Connector) -> BgpPeer {
    let address = SocketAddr::from((identity.peer.address, identity.peer.port));
    let properties = PeerProperties::new(
        identity.local_asn,
        identity.peer.asn,
        identity.router_id,
        address,
        false,
    );
    let config = PeerConfigBuilder::new()
        .connect_retry_duration(CONNECT_TIMEOUT_SECS)
        .open_delay_timer_duration(0)
        .hold_timer_duration(timers.hold_time)
        .hold_timer_duration_large_value(OPEN_HOLD_TIME_SECS)
        .keepalive_timer_duration(timers.keepalive)
        .passive_tcp_establishment(false)
        .send_notif_without_open(true)
        .build();
    let policy = OpenPolicy {
        open: open_message(identity, timers.hold_time),
    };
    Peer::new(identity.peer.address, properties, config, policy, connector)
}

/// Hands NetGauze our OPEN and leaves every event as it is: our decisions are made on the
/// events `Peer::run` returns, in the session loop.
#[derive(Debug)]
pub(crate) struct OpenPolicy {
    open: BgpOpenMessage,
}

impl PeerPolicy<SocketAddr, TcpStream, Codec> for OpenPolicy {
    fn open_message(&mut self) -> impl Future<Output = BgpOpenMessage> + Send {
        ready(self.open.clone())
    }

    fn pre_handle_connection_event_hook(
        &mut self,
        event: ConnectionEvent<SocketAddr>,
        _connection: &Connection<SocketAddr, TcpStream, Codec>,
    ) -> impl Future<Output = ConnectionEvent<SocketAddr>> + Send {
        ready(event)
    }

    fn post_handle_connection_event_hook(
        &self,
        event: ConnectionEvent<SocketAddr>,
        _connection: Option<&Connection<SocketAddr, TcpStream, Codec>>,
    ) -> impl Future<Output = ConnectionEvent<SocketAddr>> + Send {
        ready(event)
    }

    fn pre_handle_peer_event_hook(
        &self,
        event: Option<PeerEvent<SocketAddr, TcpStream>>,
    ) -> impl Future<Output = Option<PeerEvent<SocketAddr, TcpStream>>> + Send {
        ready(event)
    }

    fn post_handle_peer_event_hook(
        &self,
        event: Option<PeerEvent<SocketAddr, TcpStream>>,
    ) -> impl Future<Output = Option<PeerEvent<SocketAddr, TcpStream>>> + Send {
        ready(event)
    }
}

/// Opens the TCP connection for NetGauze, in the caller's or a named network namespace, and
/// keeps the reason of the last failure: NetGauze reduces it to "TCP connection fails".
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    netns: Option<String>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Connector {
    pub fn new(netns: Option<String>) -> Self {
        Self {
            netns,
            last_error: Arc::default(),
        }
    }

    /// Why the last connect failed, in words; reading clears it.
    pub fn take_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl ActiveConnect<SocketAddr, TcpStream, Codec> for Connector {
    async fn connect(&mut self, peer: SocketAddr) -> io::Result<TcpStream> {
        let result = match self.netns.as_deref() {
            None => TcpStream::connect(peer)
                .await
                .map_err(|error| BgpError::Connect {
                    peer,
                    netns: describe_netns(None),
                    error,
                }),
            Some(name) => connect_in_netns(name, peer).await,
        };
        match result {
            Ok(stream) => {
                // BGP messages are small and each one matters now (KEEPALIVEs against the
                // hold timer).
                stream.set_nodelay(true)?;
                Ok(stream)
            }
            Err(error) => {
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
                Err(io::Error::other(error))
            }
        }
    }
}

/// Connects from inside `/run/netns/NAME`: a blocking connect on a short-lived thread that
/// entered the namespace; the connected socket is then registered with the caller's runtime.
async fn connect_in_netns(name: &str, peer: SocketAddr) -> Result<TcpStream, BgpError> {
    let netns = describe_netns(Some(name));
    let connect_error = |error| BgpError::Connect {
        peer,
        netns: netns.clone(),
        error,
    };
    let stream = netns::run_in(name, move || {
        let timeout = Duration::from_secs(CONNECT_TIMEOUT_SECS.into());
        std::net::TcpStream::connect_timeout(&peer, timeout)
            .and_then(|stream| stream.set_nonblocking(true).map(|()| stream))
    })
    .await?
    .map_err(connect_error)?;
    TcpStream::from_std(stream).map_err(connect_error)
}
