//! Validated model names and versions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a model name or version was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty or longer than [`ModelName::MAX_LEN`].
    #[error("model name must be 1 to {max} characters long, got {len}", max = ModelName::MAX_LEN)]
    Length {
        /// The length that was given.
        len: usize,
    },
    /// The name contains a character outside `[A-Za-z0-9_.-]` or does not start with a letter or digit.
    #[error(
        "model name {name:?} is not allowed: use letters, digits, '_', '-' and '.', starting with a letter or digit"
    )]
    Characters {
        /// The refused name.
        name: String,
    },
    /// The version is not a positive integer.
    #[error("model version {given:?} is not a positive integer")]
    Version {
        /// The refused version text.
        given: String,
    },
}

/// A model name that is safe to use in URLs, file paths and metric labels.
///
/// Names are 1–128 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit, so that no name can escape a
/// directory (`..`, `/`) or break a label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

impl ModelName {
    /// Longest accepted name.
    pub const MAX_LEN: usize = 128;

    /// Validates `name`.
    ///
    /// # Errors
    /// [`NameError`] when the name is empty, too long or has a character outside the allowed set.
    pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
        let name = name.into();
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(NameError::Length { len: name.len() });
        }
        let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !first_ok || !rest_ok {
            return Err(NameError::Characters { name });
        }
        Ok(Self(name))
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ModelName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ModelName> for String {
    fn from(value: ModelName) -> Self {
        value.0
    }
}

impl AsRef<str> for ModelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A model version: a positive integer, written as decimal text on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelVersion(u64);

impl ModelVersion {
    /// Wraps `v`.
    ///
    /// # Errors
    /// [`NameError::Version`] when `v` is zero.
    pub fn new(v: u64) -> Result<Self, NameError> {
        if v == 0 {
            return Err(NameError::Version { given: "0".into() });
        }
        Ok(Self(v))
    }

    /// The number.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for ModelVersion {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Digits only: no sign, no whitespace, no leading '+', so "1" and "01" are the only spellings of one.
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NameError::Version { given: s.chars().take(40).collect() });
        }
        let v: u64 = s.parse().map_err(|_| NameError::Version { given: s.to_owned() })?;
        Self::new(v).map_err(|_| NameError::Version { given: s.to_owned() })
    }
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_a_path_are_refused() {
        for bad in ["", "..", "../x", "a/b", "a\\b", ".hidden", "-x", "a b", "é", &"x".repeat(129)] {
            assert!(ModelName::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["iris", "mlp_classifier", "a.b-c_1", "9lives"] {
            assert_eq!(ModelName::new(good).map(|n| n.to_string()), Ok(good.to_string()));
        }
    }

    #[test]
    fn versions_are_positive_decimal_integers() {
        assert_eq!("3".parse::<ModelVersion>().map(ModelVersion::get), Ok(3));
        for bad in ["0", "-1", "+1", " 1", "1.0", "", "abc", "99999999999999999999"] {
            assert!(bad.parse::<ModelVersion>().is_err(), "{bad:?} accepted");
        }
    }
}
