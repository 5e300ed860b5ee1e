//! Real traffic as proof: ping and TCP between namespaces, with timeouts, and a continuous
//! ping that counts lost packets and the longest gap during a disruption. Each helper has an
//! IPv6 twin (`ping6`, `expect_ping6`, `tcp_check6`, `ContinuousPing::start6`...).
//!
//! Targets are always addresses inside the cluster's namespaces (the topologies have no route
//! out of the machine).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Summary of a ping run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

/// Parses the summary line `N packets transmitted, M received, ...` of iputils ping.
pub fn parse_ping_summary(out: &str) -> Option<PingStats> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line.split(',').map(|part| {
        part.split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
    });
    Some(PingStats {
        transmitted: nums.next()??,
        received: nums.next()??,
    })
}

/// Sends `count` pings from namespace `ns` to `dst` (0.2 s apart, each waiting up to 1 s).
pub fn ping(ns: &str, dst: Ipv4Addr, count: u32) -> Result<PingStats> {
    ping_ip(ns, dst.into(), count)
}

/// [`ping`] over IPv6 (`ping -6`).
pub fn ping6(ns: &str, dst: Ipv6Addr, count: u32) -> Result<PingStats> {
    ping_ip(ns, dst.into(), count)
}

/// Succeeds when every one of 3 pings from `ns` to IPv6 address `dst` comes back.
pub fn expect_ping6(ns: &str, dst: Ipv6Addr) -> Result<()> {
    expect_replies(ns, dst.into(), ping_ip(ns, dst.into(), 3)?)
}

/// Succeeds when no ping from `ns` to IPv6 address `dst` comes back.
pub fn expect_no_ping6(ns: &str, dst: Ipv6Addr) -> Result<()> {
    expect_silence(ns, dst.into(), ping_ip(ns, dst.into(), 2)?)
}

/// Two pings of `payload` bytes from `ns` to `dst` with fragmentation forbidden (`ping -M
/// do`): whether both come back, and what ping printed. A packet above the path's MTU fails,
/// locally (`message too long`) or at the hop that cannot carry it, which answers with an
/// ICMPv6 Packet Too Big (ping prints `From <hop> icmp_seq=1 Packet too big: mtu=<mtu>`).
pub fn df_ping6(ns: &str, dst: Ipv6Addr, payload: u32) -> Result<(bool, String)> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-6", "-n", "-c", "2", "-i", "0.2",
        ])
        .args([
            "-W",
            "1",
            "-M",
            "do",
            "-s",
            &payload.to_string(),
            &dst.to_string(),
        ])
        .output()
        .context("running ping")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// A TCP round trip over IPv6, like [`tcp_check`].
pub fn tcp_check6(server_ns: &str, client_ns: &str, dst: Ipv6Addr, port: u16) -> Result<()> {
    tcp_token_check(server_ns, client_ns, dst.into(), port)
}

/// `ping -4` or `ping -6` as `dst` is; the family flag keeps iputils from guessing.
fn ping_ip(ns: &str, dst: IpAddr, count: u32) -> Result<PingStats> {
    let family = if dst.is_ipv6() { "-6" } else { "-4" };
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", family, "-n", "-q", "-i", "0.2", "-W", "1",
        ])
        .arg("-c")
        .arg(count.to_string())
        .arg(dst.to_string())
        .output()
        .context("running ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping_summary(&text).with_context(|| {
        format!(
            "ping from {ns} to {dst} printed no summary: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Succeeds when every one of 3 pings from `ns` reaches `dst` and comes back.
pub fn expect_ping(ns: &str, dst: Ipv4Addr) -> Result<()> {
    expect_replies(ns, dst.into(), ping(ns, dst, 3)?)
}

fn expect_replies(ns: &str, dst: IpAddr, s: PingStats) -> Result<()> {
    if s.received != s.transmitted {
        bail!(
            "ping {ns} -> {dst}: {}/{} replies (expected all)",
            s.received,
            s.transmitted
        );
    }
    Ok(())
}

/// Runs [`expect_ping`] for every `(source namespace, destination, label)`, the sources in
/// parallel (each source's pings one after another), and returns the failures as
/// `label: error` lines. A connectivity matrix of dozens of pairs takes seconds, not minutes.
pub fn ping_matrix(pairs: &[(String, Ipv4Addr, String)]) -> Vec<String> {
    let mut by_source: std::collections::BTreeMap<&str, Vec<&(String, Ipv4Addr, String)>> =
        std::collections::BTreeMap::new();
    for pair in pairs {
        by_source.entry(pair.0.as_str()).or_default().push(pair);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = by_source
            .into_values()
            .map(|mine| {
                scope.spawn(move || {
                    mine.into_iter()
                        .filter_map(|(ns, dst, label)| {
                            expect_ping(ns, *dst)
                                .err()
                                .map(|e| format!("{label}: {e:#}"))
                        })
                        .collect::<Vec<String>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| vec!["a ping worker panicked".to_string()])
            })
            .collect()
    })
}

/// Succeeds when no ping from `ns` to `dst` comes back.
pub fn expect_no_ping(ns: &str, dst: Ipv4Addr) -> Result<()> {
    expect_silence(ns, dst.into(), ping(ns, dst, 2)?)
}

fn expect_silence(ns: &str, dst: IpAddr, s: PingStats) -> Result<()> {
    if s.received != 0 {
        bail!("ping {ns} -> {dst}: {} replies (expected none)", s.received);
    }
    Ok(())
}

/// A TCP round trip: a one-shot `socat` server in `server_ns` on `port` answers with a
/// token; a client in `client_ns` connects to `dst:port` and must read that token back.
pub fn tcp_check(server_ns: &str, client_ns: &str, dst: Ipv4Addr, port: u16) -> Result<()> {
    tcp_token_check(server_ns, client_ns, dst.into(), port)
}

fn tcp_token_check(server_ns: &str, client_ns: &str, dst: IpAddr, port: u16) -> Result<()> {
    let token = format!("causeway-{}-{port}", std::process::id());
    tcp_exchange(
        server_ns,
        client_ns,
        dst,
        port,
        &format!("echo {token}"),
        |got| got == token,
    )
    .map(drop)
}

/// The source address a server in `server_ns` sees when a client in `client_ns` connects to
/// `dst:port` (what NAT made of the client's address).
pub fn tcp_seen_source(
    server_ns: &str,
    client_ns: &str,
    dst: Ipv4Addr,
    port: u16,
) -> Result<Ipv4Addr> {
    seen_source(server_ns, client_ns, dst, port)
}

/// [`tcp_seen_source`] over IPv6.
pub fn tcp_seen_source6(
    server_ns: &str,
    client_ns: &str,
    dst: Ipv6Addr,
    port: u16,
) -> Result<Ipv6Addr> {
    seen_source(server_ns, client_ns, dst, port)
}

/// The peer address socat's server reports, parsed as `dst`'s family (socat may give an IPv6
/// peer in brackets).
fn seen_source<A>(server_ns: &str, client_ns: &str, dst: A, port: u16) -> Result<A>
where
    A: Into<IpAddr> + std::str::FromStr,
    A::Err: std::error::Error + Send + Sync + 'static,
{
    let bare = |got: &str| got.trim_matches(['[', ']']).to_string();
    let seen = tcp_exchange(
        server_ns,
        client_ns,
        dst.into(),
        port,
        "echo $SOCAT_PEERADDR",
        |got| bare(got).parse::<A>().is_ok(),
    )?;
    Ok(bare(&seen).parse::<A>()?)
}

/// Starts a one-shot `socat` server in `server_ns` whose reply is the output of the shell
/// command `reply`, and connects from `client_ns` until the reply satisfies `accept` (or 10 s
/// pass); returns the reply.
fn tcp_exchange(
    server_ns: &str,
    client_ns: &str,
    dst: IpAddr,
    port: u16,
    reply: &str,
    accept: impl Fn(&str) -> bool,
) -> Result<String> {
    // socat's address types name the family; an IPv6 address goes in brackets.
    let (family, target) = match dst {
        IpAddr::V4(a) => ("TCP4", a.to_string()),
        IpAddr::V6(a) => ("TCP6", format!("[{a}]")),
    };
    let mut server = Command::new("ip")
        .args(["netns", "exec", server_ns, "socat", "-T", "5"])
        .arg(format!("{family}-LISTEN:{port},reuseaddr"))
        .arg(format!("SYSTEM:{reply}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting socat server")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let result = loop {
        let out = Command::new("ip")
            .args(["netns", "exec", client_ns, "socat", "-T", "3", "-u"])
            .arg(format!("{family}:{target}:{port},connect-timeout=2"))
            .arg("STDOUT")
            .stdin(Stdio::null())
            .output()
            .context("running socat client")?;
        let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if accept(&got) {
            break Ok(got);
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "TCP {client_ns} -> {dst}:{port} (server in {server_ns}): got {got:?}, stderr {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // Connection refused until the server listens.
        std::thread::sleep(Duration::from_millis(100));
    };
    stop_child(&mut server);
    result
}

fn stop_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
    let _ = child.wait();
}

/// Loss report of a [`ContinuousPing`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossReport {
    pub transmitted: u32,
    pub received: u32,
    /// Longest time between two consecutive replies.
    pub max_gap: Duration,
}

impl LossReport {
    pub fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }

    /// Fails unless at least `at_least` pings went out and none was lost.
    pub fn expect_none_lost(&self, at_least: u32) -> Result<()> {
        anyhow::ensure!(
            self.transmitted >= at_least,
            "only {} pings sent (want {at_least} or more)",
            self.transmitted
        );
        anyhow::ensure!(
            self.lost() == 0,
            "{} of {} pings lost",
            self.lost(),
            self.transmitted
        );
        Ok(())
    }

    /// Fails unless more than `more_than` pings went out and the longest time between two
    /// replies stayed under `bound` (a failover's gap; losses inside it are allowed).
    pub fn expect_gap_under(&self, more_than: u32, bound: Duration) -> Result<()> {
        anyhow::ensure!(
            self.transmitted > more_than,
            "only {} pings sent (want more than {more_than})",
            self.transmitted
        );
        anyhow::ensure!(
            self.max_gap < bound,
            "longest gap {:?}, over the bound of {bound:?}",
            self.max_gap
        );
        Ok(())
    }
}

/// A ping every `interval` from `ns` to `dst`, running in the background until stopped.
pub struct ContinuousPing {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl ContinuousPing {
    /// Starts pinging; `interval` of 10 ms or more (iputils needs root below 200 ms: we are).
    pub fn start(ns: &str, dst: Ipv4Addr, interval: Duration) -> Result<Self> {
        Self::start_from(ns, None, dst, interval)
    }

    /// [`Self::start`] over IPv6 (`ping -6`).
    pub fn start6(ns: &str, dst: Ipv6Addr, interval: Duration) -> Result<Self> {
        let mut ping = Command::new("ip");
        ping.args(["netns", "exec", ns, "ping", "-6"]);
        Self::start_with(ping, dst, interval)
    }

    /// [`Self::start`] with source address `src` (`ping -I`).
    pub fn start_from(
        ns: &str,
        src: Option<Ipv4Addr>,
        dst: Ipv4Addr,
        interval: Duration,
    ) -> Result<Self> {
        let mut ping = Command::new("ip");
        ping.args(["netns", "exec", ns, "ping"]);
        if let Some(s) = src {
            ping.args(["-I", &s.to_string()]);
        }
        Self::start_with(ping, dst, interval)
    }

    /// [`Self::start`] with `ping` as the command that runs iputils `ping` where the traffic
    /// starts (e.g. `nsenter --net=... -- ping`); options and `dst` are appended.
    pub fn start_with(
        mut ping: Command,
        dst: impl Into<IpAddr>,
        interval: Duration,
    ) -> Result<Self> {
        let dst: IpAddr = dst.into();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "causeway-ping-{}-{}-{dst}.log",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let out = File::create(&log)?;
        let child = ping
            .args(["-n", "-D", "-W", "1"])
            .arg("-i")
            .arg(format!("{:.3}", interval.as_secs_f64()))
            .arg(dst.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .context("starting continuous ping")?;
        Ok(Self {
            child,
            log,
            started: Instant::now(),
        })
    }

    /// Stops the ping (SIGINT makes it print its summary) and reports the loss.
    pub fn stop(mut self) -> Result<LossReport> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.log)?;
        let _ = std::fs::remove_file(&self.log);
        let stats = parse_ping_summary(&text).with_context(|| {
            format!(
                "continuous ping ({:?}) printed no summary: {text}",
                self.started.elapsed()
            )
        })?;
        Ok(LossReport {
            transmitted: stats.transmitted,
            received: stats.received,
            max_gap: max_reply_gap(&text),
        })
    }
}

/// Longest interval between consecutive replies in `ping -D` output (`[epoch.micros] 64
/// bytes from ...`).
pub fn max_reply_gap(out: &str) -> Duration {
    let stamps: Vec<f64> = out
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse::<f64>().ok())
        .collect();
    let max = stamps
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0_f64, f64::max);
    Duration::from_secs_f64(max.max(0.0))
}

/// Polls `check` every 200 ms until it succeeds or `timeout` passes; the error carries the
/// last failure.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("{what}: not true after {timeout:?}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Packets `dev` in `host`'s namespace has (received, sent) so far: counters that show which
/// links a path really took.
///
/// # Errors
/// The link is not there, or `ip -j -s` answers without counters.
pub fn link_packets(c: &crate::Cluster, host: &str, dev: &str) -> Result<(u64, u64)> {
    let out = c.exec(host, "ip", &["-j", "-s", "link", "show", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let stats = &v[0]["stats64"];
    Ok((
        stats["rx"]["packets"].as_u64().context("rx packets")?,
        stats["tx"]["packets"].as_u64().context("tx packets")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_is_parsed_with_and_without_errors() {
        let ok = "--- 10.0.0.1 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 402ms\n";
        assert_eq!(
            parse_ping_summary(ok),
            Some(PingStats {
                transmitted: 3,
                received: 3
            })
        );
        let bad = "5 packets transmitted, 2 received, +3 errors, 60% packet loss, time 4ms";
        assert_eq!(
            parse_ping_summary(bad),
            Some(PingStats {
                transmitted: 5,
                received: 2
            })
        );
        assert_eq!(parse_ping_summary("connect: Network is unreachable"), None);
    }

    #[test]
    fn the_longest_gap_between_replies_is_measured_from_timestamps() {
        let out = "[1700000000.000000] 64 bytes from 10.0.0.1: icmp_seq=1 ttl=64 time=0.1 ms\n\
                   [1700000000.010000] 64 bytes from 10.0.0.1: icmp_seq=2 ttl=64 time=0.1 ms\n\
                   [1700000000.020000] no answer yet for icmp_seq=3\n\
                   [1700000000.530000] 64 bytes from 10.0.0.1: icmp_seq=4 ttl=64 time=0.1 ms\n";
        let gap = max_reply_gap(out);
        assert!((gap.as_secs_f64() - 0.52).abs() < 1e-6, "{gap:?}");
        assert_eq!(max_reply_gap(""), Duration::ZERO);
    }

    #[test]
    fn loss_is_transmitted_minus_received() {
        let r = LossReport {
            transmitted: 100,
            received: 97,
            max_gap: Duration::ZERO,
        };
        assert_eq!(r.lost(), 3);
    }
}
