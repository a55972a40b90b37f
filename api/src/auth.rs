//! Bearer tokens: created by `corral token create`, stored as sha256 hashes.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::policy::ROLES;

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Token subject (a user or integration name).
    pub subject: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// Client address, when known.
    pub client_addr: Option<String>,
    /// Request id, used as correlation id.
    pub request_id: String,
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The role is not one of [`ROLES`].
    #[error("unknown role {0:?}; expected one of admin, operator, viewer, auditor")]
    UnknownRole(String),
    /// The subject is empty or too long.
    #[error("subject must be 1-128 characters without control characters")]
    BadSubject,
    /// Storing failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token and returns its secret (shown once; only its hash is stored).
pub async fn create_token(pool: &PgPool, subject: &str, role: &str) -> Result<String, TokenError> {
    if !ROLES.contains(&role) {
        return Err(TokenError::UnknownRole(role.to_string()));
    }
    let subject = subject.trim();
    if subject.is_empty() || subject.chars().count() > 128 || subject.chars().any(char::is_control)
    {
        return Err(TokenError::BadSubject);
    }
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!("crl_{}", hex::encode(secret));
    sqlx::query("INSERT INTO api_tokens (id, subject, role, token_hash) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::new_v4())
        .bind(subject)
        .bind(role)
        .bind(hash(&token))
        .execute(pool)
        .await?;
    Ok(token)
}

/// The `(subject, role)` of a valid, unrevoked token.
pub async fn lookup(pool: &PgPool, token: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    if !token.starts_with("crl_") || token.len() > 100 {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT subject, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash(token))
    .fetch_optional(pool)
    .await?;
    row.map(|r| Ok((r.try_get("subject")?, r.try_get("role")?)))
        .transpose()
}

/// Extracts the token from an `Authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A cached `(subject, role)` and when it was checked.
type CachedToken = ((String, String), std::time::Instant);

/// Valid tokens seen recently, so that a request does not cost a database round trip for its
/// token. Entries live `ttl` (a revoked token keeps working at most that long); only valid
/// tokens are kept, at most `capacity` of them.
pub struct TokenCache {
    entries: std::sync::Mutex<std::collections::HashMap<Vec<u8>, CachedToken>>,
    ttl: std::time::Duration,
    capacity: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            entries: Default::default(),
            ttl: std::time::Duration::from_secs(10),
            capacity: 10_000,
        }
    }
}

impl TokenCache {
    /// Like [`lookup`], answered from the cache when possible.
    pub async fn lookup(
        &self,
        pool: &PgPool,
        token: &str,
    ) -> Result<Option<(String, String)>, sqlx::Error> {
        let key = hash(token);
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((found, at)) = entries.get(&key) {
                if at.elapsed() < self.ttl {
                    return Ok(Some(found.clone()));
                }
            }
        }
        let found = lookup(pool, token).await?;
        if let Some(found) = &found {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= self.capacity {
                entries.clear();
            }
            entries.insert(key, (found.clone(), std::time::Instant::now()));
        }
        Ok(found)
    }
}
