//! Every `extensions.code` Corral answers with, declared once. `docs/errors.md` is generated
//! from this list (`corral docs errors --write`; a test fails on drift), and every error that
//! leaves the server carries one of these codes (the query guard gives one to errors that
//! async-graphql raises without).
//!
//! Expected failures of a mutation are `userErrors` in its payload, with codes of their own
//! (`NAME_TAKEN`, `VERSION_CONFLICT`, ...); the codes here are those of GraphQL errors and of
//! the HTTP answers that carry no GraphQL response.

/// A top-level error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No bearer token, or one that is unknown, revoked or expired (HTTP 401).
    Unauthenticated,
    /// The caller's role may not do this.
    Forbidden,
    /// An argument or variable is invalid.
    BadUserInput,
    /// The request is not a GraphQL request Corral accepts (malformed JSON, missing
    /// `query`, an unknown operation name, a bad query string of an HTTP export).
    BadRequest,
    /// A batch (a JSON array of operations) was sent.
    BatchNotSupported,
    /// The body is not `application/json` (HTTP 415).
    UnsupportedMediaType,
    /// The request body is larger than `CORRAL_MAX_BODY_BYTES` (HTTP 413).
    PayloadTooLarge,
    /// The request's body did not arrive within `CORRAL_REQUEST_READ_TIMEOUT_MS` (HTTP 408).
    RequestTimeout,
    /// The query text does not parse.
    GraphqlParseFailed,
    /// The query parses but does not validate against the schema.
    GraphqlValidationFailed,
    /// The query text, or the query with its fragments expanded, is larger than Corral
    /// accepts.
    QueryTooLarge,
    /// The query nests deeper than Corral accepts.
    QueryTooDeep,
    /// The query's complexity (connections count `first` times their fields; rule filters
    /// count their compiled cost) is over the limit.
    QueryTooComplex,
    /// A statement took longer than `CORRAL_STATEMENT_TIMEOUT_MS` and was cancelled.
    QueryTimeout,
    /// The request used up its database time (`CORRAL_REQUEST_DB_BUDGET_MS`).
    RequestBudgetExceeded,
    /// The thing asked for does not exist.
    NotFound,
    /// A cursor's walk can no longer be answered as of its first page: the set it pages
    /// changed since (restart the walk, or page with `atPosition`).
    CursorStale,
    /// A rule filter does not parse or type-check (`extensions.column` points at it).
    RuleInvalid,
    /// Health was asked from rollups where none exist for the window.
    NoRollups,
    /// A subscription would watch more than one subscription may.
    TooLarge,
    /// A websocket connection holds the most subscriptions it may.
    TooManySubscriptions,
    /// A mutation operation names more root fields than `CORRAL_MAX_MUTATIONS_PER_REQUEST`.
    TooManyMutations,
    /// The subject sent more requests than its rate limit allows (HTTP 429).
    RateLimited,
    /// The server holds as many connections of this kind as it accepts (HTTP 503).
    TooManyConnections,
    /// The server cannot answer now (the database is unreachable; HTTP 503).
    ServiceUnavailable,
    /// Something failed inside Corral; the details are in its log, not in the answer.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order `docs/errors.md` lists them.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::BadUserInput,
        ErrorCode::BadRequest,
        ErrorCode::BatchNotSupported,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::GraphqlParseFailed,
        ErrorCode::GraphqlValidationFailed,
        ErrorCode::QueryTooLarge,
        ErrorCode::QueryTooDeep,
        ErrorCode::QueryTooComplex,
        ErrorCode::QueryTimeout,
        ErrorCode::RequestBudgetExceeded,
        ErrorCode::NotFound,
        ErrorCode::CursorStale,
        ErrorCode::RuleInvalid,
        ErrorCode::NoRollups,
        ErrorCode::TooLarge,
        ErrorCode::TooManySubscriptions,
        ErrorCode::TooManyMutations,
        ErrorCode::RateLimited,
        ErrorCode::TooManyConnections,
        ErrorCode::ServiceUnavailable,
        ErrorCode::Internal,
    ];

    /// The code as it appears in `extensions.code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::BadUserInput => "BAD_USER_INPUT",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::BatchNotSupported => "BATCH_NOT_SUPPORTED",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            ErrorCode::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            ErrorCode::QueryTooLarge => "QUERY_TOO_LARGE",
            ErrorCode::QueryTooDeep => "QUERY_TOO_DEEP",
            ErrorCode::QueryTooComplex => "QUERY_TOO_COMPLEX",
            ErrorCode::QueryTimeout => "QUERY_TIMEOUT",
            ErrorCode::RequestBudgetExceeded => "REQUEST_BUDGET_EXCEEDED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::CursorStale => "CURSOR_STALE",
            ErrorCode::RuleInvalid => "RULE_INVALID",
            ErrorCode::NoRollups => "NO_ROLLUPS",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            ErrorCode::TooManyMutations => "TOO_MANY_MUTATIONS",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::TooManyConnections => "TOO_MANY_CONNECTIONS",
            ErrorCode::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// The HTTP status of an answer that carries only this error, with no GraphQL response
    /// (in a GraphQL response every error comes with 200).
    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::BadRequest | ErrorCode::BatchNotSupported => 400,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::RateLimited => 429,
            ErrorCode::TooManyConnections | ErrorCode::ServiceUnavailable => 503,
            _ => 200,
        }
    }

    /// What it means, for `docs/errors.md`.
    pub const fn meaning(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "No bearer token, or one that is unknown or revoked. HTTP 401, with `WWW-Authenticate: Bearer`.",
            ErrorCode::Forbidden => "The caller's role may not use this field (casbin policy; deny by default), or a websocket upgrade came from another site's page. HTTP 403 outside a GraphQL response.",
            ErrorCode::BadUserInput => "An argument or variable is invalid: the message names it (`$input.description`, `createGroup(input.name)`). A NUL character in any string is always this.",
            ErrorCode::BadRequest => "Not a GraphQL request Corral accepts: malformed JSON, no `query`, an unknown or missing operation name, or a bad query string of `GET /audit/export`. HTTP 400 when no GraphQL response could be made.",
            ErrorCode::BatchNotSupported => "A JSON array of operations was sent; send one operation per request. HTTP 400.",
            ErrorCode::UnsupportedMediaType => "`POST /graphql` takes `application/json` only. HTTP 415.",
            ErrorCode::PayloadTooLarge => "The body is larger than `CORRAL_MAX_BODY_BYTES`. HTTP 413.",
            ErrorCode::RequestTimeout => "The request's body did not arrive within `CORRAL_REQUEST_READ_TIMEOUT_MS`. HTTP 408. (Headers that do not arrive in time close the connection without an answer.)",
            ErrorCode::GraphqlParseFailed => "The query text is not GraphQL; `locations` points at the problem.",
            ErrorCode::GraphqlValidationFailed => "The query does not fit the schema (an unknown field, a missing argument, a fragment cycle...).",
            ErrorCode::QueryTooLarge => "The query text is over `CORRAL_MAX_QUERY_BYTES`, or it names more than `CORRAL_MAX_QUERY_FIELDS` fields once its fragments are expanded (each spread counts the fragment again). Refused before validation, in time proportional to the query's length.",
            ErrorCode::QueryTooDeep => "The query nests deeper than 16 levels of fields (or 32 levels of selections).",
            ErrorCode::QueryTooComplex => "The query's complexity is over 20,000: each connection counts `first` times its fields, and each rule filter its compiled cost (`docs/security.md`).",
            ErrorCode::QueryTimeout => "A database statement ran longer than `CORRAL_STATEMENT_TIMEOUT_MS` and was cancelled; ask for less (a narrower filter, a smaller page).",
            ErrorCode::RequestBudgetExceeded => "The request used up `CORRAL_REQUEST_DB_BUDGET_MS` of database time; the fields left were not run.",
            ErrorCode::NotFound => "The thing asked for does not exist (or is not the caller's to see). HTTP 404 outside a GraphQL response (the IDE turned off).",
            ErrorCode::CursorStale => "An `after`/`before` cursor of a walk that began at a log position (`group.members`, `groups`) was sent after the set it pages changed: its later pages can no longer be answered as of the first page's state. `extensions.position` is the position the first page reflected (when known). Restart the walk from the first page, or, for `group.members`, page with `group(atPosition: …)` for a consistent historical view.",
            ErrorCode::RuleInvalid => "A rule filter does not parse or type-check; `extensions.column` points at it.",
            ErrorCode::NoRollups => "`group.health(source: ROLLUP)` for a window without rollups.",
            ErrorCode::TooLarge => "A `membershipChanges` subscription would watch more entries than one subscription may.",
            ErrorCode::TooManySubscriptions => "The websocket connection holds 16 subscriptions already.",
            ErrorCode::TooManyMutations => "A mutation operation names more root fields (aliases and fragments counted) than `CORRAL_MAX_MUTATIONS_PER_REQUEST`; refused before any of them runs. Send the rest in another request.",
            ErrorCode::RateLimited => "The caller (its subject) sent more requests than `CORRAL_RATE_LIMIT_PER_SUBJECT` per second allows beyond a burst of `CORRAL_RATE_LIMIT_BURST`. HTTP 429 with `Retry-After` (seconds); over a websocket, a GraphQL error on that operation and the connection stays open.",
            ErrorCode::TooManyConnections => "The server holds as many connections of this kind as it accepts. HTTP 503.",
            ErrorCode::ServiceUnavailable => "The database cannot be reached now. HTTP 503.",
            ErrorCode::Internal => "Something failed inside Corral. The answer carries no details; the server logs the error once.",
        }
    }

    /// The code named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The generated section of `docs/errors.md`: the codes of errors, then those of userErrors.
pub fn markdown() -> String {
    let mut out = String::from("### Errors (`errors[].extensions.code`)\n\n");
    out.push_str("| Code | HTTP status alone | Meaning |\n|---|---|---|\n");
    for code in ErrorCode::ALL {
        let status = match code.http_status() {
            200 => "only in GraphQL responses".to_string(),
            s => s.to_string(),
        };
        out.push_str(&format!(
            "| `{}` | {status} | {} |\n",
            code.as_str(),
            code.meaning()
        ));
    }
    out.push_str(
        "\n### userErrors (`userErrors[].code`, the GraphQL enum `UserErrorCode`)\n\n\
         | Code | Meaning |\n|---|---|\n",
    );
    for code in corral_domain::codes::Code::ALL {
        out.push_str(&format!("| `{}` | {} |\n", code.as_str(), code.meaning()));
    }
    out
}

/// The JSON body of an HTTP answer that carries one error and no GraphQL response.
pub fn http_body(code: ErrorCode, message: &str) -> serde_json::Value {
    serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code.as_str() } }] })
}

/// `doc` with its generated section replaced by [`markdown`] (`None`: the markers are
/// missing).
pub fn regenerate(doc: &str) -> Option<String> {
    let start = doc.find(BEGIN)? + BEGIN.len();
    let end = doc.find(END)?;
    (start <= end).then(|| format!("{}{}{}", &doc[..start], markdown(), &doc[end..]))
}

/// Where the generated section of `docs/errors.md` begins and ends.
const BEGIN: &str = "<!-- BEGIN GENERATED: corral docs errors -->\n";
const END: &str = "<!-- END GENERATED -->";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once_and_parses_back() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_'),
                "{code}"
            );
        }
    }

    /// CI fails when docs/errors.md drifts from the code. Regenerate with
    /// `cargo run -p corral --bin corral -- docs errors --write`.
    #[test]
    fn committed_error_codes_match_the_code() {
        let doc = include_str!("../../docs/errors.md");
        let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
        let end = doc.find(END).expect("end marker");
        assert!(
            doc[start..end] == markdown(),
            "docs/errors.md is stale: run `cargo run -p corral --bin corral -- docs errors --write`"
        );
    }

    /// No source file of the API answers a code that is not in the registry.
    #[test]
    fn the_api_answers_only_registered_codes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![root];
        let mut unknown = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("read");
                for (i, line) in text.lines().enumerate() {
                    if let Some(at) = line.find("\"code\", \"") {
                        let rest = &line[at + 9..];
                        let code = &rest[..rest.find('"').unwrap_or(0)];
                        if ErrorCode::parse(code).is_none() {
                            unknown.push(format!("{}:{}: {code}", path.display(), i + 1));
                        }
                    }
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "unregistered codes:\n{}",
            unknown.join("\n")
        );
    }
}
