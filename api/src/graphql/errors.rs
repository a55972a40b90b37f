//! The one error path: domain and executor errors become userErrors (expected failures) or a
//! GraphQL error with `extensions.code` (logged once, here).

use async_graphql::{ErrorExtensions, SimpleObject};
use corral_domain::group::GroupError;
use corral_projections::executor::ExecError;

/// An expected failure, returned in a payload.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct UserError {
    /// The input field at fault, when there is one.
    pub field: Option<String>,
    /// What went wrong, for humans.
    pub message: String,
    /// Stable machine-readable code (`NAME_TAKEN`, `VERSION_CONFLICT`, ...).
    pub code: String,
}

impl UserError {
    /// A userError.
    pub fn new(field: Option<&str>, code: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.map(str::to_string),
            message: message.into(),
            code: code.to_string(),
        }
    }
}

/// A GraphQL error with a code.
pub fn coded(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

/// An unexpected failure: logged once, reported as `INTERNAL` without details.
pub fn internal(err: impl std::fmt::Display) -> async_graphql::Error {
    tracing::error!(error = %err, "internal error");
    coded("INTERNAL", "internal error")
}

/// Splits an executor error into a userError or an internal error.
pub fn from_exec(err: ExecError<GroupError>) -> Result<UserError, async_graphql::Error> {
    match err {
        ExecError::Domain(GroupError::Directory(e)) => Err(internal(e)),
        ExecError::Domain(e) => Ok(UserError::new(e.field(), e.code(), e.to_string())),
        ExecError::VersionConflict { expected, actual } => Ok(UserError::new(
            Some("expectedVersion"),
            "VERSION_CONFLICT",
            format!("expected version {expected}, but the current version is {actual}"),
        )),
        ExecError::Store(e) => Err(internal(e)),
    }
}
