//! On-demand network sweeps: `scheduleSweep`, `previewSweep`, `cancelSweep`, `sweepRuns`,
//! `sweepRun`, and the `sweepProgress` subscription (in `subscriptions/`).
//!
//! Every field here is named `Sweep.<field>` in the policy (see `policy::object_of`), a
//! permission of its own that only admins hold: viewers' `Query.*` does not reach them.
//!
//! Scopes: a run's targets are its group (`groupId`) and its own addresses (`targets`).
//! Addresses belong to no group, so only a caller with `sweep.run` everywhere (a global
//! binding) may sweep them; a scoped caller may sweep a group in the subtree of one of its
//! `sweep.run` bindings. `previewSweep` and `scheduleSweep` are `FORBIDDEN` (before anything
//! is read or written, whether the group exists or not) when a target is out of reach;
//! `cancelSweep` is `FORBIDDEN` on a run out of reach (or one that does not exist); and a run
//! out of reach is invisible: `sweepRun` is null, `sweepRuns` leaves it out (in SQL, so
//! `totalCount` and pages count only the runs in reach), `sweepProgress` does not know it.

mod idempotency;
mod types;

use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};
use chrono::{TimeDelta, Utc};
use corral_domain::codes::Code;
use corral_domain::sweep::{
    plan, RequestFingerprint, SweepCommand, SweepError, SweepPlan, SweepRequest,
};
use corral_projections::commands::executor::ExecError;
use corral_projections::sweeps::{read, SweepCommands, SweepConfig};
use sqlx::PgPool;
use uuid::Uuid;

pub use types::{SweepProgress, SweepResult, SweepRun, SweepRunConnection, SweepStatus};

use super::errors::{coded, internal, UserError};
use super::mutation::{event_metadata, execute, MutationWait};
use super::scalars::Position;
use super::scope::{self, Reach};
use super::types::{paging, DEFAULT_PAGE};
use crate::auth::Actor;
use crate::error_codes::ErrorCode;
use crate::permissions::Permission;
use corral_projections::commands::{Command, CommandError, Commands, Wait};
use idempotency::KeyUse;

/// Input of `scheduleSweep` and `previewSweep`.
#[derive(InputObject, Clone)]
pub struct ScheduleSweepInput {
    /// The poller that runs the sweep (letters, digits, `-`, `_`).
    pub poller_id: String,
    /// The agent behind the poller, if any.
    pub agent_id: Option<String>,
    /// IP addresses, CIDRs (`10.0.0.0/24`, no prefix shorter than /16) and ranges
    /// (`10.0.0.5-10.0.0.9`), all inside the poller's allow-list.
    #[graphql(default)]
    pub targets: Vec<String>,
    /// A group whose effective device members' IP addresses are swept too.
    pub group_id: Option<ID>,
    /// TCP ports, 1-65535, at most 1024.
    #[graphql(default)]
    pub ports: Vec<i32>,
    /// Ping every host too (a poller without the privilege reports ICMP as unknown).
    #[graphql(default)]
    pub icmp: bool,
    /// Connect timeout per probe, 10-60000 ms (default 1000).
    pub timeout_ms: Option<i32>,
    /// Probes in flight, 1-1024 (default 64).
    pub concurrency: Option<i32>,
    /// Days results are kept after the run ends, 1-90 (default 30).
    pub retention_days: Option<i32>,
    /// Yours for the idempotency window (24 h by default): the same key with the same request
    /// returns the same run (it is not sent twice), with a different request it is refused
    /// (`IDEMPOTENCY_KEY_REUSED`); after the window it makes a new run. Other admins' keys are
    /// theirs.
    pub idempotency_key: String,
    /// Why (kept in the audit trail).
    pub reason: Option<String>,
    /// Seconds the run may take before it is `TIMED_OUT` (default and maximum: see
    /// `docs/sweeps.md`).
    pub deadline_secs: Option<i32>,
}

/// The result of `scheduleSweep`.
#[derive(SimpleObject, Default)]
pub struct ScheduleSweepPayload {
    /// The run (the existing one when you used the idempotency key for this request before).
    pub run: Option<SweepRun>,
    /// False when the idempotency key named an existing run.
    pub created: bool,
    /// Log position of the scheduling.
    pub position: Option<Position>,
    /// True when the read model did not catch up within the wait.
    pub wait_timed_out: bool,
    /// Expected failures; nothing was scheduled when this is not empty.
    pub user_errors: Vec<UserError>,
}

/// What a sweep would cover (`previewSweep`).
#[derive(SimpleObject, Default)]
pub struct SweepPreview {
    /// Addresses it would sweep (targets and group members, each once).
    pub hosts_total: i64,
    /// Those addresses as disjoint ranges (at most the first 100).
    pub hosts: Vec<String>,
    /// Ports, ascending, each once.
    pub ports: Vec<i32>,
    /// Device members of the group without a usable IP address (not swept).
    pub members_without_ip: i64,
    /// Why the request would be refused.
    pub user_errors: Vec<UserError>,
}

/// Input of `cancelSweep`.
#[derive(InputObject)]
pub struct CancelSweepInput {
    /// The run.
    pub id: ID,
    /// Why.
    pub reason: Option<String>,
}

/// The result of `cancelSweep`.
#[derive(SimpleObject, Default)]
pub struct CancelSweepPayload {
    /// The run after the cancel.
    pub run: Option<SweepRun>,
    /// Log position of the cancel.
    pub position: Option<Position>,
    /// True when the read model did not catch up within the wait.
    pub wait_timed_out: bool,
    /// Expected failures (`NOT_FOUND`, `ALREADY_ENDED`).
    pub user_errors: Vec<UserError>,
}

fn sweep_error(e: &SweepError) -> UserError {
    UserError::new(e.field(), e.code(), e.to_string())
}

/// The request as the domain takes it, before the group's members are read; or the userError
/// of a `groupId` that is no id.
fn request_of(input: &ScheduleSweepInput) -> std::result::Result<SweepRequest, UserError> {
    let group_id = match &input.group_id {
        None => None,
        Some(group) => Some(group.parse::<Uuid>().map_err(|_| {
            UserError::new(Some("groupId"), Code::Invalid, "groupId is not a group id")
        })?),
    };
    Ok(SweepRequest {
        poller_id: input.poller_id.clone(),
        agent_id: input.agent_id.clone(),
        targets: input.targets.clone(),
        group_id,
        group_hosts: vec![],
        ports: input.ports.iter().map(|p| i64::from(*p)).collect(),
        icmp: input.icmp,
        timeout_ms: input.timeout_ms.map(i64::from),
        concurrency: input.concurrency.map(i64::from),
        retention_days: input.retention_days.map(i64::from),
        idempotency_key: input.idempotency_key.clone(),
        reason: input.reason.clone(),
    })
}

/// Whether the caller may use `sweep.run` on every target of a run of group `group` with
/// addresses of its own when `addresses` (see the module's doc).
async fn run_in_reach(ctx: &Context<'_>, group: Option<Uuid>, addresses: bool) -> Result<bool> {
    match scope::reach(ctx, Permission::SweepRun).await? {
        Reach::All => Ok(true),
        Reach::Nothing => Ok(false),
        Reach::Within(roots) => match group {
            Some(g) if !addresses => Ok(scope::within(&roots, g)),
            _ => Ok(false),
        },
    }
}

/// `FORBIDDEN` unless the caller may sweep every target of `input`: its group, and its
/// addresses (which need `sweep.run` everywhere). Runs before anything is read or written.
async fn require_targets(ctx: &Context<'_>, input: &ScheduleSweepInput) -> Result<()> {
    if matches!(scope::reach(ctx, Permission::SweepRun).await?, Reach::All) {
        return Ok(());
    }
    if !input.targets.is_empty() {
        return Err(coded(
            ErrorCode::Forbidden,
            "sweep.run is not granted everywhere: addresses (targets) belong to no group, \
             sweep a group in your scope instead",
        ));
    }
    // A groupId that is no id is the plan's userError (it names no group to hide).
    if let Some(Ok(g)) = input.group_id.as_ref().map(|g| g.parse::<Uuid>()) {
        scope::require(ctx, Permission::SweepRun, g).await?;
    }
    Ok(())
}

/// Whether the caller may see (and cancel) `run`.
async fn visible(ctx: &Context<'_>, run: &read::SweepRunView) -> Result<bool> {
    run_in_reach(ctx, run.group_id, !run.targets.is_empty()).await
}

/// The run `id` when the caller may see it (`sweepRun`, `node`).
pub(crate) async fn run_by_id(ctx: &Context<'_>, id: Uuid) -> Result<Option<SweepRun>> {
    let run = read::by_id(ctx.data_unchecked::<PgPool>(), id)
        .await
        .map_err(internal)?;
    match run {
        Some(run) if visible(ctx, &run).await? => Ok(Some(SweepRun::from(run))),
        _ => Ok(None),
    }
}

/// Checks a request (reading the group's members' addresses) into a plan.
async fn checked(
    ctx: &Context<'_>,
    input: &ScheduleSweepInput,
) -> Result<(std::result::Result<SweepPlan, UserError>, i64)> {
    let config = ctx.data_unchecked::<SweepConfig>();
    let pool = ctx.data_unchecked::<PgPool>();
    let mut request = match request_of(input) {
        Ok(r) => r,
        Err(e) => return Ok((Err(e), 0)),
    };
    if request.targets.len() > 1024 {
        return Ok((
            Err(UserError::new(
                Some("targets"),
                Code::Invalid,
                "at most 1024 targets per run",
            )),
            0,
        ));
    }
    let mut without_ip = 0;
    if let Some(id) = request.group_id {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT group_type FROM rm_group_tree.groups WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
                .map_err(internal)?;
        match exists.as_deref() {
            None => {
                return Ok((
                    Err(UserError::new(
                        Some("groupId"),
                        Code::NotFound,
                        "no such group",
                    )),
                    0,
                ))
            }
            Some("DEVICE") => {}
            Some(_) => {
                return Ok((
                    Err(UserError::new(
                        Some("groupId"),
                        Code::Invalid,
                        "only device groups can be swept",
                    )),
                    0,
                ))
            }
        }
        let (ips, skipped) = read::group_device_ips(pool, id).await.map_err(internal)?;
        request.group_hosts = ips;
        without_ip = skipped as i64;
    }
    let planned = plan(
        &request,
        &config.limits,
        config.allow_for(request.poller_id.trim()),
    )
    .map_err(|e| sweep_error(&e));
    Ok((planned, without_ip))
}

/// Sweep queries (part of the `Query` root; admin only, as `Sweep.*`).
#[derive(Default)]
pub struct SweepQuery;

#[Object]
impl SweepQuery {
    /// Runs, newest first, optionally of one status and/or poller. A scoped caller gets only
    /// the runs of groups in the reach of its `sweep.run` bindings (`totalCount` and pages
    /// count only those). `last`/`before` page backward, toward newer runs (limits as for
    /// `first`).
    #[graphql(
        complexity = "i64::from(first.or(last).unwrap_or(DEFAULT_PAGE)).max(1) as usize * child_complexity + 1"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn sweep_runs(
        &self,
        ctx: &Context<'_>,
        status: Option<SweepStatus>,
        poller_id: Option<String>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> Result<SweepRunConnection> {
        let paging = paging(first, after, last, before)?;
        let cursor = paging
            .cursor
            .as_deref()
            .map(types::decode_run_cursor)
            .transpose()?;
        let reach = scope::reach(ctx, Permission::SweepRun).await?;
        let (rows, total) = read::list_within(
            ctx.data_unchecked::<PgPool>(),
            status.map(Into::into),
            poller_id.as_deref(),
            paging.size + 1,
            cursor,
            paging.backward,
            reach.roots(),
        )
        .await
        .map_err(internal)?;
        Ok(SweepRunConnection::page(rows, &paging, total))
    }

    /// One run (`null` when unknown, or out of the reach of a scoped caller's `sweep.run`).
    async fn sweep_run(&self, ctx: &Context<'_>, id: ID) -> Result<Option<SweepRun>> {
        let Ok(id) = id.parse::<Uuid>() else {
            return Ok(None);
        };
        run_by_id(ctx, id).await
    }

    /// What `scheduleSweep` would do with this input, without scheduling anything.
    /// `FORBIDDEN` like `scheduleSweep` when a target is out of the caller's reach.
    async fn preview_sweep(
        &self,
        ctx: &Context<'_>,
        input: ScheduleSweepInput,
    ) -> Result<SweepPreview> {
        require_targets(ctx, &input).await?;
        let (planned, without_ip) = checked(ctx, &input).await?;
        Ok(match planned {
            Ok(p) => SweepPreview {
                hosts_total: p.hosts_total as i64,
                hosts: p.hosts.into_iter().take(100).collect(),
                ports: p.ports.iter().map(|p| i32::from(*p)).collect(),
                members_without_ip: without_ip,
                user_errors: vec![],
            },
            Err(e) => SweepPreview {
                members_without_ip: without_ip,
                user_errors: vec![e],
                ..Default::default()
            },
        })
    }
}

/// Runs a command on run `id` and waits for the read model: whether it wrote anything, its
/// position and whether the wait timed out; or the refusal as a userError.
async fn run_command(
    ctx: &Context<'_>,
    id: Uuid,
    command: SweepCommand,
    metadata: &corral_domain::metadata::EventMetadata,
) -> Result<std::result::Result<(bool, Option<Position>, bool), UserError>> {
    let outcome = match execute(ctx, Command::Sweep(id, command), metadata).await {
        Ok(o) => o,
        Err(CommandError::Sweep(ExecError::Domain(e))) => return Ok(Err(sweep_error(&e))),
        // Only after every retry lost a race: the run is changing right now.
        Err(CommandError::Sweep(ExecError::VersionConflict { .. })) => {
            return Ok(Err(UserError::new(
                None,
                Code::VersionConflict,
                "the run is being changed concurrently; try again",
            )))
        }
        Err(other) => return Err(internal(other)),
    };
    Ok(Ok((
        outcome.events > 0,
        outcome.position.map(Position),
        outcome.wait_timed_out,
    )))
}

/// Sweep mutations (admin only, as `Sweep.*`).
#[derive(Default)]
pub struct SweepMutation;

async fn fresh(ctx: &Context<'_>, id: Uuid) -> Result<Option<SweepRun>> {
    Ok(read::by_id(ctx.data_unchecked::<PgPool>(), id)
        .await
        .map_err(internal)?
        .map(SweepRun::from))
}

#[Object]
impl SweepMutation {
    /// Asks a poller to sweep now. The run starts `QUEUED`; a worker hands it to the poller
    /// (or fails it at once with `POLLER_OFFLINE`). Follow it with `sweepRun` or the
    /// `sweepProgress` subscription. A scoped caller may sweep a group within the reach of
    /// its `sweep.run` bindings, and no addresses of its own: anything else is `FORBIDDEN`,
    /// and nothing is written.
    async fn schedule_sweep(
        &self,
        ctx: &Context<'_>,
        input: ScheduleSweepInput,
    ) -> Result<ScheduleSweepPayload> {
        require_targets(ctx, &input).await?;
        let fail = |e: UserError| ScheduleSweepPayload {
            user_errors: vec![e],
            ..Default::default()
        };
        let metadata = match event_metadata(ctx, input.reason.clone())? {
            Ok(m) => m,
            Err(e) => return Ok(fail(e)),
        };
        let config = ctx.data_unchecked::<SweepConfig>();
        if !config.enabled {
            return Ok(fail(UserError::new(
                None,
                Code::SweepsUnavailable,
                "sweeps need NATS: this server runs without NATS_URL, so no run could reach a poller",
            )));
        }
        let max = config.max_runtime.as_secs();
        let runtime = match input.deadline_secs {
            None => config.default_runtime.as_secs(),
            Some(s) if s >= 1 && (s as u64) <= max => s as u64,
            Some(s) => {
                return Ok(fail(UserError::new(
                    Some("deadlineSecs"),
                    Code::OutOfRange,
                    format!("deadlineSecs must be from 1 to {max}, got {s}"),
                )))
            }
        };
        let request = match request_of(&input) {
            Ok(r) => r,
            Err(e) => return Ok(fail(e)),
        };
        let actor = ctx.data::<Actor>()?;
        let key = KeyUse {
            pool: ctx.data_unchecked::<PgPool>(),
            subject: &actor.subject,
            key: input.idempotency_key.trim(),
            fingerprint: RequestFingerprint::of(&request, runtime),
            window: config.idempotency_window,
        };
        // The subject's key, in its window, names its run (the plan checks an empty key).
        let reserved = if key.key.is_empty() {
            None
        } else {
            match key.reserved().await? {
                Ok(reserved) => reserved,
                Err(e) => return Ok(fail(e)),
            }
        };
        let commands = ctx.data_unchecked::<std::sync::Arc<SweepCommands>>();
        if let Some(id) = reserved {
            if commands
                .load(id)
                .await
                .map_err(internal)?
                .status()
                .is_some()
            {
                let confirmed = ctx
                    .data_unchecked::<std::sync::Arc<Commands>>()
                    .confirm(
                        "SweepRun",
                        &id.to_string(),
                        Wait::ReadModels(ctx.data_unchecked::<MutationWait>().0),
                    )
                    .await;
                super::loaders::clear_caches(ctx);
                let (position, wait_timed_out) =
                    (confirmed.position.map(Position), confirmed.wait_timed_out);
                return Ok(ScheduleSweepPayload {
                    run: fresh(ctx, id).await?,
                    created: false,
                    position,
                    wait_timed_out,
                    user_errors: vec![],
                });
            }
        }
        let plan = match checked(ctx, &input).await?.0 {
            Ok(p) => p,
            Err(e) => return Ok(fail(e)),
        };
        // A reservation without its run was left by a request that died before scheduling
        // (or is scheduling right now): this retry schedules the same id.
        let id = match reserved {
            Some(id) => id,
            None => match key.reserve().await? {
                Ok(id) => id,
                Err(e) => return Ok(fail(e)),
            },
        };
        let command = SweepCommand::Schedule {
            plan,
            requested_by: actor.subject.clone(),
            deadline: Utc::now() + TimeDelta::seconds(runtime as i64),
        };
        let (created, position, wait_timed_out) =
            match run_command(ctx, id, command, &metadata).await? {
                Ok(settled) => settled,
                Err(e) => return Ok(fail(e)),
            };
        Ok(ScheduleSweepPayload {
            run: fresh(ctx, id).await?,
            created,
            position,
            wait_timed_out,
            user_errors: vec![],
        })
    }

    /// Cancels a run that has not ended; the poller stops and the results so far are kept.
    /// A scoped caller may cancel only runs in the reach of its `sweep.run` bindings: any
    /// other run, or one that does not exist, is `FORBIDDEN`.
    async fn cancel_sweep(
        &self,
        ctx: &Context<'_>,
        input: CancelSweepInput,
    ) -> Result<CancelSweepPayload> {
        let fail = |e: UserError| CancelSweepPayload {
            user_errors: vec![e],
            ..Default::default()
        };
        let Ok(id) = input.id.parse::<Uuid>() else {
            return Ok(fail(sweep_error(&SweepError::NotFound)));
        };
        if !matches!(scope::reach(ctx, Permission::SweepRun).await?, Reach::All) {
            let run = read::by_id(ctx.data_unchecked::<PgPool>(), id)
                .await
                .map_err(internal)?;
            let allowed = match &run {
                Some(run) => visible(ctx, run).await?,
                None => false,
            };
            if !allowed {
                return Err(coded(
                    ErrorCode::Forbidden,
                    format!("sweep.run is not granted on the targets of run {id}"),
                ));
            }
        }
        let metadata = match event_metadata(ctx, input.reason.clone())? {
            Ok(m) => m,
            Err(e) => return Ok(fail(e)),
        };
        let pool = ctx.data_unchecked::<PgPool>();
        let done = read::by_id(pool, id)
            .await
            .map_err(internal)?
            .map_or(0, |r| r.hosts_done.max(0) as u64);
        let command = SweepCommand::Cancel {
            by: ctx.data::<Actor>()?.subject.clone(),
            reason: metadata.reason.clone(),
            hosts_done: done,
        };
        let (_, position, wait_timed_out) = match run_command(ctx, id, command, &metadata).await? {
            Ok(settled) => settled,
            Err(e) => return Ok(fail(e)),
        };
        Ok(CancelSweepPayload {
            run: fresh(ctx, id).await?,
            position,
            wait_timed_out,
            user_errors: vec![],
        })
    }
}

/// The `sweepProgress` stream of run `id`: its progress now, then whenever it changes, until
/// the run has ended.
pub(crate) async fn progress_stream(
    ctx: &Context<'_>,
    id: &ID,
) -> Result<impl futures::Stream<Item = Result<SweepProgress>>> {
    let id = id
        .parse::<Uuid>()
        .map_err(|_| coded(ErrorCode::BadUserInput, "runId is not a run id"))?;
    let pool = ctx.data_unchecked::<PgPool>().clone();
    // A run out of the caller's reach is not found, like one that does not exist.
    let found = match read::by_id(&pool, id).await.map_err(internal)? {
        Some(run) => visible(ctx, &run).await?,
        None => false,
    };
    if !found {
        return Err(coded(ErrorCode::NotFound, format!("no sweep run {id}")));
    }
    let poll = ctx.data_unchecked::<SweepConfig>().poll;
    let state = (pool, None::<SweepProgress>, false);
    Ok(futures::stream::unfold(
        state,
        move |(pool, last, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let run = match read::by_id(&pool, id).await {
                    Ok(Some(run)) => run,
                    Ok(None) => return None,
                    Err(e) => return Some((Err(internal(e)), (pool, last, true))),
                };
                let now = SweepProgress::from(&run);
                if last.as_ref() != Some(&now) {
                    let ended = run.status.is_terminal();
                    return Some((Ok(now.clone()), (pool, Some(now), ended)));
                }
                tokio::time::sleep(poll).await;
            }
        },
    ))
}
