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
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(&map[key], out);
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
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// The canonical form of an event at a log position.
pub fn canonical_event(event: &EventRecord, log_position: i64) -> Vec<u8> {
    let doc = serde_json::json!({
        "position": log_position,
        "eventId": event.event_id.to_string(),
        "aggregateType": event.aggregate_type,
        "aggregateId": event.aggregate_id,
        "version": event.sequence,
        "eventType": event.event_type,
        "eventVersion": event.event_version,
        "recordedAt": event.recorded_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "payload": event.payload,
        "metadata": event.metadata,
    });
    let mut out = Vec::with_capacity(512);
    write_canonical(&doc, &mut out);
    out
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
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_canonical(&json!({"k\"": "line\nbreak"}), &mut out);
        assert_eq!(String::from_utf8_lossy(&out), r#"{"k\"":"line\nbreak"}"#);
    }
}
