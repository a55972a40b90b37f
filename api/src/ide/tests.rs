use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256, Sha384};
use tower::ServiceExt;

use super::{parse_setting, router, ASSETS, ASSET_PREFIX, SOURCES};

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("a UTF-8 body")
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .expect("a text header")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

async fn send(router: &Router, method: Method, uri: &str, host: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(host) = host {
        request = request.header(header::HOST, host);
    }
    let request = request.body(Body::empty()).expect("a request");
    let response = router.clone().oneshot(request).await.expect("a response");
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("the body");
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.to_vec(),
    }
}

async fn get(router: &Router, uri: &str) -> Answer {
    send(router, Method::GET, uri, Some("corral.example:8080")).await
}

/// The opening tags `<tag ...>` in `html`.
fn tags<'a>(html: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    html.match_indices(&open)
        .map(|(at, _)| {
            let rest = &html[at..];
            &rest[..=rest.find('>').expect("a closed tag")]
        })
        .collect()
}

fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let length = tag[start..].find('"')?;
    Some(&tag[start..start + length])
}

/// `(url, integrity, expected content type)` of every script and stylesheet the page loads.
fn files_named_by(html: &str) -> Vec<(String, String, &'static str)> {
    let scripts = tags(html, "script").into_iter().map(|tag| {
        (
            attribute(tag, "src").expect("a script with src"),
            attribute(tag, "integrity"),
            "text/javascript",
        )
    });
    let styles = tags(html, "link")
        .into_iter()
        .filter(|tag| attribute(tag, "rel") == Some("stylesheet"))
        .map(|tag| {
            (
                attribute(tag, "href").expect("a stylesheet with href"),
                attribute(tag, "integrity"),
                "text/css",
            )
        });
    scripts
        .chain(styles)
        .map(|(url, integrity, content_type)| {
            let integrity = integrity.unwrap_or_else(|| panic!("{url} has no integrity"));
            (url.to_string(), integrity.to_string(), content_type)
        })
        .collect()
}

/// The page's policy as `(directive, sources)`.
fn directives(policy: &str) -> Vec<(String, Vec<String>)> {
    policy
        .split(';')
        .map(|directive| {
            let mut words = directive.split_whitespace().map(str::to_string);
            let name = words.next().expect("a directive name");
            (name, words.collect())
        })
        .collect()
}

fn sources<'a>(directives: &'a [(String, Vec<String>)], name: &str) -> &'a [String] {
    &directives
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in the policy"))
        .1
}

fn turned_off_body() -> serde_json::Value {
    serde_json::json!({ "errors": [{
        "message": "the GraphQL IDE is turned off on this server (CORRAL_GRAPHIQL=false)",
        "extensions": { "code": "NOT_FOUND" }
    }] })
}

#[tokio::test]
async fn the_page_loads_only_files_of_this_server_and_runs_no_inline_code() {
    let page = get(&router(true), "/graphql").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header(header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    let html = page.text();
    assert!(
        !html.contains("http:") && !html.contains("https:"),
        "{html}"
    );
    // Every URL the page names, in any element: same-origin paths, or the empty icon.
    for attribute in [" src=\"", " href=\""] {
        for (at, _) in html.match_indices(attribute) {
            let url = &html[at + attribute.len()..];
            let url = &url[..url.find('"').expect("a closed attribute")];
            let own = url.starts_with(ASSET_PREFIX) || url == "data:,";
            assert!(own, "{url} is not a file of the IDE");
        }
    }
    assert!(!html.contains("<style") && !html.contains(" style="));
    let handler = html.match_indices(" on").any(|(at, _)| {
        let name = html[at + 1..]
            .split(|c: char| !c.is_ascii_alphabetic())
            .next();
        html[at + 1 + name.map_or(0, str::len)..].starts_with('=')
    });
    assert!(!handler, "an inline event handler in:\n{html}");
    for (at, _) in html.match_indices("<script") {
        let after = &html[at..];
        let body = &after[after.find('>').expect("a closed tag") + 1..];
        assert!(
            body.starts_with("</script>"),
            "an inline script in:\n{html}"
        );
    }
    let files = files_named_by(&html);
    let named = |part: &str| files.iter().any(|(url, _, _)| url.contains(part));
    assert!(named("/react.production.min.") && named("/react-dom.production.min."));
    assert!(named("/graphiql.min.") && named("/boot."));
    assert_eq!(files.len(), SOURCES.len());
}

#[tokio::test]
async fn every_file_the_page_names_is_served_with_its_type_for_a_year_and_matches_its_integrity() {
    let ide = router(true);
    let html = get(&ide, "/graphql").await.text();
    for (url, integrity, content_type) in files_named_by(&html) {
        let file = get(&ide, &url).await;
        assert_eq!(file.status, StatusCode::OK, "{url}");
        assert_eq!(
            file.header(header::CONTENT_TYPE),
            format!("{content_type}; charset=utf-8"),
            "{url}"
        );
        assert_eq!(
            file.header(header::CACHE_CONTROL),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(file.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        let digest = BASE64.encode(Sha384::digest(&file.body));
        assert_eq!(integrity, format!("sha384-{digest}"), "{url}");
        assert!(!file.body.is_empty());
    }
}

#[tokio::test]
async fn the_page_allows_only_its_own_origin_and_its_nonce_and_may_not_be_framed() {
    let page = get(&router(true), "/graphql").await;
    let policy = page.header(header::CONTENT_SECURITY_POLICY).to_string();
    let directives = directives(&policy);
    assert_eq!(sources(&directives, "default-src"), ["'none'"]);
    assert_eq!(sources(&directives, "script-src"), ["'self'"]);
    assert_eq!(sources(&directives, "frame-ancestors"), ["'none'"]);
    assert_eq!(sources(&directives, "base-uri"), ["'none'"]);
    assert_eq!(sources(&directives, "form-action"), ["'none'"]);
    assert_eq!(
        sources(&directives, "connect-src"),
        [
            "'self'",
            "ws://corral.example:8080",
            "wss://corral.example:8080"
        ]
    );
    for (name, list) in &directives {
        for source in list {
            let allowed = matches!(source.as_str(), "'self'" | "'none'" | "data:")
                || source.starts_with("'nonce-")
                || (name == "connect-src" && source.ends_with("://corral.example:8080"));
            assert!(allowed, "{name} allows {source}: {policy}");
        }
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    let nonce = tags(&page.text(), "script")
        .into_iter()
        .find_map(|tag| attribute(tag, "nonce"))
        .expect("the boot script carries the nonce")
        .to_string();
    assert_eq!(
        sources(&directives, "style-src"),
        ["'self'".to_string(), format!("'nonce-{nonce}'")]
    );
    assert_eq!(page.header(header::X_FRAME_OPTIONS), "DENY");
    assert_eq!(page.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(page.header(header::REFERRER_POLICY), "no-referrer");
    assert_eq!(page.header(header::CACHE_CONTROL), "no-store");
}

#[tokio::test]
async fn each_page_gets_a_nonce_of_its_own() {
    let ide = router(true);
    let first = get(&ide, "/graphql").await;
    let second = get(&ide, "/graphql").await;
    assert_ne!(
        first.header(header::CONTENT_SECURITY_POLICY),
        second.header(header::CONTENT_SECURITY_POLICY)
    );
}

#[tokio::test]
async fn a_host_header_that_would_add_to_the_policy_is_left_out_of_it() {
    let ide = router(true);
    for host in ["evil.example; script-src *", "evil.example 'unsafe-eval'"] {
        let page = send(&ide, Method::GET, "/graphql", Some(host)).await;
        let policy = page.header(header::CONTENT_SECURITY_POLICY);
        assert!(
            !policy.contains("evil") && !policy.contains('*'),
            "{policy}"
        );
        assert_eq!(sources(&directives(policy), "connect-src"), ["'self'"]);
    }
    let page = send(&ide, Method::GET, "/graphql", None).await;
    let policy = page.header(header::CONTENT_SECURITY_POLICY);
    assert_eq!(sources(&directives(policy), "connect-src"), ["'self'"]);
}

#[tokio::test]
async fn a_file_name_without_the_current_hash_is_not_found() {
    let answer = get(&router(true), "/graphql/ide/graphiql.min.js").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.json()["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn beside_post_graphql_the_page_and_the_endpoint_share_the_path() {
    let app = Router::new()
        .route("/graphql", post(|| async { "executed" }))
        .merge(router(true));
    assert_eq!(get(&app, "/graphql").await.status, StatusCode::OK);
    let posted = send(&app, Method::POST, "/graphql", None).await;
    assert_eq!(posted.text(), "executed");
}

#[tokio::test]
async fn turned_off_the_page_and_its_files_are_not_found_and_post_graphql_still_answers() {
    let app = Router::new()
        .route("/graphql", post(|| async { "executed" }))
        .merge(router(false));
    let asset = format!("{ASSET_PREFIX}{}", ASSETS[0].file);
    for uri in ["/graphql", asset.as_str()] {
        let answer = get(&app, uri).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(answer.json(), turned_off_body(), "{uri}");
    }
    let posted = send(&app, Method::POST, "/graphql", None).await;
    assert_eq!(posted.status, StatusCode::OK);
    assert_eq!(posted.text(), "executed");
}

#[test]
fn the_setting_reads_true_false_1_0_on_off_and_a_bad_value_names_the_variable() {
    for on in ["true", "1", "on", "TRUE", " On "] {
        assert_eq!(parse_setting(on), Ok(true), "{on}");
    }
    for off in ["false", "0", "off", "False", "OFF"] {
        assert_eq!(parse_setting(off), Ok(false), "{off}");
    }
    for bad in ["", "yes please", "2"] {
        let error = parse_setting(bad).expect_err(bad);
        assert!(error.starts_with("CORRAL_GRAPHIQL must be"), "{error}");
    }
}

#[test]
fn the_embedded_vendored_files_are_the_ones_pinned_in_sha256sums() {
    let pinned = include_str!("../../assets/graphiql/SHA256SUMS");
    let mut vendored = Vec::new();
    for line in pinned.lines() {
        let (hash, path) = line.split_once("  ").expect("`<sha256>  <path>`");
        let name = path.rsplit('/').next().expect("a file name");
        let source = SOURCES
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{path} is pinned but not served"));
        assert_eq!(hex::encode(Sha256::digest(source.bytes)), hash, "{path}");
        vendored.push(name);
    }
    let own: Vec<_> = SOURCES
        .iter()
        .map(|s| s.name)
        .filter(|name| !vendored.contains(name))
        .collect();
    assert_eq!(
        own,
        ["page.css", "boot.js"],
        "every third-party file is pinned"
    );
}
