//! One error type for the whole DBaaS. Each variant stands for a decision:
//! whether the request may be retried, and which HTTP status it maps to.

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
    /// A message could not be decoded.
    #[error("bad message: {0}")]
    BadMessage(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Fenced { .. })
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) | Error::BadMessage(_) => 400,
            Error::Conflict(_) => 409,
            Error::Unavailable(_) | Error::Fenced { .. } => 503,
            Error::Storage(_) => 500,
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
