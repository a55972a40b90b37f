//! Rule evaluation speed in memory, one thread, without a database: the benchmark's rule
//! (`bench/src/membership/rules.rs`) over generated devices, by [`Rule::matches`], by the
//! reference evaluator it replaced ([`Rule::matches_reference`]) and by a hand-written
//! predicate, in the same run.
//!
//! `cargo run --release -p corral-domain --example rule_speed [devices] [rule] [passes]`
//! (an empty rule is the benchmark's)

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use corral_domain::group::GroupType;
use corral_domain::inventory::Device;
use corral_domain::rule::{self, Entity, EvalContext, Rule};

const RULE: &str = "vendor:Cisco hostname:%core% is_available:true tags:env";
/// Passes per predicate, unless the third argument says otherwise.
const PASSES: usize = 15;

/// splitmix64 of `(seed, i)`, as the bench's generator.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const VENDORS: [&str; 5] = ["Cisco", "Juniper", "Arista", "Dell", "HP"];
const ROLES: [&str; 8] = ["web", "db", "core", "edge", "app", "cache", "lb", "fw"];
const TYPES: [&str; 4] = ["router", "switch", "server", "firewall"];
const OSES: [&str; 4] = ["linux", "ios", "junos", "eos"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];

/// Device `i`, built as `bench/src/membership/data.rs` builds it.
fn device(seed: u64, i: usize) -> Device {
    let base = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let h = mix(seed, i as u64);
    let pick = |shift: u32, n: usize| ((h >> shift) as usize) % n;
    let site = pick(8, 50);
    let hostname = if pick(16, 100) == 0 {
        None
    } else {
        let role = ROLES[pick(20, ROLES.len())];
        let role = if pick(24, 4) == 0 {
            role.to_uppercase()
        } else {
            role.to_string()
        };
        Some(format!("{role}-s{site:02}-{i:07}"))
    };
    let mut tags = BTreeMap::new();
    if pick(28, 5) != 0 {
        tags.insert("env".to_string(), ENVS[pick(32, ENVS.len())].to_string());
    }
    tags.insert("rack".to_string(), format!("r{}", pick(36, 40)));
    let mut metadata = BTreeMap::new();
    metadata.insert("owner".to_string(), format!("team-{}", pick(40, 12)));
    let os = pick(44, OSES.len());
    Device {
        id: format!("dev-{i:07}"),
        hostname,
        ip: Some(format!(
            "10.{}.{}.{}",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        )),
        mac: Some(format!(
            "02:00:00:{:02x}:{:02x}:{:02x}",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        )),
        vendor: Some(VENDORS[pick(48, VENDORS.len())].to_string()),
        model: Some(format!("m{}", pick(52, 20))),
        os: Some(OSES[os].to_string()),
        os_version: Some(format!("{}.{}.{}", 1 + os, pick(56, 10), pick(58, 20))),
        partition: Some("default".to_string()),
        site: Some(format!("site-{site:02}")),
        device_type: Some(TYPES[pick(60, TYPES.len())].to_string()),
        agent_id: None,
        poller_id: Some(format!("poller-{}", site % 5)),
        tags,
        metadata,
        discovery_sources: if pick(62, 2) == 0 {
            vec!["sweep".to_string()]
        } else {
            vec!["snmp".to_string(), "sweep".to_string()]
        },
        is_available: Some(pick(2, 10) != 0),
        first_seen: Some(base - Duration::days((h % 365) as i64)),
        last_seen: Some(base + Duration::minutes((h >> 40) as i64 % 10_000)),
    }
}

/// The bench's hand-written predicate for [`RULE`].
fn hand_written(d: &Device) -> bool {
    d.vendor.as_deref() == Some("Cisco")
        && d.hostname.as_deref().is_some_and(|h| {
            h.as_bytes()
                .windows(4)
                .any(|w| w.eq_ignore_ascii_case(b"core"))
        })
        && d.is_available == Some(true)
        && d.tags.contains_key("env")
}

/// Evaluations per second of one pass of `predicate` over `devices`, and the matches.
#[inline(never)]
fn pass(devices: &[Device], predicate: impl Fn(&Device) -> bool) -> (f64, usize) {
    let started = Instant::now();
    let matched = devices.iter().filter(|d| predicate(black_box(d))).count();
    (
        devices.len() as f64 / started.elapsed().as_secs_f64(),
        matched,
    )
}

/// The best pass: on a shared machine other processes only ever slow a pass down.
fn best(rates: &[f64]) -> f64 {
    rates.iter().copied().fold(0.0, f64::max)
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let text = args
        .next()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| RULE.to_string());
    let passes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(PASSES);
    let rule: Rule = match rule::parse(&text, GroupType::Device) {
        Ok(p) => p.rule,
        Err(e) => {
            eprintln!("{text}: {e}");
            std::process::exit(2);
        }
    };
    let devices: Vec<Device> = (0..n).map(|i| device(42, i)).collect();
    let ctx = EvalContext {
        now: Utc::now(),
        groups: &(),
    };
    // The predicates take turns, pass after pass, so that a change in the machine's load
    // reaches all three alike.
    let hand_too = text == RULE;
    let (mut ours, mut reference, mut hand) = (vec![], vec![], vec![]);
    let mut matched = 0;
    let mut counts = Vec::new();
    // Each round runs the three in a rotated order, so that none always follows another.
    for round in 0..passes {
        for turn in 0..3 {
            match (round + turn) % 3 {
                0 => {
                    let (rate, m) = pass(&devices, |d| {
                        rule.matches_reference(Entity::Device(d), &ctx)
                    });
                    reference.push(rate);
                    matched = m;
                }
                1 => {
                    let (rate, m) = pass(&devices, |d| rule.matches(Entity::Device(d), &ctx));
                    ours.push(rate);
                    matched = m;
                }
                _ if hand_too => {
                    let (rate, m) = pass(&devices, hand_written);
                    hand.push(rate);
                    matched = m;
                }
                _ => continue,
            }
            counts.push(matched);
        }
    }
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "the predicates disagree: {counts:?}"
    );
    println!("rule `{text}` over {n} devices, 1 thread, {passes} interleaved passes");
    println!("  matches: {matched}");
    println!("  evals/s                         best     median");
    let row = |name: &str, rates: &[f64]| {
        println!(
            "  {name:<26} {:>10.0} {:>10.0}",
            best(rates),
            median(rates.to_vec())
        );
    };
    row("Rule::matches (specialised)", &ours);
    row("Rule::matches_reference", &reference);
    if hand_too {
        row("hand-written predicate", &hand);
        let ratio = |a: &[f64]| {
            (
                best(a) / best(&hand),
                median(a.to_vec()) / median(hand.clone()),
            )
        };
        let (b, m) = ratio(&ours);
        println!("  specialised / hand-written: {b:.2} (best), {m:.2} (median)");
        let (b, m) = ratio(&reference);
        println!("  reference / hand-written:   {b:.2} (best), {m:.2} (median)");
    }
}
