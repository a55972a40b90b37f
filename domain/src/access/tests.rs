use chrono::{Duration, TimeZone, Utc};
use cqrs_es::Aggregate;
use uuid::Uuid;

use super::*;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0)
        .single()
        .expect("time")
}

fn fold(events: &[AccessEvent]) -> Subject {
    let mut s = Subject::default();
    for e in events {
        s.apply(e.clone());
    }
    s
}

fn create(token: u128, bindings: Vec<Binding>) -> AccessCommand {
    AccessCommand::CreateToken {
        subject: "alice".into(),
        token_id: Uuid::from_u128(token),
        prefix: "crl_0123abcd".into(),
        bindings,
        expires_at: None,
        now: now(),
    }
}

fn scoped(role: &str, group: u128) -> Binding {
    Binding {
        role: role.into(),
        scope: Some(Uuid::from_u128(group)),
    }
}

#[test]
fn a_first_token_creates_the_subject_and_grants_its_bindings() {
    let events = Subject::default()
        .decide(create(
            1,
            vec![Binding::global("viewer"), scoped("admin", 7)],
        ))
        .expect("created");
    let names: Vec<&str> = events.iter().map(AccessEvent::name).collect();
    assert_eq!(
        names,
        [
            "SubjectCreated",
            "RoleGranted",
            "RoleGranted",
            "TokenCreated"
        ]
    );
    let s = fold(&events);
    assert_eq!(s.name(), Some("alice"));
    assert_eq!(s.bindings().len(), 2);
    // A second token with a held binding grants nothing new.
    let again = s.decide(create(2, vec![scoped("admin", 7)])).expect("ok");
    assert_eq!(
        again.iter().map(AccessEvent::name).collect::<Vec<_>>(),
        ["TokenCreated"]
    );
}

#[test]
fn bad_roles_subjects_expiries_and_duplicate_ids_are_refused() {
    let s = Subject::default();
    let err = s
        .decide(create(1, vec![Binding::global("Root Role")]))
        .expect_err("a malformed role name");
    assert_eq!(err.field(), Some("role"));
    let err = s.decide(create(1, vec![])).expect_err("no role");
    assert_eq!(err.field(), Some("bindings"));
    let err = s
        .decide(AccessCommand::GrantRole {
            subject: "a\u{7}b".into(),
            binding: Binding::global("viewer"),
        })
        .expect_err("control");
    assert_eq!(err.field(), Some("subject"));
    let past = AccessCommand::CreateToken {
        subject: "alice".into(),
        token_id: Uuid::from_u128(1),
        prefix: "crl_x".into(),
        bindings: vec![Binding::global("viewer")],
        expires_at: Some(now() - Duration::seconds(1)),
        now: now(),
    };
    assert_eq!(s.decide(past).expect_err("past").field(), Some("expiresAt"));
    let s = fold(
        &s.decide(create(1, vec![Binding::global("viewer")]))
            .expect("ok"),
    );
    assert_eq!(
        s.decide(create(1, vec![Binding::global("viewer")])),
        Err(AccessError::TokenExists(Uuid::from_u128(1)))
    );
    let other = AccessCommand::GrantRole {
        subject: "bob".into(),
        binding: Binding::global("viewer"),
    };
    assert_eq!(s.decide(other).expect_err("name").field(), Some("subject"));
}

#[test]
fn revoking_and_expiring_happen_once() {
    let mut events = Subject::default()
        .decide(AccessCommand::CreateToken {
            subject: "alice".into(),
            token_id: Uuid::from_u128(1),
            prefix: "crl_x".into(),
            bindings: vec![Binding::global("viewer")],
            expires_at: Some(now() + Duration::hours(1)),
            now: now(),
        })
        .expect("ok");
    let s = fold(&events);
    let id = Uuid::from_u128(1);
    assert!(s.tokens()[&id].live_at(now()));
    assert!(!s.tokens()[&id].live_at(now() + Duration::hours(1)));
    let early = AccessCommand::ExpireToken {
        token_id: id,
        now: now(),
    };
    assert_eq!(s.decide(early), Ok(vec![]), "not due yet");
    let revoke = AccessCommand::RevokeToken {
        token_id: id,
        reason: Some(" leaked ".into()),
    };
    let revoked = s.decide(revoke.clone()).expect("revoked");
    assert_eq!(
        revoked,
        vec![AccessEvent::TokenRevoked {
            token_id: id,
            reason: Some("leaked".into())
        }]
    );
    events.extend(revoked);
    let s = fold(&events);
    assert_eq!(s.decide(revoke), Ok(vec![]), "twice is a no-op");
    let late = AccessCommand::ExpireToken {
        token_id: id,
        now: now() + Duration::hours(2),
    };
    assert_eq!(
        s.decide(late),
        Ok(vec![]),
        "a revoked token does not expire"
    );
    let unknown = AccessCommand::RevokeToken {
        token_id: Uuid::from_u128(9),
        reason: None,
    };
    assert_eq!(
        s.decide(unknown),
        Err(AccessError::TokenNotFound(Uuid::from_u128(9)))
    );
}

#[test]
fn grants_and_revocations_of_roles_are_idempotent() {
    let grant = AccessCommand::GrantRole {
        subject: "svc".into(),
        binding: scoped("operator", 3),
    };
    let events = Subject::default().decide(grant.clone()).expect("ok");
    assert_eq!(events.len(), 2);
    let s = fold(&events);
    assert_eq!(s.decide(grant), Ok(vec![]));
    let revoke = AccessCommand::RevokeRole {
        binding: scoped("operator", 3),
    };
    let gone = s.decide(revoke.clone()).expect("ok");
    assert_eq!(gone.len(), 1);
    let s = fold(&[events, gone].concat());
    assert!(s.bindings().is_empty());
    assert_eq!(s.decide(revoke), Ok(vec![]));
}

#[test]
fn subject_ids_are_stable_and_ignore_surrounding_space() {
    assert_eq!(subject_id("alice"), subject_id(" alice "));
    assert_ne!(subject_id("alice"), subject_id("Alice"));
}
