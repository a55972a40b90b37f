//! The rule compiler's two outputs agree: random rules (written as text, some through JSON)
//! over a random inventory select the same devices and services in PostgreSQL (the SQL
//! fragment) and in memory (`Rule::matches`). Set `CORRAL_RULES_SEED` to replay a failure.

mod generator;
mod inventory;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use corral_domain::inventory::{Device, Service};
use corral_domain::rule::{
    self, Entity, EvalContext, GroupType, Rule, SqlContext, SqlFragment, SqlParam,
};
use corral_tests::TestDb;
use futures::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;
use uuid::Uuid;

use generator::RuleGen;
use inventory::{insert, random_device, random_members, random_service};

const DEVICES: usize = 300;
const SERVICES: usize = 100;
const RULES: usize = 2000;

#[tokio::test]
async fn sql_and_memory_agree_on_random_rules() {
    let seed: u64 = std::env::var("CORRAL_RULES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("rule property test seed: {seed} (CORRAL_RULES_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    // Stored times have microseconds; `now` may have nanoseconds, which both sides must drop.
    let stored_now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("now");
    let now = stored_now + Duration::nanoseconds(rng.gen_range(0..1000));

    let db = TestDb::new().await;
    let pool = db.pool(4).await;
    let devices: Vec<Device> = (0..DEVICES)
        .map(|i| random_device(&mut rng, i, stored_now))
        .collect();
    let services: Vec<Service> = (0..SERVICES)
        .map(|i| random_service(&mut rng, i, &devices, stored_now))
        .collect();
    insert(&pool, &devices, &services).await;
    let groups: Vec<Uuid> = (0..3).map(|_| Uuid::from_u128(rng.gen())).collect();
    let members = random_members(&mut rng, &groups, &devices, &services);
    members.store(&pool).await;

    let sql_ctx = SqlContext {
        now,
        first_param: 1,
        effective_members_sql: "SELECT m.member_id FROM t.effective m WHERE m.group_id = {group}"
            .into(),
        direct_members_sql: "SELECT m.member_id FROM t.direct m WHERE m.group_id = {group}".into(),
    };
    let eval_ctx = EvalContext {
        now,
        groups: &members,
    };
    let hosts: HashMap<&str, &Device> = devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut gen = RuleGen {
        rng: &mut rng,
        devices: &devices,
        services: &services,
        groups: &groups,
        now,
    };

    // Parse, round-trip and evaluate in memory; then run the SQL, four queries at a time.
    let mut cases = Vec::new();
    let mut rejected = BTreeMap::<String, usize>::new();
    for n in 0..RULES {
        let kind = if n % 4 == 3 {
            GroupType::Service
        } else {
            GroupType::Device
        };
        let text = gen.rule(kind);
        let parsed = match rule::parse(&text, kind) {
            Ok(p) => p,
            Err(e) => {
                *rejected.entry(reason(&e.message)).or_default() += 1;
                continue;
            }
        };
        let mut r = parsed.rule;
        let normalized = r.to_text();
        let reparsed = rule::parse(&normalized, GroupType::Device)
            .unwrap_or_else(|e| panic!("seed {seed}: `{normalized}` (from `{text}`) fails: {e}"));
        assert_eq!(reparsed.rule, r, "seed {seed}: parse(to_text) of `{text}`");
        let from_json = rule::from_json(&r.to_json())
            .unwrap_or_else(|e| panic!("seed {seed}: JSON of `{text}` fails: {e}"));
        assert_eq!(
            from_json.rule, r,
            "seed {seed}: from_json(to_json) of `{text}`"
        );
        if n % 4 == 1 {
            r = from_json.rule;
        }
        assert_eq!(
            r.explain(first_entity(&r, &devices, &services, &hosts), &eval_ctx)
                .len(),
            r.condition_count()
        );
        let expected = in_memory(&r, &devices, &services, &hosts, &eval_ctx);
        cases.push(Case {
            text,
            normalized,
            kind: r.kind(),
            sql: r.to_sql(&sql_ctx),
            expected,
        });
    }
    let accepted = cases.len();
    let results: Vec<(Case, BTreeSet<String>)> = stream::iter(cases)
        .map(|case| {
            let pool = pool.clone();
            async move {
                let found = case.run(&pool, seed).await;
                (case, found)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;

    let (mut nonempty, mut partial) = (0, 0);
    for (case, from_sql) in results {
        if from_sql != case.expected {
            let only_sql: Vec<_> = from_sql.difference(&case.expected).collect();
            let only_mem: Vec<_> = case.expected.difference(&from_sql).collect();
            let show: Vec<String> = only_sql
                .iter()
                .chain(&only_mem)
                .take(3)
                .map(|id| describe(id, &devices, &services))
                .collect();
            panic!(
                "seed {seed}: SQL and memory disagree on `{}` (written `{}`)\nSQL: {}\nparams: {:?}\nonly SQL: {only_sql:?}\nonly memory: {only_mem:?}\n{}",
                case.normalized,
                case.text,
                case.sql.sql,
                case.sql.params,
                show.join("\n")
            );
        }
        let total = match case.kind {
            GroupType::Device => DEVICES,
            GroupType::Service => SERVICES,
        };
        nonempty += usize::from(!from_sql.is_empty());
        partial += usize::from(!from_sql.is_empty() && from_sql.len() < total);
    }
    eprintln!("{accepted} of {RULES} rules accepted ({nonempty} select something, {partial} some but not all); rejections: {rejected:?}");
    assert!(
        accepted >= RULES * 3 / 4,
        "seed {seed}: only {accepted} rules accepted: {rejected:?}"
    );
    assert!(
        partial >= accepted / 3,
        "seed {seed}: too few discriminating rules ({partial})"
    );
    pool.close().await;
    db.drop_db().await;
}

/// One accepted rule: its SQL and what the in-memory predicate selected.
struct Case {
    text: String,
    normalized: String,
    kind: GroupType,
    sql: SqlFragment,
    expected: BTreeSet<String>,
}

impl Case {
    /// The ids the SQL selects.
    async fn run(&self, pool: &PgPool, seed: u64) -> BTreeSet<String> {
        let select = match self.kind {
            GroupType::Device => format!("SELECT d.id FROM devices d WHERE {}", self.sql.sql),
            GroupType::Service => format!(
                "SELECT s.id FROM services s LEFT JOIN devices sd ON sd.id = s.device_id WHERE {}",
                self.sql.sql
            ),
        };
        let mut query = sqlx::query_scalar::<_, String>(&select);
        for p in &self.sql.params {
            query = match p.clone() {
                SqlParam::Text(v) => query.bind(v),
                SqlParam::TextArray(v) => query.bind(v),
                SqlParam::Bool(v) => query.bind(v),
                SqlParam::Int(v) => query.bind(v),
                SqlParam::Timestamp(v) => query.bind(v),
                SqlParam::Uuid(v) => query.bind(v),
            };
        }
        query
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "seed {seed}: `{}` fails in PostgreSQL: {e}\n{select}\n{:?}",
                    self.normalized, self.sql.params
                )
            })
            .into_iter()
            .collect()
    }
}

/// The error message without the quoted parts, to count rejections by kind.
fn reason(message: &str) -> String {
    message
        .split('`')
        .step_by(2)
        .collect::<Vec<_>>()
        .join("_")
        .chars()
        .take(50)
        .collect()
}

fn first_entity<'a>(
    r: &Rule,
    devices: &'a [Device],
    services: &'a [Service],
    hosts: &HashMap<&str, &'a Device>,
) -> Entity<'a> {
    match r.kind() {
        GroupType::Device => Entity::Device(&devices[0]),
        GroupType::Service => Entity::Service(
            &services[0],
            hosts.get(services[0].device_id.as_str()).copied(),
        ),
    }
}

fn in_memory(
    r: &Rule,
    devices: &[Device],
    services: &[Service],
    hosts: &HashMap<&str, &Device>,
    ctx: &EvalContext<'_>,
) -> BTreeSet<String> {
    match r.kind() {
        GroupType::Device => devices
            .iter()
            .filter(|d| r.matches(Entity::Device(d), ctx))
            .map(|d| d.id.clone())
            .collect(),
        GroupType::Service => services
            .iter()
            .filter(|s| {
                r.matches(
                    Entity::Service(s, hosts.get(s.device_id.as_str()).copied()),
                    ctx,
                )
            })
            .map(|s| s.id.clone())
            .collect(),
    }
}

fn describe(id: &str, devices: &[Device], services: &[Service]) -> String {
    if let Some(d) = devices.iter().find(|d| d.id == id) {
        return format!("{d:?}");
    }
    let s = services.iter().find(|s| s.id == id);
    let host = s.and_then(|s| devices.iter().find(|d| d.id == s.device_id));
    format!("{s:?} on {host:?}")
}
