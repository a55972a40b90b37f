//! Authentication and the casbin policies, checked against every field of the schema.

use axum::body::Body;
use axum::http::Request;
use corral_tests::TestApp;
use serde_json::{json, Map, Value};

const INTROSPECT: &str = r#"{ __schema {
  mutationType { fields { name args { name type { ...T } } } }
  types { name kind inputFields { name type { ...T } } enumValues { name } }
} }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }"#;

/// A value of a required GraphQL input type, built from the schema itself.
fn sample(ty: &Value, types: &[Value]) -> Value {
    match ty["kind"].as_str() {
        Some("NON_NULL") => sample(&ty["ofType"], types),
        Some("LIST") => json!([sample(&ty["ofType"], types)]),
        Some("ENUM") => {
            let t = types
                .iter()
                .find(|t| t["name"] == ty["name"])
                .expect("enum");
            t["enumValues"][0]["name"].clone()
        }
        Some("INPUT_OBJECT") => {
            let t = types
                .iter()
                .find(|t| t["name"] == ty["name"])
                .expect("input");
            let mut obj = Map::new();
            for f in t["inputFields"].as_array().expect("fields") {
                if f["type"]["kind"] == "NON_NULL" {
                    obj.insert(
                        f["name"].as_str().expect("name").into(),
                        sample(&f["type"], types),
                    );
                }
            }
            Value::Object(obj)
        }
        _ => match ty["name"].as_str() {
            Some("Int") | Some("Position") => json!(1),
            Some("Float") => json!(1.5),
            Some("Boolean") => json!(false),
            Some("ID") => json!(uuid::Uuid::new_v4().to_string()),
            Some("JSON") => json!({}),
            _ => json!("x"),
        },
    }
}

fn type_ref(ty: &Value) -> String {
    match ty["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", type_ref(&ty["ofType"])),
        Some("LIST") => format!("[{}]", type_ref(&ty["ofType"])),
        _ => ty["name"].as_str().expect("named").to_string(),
    }
}

/// Calls every mutation field with `token`, returning (field, first error code or None).
async fn call_every_mutation(app: &TestApp, token: &str) -> Vec<(String, Option<String>)> {
    let schema = app.data(&app.admin, INTROSPECT, json!({})).await["__schema"].clone();
    let types = schema["types"].as_array().expect("types").clone();
    let mut out = Vec::new();
    for field in schema["mutationType"]["fields"].as_array().expect("fields") {
        let name = field["name"].as_str().expect("name");
        let args = field["args"].as_array().expect("args");
        let decls: Vec<String> = args
            .iter()
            .map(|a| {
                format!(
                    "${}: {}",
                    a["name"].as_str().expect("n"),
                    type_ref(&a["type"])
                )
            })
            .collect();
        let uses: Vec<String> = args
            .iter()
            .map(|a| format!("{0}: ${0}", a["name"].as_str().expect("n")))
            .collect();
        let vars: Map<String, Value> = args
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().expect("n").to_string(),
                    sample(&a["type"], &types),
                )
            })
            .collect();
        let query = format!(
            "mutation({}) {{ {}({}) {{ __typename }} }}",
            decls.join(", "),
            name,
            uses.join(", ")
        );
        let body = app.gql(token, &query, Value::Object(vars)).await;
        let code = body["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_string);
        if std::env::var("DEBUG_AUTH").is_ok() {
            eprintln!("{name}: {query} => {body}");
        }
        out.push((name.to_string(), code));
    }
    assert!(out.len() >= 5, "introspection found the mutations");
    out
}

/// Mutations every role may call: each acts on the caller's own dashboards only.
const VIEWER_MUTATIONS: &[&str] = &[
    "createDashboard",
    "renameDashboard",
    "deleteDashboard",
    "setDefaultDashboard",
    "addWidget",
    "updateWidget",
    "moveWidget",
    "removeWidget",
    "cloneDashboardTemplate",
];

/// Mutations operators may call besides [`VIEWER_MUTATIONS`]. Everything else is admin-only.
const OPERATOR_MUTATIONS: &[&str] = &[
    "addGroupMembers",
    "removeGroupMembers",
    "excludeGroupMembers",
    "unexcludeGroupMembers",
    "addGroupMembersByRule",
    "upsertDevices",
    "upsertServices",
    "removeDevices",
    "removeServices",
    "ingestSysmon",
    "ingestServiceChecks",
];

#[tokio::test]
async fn viewers_may_only_change_their_own_dashboards_and_operators_no_admin_fields() {
    let app = TestApp::spawn().await;
    for (field, code) in call_every_mutation(&app, &app.viewer).await {
        if VIEWER_MUTATIONS.contains(&field.as_str()) {
            assert_ne!(code.as_deref(), Some("FORBIDDEN"), "viewer calling {field}");
        } else {
            assert_eq!(code.as_deref(), Some("FORBIDDEN"), "viewer calling {field}");
        }
    }
    for (field, code) in call_every_mutation(&app, &app.operator).await {
        if !OPERATOR_MUTATIONS.contains(&field.as_str())
            && !VIEWER_MUTATIONS.contains(&field.as_str())
        {
            assert_eq!(
                code.as_deref(),
                Some("FORBIDDEN"),
                "operator calling admin-only {field}"
            );
        }
    }
    for (field, code) in call_every_mutation(&app, &app.admin).await {
        assert_ne!(code.as_deref(), Some("FORBIDDEN"), "admin calling {field}");
    }
    // Nothing the forbidden calls asked for happened (a viewer's own dashboards and the
    // operator's inventory writes, which it may make and which are events, aside).
    let viewer_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE metadata->>'actor_role' IN ('viewer', 'operator')
            AND aggregate_type <> 'Dashboard'
            AND NOT (metadata->>'actor_role' = 'operator'
                     AND aggregate_type IN ('Device', 'Service'))",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(viewer_events, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn missing_or_bad_tokens_get_401_and_viewers_can_read() {
    let app = TestApp::spawn().await;
    let post = |auth: Option<&str>| {
        let mut r = Request::post("/graphql").header("content-type", "application/json");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.body(Body::from(r#"{"query":"{ root(type: DEVICE) { name } }"}"#))
            .expect("request")
    };
    assert_eq!(app.http(post(None)).await.0, 401);
    assert_eq!(app.http(post(Some("Bearer crl_nope"))).await.0, 401);
    assert_eq!(app.http(post(Some("Basic abc"))).await.0, 401);
    let (status, body) = app
        .http(post(Some(&format!("Bearer {}", app.viewer))))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["root"]["name"], "Inventory");
    app.shutdown().await;
}

#[tokio::test]
async fn request_limits_apply() {
    let app = TestApp::spawn().await;
    let big = format!(
        r#"{{"query":"{{ root(type: DEVICE) {{ name }} }}","variables":{{"pad":"{}"}}}}"#,
        "x".repeat(9 * 1024 * 1024)
    );
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", app.viewer))
        .body(Body::from(big))
        .expect("request");
    let (status, body) = app.http(request).await;
    assert_eq!(status, 413);
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
    let deep = format!(
        "{{ root(type: DEVICE) {{ {} id {} }} }}",
        "parent { ".repeat(20),
        "}".repeat(20)
    );
    let body = app.gql(&app.viewer, &deep, json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "QUERY_TOO_DEEP",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .contains("deeper than 16 levels"),
        "{body}"
    );
    let wide = "{ groups(type: DEVICE, first: 1000) { edges { node { children(first: 1000) { edges { node { id } } } } } } }";
    let body = app.gql(&app.viewer, wide, json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .contains("complex"),
        "{body}"
    );
    app.shutdown().await;
}
