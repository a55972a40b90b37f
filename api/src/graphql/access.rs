//! Access: who the caller is (`me`, every role), and the admins' tokens (`tokens`,
//! `createToken`, `revokeToken`) and global roles (`grantRole`, `revokeRole`), with the command line's semantics (`corral token`).
//!
//! Tokens are events of their subject (`docs/access.md`): the mutations run `CreateToken` and
//! `RevokeToken` through the write side's entry point with the calling admin in the events'
//! metadata. A secret is answered once, by `createToken`, and kept nowhere; no field returns
//! a secret or its hash. A binding is a role everywhere (`scope: null`) or on one group's
//! subtree; `me` answers the caller's bindings and, for a group, what it may do there.

use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_domain::access::{subject_id, valid_subject, AccessCommand, Binding};
use corral_domain::codes::Code;
use corral_projections::commands::Command;
use sqlx::PgPool;
use uuid::Uuid;

use super::errors::{coded, from_command, internal, UserError};
use super::mutation::{event_metadata, execute};
use crate::auth::{self, Actor, NewToken, PendingToken, TokenError, TokenInfo};
use crate::error_codes::ErrorCode;

/// The default of `tokens(first:)`.
pub const DEFAULT_TOKENS: i32 = 50;

/// Whether a token works.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    /// Neither revoked nor expired.
    Active,
    /// Revoked (`revokedAt`).
    Revoked,
    /// Past its expiry (`expiresAt`), whether or not the expiry is recorded yet.
    Expired,
}

/// A bearer token, without its secret (shown once, by `createToken`, and kept nowhere).
#[derive(SimpleObject, Debug, Clone)]
pub struct Token {
    /// Its id (`revokeToken` takes it, or the prefix).
    pub id: ID,
    /// The first characters of its secret (`crl_` and 8 hex digits), to recognize it by;
    /// `legacy` for tokens created before tokens were events.
    pub prefix: String,
    /// Who it belongs to.
    pub subject: String,
    /// The global roles it lists (it uses those its subject still holds).
    pub roles: Vec<String>,
    /// Every binding it lists, global and scoped (it uses those its subject still holds).
    pub bindings: Vec<RoleBinding>,
    /// Whether it works now.
    pub status: TokenStatus,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working; null: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used (recorded at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl Token {
    fn new(t: TokenInfo, now: DateTime<Utc>) -> Self {
        let status = match t.status(now) {
            "revoked" => TokenStatus::Revoked,
            "expired" => TokenStatus::Expired,
            _ => TokenStatus::Active,
        };
        Token {
            id: ID(t.token_id.to_string()),
            prefix: t.prefix,
            subject: t.subject,
            roles: t
                .bindings
                .iter()
                .filter(|b| !b.contains('@'))
                .cloned()
                .collect(),
            bindings: t
                .bindings
                .iter()
                .map(|b| RoleBinding::from_label(b))
                .collect(),
            status,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// A role binding: a role everywhere, or on one group's subtree.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct RoleBinding {
    /// The role.
    pub role: String,
    /// The group whose subtree it applies to; null: everywhere.
    pub scope: Option<ID>,
}

impl RoleBinding {
    fn from_binding(b: &Binding) -> Self {
        RoleBinding {
            role: b.role.clone(),
            scope: b.scope.map(|s| ID(s.to_string())),
        }
    }

    /// From `role` or `role@group-id`.
    fn from_label(label: &str) -> Self {
        match label.split_once('@') {
            Some((role, scope)) => RoleBinding {
                role: role.to_string(),
                scope: Some(ID(scope.to_string())),
            },
            None => RoleBinding {
                role: label.to_string(),
                scope: None,
            },
        }
    }
}

/// The caller, as its token makes it.
#[derive(SimpleObject, Debug, Clone)]
#[graphql(complex)]
pub struct Me {
    /// The token's subject.
    pub subject: String,
    /// The global roles the token uses now: those it lists that its subject still holds.
    pub roles: Vec<String>,
    /// Every binding the token uses now, global and scoped.
    pub bindings: Vec<RoleBinding>,
    /// The token's id.
    pub token_id: ID,
    /// When the token stops working; null: never.
    pub expires_at: Option<DateTime<Utc>>,
}

#[async_graphql::ComplexObject]
impl Me {
    /// What the caller may do, as permissions of the catalog (`group.read`, `group.edit`,
    /// ...; see `docs/access.md`): on group `groupId` (its subtree's bindings and the global
    /// ones, by the tree as it stands now) or, without it, everywhere (global bindings only).
    /// A UI hides the controls whose permission is missing. A group the caller cannot read
    /// answers no permission.
    async fn permissions(&self, ctx: &Context<'_>, group_id: Option<ID>) -> Result<Vec<String>> {
        let actor = ctx.data::<Actor>()?;
        let table = ctx.data::<std::sync::Arc<crate::policy::Policy>>()?.table();
        let group = match group_id {
            None => None,
            Some(id) => match id.parse::<Uuid>() {
                Ok(id) => Some(id),
                Err(_) => return Ok(vec![]),
            },
        };
        let mut out = vec![];
        for p in crate::permissions::Permission::all() {
            let allowed = match (crate::scope::reach(&table, actor, p), group) {
                (crate::scope::Reach::All, _) => true,
                (_, None) | (crate::scope::Reach::Nothing, _) => false,
                (crate::scope::Reach::Within(_), Some(g)) => {
                    super::scope::allows(ctx, p, g).await?
                }
            };
            if allowed {
                out.push(p.as_str().to_string());
            }
        }
        Ok(out)
    }
}

/// Input of `createToken`.
#[derive(InputObject)]
pub struct CreateTokenInput {
    /// Who the token is for: 1 to 128 characters, no control characters (the subject is
    /// created with its first token).
    pub subject: String,
    /// `admin`, `operator`, `viewer` or `auditor`: granted to the subject (on `scope`) if it
    /// does not hold it.
    pub role: String,
    /// The group whose subtree the token's role applies to; omitted: everywhere.
    pub scope: Option<ID>,
    /// How long it works: `30d`, `12h`, `90m`, `3600s` (1 minute to 10 years); omitted: until
    /// revoked.
    pub expires_in: Option<String>,
    /// Why (kept in the audit trail).
    pub reason: Option<String>,
}

/// The result of `createToken`.
#[derive(SimpleObject, Default)]
pub struct CreateTokenPayload {
    /// The new token (`null` on error).
    pub token: Option<Token>,
    /// Its secret, for `Authorization: Bearer`: shown this once, kept nowhere (only its
    /// hash is stored, and never in the event log).
    pub secret: Option<String>,
    /// Expected failures; nothing was created when this is not empty.
    pub user_errors: Vec<UserError>,
}

/// Input of `revokeToken`.
#[derive(InputObject)]
pub struct RevokeTokenInput {
    /// The token's id, or its prefix when only one token has it.
    pub token: String,
    /// Why (recorded in the event and the audit trail).
    pub reason: Option<String>,
}

/// The result of `revokeToken`.
#[derive(SimpleObject, Default)]
pub struct RevokeTokenPayload {
    /// The token after the change (a token revoked or expired already is left as it is).
    pub token: Option<Token>,
    /// Expected failures.
    pub user_errors: Vec<UserError>,
}

/// Input of `grantRole` and `revokeRole`: a role everywhere, or on one group's subtree.
#[derive(InputObject)]
pub struct RoleInput {
    /// The subject: 1 to 128 characters, no control characters (`grantRole` creates it if it
    /// does not exist).
    pub subject: String,
    /// `admin`, `operator`, `viewer` or `auditor`.
    pub role: String,
    /// The group whose subtree the role applies to (`grantRole`: it must exist); omitted:
    /// the global binding.
    pub scope: Option<ID>,
    /// Why (recorded in the event and the audit trail).
    pub reason: Option<String>,
}

/// The result of `grantRole` and `revokeRole`.
#[derive(SimpleObject, Default)]
pub struct RolePayload {
    /// The subject (`null` on error).
    pub subject: Option<String>,
    /// The global roles the subject holds after the change (empty on error).
    pub roles: Vec<String>,
    /// Every binding the subject holds after the change (empty on error).
    pub bindings: Vec<RoleBinding>,
    /// Expected failures; nothing was written when this is not empty.
    pub user_errors: Vec<UserError>,
}

fn refused_role(e: UserError) -> RolePayload {
    RolePayload {
        user_errors: vec![e],
        ..Default::default()
    }
}

/// The subject and binding of a `grantRole` or `revokeRole`, checked; with `existing`, the
/// scope must be a group of the live tree.
async fn checked_role_input(
    pool: &PgPool,
    input: &RoleInput,
    existing: bool,
) -> Result<std::result::Result<(String, Binding), UserError>> {
    let subject = match valid_subject(&input.subject) {
        Ok(s) => s,
        Err(e) => return Ok(Err(UserError::new(e.field(), e.code(), e.to_string()))),
    };
    if existing {
        match auth::check_role(pool, &input.role).await {
            Ok(()) => {}
            Err(TokenError::Refused(e)) => {
                return Ok(Err(UserError::new(e.field(), e.code(), e.to_string())))
            }
            Err(e) => return Err(internal(e)),
        }
    } else if let Err(e) = corral_domain::access::valid_role_name(&input.role) {
        return Ok(Err(UserError::new(e.field(), e.code(), e.to_string())));
    }
    let scope = match checked_scope(pool, input.scope.as_ref(), existing).await? {
        Ok(scope) => scope,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok((
        subject,
        Binding {
            role: input.role.clone(),
            scope,
        },
    )))
}

/// A `scope` argument: a group id, of a group of the live tree when `existing`.
async fn checked_scope(
    pool: &PgPool,
    scope: Option<&ID>,
    existing: bool,
) -> Result<std::result::Result<Option<Uuid>, UserError>> {
    let Some(scope) = scope else {
        return Ok(Ok(None));
    };
    let Ok(id) = scope.parse::<Uuid>() else {
        return Ok(Err(UserError::new(
            Some("scope"),
            Code::Invalid,
            "scope must be a group id",
        )));
    };
    if existing
        && corral_projections::group_tree::read::by_ids(pool, &[id])
            .await
            .map_err(internal)?
            .is_empty()
    {
        return Ok(Err(UserError::new(
            Some("scope"),
            Code::NotFound,
            format!("no group has the id {id}"),
        )));
    }
    Ok(Ok(Some(id)))
}

/// The bindings `subject` holds, after a change that committed.
async fn roles_after(pool: &PgPool, subject: String) -> Result<RolePayload> {
    let bindings = auth::subject_bindings(pool, &subject)
        .await
        .map_err(internal)?
        .unwrap_or_default();
    Ok(RolePayload {
        subject: Some(subject),
        roles: bindings
            .iter()
            .filter(|b| b.scope.is_none())
            .map(|b| b.role.clone())
            .collect(),
        bindings: bindings.iter().map(RoleBinding::from_binding).collect(),
        user_errors: vec![],
    })
}

fn refused_create(e: UserError) -> CreateTokenPayload {
    CreateTokenPayload {
        user_errors: vec![e],
        ..Default::default()
    }
}

fn refused_revoke(e: UserError) -> RevokeTokenPayload {
    RevokeTokenPayload {
        user_errors: vec![e],
        ..Default::default()
    }
}

/// The token as it stands now, after a change that committed (`None`, logged, if it cannot
/// be read: the change stands).
async fn read_token(pool: &PgPool, token_id: Uuid) -> Option<Token> {
    match auth::token_info(pool, token_id).await {
        Ok(found) => found.map(|t| Token::new(t, Utc::now())),
        Err(e) => {
            tracing::warn!(error = %e, token = %token_id, "could not read a token after changing it");
            None
        }
    }
}

/// Access queries (part of the `Query` root).
#[derive(Default)]
pub struct AccessQuery;

#[Object]
impl AccessQuery {
    /// The caller: its subject, the global roles its token uses now, the token's id and
    /// expiry. Every role may ask.
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let actor = ctx.data::<Actor>()?;
        let Some(token_id) = actor.token_id else {
            return Err(coded(
                ErrorCode::Unauthenticated,
                "this request did not authenticate with a token",
            ));
        };
        Ok(Me {
            subject: actor.subject.clone(),
            roles: actor.roles.clone(),
            bindings: actor
                .roles
                .iter()
                .map(|r| RoleBinding {
                    role: r.clone(),
                    scope: None,
                })
                .chain(actor.scoped.iter().map(|b| RoleBinding {
                    role: b.role.clone(),
                    scope: Some(ID(b.scope.to_string())),
                }))
                .collect(),
            token_id: ID(token_id.to_string()),
            expires_at: actor.expires_at,
        })
    }

    /// Tokens, newest first (admin): of `subject` only when given; revoked and expired ones
    /// only with `includeInactive`; at most `first` (1 to 1000). Never a secret.
    #[graphql(
        complexity = "usize::try_from(first.unwrap_or(DEFAULT_TOKENS).clamp(1, auth::MAX_LIST as i32)).unwrap_or(1) * child_complexity + 1"
    )]
    async fn tokens(
        &self,
        ctx: &Context<'_>,
        subject: Option<String>,
        #[graphql(default_with = "Some(false)")] include_inactive: Option<bool>,
        #[graphql(default_with = "Some(DEFAULT_TOKENS)")] first: Option<i32>,
    ) -> Result<Vec<Token>> {
        let include_inactive = include_inactive.unwrap_or(false);
        let first = first.unwrap_or(DEFAULT_TOKENS);
        if !(1..=auth::MAX_LIST).contains(&i64::from(first)) {
            return Err(coded(
                ErrorCode::BadUserInput,
                format!(
                    "first must be between 1 and {}, got {first}",
                    auth::MAX_LIST
                ),
            ));
        }
        let pool = ctx.data_unchecked::<PgPool>();
        let tokens = auth::list_tokens(pool, subject.as_deref(), include_inactive, first.into())
            .await
            .map_err(internal)?;
        let now = Utc::now();
        Ok(tokens.into_iter().map(|t| Token::new(t, now)).collect())
    }
}

/// Access mutations (part of the `Mutation` root).
#[derive(Default)]
pub struct AccessMutation;

#[Object]
impl AccessMutation {
    /// Creates a token (admin) of `subject` with the global role `role`, as `corral token
    /// create` does; the event names the calling admin. The secret is in the payload, once.
    async fn create_token(
        &self,
        ctx: &Context<'_>,
        input: CreateTokenInput,
    ) -> Result<CreateTokenPayload> {
        let metadata = match event_metadata(ctx, input.reason)? {
            Ok(m) => m,
            Err(e) => return Ok(refused_create(e)),
        };
        let subject = match valid_subject(&input.subject) {
            Ok(s) => s,
            Err(e) => {
                return Ok(refused_create(UserError::new(
                    e.field(),
                    e.code(),
                    e.to_string(),
                )))
            }
        };
        let pool = ctx.data_unchecked::<PgPool>();
        match auth::check_role(pool, &input.role).await {
            Ok(()) => {}
            Err(TokenError::Refused(e)) => {
                return Ok(refused_create(UserError::new(
                    e.field(),
                    e.code(),
                    e.to_string(),
                )))
            }
            Err(e) => return Err(internal(e)),
        }
        let expires_at = match input.expires_in.as_deref().map(auth::parse_lifetime) {
            None => None,
            Some(Ok(lifetime)) => Some(Utc::now() + lifetime),
            Some(Err(message)) => {
                let message: String = message.chars().take(200).collect();
                return Ok(refused_create(UserError::new(
                    Some("expiresIn"),
                    Code::Invalid,
                    message,
                )));
            }
        };
        let scope = match checked_scope(pool, input.scope.as_ref(), true).await? {
            Ok(scope) => scope,
            Err(e) => return Ok(refused_create(e)),
        };
        let pending = PendingToken::store(pool).await.map_err(internal)?;
        let (subject_id, command) = pending.command(NewToken {
            subject,
            bindings: vec![Binding {
                role: input.role.clone(),
                scope,
            }],
            expires_at,
        });
        if let Err(e) = execute(ctx, Command::Access(subject_id, command), &metadata).await {
            pending.discard(pool).await;
            return Ok(refused_create(from_command(e)?));
        }
        let issued = pending.issued();
        Ok(CreateTokenPayload {
            token: read_token(pool, issued.token_id).await,
            secret: Some(issued.secret),
            user_errors: vec![],
        })
    }

    /// Revokes a token (admin), named by its id or its prefix, as `corral token revoke`
    /// does: it stops working on every process within a second, open websockets included
    /// (closed with 4401). The event names the calling admin and carries the reason.
    async fn revoke_token(
        &self,
        ctx: &Context<'_>,
        input: RevokeTokenInput,
    ) -> Result<RevokeTokenPayload> {
        let metadata = match event_metadata(ctx, input.reason)? {
            Ok(m) => m,
            Err(e) => return Ok(refused_revoke(e)),
        };
        let pool = ctx.data_unchecked::<PgPool>();
        let named: String = input.token.chars().take(64).collect();
        let (token_id, subject) = match auth::resolve_token(pool, &input.token).await {
            Ok(found) => found,
            Err(TokenError::NotFound(_)) => {
                return Ok(refused_revoke(UserError::new(
                    Some("token"),
                    Code::NotFound,
                    format!("no token has the id or prefix {named:?}"),
                )))
            }
            Err(TokenError::Ambiguous(_, n)) => {
                return Ok(refused_revoke(UserError::new(
                    Some("token"),
                    Code::Invalid,
                    format!("{named:?} is the prefix of {n} tokens; name the token by its id"),
                )))
            }
            Err(e) => return Err(internal(e)),
        };
        let subject: Uuid = subject.parse().map_err(internal)?;
        let command = AccessCommand::RevokeToken {
            token_id,
            reason: metadata.reason.clone(),
        };
        if let Err(e) = execute(ctx, Command::Access(subject, command), &metadata).await {
            return Ok(refused_revoke(from_command(e)?));
        }
        Ok(RevokeTokenPayload {
            token: read_token(pool, token_id).await,
            user_errors: vec![],
        })
    }

    /// Grants subject `subject` the global role `role` (admin), as `corral role grant` does;
    /// the subject is created if it does not exist. Its tokens that list the role use it
    /// again at once; open websockets whose roles change are closed with 4403. Granting a
    /// role the subject holds already writes nothing.
    async fn grant_role(&self, ctx: &Context<'_>, input: RoleInput) -> Result<RolePayload> {
        let metadata = match event_metadata(ctx, input.reason.clone())? {
            Ok(m) => m,
            Err(e) => return Ok(refused_role(e)),
        };
        let pool = ctx.data_unchecked::<PgPool>();
        let (subject, binding) = match checked_role_input(pool, &input, true).await? {
            Ok(s) => s,
            Err(e) => return Ok(refused_role(e)),
        };
        let command = AccessCommand::GrantRole {
            subject: subject.clone(),
            binding,
        };
        if let Err(e) = execute(
            ctx,
            Command::Access(subject_id(&subject), command),
            &metadata,
        )
        .await
        {
            return Ok(refused_role(from_command(e)?));
        }
        roles_after(pool, subject).await
    }

    /// Takes the global role `role` from subject `subject` (admin), as `corral role revoke`
    /// does: every token of the subject stops using it within a second, and open websockets
    /// whose roles change are closed with 4403. Revoking a role the subject does not hold
    /// writes nothing; an unknown subject is `NOT_FOUND`.
    async fn revoke_role(&self, ctx: &Context<'_>, input: RoleInput) -> Result<RolePayload> {
        let metadata = match event_metadata(ctx, input.reason.clone())? {
            Ok(m) => m,
            Err(e) => return Ok(refused_role(e)),
        };
        let pool = ctx.data_unchecked::<PgPool>();
        let (subject, binding) = match checked_role_input(pool, &input, false).await? {
            Ok(s) => s,
            Err(e) => return Ok(refused_role(e)),
        };
        if auth::subject_roles(pool, &subject)
            .await
            .map_err(internal)?
            .is_none()
        {
            return Ok(refused_role(UserError::new(
                Some("subject"),
                Code::NotFound,
                format!(
                    "no subject is named {:?}",
                    subject.chars().take(64).collect::<String>()
                ),
            )));
        }
        let command = AccessCommand::RevokeRole { binding };
        if let Err(e) = execute(
            ctx,
            Command::Access(subject_id(&subject), command),
            &metadata,
        )
        .await
        {
            return Ok(refused_role(from_command(e)?));
        }
        roles_after(pool, subject).await
    }
}
