//! Prometheus text metrics: HTTP requests and projector lag.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use corral_projections::runner::ProjectorStatus;

const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Request counters and duration histograms by route and status.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    loader_batches: Mutex<BTreeMap<&'static str, u64>>,
    /// Counters of this process's NATS inventory feed.
    pub inventory_feed: std::sync::Arc<corral_workers::inventory_feed::FeedStats>,
    /// Counters of this process's NATS telemetry feed.
    pub telemetry_feed: std::sync::Arc<corral_workers::telemetry_feed::TelemetryStats>,
    /// Counters of this process's NATS publisher of the event log.
    pub publisher: std::sync::Arc<corral_workers::publisher::PublisherStats>,
    /// Counters of this process's NATS membership feed.
    pub membership_feed: std::sync::Arc<corral_workers::membership_feed::FeedStats>,
}

impl Metrics {
    /// Records one request.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        drop(requests);
        let secs = elapsed.as_secs_f64();
        let mut durations = self.durations.lock().unwrap_or_else(|e| e.into_inner());
        let h = durations.entry(route.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Counts one DataLoader batch (one query for many keys).
    pub fn loader_batch(&self, loader: &'static str) {
        *self
            .loader_batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(loader)
            .or_default() += 1;
    }

    /// DataLoader batches so far, all loaders together.
    pub fn loader_batches_total(&self) -> u64 {
        self.loader_batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self, projectors: &[ProjectorStatus]) -> String {
        let mut out = String::new();
        out.push_str("# HELP corral_http_requests_total HTTP requests by method, route and status.\n# TYPE corral_http_requests_total counter\n");
        for ((method, route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "corral_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP corral_http_request_duration_seconds HTTP request durations by route.\n# TYPE corral_http_request_duration_seconds histogram\n");
        for (route, h) in self
            .durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "corral_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(
                out,
                "corral_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "corral_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "corral_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP corral_dataloader_batches_total Queries issued by GraphQL DataLoaders.\n# TYPE corral_dataloader_batches_total counter\n");
        for (loader, n) in self
            .loader_batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "corral_dataloader_batches_total{{loader=\"{loader}\"}} {n}"
            );
        }
        out.push_str("# HELP corral_projector_lag_events Events not yet applied by each projector.\n# TYPE corral_projector_lag_events gauge\n");
        for p in projectors {
            let _ = writeln!(
                out,
                "corral_projector_lag_events{{projector=\"{}\"}} {}",
                p.name, p.lag_events
            );
        }
        out.push_str("# HELP corral_projector_lag_seconds Age of the oldest event not yet applied.\n# TYPE corral_projector_lag_seconds gauge\n");
        for p in projectors {
            let _ = writeln!(
                out,
                "corral_projector_lag_seconds{{projector=\"{}\"}} {}",
                p.name, p.lag_seconds
            );
        }
        out.push_str("# HELP corral_projector_events_processed_total Events applied by each projector.\n# TYPE corral_projector_events_processed_total counter\n");
        for p in projectors {
            let _ = writeln!(
                out,
                "corral_projector_events_processed_total{{projector=\"{}\"}} {}",
                p.name, p.events_processed
            );
        }
        out.push_str(&self.inventory_feed.render());
        out.push_str(&self.telemetry_feed.render());
        out.push_str(&self.publisher.render());
        out.push_str(&self.membership_feed.render());
        out
    }
}

/// Leadership metrics: `corral_leader` (this process leads it) and `corral_leader_present`
/// (some process of the cluster does), one series per singleton worker.
pub fn render_leaders(
    here: &[String],
    cluster: &[(
        corral_projections::leader::Leadership,
        Option<corral_projections::leader::Holder>,
    )],
) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP corral_leader Whether this process leads the singleton worker.
# TYPE corral_leader gauge
",
    );
    for (leadership, _) in cluster {
        let name = leadership.name();
        let _ = writeln!(
            out,
            "corral_leader{{worker=\"{name}\"}} {}",
            u8::from(here.contains(&name))
        );
    }
    out.push_str("# HELP corral_leader_present Whether some process of the cluster leads the singleton worker (0: it runs nowhere).
# TYPE corral_leader_present gauge
");
    for (leadership, holder) in cluster {
        let _ = writeln!(
            out,
            "corral_leader_present{{worker=\"{}\"}} {}",
            leadership.name(),
            u8::from(holder.is_some())
        );
    }
    out
}
