//! The inventory: `Device` and `Service`, their loaders and connections. Queries are in
//! [`query`], the feed mutations in [`mutation`].

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
    /// The groups this device belongs to, each with its reasons. EFFECTIVE adds every
    /// ancestor of a group it is a direct member of.
    #[graphql(complexity = "10 * child_complexity + 5")]
    async fn groups(
        &self,
        ctx: &Context<'_>,
        mode: Option<super::members::MembershipMode>,
    ) -> Result<Vec<super::members::GroupMembership>> {
        super::members::groups_of(ctx, &self.id.0, mode.unwrap_or_default()).await
    }
}

#[ComplexObject]
impl Service {
    /// The host device (`null` when it is not in the inventory).
    async fn device(&self, ctx: &Context<'_>) -> Result<Option<Device>> {
        ctx.data_unchecked::<Devices>()
            .load_one(self.device_id.0.clone())
            .await
    }

    /// The groups this service belongs to, each with its reasons. EFFECTIVE adds every
    /// ancestor of a group it is a direct member of.
    #[graphql(complexity = "10 * child_complexity + 5")]
    async fn groups(
        &self,
        ctx: &Context<'_>,
        mode: Option<super::members::MembershipMode>,
    ) -> Result<Vec<super::members::GroupMembership>> {
        super::members::groups_of(ctx, &self.id.0, mode.unwrap_or_default()).await
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
    }
    if let Ok(l) = ctx.data::<Services>() {
        l.clear::<String>();
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
                ctx.data::<crate::graphql::budget::DbBudget>()?
                    .run_if(filter.is_some(), pool, move |c| {
                        Box::pin(async move {
                            let f = filter.as_deref();
                            if services {
                                store::count_services(c, f).await
                            } else {
                                store::count_devices(c, f).await
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

        #[doc = concat!("A page of ", $what, "s, in id order.")]
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

pub(crate) fn lazy_count(filter: Option<SqlFragment>, services: bool) -> LazyCount {
    LazyCount {
        filter: filter.map(Arc::new),
        count: Arc::new(OnceCell::new()),
        services,
    }
}
