//! Benchmark (a): group commands through the executor against raw inserts.

use std::sync::Arc;

use corral_api::runtime::{self, BoxError};
use corral_domain::group::{GroupCommand, GroupEvent, GroupType};
use corral_domain::metadata::{EventMetadata, Source};
use serde_json::Map;
use uuid::Uuid;

use super::{command, command_row, throughput, Row};

pub(super) async fn bench_commands(
    url: &str,
    seconds: u64,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    let (pool, lock_pool) = runtime::pools(url, 40).await?;
    corral_migrations::migrate(&pool).await?;
    let groups = Arc::new(corral_projections::commands::groups::GroupCommands::new(
        pool.clone(),
        lock_pool,
        Default::default(),
    ));
    runtime::ensure_roots(&groups).await?;
    let meta = EventMetadata::system(Source::Cli, "bench");
    let root = GroupType::Device.root_id();
    let mut parents = Vec::new();
    for i in 0..32 {
        let id = Uuid::new_v4();
        let cmd = GroupCommand::Create {
            id,
            name: format!("parent-{i}"),
            group_type: GroupType::Device,
            parent_id: root,
            description: None,
            metadata: None,
        };
        groups.execute(cmd, None, &meta).await?;
        parents.push(id);
    }
    sqlx::query("CREATE TABLE bench_raw (LIKE events INCLUDING ALL)")
        .execute(&pool)
        .await?;
    let payload = serde_json::to_value(GroupEvent::GroupCreated {
        group_type: GroupType::Device,
        name: "x".into(),
        parent_id: Some(root),
        description: None,
        metadata: Map::new(),
        is_system: false,
    })?;
    let metadata = serde_json::to_value(meta.to_map())?;
    for concurrency in [1usize, 32] {
        let (g, parents2, meta2) = (groups.clone(), parents.clone(), meta.clone());
        let run = Uuid::new_v4().simple().to_string();
        let corral = throughput(concurrency, seconds, move |worker, i| {
            let (g, parent, meta, run) = (g.clone(), parents2[worker], meta2.clone(), run.clone());
            async move {
                let cmd = GroupCommand::Create {
                    id: Uuid::new_v4(),
                    name: format!("g-{run}-{i}"),
                    group_type: GroupType::Device,
                    parent_id: parent,
                    description: None,
                    metadata: None,
                };
                command(&g, cmd, &meta).await?;
                Ok(())
            }
        })
        .await?;
        let (p, pl, md) = (pool.clone(), payload.clone(), metadata.clone());
        let raw = throughput(concurrency, seconds, move |_, _| {
            let (p, pl, md) = (p.clone(), pl.clone(), md.clone());
            async move {
                raw_insert(&p, pl, md).await?;
                Ok(())
            }
        })
        .await?;
        // The shape of postgres-es's commit alone (BEGIN; INSERT; COMMIT), which every command
        // pays: the ceiling for any executor built on it.
        let (p, pl, md) = (pool.clone(), payload.clone(), metadata.clone());
        let raw_tx = throughput(concurrency, seconds, move |_, _| {
            let (p, pl, md) = (p.clone(), pl.clone(), md.clone());
            async move {
                let mut tx = p.begin().await?;
                raw_insert(&mut *tx, pl, md).await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await?;
        rows.push(Row {
            name: format!("raw BEGIN; INSERT; COMMIT (postgres-es's commit), concurrency {concurrency} (rows/s)"),
            corral: format!("{raw_tx:.0}"),
            baseline_name: "raw INSERT of an event row (rows/s)".into(),
            baseline: format!("{raw:.0}"),
            ratio: raw_tx / raw,
            target: "(ceiling)".into(),
        });
        let (g, parents3, meta3) = (groups.clone(), parents.clone(), meta.clone());
        let updates = throughput(concurrency, seconds, move |worker, i| {
            let (g, id, meta) = (g.clone(), parents3[worker], meta3.clone());
            async move {
                let cmd = GroupCommand::Update {
                    id,
                    description: Some(format!("update {i}")),
                    metadata: None,
                };
                command(&g, cmd, &meta).await?;
                Ok(())
            }
        })
        .await?;
        // What a mutation pays before it waits for the read models: the command plus the
        // lookup of its event's cursor.
        let (g, parents4, meta4, p4) =
            (groups.clone(), parents.clone(), meta.clone(), pool.clone());
        let with_cursor = throughput(concurrency, seconds, move |worker, i| {
            let (g, id, meta, p) = (g.clone(), parents4[worker], meta4.clone(), p4.clone());
            async move {
                let cmd = GroupCommand::Update {
                    id,
                    description: Some(format!("again {i}")),
                    metadata: None,
                };
                let committed = command(&g, cmd, &meta).await?;
                if let Some(token) = committed.token {
                    token.cursor(&p).await?;
                }
                Ok(())
            }
        })
        .await?;
        rows.push(command_row("updateGroup", concurrency, updates, raw));
        rows.push(command_row(
            "updateGroup + cursor lookup",
            concurrency,
            with_cursor,
            raw,
        ));
        rows.push(command_row("createGroup", concurrency, corral, raw));
        eprintln!("bench: commands at concurrency {concurrency}: {corral:.0}/s vs raw {raw:.0}/s");
    }
    pool.close().await;
    Ok(())
}

/// The baseline row: one event row, as postgres-es would insert it, into `bench_raw`.
async fn raw_insert<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    payload: serde_json::Value,
    metadata: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO bench_raw (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Group', $1, 1, 'GroupCreated', '1', $2, $3)",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(payload)
    .bind(metadata)
    .execute(executor)
    .await?;
    Ok(())
}
