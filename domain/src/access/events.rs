use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A role with its scope: global (`scope` null) or a group, reaching its whole subtree.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub struct Binding {
    /// `admin`, `operator`, `viewer` or `auditor`.
    pub role: String,
    /// The group whose subtree the role applies to; null: everywhere.
    pub scope: Option<Uuid>,
}

impl Binding {
    /// A global binding of `role`.
    pub fn global(role: &str) -> Self {
        Binding {
            role: role.to_string(),
            scope: None,
        }
    }
}

/// What happened to a subject's access. Never carries a token's secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub enum AccessEvent {
    /// The subject appeared (with its first token or binding).
    SubjectCreated {
        /// Its name, as tokens and the audit trail show it.
        subject: String,
    },
    /// The subject was bound to a role.
    RoleGranted {
        /// The role and its scope.
        binding: Binding,
    },
    /// A binding was taken away; every token of the subject loses it at once.
    RoleRevoked {
        /// The role and its scope.
        binding: Binding,
    },
    /// A token was issued.
    TokenCreated {
        /// Its id.
        token_id: Uuid,
        /// The first characters of the secret (`crl_` and 8 hex digits), to recognize it by.
        prefix: String,
        /// The bindings it may use (those of them its subject holds at each request).
        bindings: Vec<Binding>,
        /// When it stops working (RFC 3339); null: never.
        #[schemars(with = "Option<String>")]
        expires_at: Option<DateTime<Utc>>,
    },
    /// A token was revoked; it stops working at once on every process.
    TokenRevoked {
        /// Its id.
        token_id: Uuid,
        /// Why, as the revoking admin said (may be null).
        reason: Option<String>,
    },
    /// A token passed its expiry (it stopped working then; this records it).
    TokenExpired {
        /// Its id.
        token_id: Uuid,
    },
}

impl AccessEvent {
    /// `SubjectCreated`.
    pub const SUBJECT_CREATED: &'static str = "SubjectCreated";
    /// `RoleGranted`.
    pub const ROLE_GRANTED: &'static str = "RoleGranted";
    /// `RoleRevoked`.
    pub const ROLE_REVOKED: &'static str = "RoleRevoked";
    /// `TokenCreated`.
    pub const TOKEN_CREATED: &'static str = "TokenCreated";
    /// `TokenRevoked`.
    pub const TOKEN_REVOKED: &'static str = "TokenRevoked";
    /// `TokenExpired`.
    pub const TOKEN_EXPIRED: &'static str = "TokenExpired";
    /// Every event type, in declaration order.
    pub const TYPES: [&'static str; 6] = [
        Self::SUBJECT_CREATED,
        Self::ROLE_GRANTED,
        Self::ROLE_REVOKED,
        Self::TOKEN_CREATED,
        Self::TOKEN_REVOKED,
        Self::TOKEN_EXPIRED,
    ];

    /// The event type's name.
    pub fn name(&self) -> &'static str {
        match self {
            AccessEvent::SubjectCreated { .. } => Self::SUBJECT_CREATED,
            AccessEvent::RoleGranted { .. } => Self::ROLE_GRANTED,
            AccessEvent::RoleRevoked { .. } => Self::ROLE_REVOKED,
            AccessEvent::TokenCreated { .. } => Self::TOKEN_CREATED,
            AccessEvent::TokenRevoked { .. } => Self::TOKEN_REVOKED,
            AccessEvent::TokenExpired { .. } => Self::TOKEN_EXPIRED,
        }
    }

    /// The current version of an event type, or `None` for a type this code does not know.
    pub fn current_version(event_type: &str) -> Option<&'static str> {
        Self::TYPES.contains(&event_type).then_some("1")
    }
}

impl DomainEvent for AccessEvent {
    fn event_type(&self) -> String {
        self.name().to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// What may be asked of a subject.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessCommand {
    /// Issue a token; the subject is created, and bound to the token's bindings it does not
    /// hold yet, on the way.
    CreateToken {
        /// The subject's name.
        subject: String,
        /// The new token's id.
        token_id: Uuid,
        /// Its public prefix.
        prefix: String,
        /// The bindings it may use (at least one).
        bindings: Vec<Binding>,
        /// When it expires; null: never.
        expires_at: Option<DateTime<Utc>>,
        /// The time of the request (an expiry must lie after it).
        now: DateTime<Utc>,
    },
    /// Revoke a token (a no-op for a token revoked or expired already).
    RevokeToken {
        /// Its id.
        token_id: Uuid,
        /// Why.
        reason: Option<String>,
    },
    /// Record that a token expired (a no-op unless it is live and past its expiry at `now`).
    ExpireToken {
        /// Its id.
        token_id: Uuid,
        /// The time of the check.
        now: DateTime<Utc>,
    },
    /// Bind the subject to a role (a no-op when it holds the binding).
    GrantRole {
        /// The subject's name.
        subject: String,
        /// The role and its scope.
        binding: Binding,
    },
    /// Take a binding away (a no-op when the subject does not hold it).
    RevokeRole {
        /// The role and its scope.
        binding: Binding,
    },
}
