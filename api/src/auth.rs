//! Bearer tokens. A token is an event of its subject (`TokenCreated`, `TokenRevoked`,
//! `TokenExpired`; see `corral_domain::access`); the sha256 of its secret is kept apart, in
//! `access_token_secrets`, and never enters the log. Requests are checked against the
//! write-side registry the events' trigger keeps (`access_tokens`, `access_bindings`), so a
//! revocation is in force when it commits; [`AccessEpoch`] tells every process, within
//! [`EPOCH_POLL`], to drop what it cached and re-check its open websockets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use corral_domain::access::{
    known_role, subject_id, valid_subject, AccessCommand, AccessError, Binding, BUILT_IN_ROLES,
};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::access::{access_commands, AccessCommands};
use corral_projections::commands::executor::ExecError;
use corral_projections::wake::CommitSignal;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use uuid::Uuid;

use crate::scope::ScopedRole;

pub use corral_domain::access::BUILT_IN_ROLES as ROLES;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Token subject (a user or integration name).
    pub subject: String,
    /// The role recorded in the metadata of the events it writes: its strongest global role
    /// (`admin`, `operator`, `viewer`, `auditor`), or empty when it holds none.
    pub role: String,
    /// Every global role its token may use now (the policy allows what any of them allows).
    pub roles: Vec<String>,
    /// The scoped bindings its token may use now, sorted by role (see [`crate::scope`]).
    pub scoped: Vec<ScopedRole>,
    /// Client address, when known.
    pub client_addr: Option<String>,
    /// Request id, used as correlation id.
    pub request_id: String,
    /// The token it authenticated with (`None` only for actors made inside the server).
    pub token_id: Option<Uuid>,
    /// When that token expires (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
}

impl Actor {
    /// An actor with the one role `role`.
    pub fn with_role(subject: &str, role: &str, request_id: &str) -> Self {
        Actor {
            subject: subject.to_string(),
            role: role.to_string(),
            roles: if role.is_empty() {
                vec![]
            } else {
                vec![role.to_string()]
            },
            scoped: vec![],
            client_addr: None,
            request_id: request_id.to_string(),
            token_id: None,
            expires_at: None,
        }
    }

    /// An actor for a checked credential.
    pub fn from_credential(
        c: &Credential,
        client_addr: Option<String>,
        request_id: String,
    ) -> Self {
        Actor {
            subject: c.subject.clone(),
            role: c.primary_role().to_string(),
            roles: c.roles.clone(),
            scoped: c.scoped.clone(),
            client_addr,
            request_id,
            token_id: Some(c.token_id),
            expires_at: c.expires_at,
        }
    }
}

/// A valid token as a request finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The token's id.
    pub token_id: Uuid,
    /// Its subject.
    pub subject: String,
    /// The global roles it may use now: those it lists that its subject still holds.
    pub roles: Vec<String>,
    /// The scoped bindings it may use now: those it lists that its subject still holds,
    /// sorted by role.
    pub scoped: Vec<ScopedRole>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Where it comes from.
    pub kind: CredentialKind,
}

/// Where a credential comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// An opaque `crl_` token: a row of the token registry, re-checked on access changes.
    Token,
    /// A JWT from the OIDC provider, validated locally (`crate::jwt`); it has no row to
    /// re-check and holds until its `exp`.
    Jwt,
}

impl Credential {
    /// The strongest of its roles, in [`ROLES`] order; empty when it has none.
    pub fn primary_role(&self) -> &str {
        ROLES
            .iter()
            .copied()
            .find(|r| self.roles.iter().any(|have| have == r))
            .unwrap_or("")
    }

    fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Why a token could not be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The request was refused (unknown role, bad subject, past expiry, unknown token...).
    #[error(transparent)]
    Refused(#[from] AccessError),
    /// No token has this id or prefix.
    #[error("no token matches {0:?}")]
    NotFound(String),
    /// The prefix is shared by several tokens.
    #[error("{0:?} matches {1} tokens; name it by its id")]
    Ambiguous(String, usize),
    /// Storing failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The event store failed.
    #[error("{0}")]
    Store(String),
}

impl From<ExecError<AccessError>> for TokenError {
    fn from(e: ExecError<AccessError>) -> Self {
        match e {
            ExecError::Domain(e) => TokenError::Refused(e),
            other => TokenError::Store(other.to_string()),
        }
    }
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The metadata of an access command run from the command line (or at start), with `reason`.
pub fn cli_metadata(reason: Option<String>) -> EventMetadata {
    let mut metadata = EventMetadata::system(Source::Cli, Uuid::new_v4().to_string());
    metadata.reason = reason;
    metadata
}

/// Characters of a secret that form its public prefix (`crl_` and 8 hex digits).
pub const PREFIX_CHARS: usize = 12;

/// What to issue.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The subject it belongs to (created on its first token).
    pub subject: String,
    /// The bindings it may use (granted to the subject when it does not hold them).
    pub bindings: Vec<Binding>,
    /// When it expires; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A token just issued: the secret is shown once and kept nowhere.
#[derive(Clone)]
pub struct IssuedToken {
    /// The bearer secret.
    pub secret: String,
    /// Its id.
    pub token_id: Uuid,
    /// Its public prefix.
    pub prefix: String,
}

/// A token's secret, generated and its hash stored, waiting for its `TokenCreated`: inert
/// until that event commits, and to be [`discard`](PendingToken::discard)ed if the command
/// is refused.
impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("secret", &"<redacted>")
            .field("token_id", &self.token_id)
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[derive(Debug)]
pub struct PendingToken {
    issued: IssuedToken,
}

impl PendingToken {
    /// Generates a secret and stores its hash (the secret itself is kept nowhere).
    pub async fn store(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let secret = format!("crl_{}", hex::encode(secret));
        let prefix = secret[..PREFIX_CHARS].to_string();
        let token_id = Uuid::new_v4();
        sqlx::query("INSERT INTO access_token_secrets (token_id, token_hash) VALUES ($1, $2)")
            .bind(token_id)
            .bind(hash(&secret))
            .execute(pool)
            .await?;
        Ok(Self {
            issued: IssuedToken {
                secret,
                token_id,
                prefix,
            },
        })
    }

    /// The subject's aggregate id and the command that creates the token for `request`.
    pub fn command(&self, request: NewToken) -> (Uuid, AccessCommand) {
        let id = subject_id(&request.subject);
        let command = AccessCommand::CreateToken {
            subject: request.subject,
            token_id: self.issued.token_id,
            prefix: self.issued.prefix.clone(),
            bindings: request.bindings,
            expires_at: request.expires_at,
            now: Utc::now(),
        };
        (id, command)
    }

    /// The token, once its command committed.
    pub fn issued(self) -> IssuedToken {
        self.issued
    }

    /// Removes the secret's hash (the command was refused or failed).
    pub async fn discard(self, pool: &PgPool) {
        if let Err(e) = sqlx::query("DELETE FROM access_token_secrets WHERE token_id = $1")
            .bind(self.issued.token_id)
            .execute(pool)
            .await
        {
            tracing::warn!(token = %self.issued.token_id, error = %e, "could not remove a refused token's secret");
        }
    }
}

/// Issues a token through the Subject aggregate, with `metadata` naming who asked.
pub async fn issue(
    commands: &AccessCommands,
    pool: &PgPool,
    request: NewToken,
    metadata: &EventMetadata,
) -> Result<IssuedToken, TokenError> {
    for b in &request.bindings {
        check_role(pool, &b.role).await?;
    }
    // The secret's row first: it is inert until TokenCreated commits, and removed if the
    // command is refused.
    let pending = PendingToken::store(pool).await?;
    let (subject, command) = pending.command(request);
    if let Err(e) = commands.execute(subject, command, metadata).await {
        pending.discard(pool).await;
        return Err(e.into());
    }
    Ok(pending.issued())
}

/// Creates a token of subject `subject` with the global role `role` and no expiry, as the
/// command line does, and returns its secret (shown once; only its hash is stored).
pub async fn create_token(pool: &PgPool, subject: &str, role: &str) -> Result<String, TokenError> {
    let commands = access_commands(pool.clone(), CommitSignal::new(vec![]));
    let request = NewToken {
        subject: subject.to_string(),
        bindings: vec![Binding::global(role)],
        expires_at: None,
    };
    let metadata = cli_metadata(None);
    Ok(issue(&commands, pool, request, &metadata).await?.secret)
}

/// The token named by `id_or_prefix` (its UUID, or its prefix when only one token has it).
pub async fn resolve_token(
    pool: &PgPool,
    id_or_prefix: &str,
) -> Result<(Uuid, String), TokenError> {
    let rows = if let Ok(id) = id_or_prefix.trim().parse::<Uuid>() {
        sqlx::query("SELECT token_id, subject_id FROM access_tokens WHERE token_id = $1")
            .bind(id)
            .fetch_all(pool)
            .await?
    } else {
        sqlx::query("SELECT token_id, subject_id FROM access_tokens WHERE prefix = $1 LIMIT 10")
            .bind(id_or_prefix.trim())
            .fetch_all(pool)
            .await?
    };
    match rows.as_slice() {
        [] => Err(TokenError::NotFound(id_or_prefix.to_string())),
        [row] => Ok((row.try_get("token_id")?, row.try_get("subject_id")?)),
        many => Err(TokenError::Ambiguous(id_or_prefix.to_string(), many.len())),
    }
}

/// Revokes the token named by `id_or_prefix`; returns its id (a token revoked or expired
/// already is left as it is).
pub async fn revoke(
    commands: &AccessCommands,
    pool: &PgPool,
    id_or_prefix: &str,
    reason: Option<String>,
    metadata: &EventMetadata,
) -> Result<Uuid, TokenError> {
    let (token_id, subject) = resolve_token(pool, id_or_prefix).await?;
    let subject: Uuid = subject
        .parse()
        .map_err(|_| TokenError::Store(format!("subject id {subject:?}")))?;
    commands
        .execute(
            subject,
            AccessCommand::RevokeToken { token_id, reason },
            metadata,
        )
        .await?;
    Ok(token_id)
}

/// Refuses a role that is neither built in nor defined now (`INVALID` on `role`).
pub async fn check_role(pool: &PgPool, role: &str) -> Result<(), TokenError> {
    if known_role(role) {
        return Ok(());
    }
    corral_domain::access::valid_role_name(role)?;
    let defined: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM access_roles WHERE name = $1)")
            .bind(role)
            .fetch_one(pool)
            .await?;
    if defined {
        return Ok(());
    }
    Err(TokenError::Refused(AccessError::Invalid {
        field: "role",
        message: format!(
            "unknown role {:?}; expected one of {} or a role defined with defineRole (corral role define)",
            role.chars().take(64).collect::<String>(),
            BUILT_IN_ROLES.join(", ")
        ),
    }))
}

/// The custom roles defined now, by name, with their permissions (sorted).
pub async fn defined_roles(pool: &PgPool) -> Result<Vec<(String, Vec<String>)>, sqlx::Error> {
    let rows = sqlx::query("SELECT name, permissions FROM access_roles ORDER BY name")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("permissions")?)))
        .collect()
}

/// The global roles subject `name` holds now, sorted; `None` when no such subject exists.
pub async fn subject_roles(pool: &PgPool, name: &str) -> Result<Option<Vec<String>>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT ARRAY(SELECT b.role FROM access_bindings b
                        WHERE b.subject_id = s.subject_id AND b.scope IS NULL
                        ORDER BY b.role) AS roles
           FROM access_subjects s WHERE s.subject_id = $1",
    )
    .bind(subject_id(name).to_string())
    .fetch_optional(pool)
    .await?;
    row.map(|r| r.try_get::<Vec<String>, _>("roles"))
        .transpose()
}

/// Every binding subject `name` holds now (global ones first, then by role and scope);
/// `None` when no such subject exists.
pub async fn subject_bindings(
    pool: &PgPool,
    name: &str,
) -> Result<Option<Vec<Binding>>, sqlx::Error> {
    if subject_roles(pool, name).await?.is_none() {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT role, scope FROM access_bindings WHERE subject_id = $1
          ORDER BY scope IS NOT NULL, role, scope",
    )
    .bind(subject_id(name).to_string())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Binding {
                role: r.try_get("role")?,
                scope: r.try_get("scope")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map(Some)
}

/// The group a `--scope` names: its id, or its path (`Inventory/Site-A`, in the device tree
/// first, then the service tree), as the live tree has it now.
pub async fn resolve_scope(pool: &PgPool, text: &str) -> Result<Uuid, TokenError> {
    let text = text.trim();
    let built: bool = sqlx::query_scalar("SELECT to_regclass('rm_group_tree.groups') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !built {
        return Err(TokenError::Refused(AccessError::Invalid {
            field: "scope",
            message: format!(
                "no group has the id or path {:?}: the group tree is not built yet (start corral serve once)",
                text.chars().take(200).collect::<String>()
            ),
        }));
    }
    if let Ok(id) = text.parse::<Uuid>() {
        let found = corral_projections::group_tree::read::by_ids(pool, &[id])
            .await
            .map_err(|e| TokenError::Store(e.to_string()))?;
        return match found.first() {
            Some(_) => Ok(id),
            None => Err(TokenError::Refused(AccessError::Invalid {
                field: "scope",
                message: format!("no group has the id {id}"),
            })),
        };
    }
    let mut found = vec![];
    for group_type in [
        corral_domain::group::GroupType::Device.as_str(),
        corral_domain::group::GroupType::Service.as_str(),
    ] {
        if let Some(node) = corral_projections::group_tree::read::by_path(pool, group_type, text)
            .await
            .map_err(|e| TokenError::Store(e.to_string()))?
        {
            found.push(node.id);
        }
    }
    match found.as_slice() {
        [id] => Ok(*id),
        [] => Err(TokenError::Refused(AccessError::Invalid {
            field: "scope",
            message: format!(
                "no group has the path {:?}",
                text.chars().take(200).collect::<String>()
            ),
        })),
        _ => Err(TokenError::Refused(AccessError::Invalid {
            field: "scope",
            message: format!(
                "both a device group and a service group have the path {:?}; name it by its id",
                text.chars().take(200).collect::<String>()
            ),
        })),
    }
}

/// Grants subject `subject` the binding `binding` (creating the subject if needed), as
/// `corral role grant` does; returns the bindings it holds afterwards. Granting a binding
/// the subject holds already writes nothing.
pub async fn grant_role(
    commands: &AccessCommands,
    pool: &PgPool,
    subject: &str,
    binding: Binding,
    metadata: &EventMetadata,
) -> Result<Vec<Binding>, TokenError> {
    let subject = valid_subject(subject)?;
    check_role(pool, &binding.role).await?;
    let command = AccessCommand::GrantRole {
        subject: subject.clone(),
        binding,
    };
    commands
        .execute(subject_id(&subject), command, metadata)
        .await?;
    Ok(subject_bindings(pool, &subject).await?.unwrap_or_default())
}

/// Takes the binding `binding` from subject `subject`, as `corral role revoke` does: every
/// token of the subject stops using it within a second, open websockets included (closed
/// with 4403). Returns the bindings it holds afterwards; revoking a binding it does not
/// hold writes nothing. An unknown subject is [`TokenError::NotFound`].
pub async fn revoke_role(
    commands: &AccessCommands,
    pool: &PgPool,
    subject: &str,
    binding: Binding,
    metadata: &EventMetadata,
) -> Result<Vec<Binding>, TokenError> {
    let subject = valid_subject(subject)?;
    // A binding to a role deleted since may still be revoked.
    if !known_role(&binding.role) {
        corral_domain::access::valid_role_name(&binding.role)?;
    }
    if subject_roles(pool, &subject).await?.is_none() {
        return Err(TokenError::NotFound(subject));
    }
    let command = AccessCommand::RevokeRole { binding };
    commands
        .execute(subject_id(&subject), command, metadata)
        .await?;
    Ok(subject_bindings(pool, &subject).await?.unwrap_or_default())
}

/// A binding as `role` (global) or `role@group-id`.
pub fn binding_label(b: &Binding) -> String {
    match b.scope {
        None => b.role.clone(),
        Some(scope) => format!("{}@{scope}", b.role),
    }
}

const CREDENTIAL_SQL: &str = "
SELECT t.token_id, s.subject, t.expires_at,
       ARRAY(SELECT DISTINCT b.role FROM access_bindings b
               JOIN jsonb_to_recordset(t.bindings) AS tb(role text, scope uuid)
                 ON tb.role = b.role AND tb.scope IS NULL
              WHERE b.subject_id = t.subject_id AND b.scope IS NULL
              ORDER BY b.role) AS roles,
       ARRAY(SELECT DISTINCT b.role || ' ' || b.scope FROM access_bindings b
               JOIN jsonb_to_recordset(t.bindings) AS tb(role text, scope uuid)
                 ON tb.role = b.role AND tb.scope = b.scope
              WHERE b.subject_id = t.subject_id AND b.scope IS NOT NULL
              ORDER BY 1) AS scoped
  FROM access_tokens t
  JOIN access_subjects s ON s.subject_id = t.subject_id
 WHERE t.revoked_at IS NULL AND t.expired_at IS NULL
   AND (t.expires_at IS NULL OR t.expires_at > now())";

fn credential(row: &sqlx::postgres::PgRow) -> Result<Credential, sqlx::Error> {
    Ok(Credential {
        token_id: row.try_get("token_id")?,
        subject: row.try_get("subject")?,
        roles: row.try_get("roles")?,
        scoped: scoped_roles(row.try_get("scoped")?),
        expires_at: row.try_get("expires_at")?,
        kind: CredentialKind::Token,
    })
}

/// Scoped bindings from `role scope` strings (sorted by role, as the query sorts them).
fn scoped_roles(pairs: Vec<String>) -> Vec<ScopedRole> {
    pairs
        .iter()
        .filter_map(|pair| {
            let (role, scope) = pair.rsplit_once(' ')?;
            Some(ScopedRole {
                role: role.to_string(),
                scope: scope.parse().ok()?,
            })
        })
        .collect()
}

/// The credential of a valid token secret: not revoked, not expired.
pub async fn lookup(pool: &PgPool, token: &str) -> Result<Option<Credential>, sqlx::Error> {
    if !token.starts_with("crl_") || token.len() > 100 {
        return Ok(None);
    }
    let sql = format!(
        "{CREDENTIAL_SQL} AND t.token_id = \
         (SELECT token_id FROM access_token_secrets WHERE token_hash = $1)"
    );
    let row = sqlx::query(&sql)
        .bind(hash(token))
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(credential).transpose()
}

/// The credential of token `token_id` as it stands now (`None`: revoked, expired, gone).
pub async fn check(pool: &PgPool, token_id: Uuid) -> Result<Option<Credential>, sqlx::Error> {
    let sql = format!("{CREDENTIAL_SQL} AND t.token_id = $1");
    let row = sqlx::query(&sql)
        .bind(token_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(credential).transpose()
}

/// Records that `token_id` was used, at most once a minute (a read model, not an event).
async fn touch(pool: &PgPool, token_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO access_token_usage (token_id, last_used_at) VALUES ($1, now())
         ON CONFLICT (token_id) DO UPDATE SET last_used_at = excluded.last_used_at
          WHERE access_token_usage.last_used_at < now() - interval '1 minute'",
    )
    .bind(token_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Extracts the token from an `Authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// How often each process reads the access epoch: a revocation reaches its cache and its open
/// websockets within this (plus one query).
pub const EPOCH_POLL: Duration = Duration::from_millis(250);

/// The access epoch: a counter every access event moves (`access_epoch`, bumped by the
/// registry trigger), followed by one task per process.
#[derive(Clone)]
pub struct AccessEpoch {
    rx: watch::Receiver<i64>,
}

impl AccessEpoch {
    /// Follows `pool`'s epoch every [`EPOCH_POLL`] until the last clone is dropped.
    pub fn follow(pool: PgPool) -> Self {
        let (tx, rx) = watch::channel(0);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(EPOCH_POLL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if tx.is_closed() {
                    return;
                }
                match sqlx::query_scalar::<_, i64>("SELECT epoch FROM access_epoch")
                    .fetch_one(&pool)
                    .await
                {
                    Ok(epoch) => {
                        tx.send_if_modified(|e| std::mem::replace(e, epoch) != epoch);
                    }
                    Err(e) => tracing::debug!(error = %e, "could not read the access epoch"),
                }
            }
        });
        Self { rx }
    }

    /// The epoch last read.
    pub fn current(&self) -> i64 {
        *self.rx.borrow()
    }

    /// A receiver that wakes when the epoch moves.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.rx.clone()
    }
}

/// A cached credential, the epoch it was read in and when.
type Cached = (Credential, i64, Instant);

/// Valid tokens seen recently, so that a request does not cost a database round trip for its
/// token. An entry serves while the access epoch has not moved, for at most `ttl`, and not
/// past its token's expiry; only valid tokens are kept, at most `capacity` of them.
pub struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, Cached>>,
    epoch: AccessEpoch,
    ttl: Duration,
    capacity: usize,
    jwt: Option<std::sync::Arc<crate::jwt::JwtValidator>>,
}

impl TokenCache {
    /// A cache that follows `epoch`.
    pub fn new(epoch: AccessEpoch) -> Self {
        Self {
            entries: Default::default(),
            epoch,
            ttl: Duration::from_secs(10),
            capacity: 10_000,
            jwt: None,
        }
    }

    /// Also takes JWTs (bearer tokens without the `crl_` prefix), validated by `jwt`.
    pub fn with_jwt(mut self, jwt: Option<std::sync::Arc<crate::jwt::JwtValidator>>) -> Self {
        self.jwt = jwt;
        self
    }

    /// The epoch it follows.
    pub fn epoch(&self) -> &AccessEpoch {
        &self.epoch
    }

    /// Like [`lookup`], answered from the cache when possible.
    pub async fn lookup(
        &self,
        pool: &PgPool,
        token: &str,
    ) -> Result<Option<Credential>, sqlx::Error> {
        // A JWT never reaches the token tables (nor this cache: it is checked locally).
        if !token.starts_with("crl_") {
            let Some(jwt) = &self.jwt else {
                return Ok(None);
            };
            return Ok(match jwt.validate(token) {
                Ok(credential) => Some(credential),
                Err(e) => {
                    tracing::debug!(error = %e, "JWT refused");
                    None
                }
            });
        }
        let key = hash(token);
        let epoch = self.epoch.current();
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((found, at_epoch, at)) = entries.get(&key) {
                if *at_epoch == epoch && at.elapsed() < self.ttl && !found.expired_at(Utc::now()) {
                    return Ok(Some(found.clone()));
                }
            }
        }
        let found = lookup(pool, token).await?;
        if let Some(found) = &found {
            let (pool, id) = (pool.clone(), found.token_id);
            tokio::spawn(async move {
                if let Err(e) = touch(&pool, id).await {
                    tracing::debug!(error = %e, "could not record a token's use");
                }
            });
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= self.capacity {
                entries.clear();
            }
            entries.insert(key, (found.clone(), epoch, Instant::now()));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_role_is_the_strongest() {
        let c = Credential {
            token_id: Uuid::nil(),
            subject: "s".into(),
            roles: vec!["viewer".into(), "auditor".into()],
            scoped: vec![],
            expires_at: None,
            kind: CredentialKind::Token,
        };
        assert_eq!(c.primary_role(), "viewer");
        let none = Credential { roles: vec![], ..c };
        assert_eq!(none.primary_role(), "");
    }

    #[test]
    fn bearer_takes_the_token_of_a_bearer_header() {
        assert_eq!(bearer("Bearer crl_x"), Some("crl_x"));
        assert_eq!(bearer("bearer  crl_x "), Some("crl_x"));
        assert_eq!(bearer("Basic x"), None);
    }
}

/// The prefix recorded for tokens created before tokens were events (their secrets were
/// never kept, so their real prefix is unknown): name them by id.
pub const LEGACY_PREFIX: &str = "legacy";

/// Turns the tokens of the old `api_tokens` table that have no `TokenCreated` yet into
/// events (a global binding of their role), keeping the hashes of the secrets of those not
/// revoked, so they keep working; then revokes every adopted token that the old table says is
/// revoked (a revoked one never gets its hash back, and one revoked in the old table later, by
/// an older binary during an upgrade, is revoked here at the next start). Idempotent, and
/// safe when several processes start at once. Returns how many it adopted.
pub async fn adopt_legacy_tokens(pool: &PgPool) -> Result<usize, TokenError> {
    let rows = sqlx::query(
        "SELECT id, subject, role, token_hash, revoked_at IS NOT NULL AS revoked FROM api_tokens a
          WHERE NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.token_id = a.id)
          ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    let commands = access_commands(pool.clone(), CommitSignal::new(vec![]));
    let metadata = cli_metadata(None);
    let mut adopted = 0;
    for row in rows {
        let token_id: Uuid = row.try_get("id")?;
        let subject: String = row.try_get("subject")?;
        let role: String = row.try_get("role")?;
        let token_hash: Vec<u8> = row.try_get("token_hash")?;
        if !row.try_get::<bool, _>("revoked")? {
            sqlx::query(
                "INSERT INTO access_token_secrets (token_id, token_hash) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(token_id)
            .bind(&token_hash)
            .execute(pool)
            .await?;
        }
        let create = AccessCommand::CreateToken {
            subject: subject.clone(),
            token_id,
            prefix: LEGACY_PREFIX.to_string(),
            bindings: vec![Binding::global(&role)],
            expires_at: None,
            now: Utc::now(),
        };
        match commands
            .execute(subject_id(&subject), create, &metadata)
            .await
        {
            Ok(_) => adopted += 1,
            Err(ExecError::Domain(AccessError::TokenExists(_))) => {}
            Err(e) => {
                tracing::warn!(token = %token_id, error = %e, "could not adopt a legacy token");
            }
        }
    }
    // Revoked in the old table, live here: revoke (and forget the secret's hash).
    let revoked = sqlx::query(
        "SELECT a.id, a.subject FROM api_tokens a JOIN access_tokens t ON t.token_id = a.id
          WHERE a.revoked_at IS NOT NULL AND t.revoked_at IS NULL AND t.expired_at IS NULL",
    )
    .fetch_all(pool)
    .await?;
    for row in revoked {
        let token_id: Uuid = row.try_get("id")?;
        let subject: String = row.try_get("subject")?;
        sqlx::query("DELETE FROM access_token_secrets WHERE token_id = $1")
            .bind(token_id)
            .execute(pool)
            .await?;
        let revoke = AccessCommand::RevokeToken {
            token_id,
            reason: Some("revoked in the old api_tokens table".into()),
        };
        commands
            .execute(subject_id(&subject), revoke, &metadata)
            .await?;
    }
    Ok(adopted)
}

/// A token as `corral token list` and the `tokens` query show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its id.
    pub token_id: Uuid,
    /// Its public prefix.
    pub prefix: String,
    /// Its subject.
    pub subject: String,
    /// The bindings it may use, as `role` or `role@group-id`.
    pub bindings: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When its expiry was recorded.
    pub expired_at: Option<DateTime<Utc>>,
    /// When it was last used (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl TokenInfo {
    /// `active`, `revoked` or `expired`, as of `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expired_at.is_some() || self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// Most tokens one listing returns.
pub const MAX_LIST: i64 = 1_000;

/// What [`list_tokens`] and [`token_info`] select (never a secret or its hash).
const TOKEN_INFO_SQL: &str = "
SELECT t.token_id, t.prefix, s.subject, t.created_at, t.expires_at, t.revoked_at,
       t.expired_at, u.last_used_at,
       ARRAY(SELECT b.role || coalesce('@' || b.scope, '')
               FROM jsonb_to_recordset(t.bindings) AS b(role text, scope uuid)) AS bindings
  FROM access_tokens t
  JOIN access_subjects s ON s.subject_id = t.subject_id
  LEFT JOIN access_token_usage u ON u.token_id = t.token_id";

fn token_info_of(r: &sqlx::postgres::PgRow) -> Result<TokenInfo, sqlx::Error> {
    Ok(TokenInfo {
        token_id: r.try_get("token_id")?,
        prefix: r.try_get("prefix")?,
        subject: r.try_get("subject")?,
        bindings: r.try_get("bindings")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        expired_at: r.try_get("expired_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

/// Tokens, newest first: of `subject` only when given, revoked and expired ones only when
/// `all`; at most `limit` (capped at [`MAX_LIST`]).
pub async fn list_tokens(
    pool: &PgPool,
    subject: Option<&str>,
    all: bool,
    limit: i64,
) -> Result<Vec<TokenInfo>, sqlx::Error> {
    let sql = format!(
        "{TOKEN_INFO_SQL}
          WHERE ($1::text IS NULL OR s.subject = $1)
            AND ($2 OR (t.revoked_at IS NULL AND t.expired_at IS NULL
                        AND (t.expires_at IS NULL OR t.expires_at > now())))
          ORDER BY t.created_at DESC, t.token_id
          LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(subject.map(str::trim))
        .bind(all)
        .bind(limit.clamp(1, MAX_LIST))
        .fetch_all(pool)
        .await?;
    rows.iter().map(token_info_of).collect()
}

/// Token `token_id`, whatever its status.
pub async fn token_info(pool: &PgPool, token_id: Uuid) -> Result<Option<TokenInfo>, sqlx::Error> {
    let sql = format!("{TOKEN_INFO_SQL} WHERE t.token_id = $1");
    let row = sqlx::query(&sql)
        .bind(token_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(token_info_of).transpose()
}

/// Parses a lifetime such as `30d`, `12h`, `90m` or `3600s` (at least a minute, at most ten
/// years).
pub fn parse_lifetime(text: &str) -> Result<chrono::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit, e.g. 30d, 12h, 90m"))?;
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, e.g. 30d"))?;
    let seconds = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => return Err(format!("{text:?}: the unit is d, h, m or s")),
    }
    .ok_or_else(|| format!("{text:?} is too long"))?;
    if !(60..=10 * 366 * 86_400).contains(&seconds) {
        return Err(format!("{text:?}: a lifetime is from 1 minute to 10 years"));
    }
    Ok(chrono::Duration::seconds(seconds))
}

#[cfg(test)]
mod lifetime_tests {
    use super::parse_lifetime;

    #[test]
    fn lifetimes_take_a_unit_and_stay_in_range() {
        assert_eq!(parse_lifetime("30d"), Ok(chrono::Duration::days(30)));
        assert_eq!(parse_lifetime(" 90m "), Ok(chrono::Duration::minutes(90)));
        assert!(parse_lifetime("30").is_err());
        assert!(parse_lifetime("30w").is_err());
        assert!(parse_lifetime("10s").is_err(), "under a minute");
        assert!(parse_lifetime("99999d").is_err());
        assert!(parse_lifetime("99999999999999999999d").is_err());
    }
}
