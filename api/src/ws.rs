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
use std::sync::Arc;
use std::time::Duration;

use async_graphql::http::{WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{ConnectInfo, FromRequestParts, Request, WebSocketUpgrade};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{SinkExt, StreamExt};

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

impl WsConfig {
    /// From the environment (unset or blank: the default).
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From the settings `lookup` returns.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut config = Self::default();
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let number = |name: &str, max: u64, unit: &str| -> Result<Option<u64>, String> {
            set(name)
                .map(|v| match v.trim().parse::<u64>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(format!(
                        "{name} must be a whole number of {unit} from 1 to {max}, not {v:?}"
                    )),
                })
                .transpose()
        };
        if let Some(ms) = number(INIT_TIMEOUT_SETTING, 600_000, "milliseconds")? {
            config.init_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = number(MAX_PENDING_SETTING, 1_000_000, "connections")? {
            config.max_pending = usize::try_from(n).map_err(|e| e.to_string())?;
        }
        if let Some(n) = number(MAX_CONNECTIONS_SETTING, 1_000_000, "connections")? {
            config.max_connections = usize::try_from(n).map_err(|e| e.to_string())?;
        }
        if let Some(origins) = set(origin::SETTING) {
            config.allowed_origins = AllowedOrigins::parse(&origins)?;
        }
        Ok(config)
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
    let replies = async_graphql::http::WebSocket::new(schema, input, protocol).on_connection_init(
        move |payload| async move {
            let data = identity::authenticate(&state, &payload, client_addr).await?;
            flag.store(true, Ordering::SeqCst);
            drop(pending);
            Ok(data)
        },
    );
    let deadline = tokio::time::sleep(init_timeout);
    tokio::pin!(replies, deadline);
    loop {
        tokio::select! {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_defaults_and_bad_values_name_their_variable() {
        let none = WsConfig::from_lookup(|_| None).expect("defaults");
        assert_eq!(none, WsConfig::default());
        assert_eq!(none.init_timeout, Duration::from_millis(5000));
        assert_eq!((none.max_pending, none.max_connections), (64, 1024));
        let set = WsConfig::from_lookup(|name| {
            Some(
                match name {
                    INIT_TIMEOUT_SETTING => "250",
                    MAX_PENDING_SETTING => "8",
                    MAX_CONNECTIONS_SETTING => "100",
                    _ => "https://app.example.com",
                }
                .to_string(),
            )
        })
        .expect("set");
        assert_eq!(set.init_timeout, Duration::from_millis(250));
        assert_eq!((set.max_pending, set.max_connections), (8, 100));
        assert_eq!(
            set.allowed_origins,
            AllowedOrigins::Listed(vec!["https://app.example.com".into()])
        );
        for name in [
            INIT_TIMEOUT_SETTING,
            MAX_PENDING_SETTING,
            MAX_CONNECTIONS_SETTING,
        ] {
            for bad in ["0", "-1", "soon"] {
                let err =
                    WsConfig::from_lookup(|n| (n == name).then(|| bad.to_string())).expect_err(bad);
                assert!(err.starts_with(name), "{err}");
            }
        }
    }
}
