//! Every text input of every query and mutation, found by introspection, given a NUL
//! character, control and bidi characters, and a long string. A NUL is refused before
//! anything runs (`BAD_USER_INPUT`, naming where) and changes nothing; nothing answers
//! `INTERNAL`, and every error carries a registered code.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::support::{codes, Suite};

const INTROSPECTION: &str = "{ __schema { queryType { name } mutationType { name } types { kind name fields { name args { name type { ...T } } type { ...T } } inputFields { name type { ...T } } enumValues { name } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

/// Fields not to fuzz: none today; every root field is reachable by the admin.
const SKIP: [&str; 0] = [];

struct Schema {
    types: HashMap<String, Value>,
}

/// The named type inside NON_NULL and LIST wrappers.
fn named(t: &Value) -> &Value {
    if t["ofType"].is_object() {
        named(&t["ofType"])
    } else {
        t
    }
}

fn required(t: &Value) -> bool {
    t["kind"] == "NON_NULL"
}

/// The GraphQL spelling of a type reference (`[String!]!`).
fn spell(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", spell(&t["ofType"])),
        Some("LIST") => format!("[{}]", spell(&t["ofType"])),
        _ => t["name"].as_str().unwrap_or("?").to_string(),
    }
}

impl Schema {
    /// A value for type `t`; the leaf at `target` (a path of field names) gets `hostile`.
    fn value(&self, t: &Value, path: &[String], target: &[String], hostile: &str) -> Value {
        match t["kind"].as_str() {
            Some("NON_NULL") => self.value(&t["ofType"], path, target, hostile),
            Some("LIST") => json!([self.value(&t["ofType"], path, target, hostile)]),
            Some("INPUT_OBJECT") => {
                let ty = &self.types[t["name"].as_str().unwrap_or("")];
                let mut obj = serde_json::Map::new();
                for f in ty["inputFields"].as_array().into_iter().flatten() {
                    let name = f["name"].as_str().unwrap_or("").to_string();
                    let mut p = path.to_vec();
                    p.push(name.clone());
                    let on_target = target.starts_with(&p);
                    if required(&f["type"]) || on_target {
                        obj.insert(name, self.value(&f["type"], &p, target, hostile));
                    }
                }
                Value::Object(obj)
            }
            Some("ENUM") => {
                let ty = &self.types[t["name"].as_str().unwrap_or("")];
                ty["enumValues"][0]["name"].clone()
            }
            _ => {
                let hit = path == target;
                match t["name"].as_str() {
                    Some("String") | Some("ID") if hit => json!(hostile),
                    Some("JSON") if hit => json!({ "k": hostile, hostile: "v" }),
                    Some("ID") => json!("00000000-0000-4000-8000-000000000001"),
                    Some("String") => json!("a"),
                    Some("Int") => json!(1),
                    Some("Float") => json!(1.0),
                    Some("Boolean") => json!(false),
                    Some("DateTime") => json!(chrono::Utc::now().to_rfc3339()),
                    Some("Position") => json!("1"),
                    Some("JSON") => json!({}),
                    _ => Value::Null,
                }
            }
        }
    }

    /// Every text leaf (String, ID, JSON) reachable from type `t`, as paths from `path`.
    fn text_leaves(&self, t: &Value, path: Vec<String>, depth: usize, out: &mut Vec<Vec<String>>) {
        let n = named(t);
        match (n["kind"].as_str(), n["name"].as_str()) {
            (Some("SCALAR"), Some("String" | "ID" | "JSON")) => out.push(path),
            (Some("INPUT_OBJECT"), Some(name)) if depth < 4 => {
                for f in self.types[name]["inputFields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let mut p = path.clone();
                    p.push(f["name"].as_str().unwrap_or("").to_string());
                    self.text_leaves(&f["type"], p, depth + 1, out);
                }
            }
            _ => {}
        }
    }

    /// A selection for a field's return type (`{ __typename }` for objects).
    fn selection(&self, t: &Value) -> &'static str {
        match named(t)["kind"].as_str() {
            Some("OBJECT" | "INTERFACE" | "UNION") => " { __typename }",
            _ => "",
        }
    }
}

/// One call: the operation text and its variables.
struct Call {
    text: String,
    variables: Value,
    what: String,
}

fn calls(schema: &Schema, root: &str, op: &str, hostile: &str) -> Vec<Call> {
    let mut out = Vec::new();
    for field in schema.types[root]["fields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let fname = field["name"].as_str().unwrap_or("");
        if SKIP.contains(&fname) {
            continue;
        }
        let args = field["args"].as_array().cloned().unwrap_or_default();
        let mut targets = Vec::new();
        for a in &args {
            schema.text_leaves(
                &a["type"],
                vec![a["name"].as_str().unwrap_or("").to_string()],
                0,
                &mut targets,
            );
        }
        for target in targets {
            let mut defs = Vec::new();
            let mut uses = Vec::new();
            let mut variables = serde_json::Map::new();
            for a in &args {
                let name = a["name"].as_str().unwrap_or("").to_string();
                if !(required(&a["type"]) || target[0] == name) {
                    continue;
                }
                let v = schema.value(&a["type"], std::slice::from_ref(&name), &target, hostile);
                defs.push(format!("${name}: {}", spell(&a["type"])));
                uses.push(format!("{name}: ${name}"));
                variables.insert(name, v);
            }
            let defs = if defs.is_empty() {
                String::new()
            } else {
                format!("({})", defs.join(", "))
            };
            let uses = if uses.is_empty() {
                String::new()
            } else {
                format!("({})", uses.join(", "))
            };
            out.push(Call {
                text: format!(
                    "{op}{defs} {{ {fname}{uses}{} }}",
                    schema.selection(&field["type"])
                ),
                variables: Value::Object(variables),
                what: format!("{fname}({})", target.join(".")),
            });
        }
    }
    out
}

pub async fn run(suite: &Suite) {
    let r = suite
        .gql(&suite.served.admin, INTROSPECTION, json!({}))
        .await
        .json();
    let types: HashMap<String, Value> = r["data"]["__schema"]["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| (t["name"].as_str().unwrap_or("").to_string(), t.clone()))
        .collect();
    let schema = Schema { types };
    let query = r["data"]["__schema"]["queryType"]["name"]
        .as_str()
        .expect("Query")
        .to_string();
    let mutation = r["data"]["__schema"]["mutationType"]["name"]
        .as_str()
        .expect("Mutation")
        .to_string();

    super::support::set_phase("fuzz: NUL");
    // A NUL anywhere: refused before anything runs, naming where, nothing applied.
    let before = suite.fingerprint().await;
    let mut nul_calls = calls(&schema, &query, "query", "x\u{0}y");
    nul_calls.extend(calls(&schema, &mutation, "mutation", "x\u{0}y"));
    assert!(
        nul_calls.len() > 100,
        "only {} text inputs found",
        nul_calls.len()
    );
    for call in &nul_calls {
        let r = suite
            .gql(&suite.served.admin, &call.text, call.variables.clone())
            .await;
        let body = r.json();
        assert_eq!(r.status, 200, "{}: {}", call.what, r.text());
        assert_eq!(codes(&body), ["BAD_USER_INPUT"], "{}: {body}", call.what);
        let message = body["errors"][0]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("NUL") && message.contains('$'),
            "{}: {message}",
            call.what
        );
    }
    // And written into the query text rather than a variable.
    let r = suite
        .gql(
            &suite.served.admin,
            "mutation { createGroup(input: {name: \"x\\u0000y\", type: DEVICE}) { group { id } } }",
            json!({}),
        )
        .await;
    assert_eq!(codes(&r.json()), ["BAD_USER_INPUT"], "{}", r.text());
    // And as a variable's default value, which applies when the variable is not sent.
    let r = suite
        .gql(
            &suite.served.admin,
            "query($p: String = \"a\\u0000b\") { groupByPath(type: DEVICE, path: $p) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(codes(&r.json()), ["BAD_USER_INPUT"], "{}", r.text());
    assert!(r.text().contains("default value"), "{}", r.text());
    assert_eq!(suite.fingerprint().await, before, "a NUL changed something");

    super::support::set_phase("fuzz: controls");
    // Control and bidi characters, and a long string, everywhere: never INTERNAL.
    let long = "y".repeat(100_000);
    for hostile in ["a\u{7}b\u{1b}[31m\u{202e}c\u{2066}", long.as_str()] {
        let mut all = calls(&schema, &query, "query", hostile);
        all.extend(calls(&schema, &mutation, "mutation", hostile));
        for call in &all {
            let r = suite
                .gql(&suite.served.admin, &call.text, call.variables.clone())
                .await;
            let body = r.json();
            assert_eq!(r.status, 200, "{}: {}", call.what, r.text());
            for code in codes(&body) {
                assert!(
                    code != "INTERNAL"
                        && corral_api::error_codes::ErrorCode::parse(&code).is_some(),
                    "{}: {body}",
                    call.what
                );
            }
        }
    }
}
