//! Issue 15: scoped access. The same GraphQL requests by a subject holding 1,000 scoped
//! `viewer` bindings and by a global admin (the same-run baseline), through the whole HTTP
//! stack in-process (bearer token, authorization extension, scope SQL).
//!
//! Setup (timed on stderr, not measured), in a fresh database: a device tree of 10,000
//! groups below the device root (100 regions of 100 sites) through `GroupCommands`, built
//! into `rm_group_tree` by the projector; devices by `INSERT ... SELECT`, added as static
//! members of sites through `MembershipCommands` (60 to every site `s` of region `r` with
//! `s == 0`, inside the scope, and with `s == 50` for the first 50 regions, outside it); one
//! token for subject `scoped` with `viewer` on sites 0..10 of every region (1,000 bindings,
//! `MAX_BINDINGS`), one global `admin` token.
//!
//! Measured, alternating the two tokens request by request so that both see the same
//! machine: (a) `groups(type: DEVICE, first: 50) { totalCount edges { node { id name } } }`
//! and (b) `group(id) { members(first: 50) { totalCount edges { node { ... on Device { id } }
//! } } }` of a site inside the scope. Targets: the scoped p50 at most 1.3 times the admin's,
//! the scoped p99 under 10 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use clap::Args;
use corral_api::runtime::{self, BoxError};
use corral_api::state::{ApiConfig, AppState};
use corral_domain::access::Binding;
use corral_domain::group::{GroupCommand, GroupType};
use corral_domain::membership::{MemberSource, MembershipCommand};
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::commands::groups::GroupCommands;
use corral_projections::membership::MembershipCommands;
use futures::{stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

use crate::membership::percentile;
use crate::Row;

/// Options of the access suite.
#[derive(Args, Debug, Clone)]
pub struct AccessArgs {
    /// Requests of each kind per token in the access suite (after a warm-up of 30).
    #[arg(long, default_value_t = 300)]
    pub access_requests: usize,
    /// Keep the access suite's database afterwards (to EXPLAIN its queries).
    #[arg(long)]
    pub access_keep_database: bool,
}

const REGIONS: usize = 100;
const SITES: usize = 100;
/// Sites `0..SCOPED_SITES` of every region are in the scoped subject's bindings.
const SCOPED_SITES: usize = 10;
/// Devices per populated site (more than a page of 50).
const PER_SITE: usize = 60;
const CONCURRENCY: usize = 4;
const WARM_UP: usize = 30;

const GROUPS: &str =
    "{ groups(type: DEVICE, first: 50) { totalCount edges { node { id name } } } }";
const MEMBERS: &str = "query($id: ID!) { group(id: $id) { members(first: 50) { totalCount edges { node { ... on Device { id } } } } } }";

fn meta() -> EventMetadata {
    EventMetadata::system(Source::Cli, "bench-access")
}

fn site_id(r: usize, s: usize) -> Uuid {
    let ns = Uuid::from_u128(0x6163_6365_7373_2d62_656e_6368_2d74_7265);
    Uuid::new_v5(&ns, format!("site-{r}-{s}").as_bytes())
}

fn region_id(r: usize) -> Uuid {
    let ns = Uuid::from_u128(0x6163_6365_7373_2d62_656e_6368_2d74_7265);
    Uuid::new_v5(&ns, format!("region-{r}").as_bytes())
}

/// Sites that hold devices: site 0 of every region (in scope) and site 50 of the first 50
/// regions (out of scope).
fn populated() -> Vec<(usize, usize)> {
    (0..REGIONS)
        .map(|r| (r, 0))
        .chain((0..REGIONS / 2).map(|r| (r, 50)))
        .collect()
}

async fn run_all<T, F, Fut>(items: Vec<T>, f: F) -> Result<(), BoxError>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    stream::iter(items)
        .map(f)
        .buffer_unordered(CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await
}

async fn build_tree(groups: &Arc<GroupCommands>) -> Result<(), BoxError> {
    let create = |id: Uuid, name: String, parent: Uuid| GroupCommand::Create {
        id,
        name,
        group_type: GroupType::Device,
        parent_id: parent,
        description: None,
        metadata: None,
    };
    let regions: Vec<GroupCommand> = (0..REGIONS)
        .map(|r| {
            create(
                region_id(r),
                format!("region-{r:03}"),
                GroupType::Device.root_id(),
            )
        })
        .collect();
    let sites: Vec<GroupCommand> = (0..REGIONS)
        .flat_map(|r| (0..SITES).map(move |s| (r, s)))
        .map(|(r, s)| create(site_id(r, s), format!("site-{r:03}-{s:03}"), region_id(r)))
        .collect();
    let meta = meta();
    for level in [regions, sites] {
        run_all(level, |command| {
            let (groups, meta) = (groups.clone(), meta.clone());
            async move {
                groups
                    .execute(command, None, &meta)
                    .await
                    .map(|_| ())
                    .map_err(|e| BoxError::from(format!("creating a group: {e}")))
            }
        })
        .await?;
    }
    Ok(())
}

/// Waits until every projector has applied every committed event.
async fn settled(pool: &PgPool) -> Result<(), BoxError> {
    let started = Instant::now();
    loop {
        let status = corral_projections::runner::status(pool).await?;
        let lag: i64 = status.iter().map(|s| s.lag_events).sum();
        if lag == 0 && !status.is_empty() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!("access: projectors {lag} events behind after 600 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs `query`; returns the `data` (errors are failures).
async fn gql(
    app: &axum::Router,
    token: &str,
    query: &str,
    variables: &Value,
) -> Result<Value, BoxError> {
    let body = json!({ "query": query, "variables": variables }).to_string();
    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(body))?;
    let response = app.clone().oneshot(request).await?;
    let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await?;
    let v: Value = serde_json::from_slice(&bytes)?;
    if v.get("errors").is_some() {
        return Err(format!("GraphQL errors: {v}").into());
    }
    Ok(v["data"].clone())
}

pub(crate) async fn bench_access(
    url: &str,
    args: &AccessArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let suite_started = Instant::now();
    let (pool, lock_pool) = runtime::pools(url, 16).await?;
    corral_migrations::migrate(&pool).await?;
    let background =
        corral_workers::start_with(pool.clone(), true, Duration::from_secs(1), None).await?;
    let signal = background.commit_signal();
    let groups = Arc::new(GroupCommands::new(
        pool.clone(),
        lock_pool.clone(),
        signal.clone(),
    ));
    let members = Arc::new(MembershipCommands::new(
        pool.clone(),
        lock_pool.clone(),
        signal,
    ));
    runtime::ensure_roots(&groups).await?;

    let step = Instant::now();
    build_tree(&groups).await?;
    eprintln!(
        "bench: access: {} groups created through GroupCommands in {:.1} s",
        REGIONS * (SITES + 1),
        step.elapsed().as_secs_f64()
    );

    let step = Instant::now();
    let sites = populated();
    let devices = sites.len() * PER_SITE;
    sqlx::query(
        "INSERT INTO devices (id, hostname, is_available)
         SELECT 'dev-' || lpad(i::text, 7, '0'), 'host-' || i, true
           FROM generate_series(0, $1 - 1) i",
    )
    .bind(devices as i64)
    .execute(&pool)
    .await?;
    let meta = meta();
    run_all(
        sites.iter().copied().enumerate().collect(),
        |(k, (r, s))| {
            let (members, meta) = (members.clone(), meta.clone());
            async move {
                let command = MembershipCommand::Add {
                    member_ids: (k * PER_SITE..(k + 1) * PER_SITE)
                        .map(|i| format!("dev-{i:07}"))
                        .collect(),
                    source: MemberSource::Static,
                    rule_version: None,
                    cause: None,
                };
                members
                    .execute(site_id(r, s), command, &meta)
                    .await
                    .map(|_| ())
                    .map_err(|e| BoxError::from(format!("adding members: {e}")))
            }
        },
    )
    .await?;
    eprintln!(
        "bench: access: {devices} devices, static members of {} sites, in {:.1} s",
        sites.len(),
        step.elapsed().as_secs_f64()
    );

    let step = Instant::now();
    settled(&pool).await?;
    for table in [
        "rm_group_tree.groups",
        "rm_group_tree.group_closure",
        "rm_membership.direct",
        "devices",
    ] {
        sqlx::query(&format!("VACUUM ANALYZE {table}"))
            .execute(&pool)
            .await?;
    }
    let closure: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_group_tree.group_closure")
        .fetch_one(&pool)
        .await?;
    eprintln!(
        "bench: access: projectors caught up in {:.1} s ({closure} closure rows)",
        step.elapsed().as_secs_f64()
    );

    let admin = corral_api::auth::create_token(&pool, "bench-admin", "admin").await?;
    let commands = corral_projections::commands::access::access_commands(
        pool.clone(),
        corral_projections::wake::CommitSignal::new(vec![]),
    );
    let bindings: Vec<Binding> = (0..REGIONS)
        .flat_map(|r| (0..SCOPED_SITES).map(move |s| (r, s)))
        .map(|(r, s)| Binding {
            role: "viewer".into(),
            scope: Some(site_id(r, s)),
        })
        .collect();
    let n_bindings = bindings.len();
    let scoped = corral_api::auth::issue(
        &commands,
        &pool,
        corral_api::auth::NewToken {
            subject: "bench-scoped".into(),
            bindings,
            expires_at: None,
        },
        &corral_api::auth::cli_metadata(None),
    )
    .await?
    .secret;

    let state = AppState::new(
        pool.clone(),
        lock_pool.clone(),
        background.waiter(),
        Default::default(),
        corral_api::policy::Policy::built_in().await?,
        ApiConfig::default(),
    );
    let app = corral_api::http::app(state);

    // Check the answers once: the admin sees every group, the scoped subject its 1,000 sites;
    // both get a full page of the measured site's members.
    let site = site_id(42, 0);
    let none = json!({});
    let vars = json!({ "id": site.to_string() });
    for (who, token, total) in [
        ("admin", &admin, REGIONS * (SITES + 1) + 1),
        ("scoped", &scoped, n_bindings),
    ] {
        let data = gql(&app, token, GROUPS, &none).await?;
        let (t, n) = (
            data["groups"]["totalCount"].as_u64().unwrap_or(0) as usize,
            data["groups"]["edges"].as_array().map_or(0, Vec::len),
        );
        if t != total || n != 50 {
            return Err(format!(
                "access: groups as {who}: totalCount {t} (expected {total}), {n} edges"
            )
            .into());
        }
        let data = gql(&app, token, MEMBERS, &vars).await?;
        let m = &data["group"]["members"];
        let (t, ids) = (
            m["totalCount"].as_u64().unwrap_or(0) as usize,
            m["edges"].as_array().map_or(0, |e| {
                e.iter().filter(|e| e["node"]["id"].is_string()).count()
            }),
        );
        if t != PER_SITE || ids != 50 {
            return Err(format!(
                "access: members as {who}: totalCount {t} (expected {PER_SITE}), {ids} devices"
            )
            .into());
        }
    }
    eprintln!(
        "bench: access: setup done in {:.0} s; answers checked",
        suite_started.elapsed().as_secs_f64()
    );

    let cases = [
        (
            "groups(type: DEVICE, first: 50) { totalCount edges }",
            GROUPS,
            &none,
        ),
        (
            "group(site).members(first: 50) { totalCount edges { Device } }",
            MEMBERS,
            &vars,
        ),
    ];
    for (name, query, vars) in cases {
        for _ in 0..WARM_UP {
            gql(&app, &admin, query, vars).await?;
            gql(&app, &scoped, query, vars).await?;
        }
        let (mut a, mut s) = (Vec::new(), Vec::new());
        for _ in 0..args.access_requests {
            for (token, times) in [(&admin, &mut a), (&scoped, &mut s)] {
                let t = Instant::now();
                gql(&app, token, query, vars).await?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        a.sort_by(f64::total_cmp);
        s.sort_by(f64::total_cmp);
        let (a50, s50) = (percentile(&a, 0.5), percentile(&s, 0.5));
        let (a99, s99) = (percentile(&a, 0.99), percentile(&s, 0.99));
        let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
        rows.push(Row {
            name: format!(
                "{name}, scoped viewer ({n_bindings} site bindings, 10,100-group tree), p50 of {} (ms)",
                s.len()
            ),
            corral: format!("{s50:.3}"),
            baseline_name: format!("same request by a global admin, p50 of {} (ms)", a.len()),
            baseline: format!("{a50:.3}"),
            ratio: s50 / a50,
            target: format!("<= 1.30: {}", verdict(s50 / a50 <= 1.3)),
        });
        rows.push(Row {
            name: format!(
                "{name}, scoped viewer ({n_bindings} site bindings, 10,100-group tree), p99 of {} (ms)",
                s.len()
            ),
            corral: format!("{s99:.3}"),
            baseline_name: format!("same request by a global admin, p99 of {} (ms)", a.len()),
            baseline: format!("{a99:.3}"),
            ratio: s99 / a99,
            target: format!("< 10 ms: {}", verdict(s99 < 10.0)),
        });
        eprintln!(
            "bench: access: {name}: admin p50 {a50:.3} p99 {a99:.3}; scoped p50 {s50:.3} p99 {s99:.3} (ms)"
        );
    }
    background.shutdown().await;
    pool.close().await;
    lock_pool.close().await;
    Ok(())
}
