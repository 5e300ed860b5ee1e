//! Local stand-in for the API server's admission of Causeway objects, for tests only.
//!
//! It applies what kube-apiserver applies to a custom resource on create and update, in the
//! same order: schema defaults, then the OpenAPI checks this API uses (type, required, unknown
//! fields as `kubectl --validate=strict` reports them, enum, minimum/maximum, length, pattern,
//! item and property counts), then the CEL rules (`x-kubernetes-validations`, evaluated by
//! kube-cel) unless a "blocking" schema error already occurred, exactly as the API server
//! skips CEL after type/required/enum/too-long/too-many errors. Schema messages use the API
//! server's wording so that the admission table's `message` substrings hold for both.
//!
//! It is not the API server: CEL cost limits, the CEL type checker and format validation are
//! only exercised by the e2e run of the same table.

use std::collections::BTreeSet;

use causeway_crds::crdgen;
use kube::core::cel::{Validator, apply_defaults};
use serde_json::Value;

/// The openAPIV3Schema of the CRD serving `apiVersion`/`kind`.
pub fn schema_for(api_version: &str, kind: &str) -> Option<Value> {
    crdgen::crds().into_iter().find_map(|crd| {
        let version = crd.spec.versions.first()?;
        let gv = format!("{}/{}", crd.spec.group, version.name);
        (gv == api_version && crd.spec.names.kind == kind)
            .then(|| {
                serde_json::to_value(version.schema.as_ref()?.open_api_v3_schema.as_ref()?).ok()
            })
            .flatten()
    })
}

/// Admits `object` (a create when `old` is `None`, an update otherwise); `Err` carries every
/// error message the API server would report.
pub fn admit(object: &Value, old: Option<&Value>) -> Result<(), Vec<String>> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let Some(schema) = schema_for(api_version, kind) else {
        return Err(vec![format!("no CRD serves {api_version} {kind}")]);
    };
    if object["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err(vec![
            "metadata.name: Required value: name is required".into(),
        ]);
    }
    let defaulted = apply_defaults(&schema, object);
    let mut errors = Errors::default();
    let properties = &schema["properties"];
    for key in schema["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        if defaulted.get(key).is_none() {
            errors.blocking(format!("{key}: Required value"));
        }
    }
    for (key, value) in defaulted.as_object().into_iter().flatten() {
        match key.as_str() {
            "apiVersion" | "kind" | "metadata" => {}
            _ => match properties.get(key) {
                Some(s) => check(s, value, key, &mut errors),
                None => errors.blocking(format!("unknown field \"{key}\"")),
            },
        }
    }
    if !errors.blocked
        && let Err(cel) = Validator::new().validate(&schema, &defaulted, old)
    {
        errors.messages.extend(cel.iter().map(ToString::to_string));
    }
    if errors.messages.is_empty() {
        Ok(())
    } else {
        Err(errors.messages)
    }
}

#[derive(Default)]
struct Errors {
    messages: Vec<String>,
    blocked: bool,
}

impl Errors {
    fn blocking(&mut self, message: String) {
        self.blocked = true;
        self.messages.push(message);
    }
    fn invalid(&mut self, message: String) {
        self.messages.push(message);
    }
}

/// Renders a schema bound the way the API server prints it (`30`, not `30.0`).
fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Errors) {
    if value.is_null() {
        if schema["nullable"].as_bool() != Some(true) {
            errors.blocking(format!(
                "{path}: Invalid value: \"null\": {path} in body must be of type {}",
                schema["type"]
            ));
        }
        return;
    }
    let ty = schema["type"].as_str().unwrap_or_default();
    let type_ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        errors.blocking(format!(
            "{path}: Invalid value: {value}: {path} in body must be of type {ty}"
        ));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        errors.blocking(format!(
            "{path}: Unsupported value: {value}: supported values: {}",
            list.join(", ")
        ));
    }
    if let (Some(min), Some(v)) = (schema["minimum"].as_f64(), value.as_f64())
        && v < min
    {
        errors.invalid(format!(
            "{path}: Invalid value: {value}: {path} in body should be greater than or equal to {}",
            number(&schema["minimum"])
        ));
    }
    if let (Some(max), Some(v)) = (schema["maximum"].as_f64(), value.as_f64())
        && v > max
    {
        errors.invalid(format!(
            "{path}: Invalid value: {value}: {path} in body should be less than or equal to {}",
            number(&schema["maximum"])
        ));
    }
    match value {
        Value::String(s) => {
            if let Some(max) = schema["maxLength"].as_u64()
                && s.len() as u64 > max
            {
                errors.blocking(format!(
                    "{path}: Too long: may not be more than {max} bytes"
                ));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && (s.len() as u64) < min
            {
                errors.invalid(format!("{path}: Invalid value: {value}: {path} in body should be at least {min} chars long"));
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                let re = regex::Regex::new(pattern).expect("schema pattern compiles");
                if !re.is_match(s) {
                    errors.invalid(format!(
                        "{path}: Invalid value: {value}: {path} in body should match '{pattern}'"
                    ));
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                errors.blocking(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if schema["x-kubernetes-list-type"] == "map" {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Vec<String> = keys.iter().map(|k| item[*k].to_string()).collect();
                    if !seen.insert(key.clone()) {
                        errors.invalid(format!("{path}[{i}]: Duplicate value: {}", key.join(",")));
                    }
                }
            }
            for (i, item) in items.iter().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Object(map) => {
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap_or_default();
                if map.get(key).is_none() {
                    errors.blocking(format!("{path}.{key}: Required value"));
                }
            }
            if let Some(max) = schema["maxProperties"].as_u64()
                && map.len() as u64 > max
            {
                errors.blocking(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    map.len()
                ));
            }
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => check(s, child, &child_path, errors),
                    (None, None) if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
                    (None, None) => errors.blocking(format!("unknown field \"{child_path}\"")),
                }
            }
        }
        _ => {}
    }
}
