//! Validation of feed items.

use super::*;
use serde_json::json;

fn device(v: Value) -> Result<Device, Vec<FieldError>> {
    device_from_json(v)
}

fn fields(r: Result<Device, Vec<FieldError>>) -> Vec<String> {
    r.err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.field)
        .collect()
}

#[test]
fn a_full_device_is_normalized() {
    let d = device(json!({
        "id": "dev-1", "hostname": "  web-01 ", "ip": "2001:DB8:0:0::1", "mac": "AA-BB-CC-DD-EE-FF",
        "osVersion": "12", "type": "server", "tags": ["Env=Prod", "critical", "role=a=b"],
        "metadata": {"Rack": "R1", "note": "line1\nline2"}, "discoverySources": ["snmp", "armis", "snmp"],
        "isAvailable": true, "lastSeen": "2026-01-02T03:04:05Z", "unknownKey": 1
    }))
    .expect("valid");
    assert_eq!(d.hostname.as_deref(), Some("web-01"));
    assert_eq!(d.ip.as_deref(), Some("2001:db8::1"));
    assert_eq!(d.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
    assert_eq!(d.os_version.as_deref(), Some("12"));
    assert_eq!(d.device_type.as_deref(), Some("server"));
    let tags: Vec<(&str, &str)> = d
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        tags,
        vec![("critical", ""), ("env", "Prod"), ("role", "a=b")]
    );
    assert_eq!(d.metadata.get("rack").map(String::as_str), Some("R1"));
    assert_eq!(d.discovery_sources, vec!["snmp", "armis"]);
    assert_eq!(d.is_available, Some(true));
    assert!(d.last_seen.is_some() && d.first_seen.is_none());
}

#[test]
fn empty_texts_are_absent_and_only_the_id_is_required() {
    let d = device(json!({"id": "x", "hostname": "  ", "ip": ""})).expect("valid");
    assert_eq!(
        d,
        Device {
            id: "x".into(),
            ..Device::default()
        }
    );
    assert_eq!(
        fields(device(json!({"hostname": "h"}))),
        vec![""],
        "missing id"
    );
}

#[test]
fn ids_are_bounded_and_clean() {
    for bad in ["", " a", "a\u{7}b", &"x".repeat(257)] {
        assert_eq!(fields(device(json!({"id": bad}))), vec!["id"], "{bad:?}");
    }
    assert!(device(json!({"id": "x".repeat(256)})).is_ok());
    assert!(device(json!({"id": "dev/ü 1"})).is_ok());
}

#[test]
fn ip_and_mac_must_parse() {
    assert_eq!(
        fields(device(json!({"id": "a", "ip": "10.0.0.256"}))),
        vec!["ip"]
    );
    assert_eq!(
        fields(device(json!({"id": "a", "ip": "fe80::1%eth0"}))),
        vec!["ip"]
    );
    assert_eq!(
        device(json!({"id": "a", "ip": " 10.0.0.1 "}))
            .ok()
            .and_then(|d| d.ip),
        Some("10.0.0.1".into())
    );
    for good in ["aabb.ccdd.eeff", "aabbccddeeff", "AA:BB:CC:DD:EE:FF"] {
        let d = device(json!({"id": "a", "mac": good})).expect(good);
        assert_eq!(d.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
    }
    for bad in [
        "aa:bb:cc:dd:ee",
        "gg:bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee:ff:00",
        "aa_bb_cc_dd_ee_ff",
    ] {
        assert_eq!(
            fields(device(json!({"id": "a", "mac": bad}))),
            vec!["mac"],
            "{bad}"
        );
    }
}

#[test]
fn tags_keys_are_lower_case_and_limited() {
    let many: Vec<String> = (0..65).map(|i| format!("k{i}")).collect();
    assert_eq!(
        fields(device(json!({"id": "a", "tags": many}))),
        vec!["tags"]
    );
    assert_eq!(
        fields(device(json!({"id": "a", "tags": ["ok", "bad key"]}))),
        vec!["tags[1]"]
    );
    assert_eq!(
        fields(device(json!({"id": "a", "tags": ["=v"]}))),
        vec!["tags[0]"]
    );
    assert_eq!(
        fields(device(
            json!({"id": "a", "tags": [format!("{}=v", "k".repeat(65))]})
        )),
        vec!["tags[0]"]
    );
    assert_eq!(
        fields(device(json!({"id": "a", "tags": ["Env=a", "env=b"]}))),
        vec!["tags[1]"]
    );
    assert!(device(json!({"id": "a", "tags": ["Env=a", "env=a"]})).is_ok());
}

#[test]
fn metadata_is_an_object_of_strings() {
    assert_eq!(
        fields(device(json!({"id": "a", "metadata": [1]}))),
        vec!["metadata"]
    );
    assert_eq!(
        fields(device(json!({"id": "a", "metadata": {"n": 1}}))),
        vec!["metadata.n"]
    );
    assert_eq!(
        fields(device(json!({"id": "a", "metadata": {"a": "x\u{0}"}}))),
        vec!["metadata.a"]
    );
    assert_eq!(
        fields(device(json!({"id": "a", "metadata": {"A": "1", "a": "2"}}))).len(),
        1
    );
    let big: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_eq!(
        fields(device(json!({"id": "a", "metadata": big}))),
        vec!["metadata"]
    );
    assert_eq!(
        fields(device(
            json!({"id": "a", "metadata": {"k": "v".repeat(1025)}})
        )),
        vec!["metadata.k"]
    );
}

#[test]
fn texts_and_sources_are_limited() {
    assert_eq!(
        fields(device(json!({"id": "a", "hostname": "h".repeat(1025)}))),
        vec!["hostname"]
    );
    assert_eq!(
        fields(device(json!({"id": "a", "site": "a\tb"}))),
        vec!["site"]
    );
    let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
    assert_eq!(
        fields(device(json!({"id": "a", "discoverySources": many}))),
        vec!["discoverySources"]
    );
    assert_eq!(
        fields(device(json!({"id": "a", "discoverySources": ["a", " "]}))),
        vec!["discoverySources[1]"]
    );
}

#[test]
fn errors_of_one_item_are_all_reported() {
    let r = device(json!({"id": "", "ip": "x", "mac": "y", "tags": ["a b"]}));
    assert_eq!(fields(r), vec!["id", "ip", "mac", "tags[0]"]);
}

#[test]
fn services_default_their_id_and_check_ports() {
    let s =
        service_from_json(json!({"deviceId": "dev-1", "type": "http", "name": "web", "port": 443}))
            .expect("valid");
    assert_eq!((s.id.as_str(), s.port), ("dev-1/http/web", Some(443)));
    let s = service_from_json(
        json!({"id": "s1", "deviceId": "d", "type": "t", "name": "n", "tags": ["A"]}),
    )
    .expect("valid");
    assert_eq!((s.id.as_str(), s.tags.contains_key("a")), ("s1", true));
    for (port, ok) in [
        (0, false),
        (1, true),
        (65535, true),
        (65536, false),
        (-1, false),
    ] {
        let r = service_from_json(json!({"deviceId": "d", "type": "t", "name": "n", "port": port}));
        assert_eq!(r.is_ok(), ok, "{port}");
    }
    let errs =
        service_from_json(json!({"deviceId": "", "type": " ", "name": "n"})).expect_err("invalid");
    let f: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(f, vec!["deviceId", "type"]);
    assert!(
        service_from_json(json!({"deviceId": "d"})).is_err(),
        "type and name are required"
    );
}
