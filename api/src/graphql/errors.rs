//! The one error path: domain and executor errors become userErrors (expected failures) or a
//! GraphQL error with `extensions.code` (logged once, here).

use async_graphql::{ErrorExtensions, SimpleObject};
use corral_domain::group::GroupError;
use corral_domain::membership::MembershipError;
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

/// A refusal from an aggregate: its stable code and field, or an internal failure.
pub trait Refusal: std::error::Error {
    /// The userError code.
    fn code(&self) -> &'static str;
    /// The input field at fault.
    fn field(&self) -> Option<&'static str>;
    /// The failure is not the caller's (a directory could not be read).
    fn internal(&self) -> bool;
}

impl Refusal for GroupError {
    fn code(&self) -> &'static str {
        GroupError::code(self)
    }
    fn field(&self) -> Option<&'static str> {
        GroupError::field(self)
    }
    fn internal(&self) -> bool {
        matches!(self, GroupError::Directory(_))
    }
}

impl Refusal for MembershipError {
    fn code(&self) -> &'static str {
        MembershipError::code(self)
    }
    fn field(&self) -> Option<&'static str> {
        MembershipError::field(self)
    }
    fn internal(&self) -> bool {
        matches!(self, MembershipError::Directory(_))
    }
}

/// Splits an executor error into a userError or an internal error.
pub fn from_exec<E: Refusal>(err: ExecError<E>) -> Result<UserError, async_graphql::Error> {
    match err {
        ExecError::Domain(e) if e.internal() => Err(internal(e)),
        ExecError::Domain(e) => Ok(UserError::new(e.field(), e.code(), e.to_string())),
        ExecError::VersionConflict { expected, actual } => Ok(UserError::new(
            Some("expectedVersion"),
            "VERSION_CONFLICT",
            format!("expected version {expected}, but the current version is {actual}"),
        )),
        ExecError::Store(e) => Err(internal(e)),
    }
}
