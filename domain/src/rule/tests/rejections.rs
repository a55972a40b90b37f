//! Every rejection, with the column of the offending token.

use super::*;

#[test]
fn unknown_fields_and_operators() {
    rejected_at("vendr:Cisco", 1, "unknown field `vendr`");
    rejected_at("hostname:a !vendr:Cisco", 13, "unknown field `vendr`");
    let e = error("hostname:a vendr:x");
    assert_eq!(e.to_string(), "column 12: unknown field `vendr`");
    rejected_at("hostname=web", 1, "expected `field:value`");
    rejected_at("hostname:a XOR hostname:b", 12, "found `XOR`");
    rejected_at("hostname\"a\":b", 1, "expected `field:value`");
    rejected_at("device.ip:10.0.0.1", 1, "service's host");
    let e = parse("hostname:x", GroupType::Service).expect_err("service");
    assert_eq!(e.column, Some(1));
    assert!(e.message.contains("unknown service field"), "{e}");
}

#[test]
fn type_errors() {
    rejected_at("hostname:>a", 10, "comparisons");
    rejected_at("vendor:<=b", 8, "comparisons");
    rejected_at("last_seen:2026-01-01", 11, "is a time");
    rejected_at("first_seen:(2026-01-01)", 12, "is a time");
    rejected_at("first_seen:%2026%", 12, "is a time");
    rejected_at("last_seen:>yesterday", 11, "not a time");
    rejected_at("last_seen:>now-7y", 11, "not a time");
    rejected_at("last_seen:>now-99999w", 11, "too far");
    rejected_at("os_version:>12.x", 12, "not a version");
    rejected_at("os_version:>", 12, "empty value");
    rejected_at("mac~\"^aa\"", 5, "regexes");
    rejected_at("tags~\"x\"", 6, "regexes");
    rejected_at("is_available:%tr%", 14, "`%`");
    rejected_at("metadata:x", 10, "missing:metadata");
    rejected_at("mac:zz-zz", 5, "hex digits");
    let service = |text: &str| parse(text, GroupType::Service).expect_err(text);
    assert_eq!(service("port:http").column, Some(6));
    assert_eq!(service("port:>8o").column, Some(6));
    assert_eq!(service("last_seen:now").column, Some(11));
}

#[test]
fn negation_is_not_combined_with_comparisons_or_regexes() {
    rejected_at("!last_seen:>now-1d", 1, "comparison");
    rejected_at("hostname:a !os_version:>=2", 12, "comparison");
    rejected_at("!hostname~\"^a\"", 1, "NOT field~");
}

#[test]
fn syntax_errors() {
    rejected_at("(hostname:a", 1, "unbalanced `(`");
    rejected_at("hostname:a)", 11, "unbalanced `)`");
    rejected_at("hostname:a ()", 12, "empty parentheses");
    rejected_at("OR hostname:a", 1, "left");
    rejected_at("hostname:a OR", 12, "right");
    rejected_at("hostname:a OR OR hostname:b", 12, "right");
    rejected_at("hostname:a AND", 12, "each side");
    rejected_at("AND hostname:a", 1, "each side");
    rejected_at("NOT", 4, "end of the rule");
    rejected_at("hostname:a NOT OR hostname:b", 16, "found OR");
    rejected_at("! hostname:a", 2, "`!` must be followed by a field");
    rejected_at("!(hostname:a)", 2, "`!` must be followed by a field");
    rejected_at("!!hostname:a", 2, "`!` must be followed by a field");
    rejected_at("hostname:", 10, "empty value");
    rejected_at("hostname:\"\"", 10, "empty value");
    rejected_at("hostname:a]", 11, "unbalanced `]`");
    rejected_at("hostname:(a", 10, "unbalanced `(`");
    rejected_at("hostname~web", 10, "must be quoted");
    rejected_at("hostname~\"web", 10, "unbalanced");
    rejected_at("hostname~\"web\"x", 15, "after the regex");
    rejected_at("hostname:\"a\"'", 13, "unbalanced `'`");
    rejected_at("hostname:'a\"'", 10, "unbalanced quotes");
    rejected_at("hostname:'\"a\"", 10, "unbalanced");
}

#[test]
fn in_is_top_level_only() {
    rejected_at("(in:devices hostname:a)", 2, "whole rule");
    rejected_at("-in:devices", 2, "cannot be negated");
    rejected_at("NOT in:devices", 5, "cannot be negated");
    rejected_at("!in:devices", 1, "whole rule");
    rejected_at("hostname:a OR in:devices", 12, "right");
    rejected_at("hostname:a AND in:devices", 12, "each side");
    rejected_at("in:(devices)", 4, "devices or services");
}

#[test]
fn missing_and_group_syntax() {
    rejected_at("missing:", 9, "missing:<field>");
    rejected_at("missing:(a,b)", 9, "missing:<field>");
    rejected_at("missing:vendr", 9, "unknown field");
    rejected_at("missing~\"x\"", 1, "takes `:`");
    rejected_at("group:", 7, "group:<uuid>");
    rejected_at("group:\"Site A", 7, "unbalanced");
    rejected_at("group:\"Site A\":indirect", 7, "group:<uuid>");
    rejected_at("group::direct", 7, "group:<uuid>");
}

#[test]
fn unsatisfiable_rules() {
    rejected_at("vendor_name:A vendor_name:B", 15, "never");
    rejected_at("hostname:a model:x hostname:b", 20, "never");
    rejected_at("hostname:(a,b) hostname:c", 16, "never");
    rejected_at("mac:aa:bb mac:AABBCC", 11, "never");
    rejected_at("hostname:a !hostname:a", 12, "never");
    rejected_at("hostname:a NOT hostname:a", 16, "contradicts");
    rejected_at("missing:ip !missing:ip", 12, "contradicts");
    rejected_at("tags.env:a tags.env:b", 12, "never");
    rejected_at(
        "site:x (vendor:A OR hostname:h) (vendor:B vendor:C)",
        43,
        "never",
    );
    // Different fields, tags keys and set-valued fields are fine.
    for ok in [
        "hostname:a vendor:a",
        "tags:a tags:b",
        "discovery_sources:a discovery_sources:b",
        "hostname:(a,b) hostname:(b,c)",
        "vendor:A OR vendor:B",
        "ip:10.0.0.0/8 ip:192.168.0.0/16 OR ip:10.1.1.1",
        "device_id:a uid:a",
    ] {
        parsed(ok);
    }
}

#[test]
fn limits() {
    let long = format!("hostname:{}", "a".repeat(MAX_RULE_CHARS));
    rejected_at(&long, MAX_RULE_CHARS + 1, "at most 3072 characters");
    // The limit holds for the stored (normalized) text too, which starts with `in:devices`.
    let exact = format!("in:devices hostname:{}", "a".repeat(MAX_RULE_CHARS - 20));
    assert_eq!(exact.chars().count(), MAX_RULE_CHARS);
    assert_eq!(rule(&exact).to_text(), exact);
    let e = error(&format!("hostname:{}", "a".repeat(MAX_RULE_CHARS - 9)));
    assert_eq!(e.column, None);
    assert!(e.message.contains("normalized"), "{e}");

    let terms: Vec<String> = (0..65).map(|i| format!("hostname:h{i}")).collect();
    let sixty_four = terms[..64].join(" OR ");
    assert_eq!(rule(&sixty_four).condition_count(), 64);
    let column = sixty_four.chars().count() + " OR ".len() + 1;
    rejected_at(&terms.join(" OR "), column, "at most 64 conditions");

    let nest = |n: usize| format!("{}hostname:a{}", "(".repeat(n), ")".repeat(n));
    parsed(&nest(8));
    rejected_at(&nest(9), 9, "at most 8 deep");
    parsed("NOT NOT NOT NOT NOT NOT NOT NOT hostname:a");
    rejected_at(
        "NOT NOT NOT NOT NOT NOT NOT NOT NOT hostname:a",
        33,
        "at most 8 deep",
    );
    rejected_at("- - - - (((( -hostname:a))))", 14, "at most 8 deep");
}

#[test]
fn nul_characters() {
    rejected_at("hostname:a\0", 11, "NUL");
}

#[test]
fn json_rejections_carry_no_column() {
    let bad = [
        serde_json::json!({"version": 2, "kind": "DEVICE", "expr": {"and": []}}),
        serde_json::json!({"version": 1, "kind": "HOST", "expr": {"and": []}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"and": []}, "x": 1}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"or": []}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"and": [{"or": []}]}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "vendr", "op": "eq", "value": "x"}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "hostname", "op": "eq", "value": "web%"}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "hostname", "op": "like", "value": "web"}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "hostname", "op": "eq", "value": ">a"}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "port", "op": "gt", "value": "=1"}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "hostname", "op": "eq", "value": "\"a"}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "hostname", "op": "in", "value": []}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "hostname", "op": "in", "value": ["a\"b"]}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "hostname", "op": "eq", "value": "a", "negated": "yes"}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "hostname", "op": "eq", "value": "a", "extra": 1}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"op": "group", "group_id": "nope"}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"op": "group", "group_path": ""}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"field": "hostname", "op": "regex", "value": "\\w+"}}),
        serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"and": [
            {"field": "vendor", "op": "eq", "value": "A"}, {"field": "vendor", "op": "eq", "value": "B"}]}}),
    ];
    for value in bad {
        match from_json(&value) {
            Ok(p) => panic!("{value} should be rejected, got {}", p.rule.to_text()),
            Err(e) => assert_eq!(e.column, None, "{value}: {e}"),
        }
    }
}
