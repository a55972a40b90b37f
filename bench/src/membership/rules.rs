//! One rule over every device: Corral's in-memory predicate against a hand-written Rust
//! predicate and the `cel-interpreter` crate, and its compiled SQL against hand-written SQL.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::Utc;
use corral_api::runtime::BoxError;
use corral_domain::group::GroupType;
use corral_domain::inventory::Device;
use corral_domain::rule::{self, Entity, EvalContext, Memberships};
use corral_projections::inventory::{self as inv, device_row, rule_arguments, DEVICE_COLUMNS};
use futures::TryStreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use super::{percentile, sample, Row};

/// The rule: four conditions of different kinds (text equality, a case-insensitive pattern,
/// a boolean and a tag key), as a typical dynamic group has.
pub(super) const RULE: &str = "vendor:Cisco hostname:%core% is_available:true tags:env";

/// The same condition, written by hand in SQL.
const NAIVE_SQL: &str = "SELECT count(*) FROM devices
    WHERE removed_at IS NULL AND vendor = 'Cisco' AND hostname ILIKE '%core%'
      AND is_available AND tags ? 'env'";

/// The same condition in CEL, over one map per device (`lowerAscii` is CEL's strings
/// extension, registered below: `cel-interpreter` 0.10 does not ship it).
#[cfg(feature = "cel-bench")]
const CEL: &str = r#"d.vendor == "Cisco" && d.hostname != null && d.hostname.lowerAscii().contains("core") && d.is_available == true && "env" in d.tags"#;

/// Passes over the devices per in-memory figure (the median is kept).
const PASSES: usize = 3;

struct NoGroups;

impl Memberships for NoGroups {
    fn contains(&self, _group: Uuid, _direct: bool, _member_id: &str) -> bool {
        false
    }
}

/// What a developer would write by hand for [`RULE`].
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

/// Evaluations per second of `predicate` over `devices` (median of [`PASSES`]), and the
/// number of matches.
fn rate(devices: &[Device], predicate: impl Fn(&Device) -> bool) -> (f64, usize) {
    let mut rates = Vec::with_capacity(PASSES);
    let mut matched = 0;
    for _ in 0..PASSES {
        let started = Instant::now();
        matched = devices.iter().filter(|d| predicate(black_box(d))).count();
        rates.push(devices.len() as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    (percentile(&rates, 0.5), matched)
}

/// Reads every live device, as the evaluator does.
async fn load(pool: &PgPool) -> Result<Vec<Device>, BoxError> {
    let started = Instant::now();
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices d WHERE d.removed_at IS NULL");
    let mut stream = sqlx::query(&sql).fetch(pool);
    let mut devices = Vec::new();
    while let Some(row) = stream.try_next().await? {
        devices.push(device_row(&row)?.device);
    }
    eprintln!(
        "bench: membership: {} devices loaded into memory in {:.1} s",
        devices.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(devices)
}

pub(super) async fn bench(pool: &PgPool, rows: &mut Vec<Row>) -> Result<(), BoxError> {
    let parsed = rule::parse(RULE, GroupType::Device).map_err(|e| format!("{RULE}: {e}"))?;
    let rule = parsed.rule;
    let devices = load(pool).await?;
    let n = devices.len();

    let groups = NoGroups;
    let ctx = EvalContext {
        now: Utc::now(),
        groups: &groups,
    };
    let (ours, matched) = rate(&devices, |d| rule.matches(Entity::Device(d), &ctx));
    let (hand, hand_matched) = rate(&devices, hand_written);
    if matched != hand_matched {
        return Err(format!("{RULE}: {matched} matches in memory, {hand_matched} by hand").into());
    }
    eprintln!("bench: membership: `{RULE}` matches {matched} of {n} devices");
    rows.push(Row {
        name: format!("rule `{RULE}` in memory over {n} devices, 1 thread (evals/s)"),
        corral: format!("{ours:.0}"),
        baseline_name: "hand-written Rust predicate, same devices (evals/s)".into(),
        baseline: format!("{hand:.0}"),
        ratio: ours / hand,
        target: ">= 10M evals/s".into(),
    });
    cel_row(&devices, ours, matched, rows)?;
    drop(devices);

    // The compiled SQL against the hand-written SQL, both counting the whole table.
    let fragment = rule.to_sql(&inv::sql_context(Utc::now()));
    let compiled = format!(
        "SELECT count(*) FROM devices d WHERE d.removed_at IS NULL AND ({})",
        fragment.sql
    );
    let count_compiled = || async {
        let n: i64 = sqlx::query_scalar_with(&compiled, rule_arguments(Some(&fragment), &[])?)
            .fetch_one(pool)
            .await?;
        Ok::<i64, BoxError>(n)
    };
    let sql_matched = count_compiled().await?;
    let naive_matched: i64 = sqlx::query_scalar(NAIVE_SQL).fetch_one(pool).await?;
    if sql_matched != matched as i64 || naive_matched != sql_matched {
        return Err(format!(
            "{RULE}: {matched} matches in memory, {sql_matched} by the compiled SQL, {naive_matched} by hand-written SQL"
        )
        .into());
    }
    let budget = Duration::from_secs(30);
    let corral = sample(5, budget, || async {
        count_compiled().await?;
        Ok::<(), BoxError>(())
    })
    .await?;
    let naive = sample(5, budget, || async {
        sqlx::query(NAIVE_SQL).fetch_one(pool).await?;
        Ok::<(), BoxError>(())
    })
    .await?;
    let (c, b) = (percentile(&corral, 0.5), percentile(&naive, 0.5));
    rows.push(Row {
        name: format!(
            "rule compiled to SQL, count(*) over {n} devices, p50 of {} (ms)",
            corral.len()
        ),
        corral: format!("{c:.0}"),
        baseline_name: format!(
            "hand-written SQL, same condition, p50 of {} (ms)",
            naive.len()
        ),
        baseline: format!("{b:.0}"),
        ratio: c / b,
        target: "-".into(),
    });
    Ok(())
}

#[cfg(feature = "cel-bench")]
fn cel_row(
    devices: &[Device],
    ours: f64,
    matched: usize,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    use cel_interpreter::extractors::This;
    use cel_interpreter::{Context, Program, Value};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn text(v: &Option<String>) -> Value {
        v.clone().map_or(Value::Null, Value::from)
    }
    fn map(m: &std::collections::BTreeMap<String, String>) -> Value {
        let m: HashMap<String, Value> = m
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        Value::from(m)
    }
    fn time(t: Option<chrono::DateTime<Utc>>) -> Value {
        t.map_or(Value::Null, |t| Value::Timestamp(t.fixed_offset()))
    }
    // Every field of the device, as an integrator's CEL program would see it.
    let values: Vec<Value> = devices
        .iter()
        .map(|d| {
            let fields: HashMap<String, Value> = [
                ("id", Value::from(d.id.clone())),
                ("hostname", text(&d.hostname)),
                ("ip", text(&d.ip)),
                ("mac", text(&d.mac)),
                ("vendor", text(&d.vendor)),
                ("model", text(&d.model)),
                ("os", text(&d.os)),
                ("os_version", text(&d.os_version)),
                ("partition", text(&d.partition)),
                ("site", text(&d.site)),
                ("type", text(&d.device_type)),
                ("agent_id", text(&d.agent_id)),
                ("poller_id", text(&d.poller_id)),
                ("tags", map(&d.tags)),
                ("metadata", map(&d.metadata)),
                (
                    "discovery_sources",
                    Value::from(d.discovery_sources.clone()),
                ),
                (
                    "is_available",
                    d.is_available.map_or(Value::Null, Value::Bool),
                ),
                ("first_seen", time(d.first_seen)),
                ("last_seen", time(d.last_seen)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            Value::from(fields)
        })
        .collect();
    let program = Program::compile(CEL).map_err(|e| format!("{CEL}: {e}"))?;
    let mut root = Context::default();
    root.add_function("lowerAscii", |This(s): This<Arc<String>>| {
        s.to_ascii_lowercase()
    });
    let mut rates = Vec::with_capacity(PASSES);
    let mut cel_matched = 0;
    for _ in 0..PASSES {
        let started = Instant::now();
        cel_matched = 0;
        for v in &values {
            let mut ctx = root.new_inner_scope();
            ctx.add_variable_from_value("d", v.clone());
            match program.execute(&ctx) {
                Ok(Value::Bool(true)) => cel_matched += 1,
                Ok(_) => {}
                Err(e) => return Err(format!("{CEL}: {e:?}").into()),
            }
        }
        rates.push(values.len() as f64 / started.elapsed().as_secs_f64());
    }
    if cel_matched != matched {
        return Err(format!("CEL matched {cel_matched}, the rule {matched}").into());
    }
    rates.sort_by(f64::total_cmp);
    let cel = percentile(&rates, 0.5);
    rows.push(Row {
        name: format!("rule `{RULE}` in memory, 1 thread (evals/s)"),
        corral: format!("{ours:.0}"),
        baseline_name: "cel-interpreter 0.10, equivalent CEL over a map per device (evals/s)"
            .into(),
        baseline: format!("{cel:.0}"),
        ratio: ours / cel,
        target: "-".into(),
    });
    Ok(())
}

#[cfg(not(feature = "cel-bench"))]
fn cel_row(
    _devices: &[Device],
    ours: f64,
    _matched: usize,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    rows.push(Row {
        name: format!("rule `{RULE}` in memory, 1 thread (evals/s)"),
        corral: format!("{ours:.0}"),
        baseline_name: "cel-interpreter, equivalent CEL".into(),
        baseline: "not built (--features cel-bench)".into(),
        ratio: f64::NAN,
        target: "-".into(),
    });
    Ok(())
}
