//! 64-bit Snowflake IDs, serialized as decimal strings (JavaScript cannot hold 64 bits).
//!
//! Every ID is in `0..=i64::MAX` ([`Id::MAX`]): Snowflakes have 63 bits, and both stores keep
//! IDs in signed 64-bit columns (SQLite `INTEGER`, PostgreSQL `bigint`). Parsing
//! ([`FromStr`](std::str::FromStr), [`Deserialize`]) refuses anything larger, so a client's
//! `18446744073709551615` is a `bad_request` at the edge instead of wrapping to `-1` in a
//! query (or failing PostgreSQL's cast).

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A user, channel, message or attachment ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(pub u64);

impl Id {
    /// The largest ID there can be: `i64::MAX` (9223372036854775807).
    pub const MAX: Id = Id(i64::MAX as u64);

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The ID as a signed 64-bit integer (how the stores keep it); `None` above [`Id::MAX`],
    /// which only an ID built in code (not parsed) can be.
    pub const fn to_i64(self) -> Option<i64> {
        if self.0 <= i64::MAX as u64 {
            Some(self.0 as i64)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a string is not an ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseIdError {
    /// Not a string of 1 to 19 plain ASCII digits.
    Syntax,
    /// Digits, but above [`Id::MAX`].
    OutOfRange,
}

impl std::fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseIdError::Syntax => f.write_str("an ID is a string of decimal digits"),
            ParseIdError::OutOfRange => {
                f.write_str("an ID is at most 9223372036854775807 (2^63 - 1)")
            }
        }
    }
}

impl std::error::Error for ParseIdError {}

impl std::str::FromStr for Id {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only plain ASCII digits: no sign, no spaces, no leading `+`.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseIdError::Syntax);
        }
        // Any run of digits that does not fit is out of range (leading zeros included).
        match s.parse::<u64>() {
            Ok(n) if n <= Id::MAX.0 => Ok(Id(n)),
            _ => Err(ParseIdError::OutOfRange),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = itoa_buf(self.0);
        serializer.serialize_str(buf.as_str())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Id;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an ID as a decimal string of at most 9223372036854775807")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse().map_err(|e| match e {
                    ParseIdError::OutOfRange => E::custom(format_args!(
                        "ID {} is out of range: {e}",
                        v.chars().take(40).collect::<String>()
                    )),
                    ParseIdError::Syntax => E::invalid_value(de::Unexpected::Str(v), &self),
                })
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Decimal digits of `n` without allocating.
struct DecimalBuf {
    bytes: [u8; 20],
    start: usize,
}

impl DecimalBuf {
    fn as_str(&mut self) -> &str {
        // Only ASCII digits were written.
        std::str::from_utf8(&self.bytes[self.start..]).unwrap_or("0")
    }
}

fn itoa_buf(mut n: u64) -> DecimalBuf {
    let mut bytes = [0u8; 20];
    let mut i = bytes.len();
    loop {
        i -= 1;
        bytes[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    DecimalBuf { bytes, start: i }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_a_decimal_string() {
        for n in [0, 1, 42, i64::MAX as u64] {
            let json = serde_json::to_string(&Id(n)).unwrap();
            assert_eq!(json, format!("\"{n}\""));
            assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), Id(n));
        }
    }

    #[test]
    fn rejects_numbers_and_junk() {
        for bad in [
            "42",
            "\"\"",
            "\"-1\"",
            "\"+1\"",
            "\" 1\"",
            "\"1e3\"",
            "\"18446744073709551616\"",
            "\"9223372036854775808\"",
            "\"18446744073709551615\"",
            "\"99999999999999999999999999\"",
            "null",
        ] {
            assert!(
                serde_json::from_str::<Id>(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn ids_stop_at_i64_max() {
        assert_eq!("9223372036854775807".parse::<Id>(), Ok(Id::MAX));
        assert_eq!(Id::MAX.to_i64(), Some(i64::MAX));
        assert_eq!(Id(u64::MAX).to_i64(), None);
        for big in [
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
        ] {
            assert_eq!(big.parse::<Id>(), Err(ParseIdError::OutOfRange), "{big}");
            let e = serde_json::from_str::<Id>(&format!("\"{big}\"")).unwrap_err();
            assert!(e.to_string().contains("out of range"), "{e}");
        }
        assert_eq!("00042".parse::<Id>(), Ok(Id(42)));
        assert_eq!("".parse::<Id>(), Err(ParseIdError::Syntax));
        assert_eq!("-1".parse::<Id>(), Err(ParseIdError::Syntax));
    }
}
