//! Field checks shared by device and service validation: each records its errors and returns
//! the normalized value, so one pass reports every invalid field of an item.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::{
    FieldError, MAX_DISCOVERY_SOURCES, MAX_ID_CHARS, MAX_KEYS, MAX_KEY_CHARS, MAX_TEXT_CHARS,
};

/// Collects the errors of one item.
#[derive(Default)]
pub(super) struct Check(pub(super) Vec<FieldError>);

impl Check {
    pub(super) fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub(super) fn id(&mut self, field: &str, id: &str) -> String {
        let n = id.chars().count();
        if n == 0 || n > MAX_ID_CHARS {
            self.fail(field, format!("must be 1 to {MAX_ID_CHARS} characters"));
        } else if id.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        } else if id.trim() != id {
            self.fail(field, "must not start or end with white space");
        }
        id.to_string()
    }

    /// A required text: trimmed, not empty.
    pub(super) fn required(&mut self, field: &str, s: &str) -> String {
        let t = self.text(field, Some(s));
        if t.is_none() && !self.0.iter().any(|e| e.field == field) {
            self.fail(field, "must not be empty");
        }
        t.unwrap_or_default()
    }

    /// An optional text: trimmed; empty means absent.
    pub(super) fn text(&mut self, field: &str, s: Option<&str>) -> Option<String> {
        let s = s?.trim();
        if s.chars().count() > MAX_TEXT_CHARS {
            self.fail(
                field,
                format!("must be at most {MAX_TEXT_CHARS} characters"),
            );
        } else if s.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        }
        (!s.is_empty()).then(|| s.to_string())
    }

    pub(super) fn ip(&mut self, s: Option<&str>) -> Option<String> {
        let s = s.map(str::trim).filter(|s| !s.is_empty())?;
        match s.parse::<IpAddr>() {
            Ok(ip) => Some(ip.to_string()),
            Err(_) => {
                self.fail("ip", "must be an IPv4 or IPv6 address");
                None
            }
        }
    }

    pub(super) fn mac(&mut self, s: Option<&str>) -> Option<String> {
        let s = s.map(str::trim).filter(|s| !s.is_empty())?;
        let hex: String = s
            .chars()
            .filter(|c| !matches!(c, ':' | '-' | '.'))
            .collect();
        if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            self.fail(
                "mac",
                "must be 12 hex digits, optionally separated by `:`, `-` or `.`",
            );
            return None;
        }
        let hex = hex.to_ascii_lowercase();
        let pairs: Vec<&str> = (0..6).map(|i| &hex[2 * i..2 * i + 2]).collect();
        Some(pairs.join(":"))
    }

    pub(super) fn key(&mut self, field: &str, key: &str, strict: bool) -> String {
        let key = key.trim().to_lowercase();
        let n = key.chars().count();
        let ok = if strict {
            (1..=MAX_KEY_CHARS).contains(&n)
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        } else {
            (1..=MAX_KEY_CHARS).contains(&n) && !key.chars().any(char::is_control)
        };
        if !ok {
            let what = if strict {
                "letters, digits, `_` or `-`"
            } else {
                "characters other than control characters"
            };
            self.fail(field, format!("key must be 1 to {MAX_KEY_CHARS} {what}"));
        }
        key
    }

    /// Puts `key = value` in `map`; a key given twice must have the same value.
    pub(super) fn put(
        &mut self,
        map: &mut BTreeMap<String, String>,
        field: &str,
        key: String,
        value: String,
    ) {
        match map.get(&key) {
            Some(old) if *old != value => {
                self.fail(
                    field,
                    format!("key {key:?} is given twice with different values"),
                );
            }
            _ => {
                map.insert(key, value);
            }
        }
    }

    pub(super) fn tags(&mut self, tags: Option<&[String]>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let tags = tags.unwrap_or_default();
        if tags.len() > MAX_KEYS {
            self.fail("tags", format!("at most {MAX_KEYS} tags"));
            return out;
        }
        for (i, tag) in tags.iter().enumerate() {
            let field = format!("tags[{i}]");
            let (key, value) = tag.split_once('=').unwrap_or((tag, ""));
            let key = self.key(&field, key, true);
            let value = self.text(&field, Some(value)).unwrap_or_default();
            self.put(&mut out, &field, key, value);
        }
        out
    }

    pub(super) fn metadata(&mut self, metadata: Option<&Value>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let object = match metadata {
            None | Some(Value::Null) => return out,
            Some(Value::Object(o)) => o,
            Some(_) => {
                self.fail("metadata", "must be a JSON object of strings");
                return out;
            }
        };
        if object.len() > MAX_KEYS {
            self.fail("metadata", format!("at most {MAX_KEYS} keys"));
            return out;
        }
        for (key, value) in object {
            let field = format!("metadata.{key}");
            let key = self.key(&field, key, false);
            let Value::String(value) = value else {
                self.fail(&field, "must be a string");
                continue;
            };
            // Values may span lines (SNMP descriptions do); other control characters are out.
            if value.chars().count() > MAX_TEXT_CHARS {
                self.fail(
                    &field,
                    format!("must be at most {MAX_TEXT_CHARS} characters"),
                );
            } else if value
                .chars()
                .any(|c| c.is_control() && !"\t\n\r".contains(c))
            {
                self.fail(&field, "must not contain control characters");
            }
            self.put(&mut out, &field, key, value.clone());
        }
        out
    }

    pub(super) fn sources(&mut self, sources: Option<&[String]>) -> Vec<String> {
        let sources = sources.unwrap_or_default();
        if sources.len() > MAX_DISCOVERY_SOURCES {
            self.fail(
                "discoverySources",
                format!("at most {MAX_DISCOVERY_SOURCES} sources"),
            );
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let s = self.required(&format!("discoverySources[{i}]"), s);
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    pub(super) fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}
