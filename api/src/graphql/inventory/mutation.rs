//! The operator's inventory feed: upsert and remove devices and services. Each batch writes
//! the tables and appends a `Device` / `Service` event per real change, with the caller as
//! actor, in one transaction; the tables are what queries read, so a mutation returns once
//! that transaction commits.

use async_graphql::{Context, InputObject, Json, Object, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_domain::codes::Code;
use corral_domain::inventory::{self as inv, FieldError, MAX_BATCH};
use corral_projections::inventory as store;
use serde_json::Value;
use sqlx::PgPool;

use super::clear_caches;
use crate::auth::Actor;
use crate::graphql::errors::{internal, UserError};

/// A device as a discovery source reports it. An upsert replaces the stored record: omitted
/// fields become null, except `firstSeen`, which keeps the earliest value ever reported.
#[derive(InputObject)]
pub struct DeviceInput {
    /// The source's id: 1-256 characters, no control characters.
    pub id: String,
    /// Host name (at most 1024 characters; texts are trimmed, empty means null).
    pub hostname: Option<String>,
    /// An IPv4 or IPv6 address (stored in canonical form).
    pub ip: Option<String>,
    /// 12 hex digits, optionally separated by `:`, `-` or `.`.
    pub mac: Option<String>,
    /// Vendor.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Operating system version.
    pub os_version: Option<String>,
    /// Network partition.
    pub partition: Option<String>,
    /// Site.
    pub site: Option<String>,
    /// Device type.
    #[graphql(name = "type")]
    pub device_type: Option<String>,
    /// Reporting agent.
    pub agent_id: Option<String>,
    /// Reporting poller.
    pub poller_id: Option<String>,
    /// At most 64 tags, `key` or `key=value`; keys `[a-z0-9_-]{1,64}`, lower-cased.
    pub tags: Option<Vec<String>>,
    /// A JSON object of strings, at most 64 keys (lower-cased).
    pub metadata: Option<Json<Value>>,
    /// At most 32 discovery sources.
    pub discovery_sources: Option<Vec<String>>,
    /// Whether it is reachable.
    pub is_available: Option<bool>,
    /// First seen.
    pub first_seen: Option<DateTime<Utc>>,
    /// Last seen.
    pub last_seen: Option<DateTime<Utc>>,
}

impl From<DeviceInput> for inv::DeviceInput {
    fn from(d: DeviceInput) -> Self {
        Self {
            id: d.id,
            hostname: d.hostname,
            ip: d.ip,
            mac: d.mac,
            vendor: d.vendor,
            model: d.model,
            os: d.os,
            os_version: d.os_version,
            partition: d.partition,
            site: d.site,
            device_type: d.device_type,
            agent_id: d.agent_id,
            poller_id: d.poller_id,
            tags: d.tags,
            metadata: d.metadata.map(|j| j.0),
            discovery_sources: d.discovery_sources,
            is_available: d.is_available,
            first_seen: d.first_seen,
            last_seen: d.last_seen,
        }
    }
}

/// A service as a discovery source reports it; an upsert replaces the stored record.
#[derive(InputObject)]
pub struct ServiceInput {
    /// The source's id; defaults to `<deviceId>/<type>/<name>`.
    pub id: Option<String>,
    /// The host device's id.
    pub device_id: String,
    /// Service type, e.g. `http`.
    #[graphql(name = "type")]
    pub service_type: String,
    /// Name.
    pub name: String,
    /// Port, 1-65535.
    pub port: Option<i32>,
    /// Status.
    pub status: Option<String>,
    /// Tags, as for devices.
    pub tags: Option<Vec<String>>,
    /// A JSON object of strings.
    pub metadata: Option<Json<Value>>,
    /// Last seen.
    pub last_seen: Option<DateTime<Utc>>,
}

impl From<ServiceInput> for inv::ServiceInput {
    fn from(s: ServiceInput) -> Self {
        Self {
            id: s.id,
            device_id: s.device_id,
            service_type: s.service_type,
            name: s.name,
            port: s.port.map(i64::from),
            status: s.status,
            tags: s.tags,
            metadata: s.metadata.map(|j| j.0),
            last_seen: s.last_seen,
        }
    }
}

/// Input of `upsertDevices`.
#[derive(InputObject)]
pub struct UpsertDevicesInput {
    /// At most 1000 devices; the last one wins when an id repeats.
    pub devices: Vec<DeviceInput>,
}

/// Input of `upsertServices`.
#[derive(InputObject)]
pub struct UpsertServicesInput {
    /// At most 1000 services; the last one wins when an id repeats.
    pub services: Vec<ServiceInput>,
}

/// Input of `removeDevices` and `removeServices`.
#[derive(InputObject)]
pub struct RemoveInventoryInput {
    /// At most 1000 ids.
    pub ids: Vec<ID>,
}

/// The result of an inventory upsert. Valid items apply even when others are invalid.
#[derive(SimpleObject, Default)]
pub struct UpsertInventoryPayload {
    /// Items (distinct ids) that were new, removed before, or changed.
    pub upserted: i32,
    /// Valid items that matched the stored record exactly (nothing was written).
    pub unchanged: i32,
    /// One per invalid field, `field` like `devices[3].ip`; `TOO_MANY` when the call carried
    /// more than 1000 items (then nothing was applied).
    pub user_errors: Vec<UserError>,
}

/// The result of an inventory removal.
#[derive(SimpleObject, Default)]
pub struct RemoveInventoryPayload {
    /// Items removed (unknown or already removed ids are not counted).
    pub removed: i32,
    /// `TOO_MANY` when the call carried more than 1000 ids (then nothing was removed).
    pub user_errors: Vec<UserError>,
}

fn too_many(field: &str, n: usize) -> UserError {
    UserError::new(
        Some(field),
        Code::TooMany,
        format!("at most {MAX_BATCH} items per call, got {n}"),
    )
}

/// Validates every item; returns the valid records and a userError per invalid field.
fn validate_all<I, T>(
    list: &str,
    items: Vec<I>,
    validate: impl Fn(I) -> std::result::Result<T, Vec<FieldError>>,
) -> (Vec<T>, Vec<UserError>) {
    let mut valid = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match validate(item) {
            Ok(v) => valid.push(v),
            Err(fields) => errors.extend(fields.into_iter().map(|e| {
                let field = match e.field.as_str() {
                    "" => format!("{list}[{i}]"),
                    f => format!("{list}[{i}].{f}"),
                };
                UserError::new(Some(&field), Code::Invalid, e.message)
            })),
        }
    }
    (valid, errors)
}

fn payload(outcome: store::UpsertOutcome, user_errors: Vec<UserError>) -> UpsertInventoryPayload {
    UpsertInventoryPayload {
        upserted: i32::try_from(outcome.upserted).unwrap_or(i32::MAX),
        unchanged: i32::try_from(outcome.unchanged).unwrap_or(i32::MAX),
        user_errors,
    }
}

/// Ids that can exist (the rest are simply not found).
fn ids(ids: Vec<ID>) -> Vec<String> {
    ids.into_iter()
        .map(|id| id.0)
        .filter(|id| !id.contains('\0'))
        .collect()
}

/// Who writes: the caller (subject, role, request id, address), as every event's metadata.
fn writer(ctx: &Context<'_>) -> Result<store::WriteContext> {
    match crate::graphql::mutation::event_metadata(ctx, None)? {
        Ok(metadata) => Ok(store::WriteContext::new(metadata)),
        Err(e) => Err(async_graphql::Error::new(e.message)),
    }
}

fn log_write(ctx: &Context<'_>, what: &str, written: u64, invalid: usize) {
    let subject = ctx
        .data::<Actor>()
        .map(|a| a.subject.as_str())
        .unwrap_or("");
    tracing::info!(
        actor.subject = subject,
        inventory.op = what,
        inventory.written = written,
        inventory.invalid = invalid,
        "inventory written"
    );
}

/// Inventory feed mutations (part of the `Mutation` root).
#[derive(Default)]
pub struct InventoryMutation;

#[Object]
impl InventoryMutation {
    /// Creates or replaces devices (at most 1000). Invalid items come back as userErrors
    /// with their index; the valid ones apply.
    async fn upsert_devices(
        &self,
        ctx: &Context<'_>,
        input: UpsertDevicesInput,
    ) -> Result<UpsertInventoryPayload> {
        if input.devices.len() > MAX_BATCH {
            return Ok(payload(
                store::UpsertOutcome::default(),
                vec![too_many("devices", input.devices.len())],
            ));
        }
        let (valid, errors) = validate_all("devices", input.devices, |d| {
            inv::DeviceInput::from(d).validate()
        });
        let outcome = store::upsert_devices(ctx.data_unchecked::<PgPool>(), &valid, &writer(ctx)?)
            .await
            .map_err(internal)?;
        clear_caches(ctx);
        log_write(ctx, "upsertDevices", outcome.upserted, errors.len());
        Ok(payload(outcome, errors))
    }

    /// Creates or replaces services (at most 1000), like `upsertDevices`.
    async fn upsert_services(
        &self,
        ctx: &Context<'_>,
        input: UpsertServicesInput,
    ) -> Result<UpsertInventoryPayload> {
        if input.services.len() > MAX_BATCH {
            return Ok(payload(
                store::UpsertOutcome::default(),
                vec![too_many("services", input.services.len())],
            ));
        }
        let (valid, errors) = validate_all("services", input.services, |s| {
            inv::ServiceInput::from(s).validate()
        });
        let outcome = store::upsert_services(ctx.data_unchecked::<PgPool>(), &valid, &writer(ctx)?)
            .await
            .map_err(internal)?;
        clear_caches(ctx);
        log_write(ctx, "upsertServices", outcome.upserted, errors.len());
        Ok(payload(outcome, errors))
    }

    /// Removes devices by id (at most 1000); their services stay.
    async fn remove_devices(
        &self,
        ctx: &Context<'_>,
        input: RemoveInventoryInput,
    ) -> Result<RemoveInventoryPayload> {
        if input.ids.len() > MAX_BATCH {
            return Ok(RemoveInventoryPayload {
                removed: 0,
                user_errors: vec![too_many("ids", input.ids.len())],
            });
        }
        let removed = store::remove_devices(
            ctx.data_unchecked::<PgPool>(),
            &ids(input.ids),
            &writer(ctx)?,
        )
        .await
        .map_err(internal)?;
        clear_caches(ctx);
        log_write(ctx, "removeDevices", removed, 0);
        Ok(RemoveInventoryPayload {
            removed: i32::try_from(removed).unwrap_or(i32::MAX),
            user_errors: vec![],
        })
    }

    /// Removes services by id (at most 1000).
    async fn remove_services(
        &self,
        ctx: &Context<'_>,
        input: RemoveInventoryInput,
    ) -> Result<RemoveInventoryPayload> {
        if input.ids.len() > MAX_BATCH {
            return Ok(RemoveInventoryPayload {
                removed: 0,
                user_errors: vec![too_many("ids", input.ids.len())],
            });
        }
        let removed = store::remove_services(
            ctx.data_unchecked::<PgPool>(),
            &ids(input.ids),
            &writer(ctx)?,
        )
        .await
        .map_err(internal)?;
        clear_caches(ctx);
        log_write(ctx, "removeServices", removed, 0);
        Ok(RemoveInventoryPayload {
            removed: i32::try_from(removed).unwrap_or(i32::MAX),
            user_errors: vec![],
        })
    }
}
