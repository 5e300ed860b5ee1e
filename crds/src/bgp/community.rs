//! BGP communities a node attaches to the routes it originates
//! (`routed.bgp.advertise.communities`): standard communities (RFC 1997) written `a:b`, each
//! number 0-65535, and large communities (RFC 8092) written `a:b:c`, each number 0-4294967295.
//!
//! The written form is canonical (decimal, no sign, no leading zeros), so two entries that
//! mean the same community are the same string and admission's uniqueness rule sees them. The
//! admission rules in [`crate::v1alpha1::bgp_rules`] accept exactly what [`Community`]'s
//! `FromStr` accepts; a unit test there holds them to it.

use std::fmt;
use std::str::FromStr;

/// Most communities `advertise.communities` may list.
pub const MAX_COMMUNITIES: usize = 16;
/// Longest written community: three 10-digit numbers and two colons.
pub const MAX_COMMUNITY_LENGTH: usize = 32;

/// One community, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    /// A standard community (RFC 1997): `(asn, value)`, written `65000:100`.
    Standard(u16, u16),
    /// A large community (RFC 8092): `(global administrator, local data 1, local data 2)`,
    /// written `4200000000:1:2`.
    Large(u32, u32, u32),
}

/// Why a string is not a community.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommunityError {
    /// Not two or three decimal numbers separated by colons.
    #[error(
        "not a BGP community: write a standard community as two numbers 0-65535, such as 65000:100, or a large community as three numbers 0-4294967295, such as 64512:1:2 (decimal, no leading zeros)"
    )]
    Syntax,
    /// Two numbers, one of them above 65535.
    #[error(
        "out of range: both numbers of a standard community are 0-65535; for a 4-byte AS number use a large community such as 4200000000:1:2"
    )]
    StandardRange,
    /// Three numbers, one of them above 4294967295.
    #[error("out of range: each number of a large community is 0-4294967295")]
    LargeRange,
}

/// A decimal number without sign or leading zeros, of at most 10 digits (what the admission
/// regex accepts), as u64 so that the range check is separate.
fn number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 10
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

impl FromStr for Community {
    type Err = CommunityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let numbers = text
            .split(':')
            .map(number)
            .collect::<Option<Vec<u64>>>()
            .ok_or(CommunityError::Syntax)?;
        match numbers[..] {
            [a, b] => match (u16::try_from(a), u16::try_from(b)) {
                (Ok(a), Ok(b)) => Ok(Self::Standard(a, b)),
                _ => Err(CommunityError::StandardRange),
            },
            [a, b, c] => match (u32::try_from(a), u32::try_from(b), u32::try_from(c)) {
                (Ok(a), Ok(b), Ok(c)) => Ok(Self::Large(a, b, c)),
                _ => Err(CommunityError::LargeRange),
            },
            _ => Err(CommunityError::Syntax),
        }
    }
}

impl fmt::Display for Community {
    /// The canonical written form, which is also BIRD's: `65000:100`, `64512:1:2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standard(a, b) => write!(f, "{a}:{b}"),
            Self::Large(a, b, c) => write!(f, "{a}:{b}:{c}"),
        }
    }
}

/// Written forms and how they parse; shared with the admission rules' test.
#[cfg(test)]
pub(crate) const CASES: &[(&str, Result<Community, CommunityError>)] = &[
    ("65000:100", Ok(Community::Standard(65_000, 100))),
    ("0:0", Ok(Community::Standard(0, 0))),
    ("65535:65535", Ok(Community::Standard(65_535, 65_535))),
    ("64512:1:2", Ok(Community::Large(64_512, 1, 2))),
    ("0:0:0", Ok(Community::Large(0, 0, 0))),
    (
        "4294967295:4294967295:4294967295",
        Ok(Community::Large(u32::MAX, u32::MAX, u32::MAX)),
    ),
    ("65536:1", Err(CommunityError::StandardRange)),
    ("1:65536", Err(CommunityError::StandardRange)),
    ("4200000000:1", Err(CommunityError::StandardRange)),
    ("4294967296:1:2", Err(CommunityError::LargeRange)),
    ("1:2:9999999999", Err(CommunityError::LargeRange)),
    ("", Err(CommunityError::Syntax)),
    ("65000", Err(CommunityError::Syntax)),
    ("65000:", Err(CommunityError::Syntax)),
    (":100", Err(CommunityError::Syntax)),
    ("1:2:3:4", Err(CommunityError::Syntax)),
    ("065000:100", Err(CommunityError::Syntax)),
    ("65000:-1", Err(CommunityError::Syntax)),
    ("+1:2", Err(CommunityError::Syntax)),
    (" 1:2", Err(CommunityError::Syntax)),
    ("no-export", Err(CommunityError::Syntax)),
    ("12345678901:1:2", Err(CommunityError::Syntax)),
    ("1.2:3", Err(CommunityError::Syntax)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities_parse_from_their_canonical_written_form_only() {
        for (text, want) in CASES {
            assert_eq!(text.parse::<Community>(), *want, "{text:?}");
        }
    }

    #[test]
    fn communities_display_as_they_are_written() {
        for (text, parsed) in CASES {
            if let Ok(community) = parsed {
                assert_eq!(community.to_string(), *text);
            }
        }
        let longest = "4294967295:4294967295:4294967295";
        assert_eq!(longest.len(), MAX_COMMUNITY_LENGTH);
    }
}
