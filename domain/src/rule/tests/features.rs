//! Corral's additions: OR/NOT, regexes, comparisons, relative times, missing, groups,
//! services, explain, and the SQL they compile to.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use chrono::Duration;
use uuid::Uuid;

use super::*;
use crate::inventory::Service;

fn host(id: &str, hostname: Option<&str>) -> Device {
    Device {
        hostname: hostname.map(str::to_string),
        ..device(id)
    }
}

#[test]
fn or_not_and_parentheses_with_missing_values() {
    let devices = [
        host("web", Some("web-1")),
        host("db", Some("db-1")),
        host("none", None),
    ];
    assert_eq!(
        selected("hostname:web% OR hostname:db%", &devices),
        ["web", "db"]
    );
    // NOT x is "x is not true": it selects the missing hostname, `!` does not.
    assert_eq!(selected("NOT hostname:web%", &devices), ["db", "none"]);
    assert_eq!(selected("-hostname:web%", &devices), ["db", "none"]);
    assert_eq!(selected("!hostname:web%", &devices), ["db"]);
    assert_eq!(selected("NOT !hostname:web%", &devices), ["web", "none"]);
    assert_eq!(
        selected("NOT (hostname:web% OR hostname:db%)", &devices),
        ["none"]
    );
    assert_eq!(
        selected("hostname:web% hostname:%1 OR hostname:db%", &devices),
        ["web", "db"]
    );
    assert_eq!(
        selected("hostname:web% (hostname:%1 OR hostname:db%)", &devices),
        ["web"]
    );
    assert_eq!(selected("", &devices), ["web", "db", "none"]);
}

#[test]
fn regexes() {
    let devices = [
        host("a", Some("web-01")),
        host("b", Some("WEB-2")),
        host("c", Some("x\nweb")),
        host("n", None),
    ];
    assert_eq!(selected("hostname~\"^web-[0-9]+$\"", &devices), ["a"]);
    assert_eq!(
        selected("hostname~\"(?i)^web-\\d+$\"", &devices),
        ["a", "b"]
    );
    assert_eq!(selected("hostname~'x.web'", &devices), ["c"]);
    assert_eq!(selected("hostname~\"^web\"", &devices), ["a"]);
    assert_eq!(selected("NOT hostname~\"^web\"", &devices), ["b", "c", "n"]);
    rejected_at("hostname~\"\\w+\"", 10, "not supported");
    rejected_at("hostname:a hostname~\"(?m)^a\"", 21, "inline flag");
    rejected_at("hostname~\"a{300}\"", 10, "at most 255");
    rejected_at("hostname~\"(\"", 10, "invalid regex");
    let sql = rule("hostname~\"(?i)^web\\d\"").to_sql(&sql_ctx());
    assert_eq!(sql.sql, "d.hostname ~* $3::text");
    assert_eq!(sql.params, [SqlParam::Text("^web[0-9]".into())]);
}

#[test]
fn version_comparisons() {
    let v = |id: &str, version: Option<&str>| Device {
        os_version: version.map(str::to_string),
        ..device(id)
    };
    let devices = [
        v("9", Some("9.3")),
        v("10", Some("10.0.1-beta")),
        v("10.0", Some("10.0")),
        v("big", Some("100000000000000000000000.1")),
        v("text", Some("vista")),
        v("zeros", Some("010.00.1")),
        v("none", None),
    ];
    assert_eq!(
        selected("os_version:>=10", &devices),
        ["10", "10.0", "big", "zeros"]
    );
    assert_eq!(
        selected("os_version:>10.0", &devices),
        ["10", "big", "zeros"]
    );
    assert_eq!(selected("os_version:<10.0", &devices), ["9"]);
    assert_eq!(selected("os_version:<=10.0", &devices), ["9", "10.0"]);
    assert_eq!(
        selected("os.version:>99999999999999999999999", &devices),
        ["big"]
    );
    assert_eq!(
        selected("NOT os_version:>=10", &devices),
        ["9", "text", "none"]
    );
    assert_eq!(
        selected("os_version:10.0", &devices),
        ["10.0"],
        "`=` stays text"
    );
}

#[test]
fn times_absolute_and_relative() {
    let seen = |id: &str, ago: Option<i64>| Device {
        last_seen: ago.map(|h| now() - Duration::hours(h)),
        first_seen: Some(now() - Duration::days(400)),
        ..device(id)
    };
    let devices = [
        seen("fresh", Some(1)),
        seen("week", Some(24 * 8)),
        seen("never", None),
    ];
    assert_eq!(selected("last_seen:>=now-7d", &devices), ["fresh"]);
    assert_eq!(selected("last_seen:<now-1w", &devices), ["week"]);
    assert_eq!(selected("last_seen:>now-61m", &devices), ["fresh"]);
    assert_eq!(
        selected("last_seen:>now-3600s", &devices),
        Vec::<String>::new()
    );
    assert_eq!(selected("last_seen:>=now-3600s", &devices), ["fresh"]);
    assert_eq!(selected("last_seen:<now+1h", &devices), ["fresh", "week"]);
    assert_eq!(
        selected("NOT last_seen:>=now-7d", &devices),
        ["week", "never"]
    );
    assert_eq!(
        selected("first_seen:<2025-05-01", &devices),
        ["fresh", "week", "never"]
    );
    assert_eq!(
        selected("last_seen:>2026-04-30T12:00:00Z", &devices),
        ["fresh"]
    );
    assert_eq!(selected("missing:last_seen", &devices), ["never"]);
    assert!(rule("last_seen:>now-7d").uses_now());
    assert!(!rule("last_seen:>2026-01-01").uses_now());
    let sql = rule("last_seen:>=now-7d").to_sql(&sql_ctx());
    assert_eq!(sql.sql, "d.last_seen >= $3::timestamptz");
    assert_eq!(sql.params, [SqlParam::Timestamp(now() - Duration::days(7))]);
}

#[test]
fn missing_means_absent_or_empty() {
    let mut empty = host("empty", Some(""));
    empty.tags = BTreeMap::from([("env".to_string(), String::new())]);
    let mut full = host("full", Some("h"));
    full.tags = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    full.metadata = BTreeMap::from([("k".to_string(), "v".to_string())]);
    full.discovery_sources = vec!["sweep".into()];
    full.is_available = Some(false);
    let devices = [empty, full, device("none")];
    assert_eq!(selected("missing:hostname", &devices), ["empty", "none"]);
    assert_eq!(selected("!missing:hostname", &devices), ["full"]);
    assert_eq!(selected("missing:tags", &devices), ["none"]);
    assert_eq!(selected("missing:tags.env", &devices), ["empty", "none"]);
    assert_eq!(selected("missing:metadata", &devices), ["empty", "none"]);
    assert_eq!(
        selected("missing:discovery_sources", &devices),
        ["empty", "none"]
    );
    assert_eq!(
        selected("missing:is_available", &devices),
        ["empty", "none"]
    );
}

struct Members(HashSet<(Uuid, bool, String)>);

impl Memberships for Members {
    fn contains(&self, group: Uuid, direct: bool, member_id: &str) -> bool {
        self.0.contains(&(group, direct, member_id.to_string()))
    }
}

#[test]
fn group_references() {
    let site = Uuid::from_u128(7);
    let mut r = rule("group:\"Inventory/Site A\" !group:Inventory/Lab:direct hostname:h");
    let refs = r.group_refs();
    assert_eq!(refs.len(), 2);
    assert_eq!(refs[0].target, GroupTarget::Path("Inventory/Site A".into()));
    assert_eq!((refs[0].direct, refs[0].column), (false, Some(1)));
    assert_eq!((refs[1].direct, refs[1].column), (true, Some(26)));
    let before = r.clone();
    let e = r
        .resolve_groups(&mut |p| (p == "Inventory/Site A").then_some(site))
        .expect_err("Lab is unknown");
    assert_eq!(e.column, Some(26));
    assert_eq!(r, before, "nothing changed");
    let lab = Uuid::from_u128(8);
    r.resolve_groups(&mut |p| Some(if p == "Inventory/Lab" { lab } else { site }))
        .expect("resolve");
    assert_eq!(
        r.to_text(),
        format!("in:devices group:{site} !group:{lab}:direct hostname:h")
    );
    let members = Members(HashSet::from([
        (site, false, "a".to_string()),
        (site, false, "b".to_string()),
        (lab, true, "b".to_string()),
    ]));
    let ctx = EvalContext {
        now: now(),
        groups: &members,
    };
    let ids: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|id| r.matches(Entity::Device(&host(id, Some("h"))), &ctx))
        .collect();
    assert_eq!(ids, ["a"]);
    let sql = r.to_sql(&sql_ctx());
    assert_eq!(
        sql.sql,
        "(d.id IN (SELECT member_id FROM eff WHERE group_id = $3::uuid) AND (d.id IN (SELECT member_id FROM dir WHERE group_id = $4::uuid)) IS NOT TRUE AND d.hostname = $5::text)"
    );
    assert_eq!(sql.params[..2], [SqlParam::Uuid(site), SqlParam::Uuid(lab)]);
    // Unresolved paths match nothing, in SQL as in memory.
    let unresolved = rule("group:X");
    assert!(!unresolved.matches(Entity::Device(&device("a")), &self::ctx()));
    assert_eq!(unresolved.to_sql(&sql_ctx()).sql, "false");
}

fn service(id: &str, port: Option<i32>) -> Service {
    Service {
        id: id.into(),
        device_id: "h1".into(),
        service_type: "http".into(),
        name: format!("svc-{id}"),
        port,
        ..Service::default()
    }
}

#[test]
fn services_and_their_hosts() {
    let r = parse(
        "in:services port:>=8000 device.vendor:Cisco",
        GroupType::Device,
    )
    .expect("service rule")
    .rule;
    let cisco = Device {
        vendor: Some("Cisco".into()),
        ..device("h1")
    };
    let ctx = ctx();
    assert!(r.matches(
        Entity::Service(&service("s", Some(8080)), Some(&cisco)),
        &ctx
    ));
    assert!(!r.matches(Entity::Service(&service("s", Some(80)), Some(&cisco)), &ctx));
    assert!(!r.matches(Entity::Service(&service("s", Some(8080)), None), &ctx));
    assert!(
        !r.matches(Entity::Device(&cisco), &ctx),
        "a device never matches a service rule"
    );
    let svc = |text: &str| parse(text, GroupType::Service).expect(text).rule;
    // Service fields select missing values when negated; host fields keep their meaning.
    assert!(svc("!status:up").matches(Entity::Service(&service("s", None), None), &ctx));
    assert!(svc("!port:80").matches(Entity::Service(&service("s", None), None), &ctx));
    assert!(!svc("!device.hostname:x").matches(Entity::Service(&service("s", None), None), &ctx));
    assert!(svc("!device.vendor:x").matches(Entity::Service(&service("s", None), None), &ctx));
    assert!(svc("missing:device.ip").matches(Entity::Service(&service("s", None), None), &ctx));
    assert!(svc("!device.tags:x").matches(Entity::Service(&service("s", None), None), &ctx));
    assert!(svc("port:(80,443) name:svc-%")
        .matches(Entity::Service(&service("s", Some(443)), None), &ctx));
    assert_eq!(
        r.fields().into_iter().collect::<Vec<_>>(),
        ["device.vendor", "port"]
    );
    let sql = r.to_sql(&sql_ctx());
    assert_eq!(sql.sql, "(s.port >= $3::int8 AND sd.vendor = $4::text)");
    assert_eq!(
        sql.params,
        [SqlParam::Int(8000), SqlParam::Text("Cisco".into())]
    );
}

#[test]
fn explain_fields_and_counts() {
    let r = rule("hostname:web% !vendor_name:Cisco (tags.env:prod OR missing:site)");
    let d = Device {
        hostname: Some("web-1".into()),
        vendor: Some("Cisco".into()),
        ..device("x")
    };
    let explained = r.explain(Entity::Device(&d), &ctx());
    let pairs: Vec<(&str, bool)> = explained
        .iter()
        .map(|c| (c.clause.as_str(), c.matched))
        .collect();
    assert_eq!(
        pairs,
        [
            ("hostname:web%", true),
            ("!vendor_name:Cisco", false),
            ("tags.env:prod", false),
            ("missing:site", true)
        ]
    );
    assert_eq!(r.condition_count(), 4);
    assert_eq!(
        r.fields().into_iter().collect::<Vec<_>>(),
        ["hostname", "site", "tags", "vendor"]
    );
    assert!(!r.uses_now());
}

pub(super) fn sql_ctx() -> SqlContext {
    SqlContext {
        now: now(),
        first_param: 3,
        effective_members_sql: "SELECT member_id FROM eff WHERE group_id = {group}".into(),
        direct_members_sql: "SELECT member_id FROM dir WHERE group_id = {group}".into(),
    }
}

#[test]
fn sql_per_field() {
    let ctx = sql_ctx();
    for (text, sql) in [
        ("", "true"),
        ("hostname:web%", "d.hostname ILIKE $3::text"),
        ("!hostname:web", "NOT (d.hostname = $3::text)"),
        ("!vendor:x", "(d.vendor = $3::text) IS NOT TRUE"),
        ("hostname:(a,b)", "d.hostname = ANY($3::text[])"),
        ("ip:10.0.0.0/8", "d.ip::inet <<= $3::text::cidr"),
        ("ip:1.1.1.1-1.1.1.9", "(d.ip::inet >= $3::text::inet AND d.ip::inet <= $4::text::inet)"),
        ("mac:AA:BB", "lower(regexp_replace(d.mac, '[^0-9a-fA-F]', '', 'g')) = $3::text"),
        ("tags:a", "coalesce(d.tags, '{}'::jsonb) ? $3::text"),
        ("tags:(a,b)", "coalesce(d.tags, '{}'::jsonb) ?| $3::text[]"),
        ("!tags.env:prod", "((d.tags ->> $3::text) = $4::text) IS NOT TRUE"),
        ("discovery_sources:(a,b)", "coalesce(d.discovery_sources, '{}'::text[]) @> $3::text[]"),
        ("!is_available:true", "NOT (d.is_available = $3::bool)"),
        ("os_version:>1.02", "string_to_array(substring(d.os_version FROM '^[0-9]+(?:[.][0-9]+)*'), '.')::numeric[] > $3::text[]::numeric[]"),
        ("missing:hostname", "coalesce(d.hostname, '') = ''"),
        ("NOT missing:tags", "(coalesce(d.tags, '{}'::jsonb) = '{}'::jsonb) IS NOT TRUE"),
        ("hostname:a OR site:b", "(d.hostname = $3::text OR d.site = $4::text)"),
    ] {
        assert_eq!(rule(text).to_sql(&ctx).sql, sql, "{text}");
    }
    let p = rule("os_version:>1.0.20 mac:%AA_").to_sql(&ctx).params;
    assert_eq!(
        p,
        [
            SqlParam::TextArray(vec!["1".into(), "0".into(), "20".into()]),
            SqlParam::Text("%aa_".into())
        ]
    );
}

#[test]
fn rules_are_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Rule>();
    shareable::<SqlFragment>();
}

/// Measures the in-memory predicate: `cargo test -p corral-domain --release -- --ignored
/// --nocapture evaluations_per_second`.
#[test]
#[ignore = "benchmark"]
fn evaluations_per_second() {
    let r = rule("hostname:web% vendor:Cisco !is_available:false");
    let devices: Vec<Device> = (0..1000)
        .map(|i| Device {
            hostname: Some(format!(
                "{}-{i:04}.example.com",
                if i % 2 == 0 { "web" } else { "db" }
            )),
            vendor: Some(if i % 3 == 0 { "Cisco" } else { "Juniper" }.into()),
            is_available: [Some(true), Some(false), None][i % 3],
            ..device(&format!("dev-{i}"))
        })
        .collect();
    let ctx = ctx();
    let rounds = 20_000;
    let start = Instant::now();
    let mut hits = 0usize;
    for _ in 0..rounds {
        for d in &devices {
            hits += usize::from(r.matches(Entity::Device(std::hint::black_box(d)), &ctx));
        }
    }
    let elapsed = start.elapsed();
    let evals = rounds * devices.len();
    println!(
        "{evals} evaluations in {elapsed:?}: {:.1} million/s ({hits} matches)",
        evals as f64 / elapsed.as_secs_f64() / 1e6
    );
}
