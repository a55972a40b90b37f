//! Bodies that are not GraphQL requests: malformed, oversized, nested, batched, mistyped.

use serde_json::json;

use super::support::{assert_code, codes, user_error, Suite};

pub async fn run(suite: &Suite) {
    let before = suite.fingerprint().await;
    let json = "application/json";

    super::support::set_phase("malformed JSON");
    let r = suite.post_body(b"{ key: 1 }", json).await;
    assert_code(&r, 400, "BAD_REQUEST", "malformed JSON");
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .expect("message")
        .starts_with("the request body is not JSON"));

    let r = suite
        .post_body(b"\xff\xfe{\"query\":\"{ __typename }\"}", json)
        .await;
    assert_code(&r, 400, "BAD_REQUEST", "invalid UTF-8 before the JSON");
    let r = suite
        .post_body(
            b"{\"query\":\"{ groups(type: DEVICE, search: \\\"\xc3\x28\\\") { totalCount } }\"}",
            json,
        )
        .await;
    assert_code(&r, 400, "BAD_REQUEST", "invalid UTF-8 inside a string");

    let batch = json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]).to_string();
    let r = suite.post_body(batch.as_bytes(), json).await;
    assert_code(&r, 400, "BATCH_NOT_SUPPORTED", "a batch");

    for (body, what) in [
        (
            json!({ "query": 1 }).to_string(),
            "a query that is not a string",
        ),
        (json!({ "variables": {} }).to_string(), "no query"),
        (json!("{ __typename }").to_string(), "a JSON string"),
        (
            json!({ "query": "{ __typename }", "variables": [1] }).to_string(),
            "variables that are not an object",
        ),
        (
            json!({ "query": "{ __typename }", "operationName": 5 }).to_string(),
            "an operation name that is not a string",
        ),
    ] {
        let r = suite.post_body(body.as_bytes(), json).await;
        assert_code(&r, 400, "BAD_REQUEST", what);
    }

    let r = suite
        .post_body(b"query { __typename }", "application/graphql")
        .await;
    assert_code(&r, 415, "UNSUPPORTED_MEDIA_TYPE", "a GraphQL document body");
    let r = suite
        .post_body(
            b"query=%7B__typename%7D",
            "application/x-www-form-urlencoded",
        )
        .await;
    assert_code(
        &r,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "a form (cross-site post)",
    );

    super::support::set_phase("deep JSON");
    // JSON nested far deeper than any request needs: refused by the parser's depth limit.
    let deep = format!(
        "{{\"query\":\"{{ __typename }}\",\"variables\":{{\"x\":{}1{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = suite.post_body(deep.as_bytes(), json).await;
    assert_code(&r, 400, "BAD_REQUEST", "JSON nested 100,000 deep");

    super::support::set_phase("9 MiB body");
    let big = format!(
        "{{\"query\":\"{{ __typename }}\",\"variables\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(9 * 1024 * 1024)
    );
    let r = suite.post_body(big.as_bytes(), json).await;
    assert_code(&r, 413, "PAYLOAD_TOO_LARGE", "a 9 MiB body");

    super::support::set_phase("7 MiB variable");
    // Huge variables under the body limit: a 7 MiB string is refused before anything looks at
    // it; a 200 KB group name reaches the aggregate, which refuses it.
    let r = suite
        .gql(
            &suite.served.admin,
            "mutation($i: CreateGroupInput!) { createGroup(input: $i) { group { id } userErrors { field code } } }",
            json!({ "i": { "name": "n".repeat(7 * 1024 * 1024), "type": "DEVICE" } }),
        )
        .await;
    assert_code(&r, 200, "BAD_USER_INPUT", "a 7 MiB string");
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .expect("message")
        .contains("$i.name"));
    let r = suite
        .gql(
            &suite.served.admin,
            "mutation($i: CreateGroupInput!) { createGroup(input: $i) { group { id } userErrors { field code } } }",
            json!({ "i": { "name": "n".repeat(200 * 1024), "type": "DEVICE" } }),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(user_error(&r.json(), "createGroup"), "INVALID");
    super::support::set_phase("200k variables");
    // 200,000 small variables nobody uses.
    let many: serde_json::Map<String, serde_json::Value> =
        (0..200_000).map(|i| (format!("v{i}"), json!(i))).collect();
    let r = suite
        .gql(
            &suite.served.viewer,
            "{ __typename }",
            serde_json::Value::Object(many),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(codes(&r.json()).is_empty(), "unused variables are ignored");

    super::support::set_phase("auth");
    // Paths and methods the API does not have: coded too.
    let r = suite
        .raw(&corral_tests::served::request("GET", "/nope", &[], b""))
        .await
        .expect("answer");
    assert_code(&r, 404, "NOT_FOUND", "an unknown path");
    let r = suite
        .raw(&corral_tests::served::request(
            "DELETE",
            "/graphql",
            &[],
            b"",
        ))
        .await
        .expect("answer");
    assert_code(&r, 405, "BAD_REQUEST", "an unknown method");

    // No token, a made-up token, another scheme: 401 with a code and a challenge.
    for auth in [None, Some("Bearer crl_0000"), Some("Basic YWxpY2U6eA==")] {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let r = suite
            .raw(&corral_tests::served::request(
                "POST",
                "/graphql",
                &headers,
                br#"{"query":"mutation { createGroup(input: {name: \"x\", type: DEVICE}) { group { id } } }"}"#,
            ))
            .await
            .expect("answer");
        assert_code(&r, 401, "UNAUTHENTICATED", "no valid token");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // A viewer's mutation: FORBIDDEN.
    let r = suite
        .gql(
            &suite.served.viewer,
            "mutation { createGroup(input: {name: \"x\", type: DEVICE}) { group { id } } }",
            json!({}),
        )
        .await;
    assert_code(&r, 200, "FORBIDDEN", "a viewer's mutation");

    assert_eq!(
        suite.fingerprint().await,
        before,
        "a refused body changed nothing"
    );
}
