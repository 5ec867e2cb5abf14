//! [`Secret`]: a configuration value that never prints (session and cluster secrets,
//! database and Redis URLs with their passwords, S3 keys).
//!
//! `Debug` and `Display` write `[redacted]`, so a struct that holds one can derive `Debug`
//! and be logged whole; the value is read with [`Secret::expose`], at the one place it is
//! handed to the library that needs it.

use std::fmt;

/// A value that prints as `[redacted]`; [`Secret::expose`] reads it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself: hand it to the library that needs it, never to a log line.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// Any text is a secret; clap parses keys of this type through it.
impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_redacted_and_exposes_its_value() {
        let s = Secret::from("hunter2-hunter2");
        assert_eq!(
            format!("{s:?} {s} {s:#?}"),
            "[redacted] [redacted] [redacted]"
        );
        assert_eq!(s.expose(), "hunter2-hunter2");
        let nested = Some(Secret::new(vec![1, 2, 3]));
        assert_eq!(format!("{nested:?}"), "Some([redacted])");
    }
}
