//! Schema transforms: the limits our own fields carry, given to embedded Kubernetes types, and
//! the attachment of CEL rules to a field or to the items of a list field.
//!
//! The API server estimates the cost of every CEL rule from the `maxLength`/`maxItems` of what
//! the rule can reach, and Causeway's own convention is that every string and list is bounded.
//! The k8s-openapi schemas of `LabelSelector` and `Condition` carry no bounds, so the fields
//! that embed them apply the transforms below (`#[schemars(transform = ...)]`). The limits are
//! the ones the Kubernetes API itself enforces (label keys ≤ 317 bytes, values ≤ 63; the
//! `metav1.Condition` markers), so no object that core Kubernetes accepts is rejected here.
//!
//! Only the CRD generator and the tests see these functions' effects; they run when schemas
//! are generated, never on objects.

use kube::core::Rule;
use schemars::Schema;
use serde_json::{Map, Value, json};

/// Most conditions one status may carry.
pub const MAX_CONDITIONS: u64 = 16;
/// Most `matchExpressions` (and `matchLabels` entries) one node selector may carry.
pub const MAX_SELECTOR_TERMS: u64 = 32;
/// Most values of one `matchExpressions` entry.
pub const MAX_SELECTOR_VALUES: u64 = 64;
/// Longest label key: a 253-character DNS prefix, `/`, and a 63-character name.
pub const MAX_LABEL_KEY_LENGTH: u64 = 317;
/// Longest label value.
pub const MAX_LABEL_VALUE_LENGTH: u64 = 63;

/// Applies `f` to every object schema reachable through `anyOf`/`oneOf`/`allOf` wrappers (which
/// is where an `Option<T>`'s schema puts `T` before kube's structural rewrite).
fn for_each_branch(value: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    let Value::Object(map) = value else { return };
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(branches)) = map.get_mut(key) {
            for branch in branches {
                for_each_branch(branch, f);
            }
        }
    }
    f(map);
}

fn property<'a>(map: &'a mut Map<String, Value>, name: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut("properties")?.get_mut(name)?.as_object_mut()
}

fn items(map: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    map.get_mut("items")?.as_object_mut()
}

fn apply(schema: &mut Schema, mut f: impl FnMut(&mut Map<String, Value>)) {
    let mut value = std::mem::take(schema).to_value();
    for_each_branch(&mut value, &mut f);
    *schema = Schema::try_from(value).unwrap_or_default();
}

/// Bounds a `LabelSelector` field and makes it atomic for server-side apply, as upstream's
/// `+structType=atomic` marker does.
pub fn label_selector(schema: &mut Schema) {
    apply(schema, |selector| {
        if !selector.contains_key("properties") {
            return;
        }
        selector.insert("x-kubernetes-map-type".into(), json!("atomic"));
        if let Some(labels) = property(selector, "matchLabels") {
            labels.insert("maxProperties".into(), json!(MAX_SELECTOR_TERMS));
            if let Some(Value::Object(values)) = labels.get_mut("additionalProperties") {
                values.insert("maxLength".into(), json!(MAX_LABEL_VALUE_LENGTH));
            }
        }
        if let Some(exprs) = property(selector, "matchExpressions") {
            exprs.insert("maxItems".into(), json!(MAX_SELECTOR_TERMS));
            exprs.insert("x-kubernetes-list-type".into(), json!("atomic"));
            if let Some(expr) = items(exprs) {
                if let Some(key) = property(expr, "key") {
                    key.insert("maxLength".into(), json!(MAX_LABEL_KEY_LENGTH));
                }
                if let Some(op) = property(expr, "operator") {
                    op.insert(
                        "enum".into(),
                        json!(["In", "NotIn", "Exists", "DoesNotExist"]),
                    );
                    op.insert("maxLength".into(), json!(12));
                }
                if let Some(values) = property(expr, "values") {
                    values.insert("maxItems".into(), json!(MAX_SELECTOR_VALUES));
                    values.insert("x-kubernetes-list-type".into(), json!("atomic"));
                    if let Some(value) = items(values) {
                        value.insert("maxLength".into(), json!(MAX_LABEL_VALUE_LENGTH));
                    }
                }
            }
        }
    });
}

/// Turns a `Vec<Condition>` into a bounded list map keyed by `type`, with the markers of
/// upstream `metav1.Condition` (so server-side apply merges conditions by type).
pub fn conditions(schema: &mut Schema) {
    apply(schema, |list| {
        if !list.contains_key("items") {
            return;
        }
        list.insert("maxItems".into(), json!(MAX_CONDITIONS));
        list.insert("x-kubernetes-list-type".into(), json!("map"));
        list.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
        let Some(condition) = items(list) else { return };
        for (name, max) in [("type", 316), ("reason", 1024), ("message", 32768)] {
            if let Some(field) = property(condition, name) {
                field.insert("maxLength".into(), json!(max));
            }
        }
        // The patterns of upstream metav1.Condition: runbooks match reasons as CamelCase words.
        if let Some(reason) = property(condition, "reason") {
            reason.insert("minLength".into(), json!(1));
            reason.insert(
                "pattern".into(),
                json!("^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
            );
        }
        if let Some(kind) = property(condition, "type") {
            kind.insert(
                "pattern".into(),
                json!(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"),
            );
        }
        if let Some(status) = property(condition, "status") {
            status.insert("enum".into(), json!(["True", "False", "Unknown"]));
            status.insert("maxLength".into(), json!(7));
        }
        if let Some(generation) = property(condition, "observedGeneration") {
            generation.insert("minimum".into(), json!(0));
        }
    });
}

/// Returns a transform that adds CEL rules to a field's own schema, after any it has; for the
/// rule sets of [`crate::v1alpha1::address`], which one attribute attaches whole.
pub fn rules(rules: impl IntoIterator<Item = Rule>) -> impl FnMut(&mut Schema) {
    let rules = to_values(rules);
    move |schema: &mut Schema| push_rules(schema.ensure_object(), &rules)
}

/// Returns a transform that adds CEL rules to the *items* of a list field, so the rules run per
/// item with `self` bound to the item and errors point at `field[i]`.
pub fn item_rules(rules: impl IntoIterator<Item = Rule>) -> impl FnMut(&mut Schema) {
    let rules = to_values(rules);
    move |schema: &mut Schema| {
        apply(schema, |list| {
            if let Some(item) = items(list) {
                push_rules(item, &rules);
            }
        });
    }
}

fn to_values(rules: impl IntoIterator<Item = Rule>) -> Vec<Value> {
    rules
        .into_iter()
        .filter_map(|rule| serde_json::to_value(rule).ok())
        .collect()
}

fn push_rules(schema: &mut Map<String, Value>, rules: &[Value]) {
    let existing = schema
        .entry("x-kubernetes-validations")
        .or_insert_with(|| json!([]));
    if let Value::Array(existing) = existing {
        existing.extend(rules.iter().cloned());
    }
}
