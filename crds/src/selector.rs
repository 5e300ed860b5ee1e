//! Label selectors: whether a Node's labels match a PodNetwork's `spec.nodeSelector` (the
//! operator: which networks select a node) or a BGP peer's `nodeSelector` (the agent: which
//! routers its node peers with). The rules
//! are those of Kubernetes' `metav1.LabelSelector` (`LabelSelectorAsSelector` in Go):
//! `matchLabels` and every `matchExpressions` entry must all hold; an absent or empty selector
//! selects every node; `NotIn` and `DoesNotExist` hold when the key is absent.
//!
//! The API server does not validate the operators and values of a CRD's embedded selector the
//! way it does for built-in kinds, so a selector can be malformed. [`matches()`] checks the whole
//! selector before evaluating any of it, so a malformed selector is an error for every node,
//! never a match for some and an error for others.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// A selector entry that Kubernetes would reject.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SelectorError {
    /// A label key that is not a qualified name (`[prefix/]name`).
    #[error("nodeSelector.{field} key {key:?}: {why}")]
    InvalidKey {
        /// `matchLabels` or `matchExpressions`.
        field: &'static str,
        /// The key as written.
        key: String,
        /// What is wrong and what a key looks like.
        why: String,
    },

    /// A label value Kubernetes would never store on a node.
    #[error("nodeSelector.{field} key {key:?}: value {value:?} {why}")]
    InvalidValue {
        /// `matchLabels` or `matchExpressions`.
        field: &'static str,
        /// The key it belongs to.
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong.
        why: &'static str,
    },

    /// The operator is not one of the four Kubernetes knows.
    #[error(
        "nodeSelector.matchExpressions key {key:?}: unknown operator {operator:?}, use In, NotIn, Exists or DoesNotExist"
    )]
    UnknownOperator {
        /// The requirement's key.
        key: String,
        /// The operator as written.
        operator: String,
    },

    /// `In` or `NotIn` without any value to compare with.
    #[error(
        "nodeSelector.matchExpressions key {key:?}: operator {operator} needs at least one entry in values"
    )]
    MissingValues {
        /// The requirement's key.
        key: String,
        /// `In` or `NotIn`.
        operator: String,
    },

    /// `Exists` or `DoesNotExist` with values, which Kubernetes forbids.
    #[error(
        "nodeSelector.matchExpressions key {key:?}: operator {operator} takes no values, remove them"
    )]
    UnexpectedValues {
        /// The requirement's key.
        key: String,
        /// `Exists` or `DoesNotExist`.
        operator: String,
    },
}

/// A checked `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Checks one requirement and returns its operator.
fn operator(requirement: &LabelSelectorRequirement) -> Result<Operator, SelectorError> {
    let key = || requirement.key.clone();
    let has_values = requirement.values.as_ref().is_some_and(|v| !v.is_empty());
    let op = match requirement.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err(SelectorError::UnknownOperator {
                key: key(),
                operator: other.to_owned(),
            });
        }
    };
    match (op, has_values) {
        (Operator::In | Operator::NotIn, false) => Err(SelectorError::MissingValues {
            key: key(),
            operator: requirement.operator.clone(),
        }),
        (Operator::Exists | Operator::DoesNotExist, true) => Err(SelectorError::UnexpectedValues {
            key: key(),
            operator: requirement.operator.clone(),
        }),
        _ => Ok(op),
    }
}

fn expressions(selector: &LabelSelector) -> &[LabelSelectorRequirement] {
    selector.match_expressions.as_deref().unwrap_or_default()
}

/// Checks that every key, value and `matchExpressions` operator is one Kubernetes accepts:
/// a malformed selector is the spec's problem, reported as such, never "no node matches".
///
/// # Errors
/// The first malformed entry, as a [`SelectorError`] whose message says what to fix.
pub fn validate(selector: Option<&LabelSelector>) -> Result<(), SelectorError> {
    let Some(selector) = selector else {
        return Ok(());
    };
    for (key, value) in selector.match_labels.iter().flatten() {
        check_key("matchLabels", key)?;
        check_value("matchLabels", key, value)?;
    }
    for r in expressions(selector) {
        check_key("matchExpressions", &r.key)?;
        for value in r.values.iter().flatten() {
            check_value("matchExpressions", &r.key, value)?;
        }
        operator(r)?;
    }
    Ok(())
}

/// A label name or value: at most 63 characters, alphanumerics, `-`, `_` and `.`, beginning
/// and ending with an alphanumeric.
fn is_label_word(word: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    word.len() <= 63
        && alnum(word.chars().next())
        && alnum(word.chars().last())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_key(field: &'static str, key: &str) -> Result<(), SelectorError> {
    validate_label_key(key).map_err(|why| SelectorError::InvalidKey {
        field,
        key: key.to_owned(),
        why,
    })
}

/// Checks that `key` is a label key Kubernetes accepts (a qualified name, `[prefix/]name`), for
/// every field that names a node label: selectors here, `routed.bgp.nodeAsnLabel` in
/// [`crate::bgp`].
///
/// # Errors
/// What is wrong with the key and what a key looks like, as a phrase the caller prefixes with
/// the field and the key.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !crate::naming::is_dns1123_subdomain(prefix)
    {
        return Err(format!(
            "the prefix {prefix:?} must be a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253 characters), as in example.com/rack"
        ));
    }
    if !is_label_word(name) {
        return Err(
            "a label key is [prefix/]name, the name at most 63 characters of letters, digits, '-', '_' and '.', beginning and ending with a letter or digit (e.g. topology.kubernetes.io/zone)".into(),
        );
    }
    Ok(())
}

fn check_value(field: &'static str, key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_word(value) {
        return Ok(());
    }
    Err(SelectorError::InvalidValue {
        field,
        key: key.to_owned(),
        value: value.to_owned(),
        why: "is not a label value: at most 63 characters of letters, digits, '-', '_' and '.', beginning and ending with a letter or digit (or empty); no node can carry it",
    })
}

/// Whether `labels` satisfy `selector`, with Kubernetes semantics (see the module docs).
///
/// # Errors
/// When the selector is malformed ([`validate`]), whatever the labels.
pub fn matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    let Some(selector) = selector else {
        return Ok(true);
    };
    validate(Some(selector))?;
    let requirements = expressions(selector)
        .iter()
        .map(|r| operator(r).map(|op| (r, op)))
        .collect::<Result<Vec<_>, _>>()?;
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = requirements.iter().all(|(requirement, op)| {
        let value = labels.get(&requirement.key);
        let values = requirement.values.as_deref().unwrap_or_default();
        match op {
            Operator::In => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    });
    Ok(labels_match && expressions_match)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, operator: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn selector(
        match_labels: &[(&str, &str)],
        match_expressions: Vec<LabelSelectorRequirement>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
            match_expressions: (!match_expressions.is_empty()).then_some(match_expressions),
        }
    }

    #[test]
    fn malformed_keys_and_values_are_errors_naming_the_entry_never_no_match() {
        let long = "x".repeat(64);
        let cases = [
            (
                selector(&[("bad key", "a")], vec![]),
                "matchLabels key \"bad key\"",
            ),
            (
                selector(&[("Example.COM/rack", "a")], vec![]),
                "must be a DNS subdomain",
            ),
            (
                selector(&[("rack", "not ok!")], vec![]),
                "value \"not ok!\" is not a label value",
            ),
            (selector(&[("rack", &long)], vec![]), "is not a label value"),
            (selector(&[(&long, "a")], vec![]), "at most 63 characters"),
            (
                selector(&[], vec![expr("-rack", "Exists", None)]),
                "matchExpressions key \"-rack\"",
            ),
            (
                selector(&[], vec![expr("rack", "In", Some(&["a b"]))]),
                "value \"a b\"",
            ),
        ];
        for (sel, words) in cases {
            let e = matches(Some(&sel), &labels(&[])).expect_err(words);
            assert!(e.to_string().contains(words), "{e}");
            assert_eq!(validate(Some(&sel)), Err(e));
        }
        let fine = selector(
            &[("topology.kubernetes.io/zone", "eu-1a"), ("empty", "")],
            vec![expr("node-role.kubernetes.io/worker", "Exists", None)],
        );
        assert_eq!(validate(Some(&fine)), Ok(()));
    }

    #[test]
    fn selectors_match_labels_the_way_kubernetes_does() {
        let node = labels(&[("zone", "a"), ("tier", "worker")]);
        let cases: Vec<(&str, Option<LabelSelector>, bool)> = vec![
            ("an absent selector selects every node", None, true),
            (
                "an empty selector selects every node",
                Some(LabelSelector::default()),
                true,
            ),
            (
                "matchLabels selects a node carrying every pair",
                Some(selector(&[("zone", "a"), ("tier", "worker")], vec![])),
                true,
            ),
            (
                "matchLabels rejects a node missing one pair",
                Some(selector(&[("zone", "a"), ("gpu", "yes")], vec![])),
                false,
            ),
            (
                "matchLabels rejects a node with another value",
                Some(selector(&[("zone", "b")], vec![])),
                false,
            ),
            (
                "In selects a node whose value is listed",
                Some(selector(&[], vec![expr("zone", "In", Some(&["b", "a"]))])),
                true,
            ),
            (
                "In rejects a node whose value is not listed",
                Some(selector(&[], vec![expr("zone", "In", Some(&["b"]))])),
                false,
            ),
            (
                "In rejects a node without the key",
                Some(selector(&[], vec![expr("rack", "In", Some(&["r1"]))])),
                false,
            ),
            (
                "NotIn rejects a node whose value is listed",
                Some(selector(&[], vec![expr("zone", "NotIn", Some(&["a"]))])),
                false,
            ),
            (
                "NotIn selects a node whose value is not listed",
                Some(selector(&[], vec![expr("zone", "NotIn", Some(&["b"]))])),
                true,
            ),
            (
                "NotIn selects a node without the key",
                Some(selector(&[], vec![expr("rack", "NotIn", Some(&["r1"]))])),
                true,
            ),
            (
                "Exists selects a node with the key",
                Some(selector(&[], vec![expr("tier", "Exists", None)])),
                true,
            ),
            (
                "Exists rejects a node without the key",
                Some(selector(&[], vec![expr("gpu", "Exists", None)])),
                false,
            ),
            (
                "DoesNotExist selects a node without the key",
                Some(selector(&[], vec![expr("gpu", "DoesNotExist", Some(&[]))])),
                true,
            ),
            (
                "DoesNotExist rejects a node with the key",
                Some(selector(&[], vec![expr("zone", "DoesNotExist", None)])),
                false,
            ),
            (
                "matchLabels and matchExpressions must both hold",
                Some(selector(
                    &[("zone", "a")],
                    vec![expr("tier", "In", Some(&["control-plane"]))],
                )),
                false,
            ),
            (
                "every expression must hold",
                Some(selector(
                    &[],
                    vec![
                        expr("zone", "In", Some(&["a"])),
                        expr("tier", "Exists", None),
                        expr("gpu", "DoesNotExist", None),
                    ],
                )),
                true,
            ),
        ];
        for (name, sel, want) in cases {
            assert_eq!(matches(sel.as_ref(), &node), Ok(want), "{name}");
        }
    }

    #[test]
    fn malformed_expressions_are_errors_that_say_what_to_fix() {
        let cases: Vec<(&str, LabelSelectorRequirement, &str)> = vec![
            (
                "an unknown operator",
                expr("zone", "Equals", Some(&["a"])),
                "unknown operator \"Equals\", use In, NotIn, Exists or DoesNotExist",
            ),
            (
                "operators are case sensitive",
                expr("zone", "in", Some(&["a"])),
                "unknown operator \"in\"",
            ),
            (
                "In without values",
                expr("zone", "In", None),
                "operator In needs at least one entry in values",
            ),
            (
                "NotIn with an empty list",
                expr("zone", "NotIn", Some(&[])),
                "operator NotIn needs at least one entry in values",
            ),
            (
                "Exists with values",
                expr("zone", "Exists", Some(&["a"])),
                "operator Exists takes no values",
            ),
            (
                "DoesNotExist with values",
                expr("zone", "DoesNotExist", Some(&["a"])),
                "operator DoesNotExist takes no values",
            ),
        ];
        for (name, bad, want) in cases {
            // The malformed entry comes after one that already fails to match: the selector is
            // still an error, not a quiet `false`.
            let sel = selector(&[("zone", "nowhere")], vec![bad]);
            let got = matches(Some(&sel), &labels(&[("zone", "a")]));
            let message = got.expect_err(name).to_string();
            assert!(message.contains(want), "{name}: {message}");
            assert!(message.contains("key \"zone\""), "{name}: {message}");
            assert!(validate(Some(&sel)).is_err(), "{name}");
        }
    }

    #[test]
    fn validate_accepts_absent_empty_and_well_formed_selectors() {
        assert_eq!(validate(None), Ok(()));
        assert_eq!(validate(Some(&LabelSelector::default())), Ok(()));
        let sel = selector(
            &[("zone", "a")],
            vec![
                expr("tier", "NotIn", Some(&["x"])),
                expr("gpu", "DoesNotExist", None),
            ],
        );
        assert_eq!(validate(Some(&sel)), Ok(()));
    }
}
