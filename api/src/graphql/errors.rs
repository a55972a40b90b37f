//! The one error path: domain and executor errors become userErrors (expected failures) or a
//! GraphQL error with `extensions.code` (logged once, here).

use async_graphql::{ErrorExtensions, SimpleObject};
use corral_domain::group::GroupError;
use corral_domain::membership::MembershipError;
use corral_projections::commands::CommandError;
use corral_projections::executor::ExecError;

use crate::error_codes::ErrorCode;

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
pub fn coded(code: ErrorCode, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", code.as_str()))
}

/// PostgreSQL's SQLSTATE for a statement cancelled by `statement_timeout` (or a cancel).
const QUERY_CANCELED: &str = "57014";

/// An unexpected failure: logged once, reported as `INTERNAL` without details. A statement
/// that `statement_timeout` cancelled is the caller's expensive question, not a fault:
/// `QUERY_TIMEOUT`, logged at warn.
pub fn internal<E: std::fmt::Display + 'static>(err: E) -> async_graphql::Error {
    let text = err.to_string();
    if timed_out(&err) || text.contains("canceling statement due to statement timeout") {
        tracing::warn!(error = %text, "a statement of a request timed out");
        return coded(
            ErrorCode::QueryTimeout,
            "the database took longer than this server allows for one statement \
             (CORRAL_STATEMENT_TIMEOUT_MS); ask for less: a narrower filter or a smaller page",
        );
    }
    tracing::error!(error = %text, "internal error");
    coded(ErrorCode::Internal, "internal error")
}

/// Whether `err` is a statement cancelled by `statement_timeout`.
fn timed_out(err: &dyn std::any::Any) -> bool {
    let sqlx_err = err.downcast_ref::<sqlx::Error>().or_else(|| match err
        .downcast_ref::<corral_projections::StoreError>(
    ) {
        Some(corral_projections::StoreError::Database(e)) => Some(e),
        _ => None,
    });
    sqlx_err
        .and_then(|e| e.as_database_error())
        .and_then(|d| d.code())
        .is_some_and(|c| c == QUERY_CANCELED)
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

/// Splits a Group or Membership command's error into a userError or an internal error
/// (dashboards and sweep runs map their own refusals).
pub fn from_command(err: CommandError) -> Result<UserError, async_graphql::Error> {
    match err {
        CommandError::Group(e) => from_exec(e),
        CommandError::Membership(e) => from_exec(e),
        CommandError::Dashboard(e) => from_exec_any(e),
        CommandError::Sweep(e) => from_exec_any(e),
    }
}

/// Like [`from_exec`] for aggregates without [`Refusal`] codes of their own here.
fn from_exec_any<E: std::error::Error + 'static>(
    err: ExecError<E>,
) -> Result<UserError, async_graphql::Error> {
    match err {
        ExecError::Domain(e) => Err(internal(e)),
        ExecError::VersionConflict { expected, actual } => Ok(UserError::new(
            Some("expectedVersion"),
            "VERSION_CONFLICT",
            format!("expected version {expected}, but the current version is {actual}"),
        )),
        ExecError::Store(e) => Err(internal(e)),
    }
}

/// Splits an executor error into a userError or an internal error.
pub fn from_exec<E: Refusal + 'static>(
    err: ExecError<E>,
) -> Result<UserError, async_graphql::Error> {
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
