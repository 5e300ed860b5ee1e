//! `causeway-operator probe live|ready`: the kubelet's exec probes. One HTTP GET of `/healthz`
//! or `/readyz` over this replica's Unix socket (`--health-socket`, in a per-pod emptyDir), so
//! each replica answers for itself even when several run on one node with host networking,
//! and nothing listens on a node address. Blocking std I/O: the probe is a short-lived process
//! started every few seconds, so it starts no async runtime.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which endpoint to ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Check {
    /// `/healthz`: the process serves requests.
    Live,
    /// `/readyz`: a standby in the election, or the leader with warm caches.
    Ready,
}

impl Check {
    /// The HTTP path asked.
    #[must_use]
    pub fn path(self) -> &'static str {
        match self {
            Self::Live => "/healthz",
            Self::Ready => "/readyz",
        }
    }
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "cannot reach the operator on {}: {source} (is it running with --health-socket {}?)",
        path.display(), path.display()
    )]
    Connect { path: PathBuf, source: io::Error },
    #[error("no answer from the operator on {}: {source}", path.display())]
    Exchange { path: PathBuf, source: io::Error },
    #[error("the operator answered something that is not HTTP: {answer:?}")]
    Malformed { answer: String },
    #[error("{path} answered {code}: {body}")]
    Status {
        path: &'static str,
        code: u16,
        body: String,
    },
}

/// Asks `check` on `socket`; the body of a 200 answer.
///
/// # Errors
/// When the socket cannot be reached within `timeout`, or the answer is not 200.
pub fn probe(socket: &Path, check: Check, timeout: Duration) -> Result<String, ProbeError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ProbeError::Connect {
        path: socket.to_owned(),
        source,
    })?;
    let exchange = |source| ProbeError::Exchange {
        path: socket.to_owned(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(exchange)?;
    stream.set_write_timeout(Some(timeout)).map_err(exchange)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        check.path()
    );
    stream.write_all(request.as_bytes()).map_err(exchange)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(exchange)?;
    let (code, body) = parse(&String::from_utf8_lossy(&answer))?;
    if code == 200 {
        Ok(body)
    } else {
        Err(ProbeError::Status {
            path: check.path(),
            code,
            body,
        })
    }
}

/// The status code and body of an HTTP/1.1 answer without chunked encoding (axum sends
/// short fixed bodies with a Content-Length).
fn parse(answer: &str) -> Result<(u16, String), ProbeError> {
    let malformed = || ProbeError::Malformed {
        answer: answer.chars().take(200).collect(),
    };
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status = head.lines().next().ok_or_else(malformed)?;
    let mut words = status.split_whitespace();
    if !words.next().is_some_and(|v| v.starts_with("HTTP/")) {
        return Err(malformed());
    }
    let code = words
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(malformed)?;
    Ok((code, body.trim_end().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed_into_code_and_body() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                Some((200, "ok")),
            ),
            (
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\n\r\nnot ready\n",
                Some((503, "not ready")),
            ),
            ("garbage", None),
            ("SSH-2.0\r\n\r\n", None),
            ("HTTP/1.1 abc\r\n\r\n", None),
        ];
        for (answer, want) in cases {
            let got = parse(answer).ok();
            assert_eq!(
                got.as_ref().map(|(c, b)| (*c, b.as_str())),
                want,
                "{answer:?}"
            );
        }
    }

    #[test]
    fn a_missing_socket_says_which_path_and_flag() {
        let err = probe(
            Path::new("/nonexistent/causeway/operator.sock"),
            Check::Live,
            Duration::from_secs(1),
        )
        .expect_err("no socket");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/causeway/operator.sock")
                && text.contains("--health-socket"),
            "{text}"
        );
    }
}
