//! The one error path: domain and executor errors become userErrors (expected failures) or a
//! GraphQL error with `extensions.code` (logged once, here).

use async_graphql::{ErrorExtensions, SimpleObject};
use corral_domain::codes::Code;
use corral_domain::group::GroupError;
use corral_domain::membership::MembershipError;
use corral_projections::commands::executor::ExecError;
use corral_projections::commands::CommandError;

use crate::error_codes::ErrorCode;

/// Generates the GraphQL enum of userError codes from the domain's table (one source).
macro_rules! user_error_codes {
    ($($variant:ident => $text:literal, $meaning:literal;)*) => {
        /// The code of an expected failure (`docs/errors.md` lists each).
        #[derive(async_graphql::Enum, Copy, Clone, Debug, PartialEq, Eq)]
        #[graphql(remote = "corral_domain::codes::Code")]
        pub enum UserErrorCode {
            $(#[doc = $meaning] $variant,)*
        }
    };
}

corral_domain::code_table!(user_error_codes);

/// An expected failure, returned in a payload.
#[derive(Debug, Clone, PartialEq, Eq, SimpleObject)]
pub struct UserError {
    /// The input field at fault, when there is one.
    pub field: Option<String>,
    /// What went wrong, for humans.
    pub message: String,
    /// Stable machine-readable code (`NAME_TAKEN`, `VERSION_CONFLICT`, ...).
    pub code: UserErrorCode,
}

impl UserError {
    /// A userError.
    pub fn new(field: Option<&str>, code: Code, message: impl Into<String>) -> Self {
        Self {
            field: field.map(str::to_string),
            message: message.into(),
            code: code.into(),
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

/// A refusal from an aggregate: its stable code and field, or (no code) a failure that is
/// not the caller's (a directory could not be read).
pub trait Refusal: std::error::Error {
    /// The userError code; `None` for an internal failure.
    fn code(&self) -> Option<Code>;
    /// The input field at fault.
    fn field(&self) -> Option<&'static str>;
}

impl Refusal for GroupError {
    fn code(&self) -> Option<Code> {
        GroupError::code(self)
    }
    fn field(&self) -> Option<&'static str> {
        GroupError::field(self)
    }
}

impl Refusal for corral_domain::watch::WatchError {
    fn code(&self) -> Option<Code> {
        Some(corral_domain::watch::WatchError::code(self))
    }
    fn field(&self) -> Option<&'static str> {
        corral_domain::watch::WatchError::field(self)
    }
}

impl Refusal for corral_domain::access::AccessError {
    fn code(&self) -> Option<Code> {
        Some(corral_domain::access::AccessError::code(self))
    }
    fn field(&self) -> Option<&'static str> {
        corral_domain::access::AccessError::field(self)
    }
}

impl Refusal for MembershipError {
    fn code(&self) -> Option<Code> {
        MembershipError::code(self)
    }
    fn field(&self) -> Option<&'static str> {
        MembershipError::field(self)
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
        CommandError::Access(e) => from_exec(e),
        CommandError::Role(e) => from_exec(e),
        CommandError::Watch(e) => from_exec(e),
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
            Code::VersionConflict,
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
        ExecError::Domain(e) => match e.code() {
            Some(code) => Ok(UserError::new(e.field(), code, e.to_string())),
            None => Err(internal(e)),
        },
        ExecError::VersionConflict { expected, actual } => Ok(UserError::new(
            Some("expectedVersion"),
            Code::VersionConflict,
            format!("expected version {expected}, but the current version is {actual}"),
        )),
        ExecError::Store(e) => Err(internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_graphql_enum_spells_every_domain_code_as_the_domain_does() {
        for &code in Code::ALL {
            let gql = async_graphql::InputType::to_value(&UserErrorCode::from(code));
            assert_eq!(
                gql,
                async_graphql::Value::Enum(async_graphql::Name::new(code.as_str()))
            );
            assert_eq!(Code::from(UserErrorCode::from(code)), code);
        }
    }
}
