//! Who runs an operation on a websocket: the connection authenticates once, in
//! `connection_init`; each operation then gets an [`Actor`] of its own.

use std::any::TypeId;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::{Data, ServerResult};
use uuid::Uuid;

use crate::auth::{self, Actor, Credential};
use crate::state::AppState;

/// Who authenticated a websocket connection (its session data). Operations do not read it:
/// [`OperationIdentity`] gives each its own [`Actor`].
#[derive(Debug, Clone)]
struct ConnectionIdentity {
    subject: String,
    role: String,
    roles: Vec<String>,
    scoped: Vec<crate::scope::ScopedRole>,
    client_addr: Option<String>,
    token_id: uuid::Uuid,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The connection's session data, and the credential it holds, for a `connection_init`
/// payload carrying a valid `{"Authorization": "Bearer <token>"}`.
pub(super) async fn authenticate(
    state: &AppState,
    payload: &serde_json::Value,
    client_addr: Option<String>,
) -> async_graphql::Result<(Data, Credential)> {
    let token = payload
        .get("Authorization")
        .or_else(|| payload.get("authorization"))
        .and_then(|v| v.as_str())
        .and_then(auth::bearer);
    let Some(token) = token else {
        return Err(async_graphql::Error::new(
            "unauthorized: send {\"Authorization\": \"Bearer <token>\"} in connection_init",
        ));
    };
    match state.tokens.lookup(&state.pool, token).await {
        Ok(Some(credential)) => {
            let mut data = Data::default();
            data.insert(ConnectionIdentity {
                subject: credential.subject.clone(),
                role: credential.primary_role().to_string(),
                roles: credential.roles.clone(),
                scoped: credential.scoped.clone(),
                client_addr,
                token_id: credential.token_id,
                expires_at: credential.expires_at,
            });
            data.insert(crate::graphql::subscriptions::SubscriptionSlots::default());
            Ok((data, credential))
        }
        Ok(None) => {
            const MESSAGE: &str = "unauthorized: invalid or revoked token";
            // Recorded for auditors when the token looks like one Corral issued (its prefix
            // is checked against the registry before the row is stored).
            if let Some(prefix) = crate::refusals::token_prefix(token) {
                state.refusals.record(crate::refusals::Refusal {
                    at: chrono::Utc::now(),
                    subject: None,
                    token_prefix: Some(prefix.to_string()),
                    operation: "WS connection_init".to_string(),
                    group_id: None,
                    code: crate::error_codes::ErrorCode::Unauthenticated
                        .as_str()
                        .to_string(),
                    reason: MESSAGE.to_string(),
                    client_addr,
                });
            }
            Err(async_graphql::Error::new(MESSAGE))
        }
        Err(err) => {
            tracing::error!(error = %err, "token lookup failed");
            Err(async_graphql::Error::new(
                "the token could not be checked; try again later",
            ))
        }
    }
}

/// Gives an operation that arrives without an [`Actor`] of its own (one sent over a
/// websocket) the connection's, with a fresh request id, so that each operation has its own
/// correlation id as each HTTP request does. HTTP requests bring their own and are left alone.
pub struct OperationIdentity;

impl ExtensionFactory for OperationIdentity {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationIdentity)
    }
}

#[async_trait::async_trait]
impl Extension for OperationIdentity {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        let has_actor = request.data.contains_key(&TypeId::of::<Actor>());
        let request = match ctx.data_opt::<ConnectionIdentity>() {
            Some(connection) if !has_actor => request.data(Actor {
                subject: connection.subject.clone(),
                role: connection.role.clone(),
                roles: connection.roles.clone(),
                scoped: connection.scoped.clone(),
                client_addr: connection.client_addr.clone(),
                request_id: Uuid::new_v4().to_string(),
                token_id: Some(connection.token_id),
                expires_at: connection.expires_at,
            }),
            _ => request,
        };
        next.run(ctx, request).await
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn each_operation_of_a_connection_gets_its_own_request_id() {
        use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
        struct Query;
        #[Object]
        impl Query {
            async fn who(&self, ctx: &async_graphql::Context<'_>) -> async_graphql::Result<String> {
                let actor = ctx.data::<Actor>()?;
                Ok(format!(
                    "{} {} {}",
                    actor.subject,
                    actor.client_addr.as_deref().unwrap_or("-"),
                    actor.request_id
                ))
            }
        }
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .extension(OperationIdentity)
            .finish();
        let mut session = Data::default();
        session.insert(ConnectionIdentity {
            subject: "vera".into(),
            role: "viewer".into(),
            roles: vec!["viewer".into()],
            scoped: vec![],
            client_addr: Some("192.0.2.7".into()),
            token_id: Uuid::nil(),
            expires_at: None,
        });
        let session = Arc::new(session);
        let mut seen = Vec::new();
        for _ in 0..2 {
            let response = schema
                .execute_stream_with_session_data("{ who }", session.clone())
                .next()
                .await
                .expect("a response");
            let who = response.data.into_json().expect("json")["who"].clone();
            let who = who.as_str().expect("who").to_string();
            assert!(who.starts_with("vera 192.0.2.7 "), "{who}");
            seen.push(who);
        }
        assert_ne!(seen[0], seen[1], "request ids differ");
        // A request that brings its own actor (HTTP) keeps it.
        let own = Actor::with_role("alice", "admin", "req-1");
        let response = schema
            .execute_stream_with_session_data(
                async_graphql::Request::new("{ who }").data(own),
                session,
            )
            .next()
            .await
            .expect("a response");
        assert_eq!(
            response.data.into_json().expect("json")["who"],
            "alice - req-1"
        );
    }
}
