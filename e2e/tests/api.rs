//! The Causeway API on a real kube-apiserver (issue #2): the generated CRDs install, every
//! example applies, `kubectl explain` teaches the fields, printer columns and the `causeway`
//! category work, and the admission table (`crds/testdata/admission-cases.yaml`) is enforced
//! case by case with the intended messages.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Once;

use anyhow::{Context, Result, bail, ensure};
use causeway_e2e::controlplane::workspace_root;
use causeway_e2e::topology::presets;
use causeway_e2e::{Cluster, demo, testing};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Table {
    cases: Vec<Case>,
    updates: Vec<Case>,
}

#[derive(Deserialize, Clone)]
struct Case {
    name: String,
    expect: Expect,
    #[serde(default)]
    message: Option<String>,
    object: Value,
    #[serde(default)]
    patch: Option<Value>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
enum Expect {
    Accepted,
    Rejected,
}

fn table() -> Result<Table> {
    let path = workspace_root().join("crds/testdata/admission-cases.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn main() -> ExitCode {
    let mut tests = vec![
        testing::test(
            "every_generated_crd_installs_and_is_established",
            crds_install,
        ),
        testing::test(
            "every_example_in_docs_applies_and_lists_under_the_causeway_category",
            examples_apply,
        ),
        testing::test("printer_columns_answer_the_first_question", printer_columns),
        testing::test(
            "kubectl_explain_shows_the_field_docs_from_the_rust_types",
            explain,
        ),
        testing::test(
            "status_conditions_drive_kubectl_wait_and_are_written_only_through_the_status_subresource",
            status_and_wait,
        ),
    ];
    let table = match table() {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("{e:#}");
            tests.push(testing::test("the_admission_table_loads", move |_| {
                bail!(msg)
            }));
            return testing::run_suite("api", presets_api, tests);
        }
    };
    let rejected = table
        .cases
        .iter()
        .filter(|c| c.expect == Expect::Rejected)
        .count();
    tests.push(testing::test(
        "the_admission_table_has_at_least_15_bad_objects",
        move |_| {
            ensure!(rejected >= 15, "only {rejected} rejected cases");
            Ok(())
        },
    ));
    for case in table.cases {
        tests.push(testing::test(
            format!("admission: {}", case.name),
            move |c| create_case(c, &case),
        ));
    }
    for case in table.updates {
        tests.push(testing::test(format!("update: {}", case.name), move |c| {
            update_case(c, &case)
        }));
    }
    testing::run_suite("api", presets_api, tests)
}

/// Two nodes are enough: this suite is about the API, not traffic.
fn presets_api() -> causeway_e2e::Topology {
    presets::one_segment(2)
}

static INSTALL: Once = Once::new();

/// Installs the CRDs once per suite (every test can run alone with a filter).
fn ensure_crds(c: &Cluster) -> Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| result = demo::install_crds(c).map(|_| ()));
    result
}

fn crds_install(c: &Cluster) -> Result<()> {
    let installed = demo::install_crds(c)?;
    let mut want: Vec<String> =
        std::fs::read_dir(workspace_root().join("charts/causeway/files/crds"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".yaml")
                    .map(|n| format!("customresourcedefinition.apiextensions.k8s.io/{n}"))
            })
            .collect();
    want.sort();
    let mut got = installed.clone();
    got.sort();
    ensure!(got == want, "installed {got:?}, chart has {want:?}");
    ensure!(
        want.len() == 3,
        "expected the three Causeway CRDs, chart has {want:?}"
    );
    for crd in &installed {
        let names = c.kubectl(&[
            "get",
            crd,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="NamesAccepted")].status}"#,
        ])?;
        ensure!(names == "True", "{crd}: NamesAccepted={names}");
    }
    Ok(())
}

fn example_files() -> Result<Vec<PathBuf>> {
    let dir = workspace_root().join("docs/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

fn examples_apply(c: &Cluster) -> Result<()> {
    ensure_crds(c)?;
    let files = example_files()?;
    ensure!(
        files.len() >= 7,
        "expected an example per mode and per strategy, found {files:?}"
    );
    let mut applied = Vec::new();
    for f in &files {
        let path = f.display().to_string();
        let out = c
            .kubectl(&["apply", "-f", &path])
            .with_context(|| format!("applying {path}"))?;
        for line in out.lines() {
            applied.extend(line.split_whitespace().next().map(str::to_string));
        }
    }
    // `kubectl get causeway` lists all three kinds through the category.
    let listed = c.kubectl(&["get", "causeway", "-o", "name"])?;
    for obj in &applied {
        let short = obj.replace(".causeway.dev", "");
        ensure!(
            listed
                .lines()
                .any(|l| l == obj || l.replace(".causeway.dev", "") == short),
            "{obj} not listed by `kubectl get causeway`:\n{listed}"
        );
    }
    // The NodeSubnet example is for reference only (never applied with the directory).
    let reference = workspace_root().join("docs/examples/reference/nodesubnet.yaml");
    let out = c.kubectl(&["apply", "-f", &reference.display().to_string()])?;
    ensure!(out.contains("nodesubnet"), "{out}");
    let listed = c.kubectl(&["get", "causeway", "-o", "name"])?;
    c.kubectl(&[
        "delete",
        "--wait=false",
        "-f",
        &reference.display().to_string(),
    ])?;
    for kind in ["podnetwork", "nodesubnet", "overlaygateway"] {
        ensure!(
            listed.contains(kind),
            "`kubectl get causeway` lists no {kind}:\n{listed}"
        );
    }
    // Short names resolve.
    for short in ["pn", "nsub", "ogw"] {
        c.kubectl(&["get", short])
            .with_context(|| format!("short name {short}"))?;
    }
    for f in files.iter().rev() {
        c.kubectl(&["delete", "--wait=false", "-f", &f.display().to_string()])?;
    }
    Ok(())
}

fn printer_columns(c: &Cluster) -> Result<()> {
    ensure_crds(c)?;
    let example = workspace_root().join("docs/examples/podnetwork-overlay.yaml");
    c.kubectl(&["apply", "-f", &example.display().to_string()])?;
    let header = |kind: &str| -> Result<String> {
        let out = c.kubectl(&["get", kind])?;
        Ok(out.lines().next().unwrap_or_default().to_string())
    };
    let checks = [
        (
            "podnetworks",
            &[
                "NAME",
                "MODE",
                "CIDR",
                "NODES",
                "PROGRAMMED",
                "READY",
                "REASON",
                "AGE",
            ][..],
        ),
        (
            "nodesubnets",
            &["NAME", "NODE", "CIDR", "ADDRESS", "PROGRAMMED", "AGE"][..],
        ),
        (
            "overlaygateways",
            &["NAME", "STRATEGY", "ACTIVE", "READY", "REASON", "AGE"][..],
        ),
    ];
    // No defaulted field that does not apply shows up in `kubectl describe`: a RouteToNodes
    // gateway stores no `snat` (BridgeHosts only).
    let route_to_nodes = workspace_root().join("docs/examples/overlaygateway-route-to-nodes.yaml");
    c.kubectl(&["apply", "-f", &route_to_nodes.display().to_string()])?;
    let stored: Value = serde_json::from_str(&c.kubectl(&[
        "get",
        "-f",
        &route_to_nodes.display().to_string(),
        "-o",
        "json",
    ])?)?;
    ensure!(
        stored["spec"].get("snat").is_none(),
        "a RouteToNodes gateway stores snat: {}",
        stored["spec"]
    );
    let described = c.kubectl(&["describe", "-f", &route_to_nodes.display().to_string()])?;
    ensure!(
        !described.contains("Snat"),
        "kubectl describe shows Snat:\n{described}"
    );
    // `-o wide` adds what an operator on call looks for next.
    let wide = [
        ("podnetworks", &["SECONDARY", "FREE", "FREE2", "MTU"][..]),
        (
            "nodesubnets",
            &["NETWORK", "SECONDARY", "REASON", "ROUTES"][..],
        ),
        ("overlaygateways", &["VIP", "JOINED", "REASON"][..]),
    ];
    for (kind, columns) in checks {
        // An empty list prints no header; make sure one object of each kind exists.
        if kind != "podnetworks" {
            let file = if kind == "nodesubnets" {
                "reference/nodesubnet.yaml"
            } else {
                "overlaygateway-route-to-nodes.yaml"
            };
            c.kubectl(&[
                "apply",
                "-f",
                &workspace_root()
                    .join("docs/examples")
                    .join(file)
                    .display()
                    .to_string(),
            ])?;
        }
        let h = header(kind)?;
        for col in columns {
            ensure!(
                h.split_whitespace().any(|w| w == *col),
                "`kubectl get {kind}` header {h:?} lacks {col}"
            );
        }
    }
    for (kind, columns) in wide {
        let out = c.kubectl(&["get", kind, "-o", "wide"])?;
        let h = out.lines().next().unwrap_or_default();
        for col in columns {
            ensure!(
                h.split_whitespace().any(|w| w == *col),
                "`kubectl get {kind} -o wide` header {h:?} lacks {col}"
            );
        }
    }
    // The values come from the object: MODE and CIDR of the example.
    let spec: Value = serde_yaml::from_str(&std::fs::read_to_string(&example)?)?;
    let name = spec["metadata"]["name"]
        .as_str()
        .context("example without name")?;
    let row = c.kubectl(&["get", "podnetwork", name, "--no-headers"])?;
    for field in ["mode", "cidr"] {
        let v = spec["spec"][field].as_str().context("example field")?;
        ensure!(
            row.split_whitespace().any(|w| w == v),
            "row {row:?} lacks {field}={v}"
        );
    }
    c.kubectl(&["delete", "causeway", "--all", "--wait=false"])?;
    Ok(())
}

/// The description the types put in the CRD schema for `path` (e.g. spec.overlay.vni).
fn schema_description(crd_file: &str, path: &[&str]) -> Result<String> {
    let text = std::fs::read_to_string(
        workspace_root()
            .join("charts/causeway/files/crds")
            .join(crd_file),
    )?;
    let crd: Value = serde_yaml::from_str(&text)?;
    let mut node = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    for p in path {
        node = &node["properties"][p];
    }
    node["description"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{crd_file}: no description at {}", path.join(".")))
}

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn explain(c: &Cluster) -> Result<()> {
    ensure_crds(c)?;
    let cases = [
        (
            "podnetwork.spec.overlay",
            "podnetworks.causeway.dev.yaml",
            &["spec", "overlay", "vni"][..],
            "vni",
        ),
        (
            "podnetwork.spec",
            "podnetworks.causeway.dev.yaml",
            &["spec", "nodeSubnetPrefixLength"][..],
            "nodeSubnetPrefixLength",
        ),
        (
            "nodesubnet.spec",
            "nodesubnets.causeway.dev.yaml",
            &["spec", "nodeAddress"][..],
            "nodeAddress",
        ),
        (
            "overlaygateway.spec",
            "overlaygateways.causeway.dev.yaml",
            &["spec", "strategy"][..],
            "strategy",
        ),
    ];
    for (target, file, path, field) in cases {
        let out = traffic_wait(|| c.kubectl(&["explain", target]))?;
        ensure!(
            out.contains(field),
            "`kubectl explain {target}` does not list {field}:\n{out}"
        );
        let desc = schema_description(file, path)?;
        // kubectl wraps text; compare the first sentence word by word.
        let first: String = words(desc.split(". ").next().unwrap_or(&desc));
        let first: String = first.split(' ').take(8).collect::<Vec<_>>().join(" ");
        ensure!(
            words(&out).contains(&first),
            "`kubectl explain {target}` lacks the doc of {field} ({first:?}):\n{out}"
        );
    }
    Ok(())
}

/// `kubectl explain` reads the OpenAPI document, which trails CRD installation by a moment.
fn traffic_wait(f: impl FnMut() -> Result<String>) -> Result<String> {
    causeway_e2e::traffic::wait_for("kubectl explain", std::time::Duration::from_secs(30), f)
}

fn kind_and_name(obj: &Value) -> Result<(String, String)> {
    Ok((
        obj["kind"]
            .as_str()
            .context("object without kind")?
            .to_lowercase(),
        obj["metadata"]["name"]
            .as_str()
            .context("object without name")?
            .to_string(),
    ))
}

fn check_outcome(case: &Case, result: Result<String>) -> Result<()> {
    match (case.expect, result) {
        (Expect::Accepted, Ok(_)) => Ok(()),
        (Expect::Accepted, Err(e)) => bail!("expected acceptance, the API server said: {e:#}"),
        (Expect::Rejected, Ok(out)) => {
            bail!("expected rejection, the API server accepted it: {out}")
        }
        (Expect::Rejected, Err(e)) => {
            let msg = case
                .message
                .as_deref()
                .context("Rejected case without a message")?;
            let err = words(&format!("{e:#}"));
            ensure!(
                err.contains(&words(msg)),
                "rejected, but without {msg:?}: {err}"
            );
            Ok(())
        }
    }
}

fn create_case(c: &Cluster, case: &Case) -> Result<()> {
    ensure_crds(c)?;
    let (kind, name) = kind_and_name(&case.object)?;
    let result = c.kubectl_stdin(
        &["create", "-f", "-"],
        &serde_json::to_string(&case.object)?,
    );
    let outcome = check_outcome(case, result);
    c.kubectl(&["delete", &kind, &name, "--ignore-not-found", "--wait=false"])?;
    outcome
}

fn update_case(c: &Cluster, case: &Case) -> Result<()> {
    ensure_crds(c)?;
    let (kind, name) = kind_and_name(&case.object)?;
    let patch = case.patch.as_ref().context("update case without a patch")?;
    c.kubectl_stdin(&["apply", "-f", "-"], &serde_json::to_string(&case.object)?)
        .context("creating the original object")?;
    let result = c.kubectl_stdin(&["apply", "-f", "-"], &serde_json::to_string(patch)?);
    let outcome = check_outcome(case, result);
    c.kubectl(&["delete", &kind, &name, "--ignore-not-found", "--wait=false"])?;
    outcome
}

fn status_and_wait(c: &Cluster) -> Result<()> {
    ensure_crds(c)?;
    let example = workspace_root().join("docs/examples/podnetwork-overlay.yaml");
    c.kubectl(&["apply", "-f", &example.display().to_string()])?;
    let spec: Value = serde_yaml::from_str(&std::fs::read_to_string(&example)?)?;
    let name = spec["metadata"]["name"]
        .as_str()
        .context("example without name")?;
    let obj = format!("podnetwork/{name}");
    // No status yet: waiting for Ready times out.
    ensure!(
        c.kubectl(&["wait", "--for=condition=Ready", "--timeout=2s", &obj])
            .is_err(),
        "kubectl wait succeeded without any status"
    );
    // Writing status through the main resource is ignored (status is a subresource).
    c.kubectl(&[
        "patch",
        &obj,
        "--type=merge",
        "-p",
        r#"{"status":{"selectedNodes":9}}"#,
    ])?;
    let ignored = c.kubectl(&["get", &obj, "-o", "jsonpath={.status.selectedNodes}"])?;
    ensure!(
        ignored.is_empty(),
        "status written through the main resource: {ignored}"
    );
    // What the operator will write: a Ready condition with observedGeneration and counts.
    let now = "2026-01-01T00:00:00Z";
    let status = serde_json::json!({"status": {
        "observedGeneration": 1, "selectedNodes": 3, "allocatedNodes": 3, "programmedNodes": 3,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllNodesProgrammed",
            "message": "3 of 3 nodes programmed", "lastTransitionTime": now, "observedGeneration": 1}]}});
    c.kubectl(&[
        "patch",
        &obj,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])?;
    c.kubectl(&["wait", "--for=condition=Ready", "--timeout=10s", &obj])?;
    let row = words(&c.kubectl(&["get", &obj, "--no-headers"])?);
    ensure!(
        row.contains("3 3 True AllNodesProgrammed"),
        "printer columns do not show NODES/PROGRAMMED/READY/REASON: {row}"
    );
    // Conditions are validated like metav1.Condition: a reason must be a CamelCase word.
    let bad = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False",
        "reason": "not programmed", "message": "", "lastTransitionTime": now}]}});
    let err = c
        .kubectl(&[
            "patch",
            &obj,
            "--subresource=status",
            "--type=merge",
            "-p",
            &bad.to_string(),
        ])
        .err()
        .context("a condition reason with a space was accepted")?;
    ensure!(
        format!("{err:#}").contains("reason"),
        "unexpected error: {err:#}"
    );
    c.kubectl(&["delete", &obj, "--wait=false"])?;
    Ok(())
}
