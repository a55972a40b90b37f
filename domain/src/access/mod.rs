//! The Subject aggregate: a person or a service account (a poller, a feed, an integrator),
//! the API tokens it holds and the roles it is bound to.
//!
//! Access is part of the event log, so it is hash-chained, audited, time-travels and streams
//! like every other change: who was allowed to do what, and since when, is a question of the
//! log. Secrets never enter it: a token's event carries its id, its public prefix, its owner,
//! its expiry and the bindings it may use; the hash of its secret is kept apart
//! (`access_token_secrets`), written before the event and inert until it commits.
//!
//! A binding is a role (`admin`, `operator`, `viewer`, `auditor`) with a scope: global, or a
//! group, which reaches the group's whole subtree. A token uses the bindings it lists that its
//! subject still holds when a request arrives, so revoking a binding takes it from every token
//! at once.

mod aggregate;
mod error;
mod events;
pub mod roles;

pub use aggregate::{Subject, TokenState};
pub use error::AccessError;
pub use events::{AccessCommand, AccessEvent, Binding};
pub use roles::{role_id, valid_role_name, RoleCommand, RoleDefinition, RoleEvent, PERMISSIONS};

use uuid::Uuid;

/// The roles built into Corral, from the most to the least powerful.
pub const BUILT_IN_ROLES: [&str; 4] = ["admin", "operator", "viewer", "auditor"];

/// Longest subject name, in characters.
pub const MAX_SUBJECT_CHARS: usize = 128;

/// Most bindings one subject holds (and one token lists).
pub const MAX_BINDINGS: usize = 1_000;

/// Most live (not revoked, not expired) tokens of one subject.
pub const MAX_LIVE_TOKENS: usize = 100;

/// Longest revocation reason, in characters.
pub const MAX_REASON_CHARS: usize = 1_000;

/// The namespace of subject aggregate ids (UUIDv5 of the subject's name).
const SUBJECT_NAMESPACE: Uuid = Uuid::from_u128(0x6c0f_d3b1_5a0e_4c4e_9d59_3c3a_b0a1_c0a1);

/// The aggregate id of subject `name` (a UUIDv5 of the name as given, after trimming).
pub fn subject_id(name: &str) -> Uuid {
    Uuid::new_v5(&SUBJECT_NAMESPACE, name.trim().as_bytes())
}

/// Checks and trims a subject name: 1 to [`MAX_SUBJECT_CHARS`] characters, no control
/// characters.
pub fn valid_subject(raw: &str) -> Result<String, AccessError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_SUBJECT_CHARS {
        return Err(AccessError::invalid(
            "subject",
            format!("a subject is 1 to {MAX_SUBJECT_CHARS} characters"),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(AccessError::invalid(
            "subject",
            format!("control character U+{:04X} in the subject", c as u32),
        ));
    }
    Ok(name.to_string())
}

/// Whether `role` is a built-in role.
pub fn known_role(role: &str) -> bool {
    BUILT_IN_ROLES.contains(&role)
}

#[cfg(test)]
mod tests;
