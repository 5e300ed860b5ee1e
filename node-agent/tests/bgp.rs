//! The node's BGP speaker (BIRD, supervised by `causeway_node_agent::bird`) against a real
//! router: BIRD 2, configured as a network's router would be, in throwaway network namespaces
//! (`cwbgp-<pid>-<n>`) that a guard removes even when a test panics. Per test: a "node"
//! namespace (192.168.91.1/24, where the speaker's BIRD runs) and a "router" namespace
//! (192.168.91.2/24, the router's BIRD) joined by a veth pair; each BIRD has its own
//! configuration, control socket and pid file in the test's temporary directory. The router is
//! killed by its pid; the speaker's BIRD is the speaker's to stop, and the tests check that it
//! is gone afterwards. Every check of the router's side reads the router itself (`birdc`),
//! independently of the code under test. Nothing touches the root namespace.
//!
//! These tests need root and `ip`, `bird` and `birdc` (BIRD 2, Debian's `bird2`); without them
//! they fail with a message saying so (they never pass by skipping).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use causeway_crds::bgp::{Bfd, Community};
use causeway_node_agent::bgp::{
    BGP_PORT, BirdOptions, Ipv6Unicast, Md5Key, PeerConfig, PeerOptions, SessionState, Snapshot,
    Speaker, SpeakerConfig, SpeakerOptions,
};
use causeway_node_agent::model::Dataplane;
use ipnet::{Ipv4Net, Ipv6Net};

mod support;
use support::{Netns, output, require_root, require_tools, run};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 1);
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 2);
const ROUTER_AS: u32 = 65000;
const NODE_AS: u32 = 65001;
/// BIRD's static route: what the speaker should learn.
const STATIC_PREFIX: &str = "10.250.9.0/24";
/// A route BIRD sends with the node's AS already in its path, as an eBGP router passes one
/// node's subnet to another node of the same AS: the speaker accepts it (allowas-in).
const LOOPED_PREFIX: &str = "10.250.8.0/24";
const POD_SUBNET: &str = "10.244.1.0/24";
/// Dual-stack: the node's and the router's IPv6 addresses on the link, the network's IPv6
/// range and the node's IPv6 subnet in it.
const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x91, 0, 0, 0, 0, 0, 1);
const ROUTER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x91, 0, 0, 0, 0, 0, 2);
const RANGE6: &str = "fd00:10:244::/56";
const NODE_SUBNET6: &str = "fd00:10:244:1::/64";
const NEW_POD_SUBNET: &str = "10.244.2.0/24";

/// How long any one expected change may take. Hold time 3 s and reconnection after 1 s keep
/// the real waits far shorter.
const PATIENCE: Duration = Duration::from_secs(20);

fn require_root_and_tools() {
    require_root("the BGP tests");
    require_tools(
        "the BGP tests",
        &[("ip", "-V"), ("bird", "--version")],
        "iproute2 bird2",
    );
    // birdc has no version flag; it only has to be there.
    assert!(
        Command::new("birdc").arg("-h").output().is_ok(),
        "the BGP tests need `birdc` on PATH (apt-get install bird2)"
    );
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// BIRD in the router namespace with its own files; killed by its pid on drop.
struct Bird {
    netns: String,
    conf: PathBuf,
    ctl: PathBuf,
    pidfile: PathBuf,
}

impl Bird {
    /// Writes `conf` into `dir` and starts BIRD in `netns` with its socket and pid file there.
    fn start_in(netns: &str, dir: &Path, conf: &str) -> Bird {
        let bird = Bird {
            netns: netns.to_owned(),
            conf: dir.join("bird.conf"),
            ctl: dir.join("bird.ctl"),
            pidfile: dir.join("bird.pid"),
        };
        fs::write(&bird.conf, conf).expect("write bird.conf");
        bird.start();
        bird
    }

    fn start(&self) {
        let (conf, ctl, pid) = (
            self.conf.display().to_string(),
            self.ctl.display().to_string(),
            self.pidfile.display().to_string(),
        );
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns,
                "bird",
                "-c",
                &conf,
                "-s",
                &ctl,
                "-P",
                &pid,
            ],
        );
        // bird daemonizes once its configuration is read; wait for its control socket.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.birdc("show status");
            if status.contains("Daemon is up and running") {
                return;
            }
            assert!(Instant::now() < deadline, "BIRD did not come up: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> Option<String> {
        fs::read_to_string(&self.pidfile)
            .ok()
            .map(|pid| pid.trim().to_owned())
            .filter(|pid| !pid.is_empty())
    }

    /// SIGKILL, as a crash: no NOTIFICATION, the kernel closes its connections.
    fn kill(&self) {
        let Some(pid) = self.pid() else { return };
        let _ = Command::new("kill").args(["-KILL", &pid]).output();
        let proc = PathBuf::from("/proc").join(&pid);
        let deadline = Instant::now() + PATIENCE;
        // Gone, or a zombie waiting for init.
        while fs::read_to_string(proc.join("stat")).is_ok_and(|stat| !stat.contains(") Z "))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = fs::remove_file(&self.pidfile);
    }

    /// `birdc` output (stdout and stderr): BIRD's own view.
    fn birdc(&self, command: &str) -> String {
        let ctl = self.ctl.display().to_string();
        let mut args = vec!["-s", ctl.as_str()];
        args.extend(command.split_whitespace());
        let out = output("birdc", &args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The `show protocols` line of the node's session.
    fn protocol_line(&self) -> String {
        self.birdc("show protocols node1")
            .lines()
            .find(|line| line.starts_with("node1"))
            .unwrap_or("")
            .to_owned()
    }

    /// Ok when BIRD's table holds `prefix` via `next_hop`; the route's details either way.
    fn route_via(&self, prefix: &str, next_hop: Ipv4Addr) -> Result<String, String> {
        let route = self.birdc(&format!("show route {prefix} all"));
        if route.contains(&format!("via {next_hop} ")) {
            Ok(route)
        } else {
            Err(route)
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Node and router namespaces joined by a veth pair, and BIRD in the router. Fields drop in
/// order: BIRD first, then its files, then the namespaces.
struct Lab {
    bird: Bird,
    dir: TempDir,
    router: Netns,
    node: Netns,
}

impl Lab {
    fn new(bird_conf: &str) -> Self {
        Self::build(bird_conf, false)
    }

    /// A lab whose link also carries IPv6: the node at [`NODE_IP6`], the router at
    /// [`ROUTER_IP6`] (without duplicate address detection, so both are usable at once).
    fn dual_stack(bird_conf: &str) -> Self {
        Self::build(bird_conf, true)
    }

    fn build(bird_conf: &str, ipv6: bool) -> Self {
        require_root_and_tools();
        let node = Netns::create("cwbgp");
        let router = Netns::create("cwbgp");
        let dir = TempDir(std::env::temp_dir().join(&router.name));
        fs::create_dir_all(&dir.0).expect("create the test's directory");
        run(
            "ip",
            &[
                "-n",
                &node.name,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &router.name,
            ],
        );
        for (ns, addr, addr6) in [(&node, NODE_IP, NODE_IP6), (&router, ROUTER_IP, ROUTER_IP6)] {
            let cidr = format!("{addr}/24");
            run("ip", &["-n", &ns.name, "addr", "add", &cidr, "dev", "eth0"]);
            if ipv6 {
                let cidr6 = format!("{addr6}/64");
                run(
                    "ip",
                    &[
                        "-n", &ns.name, "addr", "add", &cidr6, "dev", "eth0", "nodad",
                    ],
                );
            }
            run("ip", &["-n", &ns.name, "link", "set", "eth0", "up"]);
        }
        let bird = Bird::start_in(&router.name, &dir.0, bird_conf);
        Lab {
            bird,
            dir,
            router,
            node,
        }
    }

    /// The speaker's BIRD: in the node namespace, with its files in the test's directory.
    fn speaker_options(&self) -> BirdOptions {
        BirdOptions {
            program: "bird".into(),
            dir: self.dir.0.join("speaker"),
            netns: Some(self.node.name.clone()),
        }
    }

    /// Starts the speaker in the node namespace.
    fn speaker(&self, config: SpeakerConfig) -> Speaker {
        Speaker::start(config, self.speaker_options())
    }
}

/// A router with a static route to offer, and the session to the node.
fn bird_conf(session: &str) -> String {
    format!(
        "router id {ROUTER_IP};
protocol device {{ }}
protocol static {{
  ipv4;
  route {STATIC_PREFIX} via {ROUTER_IP};
  route {LOOPED_PREFIX} via {ROUTER_IP};
}}
{session}
"
    )
}

/// An eBGP router expecting the node in `node_as`. The looped prefix leaves with the node's AS
/// already in its path, as a route that came back around would.
fn ebgp_session(node_as: u32) -> String {
    format!(
        "protocol bgp node1 {{
  local {ROUTER_IP} as {ROUTER_AS};
  neighbor {NODE_IP} as {node_as};
  ipv4 {{
    import all;
    export filter {{ if net = {LOOPED_PREFIX} then bgp_path.prepend({NODE_AS}); accept; }};
  }};
}}"
    )
}

/// An iBGP route reflector with the node as its client.
fn ibgp_session() -> String {
    format!(
        "protocol bgp node1 {{
  local {ROUTER_IP} as {ROUTER_AS};
  neighbor {NODE_IP} as {ROUTER_AS};
  rr client;
  direct;
  ipv4 {{ import all; export all; }};
}}"
    )
}

fn net(prefix: &str) -> Ipv4Net {
    prefix.parse().expect("prefix")
}

fn node_config(local_asn: u32, peer_asn: u32, advertise: &str) -> SpeakerConfig {
    SpeakerConfig {
        local_asn,
        router_id: NODE_IP,
        hold_time: 3,
        keepalive: 1,
        peers: vec![PeerConfig {
            address: ROUTER_IP.into(),
            asn: peer_asn,
            port: BGP_PORT,
            options: Default::default(),
        }],
        advertise: vec![net(advertise)],
        next_hop: Some(NODE_IP),
        local6: None,
        ipv6: None,
        options: Default::default(),
        unusable: vec![],
        asn_label: None,
        ignored: vec![],
    }
}

/// Polls `check` until it is Ok; fails with the last thing seen after [`PATIENCE`].
/// The router's BFD session line for `node` once it is Up.
async fn bfd_up(lab: &Lab, node: std::net::IpAddr, what: &str) -> String {
    eventually(what, || {
        let sessions = lab.bird.birdc("show bfd sessions");
        let line = sessions
            .lines()
            .find(|l| l.starts_with(&node.to_string()))
            .unwrap_or_default()
            .to_owned();
        if line.contains("Up") {
            Ok(line)
        } else {
            Err(sessions)
        }
    })
    .await
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("waited {PATIENCE:?} for {what}; last seen:\n{last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The one session of the snapshot.
fn session(snapshot: &Snapshot) -> Result<SessionState, String> {
    match snapshot.sessions.as_slice() {
        [session] => Ok(session.clone()),
        other => Err(format!("expected one session, got {other:?}")),
    }
}

fn established(speaker: &Speaker) -> Result<SessionState, String> {
    let snapshot = speaker.snapshot();
    let session = session(&snapshot)?;
    if session.state == "Established" {
        Ok(session)
    } else {
        Err(format!("{snapshot:?}"))
    }
}

fn learned(speaker: &Speaker, prefix: &str, next_hop: Ipv4Addr) -> Result<(), String> {
    let snapshot = speaker.snapshot();
    if snapshot.learned.v4.get(&net(prefix)) == Some(&next_hop) {
        Ok(())
    } else {
        Err(format!("{snapshot:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebgp_session_exchanges_routes_follows_updates_and_closes_with_cease_when_the_peer_is_removed()
 {
    let started = Instant::now();
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let speaker = lab.speaker(node_config(NODE_AS, ROUTER_AS, POD_SUBNET));
    let changes = speaker.changes();

    // (1) Established, as the speaker and as BIRD see it.
    let up = eventually("the speaker's session to be Established", || {
        established(&speaker)
    })
    .await;
    assert_eq!(
        (up.peer, up.asn, up.message.as_str()),
        (IpAddr::from(ROUTER_IP), ROUTER_AS, "")
    );
    eventually("BIRD to show the session Established", || {
        let line = lab.bird.protocol_line();
        if line.contains("Established") {
            Ok(())
        } else {
            Err(line)
        }
    })
    .await;
    assert!(
        changes.has_changed().expect("the speaker is running"),
        "changes() fired"
    );

    // (2) BIRD holds the pod subnet with the node as next hop, the node's AS as path.
    let route = eventually("BIRD to hold the pod subnet via the node", || {
        lab.bird.route_via(POD_SUBNET, NODE_IP)
    })
    .await;
    assert!(
        route.contains(&format!("BGP.as_path: {NODE_AS}\n")),
        "{route}"
    );

    // (3) The speaker learned BIRD's static route, and the one carrying its own AS (nodes of a
    // network share one AS, so that is how other nodes' subnets arrive over eBGP).
    eventually("the speaker to learn BIRD's static route", || {
        learned(&speaker, STATIC_PREFIX, ROUTER_IP)
    })
    .await;
    eventually("BIRD to export the looped route to the node", || {
        let exported = lab.bird.birdc("show route export node1");
        if exported.contains(LOOPED_PREFIX) {
            Ok(())
        } else {
            Err(exported)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        speaker.snapshot().learned.v4,
        [
            (net(LOOPED_PREFIX), ROUTER_IP),
            (net(STATIC_PREFIX), ROUTER_IP)
        ]
        .into(),
        "BIRD's static route and the one with our AS in its path"
    );

    // BIRD withdraws its routes (static protocol disabled), then announces them again: the
    // learned routes follow while the session stays up.
    lab.bird.birdc("disable static1");
    eventually("the speaker to drop BIRD's withdrawn route", || {
        let snapshot = speaker.snapshot();
        if snapshot.learned.is_empty() {
            Ok(())
        } else {
            Err(format!("{snapshot:?}"))
        }
    })
    .await;
    lab.bird.birdc("enable static1");
    eventually("the speaker to learn BIRD's static route again", || {
        learned(&speaker, STATIC_PREFIX, ROUTER_IP)
    })
    .await;
    let still = established(&speaker).expect("the session stays Established");
    assert_eq!(
        still.since, up.since,
        "withdrawals did not flap the session"
    );

    // (4) A new pod subnet: BIRD withdraws the old one and holds the new, and the session
    // does not flap.
    let bird_before = lab.bird.protocol_line();
    speaker.update(node_config(NODE_AS, ROUTER_AS, NEW_POD_SUBNET));
    eventually(
        "BIRD to replace the old pod subnet with the new one",
        || {
            let old = lab.bird.birdc(&format!("show route {POD_SUBNET}"));
            let new = lab.bird.route_via(NEW_POD_SUBNET, NODE_IP)?;
            if old.contains("Network not found") {
                Ok(())
            } else {
                Err(format!("{old}\n{new}"))
            }
        },
    )
    .await;
    let still = established(&speaker).expect("the session stays Established");
    assert_eq!(still.since, up.since, "the speaker's session did not flap");
    assert_eq!(
        lab.bird.protocol_line(),
        bird_before,
        "BIRD's session did not flap"
    );

    // (6) The peer removed: BIRD sees the session closed by our Cease.
    speaker.update(SpeakerConfig {
        peers: vec![],
        ..node_config(NODE_AS, ROUTER_AS, NEW_POD_SUBNET)
    });
    eventually("BIRD to see the session closed with a Cease", || {
        let all = lab.bird.birdc("show protocols all node1");
        if !all.contains("Established") && all.contains("Peer de-configured") {
            Ok(())
        } else {
            Err(all)
        }
    })
    .await;
    eventually("the speaker to forget the peer and its routes", || {
        let snapshot = speaker.snapshot();
        if snapshot == Snapshot::default() {
            Ok(())
        } else {
            Err(format!("{snapshot:?}"))
        }
    })
    .await;
    eventually("BIRD to drop the node's route", || {
        let route = lab.bird.birdc(&format!("show route {NEW_POD_SUBNET}"));
        if route.contains("Network not found") {
            Ok(())
        } else {
            Err(route)
        }
    })
    .await;

    speaker.shutdown().await;
    eprintln!("eBGP scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ibgp_session_drops_learned_routes_while_the_router_is_down_and_comes_back_by_itself() {
    let started = Instant::now();
    let lab = Lab::new(&bird_conf(&ibgp_session()));
    let speaker = lab.speaker(node_config(ROUTER_AS, ROUTER_AS, POD_SUBNET));

    eventually("the speaker's session to be Established", || {
        established(&speaker)
    })
    .await;
    let route = eventually("BIRD to hold the pod subnet via the node", || {
        lab.bird.route_via(POD_SUBNET, NODE_IP)
    })
    .await;
    // iBGP: the path stays empty and LOCAL_PREF is sent.
    assert!(route.contains("BGP.as_path: \n"), "{route}");
    assert!(route.contains("BGP.local_pref: 100"), "{route}");
    eventually("the speaker to learn BIRD's static route", || {
        learned(&speaker, STATIC_PREFIX, ROUTER_IP)
    })
    .await;

    // (5) The router crashes: the session leaves Established and its routes vanish.
    lab.bird.kill();
    let down = eventually("the session to go down and its routes to vanish", || {
        let snapshot = speaker.snapshot();
        let session = session(&snapshot)?;
        if session.state != "Established" && snapshot.learned.is_empty() {
            Ok(session)
        } else {
            Err(format!("{snapshot:?}"))
        }
    })
    .await;
    assert!(!down.message.is_empty(), "the message says why: {down:?}");

    // The router comes back: the session returns by itself and routes are exchanged again.
    lab.bird.start();
    eventually("the session to be Established again", || {
        established(&speaker)
    })
    .await;
    eventually("the speaker to learn BIRD's static route again", || {
        learned(&speaker, STATIC_PREFIX, ROUTER_IP)
    })
    .await;
    eventually("BIRD to hold the pod subnet via the node again", || {
        lab.bird.route_via(POD_SUBNET, NODE_IP)
    })
    .await;

    // Shutdown closes with a Cease too.
    speaker.shutdown().await;
    eventually("BIRD to see the administrative shutdown", || {
        let all = lab.bird.birdc("show protocols all node1");
        if !all.contains("Established") && all.contains("Administrative shutdown") {
            Ok(())
        } else {
            Err(all)
        }
    })
    .await;
    eprintln!("iBGP restart scenario took {:?}", started.elapsed());
}

/// Waits for the session's message to contain `expected`, checking on every look that neither
/// side ever reached Established.
async fn refused(speaker: &Speaker, lab: &Lab, expected: &str) -> SessionState {
    eventually(
        &format!("the session's message to say {expected:?}"),
        || {
            let snapshot = speaker.snapshot();
            let session = session(&snapshot)?;
            assert_ne!(session.state, "Established", "{snapshot:?}");
            let line = lab.bird.protocol_line();
            assert!(!line.contains("Established"), "BIRD: {line}");
            if session.message.contains(expected) {
                Ok(session)
            } else {
                Err(format!("{snapshot:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_expecting_another_as_refuses_the_session_and_the_message_says_bad_peer_as() {
    let lab = Lab::new(&bird_conf(&ebgp_session(65099)));
    let speaker = lab.speaker(node_config(NODE_AS, ROUTER_AS, POD_SUBNET));
    // BIRD's words for the NOTIFICATION (the NetGauze speaker said "OPEN message error: bad
    // peer AS").
    let down = refused(&speaker, &lab, "peer sent NOTIFICATION: Bad peer AS").await;
    assert_eq!(down.peer, ROUTER_IP);
    assert!(speaker.snapshot().learned.is_empty());
    speaker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_peer_as_in_our_configuration_is_refused_by_the_speaker() {
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let speaker = lab.speaker(node_config(NODE_AS, 65099, POD_SUBNET));
    refused(
        &speaker,
        &lab,
        "the peer's OPEN does not carry the configured peer AS 65099; sent NOTIFICATION: Bad peer AS",
    )
    .await;
    eventually("BIRD to have received our NOTIFICATION", || {
        let all = lab.bird.birdc("show protocols all node1");
        if all.contains("Received: Bad peer AS") {
            Ok(())
        } else {
            Err(all)
        }
    })
    .await;
    speaker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_hold_the_session_and_a_silent_peer_expires_the_hold_timer() {
    let started = Instant::now();
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let speaker = lab.speaker(node_config(NODE_AS, ROUTER_AS, POD_SUBNET));
    let up = eventually("the speaker's session to be Established", || {
        established(&speaker)
    })
    .await;
    let bird_view = lab.bird.birdc("show protocols all node1");
    assert!(
        bird_view.contains("Session:          external AS4"),
        "4-octet AS negotiated: {bird_view}"
    );
    assert!(
        bird_view.contains("/3\n"),
        "hold time 3 s negotiated: {bird_view}"
    );

    // Longer than the hold time: KEEPALIVEs flow both ways and nothing flaps.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = established(&speaker).expect("the session stays Established");
    assert_eq!(still.since, up.since, "no flap across the hold time");
    let line = lab.bird.protocol_line();
    assert!(line.contains("Established"), "BIRD: {line}");

    // The router falls silent (it drops everything on port 179: no FIN, no RST): our hold
    // timer expires, the session says so, and its routes are dropped. (Not the router's link
    // going down, as for the NetGauze speaker: BIRD's direct sessions see the carrier go and
    // close at once, "the link towards ... went down".)
    learned(&speaker, STATIC_PREFIX, ROUTER_IP).expect("BIRD's route learned by now");
    run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.router.name,
            "nft",
            "add table ip silent; add chain ip silent in { type filter hook input priority 0; }; add rule ip silent in tcp dport 179 drop; add rule ip silent in tcp sport 179 drop",
        ],
    );
    let down = eventually("the hold timer to expire", || {
        let snapshot = speaker.snapshot();
        let session = session(&snapshot)?;
        if session.message.starts_with("hold timer expired") && snapshot.learned.is_empty() {
            Ok(session)
        } else {
            Err(format!("{snapshot:?}"))
        }
    })
    .await;
    assert_ne!(down.state, "Established");
    speaker.shutdown().await;
    eprintln!("hold timer scenario took {:?}", started.elapsed());
}

/// Segments with data (PSH) the router received from the node's BGP session, counted by
/// nftables counters in the router's namespace (the test's own table). Either side may have
/// opened the connection: BIRD on the node also accepts the router's (the NetGauze speaker
/// only connected), so both directions of port 179 count.
fn bgp_segments_from_node(lab: &Lab) -> u64 {
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.router.name,
            "nft",
            "-j",
            "list",
            "table",
            "ip",
            "cwtest",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("nft JSON");
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["rule"]["expr"].as_array())
        .flatten()
        .filter_map(|e| e["counter"]["packets"].as_u64())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_interval_shorter_than_a_third_of_the_hold_time_is_honoured() {
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let config = SpeakerConfig {
        hold_time: 30,
        keepalive: 1,
        ..node_config(NODE_AS, ROUTER_AS, POD_SUBNET)
    };
    let speaker = lab.speaker(config);
    eventually("the speaker's session to be Established", || {
        established(&speaker)
    })
    .await;
    let rule = format!(
        "add table ip cwtest; add chain ip cwtest in {{ type filter hook input priority 0; }}; add rule ip cwtest in ip saddr {NODE_IP} tcp sport 179 tcp flags & psh == psh counter; add rule ip cwtest in ip saddr {NODE_IP} tcp dport 179 tcp flags & psh == psh counter"
    );
    run("ip", &["netns", "exec", &lab.router.name, "nft", &rule]);
    // With keepalives only every third of the negotiated hold time (10 s), at most one would
    // arrive in five seconds; at one a second, about five.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let segments = bgp_segments_from_node(&lab);
    assert!(
        segments >= 4,
        "the router received {segments} BGP segments from the node in 5 s: keepalives are not sent every second"
    );
    speaker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_says_why_and_does_not_hold_up_the_others() {
    let nobody = Ipv4Addr::new(192, 168, 91, 9);
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let mut config = node_config(NODE_AS, ROUTER_AS, POD_SUBNET);
    // Listed first; the snapshot still sorts sessions by address.
    config.peers.insert(
        0,
        PeerConfig {
            address: nobody.into(),
            asn: ROUTER_AS,
            port: BGP_PORT,
            options: Default::default(),
        },
    );
    let speaker = lab.speaker(config);

    let sessions = eventually("BIRD's session Established, the other one failing", || {
        let snapshot = speaker.snapshot();
        match snapshot.sessions.as_slice() {
            [router, other]
                if router.state == "Established"
                    && other.state != "Established"
                    && !other.message.is_empty() =>
            {
                Ok((router.clone(), other.clone()))
            }
            _ => Err(format!("{snapshot:?}")),
        }
    })
    .await;
    assert_eq!(
        (sessions.0.peer, sessions.1.peer),
        (IpAddr::from(ROUTER_IP), IpAddr::from(nobody))
    );
    let message = &sessions.1.message;
    eprintln!(
        "the unreachable peer's session: {} ({message})",
        sessions.1.state
    );
    assert!(
        message.contains(&format!("cannot connect to {nobody}:{BGP_PORT}"))
            || message.contains("no answer to the TCP connection request"),
        "{message}"
    );
    learned(&speaker, STATIC_PREFIX, ROUTER_IP).expect("routes from the router that answers");
    speaker.shutdown().await;
}

/// Whether `pid` is a live process (gone or a zombie is not).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// The speaker's BIRD process id, once it runs.
async fn speaker_pid(speaker: &Speaker) -> u32 {
    eventually("the speaker's BIRD to run", || {
        speaker
            .pid()
            .filter(|pid| alive(*pid))
            .ok_or_else(|| "no BIRD yet".to_owned())
    })
    .await
}

/// BIRD's `since` of the session as `show protocols` prints it (a time of day), which moves
/// whenever the session restarts.
fn bird_since(lab: &Lab) -> String {
    lab.bird
        .protocol_line()
        .split_whitespace()
        .nth(4)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfiguration_keeps_unchanged_sessions_up_and_shutdown_leaves_no_bird() {
    let nobody = Ipv4Addr::new(192, 168, 91, 9);
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let speaker = lab.speaker(node_config(NODE_AS, ROUTER_AS, POD_SUBNET));
    let up = eventually("the session to be Established", || established(&speaker)).await;
    eventually("BIRD to hold the pod subnet", || {
        lab.bird.route_via(POD_SUBNET, NODE_IP)
    })
    .await;
    let pid = speaker_pid(&speaker).await;
    let router_since = bird_since(&lab);

    // A second peer, a new prefix, a peer dropped again: BIRD is reconfigured three times,
    // and the router's session is never touched.
    let mut config = node_config(NODE_AS, ROUTER_AS, NEW_POD_SUBNET);
    config.peers.push(PeerConfig {
        address: nobody.into(),
        asn: ROUTER_AS,
        port: BGP_PORT,
        options: Default::default(),
    });
    speaker.update(config);
    eventually(
        "a second session, failing, next to the Established one",
        || {
            let snapshot = speaker.snapshot();
            match snapshot.sessions.as_slice() {
                [router, other] if other.peer == nobody && router.state == "Established" => Ok(()),
                _ => Err(format!("{snapshot:?}")),
            }
        },
    )
    .await;
    eventually("BIRD to hold the new pod subnet", || {
        lab.bird.route_via(NEW_POD_SUBNET, NODE_IP)
    })
    .await;
    speaker.update(node_config(NODE_AS, ROUTER_AS, NEW_POD_SUBNET));
    eventually("the second session to be gone", || {
        let snapshot = speaker.snapshot();
        (snapshot.sessions.len() == 1)
            .then_some(())
            .ok_or(format!("{snapshot:?}"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = established(&speaker).expect("the session stays Established");
    assert_eq!(still.since, up.since, "the speaker's session did not flap");
    assert_eq!(
        bird_since(&lab),
        router_since,
        "the router's session did not flap"
    );
    assert_eq!(
        speaker.pid(),
        Some(pid),
        "BIRD was reconfigured, not restarted"
    );

    speaker.shutdown().await;
    assert!(!alive(pid), "BIRD {pid} is still running after shutdown");
    let left = fs::read_dir(lab.speaker_options().dir)
        .expect("the speaker's directory")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect::<Vec<_>>();
    assert!(
        !left.iter().any(|f| f == "bird.ctl" || f == "bird.pid"),
        "socket or pid file left: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_bird_is_started_again_and_its_sessions_come_back() {
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let speaker = lab.speaker(node_config(NODE_AS, ROUTER_AS, POD_SUBNET));
    eventually("the session to be Established", || established(&speaker)).await;
    let first = speaker_pid(&speaker).await;

    run("kill", &["-KILL", &first.to_string()]);
    let down = eventually("the session to say BIRD exited", || {
        let snapshot = speaker.snapshot();
        let session = session(&snapshot)?;
        if session.message.contains("BIRD exited") {
            Ok(session)
        } else {
            Err(format!("{snapshot:?}"))
        }
    })
    .await;
    assert_eq!(down.state, "Idle");
    eventually("the session to be Established again", || {
        established(&speaker)
    })
    .await;
    eventually("the speaker to learn BIRD's static route again", || {
        learned(&speaker, STATIC_PREFIX, ROUTER_IP)
    })
    .await;
    let second = speaker_pid(&speaker).await;
    assert_ne!(first, second, "a new BIRD");
    assert!(!alive(first));
    assert_eq!(speaker.restarts(), 1);

    // Dropped without a shutdown (as when the agent's task ends): BIRD goes with it.
    drop(speaker);
    eventually("the dropped speaker's BIRD to be gone", || {
        if alive(second) {
            Err(format!("BIRD {second} still runs"))
        } else {
            Ok(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bird_left_by_a_killed_agent_is_replaced_by_the_next_speaker() {
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let options = lab.speaker_options();
    // What an agent killed with SIGKILL leaves: a BIRD on the speaker's directory, which the
    // agent can no longer stop (here daemonised, so no process of the test waits for it).
    fs::create_dir_all(&options.dir).expect("the speaker's directory");
    let conf = options.dir.join("bird.conf");
    fs::write(
        &conf,
        format!("router id {NODE_IP};\nprotocol device {{ }}\n"),
    )
    .expect("write the leftover's configuration");
    let (ctl, pidfile) = (options.dir.join("bird.ctl"), options.dir.join("bird.pid"));
    run(
        "ip",
        &[
            "netns",
            "exec",
            &lab.node.name,
            "bird",
            "-c",
            &conf.display().to_string(),
            "-s",
            &ctl.display().to_string(),
            "-P",
            &pidfile.display().to_string(),
        ],
    );
    let leftover: u32 = eventually("the leftover BIRD's pid file", || {
        fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| "no pid file yet".to_owned())
    })
    .await;
    assert!(alive(leftover));

    let speaker = Speaker::start(node_config(NODE_AS, ROUTER_AS, POD_SUBNET), options);
    eventually("the session to be Established", || established(&speaker)).await;
    assert!(!alive(leftover), "the leftover BIRD {leftover} still runs");
    let pid = speaker_pid(&speaker).await;
    speaker.shutdown().await;
    assert!(!alive(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_bird_refuses_is_reported_and_nothing_runs() {
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let options = BirdOptions {
        // `false -p -c FILE` fails as BIRD does on a configuration it refuses.
        program: "false".into(),
        ..lab.speaker_options()
    };
    let speaker = Speaker::start(node_config(NODE_AS, ROUTER_AS, POD_SUBNET), options);
    let session = eventually("the session to say BIRD refused the configuration", || {
        let snapshot = speaker.snapshot();
        let session = session(&snapshot)?;
        if session.message.contains("BIRD refused the configuration") {
            Ok(session)
        } else {
            Err(format!("{snapshot:?}"))
        }
    })
    .await;
    assert_eq!(session.state, "Idle");
    assert_eq!(speaker.pid(), None, "no BIRD started");
    speaker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_keeps_the_nodes_route_at_a_graceful_restart_aware_router() {
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let speaker = lab.speaker(node_config(NODE_AS, ROUTER_AS, POD_SUBNET));
    eventually("the session to be Established", || established(&speaker)).await;
    eventually("BIRD to hold the pod subnet via the node", || {
        lab.bird.route_via(POD_SUBNET, NODE_IP)
    })
    .await;
    let router_since = bird_since(&lab);
    let first = speaker_pid(&speaker).await;

    // The router's table, read every 50 ms from a thread while the speaker restarts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = std::sync::Arc::clone(&stop);
        let ctl = lab.bird.ctl.display().to_string();
        std::thread::spawn(move || {
            let mut looks = 0;
            let mut gaps = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = output("birdc", &["-s", &ctl, "show", "route", POD_SUBNET]);
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                looks += 1;
                if !text.contains(&format!("via {NODE_IP} ")) {
                    gaps.push(text);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (looks, gaps)
        })
    };

    // The agent stops for a restart: BIRD exits without withdrawing; a new speaker on the
    // same directory starts BIRD in graceful-restart recovery.
    speaker.stop_for_restart().await;
    assert!(
        !alive(first),
        "BIRD {first} still runs after stop_for_restart"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let speaker = lab.speaker(node_config(NODE_AS, ROUTER_AS, POD_SUBNET));
    eventually("the session to be Established again", || {
        established(&speaker)
    })
    .await;
    eventually("the router's session to be a new one", || {
        let since = bird_since(&lab);
        if since != router_since && lab.bird.protocol_line().contains("Established") {
            Ok(())
        } else {
            Err(lab.bird.protocol_line())
        }
    })
    .await;
    eventually("the speaker to learn BIRD's static route", || {
        learned(&speaker, STATIC_PREFIX, ROUTER_IP)
    })
    .await;
    // A while longer: the router drops stale routes once the restarted BIRD's table is in.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (looks, gaps) = watcher.join().expect("the watcher");
    assert!(looks > 20, "the router was read {looks} times only");
    assert!(
        gaps.is_empty(),
        "the router lost the node's route {} of {looks} times during the restart, e.g.:\n{}",
        gaps.len(),
        gaps[0]
    );
    let pid = speaker_pid(&speaker).await;
    speaker.shutdown().await;
    assert!(!alive(pid));
}

/// Issue #17: an iBGP router that asks for a TCP MD5 password and BFD, as a network team
/// configures its top-of-rack switch. The node with the same password comes up, BFD runs on
/// both ends, and the router receives the node's subnet with the communities and LOCAL_PREF
/// `advertise` asks for; with the wrong password the session never comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_bfd_communities_and_local_preference_reach_a_router_configured_alike() {
    let router = format!(
        "protocol bfd {{ }}
protocol bgp node1 {{
  local {ROUTER_IP} as {ROUTER_AS};
  neighbor {NODE_IP} as {ROUTER_AS};
  rr client;
  direct;
  password \"s3cret\";
  bfd on;
  ipv4 {{ import all; export all; }};
}}"
    );
    let lab = Lab::new(&bird_conf(&router));
    let mut config = node_config(ROUTER_AS, ROUTER_AS, POD_SUBNET);
    config.peers[0].options = PeerOptions {
        password: Some(Md5Key("s3cret".into())),
        bfd: Some(Bfd {
            min_interval: Duration::from_millis(100),
            multiplier: 3,
        }),
        ..PeerOptions::default()
    };
    config.options = SpeakerOptions {
        communities: vec![
            Community::Standard(65000, 100),
            Community::Large(65000, 1, 2),
        ],
        local_preference: Some(150),
        ..SpeakerOptions::default()
    };
    let speaker = lab.speaker(config.clone());
    eventually("the session with a password to be Established", || {
        established(&speaker)
    })
    .await;
    let route = eventually("the router to hold the node's subnet", || {
        lab.bird.route_via(POD_SUBNET, NODE_IP)
    })
    .await;
    for attribute in [
        "BGP.community: (65000,100)",
        "BGP.large_community: (65000, 1, 2)",
        "BGP.local_pref: 150",
    ] {
        assert!(route.contains(attribute), "{attribute} not in:\n{route}");
    }
    let bfd = bfd_up(&lab, NODE_IP.into(), "BFD Up on the router").await;
    eprintln!("router's BFD session: {bfd}");

    // The wrong password: the router drops the node's segments, and the session stays down.
    config.peers[0].options.password = Some(Md5Key("wrong".into()));
    speaker.update(config);
    let down = eventually("the session with the wrong password to be down", || {
        let snapshot = speaker.snapshot();
        let session = session(&snapshot)?;
        if session.state == "Established" {
            Err(format!("{snapshot:?}"))
        } else {
            Ok(session)
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = session(&speaker.snapshot()).expect("one session");
    assert_ne!(still.state, "Established", "{still:?}");
    assert!(
        !lab.bird.protocol_line().contains("Established"),
        "{}",
        lab.bird.protocol_line()
    );
    assert!(
        still
            .message
            .contains("check that both sides use the same key"),
        "{still:?}"
    );
    eprintln!(
        "with the wrong password: {} {:?}",
        down.state, still.message
    );
    speaker.shutdown().await;
}

/// A passive node never connects; the router does, and the session comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_node_accepts_the_routers_connection() {
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let mut config = node_config(NODE_AS, ROUTER_AS, POD_SUBNET);
    config.peers[0].options.passive = true;
    let speaker = lab.speaker(config);
    eventually("the passive session to be Established", || {
        established(&speaker)
    })
    .await;
    eventually("the router to hold the node's subnet", || {
        lab.bird.route_via(POD_SUBNET, NODE_IP)
    })
    .await;
    speaker.shutdown().await;
}

/// Every option `spec.routed.bgp` offers renders a configuration BIRD itself accepts
/// (`bird -p`): multihop, passive, a password with spaces and symbols, BFD, route-reflector client,
/// communities, LOCAL_PREF, graceful restart on and off; IPv4 only and dual-stack; peers at
/// IPv4 and at IPv6 addresses (an IPv6 eBGP peer with every session option, an IPv6 iBGP
/// route-reflector client).
#[test]
fn every_option_renders_a_configuration_bird_accepts() {
    require_tools("the BGP tests", &[("bird", "--version")], "bird2");
    let mut ebgp = PeerConfig::new(Ipv4Addr::new(192, 168, 60, 1), ROUTER_AS, BGP_PORT);
    ebgp.options = PeerOptions {
        passive: true,
        multihop: Some(3),
        route_reflector_client: false,
        password: Some(Md5Key("a $ecret: key~!".into())),
        bfd: Some(Bfd {
            min_interval: Duration::from_millis(300),
            multiplier: 3,
        }),
    };
    let mut ibgp = PeerConfig::new(ROUTER_IP, NODE_AS, BGP_PORT);
    ibgp.options.route_reflector_client = true;
    let mut ebgp6 = ebgp.clone();
    ebgp6.address = Ipv6Addr::new(0xfd00, 0x60, 0, 0, 0, 0, 0, 1).into();
    let mut ibgp6 = ibgp.clone();
    ibgp6.address = ROUTER_IP6.into();
    let mut config = node_config(NODE_AS, ROUTER_AS, POD_SUBNET);
    config.peers = vec![ebgp, ibgp, ebgp6, ibgp6];
    config.local6 = Some(NODE_IP6);
    config.options = SpeakerOptions {
        graceful_restart: Some(4095),
        communities: vec![
            Community::Standard(0, 65535),
            Community::Large(4_294_967_295, 0, 1),
        ],
        local_preference: Some(4_294_967_295),
    };
    let dir = TempDir(std::env::temp_dir().join(format!("cwbgp-render-{}", std::process::id())));
    fs::create_dir_all(&dir.0).expect("create the test's directory");
    let ipv6 = Some(Ipv6Unicast {
        advertise: vec![NODE_SUBNET6.parse().expect("net")],
        next_hop: NODE_IP6,
        range: RANGE6.parse().expect("net"),
    });
    for (graceful_restart, ipv6) in [
        (Some(4095), None),
        (None, None),
        (Some(4095), ipv6.clone()),
        (None, ipv6),
    ] {
        config.options.graceful_restart = graceful_restart;
        config.ipv6 = ipv6;
        let conf = dir.0.join("bird.conf");
        let text = causeway_node_agent::bird::render::render(&config);
        assert_eq!(text.matches("protocol bgp ").count(), 4, "{text}");
        fs::write(&conf, text).expect("write");
        let out = output("bird", &["-p", "-c", &conf.display().to_string()]);
        assert!(
            out.status.success(),
            "bird -p refused:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&conf).unwrap_or_default()
        );
    }
    // An IPv6-only node (an IPv6 network on an IPv6 underlay): IPv6 peers only, an IPv6
    // channel only, a router ID folded from its IPv6 address.
    config.peers.retain(|p| p.address.is_ipv6());
    config.next_hop = None;
    config.advertise.clear();
    config.router_id = Ipv4Addr::new(253, 0, 0, 16);
    config.ipv6 = Some(Ipv6Unicast {
        advertise: vec![NODE_SUBNET6.parse().expect("net")],
        next_hop: NODE_IP6,
        range: RANGE6.parse().expect("net"),
    });
    let conf = dir.0.join("bird.conf");
    let text = causeway_node_agent::bird::render::render(&config);
    assert!(
        text.matches("protocol bgp ").count() == 2 && !text.contains("  ipv4 {"),
        "{text}"
    );
    fs::write(&conf, text).expect("write");
    let out = output("bird", &["-p", "-c", &conf.display().to_string()]);
    assert!(
        out.status.success(),
        "bird -p refused the IPv6-only configuration:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(&conf).unwrap_or_default()
    );
}

/// `routeReflectorClient`: the node as a route reflector (RFC 4456). Router A (not a client)
/// and router B (a client) are both iBGP peers of the node; B sits on a second link of the
/// node and peers with the node's address (multihop on B's side, as a client one hop behind
/// would). A's route reaches B through the node, with A's next hop kept, only while B is a
/// client; the node's own subnet reaches B via the node either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_reflector_client_receives_what_the_node_reflects() {
    // Router A: the lab's router, iBGP, offering STATIC_PREFIX.
    let a_session = format!(
        "protocol bgp node1 {{
  local {ROUTER_IP} as {ROUTER_AS};
  neighbor {NODE_IP} as {ROUTER_AS};
  direct;
  ipv4 {{ import all; export all; }};
}}"
    );
    let lab = Lab::new(&bird_conf(&a_session));
    // Router B on a second link of the node, peering with the node's address.
    let b = SecondRouter::start(
        &lab,
        &format!(
            "router id {B_IP};
protocol device {{ }}
protocol static {{ ipv4; route 192.168.91.0/24 via {B_NODE_IP}; }}
protocol bgp node1 {{
  local {B_IP} as {ROUTER_AS};
  neighbor {NODE_IP} as {ROUTER_AS};
  multihop 2;
  ipv4 {{ import all; export none; }};
}}
"
        ),
    );
    let b_bird = &b.bird;

    // The node: iBGP with both, from the address on each link (BIRD binds per session).
    let mut config = node_config(ROUTER_AS, ROUTER_AS, POD_SUBNET);
    let mut to_b = PeerConfig::new(B_IP, ROUTER_AS, BGP_PORT);
    to_b.options.route_reflector_client = true;
    config.peers.push(to_b);
    let speaker = lab.speaker(config.clone());
    eventually("both sessions Established", || {
        let snapshot = speaker.snapshot();
        if snapshot.sessions.len() == 2
            && snapshot.sessions.iter().all(|s| s.state == "Established")
        {
            Ok(())
        } else {
            Err(format!("{snapshot:?}"))
        }
    })
    .await;
    let reflected = eventually("B to hold A's route, reflected with A's next hop", || {
        let route = b_bird.birdc(&format!("show route {STATIC_PREFIX} all"));
        if route.contains(&format!("BGP.next_hop: {ROUTER_IP}")) {
            Ok(route)
        } else {
            Err(route)
        }
    })
    .await;
    assert!(
        reflected.contains("BGP.originator_id"),
        "a reflected route carries ORIGINATOR_ID:\n{reflected}"
    );
    eventually("B to hold the node's subnet via the node", || {
        let route = b_bird.birdc(&format!("show route {POD_SUBNET} all"));
        if route.contains(&format!("BGP.next_hop: {NODE_IP}")) {
            Ok(route)
        } else {
            Err(route)
        }
    })
    .await;

    // B no longer a client: iBGP split horizon, A's route is withdrawn from B.
    config.peers[1].options.route_reflector_client = false;
    speaker.update(config);
    eventually("A's route gone from B", || {
        let route = b_bird.birdc(&format!("show route {STATIC_PREFIX}"));
        if route.contains("Network not found") {
            Ok(())
        } else {
            Err(route)
        }
    })
    .await;
    speaker.shutdown().await;
}

/// The node's address on the link to a second router.
const B_NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 93, 1);
/// The second router's address on that link.
const B_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 93, 2);

/// A second router, B, on a second link of the lab's node (eth1, 192.168.93.0/24), routing
/// the node's own network through the node, with BIRD running `bird_conf`. Fields drop in
/// order: BIRD, its files, the namespace.
struct SecondRouter {
    bird: Bird,
    _dir: TempDir,
    ns: Netns,
}

impl SecondRouter {
    fn start(lab: &Lab, bird_conf: &str) -> Self {
        let ns = Netns::create("cwbgp");
        run(
            "ip",
            &[
                "-n",
                &lab.node.name,
                "link",
                "add",
                "eth1",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns.name,
            ],
        );
        for (name, dev, addr) in [
            (&lab.node.name, "eth1", B_NODE_IP),
            (&ns.name, "eth0", B_IP),
        ] {
            let cidr = format!("{addr}/24");
            run("ip", &["-n", name, "addr", "add", &cidr, "dev", dev]);
            run("ip", &["-n", name, "link", "set", dev, "up"]);
        }
        run(
            "ip",
            &[
                "-n",
                &ns.name,
                "route",
                "add",
                "192.168.91.0/24",
                "via",
                &B_NODE_IP.to_string(),
            ],
        );
        let dir = TempDir(std::env::temp_dir().join(&ns.name));
        fs::create_dir_all(&dir.0).expect("create B's directory");
        let bird = Bird::start_in(&ns.name, &dir.0, bird_conf);
        SecondRouter {
            bird,
            _dir: dir,
            ns,
        }
    }
}

/// `ebgpMultihop`: an eBGP router whose peering address is not on the node's segments (B's
/// loopback 10.99.0.2, routed through the link). A `direct` session cannot reach it; with
/// `multihop 2` the session comes up and the node learns B's route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ebgp_multihop_session_reaches_a_router_that_is_not_on_link() {
    const B_LOOPBACK: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
    const B_AS: u32 = 65100;
    let lab = Lab::new(&bird_conf(&ebgp_session(NODE_AS)));
    let b = SecondRouter::start(
        &lab,
        &format!(
            "router id {B_LOOPBACK};
protocol device {{ }}
protocol static {{ ipv4; route 192.168.91.0/24 via {B_NODE_IP}; route 10.250.77.0/24 via {B_NODE_IP}; }}
protocol bgp node1 {{
  local {B_LOOPBACK} as {B_AS};
  neighbor {NODE_IP} as {NODE_AS};
  multihop 2;
  ipv4 {{ import all; export where net = 10.250.77.0/24; }};
}}
"
        ),
    );
    run(
        "ip",
        &["-n", &b.ns.name, "addr", "add", "10.99.0.2/32", "dev", "lo"],
    );
    run("ip", &["-n", &b.ns.name, "link", "set", "lo", "up"]);
    run(
        "ip",
        &[
            "-n",
            &lab.node.name,
            "route",
            "add",
            "10.99.0.2/32",
            "via",
            &B_IP.to_string(),
        ],
    );
    let mut config = node_config(NODE_AS, ROUTER_AS, POD_SUBNET);
    let mut to_b = PeerConfig::new(B_LOOPBACK, B_AS, BGP_PORT);
    to_b.options.multihop = Some(2);
    config.peers.push(to_b);
    let speaker = lab.speaker(config);
    let learned = eventually(
        "the multihop session Established and B's route learned",
        || {
            let snapshot = speaker.snapshot();
            let b_session = snapshot.sessions.iter().find(|s| s.peer == B_LOOPBACK);
            match (b_session, snapshot.learned.v4.get(&net("10.250.77.0/24"))) {
                (Some(s), Some(hop)) if s.state == "Established" => Ok(*hop),
                _ => Err(format!("{snapshot:?}")),
            }
        },
    )
    .await;
    // eBGP: B announces its own peering address as next hop.
    assert_eq!(learned, B_LOOPBACK, "B's route, via B's peering address");
    eventually("B to hold the node's subnet", || {
        let route = b.bird.birdc(&format!("show route {POD_SUBNET}"));
        if route.contains(POD_SUBNET) {
            Ok(())
        } else {
            Err(route)
        }
    })
    .await;
    speaker.shutdown().await;
}

/// Dual-stack (issue #18): one session to the router, on IPv4 addresses, with an `ipv6`
/// channel beside the `ipv4` one (MP-BGP). The speaker's configuration comes from a
/// dual-stack Routed PodNetwork and the node's NodeSubnet (`peering`). The node announces both
/// subnets, the IPv6 one with its IPv6 address as next hop; it learns the router's routes of
/// both families, IPv6 ones only inside the network's secondaryCidr; the agent's plan installs
/// them in the node's kernel (`proto 249`); and the node's IPv6 pod gateway address reaches an
/// address behind the router and back (the router routes the node's IPv6 subnet by what the
/// node announced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_node_exchanges_both_families_over_one_session_and_installs_the_learned_ipv6_routes()
 {
    const PEER_SUBNET: &str = "10.244.7.0/24";
    const PEER_SUBNET6: &str = "fd00:10:244:7::/64";
    const PEER_POD6: &str = "fd00:10:244:7::1";
    const OUTSIDE6: &str = "fd00:99::/64";
    let lab = Lab::dual_stack(&format!(
        "router id {ROUTER_IP};
protocol device {{ }}
protocol static {{ ipv4; route {PEER_SUBNET} via {ROUTER_IP}; }}
protocol static {{ ipv6; route {PEER_SUBNET6} via {ROUTER_IP6}; route {OUTSIDE6} via {ROUTER_IP6}; }}
protocol kernel {{ ipv6 {{ export where source = RTS_BGP; }}; }}
protocol bgp node1 {{
  local {ROUTER_IP} as {ROUTER_AS};
  neighbor {NODE_IP} as {NODE_AS};
  ipv4 {{ import all; export all; }};
  ipv6 {{ import all; export all; }};
}}
"
    ));
    let router = &lab.router.name;
    run(
        "ip",
        &[
            "-n",
            router,
            "addr",
            "add",
            &format!("{PEER_POD6}/128"),
            "dev",
            "lo",
        ],
    );
    run("ip", &["-n", router, "link", "set", "lo", "up"]);

    let network: causeway_crds::PodNetworkSpec = serde_json::from_value(serde_json::json!({
        "cidr": "10.244.0.0/16", "nodeSubnetPrefixLength": 24,
        "secondaryCidr": RANGE6, "secondaryNodeSubnetPrefixLength": 64,
        "mode": "Routed", "natOutgoing": false,
        "routed": {"bgp": {"asn": NODE_AS, "holdTimeSeconds": 3, "keepaliveSeconds": 1,
            "peers": [{"address": ROUTER_IP.to_string(), "asn": ROUTER_AS}]}},
    }))
    .expect("PodNetwork spec");
    let own = causeway_crds::NodeSubnet::new(
        "routed-node-a",
        causeway_crds::NodeSubnetSpec {
            network: "routed".into(),
            node_name: "node-a".into(),
            cidr: POD_SUBNET.into(),
            node_address: NODE_IP.to_string(),
            vtep_mac: None,
            secondary_cidr: Some(NODE_SUBNET6.into()),
            secondary_node_address: Some(NODE_IP6.to_string()),
        },
    );
    let config = causeway_node_agent::peering::speaker_config(
        &network,
        &own,
        &Default::default(),
        &Default::default(),
        "causeway-system",
    )
    .expect("valid")
    .expect("BGP on");
    assert_eq!(
        config.ipv6,
        Some(Ipv6Unicast {
            advertise: vec![NODE_SUBNET6.parse().expect("net")],
            next_hop: NODE_IP6,
            range: RANGE6.parse().expect("net"),
        })
    );
    let speaker = lab.speaker(config);

    // The speaker learns both families over its one session; the route outside the range
    // is not imported.
    let snapshot = eventually("one session learning IPv4 and IPv6 routes", || {
        let snapshot = speaker.snapshot();
        let s = session(&snapshot)?;
        let v6: Ipv6Net = PEER_SUBNET6.parse().expect("net");
        if s.state == "Established"
            && snapshot.learned.v4.contains_key(&net(PEER_SUBNET))
            && snapshot.learned.v6.contains_key(&v6)
            && s.routes6 == Some((1, 1))
        {
            Ok(snapshot)
        } else {
            Err(format!("{snapshot:?}"))
        }
    })
    .await;
    assert_eq!(
        snapshot.learned.v4,
        [(net(PEER_SUBNET), ROUTER_IP)].into(),
        "{snapshot:?}"
    );
    assert_eq!(
        snapshot.learned.v6,
        [(PEER_SUBNET6.parse().expect("net"), ROUTER_IP6)].into(),
        "{OUTSIDE6} lies outside {RANGE6}: not imported"
    );
    let s = session(&snapshot).expect("one session");
    assert_eq!(
        (s.routes_received, s.routes_advertised, s.routes6),
        (1, 1, Some((1, 1))),
        "per family: one route each way"
    );

    // The router: both families negotiated on one session, the node's IPv4 subnet via its
    // IPv4 address and its IPv6 subnet via its IPv6 address.
    let capabilities = lab.bird.birdc("show protocols all node1");
    assert_eq!(
        capabilities.matches("AF announced: ipv4 ipv6").count(),
        2,
        "both sides announce both families (RFC 4760):\n{capabilities}"
    );
    eventually("the router's route to the node's IPv4 subnet", || {
        lab.bird.route_via(POD_SUBNET, NODE_IP)
    })
    .await;
    let route6 = lab.bird.birdc(&format!("show route {NODE_SUBNET6} all"));
    assert!(
        route6.contains(&format!("via {NODE_IP6} on eth0"))
            && route6.contains(&format!("BGP.next_hop: {NODE_IP6}\n")),
        "the node's IPv6 subnet via its IPv6 address only:\n{route6}"
    );

    // The agent's plan installs what was learned, both families, in the node's kernel.
    let mut dp = causeway_node_agent::netlink::Netlink::in_netns(&lab.node.name)
        .await
        .expect("netlink in the node namespace");
    let observed =
        causeway_node_agent::pass::observe(&mut dp, NODE_IP.into(), Some(NODE_IP6.into()))
            .await
            .unwrap_or_else(|e| panic!("observe: {e:?}"));
    let planned = causeway_node_agent::plan::plan(&causeway_node_agent::plan::Input {
        own: &own,
        peers: &[],
        network: &network,
        underlay: &observed.underlay,
        learned: &snapshot.learned,
        returns: &[],
        snat: &[],
        clients: &[],
        protected: &Default::default(),
        protected6: &Default::default(),
        pods6: &Default::default(),
    })
    .expect("plan");
    assert!(planned.skipped.is_empty(), "{:?}", planned.skipped);
    let ops = causeway_node_agent::diff::diff(&planned.desired, &observed.state);
    dp.apply_all(&ops)
        .await
        .unwrap_or_else(|(i, e)| panic!("{}: {}", ops[i], e.message));
    let node = &lab.node.name;
    let kernel6 = String::from_utf8_lossy(
        &output("ip", &["-n", node, "-6", "route", "show", "proto", "249"]).stdout,
    )
    .into_owned();
    assert_eq!(
        kernel6.trim(),
        format!("{PEER_SUBNET6} via {ROUTER_IP6} dev eth0 metric 1024 pref medium"),
        "ip -6 route show proto 249"
    );
    let kernel4 = String::from_utf8_lossy(
        &output("ip", &["-n", node, "-4", "route", "show", "proto", "249"]).stdout,
    )
    .into_owned();
    // The IPv4 route goes through a nexthop object of its own (`nhid ID`); the IPv6 one does
    // not (node-agent/src/kernel/netlink/nexthop.rs).
    let words: Vec<&str> = kernel4.split_whitespace().collect();
    assert!(
        words.get(1) == Some(&"nhid") && words.get(2).is_some_and(|id| id.parse::<u32>().is_ok()),
        "ip -4 route show proto 249: {kernel4}"
    );
    let without_id: Vec<&str> = words
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 1 | 2))
        .map(|(_, w)| *w)
        .collect();
    assert_eq!(
        without_id.join(" "),
        format!("{PEER_SUBNET} via {ROUTER_IP} dev eth0"),
        "ip -4 route show proto 249"
    );

    // Traffic: from the node's IPv6 pod gateway to the address behind the router, and back
    // along the router's route to the node's IPv6 subnet (learned from the node).
    let gateway6 = "fd00:10:244:1::1";
    eventually(
        "an IPv6 ping from the node's pod subnet across the router",
        || {
            let out = output(
                "ip",
                &[
                    "netns", "exec", node, "ping", "-6", "-c", "1", "-W", "1", "-I", gateway6,
                    PEER_POD6,
                ],
            );
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{}{}\nrouter: {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&output("ip", &["-n", router, "-6", "route"]).stdout)
                ))
            }
        },
    )
    .await;

    // A new IPv6 next hop (the node's IPv6 address changed) is announced by reconfiguring,
    // without restarting the session.
    let since = bird_since(&lab);
    let moved = Ipv6Addr::new(0xfd00, 0x91, 0, 0, 0, 0, 0, 0x99);
    run(
        "ip",
        &[
            "-n",
            node,
            "addr",
            "add",
            &format!("{moved}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    );
    let mut own_moved = own.clone();
    own_moved.spec.secondary_node_address = Some(moved.to_string());
    let config = causeway_node_agent::peering::speaker_config(
        &network,
        &own_moved,
        &Default::default(),
        &Default::default(),
        "causeway-system",
    )
    .expect("valid")
    .expect("BGP on");
    speaker.update(config);
    eventually(
        "the router's route to the node's IPv6 subnet via the new address",
        || {
            let route = lab.bird.birdc(&format!("show route {NODE_SUBNET6} all"));
            if route.contains(&format!("BGP.next_hop: {moved}\n")) {
                Ok(())
            } else {
                Err(route)
            }
        },
    )
    .await;
    assert_eq!(bird_since(&lab), since, "the session stayed up");
    speaker.shutdown().await;
}

/// A router peered at its IPv6 address, on an IPv4 network (issue #18): the node's session
/// runs over IPv6 from its IPv6 address ([`SpeakerConfig::local6`]) and carries IPv4
/// unicast only. The router holds the node's subnet via the node's IPv4 address (the next
/// hop the export filter sets; no extended next hop), the node learns the router's IPv4
/// route via the router's IPv4 address, and TCP MD5 and BFD work over IPv6 as over IPv4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_to_an_ipv6_peer_carries_ipv4_with_ipv4_next_hops_md5_and_bfd() {
    let router = format!(
        "protocol bfd {{ }}
protocol bgp node1 {{
  local {ROUTER_IP6} as {ROUTER_AS};
  neighbor {NODE_IP6} as {NODE_AS};
  password \"v6 s3cret\";
  bfd on;
  ipv4 {{ import all; export all; }};
}}"
    );
    let lab = Lab::dual_stack(&bird_conf(&router));
    let mut config = node_config(NODE_AS, ROUTER_AS, POD_SUBNET);
    let mut peer = PeerConfig::new(ROUTER_IP6, ROUTER_AS, BGP_PORT);
    peer.options = PeerOptions {
        password: Some(Md5Key("v6 s3cret".into())),
        bfd: Some(Bfd {
            min_interval: Duration::from_millis(100),
            multiplier: 3,
        }),
        ..PeerOptions::default()
    };
    config.peers = vec![peer];
    config.local6 = Some(NODE_IP6);
    let speaker = lab.speaker(config);
    let up = eventually("the session over IPv6 to be Established", || {
        established(&speaker)
    })
    .await;
    assert_eq!(up.peer, IpAddr::from(ROUTER_IP6), "{up:?}");
    assert_eq!(
        up.routes6, None,
        "no IPv6 channel on an IPv4 network: {up:?}"
    );
    let shown = lab.bird.birdc("show protocols all node1");
    assert!(
        shown.contains(&format!("Neighbor address: {NODE_IP6}"))
            && shown.contains("AF announced: ipv4")
            && !shown.contains("ipv6"),
        "{shown}"
    );
    let route = eventually(
        "the router to hold the node's subnet via its IPv4 address",
        || lab.bird.route_via(POD_SUBNET, NODE_IP),
    )
    .await;
    assert!(
        route.contains(&format!("BGP.next_hop: {NODE_IP}")),
        "a plain IPv4 next hop: {route}"
    );
    eventually(
        "the node to learn the router's route via its IPv4 address",
        || learned(&speaker, STATIC_PREFIX, ROUTER_IP),
    )
    .await;
    eventually("the counts of the ipv4 channel", || {
        let s = established(&speaker)?;
        if s.routes_advertised == 1 && s.routes_received >= 1 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    let bfd = bfd_up(&lab, NODE_IP6.into(), "BFD Up over IPv6 on the router").await;
    eprintln!("router's BFD session: {bfd}");
    speaker.shutdown().await;
}
