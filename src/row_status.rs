//! [`RowStatus`]: the outcome of one input row, the output's `status` column.
//!
//! Every input row appears in the output exactly once, with one of these statuses; only `ok`
//! rows were seen by the adapter.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What happened to one input row.
///
/// ```
/// use cliptta::RowStatus;
/// assert_eq!(RowStatus::TooLarge.as_str(), "too_large");
/// assert_eq!("fetch_error".parse::<RowStatus>().unwrap(), RowStatus::FetchError);
/// assert!(RowStatus::failures().iter().all(|s| *s != RowStatus::Ok));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// Predicted.
    Ok,
    /// The object could not be read from its store (error, timeout, not in the store).
    FetchError,
    /// The bytes are not a decodable image (empty, unknown format, corrupt, truncated).
    DecodeError,
    /// Over a configured limit (`max_bytes`, `max_pixels`, `max_dimension`) or the decoder's.
    TooLarge,
    /// The image (or location) column is null.
    NullInput,
    /// Anything else (a preprocessing failure on one image).
    Error,
}

const ALL: [RowStatus; 6] = [
    RowStatus::Ok,
    RowStatus::FetchError,
    RowStatus::DecodeError,
    RowStatus::TooLarge,
    RowStatus::NullInput,
    RowStatus::Error,
];

impl RowStatus {
    /// Every status, `ok` first, in the order the docs list them.
    pub fn all() -> &'static [RowStatus] {
        &ALL
    }

    /// Every status but `ok`.
    pub fn failures() -> &'static [RowStatus] {
        &ALL[1..]
    }

    /// The value in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::FetchError => "fetch_error",
            Self::DecodeError => "decode_error",
            Self::TooLarge => "too_large",
            Self::NullInput => "null_input",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for RowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `status` value that is not one of [`RowStatus::all`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a row status (expected one of ok, fetch_error, decode_error, too_large, null_input, error)")]
pub struct UnknownRowStatus(pub String);

impl FromStr for RowStatus {
    type Err = UnknownRowStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.iter().copied().find(|r| r.as_str() == s).ok_or_else(|| UnknownRowStatus(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for s in RowStatus::all() {
            assert_eq!(s.as_str().parse::<RowStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        let mut names: Vec<&str> = RowStatus::all().iter().map(|s| s.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), 6);
        assert!("mystery".parse::<RowStatus>().is_err());
    }

    /// The statuses documented with the output columns (src/sql/schema.rs) are exactly these.
    #[test]
    fn documented_statuses_are_all() {
        let doc = include_str!("sql/schema.rs");
        let line = doc.lines().find(|l| l.starts_with("//! | `status`")).expect("status row in schema.rs docs");
        let documented: Vec<&str> = line.split('`').skip(3).step_by(2).collect();
        let all: Vec<&str> = RowStatus::all().iter().map(|s| s.as_str()).collect();
        assert_eq!(documented, all, "{line}");
    }
}
