//! The JetStream pieces every exactly-once publisher of Corral shares (the event log's and the
//! membership feed's): creating or updating its stream, finding the newest message that
//! carries a `Corral-Position`, and sending a batch pipelined with
//! `Nats-Expected-Last-Sequence`, counting only the unbroken run of acks at their expected
//! sequences (`plan::tally`).

use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;

use super::plan::{self, Ack};
use super::POSITION_HEADER;

/// What a stream must be: Corral owns its name, subjects and dedup window (replicas, limits
/// and the rest are the operator's).
#[derive(Debug, Clone)]
pub(crate) struct StreamSpec<'a> {
    pub(crate) name: &'a str,
    pub(crate) subjects: Vec<String>,
    pub(crate) duplicate_window: Duration,
    pub(crate) max_age: Duration,
}

/// Creates the stream when it is missing; otherwise changes only what Corral owns. Returns
/// its last sequence and message count.
pub(crate) async fn ensure_stream(
    js: &Context,
    spec: &StreamSpec<'_>,
) -> Result<(u64, u64), String> {
    let info = match js.get_stream(spec.name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| format!("reading the stream's configuration: {e}"))?
                .clone();
            if plan::stream_needs_update(
                &info.config.subjects,
                info.config.duplicate_window,
                &spec.subjects,
                spec.duplicate_window,
            ) {
                let mut updated = info.config.clone();
                updated.subjects = spec.subjects.clone();
                updated.duplicate_window = spec.duplicate_window;
                js.update_stream(updated)
                    .await
                    .map_err(|e| format!("updating the stream: {e}"))?
            } else {
                info
            }
        }
        Err(_) => js
            .create_stream(stream::Config {
                name: spec.name.to_string(),
                subjects: spec.subjects.clone(),
                storage: StorageType::File,
                max_age: spec.max_age,
                duplicate_window: spec.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("creating the stream: {e}"))?
            .cached_info()
            .clone(),
    };
    Ok((info.state.last_sequence, info.state.messages))
}

/// The headers of the stream's newest message that has a `Corral-Position` (`None` when none
/// of the last [`plan::LOOK_BACK`] has). Messages from other publishers on its subjects are
/// skipped.
pub(crate) async fn last_marked(
    js: &Context,
    stream: &str,
    last_sequence: u64,
) -> Result<Option<HeaderMap>, String> {
    let handle = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| format!("opening the stream: {e}"))?;
    for sequence in plan::look_back(last_sequence) {
        // A deleted sequence (purged, or removed by hand) is skipped.
        if let Ok(message) = handle.get_raw_message(sequence).await {
            if message.headers.get(POSITION_HEADER).is_some() {
                return Ok(Some(message.headers));
            }
            tracing::warn!(
                nats.stream = %stream,
                nats.sequence = message.sequence,
                "a message without a Corral-Position header in the stream (another publisher on its subjects?)"
            );
        }
    }
    if last_sequence > 0 {
        tracing::warn!(
            nats.stream = %stream,
            "none of the stream's last messages has a Corral-Position header; resuming from the checkpoint"
        );
    }
    Ok(None)
}

/// One message to send: its subject, headers and body, and the key its ack is reported by.
pub(crate) struct Outgoing {
    pub(crate) key: i64,
    pub(crate) subject: String,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

/// What a pipelined batch did: how many leading messages are stored at their expected
/// sequences, the stream's last sequence after them, and the first failure.
pub(crate) struct Sent {
    pub(crate) published: usize,
    pub(crate) last_sequence: u64,
    pub(crate) error: Option<String>,
}

/// Most messages sent before their acks are awaited (async-nats holds at most 5,000 acks in
/// flight per context, and would wait forever for room a pipelined batch never frees).
const PIPELINE: usize = 1_000;

/// Sends every message (each expecting the previous one's stream sequence, starting after
/// `last_sequence`), in pipelined chunks: a chunk is sent, then its acks are awaited and taken
/// in order. Every ack of a chunk is awaited even after a failure, so that the re-sync that
/// follows sees the stream settled; no later chunk is sent after a failure.
pub(crate) async fn send_pipelined(
    js: &Context,
    last_sequence: u64,
    messages: Vec<Outgoing>,
) -> Sent {
    let mut sent = Sent {
        published: 0,
        last_sequence,
        error: None,
    };
    let mut messages = messages.into_iter().peekable();
    while messages.peek().is_some() {
        let chunk: Vec<Outgoing> = messages.by_ref().take(PIPELINE).collect();
        let n = chunk.len();
        let part = send_chunk(js, sent.last_sequence, chunk).await;
        sent.published += part.published;
        sent.last_sequence = part.last_sequence;
        if part.error.is_some() || part.published < n {
            sent.error = part.error.or(Some("a chunk was not fully stored".into()));
            break;
        }
    }
    sent
}

async fn send_chunk(js: &Context, last_sequence: u64, messages: Vec<Outgoing>) -> Sent {
    let mut pending: Vec<(i64, u64, PublishAckFuture)> = Vec::with_capacity(messages.len());
    let mut error = None;
    for (i, m) in messages.into_iter().enumerate() {
        let expected = plan::expected_last_sequence(last_sequence, i);
        let mut message = PublishMessage::build()
            .payload(m.body.into())
            .expected_last_sequence(expected);
        for (name, value) in &m.headers {
            message = message.header(*name, value.as_str());
        }
        match js.send_publish(m.subject, message).await {
            Ok(ack) => pending.push((m.key, expected + 1, ack)),
            Err(e) => {
                error = Some(format!("publishing: {e}"));
                break;
            }
        }
    }
    // Awaited together (each with its own timeout, so an outage costs one timeout, not one
    // per message), then taken in order.
    let (expected, acks): (Vec<(i64, u64)>, Vec<PublishAckFuture>) =
        pending.into_iter().map(|(k, s, a)| ((k, s), a)).unzip();
    let results =
        futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await;
    let acks = results
        .into_iter()
        .map(|r| match r {
            Ok(ack) => Ack::Stored {
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            },
            Err(e) => Ack::Failed(e.to_string()),
        })
        .collect();
    let tally = plan::tally(&expected, acks);
    Sent {
        published: tally.published as usize,
        last_sequence: tally.done.map_or(last_sequence, |d| d.last_sequence),
        // A failure to send comes first; then the first failed ack.
        error: error.or(tally.error),
    }
}
