//! Queries built to cost the server: fragment bombs, thousands of aliases, deep nesting,
//! huge texts, and rule filters that make the database work.

use std::time::{Duration, Instant};

use serde_json::json;

use super::support::{assert_code, codes, Suite, BUDGET_MS};

/// Fragments `F0..F(levels-1)`, each spreading the one below three times (issue 13's 1 KB
/// query at 15 levels).
fn fragment_bomb(levels: usize) -> String {
    let mut q = format!(
        "query {{ root(type: DEVICE) {{ ...F{} }} }}\nfragment F0 on Group {{ id }}\n",
        levels - 1
    );
    for i in 1..levels {
        q.push_str(&format!(
            "fragment F{i} on Group {{ ...F{p} a: parent {{ ...F{p} }} b: parent {{ ...F{p} }} }}\n",
            p = i - 1
        ));
    }
    q
}

/// Asserts that `query` is refused with `code` within `within`.
async fn refused_fast(suite: &Suite, query: &str, code: &str, within: Duration, what: &str) {
    let started = Instant::now();
    let r = suite.gql(&suite.served.viewer, query, json!({})).await;
    let took = started.elapsed();
    assert_code(&r, 200, code, what);
    assert!(took < within, "{what}: refused after {took:?}");
}

pub async fn run(suite: &Suite) {
    let before = suite.fingerprint().await;
    let fast = Duration::from_millis(500);

    super::support::set_phase("fragment bombs");
    for levels in [15, 40] {
        let q = fragment_bomb(levels);
        assert!(q.len() < 4096, "{} bytes", q.len());
        refused_fast(suite, &q, "QUERY_TOO_LARGE", fast, "a fragment bomb").await;
    }
    // Three requests at once, as the review sent them: still refused at once.
    let started = Instant::now();
    let bomb = fragment_bomb(15);
    let (a, b, c) = tokio::join!(
        suite.gql(&suite.served.viewer, &bomb, json!({})),
        suite.gql(&suite.served.viewer, &bomb, json!({})),
        suite.gql(&suite.served.viewer, &bomb, json!({})),
    );
    for r in [a, b, c] {
        assert_code(&r, 200, "QUERY_TOO_LARGE", "concurrent bombs");
    }
    assert!(started.elapsed() < Duration::from_secs(2));

    super::support::set_phase("aliases, text, depth");
    let aliases: String = (0..5_000)
        .map(|i| format!("a{i}: root(type: DEVICE) {{ id }} "))
        .collect();
    refused_fast(
        suite,
        &format!("{{ {aliases} }}"),
        "QUERY_TOO_LARGE",
        fast,
        "5,000 aliases",
    )
    .await;
    let text = format!("{{ __typename {} }}", "# padding\n".repeat(8_000));
    refused_fast(suite, &text, "QUERY_TOO_LARGE", fast, "an 80 KB query text").await;
    let deep = format!(
        "{{ root(type: DEVICE) {{ {} id {} }} }}",
        "parent { ".repeat(40),
        "}".repeat(40)
    );
    refused_fast(suite, &deep, "QUERY_TOO_DEEP", fast, "40 levels of fields").await;
    let braces = format!(
        "{{ {} __typename {} }}",
        "...on Query { ".repeat(200),
        "}".repeat(200)
    );
    refused_fast(
        suite,
        &braces,
        "QUERY_TOO_DEEP",
        fast,
        "200 nested inline fragments",
    )
    .await;
    let chain: String = (0..3_000)
        .map(|i| format!("fragment F{i} on Group {{ id ...F{} }}\n", i + 1))
        .collect();
    let chain =
        format!("{{ root(type: DEVICE) {{ ...F0 }} }}\n{chain}fragment F3000 on Group {{ id }}");
    refused_fast(
        suite,
        &chain,
        "QUERY_TOO_LARGE",
        fast,
        "a chain of 3,000 fragments",
    )
    .await;
    refused_fast(
        suite,
        "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
        "GRAPHQL_VALIDATION_FAILED",
        fast,
        "a fragment cycle",
    )
    .await;
    refused_fast(
        suite,
        "{ group(",
        "GRAPHQL_PARSE_FAILED",
        fast,
        "a parse error",
    )
    .await;
    refused_fast(
        suite,
        "{ nope }",
        "GRAPHQL_VALIDATION_FAILED",
        fast,
        "an unknown field",
    )
    .await;
    refused_fast(
        suite,
        "query A { __typename } query B { __typename }",
        "BAD_REQUEST",
        fast,
        "two operations and no name",
    )
    .await;
    let wide = "{ groups(type: DEVICE, first: 1000) { edges { node { children(first: 1000) { edges { node { id } } } } } } }";
    refused_fast(suite, wide, "QUERY_TOO_COMPLEX", fast, "a million nodes").await;

    assert_eq!(
        suite.fingerprint().await,
        before,
        "a refused query changed nothing"
    );
    filters(suite).await;
}

/// Rule filters: charged by their compiled cost, run within the request's budget.
async fn filters(suite: &Suite) {
    super::support::set_phase("filters: inventory");
    // 2,000 devices with long host names for the filters to scan.
    for batch in 0..2 {
        let devices: Vec<serde_json::Value> = (0..1_000)
            .map(|i| {
                json!({ "id": format!("d{batch}-{i}"), "hostname": format!("{}{i}", "a".repeat(60)) })
            })
            .collect();
        let r = suite
            .gql(
                &suite.served.operator,
                "mutation($i: UpsertDevicesInput!) { upsertDevices(input: $i) { upserted userErrors { code } } }",
                json!({ "i": { "devices": devices } }),
            )
            .await;
        assert_eq!(
            r.json()["data"]["upsertDevices"]["upserted"],
            1000,
            "{}",
            r.text()
        );
    }
    let before = suite.fingerprint().await;
    super::support::set_phase("filters: regexes");
    let regex = |i: usize| format!(r#"hostname~"^(a|aa|aaa)*(a|aa)*b{i}$""#);
    let ored: Vec<String> = (0..64).map(regex).collect();
    let r = suite
        .gql(
            &suite.served.viewer,
            "query($f: String) { devices(filter: $f, first: 1) { totalCount } }",
            json!({ "f": ored.join(" OR ") }),
        )
        .await;
    assert_code(&r, 200, "QUERY_TOO_COMPLEX", "64 ORed regexes");

    // As many single-regex filters as the complexity allows, each with its count: they run
    // one after another within the request's budget, never past it.
    let aliases: String = (0..8)
        .map(|i| {
            format!(
                "a{i}: devices(filter: {}, first: 1) {{ totalCount }} ",
                serde_json::to_string(&regex(i)).expect("json")
            )
        })
        .collect();
    let started = Instant::now();
    let r = suite
        .gql(&suite.served.viewer, &format!("{{ {aliases} }}"), json!({}))
        .await;
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    let got = codes(&r.json());
    assert!(
        got.iter()
            .all(|c| c == "REQUEST_BUDGET_EXCEEDED" || c == "QUERY_TIMEOUT"),
        "{}",
        r.text()
    );
    assert!(
        took < Duration::from_millis(BUDGET_MS + 2_000),
        "eight filters took {took:?}, over the {BUDGET_MS} ms budget"
    );
    // Many aliases of the most expensive filter the complexity admits are refused outright.
    let heavy: Vec<String> = (0..10).map(regex).collect();
    let heavy = serde_json::to_string(&heavy.join(" OR ")).expect("json");
    let many: String = (0..24)
        .map(|i| format!("a{i}: devices(filter: {heavy}, first: 1) {{ totalCount }} "))
        .collect();
    let r = suite
        .gql(&suite.served.viewer, &format!("{{ {many} }}"), json!({}))
        .await;
    assert_code(
        &r,
        200,
        "QUERY_TOO_COMPLEX",
        "24 aliases of a 10-regex filter",
    );
    assert_eq!(suite.fingerprint().await, before);
}
