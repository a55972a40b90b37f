//! The GraphQL IDE: GraphiQL served by Corral itself, so that it works on a network without
//! Internet access and no third party is trusted with the tokens pasted into it.
//!
//! `GET /graphql` answers a page whose scripts and styles all come from `/graphql/ide/`: the
//! vendored GraphiQL and React builds (`api/assets/graphiql/README.md` says which and how to
//! re-fetch them) and the page's own `boot.js` and `page.css` (`api/assets/ide/`). Each file is
//! named by a hash of its bytes, so it may be cached for a year, and pinned in the page with an
//! `integrity` attribute. The page carries a strict Content-Security-Policy: no inline script at
//! all, and inline styles only with a per-response nonce. `CORRAL_GRAPHIQL=false` turns it off.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha384};

/// The setting that turns the IDE off.
pub const SETTING: &str = "CORRAL_GRAPHIQL";

/// Where the IDE's files are served.
const ASSET_PREFIX: &str = "/graphql/ide/";

/// How the page uses a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Stylesheet,
    Script,
    /// The script that starts GraphiQL; it hands the style nonce on to GraphiQL.
    Boot,
}

/// A file of the IDE as embedded in the binary.
struct Source {
    name: &'static str,
    role: Role,
    bytes: &'static [u8],
}

/// The IDE's files, in the order the page loads them.
const SOURCES: [Source; 6] = [
    Source {
        name: "graphiql.min.css",
        role: Role::Stylesheet,
        bytes: include_bytes!("../assets/graphiql/graphiql-4.1.2/graphiql.min.css"),
    },
    Source {
        name: "page.css",
        role: Role::Stylesheet,
        bytes: include_bytes!("../assets/ide/page.css"),
    },
    Source {
        name: "react.production.min.js",
        role: Role::Script,
        bytes: include_bytes!("../assets/graphiql/react-18.3.1/react.production.min.js"),
    },
    Source {
        name: "react-dom.production.min.js",
        role: Role::Script,
        bytes: include_bytes!("../assets/graphiql/react-dom-18.3.1/react-dom.production.min.js"),
    },
    Source {
        name: "graphiql.min.js",
        role: Role::Script,
        bytes: include_bytes!("../assets/graphiql/graphiql-4.1.2/graphiql.min.js"),
    },
    Source {
        name: "boot.js",
        role: Role::Boot,
        bytes: include_bytes!("../assets/ide/boot.js"),
    },
];

/// A file as served: under a name that changes with its bytes, with its subresource integrity.
struct Asset {
    /// `<stem>.<first 16 hex digits of its SHA-384>.<extension>`.
    file: String,
    /// `sha384-<base64>`.
    integrity: String,
    content_type: &'static str,
    role: Role,
    bytes: &'static [u8],
}

impl Asset {
    fn new(source: &Source) -> Self {
        let digest = Sha384::digest(source.bytes);
        let (stem, extension) = source.name.rsplit_once('.').unwrap_or((source.name, ""));
        let content_type = match source.role {
            Role::Stylesheet => "text/css; charset=utf-8",
            Role::Script | Role::Boot => "text/javascript; charset=utf-8",
        };
        Self {
            file: format!("{stem}.{}.{extension}", hex::encode(&digest[..8])),
            integrity: format!("sha384-{}", BASE64.encode(digest)),
            content_type,
            role: source.role,
            bytes: source.bytes,
        }
    }
}

/// Hashed once, on first use.
static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| SOURCES.iter().map(Asset::new).collect());

/// `GET /graphql` (the page) and `GET /graphql/ide/{file}` (its files); when `enabled` is false
/// both answer 404. Merged into the main router beside `POST /graphql`.
pub fn router<S: Clone + Send + Sync + 'static>(enabled: bool) -> Router<S> {
    let routes = Router::new();
    if enabled {
        routes
            .route("/graphql", get(page))
            .route("/graphql/ide/{file}", get(asset))
    } else {
        routes
            .route("/graphql", get(turned_off))
            .route("/graphql/ide/{file}", get(turned_off))
    }
}

/// Reads the value of `CORRAL_GRAPHIQL`: `true`/`1`/`on` or `false`/`0`/`off`.
pub fn parse_setting(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" => Ok(true),
        "false" | "0" | "off" => Ok(false),
        _ => Err(format!(
            "{SETTING} must be true or false (or 1/0, on/off), got {value:?}"
        )),
    }
}

async fn page(headers: HeaderMap) -> Response {
    let nonce = BASE64.encode(rand::random::<[u8; 16]>());
    let policy = content_security_policy(&nonce, websocket_host(&headers));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            // Every response has its own nonce.
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::X_FRAME_OPTIONS, "DENY".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
        ],
        page_html(&nonce),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.file == file) else {
        return not_found("no such file in the GraphQL IDE");
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.bytes,
    )
        .into_response()
}

async fn turned_off() -> Response {
    not_found(&format!(
        "the GraphQL IDE is turned off on this server ({SETTING}=false)"
    ))
}

fn not_found(message: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": "NOT_FOUND" } }] })),
    )
        .into_response()
}

/// Only same-origin files, inline styles only with `nonce`, no eval, no framing. Browsers before
/// CSP Level 3 do not count `ws:` to the page's own host as `'self'`, hence the explicit
/// websocket sources when the request names its host.
fn content_security_policy(nonce: &str, websocket_host: Option<&str>) -> String {
    let websocket = websocket_host
        .map(|host| format!(" ws://{host} wss://{host}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; \
         connect-src 'self'{websocket}; img-src 'self' data:; font-src 'self' data:; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
}

/// The request's `Host`, if it is a plain `host[:port]` that cannot add anything to the policy.
fn websocket_host(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plain = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    plain.then_some(host)
}

fn page_html(nonce: &str) -> String {
    let mut styles = String::new();
    let mut scripts = String::new();
    for asset in ASSETS.iter() {
        let url = format!("{ASSET_PREFIX}{}", asset.file);
        let integrity = &asset.integrity;
        match asset.role {
            Role::Stylesheet => styles.push_str(&format!(
                "    <link rel=\"stylesheet\" href=\"{url}\" integrity=\"{integrity}\">\n"
            )),
            Role::Script => scripts.push_str(&format!(
                "    <script src=\"{url}\" integrity=\"{integrity}\"></script>\n"
            )),
            Role::Boot => scripts.push_str(&format!(
                "    <script src=\"{url}\" integrity=\"{integrity}\" nonce=\"{nonce}\"></script>\n"
            )),
        }
    }
    format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         \x20 <head>\n\
         \x20   <meta charset=\"utf-8\">\n\
         \x20   <meta name=\"robots\" content=\"noindex\">\n\
         \x20   <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         \x20   <title>Corral GraphQL IDE</title>\n\
         \x20   <link rel=\"icon\" href=\"data:,\">\n\
         {styles}\
         \x20 </head>\n\
         \x20 <body>\n\
         \x20   <div id=\"graphiql\">Loading the GraphQL IDE…</div>\n\
         \x20   <noscript>The GraphQL IDE needs JavaScript.</noscript>\n\
         {scripts}\
         \x20 </body>\n\
         </html>\n"
    )
}

#[cfg(test)]
mod tests;
