//! The Relay `Node` interface: `node(id)` and `nodes(ids)` fetch any object with an id by its
//! global id.
//!
//! **Global ids.** The existing `id` fields stay what clients use today (a group's UUID, a
//! device's or service's source id, which are free strings and may be equal across kinds), so
//! a global id is a separate field, `nodeId`: base64url (no padding) of `<Type>:<id>`, e.g.
//! `Device:d1` → `RGV2aWNlOmQx`. `node(id:)` takes a `nodeId` only; Relay clients point
//! their node-id field at `nodeId`. Ids are opaque: build them only from `nodeId`.
//!
//! **Access.** Each type is resolved by the very function behind its own root field (`group`,
//! `device`, `service`, `dashboard`, `sweepRun`), after the same field decision the
//! authorization extension makes for that root field (`crate::permissions::FIELDS`): a node
//! the caller may not read, for lack of the permission or outside its scope, is `null`
//! exactly like a node that does not exist, never `FORBIDDEN`.

use async_graphql::{Context, Interface, Object, Result, ID};
use base64::Engine as _;
use std::sync::Arc;
use uuid::Uuid;

use super::dashboards::Dashboard;
use super::errors::coded;
use super::inventory::{Device, Service};
use super::sweeps::SweepRun;
use super::types::Group;
use crate::auth::Actor;
use crate::error_codes::ErrorCode;
use crate::policy::Policy;

/// Ids `nodes` takes at most.
pub const MAX_NODE_IDS: usize = 100;

/// An object with a global id.
#[derive(Interface)]
#[graphql(field(
    name = "node_id",
    ty = "ID",
    desc = "The object's global id (for `node`/`nodes`): opaque, unique across types."
))]
// Built per response and dropped with it.
#[allow(clippy::large_enum_variant)]
pub enum Node {
    /// A group.
    Group(Group),
    /// A device.
    Device(Device),
    /// A service.
    Service(Service),
    /// A dashboard or template.
    Dashboard(Dashboard),
    /// A sweep run.
    SweepRun(SweepRun),
}

/// The kinds of node, their names in global ids and the root field whose rules they follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Group,
    Device,
    Service,
    Dashboard,
    SweepRun,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Group,
        Kind::Device,
        Kind::Service,
        Kind::Dashboard,
        Kind::SweepRun,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Group => "Group",
            Kind::Device => "Device",
            Kind::Service => "Service",
            Kind::Dashboard => "Dashboard",
            Kind::SweepRun => "SweepRun",
        }
    }

    /// The `Query` field that reads one of this kind.
    fn root_field(self) -> &'static str {
        match self {
            Kind::Group => "group",
            Kind::Device => "device",
            Kind::Service => "service",
            Kind::Dashboard => "dashboard",
            Kind::SweepRun => "sweepRun",
        }
    }
}

/// The global id of an object of type `type_name` with id `id`.
pub fn global_id(type_name: &str, id: &str) -> ID {
    ID(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{type_name}:{id}")))
}

/// The kind and id a global id names (`None`: not a global id of this server).
fn parse(id: &str) -> Option<(Kind, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (kind, key) = text.split_once(':')?;
    let kind = Kind::ALL.into_iter().find(|k| k.name() == kind)?;
    (!key.is_empty() && !key.contains('\0')).then(|| (kind, key.to_string()))
}

/// The node `id` as the caller may see it.
async fn resolve(ctx: &Context<'_>, id: &str) -> Result<Option<Node>> {
    if id.len() > 2048 {
        return Ok(None);
    }
    let Some((kind, key)) = parse(id) else {
        return Ok(None);
    };
    // The decision the authorization extension makes for the type's own root field.
    let permitted = match (ctx.data::<Arc<Policy>>(), ctx.data::<Actor>()) {
        (Ok(policy), Ok(actor)) => {
            crate::policy::permits_field(&policy.table(), actor, "Query", kind.root_field())
        }
        _ => false,
    };
    if !permitted {
        return Ok(None);
    }
    let uuid = || key.parse::<Uuid>().ok();
    Ok(match kind {
        Kind::Group => match uuid() {
            Some(u) => super::query::live(ctx, u).await?.map(Node::Group),
            None => None,
        },
        Kind::Device => super::inventory::device(ctx, key.clone())
            .await?
            .map(Node::Device),
        Kind::Service => super::inventory::service(ctx, key.clone())
            .await?
            .map(Node::Service),
        Kind::Dashboard => match uuid() {
            Some(u) => super::dashboards::readable(ctx, u)
                .await?
                .map(|d| Node::Dashboard(Dashboard::new(d, None))),
            None => None,
        },
        Kind::SweepRun => match uuid() {
            Some(u) => super::sweeps::run_by_id(ctx, u).await?.map(Node::SweepRun),
            None => None,
        },
    })
}

/// `node` and `nodes` (part of the `Query` root).
#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// The object with this global id (a `nodeId`), or null when there is none or the
    /// caller may not read it (the same rules as the type's own query: `group`, `device`,
    /// `service`, `dashboard`, `sweepRun`).
    #[graphql(complexity = "child_complexity + 1")]
    async fn node(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Node>> {
        resolve(ctx, &id).await
    }

    /// The objects with these global ids, in the same order (null where `node` would be);
    /// at most 100 ids.
    #[graphql(complexity = "ids.len().max(1) * child_complexity + 1")]
    async fn nodes(&self, ctx: &Context<'_>, ids: Vec<ID>) -> Result<Vec<Option<Node>>> {
        if ids.len() > MAX_NODE_IDS {
            return Err(coded(
                ErrorCode::BadUserInput,
                format!("nodes takes at most {MAX_NODE_IDS} ids, got {}", ids.len()),
            ));
        }
        // Concurrently, so that devices and services share their request's loaders' batches.
        futures::future::try_join_all(ids.iter().map(|id| resolve(ctx, id))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_ids_round_trip_and_keep_kinds_apart() {
        let d = global_id("Device", "same");
        let s = global_id("Service", "same");
        assert_ne!(d, s);
        assert_eq!(parse(&d), Some((Kind::Device, "same".to_string())));
        assert_eq!(parse(&s), Some((Kind::Service, "same".to_string())));
        assert_eq!(
            parse(&global_id("Service", "d1/http/web")),
            Some((Kind::Service, "d1/http/web".to_string()))
        );
        assert_eq!(parse("not base64!"), None);
        assert_eq!(parse(&global_id("Token", "x")), None);
        assert_eq!(parse(&global_id("Group", "")), None);
    }
}
