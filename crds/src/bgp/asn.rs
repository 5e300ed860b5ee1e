//! AS numbers: which ones a node or a router may use, and the words that explain a refusal.
//!
//! One table, [`RESERVED`], feeds both the admission rules of `routed.bgp.asn` and
//! `routed.bgp.peers[].asn` (built in [`crate::v1alpha1::bgp_rules`]) and [`check`], which the
//! agent runs on the AS a node label gives it (admission never sees labels) and on specs stored
//! before the rules existed.

use std::fmt;

/// An AS number no AS may use, with the document that reserves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedAsn {
    /// The number.
    pub asn: u32,
    /// Why, for "is reserved (...)": "AS_TRANS, RFC 6793".
    pub why: &'static str,
}

/// The AS numbers that are refused although they are in 1-4294967295.
pub const RESERVED: [ReservedAsn; 3] = [
    ReservedAsn {
        asn: 23_456,
        why: "AS_TRANS, RFC 6793",
    },
    ReservedAsn {
        asn: 65_535,
        why: "RFC 7300",
    },
    ReservedAsn {
        asn: 4_294_967_295,
        why: "RFC 7300",
    },
];

/// What to use instead of a refused AS number; ends every refusal.
pub const ADVICE: &str =
    "use a private AS number from 64512-65534 or 4200000000-4294967294, or one assigned to you";

/// The sentence after "is reserved (...): " in every reserved-ASN refusal, naming them all.
#[must_use]
pub fn reserved_advice() -> String {
    let numbers: Vec<String> = RESERVED.iter().map(|r| r.asn.to_string()).collect();
    let (last, rest) = numbers
        .split_last()
        .map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
    format!(
        "AS numbers {} and {last} cannot be used; {ADVICE}",
        rest.join(", ")
    )
}

/// Why a value is not a usable AS number; displays as a phrase following the value
/// ("65535 is reserved ...").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsnProblem {
    /// Not a decimal number at all (a node label's value).
    NotANumber,
    /// Outside 1-4294967295.
    OutOfRange,
    /// One of [`RESERVED`].
    Reserved(ReservedAsn),
}

impl fmt::Display for AsnProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotANumber => write!(
                f,
                "is not an AS number: write it as one decimal number (asplain, e.g. 4200000001); {ADVICE}"
            ),
            Self::OutOfRange => write!(f, "is not in 1-4294967295: {ADVICE}"),
            Self::Reserved(r) => write!(f, "is reserved ({}): {}", r.why, reserved_advice()),
        }
    }
}

/// `value` as an AS number a speaker may use.
///
/// # Errors
/// When it is outside 1-4294967295 or reserved.
pub fn check(value: i64) -> Result<u32, AsnProblem> {
    let asn = u32::try_from(value)
        .ok()
        .filter(|a| *a != 0)
        .ok_or(AsnProblem::OutOfRange)?;
    match RESERVED.iter().find(|r| r.asn == asn) {
        Some(reserved) => Err(AsnProblem::Reserved(*reserved)),
        None => Ok(asn),
    }
}

/// A node label's value as an AS number: decimal digits only (no sign, no spaces, no asdot),
/// then [`check`].
///
/// # Errors
/// When it is not a decimal number, or [`check`] refuses it.
pub fn parse(text: &str) -> Result<u32, AsnProblem> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AsnProblem::NotANumber);
    }
    // More than 10 digits cannot be an AS number; parse as i64 only what fits.
    let value = text.parse::<i64>().map_err(|_| AsnProblem::OutOfRange)?;
    check(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_numbers_are_checked_against_the_range_and_the_reserved_ones() {
        let cases: &[(i64, Result<u32, AsnProblem>)] = &[
            (1, Ok(1)),
            (64_512, Ok(64_512)),
            (65_534, Ok(65_534)),
            (65_536, Ok(65_536)),
            (4_294_967_294, Ok(4_294_967_294)),
            (0, Err(AsnProblem::OutOfRange)),
            (-1, Err(AsnProblem::OutOfRange)),
            (4_294_967_296, Err(AsnProblem::OutOfRange)),
            (23_456, Err(AsnProblem::Reserved(RESERVED[0]))),
            (65_535, Err(AsnProblem::Reserved(RESERVED[1]))),
            (4_294_967_295, Err(AsnProblem::Reserved(RESERVED[2]))),
        ];
        for (value, want) in cases {
            assert_eq!(check(*value), *want, "{value}");
        }
    }

    #[test]
    fn label_values_are_plain_decimal_numbers() {
        let cases: &[(&str, Result<u32, AsnProblem>)] = &[
            ("65001", Ok(65_001)),
            ("4200000001", Ok(4_200_000_001)),
            ("064512", Ok(64_512)),
            ("", Err(AsnProblem::NotANumber)),
            ("AS65001", Err(AsnProblem::NotANumber)),
            ("1.10", Err(AsnProblem::NotANumber)),
            ("+65001", Err(AsnProblem::NotANumber)),
            ("-1", Err(AsnProblem::NotANumber)),
            (" 65001", Err(AsnProblem::NotANumber)),
            ("0", Err(AsnProblem::OutOfRange)),
            ("4294967296", Err(AsnProblem::OutOfRange)),
            ("99999999999999999999", Err(AsnProblem::OutOfRange)),
            ("65535", Err(AsnProblem::Reserved(RESERVED[1]))),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), *want, "{text:?}");
        }
    }

    #[test]
    fn every_refusal_says_what_to_use_instead() {
        for problem in [
            AsnProblem::NotANumber,
            AsnProblem::OutOfRange,
            AsnProblem::Reserved(RESERVED[0]),
        ] {
            assert!(problem.to_string().ends_with(ADVICE), "{problem}");
        }
        assert_eq!(
            AsnProblem::Reserved(RESERVED[0]).to_string(),
            format!(
                "is reserved (AS_TRANS, RFC 6793): AS numbers 23456, 65535 and 4294967295 cannot be used; {ADVICE}"
            )
        );
    }
}
