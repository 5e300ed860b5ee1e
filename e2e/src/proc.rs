//! Process identity and termination by pid.
//!
//! A pid alone can be reused by an unrelated process after ours died, so the harness records
//! each process as (pid, start time from `/proc/PID/stat`) and only ever signals a process
//! whose start time still matches. Zombies count as dead.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// A process the harness started, identified robustly against pid reuse.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot).
    pub start_time: u64,
}

/// Parses `(state, start_time)` out of the text of `/proc/PID/stat`. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); start_time is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start))
}

fn stat_of(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

impl ProcId {
    /// Identifies a running process; `None` if it is already gone.
    pub fn of(pid: u32) -> Option<Self> {
        let pid = i32::try_from(pid).ok()?;
        let (_, start_time) = stat_of(pid)?;
        Some(Self { pid, start_time })
    }

    /// The current process.
    pub fn current() -> Self {
        Self::of(std::process::id()).unwrap_or(Self {
            pid: std::process::id() as i32,
            start_time: 0,
        })
    }

    /// True while this very process (same pid and start time) runs and is not a zombie.
    pub fn alive(&self) -> bool {
        matches!(stat_of(self.pid), Some((state, start)) if start == self.start_time && state != 'Z' && state != 'X')
    }

    /// Sends `signal` if the process is still ours; returns whether it was sent.
    pub fn signal(&self, signal: Signal) -> bool {
        self.alive() && kill(Pid::from_raw(self.pid), signal).is_ok()
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process is gone (or after a
    /// bounded wait for the kill to take effect).
    pub fn terminate(&self, grace: Duration) {
        if !self.signal(Signal::SIGTERM) {
            return;
        }
        if wait_gone(self, grace) {
            return;
        }
        self.signal(Signal::SIGKILL);
        wait_gone(self, Duration::from_secs(5));
    }
}

fn wait_gone(p: &ProcId, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !p.alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !p.alive()
}

/// One process's resource use ([`usage`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Peak resident memory (VmHWM), KiB.
    pub hwm_kib: u64,
    /// Resident memory now (VmRSS), KiB.
    pub rss_kib: u64,
    /// CPU time, user + system.
    pub cpu: Duration,
}

/// A process's peak and current resident memory and CPU time (user + system), from
/// `/proc/PID/status` and `/proc/PID/stat`.
///
/// # Errors
/// The process is gone, or its files cannot be parsed.
pub fn usage(pid: i32) -> Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (did the process exit?)"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .with_context(|| format!("{name} missing from /proc/{pid}/status"))?
            .parse()
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick_field = |i: usize| -> Result<u64> {
        Ok(fields
            .get(i)
            .with_context(|| format!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    let ticks = tick_field(11)? + tick_field(12)?;
    let hz = 100; // USER_HZ on Linux
    Ok(Usage {
        hwm_kib: field("VmHWM:")?,
        rss_kib: field("VmRSS:")?,
        cpu: Duration::from_millis(ticks * 1000 / hz),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_spaces_and_parentheses_in_the_command_name() {
        let stat = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
    }

    #[test]
    fn stat_parsing_rejects_truncated_text() {
        assert_eq!(parse_stat("1234 (x) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_current_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcId::current();
        assert!(me.alive());
        let other = ProcId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
    }
}
