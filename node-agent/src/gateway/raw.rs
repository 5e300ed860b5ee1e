//! The raw `AF_PACKET` channel that [`super::arp`] and [`super::ndp`] send and read their
//! frames on (from `pnet_datalink`, in the calling thread's network namespace): the link and
//! its MAC, sending a few frames, and asking a question until someone claims an address.

use std::time::{Duration, Instant};

use crate::model::Mac;

/// Failure to use the raw channel.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("no interface {0} in this network namespace")]
    NoInterface(String),
    #[error("interface {0} has no MAC address")]
    NoMac(String),
    #[error("opening a raw socket on {dev} (the agent needs CAP_NET_RAW): {source}")]
    Open { dev: String, source: std::io::Error },
    #[error("sending on {dev}: {source}")]
    Send { dev: String, source: std::io::Error },
    #[error("the raw channel on {0} is not an Ethernet channel")]
    NotEthernet(String),
}

/// A raw channel on one link: its MAC, a sender and a receiver.
type Channel = (
    Mac,
    Box<dyn pnet_datalink::DataLinkSender>,
    Box<dyn pnet_datalink::DataLinkReceiver>,
);

/// The interface `dev` and its MAC.
fn interface(dev: &str) -> Result<(pnet_datalink::NetworkInterface, Mac), RawError> {
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == dev)
        .ok_or_else(|| RawError::NoInterface(dev.to_owned()))?;
    let mac = iface
        .mac
        .map(|m| Mac([m.0, m.1, m.2, m.3, m.4, m.5]))
        .ok_or_else(|| RawError::NoMac(dev.to_owned()))?;
    Ok((iface, mac))
}

fn channel(dev: &str, timeout: Option<Duration>) -> Result<Channel, RawError> {
    let (iface, mac) = interface(dev)?;
    let config = pnet_datalink::Config {
        read_timeout: timeout,
        ..pnet_datalink::Config::default()
    };
    match pnet_datalink::channel(&iface, config) {
        Ok(pnet_datalink::Channel::Ethernet(tx, rx)) => Ok((mac, tx, rx)),
        Ok(_) => Err(RawError::NotEthernet(dev.to_owned())),
        Err(source) => Err(RawError::Open {
            dev: dev.to_owned(),
            source,
        }),
    }
}

fn send(tx: &mut dyn pnet_datalink::DataLinkSender, dev: &str, f: &[u8]) -> Result<(), RawError> {
    match tx.send_to(f, None) {
        Some(Ok(())) => Ok(()),
        Some(Err(source)) => Err(RawError::Send {
            dev: dev.to_owned(),
            source,
        }),
        None => Err(RawError::Send {
            dev: dev.to_owned(),
            source: std::io::Error::other("no buffer"),
        }),
    }
}

/// `dev`'s MAC address.
///
/// # Errors
/// When there is no such interface or it has no MAC.
pub fn mac_of(dev: &str) -> Result<Mac, RawError> {
    interface(dev).map(|(_, mac)| mac)
}

/// Sends the frames `frames` builds from `dev`'s MAC, in order (blocking).
pub(super) fn send_all<F: AsRef<[u8]>>(
    dev: &str,
    frames: impl FnOnce(Mac) -> Vec<F>,
) -> Result<(), RawError> {
    let (mac, mut tx, _rx) = channel(dev, None)?;
    for f in frames(mac) {
        send(tx.as_mut(), dev, f.as_ref())?;
    }
    Ok(())
}

/// Sends `question` (built from `dev`'s MAC) `probes` times `gap` apart and listens until
/// `gap` after the last one; the first MAC that `claim` finds in a frame read meanwhile (given
/// the frame and `dev`'s MAC), if any (blocking).
pub(super) fn ask<F: AsRef<[u8]>>(
    dev: &str,
    probes: u32,
    gap: Duration,
    question: impl FnOnce(Mac) -> F,
    claim: impl Fn(&[u8], Mac) -> Option<Mac>,
) -> Result<Option<Mac>, RawError> {
    let slice = Duration::from_millis(10);
    let (mac, mut tx, mut rx) = channel(dev, Some(slice))?;
    let question = question(mac);
    for _ in 0..probes.max(1) {
        send(tx.as_mut(), dev, question.as_ref())?;
        let until = Instant::now() + gap;
        while Instant::now() < until {
            // A timeout returns an error; anything else is a frame.
            if let Ok(bytes) = rx.next()
                && let Some(holder) = claim(bytes, mac)
            {
                return Ok(Some(holder));
            }
        }
    }
    Ok(None)
}
