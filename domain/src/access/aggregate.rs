use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    known_role, valid_subject, AccessCommand, AccessError, AccessEvent, Binding, MAX_BINDINGS,
    MAX_LIVE_TOKENS, MAX_REASON_CHARS,
};

/// A token as its subject's state knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenState {
    /// Its public prefix.
    pub prefix: String,
    /// The bindings it may use.
    pub bindings: Vec<Binding>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked: bool,
    /// Recorded as expired.
    pub expired: bool,
}

impl TokenState {
    /// Neither revoked nor past its expiry at `now`.
    pub fn live_at(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && !self.expired && self.expires_at.is_none_or(|at| at > now)
    }
}

/// A subject's state, folded from its events.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    name: Option<String>,
    bindings: BTreeSet<Binding>,
    tokens: BTreeMap<Uuid, TokenState>,
}

impl Subject {
    /// The subject's name, once it exists.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The bindings it holds.
    pub fn bindings(&self) -> &BTreeSet<Binding> {
        &self.bindings
    }

    /// Its tokens, revoked and expired ones included.
    pub fn tokens(&self) -> &BTreeMap<Uuid, TokenState> {
        &self.tokens
    }

    /// What `command` records, or why it is refused. Pure: the time comes in the command.
    pub fn decide(&self, command: AccessCommand) -> Result<Vec<AccessEvent>, AccessError> {
        match command {
            AccessCommand::CreateToken {
                subject,
                token_id,
                prefix,
                bindings,
                expires_at,
                now,
            } => {
                let mut events = self.ensure_subject(&subject)?;
                if self.tokens.contains_key(&token_id) {
                    return Err(AccessError::TokenExists(token_id));
                }
                if prefix.is_empty() || prefix.len() > 32 || !prefix.is_ascii() {
                    return Err(AccessError::invalid("prefix", "1 to 32 ASCII characters"));
                }
                if bindings.is_empty() {
                    return Err(AccessError::invalid("bindings", "a token needs a role"));
                }
                let bindings = check_bindings(bindings)?;
                if let Some(at) = expires_at.filter(|at| *at <= now) {
                    return Err(AccessError::invalid(
                        "expiresAt",
                        format!("{at} is not in the future"),
                    ));
                }
                let live = self.tokens.values().filter(|t| t.live_at(now)).count();
                if live >= MAX_LIVE_TOKENS {
                    return Err(AccessError::TooMany {
                        what: "tokens",
                        max: MAX_LIVE_TOKENS,
                    });
                }
                let new: Vec<&Binding> = bindings
                    .iter()
                    .filter(|b| !self.bindings.contains(b))
                    .collect();
                if self.bindings.len() + new.len() > MAX_BINDINGS {
                    return Err(AccessError::TooMany {
                        what: "bindings",
                        max: MAX_BINDINGS,
                    });
                }
                events.extend(
                    new.into_iter()
                        .map(|b| AccessEvent::RoleGranted { binding: b.clone() }),
                );
                events.push(AccessEvent::TokenCreated {
                    token_id,
                    prefix,
                    bindings,
                    expires_at,
                });
                Ok(events)
            }
            AccessCommand::RevokeToken { token_id, reason } => {
                let token = self
                    .tokens
                    .get(&token_id)
                    .ok_or(AccessError::TokenNotFound(token_id))?;
                let reason = reason
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty());
                if let Some(r) = &reason {
                    if r.chars().count() > MAX_REASON_CHARS {
                        return Err(AccessError::invalid(
                            "reason",
                            format!("at most {MAX_REASON_CHARS} characters"),
                        ));
                    }
                }
                if token.revoked || token.expired {
                    return Ok(vec![]);
                }
                Ok(vec![AccessEvent::TokenRevoked { token_id, reason }])
            }
            AccessCommand::ExpireToken { token_id, now } => {
                let token = self
                    .tokens
                    .get(&token_id)
                    .ok_or(AccessError::TokenNotFound(token_id))?;
                let due = token.expires_at.is_some_and(|at| at <= now);
                if token.revoked || token.expired || !due {
                    return Ok(vec![]);
                }
                Ok(vec![AccessEvent::TokenExpired { token_id }])
            }
            AccessCommand::GrantRole { subject, binding } => {
                let mut events = self.ensure_subject(&subject)?;
                let binding = check_bindings(vec![binding])?.remove(0);
                if self.bindings.contains(&binding) {
                    return Ok(vec![]);
                }
                if self.bindings.len() >= MAX_BINDINGS {
                    return Err(AccessError::TooMany {
                        what: "bindings",
                        max: MAX_BINDINGS,
                    });
                }
                events.push(AccessEvent::RoleGranted { binding });
                Ok(events)
            }
            AccessCommand::RevokeRole { binding } => {
                if !self.bindings.contains(&binding) {
                    return Ok(vec![]);
                }
                Ok(vec![AccessEvent::RoleRevoked { binding }])
            }
        }
    }

    /// `SubjectCreated` for a subject that does not exist yet; nothing for this subject; a
    /// refusal for a name that is not this subject's (the id is derived from the name).
    fn ensure_subject(&self, raw: &str) -> Result<Vec<AccessEvent>, AccessError> {
        let subject = valid_subject(raw)?;
        match &self.name {
            None => Ok(vec![AccessEvent::SubjectCreated { subject }]),
            Some(name) if *name == subject => Ok(vec![]),
            Some(name) => Err(AccessError::invalid(
                "subject",
                format!("this aggregate is subject {name:?}, not {subject:?}"),
            )),
        }
    }
}

/// Well-formed role names (built in or custom: the API checks that a custom role is defined
/// when a binding is granted), no duplicates (kept in the order given).
fn check_bindings(bindings: Vec<Binding>) -> Result<Vec<Binding>, AccessError> {
    if bindings.len() > MAX_BINDINGS {
        return Err(AccessError::TooMany {
            what: "bindings",
            max: MAX_BINDINGS,
        });
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(bindings.len());
    for b in bindings {
        if !known_role(&b.role) {
            super::valid_role_name(&b.role)?;
        }
        if seen.insert(b.clone()) {
            out.push(b);
        }
    }
    Ok(out)
}

impl Aggregate for Subject {
    const TYPE: &'static str = "Subject";
    type Command = AccessCommand;
    type Event = AccessEvent;
    type Error = AccessError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _service: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AccessEvent::SubjectCreated { subject } => self.name = Some(subject),
            AccessEvent::RoleGranted { binding } => {
                self.bindings.insert(binding);
            }
            AccessEvent::RoleRevoked { binding } => {
                self.bindings.remove(&binding);
            }
            AccessEvent::TokenCreated {
                token_id,
                prefix,
                bindings,
                expires_at,
            } => {
                self.tokens.insert(
                    token_id,
                    TokenState {
                        prefix,
                        bindings,
                        expires_at,
                        revoked: false,
                        expired: false,
                    },
                );
            }
            AccessEvent::TokenRevoked { token_id, .. } => {
                if let Some(t) = self.tokens.get_mut(&token_id) {
                    t.revoked = true;
                }
            }
            AccessEvent::TokenExpired { token_id } => {
                if let Some(t) = self.tokens.get_mut(&token_id) {
                    t.expired = true;
                }
            }
        }
    }
}
