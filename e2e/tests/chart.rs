//! The Helm chart, without a cluster: `helm lint --strict`, `helm template` with default and
//! overridden values, and what the rendered objects must (not) contain for a real install on
//! kubelet + containerd/runc nodes: no mount under /proc (runc refuses it), an agent that is not
//! privileged and has exactly its capabilities, operator replicas that can share a node (no
//! host ports, probes per replica), names from the release so two releases never collide, CRDs
//! that upgrade with the release and survive its uninstall, and a values schema that rejects
//! bad input with a message.
//!
//! Needs helm (`$CAUSEWAY_HELM` or the `make deps` cache); fails, never skips, without it.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail, ensure};
use causeway_e2e::helm;
use serde::Deserialize;
use serde_json::Value;

/// The rendered objects of `helm template <release> -n <namespace> <args>`.
fn render(release: &str, namespace: &str, args: &[&str]) -> Result<Vec<Value>> {
    let text = helm::template(release, namespace, args)?;
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc).context("helm rendered invalid YAML")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn defaults() -> Result<Vec<Value>> {
    render("causeway", "causeway-system", &[])
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> Result<&'a Value> {
    let found = of_kind(objects, kind);
    ensure!(found.len() == 1, "{} objects of kind {kind}", found.len());
    Ok(found[0])
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The only container of a workload's pod template.
fn container(workload: &Value) -> Result<&Value> {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .context("no containers")?;
    ensure!(containers.len() == 1, "{} containers", containers.len());
    Ok(&containers[0])
}

fn lint(args: &[&str]) -> Result<String> {
    let chart = helm::chart_dir().display().to_string();
    causeway_e2e::cmd::run(
        helm::command()?
            .args(["lint", "--strict", &chart])
            .args(["--kube-version", &helm::kube_version()?])
            .args(args),
    )
}

#[test]
fn lint_is_clean_with_default_values_and_with_overrides() -> Result<()> {
    let overrides: &[&[&str]] = &[
        &[],
        &["--set", "crds.install=false"],
        &["--set", "crds.keep=false"],
        &["--set", "operator.metrics.enabled=false"],
        &["--set", "operator.metrics.bindAddress=$(HOST_IP)"],
        &["--set", "operator.metrics.bindAddress=::1"],
        &[
            "--set",
            "operator.replicas=1",
            "--set",
            "operator.podDisruptionBudget.enabled=false",
        ],
        &[
            "--set",
            "nodeAgent.cniConfDir=/var/lib/rancher/k3s/agent/etc/cni/net.d",
        ],
        &[
            "--set",
            "image.registry=",
            "--set",
            "image.repository=localhost/causeway",
            "--set",
            "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ],
        &["--set", "imagePullSecrets[0].name=regcred"],
        &["--set", "fullnameOverride=cw"],
        &[
            "--set",
            "nodeAgent.metrics.enabled=true",
            "--set",
            "monitoring.serviceMonitor.enabled=true",
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--set",
            "monitoring.grafanaDashboard.enabled=true",
            "--set",
            "nodeAgent.logFormat=json",
            "--set",
            "operator.logFormat=json",
        ],
    ];
    for args in overrides {
        let out = lint(args).with_context(|| format!("helm lint --strict {args:?}"))?;
        ensure!(
            out.contains("0 chart(s) failed"),
            "helm lint {args:?}:\n{out}"
        );
    }
    Ok(())
}

#[test]
fn release_causeway_keeps_the_names_the_docs_and_the_harness_use() -> Result<()> {
    let objects = defaults()?;
    let accounts: BTreeSet<String> = of_kind(&objects, "ServiceAccount")
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    // ClientJoin clients get theirs from the operator, one each, in the clients' namespace.
    let want: BTreeSet<String> = ["causeway-operator", "causeway-node-agent"]
        .map(String::from)
        .into();
    ensure!(accounts == want, "service accounts {accounts:?}");
    let namespaces: Vec<&str> = of_kind(&objects, "Namespace")
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    ensure!(
        namespaces == [causeway_e2e::deploy::CLIENT_NAMESPACE],
        "namespaces {namespaces:?}"
    );
    let operator = one(&objects, "Deployment")?;
    ensure!(operator["metadata"]["name"] == "causeway-operator");
    let args = strings(&container(operator)?["args"]);
    for arg in [
        "--lease-name=causeway-operator".to_string(),
        format!(
            "--client-namespace={}",
            causeway_e2e::deploy::CLIENT_NAMESPACE
        ),
    ] {
        ensure!(args.contains(&arg), "{arg} not in {args:?}");
    }
    ensure!(one(&objects, "DaemonSet")?["metadata"]["name"] == "causeway-node-agent");
    Ok(())
}

#[test]
fn two_releases_in_different_namespaces_share_no_object_name() -> Result<()> {
    let a = render("a", "x", &[])?;
    // CRDs are the cluster's API, not a release's: one release installs them.
    let b = render("b", "y", &["--set", "crds.install=false"])?;
    let key = |o: &Value| {
        format!(
            "{}/{}/{}",
            o["kind"].as_str().unwrap_or_default(),
            o["metadata"]["namespace"].as_str().unwrap_or("<cluster>"),
            o["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    for (release, namespace, objects) in [("a", "x", &a), ("b", "y", &b)] {
        for o in objects.iter() {
            let cluster_scoped = matches!(
                o["kind"].as_str(),
                Some(
                    "Namespace"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "CustomResourceDefinition"
                        | "ValidatingAdmissionPolicy"
                        | "ValidatingAdmissionPolicyBinding"
                )
            );
            // The operator's rights on client accounts live with the accounts; the right to
            // read the API servers' endpoints lives with them, in `default`.
            let clients = format!("{namespace}-clients");
            let endpoints = o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-apiserver-endpoints"));
            if !cluster_scoped {
                ensure!(
                    o["metadata"]["namespace"] == namespace
                        || o["metadata"]["namespace"] == clients.as_str()
                        || (endpoints && o["metadata"]["namespace"] == "default"),
                    "{} of release {release} is not in namespace {namespace} or {clients}",
                    key(o)
                );
            }
            ensure!(
                o["metadata"]["labels"]["app.kubernetes.io/instance"] == release,
                "{} lacks the instance label {release}",
                key(o)
            );
        }
        // Node-restriction policies restrict their own release's accounts.
        let policies = of_kind(objects, "ValidatingAdmissionPolicy");
        ensure!(
            policies.len() == 2,
            "{} node-restriction policies",
            policies.len()
        );
        for policy in policies {
            let conditions = policy["spec"]["matchConditions"].to_string();
            ensure!(
                conditions.contains(&format!("system:serviceaccount:{namespace}:"))
                    || conditions.contains(&format!("system:serviceaccount:{namespace}-clients:")),
                "{}: {conditions}",
                key(policy)
            );
        }
        // Bindings point at their own release's accounts, or its clients' group.
        for binding in of_kind(objects, "ClusterRoleBinding") {
            for subject in binding["subjects"].as_array().into_iter().flatten() {
                ensure!(
                    subject["namespace"] == namespace
                        || subject["name"]
                            == format!("system:serviceaccounts:{namespace}-clients").as_str(),
                    "{}: subject {subject}",
                    key(binding)
                );
            }
        }
    }
    let names_a: BTreeSet<String> = a.iter().map(key).collect();
    let names_b: BTreeSet<String> = b.iter().map(key).collect();
    let shared: Vec<&String> = names_a.intersection(&names_b).collect();
    ensure!(shared.is_empty(), "both releases create {shared:?}");
    // Cluster-scoped names differ too (not only by namespace).
    let cluster_names = |objects: &[Value]| -> BTreeSet<String> {
        objects
            .iter()
            .filter(|o| o["metadata"]["namespace"].is_null())
            .map(key)
            .collect()
    };
    ensure!(
        cluster_names(&a).is_disjoint(&cluster_names(&b)),
        "cluster-scoped names collide"
    );
    let leases: Vec<String> = [&a, &b]
        .iter()
        .map(|objects| {
            one(objects, "Deployment")
                .and_then(container)
                .map(|c| strings(&c["args"]))
                .unwrap_or_default()
                .into_iter()
                .find(|a| a.starts_with("--lease-name="))
                .unwrap_or_default()
        })
        .collect();
    ensure!(
        leases
            == [
                "--lease-name=a-causeway-operator",
                "--lease-name=b-causeway-operator"
            ],
        "{leases:?}"
    );
    Ok(())
}

#[test]
fn the_agent_is_not_privileged_mounts_nothing_under_proc_and_has_only_its_capabilities()
-> Result<()> {
    let objects = defaults()?;
    let agent = one(&objects, "DaemonSet")?;
    let pod = &agent["spec"]["template"]["spec"];
    let c = container(agent)?;
    ensure!(pod["hostNetwork"] == true, "not host network");
    ensure!(pod["dnsPolicy"] == "ClusterFirstWithHostNet");
    ensure!(pod["priorityClassName"] == "system-node-critical");
    ensure!(
        pod["tolerations"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null())),
        "the agent does not tolerate every taint: {}",
        pod["tolerations"]
    );
    ensure!(
        agent["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1,
        "{}",
        agent["spec"]["updateStrategy"]
    );
    let sc = &c["securityContext"];
    ensure!(sc["privileged"] != true && pod["securityContext"]["privileged"].is_null());
    ensure!(sc["allowPrivilegeEscalation"] == false);
    ensure!(sc["readOnlyRootFilesystem"] == true);
    ensure!(sc["runAsUser"] == 0);
    ensure!(strings(&sc["capabilities"]["drop"]) == ["ALL"], "{sc}");
    ensure!(
        strings(&sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"],
        "{sc}"
    );
    ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");
    for mount in c["volumeMounts"].as_array().context("no mounts")? {
        let path = mount["mountPath"].as_str().unwrap_or_default();
        ensure!(
            path != "/proc" && !path.starts_with("/proc/"),
            "runc refuses a mount inside /proc: {mount}"
        );
    }
    let mount_of = |volume: &str| {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == volume)
            .and_then(|m| m["mountPath"].as_str())
            .map(str::to_string)
    };
    let host_path_of = |volume: &str| {
        pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == volume)
            .and_then(|v| v["hostPath"]["path"].as_str())
            .map(str::to_string)
    };
    ensure!(host_path_of("host-proc-sys-net").as_deref() == Some("/proc/sys/net"));
    ensure!(mount_of("host-proc-sys-net").as_deref() == Some("/host/proc/sys/net"));
    ensure!(host_path_of("bird-run").as_deref() == Some("/run/causeway/bird"));
    ensure!(mount_of("bird-run").as_deref() == Some("/run/causeway/bird"));
    ensure!(host_path_of("cni-conf").as_deref() == Some("/etc/cni/net.d"));
    ensure!(mount_of("cni-conf").as_deref() == Some("/etc/cni/net.d"));
    let args = strings(&c["args"]);
    for want in [
        "--sysctl-dir=/host/proc/sys",
        "--cni-conf-dir=/etc/cni/net.d",
        "--bird-dir=/run/causeway/bird",
        "--health-addr=127.0.0.1:9809",
    ] {
        ensure!(args.iter().any(|a| a == want), "{want} missing: {args:?}");
    }
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        ensure!(
            get["host"] == "127.0.0.1" && get["path"] == path && get["port"] == 9809,
            "{probe}: {}",
            c[probe]
        );
    }
    ensure!(
        c["ports"].is_null(),
        "the agent declares ports: {}",
        c["ports"]
    );

    // k3s: the host directory changes, the agent's view of it does not.
    let k3s = render(
        "causeway",
        "causeway-system",
        &[
            "--set",
            "nodeAgent.cniConfDir=/var/lib/rancher/k3s/agent/etc/cni/net.d",
            "--set",
            "nodeAgent.healthPort=19809",
        ],
    )?;
    let agent = one(&k3s, "DaemonSet")?;
    let volumes = &agent["spec"]["template"]["spec"]["volumes"];
    ensure!(
        volumes
            .to_string()
            .contains("/var/lib/rancher/k3s/agent/etc/cni/net.d"),
        "{volumes}"
    );
    let c = container(agent)?;
    ensure!(strings(&c["args"]).contains(&"--health-addr=127.0.0.1:19809".to_string()));
    ensure!(c["readinessProbe"]["httpGet"]["port"] == 19809);
    Ok(())
}

#[test]
fn operator_replicas_can_share_a_node_and_each_answers_its_own_probes() -> Result<()> {
    let objects = defaults()?;
    let operator = one(&objects, "Deployment")?;
    let pod = &operator["spec"]["template"]["spec"];
    let c = container(operator)?;
    ensure!(operator["spec"]["replicas"] == 2);
    ensure!(
        pod["hostNetwork"] == true,
        "the operator must run before pod networking"
    );
    ensure!(pod["priorityClassName"] == "system-cluster-critical");
    // On a host-network pod every containerPort becomes a hostPort: a second replica on the
    // node could not schedule.
    for c in pod["containers"].as_array().into_iter().flatten() {
        ensure!(
            c["ports"].is_null(),
            "{} declares ports: {}",
            c["name"],
            c["ports"]
        );
    }
    let anti = &pod["affinity"]["podAntiAffinity"];
    ensure!(
        anti["requiredDuringSchedulingIgnoredDuringExecution"].is_null(),
        "required anti-affinity keeps the second replica off a one-node cluster"
    );
    ensure!(
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"]
            == "kubernetes.io/hostname",
        "{anti}"
    );
    for (probe, check) in [("livenessProbe", "live"), ("readinessProbe", "ready")] {
        ensure!(
            strings(&c[probe]["exec"]["command"]) == ["causeway-operator", "probe", check],
            "{probe}: {}",
            c[probe]
        );
    }
    let args = strings(&c["args"]);
    ensure!(
        args.contains(&"--metrics-addr=127.0.0.1:8080".to_string()),
        "metrics must stay on the node's loopback by default: {args:?}"
    );
    ensure!(args.contains(&"--health-socket=/run/causeway/operator.sock".to_string()));
    ensure!(
        c["volumeMounts"].to_string().contains("\"/run/causeway\"")
            && pod["volumes"][0]["emptyDir"].is_object(),
        "the health socket is not in a per-pod emptyDir"
    );
    let sc = &c["securityContext"];
    ensure!(pod["securityContext"]["runAsNonRoot"] == true);
    ensure!(pod["securityContext"]["runAsUser"] == 65532);
    ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");
    ensure!(strings(&sc["capabilities"]["drop"]) == ["ALL"] && sc["capabilities"]["add"].is_null());
    ensure!(sc["readOnlyRootFilesystem"] == true && sc["allowPrivilegeEscalation"] == false);
    ensure!(
        of_kind(&objects, "Service").is_empty(),
        "a Service exposes metrics nobody asked to expose"
    );
    let pdb = one(&objects, "PodDisruptionBudget")?;
    ensure!(pdb["spec"]["maxUnavailable"] == 1, "{pdb}");
    ensure!(pdb["spec"]["selector"] == operator["spec"]["selector"]);

    let exposed = render(
        "causeway",
        "causeway-system",
        &["--set", "operator.metrics.bindAddress=$(HOST_IP)"],
    )?;
    let args = strings(&container(one(&exposed, "Deployment")?)?["args"]);
    ensure!(
        args.contains(&"--metrics-addr=$(HOST_IP):8080".to_string()),
        "{args:?}"
    );
    let ipv6 = render(
        "causeway",
        "causeway-system",
        &["--set", "operator.metrics.bindAddress=::1"],
    )?;
    let args = strings(&container(one(&ipv6, "Deployment")?)?["args"]);
    ensure!(
        args.contains(&"--metrics-addr=[::1]:8080".to_string()),
        "{args:?}"
    );
    let off = render(
        "causeway",
        "causeway-system",
        &["--set", "operator.metrics.enabled=false"],
    )?;
    let args = strings(&container(one(&off, "Deployment")?)?["args"]);
    ensure!(args.contains(&"--metrics-addr=".to_string()), "{args:?}");
    Ok(())
}

/// Numbers compared by value (the generator writes `maximum: 65535.0`, Helm renders `65535`).
fn normalise(v: &Value) -> Value {
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        other => other.clone(),
    }
}

#[test]
fn crds_are_templates_equal_to_the_generated_files_kept_on_uninstall_and_optional() -> Result<()> {
    let chart = helm::chart_dir();
    ensure!(
        !chart.join("crds").exists(),
        "charts/causeway/crds/ exists: Helm would install those CRDs once and never upgrade them, \
         and see them twice beside templates/crds.yaml"
    );
    let dir = chart.join("files/crds");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path)?;
            files.push(serde_yaml::from_str::<Value>(&text)?);
        }
    }
    ensure!(
        files.len() == 3,
        "{} CRD files in {}",
        files.len(),
        dir.display()
    );
    let objects = defaults()?;
    let rendered = of_kind(&objects, "CustomResourceDefinition");
    ensure!(
        rendered.len() == files.len(),
        "{} CRDs rendered",
        rendered.len()
    );
    for file in &files {
        let name = &file["metadata"]["name"];
        let Some(crd) = rendered.iter().find(|c| &c["metadata"]["name"] == name) else {
            bail!("{name} is not rendered");
        };
        ensure!(
            normalise(&crd["spec"]) == normalise(&file["spec"]),
            "{name}: the rendered spec differs from the generated file"
        );
        ensure!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep",
            "{name} would be deleted by helm uninstall, and every network with it"
        );
        ensure!(crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm");
    }
    let off = render(
        "causeway",
        "causeway-system",
        &["--set", "crds.install=false"],
    )?;
    ensure!(of_kind(&off, "CustomResourceDefinition").is_empty());
    let unkept = render("causeway", "causeway-system", &["--set", "crds.keep=false"])?;
    for crd in of_kind(&unkept, "CustomResourceDefinition") {
        ensure!(
            crd["metadata"]["annotations"].is_null(),
            "{}",
            crd["metadata"]
        );
    }
    Ok(())
}

#[test]
fn the_image_follows_registry_repository_tag_and_digest() -> Result<()> {
    let image = |args: &[&str]| -> Result<String> {
        let objects = render("causeway", "causeway-system", args)?;
        let agent = container(one(&objects, "DaemonSet")?)?["image"].clone();
        let operator = container(one(&objects, "Deployment")?)?["image"].clone();
        ensure!(agent == operator, "{agent} != {operator}");
        Ok(agent.as_str().unwrap_or_default().to_string())
    };
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cases: &[(&[&str], String)] = &[
        (&[], "ghcr.io/causeway-dev/causeway:0.1.0".into()),
        (
            &["--set", "image.tag=0.2.0-rc.1"],
            "ghcr.io/causeway-dev/causeway:0.2.0-rc.1".into(),
        ),
        (
            &["--set", "image.registry=registry.example:5000"],
            "registry.example:5000/causeway-dev/causeway:0.1.0".into(),
        ),
        (
            &[
                "--set",
                "image.tag=0.2.0",
                "--set",
                &format!("image.digest={digest}"),
            ],
            format!("ghcr.io/causeway-dev/causeway@{digest}"),
        ),
        (
            &[
                "--set",
                "image.registry=",
                "--set",
                "image.repository=localhost/cw",
            ],
            "localhost/cw:0.1.0".into(),
        ),
    ];
    for (args, want) in cases {
        ensure!(&image(args)? == want, "{args:?}");
    }
    Ok(())
}

#[test]
fn the_values_schema_rejects_bad_values_with_a_message() -> Result<()> {
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "operator.replicas=two"], "/operator/replicas"),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "/image/pullPolicy",
        ),
        (&["--set", "image.digest=latest"], "/image/digest"),
        (
            &["--set", "nodeAgent.healthPort=80"],
            "/nodeAgent/healthPort",
        ),
        (
            &["--set", "nodeAgent.cniConfDir=etc/cni"],
            "/nodeAgent/cniConfDir",
        ),
        (&["--set", "nodeAgent.typo=1"], "typo"),
        (&["--set", "crds.install=maybe"], "/crds/install"),
        // Two agents cannot share a node's host network and BIRD directory.
        (
            &["--set", "nodeAgent.updateStrategy.rollingUpdate.maxSurge=1"],
            "/nodeAgent/updateStrategy/rollingUpdate/maxSurge",
        ),
    ];
    for (args, path) in cases {
        let Err(e) = helm::template("causeway", "causeway-system", args) else {
            bail!("helm accepted {args:?}");
        };
        let message = format!("{e:#}");
        ensure!(
            message.contains("values don't meet the specifications of the schema")
                && message.contains(path),
            "{args:?}: the error does not name {path}:\n{message}"
        );
    }
    // What a schema cannot say: the template refuses a grace that is not below the duration.
    let Err(e) = helm::template(
        "causeway",
        "causeway-system",
        &["--set", "operator.leaderElection.renewGraceSeconds=15"],
    ) else {
        bail!("helm accepted a renew grace equal to the lease duration");
    };
    ensure!(
        format!("{e:#}")
            .contains("renewGraceSeconds (15) must be less than leaseDurationSeconds (15)"),
        "{e:#}"
    );
    Ok(())
}

/// Copies the chart into a fresh temporary directory (files only, one level of nesting is
/// enough for this chart's layout).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[test]
fn notes_say_how_to_check_the_install() -> Result<()> {
    // NOTES.txt is printed only by install and upgrade, which need a cluster; it is the named
    // template causeway.notes, rendered here through a probe template in a copy of the chart.
    let copy = std::env::temp_dir().join(format!("causeway-chart-notes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&helm::chart_dir(), &copy)?;
    std::fs::write(
        copy.join("templates/notes-check.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ include \"causeway.notes\" . | quote }}\n",
    )?;
    let out = causeway_e2e::cmd::run(
        helm::command()?
            .args(["template", "causeway"])
            .arg(&copy)
            .args([
                "--namespace",
                "causeway-system",
                "--kube-version",
                &helm::kube_version()?,
            ])
            .args(["--show-only", "templates/notes-check.yaml"]),
    );
    std::fs::remove_dir_all(&copy).ok();
    let rendered: Value = serde_yaml::from_str(&out?)?;
    let notes = rendered["data"]["notes"].as_str().unwrap_or_default();
    for want in [
        "kubectl get podnetworks",
        "kubectl -n causeway-system get pods",
        "podnetwork-overlay.yaml",
        "port-forward",
        "lease causeway-operator",
    ] {
        ensure!(notes.contains(want), "NOTES lack {want:?}:\n{notes}");
    }
    Ok(())
}

/// Every monitoring value at once, the operator's /metrics on the node address too.
const MONITORING: &[&str] = &[
    "--set",
    "nodeAgent.metrics.enabled=true",
    "--set",
    "operator.metrics.bindAddress=$(HOST_IP)",
    "--set",
    "monitoring.serviceMonitor.enabled=true",
    "--set",
    "monitoring.serviceMonitor.labels.release=kube-prometheus-stack",
    "--set",
    "monitoring.prometheusRule.enabled=true",
    "--set",
    "monitoring.grafanaDashboard.enabled=true",
];

#[test]
fn monitoring_objects_render_only_when_enabled_and_scrape_with_the_alerts_job_labels() -> Result<()>
{
    let plain = defaults()?;
    for kind in ["ServiceMonitor", "PrometheusRule", "Service"] {
        ensure!(
            of_kind(&plain, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    let agent = container(one(&plain, "DaemonSet")?)?;
    ensure!(
        !strings(&agent["args"])
            .iter()
            .any(|a| a.starts_with("--metrics-addr")),
        "the agent serves metrics on a node address by default: {:?}",
        agent["args"]
    );

    let objects = render("causeway", "causeway-system", MONITORING)?;
    let agent = container(one(&objects, "DaemonSet")?)?;
    ensure!(
        strings(&agent["args"]).contains(&"--metrics-addr=$(HOST_IP):9810".to_string()),
        "{:?}",
        agent["args"]
    );
    ensure!(
        agent["env"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["name"] == "HOST_IP"
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"),
        "no HOST_IP for $(HOST_IP): {:?}",
        agent["env"]
    );
    let monitors = of_kind(&objects, "ServiceMonitor");
    ensure!(monitors.len() == 2, "{} ServiceMonitors", monitors.len());
    for (monitor, job) in monitors
        .iter()
        .zip(["causeway-node-agent", "causeway-operator"])
    {
        ensure!(
            monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack",
            "the selector label is missing: {monitor}"
        );
        let endpoint = &monitor["spec"]["endpoints"][0];
        ensure!(
            endpoint["port"] == "metrics" && endpoint["path"] == "/metrics",
            "{endpoint}"
        );
        ensure!(
            endpoint["relabelings"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["targetLabel"] == "job" && r["replacement"] == job),
            "the alerts select job={job}: {endpoint}"
        );
    }
    let services = of_kind(&objects, "Service");
    ensure!(services.len() == 2, "{} Services", services.len());
    ensure!(
        services[0]["spec"]["ports"][0]["port"] == 9810
            && services[0]["spec"]["clusterIP"] == "None",
        "{}",
        services[0]
    );
    let rule = one(&objects, "PrometheusRule")?;
    ensure!(
        rule["spec"]["groups"][0]["rules"]
            .as_array()
            .map_or(0, Vec::len)
            == 7,
        "{rule}"
    );
    let dashboard = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .context("no dashboard ConfigMap")?;
    let json: Value = serde_json::from_str(
        dashboard["data"]["causeway.json"]
            .as_str()
            .context("no causeway.json")?,
    )
    .context("the dashboard is not JSON")?;
    ensure!(json["uid"] == "causeway", "{}", json["uid"]);

    // Scraped from a loopback-only operator would only ever read down: no ServiceMonitor.
    let objects = render(
        "causeway",
        "causeway-system",
        &[
            "--set",
            "nodeAgent.metrics.enabled=true",
            "--set",
            "monitoring.serviceMonitor.enabled=true",
        ],
    )?;
    ensure!(
        of_kind(&objects, "ServiceMonitor").len() == 1,
        "an operator ServiceMonitor on loopback"
    );

    let err = helm::template(
        "causeway",
        "causeway-system",
        &["--set", "monitoring.serviceMonitor.enabled=true"],
    )
    .expect_err("a ServiceMonitor without agent metrics");
    ensure!(
        format!("{err:#}").contains("needs nodeAgent.metrics.enabled=true"),
        "{err:#}"
    );
    Ok(())
}

/// The alert rules as the chart ships them pass `promtool check rules`, and their unit tests
/// (`e2e/testdata/prometheus-rules.test.yaml`: each alert fires on what should trigger it,
/// with its annotations filled in, and not on the healthy series beside them) pass.
#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() -> Result<()> {
    let promtool = causeway_e2e::prometheus::promtool()?;
    let objects = render("causeway", "causeway-system", MONITORING)?;
    let rule = one(&objects, "PrometheusRule")?;
    let dir = std::env::temp_dir().join(format!("causeway-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rendered = dir.join("rules.yaml");
    std::fs::write(&rendered, serde_yaml::to_string(&rule["spec"])?)?;
    let checked = causeway_e2e::cmd::run(
        std::process::Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&rendered),
    );
    std::fs::remove_dir_all(&dir).ok();
    let checked = checked?;
    ensure!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tests = causeway_e2e::controlplane::workspace_root().join("e2e/testdata");
    let out = causeway_e2e::cmd::run(
        std::process::Command::new(&promtool)
            .args(["test", "rules", "prometheus-rules.test.yaml"])
            .current_dir(&tests),
    )?;
    ensure!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

/// Metric names in PromQL text: every `causeway_...` word, without a sample suffix.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("causeway_") {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        names.insert(base);
    }
    names
}

/// What the alerts and the dashboard query exists: a renamed metric fails here, not silently
/// in someone's Prometheus.
#[test]
fn every_metric_passes_promtool_and_every_one_the_alerts_and_the_dashboard_query_exists()
-> Result<()> {
    // Families without a series are not exposed: give each labelled family one.
    let agent = causeway_node_agent::metrics::Metrics::new("test");
    agent.pass(
        causeway_node_agent::metrics::PassKind::Full,
        std::time::Duration::from_millis(1),
        Some("ApplyFailed"),
    );
    agent.applied(&[causeway_node_agent::model::Op::DeleteNat], Some(0));
    agent.applied(&[causeway_node_agent::model::Op::DeleteNat], None);
    agent.bgp_sessions(["Established"]);
    agent.vip("gateway", true);
    let operator = causeway_operator::metrics::Metrics::new("test");
    operator.subnets("network", 1, 1);
    // Prometheus's own linter on both, in the classic text format it reads.
    let promtool = causeway_e2e::prometheus::promtool()?;
    for text in [agent.encode(), operator.encode()] {
        let lint = causeway_e2e::cmd::run_stdin(
            std::process::Command::new(&promtool).args(["check", "metrics"]),
            causeway_e2e::prometheus::classic_text(&text).as_bytes(),
        )
        .with_context(|| format!("promtool check metrics of:\n{text}"))?;
        ensure!(lint.trim().is_empty(), "{lint}");
    }
    let exposed: String = [agent.encode(), operator.encode()].concat();
    let families: BTreeSet<String> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let chart = helm::chart_dir();
    let mut queried = BTreeSet::new();
    let rules = std::fs::read_to_string(chart.join("files/prometheus-rules.yaml"))?;
    let rules: Value = serde_yaml::from_str(&rules)?;
    for rule in rules["groups"][0]["rules"].as_array().context("no rules")? {
        queried.extend(metric_names(rule["expr"].as_str().context("no expr")?));
    }
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        chart.join("files/grafana-dashboard.json"),
    )?)?;
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().context("no panels")? {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queried.extend(metric_names(target["expr"].as_str().context("no expr")?));
            exprs += 1;
        }
    }
    ensure!(
        exprs > 20 && queried.len() > 12,
        "{exprs} queries of {queried:?}"
    );
    let missing: Vec<&String> = queried.iter().filter(|m| !families.contains(*m)).collect();
    ensure!(
        missing.is_empty(),
        "queried but not exposed: {missing:?}\nexposed: {families:?}"
    );
    Ok(())
}
