//! The NATS membership feed: for every durable membership watch (`MembershipWatch`
//! aggregate, registered with `registerMembershipWatch` or `corral watch add`), each member
//! entering or leaving the watched group's membership, exactly once and in position order,
//! to `<prefix>.<watchId>.<Entered|Left>` in one JetStream stream (`docs/integrators.md`).
//!
//! - **One logic**: the feed keeps each watch's state with `corral_projections::watch`, the
//!   fold the `membershipChanges` subscription uses; the changes of one position are numbered
//!   alike by both.
//! - **The output is a function of the log**: which watches exist at a position is itself in
//!   the log (a watch starts with the event after its registration and stops at its removal),
//!   so the messages of every position, in order (watches in registration order, each one's
//!   changes by index), are the same on every run. Each carries `Corral-Position` and its
//!   `Corral-Feed-Ordinal` among the messages of its position.
//! - **Resume** (start, restart, any error): the stream's newest message says how far it got
//!   (position and ordinal); the checkpoint (`log_checkpoints`, `nats-membership:<stream>`)
//!   says every message of positions up to it is in the stream. The feed folds its watches as
//!   of the later of the two (the position before the message's, if it is the later), reads
//!   the log after it and skips what the stream holds. `Nats-Msg-Id`
//!   (`<watchId>:<position>:<index>`) and `Nats-Expected-Last-Sequence` are the publisher's
//!   second and third lines of defence, as for the event log.
//! - **NATS down**: changes wait in the log; the feed warns once per outage and retries with a
//!   capped back-off (then re-folds its watches, since their state ran ahead of the stream).
//! - **One feed per cluster**: the `membership_feed` leadership (`projections::leader`).

pub mod plan;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use corral_domain::watch::MembershipWatchEvent;
use corral_projections::leader::{Leader, Leadership};
use corral_projections::locks::Lock;
use corral_projections::public_log::{self, LogEntry, LogFilter};
use corral_projections::watch::registry::{self, RegisteredWatch, WATCH_AGGREGATE};
use corral_projections::watch::{self, EffectiveWatch, LoadError, MAX_WATCHED_ENTRIES};
use corral_projections::StoreError;

use sqlx::{PgConnection, PgPool};
use tokio::sync::watch as tokio_watch;

use crate::publisher::js_stream::{
    ensure_stream, last_marked, send_pipelined, Outgoing, StreamSpec,
};
use crate::publisher::plan::{position_of, Backoff};
use crate::publisher::{is_stopped, pause, stopped, POSITION_HEADER};
use plan::ORDINAL_HEADER;

/// Prefix of the feed's checkpoint names in `log_checkpoints` (the stream name follows).
pub const CHECKPOINT_PREFIX: &str = "nats-membership:";

/// Where and how the feed publishes.
#[derive(Debug, Clone)]
pub struct MembershipFeedConfig {
    /// JetStream stream (file storage), created or updated at start.
    pub stream: String,
    /// Subject prefix: `<prefix>.<watchId>.<Entered|Left>`.
    pub subject_prefix: String,
    /// Log entries read per round.
    pub batch: i64,
    /// How long the stream keeps messages (zero: no limit).
    pub max_age: Duration,
    /// The stream's `Nats-Msg-Id` deduplication window.
    pub duplicate_window: Duration,
    /// How often to look at the log when no notification arrives.
    pub poll: Duration,
    /// How long to wait for each JetStream acknowledgement or API reply.
    pub timeout: Duration,
}

impl Default for MembershipFeedConfig {
    fn default() -> Self {
        Self {
            stream: "CORRAL_MEMBERSHIP".into(),
            subject_prefix: "corral.membership".into(),
            batch: 256,
            max_age: Duration::ZERO,
            duplicate_window: Duration::from_secs(120),
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

impl MembershipFeedConfig {
    /// The feed's checkpoint (`nats-membership:<stream>`).
    pub fn checkpoint_name(&self) -> String {
        format!("{CHECKPOINT_PREFIX}{}", self.stream)
    }
}

/// Counters of this process's feed, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Messages acknowledged by JetStream.
    pub published: AtomicU64,
    /// The last position whose messages are all in the stream.
    pub position: AtomicI64,
    /// Whether this process leads the feed.
    pub leader: AtomicBool,
    /// Rounds interrupted by an error (each followed by a re-sync).
    pub interruptions: AtomicU64,
}

impl FeedStats {
    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        format!(
            "# HELP corral_membership_feed_published_total Membership changes published to NATS by this process.\n\
             # TYPE corral_membership_feed_published_total counter\n\
             corral_membership_feed_published_total {}\n\
             # HELP corral_membership_feed_position Last log position whose membership changes this process published.\n\
             # TYPE corral_membership_feed_position gauge\n\
             corral_membership_feed_position {}\n\
             # HELP corral_membership_feed_interruptions_total Membership feed rounds interrupted by an error.\n\
             # TYPE corral_membership_feed_interruptions_total counter\n\
             corral_membership_feed_interruptions_total {}\n",
            self.published.load(Ordering::Relaxed),
            self.position.load(Ordering::Relaxed),
            self.interruptions.load(Ordering::Relaxed),
        )
    }
}

/// A running feed ([`spawn`]).
pub struct MembershipFeed {
    stop: tokio_watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl MembershipFeed {
    /// Stops the feed and waits for it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts [`run`] in a task of its own.
pub fn spawn(
    pool: PgPool,
    nats_url: String,
    config: MembershipFeedConfig,
    stats: Arc<FeedStats>,
) -> MembershipFeed {
    let (stop, stop_rx) = tokio_watch::channel(false);
    let task = tokio::spawn(run(pool, nats_url, config, stats, stop_rx));
    MembershipFeed { stop, task }
}

/// One watch the feed keeps.
struct Active {
    registered: RegisteredWatch,
    /// `None`: nothing to publish (its group is gone, or it is too large to hold).
    state: Option<EffectiveWatch>,
}

/// Where the feed stands while the stream and it agree.
struct Synced {
    /// Every message of positions up to this one is in the stream.
    position: i64,
    last_sequence: u64,
    /// Messages of a position the stream holds in part.
    skip: Option<(i64, u64)>,
    watches: Vec<Active>,
    /// The checkpoint as last written.
    recorded: i64,
}

#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Nats(String),
    #[error("not connected to NATS")]
    NotConnected,
}

impl From<sqlx::Error> for FeedError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Publishes the watches' changes until `stop` turns true: waits to lead the feed, then keeps
/// the stream level with the log. Errors are logged and retried.
pub async fn run(
    pool: PgPool,
    nats_url: String,
    config: MembershipFeedConfig,
    stats: Arc<FeedStats>,
    mut stop: tokio_watch::Receiver<bool>,
) {
    let client = loop {
        let connecting = async_nats::ConnectOptions::new()
            .name("corral-membership-feed")
            .retry_on_initial_connect()
            .connect(nats_url.as_str());
        match connecting.await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, nats.url = %nats_url, "cannot use NATS_URL; trying again in 30 s");
                if pause(Duration::from_secs(30), &mut stop).await {
                    return;
                }
            }
        }
    };
    let js = jetstream::ContextBuilder::new()
        .timeout(config.timeout)
        .build(client.clone());
    let mut head = public_log::watch_head(pool.clone(), config.poll);
    let leadership = Leadership::Worker(Lock::MembershipFeed);
    loop {
        let Some(mut leader) =
            Leader::wait_for(&pool, &leadership, crate::LEADER_RETRY, &mut stop).await
        else {
            return;
        };
        stats.leader.store(true, Ordering::Relaxed);
        tracing::info!(nats.stream = %config.stream, "this process is the NATS membership feed");
        feed_while_leader(
            leader.conn(),
            &pool,
            &client,
            &js,
            &config,
            &stats,
            &mut head,
            &mut stop,
        )
        .await;
        stats.leader.store(false, Ordering::Relaxed);
        leader.resign().await;
        if is_stopped(&stop) {
            return;
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "the loop's context, passed once")]
async fn feed_while_leader(
    lock_conn: &mut PgConnection,
    pool: &PgPool,
    client: &async_nats::Client,
    js: &jetstream::Context,
    config: &MembershipFeedConfig,
    stats: &FeedStats,
    head: &mut tokio_watch::Receiver<i64>,
    stop: &mut tokio_watch::Receiver<bool>,
) {
    let mut synced: Option<Synced> = None;
    let mut backoff = Backoff::new();
    let mut outage = false;
    loop {
        if is_stopped(stop) {
            return;
        }
        let round = async {
            if client.connection_state() != State::Connected {
                return Err(FeedError::NotConnected);
            }
            let s = match synced.as_mut() {
                Some(s) => s,
                None => synced.insert(sync(lock_conn, js, config).await?),
            };
            head.borrow_and_update();
            round(lock_conn, pool, js, config, stats, s).await
        };
        match round.await {
            Ok(busy) => {
                if outage {
                    tracing::info!("NATS membership feed resumed");
                    outage = false;
                }
                backoff.reset();
                if !busy {
                    tokio::select! {
                        _ = stopped(stop) => return,
                        _ = async {
                            if head.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        } => {}
                        _ = tokio::time::sleep(config.poll) => {}
                    }
                }
            }
            Err(e) => {
                // The watches' state may have run ahead of the stream: fold them again.
                synced = None;
                if !matches!(e, FeedError::NotConnected) {
                    stats.interruptions.fetch_add(1, Ordering::Relaxed);
                }
                if outage {
                    tracing::debug!(error = %e, "NATS membership feed still failing");
                } else {
                    tracing::warn!(error = %e, "NATS membership feed interrupted; changes wait in the log and will be published when it works again");
                    outage = true;
                }
                if matches!(e, FeedError::Store(_)) {
                    let alive: Result<i32, _> = sqlx::query_scalar("SELECT 1")
                        .fetch_one(&mut *lock_conn)
                        .await;
                    if alive.is_err() {
                        let _ = pause(backoff.next(), stop).await;
                        return;
                    }
                }
                if pause(backoff.next(), stop).await {
                    return;
                }
            }
        }
    }
}

/// Creates or updates the stream, finds where to resume and folds the watches as of there.
async fn sync(
    conn: &mut PgConnection,
    js: &jetstream::Context,
    config: &MembershipFeedConfig,
) -> Result<Synced, FeedError> {
    let spec = StreamSpec {
        name: &config.stream,
        subjects: vec![format!("{}.>", config.subject_prefix)],
        duplicate_window: config.duplicate_window,
        max_age: config.max_age,
    };
    let (last_sequence, messages) = ensure_stream(js, &spec).await.map_err(FeedError::Nats)?;
    let in_stream = if messages > 0 {
        last_marked(js, &config.stream, last_sequence)
            .await
            .map_err(FeedError::Nats)?
            .and_then(|h| {
                let position = position_of(h.get(POSITION_HEADER).map(|v| v.as_str()))?;
                let ordinal = h.get(ORDINAL_HEADER)?.as_str().parse::<u64>().ok()?;
                Some((position, ordinal))
            })
    } else {
        None
    };
    let checkpoint_name = config.checkpoint_name();
    public_log::advance(conn, &checkpoint_name, 0).await?;
    let checkpoint = public_log::checkpoint(conn, &checkpoint_name).await?;
    let resume = plan::resume(checkpoint, in_stream);
    let watches = fold_watches(conn, resume.after).await?;
    tracing::info!(
        nats.stream = %config.stream,
        nats.last_sequence = last_sequence,
        checkpoint,
        position = resume.after,
        watches = watches.len(),
        "NATS membership feed synced with its stream"
    );
    Ok(Synced {
        position: resume.after,
        last_sequence,
        skip: resume.skip,
        watches,
        recorded: checkpoint,
    })
}

/// The watches registered and not removed at `position`, folded as of it.
async fn fold_watches(conn: &mut PgConnection, position: i64) -> Result<Vec<Active>, FeedError> {
    let mut out = Vec::new();
    for registered in registry::watches_at(conn, Some(position)).await? {
        if registered.removed_at_position.is_some() {
            continue;
        }
        let state = load(conn, &registered, position).await?;
        out.push(Active { registered, state });
    }
    Ok(out)
}

async fn load(
    conn: &mut PgConnection,
    w: &RegisteredWatch,
    position: i64,
) -> Result<Option<EffectiveWatch>, FeedError> {
    match watch::load(
        conn,
        w.group_id,
        w.include_descendants,
        position,
        MAX_WATCHED_ENTRIES,
    )
    .await
    {
        Ok(state) => Ok(Some(state)),
        Err(LoadError::Store(e)) => Err(e.into()),
        Err(e @ (LoadError::NotFound(_) | LoadError::TooLarge { .. })) => {
            tracing::error!(watch.id = %w.id, group.id = %w.group_id, error = %e, "membership watch publishes nothing");
            Ok(None)
        }
    }
}

/// Reads a batch of the log after `s.position`, publishes its messages and records how far it
/// got. Returns whether there may be more to read.
async fn round(
    conn: &mut PgConnection,
    pool: &PgPool,
    js: &jetstream::Context,
    config: &MembershipFeedConfig,
    stats: &FeedStats,
    s: &mut Synced,
) -> Result<bool, FeedError> {
    let (top, _) = public_log::head(conn).await?;
    let filter = LogFilter {
        aggregate_types: [
            watch::filter(uuid::Uuid::nil(), true).aggregate_types,
            vec![WATCH_AGGREGATE.to_string()],
        ]
        .concat(),
        ..Default::default()
    };
    let entries = public_log::read(conn, s.position, Some(top), &filter, config.batch).await?;
    let full = entries.len() as i64 == config.batch;
    let through = match entries.last() {
        Some(last) if full => last.position,
        _ => top.max(s.position),
    };
    let mut outgoing = Vec::new();
    for entry in &entries {
        messages(conn, pool, config, s, entry, &mut outgoing).await?;
    }
    if !outgoing.is_empty() {
        let count = outgoing.len();
        let sent = send_pipelined(js, s.last_sequence, outgoing).await;
        stats
            .published
            .fetch_add(sent.published as u64, Ordering::Relaxed);
        s.last_sequence = sent.last_sequence;
        if let Some(e) = sent.error {
            return Err(FeedError::Nats(e));
        }
        debug_assert_eq!(sent.published, count);
    }
    s.position = through;
    s.skip = None;
    stats.position.store(through, Ordering::Relaxed);
    if through > s.recorded {
        public_log::advance(conn, &config.checkpoint_name(), through).await?;
        s.recorded = through;
    }
    Ok(full)
}

/// The messages of one log entry, for every watch, appended to `out` (those the stream holds
/// already skipped).
async fn messages(
    conn: &mut PgConnection,
    pool: &PgPool,
    config: &MembershipFeedConfig,
    s: &mut Synced,
    entry: &LogEntry,
    out: &mut Vec<Outgoing>,
) -> Result<(), FeedError> {
    let e = &entry.event;
    if e.aggregate_type == WATCH_AGGREGATE {
        let Ok(id) = e.aggregate_id.parse::<uuid::Uuid>() else {
            return Ok(());
        };
        match e.decode::<MembershipWatchEvent>()? {
            MembershipWatchEvent::MembershipWatchRegistered {
                group_id,
                include_descendants,
                description,
            } => {
                let registered = RegisteredWatch {
                    id,
                    group_id,
                    include_descendants,
                    description,
                    registered_at_position: entry.position,
                    registered_at: e.recorded_at,
                    registered_by: String::new(),
                    removed_at_position: None,
                };
                let state = load(conn, &registered, entry.position).await?;
                s.watches.push(Active { registered, state });
            }
            MembershipWatchEvent::MembershipWatchRemoved {} => {
                s.watches.retain(|w| w.registered.id != id);
            }
        }
        return Ok(());
    }
    let Some(event) = watch::decode(entry)? else {
        return Ok(());
    };
    let mut ordinal = 0u64;
    for w in &mut s.watches {
        let Some(state) = w.state.as_mut().filter(|st| !st.ended) else {
            continue;
        };
        let changes = watch::apply(state, pool, entry.position, e.recorded_at, &event).await?;
        for change in watch::number(entry.position, e.recorded_at, changes) {
            let this = ordinal;
            ordinal += 1;
            if !plan::to_send(s.skip, entry.position, this) {
                continue;
            }
            let m = plan::message(
                &config.subject_prefix,
                w.registered.id,
                w.registered.group_id,
                this,
                &change,
            );
            out.push(Outgoing {
                key: entry.position,
                subject: m.subject,
                headers: m.headers,
                body: m.body,
            });
        }
    }
    Ok(())
}
