//! JWT bearer tokens from an OIDC provider, validated locally (`docs/access.md`, "JWT / OIDC").
//!
//! A bearer token that does not start with `crl_` is a JWT when JWT is configured: its
//! signature is checked with a key from the JWKS file (RS256, ES256, EdDSA) or the HS256
//! secret, its `iss`, `aud`, `exp` and `nbf` are checked, and its roles claim is mapped to
//! global roles. The algorithm comes from the key, never from the token alone: a token whose
//! header names another algorithm than its key's is refused (no `alg: none`, no HS256 token
//! "signed" with an RSA public key). A JWT never reaches the opaque-token tables.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{Credential, CredentialKind, ROLES};

/// Least time between two re-reads of the JWKS file an unknown `kid` triggers.
pub const JWKS_REREAD: Duration = Duration::from_secs(30);

/// Prefix of the subject of a JWT caller in the audit trail: `oidc:<sub>`.
pub const SUBJECT_PREFIX: &str = "oidc:";

/// Longest JWT taken (a bigger one is refused before it is parsed).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Namespace of the UUIDv5 token ids of JWTs.
const TOKEN_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a0f_6c2e_3b1d_5d4e_9a27_c0a1_1e55_0f15);

/// JWT settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The required `iss` (`CORRAL_JWT_ISSUER`).
    pub issuer: String,
    /// The required `aud`, if any (`CORRAL_JWT_AUDIENCE`).
    pub audience: Option<String>,
    /// Public keys (`CORRAL_JWT_JWKS_FILE`).
    pub jwks_file: Option<PathBuf>,
    /// HS256 secret (`CORRAL_JWT_HS256_SECRET`).
    pub hs256_secret: Option<Vec<u8>>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (`CORRAL_JWT_LEEWAY_SECS`).
    pub leeway_secs: u64,
    /// The claim naming the subject (`CORRAL_JWT_SUBJECT_CLAIM`).
    pub subject_claim: String,
    /// The claim listing groups (`CORRAL_JWT_ROLES_CLAIM`).
    pub roles_claim: String,
    /// Claim value → binding (`CORRAL_JWT_ROLE_MAP`): a role everywhere, or on one group's
    /// subtree.
    pub role_map: Vec<(String, corral_domain::access::Binding)>,
}

/// Parses `CORRAL_JWT_ROLE_MAP`: `value=role,value=role@GROUP_ID,...`; a role is built in or
/// the name of a custom role (which grants nothing while it is not defined), and `@GROUP_ID`
/// scopes it to that group's subtree.
pub fn parse_role_map(raw: &str) -> Result<Vec<(String, corral_domain::access::Binding)>, String> {
    let mut map = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((value, role)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not <claim value>=<role>"));
        };
        let (value, role) = (value.trim(), role.trim());
        if value.is_empty() {
            return Err(format!("{pair:?} has no claim value"));
        }
        let (role, scope) = match role.split_once('@') {
            Some((role, scope)) => {
                let scope: Uuid = scope
                    .trim()
                    .parse()
                    .map_err(|_| format!("{pair:?}: {scope:?} is not a group id"))?;
                (role.trim(), Some(scope))
            }
            None => (role, None),
        };
        if !ROLES.contains(&role) && corral_domain::access::valid_role_name(role).is_err() {
            return Err(format!(
                "{role:?} is neither a built-in role (one of {}) nor a custom role's name",
                ROLES.join(", ")
            ));
        }
        map.push((
            value.to_string(),
            corral_domain::access::Binding {
                role: role.to_string(),
                scope,
            },
        ));
    }
    Ok(map)
}

/// Why a JWT was refused (logged at debug level; the caller only sees 401).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not a well-formed JWT, or too long.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm no configured key has.
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    /// No key has the token's `kid` (or it has none and several keys could apply).
    #[error("no key for kid {0:?}")]
    UnknownKey(Option<String>),
    /// Signature, `iss`, `aud`, `exp` or `nbf` failed.
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The subject claim is missing or not a string.
    #[error("no subject in claim {0:?}")]
    NoSubject(String),
    /// `exp` is not a number of seconds.
    #[error("no usable exp claim")]
    NoExpiry,
}

/// A public key and the one algorithm it verifies.
struct Key {
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    named: HashMap<String, Key>,
    unnamed: Vec<Key>,
}

/// Validates JWTs with keys read at start (and re-read on an unknown `kid`).
pub struct JwtValidator {
    config: JwtConfig,
    keys: RwLock<KeySet>,
    read_at: Mutex<Instant>,
    reread_every: Duration,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidator")
            .field("issuer", &self.config.issuer)
            .field("audience", &self.config.audience)
            .field("jwks_file", &self.config.jwks_file)
            .finish_non_exhaustive()
    }
}

/// The algorithm a JWK verifies, from its own type and curve (and its `alg`, which must agree);
/// `None` for keys Corral does not take (encryption keys, `oct`, other curves).
fn key_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let (alg, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(alg),
        Some(a) if a == declared => Some(alg),
        Some(_) => None,
    }
}

/// Reads a JWKS file: its usable keys (at least one).
fn read_jwks(path: &Path) -> Result<KeySet, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let Some(keys) = doc.get("keys").and_then(|k| k.as_array()) else {
        return Err(format!("{}: no \"keys\" array", path.display()));
    };
    let mut set = KeySet::default();
    for raw in keys {
        // A key of a kind Corral does not take is skipped, not an error (a provider's JWKS
        // may hold encryption keys).
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        let Some(alg) = key_algorithm(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let key = Key { alg, key };
        match jwk.common.key_id {
            Some(kid) => {
                set.named.insert(kid, key);
            }
            None => set.unnamed.push(key),
        }
    }
    if set.named.is_empty() && set.unnamed.is_empty() {
        return Err(format!(
            "{}: no RS256, ES256 (P-256) or EdDSA (Ed25519) signing key",
            path.display()
        ));
    }
    Ok(set)
}

impl JwtValidator {
    /// A validator for `config`, its JWKS file read now. Errors name the setting to fix.
    pub fn new(config: JwtConfig) -> Result<Self, String> {
        let keys = match &config.jwks_file {
            Some(path) => read_jwks(path).map_err(|e| format!("CORRAL_JWT_JWKS_FILE: {e}"))?,
            None => KeySet::default(),
        };
        if config.jwks_file.is_none() && config.hs256_secret.is_none() {
            return Err(
                "CORRAL_JWT_ISSUER is set but no key is: set CORRAL_JWT_JWKS_FILE or CORRAL_JWT_HS256_SECRET"
                    .into(),
            );
        }
        Ok(Self {
            config,
            keys: RwLock::new(keys),
            read_at: Mutex::new(Instant::now()),
            reread_every: JWKS_REREAD,
        })
    }

    /// Re-reads the JWKS file unless it was read less than [`JWKS_REREAD`] ago; whether it did.
    fn reread(&self) -> bool {
        let Some(path) = &self.config.jwks_file else {
            return false;
        };
        {
            let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
            if read_at.elapsed() < self.reread_every {
                return false;
            }
            *read_at = Instant::now();
        }
        match read_jwks(path) {
            Ok(set) => {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = set;
                tracing::info!(file = %path.display(), "re-read the JWKS file");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not re-read the JWKS file; keeping its keys");
                false
            }
        }
    }

    /// Verifies `token` with key `kid` (or the only key of `alg` when it names none).
    fn verify_with_jwks(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        validation: &Validation,
    ) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = match kid {
            Some(kid) => keys.named.get(kid),
            None => {
                let mut of_alg = keys
                    .named
                    .values()
                    .chain(keys.unnamed.iter())
                    .filter(|k| k.alg == alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        };
        let Some(key) = key else {
            return Err(JwtError::UnknownKey(kid.map(str::to_string)));
        };
        // The key decides the algorithm: a header naming another one is refused.
        if key.alg != alg {
            return Err(JwtError::Algorithm(alg));
        }
        Ok(jsonwebtoken::decode(token, &key.key, validation)?.claims)
    }

    /// The credential of a valid JWT.
    pub fn validate(&self, token: &str) -> Result<Credential, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed("too long".into()));
        }
        // `alg: none` (and any algorithm jsonwebtoken does not know) fails here.
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| JwtError::Malformed(e.to_string()))?;
        let alg = header.alg;
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_issuer(&[&self.config.issuer]);
        validation.leeway = self.config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        match &self.config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            }
            None => {
                validation.validate_aud = false;
                validation.set_required_spec_claims(&["exp", "iss"]);
            }
        }
        let claims = match alg {
            Algorithm::HS256 => {
                let Some(secret) = &self.config.hs256_secret else {
                    return Err(JwtError::Algorithm(alg));
                };
                jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                    token,
                    &DecodingKey::from_secret(secret),
                    &validation,
                )?
                .claims
            }
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => {
                let kid = header.kid.as_deref();
                match self.verify_with_jwks(token, alg, kid, &validation) {
                    Err(JwtError::UnknownKey(_)) if self.reread() => {
                        self.verify_with_jwks(token, alg, kid, &validation)?
                    }
                    other => other?,
                }
            }
            other => return Err(JwtError::Algorithm(other)),
        };
        self.credential(token, &claims)
    }

    /// Maps verified claims to a credential.
    fn credential(
        &self,
        token: &str,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Credential, JwtError> {
        // The subject reaches the audit trail: the same rules as a token's subject (no control
        // characters, at most 128 characters).
        let subject = claims
            .get(&self.config.subject_claim)
            .and_then(|v| v.as_str())
            .and_then(|s| corral_domain::access::valid_subject(s).ok())
            .filter(|s| corral_domain::text::check_free_text("subject", s, 128).is_ok())
            .ok_or_else(|| JwtError::NoSubject(self.config.subject_claim.clone()))?;
        let subject = subject.as_str();
        let values: Vec<&str> = match claims.get(&self.config.roles_claim) {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|v| v.as_str()).collect()
            }
            _ => vec![],
        };
        let granted: std::collections::BTreeSet<&corral_domain::access::Binding> = self
            .config
            .role_map
            .iter()
            .filter(|(value, _)| values.contains(&value.as_str()))
            .map(|(_, b)| b)
            .collect();
        // Global roles, built-in ones in their order first; scoped bindings sorted by role.
        let mut roles: Vec<String> = ROLES
            .iter()
            .filter(|r| granted.iter().any(|b| b.scope.is_none() && b.role == **r))
            .map(|r| r.to_string())
            .collect();
        roles.extend(
            granted
                .iter()
                .filter(|b| b.scope.is_none() && !ROLES.contains(&b.role.as_str()))
                .map(|b| b.role.clone()),
        );
        let scoped: Vec<crate::scope::ScopedRole> = granted
            .iter()
            .filter_map(|b| {
                Some(crate::scope::ScopedRole {
                    role: b.role.clone(),
                    scope: b.scope?,
                })
            })
            .collect();
        // `exp` is required and was checked; a decimal one counts too (its whole seconds), so
        // that an open websocket closes at it.
        let expires_at = claims
            .get("exp")
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f.floor() as i64)))
            .and_then(|exp| DateTime::<Utc>::from_timestamp(exp, 0))
            .ok_or(JwtError::NoExpiry)?;
        let expires_at = Some(expires_at);
        let issuer = claims.get("iss").and_then(|v| v.as_str()).unwrap_or("");
        let unique = match claims.get("jti").and_then(|v| v.as_str()) {
            Some(jti) => format!("jti:{jti}"),
            None => format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes()))),
        };
        Ok(Credential {
            token_id: Uuid::new_v5(
                &TOKEN_ID_NAMESPACE,
                format!("{issuer}\n{unique}").as_bytes(),
            ),
            subject: format!("{SUBJECT_PREFIX}{subject}"),
            roles,
            scoped,
            expires_at,
            kind: CredentialKind::Jwt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    const ISSUER: &str = "https://idp.example.com/realms/corral";
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";
    /// A test-only RSA key (PKCS#1 DER), made once with
    /// `openssl genrsa 2048 | openssl rsa -traditional -outform DER`.
    const RSA_DER: &[u8] = include_bytes!("../tests/fixtures/jwt-test-rsa.der");

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    struct Keys {
        ed: Vec<u8>,
        ec: Vec<u8>,
        jwks: serde_json::Value,
        rsa_public: Vec<u8>,
    }

    fn keys() -> Keys {
        let rng = SystemRandom::new();
        let ed = Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("test")
            .as_ref()
            .to_vec();
        let ed_pub = Ed25519KeyPair::from_pkcs8(&ed)
            .expect("test")
            .public_key()
            .as_ref()
            .to_vec();
        let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("test")
            .as_ref()
            .to_vec();
        let ec_pub = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &ec, &rng)
            .expect("test")
            .public_key()
            .as_ref()
            .to_vec();
        let rsa = ring::rsa::KeyPair::from_der(RSA_DER).expect("test");
        let components: ring::rsa::PublicKeyComponents<Vec<u8>> = rsa.public().into();
        let (n, e) = (components.n, components.e);
        let rsa_public = rsa.public().as_ref().to_vec();
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": b64(&n), "e": b64(&e)},
            {"kty": "EC", "kid": "ec1", "crv": "P-256", "x": b64(&ec_pub[1..33]), "y": b64(&ec_pub[33..])},
            {"kty": "OKP", "kid": "ed1", "crv": "Ed25519", "x": b64(&ed_pub)},
            {"kty": "RSA", "kid": "enc1", "use": "enc", "n": b64(&n), "e": b64(&e)},
        ]});
        Keys {
            ed,
            ec,
            jwks,
            rsa_public,
        }
    }

    fn config(dir: &Path, jwks: &serde_json::Value) -> JwtConfig {
        let file = dir.join("jwks.json");
        std::fs::write(&file, jwks.to_string()).expect("test");
        JwtConfig {
            issuer: ISSUER.into(),
            audience: Some("corral".into()),
            jwks_file: Some(file),
            hs256_secret: Some(SECRET.to_vec()),
            leeway_secs: 30,
            subject_claim: "sub".into(),
            roles_claim: "groups".into(),
            role_map: parse_role_map(&format!(
                "corral-admins=admin,netops=operator,staff=viewer,site-a-team=operator@{}",
                Uuid::from_u128(0xa)
            ))
            .expect("test"),
        }
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corral-jwt-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("test");
        dir
    }

    fn now() -> i64 {
        Utc::now().timestamp()
    }

    fn claims() -> serde_json::Value {
        json!({"iss": ISSUER, "aud": "corral", "sub": "alice", "exp": now() + 600,
               "nbf": now() - 10, "groups": ["staff", "other"], "jti": "j-1"})
    }

    fn sign(
        alg: Algorithm,
        kid: Option<&str>,
        key: &EncodingKey,
        claims: &serde_json::Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, key).expect("test")
    }

    fn setup() -> (Keys, JwtValidator, PathBuf) {
        let keys = keys();
        let dir = tempdir();
        let v = JwtValidator::new(config(&dir, &keys.jwks)).expect("test");
        (keys, v, dir)
    }

    #[test]
    fn valid_tokens_of_every_algorithm_authenticate() {
        let (k, v, _dir) = setup();
        let tokens = [
            sign(
                Algorithm::RS256,
                Some("rsa1"),
                &EncodingKey::from_rsa_der(RSA_DER),
                &claims(),
            ),
            sign(
                Algorithm::ES256,
                Some("ec1"),
                &EncodingKey::from_ec_der(&k.ec),
                &claims(),
            ),
            sign(
                Algorithm::EdDSA,
                Some("ed1"),
                &EncodingKey::from_ed_der(&k.ed),
                &claims(),
            ),
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(SECRET),
                &claims(),
            ),
        ];
        for token in tokens {
            let c = v.validate(&token).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.subject, "oidc:alice");
            assert_eq!(c.roles, vec!["viewer".to_string()]);
            assert_eq!(c.kind, CredentialKind::Jwt);
            assert_eq!(
                c.expires_at.expect("test").timestamp(),
                claims()["exp"].as_i64().expect("test")
            );
            let again = v.validate(&token).expect("test");
            assert_eq!(c.token_id, again.token_id, "the token id is stable");
        }
    }

    #[test]
    fn a_decimal_exp_still_sets_the_expiry() {
        let (k, v, _dir) = setup();
        let ed = EncodingKey::from_ed_der(&k.ed);
        let mut c = claims();
        let exp = now() + 600;
        c["exp"] = json!(exp as f64 + 0.5);
        let token = sign(Algorithm::EdDSA, Some("ed1"), &ed, &c);
        let credential = v.validate(&token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            credential.expires_at.map(|t| t.timestamp()),
            Some(exp),
            "an open websocket must close at it"
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        let (k, v, _dir) = setup();
        let ed = EncodingKey::from_ed_der(&k.ed);
        let with = |patch: serde_json::Value| {
            let mut c = claims();
            for (key, value) in patch.as_object().expect("test") {
                if value.is_null() {
                    c.as_object_mut().expect("test").remove(key);
                } else {
                    c[key] = value.clone();
                }
            }
            sign(Algorithm::EdDSA, Some("ed1"), &ed, &c)
        };
        let cases = [
            ("expired", with(json!({"exp": now() - 60}))),
            ("no exp", with(json!({"exp": null}))),
            ("not yet valid", with(json!({"nbf": now() + 120}))),
            (
                "wrong issuer",
                with(json!({"iss": "https://evil.example.com"})),
            ),
            ("no issuer", with(json!({"iss": null}))),
            ("wrong audience", with(json!({"aud": "other"}))),
            ("no subject", with(json!({"sub": null}))),
            (
                "a control character in the subject",
                with(json!({"sub": "eve\u{7}"})),
            ),
            (
                "a bidi override in the subject",
                with(json!({"sub": "eve\u{202e}gpj"})),
            ),
        ];
        for (what, token) in cases {
            assert!(v.validate(&token).is_err(), "{what} must be refused");
        }
        // Within the leeway, still valid.
        assert!(v.validate(&with(json!({"exp": now() - 5}))).is_ok());

        // Bad signature: signed by another Ed25519 key under the same kid.
        let other = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("test");
        let forged = sign(
            Algorithm::EdDSA,
            Some("ed1"),
            &EncodingKey::from_ed_der(other.as_ref()),
            &claims(),
        );
        assert!(matches!(v.validate(&forged), Err(JwtError::Invalid(_))));
        // A tampered payload.
        let good = with(json!({}));
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims();
        c["groups"] = json!(["corral-admins"]);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(c.to_string().as_bytes()),
            parts[2]
        );
        assert!(v.validate(&tampered).is_err());

        // alg: none.
        let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let none = format!("{none_header}.{}.", b64(claims().to_string().as_bytes()));
        assert!(matches!(v.validate(&none), Err(JwtError::Malformed(_))));

        // Key confusion: an HS256 token "signed" with the RSA public key's bytes.
        for secret in [k.rsa_public.clone(), k.jwks.to_string().into_bytes()] {
            let confused = sign(
                Algorithm::HS256,
                Some("rsa1"),
                &EncodingKey::from_secret(&secret),
                &claims(),
            );
            assert!(v.validate(&confused).is_err());
        }
        // ...and with no HS256 secret configured at all.
        let dir = tempdir();
        let no_hs = JwtValidator::new(JwtConfig {
            hs256_secret: None,
            ..config(&dir, &k.jwks)
        })
        .expect("test");
        let confused = sign(
            Algorithm::HS256,
            Some("rsa1"),
            &EncodingKey::from_secret(&k.rsa_public),
            &claims(),
        );
        assert!(matches!(
            no_hs.validate(&confused),
            Err(JwtError::Algorithm(Algorithm::HS256))
        ));
        // An RS256 header on the Ed25519 key's kid.
        let rs_on_ed = sign(
            Algorithm::RS256,
            Some("ed1"),
            &EncodingKey::from_rsa_der(RSA_DER),
            &claims(),
        );
        assert!(matches!(
            v.validate(&rs_on_ed),
            Err(JwtError::Algorithm(Algorithm::RS256))
        ));
        // A signing token with an encryption key's kid.
        let enc = sign(
            Algorithm::RS256,
            Some("enc1"),
            &EncodingKey::from_rsa_der(RSA_DER),
            &claims(),
        );
        assert!(matches!(v.validate(&enc), Err(JwtError::UnknownKey(_))));
        // An HS256 token with the right secret but signed by the wrong one.
        let wrong = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(b"another secret of more than 32 bytes"),
            &claims(),
        );
        assert!(v.validate(&wrong).is_err());

        // Unknown kid.
        let unknown = sign(Algorithm::EdDSA, Some("nope"), &ed, &claims());
        assert!(matches!(v.validate(&unknown), Err(JwtError::UnknownKey(_))));
        // Not a JWT at all.
        assert!(v.validate("garbage").is_err());
    }

    #[test]
    fn a_rotated_jwks_is_picked_up_at_most_every_30_seconds() {
        let (k, v, _dir) = setup();
        let rng = SystemRandom::new();
        let new = Ed25519KeyPair::generate_pkcs8(&rng).expect("test");
        let new_pub = Ed25519KeyPair::from_pkcs8(new.as_ref())
            .expect("test")
            .public_key()
            .as_ref()
            .to_vec();
        let mut rotated = k.jwks.clone();
        rotated["keys"]
            .as_array_mut()
            .expect("test")
            .push(json!({"kty": "OKP", "kid": "ed2", "crv": "Ed25519", "x": b64(&new_pub)}));
        std::fs::write(
            v.config.jwks_file.as_ref().expect("test"),
            rotated.to_string(),
        )
        .expect("test");
        let token = sign(
            Algorithm::EdDSA,
            Some("ed2"),
            &EncodingKey::from_ed_der(new.as_ref()),
            &claims(),
        );
        // Read at start less than 30 s ago: no re-read yet.
        assert!(matches!(v.validate(&token), Err(JwtError::UnknownKey(_))));
        // 30 s later, the unknown kid triggers one re-read.
        *v.read_at.lock().expect("test") = Instant::now() - JWKS_REREAD;
        assert!(v.validate(&token).is_ok());
        // ...and the next unknown kid does not re-read again at once.
        *v.read_at.lock().expect("test") = Instant::now();
        std::fs::write(v.config.jwks_file.as_ref().expect("test"), "{\"keys\": []}").expect("test");
        assert!(!v.reread());
        assert!(v.validate(&token).is_ok());
    }

    #[test]
    fn claims_map_to_roles() {
        let (k, v, _dir) = setup();
        let ed = EncodingKey::from_ed_der(&k.ed);
        let roles_of = |groups: serde_json::Value| {
            let mut c = claims();
            c["groups"] = groups;
            v.validate(&sign(Algorithm::EdDSA, Some("ed1"), &ed, &c))
                .expect("test")
                .roles
        };
        assert_eq!(roles_of(json!("netops")), vec!["operator"]);
        assert_eq!(
            roles_of(json!(["staff", "corral-admins"])),
            vec!["admin", "viewer"]
        );
        assert!(roles_of(json!(["nobody"])).is_empty());
        let scoped = {
            let mut c = claims();
            c["groups"] = json!(["site-a-team"]);
            v.validate(&sign(Algorithm::EdDSA, Some("ed1"), &ed, &c))
                .expect("test")
        };
        assert!(scoped.roles.is_empty());
        assert_eq!(
            scoped.scoped,
            vec![crate::scope::ScopedRole {
                role: "operator".into(),
                scope: Uuid::from_u128(0xa)
            }]
        );
        assert!(roles_of(json!(null)).is_empty());
        assert!(roles_of(json!(42)).is_empty());

        let dir = tempdir();
        let custom = JwtValidator::new(JwtConfig {
            subject_claim: "email".into(),
            roles_claim: "roles".into(),
            ..config(&dir, &k.jwks)
        })
        .expect("test");
        let mut c = claims();
        c["email"] = json!("bob@example.com");
        c["roles"] = json!(["netops"]);
        let got = custom
            .validate(&sign(Algorithm::EdDSA, Some("ed1"), &ed, &c))
            .expect("test");
        assert_eq!(got.subject, "oidc:bob@example.com");
        assert_eq!(got.roles, vec!["operator"]);
        assert_eq!(got.primary_role(), "operator");

        // Without a jti, the token id is the token's hash: two tokens, two ids.
        c.as_object_mut().expect("test").remove("jti");
        let a = custom
            .validate(&sign(Algorithm::EdDSA, Some("ed1"), &ed, &c))
            .expect("test");
        c["exp"] = json!(now() + 700);
        let b = custom
            .validate(&sign(Algorithm::EdDSA, Some("ed1"), &ed, &c))
            .expect("test");
        assert_ne!(a.token_id, b.token_id);
    }

    #[test]
    fn role_maps_take_roles_and_scopes() {
        let site = Uuid::from_u128(7);
        assert_eq!(
            parse_role_map(&format!(" a=admin , b=viewer@{site},c=netops")).expect("test"),
            vec![
                ("a".into(), corral_domain::access::Binding::global("admin")),
                (
                    "b".into(),
                    corral_domain::access::Binding {
                        role: "viewer".into(),
                        scope: Some(site)
                    }
                ),
                ("c".into(), corral_domain::access::Binding::global("netops")),
            ]
        );
        assert!(parse_role_map("a=Root Role")
            .expect_err("refused")
            .contains("Root Role"));
        assert!(parse_role_map("a=viewer@site-a")
            .expect_err("refused")
            .contains("not a group id"));
        assert!(parse_role_map("a").is_err());
        assert!(parse_role_map("=admin").is_err());
    }

    #[test]
    fn a_bad_jwks_file_stops_the_start() {
        let dir = tempdir();
        let k = keys();
        for bad in [
            json!({"keys": []}),
            json!({"nokeys": 1}),
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
        ] {
            let e = JwtValidator::new(JwtConfig {
                hs256_secret: None,
                ..config(&dir, &bad)
            })
            .expect_err("refused");
            assert!(e.contains("CORRAL_JWT_JWKS_FILE"), "{e}");
        }
        let mut c = config(&dir, &k.jwks);
        c.jwks_file = Some(dir.join("missing.json"));
        assert!(JwtValidator::new(c)
            .expect_err("refused")
            .contains("CORRAL_JWT_JWKS_FILE"));
    }
}
