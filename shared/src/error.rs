//! Errors callers branch on. Each renders as one line an operator can act on.

use thiserror::Error;

/// Result with renderfleet's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to a fleet or validating its input.
#[derive(Debug, Error)]
pub enum Error {
    /// The job (or another input) is malformed; nothing was written.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// A renderer name that no profile defines.
    #[error("unknown renderer '{name}' (known: {known})")]
    UnknownRenderer { name: String, known: String },
    /// Renderer profile file problems.
    #[error("renderer profiles: {0}")]
    Profiles(String),
    /// Bad command-line or environment configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// No such job.
    #[error("no job with id '{0}'")]
    NoSuchJob(String),
    /// The job is in a state that does not allow the operation.
    #[error("job '{id}' is {state}: {what}")]
    WrongState {
        id: String,
        state: String,
        what: &'static str,
    },
    /// Redis refused our credentials.
    #[error("Redis at {addr} refused the credentials: {detail}")]
    RedisAuth { addr: String, detail: String },
    /// Redis cannot be reached.
    #[error("cannot reach Redis at {addr}: {detail}")]
    RedisUnreachable { addr: String, detail: String },
    /// Any other Redis error.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A reply we could not understand (garbage in a key, or a version mismatch).
    #[error("unexpected data in Redis: {0}")]
    Protocol(String),
}

impl Error {
    /// True when retrying later might help (Redis down or connection lost).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::RedisUnreachable { .. } => true,
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            _ => false,
        }
    }
}
