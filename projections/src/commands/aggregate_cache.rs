//! Aggregates the executor used recently, kept in memory so that a command usually needs no
//! load. The executor trusts an entry only as far as the commit's optimistic check and
//! re-checks answers that rest on it alone (see `CommandExecutor::execute`).

/// Most aggregates kept in memory per executor; the cache is emptied when it is full.
pub const CACHE_CAPACITY: usize = 10_000;

#[derive(Clone)]
pub(crate) struct CachedAggregate<A> {
    pub(crate) aggregate: A,
    pub(crate) version: u64,
    pub(crate) snapshot_version: u64,
}

pub(crate) struct AggregateCache<A> {
    entries: std::sync::Mutex<std::collections::HashMap<String, CachedAggregate<A>>>,
}

impl<A: Clone> AggregateCache<A> {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, CachedAggregate<A>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: &str) -> Option<CachedAggregate<A>> {
        self.lock().get(id).cloned()
    }

    /// Keeps `entry` unless a newer version of the aggregate is cached already (a slower
    /// task finishing after a faster one must not put an older state back).
    pub(crate) fn put(&self, id: &str, entry: CachedAggregate<A>) {
        let mut entries = self.lock();
        if entries.get(id).is_some_and(|e| e.version > entry.version) {
            return;
        }
        if entries.len() >= CACHE_CAPACITY && !entries.contains_key(id) {
            entries.clear();
        }
        entries.insert(id.to_string(), entry);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

impl<A> Default for AggregateCache<A> {
    fn default() -> Self {
        Self {
            entries: Default::default(),
        }
    }
}
