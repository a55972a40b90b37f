//! The reference poller's journal: per run, `<state_dir>/<run_id>.journal`, lines appended and
//! fsync'd *after* the server's stream acked what they record (`ack`, `start`, `hosts 0-255`,
//! `done`, `fail`).
//!
//! - **Identity**: a run id alone does not name a run for ever (a run id of an older Corral
//!   was derived from its idempotency key, so another deployment, or the same one after a
//!   restore, could send a new run under it). A journal's first line records the identity of
//!   the run it is for, `scheduled_at <time>` (the run's creation in its deployment, as the
//!   telemetry feed remembers a stream sequence with the stream's creation time). A journal
//!   whose identity is not the job's is stale: discarded, and the job runs afresh. A journal
//!   without the line (written before it existed) is confirmed only by a job without one.
//! - **Life**: a journal is created with its identity line when its job starts and removed
//!   once the run has ended: its job key deleted by the server (completed, failed, cancelled,
//!   timed out, expired), or its deadline passed. Appends never create the file, so a task
//!   aborted in the middle of one cannot bring a removed journal back. At start the poller
//!   removes journals untouched for longer than [`DEFAULT_JOURNAL_MAX_AGE`].

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use corral_projections::sweeps::config::MAX_RUNTIME_SECS;
use uuid::Uuid;

use super::protocol::MAX_HOSTS;

/// Journals untouched for this long are removed when the poller starts: 8 days, the longest a
/// run may last (7 days) plus a day, so no open run loses its journal.
pub const DEFAULT_JOURNAL_MAX_AGE: Duration = Duration::from_secs(MAX_RUNTIME_SECS + 86_400);

/// What a run's journal says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct JournalState {
    /// When the run it is for was scheduled (`None`: a job, or a journal, without one).
    pub identity: Option<DateTime<Utc>>,
    pub acked: bool,
    pub started: bool,
    pub reported: BTreeSet<u64>,
    pub finished: bool,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JournalLine {
    /// The first line: the identity of the run.
    ScheduledAt(DateTime<Utc>),
    Ack,
    Start,
    Hosts(Vec<u64>),
    Done,
    Fail,
}

impl JournalLine {
    /// The line, without its newline; host indices as runs `a-b` where they are consecutive.
    pub fn encode(&self) -> String {
        match self {
            JournalLine::ScheduledAt(at) => {
                format!(
                    "scheduled_at {}",
                    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                )
            }
            JournalLine::Ack => "ack".into(),
            JournalLine::Start => "start".into(),
            JournalLine::Done => "done".into(),
            JournalLine::Fail => "fail".into(),
            JournalLine::Hosts(indices) => {
                let mut out = String::from("hosts");
                let mut iter = indices.iter().copied().peekable();
                while let Some(start) = iter.next() {
                    let mut end = start;
                    while iter.peek() == Some(&(end + 1)) {
                        end += 1;
                        iter.next();
                    }
                    if start == end {
                        out.push_str(&format!(" {start}"));
                    } else {
                        out.push_str(&format!(" {start}-{end}"));
                    }
                }
                out
            }
        }
    }

    pub fn decode(line: &str) -> Option<JournalLine> {
        let mut words = line.split_whitespace();
        let line = match words.next()? {
            "scheduled_at" => JournalLine::ScheduledAt(
                DateTime::parse_from_rfc3339(words.next()?)
                    .ok()?
                    .with_timezone(&Utc),
            ),
            "ack" => JournalLine::Ack,
            "start" => JournalLine::Start,
            "done" => JournalLine::Done,
            "fail" => JournalLine::Fail,
            "hosts" => {
                let mut indices = Vec::new();
                for word in words.by_ref() {
                    let (a, b) = match word.split_once('-') {
                        Some((a, b)) => (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?),
                        None => {
                            let a = word.parse::<u64>().ok()?;
                            (a, a)
                        }
                    };
                    if a > b || b - a >= MAX_HOSTS {
                        return None;
                    }
                    indices.extend(a..=b);
                }
                JournalLine::Hosts(indices)
            }
            _ => return None,
        };
        words.next().is_none().then_some(line)
    }
}

impl JournalState {
    fn apply(&mut self, line: &JournalLine) {
        match line {
            JournalLine::ScheduledAt(at) => self.identity = Some(*at),
            JournalLine::Ack => self.acked = true,
            JournalLine::Start => self.started = true,
            JournalLine::Hosts(indices) => self.reported.extend(indices.iter().copied()),
            JournalLine::Done | JournalLine::Fail => self.finished = true,
        }
    }

    /// The state of a journal's complete lines (a last line without its newline was never
    /// fsync'd whole and is ignored; so are lines that cannot be read).
    fn parse(text: &str) -> JournalState {
        let mut state = JournalState::default();
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        for line in complete.lines().filter(|l| !l.trim().is_empty()) {
            match JournalLine::decode(line) {
                Some(line) => state.apply(&line),
                None => {
                    tracing::warn!(sweep.journal_line = %line, "ignoring an unreadable journal line")
                }
            }
        }
        state
    }
}

/// Where the journal of `run` lives.
pub fn path(dir: &Path, run: Uuid) -> PathBuf {
    dir.join(format!("{run}.journal"))
}

/// A run's journal file and what it says.
pub(super) struct Journal {
    pub run: Uuid,
    path: PathBuf,
    pub state: JournalState,
}

impl Journal {
    /// The journal of `run` for the run scheduled at `identity`: the one on disk when it is
    /// this run's (a torn last line cut off, so that the next append starts a line of its
    /// own), else a new one holding only the identity line. A journal of another identity is
    /// stale and replaced, with a warning.
    pub async fn open(
        dir: &Path,
        run: Uuid,
        identity: Option<DateTime<Utc>>,
    ) -> std::io::Result<Journal> {
        let path = path(dir, run);
        let opened = path.clone();
        let state = tokio::task::spawn_blocking(move || open_blocking(&opened, identity))
            .await
            .map_err(std::io::Error::other)??;
        Ok(Journal { run, path, state })
    }

    /// The identity of the run it is for.
    pub fn identity(&self) -> Option<DateTime<Utc>> {
        self.state.identity
    }

    /// Appends `line` and fsyncs it, then applies it to the state. A journal removed meanwhile
    /// (the run ended) is not created again: the append fails.
    pub async fn append(&mut self, line: JournalLine) -> std::io::Result<()> {
        let path = self.path.clone();
        let text = format!("{}\n", line.encode());
        tokio::task::spawn_blocking(move || append_line(&path, &text))
            .await
            .map_err(std::io::Error::other)??;
        self.state.apply(&line);
        Ok(())
    }
}

fn open_blocking(path: &Path, identity: Option<DateTime<Utc>>) -> std::io::Result<JournalState> {
    match load_journal(path)? {
        Some(state) if state.identity == identity => return Ok(state),
        Some(stale) => {
            let shown =
                |at: Option<DateTime<Utc>>| at.map_or("none".to_string(), |a| a.to_rfc3339());
            tracing::warn!(
                sweep.journal = %path.display(),
                sweep.journal_scheduled_at = %shown(stale.identity),
                sweep.scheduled_at = %shown(identity),
                "discarding a stale journal: it is another run's under the same run id; running the job afresh"
            );
        }
        None => {}
    }
    // Written aside and renamed over, so a crash leaves the old journal or the new, whole.
    let fresh = JournalState {
        identity,
        ..JournalState::default()
    };
    let text = identity.map_or(String::new(), |at| {
        format!("{}\n", JournalLine::ScheduledAt(at).encode())
    });
    let aside = path.with_extension("journal.tmp");
    let mut file = std::fs::File::create(&aside)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&aside, path)?;
    sync_dir(path)?;
    Ok(fresh)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn load_journal(path: &Path) -> std::io::Result<Option<JournalState>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.last().is_some_and(|&b| b != b'\n') {
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        tracing::warn!(sweep.journal = %path.display(), bytes = (bytes.len() - keep) as u64, "cutting off a torn journal line");
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(keep as u64)?;
        file.sync_all()?;
    }
    Ok(Some(JournalState::parse(&String::from_utf8_lossy(&bytes))))
}

fn append_line(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Removes the journal of `run`; whether there was one.
pub async fn remove(dir: &Path, run: Uuid) -> std::io::Result<bool> {
    let path = path(dir, run);
    tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Removes the journals of `dir` last written before `now - max_age`, and the leftovers of
/// replacements a crash interrupted; how many files went. Runs when the poller starts, before
/// any job.
pub async fn remove_old(dir: &Path, max_age: Duration, now: SystemTime) -> std::io::Result<u64> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let bound = now.checked_sub(max_age).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let old = if name.ends_with(".journal.tmp") {
                true
            } else if name.ends_with(".journal") {
                entry.metadata()?.modified()? < bound
            } else {
                false
            };
            if old {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corral-sweeps-{name}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 123_456_000).expect("time")
    }

    #[test]
    fn journal_lines_round_trip() {
        let lines = [
            JournalLine::ScheduledAt(at(1_800_000_000)),
            JournalLine::ScheduledAt(
                DateTime::from_timestamp(1_800_000_000, 123_456_789).expect("time"),
            ),
            JournalLine::Ack,
            JournalLine::Start,
            JournalLine::Hosts(vec![0, 1, 2, 3, 7, 9, 10]),
            JournalLine::Hosts(vec![256]),
            JournalLine::Done,
            JournalLine::Fail,
        ];
        assert_eq!(
            lines[0].encode(),
            "scheduled_at 2027-01-15T08:00:00.123456Z"
        );
        assert_eq!(lines[4].encode(), "hosts 0-3 7 9-10");
        for line in lines {
            assert_eq!(JournalLine::decode(&line.encode()), Some(line));
        }
        for bad in [
            "",
            "hosts 3-1",
            "hosts x",
            "ack now",
            "hosts 0-99999999999",
            "nope",
            "scheduled_at",
            "scheduled_at yesterday",
        ] {
            assert_eq!(JournalLine::decode(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn journal_survives_a_torn_last_line() {
        let dir = temp_dir("journal");
        let run = Uuid::new_v4();
        let identity = Some(at(1_800_000_000));
        let mut journal = Journal::open(&dir, run, identity).await.expect("open");
        assert_eq!(
            journal.state,
            JournalState {
                identity,
                ..JournalState::default()
            }
        );
        journal.append(JournalLine::Ack).await.expect("ack");
        journal.append(JournalLine::Start).await.expect("start");
        journal
            .append(JournalLine::Hosts((0..256).collect()))
            .await
            .expect("hosts");
        let path = path(&dir, run);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "scheduled_at 2027-01-15T08:00:00.123456Z\nack\nstart\nhosts 0-255\n"
        );
        // A crash in the middle of the next append.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(b"hosts 256-5").expect("write");
        drop(file);

        let mut journal = Journal::open(&dir, run, identity).await.expect("reopen");
        assert!(journal.state.acked && journal.state.started && !journal.state.finished);
        assert_eq!(journal.state.reported, (0..256).collect());
        journal
            .append(JournalLine::Hosts(vec![256, 257]))
            .await
            .expect("hosts");
        journal.append(JournalLine::Done).await.expect("done");

        let journal = Journal::open(&dir, run, identity).await.expect("reopen");
        assert!(journal.state.finished);
        assert_eq!(journal.state.reported, (0..258).collect());
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "scheduled_at 2027-01-15T08:00:00.123456Z\nack\nstart\nhosts 0-255\nhosts 256-257\ndone\n"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test]
    async fn a_journal_of_another_run_under_the_same_id_is_discarded() {
        let dir = temp_dir("stale");
        let run = Uuid::new_v4();
        let (first, second) = (Some(at(1_800_000_000)), Some(at(1_800_000_600)));
        let mut journal = Journal::open(&dir, run, first).await.expect("open");
        journal.append(JournalLine::Ack).await.expect("ack");
        journal
            .append(JournalLine::Hosts(vec![0, 1]))
            .await
            .expect("hosts");
        journal.append(JournalLine::Done).await.expect("done");
        // The same run id, scheduled at another time: another deployment's run, or one made
        // again after a restore. It runs from the start.
        let journal = Journal::open(&dir, run, second).await.expect("reopen");
        assert_eq!(
            journal.state,
            JournalState {
                identity: second,
                ..JournalState::default()
            }
        );
        assert_eq!(
            std::fs::read_to_string(path(&dir, run)).expect("read"),
            "scheduled_at 2027-01-15T08:10:00.123456Z\n"
        );
        assert!(!dir.join(format!("{run}.journal.tmp")).exists());
        // Its own journal it finds again.
        assert_eq!(
            Journal::open(&dir, run, second).await.expect("again").state,
            journal.state
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test]
    async fn a_journal_without_an_identity_is_confirmed_only_by_a_job_without_one() {
        let dir = temp_dir("legacy");
        let run = Uuid::new_v4();
        // Written by a poller before journals recorded their run's identity.
        std::fs::write(path(&dir, run), "ack\nstart\nhosts 0-255\n").expect("write");
        let legacy = Journal::open(&dir, run, None).await.expect("open");
        assert!(legacy.state.acked && legacy.state.started);
        assert_eq!(legacy.state.reported.len(), 256);
        let current = Journal::open(&dir, run, Some(at(1_800_000_000)))
            .await
            .expect("open");
        assert!(!current.state.acked && current.state.reported.is_empty());
        // ... and the other way round.
        let legacy = Journal::open(&dir, run, None).await.expect("open");
        assert_eq!(legacy.state, JournalState::default());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test]
    async fn removed_journals_stay_removed_and_old_ones_go_at_start() {
        let dir = temp_dir("remove");
        let run = Uuid::new_v4();
        let mut journal = Journal::open(&dir, run, None).await.expect("open");
        assert!(remove(&dir, run).await.expect("remove"));
        assert!(!remove(&dir, run).await.expect("remove again"));
        // A task aborted mid-append does not bring it back.
        assert!(journal.append(JournalLine::Ack).await.is_err());
        assert!(!path(&dir, run).exists());

        let (old, recent) = (Uuid::new_v4(), Uuid::new_v4());
        for id in [old, recent] {
            std::fs::write(path(&dir, id), "ack\n").expect("write");
        }
        std::fs::write(dir.join(format!("{recent}.journal.tmp")), "").expect("write");
        std::fs::write(dir.join("notes.txt"), "mine").expect("write");
        let now = SystemTime::now();
        std::fs::File::options()
            .write(true)
            .open(path(&dir, old))
            .expect("open")
            .set_modified(now - Duration::from_secs(9 * 86_400))
            .expect("mtime");
        let removed = remove_old(&dir, DEFAULT_JOURNAL_MAX_AGE, now)
            .await
            .expect("sweep");
        assert_eq!(removed, 2);
        assert!(!path(&dir, old).exists());
        assert!(path(&dir, recent).exists());
        assert!(dir.join("notes.txt").exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
