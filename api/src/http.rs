//! The HTTP surface: `/graphql` (POST, GraphiQL on GET), `/graphql/ws`, health, metrics.

use std::net::SocketAddr;
use std::time::Instant;

use async_graphql_axum::GraphQLResponse;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use uuid::Uuid;

use crate::auth::{self, Actor};
use crate::error_codes::{self, ErrorCode};
use crate::state::AppState;

/// The router, testable in-process.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/graphql", post(graphql))
        .merge(crate::ide::router(state.config.graphiql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/audit/export", get(audit_export))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    // With a metrics address of its own, the API's address does not serve /metrics.
    let router = if state.config.metrics_listen.is_none() {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    error_response(
        ErrorCode::NotFound,
        "no such path; the API is POST /graphql (docs/schema.graphql)",
    )
}

async fn method_not_allowed() -> Response {
    let mut response = error_response(
        ErrorCode::BadRequest,
        "this path does not take that method; the API is POST /graphql",
    );
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// An HTTP answer carrying one coded error and no GraphQL response.
pub(crate) fn error_response(code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, Json(error_codes::http_body(code, message))).into_response();
    if code == ErrorCode::Unauthenticated {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// 429 with `Retry-After` (whole seconds) and a `RATE_LIMITED` body.
fn rate_limited(state: &AppState, wait: std::time::Duration) -> Response {
    let secs = crate::rate_limit::retry_after_secs(wait);
    let mut response = error_response(
        ErrorCode::RateLimited,
        &crate::rate_limit::message(&state.config.rate_limit, wait),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    response
}

fn unauthorized(message: &str) -> Response {
    error_response(ErrorCode::Unauthenticated, message)
}

/// The actor of a request's bearer token. A token refused although it has the prefix of a
/// token we issued (revoked, expired, a wrong secret) is recorded as a refused attempt on
/// `operation` (whether the prefix is known is checked off the request path).
async fn actor_from_token(
    state: &AppState,
    value: Option<&str>,
    client_addr: Option<String>,
    operation: &str,
) -> Result<Actor, Response> {
    let Some(token) = value.and_then(auth::bearer) else {
        return Err(unauthorized("missing bearer token"));
    };
    match state.tokens.lookup(&state.pool, token).await {
        Ok(Some(credential)) => Ok(Actor::from_credential(
            &credential,
            client_addr,
            Uuid::new_v4().to_string(),
        )),
        Ok(None) => {
            const MESSAGE: &str = "invalid or revoked token";
            if let Some(prefix) = crate::refusals::token_prefix(token) {
                state.refusals.record(crate::refusals::Refusal {
                    at: chrono::Utc::now(),
                    subject: None,
                    token_prefix: Some(prefix.to_string()),
                    operation: operation.to_string(),
                    group_id: None,
                    code: ErrorCode::Unauthenticated.as_str().to_string(),
                    reason: MESSAGE.to_string(),
                    client_addr,
                });
            }
            Err(unauthorized(MESSAGE))
        }
        Err(err) => {
            tracing::error!(error = %err, "token lookup failed");
            Err(error_response(
                ErrorCode::ServiceUnavailable,
                "the server cannot check tokens now (its database is unreachable); try again",
            ))
        }
    }
}

async fn graphql(State(state): State<AppState>, request: Request) -> Response {
    let headers: &HeaderMap = request.headers();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let client_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let actor = match actor_from_token(
        &state,
        authorization.as_deref(),
        client_addr,
        "POST /graphql",
    )
    .await
    {
        Ok(a) => a,
        Err(response) => return response,
    };
    if let Err(wait) = state.rate_limiter.check(&actor.subject) {
        return rate_limited(&state, wait);
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let json = ct
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json")
                    || v.eq_ignore_ascii_case("application/graphql-response+json")
            });
        if !json {
            return error_response(
                ErrorCode::UnsupportedMediaType,
                "POST /graphql takes a JSON body: Content-Type: application/json",
            );
        }
    }
    let body = match read_body(&state, request.into_body()).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    // A large body costs milliseconds of CPU to parse: off the async workers, so that other
    // requests (and /healthz) are not held up behind it.
    let parsed = if body.len() > 64 * 1024 {
        tokio::task::spawn_blocking(move || parse_graphql_body(&body))
            .await
            .unwrap_or_else(|_| Err((ErrorCode::Internal, "internal error".into())))
    } else {
        parse_graphql_body(&body)
    };
    let gql = match parsed {
        Ok(r) => r,
        Err((code, message)) => return error_response(code, &message),
    };
    let Some(schema) = state.schema.clone() else {
        return error_response(ErrorCode::ServiceUnavailable, "the server is starting");
    };
    let gql = crate::graphql::prepare(gql, actor).data(crate::rate_limit::Counted);
    GraphQLResponse::from(schema.execute(gql).await).into_response()
}

/// Reads a body under the size limit and within the read timeout (a client that trickles
/// its body is cut off).
async fn read_body(
    state: &AppState,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, Response> {
    let limit = state.config.max_body_bytes;
    match tokio::time::timeout(
        state.config.listener.read_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if too_large(&e) => Err(error_response(
            ErrorCode::PayloadTooLarge,
            &format!("the request body is larger than {limit} bytes (CORRAL_MAX_BODY_BYTES)"),
        )),
        Ok(Err(e)) => Err(error_response(
            ErrorCode::BadRequest,
            &format!("the request body could not be read: {e}"),
        )),
        Err(_) => Err(error_response(
            ErrorCode::RequestTimeout,
            &format!(
                "the request body did not arrive within {} ms (CORRAL_REQUEST_READ_TIMEOUT_MS)",
                state.config.listener.read_timeout.as_millis()
            ),
        )),
    }
}

/// Whether a body error is the size limit (rather than a broken or closed connection).
fn too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// One GraphQL request from a JSON body, or the code and message of a body that is not one.
fn parse_graphql_body(body: &[u8]) -> Result<async_graphql::Request, (ErrorCode, String)> {
    let bad = |m: &str| (ErrorCode::BadRequest, m.to_string());
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| bad(&format!("the request body is not JSON: {e}")))?;
    if value.is_array() {
        return Err((
            ErrorCode::BatchNotSupported,
            "batched requests (a JSON array) are not supported: send one operation per request"
                .into(),
        ));
    }
    if !value.is_object() {
        return Err(bad(
            "the request body must be a JSON object: {\"query\": \"...\", \"variables\": {...}}",
        ));
    }
    if !value.get("query").is_some_and(serde_json::Value::is_string) {
        return Err(bad("the request has no \"query\" string"));
    }
    if let Some(v) = value.get("variables") {
        if !(v.is_object() || v.is_null()) {
            return Err(bad("\"variables\" must be a JSON object"));
        }
    }
    if let Some(v) = value.get("operationName") {
        if !(v.is_string() || v.is_null()) {
            return Err(bad("\"operationName\" must be a string"));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| bad(&format!("the request is not a GraphQL request: {e}")))
}

async fn graphql_ws(State(state): State<AppState>, request: Request) -> Response {
    crate::ws::accept(state, request).await
}

/// `GET /audit/export?from=T&to=T[&group=ID&includeDescendants=true][&actor=..]
/// [&correlationId=..][&eventTypes=A,B][&aggregateTypes=A,B]&format=ndjson|csv`: the audit
/// log streamed as it is read (auditors and admins, like `auditLog`). An auditor whose
/// `audit.read` is scoped exports what `auditLog` shows it: the Group and Membership events
/// of the groups in its subtrees as the tree stands when the export starts.
async fn audit_export(
    State(state): State<AppState>,
    params: Result<
        axum::extract::Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
) -> Response {
    const OPERATION: &str = "GET /audit/export";
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let client_addr = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let actor = match actor_from_token(&state, authorization, client_addr, OPERATION).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    let reach = crate::scope::reach(
        &state.policy.table(),
        &actor,
        crate::permissions::Permission::AuditRead,
    );
    if reach.is_nothing() {
        const MESSAGE: &str = "not allowed to export the audit log";
        state.refusals.record(crate::refusals::Refusal {
            at: chrono::Utc::now(),
            subject: Some(actor.subject.clone()),
            token_prefix: None,
            operation: OPERATION.to_string(),
            group_id: None,
            code: ErrorCode::Forbidden.as_str().to_string(),
            reason: MESSAGE.to_string(),
            client_addr: actor.client_addr.clone(),
        });
        return error_response(ErrorCode::Forbidden, MESSAGE);
    }
    let params = match params {
        Ok(axum::extract::Query(p)) => p,
        Err(e) => {
            return error_response(
                ErrorCode::BadRequest,
                &format!("the query string is not valid: {}", e.body_text()),
            )
        }
    };
    if let Some((k, _)) = params
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return error_response(
            ErrorCode::BadRequest,
            &format!(
                "parameter {:?} contains a NUL character (\\u0000)",
                k.replace('\0', "\\u0000")
            ),
        );
    }
    let request = match crate::audit::ExportRequest::from_params(&params) {
        Ok(r) => r,
        Err(message) => return error_response(ErrorCode::BadRequest, &message),
    };
    let filter = match request
        .filter
        .resolve_within(&state.api_pool, reach.roots())
        .await
    {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            return error_response(
                ErrorCode::BadRequest,
                &format!("{}: {}", e.field, e.message),
            )
        }
        Err(err) => {
            tracing::error!(error = %err, "audit export failed");
            return error_response(
                ErrorCode::ServiceUnavailable,
                "the audit log cannot be read now; try again",
            );
        }
    };
    let format = request.format;
    let body = futures::StreamExt::map(
        // A long export streams batch after batch; a filter that matches little may scan long
        // between matches: it reads on the main pool, without the API's statement timeout.
        crate::audit::export(state.pool.clone(), filter, format),
        |chunk| match chunk {
            Ok(c) => Ok(axum::body::Bytes::from(c.text)),
            Err(err) => {
                // The client sees a truncated transfer (no final chunk), never a silent end.
                tracing::error!(error = %err, "audit export failed mid-stream");
                Err(std::io::Error::other(err.to_string()))
            }
        },
    );
    let extension = match format {
        crate::audit::ExportFormat::Ndjson => "ndjson",
        crate::audit::ExportFormat::Csv => "csv",
    };
    (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"corral-audit.{extension}\""),
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM projection_checkpoints")
        .fetch_one(&state.pool)
        .await
    {
        Ok(_) => "ready".into_response(),
        Err(err) => {
            // The details are for the log, not for whoever can reach the port.
            tracing::warn!(error = %err, "/readyz: the database is not ready");
            error_response(ErrorCode::ServiceUnavailable, "the database is not ready")
        }
    }
}

/// The router of `CORRAL_METRICS_LISTEN`: `/metrics` and `/healthz` only.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Whether `headers` carry `Authorization: Bearer <token>` (compared in constant time).
fn metrics_authorized(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer)
        .unwrap_or("");
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token {
        if !metrics_authorized(&headers, token) {
            return unauthorized("/metrics needs the bearer token of CORRAL_METRICS_TOKEN");
        }
    }
    let projectors = corral_projections::runner::status(&state.pool)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "could not read projector status for /metrics");
            vec![]
        });
    // From the database, so it is right whichever process publishes.
    let publish_lag = corral_workers::publisher::lag(&state.pool)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(error = %err, "could not read the NATS publisher's lag for /metrics");
            vec![]
        });
    let leaders = corral_projections::leader::cluster(
        &state.pool,
        &corral_projections::leader::Leadership::all(&state.config.events_stream),
    )
    .await
    .unwrap_or_else(|err| {
        tracing::warn!(error = %err, "could not read the cluster's leaders for /metrics");
        vec![]
    });
    let mut body = state.metrics.render(&projectors);
    body.push_str(&corral_workers::publisher::render_lag(&publish_lag));
    body.push_str(&crate::metrics::render_leaders(
        &corral_projections::leader::held_here(),
        &leaders,
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
