//! The load generator's errors: a flag that does not make sense, a system
//! that cannot be reached or fails every request, or a failure of the load
//! generator itself.

use std::fmt;

/// What can stop a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A flag, or a combination of flags, that cannot be run.
    Usage(String),
    /// The system (or the broker of `amqp-echo`) is not reachable or did
    /// not answer as it should.
    Unavailable(String),
    /// The load generator itself failed: a part of its own (its runtime,
    /// its HTTP client, a thread) could not start, or a task ended early.
    Internal(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A usage error.
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => f.write_str(msg),
            Error::Unavailable(msg) => write!(f, "unavailable: {msg}"),
            Error::Internal(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}
