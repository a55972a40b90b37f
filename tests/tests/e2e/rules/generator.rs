//! Random rule text from the grammar, with values drawn from the inventory so that
//! conditions hit, miss and sit on boundaries.

use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use corral_domain::inventory::{Device, Service};
use corral_domain::rule::GroupType;
use rand::rngs::StdRng;
use rand::Rng;
use uuid::Uuid;

use super::inventory::{
    mac_text, pick, random_hex, META_KEYS, SOURCES, TAG_KEYS, TAG_VALUES, WORDS,
};

pub(super) struct RuleGen<'a> {
    pub(super) rng: &'a mut StdRng,
    pub(super) devices: &'a [Device],
    pub(super) services: &'a [Service],
    pub(super) groups: &'a [Uuid],
    pub(super) now: DateTime<Utc>,
}

/// Quotes a value for rule text when SRQL's tokenizer needs it.
fn quoted(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_alphanumeric() || "-_.:%/@+".contains(c))
    {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A LIKE pattern derived from `v`: its literal `%`, `_` and `\` escaped, then cut.
fn like_of(rng: &mut StdRng, v: &str) -> String {
    let chars: Vec<char> = v.chars().collect();
    let esc = |c: &char| match c {
        '%' | '_' | '\\' => format!("\\{c}"),
        c => c.to_string(),
    };
    let case = |s: String, rng: &mut StdRng| match rng.gen_range(0..3) {
        0 => s.to_uppercase(),
        1 => s.to_lowercase(),
        _ => s,
    };
    let n = chars.len();
    let a = rng.gen_range(0..=n);
    let b = rng.gen_range(a..=n);
    let mid: String = chars[a..b].iter().map(esc).collect();
    let mut p = match rng.gen_range(0..4) {
        0 => format!("{mid}%"),
        1 => format!("%{mid}"),
        2 => format!("%{mid}%"),
        _ => {
            let mut s: Vec<String> = chars.iter().map(esc).collect();
            if n > 0 {
                let i = rng.gen_range(0..n);
                s[i] = "_".into();
            }
            format!("{}%", s.concat())
        }
    };
    p = case(p, rng);
    if !p.contains('%') {
        p.push('%');
    }
    p
}

fn random_regex(rng: &mut StdRng) -> String {
    let mut out = String::new();
    if rng.gen_bool(0.25) {
        out.push_str("(?i)");
    }
    if rng.gen_bool(0.4) {
        out.push('^');
    }
    for _ in 0..rng.gen_range(1..4) {
        let atom = pick(
            rng,
            &[
                "web", "db", "-", "_", "é", "É", "0", "1", "[0-9]", "[a-z]", "[^a-c]", "\\d",
                "\\D", "[\\d_]", ".", "(a|b)", "(?:e|x)", "\\.", "[.:]", "ü", "C", "e.b", "\\n",
                "l$",
            ],
        );
        out.push_str(atom);
        if !atom.ends_with('$') {
            out.push_str(pick(
                rng,
                &["", "", "", "*", "+", "?", "{1,2}", "{2}", "*?"],
            ));
        }
    }
    if rng.gen_bool(0.3) {
        out.push('$');
    }
    out
}

impl RuleGen<'_> {
    pub(super) fn rule(&mut self, kind: GroupType) -> String {
        let body = self.expr(kind, 0);
        let entity = match kind {
            GroupType::Device => "in:devices",
            GroupType::Service => "in:services",
        };
        match self.rng.gen_range(0..4) {
            0 => format!("{entity} {body}"),
            1 => format!("{body} {entity}"),
            _ => body,
        }
    }

    fn expr(&mut self, kind: GroupType, depth: usize) -> String {
        let n = self.rng.gen_range(1..=3);
        let mut out = String::new();
        for i in 0..n {
            if i > 0 {
                out.push_str(pick(self.rng, &[" ", " AND ", " OR ", " or ", " "]));
            }
            out.push_str(&self.unary(kind, depth));
        }
        out
    }

    fn unary(&mut self, kind: GroupType, depth: usize) -> String {
        match self.rng.gen_range(0..10) {
            0 if depth < 3 => format!(
                "{}{}",
                pick(self.rng, &["NOT ", "-", "not "]),
                self.unary(kind, depth + 1)
            ),
            1 | 2 if depth < 3 => format!("({})", self.expr(kind, depth + 1)),
            _ => match kind {
                GroupType::Device => self.device_term(""),
                GroupType::Service => self.service_term(),
            },
        }
    }

    fn bang(&mut self) -> &'static str {
        if self.rng.gen_bool(0.3) {
            "!"
        } else {
            ""
        }
    }

    fn sample_device(&mut self) -> &Device {
        &self.devices[self.rng.gen_range(0..self.devices.len())]
    }

    /// A text value of a device field, or a pool word.
    fn text_sample(&mut self, get: fn(&Device) -> Option<&str>) -> String {
        for _ in 0..5 {
            let d = self.sample_device();
            if let Some(v) = get(d).filter(|v| !v.is_empty()) {
                return v.to_string();
            }
        }
        pick(self.rng, WORDS).to_string()
    }

    fn list_of(&mut self, get: fn(&Device) -> Option<&str>) -> String {
        let items: Vec<String> = (0..self.rng.gen_range(1..4))
            .map(|_| self.text_sample(get))
            .filter(|v| !v.contains(['"', '\'', '\\', '%', '`']) && v.trim() == v)
            .map(|v| {
                if v.contains([' ', ',', '(', ')', '[', ']', '\n']) {
                    format!("\"{v}\"")
                } else {
                    v
                }
            })
            .collect();
        format!(
            "({})",
            if items.is_empty() {
                "x".into()
            } else {
                items.join(",")
            }
        )
    }

    fn text_term(&mut self, prefix: &str, field: &str, get: fn(&Device) -> Option<&str>) -> String {
        let bang = self.bang();
        match self.rng.gen_range(0..7) {
            0 | 1 => format!("{bang}{prefix}{field}:{}", quoted(&self.text_sample(get))),
            2 | 3 => {
                let v = self.text_sample(get);
                format!("{bang}{prefix}{field}:{}", quoted(&like_of(self.rng, &v)))
            }
            4 => format!("{bang}{prefix}{field}:{}", self.list_of(get)),
            5 => format!(
                "{prefix}{field}~\"{}\"",
                random_regex(self.rng).replace('"', "\\\"")
            ),
            _ => format!("{bang}missing:{prefix}{field}"),
        }
    }

    fn device_term(&mut self, prefix: &str) -> String {
        let bang = self.bang();
        match self.rng.gen_range(0..22) {
            0 | 1 => {
                let f = pick(self.rng, &["hostname", "HostName"]);
                self.text_term(prefix, f, |d| d.hostname.as_deref())
            }
            2 => {
                let f = pick(self.rng, &["vendor", "vendor_name"]);
                self.text_term(prefix, f, |d| d.vendor.as_deref())
            }
            3 => self.text_term(prefix, "model", |d| d.model.as_deref()),
            4 => {
                let f = pick(self.rng, &["os", "os.name"]);
                self.text_term(prefix, f, |d| d.os.as_deref())
            }
            5 => {
                let f = pick(self.rng, &["partition", "site", "poller_id"]);
                self.text_term(prefix, f, |d| d.site.as_deref())
            }
            6 => {
                let f = pick(self.rng, &["type", "device_type"]);
                self.text_term(prefix, f, |d| d.device_type.as_deref())
            }
            7 => self.text_term(prefix, "agent_id", |d| d.agent_id.as_deref()),
            8 => {
                let f = pick(self.rng, &["id", "uid", "device_id"]);
                self.text_term(prefix, f, |d| Some(d.id.as_str()))
            }
            9 | 10 => {
                let value = match self.rng.gen_range(0..6) {
                    0 => pick(
                        self.rng,
                        &[
                            "10.0.0.0/8",
                            "10.1.0.0/16",
                            "192.168.0.0/16",
                            "172.16.0.0/12",
                            "fd00::/8",
                            "2001:db8::/32",
                            "0.0.0.0/0",
                            "::/0",
                            "::ffff:10.0.0.0/104",
                            "10.0.0.5/32",
                        ],
                    )
                    .to_string(),
                    1 => {
                        // Ends at stored addresses, to exercise inclusiveness.
                        let a: IpAddr = self
                            .text_sample(|d| d.ip.as_deref())
                            .parse()
                            .unwrap_or(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
                        let b: IpAddr = self.text_sample(|d| d.ip.as_deref()).parse().unwrap_or(a);
                        if a.is_ipv4() != b.is_ipv4() {
                            pick(
                                self.rng,
                                &[
                                    "10.0.0.0-10.1.255.255",
                                    "192.168.1.1-192.168.1.100",
                                    "fd00::1-fd00::ff",
                                ],
                            )
                            .to_string()
                        } else {
                            format!("{}-{}", a.min(b), a.max(b))
                        }
                    }
                    2 => self.text_sample(|d| d.ip.as_deref()),
                    3 => {
                        let v = self.text_sample(|d| d.ip.as_deref());
                        like_of(self.rng, &v)
                    }
                    4 => {
                        let ip = self.text_sample(|d| d.ip.as_deref());
                        return format!("{bang}{prefix}ip:(10.0.0.0/8,{ip},fd00::1-fd00::ff)");
                    }
                    _ => {
                        return format!(
                            "{prefix}ip~\"{}\"",
                            pick(
                                self.rng,
                                &["^10\\.", ":", "^192\\.168\\.[0-9]+\\.1", "(?i)^FD"]
                            )
                        )
                    }
                };
                format!("{bang}{prefix}ip:{}", quoted(&value))
            }
            11 => {
                let hex = random_hex(self.rng);
                let value = match self.rng.gen_range(0..4) {
                    0 => mac_text(self.rng, &hex),
                    1 => format!("{}%", &hex[..self.rng.gen_range(1..8)]).to_uppercase(),
                    2 => format!("%{}_{}", &hex[6..9], &hex[10..]),
                    _ => {
                        let other = self.text_sample(|d| d.mac.as_deref());
                        return format!(
                            "{bang}{prefix}mac:({},{})",
                            mac_text(self.rng, &hex),
                            quoted(&other)
                        );
                    }
                };
                format!("{bang}{prefix}mac:{}", quoted(&value))
            }
            12 => {
                let value = match self.rng.gen_range(0..3) {
                    0 => pick(self.rng, TAG_KEYS).to_string(),
                    1 => format!(
                        "({},{})",
                        pick(self.rng, TAG_KEYS),
                        pick(self.rng, TAG_KEYS)
                    ),
                    _ => "Env".to_string(),
                };
                format!("{bang}{prefix}tags:{value}")
            }
            13 | 14 => {
                let key = pick(self.rng, TAG_KEYS);
                let (map, key, pool) = if self.rng.gen_bool(0.6) {
                    ("tags", key, TAG_VALUES)
                } else {
                    (
                        "metadata",
                        pick(self.rng, META_KEYS),
                        &["r1", "R1", "Building A", "b_2"][..],
                    )
                };
                let v = pick(self.rng, pool);
                let value = match self.rng.gen_range(0..3) {
                    0 if !v.is_empty() => quoted(v),
                    1 => quoted(&like_of(self.rng, v)),
                    _ => {
                        return self.text_term(
                            prefix,
                            &format!("{map}.{}", key.to_uppercase()),
                            |d| d.tags.get("env").map(String::as_str),
                        )
                    }
                };
                format!("{bang}{prefix}{map}.{key}:{value}")
            }
            15 => {
                let a = pick(self.rng, SOURCES);
                let b = pick(self.rng, SOURCES);
                match self.rng.gen_range(0..3) {
                    0 => format!("{prefix}discovery_sources:{a}"),
                    1 => format!("{bang}{prefix}discovery_sources:({a},{b})"),
                    _ => format!("{bang}missing:{prefix}discovery_sources"),
                }
            }
            16 => {
                let v = pick(
                    self.rng,
                    &[
                        "true",
                        "false",
                        "yes",
                        "NO",
                        "1",
                        "0",
                        "(true,false)",
                        "(no)",
                    ],
                );
                format!("{bang}{prefix}is_available:{v}")
            }
            17 => {
                let op = pick(self.rng, &[">", ">=", "<", "<="]);
                let v = pick(
                    self.rng,
                    &[
                        "10",
                        "10.0",
                        "9.3.1",
                        "010",
                        "2",
                        "100000000000000000000",
                        "0",
                    ],
                );
                format!(
                    "{prefix}{}:{op}{v}",
                    pick(self.rng, &["os_version", "os.version"])
                )
            }
            18 | 19 => {
                let field = pick(self.rng, &["first_seen", "last_seen"]);
                if self.rng.gen_bool(0.15) {
                    return format!("{bang}missing:{prefix}{field}");
                }
                let op = pick(self.rng, &[">", ">=", "<", "<="]);
                let v = self.time_value();
                format!("{prefix}{field}:{op}{v}")
            }
            20 => {
                let field = pick(
                    self.rng,
                    &[
                        "hostname",
                        "tags",
                        "tags.env",
                        "metadata",
                        "ip",
                        "mac",
                        "is_available",
                        "os_version",
                    ],
                );
                format!("{bang}missing:{prefix}{field}")
            }
            _ if prefix.is_empty() => self.group_term(),
            _ => self.text_term(prefix, "hostname", |d| d.hostname.as_deref()),
        }
    }

    fn time_value(&mut self) -> String {
        match self.rng.gen_range(0..4) {
            0 => format!(
                "now-{}{}",
                self.rng.gen_range(0..40),
                pick(self.rng, &["d", "h", "m", "w", "s"])
            ),
            1 => pick(self.rng, &["now", "now+1h", "NOW-7D"]).to_string(),
            2 => {
                let t = self.now - Duration::seconds(self.rng.gen_range(0..30 * 86_400));
                t.to_rfc3339_opts(SecondsFormat::Secs, true)
            }
            _ => {
                // Exactly a stored instant, to exercise the boundaries.
                let d = self.sample_device();
                match d.last_seen.or(d.first_seen) {
                    Some(t) => t.to_rfc3339_opts(SecondsFormat::Micros, true),
                    None => (self.now - Duration::days(3))
                        .format("%Y-%m-%d")
                        .to_string(),
                }
            }
        }
    }

    fn group_term(&mut self) -> String {
        let bang = self.bang();
        let group = self.groups[self.rng.gen_range(0..self.groups.len())];
        let direct = if self.rng.gen_bool(0.4) {
            ":direct"
        } else {
            ""
        };
        format!("{bang}group:{group}{direct}")
    }

    fn service_term(&mut self) -> String {
        let bang = self.bang();
        let svc = &self.services[self.rng.gen_range(0..self.services.len())];
        let (svc_type, svc_name, svc_id, svc_host) = (
            svc.service_type.clone(),
            svc.name.clone(),
            svc.id.clone(),
            svc.device_id.clone(),
        );
        match self.rng.gen_range(0..12) {
            0..=3 => self.device_term("device."),
            4 => format!(
                "{bang}type:{}",
                match self.rng.gen_range(0..3) {
                    0 => svc_type,
                    1 => like_of(self.rng, &svc_type),
                    _ => "(http,dns)".into(),
                }
            ),
            5 => format!(
                "{bang}name:{}",
                match self.rng.gen_range(0..3) {
                    0 => svc_name,
                    1 => like_of(self.rng, &svc_name),
                    _ => return format!("name~\"{}\"", random_regex(self.rng)),
                }
            ),
            6 => format!(
                "{bang}{}",
                pick(
                    self.rng,
                    &[
                        "status:up",
                        "status:Up",
                        "status:%P",
                        "missing:status",
                        "status:(up,down)"
                    ]
                )
            ),
            7 => match self.rng.gen_range(0..3) {
                0 => format!(
                    "{bang}port:{}",
                    pick(self.rng, &["80", "443", "(22,8080)", "053"])
                ),
                1 => format!(
                    "port:{}{}",
                    pick(self.rng, &[">", ">=", "<", "<="]),
                    pick(self.rng, &["80", "443", "1024", "-1"])
                ),
                _ => format!("{bang}missing:port"),
            },
            8 => format!(
                "{bang}{}",
                pick(
                    self.rng,
                    &[
                        "tags:env",
                        "tags:(tier,role)",
                        "tags.env:prod",
                        "tags.env:PR%",
                        "metadata.rack:r1",
                        "missing:tags.env",
                        "missing:metadata"
                    ]
                )
            ),
            9 => {
                let op = pick(self.rng, &[">", ">=", "<", "<="]);
                let v = self.time_value();
                format!("last_seen:{op}{v}")
            }
            10 => match self.rng.gen_range(0..3) {
                0 => format!("{bang}id:{svc_id}"),
                1 => format!("{bang}device_id:{svc_host}"),
                _ => format!("{bang}id:svc-1%"),
            },
            _ => self.group_term(),
        }
    }
}
