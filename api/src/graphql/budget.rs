//! The database time one request may use.
//!
//! Three limits work together (`docs/security.md`):
//! - every statement an API request runs has `statement_timeout` (`CORRAL_STATEMENT_TIMEOUT_MS`,
//!   set on the API's own pool), and a cancelled statement answers `QUERY_TIMEOUT`;
//! - the statements whose cost the caller controls (rule filters scanning the inventory:
//!   `devices(filter:)`, `services(filter:)`, their `totalCount`, `previewRule`) run one at a
//!   time per request, each with `statement_timeout` lowered to what is left of the request's
//!   budget (`CORRAL_REQUEST_DB_BUDGET_MS`), so together they never use more than the budget;
//!   once it is spent they answer `REQUEST_BUDGET_EXCEEDED` without running;
//! - a query operation (not a mutation, whose commit must never be cut off) ends with
//!   `REQUEST_BUDGET_EXCEEDED` when the budget's time has passed.

use std::time::{Duration, Instant};

use corral_projections::StoreError;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use super::errors::{coded, internal};
use crate::error_codes::ErrorCode;

/// A request's budget (in its data: one per HTTP request or websocket operation).
pub struct DbBudget {
    started: Instant,
    limit: Duration,
    statement_timeout: Duration,
    /// The costly statements of one request run one at a time.
    turn: tokio::sync::Mutex<()>,
    /// Whether the document holds only queries (set by the query guard once parsed).
    query_only: std::sync::atomic::AtomicBool,
}

impl DbBudget {
    /// A budget of `limit` starting now; statements are cut at `statement_timeout` at most.
    pub fn new(limit: Duration, statement_timeout: Duration) -> Self {
        Self {
            started: Instant::now(),
            limit,
            statement_timeout,
            turn: tokio::sync::Mutex::new(()),
            query_only: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What is left.
    pub fn remaining(&self) -> Duration {
        self.limit.saturating_sub(self.started.elapsed())
    }

    /// The whole budget.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    pub(crate) fn set_query_only(&self, yes: bool) {
        self.query_only
            .store(yes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the operation may be cut off when the budget's time has passed.
    pub(crate) fn query_only(&self) -> bool {
        self.query_only.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The error of a spent budget.
    pub fn exceeded(&self) -> async_graphql::Error {
        coded(
            ErrorCode::RequestBudgetExceeded,
            format!(
                "this request used up its {} ms of database time (CORRAL_REQUEST_DB_BUDGET_MS); ask for less: fewer or narrower filters",
                self.limit.as_millis()
            ),
        )
    }

    /// Runs `work` within the budget when `costly` (see [`DbBudget::run`]), otherwise
    /// directly on a connection of `pool`.
    pub async fn run_if<T, F>(
        &self,
        costly: bool,
        pool: &PgPool,
        work: F,
    ) -> async_graphql::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>>,
    {
        if costly {
            return self.run(pool, work).await;
        }
        let mut conn = pool.acquire().await.map_err(internal)?;
        work(&mut conn).await.map_err(internal)
    }

    /// Runs `work` (costly statements of the caller's choosing) after the request's other
    /// costly work, in a transaction whose `statement_timeout` is what is left of the budget.
    pub async fn run<T, F>(&self, pool: &PgPool, work: F) -> async_graphql::Result<T>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>>,
    {
        let _turn = self.turn.lock().await;
        let left = self.remaining();
        if left.is_zero() {
            return Err(self.exceeded());
        }
        let timeout = left
            .min(self.statement_timeout)
            .max(Duration::from_millis(1));
        let lowered = timeout < self.statement_timeout;
        let mut tx = pool.begin().await.map_err(internal)?;
        sqlx::query("SELECT set_config('statement_timeout', $1, true)")
            .bind(format!("{}ms", timeout.as_millis()))
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        let out = work(&mut tx).await;
        match out {
            Ok(v) => {
                tx.commit().await.map_err(internal)?;
                Ok(v)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                let err = internal(e);
                let timed_out = err
                    .extensions
                    .as_ref()
                    .and_then(|x| x.get("code"))
                    .is_some_and(|c| {
                        *c == async_graphql::Value::from(ErrorCode::QueryTimeout.as_str())
                    });
                if timed_out && lowered {
                    Err(self.exceeded())
                } else {
                    Err(err)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_runs_down_with_time() {
        let b = DbBudget::new(Duration::from_millis(50), Duration::from_secs(5));
        assert!(b.remaining() <= Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.remaining().is_zero());
        let e = b.exceeded();
        assert_eq!(
            e.extensions.as_ref().and_then(|x| x.get("code")),
            Some(&async_graphql::Value::from("REQUEST_BUDGET_EXCEEDED"))
        );
    }
}
