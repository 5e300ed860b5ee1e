//! What the API server counts of the writes it serves (`apiserver_request_total` and
//! `apiserver_request_duration_seconds`, from its `/metrics`), for the benchmarks that report
//! API writes per change and per minute: summed by verb and resource, reads left out.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use crate::Cluster;

/// `apiserver_request_total` summed by verb and resource, for writes only.
pub fn write_counts(c: &Cluster) -> Result<BTreeMap<String, f64>> {
    let text = c.kubectl(&["get", "--raw", "/metrics"])?;
    write_series(&text, "apiserver_request_total")
}

/// A metric of `text` summed by verb and resource, for writes only.
pub fn write_series(text: &str, metric: &str) -> Result<BTreeMap<String, f64>> {
    let prefix = format!("{metric}{{");
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(prefix.as_str()) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if matches!(verb.as_str(), "GET" | "LIST" | "WATCH" | "CONNECT") {
            continue;
        }
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        *counts.entry(format!("{verb} {resource}")).or_insert(0.0) +=
            value.trim().parse::<f64>()?;
    }
    Ok(counts)
}

/// What grew between two [`write_counts`], by verb and resource (only what grew).
pub fn grown(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(key, count)| {
            let delta = count - before.get(key).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| (key.clone(), delta))
        })
        .collect()
}

/// The API server's own mean time per write between `before` and `after` (two `/metrics`
/// texts), by verb and resource: `apiserver_request_duration_seconds`' sum ÷ count.
pub fn server_time_per_write(before: &str, after: &str) -> Result<BTreeMap<String, Duration>> {
    let series = |text: &str, suffix: &str| {
        write_series(
            text,
            &format!("apiserver_request_duration_seconds_{suffix}"),
        )
    };
    let (sum0, count0) = (series(before, "sum")?, series(before, "count")?);
    let (sum1, count1) = (series(after, "sum")?, series(after, "count")?);
    let mut out = BTreeMap::new();
    for (key, count) in count1 {
        let n = count - count0.get(&key).copied().unwrap_or(0.0);
        let sum = sum1.get(&key).copied().unwrap_or(0.0) - sum0.get(&key).copied().unwrap_or(0.0);
        if n > 0.0 && sum >= 0.0 {
            out.insert(key, Duration::from_secs_f64(sum / n));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_summed_by_verb_and_resource_and_reads_left_out() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="201",component="apiserver",group="causeway.dev",resource="nodesubnets",scope="cluster",subresource="",verb="POST",version="v1alpha1"} 3
apiserver_request_total{code="409",component="apiserver",group="causeway.dev",resource="nodesubnets",scope="cluster",subresource="",verb="POST",version="v1alpha1"} 1
apiserver_request_total{code="200",component="apiserver",group="causeway.dev",resource="nodesubnets",scope="cluster",subresource="status",verb="APPLY",version="v1alpha1"} 2
apiserver_request_total{code="200",component="apiserver",group="causeway.dev",resource="nodesubnets",scope="cluster",subresource="",verb="LIST",version="v1alpha1"} 9
"#;
        let counts = write_series(text, "apiserver_request_total").expect("parses");
        assert_eq!(counts.get("POST nodesubnets"), Some(&4.0));
        assert_eq!(counts.get("APPLY nodesubnets/status"), Some(&2.0));
        assert_eq!(counts.len(), 2, "{counts:?}");
        let mut later = counts.clone();
        *later.get_mut("POST nodesubnets").expect("there") += 1.0;
        later.insert("PUT leases".into(), 2.0);
        let grew = grown(&counts, &later);
        assert_eq!(grew.get("POST nodesubnets"), Some(&1.0));
        assert_eq!(grew.get("PUT leases"), Some(&2.0));
        assert_eq!(grew.len(), 2, "{grew:?}");
    }
}
