//! The inventory: `Device` and `Service`, their loaders and connections. Queries are in
//! [`query`], the feed mutations in [`mutation`].
//!
//! Visibility: a caller who may read every group (a global `group.read`) sees every device
//! and service, with exactly the queries of old. A scoped reader sees a device or service
//! only when it is a STATIC member (explicitly added, not rule-derived) of a group in the
//! subtree of one of its `group.read` roots; rule-derived membership never widens access.
//! Every way to a record follows that rule: `device`/`service` are null, `devices`/`services`
//! leave the others out in SQL (so `totalCount`, pages and cursors count only what the caller
//! sees), `Service.device` is null, and a group's member page lists the member's id in
//! `missingMemberIds` instead of an edge. Use [`device`], [`devices`], [`service`] and
//! [`services`], never the loaders' plain `String` keys, to read records for a caller.

pub mod mutation;
pub mod query;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use async_graphql::{ComplexObject, Context, Json, Result, SimpleObject, ID};
use chrono::{DateTime, Utc};
use corral_domain::rule::SqlFragment;
use corral_projections::group_tree::read::After;
use corral_projections::inventory::{self as store, Count, DeviceRow, ServiceRow};
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::errors::internal;
use super::types::{encode_cursor, PageInfo};
use crate::metrics::Metrics;

pub use mutation::InventoryMutation;
pub use query::InventoryQuery;

/// A device as discovery reports it.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Device {
    /// The source's id.
    pub id: ID,
    /// Host name.
    pub hostname: Option<String>,
    /// IP address (v4 or v6, canonical form).
    pub ip: Option<String>,
    /// MAC address, lower-case `aa:bb:cc:dd:ee:ff`.
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
    /// Tags: a JSON object of lower-case keys to strings (`""` for a bare tag).
    pub tags: Json<BTreeMap<String, String>>,
    /// Metadata: a JSON object of lower-case keys to strings.
    pub metadata: Json<BTreeMap<String, String>>,
    /// Discovery sources that saw it.
    pub discovery_sources: Vec<String>,
    /// Whether it is reachable.
    pub is_available: Option<bool>,
    /// First seen (the earliest ever reported).
    pub first_seen: Option<DateTime<Utc>>,
    /// Last seen.
    pub last_seen: Option<DateTime<Utc>>,
    /// When Corral last stored a change to it.
    pub updated_at: DateTime<Utc>,
}

impl From<DeviceRow> for Device {
    fn from(r: DeviceRow) -> Self {
        let d = r.device;
        Self {
            id: ID(d.id),
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
            tags: Json(d.tags),
            metadata: Json(d.metadata),
            discovery_sources: d.discovery_sources,
            is_available: d.is_available,
            first_seen: d.first_seen,
            last_seen: d.last_seen,
            updated_at: r.updated_at,
        }
    }
}

/// A service on a device.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Service {
    /// The source's id (by default `<deviceId>/<type>/<name>`).
    pub id: ID,
    /// The host device's id.
    pub device_id: ID,
    /// Service type, e.g. `http`.
    #[graphql(name = "type")]
    pub service_type: String,
    /// Name.
    pub name: String,
    /// Port.
    pub port: Option<i32>,
    /// Last reported status.
    pub status: Option<String>,
    /// Tags: a JSON object of lower-case keys to strings.
    pub tags: Json<BTreeMap<String, String>>,
    /// Metadata: a JSON object of lower-case keys to strings.
    pub metadata: Json<BTreeMap<String, String>>,
    /// Last seen.
    pub last_seen: Option<DateTime<Utc>>,
    /// When Corral last stored a change to it.
    pub updated_at: DateTime<Utc>,
}

impl From<ServiceRow> for Service {
    fn from(r: ServiceRow) -> Self {
        let s = r.service;
        Self {
            id: ID(s.id),
            device_id: ID(s.device_id),
            service_type: s.service_type,
            name: s.name,
            port: s.port,
            status: s.status,
            tags: Json(s.tags),
            metadata: Json(s.metadata),
            last_seen: s.last_seen,
            updated_at: r.updated_at,
        }
    }
}

// async-graphql takes one `#[ComplexObject]` impl per type: other areas' fields go here too.
#[ComplexObject]
impl Device {
    /// The global id (for `node`/`nodes`); `id` stays the source's id.
    pub(crate) async fn node_id(&self) -> ID {
        super::node::global_id("Device", &self.id)
    }

    /// The groups this device belongs to, each with its reasons. EFFECTIVE adds every
    /// ancestor of a group it is a direct member of. A scoped reader gets only the groups it
    /// may read (a group outside its scope is left out, as if the device were not in it).
    ///
    /// With `asOf` or `atPosition`, the groups it was in then, with the reasons of then (its
    /// static, rule and exclude entries folded from the log), following the tree as it was
    /// then (`tree: THEN`, the default) or as it is now (`tree: NOW`).
    #[graphql(complexity = "10 * child_complexity + 5")]
    async fn groups(
        &self,
        ctx: &Context<'_>,
        mode: Option<super::members::MembershipMode>,
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        at_position: Option<super::scalars::Position>,
        tree: Option<super::history::MembershipTree>,
    ) -> Result<Vec<super::members::GroupMembership>> {
        let position = super::history::requested_position(ctx, as_of, at_position).await?;
        let tree = super::history::tree_needs_position(position, tree)?;
        let mode = mode.unwrap_or_default();
        match position {
            None => super::members::groups_of(ctx, &self.id.0, mode).await,
            Some(p) => super::history::member_groups_at(ctx, &self.id.0, mode, p, tree).await,
        }
    }
}

#[ComplexObject]
impl Service {
    /// The global id (for `node`/`nodes`); `id` stays the source's id.
    pub(crate) async fn node_id(&self) -> ID {
        super::node::global_id("Service", &self.id)
    }

    /// The host device (`null` when it is not in the inventory, or when the caller may not
    /// see it: a scoped reader sees a device only when it is a static member of a group in
    /// its scope, whatever the service's own memberships).
    async fn device(&self, ctx: &Context<'_>) -> Result<Option<Device>> {
        device(ctx, self.device_id.0.clone()).await
    }

    /// The groups this service belongs to, each with its reasons. EFFECTIVE adds every
    /// ancestor of a group it is a direct member of. A scoped reader gets only the groups it
    /// may read (a group outside its scope is left out, as if the service were not in it).
    ///
    /// With `asOf` or `atPosition`, the groups it was in then, with the reasons of then (its
    /// static, rule and exclude entries folded from the log), following the tree as it was
    /// then (`tree: THEN`, the default) or as it is now (`tree: NOW`).
    #[graphql(complexity = "10 * child_complexity + 5")]
    async fn groups(
        &self,
        ctx: &Context<'_>,
        mode: Option<super::members::MembershipMode>,
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        at_position: Option<super::scalars::Position>,
        tree: Option<super::history::MembershipTree>,
    ) -> Result<Vec<super::members::GroupMembership>> {
        let position = super::history::requested_position(ctx, as_of, at_position).await?;
        let tree = super::history::tree_needs_position(position, tree)?;
        let mode = mode.unwrap_or_default();
        match position {
            None => super::members::groups_of(ctx, &self.id.0, mode).await,
            Some(p) => super::history::member_groups_at(ctx, &self.id.0, mode, p, tree).await,
        }
    }
}

/// Devices by id, per request.
pub type Devices = DataLoader<DeviceLoader, HashMapCache>;
/// Services by id, per request.
pub type Services = DataLoader<ServiceLoader, HashMapCache>;

/// Loads live devices by id.
pub struct DeviceLoader(pub PgPool, pub Arc<Metrics>);

impl Loader<String> for DeviceLoader {
    type Value = Device;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Device>, Self::Error> {
        self.1.loader_batch("device");
        let rows = store::devices_by_ids(&self.0, keys)
            .await
            .map_err(internal)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.device.id.clone(), Device::from(r)))
            .collect())
    }
}

/// Loads live services by id.
pub struct ServiceLoader(pub PgPool, pub Arc<Metrics>);

impl Loader<String> for ServiceLoader {
    type Value = Service;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Service>, Self::Error> {
        self.1.loader_batch("service");
        let rows = store::services_by_ids(&self.0, keys)
            .await
            .map_err(internal)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.service.id.clone(), Service::from(r)))
            .collect())
    }
}

/// A device or service id as a scoped reader asks for it: the loaders answer it only when
/// the record is visible within the subtrees of the roots (see the module's doc).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VisibleId(pub String, pub super::scope::ScopeRef);

/// Splits a batch of [`VisibleId`] keys by their roots (one set per request in practice).
fn by_roots(keys: &[VisibleId]) -> HashMap<super::scope::ScopeRef, Vec<String>> {
    let mut out: HashMap<super::scope::ScopeRef, Vec<String>> = HashMap::new();
    for k in keys {
        out.entry(k.1.clone()).or_default().push(k.0.clone());
    }
    out
}

impl Loader<VisibleId> for DeviceLoader {
    type Value = Device;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[VisibleId]) -> Result<HashMap<VisibleId, Device>, Self::Error> {
        self.1.loader_batch("device");
        let mut out = HashMap::new();
        for (roots, ids) in by_roots(keys) {
            let rows = store::visible_devices_by_ids(&self.0, &ids, &roots)
                .await
                .map_err(internal)?;
            out.extend(rows.into_iter().map(|r| {
                (
                    VisibleId(r.device.id.clone(), roots.clone()),
                    Device::from(r),
                )
            }));
        }
        Ok(out)
    }
}

impl Loader<VisibleId> for ServiceLoader {
    type Value = Service;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[VisibleId]) -> Result<HashMap<VisibleId, Service>, Self::Error> {
        self.1.loader_batch("service");
        let mut out = HashMap::new();
        for (roots, ids) in by_roots(keys) {
            let rows = store::visible_services_by_ids(&self.0, &ids, &roots)
                .await
                .map_err(internal)?;
            out.extend(rows.into_iter().map(|r| {
                (
                    VisibleId(r.service.id.clone(), roots.clone()),
                    Service::from(r),
                )
            }));
        }
        Ok(out)
    }
}

/// The record `id` of `loader`, when it exists and the caller may see it.
async fn visible_one<L, V>(
    ctx: &Context<'_>,
    loader: &DataLoader<L, HashMapCache>,
    id: String,
) -> Result<Option<V>>
where
    L: Loader<String, Value = V, Error = async_graphql::Error>
        + Loader<VisibleId, Value = V, Error = async_graphql::Error>,
    V: Clone + Send + Sync + 'static,
{
    match super::scope::read_roots(ctx).await? {
        None => loader.load_one(id).await,
        Some(r) if r.is_empty() => Ok(None),
        Some(r) => {
            loader
                .load_one(VisibleId(id, super::scope::ScopeRef(r)))
                .await
        }
    }
}

/// The records of `ids` of `loader` that exist and the caller may see, by id.
async fn visible_many<L, V>(
    ctx: &Context<'_>,
    loader: &DataLoader<L, HashMapCache>,
    ids: Vec<String>,
) -> Result<HashMap<String, V>>
where
    L: Loader<String, Value = V, Error = async_graphql::Error>
        + Loader<VisibleId, Value = V, Error = async_graphql::Error>,
    V: Clone + Send + Sync + 'static,
{
    match super::scope::read_roots(ctx).await? {
        None => loader.load_many(ids).await,
        Some(r) if r.is_empty() => Ok(HashMap::new()),
        Some(r) => Ok(loader
            .load_many(
                ids.into_iter()
                    .map(|id| VisibleId(id, super::scope::ScopeRef(r.clone()))),
            )
            .await?
            .into_iter()
            .map(|(k, v)| (k.0, v))
            .collect()),
    }
}

/// The device `id`, when it exists and the caller may see it.
pub(crate) async fn device(ctx: &Context<'_>, id: String) -> Result<Option<Device>> {
    visible_one(ctx, ctx.data_unchecked::<Devices>(), id).await
}

/// The devices of `ids` that exist and the caller may see, by id.
pub(crate) async fn devices(
    ctx: &Context<'_>,
    ids: Vec<String>,
) -> Result<HashMap<String, Device>> {
    visible_many(ctx, ctx.data_unchecked::<Devices>(), ids).await
}

/// The service `id`, when it exists and the caller may see it.
pub(crate) async fn service(ctx: &Context<'_>, id: String) -> Result<Option<Service>> {
    visible_one(ctx, ctx.data_unchecked::<Services>(), id).await
}

/// The services of `ids` that exist and the caller may see, by id.
pub(crate) async fn services(
    ctx: &Context<'_>,
    ids: Vec<String>,
) -> Result<HashMap<String, Service>> {
    visible_many(ctx, ctx.data_unchecked::<Services>(), ids).await
}

/// This request's inventory loaders, batching keys requested within `delay`.
pub fn loaders(
    pool: &PgPool,
    metrics: &Arc<Metrics>,
    delay: std::time::Duration,
) -> (Devices, Services) {
    let devices = Devices::with_cache(
        DeviceLoader(pool.clone(), metrics.clone()),
        tokio::spawn,
        HashMapCache::default(),
    )
    .delay(delay);
    let services = Services::with_cache(
        ServiceLoader(pool.clone(), metrics.clone()),
        tokio::spawn,
        HashMapCache::default(),
    )
    .delay(delay);
    (devices, services)
}

/// Forgets what this operation's inventory loaders cached (after a write).
pub fn clear_caches(ctx: &Context<'_>) {
    if let Ok(l) = ctx.data::<Devices>() {
        l.clear::<String>();
        l.clear::<VisibleId>();
    }
    if let Ok(l) = ctx.data::<Services>() {
        l.clear::<String>();
        l.clear::<VisibleId>();
    }
}

/// A cursor for an inventory id (the group cursor format with a nil uuid).
pub(crate) fn cursor(id: &str) -> String {
    encode_cursor(&After {
        key: id.to_string(),
        id: uuid::Uuid::nil(),
    })
}

pub(crate) fn page_info<T>(
    edges: &[T],
    cursor: impl Fn(&T) -> &String,
    has_next_page: bool,
) -> PageInfo {
    PageInfo {
        has_next_page,
        has_previous_page: false,
        start_cursor: edges.first().map(|e| cursor(e).clone()),
        end_cursor: edges.last().map(|e| cursor(e).clone()),
    }
}

/// What a connection's `totalCount` counts, computed once and only when asked for.
#[derive(Clone)]
pub struct LazyCount {
    filter: Option<Arc<SqlFragment>>,
    count: Arc<OnceCell<Count>>,
    services: bool,
    /// The caller's read roots (`None`: everything): only visible records count.
    roots: Option<Arc<[Uuid]>>,
}

impl LazyCount {
    async fn get(&self, ctx: &Context<'_>) -> Result<Count> {
        let pool = ctx.data_unchecked::<PgPool>();
        let services = self.services;
        let count = self
            .count
            .get_or_try_init(|| async {
                // A filter's count scans what the caller chose: within the budget.
                let filter = self.filter.clone();
                let roots = self.roots.clone();
                ctx.data::<crate::graphql::budget::DbBudget>()?
                    .run_if(filter.is_some(), pool, move |c| {
                        Box::pin(async move {
                            let (f, r) = (filter.as_deref(), roots.as_deref());
                            if services {
                                store::count_services_within(c, f, r).await
                            } else {
                                store::count_devices_within(c, f, r).await
                            }
                        })
                    })
                    .await
            })
            .await?;
        Ok(*count)
    }
}

macro_rules! connection {
    ($conn:ident, $edge:ident, $node:ident, $what:literal) => {
        #[doc = concat!("One ", $what, " in a page.")]
        #[derive(SimpleObject, Clone, Debug)]
        pub struct $edge {
            /// Opaque position of this edge, for `after`.
            pub cursor: String,
            #[doc = concat!("The ", $what, ".")]
            pub node: $node,
        }

        #[doc = concat!("A page of ", $what, "s, in id order (for a scoped reader, only those it may see: see `Query.", $what, "s`).")]
        #[derive(SimpleObject, Clone)]
        #[graphql(complex)]
        pub struct $conn {
            #[doc = concat!("The ", $what, "s in this page.")]
            pub edges: Vec<$edge>,
            /// Where this page stands.
            pub page_info: PageInfo,
            #[graphql(skip)]
            pub count: LazyCount,
        }

        #[ComplexObject]
        impl $conn {
            /// Matches in all pages, counted up to 100,000 (see `totalCountExact`).
            async fn total_count(&self, ctx: &Context<'_>) -> Result<i64> {
                Ok(self.count.get(ctx).await?.total)
            }

            /// False when more than 100,000 match: `totalCount` then says 100,000.
            async fn total_count_exact(&self, ctx: &Context<'_>) -> Result<bool> {
                Ok(self.count.get(ctx).await?.exact)
            }
        }
    };
}

connection!(DeviceConnection, DeviceEdge, Device, "device");
connection!(ServiceConnection, ServiceEdge, Service, "service");

pub(crate) fn lazy_count(
    filter: Option<SqlFragment>,
    services: bool,
    roots: Option<Arc<[Uuid]>>,
) -> LazyCount {
    LazyCount {
        filter: filter.map(Arc::new),
        count: Arc::new(OnceCell::new()),
        services,
        roots,
    }
}
