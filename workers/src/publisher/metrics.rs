//! The publisher's counters and its lag behind the log, in Prometheus text format.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use corral_projections::StoreError;
use sqlx::{PgPool, Row};

use super::CHECKPOINT_PREFIX;

/// Counters of this process's publisher, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Events acknowledged by JetStream.
    pub published: AtomicU64,
    /// The last position acknowledged (or found in the stream at a re-sync).
    pub position: AtomicI64,
    /// Whether the NATS connection is up.
    pub connected: AtomicBool,
    /// Whether this process holds the publisher lock (is the cluster's publisher).
    pub leader: AtomicBool,
    /// Rounds interrupted by an error (each followed by a re-sync from the stream).
    pub interruptions: AtomicU64,
}

impl PublisherStats {
    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out += "# HELP corral_events_published_total Events published to NATS by this process.\n\
                # TYPE corral_events_published_total counter\n";
        out += &format!(
            "corral_events_published_total {}\n",
            self.published.load(Ordering::Relaxed)
        );
        out += "# HELP corral_events_publish_position Last log position this process published.\n\
                # TYPE corral_events_publish_position gauge\n";
        out += &format!(
            "corral_events_publish_position {}\n",
            self.position.load(Ordering::Relaxed)
        );
        out += "# HELP corral_events_publish_interruptions_total Publishing rounds interrupted by an error (then re-synced from the stream).\n\
                # TYPE corral_events_publish_interruptions_total counter\n";
        out += &format!(
            "corral_events_publish_interruptions_total {}\n",
            self.interruptions.load(Ordering::Relaxed)
        );
        out += "# HELP corral_events_publisher_connected Whether this process's publisher is connected to NATS.\n\
                # TYPE corral_events_publisher_connected gauge\n";
        out += &format!(
            "corral_events_publisher_connected {}\n",
            u8::from(self.connected.load(Ordering::Relaxed))
        );
        out
    }
}

/// How far one stream's publisher is behind the log, read from the database (so it is right
/// whichever process publishes).
#[derive(Debug, Clone, PartialEq)]
pub struct PublishLag {
    /// The stream (the checkpoint's name without its prefix).
    pub stream: String,
    /// The publisher's checkpoint.
    pub checkpoint: i64,
    /// Events sequenced but not yet published.
    pub events: i64,
    /// Age of the oldest unpublished event in seconds (0 when none).
    pub seconds: f64,
}

/// Every publisher checkpoint's lag behind the log head.
pub async fn lag(pool: &PgPool) -> Result<Vec<PublishLag>, StoreError> {
    let rows = sqlx::query(
        "SELECT substr(c.name, length($1) + 1) AS stream, c.log_position,
                greatest(h.head - c.log_position, 0) AS events,
                coalesce(extract(epoch FROM now() - e.recorded_at)::float8, 0) AS seconds
           FROM log_checkpoints c
          CROSS JOIN (SELECT coalesce(max(log_position), 0) AS head FROM event_log) h
           LEFT JOIN event_log l ON l.log_position = c.log_position + 1
           LEFT JOIN events e ON e.global_position = l.global_position
          WHERE starts_with(c.name, $1)
          ORDER BY c.name",
    )
    .bind(CHECKPOINT_PREFIX)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PublishLag {
                stream: r.try_get("stream")?,
                checkpoint: r.try_get("log_position")?,
                events: r.try_get("events")?,
                seconds: r.try_get::<f64, _>("seconds")?.max(0.0),
            })
        })
        .collect()
}

/// The lag gauges in Prometheus text format.
pub fn render_lag(lags: &[PublishLag]) -> String {
    let mut out = String::new();
    out +=
        "# HELP corral_events_publish_lag_events Events sequenced but not yet published to NATS.\n\
            # TYPE corral_events_publish_lag_events gauge\n";
    for l in lags {
        out += &format!(
            "corral_events_publish_lag_events{{stream=\"{}\"}} {}\n",
            l.stream, l.events
        );
    }
    out += "# HELP corral_events_publish_lag_seconds Age of the oldest event not yet published to NATS.\n\
            # TYPE corral_events_publish_lag_seconds gauge\n";
    for l in lags {
        out += &format!(
            "corral_events_publish_lag_seconds{{stream=\"{}\"}} {}\n",
            l.stream, l.seconds
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render() {
        let stats = PublisherStats::default();
        stats.published.store(5, Ordering::Relaxed);
        stats.position.store(9, Ordering::Relaxed);
        let text = stats.render();
        assert!(text.contains("corral_events_published_total 5\n"));
        assert!(text.contains("corral_events_publish_position 9\n"));
        let text = render_lag(&[PublishLag {
            stream: "S".into(),
            checkpoint: 3,
            events: 4,
            seconds: 1.5,
        }]);
        assert!(text.contains("corral_events_publish_lag_events{stream=\"S\"} 4\n"));
        assert!(text.contains("corral_events_publish_lag_seconds{stream=\"S\"} 1.5\n"));
    }
}
