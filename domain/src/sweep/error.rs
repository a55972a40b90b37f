use crate::codes::Code;
/// Why a sweep command was refused. `code` is the userError code the API returns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SweepError {
    /// An input field failed a check (`field` names it).
    #[error("{field}: {message}")]
    Invalid {
        /// The input field (`targets[2]`, `ports`, ...).
        field: String,
        /// `INVALID`, `OUT_OF_RANGE`, `PREFIX_TOO_SHORT`, `TOO_MANY_HOSTS`, `TOO_MANY_RANGES`,
        /// `TOO_MANY_PORTS`, `NOT_ALLOWED` or `NO_HOSTS`.
        code: Code,
        /// For humans.
        message: String,
    },
    /// No such run.
    #[error("sweep run not found")]
    NotFound,
    /// The run has ended and cannot be cancelled.
    #[error("the run has already ended ({0})")]
    AlreadyEnded(&'static str),
    /// The subject used this idempotency key for a different request within the key's window
    /// (or the run id belongs to another subject's key).
    #[error("this idempotencyKey was used for a different request; use a new key")]
    IdempotencyKeyReused,
}

impl SweepError {
    /// The userError code.
    pub fn code(&self) -> Code {
        match self {
            SweepError::Invalid { code, .. } => *code,
            SweepError::NotFound => Code::NotFound,
            SweepError::AlreadyEnded(_) => Code::AlreadyEnded,
            SweepError::IdempotencyKeyReused => Code::IdempotencyKeyReused,
        }
    }

    /// The input field it is about.
    pub fn field(&self) -> Option<&str> {
        match self {
            SweepError::Invalid { field, .. } => Some(field),
            SweepError::NotFound | SweepError::AlreadyEnded(_) => Some("id"),
            SweepError::IdempotencyKeyReused => Some("idempotencyKey"),
        }
    }
}
