//! One error type for the whole DBaaS. Each variant stands for a decision:
//! whether the request may be retried, and which HTTP status it maps to.
//!
//! [`Error::status`] is the one table of HTTP statuses: every server
//! answers an error by it (`http::common::from_error`). A RideShare handler
//! that the contract makes answer otherwise (a taken username is 400, not
//! 409) maps that one error itself, where it knows what the error means.
//!
//! The enum is bincode-encoded in replies on the queues: new variants go at
//! the end, so that the existing ones keep their encoding.

use bincode::{Decode, Encode};

/// Everything that can go wrong serving a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Encode, Decode)]
pub enum Error {
    /// The request is malformed or does not fit the schema (400).
    #[error("{0}")]
    BadRequest(String),
    /// The write conflicts with the data, e.g. a duplicate key (409).
    #[error("{0}")]
    Conflict(String),
    /// No worker could serve the request in time; retrying may help (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write carried an epoch older than the master's (a deposed master or
    /// a stale orchestrator); retried against the current master.
    #[error("fenced: epoch {got} is older than {current}")]
    Fenced { got: u64, current: u64 },
    /// Storage failed underneath a worker (500).
    #[error("storage: {0}")]
    Storage(String),
    /// A message from a queue could not be decoded (500: HTTP bodies that
    /// do not parse are `BadRequest`, so this is never the client's fault).
    #[error("bad message: {0}")]
    BadMessage(String),
    /// A precondition of a batch (`require`) did not hold on the master, so
    /// the batch wrote nothing (412). The message says which one.
    #[error("{0}")]
    Precondition(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Fenced { .. })
    }

    /// The HTTP status this error is answered with: the one table every
    /// server uses.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Conflict(_) => 409,
            Error::Precondition(_) => 412,
            Error::Unavailable(_) | Error::Fenced { .. } => 503,
            Error::Storage(_) | Error::BadMessage(_) => 500,
        }
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

/// A local I/O failure (files, sockets of our own servers).
impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<bincode::error::DecodeError> for Error {
    fn from(e: bincode::error::DecodeError) -> Self {
        Error::BadMessage(e.to_string())
    }
}

impl From<bincode::error::EncodeError> for Error {
    fn from(e: bincode::error::EncodeError) -> Self {
        Error::Storage(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_status_and_retryability() {
        let m = || "m".to_owned();
        for (e, status, retryable) in [
            (Error::BadRequest(m()), 400, false),
            (Error::Conflict(m()), 409, false),
            (Error::Precondition(m()), 412, false),
            (Error::Unavailable(m()), 503, true),
            (Error::Fenced { got: 1, current: 2 }, 503, true),
            (Error::Storage(m()), 500, false),
            (Error::BadMessage(m()), 500, false),
        ] {
            assert_eq!(e.status(), status, "{e:?}");
            assert_eq!(e.is_retryable(), retryable, "{e:?}");
        }
    }

    #[test]
    fn existing_variants_keep_their_encoding() {
        // Replies cross the queues bincode-encoded: a variant's index is its
        // tag, so variants are only ever added at the end.
        let config = bincode::config::standard();
        for (e, tag) in [
            (Error::BadRequest(String::new()), 0u8),
            (Error::BadMessage(String::new()), 5),
            (Error::Precondition(String::new()), 6),
        ] {
            let bytes = bincode::encode_to_vec(&e, config).unwrap_or_default();
            assert_eq!(bytes.first(), Some(&tag), "{e:?}");
        }
    }
}
