//! Per-subject rate limits: a token bucket per subject, per process
//! (`CORRAL_RATE_LIMIT_PER_SUBJECT` requests a second, bursts of `CORRAL_RATE_LIMIT_BURST`).
//!
//! HTTP GraphQL requests are counted in `http.rs` (refused with 429 and `Retry-After`); each
//! operation of a websocket by [`WsRateLimit`] (refused with a `RATE_LIMITED` GraphQL error,
//! the connection stays open). The number of subjects tracked is capped: when full, idle
//! subjects (whose bucket has refilled) are forgotten first, then the least recently seen.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::{ErrorExtensionValues, ServerError, ServerResult};

use crate::auth::Actor;
use crate::error_codes::ErrorCode;

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Requests a second each subject is refilled with (0: no limit).
    pub per_second: u32,
    /// The most requests a subject may send at once.
    pub burst: u32,
    /// The most subjects tracked at once.
    pub max_subjects: usize,
}

impl RateLimitConfig {
    /// No limit (what [`crate::state::ApiConfig::default`] uses; `corral serve` takes the
    /// settings' defaults).
    pub const OFF: Self = Self {
        per_second: 0,
        burst: 0,
        max_subjects: 10_000,
    };
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self::OFF
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of one process.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter with `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether limits apply.
    pub fn enabled(&self) -> bool {
        self.config.per_second > 0
    }

    /// Takes one request from `subject`'s bucket; `Err(wait)` when it is empty.
    pub fn check(&self, subject: &str) -> Result<(), Duration> {
        self.check_at(subject, Instant::now())
    }

    fn check_at(&self, subject: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let rate = f64::from(self.config.per_second);
        let burst = f64::from(self.config.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(subject) && buckets.len() >= self.config.max_subjects.max(1) {
            let full = |b: &Bucket| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate >= burst
            };
            buckets.retain(|_, b| !full(b));
            if buckets.len() >= self.config.max_subjects.max(1) {
                if let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, b)| b.at)
                    .map(|(k, _)| k.clone())
                {
                    buckets.remove(&oldest);
                }
            }
        }
        let bucket = buckets.entry(subject.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refilled = (bucket.tokens
            + now.saturating_duration_since(bucket.at).as_secs_f64() * rate)
            .min(burst);
        bucket.at = now;
        if refilled >= 1.0 {
            bucket.tokens = refilled - 1.0;
            Ok(())
        } else {
            bucket.tokens = refilled;
            Err(Duration::from_secs_f64((1.0 - refilled) / rate))
        }
    }

    /// Subjects tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Whole seconds a client should wait (at least one), for `Retry-After`.
pub fn retry_after_secs(wait: Duration) -> u64 {
    // At most a few hours: the rate is at least one a second.
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The message of a refusal.
pub fn message(config: &RateLimitConfig, wait: Duration) -> String {
    format!(
        "too many requests: this subject may send {} a second (bursts of {}; CORRAL_RATE_LIMIT_PER_SUBJECT, CORRAL_RATE_LIMIT_BURST); retry in {}s",
        config.per_second,
        config.burst,
        retry_after_secs(wait)
    )
}

/// Marks a request whose subject was counted already (HTTP requests, in `http.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Counted;

/// Counts each operation that was not counted yet (websocket operations) against its
/// actor's bucket. Registered after [`crate::ws::OperationIdentity`], which gives a
/// websocket operation its actor.
pub struct WsRateLimit(pub Arc<RateLimiter>);

impl ExtensionFactory for WsRateLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(WsRateLimitExtension(self.0.clone()))
    }
}

struct WsRateLimitExtension(Arc<RateLimiter>);

#[async_trait::async_trait]
impl Extension for WsRateLimitExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        if self.0.enabled() && !request.data.contains_key(&TypeId::of::<Counted>()) {
            let subject = request
                .data
                .get(&TypeId::of::<Actor>())
                .and_then(|a| a.downcast_ref::<Actor>())
                .map(|a| a.subject.clone());
            if let Some(subject) = subject {
                if let Err(wait) = self.0.check(&subject) {
                    let mut e = ServerError::new(message(&self.0.config, wait), None);
                    let mut ext = ErrorExtensionValues::default();
                    ext.set("code", ErrorCode::RateLimited.as_str());
                    ext.set("retryAfter", retry_after_secs(wait));
                    e.extensions = Some(ext);
                    return Err(e);
                }
            }
        }
        next.run(ctx, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32, max_subjects: usize) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            per_second,
            burst,
            max_subjects,
        })
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limiter(10, 3, 100);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("a", t).is_ok());
        }
        let wait = l.check_at("a", t).expect_err("empty");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(l.check_at("b", t).is_ok(), "others are unaffected");
        assert!(l.check_at("a", t + Duration::from_millis(110)).is_ok());
        assert!(l.check_at("a", t + Duration::from_millis(110)).is_err());
    }

    #[test]
    fn zero_disables() {
        let l = limiter(0, 0, 1);
        for _ in 0..1000 {
            assert!(l.check("a").is_ok());
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn the_subjects_tracked_are_capped() {
        let l = limiter(1, 5, 100);
        let t = Instant::now();
        for i in 0..10_000 {
            let _ = l.check_at(&format!("s{i}"), t);
            assert!(l.tracked() <= 100);
        }
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
