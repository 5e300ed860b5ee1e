//! Command-line values both binaries share.

use std::net::SocketAddr;

/// An address or none (the empty string). An alias, so that clap does not read the field
/// as an optional flag: the flag has a default and the value itself is optional.
pub type MaybeAddr = Option<SocketAddr>;

/// Parses `IP:PORT`, or nothing for the empty string (`--health-addr=` turns a listener off).
///
/// # Errors
/// When the text is neither empty nor an address, with an example of one.
pub fn optional_addr(s: &str) -> Result<MaybeAddr, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("{e} (expected IP:PORT, e.g. 127.0.0.1:8080, or empty)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_parses_the_empty_string_is_none_and_anything_else_is_an_error() {
        assert_eq!(
            optional_addr("0.0.0.0:1234"),
            Ok("0.0.0.0:1234".parse().ok())
        );
        assert_eq!(optional_addr("[::1]:80"), Ok("[::1]:80".parse().ok()));
        assert_eq!(optional_addr(""), Ok(None));
        let err = optional_addr("nonsense");
        assert!(
            err.as_ref().is_err_and(|e| e.contains("expected IP:PORT")),
            "{err:?}"
        );
    }
}
