//! Errors of the BIRD speaker, each naming what failed and where.
//!
//! None reaches the agent as a `Result`: the supervisor logs them and shows them as the
//! sessions' `message` (BIRD not running, a configuration it refused), and retries.

use std::path::PathBuf;

/// What went wrong running BIRD.
#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("cannot prepare BIRD's directory {}: {error}", dir.display())]
    Directory { dir: PathBuf, error: std::io::Error },
    #[error("cannot write BIRD's configuration {}: {error}", path.display())]
    WriteConfig {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot run {program} (is bird2 installed? --bird names the program): {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("BIRD refused the configuration {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("BIRD's control socket {}: {error}", path.display())]
    Control { path: PathBuf, error: String },
    #[error("BIRD answered {command:?} with an error: {}", reply.trim())]
    Command { command: String, reply: String },
    #[error("BIRD exited before its control socket answered: {status}{}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Exited { status: String, stderr: String },
}
