//! The netlink dataplane against the real kernel, each test in throwaway network namespaces
//! (`cwnl-<pid>-<n>`) removed by a guard even when the test panics. Nothing here touches the
//! root namespace: the underlay is a veth pair inside the test's namespace(s), and every
//! check reads the namespace back with `ip` / `bridge`, independently of the code under test.
//!
//! These tests need root and the `ip`, `bridge` and `ping` tools; without them they fail
//! with a message saying so (they never pass by skipping).

use std::net::{IpAddr, Ipv4Addr};
use std::process::Output;

mod support;
use support::{Netns, output, require_root, require_tools, run};

use causeway_node_agent::model::{
    Address, Dataplane, Fdb, Link, LinkKind, Mac, Masquerade, Masquerade6, Nat, Nat6, Neighbour,
    Op, Route, Snat, Snat6, State,
};
use causeway_node_agent::netlink::{Netlink, Underlay};
use causeway_node_agent::{arp, ndp};
use ipnet::{IpNet, Ipv4Net};
use serde_json::Value;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const MAC_1: Mac = Mac([0x0e, 0xcc, 0, 0, 0, 1]);
const MAC_2: Mac = Mac([0x0e, 0xcc, 0, 0, 0, 2]);
const MAC_3: Mac = Mac([0x0e, 0xcc, 0, 0, 0, 3]);

fn require_root_and_tools() {
    require_root("the netlink tests");
    require_tools(
        "the netlink tests",
        &[
            ("ip", "-V"),
            ("bridge", "-V"),
            ("ping", "-V"),
            ("nft", "-v"),
        ],
        "iproute2 iputils-ping nftables",
    );
}

impl Netns {
    /// A throwaway namespace `cwnl-<pid>-<n>`, deleted on drop.
    fn new() -> Self {
        require_root_and_tools();
        Netns::create("cwnl")
    }

    /// A namespace with an underlay: veth `eth0` (192.168.77.1/24, up) and its peer `eth1`.
    fn with_underlay() -> Self {
        let ns = Self::new();
        ns.ip("link add eth0 type veth peer name eth1");
        ns.ip(&format!("addr add {NODE_IP}/24 dev eth0"));
        ns.ip("link set eth0 up");
        ns.ip("link set eth1 up");
        ns
    }

    /// `ip -n NS ARGS`, which must succeed; its stdout.
    fn ip(&self, args: &str) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend(args.split_whitespace());
        run("ip", &all)
    }

    /// `ip -n NS -j ARGS` parsed.
    fn ip_json(&self, args: &str) -> Vec<Value> {
        json(&self.ip(&format!("-j {args}")))
    }

    /// `bridge -n NS -j ARGS` parsed.
    fn bridge_json(&self, args: &str) -> Vec<Value> {
        let mut all = vec!["-n", &self.name, "-j"];
        all.extend(args.split_whitespace());
        json(&run("bridge", &all))
    }

    /// `ip -n NS ARGS` may fail; whether it did.
    fn ip_succeeds(&self, args: &str) -> bool {
        let mut all = vec!["-n", &self.name];
        all.extend(args.split_whitespace());
        output("ip", &all).status.success()
    }

    /// `ip netns exec NS ARGS`, which may fail.
    fn exec(&self, args: &str) -> Output {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend(args.split_whitespace());
        output("ip", &all)
    }

    async fn netlink(&self) -> Netlink {
        Netlink::in_netns(&self.name)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }
}

fn json(text: &str) -> Vec<Value> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str(text).expect("JSON output") {
        Value::Array(items) => items,
        other => panic!("expected a JSON array, got {other}"),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("CIDR")
}

fn net4(s: &str) -> Ipv4Net {
    s.parse().expect("IPv4 CIDR")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().expect("IPv4 address")
}

fn bridge(name: &str, mtu: u32, up: bool) -> Link {
    Link {
        name: name.into(),
        kind: LinkKind::Bridge,
        mtu,
        up,
    }
}

fn vxlan(name: &str, vni: u32, local: impl Into<IpAddr>, underlay: &str, mac: Mac) -> Link {
    Link {
        name: name.into(),
        kind: LinkKind::Vxlan {
            vni,
            port: 8472,
            local: local.into(),
            underlay: underlay.into(),
            mac,
        },
        mtu: 1450,
        up: true,
    }
}

fn route(dst: &str, gateway: Option<&str>, dev: &str, onlink: bool) -> Route {
    Route {
        dst: net(dst),
        gateway: gateway.map(ip),
        dev: dev.into(),
        onlink,
    }
}

async fn apply(netlink: &mut Netlink, ops: &[Op]) {
    for op in ops {
        netlink
            .apply(op)
            .await
            .unwrap_or_else(|e| panic!("apply failed: {e}"));
    }
}

async fn apply_err(netlink: &mut Netlink, op: &Op) -> causeway_node_agent::model::ApplyError {
    match netlink.apply(op).await {
        Ok(()) => panic!("`{op}` succeeded but should have failed"),
        Err(e) => e,
    }
}

fn link_json(ns: &Netns, name: &str) -> Value {
    let mut links = ns.ip_json(&format!("-d link show dev {name}"));
    assert_eq!(links.len(), 1, "{name}: {links:?}");
    links.remove(0)
}

fn is_up(link: &Value) -> bool {
    link["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .any(|f| f == "UP")
}

#[tokio::test(flavor = "multi_thread")]
async fn created_bridges_and_vxlans_have_every_requested_attribute() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    apply(
        &mut netlink,
        &[
            Op::CreateLink(bridge("cw-br0", 1450, true)),
            Op::CreateLink(bridge("cw-br1", 1400, false)),
            Op::CreateLink(vxlan("cw-vx1", 42, NODE_IP, "eth0", MAC_1)),
        ],
    )
    .await;

    let br0 = link_json(&ns, "cw-br0");
    assert_eq!(br0["linkinfo"]["info_kind"], "bridge");
    assert_eq!(br0["mtu"], 1450);
    assert!(is_up(&br0), "{br0}");
    let br1 = link_json(&ns, "cw-br1");
    assert_eq!(br1["mtu"], 1400);
    assert!(!is_up(&br1), "{br1}");

    let vx = link_json(&ns, "cw-vx1");
    let data = &vx["linkinfo"]["info_data"];
    assert_eq!(vx["linkinfo"]["info_kind"], "vxlan");
    assert_eq!(data["id"], 42);
    assert_eq!(data["port"], 8472);
    assert_eq!(data["local"], NODE_IP.to_string());
    assert_eq!(data["link"], "eth0");
    assert_eq!(data["learning"], false, "nolearning: {data}");
    assert_eq!(vx["address"], MAC_1.to_string());
    assert_eq!(vx["mtu"], 1450);
    assert!(is_up(&vx), "{vx}");
}

#[tokio::test(flavor = "multi_thread")]
async fn updating_a_link_changes_its_mtu_and_state() {
    let ns = Netns::new();
    let mut netlink = ns.netlink().await;
    apply(
        &mut netlink,
        &[Op::CreateLink(bridge("cw-br0", 1500, true))],
    )
    .await;

    let update = |mtu, up| Op::UpdateLink {
        name: "cw-br0".into(),
        mtu,
        up,
    };
    apply(&mut netlink, &[update(1400, false)]).await;
    let link = link_json(&ns, "cw-br0");
    assert_eq!(link["mtu"], 1400);
    assert!(!is_up(&link));

    apply(&mut netlink, &[update(1450, true)]).await;
    let link = link_json(&ns, "cw-br0");
    assert_eq!(link["mtu"], 1450);
    assert!(is_up(&link));
}

#[tokio::test(flavor = "multi_thread")]
async fn addresses_are_added_idempotently_and_deleted() {
    let ns = Netns::new();
    let mut netlink = ns.netlink().await;
    let add = Op::AddAddress {
        dev: "cw-br0".into(),
        addr: net("10.244.1.1/24"),
    };
    let delete = Op::DeleteAddress {
        dev: "cw-br0".into(),
        addr: net("10.244.1.1/24"),
    };
    apply(
        &mut netlink,
        &[
            Op::CreateLink(bridge("cw-br0", 1450, true)),
            add.clone(),
            add,
        ],
    )
    .await;

    let addresses = |ns: &Netns| -> Vec<(String, u64)> {
        ns.ip_json("-4 addr show dev cw-br0")
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| {
                (
                    a["local"].as_str().expect("local").to_owned(),
                    a["prefixlen"].as_u64().expect("prefixlen"),
                )
            })
            .collect()
    };
    assert_eq!(addresses(&ns), vec![("10.244.1.1".to_owned(), 24)]);

    apply(&mut netlink, std::slice::from_ref(&delete)).await;
    assert_eq!(addresses(&ns), vec![]);
    // Deleting what is gone reaches the goal.
    apply(&mut netlink, &[delete]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_are_replaced_with_protocol_249_and_deleted() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    apply(
        &mut netlink,
        &[Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1))],
    )
    .await;

    let via_vxlan = route("10.244.2.0/24", Some("10.244.2.0"), "cw-vx1", true);
    let via_underlay = route("10.244.2.0/24", Some("192.168.77.2"), "eth0", false);
    let device = route("10.244.4.0/24", None, "cw-vx1", false);
    apply(
        &mut netlink,
        &[
            Op::ReplaceRoute(via_vxlan.clone()),
            Op::ReplaceRoute(device.clone()),
        ],
    )
    .await;
    let routes = ns.ip_json("route show proto 249");
    assert_eq!(routes.len(), 2, "{routes:?}");
    let onlink = routes
        .iter()
        .find(|r| r["dst"] == "10.244.2.0/24")
        .expect("10.244.2.0/24");
    assert_eq!(onlink["gateway"], "10.244.2.0");
    assert_eq!(onlink["dev"], "cw-vx1");
    assert!(
        onlink["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .any(|f| f == "onlink"),
        "{onlink}"
    );
    let dev_route = routes
        .iter()
        .find(|r| r["dst"] == "10.244.4.0/24")
        .expect("10.244.4.0/24");
    assert_eq!(dev_route["dev"], "cw-vx1");
    assert_eq!(dev_route["scope"], "link");
    assert!(dev_route.get("gateway").is_none(), "{dev_route}");

    // Replace, not add: the destination now goes via the underlay, and only that way.
    apply(&mut netlink, &[Op::ReplaceRoute(via_underlay.clone())]).await;
    let routes = ns.ip_json("route show proto 249 10.244.2.0/24");
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["gateway"], "192.168.77.2");
    assert_eq!(routes[0]["dev"], "eth0");
    assert_eq!(ns.ip_json("route show 10.244.2.0/24").len(), 1);

    apply(
        &mut netlink,
        &[
            Op::DeleteRoute(via_underlay.clone()),
            Op::DeleteRoute(device.clone()),
        ],
    )
    .await;
    assert_eq!(ns.ip_json("route show proto 249"), Vec::<Value>::new());
    apply(
        &mut netlink,
        &[Op::DeleteRoute(via_underlay), Op::DeleteRoute(device)],
    )
    .await;

    // A foreign route with the same destination and metric is never taken over: the
    // operation fails and says so, and the foreign route stays.
    ns.ip("route add 10.244.9.0/24 via 192.168.77.2 dev eth0 proto static");
    let ours = route("10.244.9.0/24", Some("10.244.9.0"), "cw-vx1", true);
    let error = apply_err(&mut netlink, &Op::ReplaceRoute(ours)).await;
    assert!(
        error.message.contains("Causeway does not own") && error.message.contains("10.244.9.0/24"),
        "{error}"
    );
    let kept = ns.ip_json("route show 10.244.9.0/24");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["protocol"], "static", "{kept:?}");
}

/// The agent's nexthop objects (`ip -j nexthop show`, protocol 249), by id.
fn our_nexthops(ns: &Netns) -> Vec<Value> {
    ns.ip_json("nexthop show")
        .into_iter()
        .filter(|n| n["protocol"] == "249")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv4_gateway_routes_go_through_a_nexthop_object_of_their_own() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    apply(
        &mut netlink,
        &[Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1))],
    )
    .await;
    // Left behind by an agent that stopped between an object and its route, and another
    // program's object: a full observation deletes the first and leaves the second.
    ns.ip("nexthop add id 4177526785 via 10.244.7.0 dev cw-vx1 onlink proto 249");
    ns.ip("nexthop add id 5 via 192.168.77.2 dev eth0 proto static");

    let via_vxlan = route("10.244.2.0/24", Some("10.244.2.0"), "cw-vx1", true);
    let other = route("10.244.3.0/24", Some("10.244.3.0"), "cw-vx1", true);
    apply(
        &mut netlink,
        &[
            Op::ReplaceRoute(via_vxlan.clone()),
            Op::ReplaceRoute(other.clone()),
        ],
    )
    .await;
    let routes = ns.ip_json("route show proto 249 10.244.2.0/24");
    assert_eq!(routes.len(), 1, "{routes:?}");
    let id = routes[0]["nhid"]
        .as_u64()
        .expect("the route names an object");
    assert!(
        (0xf900_0000..=0xf9ff_ffff).contains(&id),
        "an id in the agent's range: {id:#x}"
    );
    let object = ns.ip_json(&format!("nexthop show id {id}"));
    assert_eq!(object[0]["gateway"], "10.244.2.0", "{object:?}");
    assert_eq!(object[0]["dev"], "cw-vx1", "{object:?}");
    assert_eq!(object[0]["protocol"], "249", "{object:?}");
    assert!(
        object[0]["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "onlink")),
        "{object:?}"
    );

    // Observed as the plan has it; the stray object is gone, the foreign one stays.
    let state = netlink.observe().await.expect("observe");
    assert_eq!(state.routes.get(&via_vxlan.dst), Some(&via_vxlan));
    assert_eq!(state.routes.get(&other.dst), Some(&other));
    assert_eq!(our_nexthops(&ns).len(), 2, "{:?}", our_nexthops(&ns));
    assert_eq!(ns.ip_json("nexthop show id 5").len(), 1);

    // With the kernel's compatibility mode off, a route dump leaves the gateway out: it is
    // read from the object.
    assert!(
        ns.exec("sysctl -q -w net.ipv4.nexthop_compat_mode=0")
            .status
            .success()
    );
    let state = netlink.observe().await.expect("observe");
    assert_eq!(state.routes.get(&via_vxlan.dst), Some(&via_vxlan));
    // ... and a route of ours in the way of a replace is still known as ours.
    apply(&mut netlink, &[Op::ReplaceRoute(via_vxlan.clone())]).await;
    assert!(
        ns.exec("sysctl -q -w net.ipv4.nexthop_compat_mode=1")
            .status
            .success()
    );

    // A new gateway changes the object in place.
    let via_underlay = route("10.244.2.0/24", Some("192.168.77.2"), "eth0", false);
    apply(&mut netlink, &[Op::ReplaceRoute(via_underlay.clone())]).await;
    let routes = ns.ip_json("route show proto 249 10.244.2.0/24");
    assert_eq!(routes[0]["nhid"].as_u64(), Some(id), "{routes:?}");
    assert_eq!(routes[0]["gateway"], "192.168.77.2", "{routes:?}");
    assert_eq!(routes[0]["dev"], "eth0", "{routes:?}");

    // A device route to the same destination: the object goes with the gateway.
    let device = route("10.244.2.0/24", None, "cw-vx1", false);
    apply(&mut netlink, &[Op::ReplaceRoute(device.clone())]).await;
    assert!(
        our_nexthops(&ns)
            .iter()
            .all(|n| n["id"].as_u64() != Some(id)),
        "{:?}",
        our_nexthops(&ns)
    );
    apply(&mut netlink, &[Op::DeleteRoute(device)]).await;

    // Deleting a route deletes its object too, and the route's deletion is announced to the
    // table's watchers (deleting the object alone would remove the route silently).
    let mut monitor = std::process::Command::new("ip")
        .args(["-n", &ns.name, "monitor", "route"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ip monitor route");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    apply(&mut netlink, &[Op::DeleteRoute(other.clone())]).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    monitor.kill().expect("stop ip monitor");
    let seen = monitor.wait_with_output().expect("ip monitor output");
    let seen = String::from_utf8_lossy(&seen.stdout);
    assert!(seen.contains("Deleted 10.244.3.0/24"), "{seen}");
    assert_eq!(ns.ip_json("route show proto 249"), Vec::<Value>::new());
    assert_eq!(our_nexthops(&ns), Vec::<Value>::new());
    apply(&mut netlink, &[Op::DeleteRoute(other)]).await;

    // A plain gateway route of ours (an older agent's) is read, then moved onto an object.
    ns.ip("route add 10.244.5.0/24 via 10.244.5.0 dev cw-vx1 onlink proto 249");
    let old = route("10.244.5.0/24", Some("10.244.5.0"), "cw-vx1", true);
    let state = netlink.observe().await.expect("observe");
    assert_eq!(state.routes.get(&old.dst), Some(&old));
    apply(&mut netlink, &[Op::ReplaceRoute(old.clone())]).await;
    let routes = ns.ip_json("route show 10.244.5.0/24");
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert!(routes[0]["nhid"].is_u64(), "{routes:?}");

    // Refused over a foreign route: the new object is deleted again.
    ns.ip("route add 10.244.9.0/24 via 192.168.77.2 dev eth0 proto static");
    let error = apply_err(
        &mut netlink,
        &Op::ReplaceRoute(route("10.244.9.0/24", Some("10.244.9.0"), "cw-vx1", true)),
    )
    .await;
    assert!(error.message.contains("Causeway does not own"), "{error}");
    assert_eq!(our_nexthops(&ns).len(), 1, "{:?}", our_nexthops(&ns));
    assert_eq!(ns.ip_json("nexthop show id 5").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn neighbours_are_replaced_as_permanent_and_deleted() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let neighbour = |mac| Neighbour {
        dev: "cw-vx1".into(),
        ip: ip("10.244.2.0"),
        mac,
    };
    apply(
        &mut netlink,
        &[
            Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1)),
            Op::ReplaceNeighbour(neighbour(MAC_2)),
            Op::ReplaceNeighbour(neighbour(MAC_3)),
        ],
    )
    .await;
    let entries = ns.ip_json("neigh show dev cw-vx1");
    assert_eq!(entries.len(), 1, "replaced, not added: {entries:?}");
    assert_eq!(entries[0]["dst"], "10.244.2.0");
    assert_eq!(entries[0]["lladdr"], MAC_3.to_string());
    assert_eq!(entries[0]["state"], serde_json::json!(["PERMANENT"]));

    apply(&mut netlink, &[Op::DeleteNeighbour(neighbour(MAC_3))]).await;
    assert_eq!(ns.ip_json("neigh show dev cw-vx1"), Vec::<Value>::new());
    apply(&mut netlink, &[Op::DeleteNeighbour(neighbour(MAC_3))]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_addresses_routes_and_neighbours_are_applied_observed_and_deleted_like_ipv4_ones() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let gateway = Address {
        addr: net("fd00:10:244:1::1/64"),
    };
    let vtep = Address {
        addr: net("fd00:10:244:1::/128"),
    };
    let peer_route = route(
        "fd00:10:244:2::/64",
        Some("fd00:10:244:2::"),
        "cw-vx1",
        true,
    );
    let v4_route = route("10.244.2.0/24", Some("10.244.2.0"), "cw-vx1", true);
    let peer_neighbour = Neighbour {
        dev: "cw-vx1".into(),
        ip: ip("fd00:10:244:2::"),
        mac: MAC_2,
    };
    let v4_neighbour = Neighbour {
        dev: "cw-vx1".into(),
        ip: ip("10.244.2.0"),
        mac: MAC_2,
    };
    apply(
        &mut netlink,
        &[
            Op::CreateLink(bridge("cw-br0", 1450, true)),
            Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1)),
            Op::AddAddress {
                dev: "cw-br0".into(),
                addr: gateway.addr,
            },
            Op::AddAddress {
                dev: "cw-vx1".into(),
                addr: vtep.addr,
            },
            // Twice: idempotent.
            Op::AddAddress {
                dev: "cw-vx1".into(),
                addr: vtep.addr,
            },
            Op::ReplaceNeighbour(peer_neighbour.clone()),
            Op::ReplaceNeighbour(v4_neighbour.clone()),
            Op::ReplaceRoute(peer_route.clone()),
            Op::ReplaceRoute(v4_route.clone()),
        ],
    )
    .await;
    // What iproute2 sees: the addresses usable at once (`nodad`), even on a bridge without
    // ports, where duplicate address detection would keep them tentative.
    let tentative: Vec<Value> = ns
        .ip_json("-6 addr show tentative")
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["scope"] == "global")
        .collect();
    assert_eq!(tentative, Vec::<Value>::new());
    let routes = ns.ip_json("-6 route show proto 249");
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["dst"], "fd00:10:244:2::/64");
    assert_eq!(routes[0]["gateway"], "fd00:10:244:2::");
    assert_eq!(routes[0]["dev"], "cw-vx1");
    let neighbours = ns.ip_json("-6 neigh show dev cw-vx1");
    assert_eq!(neighbours.len(), 1, "{neighbours:?}");
    assert_eq!(neighbours[0]["lladdr"], MAC_2.to_string());
    assert_eq!(neighbours[0]["state"], serde_json::json!(["PERMANENT"]));

    // What observe reads: exactly these, with the IPv4 ones; never the kernel's own IPv6
    // link-local addresses and routes, nor a foreign IPv6 route.
    ns.ip("-6 route add fd00:99::/64 dev cw-vx1 proto static");
    let state = netlink.observe().await.expect("observe");
    let addresses: Vec<(String, IpNet)> = state.addresses.keys().cloned().collect();
    assert_eq!(
        addresses,
        vec![
            ("cw-br0".to_owned(), gateway.addr),
            ("cw-vx1".to_owned(), vtep.addr),
        ]
    );
    let routes: Vec<&Route> = state.routes.values().collect();
    assert_eq!(routes, vec![&v4_route, &peer_route]);
    let neighbours: Vec<&Neighbour> = state.neighbours.values().collect();
    assert_eq!(neighbours, vec![&v4_neighbour, &peer_neighbour]);

    apply(
        &mut netlink,
        &[
            Op::DeleteRoute(peer_route.clone()),
            Op::DeleteNeighbour(peer_neighbour.clone()),
            Op::DeleteAddress {
                dev: "cw-br0".into(),
                addr: gateway.addr,
            },
            // Twice: deleting what is gone succeeds.
            Op::DeleteRoute(peer_route),
            Op::DeleteNeighbour(peer_neighbour),
        ],
    )
    .await;
    let state = netlink.observe().await.expect("observe");
    assert_eq!(state.routes.values().collect::<Vec<_>>(), vec![&v4_route]);
    assert_eq!(
        state.neighbours.values().collect::<Vec<_>>(),
        vec![&v4_neighbour]
    );
    assert_eq!(state.addresses.len(), 1, "{:?}", state.addresses);
    let foreign = ns.ip_json("-6 route show fd00:99::/64");
    assert_eq!(
        foreign.len(),
        1,
        "the foreign IPv6 route survives: {foreign:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fdb_entries_are_replaced_with_their_destination_and_deleted() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let entry = |dst| Fdb {
        dev: "cw-vx1".into(),
        mac: MAC_2,
        dst: ip(dst),
    };
    apply(
        &mut netlink,
        &[
            Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1)),
            Op::ReplaceFdb(entry("192.168.77.2")),
        ],
    )
    .await;
    let entries = ns.bridge_json("fdb show dev cw-vx1");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["mac"], MAC_2.to_string());
    assert_eq!(entries[0]["dst"], "192.168.77.2");
    assert_eq!(entries[0]["flags"], serde_json::json!(["self"]));
    assert_eq!(entries[0]["state"], "permanent");

    // Replace moves the MAC to another VTEP instead of adding a second destination.
    apply(&mut netlink, &[Op::ReplaceFdb(entry("192.168.77.3"))]).await;
    let entries = ns.bridge_json("fdb show dev cw-vx1");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["dst"], "192.168.77.3");

    apply(&mut netlink, &[Op::DeleteFdb(entry("192.168.77.3"))]).await;
    assert_eq!(ns.bridge_json("fdb show dev cw-vx1"), Vec::<Value>::new());
    apply(&mut netlink, &[Op::DeleteFdb(entry("192.168.77.3"))]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_made_again_behind_the_agents_back_fails_one_operation_then_is_found_anew() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let entry = |mac| Fdb {
        dev: "cw-vx1".into(),
        mac,
        dst: ip("192.168.77.2"),
    };
    // The first entry has the device looked up; the agent keeps what it found.
    apply(
        &mut netlink,
        &[
            Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1)),
            Op::ReplaceFdb(entry(MAC_2)),
        ],
    )
    .await;
    // Deleted and made again by someone else: same name, a new index.
    ns.ip("link del cw-vx1");
    ns.ip("link add cw-vx1 type vxlan id 1 dstport 4789 dev eth0");
    // What the agent kept names the old index: the operation fails, on no other link...
    let e = apply_err(&mut netlink, &Op::ReplaceFdb(entry(MAC_3))).await;
    assert!(e.message.contains("No such device"), "{e}");
    assert_eq!(ns.bridge_json("fdb show dev cw-vx1 self").len(), 0);
    // ...and the failure made it forget: the next one finds the new device.
    apply(&mut netlink, &[Op::ReplaceFdb(entry(MAC_3))]).await;
    let entries = ns.bridge_json("fdb show dev cw-vx1");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["mac"], MAC_3.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_follows_the_route_neighbour_and_fdb_entry_to_the_outer_destination() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    apply(
        &mut netlink,
        &[
            Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1)),
            Op::ReplaceFdb(Fdb {
                dev: "cw-vx1".into(),
                mac: MAC_2,
                dst: ip("192.168.77.2"),
            }),
            Op::ReplaceNeighbour(Neighbour {
                dev: "cw-vx1".into(),
                ip: ip("10.244.2.0"),
                mac: MAC_2,
            }),
            Op::ReplaceRoute(route("10.244.2.0/24", Some("10.244.2.0"), "cw-vx1", true)),
        ],
    )
    .await;
    let tunnel = netlink.lookup(ip("10.244.2.7")).await.expect("lookup");
    assert_eq!(tunnel.dev.as_deref(), Some("cw-vx1"));
    assert_eq!(tunnel.gateway, Some(ip("10.244.2.0")));
    assert_eq!(tunnel.neighbour_mac, Some(MAC_2.to_string()));
    assert_eq!(tunnel.fdb_dst, Some(ip("192.168.77.2")));
    // On the underlay: the device, no next hop, nothing of VXLAN.
    let direct = netlink.lookup(ip("192.168.77.9")).await.expect("lookup");
    assert_eq!(direct.dev.as_deref(), Some("eth0"));
    assert_eq!((direct.gateway, direct.fdb_dst), (None, None));
    assert_eq!(direct.src, Some(IpAddr::V4(NODE_IP)));
    // Nowhere to go: the kernel says so, and that is an answer.
    let nowhere = netlink.lookup(ip("203.0.113.1")).await.expect("lookup");
    assert_eq!(nowhere.dev, None);
    assert_eq!(
        nowhere.unreachable.as_deref(),
        Some("Network is unreachable")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_link_removes_it_and_deleting_it_again_succeeds() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    apply(
        &mut netlink,
        &[
            Op::CreateLink(bridge("cw-br0", 1450, true)),
            Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1)),
            Op::DeleteLink("cw-br0".into()),
            Op::DeleteLink("cw-vx1".into()),
        ],
    )
    .await;
    assert!(!ns.ip_succeeds("link show dev cw-br0"));
    assert!(!ns.ip_succeeds("link show dev cw-vx1"));
    assert!(ns.ip_succeeds("link show dev eth0"));
    apply(&mut netlink, &[Op::DeleteLink("cw-br0".into())]).await;
}

/// `nft -j list table ip causeway` in `ns`, read independently of the agent: the set's
/// elements and the rule's text, or `None` without the table.
fn nat_listing(ns: &Netns) -> Option<(Vec<String>, String)> {
    let out = ns.exec("nft list table ip causeway");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let elements = text
        .split("elements = {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .map(|e| e.split(',').map(|x| x.trim().to_owned()).collect())
        .unwrap_or_default();
    let rule = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("ip saddr"))
        .unwrap_or_default()
        .to_owned();
    Some((elements, rule))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_nat_table_is_replaced_whole_observed_and_deleted_and_other_tables_survive() {
    let ns = Netns::new();
    let mut netlink = ns.netlink().await;
    let foreign = ns.exec("nft add table ip someone-else");
    assert!(foreign.status.success(), "{foreign:?}");
    assert_eq!(netlink.observe().await.expect("observe").nat, None);

    let rule = Masquerade {
        source: net4("10.244.1.0/24"),
        exempt: vec![net4("10.244.0.0/16"), net4("192.168.0.0/16")],
    };
    apply(&mut netlink, &[Op::ReplaceNat(rule.clone())]).await;
    let (elements, text) = nat_listing(&ns).expect("table created");
    assert_eq!(elements, ["10.244.0.0/16", "192.168.0.0/16"]);
    assert!(
        text.starts_with("ip saddr 10.244.1.0/24 ip daddr != @no-masquerade masquerade"),
        "{text}"
    );
    assert_eq!(
        netlink.observe().await.expect("observe").nat,
        Some(Nat::Masquerade(rule.clone()))
    );

    // Replacing is idempotent and takes a new exemption list in one go.
    let narrower = Masquerade {
        exempt: vec![net4("10.244.0.0/16")],
        ..rule.clone()
    };
    apply(
        &mut netlink,
        &[
            Op::ReplaceNat(narrower.clone()),
            Op::ReplaceNat(narrower.clone()),
        ],
    )
    .await;
    assert_eq!(nat_listing(&ns).expect("table").0, ["10.244.0.0/16"]);

    // A rule someone slipped into our chain makes the table unrecognised; replacing repairs.
    let tamper = ns.exec("nft add rule ip causeway postrouting counter accept");
    assert!(tamper.status.success(), "{tamper:?}");
    assert!(matches!(
        netlink.observe().await.expect("observe").nat,
        Some(Nat::Unrecognised(_))
    ));
    apply(&mut netlink, &[Op::ReplaceNat(narrower.clone())]).await;
    assert_eq!(
        netlink.observe().await.expect("observe").nat,
        Some(Nat::Masquerade(narrower))
    );

    apply(&mut netlink, &[Op::DeleteNat]).await;
    assert_eq!(nat_listing(&ns), None);
    assert_eq!(netlink.observe().await.expect("observe").nat, None);
    let kept = ns.exec("nft list table ip someone-else");
    assert!(
        kept.status.success(),
        "a foreign table was removed: {kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ipv6_nat_table_is_its_own_family_and_leaves_the_ipv4_one_and_foreign_ones_alone() {
    let ns = Netns::new();
    let mut netlink = ns.netlink().await;
    let foreign = ns.exec("nft add table ip6 someone-else");
    assert!(foreign.status.success(), "{foreign:?}");
    let v4 = Masquerade {
        source: net4("10.244.1.0/24"),
        exempt: vec![net4("10.244.0.0/16")],
    };
    let v6 = Masquerade6 {
        source: "fd00:10:244:1::/64".parse().expect("net"),
        exempt: vec![
            "2001:db8::/32".parse().expect("net"),
            "fd00:10:244::/56".parse().expect("net"),
        ],
    };
    apply(
        &mut netlink,
        &[Op::ReplaceNat(v4.clone()), Op::ReplaceNat6(v6.clone())],
    )
    .await;
    let listed = ns.exec("nft list table ip6 causeway");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("ip6 saddr fd00:10:244:1::/64 ip6 daddr != @no-masquerade masquerade"),
        "{text}"
    );
    let state = netlink.observe().await.expect("observe");
    assert_eq!(state.nat, Some(Nat::Masquerade(v4.clone())));
    assert_eq!(state.nat6, Some(Nat6::Masquerade(v6.clone())));

    // Tampering with the ip6 table makes it unrecognised, the IPv4 one stays recognised.
    let tamper = ns.exec("nft add rule ip6 causeway postrouting counter accept");
    assert!(tamper.status.success(), "{tamper:?}");
    let state = netlink.observe().await.expect("observe");
    assert!(
        matches!(state.nat6, Some(Nat6::Unrecognised(_))),
        "{:?}",
        state.nat6
    );
    assert_eq!(state.nat, Some(Nat::Masquerade(v4)));

    apply(&mut netlink, &[Op::DeleteNat6]).await;
    let state = netlink.observe().await.expect("observe");
    assert_eq!(state.nat6, None);
    assert!(
        state.nat.is_some(),
        "deleting the ip6 table left the ip one"
    );
    let kept = ns.exec("nft list table ip6 someone-else");
    assert!(
        kept.status.success(),
        "a foreign table was removed: {kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_arp_is_set_on_the_underlay_and_observed_only_where_our_device_route_is() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let sysctl = |dev: &str| {
        let out = ns.exec(&format!("cat /proc/sys/net/ipv4/conf/{dev}/proxy_arp"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // Someone else's proxy ARP on eth1, without a route of ours: not the agent's.
    ns.exec("sysctl -qw net.ipv4.conf.eth1.proxy_arp=1");
    assert!(
        netlink
            .observe()
            .await
            .expect("observe")
            .proxy_arp
            .is_empty()
    );

    apply(
        &mut netlink,
        &[
            Op::ReplaceRoute(route("10.244.0.0/16", None, "eth0", false)),
            Op::SetProxyArp {
                dev: "eth0".into(),
                on: true,
            },
        ],
    )
    .await;
    assert_eq!(sysctl("eth0"), "1");
    let delay = |dev: &str| {
        let out = ns.exec(&format!("cat /proc/sys/net/ipv4/neigh/{dev}/proxy_delay"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(delay("eth0"), "0", "proxy replies go out at once");
    let observed = netlink.observe().await.expect("observe");
    assert_eq!(observed.proxy_arp.iter().collect::<Vec<_>>(), ["eth0"]);
    let routes = ns.ip("route show proto 249");
    assert!(
        routes.contains("10.244.0.0/16 dev eth0") && routes.contains("scope link"),
        "{routes}"
    );

    // Tearing down: everything observed goes, and eth1's setting stays.
    let ops = causeway_node_agent::diff::diff(&State::default(), &observed);
    apply(&mut netlink, &ops).await;
    assert_eq!(sysctl("eth0"), "0");
    assert_eq!(delay("eth0"), "80", "the kernel's default is back");
    assert_eq!(sysctl("eth1"), "1");
    assert_eq!(ns.ip("route show proto 249"), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_ndp_entries_carry_the_agents_mark_are_observed_and_only_ours_are_removed() {
    let ns = Netns::with_underlay();
    ns.exec("sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0");
    ns.ip("-6 addr add fd00:77::1/64 dev eth0 nodad");
    let mut netlink = ns.netlink().await;
    let sysctl = |path: &str| {
        let out = ns.exec(&format!("cat /proc/sys/net/ipv6/{path}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().expect("IPv6 address");

    // The underlay's IPv6 prefix: `underlay_for_finds_the_link_holding_the_node_address`.

    // Someone else's proxy entry (no mark): never read as the agent's, never removed.
    ns.ip("-6 neigh add proxy fd00:10:244:1::99 dev eth0");
    let observed = netlink.observe().await.expect("observe");
    assert!(observed.proxy_neighbours.is_empty() && observed.proxy_ndp.is_empty());

    let pods = ["fd00:10:244:1::2", "fd00:10:244:1::3"];
    let mut ops = vec![
        Op::ReplaceRoute(route("fd00:10:244::/56", None, "eth0", false)),
        Op::SetProxyNdp {
            dev: "eth0".into(),
            on: true,
        },
    ];
    ops.extend(pods.iter().map(|p| Op::AddProxyNeighbour {
        dev: "eth0".into(),
        ip: v6(p),
    }));
    apply(&mut netlink, &ops).await;
    // Applying twice is fine (replace).
    apply(&mut netlink, &ops).await;
    assert_eq!(sysctl("conf/eth0/proxy_ndp"), "1");
    assert_eq!(
        sysctl("neigh/eth0/proxy_delay"),
        "0",
        "proxy answers go out at once"
    );
    let shown = ns.ip("-6 neigh show proxy");
    for pod in pods {
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with(&format!("{pod} dev eth0")) && l.contains("proto 249")),
            "{pod} not proxied with the mark: {shown}"
        );
    }
    let observed = netlink.observe().await.expect("observe");
    assert_eq!(observed.proxy_ndp.iter().collect::<Vec<_>>(), ["eth0"]);
    assert_eq!(
        observed.proxy_neighbours,
        pods.iter().map(|p| ("eth0".to_owned(), v6(p))).collect()
    );

    // One pod goes: only its entry is deleted.
    apply(
        &mut netlink,
        &[Op::DeleteProxyNeighbour {
            dev: "eth0".into(),
            ip: v6(pods[0]),
        }],
    )
    .await;
    let shown = ns.ip("-6 neigh show proxy");
    assert!(
        !shown.contains(pods[0]) && shown.contains(pods[1]),
        "{shown}"
    );
    // Deleting the foreign entry through the agent is a no-op: it carries no mark.
    apply(
        &mut netlink,
        &[Op::DeleteProxyNeighbour {
            dev: "eth0".into(),
            ip: v6("fd00:10:244:1::99"),
        }],
    )
    .await;
    assert!(ns.ip("-6 neigh show proxy").contains("fd00:10:244:1::99"));

    // Tearing down: everything observed goes, the foreign entry stays.
    let observed = netlink.observe().await.expect("observe");
    let ops = causeway_node_agent::diff::diff(&State::default(), &observed);
    apply(&mut netlink, &ops).await;
    assert_eq!(sysctl("conf/eth0/proxy_ndp"), "0");
    assert_eq!(
        sysctl("neigh/eth0/proxy_delay"),
        "80",
        "the kernel's default is back"
    );
    let shown = ns.ip("-6 neigh show proxy");
    assert_eq!(shown.trim(), "fd00:10:244:1::99 dev eth0 proxy", "{shown}");
    assert_eq!(ns.ip("-6 route show proto 249"), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_all_pipelines_runs_and_names_the_first_failure() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let mut ops = vec![Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1))];
    for i in 0..200u32 {
        let dst = format!("10.245.{}.0/24", i);
        ops.push(Op::ReplaceRoute(route(&dst, None, "cw-vx1", false)));
    }
    Dataplane::apply_all(&mut netlink, &ops)
        .await
        .unwrap_or_else(|(i, e)| panic!("op {i}: {e}"));
    assert_eq!(ns.ip_json("route show proto 249").len(), 200);
    assert_eq!(netlink.observe().await.expect("observe").routes.len(), 200);

    // A run with one bad operation: the error names that operation and its index.
    let mut bad = vec![
        Op::DeleteRoute(route("10.245.0.0/24", None, "cw-vx1", false)),
        Op::ReplaceRoute(route("10.246.0.0/24", None, "cw-missing", false)),
    ];
    bad.push(Op::ReplaceRoute(route(
        "10.246.1.0/24",
        None,
        "cw-vx1",
        false,
    )));
    let (index, error) = Dataplane::apply_all(&mut netlink, &bad)
        .await
        .expect_err("a missing link");
    assert_eq!(index, 1, "{error}");
    assert!(error.op.contains("cw-missing"), "{error}");
}

/// A node whose new links start without IPv6 (`default.disable_ipv6=1`, a common hardening):
/// the agent turns IPv6 on for its own link before giving it an IPv6 address, observes it on
/// its links only, and leaves the node's default and its other links alone.
#[tokio::test(flavor = "multi_thread")]
async fn ipv6_is_turned_on_for_the_agents_link_only_before_its_ipv6_address() {
    let ns = Netns::with_underlay();
    let sysctl = |key: &str| -> String {
        let out = ns.exec(&format!("sysctl -n {key}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let set = |kv: &str| {
        let out = ns.exec(&format!("sysctl -q -w {kv}"));
        assert!(out.status.success(), "sysctl -w {kv}: {out:?}");
    };
    set("net.ipv6.conf.default.disable_ipv6=1");
    set("net.ipv6.conf.eth0.disable_ipv6=1");
    let mut netlink = ns.netlink().await;
    let gateway: IpNet = net("fd00:10:244:1::1/64");
    apply(
        &mut netlink,
        &[Op::CreateLink(bridge("cw-br0", 1500, true))],
    )
    .await;
    assert_eq!(sysctl("net.ipv6.conf.cw-br0.disable_ipv6"), "1");
    let refused = apply_err(
        &mut netlink,
        &Op::AddAddress {
            dev: "cw-br0".into(),
            addr: gateway,
        },
    )
    .await;
    assert!(
        refused.message.contains("IPv6 is disabled on this device")
            && refused
                .message
                .contains("net.ipv6.conf.cw-br0.disable_ipv6=0")
            && !refused.message.contains("CAP_NET_ADMIN"),
        "the kernel's words and the parameter, not a privilege hint: {refused}"
    );
    assert!(
        !netlink
            .observe()
            .await
            .expect("observe")
            .ipv6_on
            .contains("cw-br0"),
        "IPv6 is off on the new bridge"
    );
    apply(
        &mut netlink,
        &[
            Op::EnableIpv6("cw-br0".into()),
            Op::AddAddress {
                dev: "cw-br0".into(),
                addr: gateway,
            },
        ],
    )
    .await;
    let observed = netlink.observe().await.expect("observe");
    assert_eq!(
        observed.ipv6_on,
        ["cw-br0".to_string()].into(),
        "observed on the agent's links only"
    );
    assert!(
        observed
            .addresses
            .contains_key(&("cw-br0".to_string(), gateway)),
        "{:?}",
        observed.addresses
    );
    assert_eq!(sysctl("net.ipv6.conf.default.disable_ipv6"), "1");
    assert_eq!(sysctl("net.ipv6.conf.eth0.disable_ipv6"), "1");
    // Not on a link that is not the agent's.
    let foreign = apply_err(&mut netlink, &Op::EnableIpv6("eth0".into())).await;
    assert_eq!(sysctl("net.ipv6.conf.eth0.disable_ipv6"), "1", "{foreign}");
}

/// A run that moves many of our routes to another next hop (BGP choosing another router):
/// each exclusive add finds our route in the way, and the ownership check must neither
/// collide with the others' (two dumps on one netlink socket fail with EBUSY) nor leave the
/// socket unusable for the next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_run_moving_many_of_our_routes_to_another_next_hop_succeeds() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let moved = |via: &str| -> Vec<Op> {
        (0..64u32)
            .map(|i| Op::ReplaceRoute(route(&format!("10.245.{i}.0/24"), Some(via), "eth0", false)))
            .collect()
    };
    for via in ["192.168.77.253", "192.168.77.254", "192.168.77.253"] {
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            Dataplane::apply_all(&mut netlink, &moved(via)),
        )
        .await
        .expect("the run finishes")
        .unwrap_or_else(|(i, e)| panic!("op {i}: {e}"));
        let routes = tokio::time::timeout(std::time::Duration::from_secs(10), netlink.observe())
            .await
            .expect("the next observe finishes")
            .expect("observe")
            .routes;
        assert_eq!(routes.len(), 64, "{routes:?}");
        assert!(
            routes.values().all(|r| r.gateway == Some(ip(via))),
            "{routes:?}"
        );
    }
    // The one reading per run still tells a foreign route from ours.
    ns.ip("route add 10.245.200.0/24 via 192.168.77.9 dev eth0 proto static");
    let mut run = moved("192.168.77.254");
    run.push(Op::ReplaceRoute(route(
        "10.245.200.0/24",
        Some("192.168.77.254"),
        "eth0",
        false,
    )));
    let (index, error) = Dataplane::apply_all(&mut netlink, &run)
        .await
        .expect_err("a foreign route in the way");
    assert_eq!(index, 64, "{error}");
    assert!(error.message.contains("does not own"), "{error}");
    let foreign = ns.ip("route show 10.245.200.0/24");
    assert!(foreign.contains("via 192.168.77.9"), "{foreign}");
}

/// A node's worth of objects, in the order an apply would create them.
fn node_state() -> (State, Vec<Op>) {
    let links = [
        bridge("cw-br0", 1450, true),
        bridge("cw-br9", 1500, false),
        vxlan("cw-vx1", 7, NODE_IP, "eth0", MAC_1),
    ];
    let addresses = [("cw-br0", "10.244.1.1/24"), ("cw-vx1", "10.244.1.0/32")];
    let neighbours = [
        Neighbour {
            dev: "cw-vx1".into(),
            ip: ip("10.244.2.0"),
            mac: MAC_2,
        },
        Neighbour {
            dev: "cw-vx1".into(),
            ip: ip("10.244.3.0"),
            mac: MAC_3,
        },
    ];
    let fdb = [
        Fdb {
            dev: "cw-vx1".into(),
            mac: MAC_2,
            dst: PEER_IP.into(),
        },
        Fdb {
            dev: "cw-vx1".into(),
            mac: MAC_3,
            dst: ip("192.168.77.3"),
        },
    ];
    let routes = [
        route("10.244.2.0/24", Some("10.244.2.0"), "cw-vx1", true),
        route("10.244.3.0/24", Some("10.244.3.0"), "cw-vx1", true),
        // A direct route to an on-link peer, on the underlay.
        route("10.244.5.0/24", Some("192.168.77.5"), "eth0", false),
        route("10.244.6.0/24", None, "cw-br0", false),
    ];

    let mut state = State::default();
    let mut ops = Vec::new();
    for link in links {
        ops.push(Op::CreateLink(link.clone()));
        state.links.insert(link.name.clone(), link);
    }
    for (dev, addr) in addresses {
        ops.push(Op::AddAddress {
            dev: dev.into(),
            addr: net(addr),
        });
        state
            .addresses
            .insert((dev.into(), net(addr)), Address { addr: net(addr) });
    }
    for n in neighbours {
        ops.push(Op::ReplaceNeighbour(n.clone()));
        state.neighbours.insert((n.dev.clone(), n.ip), n);
    }
    for f in fdb {
        ops.push(Op::ReplaceFdb(f.clone()));
        state.fdb.insert((f.dev.clone(), f.mac), f);
    }
    for r in routes {
        ops.push(Op::ReplaceRoute(r.clone()));
        state.routes.insert(r.dst, r);
    }
    // The test namespaces start links with IPv6 on (the kernel's default), and observing
    // reports it for the agent's links.
    state.ipv6_on = state.links.keys().cloned().collect();
    (state, ops)
}

#[tokio::test(flavor = "multi_thread")]
async fn observe_returns_exactly_what_was_applied() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    assert_eq!(netlink.observe().await.expect("observe"), State::default());

    let (state, ops) = node_state();
    apply(&mut netlink, &ops).await;
    assert_eq!(netlink.observe().await.expect("observe"), state);
    // Applying everything again changes nothing (except CreateLink, which is not a replace).
    let again: Vec<Op> = ops
        .into_iter()
        .filter(|op| !matches!(op, Op::CreateLink(_)))
        .collect();
    apply(&mut netlink, &again).await;
    assert_eq!(netlink.observe().await.expect("observe"), state);
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_objects_are_never_observed_and_survive_deleting_everything_observed() {
    let ns = Netns::with_underlay();
    // Foreign objects: unprefixed links (one a VXLAN with its own FDB), an address on one,
    // routes with another protocol or in another table, neighbours on the underlay.
    ns.ip("link add foreign0 type bridge");
    ns.ip("addr add 10.99.1.1/24 dev foreign0");
    ns.ip("link add fvx0 type vxlan id 9 dstport 4789 local 192.168.77.1 dev eth0 nolearning");
    run(
        "bridge",
        &[
            "-n",
            &ns.name,
            "fdb",
            "add",
            "0e:ee:00:00:00:01",
            "dev",
            "fvx0",
            "dst",
            "192.168.77.8",
            "self",
            "permanent",
        ],
    );
    ns.ip("route add 10.99.0.0/24 via 192.168.77.5 dev eth0 proto static");
    ns.ip("route add 10.98.0.0/24 dev eth0 proto 249 table 100");
    ns.ip("neigh add 192.168.77.9 lladdr 0e:ee:00:00:00:09 dev eth0 nud permanent");

    let mut netlink = ns.netlink().await;
    let (state, ops) = node_state();
    apply(&mut netlink, &ops).await;
    // A non-permanent neighbour on our link is the kernel's cache, not ours to manage. An
    // FDB entry on our VXLAN device is ours, whatever it is: the all-zero flood entry, which
    // sends broadcasts to arbitrary addresses (here two remotes, the second appended), is seen
    // and removed by the next pass. (The kernel refuses a second remote for a unicast MAC.)
    ns.ip("neigh add 10.244.9.9 lladdr 0e:ee:00:00:00:99 dev cw-vx1 nud reachable");
    run(
        "bridge",
        &[
            "-n",
            &ns.name,
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            "cw-vx1",
            "dst",
            "192.168.77.200",
            "self",
            "permanent",
        ],
    );
    run(
        "bridge",
        &[
            "-n",
            &ns.name,
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            "cw-vx1",
            "dst",
            "192.168.77.201",
            "self",
            "permanent",
        ],
    );
    let observed = netlink.observe().await.expect("observe");
    let flood = Fdb {
        dev: "cw-vx1".into(),
        mac: Mac([0; 6]),
        dst: ip("192.168.77.200"),
    };
    let extra = Fdb {
        dev: "cw-vx1".into(),
        mac: Mac([0; 6]),
        dst: ip("192.168.77.201"),
    };
    let mut expected = state.clone();
    expected
        .fdb
        .insert(("cw-vx1".into(), flood.mac), flood.clone());
    expected.fdb_extra.push(extra.clone());
    assert_eq!(observed, expected);
    let repair = causeway_node_agent::diff::diff(&state, &observed);
    assert_eq!(repair, vec![Op::DeleteFdb(flood), Op::DeleteFdb(extra)]);
    apply(&mut netlink, &repair).await;
    let observed = netlink.observe().await.expect("observe");
    assert_eq!(observed, state);

    // The agent refuses to touch unprefixed links, and deleting "our" route to a destination
    // held by a foreign route leaves the foreign route alone (the protocol must match).
    let refused = apply_err(&mut netlink, &Op::DeleteLink("foreign0".into())).await;
    assert!(refused.message.contains("not the agent's"), "{refused}");
    let refused = apply_err(
        &mut netlink,
        &Op::ReplaceNeighbour(Neighbour {
            dev: "eth0".into(),
            ip: ip("192.168.77.9"),
            mac: MAC_1,
        }),
    )
    .await;
    assert!(refused.message.contains("not the agent's"), "{refused}");
    apply(
        &mut netlink,
        &[Op::DeleteRoute(route(
            "10.99.0.0/24",
            Some("192.168.77.5"),
            "eth0",
            false,
        ))],
    )
    .await;

    // Delete everything observed, in reverse dependency order.
    let mut deletes = Vec::new();
    deletes.extend(observed.routes.values().cloned().map(Op::DeleteRoute));
    deletes.extend(observed.fdb.values().cloned().map(Op::DeleteFdb));
    deletes.extend(
        observed
            .neighbours
            .values()
            .cloned()
            .map(Op::DeleteNeighbour),
    );
    deletes.extend(
        observed
            .addresses
            .keys()
            .map(|(dev, addr)| Op::DeleteAddress {
                dev: dev.clone(),
                addr: *addr,
            }),
    );
    deletes.extend(observed.links.keys().cloned().map(Op::DeleteLink));
    apply(&mut netlink, &deletes).await;
    assert_eq!(netlink.observe().await.expect("observe"), State::default());

    // Every foreign object is still there.
    assert!(ns.ip_succeeds("link show dev foreign0"));
    assert_eq!(ns.ip_json("-4 addr show dev foreign0").len(), 1);
    let fdb = ns.bridge_json("fdb show dev fvx0");
    assert!(
        fdb.iter()
            .any(|e| e["mac"] == "0e:ee:00:00:00:01" && e["dst"] == "192.168.77.8"),
        "{fdb:?}"
    );
    assert_eq!(ns.ip_json("route show proto static 10.99.0.0/24").len(), 1);
    assert_eq!(ns.ip_json("route show table 100 10.98.0.0/24").len(), 1);
    let neighbours = ns.ip_json("neigh show dev eth0 192.168.77.9");
    assert_eq!(neighbours.len(), 1, "{neighbours:?}");
    assert_eq!(neighbours[0]["lladdr"], "0e:ee:00:00:00:09");
}

#[tokio::test(flavor = "multi_thread")]
async fn underlay_for_finds_the_link_holding_the_node_address() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let underlay = netlink
        .underlay_for(NODE_IP.into(), None)
        .await
        .expect("underlay");
    assert_eq!(
        underlay,
        Underlay {
            name: "eth0".into(),
            mtu: 1500,
            prefix: net("192.168.77.0/24"),
            secondary_prefix: None,
        }
    );
    // The node's address of the other family on the same link is found in the same reading;
    // one on another link, or one the node does not have, is not.
    ns.ip("-6 addr add fd00:77::1/64 dev eth0 nodad");
    ns.ip("-6 addr add fd00:78::1/64 dev eth1 nodad");
    for (secondary, want) in [
        ("fd00:77::1", Some(net("fd00:77::/64"))),
        ("fd00:78::1", None),
        ("fd00:77::99", None),
    ] {
        let got = netlink
            .underlay_for(NODE_IP.into(), Some(ip(secondary)))
            .await
            .expect("underlay");
        assert_eq!(got.secondary_prefix, want, "{secondary}");
    }
    // An IPv6 node address finds its link and prefix the same way, the IPv4 one beside it.
    let v6 = netlink
        .underlay_for(ip("fd00:77::1"), Some(NODE_IP.into()))
        .await
        .expect("IPv6 underlay");
    assert_eq!(
        (v6.name.as_str(), v6.prefix, v6.secondary_prefix),
        ("eth0", net("fd00:77::/64"), Some(net("192.168.77.0/24")))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vxlan_device_over_ipv6_and_its_ipv6_fdb_entries_round_trip() {
    let ns = Netns::with_underlay();
    ns.ip("-6 addr add fd00:77::1/64 dev eth0 nodad");
    let mut netlink = ns.netlink().await;
    let link = Link {
        mtu: 1430,
        ..vxlan("cw-vx1", 7, ip("fd00:77::1"), "eth0", MAC_1)
    };
    let entry = Fdb {
        dev: "cw-vx1".into(),
        mac: MAC_2,
        dst: ip("fd00:77::2"),
    };
    apply(
        &mut netlink,
        &[Op::CreateLink(link.clone()), Op::ReplaceFdb(entry.clone())],
    )
    .await;
    let vx = link_json(&ns, "cw-vx1");
    assert_eq!(vx["linkinfo"]["info_data"]["local6"], "fd00:77::1", "{vx}");
    let entries = ns.bridge_json("fdb show dev cw-vx1");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["dst"], "fd00:77::2");
    let observed = netlink.observe().await.expect("observe");
    assert_eq!(
        observed.links.get("cw-vx1"),
        Some(&link),
        "read back as planned"
    );
    assert_eq!(
        observed.fdb.values().collect::<Vec<_>>(),
        [&entry],
        "the IPv6 destination read back"
    );
    apply(&mut netlink, &[Op::DeleteFdb(entry)]).await;
    assert_eq!(ns.bridge_json("fdb show dev cw-vx1"), Vec::<Value>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn underlay_for_an_address_no_link_has_says_so() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let error = netlink
        .underlay_for(ip("192.168.50.11"), None)
        .await
        .expect_err("no link has 192.168.50.11");
    assert_eq!(
        error.to_string(),
        "no interface of this node has 192.168.50.11, the NodeSubnet's spec.nodeAddress (the Node's InternalIP): is the agent on the right node, and is the address still configured (ip addr)?"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kernel_errors_become_apply_errors_naming_the_operation() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let create = Op::CreateLink(bridge("cw-br0", 1450, true));
    apply(
        &mut netlink,
        &[
            create.clone(),
            Op::CreateLink(vxlan("cw-vx1", 1, NODE_IP, "eth0", MAC_1)),
        ],
    )
    .await;

    let exists = apply_err(&mut netlink, &create).await;
    assert_eq!(exists.op, "create link cw-br0 type bridge mtu 1450 up");
    assert_eq!(
        exists.message,
        "File exists (a link named cw-br0 already exists)"
    );
    assert_eq!(
        exists.to_string(),
        format!("{}: {}", exists.op, exists.message)
    );

    // The kernel's own explanation (extended ack) replaces the guess.
    let same_vni = Op::CreateLink(vxlan("cw-vx2", 1, NODE_IP, "eth0", MAC_2));
    let error = apply_err(&mut netlink, &same_vni).await;
    assert_eq!(error.op, same_vni.to_string());
    assert_eq!(
        error.message,
        "File exists: A VXLAN device with the specified VNI already exists"
    );

    // The kernel caps a new VXLAN's MTU at the underlay's minus 50 and refuses to raise it.
    let too_big = Op::CreateLink(Link {
        mtu: 1480,
        ..vxlan("cw-vx3", 3, NODE_IP, "eth0", MAC_3)
    });
    let error = apply_err(&mut netlink, &too_big).await;
    assert_eq!(
        error.message,
        "the kernel created cw-vx3 with MTU 1450 instead of 1480 (a VXLAN device's MTU is at \
         most its underlay's MTU minus 50 bytes of VXLAN headers)"
    );
    let raise = Op::UpdateLink {
        name: "cw-vx3".into(),
        mtu: 1480,
        up: true,
    };
    let error = apply_err(&mut netlink, &raise).await;
    assert_eq!(
        error.message,
        "Invalid argument (is MTU 1480 possible? a VXLAN device's MTU is at most its underlay's \
         MTU minus 50 bytes of VXLAN headers, and any link's at least 68)"
    );
    apply(&mut netlink, &[Op::DeleteLink("cw-vx3".into())]).await;

    let missing = Op::UpdateLink {
        name: "cw-nothere".into(),
        mtu: 1450,
        up: true,
    };
    let error = apply_err(&mut netlink, &missing).await;
    assert_eq!(error.op, missing.to_string());
    assert_eq!(error.message, "No such device (no link named cw-nothere)");

    let no_underlay = Op::CreateLink(vxlan("cw-vx3", 3, NODE_IP, "eth9", MAC_3));
    let error = apply_err(&mut netlink, &no_underlay).await;
    assert_eq!(
        error.message,
        "No such device (no link named eth9, the underlay of cw-vx3)"
    );

    let bad_prefix = Op::ReplaceRoute(route("10.244.2.5/24", None, "cw-br0", false));
    let error = apply_err(&mut netlink, &bad_prefix).await;
    assert_eq!(error.op, bad_prefix.to_string());
    assert_eq!(
        error.message,
        "Invalid argument: Invalid prefix for given prefix length"
    );

    let unreachable = Op::ReplaceRoute(route("10.244.2.0/24", Some("10.9.9.9"), "cw-br0", false));
    let error = apply_err(&mut netlink, &unreachable).await;
    assert_eq!(
        error.message,
        "Network is unreachable: Nexthop has invalid gateway \
         (10.9.9.9 is not in a subnet of cw-br0; should the route be onlink?)"
    );

    // Requests the kernel would accept but get wrong are refused before they are sent.
    let long = Op::CreateLink(bridge("cw-a-very-long-name", 1450, true));
    let error = apply_err(&mut netlink, &long).await;
    assert_eq!(
        error.message,
        "refused: link names are at most 15 bytes; cw-a-very-long-name has 19"
    );
    let fdb_on_bridge = Op::ReplaceFdb(Fdb {
        dev: "cw-br0".into(),
        mac: MAC_2,
        dst: PEER_IP.into(),
    });
    let error = apply_err(&mut netlink, &fdb_on_bridge).await;
    assert_eq!(
        error.message,
        "refused: cw-br0 is not a VXLAN device; FDB entries with a destination belong on one"
    );
    let bridge_fdb = ns.bridge_json("fdb show dev cw-br0");
    assert!(
        bridge_fdb.iter().all(|e| e["mac"] != MAC_2.to_string()),
        "{bridge_fdb:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connecting_to_a_missing_namespace_names_it() {
    let name = format!("cwnl-{}-missing", std::process::id());
    let error = Netlink::in_netns(&name)
        .await
        .expect_err("no such namespace");
    let text = error.to_string();
    assert!(
        text.contains(&name) && text.contains("ip netns list"),
        "{text}"
    );
    let error = Netlink::in_netns("../proc").await.expect_err("not a name");
    assert!(
        error.to_string().contains("not a network namespace name"),
        "{error}"
    );
}

#[test]
fn connect_opens_the_callers_own_namespace() {
    let ns = Netns::with_underlay();
    let path = format!("/run/netns/{}", ns.name);
    // A thread of its own enters the test namespace and runs a runtime there, so `connect`
    // (the production path) never sees the root namespace.
    std::thread::spawn(move || {
        let namespace = std::fs::File::open(&path).expect("open the namespace");
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut netlink = Netlink::connect().await.expect("connect");
            let underlay = netlink
                .underlay_for(NODE_IP.into(), None)
                .await
                .expect("underlay");
            assert_eq!(underlay.name, "eth0");
            assert_eq!(netlink.observe().await.expect("observe"), State::default());
        });
    })
    .join()
    .expect("the connect test thread panicked");
}

/// The agent's loop runs as a spawned task, so the dataplane's futures must be `Send`.
#[allow(dead_code)]
fn netlink_futures_are_send(mut netlink: Netlink, op: Op) {
    fn send<T: Send>(_: T) {}
    send(async move {
        let _ = netlink.observe().await;
        let _ = netlink.apply(&op).await;
        let _ = netlink.underlay_for(NODE_IP.into(), None).await;
        let _ = Netlink::in_netns("x").await;
        let _ = Netlink::connect().await;
    });
}

/// Everything one node applies to reach its peer, as the agent would: bridge with the node's
/// gateway address, VXLAN with the node's `/32`, and per peer route + neighbour + FDB.
fn node_ops(
    me: u8,
    local: Ipv4Addr,
    mac: Mac,
    peer: u8,
    peer_ip: Ipv4Addr,
    peer_mac: Mac,
) -> Vec<Op> {
    vec![
        Op::CreateLink(bridge("cw-br0", 1450, true)),
        Op::AddAddress {
            dev: "cw-br0".into(),
            addr: net(&format!("10.244.{me}.1/24")),
        },
        Op::CreateLink(vxlan("cw-vx1", 1, local, "eth0", mac)),
        Op::AddAddress {
            dev: "cw-vx1".into(),
            addr: net(&format!("10.244.{me}.0/32")),
        },
        Op::ReplaceNeighbour(Neighbour {
            dev: "cw-vx1".into(),
            ip: ip(&format!("10.244.{peer}.0")),
            mac: peer_mac,
        }),
        Op::ReplaceFdb(Fdb {
            dev: "cw-vx1".into(),
            mac: peer_mac,
            dst: peer_ip.into(),
        }),
        Op::ReplaceRoute(route(
            &format!("10.244.{peer}.0/24"),
            Some(&format!("10.244.{peer}.0")),
            "cw-vx1",
            true,
        )),
    ]
}

/// Two "nodes" joined by a veth pair `eth0` (NODE_IP and PEER_IP /24): the underlay,
/// entirely inside the test namespaces.
fn two_nodes() -> (Netns, Netns) {
    let one = Netns::new();
    let two = Netns::new();
    one.ip(&format!(
        "link add eth0 type veth peer name eth0 netns {}",
        two.name
    ));
    one.ip(&format!("addr add {NODE_IP}/24 dev eth0"));
    two.ip(&format!("addr add {PEER_IP}/24 dev eth0"));
    one.ip("link set eth0 up");
    two.ip("link set eth0 up");
    (one, two)
}

/// Each `(namespace, source, target)` ping succeeds, the packets leave `one` through cw-vx1,
/// and `one`'s FDB holds exactly the applied entry (no learning, no flooding).
fn ping_through_the_tunnel(one: &Netns, pings: &[(&Netns, &str, &str)]) {
    let sent_before = tx_packets(one, "cw-vx1");
    for (from, source, target) in pings {
        let ping = from.exec(&format!("ping -c1 -W2 -I {source} {target}"));
        assert!(
            ping.status.success(),
            "ping {source} → {target} in {} failed:\n{}{}",
            from.name,
            String::from_utf8_lossy(&ping.stdout),
            String::from_utf8_lossy(&ping.stderr)
        );
    }
    assert!(
        tx_packets(one, "cw-vx1") > sent_before,
        "the pings did not leave through cw-vx1"
    );
    let fdb = one.bridge_json("fdb show dev cw-vx1");
    assert_eq!(fdb.len(), 1, "{fdb:?}");
    assert_eq!(fdb[0]["dst"], PEER_IP.to_string());
}

fn tx_packets(ns: &Netns, dev: &str) -> u64 {
    ns.ip_json(&format!("-s link show dev {dev}"))[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .expect("tx packets")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_built_only_by_apply_ping_each_other_over_vxlan() {
    let (one, two) = two_nodes();

    let mut first = one.netlink().await;
    let mut second = two.netlink().await;
    apply(&mut first, &node_ops(1, NODE_IP, MAC_1, 2, PEER_IP, MAC_2)).await;
    apply(&mut second, &node_ops(2, PEER_IP, MAC_2, 1, NODE_IP, MAC_1)).await;

    ping_through_the_tunnel(
        &one,
        &[
            (&one, "10.244.1.1", "10.244.2.1"),
            (&two, "10.244.2.1", "10.244.1.1"),
        ],
    );
}

/// The IPv6 half of a dual-stack Overlay node (what `plan` adds for `secondaryCidr`): the
/// bridge's IPv6 gateway, the subnet's /128 on the VXLAN device, and for the peer a route and
/// a permanent neighbour; the FDB entry is the IPv4 half's.
fn node_ops6(me: u8, peer: u8, peer_mac: Mac) -> Vec<Op> {
    vec![
        Op::AddAddress {
            dev: "cw-br0".into(),
            addr: net(&format!("fd00:10:244:{me}::1/64")),
        },
        Op::AddAddress {
            dev: "cw-vx1".into(),
            addr: net(&format!("fd00:10:244:{me}::/128")),
        },
        Op::ReplaceNeighbour(Neighbour {
            dev: "cw-vx1".into(),
            ip: ip(&format!("fd00:10:244:{peer}::")),
            mac: peer_mac,
        }),
        Op::ReplaceRoute(route(
            &format!("fd00:10:244:{peer}::/64"),
            Some(&format!("fd00:10:244:{peer}::")),
            "cw-vx1",
            true,
        )),
    ]
}

/// Waits until no IPv6 address in `ns` is tentative (duplicate address detection done).
fn wait_for_dad(ns: &Netns) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ns
        .ip_json("-6 addr show tentative")
        .iter()
        .all(|l| l["addr_info"].as_array().is_none_or(Vec::is_empty))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "IPv6 addresses in {} still tentative: {:?}",
            ns.name,
            ns.ip_json("-6 addr show tentative")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_dual_stack_nodes_ping_each_other_over_ipv6_through_the_ipv4_vxlan_tunnel() {
    let (one, two) = two_nodes();

    let mut first = one.netlink().await;
    let mut second = two.netlink().await;
    let mut ops_one = node_ops(1, NODE_IP, MAC_1, 2, PEER_IP, MAC_2);
    ops_one.extend(node_ops6(1, 2, MAC_2));
    let mut ops_two = node_ops(2, PEER_IP, MAC_2, 1, NODE_IP, MAC_1);
    ops_two.extend(node_ops6(2, 1, MAC_1));
    apply(&mut first, &ops_one).await;
    apply(&mut second, &ops_two).await;
    // A port on each bridge, as a pod's veth would be, so the bridge has a carrier and its
    // IPv6 gateway leaves the tentative state.
    for ns in [&one, &two] {
        ns.ip("link add pod0 type veth peer name pod1");
        ns.ip("link set pod0 master cw-br0");
        ns.ip("link set pod0 up");
        ns.ip("link set pod1 up");
        wait_for_dad(ns);
    }
    // What observe reads back is what was applied, both families.
    let observed = first.observe().await.expect("observe");
    assert_eq!(observed.routes.len(), 2, "{:?}", observed.routes);
    assert_eq!(observed.neighbours.len(), 2, "{:?}", observed.neighbours);
    assert_eq!(observed.fdb.len(), 1, "one FDB entry for both families");

    ping_through_the_tunnel(
        &one,
        &[
            (&one, "fd00:10:244:1::1", "fd00:10:244:2::1"),
            (&two, "fd00:10:244:2::1", "fd00:10:244:1::1"),
            (&one, "10.244.1.1", "10.244.2.1"),
        ],
    );
}

#[tokio::test]
async fn the_vip_is_held_with_a_kernel_lifetime_and_lapses_without_renewal() {
    let ns = Netns::with_underlay();
    let netlink = ns.netlink().await;
    let vip = IpAddr::V4(ip4("192.168.50.250"));
    let held = netlink.vip_link("eth0", vip).await.expect("read");
    assert!(held.carrier && !held.holds_vip, "{held:?}");

    netlink.hold_vip("eth0", vip, 1).await.expect("hold");
    netlink
        .hold_vip("eth0", vip, 1)
        .await
        .expect("refresh is idempotent");
    let shown = ns.ip("-4 -o addr show dev eth0");
    assert!(
        shown.contains("192.168.50.250/32") && shown.contains("valid_lft 1sec"),
        "{shown}"
    );
    assert!(netlink.vip_link("eth0", vip).await.expect("read").holds_vip);

    // Not refreshed: the kernel removes it by itself (what fences a dead agent's node).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while netlink.vip_link("eth0", vip).await.expect("read").holds_vip {
        assert!(
            std::time::Instant::now() < deadline,
            "the VIP outlived its lifetime: {}",
            ns.ip("-4 -o addr show dev eth0")
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        ns.ip("-4 -o addr show dev eth0")
            .contains(&format!("{NODE_IP}/24")),
        "the node's own address stays"
    );

    // Removed on demand, twice without error; a link without carrier reads as such.
    netlink.hold_vip("eth0", vip, 5).await.expect("hold");
    netlink.drop_vip("eth0", vip).await.expect("drop");
    netlink.drop_vip("eth0", vip).await.expect("drop again");
    assert!(!netlink.vip_link("eth0", vip).await.expect("read").holds_vip);
    ns.ip("link set eth1 down");
    assert!(!netlink.vip_link("eth0", vip).await.expect("read").carrier);
}

/// The `addr_info` of `ip` on `dev` in `ns` (`ip -j addr`), if it is there.
fn addr_info(ns: &Netns, dev: &str, ip: &str) -> Option<Value> {
    ns.ip_json(&format!("addr show dev {dev}"))
        .first()?
        .get("addr_info")?
        .as_array()?
        .iter()
        .find(|a| a["local"] == ip)
        .cloned()
}

#[tokio::test]
async fn an_ipv6_vip_is_held_nodad_with_a_kernel_lifetime_and_lapses_without_renewal() {
    let ns = Netns::with_underlay();
    enable_ipv6(&ns, "eth0");
    let netlink = ns.netlink().await;
    let vip = ip("fd00:50::250");
    let held = netlink.vip_link("eth0", vip).await.expect("read");
    assert!(held.carrier && !held.holds_vip, "{held:?}");

    netlink.hold_vip("eth0", vip, 1).await.expect("hold");
    netlink
        .hold_vip("eth0", vip, 1)
        .await
        .expect("refresh is idempotent");
    // Usable at once: no duplicate address detection, so never tentative.
    let info = addr_info(&ns, "eth0", "fd00:50::250").expect("the VIP is on eth0");
    assert_eq!(info["prefixlen"], 128, "{info}");
    assert_eq!(info["nodad"], true, "{info}");
    assert!(info.get("tentative").is_none(), "tentative: {info}");
    assert!(
        matches!(info["valid_life_time"].as_u64(), Some(0 | 1)),
        "{info}"
    );
    assert!(netlink.vip_link("eth0", vip).await.expect("read").holds_vip);
    let error = netlink
        .hold_vip("nosuch0", vip, 1)
        .await
        .expect_err("no such link");
    assert!(
        error.to_string().contains(
            "replace address fd00:50::250/128 dev nosuch0 valid_lft 1 preferred_lft 1 nodad"
        ),
        "{error}"
    );

    // Not refreshed: the kernel removes it by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while netlink.vip_link("eth0", vip).await.expect("read").holds_vip {
        assert!(
            std::time::Instant::now() < deadline,
            "the VIP outlived its lifetime: {}",
            ns.ip("-6 -o addr show dev eth0")
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(addr_info(&ns, "eth0", "fd00:50::250").is_none());

    // Removed on demand, twice without error.
    netlink.hold_vip("eth0", vip, 5).await.expect("hold");
    netlink.drop_vip("eth0", vip).await.expect("drop");
    assert!(addr_info(&ns, "eth0", "fd00:50::250").is_none());
    netlink.drop_vip("eth0", vip).await.expect("drop again");
    assert!(!netlink.vip_link("eth0", vip).await.expect("read").holds_vip);
    assert!(
        addr_info(&ns, "eth0", &NODE_IP.to_string()).is_some(),
        "the node's own address stays"
    );
}

/// `net.ipv6.conf.<dev>.disable_ipv6=0` in `ns`.
fn enable_ipv6(ns: &Netns, dev: &str) {
    let out = ns.exec(&format!("sysctl -q -w net.ipv6.conf.{dev}.disable_ipv6=0"));
    assert!(out.status.success(), "enable IPv6 on {dev}: {out:?}");
}

/// Runs `f` on a thread of its own that entered `ns` first: the raw channel of `arp` and
/// `ndp` opens in the caller's namespace (the test's own thread stays where it is).
fn inside<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let namespace = std::fs::File::open(&path).expect("open the namespace");
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .expect("the thread inside the namespace panicked")
    })
}

/// The MAC of `dev` in `ns`, as `ip` shows it.
fn mac_of(ns: &Netns, dev: &str) -> Mac {
    let link = link_json(ns, dev);
    link["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no MAC on {dev}: {link}"))
}

/// The MAC of `ip`'s neighbour entry on `dev` in `ns`, if there is one with an address.
fn neighbour_mac(ns: &Netns, dev: &str, ip: &str) -> Option<String> {
    ns.ip_json(&format!("neigh show {ip} dev {dev}"))
        .first()?
        .get("lladdr")?
        .as_str()
        .map(str::to_owned)
}

/// Waits up to a second for `ip`'s neighbour entry on `eth0` in `ns` to name `mac`.
fn wait_for_neighbour(ns: &Netns, ip: &str, mac: Mac) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while neighbour_mac(ns, "eth0", ip) != Some(mac.to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "{ip}'s neighbour entry in {} did not move to {mac}: {:?}",
            ns.name,
            ns.ip_json(&format!("neigh show {ip} dev eth0"))
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A MAC no one on the segment has: a neighbour's stale entry for the VIP.
const OLD_MAC: &str = "02:00:00:00:00:99";

#[tokio::test]
async fn ndp_probes_find_the_holder_of_an_ipv6_vip_and_its_announcement_moves_neighbours() {
    let (a, b) = two_nodes();
    for (ns, me) in [(&a, 11), (&b, 12)] {
        enable_ipv6(ns, "eth0");
        ns.ip(&format!("addr add fd00:50::{me}/64 dev eth0"));
        wait_for_dad(ns);
    }
    let vip: std::net::Ipv6Addr = "fd00:50::250".parse().expect("ip");
    let gap = std::time::Duration::from_millis(100);
    let a_mac = mac_of(&a, "eth0");

    // No one holds it: no answer.
    let answer = inside(&b, || ndp::answered("eth0", vip, 2, gap)).expect("probe");
    assert_eq!(answer, None);

    // A holds it (no DAD of its own): A's kernel answers B's probe, which it only does for a
    // valid solicitation (checksum, hop limit, solicited-node group).
    let netlink = a.netlink().await;
    netlink
        .hold_vip("eth0", vip.into(), 30)
        .await
        .expect("hold");
    let answer = inside(&b, || ndp::answered("eth0", vip, 3, gap)).expect("probe");
    assert_eq!(answer, Some(a_mac));
    // A's own probe finds no one else.
    let answer = inside(&a, || ndp::answered("eth0", vip, 1, gap)).expect("probe");
    assert_eq!(answer, None, "A holds it itself");

    // B knows the VIP at an old MAC; A's announcement moves it (an unsolicited advertisement
    // only updates an entry, and the kernel takes it only with a valid checksum).
    b.ip(&format!(
        "-6 neigh replace {vip} lladdr {OLD_MAC} dev eth0 nud stale"
    ));
    assert_eq!(
        neighbour_mac(&b, "eth0", &vip.to_string()).as_deref(),
        Some(OLD_MAC)
    );
    inside(&a, || ndp::announce("eth0", vip)).expect("announce");
    wait_for_neighbour(&b, &vip.to_string(), a_mac);

    // Gone from A: no answer any more.
    netlink.drop_vip("eth0", vip.into()).await.expect("drop");
    let answer = inside(&b, || ndp::answered("eth0", vip, 2, gap)).expect("probe");
    assert_eq!(answer, None);
}

#[tokio::test]
async fn arp_probes_find_the_holder_of_an_ipv4_vip_and_its_announcement_moves_neighbours() {
    let (a, b) = two_nodes();
    let vip = ip4("192.168.77.250");
    let gap = std::time::Duration::from_millis(100);
    let a_mac = mac_of(&a, "eth0");

    let answer = inside(&b, || arp::answered("eth0", vip, 2, gap)).expect("probe");
    assert_eq!(answer, None, "no one holds it");

    let netlink = a.netlink().await;
    netlink
        .hold_vip("eth0", vip.into(), 30)
        .await
        .expect("hold");
    let answer = inside(&b, || arp::answered("eth0", vip, 3, gap)).expect("probe");
    assert_eq!(answer, Some(a_mac));
    assert_eq!(
        inside(&a, || arp::mac_of("eth0")).expect("mac"),
        a_mac,
        "the channel's MAC is the link's"
    );

    b.ip(&format!(
        "-4 neigh replace {vip} lladdr {OLD_MAC} dev eth0 nud stale"
    ));
    inside(&a, || arp::announce("eth0", vip)).expect("announce");
    wait_for_neighbour(&b, &vip.to_string(), a_mac);

    netlink.drop_vip("eth0", vip.into()).await.expect("drop");
    let answer = inside(&b, || arp::answered("eth0", vip, 2, gap)).expect("probe");
    assert_eq!(answer, None, "gone from A");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_snat_table_is_its_own_and_leaves_the_nat_table_alone() {
    let ns = Netns::new();
    let mut netlink = ns.netlink().await;
    let outgoing = Masquerade {
        source: net4("10.244.1.0/24"),
        exempt: vec![net4("10.244.0.0/16")],
    };
    let snat = causeway_node_agent::nat::gateway_snat(
        &[net4("192.168.77.0/24"), net4("192.168.78.0/24")],
        net4("10.244.0.0/16"),
    );
    apply(
        &mut netlink,
        &[
            Op::ReplaceNat(outgoing.clone()),
            Op::ReplaceSnat(snat.clone()),
        ],
    )
    .await;
    let listed = ns.exec("nft list table ip causeway-gateway");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("ip saddr @clients ip daddr 10.244.0.0/16 masquerade")
            && text.contains("192.168.77.0/24"),
        "{text}"
    );
    let observed = netlink.observe().await.expect("observe");
    assert_eq!(observed.snat, Some(Snat::Masquerade(snat.clone())));
    assert_eq!(observed.nat, Some(Nat::Masquerade(outgoing.clone())));

    apply(&mut netlink, &[Op::DeleteSnat]).await;
    let observed = netlink.observe().await.expect("observe");
    assert_eq!(observed.snat, None);
    assert_eq!(observed.nat, Some(Nat::Masquerade(outgoing)), "untouched");
    apply(&mut netlink, &[Op::DeleteNat]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ipv6_gateway_snat_table_is_its_own_family_and_leaves_the_ipv4_one_and_foreign_ones_alone()
 {
    let ns = Netns::new();
    let mut netlink = ns.netlink().await;
    let foreign = ns.exec("nft add table ip6 someone-else");
    assert!(foreign.status.success(), "{foreign:?}");
    let v4 =
        causeway_node_agent::nat::gateway_snat(&[net4("192.168.77.0/24")], net4("10.244.0.0/16"));
    let net6 = |s: &str| -> ipnet::Ipv6Net { s.parse().expect("net") };
    let v6 = causeway_node_agent::nat::gateway_snat6(
        &[net6("fd00:77::/64"), net6("fd00:78::/64")],
        net6("fd00:10:244::/56"),
    );
    let outgoing6 = Masquerade6 {
        source: net6("fd00:10:244:1::/64"),
        exempt: vec![net6("fd00:10:244::/56")],
    };
    apply(
        &mut netlink,
        &[
            Op::ReplaceSnat(v4.clone()),
            Op::ReplaceNat6(outgoing6.clone()),
            Op::ReplaceSnat6(v6.clone()),
        ],
    )
    .await;
    let listed = ns.exec("nft list table ip6 causeway-gateway");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("ip6 saddr @clients ip6 daddr fd00:10:244::/56 masquerade")
            && text.contains("fd00:77::/64")
            && text.contains("fd00:78::/64"),
        "{text}"
    );
    let state = netlink.observe().await.expect("observe");
    assert_eq!(state.snat6, Some(Snat6::Masquerade(v6.clone())));
    assert_eq!(state.snat, Some(Snat::Masquerade(v4.clone())));
    assert_eq!(state.nat6, Some(Nat6::Masquerade(outgoing6.clone())));

    // Replaced whole: a narrower client list leaves no old element behind.
    let narrower =
        causeway_node_agent::nat::gateway_snat6(&[net6("fd00:78::/64")], net6("fd00:10:244::/56"));
    apply(&mut netlink, &[Op::ReplaceSnat6(narrower.clone())]).await;
    let state = netlink.observe().await.expect("observe");
    assert_eq!(state.snat6, Some(Snat6::Masquerade(narrower.clone())));

    // Tampering with the ip6 table makes it unrecognised; the ip one stays recognised, and a
    // replace brings back exactly the agent's rule.
    let tamper = ns.exec("nft add rule ip6 causeway-gateway postrouting counter accept");
    assert!(tamper.status.success(), "{tamper:?}");
    let state = netlink.observe().await.expect("observe");
    assert!(
        matches!(state.snat6, Some(Snat6::Unrecognised(_))),
        "{:?}",
        state.snat6
    );
    assert_eq!(state.snat, Some(Snat::Masquerade(v4.clone())));
    apply(&mut netlink, &[Op::ReplaceSnat6(narrower.clone())]).await;
    assert_eq!(
        netlink.observe().await.expect("observe").snat6,
        Some(Snat6::Masquerade(narrower))
    );

    apply(&mut netlink, &[Op::DeleteSnat6]).await;
    let state = netlink.observe().await.expect("observe");
    assert_eq!(state.snat6, None);
    assert_eq!(
        state.snat,
        Some(Snat::Masquerade(v4)),
        "deleting the ip6 table left the ip one"
    );
    assert_eq!(
        state.nat6,
        Some(Nat6::Masquerade(outgoing6)),
        "and the ip6 NAT table"
    );
    let kept = ns.exec("nft list table ip6 someone-else");
    assert!(
        kept.status.success(),
        "a foreign table was removed: {kept:?}"
    );
    apply(&mut netlink, &[Op::DeleteSnat, Op::DeleteNat6]).await;
}

/// `--sysctl-dir`: the chart mounts the host's /proc/sys/net at /host/proc/sys/net. Here a
/// directory whose `net` is a symlink to /proc/sys/net stands in for that mount: the agent
/// must write through the configured root, and what it reaches is the network namespace of
/// the thread that opens the file (the node's), not the test process's.
#[tokio::test(flavor = "multi_thread")]
async fn kernel_parameters_are_written_under_the_configured_sysctl_dir_in_the_agents_namespace() {
    let ns = Netns::with_underlay();
    let root = std::env::temp_dir().join(format!("causeway-sysctl-dir-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("temp dir");
    let _ = std::fs::remove_file(root.join("net"));
    std::os::unix::fs::symlink("/proc/sys/net", root.join("net")).expect("symlink");
    let mut netlink = ns
        .netlink()
        .await
        .with_sysctl_dir(causeway_node_agent::sysctl::SysctlDir::new(&root));
    let ns_value = |path: &str| {
        let out = ns.exec(&format!("cat {path}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    ns.exec("sysctl -qw net.ipv4.ip_forward=0");
    ns.exec("sysctl -qw net.ipv6.conf.all.forwarding=0");
    netlink.enable_forwarding(false).await.expect("forwarding");
    assert_eq!(ns_value("/proc/sys/net/ipv4/ip_forward"), "1");
    assert_eq!(
        ns_value("/proc/sys/net/ipv6/conf/all/forwarding"),
        "0",
        "IPv6 forwarding only for a dual-stack network"
    );
    netlink.enable_forwarding(true).await.expect("forwarding");
    assert_eq!(ns_value("/proc/sys/net/ipv6/conf/all/forwarding"), "1");
    apply(
        &mut netlink,
        &[
            Op::ReplaceRoute(route("10.244.0.0/16", None, "eth0", false)),
            Op::SetProxyArp {
                dev: "eth0".into(),
                on: true,
            },
        ],
    )
    .await;
    assert_eq!(ns_value("/proc/sys/net/ipv4/conf/eth0/proxy_arp"), "1");
    assert_eq!(
        netlink.observe().await.expect("observe").proxy_arp.len(),
        1,
        "read back through the configured root"
    );

    // A root without net/ fails with the path in the message, not silently in /proc/sys.
    let missing = causeway_node_agent::sysctl::SysctlDir::new(root.join("missing"));
    let wrong = ns.netlink().await.with_sysctl_dir(missing);
    let Err(message) = wrong.enable_forwarding(false).await else {
        panic!("forwarding enabled through a root that does not exist");
    };
    let want = root.join("missing/net/ipv4/ip_forward");
    assert!(message.contains(&want.display().to_string()), "{message}");
    std::fs::remove_dir_all(&root).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_routes_are_seen_whatever_their_origin_or_type() {
    let ns = Netns::with_underlay();
    // What boot scripts, DHCP clients, administrators and the kernel leave in the main table.
    ns.ip("route add 10.91.0.0/24 via 192.168.77.5 dev eth0"); // proto boot
    ns.ip("route add 10.92.0.0/24 via 192.168.77.5 dev eth0 proto dhcp");
    ns.ip("route add 10.93.0.0/24 via 192.168.77.5 dev eth0 proto static");
    ns.ip("route add 10.94.0.0/24 dev eth0 proto kernel scope link");
    ns.ip("route add blackhole 10.95.0.0/24");
    // Not in the way of a metric-0 route in the main table.
    ns.ip("route add 10.96.0.0/24 via 192.168.77.5 dev eth0 metric 100");
    ns.ip("route add 10.97.0.0/24 via 192.168.77.5 dev eth0 table 100");

    let netlink = ns.netlink().await;
    let net = |s: &str| -> Ipv4Net { s.parse().expect("CIDR") };
    let wanted: std::collections::BTreeSet<Ipv4Net> = [
        "10.91.0.0/24",
        "10.92.0.0/24",
        "10.93.0.0/24",
        "10.94.0.0/24",
        "10.95.0.0/24",
        "10.96.0.0/24",
        "10.97.0.0/24",
        "10.98.0.0/24",
        "192.168.77.0/24",
    ]
    .into_iter()
    .map(net)
    .collect();
    let foreign = netlink.foreign_routes().await.expect("dump");
    let taken: std::collections::BTreeSet<Ipv4Net> = foreign
        .destinations
        .intersection(&wanted)
        .copied()
        .collect();
    let expected: std::collections::BTreeSet<Ipv4Net> = [
        "10.91.0.0/24",
        "10.92.0.0/24",
        "10.93.0.0/24",
        "10.94.0.0/24",
        "10.95.0.0/24",
        "192.168.77.0/24", // the underlay's own connected route
    ]
    .into_iter()
    .map(net)
    .collect();
    assert_eq!(taken, expected);
    // The node's own next hops: what no planned route may cover.
    assert_eq!(
        foreign.next_hops.into_iter().collect::<Vec<_>>(),
        vec![Ipv4Addr::new(192, 168, 77, 5)]
    );
}

/// IPv6 routes get metric 1024 unless told otherwise, the agent's too: a foreign route with
/// that metric is a destination an IPv6 route of the agent's would replace; one with another
/// metric, or in another table, is not.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_ipv6_routes_with_the_default_metric_are_destinations() {
    let ns = Netns::with_underlay();
    ns.ip("-6 addr add fd00:77::11/64 dev eth0 nodad");
    ns.ip("-6 route add fd00:91::/64 via fd00:77::5 dev eth0");
    ns.ip("-6 route add fd00:92::/64 via fd00:77::5 dev eth0 proto static");
    ns.ip("-6 route add fd00:96::/64 via fd00:77::5 dev eth0 metric 100");
    ns.ip("-6 route add fd00:97::/64 via fd00:77::5 dev eth0 table 100");
    let netlink = ns.netlink().await;
    let foreign = netlink.foreign_routes().await.expect("dump");
    let ours: Vec<String> = foreign
        .destinations6
        .iter()
        .map(ToString::to_string)
        .filter(|d| d.starts_with("fd00:9"))
        .collect();
    assert_eq!(ours, ["fd00:91::/64", "fd00:92::/64"]);
    assert!(
        foreign
            .next_hops6
            .contains(&"fd00:77::5".parse().expect("ip")),
        "{:?}",
        foreign.next_hops6
    );
}

/// Issue #14, defect 6: the pods' veths are marked while on the agent's bridge, and attached
/// again when the bridge is deleted and re-created; veths that are not pods' on the agent's
/// bridge are never touched.
#[tokio::test(flavor = "multi_thread")]
async fn pod_veths_are_marked_and_reattached_after_the_bridge_is_recreated() {
    let ns = Netns::with_underlay();
    let mut netlink = ns.netlink().await;
    let mut desired = State::default();
    desired
        .links
        .insert("cw-br0".into(), bridge("cw-br0", 1500, true));
    let ops = causeway_node_agent::diff::diff(&desired, &netlink.observe().await.expect("observe"));
    apply(&mut netlink, &ops).await;
    // Two pods as the CNI bridge plugin attaches them, and a veth on someone else's bridge.
    for (host, pod) in [
        ("vethpod0", "pod0"),
        ("vethpod1", "pod1"),
        ("vethother", "other"),
    ] {
        ns.ip(&format!("link add {host} type veth peer name {pod}"));
        ns.ip(&format!("link set {host} up"));
    }
    ns.ip("link add br-other type bridge");
    ns.ip("link set vethpod0 master cw-br0");
    ns.ip("link set vethpod1 master cw-br0");
    ns.ip("link set vethother master br-other");

    let observed = netlink.observe().await.expect("observe");
    let names: Vec<&String> = observed.ports.keys().collect();
    assert_eq!(names, ["vethpod0", "vethpod1"]);
    let ops = causeway_node_agent::diff::diff(&desired, &observed);
    assert_eq!(
        ops.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "set link vethpod0 alias causeway-pod-port:cw-br0",
            "set link vethpod1 alias causeway-pod-port:cw-br0"
        ]
    );
    apply(&mut netlink, &ops).await;
    let shown = ns.ip_json("link show vethpod0");
    assert_eq!(shown[0]["ifalias"], "causeway-pod-port:cw-br0", "{shown:?}");

    // Someone deletes the bridge: the veths stay, detached.
    ns.ip("link del cw-br0");
    let observed = netlink.observe().await.expect("observe");
    assert!(
        observed.ports.values().all(|p| p.master.is_none()),
        "{observed:?}"
    );
    let ops = causeway_node_agent::diff::diff(&desired, &observed);
    let text: Vec<String> = ops.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "create link cw-br0 type bridge mtu 1500 up",
            "set link vethpod0 master cw-br0",
            "set link vethpod1 master cw-br0"
        ]
    );
    apply(&mut netlink, &ops).await;
    for veth in ["vethpod0", "vethpod1"] {
        let shown = ns.ip_json(&format!("link show {veth}"));
        assert_eq!(shown[0]["master"], "cw-br0", "{veth}: {shown:?}");
    }
    let other = ns.ip_json("link show vethother");
    assert_eq!(other[0]["master"], "br-other", "{other:?}");
    assert!(other[0].get("ifalias").is_none(), "{other:?}");
    let settled = netlink.observe().await.expect("observe");
    assert_eq!(causeway_node_agent::diff::diff(&desired, &settled), vec![]);

    // The agent refuses to attach a veth that is not marked for the bridge.
    let refused = Dataplane::apply(
        &mut netlink,
        &Op::AttachPort {
            port: "vethother".into(),
            bridge: "cw-br0".into(),
        },
    )
    .await
    .expect_err("a foreign veth must not be attached");
    assert!(refused.message.contains("not a pod's veth"), "{refused}");
}
