use crate::codes::Code;
use uuid::Uuid;

/// Why an access command was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccessError {
    /// An input is malformed (`field` names it).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The subject has no token of this id.
    #[error("no token {0}")]
    TokenNotFound(Uuid),
    /// A token of this id exists already.
    #[error("token {0} exists already")]
    TokenExists(Uuid),
    /// The subject holds the most bindings, or live tokens, it may.
    #[error("{what}: at most {max}")]
    TooMany { what: &'static str, max: usize },
}

impl AccessError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        AccessError::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The stable userError code.
    pub fn code(&self) -> Code {
        match self {
            AccessError::Invalid { .. } => Code::Invalid,
            AccessError::TokenNotFound(_) => Code::NotFound,
            AccessError::TokenExists(_) => Code::AlreadyExists,
            AccessError::TooMany { .. } => Code::TooMany,
        }
    }

    /// The input field the error is about, when there is one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            AccessError::Invalid { field, .. } => Some(*field),
            AccessError::TokenNotFound(_) | AccessError::TokenExists(_) => Some("token"),
            AccessError::TooMany { what, .. } => Some(what),
        }
    }
}
