//! The deterministic generator of the membership suite's inventory, group tree and direct
//! memberships: every value is a pure function of the seed and an index, so two runs at the
//! same scale build the same data.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Duration, TimeZone, Utc};
use corral_domain::inventory::Device;
use uuid::Uuid;

/// Depth of the deepest groups below the root.
pub(super) const DEPTH: usize = 8;

/// splitmix64 of `(seed, i)`: a stable hash, independent of any crate's RNG algorithm.
pub(super) fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform float in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

pub(super) fn device_id(i: usize) -> String {
    format!("dev-{i:07}")
}

/// Devices whose hostname the sustained-change measurement flips (`flop-N` <-> `flip-N`);
/// no other device's hostname starts with `flip-` or `flop-`.
pub(super) fn is_flip(i: usize) -> bool {
    i % 50 == 7
}

pub(super) fn flip_hostname(i: usize, matching: bool) -> String {
    format!("{}-{i:07}", if matching { "flip" } else { "flop" })
}

const VENDORS: [&str; 5] = ["Cisco", "Juniper", "Arista", "Dell", "HP"];
const ROLES: [&str; 8] = ["web", "db", "core", "edge", "app", "cache", "lb", "fw"];
const TYPES: [&str; 4] = ["router", "switch", "server", "firewall"];
const OSES: [&str; 4] = ["linux", "ios", "junos", "eos"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Device `i` as the inventory holds it after setup.
pub(super) fn device(seed: u64, i: usize) -> Device {
    let h = mix(seed, i as u64);
    let pick = |shift: u32, n: usize| ((h >> shift) as usize) % n;
    let site = pick(8, 50);
    let hostname = if is_flip(i) {
        Some(flip_hostname(i, false))
    } else if pick(16, 100) == 0 {
        None
    } else {
        // Mixed case, so that case-insensitive matching matters.
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
    let first_seen = base_time() - Duration::days((h % 365) as i64);
    Device {
        id: device_id(i),
        hostname,
        ip: Some(format!(
            "10.{}.{}.{}",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        )),
        mac: Some(format!(
            "02:00:{:02x}:{:02x}:{:02x}:{:02x}",
            (i >> 24) & 255,
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
        first_seen: Some(first_seen),
        last_seen: Some(base_time() + Duration::minutes((h >> 40) as i64 % 10_000)),
    }
}

/// The columns [`copy_line`] writes, in order.
pub(super) const COPY_COLUMNS: &str = "id, hostname, ip, mac, vendor, model, os, os_version, \
    partition, site, type, agent_id, poller_id, tags, metadata, discovery_sources, \
    is_available, first_seen, last_seen";

/// One row of `COPY devices (COPY_COLUMNS) FROM STDIN` (text format). The generator's values
/// hold no tab, newline or backslash, so nothing needs escaping.
pub(super) fn copy_line(d: &Device, out: &mut String) {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "\\N".to_string());
    let map = |m: &BTreeMap<String, String>| {
        serde_json::to_string(m).unwrap_or_else(|_| "{}".to_string())
    };
    let time = |t: Option<DateTime<Utc>>| t.map_or_else(|| "\\N".to_string(), |t| t.to_rfc3339());
    let _ = writeln!(
        out,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{{{}}}\t{}\t{}\t{}",
        d.id,
        text(&d.hostname),
        text(&d.ip),
        text(&d.mac),
        text(&d.vendor),
        text(&d.model),
        text(&d.os),
        text(&d.os_version),
        text(&d.partition),
        text(&d.site),
        text(&d.device_type),
        text(&d.agent_id),
        text(&d.poller_id),
        map(&d.tags),
        map(&d.metadata),
        d.discovery_sources.join(","),
        d.is_available.map_or("\\N", |b| if b { "t" } else { "f" }),
        time(d.first_seen),
        time(d.last_seen),
    );
}

/// The group tree below the device root: `groups` groups in levels 1..=8, level sizes growing
/// geometrically (the branching factor that makes them add up), each group under a parent
/// drawn from the level above.
pub(super) struct Tree {
    /// Group ids, level by level.
    pub ids: Vec<Uuid>,
    /// Index of each group's parent in `ids`; `None`: the device root.
    pub parent: Vec<Option<usize>>,
    /// Each group's depth (1..=8).
    pub depth: Vec<usize>,
    /// Whether it has children.
    pub has_children: Vec<bool>,
}

impl Tree {
    pub(super) fn generate(seed: u64, groups: usize) -> Tree {
        let groups = groups.max(DEPTH);
        // The branching factor b with b + b^2 + ... + b^8 = groups.
        let total = |b: f64| (1..=DEPTH).map(|d| b.powi(d as i32)).sum::<f64>();
        let (mut lo, mut hi) = (1.0f64, groups as f64);
        for _ in 0..100 {
            let mid = (lo + hi) / 2.0;
            if total(mid) < groups as f64 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let mut sizes: Vec<usize> = (1..=DEPTH)
            .map(|d| (lo.powi(d as i32).round() as usize).max(1))
            .collect();
        // Sizes never shrink from one level to the next, and add up to `groups`.
        for d in 1..DEPTH {
            sizes[d] = sizes[d].max(sizes[d - 1]);
        }
        let sum: usize = sizes.iter().sum();
        if sum > groups {
            let over = sum - groups;
            sizes[DEPTH - 1] -= over.min(sizes[DEPTH - 1] - 1);
        } else {
            sizes[DEPTH - 1] += groups - sum;
        }
        let namespace = Uuid::from_u128(0x6265_6e63_686d_656d_6265_7273_6869_7073);
        let mut tree = Tree {
            ids: Vec::with_capacity(groups),
            parent: Vec::with_capacity(groups),
            depth: Vec::with_capacity(groups),
            has_children: Vec::with_capacity(groups),
        };
        let mut previous: Option<(usize, usize)> = None;
        for (d, &size) in sizes.iter().enumerate() {
            let start = tree.ids.len();
            for k in 0..size {
                let index = start + k;
                let parent = previous.map(|(pstart, plen)| {
                    // The first `plen` groups of a level take one parent each, in order, so
                    // that every level-(d-1) group has a child and depth 8 is reached under
                    // many branches; the rest pick at random.
                    if k < plen {
                        pstart + k
                    } else {
                        pstart + (mix(seed ^ 0x7472_6565, index as u64) as usize) % plen
                    }
                });
                tree.ids.push(Uuid::new_v5(
                    &namespace,
                    format!("{seed}-{index}").as_bytes(),
                ));
                tree.parent.push(parent);
                tree.depth.push(d + 1);
                tree.has_children.push(false);
                if let Some(p) = parent {
                    tree.has_children[p] = true;
                }
            }
            previous = Some((start, size));
        }
        tree
    }

    pub(super) fn name(&self, i: usize) -> String {
        format!("g{}-{i}", self.depth[i])
    }
}

/// How many direct members each group gets: most groups a few dozen to a few hundred, one in
/// a hundred about 30 times the mean (a heavy tail, as real inventories have), adding up to
/// exactly `total`.
pub(super) fn membership_sizes(
    seed: u64,
    groups: usize,
    total: usize,
    devices: usize,
) -> Vec<usize> {
    let weights: Vec<f64> = (0..groups)
        .map(|g| {
            let h = mix(seed ^ 0x7369_7a65, g as u64);
            if h.is_multiple_of(100) {
                30.0
            } else {
                0.1 + 1.4 * unit(h)
            }
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    let mut sizes: Vec<usize> = weights
        .iter()
        .map(|w| ((w / sum * total as f64).floor() as usize).clamp(1, devices))
        .collect();
    let mut assigned: usize = sizes.iter().sum();
    let mut g = 0;
    while assigned != total {
        let i = g % groups;
        if assigned < total && sizes[i] < devices {
            sizes[i] += 1;
            assigned += 1;
        } else if assigned > total && sizes[i] > 1 {
            sizes[i] -= 1;
            assigned -= 1;
        }
        g += 1;
    }
    sizes
}

/// `count` distinct device indexes for group `g`: a walk with a random start and a random
/// stride coprime with `devices`.
pub(super) fn members(
    seed: u64,
    key: u64,
    count: usize,
    devices: usize,
) -> impl Iterator<Item = usize> {
    let h = mix(seed ^ 0x6d65_6d62, key);
    let start = (h as usize) % devices;
    let mut stride = ((h >> 32) as usize % devices).max(1);
    while gcd(stride, devices) != 1 {
        stride += 1;
    }
    (0..count.min(devices)).map(move |k| (start + k * stride) % devices)
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
