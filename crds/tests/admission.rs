//! Runs `crds/testdata/admission-cases.yaml` and the `docs/examples` through a local
//! stand-in for the API server's admission (schema checks + CEL rules via kube-cel; see
//! `support`), and checks that the table itself keeps its documented shape. The e2e harness
//! runs the same table against a real kube-apiserver.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use causeway_crds::{NodeSubnet, OverlayGateway, PodNetwork};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Table {
    cases: Vec<Case>,
    updates: Vec<Update>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accepted,
    Rejected,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    expect: Expect,
    #[serde(default)]
    message: Option<String>,
    object: Value,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Update {
    name: String,
    expect: Expect,
    #[serde(default)]
    message: Option<String>,
    object: Value,
    patch: Value,
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn table() -> Table {
    let path = repo_path("testdata/admission-cases.yaml");
    let text = std::fs::read_to_string(&path).expect("read admission-cases.yaml");
    serde_yaml::from_str(&text).expect("admission-cases.yaml has the documented shape")
}

/// The verdict as a sentence for failure reports, or `None` when it matches the expectation.
fn mismatch(expect: Expect, message: Option<&str>, got: Result<(), Vec<String>>) -> Option<String> {
    match (expect, got) {
        (Expect::Accepted, Ok(())) => None,
        (Expect::Accepted, Err(errors)) => Some(format!("expected Accepted, got {errors:?}")),
        (Expect::Rejected, Ok(())) => Some("expected Rejected, was accepted".into()),
        (Expect::Rejected, Err(errors)) => {
            let want = message.unwrap_or_default();
            (!errors.iter().any(|e| e.contains(want)))
                .then(|| format!("expected an error containing {want:?}, got {errors:?}"))
        }
    }
}

fn deserialises_into_its_type(object: &Value) -> Result<(), String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let result = match kind {
        "PodNetwork" => serde_json::from_value::<PodNetwork>(object.clone()).map(drop),
        "NodeSubnet" => serde_json::from_value::<NodeSubnet>(object.clone()).map(drop),
        "OverlayGateway" => serde_json::from_value::<OverlayGateway>(object.clone()).map(drop),
        other => return Err(format!("unknown kind {other:?}")),
    };
    result.map_err(|e| format!("does not deserialise into {kind}: {e}"))
}

#[test]
fn admission_table_has_paired_cases_unique_names_and_full_objects() {
    let table = table();
    let rejected = table
        .cases
        .iter()
        .filter(|c| c.expect == Expect::Rejected)
        .count();
    assert!(rejected >= 18, "only {rejected} Rejected cases");
    let mut case_names = BTreeSet::new();
    let mut object_names = BTreeSet::new();
    for (i, case) in table.cases.iter().enumerate() {
        assert!(
            case_names.insert(&case.name),
            "duplicate case name {:?}",
            case.name
        );
        let object = &case.object;
        assert_eq!(
            object["apiVersion"], "causeway.dev/v1alpha1",
            "{}",
            case.name
        );
        assert!(object["kind"].is_string(), "{}: no kind", case.name);
        let name = object["metadata"]["name"]
            .as_str()
            .expect("object has a name");
        assert!(
            object_names.insert(name.to_owned()),
            "object name {name} reused"
        );
        match case.expect {
            Expect::Rejected => {
                assert!(
                    case.message.as_deref().is_some_and(|m| !m.is_empty()),
                    "{}: no message",
                    case.name
                );
                let next = table.cases.get(i + 1).map(|c| c.expect);
                assert_eq!(
                    next,
                    Some(Expect::Accepted),
                    "{}: no Accepted counterpart next to it",
                    case.name
                );
            }
            Expect::Accepted => assert!(
                case.message.is_none(),
                "{}: Accepted with a message",
                case.name
            ),
        }
    }
    assert!(!table.updates.is_empty());
    for update in &table.updates {
        assert!(
            case_names.insert(&update.name),
            "duplicate case name {:?}",
            update.name
        );
        assert_eq!(
            update.object["metadata"], update.patch["metadata"],
            "{}",
            update.name
        );
        assert_eq!(
            update.object["kind"], update.patch["kind"],
            "{}",
            update.name
        );
        assert_eq!(
            update.message.is_some(),
            update.expect == Expect::Rejected,
            "{}",
            update.name
        );
    }
}

#[test]
fn every_create_case_gets_its_expected_verdict_from_local_admission() {
    let failures: Vec<String> = table()
        .cases
        .iter()
        .filter_map(|case| {
            mismatch(
                case.expect,
                case.message.as_deref(),
                support::admit(&case.object, None),
            )
            .map(|why| format!("{}: {why}", case.name))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_update_case_gets_its_expected_verdict_from_local_admission() {
    let failures: Vec<String> = table()
        .updates
        .iter()
        .filter_map(|update| {
            if let Err(errors) = support::admit(&update.object, None) {
                return Some(format!(
                    "{}: the original object is rejected: {errors:?}",
                    update.name
                ));
            }
            let got = support::admit(&update.patch, Some(&update.object));
            mismatch(update.expect, update.message.as_deref(), got)
                .map(|why| format!("{}: {why}", update.name))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_accepted_object_of_the_table_deserialises_into_its_rust_type() {
    let table = table();
    let objects = table
        .cases
        .iter()
        .filter(|c| c.expect == Expect::Accepted)
        .map(|c| (&c.name, &c.object))
        .chain(
            table
                .updates
                .iter()
                .flat_map(|u| [(&u.name, &u.object), (&u.name, &u.patch)]),
        );
    for (name, object) in objects {
        if let Err(e) = deserialises_into_its_type(object) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn every_example_is_admitted_and_deserialises_into_its_rust_type() {
    let mut seen = 0;
    let examples = std::fs::read_dir(repo_path("../docs/examples")).expect("docs/examples exists");
    let reference =
        std::fs::read_dir(repo_path("../docs/examples/reference")).expect("reference exists");
    for entry in examples.chain(reference) {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        let object: Value = serde_yaml::from_str(&text).expect("example is YAML");
        if let Err(errors) = support::admit(&object, None) {
            panic!("{} is rejected: {errors:?}", path.display());
        }
        if let Err(e) = deserialises_into_its_type(&object) {
            panic!("{}: {e}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 9, "found only {seen} examples");
}

#[test]
fn every_cel_rule_of_every_crd_compiles() {
    for crd in causeway_crds::crdgen::crds() {
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref()),
        )
        .expect("schema serialises");
        let compiled = kube::core::cel::compile_schema(&schema);
        let errors: Vec<String> = compiled
            .compilation_errors()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", crd.spec.names.kind);
    }
}

/// Values a careless or hostile user writes into address fields, valid ones among them.
const ADDRESSES: [&str; 10] = [
    "192.168.50.10",
    "10.250.0.9",
    "127.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.5",
    "169.254.1.1",
    "fd00::1",
    "not-an-ip",
    "",
];
const CIDRS: [&str; 9] = [
    "10.244.0.0/16",
    "10.244.1.0/16",
    "0.0.0.0/0",
    "127.0.0.0/8",
    "128.0.0.0/1",
    "169.254.0.0/16",
    "fd00::/64",
    "10.244.0.0/33",
    "garbage",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
    /// Generated objects of all three kinds through the admission stand-in: it never panics,
    /// every refusal names what is wrong, and an object with only well-formed unicast values
    /// is never refused for an address.
    #[test]
    fn generated_objects_are_admitted_or_refused_with_a_message(
        kind in 0..3usize,
        cidr in 0..CIDRS.len(),
        addresses in proptest::collection::vec(0..ADDRESSES.len(), 3),
        prefix in proptest::sample::select(vec![8i64, 16, 24, 30, 32]),
    ) {
        let a = |i: usize| ADDRESSES[addresses[i]];
        let object = match kind {
            0 => serde_json::json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
                "metadata": {"name": "gen"},
                "spec": {"cidr": CIDRS[cidr], "nodeSubnetPrefixLength": prefix, "mode": "Routed",
                    "routed": {"bgp": {"asn": 64512, "peers": [{"address": a(0), "asn": 64513}]}}}}),
            1 => serde_json::json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "NodeSubnet",
                "metadata": {"name": "gen"},
                "spec": {"network": "n", "nodeName": "node-a", "cidr": CIDRS[cidr], "nodeAddress": a(0)}}),
            _ => serde_json::json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "OverlayGateway",
                "metadata": {"name": "gen"},
                "spec": {"network": "n", "strategy": "ClientJoin", "clientCidrs": [CIDRS[cidr]],
                    "clientJoin": {"clients": [{"name": "c", "address": a(1), "overlayAddress": a(2)}]}}}),
        };
        if let Err(errors) = support::admit(&object, None) {
            proptest::prop_assert!(!errors.is_empty());
            for e in &errors {
                proptest::prop_assert!(e.trim().len() > 10, "a refusal without a message: {e:?}");
            }
        }
        let unicast = |i: usize| i < 2;
        let clean = cidr == 0
            && match kind {
                // nodeSubnetPrefixLength must lie in (16, 30] for a /16.
                0 => unicast(addresses[0]) && (prefix == 24 || prefix == 30),
                1 => unicast(addresses[0]),
                _ => unicast(addresses[1]) && unicast(addresses[2]) && addresses[1] != addresses[2],
            };
        if clean && kind != 1 {
            proptest::prop_assert!(
                support::admit(&object, None).is_ok(),
                "{object}: {:?}",
                support::admit(&object, None)
            );
        }
    }
}
