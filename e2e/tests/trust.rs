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
use causeway_e2e::suite::{OVERLAY_NETWORK as NETWORK, Suite};
use causeway_e2e::topology::presets;
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
    let client = deploy::gateway_client_kubeconfig(c)?;
    let rule = "a ClientJoin client may write only its own heartbeat";
    let heartbeat = "gateway-client-heartbeat";
    run_cases(
        c,
        "a gateway client",
        &client,
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
                    r#"{"spec":{"holderIdentity":"join/laptop"}}"#,
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
                "a client Lease whose name is not its holder's",
                lease("causeway-client-join.laptop", "join/desktop", heartbeat),
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
                "its own heartbeat",
                lease("causeway-client-join.laptop", "join/laptop", heartbeat),
                None,
            ),
        ],
    )
}
