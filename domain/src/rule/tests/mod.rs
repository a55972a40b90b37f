//! Unit tests of the rule language.

mod equivalence;
mod features;
mod rejections;
mod roundtrip;
mod srql;

use chrono::{DateTime, TimeZone, Utc};

use super::*;

pub(super) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0)
        .single()
        .expect("time")
}

pub(super) fn ctx() -> EvalContext<'static> {
    EvalContext {
        now: now(),
        groups: &(),
    }
}

pub(super) fn device(id: &str) -> Device {
    Device {
        id: id.into(),
        ..Device::default()
    }
}

pub(super) fn parsed(text: &str) -> Parsed {
    parse(text, GroupType::Device).unwrap_or_else(|e| panic!("`{text}` should parse: {e}"))
}

pub(super) fn rule(text: &str) -> Rule {
    parsed(text).rule
}

/// Whether the device rule `text` selects `d`.
pub(super) fn hit(text: &str, d: &Device) -> bool {
    rule(text).matches(Entity::Device(d), &ctx())
}

/// Which of `devices` the rule selects, by id.
pub(super) fn selected(text: &str, devices: &[Device]) -> Vec<String> {
    let r = rule(text);
    devices
        .iter()
        .filter(|d| r.matches(Entity::Device(d), &ctx()))
        .map(|d| d.id.clone())
        .collect()
}

/// The error of a device rule that must be rejected.
pub(super) fn error(text: &str) -> RuleError {
    match parse(text, GroupType::Device) {
        Ok(p) => panic!("`{text}` should be rejected, got `{}`", p.rule.to_text()),
        Err(e) => e,
    }
}

/// Asserts a rejection at `column` whose message contains `needle`.
pub(super) fn rejected_at(text: &str, column: usize, needle: &str) {
    let e = error(text);
    assert_eq!(e.column, Some(column), "`{text}`: {e}");
    assert!(
        e.message.contains(needle),
        "`{text}`: `{}` should mention `{needle}`",
        e.message
    );
}

pub(super) fn normalized(text: &str) -> String {
    rule(text).to_text()
}
