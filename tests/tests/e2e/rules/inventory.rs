//! The random inventory: devices and services with many missing values, and group
//! memberships in memory and in the scratch tables the SQL templates read.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Duration, Utc};
use corral_domain::inventory::{Device, Service};
use corral_domain::rule::Memberships;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

pub(super) const WORDS: &[&str] = &[
    "web",
    "WEB",
    "Web",
    "db",
    "DB",
    "mail",
    "café",
    "CAFÉ",
    "ünï",
    "a%b",
    "x_y",
    "null",
    "o'brien",
    "sp ace",
    "back\\slash",
    "line\nbreak",
    "Ünï",
    "(par)",
    "c,d",
    "trail\n",
];
const VENDORS: &[&str] = &[
    "Cisco",
    "cisco",
    "Juniper",
    "Arista",
    "HP",
    "null",
    "Ünï Corp",
];
const PLAIN: &[&str] = &["a", "A", "b", "core", "Core", "edge-1", "edge_2", "x y"];
const VERSIONS: &[&str] = &[
    "10",
    "10.0",
    "10.0.1",
    "9.3",
    "010.2",
    "1.2.3-beta",
    "vista",
    "2",
    "2.",
    "100000000000000000000.1",
    "7..1",
    "0.0",
    "v10",
];
pub(super) const TAG_KEYS: &[&str] = &["env", "tier", "core", "role"];
pub(super) const TAG_VALUES: &[&str] = &["prod", "dev", "Prod", "", "p_q", "50%"];
pub(super) const META_KEYS: &[&str] = &["rack", "row", "location"];
pub(super) const SOURCES: &[&str] = &["sweep", "armis", "snmp", "netbox"];

fn maybe<T>(rng: &mut StdRng, p_none: f64, f: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    if rng.gen_bool(p_none) {
        None
    } else {
        Some(f(rng))
    }
}

pub(super) fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &[&'a T]) -> &'a T {
    items[rng.gen_range(0..items.len())]
}

fn text_value(rng: &mut StdRng, pool: &[&str]) -> String {
    if rng.gen_bool(0.05) {
        String::new()
    } else {
        pick(rng, pool).to_string()
    }
}

fn hostname(rng: &mut StdRng) -> String {
    let word = pick(rng, WORDS);
    match rng.gen_range(0..4) {
        0 => word.to_string(),
        _ => format!(
            "{word}{}{:02}",
            pick(rng, &["-", "_", ".", ""]),
            rng.gen_range(0..20)
        ),
    }
}

fn random_ip(rng: &mut StdRng) -> IpAddr {
    match rng.gen_range(0..6) {
        0 => IpAddr::V4(Ipv4Addr::new(
            10,
            rng.gen_range(0..3),
            rng.gen_range(0..3),
            rng.gen(),
        )),
        1 => IpAddr::V4(Ipv4Addr::new(192, 168, rng.gen_range(0..3), rng.gen())),
        2 => IpAddr::V4(Ipv4Addr::new(172, rng.gen_range(15..18), 0, rng.gen())),
        3 => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            0,
            0,
            0,
            0,
            rng.gen_range(0..300),
        )),
        4 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            rng.gen(),
            rng.gen(),
        )),
        _ => IpAddr::V6(Ipv4Addr::new(10, 0, 0, rng.gen_range(0..5)).to_ipv6_mapped()),
    }
}

pub(super) fn mac_text(rng: &mut StdRng, hex: &str) -> String {
    let pairs: Vec<&str> = (0..hex.len() / 2).map(|i| &hex[2 * i..2 * i + 2]).collect();
    match rng.gen_range(0..5) {
        0 => pairs.join(":").to_uppercase(),
        1 => pairs.join("-"),
        2 => format!("{}.{}.{}", &hex[..4], &hex[4..8], &hex[8..]),
        3 => hex.to_uppercase(),
        _ => pairs.join(":"),
    }
}

pub(super) fn random_hex(rng: &mut StdRng) -> String {
    // Few distinct prefixes, so that patterns hit.
    format!(
        "{}{:08x}",
        pick(rng, &["aabb", "00e0", "f0f0"]),
        rng.gen_range(0..16u32)
    )
}

fn time(rng: &mut StdRng, now: DateTime<Utc>) -> DateTime<Utc> {
    if rng.gen_bool(0.15) {
        // Exactly where a relative time of the generator falls.
        let unit = *pick(rng, &[&1i64, &60, &3_600, &86_400, &604_800]);
        return now - Duration::seconds(unit * rng.gen_range(0..40));
    }
    now - Duration::microseconds(rng.gen_range(0..30 * 86_400_000_000i64))
}

fn map(rng: &mut StdRng, keys: &[&str], values: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for k in keys {
        if rng.gen_bool(0.4) {
            out.insert(k.to_string(), pick(rng, values).to_string());
        }
    }
    out
}

pub(super) fn random_device(rng: &mut StdRng, i: usize, now: DateTime<Utc>) -> Device {
    Device {
        id: format!("{}{i}", pick(rng, &["dev-", "dev_", "Dev%", "dev-"])),
        hostname: maybe(rng, 0.2, |r| {
            if r.gen_bool(0.05) {
                String::new()
            } else {
                hostname(r)
            }
        }),
        ip: maybe(rng, 0.2, |r| random_ip(r).to_string()),
        mac: maybe(rng, 0.25, |r| {
            if r.gen_bool(0.05) {
                "zz".into()
            } else {
                let hex = random_hex(r);
                mac_text(r, &hex)
            }
        }),
        vendor: maybe(rng, 0.25, |r| text_value(r, VENDORS)),
        model: maybe(rng, 0.3, |r| text_value(r, PLAIN)),
        os: maybe(rng, 0.3, |r| {
            text_value(r, &["Linux", "linux", "IOS", "Windows"])
        }),
        os_version: maybe(rng, 0.25, |r| pick(r, VERSIONS).to_string()),
        partition: maybe(rng, 0.3, |r| text_value(r, PLAIN)),
        site: maybe(rng, 0.3, |r| text_value(r, PLAIN)),
        device_type: maybe(rng, 0.3, |r| text_value(r, &["Switch", "Router", "Server"])),
        agent_id: maybe(rng, 0.3, |r| text_value(r, &["agent-1", "agent-2"])),
        poller_id: maybe(rng, 0.3, |r| text_value(r, &["p1", "p2"])),
        tags: map(rng, TAG_KEYS, TAG_VALUES),
        metadata: map(rng, META_KEYS, &["r1", "R1", "Building A", "b_2", ""]),
        discovery_sources: SOURCES
            .iter()
            .filter(|_| rng.gen_bool(0.35))
            .map(|s| s.to_string())
            .collect(),
        is_available: maybe(rng, 0.3, |r| r.gen_bool(0.5)),
        first_seen: maybe(rng, 0.2, |r| time(r, now)),
        last_seen: maybe(rng, 0.2, |r| time(r, now)),
    }
}

pub(super) fn random_service(
    rng: &mut StdRng,
    i: usize,
    devices: &[Device],
    now: DateTime<Utc>,
) -> Service {
    let device_id = if rng.gen_bool(0.15) {
        format!("ghost-{i}")
    } else {
        devices[rng.gen_range(0..devices.len())].id.clone()
    };
    Service {
        id: format!("svc-{i}"),
        device_id,
        service_type: pick(rng, &["http", "ssh", "dns", "HTTP"]).to_string(),
        name: pick(rng, &["api", "API", "ssh", "resolver", "web_1"]).to_string(),
        port: maybe(rng, 0.2, |r| *pick(r, &[&22, &80, &443, &8080, &8443, &53])),
        status: maybe(rng, 0.3, |r| text_value(r, &["up", "down", "Up"])),
        tags: map(rng, TAG_KEYS, TAG_VALUES),
        metadata: map(rng, META_KEYS, &["r1", "x"]),
        last_seen: maybe(rng, 0.2, |r| time(r, now)),
    }
}

pub(super) async fn insert(pool: &PgPool, devices: &[Device], services: &[Service]) {
    let mut tx = pool.begin().await.expect("begin");
    for d in devices {
        sqlx::query(
            "INSERT INTO devices (id, hostname, ip, mac, vendor, model, os, os_version, partition, site, type,
                agent_id, poller_id, tags, metadata, discovery_sources, is_available, first_seen, last_seen)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)",
        )
        .bind(&d.id)
        .bind(&d.hostname)
        .bind(&d.ip)
        .bind(&d.mac)
        .bind(&d.vendor)
        .bind(&d.model)
        .bind(&d.os)
        .bind(&d.os_version)
        .bind(&d.partition)
        .bind(&d.site)
        .bind(&d.device_type)
        .bind(&d.agent_id)
        .bind(&d.poller_id)
        .bind(json!(d.tags))
        .bind(json!(d.metadata))
        .bind(&d.discovery_sources)
        .bind(d.is_available)
        .bind(d.first_seen)
        .bind(d.last_seen)
        .execute(&mut *tx)
        .await
        .expect("insert device");
    }
    for s in services {
        sqlx::query(
            "INSERT INTO services (id, device_id, type, name, port, status, tags, metadata, last_seen)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        )
        .bind(&s.id)
        .bind(&s.device_id)
        .bind(&s.service_type)
        .bind(&s.name)
        .bind(s.port)
        .bind(&s.status)
        .bind(json!(s.tags))
        .bind(json!(s.metadata))
        .bind(s.last_seen)
        .execute(&mut *tx)
        .await
        .expect("insert service");
    }
    tx.commit().await.expect("commit");
}

/// Group memberships, in memory and in the scratch tables the SQL templates read.
pub(super) struct Members(HashSet<(Uuid, bool, String)>);

impl Memberships for Members {
    fn contains(&self, group: Uuid, direct: bool, member_id: &str) -> bool {
        self.0.contains(&(group, direct, member_id.to_string()))
    }
}

impl Members {
    pub(super) async fn store(&self, pool: &PgPool) {
        for sql in [
            "CREATE SCHEMA t",
            "CREATE TABLE t.direct (group_id uuid NOT NULL, member_id text NOT NULL)",
            "CREATE TABLE t.effective (group_id uuid NOT NULL, member_id text NOT NULL)",
        ] {
            sqlx::query(sql).execute(pool).await.expect(sql);
        }
        for (table, direct) in [("t.direct", true), ("t.effective", false)] {
            let (groups, members): (Vec<Uuid>, Vec<String>) = self
                .0
                .iter()
                .filter(|(_, d, _)| *d == direct)
                .map(|(g, _, m)| (*g, m.clone()))
                .unzip();
            sqlx::query(&format!(
                "INSERT INTO {table} SELECT * FROM unnest($1::uuid[], $2::text[])"
            ))
            .bind(groups)
            .bind(members)
            .execute(pool)
            .await
            .expect("insert members");
        }
    }
}

pub(super) fn random_members(
    rng: &mut StdRng,
    groups: &[Uuid],
    devices: &[Device],
    services: &[Service],
) -> Members {
    let ids: Vec<&str> = devices
        .iter()
        .map(|d| d.id.as_str())
        .chain(services.iter().map(|s| s.id.as_str()))
        .collect();
    let mut set = HashSet::new();
    for group in groups {
        for id in &ids {
            let roll: f64 = rng.gen();
            if roll < 0.15 {
                set.insert((*group, true, id.to_string()));
                set.insert((*group, false, id.to_string()));
            } else if roll < 0.35 {
                set.insert((*group, false, id.to_string()));
            }
        }
    }
    Members(set)
}
