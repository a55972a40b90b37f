//! `/graphql/ws` (graphql-transport-ws, and the legacy subscriptions-transport-ws).
//!
//! Before the upgrade: a browser page's `Origin` must be this server's own or allowed
//! ([`origin`]), and at most `max_pending` connections may be waiting to authenticate and
//! `max_connections` be open ([`limits`]); otherwise HTTP 403 `FORBIDDEN` or 503
//! `TOO_MANY_CONNECTIONS`. After it: the connection must authenticate in `connection_init`
//! within `init_timeout`, or it is closed with 4408. Each operation on the socket then runs as
//! its own request, with a request (correlation) id of its own and the connection's client
//! address ([`OperationIdentity`]), as over HTTP.

mod identity;
pub mod limits;
pub mod origin;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::{WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{ConnectInfo, FromRequestParts, Request, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{SinkExt, StreamExt};

use crate::auth::Credential;
use crate::error_codes::ErrorCode;
use crate::graphql::CorralSchema;
use crate::state::AppState;
pub use identity::OperationIdentity;
pub use limits::Connections;
pub use origin::AllowedOrigins;

/// `CORRAL_WS_INIT_TIMEOUT_MS`.
pub const INIT_TIMEOUT_SETTING: &str = "CORRAL_WS_INIT_TIMEOUT_MS";
/// `CORRAL_WS_MAX_PENDING`.
pub const MAX_PENDING_SETTING: &str = "CORRAL_WS_MAX_PENDING";
/// `CORRAL_WS_MAX_CONNECTIONS`.
pub const MAX_CONNECTIONS_SETTING: &str = "CORRAL_WS_MAX_CONNECTIONS";

/// The graphql-transport-ws close code for a connection that did not initialise in time.
pub const INIT_TIMEOUT_CLOSE_CODE: u16 = 4408;

/// The close code of a connection whose token was revoked or expired, or lost the role it
/// was opened with (graphql-transport-ws's "Unauthorized"/"Forbidden" range).
pub const CREDENTIAL_CLOSE_CODE: u16 = 4401;
/// The close code of a connection whose token's roles changed.
pub const ROLES_CHANGED_CLOSE_CODE: u16 = 4403;

/// Re-checks an open connection's token after an access change: the close frame to send when
/// it no longer holds (revoked, expired, its roles changed), `None` while it does. The check
/// fails closed: when the database cannot answer three times in a row (the change may be this
/// token's revocation), the connection is closed too, and the client reconnects.
async fn recheck(pool: &sqlx::PgPool, held: &Credential) -> Option<CloseFrame> {
    // A JWT has no registry row: it holds until its `exp` (the expiry timer closes it).
    if held.kind == crate::auth::CredentialKind::Jwt {
        return None;
    }
    for attempt in 1..=3 {
        match crate::auth::check(pool, held.token_id).await {
            Ok(Some(now)) if now.roles == held.roles && now.scoped == held.scoped => return None,
            Ok(Some(_)) => {
                return Some(CloseFrame {
                    code: ROLES_CHANGED_CLOSE_CODE,
                    reason: "Forbidden: the token's roles changed; reconnect".into(),
                })
            }
            Ok(None) => {
                return Some(CloseFrame {
                    code: CREDENTIAL_CLOSE_CODE,
                    reason: "Unauthorized: the token was revoked or has expired".into(),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "could not re-check a websocket's token");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Some(CloseFrame {
        code: CREDENTIAL_CLOSE_CODE,
        reason: "Unauthorized: the token could not be re-checked; reconnect".into(),
    })
}

/// Websocket settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// How long a connection has to authenticate in `connection_init` (then: close 4408).
    pub init_timeout: Duration,
    /// Most connections waiting to authenticate at once, per process.
    pub max_pending: usize,
    /// Most open connections (authenticated or still waiting), per process.
    pub max_connections: usize,
    /// Which browser origins may connect.
    pub allowed_origins: AllowedOrigins,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            init_timeout: Duration::from_secs(5),
            max_pending: 64,
            max_connections: 1024,
            allowed_origins: AllowedOrigins::SameOrigin,
        }
    }
}

fn refusal(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(crate::error_codes::http_body(code, message))).into_response()
}

/// Largest websocket message: `connection_init` and operations are small (an ingest batch of
/// megabytes belongs on `POST /graphql`), and a small limit keeps connections that have not
/// authenticated from making the server parse megabytes.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// `GET /graphql/ws`: checks the origin and the connection limits, then upgrades.
pub async fn accept(state: AppState, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let Some(protocol) = parts
        .headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
        })
    else {
        return refusal(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "a websocket on /graphql/ws must ask for the graphql-transport-ws protocol \
             (Sec-WebSocket-Protocol)",
        );
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(u) => u,
        Err(rejection) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &format!("not a websocket upgrade: {}", rejection.body_text()),
            )
        }
    };
    let config = &state.config.websocket;
    if let Err(message) = config.allowed_origins.allow(&parts.headers, &parts.uri) {
        tracing::debug!(reason = %message, "websocket upgrade refused");
        return refusal(StatusCode::FORBIDDEN, ErrorCode::Forbidden, &message);
    }
    let Some(schema) = state.schema.clone() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServiceUnavailable,
            "the server is starting",
        );
    };
    let admission = match state
        .websockets
        .admit(config.max_pending, config.max_connections)
    {
        Ok(a) => a,
        Err(full) => {
            let message = match full {
                limits::Full::Pending => format!(
                    "too many websocket connections are waiting to authenticate \
                     ({MAX_PENDING_SETTING}={}); try again later",
                    config.max_pending
                ),
                limits::Full::Open => format!(
                    "too many websocket connections are open ({MAX_CONNECTIONS_SETTING}={}); \
                     try again later",
                    config.max_connections
                ),
            };
            tracing::debug!(reason = %message, "websocket upgrade refused");
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooManyConnections,
                &message,
            );
        }
    };
    let client_addr = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let limit = state.config.max_body_bytes.min(MAX_MESSAGE_BYTES);
    // Dropping the callback (the upgrade failed) frees the admission's slots too.
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(socket, protocol, schema, state, admission, client_addr))
}

/// Runs one connection: graphql-transport-ws from async-graphql, with the init deadline
/// around it (async-graphql 7.2 has none).
async fn serve(
    socket: WebSocket,
    protocol: WebSocketProtocols,
    schema: CorralSchema,
    state: AppState,
    admission: limits::Admission,
    client_addr: Option<String>,
) {
    let limits::Admission {
        pending,
        open: _open,
    } = admission;
    let init_timeout = state.config.websocket.init_timeout;
    let authenticated = Arc::new(AtomicBool::new(false));
    let (mut sink, stream) = socket.split();
    let input = stream
        .take_while(|message| futures::future::ready(message.is_ok()))
        .filter_map(|message| {
            futures::future::ready(match message {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => Some(m.into_data()),
                _ => None,
            })
        });
    let flag = authenticated.clone();
    let held: Arc<Mutex<Option<Credential>>> = Arc::default();
    let slot = held.clone();
    let pool = state.pool.clone();
    let mut epoch = state.tokens.epoch().subscribe();
    let mut epoch_alive = true;
    let policy = state.policy.clone();
    let mut policy_changes = policy.changes();
    let mut policy_alive = true;
    let mut table = policy.table();
    let replies = async_graphql::http::WebSocket::new(schema, input, protocol).on_connection_init(
        move |payload| async move {
            let (data, credential) = identity::authenticate(&state, &payload, client_addr).await?;
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(credential);
            flag.store(true, Ordering::SeqCst);
            drop(pending);
            Ok(data)
        },
    );
    let deadline = tokio::time::sleep(init_timeout);
    // When the connection's token expires (armed once it authenticated).
    let expiry = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    let mut expiry_armed = false;
    tokio::pin!(replies, deadline, expiry);
    loop {
        if !expiry_armed {
            let at = held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|c| c.expires_at);
            if let Some(at) = at {
                expiry_armed = true;
                if let Some(at) = at {
                    let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
                    expiry.as_mut().reset(tokio::time::Instant::now() + left);
                }
            }
        }
        tokio::select! {
            changed = epoch.changed(), if epoch_alive && authenticated.load(Ordering::SeqCst) => {
                if changed.is_err() {
                    epoch_alive = false;
                    continue;
                }
                let credential = held.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(credential) = credential else { continue };
                if let Some(reason) = recheck(&pool, &credential).await {
                    let _ = sink.send(Message::Close(Some(reason))).await;
                    break;
                }
            }
            changed = policy_changes.changed(), if policy_alive && authenticated.load(Ordering::SeqCst) => {
                if changed.is_err() {
                    policy_alive = false;
                    continue;
                }
                // A role this connection uses was redefined or deleted: what it may do changed.
                let now = policy.table();
                let credential = held.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(credential) = credential else { continue };
                let roles = credential
                    .roles
                    .iter()
                    .map(String::as_str)
                    .chain(credential.scoped.iter().map(|b| b.role.as_str()));
                if now.differs_for(&table, roles) {
                    let close = CloseFrame {
                        code: ROLES_CHANGED_CLOSE_CODE,
                        reason: "Forbidden: the permissions of the token's roles changed; reconnect".into(),
                    };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    break;
                }
                table = now;
            }
            () = &mut expiry, if expiry_armed => {
                let close = CloseFrame {
                    code: CREDENTIAL_CLOSE_CODE,
                    reason: "Unauthorized: the token expired".into(),
                };
                let _ = sink.send(Message::Close(Some(close))).await;
                break;
            }
            reply = replies.next() => {
                let Some(reply) = reply else { break };
                let message = match reply {
                    WsMessage::Text(text) => Message::Text(text.into()),
                    WsMessage::Close(code, reason) => Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    })),
                };
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            () = &mut deadline, if !authenticated.load(Ordering::SeqCst) => {
                let close = CloseFrame {
                    code: INIT_TIMEOUT_CLOSE_CODE,
                    reason: "Connection initialisation timeout".into(),
                };
                let _ = sink.send(Message::Close(Some(close))).await;
                break;
            }
        }
    }
}
