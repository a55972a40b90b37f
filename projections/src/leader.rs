//! Singleton workers: one leader per cluster, elected by a session advisory lock held on a
//! connection of its own.
//!
//! The lock lives exactly as long as its session, so the connection is detached from the pool
//! (a pooled one would go back still holding it) and the server is told never to end it for
//! idleness. A leader checks that its session still holds the lock before each pass
//! ([`Leader::check`]): a dead connection, or a session a DBA terminated, ends leadership at
//! once, and the process waits to take it again instead of working beside the new leader.
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
