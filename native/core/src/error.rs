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

/// Boxed, so that a `Result` stays as small as its value on the hot paths (a lookup
/// returns one per msgpack token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    kind: Kind,
    message: String,
}

impl Error {
    #[cold]
    pub fn damaged(message: impl Into<String>) -> Error {
        Error(Box::new(Inner { kind: Kind::Damaged, message: message.into() }))
    }

    pub fn kind(&self) -> &Kind {
        &self.0.kind
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    #[cold]
    pub fn invalid(message: impl Into<String>) -> Error {
        Error(Box::new(Inner { kind: Kind::Invalid, message: message.into() }))
    }

    /// The same error with another message (context added by a caller).
    pub fn with_message(mut self, message: impl Into<String>) -> Error {
        self.0.message = message.into();
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
