//! Normalized text, JSON, and that both read back to an equal rule.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn assert_round_trips(r: &Rule) {
    let text = r.to_text();
    let again = parse(&text, GroupType::Device)
        .unwrap_or_else(|e| panic!("normalized `{text}` should parse: {e}"))
        .rule;
    assert_eq!(&again, r, "parse(to_text) for `{text}`");
    assert_eq!(again.to_text(), text, "normalize is idempotent");
    let json = r.to_json();
    let back = from_json(&json)
        .unwrap_or_else(|e| panic!("{json} should read back: {e}"))
        .rule;
    assert_eq!(&back, r, "from_json(to_json) for `{text}`");
}

#[test]
fn normalized_text() {
    for (input, expected) in [
        ("", "in:devices"),
        ("in:devices", "in:devices"),
        (
            "hostname:web% AND vendor:Cisco",
            "in:devices hostname:web% vendor:Cisco",
        ),
        ("a:b", ""),
        (
            "hostname:a or hostname:b and site:x",
            "in:devices hostname:a OR hostname:b site:x",
        ),
        (
            "(hostname:a OR hostname:b) site:x",
            "in:devices (hostname:a OR hostname:b) site:x",
        ),
        ("((hostname:a)) ((site:x))", "in:devices hostname:a site:x"),
        (
            "hostname:a OR (hostname:b OR hostname:c)",
            "in:devices hostname:a OR hostname:b OR hostname:c",
        ),
        ("-hostname:a", "in:devices NOT hostname:a"),
        ("NOT NOT hostname:a", "in:devices hostname:a"),
        (
            "not (hostname:a site:b)",
            "in:devices NOT (hostname:a site:b)",
        ),
        (
            "NOT (hostname:a OR site:b) model:m",
            "in:devices NOT (hostname:a OR site:b) model:m",
        ),
        (
            "metadata.location:\"Building A\"",
            "in:devices metadata.location:\"Building A\"",
        ),
        ("hostname:'a\"b'", "in:devices hostname:\"a\\\"b\""),
        ("hostname:a\\b", "in:devices hostname:\"a\\\\b\""),
        ("hostname:\"(x)\"", "in:devices hostname:\"(x)\""),
        ("hostname:(a,\"b,c\")", "in:devices hostname:(a,\"b,c\")"),
        ("hostname~'^a\"b'", "in:devices hostname~\"^a\\\"b\""),
        (
            "hostname~\"^a\\\"b\\\\\"",
            "in:devices hostname~\"^a\\\"b\\\\\"",
        ),
        (
            "last_seen:>=2026-01-01",
            "in:devices last_seen:>=2026-01-01T00:00:00Z",
        ),
        (
            "last_seen:>2026-01-01T10:00:00+02:00",
            "in:devices last_seen:>2026-01-01T08:00:00Z",
        ),
        (
            "last_seen:>NOW-7D first_seen:<now+0h",
            "in:devices last_seen:>now-7d first_seen:<now",
        ),
        (
            "group:\"Inventory/Site A\":DIRECT",
            "in:devices group:\"Inventory/Site A\":direct",
        ),
        (
            "group:Inventory/Core",
            "in:devices group:\"Inventory/Core\"",
        ),
        (
            "!group:{0B6D9C3E-0000-4000-8000-000000000001}",
            "in:devices !group:0b6d9c3e-0000-4000-8000-000000000001",
        ),
        (
            "missing:OS.NAME !missing:tags.Env",
            "in:devices missing:os !missing:tags.env",
        ),
        ("is_available:1 uid:x", "in:devices is_available:true id:x"),
    ] {
        if expected.is_empty() {
            assert!(parse(input, GroupType::Device).is_err(), "{input}");
            continue;
        }
        let r = rule(input);
        assert_eq!(r.to_text(), expected, "{input}");
        assert_round_trips(&r);
    }
}

#[test]
fn service_rules_normalize_too() {
    let r = parse(
        "type:http device.vendor_name:Cisco !device.uid:x port:>=8000",
        GroupType::Service,
    )
    .expect("service")
    .rule;
    assert_eq!(
        r.to_text(),
        "in:services type:http device.vendor:Cisco !device.uid:x port:>=8000"
    );
    let again = parse(&r.to_text(), GroupType::Device).expect("again").rule;
    assert_eq!(again, r);
    assert_eq!(from_json(&r.to_json()).expect("json").rule, r);
}

#[test]
fn json_form() {
    let r = rule("hostname:web% !vendor_name:Cisco (ip:(10.0.0.0/8) OR NOT missing:tags.env) group:\"A B\":direct");
    assert_eq!(
        r.to_json(),
        serde_json::json!({
            "version": 1,
            "kind": "DEVICE",
            "expr": {"and": [
                {"field": "hostname", "op": "like", "value": "web%"},
                {"field": "vendor_name", "op": "eq", "value": "Cisco", "negated": true},
                {"or": [
                    {"field": "ip", "op": "in", "value": ["10.0.0.0/8"]},
                    {"not": {"op": "missing", "field": "tags.env"}},
                ]},
                {"op": "group", "group_path": "A B", "direct": true},
            ]}
        })
    );
    assert_round_trips(&r);
    let empty =
        from_json(&serde_json::json!({"version": 1, "kind": "SERVICE", "expr": {"and": []}}))
            .expect("empty");
    assert_eq!(empty.rule.to_text(), "in:services");
    assert!(!empty.warnings.is_empty());
    // JSON is canonicalized like text: flattened, double negation removed.
    let nested = from_json(
        &serde_json::json!({"version": 1, "kind": "DEVICE", "expr": {"and": [
            {"and": [{"field": "site", "op": "eq", "value": "a"}]},
            {"not": {"not": {"field": "HOSTNAME", "op": "eq", "value": "b"}}}
        ]}}),
    )
    .expect("nested");
    assert_eq!(nested.rule, rule("site:a hostname:b"));
}

#[test]
fn warnings() {
    assert!(parsed("").warnings[0].contains("no conditions"));
    assert!(parsed("in:devices").warnings[0].contains("every device"));
    assert!(parse("in:services", GroupType::Device)
        .expect("svc")
        .warnings[0]
        .contains("every service"));
    for always in [
        "hostname:a OR NOT hostname:a",
        "site:x OR missing:tags.k OR !missing:tags.k",
        "tags:k OR !tags:k",
        "(vendor:a OR NOT vendor:a) (site:b OR NOT site:b)",
    ] {
        let w = parsed(always).warnings;
        assert!(
            w.iter().any(|w| w.contains("always true")),
            "{always}: {w:?}"
        );
    }
    // Not a tautology: NULL hostnames match neither side.
    assert!(parsed("hostname:a OR !hostname:a").warnings.is_empty());
    assert!(parsed("hostname:web%").warnings.is_empty());
    assert!(parsed("tags:Env").warnings[0].contains("lower-case"));
}

/// Random rules from the grammar: whatever parses must round-trip.
#[test]
fn random_rules_round_trip() {
    let seed = 0x5eed_0001;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut accepted = 0;
    for _ in 0..3000 {
        let text = random_expr(&mut rng, 0);
        if let Ok(p) = parse(&text, GroupType::Device) {
            accepted += 1;
            assert_round_trips(&p.rule);
        }
    }
    assert!(
        accepted > 1500,
        "only {accepted} of 3000 random rules parsed (seed {seed})"
    );
}

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.gen_range(0..items.len())]
}

fn random_term(rng: &mut StdRng) -> String {
    let bang = if rng.gen_bool(0.2) { "!" } else { "" };
    match rng.gen_range(0..12) {
        0 => format!(
            "{bang}{}:{}",
            pick(
                rng,
                &[
                    "hostname",
                    "vendor",
                    "vendor_name",
                    "os.name",
                    "site",
                    "uid",
                    "type"
                ]
            ),
            pick(
                rng,
                &[
                    "web",
                    "\"a b\"",
                    "x%",
                    "'q'",
                    "\"(p)\"",
                    "a\\\\b",
                    "(a,b)",
                    "[c, \"d e\"]",
                    "o'x'"
                ]
            )
        ),
        1 => format!(
            "{bang}ip:{}",
            pick(
                rng,
                &[
                    "10.0.0.0/8",
                    "fd00::/16",
                    "10.0.0.1-10.0.0.9",
                    "10.%",
                    "(10.0.0.0/8,1.2.3.4)"
                ]
            )
        ),
        2 => format!(
            "{bang}mac:{}",
            pick(rng, &["aa:bb", "AA%", "(aa,BB-cc)", "%0_"])
        ),
        3 => format!(
            "{bang}tags{}",
            pick(rng, &[":env", ":(a,b)", ".env:prod", ".env:%pr%"])
        ),
        4 => format!(
            "{bang}is_available:{}",
            pick(rng, &["yes", "0", "(true,false)"])
        ),
        5 => format!(
            "{}:{}",
            pick(rng, &["last_seen", "first_seen"]),
            pick(rng, &[">now-7d", "<=2026-01-01", ">=now", "<now+1h"])
        ),
        6 => format!("os_version:{}", pick(rng, &[">1.2", "<=10", ">=0.0.1"])),
        7 => format!(
            "{}~{}",
            pick(rng, &["hostname", "ip", "metadata.k"]),
            pick(
                rng,
                &["\"^web\"", "'a\\'b'", "\"(?i)x\\\\d\"", "\"[a-z]+$\""]
            )
        ),
        8 => format!(
            "{bang}missing:{}",
            pick(
                rng,
                &[
                    "hostname",
                    "tags",
                    "tags.env",
                    "discovery_sources",
                    "last_seen"
                ]
            )
        ),
        9 => format!(
            "{bang}group:{}",
            pick(
                rng,
                &[
                    "\"Inventory/A B\"",
                    "0b6d9c3e-0000-4000-8000-000000000001:direct",
                    "X"
                ]
            )
        ),
        10 => format!(
            "{bang}discovery_sources:{}",
            pick(rng, &["(a,b)", "(sweep)"])
        ),
        _ => format!(
            "{bang}metadata.{}:{}",
            pick(rng, &["rack", "Row"]),
            pick(rng, &["r1", "R%"])
        ),
    }
}

fn random_expr(rng: &mut StdRng, depth: usize) -> String {
    let n = rng.gen_range(1..4);
    let mut parts = Vec::new();
    for i in 0..n {
        if i > 0 {
            parts.push(pick(rng, &["", "AND", "OR", "or"]).to_string());
        }
        let part = match rng.gen_range(0..6) {
            0 if depth < 3 => format!("({})", random_expr(rng, depth + 1)),
            1 if depth < 3 => format!(
                "{} {}",
                pick(rng, &["NOT", "-"]),
                random_expr_unary(rng, depth + 1)
            ),
            _ => random_term(rng),
        };
        parts.push(part);
    }
    parts.retain(|p| !p.is_empty());
    parts.join(" ")
}

fn random_expr_unary(rng: &mut StdRng, depth: usize) -> String {
    if rng.gen_bool(0.5) {
        format!("({})", random_expr(rng, depth))
    } else {
        random_term(rng)
    }
}
