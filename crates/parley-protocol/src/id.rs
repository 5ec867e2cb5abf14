//! 64-bit Snowflake IDs, serialized as decimal strings (JavaScript cannot hold 64 bits).

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A user, channel, message or attachment ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(pub u64);

impl Id {
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a string is not an ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError;

impl std::fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an ID is a decimal string of a 64-bit unsigned integer")
    }
}

impl std::error::Error for ParseIdError {}

impl std::str::FromStr for Id {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only plain ASCII digits: no sign, no spaces, no leading `+`.
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseIdError);
        }
        s.parse::<u64>().map(Id).map_err(|_| ParseIdError)
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
                f.write_str("an ID as a decimal string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
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
        for n in [0, 1, 42, u64::MAX] {
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
            "null",
        ] {
            assert!(
                serde_json::from_str::<Id>(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
