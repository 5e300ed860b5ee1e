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

/// Values a user writes into the BGP options, valid ones among them (`None`: field absent).
const ASNS: [i64; 7] = [64512, 64500, 4_200_000_000, 1, 23456, 65535, 4_294_967_295];
const LABEL_KEYS: [Option<&str>; 6] = [
    None,
    Some("causeway.dev/asn"),
    Some("asn"),
    Some("Causeway.dev/asn"),
    Some("causeway.dev/"),
    Some("a/b/c"),
];
const COMMUNITIES: [&str; 9] = [
    "65000:100",
    "64512:1:2",
    "0:0",
    "65536:1",
    "4294967296:1:2",
    "065000:1",
    "no-export",
    "1:2:3:4",
    "",
];
const MULTIHOPS: [Option<i64>; 4] = [None, Some(2), Some(255), Some(1)];
const SECRET_NAMES: [Option<&str>; 5] = [
    None,
    Some("tor-bgp"),
    Some("TOR"),
    Some("tor_bgp"),
    Some(""),
];
const SECRET_KEYS: [Option<&str>; 5] = [
    None,
    Some("password"),
    Some("md5.key"),
    Some("pass word"),
    Some(""),
];
const BFDS: [Option<&str>; 5] = [
    None,
    Some("{}"),
    Some(r#"{"enabled": false}"#),
    Some(r#"{"minIntervalMilliseconds": 5}"#),
    Some(r#"{"multiplier": 300}"#),
];
const RESTART_TIMES: [Option<i64>; 5] = [None, Some(1), Some(4095), Some(0), Some(4096)];
const LOCAL_PREFS: [Option<i64>; 5] = [
    None,
    Some(0),
    Some(4_294_967_295),
    Some(-1),
    Some(4_294_967_296),
];

/// One generated peer: `(asn, ebgpMultihop, routeReflectorClient, secret name, secret key, bfd)`
/// as indexes into the pools above.
type PeerChoice = (usize, usize, bool, usize, usize, usize);

fn generated_peer(address: &str, choice: PeerChoice) -> Value {
    let (asn, hop, rr, name, key, bfd) = choice;
    let mut peer =
        serde_json::json!({"address": address, "asn": ASNS[asn], "routeReflectorClient": rr});
    if let Some(hop) = MULTIHOPS[hop] {
        peer["ebgpMultihop"] = hop.into();
    }
    if let Some(name) = SECRET_NAMES[name] {
        peer["password"] = serde_json::json!({"secretRef": {"name": name}});
        if let Some(key) = SECRET_KEYS[key] {
            peer["password"]["secretRef"]["key"] = key.into();
        }
    }
    if let Some(bfd) = BFDS[bfd] {
        peer["bfd"] = serde_json::from_str(bfd).expect("BFD pool entry is JSON");
    }
    peer
}

/// An index into a pool whose first `valid` entries are valid: three times in four one of
/// those, so that accepted blocks are common enough to test too.
fn mostly_valid(valid: usize, len: usize) -> impl proptest::strategy::Strategy<Value = usize> {
    proptest::prop_oneof![3 => 0..valid, 1 => 0..len]
}

fn peer_choice() -> impl proptest::strategy::Strategy<Value = PeerChoice> {
    (
        mostly_valid(4, ASNS.len()),
        // Absent multihop and reflection are valid with every AS; the others depend on it.
        mostly_valid(1, MULTIHOPS.len()),
        proptest::bool::weighted(0.25),
        mostly_valid(2, SECRET_NAMES.len()),
        mostly_valid(3, SECRET_KEYS.len()),
        mostly_valid(3, BFDS.len()),
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Generated BGP blocks through the admission stand-in and through the agent's per-node
    /// resolution (`BgpSpec::for_node`, for a node without labels, whose AS is `asn` as
    /// admission assumes): admission accepts a block exactly when the agent resolves it without
    /// an error and without ignoring a setting, so what admission lets through the agent can
    /// use, and the agent refuses nothing admission would have accepted.
    #[test]
    fn admission_and_the_agents_bgp_resolution_agree_on_generated_bgp_blocks(
        asn in mostly_valid(4, ASNS.len()),
        label in mostly_valid(3, LABEL_KEYS.len()),
        communities in proptest::collection::vec(mostly_valid(3, COMMUNITIES.len()), 0..3),
        restart in mostly_valid(3, RESTART_TIMES.len()),
        local_pref in mostly_valid(3, LOCAL_PREFS.len()),
        peers in proptest::collection::vec(peer_choice(), 1..3),
    ) {
        let mut bgp = serde_json::json!({"asn": ASNS[asn]});
        if let Some(key) = LABEL_KEYS[label] {
            bgp["nodeAsnLabel"] = key.into();
        }
        let mut advertise = serde_json::json!({});
        if !communities.is_empty() {
            advertise["communities"] = communities.iter().map(|&c| COMMUNITIES[c]).collect();
        }
        if let Some(pref) = LOCAL_PREFS[local_pref] {
            advertise["localPreference"] = pref.into();
        }
        bgp["advertise"] = advertise;
        if let Some(seconds) = RESTART_TIMES[restart] {
            bgp["gracefulRestart"] = serde_json::json!({"restartTimeSeconds": seconds});
        }
        bgp["peers"] = peers
            .iter()
            .enumerate()
            .map(|(i, &choice)| generated_peer(&format!("192.168.{}.1", 10 + i), choice))
            .collect();
        let object = serde_json::json!({"apiVersion": "causeway.dev/v1alpha1", "kind": "PodNetwork",
            "metadata": {"name": "gen"},
            "spec": {"cidr": "10.244.0.0/16", "nodeSubnetPrefixLength": 24, "mode": "Routed",
                "routed": {"bgp": bgp}}});
        let admitted = support::admit(&object, None);
        if let Err(errors) = &admitted {
            for e in errors {
                proptest::prop_assert!(e.trim().len() > 10, "a refusal without a message: {e:?}");
            }
        }
        let pod_network: PodNetwork = serde_json::from_value(object.clone())
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{object}: {e}")))?;
        let bgp = pod_network.spec.routed.and_then(|r| r.bgp).expect("generated with BGP");
        let resolved = bgp.for_node(&std::collections::BTreeMap::new());
        let usable = resolved.as_ref().is_ok_and(|node| node.ignored.is_empty());
        proptest::prop_assert_eq!(
            admitted.is_ok(),
            usable,
            "{}\nadmission: {:?}\nagent: {:?}",
            object,
            admitted,
            resolved
        );
    }
}
