//! A private PostgreSQL server started from the machine's own PostgreSQL binaries.
//!
//! The server listens only on a unix socket and never outlives the process that started
//! it: it runs under a small `sh` wrapper whose stdin is a pipe held by this process. When
//! the pipe closes ([`EmbeddedPostgres::stop`], drop, or this process dying, even by
//! SIGKILL) the wrapper asks postgres for a fast shutdown and deletes what is ephemeral.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const NOT_FOUND: &str = "PostgreSQL server binaries (initdb, postgres) were not found; install \
them (Debian/Ubuntu: `apt-get install postgresql`) or set DATABASE_URL to an existing server";
// C.UTF-8: byte order for sorting (keyset cursors), Unicode case folding for ILIKE and lower(),
// as rules evaluated in memory fold case (docs/rules.md).
const INITDB_ARGS: &str = "-U postgres --auth=trust -E UTF8 --locale=C.UTF-8";
const FAST: &str = "--fsync=off --synchronous_commit=off --full_page_writes=off";
const LOG: &str = "corral-postgres.log"; // also named in WRAPPER
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `sh -c WRAPPER sh BINDIR DATA SOCKDIR PORT RMDATA RMSOCK [SETTINGS...]`: starts postgres
/// in the background and prints its pid; a watcher sends it SIGINT (fast shutdown) once
/// stdin reaches EOF. When postgres exits the wrapper exits too, after printing the log's
/// tail and deleting DATA if RMDATA is not empty (the log goes with it), and SOCKDIR alike.
const WRAPPER: &str = r#"bin=$1 data=$2 sock=$3 port=$4 rmdata=$5 rmsock=$6; shift 6
log="$data/corral-postgres.log"
exec 2>>"$log" 3<&0
"$bin/postgres" -D "$data" -k "$sock" -p "$port" --listen_addresses= --max_connections=200 \
  "$@" </dev/null >>"$log" 2>&1 &
pg=$!
echo "$pg"
(while read -r _; do :; done; kill -INT "$pg") <&3 >/dev/null 2>&1 &
w=$!
exec 3<&-
wait "$pg"; st=$?
kill "$w" 2>/dev/null
if [ -n "$rmdata" ]; then tail -c 8192 "$log"; rm -rf "$data"; fi
if [ -n "$rmsock" ]; then rm -rf "$sock"; fi
exit "$st""#;

/// Errors from starting or stopping an [`EmbeddedPostgres`].
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No usable `initdb`/`postgres` pair was found (or `CORRAL_PG_BINDIR` lacks them).
    #[error("{0}")]
    BinariesNotFound(String),
    /// Running as root, but there is no `postgres` user to run the server as.
    #[error("running as root, but PostgreSQL refuses to run as root and /etc/passwd has no `postgres` user to run it as; create one or run as another user")]
    NoPostgresUser,
    /// An ephemeral server was given a non-empty directory (it would be deleted).
    #[error("refusing to use non-empty {0} for an ephemeral server (it is deleted at stop)")]
    NotEmpty(PathBuf),
    /// A filesystem or process operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// `initdb` failed; the string is its output.
    #[error("initdb failed ({0}):\n{1}")]
    Initdb(ExitStatus, String),
    /// The server exited early, did not become ready in 30 s, or did not stop in 60 s; with
    /// the end of its log (at [`EmbeddedPostgres::log_file`]).
    #[error("{0}; end of the postgres log:\n{1}")]
    Server(String, String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let context = context.into();
    move |source| EmbeddedError::Io(context, source)
}

/// How to start an [`EmbeddedPostgres`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Data directory; initialized with `initdb` unless it holds a cluster (`PG_VERSION`).
    pub data_dir: PathBuf,
    /// Delete the data directory when the server stops, and trade durability for speed
    /// (fsync, synchronous_commit, full_page_writes off). It must be missing or empty.
    pub ephemeral: bool,
    /// Over a unix socket the port only names the socket file, `.s.PGSQL.<port>`.
    pub port: u16,
    /// The PostgreSQL server binaries (`CORRAL_PG_BINDIR`); `None`: found on this machine.
    pub bindir: Option<PathBuf>,
}

impl EmbeddedOptions {
    /// A persistent server in `data_dir`, reused across runs; port 5432.
    pub fn persistent(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ephemeral: false,
            port: 5432,
            bindir: None,
        }
    }

    /// An ephemeral server in `data_dir` (missing or empty), deleted when it stops.
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            ephemeral: true,
            ..Self::persistent(data_dir)
        }
    }

    /// An ephemeral server in a new, uniquely named directory under the temp dir.
    pub fn temporary() -> Self {
        Self::ephemeral(unique_path(&std::env::temp_dir(), "corral-pg"))
    }
}

/// A running private PostgreSQL server. Dropping it without [`stop`](Self::stop) shuts it
/// down too (and deletes what is ephemeral), but without waiting.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    remove_at_stop: Vec<PathBuf>,
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
}

impl EmbeddedPostgres {
    /// Initializes the data directory if needed (as user `postgres` when running as root),
    /// starts the server and waits up to 30 s for it to accept connections.
    pub async fn start(opts: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let (bindir, owner, dir) = (
            find_bindir(opts.bindir.as_deref()).await?,
            run_as()?,
            &opts.data_dir,
        );
        if opts.ephemeral && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(EmbeddedError::NotEmpty(dir.clone()));
        }
        let initialized = dir.join("PG_VERSION").exists();
        if !initialized {
            prepare_dir(dir, owner)?;
        }
        let data_dir = std::fs::canonicalize(dir).map_err(io_err(dir.display().to_string()))?;
        let mut remove_at_stop = Vec::new();
        if opts.ephemeral {
            remove_at_stop.push(data_dir.clone());
        }
        if !initialized {
            if let Err(e) = initdb(&bindir, &data_dir, owner).await {
                remove_dirs(&remove_at_stop)?;
                return Err(e);
            }
        }
        // sun_path holds 107 bytes plus NUL; "/.s.PGSQL.65535" takes 15 of them.
        let mut socket_dir = data_dir.clone();
        if data_dir.as_os_str().len() + 15 > 107 {
            socket_dir = unique_path(Path::new("/tmp"), "corral-pgs");
            prepare_dir(&socket_dir, owner)?;
            remove_at_stop.push(socket_dir.clone());
        }
        let rm = |p: &PathBuf| if remove_at_stop.contains(p) { "rm" } else { "" };
        let mut cmd = command("sh", owner);
        cmd.args(["-c", WRAPPER, "corral-pg"]);
        cmd.args([&bindir, &data_dir, &socket_dir]);
        cmd.arg(opts.port.to_string());
        cmd.args([rm(&data_dir), rm(&socket_dir)]);
        if opts.ephemeral {
            cmd.args(FAST.split(' '));
        }
        // Own process group, so a terminal's Ctrl-C reaches only us; the pipe does the rest.
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(io_err("spawning sh"))?;
        let stdout = child.stdout.take().map(BufReader::new);
        let port = opts.port;
        let mut pg = Self {
            data_dir,
            socket_dir,
            port,
            remove_at_stop,
            child,
            stdout,
        };
        let mut pid = String::new();
        if let Some(out) = pg.stdout.as_mut() {
            let _ = out.read_line(&mut pid).await;
        }
        let Err(reason) = pg.wait_ready(pid.trim()).await else {
            tracing::info!(url = %pg.url("postgres"), "embedded PostgreSQL ready");
            return Ok(pg);
        };
        let log = pg.log_tail().await;
        let _ = pg.shutdown().await;
        Err(EmbeddedError::Server(reason, log))
    }

    /// A URL for `database` over the unix socket that sqlx 0.8 and libpq (psql) accept:
    /// `postgres://postgres@localhost/<db>?host=<socket dir>&port=<port>`.
    pub fn url(&self, database: &str) -> String {
        let host = pct_encode(&self.socket_dir.to_string_lossy(), b"-._~/");
        let (db, port) = (pct_encode(database, b"-._~"), self.port);
        format!("postgres://postgres@localhost/{db}?host={host}&port={port}")
    }

    /// The absolute data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the socket `.s.PGSQL.<port>`: the data directory, or a private one
    /// under /tmp if the data directory's path is too long for a unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The file postgres logs to, inside the data directory.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(LOG)
    }

    /// Stops the server (fast shutdown: open sessions are ended) and waits up to 60 s for
    /// it; deletes the data directory if ephemeral.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        self.shutdown().await
    }

    async fn shutdown(&mut self) -> Result<(), EmbeddedError> {
        drop(self.child.stdin.take());
        let waited = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
        remove_dirs(&self.remove_at_stop)?;
        match waited {
            Ok(status) => status.map(drop).map_err(io_err("waiting for postgres")),
            Err(_) => {
                let reason = "postgres did not stop within 60 s".to_string();
                Err(EmbeddedError::Server(reason, self.log_tail().await))
            }
        }
    }

    /// Polls `postmaster.pid` as `pg_ctl -w` does, until it names `pid` and says "ready".
    async fn wait_ready(&mut self, pid: &str) -> Result<(), String> {
        let pidfile = self.data_dir.join("postmaster.pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("postgres exited during startup ({status})"));
            }
            let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            if !pid.is_empty() && lines.first() == Some(&pid) && lines.get(7) == Some(&"ready") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("postgres did not become ready within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The log's last 8 KiB; if an ephemeral data dir is already gone, the tail that the
    /// wrapper printed before deleting it.
    async fn log_tail(&mut self) -> String {
        let mut log = std::fs::read(self.log_file()).unwrap_or_default();
        if let (true, Some(out)) = (log.is_empty(), self.stdout.as_mut()) {
            let _ = tokio::time::timeout(Duration::from_secs(5), out.read_to_end(&mut log)).await;
        }
        String::from_utf8_lossy(&log[log.len().saturating_sub(8192)..]).into_owned()
    }
}

impl Drop for EmbeddedPostgres {
    /// Closes the wrapper's stdin; the wrapper then stops postgres and cleans up.
    fn drop(&mut self) {
        self.child.stdin.take();
    }
}

/// `configured` (`CORRAL_PG_BINDIR`), else `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`, else the directory of `initdb` on PATH (following symlinks).
async fn find_bindir(configured: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    let usable = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(dir) = configured.map(Path::to_path_buf) {
        let msg = format!("no initdb and postgres in CORRAL_PG_BINDIR={dir:?}");
        let found = usable(&dir).then_some(dir);
        return found.ok_or(EmbeddedError::BinariesNotFound(msg));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output().await {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && usable(&dir) {
            return Ok(dir);
        }
    }
    let entries = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten();
    let versioned = entries.flatten().filter_map(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
        Some((version?, entry.path().join("bin")))
    });
    let newest = versioned.filter(|(_, bin)| usable(bin)).max();
    if let Some((_, bin)) = newest {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).filter(|d| d.join("initdb").is_file()) {
        let real = std::fs::canonicalize(dir.join("initdb")).ok();
        if let Some(real_dir) = real.as_deref().and_then(Path::parent).filter(|d| usable(d)) {
            return Ok(real_dir.to_path_buf());
        } else if usable(&dir) {
            return Ok(dir);
        }
    }
    Err(EmbeddedError::BinariesNotFound(NOT_FOUND.into()))
}

/// `Some((uid, gid))` of user `postgres` if our effective uid is 0, else `None`.
fn run_as() -> Result<Option<(u32, u32)>, EmbeddedError> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(io_err("/proc"))?;
    let mut uid_line = status.lines().filter_map(|l| l.strip_prefix("Uid:"));
    if uid_line.next().and_then(|l| l.split_whitespace().nth(1)) != Some("0") {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io_err("/etc/passwd"))?;
    let user = passwd.lines().find_map(|l| l.strip_prefix("postgres:"));
    let fields: Vec<&str> = user.unwrap_or_default().split(':').collect();
    let id = |i: usize| fields.get(i).and_then(|s| s.parse().ok());
    let ids = id(1).zip(id(2));
    ids.map(Some).ok_or(EmbeddedError::NoPostgresUser)
}

/// Creates `dir` with mode 0700, owned by `owner` if given.
fn prepare_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), EmbeddedError> {
    let ctx = |what: &str| format!("{what} {}", dir.display());
    std::fs::create_dir_all(dir).map_err(io_err(ctx("creating")))?;
    let mode = std::fs::Permissions::from_mode(0o700);
    std::fs::set_permissions(dir, mode).map_err(io_err(ctx("chmod 700")))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io_err(ctx("chown")))?;
    }
    Ok(())
}

/// A command that runs in `/` as `owner` (if given), with stdin and stderr null.
fn command(program: impl AsRef<OsStr>, owner: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir("/").stdin(Stdio::null());
    cmd.stderr(Stdio::null());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

async fn initdb(bindir: &Path, dir: &Path, owner: Option<(u32, u32)>) -> Result<(), EmbeddedError> {
    let mut cmd = command(bindir.join("initdb"), owner);
    cmd.arg("-D").arg(dir).args(INITDB_ARGS.split(' '));
    let out = cmd.stderr(Stdio::piped()).output().await;
    let out = out.map_err(io_err("running initdb"))?;
    if out.status.success() {
        return Ok(());
    }
    let output = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    Err(EmbeddedError::Initdb(out.status, output.into_owned()))
}

fn remove_dirs(dirs: &[PathBuf]) -> Result<(), EmbeddedError> {
    for dir in dirs.iter().filter(|d| d.exists()) {
        std::fs::remove_dir_all(dir).map_err(io_err(format!("removing {}", dir.display())))?;
    }
    Ok(())
}

fn unique_path(parent: &Path, prefix: &str) -> PathBuf {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let nanos = now.map(|d| d.subsec_nanos()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent.join(format!("{prefix}-{}-{n}-{nanos:x}", std::process::id()))
}

/// Percent-encodes every byte but ASCII alphanumerics and those in `keep`.
fn pct_encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b.is_ascii_alphanumeric() || keep.contains(&b) {
            true => out.push(b as char),
            false => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Connection, PgConnection};

    async fn query(pg: &EmbeddedPostgres, db: &str, sql: &str) -> String {
        let mut conn = PgConnection::connect(&pg.url(db)).await.expect("connect");
        let row = sqlx::query_scalar(sql).fetch_optional(&mut conn).await;
        row.expect(sql).unwrap_or_default()
    }

    /// Waits until the postgres of `dir` has exited and `dir` is gone.
    async fn assert_gone(dir: &Path) {
        let pidfile = std::fs::read_to_string(dir.join("postmaster.pid")).expect("pid file");
        let proc = Path::new("/proc").join(pidfile.lines().next().expect("pid"));
        for _ in 0..300 {
            if !proc.exists() && !dir.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} or {} still there", proc.display(), dir.display());
    }

    #[tokio::test]
    async fn ephemeral_server_works_and_stop_removes_it() {
        let dir = unique_path(&std::env::temp_dir(), "corral pg+test");
        let pg = EmbeddedPostgres::start(EmbeddedOptions::ephemeral(&dir))
            .await
            .expect("start");
        assert_eq!(query(&pg, "postgres", "SELECT '1'").await, "1");
        let mut conn = PgConnection::connect(&pg.url("postgres"))
            .await
            .expect("connect");
        let create = sqlx::raw_sql("CREATE DATABASE \"corral test\"")
            .execute(&mut conn)
            .await;
        create.expect("create database");
        let db = query(&pg, "corral test", "SELECT current_database()::text").await;
        assert_eq!(db, "corral test");
        assert_eq!(query(&pg, "corral test", "SHOW fsync").await, "off");
        pg.stop().await.expect("stop");
        assert!(!dir.exists(), "ephemeral data dir must be removed");
    }

    #[tokio::test]
    async fn persistent_restart_keeps_data_and_busy_dir_is_reported() {
        let base = unique_path(&std::env::temp_dir(), "corral-pg-test");
        let dir = base.join("long-enough-that-the-socket-path-would-exceed-the-unix-limit-of-107");
        let pg = EmbeddedPostgres::start(EmbeddedOptions::persistent(&dir))
            .await
            .expect("start");
        assert_ne!(pg.socket_dir(), pg.data_dir());
        query(
            &pg,
            "postgres",
            "CREATE TABLE t AS SELECT 'kept'::text AS v",
        )
        .await;
        let busy = EmbeddedPostgres::start(EmbeddedOptions::persistent(&dir)).await;
        assert!(format!("{busy:?}").contains("postmaster.pid"), "{busy:?}");
        let socket_dir = pg.socket_dir().to_path_buf();
        pg.stop().await.expect("stop");
        assert!(dir.join("PG_VERSION").exists() && !socket_dir.exists());
        let pg = EmbeddedPostgres::start(EmbeddedOptions::persistent(&dir))
            .await
            .expect("restart");
        assert_eq!(query(&pg, "postgres", "SELECT v FROM t").await, "kept");
        pg.stop().await.expect("stop");
        std::fs::remove_dir_all(&base).expect("cleanup");
    }

    #[tokio::test]
    async fn startup_failure_shows_the_log_and_cleans_up() {
        let opts = EmbeddedOptions {
            port: 0,
            ..EmbeddedOptions::temporary()
        };
        let dir = opts.data_dir.clone();
        let err = EmbeddedPostgres::start(opts)
            .await
            .expect_err("port 0 is invalid");
        assert!(err.to_string().contains("outside the valid range"), "{err}");
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn dropping_without_stop_ends_the_server() {
        let pg = EmbeddedPostgres::start(EmbeddedOptions::temporary())
            .await
            .expect("start");
        let dir = pg.data_dir().to_path_buf();
        drop(pg);
        assert_gone(&dir).await;
    }

    /// Run by `sigkill_ends_the_server` in a child process.
    #[tokio::test]
    #[ignore = "helper"]
    async fn sigkill_helper() {
        if let Some(dir) = std::env::var_os("CORRAL_PG_SIGKILL_DIR") {
            let pg = EmbeddedPostgres::start(EmbeddedOptions::ephemeral(dir)).await;
            let url = pg.as_ref().map(|pg| pg.url("postgres"));
            println!("CORRAL-PG-READY {url:?}");
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
    }

    #[tokio::test]
    async fn sigkill_ends_the_server() {
        let dir = unique_path(&std::env::temp_dir(), "corral-pg-sigkill");
        let helper = module_path!()
            .split_once("::")
            .map_or("", |p| p.1)
            .to_owned();
        let mut child = Command::new(std::env::current_exe().expect("exe"));
        child.args([
            "--ignored",
            "--exact",
            "--nocapture",
            &(helper + "::sigkill_helper"),
        ]);
        let child = child
            .env("CORRAL_PG_SIGKILL_DIR", &dir)
            .stdout(Stdio::piped());
        let mut child = child.spawn().expect("spawn");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        while let Some(line) = lines.next_line().await.expect("read") {
            if line.contains("CORRAL-PG-READY") {
                assert!(line.contains("Ok("), "{line}");
                break;
            }
        }
        child.kill().await.expect("SIGKILL");
        assert_gone(&dir).await;
    }
}
