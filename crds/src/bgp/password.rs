//! TCP MD5 signature keys (RFC 2385) of BGP sessions, as read from the Secret a peer's
//! `password.secretRef` names.
//!
//! The key never appears in the PodNetwork: the agent reads it from a Secret in the namespace
//! Causeway runs in and checks it here before it writes it into the speaker's configuration.
//! Linux limits a key to 80 bytes (`TCP_MD5SIG_MAXKEYLEN`). The key is written into BIRD's
//! configuration as a quoted string, so the characters are limited to printable ASCII without
//! `"` and `\` (which would end or escape the string); spaces are allowed. A trailing newline,
//! which `kubectl create secret --from-file` keeps from an editor-written file, gets its own
//! message because it is invisible.

/// Longest TCP MD5 key Linux accepts, in bytes.
pub const MAX_MD5_KEY_LENGTH: usize = 80;

/// The Secret data key read when `secretRef.key` is not given.
pub const DEFAULT_SECRET_KEY: &str = "password";

/// Why a Secret's value cannot be a TCP MD5 key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The value is empty.
    #[error("the password is empty: put the key shared with the router in the Secret")]
    Empty,
    /// Longer than [`MAX_MD5_KEY_LENGTH`].
    #[error(
        "the password is {length} bytes long; TCP MD5 keys are at most 80 bytes: use a shorter key on both sides"
    )]
    TooLong {
        /// Its length in bytes.
        length: usize,
    },
    /// Ends in a line break, most likely from the file the Secret was created from.
    #[error(
        "the password ends with a line break: recreate the Secret with --from-literal, or from a file written with printf '%s' rather than echo or an editor"
    )]
    TrailingNewline,
    /// A byte outside printable ASCII, or `"` or `\`.
    #[error(
        "the password has byte {byte:#04x} at position {position}: use printable ASCII characters (space to ~) except \" and \\"
    )]
    Character {
        /// Its offset (0-based).
        position: usize,
        /// The byte.
        byte: u8,
    },
}

/// Whether `key` can be a key of a Secret's data: 1-253 letters, digits, `-`, `_` and `.`
/// (the admission rule of `password.secretRef.key`).
#[must_use]
pub fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// `value` (a Secret's data, decoded) as a TCP MD5 key.
///
/// # Errors
/// When it is empty, longer than 80 bytes, or holds a byte that is not printable ASCII or is
/// `"` or `\`.
pub fn md5_key(value: &[u8]) -> Result<&str, PasswordError> {
    if value.is_empty() {
        return Err(PasswordError::Empty);
    }
    if value.ends_with(b"\n") {
        return Err(PasswordError::TrailingNewline);
    }
    if value.len() > MAX_MD5_KEY_LENGTH {
        return Err(PasswordError::TooLong {
            length: value.len(),
        });
    }
    if let Some((position, &byte)) = value
        .iter()
        .enumerate()
        .find(|(_, b)| !(b' '..=b'~').contains(*b) || matches!(b, b'"' | b'\\'))
    {
        return Err(PasswordError::Character { position, byte });
    }
    // Every byte is ASCII, so this cannot fail; the error keeps it total.
    std::str::from_utf8(value).map_err(|_| PasswordError::Character {
        position: 0,
        byte: value[0],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_keys_are_printable_ascii_without_quote_or_backslash_up_to_80_bytes() {
        let longest = "k".repeat(80);
        let too_long = "k".repeat(81);
        let cases: &[(&[u8], Result<&str, PasswordError>)] = &[
            (b"s3cret", Ok("s3cret")),
            (
                b"with space ~!#$%&'()*+,-./:;<=>?@[]^_`{|}",
                Ok("with space ~!#$%&'()*+,-./:;<=>?@[]^_`{|}"),
            ),
            (longest.as_bytes(), Ok(&longest)),
            (b"", Err(PasswordError::Empty)),
            (
                too_long.as_bytes(),
                Err(PasswordError::TooLong { length: 81 }),
            ),
            (b"s3cret\n", Err(PasswordError::TrailingNewline)),
            (b"s3cret\r\n", Err(PasswordError::TrailingNewline)),
            (
                b"say \"hi\"",
                Err(PasswordError::Character {
                    position: 4,
                    byte: b'"',
                }),
            ),
            (
                b"a\\b",
                Err(PasswordError::Character {
                    position: 1,
                    byte: b'\\',
                }),
            ),
            (
                b"tab\there",
                Err(PasswordError::Character {
                    position: 3,
                    byte: b'\t',
                }),
            ),
            (
                "pässword".as_bytes(),
                Err(PasswordError::Character {
                    position: 1,
                    byte: 0xc3,
                }),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(md5_key(value), *want, "{value:?}");
        }
    }

    #[test]
    fn refusals_say_what_to_do() {
        assert!(
            PasswordError::TrailingNewline
                .to_string()
                .contains("--from-literal")
        );
        assert_eq!(
            PasswordError::Character {
                position: 3,
                byte: b'\t'
            }
            .to_string(),
            "the password has byte 0x09 at position 3: use printable ASCII characters (space to ~) except \" and \\"
        );
    }
}
