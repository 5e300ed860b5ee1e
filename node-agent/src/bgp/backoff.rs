//! The delay between a session's connection attempts (pure).
//!
//! NetGauze's `Peer` does not restart itself after a failure, so the session loop waits this
//! long and starts a new one: 1 s after the first failure, doubling up to 5 s, and back to
//! 1 s once a session reaches Established. The agent only connects (it does not listen), so
//! the cap bounds how long a router that comes back waits for its sessions, whatever its
//! downtime: at most 5 s (a cap of 30 s made a router down for 20 s wait 11 s more). One
//! TCP connection attempt per peer every 5 s is nothing to a router that is away.

use std::time::Duration;

/// First delay after a failure.
pub(crate) const INITIAL: Duration = Duration::from_secs(1);
/// Longest delay.
pub(crate) const MAX: Duration = Duration::from_secs(5);

/// Exponential backoff between connection attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: INITIAL }
    }
}

impl Backoff {
    /// The delay before the next attempt; each call doubles the following one, up to [`MAX`].
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }

    /// Back to [`INITIAL`]: the session reached Established.
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_one_second_up_to_five_and_reset_on_established() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..6).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5, 5]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), INITIAL);
        assert_eq!(backoff.next_delay(), Duration::from_secs(2));
    }
}
