//! Trust (issue #16): nobody can break someone else's network.
//!
//! NodeRestriction for Causeway: with the real credentials of node-a's agent (the node-bound
//! service-account token it runs with) every write to node-b's objects, to the operator's
//! Lease, to its own NodeSubnet's spec, labels and foreign finalizers, and every event posted
//! as someone else, is refused by the API server with a message naming the rule; every write
//! the agent needs works (live, and as server-side dry runs). The ClientJoin clients'
//! credentials write only client heartbeats. Commands run in node-a's network namespace, as
//! an attacker on that node would run them.

use std::io::Write;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use causeway_e2e::suite::{OVERLAY_NETWORK as NETWORK, Suite, network_ready, node_address, pod_on};
use causeway_e2e::topology::presets;
use causeway_e2e::traffic;
use causeway_e2e::traffic::wait_for;
use causeway_e2e::{Cluster, cmd, deploy, testing};
use serde_json::{Value, json};

const NODES: [&str; 2] = ["node-a", "node-b"];
/// The agents' resync interval in this suite.
const RESYNC_SECONDS: u64 = 3;
/// The agents' heartbeat Lease duration in this suite (40 s in production).
const LEASE_SECONDS: u64 = 6;
const NS: &str = deploy::NAMESPACE;
/// The operator's leader Lease (its `--lease-name` default).
const LEADER_LEASE: &str = "causeway-operator";

static SUITE: Suite = Suite::new(&NODES, RESYNC_SECONDS, LEASE_SECONDS);

fn main() -> ExitCode {
    testing::run_suite(
        "trust",
        || presets::one_segment(2),
        vec![
            testing::test(
                "a_node_agents_credentials_write_only_its_own_node_subnet_lease_and_events",
                node_restriction,
            ),
            testing::test(
                "a_gateway_clients_credentials_write_only_client_heartbeats",
                client_restriction,
            ),
            testing::test(
                "hostile_and_careless_inputs_are_refused_or_reported_and_the_live_network_keeps_flowing",
                hostile_inputs,
            ),
            testing::test(
                "applying_every_example_never_changes_a_live_object",
                examples_are_safe,
            ),
            testing::test(
                "pods_keep_talking_through_a_60s_api_server_freeze_and_an_etcd_restart_and_status_catches_up",
                control_plane_faults,
            ),
        ],
    )
}

/// One write attempted with someone's credentials: refused with a message containing
/// `refused_with`, or (when `None`) accepted.
struct Case {
    what: &'static str,
    args: Vec<String>,
    stdin: Option<Value>,
    refused_with: Option<&'static str>,
}

fn case(what: &'static str, args: &[&str], refused_with: Option<&'static str>) -> Case {
    Case {
        what,
        args: args.iter().map(|s| s.to_string()).collect(),
        stdin: None,
        refused_with,
    }
}

fn create(what: &'static str, object: Value, refused_with: Option<&'static str>) -> Case {
    let mut args = vec!["create", "-f", "-"];
    if refused_with.is_none() {
        args.push("--dry-run=server");
    }
    Case {
        stdin: Some(object),
        ..case(what, &args, refused_with)
    }
}

/// kubectl in node-a's namespace with `kubeconfig`: `Ok(stdout)` or `Err(stderr)`.
fn kubectl_as(
    c: &Cluster,
    kubeconfig: &str,
    args: &[String],
    stdin: Option<&Value>,
) -> Result<std::result::Result<String, String>> {
    let mut command = cmd::in_netns(&c.ns("node-a"), &c.binaries.kubectl.display().to_string());
    command
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| cmd::describe(&command))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    Ok(if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    })
}

/// Runs every case and fails listing each that did not go as expected.
fn run_cases(c: &Cluster, who: &str, kubeconfig: &str, cases: &[Case]) -> Result<()> {
    let mut wrong = Vec::new();
    for case in cases {
        let result = kubectl_as(c, kubeconfig, &case.args, case.stdin.as_ref())?;
        let verdict = match (&result, case.refused_with) {
            (Err(stderr), Some(words)) if stderr.contains(words) => "refused",
            (Ok(_), None) => "accepted",
            _ => {
                wrong.push(format!(
                    "{who}: {}: expected {}, got {result:?}",
                    case.what,
                    case.refused_with
                        .map_or("acceptance".to_string(), |w| format!("refusal with {w:?}"))
                ));
                "WRONG"
            }
        };
        eprintln!("[trust] {who}: {:<60} {verdict}", case.what);
        if let Err(stderr) = &result
            && verdict == "refused"
        {
            eprintln!("[trust]     {stderr}");
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

fn subnet_names(c: &Cluster) -> Result<(String, String)> {
    let subnets = deploy::node_subnets(c, NETWORK)?;
    let name = |node: &str| -> Result<String> {
        subnets
            .iter()
            .find(|s| s["spec"]["nodeName"] == node)
            .and_then(|s| s["metadata"]["name"].as_str())
            .map(str::to_string)
            .with_context(|| format!("{node} has no NodeSubnet"))
    };
    Ok((name("node-a")?, name("node-b")?))
}

fn lease(name: &str, holder: &str, component: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": NS,
            "labels": {"app.kubernetes.io/component": component}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 40}})
}

fn event(namespace: &str, controller: &str, instance: &str, regarding: Value) -> Value {
    let now = now_micro();
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"generateName": "trust-", "namespace": namespace},
        "eventTime": now, "type": "Normal", "reason": "Programmed", "action": "Program",
        "note": "written by the trust suite",
        "reportingController": controller, "reportingInstance": instance,
        "regarding": regarding})
}

fn now_micro() -> String {
    // RFC 3339 in UTC with exactly six fractional digits, as MicroTime wants.
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

fn node_restriction(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let (own, other) = subnet_names(c)?;

    // What the agent needs works live: Ready says every agent wrote its status; each holds
    // its finalizer, renews its heartbeat and has posted events as itself.
    for node in NODES {
        let subnets = deploy::node_subnets(c, NETWORK)?;
        let s = subnets
            .iter()
            .find(|s| s["spec"]["nodeName"] == node)
            .context("NodeSubnet")?;
        ensure!(
            s["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "causeway.dev/node-agent")),
            "{node}'s agent does not hold its finalizer: {}",
            s["metadata"]
        );
    }
    let renew = |node: &str| -> Result<String> {
        c.kubectl(&[
            "get",
            "lease",
            "-n",
            NS,
            &format!("causeway-agent-{node}"),
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
    };
    let before = renew("node-a")?;
    wait_for(
        "node-a's agent renews its heartbeat",
        Duration::from_secs(LEASE_SECONDS * 2),
        || {
            let now = renew("node-a")?;
            ensure!(now != before, "renewTime still {now}");
            Ok(())
        },
    )?;
    let events: Value = serde_json::from_str(&c.kubectl(&[
        "get",
        "events.events.k8s.io",
        "-n",
        "default",
        "-o",
        "json",
    ])?)?;
    ensure!(
        events["items"].as_array().is_some_and(|items| items
            .iter()
            .any(|e| e["reportingInstance"] == "node-a"
                && e["reportingController"] == "causeway-node-agent")),
        "no event posted by node-a's agent"
    );

    let agent = deploy::agent_kubeconfig(c, "node-a")?;
    let own_rule = "may write only its own NodeSubnets";
    let lease_rule = "may write only its own heartbeat Lease";
    let event_rule = "may post events only in namespace default";
    let forged = json!({"status": {"conditions": [{"type": "Programmed", "status": "False",
        "reason": "ApplyFailed", "message": "forged by node-a", "observedGeneration": 1,
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    .to_string();
    let own_subnet = json!({"kind": "NodeSubnet", "name": own});
    let now = now_micro();
    let renewal = json!({"spec": {"renewTime": now}}).to_string();
    let cases = vec![
        // Another node's NodeSubnet.
        case(
            "node-b's status (a forged Programmed=False)",
            &[
                "patch",
                "nodesubnet",
                &other,
                "--subresource=status",
                "--type=merge",
                "-p",
                &forged,
            ],
            Some(own_rule),
        ),
        case(
            "node-b's spec.nodeAddress",
            &[
                "patch",
                "nodesubnet",
                &other,
                "--type=merge",
                "-p",
                r#"{"spec":{"nodeAddress":"192.168.50.99"}}"#,
            ],
            Some(own_rule),
        ),
        case(
            "node-b's spec.vtepMac",
            &[
                "patch",
                "nodesubnet",
                &other,
                "--type=merge",
                "-p",
                r#"{"spec":{"vtepMac":"0e:00:00:00:00:01"}}"#,
            ],
            Some(own_rule),
        ),
        case(
            "node-b's finalizers removed",
            &[
                "patch",
                "nodesubnet",
                &other,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
            Some(own_rule),
        ),
        case(
            "node-b's NodeSubnet relabelled",
            &[
                "label",
                "nodesubnet",
                &other,
                "causeway.dev/network=elsewhere",
                "--overwrite",
            ],
            Some(own_rule),
        ),
        case(
            "node-b's NodeSubnet deleted",
            &["delete", "nodesubnet", &other, "--wait=false"],
            Some("cannot delete resource \"nodesubnets\""),
        ),
        create(
            "a NodeSubnet created",
            json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "NodeSubnet",
                "metadata": {"name": "trust-forged"},
                "spec": {"network": NETWORK, "nodeName": "node-a", "cidr": "10.247.200.0/24",
                    "nodeAddress": "192.168.50.11"}}),
            Some("cannot create resource \"nodesubnets\""),
        ),
        case(
            "node-b's Node relabelled",
            &["label", "node", "node-b", "trust=forged"],
            Some("cannot patch resource \"nodes\""),
        ),
        // Its own NodeSubnet beyond status and its finalizer.
        case(
            "its own spec.nodeAddress",
            &[
                "patch",
                "nodesubnet",
                &own,
                "--type=merge",
                "-p",
                r#"{"spec":{"nodeAddress":"192.168.50.99"}}"#,
            ],
            Some("never changes a NodeSubnet's spec"),
        ),
        case(
            "its own NodeSubnet labelled",
            &["label", "nodesubnet", &own, "trust=forged"],
            Some("never changes a NodeSubnet's labels"),
        ),
        case(
            "a foreign finalizer on its own NodeSubnet",
            &[
                "patch",
                "nodesubnet",
                &own,
                "--type=json",
                "-p",
                r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/hold"}]"#,
            ],
            Some("only its own finalizer"),
        ),
        // Leases.
        case(
            "the operator's leader Lease taken",
            &[
                "patch",
                "lease",
                LEADER_LEASE,
                "-n",
                NS,
                "--type=merge",
                "-p",
                r#"{"spec":{"holderIdentity":"node-a"}}"#,
            ],
            Some(lease_rule),
        ),
        case(
            "node-b's heartbeat renewed",
            &[
                "patch",
                "lease",
                "causeway-agent-node-b",
                "-n",
                NS,
                "--type=merge",
                "-p",
                &renewal,
            ],
            Some(lease_rule),
        ),
        create(
            "a heartbeat Lease for another node",
            lease("causeway-agent-node-z", "node-z", "node-agent-heartbeat"),
            Some(lease_rule),
        ),
        create(
            "an election Lease naming node-b",
            lease("causeway-gw-trust", "node-b", "gateway-election"),
            Some(lease_rule),
        ),
        create(
            "a Lease of its own choosing",
            lease("causeway-operator-2", "node-a", "operator"),
            Some(lease_rule),
        ),
        // Events.
        create(
            "an event in kube-system as the kubelet",
            event(
                "kube-system",
                "kubelet",
                "node-b",
                json!({"kind": "Node", "name": "node-b"}),
            ),
            Some(event_rule),
        ),
        create(
            "an event signed as node-b's agent",
            event(
                "default",
                "causeway-node-agent",
                "node-b",
                own_subnet.clone(),
            ),
            Some(event_rule),
        ),
        // What the agent needs (server-side dry runs: admission runs, nothing is stored).
        case(
            "its own status",
            &[
                "patch",
                "nodesubnet",
                &own,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"routes":1}}"#,
                "--dry-run=server",
            ],
            None,
        ),
        case(
            "its own finalizer released",
            &[
                "patch",
                "nodesubnet",
                &own,
                "--type=json",
                "-p",
                r#"[{"op":"test","path":"/metadata/finalizers","value":["causeway.dev/node-agent"]},{"op":"remove","path":"/metadata/finalizers/0"}]"#,
                "--dry-run=server",
            ],
            None,
        ),
        case(
            "its own heartbeat renewed",
            &[
                "patch",
                "lease",
                "causeway-agent-node-a",
                "-n",
                NS,
                "--type=merge",
                "-p",
                &renewal,
                "--dry-run=server",
            ],
            None,
        ),
        create(
            "an election Lease naming itself",
            lease("causeway-gw-trust", "node-a", "gateway-election"),
            None,
        ),
        create(
            "an unheld election Lease (a VIP-in-use mark)",
            lease("causeway-gw-trust", "", "gateway-election"),
            None,
        ),
        create(
            "an event about its own NodeSubnet",
            event("default", "causeway-node-agent", "node-a", own_subnet),
            None,
        ),
    ];
    run_cases(c, "node-a's agent", &agent, &cases)?;

    // The agent's service account without a node claim (a client certificate here; a token
    // requested without binding would be the same).
    let unbound = deploy::unbound_agent_kubeconfig(c)?;
    run_cases(
        c,
        "the agent account without a node",
        &unbound,
        &[case(
            "its own status",
            &[
                "patch",
                "nodesubnet",
                &own,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"routes":1}}"#,
                "--dry-run=server",
            ],
            Some("carries no node claim"),
        )],
    )?;
    Ok(())
}

fn client_restriction(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    // A ClientJoin gateway with two clients: the operator gives each its own ServiceAccount.
    let gw = "trust-join";
    let clients = [
        ("laptop", s("192.168.50.100"), s("10.250.0.100")),
        ("desktop", s("192.168.50.101"), s("10.250.0.101")),
    ];
    c.kubectl_stdin(&["apply", "-f", "-"], &join(gw, &clients).to_string())?;
    let laptop = deploy::gateway_client_kubeconfig(c, gw, "laptop")?;
    let own = deploy::client_account(gw, "laptop");
    let other = deploy::client_account(gw, "desktop");
    let rule = "a ClientJoin client may write only its own heartbeat";
    let heartbeat = "gateway-client-heartbeat";
    run_cases(
        c,
        "gateway client laptop",
        &laptop,
        &[
            case(
                "the operator's leader Lease taken",
                &[
                    "patch",
                    "lease",
                    LEADER_LEASE,
                    "-n",
                    NS,
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"holderIdentity":"trust-join/laptop"}}"#,
                ],
                Some(rule),
            ),
            case(
                "node-a's heartbeat renewed",
                &[
                    "patch",
                    "lease",
                    "causeway-agent-node-a",
                    "-n",
                    NS,
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"holderIdentity":"node-a"}}"#,
                ],
                Some(rule),
            ),
            create(
                "a node heartbeat Lease",
                lease("causeway-agent-node-z", "node-z", "node-agent-heartbeat"),
                Some(rule),
            ),
            create(
                "the other client's heartbeat, as that client",
                lease(&other, "trust-join/desktop", heartbeat),
                Some(rule),
            ),
            create(
                "its own heartbeat Lease holding the other client's name",
                lease(&own, "trust-join/desktop", heartbeat),
                Some(rule),
            ),
            create(
                "a NodeSubnet",
                json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "NodeSubnet",
                    "metadata": {"name": "trust-forged"},
                    "spec": {"network": NETWORK, "nodeName": "node-a", "cidr": "10.247.200.0/24",
                        "nodeAddress": "192.168.50.11"}}),
                Some("cannot create resource \"nodesubnets\""),
            ),
            create(
                "a ServiceAccount for another client",
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "causeway-client-trust-join.printer",
                        "namespace": deploy::CLIENT_NAMESPACE}}),
                Some("cannot create resource \"serviceaccounts\""),
            ),
            create(
                "its own heartbeat",
                lease(&own, "trust-join/laptop", heartbeat),
                None,
            ),
        ],
    )?;
    // The `default` account Kubernetes makes in the clients' namespace shares their group,
    // but writes no Lease, not even one whose long holder skips the name check.
    let default = deploy::token_kubeconfig(c, deploy::CLIENT_NAMESPACE, "default")?;
    let long_holder = format!("trust-join/{}", "x".repeat(250));
    run_cases(
        c,
        "the clients' namespace's default account",
        &default,
        &[create(
            "a Lease named after it, with a holder too long to check",
            lease("default", &long_holder, heartbeat),
            Some(rule),
        )],
    )?;
    // The old shared account is gone: no credential serves every client.
    ensure!(
        c.kubectl(&["get", "serviceaccount", "causeway-gateway-client", "-n", NS])
            .is_err(),
        "the shared causeway-gateway-client account still exists"
    );
    // A client taken off the gateway loses its account, and every token of it stops working.
    c.kubectl_stdin(&["apply", "-f", "-"], &join(gw, &clients[1..]).to_string())?;
    deploy::wait_client_account(c, gw, "laptop", false)?;
    let revoked =
        wait_for(
            "laptop's token is refused",
            Duration::from_secs(30),
            || match kubectl_as(c, &laptop, &[s("get"), s("podnetworks")], None)? {
                Err(stderr)
                    if stderr.contains("Unauthorized") || stderr.contains("must be logged in") =>
                {
                    Ok(stderr)
                }
                other => anyhow::bail!("still answered: {other:?}"),
            },
        )?;
    println!("    laptop removed from the gateway: its token is refused ({revoked})");
    // The gateway going takes the remaining accounts with it (owner reference).
    c.kubectl(&["delete", "overlaygateway", gw, "--wait=true"])?;
    deploy::wait_client_account(c, gw, "desktop", false)?;
    Ok(())
}

fn s(text: &str) -> String {
    text.to_string()
}

/// What a hostile or careless input must lead to.
enum Outcome {
    /// The API server refuses it, with a message containing this.
    Refused(String),
    /// OverlayGateway `gateway` reports Ready=False with `reason` and a message containing
    /// `words`.
    Gateway {
        gateway: &'static str,
        reason: &'static str,
        words: String,
    },
    /// PodNetwork `network` reports Ready=False with `reason` and a message containing
    /// `words`, and allocates nothing.
    Network {
        network: &'static str,
        reason: &'static str,
        words: String,
    },
    /// The operator deletes the object and says so in an event on the live network whose
    /// note contains `words`.
    Released { words: String },
}

struct Hostile {
    what: &'static str,
    /// Applied together, in order.
    objects: Vec<Value>,
    outcome: Outcome,
}

fn gateway(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "OverlayGateway",
        "metadata": {"name": name}, "spec": spec})
}

fn join(name: &str, clients: &[(&str, String, String)]) -> Value {
    let clients: Vec<Value> = clients
        .iter()
        .map(|(n, a, o)| json!({"name": n, "address": a, "overlayAddress": o}))
        .collect();
    gateway(
        name,
        json!({"network": NETWORK, "strategy": "ClientJoin", "clientJoin": {"clients": clients}}),
    )
}

fn pod_network(name: &str, cidr: &str, selector: Value) -> Value {
    json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "nodeSubnetPrefixLength": 24, "mode": "Overlay",
            "nodeSelector": selector}})
}

/// A NodeSubnet of the live network written by hand for node-b.
fn subnet_by_hand(name: &str, cidr: &str, address: &str, mac: Option<&str>) -> Value {
    let mut spec =
        json!({"network": NETWORK, "nodeName": "node-b", "cidr": cidr, "nodeAddress": address});
    if let Some(mac) = mac {
        spec["vtepMac"] = json!(mac);
    }
    json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "NodeSubnet",
        "metadata": {"name": name, "labels": {"causeway.dev/network": NETWORK}}, "spec": spec})
}

/// A Routed network with BGP to `peers`.
fn bgp_network(peers: Value) -> Value {
    json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
        "metadata": {"name": "trust-net"},
        "spec": {"cidr": "10.248.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Routed",
            "routed": {"bgp": {"asn": 64512, "peers": peers}}}})
}

fn bridge(name: &str, vip: &str) -> Value {
    gateway(
        name,
        json!({"network": NETWORK, "strategy": "BridgeHosts", "clientCidrs": ["192.168.70.0/24"],
            "bridgeHosts": {"nodeSelector": {}, "vip": vip}}),
    )
}

/// The untouched network stays Ready and its traffic flows: pod to pod both ways across the
/// nodes, and node-b to node-a over the underlay (never into the tunnel).
fn live_network_flows(c: &Cluster, what: &str) -> Result<()> {
    let (status, reason, message) = network_ready(c, NETWORK)?;
    ensure!(
        status == "True",
        "{what}: the untouched network is {status} ({reason}): {message}"
    );
    let pods = SUITE.pods();
    let (a, b) = (pod_on(&pods, "node-a")?, pod_on(&pods, "node-b")?);
    traffic::expect_ping(&a.netns, b.ip).with_context(|| what.to_string())?;
    traffic::expect_ping(&b.netns, a.ip).with_context(|| what.to_string())?;
    let node_a = node_address(c, "node-a")?;
    traffic::expect_ping(&c.ns("node-b"), node_a).with_context(|| what.to_string())?;
    let path = c.exec("node-b", "ip", &["route", "get", &node_a.to_string()])?;
    ensure!(
        !path.contains("cw-"),
        "{what}: node-b reaches node-a's address through Causeway's devices: {path}"
    );
    Ok(())
}

fn hostile_inputs(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let node_a = node_address(c, "node-a")?.to_string();
    let node_b = node_address(c, "node-b")?.to_string();
    let api = c.topology.control_plane.address.to_string();
    // The segment node-a's agent found itself on.
    let segment: ipnet::Ipv4Net = deploy::node_subnets(c, NETWORK)?
        .iter()
        .find(|s| s["spec"]["nodeName"] == "node-a")
        .and_then(|s| s["status"]["underlayPrefix"].as_str())
        .context("node-a's underlayPrefix")?
        .parse()?;
    let broadcast = segment.broadcast();
    let gw = |reason: &'static str, words: String| Outcome::Gateway {
        gateway: "trust-a",
        reason,
        words,
    };
    let cases = vec![
        Hostile {
            what: "a ClientJoin overlayAddress equal to node-a's address",
            objects: vec![join(
                "trust-a",
                &[("laptop", s("192.168.50.100"), node_a.clone())],
            )],
            outcome: gw(
                "AddressInUse",
                format!("overlayAddress {node_a} is node node-a's address"),
            ),
        },
        Hostile {
            what: "a ClientJoin address equal to node-b's address",
            objects: vec![join(
                "trust-a",
                &[("laptop", node_b.clone(), s("10.250.0.50"))],
            )],
            outcome: gw(
                "AddressInUse",
                format!("address {node_b} is node node-b's address"),
            ),
        },
        Hostile {
            what: "a ClientJoin overlayAddress equal to the API server's address",
            objects: vec![join(
                "trust-a",
                &[("laptop", s("192.168.50.100"), api.clone())],
            )],
            outcome: gw(
                "AddressInUse",
                format!("overlayAddress {api} is the API server's address"),
            ),
        },
        Hostile {
            what: "a ClientJoin overlayAddress inside the pod range",
            objects: vec![join(
                "trust-a",
                &[("laptop", s("192.168.50.100"), s("10.247.1.9"))],
            )],
            outcome: gw(
                "ClientCidrOverlapsPods",
                s("inside the pod range 10.247.0.0/16"),
            ),
        },
        Hostile {
            what: "a ClientJoin overlayAddress equal to the client's own address",
            objects: vec![join(
                "trust-a",
                &[("laptop", s("192.168.50.100"), s("192.168.50.100"))],
            )],
            outcome: gw("InvalidSpec", s("is also its address")),
        },
        Hostile {
            what: "a second client whose overlayAddress is the first client's address",
            objects: vec![join(
                "trust-a",
                &[
                    ("laptop", s("192.168.50.100"), s("10.250.0.100")),
                    ("desk", s("192.168.50.101"), s("192.168.50.100")),
                ],
            )],
            outcome: gw(
                "AddressInUse",
                s("clients[1] (desk): overlayAddress 192.168.50.100 is client laptop's address"),
            ),
        },
        Hostile {
            what: "a later gateway's client taking an earlier gateway's client's overlay address",
            objects: vec![
                join(
                    "trust-a",
                    &[("laptop", s("192.168.50.100"), s("10.250.0.100"))],
                ),
                join(
                    "trust-b",
                    &[("desk", s("192.168.50.101"), s("10.250.0.100"))],
                ),
            ],
            outcome: Outcome::Gateway {
                gateway: "trust-b",
                reason: "AddressInUse",
                words: s("is client laptop's overlay address (OverlayGateway trust-a)"),
            },
        },
        Hostile {
            what: "two ClientJoin clients with one address",
            objects: vec![join(
                "trust-a",
                &[
                    ("laptop", s("192.168.50.100"), s("10.250.0.100")),
                    ("desk", s("192.168.50.100"), s("10.250.0.101")),
                ],
            )],
            outcome: Outcome::Refused(s("more than one entry with address 192.168.50.100")),
        },
        Hostile {
            what: "a ClientJoin gateway without clients",
            objects: vec![join("trust-a", &[])],
            outcome: Outcome::Refused(s("must list at least one client")),
        },
        Hostile {
            what: "a BridgeHosts VIP equal to node-a's address",
            objects: vec![bridge("trust-a", &node_a)],
            outcome: gw(
                "VipConflict",
                format!("VIP {node_a} is node node-a's address"),
            ),
        },
        Hostile {
            what: "a BridgeHosts VIP equal to the API server's address",
            objects: vec![bridge("trust-a", &api)],
            outcome: gw(
                "VipConflict",
                format!("VIP {api} is the API server's address"),
            ),
        },
        Hostile {
            what: "a BridgeHosts VIP equal to the segment's broadcast address",
            objects: vec![bridge("trust-a", &broadcast.to_string())],
            outcome: gw(
                "VipConflict",
                format!("VIP {broadcast} is the broadcast address of the segment {segment}"),
            ),
        },
        Hostile {
            what: "a BridgeHosts VIP inside the pod range",
            objects: vec![bridge("trust-a", "10.247.0.1")],
            outcome: gw("VipConflict", s("inside the pod range")),
        },
    ];
    let services = causeway_e2e::controlplane::SERVICE_CIDR;
    let network = |reason: &'static str, words: String| Outcome::Network {
        network: "trust-net",
        reason,
        words,
    };
    let mut cases = cases;
    cases.extend([
        Hostile {
            what: "a PodNetwork whose selector has a malformed label key",
            objects: vec![pod_network(
                "trust-net",
                "10.248.0.0/16",
                json!({"matchLabels": {"bad key": "x"}}),
            )],
            outcome: network("InvalidSpec", s("nodeSelector.matchLabels key \"bad key\"")),
        },
        Hostile {
            what: "a PodNetwork whose selector has a malformed label value",
            objects: vec![pod_network(
                "trust-net",
                "10.248.0.0/16",
                json!({"matchExpressions": [{"key": "rack", "operator": "In", "values": ["a b"]}]}),
            )],
            outcome: network("InvalidSpec", s("value \"a b\" is not a label value")),
        },
        Hostile {
            what: "a PodNetwork whose range holds the nodes' addresses",
            objects: vec![pod_network("trust-net", "192.168.0.0/16", json!({}))],
            outcome: network(
                "CidrOverlapsNodes",
                format!("holds the addresses of node node-a ({node_a})"),
            ),
        },
        Hostile {
            what: "a PodNetwork whose range overlaps the Service range",
            objects: vec![pod_network("trust-net", services, json!({}))],
            outcome: network(
                "CidrOverlapsServices",
                format!("overlaps the Service range {services} (ServiceCIDR kubernetes)"),
            ),
        },
        Hostile {
            what: "a ClientJoin overlayAddress on loopback",
            objects: vec![join("trust-a", &[("laptop", s("192.168.50.100"), s("127.0.0.1"))])],
            outcome: Outcome::Refused(s("127.0.0.1 is a loopback address (127.0.0.0/8)")),
        },
        Hostile {
            what: "a ClientJoin address that is IPv6 link-local",
            objects: vec![join("trust-a", &[("laptop", s("fe80::1"), s("10.250.0.9"))])],
            outcome: Outcome::Refused(s("fe80::1 is a link-local address (fe80::/10)")),
        },
        Hostile {
            what: "a BridgeHosts VIP of 255.255.255.255",
            objects: vec![bridge("trust-a", "255.255.255.255")],
            outcome: Outcome::Refused(s("broadcast")),
        },
        Hostile {
            what: "a BridgeHosts VIP in multicast",
            objects: vec![bridge("trust-a", "224.0.0.18")],
            outcome: Outcome::Refused(s("multicast")),
        },
        Hostile {
            what: "a PodNetwork of 0.0.0.0/0",
            objects: vec![pod_network("trust-net", "0.0.0.0/0", json!({}))],
            outcome: Outcome::Refused(s("cidr 0.0.0.0/0 overlaps")),
        },
        Hostile {
            what: "a PodNetwork with host bits set",
            objects: vec![pod_network("trust-net", "10.248.1.0/16", json!({}))],
            outcome: Outcome::Refused(s("did you mean 10.248.0.0/16?")),
        },
        Hostile {
            what: "a PodNetwork in link-local",
            objects: vec![pod_network("trust-net", "169.254.0.0/16", json!({}))],
            outcome: Outcome::Refused(s("link-local")),
        },
        Hostile {
            what: "an OverlayGateway client CIDR overlapping loopback",
            objects: vec![gateway(
                "trust-a",
                json!({"network": NETWORK, "strategy": "RouteToNodes", "clientCidrs": ["127.0.0.0/16"]}),
            )],
            outcome: Outcome::Refused(s("loopback")),
        },
        // More admission refusals: every field checks alike, with the fix in the message.
        Hostile {
            what: "a NodeSubnet written by hand with a loopback nodeAddress",
            objects: vec![subnet_by_hand("trust-loopback", "10.247.78.0/24", "127.0.0.1", None)],
            outcome: Outcome::Refused(s("nodeAddress 127.0.0.1 is a loopback address")),
        },
        Hostile {
            what: "a NodeSubnet written by hand with host bits in its cidr",
            objects: vec![subnet_by_hand("trust-host-bits", "10.247.78.9/24", &node_b, None)],
            outcome: Outcome::Refused(s("did you mean 10.247.78.0/24?")),
        },
        Hostile {
            what: "a PodNetwork whose cidr is IPv6",
            objects: vec![pod_network("trust-net", "fd00:10::/64", json!({}))],
            outcome: Outcome::Refused(s("IPv6")),
        },
        Hostile {
            what: "a PodNetwork in multicast",
            objects: vec![pod_network("trust-net", "224.0.0.0/8", json!({}))],
            outcome: Outcome::Refused(s("multicast")),
        },
        Hostile {
            what: "a PodNetwork whose node subnets are larger than its range",
            objects: vec![json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
                "metadata": {"name": "trust-net"},
                "spec": {"cidr": "10.248.0.0/24", "nodeSubnetPrefixLength": 16, "mode": "Overlay"}})],
            outcome: Outcome::Refused(s("nodeSubnetPrefixLength must be larger than the prefix length of cidr 10.248.0.0/24")),
        },
        Hostile {
            what: "a PodNetwork with settings of another mode",
            objects: vec![json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
                "metadata": {"name": "trust-net"},
                "spec": {"cidr": "10.248.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Overlay",
                    "routed": {}}})],
            outcome: Outcome::Refused(s("spec.routed may only be set when mode is Routed")),
        },
        Hostile {
            what: "a BGP peer at 0.0.0.0",
            objects: vec![bgp_network(json!([{"address": "0.0.0.0", "asn": 64513}]))],
            outcome: Outcome::Refused(s("0.0.0.0")),
        },
        Hostile {
            what: "one BGP router listed twice",
            objects: vec![bgp_network(json!([
                        {"address": "192.168.50.1", "asn": 64513},
                        {"address": "192.168.50.1", "asn": 64514}]))],
            outcome: Outcome::Refused(s("more than one entry with address 192.168.50.1")),
        },
        Hostile {
            what: "two ClientJoin clients with one name",
            objects: vec![join(
                "trust-a",
                &[
                    ("laptop", s("192.168.50.100"), s("10.250.0.100")),
                    ("laptop", s("192.168.50.101"), s("10.250.0.101")),
                ],
            )],
            outcome: Outcome::Refused(s("more than one entry with name laptop")),
        },
        Hostile {
            what: "two ClientJoin clients with one overlayAddress",
            objects: vec![join(
                "trust-a",
                &[
                    ("laptop", s("192.168.50.100"), s("10.250.0.100")),
                    ("desk", s("192.168.50.101"), s("10.250.0.100")),
                ],
            )],
            outcome: Outcome::Refused(s("more than one entry with overlayAddress 10.250.0.100")),
        },
        Hostile {
            what: "a BridgeHosts gateway without its settings",
            objects: vec![gateway("trust-a", json!({"network": NETWORK, "strategy": "BridgeHosts"}))],
            outcome: Outcome::Refused(s("strategy BridgeHosts requires spec.bridgeHosts")),
        },
        Hostile {
            what: "a client CIDR with host bits",
            objects: vec![gateway(
                "trust-a",
                json!({"network": NETWORK, "strategy": "RouteToNodes", "clientCidrs": ["10.9.0.1/16"]}),
            )],
            outcome: Outcome::Refused(s("did you mean 10.9.0.0/16?")),
        },
        Hostile {
            what: "a BridgeHosts VIP in link-local",
            objects: vec![bridge("trust-a", "169.254.10.10")],
            outcome: Outcome::Refused(s("link-local")),
        },
        Hostile {
            what: "a NodeSubnet written by hand with a multicast vtepMac",
            objects: vec![subnet_by_hand("trust-mac", "10.247.79.0/24", &node_b, Some("01:00:5e:00:00:01"))],
            outcome: Outcome::Refused(s("locally administered unicast")),
        },
        Hostile {
            what: "a NodeSubnet written by hand with a link-local IPv6 nodeAddress",
            objects: vec![subnet_by_hand("trust-v6", "10.247.79.0/24", "fe80::12", None)],
            outcome: Outcome::Refused(s("fe80::12 is a link-local address (fe80::/10)")),
        },
        Hostile {
            what: "a NodeSubnet written by hand for node-b with a unique local IPv6 nodeAddress",
            objects: vec![subnet_by_hand("trust-v6", "10.247.79.0/24", "fd00::12", None)],
            outcome: Outcome::Released {
                words: s("released 10.247.79.0/24 of node node-b (NodeSubnet trust-v6): node node-b holds another subnet of this network"),
            },
        },
        Hostile {
            what: "a PodNetwork in 0.0.0.0/8",
            objects: vec![pod_network("trust-net", "0.0.0.0/8", json!({}))],
            outcome: Outcome::Refused(s("0.0.0.0/8")),
        },
        Hostile {
            what: "a PodNetwork in 240.0.0.0/4",
            objects: vec![pod_network("trust-net", "240.0.0.0/8", json!({}))],
            outcome: Outcome::Refused(s("240.0.0.0/4")),
        },
        Hostile {
            what: "a BGP peer in multicast",
            objects: vec![bgp_network(json!([{"address": "224.0.0.9", "asn": 64513}]))],
            outcome: Outcome::Refused(s("multicast")),
        },
        Hostile {
            what: "a BGP peer at an IPv6 link-local address",
            objects: vec![bgp_network(json!([{"address": "fe80::1", "asn": 64513}]))],
            outcome: Outcome::Refused(s("link-local")),
        },
        Hostile {
            what: "a ClientJoin address of 255.255.255.255",
            objects: vec![join("trust-a", &[("laptop", s("255.255.255.255"), s("10.250.0.9"))])],
            outcome: Outcome::Refused(s("broadcast")),
        },
        Hostile {
            what: "a ClientJoin overlayAddress of 0.0.0.0",
            objects: vec![join("trust-a", &[("laptop", s("192.168.50.100"), s("0.0.0.0"))])],
            outcome: Outcome::Refused(s("0.0.0.0/8")),
        },
        Hostile {
            what: "a BridgeHosts VIP of 0.0.0.0",
            objects: vec![bridge("trust-a", "0.0.0.0")],
            outcome: Outcome::Refused(s("0.0.0.0/8")),
        },
        Hostile {
            what: "a BridgeHosts VIP on IPv6 for an IPv4 network",
            objects: vec![bridge("trust-a", "fd00::250")],
            outcome: gw(
                "InvalidSpec",
                s("spec.bridgeHosts.vip fd00::250 is not of the family of the PodNetwork's cidr"),
            ),
        },
        Hostile {
            what: "a client CIDR of 0.0.0.0/0",
            objects: vec![gateway(
                "trust-a",
                json!({"network": NETWORK, "strategy": "RouteToNodes", "clientCidrs": ["0.0.0.0/0"]}),
            )],
            outcome: Outcome::Refused(s("0.0.0.0/0 overlaps")),
        },
        Hostile {
            what: "a client CIDR in multicast",
            objects: vec![gateway(
                "trust-a",
                json!({"network": NETWORK, "strategy": "RouteToNodes", "clientCidrs": ["239.0.0.0/8"]}),
            )],
            outcome: Outcome::Refused(s("multicast")),
        },
        Hostile {
            what: "a ClientJoin gateway without its settings",
            objects: vec![gateway("trust-a", json!({"network": NETWORK, "strategy": "ClientJoin"}))],
            outcome: Outcome::Refused(s("strategy ClientJoin requires spec.clientJoin")),
        },
        Hostile {
            what: "a BridgeHosts lease shorter than two seconds",
            objects: vec![gateway(
                "trust-a",
                json!({"network": NETWORK, "strategy": "BridgeHosts", "clientCidrs": ["192.168.70.0/24"],
                    "bridgeHosts": {"nodeSelector": {}, "vip": "192.168.50.250", "leaseDurationSeconds": 1}}),
            )],
            outcome: Outcome::Refused(s("leaseDurationSeconds")),
        },
        Hostile {
            what: "a client CIDR holding the pod range",
            objects: vec![gateway(
                "trust-a",
                json!({"network": NETWORK, "strategy": "RouteToNodes", "clientCidrs": ["10.247.0.0/16"]}),
            )],
            outcome: gw("ClientCidrOverlapsPods", s("overlaps the pod range 10.247.0.0/16")),
        },
        Hostile {
            what: "a PodNetwork selector with an unknown operator",
            objects: vec![pod_network(
                "trust-net",
                "10.248.0.0/16",
                json!({"matchExpressions": [{"key": "rack", "operator": "Near", "values": ["a"]}]}),
            )],
            outcome: Outcome::Refused(s("Unsupported value: \"Near\"")),
        },
        // More that only the operator can see.
        Hostile {
            what: "a ClientJoin overlayAddress equal to node-b's address",
            objects: vec![join("trust-a", &[("laptop", s("192.168.50.100"), node_b.clone())])],
            outcome: gw(
                "AddressInUse",
                format!("overlayAddress {node_b} is node node-b's address"),
            ),
        },
        Hostile {
            what: "a BridgeHosts VIP equal to the segment's network address",
            objects: vec![bridge("trust-a", &segment.network().to_string())],
            outcome: gw(
                "VipConflict",
                format!("is the network address of the segment {segment}"),
            ),
        },
        Hostile {
            what: "a gateway naming a PodNetwork that does not exist",
            objects: vec![gateway("trust-a", json!({"network": "nowhere", "strategy": "RouteToNodes"}))],
            outcome: gw("NetworkNotFound", s("PodNetwork nowhere does not exist")),
        },
        Hostile {
            what: "a RouteToNodes selector with a malformed value",
            objects: vec![gateway(
                "trust-a",
                json!({"network": NETWORK, "strategy": "RouteToNodes",
                    "routeToNodes": {"nodeSelector": {"matchLabels": {"zone": "a b"}}}}),
            )],
            outcome: gw("InvalidSpec", s("value \"a b\" is not a label value")),
        },
        Hostile {
            what: "a second PodNetwork overlapping the live one",
            objects: vec![pod_network("trust-net", "10.247.128.0/17", json!({}))],
            outcome: network("CidrOverlap", s("overlaps PodNetwork `overlay`")),
        },
        Hostile {
            what: "a second PodNetwork selecting the live network's nodes",
            objects: vec![pod_network("trust-net", "10.249.0.0/16", json!({}))],
            outcome: network("NodesClaimedByOtherNetwork", s("overlay")),
        },
        Hostile {
            what: "a NodeSubnet written by hand for node-b with a range that is no slice of the network's",
            objects: vec![subnet_by_hand("trust-by-hand", "10.247.77.0/25", &node_b, None)],
            outcome: Outcome::Released {
                words: s("released 10.247.77.0/25 of node node-b (NodeSubnet trust-by-hand): 10.247.77.0/25 is not a /24 slice of the network's range 10.247.0.0/16"),
            },
        },
    ]);
    run_hostile(c, &cases)
}

/// Waits up to 20 s for `kind`/`name` to report Ready=False with `reason` and a message
/// containing `words`; the message.
fn ready_false(
    c: &Cluster,
    kind: &str,
    name: &str,
    reason: &str,
    words: &str,
) -> std::result::Result<String, String> {
    let mut message = String::new();
    wait_for(
        &format!("{kind} {name}'s condition"),
        Duration::from_secs(20),
        || {
            let object: Value =
                serde_json::from_str(&c.kubectl(&["get", kind, name, "-o", "json"])?)?;
            let ready = object["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .cloned()
                .unwrap_or(Value::Null);
            ensure!(
                ready["status"] == "False"
                    && ready["reason"] == reason
                    && ready["message"].as_str().is_some_and(|m| m.contains(words)),
                "Ready is {ready}"
            );
            message = ready["message"].to_string();
            Ok(())
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    Ok(message)
}

/// Applies each case, checks its outcome and that the live network keeps flowing while the
/// case's objects exist, then removes them. Fails listing every case that went wrong.
fn run_hostile(c: &Cluster, cases: &[Hostile]) -> Result<()> {
    let mut wrong = Vec::new();
    for case in cases {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": case.objects});
        let applied = c.kubectl_stdin(&["apply", "-f", "-"], &list.to_string());
        let verdict = match (&case.outcome, &applied) {
            (Outcome::Refused(words), Err(e)) if format!("{e:#}").contains(words.as_str()) => {
                Ok(())
            }
            (Outcome::Refused(words), other) => {
                Err(format!("expected a refusal with {words:?}, got {other:?}"))
            }
            (
                Outcome::Gateway { .. } | Outcome::Network { .. } | Outcome::Released { .. },
                Err(e),
            ) => Err(format!("refused: {e:#}")),
            (Outcome::Released { words }, Ok(_)) => wait_for(
                "the operator's SubnetReleased event",
                Duration::from_secs(20),
                || {
                    let notes = c.kubectl(&[
                        "get",
                        "events",
                        "-n",
                        "default",
                        "--field-selector",
                        "reason=SubnetReleased",
                        "-o",
                        "jsonpath={.items[*].message}",
                    ])?;
                    ensure!(notes.contains(words.as_str()), "events: {notes}");
                    eprintln!("[trust] {}: SubnetReleased ...{words}", case.what);
                    Ok(())
                },
            )
            .map_err(|e| format!("{e:#}")),
            (
                Outcome::Gateway {
                    gateway,
                    reason,
                    words,
                },
                Ok(_),
            ) => ready_false(c, "overlaygateway", gateway, reason, words)
                .map(|m| eprintln!("[trust] {}: {reason} {m}", case.what)),
            (
                Outcome::Network {
                    network,
                    reason,
                    words,
                },
                Ok(_),
            ) => ready_false(c, "podnetwork", network, reason, words).and_then(|m| {
                let held = deploy::node_subnets(c, network).map_err(|e| format!("{e:#}"))?;
                eprintln!("[trust] {}: {reason} {m}", case.what);
                if held.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} NodeSubnets allocated", held.len()))
                }
            }),
        }
        .and_then(|()| live_network_flows(c, case.what).map_err(|e| format!("{e:#}")));
        if let Err(e) = verdict {
            wrong.push(format!("{}: {e}", case.what));
        }
        if applied.is_ok() {
            c.kubectl_stdin(
                &["delete", "--ignore-not-found", "--wait=true", "-f", "-"],
                &list.to_string(),
            )?;
        }
    }
    eprintln!(
        "[trust] {} hostile inputs, {} as expected",
        cases.len(),
        cases.len() - wrong.len()
    );
    ensure!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}

/// `kubectl apply -f docs/examples/` on the running cluster (server-side dry run: admission and
/// defaulting run, nothing is stored) creates new objects at most: every object that exists
/// already, like the live `overlay` network applied from the same directory, comes out
/// unchanged. The NodeSubnet example, which would replace node-a's, is in `reference/`.
fn examples_are_safe(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let dir = causeway_e2e::controlplane::workspace_root().join("docs/examples");
    let out = c.kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        &dir.display().to_string(),
    ])?;
    eprintln!("[trust] kubectl apply --dry-run=server -f docs/examples/:\n{out}");
    let changed: Vec<&str> = out.lines().filter(|l| l.contains("configured")).collect();
    ensure!(
        changed.is_empty(),
        "the examples change live objects: {changed:?}"
    );
    ensure!(
        out.lines()
            .any(|l| l.starts_with("podnetwork.causeway.dev/overlay unchanged")),
        "the live network was not among the examples: {out}"
    );
    ensure!(
        !out.contains("nodesubnet"),
        "applying the examples touches NodeSubnets: {out}"
    );
    Ok(())
}

/// Issue #16, reliability: with pings every 50 ms between pods on node-a and node-b, the API
/// server frozen (SIGSTOP) for 60 s, then etcd restarted. The dataplane never depends on the
/// control plane, so no ping is lost; once the control plane is back the network reports
/// Ready again, with every node's status current (agents and operator caught up).
fn control_plane_faults(c: &Cluster) -> Result<()> {
    SUITE.overlay(c)?;
    let pods = SUITE.pods();
    let (a, b) = (pod_on(&pods, "node-a")?, pod_on(&pods, "node-b")?);
    let ping = traffic::ContinuousPing::start(&a.netns, b.ip, Duration::from_millis(50))?;
    {
        let _frozen = causeway_e2e::suite::freeze_apiserver(c)?;
        std::thread::sleep(Duration::from_secs(60));
    }
    causeway_e2e::suite::wait_network_ready(c, NETWORK, 90)?;
    c.restart_etcd()?;
    causeway_e2e::suite::wait_network_ready(c, NETWORK, 60)?;
    // A change made now is programmed: the watches are live again.
    let before = deploy::node_subnets(c, NETWORK)?.len();
    ensure!(before == NODES.len(), "{before} NodeSubnets");
    let report = ping.stop()?;
    eprintln!(
        "[measure] API server frozen 60 s, then etcd restarted; ping every 50 ms {} -> {}: {} sent, {} lost, longest gap {:?}",
        a.name,
        b.name,
        report.transmitted,
        report.transmitted - report.received,
        report.max_gap
    );
    ensure!(
        report.transmitted > 1000 && report.received == report.transmitted,
        "pods lost traffic while the control plane was away: {report:?}"
    );
    live_network_flows(c, "after the control-plane faults")
}
