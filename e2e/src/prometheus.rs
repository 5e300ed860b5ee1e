//! Prometheus, for the tests that scrape Causeway's `/metrics` and check its alert rules:
//! Debian's `prometheus` package, downloaded into the package cache and extracted next to it
//! once (never installed: the package would start a system service). `promtool` lints
//! expositions and unit-tests the chart's rules; a `prometheus` server runs inside a node's
//! namespace as a harness process, scraping the agent there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::Cluster;
use crate::cmd;
use crate::image::{deb_cache, fetch_deb};
use crate::proc::ProcId;
use crate::traffic::wait_for;

/// The directory holding `prometheus` and `promtool`, extracted from the cached package the
/// first time.
///
/// # Errors
/// The package cannot be downloaded or extracted.
pub fn bin_dir() -> Result<PathBuf> {
    let deb = fetch_deb("prometheus")?;
    let stem = deb
        .file_stem()
        .and_then(|s| s.to_str())
        .context("the cached package has no name")?
        .to_owned();
    let root = deb_cache()
        .parent()
        .map_or_else(|| PathBuf::from("/var/cache/causeway"), Path::to_path_buf)
        .join("prometheus")
        .join(&stem);
    let bin = root.join("usr/bin");
    if bin.join("prometheus").is_file() && bin.join("promtool").is_file() {
        return Ok(bin);
    }
    // Into a scratch directory first, then renamed: a run that stops half-way leaves no
    // half-extracted tree that looks complete.
    let scratch = root.with_extension(format!("partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&scratch))
        .with_context(|| format!("extracting {}", deb.display()))?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&scratch, &root)
        .with_context(|| format!("moving {} to {}", scratch.display(), root.display()))?;
    ensure!(
        bin.join("prometheus").is_file() && bin.join("promtool").is_file(),
        "{} holds no usr/bin/prometheus and usr/bin/promtool",
        deb.display()
    );
    Ok(bin)
}

/// `promtool`.
///
/// # Errors
/// As [`bin_dir`].
pub fn promtool() -> Result<PathBuf> {
    Ok(bin_dir()?.join("promtool"))
}

/// A Prometheus server inside a host's namespace, listening on its loopback.
pub struct Server {
    host: String,
    /// `http://127.0.0.1:PORT`, in the host's namespace.
    pub url: String,
    /// The harness process (ended at tear-down with the cluster's others, or by [`Cluster::stop`]).
    pub id: ProcId,
}

/// Starts Prometheus in `host`'s namespace scraping `targets` (job `job`) every second, its
/// data under the host's directory; returns once it answers.
///
/// # Errors
/// It cannot be set up, or does not answer within 30 s.
pub fn start(c: &Cluster, host: &str, job: &str, targets: &[SocketAddr]) -> Result<Server> {
    let bin = bin_dir()?;
    let dir = c.host_dir(host).join("prometheus");
    std::fs::create_dir_all(dir.join("data"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).with_context(|| format!("writing {}", file.display()))?;
    let listen = "127.0.0.1:19090";
    let args = vec![
        format!("--config.file={}", file.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={listen}"),
        "--log.level=warn".to_owned(),
    ];
    let program = bin.join("prometheus").display().to_string();
    let id = c.spawn(host, "prometheus", &program, &args, &[])?;
    let server = Server {
        host: host.to_owned(),
        url: format!("http://{listen}"),
        id,
    };
    wait_for("Prometheus to answer", Duration::from_secs(30), || {
        server.query(c, "vector(1)").map(|_| ())
    })
    .with_context(|| c.log_tail("prometheus", 20))?;
    Ok(server)
}

impl Server {
    /// The samples of an instant query: each series' labels and value.
    ///
    /// # Errors
    /// Prometheus does not answer, or the answer is not a vector.
    pub fn query(&self, c: &Cluster, expr: &str) -> Result<Vec<(Value, f64)>> {
        let promtool = promtool()?.display().to_string();
        let out = c.exec(
            &self.host,
            &promtool,
            &["query", "instant", "-o", "json", &self.url, expr],
        )?;
        let v: Value = serde_json::from_str(&out)
            .with_context(|| format!("promtool query {expr:?} answered {out:?}"))?;
        let samples = v
            .as_array()
            .with_context(|| format!("not a vector: {out}"))?;
        samples
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("no value in {s}"))?;
                Ok((s["metric"].clone(), value))
            })
            .collect()
    }
}

/// An OpenMetrics exposition in Prometheus's classic text format, which is what `promtool
/// check metrics` lints: a counter family's `# HELP` and `# TYPE` name it with `_total`, as its
/// samples do (OpenMetrics names the family without it), and there is no `# EOF`. Nothing
/// else changes, so the lint sees the names Prometheus stores.
#[must_use]
pub fn classic_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
            let name = w.next()?;
            (w.next()? == "counter").then_some(name)
        })
        .collect();
    let mut out = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_in_help_and_type_and_eof_goes() {
        let om = "# HELP x_ops Ops.\n# TYPE x_ops counter\nx_ops_total 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP x_ops_total Ops.\n# TYPE x_ops_total counter\nx_ops_total 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
