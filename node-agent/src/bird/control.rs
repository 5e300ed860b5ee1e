//! A client for BIRD's control socket (the protocol `birdc` speaks), over tokio's
//! `UnixStream` (I/O, small).
//!
//! BIRD greets with `0001 BIRD <version> ready.`, then answers each command line with lines
//! that start with a four-digit code and `-` (more follows) or ` ` (the reply's last line); a
//! line starting with a space continues the previous code. Codes from 8000 up are errors
//! (8xxx runtime, 9xxx parse). [`reply_text`] strips the codes, leaving what `birdc` prints,
//! which is what [`crate::bird::parse`] reads.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::error::BirdError;

/// How long one command may take before the connection is given up.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One line of a reply: its code and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub code: u16,
    pub text: String,
}

/// An open connection to BIRD's control socket.
#[derive(Debug)]
pub struct Control {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Control {
    /// Connects and reads BIRD's greeting.
    ///
    /// # Errors
    /// When the socket is not there or BIRD does not greet.
    pub async fn connect(path: &Path) -> Result<Self, BirdError> {
        let io_error = |error: io::Error| BirdError::Control {
            path: path.to_owned(),
            error: error.to_string(),
        };
        let stream = UnixStream::connect(path).await.map_err(io_error)?;
        let (read, writer) = stream.into_split();
        let mut control = Self {
            path: path.to_owned(),
            reader: BufReader::new(read),
            writer,
        };
        let greeting = control.read_reply().await?;
        if greeting.first().map(|l| l.code) != Some(1) {
            return Err(BirdError::Control {
                path: path.to_owned(),
                error: format!("unexpected greeting {greeting:?}"),
            });
        }
        Ok(control)
    }

    /// Sends one command and returns its reply.
    ///
    /// # Errors
    /// When the connection fails or times out ([`BirdError::Control`]), or BIRD answers with
    /// an error code ([`BirdError::Command`]).
    pub async fn command(&mut self, command: &str) -> Result<Vec<Line>, BirdError> {
        let exchange = async {
            self.writer
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(|e| self.failed(e.to_string()))?;
            self.read_reply().await
        };
        let reply = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| self.failed(format!("no answer to {command:?} within {TIMEOUT:?}")))??;
        match reply.last() {
            Some(last) if last.code >= 8000 => Err(BirdError::Command {
                command: command.to_owned(),
                reply: reply_text(&reply),
            }),
            _ => Ok(reply),
        }
    }

    async fn read_reply(&mut self) -> Result<Vec<Line>, BirdError> {
        let mut lines = Vec::new();
        let mut code = 0;
        loop {
            let mut raw = String::new();
            let read = self
                .reader
                .read_line(&mut raw)
                .await
                .map_err(|e| self.failed(e.to_string()))?;
            if read == 0 {
                return Err(self.failed("BIRD closed the connection".to_owned()));
            }
            let raw = raw.trim_end_matches(['\n', '\r']);
            match parse_line(raw) {
                Parsed::Coded {
                    code: c,
                    last,
                    text,
                } => {
                    code = c;
                    lines.push(Line {
                        code,
                        text: text.to_owned(),
                    });
                    if last {
                        return Ok(lines);
                    }
                }
                Parsed::Continued(text) => lines.push(Line {
                    code,
                    text: text.to_owned(),
                }),
            }
        }
    }

    fn failed(&self, error: String) -> BirdError {
        BirdError::Control {
            path: self.path.clone(),
            error,
        }
    }
}

enum Parsed<'a> {
    Coded {
        code: u16,
        last: bool,
        text: &'a str,
    },
    Continued(&'a str),
}

/// One raw line: `DDDD-text`, `DDDD text` or ` text` (continuation; so is anything else).
fn parse_line(raw: &str) -> Parsed<'_> {
    let bytes = raw.as_bytes();
    let coded = bytes.len() >= 4 && bytes[..4].iter().all(u8::is_ascii_digit);
    let code = raw.get(..4).and_then(|c| c.parse::<u16>().ok());
    if let (true, Some(code)) = (coded, code) {
        match bytes.get(4) {
            None => {
                return Parsed::Coded {
                    code,
                    last: true,
                    text: "",
                };
            }
            Some(sep @ (b'-' | b' ')) => {
                return Parsed::Coded {
                    code,
                    last: *sep == b' ',
                    text: &raw[5..],
                };
            }
            Some(_) => {}
        }
    }
    Parsed::Continued(raw.strip_prefix(' ').unwrap_or(raw))
}

/// A reply's text as `birdc` prints it: the lines without their codes.
#[must_use]
pub fn reply_text(lines: &[Line]) -> String {
    let mut out = String::new();
    for line in lines {
        out.push_str(&line.text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(raw: &str) -> Vec<(u16, bool, String)> {
        let mut code = 0;
        raw.lines()
            .map(|l| match parse_line(l) {
                Parsed::Coded {
                    code: c,
                    last,
                    text,
                } => {
                    code = c;
                    (c, last, text.to_owned())
                }
                Parsed::Continued(text) => (code, false, text.to_owned()),
            })
            .collect()
    }

    #[test]
    fn codes_separators_and_continuations() {
        // Captured from BIRD 2.0.12 (`show protocols all NAME`, then the empty end line).
        let raw = "2002-Name       Proto      Table      State  Since         Info\n\
                   1002-peer_192_168_91_9 BGP        ---        start  09:24:35.699  Connect       Socket: No route to host\n\
                   1006-  BGP state:          Connect\n     Neighbor address: 192.168.91.9\n \n0000 \n";
        let lines = parse_all(raw);
        assert_eq!(lines[0].0, 2002);
        assert_eq!(lines[1].0, 1002);
        assert_eq!(
            lines[2],
            (1006, false, "  BGP state:          Connect".into())
        );
        assert_eq!(
            lines[3],
            (1006, false, "    Neighbor address: 192.168.91.9".into()),
            "a leading space continues the previous code"
        );
        assert_eq!(lines[4], (1006, false, String::new()));
        assert_eq!(lines[5], (0, true, String::new()), "the last line");
    }

    #[test]
    fn single_line_replies_and_errors() {
        for (raw, code, last, text) in [
            ("0003 Reconfigured", 3, true, "Reconfigured"),
            (
                "0002-Reading configuration from /x",
                2,
                false,
                "Reading configuration from /x",
            ),
            ("8002 /x: No such file", 8002, true, "/x: No such file"),
            ("9001 syntax error", 9001, true, "syntax error"),
            (
                "0013 Daemon is up and running",
                13,
                true,
                "Daemon is up and running",
            ),
        ] {
            assert_eq!(parse_all(raw), vec![(code, last, text.to_owned())], "{raw}");
        }
    }

    #[test]
    fn reply_text_is_what_birdc_prints() {
        let lines = vec![
            Line {
                code: 1007,
                text: "Table master4:".into(),
            },
            Line {
                code: 1007,
                text: "10.250.8.0/24        unicast [peer_192_168_91_2 09:24:39.700] * (100) [AS65001i]".into(),
            },
            Line {
                code: 0,
                text: String::new(),
            },
        ];
        assert_eq!(
            reply_text(&lines),
            "Table master4:\n10.250.8.0/24        unicast [peer_192_168_91_2 09:24:39.700] * (100) [AS65001i]\n\n"
        );
    }
}
