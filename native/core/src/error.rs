//! The crate's one error type; the Python boundary maps it to feedkit's error tree.

use std::fmt;

/// What went wrong, by the Python error it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Bytes that are not what the writer wrote: `IntegrityError`.
    Damaged,
    /// Input a caller gave that feedkit refuses (a producer's table): `ValidationError`.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

impl Error {
    pub fn damaged(message: impl Into<String>) -> Error {
        Error { kind: Kind::Damaged, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error { kind: Kind::Invalid, message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
