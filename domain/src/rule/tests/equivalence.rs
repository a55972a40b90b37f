//! The specialised predicate ([`Rule::matches`]) against the reference evaluator
//! ([`Rule::matches_reference`]) over generated rules, devices and services.

use std::collections::{BTreeMap, HashSet};

use chrono::Duration;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;
use crate::inventory::Service;

const G1: &str = "6f1c2b8e-0a4d-4e59-9a53-0c7a1d2e3f40";
const G2: &str = "0b7e9d6c-5a4b-4c3d-8e2f-1a0b9c8d7e6f";

/// Memberships drawn at random: `(group, direct, member)` triples.
struct Drawn(HashSet<(Uuid, bool, String)>);

impl Memberships for Drawn {
    fn contains(&self, group: Uuid, direct: bool, member_id: &str) -> bool {
        self.0.contains(&(group, direct, member_id.to_string()))
    }
}

fn pick<'a>(rng: &mut StdRng, values: &[&'a str]) -> Option<&'a str> {
    // One draw in five is a missing value.
    if rng.gen_ratio(1, 5) {
        None
    } else {
        values.choose(rng).copied()
    }
}

fn text(rng: &mut StdRng, values: &[&str]) -> Option<String> {
    pick(rng, values).map(str::to_string)
}

fn map(rng: &mut StdRng, keys: &[&str], values: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in keys {
        if rng.gen_bool(0.5) {
            let v = values.choose(rng).copied().unwrap_or("");
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

fn time(rng: &mut StdRng) -> Option<DateTime<Utc>> {
    rng.gen_ratio(4, 5).then(|| {
        now() - Duration::minutes(rng.gen_range(-20_000..200_000))
            + Duration::microseconds(rng.gen_range(0..1_000_000))
    })
}

const HOSTNAMES: &[&str] = &[
    "core-01",
    "CORE-s02",
    "web-01",
    "web-7",
    "db-core",
    "Édge-core",
    "\u{212A}ORE-9",
    "İstanbul-1",
    "c_re",
    "",
    "x\nweb",
];
const VENDORS: &[&str] = &["Cisco", "cisco", "Dell", "Juniper", ""];
const IPS: &[&str] = &[
    "10.0.0.5",
    "10.1.2.3",
    "192.168.1.7",
    "::1",
    "2001:db8::5",
    "not-an-ip",
    "10.0.0.300",
    "",
];
const MACS: &[&str] = &[
    "AA:BB:CC:DD:EE:FF",
    "aabb.ccdd.eeff",
    "00:11:22:33:44:55",
    "zz",
];
const VERSIONS: &[&str] = &["1.2.3", "10.0", "2.10.1", "x", "2", "2.0.0-beta"];
const TAG_KEYS: &[&str] = &["env", "rack", "role", "k"];
const TAG_VALUES: &[&str] = &["prod", "staging", "", "Prod", "r1"];

fn generated_device(rng: &mut StdRng, i: usize) -> Device {
    Device {
        id: format!("dev-{}", i % 7),
        hostname: text(rng, HOSTNAMES),
        ip: text(rng, IPS),
        mac: text(rng, MACS),
        vendor: text(rng, VENDORS),
        model: text(rng, &["m1", "M1", "m2"]),
        os: text(rng, &["linux", "ios"]),
        os_version: text(rng, VERSIONS),
        partition: text(rng, &["default", "dmz"]),
        site: text(rng, &["ams1", "AMS2", "fra1"]),
        device_type: text(rng, &["router", "switch"]),
        agent_id: text(rng, &["a1", "a2"]),
        poller_id: text(rng, &["p1", "poller-2"]),
        tags: map(rng, TAG_KEYS, TAG_VALUES),
        metadata: map(rng, &["owner", "k"], &["team-1", "team-2", ""]),
        discovery_sources: ["snmp", "sweep", "armis"]
            .iter()
            .filter(|_| rng.gen_bool(0.5))
            .map(|s| s.to_string())
            .collect(),
        is_available: [None, Some(true), Some(false)]
            .choose(rng)
            .copied()
            .flatten(),
        first_seen: time(rng),
        last_seen: time(rng),
    }
}

fn generated_service(rng: &mut StdRng, i: usize) -> Service {
    Service {
        id: format!("svc-{}", i % 5),
        device_id: format!("dev-{}", i % 7),
        service_type: ["http", "ssh", "HTTP"]
            .choose(rng)
            .copied()
            .unwrap_or("")
            .into(),
        name: ["web", "admin-web", "ssh"]
            .choose(rng)
            .copied()
            .unwrap_or("")
            .into(),
        port: [None, Some(22), Some(80), Some(443), Some(8080)]
            .choose(rng)
            .copied()
            .flatten(),
        status: text(rng, &["up", "down", "UP"]),
        tags: map(rng, TAG_KEYS, TAG_VALUES),
        metadata: map(rng, &["owner"], &["team-1", ""]),
        last_seen: time(rng),
    }
}

const DEVICE_LEAVES: &[&str] = &[
    "vendor:Cisco",
    "vendor:cisco",
    "!vendor:Cisco",
    "!vendor_name:Cisco",
    "vendor:(Cisco,Dell)",
    "vendor:(a,b,c,d,e,f,g,h,i,j,Cisco)",
    "hostname:%core%",
    "hostname:core%",
    "hostname:%01",
    "hostname:web-01",
    "hostname:CORE-01",
    "!hostname:%core%",
    "hostname:%c_re%",
    "hostname:%k%",
    "hostname:%i%",
    "hostname:%é%",
    "hostname:%%",
    "hostname:c\\_re",
    r#"hostname~"^web-[0-9]+$""#,
    r#"hostname~"(?i)core""#,
    "missing:hostname",
    "ip:10.0.0.0/8",
    "ip:10.1.2.3",
    "ip:(10.0.0.0/24,2001:db8::/32)",
    "ip:10.0.0.1-10.0.0.9",
    "ip:0.0.0.0/0",
    "!ip:10.0.0.0/8",
    "ip:%10.%",
    "mac:aa:bb:cc:dd:ee:ff",
    "mac:(aabbccddeeff,001122334455)",
    "mac:%ee%",
    "!mac:aa:bb:cc:dd:ee:ff",
    "os_version:>=2.0",
    "os_version:<10",
    "os_version:2.10.1",
    "tags:env",
    "tags:(env,role)",
    "!tags:env",
    "tags.env:prod",
    "tags.env:%pro%",
    "!tags.env:prod",
    "missing:tags.env",
    "missing:tags",
    "metadata.owner:team-1",
    "missing:metadata",
    "discovery_sources:sweep",
    "discovery_sources:(snmp,sweep)",
    "!discovery_sources:(sweep)",
    "missing:discovery_sources",
    "is_available:true",
    "is_available:false",
    "is_available:(true,false)",
    "!is_available:true",
    "missing:is_available",
    "last_seen:>=now-7d",
    "last_seen:<now-1h",
    "first_seen:>2026-01-01",
    "first_seen:<=now",
    "missing:last_seen",
    "id:dev-1",
    "uid:(dev-1,dev-2)",
    "!uid:dev-3",
    "site:%ams%",
    "model:m1",
    "type:router",
    "!type:router",
    "agent_id:a1",
    "poller_id:%p%",
    "partition:default",
    "os:linux",
    "missing:os",
];

const SERVICE_LEAVES: &[&str] = &[
    "type:http",
    "type:%HTTP%",
    "name:%web%",
    "port:443",
    "port:>=1024",
    "port:<100",
    "port:(80,443)",
    "!port:22",
    "missing:port",
    "status:up",
    "!status:up",
    "missing:status",
    "tags:env",
    "tags.env:prod",
    "missing:metadata",
    "last_seen:>=now-1d",
    "missing:last_seen",
    "device.hostname:%core%",
    "device.vendor:Cisco",
    "!device.vendor:Cisco",
    "!device.hostname:web-01",
    "device.is_available:true",
    "missing:device.is_available",
    "device.tags:env",
    "device.tags.env:prod",
    "device.ip:10.0.0.0/8",
    "device.discovery_sources:sweep",
    "device.last_seen:>=now-7d",
    "missing:device.hostname",
    "device_id:dev-1",
    "id:svc-1",
];

/// A rule of 1 to 5 of `leaves`, joined by AND and OR, some negated, some in parentheses.
fn rule_text(rng: &mut StdRng, leaves: &[&str], groups: &[String]) -> String {
    let mut out = String::new();
    let n = rng.gen_range(1..=5);
    let mut open = 0;
    for i in 0..n {
        if i > 0 {
            out.push_str(if rng.gen_bool(0.3) { " OR " } else { " " });
        }
        if rng.gen_ratio(1, 6) {
            out.push_str("NOT ");
        }
        if rng.gen_ratio(1, 5) {
            out.push('(');
            open += 1;
        }
        if rng.gen_ratio(1, 8) {
            out.push_str(groups.choose(rng).map_or("", String::as_str));
        } else {
            out.push_str(leaves.choose(rng).copied().unwrap_or(""));
        }
        if open > 0 && rng.gen_bool(0.4) {
            out.push(')');
            open -= 1;
        }
    }
    out.push_str(&")".repeat(open));
    out
}

#[test]
fn every_template_condition_parses() {
    for text in DEVICE_LEAVES {
        let _ = parsed(text);
    }
    for text in SERVICE_LEAVES {
        parse(text, GroupType::Service).unwrap_or_else(|e| panic!("`{text}`: {e}"));
    }
}

#[test]
fn the_specialised_predicate_agrees_with_the_reference_over_generated_rules() {
    let mut rng = StdRng::seed_from_u64(17);
    let g1: Uuid = G1.parse().expect("uuid");
    let g2: Uuid = G2.parse().expect("uuid");
    let groups = [
        format!("group:{G1}"),
        format!("group:{G2}:direct"),
        format!("group:{G1}:direct"),
        "group:\"Inventory/Nowhere\"".to_string(),
    ];
    let mut drawn = HashSet::new();
    for id in (0..7)
        .map(|i| format!("dev-{i}"))
        .chain((0..5).map(|i| format!("svc-{i}")))
    {
        for (g, direct) in [(g1, false), (g1, true), (g2, false), (g2, true)] {
            if rng.gen_bool(0.4) {
                drawn.insert((g, direct, id.clone()));
            }
        }
    }
    let memberships = Drawn(drawn);
    let devices: Vec<Device> = (0..300).map(|i| generated_device(&mut rng, i)).collect();
    let services: Vec<Service> = (0..200).map(|i| generated_service(&mut rng, i)).collect();
    let hosts: Vec<Option<&Device>> = (0..services.len())
        .map(|i| (i % 4 != 0).then(|| &devices[i % devices.len()]))
        .collect();

    let (mut rules, mut evaluations, mut selected) = (0, 0, 0);
    for round in 0..3000 {
        let kind = if round % 3 == 2 {
            GroupType::Service
        } else {
            GroupType::Device
        };
        let leaves = match kind {
            GroupType::Device => DEVICE_LEAVES,
            GroupType::Service => SERVICE_LEAVES,
        };
        let text = rule_text(&mut rng, leaves, &groups);
        let Ok(parsed) = parse(&text, kind) else {
            continue; // contradictions and unbalanced text are rejected: not our concern
        };
        rules += 1;
        let rule = parsed.rule;
        let ctx = EvalContext {
            now: now() + Duration::seconds(rng.gen_range(-86_400..86_400)),
            groups: &memberships,
        };
        let entities = devices.iter().map(Entity::Device).chain(
            services
                .iter()
                .zip(&hosts)
                .map(|(s, h)| Entity::Service(s, *h)),
        );
        for entity in entities {
            let expected = rule.matches_reference(entity, &ctx);
            assert_eq!(
                rule.matches(entity, &ctx),
                expected,
                "`{}` on {entity:?}",
                rule.to_text()
            );
            evaluations += 1;
            selected += usize::from(expected);
        }
    }
    assert!(rules > 1500, "only {rules} generated rules parsed");
    // Neither evaluator can pass by answering the same constant.
    assert!(
        selected > evaluations / 20 && selected < evaluations * 19 / 20,
        "{selected} of {evaluations}"
    );
}

#[test]
fn case_folding_beyond_ascii_falls_back_to_the_general_matcher() {
    // The Kelvin sign lower-cases to an ASCII `k`, `İ` to `i` and a combining dot.
    let kelvin = Device {
        hostname: Some("\u{212A}ORE".into()),
        ..device("k")
    };
    let dotted = Device {
        hostname: Some("İstanbul".into()),
        ..device("i")
    };
    for (text, d, expected) in [
        ("hostname:%kore%", &kelvin, true),
        ("hostname:%kore", &kelvin, true),
        ("hostname:k%", &kelvin, true),
        ("hostname:%ore", &kelvin, true),
        ("hostname:%x%", &kelvin, false),
        ("hostname:i%", &dotted, true),
        ("hostname:%stanbul", &dotted, true),
        ("hostname:%istanbul%", &dotted, false),
        ("hostname:kore", &kelvin, false),
    ] {
        let r = rule(text);
        assert_eq!(r.matches(Entity::Device(d), &ctx()), expected, "{text}");
        assert_eq!(
            r.matches_reference(Entity::Device(d), &ctx()),
            expected,
            "{text}"
        );
    }
}
