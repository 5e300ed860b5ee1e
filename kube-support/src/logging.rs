//! Logging set-up both binaries share: `--log-format text|json` and `--log-level`.
//!
//! Text is for people (`kubectl logs`); JSON, one object per line with the event's fields,
//! is for pipelines (Loki, Elasticsearch, Cloud Logging) that should not parse text. Colour
//! codes are written only when standard error is a terminal, in either format never to a
//! file or a pipe. `--log-level` takes tracing's filter syntax (`info`, `debug`,
//! `info,causeway_node_agent=debug`); `RUST_LOG` sets it too, the flag wins.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-07T06:44:01.123456Z  INFO target: message field=value`.
    #[default]
    Text,
    /// `{"timestamp":"…","level":"INFO","fields":{"message":"…",…},"target":"…"}`, one per line.
    Json,
}

/// The logging flags, flattened into each binary's arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log line format: `text` for people, `json` (one object per line) for log pipelines.
    #[arg(long, value_enum, env = "CAUSEWAY_LOG_FORMAT", default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to log, in tracing's filter syntax: a level (`info`, `debug`) or per-module
    /// levels (`info,causeway_node_agent=debug`). Empty: the binary's default.
    #[arg(long, env = "RUST_LOG", value_parser = filter, default_value = "", global = true)]
    pub log_level: String,
}

/// Checks a `--log-level` value at parse time, so a typo is a usage error naming the flag.
///
/// # Errors
/// The text is not a filter tracing understands.
pub fn filter(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{e} (expected a level such as info or debug, or per-module levels such as info,causeway_node_agent=debug)"))
}

/// Installs the global subscriber: `args.log_level`, or `default_level` when it is empty,
/// written to standard error in `args.log_format`.
///
/// # Panics
/// `default_level` is not a valid filter (a constant of the calling binary).
pub fn init(args: &LogArgs, default_level: &str) {
    let level = if args.log_level.is_empty() {
        default_level
    } else {
        &args.log_level
    };
    let filter = EnvFilter::builder()
        .parse(level)
        .expect("the binary's default log level is a valid filter");
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn formats_and_levels_parse_and_bad_levels_name_the_fix() {
        let cli =
            Cli::try_parse_from(["x", "--log-format", "json", "--log-level", "info,kube=warn"])
                .expect("valid flags");
        assert_eq!(cli.log.log_format, LogFormat::Json);
        assert_eq!(cli.log.log_level, "info,kube=warn");
        let err = Cli::try_parse_from(["x", "--log-format", "yaml"])
            .err()
            .expect("yaml is no format");
        assert!(
            err.to_string().contains("[possible values: text, json]"),
            "{err}"
        );
        let err = Cli::try_parse_from(["x", "--log-level", "info,=bogus=2"])
            .err()
            .expect("not a filter");
        assert!(err.to_string().contains("--log-level"), "{err}");
        assert!(err.to_string().contains("expected a level"), "{err}");
    }
}
