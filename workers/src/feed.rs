//! The JetStream machinery the NATS feeds share: one stream with two subjects, a durable pull
//! consumer per subject, each message handled and then settled (ack after the handler's
//! commit, TERM for a message that can never apply, NAK with a delay for a retry), and the
//! consumers restarted with back-off after errors until `stop`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, Message};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::Instrument;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the feed reads. Tests give each run its own names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// JetStream stream (file storage) holding both subjects.
    pub stream: String,
    /// Subject of device arrays.
    pub devices_subject: String,
    /// Subject of service arrays.
    pub services_subject: String,
    /// Durable consumer of the device subject.
    pub devices_consumer: String,
    /// Durable consumer of the service subject.
    pub services_consumer: String,
    /// How long JetStream waits before redelivering a message that failed on the database.
    pub retry_delay: Duration,
    /// How long the stream keeps messages.
    pub max_age: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            stream: "CORRAL_INVENTORY".into(),
            devices_subject: "corral.inventory.devices".into(),
            services_subject: "corral.inventory.services".into(),
            devices_consumer: "corral-inventory-devices".into(),
            services_consumer: "corral-inventory-services".into(),
            retry_delay: Duration::from_secs(5),
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What a feed carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Device arrays.
    Devices,
    /// Service arrays.
    Services,
}

impl Kind {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Devices => "devices",
            Kind::Services => "services",
        }
    }
}

/// What a feed does with each message.
#[async_trait::async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    /// For logs and the client name (`inventory`, `telemetry`).
    fn name(&self) -> &'static str;
    /// Handles one message of `kind` from `consumer` (the durable consumer's name and the
    /// stream's creation time, `<name>@<nanos>`); returns how to settle it.
    async fn handle(&self, kind: Kind, consumer: &str, msg: &Message) -> AckKind;
}

/// Handles, then settles one message: a confirmed ack (once it returns, a restart does not
/// redeliver), or the handler's TERM or NAK.
async fn process(handler: &dyn MessageHandler, kind: Kind, consumer: &str, msg: Message) {
    let settle = handler.handle(kind, consumer, &msg).await;
    let acked = if matches!(settle, AckKind::Ack) {
        msg.double_ack().await
    } else {
        msg.ack_with(settle).await
    };
    if let Err(e) = acked {
        tracing::warn!(error = %e, feed = handler.name(), "could not settle a message; it may be redelivered");
    }
}

/// Resolves once `stop` turns true or its sender is gone (the guard it returns is not `Send`,
/// so it is dropped here).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One subject's durable consumer, until `stop` or an error.
async fn consume(
    handler: &dyn MessageHandler,
    js: &jetstream::Context,
    config: &FeedConfig,
    kind: Kind,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![
                config.devices_subject.clone(),
                config.services_subject.clone(),
            ],
            storage: StorageType::File,
            max_age: config.max_age,
            ..Default::default()
        })
        .await?;
    let (name, subject) = match kind {
        Kind::Devices => (&config.devices_consumer, &config.devices_subject),
        Kind::Services => (&config.services_consumer, &config.services_subject),
    };
    let consumer: PullConsumer = stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                ..Default::default()
            },
        )
        .await?;
    // A stream deleted and created again numbers its messages from 1 again: a stream sequence
    // names a message only together with the stream's creation time, so handlers that
    // remember what they applied (by consumer and sequence) are given both.
    let identity = format!(
        "{name}@{}",
        stream.cached_info().created.unix_timestamp_nanos()
    );
    let mut messages = consumer.messages().await?;
    tracing::info!(feed = handler.name(), nats.stream = %config.stream, nats.consumer = %name, nats.subject = %subject, "feed consuming");
    loop {
        tokio::select! {
            _ = stopped(stop) => return Ok(()),
            next = messages.next() => match next {
                None => return Err("the message stream ended".into()),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(msg)) => {
                    let span = tracing::info_span!("feed.message", feed = handler.name(), nats.subject = %msg.subject, feed.kind = kind.as_str());
                    process(handler, kind, &identity, msg).instrument(span).await;
                }
            }
        }
    }
}

/// Runs one consumer, starting it again (with back-off) after errors, until `stop`.
async fn run_kind(
    handler: Arc<dyn MessageHandler>,
    js: jetstream::Context,
    config: Arc<FeedConfig>,
    kind: Kind,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = std::time::Instant::now();
        match consume(handler.as_ref(), &js, &config, kind, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, feed = handler.name(), feed.kind = kind.as_str(), retry_in_ms = backoff.as_millis() as u64, "feed interrupted; starting again")
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(250);
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Consumes both subjects until `stop` turns true (or its sender is dropped). Connection
/// problems are logged and retried; the feed never gives up while running.
pub async fn run(
    handler: Arc<dyn MessageHandler>,
    nats_url: String,
    config: FeedConfig,
    mut stop: watch::Receiver<bool>,
) {
    let client = loop {
        let connecting = async_nats::ConnectOptions::new()
            .name(format!("corral-{}-feed", handler.name()))
            .retry_on_initial_connect()
            .connect(nats_url.as_str());
        match connecting.await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, nats.url = %nats_url, "cannot use NATS_URL; trying again in 30 s");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    };
    let js = jetstream::new(client);
    let config = Arc::new(config);
    tokio::join!(
        run_kind(
            handler.clone(),
            js.clone(),
            config.clone(),
            Kind::Devices,
            stop.clone()
        ),
        run_kind(handler, js, config, Kind::Services, stop),
    );
}
