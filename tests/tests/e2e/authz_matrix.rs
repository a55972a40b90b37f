//! The authorization matrix, generated from the schema: every field of `Query`, `Mutation`
//! and `Subscription` × every built-in role × scope position, each held globally or bound
//! to Site-A only.
//!
//! Tree: Inventory → Region → {Site-A → {Core, Dock}, Site-B}; Inventory → Elsewhere →
//! Moved-In (moved under Site-A after the bindings were granted); Site-A → Moved-Out (moved
//! under Elsewhere after). Positions: inside = Core, outside = Elsewhere, ancestor = Region,
//! sibling = Site-B, moved in = Moved-In, moved out = Moved-Out (the service tree mirrors
//! it, for the service fields). Each cell's expectation is computed, not written down: from
//! the field's permission (`permissions::FIELDS`), whether the role grants it
//! (`PolicyTable::built_in()`), whether scoped bindings can grant it (`Scoping`), the case's
//! kind ([`cases::Kind`]) and whether the position lies in Site-A's subtree now. Global
//! callers run each case once (at the outside position: a global binding reaches it).
//!
//! - allowed: no error, and the field's data is there (a lookup non-null, the item in the
//!   list, the mutation's payload without userErrors, a subscription's first item);
//! - hidden (a read beyond the scope): no error, and nothing: null, the item left out,
//!   nothing delivered;
//! - refused: a top-level `FORBIDDEN` error, `data.<field>` null, and no event written.
//!
//! A field the schema has and `FIELDS` or the table lacks (or the reverse) fails
//! `every_root_field_has_a_decision_and_a_case`.

mod cases;
mod fixtures;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use corral_api::permissions::{Decision, Scoping, FIELDS};
use corral_api::state::ApiConfig;
use corral_projections::sweeps::SweepConfig;
use corral_tests::TestApp;
use futures::StreamExt;
use serde_json::Value;

use cases::{Case, Kind, Look, Op, CASES};
use fixtures::{Binding, Caller, Env, Pos};

/// Cells left out of the run, each with the reason (an enforcement gap to fix). Entries:
/// (field, caller label as `role (Site-A)` / `role (global)`, position label).
const KNOWN_GAPS: &[(&str, &str, &str)] = &[];

const ROOTS: [&str; 3] = ["Query", "Mutation", "Subscription"];

/// The root fields of the schema's SDL, as (root, field).
fn schema_fields() -> BTreeSet<(String, String)> {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
    let doc = async_graphql::parser::parse_schema(corral_api::graphql::sdl()).expect("SDL");
    let mut out = BTreeSet::new();
    for definition in doc.definitions {
        let TypeSystemDefinition::Type(t) = definition else {
            continue;
        };
        let name = t.node.name.node.as_str();
        if !ROOTS.contains(&name) {
            continue;
        }
        if let TypeKind::Object(object) = &t.node.kind {
            for f in &object.fields {
                out.insert((name.to_string(), f.node.name.node.to_string()));
            }
        }
    }
    out
}

#[test]
fn every_root_field_has_a_decision_and_a_case() {
    let schema = schema_fields();
    assert!(schema.len() > 50, "the SDL's root fields: {schema:?}");
    let mut problems = vec![];
    for (root, field) in &schema {
        if corral_api::permissions::decision(root, field).is_none() {
            problems.push(format!(
                "{root}.{field} has no entry in permissions::FIELDS"
            ));
        }
        if !CASES.iter().any(|c| c.root == root && c.field == field) {
            problems.push(format!(
                "{root}.{field} has no case in the authorization matrix (authz_matrix/cases.rs)"
            ));
        }
    }
    for c in CASES {
        if !schema.contains(&(c.root.to_string(), c.field.to_string())) {
            problems.push(format!(
                "the matrix has a case for {}.{}, which the schema lacks",
                c.root, c.field
            ));
        }
    }
    for (root, field, _) in FIELDS {
        if ROOTS.contains(root) && !schema.contains(&(root.to_string(), field.to_string())) {
            problems.push(format!(
                "permissions::FIELDS names {root}.{field}, which the schema lacks"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Hidden,
    Forbidden,
}

/// What a cell must answer, from the field's decision, the role's permissions, the
/// permission's scoping, the case's kind and where the position is now.
fn expected(env: &Env, caller: &Caller, case: &Case, pos: Pos) -> Expect {
    let scoped = caller.binding == Binding::SiteA;
    // A node follows its type's own root field, and hides what that field refuses.
    let (root, field, node) = match case.kind {
        Kind::NodeOf(f) | Kind::OwnNodeOf(f) => ("Query", f, true),
        _ => (case.root, case.field, false),
    };
    let granted = match corral_api::permissions::decision(root, field) {
        None => false,
        Some(Decision::Anyone) => true,
        Some(Decision::Needs(p)) => {
            env.table.grants(caller.role, p) && (!scoped || p.scoping() == Scoping::Subtree)
        }
    };
    if !granted {
        return if node {
            Expect::Hidden
        } else {
            Expect::Forbidden
        };
    }
    if !scoped {
        return Expect::Allowed;
    }
    match case.kind {
        Kind::Own | Kind::OwnNodeOf(_) => Expect::Allowed,
        Kind::GlobalOnly => Expect::Forbidden,
        Kind::AboveScopes => Expect::Hidden,
        Kind::Read | Kind::List | Kind::SubscribeList | Kind::NodeOf(_) if pos.in_scope() => {
            Expect::Allowed
        }
        Kind::Read | Kind::List | Kind::SubscribeList | Kind::NodeOf(_) => Expect::Hidden,
        Kind::Write | Kind::SubscribeGroup if pos.in_scope() => Expect::Allowed,
        Kind::Write | Kind::SubscribeGroup => Expect::Forbidden,
    }
}

fn codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    e["extensions"]["code"]
                        .as_str()
                        .unwrap_or("(no code)")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_node(list: &Value, id: &str) -> bool {
    list.as_array()
        .is_some_and(|edges| edges.iter().any(|e| e["node"]["id"] == id || e["id"] == id))
}

/// Whether `data` (the field's value) shows the data an allowed call must give.
fn shows(look: &Look, data: &Value) -> bool {
    match look {
        Look::NonNull | Look::Delivers | Look::Changes(_) => !data.is_null(),
        Look::Has(pointer, id) => data.pointer(pointer).is_some_and(|l| has_node(l, id)),
        Look::At(pointer, allowed, _) => data.pointer(pointer) == Some(allowed),
        Look::Count(pointer) => data
            .pointer(pointer)
            .and_then(Value::as_i64)
            .is_some_and(|n| n > 0),
        Look::Payload(ok) => {
            !data.is_null()
                && data["userErrors"].as_array().is_some_and(|errors| {
                    errors
                        .iter()
                        .all(|e| ok.iter().any(|code| e["code"] == *code))
                })
        }
    }
}

/// Whether `data` shows nothing, as a read beyond the scope must.
fn hides(look: &Look, data: &Value) -> bool {
    match look {
        Look::NonNull | Look::Delivers | Look::Changes(_) => data.is_null(),
        Look::Has(pointer, id) => data
            .pointer(pointer)
            .is_some_and(|l| l.is_array() && !has_node(l, id)),
        Look::At(pointer, _, hidden) => data.pointer(pointer) == Some(hidden),
        Look::Count(pointer) => data.pointer(pointer).and_then(Value::as_i64) == Some(0),
        // A write has nothing to hide: beyond the scope it is refused.
        Look::Payload(_) => false,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 {
        format!("{}…", &s[..300])
    } else {
        s
    }
}

/// Runs a query or mutation cell; `Err` describes what came instead.
async fn run_request(
    env: &Env,
    caller: &Caller,
    case: &Case,
    op: &Op,
    want: Expect,
) -> Result<(), String> {
    let before = env.events().await;
    let body = env.app.gql(&caller.token, op.query, op.vars.clone()).await;
    let written = env.events().await - before;
    let codes = codes(&body);
    let data = body["data"][case.field].clone();
    let ok = match want {
        Expect::Allowed => codes.is_empty() && shows(&op.look, &data),
        Expect::Hidden => codes.is_empty() && hides(&op.look, &data),
        Expect::Forbidden => {
            codes.iter().any(|c| c == "FORBIDDEN") && data.is_null() && written == 0
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "codes {codes:?}, {written} event(s) written, {}",
            short(&body)
        ))
    }
}

/// The actor a caller's token stands for.
fn actor(env: &Env, caller: &Caller) -> corral_api::auth::Actor {
    let mut actor = corral_api::auth::Actor::with_role(&caller.subject, caller.role, "matrix");
    if caller.binding == Binding::SiteA {
        actor.role = String::new();
        actor.roles = vec![];
        actor.scoped = env
            .scopes
            .iter()
            .map(|s| corral_api::scope::ScopedRole {
                role: caller.role.to_string(),
                scope: s.parse().expect("a group id"),
            })
            .collect();
    }
    actor
}

/// Runs a subscription cell: only its start (authorization, first item), then closes it.
async fn run_subscription(
    env: &Env,
    caller: &Caller,
    case: &Case,
    op: &Op,
    want: Expect,
) -> Result<(), String> {
    let schema = env.app.state.schema.clone().expect("schema");
    let request = corral_api::graphql::prepare(
        async_graphql::Request::new(op.query)
            .variables(async_graphql::Variables::from_json(op.vars.clone())),
        actor(env, caller),
    );
    let mut stream = Box::pin(schema.execute_stream(request));
    // Nothing to wait for when nothing should come, or nothing comes until a change.
    let changes = match &op.look {
        Look::Changes(group) if want == Expect::Allowed => Some(group),
        _ => None,
    };
    let quiet = want == Expect::Hidden || changes.is_some();
    let wait = if quiet {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(10)
    };
    let mut first = match tokio::time::timeout(wait, stream.next()).await {
        Ok(Some(response)) => Some(serde_json::to_value(&response).expect("response")),
        Ok(None) => return Err("the stream ended at once".to_string()),
        Err(_) if quiet => None,
        Err(_) => return Err(format!("nothing within {wait:?}")),
    };
    if let (None, Some(group)) = (&first, changes) {
        // Open and quiet: a member joins, and its change must arrive.
        let device = env.fresh("z");
        env.setup(
            "mutation($input: UpsertDevicesInput!) { upsertDevices(input: $input) { userErrors { code } } }",
            serde_json::json!({ "input": { "devices": [{ "id": device }] } }),
        )
        .await;
        env.setup(
            "mutation($input: GroupMembersInput!) { addGroupMembers(input: $input) { userErrors { code } } }",
            serde_json::json!({ "input": { "groupId": group, "memberIds": [device] } }),
        )
        .await;
        first = match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(response)) => Some(serde_json::to_value(&response).expect("response")),
            _ => return Err(format!("no change within 10 s after {device} joined")),
        };
    }
    let Some(body) = first else {
        return Ok(());
    };
    let codes = codes(&body);
    let data = body["data"][case.field].clone();
    let ok = match want {
        Expect::Allowed => codes.is_empty() && !data.is_null(),
        Expect::Hidden => false,
        Expect::Forbidden => codes.iter().any(|c| c == "FORBIDDEN") && data.is_null(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("codes {codes:?}, {}", short(&body)))
    }
}

/// What one caller's cells came to.
#[derive(Default)]
struct Tally {
    allowed: usize,
    hidden: usize,
    refused: usize,
    skipped: usize,
    failures: Vec<String>,
}

/// Runs every cell of `caller`, in table order. Callers run side by side; a refused cell
/// holds `log` exclusively while it counts the events before and after its request (so
/// that no other cell's writes are counted), every other cell holds it shared.
async fn run_caller(env: &Env, caller: &Caller, log: &tokio::sync::RwLock<()>) -> Tally {
    let mut tally = Tally::default();
    for case in CASES {
        let positions: Vec<Pos> = match (case.kind.positional(), caller.binding) {
            (true, Binding::SiteA) => Pos::ALL.to_vec(),
            (true, Binding::Global) => vec![Pos::Outside],
            (false, _) => vec![Pos::Inside],
        };
        for pos in positions {
            let name = if case.label.is_empty() {
                format!("{}.{}", case.root, case.field)
            } else {
                format!("{}.{} ({})", case.root, case.field, case.label)
            };
            let at = if case.kind.positional() {
                pos.label()
            } else {
                "-"
            };
            if KNOWN_GAPS
                .iter()
                .any(|g| g.0 == case.field && g.1 == caller.label() && g.2 == at)
            {
                tally.skipped += 1;
                continue;
            }
            let want = expected(env, caller, case, pos);
            let shared = log.read().await;
            let Some(op) = cases::build(env, caller, case, pos).await else {
                tally
                    .failures
                    .push(format!("{name}: the matrix has no operation for it"));
                continue;
            };
            let result = if case.root == "Subscription" {
                run_subscription(env, caller, case, &op, want).await
            } else if want == Expect::Forbidden {
                drop(shared);
                let _alone = log.write().await;
                run_request(env, caller, case, &op, want).await
            } else {
                run_request(env, caller, case, &op, want).await
            };
            match want {
                Expect::Allowed => tally.allowed += 1,
                Expect::Hidden => tally.hidden += 1,
                Expect::Forbidden => tally.refused += 1,
            }
            if let Err(got) = result {
                tally.failures.push(format!(
                    "{name} | {} | {at} | expected {want:?} | got {got}",
                    caller.label()
                ));
            }
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_role_and_position() {
    let config = ApiConfig {
        sweeps: SweepConfig {
            allow: vec!["127.0.0.0/8".parse().expect("cidr")],
            enabled: true,
            ..SweepConfig::default()
        },
        ..ApiConfig::default()
    };
    let env = fixtures::build(TestApp::spawn_with(config, true).await).await;
    let started = Instant::now();
    let log = tokio::sync::RwLock::new(());
    let tallies =
        futures::future::join_all(env.callers.iter().map(|c| run_caller(&env, c, &log))).await;
    let sum = |f: fn(&Tally) -> usize| tallies.iter().map(f).sum::<usize>();
    let (allowed, hidden, refused) = (sum(|t| t.allowed), sum(|t| t.hidden), sum(|t| t.refused));
    let mut failures: Vec<&String> = tallies.iter().flat_map(|t| &t.failures).collect();
    failures.sort();
    println!(
        "authorization matrix: {} fields ({} cases) x {} callers, {} cells in {:.1} s: {allowed} allowed, {hidden} hidden, {refused} refused, {} known gaps skipped; {} failing",
        CASES
            .iter()
            .map(|c| (c.root, c.field))
            .collect::<BTreeSet<_>>()
            .len(),
        CASES.len(),
        env.callers.len(),
        allowed + hidden + refused,
        started.elapsed().as_secs_f64(),
        sum(|t| t.skipped),
        failures.len(),
    );
    assert!(
        failures.is_empty(),
        "{} failing cells (field | caller | position | expected | got):\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    env.app.shutdown().await;
}
