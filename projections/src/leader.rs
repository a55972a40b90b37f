//! Singleton workers: one leader per cluster, elected by a session advisory lock held on a
//! connection of its own.
//!
//! The lock lives exactly as long as its session, so the connection is detached from the pool
//! (a pooled one would go back still holding it) and the server is told never to end it for
//! idleness. A leader checks that its session still holds the lock before each pass
//! ([`Leader::check`]): a dead connection, or a session a DBA terminated, ends leadership at
//! once, and the process waits to take it again instead of working beside the new leader.
//! [`Leading`] is that loop, shared by the singleton workers.
//!
//! Who leads is visible twice: [`held_here`] lists what this process leads (the
//! `corral_leader` metric), and [`cluster`] asks `pg_locks` who holds each lock in the whole
//! cluster (`corral projections status`, `corral_leader_present`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::watch;

use crate::locks::{KeyedLock, Lock};
use crate::StoreError;

/// A leadership: a singleton worker's lock, or the publisher's lock of one stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Leadership {
    /// One of [`Lock::leaderships`].
    Worker(Lock),
    /// The NATS publisher of a stream.
    Publisher(String),
}

impl Leadership {
    /// The name shown in metrics and status (`rule_evaluator`, `publisher:CORRAL_EVENTS`).
    pub fn name(&self) -> String {
        match self {
            Leadership::Worker(lock) => lock.name().to_string(),
            Leadership::Publisher(stream) => {
                format!("{}:{stream}", KeyedLock::PublisherStream.name())
            }
        }
    }

    /// Every leadership of a cluster whose publisher writes `stream`.
    pub fn all(stream: &str) -> Vec<Leadership> {
        let mut all: Vec<Leadership> = Lock::leaderships().map(Leadership::Worker).collect();
        all.push(Leadership::Publisher(stream.to_string()));
        all
    }

    async fn try_take(&self, conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
        match self {
            Leadership::Worker(lock) => {
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(lock.key())
                    .fetch_one(conn)
                    .await
            }
            Leadership::Publisher(stream) => {
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                    .bind(KeyedLock::PublisherStream.class())
                    .bind(stream)
                    .fetch_one(conn)
                    .await
            }
        }
    }

    /// SQL condition on `pg_locks l` selecting this lock (binds `$1` and `$2`).
    fn pg_locks_filter(&self) -> (&'static str, i64, String) {
        match self {
            // A 64-bit key shows as classid = its high half, objid = its low half.
            Leadership::Worker(lock) => (
                "l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = $1 \
                 AND $2::text IS NOT NULL",
                lock.key(),
                String::new(),
            ),
            // Two 32-bit keys show as classid = the first, objid = the second (as oids).
            Leadership::Publisher(stream) => (
                "l.objsubid = 2 AND l.classid::bigint = ($1 & 4294967295) \
                 AND l.objid::bigint = (hashtext($2)::bigint & 4294967295)",
                i64::from(KeyedLock::PublisherStream.class()),
                stream.clone(),
            ),
        }
    }
}

/// How long a leader waits for its session to confirm the lock.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// What this process leads, with a count (a test may run one worker twice).
static HELD: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn mark(name: &str, held: bool) {
    let mut map = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let count = map.entry(name.to_string()).or_default();
    if held {
        *count += 1;
    } else {
        *count = count.saturating_sub(1);
    }
}

/// The leaderships this process holds now.
pub fn held_here() -> Vec<String> {
    let map = HELD.lock().unwrap_or_else(|e| e.into_inner());
    map.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, _)| k.clone())
        .collect()
}

/// A held leadership: its lock's session. Dropping it ends the session and the leadership.
pub struct Leader {
    leadership: Leadership,
    name: String,
    conn: Option<PgConnection>,
}

impl Leader {
    /// Tries once to take `leadership` (`None`: another session holds it).
    pub async fn try_take(
        pool: &PgPool,
        leadership: &Leadership,
    ) -> Result<Option<Self>, StoreError> {
        // Tried on a pooled connection, detached only once the lock is ours: a standby trying
        // every few seconds does not churn connections.
        let mut pooled = pool.acquire().await?;
        if !leadership.try_take(&mut pooled).await? {
            return Ok(None);
        }
        let mut conn = pooled.detach();
        // An idle session must not be ended by the server: it is what holds the lock. Its
        // name says which process leads (pg_stat_activity, `corral projections status`). TCP
        // keepalives let the server notice a leader whose host died without closing the
        // socket, and free the lock for a standby within about half a minute.
        sqlx::query(
            "SELECT set_config('idle_session_timeout', '0', false), \
                    set_config('application_name', $1, false), \
                    set_config('tcp_keepalives_idle', '10', false), \
                    set_config('tcp_keepalives_interval', '5', false), \
                    set_config('tcp_keepalives_count', '3', false)",
        )
        .bind(process_label())
        .execute(&mut conn)
        .await?;
        let name = leadership.name();
        mark(&name, true);
        Ok(Some(Self {
            leadership: leadership.clone(),
            name,
            conn: Some(conn),
        }))
    }

    /// Waits until this process holds `leadership`, trying every `retry` (`None`: stopped
    /// first). Logs once that another process leads.
    pub async fn wait_for(
        pool: &PgPool,
        leadership: &Leadership,
        retry: Duration,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Self> {
        let mut waiting_logged = false;
        loop {
            if *stop.borrow() {
                return None;
            }
            match Self::try_take(pool, leadership).await {
                Ok(Some(leader)) => {
                    tracing::info!(leader = %leader.name, "this process leads");
                    return Some(leader);
                }
                Ok(None) if !waiting_logged => {
                    tracing::info!(leader = %leadership.name(), "another process leads; standing by");
                    waiting_logged = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(leader = %leadership.name(), error = %e, "cannot try the leadership lock")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
    }

    /// What this leads.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The lock's session, for work that may as well use it.
    pub fn conn(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a leader has its connection until dropped")
    }

    /// Whether the session is alive and still holds the lock. False ends leadership: drop
    /// the leader and wait to take it again.
    pub async fn check(&mut self) -> bool {
        let (filter, a, b) = self.leadership.pg_locks_filter();
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
             AND l.pid = pg_backend_pid() AND {filter})"
        );
        let probe = sqlx::query_scalar(&sql)
            .bind(a)
            .bind(b)
            .fetch_one(self.conn());
        // A session that does not answer is no leadership either.
        let held: Result<bool, String> = match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        match held {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(leader = %self.name, "the leadership lock is no longer held");
                false
            }
            Err(e) => {
                tracing::warn!(leader = %self.name, error = %e, "the leadership session failed");
                false
            }
        }
    }

    /// Ends the leadership at once (the lock is released before the session closes, so a
    /// standby can take it as soon as this returns).
    pub async fn resign(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut conn)
                .await;
            let _ = sqlx::Connection::close(conn).await;
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        mark(&self.name, false);
        // A connection dropped without close ends its session when the socket closes.
    }
}

/// A singleton worker's leadership loop, driven by the worker: each [`Leading::next`] returns
/// the leader for one step, taking the lock first when this process does not hold it, and
/// checking that its session still holds it before every step, so that a process whose
/// session ended never works beside the new leader. The worker keeps its own loop body
/// (the step, its sleeps and wakes):
///
/// ```ignore
/// let mut leading = Leading::new(pool.clone(), Leadership::Worker(Lock::HealthRefresh), retry);
/// while let Some(leader) = leading.next(&mut stop).await {
///     step(leader).await;
///     sleep_or_stop(poll, &mut stop).await;
/// }
/// ```
pub struct Leading {
    pool: PgPool,
    leadership: Leadership,
    retry: Duration,
    leader: Option<Leader>,
    on_taken: Option<Box<dyn Fn() + Send + Sync>>,
    on_lost: Option<Box<dyn Fn() + Send + Sync>>,
}

impl Leading {
    /// Leads `leadership` on `pool`, trying to take it every `retry` while another process
    /// holds it.
    pub fn new(pool: PgPool, leadership: Leadership, retry: Duration) -> Self {
        Self {
            pool,
            leadership,
            retry,
            leader: None,
            on_taken: None,
            on_lost: None,
        }
    }

    /// Runs `log` each time this process takes the lock (after [`Leader::wait_for`]'s own
    /// line).
    pub fn on_taken(mut self, log: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_taken = Some(Box::new(log));
        self
    }

    /// Runs `log` each time the lock turns out lost (after [`Leader::check`]'s own line).
    pub fn on_lost(mut self, log: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_lost = Some(Box::new(log));
        self
    }

    /// The leader for the next step: once `stop` is false, this process holds the lock and
    /// its session still holds it. Waits to take the lock again when it was lost (the lost
    /// leader is dropped, which ends its session). `None`: stopped (the leader, if any, is
    /// kept until this is dropped or [`Leading::resign`]s).
    pub async fn next(&mut self, stop: &mut watch::Receiver<bool>) -> Option<&mut Leader> {
        loop {
            if *stop.borrow() {
                return None;
            }
            let Some(leader) = self.leader.as_mut() else {
                let taken =
                    Leader::wait_for(&self.pool, &self.leadership, self.retry, stop).await?;
                if let Some(log) = &self.on_taken {
                    log();
                }
                self.leader = Some(taken);
                continue;
            };
            if leader.check().await {
                return self.leader.as_mut();
            }
            if let Some(log) = &self.on_lost {
                log();
            }
            self.leader = None;
        }
    }

    /// Whether this process holds the lock (as of the last check).
    pub fn leads(&self) -> bool {
        self.leader.is_some()
    }

    /// Ends the leadership at once, if held (see [`Leader::resign`]).
    pub async fn resign(mut self) {
        if let Some(leader) = self.leader.take() {
            leader.resign().await;
        }
    }
}

/// `corral <host> pid <pid>`: who a leader's session belongs to.
fn process_label() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("corral {host} pid {}", std::process::id())
}

/// Who holds one leadership in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Holder {
    /// The leader's backend pid on the database server.
    pub backend_pid: i32,
    /// Its session's `application_name` (`corral <host> pid <pid>`).
    pub application_name: String,
    /// Its client address, when connected over TCP.
    pub client_addr: Option<String>,
    /// When its session began.
    pub since: Option<DateTime<Utc>>,
}

/// Each leadership and who holds it now (`None`: nobody; the worker is not running anywhere).
pub async fn cluster(
    pool: &PgPool,
    leaderships: &[Leadership],
) -> Result<Vec<(Leadership, Option<Holder>)>, StoreError> {
    let mut out = Vec::with_capacity(leaderships.len());
    for leadership in leaderships {
        let (filter, a, b) = leadership.pg_locks_filter();
        let sql = format!(
            "SELECT l.pid, coalesce(a.application_name, '') AS application_name, \
                    host(a.client_addr) AS client_addr, a.backend_start \
               FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
              WHERE l.locktype = 'advisory' AND l.granted AND l.database = \
                    (SELECT oid FROM pg_database WHERE datname = current_database()) \
                AND {filter} LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(a)
            .bind(b)
            .fetch_optional(pool)
            .await?;
        let holder = row
            .map(|r| {
                Ok::<_, sqlx::Error>(Holder {
                    backend_pid: r.try_get("pid")?,
                    application_name: r.try_get("application_name")?,
                    client_addr: r.try_get("client_addr")?,
                    since: r.try_get("backend_start")?,
                })
            })
            .transpose()?;
        out.push((leadership.clone(), holder));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{ConnectOptions, Connection};

    use super::*;

    const RETRY: Duration = Duration::from_millis(50);

    /// A database of its own on `DATABASE_URL`'s server (advisory locks are per database),
    /// dropped by [`TestDb::drop_db`]; `None` (the test is skipped) without `DATABASE_URL`.
    struct TestDb {
        admin: PgConnectOptions,
        name: String,
        pool: PgPool,
    }

    impl TestDb {
        async fn new() -> Option<Self> {
            let Ok(url) = std::env::var("DATABASE_URL") else {
                eprintln!("DATABASE_URL is not set; skipping");
                return None;
            };
            let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL");
            let name = format!("corral_leader_{}", uuid::Uuid::new_v4().simple());
            let mut conn = admin.connect().await.expect("connect to DATABASE_URL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create the test database");
            conn.close().await.ok();
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(admin.clone().database(&name))
                .await
                .expect("connect to the test database");
            Some(Self { admin, name, pool })
        }

        async fn drop_db(self) {
            self.pool.close().await;
            let mut conn = self.admin.connect().await.expect("connect");
            sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
                .execute(&mut conn)
                .await
                .expect("drop the test database");
        }
    }

    async fn backend_pid(leader: &mut Leader) -> i32 {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(leader.conn())
            .await
            .expect("pid")
    }

    fn counter() -> (Arc<AtomicUsize>, impl Fn() + Send + Sync + 'static) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        (n, move || {
            m.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[tokio::test]
    async fn a_stopped_worker_gets_no_step_and_touches_no_database() {
        // Nothing listens there: any attempt to take the lock would fail, not return None.
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("lazy pool");
        let (_tx, mut stop) = watch::channel(true);
        let mut leading = Leading::new(pool, Leadership::Worker(Lock::RuleEvaluator), RETRY);
        assert!(leading.next(&mut stop).await.is_none());
        assert!(!leading.leads());
    }

    #[tokio::test]
    async fn a_standby_steps_only_once_the_holder_is_gone_and_stops_while_standing_by() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let lock = Leadership::Worker(Lock::RuleEvaluator);
        let holder = Leader::try_take(&db.pool, &lock)
            .await
            .expect("try")
            .expect("nobody leads yet");
        let (tx, mut stop) = watch::channel(false);
        let (taken, on_taken) = counter();
        let mut leading = Leading::new(db.pool.clone(), lock.clone(), RETRY).on_taken(on_taken);

        // Another session holds the lock: no step while it does.
        let waited = tokio::time::timeout(RETRY * 6, leading.next(&mut stop)).await;
        assert!(waited.is_err(), "a standby must not step");
        assert_eq!(taken.load(Ordering::SeqCst), 0);

        // Stop while standing by ends the wait.
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(RETRY * 2).await;
            tx.send(true).expect("send");
            tx
        });
        let stopped = tokio::time::timeout(Duration::from_secs(5), leading.next(&mut stop))
            .await
            .expect("stop ends the wait");
        assert!(stopped.is_none());
        let tx = stopper.await.expect("stopper");

        // Once the holder resigns, the standby leads.
        holder.resign().await;
        tx.send(false).expect("send");
        let leader = tokio::time::timeout(Duration::from_secs(5), leading.next(&mut stop))
            .await
            .expect("takes the free lock")
            .expect("not stopped");
        assert!(leader.check().await);
        assert_eq!(taken.load(Ordering::SeqCst), 1);
        assert!(
            Leader::try_take(&db.pool, &lock)
                .await
                .expect("try")
                .is_none(),
            "the standby holds the lock now"
        );
        leading.resign().await;
        db.drop_db().await;
    }

    #[tokio::test]
    async fn a_leader_whose_session_ends_takes_the_lock_again_before_its_next_step() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let lock = Leadership::Worker(Lock::Capabilities);
        let (_tx, mut stop) = watch::channel(false);
        let (taken, on_taken) = counter();
        let (lost, on_lost) = counter();
        let mut leading = Leading::new(db.pool.clone(), lock.clone(), RETRY)
            .on_taken(on_taken)
            .on_lost(on_lost);

        let first = leading.next(&mut stop).await.expect("leads");
        let first_pid = backend_pid(first).await;
        // The same session serves the next step while it holds the lock.
        let again = leading.next(&mut stop).await.expect("still leads");
        assert_eq!(backend_pid(again).await, first_pid);
        assert_eq!(
            (taken.load(Ordering::SeqCst), lost.load(Ordering::SeqCst)),
            (1, 0)
        );

        // A DBA ends the leader's session between two steps.
        let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(first_pid)
            .fetch_one(&db.pool)
            .await
            .expect("terminate");
        assert!(terminated);

        let second = tokio::time::timeout(Duration::from_secs(10), leading.next(&mut stop))
            .await
            .expect("takes the lock again")
            .expect("not stopped");
        let second_pid = backend_pid(second).await;
        assert_ne!(second_pid, first_pid, "the next step runs on a new session");
        assert_eq!(
            (taken.load(Ordering::SeqCst), lost.load(Ordering::SeqCst)),
            (2, 1)
        );
        let held = cluster(&db.pool, std::slice::from_ref(&lock))
            .await
            .expect("cluster");
        assert_eq!(held[0].1.as_ref().map(|h| h.backend_pid), Some(second_pid));

        leading.resign().await;
        let free = Leader::try_take(&db.pool, &lock).await.expect("try");
        assert!(free.is_some(), "resign frees the lock at once");
        free.expect("taken").resign().await;
        db.drop_db().await;
    }

    #[tokio::test]
    async fn a_leader_that_lost_the_lock_in_a_live_session_does_not_step() {
        let Some(db) = TestDb::new().await else {
            return;
        };
        let lock = Leadership::Worker(Lock::HealthRefresh);
        let (tx, mut stop) = watch::channel(false);
        let (lost, on_lost) = counter();
        let mut leading = Leading::new(db.pool.clone(), lock.clone(), RETRY).on_lost(on_lost);
        let leader = leading.next(&mut stop).await.expect("leads");
        // The session lives on but lets the lock go; another process takes it.
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(leader.conn())
            .await
            .expect("unlock");
        let usurper = Leader::try_take(&db.pool, &lock)
            .await
            .expect("try")
            .expect("the lock is free");

        let next = tokio::time::timeout(RETRY * 6, leading.next(&mut stop)).await;
        assert!(next.is_err(), "no step beside the new leader");
        assert_eq!(lost.load(Ordering::SeqCst), 1);
        assert!(!leading.leads());
        tx.send(true).expect("send");
        assert!(leading.next(&mut stop).await.is_none());
        usurper.resign().await;
        db.drop_db().await;
    }
}
