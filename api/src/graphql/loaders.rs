//! Per-request DataLoaders, so nested fields cost one query per level, not per node.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::{Request, ServerResult};
use corral_projections::group_tree::{read, Node};
use sqlx::PgPool;
use uuid::Uuid;

use super::errors::internal;
use crate::metrics::Metrics;

/// Per-request loaders, with a per-request cache (so prefetched keys are not loaded again).
pub type Groups = DataLoader<GroupLoader, HashMapCache>;
/// Ancestors by group id.
pub type Ancestors = DataLoader<AncestorsLoader, HashMapCache>;
/// Children pages.
pub type Children = DataLoader<ChildrenLoader, HashMapCache>;
/// Child counts.
pub type ChildCounts = DataLoader<ChildCountLoader, HashMapCache>;
/// Capability flags by group id.
pub type Capabilities = DataLoader<CapabilitiesLoader, HashMapCache>;

/// Which of `ids` the caller may read (`group.read`), by the live tree: a lookup in the
/// caller's expanded scope, cached per tree version for the process. A global reader costs
/// nothing.
pub async fn readable(
    ctx: &async_graphql::Context<'_>,
    ids: &[Uuid],
) -> async_graphql::Result<std::collections::HashSet<Uuid>> {
    super::scope::readable(ctx, ids).await
}

/// Whether the caller may read group `g` (see [`readable`]).
pub async fn may_read(ctx: &async_graphql::Context<'_>, g: Uuid) -> async_graphql::Result<bool> {
    Ok(readable(ctx, &[g]).await?.contains(&g))
}

/// Capability flags by group id (all false for a group the worker never flagged).
pub struct CapabilitiesLoader(pub PgPool, pub Arc<Metrics>);

impl Loader<Uuid> for CapabilitiesLoader {
    type Value = corral_domain::group::GroupCapabilities;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        self.1.loader_batch("capabilities");
        let mut found = corral_projections::capabilities::by_ids(&self.0, keys)
            .await
            .map_err(internal)?;
        // Every key gets an answer, so that the cache covers it.
        Ok(keys
            .iter()
            .map(|k| (*k, found.remove(k).unwrap_or_default()))
            .collect())
    }
}

/// Groups by id.
pub struct GroupLoader(pub PgPool, pub Arc<Metrics>);

impl Loader<Uuid> for GroupLoader {
    type Value = Node;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Node>, Self::Error> {
        self.1.loader_batch("group");
        let nodes = read::by_ids(&self.0, keys).await.map_err(internal)?;
        Ok(nodes.into_iter().map(|n| (n.id, n)).collect())
    }
}

/// Ancestors (root first) by group id.
pub struct AncestorsLoader(pub PgPool, pub Arc<Metrics>);

impl Loader<Uuid> for AncestorsLoader {
    type Value = Vec<Node>;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Vec<Node>>, Self::Error> {
        self.1.loader_batch("ancestors");
        let mut found = read::ancestors(&self.0, keys).await.map_err(internal)?;
        // Every key gets an answer (a root has none), so that the cache covers it.
        Ok(keys
            .iter()
            .map(|k| (*k, found.remove(k).unwrap_or_default()))
            .collect())
    }
}

/// Child counts by parent id.
pub struct ChildCountLoader(pub PgPool, pub Arc<Metrics>);

impl Loader<Uuid> for ChildCountLoader {
    type Value = i64;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, i64>, Self::Error> {
        self.1.loader_batch("child_count");
        let found = read::child_counts(&self.0, keys).await.map_err(internal)?;
        // Leaves count 0 rather than being missing, so that the cache covers them.
        Ok(keys
            .iter()
            .map(|k| (*k, found.get(k).copied().unwrap_or(0)))
            .collect())
    }
}

/// A page of children: parent, page size (+1 to detect a next page), keyset position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChildrenKey {
    /// Parent group.
    pub parent: Uuid,
    /// Rows to fetch.
    pub limit: i64,
    /// Keyset position.
    pub after: Option<read::After>,
    /// `last`/`before`: the rows before `after`, nearest first.
    pub backward: bool,
}

/// Children pages; keys with the same page arguments are fetched in one query.
pub struct ChildrenLoader(pub PgPool, pub Arc<Metrics>);

impl Loader<ChildrenKey> for ChildrenLoader {
    type Value = Vec<Node>;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[ChildrenKey],
    ) -> Result<HashMap<ChildrenKey, Vec<Node>>, Self::Error> {
        self.1.loader_batch("children");
        type Page = (i64, Option<read::After>, bool);
        let mut by_page: HashMap<Page, Vec<Uuid>> = HashMap::new();
        for k in keys {
            by_page
                .entry((k.limit, k.after.clone(), k.backward))
                .or_default()
                .push(k.parent);
        }
        let mut out = HashMap::new();
        for ((limit, after, backward), parents) in by_page {
            let mut pages = read::children(&self.0, &parents, limit, after.as_ref(), backward)
                .await
                .map_err(internal)?;
            for parent in parents {
                let key = ChildrenKey {
                    parent,
                    limit,
                    after: after.clone(),
                    backward,
                };
                out.insert(key, pages.remove(&parent).unwrap_or_default());
            }
        }
        Ok(out)
    }
}

/// Gives every operation, over HTTP or the websocket, its own DataLoaders (and caches).
pub struct RequestLoaders {
    /// Database pool.
    pub pool: PgPool,
    /// Where batches are counted.
    pub metrics: Arc<Metrics>,
}

impl ExtensionFactory for RequestLoaders {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestLoaders {
            pool: self.pool.clone(),
            metrics: self.metrics.clone(),
        })
    }
}

#[async_trait::async_trait]
impl Extension for RequestLoaders {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // Keys requested while one level of the query resolves are batched; 250 µs gathers them
        // without adding the default 1 ms per level. Pages also prefetch (types::prefetch).
        let delay = std::time::Duration::from_micros(250);
        let (pool, m) = (&self.pool, &self.metrics);
        let request = request
            .data(super::history::HistoryCache::default())
            .data(super::scope::ReachMemo::default())
            .data(
                Groups::with_cache(
                    GroupLoader(pool.clone(), m.clone()),
                    tokio::spawn,
                    HashMapCache::default(),
                )
                .delay(delay),
            )
            .data(
                Ancestors::with_cache(
                    AncestorsLoader(pool.clone(), m.clone()),
                    tokio::spawn,
                    HashMapCache::default(),
                )
                .delay(delay),
            )
            .data(
                Children::with_cache(
                    ChildrenLoader(pool.clone(), m.clone()),
                    tokio::spawn,
                    HashMapCache::default(),
                )
                .delay(delay),
            )
            .data(
                ChildCounts::with_cache(
                    ChildCountLoader(pool.clone(), m.clone()),
                    tokio::spawn,
                    HashMapCache::default(),
                )
                .delay(delay),
            )
            .data(
                Capabilities::with_cache(
                    CapabilitiesLoader(pool.clone(), m.clone()),
                    tokio::spawn,
                    HashMapCache::default(),
                )
                .delay(delay),
            )
            .data(
                super::rules::Rules::with_cache(
                    super::rules::RuleLoader(pool.clone(), m.clone()),
                    tokio::spawn,
                    HashMapCache::default(),
                )
                .delay(delay),
            )
            .data(
                super::members::MemberGroups::with_cache(
                    super::members::MemberGroupsLoader(pool.clone(), m.clone()),
                    tokio::spawn,
                    HashMapCache::default(),
                )
                .delay(delay),
            );
        let (devices, services) = super::inventory::loaders(pool, m, delay);
        let request = request.data(devices).data(services);
        next.run(ctx, request).await
    }
}

/// Forgets what this operation's loaders cached (after a mutation changed the tree).
pub fn clear_caches(ctx: &async_graphql::Context<'_>) {
    if let Ok(memo) = ctx.data::<super::scope::ReachMemo>() {
        memo.clear();
    }
    if let Ok(l) = ctx.data::<super::rules::Rules>() {
        l.clear::<Uuid>();
    }
    if let Ok(l) = ctx.data::<super::members::MemberGroups>() {
        l.clear::<(String, corral_projections::membership::read::Mode)>();
        l.clear::<super::members::ScopedMemberKey>();
    }
    if let Ok(l) = ctx.data::<Groups>() {
        l.clear::<Uuid>();
    }
    if let Ok(l) = ctx.data::<Ancestors>() {
        l.clear::<Uuid>();
    }
    if let Ok(l) = ctx.data::<Children>() {
        l.clear::<ChildrenKey>();
    }
    if let Ok(l) = ctx.data::<ChildCounts>() {
        l.clear::<Uuid>();
    }
    if let Ok(l) = ctx.data::<Capabilities>() {
        l.clear::<Uuid>();
    }
}
