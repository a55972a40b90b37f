//! GraphQL subscriptions over graphql-transport-ws (`/graphql/ws`).
//!
//! Both read the public log by position: a replay and the live tail are the same loop (read
//! what follows the last position delivered, then wait for the sequencer's next batch), so
//! there is no switch-over at which an event could be missed or delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, InputObject, Json, Result, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use corral_projections::history::{
    self, MembershipChange as HistoryChange, MembershipFold, Source as HistorySource,
};
use corral_projections::public_log::{self, LogEntry, LogFilter};
use corral_projections::StoreError;
use futures::Stream;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{watch, OnceCell};
use uuid::Uuid;

use super::errors::{coded, internal};
use super::scalars::Position;
use crate::audit::{MAX_FILTER_CHARS, MAX_FILTER_TYPES};
use crate::auth::Actor;
use crate::error_codes::ErrorCode;

/// Entries read per query while replaying (a Membership event is up to ~260 KB).
const BATCH: i64 = 100;
/// How often the process's log watcher looks at the head when no notification came.
const POLL: Duration = Duration::from_secs(1);

/// Most subscriptions one websocket connection may hold at once.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 16;

/// The subscriptions a websocket connection holds (inserted at `connection_init`).
#[derive(Clone, Default)]
pub struct SubscriptionSlots(Arc<std::sync::atomic::AtomicUsize>);

/// One taken slot; dropping it (the stream ends or the client stops it) frees it.
pub struct Slot(Option<SubscriptionSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = &self.0 {
            slots.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Takes a slot of the connection, if it has a limit (streams run outside a websocket, like
/// the benchmark's, have none).
fn take_slot(ctx: &Context<'_>) -> Result<Slot> {
    let Some(slots) = ctx.data_opt::<SubscriptionSlots>() else {
        return Ok(Slot(None));
    };
    let held = slots.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let slot = Slot(Some(slots.clone()));
    if held >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
        return Err(coded(
            ErrorCode::TooManySubscriptions,
            format!("at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection"),
        ));
    }
    Ok(slot)
}

/// Connections the subscriptions of one process share.
pub const STREAM_POOL_SIZE: u32 = 8;

/// What the subscriptions of a process share, made on first use: a small pool of their own
/// (a burst of commands does not delay subscribers, and many subscribers cannot starve
/// commands and queries of connections) and the view of the log head (one LISTEN connection).
#[derive(Clone, Default)]
pub struct LogHead(Arc<OnceCell<(PgPool, watch::Receiver<i64>)>>);

impl LogHead {
    /// The subscriptions' pool (connecting as `pool` does) and the head watch.
    async fn get(&self, pool: &PgPool) -> (PgPool, watch::Receiver<i64>) {
        self.0
            .get_or_init(|| async {
                let options = pool.connect_options().as_ref().clone();
                let streams = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(STREAM_POOL_SIZE)
                    .connect_lazy_with(options);
                let head = public_log::watch_head(streams.clone(), POLL);
                (streams, head)
            })
            .await
            .clone()
    }
}

/// Refuses unless the caller's role may use subscription `field` (the policy extension checks
/// query and mutation fields as they resolve; a subscription's stream is made here).
fn authorize(ctx: &Context<'_>, field: &str) -> Result<()> {
    let object = crate::policy::object_of("Subscription", field);
    let allowed = match (ctx.data::<Arc<casbin::Enforcer>>(), ctx.data::<Actor>()) {
        (Ok(enforcer), Ok(actor)) => crate::policy::allowed(enforcer, &actor.role, &object),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(coded(
            ErrorCode::Forbidden,
            format!("not allowed to call {object}"),
        ))
    }
}

/// Which events to stream. Every condition given must hold.
#[derive(InputObject, Default, Debug, Clone)]
pub struct EventStreamFilter {
    /// Only these aggregate types (`Group`, `Membership`, ...).
    pub aggregate_types: Option<Vec<String>>,
    /// Only these aggregates (for Membership, the group's id).
    pub aggregate_ids: Option<Vec<ID>>,
    /// Only these event types.
    pub event_types: Option<Vec<String>>,
}

impl EventStreamFilter {
    fn into_filter(self) -> Result<LogFilter> {
        let ids: Vec<String> = self
            .aggregate_ids
            .unwrap_or_default()
            .into_iter()
            .map(|id| id.0)
            .collect();
        let types = self.aggregate_types.unwrap_or_default();
        let events = self.event_types.unwrap_or_default();
        for (field, list) in [
            ("aggregateTypes", &types),
            ("aggregateIds", &ids),
            ("eventTypes", &events),
        ] {
            if list.len() > MAX_FILTER_TYPES
                || list
                    .iter()
                    .any(|s| s.is_empty() || s.len() > MAX_FILTER_CHARS)
            {
                return Err(coded(
                    ErrorCode::BadUserInput,
                    format!(
                        "filter.{field}: at most {MAX_FILTER_TYPES} values of 1-{MAX_FILTER_CHARS} characters"
                    ),
                ));
            }
        }
        Ok(LogFilter {
            aggregate_types: types,
            aggregate_ids: ids,
            event_types: events,
            ..Default::default()
        })
    }
}

/// One event of the log: the same envelope as on NATS.
#[derive(SimpleObject, Clone, Debug)]
pub struct LogEvent {
    /// Its position in the commit-ordered log (gapless over the unfiltered log).
    pub position: Position,
    /// Unique id (NATS `Nats-Msg-Id`).
    pub event_id: ID,
    /// `Group`, `Membership`, ...
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: ID,
    /// The aggregate's version after the event.
    pub version: i64,
    /// The event type.
    pub event_type: String,
    /// The stored payload's schema version.
    pub event_version: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Actor, source, correlation and causation ids, reason.
    pub metadata: Json<Value>,
    /// The stored payload, `{ "<eventType>": { ... } }`.
    pub payload: Json<Value>,
    /// Its link in the hash chain (hex).
    pub hash: String,
}

impl From<LogEntry> for LogEvent {
    fn from(entry: LogEntry) -> Self {
        let e = entry.event;
        Self {
            position: Position(entry.position),
            event_id: ID(e.event_id.to_string()),
            aggregate_type: e.aggregate_type,
            aggregate_id: ID(e.aggregate_id),
            version: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            recorded_at: e.recorded_at,
            metadata: Json(e.metadata),
            payload: Json(e.payload),
            hash: hex::encode(entry.hash),
        }
    }
}

/// Follows the log from `after` (exclusive): batches of entries passing `filter`, forever.
/// Between batches it waits for the head to move (or `POLL`); a database error ends the
/// stream with that error, so the client can resubscribe from its last position.
pub(crate) fn follow(
    pool: PgPool,
    head: watch::Receiver<i64>,
    filter: LogFilter,
    after: i64,
) -> impl Stream<Item = Result<LogEntry, StoreError>> {
    struct State {
        pool: PgPool,
        head: watch::Receiver<i64>,
        filter: LogFilter,
        after: i64,
        buffer: VecDeque<LogEntry>,
        failed: bool,
    }
    let state = State {
        pool,
        head,
        filter,
        after,
        buffer: VecDeque::new(),
        failed: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.failed {
            return None;
        }
        loop {
            if let Some(entry) = s.buffer.pop_front() {
                return Some((Ok(entry), s));
            }
            // The head as the watcher last saw it: everything up to it is committed. Read from
            // the database only when the watcher has not seen as far as we are (it starts at 0).
            let watched = *s.head.borrow_and_update();
            let read = async {
                let mut conn = s.pool.acquire().await?;
                let top = if watched > s.after {
                    watched
                } else {
                    public_log::head(&mut conn).await?.0
                };
                let entries =
                    public_log::read(&mut conn, s.after, Some(top), &s.filter, BATCH).await?;
                Ok::<_, StoreError>((top, entries))
            };
            match read.await {
                Err(err) => {
                    s.failed = true;
                    return Some((Err(err), s));
                }
                Ok((top, entries)) => {
                    let full = entries.len() as i64 == BATCH;
                    s.after = match entries.last() {
                        Some(last) if full => last.position,
                        // Everything up to `top` was read (a filter may have passed none).
                        _ => top.max(s.after),
                    };
                    s.buffer.extend(entries);
                    // Idle: wait for the head to move (the process's one watcher polls the
                    // log for everyone, so idle subscriptions cost no queries).
                    if s.buffer.is_empty() && s.head.changed().await.is_err() {
                        s.failed = true;
                        return Some((Err(StoreError::Data("the log watcher stopped".into())), s));
                    }
                }
            }
        }
    })
}

/// The `Subscription` root.
#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every event from `fromPosition` on (inclusive; omitted: only new events), in position
    /// order, then live as they are sequenced: no gap and no duplicate between the replay and
    /// the live tail. To resume, pass the last position you processed plus one. Auditors and
    /// admins (the stream carries actors and reasons).
    async fn events(
        &self,
        ctx: &Context<'_>,
        from_position: Option<Position>,
        filter: Option<EventStreamFilter>,
    ) -> Result<impl Stream<Item = Result<LogEvent>>> {
        authorize(ctx, "events")?;
        let slot = take_slot(ctx)?;
        let filter = filter.unwrap_or_default().into_filter()?;
        let (pool, head) = ctx
            .data_unchecked::<LogHead>()
            .get(ctx.data_unchecked::<PgPool>())
            .await;
        let after = match from_position {
            Some(Position(p)) => (p - 1).max(0),
            None => {
                let mut conn = pool.acquire().await.map_err(internal)?;
                public_log::head(&mut conn).await.map_err(internal)?.0
            }
        };
        Ok(futures::StreamExt::map(
            follow(pool, head, filter, after),
            move |item| {
                let _held = &slot;
                item.map(LogEvent::from).map_err(internal)
            },
        ))
    }

    /// Members entering and leaving a group, from now on: its direct membership, or with
    /// `includeDescendants` its effective membership (a member enters when the first group of
    /// the subtree holds it directly and leaves when the last one stops), including whole
    /// descendants moving in or out. Each change names the group it happened in and the
    /// source. Watches at most 500,000 membership entries.
    async fn membership_changes(
        &self,
        ctx: &Context<'_>,
        group_id: ID,
        include_descendants: Option<bool>,
    ) -> Result<impl Stream<Item = Result<MembershipChange>>> {
        authorize(ctx, "membershipChanges")?;
        let slot = take_slot(ctx)?;
        let group = group_id
            .parse::<Uuid>()
            .map_err(|_| coded(ErrorCode::BadUserInput, "groupId is not a group id"))?;
        let stream = membership_stream(ctx, group, include_descendants.unwrap_or(false)).await?;
        Ok(futures::StreamExt::map(stream, move |item| {
            let _held = &slot;
            item
        }))
    }

    /// A sweep run's progress: its state now, then each change (status, hosts done), ending
    /// after the run has ended. Admins (`Sweep.sweepProgress`).
    async fn sweep_progress(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
    ) -> Result<impl Stream<Item = Result<super::sweeps::SweepProgress>>> {
        authorize(ctx, "sweepProgress")?;
        let slot = take_slot(ctx)?;
        let stream = super::sweeps::progress_stream(ctx, &run_id).await?;
        Ok(futures::StreamExt::map(stream, move |item| {
            let _held = &slot;
            item
        }))
    }
}

/// Whether a member entered or left.
#[derive(async_graphql::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChangeKind {
    /// It became a member.
    Entered,
    /// It stopped being one.
    Left,
}

/// A member entering or leaving a group's membership.
#[derive(SimpleObject, Clone, Debug)]
pub struct MembershipChange {
    /// The position of the event that caused it.
    pub position: Position,
    /// When that event was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Entered or left.
    pub change: MembershipChangeKind,
    /// The device or service id.
    pub member_id: String,
    /// `STATIC` or `RULE`: how it is (ENTERED) or was (LEFT) a direct member of `groupId`.
    pub source: super::rules::MembershipSource,
    /// The group whose direct membership changed: the group subscribed to or, with
    /// `includeDescendants`, the descendant through which the member entered or left.
    pub group_id: ID,
    /// Why: the rule evaluation's cause (`rule_changed`, `inventory:<id>`, ...), `moved` when
    /// a whole descendant moved in or out, or null for a direct edit.
    pub cause: Option<String>,
}

/// The state a `membershipChanges` subscription keeps: the entries of every watched group and,
/// per member, how many of them hold it directly (it is a member while that is above 0).
struct MembershipWatch {
    root: Uuid,
    descendants: bool,
    groups: HashMap<Uuid, MembershipFold>,
    parents: HashMap<Uuid, Uuid>,
    holders: HashMap<String, u32>,
    /// The watched group was deleted: the stream ends after its last changes.
    ended: bool,
}

fn change(
    entry: &LogEntry,
    kind: MembershipChangeKind,
    member: &str,
    source: HistorySource,
    group: Uuid,
    cause: Option<String>,
) -> MembershipChange {
    MembershipChange {
        position: Position(entry.position),
        recorded_at: entry.event.recorded_at,
        change: kind,
        member_id: member.to_string(),
        source: super::rules::MembershipSource::from_code(source.code()),
        group_id: ID(group.to_string()),
        cause,
    }
}

/// One change per `(member, source, group)`, all for the same cause.
fn changes(
    entry: &LogEntry,
    kind: MembershipChangeKind,
    members: Vec<(String, HistorySource, Uuid)>,
    cause: &str,
) -> Vec<MembershipChange> {
    members
        .into_iter()
        .map(|(member, source, group)| {
            change(entry, kind, &member, source, group, Some(cause.into()))
        })
        .collect()
}

impl MembershipWatch {
    /// Adds groups (with their folded entries); returns the members that entered.
    fn add_groups(
        &mut self,
        folds: Vec<(Uuid, Option<Uuid>, MembershipFold)>,
    ) -> Vec<(String, HistorySource, Uuid)> {
        let mut entered = vec![];
        for (group, parent, fold) in folds {
            for (id, source, _) in fold.direct(None) {
                let n = self.holders.entry(id.to_string()).or_insert(0);
                *n += 1;
                if *n == 1 {
                    entered.push((id.to_string(), source, group));
                }
            }
            if let Some(parent) = parent {
                self.parents.insert(group, parent);
            }
            self.groups.insert(group, fold);
        }
        entered
    }

    /// Removes `group` and every watched group below it; returns the members that left.
    fn remove_subtree(&mut self, group: Uuid) -> Vec<(String, HistorySource, Uuid)> {
        let below = |mut g: Uuid, parents: &HashMap<Uuid, Uuid>| loop {
            if g == group {
                return true;
            }
            match parents.get(&g) {
                Some(p) => g = *p,
                None => return false,
            }
        };
        let gone: Vec<Uuid> = self
            .groups
            .keys()
            .copied()
            .filter(|g| below(*g, &self.parents))
            .collect();
        let mut left = vec![];
        for g in gone {
            self.parents.remove(&g);
            let Some(fold) = self.groups.remove(&g) else {
                continue;
            };
            for (id, source, _) in fold.direct(None) {
                if let Some(n) = self.holders.get_mut(id) {
                    *n -= 1;
                    if *n == 0 {
                        self.holders.remove(id);
                        left.push((id.to_string(), source, g));
                    }
                }
            }
        }
        left
    }

    /// Applies one log entry; returns the changes it caused.
    async fn apply(
        &mut self,
        pool: &PgPool,
        entry: &LogEntry,
    ) -> Result<Vec<MembershipChange>, StoreError> {
        let e = &entry.event;
        let Ok(id) = e.aggregate_id.parse::<Uuid>() else {
            return Ok(vec![]);
        };
        let body = e.body();
        let mut out = vec![];
        if e.aggregate_type == "Membership" {
            let Some(fold) = self.groups.get_mut(&id) else {
                return Ok(out);
            };
            let Some(parsed) = HistoryChange::parse(&e.event_type, body) else {
                return Ok(out);
            };
            let cause = body
                .get("cause")
                .and_then(Value::as_str)
                .map(str::to_string);
            let ids: Vec<String> = match &parsed {
                HistoryChange::Added(_, ids)
                | HistoryChange::Removed(_, ids)
                | HistoryChange::Excluded(ids)
                | HistoryChange::Unexcluded(ids) => ids.clone(),
            };
            let before: Vec<Option<HistorySource>> =
                ids.iter().map(|m| fold.direct_source(m)).collect();
            fold.apply(parsed, e.recorded_at);
            for (member, was) in ids.iter().zip(before) {
                match (was, fold.direct_source(member)) {
                    (None, Some(now)) => {
                        let n = self.holders.entry(member.clone()).or_insert(0);
                        *n += 1;
                        if *n == 1 {
                            out.push(change(
                                entry,
                                MembershipChangeKind::Entered,
                                member,
                                now,
                                id,
                                cause.clone(),
                            ));
                        }
                    }
                    (Some(was), None) => {
                        if let Some(n) = self.holders.get_mut(member) {
                            *n -= 1;
                            if *n == 0 {
                                self.holders.remove(member);
                                out.push(change(
                                    entry,
                                    MembershipChangeKind::Left,
                                    member,
                                    was,
                                    id,
                                    cause.clone(),
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
            return Ok(out);
        }
        if e.aggregate_type == "Group" && e.event_type == "GroupDeleted" && id == self.root {
            // The group itself is gone: every member leaves, and the stream ends.
            self.ended = true;
            out.extend(changes(
                entry,
                MembershipChangeKind::Left,
                self.remove_subtree(id),
                "deleted",
            ));
            return Ok(out);
        }
        if e.aggregate_type != "Group" || !self.descendants || id == self.root {
            return Ok(out);
        }
        let parent_of = |key: &str| {
            body.get(key)
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Uuid>().ok())
        };
        match e.event_type.as_str() {
            "GroupCreated" => {
                if let Some(parent) = parent_of("parent_id").filter(|p| self.groups.contains_key(p))
                {
                    self.add_groups(vec![(id, Some(parent), MembershipFold::default())]);
                }
            }
            "GroupDeleted" if self.groups.contains_key(&id) => {
                // Gone from the tree at once (as live and historical reads have it); the purge
                // events that follow concern a group no longer watched.
                out.extend(changes(
                    entry,
                    MembershipChangeKind::Left,
                    self.remove_subtree(id),
                    "deleted",
                ));
            }
            "GroupMoved" => {
                let Some(parent) = parent_of("new_parent_id") else {
                    return Ok(out);
                };
                let inside = self.groups.contains_key(&parent);
                let was = self.groups.contains_key(&id);
                if was && !inside {
                    out.extend(changes(
                        entry,
                        MembershipChangeKind::Left,
                        self.remove_subtree(id),
                        "moved",
                    ));
                } else if was {
                    self.parents.insert(id, parent);
                } else if inside {
                    // A subtree moved in: its members as they are at this position.
                    let mut conn = pool.acquire().await?;
                    let tree = history::tree_at(&mut conn, entry.position).await?;
                    let subtree = tree.subtree(id);
                    let mut folds =
                        history::membership_folds(&mut conn, &subtree, entry.position).await?;
                    let added = subtree
                        .iter()
                        .map(|(g, _)| {
                            let parent = tree.node(*g).and_then(|n| n.parent);
                            (*g, parent, folds.remove(g).unwrap_or_default())
                        })
                        .collect();
                    out.extend(changes(
                        entry,
                        MembershipChangeKind::Entered,
                        self.add_groups(added),
                        "moved",
                    ));
                }
            }
            _ => {}
        }
        Ok(out)
    }
}

/// Most membership entries one `membershipChanges` subscription may watch (its memory).
pub const MAX_WATCHED_ENTRIES: usize = 500_000;

fn too_large(entries: usize, descendants: bool) -> async_graphql::Error {
    coded(
        ErrorCode::TooLarge,
        format!(
            "the group{} holds {entries} membership entries, over the {MAX_WATCHED_ENTRIES} one subscription may watch; subscribe to a smaller subtree, or to `events` filtered on Membership",
            if descendants { " and its descendants" } else { "" }
        ),
    )
}

/// `membershipChanges`: the watch, loaded at the head, then fed by the log.
async fn membership_stream(
    ctx: &Context<'_>,
    group: Uuid,
    descendants: bool,
) -> Result<impl Stream<Item = Result<MembershipChange>>> {
    let (pool, head) = ctx
        .data_unchecked::<LogHead>()
        .get(ctx.data_unchecked::<PgPool>())
        .await;
    let mut conn = pool.acquire().await.map_err(internal)?;
    let (start, _) = public_log::head(&mut conn).await.map_err(internal)?;
    let tree = history::tree_at(&mut conn, start).await.map_err(internal)?;
    let groups: Vec<(Uuid, i32)> = if descendants {
        tree.subtree(group)
    } else {
        tree.node(group)
            .map(|_| vec![(group, 0)])
            .unwrap_or_default()
    };
    if groups.is_empty() {
        return Err(coded(ErrorCode::NotFound, format!("no group {group}")));
    }
    // Refuse before folding: the write-side registry counts the entries the watch would hold.
    let ids: Vec<Uuid> = groups.iter().map(|g| g.0).collect();
    let current: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(c.n), 0)::bigint FROM unnest($1::uuid[]) g(id)
           JOIN membership_registry_counts c ON c.group_id = g.id",
    )
    .bind(&ids)
    .fetch_one(&mut *conn)
    .await
    .map_err(internal)?;
    if current as usize > MAX_WATCHED_ENTRIES {
        return Err(too_large(current as usize, descendants));
    }
    let mut folds = history::membership_folds(&mut conn, &groups, start)
        .await
        .map_err(internal)?;
    drop(conn);
    let entries: usize = folds.values().map(MembershipFold::entry_count).sum();
    if entries > MAX_WATCHED_ENTRIES {
        return Err(too_large(entries, descendants));
    }
    let mut watch = MembershipWatch {
        root: group,
        descendants,
        groups: HashMap::new(),
        parents: HashMap::new(),
        holders: HashMap::new(),
        ended: false,
    };
    watch.add_groups(
        groups
            .iter()
            .map(|(g, _)| {
                let parent = tree.node(*g).and_then(|n| n.parent);
                (*g, parent, folds.remove(g).unwrap_or_default())
            })
            .collect(),
    );
    let filter = if descendants {
        LogFilter {
            aggregate_types: vec!["Group".into(), "Membership".into()],
            ..Default::default()
        }
    } else {
        // The group's own Group events too (its deletion ends the stream).
        LogFilter {
            aggregate_types: vec!["Group".into(), "Membership".into()],
            aggregate_ids: vec![group.to_string()],
            ..Default::default()
        }
    };
    let entries = Box::pin(follow(pool.clone(), head, filter, start));
    let state = (
        entries,
        watch,
        VecDeque::<MembershipChange>::new(),
        pool,
        false,
    );
    Ok(futures::stream::unfold(
        state,
        |(mut entries, mut watch, mut pending, pool, failed)| async move {
            if failed {
                return None;
            }
            loop {
                if let Some(item) = pending.pop_front() {
                    return Some((Ok(item), (entries, watch, pending, pool, false)));
                }
                if watch.ended {
                    return None;
                }
                let entry = match futures::StreamExt::next(&mut entries).await? {
                    Ok(entry) => entry,
                    Err(err) => {
                        return Some((Err(internal(err)), (entries, watch, pending, pool, true)))
                    }
                };
                match watch.apply(&pool, &entry).await {
                    Ok(changes) => pending.extend(changes),
                    Err(err) => {
                        return Some((Err(internal(err)), (entries, watch, pending, pool, true)))
                    }
                }
            }
        },
    ))
}
