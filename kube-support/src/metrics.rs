//! What both binaries' `/metrics` share: `build_info` ([`register_build_info`]), the
//! OpenMetrics text ([`encode`]), and a check against Prometheus's naming conventions
//! (<https://prometheus.io/docs/practices/naming/>), so that every metric added later is held
//! to them by the tests that call [`naming_problems`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// Registers `<prefix>_build_info{version="..."} 1` in `registry` (which carries the binary's
/// prefix); `what` names the binary in the help text.
pub fn register_build_info(registry: &mut Registry, what: &str, version: &str) {
    let info = Family::<VersionLabel, Gauge>::default();
    info.get_or_create(&VersionLabel {
        version: version.to_owned(),
    })
    .set(1);
    registry.register(
        "build_info",
        format!("The {what}'s version (the value is always 1)"),
        info,
    );
}

/// The OpenMetrics text exposition of `registry`; empty if encoding fails (it does not for
/// counters, gauges and histograms).
#[must_use]
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// Names in `exposition` (OpenMetrics or Prometheus text) that break a convention, each with
/// what is wrong; empty when all is well. Checked per metric family (`# TYPE` line):
///
/// - the name has `prefix` (`causeway_agent_`), and only lower-case letters, digits and `_`;
/// - every family has `# HELP`;
/// - counters' samples end in `_total`, and nothing else does;
/// - no family name ends in a suffix samples are given (`_count`, `_sum`, `_bucket`);
/// - durations, latencies and ages are in seconds (`_seconds`), and so are histograms of
///   them; no `_ms`, `_milliseconds` or `_minutes`.
#[must_use]
pub fn naming_problems(exposition: &str, prefix: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let helped: Vec<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP ")?.split_whitespace().next())
        .collect();
    let families: Vec<(&str, &str)> = exposition
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .collect();
    if families.is_empty() {
        problems.push("no metric families (no # TYPE lines)".to_owned());
    }
    for (name, kind) in &families {
        let mut wrong = |what: &str| problems.push(format!("{name} ({kind}): {what}"));
        if !name.starts_with(prefix) {
            wrong(&format!("does not start with {prefix}"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            wrong("has characters other than a-z, 0-9 and _");
        }
        if !helped.contains(name) {
            wrong("has no # HELP");
        }
        if name.ends_with("_total") {
            wrong("a family name ends in _total (a counter's samples get it; nothing else may)");
        }
        for reserved in ["_count", "_sum", "_bucket", "_created"] {
            if name.ends_with(reserved) {
                wrong(&format!(
                    "ends in {reserved}, a suffix reserved for samples"
                ));
            }
        }
        for unit in [
            "_ms",
            "_milliseconds",
            "_minutes",
            "_hours",
            "_microseconds",
        ] {
            if name.ends_with(unit) || name.contains(&format!("{unit}_")) {
                wrong(&format!("uses {unit}: times are in seconds"));
            }
        }
        let timing = ["duration", "latency", "age", "elapsed"]
            .iter()
            .any(|w| name.split('_').any(|part| part == *w));
        if timing && !name.ends_with("_seconds") {
            wrong("measures time but does not end in _seconds");
        }
        if *kind == "histogram" && !(name.ends_with("_seconds") || name.ends_with("_bytes")) {
            wrong("a histogram without a unit (_seconds, _bytes)");
        }
        let samples = exposition
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .filter(|s| {
                s.strip_prefix(name).is_some_and(|rest| {
                    rest.is_empty()
                        || ["_total", "_count", "_sum", "_bucket", "_created"].contains(&rest)
                })
            });
        for sample in samples {
            let total = sample.ends_with("_total");
            if *kind == "counter" && !total && !sample.ends_with("_created") {
                problems.push(format!("{sample}: a counter's sample must end in _total"));
            }
            if *kind != "counter" && total {
                problems.push(format!("{sample}: only counters' samples end in _total"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass_and_each_broken_convention_is_named() {
        let good = "# HELP x_ops Operations.\n# TYPE x_ops counter\nx_ops_total 3\n\
            # HELP x_pass_duration_seconds Passes.\n# TYPE x_pass_duration_seconds histogram\n\
            x_pass_duration_seconds_sum 1\nx_pass_duration_seconds_count 1\n\
            x_pass_duration_seconds_bucket{le=\"+Inf\"} 1\n\
            # HELP x_held Held.\n# TYPE x_held gauge\nx_held{gateway=\"g\"} 1\n# EOF\n";
        assert_eq!(naming_problems(good, "x_"), Vec::<String>::new());
        let cases = [
            (
                "# HELP y_a A.\n# TYPE y_a gauge\ny_a 1\n",
                "does not start with x_",
            ),
            ("# TYPE x_a gauge\nx_a 1\n", "no # HELP"),
            (
                "# HELP x_a A.\n# TYPE x_a counter\nx_a 1\n",
                "must end in _total",
            ),
            (
                "# HELP x_a_total A.\n# TYPE x_a_total gauge\nx_a_total 1\n",
                "ends in _total",
            ),
            (
                "# HELP x_pass_duration A.\n# TYPE x_pass_duration gauge\nx_pass_duration 1\n",
                "does not end in _seconds",
            ),
            (
                "# HELP x_took_ms A.\n# TYPE x_took_ms gauge\nx_took_ms 1\n",
                "times are in seconds",
            ),
            (
                "# HELP x_sizes A.\n# TYPE x_sizes histogram\nx_sizes_count 1\n",
                "without a unit",
            ),
            (
                "# HELP x_Bad A.\n# TYPE x_Bad gauge\nx_Bad 1\n",
                "characters other than",
            ),
            ("", "no metric families"),
        ];
        for (text, want) in cases {
            let problems = naming_problems(text, "x_");
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{text:?}: want {want:?} in {problems:?}"
            );
        }
    }
}
