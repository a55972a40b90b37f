//! The canonical byte form of an event, hashed into the chain.
//!
//! Compact JSON with object keys sorted by their UTF-8 bytes, whatever order the JSON library
//! or PostgreSQL's jsonb keeps them in, so that the chain can be recomputed by any tool.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::log::EventRecord;

/// Writes `value` as canonical JSON into `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_str(s, out),
        // The same compact form as `Value`'s `Display`, written in place.
        scalar => serde_json::to_writer(&mut *out, scalar)
            .expect("a JSON scalar always serializes into a Vec"),
    }
}

/// A JSON string literal, escaped as `serde_json` escapes it, without building a `Value`.
fn write_str(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, s).expect("a str always serializes into a Vec");
}

/// The canonical form of an event at a log position: an object with the keys below, in
/// sorted order, written directly (without copying the payload).
pub fn canonical_event(event: &EventRecord, log_position: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let string = write_str;
    out.extend_from_slice(b"{\"aggregateId\":");
    string(&event.aggregate_id, &mut out);
    out.extend_from_slice(b",\"aggregateType\":");
    string(&event.aggregate_type, &mut out);
    out.extend_from_slice(b",\"eventId\":");
    string(&event.event_id.to_string(), &mut out);
    out.extend_from_slice(b",\"eventType\":");
    string(&event.event_type, &mut out);
    out.extend_from_slice(b",\"eventVersion\":");
    string(&event.event_version, &mut out);
    out.extend_from_slice(b",\"metadata\":");
    write_canonical(&event.metadata, &mut out);
    out.extend_from_slice(b",\"payload\":");
    write_canonical(&event.payload, &mut out);
    out.extend_from_slice(format!(",\"position\":{log_position},\"recordedAt\":").as_bytes());
    string(&format_time(event.recorded_at), &mut out);
    out.extend_from_slice(format!(",\"version\":{}}}", event.sequence).as_bytes());
    out
}

/// Timestamps as the chain hashes them (and the envelope carries them): RFC 3339, UTC,
/// microseconds.
pub fn format_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The chain link: `sha256(prev_hash || canonical event)`.
pub fn chain_hash(prev_hash: &[u8], event: &EventRecord, log_position: i64) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(canonical_event(event, log_position));
    hasher.finalize().to_vec()
}

/// The hash that precedes position 1.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The form the chain was first hashed with: every string and scalar through `Value`'s
    /// `Display`. The in-place writer must produce the same bytes, or stored chains break.
    fn reference(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    reference(&Value::String(key.clone()), out);
                    out.push(b':');
                    reference(&map[key], out);
                }
                out.push(b'}');
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    reference(item, out);
                }
                out.push(b']');
            }
            scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
        }
    }

    #[test]
    fn the_in_place_writer_matches_the_display_based_form_byte_for_byte() {
        let value = json!({
            "ü": "tab\there \"quoted\" \\ back\u{0001}\u{001f}\u{007f} é 日本 😀",
            "Z": [1, -2, 3.5, 1e300, -0.0, 18446744073709551615u64, -9223372036854775808i64,
                  true, false, null, [], {}],
            "a": {"k\n": {"deep": [{"b": 1, "a": 2, "A": 3, "é": 4, "e": 5}]}},
            "": ""
        });
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        write_canonical(&value, &mut ours);
        reference(&value, &mut theirs);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    #[test]
    fn keys_are_sorted_at_every_level() {
        let mut out = Vec::new();
        write_canonical(
            &json!({"b": 1, "a": {"z": [1, {"y": 2, "x": "é"}], "c": null}}),
            &mut out,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"a":{"c":null,"z":[1,{"x":"é","y":2}]},"b":1}"#
        );
    }

    #[test]
    fn an_event_is_an_object_with_sorted_keys() {
        let event = EventRecord {
            global_position: 7,
            transaction_id: 9,
            event_id: uuid::Uuid::nil(),
            aggregate_type: "Group".into(),
            aggregate_id: "g1".into(),
            sequence: 2,
            event_type: "GroupRenamed".into(),
            event_version: "1".into(),
            payload: json!({"GroupRenamed": {"previous_name": "a", "name": "b"}}),
            metadata: json!({"source": "api", "actor_subject": "alice"}),
            recorded_at: chrono::DateTime::from_timestamp(0, 1000).expect("time"),
        };
        let text = String::from_utf8(canonical_event(&event, 5)).expect("utf8");
        let reparsed: Value = serde_json::from_str(&text).expect("valid JSON");
        let mut sorted = Vec::new();
        write_canonical(&reparsed, &mut sorted);
        assert_eq!(
            text.as_bytes(),
            sorted.as_slice(),
            "already canonical: {text}"
        );
        assert_eq!(reparsed["position"], 5);
        assert_eq!(reparsed["recordedAt"], "1970-01-01T00:00:00.000001Z");
        assert_ne!(
            chain_hash(&GENESIS_HASH, &event, 5),
            chain_hash(&GENESIS_HASH, &event, 6)
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_canonical(&json!({"k\"": "line\nbreak"}), &mut out);
        assert_eq!(String::from_utf8_lossy(&out), r#"{"k\"":"line\nbreak"}"#);
    }
}
