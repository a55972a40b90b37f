//! The publisher's decisions, without I/O: where to resume, which acknowledgements count as
//! progress, when to reuse a prefetched batch or record the checkpoint, how long to wait
//! after a failure. Tested below without NATS or a database.

use std::time::Duration;

use super::PublisherConfig;

/// Longest pause between retries while NATS or the database is unavailable.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First pause after a failure.
pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest a busy publisher goes without recording its checkpoint.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// Most messages a re-sync looks back past messages without a `Corral-Position`.
pub(super) const LOOK_BACK: u64 = 1_000;

/// Where the stream stands: its last sequence and the position of the event there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Synced {
    pub(super) last_sequence: u64,
    pub(super) position: i64,
}

/// Where to resume after a sync with the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resume {
    /// The last position published: `max(checkpoint, the stream's last position)`.
    pub(super) position: i64,
    /// Positions the checkpoint passed but the stream lacks (removed from the stream, or
    /// acknowledged writes lost): not republished.
    pub(super) lost: Option<(i64, i64)>,
    /// The stream is ahead of this database's log (another installation's stream?).
    pub(super) ahead_of_log: bool,
    /// The checkpoint must move up to `position`.
    pub(super) advance: bool,
}

/// Where to resume, from the checkpoint (`stored`), the position of the stream's last message
/// that has one (`in_stream`) and the log's head. The stream, not the checkpoint, says what
/// was published: acks in flight when a publisher died never reached the checkpoint.
pub(super) fn resume(stored: i64, in_stream: Option<i64>, log_head: i64) -> Resume {
    let position = stored.max(in_stream.unwrap_or(0));
    Resume {
        position,
        lost: in_stream.filter(|&p| p < stored).map(|p| (p + 1, stored)),
        ahead_of_log: position > log_head,
        advance: position > stored,
    }
}

/// The subjects the stream must hold: everything under the prefix.
pub(super) fn stream_subjects(config: &PublisherConfig) -> Vec<String> {
    vec![format!("{}.>", config.subject_prefix)]
}

/// Whether an existing stream must be updated: Corral owns only its subjects and its dedup
/// window (replicas, limits and the rest are the operator's).
pub(crate) fn stream_needs_update(
    subjects: &[String],
    duplicate_window: Duration,
    wanted_subjects: &[String],
    wanted_window: Duration,
) -> bool {
    subjects != wanted_subjects || duplicate_window != wanted_window
}

/// The stream sequences a re-sync looks at for the last `Corral-Position`, newest first.
pub(crate) fn look_back(last_sequence: u64) -> impl Iterator<Item = u64> {
    let lowest = last_sequence.saturating_sub(LOOK_BACK).max(1);
    (lowest..=last_sequence).rev()
}

/// A `Corral-Position` header's value.
pub(crate) fn position_of(header: Option<&str>) -> Option<i64> {
    header.and_then(|v| v.parse::<i64>().ok())
}

/// The `Nats-Expected-Last-Sequence` of the `i`th message of a batch sent from `at` (its ack
/// must then carry that plus one).
pub(crate) fn expected_last_sequence(last_sequence: u64, i: usize) -> u64 {
    last_sequence + i as u64
}

/// One acknowledgement, as far as the decision goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ack {
    /// Stored at `sequence` (`duplicate`: the server had the message id already).
    Stored { sequence: u64, duplicate: bool },
    /// No acknowledgement: why.
    Failed(String),
}

/// What the acks of a batch add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tally {
    /// How far the stream got (`None`: not at all).
    pub(super) done: Option<Synced>,
    /// Messages that count as published.
    pub(super) published: u64,
    /// The first failure, naming its position.
    pub(super) error: Option<String>,
}

/// Takes the acks of a batch in order, each against the `(position, stream sequence)` it had
/// to get. Only an unbroken run of acks at their expected sequences, not duplicates, counts:
/// after a failed ack a later message may have been stored after someone else's message took
/// the expected sequence (a foreign publisher on our subjects), which would leave a gap if
/// taken as progress.
pub(crate) fn tally(expected: &[(i64, u64)], acks: Vec<Ack>) -> Tally {
    let mut out = Tally {
        done: None,
        published: 0,
        error: None,
    };
    for (&(position, sequence), ack) in expected.iter().zip(acks) {
        match ack {
            Ack::Stored {
                sequence: got,
                duplicate: false,
            } if got == sequence => {
                out.published += 1;
                out.done = Some(Synced {
                    last_sequence: sequence,
                    position,
                });
            }
            Ack::Stored {
                sequence: got,
                duplicate,
            } => {
                out.error = Some(format!(
                    "position {position}: unexpected ack (stream sequence {got}, duplicate \
                     {duplicate}) where sequence {sequence} was expected"
                ));
                break;
            }
            Ack::Failed(e) => {
                out.error = Some(format!("position {position}: {e}"));
                break;
            }
        }
    }
    out
}

/// Whether a batch read ahead (starting at `first`) continues where the stream is (`at`):
/// only then is it published instead of read again.
pub(super) fn follows(first: Option<i64>, at: i64) -> bool {
    first == Some(at + 1)
}

/// Whether a batch of `len` was full (more is likely waiting: read the next one ahead).
pub(super) fn is_full(len: usize, batch: i64) -> bool {
    len as i64 == batch
}

/// Whether to record the checkpoint after a batch: always once caught up, else at most every
/// [`CHECKPOINT_EVERY`] (a commit per batch would cost a WAL flush per batch; the stream, not
/// the checkpoint, says where to resume).
pub(super) fn checkpoint_due(caught_up: bool, since_last: Duration) -> bool {
    caught_up || since_last >= CHECKPOINT_EVERY
}

/// The pauses between retries: doubling from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`], back to
/// the start after a success.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Self {
        Self(MIN_BACKOFF)
    }

    /// The pause after one more failure.
    pub(crate) fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        wait
    }

    pub(crate) fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_says_where_to_resume_when_it_is_ahead_of_the_checkpoint() {
        let r = resume(10, Some(14), 20);
        assert_eq!(
            r.position, 14,
            "acks in flight never reached the checkpoint"
        );
        assert!(r.advance && r.lost.is_none() && !r.ahead_of_log);
    }

    #[test]
    fn a_stream_behind_the_checkpoint_is_reported_and_not_republished() {
        let r = resume(10, Some(7), 20);
        assert_eq!(r.position, 10);
        assert_eq!(r.lost, Some((8, 10)));
        assert!(!r.advance);
    }

    #[test]
    fn an_empty_stream_resumes_from_the_checkpoint() {
        let r = resume(5, None, 5);
        assert_eq!(
            r,
            Resume {
                position: 5,
                lost: None,
                ahead_of_log: false,
                advance: false
            }
        );
    }

    #[test]
    fn a_stream_ahead_of_the_log_is_flagged() {
        assert!(resume(0, Some(30), 20).ahead_of_log);
        assert!(!resume(0, Some(20), 20).ahead_of_log);
    }

    #[test]
    fn the_stream_is_updated_only_when_its_subjects_or_dedup_window_differ() {
        let config = PublisherConfig::default();
        let subjects = vec!["corral.events.>".to_string()];
        assert_eq!(stream_subjects(&config), subjects);
        let window = config.duplicate_window;
        assert!(!stream_needs_update(&subjects, window, &subjects, window));
        assert!(stream_needs_update(
            &subjects,
            Duration::from_secs(1),
            &subjects,
            window
        ));
        assert!(stream_needs_update(
            &["other.>".to_string()],
            window,
            &subjects,
            window
        ));
    }

    #[test]
    fn a_resync_looks_back_a_bounded_number_of_messages() {
        assert_eq!(look_back(3).collect::<Vec<_>>(), vec![3, 2, 1]);
        assert_eq!(look_back(0).count(), 0, "an empty stream");
        let seqs: Vec<u64> = look_back(5_000).collect();
        assert_eq!(seqs.first(), Some(&5_000));
        assert_eq!(seqs.last(), Some(&4_000));
        assert_eq!(position_of(Some("42")), Some(42));
        assert_eq!(position_of(Some("x")), None);
        assert_eq!(position_of(None), None);
    }

    #[test]
    fn each_message_expects_the_sequence_its_predecessor_gets() {
        assert_eq!(expected_last_sequence(100, 0), 100);
        assert_eq!(expected_last_sequence(100, 3), 103);
    }

    fn stored(sequence: u64) -> Ack {
        Ack::Stored {
            sequence,
            duplicate: false,
        }
    }

    #[test]
    fn acks_in_order_advance_the_stream() {
        let t = tally(&[(8, 101), (9, 102)], vec![stored(101), stored(102)]);
        assert_eq!(t.published, 2);
        assert_eq!(
            t.done,
            Some(Synced {
                last_sequence: 102,
                position: 9
            })
        );
        assert_eq!(t.error, None);
    }

    #[test]
    fn nothing_after_a_failed_ack_counts_even_if_it_was_stored() {
        let t = tally(
            &[(8, 101), (9, 102), (10, 103)],
            vec![stored(101), Ack::Failed("timed out".into()), stored(103)],
        );
        assert_eq!(t.published, 1);
        assert_eq!(t.done.map(|d| d.position), Some(8));
        assert_eq!(t.error.as_deref(), Some("position 9: timed out"));
    }

    #[test]
    fn a_duplicate_or_misplaced_ack_stops_the_batch() {
        let t = tally(
            &[(8, 101), (9, 102)],
            vec![
                Ack::Stored {
                    sequence: 101,
                    duplicate: true,
                },
                stored(102),
            ],
        );
        assert_eq!((t.published, t.done), (0, None));
        assert!(t.error.is_some_and(|e| e.contains("duplicate true")));
        let t = tally(&[(8, 101)], vec![stored(105)]);
        assert_eq!((t.published, t.done), (0, None));
        assert!(t
            .error
            .is_some_and(|e| e.contains("sequence 105") && e.contains("sequence 101")));
    }

    #[test]
    fn a_batch_read_ahead_is_used_only_where_the_stream_is() {
        assert!(follows(Some(11), 10));
        assert!(!follows(Some(12), 10), "a gap: read again");
        assert!(!follows(None, 10));
        assert!(is_full(256, 256));
        assert!(!is_full(255, 256));
    }

    #[test]
    fn the_checkpoint_is_recorded_once_caught_up_or_now_and_then_while_busy() {
        assert!(checkpoint_due(true, Duration::ZERO));
        assert!(!checkpoint_due(false, Duration::from_millis(10)));
        assert!(checkpoint_due(false, CHECKPOINT_EVERY));
    }

    #[test]
    fn retries_back_off_to_a_cap_and_start_over_after_a_success() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert_eq!(waits[0], MIN_BACKOFF);
        assert_eq!(waits[1], MIN_BACKOFF * 2);
        assert_eq!(waits[7], MAX_BACKOFF);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        b.reset();
        assert_eq!(b.next(), MIN_BACKOFF);
    }
}
