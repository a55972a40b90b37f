//! The NATS publisher's rate beside a raw async-nats publish loop of the same payloads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_api::runtime::BoxError;
use corral_api::state::AppState;
use corral_domain::membership::MembershipCommand;
use corral_domain::metadata::{EventMetadata, Source};
use corral_projections::public_log::{self, LogFilter};
use sqlx::PgPool;
use uuid::Uuid;

use super::AuditArgs;
use crate::Row;

pub(super) async fn nats_rates(
    pool: &PgPool,
    nats: &str,
    state: &AppState,
    groups: &[Uuid],
    devices: &[String],
    args: &AuditArgs,
    rows: &mut Vec<Row>,
) -> Result<(), BoxError> {
    // Enough events in the log (membership adds of single ids, as above).
    let mut conn = pool.acquire().await?;
    loop {
        let (head, _) = public_log::head(&mut conn).await?;
        if head as usize >= args.publish_events {
            break;
        }
        // Each group gets an exclude and an unexclude per device: just enough rounds.
        let per_group = (args.publish_events - head as usize) / (2 * groups.len()) + 1;
        let mut tasks = tokio::task::JoinSet::new();
        for &group in groups {
            let memberships = state.memberships.clone();
            let ids: Vec<String> = devices.iter().take(per_group).cloned().collect();
            tasks.spawn(async move {
                let meta = EventMetadata::system(Source::Cli, "fill");
                for chunk in ids.chunks(1) {
                    let c = MembershipCommand::Exclude {
                        member_ids: chunk.to_vec(),
                    };
                    memberships
                        .execute(group, c, &meta)
                        .await
                        .map_err(|e| e.to_string())?;
                    let c = MembershipCommand::Unexclude {
                        member_ids: chunk.to_vec(),
                    };
                    memberships
                        .execute(group, c, &meta)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
    }
    // Let the sequencer finish.
    let head = loop {
        let (events, logged): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM event_log)",
        )
        .fetch_one(&mut *conn)
        .await?;
        if events == logged {
            break logged;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let entries = public_log::read(&mut conn, 0, Some(head), &LogFilter::default(), head).await?;
    drop(conn);
    let tag = Uuid::new_v4().simple().to_string();
    let client = async_nats::connect(nats).await?;
    let js = async_nats::jetstream::new(client.clone());

    // Raw: the same envelopes, subjects and message ids, pipelined in batches of the same size.
    let raw_config = async_nats::jetstream::stream::Config {
        name: format!("BENCH_RAW_{tag}"),
        subjects: vec![format!("benchraw{tag}.>")],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(raw_config.clone()).await?;
    let config = corral_workers::publisher::PublisherConfig {
        stream: format!("BENCH_PUB_{tag}"),
        subject_prefix: format!("benchpub{tag}"),
        batch: args.publish_batch.max(1),
        ..Default::default()
    };
    let batch = config.batch as usize;
    let payloads: Vec<(String, async_nats::HeaderMap, String)> = entries
        .iter()
        .map(|e| {
            let mut headers = async_nats::HeaderMap::new();
            for (k, v) in corral_workers::publisher::headers(e) {
                headers.insert(k, v.as_str());
            }
            let subject =
                config
                    .subject(e)
                    .replacen(&config.subject_prefix, &format!("benchraw{tag}"), 1);
            (subject, headers, e.envelope().to_string())
        })
        .collect();
    let started = Instant::now();
    for chunk in payloads.chunks(batch) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, headers, payload) in chunk {
            acks.push(
                js.publish_with_headers(subject.clone(), headers.clone(), payload.clone().into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    let raw_rate = payloads.len() as f64 / started.elapsed().as_secs_f64();
    js.delete_stream(&raw_config.name).await?;

    // Corral's publisher: from its first event to the head (it reads, envelopes, publishes).
    let stats = Arc::new(corral_workers::publisher::PublisherStats::default());
    let started = Instant::now();
    let publisher = corral_workers::publisher::spawn(
        pool.clone(),
        nats.to_string(),
        config.clone(),
        stats.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.position.load(std::sync::atomic::Ordering::Relaxed) < head {
        if Instant::now() > deadline {
            return Err("the publisher did not reach the head in 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = head as f64 / started.elapsed().as_secs_f64();
    publisher.shutdown().await;
    js.delete_stream(&config.stream).await?;
    rows.push(Row {
        name: format!("NATS publisher, {head} events from PostgreSQL to JetStream (events/s)"),
        corral: format!("{rate:.0}"),
        baseline_name: format!(
            "raw async-nats publish loop, same payloads, batches of {batch} (msgs/s)"
        ),
        baseline: format!("{raw_rate:.0}"),
        ratio: rate / raw_rate,
        target: ">= 0.50".into(),
    });
    Ok(())
}
