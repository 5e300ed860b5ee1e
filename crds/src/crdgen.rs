//! Renders the CustomResourceDefinitions of [`crate::v1alpha1`] as the YAML files the Helm chart
//! ships (`charts/causeway/files/crds/<plural>.causeway.dev.yaml`). They are plain CRDs, applyable
//! with `kubectl apply --server-side -f`; the chart renders them through a template
//! (`templates/crds.yaml`) so that `helm upgrade` updates them, which Helm never does for files
//! in a chart's `crds/` directory.
//!
//! The `crdgen` binary writes or checks these files; the `generated_yaml_matches_types` test
//! fails when a committed file drifts from the types. Both go through [`generated_crds`], so
//! what is checked is exactly what is written.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{NodeSubnet, OverlayGateway, PodNetwork};

/// The command that regenerates the files, quoted in headers and drift messages.
pub const REGENERATE_COMMAND: &str = "cargo run -p causeway-crds --bin crdgen";

/// One CRD rendered to YAML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedCrd {
    /// File name inside the chart's `files/crds/` directory: `<plural>.causeway.dev.yaml`.
    pub file_name: String,
    /// The file's full content.
    pub yaml: String,
}

/// The CRD objects of every kind, in a fixed order.
#[must_use]
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![PodNetwork::crd(), NodeSubnet::crd(), OverlayGateway::crd()]
}

/// Every CRD rendered to YAML with a header naming its generator.
///
/// # Errors
/// When YAML serialisation fails (it does not for these types).
pub fn generated_crds() -> Result<Vec<GeneratedCrd>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let mut value = serde_json::to_value(&crd)
                .map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
            reflow_descriptions(&mut value);
            let body = serde_yaml::to_string(&value)?;
            Ok(GeneratedCrd {
                file_name: format!("{}.yaml", crd.metadata.name.unwrap_or_default()),
                yaml: format!(
                    "# Generated from crds/src/v1alpha1 by `{REGENERATE_COMMAND}`. Do not edit.\n{body}"
                ),
            })
        })
        .collect()
}

/// Joins the hard-wrapped lines of every `description` into paragraphs. Doc comments are
/// wrapped at 100 columns for the source; `kubectl explain` wraps again for the terminal, and
/// keeping both line breaks would print ragged half-lines.
pub fn reflow_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = reflow(text);
                    }
                    _ => reflow_descriptions(v),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(reflow_descriptions),
        _ => {}
    }
}

/// One line per paragraph (paragraphs are separated by a blank line).
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|para| para.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|para| !para.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The chart directory the files belong in: `charts/causeway/files/crds` of the workspace.
#[must_use]
pub fn default_output_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .parent()
        .unwrap_or(crate_dir)
        .join("charts/causeway/files/crds")
}

/// Files under `dir` whose content differs from `generated` (missing files included).
#[must_use]
pub fn drifted_files(dir: &Path, generated: &[GeneratedCrd]) -> Vec<PathBuf> {
    generated
        .iter()
        .map(|crd| dir.join(&crd.file_name))
        .zip(generated)
        .filter(|(path, crd)| std::fs::read_to_string(path).ok().as_deref() != Some(&crd.yaml))
        .map(|(path, _)| path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_renders_to_its_plural_file_name_with_the_generator_header() {
        let generated = generated_crds().expect("render");
        let names: Vec<&str> = generated.iter().map(|c| c.file_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "podnetworks.causeway.dev.yaml",
                "nodesubnets.causeway.dev.yaml",
                "overlaygateways.causeway.dev.yaml"
            ]
        );
        assert!(
            generated
                .iter()
                .all(|c| c.yaml.starts_with("# Generated") && c.yaml.contains(REGENERATE_COMMAND))
        );
    }

    #[test]
    fn descriptions_become_one_line_per_paragraph() {
        let mut v = serde_json::json!({
            "description": "first line\nwraps here.\n\nSecond   paragraph\n",
            "properties": {"a": {"description": "x\ny"}, "items": [{"description": "p\nq"}]},
            "other": "keep\nme",
        });
        reflow_descriptions(&mut v);
        assert_eq!(
            v["description"],
            "first line wraps here.\n\nSecond paragraph"
        );
        assert_eq!(v["properties"]["a"]["description"], "x y");
        assert_eq!(v["properties"]["items"][0]["description"], "p q");
        assert_eq!(v["other"], "keep\nme");
    }

    #[test]
    fn drifted_files_lists_missing_and_edited_files_but_not_current_ones() {
        let dir = std::env::temp_dir().join(format!("causeway-crdgen-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let generated = generated_crds().expect("render");
        std::fs::write(dir.join(&generated[0].file_name), &generated[0].yaml).expect("write");
        std::fs::write(dir.join(&generated[1].file_name), "edited").expect("write");
        let drifted = drifted_files(&dir, &generated);
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(
            drifted,
            vec![
                dir.join(&generated[1].file_name),
                dir.join(&generated[2].file_name)
            ]
        );
    }
}
