//! GraphQL subscriptions over graphql-transport-ws (`/graphql/ws`).
//!
//! Both read the public log by position: a replay and the live tail are the same loop (read
//! what follows the last position delivered, then wait for the sequencer's next batch), so
//! there is no switch-over at which an event could be missed or delivered twice.
//!
//! - `log`: the `events` stream (the filter, the envelope, the follow loop);
//! - `membership`: the `membershipChanges` stream (loading the watch as of the position it
//!   starts after, feeding it the log); what each event does to a watch is decided in
//!   `corral_projections::watch` (pure, unit-tested), shared with the NATS membership feed.

mod log;
mod membership;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Result, Subscription, ID};
use corral_projections::public_log;
use futures::Stream;
use sqlx::PgPool;
use tokio::sync::{watch as tokio_watch, OnceCell};
use uuid::Uuid;

use super::errors::{coded, internal};
use super::scalars::Position;
use super::scope::Reach;
use crate::auth::Actor;
use crate::error_codes::ErrorCode;
use crate::permissions::Permission;
use corral_projections::group_tree::read;
use corral_projections::waiter::ConsistencyWaiter;

pub(crate) use log::follow;
pub use log::{EventStreamFilter, LogEvent};
pub use membership::{MembershipChange, MembershipChangeKind, MAX_WATCHED_ENTRIES};

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
pub struct LogHead(Arc<OnceCell<(PgPool, tokio_watch::Receiver<i64>)>>);

impl LogHead {
    /// The subscriptions' pool (connecting as `pool` does) and the head watch.
    async fn get(&self, pool: &PgPool) -> (PgPool, tokio_watch::Receiver<i64>) {
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
    let object = format!("Subscription.{field}");
    let allowed = match (
        ctx.data::<Arc<crate::policy::Policy>>(),
        ctx.data::<Actor>(),
    ) {
        (Ok(policy), Ok(actor)) => {
            crate::policy::permits_field(&policy.table(), actor, "Subscription", field)
        }
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

/// `FORBIDDEN` unless the caller has `sweep.run` on the targets of run `run_id`: everywhere,
/// or on the group it sweeps (a run of address blocks has no group: global bindings only).
async fn authorize_run(ctx: &Context<'_>, run_id: &ID) -> Result<()> {
    let roots = match super::scope::reach(ctx, Permission::SweepRun).await? {
        Reach::All => return Ok(()),
        Reach::Nothing => return Err(super::scope::forbidden(Permission::SweepRun, None)),
        Reach::Within(roots) => roots,
    };
    let Ok(id) = run_id.parse::<Uuid>() else {
        return Ok(()); // the stream answers BAD_USER_INPUT
    };
    let pool = ctx.data_unchecked::<PgPool>();
    let run = corral_projections::sweeps::read::by_id(pool, id)
        .await
        .map_err(internal)?;
    match run.and_then(|r| r.group_id) {
        Some(g) if super::scope::within(&roots, g) => Ok(()),
        _ => Err(coded(
            ErrorCode::Forbidden,
            "sweep.run is not granted on this run's targets",
        )),
    }
}

/// The `Subscription` root.
#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every event from `fromPosition` on (inclusive; omitted: only new events), in position
    /// order, then live as they are sequenced: no gap and no duplicate between the replay and
    /// the live tail. To resume, pass the last position you processed plus one. Auditors and
    /// admins (the stream carries actors and reasons). An auditor bound to groups receives only
    /// what `auditLog` lists for it: the Group and Membership events of groups in its subtrees,
    /// decided for each event by the tree as it stands when the event is delivered.
    async fn events(
        &self,
        ctx: &Context<'_>,
        from_position: Option<Position>,
        filter: Option<EventStreamFilter>,
    ) -> Result<impl Stream<Item = Result<LogEvent>>> {
        authorize(ctx, "events")?;
        let slot = take_slot(ctx)?;
        let filter = filter.unwrap_or_default().into_filter()?;
        let scope = super::scope::binding_reach(ctx, Permission::AuditRead)?
            .roots()
            .map(|roots| log::Scope {
                roots: roots.to_vec(),
                waiter: ctx.data_opt::<ConsistencyWaiter>().cloned(),
            });
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
            follow(pool, head, filter, after, scope),
            move |item| {
                let _held = &slot;
                item.map(LogEvent::from).map_err(internal)
            },
        ))
    }

    /// Members entering and leaving a group: its direct membership, or with
    /// `includeDescendants` its effective membership (a member enters when the first group of
    /// the subtree holds it directly and leaves when the last one stops), including whole
    /// descendants moving in or out. Each change names the group it happened in, the source,
    /// the position of the event that caused it and its index among that event's changes.
    ///
    /// Where it starts: omitted, with the next event; `fromPosition`, with the changes of that
    /// position (the watch is folded as of the position before, then the changes are replayed
    /// and the stream goes live with no gap and no duplicate); `after` (a change's `cursor`),
    /// right after that change. To resume exactly, pass the cursor of the last change you
    /// processed as `after`, or, if you store positions only, the position of the last change
    /// you saw with `lastOfPosition`, plus one, as `fromPosition`. Not both. Watches at most
    /// 500,000 membership entries (`TOO_LARGE`; about 290 bytes of server memory each). A
    /// caller bound to groups must be able to read the group (`FORBIDDEN` otherwise, for a
    /// missing group too); when the group leaves its scope later (moved away, or the binding
    /// revoked), the stream ends before the next change would be delivered.
    async fn membership_changes(
        &self,
        ctx: &Context<'_>,
        group_id: ID,
        include_descendants: Option<bool>,
        from_position: Option<Position>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<MembershipChange>>> {
        authorize(ctx, "membershipChanges")?;
        let slot = take_slot(ctx)?;
        let group = group_id
            .parse::<Uuid>()
            .map_err(|_| coded(ErrorCode::BadUserInput, "groupId is not a group id"))?;
        if !super::scope::may_read(ctx, group).await? {
            return Err(super::scope::forbidden(Permission::GroupRead, Some(group)));
        }
        // The stream decides each change by the tree as it stands then, from the bindings.
        let roots = super::scope::binding_reach(ctx, Permission::GroupRead)?
            .roots()
            .map(<[Uuid]>::to_vec);
        let start = match (from_position, after) {
            (None, None) => membership::Start::Now,
            (Some(Position(p)), None) => membership::Start::From(p),
            (None, Some(cursor)) => membership::Start::After(
                cursor
                    .parse()
                    .map_err(|e: String| coded(ErrorCode::BadUserInput, format!("after: {e}")))?,
            ),
            (Some(_), Some(_)) => {
                return Err(coded(
                    ErrorCode::BadUserInput,
                    "give fromPosition or after, not both",
                ))
            }
        };
        let stream =
            membership::membership_stream(ctx, group, include_descendants.unwrap_or(false), start)
                .await?;
        let pool = ctx.data_unchecked::<PgPool>().clone();
        let stream = futures::StreamExt::take_while(stream, move |_| {
            let (pool, roots) = (pool.clone(), roots.clone());
            async move {
                match roots {
                    None => true,
                    // A failed check ends the stream too: never deliver what may be hidden.
                    Some(roots) => read::in_subtrees(&pool, &[group], &roots)
                        .await
                        .is_ok_and(|kept| !kept.is_empty()),
                }
            }
        });
        Ok(futures::StreamExt::map(stream, move |item| {
            let _held = &slot;
            item
        }))
    }

    /// A sweep run's progress: its state now, then each change (status, hosts done), ending
    /// after the run has ended. Needs `sweep.run` on the run's targets: a caller bound to
    /// groups may follow the runs that sweep a group in its scope (`FORBIDDEN` for other runs,
    /// runs of raw address blocks and missing runs alike).
    async fn sweep_progress(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
    ) -> Result<impl Stream<Item = Result<super::sweeps::SweepProgress>>> {
        authorize(ctx, "sweepProgress")?;
        authorize_run(ctx, &run_id).await?;
        let slot = take_slot(ctx)?;
        let stream = super::sweeps::progress_stream(ctx, &run_id).await?;
        Ok(futures::StreamExt::map(stream, move |item| {
            let _held = &slot;
            item
        }))
    }
}
