//! The HTTP surface: `/graphql` (POST, GraphiQL on GET), `/graphql/ws`, health, metrics.

use std::net::SocketAddr;
use std::time::Instant;

use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::{ConnectInfo, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use uuid::Uuid;

use crate::auth::{self, Actor};
use crate::state::AppState;

/// The router, testable in-process.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/graphql", post(graphql))
        .merge(crate::ide::router(state.config.graphiql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/audit/export", get(audit_export))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
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

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": "UNAUTHENTICATED" } }] })),
    )
        .into_response()
}

async fn actor_from_token(
    state: &AppState,
    value: Option<&str>,
    client_addr: Option<String>,
) -> Result<Actor, Response> {
    let Some(token) = value.and_then(auth::bearer) else {
        return Err(unauthorized("missing bearer token"));
    };
    match state.tokens.lookup(&state.pool, token).await {
        Ok(Some((subject, role))) => Ok(Actor {
            subject,
            role,
            client_addr,
            request_id: Uuid::new_v4().to_string(),
        }),
        Ok(None) => Err(unauthorized("invalid or revoked token")),
        Err(err) => {
            tracing::error!(error = %err, "token lookup failed");
            Err(StatusCode::SERVICE_UNAVAILABLE.into_response())
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
    let actor = match actor_from_token(&state, authorization.as_deref(), client_addr).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    // Read the body under the limit ourselves: the GraphQL extractor streams it unbounded.
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {} bytes", state.config.max_body_bytes),
            )
                .into_response()
        }
    };
    let request = Request::from_parts(parts, axum::body::Body::from(bytes));
    let gql = match GraphQLRequest::<async_graphql_axum::rejection::GraphQLRejection>::from_request(
        request, &state,
    )
    .await
    {
        Ok(r) => r.into_inner(),
        Err(rejection) => return rejection.into_response(),
    };
    let Some(schema) = state.schema.clone() else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let gql = crate::graphql::prepare(gql, actor);
    GraphQLResponse::from(schema.execute(gql).await).into_response()
}

async fn graphql_ws(State(state): State<AppState>, request: Request) -> Response {
    crate::ws::accept(state, request).await
}

/// `GET /audit/export?from=T&to=T[&group=ID&includeDescendants=true][&actor=..]
/// [&correlationId=..][&eventTypes=A,B][&aggregateTypes=A,B]&format=ndjson|csv`: the audit
/// log streamed as it is read (auditors and admins, like `auditLog`).
async fn audit_export(
    State(state): State<AppState>,
    axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let actor = match actor_from_token(&state, authorization, None).await {
        Ok(a) => a,
        Err(response) => return response,
    };
    if !crate::policy::allowed(&state.enforcer, &actor.role, "Audit.export") {
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({ "errors": [{ "message": "not allowed to export the audit log", "extensions": { "code": "FORBIDDEN" } }] })),
        )
            .into_response();
    }
    let request = match crate::audit::ExportRequest::from_params(&params) {
        Ok(r) => r,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let filter = match request.filter.resolve(&state.pool).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("{}: {}", e.field, e.message),
            )
                .into_response()
        }
        Err(err) => {
            tracing::error!(error = %err, "audit export failed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let format = request.format;
    let body = futures::StreamExt::map(
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
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database not ready: {err}"),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
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
